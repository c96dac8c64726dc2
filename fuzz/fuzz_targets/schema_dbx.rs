//! Schema text: the `schema.dbx` authoring format (`eventdbx_core::schema::dbx`), compiled and
//! validated as `dbx schema` and the server do, regex patterns included.
//!
//! Asserts: no panic; a compiled map survives its JSON form (`SchemaMap::from_json` of
//! `to_json` gives an equal map), and compiling again against it changes nothing.
#![no_main]

use eventdbx_core::schema::dbx::compile;
use eventdbx_core::schema::SchemaMap;
use libfuzzer_sys::fuzz_target;

const NOW: &str = "2026-01-02T03:04:05Z";
const LATER: &str = "2026-06-07T08:09:10Z";

fuzz_target!(|bytes: &[u8]| {
    let Ok(source) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(map) = compile(source, None, NOW) else {
        return;
    };
    let json = map.to_json();
    let again = SchemaMap::from_json(&json)
        .unwrap_or_else(|err| panic!("compiled map {json} does not load: {err}"));
    assert_eq!(again, map);
    let recompiled = compile(source, Some(&map), LATER).expect("compiles a second time");
    assert_eq!(recompiled, map, "an unchanged schema was stamped again");
});
