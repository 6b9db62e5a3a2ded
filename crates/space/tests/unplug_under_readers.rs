//! Hot-unplug while device threads hold snapshots: memory written through an old snapshot after
//! the unplug stays that region's (never the memory of what is plugged next), the place cannot
//! be plugged again until the last holder lets go, memory plugged there then reads zeros, and
//! the dirty log of each region marks exactly the pages written through it; an idle reader
//! holds its last snapshot until its next lookup.

#![cfg(target_os = "linux")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use memvisor_space::{AddressSpace, Backing, Error, Layout, RegionSpec, WindowKind};
use vm_memory::{Bytes, GuestAddress};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn page() -> u64 {
    memvisor_vmem::page_size() as u64
}

fn space() -> (AddressSpace, GuestAddress) {
    let layout = Layout::x86_64().ram(GIB).hotplug(GIB).build().unwrap();
    let (space, _) =
        AddressSpace::back(layout, [RegionSpec::ram(GuestAddress(0), 2 * MIB)]).unwrap();
    let at = space
        .layout()
        .windows_of(WindowKind::Hotplug)
        .next()
        .unwrap()
        .start();
    (space, at)
}

fn slot(at: GuestAddress) -> RegionSpec {
    RegionSpec::ram(at, 2 * MIB)
        .with_hotplug(true)
        .with_backing(Backing::Memfd)
        .with_dirty_tracking(true)
}

/// Pages marked in the log of the region at `at` in `snapshot`.
fn dirty(snapshot: &memvisor_space::Snapshot, at: GuestAddress) -> Vec<u64> {
    let region = snapshot.find_region(at).unwrap();
    (0..region.size() / page())
        .filter(|i| region.is_dirty(i * page()))
        .collect()
}

#[test]
#[cfg_attr(miri, ignore = "makes memfds: Miri cannot")]
fn writes_through_a_snapshot_held_across_an_unplug_stay_in_the_unplugged_memory() {
    let (space, at) = space();
    space.plug(slot(at)).unwrap();
    let held = space.snapshot();
    held.write_obj(0xfeed_u32, GuestAddress(at.0 + page()))
        .unwrap();
    drop(space.remove_region(at, 2 * MIB).unwrap());
    // The reader still writes to the unplugged memory, and its log marks that page only.
    held.write_obj(0xbeef_u32, GuestAddress(at.0 + 3 * page() + 4))
        .unwrap();
    assert_eq!(dirty(&held, at), [1, 3]);
    assert!(space.snapshot().find_region(at).is_none());
    // The place is held until the reader lets go; a plug elsewhere is taken.
    assert!(matches!(space.plug(slot(at)), Err(Error::SlotBusy { .. })));
    let next = GuestAddress(at.0 + 2 * MIB);
    space.plug(slot(next)).unwrap();
    assert_eq!(space.snapshot().read_obj::<u32>(next).unwrap(), 0);
    assert_eq!(
        held.read_obj::<u32>(GuestAddress(at.0 + page())).unwrap(),
        0xfeed
    );
    drop(held);
    // Plugged again: fresh memory, nothing of the old region's bytes, an empty log.
    space.plug(slot(at)).unwrap();
    let now = space.snapshot();
    for offset in [page(), 3 * page() + 4] {
        assert_eq!(now.read_obj::<u32>(GuestAddress(at.0 + offset)).unwrap(), 0);
    }
    assert_eq!(dirty(&now, at), [] as [u64; 0]);
}

/// A writer thread plugs and unplugs one place while reader threads write and read back through
/// the snapshots they hold: every access either finds the region and sees its own bytes, or
/// finds a hole; nothing crashes, and a plug refused while a reader holds the place is
/// `SlotBusy` and changes nothing.
#[test]
#[cfg_attr(miri, ignore = "makes memfds: Miri cannot")]
fn readers_hold_snapshots_while_a_place_is_plugged_and_unplugged() {
    let (space, at) = space();
    let rounds = 200;
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(3));
    let readers: Vec<_> = (0..2u64)
        .map(|id| {
            let (space, stop, start) = (space.clone(), Arc::clone(&stop), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                let mut reader = space.reader();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let snapshot = Arc::clone(reader.load());
                    let addr = GuestAddress(at.0 + id * page() + (n % 64) * 8);
                    let value = (id << 32) | n;
                    match snapshot.write_obj(value, addr) {
                        Ok(()) => assert_eq!(snapshot.read_obj::<u64>(addr).unwrap(), value),
                        Err(_) => assert!(snapshot.find_region(addr).is_none()),
                    }
                    n += 1;
                }
            })
        })
        .collect();
    start.wait();
    let (mut plugged, mut busy) = (0, 0);
    for _ in 0..rounds {
        let before = space.snapshot().len();
        match space.plug(slot(at)) {
            Ok(_) => {
                plugged += 1;
                drop(space.remove_region(at, 2 * MIB).unwrap());
            }
            Err(Error::SlotBusy { .. }) => {
                busy += 1;
                assert_eq!(space.snapshot().len(), before);
                std::thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(plugged + busy, rounds);
    assert!(plugged > 0);
    space.snapshot().check_invariants();
}

/// A `SpaceReader` holds the snapshot it last loaded until its next lookup: an idle thread's
/// reader keeps an unplugged region's memory, and its place busy, until it looks again (or is
/// dropped).
#[test]
#[cfg_attr(miri, ignore = "makes memfds: Miri cannot")]
fn an_idle_reader_keeps_an_unplugged_place_until_its_next_lookup() {
    let (space, at) = space();
    space.plug(slot(at)).unwrap();
    let mut reader = space.reader();
    assert!(reader.find_region(at).is_some());
    drop(space.remove_region(at, 2 * MIB).unwrap());
    assert!(matches!(
        space.plug(slot(at)).unwrap_err(),
        Error::SlotBusy { .. }
    ));
    assert!(reader.find_region(at).is_none());
    space.plug(slot(at)).unwrap();
    assert!(reader.find_region(at).is_some());
    drop(space.remove_region(at, 2 * MIB).unwrap());
    assert!(matches!(
        space.plug(slot(at)).unwrap_err(),
        Error::SlotBusy { .. }
    ));
    // Dropped, it holds nothing either.
    drop(reader);
    space.plug(slot(at)).unwrap();
}
