//! The JSON view of a control response, and the assertions on it.

use eventdbx_proto::message;
use eventdbx_proto::schema::control_capnp::control_response::payload::Which;
use serde_json::{json, Value};

/// A control error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Stable code.
    pub code: String,
    /// Display text.
    pub message: String,
}

impl ApiError {
    /// `(code, message)` for assertions.
    pub fn pair(&self) -> (&str, &str) {
        (&self.code, &self.message)
    }
}

/// A reply: its JSON view, or the error.
pub type Reply = Result<Value, ApiError>;

fn text(field: capnp::Result<capnp::text::Reader<'_>>) -> String {
    field
        .expect("text field")
        .to_str()
        .expect("utf-8 text")
        .to_owned()
}

fn parse(field: capnp::Result<capnp::text::Reader<'_>>) -> Value {
    let raw = text(field);
    if raw.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(&raw).unwrap_or_else(|err| panic!("reply JSON {raw:?}: {err}"))
}

fn cursor(has: bool, field: capnp::Result<capnp::text::Reader<'_>>) -> Value {
    if has {
        Value::String(text(field))
    } else {
        Value::Null
    }
}

/// The JSON view of a `ControlResponse`: JSON text fields parsed, flags folded in.
pub fn decode(bytes: &[u8]) -> Reply {
    let decoded = message::decode_response(bytes).expect("decode response");
    let response = decoded.get().expect("response root");
    let which = response
        .get_payload()
        .which()
        .expect("known response member");
    Ok(match which {
        Which::Error(e) => {
            let e = e.expect("error");
            return Err(ApiError {
                code: text(e.get_code()),
                message: text(e.get_message()),
            });
        }
        Which::ListAggregates(r) => {
            let r = r.expect("member");
            json!({"aggregates": parse(r.get_aggregates_json()),
                   "next_cursor": cursor(r.get_has_next_cursor(), r.get_next_cursor())})
        }
        Which::GetAggregate(r) => {
            let r = r.expect("member");
            json!({"found": r.get_found(), "aggregate": parse(r.get_aggregate_json())})
        }
        Which::ListEvents(r) => {
            let r = r.expect("member");
            json!({"events": parse(r.get_events_json()),
                   "next_cursor": cursor(r.get_has_next_cursor(), r.get_next_cursor())})
        }
        Which::AppendEvent(r) => parse(r.expect("member").get_event_json()),
        Which::VerifyAggregate(r) => Value::String(text(r.expect("member").get_merkle_root())),
        Which::SelectAggregate(r) => {
            let r = r.expect("member");
            json!({"found": r.get_found(), "selection": parse(r.get_selection_json())})
        }
        Which::CreateAggregate(r) => parse(r.expect("member").get_aggregate_json()),
        Which::SetAggregateArchive(r) => parse(r.expect("member").get_aggregate_json()),
        Which::ListSchemas(r) => parse(r.expect("member").get_schemas_json()),
        Which::ReplaceSchemas(r) => json!(r.expect("member").get_replaced()),
        Which::TenantAssign(r) => {
            let r = r.expect("member");
            json!({"changed": r.get_changed(), "shard_id": text(r.get_shard_id())})
        }
        Which::TenantUnassign(r) => json!({"changed": r.expect("member").get_changed()}),
        Which::TenantQuotaSet(r) => {
            let r = r.expect("member");
            json!({"changed": r.get_changed(), "quota_mb": r.get_quota_mb(),
                   "has_quota": r.get_has_quota()})
        }
        Which::TenantQuotaClear(r) => json!({"changed": r.expect("member").get_changed()}),
        Which::TenantQuotaRecalc(r) => {
            json!({"storage_bytes": r.expect("member").get_storage_bytes()})
        }
        Which::TenantReload(r) => json!({"reloaded": r.expect("member").get_reloaded()}),
        Which::TenantSchemaPublish(r) => {
            let r = r.expect("member");
            json!({"version_id": text(r.get_version_id()), "activated": r.get_activated(),
                   "skipped": r.get_skipped()})
        }
        Which::CreateSnapshot(r) => parse(r.expect("member").get_snapshot_json()),
        Which::ListSnapshots(r) => parse(r.expect("member").get_snapshots_json()),
        Which::GetSnapshot(r) => {
            let r = r.expect("member");
            json!({"found": r.get_found(), "snapshot": parse(r.get_snapshot_json())})
        }
        Which::ListReferrers(r) => parse(r.expect("member").get_referrers_json()),
        Which::Admin(r) => parse(r.expect("member").get_result_json()),
        Which::ReadOutbox(r) => {
            let r = r.expect("member");
            let next = if r.get_has_next_after_event_id() {
                json!(r.get_next_after_event_id())
            } else {
                Value::Null
            };
            json!({"events": parse(r.get_events_json()), "next_after_event_id": next})
        }
        Which::TenantList(r) => parse(r.expect("member").get_tenants_json()),
        Which::TenantSchemaHistory(r) => parse(r.expect("member").get_manifest_json()),
        Which::TenantSchemaActivate(r) => {
            let r = r.expect("member");
            json!({"version_id": text(r.get_version_id()), "activated": r.get_activated(),
                   "action": text(r.get_action())})
        }
        Which::Subscribe(r) => {
            let r = r.expect("member");
            json!({"subscription_id": r.get_subscription_id(),
                   "start_position": r.get_start_position()})
        }
        Which::Unsubscribe(r) => json!({"found": r.expect("member").get_found()}),
        Which::SubscriptionAck(r) => json!({"found": r.expect("member").get_found()}),
        Which::SubscriptionBatch(r) => {
            let r = r.expect("member");
            let events: Vec<Value> = r
                .get_events()
                .expect("events")
                .iter()
                .map(|e| json!({"position": e.get_position(), "event": parse(e.get_event_json())}))
                .collect();
            json!({"subscription_id": r.get_subscription_id(), "events": events,
                   "head": r.get_head(), "last_position": r.get_last_position()})
        }
    })
}

/// The error of a reply that must fail.
#[track_caller]
pub fn err(reply: Reply) -> ApiError {
    match reply {
        Ok(value) => panic!("expected an error, got {value}"),
        Err(err) => err,
    }
}

/// The value of a reply that must succeed.
#[track_caller]
pub fn ok(reply: Reply) -> Value {
    match reply {
        Ok(value) => value,
        Err(err) => panic!("expected success, got {}: {}", err.code, err.message),
    }
}

/// The `order` schema of the common set-up (events `order_created`, `order_status_updated`).
pub const ORDER_SCHEMA: &str = r#"{"order": {"aggregate": "order", "snapshot_threshold": null,
  "locked": false, "field_locks": [], "hidden": false, "hidden_fields": [], "column_types": {},
  "events": {"order_created": {"fields": []}, "order_status_updated": {"fields": []}},
  "created_at": "2025-11-27T10:00:00Z", "updated_at": "2025-11-27T10:00:00Z"}}"#;
