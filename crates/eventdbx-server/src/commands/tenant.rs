//! Tenant administration (§11–§13): assign, unassign, quotas, reload, schema publish, and ours:
//! schema-version history and activation, and the tenant list.
//!
//! The token needs `tenant.manage` and a `tenants` claim that allows the **target** tenant,
//! which may differ from the session's.

use eventdbx_core::names::normalize_tenant_id;
use eventdbx_proto::schema::schema_capnp::{
    tenant_assign_request, tenant_list_request, tenant_quota_clear_request,
    tenant_quota_recalc_request, tenant_quota_set_request, tenant_reload_request,
    tenant_schema_activate_request, tenant_schema_history_request, tenant_schema_publish_request,
    tenant_unassign_request,
};

use super::{text, texts, Context, Reply};
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

macro_rules! parse_simple {
    ($name:ident, $reader:ty, $action:expr) => {
        pub fn $name(r: $reader) -> Result<Self, RequestError> {
            Ok(TenantCommand {
                token: text(r.get_token())?,
                tenant_id: text(r.get_tenant_id())?,
                action: $action,
            })
        }
    };
}

impl TenantCommand {
    parse_simple!(
        parse_unassign,
        tenant_unassign_request::Reader<'_>,
        Action::Unassign
    );
    parse_simple!(
        parse_quota_clear,
        tenant_quota_clear_request::Reader<'_>,
        Action::QuotaClear
    );
    parse_simple!(
        parse_quota_recalc,
        tenant_quota_recalc_request::Reader<'_>,
        Action::QuotaRecalc
    );
    parse_simple!(
        parse_reload,
        tenant_reload_request::Reader<'_>,
        Action::Reload
    );
    parse_simple!(
        parse_history,
        tenant_schema_history_request::Reader<'_>,
        Action::History
    );

    pub fn parse_activate(
        r: tenant_schema_activate_request::Reader<'_>,
    ) -> Result<Self, RequestError> {
        Ok(TenantCommand {
            token: text(r.get_token())?,
            tenant_id: text(r.get_tenant_id())?,
            action: Action::Activate {
                version_id: text(r.get_version_id())?,
                request: ActivateRequest {
                    reason: r
                        .get_has_reason()
                        .then(|| text(r.get_reason()))
                        .transpose()?,
                    actor: r.get_has_actor().then(|| text(r.get_actor())).transpose()?,
                },
            },
        })
    }

    pub fn parse_assign(r: tenant_assign_request::Reader<'_>) -> Result<Self, RequestError> {
        Ok(TenantCommand {
            token: text(r.get_token())?,
            tenant_id: text(r.get_tenant_id())?,
            action: Action::Assign {
                shard_id: text(r.get_shard_id())?,
            },
        })
    }

    pub fn parse_quota_set(r: tenant_quota_set_request::Reader<'_>) -> Result<Self, RequestError> {
        Ok(TenantCommand {
            token: text(r.get_token())?,
            tenant_id: text(r.get_tenant_id())?,
            action: Action::QuotaSet {
                max_storage_mb: r.get_max_storage_mb(),
            },
        })
    }

    pub fn parse_publish(
        r: tenant_schema_publish_request::Reader<'_>,
    ) -> Result<Self, RequestError> {
        Ok(TenantCommand {
            token: text(r.get_token())?,
            tenant_id: text(r.get_tenant_id())?,
            action: Action::Publish(PublishRequest {
                reason: r
                    .get_has_reason()
                    .then(|| text(r.get_reason()))
                    .transpose()?,
                actor: r.get_has_actor().then(|| text(r.get_actor())).transpose()?,
                labels: texts(r.get_labels())?,
                activate: r.get_activate(),
                force: r.get_force(),
                reload: r.get_reload(),
            }),
        })
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
                Reply::TenantAssign { changed, shard_id }
            }
            Action::Unassign => Reply::TenantUnassign {
                changed: tenants.unassign(&tenant)?,
            },
            Action::QuotaSet { max_storage_mb } => Reply::TenantQuotaSet {
                changed: tenants.set_quota(&tenant, max_storage_mb)?,
                quota_mb: max_storage_mb,
            },
            Action::QuotaClear => Reply::TenantQuotaClear {
                changed: tenants.clear_quota(&tenant)?,
            },
            Action::QuotaRecalc => Reply::TenantQuotaRecalc {
                storage_bytes: ctx.state.store.recalc_usage(&tenant)?.bytes,
            },
            Action::Reload => Reply::TenantReload {
                reloaded: tenants.reload(&tenant)?,
            },
            Action::Publish(request) => {
                let outcome = tenants.publish(&tenant, request)?;
                Reply::TenantSchemaPublish {
                    version_id: outcome.version_id,
                    activated: outcome.activated,
                    skipped: outcome.skipped,
                }
            }
            Action::History => Reply::TenantSchemaHistory {
                manifest_json: json_text(&tenants.manifest(&tenant))?,
            },
            Action::Activate {
                version_id,
                request,
            } => {
                let outcome = tenants.activate_version(&tenant, version_id.trim(), &request)?;
                Reply::TenantSchemaActivate {
                    version_id: outcome.version_id,
                    activated: outcome.activated,
                    action: match outcome.action {
                        AuditAction::Rollback => "rollback",
                        _ => "activate",
                    },
                }
            }
        })
    }
}

/// `tenantList` (ours): every tenant known to this server — by stored data, placement, quota or
/// schema files — that the token's `tenants` claim allows, with placement, quota and usage.
pub(crate) struct TenantList {
    token: String,
}

impl TenantList {
    pub fn parse(r: tenant_list_request::Reader<'_>) -> Result<Self, RequestError> {
        Ok(TenantList {
            token: text(r.get_token())?,
        })
    }

    pub fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
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
        Ok(Reply::TenantList {
            tenants_json: json_text(&listed)?,
        })
    }
}

fn json_text(value: &impl serde::Serialize) -> Result<String, RequestError> {
    serde_json::to_string(value)
        .map_err(|err| RequestError::from(eventdbx_core::CoreError::Serialization(err.to_string())))
}
