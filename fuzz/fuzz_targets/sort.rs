//! The sort grammar (`eventdbx_core::query::sort`), as the server parses a request's `sort`.
//!
//! Asserts: no panic; the canonical form (`Display`) of a parsed sort parses back to an equal
//! one; the effective directives end with the type and the id.
#![no_main]

use eventdbx_core::query::sort::SortSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(sort) = SortSpec::parse(text) else {
        return;
    };
    let printed = sort.to_string();
    let again = SortSpec::parse(&printed)
        .unwrap_or_else(|err| panic!("canonical form {printed:?} does not parse: {err}"));
    assert_eq!(again, sort, "canonical form {printed:?}");
    assert!(sort.effective().len() >= sort.directives().len());
    let _ = sort.single_timestamp();
    let _ = sort.leading_timestamp();
});
