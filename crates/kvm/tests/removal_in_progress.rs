//! The dirty-log methods called on another thread while a removal of the region is under way:
//! KVM deleted the slot, and a region listener after ours has not answered yet. The space still
//! holds the region, so the calls act on it as if made before the removal: a refused removal
//! brings the slot back with the flags they set, and no page is lost or reported twice. (Skipped
//! under Miri, which cannot `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES;
use memvisor_kvm::{DirtyBitmap, Error, MemorySlots};
use memvisor_space::{ListenerError, RegionEvent, RegionListener, RegionSpec};
use support::removal::{Answer, during_removal};
use support::{MIB, SetOnDrop, backed_space, entry, kvm_or_skip, page};
use vm_memory::GuestAddress;

#[test]
fn dirty_logging_during_a_removal_acts_on_the_region_the_space_still_holds() {
    let Some(kvm) = kvm_or_skip("dirty_logging_during_a_removal") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = backed_space(
        &vm,
        [
            RegionSpec::ram(GuestAddress(0), MIB),
            RegionSpec::ram(GuestAddress(4 * MIB), 2 * MIB),
        ],
    );
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    let base = GuestAddress(4 * MIB);
    let pages = 2 * MIB / page();
    slots.set_dirty_logging(base, true).unwrap();
    // Refused: the slot comes back, with the flags set meanwhile.
    let removed = during_removal(&space, base, 2 * MIB, Answer::Refuse, || {
        assert_eq!(slots.slot_at(base), None, "KVM deleted the slot");
        // KVM dropped its log with the slot: every page, once.
        let dirty = slots.fetch_dirty_log(base).unwrap();
        assert_eq!(dirty.count(), pages);
        let mut own = DirtyBitmap::new(base, 2 * MIB, page()).unwrap();
        slots.fetch_dirty_log_into(&mut own).unwrap();
        assert_eq!(own.count(), 0);
        // Off: no log to fetch, as KVM answers for a slot that does not log.
        slots.set_dirty_logging(base, false).unwrap();
        let err = slots.fetch_dirty_log(base).unwrap_err();
        assert!(matches!(err, Error::DirtyLog { .. }), "{err:?}");
        // On again: a clean start.
        slots.set_dirty_logging(base, true).unwrap();
        slots.set_dirty_logging(base, true).unwrap();
        // A bitmap of another size is still refused.
        let mut other = DirtyBitmap::new(base, MIB, page()).unwrap();
        let err = slots.fetch_dirty_log_into(&mut other).unwrap_err();
        assert!(matches!(err, Error::BitmapMismatch { .. }), "{err:?}");
    });
    assert!(!removed);
    assert_eq!(
        slots.registered(),
        [
            entry(&space, 0, 0, MIB, 0),
            entry(&space, 1, base.0, 2 * MIB, KVM_MEM_LOG_DIRTY_PAGES)
        ]
    );
    assert_eq!(slots.fetch_dirty_log(base).unwrap().count(), 0);

    // Refused again after logging went off meanwhile: back without logging.
    let removed = during_removal(&space, base, 2 * MIB, Answer::Refuse, || {
        slots.set_dirty_logging(base, false).unwrap();
    });
    assert!(!removed);
    assert_eq!(
        slots.registered(),
        [
            entry(&space, 0, 0, MIB, 0),
            entry(&space, 1, base.0, 2 * MIB, 0)
        ]
    );
    assert!(matches!(
        slots.fetch_dirty_log(base),
        Err(Error::DirtyLog { .. })
    ));

    // Accepted: the calls meanwhile act on the region until the removal is published.
    slots.set_dirty_logging(base, true).unwrap();
    let removed = during_removal(&space, base, 2 * MIB, Answer::Accept, || {
        assert_eq!(slots.fetch_dirty_log(base).unwrap().count(), pages);
        slots.set_dirty_logging(base, false).unwrap();
    });
    assert!(removed);
    assert_eq!(slots.registered(), [entry(&space, 0, 0, MIB, 0)]);
    for result in [
        slots.set_dirty_logging(base, true),
        slots.fetch_dirty_log(base).map(drop),
    ] {
        assert!(
            matches!(result, Err(Error::NotRegistered { base: b }) if b == base.0),
            "{result:?}"
        );
    }
}

#[test]
fn a_region_whose_removals_are_all_refused_is_never_missing_to_the_dirty_log_methods() {
    let Some(kvm) = kvm_or_skip("a_region_whose_removals_are_all_refused") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = backed_space(&vm, [RegionSpec::ram(GuestAddress(0), 2 * MIB)]);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    let base = GuestAddress(0);
    slots.set_dirty_logging(base, true).unwrap();
    let refusing: Arc<dyn RegionListener> =
        Arc::new(|_: &RegionEvent<'_>| -> Result<(), ListenerError> { Err("no".into()) });
    space.add_listener(Arc::clone(&refusing)).unwrap();
    let done = AtomicBool::new(false);
    let fetched = std::thread::scope(|s| {
        // Stops the fetcher and the toggler when this thread fails too, so that the failure
        // ends the scope instead of its waiting for them for ever.
        let stopping = SetOnDrop(&done);
        // Every removal is refused and undone: the space holds the region throughout, and
        // the calls on two other threads, some in the middle of a removal, all find it.
        let fetcher = s.spawn(|| {
            let mut fetched = 0;
            while !done.load(Ordering::Relaxed) {
                let dirty = slots.fetch_dirty_log(base).unwrap();
                assert!(dirty.count() == 0 || dirty.count() == dirty.pages());
                fetched += 1;
            }
            fetched
        });
        let toggler = s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                slots.set_dirty_logging(base, true).unwrap();
            }
        });
        for _ in 0..200 {
            assert!(space.remove_region(base, 2 * MIB).is_err());
        }
        drop(stopping);
        toggler.join().unwrap();
        fetcher.join().unwrap()
    });
    assert!(fetched > 0);
    assert_eq!(
        slots.registered(),
        [entry(&space, 0, 0, 2 * MIB, KVM_MEM_LOG_DIRTY_PAGES)]
    );
    space.remove_listener(&refusing).unwrap();
    space.remove_region(base, 2 * MIB).unwrap();
    assert!(slots.is_empty());
}
