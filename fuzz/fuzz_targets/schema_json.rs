//! Schema JSON (`schemasJson`, `eventdbx_core::schema::SchemaMap`) as `replaceSchemas` and the
//! stored schema files give it, and the validation of a write against it: rules, formats and
//! regex patterns run on attacker-chosen values.
//!
//! Input: the schema map on the first line, the write's payload (JSON) after it. Asserts: no
//! panic; a loaded map survives its JSON form; validation ends in a verdict for every event of
//! every schema.
#![no_main]

use eventdbx_core::schema::{validate_write, RestrictMode, SchemaMap};
use eventdbx_fuzz::split_text;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let (schemas, payload) = split_text(text);
    let Ok(map) = SchemaMap::from_json(schemas) else {
        return;
    };
    let json = map.to_json();
    let again = SchemaMap::from_json(&json)
        .unwrap_or_else(|err| panic!("map {json} does not load again: {err}"));
    assert_eq!(again, map);

    let payload: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
    for (aggregate_type, schema) in map.iter() {
        let mut event_types: Vec<&str> = schema.events.keys().map(String::as_str).collect();
        event_types.push("undeclared_event");
        for event_type in event_types {
            for mode in [RestrictMode::Default, RestrictMode::Strict] {
                let _ = validate_write(mode, aggregate_type, Some(schema), event_type, &payload);
            }
        }
    }
});
