//! Regions at the top of a 64-bit guest physical address space. One ending at 2^64 is no
//! region (its end does not fit the address); one ending a page below is, and the space takes
//! it (its limit is 64 bits), KVM does not (past the largest guest physical address it maps),
//! so the insertion is refused with KVM's error and nothing changes; the dirty-log methods at
//! its base answer `NotRegistered`, also with a bitmap ending at 2^64. (Skipped under Miri,
//! which cannot `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;

use std::sync::Arc;

use memvisor_kvm::{DirtyBitmap, Error, MemorySlots, slot_limit};
use memvisor_space::{AddressSpace, Layout, Region, RegionSpec, Window, WindowKind};
use support::{MIB, backed, kvm_or_skip, page};
use vm_memory::GuestAddress;

#[test]
fn region_at_the_top_of_the_address_space_is_refused_by_kvm_and_changes_nothing() {
    let Some(kvm) = kvm_or_skip("region_at_the_top_of_the_address_space") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    // RAM at 0, and a RAM window ending a page below 2^64 (the highest a window reaches).
    let gib = 1 << 30;
    let window_end = u64::MAX - page() + 1;
    let windows = [
        Window::new(WindowKind::Ram, GuestAddress(0), gib).unwrap(),
        Window::new(WindowKind::Ram, GuestAddress(window_end - gib), gib).unwrap(),
    ];
    let layout = Layout::new(GuestAddress(u64::MAX), windows).unwrap();
    let space = AddressSpace::builder(layout)
        .slots(slot_limit(&vm))
        .plan()
        .unwrap();
    space.insert_region(backed(0, MIB)).unwrap();
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    slots.set_dirty_logging(GuestAddress(0), true).unwrap();
    let before = slots.registered();
    let generation = space.snapshot().generation();
    let top = u64::MAX - 2 * MIB + 1;
    assert!(Region::back(RegionSpec::ram(GuestAddress(top), 2 * MIB)).is_err());
    let base = window_end - 2 * MIB;
    assert_eq!(base, top - page());
    let err = space.insert_region(backed(base, 2 * MIB)).unwrap_err();
    let memvisor_space::Error::Listener { source, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(
        matches!(
            source.downcast_ref::<Error>(),
            Some(Error::SetMemoryRegion { base: b, size, .. }) if *b == base && *size == 2 * MIB
        ),
        "{err}"
    );
    assert_eq!(space.snapshot().generation(), generation);
    assert_eq!(slots.registered(), before);
    assert_eq!(slots.slot_at(GuestAddress(base)), None);
    for on in [true, false] {
        assert!(matches!(
            slots.set_dirty_logging(GuestAddress(base), on),
            Err(Error::NotRegistered { base: b }) if b == base
        ));
    }
    assert!(matches!(
        slots.fetch_dirty_log(GuestAddress(base)),
        Err(Error::NotRegistered { base: b }) if b == base
    ));
    let mut bitmap = DirtyBitmap::new(GuestAddress(top), 2 * MIB, page()).unwrap();
    bitmap.mark(GuestAddress(u64::MAX), 1);
    let kept = bitmap.clone();
    assert!(matches!(
        slots.fetch_dirty_log_into(&mut bitmap),
        Err(Error::NotRegistered { base: b }) if b == top
    ));
    assert_eq!(bitmap, kept);
    // The slots still work.
    assert_eq!(slots.fetch_dirty_log(GuestAddress(0)).unwrap().count(), 0);
}
