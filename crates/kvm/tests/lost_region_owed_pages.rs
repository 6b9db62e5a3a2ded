//! The pages a removal owes when KVM refuses to take the slot back after a later listener
//! refused the removal (the region is out of sync: the space holds it, KVM does not). A
//! real-mode guest writes a page before the removal; the fetches while the region is out of
//! sync, and after it is mended by the undo of a later refused removal, must give that page
//! (every page of the region, once), in KVM's default mode and with manual dirty-log
//! protection. (Skipped under Miri, which cannot `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;

use std::sync::Arc;

use kvm_bindings::{KVM_MEM_LOG_DIRTY_PAGES, kvm_userspace_memory_region};
use kvm_ioctls::VmFd;
use memvisor_kvm::{Error, MemorySlots};
use memvisor_space::{AddressSpace, Region};
use support::real_mode::{DATA, DATA_SIZE, guest, run_to_hlt, vm};
use support::removal::{Answer, during_removal};
use support::{backed, kvm_or_skip, page};
use vm_memory::{Bytes, GuestAddress};

/// The slot number of the memory a later listener registers over [`DATA`].
const FOREIGN_SLOT: u32 = 100;

/// Registers `memory` over [`DATA`] under [`FOREIGN_SLOT`], or (`None`) deletes it.
///
/// # Safety
/// `memory` must stay mapped while KVM holds the slot.
unsafe fn foreign(vm: &VmFd, memory: Option<&Region>) {
    let mem = kvm_userspace_memory_region {
        slot: FOREIGN_SLOT,
        flags: 0,
        guest_phys_addr: DATA,
        memory_size: if memory.is_some() { DATA_SIZE } else { 0 },
        userspace_addr: memory.map_or(0, |m| m.host_ptr().unwrap() as u64),
    };
    // SAFETY: as the caller promises.
    unsafe { vm.set_user_memory_region(mem) }.unwrap();
}

/// The pages of [`DATA`] in the next fetch.
fn fetched(slots: &MemorySlots) -> Vec<GuestAddress> {
    slots
        .fetch_dirty_log(GuestAddress(DATA))
        .unwrap()
        .dirty_pages()
        .collect()
}

/// Every page of [`DATA`].
fn every_page() -> Vec<GuestAddress> {
    (DATA..DATA + DATA_SIZE)
        .step_by(usize::try_from(page()).unwrap())
        .map(GuestAddress)
        .collect()
}

/// Removes [`DATA`] with a later listener that registers `memory` over it (so KVM refuses to
/// take the slot back) and refuses: the region is out of sync afterwards.
fn lose(vm: &Arc<VmFd>, space: &AddressSpace, slots: &MemorySlots, memory: &Arc<Region>) {
    let (v, m) = (Arc::clone(vm), Arc::clone(memory));
    let register = move || {
        // SAFETY: `memory` outlives the slot, which the test deletes before dropping it.
        unsafe { foreign(&v, Some(&m)) };
    };
    let removed = during_removal(
        space,
        GuestAddress(DATA),
        DATA_SIZE,
        Answer::RefuseAfter(Box::new(register)),
        || {},
    );
    assert!(!removed);
    assert_eq!(slots.out_of_sync(), [(1, DATA, DATA_SIZE)]);
    assert_eq!(slots.slot_at(GuestAddress(DATA)), None);
}

/// The foreign memory leaves KVM, and a removal refused by a later listener is undone by
/// inserting the region again, which KVM takes now.
fn mend(vm: &VmFd, space: &AddressSpace, slots: &MemorySlots) {
    // SAFETY: deleting a slot refers to no memory.
    unsafe { foreign(vm, None) };
    let removed = during_removal(space, GuestAddress(DATA), DATA_SIZE, Answer::Refuse, || {});
    assert!(!removed);
    assert_eq!(slots.out_of_sync(), []);
}

#[test]
fn fetch_of_a_region_out_of_sync_gives_every_page_once_and_then_nothing() {
    let test = "fetch_of_a_region_out_of_sync_gives_every_page_once";
    let Some(kvm) = kvm_or_skip(test) else {
        return;
    };
    for manual in [false, true] {
        let Some(vm) = vm(&kvm, manual, test) else {
            continue;
        };
        let (space, slots, mut vcpu) = guest(&vm);
        let memory = backed(0, DATA_SIZE);
        // The guest writes 0x9000, and no fetch follows before KVM deletes the slot.
        run_to_hlt(&mut vcpu);
        lose(&vm, &space, &slots, &memory);
        // KVM dropped the log with the slot: the region's next fetch gives every page once.
        let first = fetched(&slots);
        assert_eq!(first, every_page(), "manual {manual}");
        assert_eq!(fetched(&slots), [], "manual {manual}");
        // The guest's next write (0xa000) lands in the other memory, not the region's: the
        // region's log is rightly clean.
        run_to_hlt(&mut vcpu);
        let mut byte = [0u8];
        space
            .memory()
            .read_slice(&mut byte, GuestAddress(0xa000))
            .unwrap();
        assert_eq!(byte, [0], "manual {manual}");
        assert_eq!(fetched(&slots), [], "manual {manual}");
        // Mended: the slot comes back logging, and owes nothing (the fetch above gave it).
        mend(&vm, &space, &slots);
        assert_eq!(
            slots.registered()[1],
            (1, DATA, DATA_SIZE, KVM_MEM_LOG_DIRTY_PAGES),
            "manual {manual}"
        );
        assert_eq!(fetched(&slots), [], "manual {manual}");
        // And logs the guest's next write (0xb000).
        run_to_hlt(&mut vcpu);
        assert!(
            fetched(&slots).contains(&GuestAddress(0xb000)),
            "manual {manual}"
        );
        drop(slots);
        drop(vm);
        drop(memory);
    }
}

#[test]
fn region_mended_without_a_fetch_meanwhile_gives_every_page_in_its_next_fetch() {
    let test = "region_mended_without_a_fetch_meanwhile";
    let Some(kvm) = kvm_or_skip(test) else {
        return;
    };
    for manual in [false, true] {
        let Some(vm) = vm(&kvm, manual, test) else {
            continue;
        };
        let (space, slots, mut vcpu) = guest(&vm);
        let memory = backed(0, DATA_SIZE);
        run_to_hlt(&mut vcpu);
        lose(&vm, &space, &slots, &memory);
        // Logging turned on again while out of sync keeps what is owed.
        slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
        // A removal refused while KVM still refuses the slot: still owed.
        let removed = during_removal(&space, GuestAddress(DATA), DATA_SIZE, Answer::Refuse, || {});
        assert!(!removed);
        assert_eq!(slots.out_of_sync(), [(1, DATA, DATA_SIZE)]);
        mend(&vm, &space, &slots);
        assert_eq!(
            slots.registered()[1],
            (1, DATA, DATA_SIZE, KVM_MEM_LOG_DIRTY_PAGES),
            "manual {manual}"
        );
        let after = fetched(&slots);
        assert!(after.contains(&GuestAddress(0x9000)), "manual {manual}");
        assert_eq!(after, every_page(), "manual {manual}");
        assert_eq!(fetched(&slots), [], "manual {manual}");
        drop(slots);
        drop(vm);
        drop(memory);
    }
}

#[test]
fn logging_turned_off_while_out_of_sync_drops_what_is_owed_and_is_off_when_mended() {
    let test = "logging_turned_off_while_out_of_sync";
    let Some(kvm) = kvm_or_skip(test) else {
        return;
    };
    let Some(vm) = vm(&kvm, false, test) else {
        return;
    };
    let (space, slots, mut vcpu) = guest(&vm);
    let memory = backed(0, DATA_SIZE);
    run_to_hlt(&mut vcpu);
    lose(&vm, &space, &slots, &memory);
    slots.set_dirty_logging(GuestAddress(DATA), false).unwrap();
    // Not logging: the answer KVM gives a slot that does not log.
    let err = slots.fetch_dirty_log(GuestAddress(DATA)).unwrap_err();
    assert!(
        matches!(&err, Error::DirtyLog { slot: 1, base, source } if *base == DATA && source.errno() == libc::ENOENT),
        "{err:?}"
    );
    mend(&vm, &space, &slots);
    assert_eq!(slots.registered()[1], (1, DATA, DATA_SIZE, 0));
    // Turned on again, logging starts clean.
    slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
    assert_eq!(fetched(&slots), []);
    drop(slots);
    drop(vm);
    drop(memory);
}
