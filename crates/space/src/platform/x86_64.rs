//! The x86-64 preset's facts.

use vm_memory::GuestAddress;

use super::{Arch, Platform, Reservation, ReservationKind, SerialPreset};
use crate::range::GuestRange;

/// IOAPIC GSIs (one IOAPIC, 24 pins).
const GSIS: (u32, u32) = (0, 23);
/// Legacy ISA interrupts (timer, keyboard, cascade, COM2, COM1).
const LEGACY_GSIS: [u32; 5] = [0, 1, 2, 3, 4];
/// The timer's GSIs: the PIT's, and the IOAPIC pin KVM routes it to (the PICs' cascade).
const TIMER_GSIS: [u32; 2] = [0, 2];
/// The I/O ports KVM's in-kernel devices answer (`KVM_CREATE_IRQCHIP`'s PICs and ELCR,
/// `KVM_CREATE_PIT2`'s PIT and its speaker port): device, first and last port.
const KVM_PORTS: [(&str, u64, u64); 5] = [
    ("PIC", 0x20, 0x21),
    ("PIT", 0x40, 0x43),
    ("PIT", 0x61, 0x61),
    ("PIC", 0xa0, 0xa1),
    ("ELCR", 0x4d0, 0x4d1),
];
/// COM1: 8 ports at 0x3f8, IRQ 4.
const COM1: SerialPreset = SerialPreset::Port {
    base: 0x3f8,
    len: 8,
    irq: 4,
};
/// The IOAPIC's register page.
const IOAPIC: u64 = 0xfec0_0000;
/// The local APIC's register page.
const LAPIC: u64 = 0xfee0_0000;
/// KVM's TSS (3 pages from 0xfffb_d000, the address to give `KVM_SET_TSS_ADDR`) and its
/// identity-map page on either side: 0xfffb_c000, where KVM puts it when
/// `KVM_SET_IDENTITY_MAP_ADDR` is not called (as Firecracker does not), or 0xfffc_0000, right
/// after the TSS.
const KVM_TSS: u64 = 0xfffb_c000;
const KVM_TSS_LEN: u64 = 5 * 0x1000;
/// The address to give `KVM_SET_TSS_ADDR` (its 3 pages lie inside the reservation).
pub(super) const KVM_TSS_ADDR: u64 = KVM_TSS + 0x1000;
/// The address to give `KVM_SET_IDENTITY_MAP_ADDR` (KVM's own default, so the same page as
/// when it is not called).
pub(super) const KVM_IDENTITY_MAP_ADDR: u64 = KVM_TSS;
/// The reservation's name.
pub(super) const KVM_TSS_NAME: &str = "KVM TSS, identity map";
/// The pages KVM's pages moved by `Platform::with_kvm_pages_at` take: the identity-map page,
/// then the TSS's 3.
pub(super) const KVM_PAGES_MOVED_LEN: u64 = 4 * 0x1000;
/// Where moved KVM pages may go: the preset's reserved and firmware windows,
/// `[0xfec0_0000, 4 GiB)`, over no RAM and no device.
pub(super) const KVM_PAGES_ROOM: (u64, u64) = (0xfec0_0000, 0xffff_ffff);

/// KVM's pages moved to `identity_map` (the identity-map page there, the TSS's 3 pages after
/// it), or why not.
pub(super) fn kvm_pages_at(identity_map: u64) -> Result<Reservation, String> {
    if !identity_map.is_multiple_of(0x1000) {
        return Err(format!(
            "KVM's pages at {identity_map:#x}: not on a 4 KiB page"
        ));
    }
    let last = identity_map
        .checked_add(KVM_PAGES_MOVED_LEN - 1)
        .filter(|&last| identity_map >= KVM_PAGES_ROOM.0 && last <= KVM_PAGES_ROOM.1)
        .ok_or_else(|| {
            format!(
                "KVM's pages at {identity_map:#x} ({KVM_PAGES_MOVED_LEN:#x} bytes) are not inside \
                 the reserved and firmware windows [{:#x}, {:#x}]",
                KVM_PAGES_ROOM.0, KVM_PAGES_ROOM.1
            )
        })?;
    Ok(Reservation::new(
        KVM_TSS_NAME,
        identity_map,
        last,
        ReservationKind::Reserved,
    ))
}
/// The PC legacy hole: the EBDA, VGA memory and option/BIOS ROMs.
const LEGACY_HOLE: (u64, u64) = (0x9_fc00, 0xf_ffff);
/// PCI MMCONFIG (ECAM): 256 buses.
const PCI_MMCONFIG: u64 = 0xe000_0000;
const PCI_MMCONFIG_LEN: u64 = 256 << 20;

pub(super) fn platform() -> Platform {
    let reservations = vec![
        Reservation::new(
            "PC legacy hole",
            LEGACY_HOLE.0,
            LEGACY_HOLE.1,
            ReservationKind::InRam,
        ),
        Reservation::new("IOAPIC", IOAPIC, IOAPIC + 0xfff, ReservationKind::Reserved),
        Reservation::new(
            "local APIC",
            LAPIC,
            LAPIC + 0xfff,
            ReservationKind::Reserved,
        ),
        Reservation::new(
            KVM_TSS_NAME,
            KVM_TSS,
            KVM_TSS + (KVM_TSS_LEN - 1),
            ReservationKind::Reserved,
        ),
    ];
    Platform {
        arch: Arch::X86_64,
        irqs: GSIS.0..=GSIS.1,
        legacy_irqs: &LEGACY_GSIS,
        timer_irqs: &TIMER_GSIS,
        io_ports: GuestRange::inclusive(GuestAddress(0), GuestAddress(0xffff)).ok(),
        kernel_ports: &KVM_PORTS,
        serial: COM1,
        reservations,
    }
}

pub(super) fn pci_mmconfig() -> Reservation {
    Reservation::new(
        "PCI MMCONFIG",
        PCI_MMCONFIG,
        PCI_MMCONFIG + (PCI_MMCONFIG_LEN - 1),
        ReservationKind::Reserved,
    )
}
