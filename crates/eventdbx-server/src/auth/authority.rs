//! Opening the [`Authority`] (signing key, key id, state files) and its hot path: verifying a
//! token (cryptography once per token, then memory only), the v2 PSK lookup and the reload of
//! what other processes wrote.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use ed25519_dalek::VerifyingKey;
use eventdbx_proto::noise::v2::TokenId;
use eventdbx_store::documents::ControlDocuments;
use sha2::{Digest, Sha256};

use super::claims::Claims;
use super::state::{Change, StateFiles, Stored};
use super::{
    files, jwt, key, now_secs, read, write, AuthConfig, AuthError, Authority, KeyOverrides,
    ENV_PRIVATE_KEY, ENV_PUBLIC_KEY, MAX_CLOCK_SKEW_SECS, MIN_TTL_SECS,
};

impl Authority {
    /// Opens the authority: loads or creates the signing key (honouring the `EVENTDBX_AUTH_*`
    /// environment overrides) and loads the ledger, revocations and registry.
    ///
    /// Fails with [`AuthError::Config`] when the key file or the registry is accessible by group
    /// or others.
    pub fn open(config: AuthConfig) -> Result<Self, AuthError> {
        Self::open_with(config, KeyOverrides::from_env())
    }

    /// [`Authority::open`] with explicit overrides instead of the environment.
    pub fn open_with(config: AuthConfig, overrides: KeyOverrides) -> Result<Self, AuthError> {
        Self::open_in(config, overrides, None)
    }

    /// [`Authority::open_with`] for a server sharing its database with others
    /// (`docs/storage.md`, "Several servers"): the ledger, revocations and registry live in
    /// `documents`, and so does the set of public keys whose tokens every server accepts, to
    /// which this server's key is added. The signing key stays this server's own (its file or
    /// the environment's).
    pub fn open_shared(
        config: AuthConfig,
        overrides: KeyOverrides,
        documents: Arc<dyn ControlDocuments>,
    ) -> Result<Self, AuthError> {
        Self::open_in(config, overrides, Some(documents))
    }

    fn open_in(
        config: AuthConfig,
        overrides: KeyOverrides,
        documents: Option<Arc<dyn ControlDocuments>>,
    ) -> Result<Self, AuthError> {
        let signing_key = match &overrides.private_key {
            Some(text) => key::parse(text, ENV_PRIVATE_KEY)?,
            None => key::load_or_create(&config.signing_key_file)?,
        };
        let verifying_key = signing_key.verifying_key();
        if let Some(public) = &overrides.public_key {
            let expected = base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                verifying_key.to_bytes(),
            );
            if public.trim() != expected {
                return Err(AuthError::Config(format!(
                    "{ENV_PUBLIC_KEY} does not match the signing key"
                )));
            }
        }
        let key_id = match overrides.key_id.or_else(|| config.key_id.clone()) {
            Some(id) => id,
            None => persisted_key_id(&config.signing_key_file)?,
        };
        let (files, trusted) = match documents {
            Some(documents) => {
                let trusted = key::register_public(documents.as_ref(), &key_id, &verifying_key)?;
                let files = StateFiles::shared(&config.state_dir, documents);
                bring_local_state(&files, &config.state_dir)?;
                (files, trusted)
            }
            None => (StateFiles::new(&config.state_dir), Vec::new()),
        };
        let others = other_keys(&trusted, &verifying_key);
        let stored = files.load()?;
        let revoked = stored.revocations.iter().map(|r| r.jti.clone()).collect();
        let registry = stored.registry.clone();
        let revoked_psks = stored.revoked_psks.clone();
        tracing::debug!(
            key_id = %key_id,
            tokens = stored.ledger.len(),
            revoked = stored.revocations.len(),
            "token authority opened"
        );
        Ok(Self {
            issuer: config.issuer,
            audience: config.audience,
            default_ttl_secs: config.default_ttl_secs.max(MIN_TTL_SECS),
            clock_skew_secs: config.clock_skew_secs.min(MAX_CLOCK_SKEW_SECS),
            keys: jwt::TokenKeys::new(&signing_key),
            verifying_key,
            key_id,
            files,
            stored: Mutex::new(stored),
            revoked: RwLock::new(revoked),
            registry: RwLock::new(registry),
            revoked_psks: RwLock::new(revoked_psks),
            verified: RwLock::new(VerifiedCache::default()),
            others: RwLock::new(others),
        })
    }

    /// The `kid` of issued tokens.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public half of the signing key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.verifying_key
    }

    /// Verifies a token (trimmed) in the order of `docs/tokens.md` ("Verifying") and returns
    /// its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_shared_at(token, now_secs())
            .map(|claims| (*claims).clone())
    }

    /// [`Authority::verify`] as if the clock read `now` (epoch seconds).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        self.verify_shared_at(token, now)
            .map(|claims| (*claims).clone())
    }

    /// [`Authority::verify`] without copying the claims.
    pub fn verify_shared(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        self.verify_shared_at(token, now_secs())
    }

    /// [`Authority::verify_shared`] as if the clock read `now` (epoch seconds).
    pub fn verify_shared_at(&self, token: &str, now: u64) -> Result<Arc<Claims>, AuthError> {
        let claims = self.signed_claims(token)?;
        if claims.iss != self.issuer || claims.aud != self.audience {
            return Err(AuthError::Unauthorized);
        }
        let skew = self.clock_skew_secs;
        if claims.exp.is_some_and(|exp| now > exp.saturating_add(skew)) {
            return Err(AuthError::TokenExpired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(skew)) {
            return Err(AuthError::Unauthorized);
        }
        if claims.iat > now.saturating_add(skew) {
            return Err(AuthError::Unauthorized);
        }
        if read(&self.revoked).contains(&claims.jti) {
            return Err(AuthError::InvalidToken);
        }
        Ok(claims)
    }

    /// The claims of a correctly signed token, from the cache when its signature was checked
    /// before.
    pub(super) fn signed_claims(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        let token = token.trim();
        if token.is_empty() || token.len() > jwt::MAX_TOKEN_LEN {
            return Err(AuthError::InvalidToken);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(claims) = read(&self.verified).get(&digest) {
            return Ok(claims);
        }
        let claims = match self.keys.decode(token) {
            Ok(claims) => claims,
            // Another server's token, on a shared database.
            Err(err) => read(&self.others)
                .iter()
                .find_map(|key| self.keys.decode_signed_by(token, key).ok())
                .ok_or(err)?,
        };
        let claims = Arc::new(claims);
        write(&self.verified).insert(digest, Arc::clone(&claims));
        Ok(claims)
    }

    /// The v2 PSK recorded for a token id; `None` for unknown and revoked tokens.
    pub fn psk_for(&self, id: &TokenId) -> Option<[u8; 32]> {
        let registry = read(&self.registry);
        let entry = registry.get(id)?;
        if read(&self.revoked).contains(&entry.jti) {
            return None;
        }
        Some(entry.psk)
    }

    /// The PSK a v2 handshake announcing this token id runs with: a live token's, or a revoked
    /// (unexpired) one's, so that the handshake completes and its verdict can say the token was
    /// revoked. That verdict is sealed under keys that depend on the PSK, so only a peer holding
    /// the token reads it; anyone else sees the handshake fail as with an unknown id. `None`
    /// for an unknown id.
    pub fn handshake_psk(&self, id: &TokenId) -> Option<[u8; 32]> {
        if let Some(entry) = read(&self.registry).get(id) {
            return Some(entry.psk);
        }
        read(&self.revoked_psks).get(id).map(|entry| entry.psk)
    }

    /// Whether `token` is correctly signed and revoked (whatever else is wrong with it).
    pub fn is_revoked(&self, token: &str) -> bool {
        self.signed_claims(token)
            .is_ok_and(|claims| read(&self.revoked).contains(&claims.jti))
    }

    /// Re-reads the state directory (or the shared document) and folds in what other processes
    /// wrote (tokens issued and revoked by the CLI or another server). Call it every
    /// `revocation_refresh_secs`, and on a shared database when the document changed.
    pub fn reload(&self) -> Result<(), AuthError> {
        let mut stored = self.lock_stored();
        self.merge_from_disk(&mut stored)
    }

    /// Reloads the shared state when the control document `name` is it (another server changed
    /// it); other documents, and an authority that keeps files, ignore the call.
    pub fn document_changed(&self, name: &str) -> Result<(), AuthError> {
        let Some(documents) = self.files.documents() else {
            return Ok(());
        };
        if name == super::state::STATE_DOCUMENT {
            self.reload()?;
        } else if name == key::KEYS_DOCUMENT {
            let trusted = key::public_keys(documents.as_ref())?;
            *write(&self.others) = other_keys(&trusted, &self.verifying_key);
        }
        Ok(())
    }

    /// Merges the files into `stored` and refreshes the hot-path sets from it.
    pub(super) fn merge_from_disk(&self, stored: &mut Stored) -> Result<(), AuthError> {
        let on_disk = self.files.load()?;
        stored.merge(on_disk);
        let revoked: HashSet<String> = stored.revocations.iter().map(|r| r.jti.clone()).collect();
        write(&self.registry).clone_from(&stored.registry);
        write(&self.revoked_psks).clone_from(&stored.revoked_psks);
        write(&self.revoked).extend(revoked);
        Ok(())
    }

    pub(super) fn lock_stored(&self) -> MutexGuard<'_, Stored> {
        self.stored.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How many verified tokens the signature cache holds before it forgets the oldest.
const VERIFIED_CACHE_CAPACITY: usize = 4096;

/// A bounded map of verified tokens, forgetting the oldest first.
#[derive(Default)]
pub(super) struct VerifiedCache {
    claims: HashMap<[u8; 32], Arc<Claims>>,
    order: VecDeque<[u8; 32]>,
}

impl VerifiedCache {
    fn get(&self, digest: &[u8; 32]) -> Option<Arc<Claims>> {
        self.claims.get(digest).cloned()
    }

    fn insert(&mut self, digest: [u8; 32], claims: Arc<Claims>) {
        if self.claims.insert(digest, claims).is_some() {
            return;
        }
        self.order.push_back(digest);
        while self.order.len() > VERIFIED_CACHE_CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.claims.remove(&oldest);
            }
        }
    }
}

/// The keys of a shared key set other than this server's, as the decoder takes them.
fn other_keys(trusted: &[VerifyingKey], mine: &VerifyingKey) -> Vec<jsonwebtoken::DecodingKey> {
    trusted
        .iter()
        .filter(|key| *key != mine)
        .map(jwt::decoding_key)
        .collect()
}

/// Tokens this server issued and revoked in its files before it shared a database: merged
/// into the shared state (a revocation on either side wins), so they keep working.
fn bring_local_state(shared: &StateFiles, state_dir: &Path) -> Result<(), AuthError> {
    if !state_dir.is_dir() {
        return Ok(());
    }
    let local = StateFiles::new(state_dir).load()?;
    if local.ledger.is_empty() && local.registry.is_empty() && local.revocations.is_empty() {
        return Ok(());
    }
    for _ in 0..eventdbx_store::documents::MAX_DOCUMENT_RACES {
        let mut stored = shared.load()?;
        let before = (
            stored.ledger.len(),
            stored.registry.len(),
            stored.revocations.len(),
            stored.revoked_psks.len(),
        );
        stored.merge(local.clone());
        let after = (
            stored.ledger.len(),
            stored.registry.len(),
            stored.revocations.len(),
            stored.revoked_psks.len(),
        );
        if before == after || shared.save(&stored, Change::Revoked)? {
            return Ok(());
        }
    }
    Err(super::lost_too_often())
}

/// The key id persisted beside the key file, created on first use.
fn persisted_key_id(signing_key_file: &Path) -> Result<String, AuthError> {
    let path = signing_key_file.with_extension("kid");
    if let Some(bytes) = files::read_optional(&path)? {
        let id = String::from_utf8_lossy(&bytes).trim().to_owned();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    let id = key::new_key_id(now_secs());
    files::write_private(&path, format!("{id}\n").as_bytes())?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::claims::Limits;

    #[test]
    fn cache_is_bounded() {
        let mut cache = VerifiedCache::default();
        let claims = Arc::new(Claims {
            iss: String::new(),
            aud: String::new(),
            sub: String::new(),
            jti: String::new(),
            iat: 0,
            exp: None,
            nbf: None,
            group: String::new(),
            user: String::new(),
            actions: Vec::new(),
            resources: Vec::new(),
            issued_by: String::new(),
            limits: Limits::default(),
            tenants: Vec::new(),
        });
        for i in 0..(VERIFIED_CACHE_CAPACITY + 10) {
            let mut digest = [0u8; 32];
            digest[..8].copy_from_slice(&(i as u64).to_le_bytes());
            cache.insert(digest, Arc::clone(&claims));
        }
        assert_eq!(cache.claims.len(), VERIFIED_CACHE_CAPACITY);
        assert_eq!(cache.order.len(), VERIFIED_CACHE_CAPACITY);
        assert!(cache.get(&[0u8; 32]).is_none());
    }
}
