//! The refusals `plan` promises for a device request that the layout or the interrupts cannot
//! honour, each at the device's own item: a fixed interrupt past the platform's range, more
//! devices than free interrupts, and a fixed MMIO address outside every device window.
//!
//! Not run under Miri: the planner has no unsafe code.

#![cfg(not(miri))]

use memvisor_space::plan::{DeviceRequest, NodeRequest, PlanItem, PlanRequest, plan};
use memvisor_space::{Error, Platform, RegionSpec, WindowKind};
use vm_memory::GuestAddress;

fn device(i: usize) -> DeviceRequest {
    DeviceRequest {
        name: format!("dev{i}"),
        mmio_size: 0x1000,
        address: None,
        irq: None,
        dax_size: None,
    }
}

fn request(devices: usize) -> PlanRequest {
    PlanRequest {
        platform: Platform::x86_64(),
        phys_bits: 40,
        nodes: vec![NodeRequest {
            size: 256 << 20,
            memory: RegionSpec::ram(GuestAddress(0), 0),
        }],
        serial: None,
        devices: (0..devices).map(device).collect(),
        hotplug: None,
        low_ram_limit: None,
        window_align: None,
    }
}

#[test]
fn plan_device_irq_past_the_platform_range_is_refused_at_the_device() {
    let mut r = request(2);
    r.devices[1].irq = Some(24);
    let e = plan(&r).unwrap_err();
    assert_eq!(e.item, PlanItem::DeviceIrq(1), "{e}");
    assert!(
        matches!(e.error, Error::IrqOutOfRange { irq: 24, .. }),
        "{e}"
    );
    r.devices[1].irq = Some(23);
    assert_eq!(plan(&r).unwrap().devices[1].irq, 23);
}

#[test]
fn plan_more_devices_than_free_irqs_is_refused_at_the_first_without_one() {
    // GSIs 5 to 23 are free for devices on x86-64: 19 of them.
    assert_eq!(plan(&request(19)).unwrap().devices.len(), 19);
    let e = plan(&request(20)).unwrap_err();
    assert_eq!(e.item, PlanItem::DeviceIrq(19), "{e}");
    assert!(matches!(e.error, Error::NoFreeIrq { .. }), "{e}");
}

#[test]
fn plan_device_address_outside_every_device_window_is_refused() {
    for address in [0x1000, 0xfec0_1000, 0x1_0000_0000] {
        let mut r = request(1);
        r.devices[0].address = Some(address);
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::DeviceAddress(0), "{address:#x}: {e}");
        assert!(
            matches!(
                e.error,
                Error::NotInWindow {
                    window: WindowKind::Device,
                    ..
                }
            ),
            "{address:#x}: {e}"
        );
    }
    let mut r = request(1);
    r.devices[0].address = Some(0xc000_1000);
    assert_eq!(
        plan(&r).unwrap().devices[0].mmio.unwrap().start(),
        GuestAddress(0xc000_1000)
    );
}
