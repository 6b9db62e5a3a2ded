//! The pages a removal owes (KVM dropped the slot's log with the slot, and a vCPU may have
//! written any page right up to the deletion) when logging is turned on again during the
//! removal or after its undo, on a VM in KVM's default mode and on one with manual dirty-log
//! protection; and a guest write while the removal is under way, which no log can hold since
//! KVM has no slot there. A real-mode guest writes the pages. (Skipped under Miri, which
//! cannot `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;
use std::sync::Arc;

use kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES;
use kvm_ioctls::VcpuExit;
use memvisor_kvm::MemorySlots;
use memvisor_space::{ListenerError, RegionEvent, RegionListener};
use support::real_mode::{DATA, DATA_SIZE, guest, in_both_modes, run_to_hlt, vm};
use support::removal::{Answer, during_removal};
use support::{entry, kvm_or_skip};
use vm_memory::{Bytes, GuestAddress};

/// The pages of [`DATA`] in the next fetch.
fn fetched(slots: &MemorySlots) -> Vec<GuestAddress> {
    slots
        .fetch_dirty_log(GuestAddress(DATA))
        .unwrap()
        .dirty_pages()
        .collect()
}

/// Whether the page at `page` is in `pages`.
fn has(pages: &[GuestAddress], page: u64) -> bool {
    pages.contains(&GuestAddress(page))
}

#[test]
fn logging_turned_on_again_during_a_refused_removal_keeps_the_pages_it_owes() {
    let test = "logging_turned_on_again_during_a_refused_removal";
    in_both_modes(test, |vm, manual| {
        let (space, slots, mut vcpu) = guest(&vm);
        // The guest writes a page, and no fetch follows before KVM deletes the slot.
        run_to_hlt(&mut vcpu);
        let removed = during_removal(
            &space,
            GuestAddress(DATA),
            DATA_SIZE,
            Answer::Refuse,
            || {
                // On already: as made before the removal, this is the call that keeps KVM's
                // log with manual protection, and the log is the one KVM dropped.
                slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
            },
        );
        assert!(!removed);
        assert_eq!(
            slots.registered()[1],
            entry(&space, 1, DATA, DATA_SIZE, KVM_MEM_LOG_DIRTY_PAGES)
        );
        let after = fetched(&slots);
        assert!(has(&after, 0x9000), "manual {manual}: {after:?}");
        // Every page once (KVM cannot say which were written), then nothing.
        assert_eq!(after.len() as u64, DATA_SIZE / support::page());
        assert_eq!(fetched(&slots), [], "manual {manual}");
        // Off and on again during a removal does start clean: KVM drops its log with the
        // flag in both modes.
        run_to_hlt(&mut vcpu);
        let removed = during_removal(
            &space,
            GuestAddress(DATA),
            DATA_SIZE,
            Answer::Refuse,
            || {
                slots.set_dirty_logging(GuestAddress(DATA), false).unwrap();
                slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
            },
        );
        assert!(!removed);
        assert_eq!(fetched(&slots), [], "manual {manual}");
    });
}

#[test]
fn logging_turned_on_again_after_an_undone_removal_keeps_the_pages_it_owes() {
    let test = "logging_turned_on_again_after_an_undone_removal";
    in_both_modes(test, |vm, manual| {
        let (space, slots, mut vcpu) = guest(&vm);
        run_to_hlt(&mut vcpu);
        let refusing: Arc<dyn RegionListener> =
            Arc::new(|_: &RegionEvent<'_>| -> Result<(), ListenerError> { Err("no".into()) });
        space.add_listener(Arc::clone(&refusing)).unwrap();
        assert!(space.remove_region(GuestAddress(DATA), DATA_SIZE).is_err());
        space.remove_listener(&refusing).unwrap();
        // The slot is back, and turned on again while on before the next fetch.
        slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
        let after = fetched(&slots);
        assert!(has(&after, 0x9000), "manual {manual}: {after:?}");
        assert_eq!(after.len() as u64, DATA_SIZE / support::page());
        if !manual {
            assert_eq!(fetched(&slots), []);
        }
    });
}

#[test]
fn a_guest_write_while_a_removal_is_under_way_exits_and_reaches_no_page_of_the_region() {
    let test = "a_guest_write_while_a_removal_is_under_way";
    let Some(kvm) = kvm_or_skip(test) else {
        return;
    };
    let Some(vm) = vm(&kvm, false, test) else {
        return;
    };
    let (space, slots, mut vcpu) = guest(&vm);
    let mut reported = Vec::new();
    run_to_hlt(&mut vcpu);
    let removed = during_removal(
        &space,
        GuestAddress(DATA),
        DATA_SIZE,
        Answer::Refuse,
        || {
            // KVM has no slot at the region: the guest's write exits to the VMM, and the
            // memory is not written, so the answer from the record (KVM's log is gone) can
            // miss no write made since the deletion.
            match vcpu.run().unwrap() {
                VcpuExit::MmioWrite(0xa000, [1]) => {}
                exit => panic!("unexpected exit {exit:?}"),
            }
            reported.extend(fetched(&slots));
            assert_eq!(fetched(&slots), []);
        },
    );
    assert!(!removed);
    let mut byte = [0u8];
    space
        .memory()
        .read_slice(&mut byte, GuestAddress(0xa000))
        .unwrap();
    assert_eq!(byte, [0], "the write exited; it reached no memory");
    assert!(has(&reported, 0x9000), "{reported:?}");
    assert_eq!(fetched(&slots), []);
    // The vCPU goes on past the write the VMM took, and writes the next page into the slot
    // that came back.
    run_to_hlt(&mut vcpu);
    run_to_hlt(&mut vcpu);
    assert_eq!(fetched(&slots), [GuestAddress(0xb000)]);
}
