//! The `.dbx` schema language compiled to schema maps.

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
        (
            "aggregate p { event e {} } aggregate p { event e {} }",
            "aggregate p is defined more than once",
        ),
        (
            "aggregate p { field f { type = \"text\" } field f { type = \"text\" } event e {} }",
            "field f is defined more than once in aggregate p",
        ),
        (
            "aggregate p { event e {} event e {} }",
            "event e is defined more than once in aggregate p",
        ),
        (
            "aggregate p { field f { hidden = true } event e {} }",
            "field f in aggregate p must define type",
        ),
        (
            "aggregate p { field f { type = \" \" } event e {} }",
            "field.type cannot be empty",
        ),
        (
            "aggregate p { field f { type = 1 } event e {} }",
            "field.type must be a JSON string",
        ),
        (
            "aggregate \"\" { event e {} }",
            "aggregate name cannot be empty",
        ),
        (
            "aggregate p { }",
            "aggregate p must define at least one event",
        ),
        (
            "aggregate p { locked = 1 event e {} }",
            "aggregate.locked must be a JSON boolean",
        ),
        (
            "aggregate p { field f { type = \"text\" hidden = \"yes\" } event e {} }",
            "field.hidden must be a JSON boolean",
        ),
        (
            "aggregate p { event e { note = 5 } }",
            "event.note must be a JSON string or null",
        ),
        (
            "aggregate p { hidden_fields = [1] event e {} }",
            "aggregate.hidden_fields must be a JSON array of strings",
        ),
        (
            "aggregate p { field_locks = [\"\"] event e {} }",
            "aggregate.field_locks entries cannot be empty",
        ),
        (
            "aggregate p { event e { fields = \"a\" } }",
            "event.fields must be a JSON array of strings",
        ),
        (
            "aggregate p { snapshot_threshold = -1 event e {} }",
            "aggregate.snapshot_threshold must be a non-negative integer or null",
        ),
        (
            "aggregate p { field f { type = \"text\" rules = [] } event e {} }",
            "field.rules must be a JSON object",
        ),
        (
            "aggregate p { field f { type = \"intger\" } event e {} }",
            "invalid column type 'intger'",
        ),
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
