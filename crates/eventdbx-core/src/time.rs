//! RFC 3339 timestamps and `YYYY-MM-DD` dates: the one parser and the one formatter of the
//! workspace, on `jiff`. Which texts are accepted is written down in `docs/schemas.md`
//! ("Timestamps and dates").
//!
//! `jiff` parses the Temporal grammar, a superset of RFC 3339 (basic format, hour-only offsets,
//! bracketed time zone annotations, missing seconds, …). A text must first have the shape of an
//! RFC 3339 `date-time` (or of a `full-date`), so those extensions stay refused; `jiff` then
//! checks the calendar and does the arithmetic.

use std::time::SystemTime;

use jiff::civil::Date;
use jiff::fmt::temporal::DateTimePrinter;
use jiff::Timestamp;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Formats Unix nanoseconds as `YYYY-MM-DDTHH:MM:SS[.fffffffff]Z`; the fraction is written with
/// nine digits when non-zero, omitted otherwise (the form stored and sent on the wire).
pub fn format_unix_nanos(nanos: u64) -> String {
    // u64 nanoseconds end in 2554, well inside jiff's range (years up to 9999).
    let timestamp =
        Timestamp::from_nanosecond(i128::from(nanos)).expect("u64 nanoseconds are in range");
    let digits = if nanos.is_multiple_of(NANOS_PER_SECOND) {
        0
    } else {
        9
    };
    DateTimePrinter::new()
        .precision(Some(digits))
        .timestamp_to_string(&timestamp)
}

/// The current time in whole seconds, `YYYY-MM-DDTHH:MM:SSZ`: the `created_at` and `updated_at`
/// of schemas and the files `dbx` writes. A clock before 1970 reads as the epoch.
pub fn now_rfc3339() -> String {
    let seconds = Timestamp::try_from(SystemTime::now())
        .map_or(0, Timestamp::as_second)
        .max(0)
        .unsigned_abs();
    format_unix_nanos(seconds.saturating_mul(NANOS_PER_SECOND))
}

/// Seconds since the Unix epoch (rounded down) and the nanoseconds past them of an RFC 3339
/// timestamp, if it is one; any offset is applied.
///
/// A leap second (`:60`) is accepted and read as the second before it.
pub fn parse_rfc3339(text: &str) -> Option<(i64, u32)> {
    let nanos = parse_timestamp(text)?.as_nanosecond();
    let per_second = i128::from(NANOS_PER_SECOND);
    let seconds = i64::try_from(nanos.div_euclid(per_second)).ok()?;
    let fraction = u32::try_from(nanos.rem_euclid(per_second)).ok()?;
    Some((seconds, fraction))
}

/// [`parse_rfc3339`] as Unix milliseconds; `None` as well for times before 1970.
pub fn parse_unix_millis(text: &str) -> Option<u64> {
    parse_unix_nanos(text).map(|nanos| nanos / 1_000_000)
}

/// [`parse_rfc3339`] as Unix nanoseconds; `None` as well for times before 1970 or after 2554.
pub fn parse_unix_nanos(text: &str) -> Option<u64> {
    u64::try_from(parse_timestamp(text)?.as_nanosecond()).ok()
}

/// Days since 1970-01-01 (negative before) of a `YYYY-MM-DD` date, if it is a real date.
pub fn parse_date(text: &str) -> Option<i64> {
    if !is_full_date(text.as_bytes()) {
        return None;
    }
    let date: Date = text.parse().ok()?;
    let epoch = Date::new(1970, 1, 1).ok()?;
    Some(date.duration_since(epoch).as_secs().div_euclid(86_400))
}

fn parse_timestamp(text: &str) -> Option<Timestamp> {
    if !is_date_time(text.as_bytes()) {
        return None;
    }
    text.parse().ok()
}

/// `full-date` of RFC 3339: `YYYY-MM-DD`, digits only (the calendar is jiff's to check).
fn is_full_date(text: &[u8]) -> bool {
    matches!(text, [y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2]
        if [y1, y2, y3, y4, m1, m2, d1, d2].iter().all(|c| c.is_ascii_digit()))
}

/// `date-time` of RFC 3339: `T`, `t` or a space between date and time, a fraction of 1–9
/// digits, `Z`, `z` or an offset of at most 23:59. Checked byte by byte: it runs on every
/// stored timestamp read.
fn is_date_time(text: &[u8]) -> bool {
    let ([date @ .., separator], rest) = text.split_at(text.len().min(11)) else {
        return false;
    };
    if !is_full_date(date) || !matches!(separator, b'T' | b't' | b' ') {
        return false;
    }
    let [h1, h2, b':', m1, m2, b':', s1, s2, rest @ ..] = rest else {
        return false;
    };
    if ![h1, h2, m1, m2, s1, s2].iter().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let rest = match rest {
        [b'.', fraction @ ..] => {
            let digits = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
            if !(1..=9).contains(&digits) {
                return false;
            }
            &fraction[digits..]
        }
        _ => rest,
    };
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            matches!((h1, h2), (b'0' | b'1', b'0'..=b'9') | (b'2', b'0'..=b'3'))
                && matches!(m1, b'0'..=b'5')
                && m2.is_ascii_digit()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_instants() {
        assert_eq!(format_unix_nanos(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_unix_nanos(1_764_237_600_123_456_789),
            "2025-11-27T10:00:00.123456789Z"
        );
        assert_eq!(
            format_unix_nanos(1_764_237_600_100_000_000),
            "2025-11-27T10:00:00.100000000Z"
        );
        assert_eq!(
            format_unix_nanos(951_782_400_000_000_000),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            parse_unix_millis("2025-11-27T10:00:00.123456789Z"),
            Some(1_764_237_600_123)
        );
        assert_eq!(
            parse_unix_millis("2025-11-27T10:00:00Z"),
            Some(1_764_237_600_000)
        );
        assert_eq!(
            parse_unix_millis("2025-11-27T10:00:00.5+00:00"),
            Some(1_764_237_600_500)
        );
        for bad in [
            "",
            "2025-11-27",
            "2025-13-01T00:00:00Z",
            "2025-11-27T10:00:00.Z",
            "x",
        ] {
            assert_eq!(parse_unix_millis(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_rfc3339_date_times_are_accepted() {
        for good in [
            "2025-11-27T10:00:00Z",
            "2025-11-27t10:00:00z",
            "2025-11-27 10:00:00Z",
            "2025-11-27T10:00:00.123456789-05:30",
            "2025-11-27T10:00:00+23:59",
            "0000-01-01T00:00:00Z",
            "2024-02-29T00:00:00Z",
        ] {
            assert!(parse_rfc3339(good).is_some(), "{good}");
        }
        for bad in [
            // Temporal extensions jiff alone would take.
            "20251127T100000Z",
            "2025-11-27T10:00Z",
            "2025-11-27T10:00:00+05",
            "2025-11-27T10:00:00+0530",
            "2025-11-27T10:00:00Z[UTC]",
            "2025-11-27T10:00:00,5Z",
            "+002025-11-27T10:00:00Z",
            // No offset, or one out of range.
            "2025-11-27T10:00:00",
            "2025-11-27T10:00:00+24:00",
            "2025-11-27T10:00:00-00:60",
            // Out-of-range fields and dates that do not exist.
            "2025-11-27T24:00:00Z",
            "2025-11-27T10:60:00Z",
            "2025-02-29T00:00:00Z",
            "2025-04-31T00:00:00Z",
            // Fractions of 0 or 10 digits, surrounding space.
            "2025-11-27T10:00:00.Z",
            "2025-11-27T10:00:00.1234567891Z",
            " 2025-11-27T10:00:00Z",
            "2025-11-27T10:00:00Z\n",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn offsets_and_times_before_1970() {
        assert_eq!(
            parse_rfc3339("1970-01-01T01:00:00.5+01:00"),
            Some((0, 500_000_000))
        );
        assert_eq!(
            parse_rfc3339("1969-12-31T23:59:59.25Z"),
            Some((-1, 250_000_000))
        );
        assert_eq!(parse_unix_nanos("1969-12-31T23:59:59Z"), None);
        assert_eq!(
            parse_unix_millis("2025-11-27T11:00:00+01:00"),
            parse_unix_millis("2025-11-27T10:00:00Z")
        );
        // A leap second reads as the second before it.
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z"),
            parse_rfc3339("2016-12-31T23:59:59Z")
        );
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2000-03-01"), Some(11_017));
        assert_eq!(parse_date("1969-12-31"), Some(-1));
        for bad in [
            "2025-02-29",
            "2025-1-01",
            "20250101",
            "2025-01-01T00:00:00Z",
            "",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn now_is_whole_seconds_in_utc() {
        let now = now_rfc3339();
        assert_eq!(now.len(), "1970-01-01T00:00:00Z".len(), "{now}");
        assert!(parse_unix_nanos(&now).is_some_and(|n| n.is_multiple_of(NANOS_PER_SECOND)));
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(nanos in 0u64..4_102_444_800_000_000_000) {
            prop_assert_eq!(parse_unix_nanos(&format_unix_nanos(nanos)), Some(nanos));
        }
    }
}
