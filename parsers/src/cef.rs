//! ArcSight Common Event Format:
//! `CEF:Version|Device Vendor|Device Product|Device Version|Signature ID|Name|Severity|Extension`.
//!
//! The header is parsed eagerly; extensions are validated at their start and
//! iterated lazily, so a caller that only needs the header pays nothing for
//! them. Decisions where public parsers disagree (see the conformance suite):
//! - header escapes `\|` and `\\`; any other backslash is literal;
//! - extension escapes `\=`, `\\`, `\n` (LF), `\r` (CR, as the CEF guide and
//!   Logstash have it); any other backslash is kept, so `\|` stays `\|`
//!   (Logstash) rather than failing the pair (Beats);
//! - a value runs until the last space before the next `key=` whose `=` is
//!   unescaped; an `=` that does not follow a key-shaped word is part of the
//!   value (`msg=a =b` keeps `a =b`), as Logstash does;
//! - trailing spaces of every value are trimmed (Logstash, VRL), and the last
//!   value also loses trailing tabs and line breaks;
//! - double quotes are data, never stripped (Logstash, Beats).

use std::borrow::Cow;

use nom::Parser;
use nom::bytes::complete::{tag, take_while1};
use nom::sequence::{preceded, terminated};

use crate::event::Format;
use crate::grammar::{PResult, SyntaxError, expect};

/// A parsed CEF payload, borrowed from the line. Header fields are still
/// escaped; use [`unescape_header`] (the event conversion does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CefView<'a> {
    /// The `CEF:` version number.
    pub version: u32,
    /// Device Vendor.
    pub vendor: &'a [u8],
    /// Device Product.
    pub product: &'a [u8],
    /// Device Version.
    pub product_version: &'a [u8],
    /// Signature ID.
    pub signature_id: &'a [u8],
    /// Name.
    pub name: &'a [u8],
    /// Severity as written.
    pub severity: &'a [u8],
    extension: &'a [u8],
}

impl<'a> CefView<'a> {
    /// The extension text, from the first key to the end.
    pub fn extension_text(&self) -> &'a [u8] {
        self.extension
    }

    /// Extension pairs in order: key and still-escaped value (see
    /// [`unescape_value`]).
    pub fn extensions(&self) -> Extensions<'a> {
        Extensions {
            region: self.extension,
            key_start: 0,
            equals: memchr::memchr_iter(b'=', self.extension),
            next_eq: None,
        }
    }
}

/// Iterator over CEF extension pairs.
///
/// One vectorised pass finds every `=` of the region; only those are
/// inspected (escaped? preceded by a space and a key-shaped word?), so the
/// cost follows the number of pairs rather than the bytes between them.
#[derive(Clone, Debug)]
pub struct Extensions<'a> {
    region: &'a [u8],
    key_start: usize,
    equals: memchr::Memchr<'a>,
    /// The `=` of the key at `key_start`, when already found.
    next_eq: Option<usize>,
}

impl<'a> Iterator for Extensions<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let region = self.region;
        let key_eq = match self.next_eq.take() {
            Some(eq) => eq,
            None => self.equals.find(|&e| e >= self.key_start)?,
        };
        if self.key_start >= region.len() {
            return None;
        }
        let key = &region[self.key_start..key_eq];
        for eq in self.equals.by_ref() {
            if is_escaped(region, eq) {
                continue;
            }
            let key_len = region[..eq].iter().rev().take_while(|c| is_key_char(**c)).count();
            let start = eq - key_len;
            if key_len > 0 && start > key_eq + 1 && region[start - 1] == b' ' {
                self.key_start = start;
                self.next_eq = Some(eq);
                return Some((key, trim_end(&region[key_eq + 1..start - 1], b" ")));
            }
        }
        self.key_start = region.len();
        Some((key, trim_end(&region[key_eq + 1..], b" \t\r\n")))
    }
}

/// Whether the byte at `pos` is preceded by an odd number of backslashes.
fn is_escaped(bytes: &[u8], pos: usize) -> bool {
    bytes[..pos].iter().rev().take_while(|c| **c == b'\\').count() % 2 == 1
}

/// Characters of an extension key. CEF keys are alphanumeric; vendors add
/// `_`, `.`, `,` and array brackets (`ad.field[0]`).
fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b',' | b'[' | b']')
}

fn trim_end<'a>(s: &'a [u8], chars: &[u8]) -> &'a [u8] {
    let n = s.iter().rev().take_while(|c| chars.contains(c)).count();
    &s[..s.len() - n]
}

/// One header field: bytes up to an unescaped `|` (not consumed).
fn header_field(input: &[u8]) -> PResult<'_, &[u8]> {
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'|' => return Ok((&input[i..], &input[..i])),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    crate::grammar::fail(&input[input.len()..], "7 header fields separated by \"|\"")
}

fn version(input: &[u8]) -> PResult<'_, u32> {
    let (rest, digits) =
        expect("a numeric CEF version after \"CEF:\"", take_while1(|c: u8| c.is_ascii_digit())).parse(input)?;
    let value = digits.iter().take(9).fold(0u32, |acc, c| acc * 10 + u32::from(c - b'0'));
    Ok((rest, value))
}

/// Parses a CEF payload starting at `CEF:`. `line` is the whole line, for
/// error offsets.
pub(crate) fn parse<'a>(line: &[u8], payload: &'a [u8]) -> Result<CefView<'a>, SyntaxError> {
    let field = || expect("7 header fields separated by \"|\"", terminated(header_field, tag(&b"|"[..])));
    let mut header = (
        preceded(
            expect("\"CEF:\"", tag(&b"CEF:"[..])),
            terminated(version, expect("\"|\" after the version", tag(&b"|"[..]))),
        ),
        field(),
        field(),
        field(),
        field(),
        field(),
        field(),
    );
    let (ext, (version, vendor, product, product_version, signature_id, name, severity)) =
        header.parse(payload).map_err(|e| SyntaxError::from_nom(Format::Cef, line, e))?;
    let ext = crate::grammar::skip_blanks(ext);
    let key_len = ext.iter().take_while(|c| is_key_char(**c)).count();
    let ext = if trim_end(ext, b" \t\r\n").is_empty() {
        &ext[..0]
    } else if key_len == 0 || ext.get(key_len) != Some(&b'=') {
        return Err(SyntaxError::new(Format::Cef, line, ext, "extension key=value pairs"));
    } else {
        ext
    };
    Ok(CefView { version, vendor, product, product_version, signature_id, name, severity, extension: ext })
}

/// Unescapes a header field: `\|` → `|`, `\\` → `\`.
pub fn unescape_header(field: &[u8]) -> Cow<'_, [u8]> {
    unescape(field, |c| matches!(c, b'|' | b'\\').then_some(c))
}

/// Unescapes an extension value: `\=`, `\\`, `\n`, `\r`.
pub fn unescape_value(value: &[u8]) -> Cow<'_, [u8]> {
    unescape(value, |c| match c {
        b'=' | b'\\' => Some(c),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        _ => None,
    })
}

fn unescape(input: &[u8], map: impl Fn(u8) -> Option<u8>) -> Cow<'_, [u8]> {
    if !input.contains(&b'\\') {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'\\'
            && let Some(c) = input.get(i + 1).and_then(|c| map(*c))
        {
            out.push(c);
            i += 2;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(line: &str) -> Vec<(String, String)> {
        let view = parse(line.as_bytes(), line.as_bytes()).unwrap();
        view.extensions()
            .map(|(k, v)| {
                (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(&unescape_value(v)).into_owned())
            })
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn header_and_simple_extensions() {
        let line = "CEF:0|security|threatmanager|1.0|100|trojan successfully stopped|10|src=10.0.0.192 dst=12.121.122.82 spt=1232";
        let v = parse(line.as_bytes(), line.as_bytes()).unwrap();
        assert_eq!(v.version, 0);
        assert_eq!(v.name, b"trojan successfully stopped");
        assert_eq!(ext(line), pairs(&[("src", "10.0.0.192"), ("dst", "12.121.122.82"), ("spt", "1232")]));
    }

    #[test]
    fn values_with_spaces_equals_and_escapes() {
        let line = r"CEF:0|a|b|c|d|e|5|msg=this =has = equals\= and \n newline x=c\\d\=z cs1= cs1Label=Foo Bar";
        assert_eq!(
            ext(line),
            pairs(&[
                ("msg", "this =has = equals= and \n newline"),
                ("x", "c\\d=z"),
                ("cs1", ""),
                ("cs1Label", "Foo Bar")
            ])
        );
        let line = "CEF:0|a|b|c|d|e|5| src=1  dst=2   final=x y  \t\r\n";
        assert_eq!(ext(line), pairs(&[("src", "1"), ("dst", "2"), ("final", "x y")]));
    }

    #[test]
    fn header_escapes() {
        let line = r"CEF:0|secu\|rity|a\\b|1.\|0|x|y|\|10|";
        let v = parse(line.as_bytes(), line.as_bytes()).unwrap();
        assert_eq!(&*unescape_header(v.vendor), b"secu|rity");
        assert_eq!(&*unescape_header(v.product), b"a\\b");
        assert_eq!(&*unescape_header(v.severity), b"|10");
    }

    #[test]
    fn rejects() {
        for bad in [
            "CEF:0|a|b|c|d|e|",
            "CEF:x|a|b|c|d|e|f|",
            "CEF:0|a|b|c|d|e|f|this is not key value",
            "CEF:0|SentinelOne|Mgmt|activityID=1 x=2",
            "CEF:0|a\\",
        ] {
            assert!(parse(bad.as_bytes(), bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
