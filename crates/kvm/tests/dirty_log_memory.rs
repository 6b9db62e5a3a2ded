//! The memory dirty logs are fetched into is kept from one fetch to the next: every fetch must
//! see only the log KVM wrote for it, whatever size of log came before, and a log that KVM
//! writes only in part (the slot under the region's number was replaced by a smaller one)
//! leaves the rest clear, not the previous fetch's bits. Logs here start with every page dirty
//! (`KVM_DIRTY_LOG_INITIALLY_SET`), so KVM fills them without a guest. (Skipped under Miri,
//! which cannot `ioctl` `/dev/kvm`, and where KVM lacks manual dirty-log protection.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;

use std::sync::Arc;

use kvm_bindings::{
    KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, KVM_DIRTY_LOG_INITIALLY_SET,
    KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE, KVM_MEM_LOG_DIRTY_PAGES, kvm_enable_cap,
    kvm_userspace_memory_region,
};
use kvm_ioctls::VmFd;
use memvisor_kvm::MemorySlots;
use memvisor_space::RegionSpec;
use support::{MIB, PAGE, backed, backed_space, kvm_or_skip, vm};
use vm_memory::GuestAddress;

/// A VM whose logs start with every page dirty, or `None` where KVM cannot.
fn vm_with_full_logs(test: &str) -> Option<Arc<VmFd>> {
    let kvm = kvm_or_skip(test)?;
    let vm = vm(&kvm);
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
    match vm.enable_cap(&cap) {
        Ok(()) => Some(vm),
        Err(e) => {
            eprintln!("{test}: skipped, logs cannot start full here ({e})");
            None
        }
    }
}

#[test]
fn each_fetch_gives_exactly_its_regions_pages_whatever_size_came_before() {
    let Some(vm) = vm_with_full_logs("each_fetch_gives_exactly_its_regions_pages") else {
        return;
    };
    // One page, 64 pages (one word), 65 and 100 pages (words not full), 1 MiB, 1 GiB less a
    // page and 64 MiB: logs larger and smaller than the one before.
    let sizes = [
        PAGE,
        64 * PAGE,
        65 * PAGE,
        100 * PAGE,
        MIB,
        64 * MIB - PAGE,
        64 * MIB,
    ];
    let mut base = 0;
    let mut specs = Vec::new();
    for size in sizes {
        specs.push(RegionSpec::ram(GuestAddress(base), size));
        base += size.next_multiple_of(2 * MIB);
    }
    let space = backed_space(&vm, specs.clone());
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    for spec in &specs {
        slots.set_dirty_logging(spec.base(), true).unwrap();
    }
    // Largest first, then the others, twice over in both orders.
    let mut order: Vec<usize> = (0..sizes.len()).rev().collect();
    order.extend(0..sizes.len());
    order.extend((0..sizes.len()).rev());
    for i in order {
        let log = slots.fetch_dirty_log(specs[i].base()).unwrap();
        let pages = sizes[i] / PAGE;
        assert_eq!(log.count(), pages, "region of {} pages", pages);
        assert_eq!(log.words().len() as u64, pages.div_ceil(64));
    }
}

#[test]
fn a_log_written_in_part_leaves_the_rest_clear_after_a_full_one() {
    let Some(vm) = vm_with_full_logs("a_log_written_in_part_leaves_the_rest_clear") else {
        return;
    };
    // 256 pages: four words, all set by the first fetches.
    let space = backed_space(&vm, [RegionSpec::ram(GuestAddress(0), MIB)]);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    slots.set_dirty_logging(GuestAddress(0), true).unwrap();
    for _ in 0..2 {
        assert_eq!(slots.fetch_dirty_log(GuestAddress(0)).unwrap().count(), 256);
    }
    // 16 pages of the VMM's own under slot 0, logging from full: KVM writes one word of the
    // region's four, with 16 bits set.
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
    assert_eq!(log.words(), [0xffff, 0, 0, 0]);
    drop(slots);
    drop(vm);
    drop(other);
}
