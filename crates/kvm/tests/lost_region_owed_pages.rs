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
use memvisor_kvm::{DirtyBitmap, Error, MemorySlots};
use memvisor_space::{AddressSpace, Region};
use support::real_mode::{DATA, DATA_SIZE, guest, in_both_modes, run_to_hlt, vm};
use support::removal::{Answer, during_removal};
use support::{backed, entry, kvm_or_skip, lost, page};
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
    assert_eq!(slots.out_of_sync(), [lost(1, DATA, DATA_SIZE)]);
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
    in_both_modes(test, |vm, manual| {
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
            entry(&space, 1, DATA, DATA_SIZE, KVM_MEM_LOG_DIRTY_PAGES),
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
    });
}

#[test]
fn region_mended_without_a_fetch_meanwhile_gives_every_page_in_its_next_fetch() {
    let test = "region_mended_without_a_fetch_meanwhile";
    in_both_modes(test, |vm, manual| {
        let (space, slots, mut vcpu) = guest(&vm);
        let memory = backed(0, DATA_SIZE);
        run_to_hlt(&mut vcpu);
        lose(&vm, &space, &slots, &memory);
        // Logging turned on again while out of sync keeps what is owed.
        slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
        // A removal refused while KVM still refuses the slot: still owed.
        let removed = during_removal(&space, GuestAddress(DATA), DATA_SIZE, Answer::Refuse, || {});
        assert!(!removed);
        assert_eq!(slots.out_of_sync(), [lost(1, DATA, DATA_SIZE)]);
        mend(&vm, &space, &slots);
        assert_eq!(
            slots.registered()[1],
            entry(&space, 1, DATA, DATA_SIZE, KVM_MEM_LOG_DIRTY_PAGES),
            "manual {manual}"
        );
        let after = fetched(&slots);
        assert!(after.contains(&GuestAddress(0x9000)), "manual {manual}");
        assert_eq!(after, every_page(), "manual {manual}");
        assert_eq!(fetched(&slots), [], "manual {manual}");
        drop(slots);
        drop(vm);
        drop(memory);
    });
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
    assert_eq!(slots.registered()[1], entry(&space, 1, DATA, DATA_SIZE, 0));
    // Turned on again, logging starts clean.
    slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
    assert_eq!(fetched(&slots), []);
    drop(slots);
    drop(vm);
    drop(memory);
}

#[test]
fn vmm_writes_to_a_region_out_of_sync_come_back_only_through_the_bitmap_marking_them() {
    let test = "vmm_writes_to_a_region_out_of_sync";
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
    // The VMM writes the region through the space's mapping (as a device model's DMA does, or
    // the VMM completing a vCPU's MMIO exit there) and marks what it wrote.
    let vmm_write = |page_index: u64| {
        let addr = GuestAddress(DATA + page_index * page());
        space.memory().write_obj(0x5a5a_u64, addr).unwrap();
        let mut bitmap = DirtyBitmap::new(GuestAddress(DATA), DATA_SIZE, page()).unwrap();
        bitmap.mark(addr, 8);
        (addr, bitmap)
    };
    // The first fetch gives what the removal owes (every page) on top of the VMM's marks.
    let (_, mut first) = vmm_write(3);
    slots.fetch_dirty_log_into(&mut first).unwrap();
    assert_eq!(first.dirty_pages().collect::<Vec<_>>(), every_page());
    // After it, exactly the VMM's page: KVM's log never holds the VMM's writes, and the
    // marks are kept.
    let (addr, mut second) = vmm_write(5);
    slots.fetch_dirty_log_into(&mut second).unwrap();
    assert_eq!(second.dirty_pages().collect::<Vec<_>>(), [addr]);
    assert_eq!(fetched(&slots), []);
    // Not logging: refused as KVM refuses, and the VMM's marks are as they were.
    slots.set_dirty_logging(GuestAddress(DATA), false).unwrap();
    let (addr, mut third) = vmm_write(6);
    let err = slots.fetch_dirty_log_into(&mut third).unwrap_err();
    assert!(matches!(err, Error::DirtyLog { slot: 1, .. }), "{err:?}");
    assert_eq!(third.dirty_pages().collect::<Vec<_>>(), [addr]);
    // SAFETY: deleting a slot refers to no memory.
    unsafe { foreign(&vm, None) };
    drop(slots);
    drop(vm);
    drop(memory);
}

/// A real-mode vCPU of `vm` at the start of the program [`guest`] loaded.
fn second_vcpu(vm: &VmFd) -> kvm_ioctls::VcpuFd {
    let vcpu = vm.create_vcpu(0).unwrap();
    let mut sregs = vcpu.get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    sregs.ds.base = 0;
    sregs.ds.selector = 0;
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = support::real_mode::CODE;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();
    vcpu
}

#[test]
fn region_out_of_sync_in_one_vm_is_logged_by_the_other_vm_of_its_space() {
    let test = "region_out_of_sync_in_one_vm_is_logged_by_the_other";
    let Some(kvm) = kvm_or_skip(test) else {
        return;
    };
    let (Some(vm), Some(other)) = (vm(&kvm, false, test), vm(&kvm, false, test)) else {
        return;
    };
    let (space, slots, _) = guest(&vm);
    let other_slots = MemorySlots::attach(Arc::clone(&other), &space).unwrap();
    other_slots
        .set_dirty_logging(GuestAddress(DATA), true)
        .unwrap();
    let mut vcpu = second_vcpu(&other);
    let memory = backed(0, DATA_SIZE);
    // The removal is refused after memory of the later listener went over the range in the
    // first VM only: the second VM takes its slot back, the first does not.
    lose(&vm, &space, &slots, &memory);
    assert_eq!(other_slots.out_of_sync(), []);
    let other_fetch = || -> Vec<GuestAddress> {
        other_slots
            .fetch_dirty_log(GuestAddress(DATA))
            .unwrap()
            .dirty_pages()
            .collect()
    };
    // Each VM owes every page once (KVM dropped both logs with the slots).
    assert_eq!(fetched(&slots), every_page());
    assert_eq!(other_fetch(), every_page());
    // The second VM's guest writes the region's memory (0x9000, then 0xa000): its own slots
    // log it; the first VM's guest wrote nothing there, and its log says so.
    for at in [0x9000, 0xa000] {
        run_to_hlt(&mut vcpu);
        let mut byte = [0u8];
        space
            .memory()
            .read_slice(&mut byte, GuestAddress(at))
            .unwrap();
        assert_eq!(byte, [1]);
        assert_eq!(other_fetch(), [GuestAddress(at)]);
        assert_eq!(fetched(&slots), []);
    }
    // SAFETY: deleting a slot refers to no memory.
    unsafe { foreign(&vm, None) };
    drop((slots, other_slots));
    drop((vm, other));
    drop(memory);
}
