//! One address space attached to two VMs, on the host's real KVM: a change one VM's KVM
//! refuses is undone in the other, and a change a later listener refuses is undone in both,
//! each slot back with its flags. What each KVM holds is asked of KVM itself. (Skipped under
//! Miri, which cannot `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;
use std::sync::Arc;

use kvm_bindings::{KVM_MEM_LOG_DIRTY_PAGES, kvm_userspace_memory_region};
use kvm_ioctls::VmFd;
use memvisor_kvm::{Error, MemorySlots, slot_limit};
use memvisor_space::{AddressSpace, RegionEvent, RegionListener, RegionSpec};
use support::{MIB, backed, entry, kvm_or_skip, kvm_refuses_probe, layout};
use vm_memory::GuestAddress;

/// The slot numbers below 8 KVM has (probed in the 32-bit hole, where no region of the test
/// is), and whether it maps guest memory at each of `addrs`.
fn kvm_view(vm: &VmFd, addrs: &[u64]) -> (Vec<u32>, Vec<bool>) {
    let numbers = (0..8)
        .filter(|&n| kvm_refuses_probe(vm, n, 0xc000_0000))
        .collect();
    let held = addrs
        .iter()
        .map(|&a| kvm_refuses_probe(vm, 500, a))
        .collect();
    (numbers, held)
}

/// A listener that refuses every change.
fn refusing() -> Arc<dyn RegionListener> {
    Arc::new(|_: &RegionEvent<'_>| Err("no".into()))
}

#[test]
fn change_refused_by_one_vm_or_a_later_listener_is_undone_in_both() {
    let Some(kvm) = kvm_or_skip("change_refused_by_one_vm_or_a_later_listener") else {
        return;
    };
    let (vm_a, vm_b) = (
        Arc::new(kvm.create_vm().unwrap()),
        Arc::new(kvm.create_vm().unwrap()),
    );
    let (space, _) = AddressSpace::builder(layout())
        .slots(slot_limit(&vm_a).min(slot_limit(&vm_b)))
        .region(RegionSpec::ram(GuestAddress(0), MIB))
        .back()
        .unwrap();
    let a = MemorySlots::attach(Arc::clone(&vm_a), &space).unwrap();
    let b = MemorySlots::attach(Arc::clone(&vm_b), &space).unwrap();
    let addrs = [0, 16 * MIB];

    // VM B has memory of the VMM's own at 16 MiB: its KVM refuses a region there, after A's
    // took it. A lets it go again, and both KVMs hold what they held.
    let foreign = backed(16 * MIB, MIB);
    let mem = kvm_userspace_memory_region {
        slot: 100,
        flags: 0,
        guest_phys_addr: 16 * MIB,
        memory_size: MIB,
        userspace_addr: foreign.host_ptr().unwrap() as u64,
    };
    // SAFETY: `foreign` outlives `vm_b` (dropped after it below).
    unsafe { vm_b.set_user_memory_region(mem) }.unwrap();
    let err = space.insert_region(backed(16 * MIB, MIB)).unwrap_err();
    let memvisor_space::Error::Listener { source, .. } = &err else {
        panic!("{err}");
    };
    assert!(
        matches!(
            source.downcast_ref::<Error>(),
            Some(Error::SetMemoryRegion { slot: 1, .. })
        ),
        "{err}"
    );
    assert_eq!(space.snapshot().len(), 1);
    assert_eq!(a.registered(), [entry(&space, 0, 0, MIB, 0)]);
    assert_eq!(b.registered(), [entry(&space, 0, 0, MIB, 0)]);
    assert_eq!(kvm_view(&vm_a, &addrs), (vec![0], vec![true, false]));
    // B's KVM holds its own memory at 16 MiB, under number 100.
    assert_eq!(kvm_view(&vm_b, &addrs), (vec![0], vec![true, true]));
    let mem = kvm_userspace_memory_region {
        memory_size: 0,
        ..mem
    };
    // SAFETY: deleting a slot refers to no memory.
    unsafe { vm_b.set_user_memory_region(mem) }.unwrap();

    // The number given back goes to the next region, in both.
    space.insert_region(backed(16 * MIB, MIB)).unwrap();
    assert_eq!(
        a.registered(),
        [
            entry(&space, 0, 0, MIB, 0),
            entry(&space, 1, 16 * MIB, MIB, 0)
        ]
    );
    assert_eq!(b.registered(), a.registered());
    assert_eq!(kvm_view(&vm_a, &addrs), (vec![0, 1], vec![true, true]));
    assert_eq!(kvm_view(&vm_b, &addrs), (vec![0, 1], vec![true, true]));

    // Logging on in both; a later listener refuses the removal: both slots come back with
    // logging on, and each next fetch reports every page.
    for slots in [&a, &b] {
        slots
            .set_dirty_logging(GuestAddress(16 * MIB), true)
            .unwrap();
    }
    let refuse = refusing();
    space.add_listener(Arc::clone(&refuse)).unwrap();
    assert!(space.remove_region(GuestAddress(16 * MIB), MIB).is_err());
    // And an insertion it refuses leaves both as they were.
    assert!(space.insert_region(backed(32 * MIB, MIB)).is_err());
    space.remove_listener(&refuse).unwrap();
    for (slots, vm) in [(&a, &vm_a), (&b, &vm_b)] {
        assert_eq!(
            slots.registered(),
            [
                entry(&space, 0, 0, MIB, 0),
                entry(&space, 1, 16 * MIB, MIB, KVM_MEM_LOG_DIRTY_PAGES)
            ]
        );
        assert_eq!(
            kvm_view(vm, &[0, 16 * MIB, 32 * MIB]),
            (vec![0, 1], vec![true, true, false])
        );
        let dirty = slots.fetch_dirty_log(GuestAddress(16 * MIB)).unwrap();
        assert_eq!(dirty.count(), dirty.pages());
        assert_eq!(
            slots
                .fetch_dirty_log(GuestAddress(16 * MIB))
                .unwrap()
                .count(),
            0
        );
    }

    // A removal that goes through leaves both KVMs, and one set of slots dropped leaves only
    // its own VM.
    space.remove_region(GuestAddress(16 * MIB), MIB).unwrap();
    drop(a);
    assert_eq!(kvm_view(&vm_a, &addrs), (vec![], vec![false, false]));
    assert_eq!(kvm_view(&vm_b, &addrs), (vec![0], vec![true, false]));
    assert_eq!(b.registered(), [entry(&space, 0, 0, MIB, 0)]);
    drop(b);
    drop(vm_b);
    drop(foreign);
}
