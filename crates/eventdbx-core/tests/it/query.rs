//! Filter, sort and cursor languages (`02-server.md` §8.3–§8.6).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use eventdbx_core::query::cursor::{
    AggregateCursor, EventCursor, KeysetCursor, ListOrder, PagePlan,
};
use eventdbx_core::query::filter::{CompareOp, Expr, Filter, Literal, NoAggregateTypes, Predicate};
use eventdbx_core::query::sort::{SortDirective, SortField, SortOrder, SortSpec};
use eventdbx_core::query::{AggregateView, EventView, Scope};
use eventdbx_core::CoreError;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// An owned aggregate the tests build views from.
#[derive(Debug, Clone)]
struct Agg {
    t: String,
    id: String,
    version: u64,
    archived: bool,
    created_at: Option<i64>,
    updated_at: Option<i64>,
    state: Map<String, Value>,
    ext: Map<String, Value>,
}

impl Agg {
    fn new(t: &str, id: &str, state: Value) -> Agg {
        Agg {
            t: t.into(),
            id: id.into(),
            version: 1,
            archived: false,
            created_at: Some(1000),
            updated_at: Some(2000),
            state: state.as_object().cloned().unwrap(),
            ext: Map::new(),
        }
    }

    fn view(&self) -> AggregateView<'_> {
        AggregateView {
            aggregate_type: &self.t,
            aggregate_id: &self.id,
            version: self.version,
            archived: self.archived,
            created_at: self.created_at,
            updated_at: self.updated_at,
            merkle_root: "ab",
            state: &self.state,
            extensions: &self.ext,
        }
    }
}

fn filter_err(text: &str) -> String {
    match Filter::parse(text) {
        Err(e @ CoreError::InvalidSchema(_)) => {
            assert_eq!(e.code(), "invalid_schema");
            e.to_string()
        }
        other => panic!("{text:?} gave {other:?}"),
    }
}

fn sort_err(text: &str) -> String {
    SortSpec::parse(text).expect_err(text).to_string()
}

fn cursor_err(text: &str) -> String {
    match AggregateCursor::decode(text) {
        Err(e @ CoreError::InvalidCursor(_)) => e.to_string(),
        other => panic!("{text:?} gave {other:?}"),
    }
}

fn matches(filter: &str, agg: &Agg) -> bool {
    Filter::parse(filter)
        .unwrap()
        .matches_aggregate(&agg.view(), &NoAggregateTypes)
}

// ----- filter: parsing, errors, evaluation -------------------------------------------------

#[test]
fn filter_error_messages_are_the_spec_ones() {
    let cases = [
        ("", "filter cannot be empty"),
        ("   ", "filter cannot be empty"),
        ("a ! 1", "expected '=' after '!'"),
        ("a = #", "unexpected character '#'"),
        ("a = 'abc", "unterminated string literal"),
        ("a = 'abc\\", "unterminated escape sequence"),
        ("= 1", "expected field name in comparison"),
        ("a 1", "expected comparison operator"),
        ("a IN 1", "expected '['"),
        ("a IN [1 2]", "expected ']'"),
        ("(a = 1", "expected ')'"),
        ("a = AND", "invalid value literal"),
        ("a = 1.2.3", "invalid number: 1.2.3"),
        ("a = -", "invalid number: -"),
        ("a = 1 AND", "expected field name in comparison"),
        ("a =", "unexpected end of filter"),
        ("a = 1 b = 2", "unexpected tokens after expression"),
        ("a = 1)", "unexpected tokens after expression"),
        ("a-b = 1", "invalid number: -"),
        ("and = 1", "expected field name in comparison"),
    ];
    for (text, detail) in cases {
        assert_eq!(
            filter_err(text),
            format!("invalid schema: invalid filter expression: {detail}"),
            "{text:?}"
        );
    }
}

#[test]
fn filter_spec_examples_parse_and_evaluate() {
    let mut agg = Agg::new(
        "person",
        "p-1",
        json!({"status": "active", "age": 30, "code": "123", "n": 123, "tags": ["a", "b"],
               "address": {"city": "Oslo"}, "nothing": null, "last_name": "Smith"}),
    );
    agg.ext
        .insert("@trace".into(), json!({"correlation_id": "c-1"}));
    agg.ext.insert("@policy-rule".into(), json!("strict"));
    agg.ext.insert("in".into(), json!(1));
    let yes = [
        "status = 'active'",
        "status = \"active\"",
        "status = active",
        "STATUS != 'x' or status = 'active'",
        "age > 20 AND age < 40",
        "age >= 30 and age <= 30",
        "age <> 31",
        "n = 123",
        "code = '123'",
        "NOT code = 123",
        "code NOT IN [123]",
        "status IN ['x', 'active',]",
        "status LIKE 'act%'",
        "status LIKE 'a_t*?e'",
        "status NOT LIKE 'x%'",
        "address.city = 'Oslo'",
        "tags.1 = 'b'",
        "nothing = null",
        "missing != null",
        "NOT missing = 'a'",
        "extensions.@trace.correlation_id = 'c-1'",
        "@trace.correlation_id = 'c-1'",
        "`@policy-rule` = 'strict'",
        "`in` = 1",
        "aggregate_type = 'person' AND aggregateId = 'p-1'",
        "version = 1 AND archived = false",
        "created_at = 1000 AND updatedAt > 1999",
        "merkle_root = 'ab'",
        "(status = 'x' OR age = 30) AND NOT NOT age = 30",
    ];
    for f in yes {
        assert!(matches(f, &agg), "{f} should match");
    }
    let no = [
        "code = 123",
        "n = '123'",
        "missing != 'a'",
        "missing = null",
        "missing IN []",
        "status IN []",
        "age > '20'",
        "status > 1",
        "address = 'Oslo'",
        "tags != null AND tags = null",
        "age LIKE '3%'",
        "status LIKE 'act'",
        "status LIKE 'ACT%'",
        "address.city.x = 'Oslo'",
        "tags.x = 'a'",
        "nothing != null",
    ];
    for f in no {
        assert!(!matches(f, &agg), "{f} should not match");
    }
    // Objects and arrays equal nothing, so `!=` holds.
    assert!(matches("address != 'x'", &agg));
}

#[test]
fn like_escape_matches_wildcards_literally() {
    let agg = Agg::new("t", "1", json!({"s": "50%_off", "p": "a\\b"}));
    assert!(matches("s LIKE '50!%!_off' ESCAPE '!'", &agg));
    assert!(matches("s LIKE '50!%%' escape '!'", &agg));
    // An escape before an ordinary character stands for itself.
    assert!(!matches("s LIKE '5!0%' ESCAPE '!'", &agg));
    let bang = Agg::new("t", "1", json!({"s": "5!0x"}));
    assert!(matches("s LIKE '5!0%' ESCAPE '!'", &bang));
    assert!(!matches("s LIKE '50!%!_of' ESCAPE '!'", &agg));
    assert!(!Filter::parse("s LIKE 'x!%' ESCAPE '!'")
        .unwrap()
        .matches_aggregate(
            &Agg::new("t", "1", json!({"s": "xy"})).view(),
            &NoAggregateTypes
        ));
    // `escape` stays a field name everywhere else.
    let e = Agg::new("t", "1", json!({"escape": 1}));
    assert!(matches("escape = 1", &e));
    assert!(Filter::parse("s LIKE 'x' ESCAPE 'ab'").is_err());
}

#[test]
fn readme_filter_uses_type_qualified_paths() {
    let types: BTreeSet<String> = ["person".to_owned(), "order".to_owned()].into();
    let f = Filter::parse("person.archived = false AND person.last_name LIKE 'S%'").unwrap();
    let mut smith = Agg::new("person", "p-1", json!({"last_name": "Smith"}));
    let jones = Agg::new("person", "p-2", json!({"last_name": "Jones"}));
    let order = Agg::new(
        "order",
        "o-1",
        json!({"last_name": "Smith", "person": {"archived": false}}),
    );
    assert!(f.matches_aggregate(&smith.view(), &types));
    assert!(!f.matches_aggregate(&jones.view(), &types));
    assert!(!f.matches_aggregate(&order.view(), &types));
    smith.archived = true;
    assert!(!f.matches_aggregate(&smith.view(), &types));
    assert!(f.mentions_archived(&types));
    assert!(!f.mentions_archived(&NoAggregateTypes));
    assert!(Filter::parse("ARCHIVED = true")
        .unwrap()
        .mentions_archived(&NoAggregateTypes));
    // Without the type known, `person.archived` is a state path (the reference meaning).
    let legacy = Agg::new(
        "order",
        "o-1",
        json!({"person": {"archived": false, "last_name": "S"}}),
    );
    assert!(f.matches_aggregate(&legacy.view(), &NoAggregateTypes));
    // On another type a qualified field is missing: only `!= null` holds.
    let ne = Filter::parse("person.last_name != null").unwrap();
    assert!(ne.matches_aggregate(&order.view(), &types));
}

#[test]
fn event_filters_use_event_fields() {
    let payload = json!({"amount": 5, "note": "payload-note"});
    let ext = json!({"@actor": "jane"});
    let event = EventView {
        aggregate_type: "order",
        aggregate_id: "o-1",
        event_type: "order_created",
        version: 3,
        event_id: 7398164318138368,
        created_at: 1234,
        merkle_root: "mr",
        hash: "h",
        note: Some("imported"),
        issued_by: Some(("ops", "jane")),
        extensions: Some(&ext),
        payload: &payload,
    };
    let yes = [
        "event_type = 'order_created' AND eventType = order_created",
        "version = 3 AND aggregate_id = 'o-1' AND aggregateType = 'order'",
        "event_id = '7398164318138368' AND metadata.eventId = '7398164318138368'",
        "created_at = 1234 AND metadata.created_at = 1234",
        "hash = 'h' AND merkle_root = 'mr'",
        "note = 'imported' AND metadata.note = 'imported'",
        "metadata.issued_by.group = 'ops' AND metadata.issuedBy.user = 'jane'",
        "extensions.@actor = 'jane' AND @actor = 'jane'",
        "payload.amount = 5 AND amount >= 5",
        "payload.note = 'payload-note'",
    ];
    for f in yes {
        assert!(Filter::parse(f).unwrap().matches_event(&event), "{f}");
    }
    assert!(!Filter::parse("event_id = 7398164318138368")
        .unwrap()
        .matches_event(&event));
    assert!(!Filter::parse("metadata.amount = 5")
        .unwrap()
        .matches_event(&event));
}

fn arb_literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        ".{0,6}".prop_map(Literal::String),
        any::<f64>()
            .prop_filter("finite", |n| n.is_finite())
            .prop_map(Literal::Number),
        (-1000i32..1000).prop_map(|n| Literal::Number(f64::from(n) / 8.0)),
        any::<bool>().prop_map(Literal::Bool),
        Just(Literal::Null),
    ]
}

fn arb_field() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_@$][a-z0-9_.@$]{0,8}",
        ".{1,6}",
        Just("and".to_owned()),
        Just("NULL".to_owned()),
        Just("escape".to_owned()),
    ]
}

fn arb_op() -> impl Strategy<Value = CompareOp> {
    prop_oneof![
        Just(CompareOp::Eq),
        Just(CompareOp::Ne),
        Just(CompareOp::Gt),
        Just(CompareOp::Lt),
        Just(CompareOp::Ge),
        Just(CompareOp::Le),
    ]
}

fn arb_expr() -> impl Strategy<Value = Expr> {
    let predicate = prop_oneof![
        (arb_op(), arb_literal()).prop_map(|(op, v)| Predicate::Compare(op, v)),
        (arb_literal(), proptest::option::of(any::<char>()))
            .prop_map(|(pattern, escape)| Predicate::Like { pattern, escape }),
        proptest::collection::vec(arb_literal(), 0..4).prop_map(Predicate::In),
    ];
    let leaf =
        (arb_field(), predicate).prop_map(|(field, predicate)| Expr::Compare { field, predicate });
    leaf.prop_recursive(5, 32, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|a| Expr::Not(Box::new(a))),
        ]
    })
}

proptest! {
    #[test]
    fn filter_print_parse_round_trip(expr in arb_expr()) {
        let text = expr.to_string();
        let parsed = Filter::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(parsed.expr, expr, "{}", text);
    }

    #[test]
    fn filter_parser_never_panics(text in ".{0,40}") {
        let _ = Filter::parse(&text);
    }
}

/// A tiny reference model: one field `x`, a predicate, and the §8.6 rules written directly.
#[derive(Debug, Clone)]
enum Simple {
    Cmp(CompareOp, Literal),
    In(Vec<Literal>),
    Like(String),
}

fn model_eq(v: &Value, l: &Literal) -> bool {
    match (v, l) {
        (Value::String(a), Literal::String(b)) => a == b,
        (Value::Number(a), Literal::Number(b)) => (a.as_f64().unwrap() - b).abs() <= f64::EPSILON,
        (Value::Bool(a), Literal::Bool(b)) => a == b,
        (Value::Null, Literal::Null) => true,
        _ => false,
    }
}

fn model_like(s: &str, p: &str) -> bool {
    // Recursive definition, obviously correct and slow.
    fn go(s: &[char], p: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('%' | '*', rest)) => (0..=s.len()).any(|i| go(&s[i..], rest)),
            Some(('_' | '?', rest)) => !s.is_empty() && go(&s[1..], rest),
            Some((c, rest)) => s.first() == Some(c) && go(&s[1..], rest),
        }
    }
    go(
        &s.chars().collect::<Vec<_>>(),
        &p.chars().collect::<Vec<_>>(),
    )
}

fn model(value: Option<&Value>, p: &Simple) -> bool {
    let Some(v) = value else {
        return matches!(p, Simple::Cmp(CompareOp::Ne, Literal::Null));
    };
    match p {
        Simple::Cmp(CompareOp::Eq, l) => model_eq(v, l),
        Simple::Cmp(CompareOp::Ne, l) => !model_eq(v, l),
        Simple::Cmp(op, Literal::Number(b)) if v.is_number() => {
            let a = v.as_f64().unwrap();
            match op {
                CompareOp::Gt => a > *b,
                CompareOp::Lt => a < *b,
                CompareOp::Ge => a >= *b,
                _ => a <= *b,
            }
        }
        Simple::Cmp(..) => false,
        Simple::In(list) => list.iter().any(|l| model_eq(v, l)),
        Simple::Like(pat) => v.as_str().is_some_and(|s| model_like(s, pat)),
    }
}

fn arb_small_literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        "[ab1]{0,2}".prop_map(Literal::String),
        (0i32..3).prop_map(|n| Literal::Number(f64::from(n))),
        any::<bool>().prop_map(Literal::Bool),
        Just(Literal::Null),
    ]
}

fn arb_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        "[ab1]{0,3}".prop_map(|s| Some(Value::from(s))),
        (0i32..3).prop_map(|n| Some(Value::from(n))),
        any::<bool>().prop_map(|b| Some(Value::from(b))),
        Just(Some(Value::Null)),
        Just(Some(json!({"a": 1}))),
        Just(Some(json!([1]))),
    ]
}

fn arb_simple() -> impl Strategy<Value = Simple> {
    prop_oneof![
        (arb_op(), arb_small_literal()).prop_map(|(o, l)| Simple::Cmp(o, l)),
        proptest::collection::vec(arb_small_literal(), 0..3).prop_map(Simple::In),
        "[ab1%_*?]{0,4}".prop_map(Simple::Like),
    ]
}

fn simple_expr(p: &Simple) -> Expr {
    let predicate = match p {
        Simple::Cmp(o, l) => Predicate::Compare(*o, l.clone()),
        Simple::In(l) => Predicate::In(l.clone()),
        Simple::Like(s) => Predicate::Like {
            pattern: Literal::String(s.clone()),
            escape: None,
        },
    };
    Expr::Compare {
        field: "x".into(),
        predicate,
    }
}

proptest! {
    #[test]
    fn evaluation_agrees_with_the_model(
        value in arb_value(),
        p in arb_simple(),
        q in arb_simple(),
        combine in 0u8..3,
    ) {
        let mut state = json!({});
        if let Some(v) = &value {
            state["x"] = v.clone();
        }
        let agg = Agg::new("t", "1", state);
        let (a, b) = (simple_expr(&p), simple_expr(&q));
        let (ma, mb) = (model(value.as_ref(), &p), model(value.as_ref(), &q));
        let (expr, expected) = match combine {
            0 => (Expr::And(Box::new(a), Box::new(b)), ma && mb),
            1 => (Expr::Or(Box::new(a), Box::new(b)), ma || mb),
            _ => (Expr::Not(Box::new(a)), !ma),
        };
        // Through text, so the parser is part of what the model checks.
        let filter = Filter::parse(&expr.to_string()).unwrap();
        prop_assert_eq!(filter.matches_aggregate(&agg.view(), &NoAggregateTypes), expected, "{}", expr);
    }
}

// ----- sort -------------------------------------------------------------------------------

#[test]
fn sort_grammar_and_errors() {
    let s = SortSpec::parse(" CreatedAt : DESC , aggregateid ").unwrap();
    assert_eq!(s.to_string(), "created_at:desc,aggregate_id:asc");
    assert_eq!(
        SortSpec::parse("version").unwrap().to_string(),
        "version:asc"
    );
    assert_eq!(
        SortSpec::parse("created_at:desc,aggregate_id:asc")
            .unwrap()
            .effective(),
        vec![
            SortDirective {
                field: SortField::CreatedAt,
                order: SortOrder::Desc
            },
            SortDirective {
                field: SortField::AggregateId,
                order: SortOrder::Asc
            },
            SortDirective {
                field: SortField::AggregateType,
                order: SortOrder::Asc
            },
        ]
    );
    let cases = [
        ("", "sort specification cannot be empty"),
        ("  ", "sort specification cannot be empty"),
        ("created_at,", "sort segments cannot be empty"),
        (":asc", "sort field cannot be empty"),
        ("name", "unsupported aggregate sort field 'name'"),
        (
            "created_at:up",
            "invalid sort order 'up' (expected 'asc' or 'desc')",
        ),
        (
            "created_at:asc:x",
            "sort specification contains too many ':' separators",
        ),
    ];
    for (text, detail) in cases {
        assert_eq!(
            sort_err(text),
            format!("invalid schema: invalid sort specification: {detail}")
        );
    }
}

fn arb_sort() -> impl Strategy<Value = SortSpec> {
    let field = proptest::sample::select(SortField::ALL.to_vec());
    let order = prop_oneof![Just(SortOrder::Asc), Just(SortOrder::Desc)];
    proptest::collection::vec((field, order), 1..4).prop_map(|ds| {
        SortSpec::new(
            ds.into_iter()
                .map(|(field, order)| SortDirective { field, order })
                .collect(),
        )
        .unwrap()
    })
}

proptest! {
    #[test]
    fn sort_print_parse_round_trip(sort in arb_sort()) {
        prop_assert_eq!(SortSpec::parse(&sort.to_string()).unwrap(), sort);
    }
}

// ----- cursors ----------------------------------------------------------------------------

#[test]
fn cursor_error_messages_are_the_spec_ones() {
    let cases = [
        ("", "cursor cannot be empty"),
        ("abc", "cursor is incomplete"),
        ("x:t:1", "unknown cursor segment 'x'"),
        ("a::1", "cursor aggregate_type cannot be empty"),
        ("a:t", "cursor missing aggregate_id"),
        ("a:t:", "cursor aggregate_id cannot be empty"),
        ("a:t:1:2", "cursor has too many segments"),
        ("ts:", "timestamp cursor missing kind"),
        ("ts:created_at:asc:a", "timestamp cursor missing timestamp"),
        (
            "ts:created_at:asc:a:5:t",
            "timestamp cursor missing aggregate_id",
        ),
        (
            "ts:created_at:asc:a:5::1",
            "timestamp cursor aggregate_type cannot be empty",
        ),
        (
            "ts:created_at:asc:a:5:t:",
            "timestamp cursor aggregate_id cannot be empty",
        ),
        (
            "ts:born:asc:a:5:t:1",
            "unknown timestamp cursor kind 'born'",
        ),
        (
            "ts:created:up:a:5:t:1",
            "timestamp cursor order must be 'asc' or 'desc', found 'up'",
        ),
        (
            "ts:created:asc:a:x5:t:1",
            "timestamp cursor contains invalid timestamp 'x5'",
        ),
        (
            "ts:created:asc:a:5:t:1:9",
            "timestamp cursor has too many segments",
        ),
        ("k:!!", "malformed keyset cursor"),
    ];
    for (text, detail) in cases {
        assert_eq!(
            cursor_err(text),
            format!("invalid cursor: {detail}"),
            "{text:?}"
        );
    }
    assert_eq!(AggregateCursor::parse("  ").unwrap(), None);
    let ev = |t: &str| EventCursor::decode(t).unwrap_err().to_string();
    assert_eq!(ev("a:t:1"), "invalid cursor: cursor missing version");
    assert_eq!(
        ev("a:t:1:x"),
        "invalid cursor: cursor version 'x' is not a number"
    );
    assert_eq!(
        ev("a:t:1:2:3"),
        "invalid cursor: cursor has too many segments"
    );
    let c = EventCursor::decode(" r:order:o-1:7 ").unwrap();
    assert_eq!((c.archived, c.version), (true, 7));
    assert_eq!(c.to_string(), "r:order:o-1:7");
    assert!(c.check_scope("order", "o-1").is_ok());
    assert_eq!(
        c.check_scope("order", "o-10").unwrap_err().to_string(),
        "invalid cursor: cursor does not match the requested event scope"
    );
}

#[test]
fn cursor_forms_from_the_spec_decode() {
    let natural = AggregateCursor::decode("archived:person:p-1").unwrap();
    assert_eq!(natural.to_string(), "r:person:p-1");
    let ts = AggregateCursor::decode("ts:updated:desc:a:1700000000000:person:p-1").unwrap();
    assert_eq!(
        ts.to_string(),
        "ts:updated_at:desc:a:1700000000000:person:p-1"
    );
    assert!(matches!(
        AggregateCursor::decode("ts:person:p-1").unwrap(),
        AggregateCursor::Shorthand { .. }
    ));
}

fn ident() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,6}"
}

fn arb_cursor() -> impl Strategy<Value = AggregateCursor> {
    let ts_field = prop_oneof![Just(SortField::CreatedAt), Just(SortField::UpdatedAt)];
    let order = prop_oneof![Just(SortOrder::Asc), Just(SortOrder::Desc)];
    prop_oneof![
        (any::<bool>(), ident(), ident()).prop_map(|(archived, aggregate_type, aggregate_id)| {
            AggregateCursor::Natural {
                archived,
                aggregate_type,
                aggregate_id,
            }
        }),
        (
            ts_field,
            order,
            any::<bool>(),
            any::<i64>(),
            ident(),
            ident()
        )
            .prop_map(
                |(field, order, archived, timestamp_ms, aggregate_type, aggregate_id)| {
                    AggregateCursor::Timestamp {
                        field,
                        order,
                        archived,
                        timestamp_ms,
                        aggregate_type,
                        aggregate_id,
                    }
                }
            ),
        (ident(), ident()).prop_map(
            |(aggregate_type, aggregate_id)| AggregateCursor::Shorthand {
                aggregate_type,
                aggregate_id
            }
        ),
        (arb_sort(), arb_agg()).prop_map(|(sort, agg)| {
            AggregateCursor::Keyset(KeysetCursor::after(&sort, &agg.view()))
        }),
    ]
}

proptest! {
    #[test]
    fn cursor_encode_decode_round_trip(cursor in arb_cursor()) {
        let text = cursor.to_string();
        prop_assert_eq!(AggregateCursor::decode(&text).unwrap(), cursor);
    }

    #[test]
    fn event_cursor_round_trip(archived in any::<bool>(), t in ident(), id in ident(), v in any::<u64>()) {
        let c = EventCursor::after(&t, &id, archived, v);
        prop_assert_eq!(EventCursor::decode(&c.to_string()).unwrap(), c);
    }

    #[test]
    fn cursor_decoder_never_panics(text in "(k:|ts:|a:)?.{0,30}") {
        let _ = AggregateCursor::decode(&text);
        let _ = EventCursor::decode(&text);
    }
}

fn none(_: &str, _: &str) -> Option<AggregateView<'static>> {
    None
}

#[test]
fn mismatched_cursors_are_refused() {
    let single = SortSpec::parse("created_at:desc").unwrap();
    let multi = SortSpec::parse("created_at:desc,aggregate_id:asc").unwrap();
    let other = SortSpec::parse("version:asc").unwrap();
    let plan_err = |sort: Option<&SortSpec>, cursor: &str, scope: Scope| {
        let c = AggregateCursor::decode(cursor).unwrap();
        PagePlan::new(sort, Some(&c), scope, none)
            .unwrap_err()
            .to_string()
    };
    let agg = Agg::new("person", "p-1", json!({}));
    let k_multi = AggregateCursor::Keyset(KeysetCursor::after(&multi, &agg.view())).to_string();
    let cases = [
        (
            Some(&single),
            "a:person:p-1",
            Scope::Active,
            "timestamp cursors must use the 'ts:' prefix (ts:<field>:<order>:...)",
        ),
        (
            Some(&single),
            k_multi.as_str(),
            Scope::Active,
            "timestamp cursors must use the 'ts:' prefix (ts:<field>:<order>:...)",
        ),
        (
            Some(&single),
            "ts:updated_at:desc:a:5:t:1",
            Scope::Active,
            "timestamp cursor targets 'updated_at' but sort is 'created_at'",
        ),
        (
            Some(&single),
            "ts:created_at:asc:a:5:t:1",
            Scope::Active,
            "timestamp cursor order does not match the requested sort direction",
        ),
        (
            Some(&single),
            "ts:created_at:desc:r:5:t:1",
            Scope::Active,
            "timestamp cursor must reference active aggregates in this scope",
        ),
        (
            Some(&single),
            "ts:created_at:desc:a:5:t:1",
            Scope::ArchivedOnly,
            "timestamp cursor must reference archived aggregates in this scope",
        ),
        (
            None,
            "r:t:1",
            Scope::Active,
            "cursor points to archived aggregates but scope uses active records",
        ),
        (
            None,
            "a:t:1",
            Scope::ArchivedOnly,
            "archived listings require archived cursor values",
        ),
        (
            Some(&other),
            k_multi.as_str(),
            Scope::Active,
            "cursor does not match the requested sort",
        ),
        (
            Some(&multi),
            "ts:person:p-9",
            Scope::Active,
            "cursor references unknown aggregate 'person:p-9'",
        ),
        (
            Some(&other),
            "ts:person:p-9",
            Scope::Active,
            "timestamp cursor shorthand requires a sort led by created_at or updated_at",
        ),
    ];
    for (sort, cursor, scope, detail) in cases {
        assert_eq!(
            plan_err(sort, cursor, scope),
            format!("invalid cursor: {detail}"),
            "{cursor}"
        );
    }
    let mut no_ts = Agg::new("person", "p-1", json!({}));
    no_ts.created_at = None;
    let c = AggregateCursor::decode("ts:person:p-1").unwrap();
    let e = PagePlan::new(Some(&multi), Some(&c), Scope::Active, |_, _| {
        Some(no_ts.view())
    })
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid cursor: aggregate person:p-1 missing created_at timestamp"
    );
    // The same order written differently is the same sort.
    let long = SortSpec::parse("created_at:desc,aggregate_id:asc,aggregate_type:asc").unwrap();
    let k = AggregateCursor::decode(&k_multi).unwrap();
    assert!(PagePlan::new(Some(&long), Some(&k), Scope::Active, none).is_ok());
}

// ----- keyset paging ----------------------------------------------------------------------

fn arb_agg() -> impl Strategy<Value = Agg> {
    (
        "[ab]",
        "[a-c0-9-]{1,3}",
        0u64..4,
        any::<bool>(),
        proptest::option::of(0i64..4),
        proptest::option::of(0i64..4),
    )
        .prop_map(|(t, id, version, archived, created_at, updated_at)| Agg {
            t,
            id,
            version,
            archived,
            created_at,
            updated_at,
            state: Map::new(),
            ext: Map::new(),
        })
}

fn arb_scope() -> impl Strategy<Value = Scope> {
    prop_oneof![
        Just(Scope::Active),
        Just(Scope::ActiveAndArchived),
        Just(Scope::ArchivedOnly)
    ]
}

/// One page as a store would compute it.
fn page(
    store: &[Agg],
    sort: Option<&SortSpec>,
    cursor: Option<&str>,
    scope: Scope,
    take: usize,
) -> (Vec<Agg>, Option<String>) {
    let cursor = cursor.and_then(|c| AggregateCursor::parse(c).unwrap());
    let plan = PagePlan::new(sort, cursor.as_ref(), scope, |t, id| {
        store.iter().find(|a| a.t == t && a.id == id).map(Agg::view)
    })
    .unwrap();
    let mut items: Vec<(eventdbx_core::query::sort::SortKey, &Agg)> = store
        .iter()
        .filter(|a| scope.contains(a.archived))
        .map(|a| (plan.order.key_of(&a.view()), a))
        .filter(|(k, _)| plan.is_after(k))
        .collect();
    items.sort_by(|x, y| plan.order.compare(&x.0, &y.0));
    let items: Vec<Agg> = items
        .into_iter()
        .take(take)
        .map(|(_, a)| a.clone())
        .collect();
    let next = (items.len() == take && take > 0)
        .then(|| plan.order.cursor_after(&items[take - 1].view()).to_string());
    (items, next)
}

fn dedup(aggs: Vec<Agg>) -> Vec<Agg> {
    let mut seen = BTreeSet::new();
    aggs.into_iter()
        .filter(|a| seen.insert((a.t.clone(), a.id.clone())))
        .collect()
}

proptest! {
    #[test]
    fn keyset_paging_sees_every_item_once(
        initial in proptest::collection::vec(arb_agg(), 0..25),
        inserts in proptest::collection::vec(arb_agg(), 0..25),
        sort in proptest::option::of(arb_sort()),
        scope in arb_scope(),
        takes in proptest::collection::vec(1usize..5, 1..40),
        use_shorthand in any::<bool>(),
    ) {
        let mut store = dedup(initial);
        let original: BTreeSet<(String, String)> = store
            .iter()
            .filter(|a| scope.contains(a.archived))
            .map(|a| (a.t.clone(), a.id.clone()))
            .collect();
        let mut inserts = inserts.into_iter();
        let mut seen: Vec<(String, String)> = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        let shorthand_ok = sort.as_ref().is_some_and(|s| s.leading_timestamp().is_some());
        loop {
            let take = takes[pages % takes.len()];
            let (items, next) = page(&store, sort.as_ref(), cursor.as_deref(), scope, take);
            seen.extend(items.iter().map(|a| (a.t.clone(), a.id.clone())));
            pages += 1;
            prop_assert!(pages < 200, "paging does not end");
            let Some(next) = next else { break };
            // The shorthand resumes after the named aggregate; it needs that aggregate to
            // have the leading timestamp.
            let last = items.last().unwrap();
            let lead_known = sort.as_ref().and_then(|s| s.leading_timestamp()).is_some_and(|f| match f {
                SortField::CreatedAt => last.created_at.is_some(),
                _ => last.updated_at.is_some(),
            });
            cursor = Some(if use_shorthand && shorthand_ok && lead_known {
                format!("ts:{}:{}", last.t, last.id)
            } else {
                next
            });
            // Writes between pages: new aggregates only (keys present throughout never move).
            if let Some(new) = inserts.next() {
                if !store.iter().any(|a| a.t == new.t && a.id == new.id) {
                    store.push(new);
                }
            }
        }
        let unique: BTreeSet<_> = seen.iter().cloned().collect();
        prop_assert_eq!(unique.len(), seen.len(), "an item was repeated");
        prop_assert!(original.is_subset(&unique), "an item present throughout was skipped");
    }
}

#[test]
fn readme_sort_pages_with_cursors() {
    let sort = SortSpec::parse("created_at:desc,aggregate_id:asc").unwrap();
    let mut store = Vec::new();
    for (i, id) in ["p-1", "p-2", "p-3", "p-4"].iter().enumerate() {
        let mut a = Agg::new("person", id, json!({}));
        a.created_at = Some(if i < 2 { 10 } else { 20 });
        store.push(a);
    }
    let (first, next) = page(&store, Some(&sort), None, Scope::Active, 2);
    let ids: Vec<&str> = first.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["p-3", "p-4"]);
    let next = next.unwrap();
    assert!(next.starts_with("k:"), "{next}");
    let (second, _) = page(&store, Some(&sort), Some(&next), Scope::Active, 2);
    let ids: Vec<&str> = second.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["p-1", "p-2"]);
    // The shorthand names the last item of the first page and gives the same second page.
    let (shorthand, _) = page(&store, Some(&sort), Some("ts:person:p-4"), Scope::Active, 2);
    assert_eq!(shorthand.len(), 2);
    assert_eq!(shorthand[0].id, "p-1");
    // A single timestamp sort emits the 7-part form, and a `k:` cursor implies its own sort.
    let single = SortSpec::parse("created_at:desc").unwrap();
    let (_, next) = page(&store, Some(&single), None, Scope::Active, 1);
    assert_eq!(next.as_deref(), Some("ts:created_at:desc:a:20:person:p-4"));
    let k = AggregateCursor::decode(&page(&store, Some(&sort), None, Scope::Active, 2).1.unwrap())
        .unwrap();
    let plan = PagePlan::new(None, Some(&k), Scope::Active, none).unwrap();
    assert_eq!(plan.order, ListOrder::Sorted(sort));
}
