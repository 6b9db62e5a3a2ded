//! `space`: the guest physical address space of `memvisor-space` against vm-memory 0.18
//! (`GuestMemoryMmap`, `GuestMemoryAtomic`) and dbs-address-space 0.3: address lookup (random,
//! through the hotplug handle, repeated), hotplug insert and remove, and creating 1 GiB of
//! resident anonymous memory against raw `mmap` + `MADV_POPULATE_WRITE`.
//!
//! Regions are one page each with a one-page gap between them; lookups pick a region at random
//! and an offset inside it (every lookup hits). memvisor's regions here have no host memory
//! (lookup and hotplug bookkeeping never touch it); vm-memory's are real one-page mappings, made
//! before timing; dbs regions are descriptions only, as in dbs itself. Linux only.

use std::hint::black_box;
use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use memvisor_space::{AddressSpace, HugePages, Layout, Region, RegionSpec, Window, WindowKind};
use vm_memory::{GuestAddress, GuestAddressSpace, GuestMemoryBackend, GuestMemoryRegion};

use crate::harness::{Bench, Sample, as_ms, as_ns, ns_per_iter, time};
use crate::report::{Better, Row};
use crate::util::SplitMix64;

const SIZES: [u64; 3] = [4, 64, 1024];
/// Random lookups per sample.
const LOOKUPS: usize = 1 << 16;
/// Repeated lookups per sample.
const REPEATS: usize = 1 << 20;
/// Hotplug operations per sample.
const HOTPLUG_OPS: usize = 256;
const GIB: usize = 1 << 30;

type Mmap = vm_memory::GuestMemoryMmap<()>;
type MmapRegion = vm_memory::GuestRegionMmap<()>;

/// Runs every scenario of the group.
pub fn run(bench: &Bench) -> Vec<Row> {
    let mut rows = Vec::new();
    for n in SIZES {
        let fixture = Fixture::new(n);
        rows.push(lookup_random(bench, &fixture));
        rows.push(lookup_snapshot(bench, &fixture));
        rows.push(lookup_guard(bench, &fixture));
        rows.push(lookup_repeat(bench, &fixture));
        rows.push(insert(bench, &fixture));
        rows.push(remove(bench, &fixture));
    }
    rows.push(back_1g(bench, "back_1g_4k", HugePages::None, 1));
    rows.push(back_1g(bench, "back_1g_thp", HugePages::Transparent, 1));
    rows.push(back_1g(bench, "back_1g_4k_2t", HugePages::None, 2));
    rows.push(dirty_write_1g(bench));
    rows
}

fn page() -> u64 {
    memvisor_vmem::page_size() as u64
}

/// The same regions in each implementation, plus prepared extra regions for hotplug (placed
/// in the gaps) and a table of lookup addresses.
struct Fixture {
    n: u64,
    space: AddressSpace,
    extra: Vec<Arc<Region>>,
    mmap: Mmap,
    mmap_extra: Vec<Arc<MmapRegion>>,
    dbs_regions: Vec<Arc<dbs_address_space::AddressSpaceRegion>>,
    dbs_extra: Vec<Arc<dbs_address_space::AddressSpaceRegion>>,
    dbs_layout: dbs_address_space::AddressSpaceLayout,
    addrs: Vec<u64>,
}

fn dbs_region(base: u64, size: u64) -> Arc<dbs_address_space::AddressSpaceRegion> {
    Arc::new(dbs_address_space::AddressSpaceRegion::new(
        dbs_address_space::AddressSpaceRegionType::DefaultMemory,
        vm_memory_09::GuestAddress(base),
        size,
    ))
}

impl Fixture {
    fn new(n: u64) -> Self {
        let p = page();
        let bases: Vec<u64> = (0..n).map(|i| 2 * i * p).collect();
        // Extra regions go into gaps: the gap after region `i` is at `(2i + 1) * p`.
        let extra_bases: Vec<u64> = (0..HOTPLUG_OPS as u64)
            .map(|k| (2 * (k * n / HOTPLUG_OPS as u64 % n) + 1) * p)
            .collect();
        let limit = 2 * n * p;
        let layout = Layout::new(
            GuestAddress(limit - 1),
            [Window::new(WindowKind::Ram, GuestAddress(0), limit).expect("window")],
        )
        .expect("layout");
        let space = AddressSpace::plan(
            layout,
            bases.iter().map(|&b| RegionSpec::ram(GuestAddress(b), p)),
        )
        .expect("memvisor space");
        let extra = extra_bases
            .iter()
            .map(|&b| Arc::new(Region::plan(RegionSpec::ram(GuestAddress(b), p)).expect("region")))
            .collect();
        let len = memvisor_vmem::page_size();
        let ranges: Vec<(GuestAddress, usize)> =
            bases.iter().map(|&b| (GuestAddress(b), len)).collect();
        let mmap = Mmap::from_ranges(&ranges).expect("vm-memory");
        let mmap_extra = extra_bases
            .iter()
            .map(|&b| Arc::new(MmapRegion::from_range(GuestAddress(b), len, None).expect("mmap")))
            .collect();
        let dbs_regions = bases.iter().map(|&b| dbs_region(b, p)).collect();
        let dbs_extra = extra_bases.iter().map(|&b| dbs_region(b, p)).collect();
        let dbs_layout = dbs_address_space::AddressSpaceLayout::new((1 << 46) - 1, 0, limit);
        let mut rng = SplitMix64::new(0x5eed);
        let addrs = (0..LOOKUPS)
            .map(|_| bases[rng.below_usize(bases.len())] + rng.below(p))
            .collect();
        Self {
            n,
            space,
            extra,
            mmap,
            mmap_extra,
            dbs_regions,
            dbs_extra,
            dbs_layout,
            addrs,
        }
    }

    fn dbs_base(&self) -> dbs_address_space::AddressSpaceBase {
        dbs_address_space::AddressSpaceBase::from_regions(
            self.dbs_regions.clone(),
            self.dbs_layout.clone(),
        )
    }

    fn dbs_space(&self) -> dbs_address_space::AddressSpace {
        dbs_address_space::AddressSpace::from_regions(
            self.dbs_regions.clone(),
            self.dbs_layout.clone(),
        )
    }
}

fn lookup_random(bench: &Bench, f: &Fixture) -> Row {
    let snap = f.space.snapshot();
    let dbs = f.dbs_base();
    let addrs = &f.addrs;
    bench
        .scenario("lookup_random", f.n, "ns/op", Better::Lower)
        .memvisor(|| {
            Ok(ns_per_iter(addrs.len(), |i| {
                snap.find_region(GuestAddress(addrs[i])).map(Region::size)
            }))
        })
        .peer("vm-memory", || {
            Ok(ns_per_iter(addrs.len(), |i| {
                f.mmap.find_region(GuestAddress(addrs[i])).map(|r| r.len())
            }))
        })
        .peer("dbs-address-space", || {
            // dbs has no lookup returning the region; its per-address queries scan the
            // regions the same way (`numa_node_id` stops at the region holding the address).
            Ok(ns_per_iter(addrs.len(), |i| dbs.numa_node_id(addrs[i])))
        })
        .run()
}

fn lookup_snapshot(bench: &Bench, f: &Fixture) -> Row {
    let addrs = &f.addrs;
    let atomic = vm_memory::GuestMemoryAtomic::new(f.mmap.clone());
    let dbs = f.dbs_space();
    bench
        .scenario("lookup_snapshot", f.n, "ns/op", Better::Lower)
        .memvisor(|| {
            // A per-thread reader of the hotplug handle: notices a new snapshot with one
            // atomic load per lookup.
            let mut reader = f.space.reader();
            Ok(ns_per_iter(addrs.len(), |i| {
                reader.find_region(GuestAddress(addrs[i])).map(Region::size)
            }))
        })
        .peer("vm-memory", || Ok(vm_memory_atomic_lookups(&atomic, addrs)))
        .peer("dbs-address-space", || {
            Ok(ns_per_iter(addrs.len(), |i| dbs.numa_node_id(addrs[i])))
        })
        .run()
}

/// As `lookup_snapshot`, with memvisor loading the snapshot through an arc-swap guard per
/// lookup (`AddressSpace::memory`) instead of a reader.
fn lookup_guard(bench: &Bench, f: &Fixture) -> Row {
    let addrs = &f.addrs;
    let atomic = vm_memory::GuestMemoryAtomic::new(f.mmap.clone());
    bench
        .scenario("lookup_guard", f.n, "ns/op", Better::Lower)
        .memvisor(|| {
            Ok(ns_per_iter(addrs.len(), |i| {
                f.space
                    .memory()
                    .find_region(GuestAddress(addrs[i]))
                    .map(Region::size)
            }))
        })
        .peer("vm-memory", || Ok(vm_memory_atomic_lookups(&atomic, addrs)))
        .run()
}

/// vm-memory's lookups through its hotplug handle: a `GuestMemoryAtomic` load per lookup.
fn vm_memory_atomic_lookups(atomic: &vm_memory::GuestMemoryAtomic<Mmap>, addrs: &[u64]) -> f64 {
    ns_per_iter(addrs.len(), |i| {
        atomic
            .memory()
            .find_region(GuestAddress(addrs[i]))
            .map(|r| r.len())
    })
}

fn lookup_repeat(bench: &Bench, f: &Fixture) -> Row {
    let snap = f.space.snapshot();
    let dbs = f.dbs_base();
    let addr = f.addrs[0];
    bench
        .scenario("lookup_repeat", f.n, "ns/op", Better::Lower)
        .memvisor(|| {
            Ok(ns_per_iter(REPEATS, |_| {
                snap.find_region(GuestAddress(black_box(addr)))
                    .map(Region::size)
            }))
        })
        .peer("vm-memory", || {
            Ok(ns_per_iter(REPEATS, |_| {
                f.mmap
                    .find_region(GuestAddress(black_box(addr)))
                    .map(|r| r.len())
            }))
        })
        .peer("dbs-address-space", || {
            Ok(ns_per_iter(REPEATS / 64, |_| {
                dbs.numa_node_id(black_box(addr))
            }))
        })
        .run()
}

/// Nanoseconds per timed call, each timed on its own between untimed setup and teardown.
fn per_op(total: Duration, ops: usize) -> f64 {
    as_ns(total) / ops as f64
}

/// Inserts the extra regions one at a time (timed) and removes each again (untimed), or the
/// other way round when `timed_remove`.
fn memvisor_hotplug(f: &Fixture, timed_remove: bool) -> Sample {
    let mut total = Duration::ZERO;
    for r in &f.extra {
        let (base, size) = (r.base(), r.size());
        let start = Instant::now();
        f.space
            .insert_region(Arc::clone(r))
            .map_err(|e| e.to_string())?;
        let inserted = start.elapsed();
        let start = Instant::now();
        black_box(
            f.space
                .remove_region(base, size)
                .map_err(|e| e.to_string())?,
        );
        let removed = start.elapsed();
        total += if timed_remove { removed } else { inserted };
    }
    Ok(per_op(total, f.extra.len()))
}

/// vm-memory's hotplug path: `GuestMemoryAtomic`'s writer lock, a new collection with the
/// region added (or removed), and publication.
fn vm_memory_hotplug(
    atomic: &vm_memory::GuestMemoryAtomic<Mmap>,
    f: &Fixture,
    timed_remove: bool,
) -> Sample {
    let mut total = Duration::ZERO;
    for r in &f.mmap_extra {
        let (base, size) = (r.start_addr(), r.len());
        let start = Instant::now();
        {
            let guard = atomic.lock().map_err(|e| e.to_string())?;
            let next = atomic
                .memory()
                .insert_region(Arc::clone(r))
                .map_err(|e| e.to_string())?;
            guard.replace(next);
        }
        let inserted = start.elapsed();
        let start = Instant::now();
        {
            let guard = atomic.lock().map_err(|e| e.to_string())?;
            let (next, old) = atomic
                .memory()
                .remove_region(base, size)
                .map_err(|e| e.to_string())?;
            guard.replace(next);
            black_box(old);
        }
        let removed = start.elapsed();
        total += if timed_remove { removed } else { inserted };
    }
    Ok(per_op(total, f.mmap_extra.len()))
}

fn insert(bench: &Bench, f: &Fixture) -> Row {
    let atomic = vm_memory::GuestMemoryAtomic::new(f.mmap.clone());
    bench
        .scenario("insert", f.n, "ns/op", Better::Lower)
        .memvisor(|| memvisor_hotplug(f, false))
        .peer("vm-memory", || vm_memory_hotplug(&atomic, f, false))
        .peer("dbs-address-space", || {
            // dbs cannot remove, so each insert starts from a fresh space (made untimed).
            let mut total = Duration::ZERO;
            for r in &f.dbs_extra {
                let mut space = f.dbs_space();
                let start = Instant::now();
                space
                    .insert_region(Arc::clone(r))
                    .map_err(|e| e.to_string())?;
                total += start.elapsed();
                black_box(space);
            }
            Ok(per_op(total, f.dbs_extra.len()))
        })
        .run()
}

fn remove(bench: &Bench, f: &Fixture) -> Row {
    let atomic = vm_memory::GuestMemoryAtomic::new(f.mmap.clone());
    bench
        .scenario("remove", f.n, "ns/op", Better::Lower)
        .memvisor(|| memvisor_hotplug(f, true))
        .peer("vm-memory", || vm_memory_hotplug(&atomic, f, true))
        .unsupported("dbs-address-space", "no region removal")
        .run()
}

fn back_memvisor(huge: HugePages, threads: usize) -> Sample {
    let spec = RegionSpec::ram(GuestAddress(0), GIB as u64)
        .with_huge_pages(huge)
        .with_prefault_threads(threads);
    let (result, elapsed) = time(|| Region::back(spec));
    let (region, _report) = result.map_err(|e| e.to_string())?;
    drop(region);
    Ok(as_ms(elapsed))
}

fn os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// The floor: `mmap`, for THP a 2 MiB aligned range with `MADV_HUGEPAGE`, then
/// `MADV_POPULATE_WRITE` over 1 GiB, split in `threads` equal parts (one per thread, the
/// calling thread taking the first).
fn back_libc(huge: HugePages, threads: usize) -> Sample {
    let align = if huge == HugePages::Transparent {
        2 << 20
    } else {
        0
    };
    let total = GIB + align;
    let (result, elapsed) = time(|| -> Result<(*mut libc::c_void, usize), String> {
        // SAFETY: a fresh private anonymous mapping touches no existing memory.
        let raw = unsafe {
            libc::mmap(
                ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(os_error("mmap"));
        }
        let start = if align > 0 {
            (raw as usize).next_multiple_of(align) as *mut libc::c_void
        } else {
            raw
        };
        if align > 0 {
            // SAFETY: inside the fresh mapping; advice keeps contents.
            if unsafe { libc::madvise(start, GIB, libc::MADV_HUGEPAGE) } != 0 {
                return Err(os_error("madvise(MADV_HUGEPAGE)"));
            }
        }
        let threads = threads.max(1);
        let part = GIB / threads;
        let base = start as usize;
        let populate = move |i: usize| -> Result<(), String> {
            let len = if i + 1 == threads {
                GIB - i * part
            } else {
                part
            };
            // SAFETY: part `i` of the fresh read-write mapping (parts are page multiples).
            let ret = unsafe {
                libc::madvise(
                    (base + i * part) as *mut libc::c_void,
                    len,
                    libc::MADV_POPULATE_WRITE,
                )
            };
            if ret == 0 {
                Ok(())
            } else {
                Err(os_error("madvise(MADV_POPULATE_WRITE)"))
            }
        };
        std::thread::scope(|s| {
            let others: Vec<_> = (1..threads).map(|i| s.spawn(move || populate(i))).collect();
            let mut result = populate(0);
            for h in others {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err("populate thread panicked".into()));
                result = result.and(r);
            }
            result
        })?;
        Ok((raw, total))
    });
    let (raw, len) = result?;
    // SAFETY: the whole mapping made above, no longer used.
    unsafe { libc::munmap(raw, len) };
    Ok(as_ms(elapsed))
}

fn back_1g(bench: &Bench, name: &str, huge: HugePages, threads: usize) -> Row {
    bench
        .scenario(name, 0, "ms", Better::Lower)
        .memvisor(|| back_memvisor(huge, threads))
        .peer("raw-libc", || back_libc(huge, threads))
        .run()
}

/// Bytes per `write_slice` in `dirty_write_1g`: one base page.
const DIRTY_CHUNK: usize = 4096;

/// One pass of page-sized `Bytes` writes over `len` bytes from guest address 0.
fn write_pass<M: vm_memory::Bytes<GuestAddress, E = vm_memory::GuestMemoryError>>(
    mem: &M,
    len: usize,
    fill: u8,
) -> Sample {
    let buf = [fill; DIRTY_CHUNK];
    let (result, elapsed) = time(|| -> Result<(), String> {
        for at in (0..len).step_by(DIRTY_CHUNK) {
            mem.write_slice(&buf, GuestAddress(at as u64))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    });
    result?;
    Ok(as_ms(elapsed))
}

/// `Bytes` writes of one page at a time over 1 GiB of resident memory with dirty tracking on:
/// memvisor's region with its dirty bitmap against vm-memory's
/// `GuestMemoryMmap<AtomicBitmap>`. Both are made resident before timing, and each pass
/// takes (and clears) the dirty log afterwards, outside the timing.
fn dirty_write_1g(bench: &Bench) -> Row {
    let row = bench.scenario("dirty_write_1g", 0, "ms", Better::Lower);
    let layout = Layout::x86_64().ram(2 << 30).build();
    let spec = RegionSpec::ram(GuestAddress(0), GIB as u64)
        .with_dirty_tracking(true)
        .with_prefault_threads(1);
    let space = match layout.and_then(|l| AddressSpace::back(l, [spec])) {
        Ok((space, _)) => space,
        Err(e) => return row.unsupported("memvisor", &e.to_string()).run(),
    };
    type Tracked = vm_memory::GuestMemoryMmap<vm_memory::bitmap::AtomicBitmap>;
    let peer = match Tracked::from_ranges(&[(GuestAddress(0), GIB)]) {
        Ok(peer) => peer,
        Err(e) => return row.unsupported("vm-memory", &e.to_string()).run(),
    };
    let mut fill = 0u8;
    let mut peer_fill = 0u8;
    row.memvisor(|| {
        fill = fill.wrapping_add(1);
        let mem = space.memory();
        let sample = write_pass(&*mem, GIB, fill);
        for r in mem.regions() {
            black_box(r.take_dirty_log());
        }
        sample
    })
    .peer("vm-memory", || {
        peer_fill = peer_fill.wrapping_add(1);
        let sample = write_pass(&peer, GIB, peer_fill);
        for r in peer.iter() {
            std::ops::Deref::deref(r).bitmap().reset();
        }
        sample
    })
    .run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_implementations_agree_on_every_lookup() {
        let f = Fixture::new(64);
        let snap = f.space.snapshot();
        let dbs = f.dbs_base();
        for &a in &f.addrs {
            let ours = snap.find_region(GuestAddress(a)).map(|r| r.base().0);
            let vm = f
                .mmap
                .find_region(GuestAddress(a))
                .map(|r| r.start_addr().0);
            assert_eq!(ours, vm, "{a:#x}");
            assert!(ours.is_some(), "every lookup hits");
            assert!(dbs.prot_flags(vm_memory_09::GuestAddress(a)).is_ok());
        }
    }

    #[test]
    fn hotplug_contenders_restore_their_state() {
        let f = Fixture::new(4);
        memvisor_hotplug(&f, false).unwrap();
        memvisor_hotplug(&f, true).unwrap();
        assert_eq!(f.space.snapshot().len(), 4);
        let atomic = vm_memory::GuestMemoryAtomic::new(f.mmap.clone());
        vm_memory_hotplug(&atomic, &f, false).unwrap();
        assert_eq!(atomic.memory().num_regions(), 4);
    }
}
