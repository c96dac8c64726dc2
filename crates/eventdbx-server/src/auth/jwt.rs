//! Compact JWS with EdDSA (Ed25519): `base64url(header).base64url(claims).base64url(signature)`,
//! no padding, the signature over the first two segments as ASCII.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::{AuthError, Claims};

/// The only algorithm accepted.
const ALG: &str = "EdDSA";
/// Longest token considered: the largest a v2 handshake can carry.
pub(crate) const MAX_TOKEN_LEN: usize = eventdbx_proto::noise::v2::MAX_TOKEN_LEN;

#[derive(Serialize, Deserialize)]
struct Header {
    #[serde(default)]
    typ: Option<String>,
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
}

/// Signs `claims` into a token.
pub(crate) fn encode(claims: &Claims, key: &SigningKey, key_id: &str) -> Result<String, AuthError> {
    let header = Header {
        typ: Some("JWT".to_owned()),
        alg: ALG.to_owned(),
        kid: Some(key_id.to_owned()),
    };
    let header = serde_json::to_vec(&header)
        .map_err(|e| AuthError::Storage(format!("cannot encode token header: {e}")))?;
    let payload = serde_json::to_vec(claims)
        .map_err(|e| AuthError::Storage(format!("cannot encode token claims: {e}")))?;
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let signature = key.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
    Ok(token)
}

/// Checks the structure, the algorithm and the signature of `token`, then decodes its claims.
/// Every failure is [`AuthError::InvalidToken`].
pub(crate) fn decode(token: &str, key: &VerifyingKey) -> Result<Claims, AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::InvalidToken);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::InvalidToken);
    };
    let header: Header = decode_json(header)?;
    if header.alg != ALG || header.typ.as_deref().is_some_and(|t| t != "JWT") {
        return Err(AuthError::InvalidToken);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| AuthError::InvalidToken)?;
    let signature = Signature::from_slice(&signature).map_err(|_| AuthError::InvalidToken)?;
    let signed_len = token.len() - token.rsplit('.').next().map_or(0, str::len) - 1;
    key.verify_strict(&token.as_bytes()[..signed_len], &signature)
        .map_err(|_| AuthError::InvalidToken)?;
    decode_json(payload)
}

fn decode_json<T: for<'de> Deserialize<'de>>(segment: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::InvalidToken)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::InvalidToken)
}
