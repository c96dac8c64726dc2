//! Filter, sort and cursor languages (`docs/server.md`, "Reads").
#![allow(clippy::unwrap_used)]

mod cursor;
mod filter;
mod keyset;
mod sort;

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
