//! The domain-separated event hash, the Merkle root over an aggregate's events, and `verify`.
//!
//! The construction is ours, written out byte by byte in `docs/storage.md`,
//! section "Event hash and Merkle root", together with known-answer vectors that the tests check.
//!
//! - [`EventHashInput`] holds exactly the hashed fields, so a store can hash an event without
//!   building an [`Event`]; [`EventHashInput::encode`] is the preimage and
//!   [`EventHashInput::digest`] its SHA-256.
//! - The tree is RFC 6962's: leaves are event hashes (whose preimage starts with `0x00`), inner
//!   nodes are `SHA-256(0x01 || left || right)`, an odd node is promoted, never duplicated.
//!   [`merkle_root`] computes it in one go; [`MerkleBuilder`] keeps it up to date in O(log n) per
//!   appended event.
//! - [`verify`] recomputes every hash and root of a stored history and names the first mismatch.
//!
//! ```
//! use eventdbx_core::merkle::{to_hex, MerkleBuilder, EMPTY_ROOT_HEX};
//! let builder = MerkleBuilder::new();
//! assert_eq!(to_hex(&builder.root()), EMPTY_ROOT_HEX);
//! ```

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::error::{CoreError, Result};

/// A raw SHA-256 digest: an event hash or a Merkle tree node.
pub type Digest = [u8; 32];

/// The domain tag that opens every event-hash preimage (after the leaf prefix). A new encoding
/// gets a new tag, so hashes of different encodings never collide.
pub const EVENT_HASH_DOMAIN: &str = "eventdbx/event/v1";

/// First byte of an event-hash preimage: event hashes are the tree's leaves (RFC 6962 leaf prefix).
pub const LEAF_PREFIX: u8 = 0x00;

/// First byte of an inner node's preimage (RFC 6962 node prefix).
pub const NODE_PREFIX: u8 = 0x01;

/// The root of an empty history: SHA-256 of the empty input (RFC 6962 `MTH({})`).
pub const EMPTY_ROOT_HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The fields of an event that its hash covers, borrowed from wherever the caller keeps them.
///
/// Everything that is stored about an event is covered except `hash` and `merkle_root`
/// themselves. The tenant is covered too, although it is not in the event JSON, so an event
/// copied into another tenant no longer verifies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventHashInput<'a> {
    /// Tenant id (normalised, as the store keys it).
    pub tenant: &'a str,
    /// Aggregate type.
    pub aggregate_type: &'a str,
    /// Aggregate id.
    pub aggregate_id: &'a str,
    /// 1-based version of the event within its aggregate.
    pub version: u64,
    /// Normalised event type (dots replaced by `_`).
    pub event_type: &'a str,
    /// The client's event type, when stored.
    pub event_type_raw: Option<&'a str>,
    /// The event payload; hashed as canonical JSON.
    pub payload: &'a Value,
    /// The request's `metadataJson`, when stored; hashed as canonical JSON.
    pub extensions: Option<&'a Map<String, Value>>,
    /// The event note, when stored (`Some("")` differs from `None`).
    pub note: Option<&'a str>,
    /// Snowflake event id.
    pub event_id: u64,
    /// `metadata.created_at` exactly as stored (the text, not a parsed time, so that formatting
    /// cannot change between writing and verifying).
    pub created_at: &'a str,
    /// `metadata.issued_by.group`; `None` when `issued_by` is `null`.
    pub issued_by_group: Option<&'a str>,
    /// `metadata.issued_by.user`; `None` when `issued_by` is `null`.
    pub issued_by_user: Option<&'a str>,
}

impl EventHashInput<'_> {
    /// The exact bytes that are hashed (see `docs/storage.md`).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.push(LEAF_PREFIX);
        put_bytes(&mut out, EVENT_HASH_DOMAIN.as_bytes());
        put_bytes(&mut out, self.tenant.as_bytes());
        put_bytes(&mut out, self.aggregate_type.as_bytes());
        put_bytes(&mut out, self.aggregate_id.as_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        put_bytes(&mut out, self.event_type.as_bytes());
        put_optional(&mut out, self.event_type_raw.map(str::as_bytes));
        put_bytes(&mut out, canonical_json(self.payload).as_bytes());
        let extensions = self.extensions.map(canonical_json_object);
        put_optional(&mut out, extensions.as_deref().map(str::as_bytes));
        put_optional(&mut out, self.note.map(str::as_bytes));
        out.extend_from_slice(&self.event_id.to_be_bytes());
        put_bytes(&mut out, self.created_at.as_bytes());
        put_optional(&mut out, self.issued_by_group.map(str::as_bytes));
        put_optional(&mut out, self.issued_by_user.map(str::as_bytes));
        out
    }

    /// The event hash: SHA-256 of [`encode`](Self::encode).
    pub fn digest(&self) -> Digest {
        Sha256::digest(self.encode()).into()
    }
}

/// `lp(b)`: the length as u32 big-endian, then the bytes, so no two field lists encode alike.
fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Every hashed field is bounded far below 4 GiB by validation (payload 256 KiB, metadata
    // 64 KiB, names 128 bytes); a longer one would be a store bug, and saturating would make it
    // ambiguous, so refuse loudly.
    let len = u32::try_from(bytes.len()).expect("hashed field shorter than 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// `opt(x)`: `0x00` for absent, `0x01 || lp(x)` for present (so absent differs from empty).
fn put_optional(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => out.push(0x00),
        Some(bytes) => {
            out.push(0x01);
            put_bytes(out, bytes);
        }
    }
}

/// Canonical JSON: compact (no whitespace), object members sorted by the UTF-8 bytes of their
/// keys at every depth, strings, numbers and literals written as `serde_json` writes them.
///
/// Sorting makes the text independent of member order, which `serde_json`'s `preserve_order`
/// would otherwise carry into the hash. Numbers keep their kind: `1` and `1.0` are different
/// texts, as they are different stored values (state keeps JSON types).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(&mut out, value);
    out
}

fn canonical_json_object(map: &Map<String, Value>) -> String {
    let mut out = String::new();
    write_canonical_object(&mut out, map);
    out
}

fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => write_canonical_object(out, map),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        // Scalars have a single compact form; `Value`'s Display is `serde_json`'s compact writer.
        scalar => {
            let _ = write!(out, "{scalar}");
        }
    }
}

fn write_canonical_object(out: &mut String, map: &Map<String, Value>) {
    // `str`'s ordering is byte-wise, i.e. by UTF-8 bytes.
    let mut members: Vec<(&String, &Value)> = map.iter().collect();
    members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push('{');
    for (i, (key, value)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}", Value::String(key.clone()));
        out.push(':');
        write_canonical(out, value);
    }
    out.push('}');
}

/// An inner tree node: `SHA-256(0x01 || left || right)` over the raw 32-byte children.
pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update([NODE_PREFIX]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of an empty history, SHA-256 of the empty input.
pub fn empty_root() -> Digest {
    Sha256::digest([]).into()
}

/// The Merkle root of event hashes in version order (RFC 6962 `MTH`).
///
/// No events: [`empty_root`]; one: the event hash itself; `n > 1`:
/// `node(root(first k), root(rest))` with `k` the largest power of two below `n`.
pub fn merkle_root(leaves: &[Digest]) -> Digest {
    match leaves {
        [] => empty_root(),
        [leaf] => *leaf,
        _ => {
            let split = largest_power_of_two_below(leaves.len());
            node_hash(
                &merkle_root(&leaves[..split]),
                &merkle_root(&leaves[split..]),
            )
        }
    }
}

fn largest_power_of_two_below(n: usize) -> usize {
    debug_assert!(n > 1);
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// Incremental Merkle root: append event hashes one at a time and read the root after each.
///
/// Keeps RFC 6962's right frontier: the roots of the perfect subtrees that make up the tree,
/// largest first, at most `log2(n) + 1` of them. Appending merges equal-sized subtrees (O(log n));
/// the root folds the frontier from the right (O(log n)). Equal to [`merkle_root`] for every
/// prefix of a history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MerkleBuilder {
    /// `(leaf count, subtree root)`, sizes strictly decreasing powers of two.
    frontier: Vec<(u64, Digest)>,
    len: u64,
}

impl MerkleBuilder {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves appended so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when no leaf was appended.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The right frontier, `(leaf count, subtree root)` largest first: what a store persists
    /// beside an aggregate so the next append costs O(log n) without reading old events.
    pub fn frontier(&self) -> &[(u64, Digest)] {
        &self.frontier
    }

    /// Restores a builder from a persisted [`frontier`](Self::frontier). Fails unless the sizes
    /// are strictly decreasing powers of two (the only shape a real history produces).
    pub fn from_frontier(frontier: Vec<(u64, Digest)>) -> Result<Self> {
        let mut len: u64 = 0;
        let mut previous = u64::MAX;
        for &(size, _) in &frontier {
            if !size.is_power_of_two() || size >= previous {
                return Err(CoreError::IntegrityViolation(
                    "stored merkle frontier is malformed".into(),
                ));
            }
            previous = size;
            len += size;
        }
        Ok(MerkleBuilder { frontier, len })
    }

    /// Appends the next event hash.
    pub fn push(&mut self, leaf: Digest) {
        let mut size = 1;
        let mut digest = leaf;
        while let Some(&(last_size, last)) = self.frontier.last() {
            if last_size != size {
                break;
            }
            self.frontier.pop();
            digest = node_hash(&last, &digest);
            size *= 2;
        }
        self.frontier.push((size, digest));
        self.len += 1;
    }

    /// The root of the leaves appended so far.
    pub fn root(&self) -> Digest {
        let mut subtrees = self.frontier.iter().rev();
        let Some(&(_, mut root)) = subtrees.next() else {
            return empty_root();
        };
        // The smaller subtrees on the right pair up first, exactly as MTH splits at the largest
        // power of two.
        for (_, left) in subtrees {
            root = node_hash(left, &root);
        }
        root
    }
}

/// Lowercase hex (64 characters for a digest).
pub fn to_hex(digest: &Digest) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// `metadata.issued_by`: the group and user of the token that wrote the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedBy {
    /// Token group.
    pub group: String,
    /// Token user.
    pub user: String,
}

/// The `metadata` object of an event (`docs/protocol.md`, "JSON shapes").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// Snowflake id, a decimal string in JSON.
    #[serde(with = "decimal_u64")]
    pub event_id: u64,
    /// Commit time, RFC 3339 UTC text as stored.
    pub created_at: String,
    /// Writer of the event; `null` for events the server writes itself. Always present in JSON.
    pub issued_by: Option<IssuedBy>,
    /// Event note; omitted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A stored event in the JSON shape of `docs/protocol.md`, "JSON shapes" (same key order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// Normalised event type.
    pub event_type: String,
    /// The client's event type; omitted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type_raw: Option<String>,
    /// Event payload.
    pub payload: Value,
    /// The request's `metadataJson` verbatim; omitted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Map<String, Value>>,
    /// Event id, time, writer, note.
    pub metadata: EventMetadata,
    /// 1-based version.
    pub version: u64,
    /// Lowercase hex event hash.
    pub hash: String,
    /// Lowercase hex Merkle root of the aggregate after this event.
    pub merkle_root: String,
}

impl Event {
    /// The hashed fields of this event, in `tenant`.
    pub fn hash_input<'a>(&'a self, tenant: &'a str) -> EventHashInput<'a> {
        EventHashInput {
            tenant,
            aggregate_type: &self.aggregate_type,
            aggregate_id: &self.aggregate_id,
            version: self.version,
            event_type: &self.event_type,
            event_type_raw: self.event_type_raw.as_deref(),
            payload: &self.payload,
            extensions: self.extensions.as_ref(),
            note: self.metadata.note.as_deref(),
            event_id: self.metadata.event_id,
            created_at: &self.metadata.created_at,
            issued_by_group: self.metadata.issued_by.as_ref().map(|i| i.group.as_str()),
            issued_by_user: self.metadata.issued_by.as_ref().map(|i| i.user.as_str()),
        }
    }
}

/// Recomputes an aggregate's event hashes and Merkle roots one stored event at a time, so a
/// store can check events as it reads them, without collecting them first.
///
/// It runs in two stages that may run on two threads (a long history verifies about twice as
/// fast that way): [`EventChecker`] (sequence, identity, the event hash: needs the decoded
/// event) and [`RootChecker`] (the Merkle root stored after each event: needs only the hashes).
/// [`Verifier::split`] gives the two; [`Verifier::push`] runs both in order.
#[derive(Debug, Clone)]
pub struct Verifier {
    events: EventChecker,
    roots: RootChecker,
}

/// The first stage of a [`Verifier`]: checks each event's place in the sequence, its aggregate
/// and its hash, and yields the hash (the Merkle leaf).
#[derive(Debug, Clone)]
pub struct EventChecker {
    aggregate_type: String,
    aggregate_id: String,
    checked: u64,
}

/// The second stage of a [`Verifier`]: appends each leaf and checks the root stored after it.
#[derive(Debug, Clone)]
pub struct RootChecker {
    subject: String,
    builder: MerkleBuilder,
}

impl Verifier {
    /// A verifier for the history of one aggregate.
    pub fn new(aggregate_type: &str, aggregate_id: &str) -> Self {
        Verifier {
            events: EventChecker {
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                checked: 0,
            },
            roots: RootChecker {
                subject: format!("{aggregate_type}:{aggregate_id}"),
                builder: MerkleBuilder::new(),
            },
        }
    }

    /// The two stages, to run apart (e.g. on two threads, leaves passed in order).
    pub fn split(self) -> (EventChecker, RootChecker) {
        (self.events, self.roots)
    }

    /// Checks the next stored event: its version, its hash and the root stored after it.
    pub fn push(
        &mut self,
        input: &EventHashInput<'_>,
        stored_hash: &str,
        stored_root: &str,
    ) -> Result<()> {
        let leaf = self.events.check(input, stored_hash)?;
        self.roots.push(leaf, stored_root)
    }

    /// Events checked so far.
    pub fn len(&self) -> u64 {
        self.roots.len()
    }

    /// True before the first event.
    pub fn is_empty(&self) -> bool {
        self.roots.len() == 0
    }

    /// The recomputed root, checked against the aggregate's stored root when given.
    pub fn finish(self, stored_root: Option<&str>) -> Result<String> {
        self.roots.finish(stored_root)
    }
}

impl EventChecker {
    /// Checks the next stored event's version, aggregate and hash; returns its hash.
    pub fn check(&mut self, input: &EventHashInput<'_>, stored_hash: &str) -> Result<Digest> {
        let position = self.checked + 1;
        let subject = || format!("{}:{}", self.aggregate_type, self.aggregate_id);
        if input.version != position {
            return Err(CoreError::IntegrityViolation(format!(
                "event {} of {} is out of sequence (expected version {position})",
                input.version,
                subject()
            )));
        }
        let hash = input.digest();
        if input.aggregate_type != self.aggregate_type
            || input.aggregate_id != self.aggregate_id
            || !hex_matches(&hash, stored_hash)
        {
            return Err(CoreError::IntegrityViolation(format!(
                "event {position} of {} does not match its hash",
                subject()
            )));
        }
        self.checked = position;
        Ok(hash)
    }
}

impl RootChecker {
    /// Appends the next leaf and checks the root stored after it.
    pub fn push(&mut self, leaf: Digest, stored_root: &str) -> Result<()> {
        self.builder.push(leaf);
        let root = self.builder.root();
        if !hex_matches(&root, stored_root) {
            return Err(CoreError::IntegrityViolation(format!(
                "merkle root mismatch for {} at event {} (stored {stored_root}, computed {})",
                self.subject,
                self.builder.len(),
                to_hex(&root)
            )));
        }
        Ok(())
    }

    /// Leaves appended so far.
    pub fn len(&self) -> u64 {
        self.builder.len()
    }

    /// True before the first leaf.
    pub fn is_empty(&self) -> bool {
        self.builder.is_empty()
    }

    /// The recomputed root, checked against the aggregate's stored root when given.
    pub fn finish(self, stored_root: Option<&str>) -> Result<String> {
        let root = to_hex(&self.builder.root());
        match stored_root {
            Some(stored) if stored != root => Err(CoreError::IntegrityViolation(format!(
                "merkle root mismatch for {} (stored {stored}, computed {root})",
                self.subject
            ))),
            _ => Ok(root),
        }
    }
}

/// Whether `text` is the lowercase hex of `digest` (no allocation).
fn hex_matches(digest: &Digest, text: &str) -> bool {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let text = text.as_bytes();
    text.len() == 64
        && digest.iter().enumerate().all(|(i, byte)| {
            text[2 * i] == DIGITS[usize::from(byte >> 4)]
                && text[2 * i + 1] == DIGITS[usize::from(byte & 0x0f)]
        })
}

/// Recomputes the hashes and roots of one aggregate's stored history and returns the root.
///
/// `events` must be the aggregate's whole history in version order; `stored_root` is the root the
/// aggregate record holds, if the caller has one. Checks, event by event: the event belongs to
/// `<aggregate_type>:<aggregate_id>` and its version is its position (1-based), then its `hash`,
/// then its `merkle_root` (the root after it); finally `stored_root`. The first failure is an
/// [`CoreError::IntegrityViolation`]:
/// - `event <version> of <type>:<id> does not match its hash` (the spec's message; also used
///   when the event names another aggregate);
/// - `event <version> of <type>:<id> is out of sequence (expected version <n>)`;
/// - `merkle root mismatch for <type>:<id> at event <version> (stored <a>, computed <b>)`;
/// - `merkle root mismatch for <type>:<id> (stored <a>, computed <b>)` (the spec's message).
pub fn verify(
    tenant: &str,
    aggregate_type: &str,
    aggregate_id: &str,
    events: &[Event],
    stored_root: Option<&str>,
) -> Result<String> {
    let mut verifier = Verifier::new(aggregate_type, aggregate_id);
    for event in events {
        verifier.push(&event.hash_input(tenant), &event.hash, &event.merkle_root)?;
    }
    verifier.finish(stored_root)
}

/// Serde for a u64 written as a decimal string (Snowflake ids exceed JavaScript's safe integers).
pub(crate) mod decimal_u64 {
    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;
    use std::fmt;

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        deserializer.deserialize_any(DecimalVisitor)
    }

    struct DecimalVisitor;

    impl Visitor<'_> for DecimalVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an unsigned 64-bit integer as a decimal string")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            // `u64::from_str` accepts a leading `+`; a canonical id never has one.
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(E::invalid_value(de::Unexpected::Str(v), &self));
            }
            v.parse()
                .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
        }

        // Tolerated on input so that hand-written JSON with a numeric id still loads.
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
    }
}
