//! Schema maps: round trips, defaults and normalisation, serialisation errors, column types and
//! invalid schema sets.

use super::*;

#[test]
fn example_round_trips() {
    let map = SchemaMap::from_json(EXAMPLE).expect("example parses");
    assert_eq!(map.len(), 1);
    let person = map.get("person").expect("person");
    assert_eq!(person.snapshot_threshold, Some(100));
    assert_eq!(person.hidden_fields, vec!["ssn".to_owned()]);
    assert_eq!(person.column_types["email"].column_type.as_str(), "text");
    assert!(person.column_types["email"].rules.required);
    let original: Value = serde_json::from_str(EXAMPLE).expect("json");
    let written: Value = serde_json::from_str(&map.to_json()).expect("json");
    assert_eq!(written, original);
    assert_eq!(SchemaMap::from_json(&map.to_json()).expect("again"), map);
}

#[test]
fn defaults_and_normalisation() {
    let mut schema = schema_json(json!({}));
    let object = schema.as_object_mut().expect("object");
    object.remove("column_types");
    object.insert("field_locks".into(), json!(["b", "a", "b"]));
    object.insert(
        "events".into(),
        json!({"e": {"fields": ["z", "y", "z"], "notes": "hi"}}),
    );
    let map = map_of(schema).expect("valid");
    let person = map.get("person").expect("person");
    assert!(!person.hidden);
    assert!(person.hidden_fields.is_empty());
    assert!(person.column_types.is_empty());
    assert_eq!(person.field_locks, vec!["a", "b"]);
    assert_eq!(person.events["e"].fields, vec!["y", "z"]);
    assert_eq!(person.events["e"].notes.as_deref(), Some("hi"));
}

#[test]
fn bad_json_and_shapes_are_serialization_errors() {
    for text in ["{not json", "[]", r#"{"person": 1}"#] {
        let err = SchemaMap::from_json(text).expect_err("bad");
        assert_eq!(err.code(), "serialization", "{text}");
        assert!(err.to_string().starts_with("serialization error: "));
    }
    for key in [
        "snapshot_threshold",
        "locked",
        "field_locks",
        "events",
        "created_at",
        "updated_at",
    ] {
        let mut schema = schema_json(json!({}));
        schema.as_object_mut().expect("object").remove(key);
        let err = map_of(schema).expect_err("missing required key");
        assert_eq!(err.code(), "serialization", "{key}");
    }
    let mut schema = schema_json(json!({}));
    schema["unknown_key"] = json!(1);
    assert_eq!(
        map_of(schema).expect_err("unknown key").code(),
        "serialization"
    );
    let err = map_of(schema_json(json!({"v": {"type": "text", "minimum": 1}}))).expect_err("rule");
    assert_eq!(err.code(), "serialization");
    let err = map_of(schema_json(
        json!({"v": {"type": "text", "format": "isbn"}}),
    ))
    .expect_err("fmt");
    assert_eq!(err.code(), "serialization");
}

#[test]
fn column_types_and_aliases() {
    for (raw, parsed) in [
        ("integer", ColumnType::Integer),
        ("INT", ColumnType::Integer),
        ("float", ColumnType::Float),
        ("Double", ColumnType::Float),
        ("boolean", ColumnType::Boolean),
        ("bool", ColumnType::Boolean),
        ("text", ColumnType::Text),
        ("string", ColumnType::Text),
        ("timestamp", ColumnType::Timestamp),
        ("date", ColumnType::Date),
        ("json", ColumnType::Json),
        ("binary", ColumnType::Binary),
        ("bytes", ColumnType::Binary),
        ("object", ColumnType::Object),
        (
            "decimal(10,2)",
            ColumnType::Decimal {
                precision: 10,
                scale: 2,
            },
        ),
        (
            "NUMERIC(5, 0)",
            ColumnType::Decimal {
                precision: 5,
                scale: 0,
            },
        ),
    ] {
        assert_eq!(ColumnType::parse(raw), Ok(parsed), "{raw}");
    }
    for raw in [
        "intger",
        "decimal",
        "decimal(2,3)",
        "decimal(0,0)",
        "decimal(a,b)",
        "",
    ] {
        assert_eq!(
            ColumnType::parse(raw),
            Err(format!("invalid column type '{raw}'"))
        );
    }
    assert_eq!(
        invalid_set(schema_json(json!({"age": "intger"}))),
        "invalid schema: invalid column type 'intger'"
    );
}

#[test]
fn invalid_schema_sets_are_rejected() {
    let cases = [
        (json!({"v": {"type": "integer", "length": {"max": 3}}}), "field v does not support length validation"),
        (json!({"v": {"type": "text", "range": {"min": "1"}}}), "field v does not support range validation"),
        (json!({"v": {"type": "integer", "range": {"min": "one"}}}), "field v has an invalid range bound 'one'"),
        (json!({"v": {"type": "text", "properties": {"a": "text"}}}), "field v cannot define nested properties on non-object type"),
        (json!({"v": {"type": "integer", "format": "reference"}}), "field v uses reference format but must be a text column"),
        (json!({"v": {"type": "text", "reference": {"integrity": "weak"}}}), "field v specifies reference rules without reference format"),
        (json!({"v": {"type": "text", "format": "reference", "reference": {"tenant": "acme"}}}),
            "field v uses unsupported reference.tenant rule (acme); domain-scoped references are no longer supported"),
        (json!({"v": {"type": "text", "regex": ["(ab"]}}), "field v has an invalid pattern (ab: missing ')'"),
        (json!({"o": {"type": "object", "properties": {"n": "nope"}}}), "invalid column type 'nope'"),
        (json!({"o": {"type": "object", "properties": {"n": {"type": "bool", "length": {}}}}}), "field o.n does not support length validation"),
    ];
    for (columns, message) in cases {
        assert_eq!(
            invalid_set(schema_json(columns)),
            format!("invalid schema: {message}")
        );
    }
    let mut schema = schema_json(json!({}));
    schema["aggregate"] = json!("order");
    assert_eq!(
        invalid_set(schema),
        "invalid schema: schema key person does not match aggregate order"
    );
    let mut schema = schema_json(json!({}));
    schema["created_at"] = json!("yesterday");
    assert_eq!(
        invalid_set(schema),
        "invalid schema: schema person has an invalid created_at 'yesterday'"
    );
    let mut schema = schema_json(json!({}));
    schema["hidden_fields"] = json!([""]);
    assert_eq!(
        invalid_set(schema),
        "invalid schema: hidden_fields entries cannot be empty"
    );
    let mut schema = schema_json(json!({}));
    schema["events"] = json!({"e": {"notes": "x".repeat(129)}});
    assert_eq!(
        invalid_set(schema),
        "invalid schema: default note for event e cannot exceed 128 characters"
    );
}
