//! KVM's dirty log on the host's real KVM for regions of odd shapes and backings, written by
//! the long-mode guest of `support`: a region whose page count is not a multiple of 64, one
//! backed by explicit 2 MiB huge pages (hugetlbfs), both removed and inserted again under a
//! guest; and a VM on which the VMM turned on `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`, where a
//! fetch does not clear KVM's log. (Skipped under Miri, which cannot `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;

use std::sync::Arc;

use kvm_bindings::{KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, kvm_enable_cap};
use memvisor_kvm::MemorySlots;
use memvisor_space::{HugePageSize, HugePages, Region, RegionSpec};
use memvisor_testkit::huge_page_lock::huge_page_lock;
use support::*;
use vm_memory::GuestAddress;

/// A region of 65 pages: its log takes two words, the second with one page.
const ODD: u64 = 16 * MIB;
const ODD_SIZE: u64 = 65 * PAGE;
/// A region of two 2 MiB huge pages.
const HUGE: u64 = 32 * MIB;
const HUGE_SIZE: u64 = 4 * MIB;

/// The guest addresses of `pages` (page numbers) of the region at `base`.
fn addresses(base: u64, pages: &[u64]) -> Vec<GuestAddress> {
    pages
        .iter()
        .map(|p| GuestAddress(base + p * PAGE))
        .collect()
}

/// The fetched log of the region at `base`, as guest addresses.
fn fetched(slots: &MemorySlots, base: u64) -> Vec<GuestAddress> {
    slots
        .fetch_dirty_log(GuestAddress(base))
        .unwrap()
        .dirty_pages()
        .collect()
}

#[test]
fn odd_sized_and_hugetlbfs_regions_log_exactly_the_guest_pages_across_remove_and_insert() {
    let _huge_pages = huge_page_lock();
    let test =
        "odd_sized_and_hugetlbfs_regions_log_exactly_the_guest_pages_across_remove_and_insert";
    let Some(kvm) = kvm_or_skip(test) else {
        return;
    };
    let huge = RegionSpec::ram(GuestAddress(HUGE), HUGE_SIZE)
        .with_huge_pages(HugePages::Explicit(HugePageSize::Size2M));
    let huge = match Region::back(huge) {
        Ok((region, _)) => Arc::new(region),
        Err(e) => {
            eprintln!("\n*** SKIPPED {test}: no 2 MiB huge pages here ({e}) ***\n");
            return;
        }
    };
    let vm = vm(&kvm);
    let space = backed_space(
        &vm,
        [
            RegionSpec::ram(GuestAddress(0), 2 * MIB),
            RegionSpec::ram(GuestAddress(ODD), ODD_SIZE),
        ],
    );
    space.insert_region(Arc::clone(&huge)).unwrap();
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    assert_eq!(
        slots.registered(),
        [
            entry(&space, 0, 0, 2 * MIB, 0),
            entry(&space, 1, ODD, ODD_SIZE, 0),
            entry(&space, 2, HUGE, HUGE_SIZE, 0)
        ]
    );
    load_program(&space);
    fill_host_words(&space, ODD, ODD_SIZE);
    fill_host_words(&space, HUGE, HUGE_SIZE);
    slots.set_dirty_logging(GuestAddress(ODD), true).unwrap();
    slots.set_dirty_logging(GuestAddress(HUGE), true).unwrap();
    // The first and last page of each region, and pages inside the second huge page: KVM
    // logs base pages of a huge-page mapping too.
    let odd_pages = [0, 63, 64];
    let huge_pages = [0, 511, 512, 513, 1023];
    let table: Vec<(u64, u64)> = odd_pages
        .iter()
        .map(|p| (ODD + p * PAGE, 1))
        .chain(huge_pages.iter().map(|p| (HUGE + p * PAGE, 1)))
        .collect();
    set_table(&space, &table);
    let mut vcpu = vcpu(&kvm, &vm);
    assert_eq!(run(&mut vcpu, &space, |_| true), Stop::Passes(1));

    let odd = slots.fetch_dirty_log(GuestAddress(ODD)).unwrap();
    assert_eq!(odd.words(), [(1 << 63) | 1, 1]);
    assert_eq!(
        odd.dirty_pages().collect::<Vec<_>>(),
        addresses(ODD, &odd_pages)
    );
    assert_eq!(fetched(&slots, HUGE), addresses(HUGE, &huge_pages));
    assert_eq!(fetched(&slots, ODD), []);
    assert_eq!(fetched(&slots, HUGE), []);

    // Removed and inserted again (KVM makes the slots anew, under the same numbers, with
    // fresh flags); logging on again, the guest's next pass is logged exactly.
    for (base, size) in [(ODD, ODD_SIZE), (HUGE, HUGE_SIZE)] {
        let region = space.remove_region(GuestAddress(base), size).unwrap();
        assert_eq!(slots.slot_at(GuestAddress(base)), None);
        space.insert_region(region).unwrap();
        assert_eq!(
            slots
                .registered()
                .iter()
                .find(|r| r.guest.start().0 == base)
                .map(|r| r.flags),
            Some(0)
        );
        slots.set_dirty_logging(GuestAddress(base), true).unwrap();
    }
    assert_eq!(run(&mut vcpu, &space, |_| true), Stop::Passes(1));
    assert_eq!(fetched(&slots, ODD), addresses(ODD, &odd_pages));
    assert_eq!(fetched(&slots, HUGE), addresses(HUGE, &huge_pages));
}

#[test]
fn manual_dirty_log_protect_of_the_vm_keeps_pages_in_every_fetch() {
    let test = "manual_dirty_log_protect_of_the_vm_keeps_pages_in_every_fetch";
    let Some(kvm) = kvm_or_skip(test) else {
        return;
    };
    let vm = vm(&kvm);
    // The VMM's choice, made on the VM before or after attaching (here: without setting all
    // bits when logging starts).
    let cap = kvm_enable_cap {
        cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
        args: [1, 0, 0, 0],
        ..Default::default()
    };
    if let Err(e) = vm.enable_cap(&cap) {
        eprintln!("\n*** SKIPPED {test}: no manual dirty-log protection here ({e}) ***\n");
        return;
    }
    let space = backed_space(
        &vm,
        [
            RegionSpec::ram(GuestAddress(0), 2 * MIB),
            RegionSpec::ram(GuestAddress(ODD), ODD_SIZE),
        ],
    );
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    load_program(&space);
    fill_host_words(&space, ODD, ODD_SIZE);
    slots.set_dirty_logging(GuestAddress(ODD), true).unwrap();
    set_table(&space, &[(ODD + 3 * PAGE, 1), (ODD + 64 * PAGE, 1)]);
    let mut vcpu = vcpu(&kvm, &vm);
    assert_eq!(run(&mut vcpu, &space, |_| true), Stop::Passes(1));

    // `KVM_GET_DIRTY_LOG` no longer clears: no page is lost, but each fetch repeats them, and
    // turning logging on again while on does not start clean either.
    let written = addresses(ODD, &[3, 64]);
    assert_eq!(fetched(&slots, ODD), written);
    assert_eq!(fetched(&slots, ODD), written);
    slots.set_dirty_logging(GuestAddress(ODD), true).unwrap();
    assert_eq!(fetched(&slots, ODD), written);
    // Off and on again does: KVM drops the slot's log with the flag.
    slots.set_dirty_logging(GuestAddress(ODD), false).unwrap();
    slots.set_dirty_logging(GuestAddress(ODD), true).unwrap();
    assert_eq!(fetched(&slots, ODD), []);
}
