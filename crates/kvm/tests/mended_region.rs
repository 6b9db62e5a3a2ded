//! A region whose slot KVM would not take back after an undone removal (`out_of_sync`), mended
//! by the undo of a later refused removal: KVM and the slots agree afterwards, and a removal of
//! it refused again brings the slot back as it was, dirty logging included. (Skipped under
//! Miri, which cannot `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;
use std::sync::Arc;

use kvm_bindings::{KVM_MEM_LOG_DIRTY_PAGES, kvm_userspace_memory_region};
use kvm_ioctls::VmFd;
use memvisor_kvm::{MemorySlots, slot_limit};
use memvisor_space::{AddressSpace, ChangeKind, RegionEvent, RegionListener};
use support::{MIB, backed, entry, kvm_or_skip, layout, lost};
use vm_memory::GuestAddress;

/// The slot number of memory the VMM's own code registers, past the space's numbers.
const FOREIGN_SLOT: u32 = 100;

/// Registers (`host` not 0) or deletes (`host` 0) a slot of the VMM's own at `FOREIGN_SLOT`.
///
/// # Safety
/// `host..host + size` must stay mapped while KVM holds the slot.
unsafe fn foreign_slot(vm: &VmFd, base: u64, size: u64, host: u64) {
    let mem = kvm_userspace_memory_region {
        slot: FOREIGN_SLOT,
        flags: 0,
        guest_phys_addr: base,
        memory_size: if host == 0 { 0 } else { size },
        userspace_addr: host,
    };
    // SAFETY: as the caller promises.
    unsafe { vm.set_user_memory_region(mem) }.unwrap();
}

/// A listener that refuses every change.
fn refusing() -> Arc<dyn RegionListener> {
    Arc::new(|_: &RegionEvent<'_>| Err("no".into()))
}

#[test]
fn refused_removal_of_mended_region_brings_its_slot_back_with_its_flags() {
    let Some(kvm) = kvm_or_skip("refused_removal_of_mended_region") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = AddressSpace::builder(layout())
        .slots(slot_limit(&vm))
        .plan()
        .unwrap();
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    let region = backed(MIB, MIB);
    space.insert_region(Arc::clone(&region)).unwrap();
    slots.set_dirty_logging(GuestAddress(MIB), true).unwrap();

    // A later listener puts other memory at the region's range once its slot left KVM, and
    // refuses the removal: KVM does not take the slot back.
    let foreign = backed(MIB, MIB);
    let (v, host) = (Arc::clone(&vm), foreign.host_ptr().unwrap() as u64);
    let taking: Arc<dyn RegionListener> = Arc::new(move |e: &RegionEvent<'_>| {
        if e.kind == ChangeKind::Removed {
            // SAFETY: the slot is deleted again below, before `foreign` is dropped.
            unsafe { foreign_slot(&v, MIB, MIB, host) };
            return Err("not now".into());
        }
        Ok(())
    });
    space.add_listener(Arc::clone(&taking)).unwrap();
    assert!(space.remove_region(GuestAddress(MIB), MIB).is_err());
    space.remove_listener(&taking).unwrap();
    assert_eq!(slots.out_of_sync(), [lost(0, MIB, MIB)]);
    assert!(slots.is_empty());

    // The foreign memory goes; a removal refused again is undone by inserting the region,
    // which KVM now takes: the region is a slot again, with the flags it had (logging on),
    // and its next fetch reports every page (KVM dropped the log with the slot, and no fetch
    // gave it while the region was out of sync).
    // SAFETY: deleting a slot refers to no memory.
    unsafe { foreign_slot(&vm, MIB, MIB, 0) };
    let refuse = refusing();
    space.add_listener(Arc::clone(&refuse)).unwrap();
    assert!(space.remove_region(GuestAddress(MIB), MIB).is_err());
    assert!(slots.out_of_sync().is_empty());
    assert_eq!(
        slots.registered(),
        [entry(&space, 0, MIB, MIB, KVM_MEM_LOG_DIRTY_PAGES)]
    );
    let dirty = slots.fetch_dirty_log(GuestAddress(MIB)).unwrap();
    assert_eq!(dirty.count(), dirty.pages());
    assert_eq!(slots.fetch_dirty_log(GuestAddress(MIB)).unwrap().count(), 0);

    // The same removal refused once more: the slot comes back with logging on, and its next
    // fetch reports every page again.
    assert!(space.remove_region(GuestAddress(MIB), MIB).is_err());
    space.remove_listener(&refuse).unwrap();
    assert_eq!(
        slots.registered(),
        [entry(&space, 0, MIB, MIB, KVM_MEM_LOG_DIRTY_PAGES)]
    );
    let dirty = slots.fetch_dirty_log(GuestAddress(MIB)).unwrap();
    assert_eq!(dirty.count(), dirty.pages());
    assert_eq!(slots.fetch_dirty_log(GuestAddress(MIB)).unwrap().count(), 0);

    // And it goes for good when nobody refuses.
    space.remove_region(GuestAddress(MIB), MIB).unwrap();
    assert!(slots.is_empty());
    drop(slots);
    drop(vm);
    drop(foreign);
    drop(region);
}
