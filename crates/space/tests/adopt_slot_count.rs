//! A vm-memory `GuestMemoryMmap` adopted by a builder keeps within the builder's memory-slot
//! numbers (`SpaceBuilder::slots`), as a space of its own regions does: a VMM bound by KVM's
//! slot limit adopts its mappings in one call.

use std::sync::Arc;

use memvisor_space::{AddressSpace, Error, Layout, Region, RegionSpec, RegionType};
use vm_memory::{GuestAddress, GuestMemoryMmap};

const MIB: u64 = 1 << 20;

fn layout() -> Layout {
    Layout::x86_64().ram(1 << 30).build().unwrap()
}

fn mappings(count: u64) -> GuestMemoryMmap {
    let ranges: Vec<_> = (0..count)
        .map(|i| (GuestAddress(i * 4 * MIB), usize::try_from(MIB).unwrap()))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).unwrap()
}

#[test]
#[cfg_attr(miri, ignore = "vm-memory's own mmap: Miri cannot map")]
fn adopt_more_mappings_than_slot_numbers_is_refused() {
    let memory = mappings(3);
    let err = AddressSpace::builder(layout())
        .slots(2)
        .adopt(&memory)
        .unwrap_err();
    assert!(matches!(err, Error::NoSlotNumber { count: 2 }), "{err}");
    let err = AddressSpace::builder(layout())
        .slots(0)
        .adopt(&memory)
        .unwrap_err();
    assert!(matches!(err, Error::NoSlotNumber { count: 0 }), "{err}");
}

#[test]
#[cfg_attr(miri, ignore = "vm-memory's own mmap: Miri cannot map")]
fn adopt_hands_out_only_the_builders_slot_numbers() {
    let memory = mappings(2);
    let space = AddressSpace::builder(layout())
        .slots(3)
        .adopt(&memory)
        .unwrap();
    let snap = space.snapshot();
    assert_eq!(snap.len(), 2);
    assert_eq!(
        snap.regions_with_slots()
            .filter(|(_, s)| s.is_some())
            .count(),
        2
    );
    let region = |base| Arc::new(Region::plan(RegionSpec::ram(GuestAddress(base), MIB)).unwrap());
    // One number is left, and then none.
    space.insert_region(region(64 * MIB)).unwrap();
    let err = space.insert_region(region(128 * MIB)).unwrap_err();
    assert!(matches!(err, Error::NoSlotNumber { count: 3 }), "{err}");
    assert_eq!(space.snapshot().len(), 3);
}

#[test]
#[cfg_attr(miri, ignore = "vm-memory's own mmap: Miri cannot map")]
fn adopt_plans_the_builders_own_regions_beside_the_mappings() {
    let memory = mappings(1);
    let mmio = RegionSpec::new(RegionType::Device, GuestAddress(0xd000_0000), 0x1000);
    let space = AddressSpace::builder(layout())
        .slots(1)
        .region(mmio.clone())
        .adopt(&memory)
        .unwrap();
    let snap = space.snapshot();
    assert_eq!(snap.len(), 2);
    assert!(snap.find_region(GuestAddress(0xd000_0000)).is_some());
    // A region of the builder over an adopted mapping is refused, and so is one more region
    // with memory than numbers.
    let over = RegionSpec::ram(GuestAddress(0), MIB);
    let err = AddressSpace::builder(layout())
        .slots(2)
        .region(over)
        .adopt(&memory)
        .unwrap_err();
    assert!(matches!(err, Error::Overlap { .. }), "{err}");
    let other = RegionSpec::ram(GuestAddress(8 * MIB), MIB);
    let err = AddressSpace::builder(layout())
        .slots(1)
        .region(other)
        .adopt(&memory)
        .unwrap_err();
    assert!(matches!(err, Error::NoSlotNumber { count: 1 }), "{err}");
}
