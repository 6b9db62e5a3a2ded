//! A VMM that plans its VM and then allocates more MMIO windows, I/O ports and interrupts
//! through memvisor-resources' own allocators (its device manager takes them, as Cloud
//! Hypervisor's and crosvm's do): the plan's placer hands them over with everything the plan
//! placed still held, under its owner's name.
//!
//! Not run under Miri: the planner has no unsafe code.

#![cfg(not(miri))]

use memvisor_space::memvisor_resources::{AddressRange, AllocPolicy, Request};
use memvisor_space::plan::{DeviceRequest, NodeRequest, PlanRequest, SerialRequest, plan};
use memvisor_space::{PlacerAllocators, Platform, RegionSpec, WindowKind};
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
