//! The reorder buffer: records waiting for their org's watermark, kept
//! serialized.
//!
//! Under load the buffer holds every matching record of the last
//! `lateness` of traffic (at 200k EPS and 10 s, two million events), so its
//! size per event decides the engine's memory. A record in memory is about
//! 150 bytes plus its heap parts; serialized it is what the window needs
//! and nothing else, with addresses in 4 or 16 bytes, numbers as varints
//! and the time, arrival number and event id written once per event for
//! all the patterns it matched: 40–60 bytes per event. Records are decoded
//! once, when the watermark releases them.
//!
//! Most events arrive in time order. An event at or after the newest
//! buffered one is appended to a queue of 64 KiB chunks (no reordering, no
//! allocation per event; a drained chunk is freed, so memory follows the
//! load down after a burst). An event that arrives out of order goes to a
//! heap as its own small allocation. Release takes the smaller head of the
//! two, in (time, arrival) order.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use parsers::Str;

use crate::key::{Key, Part};
use crate::window::Val;

/// Contributing event ids of a record.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Ids {
    One(u64),
    Many(Arc<[u64]>),
}

impl Ids {
    pub fn first(&self) -> u64 {
        match self {
            Ids::One(id) => *id,
            Ids::Many(ids) => ids.first().copied().unwrap_or(0),
        }
    }

    pub fn to_vec(&self) -> Vec<u64> {
        match self {
            Ids::One(id) => vec![*id],
            Ids::Many(ids) => ids.to_vec(),
        }
    }
}

/// What a pattern takes from an event.
#[derive(Debug, PartialEq)]
pub(crate) struct Extracted {
    pub weight: u32,
    /// The value a small distinct-count window counts.
    pub distinct: Option<Part>,
    pub group: Key,
    pub key: Key,
    pub vals: Box<[Val]>,
    pub outputs: Vec<Str>,
}

/// The watch-list tests a pattern's filter still depends on, decided when
/// the record is released (a list may be filled by a hit earlier in event
/// time that is released later). The filter was evaluated on arrival for
/// every combination of the tests' outcomes: bit `i` of `mask` says whether
/// it passes when the tests in `slots` come out as the bits of `i`.
#[derive(Debug, PartialEq)]
pub(crate) struct ListCheck {
    pub mask: u64,
    /// Per test: the list and the value looked up (none: the field is
    /// absent, so the test is false).
    pub slots: Vec<(u32, Option<Part>)>,
}

impl ListCheck {
    /// Whether the filter passes, given each slot's membership.
    pub fn passes(&self, mut member: impl FnMut(u32, &Part) -> bool) -> bool {
        let mut index = 0u32;
        for (i, (list, part)) in self.slots.iter().enumerate() {
            if part.as_ref().is_some_and(|p| member(*list, p)) {
                index |= 1 << i;
            }
        }
        self.mask >> index & 1 == 1
    }
}

/// One pattern's match of one event, waiting for release.
#[derive(Debug, PartialEq)]
pub(crate) struct Record {
    pub time: i64,
    pub seq: u64,
    pub rule: u32,
    pub pattern: u16,
    pub depth: u8,
    pub ids: Ids,
    pub body: Extracted,
    pub lists: Option<ListCheck>,
}

/// Bytes per chunk of the in-order queue.
const CHUNK: usize = 64 * 1024;

/// An event's records that arrived out of order.
#[derive(Debug)]
struct Late {
    time: i64,
    seq: u64,
    bytes: Box<[u8]>,
}

impl PartialEq for Late {
    fn eq(&self, other: &Late) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}
impl Eq for Late {}
impl PartialOrd for Late {
    fn partial_cmp(&self, other: &Late) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Late {
    fn cmp(&self, other: &Late) -> Ordering {
        (self.time, self.seq).cmp(&(other.time, other.seq))
    }
}

/// A chunk of the in-order queue: encoded entries, read from `read`.
///
/// Its size is accounted as `cap` (what it was opened with) and what still
/// fits as `room`, not by the `Vec`'s capacity: the accounting decides early
/// releases, so it must be a function of what was pushed and popped only,
/// and a chunk restored from a checkpoint (holding just its unread bytes)
/// accounts exactly like the original.
#[derive(Debug)]
struct Chunk {
    bytes: Vec<u8>,
    read: usize,
    cap: usize,
    room: usize,
}

/// Records waiting for the watermark, released in (time, arrival) order.
#[derive(Debug, Default)]
pub(crate) struct Reorder {
    chunks: VecDeque<Chunk>,
    /// Time and first arrival number of the newest in-order entry.
    last: Option<(i64, u64)>,
    /// Accounted size of the chunks (their `cap`).
    chunk_bytes: usize,
    out_of_order: BinaryHeap<Reverse<Late>>,
    /// Heap bytes of the out-of-order entries.
    late_bytes: usize,
    /// Records waiting.
    records: usize,
    /// Encoding scratch.
    scratch: Vec<u8>,
}

impl Reorder {
    /// Adds the records of one event; they share time, arrival order,
    /// ids and depth. Returns the bytes the buffer grew by.
    pub fn push(&mut self, records: &[Record]) -> usize {
        let Some(first) = records.first() else { return 0 };
        let before = self.bytes();
        self.scratch.clear();
        encode_entry(&mut self.scratch, records);
        self.records += records.len();
        let key = (first.time, first.seq);
        if self.last.is_none_or(|last| last <= key) {
            self.last = Some(key);
            let fits = self.chunks.back().is_some_and(|c| c.room >= self.scratch.len());
            if !fits {
                let cap = CHUNK.max(self.scratch.len());
                self.chunk_bytes += cap;
                self.chunks.push_back(Chunk { bytes: Vec::with_capacity(cap), read: 0, cap, room: cap });
            }
            if let Some(chunk) = self.chunks.back_mut() {
                chunk.bytes.extend_from_slice(&self.scratch);
                chunk.room = chunk.room.saturating_sub(self.scratch.len());
            }
        } else {
            self.late_bytes += self.scratch.len();
            let bytes = self.scratch.as_slice().into();
            self.out_of_order.push(Reverse(Late { time: first.time, seq: first.seq, bytes }));
        }
        self.bytes().saturating_sub(before)
    }

    /// Time of the next entry to release.
    pub fn next_time(&self) -> Option<i64> {
        let queued = self.chunks.front().and_then(|c| read_time(&c.bytes[c.read..]));
        let late = self.out_of_order.peek().map(|Reverse(l)| l.time);
        match (queued, late) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Decodes the next entry's records into `out` (in arrival order).
    pub fn pop(&mut self, out: &mut Vec<Record>) {
        let queued = self.chunks.front().and_then(|c| {
            let rest = &c.bytes[c.read..];
            Some((read_time(rest)?, read_seq(rest)?))
        });
        let take_late = match (queued, self.out_of_order.peek()) {
            (Some(q), Some(Reverse(l))) => (l.time, l.seq) < q,
            (None, Some(_)) => true,
            _ => false,
        };
        let before = out.len();
        if take_late {
            if let Some(Reverse(late)) = self.out_of_order.pop() {
                self.late_bytes -= late.bytes.len();
                decode_entry(&late.bytes, out);
            }
            if self.out_of_order.capacity() > 1024 && self.out_of_order.len() < self.out_of_order.capacity() / 4 {
                self.out_of_order.shrink_to(self.out_of_order.len() * 2);
            }
        } else if let Some(chunk) = self.chunks.front_mut() {
            let used = decode_entry(&chunk.bytes[chunk.read..], out);
            // An entry that does not decode is ours and cannot happen; skip
            // the rest of the chunk rather than loop on it.
            chunk.read = if used == 0 { chunk.bytes.len() } else { chunk.read + used };
            // A drained chunk is freed: an org that falls quiet holds nothing.
            if chunk.read >= chunk.bytes.len()
                && let Some(done) = self.chunks.pop_front()
            {
                self.chunk_bytes -= done.cap;
            }
        }
        self.records = self.records.saturating_sub(out.len() - before);
        if self.records == 0 {
            self.last = None;
        }
    }

    /// Records waiting.
    pub fn len(&self) -> usize {
        self.records
    }

    /// Appends the buffer to a checkpoint: the newest in-order entry, each
    /// chunk's accounting and unread bytes, and the out-of-order entries
    /// (already encoded, so they are copied as they are).
    ///
    /// ```text
    /// reorder = last:(0 | 1 time:i64le seq:varint)
    ///           n:varint (cap:varint room:varint len:varint byte*len)*n
    ///           n:varint (len:varint byte*len)*n
    /// ```
    pub fn save(&self, out: &mut Vec<u8>) {
        let Reorder { chunks, last, chunk_bytes: _, out_of_order, late_bytes: _, records: _, scratch: _ } = self;
        match last {
            None => out.push(0),
            Some((time, seq)) => {
                out.push(1);
                out.extend_from_slice(&time.to_le_bytes());
                put_varint(out, *seq);
            }
        }
        put_varint(out, chunks.len() as u64);
        for chunk in chunks {
            let unread = chunk.bytes.get(chunk.read..).unwrap_or_default();
            put_varint(out, chunk.cap as u64);
            put_varint(out, chunk.room as u64);
            put_varint(out, unread.len() as u64);
            out.extend_from_slice(unread);
        }
        put_varint(out, out_of_order.len() as u64);
        for Reverse(late) in out_of_order.iter() {
            put_varint(out, late.bytes.len() as u64);
            out.extend_from_slice(&late.bytes);
        }
    }

    /// Reads what [`Reorder::save`] wrote. Every entry is decoded once to
    /// check it and count its records; `valid` vets each record (its rule
    /// and pattern exist). `None` if anything does not hold.
    pub fn load(r: &mut Reader<'_>, mut valid: impl FnMut(&Record) -> bool) -> Option<Reorder> {
        let last = match r.u8()? {
            0 => None,
            1 => Some((r.i64le()?, r.varint()?)),
            _ => return None,
        };
        let mut buffer = Reorder { last, ..Reorder::default() };
        let mut records = Vec::new();
        let mut check = |bytes: &[u8], records: &mut Vec<Record>| -> Option<usize> {
            records.clear();
            let used = decode_entry(bytes, records);
            (used > 0 && records.iter().all(&mut valid)).then_some(used)
        };
        let chunks = r.count()?;
        for _ in 0..chunks {
            let cap = r.len()?;
            let room = r.len()?;
            let len = r.count()?;
            let bytes = r.take(len)?;
            // A chunk is opened at 64 KiB, or at the size of one larger
            // entry that fills it; drained chunks are dropped.
            let shaped = (cap <= CHUNK && len.checked_add(room)? <= cap) || (cap == len && room == 0);
            if len == 0 || !shaped {
                return None;
            }
            let mut at = 0;
            while at < len {
                at += check(&bytes[at..], &mut records)?;
                buffer.records += records.len();
            }
            buffer.chunk_bytes += cap;
            buffer.chunks.push_back(Chunk { bytes: bytes.to_vec(), read: 0, cap, room });
        }
        let late = r.count()?;
        for _ in 0..late {
            let len = r.count()?;
            let bytes = r.take(len)?;
            if check(bytes, &mut records)? != len {
                return None;
            }
            buffer.records += records.len();
            buffer.late_bytes += len;
            let (time, seq) = (read_time(bytes)?, read_seq(bytes)?);
            buffer.out_of_order.push(Reverse(Late { time, seq, bytes: bytes.into() }));
        }
        Some(buffer)
    }

    /// Bytes held: the chunks as opened (64 KiB each, filled or not) and
    /// the out-of-order entries, with the containers' per-entry overhead.
    /// Spare capacity of the containers (and the encoding scratch) is not
    /// counted: this figure decides early releases, so it depends only on
    /// what was pushed and popped, and a restored buffer accounts alike.
    pub fn bytes(&self) -> usize {
        self.chunk_bytes
            + self.chunks.len() * size_of::<Chunk>()
            + self.late_bytes
            + self.out_of_order.len() * size_of::<Reverse<Late>>()
    }
}

// The encoding: an entry is the records of one event.
//
//   entry  = time:i64le seq:varint depth:u8 ids n:varint record*n
//   ids    = 0 id:u64le | 1 n:varint id:u64le*n
//   record = rule:varint pattern:varint flags:u8 [weight:varint] group:key
//            [distinct:part] [key:key] [n:varint val*n] [n:varint str*n]
//            [mask:u64le n:varint (list:varint opt-part)*n]
//   key    = 0 | 1 part | 2 n:varint part*n
//   part   = 0 str | 1 ipv4:4 | 2 ipv6:16 | 3 zigzag:varint | 4 bits:u64le
//   val    = 0 | 1 f64le | 2 part
//   str    = len:varint bytes

const F_WEIGHT: u8 = 1;
const F_DISTINCT: u8 = 2;
const F_KEY: u8 = 4;
const F_VALS: u8 = 8;
const F_OUTPUTS: u8 = 16;
const F_LISTS: u8 = 32;

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn put_part(out: &mut Vec<u8>, part: &Part) {
    match part {
        Part::Text(s) => {
            out.push(0);
            put_str(out, s);
        }
        Part::Ip(IpAddr::V4(ip)) => {
            out.push(1);
            out.extend_from_slice(&ip.octets());
        }
        Part::Ip(IpAddr::V6(ip)) => {
            out.push(2);
            out.extend_from_slice(&ip.octets());
        }
        Part::Int(i) => {
            out.push(3);
            put_varint(out, ((i << 1) ^ (i >> 63)) as u64);
        }
        Part::Float(bits) => {
            out.push(4);
            out.extend_from_slice(&bits.to_le_bytes());
        }
    }
}

pub(crate) fn put_key(out: &mut Vec<u8>, key: &Key) {
    match key {
        Key::Unit => out.push(0),
        Key::One(p) => {
            out.push(1);
            put_part(out, p);
        }
        Key::Many(parts) => {
            out.push(2);
            put_varint(out, parts.len() as u64);
            for p in parts.iter() {
                put_part(out, p);
            }
        }
    }
}

pub(crate) fn encode_entry(out: &mut Vec<u8>, records: &[Record]) {
    let Some(first) = records.first() else { return };
    out.extend_from_slice(&first.time.to_le_bytes());
    put_varint(out, first.seq);
    out.push(first.depth);
    match &first.ids {
        Ids::One(id) => {
            out.push(0);
            out.extend_from_slice(&id.to_le_bytes());
        }
        Ids::Many(ids) => {
            out.push(1);
            put_varint(out, ids.len() as u64);
            for id in ids.iter() {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
    }
    put_varint(out, records.len() as u64);
    for r in records {
        let b = &r.body;
        put_varint(out, u64::from(r.rule));
        put_varint(out, u64::from(r.pattern));
        let mut flags = 0;
        for (set, flag) in [
            (b.weight != 1, F_WEIGHT),
            (b.distinct.is_some(), F_DISTINCT),
            (b.key != Key::Unit, F_KEY),
            (!b.vals.is_empty(), F_VALS),
            (!b.outputs.is_empty(), F_OUTPUTS),
            (r.lists.is_some(), F_LISTS),
        ] {
            if set {
                flags |= flag;
            }
        }
        out.push(flags);
        if b.weight != 1 {
            put_varint(out, u64::from(b.weight));
        }
        put_key(out, &b.group);
        if let Some(d) = &b.distinct {
            put_part(out, d);
        }
        if b.key != Key::Unit {
            put_key(out, &b.key);
        }
        if !b.vals.is_empty() {
            put_varint(out, b.vals.len() as u64);
            for v in b.vals.iter() {
                match v {
                    Val::None => out.push(0),
                    Val::Num(n) => {
                        out.push(1);
                        out.extend_from_slice(&n.to_le_bytes());
                    }
                    Val::Part(p) => {
                        out.push(2);
                        put_part(out, p);
                    }
                }
            }
        }
        if !b.outputs.is_empty() {
            put_varint(out, b.outputs.len() as u64);
            for s in &b.outputs {
                put_str(out, s);
            }
        }
        if let Some(check) = &r.lists {
            out.extend_from_slice(&check.mask.to_le_bytes());
            put_varint(out, check.slots.len() as u64);
            for (list, part) in &check.slots {
                put_varint(out, u64::from(*list));
                match part {
                    None => out.push(0),
                    Some(p) => {
                        out.push(1);
                        put_part(out, p);
                    }
                }
            }
        }
    }
}

fn read_time(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
}

fn read_seq(bytes: &[u8]) -> Option<u64> {
    Reader { bytes, at: 8 }.varint()
}

/// A cursor over encoded bytes; every read is bounds-checked.
pub(crate) struct Reader<'a> {
    pub bytes: &'a [u8],
    pub at: usize,
}

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }

    pub fn u64le(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    pub fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    pub fn len(&mut self) -> Option<usize> {
        usize::try_from(self.varint()?).ok()
    }

    /// A count of items that take at least a byte each: never more than
    /// the bytes left, so what it sizes is bounded by the input.
    pub fn count(&mut self) -> Option<usize> {
        let n = self.len()?;
        (n <= self.bytes.len().saturating_sub(self.at)).then_some(n)
    }

    pub fn i64le(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    pub fn str(&mut self) -> Option<Str> {
        let n = self.len()?;
        std::str::from_utf8(self.take(n)?).ok().map(Str::from)
    }

    pub fn part(&mut self) -> Option<Part> {
        Some(match self.u8()? {
            0 => Part::Text(self.str()?),
            1 => {
                let o: [u8; 4] = self.take(4)?.try_into().ok()?;
                Part::Ip(IpAddr::V4(Ipv4Addr::from(o)))
            }
            2 => {
                let o: [u8; 16] = self.take(16)?.try_into().ok()?;
                Part::Ip(IpAddr::V6(Ipv6Addr::from(o)))
            }
            3 => {
                let z = self.varint()?;
                Part::Int(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            4 => Part::Float(self.u64le()?),
            _ => return None,
        })
    }

    pub fn key(&mut self) -> Option<Key> {
        Some(match self.u8()? {
            0 => Key::Unit,
            1 => Key::One(self.part()?),
            2 => {
                let n = self.len()?;
                let mut parts = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    parts.push(self.part()?);
                }
                Key::Many(parts.into_boxed_slice())
            }
            _ => return None,
        })
    }
}

/// Decodes one entry at the start of `bytes` into `out`; returns the bytes
/// it took (0 if it does not decode, which leaves `out` as it was).
pub(crate) fn decode_entry(bytes: &[u8], out: &mut Vec<Record>) -> usize {
    let before = out.len();
    match decode_into(bytes, out) {
        Some(used) => used,
        None => {
            out.truncate(before);
            0
        }
    }
}

fn decode_into(bytes: &[u8], out: &mut Vec<Record>) -> Option<usize> {
    let mut r = Reader { bytes, at: 0 };
    let time = i64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let seq = r.varint()?;
    let depth = r.u8()?;
    let ids = match r.u8()? {
        0 => Ids::One(r.u64le()?),
        1 => {
            let n = r.len()?;
            let mut ids = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                ids.push(r.u64le()?);
            }
            Ids::Many(Arc::from(ids))
        }
        _ => return None,
    };
    let n = r.len()?;
    for i in 0..n {
        let rule = u32::try_from(r.varint()?).ok()?;
        let pattern = u16::try_from(r.varint()?).ok()?;
        let flags = r.u8()?;
        let weight = if flags & F_WEIGHT != 0 { u32::try_from(r.varint()?).ok()? } else { 1 };
        let group = r.key()?;
        let distinct = if flags & F_DISTINCT != 0 { Some(r.part()?) } else { None };
        let key = if flags & F_KEY != 0 { r.key()? } else { Key::Unit };
        let vals: Box<[Val]> = if flags & F_VALS != 0 {
            let n = r.len()?;
            let mut vals = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                vals.push(match r.u8()? {
                    0 => Val::None,
                    1 => Val::Num(f64::from_bits(r.u64le()?)),
                    2 => Val::Part(r.part()?),
                    _ => return None,
                });
            }
            vals.into_boxed_slice()
        } else {
            Box::new([])
        };
        let outputs = if flags & F_OUTPUTS != 0 {
            let n = r.len()?;
            let mut outputs = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                outputs.push(r.str()?);
            }
            outputs
        } else {
            Vec::new()
        };
        let lists = if flags & F_LISTS != 0 {
            let mask = r.u64le()?;
            let n = r.len()?;
            let mut slots = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                let list = u32::try_from(r.varint()?).ok()?;
                let part = match r.u8()? {
                    0 => None,
                    1 => Some(r.part()?),
                    _ => return None,
                };
                slots.push((list, part));
            }
            Some(ListCheck { mask, slots })
        } else {
            None
        };
        out.push(Record {
            time,
            seq: seq + i as u64,
            rule,
            pattern,
            depth,
            ids: ids.clone(),
            body: Extracted { weight, distinct, group, key, vals, outputs },
            lists,
        });
    }
    Some(r.at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(time: i64, seq: u64, group: Part) -> Record {
        Record {
            time,
            seq,
            rule: 3,
            pattern: 1,
            depth: 0,
            ids: Ids::One(1 << 40 | seq),
            body: Extracted {
                weight: 1,
                distinct: None,
                group: Key::One(group),
                key: Key::Unit,
                vals: Box::new([]),
                outputs: Vec::new(),
            },
            lists: None,
        }
    }

    #[test]
    fn every_field_survives_encoding() {
        let full = Record {
            time: -5,
            seq: 300,
            rule: 70_000,
            pattern: 2,
            depth: 3,
            ids: Ids::Many(Arc::from(vec![1, u64::MAX, 7])),
            body: Extracted {
                weight: 12,
                distinct: Some(Part::Int(-42)),
                group: Key::Many(Box::new([Part::Ip("2001:db8::1".parse().unwrap()), Part::Float(1.5f64.to_bits())])),
                key: Key::One(Part::Text("a user name longer than twenty-four bytes".into())),
                vals: Box::new([Val::None, Val::Num(2.5), Val::Part(Part::Ip("10.0.0.1".parse().unwrap()))]),
                outputs: vec!["x".into(), "".into()],
            },
            lists: Some(ListCheck { mask: 0b1010, slots: vec![(0, Some(Part::Int(i64::MIN))), (4, None)] }),
        };
        let second = Record { seq: 301, rule: 0, pattern: 0, ..record(-5, 301, Part::Text("é".into())) };
        let second = Record { depth: 3, ids: full.ids.clone(), ..second };
        let mut bytes = Vec::new();
        encode_entry(&mut bytes, &[full, second]);
        let mut out = Vec::new();
        assert_eq!(decode_entry(&bytes, &mut out), bytes.len());
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].body.key, Key::One(Part::Text("a user name longer than twenty-four bytes".into())));
        assert_eq!(out[0].body.distinct, Some(Part::Int(-42)));
        assert_eq!(out[0].lists.as_ref().map(|l| l.mask), Some(0b1010));
        assert_eq!((out[1].seq, out[1].depth), (301, 3));
        // Cut anywhere, an entry does not decode and nothing is produced.
        for cut in 0..bytes.len() {
            let mut out = Vec::new();
            assert_eq!(decode_entry(&bytes[..cut], &mut out), 0, "cut at {cut}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn release_is_in_time_then_arrival_order_and_memory_is_returned() {
        let mut buffer = Reorder::default();
        let ip = |i: u64| Part::Ip(IpAddr::V4(Ipv4Addr::from(i as u32)));
        let mut seq = 0;
        // 100,000 events in order, with every tenth one 5 s behind.
        for i in 0..100_000u64 {
            seq += 1;
            let time = if i % 10 == 9 { i as i64 - 5 } else { i as i64 };
            buffer.push(&[record(time, seq, ip(i))]);
        }
        assert_eq!(buffer.len(), 100_000);
        let peak = buffer.bytes();
        assert!(peak < 100_000 * 40, "about 25 bytes an event, not a record's size: {peak}");
        let mut out = Vec::new();
        let mut last = (i64::MIN, 0);
        while buffer.next_time().is_some() {
            out.clear();
            buffer.pop(&mut out);
            let r = &out[0];
            assert!((r.time, r.seq) > last, "{:?} after {last:?}", (r.time, r.seq));
            last = (r.time, r.seq);
        }
        assert_eq!(buffer.len(), 0);
        assert!(buffer.bytes() <= 2 * CHUNK + 64 * 1024, "drained chunks are freed: {}", buffer.bytes());
    }

    #[test]
    fn list_checks_read_their_truth_table() {
        // Passes when slot 0 is a member and slot 1 is not (index 0b01).
        let check = ListCheck { mask: 1 << 0b01, slots: vec![(0, Some(Part::Int(1))), (1, Some(Part::Int(2)))] };
        assert!(check.passes(|list, _| list == 0));
        assert!(!check.passes(|_, _| true));
        assert!(!check.passes(|_, _| false));
        let absent = ListCheck { mask: 1, slots: vec![(0, None)] };
        assert!(absent.passes(|_, _| true), "an absent field is never a member");
    }
}
