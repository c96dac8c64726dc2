//! Text checks used by schema validation: formats, RFC 3339 timestamps and dates (from
//! [`crate::time`]), base64, and the patterns of the `regex` rule.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use regex::{Regex, RegexBuilder};

pub use crate::time::{parse_date, parse_rfc3339};

/// Standard-alphabet base64 as `binary` columns take it: padded or not, and trailing bits that
/// do not fill a byte are ignored.
const BINARY: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The bytes of standard (padded or unpadded) base64 text, if it is base64.
pub fn decode_base64(value: &str) -> Option<Vec<u8>> {
    BINARY.decode(value).ok()
}

/// `local@domain.tld` with no whitespace and non-empty labels.
pub fn is_email(value: &str) -> bool {
    let Some((local, domain)) = value.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && !value.chars().any(char::is_whitespace)
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

/// `scheme://host…` with no whitespace.
pub fn is_url(value: &str) -> bool {
    let Some((scheme, rest)) = value.split_once("://") else {
        return false;
    };
    let mut scheme_chars = scheme.chars();
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    scheme_chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme_chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !host.is_empty()
        && !value.chars().any(char::is_whitespace)
}

/// 12 to 19 digits (spaces and dashes allowed between) passing the Luhn check.
pub fn is_credit_card(value: &str) -> bool {
    let mut digits = Vec::new();
    for c in value.chars() {
        match c {
            '0'..='9' => digits.push(c as u32 - '0' as u32),
            ' ' | '-' => {}
            _ => return false,
        }
    }
    if !(12..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match (i % 2, d * 2) {
            (0, _) => d,
            (_, doubled) if doubled > 9 => doubled - 9,
            (_, doubled) => doubled,
        })
        .sum();
    matches!(sum % 10, 0)
}

const ISO_3166_ALPHA_2: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG \
BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX \
CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN \
GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI \
KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ \
MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR \
PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC \
TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT \
ZA ZM ZW";

/// An assigned ISO 3166-1 alpha-2 code, in upper case.
pub fn is_country_code(value: &str) -> bool {
    value.len() == 2
        && ISO_3166_ALPHA_2
            .split_whitespace()
            .any(|code| code == value)
}

/// `lat,lon` with latitude in [-90, 90] and longitude in [-180, 180].
pub fn is_wgs84(value: &str) -> bool {
    let Some((lat, lon)) = value.split_once(',') else {
        return false;
    };
    let parse = |s: &str| {
        let s = s.trim();
        let plain = !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+'));
        plain.then(|| s.parse::<f64>().ok()).flatten()
    };
    matches!((parse(lat), parse(lon)), (Some(a), Some(o))
        if (-90.0..=90.0).contains(&a) && (-180.0..=180.0).contains(&o))
}

fn words(value: &str, separator: char, upper: bool) -> bool {
    let case_ok = |c: char| {
        c.is_ascii_digit()
            || if upper {
                c.is_ascii_uppercase()
            } else {
                c.is_ascii_lowercase()
            }
    };
    value.split(separator).enumerate().all(|(i, word)| {
        let mut chars = word.chars();
        let first_ok = chars.next().is_some_and(|c| {
            if i == 0 {
                c.is_ascii_alphabetic() && case_ok(c)
            } else {
                case_ok(c)
            }
        });
        first_ok && chars.all(case_ok)
    })
}

/// `camelCase`: a lower-case letter, then letters and digits.
pub fn is_camel_case(value: &str) -> bool {
    let mut chars = value.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase()) && chars.all(|c| c.is_ascii_alphanumeric())
}

/// `PascalCase`: an upper-case letter, then letters and digits.
pub fn is_pascal_case(value: &str) -> bool {
    let mut chars = value.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase()) && chars.all(|c| c.is_ascii_alphanumeric())
}

/// `snake_case`: lower-case words joined by single `_`.
pub fn is_snake_case(value: &str) -> bool {
    words(value, '_', false)
}

/// `kebab-case`: lower-case words joined by single `-`.
pub fn is_kebab_case(value: &str) -> bool {
    words(value, '-', false)
}

/// `UPPER_CASE_SNAKE_CASE`: upper-case words joined by single `_`.
pub fn is_upper_snake_case(value: &str) -> bool {
    words(value, '_', true)
}

/// The most memory one compiled pattern may take. The `regex` crate's default (10 MiB) refuses
/// ordinary rules such as `^\w{1,255}$` (Unicode classes are large); 64 MiB admits them while
/// still bounding what one schema can make the server hold.
pub const PATTERN_SIZE_LIMIT: usize = 64 * 1024 * 1024;

/// A compiled `regex` rule pattern, in the syntax of the `regex` crate (linear-time matching:
/// no backreferences, no look-around). A pattern matches when it matches anywhere in the text.
/// `docs/schemas.md` ("Patterns") says what is accepted.
#[derive(Debug, Clone)]
pub struct Pattern(Regex);

impl Pattern {
    /// Compiles a pattern, or says what is wrong with it.
    pub fn compile(pattern: &str) -> std::result::Result<Self, String> {
        // The syntax tree first, for an error in a few words instead of regex's multi-line report.
        regex_syntax::Parser::new()
            .parse(pattern)
            .map_err(|e| syntax_error(pattern, &e))?;
        let regex = RegexBuilder::new(pattern)
            .size_limit(PATTERN_SIZE_LIMIT)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(limit) => {
                    format!("pattern compiles to more than {limit} bytes")
                }
                other => other.to_string(),
            })?;
        Ok(Pattern(regex))
    }

    /// Whether the pattern matches somewhere in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

fn syntax_error(pattern: &str, error: &regex_syntax::Error) -> String {
    use regex_syntax::ast::ErrorKind;
    let ast = match error {
        regex_syntax::Error::Parse(ast) => ast,
        regex_syntax::Error::Translate(hir) => return hir.kind().to_string(),
        other => return other.to_string(),
    };
    let at = pattern
        .get(ast.span().start.offset..ast.span().end.offset)
        .unwrap_or_default();
    match ast.kind() {
        ErrorKind::GroupUnclosed => "missing ')'".into(),
        ErrorKind::GroupUnopened => "unbalanced ')'".into(),
        ErrorKind::ClassUnclosed => "missing ']'".into(),
        ErrorKind::EscapeUnexpectedEof => "trailing backslash".into(),
        ErrorKind::RepetitionMissing => "nothing to repeat".into(),
        ErrorKind::RepetitionCountInvalid => format!("bad repeat {at}"),
        ErrorKind::ClassRangeInvalid => format!("invalid class range {at}"),
        ErrorKind::UnsupportedBackreference => {
            format!("backreferences ({at}) are not supported")
        }
        ErrorKind::UnsupportedLookAround => "look-around is not supported".into(),
        other => other.to_string(),
    }
}

/// The compiled patterns of one column's `regex` rule, kept beside the rule so that a schema's
/// patterns are compiled once when it is loaded and then shared by every write (clones of the
/// schema share them too). Not part of the schema's value: every two caches compare equal.
#[derive(Clone, Default)]
pub(crate) struct PatternCache(OnceLock<Vec<Pattern>>);

impl PatternCache {
    /// The compiled `patterns`: from the cache when it holds exactly these, otherwise compiled
    /// now (and kept, when the cache was empty). On failure: the first pattern that does not
    /// compile, and why.
    pub(crate) fn compiled<'p>(
        &self,
        patterns: &'p [String],
    ) -> std::result::Result<Cow<'_, [Pattern]>, (&'p str, String)> {
        if let Some(cached) = self.0.get() {
            if cached
                .iter()
                .map(Pattern::as_str)
                .eq(patterns.iter().map(String::as_str))
            {
                return Ok(Cow::Borrowed(cached));
            }
        }
        let compiled = patterns
            .iter()
            .map(|p| Pattern::compile(p).map_err(|e| (p.as_str(), e)))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        match self.0.get() {
            None => Ok(Cow::Borrowed(self.0.get_or_init(|| compiled))),
            Some(_) => Ok(Cow::Owned(compiled)),
        }
    }
}

impl PartialEq for PatternCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for PatternCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PatternCache")
            .field(&self.0.get().map_or(0, Vec::len))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_cache_compiles_once_and_follows_changes() {
        let cache = PatternCache::default();
        assert_eq!(
            cache.compiled(&["(x".to_owned()]).map(|p| p.len()),
            Err(("(x", "missing ')'".to_owned()))
        );
        let patterns = vec!["^a".to_owned(), "b$".to_owned()];
        let first = cache.compiled(&patterns).expect("compiles");
        assert!(matches!(first, Cow::Borrowed(_)));
        let second = cache.compiled(&patterns).expect("cached");
        assert!(matches!(second, Cow::Borrowed(_)));
        assert!(std::ptr::eq(first.as_ptr(), second.as_ptr()));
        let changed = cache.compiled(&["^c".to_owned()]).expect("compiles");
        assert!(matches!(changed, Cow::Owned(_)));
        assert!(changed[0].is_match("cab") && !changed[0].is_match("ab"));
        assert_eq!(cache, PatternCache::default());
    }
}
