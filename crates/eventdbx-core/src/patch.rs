//! RFC 6902 JSON Patch with EventDBX's patch-event semantics (`docs/server.md`, "Patch").
//!
//! Two layers:
//! - A complete RFC 6902 engine ([`parse_operations`], [`apply_operations`]) with all six
//!   operations and RFC 6901 JSON Pointers. It is atomic: it works on a copy, so a failing patch
//!   leaves the caller's document untouched.
//! - [`apply_patch`], the server's `patchEvent` rule: the document is the aggregate's current
//!   (typed) state, only `add`, `replace` and `remove` are accepted, the document root and the
//!   removal of a whole top-level key are rejected, and the recorded event payload holds the whole
//!   post-patch value of every top-level key the patch touched.
//!
//! All errors are [`CoreError::InvalidSchema`] with the spec's messages.
//!
//! ```
//! use eventdbx_core::patch::apply_patch;
//! let state = serde_json::json!({"address": {"street": "1 Main", "zip": "1000"}, "age": 3});
//! let state = state.as_object().expect("object").clone();
//! let out = apply_patch(&state, r#"[{"op":"replace","path":"/address/zip","value":"2000"}]"#)
//!     .expect("patch applies");
//! assert_eq!(
//!     serde_json::Value::Object(out.event_payload),
//!     serde_json::json!({"address": {"street": "1 Main", "zip": "2000"}})
//! );
//! ```

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::error::{CoreError, Result};

/// An RFC 6901 JSON Pointer, held as its unescaped reference tokens.
///
/// The empty pointer (`""`) designates the whole document; `"/"` designates the member whose
/// name is the empty string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JsonPointer {
    tokens: Vec<String>,
}

impl JsonPointer {
    /// Parses a pointer, decoding `~1` to `/` and `~0` to `~`.
    ///
    /// Each escape is decoded once, left to right, so `~01` is the token `~1` (RFC 6901 section 4:
    /// `~1` must not be decoded first). A pointer that is neither empty nor starts with `/`, and a
    /// `~` not followed by `0` or `1`, are errors.
    pub fn parse(text: &str) -> Result<Self> {
        if text.is_empty() {
            return Ok(JsonPointer { tokens: Vec::new() });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(apply_error(format!("invalid JSON pointer '{text}'")));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut token = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    token.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => token.push('~'),
                    Some('1') => token.push('/'),
                    _ => {
                        return Err(apply_error(format!(
                            "invalid escape in JSON pointer '{text}'"
                        )))
                    }
                }
            }
            tokens.push(token);
        }
        Ok(JsonPointer { tokens })
    }

    /// The unescaped reference tokens, outermost first.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// True for the empty pointer, which designates the whole document.
    pub fn is_root(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether `self` is a proper prefix of `other` (used by `move`, which may not move a value
    /// into one of its own children).
    fn is_proper_prefix_of(&self, other: &JsonPointer) -> bool {
        self.tokens.len() < other.tokens.len() && other.tokens.starts_with(&self.tokens)
    }
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for token in &self.tokens {
            // `~` first, so the `~` introduced by `~1` is not escaped again.
            write!(f, "/{}", token.replace('~', "~0").replace('/', "~1"))?;
        }
        Ok(())
    }
}

/// One RFC 6902 operation.
#[derive(Debug, Clone, PartialEq)]
pub enum PatchOperation {
    /// Insert into an array or set an object member.
    Add {
        /// Target location.
        path: JsonPointer,
        /// Value to add.
        value: Value,
    },
    /// Remove the value at `path`, which must exist.
    Remove {
        /// Target location.
        path: JsonPointer,
    },
    /// Replace the value at `path`, which must exist.
    Replace {
        /// Target location.
        path: JsonPointer,
        /// New value.
        value: Value,
    },
    /// Remove the value at `from` and add it at `path`.
    Move {
        /// Source location.
        from: JsonPointer,
        /// Target location.
        path: JsonPointer,
    },
    /// Add a copy of the value at `from` at `path`.
    Copy {
        /// Source location.
        from: JsonPointer,
        /// Target location.
        path: JsonPointer,
    },
    /// Fail unless the value at `path` equals `value` (RFC 6902 section 4.6 equality).
    Test {
        /// Target location.
        path: JsonPointer,
        /// Expected value.
        value: Value,
    },
}

impl PatchOperation {
    /// The operation's name as it appears in `op`.
    pub fn name(&self) -> &'static str {
        match self {
            PatchOperation::Add { .. } => "add",
            PatchOperation::Remove { .. } => "remove",
            PatchOperation::Replace { .. } => "replace",
            PatchOperation::Move { .. } => "move",
            PatchOperation::Copy { .. } => "copy",
            PatchOperation::Test { .. } => "test",
        }
    }

    /// The target location.
    pub fn path(&self) -> &JsonPointer {
        match self {
            PatchOperation::Add { path, .. }
            | PatchOperation::Remove { path }
            | PatchOperation::Replace { path, .. }
            | PatchOperation::Move { path, .. }
            | PatchOperation::Copy { path, .. }
            | PatchOperation::Test { path, .. } => path,
        }
    }
}

/// The result of an EventDBX patch: the aggregate's state after the patch and the payload of the
/// event that records it.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOutcome {
    /// The state after the patch. Equal to the old state merged with `event_payload` (last write
    /// wins per key), because removals of top-level keys are rejected.
    pub new_state: Map<String, Value>,
    /// For every distinct top-level key the patch touched, in order of first touch, its whole
    /// post-patch value.
    pub event_payload: Map<String, Value>,
}

/// Parses a patch document's text, rejecting duplicate object keys at any depth.
///
/// `serde_json` silently keeps the last of duplicate keys, which would turn RFC 6902 A.13's
/// invalid document (`"op"` twice) into a valid `remove`; the RFC requires an error.
pub fn parse_patch_text(patch_json: &str) -> Result<Value> {
    let mut de = serde_json::Deserializer::from_str(patch_json);
    let value = StrictValue::deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v.0))
        .map_err(|e| CoreError::invalid(format!("invalid patch_json: {e}")))?;
    Ok(value)
}

/// Decodes a parsed patch document into RFC 6902 operations (all six).
///
/// Members other than `op`, `path`, `from` and `value` are ignored (RFC 6902 section 4). Errors:
/// `patch_json must be an array of operations`, `patch entry is missing 'op'`,
/// `patch entry is missing 'path'`, `patch entry is missing 'from'`,
/// `patch entry is missing 'value'`, `unsupported patch operation '<op>'`, or
/// `failed to apply patch: invalid JSON pointer ...`.
pub fn parse_operations(patch: &Value) -> Result<Vec<PatchOperation>> {
    let entries = patch
        .as_array()
        .ok_or_else(|| CoreError::invalid("patch_json must be an array of operations"))?;
    entries.iter().map(parse_operation).collect()
}

fn parse_operation(entry: &Value) -> Result<PatchOperation> {
    // A non-object entry has no `op` member either; the spec has no separate message for it.
    let missing = |field: &str| CoreError::invalid(format!("patch entry is missing '{field}'"));
    let object = entry.as_object().ok_or_else(|| missing("op"))?;
    let op = object.get("op").ok_or_else(|| missing("op"))?;
    let op = match op {
        Value::String(s) => s.as_str(),
        other => {
            return Err(CoreError::invalid(format!(
                "unsupported patch operation '{other}'"
            )))
        }
    };
    let pointer = |field: &str| -> Result<JsonPointer> {
        match object.get(field) {
            Some(Value::String(s)) => JsonPointer::parse(s),
            _ => Err(missing(field)),
        }
    };
    let value = || object.get("value").cloned().ok_or_else(|| missing("value"));
    match op {
        "add" => Ok(PatchOperation::Add {
            path: pointer("path")?,
            value: value()?,
        }),
        "remove" => Ok(PatchOperation::Remove {
            path: pointer("path")?,
        }),
        "replace" => Ok(PatchOperation::Replace {
            path: pointer("path")?,
            value: value()?,
        }),
        "move" => Ok(PatchOperation::Move {
            path: pointer("path")?,
            from: pointer("from")?,
        }),
        "copy" => Ok(PatchOperation::Copy {
            path: pointer("path")?,
            from: pointer("from")?,
        }),
        "test" => Ok(PatchOperation::Test {
            path: pointer("path")?,
            value: value()?,
        }),
        other => Err(CoreError::invalid(format!(
            "unsupported patch operation '{other}'"
        ))),
    }
}

/// Applies RFC 6902 operations in order and returns the patched document.
///
/// Atomic: the operations run on a copy, so on error `document` is untouched and no partial
/// result escapes. Errors are `failed to apply patch: <detail>`.
pub fn apply_operations(document: &Value, operations: &[PatchOperation]) -> Result<Value> {
    let mut working = document.clone();
    for (index, operation) in operations.iter().enumerate() {
        apply_one(&mut working, operation).map_err(|detail| {
            apply_error(format!(
                "operation {index} ({} {}): {detail}",
                operation.name(),
                operation.path()
            ))
        })?;
    }
    Ok(working)
}

/// Applies a `patchEvent` patch (`docs/server.md`, "Patch") to an aggregate's current state.
///
/// Checks, in order: the text parses (`invalid patch_json: ...`), it is an array
/// (`patch_json must be an array of operations`), every entry is well formed, has an `op` among
/// `add`/`replace`/`remove` (`unsupported patch operation '<op>'`) and a path other than the root
/// (`patch operations targeting the document root are not supported`); there is at least one
/// operation (`patch must modify at least one path`); the patch applies
/// (`failed to apply patch: ...`); no top-level key of `state` disappeared
/// (`patch removed key '<k>' and removals are not supported`).
///
/// A top-level key that the patch both created and removed again is in neither the new state nor
/// the payload: it was never in the state, so nothing was removed and there is no value to record.
pub fn apply_patch(state: &Map<String, Value>, patch_json: &str) -> Result<PatchOutcome> {
    let document = parse_patch_text(patch_json)?;
    let operations = parse_operations(&document)?;
    for operation in &operations {
        match operation {
            PatchOperation::Add { .. }
            | PatchOperation::Remove { .. }
            | PatchOperation::Replace { .. } => {}
            other => {
                return Err(CoreError::invalid(format!(
                    "unsupported patch operation '{}'",
                    other.name()
                )))
            }
        }
        if operation.path().is_root() {
            return Err(CoreError::invalid(
                "patch operations targeting the document root are not supported",
            ));
        }
    }
    if operations.is_empty() {
        return Err(CoreError::invalid("patch must modify at least one path"));
    }

    let base = Value::Object(state.clone());
    let Value::Object(new_state) = apply_operations(&base, &operations)? else {
        // Root operations were rejected above, so the document stays an object.
        return Err(apply_error("the patched document is not an object"));
    };

    if let Some(removed) = state.keys().find(|k| !new_state.contains_key(*k)) {
        return Err(CoreError::invalid(format!(
            "patch removed key '{removed}' and removals are not supported"
        )));
    }

    let mut event_payload = Map::new();
    for operation in &operations {
        let key = &operation.path().tokens()[0];
        if event_payload.contains_key(key) {
            continue;
        }
        if let Some(value) = new_state.get(key) {
            event_payload.insert(key.clone(), value.clone());
        }
    }
    Ok(PatchOutcome {
        new_state,
        event_payload,
    })
}

/// RFC 6902 section 4.6 equality: numbers compare by numeric value (so `1` equals `1.0`), objects
/// by member set regardless of order, arrays element by element.
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => numbers_equal(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

fn numbers_equal(x: &Number, y: &Number) -> bool {
    // Integers compare exactly (an f64 would round large i64/u64 values together).
    if let (Some(p), Some(q)) = (x.as_i64(), y.as_i64()) {
        return p == q;
    }
    if let (Some(p), Some(q)) = (x.as_u64(), y.as_u64()) {
        return p == q;
    }
    match (x.as_f64(), y.as_f64()) {
        (Some(p), Some(q)) => p == q,
        _ => false,
    }
}

fn apply_error(detail: impl fmt::Display) -> CoreError {
    CoreError::invalid(format!("failed to apply patch: {detail}"))
}

/// Detail of a failed operation; wrapped into `failed to apply patch: ...` by the caller.
type OpResult<T> = std::result::Result<T, String>;

fn apply_one(doc: &mut Value, operation: &PatchOperation) -> OpResult<()> {
    match operation {
        PatchOperation::Add { path, value } => add(doc, path, value.clone()),
        PatchOperation::Remove { path } => remove(doc, path).map(drop),
        PatchOperation::Replace { path, value } => {
            let target = get_mut(doc, path.tokens())?;
            *target = value.clone();
            Ok(())
        }
        PatchOperation::Move { from, path } => {
            if from == path {
                // RFC 6902 section 4.4 still requires `from` to exist.
                return get_mut(doc, from.tokens()).map(drop);
            }
            if from.is_proper_prefix_of(path) {
                return Err(format!("cannot move '{from}' into its own child"));
            }
            let value = remove(doc, from)?;
            add(doc, path, value)
        }
        PatchOperation::Copy { from, path } => {
            let value = get_mut(doc, from.tokens())?.clone();
            add(doc, path, value)
        }
        PatchOperation::Test { path, value } => {
            let actual = get_mut(doc, path.tokens())?;
            if json_equal(actual, value) {
                Ok(())
            } else {
                Err(format!("test failed: value at '{path}' is not {value}"))
            }
        }
    }
}

/// Splits a non-root pointer into its parent tokens and last token.
fn split_last(path: &JsonPointer) -> Option<(&[String], &String)> {
    path.tokens()
        .split_last()
        .map(|(last, parent)| (parent, last))
}

fn add(doc: &mut Value, path: &JsonPointer, value: Value) -> OpResult<()> {
    let Some((parent_tokens, last)) = split_last(path) else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent_tokens)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let index = if last == "-" {
                items.len()
            } else {
                parse_index(last)?
            };
            if index > items.len() {
                return Err(format!("index {index} is out of bounds at '{path}'"));
            }
            items.insert(index, value);
            Ok(())
        }
        _ => Err(format!("parent of '{path}' is not a container")),
    }
}

fn remove(doc: &mut Value, path: &JsonPointer) -> OpResult<Value> {
    let Some((parent_tokens, last)) = split_last(path) else {
        return Err("cannot remove the document root".to_string());
    };
    match get_mut(doc, parent_tokens)? {
        // `shift_remove` keeps the remaining members in order (preserve_order).
        Value::Object(map) => map
            .shift_remove(last)
            .ok_or_else(|| format!("path '{path}' does not exist")),
        Value::Array(items) => {
            let index = parse_index(last)?;
            if index >= items.len() {
                return Err(format!("path '{path}' does not exist"));
            }
            Ok(items.remove(index))
        }
        _ => Err(format!("path '{path}' does not exist")),
    }
}

/// Resolves a location that must exist.
fn get_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> OpResult<&'a mut Value> {
    let mut current = doc;
    for (depth, token) in tokens.iter().enumerate() {
        let next = match current {
            Value::Object(map) => map.get_mut(token),
            Value::Array(items) => match parse_index(token) {
                Ok(index) => items.get_mut(index),
                Err(_) => None,
            },
            _ => None,
        };
        current = next.ok_or_else(|| {
            let prefix = JsonPointer {
                tokens: tokens[..=depth].to_vec(),
            };
            format!("path '{prefix}' does not exist")
        })?;
    }
    Ok(current)
}

/// An array index per RFC 6901: `0` or digits without a leading zero.
fn parse_index(token: &str) -> OpResult<usize> {
    let well_formed = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    if !well_formed {
        return Err(format!("invalid array index '{token}'"));
    }
    token
        .parse()
        .map_err(|_| format!("array index '{token}' is too large"))
}

/// A `serde_json::Value` whose deserialisation fails on duplicate object keys.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<StrictValue, E> {
        Ok(StrictValue(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<StrictValue, E> {
        Ok(StrictValue(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<StrictValue, E> {
        Ok(StrictValue(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<StrictValue, E> {
        Ok(StrictValue(
            Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v)))
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }

    fn visit_none<E: de::Error>(self) -> std::result::Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<StrictValue, D::Error> {
        StrictValue::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<StrictValue, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(StrictValue(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut access: A,
    ) -> std::result::Result<StrictValue, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key '{key}'")));
            }
            let StrictValue(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(StrictValue(Value::Object(map)))
    }
}
