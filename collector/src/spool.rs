//! A collector's disk buffer for event batches while its link to NATS is
//! down (a remote site's collector, issue 16): batches are appended to
//! segment files in order, bounded in bytes, and sent in the same order
//! with their original message ids once the link is back (so JetStream's
//! duplicate window absorbs a batch sent twice around a crash).
//!
//! Layout: `spool-<n>.log` segments of records
//! `[u32 length][u16 partition][u32 org][u32 events][u16 id length][id][payload]`
//! (little-endian, `length` counting what follows it), and `spool.pos`,
//! the segment and offset everything before which has been sent. Every
//! append is synced before it counts, so a crash loses nothing the spool
//! took; a record cut short by a crash mid-append is left out.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

/// A segment is closed once it holds this many bytes.
const SEGMENT_BYTES: u64 = 8 << 20;
/// Record header: length, partition, org, events, id length.
const HEADER: usize = 4 + 2 + 4 + 4 + 2;

/// One batch in the spool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spooled {
    /// Its partition.
    pub partition: u16,
    /// Its org (the subject's).
    pub org: u32,
    /// Events in it (0: a cross-org copy, not counted).
    pub events: u32,
    /// Its JetStream message id.
    pub msg_id: String,
    /// The encoded batch.
    pub payload: Bytes,
}

/// Where a record ends: what [`Spool::commit`] advances to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    segment: u64,
    offset: u64,
}

/// Why a batch was not spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool holds its limit.
    #[error("the spool is full ({0} bytes)")]
    Full(u64),
    /// The disk refused.
    #[error("spool {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Counters of the spool.
#[derive(Debug, Default)]
pub struct SpoolStats {
    /// Batches written.
    pub written: AtomicU64,
    /// Batches sent and acknowledged.
    pub sent: AtomicU64,
    /// Batches that found the spool full (the sender was held back).
    pub full: AtomicU64,
    /// Events waiting in the spool.
    pub events: AtomicU64,
    /// Bytes waiting in the spool.
    pub bytes: AtomicU64,
}

struct State {
    /// Segments not yet wholly sent, oldest first, with their sizes.
    segments: VecDeque<(u64, u64)>,
    /// The open segment being appended to.
    writer: Option<(u64, File)>,
    /// Everything before this has been sent.
    sent: Position,
}

/// The spool of one collector.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    stats: SpoolStats,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("dir", &self.dir).field("max_bytes", &self.max_bytes).finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.display().to_string(), source }
}

fn segment_name(n: u64) -> String {
    format!("spool-{n:010}.log")
}

/// The records of a segment from `offset`: (end position, record); stops at
/// a record cut short.
fn read_records(path: &Path, segment: u64, offset: u64, max: usize) -> std::io::Result<Vec<(Position, Spooled)>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(offset))?;
    let mut out = Vec::new();
    let mut at = offset;
    let mut header = [0u8; HEADER];
    while out.len() < max && at + HEADER as u64 <= len {
        file.read_exact(&mut header)?;
        let length = u64::from(u32::from_le_bytes([header[0], header[1], header[2], header[3]]));
        if at + 4 + length > len || length < (HEADER - 4) as u64 {
            break;
        }
        let partition = u16::from_le_bytes([header[4], header[5]]);
        let org = u32::from_le_bytes([header[6], header[7], header[8], header[9]]);
        let events = u32::from_le_bytes([header[10], header[11], header[12], header[13]]);
        let id_len = usize::from(u16::from_le_bytes([header[14], header[15]]));
        let rest = usize::try_from(length).unwrap_or(usize::MAX) - (HEADER - 4);
        if id_len > rest {
            break;
        }
        let mut body = vec![0u8; rest];
        file.read_exact(&mut body)?;
        let payload = Bytes::from(body.split_off(id_len));
        let msg_id = String::from_utf8_lossy(&body).into_owned();
        at += 4 + length;
        out.push((Position { segment, offset: at }, Spooled { partition, org, events, msg_id, payload }));
    }
    Ok(out)
}

impl Spool {
    /// Opens the spool in `dir` (created if needed), finding what an
    /// earlier run left to send.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let pos_path = dir.join("spool.pos");
        let sent = std::fs::read_to_string(&pos_path)
            .ok()
            .and_then(|t| {
                let (s, o) = t.trim().split_once(':')?;
                Some(Position { segment: s.parse().ok()?, offset: o.parse().ok()? })
            })
            .unwrap_or(Position { segment: 0, offset: 0 });
        let mut found: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_prefix("spool-")?.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        found.sort_unstable();
        let spool = Spool {
            dir: dir.to_owned(),
            max_bytes,
            state: Mutex::new(State { segments: VecDeque::new(), writer: None, sent }),
            stats: SpoolStats::default(),
        };
        let mut state = spool.lock();
        for n in found {
            let path = dir.join(segment_name(n));
            if n < sent.segment {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let from = if n == sent.segment { sent.offset } else { 0 };
            let records = read_records(&path, n, from, usize::MAX).map_err(io_err(&path))?;
            let end = records.last().map_or(from, |(p, _)| p.offset);
            // Cut off a record a crash left unfinished.
            let file = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
            file.set_len(end).map_err(io_err(&path))?;
            let events: u64 = records.iter().map(|(_, r)| u64::from(r.events)).sum();
            spool.stats.events.fetch_add(events, Ordering::Relaxed);
            spool.stats.bytes.fetch_add(end - from, Ordering::Relaxed);
            state.segments.push_back((n, end));
        }
        drop(state);
        Ok(spool)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The counters.
    pub fn stats(&self) -> &SpoolStats {
        &self.stats
    }

    /// Whether batches wait in the spool.
    pub fn has_backlog(&self) -> bool {
        self.stats.bytes.load(Ordering::Relaxed) > 0
    }

    /// Appends a batch and syncs it; `Full` when it would pass the limit.
    pub fn append(&self, batch: &Spooled) -> Result<(), SpoolError> {
        let id = batch.msg_id.as_bytes();
        let id_len = u16::try_from(id.len()).unwrap_or(u16::MAX);
        let id = &id[..usize::from(id_len)];
        let length = (HEADER - 4) + id.len() + batch.payload.len();
        let record_bytes = 4 + length as u64;
        let held = self.stats.bytes.load(Ordering::Relaxed);
        if held + record_bytes > self.max_bytes {
            self.stats.full.fetch_add(1, Ordering::Relaxed);
            return Err(SpoolError::Full(held));
        }
        let mut state = self.lock();
        let roll = match (&state.writer, state.segments.back()) {
            (Some((n, _)), Some(&(last, size))) => *n != last || size >= SEGMENT_BYTES,
            _ => true,
        };
        if roll {
            let n = state.segments.back().map_or(state.sent.segment + 1, |&(last, _)| last + 1);
            if state.segments.is_empty() {
                // Everything before is sent: reading starts at the new one.
                state.sent = Position { segment: n, offset: 0 };
            }
            let path = self.dir.join(segment_name(n));
            let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
            state.writer = Some((n, file));
            state.segments.push_back((n, 0));
        }
        let mut record = Vec::with_capacity(4 + length);
        record.extend_from_slice(&u32::try_from(length).unwrap_or(u32::MAX).to_le_bytes());
        record.extend_from_slice(&batch.partition.to_le_bytes());
        record.extend_from_slice(&batch.org.to_le_bytes());
        record.extend_from_slice(&batch.events.to_le_bytes());
        record.extend_from_slice(&id_len.to_le_bytes());
        record.extend_from_slice(id);
        record.extend_from_slice(&batch.payload);
        let n = state.writer.as_ref().map_or(0, |(n, _)| *n);
        let path = self.dir.join(segment_name(n));
        if let Some((_, file)) = state.writer.as_mut() {
            file.write_all(&record).and_then(|()| file.sync_data()).map_err(io_err(&path))?;
        }
        if let Some(last) = state.segments.back_mut() {
            last.1 += record_bytes;
        }
        self.stats.written.fetch_add(1, Ordering::Relaxed);
        self.stats.events.fetch_add(u64::from(batch.events), Ordering::Relaxed);
        self.stats.bytes.fetch_add(record_bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Up to `max` batches from the oldest not yet sent, in order.
    pub fn peek(&self, max: usize) -> Result<Vec<(Position, Spooled)>, SpoolError> {
        let state = self.lock();
        let mut out = Vec::new();
        for &(n, _) in &state.segments {
            if out.len() >= max {
                break;
            }
            let from = if n == state.sent.segment { state.sent.offset } else { 0 };
            let path = self.dir.join(segment_name(n));
            out.extend(read_records(&path, n, from, max - out.len()).map_err(io_err(&path))?);
        }
        Ok(out)
    }

    /// Marks everything up to `upto` (a record's end), whose batch was
    /// sent and acknowledged, as sent; segments wholly sent are deleted.
    pub fn commit(&self, upto: Position, batch: &Spooled) {
        let mut state = self.lock();
        if upto <= state.sent {
            return;
        }
        state.sent = upto;
        let record_bytes = (HEADER + batch.msg_id.len().min(usize::from(u16::MAX)) + batch.payload.len()) as u64;
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .stats
            .events
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |e| Some(e.saturating_sub(u64::from(batch.events))));
        let _ = self
            .stats
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(record_bytes)));
        // Sent segments other than the one being written go.
        while let Some(&(n, size)) = state.segments.front() {
            let writing = state.writer.as_ref().is_some_and(|(w, _)| *w == n);
            let done = n < upto.segment || (n == upto.segment && upto.offset >= size);
            if !done || (writing && state.segments.len() == 1) {
                break;
            }
            state.segments.pop_front();
            if writing {
                state.writer = None;
            }
            let _ = std::fs::remove_file(self.dir.join(segment_name(n)));
            if let Some(&(next, _)) = state.segments.front() {
                state.sent = state.sent.max(Position { segment: next, offset: 0 });
            }
        }
        let pos = format!("{}:{}\n", state.sent.segment, state.sent.offset);
        let _ = std::fs::write(self.dir.join("spool.pos"), pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(i: u32, bytes: usize) -> Spooled {
        Spooled {
            partition: u16::try_from(i % 4).unwrap(),
            org: 3,
            events: 2,
            msg_id: format!("edge-a/b/{i}"),
            payload: Bytes::from(vec![u8::try_from(i % 251).unwrap(); bytes]),
        }
    }

    #[test]
    fn batches_come_back_in_order_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(!spool.has_backlog());
        for i in 0..5 {
            spool.append(&batch(i, 100)).unwrap();
        }
        assert_eq!(spool.stats().events.load(Ordering::Relaxed), 10);
        let first = spool.peek(2).unwrap();
        assert_eq!(first.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>(), vec![batch(0, 100), batch(1, 100)]);
        for (pos, b) in &first {
            spool.commit(*pos, b);
        }
        drop(spool);
        // Reopened: the three not sent, nothing twice.
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let rest = spool.peek(10).unwrap();
        assert_eq!(
            rest.iter().map(|(_, b)| b.msg_id.clone()).collect::<Vec<_>>(),
            ["edge-a/b/2", "edge-a/b/3", "edge-a/b/4"]
        );
        assert_eq!(spool.stats().events.load(Ordering::Relaxed), 6);
        for (pos, b) in &rest {
            spool.commit(*pos, b);
        }
        assert!(!spool.has_backlog());
        assert_eq!(spool.stats().events.load(Ordering::Relaxed), 0);
        spool.append(&batch(9, 10)).unwrap();
        assert_eq!(spool.peek(10).unwrap().len(), 1);
    }

    #[test]
    fn the_spool_is_bounded_and_a_torn_record_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1_000).unwrap();
        spool.append(&batch(0, 600)).unwrap();
        assert!(matches!(spool.append(&batch(1, 600)), Err(SpoolError::Full(_))));
        assert_eq!(spool.stats().full.load(Ordering::Relaxed), 1);
        drop(spool);
        // A crash in the middle of the next append.
        let path = dir.path().join(segment_name(1));
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(file);
        let spool = Spool::open(dir.path(), 10_000).unwrap();
        assert_eq!(spool.peek(10).unwrap().len(), 1);
        spool.append(&batch(2, 10)).unwrap();
        let all = spool.peek(10).unwrap();
        assert_eq!(all.iter().map(|(_, b)| b.msg_id.clone()).collect::<Vec<_>>(), ["edge-a/b/0", "edge-a/b/2"]);
    }

    #[test]
    fn sent_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 64 << 20).unwrap();
        // Three segments' worth.
        for i in 0..20 {
            spool.append(&batch(i, 1 << 20)).unwrap();
        }
        let segments = || {
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".log"))
                .count()
        };
        assert!(segments() >= 3);
        loop {
            let next = spool.peek(4).unwrap();
            if next.is_empty() {
                break;
            }
            for (pos, b) in &next {
                spool.commit(*pos, b);
            }
        }
        assert!(segments() <= 1, "{}", segments());
        assert!(!spool.has_backlog());
    }
}
