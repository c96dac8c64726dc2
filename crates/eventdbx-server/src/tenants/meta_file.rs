//! A JSON object of per-tenant values in `meta_dir` (the shard map, the quotas), cached in
//! memory and replaced atomically on every change; on a shared database a control document
//! named after the file, changed by compare-and-swap.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use eventdbx_core::CoreError;
use eventdbx_store::documents::{Expected, MAX_DOCUMENT_RACES};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::place::{Item, Place, Read};
use super::{disk, lock, pretty, read, write};

/// A JSON object of per-tenant values in `meta_dir`, cached in memory.
#[derive(Debug)]
pub(super) struct MetaFile<V> {
    place: Arc<Place>,
    file: &'static str,
    writer: Mutex<()>,
    cache: RwLock<BTreeMap<String, V>>,
}

impl<V: Clone + PartialEq + Serialize + DeserializeOwned> MetaFile<V> {
    pub(super) fn open(place: Arc<Place>, file: &'static str) -> Result<Self, CoreError> {
        let meta = MetaFile {
            place,
            file,
            writer: Mutex::new(()),
            cache: RwLock::new(BTreeMap::new()),
        };
        *write(&meta.cache) = meta.read_stored()?.0;
        Ok(meta)
    }

    /// The stored map, and the read it came from.
    fn read_stored(&self) -> Result<(BTreeMap<String, V>, Read), CoreError> {
        let item = Item::Meta(self.file);
        let stored = self.place.read(item)?;
        let map = match stored.text.as_deref().map(str::trim) {
            None | Some("") => BTreeMap::new(),
            Some(text) => serde_json::from_str(text)
                .map_err(|err| disk::corrupt(&self.place.describe(item), &err))?,
        };
        Ok((map, stored))
    }

    pub(super) fn get(&self, tenant: &str) -> Option<V> {
        read(&self.cache).get(tenant).cloned()
    }

    pub(super) fn keys(&self) -> BTreeSet<String> {
        read(&self.cache).keys().cloned().collect()
    }

    /// Applies `change` to a copy of the map; when the copy differs it is written and then
    /// installed. An error from `change` or from the write leaves everything as it was.
    ///
    /// On a shared database the copy is of the stored map, not the cache, and a write that
    /// another server's overtook is applied again to that server's map.
    pub(super) fn update<R>(
        &self,
        mut change: impl FnMut(&mut BTreeMap<String, V>) -> Result<R, CoreError>,
    ) -> Result<R, CoreError> {
        let _writer = lock(&self.writer);
        if !self.place.is_shared() {
            let mut next = read(&self.cache).clone();
            let result = change(&mut next)?;
            if *read(&self.cache) != next {
                let item = Item::Meta(self.file);
                self.place
                    .write(item, pretty(&next)?.as_bytes(), Expected::Any)?;
                *write(&self.cache) = next;
            }
            return Ok(result);
        }
        for _ in 0..MAX_DOCUMENT_RACES {
            let (stored, read) = self.read_stored()?;
            let mut next = stored.clone();
            let result = change(&mut next)?;
            if next != stored {
                let item = Item::Meta(self.file);
                if !self
                    .place
                    .write(item, pretty(&next)?.as_bytes(), read.expected)?
                {
                    continue;
                }
            }
            *write(&self.cache) = next;
            return Ok(result);
        }
        Err(CoreError::Io(format!(
            "{} changed under {MAX_DOCUMENT_RACES} attempts in a row to update it (retry later)",
            self.place.describe(Item::Meta(self.file))
        )))
    }

    /// Replaces the cached value of one tenant with the stored one.
    pub(super) fn reload_entry(&self, tenant: &str) -> Result<(), CoreError> {
        let _writer = lock(&self.writer);
        let stored = self.read_stored()?.0.remove(tenant);
        let mut cache = write(&self.cache);
        match stored {
            Some(value) => cache.insert(tenant.to_owned(), value),
            None => cache.remove(tenant),
        };
        Ok(())
    }

    /// Replaces the whole cache with the stored map (another server changed it).
    pub(super) fn reload_all(&self) -> Result<(), CoreError> {
        let _writer = lock(&self.writer);
        let stored = self.read_stored()?.0;
        *write(&self.cache) = stored;
        Ok(())
    }
}

// Every cached value is replaced whole after its file is written, so a panic while a lock was
// held cannot leave a half-updated value behind: poisoning carries no information here.
