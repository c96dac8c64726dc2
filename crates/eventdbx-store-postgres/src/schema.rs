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
pub const SCHEMA_VERSION: i32 = 7;

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
    POSITIONS_AND_ONE_STATEMENT_WRITES,
    include_str!("../migrations/0005_event_positions_by_event.sql"),
    include_str!("../migrations/0006_writes_never_scan_a_table.sql"),
    include_str!("../migrations/0007_rounds_take_the_queue_by_key.sql"),
];

/// Migration 4: event positions (`docs/subscriptions.md`, "Positions"; `positions.rs`) and the
/// write as one statement (`write.rs`).
///
/// Every inserted event is queued by a trigger, whoever inserts it. A round of
/// `eventdbx_assign_positions` (one at a time: it locks the `position_sequencer` row) takes the
/// committed queue rows and numbers them after the tenant's head, so a position is only ever
/// given to a committed event and above every position given before: a transaction that commits
/// late is numbered late, never slipped in below a head a reader saw. The trigger is created
/// before the existing events are numbered: it waits for the writers in flight and holds new ones
/// off until the migration commits, so no event is missed between the two.
///
/// `eventdbx_write` is the whole commit of a create, append or patch in one round trip (it runs as
/// its own transaction): the record at the revision that was read, the quota, the event, the
/// snapshot, the idempotency result, the reference index, the plugin jobs and the usage. A lost
/// race raises `serialization_failure` (or a unique violation), the quota `EDBQ1`; either way
/// nothing of the write stays.
const POSITIONS_AND_ONE_STATEMENT_WRITES: &str = r##"-- 4: event positions (a queue numbered after commit) and the write as one statement
CREATE TABLE position_queue (
    id              bigserial PRIMARY KEY,
    tenant          text COLLATE "C" NOT NULL,
    aggregate_type  text COLLATE "C" NOT NULL,
    aggregate_id    text COLLATE "C" NOT NULL,
    version         bigint NOT NULL
);
CREATE TABLE event_positions (
    tenant          text COLLATE "C" NOT NULL,
    position        bigint NOT NULL,
    aggregate_type  text COLLATE "C" NOT NULL,
    aggregate_id    text COLLATE "C" NOT NULL,
    version         bigint NOT NULL,
    PRIMARY KEY (tenant, position)
);
CREATE TABLE position_heads (
    tenant          text COLLATE "C" PRIMARY KEY,
    head            bigint NOT NULL
);
CREATE TABLE position_sequencer (id integer PRIMARY KEY);
INSERT INTO position_sequencer VALUES (1);

CREATE FUNCTION eventdbx_queue_position() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO position_queue (tenant, aggregate_type, aggregate_id, version)
    VALUES (NEW.tenant, NEW.aggregate_type, NEW.aggregate_id, NEW.version);
    RETURN NULL;
END $$;
CREATE TRIGGER events_queue_position AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION eventdbx_queue_position();

-- Events stored before positions, numbered in event id order; `sealed` (the highest id up to
-- each version) keeps every aggregate's versions in order even where servers' clocks disagreed.
INSERT INTO event_positions (tenant, position, aggregate_type, aggregate_id, version)
SELECT tenant,
       row_number() OVER (PARTITION BY tenant
                          ORDER BY sealed, aggregate_type, aggregate_id, version),
       aggregate_type, aggregate_id, version
FROM (SELECT tenant, aggregate_type, aggregate_id, version,
             max(event_id) OVER (PARTITION BY tenant, aggregate_type, aggregate_id
                                 ORDER BY version) AS sealed
      FROM events) AS stored;
INSERT INTO position_heads (tenant, head)
SELECT tenant, max(position) FROM event_positions GROUP BY tenant;

CREATE FUNCTION eventdbx_assign_positions(p_limit integer)
RETURNS TABLE (advanced_tenant text, new_head bigint, assigned bigint)
LANGUAGE plpgsql AS $$
DECLARE
    tenants text[];
    heads_after bigint[];
    counts bigint[];
BEGIN
    -- Nothing committed is waiting: a read-only probe, no lock taken and no WAL written.
    PERFORM 1 FROM position_queue ORDER BY id LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- Durable even on a relaxed connection: a position a reader was shown is never taken back.
    PERFORM set_config('synchronous_commit', 'on', true);
    -- One round at a time, whichever server runs it. The next statement's snapshot is taken
    -- after the lock is granted, so it sees the previous round's heads and every commit before.
    PERFORM 1 FROM position_sequencer FOR UPDATE;
    -- Collected into arrays and returned after: a data-modifying WITH runs as a plain statement.
    WITH taken AS (
        DELETE FROM position_queue
        WHERE id IN (SELECT q.id FROM position_queue q ORDER BY q.id LIMIT p_limit)
        RETURNING id, tenant, aggregate_type, aggregate_id, version
    ), numbered AS (
        -- Queue ids follow each aggregate's versions: version n + 1 is inserted only after
        -- version n committed (its record's revision check), so it took a later id.
        SELECT t.tenant, t.aggregate_type, t.aggregate_id, t.version,
               coalesce(h.head, 0)
                   + row_number() OVER (PARTITION BY t.tenant ORDER BY t.id) AS position
        FROM taken t LEFT JOIN position_heads h ON h.tenant = t.tenant
    ), placed AS (
        INSERT INTO event_positions (tenant, position, aggregate_type, aggregate_id, version)
        SELECT n.tenant, n.position, n.aggregate_type, n.aggregate_id, n.version FROM numbered n
    ), heads AS (
        INSERT INTO position_heads AS h (tenant, head)
        SELECT n.tenant, max(n.position) FROM numbered n GROUP BY n.tenant
        ON CONFLICT (tenant) DO UPDATE SET head = EXCLUDED.head
        RETURNING h.tenant, h.head
    )
    SELECT array_agg(heads.tenant::text), array_agg(heads.head),
           array_agg((SELECT count(*) FROM numbered n WHERE n.tenant = heads.tenant))
    INTO tenants, heads_after, counts
    FROM heads;
    RETURN QUERY SELECT * FROM unnest(tenants, heads_after, counts);
END $$;

CREATE FUNCTION eventdbx_write(
    p_tenant text, p_type text, p_id text, p_revision bigint,
    p_version bigint, p_archived boolean, p_created_ms bigint, p_updated_ms bigint,
    p_record text, p_quota bigint, p_event_id bigint, p_event_body text,
    p_snapshot_id bigint, p_snapshot_version bigint, p_snapshot_body text,
    p_idempotency_key text, p_idempotency_body text,
    p_replace_references boolean, p_reference_paths text[], p_reference_types text[],
    p_reference_ids text[], p_job_plugins text[], p_job_ranks integer[], p_job_tails text[],
    p_usage_shard integer, p_usage_bytes bigint
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    changed bigint;
    used bigint;
    job bigint;
BEGIN
    -- The aggregate's row first, then the usage rows, as every write does: two writes never
    -- lock the same rows in opposite orders.
    IF p_revision IS NULL THEN
        INSERT INTO aggregates (tenant, aggregate_type, aggregate_id, revision, version,
                                archived, created_ms, updated_ms, record)
        VALUES (p_tenant, p_type, p_id, 1, p_version, p_archived, p_created_ms, p_updated_ms,
                p_record)
        ON CONFLICT DO NOTHING;
    ELSE
        UPDATE aggregates SET revision = revision + 1, version = p_version,
            archived = p_archived, created_ms = p_created_ms, updated_ms = p_updated_ms,
            record = p_record
        WHERE tenant = p_tenant AND aggregate_type = p_type AND aggregate_id = p_id
          AND revision = p_revision;
    END IF;
    GET DIAGNOSTICS changed = ROW_COUNT;
    IF changed <> 1 THEN
        RAISE EXCEPTION 'the aggregate changed since it was read'
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF p_quota IS NOT NULL THEN
        -- All 16 usage rows of the tenant (write.rs, USAGE_SHARDS), created when missing and
        -- locked until the commit: writers under a quota are checked one after another.
        INSERT INTO usage (tenant, shard, events, bytes)
        SELECT p_tenant, s, 0, 0 FROM generate_series(0, 15) AS s ON CONFLICT DO NOTHING;
        SELECT coalesce(sum(l.bytes), 0) INTO used
        FROM (SELECT u.bytes FROM usage u WHERE u.tenant = p_tenant ORDER BY u.shard
              FOR UPDATE) AS l;
        IF used >= p_quota THEN
            RAISE EXCEPTION 'tenant % uses its quota', p_tenant USING ERRCODE = 'EDBQ1';
        END IF;
    END IF;
    INSERT INTO events (tenant, aggregate_type, aggregate_id, version, event_id, body)
    VALUES (p_tenant, p_type, p_id, p_version, p_event_id, p_event_body);
    IF p_snapshot_body IS NOT NULL THEN
        INSERT INTO snapshots (tenant, snapshot_id, aggregate_type, aggregate_id, version, body)
        VALUES (p_tenant, p_snapshot_id, p_type, p_id, p_snapshot_version, p_snapshot_body);
    END IF;
    IF p_idempotency_key IS NOT NULL THEN
        INSERT INTO idempotency (tenant, aggregate_type, aggregate_id, key, body)
        VALUES (p_tenant, p_type, p_id, p_idempotency_key, p_idempotency_body);
    END IF;
    IF p_replace_references THEN
        -- Entries that changed or vanished go; the wanted ones not already there come.
        DELETE FROM aggregate_references r
        WHERE r.tenant = p_tenant AND r.source_type = p_type AND r.source_id = p_id
          AND NOT EXISTS (
              SELECT 1
              FROM unnest(p_reference_paths, p_reference_types, p_reference_ids)
                  AS w(path, target_type, target_id)
              WHERE w.path = r.path AND w.target_type = r.target_type
                AND w.target_id = r.target_id);
        INSERT INTO aggregate_references
            (tenant, source_type, source_id, path, target_type, target_id)
        SELECT p_tenant, p_type, p_id, w.path, w.target_type, w.target_id
        FROM unnest(p_reference_paths, p_reference_types, p_reference_ids)
            AS w(path, target_type, target_id)
        ON CONFLICT DO NOTHING;
    END IF;
    -- Each job's JSON comes without its id (unknown before the sequence gives it).
    FOR k IN 1 .. coalesce(array_length(p_job_plugins, 1), 0) LOOP
        job := nextval('plugin_job_ids');
        INSERT INTO plugin_jobs (id, plugin, rank, status, done_at_ms, event_id, body)
        VALUES (job, p_job_plugins[k], p_job_ranks[k], 'pending', NULL, p_event_id,
                '{"id":' || job || ',' || p_job_tails[k]);
    END LOOP;
    INSERT INTO usage (tenant, shard, events, bytes)
    VALUES (p_tenant, p_usage_shard, 1, p_usage_bytes)
    ON CONFLICT (tenant, shard) DO UPDATE
    SET events = usage.events + EXCLUDED.events, bytes = usage.bytes + EXCLUDED.bytes;
END $$;
"##;

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
