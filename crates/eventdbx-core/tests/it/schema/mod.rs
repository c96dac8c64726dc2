//! Schema map (de)serialisation, validation of schema sets, and validation of writes.

mod dbx;
mod shape;
mod text_rules;
mod writes;

use eventdbx_core::schema::text::{self, Pattern};
use eventdbx_core::schema::write::Reference;
use eventdbx_core::schema::{validate_write, AggregateSchema, ColumnType, RestrictMode, SchemaMap};
use serde_json::{json, Value};

const EXAMPLE: &str = r#"{"person": {"aggregate": "person", "snapshot_threshold": 100, "locked": false,
  "field_locks": [], "hidden": false, "hidden_fields": ["ssn"],
  "column_types": {"email": {"type": "text", "required": true, "format": "email"},
                   "age": "integer"},
  "events": {"person_registered": {"fields": ["email", "first_name"]},
             "person_email_updated": {"fields": []}},
  "created_at": "2025-11-27T10:00:00Z", "updated_at": "2025-11-27T10:00:00Z"}}"#;

fn schema_json(columns: Value) -> Value {
    json!({"aggregate": "person", "snapshot_threshold": null, "locked": false,
        "field_locks": [], "column_types": columns,
        "events": {"person_updated": {"fields": []}},
        "created_at": "2025-11-27T10:00:00Z", "updated_at": "2025-11-27T10:00:00Z"})
}

fn map_of(schema: Value) -> eventdbx_core::Result<SchemaMap> {
    SchemaMap::from_json(&json!({ "person": schema }).to_string())
}

fn with_columns(columns: Value) -> AggregateSchema {
    let map = map_of(schema_json(columns)).expect("valid schema");
    map.get("person").expect("person schema").clone()
}

fn write(schema: &AggregateSchema, payload: Value) -> Result<(), String> {
    validate_write(
        RestrictMode::Default,
        "person",
        Some(schema),
        "person_updated",
        &payload,
    )
    .map_err(|e| {
        assert_eq!(e.code(), "schema_violation");
        e.to_string()
    })
}

/// A column `v` of `spec` accepts `good` and rejects `bad` with `message`.
fn accepts_and_rejects(spec: Value, good: Value, bad: Value, message: &str) {
    let schema = with_columns(json!({ "v": spec }));
    assert_eq!(
        write(&schema, json!({ "v": good })),
        Ok(()),
        "good value of {spec}"
    );
    assert_eq!(
        write(&schema, json!({ "v": bad })),
        Err(format!("schema violation: {message}")),
        "bad value of {spec}"
    );
}

fn invalid_set(schema: Value) -> String {
    let err = map_of(schema).expect_err("invalid schema set");
    assert_eq!(err.code(), "invalid_schema");
    err.to_string()
}
