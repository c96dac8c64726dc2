//! The sort language (`docs/server.md`, "Sort"): grammar, errors, round trips.

use super::*;

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

pub(super) fn arb_sort() -> impl Strategy<Value = SortSpec> {
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
