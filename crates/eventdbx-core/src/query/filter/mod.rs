//! The filter language (`docs/server.md`, "Filter", with ours: `>=`, `<=`, backtick-quoted field
//! names and `LIKE … ESCAPE 'c'`).
//!
//! [`Filter::parse`] tokenizes and parses by recursive descent into an [`Expr`]; `Display`
//! prints the canonical form, which parses back to an equal tree. Evaluation keeps JSON types:
//!
//! - `=` holds when both sides have the same JSON type and value (numbers within
//!   `f64::EPSILON`); `"1"` never equals `1`, and objects and arrays equal nothing. `!=` is its
//!   negation; `IN` is `=` against any listed value.
//! - `>`, `<`, `>=`, `<=` compare a number with a number only; any other pairing is false.
//! - `LIKE` matches a string against a string pattern only: anchored, case-sensitive, `%` or
//!   `*` any run, `_` or `?` one character.
//! - A missing field makes every comparison false, except `!= null`, which is true.
//!
//! # Layout
//! - `parse`: the tokenizer and the recursive-descent parser.
//! - `print`: the canonical form (`Display`).
//! - `eval`: field resolution on aggregates and events, comparisons and `LIKE`.

mod eval;
mod parse;
mod print;

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use super::{AggregateView, EventView};
use crate::error::{CoreError, Result};

fn filter_error(detail: impl fmt::Display) -> CoreError {
    CoreError::invalid(format!("invalid filter expression: {detail}"))
}

/// A literal on the right of a comparison. A bare identifier value is a string.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A quoted string or a bare identifier.
    String(String),
    /// A number (parsed as f64; the grammar has no exponent, NaN or infinity).
    Number(f64),
    /// `true` / `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `=`.
    Eq,
    /// `!=` or `<>`.
    Ne,
    /// `>`.
    Gt,
    /// `<`.
    Lt,
    /// `>=` (ours).
    Ge,
    /// `<=` (ours).
    Le,
}

impl CompareOp {
    fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "=",
            CompareOp::Ne => "!=",
            CompareOp::Gt => ">",
            CompareOp::Lt => "<",
            CompareOp::Ge => ">=",
            CompareOp::Le => "<=",
        }
    }
}

/// What a comparison tests its field with.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// `field op value`.
    Compare(CompareOp, Literal),
    /// `field LIKE pattern [ESCAPE 'c']`. A non-string pattern matches nothing.
    Like {
        /// The pattern.
        pattern: Literal,
        /// The escape character (ours).
        escape: Option<char>,
    },
    /// `field IN [v, …]`.
    In(Vec<Literal>),
}

/// A filter expression tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `a OR b`.
    Or(Box<Expr>, Box<Expr>),
    /// `a AND b`.
    And(Box<Expr>, Box<Expr>),
    /// `NOT a` (also what `field NOT op value` parses to).
    Not(Box<Expr>),
    /// One comparison on a field path (dotted, as written).
    Compare {
        /// The field path, e.g. `address.city` or `@policy-rule`.
        field: String,
        /// The test.
        predicate: Predicate,
    },
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The expression tree.
    pub expr: Expr,
}

impl Filter {
    /// Parses a filter expression. Errors are `invalid_schema` with
    /// `invalid filter expression: <detail>`.
    pub fn parse(text: &str) -> Result<Filter> {
        parse::expression(text).map(|expr| Filter { expr })
    }

    /// Whether the filter compares a field named `archived` (any case), or a type-qualified
    /// `<type>.archived` of a known type: such filters widen a listing's scope to active +
    /// archived.
    pub fn mentions_archived(&self, types: &dyn AggregateTypes) -> bool {
        fn walk(expr: &Expr, types: &dyn AggregateTypes) -> bool {
            match expr {
                Expr::Or(a, b) | Expr::And(a, b) => walk(a, types) || walk(b, types),
                Expr::Not(a) => walk(a, types),
                Expr::Compare { field, .. } => {
                    field.eq_ignore_ascii_case("archived")
                        || field.split_once('.').is_some_and(|(head, rest)| {
                            types.contains(head) && rest.eq_ignore_ascii_case("archived")
                        })
                }
            }
        }
        walk(&self.expr, types)
    }

    /// Evaluates the filter on an aggregate. `types` tells which first path segments are
    /// aggregate type names (the type-qualified paths of ours).
    pub fn matches_aggregate(
        &self,
        aggregate: &AggregateView<'_>,
        types: &dyn AggregateTypes,
    ) -> bool {
        eval::eval(&self.expr, &|field| {
            eval::resolve_aggregate(aggregate, field, types)
        })
    }

    /// Evaluates the filter on an event (`listEvents`; `docs/server.md`, "Filter").
    pub fn matches_event(&self, event: &EventView<'_>) -> bool {
        eval::eval(&self.expr, &|field| eval::resolve_event(event, field))
    }
}

/// The aggregate type names a tenant knows (a type with a schema or with at least one
/// aggregate); a path whose first segment is one of them is type-qualified.
pub trait AggregateTypes {
    /// Whether `name` is a known aggregate type.
    fn contains(&self, name: &str) -> bool;
}

impl AggregateTypes for HashSet<String> {
    fn contains(&self, name: &str) -> bool {
        HashSet::contains(self, name)
    }
}

impl AggregateTypes for BTreeSet<String> {
    fn contains(&self, name: &str) -> bool {
        BTreeSet::contains(self, name)
    }
}

impl AggregateTypes for [&str] {
    fn contains(&self, name: &str) -> bool {
        <[&str]>::contains(self, &name)
    }
}

/// No known types: every path keeps the reference meaning.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAggregateTypes;

impl AggregateTypes for NoAggregateTypes {
    fn contains(&self, _name: &str) -> bool {
        false
    }
}
