//! Tenants (`docs/server.md`, "Tenants" and "Quotas"): shard placement, storage quotas, the schema
//! set of each tenant and its published versions.
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
//! - this module: [`Tenants`], placement, quotas and schema sets.
//! - `publish`: publishing a schema set as a version and activating versions.
//! - [`manifest`]: the manifest's JSON shape.
//! - `meta_file`: the per-tenant JSON objects of `meta_dir` (shard map, quotas).
//! - `place`: files, or the control documents of a shared database (`docs/storage.md`,
//!   "Several servers"), named after the files.
//! - `disk`: atomic replace (through [`crate::fs`]) and reading of the files.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hasher;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};

use eventdbx_core::names::normalize_tenant_id;
use eventdbx_core::schema::SchemaMap;
use eventdbx_core::CoreError;
use eventdbx_store::documents::{ControlDocuments, Expected};
use serde::Serialize;
use siphasher::sip::SipHasher13;

mod disk;
pub mod manifest;
mod meta_file;
mod place;
mod publish;

pub use manifest::{AuditAction, AuditEntry, Manifest, SchemaVersion};
use meta_file::MetaFile;
use place::{Item, Place, MANIFEST, SCHEMAS};
pub use publish::{ActivateOutcome, ActivateRequest, PublishOutcome, PublishRequest};

/// Bytes in one quota megabyte (quotas are set in MB, usage is counted in bytes).
pub const BYTES_PER_MB: u64 = 1_048_576;

/// Tenant metadata shared by every connection of a server (`Send + Sync`, held in an `Arc`).
#[derive(Debug)]
pub struct Tenants {
    place: Arc<Place>,
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
        let place = Place::Files {
            data_dir: data_dir.to_owned(),
            meta_dir: meta_dir.to_owned(),
        };
        Self::open_in(Arc::new(place), shard_count)
    }

    /// [`Tenants::open`] for a server sharing its database with others: the metadata lives in
    /// `documents` (`docs/storage.md`, "Several servers"), and a change made through any server
    /// reaches this one when [`Tenants::document_changed`] is told.
    pub fn open_shared(
        documents: Arc<dyn ControlDocuments>,
        shard_count: u32,
    ) -> Result<Self, CoreError> {
        Self::open_in(Arc::new(Place::Shared(documents)), shard_count)
    }

    fn open_in(place: Arc<Place>, shard_count: u32) -> Result<Self, CoreError> {
        let shards = MetaFile::open(Arc::clone(&place), "shards.json")?;
        let quotas = MetaFile::open(Arc::clone(&place), "quotas.json")?;
        let mut states = BTreeMap::new();
        for name in place.tenant_names()? {
            if check_tenant(&name).is_err() {
                continue;
            }
            if let Some(files) = TenantFiles::load(&place, &name)? {
                states.insert(name, Arc::new(TenantState::new(files)));
            }
        }
        Ok(Tenants {
            place,
            shard_count,
            shards,
            quotas,
            states: RwLock::new(states),
            empty: Arc::new(SchemaMap::default()),
        })
    }

    /// Reloads what the control document `name` holds, after another server changed it; other
    /// documents are not the tenants' and are ignored.
    pub fn document_changed(&self, name: &str) -> Result<(), CoreError> {
        match place::changed_document(name) {
            Some(None) => {
                self.shards.reload_all()?;
                self.quotas.reload_all()
            }
            Some(Some(tenant)) if check_tenant(tenant).is_ok() => {
                let state = self.state_or_insert(tenant);
                let _writer = lock(&state.writer);
                self.refresh_locked(tenant, &state)
            }
            _ => Ok(()),
        }
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
            Ok((previous.as_ref() != Some(&shard), shard.clone()))
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
        // A replacement of the whole set, whatever it replaces: it never loses a race.
        self.place.write(
            Item::Tenant(tenant, SCHEMAS),
            pretty(&schemas)?.as_bytes(),
            Expected::Any,
        )?;
        let mut files = write(&state.files);
        files.schemas = Arc::new(schemas);
        files.stored = true;
        Ok(count)
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
            self.refresh_locked(tenant, &state)?;
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

    /// Replaces the tenant's cached files with the stored ones; the caller holds its writer
    /// lock. On error nothing in memory changes.
    fn refresh_locked(&self, tenant: &str, state: &TenantState) -> Result<(), CoreError> {
        let files = TenantFiles::load(&self.place, tenant)?.unwrap_or_default();
        *write(&state.files) = files;
        Ok(())
    }
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
    /// The revision of the shared manifest this was read at (`None`: absent, or files).
    manifest_revision: Option<u64>,
}

impl TenantFiles {
    /// Reads a tenant's files; `None` when it has neither a schema set nor a manifest.
    fn load(place: &Place, tenant: &str) -> Result<Option<Self>, CoreError> {
        let schemas_item = Item::Tenant(tenant, SCHEMAS);
        let manifest_item = Item::Tenant(tenant, MANIFEST);
        let schemas_text = place.read(schemas_item)?.text;
        let manifest_read = place.read(manifest_item)?;
        if schemas_text.is_none() && manifest_read.text.is_none() {
            return Ok(None);
        }
        let schemas = match schemas_text.as_deref().map(str::trim) {
            None | Some("") => SchemaMap::default(),
            Some(text) => SchemaMap::from_json(text)
                .map_err(|err| disk::corrupt(&place.describe(schemas_item), &err))?,
        };
        let manifest = match manifest_read.text.as_deref().map(str::trim) {
            None | Some("") => Manifest::default(),
            Some(text) => serde_json::from_str(text)
                .map_err(|err| disk::corrupt(&place.describe(manifest_item), &err))?,
        };
        let manifest_revision = match manifest_read.expected {
            Expected::Revision(revision) => Some(revision),
            Expected::Absent | Expected::Any => None,
        };
        Ok(Some(TenantFiles {
            schemas: Arc::new(schemas),
            manifest: Arc::new(manifest),
            stored: true,
            manifest_revision,
        }))
    }

    /// What a write of the manifest prepared from this expects.
    fn manifest_expected(&self) -> Expected {
        self.manifest_revision
            .map_or(Expected::Absent, Expected::Revision)
    }
}

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
