//! Threads looking addresses up in one snapshot at once. A snapshot of more than 8 regions has
//! one hit index, shared by all its readers, which a run of lookups in one region turns on and a
//! lookup elsewhere turns off: here each thread runs streaks in its own region (turning the
//! index to it) between lookups in other regions, in gaps and at region edges, so the index
//! keeps moving under every thread's lookups. Every answer must be the region holding the
//! address, or none in a gap.

use std::sync::{Arc, Barrier};
use std::thread;

use memvisor_space::{AddressSpace, Layout, Region, RegionSpec, RegionType, Snapshot};
use vm_memory::GuestAddress;

const THREADS: u64 = 4;
const REGIONS: u64 = 16;
const ROUNDS: u64 = if cfg!(miri) { 20 } else { 4_000 };

fn page() -> u64 {
    memvisor_vmem::page_size() as u64
}

/// Region `i`: `i + 1` pages at `4 * i` pages, with a gap after it.
fn region(i: u64) -> (u64, u64) {
    (4 * i * page(), (i % 3 + 1) * page())
}

/// The region index expected at `addr`, or `None` in a gap.
fn expected(addr: u64) -> Option<u64> {
    let i = addr / (4 * page());
    let (base, size) = region(i);
    (i < REGIONS && addr >= base && addr - base < size).then_some(i)
}

fn check(snapshot: &Snapshot, addr: u64) {
    let found = snapshot.find_region(GuestAddress(addr)).map(|r| r.base().0);
    assert_eq!(
        found,
        expected(addr).map(|i| region(i).0),
        "lookup of {addr:#x}"
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn threads_sharing_a_snapshots_hit_index_always_find_the_right_region() {
    let layout = Layout::new(GuestAddress(u64::MAX), []).unwrap();
    let space = AddressSpace::plan(layout, []).unwrap();
    for i in 0..REGIONS {
        let (base, size) = region(i);
        let spec = RegionSpec::new(RegionType::Reserved, GuestAddress(base), size);
        let planned = Region::plan(spec).unwrap();
        space.insert_region(Arc::new(planned)).unwrap();
    }
    let snapshot = space.snapshot();
    assert_eq!(snapshot.regions().count() as u64, REGIONS);
    let start = Arc::new(Barrier::new(usize::try_from(THREADS).unwrap()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (snapshot, start) = (Arc::clone(&snapshot), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                let mut x = t + 1;
                for round in 0..ROUNDS {
                    // A streak in this thread's region: its first byte, its last, the middle.
                    let own = t * 3 + round % 3;
                    let (base, size) = region(own);
                    for addr in [base, base + size - 1, base + size / 2, base] {
                        check(&snapshot, addr);
                    }
                    // Just past its end (a gap), just before its start (a gap or the previous
                    // region's last byte), then anywhere.
                    check(&snapshot, base + size);
                    check(&snapshot, base.wrapping_sub(1));
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    check(&snapshot, x % (4 * (REGIONS + 1) * page()));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Far outside every region, in both directions.
    for addr in [u64::MAX, 4 * REGIONS * page(), 1 << 63] {
        check(&snapshot, addr);
    }
}
