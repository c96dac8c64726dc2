//! The filter language (`eventdbx_core::query::filter`), as the server parses a request's
//! `filter` text, and its evaluation against an aggregate and an event.
//!
//! Asserts: no panic; the canonical form (`Display`) of a parsed filter parses back to an equal
//! filter and prints the same; evaluation never panics, whatever the filter compares.
#![no_main]

use std::collections::BTreeSet;

use eventdbx_core::query::filter::Filter;
use eventdbx_core::query::{AggregateView, EventView};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(filter) = Filter::parse(text) else {
        return;
    };
    let printed = filter.to_string();
    let again = Filter::parse(&printed)
        .unwrap_or_else(|err| panic!("canonical form {printed:?} does not parse: {err}"));
    assert_eq!(again, filter, "canonical form {printed:?}");
    assert_eq!(again.to_string(), printed);

    let state: Map<String, Value> = match json!({
        "name": "Ada", "age": 36, "score": 1.5, "tags": ["a", "b"], "active": true,
        "nested": {"level": {"deep": "x"}}, "none": null, "archived": false,
    }) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let extensions: Map<String, Value> = match json!({"@created_by": "ops", "source": "import"}) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let aggregate = AggregateView {
        aggregate_type: "person",
        aggregate_id: "p-1",
        version: 3,
        archived: false,
        created_at: Some(1_700_000_000_000),
        updated_at: None,
        merkle_root: "00",
        state: &state,
        extensions: &extensions,
    };
    let types: BTreeSet<String> = ["person".to_owned()].into();
    let _ = filter.matches_aggregate(&aggregate, &types);
    let _ = filter.mentions_archived(&types);
    let payload = Value::Object(state.clone());
    let metadata = json!({"source": "import"});
    let event = EventView {
        aggregate_type: "person",
        aggregate_id: "p-1",
        event_type: "person_created",
        version: 1,
        event_id: 42,
        created_at: -1,
        merkle_root: "00",
        hash: "11",
        note: Some("note"),
        issued_by: Some(("ops", "ada")),
        extensions: Some(&metadata),
        payload: &payload,
    };
    let _ = filter.matches_event(&event);
});
