//! Commands that act on a running server through the authenticated control protocol:
//! `aggregate`, `events`, `snapshots`, `tenant` (and, in `schema.rs`, the remote `schema` ones).
//!
//! Where to connect: `--host`/`--port`, else the config's `[socket] bind_addr`. Which token:
//! `--token`, then `EVENTDBX_TOKEN`, then `<data_dir>/cli.token`. Output is the server's JSON:
//! compact with `--json`, pretty-printed otherwise.
//!
//! # Layout
//! Here: connecting and printing. One module per command family: `aggregate`, `events`,
//! `snapshots`, `tenant`.

mod aggregate;
mod events;
mod snapshots;
mod tenant;

pub use aggregate::{aggregate, AggregateArgs};
pub use events::{events, EventsArgs};
pub use snapshots::{snapshots, SnapshotsArgs};
pub use tenant::{tenant, TenantArgs};

use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, ValueEnum};
use eventdbx_client::blocking::Client;
use eventdbx_client::{ClientConfig, ErrorKind, Transport, Written};
use serde_json::{json, Map, Value};

use crate::load_config;

/// How to reach the server; every flag also works after the subcommand.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Control token (default: EVENTDBX_TOKEN, then <data_dir>/cli.token).
    #[arg(long, global = true, env = "EVENTDBX_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Server host (default: the host of the config's [socket] bind_addr).
    #[arg(long, global = true)]
    host: Option<String>,
    /// Control port (default: the port of the config's [socket] bind_addr).
    #[arg(long, global = true)]
    port: Option<u16>,
    /// Tenant of the session.
    #[arg(long, global = true, default_value = "default")]
    pub tenant: String,
    /// Transport.
    #[arg(long, global = true, value_enum, default_value_t = TransportArg::V2)]
    transport: TransportArg,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum TransportArg {
    /// Protocol v2 only.
    V2,
    /// v2, falling back to v1 on a server without v2.
    Auto,
    /// Protocol v1 only.
    V1,
    /// No encryption (only when the server allows it).
    Plaintext,
}

impl ConnectArgs {
    /// Connects and performs the handshake, with errors a person can act on.
    pub fn connect(&self, config_path: Option<&Path>) -> Result<Client> {
        // The config is optional when the address and the token are given.
        let config = match load_config(config_path) {
            Ok(config) => Some(config),
            Err(_) if self.port.is_some() && self.token.is_some() => None,
            Err(err) => return Err(err),
        };
        let token = match &self.token {
            Some(token) => token.trim().to_owned(),
            None => {
                let config = config.as_ref().context("no token: pass --token")?;
                let path = config.data_dir.join("cli.token");
                // A token is a secret: a file others may read is refused, as the server's keys are.
                let bytes = match eventdbx_server::fs::read_secret(&path) {
                    Ok(bytes) => bytes,
                    Err(eventdbx_server::fs::SecretError::Io { source, .. }) => {
                        return Err(anyhow::Error::new(source).context(format!(
                            "no token: pass --token, set EVENTDBX_TOKEN or create {} \
                             (dbx token bootstrap)",
                            path.display()
                        )))
                    }
                    Err(refused) => return Err(refused.into()),
                };
                String::from_utf8(bytes)
                    .with_context(|| format!("{} is not text", path.display()))?
                    .trim()
                    .to_owned()
            }
        };
        if token.is_empty() {
            bail!("the token is empty");
        }
        let (bind_host, bind_port) = match &config {
            Some(config) => split_addr(&config.socket.bind_addr)?,
            None => (
                eventdbx_client::config::DEFAULT_HOST.to_owned(),
                eventdbx_client::config::DEFAULT_PORT,
            ),
        };
        let host = self.host.clone().unwrap_or(bind_host);
        let port = self.port.unwrap_or(bind_port);
        let transport = match self.transport {
            TransportArg::V2 => Transport::V2,
            TransportArg::Auto => Transport::Auto,
            TransportArg::V1 => Transport::V1,
            TransportArg::Plaintext => Transport::Plaintext,
        };
        let client_config = ClientConfig::new(token, self.tenant.clone())
            .host(host.clone())
            .port(port)
            .transport(transport);
        Client::connect(client_config).map_err(|err| {
            if err.is_token_rejected() {
                anyhow!(
                    "the server at {host}:{port} rejected the token ({}); pass a valid --token, \
                     set EVENTDBX_TOKEN or issue one with `dbx token bootstrap`",
                    err.message()
                )
            } else if matches!(err.kind(), ErrorKind::Connection | ErrorKind::Timeout) {
                anyhow!(
                    "cannot reach the server at {host}:{port} ({err}); is it running? (dbx start)"
                )
            } else {
                anyhow!("connecting to {host}:{port}: {err}")
            }
        })
    }
}

/// `host:port` of a bind address; a wildcard host means this machine.
fn split_addr(addr: &str) -> Result<(String, u16)> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("bind_addr '{addr}' has no port"))?;
    let port = port
        .parse()
        .with_context(|| format!("bind_addr '{addr}' has no valid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = match host {
        "" | "0.0.0.0" | "::" => "127.0.0.1",
        other => other,
    };
    Ok((host.to_owned(), port))
}

/// A server error as `code: message`, naming what was asked.
fn failed(what: &str) -> impl FnOnce(eventdbx_client::Error) -> anyhow::Error + '_ {
    move |err| anyhow!("{what}: {err}")
}

/// Prints a JSON text from the server: as sent with `--json`, pretty otherwise.
pub fn print_json_text(text: &str, json: bool) {
    if json {
        out!("{}", text.trim());
        return;
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value) => print_value(&value, false),
        Err(_) => out!("{text}"),
    }
}

/// Prints a value: compact with `--json`, pretty otherwise.
pub fn print_value(value: &Value, json: bool) {
    if json {
        out!("{value}");
    } else {
        out!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        );
    }
}

fn print_written(written: &Written, json: bool) {
    if written.is_ack() {
        // The server runs with verbose_responses = false: an acknowledgement only.
        if json {
            out!("null");
        } else {
            out!("ok");
        }
    } else {
        print_json_text(&written.json, json);
    }
}

/// A borderless table of plain text (no colours, no width guessing), readable on a terminal
/// and splittable on whitespace in a pipe: the first column starts the line, columns are two
/// spaces apart. Print it with [`comfy_table::Table::trim_fmt`] (no trailing spaces).
pub fn table<const N: usize>(header: [&str; N]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header);
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
}

/// Right-aligns the numeric `columns` of `table`.
pub fn align_right(table: &mut comfy_table::Table, columns: &[usize]) {
    for index in columns {
        if let Some(column) = table.column_mut(*index) {
            column.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
}

/// A page as `{"<name>": [...], "next_cursor": …}` with `--json`; one item a line otherwise.
fn print_page(name: &str, items: Vec<Value>, next_cursor: Option<String>, json: bool) {
    if json {
        let mut object = Map::new();
        object.insert(name.to_owned(), Value::Array(items));
        object.insert("next_cursor".to_owned(), json!(next_cursor));
        out!("{}", Value::Object(object));
        return;
    }
    if items.is_empty() {
        out!("no {name}");
    }
    for item in &items {
        out!("{item}");
    }
    if let Some(cursor) = next_cursor {
        out!("next cursor: {cursor}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addresses_become_connect_addresses() {
        assert_eq!(
            split_addr("127.0.0.1:6363").expect("ok"),
            ("127.0.0.1".to_owned(), 6363)
        );
        assert_eq!(
            split_addr("0.0.0.0:7000").expect("ok"),
            ("127.0.0.1".to_owned(), 7000)
        );
        assert_eq!(
            split_addr("[::1]:7000").expect("ok"),
            ("::1".to_owned(), 7000)
        );
        assert!(split_addr("localhost").is_err());
    }
}
