//! RFC 5424 §6 header grammar:
//! `<PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP
//! STRUCTURED-DATA [SP MSG]`.
//!
//! Strict where the RFC says MUST and a violation means the line is not what
//! it claims (PRI range, version, timestamp validity, SD syntax); lenient
//! where real senders routinely differ and nothing is ambiguous:
//! - header fields may be up to 255 bytes (the RFC caps APP-NAME at 48,
//!   PROCID at 128, MSGID at 32) and may contain non-ASCII bytes;
//! - exactly one SP separates STRUCTURED-DATA from MSG; further spaces are
//!   part of MSG (§6.4);
//! - a UTF-8 BOM opening MSG is an encoding marker, not content, and is
//!   removed (§6.4); MSG bytes in any other encoding are kept.

use super::sd::sd_section;
use super::timestamp::rfc5424_timestamp;
use super::{Pri, SyslogHeader, pri, sp};
use crate::event::Format;
use nom::Parser;
use nom::combinator::map;

use crate::grammar::{Fail, PResult, SyntaxError, fail};

const MAX_FIELD: usize = 255;
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses a complete RFC 5424 line into its header and MSG (BOM removed).
pub(crate) fn parse(line: &[u8]) -> Result<(SyslogHeader<'_>, &[u8]), SyntaxError> {
    let to_err = |e: nom::Err<Fail<'_>>| SyntaxError::from_nom(Format::Rfc5424, line, e);
    let (rest, p) = pri(line).map_err(to_err)?;
    after_pri(line, rest, Some(p))
}

/// Parses a line that has the RFC 5424 layout but no PRI (`1 2020-05-22T…`),
/// as some relays write to files.
pub(crate) fn parse_without_pri(line: &[u8]) -> Result<(SyslogHeader<'_>, &[u8]), SyntaxError> {
    after_pri(line, line, None)
}

/// Whether `input` (after a PRI) starts like an RFC 5424 header: VERSION
/// digits then a space. Used by format detection.
pub(crate) fn looks_like_version(input: &[u8]) -> bool {
    let n = input.iter().take(4).take_while(|c| c.is_ascii_digit()).count();
    (1..=3).contains(&n) && input[0] != b'0' && input.get(n) == Some(&b' ')
}

fn after_pri<'a>(
    line: &'a [u8],
    input: &'a [u8],
    pri: Option<Pri>,
) -> Result<(SyslogHeader<'a>, &'a [u8]), SyntaxError> {
    header(input)
        .map(|(msg, (time, host, app, procid, msgid, sd))| {
            (SyslogHeader { pri, time, host, app, procid, msgid, sd }, msg)
        })
        .map_err(|e| SyntaxError::from_nom(Format::Rfc5424, line, e))
}

type Fields<'a> = (
    Option<super::TimeSpec>,
    Option<&'a [u8]>,
    Option<&'a [u8]>,
    Option<&'a [u8]>,
    Option<&'a [u8]>,
    super::SdView<'a>,
);

/// `VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD
/// [SP MSG]`, returning MSG (BOM removed) as the remaining input.
fn header(input: &[u8]) -> PResult<'_, Fields<'_>> {
    let (i, ()) = version(input)?;
    let (i, ()) = sp(i)?;
    let (i, time) = match i.strip_prefix(b"-") {
        Some(rest) => (rest, None),
        None => map(rfc5424_timestamp, Some).parse(i)?,
    };
    let (i, ()) = sp(i)?;
    let (i, host) = field(i, "HOSTNAME (1-255 printable characters) or \"-\"")?;
    let (i, ()) = sp(i)?;
    let (i, app) = field(i, "APP-NAME or \"-\"")?;
    let (i, ()) = sp(i)?;
    let (i, procid) = field(i, "PROCID or \"-\"")?;
    let (i, ()) = sp(i)?;
    let (i, msgid) = field(i, "MSGID or \"-\"")?;
    let (i, ()) = sp(i)?;
    let (i, sd) = sd_section(i)?;
    let msg = match i {
        [] => i,
        [b' ', msg @ ..] => msg.strip_prefix(BOM).unwrap_or(msg),
        _ => return fail(i, "a space before MSG"),
    };
    Ok((msg, (time, host, app, procid, msgid, sd)))
}

/// VERSION = NONZERO-DIGIT 0*2DIGIT
fn version(input: &[u8]) -> PResult<'_, ()> {
    let n = input.iter().take(4).take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || n > 3 || input[0] == b'0' {
        return fail(input, "VERSION 1-999");
    }
    Ok((&input[n..], ()))
}

/// A header field: NILVALUE or 1..=255 bytes that are neither space nor a
/// control character.
fn field<'a>(input: &'a [u8], expected: &'static str) -> PResult<'a, Option<&'a [u8]>> {
    let len = input.iter().take(MAX_FIELD + 1).take_while(|c| **c > b' ' && **c != 0x7f).count();
    if len == 0 || len > MAX_FIELD {
        return fail(input, expected);
    }
    let value = &input[..len];
    Ok((&input[len..], (value != b"-").then_some(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_header() {
        let line = br#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application"] BOMAn application event"#;
        let (h, msg) = parse(line).unwrap();
        assert_eq!(h.pri.unwrap().value(), 165);
        assert_eq!(h.host, Some(&b"mymachine.example.com"[..]));
        assert_eq!(h.app, Some(&b"evntslog"[..]));
        assert_eq!(h.procid, None);
        assert_eq!(h.msgid, Some(&b"ID47"[..]));
        assert_eq!(h.sd.elements().count(), 1);
        assert_eq!(msg, b"BOMAn application event");
    }

    #[test]
    fn bom_is_removed_and_extra_spaces_kept() {
        let (_, msg) = parse(b"<1>1 - - - - - - \xEF\xBB\xBFhello").unwrap();
        assert_eq!(msg, b"hello");
        let (_, msg) = parse(b"<13>1 - - - - - -  two").unwrap();
        assert_eq!(msg, b" two");
    }

    #[test]
    fn errors_name_the_field_and_offset() {
        let e = parse(b"<1>1 2003-09-31T22:14:15Z - - - - -").unwrap_err();
        assert_eq!(e.to_string(), "rfc5424: a date and time that exist at byte 5");
        let e = parse(b"<1>1 - - - - - X").unwrap_err();
        assert_eq!(e.offset, 15);
        let e = parse(b"<1>1 -  - - - -").unwrap_err();
        assert!(e.to_string().contains("HOSTNAME"), "{e}");
        assert!(parse(b"<1>1 - - - - - -x").is_err());
        assert!(parse(b"<1>0 - - - - - -").is_err());
        assert!(parse(b"<1>1000 - - - - - -").is_err());
    }
}
