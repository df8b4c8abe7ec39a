//! Checkpoints: the engine's evaluation state as bytes and back.
//!
//! A partition of the stream moves to another worker when its owner dies.
//! The owner checkpoints its engine with the stream sequence the state
//! covers (the caller keeps the sequence); the new owner restores the
//! engine and replays only what follows. Restored, the engine continues
//! exactly as the original would have: same incidents, same ids, same
//! counters, same early releases and evictions.
//!
//! # What is in a checkpoint
//!
//! Everything `process`, `advance` and `flush` read that outlives a call:
//! every partition (per org and the cross-org one) with its watermark,
//! clocks and late count, its reorder buffer (chunks and out-of-order
//! entries, copied in their encoded form), windows of every kind with their
//! aggregate states (in the window table's slab order, which sampled
//! eviction depends on), joins of every condition, pending NOT FOLLOWED BY
//! timers, open incidents (suppression), watch lists; and the engine's
//! counters, arrival and incident numbers, the buffer-bytes and window-key
//! bookkeeping, the eviction generator and its current victim.
//!
//! Not in it: the compiled rules and the configuration (given to
//! [`Engine::restore`]), hash-table layouts (rebuilt: their hashers are
//! randomly keyed per process anyway), spare capacity, and per-call
//! scratch (regex results, fed-back events in flight, record buffers),
//! which is empty between calls. The memory estimate `Stats::state_bytes`
//! counts capacities, so it may read lower after a restore; every other
//! figure of [`Stats`] is restored.
//!
//! # Format
//!
//! ```text
//! checkpoint = magic:"VIGILCKP" version:u16le fingerprint:u64le
//!              length:u64le checksum:u64le payload:byte*length
//! ```
//!
//! `fingerprint` is [`RuleSet::fingerprint`] of the rules the state was
//! made with; `checksum` covers the header before it and the payload. The
//! payload is written by the `save` functions below (and `Reorder::save`,
//! `Window::save`), integers as LEB128 varints, times as i64le. A reader
//! never trusts a length: each count is bounded by the bytes left, and
//! every rule, pattern and shape the state refers to is checked against
//! the rule set, so restoring any input either fails with a
//! [`CheckpointError`] or yields an engine that runs without panicking.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use parsers::{OrgId, Str};

use super::{Engine, EngineConfig, Join, Match, Open, Partition, Shared, Stats};
use crate::compile::{Condition, RuleSet, WindowKind};
use crate::key::Key;
use crate::reorder::{Reader, Record, Reorder, decode_entry, encode_entry, put_key, put_part, put_str, put_varint};
use crate::table::Table;
use crate::window::Window;

/// The first bytes of every checkpoint.
const MAGIC: &[u8; 8] = b"VIGILCKP";
/// The format this build writes and reads. 2: the counters include
/// `behind_events`; a worker given a version 1 checkpoint replays its
/// stream instead.
const VERSION: u16 = 2;
/// Magic, version, fingerprint, payload length, checksum.
const HEADER: usize = 8 + 2 + 8 + 8 + 8;
/// Counters and sequence numbers are refused at or above this, so that
/// adding to them later cannot overflow.
const LIMIT: u64 = 1 << 62;

/// Why [`Engine::restore`] refused a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The bytes do not start like an engine checkpoint.
    #[error("not an engine checkpoint (the bytes do not start with the checkpoint magic)")]
    NotACheckpoint,
    /// Written by a build with another checkpoint format.
    #[error("engine checkpoint format version {found} cannot be read (this build reads version {supported})")]
    Version {
        /// The version in the checkpoint.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// Fewer bytes than the header says.
    #[error("engine checkpoint is truncated: {needed} bytes expected, {got} present")]
    Truncated {
        /// Bytes the checkpoint should have.
        needed: u64,
        /// Bytes given.
        got: u64,
    },
    /// The checksum does not match the bytes.
    #[error("engine checkpoint is corrupted (checksum mismatch)")]
    Checksum,
    /// Made with other rules than those given to restore it.
    #[error(
        "engine checkpoint was made with a different rule set (fingerprint {found:016x}, these rules {expected:016x})"
    )]
    RuleSet {
        /// Fingerprint of the rules given to [`Engine::restore`].
        expected: u64,
        /// Fingerprint recorded in the checkpoint.
        found: u64,
    },
    /// The checksum holds but the state does not decode or does not fit
    /// the rules.
    #[error("engine checkpoint is corrupted: bad {what} at byte {offset}")]
    Corrupt {
        /// The part of the state that failed.
        what: &'static str,
        /// Where in the checkpoint.
        offset: usize,
    },
}

/// A 64-bit checksum: FNV-style over 8-byte little-endian words, with the
/// length and a final mix. Each step is a bijection of the state, so any
/// one changed word changes the result; not a cryptographic hash.
fn checksum(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut total = 0u64;
    for part in parts {
        total += part.len() as u64;
        let mut words = part.chunks_exact(8);
        for w in &mut words {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            h = (h ^ u64::from_le_bytes(word)).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            h = (h ^ u64::from_le_bytes(word) ^ 0xff).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
        }
    }
    h ^= total;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

impl Engine {
    /// Appends the engine's complete evaluation state to `out`: versioned,
    /// checksummed and tagged with the rule set's
    /// [`fingerprint`](RuleSet::fingerprint). Restored with
    /// [`Engine::restore`] into an engine that continues exactly as this
    /// one would. The caller records which stream position the state
    /// covers. The rules and the configuration are not included.
    pub fn checkpoint(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.rules.fingerprint().to_le_bytes());
        out.extend_from_slice(&[0; 16]);
        let body = out.len();
        save_engine(self, out);
        let length = (out.len() - body) as u64;
        out[start + 18..start + 26].copy_from_slice(&length.to_le_bytes());
        let sum = checksum(&[&out[start..start + 26], &out[body..]]);
        out[start + 26..start + 34].copy_from_slice(&sum.to_le_bytes());
    }

    /// An engine for `rules` and `config` in the state a checkpoint
    /// recorded. Refuses (never panics on) bytes that are not a checkpoint,
    /// of another format version, truncated or corrupted, or made with a
    /// rule set whose fingerprint differs from `rules`'. `config` may
    /// differ from the original engine's; the state is taken as it is.
    pub fn restore(rules: Arc<RuleSet>, config: EngineConfig, bytes: &[u8]) -> Result<Engine, CheckpointError> {
        let got = bytes.len() as u64;
        let Some(magic) = bytes.get(..MAGIC.len()) else {
            return Err(if MAGIC.starts_with(bytes) {
                CheckpointError::Truncated { needed: HEADER as u64, got }
            } else {
                CheckpointError::NotACheckpoint
            });
        };
        if magic != MAGIC {
            return Err(CheckpointError::NotACheckpoint);
        }
        let Some(header) = bytes.get(..HEADER) else {
            return Err(CheckpointError::Truncated { needed: HEADER as u64, got });
        };
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&header[at..at + 8]);
            u64::from_le_bytes(word)
        };
        let version = u16::from_le_bytes([header[8], header[9]]);
        if version != VERSION {
            return Err(CheckpointError::Version { found: version, supported: VERSION });
        }
        let (found, length, sum) = (u64_at(10), u64_at(18), u64_at(26));
        let payload = &bytes[HEADER..];
        if (payload.len() as u64) < length {
            return Err(CheckpointError::Truncated { needed: (HEADER as u64).saturating_add(length), got });
        }
        if payload.len() as u64 > length {
            return Err(CheckpointError::Corrupt { what: "length (bytes follow the checkpoint)", offset: HEADER });
        }
        if checksum(&[&header[..26], payload]) != sum {
            return Err(CheckpointError::Checksum);
        }
        let expected = rules.fingerprint();
        if found != expected {
            return Err(CheckpointError::RuleSet { expected, found });
        }
        load_engine(rules, config, payload).map_err(|(what, at)| CheckpointError::Corrupt { what, offset: HEADER + at })
    }
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_ids(out: &mut Vec<u8>, ids: &[u64]) {
    put_varint(out, ids.len() as u64);
    for id in ids {
        put_varint(out, *id);
    }
}

// engine    = counters seq:varint next_incident:varint buffer_bytes:varint
//             rng:u64le victim:(0 | 1 org:varint) global_max:i64le
//             since_cross_update:varint
//             n:varint partition*n cross:(0 | 1 partition)
// counters  = events future early_releases evicted hits incidents
//             depth_limited window_overflows pending_overflows (varints)
fn save_engine(engine: &Engine, out: &mut Vec<u8>) {
    // Destructured in full: a field added to the engine must be decided here.
    let Engine { rules: _, limits: _, orgs, cross, shared, global_max, since_cross_update } = engine;
    let Shared {
        cache: _,
        feeds: _,
        counters,
        seq,
        next_incident,
        buffer_bytes,
        matched: _,
        released: _,
        window_keys: _,
        rng,
        victim,
        // Derived: a restored engine recomputes it at its first advance.
        due: _,
    } = shared;
    let Stats {
        events,
        late_events: _,
        future_events,
        behind_events,
        early_releases,
        buffer_bytes: _,
        evicted_keys,
        hits,
        incidents,
        depth_limited,
        window_overflows,
        pending_overflows,
        buffered: _,
        window_keys: _,
        join_keys: _,
        timers: _,
        open_incidents: _,
        watch_entries: _,
        state_bytes: _,
        orgs: _,
    } = counters;
    for n in [
        *events,
        *future_events,
        *behind_events,
        *early_releases,
        *evicted_keys,
        *hits,
        *incidents,
        *depth_limited,
        *window_overflows,
        *pending_overflows,
    ] {
        put_varint(out, n);
    }
    put_varint(out, *seq);
    put_varint(out, *next_incident);
    put_varint(out, *buffer_bytes as u64);
    out.extend_from_slice(&rng.to_le_bytes());
    match victim {
        None => out.push(0),
        Some(id) => {
            out.push(1);
            put_varint(out, u64::from(id.0));
        }
    }
    put_i64(out, *global_max);
    put_varint(out, u64::from(*since_cross_update));
    let mut ids: Vec<&OrgId> = orgs.keys().collect();
    ids.sort_unstable();
    put_varint(out, ids.len() as u64);
    for id in ids {
        if let Some(part) = orgs.get(id) {
            save_partition(part, out);
        }
    }
    match cross {
        None => out.push(0),
        Some(part) => {
            out.push(1);
            save_partition(part, out);
        }
    }
}

// partition = org:varint name:str cross:u8 max_time watermark clock next_sweep
//             (i64le) late:varint reorder immediate windows joins timers
//             incidents lists
// immediate = n:varint (len:varint entry)*n          (as the reorder buffer encodes one)
// windows   = n:varint (rule:varint pattern:varint group:key window)*n   slab order
// joins     = n:varint (rule:varint key join)*n
// join      = 0 n:varint (0 | 1 match)*n | 1 time:i64le
//           | 2 n:varint (0 | 1 start:i64le m:varint match*m)*n | 3 n:varint match*n
// match     = time:i64le ids key outputs:(n:varint str*n)
// ids       = n:varint id:varint*n
// timers    = n:varint (deadline:i64le seq:varint rule:varint key)*n
// incidents = n:varint (rule:varint key id:varint first:i64le last:i64le
//             count:varint ids title:str)*n
// lists     = n:varint (list:varint part expires:i64le)*n
fn save_partition(part: &Partition, out: &mut Vec<u8>) {
    let Partition {
        org_id,
        name,
        cross,
        max_time,
        watermark,
        clock,
        buffer,
        immediate,
        windows,
        joins,
        timers,
        incidents,
        lists,
        next_sweep,
        late,
    } = part;
    put_varint(out, u64::from(org_id.0));
    put_str(out, name);
    out.push(u8::from(*cross));
    for t in [*max_time, *watermark, *clock, *next_sweep] {
        put_i64(out, t);
    }
    put_varint(out, *late);
    buffer.save(out);
    put_varint(out, immediate.len() as u64);
    let mut entry = Vec::new();
    for record in immediate {
        entry.clear();
        encode_entry(&mut entry, std::slice::from_ref(record));
        put_varint(out, entry.len() as u64);
        out.extend_from_slice(&entry);
    }
    put_varint(out, windows.len() as u64);
    for ((r, p, group), window) in windows.iter() {
        put_varint(out, u64::from(*r));
        put_varint(out, u64::from(*p));
        put_key(out, group);
        window.save(out);
    }
    // Hash maps in a fixed order, so equal states give equal bytes.
    let mut sorted: Vec<_> = joins.iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    put_varint(out, sorted.len() as u64);
    for ((r, key), join) in sorted {
        put_varint(out, u64::from(*r));
        put_key(out, key);
        save_join(join, out);
    }
    put_varint(out, timers.len() as u64);
    for ((deadline, seq), (r, key)) in timers {
        put_i64(out, *deadline);
        put_varint(out, *seq);
        put_varint(out, u64::from(*r));
        put_key(out, key);
    }
    let mut sorted: Vec<_> = incidents.iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    put_varint(out, sorted.len() as u64);
    for ((r, key), open) in sorted {
        let Open { id, first, last, count, ids, title } = open;
        put_varint(out, u64::from(*r));
        put_key(out, key);
        put_varint(out, *id);
        put_i64(out, *first);
        put_i64(out, *last);
        put_varint(out, *count);
        put_ids(out, ids);
        put_str(out, title);
    }
    let mut sorted: Vec<_> = lists.iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    put_varint(out, sorted.len() as u64);
    for ((list, part), expires) in sorted {
        put_varint(out, u64::from(*list));
        put_part(out, part);
        put_i64(out, *expires);
    }
}

fn save_match(m: &Match, out: &mut Vec<u8>) {
    let Match { time, ids, key, outputs } = m;
    put_i64(out, *time);
    put_ids(out, ids);
    put_key(out, key);
    put_varint(out, outputs.len() as u64);
    for s in outputs {
        put_str(out, s);
    }
}

fn save_join(join: &Join, out: &mut Vec<u8>) {
    match join {
        Join::All(latest) => {
            out.push(0);
            put_varint(out, latest.len() as u64);
            for slot in latest {
                match slot {
                    None => out.push(0),
                    Some(m) => {
                        out.push(1);
                        save_match(m, out);
                    }
                }
            }
        }
        Join::Excluded(time) => {
            out.push(1);
            put_i64(out, *time);
        }
        Join::Sequence(stages) => {
            out.push(2);
            put_varint(out, stages.len() as u64);
            for stage in stages {
                match stage {
                    None => out.push(0),
                    Some((start, matches)) => {
                        out.push(1);
                        put_i64(out, *start);
                        put_varint(out, matches.len() as u64);
                        for m in matches {
                            save_match(m, out);
                        }
                    }
                }
            }
        }
        Join::Pending(pending) => {
            out.push(3);
            put_varint(out, pending.len() as u64);
            for m in pending {
                save_match(m, out);
            }
        }
    }
}

/// A failed read: which part of the state, and where.
type Fail = (&'static str, usize);

/// The payload reader: a bounds-checked cursor, the rules the state must
/// fit, and the part being read (for the error).
struct Dec<'a> {
    r: Reader<'a>,
    rules: &'a RuleSet,
    what: &'static str,
}

impl Dec<'_> {
    fn fail(&self) -> Fail {
        (self.what, self.r.at)
    }

    /// Turns a failed read or check into an error naming the current part.
    fn ok<T>(&self, v: Option<T>) -> Result<T, Fail> {
        v.ok_or_else(|| self.fail())
    }

    fn check(&self, holds: bool) -> Result<(), Fail> {
        if holds { Ok(()) } else { Err(self.fail()) }
    }

    fn u8(&mut self) -> Result<u8, Fail> {
        let v = self.r.u8();
        self.ok(v)
    }

    fn flag(&mut self) -> Result<bool, Fail> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.fail()),
        }
    }

    fn varint(&mut self) -> Result<u64, Fail> {
        let v = self.r.varint();
        self.ok(v)
    }

    /// A counter or sequence number, small enough to keep counting.
    fn counter(&mut self) -> Result<u64, Fail> {
        let v = self.varint()?;
        self.check(v < LIMIT)?;
        Ok(v)
    }

    fn count(&mut self) -> Result<usize, Fail> {
        let v = self.r.count();
        self.ok(v)
    }

    fn i64(&mut self) -> Result<i64, Fail> {
        let v = self.r.i64le();
        self.ok(v)
    }

    fn u64le(&mut self) -> Result<u64, Fail> {
        let v = self.r.u64le();
        self.ok(v)
    }

    fn str(&mut self) -> Result<Str, Fail> {
        let v = self.r.str();
        self.ok(v)
    }

    fn key(&mut self) -> Result<Key, Fail> {
        let v = self.r.key();
        self.ok(v)
    }

    fn u32(&mut self) -> Result<u32, Fail> {
        let v = self.varint()?;
        self.ok(u32::try_from(v).ok())
    }

    /// A rule index of this rule set.
    fn rule(&mut self) -> Result<u32, Fail> {
        let r = self.u32()?;
        self.check((r as usize) < self.rules.rules.len())?;
        Ok(r)
    }

    fn ids(&mut self) -> Result<Vec<u64>, Fail> {
        let n = self.count()?;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.varint()?);
        }
        Ok(ids)
    }

    fn matched(&mut self) -> Result<Match, Fail> {
        let time = self.i64()?;
        let ids = self.ids()?;
        let key = self.key()?;
        let n = self.count()?;
        let mut outputs = Vec::with_capacity(n);
        for _ in 0..n {
            outputs.push(self.str()?);
        }
        Ok(Match { time, ids, key, outputs })
    }
}

/// Whether a buffered record refers to a pattern of the rule set, and its
/// watch-list check has the pattern's shape (its truth table is indexed by
/// the outcomes of at most six tests).
fn valid_record(rules: &RuleSet, record: &Record) -> bool {
    let Some(pattern) =
        rules.rules.get(record.rule as usize).and_then(|rule| rule.patterns.get(usize::from(record.pattern)))
    else {
        return false;
    };
    record.lists.as_ref().is_none_or(|check| check.slots.len() == pattern.list_tests.len())
}

fn load_engine(rules: Arc<RuleSet>, config: EngineConfig, payload: &[u8]) -> Result<Engine, Fail> {
    let mut engine = Engine::new(Arc::clone(&rules), config);
    let mut d = Dec { r: Reader { bytes: payload, at: 0 }, rules: &rules, what: "counters" };
    let mut counters = Stats::default();
    for n in [
        &mut counters.events,
        &mut counters.future_events,
        &mut counters.behind_events,
        &mut counters.early_releases,
        &mut counters.evicted_keys,
        &mut counters.hits,
        &mut counters.incidents,
        &mut counters.depth_limited,
        &mut counters.window_overflows,
        &mut counters.pending_overflows,
    ] {
        *n = d.counter()?;
    }
    let shared = &mut engine.shared;
    shared.counters = counters;
    d.what = "sequence numbers";
    shared.seq = d.counter()?;
    shared.next_incident = d.counter()?;
    d.what = "buffer bytes";
    let buffer_bytes = d.counter()?;
    d.what = "eviction state";
    shared.rng = d.u64le()?;
    // xorshift never leaves zero, and never reaches it from elsewhere.
    d.check(shared.rng != 0)?;
    shared.victim = if d.flag()? { Some(OrgId(d.u32()?)) } else { None };
    // Whatever waits is due at once: the first advance computes when.
    shared.due = i64::MIN;
    d.what = "engine clock";
    engine.global_max = d.i64()?;
    engine.since_cross_update = d.u32()?;
    // It counts up to 1024 events between cross-org watermark updates.
    d.check(engine.since_cross_update <= 1024)?;
    d.what = "partitions";
    let n = d.count()?;
    let mut orgs = hashbrown::HashMap::with_capacity(n);
    let mut window_keys = 0;
    for _ in 0..n {
        let part = load_partition(&mut d, false)?;
        window_keys += part.windows.len();
        d.what = "partitions (org listed twice)";
        d.check(orgs.insert(part.org_id, part).is_none())?;
    }
    engine.orgs = orgs;
    d.what = "cross-org partition";
    // Whether the engine has one follows the rules and the configuration.
    let has_cross = engine.cross.is_some();
    let cross = if d.flag()? { Some(load_partition(&mut d, true)?) } else { None };
    d.what = "cross-org partition (does not match the rules' scopes)";
    d.check(cross.is_some() == has_cross)?;
    window_keys += cross.as_ref().map_or(0, |p| p.windows.len());
    engine.cross = cross;
    d.what = "end of checkpoint (unread bytes)";
    d.check(d.r.at == payload.len())?;
    // The byte count is the sum over the buffers (see `Reorder::bytes`);
    // a count that disagrees would skew early releases.
    let held: usize = engine.orgs.values().chain(engine.cross.as_ref()).map(|p| p.buffer.bytes()).sum();
    d.what = "buffer bytes (disagree with the buffers)";
    d.check(held as u64 == buffer_bytes)?;
    engine.shared.buffer_bytes = held;
    engine.shared.window_keys = window_keys;
    Ok(engine)
}

fn load_partition(d: &mut Dec<'_>, cross: bool) -> Result<Partition, Fail> {
    let rules = d.rules;
    d.what = "partition";
    let org_id = OrgId(d.u32()?);
    let name = d.str()?;
    let flagged = d.flag()?;
    d.check(flagged == cross)?;
    let mut part = Partition::new(org_id, name, cross);
    part.max_time = d.i64()?;
    part.watermark = d.i64()?;
    part.clock = d.i64()?;
    part.next_sweep = d.i64()?;
    part.late = d.counter()?;

    d.what = "reorder buffer";
    let buffer = Reorder::load(&mut d.r, |record| valid_record(rules, record));
    part.buffer = d.ok(buffer)?;

    d.what = "fed-back records";
    let n = d.count()?;
    let mut records = Vec::new();
    for _ in 0..n {
        let len = d.count()?;
        let bytes = d.r.take(len);
        let bytes = d.ok(bytes)?;
        records.clear();
        d.check(decode_entry(bytes, &mut records) == len && records.len() == 1)?;
        d.check(records.iter().all(|r| valid_record(rules, r)))?;
        part.immediate.extend(records.drain(..));
    }

    d.what = "windows";
    let n = d.count()?;
    let mut windows = Table::new();
    for _ in 0..n {
        let r = d.rule()?;
        let p = d.varint()?;
        let pattern = d.ok(u16::try_from(p).ok().and_then(|p| rules.rules[r as usize].patterns.get(usize::from(p))))?;
        let group = d.key()?;
        d.check(pattern.kind != WindowKind::None)?;
        let window = Window::load(&mut d.r, pattern.kind, &pattern.aggs);
        let window = d.ok(window)?;
        let before = windows.len();
        let newest = window.newest().unwrap_or(i64::MIN);
        // Inserted in slab order: each entry keeps its position, which
        // sampled eviction draws from, and its age, which it compares.
        let slot = windows.get_or_insert_with((r, p as u16, group), || window);
        windows.set_age(slot, newest);
        d.check(windows.len() == before + 1)?;
    }
    part.windows = windows;

    d.what = "joins";
    let n = d.count()?;
    let mut joins = HashMap::with_capacity(n);
    for _ in 0..n {
        let r = d.rule()?;
        let key = d.key()?;
        let rule = &rules.rules[r as usize];
        let patterns = rule.patterns.len();
        let join = match (d.u8()?, rule.condition) {
            (0, Condition::And) => {
                let listed = d.count()?;
                d.check(listed == patterns)?;
                let mut latest = Vec::with_capacity(patterns);
                for _ in 0..patterns {
                    latest.push(if d.flag()? { Some(d.matched()?) } else { None });
                }
                Join::All(latest)
            }
            (1, Condition::AndNot) => Join::Excluded(d.i64()?),
            (2, Condition::Sequence) => {
                let listed = d.count()?;
                d.check(listed == patterns)?;
                let mut stages = Vec::with_capacity(patterns);
                for _ in 0..patterns {
                    stages.push(if d.flag()? {
                        let start = d.i64()?;
                        let m = d.count()?;
                        let mut matches = Vec::with_capacity(m);
                        for _ in 0..m {
                            matches.push(d.matched()?);
                        }
                        Some((start, matches))
                    } else {
                        None
                    });
                }
                Join::Sequence(stages)
            }
            (3, Condition::NotFollowedBy) => {
                let m = d.count()?;
                let mut pending = VecDeque::with_capacity(m);
                for _ in 0..m {
                    pending.push_back(d.matched()?);
                }
                Join::Pending(pending)
            }
            _ => return Err(d.fail()),
        };
        d.check(joins.insert((r, key), join).is_none())?;
    }
    part.joins = joins;

    d.what = "timers";
    let n = d.count()?;
    let mut timers = BTreeMap::new();
    for _ in 0..n {
        let deadline = d.i64()?;
        let seq = d.counter()?;
        let r = d.rule()?;
        let key = d.key()?;
        d.check(rules.rules[r as usize].condition == Condition::NotFollowedBy)?;
        d.check(timers.insert((deadline, seq), (r, key)).is_none())?;
    }
    part.timers = timers;

    d.what = "incidents";
    let n = d.count()?;
    let mut incidents = HashMap::with_capacity(n);
    for _ in 0..n {
        let r = d.rule()?;
        let key = d.key()?;
        let id = d.counter()?;
        let first = d.i64()?;
        let last = d.i64()?;
        let count = d.counter()?;
        let ids = d.ids()?;
        let title = d.str()?.to_string();
        d.check(incidents.insert((r, key), Open { id, first, last, count, ids, title }).is_none())?;
    }
    part.incidents = incidents;

    d.what = "watch lists";
    let n = d.count()?;
    let mut lists = HashMap::with_capacity(n);
    for _ in 0..n {
        let list = d.u32()?;
        let value = d.r.part();
        let value = d.ok(value)?;
        let expires = d.i64()?;
        d.check(lists.insert((list, value), expires).is_none())?;
    }
    part.lists = lists;
    Ok(part)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use bytes::Bytes;
    use parsers::{Event, EventTime};
    use proptest::prelude::*;

    use super::*;
    use crate::Compiler;

    const RULES: &str = r#"
- id: brute
  patterns: {f: {filter: {event_type: fail}, group_by: [src_ip], window: 60s, having: count >= 3}}
  actions: [{watchlist_add: {list: bad, field: src_ip, ttl: 1h}}]
- id: spray
  patterns: {f: {filter: {event_type: fail}, group_by: [src_ip], window: 60s, having: count_distinct(user) >= 3}}
- id: volume
  patterns: {f: {filter: {event_type: fail}, group_by: [src_ip], window: 60s, having: [sum(ext.n) > 5, max(ext.n) > 1, count_distinct(user) >= 2]}}
- id: both
  patterns:
    a: {filter: {event_type: fail}, group_by: [src_ip], window: 60s, having: count >= 2}
    b: {filter: {event_type: ok}}
  condition: a and b
  within: 60s
  join: [src_ip]
- id: seq
  patterns: {a: {filter: {event_type: incident.brute}}, b: {filter: {event_type: ok, src_ip|in_list: bad}}}
  condition: a followed by b
  within: 60s
  join: [src_ip]
- id: not
  patterns: {a: {filter: {event_type: ok}}, b: {filter: {event_type: fail}}}
  condition: a and not b
  within: 60s
  join: [src_ip]
- id: quiet
  patterns: {a: {filter: {event_type: fail}}, b: {filter: {event_type: ok}}}
  condition: a not followed by b
  within: 20s
  join: [src_ip]
- id: cross
  scope: cross-org
  patterns: {f: {filter: {event_type: fail}, group_by: [user], window: 60s, having: count >= 4}}
"#;

    fn rules() -> Arc<RuleSet> {
        let mut compiler = Compiler::new();
        compiler.add_source("t.yaml", RULES);
        Arc::new(compiler.finish().unwrap().0)
    }

    fn event(i: u64) -> Event {
        // Out of order by up to 4 s.
        let secs = 1_700_000_000 + i as i64 - (i % 5) as i64;
        let mut e = Event::empty(Bytes::new(), EventTime::from_unix(secs, 0, 0));
        e.org_id = Some(OrgId(2 + (i % 2) as u32));
        e.org = Some(Str::from(if i.is_multiple_of(2) { "a" } else { "b" }));
        e.event_type = Some(Str::from(if i % 4 == 3 { "ok" } else { "fail" }));
        e.src_ip = Some(std::net::IpAddr::from([10, 0, 0, (i % 3) as u8]));
        e.user = Some(Str::from(format!("u{}", i % 5)));
        e.ext.push("n", &(i % 4).to_string());
        e
    }

    fn checkpoint() -> (Arc<RuleSet>, Vec<u8>) {
        let rules = rules();
        let mut engine = Engine::new(Arc::clone(&rules), EngineConfig::default().trusting_stamps());
        let mut out = Vec::new();
        for i in 0..60 {
            engine.process(i, &event(i), &mut out);
        }
        let stats = engine.stats();
        assert!(out.len() > 3 && stats.buffered > 0 && stats.window_keys > 0 && stats.join_keys > 0, "{stats:?}");
        let mut bytes = Vec::new();
        engine.checkpoint(&mut bytes);
        (rules, bytes)
    }

    /// Fixes length and checksum after the payload was altered, so the
    /// payload decoder itself meets the damage.
    fn reseal(bytes: &mut [u8]) {
        let length = (bytes.len() - HEADER) as u64;
        bytes[18..26].copy_from_slice(&length.to_le_bytes());
        let sum = checksum(&[&bytes[..26], &bytes[HEADER..]]);
        bytes[26..34].copy_from_slice(&sum.to_le_bytes());
    }

    #[test]
    fn a_checkpoint_decodes_and_resealing_keeps_it() {
        let (rules, mut bytes) = checkpoint();
        reseal(&mut bytes);
        assert!(Engine::restore(rules, EngineConfig::default(), &bytes).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        /// Damage behind a valid checksum: restore refuses it or yields an
        /// engine that runs, never a panic (or an allocation the input
        /// does not pay for).
        #[test]
        fn the_payload_decoder_survives_any_damage(
            flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 0..4),
            cut in proptest::option::of(any::<usize>()),
            insert in proptest::option::of((any::<usize>(), proptest::collection::vec(any::<u8>(), 1..12))),
        ) {
            static CACHE: std::sync::OnceLock<(Arc<RuleSet>, Vec<u8>)> = std::sync::OnceLock::new();
            let (rules, valid) = CACHE.get_or_init(checkpoint);
            let mut bytes = valid.clone();
            let payload = bytes.len() - HEADER;
            for (at, xor) in flips {
                bytes[HEADER + at % payload] ^= xor;
            }
            if let Some((at, extra)) = insert {
                let at = HEADER + at % (bytes.len() - HEADER + 1);
                bytes.splice(at..at, extra);
            }
            if let Some(cut) = cut {
                bytes.truncate(HEADER + cut % (bytes.len() - HEADER + 1));
            }
            reseal(&mut bytes);
            if let Ok(mut engine) = Engine::restore(Arc::clone(rules), EngineConfig::default(), &bytes) {
                let mut out = Vec::new();
                for i in 60..90 {
                    engine.process(i, &event(i), &mut out);
                }
                engine.advance(EventTime::from_unix(1_700_000_200, 0, 0), &mut out);
                engine.flush(&mut out);
                let _ = engine.stats();
            }
        }
    }
}
