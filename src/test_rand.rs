//! Deterministic random numbers for the unit tests: xorshift64, the same
//! sequence for a seed on every run and machine.

pub(crate) struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (made odd: zero would stay zero).
    pub(crate) fn new(seed: u64) -> Self {
        XorShift(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
