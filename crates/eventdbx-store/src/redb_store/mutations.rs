//! The mutations of a batch as data, for the write-ahead log (`wal`): every insert and remove a
//! commit job makes through [`Tables`] is recorded as (table, key bytes, value bytes) while the
//! batch runs, and replayed from the log by the same typed tables at open.
//!
//! Recording at the table level keeps the jobs opaque: a job is a closure that reads and
//! writes tables, and the log holds what it wrote, not how it decided. Every recorded operation
//! is a blind write (set this key to these bytes, remove this key), so replaying a record twice,
//! or replaying records a durable commit already holds, ends in the same state: recovery may
//! start at any record at or before the first one missing from the file.
//!
//! Encoding, one operation after another (integers little-endian):
//! `table: u8, op: u8 (1 insert, 2 remove), key_len: u32, key, [value_len: u32, value]`, where
//! the key and value bytes are redb's own encoding of the table's types. The table numbers are
//! part of the log format (`docs/storage.md`, "Write-ahead log"): never renumber one.

use std::borrow::Borrow;
use std::ops::Deref;

use redb::{Key, Value};

use super::tables::{storage, Tables};
use crate::{Result, StoreError};

/// The log's number of each table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum TableTag {
    Aggregates = 1,
    Events = 2,
    Outbox = 3,
    Positions = 4,
    Index = 5,
    Snapshots = 6,
    SnapshotsByAggregate = 7,
    Idempotency = 8,
    Usage = 9,
    Referrers = 10,
    References = 11,
    Meta = 12,
    Jobs = 13,
    JobQueue = 14,
    JobDone = 15,
    JobDead = 16,
    EventPositions = 17,
}

const INSERT: u8 = 1;
/// The first allocation of a batch's mutations (bytes).
const FIRST_CAPACITY: usize = 8 * 1024;
const REMOVE: u8 = 2;

/// The recorded mutations of one batch, encoded.
#[derive(Debug, Default)]
pub(crate) struct MutationLog {
    bytes: Vec<u8>,
}

impl MutationLog {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Bytes recorded so far: a job that failed without adding any changed nothing.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    fn push(&mut self, tag: TableTag, op: u8, key: &[u8], value: Option<&[u8]>) {
        if self.bytes.capacity() == 0 {
            // A write's mutations take a few KiB: grown once, not doubled from nothing.
            self.bytes.reserve(FIRST_CAPACITY);
        }
        self.bytes.push(tag as u8);
        self.bytes.push(op);
        push_slice(&mut self.bytes, key);
        if let Some(value) = value {
            push_slice(&mut self.bytes, value);
        }
    }
}

fn push_slice(out: &mut Vec<u8>, bytes: &[u8]) {
    // redb refuses keys and values over 3 GiB, so a length always fits.
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// One table of a batch transaction: reads go to redb's table (`Deref`), inserts and removes
/// are recorded before they are made. There is no `DerefMut`, so no write can bypass the log.
pub(crate) struct Logged<'a, 't, K: Key + 'static, V: Value + 'static> {
    table: &'a mut redb::Table<'t, K, V>,
    log: Option<&'a mut MutationLog>,
    tag: TableTag,
}

impl<'a, 't, K: Key + 'static, V: Value + 'static> Logged<'a, 't, K, V> {
    pub(super) fn new(
        table: &'a mut redb::Table<'t, K, V>,
        log: Option<&'a mut MutationLog>,
        tag: TableTag,
    ) -> Self {
        Logged { table, log, tag }
    }

    /// redb's `Table::insert`, recorded.
    pub(crate) fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> std::result::Result<(), redb::StorageError> {
        if let Some(log) = self.log.as_deref_mut() {
            let key = K::as_bytes(key.borrow());
            let value = V::as_bytes(value.borrow());
            log.push(self.tag, INSERT, key.as_ref(), Some(value.as_ref()));
        }
        self.table.insert(key, value).map(drop)
    }

    /// redb's `Table::remove`, recorded.
    pub(crate) fn remove<'k>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> std::result::Result<(), redb::StorageError> {
        if let Some(log) = self.log.as_deref_mut() {
            log.push(self.tag, REMOVE, K::as_bytes(key.borrow()).as_ref(), None);
        }
        self.table.remove(key).map(drop)
    }
}

impl<'t, K: Key + 'static, V: Value + 'static> Deref for Logged<'_, 't, K, V> {
    type Target = redb::Table<'t, K, V>;

    fn deref(&self) -> &Self::Target {
        self.table
    }
}

fn malformed() -> StoreError {
    StoreError::engine("a write-ahead log record does not decode as mutations")
}

/// Reads `bytes` (one record's mutations) and applies them to `tables`, in order.
pub(crate) fn replay(tables: &mut Tables<'_>, mut bytes: &[u8]) -> Result<()> {
    while let [tag, op, rest @ ..] = bytes {
        let (key, rest) = take_slice(rest)?;
        let (value, rest) = match *op {
            INSERT => {
                let (value, rest) = take_slice(rest)?;
                (Some(value), rest)
            }
            REMOVE => (None, rest),
            _ => return Err(malformed()),
        };
        bytes = rest;
        match *tag {
            t if t == TableTag::Aggregates as u8 => put(tables.aggregates()?, key, value),
            t if t == TableTag::Events as u8 => put(tables.events()?, key, value),
            t if t == TableTag::Outbox as u8 => put(tables.outbox()?, key, value),
            t if t == TableTag::Positions as u8 => put(tables.positions()?, key, value),
            t if t == TableTag::Index as u8 => put(tables.index()?, key, value),
            t if t == TableTag::Snapshots as u8 => put(tables.snapshots()?, key, value),
            t if t == TableTag::SnapshotsByAggregate as u8 => {
                put(tables.snapshots_by_aggregate()?, key, value)
            }
            t if t == TableTag::Idempotency as u8 => put(tables.idempotency()?, key, value),
            t if t == TableTag::Usage as u8 => put(tables.usage()?, key, value),
            t if t == TableTag::Referrers as u8 => put(tables.referrers()?, key, value),
            t if t == TableTag::References as u8 => put(tables.references()?, key, value),
            t if t == TableTag::Meta as u8 => put(tables.meta()?, key, value),
            t if t == TableTag::Jobs as u8 => put(tables.jobs()?, key, value),
            t if t == TableTag::JobQueue as u8 => put(tables.job_queue()?, key, value),
            t if t == TableTag::JobDone as u8 => put(tables.job_done()?, key, value),
            t if t == TableTag::JobDead as u8 => put(tables.job_dead()?, key, value),
            t if t == TableTag::EventPositions as u8 => put(tables.event_positions()?, key, value),
            _ => Err(malformed()),
        }?;
    }
    if bytes.is_empty() {
        Ok(())
    } else {
        Err(malformed())
    }
}

fn take_slice(bytes: &[u8]) -> Result<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>().ok_or_else(malformed)?;
    let len = usize::try_from(u32::from_le_bytes(*len)).map_err(|_| malformed())?;
    if rest.len() < len {
        return Err(malformed());
    }
    Ok(rest.split_at(len))
}

fn put<K: Key + 'static, V: Value + 'static>(
    mut table: Logged<'_, '_, K, V>,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<()> {
    let key = K::from_bytes(key);
    match value {
        Some(value) => table.insert(key, V::from_bytes(value)),
        None => table.remove(key),
    }
    .map_err(storage)
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

    use super::*;
    use crate::redb_store::tables::{AGGREGATES, EVENTS, USAGE};

    #[test]
    fn recorded_mutations_replay_to_the_same_tables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = Database::create(dir.path().join("a.redb")).expect("create a");
        let target = Database::create(dir.path().join("b.redb")).expect("create b");
        let txn = source.begin_write().expect("write");
        let log = {
            let mut tables = Tables::logged(&txn);
            tables
                .events()
                .expect("events")
                .insert(("t", "order", "o-1", 1u64), &b"first"[..])
                .expect("insert");
            tables
                .events()
                .expect("events")
                .insert(("t", "order", "o-1", 2), &b"second"[..])
                .expect("insert");
            tables
                .events()
                .expect("events")
                .remove(("t", "order", "o-1", 1))
                .expect("remove");
            tables
                .usage()
                .expect("usage")
                .insert("t", (2, 11))
                .expect("usage");
            tables
                .aggregates()
                .expect("aggregates")
                .insert(("t", "order", "o-1"), &b"{}"[..])
                .expect("record");
            tables.take_log()
        };
        txn.commit().expect("commit");
        assert!(!log.is_empty());

        let txn = target.begin_write().expect("write");
        replay(&mut Tables::new(&txn), log.as_bytes()).expect("replay");
        // Twice: every operation is a blind write, so a second replay changes nothing.
        replay(&mut Tables::new(&txn), log.as_bytes()).expect("replay again");
        txn.commit().expect("commit");
        let read = target.begin_read().expect("read");
        let events = read.open_table(EVENTS).expect("events");
        let stored: Vec<(u64, Vec<u8>)> = events
            .iter()
            .expect("iter")
            .map(|row| {
                let (key, value) = row.expect("row");
                (key.value().3, value.value().to_vec())
            })
            .collect();
        assert_eq!(stored, vec![(2, b"second".to_vec())]);
        let usage = read.open_table(USAGE).expect("usage");
        assert_eq!(
            usage.get("t").expect("get").map(|v| v.value()),
            Some((2, 11))
        );
        let aggregates = read.open_table(AGGREGATES).expect("aggregates");
        assert_eq!(aggregates.len().expect("len"), 1);
    }

    #[test]
    fn a_malformed_record_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::create(dir.path().join("a.redb")).expect("create");
        let txn = db.begin_write().expect("write");
        for bytes in [
            &[99u8, 1, 0, 0, 0, 0][..],
            &[2, 1, 9, 0, 0, 0][..],
            &[2, 7][..],
        ] {
            assert!(replay(&mut Tables::new(&txn), bytes).is_err(), "{bytes:?}");
        }
    }
}
