//! The text rules' building blocks: the patterns (on the `regex` crate), date, time and base64
//! helpers; what `docs/schemas.md` promises about them.

use super::*;

#[test]
fn pattern_matcher() {
    let cases = [
        ("abc", "xxabcxx", true),
        ("^abc$", "xabc", false),
        ("^a.c$", "abc", true),
        ("^(ab|cd)+$", "abcdab", true),
        ("^(ab|cd)+$", "abce", false),
        ("^(?:a|b)*c$", "ababc", true),
        ("^[^0-9]+$", "abc", true),
        ("^[^0-9]+$", "ab1", false),
        ("^\\w+@\\w+\\.com$", "me@host.com", true),
        ("^\\d{3}-\\d{2,}$", "123-4", false),
        ("^\\d{3}-\\d{2,}$", "123-45678", true),
        ("^a{2,3}$", "aaaa", false),
        ("^colou?r$", "color", true),
        ("^[a-c-]+$", "a-b", true),
        ("^\\s*$", " \t", true),
        ("^(a*)*b$", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac", false),
    ];
    for (pattern, input, expected) in cases {
        let compiled = Pattern::compile(pattern).expect("pattern compiles");
        assert_eq!(compiled.is_match(input), expected, "{pattern} on {input}");
    }
    for bad in ["(a", "a)", "*a", "[a", "a{2,1}", "[z-a]", "\\"] {
        assert!(Pattern::compile(bad).is_err(), "{bad}");
    }
}

#[test]
fn what_the_regex_crate_cannot_do_is_refused_when_the_schema_loads() {
    let cases = [
        ("(a)\\1", "backreferences (\\1) are not supported"),
        ("a(?=b)", "look-around is not supported"),
        ("(?<!a)b", "look-around is not supported"),
        ("a)", "unbalanced ')'"),
        ("[a", "missing ']'"),
        ("*a", "nothing to repeat"),
        ("a{2,1}", "bad repeat {2,1}"),
        ("[z-a]", "invalid class range z-a"),
        ("\\", "trailing backslash"),
        ("\\y", "unrecognized escape sequence"),
        // Unicode `\w` repeated 5,000 times is past the size a compiled pattern may take.
        (
            "^\\w{1,5000}$",
            "pattern compiles to more than 67108864 bytes",
        ),
    ];
    for (pattern, detail) in cases {
        assert_eq!(
            invalid_set(schema_json(
                json!({"v": {"type": "text", "regex": [pattern]}})
            )),
            format!("invalid schema: field v has an invalid pattern {pattern}: {detail}"),
            "{pattern}"
        );
    }
    // The error names the first bad pattern of the rule.
    assert_eq!(
        invalid_set(schema_json(
            json!({"v": {"type": "text", "regex": ["^a", "(b", "(c"]}})
        )),
        "invalid schema: field v has an invalid pattern (b: missing ')'"
    );
}

#[test]
fn patterns_match_in_linear_time_and_follow_unicode() {
    // Catastrophic for a backtracking engine; answered without a step budget.
    let nested = Pattern::compile("^(a*)*b$").expect("compiles");
    let long = format!("{}c", "a".repeat(100_000));
    assert!(!nested.is_match(&long));
    assert!(nested.is_match(&format!("{}b", "a".repeat(100_000))));
    // `\d`, `\w` and `\s` are Unicode classes; `[0-9]` is the ASCII one.
    assert!(Pattern::compile("^\\d$")
        .expect("compiles")
        .is_match("\u{663}"));
    assert!(!Pattern::compile("^[0-9]$")
        .expect("compiles")
        .is_match("\u{663}"));
    assert!(Pattern::compile("^\\w+$")
        .expect("compiles")
        .is_match("été_1"));
    // Syntax the old matcher did not have: lazy repeats, flags, named groups.
    assert!(Pattern::compile("^(?i)abc$")
        .expect("compiles")
        .is_match("ABC"));
    assert!(Pattern::compile("^(?<y>[0-9]{4})-a+?$")
        .expect("compiles")
        .is_match("2025-aa"));
    assert_eq!(Pattern::compile("^a+$").expect("compiles").as_str(), "^a+$");
    // An ordinary length limit on a Unicode class compiles; the ASCII class stays small where a
    // longer Unicode one would be too large.
    let unicode = Pattern::compile("^\\w{1,255}$").expect("compiles");
    assert!(unicode.is_match("été_1") && !unicode.is_match("a b"));
    let ascii = Pattern::compile("^(?-u:\\w){1,1000}$").expect("compiles");
    assert!(ascii.is_match("abc_1") && !ascii.is_match("été"));
}

#[test]
fn patterns_are_compiled_once_when_the_schema_loads() {
    let schema = with_columns(json!({"v": {"type": "text", "regex": ["^[a-z]+$", "b"]}}));
    let column = &schema.column_types["v"];
    // Two patterns compiled and held by the loaded (and cloned) schema before any write.
    assert!(
        format!("{column:?}").contains("PatternCache(2)"),
        "{column:?}"
    );
    assert_eq!(write(&schema, json!({"v": "abc"})), Ok(()));
    assert_eq!(
        write(&schema, json!({"v": "acd"})),
        Err("schema violation: field v must match pattern b".into())
    );
    // A rule changed after loading is checked as it now reads, not as it was compiled.
    let with_regex = |patterns: &[&str]| {
        let mut changed = schema.clone();
        let column = changed.column_types.get_mut("v").expect("column v");
        column.rules.regex = Some(patterns.iter().map(|p| p.to_string()).collect());
        changed
    };
    assert_eq!(
        write(&with_regex(&["^x"]), json!({"v": "abc"})),
        Err("schema violation: field v must match pattern ^x".into())
    );
    assert_eq!(
        write(&with_regex(&["(x"]), json!({"v": "abc"})),
        Err("schema violation: field v has an invalid pattern (x: missing ')'".into())
    );
}

#[test]
fn binary_columns_take_standard_base64_padded_or_not() {
    assert_eq!(text::decode_base64("aGk="), Some(b"hi".to_vec()));
    assert_eq!(text::decode_base64("aGk"), Some(b"hi".to_vec()));
    assert_eq!(text::decode_base64(""), Some(Vec::new()));
    // Trailing bits that do not fill a byte are ignored, as before.
    assert_eq!(text::decode_base64("aGl"), Some(b"hi".to_vec()));
    for bad in ["a", "aGk==", "aG=k", "a-_b", "aGk ", "===="] {
        assert_eq!(text::decode_base64(bad), None, "{bad}");
    }
}

#[test]
fn text_helpers() {
    assert_eq!(text::parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
    assert_eq!(
        text::parse_rfc3339("1970-01-01T01:00:00.5+01:00"),
        Some((0, 500_000_000))
    );
    assert_eq!(text::parse_rfc3339("2025-11-27T24:00:00Z"), None);
    assert_eq!(text::parse_date("2000-03-01"), Some(11_017));
    assert_eq!(text::decode_base64("aGk"), Some(b"hi".to_vec()));
    assert_eq!(text::decode_base64("a"), None);
}

mod properties {
    use eventdbx_core::schema::text;
    use proptest::prelude::*;

    fn encode(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn base64_decodes_what_was_encoded(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(text::decode_base64(&encode(&bytes)), Some(bytes));
        }

        #[test]
        fn dates_are_consecutive_days(days in 0i64..100_000) {
            // Walk from a known day count back to a date string and parse it again.
            let z = days + 719_468;
            let era = z.div_euclid(146_097);
            let doe = z - era * 146_097;
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let d = doy - (153 * mp + 2) / 5 + 1;
            let m = if mp < 10 { mp + 3 } else { mp - 9 };
            let y = yoe + era * 400 + i64::from(m <= 2);
            let date = format!("{y:04}-{m:02}-{d:02}");
            prop_assert_eq!(text::parse_date(&date), Some(days));
            let stamp = format!("{date}T00:00:00Z");
            prop_assert_eq!(text::parse_rfc3339(&stamp), Some((days * 86_400, 0)));
        }
    }
}
