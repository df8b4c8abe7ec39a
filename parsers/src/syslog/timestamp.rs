//! Timestamp grammars: the strict RFC 5424 form (RFC 3339 profile of RFC
//! 5424 §6.2.3), a lenient RFC 3339 for BSD headers, the BSD `Mmm dd
//! hh:mm:ss` stamp with its common variants, FortiGate's `date= time=`
//! header, and the device time fields of CEF (`rt`) and LEEF (`devTime`).

use super::TimeSpec;
use crate::grammar::{PResult, fail, fixed_digits, fraction_nanos, some_digits};
use crate::time::{Civil, EventTime, SourceZone, parse_offset_spec};

const TS_5424: &str = "TIMESTAMP (RFC 3339, at most 6 fraction digits) or \"-\"";

/// RFC 5424 TIMESTAMP (not NILVALUE): `YYYY-MM-DDThh:mm:ss[.1*6DIGIT](Z|±hh:mm)`.
/// Rejects dates that do not exist, leap seconds, lower-case `t`/`z` and
/// more than six fraction digits, as the RFC requires. A missing offset
/// (before the next space) is accepted as source-zone local time.
pub(crate) fn rfc5424_timestamp(input: &[u8]) -> PResult<'_, TimeSpec> {
    let Some((civil, rest)) = civil_date_time(input, b'T') else {
        return fail(input, TS_5424);
    };
    let (nanos, rest) = match rest.strip_prefix(b".") {
        Some(frac) => {
            let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 || n > 6 {
                return fail(&frac[n.min(6)..], TS_5424);
            }
            (fraction_nanos(&frac[..n]), &frac[n..])
        }
        None => (0, rest),
    };
    let civil = Civil { nanos, ..civil };
    let (offset, rest) = match rest.first() {
        Some(b'Z') => (0, &rest[1..]),
        Some(sign @ (b'+' | b'-')) => match numeric_offset(*sign, &rest[1..], true) {
            Some((o, r)) => (o, r),
            None => return fail(rest, TS_5424),
        },
        // No offset although the RFC requires one: some senders omit it.
        // The time is then in the source's zone, as for RFC 3164.
        Some(b' ') if civil.second != 60 && civil.to_unix_secs_utc().is_some() => {
            return Ok((rest, TimeSpec::Local { civil, year_known: true, offset: None }));
        }
        _ => return fail(rest, TS_5424),
    };
    if civil.second == 60 {
        return fail(input, "seconds 00-59 (leap seconds are not accepted)");
    }
    match civil.to_unix_secs_utc() {
        Some(secs) => Ok((rest, TimeSpec::Absolute(EventTime::from_unix(secs - i64::from(offset), nanos, offset)))),
        None => fail(input, "a date and time that exist"),
    }
}

/// `YYYY-MM-DD<sep>hh:mm:ss`, fields range-checked loosely (day validity is
/// checked when the instant is computed).
fn civil_date_time(input: &[u8], sep: u8) -> Option<(Civil, &[u8])> {
    let (year, r) = fixed_digits(input, 4)?;
    let r = r.strip_prefix(b"-")?;
    let (month, r) = fixed_digits(r, 2)?;
    let r = r.strip_prefix(b"-")?;
    let (day, r) = fixed_digits(r, 2)?;
    let r = r.strip_prefix(&[sep])?;
    let (hour, minute, second, r) = clock(r)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let civil =
        Civil { year: i32::try_from(year).ok()?, month: month as u8, day: day as u8, hour, minute, second, nanos: 0 };
    Some((civil, r))
}

/// `hh:mm:ss` with hour ≤ 23, minute ≤ 59, second ≤ 60 (60 is reported by
/// the caller as a leap second).
fn clock(input: &[u8]) -> Option<(u8, u8, u8, &[u8])> {
    let (hour, r) = fixed_digits(input, 2)?;
    let r = r.strip_prefix(b":")?;
    let (minute, r) = fixed_digits(r, 2)?;
    let r = r.strip_prefix(b":")?;
    let (second, r) = fixed_digits(r, 2)?;
    (hour <= 23 && minute <= 59 && second <= 60).then_some((hour as u8, minute as u8, second as u8, r))
}

/// `hh:mm` (or `hhmm` when `colon` is false and the text has no colon) after
/// a sign; hours ≤ 23, minutes ≤ 59.
fn numeric_offset(sign: u8, input: &[u8], strict: bool) -> Option<(i32, &[u8])> {
    let (h, r) = fixed_digits(input, 2)?;
    let (m, r) = match r.strip_prefix(b":") {
        Some(r) => fixed_digits(r, 2)?,
        None if !strict => fixed_digits(r, 2).unwrap_or((0, r)),
        None => return None,
    };
    if h > 23 || m > 59 {
        return None;
    }
    let secs = (h * 3600 + m * 60) as i32;
    Some((if sign == b'-' { -secs } else { secs }, r))
}

/// RFC 3339 as devices write it in BSD headers: `T` or a space between date
/// and time, any number of fraction digits (truncated to nanoseconds), and
/// `Z`, `±hh:mm`, `±hhmm` or no offset at all (then the source zone
/// applies). The next byte must end the token.
pub(crate) fn rfc3339_lenient(input: &[u8]) -> Option<(&[u8], TimeSpec)> {
    let sep = *input.get(10)?;
    if sep != b'T' && sep != b't' && sep != b' ' {
        return None;
    }
    let (civil, rest) = civil_date_time(input, sep)?;
    if civil.second == 60 {
        return None;
    }
    let (nanos, rest) = lenient_fraction(rest);
    let civil = Civil { nanos, ..civil };
    let (spec, rest) = match rest.first() {
        Some(b'Z' | b'z') => (absolute(civil, 0)?, &rest[1..]),
        Some(sign @ (b'+' | b'-')) => {
            let (offset, r) = numeric_offset(*sign, &rest[1..], false)?;
            (absolute(civil, offset)?, r)
        }
        _ => {
            civil.to_unix_secs_utc()?;
            (TimeSpec::Local { civil, year_known: true, offset: None }, rest)
        }
    };
    ends_token(rest).then_some((rest, spec))
}

/// `.digits` after a clock, any number of digits (even none), truncated to
/// nanoseconds; no dot means zero.
fn lenient_fraction(input: &[u8]) -> (u32, &[u8]) {
    match input.strip_prefix(b".") {
        Some(frac) => {
            let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
            (fraction_nanos(&frac[..n]), &frac[n..])
        }
        None => (0, input),
    }
}

fn absolute(civil: Civil, offset: i32) -> Option<TimeSpec> {
    let secs = civil.to_unix_secs_utc()?;
    Some(TimeSpec::Absolute(EventTime::from_unix(secs - i64::from(offset), civil.nanos, offset)))
}

fn ends_token(rest: &[u8]) -> bool {
    matches!(rest.first(), None | Some(b' ' | b':' | b'\t'))
}

/// Month abbreviation, case-insensitive.
fn month(input: &[u8]) -> Option<u8> {
    let m = input.get(..3)?;
    let lower = [m[0].to_ascii_lowercase(), m[1].to_ascii_lowercase(), m[2].to_ascii_lowercase()];
    let n = match &lower {
        b"jan" => 1,
        b"feb" => 2,
        b"mar" => 3,
        b"apr" => 4,
        b"may" => 5,
        b"jun" => 6,
        b"jul" => 7,
        b"aug" => 8,
        b"sep" => 9,
        b"oct" => 10,
        b"nov" => 11,
        b"dec" => 12,
        _ => return None,
    };
    Some(n)
}

/// The BSD stamp `Mmm dd hh:mm:ss` (RFC 3164 §4.1.2) and the variants seen
/// from real devices: one- or two-digit day padded with any number of
/// spaces, a year between day and time (`Apr 15 2013 09:36:50`, Cisco) or
/// after it (`Apr 15 21:28:13 2007`),
/// fractional seconds (`02:00:00.156`), upper-case months.
pub(crate) fn bsd_timestamp(input: &[u8]) -> Option<(&[u8], TimeSpec)> {
    let month = month(input)?;
    let r = &input[3..];
    let spaces = r.iter().take_while(|c| **c == b' ').count();
    if spaces == 0 {
        return None;
    }
    let (day, day_len, r) = some_digits(&r[spaces..], 2)?;
    if day == 0 || day > 31 || !r.starts_with(b" ") {
        return None;
    }
    let _ = day_len;
    let r = &r[1..];
    // Optional year: four digits and a space before the clock.
    let (year, r) = match fixed_digits(r, 4) {
        Some((y, rest)) if rest.first() == Some(&b' ') => (Some(y), &rest[1..]),
        _ => (None, r),
    };
    let (hour, minute, second, r) = clock(r)?;
    if second == 60 {
        return None;
    }
    let (nanos, r) = lenient_fraction(r);
    if !ends_token(r) {
        return None;
    }
    // A year after the clock ("Apr 15 21:28:13 2007 host"), when none came
    // before it: four digits that are a plausible year, then a space, a
    // colon ending the header, or the end. (A colon and more is an IPv6
    // HOSTNAME: `2001:db8::1`.)
    let year_ends = |rest: &[u8]| match rest.first() {
        None | Some(b' ' | b'\t') => true,
        Some(b':') => matches!(rest.get(1), None | Some(b' ' | b'\t')),
        _ => false,
    };
    let (year, r) = match (year, r.strip_prefix(b" ").and_then(|x| fixed_digits(x, 4))) {
        (None, Some((y, rest))) if (1970..=2100).contains(&y) && year_ends(rest) => (Some(y), rest),
        _ => (year, r),
    };
    let civil = Civil { year: year.map_or(0, |y| y as i32), month, day: day as u8, hour, minute, second, nanos };
    Some((r, TimeSpec::Local { civil, year_known: year.is_some(), offset: None }))
}

/// Offsets of the zone abbreviations devices print after a BSD stamp
/// (`09:34:34 EDT:`). Only unambiguous, widely used names are listed: an
/// unknown token is left in the line rather than guessed.
pub(crate) fn zone_abbreviation(token: &[u8]) -> Option<i32> {
    let hours = match token {
        b"UTC" | b"GMT" | b"UT" => 0,
        b"EST" => -5,
        b"EDT" => -4,
        b"CST" => -6,
        b"CDT" => -5,
        b"MST" => -7,
        b"MDT" => -6,
        b"PST" => -8,
        b"PDT" => -7,
        b"CET" => 1,
        b"CEST" => 2,
        b"EET" => 2,
        b"EEST" => 3,
        b"WET" => 0,
        b"WEST" => 1,
        b"JST" => 9,
        b"AEST" => 10,
        b"AEDT" => 11,
        _ => return None,
    };
    Some(hours * 3600)
}

/// FortiGate's header `date=YYYY-MM-DD time=hh:mm:ss` (values optionally
/// quoted). The zone, when the device writes one, is the `tz="+hhmm"` field
/// anywhere later in `line`; otherwise the source zone applies.
pub(crate) fn fortigate_timestamp(input: &[u8]) -> Option<TimeSpec> {
    let r = input.strip_prefix(b"date=")?;
    let r = r.strip_prefix(b"\"").unwrap_or(r);
    let (year, r) = fixed_digits(r, 4)?;
    let r = r.strip_prefix(b"-")?;
    let (month, r) = fixed_digits(r, 2)?;
    let r = r.strip_prefix(b"-")?;
    let (day, r) = fixed_digits(r, 2)?;
    let r = r.strip_prefix(b"\"").unwrap_or(r);
    let r = r.strip_prefix(b" time=")?;
    let r = r.strip_prefix(b"\"").unwrap_or(r);
    let (hour, minute, second, _) = clock(r)?;
    let civil = Civil {
        year: year as i32,
        month: u8::try_from(month).ok()?,
        day: u8::try_from(day).ok()?,
        hour,
        minute,
        second,
        nanos: 0,
    };
    civil.to_unix_secs_utc()?;
    let tz = memchr::memmem::find(input, b" tz=").and_then(|p| {
        let v = &input[p + 4..];
        let v = v.strip_prefix(b"\"").unwrap_or(v);
        let sign = *v.first()?;
        if sign != b'+' && sign != b'-' {
            return None;
        }
        numeric_offset(sign, &v[1..], false).map(|(o, _)| o)
    });
    match tz {
        Some(offset) => absolute(civil, offset),
        None => Some(TimeSpec::Local { civil, year_known: true, offset: None }),
    }
}

/// A device event time as CEF `rt`/`start`/`end` and LEEF `devTime` carry
/// it: milliseconds since the epoch, RFC 3339, or `MMM dd yyyy
/// HH:mm:ss[.SSS][ ZONE]` (ZONE a known abbreviation or `±hh:mm`). Without a
/// zone the source zone applies.
pub(crate) fn device_time(value: &[u8], zone: &SourceZone) -> Option<EventTime> {
    if !value.is_empty() && value.len() <= 16 && value.iter().all(u8::is_ascii_digit) {
        let n: i64 = std::str::from_utf8(value).ok()?.parse().ok()?;
        // Ten digits or fewer are seconds, more are milliseconds.
        return Some(if value.len() <= 10 { EventTime::from_unix(n, 0, 0) } else { EventTime::from_unix_millis(n) });
    }
    if let Some((rest, spec)) = rfc3339_lenient(value)
        && rest.is_empty()
    {
        return spec.resolve(zone, None, EventTime::UNIX_EPOCH);
    }
    let (rest, spec) = bsd_timestamp(value)?;
    let TimeSpec::Local { civil, year_known: true, .. } = spec else {
        return None;
    };
    let zone_text = rest.strip_prefix(b" ").unwrap_or(rest);
    if zone_text.is_empty() {
        return zone.resolve(&civil);
    }
    let offset =
        zone_abbreviation(zone_text).or_else(|| std::str::from_utf8(zone_text).ok().and_then(parse_offset_spec))?;
    SourceZone::fixed(offset).resolve(&civil)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Result<String, ()> {
        match rfc5424_timestamp(s.as_bytes()) {
            Ok((_, TimeSpec::Absolute(t))) => Ok(t.to_rfc3339()),
            _ => Err(()),
        }
    }

    #[test]
    fn strict_5424() {
        assert_eq!(ts("2003-10-11T22:14:15.003Z").unwrap(), "2003-10-11T22:14:15.003Z");
        assert_eq!(ts("2003-08-24T05:14:15.000003-07:00").unwrap(), "2003-08-24T05:14:15.000003-07:00");
        assert_eq!(ts("2018-12-31T23:59:59.999999-23:59").unwrap(), "2018-12-31T23:59:59.999999-23:59");
        for bad in [
            "2006-01-02t15:04:05Z",
            "2006-01-02T15:04:05z",
            "2003-09-31T22:14:15Z",
            "2018-02-29T22:14:16+01:00",
            "2003-09-29T22:09:01.000000000009Z",
            "2003-09-29T22:09:01.Z",
            "2003-08-24T05:14:15.000003-24:00",
            "2003-08-24T05:14:15.000003-07:61",
            "2016-12-31T23:59:60Z",
            "2003-09-29T22:09:01",
        ] {
            assert!(ts(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bsd_variants() {
        for (text, rest) in [
            ("Oct 11 22:14:15 host", " host"),
            ("Aug  7 06:30:00 xxx", " xxx"),
            ("Jan 5 10:01:00", ""),
            ("Apr 15 2013 09:36:50: %ASA", ": %ASA"),
            ("AUG 10 22:18:24 host", " host"),
            ("Aug 29 02:00:00.156789 ctld", " ctld"),
            ("Apr 15 21:28:13 2007 host", " host"),
            ("Apr 15 21:28:13 2007: %ASA", ": %ASA"),
            // An IPv6 HOSTNAME that starts like a year is not one.
            ("Nov 22 10:15:42 2001:db8::1 app", " 2001:db8::1 app"),
        ] {
            let (r, _) = bsd_timestamp(text.as_bytes()).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(r, rest.as_bytes(), "{text}");
        }
        let (_, spec) = bsd_timestamp(b"Apr 15 2013 09:36:50").unwrap();
        assert!(matches!(spec, TimeSpec::Local { year_known: true, .. }));
        for bad in ["Foo 11 22:14:15", "Oct 32 22:14:15", "Oct 11 25:14:15", "Oct11 22:14:15", "Oct 11 22:14:15x"] {
            assert!(bsd_timestamp(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn fortigate_header_with_zone() {
        let line = b"date=2020-04-23 time=12:17:48 devname=\"x\" tz=\"-0500\" srcip=1.2.3.4";
        let Some(TimeSpec::Absolute(t)) = fortigate_timestamp(line) else { panic!() };
        assert_eq!(t.to_rfc3339(), "2020-04-23T12:17:48-05:00");
    }

    #[test]
    fn device_times() {
        let utc = SourceZone::utc();
        let t = |s: &str| device_time(s.as_bytes(), &utc).map(|t| t.to_rfc3339());
        assert_eq!(t("1543270652000").unwrap(), "2018-11-26T22:17:32Z");
        assert_eq!(t("Jul 19 2017 10:50:21.127").unwrap(), "2017-07-19T10:50:21.127Z");
        assert_eq!(t("Sep 17 2025 11:45:34 GMT").unwrap(), "2025-09-17T11:45:34Z");
        assert_eq!(t("2025-06-29T23:35:00Z").unwrap(), "2025-06-29T23:35:00Z");
        assert_eq!(t("not a time"), None);
    }
}
