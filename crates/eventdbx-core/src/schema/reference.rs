//! References between aggregates (`docs/server.md`, "References"): which fields of a schema hold
//! them, normalising written values to the canonical `type#id`, the references a state holds (what
//! the reverse index records), and the pieces of the archive cascade (`docs/server.md`, "Archive
//! and restore").
//!
//! References never leave the tenant: a legacy `tenant#type#id` value is accepted only when its
//! first segment is the writer's own tenant, and every target is looked up in that tenant.
//!
//! ```
//! use eventdbx_core::schema::reference::nullify_payload;
//! use serde_json::json;
//!
//! let state = json!({"customer": "person#p-1", "billing": {"payer": "person#p-1", "n": 1}});
//! let payload = nullify_payload(state.as_object().expect("an object"), &["customer", "billing.payer"]);
//! assert_eq!(payload, json!({"customer": null, "billing": {"payer": null, "n": 1}}));
//! ```

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::write::Reference;
use super::{AggregateSchema, ColumnSpec, Format, ReferenceRules};
use crate::error::{CoreError, Result};

/// The event type of the internal event that clears references to an archived target.
pub const NULLIFY_EVENT_TYPE: &str = "_ref_nullify";

/// How many referrers a blocked archive names.
const BLOCKING_REFERRERS_NAMED: usize = 5;

/// One reference held by an aggregate's current state: the field path and its target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReferenceLink {
    /// Dotted path of the field (`customer`, `billing.payer`).
    pub path: String,
    /// The target's aggregate type.
    pub target_type: String,
    /// The target's aggregate id.
    pub target_id: String,
}

/// An aggregate whose current state refers to another, through the field at `path`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Referrer {
    /// The referring aggregate's type.
    pub aggregate_type: String,
    /// The referring aggregate's id.
    pub aggregate_id: String,
    /// Dotted path of the referring field.
    pub path: String,
}

/// The reference fields of a schema, with their rules (defaults when the column has none), in
/// column order; fields nested in `properties` have dotted paths.
pub fn reference_fields(schema: &AggregateSchema) -> Vec<(String, ReferenceRules)> {
    let mut out = Vec::new();
    collect_fields(&schema.column_types, "", &mut out);
    out
}

fn collect_fields(
    columns: &BTreeMap<String, ColumnSpec>,
    prefix: &str,
    out: &mut Vec<(String, ReferenceRules)>,
) {
    for (name, column) in columns {
        let path = format!("{prefix}{name}");
        if column.rules.format == Some(Format::Reference) {
            out.push((
                path.clone(),
                column.rules.reference.clone().unwrap_or_default(),
            ));
        }
        if let Some(properties) = &column.rules.properties {
            collect_fields(properties, &format!("{path}."), out);
        }
    }
}

/// The rules of the reference field at `path`, if the schema declares one there.
pub fn reference_rules(schema: &AggregateSchema, path: &str) -> Option<ReferenceRules> {
    reference_fields(schema)
        .into_iter()
        .find(|(field, _)| field == path)
        .map(|(_, rules)| rules)
}

/// The value at a dotted path inside an object.
pub fn value_at<'a>(object: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut segments = path.split('.');
    let mut value = object.get(segments.next()?)?;
    for segment in segments {
        value = value.as_object()?.get(segment)?;
    }
    Some(value)
}

fn value_at_mut<'a>(object: &'a mut Map<String, Value>, path: &str) -> Option<&'a mut Value> {
    let mut segments = path.split('.');
    let mut value = object.get_mut(segments.next()?)?;
    for segment in segments {
        value = value.as_object_mut()?.get_mut(segment)?;
    }
    Some(value)
}

/// Rewrites every reference value of `payload` to its canonical `type#id` (step 10 of
/// `docs/server.md`, "Writes").
///
/// Runs after the schema validation, which has already checked the syntax and the
/// `aggregate_type` rule. A legacy three-part value whose first segment is not `tenant` (the
/// writer's tenant, compared case-insensitively) is refused with `reference <path> must point
/// into the same tenant`. `check` is called for every reference with its path, its parsed
/// value and its rules; the caller enforces `integrity` there (the targets live in a store).
pub fn normalize_references(
    schema: &AggregateSchema,
    aggregate_type: &str,
    tenant: &str,
    payload: &mut Value,
    check: &mut dyn FnMut(&str, &Reference, &ReferenceRules) -> Result<()>,
) -> Result<()> {
    let Value::Object(object) = payload else {
        return Ok(());
    };
    for (path, rules) in reference_fields(schema) {
        let Some(slot) = value_at_mut(object, &path) else {
            continue;
        };
        let Value::String(text) = slot else {
            continue;
        };
        let reference = Reference::parse(text, aggregate_type)?;
        if let Some(wanted) = rules
            .aggregate_type
            .as_deref()
            .filter(|wanted| *wanted != reference.aggregate_type)
        {
            return Err(CoreError::SchemaViolation(format!(
                "reference {path} must target aggregate type {wanted}"
            )));
        }
        if reference
            .tenant
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case(tenant))
        {
            return Err(CoreError::SchemaViolation(format!(
                "reference {path} must point into the same tenant"
            )));
        }
        check(&path, &reference, &rules)?;
        *slot = Value::String(reference.canonical());
    }
    Ok(())
}

/// The references a state holds: every reference field whose value is a well-formed reference,
/// in column order. Stored values are canonical; anything unparseable (written before the
/// column was a reference) is skipped, and so is a legacy value naming another tenant.
pub fn state_references(
    schema: &AggregateSchema,
    aggregate_type: &str,
    tenant: &str,
    state: &Map<String, Value>,
) -> Vec<ReferenceLink> {
    reference_fields(schema)
        .into_iter()
        .filter_map(|(path, _)| {
            let text = value_at(state, &path)?.as_str()?;
            let reference = Reference::parse(text, aggregate_type).ok()?;
            if reference
                .tenant
                .as_deref()
                .is_some_and(|t| !t.eq_ignore_ascii_case(tenant))
            {
                return None;
            }
            Some(ReferenceLink {
                path,
                target_type: reference.aggregate_type,
                target_id: reference.aggregate_id,
            })
        })
        .collect()
}

/// The payload of a `_ref_nullify` event that sets each of `paths` to `null` in `state`.
///
/// State merges replace whole top-level keys, so a nested path carries its whole top-level
/// value with only the referring field cleared. Paths absent from the state are left out.
pub fn nullify_payload(state: &Map<String, Value>, paths: &[&str]) -> Value {
    let mut payload = Map::new();
    for path in paths {
        let top = path.split('.').next().unwrap_or(path);
        if !state.contains_key(top) {
            continue;
        }
        if !payload.contains_key(top) {
            let current = state.get(top).cloned().unwrap_or(Value::Null);
            payload.insert(top.to_owned(), current);
        }
        if let Some(slot) = value_at_mut(&mut payload, path) {
            *slot = Value::Null;
        }
    }
    Value::Object(payload)
}

/// The note of a `_ref_nullify` event caused by archiving `target_type#target_id`.
pub fn nullify_note(target_type: &str, target_id: &str) -> String {
    format!("auto-nullify due to {target_type}#{target_id}")
}

/// The error of an archive blocked by referrers (`docs/server.md`, "Archive and restore"), naming
/// the first five as `<tenant>:<type>:<id> (<path>)`.
pub fn archive_blocked(
    tenant: &str,
    target_type: &str,
    target_id: &str,
    blocking: &[Referrer],
) -> CoreError {
    let named: Vec<String> = blocking
        .iter()
        .take(BLOCKING_REFERRERS_NAMED)
        .map(|r| {
            format!(
                "{tenant}:{}:{} ({})",
                r.aggregate_type, r.aggregate_id, r.path
            )
        })
        .collect();
    CoreError::SchemaViolation(format!(
        "aggregate {target_type}:{target_id} cannot be archived; referenced by {}",
        named.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::schema::SchemaMap;

    fn invoice() -> AggregateSchema {
        let map = SchemaMap::from_json(
            r#"{"invoice": {"aggregate": "invoice", "snapshot_threshold": null,
            "locked": false, "field_locks": [],
            "column_types": {
              "customer": {"type": "text", "format": "reference",
                           "reference": {"aggregate_type": "person", "cascade": "nullify"}},
              "billing": {"type": "object", "properties": {
                  "payer": {"type": "text", "format": "reference",
                            "reference": {"integrity": "weak"}}}},
              "total": "integer"},
            "events": {"invoice_created": {"fields": []}},
            "created_at": "2025-11-27T10:00:00Z", "updated_at": "2025-11-27T10:00:00Z"}}"#,
        )
        .expect("valid schema");
        map.get("invoice").cloned().expect("invoice schema")
    }

    #[test]
    fn fields_and_rules() {
        let schema = invoice();
        let fields = reference_fields(&schema);
        let paths: Vec<&str> = fields.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["billing.payer", "customer"]);
        assert_eq!(
            reference_rules(&schema, "customer").map(|r| r.cascade),
            Some(crate::schema::ReferenceCascade::Nullify)
        );
        assert!(reference_rules(&schema, "total").is_none());
    }

    #[test]
    fn normalises_and_refuses_other_tenants() {
        let schema = invoice();
        let mut seen = Vec::new();
        let mut payload = json!({"customer": "acme#person#p-1", "billing": {"payer": "#i-2"}});
        normalize_references(
            &schema,
            "invoice",
            "acme",
            &mut payload,
            &mut |path, r, _| {
                seen.push((path.to_owned(), r.canonical()));
                Ok(())
            },
        )
        .expect("normalises");
        assert_eq!(
            payload,
            json!({"customer": "person#p-1", "billing": {"payer": "invoice#i-2"}})
        );
        assert_eq!(seen.len(), 2);
        let mut foreign = json!({"customer": "other#person#p-1"});
        let err = normalize_references(&schema, "invoice", "acme", &mut foreign, &mut |_, _, _| {
            Ok(())
        })
        .expect_err("foreign tenant");
        assert_eq!(
            err.to_string(),
            "schema violation: reference customer must point into the same tenant"
        );
        let mut wrong = json!({"customer": "company#c-1"});
        let err =
            normalize_references(
                &schema,
                "invoice",
                "acme",
                &mut wrong,
                &mut |_, _, _| Ok(()),
            )
            .expect_err("wrong type");
        assert!(err
            .to_string()
            .ends_with("reference customer must target aggregate type person"));
    }

    #[test]
    fn state_links_and_blocked_message() {
        let schema = invoice();
        let state = json!({"customer": "person#p-1", "billing": {"payer": null}, "total": 3});
        let links = state_references(
            &schema,
            "invoice",
            "acme",
            state.as_object().expect("object"),
        );
        assert_eq!(
            links,
            [ReferenceLink {
                path: "customer".into(),
                target_type: "person".into(),
                target_id: "p-1".into()
            }]
        );
        let blocking: Vec<Referrer> = (0..7)
            .map(|n| Referrer {
                aggregate_type: "invoice".into(),
                aggregate_id: format!("i-{n}"),
                path: "customer".into(),
            })
            .collect();
        let message = archive_blocked("acme", "person", "p-1", &blocking).to_string();
        assert!(message.contains(
            "aggregate person:p-1 cannot be archived; referenced by acme:invoice:i-0 (customer), "
        ));
        assert!(message.ends_with("acme:invoice:i-4 (customer)"));
        assert_eq!(
            nullify_note("person", "p-1"),
            "auto-nullify due to person#p-1"
        );
    }
}
