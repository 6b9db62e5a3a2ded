//! The VMM's dirty bitmap and KVM's log of a real guest, together: a region of the space that
//! tracks writes marks the VMM's own writes (vm-memory `Bytes`), KVM's log of the guest's
//! writes is merged into it, and a discard marks the pages it gave back; a guest writing a
//! discarded page afterwards writes the memory the VMM reads, and KVM logs it. For private and
//! shared anonymous memory and for a memfd. (Skipped under
//! Miri, which cannot make system calls such as `ioctl` on `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]
#![allow(clippy::cast_possible_truncation)]

mod support;

use std::sync::Arc;

use memvisor_kvm::{MemorySlots, slot_limit};
use memvisor_space::{AddressSpace, Backing, Layout, RegionSpec};
use support::*;
use vm_memory::{Bytes, GuestAddress};

const MIB2: u64 = 2 << 20;
/// Boot RAM (the page tables and the program).
const LOW: u64 = 0;
/// RAM whose writes the space tracks.
const HIGH: u64 = 4 << 30;

/// The pages (by index in the tracked region) whose bit is set in the region's bitmap.
fn region_dirty(space: &AddressSpace) -> Vec<u64> {
    let region = space.find_region(GuestAddress(HIGH)).unwrap();
    (0..MIB2 / PAGE)
        .filter(|&i| region.is_dirty(i * PAGE))
        .collect()
}

#[test]
fn guest_log_merges_with_vmm_writes_and_discards_in_the_region_bitmap() {
    let Some(kvm) = kvm_or_skip("guest_log_merges_with_vmm_writes_and_discards") else {
        return;
    };
    // Private pages go with `MADV_DONTNEED`, shared ones (anonymous or a memfd) with
    // `MADV_REMOVE`: KVM must let go of its page either way.
    for backing in [
        Backing::AnonymousPrivate,
        Backing::AnonymousShared,
        Backing::Memfd,
    ] {
        merge_and_discard(&kvm, backing);
    }
}

fn merge_and_discard(kvm: &kvm_ioctls::Kvm, backing: Backing) {
    let vm = vm(kvm);
    let layout = Layout::x86_64().ram(8 << 30).build().unwrap();
    let (space, _) = AddressSpace::builder(layout)
        .slots(slot_limit(&vm))
        .region(RegionSpec::ram(GuestAddress(LOW), MIB2))
        .region(
            RegionSpec::ram(GuestAddress(HIGH), MIB2)
                .with_backing(backing.clone())
                .with_dirty_tracking(true),
        )
        .back()
        .unwrap();
    load_program(&space);
    fill_host_words(&space, HIGH, MIB2);
    let region = space.find_region(GuestAddress(HIGH)).unwrap();
    assert_eq!(
        region_dirty(&space).len() as u64,
        MIB2 / PAGE,
        "host words mark"
    );
    region.take_dirty_log().unwrap();

    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    slots.set_dirty_logging(GuestAddress(HIGH), true).unwrap();
    assert_eq!(
        slots.fetch_dirty_log(GuestAddress(HIGH)).unwrap().count(),
        0
    );

    // The guest writes three pages; the VMM writes a fourth, as a device would.
    set_table(
        &space,
        &[
            (HIGH + 3 * PAGE, 1),
            (HIGH + 64 * PAGE, 1),
            (HIGH + 100 * PAGE, 1),
        ],
    );
    let mut vcpu = vcpu(kvm, &vm);
    assert_eq!(run(&mut vcpu, &space, |_| true), Stop::Passes(1));
    space
        .memory()
        .write_obj(0xabcd_u64, GuestAddress(HIGH + 7 * PAGE + 8))
        .unwrap();
    assert_eq!(
        region_dirty(&space),
        [7],
        "the guest's writes are in KVM's log only"
    );

    // KVM's log merged into the region's bitmap: both writers' pages.
    let log = slots.fetch_dirty_log(GuestAddress(HIGH)).unwrap();
    let guest: Vec<u64> = log.dirty_pages().map(|a| (a.0 - HIGH) / PAGE).collect();
    assert_eq!(guest, [3, 64, 100], "{backing:?}");
    region.merge_dirty_log(log.words()).unwrap();
    assert_eq!(region_dirty(&space), [3, 7, 64, 100], "{backing:?}");

    // Discarding a page the guest wrote and one nobody wrote marks both.
    space
        .snapshot()
        .discard(GuestAddress(HIGH + 100 * PAGE), PAGE)
        .unwrap();
    region.discard(200 * PAGE, PAGE).unwrap();
    assert_eq!(region_dirty(&space), [3, 7, 64, 100, 200], "{backing:?}");
    let zero: u64 = space
        .memory()
        .read_obj(GuestAddress(HIGH + 100 * PAGE + 0xff8))
        .unwrap();
    assert_eq!(zero, 0, "{backing:?}: a discarded page reads zeros");

    // Taking the log gives those pages in KVM's word layout and clears the bitmap.
    let words = region.take_dirty_log().unwrap();
    let taken: Vec<u64> = (0..MIB2 / PAGE)
        .filter(|&i| words[(i / 64) as usize] & (1 << (i % 64)) != 0)
        .collect();
    assert_eq!(taken, [3, 7, 64, 100, 200], "{backing:?}");
    assert!(region_dirty(&space).is_empty());

    // The guest writes the discarded page again: the write lands in the memory the VMM reads
    // (the discard did not leave KVM a stale page) and KVM logs it.
    fill_host_words(&space, HIGH + 100 * PAGE, PAGE);
    set_table(&space, &[(HIGH + 100 * PAGE, 1)]);
    assert_eq!(run(&mut vcpu, &space, |_| true), Stop::Passes(1));
    let word: u64 = space
        .memory()
        .read_obj(GuestAddress(HIGH + 100 * PAGE + 0xff8))
        .unwrap();
    assert_eq!(word, guest_word(HIGH + 100 * PAGE), "{backing:?}");
    let log = slots.fetch_dirty_log(GuestAddress(HIGH)).unwrap();
    assert_eq!(
        log.dirty_pages().collect::<Vec<_>>(),
        [GuestAddress(HIGH + 100 * PAGE)]
    );
    region.merge_dirty_log(log.words()).unwrap();
    assert_eq!(region_dirty(&space), [100], "{backing:?}");
}
