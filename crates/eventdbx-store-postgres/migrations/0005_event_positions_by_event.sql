-- 5: event_positions_by_event, so event pages (listEvents, readOutbox) carry positions
-- `event_positions` is keyed by position (the order `events_after` reads); an event page asks
-- the other way round, the position of given events (docs/storage.md, "Schema and indexes").
-- Unique: a round numbers each committed event once (its queue row is deleted as it is
-- numbered), so a second position for one event would be a broken invariant, refused here
-- instead of delivered twice to a subscriber. `position` is included so the lookup reads the
-- index alone.
CREATE UNIQUE INDEX event_positions_by_event
    ON event_positions (tenant, aggregate_type, aggregate_id, version) INCLUDE (position);
