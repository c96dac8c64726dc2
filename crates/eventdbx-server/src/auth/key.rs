//! The token signing key: Ed25519, kept in an owner-only file as base64 PKCS#8 DER (the format
//! of the reference's `auth.private_key`), or taken from `EVENTDBX_AUTH_PRIVATE_KEY`. Servers
//! sharing a database each keep their own key and publish its public half in the
//! `auth/public_keys` control document, so each accepts the tokens of every other.

use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{SigningKey, VerifyingKey};
use eventdbx_store::documents::{update_document, ControlDocuments};
use eventdbx_store::StoreError;
use serde::{Deserialize, Serialize};

use super::state::document_error;
use super::{files, AuthError};

/// The control document of the public keys of the servers sharing a database.
pub(crate) const KEYS_DOCUMENT: &str = "auth/public_keys";

/// One server's public key, as the shared key set lists it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PublicKeyEntry {
    key_id: String,
    /// Base64 of the raw 32-byte Ed25519 public key.
    public_key: String,
}

/// Adds this server's public key (`key_id`, `key`) to the shared key set if it is not there,
/// and returns the set's keys: every server signs with its own key and accepts the tokens of
/// any key in the set.
pub(crate) fn register_public(
    documents: &dyn ControlDocuments,
    key_id: &str,
    key: &VerifyingKey,
) -> Result<Vec<VerifyingKey>, AuthError> {
    let mine = PublicKeyEntry {
        key_id: key_id.to_owned(),
        public_key: STANDARD.encode(key.to_bytes()),
    };
    update_document(documents, KEYS_DOCUMENT, |body| {
        let mut entries = parse_key_set(body)?;
        if entries
            .iter()
            .any(|entry| entry.public_key == mine.public_key)
        {
            return Ok((None, ()));
        }
        entries.push(mine.clone());
        let body = serde_json::to_vec(&entries)
            .map_err(|e| StoreError::storage("cannot encode the public key set", e))?;
        Ok((Some(body), ()))
    })
    .map_err(document_error)?;
    public_keys(documents)
}

/// The keys of the shared key set.
pub(crate) fn public_keys(
    documents: &dyn ControlDocuments,
) -> Result<Vec<VerifyingKey>, AuthError> {
    let read = documents.read(KEYS_DOCUMENT).map_err(document_error)?;
    let entries =
        parse_key_set(read.as_ref().map(|doc| doc.body.as_slice())).map_err(document_error)?;
    entries
        .iter()
        .map(|entry| {
            let bytes: [u8; 32] = STANDARD
                .decode(&entry.public_key)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| malformed(&entry.key_id))?;
            VerifyingKey::from_bytes(&bytes).map_err(|_| malformed(&entry.key_id))
        })
        .collect()
}

fn parse_key_set(body: Option<&[u8]>) -> Result<Vec<PublicKeyEntry>, StoreError> {
    match body {
        None => Ok(Vec::new()),
        Some(bytes) => serde_json::from_slice(bytes)
            .map_err(|e| StoreError::storage("the public key set is not valid JSON", e)),
    }
}

fn malformed(key_id: &str) -> AuthError {
    AuthError::Config(format!(
        "{KEYS_DOCUMENT}: the public key of {key_id} is not an Ed25519 key"
    ))
}

/// DER prefix of a PKCS#8 v1 `PrivateKeyInfo` for Ed25519 (RFC 8410), followed by the 32-byte
/// seed.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// The Ed25519 algorithm identifier content: OID 1.3.101.112.
const ED25519_OID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// Encodes `key` as PKCS#8 v1 DER.
pub(crate) fn to_pkcs8(key: &SigningKey) -> Vec<u8> {
    let mut der = Vec::with_capacity(48);
    der.extend_from_slice(&PKCS8_V1_PREFIX);
    der.extend_from_slice(key.as_bytes());
    der
}

/// Makes a fresh key from the operating system's random source.
pub(crate) fn generate() -> Result<SigningKey, AuthError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| AuthError::Storage(format!("random source unavailable: {e}")))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Parses key text: base64 (standard or URL-safe) of PKCS#8 DER, of a raw 32-byte seed, or of a
/// 64-byte seed-and-public-key pair.
pub(crate) fn parse(text: &str, origin: &str) -> Result<SigningKey, AuthError> {
    let text = text.trim();
    let bytes = STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .or_else(|_| URL_SAFE_NO_PAD.decode(text))
        .map_err(|_| AuthError::Config(format!("{origin}: the signing key is not base64")))?;
    let key = match bytes.len() {
        32 => {
            let mut seed = [0u8; 32];
            seed.copy_from_slice(&bytes);
            SigningKey::from_bytes(&seed)
        }
        64 => {
            let mut pair = [0u8; 64];
            pair.copy_from_slice(&bytes);
            SigningKey::from_keypair_bytes(&pair).map_err(|_| {
                AuthError::Config(format!("{origin}: the key pair's halves do not match"))
            })?
        }
        _ => parse_pkcs8(&bytes).ok_or_else(|| {
            AuthError::Config(format!(
                "{origin}: the signing key is neither an Ed25519 PKCS#8 key nor a 32-byte seed"
            ))
        })?,
    };
    Ok(key)
}

/// Loads the key from `path`, creating it (mode 0600, directory 0700) when the file is missing.
/// Refuses a file that group or others can access.
pub(crate) fn load_or_create(path: &Path) -> Result<SigningKey, AuthError> {
    if let Some(bytes) = files::read_private(path)? {
        let text = String::from_utf8(bytes).map_err(|_| {
            AuthError::Config(format!("{}: the signing key is not text", path.display()))
        })?;
        return parse(&text, &path.display().to_string());
    }
    let key = generate()?;
    let mut text = STANDARD.encode(to_pkcs8(&key));
    text.push('\n');
    files::write_private(path, text.as_bytes())?;
    tracing::info!(path = %path.display(), "created a new token signing key");
    Ok(key)
}

/// A fresh key id, `key-YYYYMMDDHHMMSS` in UTC.
pub(crate) fn new_key_id(now_secs: u64) -> String {
    let timestamp = i64::try_from(now_secs)
        .ok()
        .and_then(|secs| jiff::Timestamp::from_second(secs).ok())
        .unwrap_or(jiff::Timestamp::MAX);
    timestamp.strftime("key-%Y%m%d%H%M%S").to_string()
}

/// Parses an Ed25519 PKCS#8 v1 or v2 (`OneAsymmetricKey`) DER document; a public key inside it
/// must belong to the seed.
fn parse_pkcs8(der: &[u8]) -> Option<SigningKey> {
    let (tag, body, rest) = read_tlv(der)?;
    if tag != 0x30 || !rest.is_empty() {
        return None;
    }
    let (tag, version, body) = read_tlv(body)?;
    if tag != 0x02 || (version != [0] && version != [1]) {
        return None;
    }
    let (tag, algorithm, body) = read_tlv(body)?;
    if tag != 0x30 || algorithm != ED25519_OID {
        return None;
    }
    let (tag, wrapped, mut body) = read_tlv(body)?;
    if tag != 0x04 {
        return None;
    }
    let (tag, seed, rest) = read_tlv(wrapped)?;
    if tag != 0x04 || seed.len() != 32 || !rest.is_empty() {
        return None;
    }
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(seed);
    let key = SigningKey::from_bytes(&bytes);
    while !body.is_empty() {
        let (tag, value, rest) = read_tlv(body)?;
        let public = match tag {
            // [1] IMPLICIT BIT STRING
            0x81 => Some(value),
            // [1] EXPLICIT BIT STRING, as some encoders write it
            0xa1 => match read_tlv(value)? {
                (0x03, inner, []) => Some(inner),
                _ => return None,
            },
            // [0] attributes: not used by Ed25519
            0xa0 => None,
            _ => return None,
        };
        if let Some(public) = public {
            if public.len() != 33 || public[0] != 0 || public[1..] != key.verifying_key().to_bytes()
            {
                return None;
            }
        }
        body = rest;
    }
    Some(key)
}

/// One DER tag-length-value: (tag, value, rest).
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || input.len() < count {
            return None;
        }
        let (len_bytes, rest) = input.split_at(count);
        input = rest;
        len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if input.len() < len {
        return None;
    }
    let (value, rest) = input.split_at(len);
    Some((tag, value, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_formats_utc() {
        // 2024-02-29T13:05:09Z
        assert_eq!(new_key_id(1_709_211_909), "key-20240229130509");
        assert_eq!(new_key_id(0), "key-19700101000000");
    }

    #[test]
    fn pkcs8_round_trip_and_v2() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let der = to_pkcs8(&key);
        assert_eq!(der.len(), 48);
        let parsed = parse(&STANDARD.encode(&der), "test").expect("pkcs8 v1");
        assert_eq!(parsed.to_bytes(), key.to_bytes());

        // v2 as ring writes it: version 1, [1] EXPLICIT BIT STRING public key.
        let mut v2 = vec![0x30, 0x53, 0x02, 0x01, 0x01];
        v2.extend_from_slice(&der[5..]);
        v2.extend_from_slice(&[0xa1, 0x23, 0x03, 0x21, 0x00]);
        v2.extend_from_slice(&key.verifying_key().to_bytes());
        let parsed = parse(&STANDARD.encode(&v2), "test").expect("pkcs8 v2");
        assert_eq!(parsed.to_bytes(), key.to_bytes());

        // A public key of another seed is refused.
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let len = v2.len();
        v2[len - 32..].copy_from_slice(&other.verifying_key().to_bytes());
        assert!(parse(&STANDARD.encode(&v2), "test").is_err());

        let seed = parse(&STANDARD.encode([7u8; 32]), "test").expect("raw seed");
        assert_eq!(seed.to_bytes(), key.to_bytes());
        assert!(parse("not base64!", "test").is_err());
        assert!(parse(&STANDARD.encode([1u8; 40]), "test").is_err());
    }
}
