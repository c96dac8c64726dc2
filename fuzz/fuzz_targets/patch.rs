//! RFC 6902 patches (`eventdbx_core::patch`): the full language applied to any JSON document,
//! and `patchEvent`'s restricted form applied to an aggregate's state.
//!
//! Input: a JSON document on the first line (an object is the state), the patch text after it.
//! Asserts: no panic; every path prints back (`Display`) to the same pointer; a `patchEvent`
//! that succeeds keeps every key of the state, records only values of the new state, and agrees
//! with the general application of the same operations.
#![no_main]

use eventdbx_core::patch::{
    apply_operations, apply_patch, parse_operations, parse_patch_text, JsonPointer, PatchOperation,
};
use eventdbx_fuzz::split_text;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let (document, patch) = split_text(text);
    let document: Value = serde_json::from_str(document).unwrap_or(Value::Null);

    let Ok(parsed) = parse_patch_text(patch) else {
        return;
    };
    let Ok(operations) = parse_operations(&parsed) else {
        return;
    };
    for operation in &operations {
        let mut pointers = vec![operation.path()];
        if let PatchOperation::Move { from, .. } | PatchOperation::Copy { from, .. } = operation {
            pointers.push(from);
        }
        for pointer in pointers {
            let printed = pointer.to_string();
            assert_eq!(
                JsonPointer::parse(&printed).ok().as_ref(),
                Some(pointer),
                "{printed:?}"
            );
        }
    }
    let general = apply_operations(&document, &operations);

    let Value::Object(state) = &document else {
        return;
    };
    let Ok(outcome) = apply_patch(state, patch) else {
        return;
    };
    for key in state.keys() {
        assert!(outcome.new_state.contains_key(key), "key {key:?} removed");
    }
    for (key, value) in &outcome.event_payload {
        assert_eq!(outcome.new_state.get(key), Some(value));
    }
    let expected: Option<Map<String, Value>> = match general {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    };
    assert_eq!(Some(&outcome.new_state), expected.as_ref());
});
