//! Revocation and refresh (`docs/tokens.md`, "Revoking and refreshing") and the ledger listing:
//! each mutation holds the stored state across its file writes, after merging what other
//! processes wrote.

use eventdbx_store::documents::MAX_DOCUMENT_RACES;

use super::claims::{Claims, TokenRecord};
use super::issue::TokenRequest;
use super::state::{Change, Revocation};
use super::{lost_too_often, now_secs, write, AuthError, Authority};

impl Authority {
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
        for _ in 0..MAX_DOCUMENT_RACES {
            self.merge_from_disk(&mut stored)?;
            let merged = stored.clone();
            let index = match stored.ledger.iter().position(|r| r.jti == jti) {
                Some(index) => index,
                None => {
                    let claims = claims.clone().ok_or(AuthError::InvalidToken)?;
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
            // The token's PSK stays, apart, until the token expires: a v2 handshake with it can
            // then complete and be told that it was revoked.
            let retired: Vec<_> = stored
                .registry
                .iter()
                .filter(|(_, e)| e.jti == jti)
                .map(|(id, e)| (*id, e.clone()))
                .collect();
            stored
                .revoked_psks
                .retain(|_, e| e.expires_at.is_none_or(|exp| exp > now));
            stored.revoked_psks.extend(retired);
            write(&self.revoked_psks).clone_from(&stored.revoked_psks);
            let record = &mut stored.ledger[index];
            record.revoked = true;
            record.revoked_at = Some(now);
            record.revoke_reason = reason.clone();
            let record = record.clone();
            stored.revocations.push(Revocation {
                jti: jti.clone(),
                revoked_at: now,
                reason: reason.clone(),
                expires_at: record.expires_at,
            });
            stored.registry.retain(|_, e| e.jti != jti);
            if self.files.save(&stored, Change::Revoked)? {
                tracing::info!(jti = %jti, "token revoked");
                return Ok(record);
            }
            // Another server wrote the shared state first: start again from its state.
            *stored = merged;
        }
        Err(lost_too_often())
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
}
