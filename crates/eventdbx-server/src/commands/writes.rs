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
use eventdbx_core::schema::{validate_write, ReferenceCascade, ReferenceIntegrity};
use eventdbx_core::write::{request_digest, WriteBody, WriteKind};
use eventdbx_core::CoreError;
use eventdbx_proto::schema::control_capnp::{
    append_event_request, create_aggregate_request, patch_event_request, publish_target,
    set_aggregate_archive_request,
};
use eventdbx_store::{
    Idempotency, PayloadCheck, ReferenceScan, Referrer, StoreError, WriteRequest,
};

use super::{resource, text, Context, Reply};
use crate::auth::Claims;
use eventdbx_core::schema::AggregateSchema;

const READ: &str = "aggregate.read";
use crate::error::RequestError;

fn parse_targets(
    has: bool,
    list: capnp::Result<capnp::struct_list::Reader<'_, publish_target::Owned>>,
) -> Result<Vec<PublishTarget>, RequestError> {
    if !has {
        return Ok(Vec::new());
    }
    list?
        .iter()
        .map(|t| {
            Ok(PublishTarget {
                plugin: text(t.get_plugin())?,
                mode: t.get_has_mode().then(|| text(t.get_mode())).transpose()?,
                priority: t
                    .get_has_priority()
                    .then(|| text(t.get_priority()))
                    .transpose()?,
            })
        })
        .collect()
}

/// Create, append or patch.
pub(crate) struct Write {
    kind: WriteKind,
    token: String,
    aggregate_type: String,
    aggregate_id: String,
    event_type: String,
    body: String,
    note: Option<String>,
    metadata: Option<String>,
    targets: Vec<PublishTarget>,
    expected_version: Option<u64>,
    idempotency_key: Option<String>,
}

macro_rules! parse_write {
    ($r:expr, $kind:expr, $body:ident) => {{
        let r = $r;
        Ok(Write {
            kind: $kind,
            token: text(r.get_token())?,
            aggregate_type: text(r.get_aggregate_type())?,
            aggregate_id: text(r.get_aggregate_id())?,
            event_type: text(r.get_event_type())?,
            body: text(r.$body())?,
            note: r.get_has_note().then(|| text(r.get_note())).transpose()?,
            metadata: r
                .get_has_metadata()
                .then(|| text(r.get_metadata_json()))
                .transpose()?,
            targets: parse_targets(r.get_has_publish_targets(), r.get_publish_targets())?,
            expected_version: r
                .get_has_expected_version()
                .then(|| r.get_expected_version()),
            idempotency_key: Some(text(r.get_idempotency_key())?).filter(|k| !k.is_empty()),
        })
    }};
}

impl Write {
    pub fn parse_append(r: append_event_request::Reader<'_>) -> Result<Self, RequestError> {
        parse_write!(r, WriteKind::Append, get_payload_json)
    }

    pub fn parse_patch(r: patch_event_request::Reader<'_>) -> Result<Self, RequestError> {
        parse_write!(r, WriteKind::Patch, get_patch_json)
    }

    pub fn parse_create(r: create_aggregate_request::Reader<'_>) -> Result<Self, RequestError> {
        parse_write!(r, WriteKind::Create, get_payload_json)
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            WriteKind::Create => "createAggregate",
            WriteKind::Append => "appendEvent",
            WriteKind::Patch => "patchEvent",
        }
    }

    pub fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        let (t, i) = (self.aggregate_type.as_str(), self.aggregate_id.as_str());
        // 1. Authorisation, before anything is validated or looked up.
        let target = resource(t, i);
        let claims = ctx.authorize(&self.token, "aggregate.append", Some(&target))?;
        if self.kind == WriteKind::Create {
            claims.authorize("aggregate.create", Some(&target))?;
        }
        if !claims.can_write() {
            return Err(RequestError::unauthorized());
        }
        // 2. Request parsing.
        let body = match self.kind {
            WriteKind::Create if self.body.trim().is_empty() => {
                return Err(RequestError::invalid(
                    "payload_json must be provided when creating an aggregate",
                ))
            }
            WriteKind::Append if self.body.trim().is_empty() => {
                return Err(RequestError::invalid(
                    "payload_json must be provided when patch_json is absent",
                ))
            }
            WriteKind::Patch if self.body.trim().is_empty() => {
                return Err(RequestError::invalid(
                    "patch_json must be provided for patch events",
                ))
            }
            WriteKind::Patch => {
                serde_json::from_str::<serde_json::Value>(&self.body)
                    .map_err(|err| RequestError::invalid(format!("invalid patch_json: {err}")))?;
                WriteBody::Patch(self.body.clone())
            }
            _ => WriteBody::Payload(parse_payload(&self.body)?),
        };
        let extensions = match &self.metadata {
            Some(metadata) => parse_metadata(metadata)?,
            None => None,
        };
        // Publish targets (§14.3): refused before anything is written.
        let schemas = ctx.schemas();
        let publish = ctx
            .state
            .plugins
            .routes(Some(&self.targets), schemas.get(t))?;
        if let Some(key) = &self.idempotency_key {
            if key.len() > 128 || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                return Err(RequestError::invalid(
                    "idempotency key must be 1 to 128 printable ASCII characters",
                ));
            }
        }
        // 4. Names.
        validate_aggregate_type(t)?;
        validate_aggregate_id(i)?;
        let event_type = normalize_event_type(&self.event_type)?;
        if let Some(note) = &self.note {
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
        let idempotency = self.idempotency_key.as_ref().map(|key| Idempotency {
            key: key.clone(),
            digest: request_digest(
                self.kind,
                t,
                i,
                &self.event_type,
                &self.body,
                self.note.as_deref(),
                self.metadata.as_deref(),
                self.expected_version,
            ),
        });
        let routed: Vec<String> = publish.iter().map(|r| r.plugin.clone()).collect();
        let request = WriteRequest {
            kind: self.kind,
            aggregate_type: t.to_owned(),
            aggregate_id: i.to_owned(),
            event_type,
            event_type_raw: Some(self.event_type.clone()),
            body,
            extensions,
            note: self.note.clone(),
            issued_by: Some(IssuedBy {
                group: claims.group.clone(),
                user: claims.user.clone(),
            }),
            expected_version: if self.kind == WriteKind::Create {
                None
            } else {
                self.expected_version
            },
            idempotency,
            snapshot_threshold: schemas.get(t).and_then(|s| s.snapshot_threshold),
            quota_bytes: ctx.state.tenants.quota_bytes(ctx.tenant),
            prepare: Some(prepare),
            references: Some(references),
            publish,
        };
        let outcome = ctx.state.store.write(ctx.tenant, request)?;
        if !outcome.replayed {
            ctx.state.plugins.wake(routed.iter().map(String::as_str));
        }
        let verbose = ctx.state.config.verbose_responses;
        Ok(match self.kind {
            WriteKind::Create => Reply::CreateAggregate {
                aggregate_json: if verbose {
                    ctx.visible(&schemas, outcome.aggregate)
                        .map(|a| a.to_json(&[]).to_string())
                        .unwrap_or_default()
                } else {
                    String::new()
                },
            },
            _ => Reply::AppendEvent {
                event_json: if verbose {
                    serde_json::to_string(&outcome.event).map_err(RequestError::serialization)?
                } else {
                    String::new()
                },
            },
        })
    }
}

/// The checks a payload gets inside the write (§4.3 steps 9 and 10): the schema rules of §6.2,
/// then references normalised to `type#id` and, with `integrity: strong`, their targets checked
/// in the writer's tenant; the payload size is checked again after normalisation.
fn payload_check(
    ctx: &Context<'_>,
    claims: &Claims,
    aggregate_type: &str,
    event_type: &str,
    schema: Option<AggregateSchema>,
) -> PayloadCheck {
    let mode = ctx.state.config.restrict;
    let store = Arc::clone(&ctx.state.store);
    let tenant = ctx.tenant.to_owned();
    let claims = claims.clone();
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
            return Err(CoreError::invalid(format!(
                "payload_json exceeds maximum size of {MAX_PAYLOAD_BYTES} bytes"
            ))
            .into());
        }
        Ok(())
    })
}

/// `setAggregateArchive`.
pub(crate) struct SetArchive {
    token: String,
    aggregate_type: String,
    aggregate_id: String,
    archived: bool,
    note: Option<String>,
    targets: Vec<PublishTarget>,
}

impl SetArchive {
    pub fn parse(r: set_aggregate_archive_request::Reader<'_>) -> Result<Self, RequestError> {
        Ok(SetArchive {
            token: text(r.get_token())?,
            aggregate_type: text(r.get_aggregate_type())?,
            aggregate_id: text(r.get_aggregate_id())?,
            archived: r.get_archived(),
            note: r.get_has_note().then(|| text(r.get_note())).transpose()?,
            targets: parse_targets(r.get_has_publish_targets(), r.get_publish_targets())?,
        })
    }

    pub fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        let (t, i) = (self.aggregate_type.as_str(), self.aggregate_id.as_str());
        let claims = ctx.authorize(&self.token, "aggregate.archive", Some(&resource(t, i)))?;
        if !claims.can_write() {
            return Err(RequestError::unauthorized());
        }
        let schemas = ctx.schemas();
        let publish = ctx
            .state
            .plugins
            .routes(Some(&self.targets), schemas.get(t))?;
        validate_aggregate_type(t)?;
        validate_aggregate_id(i)?;
        let store = &ctx.state.store;
        let note = self.note.as_deref();
        // §4.6: referrers whose rule says `nullify` are cleared in the archive's commit; any
        // other referrer blocks it.
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
        Ok(Reply::SetArchive { aggregate_json })
    }
}
