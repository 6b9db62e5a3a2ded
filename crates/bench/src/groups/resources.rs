//! `resources`: `memvisor-resources` against vm-allocator 0.1.4.
//!
//! - `addr_alloc_free_first`, `addr_alloc_free_last` (ns per allocate + free, at `param` live
//!   ranges): a band of `2 × param` one-page ranges with a random half freed, and the only gap that
//!   can hold the 64-page request on the far side of the band (above it for first fit, below it for
//!   last fit), so a placement must get past every fragment. Both allocators are built with exact
//!   placements, which cost O(log n) in each.
//! - `addr_fill` (ms): `param` one-page first-fit allocations into an empty space. vm-allocator is
//!   quadratic here: at 100,000 it is measured once (its later repeats report that figure), and not
//!   at all under `--quick`, where it would take minutes.
//! - `id_churn` (ns per free + allocate): `param` IDs all allocated, then a random one freed and
//!   the smallest free one allocated again.
//! - `addr_bytes_per_range` (heap bytes per live range after `param` first-fit allocations) and
//!   `addr_bytes_per_range_fragmented` (after `2 × param` allocations and a random half freed,
//!   without shrinking): the change of glibc's in-use heap (`mallinfo2`) while the allocator is
//!   built, malloc's own overhead included.
//! - `addr_adversarial` (ns per allocate + free, at `param` live ranges): the operations of
//!   `addr_alloc_free_first` on ranges whose start addresses were chosen against the hash-priority
//!   treap this crate once used (each start's old priority above the previous one's, so the old
//!   index was a list): runs of 20,000 such starts, each range reaching to one page before the next
//!   start. `addr_alloc_free_first` is also measured at 20,000 for the comparison.
//! - `addr_snapshot_load` (ms to load a JSON snapshot of `param` one-page ranges at random
//!   addresses) and `addr_snapshot_load_adversarial` (the same at the crafted addresses).

use std::hint::black_box;

use memvisor_resources::{AddressAllocator, AddressRange, AllocPolicy, IdAllocator};
use vm_allocator::{AddressAllocator as VmAddr, AllocPolicy as VmPolicy, IdAllocator as VmIds};

use crate::harness::{Bench, Sample, as_ms, time};
use crate::report::{Better, Row};
use crate::util::SplitMix64;

/// Live ranges for `addr_alloc_free_*`.
pub const LIVE: [u64; 4] = [100, 1_000, 10_000, 100_000];
/// Ranges for `addr_fill`.
pub const FILL: [u64; 2] = [10_000, 100_000];
/// Live ranges for `addr_adversarial`.
pub const ADVERSARIAL: [u64; 2] = [20_000, 100_000];
/// Ranges in the `addr_snapshot_load*` snapshots.
pub const SNAPSHOT_RANGES: u64 = 100_000;
/// IDs for `id_churn`.
pub const IDS: [u64; 3] = [1_000, 100_000, 1_000_000];
/// Live ranges for the memory figures.
pub const BYTES_RANGES: u64 = 100_000;
/// Pages asked for by each `addr_alloc_free_*` placement: more than any run of freed pages.
const REQUEST_PAGES: u64 = 64;
/// Where the managed space starts (away from 0, where vm-allocator misbehaves).
const BASE: u64 = 1 << 32;
/// Above this many ranges vm-allocator's fill is measured once (or, quick, not at all).
const VM_FILL_ONCE: u64 = 30_000;

/// Runs every scenario of the group.
pub fn run(bench: &Bench) -> Vec<Row> {
    let mut rows = Vec::new();
    for &n in &LIVE {
        rows.push(alloc_free(bench, n, false));
        rows.push(alloc_free(bench, n, true));
    }
    for &n in &FILL {
        rows.push(fill(bench, n));
    }
    for &n in &IDS {
        rows.push(id_churn(bench, n));
    }
    rows.push(bytes_per_range(bench, BYTES_RANGES, false));
    rows.push(bytes_per_range(bench, BYTES_RANGES, true));
    rows.push(alloc_free(bench, ADVERSARIAL[0], false));
    for &n in &ADVERSARIAL {
        rows.push(adversarial(bench, n));
    }
    rows.push(snapshot_load(bench, SNAPSHOT_RANGES, false));
    rows.push(snapshot_load(bench, SNAPSHOT_RANGES, true));
    rows
}

/// The page size the crafted addresses were computed for (the old priority hashed addresses).
const CRAFT_PAGE: u64 = 0x1000;
/// Starts per crafted run: each run is one list in the old treap.
const CRAFT_RUN: u64 = 20_000;

/// The old treap's priority of a start address.
fn old_priority(start: u64) -> u32 {
    let mut z = start.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    u32::try_from(z >> 32).unwrap_or(u32::MAX)
}

/// `n` page-aligned start addresses, ascending, in runs of [`CRAFT_RUN`] whose old priority
/// rises with the address: pages are scanned in order and kept when their priority lies a small
/// step above the previous one's.
fn crafted_starts(n: u64) -> Vec<u64> {
    let window = (19u64 << 32) / 10 / CRAFT_RUN;
    let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let mut page = 1u64;
    while (out.len() as u64) < n {
        let mut last = 0u64;
        let mut kept = 0;
        while kept < CRAFT_RUN && (out.len() as u64) < n {
            let p = u64::from(old_priority(page * CRAFT_PAGE));
            if p > last && p <= last + window {
                out.push(page * CRAFT_PAGE);
                last = p;
                kept += 1;
            }
            page += 1;
        }
        page += 2;
    }
    out
}

/// The crafted band: ranges from each crafted start to one page before the next (at least one
/// page), then room for the 64-page requests above. Returns the space and the ranges.
fn crafted_band(n: u64) -> (AddressRange, Vec<(u64, u64)>) {
    let starts = crafted_starts(n);
    let mut ranges = Vec::with_capacity(starts.len());
    for (i, &s) in starts.iter().enumerate() {
        let size = match starts.get(i + 1) {
            Some(&next) => (next - s).saturating_sub(CRAFT_PAGE).max(CRAFT_PAGE),
            None => CRAFT_PAGE,
        };
        ranges.push((s, size));
    }
    let first = starts.first().copied().unwrap_or(CRAFT_PAGE);
    let end = starts.last().copied().unwrap_or(first) + (2 * REQUEST_PAGES + 1) * CRAFT_PAGE;
    let space = AddressRange::new(first, end - 1).unwrap_or(AddressRange::FULL);
    (space, ranges)
}

/// `addr_adversarial`: `addr_alloc_free_first` on crafted start addresses.
pub fn adversarial(bench: &Bench, n: u64) -> Row {
    let (space, ranges) = crafted_band(n);
    let size = REQUEST_PAGES * CRAFT_PAGE;
    let ours_ops = 20_000u64;
    let vm_ops = (4_000_000 / n).clamp(10, 20_000);
    let mut ours = (|| -> Result<AddressAllocator, String> {
        let mut a = AddressAllocator::new(space);
        for &(s, len) in &ranges {
            a.allocate(len, CRAFT_PAGE, AllocPolicy::ExactMatch(s))
                .map_err(err)?;
        }
        Ok(a)
    })();
    let mut vm = (|| -> Result<VmAddr, String> {
        let len = space.size().ok_or("space too large")?;
        let mut a = VmAddr::new(space.start(), len).map_err(err)?;
        for &(s, len) in &ranges {
            a.allocate(len, CRAFT_PAGE, VmPolicy::ExactMatch(s))
                .map_err(err)?;
        }
        Ok(a)
    })();
    bench
        .scenario("addr_adversarial", n, "ns/op", Better::Lower)
        .memvisor(move || {
            let a = ours.as_mut().map_err(|e| e.clone())?;
            let (res, d) = time(|| -> Result<(), String> {
                for _ in 0..ours_ops {
                    let r = a
                        .allocate(size, CRAFT_PAGE, AllocPolicy::FirstMatch)
                        .map_err(err)?;
                    a.free(black_box(&r)).map_err(err)?;
                }
                Ok(())
            });
            res?;
            Ok(d.as_secs_f64() * 1e9 / ours_ops as f64)
        })
        .peer("vm-allocator", move || {
            let a = vm.as_mut().map_err(|e| e.clone())?;
            let (res, d) = time(|| -> Result<(), String> {
                for _ in 0..vm_ops {
                    let r = a
                        .allocate(size, CRAFT_PAGE, VmPolicy::FirstMatch)
                        .map_err(err)?;
                    a.free(black_box(&r)).map_err(err)?;
                }
                Ok(())
            });
            res?;
            Ok(d.as_secs_f64() * 1e9 / vm_ops as f64)
        })
        .run()
}

/// A JSON snapshot of one-page ranges at `starts` (ascending), as the allocator writes it.
fn snapshot_text(space: AddressRange, starts: &[u64]) -> Result<String, String> {
    let mut a = AddressAllocator::<()>::new(space);
    for &s in starts {
        a.reserve(AddressRange::from_start_and_size(s, CRAFT_PAGE).map_err(err)?)
            .map_err(err)?;
    }
    serde_json::to_string(&a).map_err(err)
}

/// `addr_snapshot_load` (random addresses) and `addr_snapshot_load_adversarial` (crafted ones):
/// ms to load a snapshot of `n` one-page ranges.
pub fn snapshot_load(bench: &Bench, n: u64, crafted: bool) -> Row {
    let text = if crafted {
        let starts = crafted_starts(n);
        let end = starts.last().copied().unwrap_or(0) + 2 * CRAFT_PAGE;
        AddressRange::new(starts.first().copied().unwrap_or(0), end)
            .map_err(err)
            .and_then(|space| snapshot_text(space, &starts))
    } else {
        let mut rng = SplitMix64::new(0x5a9 ^ n);
        let mut pages: Vec<u64> = (0..n).map(|_| rng.below(1 << 36)).collect();
        pages.sort_unstable();
        pages.dedup();
        let starts: Vec<u64> = pages.iter().map(|p| (p + 1) * CRAFT_PAGE).collect();
        AddressRange::new(CRAFT_PAGE, ((1 << 36) + 2) * CRAFT_PAGE)
            .map_err(err)
            .and_then(|space| snapshot_text(space, &starts))
    };
    let name = if crafted {
        "addr_snapshot_load_adversarial"
    } else {
        "addr_snapshot_load"
    };
    bench
        .scenario(name, n, "ms", Better::Lower)
        .memvisor(move || {
            let text = text.as_ref().map_err(|e| e.clone())?;
            let (res, d) = time(|| serde_json::from_str::<AddressAllocator>(text));
            black_box(res.map_err(err)?);
            Ok(as_ms(d))
        })
        .run()
}

fn page() -> u64 {
    memvisor_vmem::page_size() as u64
}

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

/// Page indices of a band of `2n` pages and which of them stay allocated (a random half is
/// freed), the same for every contender.
fn band(n: u64) -> (u64, Vec<bool>) {
    let pages = 2 * n;
    let mut order: Vec<u64> = (0..pages).collect();
    SplitMix64::new(0x5eed ^ n).shuffle(&mut order);
    let mut keep = vec![true; usize::try_from(pages).unwrap_or(usize::MAX)];
    for &p in &order[..usize::try_from(n).unwrap_or(usize::MAX)] {
        keep[usize::try_from(p).unwrap_or(usize::MAX)] = false;
    }
    (pages, keep)
}

/// The space for a band of `pages` pages plus the free area for the requests: the band at the
/// bottom for first fit (`last == false`), at the top for last fit. Returns the space size and
/// the band's first address.
fn layout(pages: u64, last: bool) -> (u64, u64) {
    let size = (pages + 2 * REQUEST_PAGES) * page();
    let band_start = if last {
        BASE + 2 * REQUEST_PAGES * page()
    } else {
        BASE
    };
    (size, band_start)
}

fn memvisor_band(n: u64, last: bool) -> Result<AddressAllocator, String> {
    let (pages, keep) = band(n);
    let (size, start) = layout(pages, last);
    let mut a = AddressAllocator::<()>::with_base_and_size(BASE, size).map_err(err)?;
    let mut placed = Vec::with_capacity(keep.len());
    for p in 0..pages {
        let at = start + p * page();
        placed.push(
            a.allocate(page(), page(), AllocPolicy::ExactMatch(at))
                .map_err(err)?,
        );
    }
    for (r, k) in placed.iter().zip(&keep) {
        if !k {
            a.free(r).map_err(err)?;
        }
    }
    Ok(a)
}

fn vm_band(n: u64, last: bool) -> Result<VmAddr, String> {
    let (pages, keep) = band(n);
    let (size, start) = layout(pages, last);
    let mut a = VmAddr::new(BASE, size).map_err(err)?;
    let mut placed = Vec::with_capacity(keep.len());
    for p in 0..pages {
        let at = start + p * page();
        placed.push(
            a.allocate(page(), page(), VmPolicy::ExactMatch(at))
                .map_err(err)?,
        );
    }
    for (r, k) in placed.iter().zip(&keep) {
        if !k {
            a.free(r).map_err(err)?;
        }
    }
    Ok(a)
}

/// `addr_alloc_free_first` / `_last`: ns per allocate + free at `n` live fragmented ranges.
pub fn alloc_free(bench: &Bench, n: u64, last: bool) -> Row {
    let name = if last {
        "addr_alloc_free_last"
    } else {
        "addr_alloc_free_first"
    };
    let (policy, vm_policy) = if last {
        (AllocPolicy::LastMatch, VmPolicy::LastMatch)
    } else {
        (AllocPolicy::FirstMatch, VmPolicy::FirstMatch)
    };
    let size = REQUEST_PAGES * page();
    let ours_ops = 20_000u64;
    // vm-allocator walks every fragment per placement: keep a sample near 50 ms.
    let vm_ops = (4_000_000 / n).clamp(10, 20_000);
    let mut ours = memvisor_band(n, last);
    let mut vm = vm_band(n, last);
    bench
        .scenario(name, n, "ns/op", Better::Lower)
        .memvisor(move || {
            let a = ours.as_mut().map_err(|e| e.clone())?;
            let (res, d) = time(|| -> Result<(), String> {
                for _ in 0..ours_ops {
                    let r = a.allocate(size, page(), policy).map_err(err)?;
                    a.free(black_box(&r)).map_err(err)?;
                }
                Ok(())
            });
            res?;
            Ok(d.as_secs_f64() * 1e9 / ours_ops as f64)
        })
        .peer("vm-allocator", move || {
            let a = vm.as_mut().map_err(|e| e.clone())?;
            let (res, d) = time(|| -> Result<(), String> {
                for _ in 0..vm_ops {
                    let r = a.allocate(size, page(), vm_policy).map_err(err)?;
                    a.free(black_box(&r)).map_err(err)?;
                }
                Ok(())
            });
            res?;
            Ok(d.as_secs_f64() * 1e9 / vm_ops as f64)
        })
        .run()
}

/// `addr_fill`: ms to place `n` one-page ranges first fit into an empty space.
pub fn fill(bench: &Bench, n: u64) -> Row {
    let size = (n + 16) * page();
    let mut once: Option<f64> = None;
    let quick = bench.quick();
    let scenario = bench
        .scenario("addr_fill", n, "ms", Better::Lower)
        .memvisor(move || {
            let (res, d) = time(|| -> Result<AddressAllocator, String> {
                let mut a = AddressAllocator::<()>::with_base_and_size(BASE, size).map_err(err)?;
                for _ in 0..n {
                    a.allocate(page(), page(), AllocPolicy::FirstMatch)
                        .map_err(err)?;
                }
                Ok(a)
            });
            res?;
            Ok(as_ms(d))
        });
    if n > VM_FILL_ONCE && quick {
        return scenario
            .peer("vm-allocator", move || {
                Err(format!(
                    "skipped under --quick: its fill is quadratic (minutes at {n} ranges); the full run measures it once"
                ))
            })
            .run();
    }
    let scenario = if n > VM_FILL_ONCE {
        scenario.note(
            "vm-allocator",
            "measured once (its fill is quadratic); that sample is reused for the later repeats",
        )
    } else {
        scenario
    };
    scenario
        .peer("vm-allocator", move || {
            if let Some(ms) = once {
                return Ok(ms);
            }
            let (res, d) = time(|| -> Result<VmAddr, String> {
                let mut a = VmAddr::new(BASE, size).map_err(err)?;
                for _ in 0..n {
                    a.allocate(page(), page(), VmPolicy::FirstMatch)
                        .map_err(err)?;
                }
                Ok(a)
            });
            res?;
            let ms = as_ms(d);
            if n > VM_FILL_ONCE {
                once = Some(ms);
            }
            Ok(ms)
        })
        .run()
}

/// `id_churn`: ns per (free a random ID + allocate the smallest free) with `n` IDs allocated.
pub fn id_churn(bench: &Bench, n: u64) -> Row {
    const OPS: usize = 200_000;
    let last = u32::try_from(n - 1).unwrap_or(u32::MAX);
    let mut rng = SplitMix64::new(0x1d ^ n);
    let order: Vec<u32> = (0..OPS)
        .map(|_| u32::try_from(rng.below(n)).unwrap_or(0))
        .collect();
    let mut ours = IdAllocator::new(0, last).map_err(err).and_then(|mut a| {
        for _ in 0..n {
            a.allocate_id().map_err(err)?;
        }
        Ok(a)
    });
    let mut vm = VmIds::new(0, last).map_err(err).and_then(|mut a| {
        for _ in 0..n {
            a.allocate_id().map_err(err)?;
        }
        Ok(a)
    });
    let order_vm = order.clone();
    bench
        .scenario("id_churn", n, "ns/op", Better::Lower)
        .memvisor(move || {
            let a = ours.as_mut().map_err(|e| e.clone())?;
            let (res, d) = time(|| -> Result<(), String> {
                for &id in &order {
                    a.free_id(id).map_err(err)?;
                    black_box(a.allocate_id().map_err(err)?);
                }
                Ok(())
            });
            res?;
            Ok(d.as_secs_f64() * 1e9 / OPS as f64)
        })
        .peer("vm-allocator", move || {
            let a = vm.as_mut().map_err(|e| e.clone())?;
            let (res, d) = time(|| -> Result<(), String> {
                for &id in &order_vm {
                    a.free_id(id).map_err(err)?;
                    black_box(a.allocate_id().map_err(err)?);
                }
                Ok(())
            });
            res?;
            Ok(d.as_secs_f64() * 1e9 / OPS as f64)
        })
        .run()
}

/// Bytes in use on glibc's heap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_in_use() -> Result<u64, String> {
    // SAFETY: `mallinfo2` takes no arguments and only reads glibc's allocator statistics,
    // which it returns by value; glibc 2.33 or newer provides it.
    let info = unsafe { libc::mallinfo2() };
    u64::try_from(info.uordblks + info.hblkhd).map_err(err)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_in_use() -> Result<u64, String> {
    Err("needs glibc's mallinfo2".to_owned())
}

/// Heap growth per live range while `build` runs (the built value is dropped afterwards).
fn bytes_per<T>(live: u64, build: impl FnOnce() -> Result<T, String>) -> Sample {
    let before = heap_in_use()?;
    let built = build()?;
    let after = heap_in_use()?;
    drop(black_box(built));
    Ok(after.saturating_sub(before) as f64 / live as f64)
}

/// `addr_bytes_per_range` (`fragmented == false`) and `addr_bytes_per_range_fragmented`.
pub fn bytes_per_range(bench: &Bench, n: u64, fragmented: bool) -> Row {
    let name = if fragmented {
        "addr_bytes_per_range_fragmented"
    } else {
        "addr_bytes_per_range"
    };
    bench
        .scenario(name, n, "B/range", Better::Lower)
        .memvisor(move || {
            bytes_per(n, || {
                if fragmented {
                    return memvisor_band(n, false);
                }
                let mut a =
                    AddressAllocator::<()>::new(AddressRange::new(BASE, u64::MAX).map_err(err)?);
                for _ in 0..n {
                    a.allocate(page(), page(), AllocPolicy::FirstMatch)
                        .map_err(err)?;
                }
                Ok(a)
            })
        })
        .peer("vm-allocator", move || {
            bytes_per(n, || {
                if fragmented {
                    return vm_band(n, false);
                }
                // Exact placements give the layout a first-fit fill would, in O(n log n).
                let mut a = VmAddr::new(BASE, (n + 16) * page()).map_err(err)?;
                for i in 0..n {
                    a.allocate(page(), page(), VmPolicy::ExactMatch(BASE + i * page()))
                        .map_err(err)?;
                }
                Ok(a)
            })
        })
        .run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_small_measures_both() {
        let bench = Bench::with_repeats(true, 1);
        for last in [false, true] {
            let row = alloc_free(&bench, 100, last);
            assert!(row.memvisor.is_some(), "{row:?}");
            assert!(row.peers["vm-allocator"].is_some(), "{row:?}");
        }
    }

    #[test]
    fn fill_and_churn_small_measure_both() {
        let bench = Bench::with_repeats(true, 1);
        for row in [fill(&bench, 1_000), id_churn(&bench, 1_000)] {
            assert!(row.memvisor.is_some(), "{row:?}");
            assert!(row.peers["vm-allocator"].is_some(), "{row:?}");
        }
    }

    #[test]
    fn crafted_starts_rise_in_old_priority() {
        let starts = crafted_starts(200);
        assert_eq!(starts.len(), 200);
        for w in starts.windows(2) {
            assert!(w[0] < w[1]);
            assert!(old_priority(w[0]) < old_priority(w[1]));
        }
    }

    #[test]
    fn adversarial_and_snapshot_small_measure() {
        let bench = Bench::with_repeats(true, 1);
        let row = adversarial(&bench, 100);
        assert!(row.memvisor.is_some(), "{row:?}");
        assert!(row.peers["vm-allocator"].is_some(), "{row:?}");
        for crafted in [false, true] {
            let row = snapshot_load(&bench, 100, crafted);
            assert!(row.memvisor.is_some(), "{row:?}");
        }
    }

    #[test]
    fn band_frees_exactly_half() {
        let (pages, keep) = band(1_000);
        assert_eq!(pages, 2_000);
        assert_eq!(keep.iter().filter(|k| !**k).count(), 1_000);
    }
}
