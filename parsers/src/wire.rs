//! The binary form of event batches between collectors and workers (over
//! NATS JetStream in a cluster): [`encode_batch`] and [`decode_batch`].
//!
//! JSON ([`Event::to_json`]) is for people and loses things (`raw` as lossy
//! text, no way back). This form is for the pipeline: every field of every
//! [`Event`] comes back exactly — `raw` byte for byte, times with their
//! nanoseconds and offsets, `None` apart from `Some("")`, structured data and
//! extensions with their order, repeats and flat buffers — so a worker stores
//! and correlates what the collector accepted, not a rendering of it.
//!
//! Decoding trusts nothing: any bytes give events or a [`WireError`] naming
//! the byte offset, never a panic, and allocation is bounded by the input
//! length: every count is checked against the bytes left before anything is
//! reserved (an event takes at least 7 bytes, a range 1), a string or text
//! is at most as long as the bytes left or the event's `raw`, and long
//! repeats are budgeted (below).
//!
//! # Layout, version 1
//!
//! Integers are LEB128 varints (`v`); signed ones are zigzag varints (`z`).
//!
//! ```text
//! batch  = "VGB" "1" count:v event*count       (nothing after the last event)
//! event  = head:u8 present:v id:z received [time] raw fields
//! head   = format code (bits 0-2: rfc5424 rfc3164 cef leef raw) | truncated 8
//!          | sd present 16 | ext present 32 | time differs from received_at 64
//! id     = z(id - previous event's id)          (ids run consecutively in a batch)
//! received = z(secs - previous event's received secs) nanos:v z(offset)
//! time   = z(secs - this event's received secs) nanos:v z(offset)
//! raw    = len:v bytes
//! fields = in `present` bit order: org_id:v, reporter_ip, facility:u8,
//!          severity:u8, 18 strings, src_ip, src_port:v, dst_ip, dst_port:v,
//!          then sd, then ext
//! ```
//!
//! `present` has one bit per optional field, two per address (absent, v4 as
//! 4 bytes, v6 as 16 bytes, or the previous event's). A string is one varint
//! `h` and what it says:
//!
//! - `h < 8`: the value of the same field `h + 1` events back. Sources take
//!   turns within a batch, so host, app, org, collector, vendor, event type
//!   and action mostly cost one byte. A value over 24 bytes (beyond what a
//!   [`Str`] keeps inline) may be repeated only while the long values so
//!   repeated add up to no more than the batch bytes before the `h`: repeats
//!   never make the decoder allocate more than the input is long;
//! - `h = 8 + 2·len`: `len` bytes follow;
//! - `h = 9 + 2·len`: an offset into this event's `raw` follows (the message
//!   is usually the end of the line; it is not sent twice).
//!
//! `sd` and `ext` travel as their flat parts: the text buffer (a prefix
//! taken from `raw` — the region the parser copied — then literal bytes:
//! `prefix_len:v [offset:v] tail_len:v tail`), the number of pairs, and per
//! pair the key's and the value's range. A range is `2·len`, or `2·len + 1`
//! then `z(gap)` when its start is not the previous range's end plus the same
//! gap as the last range of its kind (keys follow values after a space,
//! values follow keys after `=`), so most ranges cost one byte. `sd` then
//! adds its elements: the id's range and `z(first parameter - previous
//! element's end) count:v`. Every range is checked against the text on
//! decode. A range the encoder finds invalid (it would read as "" anyway) is
//! sent as the empty range.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use bytes::Bytes;

use crate::event::{Event, Format, OrgId, Pairs, Str, StructuredData};
use crate::time::EventTime;

/// The first bytes of a batch: magic `VGB`, then the version.
pub const HEADER: [u8; 4] = *b"VGB1";

/// Bytes the smallest event takes: head, presence, id, the three parts of
/// `received_at` and the length of `raw`, one byte each.
const MIN_EVENT_BYTES: usize = 7;
/// A range is at least its length (see [`Spans`]).
const MIN_SPAN_BYTES: usize = 1;
/// How many events back a string field may be repeated from.
const LOOKBACK: usize = 8;
/// Events reserved up front; beyond this the vector grows as events decode,
/// so a batch that claims many events and then fails reserved little.
const RESERVE_EVENTS: usize = 4096;
/// Values up to this long (inline in a [`Str`]) may always be sent as "an
/// earlier event's": repeating them never allocates. Longer ones may while
/// the bytes so repeated stay within the bytes of the batch read so far, so
/// a run of one-byte repeats cannot make the decoder allocate more than the
/// input is long.
const MAX_FREE_REPEAT: usize = 24;
/// Shorter messages are sent as they are (a reference costs 2–4 bytes).
const MIN_RAW_REF: usize = 8;
/// Shorter texts are sent as they are; longer ones are looked up in `raw`
/// by this many leading bytes.
const MIN_TEXT_REF: usize = 16;

const FORMAT_BITS: u8 = 0b111;
const HEAD_TRUNCATED: u8 = 1 << 3;
const HEAD_SD: u8 = 1 << 4;
const HEAD_EXT: u8 = 1 << 5;
const HEAD_TIME: u8 = 1 << 6;
const HEAD_RESERVED: u8 = 1 << 7;

const P_ORG_ID: u64 = 1 << 0;
const P_FACILITY: u64 = 1 << 1;
const P_SEVERITY: u64 = 1 << 2;
const REPORTER_SHIFT: u32 = 3;
const STR_SHIFT: u32 = 5;
const SRC_IP_SHIFT: u32 = 23;
const P_SRC_PORT: u64 = 1 << 25;
const DST_IP_SHIFT: u32 = 26;
const P_DST_PORT: u64 = 1 << 28;
const P_KNOWN: u64 = (1 << 29) - 1;

const IP_ABSENT: u64 = 0;
const IP_V4: u64 = 1;
const IP_V6: u64 = 2;
const IP_REPEAT: u64 = 3;

/// The string fields in wire order; [`str_fields`] lists them alike.
const STR_NAMES: [&str; 18] = [
    "org",
    "collector",
    "host",
    "app",
    "procid",
    "msgid",
    "message",
    "vendor",
    "product",
    "product_version",
    "signature_id",
    "name",
    "cef_severity",
    "event_type",
    "user",
    "action",
    "outcome",
    "parse_error",
];
/// Index of `message` in [`STR_NAMES`]: the one field looked up in `raw`.
const MESSAGE: usize = 6;

/// Why bytes are not a batch. Every kind names the byte offset (from the
/// start of the batch) where decoding stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input does not start with `VGB`.
    #[error("not an event batch: starts with {found:02x?}, expected \"VGB\"")]
    BadMagic {
        /// The first three bytes.
        found: [u8; 3],
    },
    /// A batch of a version this build does not read.
    #[error("unsupported batch version {found:#04x}: this build reads version \"1\" (0x31)")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
    },
    /// The input ends inside an item.
    #[error("batch truncated at byte {offset}: {what} runs past the end")]
    Truncated {
        /// Where the item starts.
        offset: usize,
        /// What was being read.
        what: &'static str,
    },
    /// A varint longer than 64 bits.
    #[error("varint at byte {offset} in {what} is longer than 64 bits")]
    VarintOverflow {
        /// Where the varint starts.
        offset: usize,
        /// What was being read.
        what: &'static str,
    },
    /// A number outside the range of its field.
    #[error("{what} at byte {offset} is out of range: {value}")]
    OutOfRange {
        /// Where the number starts.
        offset: usize,
        /// The field.
        what: &'static str,
        /// The number read.
        value: i128,
    },
    /// A count larger than the rest of the input could hold.
    #[error("{what} count {count} at byte {offset} exceeds {max}, the most the remaining input can hold")]
    CountTooLarge {
        /// Where the count starts.
        offset: usize,
        /// What is counted.
        what: &'static str,
        /// The count read.
        count: u64,
        /// The most the remaining bytes allow.
        max: u64,
    },
    /// A string field whose bytes are not UTF-8.
    #[error("invalid UTF-8 in {field} at byte {offset}")]
    InvalidUtf8 {
        /// Where the field starts.
        offset: usize,
        /// The field.
        field: &'static str,
    },
    /// A range of `sd` or `ext` outside its text, reversed, off a char
    /// boundary, or past the last parameter.
    #[error("bad range in {field} at byte {offset}: outside the text, reversed or off a char boundary")]
    BadSpan {
        /// Where the range starts.
        offset: usize,
        /// The field.
        field: &'static str,
    },
    /// A reference past the end of the event's `raw`.
    #[error("{field} at byte {offset} refers to bytes {start}+{len} of a raw line of {raw_len} bytes")]
    BadRawRef {
        /// Where the field starts.
        offset: usize,
        /// The field.
        field: &'static str,
        /// First byte referred to.
        start: u64,
        /// Number of bytes referred to.
        len: u64,
        /// Length of `raw`.
        raw_len: usize,
    },
    /// "Same as an earlier event" where there is no such value (before the
    /// first event, an absent field) or repeating it would exceed the
    /// budget of long repeats.
    #[error("{field} at byte {offset} repeats an earlier event's value, which is absent or over the repeat budget")]
    NoPrevious {
        /// Where the field starts.
        offset: usize,
        /// The field.
        field: &'static str,
    },
    /// A format code other than the five known.
    #[error("unknown format code {code} at byte {offset}")]
    UnknownFormat {
        /// Where the event head is.
        offset: usize,
        /// The code read.
        code: u8,
    },
    /// Flag bits this version does not define.
    #[error("undefined bits set in {what} at byte {offset}")]
    ReservedBits {
        /// Where the flags are.
        offset: usize,
        /// Which flags.
        what: &'static str,
    },
    /// Bytes after the last event.
    #[error("{extra} bytes after the last event at byte {offset}")]
    TrailingBytes {
        /// Where the last event ends.
        offset: usize,
        /// How many bytes follow.
        extra: usize,
    },
}

// ------------------------------------------------------------------ encode

/// Appends one batch holding `events` to `out`.
///
/// Cannot fail: every [`Event`] has a wire form. Runs of equal short values
/// (org, collector, host, app, vendor) and consecutive ids cost about a
/// byte each, so a batch of one org's events from a few sources stays
/// close to the size of the lines themselves.
pub fn encode_batch(events: &[Event], out: &mut Vec<u8>) {
    out.reserve(16 + events.iter().map(|e| e.raw.len() + 48).sum::<usize>());
    let mut repeats = Repeats { batch_start: out.len(), long_bytes: 0 };
    out.extend_from_slice(&HEADER);
    put_varint(out, events.len() as u64);
    for (i, event) in events.iter().enumerate() {
        put_event(out, event, events.get(..i).unwrap_or_default(), &mut repeats);
    }
}

/// The budget of long repeated values (see [`MAX_FREE_REPEAT`]), kept alike
/// by encoder and decoder.
struct Repeats {
    /// Where the batch starts in the buffer.
    batch_start: usize,
    /// Bytes of values over [`MAX_FREE_REPEAT`] sent as repeats so far.
    long_bytes: usize,
}

impl Repeats {
    /// Whether a repeat of `len` bytes whose string head ends at batch
    /// offset `end` is allowed, counting it if so.
    fn allow(&mut self, len: usize, end: usize) -> bool {
        if len <= MAX_FREE_REPEAT {
            return true;
        }
        match self.long_bytes.checked_add(len) {
            Some(total) if total <= end => {
                self.long_bytes = total;
                true
            }
            _ => false,
        }
    }
}

/// `history`: the events of the batch before `e`.
fn put_event(out: &mut Vec<u8>, e: &Event, history: &[Event], repeats: &mut Repeats) {
    let prev = history.last();
    let (params, elements) = e.sd.parts();
    let has_sd = !(params.parts().0.is_empty() && params.is_empty() && elements.is_empty());
    let has_ext = !(e.ext.parts().0.is_empty() && e.ext.is_empty());
    let time_differs = e.time != e.received_at;
    let head = format_code(e.format)
        | if e.truncated { HEAD_TRUNCATED } else { 0 }
        | if has_sd { HEAD_SD } else { 0 }
        | if has_ext { HEAD_EXT } else { 0 }
        | if time_differs { HEAD_TIME } else { 0 };
    out.push(head);

    let strs = str_fields(e);
    let mut present = 0u64;
    present |= if e.org_id.is_some() { P_ORG_ID } else { 0 };
    present |= if e.facility.is_some() { P_FACILITY } else { 0 };
    present |= if e.severity.is_some() { P_SEVERITY } else { 0 };
    present |= ip_kind(e.reporter_ip, prev.map(|p| p.reporter_ip)) << REPORTER_SHIFT;
    for (i, value) in strs.iter().enumerate() {
        if value.is_some() {
            present |= 1 << (STR_SHIFT + i as u32);
        }
    }
    present |= ip_kind(e.src_ip, prev.map(|p| p.src_ip)) << SRC_IP_SHIFT;
    present |= if e.src_port.is_some() { P_SRC_PORT } else { 0 };
    present |= ip_kind(e.dst_ip, prev.map(|p| p.dst_ip)) << DST_IP_SHIFT;
    present |= if e.dst_port.is_some() { P_DST_PORT } else { 0 };
    put_varint(out, present);

    let prev_id = prev.map_or(0, |p| p.id);
    put_varint(out, zigzag(e.id.wrapping_sub(prev_id) as i64));
    put_time(out, e.received_at, prev.map_or(0, |p| p.received_at.unix_secs()));
    if time_differs {
        put_time(out, e.time, e.received_at.unix_secs());
    }
    put_varint(out, e.raw.len() as u64);
    out.extend_from_slice(&e.raw);

    if let Some(OrgId(id)) = e.org_id {
        put_varint(out, u64::from(id));
    }
    put_ip(out, e.reporter_ip, present >> REPORTER_SHIFT);
    if let Some(f) = e.facility {
        out.push(f);
    }
    if let Some(s) = e.severity {
        out.push(s);
    }
    for (i, value) in strs.iter().enumerate() {
        if let Some(value) = value {
            put_str(out, value, i, history, (i == MESSAGE).then_some(&e.raw[..]), repeats);
        }
    }
    put_ip(out, e.src_ip, present >> SRC_IP_SHIFT);
    if let Some(p) = e.src_port {
        put_varint(out, u64::from(p));
    }
    put_ip(out, e.dst_ip, present >> DST_IP_SHIFT);
    if let Some(p) = e.dst_port {
        put_varint(out, u64::from(p));
    }
    if has_sd {
        let text = put_pairs(out, params, &e.raw);
        let n_params = params.len();
        put_varint(out, elements.len() as u64);
        let mut ids = Spans::default();
        let mut prev_end = 0usize;
        for &[id_start, id_end, first, end] in elements {
            ids.put(out, text, id_start, id_end);
            // What `SdElement::params` yields: indices past the last
            // parameter read as nothing, a reversed range as empty.
            let first = first.min(n_params);
            let end = end.min(n_params).max(first);
            put_varint(out, zigzag(first as i64 - prev_end as i64));
            put_varint(out, (end - first) as u64);
            prev_end = end;
        }
    }
    if has_ext {
        put_pairs(out, &e.ext, &e.raw);
    }
}

/// Writes the text and ranges of `pairs`; returns the text.
fn put_pairs<'p>(out: &mut Vec<u8>, pairs: &'p Pairs, raw: &[u8]) -> &'p str {
    let (text, spans) = pairs.parts();
    let (start, len) = raw_prefix(raw, text.as_bytes());
    put_varint(out, len as u64);
    if len > 0 {
        put_varint(out, start as u64);
    }
    let tail = text.as_bytes().get(len..).unwrap_or_default();
    put_varint(out, tail.len() as u64);
    out.extend_from_slice(tail);
    put_varint(out, spans.len() as u64);
    let (mut keys, mut values) = (Spans::default(), Spans::default());
    let mut cursor = 0;
    for &[ks, ke, vs, ve] in spans {
        keys.cursor = cursor;
        keys.put(out, text, ks, ke);
        values.cursor = keys.cursor;
        values.put(out, text, vs, ve);
        cursor = values.cursor;
    }
    text
}

/// Ranges into a text, each written as its length and, when its start is
/// not the end of the previous range plus the same gap as last time of its
/// kind (`k=v k=v`: keys one byte after a value, values one after a key),
/// the new gap: most ranges cost one byte.
#[derive(Default)]
struct Spans {
    /// End of the previous range.
    cursor: usize,
    /// Start minus the previous end, last time it was sent.
    gap: i64,
}

impl Spans {
    /// A range that is not text of `text` (it reads as "") goes out as the
    /// empty range at the cursor.
    fn put(&mut self, out: &mut Vec<u8>, text: &str, start: usize, end: usize) {
        let (start, end) = if text.get(start..end).is_some() { (start, end) } else { (self.cursor, self.cursor) };
        let gap = start as i64 - self.cursor as i64;
        let len = (end - start) as u64;
        if gap == self.gap {
            put_varint(out, len << 1);
        } else {
            put_varint(out, len << 1 | 1);
            put_varint(out, zigzag(gap));
            self.gap = gap;
        }
        self.cursor = end;
    }

    /// Reads what [`Spans::put`] wrote; the range must be text of `text`.
    fn read(&mut self, r: &mut Reader<'_>, text: &str, field: &'static str) -> Result<(usize, usize), WireError> {
        let offset = r.pos;
        let head = r.varint(field)?;
        if head & 1 != 0 {
            self.gap = unzigzag(r.varint(field)?);
        }
        let start =
            i64::try_from(self.cursor).ok().and_then(|c| c.checked_add(self.gap)).and_then(|s| usize::try_from(s).ok());
        let end = start.zip(usize::try_from(head >> 1).ok()).and_then(|(s, n)| s.checked_add(n));
        match (start, end) {
            (Some(start), Some(end)) if text.get(start..end).is_some() => {
                self.cursor = end;
                Ok((start, end))
            }
            _ => Err(WireError::BadSpan { offset, field }),
        }
    }
}

/// The longest prefix of `text` found in `raw`, as (start in raw, length);
/// (0, 0) when none of at least [`MIN_TEXT_REF`] bytes is found.
fn raw_prefix(raw: &[u8], text: &[u8]) -> (usize, usize) {
    let Some(needle) = text.get(..MIN_TEXT_REF) else { return (0, 0) };
    let Some((&first, _)) = needle.split_first() else { return (0, 0) };
    // Candidates by their first byte, then a fixed-size compare: cheaper
    // than setting up a substring searcher per text, which was a tenth of
    // the encoding time (the texts device parsers build are not in the line
    // at all, and are short).
    let head = |bytes: &[u8]| bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok());
    let needle_head = head(needle);
    for start in memchr::memchr_iter(first, raw) {
        let rest = raw.get(start..).unwrap_or_default();
        if head(rest) == needle_head && rest.starts_with(needle) {
            let len = rest.iter().zip(text).take_while(|(a, b)| a == b).count();
            return (start, len);
        }
    }
    (0, 0)
}

/// String field number `field` of an event whose batch predecessors are
/// `history`.
fn put_str(out: &mut Vec<u8>, value: &str, field: usize, history: &[Event], raw: Option<&[u8]>, repeats: &mut Repeats) {
    let len = value.len() as u64;
    // Short values are looked for in the last few events (sources take
    // turns in a batch), longer ones only in the previous event.
    let window = if value.len() <= MAX_FREE_REPEAT { LOOKBACK } else { 1 };
    let back = history.iter().rev().take(window).position(|p| str_field(p, field).as_deref() == Some(value));
    if let Some(back) = back
        && repeats.allow(value.len(), out.len() + 1 - repeats.batch_start)
    {
        out.push(back as u8);
        return;
    }
    if let Some(start) = raw.and_then(|raw| find_in_raw(raw, value.as_bytes())) {
        put_varint(out, LOOKBACK as u64 + 1 + 2 * len);
        put_varint(out, start as u64);
        return;
    }
    put_varint(out, LOOKBACK as u64 + 2 * len);
    out.extend_from_slice(value.as_bytes());
}

/// Where `value` is in `raw`: usually its end (a syslog message, a CEF
/// payload, the whole line of a raw event).
fn find_in_raw(raw: &[u8], value: &[u8]) -> Option<usize> {
    if value.len() < MIN_RAW_REF {
        return None;
    }
    if raw.ends_with(value) {
        return Some(raw.len() - value.len());
    }
    memchr::memmem::find(raw, value)
}

fn put_time(out: &mut Vec<u8>, t: EventTime, base_secs: i64) {
    put_varint(out, zigzag(t.unix_secs().wrapping_sub(base_secs)));
    put_varint(out, u64::from(t.subsec_nanos()));
    put_varint(out, zigzag(i64::from(t.offset_secs())));
}

fn put_ip(out: &mut Vec<u8>, ip: Option<IpAddr>, kind: u64) {
    match (ip, kind & 0b11) {
        (Some(IpAddr::V4(a)), IP_V4) => out.extend_from_slice(&a.octets()),
        (Some(IpAddr::V6(a)), IP_V6) => out.extend_from_slice(&a.octets()),
        _ => {}
    }
}

fn ip_kind(ip: Option<IpAddr>, prev: Option<Option<IpAddr>>) -> u64 {
    match ip {
        None => IP_ABSENT,
        Some(ip) if prev == Some(Some(ip)) => IP_REPEAT,
        Some(IpAddr::V4(_)) => IP_V4,
        Some(IpAddr::V6(_)) => IP_V6,
    }
}

fn format_code(format: Format) -> u8 {
    match format {
        Format::Rfc5424 => 0,
        Format::Rfc3164 => 1,
        Format::Cef => 2,
        Format::Leef => 3,
        Format::Raw => 4,
    }
}

#[inline(always)]
fn put_varint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
    } else {
        put_long_varint(out, v);
    }
}

#[inline(never)]
fn put_long_varint(out: &mut Vec<u8>, v: u64) {
    // One capacity check for the whole number, not one per byte.
    let mut buf = [0u8; 10];
    let mut v = v;
    let mut n = 0;
    for slot in buf.iter_mut() {
        n += 1;
        if v < 0x80 {
            *slot = v as u8;
            break;
        }
        *slot = v as u8 | 0x80;
        v >>= 7;
    }
    out.extend_from_slice(buf.get(..n).unwrap_or_default());
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// String field number `i` in wire order (see [`STR_NAMES`]).
fn str_field(e: &Event, i: usize) -> &Option<Str> {
    match i {
        0 => &e.org,
        1 => &e.collector,
        2 => &e.host,
        3 => &e.app,
        4 => &e.procid,
        5 => &e.msgid,
        6 => &e.message,
        7 => &e.vendor,
        8 => &e.product,
        9 => &e.product_version,
        10 => &e.signature_id,
        11 => &e.name,
        12 => &e.cef_severity,
        13 => &e.event_type,
        14 => &e.user,
        15 => &e.action,
        16 => &e.outcome,
        _ => &e.parse_error,
    }
}

/// The string fields in wire order (see [`STR_NAMES`]).
fn str_fields(e: &Event) -> [&Option<Str>; 18] {
    [
        &e.org,
        &e.collector,
        &e.host,
        &e.app,
        &e.procid,
        &e.msgid,
        &e.message,
        &e.vendor,
        &e.product,
        &e.product_version,
        &e.signature_id,
        &e.name,
        &e.cef_severity,
        &e.event_type,
        &e.user,
        &e.action,
        &e.outcome,
        &e.parse_error,
    ]
}

// ------------------------------------------------------------------ decode

/// Decodes one batch that fills `bytes` exactly. `raw` of each event is a
/// copy; see [`decode_batch_bytes`] to share the input instead.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Event>, WireError> {
    let mut events = Vec::new();
    decode_batch_into(bytes, &mut events)?;
    Ok(events)
}

/// Decodes one batch that fills `bytes` exactly, appending its events to
/// `out` (clear it first to reuse its allocation). On error `out` is left
/// as it was: no event of a bad batch is kept.
pub fn decode_batch_into(bytes: &[u8], out: &mut Vec<Event>) -> Result<(), WireError> {
    decode_with(bytes, out, |range| Bytes::copy_from_slice(bytes.get(range).unwrap_or_default()))
}

/// [`decode_batch`] over a shared buffer: each event's `raw` is a slice of
/// `bytes` (no copy of the largest field). The events keep the whole
/// buffer alive until the last of them is dropped.
pub fn decode_batch_bytes(bytes: &Bytes) -> Result<Vec<Event>, WireError> {
    let mut events = Vec::new();
    decode_with(bytes, &mut events, |range| {
        if range.start <= range.end && range.end <= bytes.len() { bytes.slice(range) } else { Bytes::new() }
    })?;
    Ok(events)
}

fn decode_with(bytes: &[u8], out: &mut Vec<Event>, raw_of: impl Fn(Range<usize>) -> Bytes) -> Result<(), WireError> {
    let kept = out.len();
    let result = decode_events(bytes, out, &raw_of);
    if result.is_err() {
        out.truncate(kept);
    }
    result
}

fn decode_events(bytes: &[u8], out: &mut Vec<Event>, raw_of: &impl Fn(Range<usize>) -> Bytes) -> Result<(), WireError> {
    let mut r = Reader { buf: bytes, pos: 0, repeats: Repeats { batch_start: 0, long_bytes: 0 } };
    let magic: [u8; 3] = r.array("batch header")?;
    if magic != [HEADER[0], HEADER[1], HEADER[2]] {
        return Err(WireError::BadMagic { found: magic });
    }
    let version = r.byte("batch header")?;
    if version != HEADER[3] {
        return Err(WireError::UnsupportedVersion { found: version });
    }
    let count = r.count(MIN_EVENT_BYTES, "event")?;
    out.reserve(count.min(RESERVE_EVENTS));
    let first = out.len();
    for _ in 0..count {
        let history = out.get(first..).unwrap_or_default();
        let event = read_event(&mut r, history, raw_of)?;
        out.push(event);
    }
    if r.pos != bytes.len() {
        return Err(WireError::TrailingBytes { offset: r.pos, extra: r.remaining() });
    }
    Ok(())
}

fn read_event(
    r: &mut Reader<'_>,
    history: &[Event],
    raw_of: &impl Fn(Range<usize>) -> Bytes,
) -> Result<Event, WireError> {
    let prev = history.last();
    let head_at = r.pos;
    let head = r.byte("event head")?;
    if head & HEAD_RESERVED != 0 {
        return Err(WireError::ReservedBits { offset: head_at, what: "event head" });
    }
    let format = match head & FORMAT_BITS {
        0 => Format::Rfc5424,
        1 => Format::Rfc3164,
        2 => Format::Cef,
        3 => Format::Leef,
        4 => Format::Raw,
        code => return Err(WireError::UnknownFormat { offset: head_at, code }),
    };
    let present_at = r.pos;
    let present = r.varint("presence bits")?;
    if present & !P_KNOWN != 0 {
        return Err(WireError::ReservedBits { offset: present_at, what: "presence bits" });
    }

    let prev_id = prev.map_or(0, |p| p.id);
    let id = prev_id.wrapping_add(unzigzag(r.varint("id")?) as u64);
    let received_at = r.time(prev.map_or(0, |p| p.received_at.unix_secs()), "received_at")?;
    let time = if head & HEAD_TIME != 0 { r.time(received_at.unix_secs(), "time")? } else { received_at };
    let raw_len = r.varint("raw")?;
    let raw_range = r.take_range(raw_len, "raw")?;
    let raw = r.buf.get(raw_range.clone()).unwrap_or_default();

    let mut e = Event::empty(raw_of(raw_range), received_at);
    e.id = id;
    e.time = time;
    e.format = format;
    e.truncated = head & HEAD_TRUNCATED != 0;
    if present & P_ORG_ID != 0 {
        e.org_id = Some(OrgId(r.number("org_id")?));
    }
    e.reporter_ip = r.ip(present >> REPORTER_SHIFT, prev.map(|p| p.reporter_ip), present_at, "reporter_ip")?;
    if present & P_FACILITY != 0 {
        e.facility = Some(r.byte("facility")?);
    }
    if present & P_SEVERITY != 0 {
        e.severity = Some(r.byte("severity")?);
    }
    let mut strs: [Option<Str>; 18] = Default::default();
    for (i, slot) in strs.iter_mut().enumerate() {
        if present & (1 << (STR_SHIFT + i as u32)) != 0 {
            *slot = Some(r.string(raw, history, i)?);
        }
    }
    let [
        org,
        collector,
        host,
        app,
        procid,
        msgid,
        message,
        vendor,
        product,
        product_version,
        signature_id,
        name,
        cef_severity,
        event_type,
        user,
        action,
        outcome,
        parse_error,
    ] = strs;
    (e.org, e.collector, e.host, e.app, e.procid, e.msgid) = (org, collector, host, app, procid, msgid);
    (e.message, e.vendor, e.product, e.product_version) = (message, vendor, product, product_version);
    (e.signature_id, e.name, e.cef_severity, e.event_type) = (signature_id, name, cef_severity, event_type);
    (e.user, e.action, e.outcome, e.parse_error) = (user, action, outcome, parse_error);
    e.src_ip = r.ip(present >> SRC_IP_SHIFT, prev.map(|p| p.src_ip), present_at, "src_ip")?;
    if present & P_SRC_PORT != 0 {
        e.src_port = Some(r.number("src_port")?);
    }
    e.dst_ip = r.ip(present >> DST_IP_SHIFT, prev.map(|p| p.dst_ip), present_at, "dst_ip")?;
    if present & P_DST_PORT != 0 {
        e.dst_port = Some(r.number("dst_port")?);
    }
    if head & HEAD_SD != 0 {
        e.sd = r.structured_data(raw)?;
    }
    if head & HEAD_EXT != 0 {
        e.ext = r.pairs(raw, "ext")?;
    }
    Ok(e)
}

/// A cursor over untrusted input: every read is checked, every error
/// carries the offset.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    repeats: Repeats,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, WireError> {
        let b = *self.buf.get(self.pos).ok_or(WireError::Truncated { offset: self.pos, what })?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, WireError> {
        let start = self.pos;
        let mut value = 0u64;
        let mut shift = 0u32;
        loop {
            let b = *self.buf.get(self.pos).ok_or(WireError::Truncated { offset: start, what })?;
            self.pos += 1;
            // The tenth byte holds bit 63 only.
            if shift == 63 && b > 1 {
                return Err(WireError::VarintOverflow { offset: start, what });
            }
            value |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(value);
            }
            shift += 7;
        }
    }

    /// A varint that must fit `T`.
    fn number<T: TryFrom<u64>>(&mut self, what: &'static str) -> Result<T, WireError> {
        let offset = self.pos;
        let value = self.varint(what)?;
        T::try_from(value).map_err(|_| WireError::OutOfRange { offset, what, value: i128::from(value) })
    }

    /// A count of items of at least `min_bytes` each, checked against the
    /// bytes left before the caller reserves room for them.
    fn count(&mut self, min_bytes: usize, what: &'static str) -> Result<usize, WireError> {
        let offset = self.pos;
        let count = self.varint(what)?;
        let max = self.remaining() / min_bytes;
        match usize::try_from(count) {
            Ok(n) if n <= max => Ok(n),
            _ => Err(WireError::CountTooLarge { offset, what, count, max: max as u64 }),
        }
    }

    fn take_range(&mut self, len: u64, what: &'static str) -> Result<Range<usize>, WireError> {
        match usize::try_from(len) {
            Ok(n) if n <= self.remaining() => {
                let range = self.pos..self.pos + n;
                self.pos += n;
                Ok(range)
            }
            _ => Err(WireError::Truncated { offset: self.pos, what }),
        }
    }

    fn take(&mut self, len: u64, what: &'static str) -> Result<&'a [u8], WireError> {
        let range = self.take_range(len, what)?;
        Ok(self.buf.get(range).unwrap_or_default())
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let offset = self.pos;
        let bytes = self.take(N as u64, what)?;
        bytes.try_into().map_err(|_| WireError::Truncated { offset, what })
    }

    fn time(&mut self, base_secs: i64, what: &'static str) -> Result<EventTime, WireError> {
        let secs = base_secs.wrapping_add(unzigzag(self.varint(what)?));
        let nanos_at = self.pos;
        let nanos = self.varint(what)?;
        if nanos >= 1_000_000_000 {
            return Err(WireError::OutOfRange { offset: nanos_at, what, value: i128::from(nanos) });
        }
        let offset_at = self.pos;
        let offset = unzigzag(self.varint(what)?);
        let offset = i32::try_from(offset).map_err(|_| WireError::OutOfRange {
            offset: offset_at,
            what,
            value: i128::from(offset),
        })?;
        Ok(EventTime::from_unix(secs, nanos as u32, offset))
    }

    fn ip(
        &mut self,
        kind: u64,
        prev: Option<Option<IpAddr>>,
        present_at: usize,
        what: &'static str,
    ) -> Result<Option<IpAddr>, WireError> {
        match kind & 0b11 {
            IP_ABSENT => Ok(None),
            IP_V4 => Ok(Some(IpAddr::V4(Ipv4Addr::from(self.array::<4>(what)?)))),
            IP_V6 => Ok(Some(IpAddr::V6(Ipv6Addr::from(self.array::<16>(what)?)))),
            _ => match prev.flatten() {
                Some(ip) => Ok(Some(ip)),
                None => Err(WireError::NoPrevious { offset: present_at, field: what }),
            },
        }
    }

    /// `len` bytes at `start` of this event's raw line.
    fn raw_ref<'r>(
        &mut self,
        raw: &'r [u8],
        len: u64,
        offset: usize,
        field: &'static str,
    ) -> Result<&'r [u8], WireError> {
        let start = self.varint(field)?;
        let bad = WireError::BadRawRef { offset, field, start, len, raw_len: raw.len() };
        let (Ok(s), Ok(n)) = (usize::try_from(start), usize::try_from(len)) else { return Err(bad) };
        s.checked_add(n).and_then(|end| raw.get(s..end)).ok_or(bad)
    }

    /// String field number `i` of an event whose batch predecessors are
    /// `history`.
    fn string(&mut self, raw: &[u8], history: &[Event], i: usize) -> Result<Str, WireError> {
        let field = STR_NAMES.get(i).copied().unwrap_or("string");
        let offset = self.pos;
        let h = self.varint(field)?;
        let Some(h) = h.checked_sub(LOOKBACK as u64) else {
            let back = history.len().checked_sub(h as usize + 1).and_then(|k| history.get(k));
            return match back.and_then(|e| str_field(e, i).as_ref()) {
                Some(value) if self.repeats.allow(value.len(), self.pos) => Ok(value.clone()),
                _ => Err(WireError::NoPrevious { offset, field }),
            };
        };
        let len = h >> 1;
        let bytes = if h & 1 == 0 { self.take(len, field)? } else { self.raw_ref(raw, len, offset, field)? };
        std::str::from_utf8(bytes).map(Str::from).map_err(|_| WireError::InvalidUtf8 { offset, field })
    }

    /// A text buffer: a prefix from `raw`, then literal bytes.
    fn text(&mut self, raw: &[u8], field: &'static str) -> Result<String, WireError> {
        let offset = self.pos;
        let prefix_len = self.varint(field)?;
        let prefix = if prefix_len > 0 { self.raw_ref(raw, prefix_len, offset, field)? } else { &[] };
        let tail_len = self.varint(field)?;
        let tail = self.take(tail_len, field)?;
        let mut text = Vec::with_capacity(prefix.len() + tail.len());
        text.extend_from_slice(prefix);
        text.extend_from_slice(tail);
        String::from_utf8(text).map_err(|_| WireError::InvalidUtf8 { offset, field })
    }

    fn pairs(&mut self, raw: &[u8], field: &'static str) -> Result<Pairs, WireError> {
        let text = self.text(raw, field)?;
        let offset = self.pos;
        let n = self.count(2 * MIN_SPAN_BYTES, field)?;
        let mut spans = Vec::with_capacity(n);
        let (mut keys, mut values) = (Spans::default(), Spans::default());
        let mut cursor = 0;
        for _ in 0..n {
            keys.cursor = cursor;
            let (ks, ke) = keys.read(self, &text, field)?;
            values.cursor = ke;
            let (vs, ve) = values.read(self, &text, field)?;
            cursor = ve;
            spans.push([ks, ke, vs, ve]);
        }
        Pairs::from_parts(text, spans).ok_or(WireError::BadSpan { offset, field })
    }

    fn structured_data(&mut self, raw: &[u8]) -> Result<StructuredData, WireError> {
        const FIELD: &str = "sd";
        let params = self.pairs(raw, FIELD)?;
        let offset = self.pos;
        let n = self.count(MIN_SPAN_BYTES + 2, FIELD)?;
        let mut elements = Vec::with_capacity(n);
        let (text, _) = params.parts();
        let mut ids = Spans::default();
        let mut prev_end = 0usize;
        for _ in 0..n {
            let (id_start, id_end) = ids.read(self, text, FIELD)?;
            let at = self.pos;
            let delta = unzigzag(self.varint(FIELD)?);
            let len = self.varint(FIELD)?;
            let first =
                i64::try_from(prev_end).ok().and_then(|p| p.checked_add(delta)).and_then(|f| usize::try_from(f).ok());
            let end = first.zip(usize::try_from(len).ok()).and_then(|(f, n)| f.checked_add(n));
            match (first, end) {
                (Some(first), Some(end)) if end <= params.len() => {
                    elements.push([id_start, id_end, first, end]);
                    prev_end = end;
                }
                _ => return Err(WireError::BadSpan { offset: at, field: FIELD }),
            }
        }
        StructuredData::from_parts(params, elements).ok_or(WireError::BadSpan { offset, field: FIELD })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeviceParsers, Parser};
    use proptest::prelude::*;

    fn received() -> EventTime {
        EventTime::from_unix(1_763_820_000, 123_456_789, 3600)
    }

    /// One line of each shape the collector hands on.
    const LINES: &[&[u8]] = &[
        b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
        b"<38>Nov 22 10:00:00 bastion sshd[4242]: Failed password for root from 203.0.113.45 port 51234 ssh2",
        b"<38>Nov 22 10:00:01 bastion sshd[4243]: Accepted publickey for alice from 2001:db8::7 port 40022 ssh2",
        b"<85>Nov 22 10:00:02 db-01 sudo:   ubuntu : TTY=pts/4 ; PWD=/home/ubuntu ; USER=root ; COMMAND=/usr/bin/id",
        b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" \
          eventSource=\"Application\" eventID=\"1011\"][examplePriority@32473 class=\"high\" class=\"low\"] \
          An application event log entry",
        b"<165>1 2003-10-11T22:14:15.000003-07:00 host app 1234 - [a@1 k=\"esc \\\"q\\\" \\\\ \\] end\" \
          k=\"again\"][b@2][a@1 k=\"third\"] message with \xc3\xa9",
        b"<13>1 - - - - - -",
        b"<0>1 2026-11-22T10:00:00+05:30 h a p m - ",
        b"CEF:0|Acme|Gateway|2.1|410|Login failed|7|src=198.51.100.4 spt=51515 dst=192.0.2.1 dpt=22 suser=admin \
          act=blocked outcome=failure rt=1763800000000",
        b"<13>Nov 22 10:00:00 fw1 CEF:0|Ac\\|me|Gate\\\\way|2.1|100|Allowed|3|src=10.1.2.3 msg=a\\=b c\\nd cs1=x cs1=y",
        b"CEF:0|Fortinet|FortiGate|7.2.5|0000000013|traffic:forward close|3|rt=1763806542000 src=10.100.238.189 \
          spt=13486 dst=198.51.100.42 dpt=22 proto=6 act=close suser=git cs1Label=policyname cs1=allow-web",
        b"LEEF:2.0|Acme|Proxy|1.0|deny|^|src=203.0.113.9^dst=192.0.2.80^srcPort=40000^dstPort=8080^usrName=bob",
        b"LEEF:1.0|Microsoft|MSExchange|4.0|15345|src=10.50.1.1\tdst=2.10.20.20\tsev=5",
        b"no header at all \xff\xfe and not UTF-8",
        b"<13>Nov 22 10:00:00 host app: \xff invalid UTF-8 in the message",
        b"",
    ];

    /// The lines as a collector hands them on: parsed, classified,
    /// numbered, assigned an org, with v4, v6 and no reporter addresses.
    fn collected() -> Vec<Event> {
        let parser = Parser::new();
        let devices = DeviceParsers::builtin().unwrap();
        let mut events = Vec::new();
        for (i, line) in LINES.iter().enumerate() {
            let mut e = parser.parse(Bytes::copy_from_slice(line), received().add_secs(i as i64));
            devices.classify(&mut e);
            e.id = (7 << 52) | (1_763_820_000 << 20) | i as u64;
            e.org_id = Some(OrgId(42));
            e.org = Some("acme".into());
            e.collector = Some("collector-eu-west-1.example.net".into());
            e.reporter_ip = match i % 3 {
                0 => Some("192.0.2.7".parse().unwrap()),
                1 => Some("2001:db8::1:2".parse().unwrap()),
                _ => None,
            };
            e.truncated = i == 5;
            events.push(e);
        }
        events
    }

    fn round_trip(events: &[Event]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_batch(events, &mut buf);
        assert_eq!(decode_batch(&buf).unwrap(), events);
        let shared = Bytes::from(buf.clone());
        let decoded = decode_batch_bytes(&shared).unwrap();
        assert_eq!(decoded, events);
        buf
    }

    #[test]
    fn parsed_events_round_trip_exactly() {
        let events = collected();
        // The lines cover what they claim to.
        let formats: Vec<Format> = events.iter().map(|e| e.format).collect();
        for f in [Format::Rfc3164, Format::Rfc5424, Format::Cef, Format::Leef, Format::Raw] {
            assert!(formats.contains(&f), "{f}");
        }
        assert!(events.iter().any(|e| e.event_type.is_some() && e.src_ip.is_some() && e.user.is_some()));
        assert!(events.iter().any(|e| matches!(e.src_ip, Some(IpAddr::V6(_)))));
        assert!(
            events.iter().any(|e| e.sd.elements().any(|el| el.params().filter(|(k, _)| *k == "class").count() == 2))
        );
        assert!(events.iter().any(|e| e.ext.iter().filter(|(k, _)| *k == "cs1").count() == 2));
        assert!(events.iter().any(|e| e.time != e.received_at));
        assert!(events.iter().any(|e| std::str::from_utf8(&e.raw).is_err()));
        let buf = round_trip(&events);

        // A message or a copied region found in the line is not sent again.
        let count = |haystack: &[u8], needle: &[u8]| memchr::memmem::find_iter(haystack, needle).count();
        let texts = events.iter().flat_map(|e| [e.message.as_deref().unwrap_or_default(), e.ext.parts().0]);
        for text in texts.filter(|t| t.len() >= MIN_TEXT_REF) {
            let in_lines: usize = events.iter().map(|e| count(&e.raw, text.as_bytes())).sum();
            if in_lines > 0 {
                assert_eq!(count(&buf, text.as_bytes()), in_lines, "{text}");
            }
        }
    }

    #[test]
    fn shared_decode_slices_raw_from_the_input() {
        let events = collected();
        let mut buf = Vec::new();
        encode_batch(&events, &mut buf);
        let shared = Bytes::from(buf);
        let range = shared.as_ptr() as usize..shared.as_ptr() as usize + shared.len();
        for e in decode_batch_bytes(&shared).unwrap() {
            if !e.raw.is_empty() {
                assert!(range.contains(&(e.raw.as_ptr() as usize)));
            }
        }
    }

    #[test]
    fn none_and_empty_strings_stay_apart() {
        let mut empty = Event::empty(Bytes::new(), EventTime::UNIX_EPOCH);
        let mut none = empty.clone();
        for e in [&mut empty, &mut none] {
            e.ext.push("", "");
            e.sd.push("", [("", "")]);
        }
        empty.org = Some(Str::default());
        empty.host = Some(Str::default());
        empty.message = Some(Str::default());
        empty.parse_error = Some(Str::default());
        // Twice each way, so the second takes the "previous event" path.
        let events = vec![empty.clone(), none.clone(), empty.clone(), empty, none.clone(), none];
        let decoded = decode_batch(&round_trip(&events)).unwrap();
        assert_eq!(decoded[2].host.as_deref(), Some(""));
        assert_eq!(decoded[5].host, None);
    }

    fn every_field(raw: &'static [u8]) -> Event {
        let mut e = Event::empty(Bytes::from_static(raw), EventTime::from_unix(i64::MIN, 999_999_999, i32::MIN));
        e.id = u64::MAX;
        e.time = EventTime::from_unix(i64::MAX, 1, i32::MAX);
        e.org_id = Some(OrgId(u32::MAX));
        e.reporter_ip = Some("::ffff:192.0.2.1".parse().unwrap());
        e.format = Format::Leef;
        (e.facility, e.severity) = (Some(255), Some(0));
        for (i, field) in [
            &mut e.org,
            &mut e.collector,
            &mut e.host,
            &mut e.app,
            &mut e.procid,
            &mut e.msgid,
            &mut e.vendor,
            &mut e.product,
            &mut e.product_version,
            &mut e.signature_id,
            &mut e.name,
            &mut e.cef_severity,
            &mut e.event_type,
            &mut e.user,
            &mut e.action,
            &mut e.outcome,
            &mut e.parse_error,
        ]
        .into_iter()
        .enumerate()
        {
            *field = Some(format!("value {i} é ✓").into());
        }
        e.message = Some("the message at the end".into());
        e.sd.push("id@1", [("k", "v"), ("k", "w")]);
        e.sd.push("x", []);
        e.ext = [("a", "1"), ("b", "ü"), ("a", "3")].into_iter().collect();
        (e.src_ip, e.src_port) = (Some("0.0.0.0".parse().unwrap()), Some(0));
        (e.dst_ip, e.dst_port) = (Some("ffff::ffff".parse().unwrap()), Some(u16::MAX));
        e.truncated = true;
        e
    }

    #[test]
    fn every_field_at_its_extremes_round_trips() {
        let a = every_field(b"\x00\xff the message at the end");
        let mut b = every_field(b"other");
        b.id = 0;
        b.received_at = EventTime::from_unix(i64::MAX, 0, 0);
        b.time = b.received_at;
        b.dst_ip = Some("192.0.2.1".parse().unwrap());
        round_trip(&[a.clone(), b.clone(), a, b]);
    }

    #[test]
    fn repeated_short_values_cost_a_byte() {
        let line =
            b"<38>Nov 22 10:00:00 bastion sshd[4242]: Failed password for root from 203.0.113.45 port 51234 ssh2";
        let mut events = Vec::new();
        let mut template = collected().swap_remove(1);
        template.raw = Bytes::from_static(line);
        for i in 0..100u64 {
            let mut e = template.clone();
            e.id += i;
            e.received_at = e.received_at.add_secs(i as i64 / 10);
            events.push(e);
        }
        let buf = round_trip(&events);
        let per_event = buf.len() / events.len();
        // The line, its message by reference, a byte per repeated field;
        // what is new is the times' fractions, the port and the `ext` pair
        // the device parser added (27 bytes).
        assert!(per_event < line.len() + 64, "{per_event} bytes per event");
    }

    #[test]
    fn short_values_repeat_from_a_few_events_back() {
        let mut events = Vec::new();
        for i in 0..24 {
            let mut e = Event::empty(Bytes::new(), EventTime::UNIX_EPOCH);
            e.host = Some(format!("host-{}", i % 5).into());
            e.app = Some(format!("app-{}", i % 8).into());
            e.user = Some(format!("u-{}", i % 9).into());
            events.push(e);
        }
        let buf = round_trip(&events);
        // Per event 9 bytes of head, presence, id, times and raw; the first
        // 5 hosts (7 bytes) and 8 apps (6 bytes) in full, then a byte each;
        // users, 9 events apart, in full each time (4 bytes).
        assert_eq!(buf.len(), 5 + 24 * 9 + (5 * 7 + 19) + (8 * 6 + 16) + 24 * 4);

        // A repeat from two events back in the second event.
        let head = [4u8, 0x80, 1, 0, 0, 0, 0, 0];
        let crafted = [&HEADER[..], &[2], &head, &[20], b"host-0", &head, &[1]].concat();
        let err = decode_batch(&crafted).unwrap_err();
        assert_eq!(err, WireError::NoPrevious { offset: 5 + 8 + 7 + 8, field: "host" });
        let crafted = [&HEADER[..], &[2], &head, &[20], b"host-0", &head, &[0]].concat();
        assert_eq!(decode_batch(&crafted).unwrap()[1].host.as_deref(), Some("host-0"));
    }

    #[test]
    fn long_repeats_stay_within_the_bytes_read() {
        let mut e = Event::empty(Bytes::new(), EventTime::UNIX_EPOCH);
        e.org = Some("a".repeat(60).into());
        let buf = round_trip(&[e.clone(), e.clone(), e]);
        // The second is a repeat (60 bytes repeated by byte 82), the third
        // is sent again (120 bytes by byte 90 would be over the budget).
        let literal = [&[4u8, 32, 0, 0, 0, 0, 0, 0x80, 1][..], &[b'a'; 60]].concat();
        let repeat = [4u8, 32, 0, 0, 0, 0, 0, 0];
        let expected = [&HEADER[..], &[3], &literal, &repeat, &literal].concat();
        assert_eq!(buf, expected);
        let crafted = [&HEADER[..], &[3], &literal, &repeat, &repeat].concat();
        assert_eq!(decode_batch(&crafted).unwrap_err(), WireError::NoPrevious { offset: 89, field: "org" });
    }

    #[test]
    fn ranges_that_are_not_text_are_sent_empty() {
        let mut ext = Pairs::with_source("aé=b", 2);
        ext.push_within(0..2, 4..5); // key ends inside "é"
        ext.push_within(0..1, 3..99); // value past the end
        #[allow(clippy::reversed_empty_ranges)]
        ext.push_within(3..1, 4..5); // reversed
        ext.push("k", "v");
        let mut sd = StructuredData::with_source("[idé x=\"1\"]");
        sd.open_within(1..4); // inside "é"
        sd.params_mut().push_within(6..7, 9..10);
        sd.close();
        sd.open_within(1..3);
        sd.close();
        let mut e = Event::empty(Bytes::new(), received());
        (e.ext, e.sd) = (ext.clone(), sd.clone());
        let mut buf = Vec::new();
        encode_batch(&[e], &mut buf);
        let back = decode_batch(&buf).unwrap().remove(0);
        assert_eq!(back.ext.iter().collect::<Vec<_>>(), ext.iter().collect::<Vec<_>>());
        let elements = |sd: &StructuredData| -> Vec<(String, Vec<(String, String)>)> {
            sd.elements()
                .map(|el| (el.id.to_owned(), el.params().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()))
                .collect()
        };
        assert_eq!(elements(&back.sd), elements(&sd));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut buf = Vec::new();
        encode_batch(&collected(), &mut buf);
        for n in 0..buf.len() {
            let err = decode_batch(&buf[..n]).unwrap_err();
            assert!(matches!(err, WireError::Truncated { .. } | WireError::CountTooLarge { .. }), "{n}: {err}");
        }
    }

    #[test]
    fn header_and_trailer_mismatches() {
        assert_eq!(decode_batch(b"").unwrap_err(), WireError::Truncated { offset: 0, what: "batch header" });
        assert_eq!(decode_batch(b"VGC1\x00").unwrap_err(), WireError::BadMagic { found: *b"VGC" });
        assert_eq!(decode_batch(b"VGB2\x00").unwrap_err(), WireError::UnsupportedVersion { found: b'2' });
        assert_eq!(decode_batch(b"VGB1").unwrap_err(), WireError::Truncated { offset: 4, what: "event" });
        assert_eq!(decode_batch(b"VGB1\x00").unwrap(), vec![]);
        assert_eq!(decode_batch(b"VGB1\x00\x00").unwrap_err(), WireError::TrailingBytes { offset: 5, extra: 1 });
        let err = decode_batch(b"VGB1\xff\xff\xff\xff\x0f\x00").unwrap_err();
        assert!(matches!(err, WireError::CountTooLarge { count: 0xffff_ffff, max: 0, .. }), "{err}");
        let err = decode_batch(b"VGB1\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02").unwrap_err();
        assert!(matches!(err, WireError::VarintOverflow { offset: 4, .. }), "{err}");
        assert!(err.to_string().contains("byte 4"), "{err}");
    }

    /// A batch of one event with nothing but `host`, whose bytes are the
    /// last three of the batch.
    fn host_only(host: &str) -> Vec<u8> {
        let mut e = Event::empty(Bytes::new(), EventTime::UNIX_EPOCH);
        e.host = Some(host.into());
        let mut buf = Vec::new();
        encode_batch(&[e], &mut buf);
        buf
    }

    #[test]
    fn invalid_utf8_and_bad_references_are_errors() {
        let mut buf = host_only("é");
        let n = buf.len();
        assert_eq!(buf[n - 3..], [12, 0xc3, 0xa9]);
        buf[n - 1] = 0xff;
        assert_eq!(decode_batch(&buf).unwrap_err(), WireError::InvalidUtf8 { offset: n - 3, field: "host" });
        // "The previous event's" in the first event.
        let mut buf = host_only("é");
        buf.truncate(n - 3);
        buf.push(0);
        assert_eq!(decode_batch(&buf).unwrap_err(), WireError::NoPrevious { offset: n - 3, field: "host" });
        // Two bytes at offset 0 of an empty raw line.
        let mut buf = host_only("é");
        buf.truncate(n - 3);
        buf.extend_from_slice(&[13, 0]);
        let err = decode_batch(&buf).unwrap_err();
        assert!(matches!(err, WireError::BadRawRef { field: "host", len: 2, raw_len: 0, .. }), "{err}");
    }

    #[test]
    fn bad_ranges_are_errors() {
        let mut e = Event::empty(Bytes::new(), EventTime::UNIX_EPOCH);
        e.ext.push("é", "");
        let mut buf = Vec::new();
        encode_batch(&[e], &mut buf);
        let n = buf.len();
        // Text: no prefix, 2 bytes; one pair: key of 2 and value of 0 bytes,
        // both where expected (no gap).
        assert_eq!(buf[n - 7..], [0, 2, 0xc3, 0xa9, 1, 4, 0]);
        // Key of 1 or 3 bytes, key one byte in, value of 1 byte.
        for pair in [&[2u8, 0][..], &[6, 0], &[5, 2, 0], &[4, 2]] {
            let bad = [&buf[..n - 2], pair].concat();
            let err = decode_batch(&bad).unwrap_err();
            assert!(matches!(err, WireError::BadSpan { field: "ext", .. }), "{pair:?}: {err}");
        }
        let mut bad = buf.clone();
        bad[n - 3] = 9;
        let err = decode_batch(&bad).unwrap_err();
        assert!(matches!(err, WireError::CountTooLarge { what: "ext", .. }), "{err}");

        // An element whose parameters run past the last one.
        let mut e = Event::empty(Bytes::new(), EventTime::UNIX_EPOCH);
        e.sd.push("a", [("k", "v")]);
        buf.clear();
        encode_batch(&[e], &mut buf);
        let n = buf.len();
        assert_eq!(buf[n - 4..], [1, 2, 0, 1]); // one element: id of 1 byte, params 0+1
        buf[n - 1] = 2;
        let err = decode_batch(&buf).unwrap_err();
        assert!(matches!(err, WireError::BadSpan { field: "sd", .. }), "{err}");
    }

    #[test]
    fn decode_into_appends_and_keeps_nothing_of_a_bad_batch() {
        let events = collected();
        let mut buf = Vec::new();
        encode_batch(&events[..3], &mut buf);
        let mut out = vec![events[5].clone()];
        decode_batch_into(&buf, &mut out).unwrap();
        assert_eq!(out.len(), 4);
        assert_eq!(out[1..], events[..3]);
        buf.pop();
        assert!(decode_batch_into(&buf, &mut out).is_err());
        assert_eq!(out.len(), 4);
    }

    // ------------------------------------------------------------ properties

    fn opt_str() -> impl Strategy<Value = Option<Str>> {
        prop_oneof![
            Just(None),
            Just(Some(Str::default())),
            prop::sample::select(vec!["sshd", "web-01.example.com", "a value over twenty-four bytes long"])
                .prop_map(|s| Some(Str::from(s))),
            any::<String>().prop_map(|s| Some(Str::from(s))),
        ]
    }

    fn opt_ip() -> impl Strategy<Value = Option<IpAddr>> {
        prop_oneof![Just(None), Just(Some(IpAddr::from([192, 0, 2, 1]))), any::<IpAddr>().prop_map(Some)]
    }

    fn time() -> impl Strategy<Value = EventTime> {
        prop_oneof![
            (any::<i64>(), 0u32..1_000_000_000, any::<i32>()),
            (1_700_000_000i64..1_700_000_100, 0u32..1_000_000_000, Just(0)),
        ]
        .prop_map(|(s, n, o)| EventTime::from_unix(s, n, o))
    }

    fn pairs() -> impl Strategy<Value = Pairs> {
        prop::collection::vec((any::<String>(), any::<String>()), 0..4).prop_map(|v| v.into_iter().collect())
    }

    fn sd() -> impl Strategy<Value = StructuredData> {
        prop::collection::vec((any::<String>(), prop::collection::vec((any::<String>(), any::<String>()), 0..3)), 0..3)
            .prop_map(|elements| {
                let mut sd = StructuredData::new();
                for (id, params) in &elements {
                    sd.push(id, params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                }
                sd
            })
    }

    prop_compose! {
        fn event()(
            (id, received_at, time, same_time, org_id, reporter_ip, format, facility, severity) in (
                prop_oneof![any::<u64>(), 0u64..4],
                time(),
                time(),
                any::<bool>(),
                proptest::option::of(any::<u32>()),
                opt_ip(),
                prop::sample::select(vec![Format::Rfc5424, Format::Rfc3164, Format::Cef, Format::Leef, Format::Raw]),
                proptest::option::of(any::<u8>()),
                proptest::option::of(any::<u8>()),
            ),
            strs in prop::collection::vec(opt_str(), 18),
            (src_ip, src_port, dst_ip, dst_port, truncated) in
                (opt_ip(), proptest::option::of(any::<u16>()), opt_ip(), proptest::option::of(any::<u16>()), any::<bool>()),
            (sd, ext) in (sd(), pairs()),
            (raw, texts_in_raw) in (prop::collection::vec(any::<u8>(), 0..48), any::<bool>()),
        ) -> Event {
            let mut raw = raw;
            let [org, collector, host, app, procid, msgid, message, vendor, product, product_version,
                signature_id, name, cef_severity, event_type, user, action, outcome, parse_error]: [Option<Str>; 18] =
                strs.try_into().unwrap();
            if texts_in_raw {
                // What the parser does: texts copied from the line.
                raw.extend_from_slice(sd.parts().0.parts().0.as_bytes());
                raw.extend_from_slice(ext.parts().0.as_bytes());
                raw.extend_from_slice(message.as_deref().unwrap_or_default().as_bytes());
            }
            Event {
                id,
                time: if same_time { received_at } else { time },
                received_at,
                org_id: org_id.map(OrgId),
                org, collector, reporter_ip, format, facility, severity, host, app, procid, msgid, sd, message,
                vendor, product, product_version, signature_id, name, cef_severity, ext, event_type,
                src_ip, src_port, dst_ip, dst_port, user, action, outcome, parse_error, truncated,
                raw: Bytes::from(raw),
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_events_round_trip(events in prop::collection::vec(event(), 0..6)) {
            let mut buf = Vec::new();
            encode_batch(&events, &mut buf);
            prop_assert_eq!(&decode_batch(&buf).unwrap(), &events);
            prop_assert_eq!(&decode_batch_bytes(&Bytes::from(buf)).unwrap(), &events);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_batch(&bytes);
            let mut with_header = HEADER.to_vec();
            with_header.extend_from_slice(&bytes);
            let _ = decode_batch(&with_header);
            let _ = decode_batch_bytes(&Bytes::from(with_header));
        }

        #[test]
        fn mutated_batches_never_panic(
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            static BATCH: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let mut buf = BATCH.get_or_init(|| {
                let mut buf = Vec::new();
                encode_batch(&collected(), &mut buf);
                buf
            }).clone();
            for (at, byte) in edits {
                let at = at.index(buf.len());
                buf[at] = byte;
            }
            // Whatever decodes is a valid batch: encoding it again gives the same events.
            for bytes in [&buf[..], &buf[..cut.index(buf.len())]] {
                if let Ok(events) = decode_batch(bytes) {
                    let mut again = Vec::new();
                    encode_batch(&events, &mut again);
                    prop_assert_eq!(decode_batch(&again).unwrap(), events);
                }
            }
        }
    }
}
