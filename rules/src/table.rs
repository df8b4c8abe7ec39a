//! A hash map for the largest state, the windows: entries live densely in
//! pages of a slab and the hash table holds only their 4-byte positions.
//!
//! A `HashMap<K, V>` keeps a whole (key, value) per bucket and runs at 44–88 %
//! load, so at a million keys half its buckets are empty 56-byte holes; here
//! an empty bucket costs 5 bytes. The slab grows a page (4,096 entries) at a
//! time, not by doubling, so a million keys do not carry room for another
//! million; emptied pages are freed. Keys are hashed with SipHash under a
//! random key (std's `RandomState`): group keys are source addresses and user
//! names an attacker chooses, so the hash must not be predictable (HashDoS).
//!
//! Each entry also has an *age* (the owner's notion of its last use), kept
//! in pages of their own beside the entries: sampled eviction reads eight
//! random ages, and 8-byte ages packed together stay in cache where the
//! entries and what they point to do not (sampling the windows themselves
//! was the worker's hottest function in a `vigil bench` profile).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::mem::size_of;

use hashbrown::HashTable;

/// Entries per page of the slab.
const PAGE: usize = 4096;

#[derive(Debug)]
pub(crate) struct Table<K, V> {
    hasher: RandomState,
    index: HashTable<u32>,
    /// Full pages, then the last one; entry `i` is `pages[i / PAGE][i % PAGE]`.
    pages: Vec<Vec<(K, V)>>,
    /// Entry `i`'s age is `ages[i / PAGE][i % PAGE]`: pages in step with `pages`.
    ages: Vec<Vec<i64>>,
    len: usize,
}

impl<K: Hash + Eq, V> Table<K, V> {
    pub fn new() -> Table<K, V> {
        Table { hasher: RandomState::new(), index: HashTable::new(), pages: Vec::new(), ages: Vec::new(), len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    fn at(&self, i: usize) -> &(K, V) {
        &self.pages[i / PAGE][i % PAGE]
    }

    fn at_mut(&mut self, i: usize) -> &mut (K, V) {
        &mut self.pages[i / PAGE][i % PAGE]
    }

    /// The slot of `key`, inserting `make()` first (aged `i64::MIN`, the
    /// oldest) if it is absent.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> usize {
        let hash = self.hasher.hash_one(&key);
        let Table { hasher, index, pages, ages, len } = self;
        let entry = |i: usize| &pages[i / PAGE][i % PAGE];
        if let Some(&i) = index.find(hash, |&i| entry(i as usize).0 == key) {
            return i as usize;
        }
        let i = *len;
        if pages.last().is_none_or(|p| p.len() == PAGE) {
            pages.push(Vec::with_capacity(PAGE));
            ages.push(Vec::with_capacity(PAGE));
        }
        if let Some(page) = pages.last_mut() {
            page.push((key, make()));
        }
        if let Some(page) = ages.last_mut() {
            page.push(i64::MIN);
        }
        *len += 1;
        index.insert_unique(hash, u32::try_from(i).unwrap_or(u32::MAX), |&j| {
            hasher.hash_one(&pages[j as usize / PAGE][j as usize % PAGE].0)
        });
        i
    }

    pub fn value_mut(&mut self, slot: usize) -> &mut V {
        &mut self.at_mut(slot).1
    }

    pub fn value(&self, slot: usize) -> &V {
        &self.at(slot).1
    }

    /// Sets the age of the entry in `slot` (see [`Table::evict_sampled`]).
    pub fn set_age(&mut self, slot: usize, age: i64) {
        if let Some(a) = self.ages.get_mut(slot / PAGE).and_then(|p| p.get_mut(slot % PAGE)) {
            *a = age;
        }
    }

    fn age(&self, slot: usize) -> i64 {
        self.ages.get(slot / PAGE).and_then(|p| p.get(slot % PAGE)).copied().unwrap_or(i64::MIN)
    }

    /// Removes the last entry and its age.
    fn pop(&mut self) -> Option<((K, V), i64)> {
        let tail = self.pages.last_mut().and_then(Vec::pop)?;
        let age = self.ages.last_mut().and_then(Vec::pop).unwrap_or(i64::MIN);
        self.len -= 1;
        if self.pages.last().is_some_and(Vec::is_empty) {
            self.pages.pop();
            self.ages.pop();
        }
        Some((tail, age))
    }

    /// Removes the entry in `slot` (none if there is no such slot); the
    /// last entry moves into its place.
    pub fn remove(&mut self, slot: usize) -> Option<(K, V)> {
        if slot >= self.len {
            return None;
        }
        let hash = self.hasher.hash_one(&self.at(slot).0);
        if let Ok(entry) = self.index.find_entry(hash, |&i| i as usize == slot) {
            entry.remove();
        }
        let last = self.len - 1;
        let (tail, age) = self.pop()?;
        if slot == last {
            return Some(tail);
        }
        let removed = std::mem::replace(self.at_mut(slot), tail);
        self.set_age(slot, age);
        let moved = self.hasher.hash_one(&self.at(slot).0);
        if let Some(i) = self.index.find_mut(moved, |&i| i as usize == last) {
            *i = u32::try_from(slot).unwrap_or(u32::MAX);
        }
        Some(removed)
    }

    /// Keeps the entries for which `keep` holds, in one pass and in place
    /// (a removed entry's place is taken by the last one), so a sweep of a
    /// million keys allocates nothing but the rebuilt index.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        let before = self.len;
        let mut i = 0;
        while i < self.len {
            let (k, v) = self.at(i);
            if keep(k, v) {
                i += 1;
                continue;
            }
            let Some((tail, age)) = self.pop() else { break };
            if i < self.len {
                *self.at_mut(i) = tail;
                self.set_age(i, age);
            }
        }
        if self.len != before {
            self.reindex();
        }
    }

    fn reindex(&mut self) {
        let Table { hasher, index, pages, .. } = self;
        index.clear();
        let len = pages.iter().map(Vec::len).sum::<usize>();
        index.shrink_to(len, |&j| hasher.hash_one(&pages[j as usize / PAGE][j as usize % PAGE].0));
        for (p, page) in pages.iter().enumerate() {
            for (o, (k, _)) in page.iter().enumerate() {
                let i = p * PAGE + o;
                let hash = hasher.hash_one(k);
                index.insert_unique(hash, u32::try_from(i).unwrap_or(u32::MAX), |&j| {
                    hasher.hash_one(&pages[j as usize / PAGE][j as usize % PAGE].0)
                });
            }
        }
    }

    /// Removes one entry: of `samples` positions drawn from `rng`, the one
    /// with the smallest age (the oldest; the first drawn of equals). An
    /// approximation of least recently used that costs a few comparisons,
    /// not an ordered index. Returns whether an entry was removed.
    pub fn evict_sampled(&mut self, rng: &mut u64, samples: usize) -> bool {
        if self.len == 0 {
            return false;
        }
        let mut victim = None;
        for _ in 0..samples.max(1) {
            let i = (next_random(rng) % self.len as u64) as usize;
            let a = self.age(i);
            if victim.is_none_or(|(_, best)| a < best) {
                victim = Some((i, a));
            }
        }
        match victim {
            Some((i, _)) => self.remove(i).is_some(),
            None => false,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &(K, V)> {
        self.pages.iter().flatten()
    }

    /// Bytes of the table itself (entries' own heap not included).
    pub fn table_bytes(&self) -> usize {
        // hashbrown: one control byte per bucket, buckets ≈ capacity × 8/7.
        self.index.capacity() * 8 / 7 * (size_of::<u32>() + 1)
            + self.pages.iter().map(Vec::capacity).sum::<usize>() * size_of::<(K, V)>()
            + self.ages.iter().map(Vec::capacity).sum::<usize>() * size_of::<i64>()
    }
}

/// xorshift64*: a deterministic sequence, so replay evicts the same keys.
pub(crate) fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_retain_keep_positions_consistent() {
        let mut t: Table<u64, u64> = Table::new();
        for k in 0..10_000 {
            let slot = t.get_or_insert_with(k, || k * 10);
            assert_eq!(*t.value(slot), k * 10);
        }
        assert_eq!(t.get_or_insert_with(7, || 0), 7);
        // Remove every third key through its slot.
        for k in (0..10_000).step_by(3) {
            let slot = t.get_or_insert_with(k, unreachable_value);
            assert_eq!(t.remove(slot), Some((k, k * 10)));
        }
        assert_eq!(t.len(), 6_666);
        for k in 0..10_000 {
            let slot = t.get_or_insert_with(k, || 1);
            let expected = if k % 3 == 0 { 1 } else { k * 10 };
            assert_eq!(*t.value(slot), expected, "key {k}");
        }
        t.retain(|k, _| k % 2 == 0);
        assert_eq!(t.len(), 5_000);
        for k in 0..10_000u64 {
            let before = t.len();
            let slot = t.get_or_insert_with(k, || 2);
            *t.value_mut(slot) += 0;
            assert_eq!(t.len() > before, k % 2 == 1, "key {k}");
        }
        assert!(t.table_bytes() > 0);
        assert_eq!(t.iter().count(), 10_000);
    }

    #[test]
    fn growth_is_by_page_and_empty_pages_are_freed() {
        let mut t: Table<u64, u64> = Table::new();
        for k in 0..(PAGE as u64 * 2 + 1) {
            t.get_or_insert_with(k, || k);
        }
        assert_eq!(t.pages.len(), 3);
        assert!(t.pages.iter().all(|p| p.capacity() == PAGE), "no doubling past a page");
        let slot = t.get_or_insert_with(5, || 0);
        t.remove(slot);
        assert_eq!(t.pages.len(), 2, "the emptied last page is freed");
        t.retain(|k, _| *k < 10);
        assert_eq!((t.len(), t.pages.len()), (9, 1));
    }

    #[test]
    fn sampled_eviction_takes_an_old_entry() {
        let mut t: Table<u64, i64> = Table::new();
        for k in 0..1000 {
            let slot = t.get_or_insert_with(k, || k as i64);
            t.set_age(slot, k as i64);
        }
        let mut rng = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..100 {
            assert!(t.evict_sampled(&mut rng, 8));
        }
        assert_eq!(t.len(), 900);
        // Eight samples each: the evicted are mostly from the oldest fifth.
        let old_left = t.iter().filter(|(k, _)| *k < 200).count();
        assert!(old_left < 150, "{old_left} of the 200 oldest left");
    }

    #[test]
    fn ages_follow_their_entries_through_removals_and_retains() {
        // Age = key, set after insertion; every move of an entry (the last
        // into a removed one's place) must carry its age.
        let mut t: Table<u64, u64> = Table::new();
        for k in 0..(PAGE as u64 * 3) {
            let slot = t.get_or_insert_with(k, || k);
            assert_eq!(t.age(slot), i64::MIN, "new entries are the oldest");
            t.set_age(slot, k as i64);
        }
        let check = |t: &Table<u64, u64>| {
            for slot in 0..t.len() {
                assert_eq!(t.age(slot), t.at(slot).0 as i64, "slot {slot}");
            }
            assert_eq!(t.ages.iter().map(Vec::len).sum::<usize>(), t.len());
            assert_eq!(t.ages.len(), t.pages.len());
        };
        for k in (0..PAGE as u64 * 3).step_by(7) {
            let slot = t.get_or_insert_with(k, unreachable_value);
            t.remove(slot);
        }
        check(&t);
        t.retain(|k, _| k % 5 != 0);
        check(&t);
        let mut rng = 0x9e37_79b9_7f4a_7c15;
        while t.len() > PAGE / 2 {
            assert!(t.evict_sampled(&mut rng, 8));
        }
        check(&t);
    }

    fn unreachable_value() -> u64 {
        u64::MAX
    }
}
