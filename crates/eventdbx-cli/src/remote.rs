//! Commands that act on a running server through the authenticated control protocol:
//! `aggregate`, `events`, `snapshots`, `tenant` (and, in `schema.rs`, the remote `schema` ones).
//!
//! Where to connect: `--host`/`--port`, else the config's `[socket] bind_addr`. Which token:
//! `--token`, then `EVENTDBX_TOKEN`, then `<data_dir>/cli.token`. Output is the server's JSON:
//! compact with `--json`, pretty-printed otherwise.

use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use eventdbx_client::blocking::Client;
use eventdbx_client::{
    ClientConfig, ErrorKind, EventsQuery, ListQuery, SnapshotQuery, Transport, Write, Written,
};
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

// ---------------------------------------------------------------------------------------------
// aggregate

/// `dbx aggregate …`
#[derive(Args, Debug)]
pub struct AggregateArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: AggregateCommand,
}

#[derive(Args, Debug)]
struct EventBody {
    /// Payload as a JSON object.
    #[arg(long, conflicts_with = "fields")]
    payload: Option<String>,
    /// A payload field `key=value` (repeatable; values are strings).
    #[arg(long = "field", value_name = "KEY=VALUE")]
    fields: Vec<String>,
    /// Metadata as a JSON object (e.g. {"@actor":"jane"}).
    #[arg(long)]
    metadata: Option<String>,
    /// A note stored with the event.
    #[arg(long)]
    note: Option<String>,
}

impl EventBody {
    fn payload_json(&self) -> Result<String> {
        if let Some(payload) = &self.payload {
            let value: Value =
                serde_json::from_str(payload).context("--payload is not valid JSON")?;
            return Ok(value.to_string());
        }
        let mut object = Map::new();
        for field in &self.fields {
            let (key, value) = field
                .split_once('=')
                .with_context(|| format!("--field '{field}' is not KEY=VALUE"))?;
            if key.is_empty() {
                bail!("--field '{field}' has an empty key");
            }
            object.insert(key.to_owned(), Value::String(value.to_owned()));
        }
        Ok(Value::Object(object).to_string())
    }

    fn decorate(&self, mut write: Write) -> Result<Write> {
        if let Some(metadata) = &self.metadata {
            let value: Value =
                serde_json::from_str(metadata).context("--metadata is not valid JSON")?;
            write = write.metadata_json(value.to_string());
        }
        if let Some(note) = &self.note {
            write = write.note(note.clone());
        }
        Ok(write)
    }
}

#[derive(Subcommand, Debug)]
enum AggregateCommand {
    /// Create an aggregate with its first event.
    Create {
        aggregate_type: String,
        aggregate_id: String,
        /// Event type of the first event.
        #[arg(long)]
        event: String,
        #[command(flatten)]
        body: EventBody,
    },
    /// Append an event (creates a missing aggregate).
    Apply {
        aggregate_type: String,
        aggregate_id: String,
        event: String,
        #[command(flatten)]
        body: EventBody,
        /// The version the aggregate must be at.
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Apply RFC 6902 operations to the aggregate's state.
    Patch {
        aggregate_type: String,
        aggregate_id: String,
        event: String,
        /// The operations, a JSON array.
        #[arg(long)]
        patch: String,
        /// Metadata as a JSON object.
        #[arg(long)]
        metadata: Option<String>,
        /// A note stored with the event.
        #[arg(long)]
        note: Option<String>,
        /// The version the aggregate must be at.
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Print an aggregate.
    Get {
        aggregate_type: String,
        aggregate_id: String,
        /// Also print every event: `{"aggregate": …, "events": […]}`.
        #[arg(long)]
        include_events: bool,
        /// The aggregate as it was after event N (rebuilt from its first N events).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Print some fields of an aggregate's state.
    Select {
        aggregate_type: String,
        aggregate_id: String,
        /// Field paths (dot-separated).
        #[arg(required = true)]
        fields: Vec<String>,
    },
    /// List aggregates.
    List {
        /// Filter, e.g. `status = "open" AND total > 10`.
        #[arg(long)]
        filter: Option<String>,
        /// Sort, e.g. `created_at:desc`.
        #[arg(long)]
        sort: Option<String>,
        /// Page size.
        #[arg(long)]
        take: Option<u64>,
        /// Resume after this cursor.
        #[arg(long)]
        cursor: Option<String>,
        /// Include archived aggregates.
        #[arg(long, conflicts_with = "archived_only")]
        include_archived: bool,
        /// Archived aggregates only.
        #[arg(long)]
        archived_only: bool,
        /// Follow cursors to the last page.
        #[arg(long)]
        all: bool,
    },
    /// Recompute the Merkle root from the stored events.
    Verify {
        aggregate_type: String,
        aggregate_id: String,
    },
    /// Archive an aggregate.
    Archive {
        aggregate_type: String,
        aggregate_id: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Restore an archived aggregate.
    Restore {
        aggregate_type: String,
        aggregate_id: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// The aggregates that reference this one.
    Referrers {
        aggregate_type: String,
        aggregate_id: String,
    },
}

pub fn aggregate(args: AggregateArgs, config: Option<&Path>, json: bool) -> Result<()> {
    let client = args.connect.connect(config)?;
    match args.command {
        AggregateCommand::Create {
            aggregate_type,
            aggregate_id,
            event,
            body,
        } => {
            let write = Write::create(&aggregate_type, &aggregate_id, event, body.payload_json()?);
            let written = client
                .write(body.decorate(write)?)
                .map_err(failed(&format!("create {aggregate_type}/{aggregate_id}")))?;
            print_written(&written, json);
        }
        AggregateCommand::Apply {
            aggregate_type,
            aggregate_id,
            event,
            body,
            expected_version,
        } => {
            let mut write =
                Write::apply(&aggregate_type, &aggregate_id, event, body.payload_json()?);
            if let Some(version) = expected_version {
                write = write.expected_version(version);
            }
            let written = client
                .write(body.decorate(write)?)
                .map_err(failed(&format!("apply to {aggregate_type}/{aggregate_id}")))?;
            print_written(&written, json);
        }
        AggregateCommand::Patch {
            aggregate_type,
            aggregate_id,
            event,
            patch,
            metadata,
            note,
            expected_version,
        } => {
            let operations: Value =
                serde_json::from_str(&patch).context("--patch is not valid JSON")?;
            let body = EventBody {
                payload: None,
                fields: Vec::new(),
                metadata,
                note,
            };
            let mut write = Write::patch(
                &aggregate_type,
                &aggregate_id,
                event,
                operations.to_string(),
            );
            if let Some(version) = expected_version {
                write = write.expected_version(version);
            }
            let written = client
                .write(body.decorate(write)?)
                .map_err(failed(&format!("patch {aggregate_type}/{aggregate_id}")))?;
            print_written(&written, json);
        }
        AggregateCommand::Get {
            aggregate_type,
            aggregate_id,
            include_events,
            version,
        } => {
            let what = format!("{aggregate_type}/{aggregate_id}");
            let found = client
                .get(&aggregate_type, &aggregate_id)
                .map_err(failed(&format!("get {what}")))?;
            let Some(text) = found.json else {
                bail!("aggregate {what} not found");
            };
            if let Some(version) = version {
                let (aggregate, events) =
                    aggregate_at(&client, &aggregate_type, &aggregate_id, version, &text)?;
                if include_events {
                    print_value(&json!({"aggregate": aggregate, "events": events}), json);
                } else {
                    print_value(&aggregate, json);
                }
            } else if include_events {
                let aggregate: Value =
                    serde_json::from_str(&text).context("the server sent invalid JSON")?;
                let events = client
                    .iter_events(EventsQuery::new(&aggregate_type, &aggregate_id))
                    .collect::<Result<Vec<Value>, _>>()
                    .map_err(failed(&format!("events of {what}")))?;
                print_value(&json!({"aggregate": aggregate, "events": events}), json);
            } else {
                print_json_text(&text, json);
            }
        }
        AggregateCommand::Select {
            aggregate_type,
            aggregate_id,
            fields,
        } => {
            let what = format!("{aggregate_type}/{aggregate_id}");
            let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
            let found = client
                .select(&aggregate_type, &aggregate_id, &fields)
                .map_err(failed(&format!("select from {what}")))?;
            match found.json {
                Some(text) => print_json_text(&text, json),
                None => bail!("aggregate {what} not found"),
            }
        }
        AggregateCommand::List {
            filter,
            sort,
            take,
            cursor,
            include_archived,
            archived_only,
            all,
        } => {
            let mut query = ListQuery::new();
            query.filter = filter;
            query.sort = sort;
            query.take = take;
            query.cursor = cursor;
            if include_archived {
                query.include_archived = Some(true);
            }
            if archived_only {
                query.archived_only = Some(true);
            }
            let (items, next_cursor) = if all {
                let items = client
                    .iter_list(query)
                    .collect::<Result<Vec<Value>, _>>()
                    .map_err(failed("list aggregates"))?;
                (items, None)
            } else {
                let page = client.list(&query).map_err(failed("list aggregates"))?;
                let items = page.aggregates().map_err(failed("list aggregates"))?;
                (items, page.next_cursor)
            };
            print_page("aggregates", items, next_cursor, json);
        }
        AggregateCommand::Verify {
            aggregate_type,
            aggregate_id,
        } => {
            let root = client
                .verify(&aggregate_type, &aggregate_id)
                .map_err(failed(&format!("verify {aggregate_type}/{aggregate_id}")))?;
            if json {
                print_value(
                    &json!({
                        "aggregate_type": aggregate_type,
                        "aggregate_id": aggregate_id,
                        "merkle_root": root,
                        "valid": true,
                    }),
                    true,
                );
            } else {
                out!("{aggregate_type}/{aggregate_id}: verified, merkle root {root}");
            }
        }
        AggregateCommand::Archive {
            aggregate_type,
            aggregate_id,
            note,
        } => {
            let written = client
                .archive(&aggregate_type, &aggregate_id, note.as_deref())
                .map_err(failed(&format!("archive {aggregate_type}/{aggregate_id}")))?;
            print_written(&written, json);
        }
        AggregateCommand::Restore {
            aggregate_type,
            aggregate_id,
            note,
        } => {
            let written = client
                .restore(&aggregate_type, &aggregate_id, note.as_deref())
                .map_err(failed(&format!("restore {aggregate_type}/{aggregate_id}")))?;
            print_written(&written, json);
        }
        AggregateCommand::Referrers {
            aggregate_type,
            aggregate_id,
        } => {
            let list = client
                .list_referrers(&aggregate_type, &aggregate_id)
                .map_err(failed(&format!(
                    "referrers of {aggregate_type}/{aggregate_id}"
                )))?;
            print_json_text(&list.json, json);
        }
    }
    Ok(())
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

// ---------------------------------------------------------------------------------------------
// events

/// `dbx events [<type> [<id>]] | --event <id>`
#[derive(Args, Debug)]
pub struct EventsArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Only events of this aggregate type (without an id: from the global event feed).
    aggregate_type: Option<String>,
    /// Only events of this aggregate (paged with cursors).
    aggregate_id: Option<String>,
    /// One event by its id (from the global event feed of active aggregates).
    #[arg(long = "event", conflicts_with_all = ["aggregate_type", "aggregate_id"])]
    event_id: Option<u64>,
    /// Resume after this cursor.
    #[arg(long)]
    cursor: Option<String>,
    /// Page size.
    #[arg(long)]
    take: Option<u64>,
    /// Filter on event fields.
    #[arg(long)]
    filter: Option<String>,
    /// Follow cursors to the last page.
    #[arg(long)]
    all: bool,
}

pub fn events(args: EventsArgs, config: Option<&Path>, json: bool) -> Result<()> {
    let client = args.connect.connect(config)?;
    if let Some(event_id) = args.event_id {
        let page = client
            .read_outbox(Some(event_id.saturating_sub(1)), Some(1))
            .map_err(failed(&format!("event {event_id}")))?;
        let event = page
            .events()
            .map_err(failed(&format!("event {event_id}")))?
            .into_iter()
            .find(|e| event_id_of(e) == Some(event_id));
        match event {
            Some(event) => print_value(&event, json),
            None => bail!("event {event_id} not found (or its aggregate is archived)"),
        }
        return Ok(());
    }
    let (Some(aggregate_type), Some(aggregate_id)) = (&args.aggregate_type, &args.aggregate_id)
    else {
        return feed_events(&client, &args, json);
    };
    let mut query = EventsQuery::new(aggregate_type, aggregate_id);
    query.cursor = args.cursor;
    query.take = args.take;
    query.filter = args.filter;
    let what = format!("events of {aggregate_type}/{aggregate_id}");
    let (items, next_cursor) = if args.all {
        let items = client
            .iter_events(query)
            .collect::<Result<Vec<Value>, _>>()
            .map_err(failed(&what))?;
        (items, None)
    } else {
        let page = client.events(&query).map_err(failed(&what))?;
        (page.events().map_err(failed(&what))?, page.next_cursor)
    };
    print_page("events", items, next_cursor, json);
    Ok(())
}

/// The aggregate after its first `version` events, rebuilt by folding them as the server does
/// (`current` is the aggregate now, to check the version exists), with those events.
fn aggregate_at(
    client: &Client,
    aggregate_type: &str,
    aggregate_id: &str,
    version: u64,
    current: &str,
) -> Result<(Value, Vec<Value>)> {
    let what = format!("{aggregate_type}/{aggregate_id}");
    let current: Value = serde_json::from_str(current).context("the server sent invalid JSON")?;
    let latest = current["version"].as_u64().unwrap_or(0);
    if version == 0 || version > latest {
        bail!("{what} has versions 1 to {latest}; there is no version {version}");
    }
    let mut events = Vec::new();
    for event in client.iter_events(EventsQuery::new(aggregate_type, aggregate_id)) {
        let event = event.map_err(failed(&format!("events of {what}")))?;
        if event["version"].as_u64().is_some_and(|v| v > version) {
            break;
        }
        events.push(event);
    }
    let typed: Vec<eventdbx_core::merkle::Event> = events
        .iter()
        .map(|e| serde_json::from_value(e.clone()))
        .collect::<Result<_, _>>()
        .context("the server sent an event this CLI cannot read")?;
    let aggregate =
        eventdbx_core::aggregate::Aggregate::from_events(aggregate_type, aggregate_id, &typed);
    Ok((aggregate.to_json(&[]), events))
}

/// An event's id: `metadata.event_id`, a decimal string.
fn event_id_of(event: &Value) -> Option<u64> {
    event["metadata"]["event_id"].as_str()?.parse().ok()
}

/// `dbx events [<type>]`: the global feed of active events in id order, optionally of one type.
/// `--cursor` is an event id to start after; `--take` bounds the events printed.
fn feed_events(client: &Client, args: &EventsArgs, json: bool) -> Result<()> {
    if args.filter.is_some() {
        bail!("--filter needs an aggregate type and id");
    }
    let mut after = match &args.cursor {
        Some(cursor) => Some(
            cursor
                .parse::<u64>()
                .with_context(|| format!("--cursor must be an event id here, not '{cursor}'"))?,
        ),
        None => None,
    };
    let limit = args.take.map_or(usize::MAX, |take| {
        usize::try_from(take).unwrap_or(usize::MAX)
    });
    let mut items = Vec::new();
    let mut next_cursor = None;
    loop {
        let page = client
            .read_outbox(after, Some(100))
            .map_err(failed("read the event feed"))?;
        let events = page.events().map_err(failed("read the event feed"))?;
        for event in events {
            if args
                .aggregate_type
                .as_deref()
                .is_some_and(|t| event["aggregate_type"] != t)
            {
                continue;
            }
            if items.len() == limit {
                break;
            }
            next_cursor = event_id_of(&event).map(|id| id.to_string());
            items.push(event);
        }
        match page.next_after_event_id {
            Some(next) if items.len() < limit && Some(next) != after => after = Some(next),
            _ => break,
        }
    }
    if !args.all && items.len() == limit {
        print_page("events", items, next_cursor, json);
    } else {
        print_page("events", items, None, json);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// snapshots

/// `dbx snapshots …`
#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: SnapshotsCommand,
}

#[derive(Subcommand, Debug)]
enum SnapshotsCommand {
    /// List snapshots, optionally of one type or one aggregate.
    List {
        aggregate_type: Option<String>,
        aggregate_id: Option<String>,
        /// Only snapshots at this version.
        #[arg(long)]
        version: Option<u64>,
    },
    /// Snapshot an aggregate's current state.
    Create {
        aggregate_type: String,
        aggregate_id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Print one snapshot.
    Get { snapshot_id: u64 },
}

pub fn snapshots(args: SnapshotsArgs, config: Option<&Path>, json: bool) -> Result<()> {
    let client = args.connect.connect(config)?;
    match args.command {
        SnapshotsCommand::List {
            aggregate_type,
            aggregate_id,
            version,
        } => {
            let query = SnapshotQuery {
                aggregate_type,
                aggregate_id,
                version,
            };
            let list = client
                .list_snapshots(&query)
                .map_err(failed("list snapshots"))?;
            print_json_text(&list.json, json);
        }
        SnapshotsCommand::Create {
            aggregate_type,
            aggregate_id,
            comment,
        } => {
            let written = client
                .create_snapshot(&aggregate_type, &aggregate_id, comment.as_deref())
                .map_err(failed(&format!("snapshot {aggregate_type}/{aggregate_id}")))?;
            print_written(&written, json);
        }
        SnapshotsCommand::Get { snapshot_id } => {
            let found = client
                .get_snapshot(snapshot_id)
                .map_err(failed(&format!("get snapshot {snapshot_id}")))?;
            match found.json {
                Some(text) => print_json_text(&text, json),
                None => bail!("snapshot {snapshot_id} not found"),
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// tenant

/// `dbx tenant list` as a table.
fn print_tenants(tenants: &[Value]) {
    if tenants.is_empty() {
        out!("no tenants");
        return;
    }
    out!(
        "{:<24} {:<11} {:>10} {:>12} {:>14}  active schema",
        "tenant",
        "shard",
        "quota MB",
        "events",
        "bytes"
    );
    for t in tenants {
        let shard = format!(
            "{}{}",
            t["shard_id"].as_str().unwrap_or("?"),
            if t["assigned"] == true { "" } else { "*" }
        );
        let quota = t["quota_mb"]
            .as_u64()
            .map_or_else(|| "-".to_owned(), |q| q.to_string());
        out!(
            "{:<24} {:<11} {:>10} {:>12} {:>14}  {}",
            t["tenant_id"].as_str().unwrap_or("?"),
            shard,
            quota,
            t["events"],
            t["storage_bytes"],
            t["active_version"].as_str().unwrap_or("-")
        );
    }
    out!("(* = default shard, not explicitly assigned)");
}

/// `dbx tenant …`
#[derive(Args, Debug)]
pub struct TenantArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: TenantCommand,
}

#[derive(Subcommand, Debug)]
enum TenantCommand {
    /// List the tenants this token may manage, with placement, quota and usage.
    List,
    /// Place a tenant on a shard (`3` or `shard-0003`).
    Assign { tenant_id: String, shard_id: String },
    /// Remove a tenant's explicit shard placement.
    Unassign { tenant_id: String },
    /// Reload a tenant's cached metadata.
    Reload { tenant_id: String },
    /// Storage quotas.
    #[command(subcommand)]
    Quota(QuotaCommand),
}

#[derive(Subcommand, Debug)]
enum QuotaCommand {
    /// Set a tenant's storage quota in MB.
    Set {
        tenant_id: String,
        max_storage_mb: u64,
    },
    /// Remove a tenant's quota.
    Clear { tenant_id: String },
    /// Recompute a tenant's storage use.
    Recalc { tenant_id: String },
}

pub fn tenant(args: TenantArgs, config: Option<&Path>, json: bool) -> Result<()> {
    let client = args.connect.connect(config)?;
    match args.command {
        TenantCommand::List => {
            let tenants = client.tenant_list().map_err(failed("list tenants"))?;
            if json {
                print_value(&Value::Array(tenants), true);
            } else {
                print_tenants(&tenants);
            }
        }
        TenantCommand::Assign {
            tenant_id,
            shard_id,
        } => {
            let result = client
                .tenant_assign(&tenant_id, &shard_id)
                .map_err(failed(&format!("assign tenant {tenant_id}")))?;
            if json {
                print_value(
                    &json!({"tenant_id": tenant_id, "shard_id": result.shard_id, "changed": result.changed}),
                    true,
                );
            } else if result.changed {
                out!("tenant {tenant_id} assigned to {}", result.shard_id);
            } else {
                out!("tenant {tenant_id} already on {}", result.shard_id);
            }
        }
        TenantCommand::Unassign { tenant_id } => {
            let changed = client
                .tenant_unassign(&tenant_id)
                .map_err(failed(&format!("unassign tenant {tenant_id}")))?;
            if json {
                print_value(&json!({"tenant_id": tenant_id, "changed": changed}), true);
            } else if changed {
                out!("tenant {tenant_id} unassigned");
            } else {
                out!("tenant {tenant_id} had no explicit shard");
            }
        }
        TenantCommand::Reload { tenant_id } => {
            let reloaded = client
                .tenant_reload(&tenant_id)
                .map_err(failed(&format!("reload tenant {tenant_id}")))?;
            if json {
                print_value(&json!({"tenant_id": tenant_id, "reloaded": reloaded}), true);
            } else if reloaded {
                out!("tenant {tenant_id} reloaded");
            } else {
                out!("tenant {tenant_id} was not loaded");
            }
        }
        TenantCommand::Quota(QuotaCommand::Set {
            tenant_id,
            max_storage_mb,
        }) => {
            let result = client
                .tenant_quota_set(&tenant_id, max_storage_mb)
                .map_err(failed(&format!("set the quota of tenant {tenant_id}")))?;
            if json {
                print_value(
                    &json!({"tenant_id": tenant_id, "quota_mb": result.quota_mb, "changed": result.changed}),
                    true,
                );
            } else {
                out!("tenant {tenant_id}: quota {max_storage_mb} MB");
            }
        }
        TenantCommand::Quota(QuotaCommand::Clear { tenant_id }) => {
            let changed = client
                .tenant_quota_clear(&tenant_id)
                .map_err(failed(&format!("clear the quota of tenant {tenant_id}")))?;
            if json {
                print_value(&json!({"tenant_id": tenant_id, "changed": changed}), true);
            } else if changed {
                out!("tenant {tenant_id}: quota cleared");
            } else {
                out!("tenant {tenant_id} had no quota");
            }
        }
        TenantCommand::Quota(QuotaCommand::Recalc { tenant_id }) => {
            let spinner = Spinner::start(format!("recalculating storage of tenant {tenant_id}"));
            // No request timeout of its own: a large tenant may take a while.
            let result = client
                .with_request_timeout(Duration::from_secs(3600))
                .tenant_quota_recalc(&tenant_id);
            spinner.finish();
            let bytes =
                result.map_err(failed(&format!("recalculate the storage of {tenant_id}")))?;
            if json {
                print_value(
                    &json!({"tenant_id": tenant_id, "storage_bytes": bytes}),
                    true,
                );
            } else {
                out!("tenant {tenant_id}: {bytes} bytes stored");
            }
        }
    }
    Ok(())
}

/// A progress indicator on stderr: a spinner on a terminal, a start and an end line otherwise.
struct Spinner {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    started: std::time::Instant,
}

impl Spinner {
    fn start(label: String) -> Spinner {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = if std::io::stderr().is_terminal() {
            let stop = Arc::clone(&stop);
            Some(std::thread::spawn(move || {
                const FRAMES: [char; 4] = ['|', '/', '-', '\\'];
                let started = std::time::Instant::now();
                let mut frame = 0;
                while !stop.load(Ordering::Relaxed) {
                    let mut stderr = std::io::stderr().lock();
                    let _ = write!(
                        stderr,
                        "\r{} {label} ({:.1}s)",
                        FRAMES[frame % FRAMES.len()],
                        started.elapsed().as_secs_f64()
                    );
                    let _ = stderr.flush();
                    drop(stderr);
                    frame += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = write!(std::io::stderr(), "\r\x1b[2K");
            }))
        } else {
            eprintln!("{label}...");
            None
        };
        Spinner {
            stop,
            thread,
            started: std::time::Instant::now(),
        }
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        eprintln!("done in {:.1}s", self.started.elapsed().as_secs_f64());
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

    #[test]
    fn fields_are_strings_and_payload_must_be_json() {
        let body = EventBody {
            payload: None,
            fields: vec!["name=Jane".into(), "age=42".into(), "eq=a=b".into()],
            metadata: None,
            note: None,
        };
        let payload: Value = serde_json::from_str(&body.payload_json().expect("ok")).expect("json");
        assert_eq!(payload, json!({"name": "Jane", "age": "42", "eq": "a=b"}));
        let bad = EventBody {
            fields: vec!["novalue".into()],
            ..body
        };
        assert!(bad.payload_json().is_err());
        let bad = EventBody {
            payload: Some("{nope".into()),
            fields: Vec::new(),
            metadata: None,
            note: None,
        };
        assert!(bad.payload_json().is_err());
    }
}
