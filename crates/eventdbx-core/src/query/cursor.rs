//! Cursor formats (each listed on [`AggregateCursor`] and [`EventCursor`]; listing and paging
//! are described in `docs/server.md`) and keyset paging.
//!
//! Every cursor is exclusive: a listing resumes strictly after the position the cursor names,
//! and that position need not be an existing aggregate. A store turns the request's sort, cursor
//! and scope into a [`PagePlan`] and keeps the items for which [`PagePlan::is_after`] holds, in
//! [`ListOrder::compare`] order. Because every order is total (type and id break ties), an item
//! is never sent twice and no item present on both sides of a page boundary is skipped, however
//! many aggregates are written between pages.

use std::cmp::Ordering;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::sort::{
    compare_keys, SortDirective, SortField, SortKey, SortOrder, SortSpec, SortValue,
};
use super::{AggregateView, Scope};
use crate::error::{CoreError, Result};

fn cursor_error(detail: impl fmt::Display) -> CoreError {
    CoreError::InvalidCursor(detail.to_string())
}

/// A cursor of `listAggregates`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggregateCursor {
    /// Natural order: `a:<type>:<id>` (active) or `r:<type>:<id>` (archived).
    Natural {
        /// `true` for an `r:` (archived) cursor.
        archived: bool,
        /// The aggregate type.
        aggregate_type: String,
        /// The aggregate id.
        aggregate_id: String,
    },
    /// `ts:<kind>:<asc|desc>:<a|r>:<timestamp_ms>:<type>:<id>`, for a single timestamp sort.
    Timestamp {
        /// [`SortField::CreatedAt`] or [`SortField::UpdatedAt`].
        field: SortField,
        /// The direction of the sort the cursor was made for.
        order: SortOrder,
        /// Whether the item was archived.
        archived: bool,
        /// The item's timestamp, epoch ms.
        timestamp_ms: i64,
        /// The aggregate type.
        aggregate_type: String,
        /// The aggregate id.
        aggregate_id: String,
    },
    /// `ts:<type>:<id>`: resume after that aggregate, whose sort key the store looks up.
    Shorthand {
        /// The aggregate type.
        aggregate_type: String,
        /// The aggregate id.
        aggregate_id: String,
    },
    /// `k:<base64url>` (ours): the keyset cursor of every other sort.
    Keyset(KeysetCursor),
}

/// The content of a `k:` cursor: the sort it was made for, and the last item's position in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysetCursor {
    /// The sort the cursor belongs to.
    pub sort: SortSpec,
    /// Whether the last item was archived.
    pub archived: bool,
    /// The last item's key under `sort` (one value per effective directive, which always
    /// include its type and id).
    pub key: SortKey,
}

impl KeysetCursor {
    /// Builds the cursor that resumes after `aggregate` in `sort`.
    pub fn after(sort: &SortSpec, aggregate: &AggregateView<'_>) -> KeysetCursor {
        KeysetCursor {
            sort: sort.clone(),
            archived: aggregate.archived,
            key: sort.key_of(aggregate),
        }
    }

    fn to_json(&self) -> Value {
        let key: Vec<Value> = self
            .key
            .0
            .iter()
            .map(|v| match v {
                SortValue::Str(s) => Value::from(s.as_str()),
                SortValue::Bool(b) => Value::from(*b),
                SortValue::Timestamp(t) => t.map_or(Value::Null, Value::from),
                SortValue::Version(n) => Value::from(*n),
            })
            .collect();
        json!({ "s": self.sort.to_string(), "a": self.archived, "k": key })
    }

    fn from_json(value: &Value) -> Option<KeysetCursor> {
        let object = value.as_object()?;
        let sort = SortSpec::parse(object.get("s")?.as_str()?).ok()?;
        let archived = object.get("a")?.as_bool()?;
        let raw = object.get("k")?.as_array()?;
        let effective = sort.effective();
        if raw.len() != effective.len() {
            return None;
        }
        let mut key = Vec::with_capacity(raw.len());
        for (d, v) in effective.iter().zip(raw) {
            key.push(match d.field {
                SortField::AggregateType | SortField::AggregateId => {
                    SortValue::Str(v.as_str()?.to_owned())
                }
                SortField::Archived => SortValue::Bool(v.as_bool()?),
                SortField::CreatedAt | SortField::UpdatedAt => {
                    SortValue::Timestamp(if v.is_null() { None } else { Some(v.as_i64()?) })
                }
                SortField::Version => SortValue::Version(v.as_u64()?),
            });
        }
        Some(KeysetCursor {
            sort,
            archived,
            key: SortKey(key),
        })
    }
}

fn parse_scope_tag(tag: &str) -> Option<bool> {
    match tag {
        "a" | "active" => Some(false),
        "r" | "archived" => Some(true),
        _ => None,
    }
}

fn scope_letter(archived: bool) -> &'static str {
    if archived {
        "r"
    } else {
        "a"
    }
}

/// Reads `<type>:<id>` from `parts[1..3]` with the natural cursor's messages.
fn type_and_id(parts: &[&str]) -> Result<(String, String)> {
    let aggregate_type = match parts.get(1) {
        None => return Err(cursor_error("cursor missing aggregate_type")),
        Some(&"") => return Err(cursor_error("cursor aggregate_type cannot be empty")),
        Some(t) => (*t).to_owned(),
    };
    let aggregate_id = match parts.get(2) {
        None => return Err(cursor_error("cursor missing aggregate_id")),
        Some(&"") => return Err(cursor_error("cursor aggregate_id cannot be empty")),
        Some(i) => (*i).to_owned(),
    };
    Ok((aggregate_type, aggregate_id))
}

/// Splits a cursor that is neither empty nor tag-less into its `:` parts.
fn split_cursor(text: &str) -> Result<Vec<&str>> {
    if text.is_empty() {
        return Err(cursor_error("cursor cannot be empty"));
    }
    if !text.contains(':') {
        return Err(cursor_error("cursor is incomplete"));
    }
    Ok(text.split(':').collect())
}

impl AggregateCursor {
    /// Parses a request's cursor: trimmed, and empty counts as absent.
    pub fn parse(text: &str) -> Result<Option<AggregateCursor>> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        AggregateCursor::decode(text).map(Some)
    }

    /// Decodes a cursor that must be present (`cursor cannot be empty` otherwise).
    pub fn decode(text: &str) -> Result<AggregateCursor> {
        let text = text.trim();
        let parts = split_cursor(text)?;
        match parts[0] {
            "ts" => Self::decode_timestamp(&parts),
            "k" => {
                // Base64url has no ':'; anything after a second ':' is damage.
                let payload = &text.as_bytes()["k:".len()..];
                let cursor = base64url_decode(payload)
                    .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                    .and_then(|v| KeysetCursor::from_json(&v))
                    .ok_or_else(|| cursor_error("malformed keyset cursor"))?;
                Ok(AggregateCursor::Keyset(cursor))
            }
            tag => {
                let archived = parse_scope_tag(tag)
                    .ok_or_else(|| cursor_error(format_args!("unknown cursor segment '{tag}'")))?;
                let (aggregate_type, aggregate_id) = type_and_id(&parts)?;
                if parts.len() > 3 {
                    return Err(cursor_error("cursor has too many segments"));
                }
                Ok(AggregateCursor::Natural {
                    archived,
                    aggregate_type,
                    aggregate_id,
                })
            }
        }
    }

    fn decode_timestamp(parts: &[&str]) -> Result<AggregateCursor> {
        if parts.len() == 3 {
            let (aggregate_type, aggregate_id) = type_and_id(parts)?;
            return Ok(AggregateCursor::Shorthand {
                aggregate_type,
                aggregate_id,
            });
        }
        const NAMES: [&str; 6] = [
            "kind",
            "order",
            "scope",
            "timestamp",
            "aggregate_type",
            "aggregate_id",
        ];
        // An empty part counts as missing, so `ts:created_at::` names the first gap.
        for (i, name) in NAMES.iter().enumerate() {
            match parts.get(i + 1) {
                Some(p) if !p.is_empty() => {}
                _ if i >= 4 && parts.len() > i + 1 => {
                    return Err(cursor_error(format_args!(
                        "timestamp cursor {name} cannot be empty"
                    )))
                }
                _ => {
                    return Err(cursor_error(format_args!(
                        "timestamp cursor missing {name}"
                    )))
                }
            }
        }
        if parts.len() > 7 {
            return Err(cursor_error("timestamp cursor has too many segments"));
        }
        let field = match parts[1] {
            "created_at" | "created" => SortField::CreatedAt,
            "updated_at" | "updated" => SortField::UpdatedAt,
            k => {
                return Err(cursor_error(format_args!(
                    "unknown timestamp cursor kind '{k}'"
                )))
            }
        };
        let order = match parts[2] {
            o if o.eq_ignore_ascii_case("asc") => SortOrder::Asc,
            o if o.eq_ignore_ascii_case("desc") => SortOrder::Desc,
            o => {
                return Err(cursor_error(format_args!(
                    "timestamp cursor order must be 'asc' or 'desc', found '{o}'"
                )))
            }
        };
        let archived = parse_scope_tag(parts[3]).ok_or_else(|| {
            cursor_error(format_args!(
                "timestamp cursor scope must be 'a' or 'r', found '{}'",
                parts[3]
            ))
        })?;
        let timestamp_ms = parts[4].parse::<i64>().map_err(|_| {
            cursor_error(format_args!(
                "timestamp cursor contains invalid timestamp '{}'",
                parts[4]
            ))
        })?;
        Ok(AggregateCursor::Timestamp {
            field,
            order,
            archived,
            timestamp_ms,
            aggregate_type: parts[5].to_owned(),
            aggregate_id: parts[6].to_owned(),
        })
    }
}

impl fmt::Display for AggregateCursor {
    /// The canonical encoding; [`AggregateCursor::decode`] reads it back to an equal value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AggregateCursor::Natural {
                archived,
                aggregate_type,
                aggregate_id,
            } => write!(
                f,
                "{}:{aggregate_type}:{aggregate_id}",
                scope_letter(*archived)
            ),
            AggregateCursor::Timestamp {
                field,
                order,
                archived,
                timestamp_ms,
                aggregate_type,
                aggregate_id,
            } => write!(
                f,
                "ts:{field}:{}:{}:{timestamp_ms}:{aggregate_type}:{aggregate_id}",
                order.as_str(),
                scope_letter(*archived)
            ),
            AggregateCursor::Shorthand {
                aggregate_type,
                aggregate_id,
            } => write!(f, "ts:{aggregate_type}:{aggregate_id}"),
            AggregateCursor::Keyset(k) => {
                let json = k.to_json().to_string();
                write!(f, "k:{}", base64url_encode(json.as_bytes()))
            }
        }
    }
}

/// A `listEvents` cursor: `a:<type>:<id>:<version>` (also `r:`), resuming after that version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventCursor {
    /// `true` for an `r:` cursor.
    pub archived: bool,
    /// The aggregate type.
    pub aggregate_type: String,
    /// The aggregate id.
    pub aggregate_id: String,
    /// The last version sent.
    pub version: u64,
}

impl EventCursor {
    /// Parses a request's cursor: trimmed, and empty counts as absent.
    pub fn parse(text: &str) -> Result<Option<EventCursor>> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        EventCursor::decode(text).map(Some)
    }

    /// Decodes a cursor that must be present.
    pub fn decode(text: &str) -> Result<EventCursor> {
        let parts = split_cursor(text.trim())?;
        let archived = parse_scope_tag(parts[0])
            .ok_or_else(|| cursor_error(format_args!("unknown cursor segment '{}'", parts[0])))?;
        let (aggregate_type, aggregate_id) = type_and_id(&parts)?;
        let version = match parts.get(3) {
            None => return Err(cursor_error("cursor missing version")),
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| cursor_error(format_args!("cursor version '{v}' is not a number")))?,
        };
        if parts.len() > 4 {
            return Err(cursor_error("cursor has too many segments"));
        }
        Ok(EventCursor {
            archived,
            aggregate_type,
            aggregate_id,
            version,
        })
    }

    /// The cursor after `version` of an aggregate.
    pub fn after(aggregate_type: &str, aggregate_id: &str, archived: bool, version: u64) -> Self {
        EventCursor {
            archived,
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            version,
        }
    }

    /// Checks that the cursor belongs to the listed aggregate.
    pub fn check_scope(&self, aggregate_type: &str, aggregate_id: &str) -> Result<()> {
        if self.aggregate_type == aggregate_type && self.aggregate_id == aggregate_id {
            Ok(())
        } else {
            Err(cursor_error(
                "cursor does not match the requested event scope",
            ))
        }
    }
}

impl fmt::Display for EventCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            scope_letter(self.archived),
            self.aggregate_type,
            self.aggregate_id,
            self.version
        )
    }
}

/// The order of a listing: natural or a sort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListOrder {
    /// Byte-lexicographic by (type, id), active items before archived ones.
    Natural,
    /// A parsed sort.
    Sorted(SortSpec),
}

const NATURAL: [SortDirective; 3] = [
    SortDirective {
        field: SortField::Archived,
        order: SortOrder::Asc,
    },
    SortDirective {
        field: SortField::AggregateType,
        order: SortOrder::Asc,
    },
    SortDirective {
        field: SortField::AggregateId,
        order: SortOrder::Asc,
    },
];

impl ListOrder {
    /// The directives that define the order. Natural order is (archived, type, id) ascending,
    /// which is exactly "active first, then archived, each by (type, id)".
    pub fn directives(&self) -> Vec<SortDirective> {
        match self {
            ListOrder::Natural => NATURAL.to_vec(),
            ListOrder::Sorted(sort) => sort.effective(),
        }
    }

    /// The key of an aggregate in this order.
    pub fn key_of(&self, aggregate: &AggregateView<'_>) -> SortKey {
        match self {
            ListOrder::Natural => SortKey(
                NATURAL
                    .iter()
                    .map(|d| d.field.value_of(aggregate))
                    .collect(),
            ),
            ListOrder::Sorted(sort) => sort.key_of(aggregate),
        }
    }

    /// Compares two keys made by [`ListOrder::key_of`].
    pub fn compare(&self, a: &SortKey, b: &SortKey) -> Ordering {
        compare_keys(&self.directives(), a, b)
    }

    /// The cursor a page ending with `aggregate` returns: `a:`/`r:` in natural order, a 7-part
    /// `ts:` for a single timestamp sort, `k:` for every other sort.
    pub fn cursor_after(&self, aggregate: &AggregateView<'_>) -> AggregateCursor {
        match self {
            ListOrder::Natural => AggregateCursor::Natural {
                archived: aggregate.archived,
                aggregate_type: aggregate.aggregate_type.to_owned(),
                aggregate_id: aggregate.aggregate_id.to_owned(),
            },
            ListOrder::Sorted(sort) => match sort.single_timestamp() {
                // A missing timestamp cannot be written in a 7-part cursor; the keyset form
                // carries it, and this sort accepts both.
                Some(d) if d.field.value_of(aggregate) != SortValue::Timestamp(None) => {
                    let timestamp_ms = match d.field {
                        SortField::CreatedAt => aggregate.created_at,
                        _ => aggregate.updated_at,
                    }
                    .unwrap_or_default();
                    AggregateCursor::Timestamp {
                        field: d.field,
                        order: d.order,
                        archived: aggregate.archived,
                        timestamp_ms,
                        aggregate_type: aggregate.aggregate_type.to_owned(),
                        aggregate_id: aggregate.aggregate_id.to_owned(),
                    }
                }
                _ => AggregateCursor::Keyset(KeysetCursor::after(sort, aggregate)),
            },
        }
    }
}

/// Where a page starts: the order and, with a cursor, the key to resume strictly after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagePlan {
    /// The order of the listing (a cursor without a sort may imply one).
    pub order: ListOrder,
    /// The cursor position; `None` starts at the beginning.
    pub after: Option<SortKey>,
}

const TS_PREFIX_REQUIRED: &str =
    "timestamp cursors must use the 'ts:' prefix (ts:<field>:<order>:...)";
const SORT_MISMATCH: &str = "cursor does not match the requested sort";

fn check_scope_natural(scope: Scope, archived: bool) -> Result<()> {
    match (scope, archived) {
        (Scope::Active, true) => Err(cursor_error(
            "cursor points to archived aggregates but scope uses active records",
        )),
        (Scope::ArchivedOnly, false) => Err(cursor_error(
            "archived listings require archived cursor values",
        )),
        _ => Ok(()),
    }
}

impl PagePlan {
    /// Combines a request's sort, cursor and scope.
    ///
    /// `lookup` resolves the `ts:<type>:<id>` shorthand to the aggregate it names (it is only
    /// called for that form). Errors are the spec's `invalid cursor: …` messages; where the spec
    /// has none (the shorthand without a timestamp-led sort) ours says so plainly.
    pub fn new<'a, F>(
        sort: Option<&SortSpec>,
        cursor: Option<&AggregateCursor>,
        scope: Scope,
        lookup: F,
    ) -> Result<PagePlan>
    where
        F: FnOnce(&str, &str) -> Option<AggregateView<'a>>,
    {
        let Some(cursor) = cursor else {
            let order = sort.map_or(ListOrder::Natural, |s| ListOrder::Sorted(s.clone()));
            return Ok(PagePlan { order, after: None });
        };
        match cursor {
            AggregateCursor::Natural {
                archived,
                aggregate_type,
                aggregate_id,
            } => {
                if let Some(sort) = sort {
                    return Err(cursor_error(if sort.single_timestamp().is_some() {
                        TS_PREFIX_REQUIRED
                    } else {
                        SORT_MISMATCH
                    }));
                }
                check_scope_natural(scope, *archived)?;
                Ok(PagePlan {
                    order: ListOrder::Natural,
                    after: Some(SortKey(vec![
                        SortValue::Bool(*archived),
                        SortValue::Str(aggregate_type.clone()),
                        SortValue::Str(aggregate_id.clone()),
                    ])),
                })
            }
            AggregateCursor::Timestamp {
                field,
                order,
                archived,
                timestamp_ms,
                aggregate_type,
                aggregate_id,
            } => {
                let implied = SortDirective {
                    field: *field,
                    order: *order,
                };
                let sort = match sort {
                    None => {
                        SortSpec::new(vec![implied]).ok_or_else(|| cursor_error(SORT_MISMATCH))?
                    }
                    Some(sort) => {
                        let Some(d) = sort.single_timestamp() else {
                            return Err(cursor_error(SORT_MISMATCH));
                        };
                        if d.field != *field {
                            return Err(cursor_error(format_args!(
                                "timestamp cursor targets '{field}' but sort is '{}'",
                                d.field
                            )));
                        }
                        if d.order != *order {
                            return Err(cursor_error(
                                "timestamp cursor order does not match the requested sort direction",
                            ));
                        }
                        sort.clone()
                    }
                };
                match (scope, archived) {
                    (Scope::Active, true) => {
                        return Err(cursor_error(
                            "timestamp cursor must reference active aggregates in this scope",
                        ))
                    }
                    (Scope::ArchivedOnly, false) => {
                        return Err(cursor_error(
                            "timestamp cursor must reference archived aggregates in this scope",
                        ))
                    }
                    _ => {}
                }
                // The effective order of a single timestamp sort is (timestamp, type, id).
                Ok(PagePlan {
                    order: ListOrder::Sorted(sort),
                    after: Some(SortKey(vec![
                        SortValue::Timestamp(Some(*timestamp_ms)),
                        SortValue::Str(aggregate_type.clone()),
                        SortValue::Str(aggregate_id.clone()),
                    ])),
                })
            }
            AggregateCursor::Shorthand {
                aggregate_type,
                aggregate_id,
            } => {
                let Some((sort, lead)) = sort.and_then(|s| s.leading_timestamp().map(|l| (s, l)))
                else {
                    return Err(cursor_error(
                        "timestamp cursor shorthand requires a sort led by created_at or updated_at",
                    ));
                };
                let aggregate = lookup(aggregate_type, aggregate_id).ok_or_else(|| {
                    cursor_error(format_args!(
                        "cursor references unknown aggregate '{aggregate_type}:{aggregate_id}'"
                    ))
                })?;
                if lead.value_of(&aggregate) == SortValue::Timestamp(None) {
                    return Err(cursor_error(format_args!(
                        "aggregate {aggregate_type}:{aggregate_id} missing {lead} timestamp"
                    )));
                }
                Ok(PagePlan {
                    order: ListOrder::Sorted(sort.clone()),
                    after: Some(sort.key_of(&aggregate)),
                })
            }
            AggregateCursor::Keyset(keyset) => {
                let sort = match sort {
                    None => keyset.sort.clone(),
                    // Compare the effective directives: `created_at:desc` and
                    // `created_at:desc,aggregate_type:desc,aggregate_id:desc` are one order.
                    // A single timestamp sort emits `k:` only for an item without that
                    // timestamp (the 7-part form cannot hold it), so it accepts its own.
                    Some(sort) if sort.effective() != keyset.sort.effective() => {
                        return Err(cursor_error(if sort.single_timestamp().is_some() {
                            TS_PREFIX_REQUIRED
                        } else {
                            SORT_MISMATCH
                        }))
                    }
                    Some(sort) => sort.clone(),
                };
                check_scope_natural(scope, keyset.archived)?;
                Ok(PagePlan {
                    order: ListOrder::Sorted(sort),
                    after: Some(keyset.key.clone()),
                })
            }
        }
    }

    /// Whether an item with this key (from `self.order.key_of`) belongs after the cursor.
    pub fn is_after(&self, key: &SortKey) -> bool {
        match &self.after {
            None => true,
            Some(after) => self.order.compare(key, after) == Ordering::Greater,
        }
    }
}

/// Base64url without padding, as the `k:` cursor uses. Decoding refuses padding and trailing
/// bits that are not zero, so each cursor text has one decoding.
fn base64url_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The inverse of [`base64url_encode`]; `None` on any character outside the alphabet, padding,
/// a dangling sixth bit group or non-zero trailing bits.
fn base64url_decode(text: &[u8]) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips_every_length() {
        for len in 0..40u8 {
            let bytes: Vec<u8> = (0..len)
                .map(|i| i.wrapping_mul(97).wrapping_add(200))
                .collect();
            let text = base64url_encode(&bytes);
            assert!(!text.contains('='));
            assert_eq!(base64url_decode(text.as_bytes()), Some(bytes));
        }
        assert_eq!(base64url_decode(b"A"), None);
        assert_eq!(base64url_decode(b"AB=="), None);
    }
}
