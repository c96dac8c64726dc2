//! Tenant administration (`docs/server.md`, "Tenants"): assign, unassign, quotas, reload, schema
//! publish, and ours: schema-version history and activation, and the tenant list.
//!
//! The token needs `tenant.manage` and a `tenants` claim that allows the **target** tenant,
//! which may differ from the session's.

use eventdbx_core::names::normalize_tenant_id;
use eventdbx_proto::control::{
    TenantAssignRequest, TenantAssignResponse, TenantListRequest, TenantListResponse,
    TenantQuotaClearRequest, TenantQuotaClearResponse, TenantQuotaRecalcRequest,
    TenantQuotaRecalcResponse, TenantQuotaSetRequest, TenantQuotaSetResponse, TenantReloadRequest,
    TenantReloadResponse, TenantSchemaActivateRequest, TenantSchemaActivateResponse,
    TenantSchemaHistoryRequest, TenantSchemaHistoryResponse, TenantSchemaPublishRequest,
    TenantSchemaPublishResponse, TenantUnassignRequest, TenantUnassignResponse,
};

use super::{Apply, Context, Reply};
use crate::error::RequestError;
use crate::tenants::{ActivateRequest, AuditAction, PublishRequest};

enum Action {
    Assign {
        shard_id: String,
    },
    Unassign,
    QuotaSet {
        max_storage_mb: u64,
    },
    QuotaClear,
    QuotaRecalc,
    Reload,
    Publish(PublishRequest),
    History,
    Activate {
        version_id: String,
        request: ActivateRequest,
    },
}

/// One tenant-administration request.
pub(crate) struct TenantCommand {
    token: String,
    tenant_id: String,
    action: Action,
}

/// The requests that carry only a token and a target tenant.
macro_rules! simple {
    ($name:ident, $request:ty, $action:expr) => {
        pub fn $name(r: $request) -> Self {
            TenantCommand {
                token: r.token,
                tenant_id: r.tenant_id,
                action: $action,
            }
        }
    };
}

impl TenantCommand {
    simple!(unassign, TenantUnassignRequest, Action::Unassign);
    simple!(quota_clear, TenantQuotaClearRequest, Action::QuotaClear);
    simple!(quota_recalc, TenantQuotaRecalcRequest, Action::QuotaRecalc);
    simple!(reload, TenantReloadRequest, Action::Reload);
    simple!(history, TenantSchemaHistoryRequest, Action::History);

    pub fn activate(r: TenantSchemaActivateRequest) -> Self {
        TenantCommand {
            token: r.token,
            tenant_id: r.tenant_id,
            action: Action::Activate {
                version_id: r.version_id,
                request: ActivateRequest {
                    reason: r.reason,
                    actor: r.actor,
                },
            },
        }
    }

    pub fn assign(r: TenantAssignRequest) -> Self {
        TenantCommand {
            token: r.token,
            tenant_id: r.tenant_id,
            action: Action::Assign {
                shard_id: r.shard_id,
            },
        }
    }

    pub fn quota_set(r: TenantQuotaSetRequest) -> Self {
        TenantCommand {
            token: r.token,
            tenant_id: r.tenant_id,
            action: Action::QuotaSet {
                max_storage_mb: r.max_storage_mb,
            },
        }
    }

    pub fn publish(r: TenantSchemaPublishRequest) -> Self {
        TenantCommand {
            token: r.token,
            tenant_id: r.tenant_id,
            action: Action::Publish(PublishRequest {
                reason: r.reason,
                actor: r.actor,
                labels: r.labels,
                activate: r.activate,
                force: r.force,
                reload: r.reload,
            }),
        }
    }

    pub fn name(&self) -> &'static str {
        match self.action {
            Action::Assign { .. } => "tenantAssign",
            Action::Unassign => "tenantUnassign",
            Action::QuotaSet { .. } => "tenantQuotaSet",
            Action::QuotaClear => "tenantQuotaClear",
            Action::QuotaRecalc => "tenantQuotaRecalc",
            Action::Reload => "tenantReload",
            Action::Publish(_) => "tenantSchemaPublish",
            Action::History => "tenantSchemaHistory",
            Action::Activate { .. } => "tenantSchemaActivate",
        }
    }

    pub fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        let claims = ctx.state.auth.verify(&self.token)?;
        claims.authorize("tenant.manage", None)?;
        let tenant = normalize_tenant_id(&self.tenant_id)?;
        if !claims.allows_tenant(&tenant) {
            return Err(RequestError::unauthorized());
        }
        let tenants = &ctx.state.tenants;
        Ok(match self.action {
            Action::Assign { shard_id } => {
                let holds_data = ctx.state.store.usage(&tenant)?.events > 0;
                let (changed, shard_id) = tenants.assign(&tenant, &shard_id, holds_data)?;
                Reply::TenantAssign(TenantAssignResponse { changed, shard_id })
            }
            Action::Unassign => Reply::TenantUnassign(TenantUnassignResponse {
                changed: tenants.unassign(&tenant)?,
            }),
            Action::QuotaSet { max_storage_mb } => Reply::TenantQuotaSet(TenantQuotaSetResponse {
                changed: tenants.set_quota(&tenant, max_storage_mb)?,
                quota_mb: Some(max_storage_mb),
            }),
            Action::QuotaClear => Reply::TenantQuotaClear(TenantQuotaClearResponse {
                changed: tenants.clear_quota(&tenant)?,
            }),
            Action::QuotaRecalc => Reply::TenantQuotaRecalc(TenantQuotaRecalcResponse {
                storage_bytes: ctx.state.store.recalc_usage(&tenant)?.bytes,
            }),
            Action::Reload => Reply::TenantReload(TenantReloadResponse {
                reloaded: tenants.reload(&tenant)?,
            }),
            Action::Publish(request) => {
                let outcome = tenants.publish(&tenant, request)?;
                Reply::TenantSchemaPublish(TenantSchemaPublishResponse {
                    version_id: outcome.version_id,
                    activated: outcome.activated,
                    skipped: outcome.skipped,
                })
            }
            Action::History => Reply::TenantSchemaHistory(TenantSchemaHistoryResponse {
                manifest_json: json_text(&tenants.manifest(&tenant))?,
            }),
            Action::Activate {
                version_id,
                request,
            } => {
                let outcome = tenants.activate_version(&tenant, version_id.trim(), &request)?;
                Reply::TenantSchemaActivate(TenantSchemaActivateResponse {
                    version_id: outcome.version_id,
                    activated: outcome.activated,
                    action: match outcome.action {
                        AuditAction::Rollback => "rollback",
                        _ => "activate",
                    }
                    .to_owned(),
                })
            }
        })
    }
}

/// `tenantList` (ours): every tenant known to this server — by stored data, placement, quota or
/// schema files — that the token's `tenants` claim allows, with placement, quota and usage.
impl Apply for TenantListRequest {
    fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        let claims = ctx.state.auth.verify(&self.token)?;
        claims.authorize("tenant.manage", None)?;
        let tenants = &ctx.state.tenants;
        let mut ids: std::collections::BTreeSet<String> =
            tenants.known_tenants().into_iter().collect();
        ids.extend(ctx.state.store.tenants()?);
        let mut listed = Vec::new();
        for tenant in ids.into_iter().filter(|t| claims.allows_tenant(t)) {
            let usage = ctx.state.store.usage(&tenant)?;
            let manifest = tenants.manifest(&tenant);
            listed.push(serde_json::json!({
                "tenant_id": tenant,
                "shard_id": tenants.shard_of(&tenant),
                "assigned": tenants.assigned_shard(&tenant).is_some(),
                "quota_mb": tenants.quota_mb(&tenant),
                "events": usage.events,
                "storage_bytes": usage.bytes,
                "active_version": manifest.active_version,
                "versions": manifest.versions.len(),
            }));
        }
        Ok(Reply::TenantList(TenantListResponse {
            tenants_json: json_text(&listed)?,
        }))
    }
}

fn json_text(value: &impl serde::Serialize) -> Result<String, RequestError> {
    serde_json::to_string(value)
        .map_err(|err| RequestError::from(eventdbx_core::CoreError::Serialization(err.to_string())))
}
