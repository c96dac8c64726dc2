//! The cursors of `listAggregates` and `listEvents` (`eventdbx_core::query::cursor`), as the
//! server decodes a request's `cursor` (a `k:` keyset cursor is base64url JSON inside).
//!
//! Asserts: no panic; a decoded cursor's canonical form (`Display`) decodes to an equal cursor.
#![no_main]

use eventdbx_core::query::cursor::{AggregateCursor, EventCursor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(Some(cursor)) = AggregateCursor::parse(text) {
        let printed = cursor.to_string();
        let again = AggregateCursor::decode(&printed)
            .unwrap_or_else(|err| panic!("canonical form {printed:?} does not decode: {err}"));
        assert_eq!(again, cursor, "canonical form {printed:?}");
    }
    if let Ok(Some(cursor)) = EventCursor::parse(text) {
        let printed = cursor.to_string();
        let again = EventCursor::decode(&printed)
            .unwrap_or_else(|err| panic!("canonical form {printed:?} does not decode: {err}"));
        assert_eq!(again, cursor, "canonical form {printed:?}");
    }
});
