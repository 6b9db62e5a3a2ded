//! The AArch64 preset's facts.

use super::{Arch, Platform, Reservation, ReservationKind, SerialPreset};

/// GIC shared peripheral interrupts (SPIs) start at INTID 32; the range ends at 127.
const SPIS: (u32, u32) = (32, 127);
/// The interrupt controller's range: the preset layout's reserved window, 64–144 MiB.
const GIC: (u64, u64) = (64 << 20, (144 << 20) - 1);
/// A PL011 UART's register page.
const UART_SIZE: u64 = 0x1000;

pub(super) fn platform() -> Platform {
    Platform {
        arch: Arch::Aarch64,
        irqs: SPIS.0..=SPIS.1,
        legacy_irqs: &[],
        timer_irqs: &[],
        io_ports: None,
        kernel_ports: &[],
        serial: SerialPreset::Mmio { size: UART_SIZE },
        reservations: vec![Reservation::new(
            "GIC",
            GIC.0,
            GIC.1,
            ReservationKind::Reserved,
        )],
    }
}
