//! Tenant administration: assign, unassign, quotas, reload, schema publish, and ours: the
//! tenant list and schema-version history and activation.

use super::{fill_texts, list_len, optional_text, text, texts};
use crate::schema::schema_capnp::{
    tenant_assign_request, tenant_assign_response, tenant_list_request, tenant_list_response,
    tenant_quota_clear_request, tenant_quota_clear_response, tenant_quota_recalc_request,
    tenant_quota_recalc_response, tenant_quota_set_request, tenant_quota_set_response,
    tenant_reload_request, tenant_reload_response, tenant_schema_activate_request,
    tenant_schema_activate_response, tenant_schema_history_request, tenant_schema_history_response,
    tenant_schema_publish_request, tenant_schema_publish_response, tenant_unassign_request,
    tenant_unassign_response,
};
use crate::Result;

/// The requests that carry only a token and a target tenant.
macro_rules! tenant_only_request {
    ($(#[$doc:meta])* $name:ident, $module:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            pub token: String,
            pub tenant_id: String,
        }

        impl $name {
            pub fn encode(&self, mut r: $module::Builder<'_>) -> Result<()> {
                r.set_token(self.token.as_str());
                r.set_tenant_id(self.tenant_id.as_str());
                Ok(())
            }

            pub fn decode(r: $module::Reader<'_>) -> Result<Self> {
                Ok($name {
                    token: text(r.get_token())?,
                    tenant_id: text(r.get_tenant_id())?,
                })
            }
        }
    };
}

/// The replies that carry one flag or number.
macro_rules! scalar_response {
    ($(#[$doc:meta])* $name:ident, $module:ident, $field:ident: $ty:ty, $get:ident, $set:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            pub $field: $ty,
        }

        impl $name {
            pub fn encode(&self, mut r: $module::Builder<'_>) {
                r.$set(self.$field);
            }

            pub fn decode(r: $module::Reader<'_>) -> Result<Self> {
                Ok($name { $field: r.$get() })
            }
        }
    };
}

/// The replies that carry one JSON text.
macro_rules! json_response {
    ($(#[$doc:meta])* $name:ident, $module:ident, $field:ident, $get:ident, $set:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            pub $field: String,
        }

        impl $name {
            pub fn encode(&self, mut r: $module::Builder<'_>) {
                r.$set(self.$field.as_str());
            }

            pub fn decode(r: $module::Reader<'_>) -> Result<Self> {
                Ok($name { $field: text(r.$get())? })
            }
        }
    };
}

/// `tenantAssign`: place a tenant on a shard.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantAssignRequest {
    pub token: String,
    pub tenant_id: String,
    pub shard_id: String,
}

impl TenantAssignRequest {
    pub fn encode(&self, mut r: tenant_assign_request::Builder<'_>) -> Result<()> {
        r.set_token(self.token.as_str());
        r.set_tenant_id(self.tenant_id.as_str());
        r.set_shard_id(self.shard_id.as_str());
        Ok(())
    }

    pub fn decode(r: tenant_assign_request::Reader<'_>) -> Result<Self> {
        Ok(TenantAssignRequest {
            token: text(r.get_token())?,
            tenant_id: text(r.get_tenant_id())?,
            shard_id: text(r.get_shard_id())?,
        })
    }
}

/// The `tenantAssign` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantAssignResponse {
    pub changed: bool,
    pub shard_id: String,
}

impl TenantAssignResponse {
    pub fn encode(&self, mut r: tenant_assign_response::Builder<'_>) {
        r.set_changed(self.changed);
        r.set_shard_id(self.shard_id.as_str());
    }

    pub fn decode(r: tenant_assign_response::Reader<'_>) -> Result<Self> {
        Ok(TenantAssignResponse {
            changed: r.get_changed(),
            shard_id: text(r.get_shard_id())?,
        })
    }
}

tenant_only_request!(
    /// `tenantUnassign`: remove a tenant's explicit shard placement.
    TenantUnassignRequest,
    tenant_unassign_request
);
scalar_response!(
    /// The `tenantUnassign` reply: true when a placement existed.
    TenantUnassignResponse,
    tenant_unassign_response,
    changed: bool,
    get_changed,
    set_changed
);

/// `tenantQuotaSet`: set a tenant's storage quota.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantQuotaSetRequest {
    pub token: String,
    pub tenant_id: String,
    pub max_storage_mb: u64,
}

impl TenantQuotaSetRequest {
    pub fn encode(&self, mut r: tenant_quota_set_request::Builder<'_>) -> Result<()> {
        r.set_token(self.token.as_str());
        r.set_tenant_id(self.tenant_id.as_str());
        r.set_max_storage_mb(self.max_storage_mb);
        Ok(())
    }

    pub fn decode(r: tenant_quota_set_request::Reader<'_>) -> Result<Self> {
        Ok(TenantQuotaSetRequest {
            token: text(r.get_token())?,
            tenant_id: text(r.get_tenant_id())?,
            max_storage_mb: r.get_max_storage_mb(),
        })
    }
}

/// The `tenantQuotaSet` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantQuotaSetResponse {
    pub changed: bool,
    pub quota_mb: Option<u64>,
}

impl TenantQuotaSetResponse {
    pub fn encode(&self, mut r: tenant_quota_set_response::Builder<'_>) {
        r.set_changed(self.changed);
        if let Some(quota_mb) = self.quota_mb {
            r.set_quota_mb(quota_mb);
            r.set_has_quota(true);
        }
    }

    pub fn decode(r: tenant_quota_set_response::Reader<'_>) -> Result<Self> {
        Ok(TenantQuotaSetResponse {
            changed: r.get_changed(),
            quota_mb: r.get_has_quota().then(|| r.get_quota_mb()),
        })
    }
}

tenant_only_request!(
    /// `tenantQuotaClear`: clear a tenant's quota.
    TenantQuotaClearRequest,
    tenant_quota_clear_request
);
scalar_response!(
    /// The `tenantQuotaClear` reply: true when a quota existed.
    TenantQuotaClearResponse,
    tenant_quota_clear_response,
    changed: bool,
    get_changed,
    set_changed
);
tenant_only_request!(
    /// `tenantQuotaRecalc`: recompute a tenant's storage use.
    TenantQuotaRecalcRequest,
    tenant_quota_recalc_request
);
scalar_response!(
    /// The `tenantQuotaRecalc` reply.
    TenantQuotaRecalcResponse,
    tenant_quota_recalc_response,
    storage_bytes: u64,
    get_storage_bytes,
    set_storage_bytes
);
tenant_only_request!(
    /// `tenantReload`: reload a tenant's cached metadata.
    TenantReloadRequest,
    tenant_reload_request
);
scalar_response!(
    /// The `tenantReload` reply.
    TenantReloadResponse,
    tenant_reload_response,
    reloaded: bool,
    get_reloaded,
    set_reloaded
);

/// `tenantSchemaPublish`: publish the tenant's schemas as a new version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantSchemaPublishRequest {
    pub token: String,
    pub tenant_id: String,
    pub reason: Option<String>,
    pub actor: Option<String>,
    /// Not sent at all when empty.
    pub labels: Vec<String>,
    pub activate: bool,
    pub force: bool,
    pub reload: bool,
}

impl TenantSchemaPublishRequest {
    pub fn encode(&self, mut r: tenant_schema_publish_request::Builder<'_>) -> Result<()> {
        r.set_token(self.token.as_str());
        r.set_tenant_id(self.tenant_id.as_str());
        if let Some(reason) = &self.reason {
            r.set_reason(reason.as_str());
            r.set_has_reason(true);
        }
        if let Some(actor) = &self.actor {
            r.set_actor(actor.as_str());
            r.set_has_actor(true);
        }
        if !self.labels.is_empty() {
            let count = list_len(self.labels.len(), "labels")?;
            fill_texts(r.reborrow().init_labels(count), &self.labels);
        }
        r.set_activate(self.activate);
        r.set_force(self.force);
        r.set_reload(self.reload);
        Ok(())
    }

    pub fn decode(r: tenant_schema_publish_request::Reader<'_>) -> Result<Self> {
        Ok(TenantSchemaPublishRequest {
            token: text(r.get_token())?,
            tenant_id: text(r.get_tenant_id())?,
            reason: optional_text(r.get_has_reason(), r.get_reason())?,
            actor: optional_text(r.get_has_actor(), r.get_actor())?,
            labels: texts(r.get_labels())?,
            activate: r.get_activate(),
            force: r.get_force(),
            reload: r.get_reload(),
        })
    }
}

/// The `tenantSchemaPublish` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantSchemaPublishResponse {
    pub version_id: String,
    pub activated: bool,
    /// True when the schemas equal the latest version and nothing was published.
    pub skipped: bool,
}

impl TenantSchemaPublishResponse {
    pub fn encode(&self, mut r: tenant_schema_publish_response::Builder<'_>) {
        r.set_version_id(self.version_id.as_str());
        r.set_activated(self.activated);
        r.set_skipped(self.skipped);
    }

    pub fn decode(r: tenant_schema_publish_response::Reader<'_>) -> Result<Self> {
        Ok(TenantSchemaPublishResponse {
            version_id: text(r.get_version_id())?,
            activated: r.get_activated(),
            skipped: r.get_skipped(),
        })
    }
}

/// Ours: `tenantList`, every tenant the token may administer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantListRequest {
    pub token: String,
}

impl TenantListRequest {
    pub fn encode(&self, mut r: tenant_list_request::Builder<'_>) -> Result<()> {
        r.set_token(self.token.as_str());
        Ok(())
    }

    pub fn decode(r: tenant_list_request::Reader<'_>) -> Result<Self> {
        Ok(TenantListRequest {
            token: text(r.get_token())?,
        })
    }
}

json_response!(
    /// The `tenantList` reply: a JSON array of tenants.
    TenantListResponse,
    tenant_list_response,
    tenants_json,
    get_tenants_json,
    set_tenants_json
);
tenant_only_request!(
    /// Ours: `tenantSchemaHistory`, the tenant's schema-version manifest.
    TenantSchemaHistoryRequest,
    tenant_schema_history_request
);
json_response!(
    /// The `tenantSchemaHistory` reply: the manifest as JSON.
    TenantSchemaHistoryResponse,
    tenant_schema_history_response,
    manifest_json,
    get_manifest_json,
    set_manifest_json
);

/// Ours: `tenantSchemaActivate`, make a published schema version the active one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantSchemaActivateRequest {
    pub token: String,
    pub tenant_id: String,
    pub version_id: String,
    pub reason: Option<String>,
    pub actor: Option<String>,
}

impl TenantSchemaActivateRequest {
    pub fn encode(&self, mut r: tenant_schema_activate_request::Builder<'_>) -> Result<()> {
        r.set_token(self.token.as_str());
        r.set_tenant_id(self.tenant_id.as_str());
        r.set_version_id(self.version_id.as_str());
        if let Some(reason) = &self.reason {
            r.set_reason(reason.as_str());
            r.set_has_reason(true);
        }
        if let Some(actor) = &self.actor {
            r.set_actor(actor.as_str());
            r.set_has_actor(true);
        }
        Ok(())
    }

    pub fn decode(r: tenant_schema_activate_request::Reader<'_>) -> Result<Self> {
        Ok(TenantSchemaActivateRequest {
            token: text(r.get_token())?,
            tenant_id: text(r.get_tenant_id())?,
            version_id: text(r.get_version_id())?,
            reason: optional_text(r.get_has_reason(), r.get_reason())?,
            actor: optional_text(r.get_has_actor(), r.get_actor())?,
        })
    }
}

/// The `tenantSchemaActivate` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantSchemaActivateResponse {
    pub version_id: String,
    /// False when the version was already the active one.
    pub activated: bool,
    /// The audit action recorded: `activate` or `rollback`.
    pub action: String,
}

impl TenantSchemaActivateResponse {
    pub fn encode(&self, mut r: tenant_schema_activate_response::Builder<'_>) {
        r.set_version_id(self.version_id.as_str());
        r.set_activated(self.activated);
        r.set_action(self.action.as_str());
    }

    pub fn decode(r: tenant_schema_activate_response::Reader<'_>) -> Result<Self> {
        Ok(TenantSchemaActivateResponse {
            version_id: text(r.get_version_id())?,
            activated: r.get_activated(),
            action: text(r.get_action())?,
        })
    }
}
