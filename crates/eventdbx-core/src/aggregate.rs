//! Aggregate state and snapshots: how events fold into state, and the JSON shapes of
//! `docs/protocol.md`, "JSON shapes".
//!
//! State keeps JSON types (ours): `"123"` stays a string, `123` a number, `null` stays `null`.

use serde_json::{Map, Value};

use crate::merkle::{Event, EMPTY_ROOT_HEX};
use crate::names::normalize_extension_key;
use crate::query::AggregateView;
use crate::time::parse_unix_millis;

/// The key a non-object payload is stored under.
pub const NON_OBJECT_PAYLOAD_KEY: &str = "_value";

/// Top-level keys of the aggregate JSON that an extension key can never replace.
const RESERVED_KEYS: [&str; 8] = [
    "aggregate_type",
    "aggregate_id",
    "version",
    "state",
    "merkle_root",
    "created_at",
    "updated_at",
    "archived",
];

/// An aggregate: the fold of its events, plus its archive flag.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// Number of events applied (the version of the last one).
    pub version: u64,
    /// Top-level payload keys merged over all events; last write wins, keys never removed.
    pub state: Map<String, Value>,
    /// Every `metadataJson` merged, keys normalised (`@createdBy` → `@created_by`).
    pub extensions: Map<String, Value>,
    /// Merkle root after the last event (lowercase hex).
    pub merkle_root: String,
    /// Commit time of the first event (RFC 3339).
    pub created_at: Option<String>,
    /// Commit time of the last event, archive or restore (RFC 3339).
    pub updated_at: Option<String>,
    /// Whether the aggregate is archived.
    pub archived: bool,
}

impl Aggregate {
    /// An aggregate with no events yet.
    pub fn new(aggregate_type: impl Into<String>, aggregate_id: impl Into<String>) -> Self {
        Aggregate {
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            version: 0,
            state: Map::new(),
            extensions: Map::new(),
            merkle_root: EMPTY_ROOT_HEX.to_owned(),
            created_at: None,
            updated_at: None,
            archived: false,
        }
    }

    /// Folds one event in: payload keys merged into state, extensions merged with normalised
    /// keys, version, root and timestamps taken from the event.
    pub fn apply(&mut self, event: &Event) {
        merge_payload(&mut self.state, &event.payload);
        if let Some(extensions) = &event.extensions {
            for (key, value) in extensions {
                self.extensions
                    .insert(normalize_extension_key(key), value.clone());
            }
        }
        self.version = event.version;
        self.merkle_root.clone_from(&event.merkle_root);
        if self.created_at.is_none() {
            self.created_at = Some(event.metadata.created_at.clone());
        }
        self.updated_at = Some(event.metadata.created_at.clone());
    }

    /// Rebuilds an aggregate from its events in version order.
    pub fn from_events<'a>(
        aggregate_type: &str,
        aggregate_id: &str,
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Self {
        let mut aggregate = Aggregate::new(aggregate_type, aggregate_id);
        for event in events {
            aggregate.apply(event);
        }
        aggregate
    }

    /// A borrowed view for filters, sort keys and cursors (timestamps in epoch ms).
    pub fn view(&self) -> AggregateView<'_> {
        let ms = |text: &Option<String>| {
            text.as_deref()
                .and_then(parse_unix_millis)
                .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX))
        };
        AggregateView {
            aggregate_type: &self.aggregate_type,
            aggregate_id: &self.aggregate_id,
            version: self.version,
            archived: self.archived,
            created_at: ms(&self.created_at),
            updated_at: ms(&self.updated_at),
            merkle_root: &self.merkle_root,
            state: &self.state,
            extensions: &self.extensions,
        }
    }

    /// The aggregate JSON, with `hidden_fields` removed from the state.
    ///
    /// Key order: type, id, version, state, extension keys, root, timestamps (omitted when
    /// unknown), `archived` (only when true). An extension key equal to one of those keys is
    /// left out rather than allowed to replace it.
    pub fn to_json(&self, hidden_fields: &[String]) -> Value {
        let mut out = Map::new();
        out.insert(
            "aggregate_type".into(),
            Value::from(self.aggregate_type.as_str()),
        );
        out.insert(
            "aggregate_id".into(),
            Value::from(self.aggregate_id.as_str()),
        );
        out.insert("version".into(), Value::from(self.version));
        out.insert(
            "state".into(),
            Value::Object(visible_state(&self.state, hidden_fields)),
        );
        for (key, value) in &self.extensions {
            if !RESERVED_KEYS.contains(&key.as_str()) {
                out.insert(key.clone(), value.clone());
            }
        }
        out.insert("merkle_root".into(), Value::from(self.merkle_root.as_str()));
        if let Some(created_at) = &self.created_at {
            out.insert("created_at".into(), Value::from(created_at.as_str()));
        }
        if let Some(updated_at) = &self.updated_at {
            out.insert("updated_at".into(), Value::from(updated_at.as_str()));
        }
        if self.archived {
            out.insert("archived".into(), Value::Bool(true));
        }
        Value::Object(out)
    }
}

/// Merges a payload into state: an object's top-level entries (last write wins), anything else
/// under [`NON_OBJECT_PAYLOAD_KEY`].
pub fn merge_payload(state: &mut Map<String, Value>, payload: &Value) {
    match payload {
        Value::Object(entries) => {
            for (key, value) in entries {
                state.insert(key.clone(), value.clone());
            }
        }
        other => {
            state.insert(NON_OBJECT_PAYLOAD_KEY.into(), other.clone());
        }
    }
}

/// The state without the schema's hidden fields (top-level keys).
pub fn visible_state(state: &Map<String, Value>, hidden_fields: &[String]) -> Map<String, Value> {
    state
        .iter()
        .filter(|(key, _)| !hidden_fields.iter().any(|hidden| hidden == *key))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// A stored snapshot of an aggregate's state at one version (`docs/server.md`, "Snapshots").
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Snowflake id (a decimal string in JSON).
    pub snapshot_id: u64,
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// The aggregate version captured.
    pub version: u64,
    /// The state at that version.
    pub state: Map<String, Value>,
    /// The Merkle root at that version.
    pub merkle_root: String,
    /// When the snapshot was taken (RFC 3339).
    pub created_at: String,
    /// Trimmed comment; `None` when blank.
    pub comment: Option<String>,
}

impl Snapshot {
    /// Captures `aggregate` as it is now.
    pub fn of(
        aggregate: &Aggregate,
        snapshot_id: u64,
        created_at: String,
        comment: Option<&str>,
    ) -> Self {
        Snapshot {
            snapshot_id,
            aggregate_type: aggregate.aggregate_type.clone(),
            aggregate_id: aggregate.aggregate_id.clone(),
            version: aggregate.version,
            state: aggregate.state.clone(),
            merkle_root: aggregate.merkle_root.clone(),
            created_at,
            comment: comment
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
        }
    }

    /// The snapshot JSON (`comment` always present), hidden fields removed.
    pub fn to_json(&self, hidden_fields: &[String]) -> Value {
        let mut out = Map::new();
        out.insert(
            "snapshot_id".into(),
            Value::from(self.snapshot_id.to_string()),
        );
        out.insert(
            "aggregate_type".into(),
            Value::from(self.aggregate_type.as_str()),
        );
        out.insert(
            "aggregate_id".into(),
            Value::from(self.aggregate_id.as_str()),
        );
        out.insert("version".into(), Value::from(self.version));
        out.insert(
            "state".into(),
            Value::Object(visible_state(&self.state, hidden_fields)),
        );
        out.insert("merkle_root".into(), Value::from(self.merkle_root.as_str()));
        out.insert("created_at".into(), Value::from(self.created_at.as_str()));
        out.insert(
            "comment".into(),
            self.comment.as_deref().map_or(Value::Null, Value::from),
        );
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::merkle::{EventMetadata, IssuedBy};

    fn event(version: u64, payload: Value, extensions: Option<Value>, at: &str) -> Event {
        Event {
            aggregate_type: "order".into(),
            aggregate_id: "order-1".into(),
            event_type: "order_updated".into(),
            event_type_raw: Some("order.updated".into()),
            payload,
            extensions: extensions.and_then(|e| e.as_object().cloned()),
            metadata: EventMetadata {
                event_id: 7_398_164_318_138_368 + version,
                created_at: at.into(),
                issued_by: Some(IssuedBy {
                    group: "ops".into(),
                    user: "jane".into(),
                }),
                note: None,
            },
            version,
            hash: "00".repeat(32),
            merkle_root: format!("{version:064x}"),
        }
    }

    #[test]
    fn state_merges_keys_and_keeps_json_types() {
        let events = [
            event(
                1,
                json!({"status": "created", "age": 30, "zip": "0123"}),
                None,
                "t1",
            ),
            event(
                2,
                json!({"status": "paid", "address": {"street": "123 Main"}, "x": null}),
                None,
                "t2",
            ),
            event(3, json!(42), None, "t3"),
        ];
        let aggregate = Aggregate::from_events("order", "order-1", &events);
        assert_eq!(
            Value::Object(aggregate.state.clone()),
            json!({"status": "paid", "age": 30, "zip": "0123",
                   "address": {"street": "123 Main"}, "x": null, "_value": 42})
        );
        assert_eq!(aggregate.version, 3);
        assert_eq!(aggregate.created_at.as_deref(), Some("t1"));
        assert_eq!(aggregate.updated_at.as_deref(), Some("t3"));
        assert_eq!(aggregate.merkle_root, format!("{:064x}", 3));
    }

    #[test]
    fn aggregate_json_has_the_spec_key_order() {
        let events = [event(
            1,
            json!({"status": "created", "ssn": "123"}),
            Some(json!({"@traceId": "abc", "version": 99})),
            "2025-11-27T10:00:00.123456789Z",
        )];
        let mut aggregate = Aggregate::from_events("order", "order-1", &events);
        let visible = aggregate.to_json(&["ssn".to_owned()]);
        let keys: Vec<&str> = visible
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "aggregate_type",
                "aggregate_id",
                "version",
                "state",
                "@trace_id",
                "merkle_root",
                "created_at",
                "updated_at"
            ]
        );
        assert_eq!(visible["state"], json!({"status": "created"}));
        assert_eq!(
            visible["version"],
            json!(1),
            "an extension cannot replace a core key"
        );
        aggregate.archived = true;
        assert_eq!(aggregate.to_json(&[])["archived"], json!(true));
        let fresh = Aggregate::new("order", "o-2").to_json(&[]);
        assert!(fresh.get("created_at").is_none() && fresh.get("archived").is_none());
    }

    #[test]
    fn snapshot_json_always_has_a_comment() {
        let aggregate = Aggregate::from_events(
            "order",
            "order-1",
            &[event(1, json!({"status": "paid"}), None, "t1")],
        );
        let snapshot = Snapshot::of(&aggregate, 7_398_164_318_138_369, "t9".into(), Some("  "));
        assert_eq!(
            snapshot.to_json(&[]).to_string(),
            format!(
                "{{\"snapshot_id\":\"7398164318138369\",\"aggregate_type\":\"order\",\
                 \"aggregate_id\":\"order-1\",\"version\":1,\"state\":{{\"status\":\"paid\"}},\
                 \"merkle_root\":\"{:064x}\",\"created_at\":\"t9\",\"comment\":null}}",
                1
            )
        );
        let commented = Snapshot::of(&aggregate, 1, "t9".into(), Some(" before import "));
        assert_eq!(commented.to_json(&[])["comment"], json!("before import"));
    }
}
