//! Memory stays mapped for as long as anything holds its region, whatever happened to the
//! address space: a region plugged into the hotplug window, a snapshot and a region adopted from
//! vm-memory are read and written through vm-memory's traits after the space (and the window
//! it reserved, and the vm-memory collection) are gone. Run natively under AddressSanitizer too.

#![cfg(target_os = "linux")]
#![allow(clippy::cast_possible_truncation)]

use std::sync::Arc;

use memvisor_space::{AddressSpace, Layout, Region, RegionSpec, RegionType, WindowKind};
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

#[test]
#[cfg_attr(miri, ignore = "makes memfds: Miri cannot")]
fn plugged_region_and_snapshot_outlive_the_space_and_its_window() {
    let layout = Layout::x86_64().ram(GIB).hotplug(GIB).build().unwrap();
    let (space, _) =
        AddressSpace::back(layout, [RegionSpec::ram(GuestAddress(0), 2 * MIB)]).unwrap();
    let at = space
        .layout()
        .windows_of(WindowKind::Hotplug)
        .next()
        .unwrap()
        .start();
    let spec = RegionSpec::ram(at, 2 * MIB)
        .with_hotplug(true)
        .with_backing(memvisor_space::Backing::Memfd)
        .with_dirty_tracking(true);
    let (plugged, _) = space.plug(spec).unwrap();
    let snapshot = space.snapshot();
    snapshot
        .write_obj(0x1122_3344_u32, GuestAddress(at.0 + 8))
        .unwrap();
    drop(space.remove_region(at, 2 * MIB).unwrap());
    drop(space);
    // The window's reservation lives on with the region.
    let last = MemoryRegionAddress(2 * MIB - 4);
    plugged.write_obj(0x5566_7788_u32, last).unwrap();
    assert_eq!(
        plugged.read_obj::<u32>(MemoryRegionAddress(8)).unwrap(),
        0x1122_3344
    );
    let slice = plugged.as_volatile_slice().unwrap();
    assert_eq!(slice.len(), 2 * MIB as usize);
    assert_eq!(
        snapshot
            .read_obj::<u32>(GuestAddress(at.0 + 2 * MIB - 4))
            .unwrap(),
        0x5566_7788
    );
    assert_eq!(snapshot.read_obj::<u8>(GuestAddress(0)).unwrap(), 0);
    drop(snapshot);
    assert!(plugged.is_dirty(2 * MIB - 4));
    assert_eq!(slice.len(), plugged.len() as usize);
    drop(plugged);
}

#[test]
#[cfg_attr(miri, ignore = "maps memory through vm-memory: Miri cannot")]
fn adopted_region_outlives_its_vm_memory_collection() {
    let memory: GuestMemoryMmap =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 * MIB as usize)]).unwrap();
    let region = Arc::new(
        Region::from_guest_region_mmap(
            RegionType::Ram,
            memory.find_region(GuestAddress(0)).unwrap(),
        )
        .unwrap(),
    );
    memory.write_obj(7u64, GuestAddress(MIB)).unwrap();
    drop(memory);
    assert_eq!(region.read_obj::<u64>(MemoryRegionAddress(MIB)).unwrap(), 7);
    region
        .write_obj(9u64, MemoryRegionAddress(2 * MIB - 8))
        .unwrap();
    let layout = Layout::x86_64().ram(GIB).build().unwrap();
    let space = AddressSpace::plan(layout, []).unwrap();
    space.insert_region(Arc::clone(&region)).unwrap();
    let snapshot = space.snapshot();
    drop(space.remove_region(GuestAddress(0), 2 * MIB).unwrap());
    drop(space);
    drop(region);
    assert_eq!(
        snapshot.read_obj::<u64>(GuestAddress(2 * MIB - 8)).unwrap(),
        9
    );
}
