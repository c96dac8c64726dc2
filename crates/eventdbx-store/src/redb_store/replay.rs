//! The aggregate rebuilt from its events during `verify`, and its comparison with the stored
//! record: a record whose state, extensions, timestamps, Merkle frontier or sort index entries
//! no event explains is an integrity violation (`docs/storage.md`, "Verification").
//!
//! The fold is the write path's (`Aggregate::apply`): payloads merged key by key (a patch
//! event records the post-patch values of the keys it touched, a `_ref_nullify` event the
//! nulled values, so both merge like any payload), extensions merged with normalised keys.
//! Archive and restore write no event; the archived flag is checked against the sort index
//! entries written in the same commit as the record.

use eventdbx_core::aggregate::NON_OBJECT_PAYLOAD_KEY;
use eventdbx_core::merkle;
use eventdbx_core::names::normalize_extension_key;
use eventdbx_core::time::parse_unix_millis;
use eventdbx_core::CoreError;
use redb::ReadableTable;
use serde_json::{Map, Value};

use super::tables::{AggregateRecord, IndexKey};
use crate::Result;

/// What the events of one aggregate fold into, in version order.
#[derive(Default)]
pub(super) struct Replay {
    state: Map<String, Value>,
    extensions: Map<String, Value>,
    first_created_at: Option<String>,
    /// Reused buffer: one allocation for the whole history instead of one per event.
    last_created_at: String,
}

impl Replay {
    /// Folds in the next event: `eventdbx_core::aggregate::merge_payload` and the extension
    /// merge of `Aggregate::apply`, taking the decoded values instead of copying them (the
    /// copies cost more than the rest of the fold on long histories).
    pub(super) fn apply(
        &mut self,
        payload: Value,
        extensions: Option<Map<String, Value>>,
        created_at: &str,
    ) {
        match payload {
            Value::Object(entries) => self.state.extend(entries),
            other => {
                self.state.insert(NON_OBJECT_PAYLOAD_KEY.into(), other);
            }
        }
        for (key, value) in extensions.into_iter().flatten() {
            self.extensions.insert(normalize_extension_key(&key), value);
        }
        if self.first_created_at.is_none() {
            self.first_created_at = Some(created_at.to_owned());
        }
        self.last_created_at.clear();
        self.last_created_at.push_str(created_at);
    }

    /// Compares the rebuilt aggregate with the stored `record` of `tenant`; the version and
    /// root were compared with the events already.
    pub(super) fn check(
        &self,
        tenant: &str,
        record: &AggregateRecord,
        index: &impl ReadableTable<IndexKey, u8>,
    ) -> Result<()> {
        let subject = format!("{}:{}", record.aggregate_type, record.aggregate_id);
        let violation = |what: String| Err(CoreError::IntegrityViolation(what).into());
        if let Some(key) = first_difference(&record.state, &self.state) {
            return violation(format!(
                "the stored state of {subject} differs from its events at key '{key}'"
            ));
        }
        if let Some(key) = first_difference(&record.extensions, &self.extensions) {
            return violation(format!(
                "the stored extensions of {subject} differ from its events at key '{key}'"
            ));
        }
        if record.created_at != self.first_created_at {
            return violation(format!(
                "the stored created_at of {subject} is not the time of its first event"
            ));
        }
        // Archive and restore move updated_at past the last event, never before it.
        let updated = record.updated_at.as_deref().and_then(parse_unix_millis);
        let last_event = parse_unix_millis(&self.last_created_at);
        if updated.is_none() || updated < last_event {
            return violation(format!(
                "the stored updated_at of {subject} is before its last event"
            ));
        }
        if !frontier_matches(record) {
            return violation(format!(
                "the stored merkle frontier of {subject} does not match its root"
            ));
        }
        let flag = u8::from(record.archived);
        for (kind, value, a, b) in record.index_entries() {
            let entry = index
                .get((tenant, kind, value, a, b))
                .map_err(super::tables::storage)?
                .map(|stored| stored.value());
            if entry != Some(flag) {
                return violation(format!(
                    "the sort index of {subject} disagrees with its record (archived flag, \
                     timestamps or version)"
                ));
            }
        }
        Ok(())
    }
}

/// The first key whose value differs between `stored` and `rebuilt`, or that only one holds.
fn first_difference<'m>(
    stored: &'m Map<String, Value>,
    rebuilt: &'m Map<String, Value>,
) -> Option<&'m str> {
    stored
        .iter()
        .find(|(key, value)| rebuilt.get(*key) != Some(*value))
        .or_else(|| rebuilt.iter().find(|(key, _)| !stored.contains_key(*key)))
        .map(|(key, _)| key.as_str())
}

/// Whether the stored frontier (the start of every later root) yields the stored root and
/// counts every event: a damaged frontier would otherwise only show in the next write's root.
fn frontier_matches(record: &AggregateRecord) -> bool {
    record.merkle().is_ok_and(|builder| {
        builder.len() == record.version && merkle::to_hex(&builder.root()) == record.merkle_root
    })
}
