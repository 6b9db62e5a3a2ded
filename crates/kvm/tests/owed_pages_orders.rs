//! The pages a removal owes, in more orders of the calls around it: a removal refused twice
//! before a fetch, logging turned off during a removal and on again (the slot that comes back
//! logs the guest's next writes), and a removal that goes through (or one undone, then one
//! that goes through) leaving nothing owed to the next region under the same slot number, be
//! it the same region inserted again or another one. On a VM in KVM's default mode and on
//! one with manual dirty-log protection; a real-mode guest writes the pages. (Skipped under
//! Miri, which cannot `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;
use std::sync::Arc;

use kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES;
use memvisor_kvm::{Error, MemorySlots};
use memvisor_space::{AddressSpace, ListenerError, RegionEvent, RegionListener};
use support::real_mode::{DATA, DATA_SIZE, guest, in_both_modes, run_to_hlt};
use support::removal::{Answer, during_removal};
use support::{backed, entry};
use vm_memory::GuestAddress;

/// Another region, given slot 1 once [`DATA`] has left.
const OTHER: u64 = 0x2_0000;

/// The pages in the next fetch of the region at `base`.
fn fetched(slots: &MemorySlots, base: u64) -> Vec<u64> {
    slots
        .fetch_dirty_log(GuestAddress(base))
        .unwrap()
        .dirty_pages()
        .map(|page| page.0)
        .collect()
}

/// Every page of [`DATA`].
fn every_page() -> Vec<u64> {
    (DATA..DATA + DATA_SIZE).step_by(0x1000).collect()
}

/// Removes [`DATA`] with a later listener that refuses it, and checks it was refused.
fn refused_removal(space: &AddressSpace) {
    let refusing: Arc<dyn RegionListener> =
        Arc::new(|_: &RegionEvent<'_>| -> Result<(), ListenerError> { Err("no".into()) });
    space.add_listener(Arc::clone(&refusing)).unwrap();
    assert!(space.remove_region(GuestAddress(DATA), DATA_SIZE).is_err());
    space.remove_listener(&refusing).unwrap();
}

#[test]
fn a_removal_refused_twice_before_a_fetch_still_owes_every_page() {
    let test = "a_removal_refused_twice_before_a_fetch";
    in_both_modes(test, |vm, manual| {
        let (space, slots, mut vcpu) = guest(&vm);
        // A write, a removal refused with logging turned on again meanwhile, another write
        // into the slot that came back, and the same again: no fetch in between.
        run_to_hlt(&mut vcpu);
        let on_again = || slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
        assert!(!during_removal(
            &space,
            GuestAddress(DATA),
            DATA_SIZE,
            Answer::Refuse,
            on_again
        ));
        run_to_hlt(&mut vcpu);
        assert!(!during_removal(
            &space,
            GuestAddress(DATA),
            DATA_SIZE,
            Answer::Refuse,
            on_again
        ));
        // And once more after the undo, on the slot KVM has.
        slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
        assert_eq!(fetched(&slots, DATA), every_page(), "manual {manual}");
        // A fetch during the first removal gives every page once; a write after its undo,
        // then a second refused removal, owes every page again.
        run_to_hlt(&mut vcpu);
        let mut during = Vec::new();
        assert!(!during_removal(
            &space,
            GuestAddress(DATA),
            DATA_SIZE,
            Answer::Refuse,
            || during = fetched(&slots, DATA),
        ));
        assert_eq!(during, every_page(), "manual {manual}");
        if !manual {
            assert_eq!(fetched(&slots, DATA), [] as [u64; 0]);
        }
        run_to_hlt(&mut vcpu);
        refused_removal(&space);
        slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
        assert_eq!(fetched(&slots, DATA), every_page(), "manual {manual}");
        if !manual {
            assert_eq!(fetched(&slots, DATA), [] as [u64; 0]);
        }
    });
}

#[test]
fn logging_turned_off_during_a_removal_and_on_again_logs_the_next_writes() {
    let test = "logging_turned_off_during_a_removal_and_on_again";
    in_both_modes(test, |vm, manual| {
        let (space, slots, mut vcpu) = guest(&vm);
        run_to_hlt(&mut vcpu);
        // Off drops the log (as KVM drops it with the flag), on again starts clean: the slot
        // comes back logging, and nothing is owed.
        assert!(!during_removal(
            &space,
            GuestAddress(DATA),
            DATA_SIZE,
            Answer::Refuse,
            || {
                slots.set_dirty_logging(GuestAddress(DATA), false).unwrap();
                assert!(matches!(
                    slots.fetch_dirty_log(GuestAddress(DATA)),
                    Err(Error::DirtyLog { .. })
                ));
                slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
                slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
                assert_eq!(fetched(&slots, DATA), [] as [u64; 0]);
            },
        ));
        assert_eq!(
            slots.registered()[1],
            entry(&space, 1, DATA, DATA_SIZE, KVM_MEM_LOG_DIRTY_PAGES)
        );
        assert_eq!(fetched(&slots, DATA), [] as [u64; 0], "manual {manual}");
        // The guest's writes into the slot that came back are logged.
        run_to_hlt(&mut vcpu);
        assert_eq!(fetched(&slots, DATA), [0xa000], "manual {manual}");
        run_to_hlt(&mut vcpu);
        let want: &[u64] = if manual { &[0xa000, 0xb000] } else { &[0xb000] };
        assert_eq!(fetched(&slots, DATA), want, "manual {manual}");
    });
}

#[test]
fn pages_owed_stay_with_their_region_not_its_slot_number() {
    let test = "pages_owed_stay_with_their_region";
    in_both_modes(test, |vm, manual| {
        let (space, slots, mut vcpu) = guest(&vm);
        run_to_hlt(&mut vcpu);
        // An undone removal owes every page; then the region leaves for good, unfetched.
        refused_removal(&space);
        slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
        let data = space.remove_region(GuestAddress(DATA), DATA_SIZE).unwrap();
        // Another region under its number: logging starts clean there.
        space.insert_region(backed(OTHER, DATA_SIZE)).unwrap();
        assert_eq!(slots.registered()[1].slot, 1);
        assert_eq!(slots.registered()[1].guest.start().0, OTHER);
        slots.set_dirty_logging(GuestAddress(OTHER), true).unwrap();
        assert_eq!(fetched(&slots, OTHER), [] as [u64; 0], "manual {manual}");
        space.remove_region(GuestAddress(OTHER), DATA_SIZE).unwrap();
        // The same region inserted again under the number is a fresh slot: not logging, and
        // clean once logging is on.
        space.insert_region(Arc::clone(&data)).unwrap();
        assert_eq!(slots.registered()[1], entry(&space, 1, DATA, DATA_SIZE, 0));
        assert!(matches!(
            slots.fetch_dirty_log(GuestAddress(DATA)),
            Err(Error::DirtyLog { .. })
        ));
        slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
        assert_eq!(fetched(&slots, DATA), [] as [u64; 0], "manual {manual}");
        // A removal that goes through while logging is turned on again during it: what it
        // owed goes with it, and the next region under the number owes nothing.
        assert!(during_removal(
            &space,
            GuestAddress(DATA),
            DATA_SIZE,
            Answer::Accept,
            || slots.set_dirty_logging(GuestAddress(DATA), true).unwrap(),
        ));
        space.insert_region(backed(OTHER, DATA_SIZE)).unwrap();
        assert_eq!(slots.registered()[1].guest.start().0, OTHER);
        slots.set_dirty_logging(GuestAddress(OTHER), true).unwrap();
        assert_eq!(fetched(&slots, OTHER), [] as [u64; 0], "manual {manual}");
        space.remove_region(GuestAddress(OTHER), DATA_SIZE).unwrap();
        // And the region itself, inserted again, owes nothing either.
        space.insert_region(data).unwrap();
        slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
        assert_eq!(fetched(&slots, DATA), [] as [u64; 0], "manual {manual}");
    });
}
