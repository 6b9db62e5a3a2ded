//! Hotplug under contention: 4 writer threads each insert 2,000 regions and remove half of
//! them, while readers look addresses up. Nothing may be lost, and no reader may see a state
//! that no sequence of whole operations produces.

#![allow(clippy::cast_possible_truncation)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use memvisor_space::{AddressSpace, Layout, Region, RegionSpec, RegionType, Snapshot};
use vm_memory::GuestAddress;

const WRITERS: u64 = 4;
const OPS: u64 = if cfg!(miri) { 6 } else { 2_000 };
const READERS: usize = 2;

fn page() -> u64 {
    memvisor_vmem::page_size() as u64
}

/// Writer `w`'s `i`-th region: writers use disjoint, interleaved addresses.
fn addr(w: u64, i: u64) -> u64 {
    (i * WRITERS + w) * 2 * page()
}

/// The writer and index a region base belongs to.
fn owner(base: u64) -> (u64, u64) {
    let n = base / (2 * page());
    (n % WRITERS, n / WRITERS)
}

/// Writer `w` runs: insert i; if i is odd, remove i - 1. So after each whole operation its
/// regions are: all odd indices below the highest present index `m`, plus `m`, plus `m - 1`
/// only if `m` is odd (between the insert of `m` and the removal of `m - 1`).
fn check_consistent(s: &Snapshot) {
    let mut present: Vec<Vec<u64>> = vec![Vec::new(); WRITERS as usize];
    let mut prev_last = None;
    for r in s.regions() {
        if let Some(p) = prev_last {
            assert!(r.base().0 > p, "unsorted or overlapping");
        }
        prev_last = Some(r.last().0);
        let (w, i) = owner(r.base().0);
        present[w as usize].push(i);
        assert!(
            std::ptr::eq(s.find_region(r.base()).unwrap(), r),
            "lookup disagrees with the walk"
        );
    }
    for (w, ids) in present.iter().enumerate() {
        let Some(&m) = ids.iter().max() else { continue };
        for i in 0..m {
            let has = ids.contains(&i);
            let expected = i % 2 == 1 || (m % 2 == 1 && i == m - 1);
            assert!(
                !has || expected,
                "writer {w}: index {i} present with max {m}: removed region reappeared"
            );
            assert!(
                has || !expected || (m % 2 == 1 && i == m - 1),
                "writer {w}: index {i} missing with max {m}: an insert was lost"
            );
        }
    }
}

#[test]
fn writers_and_readers_lose_nothing_and_see_no_torn_state() {
    let layout = Layout::new(GuestAddress(u64::MAX), []).unwrap();
    let space = AddressSpace::plan(layout, []).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|seed| {
            let space = space.clone();
            let done = Arc::clone(&done);
            thread::spawn(move || {
                let mut reader = space.reader();
                let mut last_generation = 0;
                let mut x = seed as u64 + 1;
                let mut checks = 0u64;
                while !done.load(Ordering::Acquire) || checks == 0 {
                    let s = Arc::clone(reader.load());
                    assert!(s.generation() >= last_generation, "generation went back");
                    last_generation = s.generation();
                    if checks.is_multiple_of(8) {
                        check_consistent(&s);
                    }
                    for _ in 0..64 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let a = x % (addr(WRITERS, OPS) + page());
                        if let Some(r) = s.find_region(GuestAddress(a)) {
                            assert!(r.contains(GuestAddress(a)));
                        } else {
                            assert!(s.regions().all(|r| !r.contains(GuestAddress(a))));
                        }
                    }
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let space = space.clone();
            thread::spawn(move || {
                for i in 0..OPS {
                    let spec =
                        RegionSpec::new(RegionType::Reserved, GuestAddress(addr(w, i)), page());
                    space
                        .insert_region(Arc::new(Region::plan(spec).unwrap()))
                        .unwrap();
                    if i % 2 == 1 {
                        space
                            .remove_region(GuestAddress(addr(w, i - 1)), page())
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    let s = space.snapshot();
    s.check_invariants();
    check_consistent(&s);
    // Every writer's odd regions, and nothing else.
    assert_eq!(s.len() as u64, WRITERS * (OPS / 2));
    for w in 0..WRITERS {
        for i in 0..OPS {
            let found = s.find_region(GuestAddress(addr(w, i))).is_some();
            assert_eq!(found, i % 2 == 1, "writer {w} region {i}");
        }
    }
    assert_eq!(s.generation(), WRITERS * (OPS + OPS / 2));
}

#[test]
fn removed_region_stays_readable_through_old_snapshot() {
    let space = AddressSpace::plan(Layout::new(GuestAddress(u64::MAX), []).unwrap(), []).unwrap();
    let spec = RegionSpec::new(RegionType::Reserved, GuestAddress(0), page());
    space
        .insert_region(Arc::new(Region::plan(spec).unwrap()))
        .unwrap();
    let old = space.snapshot();
    space.remove_region(GuestAddress(0), page()).unwrap();
    assert!(space.snapshot().find_region(GuestAddress(0)).is_none());
    assert_eq!(
        old.find_region(GuestAddress(0)).map(|r| r.size()),
        Some(page())
    );
}
