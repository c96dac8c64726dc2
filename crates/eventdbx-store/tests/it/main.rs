//! Integration tests of the store: the engine-independent conformance suite, then the redb
//! engine's own (crash safety, relaxed commit, on-disk tampering, the corruption sweep).

mod conformance;
mod corruption;
mod crash;
mod crash_cascade;
mod full_disk;
mod recovery;
mod relaxed;
mod tamper;
