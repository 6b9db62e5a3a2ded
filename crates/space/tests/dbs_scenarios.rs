//! The scenarios of dbs-address-space's own unit tests, run against this crate's API: region
//! checks at the top of the address space, a layout of a memory window below a device window,
//! building, inserting and walking, `last_addr`, DAX, protection and NUMA lookups, the memory
//! sources (`shmem`, `hugeshmem`, `mmap`, prealloc) and a shared vm-memory `GuestMemoryMmap`
//! made from the address space. Where the answers differ, the test says which answer this crate
//! gives.

#![allow(clippy::cast_possible_truncation)]

use memvisor_space::{
    AddressSpace, Error, Layout, Protection, Region, RegionSpec, RegionType, Window, WindowKind,
};
use vm_memory::GuestAddress;

const PAGE: u64 = 0x1000;

fn w(kind: WindowKind, start: u64, size: u64) -> Window {
    Window::new(kind, GuestAddress(start), size).unwrap()
}

/// dbs's `AddressSpaceLayout::new(0x1_0000_0000, 0x1000_0000, 0x2000_0000)`: memory in
/// `[mem_start, mem_end)`, devices and DAX in `[mem_end, phys_end)`.
fn dbs_layout() -> Layout {
    Layout::new(
        GuestAddress(0xffff_ffff),
        [
            w(WindowKind::Ram, 0x1000_0000, 0x1000_0000),
            w(WindowKind::Device, 0x2000_0000, 0x6000_0000),
            w(WindowKind::Dax, 0x8000_0000, 0x8000_0000),
        ],
    )
    .unwrap()
}

#[test]
fn layout_region_checks_as_dbs_is_region_valid() {
    let layout = dbs_layout();
    let dev = |base, size| RegionSpec::new(RegionType::Device, GuestAddress(base), size);
    let ram = |base, size| RegionSpec::ram(GuestAddress(base), size);
    // Memory below mem_start, at mem_end, and running past mem_end.
    for spec in [
        ram(0, 0x1_0000),
        ram(0x2000_0000, 0x1_0000),
        ram(0x1_0000, 0x2000_0000),
    ] {
        let err = layout.check(&spec).unwrap_err();
        assert!(
            matches!(err, Error::OutsideWindow { .. }),
            "{spec:?}: {err}"
        );
    }
    // Past the end of the 64-bit space: an error naming the overflow, not a wrapped range.
    let err = layout.check(&ram(u64::MAX, 0x1_0000_0000)).unwrap_err();
    assert!(matches!(err, Error::Overflow { .. }), "{err}");
    layout.check(&ram(0x1000_0000, 0x1_0000)).unwrap();
    // Devices in memory, at and across phys_end.
    for spec in [
        dev(0x1000_0000, 0x1_0000),
        dev(0x1_0000_0000, 0x1_0000),
        dev(0x1_0000, 0x1_0000_0000),
    ] {
        let err = layout.check(&spec).unwrap_err();
        assert!(
            matches!(
                err,
                Error::OutsideWindow { .. } | Error::AddressLimit { .. }
            ),
            "{spec:?}: {err}"
        );
    }
    let err = layout.check(&dev(u64::MAX, 0x1_0000_0000)).unwrap_err();
    assert!(matches!(err, Error::Overflow { .. }), "{err}");
    layout.check(&dev(0x2000_0000, 0x1_0000)).unwrap();
    layout
        .check(
            &RegionSpec::new(RegionType::Dax, GuestAddress(0x8000_0000), 0x1_0000)
                .with_backing(memvisor_space::Backing::Memfd),
        )
        .unwrap();
}

/// dbs calls a region ending exactly at 2^64 invalid (its end does not fit in a `u64`); here
/// its last address does, and a layout reaching the top holds it like any other.
#[test]
fn regions_at_the_top_of_the_address_space() {
    let layout = Layout::new(
        GuestAddress(u64::MAX),
        [w(WindowKind::Device, u64::MAX - 0xf_ffff, 0x10_0000)],
    )
    .unwrap();
    let top = RegionSpec::new(RegionType::Device, GuestAddress(u64::MAX - PAGE + 1), PAGE);
    let below = RegionSpec::new(
        RegionType::Device,
        GuestAddress(u64::MAX - 2 * PAGE + 1),
        PAGE,
    );
    let past = RegionSpec::new(
        RegionType::Device,
        GuestAddress(u64::MAX - PAGE + 1),
        2 * PAGE,
    );
    assert!(matches!(
        layout.check(&past).unwrap_err(),
        Error::Overflow { .. }
    ));
    let space = AddressSpace::plan(layout, [top.clone()]).unwrap();
    let s = space.snapshot();
    assert_eq!(
        s.region_type(GuestAddress(u64::MAX)),
        Some(RegionType::Device)
    );
    assert_eq!(s.last_region_addr(), Some(GuestAddress(u64::MAX)));
    assert_eq!(s.total_size(RegionType::Device), PAGE);
    // The placer finds the room left below it.
    let mut placer = s.placer().unwrap();
    let placed = placer
        .place(WindowKind::Device, 0xf_e000, PAGE, "below")
        .unwrap();
    assert_eq!(placed.start(), GuestAddress(u64::MAX - 0xf_ffff));
    let err = placer
        .place(WindowKind::Device, 0x10_0000, PAGE, "all")
        .unwrap_err();
    assert!(matches!(err, Error::NoRoom { .. }), "{err}");
    // Insert, overlap, remove and insert again at the top.
    space
        .insert_region(Region::plan(below).unwrap().into())
        .unwrap();
    let again = Region::plan(top.clone()).unwrap();
    assert!(matches!(
        space.insert_region(again.into()).unwrap_err(),
        Error::Overlap { .. }
    ));
    let removed = space
        .remove_region(GuestAddress(u64::MAX - PAGE + 1), PAGE)
        .unwrap();
    assert_eq!(removed.last(), GuestAddress(u64::MAX));
    assert!(
        space
            .snapshot()
            .find_region(GuestAddress(u64::MAX))
            .is_none()
    );
    space
        .insert_region(Region::plan(top).unwrap().into())
        .unwrap();
    assert_eq!(space.snapshot().len(), 2);
    space.snapshot().check_invariants();
}

/// dbs panics on a region outside the layout or on two intersecting regions when it builds an
/// address space; here both are typed errors.
#[test]
fn building_from_bad_regions_errors() {
    let layout = Layout::new(GuestAddress(0x1fff), [w(WindowKind::Ram, 0x1000, 0x1000)]).unwrap();
    let err = AddressSpace::plan(layout, [RegionSpec::ram(GuestAddress(0), 0x1000)]).unwrap_err();
    assert!(matches!(err, Error::OutsideWindow { .. }), "{err}");

    let layout = Layout::new(GuestAddress(0x1_ffff), [w(WindowKind::Ram, 0, 0x2_0000)]).unwrap();
    let err = AddressSpace::plan(
        layout,
        [
            RegionSpec::ram(GuestAddress(0x1000), 0x2000),
            RegionSpec::ram(GuestAddress(0x2000), 0x2000),
        ],
    )
    .unwrap_err();
    assert!(matches!(err, Error::Overlap { .. }), "{err}");
}

/// dbs's `insert_region` scenario: a region outside the memory window and one overlapping are
/// refused, and the address space is as it was after each.
#[test]
fn insert_outside_or_overlapping_keeps_the_space() {
    let layout = Layout::new(
        GuestAddress(0x1_ffff),
        [w(WindowKind::Ram, 0x1000, 0x1_7000)],
    )
    .unwrap();
    let space =
        AddressSpace::plan(layout, [RegionSpec::ram(GuestAddress(0x1000), 0x2000)]).unwrap();
    space
        .insert_region(
            Region::plan(RegionSpec::ram(GuestAddress(0x3000), 0x2000))
                .unwrap()
                .into(),
        )
        .unwrap();
    let before = format!("{:?}", space.snapshot());
    let generation = space.snapshot().generation();
    let outside = Region::plan(RegionSpec::ram(GuestAddress(0), 0x1000)).unwrap();
    let err = space.insert_region(outside.into()).unwrap_err();
    assert!(matches!(err, Error::OutsideWindow { .. }), "{err}");
    let overlapping = Region::plan(RegionSpec::ram(GuestAddress(0x4000), 0x2000)).unwrap();
    let err = space.insert_region(overlapping.into()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Overlap {
                base: 0x4000,
                size: 0x2000,
                other_base: 0x3000,
                other_size: 0x2000
            }
        ),
        "{err}"
    );
    assert_eq!(format!("{:?}", space.snapshot()), before);
    assert_eq!(space.snapshot().generation(), generation);
    let walked: Vec<_> = space
        .snapshot()
        .regions()
        .map(|r| (r.base().0, r.size()))
        .collect();
    assert_eq!(walked, [(0x1000, 0x2000), (0x3000, 0x2000)]);
}

/// dbs's `walk_regions` takes a callback whose error stops the walk; here the iterator's
/// `try_for_each` does the same.
#[test]
fn walking_stops_at_the_first_error() {
    let layout = Layout::new(GuestAddress(0x1_ffff), [w(WindowKind::Ram, 0, 0x2_0000)]).unwrap();
    let space = AddressSpace::plan(
        layout,
        [
            RegionSpec::ram(GuestAddress(0x1000), 0x2000),
            RegionSpec::ram(GuestAddress(0x3000), 0x2000),
        ],
    )
    .unwrap();
    let s = space.snapshot();
    let mut seen = 0;
    let walked: Result<(), u64> = s.regions().try_for_each(|r| {
        seen += 1;
        if r.hotplug() { Err(r.base().0) } else { Ok(()) }
    });
    assert_eq!(walked, Ok(()));
    assert_eq!(seen, 2);
    let mut seen = 0;
    let walked: Result<(), u64> = s.regions().try_for_each(|r| {
        seen += 1;
        if r.base().0 == 0x1000 {
            Err(r.base().0)
        } else {
            Ok(())
        }
    });
    assert_eq!(walked, Err(0x1000));
    assert_eq!(seen, 1, "the walk goes on past the error");
}

/// dbs's `last_addr` is the last address of the highest region that is not DAX (device regions
/// count), and `mem_start` with none; the crate docs give the same value as a filter over the
/// regions, and `last_ram_addr` counts RAM only.
#[test]
fn last_addresses_as_dbs_counts_them() {
    let layout = dbs_layout();
    let space = AddressSpace::plan(
        layout,
        [
            RegionSpec::ram(GuestAddress(0x1000_0000), 0x2000),
            RegionSpec::ram(GuestAddress(0x1000_2000), 0x2000),
            RegionSpec::new(RegionType::Device, GuestAddress(0x2000_0000), PAGE),
            RegionSpec::new(RegionType::Dax, GuestAddress(0x8000_0000), PAGE)
                .with_backing(memvisor_space::Backing::Memfd),
        ],
    )
    .unwrap();
    let s = space.snapshot();
    let dbs_last = s.regions().filter(|r| !r.is_dax()).map(Region::last).max();
    assert_eq!(dbs_last, Some(GuestAddress(0x2000_0fff)));
    assert_eq!(s.last_ram_addr(), Some(GuestAddress(0x1000_3fff)));
    assert_eq!(s.last_region_addr(), Some(GuestAddress(0x8000_0fff)));
    let empty = AddressSpace::plan(dbs_layout(), []).unwrap().snapshot();
    assert_eq!(empty.last_ram_addr(), None);
    assert_eq!(empty.last_region_addr(), None);
}

/// dbs's `is_dax_region` scenario: two pages of memory and one DAX page at the start of the
/// device range; the DAX page's first, second and last bytes are DAX, the byte after is not.
#[test]
fn dax_lookups_at_the_edges() {
    let dax_start = 0x8000_0000;
    let space = AddressSpace::plan(
        dbs_layout(),
        [
            RegionSpec::ram(GuestAddress(0x1000_1000), PAGE),
            RegionSpec::ram(GuestAddress(0x1000_2000), PAGE),
            RegionSpec::new(RegionType::Dax, GuestAddress(dax_start), PAGE)
                .with_backing(memvisor_space::Backing::Memfd),
        ],
    )
    .unwrap();
    let s = space.snapshot();
    assert!(!s.is_dax(GuestAddress(0x1000_1000)));
    assert!(!s.is_dax(GuestAddress(0x1000_2000)));
    assert!(s.is_dax(GuestAddress(dax_start)));
    assert!(s.is_dax(GuestAddress(dax_start + 1)));
    assert!(s.is_dax(GuestAddress(dax_start + PAGE - 1)));
    assert!(!s.is_dax(GuestAddress(dax_start + PAGE)));
    assert!(!s.is_dax(GuestAddress(u64::MAX)));
}

/// dbs's `prot_flags` and `numa_node_id` scenarios: a region with no access and a NUMA node,
/// one with the default read-write and none, and an address in no region.
#[test]
fn protection_and_numa_lookups() {
    let layout = Layout::new(GuestAddress(0x1_ffff), [w(WindowKind::Ram, 0, 0x2_0000)]).unwrap();
    let space = AddressSpace::plan(
        layout,
        [
            RegionSpec::ram(GuestAddress(0x1000), 0x2000)
                .with_protection(Protection::None)
                .with_numa(memvisor_space::NumaBinding::bind(0)),
            RegionSpec::ram(GuestAddress(0x3000), 0x3000),
        ],
    )
    .unwrap();
    let s = space.snapshot();
    assert_eq!(s.protection(GuestAddress(0x2000)), Some(Protection::None));
    assert_eq!(
        s.protection(GuestAddress(0x5fff)),
        Some(Protection::ReadWrite)
    );
    assert_eq!(s.protection(GuestAddress(0x6000)), None);
    assert_eq!(s.numa_node(GuestAddress(0x2000)), Some(0));
    assert_eq!(s.numa_node(GuestAddress(0x4000)), None);
    assert_eq!(s.numa_node(GuestAddress(0x6000)), None);
}

/// dbs's memory sources: `shmem` is a memfd (a file), `hugeshmem` a memfd with transparent
/// huge pages, `mmap` anonymous (no file), `mem_prealloc` populated; each a 1 MiB region at
/// 1 MiB whose last address is 0x1f_ffff.
#[cfg(target_os = "linux")]
#[cfg_attr(miri, ignore)]
#[test]
fn memory_sources_as_dbs_creates_them() {
    use memvisor_space::{Backing, HugePageFallback, HugePages};
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    let layout = Layout::x86_64().ram(16 << 20).build().unwrap();
    let base = GuestAddress(0x10_0000);
    let cases = [
        (Backing::Memfd, HugePages::None, 0, true),
        (Backing::Memfd, HugePages::Transparent, 1, true),
        (Backing::AnonymousPrivate, HugePages::None, 1, false),
        (Backing::AnonymousShared, HugePages::None, 0, false),
    ];
    for (backing, huge, prefault, has_file) in cases {
        let spec = RegionSpec::ram(base, 0x10_0000)
            .with_backing(backing.clone())
            .with_huge_pages(huge)
            .with_fallback(HugePageFallback::BasePages)
            .with_prefault_threads(prefault);
        let (space, report) = AddressSpace::back(layout.clone(), [spec]).unwrap();
        assert_eq!(report.total_bytes(), 0x10_0000);
        let got = &report.regions[0];
        // Prealloc populates the region on the one thread asked for.
        assert_eq!(got.prefault_threads, prefault, "{backing:?}");
        // Transparent huge pages where the host gives them to memfds, else a fallback said.
        assert!(
            got.huge_pages == huge || (got.fell_back && got.huge_pages == HugePages::None),
            "{backing:?}: {got}"
        );
        let s = space.snapshot();
        let r = s.find_region(base).unwrap();
        assert_eq!(r.ty(), RegionType::Ram);
        assert_eq!(r.start_addr(), base);
        assert_eq!(r.last_addr(), GuestAddress(0x1f_ffff));
        assert_eq!(GuestMemoryRegion::len(r), 0x10_0000);
        assert_eq!(r.file_offset().is_some(), has_file, "{backing:?}");
        assert_eq!(r.is_hugetlbfs(), Some(false), "{backing:?}");
        assert_eq!(s.num_regions(), 1);
    }
}

/// dbs's `convert_into_vm_as`: the address space's memory as a shared vm-memory
/// `GuestMemoryMmap`, which a VMM hands to rust-vmm devices; the space itself is a
/// `GuestAddressSpace` as well.
#[cfg(unix)]
#[cfg_attr(miri, ignore)]
#[test]
fn shared_guest_memory_mmap_from_the_space() {
    use std::sync::Arc;

    use vm_memory::{Bytes, GuestAddressSpace, GuestMemory, GuestMemoryBackend, GuestMemoryMmap};
    let layout = Layout::x86_64().ram(16 << 20).build().unwrap();
    let (space, _) = AddressSpace::back(
        layout.clone(),
        [RegionSpec::ram(GuestAddress(0), 0x10_0000)],
    )
    .unwrap();
    let snapshot = space.snapshot();
    // SAFETY: `snapshot` outlives `shared` and every guard taken from it.
    let mmap = unsafe { snapshot.to_guest_memory_mmap() }.unwrap();
    let shared: Arc<GuestMemoryMmap> = Arc::new(mmap);
    shared
        .memory()
        .write_obj(0x55aa_u16, GuestAddress(0x400))
        .unwrap();
    assert_eq!(
        space.memory().read_obj::<u16>(GuestAddress(0x400)).unwrap(),
        0x55aa
    );
    assert!(
        shared
            .memory()
            .find_region(GuestAddress(0x10_0000))
            .is_none()
    );
    // The space itself is a `GuestAddressSpace` too, with no copy to keep alive.
    fn writable<AS: GuestAddressSpace>(space: &AS, addr: u64, len: usize) -> bool {
        space
            .memory()
            .check_range(GuestAddress(addr), len, vm_memory::Permissions::ReadWrite)
    }
    assert!(writable(&space, 0, 0x10_0000));
    assert!(!writable(&space, 0xf_ffff, 2));
    drop(shared);
    drop(snapshot);
}
