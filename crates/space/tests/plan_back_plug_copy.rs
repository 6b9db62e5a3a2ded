//! A VMM's whole path through the crate: plan from a request, back the plan's space, plug every
//! hotplug slot, write guest memory, then build a second space from the same plan, plug the
//! same slots and copy the memory over (a restore); each refused step in between leaves both
//! spaces as they were.

#![cfg(not(miri))]

use std::sync::Arc;

use memvisor_space::plan::{DeviceRequest, HotplugRequest, NodeRequest, PlanRequest, plan};
use memvisor_space::{Backing, Error, Platform, RegionSpec, RegionType};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

const MIB: u64 = 1 << 20;

fn request() -> PlanRequest {
    PlanRequest {
        platform: Platform::x86_64(),
        phys_bits: 40,
        nodes: vec![
            NodeRequest {
                size: 8 * MIB,
                memory: RegionSpec::ram(GuestAddress(0), 0).with_backing(Backing::Memfd),
            };
            2
        ],
        serial: None,
        devices: vec![DeviceRequest {
            name: "pmem0".into(),
            mmio_size: 0x1000,
            address: None,
            irq: None,
            dax_size: Some(2 * MIB),
        }],
        hotplug: Some(HotplugRequest {
            slots: 3,
            slot_size: 2 * MIB,
            node: 1,
            memory: RegionSpec::ram(GuestAddress(0), 0).with_backing(Backing::Memfd),
        }),
        low_ram_limit: None,
        window_align: None,
    }
}

#[test]
fn planned_space_restored_into_a_second_space() {
    let plan = plan(&request()).unwrap();
    let (first, _) = plan.space_builder().back().unwrap();
    for slot in &plan.slots {
        first.plug(slot.spec.clone()).unwrap();
    }
    let before = first.snapshot();
    // A slot plugged twice is refused and changes nothing.
    let err = first.plug(plan.slots[0].spec.clone()).unwrap_err();
    assert!(
        matches!(err, Error::Overlap { .. } | Error::SlotBusy { .. }),
        "{err:?}"
    );
    assert!(Arc::ptr_eq(&before, &first.snapshot()));
    // Write a pattern into every region with memory.
    let memory = first.memory();
    for (i, region) in memory.iter().enumerate() {
        let byte = u8::try_from(i + 1).unwrap();
        let len = usize::try_from(region.len()).unwrap();
        memory
            .write_slice(&vec![byte; len], region.start_addr())
            .unwrap();
    }
    // Restore: the same plan, the same slots, the memory copied.
    let (second, _) = plan.space_builder().back().unwrap();
    for region in before.regions().filter(|r| r.spec().hotplug()) {
        second.plug(region.spec().clone()).unwrap();
    }
    let target = second.memory();
    assert_eq!(target.num_regions(), memory.num_regions());
    for region in memory.iter() {
        let len = usize::try_from(region.len()).unwrap();
        let mut buf = vec![0; len];
        memory.read_slice(&mut buf, region.start_addr()).unwrap();
        // The second space's memory is its own: zero until the copy.
        let mut fresh = vec![1; len];
        target.read_slice(&mut fresh, region.start_addr()).unwrap();
        assert!(fresh.iter().all(|&b| b == 0), "{:?}", region.start_addr());
        target.write_slice(&buf, region.start_addr()).unwrap();
        let mut back = vec![0; len];
        target.read_slice(&mut back, region.start_addr()).unwrap();
        assert_eq!(back, buf);
    }
    // Writing the copy leaves the first space's memory as it was.
    let first_snapshot = first.snapshot();
    target
        .write_slice(&[0xee; 0x1000], plan.slots[2].spec.base())
        .unwrap();
    let mut page = [0; 0x1000];
    memory
        .read_slice(&mut page, plan.slots[2].spec.base())
        .unwrap();
    assert!(page.iter().all(|&b| b != 0xee && b != 0));
    // A plug the second space refuses changes neither space.
    let second_snapshot = second.snapshot();
    let err = second.plug(plan.slots[0].spec.clone()).unwrap_err();
    assert!(
        matches!(err, Error::Overlap { .. } | Error::SlotBusy { .. }),
        "{err:?}"
    );
    assert!(Arc::ptr_eq(&second_snapshot, &second.snapshot()));
    assert!(Arc::ptr_eq(&first_snapshot, &first.snapshot()));
    // A snapshot holding a slot's region keeps the slot claimed after its unplug.
    drop(second_snapshot);
    // Unplugging a slot of the second space leaves the first alone (its memory guard let go
    // first: a guard holding the slot's memory keeps the slot claimed).
    drop(target);
    let slot = &plan.slots[1].spec;
    drop(second.remove_region(slot.base(), slot.size()).unwrap());
    assert!(first.snapshot().find_region(slot.base()).is_some());
    assert!(second.snapshot().find_region(slot.base()).is_none());
    // The first space's slot still holds what was written there.
    let mut page = [0; 0x1000];
    memory.read_slice(&mut page, slot.base()).unwrap();
    assert!(page.iter().all(|&b| b != 0) && page.iter().all(|&b| b == page[0]));
    assert_eq!(
        first.snapshot().total_size(RegionType::Ram),
        second.snapshot().total_size(RegionType::Ram) + slot.size()
    );
    // And the slot can be plugged again there.
    second.plug(slot.clone()).unwrap();
}
