//! Syslog headers: RFC 5424 (strict grammar) and RFC 3164 (the BSD format
//! and the variants real devices send).
//!
//! Both grammars produce the same borrowed [`SyslogHeader`]: slices of the
//! input plus the timestamp as written. Placing an RFC 3164 time on the time
//! line (year, zone) is deferred to [`TimeSpec::resolve`], so parsing a view
//! stays free of zone lookups when nobody needs the time.

pub(crate) mod rfc3164;
pub(crate) mod rfc5424;
pub(crate) mod sd;
pub(crate) mod timestamp;

use crate::grammar::{PResult, expect};
use crate::time::{Civil, EventTime, SourceZone, infer_year};

pub use sd::{SdElementView, SdView};

/// A syslog PRI value, `facility * 8 + severity`, 0–191.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pri(u8);

impl Pri {
    /// The PRI if `value` is within 0..=191.
    pub fn new(value: u8) -> Option<Pri> {
        (value <= 191).then_some(Pri(value))
    }

    /// The raw PRI value.
    pub fn value(self) -> u8 {
        self.0
    }

    /// Facility 0–23.
    pub fn facility(self) -> u8 {
        self.0 >> 3
    }

    /// Severity 0–7.
    pub fn severity(self) -> u8 {
        self.0 & 7
    }
}

/// A timestamp as written in a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSpec {
    /// A complete instant with its offset (RFC 3339).
    Absolute(EventTime),
    /// A civil time without zone, and perhaps without year (BSD `Mmm dd
    /// hh:mm:ss`); placed on the time line with the source's zone.
    Local {
        /// The civil fields; `year` is meaningful only when `year_known`.
        civil: Civil,
        /// Whether the text carried a year.
        year_known: bool,
        /// An offset the text named (`EDT`), overriding the source zone.
        offset: Option<i32>,
    },
}

impl TimeSpec {
    /// Places the timestamp on the time line: a missing year is `year` when
    /// given, else inferred from `now` (never more than a day ahead); a
    /// missing zone is `zone`. `None` if the date does not exist.
    pub fn resolve(&self, zone: &SourceZone, year: Option<i32>, now: EventTime) -> Option<EventTime> {
        let (civil, year_known, offset) = match *self {
            TimeSpec::Absolute(t) => return Some(t),
            TimeSpec::Local { civil, year_known, offset } => (civil, year_known, offset),
        };
        let named;
        let zone = match offset {
            Some(o) => {
                named = SourceZone::fixed(o);
                &named
            }
            None => zone,
        };
        match (year_known, year) {
            (true, _) => zone.resolve(&civil),
            (false, Some(year)) => zone.resolve(&Civil { year, ..civil }),
            (false, None) => infer_year(zone, civil, now),
        }
    }
}

/// The header fields of a syslog line, borrowed from the line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyslogHeader<'a> {
    /// `<PRI>`, absent in files written by local syslog daemons.
    pub pri: Option<Pri>,
    /// The timestamp as written.
    pub time: Option<TimeSpec>,
    /// HOSTNAME.
    pub host: Option<&'a [u8]>,
    /// APP-NAME, or the TAG of RFC 3164.
    pub app: Option<&'a [u8]>,
    /// PROCID, or the `[pid]` of an RFC 3164 tag.
    pub procid: Option<&'a [u8]>,
    /// MSGID (RFC 5424 only).
    pub msgid: Option<&'a [u8]>,
    /// The structured-data section, already validated (RFC 5424 only).
    pub sd: SdView<'a>,
}

/// `<PRI>`: 1–3 digits without leading zeros (except `0`), at most 191.
pub(crate) fn pri(input: &[u8]) -> PResult<'_, Pri> {
    use nom::Parser;
    use nom::bytes::complete::{tag, take_while_m_n};
    use nom::combinator::map_opt;
    use nom::sequence::delimited;

    let value = map_opt(take_while_m_n(1, 3, |c: u8| c.is_ascii_digit()), |digits: &[u8]| {
        if digits.len() > 1 && digits[0] == b'0' {
            return None;
        }
        let n = digits.iter().fold(0u32, |acc, c| acc * 10 + u32::from(c - b'0'));
        u8::try_from(n).ok().and_then(Pri::new)
    });
    expect("PRI: \"<\", a value 0-191 without leading zeros, \">\"", delimited(tag(&b"<"[..]), value, tag(&b">"[..])))
        .parse(input)
}

/// One space. Hand-written: it runs seven times per RFC 5424 header, and
/// building a labelled `tag` parser each time showed in profiles.
pub(crate) fn sp(input: &[u8]) -> PResult<'_, ()> {
    match input.split_first() {
        Some((b' ', rest)) => Ok((rest, ())),
        _ => crate::grammar::fail(input, "a space"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pri_bounds() {
        assert_eq!(pri(b"<0>x").unwrap().1.value(), 0);
        assert_eq!(pri(b"<191>").unwrap().1.value(), 191);
        let p = pri(b"<165>").unwrap().1;
        assert_eq!((p.facility(), p.severity()), (20, 5));
        for bad in [&b"<192>"[..], b"<002>", b"<>", b"<aaa>", b"<1000>", b"(1>", b"<12", b""] {
            assert!(pri(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
