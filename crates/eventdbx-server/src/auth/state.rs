//! What the authority keeps in `state_dir`: the token ledger (`ledger.json`), the revocation list
//! (`revocations.json`), the v2 token-id registry (`registry.json`, which holds PSKs and is a
//! secret file) and the registry entries of revoked tokens (`revoked_psks.json`, secret too),
//! kept until the tokens expire so that a v2 handshake with one can be told it was revoked.
//! Each is one JSON array rewritten atomically.
//!
//! On a shared database the four live in one control document, `auth/state`, instead
//! (`docs/storage.md`, "Several servers"): one compare-and-swap then writes a whole mutation,
//! and a server that loses the race merges the winner's state and tries again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use eventdbx_proto::noise::v2::{TokenId, TOKEN_ID_LEN};
use eventdbx_store::documents::{ControlDocuments, Expected};
use serde::{Deserialize, Serialize};

use super::{files, AuthError, TokenRecord};

/// The control document of the shared state.
pub(crate) const STATE_DOCUMENT: &str = "auth/state";

const LEDGER_FILE: &str = "ledger.json";
const REVOCATIONS_FILE: &str = "revocations.json";
const REGISTRY_FILE: &str = "registry.json";
const REVOKED_PSKS_FILE: &str = "revoked_psks.json";

/// One entry of the revocation list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Revocation {
    pub(crate) jti: String,
    pub(crate) revoked_at: u64,
    #[serde(default)]
    pub(crate) reason: Option<String>,
    #[serde(default)]
    pub(crate) expires_at: Option<u64>,
}

/// What the registry holds for one issued token.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct RegistryEntry {
    pub(crate) psk: [u8; 32],
    pub(crate) jti: String,
    pub(crate) expires_at: Option<u64>,
}

/// The registry's on-disk row: token id in hex, PSK in base64.
#[derive(Serialize, Deserialize)]
struct RegistryRow {
    token_id: String,
    psk: String,
    jti: String,
    #[serde(default)]
    expires_at: Option<u64>,
}

/// Everything in `state_dir`, in memory.
#[derive(Default, Clone)]
pub(crate) struct Stored {
    pub(crate) ledger: Vec<TokenRecord>,
    pub(crate) revocations: Vec<Revocation>,
    pub(crate) registry: HashMap<TokenId, RegistryEntry>,
    /// Registry entries of revoked tokens, until the tokens expire.
    pub(crate) revoked_psks: HashMap<TokenId, RegistryEntry>,
}

/// The shared form of [`Stored`]: the four files' arrays in one document.
#[derive(Default, Serialize, Deserialize)]
struct StateDocument {
    #[serde(default)]
    ledger: Vec<TokenRecord>,
    #[serde(default)]
    revocations: Vec<Revocation>,
    #[serde(default)]
    registry: Vec<RegistryRow>,
    #[serde(default)]
    revoked_psks: Vec<RegistryRow>,
}

/// What a mutation changed, so the files backing writes only those.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// A token was added to the ledger and the registry.
    Issued,
    /// A token was revoked: every part changed.
    Revoked,
}

/// Where the authority's state lives: the files of one `state_dir`, or the shared document.
#[derive(Debug)]
pub(crate) struct StateFiles {
    dir: PathBuf,
    shared: Option<SharedState>,
}

/// The shared document and the revision last read from it, which the next write expects.
#[derive(Debug)]
struct SharedState {
    documents: Arc<dyn ControlDocuments>,
    revision: Mutex<Option<u64>>,
}

impl StateFiles {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            shared: None,
        }
    }

    /// The state in the shared control documents instead of `state_dir`.
    pub(crate) fn shared(dir: &Path, documents: Arc<dyn ControlDocuments>) -> Self {
        Self {
            dir: dir.to_path_buf(),
            shared: Some(SharedState {
                documents,
                revision: Mutex::new(None),
            }),
        }
    }

    /// The shared documents, when the state is the shared document.
    pub(crate) fn documents(&self) -> Option<&Arc<dyn ControlDocuments>> {
        self.shared.as_ref().map(|shared| &shared.documents)
    }

    /// Writes what `change` changed of `stored`. `false` when the shared document changed since
    /// it was last loaded: nothing was written, and the caller loads, merges and tries again.
    pub(crate) fn save(&self, stored: &Stored, change: Change) -> Result<bool, AuthError> {
        let Some(shared) = &self.shared else {
            if change == Change::Revoked {
                self.save_revocations(&stored.revocations)?;
                self.save_revoked_psks(&stored.revoked_psks)?;
            }
            self.save_registry(&stored.registry)?;
            self.save_ledger(&stored.ledger)?;
            return Ok(true);
        };
        let document = StateDocument {
            ledger: stored.ledger.clone(),
            revocations: stored.revocations.clone(),
            registry: registry_rows(&stored.registry),
            revoked_psks: registry_rows(&stored.revoked_psks),
        };
        let body = serde_json::to_vec(&document)
            .map_err(|e| AuthError::Storage(format!("{STATE_DOCUMENT}: {e}")))?;
        let mut revision = shared
            .revision
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let expected = revision.map_or(Expected::Absent, Expected::Revision);
        match shared
            .documents
            .write(STATE_DOCUMENT, &body, expected)
            .map_err(document_error)?
        {
            Some(written) => {
                *revision = Some(written);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Reads the state: all three files (missing files are empty), or the shared document.
    pub(crate) fn load(&self) -> Result<Stored, AuthError> {
        if let Some(shared) = &self.shared {
            return shared.load();
        }
        files::ensure_private_dir(&self.dir)?;
        let ledger = parse_array(&self.dir.join(LEDGER_FILE), files::read_optional)?;
        let revocations = parse_array(&self.dir.join(REVOCATIONS_FILE), files::read_optional)?;
        Ok(Stored {
            ledger,
            revocations,
            registry: self.load_registry(REGISTRY_FILE)?,
            revoked_psks: self.load_registry(REVOKED_PSKS_FILE)?,
        })
    }

    fn load_registry(&self, name: &str) -> Result<HashMap<TokenId, RegistryEntry>, AuthError> {
        let path = self.dir.join(name);
        let rows: Vec<RegistryRow> = parse_array(&path, files::read_private)?;
        let mut registry = HashMap::with_capacity(rows.len());
        for row in rows {
            let (id, entry) = row_to_entry(row).ok_or_else(|| {
                AuthError::Storage(format!("{}: malformed registry entry", path.display()))
            })?;
            registry.insert(id, entry);
        }
        Ok(registry)
    }

    fn save_ledger(&self, ledger: &[TokenRecord]) -> Result<(), AuthError> {
        write_json(&self.dir.join(LEDGER_FILE), &ledger)
    }

    fn save_revocations(&self, revocations: &[Revocation]) -> Result<(), AuthError> {
        write_json(&self.dir.join(REVOCATIONS_FILE), &revocations)
    }

    fn save_registry(&self, registry: &HashMap<TokenId, RegistryEntry>) -> Result<(), AuthError> {
        self.save_registry_file(REGISTRY_FILE, registry)
    }

    fn save_revoked_psks(
        &self,
        revoked: &HashMap<TokenId, RegistryEntry>,
    ) -> Result<(), AuthError> {
        self.save_registry_file(REVOKED_PSKS_FILE, revoked)
    }

    fn save_registry_file(
        &self,
        name: &str,
        registry: &HashMap<TokenId, RegistryEntry>,
    ) -> Result<(), AuthError> {
        write_json(&self.dir.join(name), &registry_rows(registry))
    }
}

impl SharedState {
    /// The shared document (empty when no server has written it yet), remembering its
    /// revision for the next write.
    fn load(&self) -> Result<Stored, AuthError> {
        let mut revision = self.revision.lock().unwrap_or_else(PoisonError::into_inner);
        let read = self
            .documents
            .read(STATE_DOCUMENT)
            .map_err(document_error)?;
        let Some(read) = read else {
            *revision = None;
            return Ok(Stored::default());
        };
        let document: StateDocument = serde_json::from_slice(&read.body)
            .map_err(|e| AuthError::Storage(format!("{STATE_DOCUMENT}: {e}")))?;
        let malformed =
            || AuthError::Storage(format!("{STATE_DOCUMENT}: malformed registry entry"));
        let entries = |rows: Vec<RegistryRow>| {
            rows.into_iter()
                .map(|row| row_to_entry(row).ok_or_else(malformed))
                .collect::<Result<HashMap<_, _>, AuthError>>()
        };
        let stored = Stored {
            ledger: document.ledger,
            revocations: document.revocations,
            registry: entries(document.registry)?,
            revoked_psks: entries(document.revoked_psks)?,
        };
        *revision = Some(read.revision);
        Ok(stored)
    }
}

/// A failure of the shared documents in the authority's error type.
pub(crate) fn document_error(err: eventdbx_store::StoreError) -> AuthError {
    let text = err.to_string();
    let text = text.strip_prefix("storage error: ").unwrap_or(&text);
    AuthError::Storage(format!("control documents: {text}"))
}

/// The rows of a registry, by token id.
fn registry_rows(registry: &HashMap<TokenId, RegistryEntry>) -> Vec<RegistryRow> {
    let mut rows: Vec<RegistryRow> = registry
        .iter()
        .map(|(id, entry)| RegistryRow {
            token_id: id.to_string(),
            psk: STANDARD.encode(entry.psk),
            jti: entry.jti.clone(),
            expires_at: entry.expires_at,
        })
        .collect();
    rows.sort_by(|a, b| a.token_id.cmp(&b.token_id));
    rows
}

impl Stored {
    /// Folds `other` (typically what another process wrote) into `self`: records and entries
    /// missing here are added, and a revocation on either side wins.
    pub(crate) fn merge(&mut self, other: Stored) {
        let index: HashMap<String, usize> = self
            .ledger
            .iter()
            .enumerate()
            .map(|(i, r)| (r.jti.clone(), i))
            .collect();
        for record in other.ledger {
            match index.get(&record.jti) {
                Some(&i) => {
                    let mine = &mut self.ledger[i];
                    if record.revoked && !mine.revoked {
                        mine.revoked = true;
                        mine.revoked_at = record.revoked_at;
                        mine.revoke_reason = record.revoke_reason;
                    }
                }
                None => self.ledger.push(record),
            }
        }
        for revocation in other.revocations {
            if !self.revocations.iter().any(|r| r.jti == revocation.jti) {
                self.revocations.push(revocation);
            }
        }
        for (id, entry) in other.registry {
            self.registry.entry(id).or_insert(entry);
        }
        for (id, entry) in other.revoked_psks {
            self.revoked_psks.entry(id).or_insert(entry);
        }
        let revoked: std::collections::HashSet<&str> =
            self.revocations.iter().map(|r| r.jti.as_str()).collect();
        let revoked_psks = &mut self.revoked_psks;
        self.registry.retain(|id, e| {
            let live = !revoked.contains(e.jti.as_str());
            if !live {
                revoked_psks.entry(*id).or_insert_with(|| e.clone());
            }
            live
        });
        for record in &mut self.ledger {
            if !record.revoked && revoked.contains(record.jti.as_str()) {
                if let Some(r) = self.revocations.iter().find(|r| r.jti == record.jti) {
                    record.revoked = true;
                    record.revoked_at = Some(r.revoked_at);
                    record.revoke_reason = r.reason.clone();
                }
            }
        }
    }
}

fn parse_array<T: for<'de> Deserialize<'de>>(
    path: &Path,
    read: fn(&Path) -> Result<Option<Vec<u8>>, AuthError>,
) -> Result<Vec<T>, AuthError> {
    match read(path)? {
        None => Ok(Vec::new()),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| AuthError::Storage(format!("{}: {e}", path.display()))),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), AuthError> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| AuthError::Storage(format!("{}: {e}", path.display())))?;
    bytes.push(b'\n');
    files::write_private(path, &bytes)
}

fn row_to_entry(row: RegistryRow) -> Option<(TokenId, RegistryEntry)> {
    let id = parse_token_id(&row.token_id)?;
    let psk: [u8; 32] = STANDARD.decode(row.psk).ok()?.try_into().ok()?;
    Some((
        id,
        RegistryEntry {
            psk,
            jti: row.jti,
            expires_at: row.expires_at,
        },
    ))
}

/// Parses the lower-case hex form that `TokenId`'s `Display` writes.
pub(crate) fn parse_token_id(text: &str) -> Option<TokenId> {
    if text.len() != TOKEN_ID_LEN * 2 || !text.is_ascii() {
        return None;
    }
    let mut id = [0u8; TOKEN_ID_LEN];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(TokenId(id))
}
