//! Event hash, Merkle root, incremental builder, `verify`, the event's JSON shape, and the
//! known-answer vectors published in `docs/storage.md`.

use std::collections::BTreeMap;

use eventdbx_core::merkle::{
    canonical_json, empty_root, merkle_root, node_hash, to_hex, verify, Digest, Event,
    EventMetadata, IssuedBy, MerkleBuilder, EMPTY_ROOT_HEX,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const TENANT: &str = "default";

fn map(value: Value) -> Map<String, Value> {
    value.as_object().expect("an object").clone()
}

/// Fills in `hash` and `merkle_root` of a history, as the store does on each append.
fn seal(tenant: &str, mut events: Vec<Event>) -> Vec<Event> {
    let mut builder = MerkleBuilder::new();
    for event in &mut events {
        let hash = event.hash_input(tenant).digest();
        builder.push(hash);
        event.hash = to_hex(&hash);
        event.merkle_root = to_hex(&builder.root());
    }
    events
}

fn leaves(tenant: &str, events: &[Event]) -> Vec<Digest> {
    events
        .iter()
        .map(|e| e.hash_input(tenant).digest())
        .collect()
}

/// The fixed history whose hashes `docs/storage.md` publishes.
fn known_history() -> Vec<Event> {
    let event = |version: u64, event_type: &str, payload: Value| Event {
        aggregate_type: "order".into(),
        aggregate_id: "order-1".into(),
        event_type: event_type.into(),
        event_type_raw: None,
        payload,
        extensions: None,
        metadata: EventMetadata {
            event_id: 7_398_164_318_138_367 + version,
            created_at: String::new(),
            issued_by: None,
            note: None,
        },
        version,
        hash: String::new(),
        merkle_root: String::new(),
    };
    let mut first = event(
        1,
        "order_created",
        json!({"status": "created", "total": 42, "items": [{"sku": "a-1", "qty": 2}]}),
    );
    first.event_type_raw = Some("order.created".into());
    first.extensions = Some(map(json!({"@trace_id": "abc"})));
    first.metadata.created_at = "2025-11-27T10:00:00.123456789Z".into();
    first.metadata.issued_by = Some(IssuedBy {
        group: "ops".into(),
        user: "jane".into(),
    });

    let mut second = event(2, "order_paid", json!({"status": "paid", "paid": true}));
    second.event_type_raw = Some("order_paid".into());
    second.metadata.created_at = "2025-11-27T10:05:00.000000001Z".into();
    second.metadata.issued_by = Some(IssuedBy {
        group: "ops".into(),
        user: "jane".into(),
    });
    second.metadata.note = Some("imported".into());

    let mut third = event(3, "order_shipped", json!({"weight": 1.5, "carrier": null}));
    third.metadata.created_at = "2025-11-27T11:00:00Z".into();
    third.metadata.note = Some(String::new());

    seal(TENANT, vec![first, second, third])
}

/// Reads `name = value` lines of the known-answer block in `docs/storage.md`.
fn documented_vectors() -> BTreeMap<String, String> {
    let path = crate::manifest_dir().join("../../docs/storage.md");
    let text = std::fs::read_to_string(path).expect("docs/storage.md is readable");
    text.lines()
        .filter_map(|line| line.strip_prefix("kat "))
        .filter_map(|line| line.split_once(" = "))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect()
}

#[test]
fn known_answer_vectors_match_docs() {
    let history = known_history();
    let mut computed = BTreeMap::new();
    computed.insert("empty_root".to_string(), to_hex(&empty_root()));
    computed.insert(
        "canonical_payload_1".to_string(),
        canonical_json(&history[0].payload),
    );
    computed.insert(
        "preimage_3".to_string(),
        history[2]
            .hash_input(TENANT)
            .encode()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    );
    for event in &history {
        computed.insert(format!("hash_{}", event.version), event.hash.clone());
        computed.insert(format!("root_{}", event.version), event.merkle_root.clone());
    }
    let hashes = leaves(TENANT, &history);
    assert_eq!(
        to_hex(&node_hash(&node_hash(&hashes[0], &hashes[1]), &hashes[2])),
        computed["root_3"]
    );
    let documented = documented_vectors();
    for (name, value) in &computed {
        println!("kat {name} = {value}");
    }
    assert_eq!(documented, computed);
    assert_eq!(
        verify(
            TENANT,
            "order",
            "order-1",
            &history,
            Some(&computed["root_3"])
        )
        .expect("history verifies"),
        computed["root_3"]
    );
}

#[test]
fn empty_and_single_roots() {
    assert_eq!(to_hex(&empty_root()), EMPTY_ROOT_HEX);
    assert_eq!(to_hex(&merkle_root(&[])), EMPTY_ROOT_HEX);
    let leaf = [7u8; 32];
    assert_eq!(merkle_root(&[leaf]), leaf);
    assert_eq!(
        verify(TENANT, "order", "order-1", &[], None).expect("empty history verifies"),
        EMPTY_ROOT_HEX
    );
}

#[test]
fn odd_node_is_promoted_not_duplicated() {
    let [a, b, c] = [[1u8; 32], [2u8; 32], [3u8; 32]];
    let three = merkle_root(&[a, b, c]);
    assert_eq!(three, node_hash(&node_hash(&a, &b), &c));
    assert_ne!(three, merkle_root(&[a, b, c, c]));
}

#[test]
fn canonical_json_ignores_member_order() {
    let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"d":2,"c":3}],"x":"é\n"}}"#)
        .expect("valid JSON");
    let b: Value = serde_json::from_str(r#"{"a":{"x":"é\n","y":[1,{"c":3,"d":2}]},"b":1}"#)
        .expect("valid JSON");
    assert_eq!(
        canonical_json(&a),
        r#"{"a":{"x":"é\n","y":[1,{"c":3,"d":2}]},"b":1}"#
    );
    assert_eq!(canonical_json(&a), canonical_json(&b));
    // Keys sort by UTF-8 bytes: upper case before lower case, "é" after ASCII.
    assert_eq!(
        canonical_json(&json!({"é": 1, "a": 2, "B": 3})),
        r#"{"B":3,"a":2,"é":1}"#
    );
    assert_ne!(canonical_json(&json!(1)), canonical_json(&json!(1.0)));
}

#[test]
fn event_json_shape_matches_the_wire_spec() {
    let history = known_history();
    let text = serde_json::to_string(&history[0]).expect("serialises");
    let expected = format!(
        concat!(
            r#"{{"aggregate_type":"order","aggregate_id":"order-1","event_type":"order_created","#,
            r#""event_type_raw":"order.created","#,
            r#""payload":{{"status":"created","total":42,"items":[{{"sku":"a-1","qty":2}}]}},"#,
            r#""extensions":{{"@trace_id":"abc"}},"#,
            r#""metadata":{{"event_id":"7398164318138368","created_at":"2025-11-27T10:00:00.123456789Z","#,
            r#""issued_by":{{"group":"ops","user":"jane"}}}},"#,
            r#""version":1,"hash":"{}","merkle_root":"{}"}}"#
        ),
        history[0].hash, history[0].merkle_root
    );
    assert_eq!(text, expected);
    let back: Event = serde_json::from_str(&text).expect("deserialises");
    assert_eq!(back, history[0]);

    // Absent optionals are omitted; `issued_by` stays as null; an empty note is kept.
    let third = serde_json::to_value(&history[2]).expect("serialises");
    let third = third.as_object().expect("object");
    assert!(!third.contains_key("event_type_raw"));
    assert!(!third.contains_key("extensions"));
    assert_eq!(
        third["metadata"],
        json!({"event_id": "7398164318138370", "created_at": "2025-11-27T11:00:00Z",
               "issued_by": null, "note": ""})
    );
    assert!(serde_json::from_str::<EventMetadata>(
        r#"{"event_id":"+1","created_at":"","issued_by":null}"#
    )
    .is_err());
}

#[test]
fn verify_names_the_failing_version_and_field() {
    let history = known_history();
    let subject = "order:order-1";

    let mut tampered = history.clone();
    tampered[1].payload = json!({"status": "refunded", "paid": true});
    let error = verify(TENANT, "order", "order-1", &tampered, None).expect_err("tampered");
    assert_eq!(error.code(), "integrity_violation");
    assert_eq!(
        error.to_string(),
        format!("integrity violation: event 2 of {subject} does not match its hash")
    );

    let mut tampered = history.clone();
    tampered[2].hash = to_hex(&[0u8; 32]);
    let error = verify(TENANT, "order", "order-1", &tampered, None).expect_err("tampered");
    assert_eq!(
        error.to_string(),
        format!("integrity violation: event 3 of {subject} does not match its hash")
    );

    let mut tampered = history.clone();
    let computed = tampered[0].merkle_root.clone();
    tampered[0].merkle_root = EMPTY_ROOT_HEX.to_string();
    let error = verify(TENANT, "order", "order-1", &tampered, None).expect_err("tampered");
    assert_eq!(
        error.to_string(),
        format!(
            "integrity violation: merkle root mismatch for {subject} at event 1 \
             (stored {EMPTY_ROOT_HEX}, computed {computed})"
        )
    );

    // Dropping the last event leaves every remaining event consistent: only the aggregate's
    // stored root reveals it.
    let root = history[2].merkle_root.clone();
    let error =
        verify(TENANT, "order", "order-1", &history[..2], Some(&root)).expect_err("truncated");
    assert_eq!(
        error.to_string(),
        format!(
            "integrity violation: merkle root mismatch for {subject} (stored {root}, computed {})",
            history[1].merkle_root
        )
    );

    let error = verify(TENANT, "order", "order-1", &history[1..], None).expect_err("gap");
    assert_eq!(
        error.to_string(),
        format!(
            "integrity violation: event 2 of {subject} is out of sequence (expected version 1)"
        )
    );

    // Another tenant or another aggregate does not verify.
    assert!(verify("acme", "order", "order-1", &history, None).is_err());
    assert!(verify(TENANT, "order", "order-2", &history, None).is_err());
}

// Property tests.

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z]{0,3}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{0,2}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

prop_compose! {
    fn arbitrary_event()(
        event_type in "[a-z_]{1,4}",
        event_type_raw in proptest::option::of("[a-z_.]{0,4}"),
        payload in json_value(),
        extensions in proptest::option::of(
            prop::collection::btree_map("@[a-z]{0,2}", json_value(), 0..3)),
        note in proptest::option::of("[a-z ]{0,3}"),
        event_id in any::<u64>(),
        created_at in "[0-9:TZ-]{0,4}",
        issued_by in proptest::option::of(("[a-z]{0,2}", "[a-z]{0,2}")),
    ) -> Event {
        Event {
            aggregate_type: "order".into(),
            aggregate_id: "order-1".into(),
            event_type,
            event_type_raw,
            payload,
            extensions: extensions.map(|m| m.into_iter().collect()),
            metadata: EventMetadata {
                event_id,
                created_at,
                issued_by: issued_by.map(|(group, user)| IssuedBy { group, user }),
                note,
            },
            version: 0,
            hash: String::new(),
            merkle_root: String::new(),
        }
    }
}

fn history() -> impl Strategy<Value = Vec<Event>> {
    history_of(1..7)
}

fn history_of(lengths: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(arbitrary_event(), lengths).prop_map(|mut events| {
        for (version, event) in (1u64..).zip(events.iter_mut()) {
            event.version = version;
        }
        seal(TENANT, events)
    })
}

fn toggle(value: &mut Option<String>) {
    *value = match value.take() {
        None => Some(String::new()),
        Some(_) => None,
    };
}

/// Changes one hashed field (or the tenant, field 0) of `event`; returns the tenant to hash with.
fn mutate(event: &mut Event, field: usize) -> &'static str {
    match field {
        0 => return "other",
        1 => event.aggregate_type.push('x'),
        2 => event.aggregate_id.push('x'),
        3 => event.version = event.version.wrapping_add(1),
        4 => event.event_type.push('x'),
        5 => toggle(&mut event.event_type_raw),
        6 => event.payload = Value::Array(vec![event.payload.take()]),
        7 => {
            event.extensions = match event.extensions.take() {
                None => Some(Map::new()),
                Some(mut m) if m.is_empty() => {
                    m.insert("@x".into(), Value::Null);
                    Some(m)
                }
                Some(_) => None,
            }
        }
        8 => toggle(&mut event.metadata.note),
        9 => event.metadata.event_id = event.metadata.event_id.wrapping_add(1),
        10 => event.metadata.created_at.push('x'),
        11 => {
            event.metadata.issued_by = match event.metadata.issued_by.take() {
                None => Some(IssuedBy {
                    group: String::new(),
                    user: String::new(),
                }),
                Some(_) => None,
            }
        }
        12 => match &mut event.metadata.issued_by {
            Some(by) => by.group.push('x'),
            None => event.metadata.note = Some(format!("{:?}x", event.metadata.note)),
        },
        _ => match &mut event.metadata.issued_by {
            Some(by) => by.user.push('x'),
            None => event.payload = json!({"wrapped": event.payload.take()}),
        },
    }
    TENANT
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn changing_any_field_of_any_event_changes_the_root(
        events in history(),
        pick in any::<prop::sample::Index>(),
        field in 0usize..14,
    ) {
        let original = merkle_root(&leaves(TENANT, &events));
        let index = pick.index(events.len());
        let mut changed = leaves(TENANT, &events);
        let mut event = events[index].clone();
        let tenant = mutate(&mut event, field);
        changed[index] = event.hash_input(tenant).digest();
        prop_assert_ne!(merkle_root(&changed), original);
    }

    #[test]
    fn reordering_two_different_events_changes_the_root(
        events in history_of(2..7),
        a in any::<prop::sample::Index>(),
        b in any::<prop::sample::Index>(),
    ) {
        let hashes = leaves(TENANT, &events);
        // Two distinct positions: j is i plus a non-zero offset, wrapping around.
        let i = a.index(hashes.len());
        let j = (i + 1 + b.index(hashes.len() - 1)) % hashes.len();
        prop_assume!(hashes[i] != hashes[j]);
        let mut swapped = hashes.clone();
        swapped.swap(i, j);
        prop_assert_ne!(merkle_root(&swapped), merkle_root(&hashes));
    }

    #[test]
    fn removing_any_event_changes_the_root(
        events in history(),
        pick in any::<prop::sample::Index>(),
    ) {
        let hashes = leaves(TENANT, &events);
        let mut shorter = hashes.clone();
        shorter.remove(pick.index(hashes.len()));
        prop_assert_ne!(merkle_root(&shorter), merkle_root(&hashes));
    }

    #[test]
    fn builder_equals_batch_root_for_every_prefix(
        hashes in prop::collection::vec(any::<[u8; 32]>(), 0..70),
    ) {
        let mut builder = MerkleBuilder::new();
        prop_assert_eq!(builder.root(), merkle_root(&[]));
        for (n, hash) in hashes.iter().enumerate() {
            builder.push(*hash);
            prop_assert_eq!(builder.len(), n as u64 + 1);
            prop_assert_eq!(builder.root(), merkle_root(&hashes[..=n]));
        }
    }

    #[test]
    fn verify_accepts_sealed_histories_and_catches_tampering(
        events in history(),
        pick in any::<prop::sample::Index>(),
        field in 0usize..3,
    ) {
        let root = events.last().expect("non-empty").merkle_root.clone();
        prop_assert_eq!(
            verify(TENANT, "order", "order-1", &events, Some(&root)).expect("verifies"),
            root
        );
        let index = pick.index(events.len());
        let version = index + 1;
        let mut tampered = events.clone();
        match field {
            0 => tampered[index].payload = Value::Array(vec![tampered[index].payload.take()]),
            1 => tampered[index].hash = to_hex(&[0u8; 32]),
            _ => tampered[index].merkle_root = EMPTY_ROOT_HEX.to_string(),
        }
        let message = verify(TENANT, "order", "order-1", &tampered, None)
            .expect_err("tampering is detected")
            .to_string();
        let expected = if field == 2 {
            format!("merkle root mismatch for order:order-1 at event {version} ")
        } else {
            format!("event {version} of order:order-1 does not match its hash")
        };
        prop_assert!(message.contains(&expected), "{}", message);
    }
}
