//! Helpers groups share: a deterministic RNG, a log-uniform size sampler, float-to-integer
//! conversion without `as`, and memory figures from `/proc` (Linux).
//!
//! Every contender of a scenario should draw from an RNG built with the same seed, so that all
//! of them see the same sizes and the same access order:
//!
//! ```
//! use memvisor_bench::util::{LogUniform, SplitMix64};
//!
//! let sizes = LogUniform::new(16, 64 * 1024);
//! let mut a = SplitMix64::new(7);
//! let mut b = SplitMix64::new(7);
//! for _ in 0..100 {
//!     let size = sizes.sample(&mut a);
//!     assert_eq!(size, sizes.sample(&mut b));
//!     assert!((16..=64 * 1024).contains(&size));
//! }
//! ```

use std::{fs, io};

/// SplitMix64: a small, fast, deterministic 64-bit generator (Steele, Lea and Flood, 2014).
/// Not for cryptography; good enough to pick sizes and indices reproducibly.
///
/// # Examples
///
/// ```
/// use memvisor_bench::util::SplitMix64;
///
/// let mut rng = SplitMix64::new(42);
/// let index = rng.below_usize(10);
/// assert!(index < 10);
/// let mut order: Vec<u32> = (0..8).collect();
/// rng.shuffle(&mut order);
/// order.sort_unstable();
/// assert_eq!(order, (0..8).collect::<Vec<_>>());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`; equal seeds give equal sequences.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (nearly uniform: multiply-shift, bias below 2⁻³² for `n` < 2³²);
    /// `0` if `n == 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        let wide = u128::from(self.next_u64()) * u128::from(n);
        // The high half of a 64×64-bit product fits in 64 bits.
        u64::try_from(wide >> 64).unwrap_or(0)
    }

    /// A number in `0..n` as `usize`; `0` if `n == 0`.
    pub fn below_usize(&mut self, n: usize) -> usize {
        // `n` fits in u64 on every supported target, and the result is below `n`.
        let n64 = u64::try_from(n).unwrap_or(u64::MAX);
        usize::try_from(self.below(n64)).unwrap_or(0)
    }

    /// A number in `lo..=hi`; `lo` if `hi <= lo`.
    pub fn range_inclusive(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        match (hi - lo).checked_add(1) {
            Some(span) => lo + self.below(span),
            None => self.next_u64(),
        }
    }

    /// A float in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Shuffles `items` uniformly (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below_usize(i + 1);
            items.swap(i, j);
        }
    }
}

/// Sizes drawn log-uniformly from `lo..=hi`: each factor of two is about equally likely, so
/// small and large sizes both appear, as in real allocation traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogUniform {
    lo: u64,
    hi: u64,
    ln_lo: f64,
    ln_hi: f64,
}

impl LogUniform {
    /// A sampler over `lo..=hi`. `lo` is raised to 1 and `hi` to `lo` if needed.
    #[must_use]
    pub fn new(lo: u64, hi: u64) -> Self {
        let lo = lo.max(1);
        let hi = hi.max(lo);
        Self {
            lo,
            hi,
            ln_lo: (lo as f64).ln(),
            // One past `hi`, so that `hi` itself is drawn as often as its neighbours.
            ln_hi: (hi as f64 + 1.0).ln(),
        }
    }

    /// The smallest size drawn.
    #[must_use]
    pub fn lo(&self) -> u64 {
        self.lo
    }

    /// The largest size drawn.
    #[must_use]
    pub fn hi(&self) -> u64 {
        self.hi
    }

    /// One size in `lo..=hi`.
    pub fn sample(&self, rng: &mut SplitMix64) -> u64 {
        let x = (self.ln_lo + rng.next_f64() * (self.ln_hi - self.ln_lo)).exp();
        saturating_u64(x).clamp(self.lo, self.hi)
    }
}

/// `x` rounded toward zero to a `u64`, saturating: negative numbers and NaN give 0, numbers of
/// 2⁶⁴ and above give `u64::MAX`. Built from the float's bits, so no `as` cast is involved.
///
/// # Examples
///
/// ```
/// use memvisor_bench::util::saturating_u64;
///
/// assert_eq!(saturating_u64(41.9), 41);
/// assert_eq!(saturating_u64(-3.0), 0);
/// assert_eq!(saturating_u64(f64::NAN), 0);
/// assert_eq!(saturating_u64(1e30), u64::MAX);
/// ```
#[must_use]
pub fn saturating_u64(x: f64) -> u64 {
    // 2^64 exactly.
    const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
    if x.is_nan() || x < 1.0 {
        return 0;
    }
    if x >= TWO_POW_64 {
        return u64::MAX;
    }
    let bits = x.to_bits();
    let exponent = (bits >> 52) & 0x7ff;
    let mantissa = (bits & ((1 << 52) - 1)) | (1 << 52);
    // x = mantissa * 2^(exponent - 1075); 1 <= x < 2^64 gives 1023 <= exponent <= 1086.
    if exponent >= 1075 {
        mantissa << (exponent - 1075)
    } else {
        mantissa >> (1075 - exponent)
    }
}

/// The resident set size of this process in bytes (`VmRSS` in `/proc/self/status`).
///
/// # Errors
///
/// The I/O error if the file cannot be read (`NotFound` off Linux), or `InvalidData` if it has
/// no `VmRSS` line.
pub fn rss_bytes() -> io::Result<u64> {
    kib_field("/proc/self/status", "VmRSS")
}

/// The memory the kernel has promised to all processes in bytes (`Committed_AS` in
/// `/proc/meminfo`): what reservations with and without overcommit change.
///
/// # Errors
///
/// The I/O error if the file cannot be read (`NotFound` off Linux), or `InvalidData` if it has
/// no `Committed_AS` line.
pub fn committed_as_bytes() -> io::Result<u64> {
    kib_field("/proc/meminfo", "Committed_AS")
}

/// Reads `path` and returns its `key:  N kB` line as bytes.
fn kib_field(path: &str, key: &str) -> io::Result<u64> {
    let text = fs::read_to_string(path)?;
    parse_kib_field(&text, key).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no `{key}: N kB` line in {path}"),
        )
    })
}

/// The value of a `key:  N kB` line of `/proc` text, in bytes.
fn parse_kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let mut words = rest.split_whitespace();
        let kib: u64 = words.next()?.parse().ok()?;
        match words.next() {
            Some("kB") | None => kib.checked_mul(1024),
            Some(_) => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_same_seed_same_sequence() {
        let mut a = SplitMix64::new(1);
        let mut b = SplitMix64::new(1);
        let xs: Vec<u64> = (0..16).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..16).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
    }

    #[test]
    fn splitmix_seed_zero_first_output_matches_reference() {
        // First output of SplitMix64 seeded with 0 in the reference implementation.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn below_zero_returns_zero() {
        assert_eq!(SplitMix64::new(3).below(0), 0);
        assert_eq!(SplitMix64::new(3).below_usize(0), 0);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = SplitMix64::new(9);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let x = rng.below_usize(7);
            seen[x] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn range_inclusive_full_and_empty_spans() {
        let mut rng = SplitMix64::new(5);
        assert_eq!(rng.range_inclusive(9, 3), 9);
        assert_eq!(rng.range_inclusive(4, 4), 4);
        let _ = rng.range_inclusive(0, u64::MAX);
        for _ in 0..100 {
            assert!((10..=12).contains(&rng.range_inclusive(10, 12)));
        }
    }

    #[test]
    fn next_f64_in_unit_interval() {
        let mut rng = SplitMix64::new(11);
        assert!(
            (0..1000)
                .map(|_| rng.next_f64())
                .all(|x| (0.0..1.0).contains(&x))
        );
    }

    #[test]
    fn shuffle_permutes() {
        let mut items: Vec<u32> = (0..100).collect();
        SplitMix64::new(2).shuffle(&mut items);
        assert_ne!(items, (0..100).collect::<Vec<_>>());
        items.sort_unstable();
        assert_eq!(items, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn log_uniform_spreads_over_octaves() {
        let sampler = LogUniform::new(16, 65_536);
        let mut rng = SplitMix64::new(4);
        let mut per_octave = [0u32; 13];
        for _ in 0..13_000 {
            let size = sampler.sample(&mut rng);
            assert!((16..=65_536).contains(&size));
            per_octave[(size.ilog2() - 4) as usize] += 1;
        }
        // 12 octaves from 2^4 to 2^16, about 1083 each; 2^16 itself is rare.
        for count in &per_octave[..12] {
            assert!((800..1400).contains(count), "{per_octave:?}");
        }
        assert!(per_octave[12] < 10);
    }

    #[test]
    fn log_uniform_degenerate_bounds() {
        let mut rng = SplitMix64::new(0);
        assert_eq!(LogUniform::new(5, 5).sample(&mut rng), 5);
        let s = LogUniform::new(0, 0);
        assert_eq!((s.lo(), s.hi()), (1, 1));
        assert_eq!(s.sample(&mut rng), 1);
    }

    #[test]
    fn saturating_u64_edges() {
        assert_eq!(saturating_u64(0.0), 0);
        assert_eq!(saturating_u64(0.999), 0);
        assert_eq!(saturating_u64(1.0), 1);
        assert_eq!(saturating_u64(4096.5), 4096);
        assert_eq!(
            saturating_u64(9_007_199_254_740_993.0),
            9_007_199_254_740_992
        );
        assert_eq!(
            saturating_u64(18_446_744_073_709_549_568.0),
            18_446_744_073_709_549_568
        );
        assert_eq!(saturating_u64(f64::INFINITY), u64::MAX);
        assert_eq!(saturating_u64(f64::NEG_INFINITY), 0);
    }

    #[test]
    fn parse_kib_field_reads_value_in_bytes() {
        let text = "MemTotal:       16384 kB\nCommitted_AS:    2048 kB\n";
        assert_eq!(parse_kib_field(text, "Committed_AS"), Some(2048 * 1024));
        assert_eq!(parse_kib_field(text, "Committed"), None);
        assert_eq!(parse_kib_field("VmRSS: x kB", "VmRSS"), None);
    }

    #[test]
    #[cfg_attr(not(target_os = "linux"), ignore = "reads /proc")]
    fn proc_readers_return_positive_figures() {
        assert!(rss_bytes().unwrap() > 0);
        assert!(committed_as_bytes().unwrap() > 0);
    }
}
