//! A small deterministic generator for the unit tests: xorshift64, the same sequence on every
//! run and under Miri.

/// A generator of `u64`s starting from `seed` (which must not be 0).
pub(crate) fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    assert_ne!(seed, 0, "xorshift never leaves 0");
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}
