# Schema and tenant administration messages of the EventDBX control protocol.
#
# Wire-compatible with the reference (see docs/protocol.md, "Requests and responses"). The file id
# is the reference's: it never appears on the wire, but keeping it keeps generated type ids stable.
# Rules for changes: never renumber or retype a field; new fields only at new ordinals at the end.

@0xd5ec7c0aa378d5cb;

struct ListSchemasRequest {
  token @0 :Text;
}

struct ListSchemasResponse {
  schemasJson @0 :Text;
}

struct ReplaceSchemasRequest {
  token @0 :Text;
  schemasJson @1 :Text;
}

struct ReplaceSchemasResponse {
  replaced @0 :UInt32;
}

struct TenantAssignRequest {
  token @0 :Text;
  tenantId @1 :Text;
  shardId @2 :Text;
}

struct TenantAssignResponse {
  changed @0 :Bool;
  shardId @1 :Text;
}

struct TenantUnassignRequest {
  token @0 :Text;
  tenantId @1 :Text;
}

struct TenantUnassignResponse {
  changed @0 :Bool;
}

struct TenantQuotaSetRequest {
  token @0 :Text;
  tenantId @1 :Text;
  maxStorageMb @2 :UInt64;
}

struct TenantQuotaSetResponse {
  changed @0 :Bool;
  quotaMb @1 :UInt64;
  hasQuota @2 :Bool;
}

struct TenantQuotaClearRequest {
  token @0 :Text;
  tenantId @1 :Text;
}

struct TenantQuotaClearResponse {
  changed @0 :Bool;
}

struct TenantQuotaRecalcRequest {
  token @0 :Text;
  tenantId @1 :Text;
}

struct TenantQuotaRecalcResponse {
  storageBytes @0 :UInt64;
}

struct TenantReloadRequest {
  token @0 :Text;
  tenantId @1 :Text;
}

struct TenantReloadResponse {
  reloaded @0 :Bool;
}

struct TenantSchemaPublishRequest {
  token @0 :Text;
  tenantId @1 :Text;
  reason @2 :Text;
  hasReason @3 :Bool;
  actor @4 :Text;
  hasActor @5 :Bool;
  labels @6 :List(Text);
  activate @7 :Bool;
  force @8 :Bool;
  reload @9 :Bool;
}

struct TenantSchemaPublishResponse {
  versionId @0 :Text;
  activated @1 :Bool;
  skipped @2 :Bool;
}

# Ours (not in EventDBX): tenant listing and schema-version history/activation, so that the CLI's
# `tenant list`, `schema history` and `schema activate` go through the control protocol. Old
# servers answer these members with an unknown-request error.

struct TenantListRequest {
  token @0 :Text;
}

struct TenantListResponse {
  # JSON array of {tenant_id, shard_id, assigned, quota_mb?, events, storage_bytes,
  # active_version?, versions}, sorted by tenant id; only tenants the token's claim allows.
  tenantsJson @0 :Text;
}

struct TenantSchemaHistoryRequest {
  token @0 :Text;
  tenantId @1 :Text;
}

struct TenantSchemaHistoryResponse {
  # The tenant's manifest: {manifest_version, active_version, versions, audit_log}.
  manifestJson @0 :Text;
}

struct TenantSchemaActivateRequest {
  token @0 :Text;
  tenantId @1 :Text;
  versionId @2 :Text;
  reason @3 :Text;
  hasReason @4 :Bool;
  actor @5 :Text;
  hasActor @6 :Bool;
}

struct TenantSchemaActivateResponse {
  versionId @0 :Text;
  # False when the version was already the active one (nothing changed).
  activated @1 :Bool;
  # The audit action recorded: "activate", or "rollback" for a version older than the active one.
  action @2 :Text;
}
