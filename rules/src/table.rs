//! A hash map for the largest state, the windows: entries live densely in
//! a vector and the hash table holds only their 4-byte positions.
//!
//! A `HashMap<K, V>` keeps a whole (key, value) per bucket and runs at 44–88 %
//! load, so at a million keys half its buckets are empty 56-byte holes; here
//! an empty bucket costs 5 bytes. Keys are hashed with SipHash under a random
//! key (std's `RandomState`): group keys are source addresses and user names
//! an attacker chooses, so the hash must not be predictable (HashDoS).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::mem::size_of;

use hashbrown::HashTable;

#[derive(Debug)]
pub(crate) struct Table<K, V> {
    hasher: RandomState,
    index: HashTable<u32>,
    slots: Vec<(K, V)>,
}

impl<K: Hash + Eq, V> Table<K, V> {
    pub fn new() -> Table<K, V> {
        Table { hasher: RandomState::new(), index: HashTable::new(), slots: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The slot of `key`, inserting `make()` first if it is absent.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> usize {
        let hash = self.hasher.hash_one(&key);
        let Table { hasher, index, slots } = self;
        if let Some(&i) = index.find(hash, |&i| slots[i as usize].0 == key) {
            return i as usize;
        }
        let i = slots.len();
        slots.push((key, make()));
        index.insert_unique(hash, u32::try_from(i).unwrap_or(u32::MAX), |&j| hasher.hash_one(&slots[j as usize].0));
        i
    }

    pub fn value_mut(&mut self, slot: usize) -> &mut V {
        &mut self.slots[slot].1
    }

    pub fn value(&self, slot: usize) -> &V {
        &self.slots[slot].1
    }

    /// Removes the entry in `slot`; the last entry moves into its place.
    pub fn remove(&mut self, slot: usize) -> (K, V) {
        let hash = self.hasher.hash_one(&self.slots[slot].0);
        if let Ok(entry) = self.index.find_entry(hash, |&i| i as usize == slot) {
            entry.remove();
        }
        let last = self.slots.len() - 1;
        let entry = self.slots.swap_remove(slot);
        if slot != last {
            let moved = self.hasher.hash_one(&self.slots[slot].0);
            if let Some(i) = self.index.find_mut(moved, |&i| i as usize == last) {
                *i = u32::try_from(slot).unwrap_or(u32::MAX);
            }
        }
        entry
    }

    /// Keeps the entries for which `keep` holds, in one pass.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        let before = self.slots.len();
        self.slots.retain(|(k, v)| keep(k, v));
        if self.slots.len() == before {
            return;
        }
        self.slots.shrink_to(self.slots.len().max(16) * 2);
        let Table { hasher, index, slots } = self;
        index.clear();
        index.shrink_to(slots.len(), |&j| hasher.hash_one(&slots[j as usize].0));
        for (i, (k, _)) in slots.iter().enumerate() {
            let hash = hasher.hash_one(k);
            index.insert_unique(hash, u32::try_from(i).unwrap_or(u32::MAX), |&j| hasher.hash_one(&slots[j as usize].0));
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &(K, V)> {
        self.slots.iter()
    }

    /// Bytes of the table itself (entries' own heap not included).
    pub fn table_bytes(&self) -> usize {
        // hashbrown: one control byte per bucket, buckets ≈ capacity × 8/7.
        self.index.capacity() * 8 / 7 * (size_of::<u32>() + 1) + self.slots.capacity() * size_of::<(K, V)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_retain_keep_positions_consistent() {
        let mut t: Table<u64, u64> = Table::new();
        for k in 0..1000 {
            let slot = t.get_or_insert_with(k, || k * 10);
            assert_eq!(*t.value(slot), k * 10);
        }
        assert_eq!(t.get_or_insert_with(7, || 0), 7);
        // Remove every third key through its slot.
        for k in (0..1000).step_by(3) {
            let slot = t.get_or_insert_with(k, unreachable_value);
            assert_eq!(t.remove(slot), (k, k * 10));
        }
        assert_eq!(t.len(), 666);
        for k in 0..1000 {
            let slot = t.get_or_insert_with(k, || 1);
            let expected = if k % 3 == 0 { 1 } else { k * 10 };
            assert_eq!(*t.value(slot), expected, "key {k}");
        }
        t.retain(|k, _| k % 2 == 0);
        assert_eq!(t.len(), 500);
        for k in 0..1000u64 {
            let before = t.len();
            let slot = t.get_or_insert_with(k, || 2);
            *t.value_mut(slot) += 0;
            assert_eq!(t.len() > before, k % 2 == 1, "key {k}");
        }
        assert!(t.table_bytes() > 0);
        assert_eq!(t.iter().count(), 1000);
    }

    fn unreachable_value() -> u64 {
        u64::MAX
    }
}
