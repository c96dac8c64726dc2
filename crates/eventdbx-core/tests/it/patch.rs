//! RFC 6902 engine (Appendix A examples, pointers, atomicity) and EventDBX patch-event rules.

use eventdbx_core::patch::{
    apply_operations, apply_patch, json_equal, parse_operations, parse_patch_text, JsonPointer,
};
use eventdbx_core::CoreError;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Runs the full RFC 6902 engine on document text and patch text.
fn rfc(document: Value, patch: &str) -> Result<Value, CoreError> {
    let parsed = parse_patch_text(patch)?;
    let operations = parse_operations(&parsed)?;
    let before = document.clone();
    let result = apply_operations(&document, &operations);
    // Atomicity: whatever happened, the input document is as it was.
    assert_eq!(document, before);
    result
}

fn ok(document: Value, patch: &str) -> Value {
    rfc(document, patch).expect("patch applies")
}

fn err(document: Value, patch: &str) -> String {
    let error = rfc(document, patch).expect_err("patch fails");
    assert_eq!(error.code(), "invalid_schema");
    error.to_string()
}

fn object(value: Value) -> Map<String, Value> {
    value.as_object().expect("an object").clone()
}

// RFC 6902 Appendix A.

#[test]
fn a01_adding_an_object_member() {
    let out = ok(
        json!({"foo": "bar"}),
        r#"[{ "op": "add", "path": "/baz", "value": "qux" }]"#,
    );
    assert_eq!(out, json!({"baz": "qux", "foo": "bar"}));
}

#[test]
fn a02_adding_an_array_element() {
    let out = ok(
        json!({"foo": ["bar", "baz"]}),
        r#"[{ "op": "add", "path": "/foo/1", "value": "qux" }]"#,
    );
    assert_eq!(out, json!({"foo": ["bar", "qux", "baz"]}));
}

#[test]
fn a03_removing_an_object_member() {
    let out = ok(
        json!({"baz": "qux", "foo": "bar"}),
        r#"[{ "op": "remove", "path": "/baz" }]"#,
    );
    assert_eq!(out, json!({"foo": "bar"}));
}

#[test]
fn a04_removing_an_array_element() {
    let out = ok(
        json!({"foo": ["bar", "qux", "baz"]}),
        r#"[{ "op": "remove", "path": "/foo/1" }]"#,
    );
    assert_eq!(out, json!({"foo": ["bar", "baz"]}));
}

#[test]
fn a05_replacing_a_value() {
    let out = ok(
        json!({"baz": "qux", "foo": "bar"}),
        r#"[{ "op": "replace", "path": "/baz", "value": "boo" }]"#,
    );
    assert_eq!(out, json!({"baz": "boo", "foo": "bar"}));
}

#[test]
fn a06_moving_a_value() {
    let out = ok(
        json!({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}),
        r#"[{ "op": "move", "from": "/foo/waldo", "path": "/qux/thud" }]"#,
    );
    assert_eq!(
        out,
        json!({"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}})
    );
}

#[test]
fn a07_moving_an_array_element() {
    let out = ok(
        json!({"foo": ["all", "grass", "cows", "eat"]}),
        r#"[{ "op": "move", "from": "/foo/1", "path": "/foo/3" }]"#,
    );
    assert_eq!(out, json!({"foo": ["all", "cows", "eat", "grass"]}));
}

#[test]
fn a08_testing_a_value_success() {
    let doc = json!({"baz": "qux", "foo": ["a", 2, "c"]});
    let out = ok(
        doc.clone(),
        r#"[
            { "op": "test", "path": "/baz", "value": "qux" },
            { "op": "test", "path": "/foo/1", "value": 2 }
        ]"#,
    );
    assert_eq!(out, doc);
}

#[test]
fn a09_testing_a_value_error() {
    let message = err(
        json!({"baz": "qux"}),
        r#"[{ "op": "test", "path": "/baz", "value": "bar" }]"#,
    );
    assert!(
        message.starts_with("invalid schema: failed to apply patch: "),
        "{message}"
    );
    assert!(message.contains("test failed"), "{message}");
}

#[test]
fn a10_adding_a_nested_member_object() {
    let out = ok(
        json!({"foo": "bar"}),
        r#"[{ "op": "add", "path": "/child", "value": { "grandchild": { } } }]"#,
    );
    assert_eq!(out, json!({"foo": "bar", "child": {"grandchild": {}}}));
}

#[test]
fn a11_ignoring_unrecognized_elements() {
    let out = ok(
        json!({"foo": "bar"}),
        r#"[{ "op": "add", "path": "/baz", "value": "qux", "xyz": 123 }]"#,
    );
    assert_eq!(out, json!({"foo": "bar", "baz": "qux"}));
}

#[test]
fn a12_adding_to_a_nonexistent_target() {
    let message = err(
        json!({"foo": "bar"}),
        r#"[{ "op": "add", "path": "/baz/bat", "value": "qux" }]"#,
    );
    assert!(
        message.starts_with("invalid schema: failed to apply patch: "),
        "{message}"
    );
    assert!(message.contains("'/baz' does not exist"), "{message}");
}

#[test]
fn a13_invalid_json_patch_document() {
    let message = err(
        json!({"foo": "bar"}),
        r#"[{ "op": "add", "path": "/baz", "value": "qux", "op": "remove" }]"#,
    );
    assert!(
        message.starts_with("invalid schema: invalid patch_json: duplicate key 'op'"),
        "{message}"
    );
}

#[test]
fn a14_escape_ordering() {
    let doc = json!({"/": 9, "~1": 10});
    let out = ok(
        doc.clone(),
        r#"[{"op": "test", "path": "/~01", "value": 10}]"#,
    );
    assert_eq!(out, doc);
}

#[test]
fn a15_comparing_strings_and_numbers() {
    let message = err(
        json!({"/": 9, "~1": 10}),
        r#"[{"op": "test", "path": "/~01", "value": "10"}]"#,
    );
    assert!(message.contains("test failed"), "{message}");
}

#[test]
fn a16_adding_an_array_value() {
    let out = ok(
        json!({"foo": ["bar"]}),
        r#"[{ "op": "add", "path": "/foo/-", "value": ["abc", "def"] }]"#,
    );
    assert_eq!(out, json!({"foo": ["bar", ["abc", "def"]]}));
}

// Engine details beyond Appendix A.

#[test]
fn pointer_escapes_decode_once_left_to_right() {
    let pointer = JsonPointer::parse("/a~1b/m~0n/~01/").expect("valid pointer");
    assert_eq!(pointer.tokens(), ["a/b", "m~n", "~1", ""]);
    assert_eq!(pointer.to_string(), "/a~1b/m~0n/~01/");
    assert!(JsonPointer::parse("").expect("root").is_root());
    assert!(JsonPointer::parse("a/b").is_err());
    assert!(JsonPointer::parse("/a~2").is_err());
    assert!(JsonPointer::parse("/a~").is_err());
}

#[test]
fn rfc6901_examples_resolve() {
    let doc = json!({
        "foo": ["bar", "baz"], "": 0, "a/b": 1, "c%d": 2, "e^f": 3,
        "g|h": 4, "i\\j": 5, "k\"l": 6, " ": 7, "m~n": 8
    });
    let cases = [
        ("/foo/0", json!("bar")),
        ("/", json!(0)),
        ("/a~1b", json!(1)),
        ("/c%d", json!(2)),
        ("/e^f", json!(3)),
        ("/g|h", json!(4)),
        ("/i\\j", json!(5)),
        ("/k\"l", json!(6)),
        ("/ ", json!(7)),
        ("/m~0n", json!(8)),
    ];
    for (path, expected) in cases {
        let patch = json!([{"op": "test", "path": path, "value": expected}]).to_string();
        ok(doc.clone(), &patch);
    }
}

#[test]
fn array_indices_are_strict() {
    let doc = json!({"a": [1, 2, 3]});
    for path in ["/a/01", "/a/-1", "/a/x", "/a/3", "/a/-"] {
        let patch = json!([{"op": "replace", "path": path, "value": 0}]).to_string();
        err(doc.clone(), &patch);
    }
    // `add` may target one past the end, but not further.
    ok(doc.clone(), r#"[{"op":"add","path":"/a/3","value":4}]"#);
    err(doc, r#"[{"op":"add","path":"/a/4","value":4}]"#);
}

#[test]
fn move_into_own_child_fails_and_copy_works() {
    err(
        json!({"a": {"b": 1}}),
        r#"[{"op":"move","from":"/a","path":"/a/c"}]"#,
    );
    let out = ok(
        json!({"a": {"b": 1}}),
        r#"[{"op":"copy","from":"/a","path":"/c"}]"#,
    );
    assert_eq!(out, json!({"a": {"b": 1}, "c": {"b": 1}}));
}

#[test]
fn test_compares_numbers_by_value_and_objects_by_members() {
    assert!(json_equal(&json!(1), &json!(1.0)));
    assert!(json_equal(
        &json!({"a": 1, "b": 2}),
        &json!({"b": 2, "a": 1})
    ));
    assert!(!json_equal(&json!([1, 2]), &json!([2, 1])));
    assert!(!json_equal(&json!(u64::MAX), &json!(u64::MAX - 1)));
    ok(
        json!({"n": 1}),
        r#"[{"op":"test","path":"/n","value":1.0}]"#,
    );
}

#[test]
fn failure_midway_leaves_the_document_untouched() {
    let doc = json!({"a": 1, "list": [1, 2]});
    // The first two operations succeed on the working copy; the third fails.
    let message = err(
        doc.clone(),
        r#"[{"op":"add","path":"/b","value":2},{"op":"remove","path":"/list/0"},
            {"op":"remove","path":"/missing"}]"#,
    );
    assert!(
        message.contains("operation 2 (remove /missing)"),
        "{message}"
    );

    let state = object(doc);
    let before = state.clone();
    apply_patch(
        &state,
        r#"[{"op":"add","path":"/b","value":2},{"op":"replace","path":"/zzz","value":1}]"#,
    )
    .expect_err("second operation fails");
    assert_eq!(state, before);
}

// EventDBX rules (`docs/server.md`, "Patch").

fn eventdbx_error(state: Value, patch: &str) -> String {
    let error = apply_patch(&object(state), patch).expect_err("patch rejected");
    assert_eq!(error.code(), "invalid_schema");
    error.to_string()
}

#[test]
fn eventdbx_error_messages() {
    let state = json!({"name": "a", "address": {"zip": "1"}});
    let cases = [
        (
            "{}",
            "invalid schema: patch_json must be an array of operations",
        ),
        ("[]", "invalid schema: patch must modify at least one path"),
        (
            r#"[{"path":"/a"}]"#,
            "invalid schema: patch entry is missing 'op'",
        ),
        (
            r#"[{"op":"add","value":1}]"#,
            "invalid schema: patch entry is missing 'path'",
        ),
        (
            r#"[{"op":"move","from":"/name","path":"/n"}]"#,
            "invalid schema: unsupported patch operation 'move'",
        ),
        (
            r#"[{"op":"copy","from":"/name","path":"/n"}]"#,
            "invalid schema: unsupported patch operation 'copy'",
        ),
        (
            r#"[{"op":"test","path":"/name","value":"a"}]"#,
            "invalid schema: unsupported patch operation 'test'",
        ),
        (
            r#"[{"op":"frobnicate","path":"/name"}]"#,
            "invalid schema: unsupported patch operation 'frobnicate'",
        ),
        (
            r#"[{"op":"replace","path":"","value":{}}]"#,
            "invalid schema: patch operations targeting the document root are not supported",
        ),
        (
            r#"[{"op":"remove","path":"/name"}]"#,
            "invalid schema: patch removed key 'name' and removals are not supported",
        ),
    ];
    for (patch, expected) in cases {
        assert_eq!(eventdbx_error(state.clone(), patch), expected, "{patch}");
    }
    assert!(eventdbx_error(state.clone(), "[").starts_with("invalid schema: invalid patch_json: "));
    assert!(
        eventdbx_error(state, r#"[{"op":"replace","path":"/missing","value":1}]"#)
            .starts_with("invalid schema: failed to apply patch: ")
    );
}

#[test]
fn payload_holds_whole_post_patch_value_of_touched_top_level_keys() {
    let state = object(json!({
        "status": "created",
        "address": {"street": "1 Main", "zipCode": "1000", "unit": "4"},
        "tags": ["a"],
        "age": 30
    }));
    let outcome = apply_patch(
        &state,
        r#"[
            {"op":"replace","path":"/address/zipCode","value":"2000"},
            {"op":"remove","path":"/address/unit"},
            {"op":"add","path":"/tags/-","value":"b"},
            {"op":"add","path":"/nickname","value":"123"},
            {"op":"replace","path":"/address/street","value":"2 Main"}
        ]"#,
    )
    .expect("patch applies");
    // Order of first touch; untouched keys (`status`, `age`) are absent; types are kept.
    let payload = Value::Object(outcome.event_payload.clone());
    assert_eq!(
        payload.to_string(),
        json!({
            "address": {"street": "2 Main", "zipCode": "2000"},
            "tags": ["a", "b"],
            "nickname": "123"
        })
        .to_string()
    );
    let mut merged = state.clone();
    for (key, value) in outcome.event_payload {
        merged.insert(key, value);
    }
    assert_eq!(outcome.new_state, merged);
    assert_eq!(outcome.new_state["age"], json!(30));
}

#[test]
fn a_key_added_then_removed_is_neither_state_nor_payload() {
    let state = object(json!({"a": 1}));
    let outcome = apply_patch(
        &state,
        r#"[{"op":"add","path":"/tmp","value":1},{"op":"remove","path":"/tmp"},
            {"op":"replace","path":"/a","value":2}]"#,
    )
    .expect("patch applies");
    assert_eq!(Value::Object(outcome.event_payload), json!({"a": 2}));
    assert_eq!(Value::Object(outcome.new_state), json!({"a": 2}));
}

#[test]
fn escaped_top_level_keys_are_recorded_unescaped() {
    let state = object(json!({"a/b": {"x": 1}, "m~n": 0}));
    let outcome = apply_patch(
        &state,
        r#"[{"op":"replace","path":"/a~1b/x","value":2},{"op":"replace","path":"/m~0n","value":1}]"#,
    )
    .expect("patch applies");
    assert_eq!(
        Value::Object(outcome.event_payload),
        json!({"a/b": {"x": 2}, "m~n": 1})
    );
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z~/]{0,4}".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z~/]{0,3}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn pointer_display_round_trips(tokens in prop::collection::vec("[a-z~/0-9]{0,4}", 0..5)) {
        let text: String = tokens
            .iter()
            .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
            .collect();
        let pointer = JsonPointer::parse(&text).expect("valid pointer");
        prop_assert_eq!(pointer.tokens(), tokens.as_slice());
        prop_assert_eq!(pointer.to_string(), text);
    }

    #[test]
    fn replace_then_test_round_trips_and_failure_is_atomic(
        state in prop::collection::btree_map("[a-z~/]{1,3}", json_value(), 1..5),
        value in json_value(),
    ) {
        let state: Map<String, Value> = state.into_iter().collect();
        let key = state.keys().next().expect("non-empty").clone();
        let pointer = format!("/{}", key.replace('~', "~0").replace('/', "~1"));
        let patch = json!([
            {"op": "replace", "path": pointer, "value": value},
        ]).to_string();
        let outcome = apply_patch(&state, &patch).expect("replace of an existing key applies");
        prop_assert_eq!(&outcome.event_payload[&key], &value);
        prop_assert_eq!(outcome.new_state.len(), state.len());

        let before = state.clone();
        let failing = json!([
            {"op": "replace", "path": pointer, "value": value},
            {"op": "remove", "path": "/this-key-is-absent"},
        ]).to_string();
        prop_assert!(apply_patch(&state, &failing).is_err());
        prop_assert_eq!(state, before);
    }
}
