//! Several threads at once on the host's real KVM: regions inserted, removed and replaced by
//! others of another size at the same place, hot-plugged and unplugged, while other threads
//! fetch dirty logs, toggle logging and query the slots; and the slots dropped while the space
//! keeps changing. Afterwards KVM itself is asked what it holds (by slot number and by guest
//! address), which must be exactly the space's backed regions. (Skipped under Miri, which
//! cannot `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kvm_ioctls::VmFd;
use memvisor_kvm::{Error, MemorySlots};
use memvisor_space::{AddressSpace, RegionSpec, WindowKind};
use support::{MIB, SetOnDrop, backed, backed_space, kvm_or_skip, kvm_refuses_probe, page};
use vm_memory::GuestAddress;

/// Places of RAM regions, inserted and removed with `insert_region`/`remove_region`.
const RAM: [u64; 3] = [4 * MIB, 8 * MIB, 12 * MIB];
/// Offsets of hot-plugged regions in the hotplug window.
const PLUGGED: [u64; 3] = [0, 8 * MIB, 16 * MIB];
/// Slot numbers asked of KVM at the end: more than the space can have used.
const NUMBERS: u32 = 16;
/// Where the slot-number probes go: a guest address no region of the test uses (the 32-bit
/// hole of the x86-64 layout).
const PROBE_BASE: u64 = 0xc000_0000;

/// The slot numbers below [`NUMBERS`] KVM has, asked of KVM itself.
fn kvm_numbers(vm: &VmFd) -> Vec<u32> {
    (0..NUMBERS)
        .filter(|&n| kvm_refuses_probe(vm, n, PROBE_BASE))
        .collect()
}

/// The places of the test where KVM maps guest memory, asked of KVM itself.
fn kvm_places(vm: &VmFd, places: &[u64]) -> Vec<u64> {
    places
        .iter()
        .copied()
        .filter(|&addr| kvm_refuses_probe(vm, 500, addr))
        .collect()
}

/// `(slot, base, size)` of every backed region of the space.
fn space_slots(space: &AddressSpace) -> Vec<(u32, u64, u64)> {
    let snapshot = space.snapshot();
    let mut slots: Vec<_> = snapshot
        .regions_with_slots()
        .map(|(r, slot)| (slot.unwrap(), r.base().0, r.size()))
        .collect();
    slots.sort_unstable();
    slots
}

/// Every place of the test, RAM and plugged.
fn places(space: &AddressSpace) -> Vec<u64> {
    let hotplug = hotplug_start(space);
    std::iter::once(0)
        .chain(RAM)
        .chain(PLUGGED.iter().map(|o| hotplug + o))
        .collect()
}

fn hotplug_start(space: &AddressSpace) -> u64 {
    space
        .layout()
        .windows_of(WindowKind::Hotplug)
        .next()
        .unwrap()
        .start()
        .0
}

/// Replaces the region at each RAM place by one of another size, `rounds` times.
fn churn_ram(space: &AddressSpace, rounds: u64) {
    for i in 0..rounds {
        let base = RAM[(i % 3) as usize];
        let size = if (i / 3).is_multiple_of(2) {
            page()
        } else {
            5 * page()
        };
        if let Some(r) = space.find_region(GuestAddress(base)) {
            space.remove_region(r.base(), r.size()).unwrap();
        }
        space.insert_region(backed(base, size)).unwrap();
    }
}

/// Plugs and unplugs at each plugged place, in two sizes, `rounds` times.
fn churn_plugged(space: &AddressSpace, rounds: u64) {
    let hotplug = hotplug_start(space);
    for i in 0..rounds {
        let base = hotplug + PLUGGED[(i % 3) as usize];
        let size = if (i / 3).is_multiple_of(2) {
            2 * MIB
        } else {
            4 * MIB
        };
        if let Some(r) = space.find_region(GuestAddress(base)) {
            space.remove_region(r.base(), r.size()).unwrap();
        }
        let spec = RegionSpec::ram(GuestAddress(base), size).with_hotplug(true);
        // A reader on another thread may still hold a snapshot with the region unplugged
        // here, which keeps its place mapped for that long (`SlotBusy`): plug again.
        loop {
            match space.plug(spec.clone()) {
                Ok(_) => break,
                Err(memvisor_space::Error::SlotBusy { .. }) => std::thread::yield_now(),
                Err(e) => panic!("plug: {e}"),
            }
        }
    }
}

/// Fetches, toggles and queries until `done`: only the errors the races allow.
fn use_slots(slots: &MemorySlots, places: &[u64], done: &AtomicBool, seed: u64) -> u64 {
    let mut fetched = 0;
    let mut round = seed;
    while !done.load(Ordering::SeqCst) {
        round += 1;
        for &base in places {
            let base = GuestAddress(base);
            if round.is_multiple_of(4) {
                match slots.set_dirty_logging(base, round.is_multiple_of(8)) {
                    // Gone, or on already and its log then taken by another thread's change.
                    Ok(()) | Err(Error::NotRegistered { .. }) => {}
                    Err(e) => panic!("set_dirty_logging: {e}"),
                }
            }
            match slots.fetch_dirty_log(base) {
                Ok(log) => {
                    assert_eq!(log.base(), base);
                    assert!(log.count() <= log.pages());
                    assert_eq!(log.dirty_pages().count() as u64, log.count());
                    fetched += 1;
                }
                // Gone, or logging off.
                Err(Error::NotRegistered { .. } | Error::DirtyLog { .. }) => {}
                Err(e) => panic!("fetch_dirty_log: {e}"),
            }
        }
        assert!(slots.out_of_sync().is_empty());
        let registered = slots.registered();
        assert!(registered.windows(2).all(|w| w[0].slot < w[1].slot));
        assert!(registered.len() <= places.len());
    }
    fetched
}

#[test]
fn changes_fetches_and_toggles_on_several_threads_end_with_kvm_holding_the_space() {
    let Some(kvm) = kvm_or_skip("changes_fetches_and_toggles_on_several_threads") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = backed_space(&vm, [RegionSpec::ram(GuestAddress(0), MIB)]);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    let places = places(&space);
    let done = AtomicBool::new(false);
    let fetched = std::thread::scope(|s| {
        // Set when this thread fails too, so that the users stop and the failure shows
        // instead of the scope's waiting for them for ever.
        let stopping = SetOnDrop(&done);
        let users: Vec<_> = (0..2)
            .map(|seed| {
                let (slots, places, done) = (&slots, &places, &done);
                s.spawn(move || use_slots(slots, places, done, seed * 3))
            })
            .collect();
        let ram = s.spawn(|| churn_ram(&space, 120));
        let plugged = s.spawn(|| churn_plugged(&space, 60));
        let churned = (ram.join(), plugged.join());
        // Also when a churning thread panicked, so that the users stop and the panic shows.
        drop(stopping);
        let fetched = users.into_iter().map(|u| u.join().unwrap()).sum::<u64>();
        churned.0.unwrap();
        churned.1.unwrap();
        fetched
    });
    assert!(fetched > 0);

    // The slots, and KVM itself, hold exactly the space's backed regions.
    let expected = space_slots(&space);
    let registered: Vec<_> = slots
        .registered()
        .into_iter()
        .map(|e| (e.slot, e.guest.start().0, e.guest.size().unwrap()))
        .collect();
    assert_eq!(registered, expected);
    assert_eq!(
        kvm_numbers(&vm),
        expected.iter().map(|&(slot, ..)| slot).collect::<Vec<_>>()
    );
    assert_eq!(kvm_places(&vm, &places), places);
    // A fetch of each logging region works, and gives no page past it.
    for entry in slots.registered() {
        if entry.flags & kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES != 0 {
            let log = slots.fetch_dirty_log(entry.guest.start()).unwrap();
            assert!(log.count() <= log.pages());
        }
    }

    // Dropped: KVM holds nothing, and the space changes on.
    drop(slots);
    assert!(kvm_numbers(&vm).is_empty());
    assert!(kvm_places(&vm, &places).is_empty());
    churn_ram(&space, 3);
}

#[test]
fn slots_dropped_while_other_threads_change_the_space_leave_kvm_empty() {
    let Some(kvm) = kvm_or_skip("slots_dropped_while_other_threads_change_the_space") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = backed_space(&vm, [RegionSpec::ram(GuestAddress(0), MIB)]);
    let places = places(&space);
    for round in 0..4u64 {
        let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
        let started = AtomicBool::new(false);
        std::thread::scope(|s| {
            let ram = s.spawn(|| {
                started.store(true, Ordering::SeqCst);
                churn_ram(&space, 30);
            });
            let plugged = s.spawn(|| churn_plugged(&space, 15));
            while !started.load(Ordering::SeqCst) && !ram.is_finished() {
                std::hint::spin_loop();
            }
            // A few changes in, the slots go (waiting for a change in progress).
            for _ in 0..round * 4 {
                let _ = slots.fetch_dirty_log(GuestAddress(0));
                std::thread::yield_now();
            }
            drop(slots);
            assert!(kvm_numbers(&vm).is_empty());
            ram.join().unwrap();
            plugged.join().unwrap();
        });
        // Whenever they went, KVM holds nothing, and attaching again gives the space.
        assert!(kvm_numbers(&vm).is_empty());
        assert!(kvm_places(&vm, &places).is_empty());
        let again = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
        let registered: Vec<_> = again
            .registered()
            .into_iter()
            .map(|e| (e.slot, e.guest.start().0, e.guest.size().unwrap()))
            .collect();
        assert_eq!(registered, space_slots(&space));
        assert_eq!(kvm_places(&vm, &places), places);
        drop(again);
    }
}
