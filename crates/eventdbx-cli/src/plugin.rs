//! `dbx plugin …` and `dbx queue …`: plugin definitions and the delivery queue of a running
//! server, through the `admin` control request (root/admin tokens only).

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};

use crate::remote::{align_right, print_value, table, ConnectArgs};

/// `dbx plugin …`
#[derive(Args, Debug)]
pub struct PluginArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum Kind {
    Http,
    Tcp,
    Log,
    Process,
}

// Parsed once per process; boxing the large variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum PluginCommand {
    /// List the plugin definitions (header values are never shown).
    List,
    /// Add (or replace) a plugin definition.
    Add {
        /// Routing name.
        name: String,
        /// Kind (or give the whole definition with --definition).
        #[arg(long, value_enum)]
        kind: Option<Kind>,
        /// A whole definition as JSON (the plugins.json shape).
        #[arg(long)]
        definition: Option<String>,
        /// Payload mode: all, event-only, state-only, schema-only, event-and-schema,
        /// extensions-only.
        #[arg(long, default_value = "all")]
        mode: String,
        /// Never receives broadcasts (and cannot be named as a target).
        #[arg(long)]
        no_emit: bool,
        /// Add it disabled.
        #[arg(long)]
        disabled: bool,
        /// http: the endpoint (http://host:port/path).
        #[arg(long)]
        endpoint: Option<String>,
        /// http: a header, NAME=VALUE (repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
        /// tcp: receiver host.
        #[arg(long)]
        tcp_host: Option<String>,
        /// tcp: receiver port.
        #[arg(long)]
        tcp_port: Option<u16>,
        /// log: trace, debug, info, warn, error.
        #[arg(long, default_value = "info")]
        level: String,
        /// log: line template ({aggregate}, {id}, {event}).
        #[arg(long)]
        template: Option<String>,
        /// log: summary or full.
        #[arg(long, default_value = "summary")]
        detail: String,
        /// process: package name in the local plugin registry (default: the plugin name).
        #[arg(long)]
        package: Option<String>,
        /// process: package version.
        #[arg(long)]
        version: Option<String>,
        /// process: an argument (repeatable).
        #[arg(long = "arg")]
        args: Vec<String>,
        /// process: an environment variable, NAME=VALUE (repeatable).
        #[arg(long = "env")]
        env: Vec<String>,
        /// process: working directory.
        #[arg(long)]
        working_dir: Option<String>,
    },
    /// Change a plugin's payload mode or broadcast flag.
    Config {
        name: String,
        #[arg(long)]
        mode: Option<String>,
        #[arg(long)]
        emit_events: Option<bool>,
    },
    /// Enable a plugin (its worker starts).
    Enable { name: String },
    /// Disable a plugin (its worker stops; its queued jobs wait).
    Disable { name: String },
    /// Remove a plugin definition.
    Remove { name: String },
    /// Deliver a synthetic job to a plugin once, outside the queue.
    Test { name: String },
    /// Deliver a plugin's delivered (and dead) jobs again, or one event's with --event-id.
    Replay {
        name: String,
        #[arg(long)]
        event_id: Option<u64>,
    },
}

/// `dbx queue …`
#[derive(Args, Debug)]
pub struct QueueArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: Option<QueueCommand>,
}

#[derive(Args, Debug, Clone, Default)]
struct JobSelect {
    /// Only this plugin.
    #[arg(long)]
    plugin: Option<String>,
    /// Only jobs of this event id.
    #[arg(long)]
    event_id: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum QueueCommand {
    /// Jobs per status and the jobs themselves (all statuses, oldest first).
    List {
        #[command(flatten)]
        select: JobSelect,
        /// pending, processing, done or dead.
        #[arg(long)]
        status: Option<String>,
        /// At most this many jobs.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Put dead jobs back to pending (all, or one event's with --event-id).
    Retry {
        #[command(flatten)]
        select: JobSelect,
    },
    /// Remove dead jobs.
    Clear {
        #[command(flatten)]
        select: JobSelect,
    },
    /// Remove delivered jobs.
    ClearDone {
        #[command(flatten)]
        select: JobSelect,
    },
}

fn pair(text: &str, what: &str) -> Result<(String, Value)> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| anyhow!("{what} must be NAME=VALUE, got '{text}'"))?;
    Ok((name.trim().to_owned(), Value::from(value)))
}

fn select_args(select: &JobSelect) -> Map<String, Value> {
    let mut args = Map::new();
    if let Some(plugin) = &select.plugin {
        args.insert("plugin".into(), Value::from(plugin.as_str()));
    }
    if let Some(id) = select.event_id {
        args.insert("event_id".into(), Value::from(id.to_string()));
    }
    args
}

fn admin(connect: &ConnectArgs, config: Option<&Path>, action: &str, args: Value) -> Result<Value> {
    let client = connect.connect(config)?;
    client
        .admin(action, &args)
        .map_err(|err| anyhow!("{action}: {err}"))
}

pub fn plugin(args: PluginArgs, config: Option<&Path>, json: bool) -> Result<()> {
    let (action, body) = match args.command {
        PluginCommand::List => ("plugin.list", json!({})),
        PluginCommand::Add {
            name,
            kind,
            definition,
            mode,
            no_emit,
            disabled,
            endpoint,
            headers,
            tcp_host,
            tcp_port,
            level,
            template,
            detail,
            package,
            version,
            args: process_args,
            env,
            working_dir,
        } => {
            let definition = match (definition, kind) {
                (Some(text), _) => {
                    let mut def: Value = serde_json::from_str(&text)
                        .map_err(|err| anyhow!("--definition is not JSON: {err}"))?;
                    if def.get("name").is_none() {
                        def["name"] = Value::from(name.as_str());
                    }
                    def
                }
                (None, None) => bail!("give --kind (http, tcp, log, process) or --definition"),
                (None, Some(kind)) => {
                    let config = match kind {
                        Kind::Http => {
                            let endpoint =
                                endpoint.ok_or_else(|| anyhow!("http plugins need --endpoint"))?;
                            let headers: Map<String, Value> = headers
                                .iter()
                                .map(|h| pair(h, "--header"))
                                .collect::<Result<_>>()?;
                            json!({"type": "http", "endpoint": endpoint, "headers": headers})
                        }
                        Kind::Tcp => json!({"type": "tcp",
                            "host": tcp_host.ok_or_else(|| anyhow!("tcp plugins need --tcp-host"))?,
                            "port": tcp_port.ok_or_else(|| anyhow!("tcp plugins need --tcp-port"))?}),
                        Kind::Log => {
                            let mut config =
                                json!({"type": "log", "level": level, "detail": detail});
                            if let Some(template) = template {
                                config["template"] = Value::from(template);
                            }
                            config
                        }
                        Kind::Process => {
                            let env: Map<String, Value> = env
                                .iter()
                                .map(|e| pair(e, "--env"))
                                .collect::<Result<_>>()?;
                            let mut config = json!({"type": "process",
                                "name": package.unwrap_or_else(|| name.clone()),
                                "version": version.ok_or_else(|| anyhow!("process plugins need --version"))?,
                                "args": process_args, "env": env});
                            if let Some(dir) = working_dir {
                                config["working_dir"] = Value::from(dir);
                            }
                            config
                        }
                    };
                    json!({"enabled": !disabled, "emit_events": !no_emit, "name": name,
                           "payload_mode": mode.to_ascii_lowercase(), "config": config})
                }
            };
            ("plugin.add", json!({ "definition": definition }))
        }
        PluginCommand::Config {
            name,
            mode,
            emit_events,
        } => {
            let mut body = json!({ "name": name });
            if let Some(mode) = mode {
                body["payload_mode"] = Value::from(mode);
            }
            if let Some(emit) = emit_events {
                body["emit_events"] = Value::from(emit);
            }
            ("plugin.config", body)
        }
        PluginCommand::Enable { name } => ("plugin.enable", json!({ "name": name })),
        PluginCommand::Disable { name } => ("plugin.disable", json!({ "name": name })),
        PluginCommand::Remove { name } => ("plugin.remove", json!({ "name": name })),
        PluginCommand::Test { name } => ("plugin.test", json!({ "name": name })),
        PluginCommand::Replay { name, event_id } => {
            let mut body = json!({ "name": name });
            if let Some(id) = event_id {
                body["event_id"] = Value::from(id.to_string());
            }
            ("plugin.replay", body)
        }
    };
    let result = admin(&args.connect, config, action, body)?;
    if action == "plugin.test" && result["ok"] != Value::Bool(true) {
        if json {
            print_value(&result, true);
        }
        bail!(
            "plugin test failed: {}",
            result["error"].as_str().unwrap_or("unknown error")
        );
    }
    if json {
        print_value(&result, true);
    } else if action == "plugin.list" {
        let plugins = result.as_array().cloned().unwrap_or_default();
        if plugins.is_empty() {
            out!("no plugins configured");
        }
        let mut table = table(["name", "kind", "state", "emit events", "mode"]);
        for p in &plugins {
            table.add_row([
                p["name"].as_str().unwrap_or("").to_owned(),
                p["kind"].as_str().unwrap_or("").to_owned(),
                if p["enabled"] == Value::Bool(true) {
                    "enabled"
                } else {
                    "disabled"
                }
                .to_owned(),
                p["emit_events"].to_string(),
                p["payload_mode"].as_str().unwrap_or("").to_owned(),
            ]);
        }
        if !plugins.is_empty() {
            out!("{}", table.trim_fmt());
        }
    } else {
        print_value(&result, false);
    }
    Ok(())
}

pub fn queue(args: QueueArgs, config: Option<&Path>, json: bool) -> Result<()> {
    let command = args.command.unwrap_or(QueueCommand::List {
        select: JobSelect::default(),
        status: None,
        limit: 100,
    });
    let (action, body) = match command {
        QueueCommand::List {
            select,
            status,
            limit,
        } => {
            let mut body = select_args(&select);
            if let Some(status) = status {
                body.insert("status".into(), Value::from(status));
            }
            body.insert("limit".into(), Value::from(limit));
            ("queue.list", body)
        }
        QueueCommand::Retry { select } => ("queue.retry", select_args(&select)),
        QueueCommand::Clear { select } => ("queue.clear", select_args(&select)),
        QueueCommand::ClearDone { select } => ("queue.clear-done", select_args(&select)),
    };
    let result = admin(&args.connect, config, action, Value::Object(body))?;
    if json {
        print_value(&result, true);
        return Ok(());
    }
    match action {
        "queue.list" => {
            let c = &result["counts"];
            out!(
                "pending {}  processing {}  done {}  dead {}",
                c["pending"],
                c["processing"],
                c["done"],
                c["dead"]
            );
            let jobs = result["jobs"].as_array().cloned().unwrap_or_default();
            let mut table = table([
                "job",
                "plugin",
                "status",
                "priority",
                "event",
                "aggregate",
                "attempts",
                "last error",
            ]);
            for job in &jobs {
                let text = |key: &str| job[key].as_str().unwrap_or("").to_owned();
                table.add_row([
                    format!("#{}", job["id"]),
                    text("plugin"),
                    text("status"),
                    text("priority"),
                    text("event_id"),
                    format!("{}/{}", text("aggregate_type"), text("aggregate_id")),
                    job["attempts"].to_string(),
                    job["last_error"].as_str().unwrap_or("-").to_owned(),
                ]);
            }
            align_right(&mut table, &[6]);
            if !jobs.is_empty() {
                out!("{}", table.trim_fmt());
            }
        }
        "queue.retry" => out!("{} job(s) queued again", result["retried"]),
        _ => out!("{} job(s) removed", result["removed"]),
    }
    Ok(())
}
