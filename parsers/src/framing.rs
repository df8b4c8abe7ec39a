//! Bytes → frames (one log line each), separate from frame → event
//! (STYLE 4). No sockets here: listeners push what they read and pull frames.
//!
//! Stream framing follows RFC 6587: octet counting (`MSG-LEN SP MSG`, §3.4.1,
//! also RFC 5425 over TLS) and non-transparent framing with LF (§3.4.2; a CR
//! before the LF is removed). In [`FramingMode::Auto`] each frame decides
//! for itself: digits, a space and `<` start an octet-counted frame
//! (syslog messages start with `<PRI>`), anything else runs to the next LF.
//! Frames may arrive split across any number of reads.
//!
//! Invariant: memory is bounded. A frame longer than `max_frame_len` is cut
//! there and delivered with `truncated = true` (never dropped silently); the
//! rest of it is discarded and the stream resynchronises at the next frame
//! (exactly, for octet counting; at the next LF otherwise). The buffer never
//! holds more than `max_frame_len` plus what the caller pushed in one go.
//!
//! UDP has no framing: one datagram is one message ([`datagram`]).

use std::num::NonZeroUsize;

use bytes::{Buf, Bytes, BytesMut};
use serde::Deserialize;

/// Default maximum frame length: 64 KiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 * 1024;

/// Longest MSG-LEN accepted, in digits (covers any length below 10 GB).
const MAX_LEN_DIGITS: usize = 10;

/// How a stream is cut into frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FramingMode {
    /// Per frame: octet counting when the frame starts with `LEN SP <`,
    /// otherwise LF-terminated.
    #[default]
    Auto,
    /// RFC 6587 §3.4.1 / RFC 5425 only; anything else is a framing error.
    OctetCounting,
    /// LF-terminated lines only.
    NewlineDelimited,
}

/// User-facing framing settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FramerConfig {
    /// Framing mode.
    #[serde(default)]
    pub mode: FramingMode,
    /// Longest frame kept; longer frames are truncated and flagged.
    #[serde(default = "default_max_frame_len")]
    pub max_frame_len: NonZeroUsize,
}

fn default_max_frame_len() -> NonZeroUsize {
    NonZeroUsize::new(DEFAULT_MAX_FRAME_LEN).unwrap_or(NonZeroUsize::MIN)
}

impl Default for FramerConfig {
    fn default() -> FramerConfig {
        FramerConfig { mode: FramingMode::Auto, max_frame_len: default_max_frame_len() }
    }
}

impl FramerConfig {
    /// Builds a framer for one stream (one per connection).
    pub fn build(&self) -> Framer {
        Framer::new(self.mode, self.max_frame_len)
    }
}

/// One message cut from a stream or datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The message bytes, without framing (no length prefix, no LF/CR).
    pub data: Bytes,
    /// The message was longer than the maximum and was cut.
    pub truncated: bool,
}

/// A stream that cannot be framed. Only strict octet counting produces
/// these; auto and LF framing always resynchronise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// The bytes where a MSG-LEN should start are not `DIGITS SP`.
    #[error("expected an RFC 6587 octet count (digits and a space) at stream offset {offset}")]
    InvalidOctetCount {
        /// Bytes consumed from the stream before the problem.
        offset: u64,
    },
}

impl FramingError {
    /// Whether the connection should be closed: after a bad octet count
    /// the frame boundaries are lost and nothing later can be trusted.
    pub fn is_fatal(&self) -> bool {
        matches!(self, FramingError::InvalidOctetCount { .. })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Framing,
    /// Dropping the rest of an oversize octet-counted frame.
    SkipBytes(usize),
    /// Dropping the rest of an oversize line, up to and including its LF.
    SkipLine,
}

/// Incremental framer for one byte stream.
#[derive(Debug)]
pub struct Framer {
    buf: BytesMut,
    mode: FramingMode,
    max: usize,
    state: State,
    /// Bytes of `buf` already searched for LF without finding one.
    scanned: usize,
    consumed: u64,
    n_truncated: u64,
}

impl Framer {
    /// A framer with the given mode and maximum frame length.
    pub fn new(mode: FramingMode, max_frame_len: NonZeroUsize) -> Framer {
        Framer {
            // Nothing until the first read: an idle connection costs no buffer.
            buf: BytesMut::new(),
            mode,
            max: max_frame_len.get(),
            state: State::Framing,
            scanned: 0,
            consumed: 0,
            n_truncated: 0,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The internal buffer, to read into directly (e.g. `read_buf`). Call
    /// [`Framer::next_frame`] until it returns `None` before reading more,
    /// which keeps the buffer within one frame plus one read.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Frames cut at the maximum length so far.
    pub fn n_truncated(&self) -> u64 {
        self.n_truncated
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    /// Empty lines are skipped (they carry no message).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        loop {
            match self.state {
                State::SkipBytes(n) => {
                    let k = n.min(self.buf.len());
                    self.advance(k);
                    if k < n {
                        self.state = State::SkipBytes(n - k);
                        return Ok(None);
                    }
                    self.state = State::Framing;
                }
                State::SkipLine => match memchr::memchr(b'\n', &self.buf) {
                    Some(p) => {
                        self.advance(p + 1);
                        self.state = State::Framing;
                    }
                    None => {
                        let all = self.buf.len();
                        self.advance(all);
                        return Ok(None);
                    }
                },
                State::Framing => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    let frame = match self.octet_count()? {
                        Decision::NeedMore => return Ok(None),
                        Decision::Octets { header, len } => self.octet_frame(header, len),
                        Decision::Line => self.line_frame(),
                    };
                    match frame {
                        Some(f) if f.data.is_empty() && !f.truncated => continue,
                        Some(f) => return Ok(Some(f)),
                        None => return Ok(None),
                    }
                }
            }
        }
    }

    /// At end of stream: whatever is buffered, as a final frame (a last line
    /// without LF, or an octet-counted frame cut short, flagged truncated).
    pub fn finish(&mut self) -> Option<Frame> {
        if self.state != State::Framing || self.buf.is_empty() {
            self.buf.clear();
            return None;
        }
        let mut truncated = false;
        if let Ok(Decision::Octets { header, len }) = self.octet_count() {
            self.advance(header);
            truncated = self.buf.len() < len;
        }
        let take = self.buf.len().min(self.max);
        truncated |= self.buf.len() > self.max;
        let mut data = self.buf.split_to(take).freeze();
        self.buf.clear();
        if data.ends_with(b"\r") {
            data.truncate(data.len() - 1);
        }
        if truncated {
            self.n_truncated += 1;
        }
        (!data.is_empty() || truncated).then_some(Frame { data, truncated })
    }

    /// Cuts the frame being received short: what is buffered of it is
    /// delivered flagged `truncated`, and the rest of it is discarded as it
    /// arrives (the stream resynchronises at the next frame). For a
    /// connection that ends before its last frame does (shutdown, idle
    /// timeout), or whose partial frame may not grow (the listeners' memory
    /// budget): a cut line is never passed off as a whole one.
    pub fn cut_partial(&mut self) -> Option<Frame> {
        if self.state != State::Framing || self.buf.is_empty() {
            return None;
        }
        let rest = match self.octet_count() {
            Ok(Decision::Octets { header, len }) => {
                self.advance(header);
                State::SkipBytes(len.saturating_sub(self.buf.len().min(self.max)))
            }
            _ => State::SkipLine,
        };
        let take = self.buf.len().min(self.max);
        let data = self.buf.split_to(take).freeze();
        self.consumed += take as u64;
        self.buf.clear();
        self.scanned = 0;
        self.state = if rest == State::SkipBytes(0) { State::Framing } else { rest };
        self.n_truncated += 1;
        Some(Frame { data, truncated: true })
    }

    fn advance(&mut self, n: usize) {
        self.buf.advance(n);
        self.consumed += n as u64;
        self.scanned = 0;
    }

    fn octet_count(&self) -> Result<Decision, FramingError> {
        let digits = self.buf.iter().take(MAX_LEN_DIGITS + 1).take_while(|c| c.is_ascii_digit()).count();
        let strict = self.mode == FramingMode::OctetCounting;
        if self.mode == FramingMode::NewlineDelimited || (digits == 0 && !strict) {
            return Ok(Decision::Line);
        }
        let invalid = FramingError::InvalidOctetCount { offset: self.consumed };
        if digits == 0 || digits > MAX_LEN_DIGITS || self.buf[0] == b'0' {
            return if strict { Err(invalid) } else { Ok(Decision::Line) };
        }
        // Wait only while the bytes that decide are not here yet.
        if self.buf.len() <= digits {
            return Ok(Decision::NeedMore);
        }
        let fallback = if strict { Err(invalid) } else { Ok(Decision::Line) };
        if self.buf[digits] != b' ' {
            return fallback;
        }
        if !strict {
            match self.buf.get(digits + 1) {
                None => return Ok(Decision::NeedMore),
                Some(b'<') => {}
                Some(_) => return fallback,
            }
        }
        let len = self.buf[..digits]
            .iter()
            .fold(0usize, |acc, c| acc.saturating_mul(10).saturating_add(usize::from(c - b'0')));
        Ok(Decision::Octets { header: digits + 1, len })
    }

    fn octet_frame(&mut self, header: usize, len: usize) -> Option<Frame> {
        if len > self.max {
            if self.buf.len() < header + self.max {
                return None;
            }
            self.advance(header);
            let data = self.buf.split_to(self.max).freeze();
            self.consumed += self.max as u64;
            self.state = State::SkipBytes(len - self.max);
            self.n_truncated += 1;
            return Some(Frame { data, truncated: true });
        }
        if self.buf.len() < header + len {
            return None;
        }
        self.advance(header);
        let data = self.buf.split_to(len).freeze();
        self.consumed += len as u64;
        self.scanned = 0;
        Some(Frame { data, truncated: false })
    }

    fn line_frame(&mut self) -> Option<Frame> {
        let limit = self.buf.len().min(self.max + 1);
        let from = self.scanned.min(limit);
        match memchr::memchr(b'\n', &self.buf[from..limit]) {
            Some(p) => {
                let end = from + p;
                let mut data = self.buf.split_to(end).freeze();
                self.buf.advance(1);
                self.consumed += end as u64 + 1;
                self.scanned = 0;
                if data.ends_with(b"\r") {
                    data.truncate(data.len() - 1);
                }
                Some(Frame { data, truncated: false })
            }
            None if self.buf.len() > self.max => {
                let data = self.buf.split_to(self.max).freeze();
                self.consumed += self.max as u64;
                self.scanned = 0;
                self.state = State::SkipLine;
                self.n_truncated += 1;
                Some(Frame { data, truncated: true })
            }
            None => {
                self.scanned = limit;
                None
            }
        }
    }
}

enum Decision {
    NeedMore,
    Octets { header: usize, len: usize },
    Line,
}

/// One UDP datagram as one message: trailing LF, CR and NUL (appended by
/// some senders) are removed; an empty datagram is no message; one longer
/// than `max_frame_len` is cut and flagged.
pub fn datagram(mut data: Bytes, max_frame_len: NonZeroUsize) -> Option<Frame> {
    let trailing = data.iter().rev().take_while(|c| matches!(c, b'\n' | b'\r' | b'\0')).count();
    data.truncate(data.len() - trailing);
    if data.is_empty() {
        return None;
    }
    let truncated = data.len() > max_frame_len.get();
    if truncated {
        data.truncate(max_frame_len.get());
    }
    Some(Frame { data, truncated })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    fn frames(framer: &mut Framer, input: &[u8], chunk: usize) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            framer.push(piece);
            while let Some(f) = framer.next_frame().unwrap() {
                out.push((String::from_utf8_lossy(&f.data).into_owned(), f.truncated));
            }
        }
        if let Some(f) = framer.finish() {
            out.push((String::from_utf8_lossy(&f.data).into_owned(), f.truncated));
        }
        out
    }

    fn plain(v: &[&str]) -> Vec<(String, bool)> {
        v.iter().map(|s| ((*s).to_owned(), false)).collect()
    }

    #[test]
    fn a_cut_partial_frame_is_flagged_and_its_rest_skipped() {
        let next = |f: &mut Framer| {
            f.next_frame().unwrap().map(|f| (String::from_utf8_lossy(&f.data).into_owned(), f.truncated))
        };
        // A line: the half read is truncated, the rest of it up to LF dropped.
        let mut f = Framer::new(FramingMode::Auto, nz(1024));
        f.push(b"<13>whole\n<13>Failed password for invalid user al");
        assert_eq!(next(&mut f), Some(("<13>whole".into(), false)));
        assert_eq!(next(&mut f), None);
        let cut = f.cut_partial().unwrap();
        assert_eq!((&cut.data[..], cut.truncated), (&b"<13>Failed password for invalid user al"[..], true));
        f.push(b"ice from 10.0.0.1\n<13>next\n");
        assert_eq!(next(&mut f), Some(("<13>next".into(), false)));
        // Octet counting: the body read so far, then exactly the rest skipped.
        let mut f = Framer::new(FramingMode::Auto, nz(1024));
        f.push(b"10 <13>ab");
        assert_eq!(next(&mut f), None);
        let cut = f.cut_partial().unwrap();
        assert_eq!((&cut.data[..], cut.truncated), (&b"<13>ab"[..], true));
        f.push(b"cdef5 <13>x");
        assert_eq!(next(&mut f), Some(("<13>x".into(), false)));
        assert_eq!(f.n_truncated(), 1);
        // Nothing buffered: nothing to cut.
        assert_eq!(f.cut_partial(), None);
    }

    #[test]
    fn mixed_stream_in_every_chunk_size() {
        let input = b"<13>one\r\n13 <13>two\nthree\n\n14 <13>four\nfive!last";
        for chunk in 1..=input.len() {
            let mut f = Framer::new(FramingMode::Auto, nz(1024));
            assert_eq!(
                frames(&mut f, input, chunk),
                plain(&["<13>one", "<13>two\nthree", "<13>four\nfive!", "last"]),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn digits_not_followed_by_pri_are_a_line() {
        let mut f = Framer::new(FramingMode::Auto, nz(1024));
        assert_eq!(
            frames(&mut f, b"1 2020-05-22T14:59:09Z host app - - - msg\n", 7),
            plain(&["1 2020-05-22T14:59:09Z host app - - - msg"])
        );
    }

    #[test]
    fn oversize_line_is_truncated_then_resyncs() {
        let mut f = Framer::new(FramingMode::Auto, nz(8));
        let got = frames(&mut f, b"0123456789abcdef\nok\n", 3);
        assert_eq!(got, vec![("01234567".to_owned(), true), ("ok".to_owned(), false)]);
        assert_eq!(f.n_truncated(), 1);
    }

    #[test]
    fn oversize_octet_frame_resyncs_exactly() {
        let mut f = Framer::new(FramingMode::OctetCounting, nz(8));
        let got = frames(&mut f, b"12 <1>abcdefghi5 <2>ok", 4);
        assert_eq!(got, vec![("<1>abcde".to_owned(), true), ("<2>ok".to_owned(), false)]);
    }

    #[test]
    fn strict_octet_counting_rejects_garbage() {
        let mut f = Framer::new(FramingMode::OctetCounting, nz(64));
        f.push(b"hello\n");
        let err = f.next_frame().unwrap_err();
        assert!(err.is_fatal());
        assert!(err.to_string().contains("offset 0"));
    }

    #[test]
    fn eof_flushes_partial_frames() {
        let mut f = Framer::new(FramingMode::Auto, nz(64));
        assert_eq!(frames(&mut f, b"30 <13>short", 100), vec![("<13>short".to_owned(), true)]);
    }

    #[test]
    fn newline_mode_ignores_counts() {
        let mut f = Framer::new(FramingMode::NewlineDelimited, nz(64));
        assert_eq!(frames(&mut f, b"5 <1>abc\n", 2), plain(&["5 <1>abc"]));
    }

    #[test]
    fn datagrams() {
        assert_eq!(datagram(Bytes::from_static(b"<13>x\n\0"), nz(64)).unwrap().data, Bytes::from_static(b"<13>x"));
        assert!(datagram(Bytes::from_static(b"\n"), nz(64)).is_none());
        let f = datagram(Bytes::from_static(b"abcdef"), nz(4)).unwrap();
        assert_eq!((f.data, f.truncated), (Bytes::from_static(b"abcd"), true));
    }
}
