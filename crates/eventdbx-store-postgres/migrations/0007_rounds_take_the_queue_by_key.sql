-- 7: a position round takes its queue rows by key (never reads the queue's dead rows)
-- Every event passes through `position_queue` (queued by the trigger, deleted by the round that
-- numbers it), so between two autovacuums (a minute apart by default) the table holds every
-- event of that minute as dead rows, and the few live ones. The round's delete (`id IN (the
-- first ids)`) was planned as a sequential scan of the whole table into a hash: each round read
-- every page written since the last vacuum (100 pages, 0.5 ms, after 20 s of 1,500 appends/s;
-- a round runs up to every 10 ms), a cost that grew with the load and the time since the last
-- vacuum. Now the round deletes the ids it took (`id = ANY (...)`) through the primary key, and
-- locks the sequencer's row by its key. Otherwise the round is migration 4's: the same rows
-- numbered the same way. (Whole-table reads are not switched off here as in the write functions:
-- a plan that can only read a table whole is then costed at 10^10, which made PostgreSQL
-- JIT-compile the round, about 20 ms, each time; and with them off, `force_generic_plan` and
-- `jit = off` set on the functions, the benchmark's short runs spent more, not less.)
CREATE OR REPLACE FUNCTION eventdbx_assign_positions(p_limit integer)
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

