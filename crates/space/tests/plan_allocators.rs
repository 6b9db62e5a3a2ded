//! A VMM that plans its VM and then allocates more MMIO windows, I/O ports and interrupts
//! through memvisor-resources' own allocators (its device manager takes them, as Cloud
//! Hypervisor's and crosvm's do): the plan's placer hands them over with everything the plan
//! placed still held, under its owner's name.
//!
//! Not run under Miri: the planner has no unsafe code.

#![cfg(not(miri))]

use memvisor_space::memvisor_resources::{AddressRange, AllocPolicy, Request};
use memvisor_space::plan::{
    DeviceRequest, HotplugRequest, NodeRequest, PlanRequest, SerialRequest, plan,
};
use memvisor_space::{
    Error, GuestRange, PlacerAllocators, Platform, RegionSpec, RegionType, WindowKind,
};
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
        devices: ["net0", "blk0"]
            .into_iter()
            .map(|name| DeviceRequest {
                name: name.into(),
                mmio_size: 0x1000,
                address: None,
                irq: None,
                dax_size: None,
            })
            .collect(),
        hotplug: None,
        low_ram_limit: None,
        window_align: None,
    }
}

#[test]
fn plan_allocators_keep_what_the_plan_placed_and_allocate_more() {
    let plan = plan(&request()).unwrap();
    let devices = plan.devices.clone();
    let PlacerAllocators {
        mut windows,
        ports,
        irqs,
        irq_owners,
        ..
    } = plan.placer.into_allocators();

    // Each planned MMIO window is held in its window's allocator, tagged with the device.
    for device in devices.iter().filter(|d| d.mmio.is_some()) {
        let mmio = device.mmio.unwrap().as_range();
        let (_, allocator) = windows
            .iter()
            .find(|(w, _)| w.range().as_range().contains_range(&mmio))
            .expect("a window holds the device");
        let held = allocator.allocation_containing(mmio.start()).unwrap();
        assert_eq!(
            (held.range, held.tag.as_str()),
            (mmio, device.name.as_str())
        );
    }

    // More virtio-mmio windows come from the device window's allocator, over none of the
    // plan's.
    let (_, device_window) = windows
        .iter_mut()
        .find(|(w, _)| w.kind() == WindowKind::Device)
        .unwrap();
    let request = Request::new(0x1000, 0x1000, AllocPolicy::FirstMatch).unwrap();
    let rng = device_window
        .allocate_with(&request, "rng0".to_string())
        .unwrap();
    for device in &devices {
        if let Some(mmio) = device.mmio {
            assert!(
                !rng.overlaps(&mmio.as_range()),
                "{rng:?} over {}",
                device.name
            );
        }
    }

    // Ports: the serial port's and KVM's in-kernel devices' are held; more come elsewhere.
    let mut ports = ports.expect("x86-64 has I/O ports");
    let serial = devices[0]
        .ports
        .expect("the serial port's ports")
        .as_range();
    assert_eq!(
        ports.allocation_containing(serial.start()).unwrap().tag,
        "serial"
    );
    assert_eq!(ports.allocation_containing(0x40).unwrap().tag, "PIT");
    let more = ports
        .allocate_with(
            &Request::new(8, 8, AllocPolicy::FirstMatch).unwrap(),
            "debug port".to_string(),
        )
        .unwrap();
    assert!(!more.overlaps(&serial));
    assert!(ports.allocation_containing(0x61).is_some());
    assert!(!more.overlaps(&AddressRange::new(0x40, 0x43).unwrap()));
    assert!(!more.overlaps(&AddressRange::new(0x20, 0x21).unwrap()));

    // Interrupts: the planned ones keep their owners, and a new one is none of them and no
    // legacy ISA one.
    let mut irqs = irqs.expect("x86-64 has GSIs");
    for device in &devices {
        assert_eq!(
            irq_owners.get(&device.irq).map(String::as_str),
            Some(device.name.as_str())
        );
        assert!(irqs.is_allocated(device.irq));
    }
    let next = irqs.allocate_id().unwrap();
    assert!(next > 4, "a legacy interrupt: {next}");
    assert!(devices.iter().all(|d| d.irq != next));
}

/// Whatever a VMM allocates from the allocators of a plan, in any window, from its start or
/// its end, is over no range the plan gave to boot RAM, a device, a DAX window or a hotplug
/// slot: boot RAM (two nodes, the first across the 32-bit hole) is held under its owner's
/// name like everything else the plan placed. The plan's placer itself answers the same.
#[test]
fn plan_allocators_never_give_a_planned_range() {
    let mut r = request();
    r.nodes = vec![
        NodeRequest {
            size: 3 << 30,
            memory: RegionSpec::ram(GuestAddress(0), 0),
        },
        NodeRequest {
            size: 512 * MIB,
            memory: RegionSpec::ram(GuestAddress(0), 0),
        },
    ];
    r.devices[0].dax_size = Some(64 * MIB);
    r.hotplug = Some(HotplugRequest {
        slots: 2,
        slot_size: 128 * MIB,
        node: 1,
        memory: RegionSpec::ram(GuestAddress(0), 0),
    });
    let plan = plan(&r).unwrap();
    let given: Vec<(AddressRange, String)> = plan
        .regions
        .iter()
        .chain(&plan.slots)
        .filter(|p| p.spec.ty() != RegionType::Reserved)
        .map(|p| {
            let range = AddressRange::new(p.spec.base().0, p.spec.base().0 + p.spec.size() - 1);
            (range.unwrap(), p.owner.clone())
        })
        .collect();
    assert!(given.iter().any(|(_, o)| o == "RAM node1"), "{given:?}");

    // The plan's placer: a page placed in each kind of window is over none of them.
    for kind in [
        WindowKind::Ram,
        WindowKind::Device,
        WindowKind::Dax,
        WindowKind::Hotplug,
    ] {
        let mut placer = plan.placer.clone();
        if let Ok(range) = placer.place(kind, 0x1000, 0x1000, "more") {
            for (planned, owner) in &given {
                assert!(
                    !range.as_range().overlaps(planned),
                    "{kind}: {range} over {owner}'s {planned:?}"
                );
            }
        }
    }

    // Its allocators: the first and the last free page of every window.
    let PlacerAllocators { windows, .. } = plan.placer.clone().into_allocators();
    for (window, allocator) in windows {
        for policy in [AllocPolicy::FirstMatch, AllocPolicy::LastMatch] {
            let mut allocator = allocator.clone();
            let request = Request::new(0x1000, 0x1000, policy).unwrap();
            let Ok(range) = allocator.allocate_with(&request, "more".to_string()) else {
                continue;
            };
            for (planned, owner) in &given {
                assert!(
                    !range.overlaps(planned),
                    "{window:?}: {range:?} over {owner}'s {planned:?}"
                );
            }
        }
    }
}

/// Each range the plan gave (boot RAM, the serial port's and the devices' MMIO windows, their
/// DAX windows, the hotplug slots) is held by its window's allocator under the owner the plan
/// names it with (`PlannedRegion::owner`), so that a VMM can tell from an allocation which
/// planned region it is.
#[test]
fn plan_allocators_hold_each_planned_range_under_its_owner() {
    let mut r = request();
    r.devices[0].dax_size = Some(64 * MIB);
    r.hotplug = Some(HotplugRequest {
        slots: 2,
        slot_size: 128 * MIB,
        node: 0,
        memory: RegionSpec::ram(GuestAddress(0), 0),
    });
    let plan = plan(&r).unwrap();
    let PlacerAllocators { windows, .. } = plan.placer.clone().into_allocators();
    let mut checked = 0;
    for planned in plan
        .regions
        .iter()
        .chain(&plan.slots)
        .filter(|p| p.spec.ty() != RegionType::Reserved)
    {
        let start = planned.spec.base().0;
        let (_, allocator) = windows
            .iter()
            .find(|(w, _)| w.range().as_range().contains(start))
            .expect("a window holds every planned range");
        let held = allocator
            .allocation_containing(start)
            .unwrap_or_else(|| panic!("{} is not held", planned.owner));
        assert_eq!(
            (held.tag.as_str(), held.range.start(), held.range.size()),
            (planned.owner.as_str(), start, Some(planned.spec.size())),
        );
        checked += 1;
    }
    // Boot RAM, net0, blk0, net0's DAX window and the two slots.
    assert_eq!(checked, 6);
}

/// A reserved window's allocator hands out nothing: its free gaps are held as `reserved`, so a
/// device manager that allocates from any window's allocator never puts a BAR in the guest's
/// reserved range (on x86-64 the local APIC's page is held by the platform, and the rest of its
/// megabyte is where device writes are MSI messages, not memory accesses).
#[test]
fn plan_allocators_hand_out_no_range_of_a_reserved_window() {
    for platform in [Platform::x86_64(), Platform::aarch64()] {
        let mut r = request();
        if platform.arch() != Platform::x86_64().arch() {
            r.serial = None;
        }
        r.platform = platform;
        let plan = plan(&r).unwrap();
        let kept: Vec<_> = plan
            .placer
            .allocations()
            .map(|(o, g)| (o.to_owned(), g))
            .collect();
        let PlacerAllocators { windows, .. } = plan.placer.clone().into_allocators();
        let mut reserved = 0;
        for (window, allocator) in windows
            .iter()
            .filter(|(w, _)| w.kind() == WindowKind::Reserved)
        {
            reserved += 1;
            assert_eq!(allocator.free_ranges().count(), 0, "{window:?}");
            for policy in [AllocPolicy::FirstMatch, AllocPolicy::LastMatch] {
                let request = Request::new(0x1000, 0x1000, policy).unwrap();
                assert!(
                    allocator
                        .clone()
                        .allocate_with(&request, "bar".to_string())
                        .is_err(),
                    "{window:?}"
                );
            }
            // The platform's reservations keep their owners; the gaps are `reserved`.
            for (owner, range) in kept
                .iter()
                .filter(|(_, g)| window.range().as_range().contains_range(&g.as_range()))
            {
                let held = allocator.allocation_containing(range.start().0).unwrap();
                assert_eq!(
                    (held.tag.as_str(), held.range),
                    (owner.as_str(), range.as_range())
                );
            }
            for held in allocator.allocated() {
                let platform_owned = kept.iter().any(|(_, g)| g.as_range() == held.range);
                assert!(
                    platform_owned || held.tag == PlacerAllocators::RESERVED_OWNER,
                    "{held:?}"
                );
            }
        }
        assert!(reserved > 0);
    }
}

/// A range the placer took across windows is handed over as one allocation per window, each
/// of its part there under its owner, freed part by part, as `PlacerAllocators::windows`
/// says; in a reserved window the part keeps its owner beside the free ranges held as
/// reserved.
#[test]
fn a_range_taken_across_windows_is_one_allocation_per_window() {
    let layout = memvisor_space::Layout::x86_64()
        .ram(1 << 30)
        .build()
        .unwrap();
    let mut placer = layout.placer();
    let across =
        memvisor_space::GuestRange::inclusive(GuestAddress(0xfebf_f000), GuestAddress(0xfec0_0fff))
            .unwrap();
    placer.take(across, "bridge").unwrap();
    let PlacerAllocators { mut windows, .. } = placer.into_allocators();
    let mut parts = Vec::new();
    for (window, allocator) in &mut windows {
        let Some(part) = window.range().intersection(&across) else {
            continue;
        };
        let held = allocator.allocation_containing(part.start().0).unwrap();
        assert_eq!((held.tag.as_str(), held.range), ("bridge", part.as_range()));
        assert_eq!(allocator.free(&part.as_range()).unwrap(), "bridge");
        parts.push((window.kind(), part));
    }
    assert_eq!(
        parts.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        [WindowKind::Device, WindowKind::Reserved]
    );
}

/// What every window's allocator holds, by range, with its owner.
fn held(allocators: &PlacerAllocators) -> Vec<Vec<(AddressRange, String)>> {
    allocators
        .windows
        .iter()
        .map(|(_, a)| a.allocated().map(|h| (h.range, h.tag.clone())).collect())
        .collect()
}

/// A device a VMM puts at a fixed address in a reserved window (Cloud Hypervisor's TPM at
/// `0xfed4_0000` on x86-64) is recorded in the allocators handed over, under its owner, with
/// the rest of the reserved range around it still held as reserved; a range over a platform
/// reservation or a device already there, or outside every reserved window, is refused with
/// nothing changed.
#[test]
fn a_fixed_device_in_a_reserved_window_takes_its_range_from_the_reserved_hold() {
    let plan = plan(&request()).unwrap();
    let mut allocators = plan.placer.clone().into_allocators();
    let tpm = GuestRange::new(GuestAddress(0xfed4_0000), 0x5000).unwrap();
    let (_, before) = allocators
        .first_of(WindowKind::Reserved)
        .unwrap()
        .allocation_containing(0xfed4_0000)
        .map(|h| (h.tag.clone(), h.range))
        .unwrap();
    allocators.take_reserved(tpm, "tpm").unwrap();
    let window = allocators.first_of(WindowKind::Reserved).unwrap();
    assert_eq!(window.free_ranges().count(), 0);
    let at = |a: &memvisor_space::memvisor_resources::AddressAllocator<String>, addr| {
        a.allocation_containing(addr)
            .map(|h| (h.tag.clone(), h.range))
            .unwrap()
    };
    assert_eq!(at(window, 0xfed4_0000), ("tpm".into(), tpm.as_range()));
    let below = AddressRange::new(before.start(), 0xfed3_ffff).unwrap();
    let above = AddressRange::new(0xfed4_5000, before.end()).unwrap();
    assert_eq!(at(window, 0xfed3_ffff), ("reserved".into(), below));
    assert_eq!(at(window, 0xfed4_5000), ("reserved".into(), above));

    // Refused, each with nothing changed: the TPM's range again, a range over the IOAPIC's
    // page, one across the reserved window's end, one in a device window.
    let kept = held(&allocators);
    let e = allocators.take_reserved(tpm, "tpm2").unwrap_err();
    assert!(
        matches!(&e, Error::Taken { other, other_range, .. }
            if other == "tpm" && *other_range == tpm),
        "{e:?}"
    );
    let e = allocators
        .take_reserved(
            GuestRange::new(GuestAddress(0xfec0_0000), 0x2000).unwrap(),
            "over",
        )
        .unwrap_err();
    assert!(
        matches!(&e, Error::Taken { other, .. } if other != "reserved"),
        "{e:?}"
    );
    for outside in [
        GuestRange::new(GuestAddress(0xffbf_f000), 0x2000).unwrap(),
        GuestRange::new(GuestAddress(0xd000_0000), 0x1000).unwrap(),
    ] {
        let e = allocators.take_reserved(outside, "out").unwrap_err();
        assert!(
            matches!(&e, Error::NotInWindow { window: WindowKind::Reserved, range, .. }
                if *range == outside),
            "{e:?}"
        );
    }
    assert_eq!(held(&allocators), kept);

    // A hold taken whole leaves no reserved part, and an AddressRange is taken as it is.
    let window = allocators.first_of(WindowKind::Reserved).unwrap();
    let whole = window.allocation_containing(0xfed4_5000).unwrap().range;
    allocators.take_reserved(whole, "acpi").unwrap();
    let window = allocators.first_of(WindowKind::Reserved).unwrap();
    assert_eq!(at(window, 0xfed4_5000), ("acpi".into(), whole));
    assert_eq!(at(window, 0xfed3_ffff), ("reserved".into(), below));
    assert_eq!(window.free_ranges().count(), 0);
}
