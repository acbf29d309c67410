//! Maps keyed by small integers (stream ids, thread ids) for the
//! collector's per-event lookups, where std's SipHash costs more than the
//! rest of the work on an event.
//!
//! `IdHasher` is a multiply-rotate hash (as in rustc's FxHash) started from
//! a per-process random seed, so inputs cannot be chosen offline to
//! collide; ids come from other processes, and a hostile stream could at
//! worst slow its own collector down, as with any hash map.

use std::collections::HashMap;
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

#[cfg(test)]
mod tests {
    use super::*;

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
