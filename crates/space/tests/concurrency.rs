//! Hotplug under contention: 4 writer threads each insert 2,000 regions and remove half of
//! them, while readers look addresses up. Nothing may be lost, and no reader may see a state
//! that no sequence of whole operations produces.

#![allow(clippy::cast_possible_truncation)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use memvisor_space::{
    AddressSpace, ChangeKind, GuestBytes, Layout, ListenerError, Region, RegionEvent,
    RegionListener, RegionSpec, RegionType, Snapshot, SpaceReader,
};
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

/// What may be shared with or sent to other threads: the handle, snapshots, regions, the view
/// of a snapshot's bytes; a reader (its cache) may move to another thread.
#[test]
fn handles_and_snapshots_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<AddressSpace>();
    send_sync::<Snapshot>();
    send_sync::<Arc<Snapshot>>();
    send_sync::<Region>();
    send_sync::<GuestBytes<'static>>();
    send_sync::<Arc<dyn RegionListener>>();
    send::<SpaceReader>();
}

/// A KVM-like slot table kept by a listener: a slot number is given to at most one live region,
/// and a region is removed under the number it was inserted with.
#[derive(Default)]
struct SlotTable(std::sync::Mutex<std::collections::BTreeMap<u32, u64>>);

impl RegionListener for SlotTable {
    fn region_changed(&self, e: &RegionEvent<'_>) -> Result<(), ListenerError> {
        let slot = e.slot.expect("RAM has a slot number");
        let mut table = self.0.lock().unwrap();
        match e.kind {
            ChangeKind::Inserted => {
                let old = table.insert(slot, e.region.base().0);
                assert_eq!(old, None, "slot {slot} given to two live regions");
            }
            ChangeKind::Removed => {
                let base = table.remove(&slot);
                assert_eq!(
                    base,
                    Some(e.region.base().0),
                    "slot {slot} removed for another"
                );
            }
        }
        Ok(())
    }
}

/// Two writers insert and remove RAM with as few slot numbers as they can ever hold at once
/// (so every number is reused over and over), a third thread adds and removes listeners (one
/// refusing now and then), and readers look up: a slot number never belongs to two live
/// regions, a refused change changes nothing, and the table matches the final snapshot.
#[test]
fn listeners_churn_while_writers_reuse_slot_numbers() {
    const ROUNDS: u64 = if cfg!(miri) { 4 } else { 400 };
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    // Each writer holds at most two regions at once.
    let space = AddressSpace::builder(layout).slots(4).plan().unwrap();
    let table = Arc::new(SlotTable::default());
    space
        .add_listener(Arc::clone(&table) as Arc<dyn RegionListener>)
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let churn = {
        let (space, done, rounds) = (space.clone(), Arc::clone(&done), Arc::clone(&rounds));
        thread::spawn(move || {
            let mut n = 0u64;
            while !done.load(Ordering::Acquire) {
                let refuse = n.is_multiple_of(3);
                let listener: Arc<dyn RegionListener> =
                    Arc::new(move |e: &RegionEvent<'_>| -> Result<(), ListenerError> {
                        if refuse
                            && e.kind == ChangeKind::Inserted
                            && e.generation.is_multiple_of(5)
                        {
                            return Err("refused".into());
                        }
                        Ok(())
                    });
                space.add_listener(Arc::clone(&listener)).unwrap();
                thread::yield_now();
                assert!(space.remove_listener(&listener).unwrap());
                assert!(!space.remove_listener(&listener).unwrap());
                n += 1;
                rounds.store(n, Ordering::Release);
            }
            n
        })
    };
    // The writers start once the listeners churn: on a loaded host the writers could
    // otherwise finish before that thread ran at all.
    while rounds.load(Ordering::Acquire) == 0 && !churn.is_finished() {
        thread::yield_now();
    }
    let reader = {
        let (space, done) = (space.clone(), Arc::clone(&done));
        thread::spawn(move || {
            let mut reader = space.reader();
            while !done.load(Ordering::Acquire) {
                let s = Arc::clone(reader.load());
                let mut slots: Vec<u32> = s.regions_with_slots().filter_map(|(_, n)| n).collect();
                let all = slots.len();
                slots.sort_unstable();
                slots.dedup();
                assert_eq!(slots.len(), all, "a snapshot gives one slot number twice");
                assert!(slots.iter().all(|&n| n < 4));
            }
        })
    };
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let space = space.clone();
            thread::spawn(move || {
                let mut refused = 0;
                for i in 0..ROUNDS {
                    let base = (i * 2 + w) * 2 * page();
                    let region = Arc::new(
                        Region::plan(RegionSpec::ram(GuestAddress(base), page())).unwrap(),
                    );
                    let before = space.find_region(GuestAddress(base));
                    match space.insert_region(region) {
                        Ok(()) => {}
                        Err(memvisor_space::Error::Listener { base: b, .. }) => {
                            assert_eq!(b, base);
                            assert!(
                                before.is_none() && space.find_region(GuestAddress(base)).is_none()
                            );
                            refused += 1;
                            continue;
                        }
                        Err(e) => panic!("insert: {e}"),
                    }
                    space.remove_region(GuestAddress(base), page()).unwrap();
                }
                refused
            })
        })
        .collect();
    let refused: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    done.store(true, Ordering::Release);
    assert!(churn.join().unwrap() > 0);
    reader.join().unwrap();
    assert!(refused <= 2 * ROUNDS);
    assert!(space.snapshot().is_empty());
    assert!(
        table.0.lock().unwrap().is_empty(),
        "the table kept a removed region"
    );
    // Every number is free again: four regions get the four numbers.
    for i in 0..4 {
        let region = Region::plan(RegionSpec::ram(GuestAddress(i * page()), page())).unwrap();
        space.insert_region(Arc::new(region)).unwrap();
    }
    let mut slots: Vec<u32> = space
        .snapshot()
        .regions_with_slots()
        .filter_map(|(_, n)| n)
        .collect();
    slots.sort_unstable();
    assert_eq!(slots, [0, 1, 2, 3]);
    assert_eq!(table.0.lock().unwrap().len(), 4);
}
