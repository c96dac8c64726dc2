//! Tenants (`02-server.md` §11–§13): shard placement, storage quotas, the schema set of each
//! tenant and its published versions.
//!
//! Everything is read from disk once, in [`Tenants::open`], and served from memory afterwards:
//! the request path ([`Tenants::shard_of`], [`Tenants::quota_bytes`], [`Tenants::schemas`]) reads
//! no file. [`Tenants::reload`] re-reads one tenant.
//!
//! ```
//! use eventdbx_server::tenants::Tenants;
//!
//! assert_eq!(Tenants::default_shard("acme", 16), "shard-0009");
//! let dir = std::env::temp_dir().join(format!("tenants-doc-{}", std::process::id()));
//! let tenants = Tenants::open(&dir.join("data"), &dir.join("meta"), 16).expect("open");
//! assert_eq!(tenants.assign("acme", "3", false).expect("assign"), (true, "shard-0003".into()));
//! assert_eq!(tenants.shard_of("acme"), "shard-0003");
//! # std::fs::remove_dir_all(&dir).ok();
//! ```
//!
//! # Files
//! - `<meta_dir>/shards.json`: `{"<tenant>": "shard-NNNN", …}`, assigned shards only.
//! - `<meta_dir>/quotas.json`: `{"<tenant>": <max MB>, …}`.
//! - `<data_dir>/tenants/<tenant>/schemas.json`: the tenant's schema set (`schemasJson`).
//! - `<data_dir>/tenants/<tenant>/schemas/versions/<id>.json`: a published version.
//! - `<data_dir>/tenants/<tenant>/schemas/manifest.json`: the [`Manifest`].
//!
//! Every file is replaced atomically; a write that fails changes neither the file nor memory.
//!
//! # Layout
//! - this module: [`Tenants`], placement, quotas, schema sets and publishing.
//! - [`manifest`]: the manifest's JSON shape.
//! - `disk`: atomic replace and reading of the files.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use eventdbx_core::names::normalize_tenant_id;
use eventdbx_core::schema::SchemaMap;
use eventdbx_core::time::format_unix_nanos;
use eventdbx_core::CoreError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use siphasher::sip::SipHasher13;

mod disk;
pub mod manifest;

pub use manifest::{AuditAction, AuditEntry, Manifest, SchemaVersion};

/// Bytes in one quota megabyte.
const BYTES_PER_MB: u64 = 1_048_576;

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

/// Tenant metadata shared by every connection of a server (`Send + Sync`, held in an `Arc`).
#[derive(Debug)]
pub struct Tenants {
    data_dir: PathBuf,
    shard_count: u32,
    shards: MetaFile<String>,
    quotas: MetaFile<u64>,
    states: RwLock<BTreeMap<String, Arc<TenantState>>>,
    empty: Arc<SchemaMap>,
}

impl Tenants {
    /// Loads the placement and quota files of `meta_dir` and the schema files of every tenant
    /// under `<data_dir>/tenants/`. Missing files mean "nothing stored"; a file that cannot be
    /// read or decoded is a `config` error naming it.
    pub fn open(data_dir: &Path, meta_dir: &Path, shard_count: u32) -> Result<Self, CoreError> {
        let shards = MetaFile::open(meta_dir.join("shards.json"))?;
        let quotas = MetaFile::open(meta_dir.join("quotas.json"))?;
        let mut states = BTreeMap::new();
        let root = data_dir.join("tenants");
        match std::fs::read_dir(&root) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|err| disk::io_error("list", &root, &err))?;
                    let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                        continue;
                    };
                    if check_tenant(&name).is_err() || !entry.path().is_dir() {
                        continue;
                    }
                    if let Some(files) = TenantFiles::load(&entry.path())? {
                        states.insert(name, Arc::new(TenantState::new(files)));
                    }
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(disk::io_error("list", &root, &err)),
        }
        Ok(Tenants {
            data_dir: data_dir.to_owned(),
            shard_count,
            shards,
            quotas,
            states: RwLock::new(states),
            empty: Arc::new(SchemaMap::default()),
        })
    }

    /// The default shard of a tenant: `shard-%04d` of SipHash-1-3 with keys (0, 0) over the
    /// lower-cased id followed by one `0xFF` byte, modulo `shard_count` (a count of 0 counts as
    /// 1).
    pub fn default_shard(tenant: &str, shard_count: u32) -> String {
        let mut hasher = SipHasher13::new_with_keys(0, 0);
        hasher.write(tenant.to_lowercase().as_bytes());
        hasher.write_u8(0xFF);
        let index = hasher.finish() % u64::from(shard_count.max(1));
        format!("shard-{index:04}")
    }

    /// The tenant's assigned shard, or its default one.
    pub fn shard_of(&self, tenant: &str) -> String {
        self.shards
            .get(tenant)
            .unwrap_or_else(|| Self::default_shard(tenant, self.shard_count))
    }

    /// The tenant's explicitly assigned shard, if any.
    pub fn assigned_shard(&self, tenant: &str) -> Option<String> {
        self.shards.get(tenant)
    }

    /// `tenantAssign`: stores the tenant's shard and returns whether the stored shard changed and
    /// the shard as stored.
    ///
    /// `shard_raw` is `shard-NNNN` or a bare index, below the configured shard count, normalised
    /// to `shard-%04d`. A tenant that `holds_data` cannot move to a shard other than its current
    /// one: placement is a label and no data is ever left behind.
    pub fn assign(
        &self,
        tenant: &str,
        shard_raw: &str,
        holds_data: bool,
    ) -> Result<(bool, String), CoreError> {
        check_tenant(tenant)?;
        let shard = self.parse_shard(shard_raw)?;
        self.shards.update(|map| {
            let current = map
                .get(tenant)
                .cloned()
                .unwrap_or_else(|| Self::default_shard(tenant, self.shard_count));
            if holds_data && current != shard {
                return Err(CoreError::Config(format!(
                    "tenant '{tenant}' already holds data in shard '{current}'"
                )));
            }
            let previous = map.insert(tenant.to_owned(), shard.clone());
            Ok((previous.as_ref() != Some(&shard), shard))
        })
    }

    /// `tenantUnassign`: clears the tenant's shard; `false` when none was assigned.
    pub fn unassign(&self, tenant: &str) -> Result<bool, CoreError> {
        check_tenant(tenant)?;
        self.shards.update(|map| Ok(map.remove(tenant).is_some()))
    }

    /// The tenant's storage quota in MB, if it has one.
    pub fn quota_mb(&self, tenant: &str) -> Option<u64> {
        self.quotas.get(tenant)
    }

    /// The tenant's storage quota in bytes (MB × 1,048,576, saturating), if it has one.
    pub fn quota_bytes(&self, tenant: &str) -> Option<u64> {
        self.quota_mb(tenant)
            .map(|mb| mb.saturating_mul(BYTES_PER_MB))
    }

    /// `tenantQuotaSet`: stores the quota (0 blocks every write); `true` when it differed.
    pub fn set_quota(&self, tenant: &str, max_mb: u64) -> Result<bool, CoreError> {
        check_tenant(tenant)?;
        self.quotas
            .update(|map| Ok(map.insert(tenant.to_owned(), max_mb) != Some(max_mb)))
    }

    /// `tenantQuotaClear`: removes the quota; `true` when one existed.
    pub fn clear_quota(&self, tenant: &str) -> Result<bool, CoreError> {
        check_tenant(tenant)?;
        self.quotas.update(|map| Ok(map.remove(tenant).is_some()))
    }

    /// The tenant's current schema set (empty when it has none).
    pub fn schemas(&self, tenant: &str) -> Arc<SchemaMap> {
        match self.state(tenant) {
            Some(state) => Arc::clone(&read(&state.files).schemas),
            None => Arc::clone(&self.empty),
        }
    }

    /// `replaceSchemas`: replaces the tenant's whole schema set and returns how many aggregate
    /// schemas it holds.
    ///
    /// The new set is decoded and validated before anything changes: text that is not a schema
    /// map is a `serialization` error, a map that breaks a rule an `invalid_schema` error
    /// ([`SchemaMap::from_json`]). The set is stored as given (normalised), `created_at` and
    /// `updated_at` included.
    pub fn replace_schemas(&self, tenant: &str, schemas_json: &str) -> Result<u32, CoreError> {
        check_tenant(tenant)?;
        let schemas = SchemaMap::from_json(schemas_json)?;
        let count = u32::try_from(schemas.len()).unwrap_or(u32::MAX);
        let state = self.state_or_insert(tenant);
        let _writer = lock(&state.writer);
        disk::write_atomic(&self.schemas_path(tenant), pretty(&schemas)?.as_bytes())?;
        let mut files = write(&state.files);
        files.schemas = Arc::new(schemas);
        files.stored = true;
        Ok(count)
    }

    /// `tenantSchemaPublish`: versions the tenant's current schema set (§11 steps 1–6).
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
    pub fn publish(
        &self,
        tenant: &str,
        request: PublishRequest,
    ) -> Result<PublishOutcome, CoreError> {
        check_tenant(tenant)?;
        let state = self.state_or_insert(tenant);
        let outcome = {
            let _writer = lock(&state.writer);
            self.publish_locked(tenant, &state, &request)?
        };
        if request.reload {
            if let Err(err) = self.reload(tenant) {
                tracing::warn!(tenant, error = %err, "reload after schema publish failed");
            }
        }
        Ok(outcome)
    }

    fn publish_locked(
        &self,
        tenant: &str,
        state: &TenantState,
        request: &PublishRequest,
    ) -> Result<PublishOutcome, CoreError> {
        let (schemas, mut manifest) = {
            let files = read(&state.files);
            (Arc::clone(&files.schemas), Manifest::clone(&files.manifest))
        };
        let content = pretty(&*schemas)?;
        let checksum = sha256_checksum(content.as_bytes());
        let now = now_nanos();
        let timestamp = format_unix_nanos(now);
        let tenant_dir = self.tenant_dir(tenant);

        let latest = manifest
            .latest()
            .map(|latest| (latest.id.clone(), latest.checksum.clone()));
        if let Some((latest_id, latest_checksum)) = latest {
            if !request.force && latest_checksum == checksum {
                let activated =
                    request.activate && manifest.active_version.as_deref() != Some(&latest_id);
                if activated {
                    activate(&mut manifest, &latest_id, &timestamp, request);
                    disk::write_atomic(&self.schemas_path(tenant), content.as_bytes())?;
                    self.store_manifest(tenant, state, manifest)?;
                }
                return Ok(PublishOutcome {
                    version_id: latest_id,
                    activated,
                    skipped: true,
                });
            }
        }

        let version_id = new_version_id(&manifest, &tenant_dir, now)?;
        let file = format!("schemas/versions/{version_id}.json");
        disk::write_atomic(&tenant_dir.join(&file), content.as_bytes())?;
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
            disk::write_atomic(&self.schemas_path(tenant), content.as_bytes())?;
        }
        self.store_manifest(tenant, state, manifest)?;
        Ok(PublishOutcome {
            version_id,
            activated: request.activate,
            skipped: false,
        })
    }

    /// Writes the manifest and, once it is on disk, installs it in memory.
    fn store_manifest(
        &self,
        tenant: &str,
        state: &TenantState,
        manifest: Manifest,
    ) -> Result<(), CoreError> {
        disk::write_atomic(&self.manifest_path(tenant), pretty(&manifest)?.as_bytes())?;
        let mut files = write(&state.files);
        files.manifest = Arc::new(manifest);
        files.stored = true;
        Ok(())
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
        let _writer = lock(&state.writer);
        let (current, mut manifest) = {
            let files = read(&state.files);
            (Arc::clone(&files.schemas), Manifest::clone(&files.manifest))
        };
        let Some(position) = manifest.versions.iter().position(|v| v.id == version_id) else {
            return Err(CoreError::Config(format!(
                "schema version '{version_id}' is not published for tenant '{tenant}'"
            )));
        };
        let version = manifest.versions[position].clone();
        let path = self.tenant_dir(tenant).join(&version.file);
        let content = disk::read_optional(&path)?.ok_or_else(|| {
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
        let schemas = SchemaMap::from_json(&content).map_err(|err| disk::corrupt(&path, &err))?;
        let already_active = manifest.active_version.as_deref() == Some(version_id);
        if already_active && pretty(&*current)? == content {
            return Ok(ActivateOutcome {
                version_id: version_id.to_owned(),
                activated: false,
                action: AuditAction::Activate,
            });
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
        disk::write_atomic(&self.schemas_path(tenant), content.as_bytes())?;
        disk::write_atomic(&self.manifest_path(tenant), pretty(&manifest)?.as_bytes())?;
        let mut files = write(&state.files);
        files.schemas = Arc::new(schemas);
        files.manifest = Arc::new(manifest);
        files.stored = true;
        Ok(ActivateOutcome {
            version_id: version_id.to_owned(),
            activated: true,
            action,
        })
    }

    /// The tenant's schema-version manifest (an empty one when nothing was published).
    pub fn manifest(&self, tenant: &str) -> Manifest {
        match self.state(tenant) {
            Some(state) => Manifest::clone(&read(&state.files).manifest),
            None => Manifest::default(),
        }
    }

    /// `tenantReload`: re-reads the tenant's schemas, manifest, quota and placement from disk
    /// into memory; `true` on success. On error nothing in memory changes.
    pub fn reload(&self, tenant: &str) -> Result<bool, CoreError> {
        check_tenant(tenant)?;
        let state = self.state_or_insert(tenant);
        {
            let _writer = lock(&state.writer);
            let files = TenantFiles::load(&self.tenant_dir(tenant))?.unwrap_or_default();
            *write(&state.files) = files;
        }
        self.shards.reload_entry(tenant)?;
        self.quotas.reload_entry(tenant)?;
        Ok(true)
    }

    /// Tenants with any stored metadata: a shard, a quota, a schema set or a manifest.
    pub fn known_tenants(&self) -> Vec<String> {
        let mut known: BTreeSet<String> = self.shards.keys();
        known.extend(self.quotas.keys());
        let states = read(&self.states);
        known.extend(
            states
                .iter()
                .filter(|(_, state)| read(&state.files).stored)
                .map(|(tenant, _)| tenant.clone()),
        );
        known.into_iter().collect()
    }

    /// Parses a `shardId`: `shard-NNNN` or a bare index, below the shard count.
    fn parse_shard(&self, raw: &str) -> Result<String, CoreError> {
        let trimmed = raw.trim();
        let digits = trimmed
            .get(..6)
            .filter(|prefix| prefix.eq_ignore_ascii_case("shard-"))
            .map_or(trimmed, |_| &trimmed[6..]);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CoreError::Config(format!("invalid shard id '{raw}'")));
        }
        match digits.parse::<u64>() {
            Ok(index) if index < u64::from(self.shard_count) => Ok(format!("shard-{index:04}")),
            _ => Err(CoreError::Config(format!(
                "shard '{raw}' exceeds configured shard-count ({})",
                self.shard_count
            ))),
        }
    }

    fn state(&self, tenant: &str) -> Option<Arc<TenantState>> {
        read(&self.states).get(tenant).cloned()
    }

    fn state_or_insert(&self, tenant: &str) -> Arc<TenantState> {
        if let Some(state) = self.state(tenant) {
            return state;
        }
        let mut states = write(&self.states);
        Arc::clone(
            states
                .entry(tenant.to_owned())
                .or_insert_with(|| Arc::new(TenantState::new(TenantFiles::default()))),
        )
    }

    fn tenant_dir(&self, tenant: &str) -> PathBuf {
        self.data_dir.join("tenants").join(tenant)
    }

    fn schemas_path(&self, tenant: &str) -> PathBuf {
        self.tenant_dir(tenant).join("schemas.json")
    }

    fn manifest_path(&self, tenant: &str) -> PathBuf {
        self.tenant_dir(tenant)
            .join("schemas")
            .join("manifest.json")
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

/// A version id for a publish at `nanos` that no published version and no version file uses.
fn new_version_id(manifest: &Manifest, tenant_dir: &Path, nanos: u64) -> Result<String, CoreError> {
    let base = version_stamp(nanos);
    let taken = |id: &str| {
        manifest.contains(id)
            || disk::exists(&tenant_dir.join(format!("schemas/versions/{id}.json")))
    };
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

/// Pretty-printed JSON: the stored form of every file and the canonical form of a version.
fn pretty(value: &impl Serialize) -> Result<String, CoreError> {
    serde_json::to_string_pretty(value).map_err(|err| CoreError::Serialization(err.to_string()))
}

/// Rejects a tenant id that is not in normalised form (`[a-z0-9][a-z0-9_-]*`): ids become
/// directory names, so nothing else may reach the file system.
fn check_tenant(tenant: &str) -> Result<(), CoreError> {
    let normalized = normalize_tenant_id(tenant)?;
    if normalized == tenant {
        Ok(())
    } else {
        Err(CoreError::Config(format!(
            "tenant id '{tenant}' is not normalised (expected '{normalized}')"
        )))
    }
}

/// One tenant's cached files and the lock that serialises writing them.
#[derive(Debug)]
struct TenantState {
    writer: Mutex<()>,
    files: RwLock<TenantFiles>,
}

impl TenantState {
    fn new(files: TenantFiles) -> Self {
        TenantState {
            writer: Mutex::new(()),
            files: RwLock::new(files),
        }
    }
}

/// The content of one tenant's schema files.
#[derive(Debug, Default)]
struct TenantFiles {
    schemas: Arc<SchemaMap>,
    manifest: Arc<Manifest>,
    /// `schemas.json` or the manifest exists.
    stored: bool,
}

impl TenantFiles {
    /// Reads a tenant directory; `None` when it holds neither a schema set nor a manifest.
    fn load(dir: &Path) -> Result<Option<Self>, CoreError> {
        let schemas_path = dir.join("schemas.json");
        let manifest_path = dir.join("schemas").join("manifest.json");
        let schemas_text = disk::read_optional(&schemas_path)?;
        let manifest_text = disk::read_optional(&manifest_path)?;
        if schemas_text.is_none() && manifest_text.is_none() {
            return Ok(None);
        }
        let schemas = match schemas_text.as_deref().map(str::trim) {
            None | Some("") => SchemaMap::default(),
            Some(text) => {
                SchemaMap::from_json(text).map_err(|err| disk::corrupt(&schemas_path, &err))?
            }
        };
        let manifest = match manifest_text.as_deref().map(str::trim) {
            None | Some("") => Manifest::default(),
            Some(text) => {
                serde_json::from_str(text).map_err(|err| disk::corrupt(&manifest_path, &err))?
            }
        };
        Ok(Some(TenantFiles {
            schemas: Arc::new(schemas),
            manifest: Arc::new(manifest),
            stored: true,
        }))
    }
}

/// A JSON object file of per-tenant values in `meta_dir`, cached in memory.
#[derive(Debug)]
struct MetaFile<V> {
    path: PathBuf,
    writer: Mutex<()>,
    cache: RwLock<BTreeMap<String, V>>,
}

impl<V: Clone + PartialEq + Serialize + DeserializeOwned> MetaFile<V> {
    fn open(path: PathBuf) -> Result<Self, CoreError> {
        let cache = Self::read_file(&path)?;
        Ok(MetaFile {
            path,
            writer: Mutex::new(()),
            cache: RwLock::new(cache),
        })
    }

    fn read_file(path: &Path) -> Result<BTreeMap<String, V>, CoreError> {
        match disk::read_optional(path)?.as_deref().map(str::trim) {
            None | Some("") => Ok(BTreeMap::new()),
            Some(text) => serde_json::from_str(text).map_err(|err| disk::corrupt(path, &err)),
        }
    }

    fn get(&self, tenant: &str) -> Option<V> {
        read(&self.cache).get(tenant).cloned()
    }

    fn keys(&self) -> BTreeSet<String> {
        read(&self.cache).keys().cloned().collect()
    }

    /// Applies `change` to a copy of the map; when the copy differs it is written to disk and
    /// then installed. An error from `change` or from the write leaves everything as it was.
    fn update<R>(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, V>) -> Result<R, CoreError>,
    ) -> Result<R, CoreError> {
        let _writer = lock(&self.writer);
        let mut next = read(&self.cache).clone();
        let result = change(&mut next)?;
        if *read(&self.cache) != next {
            disk::write_atomic(&self.path, pretty(&next)?.as_bytes())?;
            *write(&self.cache) = next;
        }
        Ok(result)
    }

    /// Replaces the cached value of one tenant with the one on disk.
    fn reload_entry(&self, tenant: &str) -> Result<(), CoreError> {
        let _writer = lock(&self.writer);
        let on_disk = Self::read_file(&self.path)?.remove(tenant);
        let mut cache = write(&self.cache);
        match on_disk {
            Some(value) => cache.insert(tenant.to_owned(), value),
            None => cache.remove(tenant),
        };
        Ok(())
    }
}

// Every cached value is replaced whole after its file is written, so a panic while a lock was
// held cannot leave a half-updated value behind: poisoning carries no information here.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock(mutex: &Mutex<()>) -> MutexGuard<'_, ()> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
        let dir = std::env::temp_dir().join("tenants-unit-no-such-dir");
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
            new_version_id(&manifest, &dir, nanos).expect("id"),
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

    #[test]
    fn tenant_ids_must_be_normalised() {
        for ok in ["default", "acme", "tenant-a", "t_1", "9lives"] {
            check_tenant(ok).expect(ok);
        }
        for bad in [
            "", "..", "../x", "a/b", "Acme", " acme", "-a", "a.b", "a\\b",
        ] {
            let err = check_tenant(bad).expect_err(bad);
            assert_eq!(err.code(), "config", "{bad}");
        }
    }
}
