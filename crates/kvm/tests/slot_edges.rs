//! Edges of memory slots on the host's real KVM: regions the guest cannot read, what `Debug`
//! and the accessors show, and dirty bitmaps that do not fit the region. (Skipped under Miri,
//! which cannot `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;
use std::sync::Arc;

use memvisor_kvm::{DirtyBitmap, Error, MemorySlots};
use memvisor_space::{Protection, Region, RegionSpec};
use support::{MIB, backed_space, entry, kvm_or_skip};
use vm_memory::GuestAddress;

#[test]
fn attach_region_without_read_access_is_not_registered() {
    let Some(kvm) = kvm_or_skip("attach_region_without_read_access_is_not_registered") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = backed_space(
        &vm,
        [
            RegionSpec::ram(GuestAddress(0), MIB),
            RegionSpec::ram(GuestAddress(4 * MIB), MIB).with_protection(Protection::None),
        ],
    );
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    assert_eq!(slots.registered(), [entry(&space, 0, 0, MIB, 0)]);
    assert_eq!(slots.slot_at(GuestAddress(4 * MIB)), None);

    // Removing it, or inserting another such region, leaves the slots as they were.
    space.remove_region(GuestAddress(4 * MIB), MIB).unwrap();
    let hidden =
        Region::back(RegionSpec::ram(GuestAddress(8 * MIB), MIB).with_protection(Protection::None))
            .unwrap()
            .0;
    space.insert_region(Arc::new(hidden)).unwrap();
    assert_eq!(slots.registered(), [entry(&space, 0, 0, MIB, 0)]);
    assert_eq!(slots.slot_at(GuestAddress(8 * MIB)), None);
}

#[test]
fn debug_and_vm_show_the_attached_state() {
    let Some(kvm) = kvm_or_skip("debug_and_vm_show_the_attached_state") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = backed_space(
        &vm,
        [
            RegionSpec::ram(GuestAddress(0), MIB),
            RegionSpec::ram(GuestAddress(2 * MIB), MIB),
        ],
    );
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    assert!(Arc::ptr_eq(slots.vm(), &vm));
    assert!(!slots.is_empty());
    let text = format!("{slots:?}");
    assert!(text.starts_with("MemorySlots"), "{text}");
    assert!(
        text.contains(&format!("limit: {}", slots.limit())),
        "{text}"
    );
    assert!(text.contains("slots: [0, 1]"), "{text}");

    space.remove_region(GuestAddress(0), MIB).unwrap();
    let text = format!("{slots:?}");
    assert!(text.contains("slots: [1]"), "{text}");
}

#[test]
fn fetch_dirty_log_into_mismatched_bitmap_errors_and_leaves_it() {
    let Some(kvm) = kvm_or_skip("fetch_dirty_log_into_mismatched_bitmap_errors_and_leaves_it")
    else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = backed_space(&vm, [RegionSpec::ram(GuestAddress(0), 2 * MIB)]);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    slots.set_dirty_logging(GuestAddress(0), true).unwrap();
    // A fetched bitmap has one bit per host page.
    let page = slots.fetch_dirty_log(GuestAddress(0)).unwrap().page_size();

    // Too short for the region: refused, and the marks made before survive.
    let mut short = DirtyBitmap::new(GuestAddress(0), MIB, page).unwrap();
    short.mark(GuestAddress(page), 1);
    let err = slots.fetch_dirty_log_into(&mut short).unwrap_err();
    assert!(
        matches!(
            err,
            Error::BitmapMismatch {
                base: 0,
                size: MIB,
                page_size: p,
                other_base: 0,
                other_size,
                other_page_size,
            } if other_size == 2 * MIB && p == page && other_page_size == page
        ),
        "{err}"
    );
    assert_eq!(short.base(), GuestAddress(0));
    assert_eq!(short.size(), MIB);
    assert_eq!(short.page_size(), page);
    assert_eq!(
        short.dirty_pages().collect::<Vec<_>>(),
        [GuestAddress(page)]
    );

    // The right size, but not one bit per host page: refused too.
    let mut coarse = DirtyBitmap::new(GuestAddress(0), 2 * MIB, 2 * page).unwrap();
    let err = slots.fetch_dirty_log_into(&mut coarse).unwrap_err();
    assert!(
        matches!(err, Error::BitmapMismatch { size, .. } if size == 2 * MIB),
        "{err}"
    );
    assert_eq!(coarse.count(), 0);

    // A bitmap that fits is accepted.
    let mut fits = DirtyBitmap::new(GuestAddress(0), 2 * MIB, page).unwrap();
    slots.fetch_dirty_log_into(&mut fits).unwrap();
    assert_eq!(fits.page_size(), page);
}

#[test]
fn fetch_dirty_log_into_other_page_size_only_names_both_page_sizes() {
    let Some(kvm) = kvm_or_skip("fetch_dirty_log_into_other_page_size_only_names_both_page_sizes")
    else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = backed_space(&vm, [RegionSpec::ram(GuestAddress(0), 2 * MIB)]);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    slots.set_dirty_logging(GuestAddress(0), true).unwrap();
    let page = memvisor_vmem::page_size() as u64;
    // Same range, other page size: the error says which page sizes differ.
    let mut coarse = DirtyBitmap::new(GuestAddress(0), 2 * MIB, 4 * page).unwrap();
    let err = slots.fetch_dirty_log_into(&mut coarse).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("{:#x}", 4 * page)) && text.contains(&format!("{page:#x}")),
        "{text}"
    );
    assert!(
        matches!(
            err,
            Error::BitmapMismatch { size, page_size, other_size, other_page_size, .. }
                if size == other_size && page_size == 4 * page && other_page_size == page
        ),
        "{err}"
    );
    // `merge` says the same.
    let fine = DirtyBitmap::new(GuestAddress(0), 2 * MIB, page).unwrap();
    let text = coarse.merge(&fine).unwrap_err().to_string();
    assert!(
        text.contains(&format!("{:#x}", 4 * page)) && text.contains(&format!("{page:#x}")),
        "{text}"
    );
}
