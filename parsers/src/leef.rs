//! IBM QRadar Log Event Extended Format:
//! `LEEF:1.0|Vendor|Product|Version|EventID|attr=value<TAB>…` and
//! `LEEF:2.0|Vendor|Product|Version|EventID|Delimiter|attr=value<D>…`.
//!
//! Decisions:
//! - LEEF 2.0's delimiter field may be one character, a hex code (`x5E`,
//!   `0x5E`, `^`), or empty (tab); a sixth field that already holds `key=`
//!   means the sender omitted the delimiter field.
//! - LEEF 1.0 prescribes tab; some senders (PAN-OS) separate with `|`.
//!   When the attributes contain no tab but do contain `|`, `|` is used.
//! - A segment without `=` belongs to the previous value (joined with the
//!   delimiter), so nothing is dropped; a trailing delimiter is ignored.
//! - Values are not unescaped: LEEF defines no escaping.

use nom::Parser;
use nom::bytes::complete::{tag, take_till};
use nom::sequence::terminated;

use crate::event::Format;
use crate::grammar::{SyntaxError, expect};

/// A parsed LEEF payload, borrowed from the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeefView<'a> {
    /// `1.0` or `2.0` as written.
    pub version: &'a [u8],
    /// Vendor.
    pub vendor: &'a [u8],
    /// Product.
    pub product: &'a [u8],
    /// Product version.
    pub product_version: &'a [u8],
    /// Event ID.
    pub event_id: &'a [u8],
    delimiter: Delimiter,
    attributes: &'a [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Delimiter {
    bytes: [u8; 4],
    len: usize,
}

impl Delimiter {
    const TAB: Delimiter = Delimiter { bytes: [b'\t', 0, 0, 0], len: 1 };

    fn from_byte(b: u8) -> Delimiter {
        Delimiter { bytes: [b, 0, 0, 0], len: 1 }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Next occurrence in `hay`.
    fn find(&self, hay: &[u8]) -> Option<usize> {
        if self.len == 1 { memchr::memchr(self.bytes[0], hay) } else { memchr::memmem::find(hay, self.as_bytes()) }
    }
}

impl<'a> LeefView<'a> {
    /// The attribute delimiter in effect.
    pub fn delimiter(&self) -> &[u8] {
        self.delimiter.as_bytes()
    }

    /// The attribute text, from the first attribute to the end.
    pub fn attribute_text(&self) -> &'a [u8] {
        self.attributes
    }

    /// Attribute pairs in order.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes { rest: self.attributes, delimiter: self.delimiter }
    }
}

/// Iterator over LEEF attributes.
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    rest: &'a [u8],
    delimiter: Delimiter,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let d = self.delimiter.len;
            let Some(eq) = key_end(self.rest, self.delimiter) else {
                // Only reachable for a leading segment without '=' (validated
                // away) or empty segments between delimiters: skip them.
                let skip = self.delimiter.find(self.rest).map_or(self.rest.len(), |p| p + d);
                self.rest = &self.rest[skip..];
                continue;
            };
            let key = &self.rest[..eq];
            let value_area = &self.rest[eq + 1..];
            let mut search = 0;
            let end = loop {
                match self.delimiter.find(&value_area[search..]) {
                    None => break value_area.len(),
                    Some(p) => {
                        let at = search + p;
                        if key_end(&value_area[at + d..], self.delimiter).is_some() || at + d == value_area.len() {
                            break at;
                        }
                        search = at + d;
                    }
                }
            };
            let value = &value_area[..end];
            self.rest = value_area.get(end + d..).unwrap_or(&[]);
            return Some((key, value));
        }
    }
}

/// If `segment` starts with a non-empty key and `=` before the next
/// delimiter, the position of that `=`.
fn key_end(segment: &[u8], delimiter: Delimiter) -> Option<usize> {
    let eq = memchr::memchr(b'=', segment)?;
    if eq == 0 {
        return None;
    }
    match delimiter.find(&segment[..eq]) {
        Some(_) => None,
        None => Some(eq),
    }
}

/// Parses a LEEF payload starting at `LEEF:`.
pub(crate) fn parse<'a>(line: &[u8], payload: &'a [u8]) -> Result<LeefView<'a>, SyntaxError> {
    let expected = "LEEF header: version, vendor, product, version and event id separated by \"|\"";
    let field = || expect(expected, terminated(take_till(|c| c == b'|'), tag(&b"|"[..])));
    let mut header = (expect("\"LEEF:\"", tag(&b"LEEF:"[..])), field(), field(), field(), field(), field());
    let (rest, (_, version, vendor, product, product_version, event_id)) =
        header.parse(payload).map_err(|e| SyntaxError::from_nom(Format::Leef, line, e))?;
    if !(version.starts_with(b"1") || version.starts_with(b"2")) {
        return Err(SyntaxError::new(Format::Leef, line, version, "LEEF version 1.0 or 2.0"));
    }
    let (delimiter, attributes) = if version.starts_with(b"2") { delimiter_field(rest) } else { leef1_delimiter(rest) };
    let first = attributes.strip_prefix(delimiter.as_bytes()).unwrap_or(attributes);
    if !first.is_empty() && key_end(first, delimiter).is_none() {
        return Err(SyntaxError::new(Format::Leef, line, attributes, "attributes as key=value pairs"));
    }
    Ok(LeefView { version, vendor, product, product_version, event_id, delimiter, attributes: first })
}

/// LEEF 1.0: tab, or `|` for senders that use it instead.
fn leef1_delimiter(rest: &[u8]) -> (Delimiter, &[u8]) {
    let delimiter = if memchr::memchr(b'\t', rest).is_none() && memchr::memchr(b'|', rest).is_some() {
        Delimiter::from_byte(b'|')
    } else {
        Delimiter::TAB
    };
    (delimiter, rest)
}

/// LEEF 2.0's delimiter field and the attributes after it.
fn delimiter_field(rest: &[u8]) -> (Delimiter, &[u8]) {
    let Some(bar) = memchr::memchr(b'|', rest) else {
        // No delimiter field at all: attributes with the default tab.
        return (Delimiter::TAB, rest);
    };
    let field = &rest[..bar];
    let after = &rest[bar + 1..];
    if field.contains(&b'=') {
        return (Delimiter::TAB, rest);
    }
    let hex = field.strip_prefix(b"0x").or_else(|| field.strip_prefix(b"x")).or_else(|| field.strip_prefix(b"X"));
    if let Some(b) = hex.and_then(hex_byte) {
        return (Delimiter::from_byte(b), after);
    }
    match field.len() {
        0 if after.first() == Some(&b'|') => (Delimiter::from_byte(b'|'), &after[1..]),
        0 => (Delimiter::TAB, after),
        1..=4 if std::str::from_utf8(field).is_ok_and(|s| s.chars().count() == 1) => {
            let mut bytes = [0u8; 4];
            bytes[..field.len()].copy_from_slice(field);
            (Delimiter { bytes, len: field.len() }, after)
        }
        _ => (Delimiter::TAB, after),
    }
}

/// One or two hex digits as a byte.
fn hex_byte(digits: &[u8]) -> Option<u8> {
    if !(1..=2).contains(&digits.len()) {
        return None;
    }
    digits.iter().try_fold(0u8, |acc, &c| Some(acc * 16 + char::from(c).to_digit(16)? as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(line: &str) -> Vec<(String, String)> {
        let v = parse(line.as_bytes(), line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
        v.attributes()
            .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn leef1_tab_and_pipe_inside_value() {
        assert_eq!(
            attrs("LEEF:1.0|CyberArk|PTA|14.0|1|Cat=Suspected theft|sev=8|src=src1\tuserName=mike\tdst=1.2.3.4"),
            pairs(&[("Cat", "Suspected theft|sev=8|src=src1"), ("userName", "mike"), ("dst", "1.2.3.4")])
        );
    }

    #[test]
    fn leef1_pipe_separated() {
        assert_eq!(
            attrs("LEEF:1.0|Palo Alto Networks|PAN-OS|11|allow|cat=TRAFFIC|src=1.2.3.4|usrName=|x=y"),
            pairs(&[("cat", "TRAFFIC"), ("src", "1.2.3.4"), ("usrName", ""), ("x", "y")])
        );
    }

    #[test]
    fn leef2_delimiters() {
        assert_eq!(attrs("LEEF:2.0|V|P|1|ID|x7C|a=1|b=2"), pairs(&[("a", "1"), ("b", "2")]));
        assert_eq!(attrs("LEEF:2.0|V|P|1|ID|^|a=1^b=2"), pairs(&[("a", "1"), ("b", "2")]));
        assert_eq!(attrs("LEEF:2.0|V|P|1|ID|0x5E|a=1^b=2"), pairs(&[("a", "1"), ("b", "2")]));
        assert_eq!(attrs("LEEF:2.0|V|P|1|ID||a=1\tb=2"), pairs(&[("a", "1"), ("b", "2")]));
        assert_eq!(attrs("LEEF:2.0|V|P|1|ID|a=1\tb=2"), pairs(&[("a", "1"), ("b", "2")]));
    }

    #[test]
    fn trailing_delimiter_and_junk_segments() {
        assert_eq!(attrs("LEEF:1.0|T|T|4|42|key=yikes\t"), pairs(&[("key", "yikes")]));
        assert_eq!(attrs("LEEF:1.0|T|T|4|42|key=a\tjunk\tk2=b"), pairs(&[("key", "a\tjunk"), ("k2", "b")]));
        assert_eq!(attrs("LEEF:1.0|T|T|4|42|"), pairs(&[]));
    }

    #[test]
    fn rejects() {
        for bad in ["LEEF:1.0|Tenzir|Tenzir|4.12|42|just some random junk", "LEEF:1.0|a|b", "LEEF:9.0|a|b|c|d|x=y"] {
            assert!(parse(bad.as_bytes(), bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
