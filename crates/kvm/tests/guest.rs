//! Tests that run a tiny guest of our own on the host's real KVM, over memory planned, backed
//! and registered by memvisor. (Skipped under Miri, which cannot make system calls such as
//! `ioctl` on `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]
#![allow(clippy::cast_possible_truncation)]

mod support;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use memvisor_kvm::{MemorySlots, slot_limit};
use memvisor_space::{AddressSpace, Layout, RegionSpec};
use support::*;
use vm_memory::GuestAddress;

const MIB2: u64 = 2 << 20;
/// Boot RAM below 4 GiB (holds the page tables and the program).
const LOW: u64 = 0;
/// Boot RAM above 4 GiB.
const HIGH: u64 = 4 << 30;
/// A hotplug slot.
const PLUG: u64 = 5 << 30;
const PAGES: u64 = MIB2 / PAGE;
/// A bound on how long the guest may take; reaching it fails the test instead of hanging.
const PATIENCE: Duration = Duration::from_secs(300);

fn space(vm: &kvm_ioctls::VmFd) -> AddressSpace {
    let layout = Layout::x86_64()
        .ram(4 << 30)
        .hotplug(1 << 30)
        .build()
        .unwrap();
    let (space, _) = AddressSpace::builder(layout)
        .slots(slot_limit(vm))
        .region(RegionSpec::ram(GuestAddress(LOW), MIB2))
        .region(RegionSpec::ram(GuestAddress(HIGH), MIB2))
        .back()
        .unwrap();
    load_program(&space);
    fill_host_words(&space, LOW, MIB2);
    fill_host_words(&space, HIGH, MIB2);
    space
}

#[test]
fn guest_writes_every_page_of_every_region_including_hotplugged_one() {
    let Some(kvm) = kvm_or_skip("guest_writes_every_page_of_every_region") else {
        return;
    };
    let vm = vm(&kvm);
    let space = space(&vm);
    set_table(&space, &[(LOW, PAGES), (HIGH, PAGES)]);
    let low_before = read(&space, LOW, MIB2);
    let high_before = read(&space, HIGH, MIB2);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    assert_eq!(
        slots.registered(),
        [
            entry(&space, 0, LOW, MIB2, 0),
            entry(&space, 1, HIGH, MIB2, 0)
        ],
        "one KVM slot per backed region, under its memvisor slot number"
    );
    let guest = Running::start(vcpu(&kvm, &vm), &space);
    assert!(
        guest.wait_passes(1, PATIENCE),
        "no first pass: {:?}",
        guest.stop()
    );

    // Every byte of the boot regions: the host's words and the guest's, nothing else.
    assert!(read(&space, LOW, MIB2) == expected_after_guest(LOW, &low_before));
    assert!(read(&space, HIGH, MIB2) == expected_after_guest(HIGH, &high_before));

    // Plug a slot while the vCPU runs, then hand it to the guest.
    let (region, _) = space
        .plug(RegionSpec::ram(GuestAddress(PLUG), MIB2).with_hotplug(true))
        .unwrap();
    assert_eq!(slots.slot_at(GuestAddress(PLUG)), Some(2));
    assert_eq!(region.base(), GuestAddress(PLUG));
    fill_host_words(&space, PLUG, MIB2);
    let plug_before = read(&space, PLUG, MIB2);
    let seen = guest.passes();
    append_entry(&space, 2, PLUG, PAGES);
    // A pass that started after the new entry was written.
    assert!(
        guest.wait_passes(seen + 2, PATIENCE),
        "guest stopped: {:?}",
        guest.stop()
    );
    let stop = guest.stop();
    assert!(matches!(stop, Stop::Passes(_)), "{stop:?}");
    assert!(read(&space, PLUG, MIB2) == expected_after_guest(PLUG, &plug_before));
}

#[test]
fn guest_finds_wrong_host_word_and_reports_it() {
    let Some(kvm) = kvm_or_skip("guest_finds_wrong_host_word_and_reports_it") else {
        return;
    };
    let vm = vm(&kvm);
    let space = space(&vm);
    let bad = HIGH + 7 * PAGE;
    vm_memory::Bytes::write_obj(&*space.memory(), 0u64, GuestAddress(bad + 0xff0)).unwrap();
    let _slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    set_table(&space, &[(HIGH, PAGES)]);
    let mut vcpu = vcpu(&kvm, &vm);
    assert_eq!(run(&mut vcpu, &space, |_| true), Stop::BadHostWord(bad));
}

#[test]
fn dirty_log_equals_pages_the_guest_wrote_and_clears() {
    let Some(kvm) = kvm_or_skip("dirty_log_equals_pages_the_guest_wrote_and_clears") else {
        return;
    };
    let vm = vm(&kvm);
    let space = space(&vm);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    slots.set_dirty_logging(GuestAddress(HIGH), true).unwrap();
    let clean = slots.fetch_dirty_log(GuestAddress(HIGH)).unwrap();
    assert_eq!(clean.count(), 0, "host writes are not in KVM's log");

    let pages = [0u64, 1, 63, 64, 65, 200, 511];
    let entries: Vec<(u64, u64)> = pages.iter().map(|p| (HIGH + p * PAGE, 1)).collect();
    set_table(&space, &entries);
    let mut vcpu = vcpu(&kvm, &vm);
    assert_eq!(run(&mut vcpu, &space, |_| true), Stop::Passes(1));

    let dirty = slots.fetch_dirty_log(GuestAddress(HIGH)).unwrap();
    let want: Vec<GuestAddress> = pages
        .iter()
        .map(|p| GuestAddress(HIGH + p * PAGE))
        .collect();
    assert_eq!(dirty.dirty_pages().collect::<Vec<_>>(), want);
    assert_eq!(dirty.size(), MIB2);

    // Fetching cleared KVM's log.
    assert_eq!(
        slots.fetch_dirty_log(GuestAddress(HIGH)).unwrap().count(),
        0
    );

    // The VMM's own writes merge with the guest's.
    let mut bitmap = memvisor_kvm::DirtyBitmap::new(GuestAddress(HIGH), MIB2, PAGE).unwrap();
    bitmap.mark(GuestAddress(HIGH + 5 * PAGE), 8);
    set_table(&space, &[(HIGH + 300 * PAGE, 2)]);
    assert_eq!(run(&mut vcpu, &space, |_| true), Stop::Passes(1));
    slots.fetch_dirty_log_into(&mut bitmap).unwrap();
    let merged: Vec<u64> = bitmap.dirty_pages().map(|a| (a.0 - HIGH) / PAGE).collect();
    assert_eq!(merged, [5, 300, 301]);

    // Off again: KVM has no log to give.
    slots.set_dirty_logging(GuestAddress(HIGH), false).unwrap();
    let err = slots.fetch_dirty_log(GuestAddress(HIGH)).unwrap_err();
    assert!(
        matches!(err, memvisor_kvm::Error::DirtyLog { slot: 1, .. }),
        "{err}"
    );
    // The low region never had it.
    assert!(slots.fetch_dirty_log(GuestAddress(LOW)).is_err());
}

#[test]
fn unplug_while_guest_runs_exits_to_mmio_not_crash() {
    let Some(kvm) = kvm_or_skip("unplug_while_guest_runs_exits_to_mmio_not_crash") else {
        return;
    };
    let vm = vm(&kvm);
    let space = space(&vm);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    space
        .plug(RegionSpec::ram(GuestAddress(PLUG), MIB2).with_hotplug(true))
        .unwrap();
    fill_host_words(&space, PLUG, MIB2);
    set_table(&space, &[(PLUG, PAGES)]);
    let guest = Running::start(vcpu(&kvm, &vm), &space);
    assert!(
        guest.wait_passes(1, PATIENCE),
        "no first pass: {:?}",
        guest.stop()
    );

    let removed = space.remove_region(GuestAddress(PLUG), MIB2).unwrap();
    // KVM let go of the slot before the space published the removal, and the memory is
    // still mapped: the returned region holds it until dropped.
    assert_eq!(slots.slot_at(GuestAddress(PLUG)), None);
    assert!(removed.host_ptr().is_some());
    drop(removed);

    let start = Instant::now();
    while !guest.is_finished() && start.elapsed() < PATIENCE {
        thread::sleep(Duration::from_millis(1));
    }
    match guest.join() {
        Stop::Mmio(addr) => assert!((PLUG..PLUG + MIB2).contains(&addr), "{addr:#x}"),
        other => panic!("expected an MMIO exit in the unplugged range, got {other:?}"),
    }
    // The boot regions are still there.
    assert_eq!(slots.len(), 2);
}

/// A removal that a later listener refuses leaves the slot as it was: dirty logging still on,
/// and the pages the guest wrote before it still in the next fetch (with every other page of
/// the region: KVM dropped its log with the deleted slot).
#[test]
fn refused_removal_keeps_dirty_logging_and_the_log() {
    let Some(kvm) = kvm_or_skip("refused_removal_keeps_dirty_logging_and_the_log") else {
        return;
    };
    let vm = vm(&kvm);
    let space = space(&vm);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    slots.set_dirty_logging(GuestAddress(HIGH), true).unwrap();
    let before = slots.registered();
    set_table(&space, &[(HIGH + 3 * PAGE, 1)]);
    let mut vcpu = vcpu(&kvm, &vm);
    assert_eq!(run(&mut vcpu, &space, |_| true), Stop::Passes(1));

    // A listener after the slots refuses removals; another one panics on them.
    let refuse: Arc<dyn memvisor_space::RegionListener> =
        Arc::new(|e: &memvisor_space::RegionEvent<'_>| {
            if e.kind == memvisor_space::ChangeKind::Removed {
                Err("busy".into())
            } else {
                Ok(())
            }
        });
    space.add_listener(Arc::clone(&refuse)).unwrap();
    assert!(space.remove_region(GuestAddress(HIGH), MIB2).is_err());
    assert_eq!(slots.registered(), before, "the slot is back as it was");
    // Refused again before any fetch: the next fetch still reports the pages, once.
    assert!(space.remove_region(GuestAddress(HIGH), MIB2).is_err());
    assert_eq!(slots.registered(), before);
    let dirty = slots.fetch_dirty_log(GuestAddress(HIGH)).unwrap();
    assert!(
        dirty.is_dirty(GuestAddress(HIGH + 3 * PAGE)),
        "the guest's write before the refused removal is kept"
    );
    assert_eq!(dirty.count(), PAGES, "every page of the region is reported");
    // Fetched once: the log is KVM's again, and clean.
    assert_eq!(
        slots.fetch_dirty_log(GuestAddress(HIGH)).unwrap().count(),
        0
    );
    // Once the removal goes through, the slot and its log are gone.
    space.remove_listener(&refuse).unwrap();
    space.remove_region(GuestAddress(HIGH), MIB2).unwrap();
    assert!(slots.slot_at(GuestAddress(HIGH)).is_none());
}

/// Turning dirty logging on when it is on already keeps KVM's log, as KVM itself does for a
/// slot whose flags do not change: a VMM making sure logging is on loses no page the guest
/// wrote since the last fetch. Off and on again starts clean.
#[test]
fn dirty_logging_on_again_keeps_the_log() {
    let Some(kvm) = kvm_or_skip("dirty_logging_on_again_keeps_the_log") else {
        return;
    };
    let vm = vm(&kvm);
    let space = space(&vm);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    slots.set_dirty_logging(GuestAddress(HIGH), true).unwrap();
    set_table(&space, &[(HIGH + 3 * PAGE, 1)]);
    let mut vcpu = vcpu(&kvm, &vm);
    assert_eq!(run(&mut vcpu, &space, |_| true), Stop::Passes(1));
    slots.set_dirty_logging(GuestAddress(HIGH), true).unwrap();
    let dirty = slots.fetch_dirty_log(GuestAddress(HIGH)).unwrap();
    assert_eq!(
        dirty.count(),
        1,
        "the guest's write before the call is kept"
    );
    assert!(dirty.is_dirty(GuestAddress(HIGH + 3 * PAGE)));
    // Off and on again: KVM drops its log with the flag.
    assert_eq!(run(&mut vcpu, &space, |_| true), Stop::Passes(1));
    slots.set_dirty_logging(GuestAddress(HIGH), false).unwrap();
    slots.set_dirty_logging(GuestAddress(HIGH), true).unwrap();
    assert_eq!(
        slots.fetch_dirty_log(GuestAddress(HIGH)).unwrap().count(),
        0
    );
}
