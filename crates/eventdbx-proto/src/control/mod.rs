//! Typed control requests and replies: one owned Rust type per member of the `ControlRequest`
//! and `ControlResponse` unions, with `encode` into the Cap'n Proto builders and `decode` from
//! the readers.
//!
//! The server and the client both speak through these types, so a request is written once, not
//! once per side against the generated code. Encoding is byte-identical to what both sides built
//! by hand before: text fields are always set, optional fields (a text or number with its
//! `has…` flag) are set only when present, and replies keep the few defaults the reference sets
//! (an empty `nextCursor`, an empty JSON text when something is not found).
//!
//! ```
//! use eventdbx_proto::control::{self, Request, VerifyAggregateRequest};
//!
//! let request = Request::VerifyAggregate(VerifyAggregateRequest {
//!     aggregate_type: "order".into(),
//!     aggregate_id: "o-1".into(),
//! });
//! let bytes = request.encode(7)?;
//! assert_eq!(bytes.len(), 72);
//! let (id, decoded) = control::decode_request(&bytes)?;
//! assert_eq!((id, decoded?), (7, request));
//! # Ok::<(), eventdbx_proto::ProtoError>(())
//! ```
//!
//! # Layout
//! One file per request family, each holding its requests and replies: [`aggregates`] (reads
//! of aggregates), [`events`] (event pages and the outbox), [`writes`] (create, append, patch,
//! archive), [`schemas`], [`tenants`], [`snapshots`], [`admin`] and
//! [`subscriptions`]. This file holds the
//! [`Request`] and [`Reply`] unions and the message-level encoding.

pub mod admin;
pub mod aggregates;
pub mod events;
pub mod schemas;
pub mod snapshots;
pub mod subscriptions;
pub mod tenants;
pub mod writes;

#[cfg(test)]
mod tests;

use capnp::text_list;

use crate::message;
use crate::schema::control_capnp::{control_request, control_response};
use crate::{ProtoError, Result};

pub use admin::{AdminRequest, AdminResponse};
pub use aggregates::{
    GetAggregateRequest, GetAggregateResponse, ListAggregatesRequest, ListAggregatesResponse,
    ListReferrersRequest, ListReferrersResponse, SelectAggregateRequest, SelectAggregateResponse,
    VerifyAggregateRequest, VerifyAggregateResponse,
};
pub use events::{ListEventsRequest, ListEventsResponse, ReadOutboxRequest, ReadOutboxResponse};
pub use schemas::{
    ListSchemasRequest, ListSchemasResponse, ReplaceSchemasRequest, ReplaceSchemasResponse,
};
pub use snapshots::{
    CreateSnapshotRequest, CreateSnapshotResponse, GetSnapshotRequest, GetSnapshotResponse,
    ListSnapshotsRequest, ListSnapshotsResponse,
};
pub use subscriptions::{
    SubscribeRequest, SubscribeResponse, SubscribedEvent, SubscriptionAckRequest,
    SubscriptionAckResponse, SubscriptionBatch, SubscriptionStart, UnsubscribeRequest,
    UnsubscribeResponse,
};
pub use tenants::{
    TenantAssignRequest, TenantAssignResponse, TenantListRequest, TenantListResponse,
    TenantQuotaClearRequest, TenantQuotaClearResponse, TenantQuotaRecalcRequest,
    TenantQuotaRecalcResponse, TenantQuotaSetRequest, TenantQuotaSetResponse, TenantReloadRequest,
    TenantReloadResponse, TenantSchemaActivateRequest, TenantSchemaActivateResponse,
    TenantSchemaHistoryRequest, TenantSchemaHistoryResponse, TenantSchemaPublishRequest,
    TenantSchemaPublishResponse, TenantUnassignRequest, TenantUnassignResponse,
};
pub use writes::{
    AppendEventResponse, CreateAggregateResponse, PublishTarget, SetAggregateArchiveRequest,
    SetAggregateArchiveResponse, WriteRequest,
};

/// The payload of a `ControlRequest`: one member per request of the protocol.
///
/// `appendEvent`, `patchEvent` and `createAggregate` share one layout on the wire and one type
/// here, [`WriteRequest`]; the member says which write it is.
///
/// Deliberately exhaustive: a new request must be handled by the server's dispatch, which then
/// fails to compile until it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    ListAggregates(ListAggregatesRequest),
    GetAggregate(GetAggregateRequest),
    ListEvents(ListEventsRequest),
    AppendEvent(WriteRequest),
    VerifyAggregate(VerifyAggregateRequest),
    /// `patchEvent`: the write's body is the RFC 6902 patch.
    PatchEvent(WriteRequest),
    SelectAggregate(SelectAggregateRequest),
    CreateAggregate(WriteRequest),
    SetAggregateArchive(SetAggregateArchiveRequest),
    ListSchemas(ListSchemasRequest),
    ReplaceSchemas(ReplaceSchemasRequest),
    TenantAssign(TenantAssignRequest),
    TenantUnassign(TenantUnassignRequest),
    TenantQuotaSet(TenantQuotaSetRequest),
    TenantQuotaClear(TenantQuotaClearRequest),
    TenantQuotaRecalc(TenantQuotaRecalcRequest),
    TenantReload(TenantReloadRequest),
    TenantSchemaPublish(TenantSchemaPublishRequest),
    CreateSnapshot(CreateSnapshotRequest),
    ListSnapshots(ListSnapshotsRequest),
    GetSnapshot(GetSnapshotRequest),
    ListReferrers(ListReferrersRequest),
    ReadOutbox(ReadOutboxRequest),
    TenantList(TenantListRequest),
    TenantSchemaHistory(TenantSchemaHistoryRequest),
    TenantSchemaActivate(TenantSchemaActivateRequest),
    Admin(AdminRequest),
    Subscribe(SubscribeRequest),
    Unsubscribe(UnsubscribeRequest),
    SubscriptionAck(SubscriptionAckRequest),
}

/// The payload of a `ControlResponse`: one member per reply, plus the error reply.
///
/// There is no `patchEvent` reply: a patch is answered with [`Reply::AppendEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    ListAggregates(ListAggregatesResponse),
    GetAggregate(GetAggregateResponse),
    ListEvents(ListEventsResponse),
    AppendEvent(AppendEventResponse),
    VerifyAggregate(VerifyAggregateResponse),
    SelectAggregate(SelectAggregateResponse),
    Error(ErrorResponse),
    CreateAggregate(CreateAggregateResponse),
    SetAggregateArchive(SetAggregateArchiveResponse),
    ListSchemas(ListSchemasResponse),
    ReplaceSchemas(ReplaceSchemasResponse),
    TenantAssign(TenantAssignResponse),
    TenantUnassign(TenantUnassignResponse),
    TenantQuotaSet(TenantQuotaSetResponse),
    TenantQuotaClear(TenantQuotaClearResponse),
    TenantQuotaRecalc(TenantQuotaRecalcResponse),
    TenantReload(TenantReloadResponse),
    TenantSchemaPublish(TenantSchemaPublishResponse),
    CreateSnapshot(CreateSnapshotResponse),
    ListSnapshots(ListSnapshotsResponse),
    GetSnapshot(GetSnapshotResponse),
    ListReferrers(ListReferrersResponse),
    ReadOutbox(ReadOutboxResponse),
    TenantList(TenantListResponse),
    TenantSchemaHistory(TenantSchemaHistoryResponse),
    TenantSchemaActivate(TenantSchemaActivateResponse),
    Admin(AdminResponse),
    Subscribe(SubscribeResponse),
    Unsubscribe(UnsubscribeResponse),
    SubscriptionAck(SubscriptionAckResponse),
    /// Pushed by the server with the subscribe request's id.
    SubscriptionBatch(SubscriptionBatch),
}

/// `ControlError`: a stable code string (`docs/errors.md`) and a message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorResponse {
    pub code: String,
    pub message: String,
}

/// Decodes a `ControlRequest` message into its id and payload.
///
/// The outer error means the bytes are not a `ControlRequest` at all. The inner one means the
/// id was read but the payload was not (an unknown member, from a newer peer, or an unreadable
/// field): the server answers that with an error reply carrying the id.
pub fn decode_request(bytes: &[u8]) -> Result<(u64, Result<Request>)> {
    let decoded = message::decode_request(bytes)?;
    let root = decoded.get()?;
    Ok((root.get_id(), Request::decode(root.get_payload())))
}

/// Decodes a `ControlResponse` message into its id and payload.
pub fn decode_reply(bytes: &[u8]) -> Result<(u64, Reply)> {
    let decoded = message::decode_response(bytes)?;
    let root = decoded.get()?;
    Ok((root.get_id(), Reply::decode(root.get_payload())?))
}

impl Request {
    /// The member's name in the schema, for logs, metrics and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Request::ListAggregates(_) => "listAggregates",
            Request::GetAggregate(_) => "getAggregate",
            Request::ListEvents(_) => "listEvents",
            Request::AppendEvent(_) => "appendEvent",
            Request::VerifyAggregate(_) => "verifyAggregate",
            Request::PatchEvent(_) => "patchEvent",
            Request::SelectAggregate(_) => "selectAggregate",
            Request::CreateAggregate(_) => "createAggregate",
            Request::SetAggregateArchive(_) => "setAggregateArchive",
            Request::ListSchemas(_) => "listSchemas",
            Request::ReplaceSchemas(_) => "replaceSchemas",
            Request::TenantAssign(_) => "tenantAssign",
            Request::TenantUnassign(_) => "tenantUnassign",
            Request::TenantQuotaSet(_) => "tenantQuotaSet",
            Request::TenantQuotaClear(_) => "tenantQuotaClear",
            Request::TenantQuotaRecalc(_) => "tenantQuotaRecalc",
            Request::TenantReload(_) => "tenantReload",
            Request::TenantSchemaPublish(_) => "tenantSchemaPublish",
            Request::CreateSnapshot(_) => "createSnapshot",
            Request::ListSnapshots(_) => "listSnapshots",
            Request::GetSnapshot(_) => "getSnapshot",
            Request::ListReferrers(_) => "listReferrers",
            Request::ReadOutbox(_) => "readOutbox",
            Request::TenantList(_) => "tenantList",
            Request::TenantSchemaHistory(_) => "tenantSchemaHistory",
            Request::TenantSchemaActivate(_) => "tenantSchemaActivate",
            Request::Admin(_) => "admin",
            Request::Subscribe(_) => "subscribe",
            Request::Unsubscribe(_) => "unsubscribe",
            Request::SubscriptionAck(_) => "subscriptionAck",
        }
    }

    /// The whole `ControlRequest` message with this payload and `id`, as one stream message.
    pub fn encode(&self, id: u64) -> Result<Vec<u8>> {
        message::encode_request(|mut request| {
            request.set_id(id);
            self.encode_payload(request.init_payload())
        })
    }

    /// Fills the request union with this member.
    pub fn encode_payload(&self, payload: control_request::payload::Builder<'_>) -> Result<()> {
        match self {
            Request::ListAggregates(r) => r.encode(payload.init_list_aggregates()),
            Request::GetAggregate(r) => r.encode(payload.init_get_aggregate()),
            Request::ListEvents(r) => r.encode(payload.init_list_events()),
            Request::AppendEvent(r) => r.encode_append(payload.init_append_event()),
            Request::VerifyAggregate(r) => r.encode(payload.init_verify_aggregate()),
            Request::PatchEvent(r) => r.encode_patch(payload.init_patch_event()),
            Request::SelectAggregate(r) => r.encode(payload.init_select_aggregate()),
            Request::CreateAggregate(r) => r.encode_create(payload.init_create_aggregate()),
            Request::SetAggregateArchive(r) => r.encode(payload.init_set_aggregate_archive()),
            Request::ListSchemas(r) => r.encode(payload.init_list_schemas()),
            Request::ReplaceSchemas(r) => r.encode(payload.init_replace_schemas()),
            Request::TenantAssign(r) => r.encode(payload.init_tenant_assign()),
            Request::TenantUnassign(r) => r.encode(payload.init_tenant_unassign()),
            Request::TenantQuotaSet(r) => r.encode(payload.init_tenant_quota_set()),
            Request::TenantQuotaClear(r) => r.encode(payload.init_tenant_quota_clear()),
            Request::TenantQuotaRecalc(r) => r.encode(payload.init_tenant_quota_recalc()),
            Request::TenantReload(r) => r.encode(payload.init_tenant_reload()),
            Request::TenantSchemaPublish(r) => r.encode(payload.init_tenant_schema_publish()),
            Request::CreateSnapshot(r) => r.encode(payload.init_create_snapshot()),
            Request::ListSnapshots(r) => r.encode(payload.init_list_snapshots()),
            Request::GetSnapshot(r) => r.encode(payload.init_get_snapshot()),
            Request::ListReferrers(r) => r.encode(payload.init_list_referrers()),
            Request::ReadOutbox(r) => r.encode(payload.init_read_outbox()),
            Request::TenantList(r) => r.encode(payload.init_tenant_list()),
            Request::TenantSchemaHistory(r) => r.encode(payload.init_tenant_schema_history()),
            Request::TenantSchemaActivate(r) => r.encode(payload.init_tenant_schema_activate()),
            Request::Admin(r) => r.encode(payload.init_admin()),
            Request::Subscribe(r) => r.encode(payload.init_subscribe()),
            Request::Unsubscribe(r) => r.encode(payload.init_unsubscribe()),
            Request::SubscriptionAck(r) => r.encode(payload.init_subscription_ack()),
        }
    }

    /// Reads the request union. An unknown member is [`ProtoError::Malformed`].
    pub fn decode(payload: control_request::payload::Reader<'_>) -> Result<Self> {
        use control_request::payload::Which;
        let which = payload
            .which()
            .map_err(|err| ProtoError::Malformed(format!("unknown request: {err}")))?;
        Ok(match which {
            Which::ListAggregates(r) => Request::ListAggregates(ListAggregatesRequest::decode(r?)?),
            Which::GetAggregate(r) => Request::GetAggregate(GetAggregateRequest::decode(r?)?),
            Which::ListEvents(r) => Request::ListEvents(ListEventsRequest::decode(r?)?),
            Which::AppendEvent(r) => Request::AppendEvent(WriteRequest::decode_append(r?)?),
            Which::VerifyAggregate(r) => {
                Request::VerifyAggregate(VerifyAggregateRequest::decode(r?)?)
            }
            Which::PatchEvent(r) => Request::PatchEvent(WriteRequest::decode_patch(r?)?),
            Which::SelectAggregate(r) => {
                Request::SelectAggregate(SelectAggregateRequest::decode(r?)?)
            }
            Which::CreateAggregate(r) => Request::CreateAggregate(WriteRequest::decode_create(r?)?),
            Which::SetAggregateArchive(r) => {
                Request::SetAggregateArchive(SetAggregateArchiveRequest::decode(r?)?)
            }
            Which::ListSchemas(r) => Request::ListSchemas(ListSchemasRequest::decode(r?)?),
            Which::ReplaceSchemas(r) => Request::ReplaceSchemas(ReplaceSchemasRequest::decode(r?)?),
            Which::TenantAssign(r) => Request::TenantAssign(TenantAssignRequest::decode(r?)?),
            Which::TenantUnassign(r) => Request::TenantUnassign(TenantUnassignRequest::decode(r?)?),
            Which::TenantQuotaSet(r) => Request::TenantQuotaSet(TenantQuotaSetRequest::decode(r?)?),
            Which::TenantQuotaClear(r) => {
                Request::TenantQuotaClear(TenantQuotaClearRequest::decode(r?)?)
            }
            Which::TenantQuotaRecalc(r) => {
                Request::TenantQuotaRecalc(TenantQuotaRecalcRequest::decode(r?)?)
            }
            Which::TenantReload(r) => Request::TenantReload(TenantReloadRequest::decode(r?)?),
            Which::TenantSchemaPublish(r) => {
                Request::TenantSchemaPublish(TenantSchemaPublishRequest::decode(r?)?)
            }
            Which::CreateSnapshot(r) => Request::CreateSnapshot(CreateSnapshotRequest::decode(r?)?),
            Which::ListSnapshots(r) => Request::ListSnapshots(ListSnapshotsRequest::decode(r?)?),
            Which::GetSnapshot(r) => Request::GetSnapshot(GetSnapshotRequest::decode(r?)?),
            Which::ListReferrers(r) => Request::ListReferrers(ListReferrersRequest::decode(r?)?),
            Which::ReadOutbox(r) => Request::ReadOutbox(ReadOutboxRequest::decode(r?)?),
            Which::TenantList(r) => Request::TenantList(TenantListRequest::decode(r?)?),
            Which::TenantSchemaHistory(r) => {
                Request::TenantSchemaHistory(TenantSchemaHistoryRequest::decode(r?)?)
            }
            Which::TenantSchemaActivate(r) => {
                Request::TenantSchemaActivate(TenantSchemaActivateRequest::decode(r?)?)
            }
            Which::Admin(r) => Request::Admin(AdminRequest::decode(r?)?),
            Which::Subscribe(r) => Request::Subscribe(SubscribeRequest::decode(r?)?),
            Which::Unsubscribe(r) => Request::Unsubscribe(UnsubscribeRequest::decode(r?)?),
            Which::SubscriptionAck(r) => {
                Request::SubscriptionAck(SubscriptionAckRequest::decode(r?)?)
            }
        })
    }
}

impl Reply {
    /// The member's name in the schema (`"error"` for the error reply).
    pub fn name(&self) -> &'static str {
        match self {
            Reply::ListAggregates(_) => "listAggregates",
            Reply::GetAggregate(_) => "getAggregate",
            Reply::ListEvents(_) => "listEvents",
            Reply::AppendEvent(_) => "appendEvent",
            Reply::VerifyAggregate(_) => "verifyAggregate",
            Reply::SelectAggregate(_) => "selectAggregate",
            Reply::Error(_) => "error",
            Reply::CreateAggregate(_) => "createAggregate",
            Reply::SetAggregateArchive(_) => "setAggregateArchive",
            Reply::ListSchemas(_) => "listSchemas",
            Reply::ReplaceSchemas(_) => "replaceSchemas",
            Reply::TenantAssign(_) => "tenantAssign",
            Reply::TenantUnassign(_) => "tenantUnassign",
            Reply::TenantQuotaSet(_) => "tenantQuotaSet",
            Reply::TenantQuotaClear(_) => "tenantQuotaClear",
            Reply::TenantQuotaRecalc(_) => "tenantQuotaRecalc",
            Reply::TenantReload(_) => "tenantReload",
            Reply::TenantSchemaPublish(_) => "tenantSchemaPublish",
            Reply::CreateSnapshot(_) => "createSnapshot",
            Reply::ListSnapshots(_) => "listSnapshots",
            Reply::GetSnapshot(_) => "getSnapshot",
            Reply::ListReferrers(_) => "listReferrers",
            Reply::ReadOutbox(_) => "readOutbox",
            Reply::TenantList(_) => "tenantList",
            Reply::TenantSchemaHistory(_) => "tenantSchemaHistory",
            Reply::TenantSchemaActivate(_) => "tenantSchemaActivate",
            Reply::Admin(_) => "admin",
            Reply::Subscribe(_) => "subscribe",
            Reply::Unsubscribe(_) => "unsubscribe",
            Reply::SubscriptionAck(_) => "subscriptionAck",
            Reply::SubscriptionBatch(_) => "subscriptionBatch",
        }
    }

    /// The whole `ControlResponse` message with this payload and `id`, as one stream message.
    pub fn encode(&self, id: u64) -> Result<Vec<u8>> {
        message::encode_response(|mut response| {
            response.set_id(id);
            self.encode_payload(response.init_payload());
            Ok(())
        })
    }

    /// Fills the response union with this member. Nothing can fail: the one list (a batch's
    /// events) is capped by the server far below Cap'n Proto's limit.
    pub fn encode_payload(&self, payload: control_response::payload::Builder<'_>) {
        match self {
            Reply::ListAggregates(r) => r.encode(payload.init_list_aggregates()),
            Reply::GetAggregate(r) => r.encode(payload.init_get_aggregate()),
            Reply::ListEvents(r) => r.encode(payload.init_list_events()),
            Reply::AppendEvent(r) => r.encode(payload.init_append_event()),
            Reply::VerifyAggregate(r) => r.encode(payload.init_verify_aggregate()),
            Reply::SelectAggregate(r) => r.encode(payload.init_select_aggregate()),
            Reply::Error(r) => {
                let mut error = payload.init_error();
                error.set_code(r.code.as_str());
                error.set_message(r.message.as_str());
            }
            Reply::CreateAggregate(r) => r.encode(payload.init_create_aggregate()),
            Reply::SetAggregateArchive(r) => r.encode(payload.init_set_aggregate_archive()),
            Reply::ListSchemas(r) => r.encode(payload.init_list_schemas()),
            Reply::ReplaceSchemas(r) => r.encode(payload.init_replace_schemas()),
            Reply::TenantAssign(r) => r.encode(payload.init_tenant_assign()),
            Reply::TenantUnassign(r) => r.encode(payload.init_tenant_unassign()),
            Reply::TenantQuotaSet(r) => r.encode(payload.init_tenant_quota_set()),
            Reply::TenantQuotaClear(r) => r.encode(payload.init_tenant_quota_clear()),
            Reply::TenantQuotaRecalc(r) => r.encode(payload.init_tenant_quota_recalc()),
            Reply::TenantReload(r) => r.encode(payload.init_tenant_reload()),
            Reply::TenantSchemaPublish(r) => r.encode(payload.init_tenant_schema_publish()),
            Reply::CreateSnapshot(r) => r.encode(payload.init_create_snapshot()),
            Reply::ListSnapshots(r) => r.encode(payload.init_list_snapshots()),
            Reply::GetSnapshot(r) => r.encode(payload.init_get_snapshot()),
            Reply::ListReferrers(r) => r.encode(payload.init_list_referrers()),
            Reply::ReadOutbox(r) => r.encode(payload.init_read_outbox()),
            Reply::TenantList(r) => r.encode(payload.init_tenant_list()),
            Reply::TenantSchemaHistory(r) => r.encode(payload.init_tenant_schema_history()),
            Reply::TenantSchemaActivate(r) => r.encode(payload.init_tenant_schema_activate()),
            Reply::Admin(r) => r.encode(payload.init_admin()),
            Reply::Subscribe(r) => r.encode(payload.init_subscribe()),
            Reply::Unsubscribe(r) => r.encode(payload.init_unsubscribe()),
            Reply::SubscriptionAck(r) => r.encode(payload.init_subscription_ack()),
            Reply::SubscriptionBatch(r) => r.encode(payload.init_subscription_batch()),
        }
    }

    /// Reads the response union. An unknown member is [`ProtoError::Malformed`].
    pub fn decode(payload: control_response::payload::Reader<'_>) -> Result<Self> {
        use control_response::payload::Which;
        let which = payload
            .which()
            .map_err(|err| ProtoError::Malformed(format!("unknown reply member: {err}")))?;
        Ok(match which {
            Which::ListAggregates(r) => Reply::ListAggregates(ListAggregatesResponse::decode(r?)?),
            Which::GetAggregate(r) => Reply::GetAggregate(GetAggregateResponse::decode(r?)?),
            Which::ListEvents(r) => Reply::ListEvents(ListEventsResponse::decode(r?)?),
            Which::AppendEvent(r) => Reply::AppendEvent(AppendEventResponse::decode(r?)?),
            Which::VerifyAggregate(r) => {
                Reply::VerifyAggregate(VerifyAggregateResponse::decode(r?)?)
            }
            Which::SelectAggregate(r) => {
                Reply::SelectAggregate(SelectAggregateResponse::decode(r?)?)
            }
            Which::Error(r) => {
                let r = r?;
                Reply::Error(ErrorResponse {
                    code: text(r.get_code())?,
                    message: text(r.get_message())?,
                })
            }
            Which::CreateAggregate(r) => {
                Reply::CreateAggregate(CreateAggregateResponse::decode(r?)?)
            }
            Which::SetAggregateArchive(r) => {
                Reply::SetAggregateArchive(SetAggregateArchiveResponse::decode(r?)?)
            }
            Which::ListSchemas(r) => Reply::ListSchemas(ListSchemasResponse::decode(r?)?),
            Which::ReplaceSchemas(r) => Reply::ReplaceSchemas(ReplaceSchemasResponse::decode(r?)?),
            Which::TenantAssign(r) => Reply::TenantAssign(TenantAssignResponse::decode(r?)?),
            Which::TenantUnassign(r) => Reply::TenantUnassign(TenantUnassignResponse::decode(r?)?),
            Which::TenantQuotaSet(r) => Reply::TenantQuotaSet(TenantQuotaSetResponse::decode(r?)?),
            Which::TenantQuotaClear(r) => {
                Reply::TenantQuotaClear(TenantQuotaClearResponse::decode(r?)?)
            }
            Which::TenantQuotaRecalc(r) => {
                Reply::TenantQuotaRecalc(TenantQuotaRecalcResponse::decode(r?)?)
            }
            Which::TenantReload(r) => Reply::TenantReload(TenantReloadResponse::decode(r?)?),
            Which::TenantSchemaPublish(r) => {
                Reply::TenantSchemaPublish(TenantSchemaPublishResponse::decode(r?)?)
            }
            Which::CreateSnapshot(r) => Reply::CreateSnapshot(CreateSnapshotResponse::decode(r?)?),
            Which::ListSnapshots(r) => Reply::ListSnapshots(ListSnapshotsResponse::decode(r?)?),
            Which::GetSnapshot(r) => Reply::GetSnapshot(GetSnapshotResponse::decode(r?)?),
            Which::ListReferrers(r) => Reply::ListReferrers(ListReferrersResponse::decode(r?)?),
            Which::ReadOutbox(r) => Reply::ReadOutbox(ReadOutboxResponse::decode(r?)?),
            Which::TenantList(r) => Reply::TenantList(TenantListResponse::decode(r?)?),
            Which::TenantSchemaHistory(r) => {
                Reply::TenantSchemaHistory(TenantSchemaHistoryResponse::decode(r?)?)
            }
            Which::TenantSchemaActivate(r) => {
                Reply::TenantSchemaActivate(TenantSchemaActivateResponse::decode(r?)?)
            }
            Which::Admin(r) => Reply::Admin(AdminResponse::decode(r?)?),
            Which::Subscribe(r) => Reply::Subscribe(SubscribeResponse::decode(r?)?),
            Which::Unsubscribe(r) => Reply::Unsubscribe(UnsubscribeResponse::decode(r?)?),
            Which::SubscriptionAck(r) => {
                Reply::SubscriptionAck(SubscriptionAckResponse::decode(r?)?)
            }
            Which::SubscriptionBatch(r) => Reply::SubscriptionBatch(SubscriptionBatch::decode(r?)?),
        })
    }
}

/// Reads a text field.
pub(crate) fn text(field: capnp::Result<capnp::text::Reader<'_>>) -> Result<String> {
    Ok(field?.to_str()?.to_owned())
}

/// Reads a text field whose `has…` flag is `has`; the text is not touched when the flag is off.
pub(crate) fn optional_text(
    has: bool,
    field: capnp::Result<capnp::text::Reader<'_>>,
) -> Result<Option<String>> {
    has.then(|| text(field)).transpose()
}

/// Reads a list of texts.
pub(crate) fn texts(field: capnp::Result<text_list::Reader<'_>>) -> Result<Vec<String>> {
    field?
        .iter()
        .map(|item| Ok(item?.to_str()?.to_owned()))
        .collect()
}

/// A list length as Cap'n Proto wants it.
pub(crate) fn list_len(len: usize, what: &str) -> Result<u32> {
    u32::try_from(len).map_err(|_| ProtoError::InvalidUse(format!("too many {what}")))
}

/// Copies `items` into a freshly initialised text list.
pub(crate) fn fill_texts(mut list: text_list::Builder<'_>, items: &[String]) {
    for (index, item) in (0..list.len()).zip(items) {
        list.set(index, item.as_str());
    }
}
