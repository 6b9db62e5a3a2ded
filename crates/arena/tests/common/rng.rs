//! A small xorshift generator for tests that make random workloads. A test file includes it
//! with `#[path = "common/rng.rs"] mod rng;`.

/// A xorshift generator: the same seed gives the same sequence.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Below `n` (not 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
