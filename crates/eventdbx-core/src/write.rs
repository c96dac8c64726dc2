//! The rules of a write (`docs/server.md`, "Writes"): whether it may happen, what payload it
//! records, and how the event is sealed (version, hash, Merkle root) and folded into the aggregate.
//!
//! Pure functions: a store calls them while it holds the aggregate's write lock and commits the
//! result atomically.

use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::aggregate::Aggregate;
use crate::error::{CoreError, Result};
use crate::merkle::{to_hex, Event, EventHashInput, EventMetadata, IssuedBy, MerkleBuilder};
use crate::names::MAX_PAYLOAD_BYTES;
use crate::patch::apply_patch;

/// What a write carries: a payload (create, append) or an RFC 6902 patch (patch).
#[derive(Debug, Clone, PartialEq)]
pub enum WriteBody {
    /// A JSON payload, already parsed and size-checked.
    Payload(Value),
    /// The patch document as the client sent it.
    Patch(String),
}

/// The kind of write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// `createAggregate`: the aggregate must not exist.
    Create,
    /// `appendEvent`: creates the aggregate when it has no events.
    Append,
    /// `patchEvent`: the aggregate must exist.
    Patch,
}

/// Checks existence, the archive flag and the expected version, in the spec's order.
///
/// `current` is `None` (or has version 0) for an aggregate with no events. `expected_version` is
/// ignored by create.
pub fn check_write(
    kind: WriteKind,
    aggregate_type: &str,
    aggregate_id: &str,
    current: Option<&Aggregate>,
    expected_version: Option<u64>,
) -> Result<()> {
    let existing = current.filter(|aggregate| aggregate.version > 0);
    match (kind, existing) {
        (WriteKind::Create, Some(_)) => {
            return Err(CoreError::AggregateExists {
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
            })
        }
        (WriteKind::Create, None) => return Ok(()),
        (WriteKind::Patch, None) => return Err(CoreError::AggregateNotFound),
        (_, Some(aggregate)) if aggregate.archived => return Err(CoreError::AggregateArchived),
        _ => {}
    }
    let current_version = existing.map_or(0, |aggregate| aggregate.version);
    match expected_version {
        Some(expected) if expected != current_version => Err(CoreError::VersionConflict {
            expected,
            current: current_version,
        }),
        _ => Ok(()),
    }
}

/// The payload the event records: the payload itself, or for a patch the post-patch values of
/// the top-level keys it touched, size-checked like any payload.
pub fn event_payload(state: &Map<String, Value>, body: &WriteBody) -> Result<Value> {
    match body {
        WriteBody::Payload(payload) => Ok(payload.clone()),
        WriteBody::Patch(patch_json) => {
            let outcome = apply_patch(state, patch_json)?;
            let payload = Value::Object(outcome.event_payload);
            let size = serde_json::to_vec(&payload).map_or(usize::MAX, |bytes| bytes.len());
            if size > MAX_PAYLOAD_BYTES {
                return Err(CoreError::PayloadTooLarge {
                    limit: MAX_PAYLOAD_BYTES,
                });
            }
            Ok(payload)
        }
    }
}

/// The fields of a new event that the caller decides.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Normalised event type.
    pub event_type: String,
    /// The client's event type.
    pub event_type_raw: Option<String>,
    /// The recorded payload (see [`event_payload`]).
    pub payload: Value,
    /// The request's metadata, verbatim.
    pub extensions: Option<Map<String, Value>>,
    /// The note, untrimmed.
    pub note: Option<String>,
    /// The token's group and user; `None` for events the server writes itself.
    pub issued_by: Option<IssuedBy>,
    /// Snowflake id.
    pub event_id: u64,
    /// Commit time, RFC 3339.
    pub created_at: String,
}

/// Seals the next event of `aggregate`: version = previous + 1, hash, Merkle root after it (from
/// `merkle`, the aggregate's persisted frontier), and folds it into the aggregate.
pub fn seal_event(
    tenant: &str,
    aggregate: &mut Aggregate,
    merkle: &mut MerkleBuilder,
    new: NewEvent,
) -> Event {
    let version = aggregate.version + 1;
    let digest = EventHashInput {
        tenant,
        aggregate_type: &aggregate.aggregate_type,
        aggregate_id: &aggregate.aggregate_id,
        version,
        event_type: &new.event_type,
        event_type_raw: new.event_type_raw.as_deref(),
        payload: &new.payload,
        extensions: new.extensions.as_ref(),
        note: new.note.as_deref(),
        event_id: new.event_id,
        created_at: &new.created_at,
        issued_by_group: new.issued_by.as_ref().map(|i| i.group.as_str()),
        issued_by_user: new.issued_by.as_ref().map(|i| i.user.as_str()),
    }
    .digest();
    merkle.push(digest);
    let event = Event {
        aggregate_type: aggregate.aggregate_type.clone(),
        aggregate_id: aggregate.aggregate_id.clone(),
        event_type: new.event_type,
        event_type_raw: new.event_type_raw,
        payload: new.payload,
        extensions: new.extensions,
        metadata: EventMetadata {
            event_id: new.event_id,
            created_at: new.created_at,
            issued_by: new.issued_by,
            note: new.note,
        },
        version,
        hash: to_hex(&digest),
        merkle_root: to_hex(&merkle.root()),
    };
    aggregate.apply(&event);
    event
}

/// The digest of a write request that an idempotency key is bound to (`docs/server.md`, "Expected
/// version and idempotency"): type, id, event type, payload or patch, note, metadata and expected
/// version, each length-prefixed.
#[allow(clippy::too_many_arguments)]
pub fn request_digest(
    kind: WriteKind,
    aggregate_type: &str,
    aggregate_id: &str,
    event_type: &str,
    body_json: &str,
    note: Option<&str>,
    metadata_json: Option<&str>,
    expected_version: Option<u64>,
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"eventdbx idempotency v1\0");
    hasher.update([kind as u8]);
    for field in [
        Some(aggregate_type),
        Some(aggregate_id),
        Some(event_type),
        Some(body_json),
        note,
        metadata_json,
    ] {
        match field {
            Some(text) => {
                hasher.update([1]);
                hasher.update((text.len() as u64).to_be_bytes());
                hasher.update(text.as_bytes());
            }
            None => hasher.update([0]),
        }
    }
    match expected_version {
        Some(version) => {
            hasher.update([1]);
            hasher.update(version.to_be_bytes());
        }
        None => hasher.update([0]),
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::merkle::verify;

    fn new_event(payload: Value, id: u64) -> NewEvent {
        NewEvent {
            event_type: "order_updated".into(),
            event_type_raw: Some("order.updated".into()),
            payload,
            extensions: None,
            note: None,
            issued_by: Some(IssuedBy {
                group: "ops".into(),
                user: "jane".into(),
            }),
            event_id: id,
            created_at: format!("2025-11-27T10:00:0{id}Z"),
        }
    }

    #[test]
    fn existence_rules() {
        let mut aggregate = Aggregate::new("order", "o-1");
        let none = None;
        check_write(WriteKind::Create, "order", "o-1", none, None).expect("create new");
        check_write(WriteKind::Append, "order", "o-1", none, None).expect("append creates");
        assert_eq!(
            check_write(WriteKind::Patch, "order", "o-1", none, None),
            Err(CoreError::AggregateNotFound)
        );
        aggregate.version = 2;
        assert_eq!(
            check_write(WriteKind::Create, "order", "o-1", Some(&aggregate), None)
                .expect_err("exists")
                .to_string(),
            "aggregate order::o-1 already exists"
        );
        assert_eq!(
            check_write(WriteKind::Append, "order", "o-1", Some(&aggregate), Some(1)),
            Err(CoreError::VersionConflict {
                expected: 1,
                current: 2
            })
        );
        check_write(WriteKind::Append, "order", "o-1", Some(&aggregate), Some(2)).expect("ok");
        assert_eq!(
            check_write(WriteKind::Append, "order", "o-2", None, Some(3)),
            Err(CoreError::VersionConflict {
                expected: 3,
                current: 0
            })
        );
        aggregate.archived = true;
        for kind in [WriteKind::Append, WriteKind::Patch] {
            assert_eq!(
                check_write(kind, "order", "o-1", Some(&aggregate), None),
                Err(CoreError::AggregateArchived)
            );
        }
    }

    #[test]
    fn sealed_events_verify_and_fold() {
        let mut aggregate = Aggregate::new("order", "o-1");
        let mut merkle = MerkleBuilder::new();
        let mut events = Vec::new();
        for (i, payload) in [json!({"status": "new"}), json!({"status": "paid", "n": 1})]
            .into_iter()
            .enumerate()
        {
            events.push(seal_event(
                "default",
                &mut aggregate,
                &mut merkle,
                new_event(payload, i as u64 + 1),
            ));
        }
        let patch = WriteBody::Patch(r#"[{"op":"replace","path":"/n","value":2}]"#.into());
        let payload = event_payload(&aggregate.state, &patch).expect("patch applies");
        assert_eq!(payload, json!({"n": 2}));
        events.push(seal_event(
            "default",
            &mut aggregate,
            &mut merkle,
            new_event(payload, 3),
        ));
        assert_eq!(aggregate.version, 3);
        assert_eq!(
            Value::Object(aggregate.state.clone()),
            json!({"status": "paid", "n": 2})
        );
        let root = verify(
            "default",
            "order",
            "o-1",
            &events,
            Some(&aggregate.merkle_root),
        )
        .expect("verifies");
        assert_eq!(root, aggregate.merkle_root);
        // A builder restored from its frontier continues identically.
        let restored = MerkleBuilder::from_frontier(merkle.frontier().to_vec()).expect("frontier");
        assert_eq!(restored.root(), merkle.root());
        assert_eq!(restored.len(), 3);
    }

    #[test]
    fn digests_separate_fields() {
        let base = request_digest(WriteKind::Append, "a", "b", "c", "{}", None, None, None);
        assert_ne!(
            base,
            request_digest(WriteKind::Append, "a", "b", "c", "{}", Some(""), None, None)
        );
        assert_ne!(
            base,
            request_digest(WriteKind::Append, "ab", "", "c", "{}", None, None, None)
        );
        assert_ne!(
            base,
            request_digest(WriteKind::Patch, "a", "b", "c", "{}", None, None, None)
        );
        assert_ne!(
            base,
            request_digest(WriteKind::Append, "a", "b", "c", "{}", None, None, Some(0))
        );
        assert_eq!(
            base,
            request_digest(WriteKind::Append, "a", "b", "c", "{}", None, None, None)
        );
    }
}
