//! Control documents: the small named documents several servers on one database share (token
//! signing key and ledger, tenant placement, quotas and schemas, plugin definitions), each with a
//! revision that every write raises (`docs/storage.md`, "Several servers").
//!
//! A write names the revision it was prepared from and is refused when another write came
//! first, so a read-modify-write never loses a concurrent one: [`update_document`] reads again
//! and retries. Servers notice each other's writes by polling [`ControlDocuments::revisions`];
//! nothing relies on notifications or locks held across requests, which PostgreSQL-compatible
//! distributed databases may not offer.
//!
//! ```
//! use eventdbx_store::documents::{update_document, ControlDocuments, Expected, MemoryDocuments};
//!
//! let docs = MemoryDocuments::default();
//! assert_eq!(docs.write("plugins", b"[]", Expected::Absent).unwrap(), Some(1));
//! assert_eq!(docs.write("plugins", b"[1]", Expected::Revision(7)).unwrap(), None);
//! let n = update_document(&docs, "plugins", |body| {
//!     let n = body.map_or(0, <[u8]>::len);
//!     Ok((Some(b"[1, 2]".to_vec()), n))
//! })
//! .unwrap();
//! assert_eq!(n, 2);
//! assert_eq!(docs.read("plugins").unwrap().unwrap().revision, 2);
//! ```

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::{Result, StoreError};

/// How many lost races [`update_document`] retries before it gives up: each loss means another
/// writer succeeded, so this many in a row means a storm of writers on one document.
pub const MAX_DOCUMENT_RACES: usize = 64;

/// A document as read, with the revision it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlDocument {
    /// The stored bytes (JSON text for every document the server writes).
    pub body: Vec<u8>,
    /// Raised by one on every write; 1 after the first.
    pub revision: u64,
}

/// The condition a write is made under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// The document must not exist yet.
    Absent,
    /// The document must still have this revision.
    Revision(u64),
    /// Whatever is there is replaced (a write whose content does not depend on the old one).
    Any,
}

impl Expected {
    /// What a write prepared from `read` expects: its revision, or the document's absence.
    pub fn after(read: Option<&ControlDocument>) -> Self {
        read.map_or(Expected::Absent, |doc| Expected::Revision(doc.revision))
    }
}

/// A store of named control documents with compare-and-swap writes. `Send + Sync`; share it
/// behind an `Arc`.
pub trait ControlDocuments: Send + Sync + std::fmt::Debug {
    /// The document called `name`, if it exists.
    fn read(&self, name: &str) -> Result<Option<ControlDocument>>;

    /// Writes `body` as `name` when `expected` holds, returning the new revision; `None` when it
    /// did not hold (another write came first) and nothing was written.
    fn write(&self, name: &str, body: &[u8], expected: Expected) -> Result<Option<u64>>;

    /// The revision of every document, by name: what a server polls to see what changed.
    fn revisions(&self) -> Result<BTreeMap<String, u64>>;
}

/// Read-modify-write of one document: `change` gets the current body (`None` when absent) and
/// returns the body to store (`None`: leave the document as it is) and a result. When another
/// writer came first, the document is read again and `change` runs again on what it wrote.
pub fn update_document<R>(
    documents: &dyn ControlDocuments,
    name: &str,
    mut change: impl FnMut(Option<&[u8]>) -> Result<(Option<Vec<u8>>, R)>,
) -> Result<R> {
    for _ in 0..MAX_DOCUMENT_RACES {
        let current = documents.read(name)?;
        let (body, result) = change(current.as_ref().map(|doc| doc.body.as_slice()))?;
        let Some(body) = body else {
            return Ok(result);
        };
        if documents
            .write(name, &body, Expected::after(current.as_ref()))?
            .is_some()
        {
            return Ok(result);
        }
    }
    Err(lost_too_often(name))
}

/// The error of a write that lost [`MAX_DOCUMENT_RACES`] races in a row.
pub fn lost_too_often(name: &str) -> StoreError {
    StoreError::engine(format!(
        "the control document {name} changed under {MAX_DOCUMENT_RACES} attempts in a row to \
         update it (retry later)"
    ))
}

/// Control documents in memory: for tests, and for code that needs a [`ControlDocuments`] that
/// nothing else shares.
#[derive(Debug, Default)]
pub struct MemoryDocuments {
    documents: Mutex<BTreeMap<String, ControlDocument>>,
}

impl ControlDocuments for MemoryDocuments {
    fn read(&self, name: &str) -> Result<Option<ControlDocument>> {
        let documents = self.documents.lock().unwrap_or_else(|p| p.into_inner());
        Ok(documents.get(name).cloned())
    }

    fn write(&self, name: &str, body: &[u8], expected: Expected) -> Result<Option<u64>> {
        let mut documents = self.documents.lock().unwrap_or_else(|p| p.into_inner());
        let current = documents.get(name).map(|doc| doc.revision);
        let holds = match expected {
            Expected::Absent => current.is_none(),
            Expected::Revision(revision) => current == Some(revision),
            Expected::Any => true,
        };
        if !holds {
            return Ok(None);
        }
        let revision = current.unwrap_or(0) + 1;
        documents.insert(
            name.to_owned(),
            ControlDocument {
                body: body.to_vec(),
                revision,
            },
        );
        Ok(Some(revision))
    }

    fn revisions(&self) -> Result<BTreeMap<String, u64>> {
        let documents = self.documents.lock().unwrap_or_else(|p| p.into_inner());
        Ok(documents
            .iter()
            .map(|(name, doc)| (name.clone(), doc.revision))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_prepared_from_an_old_revision_is_refused() {
        let docs = MemoryDocuments::default();
        assert_eq!(
            docs.write("a", b"1", Expected::Absent).expect("write"),
            Some(1)
        );
        assert_eq!(
            docs.write("a", b"2", Expected::Absent).expect("write"),
            None
        );
        assert_eq!(
            docs.write("a", b"2", Expected::Revision(1)).expect("write"),
            Some(2)
        );
        assert_eq!(
            docs.write("a", b"3", Expected::Revision(1)).expect("write"),
            None
        );
        assert_eq!(
            docs.write("a", b"4", Expected::Any).expect("write"),
            Some(3)
        );
        let doc = docs.read("a").expect("read").expect("present");
        assert_eq!((doc.body.as_slice(), doc.revision), (&b"4"[..], 3));
        assert_eq!(docs.revisions().expect("revisions")["a"], 3);
    }

    /// A store whose every first write after a read loses to another writer, as when two servers
    /// update one document at once.
    #[derive(Debug, Default)]
    struct Contended {
        inner: MemoryDocuments,
        raced: Mutex<bool>,
    }

    impl ControlDocuments for Contended {
        fn read(&self, name: &str) -> Result<Option<ControlDocument>> {
            self.inner.read(name)
        }

        fn write(&self, name: &str, body: &[u8], expected: Expected) -> Result<Option<u64>> {
            let mut raced = self.raced.lock().expect("lock");
            if !*raced {
                *raced = true;
                self.inner.write(name, b"[\"other\"]", Expected::Any)?;
            }
            self.inner.write(name, body, expected)
        }

        fn revisions(&self) -> Result<BTreeMap<String, u64>> {
            self.inner.revisions()
        }
    }

    #[test]
    fn an_update_that_loses_a_race_applies_its_change_to_the_winner() {
        let docs = Contended::default();
        let mut seen = Vec::new();
        update_document(&docs, "list", |body| {
            let mut list: Vec<String> = match body {
                Some(bytes) => serde_json::from_slice(bytes).expect("json"),
                None => Vec::new(),
            };
            seen.push(list.clone());
            list.push("mine".into());
            Ok((Some(serde_json::to_vec(&list).expect("json")), ()))
        })
        .expect("update");
        assert_eq!(seen, vec![Vec::<String>::new(), vec!["other".to_owned()]]);
        let doc = docs.read("list").expect("read").expect("present");
        assert_eq!(doc.body, br#"["other","mine"]"#);
    }
}
