//! A JSON object file of per-tenant values in `meta_dir` (the shard map, the quotas), cached in
//! memory and replaced atomically on every change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use eventdbx_core::CoreError;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{disk, lock, pretty, read, write};

/// A JSON object file of per-tenant values in `meta_dir`, cached in memory.
#[derive(Debug)]
pub(super) struct MetaFile<V> {
    path: PathBuf,
    writer: Mutex<()>,
    cache: RwLock<BTreeMap<String, V>>,
}

impl<V: Clone + PartialEq + Serialize + DeserializeOwned> MetaFile<V> {
    pub(super) fn open(path: PathBuf) -> Result<Self, CoreError> {
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

    pub(super) fn get(&self, tenant: &str) -> Option<V> {
        read(&self.cache).get(tenant).cloned()
    }

    pub(super) fn keys(&self) -> BTreeSet<String> {
        read(&self.cache).keys().cloned().collect()
    }

    /// Applies `change` to a copy of the map; when the copy differs it is written to disk and
    /// then installed. An error from `change` or from the write leaves everything as it was.
    pub(super) fn update<R>(
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
    pub(super) fn reload_entry(&self, tenant: &str) -> Result<(), CoreError> {
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
