//! Schema map (de)serialisation, validation of schema sets, and validation of writes.

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

fn base_schema(edit: impl FnOnce(&mut Value)) -> AggregateSchema {
    let mut schema = schema_json(json!({}));
    edit(&mut schema);
    map_of(schema)
        .expect("valid")
        .get("person")
        .expect("person")
        .clone()
}

#[test]
fn write_checks_run_in_order() {
    let locked = base_schema(|s| {
        s["locked"] = json!(true);
        s["field_locks"] = json!(["id"]);
    });
    assert_eq!(
        write(&locked, json!({"id": 1})),
        Err("schema violation: aggregate person is locked for updates".into())
    );
    let field_locked = base_schema(|s| s["field_locks"] = json!(["id"]));
    assert_eq!(
        write(&field_locked, json!({"id": 1})),
        Err("schema violation: field id is locked for aggregate person".into())
    );
    assert_eq!(write(&field_locked, json!({"name": 1})), Ok(()));
    let err = validate_write(
        RestrictMode::Default,
        "person",
        Some(&field_locked),
        "person_deleted",
        &json!({}),
    )
    .expect_err("undefined event");
    assert_eq!(
        err.to_string(),
        "schema violation: event person_deleted is not defined for aggregate person"
    );
}

#[test]
fn event_field_allow_list() {
    let schema = base_schema(|s| {
        s["events"] = json!({"person_updated": {"fields": ["email", "name"]}});
    });
    assert_eq!(write(&schema, json!({"email": "a", "name": "b"})), Ok(()));
    assert_eq!(
        write(&schema, json!({"email": "a"})),
        Err("schema violation: missing required field name for event person_updated".into())
    );
    assert_eq!(
        write(&schema, json!({"email": "a", "name": "b", "age": 3})),
        Err("schema violation: field age is not permitted for event person_updated".into())
    );
    assert_eq!(
        write(&schema, json!([1])),
        Err("schema violation: missing required field email for event person_updated".into())
    );
    let open = base_schema(|_| {});
    assert_eq!(write(&open, json!({"anything": true})), Ok(()));
    assert_eq!(write(&open, json!("not an object")), Ok(()));
}

#[test]
fn column_checks_need_an_object_payload() {
    let schema = with_columns(json!({"age": "integer"}));
    assert_eq!(
        write(&schema, json!([1, 2])),
        Err("schema violation: aggregate person expects object payload for validation".into())
    );
    assert_eq!(write(&schema, json!({})), Ok(()));
    let required = with_columns(json!({"age": {"type": "integer", "required": true}}));
    assert_eq!(
        write(&required, json!({"name": "x"})),
        Err("schema violation: field age is required".into())
    );
}

#[test]
fn every_type_accepts_and_rejects() {
    let cases = [
        (
            json!("integer"),
            json!(42),
            json!(1.5),
            "field v must be an integer",
        ),
        (
            json!("integer"),
            json!("-7"),
            json!("seven"),
            "field v must be an integer",
        ),
        (
            json!("float"),
            json!(1.5),
            json!(true),
            "field v must be a number",
        ),
        (
            json!("double"),
            json!("2.5e3"),
            json!("x"),
            "field v must be a number",
        ),
        (
            json!("decimal(5,2)"),
            json!("123.45"),
            json!("1234.5"),
            "field v must be a decimal with precision 5 and scale 2",
        ),
        (
            json!("decimal(5,2)"),
            json!(1.5),
            json!("1.234"),
            "field v must be a decimal with precision 5 and scale 2",
        ),
        (
            json!("boolean"),
            json!(true),
            json!("yes"),
            "field v must be a boolean",
        ),
        (
            json!("bool"),
            json!(1),
            json!(2),
            "field v must be a boolean",
        ),
        (
            json!("bool"),
            json!("0"),
            json!(null),
            "field v must be a boolean",
        ),
        (
            json!("text"),
            json!("hello"),
            json!(5),
            "field v must be a string",
        ),
        (
            json!("string"),
            json!(""),
            json!(null),
            "field v must be a string",
        ),
        (
            json!("timestamp"),
            json!("2025-11-27T10:00:00.123+02:00"),
            json!("2025-11-27"),
            "field v must be a valid ISO 8601 timestamp",
        ),
        (
            json!("date"),
            json!("2024-02-29"),
            json!("2023-02-29"),
            "field v must be a date (YYYY-MM-DD)",
        ),
        (json!("json"), json!(null), json!(null), ""),
        (
            json!("binary"),
            json!("aGVsbG8="),
            json!("not base64!"),
            "field v must be base64-encoded binary",
        ),
        (
            json!("object"),
            json!({"a": 1}),
            json!([1]),
            "field v must be a JSON object",
        ),
    ];
    for (spec, good, bad, message) in cases {
        if message.is_empty() {
            let schema = with_columns(json!({ "v": spec }));
            assert_eq!(write(&schema, json!({ "v": good })), Ok(()));
            continue;
        }
        accepts_and_rejects(spec, good, bad, message);
    }
}

#[test]
fn every_rule_accepts_and_rejects() {
    let cases = [
        (
            json!({"type": "text", "contains": ["@", "."]}),
            json!("a@b.c"),
            json!("a@bc"),
            "field v must contain '.'",
        ),
        (
            json!({"type": "text", "does_not_contain": ["admin"]}),
            json!("bob"),
            json!("sysadmin"),
            "field v must not contain 'admin'",
        ),
        (
            json!({"type": "text", "regex": ["^[A-Z]{2}-\\d+$"]}),
            json!("AB-12"),
            json!("ab-12"),
            "field v must match pattern ^[A-Z]{2}-\\d+$",
        ),
        (
            json!({"type": "text", "length": {"min": 2}}),
            json!("ab"),
            json!("é"),
            "field v must have length >= 2",
        ),
        (
            json!({"type": "text", "length": {"max": 3}}),
            json!("héé"),
            json!("abcd"),
            "field v must have length <= 3",
        ),
        (
            json!({"type": "binary", "length": {"max": 2}}),
            json!("AAA="),
            json!("AAAA"),
            "field v must have length <= 2",
        ),
        (
            json!({"type": "integer", "range": {"min": "1", "max": "10"}}),
            json!(10),
            json!(11),
            "field v must be <= 10",
        ),
        (
            json!({"type": "float", "range": {"min": "0.5"}}),
            json!("0.5"),
            json!(0.4),
            "field v must be >= 0.5",
        ),
        (
            json!({"type": "decimal(4,1)", "range": {"max": "100"}}),
            json!("99.9"),
            json!("100.1"),
            "field v must be <= 100",
        ),
        (
            json!({"type": "timestamp", "range": {"min": "2025-01-01T00:00:00Z"}}),
            json!("2025-01-01T01:00:00+01:00"),
            json!("2024-12-31T23:59:59Z"),
            "field v must be >= 2025-01-01T00:00:00Z",
        ),
        (
            json!({"type": "date", "range": {"max": "2025-12-31"}}),
            json!("2025-12-31"),
            json!("2026-01-01"),
            "field v must be <= 2025-12-31",
        ),
    ];
    for (spec, good, bad, message) in cases {
        accepts_and_rejects(spec, good, bad, message);
    }
}

#[test]
fn length_is_ignored_beside_text_rules() {
    for extra in [
        json!({"contains": ["a"]}),
        json!({"does_not_contain": ["z"]}),
        json!({"regex": ["a"]}),
        json!({"format": "snake_case"}),
    ] {
        let mut spec = json!({"type": "text", "length": {"max": 1}});
        spec.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        let schema = with_columns(json!({ "v": spec }));
        assert_eq!(write(&schema, json!({"v": "aaaa"})), Ok(()), "{extra}");
    }
}

#[test]
fn every_format_accepts_and_rejects() {
    let cases = [
        (
            "email",
            "ada@example.com",
            "ada@example",
            "a valid email address",
        ),
        (
            "url",
            "https://example.com/a?b",
            "example.com",
            "a valid URL",
        ),
        (
            "credit_card",
            "4111 1111 1111 1111",
            "4111 1111 1111 1112",
            "a valid credit card number",
        ),
        (
            "country_code",
            "GB",
            "UK",
            "an ISO 3166-1 alpha-2 country code",
        ),
        (
            "iso8601",
            "2025-11-27T10:00:00Z",
            "2025-13-27T10:00:00Z",
            "a valid ISO 8601 timestamp",
        ),
        (
            "wgs_84",
            "51.5, -0.12",
            "91,0",
            "a valid WGS 84 coordinate (lat,lon)",
        ),
        ("camel_case", "firstName2", "FirstName", "camelCase"),
        ("snake_case", "first_name_2", "first__name", "snake_case"),
        ("kebab_case", "first-name", "first_name", "kebab-case"),
        ("pascal_case", "FirstName", "firstName", "PascalCase"),
        (
            "upper_case_snake_case",
            "MAX_SIZE_2",
            "Max_Size",
            "UPPER_CASE_SNAKE_CASE",
        ),
    ];
    for (format, good, bad, expected) in cases {
        accepts_and_rejects(
            json!({"type": "text", "format": format}),
            json!(good),
            json!(bad),
            &format!("field v must be {expected}"),
        );
    }
    assert!(!text::is_country_code("gb"));
}

#[test]
fn reference_values() {
    let spec = json!({"type": "text", "format": "reference",
        "reference": {"aggregate_type": "person", "integrity": "strong", "cascade": "restrict"}});
    accepts_and_rejects(
        spec.clone(),
        json!("#p-1"),
        json!("order#o-1"),
        "reference v must target aggregate type person",
    );
    let schema = with_columns(json!({ "v": spec }));
    for (value, message) in [
        ("", "reference value cannot be empty"),
        ("person", "reference must be aggregate#id or #id"),
        ("a#b#c#d", "reference must be aggregate#id or #id"),
        ("person#", "reference segments cannot be empty"),
        ("#person#1", "reference segments cannot be empty"),
    ] {
        assert_eq!(
            write(&schema, json!({ "v": value })),
            Err(format!("schema violation: {message}")),
            "{value}"
        );
    }
    assert_eq!(write(&schema, json!({"v": "acme#person#p-1"})), Ok(()));
    let reference = Reference::parse("acme#person#p-1", "order").expect("legacy");
    assert_eq!(reference.tenant.as_deref(), Some("acme"));
    assert_eq!(reference.canonical(), "person#p-1");
    assert_eq!(
        Reference::parse("#o-1", "order")
            .expect("short")
            .canonical(),
        "order#o-1"
    );
}

#[test]
fn nested_properties_use_dotted_paths() {
    let schema = with_columns(json!({"profile": {"type": "object", "properties": {
        "country": {"type": "text", "format": "country_code"},
        "zip": {"type": "text", "required": true}}}}));
    assert_eq!(
        write(
            &schema,
            json!({"profile": {"country": "FR", "zip": "75001"}})
        ),
        Ok(())
    );
    assert_eq!(
        write(&schema, json!({"profile": {"country": "XX", "zip": "1"}})),
        Err(
            "schema violation: field profile.country must be an ISO 3166-1 alpha-2 country code"
                .into()
        )
    );
    assert_eq!(
        write(&schema, json!({"profile": {"country": "FR"}})),
        Err("schema violation: field profile.zip is required".into())
    );
}

#[test]
fn restrict_modes() {
    for (raw, mode) in [
        ("off", RestrictMode::Off),
        ("FALSE", RestrictMode::Off),
        ("dev", RestrictMode::Off),
        ("unrestricted", RestrictMode::Off),
        ("default", RestrictMode::Default),
        ("prod", RestrictMode::Default),
        ("hybrid", RestrictMode::Default),
        ("strict", RestrictMode::Strict),
        ("enforced", RestrictMode::Strict),
        ("all", RestrictMode::Strict),
        ("whatever", RestrictMode::Default),
    ] {
        assert_eq!(RestrictMode::parse(raw), mode, "{raw}");
    }
    assert_eq!(RestrictMode::from_bool(false), RestrictMode::Off);
    assert_eq!(RestrictMode::from_bool(true), RestrictMode::Default);
    for mode in [RestrictMode::Off, RestrictMode::Default] {
        assert!(validate_write(mode, "person", None, "e", &json!(1)).is_ok());
    }
    let err = validate_write(RestrictMode::Strict, "person", None, "e", &json!({}))
        .expect_err("strict without schema");
    assert_eq!(err.code(), "schema_violation");
    assert_eq!(
        err.to_string(),
        "schema violation: aggregate person requires a schema before events can be appended when restrict=strict"
    );
}

#[test]
fn pattern_matcher() {
    let cases = [
        ("abc", "xxabcxx", true),
        ("^abc$", "xabc", false),
        ("^a.c$", "abc", true),
        ("^(ab|cd)+$", "abcdab", true),
        ("^(ab|cd)+$", "abce", false),
        ("^(?:a|b)*c$", "ababc", true),
        ("^[^0-9]+$", "abc", true),
        ("^[^0-9]+$", "ab1", false),
        ("^\\w+@\\w+\\.com$", "me@host.com", true),
        ("^\\d{3}-\\d{2,}$", "123-4", false),
        ("^\\d{3}-\\d{2,}$", "123-45678", true),
        ("^a{2,3}$", "aaaa", false),
        ("^colou?r$", "color", true),
        ("^[a-c-]+$", "a-b", true),
        ("^\\s*$", " \t", true),
        ("^(a*)*b$", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac", false),
    ];
    for (pattern, input, expected) in cases {
        let compiled = Pattern::compile(pattern).expect("pattern compiles");
        assert_eq!(compiled.is_match(input), expected, "{pattern} on {input}");
    }
    for bad in ["(a", "a)", "*a", "[a", "a{2,1}", "[z-a]", "\\"] {
        assert!(Pattern::compile(bad).is_err(), "{bad}");
    }
}

#[test]
fn text_helpers() {
    assert_eq!(text::parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
    assert_eq!(
        text::parse_rfc3339("1970-01-01T01:00:00.5+01:00"),
        Some((0, 500_000_000))
    );
    assert_eq!(text::parse_rfc3339("2025-11-27T24:00:00Z"), None);
    assert_eq!(text::parse_date("2000-03-01"), Some(11_017));
    assert_eq!(text::decode_base64("aGk"), Some(b"hi".to_vec()));
    assert_eq!(text::decode_base64("a"), None);
}

mod properties {
    use eventdbx_core::schema::text;
    use proptest::prelude::*;

    fn encode(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn base64_decodes_what_was_encoded(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(text::decode_base64(&encode(&bytes)), Some(bytes));
        }

        #[test]
        fn dates_are_consecutive_days(days in 0i64..100_000) {
            // Walk from a known day count back to a date string and parse it again.
            let z = days + 719_468;
            let era = z.div_euclid(146_097);
            let doe = z - era * 146_097;
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let d = doy - (153 * mp + 2) / 5 + 1;
            let m = if mp < 10 { mp + 3 } else { mp - 9 };
            let y = yoe + era * 400 + i64::from(m <= 2);
            let date = format!("{y:04}-{m:02}-{d:02}");
            prop_assert_eq!(text::parse_date(&date), Some(days));
            let stamp = format!("{date}T00:00:00Z");
            prop_assert_eq!(text::parse_rfc3339(&stamp), Some((days * 86_400, 0)));
        }
    }
}

mod dbx {
    use eventdbx_core::schema::dbx::compile;
    use eventdbx_core::schema::{Format, ReferenceCascade, ReferenceIntegrity, SchemaMap};

    const NOW: &str = "2025-11-27T10:00:00Z";
    const LATER: &str = "2025-11-28T10:00:00Z";

    const EXAMPLE: &str = r#"# comments start with '#' or '//'
aggregate person {
  snapshot_threshold = 100
  locked = false
  hidden = false
  hidden_fields = ["internal_notes"]
  field_locks = ["id"]

  field email { type = "text"  rules = {"required": true, "format": "email"} }
  field manager {
    type = "reference"
    hidden = true
    locked = true
    rules = {"reference": {"aggregate_type": "person", "integrity": "strong", "cascade": "restrict"}}
  }
  field profile { type = "object"
                  rules = {"properties": {"country": {"type": "text", "format": "country_code"}}} }

  event person_created { fields = ["email", "manager"]  note = "Initial import" }
  event person_updated {}
}
"#;

    fn error(source: &str) -> String {
        let err = compile(source, None, NOW).expect_err("compile error");
        assert_eq!(err.code(), "invalid_schema");
        err.to_string()
            .strip_prefix("invalid schema: ")
            .expect("prefix")
            .to_owned()
    }

    #[test]
    fn spec_example_compiles() {
        let map = compile(EXAMPLE, None, NOW).expect("example compiles");
        let person = map.get("person").expect("person");
        assert_eq!(person.snapshot_threshold, Some(100));
        assert_eq!(person.hidden_fields, vec!["internal_notes", "manager"]);
        assert_eq!(person.field_locks, vec!["id", "manager"]);
        assert_eq!(person.created_at, NOW);
        assert_eq!(person.updated_at, NOW);
        let manager = &person.column_types["manager"];
        assert_eq!(manager.column_type, "text");
        assert_eq!(manager.rules.format, Some(Format::Reference));
        let reference = manager.rules.reference.as_ref().expect("reference rules");
        assert_eq!(reference.aggregate_type.as_deref(), Some("person"));
        assert_eq!(reference.integrity, ReferenceIntegrity::Strong);
        assert_eq!(reference.cascade, ReferenceCascade::Restrict);
        assert!(person.column_types["email"].rules.required);
        assert!(person.column_types["profile"].rules.properties.is_some());
        let created = &person.events["person_created"];
        assert_eq!(created.fields, vec!["email", "manager"]);
        assert_eq!(created.notes.as_deref(), Some("Initial import"));
        assert!(person.events["person_updated"].fields.is_empty());
        let again = SchemaMap::from_json(&map.to_json()).expect("runtime JSON is valid");
        assert_eq!(again, map);
    }

    #[test]
    fn reference_alias_gets_default_rules() {
        let map = compile(
            "// alias\naggregate \"order\" { field buyer { type = \"ref\" } event placed {} }",
            None,
            NOW,
        )
        .expect("compiles");
        let buyer = &map.get("order").expect("order").column_types["buyer"];
        assert_eq!(buyer.column_type, "text");
        assert_eq!(buyer.rules.format, Some(Format::Reference));
        assert_eq!(buyer.rules.reference, Some(Default::default()));
    }

    #[test]
    fn timestamps_follow_the_existing_schema() {
        let first = compile(EXAMPLE, None, NOW).expect("compiles");
        let same = compile(EXAMPLE, Some(&first), LATER).expect("compiles");
        assert_eq!(same, first);
        let changed_source = EXAMPLE.replace("snapshot_threshold = 100", "snapshot_threshold = 5");
        let changed = compile(&changed_source, Some(&first), LATER).expect("compiles");
        let person = changed.get("person").expect("person");
        assert_eq!(person.created_at, NOW);
        assert_eq!(person.updated_at, LATER);
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let cases = [
            (
                "schema person {}",
                "expected `aggregate`, found `schema` at line 1, column 1",
            ),
            ("aggregate {", "expected name at line 1, column 11"),
            (
                "aggregate p",
                "expected `{`, found end of file at line 1, column 12",
            ),
            (
                "aggregate p =",
                "expected `{`, found `=` at line 1, column 13",
            ),
            (
                "aggregate p {\n  event e {}\n",
                "expected `}`, found end of file at line 3, column 1",
            ),
            (
                "aggregate p {\n  colour = 1 }",
                "unsupported aggregate property `colour` at line 2, column 3",
            ),
            (
                "aggregate p { field f { size = 1 } }",
                "unsupported field property `size` at line 1, column 25",
            ),
            (
                "aggregate p { event e { notes = 1 } }",
                "unsupported event property `notes` at line 1, column 25",
            ),
            (
                "aggregate p { locked }",
                "expected `=`, found `}` at line 1, column 22",
            ),
            (
                "aggregate p { locked = }",
                "expected JSON value at line 1, column 24",
            ),
            ("aggregate p { { }", "expected token at line 1, column 15"),
            (
                "aggregate p { locked = true locked = false }",
                "aggregate.locked cannot be defined more than once at line 1, column 29",
            ),
        ];
        for (source, message) in cases {
            assert_eq!(error(source), message, "{source}");
        }
        let invalid = error("aggregate p { locked = tru }");
        assert!(invalid.starts_with("invalid JSON value: "), "{invalid}");
        assert!(invalid.ends_with(" at line 1, column 24"), "{invalid}");
    }

    #[test]
    fn semantic_errors() {
        let cases = [
            ("aggregate p { event e {} } aggregate p { event e {} }", "aggregate p is defined more than once"),
            ("aggregate p { field f { type = \"text\" } field f { type = \"text\" } event e {} }", "field f is defined more than once in aggregate p"),
            ("aggregate p { event e {} event e {} }", "event e is defined more than once in aggregate p"),
            ("aggregate p { field f { hidden = true } event e {} }", "field f in aggregate p must define type"),
            ("aggregate p { field f { type = \" \" } event e {} }", "field.type cannot be empty"),
            ("aggregate p { field f { type = 1 } event e {} }", "field.type must be a JSON string"),
            ("aggregate \"\" { event e {} }", "aggregate name cannot be empty"),
            ("aggregate p { }", "aggregate p must define at least one event"),
            ("aggregate p { locked = 1 event e {} }", "aggregate.locked must be a JSON boolean"),
            ("aggregate p { field f { type = \"text\" hidden = \"yes\" } event e {} }", "field.hidden must be a JSON boolean"),
            ("aggregate p { event e { note = 5 } }", "event.note must be a JSON string or null"),
            ("aggregate p { hidden_fields = [1] event e {} }", "aggregate.hidden_fields must be a JSON array of strings"),
            ("aggregate p { field_locks = [\"\"] event e {} }", "aggregate.field_locks entries cannot be empty"),
            ("aggregate p { event e { fields = \"a\" } }", "event.fields must be a JSON array of strings"),
            ("aggregate p { snapshot_threshold = -1 event e {} }", "aggregate.snapshot_threshold must be a non-negative integer or null"),
            ("aggregate p { field f { type = \"text\" rules = [] } event e {} }", "field.rules must be a JSON object"),
            ("aggregate p { field f { type = \"intger\" } event e {} }", "invalid column type 'intger'"),
        ];
        for (source, message) in cases {
            assert_eq!(error(source), message, "{source}");
        }
        let long_note = format!(
            "aggregate p {{ event e {{ note = \"{}\" }} }}",
            "n".repeat(129)
        );
        assert_eq!(
            error(&long_note),
            "default note for event e cannot exceed 128 characters"
        );
        let rules =
            error("aggregate p { field f { type = \"text\" rules = {\"bogus\": 1} } event e {} }");
        assert!(
            rules.starts_with("failed to parse field.rules: "),
            "{rules}"
        );
        let map = compile(
            "aggregate p { snapshot_threshold = null event e { note = null } }",
            None,
            NOW,
        )
        .expect("nulls are allowed");
        assert_eq!(map.get("p").expect("p").snapshot_threshold, None);
        assert!(compile("# nothing\n// at all\n", None, NOW)
            .expect("empty")
            .is_empty());
    }
}
