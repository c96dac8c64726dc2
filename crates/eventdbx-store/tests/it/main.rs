//! Integration tests of the store: the engine-independent conformance suite (run on each
//! engine), then the redb engine's own (crash safety, relaxed commit, on-disk tampering, the
//! corruption sweep, a full disk, the write-ahead log) and the PostgreSQL engine's own (several
//! servers on one database, the schema version, the control documents).

mod conformance;
mod corruption;
mod crash;
mod crash_cascade;
mod documents;
mod full_disk;
mod postgres;
mod postgres_pages;
mod postgres_writes;
mod recovery;
mod relaxed;
mod tamper;
mod wal;
