//! Publishing a tenant's schema set as a version and activating versions (`tenantSchemaPublish`,
//! `tenantSchemaActivate`): content-addressed, idempotent, audited in the manifest.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use eventdbx_core::schema::SchemaMap;
use eventdbx_core::time::format_unix_nanos;
use eventdbx_core::CoreError;
use eventdbx_store::documents::{Expected, MAX_DOCUMENT_RACES};
use sha2::{Digest, Sha256};

use super::manifest::{AuditAction, AuditEntry, Manifest, SchemaVersion};
use super::place::{Item, MANIFEST, SCHEMAS};
use super::{check_tenant, disk, lock, pretty, read, write, TenantState, Tenants};

/// Collision suffixes `-01` … `-998` tried before a random one.
const MAX_COLLISION_SUFFIX: u32 = 998;

/// What `tenantSchemaPublish` asks for (the request carries no schema content).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishRequest {
    /// Why; recorded in the version and the audit log.
    pub reason: Option<String>,
    /// Who; recorded as the version's `author` and the audit entries' `actor`.
    pub actor: Option<String>,
    /// Labels of the version; trimmed, empty ones dropped.
    pub labels: Vec<String>,
    /// Make the version the active schema set.
    pub activate: bool,
    /// Publish even when the content equals the latest version's.
    pub force: bool,
    /// Refresh the tenant's caches afterwards.
    pub reload: bool,
}

/// What `tenantSchemaPublish` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOutcome {
    /// The new version, or the latest one when nothing new was published.
    pub version_id: String,
    /// The version became the active one during this request.
    pub activated: bool,
    /// Nothing new was published: the content equals the latest version's.
    pub skipped: bool,
}

/// Who activates a schema version and why (recorded in the audit log).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivateRequest {
    /// Why; recorded in the audit entry.
    pub reason: Option<String>,
    /// Who; recorded as the audit entry's `actor`.
    pub actor: Option<String>,
}

/// What [`Tenants::activate_version`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivateOutcome {
    /// The version asked for.
    pub version_id: String,
    /// False when it already was the active, installed set.
    pub activated: bool,
    /// The audit action recorded (`activate` or `rollback`); `activate` when nothing changed.
    pub action: AuditAction,
}

impl Tenants {
    /// `tenantSchemaPublish`: versions the tenant's current schema set (`docs/server.md`, "Schema
    /// versions").
    ///
    /// 1. The current set is the one in memory, which mirrors `schemas.json`. **Ours:** a tenant
    ///    without `schemas.json` publishes `{}` (the reference fails with `io`).
    /// 2. Its canonical form is the pretty-printed JSON, checksummed as `sha256:<hex>`.
    /// 3. Without `force`, content equal to the latest version's publishes nothing
    ///    (`skipped`); with `activate`, that version is activated if it is not active yet.
    /// 4. Otherwise a new version `v%Y%m%dT%H%M%S%3fZ` (`-01` … `-998`, then `-<uuid>` on
    ///    collision) is written with its manifest entry and a `publish` audit entry.
    /// 5. `activate` installs the version as the schema set, sets `active_version` and adds an
    ///    `activate` audit entry.
    /// 6. `reload` re-reads the tenant afterwards; a failure there is logged, not returned.
    ///
    /// On a shared database the tenant is read again first, and a publish that another server's
    /// change of the manifest overtook starts again from that change.
    pub fn publish(
        &self,
        tenant: &str,
        request: PublishRequest,
    ) -> Result<PublishOutcome, CoreError> {
        check_tenant(tenant)?;
        let state = self.state_or_insert(tenant);
        let outcome = self.until_stored(tenant, &state, |state| {
            self.publish_locked(tenant, state, &request)
        })?;
        if request.reload {
            if let Err(err) = self.reload(tenant) {
                tracing::warn!(tenant, error = %err, "reload after schema publish failed");
            }
        }
        Ok(outcome)
    }

    /// Runs `attempt` under the tenant's writer lock until it stores its change: `None` from it
    /// means another server changed the manifest first, so the tenant is read again and the
    /// attempt repeated. Files are never raced (one server writes them).
    fn until_stored<R>(
        &self,
        tenant: &str,
        state: &TenantState,
        mut attempt: impl FnMut(&TenantState) -> Result<Option<R>, CoreError>,
    ) -> Result<R, CoreError> {
        let _writer = lock(&state.writer);
        for _ in 0..MAX_DOCUMENT_RACES {
            if self.place.is_shared() {
                self.refresh_locked(tenant, state)?;
            }
            if let Some(outcome) = attempt(state)? {
                return Ok(outcome);
            }
        }
        Err(CoreError::Io(format!(
            "the schema manifest of tenant '{tenant}' changed under {MAX_DOCUMENT_RACES} \
             attempts in a row to update it (retry later)"
        )))
    }

    fn publish_locked(
        &self,
        tenant: &str,
        state: &TenantState,
        request: &PublishRequest,
    ) -> Result<Option<PublishOutcome>, CoreError> {
        let (schemas, mut manifest, expected) = {
            let files = read(&state.files);
            (
                Arc::clone(&files.schemas),
                Manifest::clone(&files.manifest),
                files.manifest_expected(),
            )
        };
        let content = pretty(&*schemas)?;
        let checksum = sha256_checksum(content.as_bytes());
        let now = now_nanos();
        let timestamp = format_unix_nanos(now);

        let latest = manifest
            .latest()
            .map(|latest| (latest.id.clone(), latest.checksum.clone()));
        if let Some((latest_id, latest_checksum)) = latest {
            if !request.force && latest_checksum == checksum {
                let activated =
                    request.activate && manifest.active_version.as_deref() != Some(&latest_id);
                if activated {
                    activate(&mut manifest, &latest_id, &timestamp, request);
                    self.install_schemas(tenant, content.as_bytes())?;
                    if !self.store_manifest(tenant, state, manifest, expected)? {
                        return Ok(None);
                    }
                }
                return Ok(Some(PublishOutcome {
                    version_id: latest_id,
                    activated,
                    skipped: true,
                }));
            }
        }

        let version_id = new_version_id(
            &manifest,
            &|id| self.place.exists(Item::Tenant(tenant, &version_file(id))),
            now,
        )?;
        let file = version_file(&version_id);
        // A version id another server took meanwhile: start again (with a new id).
        if !self.place.write(
            Item::Tenant(tenant, &file),
            content.as_bytes(),
            Expected::Absent,
        )? {
            return Ok(None);
        }
        let parent = manifest.latest().map(|latest| latest.id.clone());
        manifest.versions.push(SchemaVersion {
            id: version_id.clone(),
            file,
            created_at: timestamp.clone(),
            author: request.actor.clone(),
            reason: request.reason.clone(),
            parent,
            checksum,
            labels: request
                .labels
                .iter()
                .map(|label| label.trim())
                .filter(|label| !label.is_empty())
                .map(str::to_owned)
                .collect(),
        });
        manifest.audit_log.push(AuditEntry {
            timestamp: timestamp.clone(),
            actor: request.actor.clone(),
            action: AuditAction::Publish,
            version: version_id.clone(),
            reason: request.reason.clone(),
            details: None,
        });
        if request.activate {
            activate(&mut manifest, &version_id, &timestamp, request);
            // The version's content is the current set, so installing it changes no schema;
            // it only makes sure `schemas.json` exists and matches the active version.
            self.install_schemas(tenant, content.as_bytes())?;
        }
        if !self.store_manifest(tenant, state, manifest, expected)? {
            return Ok(None);
        }
        Ok(Some(PublishOutcome {
            version_id,
            activated: request.activate,
            skipped: false,
        }))
    }

    /// Writes the tenant's schema set (whatever it replaces).
    fn install_schemas(&self, tenant: &str, content: &[u8]) -> Result<(), CoreError> {
        self.place
            .write(Item::Tenant(tenant, SCHEMAS), content, Expected::Any)
            .map(|_| ())
    }

    /// Writes the manifest if it is still the one read (`expected`) and, once it is stored,
    /// installs it in memory; `false` when another server changed it first.
    fn store_manifest(
        &self,
        tenant: &str,
        state: &TenantState,
        manifest: Manifest,
        expected: Expected,
    ) -> Result<bool, CoreError> {
        let text = pretty(&manifest)?;
        if !self
            .place
            .write(Item::Tenant(tenant, MANIFEST), text.as_bytes(), expected)?
        {
            return Ok(false);
        }
        let mut files = write(&state.files);
        files.manifest = Arc::new(manifest);
        files.stored = true;
        files.manifest_revision = bumped(expected);
        Ok(true)
    }

    /// Makes a published version the tenant's schema set again (`dbx schema activate`): its
    /// stored content is checked against the manifest's checksum, parsed, and installed
    /// atomically as `schemas.json`; `active_version` is set and an audit entry added —
    /// `rollback` when the version is older than the active one, else `activate`.
    ///
    /// Nothing changes (`activated = false`) when the version is already active and the
    /// current set equals its content. An unknown version is a `config` error naming it; a
    /// version file that fails its checksum or does not parse is a `config` error too, and
    /// leaves the schema set as it was.
    pub fn activate_version(
        &self,
        tenant: &str,
        version_id: &str,
        request: &ActivateRequest,
    ) -> Result<ActivateOutcome, CoreError> {
        check_tenant(tenant)?;
        let state = self.state_or_insert(tenant);
        self.until_stored(tenant, &state, |state| {
            self.activate_locked(tenant, state, version_id, request)
        })
    }

    fn activate_locked(
        &self,
        tenant: &str,
        state: &TenantState,
        version_id: &str,
        request: &ActivateRequest,
    ) -> Result<Option<ActivateOutcome>, CoreError> {
        let (current, mut manifest, expected) = {
            let files = read(&state.files);
            (
                Arc::clone(&files.schemas),
                Manifest::clone(&files.manifest),
                files.manifest_expected(),
            )
        };
        let Some(position) = manifest.versions.iter().position(|v| v.id == version_id) else {
            return Err(CoreError::Config(format!(
                "schema version '{version_id}' is not published for tenant '{tenant}'"
            )));
        };
        let version = manifest.versions[position].clone();
        let item = Item::Tenant(tenant, &version.file);
        let content = self.place.read(item)?.text.ok_or_else(|| {
            CoreError::Config(format!(
                "schema version '{version_id}' has no content file ({})",
                version.file
            ))
        })?;
        if sha256_checksum(content.as_bytes()) != version.checksum {
            return Err(CoreError::Config(format!(
                "schema version '{version_id}' does not match its checksum; not activated"
            )));
        }
        let schemas = SchemaMap::from_json(&content)
            .map_err(|err| disk::corrupt(&self.place.describe(item), &err))?;
        let already_active = manifest.active_version.as_deref() == Some(version_id);
        if already_active && pretty(&*current)? == content {
            return Ok(Some(ActivateOutcome {
                version_id: version_id.to_owned(),
                activated: false,
                action: AuditAction::Activate,
            }));
        }
        let active_position = manifest
            .active_version
            .as_deref()
            .and_then(|active| manifest.versions.iter().position(|v| v.id == active));
        let action = match active_position {
            Some(active) if position < active => AuditAction::Rollback,
            _ => AuditAction::Activate,
        };
        let timestamp = format_unix_nanos(now_nanos());
        manifest.active_version = Some(version_id.to_owned());
        manifest.audit_log.push(AuditEntry {
            timestamp,
            actor: request.actor.clone(),
            action,
            version: version_id.to_owned(),
            reason: request.reason.clone(),
            details: None,
        });
        if self.place.is_shared() {
            // The manifest decides the race; the schema set follows the winner's.
            if !self.store_manifest(tenant, state, manifest, expected)? {
                return Ok(None);
            }
            self.install_schemas(tenant, content.as_bytes())?;
        } else {
            self.install_schemas(tenant, content.as_bytes())?;
            self.store_manifest(tenant, state, manifest, expected)?;
        }
        write(&state.files).schemas = Arc::new(schemas);
        Ok(Some(ActivateOutcome {
            version_id: version_id.to_owned(),
            activated: true,
            action,
        }))
    }
}

/// Where a published version's content is, relative to the tenant's directory (or document
/// prefix).
fn version_file(id: &str) -> String {
    format!("schemas/versions/{id}.json")
}

/// The revision a successful write under `expected` gave the document.
fn bumped(expected: Expected) -> Option<u64> {
    match expected {
        Expected::Absent => Some(1),
        Expected::Revision(revision) => Some(revision + 1),
        Expected::Any => None,
    }
}

/// Records an activation of `version` in the manifest.
fn activate(manifest: &mut Manifest, version: &str, timestamp: &str, request: &PublishRequest) {
    let details = (manifest.active_version.as_deref() == Some(version))
        .then(|| "requested version already active".to_owned());
    manifest.active_version = Some(version.to_owned());
    manifest.audit_log.push(AuditEntry {
        timestamp: timestamp.to_owned(),
        actor: request.actor.clone(),
        action: AuditAction::Activate,
        version: version.to_owned(),
        reason: request.reason.clone(),
        details,
    });
}

/// A version id for a publish at `nanos` that no published version and no stored version
/// (`stored(id)`) uses.
fn new_version_id(
    manifest: &Manifest,
    stored: &dyn Fn(&str) -> bool,
    nanos: u64,
) -> Result<String, CoreError> {
    let base = version_stamp(nanos);
    let taken = |id: &str| manifest.contains(id) || stored(id);
    if !taken(&base) {
        return Ok(base);
    }
    for suffix in 1..=MAX_COLLISION_SUFFIX {
        let candidate = format!("{base}-{suffix:02}");
        if !taken(&candidate) {
            return Ok(candidate);
        }
    }
    let uuid = crate::random_id::uuid_v4()
        .map_err(|err| CoreError::Config(format!("cannot draw a random version id: {err}")))?;
    Ok(format!("{base}-{uuid}"))
}

/// `v` + the UTC time as `%Y%m%dT%H%M%S%3fZ`, e.g. `v20260324T101530123Z`.
fn version_stamp(nanos: u64) -> String {
    let seconds = format_unix_nanos(nanos - nanos % 1_000_000_000);
    let compact: String = seconds
        .trim_end_matches('Z')
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let millis = (nanos % 1_000_000_000) / 1_000_000;
    format!("v{compact}{millis:03}Z")
}

fn sha256_checksum(bytes: &[u8]) -> String {
    format!("sha256:{}", hex_string(&Sha256::digest(bytes)))
}

fn hex_string(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_stamp_has_millisecond_precision() {
        // 2026-03-24T10:15:30.123456789Z
        let nanos = 1_774_347_330_123_456_789;
        assert_eq!(format_unix_nanos(nanos), "2026-03-24T10:15:30.123456789Z");
        assert_eq!(version_stamp(nanos), "v20260324T101530123Z");
        assert_eq!(
            version_stamp(1_774_347_330_000_000_000),
            "v20260324T101530000Z"
        );
    }

    #[test]
    fn collisions_get_numbered_suffixes() {
        let nanos = 1_774_347_330_123_000_000;
        let mut manifest = Manifest::default();
        for id in ["v20260324T101530123Z", "v20260324T101530123Z-01"] {
            manifest.versions.push(SchemaVersion {
                id: id.to_owned(),
                file: format!("schemas/versions/{id}.json"),
                created_at: String::new(),
                author: None,
                reason: None,
                parent: None,
                checksum: String::new(),
                labels: Vec::new(),
            });
        }
        assert_eq!(
            new_version_id(&manifest, &|_| false, nanos).expect("id"),
            "v20260324T101530123Z-02"
        );
    }

    #[test]
    fn checksum_is_prefixed_hex_sha256() {
        assert_eq!(
            sha256_checksum(b"{}"),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
