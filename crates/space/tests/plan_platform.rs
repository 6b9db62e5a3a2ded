//! What a plan hands the guest's firmware and what its placers hold, at the platform's edges:
//! the PCI MMCONFIG range in the plan's e820 map, address bits no host has, the ports and
//! interrupts of KVM's in-kernel devices in every placer of an x86-64 layout, and the SRAT's
//! hot-pluggable ranges over the whole hotplug window.
//!
//! Not run under Miri: the planner has no unsafe code, and Miri would spend a minute on these
//! plans while checking nothing the native run does not.

#![cfg(not(miri))]

use memvisor_space::plan::{HotplugRequest, NodeRequest, PlanItem, PlanRequest, plan};
use memvisor_space::{
    AddressSpace, Arch, E820_MAX_ENTRIES, Error, GuestRange, HugePageSize, HugePages, Layout,
    MemoryMapEntry, MemoryType, NumaRange, Platform, RegionSpec, WindowKind,
};
use vm_memory::GuestAddress;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn request(platform: Platform, ram: u64) -> PlanRequest {
    PlanRequest {
        platform,
        phys_bits: 40,
        nodes: vec![NodeRequest {
            size: ram,
            memory: RegionSpec::ram(GuestAddress(0), 0),
        }],
        serial: None,
        devices: vec![],
        hotplug: None,
        low_ram_limit: None,
        window_align: None,
    }
}

/// The e820 map of a plan whose platform reserves PCI MMCONFIG lists that range as reserved
/// (Linux uses MMCONFIG only where e820 or ACPI reserves it), and is otherwise the boot RAM map
/// of the address space the plan makes, with KVM's pages reserved.
#[test]
fn plan_e820_lists_pci_mmconfig_as_reserved() {
    let kvm = MemoryMapEntry {
        addr: 0xfffb_c000,
        size: 5 * 0x1000,
        ty: MemoryType::Reserved,
    };
    for ram in [256 * MIB, 4 * GIB] {
        let platform = Platform::x86_64().with_pci_mmconfig().unwrap();
        let p = plan(&request(platform, ram)).unwrap();
        let map = p.memory_map();
        let mmconfig = MemoryMapEntry {
            addr: 0xe000_0000,
            size: 256 * MIB,
            ty: MemoryType::Reserved,
        };
        assert!(map.contains(&mmconfig), "{map:x?}");
        assert!(map.windows(2).all(|w| w[0].last() < w[1].addr), "{map:x?}");
        let space =
            AddressSpace::plan(p.layout.clone(), p.regions.iter().map(|r| r.spec.clone())).unwrap();
        let boot: Vec<MemoryMapEntry> = map
            .iter()
            .copied()
            .filter(|e| *e != mmconfig && *e != kvm)
            .collect();
        assert_eq!(boot, space.snapshot().memory_map());
        assert_eq!(p.e820_table().unwrap(), map);
        // Without MMCONFIG, the map is the address space's and KVM's pages.
        let p = plan(&request(Platform::x86_64(), ram)).unwrap();
        let space =
            AddressSpace::plan(p.layout.clone(), p.regions.iter().map(|r| r.spec.clone())).unwrap();
        let boot: Vec<MemoryMapEntry> = p.memory_map().into_iter().filter(|e| *e != kvm).collect();
        assert_eq!(boot, space.snapshot().memory_map());
        assert_eq!(p.memory_map().len(), boot.len() + 1);
    }
    // AArch64 has no e820, but its map is its boot RAM as well.
    let p = plan(&request(Platform::aarch64(), 256 * MIB)).unwrap();
    assert_eq!(
        p.memory_map(),
        [MemoryMapEntry {
            addr: GIB,
            size: 256 * MIB,
            ty: MemoryType::Ram
        }]
    );
}

/// On x86-64 the platform says where KVM's TSS (`KVM_SET_TSS_ADDR`, 3 pages) and identity-map
/// page (`KVM_SET_IDENTITY_MAP_ADDR`, 1 page) go: inside its reservation, in the firmware
/// window below 4 GiB, over no RAM and no device of a plan; and the plan's memory map lists them as
/// reserved, so that the guest never takes those addresses for its own (a PCI BAR there would
/// be shadowed by KVM's private memory slot). AArch64 has neither.
#[test]
fn plan_memory_map_reserves_kvm_tss_and_identity_map() {
    use memvisor_space::plan::DeviceRequest;
    const PAGE: u64 = 0x1000;
    let x86 = Platform::x86_64();
    let tss = x86.kvm_tss_addr().unwrap();
    let identity = x86.kvm_identity_map_addr().unwrap();
    assert_eq!(tss, 0xfffb_d000);
    assert_eq!(identity, 0xfffb_c000);
    let kvm = x86
        .reservations()
        .iter()
        .find(|r| r.name() == "KVM TSS, identity map")
        .unwrap()
        .range();
    for (first, len) in [(tss, 3 * PAGE), (identity, PAGE)] {
        let pages = GuestRange::new(GuestAddress(first), len).unwrap();
        assert!(kvm.contains_range(&pages), "{pages} outside {kvm}");
    }
    let listed = MemoryMapEntry {
        addr: kvm.start().0,
        size: kvm.size().unwrap(),
        ty: MemoryType::Reserved,
    };
    for platform in [x86.clone(), x86.clone().with_pci_mmconfig().unwrap()] {
        for (ram, bits) in [(256 * MIB, 32), (3 * GIB, 40), (8 * GIB, 52)] {
            let mut r = request(platform.clone(), ram);
            r.phys_bits = bits;
            r.devices = (0..16)
                .map(|i| DeviceRequest {
                    name: format!("dev{i}"),
                    mmio_size: 0x1000 << (i % 8),
                    address: None,
                    irq: None,
                    dax_size: None,
                })
                .collect();
            let p = plan(&r).unwrap_or_else(|e| panic!("{ram:#x} {bits}: {e}"));
            let map = p.memory_map();
            assert!(map.contains(&listed), "{ram:#x} {bits}: {map:x?}");
            assert_eq!(p.e820_table().unwrap(), map);
            for e in map.iter().filter(|e| e.ty == MemoryType::Ram) {
                let e = GuestRange::new(GuestAddress(e.addr), e.size).unwrap();
                assert!(!e.overlaps(&kvm), "RAM {e} over {kvm}");
            }
            for d in &p.devices {
                assert!(!d.mmio.unwrap().overlaps(&kvm), "{} over {kvm}", d.name);
            }
            // In the firmware window below 4 GiB, held there by the plan's placer.
            let w = p.layout.window_containing(kvm.start()).unwrap();
            assert_eq!(w.kind(), WindowKind::Firmware);
            assert!(w.range().contains_range(&kvm));
            assert_eq!(
                p.placer.owner_of(GuestAddress(tss)).unwrap(),
                ("KVM TSS, identity map", kvm)
            );
        }
    }
    let arm = Platform::aarch64();
    assert_eq!(arm.kvm_tss_addr(), None);
    assert_eq!(arm.kvm_identity_map_addr(), None);
}

/// The e820 table of a plan refuses a map longer than the table, MMCONFIG and KVM's pages
/// counted.
#[test]
fn plan_e820_counts_mmconfig_against_the_table() {
    // RAM below the legacy hole, the hole, RAM above it, MMCONFIG and KVM's pages.
    let platform = Platform::x86_64().with_pci_mmconfig().unwrap();
    let p = plan(&request(platform, 512 * MIB)).unwrap();
    let table = p.e820_table().unwrap();
    assert_eq!(table.len(), 5, "{table:x?}");
    assert!(table.len() <= E820_MAX_ENTRIES);
}

/// A plan's PVH map is its e820 table, MMCONFIG and KVM's pages in it (the space's own map has
/// neither), with the table's limit: Linux copies a PVH map into that table unchecked.
#[test]
fn plan_pvh_memmap_is_its_e820_table_with_its_limit() {
    let platform = Platform::x86_64().with_pci_mmconfig().unwrap();
    let mut p = plan(&request(platform, 512 * MIB)).unwrap();
    let table = p.e820_table().unwrap();
    let want: Vec<u8> = table
        .iter()
        .flat_map(MemoryMapEntry::to_pvh_bytes)
        .collect();
    assert_eq!(p.pvh_memmap().unwrap(), want);
    let space =
        AddressSpace::plan(p.layout.clone(), p.regions.iter().map(|r| r.spec.clone())).unwrap();
    assert_eq!(
        space.snapshot().pvh_memmap().unwrap().len() + 2 * 24,
        want.len(),
        "MMCONFIG and KVM's pages"
    );
    // Pages of RAM apart from each other, added by hand, until the map is one entry too long.
    let room = E820_MAX_ENTRIES + 1 - table.len();
    for i in 0..room as u64 {
        let mut edited = p.regions[0].clone();
        edited.spec = RegionSpec::ram(GuestAddress(GIB + i * 0x2000), 0x1000);
        p.regions.push(edited);
    }
    let err = p.pvh_memmap().unwrap_err();
    assert!(
        matches!(err, Error::TooManyMapEntries { entries, max: E820_MAX_ENTRIES } if entries == E820_MAX_ENTRIES + 1),
        "{err}"
    );
    p.regions.pop();
    assert_eq!(p.pvh_memmap().unwrap().len(), E820_MAX_ENTRIES * 24);
}

/// Address bits past 52, the most any x86-64 or AArch64 host has, are refused at the bits.
#[test]
fn plan_refuses_address_bits_no_host_has() {
    for arch in Arch::ALL {
        for bits in [53, 57, 63, 64, 65, u32::MAX] {
            let mut r = request(Platform::new(arch), 256 * MIB);
            r.phys_bits = bits;
            let e = plan(&r).unwrap_err();
            assert_eq!(e.item, PlanItem::PhysBits, "{arch} {bits}: {e}");
            assert!(
                matches!(e.error, Error::InvalidLayout { ref reason } if reason.contains("52")),
                "{arch} {bits}: {e}"
            );
        }
        for bits in [32, 46, 52] {
            let mut r = request(Platform::new(arch), 256 * MIB);
            r.phys_bits = bits;
            let p = plan(&r).unwrap_or_else(|e| panic!("{arch} {bits}: {e}"));
            assert_eq!(p.layout.limit().0, (1 << bits) - 1);
        }
    }
}

/// Every placer of an x86-64 preset layout holds the ports KVM's in-kernel PICs, PIT and ELCR
/// answer, and the timer's GSIs 0 and 2, as the plan's placer does: nothing placed through
/// them lands there.
#[test]
fn layout_and_snapshot_placers_hold_kvm_in_kernel_devices() {
    let layout = Layout::x86_64().ram(GIB).build().unwrap();
    let space =
        AddressSpace::plan(layout.clone(), [RegionSpec::ram(GuestAddress(0), GIB)]).unwrap();
    let planned = plan(&request(Platform::x86_64(), GIB)).unwrap().placer;
    let from_layout = layout.placer();
    let from_snapshot = space.snapshot().placer().unwrap();
    for (what, mut p) in [
        ("plan", planned),
        ("layout", from_layout),
        ("snapshot", from_snapshot),
    ] {
        for &(device, first, last) in Platform::x86_64().kernel_ports() {
            let ports = GuestRange::inclusive(GuestAddress(first), GuestAddress(last)).unwrap();
            let e = p.ports_at(ports, "uart").unwrap_err();
            assert!(
                matches!(e, Error::Taken { ref other, .. } if other == device),
                "{what}: {first:#x}: {e}"
            );
            assert!(
                p.port_allocations()
                    .any(|(owner, r)| owner == device && r == ports),
                "{what}: {first:#x}"
            );
        }
        for gsi in [0, 2] {
            assert!(
                matches!(p.irq_at(gsi, "uart"), Err(Error::IrqTaken { .. })),
                "{what}: GSI {gsi}"
            );
            assert_eq!(p.irq_owner(gsi), Some("legacy ISA"), "{what}: GSI {gsi}");
        }
        // The other legacy interrupts are still given by number where no plan claimed them.
        if what != "plan" {
            assert_eq!(p.irq_at(4, "uart").unwrap(), 4, "{what}");
            assert!(p.irq("virtio").unwrap() > 4, "{what}");
        }
    }
    // AArch64 has neither.
    let layout = Layout::aarch64().ram(GIB).build().unwrap();
    let mut p = layout.placer();
    assert_eq!(p.port_allocations().count(), 0);
    assert_eq!(p.irq_at(32, "uart").unwrap(), 32);
}

/// `Platform::placer` of x86-64 holds what KVM's in-kernel devices use, as the plan's,
/// the layout's and the snapshot's placers do, over its preset layout and over a custom one
/// (the platform gives it the port space and the GSIs either way); a VMM that emulates them
/// itself can give them back.
#[test]
fn platform_placer_holds_kvm_in_kernel_devices() {
    let platform = Platform::x86_64();
    let custom = Layout::new(
        GuestAddress((1 << 40) - 1),
        [memvisor_space::Window::new(WindowKind::Device, GuestAddress(GIB), GIB).unwrap()],
    )
    .unwrap();
    for layout in [platform.layout().ram(GIB).build().unwrap(), custom] {
        let mut p = platform.placer(&layout).unwrap();
        for &(device, first, last) in platform.kernel_ports() {
            let ports = GuestRange::inclusive(GuestAddress(first), GuestAddress(last)).unwrap();
            let e = p.ports_at(ports, "uart").unwrap_err();
            assert!(
                matches!(e, Error::Taken { ref other, .. } if other == device),
                "{first:#x}: {e}"
            );
        }
        for gsi in [0, 2] {
            assert!(
                matches!(p.irq_at(gsi, "uart"), Err(Error::IrqTaken { .. })),
                "GSI {gsi}"
            );
            assert_eq!(p.irq_owner(gsi), Some("legacy ISA"), "GSI {gsi}");
        }
        // The other legacy interrupts are still given by number, the rest first come.
        assert_eq!(p.irq_at(4, "uart").unwrap(), 4);
        assert_eq!(p.irq("virtio").unwrap(), 5);
        // Given back, the PIT's ports are free for a device model of the VMM's own.
        let pit = GuestRange::inclusive(GuestAddress(0x40), GuestAddress(0x43)).unwrap();
        p.release_ports(pit).unwrap();
        p.ports_at(pit, "pit").unwrap();
    }
    // AArch64 has neither.
    let platform = Platform::aarch64();
    let mut p = platform
        .placer(&platform.layout().build().unwrap())
        .unwrap();
    assert_eq!(p.port_allocations().count(), 0);
    assert_eq!(p.irq_at(32, "uart").unwrap(), 32);
}

/// A plan's SRAT ranges cover the whole hotplug window as hot-pluggable memory of the slots'
/// node, the lead before the first slot's huge-page boundary and what follows the last slot
/// included: memory hot-added anywhere in the window (a slot, or a range the plan's placer
/// places there) lies in a hot-pluggable range of that node.
#[test]
fn plan_srat_covers_the_whole_hotplug_window() {
    for (ram, window_align, slot_size, pages) in [
        // 1 GiB pages in a window aligned to 2 MiB after 64 MiB of RAM: a lead of nearly 1 GiB.
        (
            64 * MIB,
            Some(2 * MIB),
            GIB,
            HugePages::Explicit(HugePageSize::Size1G),
        ),
        // Slots filling a part of a window rounded up to 1 GiB.
        (GIB, None, 512 * MIB, HugePages::None),
    ] {
        for arch in Arch::ALL {
            let mut r = request(Platform::new(arch), ram);
            r.nodes.push(NodeRequest {
                size: ram,
                memory: RegionSpec::ram(GuestAddress(0), 0),
            });
            if arch == Arch::X86_64 {
                r.low_ram_limit = Some(0);
            }
            r.window_align = window_align;
            r.hotplug = Some(HotplugRequest {
                slots: 1,
                slot_size,
                node: 1,
                memory: RegionSpec::ram(GuestAddress(0), 0).with_huge_pages(pages),
            });
            let p = plan(&r).unwrap_or_else(|e| panic!("{arch}: {e}"));
            let window = p.layout.windows_of(WindowKind::Hotplug).next().unwrap();
            assert!(
                window.size() > slot_size,
                "{arch}: the window has room besides the slot"
            );
            let hotplug: Vec<NumaRange> =
                p.numa_ranges().into_iter().filter(|n| n.hotplug).collect();
            assert_eq!(
                hotplug,
                [NumaRange {
                    node: 1,
                    addr: window.start().0,
                    size: window.size(),
                    hotplug: true,
                }],
                "{arch}"
            );
        }
    }
}

/// A plan's fields are public: maps of a plan edited by hand into ranges no plan makes (a
/// size of 0, a range past the top, a slot outside every window) skip or keep them apart
/// rather than overflow.
#[test]
fn maps_of_a_plan_edited_by_hand_do_not_overflow() {
    let mut r = request(Platform::x86_64().with_pci_mmconfig().unwrap(), 256 * MIB);
    r.hotplug = Some(HotplugRequest {
        slots: 1,
        slot_size: GIB,
        node: 0,
        memory: RegionSpec::ram(GuestAddress(0), 0),
    });
    let mut p = plan(&r).unwrap();
    let mut odd = p.regions[0].clone();
    for (base, size) in [
        (0, 0),
        (u64::MAX, 2),
        (u64::MAX - 0xfff, 0x1000),
        (1 << 63, 1 << 63),
    ] {
        odd.spec = RegionSpec::ram(GuestAddress(base), size);
        p.regions.push(odd.clone());
    }
    let mut slot = p.slots[0].clone();
    slot.spec = RegionSpec::ram(GuestAddress(u64::MAX - 0xfff), 0x1000).with_hotplug(true);
    p.slots.push(slot);
    let map = p.memory_map();
    assert!(
        map.iter()
            .all(|e| e.size > 0 && e.addr.checked_add(e.size - 1).is_some())
    );
    assert!(p.e820_table().is_ok());
    let srat = p.numa_ranges();
    let window = p.layout.windows_of(WindowKind::Hotplug).next().unwrap();
    assert!(srat.iter().any(|n| n.hotplug && n.addr == window.start().0));
    assert!(srat.iter().filter(|n| n.hotplug).count() == 1);
}

/// A hotplug window whose slots (in a plan edited by hand) belong to different guest nodes is
/// no one node's: each slot is listed under its own node, never the other slots' memory under
/// the first slot's node.
#[test]
fn plan_srat_of_a_window_with_slots_of_several_nodes_lists_each_slot_under_its_node() {
    for arch in Arch::ALL {
        let mut r = request(Platform::new(arch), GIB);
        r.nodes.push(NodeRequest {
            size: GIB,
            memory: RegionSpec::ram(GuestAddress(0), 0),
        });
        r.hotplug = Some(HotplugRequest {
            slots: 3,
            slot_size: 256 * MIB,
            node: 0,
            memory: RegionSpec::ram(GuestAddress(0), 0),
        });
        let mut p = plan(&r).unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(p.layout.windows_of(WindowKind::Hotplug).count(), 1);
        p.slots[1].node = Some(1);
        let hotplug: Vec<NumaRange> = p.numa_ranges().into_iter().filter(|n| n.hotplug).collect();
        let want: Vec<NumaRange> = p
            .slots
            .iter()
            .map(|s| NumaRange {
                node: s.node.unwrap(),
                addr: s.spec.base().0,
                size: s.spec.size(),
                hotplug: true,
            })
            .collect();
        assert_eq!(hotplug, want, "{arch}");
        // Every slot of one node again: the whole window under it.
        p.slots[1].node = Some(0);
        let window = p.layout.windows_of(WindowKind::Hotplug).next().unwrap();
        let hotplug: Vec<NumaRange> = p.numa_ranges().into_iter().filter(|n| n.hotplug).collect();
        assert_eq!(
            hotplug,
            [NumaRange {
                node: 0,
                addr: window.start().0,
                size: window.size(),
                hotplug: true
            }],
            "{arch}"
        );
    }
}

/// On x86-64 a device named as one of KVM's in-kernel devices, a device or serial port fixed
/// on the timer's GSIs, and a serial port fixed on their ports are refused, typed, at the item.
#[test]
fn plan_refuses_devices_on_kvm_in_kernel_devices() {
    use memvisor_space::plan::{DeviceRequest, SerialRequest};

    let device = |name: &str, irq: Option<u32>| DeviceRequest {
        name: name.into(),
        mmio_size: 0x1000,
        address: None,
        irq,
        dax_size: None,
    };
    for name in ["PIC", "PIT", "ELCR"] {
        let mut r = request(Platform::x86_64(), GIB);
        r.devices = vec![device(name, None)];
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::DeviceName(0), "{name}: {e}");
        assert!(matches!(e.error, Error::InvalidName { .. }), "{name}: {e}");
    }
    for gsi in [0, 2] {
        let mut r = request(Platform::x86_64(), GIB);
        r.devices = vec![device("net0", Some(gsi))];
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::DeviceIrq(0), "GSI {gsi}: {e}");
        assert!(matches!(e.error, Error::IrqTaken { .. }), "GSI {gsi}: {e}");
        let mut r = request(Platform::x86_64(), GIB);
        r.serial = Some(SerialRequest {
            irq: Some(gsi),
            ..SerialRequest::default()
        });
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::SerialIrq, "GSI {gsi}: {e}");
        assert!(matches!(e.error, Error::IrqTaken { .. }), "GSI {gsi}: {e}");
    }
    for &(device, first, last) in Platform::x86_64().kernel_ports() {
        // The serial port's 8 ports over the first and over the last of the device's.
        for base in [first, last.saturating_sub(7)] {
            let mut r = request(Platform::x86_64(), GIB);
            r.serial = Some(SerialRequest {
                port: Some(base),
                ..SerialRequest::default()
            });
            let e = plan(&r).unwrap_err();
            assert_eq!(e.item, PlanItem::SerialPort, "{device} {base:#x}: {e}");
            assert!(
                matches!(e.error, Error::Taken { ref other, .. } if other == device),
                "{device} {base:#x}: {e}"
            );
        }
    }
}

/// KVM's pages moved to QEMU's place, 4 pages at 0xfeff_c000 in the reserved window (the
/// identity map, then the TSS), leave the whole 4 MiB firmware window below 4 GiB to firmware,
/// where the default place leaves 252 KiB; a plan lists the moved pages as reserved and its
/// placer holds them. A place off a page, past 4 GiB, outside the reserved and firmware
/// windows or over another reservation is refused, and AArch64 has none to move.
#[test]
fn kvm_pages_moved_leave_the_firmware_window_whole() {
    const PAGE: u64 = 0x1000;
    let x86 = Platform::x86_64();
    let fw = GuestRange::new(GuestAddress(0xffc0_0000), 4 * MIB).unwrap();
    let default_plan = plan(&request(x86.clone(), 256 * MIB)).unwrap();
    let mut placer = default_plan.placer.clone();
    assert!(placer.take(fw, "firmware").is_err());
    let moved = x86.clone().with_kvm_pages_at(0xfeff_c000).unwrap();
    assert_eq!(moved.kvm_identity_map_addr(), Some(0xfeff_c000));
    assert_eq!(moved.kvm_tss_addr(), Some(0xfeff_d000));
    let kvm = GuestRange::new(GuestAddress(0xfeff_c000), 4 * PAGE).unwrap();
    for with_mmconfig in [false, true] {
        let platform = if with_mmconfig {
            moved.clone().with_pci_mmconfig().unwrap()
        } else {
            moved.clone()
        };
        let p = plan(&request(platform, 256 * MIB)).unwrap();
        let mut placer = p.placer.clone();
        placer.take(fw, "firmware").unwrap();
        assert_eq!(
            p.placer.owner_of(GuestAddress(0xfeff_d000)).unwrap(),
            ("KVM TSS, identity map", kvm)
        );
        let listed = MemoryMapEntry {
            addr: 0xfeff_c000,
            size: 4 * PAGE,
            ty: MemoryType::Reserved,
        };
        assert!(p.memory_map().contains(&listed), "{:x?}", p.memory_map());
        assert!(
            p.memory_map().iter().all(|e| e.addr != 0xfffb_c000),
            "the default place is still listed"
        );
    }
    // Moving twice keeps one reservation.
    let twice = moved.clone().with_kvm_pages_at(0xfef0_0000).unwrap();
    assert_eq!(
        twice
            .reservations()
            .iter()
            .filter(|r| r.name() == "KVM TSS, identity map")
            .count(),
        1
    );
    for bad in [
        0xfeff_c800, // off a page
        0xffff_e000, // past 4 GiB
        0xc000_0000, // in the device window
        0xfec0_0000, // over the IOAPIC
        0xfedf_e000, // over the local APIC's page
        !0xfff_u64,  // wraps
    ] {
        let err = x86.clone().with_kvm_pages_at(bad).unwrap_err();
        assert!(
            matches!(err, Error::InvalidLayout { .. }),
            "{bad:#x}: {err:?}"
        );
    }
    assert!(matches!(
        Platform::aarch64().with_kvm_pages_at(0xfeff_c000),
        Err(Error::InvalidLayout { .. })
    ));
}
