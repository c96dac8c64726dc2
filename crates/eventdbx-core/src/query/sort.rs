//! The sort grammar of `listAggregates` (`docs/server.md`, "Sort") and the total order it defines.
//!
//! ```text
//! sort      := directive ( "," directive )*
//! directive := field [ ":" order ]
//! ```
//!
//! Ours differs from the reference in two ways: `version` is a sort field, and every sort is a
//! total order because `aggregate_type` and `aggregate_id` are appended as final tie-breakers.
//! A total order is what lets every sort be paged with a keyset cursor.

use std::cmp::Ordering;
use std::fmt;

use super::AggregateView;
use crate::error::{CoreError, Result};

/// A field an aggregate listing can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SortField {
    /// `aggregate_type` / `aggregatetype`.
    AggregateType,
    /// `aggregate_id` / `aggregateid`.
    AggregateId,
    /// `archived` (`false` before `true`).
    Archived,
    /// `created_at` / `createdat` (no timestamp sorts before any timestamp).
    CreatedAt,
    /// `updated_at` / `updatedat`.
    UpdatedAt,
    /// `version` (ours).
    Version,
}

impl SortField {
    /// Every sort field, in a fixed order (useful for generators and documentation).
    pub const ALL: [SortField; 6] = [
        SortField::AggregateType,
        SortField::AggregateId,
        SortField::Archived,
        SortField::CreatedAt,
        SortField::UpdatedAt,
        SortField::Version,
    ];

    /// The canonical (snake_case) name.
    pub fn as_str(self) -> &'static str {
        match self {
            SortField::AggregateType => "aggregate_type",
            SortField::AggregateId => "aggregate_id",
            SortField::Archived => "archived",
            SortField::CreatedAt => "created_at",
            SortField::UpdatedAt => "updated_at",
            SortField::Version => "version",
        }
    }

    /// Parses a field name case-insensitively, accepting the spec's aliases.
    pub fn from_name(name: &str) -> Option<SortField> {
        match name.to_ascii_lowercase().as_str() {
            "aggregate_type" | "aggregatetype" => Some(SortField::AggregateType),
            "aggregate_id" | "aggregateid" => Some(SortField::AggregateId),
            "archived" => Some(SortField::Archived),
            "created_at" | "createdat" => Some(SortField::CreatedAt),
            "updated_at" | "updatedat" => Some(SortField::UpdatedAt),
            "version" => Some(SortField::Version),
            _ => None,
        }
    }

    /// Whether this is one of the two timestamp fields.
    pub fn is_timestamp(self) -> bool {
        matches!(self, SortField::CreatedAt | SortField::UpdatedAt)
    }

    /// This field's value on an aggregate.
    pub fn value_of(self, aggregate: &AggregateView<'_>) -> SortValue {
        match self {
            SortField::AggregateType => SortValue::Str(aggregate.aggregate_type.to_owned()),
            SortField::AggregateId => SortValue::Str(aggregate.aggregate_id.to_owned()),
            SortField::Archived => SortValue::Bool(aggregate.archived),
            SortField::CreatedAt => SortValue::Timestamp(aggregate.created_at),
            SortField::UpdatedAt => SortValue::Timestamp(aggregate.updated_at),
            SortField::Version => SortValue::Version(aggregate.version),
        }
    }
}

impl fmt::Display for SortField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ascending or descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SortOrder {
    /// Ascending (the default).
    #[default]
    Asc,
    /// Descending.
    Desc,
}

impl SortOrder {
    /// `asc` or `desc`.
    pub fn as_str(self) -> &'static str {
        match self {
            SortOrder::Asc => "asc",
            SortOrder::Desc => "desc",
        }
    }

    /// Applies this order to an ascending comparison.
    pub fn apply(self, ascending: Ordering) -> Ordering {
        match self {
            SortOrder::Asc => ascending,
            SortOrder::Desc => ascending.reverse(),
        }
    }
}

/// One `field[:order]` directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SortDirective {
    /// The field.
    pub field: SortField,
    /// The direction.
    pub order: SortOrder,
}

/// A parsed sort specification: one or more directives, as the caller wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SortSpec {
    directives: Vec<SortDirective>,
}

fn sort_error(detail: impl fmt::Display) -> CoreError {
    CoreError::invalid(format!("invalid sort specification: {detail}"))
}

impl SortSpec {
    /// Builds a specification from directives; `None` when there are none (an empty sort is
    /// not a sort).
    pub fn new(directives: Vec<SortDirective>) -> Option<SortSpec> {
        (!directives.is_empty()).then_some(SortSpec { directives })
    }

    /// Parses the sort grammar. Errors are `invalid_schema` with the documented messages.
    pub fn parse(text: &str) -> Result<SortSpec> {
        if text.trim().is_empty() {
            return Err(sort_error("sort specification cannot be empty"));
        }
        let mut directives = Vec::new();
        for segment in text.split(',') {
            let segment = segment.trim();
            if segment.is_empty() {
                return Err(sort_error("sort segments cannot be empty"));
            }
            let mut parts = segment.split(':');
            let field = parts.next().unwrap_or_default().trim();
            let order = parts.next().map(str::trim);
            if parts.next().is_some() {
                return Err(sort_error(
                    "sort specification contains too many ':' separators",
                ));
            }
            if field.is_empty() {
                return Err(sort_error("sort field cannot be empty"));
            }
            let field = SortField::from_name(field).ok_or_else(|| {
                sort_error(format_args!("unsupported aggregate sort field '{field}'"))
            })?;
            let order = match order {
                None => SortOrder::Asc,
                Some(o) if o.eq_ignore_ascii_case("asc") => SortOrder::Asc,
                Some(o) if o.eq_ignore_ascii_case("desc") => SortOrder::Desc,
                Some(o) => {
                    return Err(sort_error(format_args!(
                        "invalid sort order '{o}' (expected 'asc' or 'desc')"
                    )))
                }
            };
            directives.push(SortDirective { field, order });
        }
        Ok(SortSpec { directives })
    }

    /// The directives as written (aliases resolved).
    pub fn directives(&self) -> &[SortDirective] {
        &self.directives
    }

    /// The directives that define the order: the written ones, then `aggregate_type` and
    /// `aggregate_id` when absent, in the direction of the last written directive. Two
    /// specifications with the same effective directives sort identically, so cursors compare
    /// these rather than the text.
    pub fn effective(&self) -> Vec<SortDirective> {
        let mut out = self.directives.clone();
        let last = self.directives.last().map(|d| d.order).unwrap_or_default();
        for field in [SortField::AggregateType, SortField::AggregateId] {
            if !out.iter().any(|d| d.field == field) {
                out.push(SortDirective { field, order: last });
            }
        }
        out
    }

    /// The timestamp directive when the sort is exactly one `created_at`/`updated_at`
    /// directive (the case that pages with a 7-part `ts:` cursor).
    pub fn single_timestamp(&self) -> Option<SortDirective> {
        match self.directives.as_slice() {
            [d] if d.field.is_timestamp() => Some(*d),
            _ => None,
        }
    }

    /// The leading timestamp field when the first directive is `created_at` or `updated_at`
    /// (the sorts that accept the `ts:<type>:<id>` shorthand).
    pub fn leading_timestamp(&self) -> Option<SortField> {
        self.directives
            .first()
            .map(|d| d.field)
            .filter(|f| f.is_timestamp())
    }

    /// The sort key of an aggregate: one value per [`SortSpec::effective`] directive.
    pub fn key_of(&self, aggregate: &AggregateView<'_>) -> SortKey {
        SortKey(
            self.effective()
                .iter()
                .map(|d| d.field.value_of(aggregate))
                .collect(),
        )
    }
}

impl fmt::Display for SortSpec {
    /// The canonical form: `field:order` with snake_case names, joined by `,`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.directives.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{}", d.field, d.order.as_str())?;
        }
        Ok(())
    }
}

/// One component of a sort key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SortValue {
    /// `aggregate_type` or `aggregate_id`: compared byte-lexicographically.
    Str(String),
    /// `archived`: `false` before `true`.
    Bool(bool),
    /// A timestamp in epoch ms; `None` (no timestamp) sorts before every timestamp.
    Timestamp(Option<i64>),
    /// `version`.
    Version(u64),
}

impl SortValue {
    /// Ascending comparison of two values of the same field. Values of different fields never
    /// meet in a well-formed key; they are ordered by kind so the function stays total.
    pub fn cmp_ascending(&self, other: &SortValue) -> Ordering {
        use SortValue::*;
        match (self, other) {
            (Str(a), Str(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Bool(a), Bool(b)) => a.cmp(b),
            (Timestamp(a), Timestamp(b)) => a.cmp(b),
            (Version(a), Version(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            SortValue::Str(_) => 0,
            SortValue::Bool(_) => 1,
            SortValue::Timestamp(_) => 2,
            SortValue::Version(_) => 3,
        }
    }
}

/// The values an aggregate has for each effective directive of a sort.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SortKey(pub Vec<SortValue>);

/// Compares two keys under a list of directives (usually [`SortSpec::effective`]): the first
/// directive whose values differ decides, in that directive's direction.
pub fn compare_keys(directives: &[SortDirective], a: &SortKey, b: &SortKey) -> Ordering {
    for (i, d) in directives.iter().enumerate() {
        let ordering = match (a.0.get(i), b.0.get(i)) {
            (Some(x), Some(y)) => d.order.apply(x.cmp_ascending(y)),
            // Keys built by `key_of` always have one value per directive; a short key (only
            // possible from hand-built input) sorts first so comparison stays total.
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    Ordering::Equal
}
