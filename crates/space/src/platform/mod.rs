//! [`Platform`] presets: what an architecture fixes besides the layout windows — interrupt
//! numbers, legacy interrupts and I/O ports, the serial port's defaults and the address
//! ranges the platform keeps for itself.

mod aarch64;
mod x86_64;

use std::fmt;
use std::ops::RangeInclusive;

use vm_memory::GuestAddress;

use crate::error::{Error, Result};
use crate::layout::{Layout, LayoutBuilder};
use crate::placer::Placer;
use crate::range::GuestRange;
use crate::spec::GUEST_PAGE_SIZE;

/// The architectures with a preset: the one architecture type of the workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    /// x86-64: IOAPIC GSIs, port I/O serial; RAM below the 32-bit MMIO hole (3 GiB) and from
    /// 4 GiB up.
    X86_64,
    /// AArch64: GIC SPIs, MMIO serial; firmware flash at 0, devices below 1 GiB, RAM from
    /// 1 GiB up.
    Aarch64,
}

impl Arch {
    /// Every architecture with a preset.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The name used in specs and on command lines (`x86_64`, `aarch64`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The architecture named `text` (as [`name`](Self::name) spells it).
    ///
    /// ```
    /// use memvisor_space::Arch;
    ///
    /// assert_eq!(Arch::parse("aarch64"), Some(Arch::Aarch64));
    /// assert_eq!(Arch::parse("riscv64"), None);
    /// ```
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == text)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the platform does with a reserved range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReservationKind {
    /// Kept free of everything: nothing may be placed there, and a plan shows it as a
    /// reserved region (interrupt controllers, KVM's TSS, PCI MMCONFIG).
    Reserved,
    /// Inside boot RAM, which keeps its memory there, but firmware memory maps (e820) leave
    /// it out: the PC legacy hole. Not guest-page aligned, so never a region of its own.
    InRam,
}

/// A range the platform keeps for itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reservation {
    name: &'static str,
    range: GuestRange,
    kind: ReservationKind,
}

impl Reservation {
    fn new(name: &'static str, first: u64, last: u64, kind: ReservationKind) -> Self {
        let range = GuestRange::inclusive(GuestAddress(first), GuestAddress(last))
            .unwrap_or_else(|_| unreachable!("preset ranges are ordered"));
        Self { name, range, kind }
    }

    /// What it is for (`IOAPIC`, `KVM TSS, identity map`, ...).
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its addresses.
    #[must_use]
    pub fn range(&self) -> GuestRange {
        self.range
    }

    /// Whether it is kept free or stays inside RAM.
    #[must_use]
    pub fn kind(&self) -> ReservationKind {
        self.kind
    }
}

/// The serial port a platform gives a guest by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SerialPreset {
    /// A 16550 UART on I/O ports (x86-64 COM1).
    Port {
        /// First I/O port.
        base: u64,
        /// Number of ports.
        len: u64,
        /// Its fixed interrupt.
        irq: u32,
    },
    /// A memory-mapped UART placed in a device window, interrupt from the free ones.
    Mmio {
        /// Its MMIO window size.
        size: u64,
    },
}

/// An architecture's fixed facts: interrupt numbers, legacy interrupts and ports, the
/// serial port, reserved ranges, and the preset [`Layout`] they belong with.
///
/// ```
/// use memvisor_space::{Arch, Platform, ReservationKind};
///
/// let x86 = Platform::x86_64();
/// assert_eq!(x86.irq_range(), 0..=23);
/// assert_eq!(x86.legacy_irqs(), [0, 1, 2, 3, 4]);
/// let tss = x86.reservations().iter().find(|r| r.name().starts_with("KVM")).unwrap();
/// assert_eq!(tss.range().start().0, 0xfffb_c000);
/// assert_eq!(tss.range().size(), Some(5 * 4096));
/// assert_eq!(Platform::new(Arch::Aarch64).irq_name(), "INTID");
/// # Ok::<(), memvisor_space::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Platform {
    arch: Arch,
    irqs: RangeInclusive<u32>,
    legacy_irqs: &'static [u32],
    timer_irqs: &'static [u32],
    io_ports: Option<GuestRange>,
    kernel_ports: &'static [(&'static str, u64, u64)],
    serial: SerialPreset,
    reservations: Vec<Reservation>,
}

impl Platform {
    /// The preset of `arch`.
    #[must_use]
    pub fn new(arch: Arch) -> Self {
        match arch {
            Arch::X86_64 => x86_64::platform(),
            Arch::Aarch64 => aarch64::platform(),
        }
    }

    /// The x86-64 preset: GSIs 0–23 (one IOAPIC), GSIs 0–4 legacy ISA (never given to
    /// devices), COM1 at port 0x3f8 with IRQ 4, the IOAPIC and local APIC pages, KVM's TSS and
    /// identity-map pages (5 pages at 0xfffb_c000: the TSS at 0xfffb_d000 for
    /// `KVM_SET_TSS_ADDR`, with the identity-map page where KVM puts it by default or right
    /// after the TSS; [`with_kvm_pages_at`](Self::with_kvm_pages_at) moves them), and the PC
    /// legacy hole
    /// (0x9fc00–0xfffff) inside RAM. A [`plan`](crate::plan::plan) also keeps GSIs 0 and 2 (the
    /// timer's) from the serial port and holds the I/O ports KVM's in-kernel PICs, PIT and
    /// ELCR answer (0x20–0x21, 0x40–0x43, 0x61, 0xa0–0xa1, 0x4d0–0x4d1) in its placer, as
    /// [`placer`](Self::placer), [`Layout::placer`] and
    /// [`Snapshot::placer`](crate::Snapshot::placer) do.
    #[must_use]
    pub fn x86_64() -> Self {
        Self::new(Arch::X86_64)
    }

    /// The AArch64 preset: GIC SPIs 32–127, no legacy interrupts or ports, an MMIO serial
    /// port, and the GIC's range.
    #[must_use]
    pub fn aarch64() -> Self {
        Self::new(Arch::Aarch64)
    }

    /// The platform with PCI MMCONFIG (ECAM) reserved: 256 MiB at 0xe000_0000 in the 32-bit
    /// device window on x86-64. Off by default (the presets' devices are virtio-mmio). Asking
    /// again changes nothing: the range is reserved once.
    ///
    /// # Errors
    /// [`Error::InvalidLayout`] on an architecture without it in its preset.
    pub fn with_pci_mmconfig(mut self) -> Result<Self> {
        match self.arch {
            Arch::X86_64 => {
                let mmconfig = x86_64::pci_mmconfig();
                if !self.reservations.contains(&mmconfig) {
                    self.reservations.push(mmconfig);
                    self.reservations.sort_by_key(|r| r.range);
                }
                Ok(self)
            }
            Arch::Aarch64 => Err(Error::InvalidLayout {
                reason: "the aarch64 preset has no PCI MMCONFIG range".into(),
            }),
        }
    }

    /// The platform with KVM's pages moved to `identity_map`: the identity-map page there and
    /// the TSS's 3 pages right after it (QEMU's order; 4 pages in all), in place of the
    /// preset's 5 pages at 0xfffb_c000, which leave firmware ending at 4 GiB at most 252 KiB.
    /// QEMU's place, 0xfeff_c000, in the reserved window below the firmware window, leaves
    /// firmware the whole firmware window, `[0xffc0_0000, 4 GiB)` (4 MiB: OVMF's 2 or 4 MiB
    /// fit; SeaBIOS's 256 KiB image does not fit the preset's place). Then
    /// [`kvm_identity_map_addr`](Self::kvm_identity_map_addr) is `identity_map` and
    /// [`kvm_tss_addr`](Self::kvm_tss_addr) the page after it; a plan's memory map and
    /// placer hold the moved pages. The VMM must then call `KVM_SET_IDENTITY_MAP_ADDR` with
    /// the identity-map address before it creates its first vCPU (KVM refuses the call with
    /// `EINVAL` once a vCPU exists): without the call KVM puts the page at 0xfffb_c000, which
    /// is no longer reserved. Moving again replaces the place.
    ///
    /// # Errors
    /// [`Error::InvalidLayout`] on AArch64 (no KVM TSS), or when the 4 pages are not on a
    /// 4 KiB page, not inside the x86-64 preset's reserved and firmware windows
    /// (`[0xfec0_0000, 4 GiB)`, over no RAM and no device; KVM takes a TSS below 4 GiB) or
    /// overlap another of the platform's reservations (the IOAPIC's or the local APIC's page).
    ///
    /// ```
    /// use memvisor_space::{Error, GuestRange, Platform};
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// let platform = Platform::x86_64().with_kvm_pages_at(0xfeff_c000)?;
    /// assert_eq!(platform.kvm_identity_map_addr(), Some(0xfeff_c000));
    /// assert_eq!(platform.kvm_tss_addr(), Some(0xfeff_d000));
    /// let layout = platform.layout().ram(1 << 30).build()?;
    /// let mut placer = platform.placer(&layout)?;
    /// // A 4 MiB firmware image ending at 4 GiB.
    /// placer.take(GuestRange::new(GuestAddress(0xffc0_0000), 4 << 20)?, "OVMF")?;
    /// # Ok::<(), Error>(())
    /// ```
    pub fn with_kvm_pages_at(mut self, identity_map: u64) -> Result<Self> {
        if self.arch != Arch::X86_64 {
            return Err(Error::InvalidLayout {
                reason: format!("the {} preset has no KVM TSS", self.arch),
            });
        }
        let pages =
            x86_64::kvm_pages_at(identity_map).map_err(|reason| Error::InvalidLayout { reason })?;
        if let Some(other) = self
            .reservations
            .iter()
            .find(|r| r.name != x86_64::KVM_TSS_NAME && r.range.overlaps(&pages.range))
        {
            return Err(Error::InvalidLayout {
                reason: format!(
                    "KVM's pages {} overlap the {} reservation {}",
                    pages.range, other.name, other.range
                ),
            });
        }
        self.reservations.retain(|r| r.name != x86_64::KVM_TSS_NAME);
        self.reservations.push(pages);
        self.reservations.sort_by_key(|r| r.range);
        Ok(self)
    }

    /// The architecture.
    #[must_use]
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The preset layout's builder ([`Layout::x86_64`] or [`Layout::aarch64`]).
    #[must_use]
    pub fn layout(&self) -> LayoutBuilder {
        match self.arch {
            Arch::X86_64 => Layout::x86_64(),
            Arch::Aarch64 => Layout::aarch64(),
        }
    }

    /// The guest page size plans align to (4 KiB on both).
    #[must_use]
    pub fn guest_page_size(&self) -> u64 {
        GUEST_PAGE_SIZE
    }

    /// The interrupt numbers devices may get: GSIs on x86-64, GIC SPI INTIDs on AArch64.
    #[must_use]
    pub fn irq_range(&self) -> RangeInclusive<u32> {
        self.irqs.clone()
    }

    /// What the interrupt numbers are called: `GSI` on x86-64, `INTID` on AArch64, where the
    /// numbers are the GIC's interrupt IDs (an SPI's INTID is its SPI number plus 32).
    #[must_use]
    pub fn irq_name(&self) -> &'static str {
        match self.arch {
            Arch::X86_64 => "GSI",
            Arch::Aarch64 => "INTID",
        }
    }

    /// Legacy interrupts, never given to devices unless asked for by number (empty on
    /// AArch64).
    #[must_use]
    pub fn legacy_irqs(&self) -> &'static [u32] {
        self.legacy_irqs
    }

    /// The legacy interrupts of the timer, which not even the serial port gets (x86-64: GSI 0,
    /// the PIT's, and GSI 2, the IOAPIC pin KVM routes it to, also the PICs' cascade).
    pub(crate) fn timer_irqs(&self) -> &'static [u32] {
        self.timer_irqs
    }

    /// The I/O ports that KVM's in-kernel devices answer in the kernel, by device, first and
    /// last port (x86-64: the PICs, the PIT and its speaker port, the ELCR; none on AArch64,
    /// which has no I/O ports); a device placed over them would never see its accesses.
    ///
    /// ```
    /// use memvisor_space::Platform;
    ///
    /// let ports = Platform::x86_64().kernel_ports();
    /// assert!(ports.contains(&("PIT", 0x40, 0x43)));
    /// assert!(ports.iter().all(|&(_, first, last)| first <= last));
    /// assert!(Platform::aarch64().kernel_ports().is_empty());
    /// ```
    #[must_use]
    pub fn kernel_ports(&self) -> &'static [(&'static str, u64, u64)] {
        self.kernel_ports
    }

    /// The I/O port space, on architectures that have one.
    #[must_use]
    pub fn io_ports(&self) -> Option<GuestRange> {
        self.io_ports
    }

    /// The default serial port.
    #[must_use]
    pub fn serial(&self) -> SerialPreset {
        self.serial
    }

    /// The reserved ranges, by address.
    #[must_use]
    pub fn reservations(&self) -> &[Reservation] {
        &self.reservations
    }

    /// Where a VMM gives KVM its TSS (`KVM_SET_TSS_ADDR`, which takes 3 pages from it) on
    /// x86-64: 0xfffb_d000, as Firecracker does, inside the platform's `KVM TSS, identity map`
    /// reservation (in the preset layout's firmware window below 4 GiB, over no RAM and no
    /// device, held by [`placer`](Self::placer) so that no firmware image is placed over it:
    /// one that ends at 4 GiB has at most the 252 KiB from 0xfffc_1000), which a plan's
    /// [`memory_map`](crate::plan::Plan::memory_map) lists as reserved; the page after
    /// [`kvm_identity_map_addr`](Self::kvm_identity_map_addr) where
    /// [`with_kvm_pages_at`](Self::with_kvm_pages_at) moved them. `None` on AArch64.
    ///
    /// The preset keeps Firecracker's place because the identity-map page below it is where
    /// KVM puts that page when `KVM_SET_IDENTITY_MAP_ADDR` is never called, as Firecracker
    /// and this workspace's example VMMs never call it: any other place is right only for a
    /// VMM that makes the call on every VM, and wrong silently for one that does not (KVM's
    /// page would land in firmware room nothing reserves). 252 KiB holds qboot and a 128 KiB
    /// SeaBIOS, or no firmware at all (a kernel loaded directly, as Firecracker and Cloud
    /// Hypervisor boot); a VMM that maps a larger image at 4 GiB (OVMF, a 256 KiB SeaBIOS)
    /// moves the pages out of its way with [`with_kvm_pages_at`](Self::with_kvm_pages_at).
    ///
    /// A `u64`, as every guest address of the crate is, on every host. kvm-ioctls'
    /// `VmFd::set_tss_address` takes a `usize`: pass `usize::try_from(addr)?`, which never
    /// fails (the address is below 4 GiB, so it fits even a 32-bit `usize`); its
    /// `set_identity_map_address` takes the `u64` of
    /// [`kvm_identity_map_addr`](Self::kvm_identity_map_addr) as it is.
    ///
    /// ```
    /// use memvisor_space::Platform;
    ///
    /// assert_eq!(Platform::x86_64().kvm_tss_addr(), Some(0xfffb_d000));
    /// assert_eq!(Platform::aarch64().kvm_tss_addr(), None);
    /// // What `VmFd::set_tss_address` takes:
    /// let tss = Platform::x86_64().kvm_tss_addr().ok_or("x86-64 has KVM's TSS")?;
    /// let offset = usize::try_from(tss)?;
    /// # assert_eq!(offset, 0xfffb_d000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn kvm_tss_addr(&self) -> Option<u64> {
        // The TSS follows the identity-map page, at the preset's place and a moved one alike.
        self.kvm_pages()
            .map(|r| r.range.start().0 + (x86_64::KVM_TSS_ADDR - x86_64::KVM_IDENTITY_MAP_ADDR))
    }

    /// Where a VMM gives KVM its identity-map page (`KVM_SET_IDENTITY_MAP_ADDR`, one page;
    /// KVM's page table for guest code running without paging, on Intel hosts with EPT but
    /// without unrestricted guests) on x86-64:
    /// 0xfffb_c000, right below the TSS, which is also where KVM puts it when the call is not
    /// made; where [`with_kvm_pages_at`](Self::with_kvm_pages_at) moved the pages, the address
    /// given there, which the VMM must pass to `KVM_SET_IDENTITY_MAP_ADDR` before it creates
    /// its first vCPU (KVM refuses the call with `EINVAL` once a vCPU exists). Inside the same
    /// reservation as [`kvm_tss_addr`](Self::kvm_tss_addr); `None` on AArch64.
    #[must_use]
    pub fn kvm_identity_map_addr(&self) -> Option<u64> {
        self.kvm_pages().map(|r| r.range.start().0)
    }

    /// The reservation of KVM's TSS and identity-map pages (x86-64).
    pub(crate) fn kvm_pages(&self) -> Option<&Reservation> {
        match self.arch {
            Arch::X86_64 => self
                .reservations
                .iter()
                .find(|r| r.name == x86_64::KVM_TSS_NAME),
            Arch::Aarch64 => None,
        }
    }

    /// The PCI MMCONFIG range, if this platform reserves it
    /// ([`with_pci_mmconfig`](Self::with_pci_mmconfig)).
    pub(crate) fn pci_mmconfig(&self) -> Option<&Reservation> {
        match self.arch {
            Arch::X86_64 => {
                let mmconfig = x86_64::pci_mmconfig();
                self.reservations.iter().find(|r| **r == mmconfig)
            }
            Arch::Aarch64 => None,
        }
    }

    /// Holds in `placer` what KVM's in-kernel devices use (x86-64): the timer's interrupts
    /// ([`timer_irqs`](Self::timer_irqs), claimed as `legacy ISA`) and the I/O ports of
    /// [`kernel_ports`](Self::kernel_ports), each under its device's name; nothing on AArch64.
    /// [`placer`](Self::placer) (so a plan's placer) holds them, and so do [`Layout::placer`]
    /// and [`Snapshot::placer`](crate::Snapshot::placer) of an x86-64 preset layout, so that
    /// nothing placed through them lands on a port or interrupt the kernel answers.
    ///
    /// # Errors
    /// What [`Placer::irq_at`] and [`Placer::ports_at`] return: for a placer that already
    /// gave them out, [`Error::IrqTaken`] or [`Error::Taken`]; on a placer just made, only
    /// [`Error::Allocator`] (the heap refused the port allocator's bookkeeping).
    pub(crate) fn hold_kernel_devices(&self, placer: &mut Placer) -> Result<()> {
        for &pin in self.timer_irqs() {
            placer.irq_at(pin, "legacy ISA")?;
        }
        for &(device, first, last) in self.kernel_ports {
            let ports = GuestRange::inclusive(GuestAddress(first), GuestAddress(last))?;
            placer.ports_at(ports, device)?;
        }
        Ok(())
    }

    /// The reserved ranges of one kind, by address.
    pub fn reservations_of(&self, kind: ReservationKind) -> impl Iterator<Item = &Reservation> {
        self.reservations.iter().filter(move |r| r.kind == kind)
    }

    /// A [`Placer`] over `layout`'s windows with this platform's interrupts and I/O ports, and
    /// every [`ReservationKind::Reserved`] range taken under its name in the windows it
    /// crosses (a custom layout with no window under a reservation holds nothing of it; nothing
    /// can be placed there either). On x86-64 it also holds what KVM's in-kernel devices use,
    /// as a plan's placer, [`Layout::placer`] and [`Snapshot::placer`](crate::Snapshot::placer)
    /// do: the timer's GSIs 0 and 2 (owned by `legacy ISA`) and the ports of
    /// [`kernel_ports`](Self::kernel_ports), each under its device's name, so that nothing
    /// placed through it lands where the kernel answers. The PICs, the PIT and the ELCR sit at
    /// those ports on every PC, in the kernel or not: a VMM that emulates them itself gives
    /// their ports back with [`Placer::release_ports`] to place its own models there, and
    /// the timer's GSIs with [`Placer::release_irq`] (only [`Placer::irq_at`] gives them
    /// again).
    ///
    /// # Errors
    /// [`Error::InvalidLayout`] for a layout of another architecture's preset (its windows
    /// are not where this platform's reservations and devices go: x86-64's IOAPIC page would
    /// land in AArch64's RAM); [`Error::Taken`] if two reservations overlap (they do not in the
    /// presets); [`Error::Allocator`] if an allocator of the placer fails (the heap refused
    /// its bookkeeping).
    ///
    /// ```
    /// use memvisor_space::{Error, GuestRange, Platform};
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// let platform = Platform::x86_64();
    /// let layout = platform.layout().ram(1 << 30).build()?;
    /// let mut placer = platform.placer(&layout)?;
    /// let fw = GuestRange::new(GuestAddress(0xfffb_c000), 0x2000)?;
    /// let err = placer.take(fw, "firmware").unwrap_err();
    /// assert!(matches!(err, Error::Taken { ref other, .. } if other == "KVM TSS, identity map"));
    /// # Ok::<(), memvisor_space::Error>(())
    /// ```
    pub fn placer(&self, layout: &Layout) -> Result<Placer> {
        if let Some(arch) = layout.arch()
            && arch != self.arch
        {
            return Err(Error::InvalidLayout {
                reason: format!("an {} platform cannot place in an {arch} layout", self.arch),
            });
        }
        let mut placer = layout.placer_with(Some(self))?;
        for r in self.reservations_of(ReservationKind::Reserved) {
            // A custom layout may have no window there: nothing can be placed over the
            // reservation then, and there is nothing to hold.
            placer.take_parts(r.range, r.name)?;
        }
        self.hold_kernel_devices(&mut placer)?;
        Ok(placer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placer_refuses_a_layout_of_another_architecture() {
        // x86-64's IOAPIC page would otherwise be taken inside AArch64's RAM window.
        let arm = Layout::aarch64().ram(16 << 30).build().unwrap();
        let err = Platform::x86_64().placer(&arm).unwrap_err();
        assert!(matches!(err, Error::InvalidLayout { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "invalid layout: an x86_64 platform cannot place in an aarch64 layout"
        );
        let x86 = Layout::x86_64().build().unwrap();
        assert!(matches!(
            Platform::aarch64().placer(&x86),
            Err(Error::InvalidLayout { .. })
        ));
        Platform::x86_64().placer(&x86).unwrap();
        Platform::aarch64()
            .placer(&Layout::aarch64().build().unwrap())
            .unwrap();
    }

    #[test]
    fn reservations_sit_in_their_windows() {
        for arch in Arch::ALL {
            let p = Platform::new(arch);
            let layout = p.layout().ram(1 << 30).build().unwrap();
            for r in p.reservations() {
                let w = layout.window_containing(r.range().start()).unwrap();
                assert!(w.contains_range(r.range().start().0, r.range().size().unwrap()));
                if r.kind() == ReservationKind::InRam {
                    assert_eq!(w.kind(), crate::WindowKind::Ram, "{}", r.name());
                }
            }
            p.placer(&layout).unwrap();
        }
    }

    #[test]
    fn x86_reservation_covers_kvm_tss_and_identity_map_page() {
        // KVM's TSS takes 3 pages from the address given to KVM_SET_TSS_ADDR (0xfffbd000
        // here, as Firecracker and this crate's KVM examples use). Without
        // KVM_SET_IDENTITY_MAP_ADDR, KVM puts the identity-map page at 0xfffbc000; a VMM that
        // sets it right after the TSS puts it at 0xfffc0000. Both must stay unplaceable.
        let x86 = Platform::x86_64();
        let kvm = x86
            .reservations()
            .iter()
            .find(|r| r.name() == "KVM TSS, identity map")
            .unwrap();
        for page in [
            0xfffb_c000,
            0xfffb_d000,
            0xfffb_e000,
            0xfffb_f000,
            0xfffc_0000,
        ] {
            assert!(
                kvm.range().contains(GuestAddress(page))
                    && kvm.range().contains(GuestAddress(page + 0xfff)),
                "{page:#x} outside {:?}",
                kvm.range()
            );
        }
    }

    #[test]
    fn with_pci_mmconfig_reserves_on_x86_only() {
        let p = Platform::x86_64().with_pci_mmconfig().unwrap();
        let m = p
            .reservations_of(ReservationKind::Reserved)
            .find(|r| r.name() == "PCI MMCONFIG")
            .unwrap();
        assert_eq!(m.range().start(), GuestAddress(0xe000_0000));
        assert_eq!(m.range().size(), Some(256 << 20));
        assert!(Platform::aarch64().with_pci_mmconfig().is_err());
        let layout = p.layout().build().unwrap();
        let size = 600 << 20;
        let mut plain = Platform::x86_64().placer(&layout).unwrap();
        plain
            .place(crate::WindowKind::Device, size, 0x1000, "gpu")
            .unwrap();
        let mut placer = p.placer(&layout).unwrap();
        let big = placer
            .place(crate::WindowKind::Device, size, 0x1000, "gpu")
            .unwrap_err();
        assert!(matches!(big, Error::NoRoom { .. }), "{big}");
    }

    #[test]
    fn with_pci_mmconfig_twice_reserves_once() {
        let once = Platform::x86_64().with_pci_mmconfig().unwrap();
        let twice = once.clone().with_pci_mmconfig().unwrap();
        assert_eq!(twice.reservations(), once.reservations());
        let layout = twice.layout().ram(1 << 30).build().unwrap();
        let placer = twice.placer(&layout).unwrap();
        assert_eq!(
            placer.owner_of(GuestAddress(0xe000_0000)).map(|(o, _)| o),
            Some("PCI MMCONFIG")
        );
    }

    #[test]
    fn arch_names_round_trip() {
        for arch in Arch::ALL {
            assert_eq!(Arch::parse(arch.name()), Some(arch));
            assert_eq!(arch.to_string(), arch.name());
        }
    }
}
