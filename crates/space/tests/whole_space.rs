//! A layout may cover the whole 64-bit guest physical space (two regions of 2^63 bytes): the
//! memory map, the NUMA ranges and the totals, whose sizes are `u64`, stay correct instead of
//! wrapping to 0.

use memvisor_space::{AddressSpace, Layout, RegionSpec, RegionType, Window, WindowKind};
use vm_memory::GuestAddress;

const HALF: u64 = 1 << 63;

fn whole_space() -> AddressSpace {
    let layout = Layout::new(
        GuestAddress(u64::MAX),
        [
            Window::new(WindowKind::Ram, GuestAddress(0), HALF).unwrap(),
            Window::new(WindowKind::Ram, GuestAddress(HALF), HALF).unwrap(),
        ],
    )
    .unwrap();
    AddressSpace::plan(
        layout,
        [
            RegionSpec::ram(GuestAddress(0), HALF),
            RegionSpec::ram(GuestAddress(HALF), HALF),
        ],
    )
    .unwrap()
}

#[test]
fn memory_map_of_the_whole_space_keeps_entries_apart() {
    let map = whole_space().snapshot().memory_map();
    assert!(map.iter().all(|e| e.size != 0), "{map:?}");
    // The entries cover the whole space, in order, without overlap.
    let mut next = Some(0u64);
    for e in &map {
        assert_eq!(Some(e.addr), next, "{map:?}");
        next = e.last().checked_add(1);
    }
    assert_eq!(next, None, "the map ends at the top: {map:?}");
}

#[test]
fn numa_ranges_of_the_whole_space_keep_ranges_apart() {
    let nodes = whole_space().snapshot().numa_ranges();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert!(nodes.iter().all(|r| r.size == HALF), "{nodes:?}");
}

#[test]
fn total_size_of_the_whole_space_saturates() {
    assert_eq!(
        whole_space().snapshot().total_size(RegionType::Ram),
        u64::MAX
    );
}
