//! Maps and sets keyed by small integers (stream ids, thread ids, function
//! ids) for the collector's per-event lookups, where std's SipHash costs
//! more than the rest of the work on an event.
//!
//! `IdHasher` is a multiply-rotate hash (as in rustc's FxHash) started from
//! a per-process random seed, so inputs cannot be chosen offline to
//! collide; ids come from other processes, and a hostile stream could at
//! worst slow its own collector down, as with any hash map.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// A `HashMap` with `IdHasher`.
pub type IdMap<K, V> = HashMap<K, V, IdHash>;

/// Hashes integer keys: one multiply per word.
#[derive(Debug, Clone, Copy)]
pub struct IdHasher {
    hash: u64,
}

const MULTIPLIER: u64 = 0xf135_7aea_2e62_a9c5;

impl Hasher for IdHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, value: u8) {
        self.write_u64(u64::from(value));
    }

    #[inline]
    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.hash = (self.hash ^ value).wrapping_mul(MULTIPLIER).rotate_left(26);
    }

    #[inline]
    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// Builds `IdHasher`s from the process's seed.
#[derive(Debug, Clone, Copy)]
pub struct IdHash {
    seed: u64,
}

impl Default for IdHash {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        let seed = *SEED.get_or_init(|| {
            // std's RandomState is seeded from the OS per process.
            std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
        });
        IdHash { seed }
    }
}

impl BuildHasher for IdHash {
    type Hasher = IdHasher;

    #[inline]
    fn build_hasher(&self) -> IdHasher {
        IdHasher { hash: self.seed }
    }
}

/// Ids below this live in the bitmap of an `IdSet`; function ids are
/// handed out from 0 up, so real streams stay far below it.
const DENSE_IDS: u32 = 1 << 22;

/// A set of `u32` ids: a bitmap for small ids, a hash set for the rest
/// (so a hostile id costs a hash entry, not a huge bitmap).
#[derive(Debug, Clone, Default)]
pub struct IdSet {
    bits: Vec<u64>,
    large: HashSet<u32, IdHash>,
}

impl IdSet {
    /// True if `id` is in the set.
    #[inline]
    pub fn contains(&self, id: u32) -> bool {
        if id < DENSE_IDS {
            let word = self.bits.get((id / 64) as usize).copied().unwrap_or(0);
            word >> (id % 64) & 1 != 0
        } else {
            self.large.contains(&id)
        }
    }

    /// Adds `id`; true if it was not in the set.
    pub fn insert(&mut self, id: u32) -> bool {
        if id >= DENSE_IDS {
            return self.large.insert(id);
        }
        let index = (id / 64) as usize;
        if index >= self.bits.len() {
            self.bits.resize(index + 1, 0);
        }
        let bit = 1u64 << (id % 64);
        let new = self.bits[index] & bit == 0;
        self.bits[index] |= bit;
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_hold_small_and_large_ids() {
        let mut set = IdSet::default();
        for id in [0, 1, 63, 64, 5000, DENSE_IDS - 1, DENSE_IDS, u32::MAX] {
            assert!(!set.contains(id));
            assert!(set.insert(id));
            assert!(!set.insert(id));
            assert!(set.contains(id));
        }
        assert!(!set.contains(2) && !set.contains(DENSE_IDS + 1));
        assert!(set.bits.len() <= (DENSE_IDS / 64) as usize);
    }

    #[test]
    fn maps_work_with_tuple_keys() {
        let mut map: IdMap<(u32, u64), usize> = IdMap::default();
        for i in 0..1000u64 {
            map.insert((i as u32 % 7, i), i as usize);
        }
        assert_eq!(map.len(), 1000);
        assert_eq!(map.get(&(3, 10)), Some(&10));
    }
}
