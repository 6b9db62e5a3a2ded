//! Attaching, detaching and attaching again on the host's real KVM: one `MemorySlots` per VM,
//! the slot limit, and slot numbers reused. (Skipped under Miri, which cannot `ioctl`
//! `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd};
use std::sync::Arc;

use kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES;
use kvm_ioctls::VmFd;
use memvisor_kvm::{Error, MemorySlots, slot_limit};
use memvisor_space::{AddressSpace, RegionSpec};
use support::{MIB, backed, backed_space, entry, kvm_or_skip, layout};
use vm_memory::GuestAddress;

#[test]
fn attach_twice_to_one_vm_errors_and_first_keeps_following() {
    let Some(kvm) = kvm_or_skip("attach_twice_to_one_vm_errors_and_first_keeps_following") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = backed_space(&vm, [RegionSpec::ram(GuestAddress(0), MIB)]);
    let first = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    // The same space again, and another space: both refused while `first` lives.
    let err = MemorySlots::attach(Arc::clone(&vm), &space).unwrap_err();
    assert!(matches!(err, Error::AlreadyAttached { .. }), "{err}");
    let other = backed_space(&vm, [RegionSpec::ram(GuestAddress(8 * MIB), MIB)]);
    let err = MemorySlots::attach(Arc::clone(&vm), &other).unwrap_err();
    assert!(matches!(err, Error::AlreadyAttached { .. }), "{err}");
    assert_eq!(first.registered(), [entry(&space, 0, 0, MIB, 0)]);

    // The refused attaches left nothing behind: `first` follows removals and insertions.
    space.remove_region(GuestAddress(0), MIB).unwrap();
    assert!(first.is_empty());
    space.insert_region(backed(2 * MIB, MIB)).unwrap();
    assert_eq!(first.registered(), [entry(&space, 0, 2 * MIB, MIB, 0)]);
    // Another space's changes are not followed.
    other.insert_region(backed(16 * MIB, MIB)).unwrap();
    assert_eq!(first.len(), 1);
}

#[test]
fn attach_through_duplicated_vm_descriptor_errors_while_first_lives() {
    let Some(kvm) = kvm_or_skip("attach_through_duplicated_vm_descriptor_errors_while_first_lives")
    else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    // Another `VmFd` of the same VM: a duplicate of its descriptor (`dup`).
    let duplicate = |vm: &VmFd| {
        // SAFETY: `vm` keeps its descriptor open while it is borrowed here.
        let fd = unsafe { BorrowedFd::borrow_raw(vm.as_raw_fd()) }
            .try_clone_to_owned()
            .unwrap();
        // SAFETY: `fd` is a fresh descriptor of a KVM VM, owned by nothing else.
        Arc::new(unsafe { kvm.create_vmfd_from_rawfd(fd.into_raw_fd()) }.unwrap())
    };
    let twin = duplicate(&vm);
    let space = backed_space(&vm, [RegionSpec::ram(GuestAddress(0), MIB)]);
    let first = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    for other in [&twin, &duplicate(&twin)] {
        let err = MemorySlots::attach(Arc::clone(other), &space).unwrap_err();
        assert!(
            matches!(err, Error::AlreadyAttached { vm_fd } if vm_fd == other.as_raw_fd()),
            "{err}"
        );
    }
    // Refused before touching KVM: `first` still follows every change.
    assert_eq!(first.registered(), [entry(&space, 0, 0, MIB, 0)]);
    space.remove_region(GuestAddress(0), MIB).unwrap();
    assert!(first.is_empty());
    space.insert_region(backed(0, MIB)).unwrap();
    assert_eq!(first.registered(), [entry(&space, 0, 0, MIB, 0)]);

    // Once it is dropped, the VM is free through either descriptor; another VM never was.
    drop(first);
    let again = MemorySlots::attach(Arc::clone(&twin), &space).unwrap();
    assert_eq!(again.registered(), [entry(&space, 0, 0, MIB, 0)]);
    let err = MemorySlots::attach(Arc::clone(&vm), &space).unwrap_err();
    assert!(matches!(err, Error::AlreadyAttached { .. }), "{err}");
    let other_vm = Arc::new(kvm.create_vm().unwrap());
    let other_space = backed_space(&other_vm, [RegionSpec::ram(GuestAddress(0), MIB)]);
    let other = MemorySlots::attach(other_vm, &other_space).unwrap();
    assert_eq!(other.registered(), [entry(&other_space, 0, 0, MIB, 0)]);
    drop(again);
    drop(MemorySlots::attach(vm, &space).unwrap());
}

#[test]
fn attach_after_drop_registers_again_with_fresh_flags() {
    let Some(kvm) = kvm_or_skip("attach_after_drop_registers_again_with_fresh_flags") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = backed_space(
        &vm,
        [
            RegionSpec::ram(GuestAddress(0), MIB),
            RegionSpec::ram(GuestAddress(4 * MIB), MIB),
        ],
    );
    let first = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    first.set_dirty_logging(GuestAddress(0), true).unwrap();
    assert_eq!(first.registered()[0].flags, KVM_MEM_LOG_DIRTY_PAGES);
    drop(first);
    // The same VM again, twice over: each attach starts from the space, without logging.
    for _ in 0..2 {
        let again = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
        assert_eq!(
            again.registered(),
            [
                entry(&space, 0, 0, MIB, 0),
                entry(&space, 1, 4 * MIB, MIB, 0)
            ]
        );
        assert!(matches!(
            again.fetch_dirty_log(GuestAddress(0)),
            Err(Error::DirtyLog {
                slot: 0,
                base: 0,
                ..
            })
        ));
        space.remove_region(GuestAddress(4 * MIB), MIB).unwrap();
        space.insert_region(backed(4 * MIB, MIB)).unwrap();
        assert_eq!(
            again.registered(),
            [
                entry(&space, 0, 0, MIB, 0),
                entry(&space, 1, 4 * MIB, MIB, 0)
            ]
        );
    }
}

#[test]
fn one_space_attached_to_two_vms_keeps_both_in_step() {
    let Some(kvm) = kvm_or_skip("one_space_attached_to_two_vms_keeps_both_in_step") else {
        return;
    };
    let vm_a = Arc::new(kvm.create_vm().unwrap());
    let vm_b = Arc::new(kvm.create_vm().unwrap());
    let (space, _) = AddressSpace::builder(layout())
        .slots(slot_limit(&vm_a).min(slot_limit(&vm_b)))
        .region(RegionSpec::ram(GuestAddress(0), MIB))
        .back()
        .unwrap();
    let a = MemorySlots::attach(Arc::clone(&vm_a), &space).unwrap();
    let b = MemorySlots::attach(Arc::clone(&vm_b), &space).unwrap();
    space.insert_region(backed(2 * MIB, MIB)).unwrap();
    space.remove_region(GuestAddress(0), MIB).unwrap();
    assert_eq!(a.registered(), [entry(&space, 1, 2 * MIB, MIB, 0)]);
    assert_eq!(b.registered(), a.registered());
    drop(a);
    space.insert_region(backed(0, MIB)).unwrap();
    assert_eq!(
        b.registered(),
        [
            entry(&space, 0, 0, MIB, 0),
            entry(&space, 1, 2 * MIB, MIB, 0)
        ]
    );
}
