//! Tokens (spec 02 §10): Ed25519-signed JWTs, their ledger, revocation and refresh, and the v2
//! registry that maps a token id to its pre-shared key.
//!
//! One [`Authority`] per server, shared behind an `Arc`. [`Authority::verify`] is the hot path:
//! after a token's signature has been checked once, later checks of the same token do no
//! cryptography and no file I/O; expiry and revocation are still checked on every call, from
//! memory.
//!
//! ```no_run
//! use eventdbx_server::auth::{AuthConfig, Authority, TokenRequest};
//!
//! # fn main() -> Result<(), eventdbx_server::auth::AuthError> {
//! let authority = Authority::open(AuthConfig::defaults(std::path::Path::new(".dbx")))?;
//! let (token, _claims) = authority.issue(TokenRequest {
//!     group: "ops".into(),
//!     user: "jane".into(),
//!     actions: vec!["aggregate.*".into()],
//!     ..TokenRequest::default()
//! })?;
//! let claims = authority.verify(&token)?;
//! claims.authorize("aggregate.read", Some("aggregate:order:o-1"))?;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - `jwt`: the compact EdDSA JWS encoding.
//! - `key`: the signing key file (base64 PKCS#8, mode 0600) and key ids.
//! - `state`: `ledger.json`, `revocations.json`, `registry.json` in the state directory.
//! - `files`: atomic, owner-only file writes.
//! - `glob`: `*` / `?` patterns of actions and resources.

mod files;
mod glob;
mod jwt;
mod key;
mod state;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::{SigningKey, VerifyingKey};
use eventdbx_proto::noise::v2::{self, TokenId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use state::{RegistryEntry, Revocation, StateFiles, Stored};

/// Environment variable overriding the signing key (base64 PKCS#8 DER or a raw 32-byte seed).
pub const ENV_PRIVATE_KEY: &str = "EVENTDBX_AUTH_PRIVATE_KEY";
/// Environment variable that, when set, must hold the base64 public key of the signing key.
pub const ENV_PUBLIC_KEY: &str = "EVENTDBX_AUTH_PUBLIC_KEY";
/// Environment variable overriding the key id.
pub const ENV_KEY_ID: &str = "EVENTDBX_AUTH_KEY_ID";

/// Default `auth.issuer`.
pub const DEFAULT_ISSUER: &str = "eventdbx://self";
/// Default `auth.audience`.
pub const DEFAULT_AUDIENCE: &str = "eventdbx-clients";
/// Default `auth.default_ttl_secs`.
pub const DEFAULT_TTL_SECS: u64 = 3600;
/// The shortest lifetime a token with an expiry gets.
pub const MIN_TTL_SECS: u64 = 60;
/// Default `auth.clock_skew_secs`.
pub const DEFAULT_CLOCK_SKEW_SECS: u64 = 30;
/// Largest accepted `auth.clock_skew_secs`; larger values are clamped.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;
/// TTL of `dbx token bootstrap` (§10.5).
pub const BOOTSTRAP_TTL_SECS: u64 = 7200;
/// `issued_by` of a token whose request names none.
pub const DEFAULT_ISSUED_BY: &str = "cli";

/// How many verified tokens the signature cache holds before it forgets the oldest.
const VERIFIED_CACHE_CAPACITY: usize = 4096;

/// The `[auth]` configuration (§15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// `iss` of issued tokens; verified tokens must carry the same.
    pub issuer: String,
    /// `aud` of issued tokens; verified tokens must carry the same.
    pub audience: String,
    /// TTL of a token whose request names none (minimum 60).
    pub default_ttl_secs: u64,
    /// Tolerance for `exp`, `nbf` and `iat` (clamped to 0–300).
    pub clock_skew_secs: u64,
    /// `kid` of issued tokens; generated (and persisted beside the key) when absent.
    pub key_id: Option<String>,
    /// The Ed25519 signing key, mode 0600.
    pub signing_key_file: PathBuf,
    /// Where the ledger, the revocation list and the token-id registry live.
    pub state_dir: PathBuf,
}

impl AuthConfig {
    /// The defaults of §15 for a data directory.
    pub fn defaults(data_dir: &Path) -> Self {
        Self {
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
            default_ttl_secs: DEFAULT_TTL_SECS,
            clock_skew_secs: DEFAULT_CLOCK_SKEW_SECS,
            key_id: None,
            signing_key_file: data_dir.join("secrets").join("token_signing.key"),
            state_dir: data_dir.join("auth"),
        }
    }
}

/// The claims of a token (§10.2), with their JSON names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Subject, `group:user` unless given.
    pub sub: String,
    /// Token id, a UUID v4.
    pub jti: String,
    /// Issued at, epoch seconds.
    pub iat: u64,
    /// Expiry, epoch seconds; absent for a token that never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Not before, epoch seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Actor group (required for writes).
    #[serde(default)]
    pub group: String,
    /// Actor user (required for writes).
    #[serde(default)]
    pub user: String,
    /// Action patterns.
    #[serde(default)]
    pub actions: Vec<String>,
    /// Resource patterns.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Who issued the token.
    #[serde(default)]
    pub issued_by: String,
    /// Limits, stored and never enforced.
    #[serde(default)]
    pub limits: Limits,
    /// Tenants the token may use; empty means every tenant.
    #[serde(default)]
    pub tenants: Vec<String>,
}

/// The `limits` claim: stored, never enforced (§10.2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most events the token may write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_events: Option<u64>,
    /// Whether the holder may keep a session open.
    #[serde(default)]
    pub keep_alive: bool,
}

impl Claims {
    /// Whether some `actions` pattern matches `action`.
    pub fn allows_action(&self, action: &str) -> bool {
        self.actions.iter().any(|p| glob::matches(p, action))
    }

    /// Whether `resources` is empty or some pattern matches `resource`.
    pub fn allows_resource(&self, resource: &str) -> bool {
        self.resources.is_empty() || self.resources.iter().any(|p| glob::matches(p, resource))
    }

    /// Whether the token may use `tenant`: `tenants` is empty, or holds it (case-insensitively).
    pub fn allows_tenant(&self, tenant: &str) -> bool {
        let tenant = tenant.trim().to_lowercase();
        self.tenants.is_empty()
            || self
                .tenants
                .iter()
                .any(|t| t.trim().to_lowercase() == tenant)
    }

    /// §10.3 authorisation: the action must be allowed and, when given, the resource.
    pub fn authorize(&self, action: &str, resource: Option<&str>) -> Result<(), AuthError> {
        if !self.allows_action(action) || resource.is_some_and(|r| !self.allows_resource(r)) {
            return Err(AuthError::Unauthorized);
        }
        Ok(())
    }

    /// [`Claims::allows_tenant`] as a `Result`.
    pub fn authorize_tenant(&self, tenant: &str) -> Result<(), AuthError> {
        if self.allows_tenant(tenant) {
            Ok(())
        } else {
            Err(AuthError::Unauthorized)
        }
    }

    /// Whether the token names an actor, which writes require.
    pub fn can_write(&self) -> bool {
        !self.group.trim().is_empty() && !self.user.trim().is_empty()
    }
}

/// What a new token should carry (`dbx token generate`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenRequest {
    /// Actor group.
    pub group: String,
    /// Actor user.
    pub user: String,
    /// Subject; `group:user` when absent or blank.
    pub subject: Option<String>,
    /// Action patterns; at least one.
    pub actions: Vec<String>,
    /// Resource patterns; `["*"]` when empty.
    pub resources: Vec<String>,
    /// Tenants; normalised (trimmed, lower-cased, sorted, de-duplicated).
    pub tenants: Vec<String>,
    /// Lifetime: `None` = the configured default, `Some(0)` = no `exp`, otherwise at least 60 s.
    pub ttl_secs: Option<u64>,
    /// Issuer label; [`DEFAULT_ISSUED_BY`] when absent.
    pub issued_by: Option<String>,
    /// `limits.write_events`.
    pub write_limit: Option<u64>,
    /// `limits.keep_alive`.
    pub keep_alive: bool,
    /// `nbf`, epoch seconds.
    pub not_before: Option<u64>,
}

/// A ledger record: what was issued, never the token itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Token id.
    pub jti: String,
    /// `sub`.
    pub subject: String,
    /// `group`.
    pub group: String,
    /// `user`.
    pub user: String,
    /// `actions`.
    pub actions: Vec<String>,
    /// `resources`.
    pub resources: Vec<String>,
    /// `tenants`.
    pub tenants: Vec<String>,
    /// `issued_by`.
    pub issued_by: String,
    /// `iat`.
    pub issued_at: u64,
    /// `exp`.
    pub expires_at: Option<u64>,
    /// Whether the token has been revoked.
    #[serde(default)]
    pub revoked: bool,
    /// When it was revoked.
    #[serde(default)]
    pub revoked_at: Option<u64>,
    /// Why it was revoked.
    #[serde(default)]
    pub revoke_reason: Option<String>,
}

impl TokenRecord {
    fn from_claims(claims: &Claims) -> Self {
        Self {
            jti: claims.jti.clone(),
            subject: claims.sub.clone(),
            group: claims.group.clone(),
            user: claims.user.clone(),
            actions: claims.actions.clone(),
            resources: claims.resources.clone(),
            tenants: claims.tenants.clone(),
            issued_by: claims.issued_by.clone(),
            issued_at: claims.iat,
            expires_at: claims.exp,
            revoked: false,
            revoked_at: None,
            revoke_reason: None,
        }
    }
}

/// Token errors; [`AuthError::code`] is the wire code (spec 01 §13) and the display text its
/// message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Missing, malformed, badly signed or revoked token.
    #[error("token not found or inactive")]
    InvalidToken,
    /// `exp` has passed (with clock skew).
    #[error("token has expired")]
    TokenExpired,
    /// Not allowed: action, resource, tenant, issuer/audience, `nbf`/`iat` in the future.
    #[error("unauthorized")]
    Unauthorized,
    /// A request that cannot be honoured as given.
    #[error("invalid schema: {0}")]
    Invalid(String),
    /// Reading or writing the key or the state files failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// Refusing to run as configured, e.g. a secret file readable by others or a bad key.
    #[error("configuration error: {0}")]
    Config(String),
}

impl AuthError {
    /// The stable wire code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::InvalidToken => "invalid_token",
            AuthError::TokenExpired => "token_expired",
            AuthError::Unauthorized => "unauthorized",
            AuthError::Invalid(_) => "invalid_schema",
            AuthError::Storage(_) => "storage",
            AuthError::Config(_) => "config",
        }
    }
}

/// Key material supplied from outside the data directory (the environment, §10.1).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeyOverrides {
    /// Base64 PKCS#8 DER or raw 32-byte seed; replaces the key file.
    pub private_key: Option<String>,
    /// Base64 raw public key; when set it must match the private key.
    pub public_key: Option<String>,
    /// Key id; wins over the configuration and the persisted id.
    pub key_id: Option<String>,
}

impl std::fmt::Debug for KeyOverrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyOverrides")
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .field("public_key", &self.public_key)
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl KeyOverrides {
    /// Reads `EVENTDBX_AUTH_PRIVATE_KEY`, `EVENTDBX_AUTH_PUBLIC_KEY` and `EVENTDBX_AUTH_KEY_ID`;
    /// empty values count as unset.
    pub fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        Self {
            private_key: var(ENV_PRIVATE_KEY),
            public_key: var(ENV_PUBLIC_KEY),
            key_id: var(ENV_KEY_ID),
        }
    }
}

/// Issues, verifies and revokes tokens. `Send + Sync`; share it behind an `Arc`.
pub struct Authority {
    issuer: String,
    audience: String,
    default_ttl_secs: u64,
    clock_skew_secs: u64,
    signing_key: SigningKey,
    verifying_key: VerifyingKey,
    key_id: String,
    files: StateFiles,
    /// Ledger and revocation list; held across the file writes of a mutation.
    stored: Mutex<Stored>,
    /// Revoked `jti`s: read by every verify.
    revoked: RwLock<HashSet<String>>,
    /// token id → PSK of every live issued token: read by every v2 handshake.
    registry: RwLock<HashMap<TokenId, RegistryEntry>>,
    /// Tokens whose signature has been checked, keyed by SHA-256 of the token.
    verified: RwLock<VerifiedCache>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("key_id", &self.key_id)
            .field("state", &self.files)
            .finish_non_exhaustive()
    }
}

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
        let files = StateFiles::new(&config.state_dir);
        let stored = files.load()?;
        let revoked = stored.revocations.iter().map(|r| r.jti.clone()).collect();
        let registry = stored.registry.clone();
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
            signing_key,
            verifying_key,
            key_id,
            files,
            stored: Mutex::new(stored),
            revoked: RwLock::new(revoked),
            registry: RwLock::new(registry),
            verified: RwLock::new(VerifiedCache::default()),
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

    /// Issues a token (§10.3) and records it in the ledger and the v2 registry.
    pub fn issue(&self, request: TokenRequest) -> Result<(String, Claims), AuthError> {
        self.issue_at(request, now_secs())
    }

    /// [`Authority::issue`] as if the clock read `now` (epoch seconds).
    pub fn issue_at(&self, request: TokenRequest, now: u64) -> Result<(String, Claims), AuthError> {
        let claims = self.claims_for(request, now)?;
        let token = jwt::encode(&claims, &self.signing_key, &self.key_id)?;
        let token_id = TokenId::of(&token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let psk = v2::psk(&token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        if token.len() > jwt::MAX_TOKEN_LEN {
            return Err(AuthError::Invalid(format!(
                "token of {} bytes exceeds the {}-byte limit",
                token.len(),
                jwt::MAX_TOKEN_LEN
            )));
        }
        let entry = RegistryEntry {
            psk,
            jti: claims.jti.clone(),
            expires_at: claims.exp,
        };

        let mut stored = self.lock_stored();
        self.merge_from_disk(&mut stored)?;
        stored.ledger.push(TokenRecord::from_claims(&claims));
        stored.registry.insert(token_id, entry.clone());
        let saved = self
            .files
            .save_registry(&stored.registry)
            .and_then(|()| self.files.save_ledger(&stored.ledger));
        if let Err(e) = saved {
            stored.ledger.pop();
            stored.registry.remove(&token_id);
            return Err(e);
        }
        drop(stored);
        write(&self.registry).insert(token_id, entry);
        tracing::info!(jti = %claims.jti, sub = %claims.sub, "token issued");
        Ok((token, claims))
    }

    fn claims_for(&self, request: TokenRequest, now: u64) -> Result<Claims, AuthError> {
        let actions = trimmed_list(request.actions);
        if actions.is_empty() {
            return Err(AuthError::Invalid(
                "token actions must contain at least one entry".to_owned(),
            ));
        }
        let mut resources = trimmed_list(request.resources);
        if resources.is_empty() {
            resources.push("*".to_owned());
        }
        let group = request.group.trim().to_owned();
        let user = request.user.trim().to_owned();
        let sub = request
            .subject
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("{group}:{user}"));
        let ttl = match request.ttl_secs {
            Some(0) => None,
            Some(ttl) => Some(ttl.max(MIN_TTL_SECS)),
            None => Some(self.default_ttl_secs),
        };
        Ok(Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub,
            jti: crate::random_id::uuid_v4()
                .map_err(|e| AuthError::Storage(format!("random source unavailable: {e}")))?,
            iat: now,
            exp: ttl.map(|ttl| now.saturating_add(ttl)),
            nbf: request.not_before,
            group,
            user,
            actions,
            resources,
            issued_by: request
                .issued_by
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_ISSUED_BY.to_owned()),
            limits: Limits {
                write_events: request.write_limit,
                keep_alive: request.keep_alive,
            },
            tenants: normalize_tenants(&request.tenants),
        })
    }

    /// Verifies a token (trimmed) in the order of §10.3 and returns its claims.
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
    fn signed_claims(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        let token = token.trim();
        if token.is_empty() || token.len() > jwt::MAX_TOKEN_LEN {
            return Err(AuthError::InvalidToken);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(claims) = read(&self.verified).get(&digest) {
            return Ok(claims);
        }
        let claims = Arc::new(jwt::decode(token, &self.verifying_key)?);
        write(&self.verified).insert(digest, Arc::clone(&claims));
        Ok(claims)
    }

    /// Revokes a token, given as the token itself or its `jti`; effective at once for every
    /// verify and v2 handshake. Revoking a revoked token returns its record unchanged.
    ///
    /// A correctly signed token missing from the ledger (issued elsewhere with the same key) is
    /// added to it as revoked; an unknown `jti` is [`AuthError::InvalidToken`].
    pub fn revoke(
        &self,
        token_or_jti: &str,
        reason: Option<&str>,
    ) -> Result<TokenRecord, AuthError> {
        self.revoke_at(token_or_jti, reason, now_secs())
    }

    /// [`Authority::revoke`] as if the clock read `now` (epoch seconds).
    pub fn revoke_at(
        &self,
        token_or_jti: &str,
        reason: Option<&str>,
        now: u64,
    ) -> Result<TokenRecord, AuthError> {
        let input = token_or_jti.trim();
        if input.is_empty() {
            return Err(AuthError::InvalidToken);
        }
        let (jti, claims) = if input.contains('.') {
            let claims = self.signed_claims(input)?;
            (claims.jti.clone(), Some(claims))
        } else {
            (input.to_owned(), None)
        };
        let reason = reason
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());

        let mut stored = self.lock_stored();
        self.merge_from_disk(&mut stored)?;
        let index = match stored.ledger.iter().position(|r| r.jti == jti) {
            Some(index) => index,
            None => {
                let claims = claims.ok_or(AuthError::InvalidToken)?;
                stored.ledger.push(TokenRecord::from_claims(&claims));
                stored.ledger.len() - 1
            }
        };
        if stored.ledger[index].revoked {
            return Ok(stored.ledger[index].clone());
        }
        // Memory first: the revocation holds from here on even if persisting it fails.
        write(&self.revoked).insert(jti.clone());
        write(&self.registry).retain(|_, e| e.jti != jti);
        let record = &mut stored.ledger[index];
        record.revoked = true;
        record.revoked_at = Some(now);
        record.revoke_reason = reason.clone();
        let record = record.clone();
        stored.revocations.push(Revocation {
            jti: jti.clone(),
            revoked_at: now,
            reason,
            expires_at: record.expires_at,
        });
        stored.registry.retain(|_, e| e.jti != jti);
        self.files.save_revocations(&stored.revocations)?;
        self.files.save_registry(&stored.registry)?;
        self.files.save_ledger(&stored.ledger)?;
        tracing::info!(jti = %jti, "token revoked");
        Ok(record)
    }

    /// Revokes `token` (reason `refreshed`) and issues one with the same claims, for `ttl_secs`
    /// or else the original lifetime.
    pub fn refresh(
        &self,
        token: &str,
        ttl_secs: Option<u64>,
    ) -> Result<(String, Claims), AuthError> {
        self.refresh_at(token, ttl_secs, now_secs())
    }

    /// [`Authority::refresh`] as if the clock read `now` (epoch seconds).
    pub fn refresh_at(
        &self,
        token: &str,
        ttl_secs: Option<u64>,
        now: u64,
    ) -> Result<(String, Claims), AuthError> {
        let old = self.verify_shared_at(token, now)?;
        let original_ttl = old.exp.map_or(0, |exp| exp.saturating_sub(old.iat));
        let request = TokenRequest {
            group: old.group.clone(),
            user: old.user.clone(),
            subject: Some(old.sub.clone()),
            actions: old.actions.clone(),
            resources: old.resources.clone(),
            tenants: old.tenants.clone(),
            ttl_secs: Some(ttl_secs.unwrap_or(original_ttl)),
            issued_by: Some(old.issued_by.clone()),
            write_limit: old.limits.write_events,
            keep_alive: old.limits.keep_alive,
            not_before: None,
        };
        // Issue first: a failure then leaves the old token usable rather than neither.
        let issued = self.issue_at(request, now)?;
        self.revoke_at(&old.jti, Some("refreshed"), now)?;
        Ok(issued)
    }

    /// The ledger, oldest first.
    pub fn list(&self) -> Vec<TokenRecord> {
        self.lock_stored().ledger.clone()
    }

    /// Issues the bootstrap token of §10.5 (subject `cli:bootstrap`, every action and
    /// resource) for `ttl_secs` ([`BOOTSTRAP_TTL_SECS`] by default in the CLI; 0 = no expiry).
    pub fn bootstrap(&self, ttl_secs: u64) -> Result<String, AuthError> {
        let (token, _) = self.issue(TokenRequest {
            group: "cli".to_owned(),
            user: "root".to_owned(),
            subject: Some("cli:bootstrap".to_owned()),
            actions: vec!["*.*".to_owned()],
            resources: vec!["*".to_owned()],
            tenants: Vec::new(),
            ttl_secs: Some(ttl_secs),
            issued_by: Some("cli-bootstrap".to_owned()),
            write_limit: None,
            keep_alive: false,
            not_before: None,
        })?;
        Ok(token)
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

    /// Re-reads the state directory and folds in what other processes wrote (tokens issued and
    /// revoked by the CLI or another server). Call it every `revocation_refresh_secs`.
    pub fn reload(&self) -> Result<(), AuthError> {
        let mut stored = self.lock_stored();
        self.merge_from_disk(&mut stored)
    }

    /// Merges the files into `stored` and refreshes the hot-path sets from it.
    fn merge_from_disk(&self, stored: &mut Stored) -> Result<(), AuthError> {
        let on_disk = self.files.load()?;
        stored.merge(on_disk);
        let revoked: HashSet<String> = stored.revocations.iter().map(|r| r.jti.clone()).collect();
        write(&self.registry).clone_from(&stored.registry);
        write(&self.revoked).extend(revoked);
        Ok(())
    }

    fn lock_stored(&self) -> MutexGuard<'_, Stored> {
        self.stored.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A bounded map of verified tokens, forgetting the oldest first.
#[derive(Default)]
struct VerifiedCache {
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

/// Trims, lower-cases, sorts and de-duplicates tenant ids, dropping blank ones.
pub fn normalize_tenants(tenants: &[String]) -> Vec<String> {
    let mut tenants: Vec<String> = tenants
        .iter()
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    tenants.sort();
    tenants.dedup();
    tenants
}

fn trimmed_list(items: Vec<String>) -> Vec<String> {
    items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
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

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

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
