//! The refusals `plan`'s request fields promise, each at its own item, for what the layout or
//! the interrupts cannot honour: a device's fixed interrupt past the platform's range, more
//! devices than free interrupts, a device's fixed MMIO address outside every device window, a
//! DAX window of zero bytes, the serial port's interrupt past the range and its MMIO address
//! outside the device windows (a device's fixed window over it is refused at the device: the
//! serial port is placed first), and hotplug slots of zero bytes.
//!
//! Not run under Miri: the planner has no unsafe code.

#![cfg(not(miri))]

use memvisor_space::plan::{
    DeviceRequest, HotplugRequest, NodeRequest, PlanItem, PlanRequest, SerialRequest, plan,
};
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

#[test]
fn plan_dax_window_of_zero_is_refused_at_its_size() {
    let mut r = request(2);
    r.devices[1].dax_size = Some(0);
    let e = plan(&r).unwrap_err();
    assert_eq!(e.item, PlanItem::DeviceDaxSize(1), "{e}");
    assert!(
        matches!(e.error, Error::NothingToPlace { ref owner } if owner == "dev1 DAX"),
        "{e}"
    );
}

#[test]
fn plan_serial_irq_past_the_platform_range_is_refused_at_its_irq() {
    let mut r = request(0);
    r.serial = Some(SerialRequest {
        irq: Some(24),
        ..SerialRequest::default()
    });
    let e = plan(&r).unwrap_err();
    assert_eq!(e.item, PlanItem::SerialIrq, "{e}");
    assert!(
        matches!(e.error, Error::IrqOutOfRange { irq: 24, .. }),
        "{e}"
    );
}

#[test]
fn plan_serial_mmio_address_outside_device_windows_is_refused_and_a_device_over_it_at_the_device() {
    let aarch64 = |address: u64, devices: Vec<DeviceRequest>| PlanRequest {
        platform: Platform::aarch64(),
        serial: Some(SerialRequest {
            address: Some(address),
            ..SerialRequest::default()
        }),
        devices,
        ..request(0)
    };
    // Inside RAM (from 2 GiB on AArch64), not a device window.
    let e = plan(&aarch64(0x8000_0000, vec![])).unwrap_err();
    assert_eq!(e.item, PlanItem::SerialAddress, "{e}");
    assert!(matches!(e.error, Error::NotInWindow { .. }), "{e}");
    // Over a device's fixed window.
    let dev = plan(&aarch64(0x2000_0000, vec![])).unwrap();
    let at = dev.devices[0].mmio.unwrap().start().0;
    let mut fixed = device(0);
    fixed.address = Some(at);
    // The serial port is placed before every device, so the device's window is the one
    // refused, at its own address, naming the serial port's.
    let e = plan(&aarch64(at, vec![fixed])).unwrap_err();
    assert_eq!(e.item, PlanItem::DeviceAddress(0), "{e}");
    assert!(
        matches!(e.error, Error::Taken { ref other, .. } if other == "serial"),
        "{e}"
    );
}

#[test]
fn plan_hotplug_slots_of_zero_bytes_are_refused_at_the_slot_size() {
    let mut r = request(0);
    r.hotplug = Some(HotplugRequest {
        slots: 2,
        slot_size: 0,
        node: 0,
        memory: RegionSpec::ram(GuestAddress(0), 0),
    });
    let e = plan(&r).unwrap_err();
    assert_eq!(e.item, PlanItem::HotplugSlotSize, "{e}");
    assert!(matches!(e.error, Error::NothingToPlace { .. }), "{e}");
}
