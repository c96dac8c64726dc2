//! `dbx migrate status|up`: the PostgreSQL schema of a `[storage] backend = "postgres"`
//! workspace, read and upgraded without starting a server (`docs/storage.md`, "PostgreSQL
//! engine"). A server applies the same migrations when it starts; `up` lets an operator do it
//! ahead of a rolling restart, and `status` tells whether this `dbx` may use the database.

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;
use eventdbx_server::config::{Config, POSTGRES_URL_ENV};
use eventdbx_store_postgres::{Migration, MigrationStatus};

/// Exit status of `dbx migrate status` when migrations are pending (as `dbx status` exits 3
/// when no server runs): a script can tell "apply them" from a failure (1).
const PENDING_EXIT: i32 = 3;

#[derive(Subcommand)]
pub enum MigrateAction {
    /// The database's schema version, this dbx's, and the pending migrations (exit 0 when up
    /// to date, 3 when migrations are pending, 1 when the database is newer or unreachable).
    Status,
    /// Apply the pending migrations (idempotent); refuses a database newer than this dbx.
    Up,
}

/// The database URL the server would use: `DBX_POSTGRES_URL`, else `[storage] url`.
fn database_url(config: &Config) -> Result<String> {
    if config.storage.backend != "postgres" {
        bail!(
            "the workspace's [storage] backend is {:?}: migrations are the PostgreSQL engine's \
             (the embedded store upgrades itself when it opens)",
            config.storage.backend
        );
    }
    std::env::var(POSTGRES_URL_ENV)
        .ok()
        .filter(|url| !url.trim().is_empty())
        .or_else(|| config.storage.url.clone())
        .with_context(|| {
            format!("neither {POSTGRES_URL_ENV} nor [storage] url gives the database URL")
        })
}

fn listed(migrations: &[Migration]) -> Vec<serde_json::Value> {
    migrations
        .iter()
        .map(|m| serde_json::json!({"version": m.version, "description": m.description}))
        .collect()
}

pub fn migrate(config: &Config, action: MigrateAction, json: bool) -> Result<()> {
    let url = database_url(config)?;
    match action {
        MigrateAction::Status => {
            let status: MigrationStatus = eventdbx_store_postgres::migration_status(&url)
                .context("reading the database's schema version")?;
            if json {
                out!(
                    "{}",
                    serde_json::json!({
                        "database_version": status.database,
                        "dbx_version": status.known,
                        "pending": listed(&status.pending),
                        "newer": status.newer(),
                    })
                );
            } else {
                out!("database schema version: {}", status.database);
                out!("dbx schema version: {}", status.known);
                if status.pending.is_empty() && !status.newer() {
                    out!("up to date");
                }
                for m in &status.pending {
                    out!("pending: {} ({})", m.version, m.description);
                }
            }
            if status.newer() {
                bail!(
                    "the database schema is version {}, newer than this dbx knows ({}): \
                     upgrade dbx",
                    status.database,
                    status.known
                );
            }
            if !status.pending.is_empty() {
                if !json {
                    out!("run `dbx migrate up` to apply them");
                }
                std::process::exit(PENDING_EXIT);
            }
            Ok(())
        }
        MigrateAction::Up => {
            let applied =
                eventdbx_store_postgres::migrate_up(&url).context("applying the migrations")?;
            let version = eventdbx_store_postgres::SCHEMA_VERSION;
            if json {
                out!(
                    "{}",
                    serde_json::json!({"applied": listed(&applied), "database_version": version})
                );
            } else {
                for m in &applied {
                    out!("applied {} ({})", m.version, m.description);
                }
                if applied.is_empty() {
                    out!("the database schema is version {version}: nothing to apply");
                } else {
                    out!("the database schema is now version {version}");
                }
            }
            Ok(())
        }
    }
}
