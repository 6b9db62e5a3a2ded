//! A planned region (a memory backing, no memory: `Region::plan`) in a backed address space:
//! taken, numbered as it would be backed, listed in the memory map as its type, and left out of
//! vm-memory's view, whose accesses find a hole there. A VMM that inserts one maps the memory
//! itself (see `Snapshot::memory_map`); each view is pinned here so that none changes unseen.

use std::sync::Arc;

use memvisor_space::{AddressSpace, Layout, MemoryType, Region, RegionSpec};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError};

const MIB: u64 = 1 << 20;

#[test]
fn planned_memory_in_a_backed_space_is_mapped_for_the_guest_and_a_hole_for_vm_memory() {
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let (space, _) = AddressSpace::back(layout, [RegionSpec::ram(GuestAddress(0), MIB)]).unwrap();
    let planned = Region::plan(RegionSpec::ram(GuestAddress(4 * MIB), MIB)).unwrap();
    space.insert_region(Arc::new(planned)).unwrap();
    let snap = space.snapshot();
    // A memory-slot number, as it would have backed.
    assert_eq!(snap.slot(GuestAddress(4 * MIB)), Some(1));
    // Listed as RAM in the maps the guest is given.
    let e820 = snap.e820_table().unwrap();
    assert!(
        e820.iter()
            .any(|e| e.addr == 4 * MIB && e.size == MIB && e.ty == MemoryType::Ram),
        "{e820:?}"
    );
    // A hole for vm-memory: not found, not counted, and no access reaches it.
    assert_eq!(GuestMemoryBackend::num_regions(&*snap), 1);
    assert!(GuestMemoryBackend::find_region(&*snap, GuestAddress(4 * MIB)).is_none());
    assert!(matches!(
        snap.write_obj(1u8, GuestAddress(4 * MIB)),
        Err(GuestMemoryError::InvalidGuestAddress(_))
    ));
    assert!(snap.bytes().read_obj::<u8>(GuestAddress(4 * MIB)).is_err());
}
