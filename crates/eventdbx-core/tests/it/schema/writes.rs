//! Validation of writes against a schema: check order, event field allow lists, every type,
//! rule and format, references, nested properties and restrict modes.

use super::*;

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
