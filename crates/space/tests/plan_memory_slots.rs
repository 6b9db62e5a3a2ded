//! A plan keeps within the memory-slot numbers the VM has (`plan_with_memory_slots`, KVM's
//! slot limit): boot RAM and every hotplug slot take one,
//! so a plan that needs more is refused at once, naming both numbers, rather than a later plug
//! failing. The space built from the plan has the same numbers.

use std::sync::Arc;

use memvisor_space::plan::{
    HotplugRequest, NodeRequest, Plan, PlanError, PlanItem, PlanRequest, plan,
    plan_with_memory_slots,
};
use memvisor_space::{DEFAULT_SLOTS, Error, Platform, Region, RegionSpec};
use vm_memory::GuestAddress;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The plan of `ram` bytes of boot RAM and `hotplug_slots` 2 MiB slots for a VM of
/// `memory_slots` numbers ([`plan`] for none).
fn planned(
    ram: u64,
    hotplug_slots: Option<u32>,
    memory_slots: Option<u32>,
) -> Result<Plan, PlanError> {
    let mut request = base_request(hotplug_slots);
    request.nodes[0].size = ram;
    match memory_slots {
        Some(count) => plan_with_memory_slots(&request, count),
        None => plan(&request),
    }
}

/// A request of 256 MiB of boot RAM on x86-64 and `hotplug_slots` 2 MiB slots.
fn base_request(hotplug_slots: Option<u32>) -> PlanRequest {
    PlanRequest {
        platform: Platform::x86_64(),
        phys_bits: 40,
        nodes: vec![NodeRequest {
            size: 256 * MIB,
            memory: RegionSpec::ram(GuestAddress(0), 0),
        }],
        serial: None,
        devices: vec![],
        hotplug: hotplug_slots.map(|slots| HotplugRequest {
            slots,
            slot_size: 2 * MIB,
            node: 0,
            memory: RegionSpec::ram(GuestAddress(0), 0),
        }),
        low_ram_limit: None,
        window_align: None,
    }
}

#[test]
fn plan_more_hotplug_slots_than_the_vms_slot_numbers_names_both() {
    // KVM's 32 slots when it does not answer: one boot RAM region and 32 hotplug slots need 33.
    let e = planned(256 * MIB, Some(32), Some(32)).unwrap_err();
    assert_eq!(e.item, PlanItem::Hotplug, "{e}");
    assert!(matches!(e.error, Error::InvalidLayout { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "hotplug: invalid layout: 32 hotplug slots and 1 boot RAM regions need 33 memory-slot \
         numbers, more than the 32 of the address space"
    );
    // Boot RAM split by the 32-bit hole is two regions.
    let e = planned(4 * GIB, None, Some(1)).unwrap_err();
    assert_eq!(e.item, PlanItem::Memory, "{e}");
    assert!(matches!(e.error, Error::NoSlotNumber { count: 1 }), "{e}");
    let e = planned(4 * GIB, Some(1), Some(2)).unwrap_err();
    assert_eq!(e.item, PlanItem::Hotplug, "{e}");
    assert!(matches!(e.error, Error::InvalidLayout { .. }), "{e}");
    assert!(e.to_string().contains("need 3 memory-slot numbers"), "{e}");
}

#[test]
fn plan_within_the_vms_slot_numbers_builds_a_space_with_them() {
    let p = planned(256 * MIB, Some(7), Some(8)).unwrap();
    assert_eq!(p.memory_slots, 8);
    assert_eq!(p.slots.len(), 7);
    let space = p.space_builder().plan().unwrap();
    for s in &p.slots {
        let region = Arc::new(Region::plan(s.spec.clone()).unwrap());
        space.insert_region(region).unwrap();
    }
    // Every number is taken: one more region with memory is refused.
    let last = &p.slots[6].spec;
    let extra =
        RegionSpec::ram(GuestAddress(last.base().0 + last.size()), 2 * MIB).with_hotplug(true);
    let err = space
        .insert_region(Arc::new(Region::plan(extra).unwrap()))
        .unwrap_err();
    assert!(matches!(err, Error::NoSlotNumber { count: 8 }), "{err}");
}

#[test]
fn plan_without_memory_slots_keeps_the_default() {
    let p = planned(256 * MIB, None, None).unwrap();
    assert_eq!(p.memory_slots, DEFAULT_SLOTS);
    let p = planned(256 * MIB, None, Some(DEFAULT_SLOTS)).unwrap();
    assert_eq!(p.memory_slots, DEFAULT_SLOTS);
}

#[test]
fn plan_takes_every_slot_limit_kvm_answers() {
    // KVM answers 32,767 on AArch64 (no slots of its own), and memvisor-kvm's `slot_limit`
    // up to 65,536.
    for count in [32_767, 65_536] {
        let p = planned(256 * MIB, None, Some(count)).unwrap();
        assert_eq!(p.memory_slots, count);
    }
}

#[test]
fn plan_memory_slots_out_of_range_are_refused() {
    for count in [0, 65_537, u32::MAX] {
        let e = planned(256 * MIB, None, Some(count)).unwrap_err();
        assert_eq!(e.item, PlanItem::Memory, "{count}: {e}");
        assert!(
            matches!(e.error, Error::InvalidLayout { .. }),
            "{count}: {e}"
        );
    }
}

/// A device's DAX window has memory and takes a memory-slot number too: a plan whose DAX
/// windows leave too few numbers names the device (not boot RAM, which fits), and the
/// hotplug slots' refusal counts the DAX windows as what they are.
#[test]
fn plan_counts_dax_windows_in_the_memory_slot_numbers_as_dax_windows() {
    use memvisor_space::plan::DeviceRequest;

    let request = |hotplug_slots: Option<u32>| {
        let mut r = base_request(hotplug_slots);
        r.devices = vec![DeviceRequest {
            name: "fs0".into(),
            mmio_size: 0x1000,
            address: None,
            irq: None,
            dax_size: Some(2 * MIB),
        }];
        r
    };
    // One boot RAM region fits one number; the DAX window does not.
    let e = plan_with_memory_slots(&request(None), 1).unwrap_err();
    assert_eq!(e.item, PlanItem::DeviceDaxSize(0), "{e}");
    assert!(matches!(e.error, Error::NoSlotNumber { count: 1 }), "{e}");
    // One boot RAM region, one DAX window and 7 hotplug slots need 9 of 8.
    let e = plan_with_memory_slots(&request(Some(7)), 8).unwrap_err();
    assert_eq!(e.item, PlanItem::Hotplug, "{e}");
    assert_eq!(
        e.to_string(),
        "hotplug: invalid layout: 7 hotplug slots, 1 boot RAM regions and 1 DAX windows need 9 \
         memory-slot numbers, more than the 8 of the address space"
    );
    let p = plan_with_memory_slots(&request(Some(6)), 8).unwrap();
    let space = p.space_builder().plan().unwrap();
    for s in &p.slots {
        space
            .insert_region(Arc::new(Region::plan(s.spec.clone()).unwrap()))
            .unwrap();
    }
}
