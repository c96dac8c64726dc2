//! What a token says ([`Claims`], `docs/tokens.md` "Claims") and what the ledger keeps of an
//! issued one ([`TokenRecord`]): never the token itself.

use serde::{Deserialize, Serialize};

use super::{glob, AuthError};

/// The claims of a token, with their JSON names.
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

/// The `limits` claim: stored, never enforced.
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

    /// Authorisation: the action must be allowed and, when given, the resource.
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
    pub(super) fn from_claims(claims: &Claims) -> Self {
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
