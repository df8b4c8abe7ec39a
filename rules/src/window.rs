//! Sliding event-time windows, one per (rule, pattern, group key).
//!
//! Events reach a window in event-time order (the engine reorders them
//! first), so a window is a queue: new events at the back, expired ones off
//! the front. A window covers `[t - window, t]` for the newest event time
//! `t`, both ends included.
//!
//! Count-only patterns keep just the times and ids of their last
//! `threshold` events in a fixed ring, which is what keeps a threshold key
//! small. Other aggregates keep every event in the window (up to a cap)
//! with running sums, distinct-value counts and monotonic queues for
//! minimum and maximum, so each event costs O(1) amortized.

use std::collections::{HashMap, VecDeque};
use std::mem::size_of;

use crate::compile::{Agg, Having, WindowKind};
use crate::key::Part;
use crate::reorder::{Reader, put_part, put_varint};

/// A window's state.
#[derive(Debug)]
pub(crate) enum Window {
    Count(Ring),
    Distinct(Values),
    General(Box<General>),
}

/// The last (time, event id) pairs up to a limit, oldest first. The first
/// entry is kept inline (most keys — one-off source addresses — never see a
/// second event, and a heap allocation per key would cost more than the
/// entry and scatter long-lived blocks); past it the buffer grows with use
/// up to the limit, then wraps around.
#[derive(Debug)]
pub(crate) struct Ring {
    buf: RingBuf,
    head: u32,
    len: u32,
}

#[derive(Debug)]
enum RingBuf {
    One((i64, u64)),
    Many(Box<[(i64, u64)]>),
}

impl Ring {
    pub fn new() -> Ring {
        Ring { buf: RingBuf::One((0, 0)), head: 0, len: 0 }
    }

    /// Makes room for one more entry, up to `limit` entries in all.
    fn grow(&mut self, limit: usize) {
        let cap = self.capacity();
        if (self.len as usize) < cap || cap >= limit {
            return;
        }
        let new_cap = (cap * 2).clamp(1, limit.max(1));
        let mut buf = Vec::with_capacity(new_cap);
        buf.extend((0..self.len as usize).map(|i| self.at(i)));
        buf.resize(new_cap, (0, 0));
        self.buf = RingBuf::Many(buf.into_boxed_slice());
        self.head = 0;
    }

    fn slots(&self) -> &[(i64, u64)] {
        match &self.buf {
            RingBuf::One(one) => std::slice::from_ref(one),
            RingBuf::Many(many) => many,
        }
    }

    fn slots_mut(&mut self) -> &mut [(i64, u64)] {
        match &mut self.buf {
            RingBuf::One(one) => std::slice::from_mut(one),
            RingBuf::Many(many) => many,
        }
    }

    fn capacity(&self) -> usize {
        self.slots().len()
    }

    fn at(&self, i: usize) -> (i64, u64) {
        self.slots()[(self.head as usize + i) % self.capacity()]
    }

    /// Appends `weight` occurrences, keeping at most `limit` entries.
    pub fn push_weighted(&mut self, time: i64, id: u64, weight: u32, limit: usize) {
        for _ in 0..(weight as usize).clamp(1, limit.max(1)) {
            self.push(time, id, limit);
        }
    }

    /// Appends, dropping the oldest entry when `limit` entries are kept.
    pub fn push(&mut self, time: i64, id: u64, limit: usize) {
        self.grow(limit);
        let cap = self.capacity();
        if self.len as usize == cap {
            let head = self.head as usize;
            self.slots_mut()[head] = (time, id);
            self.head = ((head + 1) % cap) as u32;
        } else {
            let tail = (self.head as usize + self.len as usize) % cap;
            self.slots_mut()[tail] = (time, id);
            self.len += 1;
        }
    }

    /// Drops entries older than `limit`.
    pub fn evict_before(&mut self, limit: i64) {
        while self.len > 0 && self.at(0).0 < limit {
            self.head = ((self.head as usize + 1) % self.capacity()) as u32;
            self.len -= 1;
        }
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn newest(&self) -> Option<i64> {
        (self.len > 0).then(|| self.at(self.len as usize - 1).0)
    }

    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.len as usize).map(|i| self.at(i).1)
    }

    pub fn heap_bytes(&self) -> usize {
        match &self.buf {
            RingBuf::One(_) => 0,
            RingBuf::Many(many) => many.len() * size_of::<(i64, u64)>(),
        }
    }
}

/// Distinct values with the time and event id of their latest occurrence.
/// Kept for small distinct-count thresholds only: a window is emptied when
/// it reaches its threshold, so the list never outgrows it.
#[derive(Debug, Default)]
pub(crate) struct Values {
    items: Vec<(Part, i64, u64)>,
}

impl Values {
    pub fn evict_before(&mut self, limit: i64) {
        self.items.retain(|(_, time, _)| *time >= limit);
        if self.items.capacity() > 2 * self.items.len() {
            self.items.shrink_to_fit();
        }
    }

    pub fn push(&mut self, value: Part, time: i64, id: u64) {
        match self.items.iter_mut().find(|(v, _, _)| *v == value) {
            Some(item) => {
                item.1 = time;
                item.2 = id;
            }
            None => {
                // Exactly as many as needed: a Vec would start at room for
                // four, and most keys keep one value.
                self.items.reserve_exact(1);
                self.items.push((value, time, id));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    fn newest(&self) -> Option<i64> {
        self.items.iter().map(|(_, t, _)| *t).max()
    }

    /// Event ids oldest first.
    fn ids(&self) -> Vec<u64> {
        let mut by_time: Vec<(i64, u64)> = self.items.iter().map(|(_, t, id)| (*t, *id)).collect();
        by_time.sort_unstable();
        by_time.into_iter().map(|(_, id)| id).collect()
    }

    fn heap_bytes(&self) -> usize {
        self.items.capacity() * size_of::<(Part, i64, u64)>()
            + self.items.iter().map(|(p, _, _)| p.heap_bytes()).sum::<usize>()
    }
}

/// One input of an aggregate for one event.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Val {
    /// `count` needs no value.
    None,
    Num(f64),
    Part(Part),
}

#[derive(Debug)]
struct Entry {
    time: i64,
    id: u64,
    seq: u64,
    weight: u32,
    vals: Box<[Val]>,
}

#[derive(Debug)]
enum AggState {
    Count,
    Distinct(HashMap<Part, u32>),
    Sum(f64),
    /// Monotonic queue of (seq, value); the front is the extreme.
    Extreme {
        max: bool,
        queue: VecDeque<(u64, f64)>,
    },
}

/// Every event of the window with running aggregates.
#[derive(Debug)]
pub(crate) struct General {
    entries: VecDeque<Entry>,
    /// Sum of the entries' weights: the `count`.
    count: u64,
    states: Vec<AggState>,
    next_seq: u64,
}

impl General {
    pub fn new(aggs: &[Agg]) -> General {
        let states = aggs
            .iter()
            .map(|a| match a {
                Agg::Count => AggState::Count,
                Agg::Distinct(_) => AggState::Distinct(HashMap::new()),
                Agg::Sum(_) | Agg::Avg(_) => AggState::Sum(0.0),
                Agg::Min(_) => AggState::Extreme { max: false, queue: VecDeque::new() },
                Agg::Max(_) => AggState::Extreme { max: true, queue: VecDeque::new() },
            })
            .collect();
        General { entries: VecDeque::new(), count: 0, states, next_seq: 0 }
    }

    fn pop_front(&mut self) {
        let Some(entry) = self.entries.pop_front() else { return };
        self.count -= u64::from(entry.weight);
        for (state, val) in self.states.iter_mut().zip(entry.vals.iter()) {
            match (state, val) {
                (AggState::Distinct(seen), Val::Part(p)) => {
                    if let Some(n) = seen.get_mut(p) {
                        *n -= 1;
                        if *n == 0 {
                            seen.remove(p);
                        }
                    }
                }
                (AggState::Sum(sum), Val::Num(v)) => *sum -= v,
                (AggState::Extreme { queue, .. }, _) => {
                    while queue.front().is_some_and(|(seq, _)| *seq <= entry.seq) {
                        queue.pop_front();
                    }
                }
                _ => {}
            }
        }
        if self.entries.is_empty() {
            // Start sums afresh so rounding cannot accumulate.
            for state in &mut self.states {
                if let AggState::Sum(sum) = state {
                    *sum = 0.0;
                }
            }
        }
    }

    /// Drops entries older than `limit`.
    pub fn evict_before(&mut self, limit: i64) {
        while self.entries.front().is_some_and(|e| e.time < limit) {
            self.pop_front();
        }
    }

    /// Appends an event standing for `weight` occurrences; returns whether
    /// the cap pushed out an entry early.
    pub fn push(&mut self, time: i64, id: u64, weight: u32, vals: Box<[Val]>, cap: usize) -> bool {
        let overflow = self.entries.len() >= cap.max(1);
        if overflow {
            self.pop_front();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        for (state, val) in self.states.iter_mut().zip(vals.iter()) {
            match (state, val) {
                (AggState::Distinct(seen), Val::Part(p)) => *seen.entry(p.clone()).or_insert(0) += 1,
                (AggState::Sum(sum), Val::Num(v)) => *sum += v,
                (AggState::Extreme { max, queue }, Val::Num(v)) => {
                    while queue.back().is_some_and(|(_, b)| if *max { b <= v } else { b >= v }) {
                        queue.pop_back();
                    }
                    queue.push_back((seq, *v));
                }
                _ => {}
            }
        }
        let weight = weight.max(1);
        self.count += u64::from(weight);
        self.entries.push_back(Entry { time, id, seq, weight, vals });
        overflow
    }

    /// The current value of aggregate `slot`.
    pub fn value(&self, slot: usize) -> f64 {
        match &self.states[slot] {
            AggState::Count => self.count as f64,
            AggState::Distinct(seen) => seen.len() as f64,
            AggState::Sum(sum) => *sum,
            AggState::Extreme { queue, .. } => queue.front().map_or(f64::NAN, |(_, v)| *v),
        }
    }

    /// Whether the aggregate at `slot` is an average (its value is sum / count).
    pub fn mean(&self, slot: usize, aggs: &[Agg]) -> f64 {
        match aggs.get(slot) {
            Some(Agg::Avg(_)) if !self.entries.is_empty() => self.value(slot) / self.entries.len() as f64,
            _ => self.value(slot),
        }
    }

    pub fn newest(&self) -> Option<i64> {
        self.entries.back().map(|e| e.time)
    }

    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.iter().map(|e| e.id)
    }

    pub fn heap_bytes(&self) -> usize {
        let entries = self.entries.capacity() * size_of::<Entry>()
            + self.entries.iter().map(|e| e.vals.len() * size_of::<Val>()).sum::<usize>();
        let states: usize = self
            .states
            .iter()
            .map(|s| match s {
                AggState::Distinct(seen) => {
                    seen.capacity() * (size_of::<(Part, u32)>() + 1) + seen.keys().map(Part::heap_bytes).sum::<usize>()
                }
                AggState::Extreme { queue, .. } => queue.capacity() * size_of::<(u64, f64)>(),
                _ => 0,
            })
            .sum();
        size_of::<General>() + entries + states + self.states.capacity() * size_of::<AggState>()
    }
}

impl Window {
    pub fn newest(&self) -> Option<i64> {
        match self {
            Window::Count(ring) => ring.newest(),
            Window::Distinct(values) => values.newest(),
            Window::General(g) => g.newest(),
        }
    }

    /// Whether every threshold holds.
    pub fn holds(&self, having: &[Having], aggs: &[Agg]) -> bool {
        match self {
            Window::Count(ring) => having.iter().all(|h| h.op.holds(ring.len() as f64, h.value)),
            Window::Distinct(values) => having.iter().all(|h| h.op.holds(values.len() as f64, h.value)),
            Window::General(g) => having.iter().all(|h| h.op.holds(g.mean(h.agg, aggs), h.value)),
        }
    }

    /// The value of aggregate `slot`, for titles.
    pub fn value(&self, slot: usize, aggs: &[Agg]) -> f64 {
        match self {
            Window::Count(ring) => ring.len() as f64,
            Window::Distinct(values) => values.len() as f64,
            Window::General(g) => g.mean(slot, aggs),
        }
    }

    /// Up to `limit` of the most recent contributing event ids, oldest first.
    pub fn ids(&self, limit: usize) -> Vec<u64> {
        let ids: Vec<u64> = match self {
            Window::Count(ring) => ring.ids().collect(),
            Window::Distinct(values) => values.ids(),
            Window::General(g) => g.ids().collect(),
        };
        let skip = ids.len().saturating_sub(limit);
        ids.into_iter().skip(skip).collect()
    }

    pub fn heap_bytes(&self) -> usize {
        match self {
            Window::Count(ring) => ring.heap_bytes(),
            Window::Distinct(values) => values.heap_bytes(),
            Window::General(g) => g.heap_bytes(),
        }
    }

    /// Appends the window to a checkpoint.
    ///
    /// ```text
    /// window  = 0 n:varint (time:i64le id:varint)*n                 ring, oldest first
    ///         | 1 n:varint (part time:i64le id:varint)*n            distinct values
    ///         | 2 next_seq:varint count:varint
    ///             n:varint (time:i64le id:varint seq:varint weight:varint m:varint val*m)*n
    ///             n:varint state*n
    /// state   = 0 (count) | 1 (distinct: rebuilt from the entries) | 2 sum:f64le
    ///         | 3 max:u8 n:varint (seq:varint value:f64le)*n     monotonic queue
    /// val     = 0 | 1 f64le | 2 part
    /// ```
    pub fn save(&self, out: &mut Vec<u8>) {
        match self {
            Window::Count(ring) => {
                out.push(0);
                put_varint(out, u64::from(ring.len));
                for i in 0..ring.len as usize {
                    let (time, id) = ring.at(i);
                    out.extend_from_slice(&time.to_le_bytes());
                    put_varint(out, id);
                }
            }
            Window::Distinct(values) => {
                out.push(1);
                put_varint(out, values.items.len() as u64);
                for (part, time, id) in &values.items {
                    put_part(out, part);
                    out.extend_from_slice(&time.to_le_bytes());
                    put_varint(out, *id);
                }
            }
            Window::General(g) => {
                let General { entries, count, states, next_seq } = &**g;
                out.push(2);
                put_varint(out, *next_seq);
                put_varint(out, *count);
                put_varint(out, entries.len() as u64);
                for e in entries {
                    out.extend_from_slice(&e.time.to_le_bytes());
                    put_varint(out, e.id);
                    put_varint(out, e.seq);
                    put_varint(out, u64::from(e.weight));
                    put_varint(out, e.vals.len() as u64);
                    for v in e.vals.iter() {
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
                put_varint(out, states.len() as u64);
                for state in states {
                    match state {
                        AggState::Count => out.push(0),
                        AggState::Distinct(_) => out.push(1),
                        AggState::Sum(sum) => {
                            out.push(2);
                            out.extend_from_slice(&sum.to_le_bytes());
                        }
                        AggState::Extreme { max, queue } => {
                            out.push(3);
                            out.push(u8::from(*max));
                            put_varint(out, queue.len() as u64);
                            for (seq, v) in queue {
                                put_varint(out, *seq);
                                out.extend_from_slice(&v.to_le_bytes());
                            }
                        }
                    }
                }
            }
        }
    }

    /// Reads what [`Window::save`] wrote for a pattern of `kind` with
    /// `aggs`; `None` unless the window has the shape the pattern makes.
    pub fn load(r: &mut Reader<'_>, kind: WindowKind, aggs: &[Agg]) -> Option<Window> {
        const LIMIT: u64 = 1 << 62;
        match (r.u8()?, kind) {
            (0, WindowKind::Count { threshold }) => {
                let n = r.count()?;
                if n > threshold.max(1) {
                    return None;
                }
                let mut slots = Vec::with_capacity(n);
                for _ in 0..n {
                    slots.push((r.i64le()?, r.varint()?));
                }
                let len = u32::try_from(n).ok()?;
                let buf = match slots.as_slice() {
                    [] => RingBuf::One((0, 0)),
                    [one] => RingBuf::One(*one),
                    _ => RingBuf::Many(slots.into_boxed_slice()),
                };
                Some(Window::Count(Ring { buf, head: 0, len }))
            }
            (1, WindowKind::Distinct { threshold }) => {
                let n = r.count()?;
                if n > threshold.max(1) {
                    return None;
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push((r.part()?, r.i64le()?, r.varint()?));
                }
                Some(Window::Distinct(Values { items }))
            }
            (2, WindowKind::General) => {
                let next_seq = r.varint()?;
                let count = r.varint()?;
                let n = r.count()?;
                let mut entries = VecDeque::with_capacity(n);
                let mut weights = 0u64;
                for _ in 0..n {
                    let (time, id, seq) = (r.i64le()?, r.varint()?, r.varint()?);
                    let weight = u32::try_from(r.varint()?).ok()?;
                    weights += u64::from(weight);
                    let m = r.count()?;
                    let mut vals = Vec::with_capacity(m);
                    for _ in 0..m {
                        vals.push(match r.u8()? {
                            0 => Val::None,
                            1 => Val::Num(f64::from_bits(r.u64le()?)),
                            2 => Val::Part(r.part()?),
                            _ => return None,
                        });
                    }
                    entries.push_back(Entry { time, id, seq, weight, vals: vals.into_boxed_slice() });
                }
                // Removing entries subtracts their weights and sequence
                // numbers only grow: nothing may underflow or overflow later.
                if count < weights || count >= LIMIT || next_seq >= LIMIT {
                    return None;
                }
                if r.count()? != aggs.len() {
                    return None;
                }
                let mut states = Vec::with_capacity(aggs.len());
                for agg in aggs {
                    states.push(match (r.u8()?, agg) {
                        (0, Agg::Count) => AggState::Count,
                        (1, Agg::Distinct(_)) => AggState::Distinct(HashMap::new()),
                        (2, Agg::Sum(_) | Agg::Avg(_)) => AggState::Sum(f64::from_bits(r.u64le()?)),
                        (3, Agg::Min(_) | Agg::Max(_)) => {
                            let max = match r.u8()? {
                                0 => false,
                                1 => true,
                                _ => return None,
                            };
                            if max != matches!(agg, Agg::Max(_)) {
                                return None;
                            }
                            let n = r.count()?;
                            let mut queue = VecDeque::with_capacity(n);
                            for _ in 0..n {
                                queue.push_back((r.varint()?, f64::from_bits(r.u64le()?)));
                            }
                            AggState::Extreme { max, queue }
                        }
                        _ => return None,
                    });
                }
                // Distinct counts are the entries' values, as `push` made them.
                for entry in &entries {
                    for (state, val) in states.iter_mut().zip(entry.vals.iter()) {
                        if let (AggState::Distinct(seen), Val::Part(p)) = (state, val) {
                            *seen.entry(p.clone()).or_insert(0) += 1;
                        }
                    }
                }
                Some(Window::General(Box::new(General { entries, count, states, next_seq })))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::Field;
    use crate::filter::Op;

    #[test]
    fn ring_keeps_the_last_entries_in_order() {
        let mut ring = Ring::new();
        assert_eq!(ring.heap_bytes(), 0);
        ring.push(1, 10, 3);
        assert_eq!(ring.heap_bytes(), 0, "the first entry is inline");
        ring.push(2, 20, 3);
        assert_eq!(ring.heap_bytes(), 32);
        for t in 2..=5 {
            ring.push(t, t as u64 * 10, 3);
        }
        assert_eq!(ring.heap_bytes(), 48);
        assert_eq!(ring.ids().collect::<Vec<_>>(), vec![30, 40, 50]);
        ring.evict_before(5);
        assert_eq!(ring.ids().collect::<Vec<_>>(), vec![50]);
        assert_eq!(ring.newest(), Some(5));
        ring.evict_before(6);
        assert_eq!(ring.len(), 0);
        assert_eq!(ring.newest(), None);
        // Growth after wrapping keeps the order.
        let mut ring = Ring::new();
        for t in 0..3 {
            ring.push(t, t as u64, 2);
        }
        ring.push_weighted(9, 9, 5, 4);
        assert_eq!(ring.ids().collect::<Vec<_>>(), vec![9, 9, 9, 9]);
        let mut ring = Ring::new();
        for t in 0..3 {
            ring.push(t, t as u64, 2);
        }
        ring.push(3, 3, 4);
        assert_eq!(ring.ids().collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn general_aggregates_follow_the_window() {
        let f = || Field::Ext("v".into());
        let aggs =
            vec![Agg::Count, Agg::Distinct(Field::User), Agg::Sum(f()), Agg::Avg(f()), Agg::Min(f()), Agg::Max(f())];
        let mut g = General::new(&aggs);
        let vals = |user: &str, v: f64| {
            vec![Val::None, Val::Part(Part::Text(user.into())), Val::Num(v), Val::Num(v), Val::Num(v), Val::Num(v)]
                .into_boxed_slice()
        };
        g.push(1, 1, 1, vals("a", 5.0), 100);
        g.push(2, 2, 1, vals("b", 1.0), 100);
        g.push(3, 3, 1, vals("a", 9.0), 100);
        let values: Vec<f64> = (0..6).map(|i| g.mean(i, &aggs)).collect();
        assert_eq!(values, vec![3.0, 2.0, 15.0, 5.0, 1.0, 9.0]);
        g.evict_before(3);
        let values: Vec<f64> = (0..6).map(|i| g.mean(i, &aggs)).collect();
        assert_eq!(values, vec![1.0, 1.0, 9.0, 9.0, 9.0, 9.0]);
        let window = Window::General(Box::new(g));
        assert!(window.holds(&[Having { agg: 5, op: Op::Gte, value: 9.0 }], &aggs));
        assert!(!window.holds(&[Having { agg: 0, op: Op::Gt, value: 1.0 }], &aggs));
        assert_eq!(window.ids(10), vec![3]);
    }

    #[test]
    fn distinct_values_keep_their_latest_time() {
        let mut v = Values::default();
        let user = |u: &str| Part::Text(u.into());
        v.push(user("a"), 1, 1);
        v.push(user("b"), 2, 2);
        v.push(user("a"), 3, 3);
        assert_eq!((v.len(), v.newest(), v.ids()), (2, Some(3), vec![2, 3]));
        v.evict_before(3);
        assert_eq!((v.len(), v.ids()), (1, vec![3]));
        let window = Window::Distinct(v);
        assert_eq!(window.value(0, &[]), 1.0);
        assert!(window.heap_bytes() > 0);
    }

    #[test]
    fn the_cap_bounds_a_window() {
        let mut g = General::new(&[Agg::Count]);
        let overflowed: Vec<bool> =
            (0..4).map(|t| g.push(t, t as u64, 3, vec![Val::None].into_boxed_slice(), 2)).collect();
        assert_eq!(overflowed, vec![false, false, true, true]);
        assert_eq!(g.value(0), 6.0);
        assert_eq!(g.ids().collect::<Vec<_>>(), vec![2, 3]);
    }
}
