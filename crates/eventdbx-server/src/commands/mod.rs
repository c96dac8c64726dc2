//! One type per control request: `parse` turns the Cap'n Proto request into an owned command,
//! `apply` runs it against the server state, and the reply is encoded back (mini-redis style).
//!
//! Every command authorises first (token, tenant, action, resource), then validates, then looks
//! things up, so an unauthorised caller learns nothing (`00-decisions.md`).

mod admin;
mod aggregates;
mod events;
mod resolve;
mod schemas;
mod snapshots;
mod tenant;
mod writes;

use std::sync::Arc;

use capnp::text_list;
use eventdbx_core::aggregate::Aggregate;
use eventdbx_core::schema::SchemaMap;
use eventdbx_proto::message;
use eventdbx_proto::schema::control_capnp::{control_request, control_response};

use crate::auth::Claims;
use crate::error::RequestError;
use crate::state::ServerState;

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
    ) -> Result<Claims, RequestError> {
        let claims = self.state.auth.verify(token)?;
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

/// Reads a text field, turning unreadable text into a `serialization` error.
pub(crate) fn text(field: capnp::Result<capnp::text::Reader<'_>>) -> Result<String, RequestError> {
    Ok(field?.to_str()?.to_owned())
}

/// Reads a list of texts.
pub(crate) fn texts(
    field: capnp::Result<text_list::Reader<'_>>,
) -> Result<Vec<String>, RequestError> {
    field?
        .iter()
        .map(|item| Ok(item?.to_str()?.to_owned()))
        .collect()
}

/// A parsed request.
pub(crate) enum Command {
    ListAggregates(aggregates::ListAggregates),
    GetAggregate(aggregates::GetAggregate),
    SelectAggregate(aggregates::SelectAggregate),
    VerifyAggregate(aggregates::VerifyAggregate),
    ListReferrers(aggregates::ListReferrers),
    ListEvents(events::ListEvents),
    ReadOutbox(events::ReadOutbox),
    Write(writes::Write),
    SetArchive(writes::SetArchive),
    ListSchemas(schemas::ListSchemas),
    ReplaceSchemas(schemas::ReplaceSchemas),
    Tenant(tenant::TenantCommand),
    CreateSnapshot(snapshots::CreateSnapshot),
    ListSnapshots(snapshots::ListSnapshots),
    GetSnapshot(snapshots::GetSnapshot),
    TenantList(tenant::TenantList),
    Admin(admin::Admin),
}

/// A reply, encoded into the matching `ControlResponse` member.
pub(crate) enum Reply {
    ListAggregates {
        aggregates_json: String,
        next_cursor: Option<String>,
        resolved_json: Option<String>,
    },
    GetAggregate {
        aggregate_json: Option<String>,
        resolved_json: Option<String>,
    },
    SelectAggregate {
        selection_json: Option<String>,
    },
    VerifyAggregate {
        merkle_root: String,
    },
    ListReferrers {
        referrers_json: String,
    },
    ListEvents {
        events_json: String,
        next_cursor: Option<String>,
    },
    ReadOutbox {
        events_json: String,
        next_after_event_id: Option<u64>,
    },
    Admin {
        result_json: String,
    },
    AppendEvent {
        event_json: String,
    },
    CreateAggregate {
        aggregate_json: String,
    },
    SetArchive {
        aggregate_json: String,
    },
    ListSchemas {
        schemas_json: String,
    },
    ReplaceSchemas {
        replaced: u32,
    },
    TenantAssign {
        changed: bool,
        shard_id: String,
    },
    TenantUnassign {
        changed: bool,
    },
    TenantQuotaSet {
        changed: bool,
        quota_mb: u64,
    },
    TenantQuotaClear {
        changed: bool,
    },
    TenantQuotaRecalc {
        storage_bytes: u64,
    },
    TenantReload {
        reloaded: bool,
    },
    TenantSchemaPublish {
        version_id: String,
        activated: bool,
        skipped: bool,
    },
    CreateSnapshot {
        snapshot_json: String,
    },
    ListSnapshots {
        snapshots_json: String,
    },
    GetSnapshot {
        snapshot_json: Option<String>,
    },
    TenantList {
        tenants_json: String,
    },
    TenantSchemaHistory {
        manifest_json: String,
    },
    TenantSchemaActivate {
        version_id: String,
        activated: bool,
        action: &'static str,
    },
}

/// Parses a request message. `Err` means the bytes are not a `ControlRequest` at all (the
/// connection is then closed without a reply); an unknown member or unreadable field is a
/// parsed request id with an error to answer.
pub(crate) fn parse(
    bytes: &[u8],
) -> Result<(u64, Result<Command, RequestError>), eventdbx_proto::ProtoError> {
    let decoded = message::decode_request(bytes)?;
    let request = decoded.get()?;
    let id = request.get_id();
    Ok((id, parse_payload(request)))
}

fn parse_payload(request: control_request::Reader<'_>) -> Result<Command, RequestError> {
    use control_request::payload::Which;
    let which = request
        .get_payload()
        .which()
        .map_err(|err| RequestError::serialization(format!("unknown request: {err}")))?;
    Ok(match which {
        Which::ListAggregates(r) => Command::ListAggregates(aggregates::ListAggregates::parse(r?)?),
        Which::GetAggregate(r) => Command::GetAggregate(aggregates::GetAggregate::parse(r?)?),
        Which::SelectAggregate(r) => {
            Command::SelectAggregate(aggregates::SelectAggregate::parse(r?)?)
        }
        Which::VerifyAggregate(r) => {
            Command::VerifyAggregate(aggregates::VerifyAggregate::parse(r?)?)
        }
        Which::ListReferrers(r) => Command::ListReferrers(aggregates::ListReferrers::parse(r?)?),
        Which::ListEvents(r) => Command::ListEvents(events::ListEvents::parse(r?)?),
        Which::ReadOutbox(r) => Command::ReadOutbox(events::ReadOutbox::parse(r?)?),
        Which::AppendEvent(r) => Command::Write(writes::Write::parse_append(r?)?),
        Which::PatchEvent(r) => Command::Write(writes::Write::parse_patch(r?)?),
        Which::CreateAggregate(r) => Command::Write(writes::Write::parse_create(r?)?),
        Which::SetAggregateArchive(r) => Command::SetArchive(writes::SetArchive::parse(r?)?),
        Which::ListSchemas(r) => Command::ListSchemas(schemas::ListSchemas::parse(r?)?),
        Which::ReplaceSchemas(r) => Command::ReplaceSchemas(schemas::ReplaceSchemas::parse(r?)?),
        Which::TenantAssign(r) => Command::Tenant(tenant::TenantCommand::parse_assign(r?)?),
        Which::TenantUnassign(r) => Command::Tenant(tenant::TenantCommand::parse_unassign(r?)?),
        Which::TenantQuotaSet(r) => Command::Tenant(tenant::TenantCommand::parse_quota_set(r?)?),
        Which::TenantQuotaClear(r) => {
            Command::Tenant(tenant::TenantCommand::parse_quota_clear(r?)?)
        }
        Which::TenantQuotaRecalc(r) => {
            Command::Tenant(tenant::TenantCommand::parse_quota_recalc(r?)?)
        }
        Which::TenantReload(r) => Command::Tenant(tenant::TenantCommand::parse_reload(r?)?),
        Which::TenantSchemaPublish(r) => Command::Tenant(tenant::TenantCommand::parse_publish(r?)?),
        Which::CreateSnapshot(r) => Command::CreateSnapshot(snapshots::CreateSnapshot::parse(r?)?),
        Which::ListSnapshots(r) => Command::ListSnapshots(snapshots::ListSnapshots::parse(r?)?),
        Which::GetSnapshot(r) => Command::GetSnapshot(snapshots::GetSnapshot::parse(r?)?),
        Which::TenantList(r) => Command::TenantList(tenant::TenantList::parse(r?)?),
        Which::TenantSchemaHistory(r) => Command::Tenant(tenant::TenantCommand::parse_history(r?)?),
        Which::TenantSchemaActivate(r) => {
            Command::Tenant(tenant::TenantCommand::parse_activate(r?)?)
        }
        Which::Admin(r) => Command::Admin(admin::Admin::parse(r?)?),
    })
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
        }
    }
}

/// Encodes a response; an encoded reply over `limit` becomes a `response_too_large` error.
pub(crate) fn encode(id: u64, result: Result<Reply, RequestError>, limit: usize) -> Vec<u8> {
    let encoded = match &result {
        Ok(reply) => encode_reply(id, reply),
        Err(err) => encode_error(id, err),
    };
    match encoded {
        Ok(bytes) if bytes.len() <= limit => bytes,
        Ok(bytes) => {
            encode_error(id, &RequestError::too_large(bytes.len(), limit)).unwrap_or_default()
        }
        Err(err) => encode_error(id, &RequestError::serialization(err)).unwrap_or_default(),
    }
}

fn encode_error(id: u64, err: &RequestError) -> Result<Vec<u8>, eventdbx_proto::ProtoError> {
    message::encode_response(|mut response| {
        response.set_id(id);
        let mut error = response.init_payload().init_error();
        error.set_code(err.code.as_str());
        error.set_message(err.message.as_str());
        Ok(())
    })
}

/// The encoded size of a reply (used to cut list pages to fit).
pub(crate) fn encoded_len(reply: &Reply) -> usize {
    encode_reply(0, reply).map_or(usize::MAX, |bytes| bytes.len())
}

fn encode_reply(id: u64, reply: &Reply) -> Result<Vec<u8>, eventdbx_proto::ProtoError> {
    message::encode_response(|mut response| {
        response.set_id(id);
        let payload = response.init_payload();
        fill(payload, reply);
        Ok(())
    })
}

fn fill(payload: control_response::payload::Builder<'_>, reply: &Reply) {
    match reply {
        Reply::ListAggregates {
            aggregates_json,
            next_cursor,
            resolved_json,
        } => {
            let mut r = payload.init_list_aggregates();
            r.set_aggregates_json(aggregates_json.as_str());
            if let Some(cursor) = next_cursor {
                r.set_next_cursor(cursor.as_str());
                r.set_has_next_cursor(true);
            } else {
                r.set_next_cursor("");
            }
            if let Some(resolved) = resolved_json {
                r.set_resolved_json(resolved.as_str());
                r.set_has_resolved_json(true);
            }
        }
        Reply::GetAggregate {
            aggregate_json,
            resolved_json,
        } => {
            let mut r = payload.init_get_aggregate();
            r.set_found(aggregate_json.is_some());
            r.set_aggregate_json(aggregate_json.as_deref().unwrap_or(""));
            if let Some(resolved) = resolved_json {
                r.set_resolved_json(resolved.as_str());
                r.set_has_resolved_json(true);
            }
        }
        Reply::SelectAggregate { selection_json } => {
            let mut r = payload.init_select_aggregate();
            r.set_found(selection_json.is_some());
            r.set_selection_json(selection_json.as_deref().unwrap_or(""));
        }
        Reply::VerifyAggregate { merkle_root } => {
            payload
                .init_verify_aggregate()
                .set_merkle_root(merkle_root.as_str());
        }
        Reply::ListReferrers { referrers_json } => {
            payload
                .init_list_referrers()
                .set_referrers_json(referrers_json.as_str());
        }
        Reply::ListEvents {
            events_json,
            next_cursor,
        } => {
            let mut r = payload.init_list_events();
            r.set_events_json(events_json.as_str());
            r.set_next_cursor(next_cursor.as_deref().unwrap_or(""));
            r.set_has_next_cursor(next_cursor.is_some());
        }
        Reply::ReadOutbox {
            events_json,
            next_after_event_id,
        } => {
            let mut r = payload.init_read_outbox();
            r.set_events_json(events_json.as_str());
            if let Some(next) = next_after_event_id {
                r.set_next_after_event_id(*next);
                r.set_has_next_after_event_id(true);
            }
        }
        Reply::Admin { result_json } => {
            payload.init_admin().set_result_json(result_json.as_str());
        }
        Reply::AppendEvent { event_json } => {
            payload
                .init_append_event()
                .set_event_json(event_json.as_str());
        }
        Reply::CreateAggregate { aggregate_json } => {
            payload
                .init_create_aggregate()
                .set_aggregate_json(aggregate_json.as_str());
        }
        Reply::SetArchive { aggregate_json } => {
            payload
                .init_set_aggregate_archive()
                .set_aggregate_json(aggregate_json.as_str());
        }
        Reply::ListSchemas { schemas_json } => {
            payload
                .init_list_schemas()
                .set_schemas_json(schemas_json.as_str());
        }
        Reply::ReplaceSchemas { replaced } => {
            payload.init_replace_schemas().set_replaced(*replaced);
        }
        Reply::TenantAssign { changed, shard_id } => {
            let mut r = payload.init_tenant_assign();
            r.set_changed(*changed);
            r.set_shard_id(shard_id.as_str());
        }
        Reply::TenantUnassign { changed } => payload.init_tenant_unassign().set_changed(*changed),
        Reply::TenantQuotaSet { changed, quota_mb } => {
            let mut r = payload.init_tenant_quota_set();
            r.set_changed(*changed);
            r.set_quota_mb(*quota_mb);
            r.set_has_quota(true);
        }
        Reply::TenantQuotaClear { changed } => {
            payload.init_tenant_quota_clear().set_changed(*changed);
        }
        Reply::TenantQuotaRecalc { storage_bytes } => {
            payload
                .init_tenant_quota_recalc()
                .set_storage_bytes(*storage_bytes);
        }
        Reply::TenantReload { reloaded } => payload.init_tenant_reload().set_reloaded(*reloaded),
        Reply::TenantSchemaPublish {
            version_id,
            activated,
            skipped,
        } => {
            let mut r = payload.init_tenant_schema_publish();
            r.set_version_id(version_id.as_str());
            r.set_activated(*activated);
            r.set_skipped(*skipped);
        }
        Reply::CreateSnapshot { snapshot_json } => {
            payload
                .init_create_snapshot()
                .set_snapshot_json(snapshot_json.as_str());
        }
        Reply::ListSnapshots { snapshots_json } => {
            payload
                .init_list_snapshots()
                .set_snapshots_json(snapshots_json.as_str());
        }
        Reply::GetSnapshot { snapshot_json } => {
            let mut r = payload.init_get_snapshot();
            r.set_found(snapshot_json.is_some());
            r.set_snapshot_json(snapshot_json.as_deref().unwrap_or(""));
        }
        Reply::TenantList { tenants_json } => {
            payload
                .init_tenant_list()
                .set_tenants_json(tenants_json.as_str());
        }
        Reply::TenantSchemaHistory { manifest_json } => {
            payload
                .init_tenant_schema_history()
                .set_manifest_json(manifest_json.as_str());
        }
        Reply::TenantSchemaActivate {
            version_id,
            activated,
            action,
        } => {
            let mut r = payload.init_tenant_schema_activate();
            r.set_version_id(version_id.as_str());
            r.set_activated(*activated);
            r.set_action(*action);
        }
    }
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
