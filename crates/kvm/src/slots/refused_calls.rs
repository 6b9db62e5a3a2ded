//! KVM refusing each of its calls in turn (a test-only switch makes the *k*-th
//! `KVM_SET_USER_MEMORY_REGION` or `KVM_GET_DIRTY_LOG` fail with `EIO`), for *k* = 0, 1, …
//! until a run makes fewer calls than *k*: during insertions, removals and replacements of a
//! region (one removal, then an insertion at the same place), the undo of each when a later
//! listener refuses it, the undo of a refused removal of a region out of sync, logging changes
//! and fetches. After every run the slots KVM holds (asked with a slot of our own under each
//! number and at each place, and with `KVM_GET_DIRTY_LOG` for the flags), `registered()`,
//! `out_of_sync()` and the space's published regions must agree, and the fetches must give
//! what the space's state says: every page of a region whose log KVM dropped (once), nothing
//! of one whose log KVM kept (no guest runs), `NotRegistered` where the space holds no region
//! with a slot, also at the place of a slot KVM kept after the undo of a refused insertion.

use std::sync::atomic::{AtomicBool, Ordering};

use kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES;
use memvisor_space::RegionSpec;
use vm_memory::GuestAddress;

use super::tests::{
    entry, fields, give_back_foreign_slot, keep_stale, lose_to_foreign_memory, lost, space,
    vm_or_skip,
};
use super::*;

const MIB: u64 = 1 << 20;
/// Region A (slot 0, not logging), B (slot 1, logging), and where C is inserted.
const A: u64 = 0;
const B: u64 = 4 * MIB;
const C: u64 = 8 * MIB;
/// Far from every region (and below any host's largest guest physical address): where the
/// probe of a slot number goes.
const FAR: u64 = 512 * MIB;

struct Fixture {
    vm: Arc<VmFd>,
    space: AddressSpace,
    slots: MemorySlots,
    /// The listener after the slots' one refuses every change while this is set.
    refuse: Arc<AtomicBool>,
    listener: Arc<dyn RegionListener>,
    /// Memory a later listener registered at B's range to make KVM refuse the undo of its
    /// removal, kept until that slot is deleted.
    foreign: Option<Region>,
}

impl Fixture {
    fn new(test: &str) -> Option<Self> {
        let vm = vm_or_skip(test)?;
        let space = space(
            0,
            Some(slot_limit(&vm)),
            &[
                RegionSpec::ram(GuestAddress(A), MIB),
                RegionSpec::ram(GuestAddress(B), MIB),
            ],
        );
        let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
        slots.set_dirty_logging(GuestAddress(B), true).unwrap();
        let refuse = Arc::new(AtomicBool::new(false));
        let r = Arc::clone(&refuse);
        let listener: Arc<dyn RegionListener> = Arc::new(
            move |_: &RegionEvent<'_>| -> std::result::Result<(), ListenerError> {
                if r.load(Ordering::SeqCst) {
                    Err("refused".into())
                } else {
                    Ok(())
                }
            },
        );
        space.add_listener(Arc::clone(&listener)).unwrap();
        Some(Self {
            vm,
            space,
            slots,
            refuse,
            listener,
            foreign: None,
        })
    }

    fn refusing(&self, on: bool) {
        self.refuse.store(on, Ordering::SeqCst);
    }

    fn insert(&self, base: u64, size: u64) -> bool {
        let region = Region::back(RegionSpec::ram(GuestAddress(base), size))
            .unwrap()
            .0;
        self.space.insert_region(Arc::new(region)).is_ok()
    }

    fn remove(&self, base: u64, size: u64) -> bool {
        self.space.remove_region(GuestAddress(base), size).is_ok()
    }

    /// The number of pages of the region the fetch at `base` gave, or the error.
    fn fetch(&self, base: u64) -> Result<u64> {
        self.slots
            .fetch_dirty_log(GuestAddress(base))
            .map(|log| log.count())
    }

    /// Refuses the `k`-th call to KVM from here on (`u64::MAX`: none), counting afresh.
    fn refuse_call(&self, k: u64) {
        let shared = &self.slots.shared;
        shared.calls.store(0, Ordering::Relaxed);
        shared.refuse_call.store(k, Ordering::Relaxed);
    }

    fn calls(&self) -> u64 {
        self.slots.shared.calls.load(Ordering::Relaxed)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.space.remove_listener(&self.listener);
        if self.foreign.is_some() {
            give_back_foreign_slot(&self.vm);
        }
    }
}

/// Whether KVM has a slot numbered `slot`: a page of our own under that number far from every
/// region is refused exactly then.
fn kvm_has_slot(vm: &VmFd, slot: u32) -> bool {
    let probe = Region::back(RegionSpec::ram(GuestAddress(0), 0x1000))
        .unwrap()
        .0;
    super::model::probe_refused(vm, &probe, slot, FAR)
}

/// Checks that KVM, `registered()`, `out_of_sync()` and the space agree: every region of the
/// space with a slot is registered or out of sync (not both), KVM holds exactly the slots
/// registered (numbers, places, logging), and at `foreign` (if any) the later listener's
/// memory. Returns the slots registered that the space does not hold (kept after the undo of
/// a refused insertion).
fn agree(ctx: &str, f: &Fixture, foreign: Option<u64>) -> Vec<(u32, u64, u64, u32)> {
    let snapshot = f.space.snapshot();
    let held: Vec<(u32, u64, u64)> = snapshot
        .regions_with_slots()
        .filter(|(r, _)| r.host_ptr().is_some())
        .map(|(r, slot)| (slot.unwrap(), r.base().0, r.size()))
        .collect();
    let listed = f.slots.registered();
    // KVM's slot of a region the space holds maps the region's memory.
    for e in &listed {
        if let Some(r) = snapshot.find_arc(e.guest.start())
            && snapshot.slot(e.guest.start()) == Some(e.slot)
        {
            assert_eq!(e.host_address, r.host_ptr().unwrap() as u64, "{ctx}: {e:?}");
        }
    }
    let registered: Vec<_> = listed.iter().map(fields).collect();
    super::tests::check_sizes(ctx, &f.slots);
    let out_of_sync: Vec<_> = f
        .slots
        .out_of_sync()
        .iter()
        .map(super::tests::lost_fields)
        .collect();
    for &(slot, base, size) in &held {
        let is_registered = registered
            .iter()
            .any(|&(s, b, z, _)| (s, b, z) == (slot, base, size));
        let is_lost = out_of_sync.contains(&(slot, base, size));
        assert!(
            is_registered != is_lost,
            "{ctx}: {slot} at {base:#x}: {registered:?} {out_of_sync:?}"
        );
    }
    for lost in &out_of_sync {
        assert!(held.contains(lost), "{ctx}: {lost:?} not in the space");
    }
    for slot in 0..8 {
        assert_eq!(
            kvm_has_slot(&f.vm, slot),
            registered.iter().any(|&(s, ..)| s == slot),
            "{ctx}: KVM's slot {slot}: {registered:?}"
        );
    }
    let probe = Region::back(RegionSpec::ram(GuestAddress(0), 0x1000))
        .unwrap()
        .0;
    for addr in [A, B, B + MIB, C, C + MIB] {
        let covered = registered
            .iter()
            .any(|&(_, b, z, _)| (b..b + z).contains(&addr))
            || foreign.is_some_and(|at| (at..at + MIB).contains(&addr));
        assert_eq!(
            super::model::kvm_has(&f.vm, &probe, addr),
            covered,
            "{ctx}: KVM at {addr:#x}: {registered:?}"
        );
    }
    for &(slot, _, size, flags) in &registered {
        // KVM answers `ENOENT` for a slot that does not log. (The log it gives is dropped: no
        // guest runs, so it is clean.)
        let logs =
            f.vm.get_dirty_log(slot, usize::try_from(size).unwrap())
                .is_ok();
        assert_eq!(logs, flags & KVM_MEM_LOG_DIRTY_PAGES != 0, "{ctx}: {slot}");
    }
    registered
        .into_iter()
        .filter(|&(s, b, z, _)| !held.contains(&(s, b, z)))
        .collect()
}

fn pages(size: u64) -> u64 {
    size / memvisor_vmem::page_size() as u64
}

fn not_registered(result: Result<u64>, base: u64) -> bool {
    matches!(result, Err(Error::NotRegistered { base: b }) if b == base)
}

/// Runs `op` after `setup` on a fresh fixture with KVM refusing its `k`-th call, for each `k`
/// until `op` makes fewer calls; checks that KVM, the slots and the space agree after each
/// (while KVM keeps refusing to delete slots kept after the undo of a refused insertion, and
/// once it lets them go), and `check(fixture, k, kept)` with `k` (`None` when nothing was
/// refused) and the kept slots.
fn each_call_refused(
    test: &str,
    setup: impl Fn(&mut Fixture),
    op: impl Fn(&Fixture),
    check: impl Fn(&Fixture, Option<u64>, &[(u32, u64, u64, u32)]),
) {
    for k in 0.. {
        let Some(mut f) = Fixture::new(test) else {
            return;
        };
        setup(&mut f);
        keep_stale(&f.slots, true);
        f.refuse_call(k);
        op(&f);
        let refused = k < f.calls();
        f.refuse_call(u64::MAX);
        f.refusing(false);
        let ctx = format!("{test}: call {k} refused: {refused}");
        let foreign = f.foreign.is_some().then_some(B);
        let kept = agree(&ctx, &f, foreign);
        check(&f, refused.then_some(k), &kept);
        // Once KVM lets the kept slots go, the next query deletes them: KVM and the slots hold
        // exactly the space's regions.
        keep_stale(&f.slots, false);
        assert_eq!(agree(&ctx, &f, foreign), [], "{ctx}");
        if !refused {
            return;
        }
    }
}

#[test]
fn insert_with_each_call_refused() {
    each_call_refused(
        "insert_with_each_call_refused",
        |_| {},
        |f| {
            f.insert(C, MIB);
        },
        |f, k, kept| {
            assert_eq!(kept, []);
            match k {
                // KVM refused the slot: the insertion is refused.
                Some(0) => assert!(not_registered(f.fetch(C), C)),
                None => assert!(matches!(f.fetch(C), Err(Error::DirtyLog { slot: 2, .. }))),
                _ => unreachable!(),
            }
            assert_eq!(f.space.snapshot().len(), 2 + usize::from(k.is_none()));
        },
    );
}

#[test]
fn insert_refused_later_with_each_call_refused() {
    each_call_refused(
        "insert_refused_later_with_each_call_refused",
        |_| {},
        |f| {
            f.refusing(true);
            assert!(!f.insert(C, MIB));
        },
        |f, k, kept| {
            assert_eq!(f.space.snapshot().len(), 2);
            // The undo's deletion refused: KVM keeps slot 2, which is no region of the space.
            let want: &[_] = if k == Some(1) { &[(2, C, MIB, 0)] } else { &[] };
            assert_eq!(kept, want);
            // Not a region of the space: no logging, no log there.
            assert!(not_registered(f.fetch(C), C));
            assert!(matches!(
                f.slots.set_dirty_logging(GuestAddress(C), true),
                Err(Error::NotRegistered { .. })
            ));
        },
    );
}

#[test]
fn remove_with_each_call_refused() {
    each_call_refused(
        "remove_with_each_call_refused",
        |_| {},
        |f| {
            f.remove(B, MIB);
        },
        |f, k, kept| {
            assert_eq!(kept, []);
            match k {
                // KVM kept the slot and its log (clean: no guest ran).
                Some(0) => {
                    assert_eq!(
                        f.slots.registered()[1],
                        entry(&f.space, 1, B, MIB, KVM_MEM_LOG_DIRTY_PAGES)
                    );
                    assert_eq!(f.fetch(B).unwrap(), 0);
                }
                None => assert!(not_registered(f.fetch(B), B)),
                _ => unreachable!(),
            }
        },
    );
}

#[test]
fn remove_refused_later_with_each_call_refused() {
    each_call_refused(
        "remove_refused_later_with_each_call_refused",
        |_| {},
        |f| {
            f.refusing(true);
            assert!(!f.remove(B, MIB));
        },
        |f, k, kept| {
            assert_eq!(kept, []);
            assert_eq!(f.space.snapshot().len(), 2);
            match k {
                // The deletion refused: nothing changed, KVM's log kept.
                Some(0) => {
                    assert_eq!(f.slots.out_of_sync(), []);
                    assert_eq!(f.fetch(B).unwrap(), 0);
                }
                // The undo refused: out of sync, and KVM dropped the log with the slot: every
                // page once, then nothing.
                Some(1) => {
                    assert_eq!(f.slots.out_of_sync(), [lost(1, B, MIB)]);
                    assert_eq!(f.fetch(B).unwrap(), pages(MIB));
                    assert_eq!(f.fetch(B).unwrap(), 0);
                }
                // Undone: the slot back with its logging, every page owed once.
                None => {
                    assert_eq!(
                        f.slots.registered()[1],
                        entry(&f.space, 1, B, MIB, KVM_MEM_LOG_DIRTY_PAGES)
                    );
                    assert_eq!(f.fetch(B).unwrap(), pages(MIB));
                    assert_eq!(f.fetch(B).unwrap(), 0);
                }
                _ => unreachable!(),
            }
        },
    );
}

#[test]
fn replace_with_each_call_refused() {
    each_call_refused(
        "replace_with_each_call_refused",
        |_| {},
        |f| {
            if f.remove(B, MIB) {
                f.insert(B, 2 * MIB);
            }
        },
        |f, k, kept| {
            assert_eq!(kept, []);
            match k {
                Some(0) => {
                    assert_eq!(
                        f.slots.registered()[1],
                        entry(&f.space, 1, B, MIB, KVM_MEM_LOG_DIRTY_PAGES)
                    );
                    assert_eq!(f.fetch(B).unwrap(), 0);
                }
                // Removed, and the new region refused: nothing there.
                Some(1) => {
                    assert_eq!(f.space.snapshot().len(), 1);
                    assert!(not_registered(f.fetch(B), B));
                }
                // The new region, which does not log (and owes nothing of the old one).
                None => {
                    assert_eq!(f.slots.registered()[1], entry(&f.space, 1, B, 2 * MIB, 0));
                    assert!(matches!(f.fetch(B), Err(Error::DirtyLog { slot: 1, .. })));
                    f.slots.set_dirty_logging(GuestAddress(B), true).unwrap();
                    assert_eq!(f.fetch(B).unwrap(), 0);
                }
                _ => unreachable!(),
            }
        },
    );
}

#[test]
fn replace_refused_later_with_each_call_refused() {
    each_call_refused(
        "replace_refused_later_with_each_call_refused",
        |_| {},
        |f| {
            if f.remove(B, MIB) {
                f.refusing(true);
                assert!(!f.insert(B, 2 * MIB));
            }
        },
        |f, k, kept| {
            // The undo's deletion of the new region refused: KVM keeps it under number 1,
            // which the space gave back.
            let want: &[_] = if k == Some(2) {
                &[(1, B, 2 * MIB, 0)]
            } else {
                &[]
            };
            assert_eq!(kept, want);
            if k == Some(0) {
                assert_eq!(f.fetch(B).unwrap(), 0);
            } else {
                // Nothing of the space there, whatever KVM keeps: no log, no logging.
                assert_eq!(f.space.snapshot().len(), 1);
                assert!(not_registered(f.fetch(B), B));
                assert!(matches!(
                    f.slots.set_dirty_logging(GuestAddress(B), true),
                    Err(Error::NotRegistered { .. })
                ));
            }
        },
    );
}

/// Makes B out of sync: its removal refused by a later listener after it put memory of its own
/// at B's range, which leaves KVM again when `give_back` says so.
fn lose_b(f: &mut Fixture, give_back: bool) {
    f.foreign = Some(lose_to_foreign_memory(&f.vm, &f.space, B));
    assert_eq!(f.slots.out_of_sync(), [lost(1, B, MIB)]);
    if give_back {
        give_back_foreign_slot(&f.vm);
        f.foreign = None;
    }
}

#[test]
fn undo_of_removal_of_region_out_of_sync_with_each_call_refused() {
    each_call_refused(
        "undo_of_removal_of_region_out_of_sync_with_each_call_refused",
        |f| lose_b(f, true),
        |f| {
            f.refusing(true);
            assert!(!f.remove(B, MIB));
        },
        |f, k, kept| {
            assert_eq!(kept, []);
            match k {
                // Still out of sync, still owing every page.
                Some(0) => assert_eq!(f.slots.out_of_sync(), [lost(1, B, MIB)]),
                // Mended, with its logging, still owing every page.
                None => {
                    assert_eq!(
                        f.slots.registered()[1],
                        entry(&f.space, 1, B, MIB, KVM_MEM_LOG_DIRTY_PAGES)
                    );
                }
                _ => unreachable!(),
            }
            assert_eq!(f.fetch(B).unwrap(), pages(MIB));
            assert_eq!(f.fetch(B).unwrap(), 0);
        },
    );
}

#[test]
fn logging_changes_and_fetches_with_each_call_refused() {
    // On while on (a fetch), off, and on from off: refused, the flags stay as they were.
    for (base, on) in [(B, true), (B, false), (A, true)] {
        let test = "logging_changes_with_each_call_refused";
        each_call_refused(
            test,
            |_| {},
            |f| {
                let _ = f.slots.set_dirty_logging(GuestAddress(base), on);
            },
            |f, k, _| {
                let logs = f.slots.registered()[usize::from(base == B)].flags != 0;
                assert_eq!(logs, if k.is_some() { base == B } else { on });
            },
        );
    }
    // A fetch refused owes what it would have given: the next one gives it.
    each_call_refused(
        "fetch_with_each_call_refused",
        |f| {
            f.refusing(true);
            assert!(!f.remove(B, MIB));
            f.refusing(false);
        },
        |f| {
            let _ = f.fetch(B);
        },
        |f, k, _| {
            let want = if k.is_some() { pages(MIB) } else { 0 };
            assert_eq!(f.fetch(B).unwrap(), want);
            assert_eq!(f.fetch(B).unwrap(), 0);
        },
    );
}
