-- 7: position rounds take their queue rows by key; a group of appends is stored in one pass; no JIT
-- Every event passes through `position_queue` (queued by the trigger, deleted by the round that
-- numbers it), so between two autovacuums (a minute apart by default) the table holds every
-- event of that minute as dead rows, and the few live ones. The round's delete (`id IN (the
-- first ids)`) was planned as a sequential scan of the whole table into a hash: each round read
-- every page written since the last vacuum (100 pages, 0.5 ms, after 20 s of 1,500 appends/s;
-- a round runs up to every 10 ms), a cost that grew with the load and the time since the last
-- vacuum. Now the round deletes the ids it took (`id = ANY (...)`) through the primary key, and
-- the function plans nothing as a whole-table read, whatever the table held when the plan was
-- cached. Otherwise the round is migration 4's: the same rows numbered the same way.
--
-- A plan that could only read a table whole is still made with those reads switched off, at a
-- cost of 10^10; that cost made PostgreSQL compile the statement (JIT, about 20 ms, more than a
-- hundred rounds' work) each time. The round's lock on the sequencer's row is taken by key, and
-- the write functions and the round never compile their statements: none reads enough rows for
-- compiling to pay.
CREATE OR REPLACE FUNCTION eventdbx_assign_positions(p_limit integer)
RETURNS TABLE (advanced_tenant text, new_head bigint, assigned bigint)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
SET plan_cache_mode = force_generic_plan SET jit = off AS $$
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
    PERFORM 1 FROM position_sequencer WHERE id = 1 FOR UPDATE;
    -- Collected into arrays and returned after: a data-modifying WITH runs as a plain statement.
    WITH taken AS (
        -- The first committed ids, read from the primary key, deleted by key.
        DELETE FROM position_queue
        WHERE id = ANY (ARRAY(SELECT q.id FROM position_queue q ORDER BY q.id LIMIT p_limit))
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

ALTER FUNCTION eventdbx_write SET jit = off;
ALTER FUNCTION eventdbx_write_group SET jit = off;

-- The group commit's statement for appends (`group.rs`): `eventdbx_write_group`'s writes, one
-- row each, numbered by `k`; returns the `k` of every write that was stored (NULL: none). The
-- update returns the writes it stored, and their events, references and usage follow from that
-- one pass: `eventdbx_write_group` matched the records it wrote back to the writes with a join of
-- every write against every record written (its plans are nested loops), which grew with the
-- square of the group and cost a quarter of the statement at 48 writes. A group holding a create
-- is `eventdbx_write_group`'s, as before. (`OR REPLACE`: a database taken back to an older
-- schema by dropping what later migrations added, as a test does, may still hold this one.)
CREATE OR REPLACE FUNCTION eventdbx_commit_group(
    p_tenants text[], p_types text[], p_ids text[], p_revisions bigint[], p_versions bigint[],
    p_archived boolean[], p_created_ms bigint[], p_updated_ms bigint[], p_records text[],
    p_event_ids bigint[], p_event_bodies text[], p_bytes bigint[],
    p_clear_references boolean[], p_usage_shard integer
) RETURNS bigint[] LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    stored_ks bigint[];
BEGIN
    IF array_position(p_revisions, NULL) IS NOT NULL THEN
        SELECT array_agg(k) INTO stored_ks
        FROM eventdbx_write_group(p_tenants, p_types, p_ids, p_revisions, p_versions,
                                  p_archived, p_created_ms, p_updated_ms, p_records, p_event_ids,
                                  p_event_bodies, p_bytes, p_clear_references, p_usage_shard) AS k;
        RETURN stored_ks;
    END IF;
    WITH updated AS (
        UPDATE aggregates a SET revision = a.revision + 1, version = w.version,
            archived = w.archived, created_ms = w.created_ms, updated_ms = w.updated_ms,
            record = w.record
        FROM unnest(p_tenants, p_types, p_ids, p_revisions, p_versions,
                    p_archived, p_created_ms, p_updated_ms, p_records, p_event_ids,
                    p_event_bodies, p_bytes, p_clear_references)
            WITH ORDINALITY AS w(tenant, aggregate_type, aggregate_id, revision, version,
                                 archived, created_ms, updated_ms, record, event_id,
                                 event_body, bytes, clear_references, k)
        WHERE a.tenant = w.tenant AND a.aggregate_type = w.aggregate_type
          AND a.aggregate_id = w.aggregate_id AND a.revision = w.revision
        RETURNING w.tenant, w.aggregate_type, w.aggregate_id, w.version, w.event_id,
                  w.event_body, w.bytes, w.clear_references, w.k
    ), stored AS (
        INSERT INTO events (tenant, aggregate_type, aggregate_id, version, event_id, body)
        SELECT u.tenant, u.aggregate_type, u.aggregate_id, u.version, u.event_id, u.event_body
        FROM updated u
    ), unlinked AS (
        DELETE FROM aggregate_references r USING updated u
        WHERE u.clear_references AND r.tenant = u.tenant
          AND r.source_type = u.aggregate_type AND r.source_id = u.aggregate_id
    ), counted AS (
        INSERT INTO usage (tenant, shard, events, bytes)
        SELECT u.tenant, p_usage_shard, count(*), sum(u.bytes) FROM updated u GROUP BY u.tenant
        ON CONFLICT (tenant, shard) DO UPDATE
        SET events = usage.events + EXCLUDED.events, bytes = usage.bytes + EXCLUDED.bytes
    )
    SELECT array_agg(u.k) INTO stored_ks FROM updated u;
    RETURN stored_ks;
END $$;
