//! A VMM's slot changes while a vCPU runs: the tiny 64-bit guest rewrites every page of a
//! logging region pass after pass, while the address space plugs a region, turns its logging
//! on, has its removal refused (undone) by a later listener, has an insertion refused by that
//! listener and one refused by KVM (over the VMM's own slot), and unplugs it, round after
//! round, in KVM's default mode and with manual dirty-log protection (each fetch of the
//! written region then followed by `KVM_CLEAR_DIRTY_LOG` of its pages). Across each change the
//! logging region's fetches give every page a whole pass wrote since the fetch before (no write
//! lost to another slot's change), a refused change leaves `registered()` as it was, and what
//! `registered()` lists is what KVM maps (probed). (Skipped under Miri, which cannot `ioctl`
//! `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]
#![allow(clippy::cast_possible_truncation)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES;
use kvm_ioctls::VmFd;
use memvisor_kvm::{DirtyBitmap, MemorySlots, RegisteredSlot};
use memvisor_space::{
    AddressSpace, ChangeKind, Layout, RegionEvent, RegionListener, RegionSpec, WindowKind,
};
use memvisor_testkit::watchdog::within;
use support::*;
use vm_memory::GuestAddress;

const MIB2: u64 = 2 << 20;
/// Boot RAM below 4 GiB (page tables, program, table).
const LOW: u64 = 0;
/// Boot RAM the guest rewrites every pass, logging.
const WRITTEN: u64 = 4 << 30;
const PAGES: u64 = MIB2 / PAGE;
/// Where nothing of ours is: the probe slot's number.
const PROBE_SLOT: u32 = 500;
/// A bound on each wait for the guest; reaching it fails the test instead of hanging.
const PATIENCE: Duration = Duration::from_secs(60);
/// A bound on the whole test (under a second on an idle host, about one under load).
const WATCHDOG: Duration = Duration::from_secs(120);

/// One change of a round, given the bases of the regions logging; says what it did.
type Step<'a> = &'a dyn Fn(&[u64]) -> String;

/// What the later listener refuses.
const ACCEPT: u8 = 0;
const REFUSE_INSERT: u8 = 1;
const REFUSE_REMOVE: u8 = 2;

fn later_listener(mode: &Arc<AtomicU8>) -> Arc<dyn RegionListener> {
    let mode = Arc::clone(mode);
    Arc::new(
        move |e: &RegionEvent<'_>| match (mode.load(Ordering::SeqCst), e.kind) {
            (REFUSE_INSERT, ChangeKind::Inserted) | (REFUSE_REMOVE, ChangeKind::Removed) => {
                Err("refused by the later listener".into())
            }
            _ => Ok(()),
        },
    )
}

/// What `registered()` must list: every backed region of the space under its slot, with
/// `logging` for the logging ones.
fn expected(space: &AddressSpace, logging: &[u64]) -> Vec<RegisteredSlot> {
    let snapshot = space.snapshot();
    let mut out: Vec<RegisteredSlot> = snapshot
        .regions_with_slots()
        .filter(|(r, _)| r.is_backed())
        .map(|(r, slot)| {
            let flags = if logging.contains(&r.base().0) {
                KVM_MEM_LOG_DIRTY_PAGES
            } else {
                0
            };
            entry(space, slot.unwrap(), r.base().0, r.size(), flags)
        })
        .collect();
    out.sort_unstable_by_key(|e| e.slot);
    out
}

/// Whether KVM maps `addr` (a probe page there is refused).
fn kvm_maps(vm: &VmFd, addr: u64) -> bool {
    kvm_refuses_probe(vm, PROBE_SLOT, addr)
}

/// Checks that what `slots` lists is what KVM maps at `places`, and is `want`.
fn agree(ctx: &str, vm: &VmFd, slots: &MemorySlots, want: &[RegisteredSlot], places: &[u64]) {
    let listed = slots.registered();
    assert_eq!(listed, want, "{ctx}");
    for &place in places {
        let covered = listed.iter().any(|e| e.guest.contains(GuestAddress(place)));
        assert_eq!(kvm_maps(vm, place), covered, "{ctx}: KVM at {place:#x}");
    }
}

/// Fetches WRITTEN's log; with manual protection (`manual`), clears the pages fetched in
/// KVM's log right after, as a VMM in that mode does: without that, KVM would give every page
/// written once at every fetch, and a page whose write a change lost would still be counted.
fn fetch_written(vm: &VmFd, slots: &MemorySlots, manual: bool) -> DirtyBitmap {
    let dirty = slots.fetch_dirty_log(GuestAddress(WRITTEN)).unwrap();
    if manual {
        let slot = slots.slot_at(GuestAddress(WRITTEN)).unwrap();
        support::real_mode::clear_dirty_log(vm, slot, &dirty).unwrap();
    }
    dirty
}

/// Waits until the guest finished `n` passes in all; panics with how it stopped if it stopped
/// first or took too long.
fn wait_passes(guest: Running, n: u64) -> Running {
    if !guest.wait_passes(n, PATIENCE) {
        panic!("the guest did not reach pass {n}: {:?}", guest.stop());
    }
    guest
}

#[test]
fn slot_changes_while_a_guest_writes_lose_no_dirty_page_and_leave_kvm_as_listed() {
    let test = "slot_changes_while_a_guest_writes";
    let Some(kvm) = kvm_or_skip(test) else {
        return;
    };
    // On a thread of its own: a change or a fetch that never returns (a lock left held, a
    // guest that stops exiting) fails the test instead of hanging the run.
    within(test, WATCHDOG, move || {
        // KVM's default mode, then manual dirty-log protection (where the host offers it).
        for manual in [false, true] {
            if let Some(vm) = support::real_mode::vm(&kvm, manual, test) {
                churn(&kvm, &vm, manual);
            }
        }
    });
}

/// The rounds of changes on `vm` (`manual`: with manual dirty-log protection).
fn churn(kvm: &kvm_ioctls::Kvm, vm: &Arc<VmFd>, manual: bool) {
    let layout = Layout::x86_64()
        .ram(4 << 30)
        .hotplug(1 << 30)
        .build()
        .unwrap();
    let (space, _) = AddressSpace::builder(layout)
        .slots(memvisor_kvm::slot_limit(vm))
        .region(RegionSpec::ram(GuestAddress(LOW), MIB2))
        .region(RegionSpec::ram(GuestAddress(WRITTEN), MIB2))
        .back()
        .unwrap();
    load_program(&space);
    fill_host_words(&space, WRITTEN, MIB2);
    set_table(&space, &[(WRITTEN, PAGES)]);
    let slots = MemorySlots::attach(Arc::clone(vm), &space).unwrap();
    slots
        .set_dirty_logging(GuestAddress(WRITTEN), true)
        .unwrap();
    let mode = Arc::new(AtomicU8::new(ACCEPT));
    let later = later_listener(&mode);
    space.add_listener(Arc::clone(&later)).unwrap();
    let mut placer = space.snapshot().placer().unwrap();
    let plug = placer
        .place(WindowKind::Hotplug, MIB2, MIB2, "dimm")
        .unwrap()
        .start()
        .0;
    // Boot RAM no region covers: where a refused insertion goes.
    let refused_at = 2 << 30;
    let places = [WRITTEN, plug, plug + MIB2 - PAGE, plug + MIB2, refused_at];

    let mut guest = Running::start(vcpu(kvm, vm), &space);
    guest = wait_passes(guest, 1);
    // Every page of WRITTEN: what a fetch gives after a whole pass since the fetch before.
    fetch_written(vm, &slots, manual);
    // Two rounds (plugging again after the unplug) in the default mode, one with manual
    // protection, to keep the test short.
    let rounds = if manual { 1 } else { 2 };
    for round in 0..rounds {
        let mut logging = vec![WRITTEN];
        // Each change, then a fetch of WRITTEN after a whole pass that began after the fetch
        // before: every page dirty.
        let steps: [Step<'_>; 6] = [
            &|_| {
                mode.store(ACCEPT, Ordering::SeqCst);
                space
                    .plug(RegionSpec::ram(GuestAddress(plug), MIB2).with_hotplug(true))
                    .unwrap();
                "plug".into()
            },
            &|_| {
                mode.store(ACCEPT, Ordering::SeqCst);
                slots.set_dirty_logging(GuestAddress(plug), true).unwrap();
                let clean = slots.fetch_dirty_log(GuestAddress(plug)).unwrap();
                assert_eq!(
                    clean.count(),
                    0,
                    "manual protection {manual}, round {round}: the guest never writes it"
                );
                "logging on".into()
            },
            &|logging| {
                mode.store(REFUSE_REMOVE, Ordering::SeqCst);
                let before = slots.registered();
                assert!(space.remove_region(GuestAddress(plug), MIB2).is_err());
                assert_eq!(
                    slots.registered(),
                    before,
                    "manual protection {manual}, round {round}: refused removal"
                );
                assert!(logging.contains(&plug));
                // KVM dropped the log with the deleted slot: every page is owed, once.
                let owed = slots.fetch_dirty_log(GuestAddress(plug)).unwrap();
                assert_eq!(
                    owed.count(),
                    PAGES,
                    "manual protection {manual}, round {round}"
                );
                let clean = slots.fetch_dirty_log(GuestAddress(plug)).unwrap();
                assert_eq!(
                    clean.count(),
                    0,
                    "manual protection {manual}, round {round}"
                );
                "refused removal".into()
            },
            &|_| {
                mode.store(REFUSE_INSERT, Ordering::SeqCst);
                let before = slots.registered();
                let err = space.insert_region(backed(refused_at, MIB2)).unwrap_err();
                assert_eq!(
                    slots.registered(),
                    before,
                    "manual protection {manual}, round {round}: refused insertion: {err}"
                );
                "refused insertion".into()
            },
            &|_| {
                // The VMM's own memory under a number the space does not hand out: KVM refuses
                // the space's insertion over it, and our listener refuses the change.
                mode.store(ACCEPT, Ordering::SeqCst);
                let own = backed(0, MIB2);
                let mut mem = kvm_bindings::kvm_userspace_memory_region {
                    slot: PROBE_SLOT + 1,
                    flags: 0,
                    guest_phys_addr: refused_at,
                    memory_size: MIB2,
                    userspace_addr: own.host_ptr().unwrap() as u64,
                };
                // SAFETY: `own` stays mapped until the slot is deleted below.
                unsafe { vm.set_user_memory_region(mem) }.unwrap();
                let before = slots.registered();
                let result = space.insert_region(backed(refused_at, MIB2));
                let after = slots.registered();
                mem.memory_size = 0;
                // SAFETY: deleting a slot refers to no memory.
                unsafe { vm.set_user_memory_region(mem) }.unwrap();
                drop(own);
                let err = result.unwrap_err();
                let memvisor_space::Error::Listener { source, .. } = &err else {
                    panic!("{err}");
                };
                assert!(
                    matches!(
                        source.downcast_ref::<memvisor_kvm::Error>(),
                        Some(memvisor_kvm::Error::SetMemoryRegion { .. })
                    ),
                    "{err}: {source}"
                );
                assert_eq!(after, before, "manual protection {manual}: {err}");
                "insertion KVM refused".into()
            },
            &|_| {
                mode.store(ACCEPT, Ordering::SeqCst);
                space.remove_region(GuestAddress(plug), MIB2).unwrap();
                "unplug".into()
            },
        ];
        for (i, step) in steps.iter().enumerate() {
            let after_fetch = guest.passes();
            let what = step(&logging);
            if i == 1 {
                logging.push(plug);
            }
            if i == 5 {
                logging.retain(|&b| b != plug);
            }
            let ctx = format!("manual protection {manual}, round {round}, {what}");
            agree(&ctx, vm, &slots, &expected(&space, &logging), &places);
            guest = wait_passes(guest, after_fetch + 2);
            let dirty = fetch_written(vm, &slots, manual);
            assert_eq!(dirty.count(), PAGES, "{ctx}: pages the guest wrote lost");
        }
    }
    let passes = guest.passes();
    match guest.stop() {
        Stop::Passes(n) => assert!(n >= passes),
        other => panic!("the guest stopped: {other:?}"),
    }
    space.remove_listener(&later).unwrap();
}
