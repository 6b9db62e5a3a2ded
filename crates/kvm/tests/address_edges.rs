//! The address-taking methods of memory slots at addresses no region starts at: inside a
//! region, right past it, unaligned, at 0 with nothing there and at the top of the address
//! space. Each answers `None` or `Error::NotRegistered` naming the address, and changes
//! nothing: not the slots, their flags, KVM's log, nor the bitmap given. (Skipped under Miri,
//! which cannot `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;

use std::sync::Arc;

use kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES;
use memvisor_kvm::{DirtyBitmap, Error, MemorySlots};
use memvisor_space::RegionSpec;
use support::{MIB, backed_space, entry, kvm_or_skip, page};
use vm_memory::GuestAddress;

#[test]
fn addresses_no_region_starts_at_are_not_registered_and_change_nothing() {
    let Some(kvm) = kvm_or_skip("addresses_no_region_starts_at") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = backed_space(&vm, [RegionSpec::ram(GuestAddress(4 * MIB), MIB)]);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    let base = GuestAddress(4 * MIB);
    slots.set_dirty_logging(base, true).unwrap();
    let before = slots.registered();
    assert_eq!(
        before,
        [entry(&space, 0, 4 * MIB, MIB, KVM_MEM_LOG_DIRTY_PAGES)]
    );
    for addr in [
        0,
        1,
        page() - 1,
        4 * MIB - page(),
        4 * MIB - 1,
        4 * MIB + 1,
        4 * MIB + page(),
        5 * MIB - 1,
        5 * MIB,
        1 << 52,
        u64::MAX - page() + 1,
        u64::MAX,
    ] {
        let at = GuestAddress(addr);
        assert_eq!(slots.slot_at(at), None, "{addr:#x}");
        for on in [true, false] {
            let err = slots.set_dirty_logging(at, on).unwrap_err();
            assert!(
                matches!(err, Error::NotRegistered { base } if base == addr),
                "{addr:#x}: {err:?}"
            );
        }
        let err = slots.fetch_dirty_log(at).unwrap_err();
        assert!(
            matches!(err, Error::NotRegistered { base } if base == addr),
            "{addr:#x}: {err:?}"
        );
        // A bitmap of the region's size where it fits, of one byte at the top.
        let size = if addr > u64::MAX - MIB { 1 } else { MIB };
        let mut bitmap = DirtyBitmap::new(at, size, page()).unwrap();
        bitmap.mark(at, 1);
        let kept = bitmap.clone();
        let err = slots.fetch_dirty_log_into(&mut bitmap).unwrap_err();
        assert!(
            matches!(err, Error::NotRegistered { base } if base == addr),
            "{addr:#x}: {err:?}"
        );
        assert_eq!(bitmap, kept, "{addr:#x}");
        assert_eq!(slots.registered(), before, "{addr:#x}");
        assert_eq!(slots.out_of_sync(), [], "{addr:#x}");
    }
    // The region's log went through all that untouched: still logging, still clean.
    assert_eq!(slots.slot_at(base), Some(0));
    assert_eq!(slots.fetch_dirty_log(base).unwrap().count(), 0);
}
