//! Memory slots follow the address space on the host's real KVM, and a refused change leaves
//! both as they were. (Skipped under Miri, which cannot `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;
use std::sync::Arc;

use kvm_bindings::{KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, kvm_userspace_memory_region};
use kvm_ioctls::VmFd;
use memvisor_kvm::{Error, MemorySlots, RegisteredSlot, slot_limit};
use memvisor_space::{AddressSpace, RegionEvent, RegionListener, RegionSpec, RegionType};
use support::{MIB, backed, backed_space, entry, kvm_or_skip, layout, lost};
use vm_memory::GuestAddress;

/// An address space of the test layout with as many slot numbers as `vm` accepts.
fn space_for(vm: &VmFd) -> AddressSpace {
    AddressSpace::builder(layout())
        .slots(slot_limit(vm))
        .plan()
        .unwrap()
}

#[test]
fn attach_registers_backed_regions_with_flags_and_skips_unbacked() {
    let Some(kvm) = kvm_or_skip("attach_registers_backed_regions") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let (space, _) = AddressSpace::builder(layout())
        .slots(slot_limit(&vm))
        .region(RegionSpec::ram(GuestAddress(0), 4 * MIB))
        .region(RegionSpec::new(
            RegionType::Device,
            GuestAddress(0xd000_0000),
            MIB,
        ))
        .region(RegionSpec::new(
            RegionType::Firmware,
            GuestAddress(0xffc0_0000),
            MIB,
        ))
        .back()
        .unwrap();
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    assert!(slots.limit() >= 32);
    assert_eq!(
        slots.registered(),
        [
            entry(&space, 0, 0, 4 * MIB, 0),
            entry(&space, 1, 0xffc0_0000, MIB, KVM_MEM_READONLY)
        ]
    );
    assert_eq!(slots.slot_at(GuestAddress(0xd000_0000)), None);

    // Insertions and removals are followed.
    space.insert_region(backed(8 * MIB, MIB)).unwrap();
    assert_eq!(slots.slot_at(GuestAddress(8 * MIB)), Some(2));
    space.remove_region(GuestAddress(0), 4 * MIB).unwrap();
    assert_eq!(slots.slot_at(GuestAddress(0)), None);
    assert_eq!(slots.len(), 2);
    // The freed slot number is reused by the space and accepted by KVM.
    space.insert_region(backed(0, 2 * MIB)).unwrap();
    assert_eq!(slots.slot_at(GuestAddress(0)), Some(0));
}

#[test]
fn insert_kvm_refuses_rolls_space_back() {
    let Some(kvm) = kvm_or_skip("insert_kvm_refuses_rolls_space_back") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = space_for(&vm);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    // Memory KVM already has at 16 MiB, unknown to the space: KVM refuses an overlap.
    let foreign = backed(16 * MIB, MIB);
    let mem = kvm_userspace_memory_region {
        slot: 100,
        flags: 0,
        guest_phys_addr: 16 * MIB,
        memory_size: MIB,
        userspace_addr: foreign.host_ptr().unwrap() as u64,
    };
    // SAFETY: `foreign` outlives the VM: `vm` and `slots` are dropped before it below.
    unsafe { vm.set_user_memory_region(mem) }.unwrap();

    let err = space.insert_region(backed(16 * MIB, MIB)).unwrap_err();
    let source = std::error::Error::source(&err).unwrap();
    let kvm_err = source.downcast_ref::<Error>().unwrap();
    assert!(
        matches!(
            kvm_err,
            Error::SetMemoryRegion {
                slot: 0,
                base: 0x100_0000,
                ..
            }
        ),
        "{kvm_err}"
    );
    assert!(space.snapshot().is_empty());
    assert!(slots.is_empty());
    // Space and KVM still agree: the next region takes the same slot number.
    space.insert_region(backed(32 * MIB, MIB)).unwrap();
    assert_eq!(slots.registered(), [entry(&space, 0, 32 * MIB, MIB, 0)]);
    drop(slots);
    drop(vm);
    drop(foreign);
}

#[test]
fn later_listener_refuses_slot_leaves_kvm_again() {
    let Some(kvm) = kvm_or_skip("later_listener_refuses_slot_leaves_kvm_again") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = space_for(&vm);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    space
        .add_listener(Arc::new(|e: &RegionEvent<'_>| {
            if e.region.base().0 == 0 {
                Err("no".into())
            } else {
                Ok(())
            }
        }))
        .unwrap();
    let region = backed(0, MIB);
    assert!(space.insert_region(Arc::clone(&region)).is_err());
    assert!(slots.is_empty());
    // KVM no longer has the range: another slot over it is accepted.
    let mem = kvm_userspace_memory_region {
        slot: 200,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: MIB,
        userspace_addr: region.host_ptr().unwrap() as u64,
    };
    // SAFETY: `region` outlives the VM: `vm` and `slots` are dropped before it below.
    unsafe { vm.set_user_memory_region(mem) }.unwrap();
    drop(slots);
    drop(vm);
    drop(region);
}

#[test]
fn drop_deletes_slots_and_listener_goes_quiet() {
    let Some(kvm) = kvm_or_skip("drop_deletes_slots_and_listener_goes_quiet") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = backed_space(&vm, [RegionSpec::ram(GuestAddress(0), MIB)]);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    assert_eq!(slots.len(), 1);
    drop(slots);
    let region = space.find_region(GuestAddress(0)).unwrap();
    let mem = kvm_userspace_memory_region {
        slot: 300,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: MIB,
        userspace_addr: region.host_ptr().unwrap() as u64,
    };
    // SAFETY: `region` outlives the VM (`vm` is dropped first below).
    unsafe { vm.set_user_memory_region(mem) }.unwrap();
    space.insert_region(backed(4 * MIB, MIB)).unwrap();
    drop(vm);
}

#[test]
fn dirty_logging_unknown_region_errors() {
    let Some(kvm) = kvm_or_skip("dirty_logging_unknown_region_errors") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = AddressSpace::plan(layout(), []).unwrap();
    let slots = MemorySlots::attach(vm, &space).unwrap();
    let err = slots
        .set_dirty_logging(GuestAddress(0x1000), true)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no region starting at 0x1000 is registered with KVM"
    );
    assert!(matches!(
        slots.fetch_dirty_log(GuestAddress(0)),
        Err(Error::NotRegistered { base: 0 })
    ));
}

#[test]
fn region_inserted_again_after_its_removal_went_through_is_a_fresh_slot() {
    let Some(kvm) =
        kvm_or_skip("region_inserted_again_after_its_removal_went_through_is_a_fresh_slot")
    else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = space_for(&vm);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    let region = backed(MIB, MIB);
    space.insert_region(Arc::clone(&region)).unwrap();
    slots.set_dirty_logging(GuestAddress(MIB), true).unwrap();
    assert_eq!(slots.registered()[0].flags, KVM_MEM_LOG_DIRTY_PAGES);
    // The removal goes through; inserting the same region again is not its undo: the slot
    // starts as any inserted slot does, without dirty logging.
    let removed = space.remove_region(GuestAddress(MIB), MIB).unwrap();
    assert!(slots.is_empty());
    space.insert_region(removed).unwrap();
    assert_eq!(slots.registered(), expected(&space));
    assert_eq!(slots.registered()[0].flags, 0);
    drop(slots);
    drop(vm);
    drop(region);
}

/// The backed regions of the space's current snapshot, as KVM slots should be.
fn expected(space: &AddressSpace) -> Vec<RegisteredSlot> {
    let snapshot = space.snapshot();
    let mut out: Vec<RegisteredSlot> = snapshot
        .regions_with_slots()
        .filter(|(r, _)| r.is_backed())
        .map(|(r, slot)| entry(space, slot.unwrap(), r.base().0, r.size(), 0))
        .collect();
    out.sort_unstable_by_key(|e| e.slot);
    out
}

#[test]
fn attach_during_concurrent_changes_ends_in_agreement() {
    let Some(kvm) = kvm_or_skip("attach_during_concurrent_changes_ends_in_agreement") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = space_for(&vm);
    let page = memvisor_vmem::page_size() as u64;
    let writer = {
        let space = space.clone();
        std::thread::spawn(move || {
            // A fixed pseudo-random walk over 32 places: insert where free, remove where taken.
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let mut taken = [false; 32];
            for _ in 0..400 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x % 32) as usize;
                let base = (i as u64) * 2 * page;
                if taken[i] {
                    space.remove_region(GuestAddress(base), page).unwrap();
                } else {
                    space.insert_region(backed(base, page)).unwrap();
                }
                taken[i] = !taken[i];
            }
        })
    };
    // Attach once the walk is well under way, so both the replay and the follow-up have work.
    while space.snapshot().generation() < 100 && !writer.is_finished() {
        std::thread::yield_now();
    }
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    writer.join().unwrap();
    assert_eq!(slots.registered(), expected(&space));
    // And it keeps following afterwards.
    space.insert_region(backed(64 * page, page)).unwrap();
    assert_eq!(slots.registered(), expected(&space));
}

#[test]
fn region_inserted_again_after_its_insertion_was_refused_is_a_fresh_slot() {
    let Some(kvm) =
        kvm_or_skip("region_inserted_again_after_its_insertion_was_refused_is_a_fresh_slot")
    else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = space_for(&vm);
    let slots = Arc::new(MemorySlots::attach(Arc::clone(&vm), &space).unwrap());
    // A listener after KVM's that turns dirty logging on for the new slot, then refuses the
    // first insertion (the slot is KVM's by then, so the refusal takes it out of KVM again).
    let refused = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, once) = (Arc::clone(&slots), Arc::clone(&refused));
    let listener: Arc<dyn RegionListener> = Arc::new(move |e: &RegionEvent<'_>| {
        if e.kind == memvisor_space::ChangeKind::Inserted
            && !once.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            s.set_dirty_logging(e.region.base(), true)?;
            return Err("not now".into());
        }
        Ok(())
    });
    space.add_listener(Arc::clone(&listener)).unwrap();
    let region = backed(MIB, MIB);
    assert!(space.insert_region(Arc::clone(&region)).is_err());
    assert!(slots.is_empty());
    // The same region again: a fresh insertion, not the undo of the refused one's undo. The
    // slot starts as any inserted slot does, without dirty logging.
    space.insert_region(Arc::clone(&region)).unwrap();
    assert_eq!(slots.registered(), expected(&space));
    assert_eq!(slots.registered()[0].flags, 0);
    assert!(slots.fetch_dirty_log(GuestAddress(MIB)).is_err());
    // The listener holds `slots`: take it out, so that dropping `slots` deletes the slot.
    space.remove_listener(&listener).unwrap();
    drop(listener);
    drop(slots);
    drop(vm);
    drop(region);
}

#[test]
fn undo_of_refused_removal_refused_by_kvm_is_reported_until_the_region_goes() {
    let Some(kvm) =
        kvm_or_skip("undo_of_refused_removal_refused_by_kvm_is_reported_until_the_region_goes")
    else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = space_for(&vm);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    let region = backed(MIB, MIB);
    space.insert_region(Arc::clone(&region)).unwrap();
    slots.set_dirty_logging(GuestAddress(MIB), true).unwrap();
    assert!(slots.out_of_sync().is_empty());

    // A listener after KVM's that, once the slot left KVM, puts other memory there (so KVM
    // refuses to take the slot back) and refuses the removal.
    let foreign = backed(MIB, MIB);
    let (v, host) = (Arc::clone(&vm), foreign.host_ptr().unwrap() as u64);
    let listener: Arc<dyn RegionListener> = Arc::new(move |e: &RegionEvent<'_>| {
        if e.kind == memvisor_space::ChangeKind::Removed {
            let mem = kvm_userspace_memory_region {
                slot: 100,
                flags: 0,
                guest_phys_addr: MIB,
                memory_size: MIB,
                userspace_addr: host,
            };
            // SAFETY: `foreign` outlives the VM: `vm` and `slots` are dropped before it below.
            unsafe { v.set_user_memory_region(mem) }.unwrap();
            return Err("not now".into());
        }
        Ok(())
    });
    space.add_listener(Arc::clone(&listener)).unwrap();
    assert!(space.remove_region(GuestAddress(MIB), MIB).is_err());
    space.remove_listener(&listener).unwrap();
    drop(listener);
    // The space kept the region, KVM did not take it back: that is reported, and the region
    // is not registered. Its next fetch gives every page (KVM dropped the log with the slot),
    // once: no guest write reaches the region while KVM has no slot for it.
    assert_eq!(space.snapshot().len(), 1);
    assert!(slots.is_empty());
    assert_eq!(slots.out_of_sync(), [lost(0, MIB, MIB)]);
    let dirty = slots.fetch_dirty_log(GuestAddress(MIB)).unwrap();
    assert_eq!(dirty.count(), dirty.pages());
    assert_eq!(slots.fetch_dirty_log(GuestAddress(MIB)).unwrap().count(), 0);
    // Other changes go on and do not clear the report.
    space.insert_region(backed(4 * MIB, MIB)).unwrap();
    space.remove_region(GuestAddress(4 * MIB), MIB).unwrap();
    assert_eq!(slots.out_of_sync(), [lost(0, MIB, MIB)]);
    // A refused removal of it, while KVM still refuses the slot: still reported.
    let refuse: Arc<dyn RegionListener> = Arc::new(|_: &RegionEvent<'_>| Err("no".into()));
    space.add_listener(Arc::clone(&refuse)).unwrap();
    assert!(space.remove_region(GuestAddress(MIB), MIB).is_err());
    space.remove_listener(&refuse).unwrap();
    assert_eq!(slots.out_of_sync(), [lost(0, MIB, MIB)]);
    assert!(slots.is_empty());

    // Once the foreign slot is gone, removing the region and inserting it again mends it.
    let mem = kvm_userspace_memory_region {
        slot: 100,
        flags: 0,
        guest_phys_addr: MIB,
        memory_size: 0,
        userspace_addr: 0,
    };
    // SAFETY: deleting a slot refers to no memory.
    unsafe { vm.set_user_memory_region(mem) }.unwrap();
    let removed = space.remove_region(GuestAddress(MIB), MIB).unwrap();
    assert!(slots.out_of_sync().is_empty());
    space.insert_region(removed).unwrap();
    assert_eq!(slots.registered(), expected(&space));
    assert!(slots.out_of_sync().is_empty());
    drop(slots);
    drop(vm);
    drop(foreign);
    drop(region);
}
