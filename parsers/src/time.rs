//! Event time: an instant plus the UTC offset it was written with.
//!
//! Owns the calendar arithmetic the parsers need on the hot path (civil date
//! to Unix seconds, RFC 3339 rendering) and the per-source time zone used for
//! RFC 3164 timestamps, which carry neither a year nor a zone (SPEC §2).
//! Zone rules (DST) come from `jiff` and its bundled tz database, so results do
//! not depend on the machine's `/usr/share/zoneinfo`.
//!
//! Nothing here reads the wall clock: "now" is always a parameter.

use std::fmt;
use std::str::FromStr;

use jiff::tz::TimeZone;

use crate::error::Error;

const NANOS_PER_SEC: i64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// An instant with the UTC offset of the clock that wrote it.
///
/// Ordering and equality compare the instant first, then the offset, so two
/// renderings of the same instant with different offsets are distinct values
/// but sort next to each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventTime {
    secs: i64,
    nanos: u32,
    offset_secs: i32,
}

impl EventTime {
    /// The Unix epoch in UTC.
    pub const UNIX_EPOCH: EventTime = EventTime { secs: 0, nanos: 0, offset_secs: 0 };

    /// Builds a time from Unix seconds, a sub-second part and a UTC offset.
    /// `nanos` above 999,999,999 is carried into the seconds.
    pub fn from_unix(secs: i64, nanos: u32, offset_secs: i32) -> EventTime {
        let carry = i64::from(nanos / 1_000_000_000);
        EventTime { secs: secs.saturating_add(carry), nanos: nanos % 1_000_000_000, offset_secs }
    }

    /// Builds a UTC time from nanoseconds since the Unix epoch.
    pub fn from_unix_nanos(unix_nanos: i128) -> EventTime {
        let secs = unix_nanos.div_euclid(i128::from(NANOS_PER_SEC));
        let nanos = unix_nanos.rem_euclid(i128::from(NANOS_PER_SEC));
        EventTime {
            secs: i64::try_from(secs).unwrap_or(if secs < 0 { i64::MIN } else { i64::MAX }),
            nanos: u32::try_from(nanos).unwrap_or(0),
            offset_secs: 0,
        }
    }

    /// Builds a UTC time from milliseconds since the Unix epoch.
    pub fn from_unix_millis(millis: i64) -> EventTime {
        EventTime::from_unix_nanos(i128::from(millis) * 1_000_000)
    }

    /// Milliseconds since the Unix epoch (floor).
    pub fn unix_millis(&self) -> i64 {
        self.secs.saturating_mul(1_000).saturating_add(i64::from(self.nanos / 1_000_000))
    }

    /// Seconds since the Unix epoch (floor).
    pub fn unix_secs(&self) -> i64 {
        self.secs
    }

    /// Sub-second nanoseconds, `0..1_000_000_000`.
    pub fn subsec_nanos(&self) -> u32 {
        self.nanos
    }

    /// Nanoseconds since the Unix epoch.
    pub fn unix_nanos(&self) -> i128 {
        i128::from(self.secs) * i128::from(NANOS_PER_SEC) + i128::from(self.nanos)
    }

    /// The UTC offset, in seconds east of UTC.
    pub fn offset_secs(&self) -> i32 {
        self.offset_secs
    }

    /// The same instant rendered with another offset.
    pub fn with_offset(self, offset_secs: i32) -> EventTime {
        EventTime { offset_secs, ..self }
    }

    /// This instant moved by whole seconds (saturating).
    pub fn add_secs(self, delta: i64) -> EventTime {
        EventTime { secs: self.secs.saturating_add(delta), ..self }
    }

    /// Civil date and time as seen at this time's offset.
    pub fn civil(&self) -> Civil {
        let local = self.secs.saturating_add(i64::from(self.offset_secs));
        let days = local.div_euclid(SECS_PER_DAY);
        let secs_of_day = local.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            hour: (secs_of_day / 3600) as u8,
            minute: (secs_of_day / 60 % 60) as u8,
            second: (secs_of_day % 60) as u8,
            nanos: self.nanos,
        }
    }

    /// Writes the RFC 3339 form into `out` (no allocation beyond `out`).
    ///
    /// The fraction is printed with 3, 6 or 9 digits, the fewest that are
    /// exact, and omitted when zero; a zero offset is printed as `Z`.
    pub fn write_rfc3339(&self, out: &mut String) {
        let c = self.civil();
        if (0..=9999).contains(&c.year) {
            push_digits(out, c.year as u32, 4);
        } else {
            out.push_str(&format!("{:+05}", c.year));
        }
        out.push('-');
        push_digits(out, u32::from(c.month), 2);
        out.push('-');
        push_digits(out, u32::from(c.day), 2);
        out.push('T');
        push_digits(out, u32::from(c.hour), 2);
        out.push(':');
        push_digits(out, u32::from(c.minute), 2);
        out.push(':');
        push_digits(out, u32::from(c.second), 2);
        if c.nanos != 0 {
            out.push('.');
            if c.nanos.is_multiple_of(1_000_000) {
                push_digits(out, c.nanos / 1_000_000, 3);
            } else if c.nanos.is_multiple_of(1_000) {
                push_digits(out, c.nanos / 1_000, 6);
            } else {
                push_digits(out, c.nanos, 9);
            }
        }
        if self.offset_secs == 0 {
            out.push('Z');
        } else {
            let sign = if self.offset_secs < 0 { '-' } else { '+' };
            let abs = self.offset_secs.unsigned_abs();
            out.push(sign);
            push_digits(out, abs / 3600, 2);
            out.push(':');
            push_digits(out, abs / 60 % 60, 2);
            // RFC 3339 cannot express seconds in an offset; historic zones
            // (LMT) have them, so the rendering rounds toward the minute.
        }
    }

    /// The RFC 3339 form as a new string.
    pub fn to_rfc3339(&self) -> String {
        let mut s = String::with_capacity(35);
        self.write_rfc3339(&mut s);
        s
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl FromStr for EventTime {
    type Err = Error;

    /// Parses an RFC 3339 timestamp (`T` or space separator, any number of
    /// fraction digits, `Z` or `±HH:MM`).
    fn from_str(s: &str) -> Result<EventTime, Error> {
        match crate::syslog::timestamp::rfc3339_lenient(s.trim().as_bytes()) {
            Some((b"", crate::syslog::TimeSpec::Absolute(t))) => Ok(t),
            _ => Err(Error::InvalidTime { input: s.to_owned() }),
        }
    }
}

/// A broken-down civil date and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    /// Proleptic Gregorian year.
    pub year: i32,
    /// 1–12.
    pub month: u8,
    /// 1–31.
    pub day: u8,
    /// 0–23.
    pub hour: u8,
    /// 0–59.
    pub minute: u8,
    /// 0–59 (leap seconds are rejected by the parsers).
    pub second: u8,
    /// Sub-second nanoseconds.
    pub nanos: u32,
}

impl Civil {
    /// Seconds since the Unix epoch if this civil time were UTC, or `None`
    /// when the date does not exist (e.g. 30 February) or a field is out of
    /// range.
    pub fn to_unix_secs_utc(&self) -> Option<i64> {
        if !(1..=12).contains(&self.month)
            || self.day == 0
            || self.day > days_in_month(self.year, self.month)
            || self.hour > 23
            || self.minute > 59
            || self.second > 59
            || self.nanos >= 1_000_000_000
        {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        Some(days * SECS_PER_DAY + i64::from(self.hour) * 3600 + i64::from(self.minute) * 60 + i64::from(self.second))
    }
}

fn push_digits(out: &mut String, value: u32, width: usize) {
    let mut buf = [0u8; 10];
    let mut v = value;
    let mut len = 0;
    loop {
        buf[len] = b'0' + (v % 10) as u8;
        v /= 10;
        len += 1;
        if v == 0 {
            break;
        }
    }
    for _ in len..width {
        out.push('0');
    }
    for &d in buf[..len].iter().rev() {
        out.push(char::from(d));
    }
}

/// Whether `year` is a Gregorian leap year.
pub fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Number of days in `month` (1–12) of `year`; 0 for an invalid month.
pub fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`; exact for every `i32` year the parsers can produce).
pub fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
pub fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = y + i64::from(m <= 2);
    (i32::try_from(year).unwrap_or(i32::MAX), m, d)
}

/// The time zone of a log source, used to place RFC 3164 timestamps (and
/// any other timestamp written without an offset) on the time line.
///
/// Fixed offsets take a fast arithmetic path; named zones go through the
/// bundled tz database and resolve DST gaps and folds the way most people
/// expect (the earlier of two folded instants; a gap moves forward).
#[derive(Clone, Debug)]
pub struct SourceZone {
    kind: ZoneKind,
    name: String,
}

#[derive(Clone, Debug)]
enum ZoneKind {
    Fixed(i32),
    Named(TimeZone),
}

impl Default for SourceZone {
    fn default() -> SourceZone {
        SourceZone::utc()
    }
}

impl PartialEq for SourceZone {
    fn eq(&self, other: &SourceZone) -> bool {
        self.name == other.name
    }
}

impl SourceZone {
    /// UTC, the default when a source's zone is not configured (SPEC §2).
    pub fn utc() -> SourceZone {
        SourceZone { kind: ZoneKind::Fixed(0), name: "UTC".to_owned() }
    }

    /// A fixed offset in seconds east of UTC.
    pub fn fixed(offset_secs: i32) -> SourceZone {
        let t = EventTime::UNIX_EPOCH.with_offset(offset_secs).to_rfc3339();
        // "1970-01-01T00:00:00+05:00" -> "+05:00"
        let name = t.get(19..).unwrap_or("Z").replace('Z', "+00:00");
        SourceZone { kind: ZoneKind::Fixed(offset_secs), name }
    }

    /// Parses `UTC`, `Z`, a fixed offset (`+05:00`, `-0500`, `+5`) or an IANA
    /// zone name (`Europe/Paris`).
    pub fn parse(spec: &str) -> Result<SourceZone, Error> {
        let trimmed = spec.trim();
        if trimmed.eq_ignore_ascii_case("utc") || trimmed == "Z" || trimmed.eq_ignore_ascii_case("gmt") {
            return Ok(SourceZone::utc());
        }
        if let Some(offset) = parse_offset_spec(trimmed) {
            return Ok(SourceZone::fixed(offset));
        }
        match TimeZone::get(trimmed) {
            Ok(tz) => Ok(SourceZone { kind: ZoneKind::Named(tz), name: trimmed.to_owned() }),
            Err(_) => Err(Error::InvalidTimeZone { zone: spec.to_owned() }),
        }
    }

    /// The name this zone was configured with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Places a civil date-time of this zone on the time line, or `None` if
    /// the civil fields are invalid.
    pub fn resolve(&self, civil: &Civil) -> Option<EventTime> {
        let utc_secs = civil.to_unix_secs_utc()?;
        match &self.kind {
            ZoneKind::Fixed(offset) => {
                Some(EventTime { secs: utc_secs - i64::from(*offset), nanos: civil.nanos, offset_secs: *offset })
            }
            ZoneKind::Named(tz) => {
                let dt = jiff::civil::DateTime::new(
                    i16::try_from(civil.year).ok()?,
                    i8::try_from(civil.month).ok()?,
                    i8::try_from(civil.day).ok()?,
                    i8::try_from(civil.hour).ok()?,
                    i8::try_from(civil.minute).ok()?,
                    i8::try_from(civil.second).ok()?,
                    i32::try_from(civil.nanos).ok()?,
                )
                .ok()?;
                let ts = tz.to_ambiguous_timestamp(dt).compatible().ok()?;
                let offset = tz.to_offset(ts).seconds();
                Some(EventTime {
                    secs: ts.as_second(),
                    nanos: u32::try_from(ts.subsec_nanosecond()).ok()?,
                    offset_secs: offset,
                })
            }
        }
    }

    /// The offset of this zone at an instant.
    pub fn offset_at(&self, t: EventTime) -> i32 {
        match &self.kind {
            ZoneKind::Fixed(offset) => *offset,
            ZoneKind::Named(tz) => {
                jiff::Timestamp::from_second(t.secs).map(|ts| tz.to_offset(ts).seconds()).unwrap_or(0)
            }
        }
    }
}

/// Parses `+05:00`, `-0500`, `+05`, `+5`, `-04:30` into seconds.
pub(crate) fn parse_offset_spec(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    let sign = match b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: Vec<u8> = b[1..].iter().copied().filter(|c| *c != b':').collect();
    if digits.is_empty() || digits.len() > 4 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let colon_ok = match b[1..].iter().position(|c| *c == b':') {
        None => true,
        Some(p) => p == 2 && b.len() == 6,
    };
    if !colon_ok {
        return None;
    }
    let n = |d: &[u8]| d.iter().fold(0i32, |acc, c| acc * 10 + i32::from(c - b'0'));
    let (h, m) = match digits.len() {
        1 | 2 => (n(&digits), 0),
        3 => (n(&digits[..1]), n(&digits[1..])),
        _ => (n(&digits[..2]), n(&digits[2..])),
    };
    (h <= 23 && m <= 59).then_some(sign * (h * 3600 + m * 60))
}

/// Chooses the year of a timestamp written without one (RFC 3164): the
/// latest year that does not put the event more than one day after `now`
/// (SPEC §2). Handles 29 February by walking back to a leap year.
pub fn infer_year(zone: &SourceZone, civil_without_year: Civil, now: EventTime) -> Option<EventTime> {
    let limit = now.unix_secs().saturating_add(SECS_PER_DAY);
    let now_year = now.with_offset(zone.offset_at(now)).civil().year;
    let at = |year: i32| zone.resolve(&Civil { year, ..civil_without_year });
    // Next year is possible only around New Year (a sender whose clock is
    // ahead); try it first so the "latest year" rule holds.
    if let Some(t) = at(now_year + 1)
        && t.unix_secs() <= limit
    {
        return Some(t);
    }
    for year in (now_year - 8..=now_year).rev() {
        if let Some(t) = at(year)
            && t.unix_secs() <= limit
        {
            return Some(t);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip_over_wide_range() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn milliseconds_round_trip_before_and_after_the_epoch() {
        for ms in [-1_500, -1, 0, 1, 1_800_000_000_123] {
            assert_eq!(EventTime::from_unix_millis(ms).unix_millis(), ms);
        }
        assert_eq!(EventTime::from_unix(7, 999_999_999, 0).unix_millis(), 7_999);
    }

    #[test]
    fn rfc3339_rendering() {
        let t = EventTime::from_unix(1_065_910_455, 3_000_000, 0);
        assert_eq!(t.to_rfc3339(), "2003-10-11T22:14:15.003Z");
        let t = EventTime::from_unix(1_061_727_255, 3_000, -7 * 3600);
        assert_eq!(t.to_rfc3339(), "2003-08-24T05:14:15.000003-07:00");
        let t = EventTime::from_unix(0, 1, 5 * 3600 + 1800);
        assert_eq!(t.to_rfc3339(), "1970-01-01T05:30:00.000000001+05:30");
        let t = EventTime::from_unix(-86_400, 0, 0);
        assert_eq!(t.to_rfc3339(), "1969-12-31T00:00:00Z");
    }

    #[test]
    fn parse_round_trip() {
        for s in ["2003-10-11T22:14:15.003Z", "1969-12-31T00:00:00Z", "2020-02-29T23:59:59.999999999-09:30"] {
            let t: EventTime = s.parse().unwrap();
            assert_eq!(t.to_rfc3339(), s);
        }
        assert!("2019-02-29T00:00:00Z".parse::<EventTime>().is_err());
    }

    #[test]
    fn zone_specs() {
        assert_eq!(SourceZone::parse("+05:00").unwrap().name(), "+05:00");
        assert_eq!(SourceZone::parse("-0500").unwrap().name(), "-05:00");
        assert_eq!(SourceZone::parse("UTC").unwrap().name(), "UTC");
        assert!(SourceZone::parse("Europe/Paris").is_ok());
        assert!(SourceZone::parse("Mars/Olympus").is_err());
        assert!(SourceZone::parse("+25:00").is_err());
    }

    #[test]
    fn named_zone_applies_dst() {
        let paris = SourceZone::parse("Europe/Paris").unwrap();
        let winter = Civil { year: 2020, month: 1, day: 5, hour: 15, minute: 33, second: 3, nanos: 0 };
        assert_eq!(paris.resolve(&winter).unwrap().to_rfc3339(), "2020-01-05T15:33:03+01:00");
        let summer = Civil { month: 7, ..winter };
        assert_eq!(paris.resolve(&summer).unwrap().to_rfc3339(), "2020-07-05T15:33:03+02:00");
    }

    fn md(month: u8, day: u8, hour: u8, minute: u8) -> Civil {
        Civil { year: 0, month, day, hour, minute, second: 0, nanos: 0 }
    }

    #[test]
    fn year_inference_never_more_than_a_day_ahead() {
        let utc = SourceZone::utc();
        let now: EventTime = "2026-01-01T00:05:00Z".parse().unwrap();
        // Dec 31 23:59 seen just after New Year belongs to last year.
        let t = infer_year(&utc, md(12, 31, 23, 59), now).unwrap();
        assert_eq!(t.to_rfc3339(), "2025-12-31T23:59:00Z");
        // Jan 2 is within a day of now: this year.
        let t = infer_year(&utc, md(1, 2, 0, 0), now).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-02T00:00:00Z");
        // A sender slightly ahead across New Year: next year.
        let now: EventTime = "2025-12-31T23:50:00Z".parse().unwrap();
        let t = infer_year(&utc, md(1, 1, 0, 10), now).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-01T00:10:00Z");
        // 29 February walks back to the last leap year.
        let now: EventTime = "2026-06-01T00:00:00Z".parse().unwrap();
        let t = infer_year(&utc, md(2, 29, 12, 0), now).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-02-29T12:00:00Z");
    }
}
