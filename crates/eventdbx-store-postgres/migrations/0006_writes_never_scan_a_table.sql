-- 6: writes never scan a whole table (a plan cached while the tables were small keeps index lookups)
-- A prepared statement or a PL/pgSQL function keeps the plan it made first: planned while
-- `aggregates` held a few rows, an update by key could keep a sequential scan for as long as the
-- session lives, whatever the table grew to (with only sequential scans forbidden, a plan read
-- the primary key end to end into a hash instead). The write functions find every row by key:
-- nested loops over the writes, probing the indexes. That plan suits every call, so it is made
-- once per session (a generic plan): planned again for each call, since the arrays' sizes make
-- each call's own plan look cheaper, the group's statement cost more to plan than to run.
ALTER FUNCTION eventdbx_write SET enable_seqscan = off SET enable_hashjoin = off
    SET enable_mergejoin = off SET plan_cache_mode = force_generic_plan;

-- The group commit's statement (`group.rs`): one row per write, numbered by `k`; returns the `k`
-- of every write that was stored.
CREATE FUNCTION eventdbx_write_group(
    p_tenants text[], p_types text[], p_ids text[], p_revisions bigint[], p_versions bigint[],
    p_archived boolean[], p_created_ms bigint[], p_updated_ms bigint[], p_records text[],
    p_event_ids bigint[], p_event_bodies text[], p_bytes bigint[],
    p_clear_references boolean[], p_usage_shard integer
) RETURNS SETOF bigint LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    stored_ks bigint[];
BEGIN
    WITH w AS (
        SELECT * FROM unnest(p_tenants, p_types, p_ids, p_revisions, p_versions,
                             p_archived, p_created_ms, p_updated_ms, p_records, p_event_ids,
                             p_event_bodies, p_bytes, p_clear_references)
            WITH ORDINALITY AS w(tenant, aggregate_type, aggregate_id, revision, version, archived,
                                 created_ms, updated_ms, record, event_id, event_body, bytes,
                                 clear_references, k)
    ), created AS (
        INSERT INTO aggregates (tenant, aggregate_type, aggregate_id, revision, version, archived,
                                created_ms, updated_ms, record)
        SELECT w.tenant, w.aggregate_type, w.aggregate_id, 1, w.version, w.archived, w.created_ms,
               w.updated_ms, w.record
        FROM w WHERE w.revision IS NULL
        ON CONFLICT DO NOTHING
        RETURNING tenant, aggregate_type, aggregate_id
    ), updated AS (
        UPDATE aggregates a SET revision = a.revision + 1, version = w.version,
            archived = w.archived, created_ms = w.created_ms, updated_ms = w.updated_ms,
            record = w.record
        FROM w
        WHERE a.tenant = w.tenant AND a.aggregate_type = w.aggregate_type
          AND a.aggregate_id = w.aggregate_id AND a.revision = w.revision
        RETURNING a.tenant, a.aggregate_type, a.aggregate_id
    ), written AS (
        SELECT w.* FROM w
        JOIN (SELECT * FROM created UNION ALL SELECT * FROM updated) AS d
          ON d.tenant = w.tenant AND d.aggregate_type = w.aggregate_type
         AND d.aggregate_id = w.aggregate_id
    ), stored AS (
        INSERT INTO events (tenant, aggregate_type, aggregate_id, version, event_id, body)
        SELECT tenant, aggregate_type, aggregate_id, version, event_id, event_body FROM written
    ), unlinked AS (
        DELETE FROM aggregate_references r USING written
        WHERE written.clear_references AND r.tenant = written.tenant
          AND r.source_type = written.aggregate_type AND r.source_id = written.aggregate_id
    ), counted AS (
        INSERT INTO usage (tenant, shard, events, bytes)
        SELECT tenant, p_usage_shard, count(*), sum(bytes) FROM written GROUP BY tenant
        ON CONFLICT (tenant, shard) DO UPDATE
        SET events = usage.events + EXCLUDED.events, bytes = usage.bytes + EXCLUDED.bytes
    )
    SELECT array_agg(w_k) INTO stored_ks FROM (SELECT k AS w_k FROM written) AS s;
    RETURN QUERY SELECT unnest(stored_ks);
END $$;
