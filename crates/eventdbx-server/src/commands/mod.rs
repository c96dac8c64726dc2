//! One file per request family: each typed request of `eventdbx_proto::control` gets an
//! [`Apply`] that runs it against the server state and returns the typed reply, which [`encode`]
//! turns back into bytes (mini-redis style, with the parsing in the protocol crate).
//!
//! Every command authorises first (token, tenant, action, resource), then validates, then looks
//! things up, so an unauthorised caller learns nothing (`docs/server.md`, "Authorisation first").

mod admin;
mod aggregates;
mod events;
mod resolve;
mod schemas;
mod snapshots;
pub(crate) mod subscribe;
mod tenant;
mod writes;

use std::sync::Arc;

use eventdbx_core::aggregate::Aggregate;
use eventdbx_core::schema::SchemaMap;
use eventdbx_core::write::WriteKind;
use eventdbx_proto::control::{
    self, AdminRequest, CreateSnapshotRequest, ErrorResponse, GetAggregateRequest,
    GetSnapshotRequest, ListAggregatesRequest, ListEventsRequest, ListReferrersRequest,
    ListSchemasRequest, ListSnapshotsRequest, ReadOutboxRequest, ReplaceSchemasRequest, Request,
    SelectAggregateRequest, SetAggregateArchiveRequest, SubscribeRequest, SubscriptionAckRequest,
    TenantListRequest, UnsubscribeRequest, VerifyAggregateRequest,
};

use crate::auth::Claims;
use crate::error::RequestError;
use crate::state::ServerState;

/// Replies are the protocol crate's typed replies, encoded by [`encode`].
pub(crate) use eventdbx_proto::control::Reply;
pub(crate) use writes::Write;

/// What a request runs with: the server, the session's tenant and hello token, and the largest
/// response the transport can carry.
pub(crate) struct Context<'a> {
    pub state: &'a ServerState,
    pub tenant: &'a str,
    pub hello_token: &'a str,
    pub response_limit: usize,
}

impl Context<'_> {
    /// Verifies a per-request token and authorises it for the session's tenant, an action and
    /// (optionally) a resource.
    pub fn authorize(
        &self,
        token: &str,
        action: &str,
        resource: Option<&str>,
    ) -> Result<Arc<Claims>, RequestError> {
        // The cached claims themselves: every request checks them, none changes them.
        let claims = self.state.auth.verify_shared(token)?;
        if !claims.allows_tenant(self.tenant) {
            return Err(RequestError::unauthorized());
        }
        claims.authorize(action, resource)?;
        Ok(claims)
    }

    /// The tenant's current schemas.
    pub fn schemas(&self) -> Arc<SchemaMap> {
        self.state.tenants.schemas(self.tenant)
    }

    /// Whether an aggregate type is hidden by its schema.
    pub fn hidden_type(&self, schemas: &SchemaMap, aggregate_type: &str) -> bool {
        schemas
            .get(aggregate_type)
            .is_some_and(|schema| schema.hidden)
    }

    /// Looks an aggregate up as a reader may see it (see [`Context::visible`]).
    pub fn visible_aggregate(
        &self,
        schemas: &SchemaMap,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<Aggregate>, RequestError> {
        Ok(self
            .state
            .store
            .get(self.tenant, aggregate_type, aggregate_id)?
            .and_then(|aggregate| self.visible(schemas, aggregate)))
    }

    /// The aggregate as a reader may see it: `None` for a hidden type, hidden fields removed.
    pub fn visible(&self, schemas: &SchemaMap, mut aggregate: Aggregate) -> Option<Aggregate> {
        let schema = schemas.get(&aggregate.aggregate_type);
        if schema.is_some_and(|s| s.hidden) {
            return None;
        }
        if let Some(schema) = schema {
            aggregate
                .state
                .retain(|key, _| !schema.hidden_fields.contains(key));
        }
        Some(aggregate)
    }
}

/// The resource string of an aggregate.
pub(crate) fn resource(aggregate_type: &str, aggregate_id: &str) -> String {
    format!("aggregate:{aggregate_type}:{aggregate_id}")
}

/// What every typed request of the protocol crate does on the server: run against the state.
pub(crate) trait Apply {
    /// Runs the request (blocking: call from a blocking thread).
    fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError>;
}

/// A decoded request, grouped the way the connection schedules it (reads inline, writes on the
/// committer, the rest on a blocking thread).
pub(crate) enum Command {
    ListAggregates(ListAggregatesRequest),
    GetAggregate(GetAggregateRequest),
    SelectAggregate(SelectAggregateRequest),
    VerifyAggregate(VerifyAggregateRequest),
    ListReferrers(ListReferrersRequest),
    ListEvents(ListEventsRequest),
    ReadOutbox(ReadOutboxRequest),
    Write(writes::Write),
    SetArchive(SetAggregateArchiveRequest),
    ListSchemas(ListSchemasRequest),
    ReplaceSchemas(ReplaceSchemasRequest),
    Tenant(tenant::TenantCommand),
    CreateSnapshot(CreateSnapshotRequest),
    ListSnapshots(ListSnapshotsRequest),
    GetSnapshot(GetSnapshotRequest),
    TenantList(TenantListRequest),
    Admin(AdminRequest),
    /// Answered by the session's push side on v2, refused on v1 (`subscribe`).
    Subscribe(SubscribeRequest),
    Unsubscribe(UnsubscribeRequest),
    SubscriptionAck(SubscriptionAckRequest),
}

/// Parses a request message. `Err` means the bytes are not a `ControlRequest` at all (the
/// connection is then closed without a reply); an unknown member or unreadable field is a
/// parsed request id with an error to answer.
pub(crate) fn parse(
    bytes: &[u8],
) -> Result<(u64, Result<Command, RequestError>), eventdbx_proto::ProtoError> {
    let (id, request) = control::decode_request(bytes)?;
    let command = request.map(Command::from).map_err(|err| match err {
        // The detail of an unreadable request, without the crate's "malformed" prefix.
        eventdbx_proto::ProtoError::Malformed(detail) => RequestError::serialization(detail),
        other => RequestError::serialization(other),
    });
    Ok((id, command))
}

impl From<Request> for Command {
    fn from(request: Request) -> Self {
        use tenant::TenantCommand;
        match request {
            Request::ListAggregates(r) => Command::ListAggregates(r),
            Request::GetAggregate(r) => Command::GetAggregate(r),
            Request::SelectAggregate(r) => Command::SelectAggregate(r),
            Request::VerifyAggregate(r) => Command::VerifyAggregate(r),
            Request::ListReferrers(r) => Command::ListReferrers(r),
            Request::ListEvents(r) => Command::ListEvents(r),
            Request::ReadOutbox(r) => Command::ReadOutbox(r),
            Request::AppendEvent(r) => Command::Write(writes::Write::new(WriteKind::Append, r)),
            Request::PatchEvent(r) => Command::Write(writes::Write::new(WriteKind::Patch, r)),
            Request::CreateAggregate(r) => Command::Write(writes::Write::new(WriteKind::Create, r)),
            Request::SetAggregateArchive(r) => Command::SetArchive(r),
            Request::ListSchemas(r) => Command::ListSchemas(r),
            Request::ReplaceSchemas(r) => Command::ReplaceSchemas(r),
            Request::TenantAssign(r) => Command::Tenant(TenantCommand::assign(r)),
            Request::TenantUnassign(r) => Command::Tenant(TenantCommand::unassign(r)),
            Request::TenantQuotaSet(r) => Command::Tenant(TenantCommand::quota_set(r)),
            Request::TenantQuotaClear(r) => Command::Tenant(TenantCommand::quota_clear(r)),
            Request::TenantQuotaRecalc(r) => Command::Tenant(TenantCommand::quota_recalc(r)),
            Request::TenantReload(r) => Command::Tenant(TenantCommand::reload(r)),
            Request::TenantSchemaPublish(r) => Command::Tenant(TenantCommand::publish(r)),
            Request::TenantSchemaHistory(r) => Command::Tenant(TenantCommand::history(r)),
            Request::TenantSchemaActivate(r) => Command::Tenant(TenantCommand::activate(r)),
            Request::CreateSnapshot(r) => Command::CreateSnapshot(r),
            Request::ListSnapshots(r) => Command::ListSnapshots(r),
            Request::GetSnapshot(r) => Command::GetSnapshot(r),
            Request::TenantList(r) => Command::TenantList(r),
            Request::Admin(r) => Command::Admin(r),
            Request::Subscribe(r) => Command::Subscribe(r),
            Request::Unsubscribe(r) => Command::Unsubscribe(r),
            Request::SubscriptionAck(r) => Command::SubscriptionAck(r),
        }
    }
}

impl Command {
    /// The request's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::ListAggregates(_) => "listAggregates",
            Command::GetAggregate(_) => "getAggregate",
            Command::SelectAggregate(_) => "selectAggregate",
            Command::VerifyAggregate(_) => "verifyAggregate",
            Command::ListReferrers(_) => "listReferrers",
            Command::ListEvents(_) => "listEvents",
            Command::ReadOutbox(_) => "readOutbox",
            Command::Write(write) => write.name(),
            Command::SetArchive(_) => "setAggregateArchive",
            Command::ListSchemas(_) => "listSchemas",
            Command::ReplaceSchemas(_) => "replaceSchemas",
            Command::Tenant(command) => command.name(),
            Command::CreateSnapshot(_) => "createSnapshot",
            Command::ListSnapshots(_) => "listSnapshots",
            Command::GetSnapshot(_) => "getSnapshot",
            Command::TenantList(_) => "tenantList",
            Command::Admin(_) => "admin",
            Command::Subscribe(_) => "subscribe",
            Command::Unsubscribe(_) => "unsubscribe",
            Command::SubscriptionAck(_) => "subscriptionAck",
        }
    }

    /// Runs the command (blocking: call from a blocking thread).
    pub fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        match self {
            Command::ListAggregates(c) => c.apply(ctx),
            Command::GetAggregate(c) => c.apply(ctx),
            Command::SelectAggregate(c) => c.apply(ctx),
            Command::VerifyAggregate(c) => c.apply(ctx),
            Command::ListReferrers(c) => c.apply(ctx),
            Command::ListEvents(c) => c.apply(ctx),
            Command::ReadOutbox(c) => c.apply(ctx),
            Command::Write(c) => c.apply(ctx),
            Command::SetArchive(c) => c.apply(ctx),
            Command::ListSchemas(c) => c.apply(ctx),
            Command::ReplaceSchemas(c) => c.apply(ctx),
            Command::Tenant(c) => c.apply(ctx),
            Command::CreateSnapshot(c) => c.apply(ctx),
            Command::ListSnapshots(c) => c.apply(ctx),
            Command::GetSnapshot(c) => c.apply(ctx),
            Command::TenantList(c) => c.apply(ctx),
            Command::Admin(c) => c.apply(ctx),
            Command::Subscribe(c) => c.apply(ctx),
            Command::Unsubscribe(c) => c.apply(ctx),
            Command::SubscriptionAck(c) => c.apply(ctx),
        }
    }
}

/// Encodes a response; an encoded reply over `limit` becomes a `response_too_large` error.
pub(crate) fn encode(id: u64, result: Result<Reply, RequestError>, limit: usize) -> Vec<u8> {
    let encoded = match &result {
        Ok(reply) => reply.encode(id),
        Err(err) => error_reply(err).encode(id),
    };
    match encoded {
        Ok(bytes) if bytes.len() <= limit => bytes,
        Ok(bytes) => error_reply(&RequestError::too_large(bytes.len(), limit))
            .encode(id)
            .unwrap_or_default(),
        Err(err) => error_reply(&RequestError::serialization(err))
            .encode(id)
            .unwrap_or_default(),
    }
}

fn error_reply(err: &RequestError) -> Reply {
    Reply::Error(ErrorResponse {
        code: err.code.clone(),
        message: err.message.clone(),
    })
}

/// The encoded size of a reply (used to cut list pages to fit).
pub(crate) fn encoded_len(reply: &Reply) -> usize {
    reply.encode(0).map_or(usize::MAX, |bytes| bytes.len())
}

/// Resolves `take` with the spec's defaults and cap; a take too large for the platform is
/// `invalid_schema`.
pub(crate) fn page_size(take: Option<u64>, default: u64, cap: u64) -> Result<usize, RequestError> {
    let take = take.unwrap_or(default).min(cap);
    usize::try_from(take).map_err(|_| RequestError::invalid("take exceeds platform limits"))
}

/// The largest prefix of `items` whose reply (built by `reply`) fits `limit`, found by binary
/// search; `Err` when not even one item fits.
pub(crate) fn fit_prefix<T>(
    items: &[T],
    limit: usize,
    reply: impl Fn(&[T]) -> Reply,
) -> Result<usize, RequestError> {
    if encoded_len(&reply(items)) <= limit {
        return Ok(items.len());
    }
    let (mut fits, mut fails) = (0usize, items.len());
    while fails - fits > 1 {
        let middle = fits + (fails - fits) / 2;
        if encoded_len(&reply(&items[..middle])) <= limit {
            fits = middle;
        } else {
            fails = middle;
        }
    }
    if fits == 0 {
        let len = encoded_len(&reply(&items[..1]));
        return Err(RequestError::too_large(len, limit));
    }
    Ok(fits)
}
