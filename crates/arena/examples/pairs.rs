//! Runs the free+alloc pairs of the bench's `pair_wide` and `pair_small` workloads (10,000
//! live blocks of log-uniform sizes, then pairs of a free of a random live block and an
//! allocation of a fresh size in its place) in one client over a 256 MiB heap backing, and
//! prints the time per pair. Meant for profilers, for instance
//! `valgrind --tool=callgrind --toggle-collect='pairs::run' target/release/examples/pairs wide`,
//! whose count of instructions divided by the pairs is what *Speed against mimalloc* in
//! DESIGN.md quotes as instructions a pair (the driver's loop included).
//!
//! `pairs frees [blocks]` runs the bench's `free_one_by_one` workload instead: `blocks`
//! (default 100,000) blocks of 16 B to 1 KiB, then each freed, in a random order, in
//! `pairs::free_all` (`--toggle-collect='pairs::free_all'`), and prints the time per free.
//!
//! Usage: `pairs [wide|small|frees] [n]` (default: `wide 200000`).

use std::alloc::Layout;
use std::hint::black_box;
use std::ptr::NonNull;
use std::time::Instant;

use memvisor_arena::{Arena, Backing, Config, Quota};

/// A SplitMix64 generator: the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        let wide = u128::from(self.next()) * n as u128;
        usize::try_from(wide >> 64).unwrap_or(0)
    }

    /// A size drawn log-uniformly from `16..=hi`.
    fn size(&mut self, hi: usize) -> usize {
        #[allow(clippy::cast_precision_loss, reason = "a ratio in 0..1")]
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let (lo, top) = (16f64.ln(), (hi as f64 + 1.0).ln());
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a positive size below hi + 1"
        )]
        let size = (lo + unit * (top - lo)).exp() as usize;
        size.clamp(16, hi)
    }
}

const LIVE: usize = 10_000;

/// The timed pairs, out of line so that a profiler can count them alone
/// (`--toggle-collect='pairs::run'`).
#[inline(never)]
fn run(
    client: &memvisor_arena::Client<'_>,
    live: &mut [NonNull<u8>],
    work: &[(usize, usize)],
) -> Result<(), Box<dyn std::error::Error>> {
    for &(victim, size) in work {
        // SAFETY: a live block of the client, replaced below and not used again.
        unsafe { client.free(live[victim]) }?;
        live[victim] = black_box(client.alloc(Layout::from_size_align(size, 8)?)?);
    }
    Ok(())
}

/// The timed frees of `frees`, out of line so that a profiler can count them alone
/// (`--toggle-collect='pairs::free_all'`).
#[inline(never)]
fn free_all(
    client: &memvisor_arena::Client<'_>,
    live: &[NonNull<u8>],
    order: &[usize],
) -> Result<(), Box<dyn std::error::Error>> {
    for &i in order {
        // SAFETY: a live block of the client, freed once (`order` is a permutation).
        unsafe { client.free(black_box(live[i])) }?;
    }
    Ok(())
}

/// The `frees` workload: `blocks` blocks of 16 B to 1 KiB, each freed in a random order.
fn frees(blocks: usize) -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = Rng(15);
    let arena = Arena::new(Backing::heap(256 << 20, 1 << 20)?, Config::new())?;
    let client = arena.create_client(Quota::UNLIMITED)?;
    let live: Vec<NonNull<u8>> = (0..blocks)
        .map(|_| {
            let layout = Layout::from_size_align(rng.size(1_024), 8)?;
            client.alloc(layout).map_err(Into::into)
        })
        .collect::<Result<_, Box<dyn std::error::Error>>>()?;
    let mut order: Vec<usize> = (0..blocks).collect();
    for i in (1..blocks).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let start = Instant::now();
    free_all(&client, &live, &order)?;
    let elapsed = start.elapsed();
    if blocks > 0 {
        #[allow(clippy::cast_precision_loss, reason = "a figure to print")]
        let ns = elapsed.as_nanos() as f64 / blocks as f64;
        println!("{ns:.1} ns a free");
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let hi = match args.next().as_deref() {
        None | Some("wide") => 65_536,
        Some("small") => 1_024,
        Some("frees") => return frees(args.next().map_or(Ok(100_000), |n| n.parse())?),
        Some(other) => return Err(format!("unknown workload {other}").into()),
    };
    let pairs: usize = args.next().map_or(Ok(200_000), |n| n.parse())?;
    let mut rng = Rng(7);
    let initial: Vec<usize> = (0..LIVE).map(|_| rng.size(hi)).collect();
    let work: Vec<(usize, usize)> = (0..pairs)
        .map(|_| (rng.below(LIVE), rng.size(hi)))
        .collect();

    let arena = Arena::new(Backing::heap(256 << 20, 1 << 20)?, Config::new())?;
    let client = arena.create_client(Quota::UNLIMITED)?;
    let layout = |size| Layout::from_size_align(size, 8);
    let mut live: Vec<NonNull<u8>> = initial
        .iter()
        .map(|&size| client.alloc(layout(size)?).map_err(Into::into))
        .collect::<Result<_, Box<dyn std::error::Error>>>()?;
    let start = Instant::now();
    run(&client, &mut live, &work)?;
    let elapsed = start.elapsed();
    if pairs > 0 {
        #[allow(clippy::cast_precision_loss, reason = "a figure to print")]
        let ns = elapsed.as_nanos() as f64 / pairs as f64;
        println!("{ns:.1} ns a pair");
    }
    Ok(())
}
