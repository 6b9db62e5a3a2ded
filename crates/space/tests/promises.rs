//! What the crate's documentation promises, one test per promise, each able to fail: the
//! error variants no other test produces (with the fields they document), "nothing changes
//! after an error" for the address space's writers compared on a full dump of the space, and
//! the layout, platform and firmware-map promises not checked elsewhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use memvisor_space::{
    AddressSpace, Arch, ChangeKind, E820_MAX_ENTRIES, Error, GuestRange, Layout, ListenerError,
    MemoryType, Platform, Region, RegionEvent, RegionSpec, RegionType, Window, WindowKind,
};
use vm_memory::GuestAddress;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Everything a reader can see of the address space: the generation and every region with its
/// spec, memory and memory-slot number.
fn dump(space: &AddressSpace) -> String {
    let snap = space.snapshot();
    let regions: Vec<String> = snap
        .regions_with_slots()
        .map(|(r, slot)| format!("{r:?} slot {slot:?}"))
        .collect();
    format!("generation {} {regions:?}", snap.generation())
}

fn layout() -> Layout {
    Layout::x86_64().ram(GIB).hotplug(GIB).build().unwrap()
}

#[test]
fn ram_ranges_past_the_ram_windows_is_no_space_naming_the_request() {
    // RAM below the hole only: its window is 3 GiB.
    let l = Layout::x86_64().ram(GIB).build().unwrap();
    assert_eq!(l.ram_ranges(3 * GIB).unwrap(), [(GuestAddress(0), 3 * GIB)]);
    let err = l.ram_ranges(3 * GIB + 0x1000).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NoSpace {
                window: WindowKind::Ram,
                size,
                ..
            } if size == 3 * GIB + 0x1000
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("0xc0001000 bytes"), "{err}");
    assert!(err.to_string().ends_with("in the RAM windows"), "{err}");
}

#[test]
fn layout_new_names_the_window_past_the_limit_and_the_overlapping_pair() {
    let w = |kind, start, size| Window::new(kind, GuestAddress(start), size).unwrap();
    let err = Layout::new(
        GuestAddress(GIB - 1),
        [w(WindowKind::Ram, 0, GIB), w(WindowKind::Device, GIB, MIB)],
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::AddressLimit { base, size, limit } if base == GIB && size == MIB && limit == GIB - 1),
        "{err:?}"
    );
    // Given out of order: sorted first, so the later one is named as the one added.
    let err = Layout::new(
        GuestAddress(4 * GIB - 1),
        [
            w(WindowKind::Device, GIB, GIB),
            w(WindowKind::Ram, 0, GIB + 1),
        ],
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Overlap { base, size, other_base: 0, other_size } if base == GIB && size == GIB && other_size == GIB + 1
        ),
        "{err:?}"
    );
    // Kept sorted.
    let l = Layout::new(
        GuestAddress(4 * GIB - 1),
        [w(WindowKind::Device, GIB, GIB), w(WindowKind::Ram, 0, GIB)],
    )
    .unwrap();
    let starts: Vec<u64> = l.windows().iter().map(|w| w.start().0).collect();
    assert_eq!(starts, [0, GIB]);
}

#[test]
fn layout_builder_refusals_name_what_is_wrong() {
    for (builder, want) in [
        (Layout::x86_64().window_align(0), "InvalidAlignment 0x0"),
        (
            Layout::x86_64().window_align(3 << 20),
            "InvalidAlignment 0x300000",
        ),
        (Layout::x86_64().window_align(0x800), "InvalidLayout"),
        (Layout::x86_64().window_align(2 * GIB), "InvalidLayout"),
        (Layout::x86_64().ram(0), "InvalidLayout"),
        (Layout::x86_64().phys_bits(31), "InvalidLayout"),
        (Layout::x86_64().phys_bits(65), "InvalidLayout"),
        (Layout::aarch64().low_ram_limit(GIB), "InvalidLayout"),
        (Layout::x86_64().low_ram_limit(0x800), "InvalidLayout"),
        (Layout::x86_64().phys_bits(32).ram(4 * GIB), "AddressLimit"),
    ] {
        let got = match builder.build() {
            Err(Error::InvalidAlignment { align }) => format!("InvalidAlignment {align:#x}"),
            Err(Error::InvalidLayout { .. }) => "InvalidLayout".to_owned(),
            Err(Error::AddressLimit { .. }) => "AddressLimit".to_owned(),
            other => format!("{other:?}"),
        };
        assert_eq!(got, want, "{builder:?}");
    }
}

#[test]
fn guest_page_size_below_4k_or_not_a_power_of_two_is_refused() {
    for page in [0, 0x800, 0x3000] {
        let err = layout().with_guest_page_size(page).unwrap_err();
        assert!(
            matches!(err, Error::InvalidAlignment { align } if align == page),
            "{err:?}"
        );
    }
    assert_eq!(
        layout()
            .with_guest_page_size(0x1_0000)
            .unwrap()
            .guest_page_size(),
        0x1_0000
    );
}

#[test]
fn window_align_places_later_windows_on_its_multiples() {
    let align = 128 * MIB;
    let l = Layout::x86_64()
        .ram(4 * GIB + MIB)
        .hotplug(MIB)
        .dax(MIB)
        .device_high(MIB)
        .window_align(align)
        .build()
        .unwrap();
    let high: Vec<(WindowKind, u64, u64)> = l
        .windows()
        .iter()
        .filter(|w| w.start().0 >= 4 * GIB)
        .map(|w| (w.kind(), w.start().0, w.size()))
        .collect();
    // High RAM: 1 GiB + 1 MiB rounded up to 128 MiB; then each window on the next multiple.
    let ram = GIB + align;
    assert_eq!(
        high,
        [
            (WindowKind::Ram, 4 * GIB, ram),
            (WindowKind::Hotplug, 4 * GIB + ram, align),
            (WindowKind::Dax, 4 * GIB + ram + align, align),
            (WindowKind::Device, 4 * GIB + ram + 2 * align, align),
        ]
    );
}

#[test]
fn zero_slot_numbers_are_refused_even_without_memory() {
    let device = RegionSpec::new(RegionType::Device, GuestAddress(3 * GIB), 0x1000);
    for slots in [0, 1] {
        let builder = AddressSpace::builder(layout())
            .region(device.clone())
            .slots(slots);
        match builder.plan() {
            Ok(space) => assert_eq!(slots, 1, "{space:?}"),
            Err(Error::NoSlotNumber { count }) => assert_eq!((slots, count), (0, 0)),
            Err(e) => panic!("{e:?}"),
        }
    }
    let two = [
        RegionSpec::ram(GuestAddress(0), MIB),
        RegionSpec::ram(GuestAddress(MIB), MIB),
    ];
    let err = AddressSpace::builder(layout())
        .regions(two)
        .slots(1)
        .plan()
        .unwrap_err();
    assert!(matches!(err, Error::NoSlotNumber { count: 1 }), "{err:?}");
}

#[test]
fn builder_overlap_names_both_regions() {
    let err = AddressSpace::plan(
        layout(),
        [
            RegionSpec::ram(GuestAddress(2 * MIB), MIB),
            RegionSpec::ram(GuestAddress(0), 4 * MIB),
        ],
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Overlap { base, size, other_base: 0, other_size } if base == 2 * MIB && size == MIB && other_size == 4 * MIB
        ),
        "{err:?}"
    );
}

/// A listener that refuses every change after it accepted `accept` of them.
fn refusing_after(accept: usize) -> (Arc<AtomicUsize>, Arc<dyn memvisor_space::RegionListener>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let listener = Arc::new(move |_: &RegionEvent<'_>| -> Result<(), ListenerError> {
        if seen.fetch_add(1, Ordering::SeqCst) < accept {
            Ok(())
        } else {
            Err("refused".into())
        }
    });
    (calls, listener)
}

#[test]
fn failed_inserts_and_removals_change_nothing() {
    let space = AddressSpace::plan(
        layout(),
        [
            RegionSpec::ram(GuestAddress(0), MIB),
            RegionSpec::new(RegionType::Device, GuestAddress(3 * GIB), 0x1000),
        ],
    )
    .unwrap();
    let before = dump(&space);
    let snap = space.snapshot();
    let region = |spec| Arc::new(Region::plan(spec).unwrap());
    // Overlap, outside its window, past the limit, misaligned for the layout's page.
    let bad = [
        region(RegionSpec::ram(GuestAddress(MIB - 0x1000), 0x2000)),
        region(RegionSpec::ram(GuestAddress(3 * GIB + 0x1000), 0x1000)),
        region(RegionSpec::new(
            RegionType::Reserved,
            GuestAddress(1 << 40),
            0x1000,
        )),
    ];
    for r in bad {
        space.insert_region(r).unwrap_err();
        assert_eq!(dump(&space), before);
    }
    for (base, size) in [(0, 2 * MIB), (0x1000, MIB), (0, 0), (2 * MIB, MIB)] {
        let err = space.remove_region(GuestAddress(base), size).unwrap_err();
        assert!(
            matches!(err, Error::RegionNotFound { base: b, size: s } if b == base && s == size),
            "{err:?}"
        );
        assert_eq!(dump(&space), before);
    }
    // A listener refusing: nothing published, the slot number given back.
    let (calls, listener) = refusing_after(0);
    space.add_listener(Arc::clone(&listener)).unwrap();
    let err = space
        .insert_region(region(RegionSpec::ram(GuestAddress(MIB), MIB)))
        .unwrap_err();
    assert!(
        matches!(err, Error::Listener { base, .. } if base == MIB),
        "{err:?}"
    );
    let err = space.remove_region(GuestAddress(0), MIB).unwrap_err();
    assert!(matches!(err, Error::Listener { base: 0, .. }), "{err:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(dump(&space), before);
    assert!(Arc::ptr_eq(&snap, &space.snapshot()));
    assert!(space.remove_listener(&listener).unwrap());
    // The slot number the refused insert took is given back: the next one gets it.
    space
        .insert_region(region(RegionSpec::ram(GuestAddress(MIB), MIB)))
        .unwrap();
    assert_eq!(space.snapshot().slot(GuestAddress(MIB)), Some(1));
    assert_eq!(space.snapshot().generation(), 1);
}

#[test]
fn plug_refusals_change_nothing() {
    let space = AddressSpace::plan(layout(), [RegionSpec::ram(GuestAddress(0), MIB)]).unwrap();
    let before = dump(&space);
    let slot = 4 * GIB;
    let err = space
        .plug(RegionSpec::ram(GuestAddress(slot), 2 * MIB))
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidSpec { ty: RegionType::Ram, base, .. } if base == slot),
        "{err:?}"
    );
    // Planned without memory: no backed hotplug window.
    let err = space
        .plug(RegionSpec::ram(GuestAddress(slot), 2 * MIB).with_hotplug(true))
        .unwrap_err();
    assert!(
        matches!(err, Error::NoHotplugWindow { base } if base == slot),
        "{err:?}"
    );
    assert_eq!(dump(&space), before);
}

#[test]
fn plug_outside_every_hotplug_window_is_outside_window() {
    // No hotplug window in the layout at all, and a slot past the one there is.
    let bare = Layout::x86_64().ram(GIB).build().unwrap();
    for (layout, slot) in [(bare, 4 * GIB), (layout(), 5 * GIB)] {
        let space = AddressSpace::plan(layout, []).unwrap();
        let before = dump(&space);
        let err = space
            .plug(RegionSpec::ram(GuestAddress(slot), 2 * MIB).with_hotplug(true))
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::OutsideWindow {
                    ty: RegionType::Ram,
                    base,
                    size,
                    window: WindowKind::Hotplug
                } if base == slot && size == 2 * MIB
            ),
            "{err:?}"
        );
        assert_eq!(dump(&space), before);
    }
}

#[test]
fn events_carry_slot_numbers_and_the_next_generation() {
    let space = AddressSpace::plan(layout(), []).unwrap();
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    space
        .add_listener(Arc::new(
            move |e: &RegionEvent<'_>| -> Result<(), ListenerError> {
                seen.lock()
                    .unwrap()
                    .push((e.kind, e.region.base().0, e.slot, e.generation));
                Ok(())
            },
        ))
        .unwrap();
    let ram = Arc::new(Region::plan(RegionSpec::ram(GuestAddress(0), MIB)).unwrap());
    let dev = Arc::new(
        Region::plan(RegionSpec::new(
            RegionType::Device,
            GuestAddress(3 * GIB),
            0x1000,
        ))
        .unwrap(),
    );
    space.insert_region(ram).unwrap();
    space.insert_region(dev).unwrap();
    space.remove_region(GuestAddress(0), MIB).unwrap();
    assert_eq!(
        *events.lock().unwrap(),
        [
            (ChangeKind::Inserted, 0, Some(0), 1),
            (ChangeKind::Inserted, 3 * GIB, None, 2),
            (ChangeKind::Removed, 0, Some(0), 3),
        ]
    );
    assert_eq!(space.snapshot().generation(), 3);
}

#[test]
fn snapshot_discard_outside_every_region_names_the_range() {
    let space = AddressSpace::plan(layout(), [RegionSpec::ram(GuestAddress(0), MIB)]).unwrap();
    let err = space
        .snapshot()
        .discard(GuestAddress(MIB), 0x1000)
        .unwrap_err();
    assert!(
        matches!(err, Error::RegionNotFound { base, size: 0x1000 } if base == MIB),
        "{err:?}"
    );
    // A planned region has no memory to give back.
    let err = space
        .snapshot()
        .discard(GuestAddress(0), 0x1000)
        .unwrap_err();
    assert!(
        matches!(err, Error::DiscardRefused { base: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn e820_table_holds_exactly_its_maximum() {
    // Pages of RAM apart from each other above the legacy hole: one entry each.
    let ram = |n: u64| (0..n).map(|i| RegionSpec::ram(GuestAddress(16 * MIB + i * 0x2000), 0x1000));
    let max = E820_MAX_ENTRIES as u64;
    let space = AddressSpace::plan(layout(), ram(max)).unwrap();
    assert_eq!(
        space.snapshot().e820_table().unwrap().len(),
        E820_MAX_ENTRIES
    );
    let space = AddressSpace::plan(layout(), ram(max + 1)).unwrap();
    assert!(matches!(
        space.snapshot().e820_table(),
        Err(Error::TooManyMapEntries { entries, max: E820_MAX_ENTRIES }) if entries == E820_MAX_ENTRIES + 1
    ));
    // Linux copies a PVH map into the same table without checking its count: the same limit.
    assert!(matches!(
        space.snapshot().pvh_memmap(),
        Err(Error::TooManyMapEntries { entries, max: E820_MAX_ENTRIES }) if entries == E820_MAX_ENTRIES + 1
    ));
    let space = AddressSpace::plan(layout(), ram(max)).unwrap();
    assert_eq!(
        space.snapshot().pvh_memmap().unwrap().len(),
        E820_MAX_ENTRIES * 24
    );
}

/// Linux ignores an e820 table of fewer than 2 entries: on x86-64 the table is that short
/// exactly when boot RAM is none, or one range wholly below, inside or above the legacy hole.
#[test]
fn e820_table_is_shorter_than_two_entries_only_for_ram_clear_of_the_hole_edges() {
    // (boot RAM as (base, size), whether the table has fewer than 2 entries).
    let cases: [(&[(u64, u64)], bool); 9] = [
        (&[], true),
        (&[(0, 0x9_f000)], true),
        (&[(0xa_0000, 0x1_0000)], true),
        (&[(0xa_0000, 0x6_0000)], true),
        (&[(MIB, 64 * MIB)], true),
        (&[(MIB, MIB), (2 * MIB, MIB)], true),
        (&[(0, 0xa_0000)], false),
        (&[(0xf_0000, MIB)], false),
        (&[(MIB, MIB), (4 * MIB, MIB)], false),
    ];
    for (ram, short) in cases {
        let specs = ram
            .iter()
            .map(|&(base, size)| RegionSpec::ram(GuestAddress(base), size));
        let space = AddressSpace::plan(layout(), specs).unwrap();
        let table = space.snapshot().e820_table().unwrap();
        assert_eq!(table.len() < 2, short, "{ram:x?}: {table:x?}");
    }
}

#[test]
fn boot_maps_leave_out_hotplug_memory_and_srat_flags_it() {
    let space = AddressSpace::plan(
        layout(),
        [
            RegionSpec::ram(GuestAddress(4 * MIB), 4 * MIB),
            RegionSpec::ram(GuestAddress(4 * GIB), 2 * MIB).with_hotplug(true),
        ],
    )
    .unwrap();
    let snap = space.snapshot();
    let map = snap.memory_map();
    assert_eq!(map.len(), 1);
    assert_eq!(
        (map[0].addr, map[0].size, map[0].ty),
        (4 * MIB, 4 * MIB, MemoryType::Ram)
    );
    let srat = snap.numa_ranges();
    assert_eq!(srat.len(), 2);
    assert!(!srat[0].hotplug);
    assert!(srat[1].hotplug);
    assert_eq!((srat[1].addr, srat[1].size), (4 * GIB, 2 * MIB));
}

#[test]
fn pci_mmconfig_is_reserved_once_and_only_on_x86_64() {
    let once = Platform::x86_64().with_pci_mmconfig().unwrap();
    let twice = once.clone().with_pci_mmconfig().unwrap();
    assert_eq!(once, twice);
    let mmconfig = once
        .reservations()
        .iter()
        .find(|r| r.name() == "PCI MMCONFIG")
        .unwrap();
    assert_eq!(
        mmconfig.range(),
        GuestRange::new(GuestAddress(0xe000_0000), 256 * MIB).unwrap()
    );
    // By address.
    let starts: Vec<u64> = once
        .reservations()
        .iter()
        .map(|r| r.range().start().0)
        .collect();
    let mut sorted = starts.clone();
    sorted.sort_unstable();
    assert_eq!(starts, sorted);
    assert!(matches!(
        Platform::new(Arch::Aarch64).with_pci_mmconfig(),
        Err(Error::InvalidLayout { .. })
    ));
}

mod plans {
    use memvisor_space::plan::{
        HotplugRequest, NodeRequest, PlanItem, PlanRequest, SerialRequest, plan,
    };
    use memvisor_space::{Backing, Error, HugePages, Platform, RegionSpec, RegionType};
    use vm_memory::GuestAddress;

    const MIB: u64 = 1 << 20;

    fn request() -> PlanRequest {
        PlanRequest {
            platform: Platform::x86_64(),
            phys_bits: 40,
            nodes: vec![NodeRequest {
                size: 256 * MIB,
                memory: RegionSpec::ram(GuestAddress(0), 0),
            }],
            serial: Some(SerialRequest::default()),
            devices: vec![],
            hotplug: None,
            low_ram_limit: None,
            window_align: None,
        }
    }

    fn hotplug(slot_size: u64, memory: RegionSpec) -> Option<HotplugRequest> {
        Some(HotplugRequest {
            slots: 2,
            slot_size,
            node: 0,
            memory,
        })
    }

    #[test]
    fn a_hotplug_memory_spec_that_is_not_valid_is_refused_at_the_hotplug_slots() {
        let ram = || RegionSpec::ram(GuestAddress(0), 0);
        for (memory, ty) in [
            (
                RegionSpec::new(RegionType::Reserved, GuestAddress(0), 0),
                RegionType::Reserved,
            ),
            (
                RegionSpec::new(RegionType::Device, GuestAddress(0), 0),
                RegionType::Device,
            ),
            (ram().with_backing(Backing::None), RegionType::Ram),
            (
                ram().with_backing(Backing::Hugetlbfs("/dev/hugepages".into())),
                RegionType::Ram,
            ),
        ] {
            let mut r = request();
            r.hotplug = hotplug(2 * MIB, memory.clone());
            let e = plan(&r).unwrap_err();
            assert_eq!(e.item, PlanItem::Hotplug, "{memory:?}: {e}");
            assert!(
                matches!(e.error, Error::InvalidSpec { ty: t, .. } if t == ty),
                "{e}"
            );
        }
        // The slot size stays the item for what is wrong with the size.
        for size in [0, 0x1800] {
            let mut r = request();
            r.hotplug = hotplug(size, ram());
            let e = plan(&r).unwrap_err();
            assert_eq!(e.item, PlanItem::HotplugSlotSize, "{e}");
        }
        let mut r = request();
        r.hotplug = hotplug(
            2 * MIB,
            ram().with_huge_pages(HugePages::Explicit(memvisor_space::HugePageSize::Size1G)),
        );
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::HotplugSlotSize, "{e}");
        assert!(matches!(e.error, Error::Misaligned { .. }), "{e}");
    }

    #[test]
    fn a_memory_spec_boot_ram_and_hotplug_share_is_refused_at_the_node() {
        let bad = RegionSpec::ram(GuestAddress(0), 0)
            .with_backing(Backing::Hugetlbfs("/dev/hugepages".into()));
        let mut r = request();
        r.nodes[0].memory = bad.clone();
        r.hotplug = hotplug(2 * MIB, bad);
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::Node(0), "{e}");
        assert!(matches!(e.error, Error::InvalidSpec { base: 0, .. }), "{e}");
    }

    #[test]
    fn layout_settings_the_platform_cannot_honour_are_refused() {
        // A low-RAM limit on AArch64 (one RAM window), or off the guest page on x86-64.
        let mut r = request();
        r.platform = Platform::aarch64();
        r.serial = None;
        r.low_ram_limit = Some(MIB);
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::Memory, "{e}");
        assert!(matches!(e.error, Error::InvalidLayout { .. }), "{e}");
        let mut r = request();
        r.low_ram_limit = Some(0x800);
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::Memory, "{e}");
        assert!(matches!(e.error, Error::InvalidLayout { .. }), "{e}");
        // Address bits outside 32..=52, and a window alignment outside 2 MiB..=1 GiB.
        for bits in [31, 53, 65] {
            let mut r = request();
            r.phys_bits = bits;
            let e = plan(&r).unwrap_err();
            assert_eq!(e.item, PlanItem::PhysBits, "{e}");
        }
        for align in [MIB, 3 * MIB, 2 << 30] {
            let mut r = request();
            r.window_align = Some(align);
            let e = plan(&r).unwrap_err();
            assert_eq!(e.item, PlanItem::Memory, "{e}");
            assert!(matches!(e.error, Error::InvalidLayout { .. }), "{e}");
        }
    }

    fn file_offset(spec: &RegionSpec) -> u64 {
        match spec.backing() {
            Backing::File { offset, .. } => *offset,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn regions_made_from_one_file_spec_map_consecutive_parts_of_the_file() {
        const GIB: u64 = 1 << 30;
        let file = |offset| Backing::File {
            path: "/srv/vm/ram".into(),
            offset,
        };
        // 4 GiB of boot RAM on x86-64: 3 GiB below the hole, 1 GiB from 4 GiB.
        let mut r = request();
        r.nodes[0] = NodeRequest {
            size: 4 * GIB,
            memory: RegionSpec::ram(GuestAddress(0), 0).with_backing(file(0x1000)),
        };
        r.hotplug = hotplug(
            2 * MIB,
            RegionSpec::ram(GuestAddress(0), 0).with_backing(file(8 * GIB)),
        );
        let p = plan(&r).unwrap();
        let ram: Vec<(u64, u64, u64)> = p
            .regions
            .iter()
            .filter(|r| r.spec.ty() == RegionType::Ram)
            .map(|r| (r.spec.base().0, r.spec.size(), file_offset(&r.spec)))
            .collect();
        assert_eq!(
            ram,
            [(0, 3 * GIB, 0x1000), (4 * GIB, GIB, 0x1000 + 3 * GIB)]
        );
        let slots: Vec<u64> = p.slots.iter().map(|s| file_offset(&s.spec)).collect();
        assert_eq!(slots, [8 * GIB, 8 * GIB + 2 * MIB]);

        // Offsets past the 64-bit range are refused at the item.
        let top = u64::MAX - 0xfff;
        r.nodes[0].memory = RegionSpec::ram(GuestAddress(0), 0).with_backing(file(top));
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::Node(0), "{e}");
        assert!(
            matches!(e.error, Error::Overflow { base, size } if base == top && size == 3 * GIB),
            "{e}"
        );
        r.nodes[0].memory = RegionSpec::ram(GuestAddress(0), 0);
        r.hotplug = hotplug(
            2 * MIB,
            RegionSpec::ram(GuestAddress(0), 0).with_backing(file(top)),
        );
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::Hotplug, "{e}");
        assert!(
            matches!(e.error, Error::Overflow { base, size } if base == top && size == 2 * MIB),
            "{e}"
        );
    }

    #[test]
    fn serial_ports_past_the_64_bit_range_are_refused_at_the_port() {
        let mut r = request();
        let base = u64::MAX - 3;
        r.serial = Some(SerialRequest {
            port: Some(base),
            ..SerialRequest::default()
        });
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::SerialPort, "{e}");
        assert!(
            matches!(e.error, Error::Overflow { base: b, size: 8 } if b == base),
            "{e}"
        );
        // Past the port space but not the 64-bit range: the ports are named.
        r.serial = Some(SerialRequest {
            port: Some(0xfffc),
            ..SerialRequest::default()
        });
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::SerialPort, "{e}");
        assert!(
            matches!(e.error, Error::PortsOutOfRange { ports: p, .. } if p.start().0 == 0xfffc),
            "{e}"
        );
    }
}

#[test]
#[cfg(unix)]
#[cfg_attr(miri, ignore = "vm-memory's own mmap: Miri cannot map")]
fn adopted_mappings_are_checked_as_a_plan_checks_regions() {
    let layout = || Layout::x86_64().ram(GIB).build().unwrap();
    let adopt = |ranges: &[(GuestAddress, usize)]| {
        let gm = vm_memory::GuestMemoryMmap::<()>::from_ranges(ranges).unwrap();
        AddressSpace::from_guest_memory_mmap(layout(), &gm)
    };
    // In the device window.
    let err = adopt(&[(GuestAddress(3 * GIB), 0x1000)]).unwrap_err();
    assert!(
        matches!(err, Error::OutsideWindow { ty: RegionType::Ram, base, size: 0x1000, window: WindowKind::Ram } if base == 3 * GIB),
        "{err:?}"
    );
    // Not a whole number of guest pages.
    let err = adopt(&[(GuestAddress(0), 0x1800)]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Misaligned {
                base: 0,
                size: 0x1800,
                page_size: 0x1000
            }
        ),
        "{err:?}"
    );
    // Write rights without read: no protection says so.
    let mapping = vm_memory::MmapRegion::<()>::build(
        None,
        0x1000,
        libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
    )
    .unwrap();
    let region = vm_memory::GuestRegionMmap::new(mapping, GuestAddress(0x1000)).unwrap();
    let err = Region::from_guest_region_mmap(RegionType::Ram, &region).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidSpec {
                ty: RegionType::Ram,
                base: 0x1000,
                ..
            }
        ),
        "{err:?}"
    );
}

/// The text of both errors says why the failed step failed (the kernel's error of its call),
/// as the errors it carries in `cause` are not among its sources (`restore` is): a report that
/// prints an error and walks its sources would otherwise never show that errno.
#[test]
fn slot_not_restored_texts_keep_the_failed_steps_errno() {
    let cause = || {
        Box::new(Error::Os {
            op: "madvise",
            base: 0x1_0000_0000,
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        })
    };
    let restore = || memvisor_vmem::Error::Os {
        operation: memvisor_vmem::Operation::Reserve,
        source: memvisor_vmem::OsError::from_raw(libc::ENOMEM),
    };
    let einval = std::io::Error::from_raw_os_error(libc::EINVAL).to_string();
    for err in [
        Error::SlotNotRestored {
            base: 0x1_0000_0000,
            size: 0x20_0000,
            cause: cause(),
            restore: restore(),
        },
        Error::SlotNotRestoredWhileBacking {
            base: 0x1_0000_0000,
            size: 0x20_0000,
            cause: cause(),
            restore: restore(),
        },
    ] {
        let mut report = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(e) = source {
            report.push_str(&format!(": {e}"));
            source = e.source();
        }
        assert!(
            report.contains(&format!(
                "madvise failed for the region at 0x100000000: {einval}"
            )),
            "{report}"
        );
    }
}

#[test]
fn slot_not_restored_names_the_slot_and_both_failures() {
    let cause = || {
        Box::new(Error::Os {
            op: "mmap",
            base: 0x1_0000_0000,
            source: std::io::Error::from_raw_os_error(libc::ENOMEM),
        })
    };
    let restore = || memvisor_vmem::Error::Os {
        operation: memvisor_vmem::Operation::Reserve,
        source: memvisor_vmem::OsError::from_raw(libc::ENOMEM),
    };
    let err = Error::SlotNotRestored {
        base: 0x1_0000_0000,
        size: 0x20_0000,
        cause: cause(),
        restore: restore(),
    };
    // The system's own text for the errno (Miri's differs from glibc's).
    let enomem = std::io::Error::from_raw_os_error(libc::ENOMEM);
    assert_eq!(
        err.to_string(),
        format!(
            "plugging the hotplug slot at 0x100000000 of size 0x200000 failed (mmap failed for \
             the region at 0x100000000: {enomem}) and so did restoring it to reserved space; \
             the slot stays claimed and unusable until the address space is dropped"
        )
    );
    assert!(std::error::Error::source(&err).is_some());
    let err = Error::SlotNotRestoredWhileBacking {
        base: 0x1_0000_0000,
        size: 0x20_0000,
        cause: cause(),
        restore: restore(),
    };
    assert_eq!(
        err.to_string(),
        format!(
            "backing the hot-pluggable region at 0x100000000 of size 0x200000 failed (mmap \
             failed for the region at 0x100000000: {enomem}) and so did restoring its slot to \
             reserved space; no address space was made and the hotplug window's reservation is \
             unmapped"
        )
    );
    assert!(std::error::Error::source(&err).is_some());
}
