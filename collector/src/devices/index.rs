//! The device table's index: slab numbers in an open-addressing table
//! (linear probing, at most half full), each beside 32 bits of its key's
//! hash. A lookup reads one slot line in the common case, and the slot a
//! hash starts at can be read ahead of the lookup ([`Index::touch`]), so a
//! batch's misses overlap instead of following one another.
//!
//! The hashes are foldhash under a per-tracker random seed,
//! so senders cannot pick names that crowd one run of slots.

/// One slot: `tag` 0 is free; otherwise it is the hash's high half with
/// its lowest bit set, and `at` the slab number.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    tag: u32,
    at: u32,
}

/// Slab numbers by hash.
#[derive(Debug)]
pub(super) struct Index {
    slots: Vec<Slot>,
    len: usize,
}

const MIN_SLOTS: usize = 16;

fn tag(hash: u64) -> u32 {
    (hash >> 32) as u32 | 1
}

impl Index {
    pub(super) fn new() -> Index {
        Index { slots: vec![Slot::default(); MIN_SLOTS], len: 0 }
    }

    fn start(&self, hash: u64) -> usize {
        // The slot count is a power of two.
        hash as usize & (self.slots.len() - 1)
    }

    /// Reads the slot `hash` starts at and returns its tag: a caller folds
    /// the tags of a batch into one value it keeps (`std::hint::black_box`),
    /// so these independent reads are all under way before the lookups.
    pub(super) fn touch(&self, hash: u64) -> u32 {
        self.slots[self.start(hash)].tag
    }

    /// The slots from where `hash` starts up to the first free one.
    fn probe(&self, hash: u64) -> impl Iterator<Item = &Slot> {
        let start = self.start(hash);
        let (tail, head) = self.slots.split_at(start);
        head.iter().chain(tail).take_while(|s| s.tag != 0)
    }

    /// The first slab number whose slot carries `hash`'s tag: the entry
    /// `hash` names unless two keys share 32 bits of hash, which the caller
    /// checks by comparing keys.
    pub(super) fn candidate(&self, hash: u64) -> Option<u32> {
        let t = tag(hash);
        self.probe(hash).find(|s| s.tag == t).map(|s| s.at)
    }

    /// The slab number whose entry `is` recognises, among those carrying
    /// `hash`'s tag.
    pub(super) fn find(&self, hash: u64, mut is: impl FnMut(u32) -> bool) -> Option<u32> {
        let t = tag(hash);
        self.probe(hash).find(|s| s.tag == t && is(s.at)).map(|s| s.at)
    }

    /// Adds slab number `at` under `hash` (not present yet); `hash_of`
    /// gives the hash of any slab number already in, for growing.
    pub(super) fn insert(&mut self, hash: u64, at: u32, hash_of: impl Fn(u32) -> u64) {
        if (self.len + 1) * 2 > self.slots.len() {
            let grown = vec![Slot::default(); self.slots.len() * 2];
            let old = std::mem::replace(&mut self.slots, grown);
            for s in old.into_iter().filter(|s| s.tag != 0) {
                self.place(hash_of(s.at), s.at);
            }
        }
        self.place(hash, at);
        self.len += 1;
    }

    fn place(&mut self, hash: u64, at: u32) {
        let mask = self.slots.len() - 1;
        let mut i = self.start(hash);
        // At most half full: a free slot is always ahead.
        while self.slots[i].tag != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = Slot { tag: tag(hash), at };
    }

    /// Empties the index, keeping room for `capacity` entries.
    pub(super) fn clear(&mut self, capacity: usize) {
        let slots = (capacity * 2).next_power_of_two().max(MIN_SLOTS);
        self.slots.clear();
        self.slots.resize(slots, Slot::default());
        self.len = 0;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_it_holds_across_growth_and_shared_starts() {
        let mut index = Index::new();
        // Hashes that all start at slot 0 and share their tag (up to 64k
        // slots), then many more.
        let hashes: Vec<u64> = (0..5u64)
            .map(|i| (7 << 32) | (i << 16))
            .chain((0..10_000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .collect();
        for (at, h) in hashes.iter().enumerate() {
            index.insert(*h, at as u32, |a| hashes[a as usize]);
        }
        for (at, h) in hashes.iter().enumerate() {
            assert_eq!(index.find(*h, |a| a == at as u32), Some(at as u32));
            assert!(index.candidate(*h).is_some());
        }
        assert_eq!(index.find(0xdead_beef_0000_0001, |_| true), None);
        index.clear(0);
        assert_eq!(index.find(hashes[0], |_| true), None);
        assert_eq!(index.touch(hashes[0]), 0);
    }
}
