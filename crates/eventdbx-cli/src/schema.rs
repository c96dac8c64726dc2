//! `dbx schema`: `validate` works offline on a `schema.dbx` file; `show`, `apply`, `publish`,
//! `history` and `activate` act on the running server through the control protocol.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, Subcommand};
use eventdbx_client::SchemaPublish;
use eventdbx_core::schema::{dbx, SchemaMap};
use serde_json::{json, Value};

use crate::remote::{print_json_text, print_value, ConnectArgs};

/// `dbx schema …`
#[derive(Args, Debug)]
pub struct SchemaArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: SchemaCommand,
}

#[derive(Subcommand, Debug)]
enum SchemaCommand {
    /// Compile a schema.dbx file without a server (default: schema.dbx found upwards).
    Validate { file: Option<PathBuf> },
    /// Print the tenant's schemas, or one aggregate's.
    Show { aggregate: Option<String> },
    /// Replace the tenant's schemas with a compiled schema.dbx (or a JSON schema map).
    Apply {
        /// A .dbx file, or a JSON schema map (default: schema.dbx found upwards).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Publish the tenant's schemas as a new version.
    Publish {
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        /// A label (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Make the new version active.
        #[arg(long)]
        activate: bool,
        /// Publish even when identical to the latest version.
        #[arg(long)]
        force: bool,
        /// Reload the tenant afterwards.
        #[arg(long)]
        reload: bool,
    },
    /// List the tenant's published schema versions and the audit log.
    History,
    /// Make a published version the active schema set again (a rollback when it is older).
    Activate {
        version_id: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        actor: Option<String>,
    },
}

pub fn schema(args: SchemaArgs, config: Option<&Path>, json: bool) -> Result<()> {
    match args.command {
        SchemaCommand::Validate { file } => validate(file, json),
        SchemaCommand::Show { aggregate } => {
            let client = args.connect.connect(config)?;
            let text = client
                .list_schemas()
                .map_err(|err| anyhow!("list schemas: {err}"))?;
            match aggregate {
                None => print_json_text(&text, json),
                Some(aggregate) => {
                    let map: Value =
                        serde_json::from_str(&text).context("the server sent invalid JSON")?;
                    match map.get(&aggregate) {
                        Some(schema) => print_value(schema, json),
                        None => bail!("no schema for aggregate {aggregate}"),
                    }
                }
            }
            Ok(())
        }
        SchemaCommand::Apply { file } => {
            let path = match file {
                Some(path) => path,
                None => find_schema_file()?,
            };
            let source = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let client = args.connect.connect(config)?;
            let map = if path.extension().is_some_and(|ext| ext == "json") {
                SchemaMap::from_json(&source).map_err(|err| anyhow!("{}: {err}", path.display()))?
            } else {
                // Compiling against the installed map keeps created_at (and unchanged updated_at).
                let existing = client
                    .list_schemas()
                    .ok()
                    .and_then(|text| SchemaMap::from_json(&text).ok());
                dbx::compile(
                    &source,
                    existing.as_ref(),
                    &eventdbx_core::time::now_rfc3339(),
                )
                .map_err(|err| anyhow!("{}: {err}", path.display()))?
            };
            let count = client
                .replace_schemas(&map.to_json())
                .map_err(|err| anyhow!("replace schemas: {err}"))?;
            let names: Vec<&String> = map.iter().map(|(name, _)| name).collect();
            if json {
                print_value(&json!({"applied": count, "aggregates": names}), true);
            } else {
                out!(
                    "applied {count} schema(s) from {}: {}",
                    path.display(),
                    names
                        .iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Ok(())
        }
        SchemaCommand::Publish {
            reason,
            actor,
            labels,
            activate,
            force,
            reload,
        } => {
            let client = args.connect.connect(config)?;
            let publish = SchemaPublish {
                reason,
                actor,
                labels,
                activate,
                force,
                reload,
                ..SchemaPublish::new(args.connect.tenant.clone())
            };
            let result = client
                .tenant_schema_publish(&publish)
                .map_err(|err| anyhow!("publish schemas: {err}"))?;
            if json {
                print_value(
                    &json!({
                        "tenant_id": publish.tenant_id,
                        "version_id": result.version_id,
                        "activated": result.activated,
                        "skipped": result.skipped,
                    }),
                    true,
                );
            } else if result.skipped {
                out!(
                    "unchanged since version {}; nothing published",
                    result.version_id
                );
            } else {
                out!(
                    "published version {}{}",
                    result.version_id,
                    if result.activated { " (active)" } else { "" }
                );
            }
            Ok(())
        }
        SchemaCommand::History => {
            let client = args.connect.connect(config)?;
            let tenant = &args.connect.tenant;
            let manifest = client
                .tenant_schema_history(tenant)
                .map_err(|err| anyhow!("schema history of tenant {tenant}: {err}"))?;
            if json {
                print_value(&manifest, true);
            } else {
                print_history(tenant, &manifest);
            }
            Ok(())
        }
        SchemaCommand::Activate {
            version_id,
            reason,
            actor,
        } => {
            let client = args.connect.connect(config)?;
            let tenant = &args.connect.tenant;
            let result = client
                .tenant_schema_activate(tenant, &version_id, reason.as_deref(), actor.as_deref())
                .map_err(|err| anyhow!("activate schema version {version_id}: {err}"))?;
            if json {
                print_value(
                    &json!({
                        "tenant_id": tenant,
                        "version_id": result.version_id,
                        "activated": result.activated,
                        "action": result.action,
                    }),
                    true,
                );
            } else if result.activated {
                out!(
                    "{} {}: version {} is active",
                    result.action,
                    tenant,
                    result.version_id
                );
            } else {
                out!(
                    "version {} is already active; nothing changed",
                    result.version_id
                );
            }
            Ok(())
        }
    }
}

/// The manifest as a table of versions (the active one marked) and the audit log.
fn print_history(tenant: &str, manifest: &Value) {
    let active = manifest["active_version"].as_str();
    let versions = manifest["versions"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if versions.is_empty() {
        out!("tenant {tenant}: no published schema version");
        return;
    }
    out!("tenant {tenant}: {} version(s)", versions.len());
    for version in versions {
        let id = version["id"].as_str().unwrap_or("?");
        let marker = if Some(id) == active { "*" } else { " " };
        let mut line = format!(
            "{marker} {id}  {}",
            version["created_at"].as_str().unwrap_or("")
        );
        for (key, label) in [("author", "by"), ("reason", "reason")] {
            if let Some(value) = version[key].as_str() {
                line.push_str(&format!("  {label}: {value}"));
            }
        }
        if let Some(labels) = version["labels"].as_array().filter(|l| !l.is_empty()) {
            let labels: Vec<&str> = labels.iter().filter_map(Value::as_str).collect();
            line.push_str(&format!("  labels: {}", labels.join(",")));
        }
        out!("{line}");
    }
    out!("audit log:");
    for entry in manifest["audit_log"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
    {
        let mut line = format!(
            "  {}  {:<8} {}",
            entry["timestamp"].as_str().unwrap_or(""),
            entry["action"].as_str().unwrap_or("?"),
            entry["version"].as_str().unwrap_or("?")
        );
        for key in ["actor", "reason", "details"] {
            if let Some(value) = entry[key].as_str() {
                line.push_str(&format!("  {key}: {value}"));
            }
        }
        out!("{line}");
    }
}

fn validate(file: Option<PathBuf>, json: bool) -> Result<()> {
    let path = match file {
        Some(path) => path,
        None => find_schema_file()?,
    };
    let source =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    match dbx::compile(&source, None, &eventdbx_core::time::now_rfc3339()) {
        Ok(map) => {
            let names: Vec<&String> = map.iter().map(|(name, _)| name).collect();
            if json {
                print_value(
                    &json!({"valid": true, "aggregate_count": map.len(), "aggregates": names}),
                    true,
                );
            } else {
                out!(
                    "{}: valid, {} aggregate(s): {}",
                    path.display(),
                    map.len(),
                    names
                        .iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Ok(())
        }
        Err(err) => {
            if json {
                print_value(&json!({"valid": false, "error": err.to_string()}), true);
            }
            bail!("{}: {err}", path.display())
        }
    }
}

/// `schema.dbx` in the current directory or the nearest parent that has one.
fn find_schema_file() -> Result<PathBuf> {
    let cwd = std::env::current_dir()?;
    cwd.ancestors()
        .map(|dir| dir.join("schema.dbx"))
        .find(|path| path.is_file())
        .context("could not find schema.dbx in the current directory or any parent directory")
}
