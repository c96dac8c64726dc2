//! Evaluation: resolving a field on an aggregate or an event, and testing it.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::{AggregateTypes, CompareOp, Expr, Literal, Predicate};
use crate::query::{AggregateView, EventView};

/// A resolved field: `None` when missing.
type Resolved<'a> = Option<Cow<'a, Value>>;

pub(super) fn eval<'a>(expr: &Expr, resolve: &dyn Fn(&str) -> Resolved<'a>) -> bool {
    match expr {
        Expr::Or(a, b) => eval(a, resolve) || eval(b, resolve),
        Expr::And(a, b) => eval(a, resolve) && eval(b, resolve),
        Expr::Not(a) => !eval(a, resolve),
        Expr::Compare { field, predicate } => test(resolve(field).as_deref(), predicate),
    }
}

fn test(value: Option<&Value>, predicate: &Predicate) -> bool {
    let Some(value) = value else {
        return matches!(predicate, Predicate::Compare(CompareOp::Ne, Literal::Null));
    };
    match predicate {
        Predicate::Compare(op, literal) => match op {
            CompareOp::Eq => equals(value, literal),
            CompareOp::Ne => !equals(value, literal),
            _ => match (value.as_f64(), literal) {
                (Some(a), Literal::Number(b)) => match op {
                    CompareOp::Gt => a > *b,
                    CompareOp::Lt => a < *b,
                    CompareOp::Ge => a >= *b,
                    _ => a <= *b,
                },
                _ => false,
            },
        },
        Predicate::Like { pattern, escape } => match (value, pattern) {
            (Value::String(s), Literal::String(p)) => like(s, p, *escape),
            _ => false,
        },
        Predicate::In(list) => list.iter().any(|l| equals(value, l)),
    }
}

/// `=`: same JSON type and value; objects and arrays equal nothing.
fn equals(value: &Value, literal: &Literal) -> bool {
    match (value, literal) {
        (Value::String(a), Literal::String(b)) => a == b,
        (Value::Number(a), Literal::Number(b)) => {
            a.as_f64().is_some_and(|a| (a - b).abs() <= f64::EPSILON)
        }
        (Value::Bool(a), Literal::Bool(b)) => a == b,
        (Value::Null, Literal::Null) => true,
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum LikeToken {
    Any,
    One,
    Char(char),
}

fn compile_like(pattern: &str, escape: Option<char>) -> Vec<LikeToken> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            // Only the wildcards and the escape itself can be escaped; any other escape
            // character stands for itself.
            if let Some(n) =
                chars.next_if(|n| matches!(n, '%' | '_' | '*' | '?') || Some(*n) == escape)
            {
                out.push(LikeToken::Char(n));
                continue;
            }
        }
        out.push(match c {
            '%' | '*' => LikeToken::Any,
            '_' | '?' => LikeToken::One,
            c => LikeToken::Char(c),
        });
    }
    out
}

/// Anchored wildcard match with the classic greedy-with-backtrack algorithm: linear memory,
/// and at most one backtrack point (the last `Any`) is needed.
fn like(text: &str, pattern: &str, escape: Option<char>) -> bool {
    let pattern = compile_like(pattern, escape);
    let text: Vec<char> = text.chars().collect();
    let (mut t, mut p) = (0usize, 0usize);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(LikeToken::Any) => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(LikeToken::One) => {
                t += 1;
                p += 1;
            }
            Some(LikeToken::Char(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            _ => match backtrack {
                Some((bp, bt)) => {
                    p = bp + 1;
                    t = bt + 1;
                    backtrack = Some((bp, bt + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..]
        .iter()
        .all(|tok| *tok == LikeToken::Any)
}

/// Walks `segments` through objects (by key) and arrays (by numeric index).
fn walk<'a>(mut value: &'a Value, segments: &[&str]) -> Option<&'a Value> {
    for segment in segments {
        value = match value {
            Value::Object(map) => map.get(*segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

fn walk_map<'a>(map: &'a Map<String, Value>, segments: &[&str]) -> Option<&'a Value> {
    let (first, rest) = segments.split_first()?;
    walk(map.get(*first)?, rest)
}

pub(super) fn resolve_aggregate<'a>(
    aggregate: &AggregateView<'a>,
    field: &str,
    types: &dyn AggregateTypes,
) -> Resolved<'a> {
    if let Some((head, rest)) = field.split_once('.') {
        if types.contains(head) {
            // Ours: a type-qualified path. Other types see a missing field.
            return if head == aggregate.aggregate_type {
                resolve_unqualified(aggregate, rest)
            } else {
                None
            };
        }
    }
    resolve_unqualified(aggregate, field)
}

fn owned<'a>(value: impl Into<Value>) -> Resolved<'a> {
    Some(Cow::Owned(value.into()))
}

fn resolve_unqualified<'a>(aggregate: &AggregateView<'a>, field: &str) -> Resolved<'a> {
    match field {
        "aggregate_type" | "aggregateType" => return owned(aggregate.aggregate_type),
        "aggregate_id" | "aggregateId" => return owned(aggregate.aggregate_id),
        "merkle_root" | "merkleRoot" => return owned(aggregate.merkle_root),
        "created_at" | "createdAt" => return owned(aggregate.created_at),
        "updated_at" | "updatedAt" => return owned(aggregate.updated_at),
        "archived" => return owned(aggregate.archived),
        "version" => return owned(aggregate.version),
        _ => {}
    }
    let segments: Vec<&str> = field.split('.').collect();
    if let Some(("extensions", rest)) = segments.split_first().map(|(h, r)| (*h, r)) {
        if !rest.is_empty() {
            return walk_map(aggregate.extensions, rest).map(Cow::Borrowed);
        }
    }
    let first = segments.first().copied().unwrap_or_default();
    let map = if aggregate.state.contains_key(first) {
        aggregate.state
    } else {
        aggregate.extensions
    };
    walk_map(map, &segments).map(Cow::Borrowed)
}

/// The event's `metadata` object as filters see it (`docs/server.md`, "Filter"), resolved one path
/// at a time so no JSON is built for fields nobody asked about.
fn resolve_metadata<'a>(event: &EventView<'a>, segments: &[&str]) -> Resolved<'a> {
    match segments {
        ["note"] => event.note.map(|n| Cow::Owned(Value::from(n))),
        ["event_id" | "eventId"] => owned(event.event_id.to_string()),
        ["created_at" | "createdAt"] => owned(event.created_at),
        ["issued_by" | "issuedBy"] => owned(match event.issued_by {
            Some((group, user)) => serde_json::json!({ "group": group, "user": user }),
            None => Value::Null,
        }),
        ["issued_by" | "issuedBy", "group"] => event.issued_by.map(|(g, _)| Cow::Owned(g.into())),
        ["issued_by" | "issuedBy", "user"] => event.issued_by.map(|(_, u)| Cow::Owned(u.into())),
        _ => None,
    }
}

pub(super) fn resolve_event<'a>(event: &EventView<'a>, field: &str) -> Resolved<'a> {
    match field {
        "aggregate_type" | "aggregateType" => return owned(event.aggregate_type),
        "aggregate_id" | "aggregateId" => return owned(event.aggregate_id),
        "event_type" | "eventType" => return owned(event.event_type),
        "version" => return owned(event.version),
        "merkle_root" | "merkleRoot" => return owned(event.merkle_root),
        "hash" => return owned(event.hash),
        _ => {}
    }
    let segments: Vec<&str> = field.split('.').collect();
    match segments.split_first() {
        Some((&"metadata", rest)) => return resolve_metadata(event, rest),
        Some((&"extensions", rest)) => {
            return event
                .extensions
                .and_then(|e| walk(e, rest))
                .map(Cow::Borrowed)
        }
        Some((&"payload", rest)) => return walk(event.payload, rest).map(Cow::Borrowed),
        _ => {}
    }
    // A bare name (`event_id`, `created_at`, `note`, `issued_by.user`, …): metadata, then
    // extensions, then payload.
    resolve_metadata(event, &segments)
        .or_else(|| {
            event
                .extensions
                .and_then(|e| walk(e, &segments))
                .map(Cow::Borrowed)
        })
        .or_else(|| walk(event.payload, &segments).map(Cow::Borrowed))
}
