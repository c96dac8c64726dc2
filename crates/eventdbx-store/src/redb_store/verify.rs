//! `verify`: recomputes an aggregate's Merkle root from its stored events, on two threads for
//! long histories (hashing and decoding on one, roots on the other), and rebuilds its state from
//! them to compare with the stored record ([`super::replay`]).

use std::borrow::Cow;

use eventdbx_core::merkle;
use eventdbx_core::CoreError;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::replay::Replay;
use super::tables::{read_record, storage, Bytes, EventKey, AGGREGATES, EVENTS, SORT_INDEX};
use super::RedbStore;
use crate::{Result, StoreError};

/// A stored event decoded for verification, borrowing from the stored bytes where it can.
#[derive(Deserialize)]
struct StoredEvent<'a> {
    #[serde(borrow)]
    aggregate_type: Cow<'a, str>,
    #[serde(borrow)]
    aggregate_id: Cow<'a, str>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow, default)]
    event_type_raw: Option<Cow<'a, str>>,
    payload: Value,
    #[serde(default)]
    extensions: Option<Map<String, Value>>,
    #[serde(borrow)]
    metadata: StoredMetadata<'a>,
    version: u64,
    #[serde(borrow)]
    hash: Cow<'a, str>,
    #[serde(borrow)]
    merkle_root: Cow<'a, str>,
}

#[derive(Deserialize)]
struct StoredMetadata<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    created_at: Cow<'a, str>,
    #[serde(borrow)]
    issued_by: Option<StoredIssuer<'a>>,
    #[serde(borrow, default)]
    note: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct StoredIssuer<'a> {
    #[serde(borrow)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    user: Cow<'a, str>,
}

/// Histories at least this long verify in two stages on two threads (hashes and decoding on
/// one, Merkle roots on the other): about twice as fast when a second core is free, and the
/// thread costs nothing next to thousands of events.
const PARALLEL_VERIFY_FROM: u64 = 2048;

/// Leaves (with the root stored after each) handed from the decoding stage to the root stage.
const VERIFY_BATCH: usize = 512;

/// Decodes one stored event, checks it with `events`, folds it into `replay` and hands its
/// hash and stored root to `root`.
fn check_stored_event(
    (tenant, aggregate_type, aggregate_id): (&str, &str, &str),
    bytes: &[u8],
    events: &mut merkle::EventChecker,
    replay: &mut Replay,
    root: impl FnOnce(merkle::Digest, &str) -> Result<()>,
) -> Result<()> {
    // Borrowed decoding: no allocation per string field.
    let event: StoredEvent<'_> = serde_json::from_slice(bytes).map_err(|err| {
        CoreError::IntegrityViolation(format!(
            "a stored event of {aggregate_type}:{aggregate_id} is unreadable: {err}"
        ))
    })?;
    let event_id = event.metadata.event_id.parse::<u64>().map_err(|_| {
        CoreError::IntegrityViolation(format!(
            "event {} of {aggregate_type}:{aggregate_id} has an invalid event id",
            event.version
        ))
    })?;
    let input = merkle::EventHashInput {
        tenant,
        aggregate_type: &event.aggregate_type,
        aggregate_id: &event.aggregate_id,
        version: event.version,
        event_type: &event.event_type,
        event_type_raw: event.event_type_raw.as_deref(),
        payload: &event.payload,
        extensions: event.extensions.as_ref(),
        note: event.metadata.note.as_deref(),
        event_id,
        created_at: &event.metadata.created_at,
        issued_by_group: event.metadata.issued_by.as_ref().map(|i| &*i.group),
        issued_by_user: event.metadata.issued_by.as_ref().map(|i| &*i.user),
    };
    let leaf = events.check(&input, &event.hash)?;
    replay.apply(event.payload, event.extensions, &event.metadata.created_at);
    root(leaf, &event.merkle_root)
}

/// A stored Merkle root as the root stage receives it: the hex text without an allocation
/// (a root of any other length cannot match and is passed on as it is).
enum StoredRoot {
    Hex([u8; 64]),
    Other(String),
}

impl StoredRoot {
    fn new(text: &str) -> Self {
        match <[u8; 64]>::try_from(text.as_bytes()) {
            Ok(hex) => StoredRoot::Hex(hex),
            Err(_) => StoredRoot::Other(text.to_owned()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Came from a `str`: always UTF-8.
            StoredRoot::Hex(hex) => std::str::from_utf8(hex).unwrap_or_default(),
            StoredRoot::Other(text) => text,
        }
    }
}

/// Verifies a long history with the root stage on a second thread. The first failure in
/// history order wins, as in one thread: the root stage only ever sees events before the
/// decoding stage's failure, so an error of its own is the earlier one.
fn verify_in_two_stages(
    subject: (&str, &str, &str),
    rows: redb::Range<'_, EventKey, Bytes>,
    mut events: merkle::EventChecker,
    mut roots: merkle::RootChecker,
    replay: &mut Replay,
) -> Result<merkle::RootChecker> {
    std::thread::scope(|scope| {
        let (batches, incoming) =
            std::sync::mpsc::sync_channel::<Vec<(merkle::Digest, StoredRoot)>>(4);
        let root_stage = scope.spawn(move || -> Result<merkle::RootChecker> {
            for batch in incoming {
                for (leaf, stored_root) in batch {
                    roots.push(leaf, stored_root.as_str())?;
                }
            }
            Ok(roots)
        });
        let mut batch = Vec::with_capacity(VERIFY_BATCH);
        let mut decoded = Ok(());
        for item in rows {
            let checked = item.map_err(storage).and_then(|(_, bytes)| {
                check_stored_event(subject, bytes.value(), &mut events, replay, |leaf, root| {
                    batch.push((leaf, StoredRoot::new(root)));
                    Ok(())
                })
            });
            if let Err(err) = checked {
                decoded = Err(err);
                break;
            }
            if batch.len() == VERIFY_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(VERIFY_BATCH));
                if batches.send(full).is_err() {
                    // The root stage stopped at a failure of its own, which comes first.
                    break;
                }
            }
        }
        // The events before a decoding failure still get their roots checked: a bad root
        // among them is the first failure.
        let _ = batches.send(batch);
        drop(batches);
        let roots = root_stage
            .join()
            .map_err(|_| StoreError::engine("the verify thread panicked"))?;
        let roots = roots?;
        decoded.map(|()| roots)
    })
}

/// [`crate::EventStore::verify`].
pub(super) fn verify(
    store: &RedbStore,
    tenant: &str,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<String> {
    let read = store.read()?;
    let aggregates = read.open_table(AGGREGATES).map_err(storage)?;
    let record = read_record(&aggregates, tenant, aggregate_type, aggregate_id)?
        .filter(|r| r.version > 0)
        .ok_or(CoreError::AggregateNotFound)?;
    let table = read.open_table(EVENTS).map_err(storage)?;
    let range = (tenant, aggregate_type, aggregate_id, 0)
        ..=(tenant, aggregate_type, aggregate_id, u64::MAX);
    let rows = table.range(range).map_err(storage)?;
    let (mut events, mut roots) = merkle::Verifier::new(aggregate_type, aggregate_id).split();
    let subject = (tenant, aggregate_type, aggregate_id);
    let mut replay = Replay::default();
    if record.version < PARALLEL_VERIFY_FROM {
        for item in rows {
            let (_, bytes) = item.map_err(storage)?;
            check_stored_event(
                subject,
                bytes.value(),
                &mut events,
                &mut replay,
                |leaf, root| roots.push(leaf, root).map_err(StoreError::from),
            )?;
        }
    } else {
        roots = verify_in_two_stages(subject, rows, events, roots, &mut replay)?;
    }
    if roots.len() != record.version {
        return Err(CoreError::IntegrityViolation(format!(
            "{aggregate_type}:{aggregate_id} has {} stored events but version {}",
            roots.len(),
            record.version
        ))
        .into());
    }
    let root = roots.finish(Some(&record.merkle_root))?;
    let index = read.open_table(SORT_INDEX).map_err(storage)?;
    replay.check(tenant, &record, &index)?;
    Ok(root)
}
