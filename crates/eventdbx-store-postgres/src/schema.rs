//! The database schema as embedded, versioned migrations, applied at open in one transaction
//! under a lock on the migrations table, so servers starting together migrate once. A database
//! whose schema is newer than this build's is refused: an older `dbx` must not write a layout it
//! does not know. Text columns that are compared or ordered use `COLLATE "C"` (byte order, as the
//! embedded engine's keys and `eventdbx-core`'s cursors compare strings). Records are stored as
//! the same JSON text the embedded engine stores, so byte counts (usage, quotas) agree.
//!
//! `dbx migrate status|up` reads and applies the same migrations without opening the store
//! ([`migration_status`], [`migrate_up`]); each migration after the first starts with a
//! `-- <version>: <what it does>` line, which they print. The tables and indexes are described
//! in `docs/storage.md`, "PostgreSQL engine".

use deadpool_postgres::Client;
use eventdbx_store::{Result, StoreError};
use tokio_postgres::NoTls;

use crate::{col, db, unsigned, Cached};

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 3;

/// Migration `n` is `MIGRATIONS[n - 1]`; never edit one that has shipped, add the next.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE aggregates (
    tenant          text COLLATE "C" NOT NULL,
    aggregate_type  text COLLATE "C" NOT NULL,
    aggregate_id    text COLLATE "C" NOT NULL,
    revision        bigint NOT NULL,
    version         bigint NOT NULL,
    archived        boolean NOT NULL,
    created_ms      bigint NOT NULL,
    updated_ms      bigint NOT NULL,
    record          text NOT NULL,
    PRIMARY KEY (tenant, aggregate_type, aggregate_id)
);
CREATE INDEX aggregates_natural ON aggregates (tenant, archived, aggregate_type, aggregate_id);
CREATE TABLE events (
    tenant          text COLLATE "C" NOT NULL,
    aggregate_type  text COLLATE "C" NOT NULL,
    aggregate_id    text COLLATE "C" NOT NULL,
    version         bigint NOT NULL,
    event_id        bigint NOT NULL,
    body            text NOT NULL,
    PRIMARY KEY (tenant, aggregate_type, aggregate_id, version)
);
CREATE INDEX events_outbox ON events (tenant, event_id);
CREATE TABLE snapshots (
    tenant          text COLLATE "C" NOT NULL,
    snapshot_id     bigint NOT NULL,
    aggregate_type  text COLLATE "C" NOT NULL,
    aggregate_id    text COLLATE "C" NOT NULL,
    version         bigint NOT NULL,
    body            text NOT NULL,
    PRIMARY KEY (tenant, snapshot_id)
);
CREATE INDEX snapshots_by_aggregate ON snapshots (tenant, aggregate_type, aggregate_id, snapshot_id);
CREATE TABLE idempotency (
    tenant          text COLLATE "C" NOT NULL,
    aggregate_type  text COLLATE "C" NOT NULL,
    aggregate_id    text COLLATE "C" NOT NULL,
    key             text COLLATE "C" NOT NULL,
    body            text NOT NULL,
    PRIMARY KEY (tenant, aggregate_type, aggregate_id, key)
);
CREATE TABLE aggregate_references (
    tenant          text COLLATE "C" NOT NULL,
    source_type     text COLLATE "C" NOT NULL,
    source_id       text COLLATE "C" NOT NULL,
    path            text COLLATE "C" NOT NULL,
    target_type     text COLLATE "C" NOT NULL,
    target_id       text COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, source_type, source_id, path)
);
CREATE INDEX aggregate_referrers
    ON aggregate_references (tenant, target_type, target_id, source_type, source_id, path);
CREATE TABLE usage (
    tenant          text COLLATE "C" NOT NULL,
    shard           integer NOT NULL,
    events          bigint NOT NULL,
    bytes           bigint NOT NULL,
    PRIMARY KEY (tenant, shard)
);
CREATE SEQUENCE plugin_job_ids;
CREATE TABLE plugin_jobs (
    id              bigint PRIMARY KEY,
    plugin          text COLLATE "C" NOT NULL,
    rank            integer NOT NULL,
    status          text NOT NULL,
    done_at_ms      bigint,
    event_id        bigint NOT NULL,
    body            text NOT NULL
);
CREATE INDEX plugin_job_queue ON plugin_jobs (plugin, rank, id)
    WHERE status IN ('pending', 'processing');
CREATE INDEX plugin_job_done ON plugin_jobs (done_at_ms, id) WHERE status = 'done';
CREATE INDEX plugin_job_dead ON plugin_jobs (id) WHERE status = 'dead';
"#,
    // The sorted list orders (list.rs) read `ORDER BY <column>, aggregate_type, aggregate_id`
    // from a keyset position, `LIMIT` a batch: without these, every page of such a list sorted
    // the tenant's whole table. Each index scanned backwards serves the descending order.
    r#"-- 2: indexes for the list orders by created_at, updated_at and version
CREATE INDEX aggregates_by_created
    ON aggregates (tenant, created_ms, aggregate_type, aggregate_id);
CREATE INDEX aggregates_by_updated
    ON aggregates (tenant, updated_ms, aggregate_type, aggregate_id);
CREATE INDEX aggregates_by_version
    ON aggregates (tenant, version, aggregate_type, aggregate_id);
"#,
    include_str!("../migrations/0003_control_documents.sql"),
];

/// A migration as `dbx migrate status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Its version: the schema version once it is applied.
    pub version: i32,
    /// What it does (its leading `-- N: ...` comment).
    pub description: String,
}

/// The schema of a database against this build's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// The database's schema version (0: no schema yet).
    pub database: i32,
    /// The newest version this build knows, [`SCHEMA_VERSION`].
    pub known: i32,
    /// The migrations the database lacks, oldest first (none when it is newer).
    pub pending: Vec<Migration>,
}

impl MigrationStatus {
    /// Whether the database's schema is newer than this build's: this `dbx` must not use it.
    pub fn newer(&self) -> bool {
        self.database > self.known
    }
}

fn describe(version: i32, sql: &str) -> Migration {
    let description = sql
        .trim_start()
        .strip_prefix("--")
        .and_then(|line| line.lines().next())
        .and_then(|line| line.split_once(':'))
        .map(|(_, what)| what.trim().to_owned())
        .unwrap_or_else(|| match version {
            1 => "the tables, their keys and the plugin job queue".to_owned(),
            _ => format!("migration {version}"),
        });
    Migration {
        version,
        description,
    }
}

fn pending_after(current: i32) -> Vec<Migration> {
    (1..)
        .zip(MIGRATIONS.iter())
        .filter(|(version, _)| *version > current)
        .map(|(version, sql)| describe(version, sql))
        .collect()
}

fn newer_schema(current: i32) -> StoreError {
    StoreError::engine(format!(
        "the database schema is version {current}, newer than this dbx knows \
         ({SCHEMA_VERSION}): upgrade dbx"
    ))
}

/// One connection for `dbx migrate`, on a runtime of its own (the command has none).
fn with_connection<T>(
    url: &str,
    task: impl for<'c> FnOnce(
        &'c mut tokio_postgres::Client,
    )
        -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + 'c>>,
) -> Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| StoreError::storage("cannot start the database runtime", err))?;
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|err| StoreError::storage("invalid PostgreSQL url", err))?;
    if config.get_application_name().is_none() {
        config.application_name("dbx migrate");
    }
    config.connect_timeout(std::time::Duration::from_secs(10));
    runtime.block_on(async move {
        let (mut client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|err| StoreError::storage("cannot reach the database", err))?;
        let driver = tokio::spawn(connection);
        let out = task(&mut client).await;
        drop(client);
        let _ = driver.await;
        out
    })
}

/// The database's schema version and the migrations it lacks, changing nothing.
pub fn migration_status(url: &str) -> Result<MigrationStatus> {
    with_connection(url, |client| {
        Box::pin(async move {
            let database = current_version(client).await?;
            Ok(MigrationStatus {
                database,
                known: SCHEMA_VERSION,
                pending: pending_after(database),
            })
        })
    })
}

/// Applies the pending migrations (as a server does at start) and returns those it applied:
/// none when the schema is current. Refuses a database whose schema is newer.
pub fn migrate_up(url: &str) -> Result<Vec<Migration>> {
    with_connection(url, |client| Box::pin(migrate(client)))
}

async fn current_version(client: &tokio_postgres::Client) -> Result<i32> {
    let row = client
        .query_one("SELECT to_regclass('eventdbx_migrations') IS NOT NULL", &[])
        .await
        .map_err(db)?;
    if !col::<bool>(&row, 0)? {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM eventdbx_migrations",
            &[],
        )
        .await
        .map_err(db)?;
    col(&row, 0)
}

/// Applies the migrations the database lacks and returns them; refuses a newer schema.
pub(crate) async fn migrate(client: &mut tokio_postgres::Client) -> Result<Vec<Migration>> {
    // Two servers starting at once may both try to create the table: the loser's unique
    // violation on the catalog just means it exists now.
    if let Err(err) = client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS eventdbx_migrations (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
    {
        if !crate::lost_race(&err) {
            return Err(StoreError::storage(
                "cannot create the migrations table",
                err,
            ));
        }
    }
    let txn = client.transaction().await.map_err(db)?;
    txn.batch_execute("LOCK TABLE eventdbx_migrations IN EXCLUSIVE MODE")
        .await
        .map_err(db)?;
    let row = txn
        .query_one(
            "SELECT coalesce(max(version), 0) FROM eventdbx_migrations",
            &[],
        )
        .await
        .map_err(db)?;
    let current: i32 = col(&row, 0)?;
    if current > SCHEMA_VERSION {
        return Err(newer_schema(current));
    }
    let pending = pending_after(current);
    for (version, sql) in (1..)
        .zip(MIGRATIONS.iter())
        .skip_while(|(v, _)| *v <= current)
    {
        txn.batch_execute(sql)
            .await
            .map_err(|err| StoreError::storage(format!("migration {version} failed"), err))?;
        txn.execute(
            "INSERT INTO eventdbx_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(db)?;
    }
    txn.commit().await.map_err(db)?;
    Ok(pending)
}

/// The highest Snowflake id stored (events, snapshots, jobs), the floor of the id generator:
/// after a restart (or a clock step back) this server's ids stay above its earlier ones.
pub(crate) async fn highest_id(client: &Client) -> Result<u64> {
    let row = client
        .query_one_cached(
            // Per tenant through the (tenant, event_id) and (tenant, snapshot_id) indexes: one
            // index probe per tenant instead of a scan of every event. Every tenant with events
            // or snapshots has usage rows.
            "SELECT greatest(
                 (SELECT coalesce(max(m.id), 0) FROM (SELECT DISTINCT tenant FROM usage) t
                  CROSS JOIN LATERAL (SELECT max(event_id) AS id FROM events e
                                      WHERE e.tenant = t.tenant) m),
                 (SELECT coalesce(max(m.id), 0) FROM (SELECT DISTINCT tenant FROM usage) t
                  CROSS JOIN LATERAL (SELECT max(snapshot_id) AS id FROM snapshots s
                                      WHERE s.tenant = t.tenant) m),
                 (SELECT coalesce(max(event_id), 0) FROM plugin_jobs))",
            &[],
        )
        .await
        .map_err(db)?;
    Ok(unsigned(col(&row, 0)?))
}

#[cfg(test)]
mod tests {
    use super::{pending_after, MIGRATIONS, SCHEMA_VERSION};

    #[test]
    fn every_migration_is_numbered_and_described() {
        assert_eq!(MIGRATIONS.len(), SCHEMA_VERSION as usize);
        let all = pending_after(0);
        assert_eq!(
            all.iter().map(|m| m.version).collect::<Vec<_>>(),
            (1..=SCHEMA_VERSION).collect::<Vec<_>>()
        );
        for (migration, sql) in all.iter().zip(MIGRATIONS).skip(1) {
            let header = format!("-- {}: ", migration.version);
            assert!(sql.starts_with(&header), "migration {}", migration.version);
            assert!(!migration.description.is_empty());
        }
        assert_eq!(
            all[1].description,
            "indexes for the list orders by created_at, updated_at and version"
        );
        assert!(pending_after(SCHEMA_VERSION).is_empty());
        assert!(pending_after(SCHEMA_VERSION + 5).is_empty());
    }
}
