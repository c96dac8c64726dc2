//! Tokens (`docs/tokens.md`): Ed25519-signed JWTs, their ledger, revocation and refresh, and the v2
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
//! - `claims`: what a token says ([`Claims`]) and what the ledger keeps of it ([`TokenRecord`]).
//! - `authority`: opening the [`Authority`] (key, state files) and the hot path: verify,
//!   the v2 PSK lookup, reload from disk.
//! - `issue`: [`TokenRequest`] to a signed token, bootstrap tokens.
//! - `revoke`: revocation, refresh and the ledger listing.
//! - `jwt`: the compact EdDSA JWS encoding, on `jsonwebtoken`.
//! - `key`: the signing key file (base64 PKCS#8, mode 0600) and key ids; on a shared database,
//!   the `auth/public_keys` control document of every server's public key.
//! - `state`: `ledger.json`, `revocations.json`, `registry.json`, `revoked_psks.json` in the
//!   state directory, or the `auth/state` control document of a shared database.
//! - `files`: the state and key files, through [`crate::fs`], in this module's error type.
//! - `glob`: `*` / `?` patterns of actions and resources.

mod authority;
mod claims;
mod files;
mod glob;
mod issue;
mod jwt;
mod key;
mod revoke;
mod state;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::VerifyingKey;
use eventdbx_proto::noise::v2::TokenId;

use authority::VerifiedCache;
pub use claims::{Claims, Limits, TokenRecord};
pub use issue::{normalize_tenants, TokenRequest};
use state::{RegistryEntry, StateFiles, Stored};

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
/// TTL of `dbx token bootstrap`.
pub const BOOTSTRAP_TTL_SECS: u64 = 7200;
/// `issued_by` of a token whose request names none.
pub const DEFAULT_ISSUED_BY: &str = "cli";

/// The `[auth]` configuration.
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
    /// The defaults for a data directory.
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

/// Token errors; [`AuthError::code`] is the wire code (`docs/errors.md`) and the display text its
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

/// Key material supplied from outside the data directory (the environment).
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
    /// The signing key as `jsonwebtoken` takes it.
    keys: jwt::TokenKeys,
    verifying_key: VerifyingKey,
    key_id: String,
    files: StateFiles,
    /// Ledger and revocation list; held across the file writes of a mutation.
    stored: Mutex<Stored>,
    /// Revoked `jti`s: read by every verify.
    revoked: RwLock<HashSet<String>>,
    /// token id → PSK of every live issued token: read by every v2 handshake.
    registry: RwLock<HashMap<TokenId, RegistryEntry>>,
    /// token id → PSK of revoked tokens until they expire: read by v2 handshakes for their
    /// verdict.
    revoked_psks: RwLock<HashMap<TokenId, RegistryEntry>>,
    /// Tokens whose signature has been checked, keyed by SHA-256 of the token.
    verified: RwLock<VerifiedCache>,
    /// On a shared database, the public keys of the other servers: their tokens verify here.
    others: RwLock<Vec<jsonwebtoken::DecodingKey>>,
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

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A mutation of the shared state that kept losing the race to other servers.
fn lost_too_often() -> AuthError {
    AuthError::Storage(format!(
        "{} changed under {} attempts in a row to update it (retry later)",
        state::STATE_DOCUMENT,
        eventdbx_store::documents::MAX_DOCUMENT_RACES
    ))
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
