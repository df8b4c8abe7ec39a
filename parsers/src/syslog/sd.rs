//! RFC 5424 STRUCTURED-DATA (§6.3): validated once by the header parser,
//! then iterated lazily without allocating.
//!
//! Decisions where the RFC and real senders meet:
//! - `\"`, `\\` and `\]` are unescaped; a backslash before any other
//!   character is kept with that character, as §6.3.3 requires.
//! - An unescaped `]` inside a value is an error (§6.3.3 "MUST be escaped";
//!   go-syslog and syslog-ng agree).
//! - A repeated SD-ID is an error (§6.3.2 "MUST NOT exist more than once").
//! - SD-NAME length limits (32) are not enforced up to 255 bytes: senders
//!   exceed them and rejecting would lose the whole header (syslog-ng
//!   practice).

use std::borrow::Cow;

use crate::grammar::{PResult, fail};

const MAX_NAME: usize = 255;
/// At most this many elements are checked for duplicate ids; a line with more
/// elements than this is rejected (it is not a real sender).
const MAX_ELEMENTS: usize = 128;

/// The STRUCTURED-DATA section of a header, already validated. Empty for
/// NILVALUE and for formats without structured data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SdView<'a> {
    section: &'a [u8],
}

impl<'a> SdView<'a> {
    /// Whether there is no structured data.
    pub fn is_empty(&self) -> bool {
        self.section.is_empty()
    }

    /// The section's text (empty for NILVALUE).
    pub fn text(&self) -> &'a [u8] {
        self.section
    }

    /// The elements in order.
    pub fn elements(&self) -> impl Iterator<Item = SdElementView<'a>> + 'a {
        let mut rest = self.section;
        std::iter::from_fn(move || {
            let (element, after) = split_element(rest)?;
            rest = after;
            Some(element)
        })
    }
}

/// One `[SD-ID params]` element, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdElementView<'a> {
    /// The SD-ID.
    pub id: &'a [u8],
    params: &'a [u8],
}

impl<'a> SdElementView<'a> {
    /// `(name, value)` pairs; values are still escaped (`\"`, `\\`, `\]`).
    pub fn params(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let mut rest = self.params;
        std::iter::from_fn(move || {
            rest = rest.strip_prefix(b" ")?;
            let eq = memchr::memchr(b'=', rest)?;
            let name = &rest[..eq];
            let value_start = eq + 2; // skip `="`
            let len = value_len(rest.get(value_start..)?)?;
            let value = &rest[value_start..value_start + len];
            rest = rest.get(value_start + len + 1..)?;
            Some((name, value))
        })
    }
}

/// Unescapes a validated PARAM-VALUE: `\"`, `\\`, `\]` lose the backslash;
/// any other backslash stays.
pub fn unescape(value: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr(b'\\', value).is_none() {
        return Cow::Borrowed(value);
    }
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let c = value[i];
        if c == b'\\'
            && let Some(&next @ (b'"' | b'\\' | b']')) = value.get(i + 1)
        {
            out.push(next);
            i += 2;
            continue;
        }
        out.push(c);
        i += 1;
    }
    Cow::Owned(out)
}

/// Length of a validated value up to (not including) its closing quote.
fn value_len(input: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn split_element(input: &[u8]) -> Option<(SdElementView<'_>, &[u8])> {
    let body = input.strip_prefix(b"[")?;
    let id_len = body.iter().take_while(|c| is_name_char(**c)).count();
    let id = &body[..id_len];
    let mut i = id_len;
    // Walk params to find the closing bracket (values may contain `]` only
    // escaped, and the section was validated).
    loop {
        match body.get(i)? {
            b']' => return Some((SdElementView { id, params: &body[id_len..i] }, &body[i + 1..])),
            b'"' => i += 1 + value_len(&body[i + 1..])? + 1,
            _ => i += 1,
        }
    }
}

/// SD-NAME characters: printable US-ASCII except `=`, space, `]`, `"`.
fn is_name_char(c: u8) -> bool {
    (33..=126).contains(&c) && c != b'=' && c != b']' && c != b'"'
}

/// STRUCTURED-DATA = NILVALUE / 1*SD-ELEMENT. Returns the validated section
/// (empty for NILVALUE).
pub(crate) fn sd_section(input: &[u8]) -> PResult<'_, SdView<'_>> {
    if let Some(rest) = input.strip_prefix(b"-") {
        return Ok((rest, SdView::default()));
    }
    if input.first() != Some(&b'[') {
        return fail(input, "STRUCTURED-DATA (\"[\" or \"-\")");
    }
    let mut ids: [&[u8]; MAX_ELEMENTS] = [&[]; MAX_ELEMENTS];
    let mut n_ids = 0;
    let mut rest = input;
    while let Some(body) = rest.strip_prefix(b"[") {
        let (after_id, id) = name(body, "SD-ID (1-255 printable characters except = ] \" and space)")?;
        if ids[..n_ids].contains(&id) {
            return fail(body, "a unique SD-ID (this one is repeated)");
        }
        if n_ids == MAX_ELEMENTS {
            return fail(body, "at most 128 SD-ELEMENTs");
        }
        ids[n_ids] = id;
        n_ids += 1;
        let mut r = after_id;
        loop {
            match r.first() {
                Some(b']') => {
                    r = &r[1..];
                    break;
                }
                Some(b' ') => {
                    let (after, ()) = param(&r[1..])?;
                    r = after;
                }
                _ => return fail(r, "\"]\" or a space and SD-PARAM"),
            }
        }
        rest = r;
    }
    let len = input.len() - rest.len();
    Ok((rest, SdView { section: &input[..len] }))
}

fn name<'a>(input: &'a [u8], expected: &'static str) -> PResult<'a, &'a [u8]> {
    let len = input.iter().take(MAX_NAME + 1).take_while(|c| is_name_char(**c)).count();
    if len == 0 || len > MAX_NAME {
        return fail(input, expected);
    }
    Ok((&input[len..], &input[..len]))
}

/// SD-PARAM = PARAM-NAME "=" %d34 PARAM-VALUE %d34
fn param(input: &[u8]) -> PResult<'_, ()> {
    let expected = "SD-PARAM (name=\"value\")";
    let (r, _) = name(input, expected)?;
    let Some(r) = r.strip_prefix(b"=\"") else {
        return fail(r, expected);
    };
    let mut i = 0;
    while i < r.len() {
        match r[i] {
            b'\\' => {
                if i + 1 >= r.len() {
                    return fail(&r[i..], "closing '\"' of PARAM-VALUE");
                }
                i += 2;
            }
            b'"' => return Ok((&r[i + 1..], ())),
            b']' => return fail(&r[i..], "'\"', '\\\\' and ']' escaped inside PARAM-VALUE"),
            _ => i += 1,
        }
    }
    fail(&r[r.len()..], "closing '\"' of PARAM-VALUE")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Vec<(String, Vec<(String, String)>)> {
        let (rest, sd) = sd_section(s.as_bytes()).unwrap();
        assert!(rest.is_empty() || rest[0] == b' ', "rest {:?}", String::from_utf8_lossy(rest));
        sd.elements()
            .map(|e| {
                let params = e
                    .params()
                    .map(|(k, v)| {
                        (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(&unescape(v)).into_owned())
                    })
                    .collect();
                (String::from_utf8_lossy(e.id).into_owned(), params)
            })
            .collect()
    }

    #[test]
    fn elements_and_escapes() {
        let got = parse(r#"[a x="1" y="q\"\\\]z"][b][c w="\n"] msg"#);
        assert_eq!(got[0].0, "a");
        assert_eq!(got[0].1, vec![("x".into(), "1".into()), ("y".into(), "q\"\\]z".into())]);
        assert_eq!(got[1], ("b".into(), vec![]));
        assert_eq!(got[2].1, vec![("w".into(), "\\n".into())]);
    }

    #[test]
    fn rejects() {
        for bad in [
            "[]",
            "[ ]",
            "[=]",
            "[a x]",
            "[a x=]",
            r#"[a x="p]"]"#,
            r#"[a x=""ok"]"#,
            r#"[a x="\"]"#,
            "[id1][id1]",
            "X",
            r#"[a x="unterminated"#,
        ] {
            assert!(sd_section(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
