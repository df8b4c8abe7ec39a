//! Shared `nom` plumbing: one error type that remembers *where* and *what was
//! expected*, so a line that fails becomes a `raw` event whose `parse_error`
//! tells the operator the byte offset and the missing piece.

use std::fmt;

use nom::error::{ErrorKind, ParseError};
use nom::{IResult, Parser};

use crate::event::Format;

/// Error produced inside the `nom` grammars: the remaining input at the
/// failure point and a static description of what was expected there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fail<'a> {
    pub at: &'a [u8],
    pub expected: &'static str,
}

impl<'a> ParseError<&'a [u8]> for Fail<'a> {
    fn from_error_kind(input: &'a [u8], _kind: ErrorKind) -> Self {
        Fail { at: input, expected: "" }
    }

    fn append(_input: &'a [u8], _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

pub(crate) type PResult<'a, T> = IResult<&'a [u8], T, Fail<'a>>;

/// Labels the failures of `parser` that do not already carry a more precise
/// label from deeper down.
pub(crate) fn expect<'a, O, P>(
    expected: &'static str,
    mut parser: P,
) -> impl Parser<&'a [u8], Output = O, Error = Fail<'a>>
where
    P: Parser<&'a [u8], Output = O, Error = Fail<'a>>,
{
    move |input: &'a [u8]| {
        parser.parse(input).map_err(|e| {
            e.map(|mut f| {
                if f.expected.is_empty() {
                    f.expected = expected;
                }
                f
            })
        })
    }
}

/// A failure at `at` with a fixed message, as a `nom` error.
pub(crate) fn fail<'a, T>(at: &'a [u8], expected: &'static str) -> PResult<'a, T> {
    Err(nom::Err::Error(Fail { at, expected }))
}

/// Why a line did not parse in a given grammar: which grammar, the byte
/// offset of the problem and what was expected there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntaxError {
    /// The grammar that rejected the line.
    pub format: Format,
    /// Byte offset into the line where parsing stopped.
    pub offset: usize,
    /// What was expected at `offset`, e.g. `TIMESTAMP (RFC 3339 or "-")`.
    pub expected: &'static str,
}

impl SyntaxError {
    pub(crate) fn new(format: Format, line: &[u8], at: &[u8], expected: &'static str) -> SyntaxError {
        SyntaxError { format, offset: offset_in(line, at), expected }
    }

    pub(crate) fn from_nom(format: Format, line: &[u8], err: nom::Err<Fail<'_>>) -> SyntaxError {
        match err {
            nom::Err::Error(f) | nom::Err::Failure(f) => {
                let expected = if f.expected.is_empty() { "valid syntax" } else { f.expected };
                SyntaxError::new(format, line, f.at, expected)
            }
            nom::Err::Incomplete(_) => SyntaxError { format, offset: line.len(), expected: "more input" },
        }
    }
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} at byte {}", self.format.as_str(), self.expected, self.offset)
    }
}

impl std::error::Error for SyntaxError {}

/// Offset of subslice `at` within `line` (the end of `line` if `at` is not
/// inside it).
pub(crate) fn offset_in(line: &[u8], at: &[u8]) -> usize {
    let start = line.as_ptr() as usize;
    let p = at.as_ptr() as usize;
    if p >= start && p <= start + line.len() { p - start } else { line.len() }
}

/// Parses exactly `n` ASCII digits as a number.
pub(crate) fn fixed_digits(input: &[u8], n: usize) -> Option<(u32, &[u8])> {
    let digits = input.get(..n)?;
    let mut value = 0u32;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(c - b'0');
    }
    Some((value, &input[n..]))
}

/// Parses 1..=`max` ASCII digits as a number (stops at the first non-digit).
pub(crate) fn some_digits(input: &[u8], max: usize) -> Option<(u32, usize, &[u8])> {
    let len = input.iter().take(max).take_while(|c| c.is_ascii_digit()).count();
    if len == 0 {
        return None;
    }
    // Saturating: a digit run longer than u32 holds is still a number, just
    // not one any caller accepts.
    let value = input[..len].iter().fold(0u32, |acc, c| acc.saturating_mul(10).saturating_add(u32::from(c - b'0')));
    Some((value, len, &input[len..]))
}

/// Fraction digits after a decimal point, as nanoseconds (extra digits are
/// truncated).
pub(crate) fn fraction_nanos(digits: &[u8]) -> u32 {
    let mut nanos = 0u32;
    for i in 0..9 {
        let d = digits.get(i).map_or(0, |c| u32::from(c - b'0'));
        nanos = nanos * 10 + d;
    }
    nanos
}

/// Strips ASCII spaces and tabs from the start.
pub(crate) fn skip_blanks(input: &[u8]) -> &[u8] {
    let n = input.iter().take_while(|c| **c == b' ' || **c == b'\t').count();
    &input[n..]
}
