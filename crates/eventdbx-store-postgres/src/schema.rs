//! The database schema as embedded, versioned migrations, applied at open in one transaction
//! under a lock on the migrations table, so servers starting together migrate once. A database
//! whose schema is newer than this build's is refused: an older `dbx` must not write a layout it
//! does not know. Text columns that are compared or ordered use `COLLATE "C"` (byte order, as the
//! embedded engine's keys and `eventdbx-core`'s cursors compare strings). Records are stored as
//! the same JSON text the embedded engine stores, so byte counts (usage, quotas) agree.

use deadpool_postgres::Client;
use eventdbx_store::{Result, StoreError};

use crate::{col, db, unsigned, Cached};

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 2;

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
    include_str!("../migrations/0002_control_documents.sql"),
];

/// Applies the migrations the database lacks; refuses a newer schema.
pub(crate) async fn migrate(client: &mut Client) -> Result<()> {
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
        .query_one_cached(
            "SELECT coalesce(max(version), 0) FROM eventdbx_migrations",
            &[],
        )
        .await
        .map_err(db)?;
    let current: i32 = col(&row, 0)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::engine(format!(
            "the database schema is version {current}, newer than this dbx knows \
             ({SCHEMA_VERSION}): upgrade dbx"
        )));
    }
    for (version, sql) in (1..)
        .zip(MIGRATIONS.iter())
        .skip_while(|(v, _)| *v <= current)
    {
        txn.batch_execute(sql)
            .await
            .map_err(|err| StoreError::storage(format!("migration {version} failed"), err))?;
        txn.execute_cached(
            "INSERT INTO eventdbx_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(db)?;
    }
    txn.commit().await.map_err(db)
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
