//! What text the store accepts, on every back-end alike: names, single-
//! and multi-line text, CIDR ranges and RFC 3339 times. Each check has a
//! regular expression that the OpenAPI document publishes for the same
//! field; a test holds the two to the same verdicts.
//!
//! Control characters (Unicode category Cc: C0, DEL and C1) are refused in
//! every text field, because PostgreSQL cannot store NUL at all and the
//! others only ever arrive by mistake or to confuse a log viewer. The
//! exception is multi-line text (descriptions and comment bodies), which
//! may hold tab, line feed and carriage return.

use std::sync::LazyLock;

use super::error::{Result, StoreError};

/// A name: no control characters, no leading or trailing whitespace.
pub const NAME_PATTERN: &str = "^[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]([^\\u0000-\\u001f\\u007f-\\u009f]*[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000])?$";
/// Single-line text: no control characters.
pub const SINGLE_LINE_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// Multi-line text: no control characters but tab, line feed and carriage
/// return.
pub const MULTI_LINE_PATTERN: &str = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$";
/// Multi-line text with at least one character that is not whitespace.
pub const NOT_BLANK_PATTERN: &str = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$";
/// An IPv4 or IPv6 address with an optional prefix length, as written by
/// people (no leading zeros in IPv4 octets or prefixes, no zone ids).
pub const CIDR_PATTERN: &str = concat!(
    "^(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])",
    "(/(3[0-2]|[12]?[0-9]))?",
    "|(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}",
    "|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}",
    "|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}",
    "|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))",
    "(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$"
);

static CIDR: LazyLock<Option<regex::Regex>> = LazyLock::new(|| regex::Regex::new(CIDR_PATTERN).ok());

/// Whether a text field may hold tab, line feed and carriage return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lines {
    /// Titles, names, filters: one line.
    Single,
    /// Descriptions and comment bodies.
    Multi,
}

fn refuse_controls(field: &'static str, value: &str, lines: Lines) -> Result<()> {
    let allowed = |c: char| lines == Lines::Multi && matches!(c, '\t' | '\n' | '\r');
    match value.chars().find(|c| c.is_control() && !allowed(*c)) {
        Some(c) => Err(StoreError::invalid(
            field,
            format!(
                "must not contain control characters (found U+{:04X}){}",
                u32::from(c),
                if lines == Lines::Multi { "; tab and line breaks are allowed" } else { "" }
            ),
        )),
        None => Ok(()),
    }
}

/// Checks a display name: 1–`max` characters, no control characters, no
/// leading or trailing space. Returns its case-insensitive key.
pub(crate) fn check_name(field: &'static str, value: &str, max: usize) -> Result<String> {
    let chars = value.chars().count();
    if chars == 0 {
        return Err(StoreError::invalid(field, "must not be empty"));
    }
    if chars > max {
        return Err(StoreError::invalid(field, format!("is {chars} characters; at most {max} are allowed")));
    }
    refuse_controls(field, value, Lines::Single)?;
    if value.trim() != value {
        return Err(StoreError::invalid(field, "must not start or end with whitespace"));
    }
    Ok(value.to_lowercase())
}

/// Checks text of at most `max` characters.
pub(crate) fn check_text(field: &'static str, value: &str, max: usize, lines: Lines) -> Result<()> {
    let chars = value.chars().count();
    if chars > max {
        return Err(StoreError::invalid(field, format!("is {chars} characters; at most {max} are allowed")));
    }
    refuse_controls(field, value, lines)
}

/// Checks a name given to look an object up: a name with a control
/// character cannot exist, and PostgreSQL would refuse to compare it.
pub(crate) fn check_lookup(field: &'static str, value: &str) -> Result<()> {
    refuse_controls(field, value, Lines::Single)
}

/// Checks that a range is written as [`CIDR_PATTERN`] says.
/// Whether `value` is an address or a network as [`CIDR_PATTERN`] writes it.
pub fn is_cidr(value: &str) -> bool {
    CIDR.as_ref().is_some_and(|re| re.is_match(value))
}

pub(crate) fn check_cidr(value: &str) -> Result<()> {
    match CIDR.as_ref() {
        Some(re) if re.is_match(value) => Ok(()),
        _ => Err(StoreError::invalid(
            "ip_ranges",
            format!(
                "{:?} is not a CIDR range: write ADDRESS or ADDRESS/PREFIX, e.g. 10.1.0.0/16 or 2001:db8::/32",
                value.chars().take(64).collect::<String>()
            ),
        )),
    }
}

/// Pipeline text (titles, incident keys) comes from log lines: control
/// characters are written as `\u{..}` escapes rather than refused, so the
/// incident is kept and every back-end can store it.
pub(crate) fn escape_controls(value: &mut String) {
    if value.chars().any(char::is_control) {
        *value = value
            .chars()
            .map(|c| if c.is_control() { c.escape_unicode().to_string() } else { c.to_string() })
            .collect();
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Milliseconds since the Unix epoch of an RFC 3339 `date-time` (section
/// 5.6: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`, `T` and `Z` in
/// either case, second 60 allowed), the whole of years 0000–9999. `None`
/// for anything else, so what the OpenAPI document calls a `date-time` is
/// exactly what is accepted.
pub fn rfc3339_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0_i64, |n, d| d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0')))
    };
    let at = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if at(i, b".") {
        i += 1;
        let start = i;
        while at(i, b"0123456789") {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        match i - start {
            0 => return None,
            1 => millis *= 100,
            2 => millis *= 10,
            _ => {}
        }
    }
    let offset_minutes = match b.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' { h * 60 + m } else { -(h * 60 + m) }
        }
        _ => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second;
    Some((seconds - offset_minutes * 60) * 1_000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_keyed() {
        assert_eq!(check_name("name", "Ácme Corp", 128).ok().as_deref(), Some("ácme corp"));
        assert!(check_name("name", "", 128).is_err());
        assert!(check_name("name", " x", 128).is_err());
        assert!(check_name("name", "a\u{7}b", 128).is_err());
        assert!(check_name("name", &"é".repeat(128), 128).is_ok());
        assert!(check_name("name", &"é".repeat(129), 128).is_err());
    }

    /// The published patterns and the checks give the same verdict.
    #[test]
    fn patterns_agree_with_the_checks() {
        let samples = [
            "",
            "a",
            "Acme Corp",
            " a",
            "a ",
            "\u{a0}a",
            "a\u{3000}",
            "a\u{2007}b",
            "\u{feff}a",
            "a\u{0}b",
            "a\tb",
            "a\nb",
            "a\r\nb",
            "\n",
            "\t \n",
            "a\u{7f}",
            "a\u{85}",
            "a\u{9f}b",
            "a\u{1b}[31m",
            "é",
            "日本語",
            "x\u{200b}",
        ];
        let re = |p: &str| regex::Regex::new(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        let (name, single, multi, not_blank) =
            (re(NAME_PATTERN), re(SINGLE_LINE_PATTERN), re(MULTI_LINE_PATTERN), re(NOT_BLANK_PATTERN));
        for s in samples {
            assert_eq!(name.is_match(s), check_name("f", s, 1000).is_ok(), "name {s:?}");
            assert_eq!(single.is_match(s), check_text("f", s, 1000, Lines::Single).is_ok(), "single {s:?}");
            assert_eq!(multi.is_match(s), check_text("f", s, 1000, Lines::Multi).is_ok(), "multi {s:?}");
            let body_ok = check_text("f", s, 1000, Lines::Multi).is_ok() && !s.trim().is_empty();
            assert_eq!(not_blank.is_match(s), body_ok, "not blank {s:?}");
        }
    }

    #[test]
    fn cidr_pattern_only_lets_through_what_parses() {
        for ok in [
            "10.1.0.0/16",
            "10.1.2.3",
            "0.0.0.0/0",
            "255.255.255.255/32",
            "2001:db8::/32",
            "::",
            "::/0",
            "::1",
            "1::",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8/128",
            "fe80::1:2",
            "ABCD:ef01::9/64",
        ] {
            assert!(check_cidr(ok).is_ok(), "{ok}");
            assert!(ok.parse::<parsers::Network>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "10.0.0.0/33",
            "010.1.0.0/16",
            "10.1.0.0/016",
            "10.1.0.0/+16",
            " 10.1.0.0/16",
            "10.1.0.0/16 ",
            "10.1.0",
            "::/129",
            "fe80::1%eth0",
            "1:2:3:4:5:6:7:8:9",
            "12345::",
            "10.1.0.0/16\u{0}",
        ] {
            assert!(check_cidr(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_ms("1970-01-01t00:00:01.5z"), Some(1_500));
        assert_eq!(rfc3339_ms("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(rfc3339_ms("1969-12-31T23:59:59.999999-00:00"), Some(-1));
        assert_eq!(rfc3339_ms("2026-11-22T10:15:42Z"), Some(1_795_342_542_000));
        assert_eq!(rfc3339_ms("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
        assert!(rfc3339_ms("9999-12-31T23:59:60-23:59").is_some());
        assert!(rfc3339_ms("0000-01-01T00:00:00+23:59").is_some());
        for bad in [
            "",
            "yesterday",
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-22 10:15:42Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T10:15:42",
            "2026-11-22T10:15:42.Z",
            "2026-11-22T10:15:42+0100",
            "2026-11-22T10:15:42+24:00",
            "2026-11-22T10:15:42Z ",
            "+2026-11-22T10:15:42Z",
        ] {
            assert_eq!(rfc3339_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pipeline_text_is_escaped_not_refused() {
        let mut s = String::from("user=ro\u{0}ot\u{1b}");
        escape_controls(&mut s);
        assert_eq!(s, "user=ro\\u{0}ot\\u{1b}");
    }
}
