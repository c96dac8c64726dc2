//! `dbx tenant …`: list, assign, unassign, reload, quotas and storage of tenants.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{failed, print_value, ConnectArgs};

/// `dbx tenant list` as a table.
fn print_tenants(tenants: &[Value]) {
    if tenants.is_empty() {
        out!("no tenants");
        return;
    }
    let mut table = super::table([
        "tenant",
        "shard",
        "quota MB",
        "events",
        "bytes",
        "active schema",
    ]);
    for t in tenants {
        let shard = format!(
            "{}{}",
            t["shard_id"].as_str().unwrap_or("?"),
            if t["assigned"] == true { "" } else { "*" }
        );
        let quota = t["quota_mb"]
            .as_u64()
            .map_or_else(|| "-".to_owned(), |q| q.to_string());
        table.add_row([
            t["tenant_id"].as_str().unwrap_or("?").to_owned(),
            shard,
            quota,
            t["events"].to_string(),
            t["storage_bytes"].to_string(),
            t["active_version"].as_str().unwrap_or("-").to_owned(),
        ]);
    }
    super::align_right(&mut table, &[2, 3, 4]);
    out!("{}", table.trim_fmt());
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
            let spinner = crate::progress::Spinner::start(format!(
                "recalculating storage of tenant {tenant_id}"
            ));
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
