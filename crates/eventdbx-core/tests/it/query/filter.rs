//! The filter language (`docs/server.md`, "Filter"): parsing, the spec's error messages,
//! evaluation, and a reference model the evaluator must agree with.

use super::*;

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

/// A tiny reference model: one field `x`, a predicate, and the filter rules written directly.
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
