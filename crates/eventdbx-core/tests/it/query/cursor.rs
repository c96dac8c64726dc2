//! Cursors (`docs/server.md`): their documented forms and error messages, round trips, and cursors
//! refused by a list they do not belong to.

use super::keyset::arb_agg;
use super::sort::arb_sort;
use super::*;

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

pub(super) fn none(_: &str, _: &str) -> Option<AggregateView<'static>> {
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
