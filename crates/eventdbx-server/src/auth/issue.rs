//! Issuing tokens (`docs/tokens.md`, "Issuing"): a [`TokenRequest`] becomes signed claims,
//! recorded in the ledger and the v2 registry before the token is handed out.

use eventdbx_proto::noise::v2::{self, TokenId};
use eventdbx_store::documents::MAX_DOCUMENT_RACES;

use super::claims::{Claims, Limits, TokenRecord};
use super::state::{Change, RegistryEntry};
use super::{
    jwt, lost_too_often, now_secs, write, AuthError, Authority, DEFAULT_ISSUED_BY, MIN_TTL_SECS,
};

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

impl Authority {
    /// Issues a token and records it in the ledger and the v2 registry.
    pub fn issue(&self, request: TokenRequest) -> Result<(String, Claims), AuthError> {
        self.issue_at(request, now_secs())
    }

    /// [`Authority::issue`] as if the clock read `now` (epoch seconds).
    pub fn issue_at(&self, request: TokenRequest, now: u64) -> Result<(String, Claims), AuthError> {
        let claims = self.claims_for(request, now)?;
        let token = self.keys.encode(&claims, &self.key_id)?;
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
        for _ in 0..MAX_DOCUMENT_RACES {
            self.merge_from_disk(&mut stored)?;
            stored.ledger.push(TokenRecord::from_claims(&claims));
            stored.registry.insert(token_id, entry.clone());
            let saved = self.files.save(&stored, Change::Issued);
            if !matches!(saved, Ok(true)) {
                stored.ledger.pop();
                stored.registry.remove(&token_id);
            }
            match saved {
                Ok(true) => {
                    drop(stored);
                    write(&self.registry).insert(token_id, entry);
                    tracing::info!(jti = %claims.jti, sub = %claims.sub, "token issued");
                    return Ok((token, claims));
                }
                // Another server wrote the shared state first: merge its tokens, try again.
                Ok(false) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(lost_too_often())
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

    /// Issues the bootstrap token (subject `cli:bootstrap`, every action and
    /// resource) for `ttl_secs` ([`BOOTSTRAP_TTL_SECS`](super::BOOTSTRAP_TTL_SECS) by default
    /// in the CLI; 0 = no expiry).
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
