//! Where tenant metadata lives: files under the data and meta directories (one server), or the
//! control documents of a shared database (`docs/storage.md`, "Several servers"), named after
//! the files: `tenants/<tenant>/schemas.json`, `tenants/<tenant>/schemas/manifest.json`,
//! `tenants/<tenant>/schemas/versions/<id>.json`, `tenant_meta/shards.json`,
//! `tenant_meta/quotas.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use eventdbx_core::CoreError;
use eventdbx_store::documents::{ControlDocuments, Expected};
use eventdbx_store::StoreError;

use super::disk;

/// The tenant's schema set, relative to its directory.
pub(super) const SCHEMAS: &str = "schemas.json";
/// The tenant's manifest, relative to its directory.
pub(super) const MANIFEST: &str = "schemas/manifest.json";

/// Documents of `meta_dir` are named under this prefix.
const META_PREFIX: &str = "tenant_meta/";
/// Documents of a tenant directory are named under this prefix.
const TENANT_PREFIX: &str = "tenants/";

/// The home of tenant metadata.
#[derive(Debug)]
pub(super) enum Place {
    /// One server's files.
    Files {
        /// `<data_dir>`; tenant directories are under `tenants/`.
        data_dir: PathBuf,
        /// The shard map and the quotas.
        meta_dir: PathBuf,
    },
    /// Control documents every server of the database shares.
    Shared(Arc<dyn ControlDocuments>),
}

/// One stored item.
#[derive(Debug, Clone, Copy)]
pub(super) enum Item<'a> {
    /// A file of `meta_dir`.
    Meta(&'a str),
    /// A file of a tenant's directory: (tenant, path relative to the directory).
    Tenant(&'a str, &'a str),
}

/// An item's text as read, and what a write prepared from it expects.
#[derive(Debug)]
pub(super) struct Read {
    /// The text; `None` when the item does not exist.
    pub(super) text: Option<String>,
    /// The revision the item had (ignored by files, which have none).
    pub(super) expected: Expected,
}

impl Place {
    /// Whether servers share this place (and so a write may lose a race).
    pub(super) fn is_shared(&self) -> bool {
        matches!(self, Place::Shared(_))
    }

    /// The item's file, or its document's name: what error messages name.
    pub(super) fn describe(&self, item: Item<'_>) -> String {
        match self {
            Place::Files { data_dir, meta_dir } => {
                path(data_dir, meta_dir, item).display().to_string()
            }
            Place::Shared(_) => document_name(item),
        }
    }

    /// Reads an item; a missing one has no text.
    pub(super) fn read(&self, item: Item<'_>) -> Result<Read, CoreError> {
        match self {
            Place::Files { data_dir, meta_dir } => Ok(Read {
                text: disk::read_optional(&path(data_dir, meta_dir, item))?,
                expected: Expected::Any,
            }),
            Place::Shared(documents) => {
                let name = document_name(item);
                let read = documents
                    .read(&name)
                    .map_err(|err| shared_error(&name, &err))?;
                let expected = Expected::after(read.as_ref());
                let text = read
                    .map(|doc| {
                        String::from_utf8(doc.body)
                            .map_err(|err| disk::corrupt(&name, &err.utf8_error()))
                    })
                    .transpose()?;
                Ok(Read { text, expected })
            }
        }
    }

    /// Replaces an item when `expected` holds (files always replace, atomically): `false` when
    /// another server wrote the document first and nothing was written.
    pub(super) fn write(
        &self,
        item: Item<'_>,
        bytes: &[u8],
        expected: Expected,
    ) -> Result<bool, CoreError> {
        match self {
            Place::Files { data_dir, meta_dir } => {
                disk::write_atomic(&path(data_dir, meta_dir, item), bytes)?;
                Ok(true)
            }
            Place::Shared(documents) => {
                let name = document_name(item);
                let written = documents
                    .write(&name, bytes, expected)
                    .map_err(|err| shared_error(&name, &err))?;
                Ok(written.is_some())
            }
        }
    }

    /// Whether an item exists (an unreadable one counts as absent).
    pub(super) fn exists(&self, item: Item<'_>) -> bool {
        match self {
            Place::Files { data_dir, meta_dir } => disk::exists(&path(data_dir, meta_dir, item)),
            Place::Shared(documents) => documents
                .read(&document_name(item))
                .is_ok_and(|doc| doc.is_some()),
        }
    }

    /// Names of the tenant directories (files) or of the tenants with documents (shared); the
    /// caller checks each name.
    pub(super) fn tenant_names(&self) -> Result<Vec<String>, CoreError> {
        match self {
            Place::Files { data_dir, .. } => {
                let root = data_dir.join("tenants");
                let mut names = Vec::new();
                match std::fs::read_dir(&root) {
                    Ok(entries) => {
                        for entry in entries {
                            let entry = entry.map_err(|err| disk::io_error("list", &root, &err))?;
                            if let Some(name) = entry.file_name().to_str() {
                                if entry.path().is_dir() {
                                    names.push(name.to_owned());
                                }
                            }
                        }
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(disk::io_error("list", &root, &err)),
                }
                Ok(names)
            }
            Place::Shared(documents) => {
                let revisions = documents
                    .revisions()
                    .map_err(|err| shared_error("the control documents", &err))?;
                let mut names: Vec<String> = revisions
                    .keys()
                    .filter_map(|name| tenant_of_document(name))
                    .map(str::to_owned)
                    .collect();
                names.dedup();
                Ok(names)
            }
        }
    }
}

/// What a changed document means for the tenants: `Some(None)` for the shard map or the quotas,
/// `Some(Some(tenant))` for a tenant's schema set or manifest, `None` for anything else
/// (versions never change once written).
pub(super) fn changed_document(name: &str) -> Option<Option<&str>> {
    if name.starts_with(META_PREFIX) {
        return Some(None);
    }
    let tenant = tenant_of_document(name)?;
    let rest = &name[TENANT_PREFIX.len() + tenant.len() + 1..];
    (rest == SCHEMAS || rest == MANIFEST).then_some(Some(tenant))
}

/// The tenant a document under `tenants/` belongs to.
fn tenant_of_document(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(TENANT_PREFIX)?;
    let (tenant, _) = rest.split_once('/')?;
    Some(tenant)
}

fn path(data_dir: &Path, meta_dir: &Path, item: Item<'_>) -> PathBuf {
    match item {
        Item::Meta(file) => meta_dir.join(file),
        Item::Tenant(tenant, file) => data_dir.join("tenants").join(tenant).join(file),
    }
}

fn document_name(item: Item<'_>) -> String {
    match item {
        Item::Meta(file) => format!("{META_PREFIX}{file}"),
        Item::Tenant(tenant, file) => format!("{TENANT_PREFIX}{tenant}/{file}"),
    }
}

/// A failure of the shared documents: code `io`, naming the document.
fn shared_error(name: &str, err: &StoreError) -> CoreError {
    CoreError::Io(format!("cannot reach {name}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_documents_name_what_to_reload() {
        assert_eq!(changed_document("tenant_meta/quotas.json"), Some(None));
        assert_eq!(
            changed_document("tenants/acme/schemas.json"),
            Some(Some("acme"))
        );
        assert_eq!(
            changed_document("tenants/acme/schemas/manifest.json"),
            Some(Some("acme"))
        );
        assert_eq!(
            changed_document("tenants/acme/schemas/versions/v1.json"),
            None
        );
        assert_eq!(changed_document("auth/state"), None);
        assert_eq!(changed_document("plugins.json"), None);
    }
}
