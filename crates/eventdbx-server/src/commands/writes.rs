//! Writes: `createAggregate`, `appendEvent`, `patchEvent` (one path) and `setAggregateArchive`.

use std::sync::Arc;

use eventdbx_core::merkle::IssuedBy;
use eventdbx_core::names::MAX_PAYLOAD_BYTES;
use eventdbx_core::names::{
    normalize_event_type, parse_metadata, parse_payload, validate_aggregate_id,
    validate_aggregate_type, validate_note,
};
use eventdbx_core::plugin::PublishTarget;
use eventdbx_core::schema::reference::{normalize_references, reference_rules, state_references};
use eventdbx_core::schema::SchemaMap;
use eventdbx_core::schema::{validate_write, ReferenceCascade, ReferenceIntegrity};
use eventdbx_core::write::{request_digest, WriteBody, WriteKind};
use eventdbx_core::CoreError;
use eventdbx_proto::control::{
    AppendEventResponse, CreateAggregateResponse, PublishTarget as ProtoTarget,
    SetAggregateArchiveRequest, SetAggregateArchiveResponse, WriteRequest,
};
use eventdbx_store::{
    Idempotency, PayloadCheck, ReferenceScan, Referrer, StoreError, WriteOutcome,
    WriteRequest as StoreWrite,
};

use super::{resource, Apply, Context, Reply};
use crate::auth::Claims;
use crate::error::RequestError;
use eventdbx_core::schema::AggregateSchema;

const READ: &str = "aggregate.read";

/// Create, append or patch: the one typed write request and which member carried it.
pub(crate) struct Write {
    kind: WriteKind,
    request: WriteRequest,
}

/// The core's targets; `None` (not sent) and an empty list both broadcast.
fn targets(targets: Option<Vec<ProtoTarget>>) -> Vec<PublishTarget> {
    targets
        .unwrap_or_default()
        .into_iter()
        .map(|t| PublishTarget {
            plugin: t.plugin,
            mode: t.mode,
            priority: t.priority,
        })
        .collect()
}

impl Write {
    pub fn new(kind: WriteKind, request: WriteRequest) -> Self {
        Write { kind, request }
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            WriteKind::Create => "createAggregate",
            WriteKind::Append => "appendEvent",
            WriteKind::Patch => "patchEvent",
        }
    }

    /// Runs the write, blocking this thread until it is durable.
    pub fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        let (request, answer) = self.prepare(ctx)?;
        let outcome = ctx.state.store.write(ctx.tenant, request)?;
        answer.reply(ctx, outcome)
    }

    /// Runs the write without a thread blocked while it waits for its group's commit
    /// ([`eventdbx_store::EventStore::write_then`]): the checks and the store's prepare half run
    /// on this thread, then the answer is awaited. When no commit is running this thread leads
    /// the write's round itself, sync included.
    pub async fn apply_awaiting(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        let (request, answer) = self.prepare(ctx)?;
        let (send, outcome) = tokio::sync::oneshot::channel();
        let done = Box::new(move |outcome| {
            // The request's task awaits it; one that is gone needs no answer.
            let _ = send.send(outcome);
        });
        let store = &ctx.state.store;
        let waits = store.write_waits(ctx.tenant, &request.aggregate_type, &request.aggregate_id);
        if waits
            && tokio::runtime::Handle::current().runtime_flavor()
                == tokio::runtime::RuntimeFlavor::MultiThread
        {
            // An earlier write to this aggregate is not answered yet and its lock would block
            // this thread until it is: the runtime hands this worker's other tasks on meanwhile
            // (a current-thread runtime cannot, and simply waits).
            tokio::task::block_in_place(|| store.write_then(ctx.tenant, request, done));
        } else {
            store.write_then(ctx.tenant, request, done);
        }
        let outcome = outcome
            .await
            .map_err(|_| StoreError::engine("the store dropped the write unanswered"))??;
        answer.reply(ctx, outcome)
    }

    /// Steps 1 to 8 of `docs/server.md`, "Writes": authorisation, parsing, routes and names,
    /// then the store's request and what its answer needs.
    fn prepare(mut self, ctx: &Context<'_>) -> Result<(StoreWrite, WriteAnswer), RequestError> {
        let (t, i) = (
            self.request.aggregate_type.as_str(),
            self.request.aggregate_id.as_str(),
        );
        // 1. Authorisation, before anything is validated or looked up.
        let target = resource(t, i);
        let claims = ctx.authorize(&self.request.token, "aggregate.append", Some(&target))?;
        if self.kind == WriteKind::Create {
            claims.authorize("aggregate.create", Some(&target))?;
        }
        if !claims.can_write() {
            return Err(RequestError::unauthorized());
        }
        // 2. Request parsing.
        let body = match self.kind {
            WriteKind::Create if self.request.body_json.trim().is_empty() => {
                return Err(RequestError::invalid(
                    "payload_json must be provided when creating an aggregate",
                ))
            }
            WriteKind::Append if self.request.body_json.trim().is_empty() => {
                return Err(RequestError::invalid(
                    "payload_json must be provided when patch_json is absent",
                ))
            }
            WriteKind::Patch if self.request.body_json.trim().is_empty() => {
                return Err(RequestError::invalid(
                    "patch_json must be provided for patch events",
                ))
            }
            WriteKind::Patch => {
                serde_json::from_str::<serde_json::Value>(&self.request.body_json)
                    .map_err(|err| RequestError::invalid(format!("invalid patch_json: {err}")))?;
                WriteBody::Patch(self.request.body_json.clone())
            }
            _ => WriteBody::Payload(parse_payload(&self.request.body_json)?),
        };
        let extensions = match &self.request.metadata_json {
            Some(metadata) => parse_metadata(metadata)?,
            None => None,
        };
        // Publish targets (`docs/plugins.md`, "Routing"): refused before anything is written.
        let targets = targets(self.request.publish_targets.take());
        let schemas = ctx.schemas();
        let publish = ctx.state.plugins.routes(Some(&targets), schemas.get(t))?;
        if let Some(key) = &self.request.idempotency_key {
            if key.len() > 128 || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                return Err(RequestError::invalid(
                    "idempotency key must be 1 to 128 printable ASCII characters",
                ));
            }
        }
        // 4. Names.
        validate_aggregate_type(t)?;
        validate_aggregate_id(i)?;
        let event_type = normalize_event_type(&self.request.event_type)?;
        if let Some(note) = &self.request.note {
            validate_note(note)?;
        }
        let schema = schemas.get(t).cloned();
        let prepare = payload_check(ctx, &claims, t, &event_type, schema.clone());
        let references: ReferenceScan = {
            let tenant = ctx.tenant.to_owned();
            Arc::new(move |aggregate| {
                schema.as_ref().map_or_else(Vec::new, |schema| {
                    state_references(schema, &aggregate.aggregate_type, &tenant, &aggregate.state)
                })
            })
        };
        let idempotency = self
            .request
            .idempotency_key
            .as_ref()
            .map(|key| Idempotency {
                key: key.clone(),
                digest: request_digest(
                    self.kind,
                    t,
                    i,
                    &self.request.event_type,
                    &self.request.body_json,
                    self.request.note.as_deref(),
                    self.request.metadata_json.as_deref(),
                    self.request.expected_version,
                ),
            });
        let routed: Vec<String> = publish.iter().map(|r| r.plugin.clone()).collect();
        let request = StoreWrite {
            kind: self.kind,
            aggregate_type: t.to_owned(),
            aggregate_id: i.to_owned(),
            event_type,
            event_type_raw: Some(self.request.event_type.clone()),
            body,
            extensions,
            note: self.request.note.clone(),
            issued_by: Some(IssuedBy {
                group: claims.group.clone(),
                user: claims.user.clone(),
            }),
            expected_version: if self.kind == WriteKind::Create {
                None
            } else {
                self.request.expected_version
            },
            idempotency,
            snapshot_threshold: schemas.get(t).and_then(|s| s.snapshot_threshold),
            quota_bytes: ctx.state.tenants.quota_bytes(ctx.tenant),
            prepare: Some(prepare),
            references: Some(references),
            publish,
        };
        let answer = WriteAnswer {
            kind: self.kind,
            routed,
            schemas,
        };
        Ok((request, answer))
    }
}

/// What a write's reply needs besides the store's outcome.
struct WriteAnswer {
    kind: WriteKind,
    /// The plugins the event is routed to, woken once it is stored.
    routed: Vec<String>,
    schemas: Arc<SchemaMap>,
}

impl WriteAnswer {
    fn reply(self, ctx: &Context<'_>, outcome: WriteOutcome) -> Result<Reply, RequestError> {
        let schemas = self.schemas;
        if !outcome.replayed {
            ctx.state
                .plugins
                .wake(self.routed.iter().map(String::as_str));
        }
        let verbose = ctx.state.config.verbose_responses;
        Ok(match self.kind {
            WriteKind::Create => Reply::CreateAggregate(CreateAggregateResponse {
                aggregate_json: if verbose {
                    ctx.visible(&schemas, outcome.aggregate)
                        .map(|a| a.to_json(&[]).to_string())
                        .unwrap_or_default()
                } else {
                    String::new()
                },
            }),
            _ => Reply::AppendEvent(AppendEventResponse {
                event_json: if verbose {
                    serde_json::to_string(&outcome.event).map_err(RequestError::serialization)?
                } else {
                    String::new()
                },
            }),
        })
    }
}

/// The checks a payload gets inside the write (steps 9 and 10 of `docs/server.md`, "Writes"): the
/// schema rules, then references normalised to `type#id` and, with `integrity: strong`, their
/// targets checked in the writer's tenant; the payload size is checked again after normalisation.
fn payload_check(
    ctx: &Context<'_>,
    claims: &Arc<Claims>,
    aggregate_type: &str,
    event_type: &str,
    schema: Option<AggregateSchema>,
) -> PayloadCheck {
    let mode = ctx.state.config.restrict;
    let store = Arc::clone(&ctx.state.store);
    let tenant = ctx.tenant.to_owned();
    let claims = Arc::clone(claims);
    let aggregate_type = aggregate_type.to_owned();
    let event_type = event_type.to_owned();
    Arc::new(move |_, payload| {
        validate_write(mode, &aggregate_type, schema.as_ref(), &event_type, payload)?;
        let Some(schema) = schema.as_ref() else {
            return Ok(());
        };
        let mut lookup_failure: Option<StoreError> = None;
        normalize_references(
            schema,
            &aggregate_type,
            &tenant,
            payload,
            &mut |path, reference, rules| {
                if rules.integrity == ReferenceIntegrity::Weak {
                    return Ok(());
                }
                let (t, i) = (&reference.aggregate_type, &reference.aggregate_id);
                let target = reference.canonical();
                // Access first: a writer learns nothing about aggregates it cannot read.
                if claims.authorize(READ, Some(&resource(t, i))).is_err() {
                    return Err(CoreError::SchemaViolation(format!(
                        "reference {path} points to an aggregate the caller cannot access \
                         ({target})"
                    )));
                }
                match store.get(&tenant, t, i) {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err(CoreError::SchemaViolation(format!(
                        "reference {path} points to missing aggregate {target}"
                    ))),
                    Err(StoreError::Domain(err)) => Err(err),
                    Err(err) => {
                        let message = err.to_string();
                        lookup_failure = Some(err);
                        Err(CoreError::Io(message))
                    }
                }
            },
        )
        .map_err(|err| lookup_failure.take().unwrap_or(StoreError::Domain(err)))?;
        let size = serde_json::to_vec(payload).map_or(usize::MAX, |bytes| bytes.len());
        if size > MAX_PAYLOAD_BYTES {
            return Err(CoreError::PayloadTooLarge {
                limit: MAX_PAYLOAD_BYTES,
            }
            .into());
        }
        Ok(())
    })
}

/// `setAggregateArchive`.
impl Apply for SetAggregateArchiveRequest {
    fn apply(mut self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        let (t, i) = (self.aggregate_type.as_str(), self.aggregate_id.as_str());
        let claims = ctx.authorize(&self.token, "aggregate.archive", Some(&resource(t, i)))?;
        if !claims.can_write() {
            return Err(RequestError::unauthorized());
        }
        let schemas = ctx.schemas();
        let publish = ctx
            .state
            .plugins
            .routes(Some(&targets(self.publish_targets.take())), schemas.get(t))?;
        validate_aggregate_type(t)?;
        validate_aggregate_id(i)?;
        let store = &ctx.state.store;
        let note = self.note.as_deref();
        // The archive cascade (`docs/server.md`, "Archive and restore"): referrers whose rule says
        // `nullify` are cleared in the archive's commit; any other referrer blocks it.
        let nullify = |referrer: &Referrer| {
            schemas
                .get(&referrer.aggregate_type)
                .and_then(|schema| reference_rules(schema, &referrer.path))
                .is_some_and(|rules| rules.cascade == ReferenceCascade::Nullify)
        };
        let aggregate = store.set_archived_publishing(
            ctx.tenant,
            t,
            i,
            self.archived,
            note,
            &nullify,
            &publish,
        )?;
        ctx.state
            .plugins
            .wake(publish.iter().map(|r| r.plugin.as_str()));
        let aggregate_json = if ctx.state.config.verbose_responses {
            ctx.visible(&ctx.schemas(), aggregate)
                .map(|a| a.to_json(&[]).to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Reply::SetAggregateArchive(SetAggregateArchiveResponse {
            aggregate_json,
        }))
    }
}
