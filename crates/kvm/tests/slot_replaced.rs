//! A slot KVM holds under one of our numbers that is not ours: the VMM's own code (through the
//! `unsafe` `set_user_memory_region` of the `VmFd`) deleted it and registered other memory
//! under the same number. KVM sizes a dirty log by the slot it holds, so a fetch must not let
//! it write past the log of the region we registered. (Skipped under Miri, which cannot `ioctl`
//! `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;
use std::sync::Arc;

use kvm_bindings::{
    KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, KVM_DIRTY_LOG_INITIALLY_SET,
    KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE, KVM_MEM_LOG_DIRTY_PAGES, kvm_enable_cap,
    kvm_userspace_memory_region,
};
use memvisor_kvm::{DirtyBitmap, Error, MemorySlots};
use memvisor_space::RegionSpec;
use support::{MIB, PAGE, backed, backed_space, entry, kvm_or_skip, vm};
use vm_memory::GuestAddress;

#[test]
fn fetch_of_slot_replaced_by_a_larger_one_fails_and_writes_nothing_past_the_log() {
    let test = "fetch_of_slot_replaced_by_a_larger_one";
    let Some(kvm) = kvm_or_skip(test) else {
        return;
    };
    let vm = vm(&kvm);
    // With every bit set when logging starts (where KVM offers it), the replaced slot's log is
    // 2 KiB of ones: written past a 32-byte log, it would overwrite the heap after it.
    let cap = kvm_enable_cap {
        cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
        args: [
            u64::from(KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET),
            0,
            0,
            0,
        ],
        ..Default::default()
    };
    if let Err(e) = vm.enable_cap(&cap) {
        eprintln!("{test}: logs start clean here ({e})");
    }
    let space = backed_space(&vm, [RegionSpec::ram(GuestAddress(0), MIB)]);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    assert_eq!(slots.registered(), [entry(&space, 0, 0, MIB, 0)]);

    // 64 MiB of the VMM's own, logging, under slot 0: its log is 2 KiB, ours 32 bytes.
    let other = backed(64 * MIB, 64 * MIB);
    let mut mem = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: 0,
        userspace_addr: space
            .find_region(GuestAddress(0))
            .unwrap()
            .host_ptr()
            .unwrap() as u64,
    };
    // SAFETY: deleting a slot refers to no memory.
    unsafe { vm.set_user_memory_region(mem) }.unwrap();
    mem = kvm_userspace_memory_region {
        slot: 0,
        flags: KVM_MEM_LOG_DIRTY_PAGES,
        guest_phys_addr: other.base().0,
        memory_size: other.size(),
        userspace_addr: other.host_ptr().unwrap() as u64,
    };
    // SAFETY: `other` outlives the VM (`slots` and `vm` are dropped before it below).
    unsafe { vm.set_user_memory_region(mem) }.unwrap();

    // KVM's log does not fit the region's: the fetch fails, and leaves a bitmap as it was.
    let err = slots.fetch_dirty_log(GuestAddress(0)).unwrap_err();
    let Error::DirtyLog {
        slot: 0,
        base: 0,
        source,
    } = &err
    else {
        panic!("{err}");
    };
    // KVM's copy stopped at the page after the log.
    assert_eq!(source.errno(), libc::EFAULT, "{err}");
    let mut own = DirtyBitmap::new(GuestAddress(0), MIB, PAGE).unwrap();
    own.mark(GuestAddress(PAGE), 1);
    let err = slots.fetch_dirty_log_into(&mut own).unwrap_err();
    assert!(matches!(err, Error::DirtyLog { .. }), "{err}");
    assert_eq!(own.dirty_pages().collect::<Vec<_>>(), [GuestAddress(PAGE)]);
    // Turning logging on re-registers slot 0 with the region's size, which KVM refuses for
    // the slot it holds.
    let err = slots.set_dirty_logging(GuestAddress(0), true).unwrap_err();
    assert!(
        matches!(err, Error::SetMemoryRegion { slot: 0, .. }),
        "{err}"
    );
    // The heap is whole: it still hands out and takes back memory.
    let filler: Vec<Vec<u8>> = (1..64).map(|n| vec![n; 32 * n as usize]).collect();
    assert!(
        filler
            .iter()
            .enumerate()
            .all(|(i, v)| v.iter().all(|&b| b as usize == i + 1))
    );
    drop(filler);
    drop(slots);
    drop(vm);
    drop(other);
}

#[test]
fn fetch_of_slot_replaced_by_a_smaller_one_gives_at_most_the_region_pages() {
    let Some(kvm) = kvm_or_skip("fetch_of_slot_replaced_by_a_smaller_one") else {
        return;
    };
    let vm = vm(&kvm);
    let space = backed_space(&vm, [RegionSpec::ram(GuestAddress(0), MIB)]);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    slots.set_dirty_logging(GuestAddress(0), true).unwrap();
    // 16 pages of the VMM's own under slot 0: KVM writes one word of the region's four.
    let other = backed(64 * MIB, 16 * PAGE);
    let mut mem = kvm_userspace_memory_region {
        slot: 0,
        flags: KVM_MEM_LOG_DIRTY_PAGES,
        guest_phys_addr: 0,
        memory_size: 0,
        userspace_addr: 0,
    };
    // SAFETY: deleting a slot refers to no memory.
    unsafe { vm.set_user_memory_region(mem) }.unwrap();
    mem.guest_phys_addr = other.base().0;
    mem.memory_size = other.size();
    mem.userspace_addr = other.host_ptr().unwrap() as u64;
    // SAFETY: `other` outlives the VM (`slots` and `vm` are dropped before it below).
    unsafe { vm.set_user_memory_region(mem) }.unwrap();
    let log = slots.fetch_dirty_log(GuestAddress(0)).unwrap();
    assert_eq!(log.words().len(), 4);
    assert!(log.count() <= 16);
    drop(slots);
    drop(vm);
    drop(other);
}
