//! Text checks used by schema validation: formats, RFC 3339 timestamps, dates, base64, and a
//! small backtracking pattern matcher for the `regex` rule.

use std::cell::Cell;

/// Seconds since the Unix epoch and nanoseconds of an RFC 3339 timestamp, if it is one.
pub fn parse_rfc3339(value: &str) -> Option<(i64, u32)> {
    let bytes = value.as_bytes();
    if bytes.len() < 20 || !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    let days = parse_date(&value[..10])?;
    let time = &value[11..];
    let (hh, mm, ss) = (two(time, 0)?, two(time, 3)?, two(time, 6)?);
    if time.as_bytes().get(2) != Some(&b':') || time.as_bytes().get(5) != Some(&b':') {
        return None;
    }
    if hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let mut rest = &time[8..];
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = fraction[..digits].parse::<u32>().ok()? * 10u32.pow(9 - digits as u32);
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let (oh, om) = (two(rest, 1)?, two(rest, 4)?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    Some((days * 86_400 + hh * 3600 + mm * 60 + ss - offset, nanos))
}

fn two(text: &str, at: usize) -> Option<i64> {
    let digits = text.get(at..at + 2)?;
    if digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date, if it is a real date.
pub fn parse_date(value: &str) -> Option<i64> {
    let b = value.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    if !value[..4].bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let year: i64 = value[..4].parse().ok()?;
    let (month, day) = (two(value, 5)?, two(value, 8)?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month) || day < 1 || day > month_days[(month - 1) as usize] {
        return None;
    }
    // Days from civil (proleptic Gregorian), era-based.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// The bytes of standard (padded or unpadded) base64 text, if it is base64.
pub fn decode_base64(value: &str) -> Option<Vec<u8>> {
    let trimmed = value.trim_end_matches('=');
    if value.len() - trimmed.len() > 2 || trimmed.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in trimmed.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
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

#[derive(Debug, Clone)]
enum ClassItem {
    Range(char, char),
    Digit(bool),
    Word(bool),
    Space(bool),
}

#[derive(Debug, Clone)]
enum Node {
    Char(char),
    Any,
    Class(Vec<ClassItem>, bool),
    Start,
    End,
    Group(Vec<Vec<Node>>),
    Repeat(Box<Node>, usize, Option<usize>),
}

/// A compiled `regex` rule pattern: literals, `.`, classes (`[a-z]`, `[^…]`, `\d\w\s` and their
/// negations), anchors, groups (`(…)`, `(?:…)`), alternation and greedy quantifiers
/// (`* + ? {n} {n,} {n,m}`). A pattern matches when it matches anywhere in the text.
#[derive(Debug, Clone)]
pub struct Pattern(Vec<Vec<Node>>);

/// Backtracking budget, so a pathological pattern cannot stall a write.
const STEP_LIMIT: usize = 1_000_000;

impl Pattern {
    /// Compiles a pattern, or says what is wrong with it.
    pub fn compile(pattern: &str) -> std::result::Result<Self, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut pos = 0;
        let alternatives = parse_alternatives(&chars, &mut pos, 0)?;
        if pos != chars.len() {
            return Err("unbalanced ')'".into());
        }
        Ok(Pattern(alternatives))
    }

    /// Whether the pattern matches somewhere in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        let root = [Node::Group(self.0.clone())];
        let steps = Cell::new(0);
        (0..=chars.len()).any(|start| match_seq(&root, &chars, start, &steps, &mut |_| true))
    }
}

fn parse_alternatives(
    chars: &[char],
    pos: &mut usize,
    depth: usize,
) -> std::result::Result<Vec<Vec<Node>>, String> {
    let mut alternatives = vec![Vec::new()];
    while let Some(&c) = chars.get(*pos) {
        *pos += 1;
        let atom = match c {
            '|' => {
                alternatives.push(Vec::new());
                continue;
            }
            ')' if depth > 0 => {
                *pos -= 1;
                return Ok(alternatives);
            }
            ')' => return Err("unbalanced ')'".into()),
            '(' => {
                if chars.get(*pos..*pos + 2) == Some(&['?', ':']) {
                    *pos += 2;
                }
                let inner = parse_alternatives(chars, pos, depth + 1)?;
                if chars.get(*pos) != Some(&')') {
                    return Err("missing ')'".into());
                }
                *pos += 1;
                Node::Group(inner)
            }
            '.' => Node::Any,
            '^' => Node::Start,
            '$' => Node::End,
            '[' => parse_class(chars, pos)?,
            '\\' => parse_escape(chars, pos)?,
            '*' | '+' | '?' | '{' => return Err(format!("nothing to repeat before '{c}'")),
            other => Node::Char(other),
        };
        let node = parse_quantifier(chars, pos, atom)?;
        alternatives
            .last_mut()
            .expect("alternatives is never empty")
            .push(node);
    }
    if depth > 0 {
        return Err("missing ')'".into());
    }
    Ok(alternatives)
}

fn parse_escape(chars: &[char], pos: &mut usize) -> std::result::Result<Node, String> {
    let c = *chars.get(*pos).ok_or("trailing backslash")?;
    *pos += 1;
    Ok(match escape_class(c) {
        Some(item) => Node::Class(vec![item], false),
        None => Node::Char(escaped_char(c)),
    })
}

fn escape_class(c: char) -> Option<ClassItem> {
    match c {
        'd' => Some(ClassItem::Digit(true)),
        'D' => Some(ClassItem::Digit(false)),
        'w' => Some(ClassItem::Word(true)),
        'W' => Some(ClassItem::Word(false)),
        's' => Some(ClassItem::Space(true)),
        'S' => Some(ClassItem::Space(false)),
        _ => None,
    }
}

fn escaped_char(c: char) -> char {
    match c {
        'n' => '\n',
        't' => '\t',
        'r' => '\r',
        other => other,
    }
}

fn parse_class(chars: &[char], pos: &mut usize) -> std::result::Result<Node, String> {
    let negated = chars.get(*pos) == Some(&'^');
    if negated {
        *pos += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(*pos).ok_or("missing ']'")?;
        *pos += 1;
        if c == ']' && !first {
            return Ok(Node::Class(items, negated));
        }
        first = false;
        let low = if c == '\\' {
            let e = *chars.get(*pos).ok_or("trailing backslash")?;
            *pos += 1;
            if let Some(item) = escape_class(e) {
                items.push(item);
                continue;
            }
            escaped_char(e)
        } else {
            c
        };
        if chars.get(*pos) == Some(&'-') && chars.get(*pos + 1).is_some_and(|&n| n != ']') {
            let mut high = chars[*pos + 1];
            *pos += 2;
            if high == '\\' {
                high = escaped_char(*chars.get(*pos).ok_or("trailing backslash")?);
                *pos += 1;
            }
            if high < low {
                return Err(format!("invalid class range {low}-{high}"));
            }
            items.push(ClassItem::Range(low, high));
        } else {
            items.push(ClassItem::Range(low, low));
        }
    }
}

fn parse_quantifier(
    chars: &[char],
    pos: &mut usize,
    atom: Node,
) -> std::result::Result<Node, String> {
    let (min, max) = match chars.get(*pos) {
        Some('*') => (0, None),
        Some('+') => (1, None),
        Some('?') => (0, Some(1)),
        Some('{') => {
            let close = chars[*pos..]
                .iter()
                .position(|&c| c == '}')
                .ok_or("missing '}'")?;
            let body: String = chars[*pos + 1..*pos + close].iter().collect();
            let number = |s: &str| {
                s.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("bad repeat {{{body}}}"))
            };
            let bounds = match body.split_once(',') {
                None => (number(&body)?, Some(number(&body)?)),
                Some((lo, "")) => (number(lo)?, None),
                Some((lo, hi)) => (number(lo)?, Some(number(hi)?)),
            };
            if bounds.1.is_some_and(|hi| hi < bounds.0) {
                return Err(format!("bad repeat {{{body}}}"));
            }
            *pos += close;
            bounds
        }
        _ => return Ok(atom),
    };
    *pos += 1;
    if matches!(atom, Node::Start | Node::End) {
        return Err("nothing to repeat".into());
    }
    Ok(Node::Repeat(Box::new(atom), min, max))
}

fn class_matches(items: &[ClassItem], negated: bool, c: char) -> bool {
    let hit = items.iter().any(|item| match *item {
        ClassItem::Range(lo, hi) => (lo..=hi).contains(&c),
        ClassItem::Digit(yes) => c.is_ascii_digit() == yes,
        ClassItem::Word(yes) => (c.is_alphanumeric() || c == '_') == yes,
        ClassItem::Space(yes) => c.is_whitespace() == yes,
    });
    hit != negated
}

/// Matches `nodes` at `at`, then calls `rest` with the end position (continuation style, so
/// quantifiers and alternatives backtrack into what follows them).
fn match_seq(
    nodes: &[Node],
    text: &[char],
    at: usize,
    steps: &Cell<usize>,
    rest: &mut dyn FnMut(usize) -> bool,
) -> bool {
    steps.set(steps.get() + 1);
    if steps.get() > STEP_LIMIT {
        return false;
    }
    let Some((node, tail)) = nodes.split_first() else {
        return rest(at);
    };
    match node {
        Node::Char(c) => text.get(at) == Some(c) && match_seq(tail, text, at + 1, steps, rest),
        Node::Any => {
            text.get(at).is_some_and(|&c| c != '\n') && match_seq(tail, text, at + 1, steps, rest)
        }
        Node::Class(items, negated) => {
            text.get(at)
                .is_some_and(|&c| class_matches(items, *negated, c))
                && match_seq(tail, text, at + 1, steps, rest)
        }
        Node::Start => at == 0 && match_seq(tail, text, at, steps, rest),
        Node::End => at == text.len() && match_seq(tail, text, at, steps, rest),
        Node::Group(alternatives) => alternatives.iter().any(|alternative| {
            match_seq(alternative, text, at, steps, &mut |end| {
                match_seq(tail, text, end, steps, rest)
            })
        }),
        Node::Repeat(inner, min, max) => {
            match_repeat(inner, *min, *max, 0, tail, text, at, steps, rest)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn match_repeat(
    inner: &Node,
    min: usize,
    max: Option<usize>,
    count: usize,
    tail: &[Node],
    text: &[char],
    at: usize,
    steps: &Cell<usize>,
    rest: &mut dyn FnMut(usize) -> bool,
) -> bool {
    if max.is_none_or(|m| count < m)
        && match_seq(std::slice::from_ref(inner), text, at, steps, &mut |end| {
            // An empty iteration past the minimum could loop forever; it adds nothing.
            (end != at || count < min)
                && match_repeat(inner, min, max, count + 1, tail, text, end, steps, rest)
        })
    {
        return true;
    }
    count >= min && match_seq(tail, text, at, steps, rest)
}
