//! RFC 3339 timestamps in UTC with a `Z` suffix and up to nanosecond fractions, without a clock
//! (the caller passes the time) and without a date library.

/// Formats Unix nanoseconds as `YYYY-MM-DDTHH:MM:SS[.fffffffff]Z`; the fraction is written with
/// nine digits when non-zero, omitted otherwise.
pub fn format_unix_nanos(nanos: u64) -> String {
    let secs = nanos / 1_000_000_000;
    let fraction = nanos % 1_000_000_000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    if fraction == 0 {
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{fraction:09}Z")
    }
}

/// Parses a UTC RFC 3339 timestamp (`Z` or `+00:00`, optional fraction of 1–9 digits) into
/// Unix milliseconds. Returns `None` for anything else; only times after 1970 are supported.
pub fn parse_unix_millis(text: &str) -> Option<u64> {
    parse_unix_nanos(text).map(|nanos| nanos / 1_000_000)
}

/// Like [`parse_unix_millis`], in nanoseconds.
pub fn parse_unix_nanos(text: &str) -> Option<u64> {
    let text = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix('z'))
        .or_else(|| text.strip_suffix("+00:00"))?;
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut date_parts = date.splitn(3, '-');
    let year: u64 = digits(date_parts.next()?, 4)?;
    let month: u64 = digits(date_parts.next()?, 2)?;
    let day: u64 = digits(date_parts.next()?, 2)?;
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (time, None),
    };
    let mut clock_parts = clock.splitn(3, ':');
    let hour: u64 = digits(clock_parts.next()?, 2)?;
    let minute: u64 = digits(clock_parts.next()?, 2)?;
    let second: u64 = digits(clock_parts.next()?, 2)?;
    if !(1..=12).contains(&month) || day == 0 || day > 31 || hour > 23 || minute > 59 || second > 60
    {
        return None;
    }
    let nanos = match fraction {
        None => 0,
        Some(f) if (1..=9).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit()) => {
            f.parse::<u64>().ok()? * 10u64.pow(9 - f.len() as u32)
        }
        Some(_) => return None,
    };
    let days = days_from_civil(year, month, day)?;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

fn digits(text: &str, len: usize) -> Option<u64> {
    (text.len() == len && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok())?
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's civil-from-days algorithm.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`]; `None` before 1970.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let year = if month <= 2 {
        year.checked_sub(1)?
    } else {
        year
    };
    let era = year / 400;
    let yoe = year - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
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

    proptest! {
        #[test]
        fn format_then_parse_is_identity(nanos in 0u64..4_102_444_800_000_000_000) {
            prop_assert_eq!(parse_unix_nanos(&format_unix_nanos(nanos)), Some(nanos));
        }
    }
}
