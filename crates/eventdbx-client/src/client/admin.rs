//! Administration: schemas, tenants, and (ours) plugins and queues.

use eventdbx_proto::control::{
    AdminRequest, ListSchemasRequest, ReplaceSchemasRequest, Reply, Request, TenantAssignRequest,
    TenantListRequest, TenantQuotaClearRequest, TenantQuotaRecalcRequest, TenantQuotaSetRequest,
    TenantReloadRequest, TenantSchemaActivateRequest, TenantSchemaHistoryRequest,
    TenantSchemaPublishRequest, TenantUnassignRequest,
};

use super::{require_tenant, unexpected, Client, Safety};
use crate::error::{Error, Result};
use crate::types::{
    SchemaActivateResult, SchemaPublish, SchemaPublishResult, TenantAssignResult, TenantQuotaResult,
};

impl Client {
    /// Plugin and queue administration (ours, request `admin` @24): `action` such as
    /// `plugin.list`, `plugin.add`, `queue.list`, `queue.retry`; `args` a JSON object. Needs a
    /// root/admin token. Returns the action's JSON result.
    pub async fn admin(&self, action: &str, args: &serde_json::Value) -> Result<serde_json::Value> {
        let safety = if action.ends_with(".list") {
            Safety::Repeatable
        } else {
            Safety::Mutation { keyed: false }
        };
        let request = Request::Admin(AdminRequest {
            token: self.token(),
            action: action.to_owned(),
            args_json: args.to_string(),
        });
        let result = self
            .call(safety, request, |reply| match reply {
                Reply::Admin(r) => Ok(r.result_json),
                other => unexpected(&other),
            })
            .await;
        match result {
            Ok(json) => serde_json::from_str(&json)
                .map_err(|err| Error::protocol(format!("admin reply is not JSON: {err}"))),
            Err(err) if err.code() == "serialization" => Err(Error::new(
                crate::ErrorKind::Unsupported,
                format!("server does not support admin ({})", err.message()),
            )),
            Err(err) => Err(err),
        }
    }

    /// The tenant's schema map (JSON object keyed by aggregate type).
    pub async fn list_schemas(&self) -> Result<String> {
        let request = Request::ListSchemas(ListSchemasRequest {
            token: self.token(),
        });
        self.call(Safety::Repeatable, request, |reply| match reply {
            Reply::ListSchemas(r) => Ok(r.schemas_json),
            other => unexpected(&other),
        })
        .await
    }

    /// Replaces the tenant's whole schema map; returns the number of schemas in the new set.
    pub async fn replace_schemas(&self, schemas_json: &str) -> Result<u32> {
        if schemas_json.trim().is_empty() {
            return Err(Error::argument("schemas_json must be provided"));
        }
        let request = Request::ReplaceSchemas(ReplaceSchemasRequest {
            token: self.token(),
            schemas_json: schemas_json.to_owned(),
        });
        self.call(Safety::Repeatable, request, |reply| match reply {
            Reply::ReplaceSchemas(r) => Ok(r.replaced),
            other => unexpected(&other),
        })
        .await
    }

    /// Places a tenant on a shard.
    pub async fn tenant_assign(
        &self,
        tenant_id: &str,
        shard_id: &str,
    ) -> Result<TenantAssignResult> {
        if tenant_id.trim().is_empty() || shard_id.trim().is_empty() {
            return Err(Error::argument("tenant_id and shard_id must be provided"));
        }
        let request = Request::TenantAssign(TenantAssignRequest {
            token: self.token(),
            tenant_id: tenant_id.to_owned(),
            shard_id: shard_id.to_owned(),
        });
        self.call(Safety::Repeatable, request, |reply| match reply {
            Reply::TenantAssign(r) => Ok(TenantAssignResult {
                changed: r.changed,
                shard_id: r.shard_id,
            }),
            other => unexpected(&other),
        })
        .await
    }

    /// Removes a tenant's explicit shard placement; true when one existed.
    pub async fn tenant_unassign(&self, tenant_id: &str) -> Result<bool> {
        require_tenant(tenant_id)?;
        let request = Request::TenantUnassign(TenantUnassignRequest {
            token: self.token(),
            tenant_id: tenant_id.to_owned(),
        });
        self.call(Safety::Repeatable, request, |reply| match reply {
            Reply::TenantUnassign(r) => Ok(r.changed),
            other => unexpected(&other),
        })
        .await
    }

    /// Sets a tenant's storage quota in MB.
    pub async fn tenant_quota_set(
        &self,
        tenant_id: &str,
        max_storage_mb: u64,
    ) -> Result<TenantQuotaResult> {
        require_tenant(tenant_id)?;
        let request = Request::TenantQuotaSet(TenantQuotaSetRequest {
            token: self.token(),
            tenant_id: tenant_id.to_owned(),
            max_storage_mb,
        });
        self.call(Safety::Repeatable, request, |reply| match reply {
            Reply::TenantQuotaSet(r) => Ok(TenantQuotaResult {
                changed: r.changed,
                quota_mb: r.quota_mb,
            }),
            other => unexpected(&other),
        })
        .await
    }

    /// Clears a tenant's quota; true when one existed.
    pub async fn tenant_quota_clear(&self, tenant_id: &str) -> Result<bool> {
        require_tenant(tenant_id)?;
        let request = Request::TenantQuotaClear(TenantQuotaClearRequest {
            token: self.token(),
            tenant_id: tenant_id.to_owned(),
        });
        self.call(Safety::Repeatable, request, |reply| match reply {
            Reply::TenantQuotaClear(r) => Ok(r.changed),
            other => unexpected(&other),
        })
        .await
    }

    /// Recomputes a tenant's storage use; returns bytes.
    pub async fn tenant_quota_recalc(&self, tenant_id: &str) -> Result<u64> {
        require_tenant(tenant_id)?;
        let request = Request::TenantQuotaRecalc(TenantQuotaRecalcRequest {
            token: self.token(),
            tenant_id: tenant_id.to_owned(),
        });
        self.call(Safety::Repeatable, request, |reply| match reply {
            Reply::TenantQuotaRecalc(r) => Ok(r.storage_bytes),
            other => unexpected(&other),
        })
        .await
    }

    /// Reloads a tenant's cached metadata; true when it was reloaded.
    pub async fn tenant_reload(&self, tenant_id: &str) -> Result<bool> {
        require_tenant(tenant_id)?;
        let request = Request::TenantReload(TenantReloadRequest {
            token: self.token(),
            tenant_id: tenant_id.to_owned(),
        });
        self.call(Safety::Repeatable, request, |reply| match reply {
            Reply::TenantReload(r) => Ok(r.reloaded),
            other => unexpected(&other),
        })
        .await
    }

    /// Publishes a tenant's schemas as a new version.
    pub async fn tenant_schema_publish(
        &self,
        publish: &SchemaPublish,
    ) -> Result<SchemaPublishResult> {
        require_tenant(&publish.tenant_id)?;
        if u32::try_from(publish.labels.len()).is_err() {
            return Err(Error::argument("too many labels"));
        }
        let request = Request::TenantSchemaPublish(TenantSchemaPublishRequest {
            token: self.token(),
            tenant_id: publish.tenant_id.clone(),
            reason: publish.reason.clone(),
            actor: publish.actor.clone(),
            labels: publish.labels.clone(),
            activate: publish.activate,
            force: publish.force,
            reload: publish.reload,
        });
        self.call(
            Safety::Mutation { keyed: false },
            request,
            |reply| match reply {
                Reply::TenantSchemaPublish(r) => Ok(SchemaPublishResult {
                    version_id: r.version_id,
                    activated: r.activated,
                    skipped: r.skipped,
                }),
                other => unexpected(&other),
            },
        )
        .await
    }

    /// Every tenant known to the server that the token may administer, as JSON objects
    /// `{tenant_id, shard_id, assigned, quota_mb, events, storage_bytes, active_version,
    /// versions}` (ours; needs `tenant.manage`).
    pub async fn tenant_list(&self) -> Result<Vec<serde_json::Value>> {
        let request = Request::TenantList(TenantListRequest {
            token: self.token(),
        });
        let json = self
            .call(Safety::Repeatable, request, |reply| match reply {
                Reply::TenantList(r) => Ok(r.tenants_json),
                other => unexpected(&other),
            })
            .await?;
        serde_json::from_str(&json)
            .map_err(|err| Error::protocol(format!("tenantList returned invalid JSON: {err}")))
    }

    /// The tenant's schema-version manifest: `{manifest_version, active_version, versions,
    /// audit_log}` (ours; needs `tenant.manage`).
    pub async fn tenant_schema_history(&self, tenant_id: &str) -> Result<serde_json::Value> {
        require_tenant(tenant_id)?;
        let request = Request::TenantSchemaHistory(TenantSchemaHistoryRequest {
            token: self.token(),
            tenant_id: tenant_id.to_owned(),
        });
        let json = self
            .call(Safety::Repeatable, request, |reply| match reply {
                Reply::TenantSchemaHistory(r) => Ok(r.manifest_json),
                other => unexpected(&other),
            })
            .await?;
        serde_json::from_str(&json).map_err(|err| {
            Error::protocol(format!("tenantSchemaHistory returned invalid JSON: {err}"))
        })
    }

    /// Makes a published schema version the tenant's active schema set again (ours).
    /// Activating the active version again changes nothing, so the call is safe to retry.
    pub async fn tenant_schema_activate(
        &self,
        tenant_id: &str,
        version_id: &str,
        reason: Option<&str>,
        actor: Option<&str>,
    ) -> Result<SchemaActivateResult> {
        require_tenant(tenant_id)?;
        if version_id.trim().is_empty() {
            return Err(Error::argument("version_id must be provided"));
        }
        let request = Request::TenantSchemaActivate(TenantSchemaActivateRequest {
            token: self.token(),
            tenant_id: tenant_id.to_owned(),
            version_id: version_id.to_owned(),
            reason: reason.map(str::to_owned),
            actor: actor.map(str::to_owned),
        });
        self.call(Safety::Repeatable, request, |reply| match reply {
            Reply::TenantSchemaActivate(r) => Ok(SchemaActivateResult {
                version_id: r.version_id,
                activated: r.activated,
                action: r.action,
            }),
            other => unexpected(&other),
        })
        .await
    }
}
