//! Integration tests of the store: the engine-independent conformance suite (run on each
//! engine), then the redb engine's own (crash safety, relaxed commit, on-disk tampering) and the
//! PostgreSQL engine's own (several servers on one database, the schema version).

mod conformance;
mod crash;
mod crash_cascade;
mod postgres;
mod relaxed;
mod tamper;
