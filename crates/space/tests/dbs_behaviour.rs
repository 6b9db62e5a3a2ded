//! The behaviours of dbs-address-space that still make sense here: overlap checks, layout
//! windows, region types, NUMA node ids, DAX queries, last addresses, walking regions,
//! and bad input as errors rather than panics. All bookkeeping: no memory is mapped.

#![allow(clippy::cast_possible_truncation)]

use memvisor_space::{
    AddressSpace, Backing, Error, HugePageSize, HugePages, Layout, NumaBinding, NumaPolicy,
    Protection, Region, RegionSpec, RegionType, Window, WindowKind,
};
use vm_memory::GuestAddress;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn layout() -> Layout {
    Layout::x86_64()
        .ram(4 * GIB)
        .hotplug(4 * GIB)
        .dax(GIB)
        .build()
        .unwrap()
}

fn specs() -> Vec<RegionSpec> {
    vec![
        RegionSpec::ram(GuestAddress(0), 2 * GIB).with_numa(NumaBinding::bind(0)),
        RegionSpec::ram(GuestAddress(4 * GIB), GIB)
            .with_numa(NumaBinding::new(NumaPolicy::Preferred, [1])),
        RegionSpec::new(RegionType::Device, GuestAddress(3 * GIB), MIB),
        RegionSpec::new(RegionType::Dax, GuestAddress(9 * GIB), 64 * MIB)
            .with_backing(Backing::Memfd),
        RegionSpec::new(RegionType::Firmware, GuestAddress(0xffc0_0000), 4 * MIB)
            .with_protection(Protection::Read),
        RegionSpec::new(RegionType::Reserved, GuestAddress(0xfec0_0000), 0x1000),
    ]
}

#[test]
fn from_regions_queries_by_type_numa_dax_and_protection() {
    let space = AddressSpace::plan(layout(), specs()).unwrap();
    let s = space.snapshot();
    assert_eq!(s.len(), 6);
    assert_eq!(s.region_type(GuestAddress(0x1000)), Some(RegionType::Ram));
    assert_eq!(
        s.region_type(GuestAddress(3 * GIB + 5)),
        Some(RegionType::Device)
    );
    assert_eq!(
        s.region_type(GuestAddress(0xffc0_0000)),
        Some(RegionType::Firmware)
    );
    assert!(s.is_reserved(GuestAddress(0xfec0_0fff)));
    assert_eq!(s.region_type(GuestAddress(2 * GIB)), None);
    assert_eq!(s.numa_node(GuestAddress(0)), Some(0));
    assert_eq!(s.numa_node(GuestAddress(4 * GIB + 7)), Some(1));
    assert_eq!(
        s.numa_binding(GuestAddress(4 * GIB))
            .map(NumaBinding::policy),
        Some(NumaPolicy::Preferred)
    );
    assert_eq!(s.numa_node(GuestAddress(3 * GIB)), None);
    assert!(s.is_dax(GuestAddress(9 * GIB + 63 * MIB)));
    assert!(!s.is_dax(GuestAddress(9 * GIB + 64 * MIB)));
    assert_eq!(
        s.protection(GuestAddress(0xffc0_0000)),
        Some(Protection::Read)
    );
    assert_eq!(s.protection(GuestAddress(0)), Some(Protection::ReadWrite));
}

#[test]
fn last_addresses_follow_highest_regions() {
    let s = AddressSpace::plan(layout(), specs()).unwrap().snapshot();
    assert_eq!(s.last_ram_addr(), Some(GuestAddress(5 * GIB - 1)));
    assert_eq!(
        s.last_region_addr(),
        Some(GuestAddress(9 * GIB + 64 * MIB - 1))
    );
    assert_eq!(s.total_size(RegionType::Ram), 3 * GIB);
}

#[test]
fn walk_regions_in_address_order() {
    let s = AddressSpace::plan(layout(), specs()).unwrap().snapshot();
    let walked: Vec<(u64, RegionType)> = s.regions().map(|r| (r.base().0, r.ty())).collect();
    let mut sorted = walked.clone();
    sorted.sort_unstable();
    assert_eq!(walked, sorted);
    assert_eq!(walked.first(), Some(&(0, RegionType::Ram)));
    let with_slots: Vec<Option<u32>> = s.regions_with_slots().map(|(_, slot)| slot).collect();
    // Regions with memory have slot numbers; device (no memory) and reserved ones do not.
    assert_eq!(with_slots.iter().filter(|s| s.is_none()).count(), 2);
}

#[test]
fn overlapping_regions_error() {
    let mut s = specs();
    s.push(RegionSpec::ram(GuestAddress(GIB), MIB));
    let err = AddressSpace::plan(layout(), s).unwrap_err();
    assert!(matches!(err, Error::Overlap { .. }), "{err}");

    let space = AddressSpace::plan(layout(), specs()).unwrap();
    let dup = Region::plan(RegionSpec::ram(GuestAddress(2 * GIB - MIB), 2 * MIB)).unwrap();
    assert!(matches!(
        space.insert_region(dup.into()),
        Err(Error::Overlap { .. })
    ));
    let dup = Region::plan(RegionSpec::ram(GuestAddress(GIB), MIB)).unwrap();
    let err = space.insert_region(dup.into()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "range at {:#x} of size {:#x} overlaps the one at 0x0 of size {:#x}",
            GIB,
            MIB,
            2 * GIB
        )
    );
    assert_eq!(space.snapshot().len(), 6);
}

#[test]
fn regions_outside_their_window_error() {
    let cases = [
        RegionSpec::ram(GuestAddress(3 * GIB), MIB),
        RegionSpec::new(RegionType::Dax, GuestAddress(0), MIB).with_backing(Backing::Memfd),
        RegionSpec::new(RegionType::Device, GuestAddress(0), MIB),
        RegionSpec::new(RegionType::Firmware, GuestAddress(0), MIB),
        RegionSpec::ram(GuestAddress(4 * GIB), MIB)
            .with_hotplug(true)
            .with_numa(NumaBinding::bind(0)),
        RegionSpec::ram(GuestAddress(6 * GIB), MIB),
    ];
    for spec in cases {
        let err = AddressSpace::plan(layout(), [spec.clone()]).unwrap_err();
        assert!(
            matches!(err, Error::OutsideWindow { .. }),
            "{spec:?}: {err}"
        );
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let page = memvisor_vmem::page_size() as u64;
    let cases: Vec<(RegionSpec, &str)> = vec![
        (RegionSpec::ram(GuestAddress(0), 0), "zero"),
        (RegionSpec::ram(GuestAddress(page / 2), page), "misaligned"),
        (RegionSpec::ram(GuestAddress(0), page + 1), "misaligned"),
        (
            RegionSpec::ram(GuestAddress(u64::MAX - page + 1), 2 * page),
            "overflow",
        ),
        (
            RegionSpec::ram(GuestAddress(0), MIB)
                .with_huge_pages(HugePages::Explicit(HugePageSize::Size2M)),
            "misaligned",
        ),
        (RegionSpec::ram(GuestAddress(1 << 41), page), "limit"),
    ];
    for (spec, what) in cases {
        let err = AddressSpace::plan(layout(), [spec.clone()]).unwrap_err();
        let ok = match what {
            "zero" => matches!(err, Error::ZeroSize { .. }),
            "misaligned" => matches!(err, Error::Misaligned { .. }),
            "overflow" => matches!(err, Error::Overflow { .. }),
            _ => matches!(err, Error::AddressLimit { .. }),
        };
        assert!(ok, "{what}: {spec:?} gave {err}");
    }
}

#[test]
fn custom_layout_checks_windows() {
    let w = |kind, start, size| Window::new(kind, GuestAddress(start), size).unwrap();
    let layout = Layout::new(
        GuestAddress(GIB - 1),
        [
            w(WindowKind::Ram, 0, 512 * MIB),
            w(WindowKind::Device, 512 * MIB, 512 * MIB),
        ],
    )
    .unwrap();
    assert_eq!(layout.arch(), None);
    AddressSpace::plan(
        layout.clone(),
        [RegionSpec::ram(GuestAddress(0), 512 * MIB)],
    )
    .unwrap();
    let err =
        AddressSpace::plan(layout, [RegionSpec::ram(GuestAddress(0), 513 * MIB)]).unwrap_err();
    assert!(matches!(err, Error::OutsideWindow { .. }));
    let err = Layout::new(GuestAddress(MIB - 1), [w(WindowKind::Ram, 0, 2 * MIB)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "range at 0x0 of size {:#x} reaches past the address limit {:#x}",
            2 * MIB,
            MIB - 1
        )
    );
}

#[test]
fn aarch64_preset_places_types() {
    let layout = Layout::aarch64().ram(2 * GIB).dax(GIB).build().unwrap();
    let ram = layout.ram_ranges(2 * GIB).unwrap();
    let mut specs: Vec<RegionSpec> = ram.iter().map(|&(b, s)| RegionSpec::ram(b, s)).collect();
    specs.push(RegionSpec::new(
        RegionType::Firmware,
        GuestAddress(0),
        64 * MIB,
    ));
    specs.push(RegionSpec::new(
        RegionType::Device,
        GuestAddress(0x0900_0000),
        0x1000,
    ));
    let dax = layout.windows_of(WindowKind::Dax).next().unwrap().start();
    specs.push(RegionSpec::new(RegionType::Dax, dax, GIB).with_backing(Backing::Memfd));
    let s = AddressSpace::plan(layout, specs).unwrap().snapshot();
    assert_eq!(s.last_ram_addr(), Some(GuestAddress(3 * GIB - 1)));
    assert!(s.is_dax(dax));
}

#[test]
fn placer_places_devices_and_hotplug_slots_around_regions() {
    let space = AddressSpace::plan(layout(), specs()).unwrap();
    let mut placer = space.snapshot().placer().unwrap();
    // The device region sits at the start of the device window: the next one goes after it.
    let dev = placer
        .place(WindowKind::Device, 0x1000, 0x1000, "dev")
        .unwrap()
        .start();
    assert_eq!(dev, GuestAddress(3 * GIB + MIB));
    let slot = placer
        .place(WindowKind::Hotplug, 128 * MIB, 128 * MIB, "slot0")
        .unwrap()
        .start();
    let hotplug = layout()
        .windows_of(WindowKind::Hotplug)
        .next()
        .unwrap()
        .start();
    assert_eq!(slot, hotplug);
    let next = placer
        .place(WindowKind::Hotplug, 128 * MIB, 128 * MIB, "slot1")
        .unwrap()
        .start();
    assert_eq!(next.0, hotplug.0 + 128 * MIB);
    let err = placer
        .place(WindowKind::Dax, 2 * GIB, MIB, "pmem0 DAX")
        .unwrap_err();
    assert!(matches!(err, Error::NoRoom { .. }), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "no free range of {:#x} bytes aligned to {:#x} for pmem0 DAX in the DAX windows",
            2 * GIB,
            MIB
        )),
        "{err}"
    );
}
