//! Tokens as compact JWS with EdDSA (Ed25519), through `jsonwebtoken`: the header
//! `{"typ":"JWT","alg":"EdDSA","kid":…}`, the [`Claims`] as the payload, each segment base64url
//! without padding (`docs/tokens.md`, "Token format").
//!
//! Here only the structure, the algorithm and the signature are checked. The rules on the claims
//! (issuer, audience, expiry, not-before, issued-at, revocation) are the authority's: they read
//! the caller's clock and the configured skew, and they run on every verify, also for a token
//! whose signature was checked before, so `jsonwebtoken`'s own claim checks stay off.

use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use super::{key, AuthError, Claims};

/// Longest token considered: the largest a v2 handshake can carry.
pub(crate) const MAX_TOKEN_LEN: usize = eventdbx_proto::noise::v2::MAX_TOKEN_LEN;

/// The `typ` a token may carry (it may also carry none).
const TYP: &str = "JWT";

/// The signing key in the forms `jsonwebtoken` takes, prepared once per authority.
pub(crate) struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    pub(crate) fn new(signing_key: &SigningKey) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_ed_der(&key::to_pkcs8(signing_key)),
            decoding: DecodingKey::from_ed_der(&signing_key.verifying_key().to_bytes()),
            validation,
        }
    }

    /// Signs `claims` into a token whose header names `key_id`.
    pub(crate) fn encode(&self, claims: &Claims, key_id: &str) -> Result<String, AuthError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key_id.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| AuthError::Storage(format!("cannot sign token: {e}")))
    }

    /// Checks the structure, the algorithm and the signature of `token`, then decodes its
    /// claims. Every failure is [`AuthError::InvalidToken`].
    pub(crate) fn decode(&self, token: &str) -> Result<Claims, AuthError> {
        self.decode_signed_by(token, &self.decoding)
    }

    /// [`TokenKeys::decode`] of a token signed by another key (another server's, on a shared
    /// database: [`decoding_key`]).
    pub(crate) fn decode_signed_by(
        &self,
        token: &str,
        decoding: &DecodingKey,
    ) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::InvalidToken);
        }
        let data = jsonwebtoken::decode::<Claims>(token, decoding, &self.validation)
            .map_err(|_| AuthError::InvalidToken)?;
        if data.header.typ.as_deref().is_some_and(|typ| typ != TYP) {
            return Err(AuthError::InvalidToken);
        }
        Ok(data.claims)
    }
}

/// The verifying half of another server's key, as [`TokenKeys::decode_signed_by`] takes it.
pub(crate) fn decoding_key(key: &VerifyingKey) -> DecodingKey {
    DecodingKey::from_ed_der(&key.to_bytes())
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    use super::*;
    use crate::auth::Limits;

    /// Issued by the hand-written encoder this module replaced; the integration test
    /// `auth::legacy` checks that it verifies.
    const LEGACY_TOKEN: &str = include_str!("../../tests/it/auth/fixtures/legacy_token.jwt");

    fn sign_raw(header: &str, payload: &str, key: &SigningKey) -> String {
        use ed25519_dalek::Signer;
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature = key.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    #[test]
    fn tokens_are_byte_identical_to_the_previous_encoder() {
        let token = LEGACY_TOKEN.trim();
        let keys = TokenKeys::new(&SigningKey::from_bytes(&[0x42; 32]));
        let claims = keys.decode(token).expect("legacy token decodes");
        assert_eq!(
            keys.encode(&claims, "key-20261206120000").expect("encode"),
            token
        );
    }

    #[test]
    fn typ_other_than_jwt_is_refused() {
        let key = SigningKey::from_bytes(&[5u8; 32]);
        let keys = TokenKeys::new(&key);
        let claims = serde_json::to_string(&sample_claims()).expect("claims serialise");
        let token = keys.encode(&sample_claims(), "kid").expect("encode");
        assert_eq!(keys.decode(&token), Ok(sample_claims()));
        let untyped = sign_raw(r#"{"alg":"EdDSA"}"#, &claims, &key);
        assert_eq!(keys.decode(&untyped), Ok(sample_claims()));
        let other = sign_raw(r#"{"typ":"JOSE","alg":"EdDSA"}"#, &claims, &key);
        assert_eq!(keys.decode(&other), Err(AuthError::InvalidToken));
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(keys.decode(&long), Err(AuthError::InvalidToken));
    }

    fn sample_claims() -> Claims {
        Claims {
            iss: "i".into(),
            aud: "a".into(),
            sub: "s".into(),
            jti: "j".into(),
            iat: 1,
            exp: Some(2),
            nbf: None,
            group: "g".into(),
            user: "u".into(),
            actions: vec!["*".into()],
            resources: Vec::new(),
            issued_by: "cli".into(),
            limits: Limits::default(),
            tenants: Vec::new(),
        }
    }
}
