//! KVM slots of the VMM's own beside the space's: a number both use is refused by KVM
//! (`EINVAL`: a live slot's memory cannot change) at attach and at a plug, the change is rolled
//! back and the VMM's slot is left as it was, also when the slots are dropped; numbers from the
//! space's slot count up to the VM's limit are never the space's, so slots there coexist with
//! every plug. (Skipped under Miri, which cannot `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;
use std::sync::Arc;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use memvisor_kvm::{Error, MemorySlots, slot_limit};
use memvisor_space::{AddressSpace, Region, RegionSpec, WindowKind};
use support::{MIB, backed, backed_space, entry, kvm_or_skip, kvm_refuses_probe, layout, vm};
use vm_memory::GuestAddress;

/// Where the VMM's own memory goes: in the 32-bit device window, where no region of the
/// tests is.
const OWN: u64 = 0xd000_0000;

/// Registers `memory` under `slot` at [`OWN`].
fn register_own(vm: &VmFd, slot: u32, memory: &Region) -> kvm_userspace_memory_region {
    let mem = kvm_userspace_memory_region {
        slot,
        flags: 0,
        guest_phys_addr: OWN,
        memory_size: memory.size(),
        userspace_addr: memory.host_ptr().unwrap() as u64,
    };
    // SAFETY: `memory` stays mapped until the slot is deleted at the end of the test.
    unsafe { vm.set_user_memory_region(mem) }.unwrap();
    mem
}

/// Whether KVM still holds the VMM's slot: its number and its place are both taken.
fn own_slot_held(vm: &VmFd, slot: u32) -> bool {
    kvm_refuses_probe(vm, slot, 0xc000_0000) && kvm_refuses_probe(vm, slot + 1, OWN)
}

fn delete(vm: &VmFd, mut mem: kvm_userspace_memory_region) {
    mem.memory_size = 0;
    // SAFETY: deleting a slot refers to no memory.
    unsafe { vm.set_user_memory_region(mem) }.unwrap();
}

fn is_einval_at(err: &Error, slot: u32) -> bool {
    matches!(err, Error::SetMemoryRegion { slot: s, source, .. }
        if *s == slot && source.errno() == libc::EINVAL)
}

#[test]
fn own_slot_under_a_space_number_is_refused_and_kept() {
    let Some(kvm) = kvm_or_skip("own_slot_under_a_space_number_is_refused_and_kept") else {
        return;
    };
    let vm = vm(&kvm);
    let own = backed(0, 2 * MIB);
    let mem = register_own(&vm, 1, &own);

    // At attach: the second region gets number 1.
    let two = backed_space(
        &vm,
        [
            RegionSpec::ram(GuestAddress(0), 2 * MIB),
            RegionSpec::ram(GuestAddress(1 << 30), 2 * MIB),
        ],
    );
    let err = MemorySlots::attach(Arc::clone(&vm), &two).unwrap_err();
    assert!(is_einval_at(&err, 1), "{err:?}");
    assert!(own_slot_held(&vm, 1));
    assert!(
        !kvm_refuses_probe(&vm, 0, 0xc000_0000),
        "slot 0 rolled back"
    );

    // At a plug: the plugged region gets number 1.
    let space = backed_space(&vm, [RegionSpec::ram(GuestAddress(0), 2 * MIB)]);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    let base = space
        .snapshot()
        .placer()
        .unwrap()
        .place(WindowKind::Hotplug, 2 * MIB, 2 * MIB, "dimm0")
        .unwrap()
        .start();
    let err = space
        .plug(RegionSpec::ram(base, 2 * MIB).with_hotplug(true))
        .unwrap_err();
    let source = std::error::Error::source(&err).unwrap();
    assert!(is_einval_at(source.downcast_ref().unwrap(), 1), "{err:?}");
    assert_eq!(space.snapshot().regions().len(), 1);
    assert_eq!(slots.registered(), [entry(&space, 0, 0, 2 * MIB, 0)]);
    assert!(own_slot_held(&vm, 1));
    drop(slots);
    assert!(own_slot_held(&vm, 1));
    assert!(
        !kvm_refuses_probe(&vm, 0, 0xc000_0000),
        "slot 0 deleted on drop"
    );
    delete(&vm, mem);
}

#[test]
fn own_slots_above_the_space_count_coexist_with_plugs() {
    let Some(kvm) = kvm_or_skip("own_slots_above_the_space_count_coexist_with_plugs") else {
        return;
    };
    let vm = vm(&kvm);
    // The space takes numbers 0..2; the VMM keeps 2 up to the VM's limit.
    let space = AddressSpace::builder(layout())
        .slots(2)
        .region(RegionSpec::ram(GuestAddress(0), 2 * MIB))
        .back()
        .unwrap()
        .0;
    let own = backed(0, 2 * MIB);
    let own_slot = slot_limit(&vm) - 1;
    let mem = register_own(&vm, own_slot, &own);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    let plug = |at: u64| space.plug(RegionSpec::ram(GuestAddress(at), 2 * MIB).with_hotplug(true));
    let (first, _) = plug(4 << 30).unwrap();
    assert_eq!(slots.slot_at(first.base()), Some(1));
    // No number is left: the space refuses before KVM hears of it.
    assert!(matches!(
        plug((4 << 30) + 2 * MIB),
        Err(memvisor_space::Error::NoSlotNumber { .. })
    ));
    space.remove_region(first.base(), first.size()).unwrap();
    drop(slots);
    assert!(kvm_refuses_probe(&vm, own_slot, 0xc000_0000));
    delete(&vm, mem);
}
