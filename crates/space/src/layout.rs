//! [`Layout`]: the windows of the guest physical address space, with per-architecture presets,
//! and [`Placer`], which finds room in them with `memvisor-resources`.

use std::fmt;

use vm_memory::GuestAddress;

use crate::error::{Error, Result};
pub use crate::placer::Placer;
pub use crate::platform::Arch;
use crate::platform::Platform;
use crate::range::GuestRange;
use crate::spec::{GUEST_PAGE_SIZE, RegionSpec, RegionType};

const GIB: u64 = 1 << 30;

/// What a layout window may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WindowKind {
    /// Boot-time RAM.
    Ram,
    /// Device MMIO windows.
    Device,
    /// DAX windows.
    Dax,
    /// Hot-pluggable RAM.
    Hotplug,
    /// Firmware images.
    Firmware,
    /// Ranges kept free of everything but reserved regions.
    Reserved,
}

impl WindowKind {
    /// The window kind a region of type `ty` must sit in (`hotplug` for hot-pluggable RAM);
    /// `None` for reserved regions, which may sit anywhere below the address limit.
    #[must_use]
    pub fn for_region(ty: RegionType, hotplug: bool) -> Option<Self> {
        match ty {
            RegionType::Ram if hotplug => Some(WindowKind::Hotplug),
            RegionType::Ram => Some(WindowKind::Ram),
            RegionType::Device => Some(WindowKind::Device),
            RegionType::Dax => Some(WindowKind::Dax),
            RegionType::Firmware => Some(WindowKind::Firmware),
            RegionType::Reserved => None,
        }
    }
}

impl fmt::Display for WindowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WindowKind::Ram => "RAM",
            WindowKind::Device => "device",
            WindowKind::Dax => "DAX",
            WindowKind::Hotplug => "hotplug",
            WindowKind::Firmware => "firmware",
            WindowKind::Reserved => "reserved",
        })
    }
}

/// One window of a layout: a kind and a non-empty range of guest physical addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    kind: WindowKind,
    start: u64,
    size: u64,
}

impl Window {
    /// A window of `kind` at `start` of `size` bytes.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for `size == 0`, [`Error::Overflow`] if it passes `u64::MAX`.
    ///
    /// ```
    /// use memvisor_space::{Window, WindowKind};
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// let w = Window::new(WindowKind::Ram, GuestAddress(0), 1 << 30)?;
    /// assert_eq!(w.last_addr(), GuestAddress((1 << 30) - 1));
    /// assert!(Window::new(WindowKind::Ram, GuestAddress(u64::MAX), 2).is_err());
    /// # Ok::<(), memvisor_space::Error>(())
    /// ```
    pub fn new(kind: WindowKind, start: GuestAddress, size: u64) -> Result<Self> {
        if size == 0 {
            return Err(Error::ZeroSize { base: start.0 });
        }
        start.0.checked_add(size - 1).ok_or(Error::Overflow {
            base: start.0,
            size,
        })?;
        Ok(Self {
            kind,
            start: start.0,
            size,
        })
    }

    /// A window of `kind` over `range`: a [`GuestRange`] or memvisor-resources'
    /// `AddressRange`, without taking it apart into a start and a size.
    ///
    /// # Errors
    /// [`Error::WholeAddressSpace`] for the range of all 2^64 addresses, whose size no `u64`
    /// holds.
    ///
    /// ```
    /// use memvisor_space::memvisor_resources::AddressRange;
    /// use memvisor_space::{Window, WindowKind};
    ///
    /// let w = Window::for_range(WindowKind::Device, AddressRange::new(0xc000_0000, 0xcfff_ffff)?)?;
    /// assert_eq!(w.size(), 0x1000_0000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn for_range(kind: WindowKind, range: impl Into<GuestRange>) -> Result<Self> {
        let range = range.into();
        let size = range.size().ok_or(Error::WholeAddressSpace)?;
        Self::new(kind, range.start(), size)
    }

    /// The kind.
    #[must_use]
    pub fn kind(&self) -> WindowKind {
        self.kind
    }

    /// The first address.
    #[must_use]
    pub fn start(&self) -> GuestAddress {
        GuestAddress(self.start)
    }

    /// The size in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The last address (inclusive).
    #[must_use]
    pub fn last_addr(&self) -> GuestAddress {
        GuestAddress(self.last())
    }

    fn last(&self) -> u64 {
        // Checked in `new`.
        self.start + (self.size - 1)
    }

    /// Whether `base..base + size` lies inside the window (`size > 0`, no overflow).
    #[must_use]
    pub fn contains_range(&self, base: u64, size: u64) -> bool {
        size > 0
            && base >= self.start
            && base
                .checked_add(size - 1)
                .is_some_and(|last| last <= self.last())
    }

    /// The addresses.
    #[must_use]
    pub fn range(&self) -> GuestRange {
        GuestRange::inclusive(GuestAddress(self.start), GuestAddress(self.last()))
            .unwrap_or_else(|_| unreachable!("checked in `new`"))
    }
}

/// The windows of a guest physical address space and its highest address. Windows never
/// overlap and are kept sorted by address. Every region must sit inside one window of the kind
/// its type needs ([`WindowKind::for_region`]); reserved regions may sit anywhere below the
/// limit.
///
/// ```
/// use memvisor_space::vm_memory::GuestAddress;
/// use memvisor_space::{Layout, WindowKind};
///
/// // 6 GiB of RAM, 8 GiB hotplug window, 1 GiB DAX window.
/// let layout = Layout::x86_64().ram(6 << 30).hotplug(8 << 30).dax(1 << 30).build()?;
/// let ram: Vec<_> = layout.ram_ranges(6 << 30)?;
/// assert_eq!(ram, [(GuestAddress(0), 3 << 30), (GuestAddress(4 << 30), 3 << 30)]);
/// assert_eq!(layout.windows_of(WindowKind::Hotplug).count(), 1);
/// # Ok::<(), memvisor_space::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    arch: Option<Arch>,
    limit: u64,
    guest_page: u64,
    windows: Vec<Window>,
}

impl Layout {
    /// A custom layout: `limit` is the highest usable guest physical address (inclusive).
    ///
    /// # Errors
    /// [`Error::Overlap`] if two windows overlap, [`Error::AddressLimit`] if one reaches past
    /// `limit`.
    pub fn new(limit: GuestAddress, windows: impl IntoIterator<Item = Window>) -> Result<Self> {
        let mut windows: Vec<Window> = windows.into_iter().collect();
        windows.sort_by_key(|w| w.start);
        for w in &windows {
            if w.last() > limit.0 {
                return Err(Error::AddressLimit {
                    base: w.start,
                    size: w.size,
                    limit: limit.0,
                });
            }
        }
        for pair in windows.windows(2) {
            if pair[1].start <= pair[0].last() {
                return Err(Error::Overlap {
                    base: pair[1].start,
                    size: pair[1].size,
                    other_base: pair[0].start,
                    other_size: pair[0].size,
                });
            }
        }
        Ok(Self {
            arch: None,
            limit: limit.0,
            guest_page: GUEST_PAGE_SIZE,
            windows,
        })
    }

    /// The layout with regions aligned to `page` bytes (a power of two, at least
    /// [`GUEST_PAGE_SIZE`](crate::GUEST_PAGE_SIZE)) instead of the default 4 KiB: a guest
    /// page size, never the host's.
    ///
    /// # Errors
    /// [`Error::InvalidAlignment`] for a page that is not a power of two or below 4 KiB.
    ///
    /// ```
    /// use memvisor_space::{Error, Layout, RegionSpec};
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// let layout = Layout::aarch64().build()?.with_guest_page_size(0x1_0000)?;
    /// let r = RegionSpec::ram(GuestAddress(1 << 30), 0x1000);
    /// assert!(matches!(layout.check(&r), Err(Error::Misaligned { page_size: 0x1_0000, .. })));
    /// # Ok::<(), memvisor_space::Error>(())
    /// ```
    pub fn with_guest_page_size(mut self, page: u64) -> Result<Self> {
        if !page.is_power_of_two() || page < GUEST_PAGE_SIZE {
            return Err(Error::InvalidAlignment { align: page });
        }
        self.guest_page = page;
        Ok(self)
    }

    /// The guest page size every region's base and size must be a multiple of (4 KiB for
    /// both presets). It never depends on the host's page size, so a plan does not either.
    #[must_use]
    pub fn guest_page_size(&self) -> u64 {
        self.guest_page
    }

    /// The x86-64 preset: RAM `[0, 3 GiB)`, device MMIO `[3 GiB, 0xfec0_0000)` (the 32-bit
    /// hole), reserved `[0xfec0_0000, 0xffc0_0000)` (IOAPIC, local APIC), firmware
    /// `[0xffc0_0000, 4 GiB)`, then from 4 GiB: RAM above the hole, hotplug, DAX and the
    /// 64-bit device window, each starting on a 1 GiB boundary (the default
    /// [window alignment](LayoutBuilder::window_align)).
    #[must_use]
    pub fn x86_64() -> LayoutBuilder {
        LayoutBuilder::new(Arch::X86_64)
    }

    /// The AArch64 preset: firmware `[0, 64 MiB)`, reserved `[64 MiB, 144 MiB)` (interrupt
    /// controller), device MMIO `[144 MiB, 1 GiB)`, RAM from 1 GiB, then hotplug, DAX and the
    /// 64-bit device window, each starting on a 1 GiB boundary (the default
    /// [window alignment](LayoutBuilder::window_align)).
    #[must_use]
    pub fn aarch64() -> LayoutBuilder {
        LayoutBuilder::new(Arch::Aarch64)
    }

    /// The preset this layout came from, if any.
    #[must_use]
    pub fn arch(&self) -> Option<Arch> {
        self.arch
    }

    /// The highest usable guest physical address (inclusive).
    #[must_use]
    pub fn limit(&self) -> GuestAddress {
        GuestAddress(self.limit)
    }

    /// All windows, sorted by address.
    #[must_use]
    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    /// The windows of one kind, sorted by address.
    pub fn windows_of(&self, kind: WindowKind) -> impl Iterator<Item = &Window> + '_ {
        self.windows.iter().filter(move |w| w.kind == kind)
    }

    /// The window holding `addr`.
    #[must_use]
    pub fn window_containing(&self, addr: GuestAddress) -> Option<&Window> {
        let i = self.windows.partition_point(|w| w.start <= addr.0);
        let w = self.windows.get(i.checked_sub(1)?)?;
        (addr.0 <= w.last()).then_some(w)
    }

    /// Checks that a (valid) region sits where its type belongs, on guest page boundaries.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] or [`Error::Overflow`] for a spec that covers no valid range;
    /// [`Error::Misaligned`] if base or size is not a multiple of the
    /// [guest page size](Self::guest_page_size), [`Error::AddressLimit`] past the limit,
    /// [`Error::OutsideWindow`] if it is not inside a single window of the kind it needs.
    ///
    /// ```
    /// use memvisor_space::{Error, Layout, RegionSpec, RegionType};
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// let layout = Layout::x86_64().ram(1 << 30).build()?;
    /// layout.check(&RegionSpec::ram(GuestAddress(0), 1 << 30))?;
    /// let dev = RegionSpec::ram(GuestAddress(0xc000_0000), 4096);
    /// assert!(matches!(layout.check(&dev), Err(Error::OutsideWindow { .. })));
    /// # Ok::<(), memvisor_space::Error>(())
    /// ```
    pub fn check(&self, spec: &RegionSpec) -> Result<()> {
        let (base, size) = (spec.base, spec.size);
        let last = spec.range()?.last().0;
        if !base.is_multiple_of(self.guest_page) || !size.is_multiple_of(self.guest_page) {
            return Err(Error::Misaligned {
                base,
                size,
                page_size: self.guest_page,
            });
        }
        if last > self.limit {
            return Err(Error::AddressLimit {
                base,
                size,
                limit: self.limit,
            });
        }
        let Some(kind) = WindowKind::for_region(spec.ty, spec.hotplug) else {
            return Ok(());
        };
        match self.window_containing(GuestAddress(base)) {
            Some(w) if w.kind == kind && w.contains_range(base, size) => Ok(()),
            _ => Err(Error::OutsideWindow {
                ty: spec.ty,
                base,
                size,
                window: kind,
            }),
        }
    }

    /// Splits `size` bytes of boot RAM over the RAM windows, lowest first: the ranges to make
    /// RAM regions of.
    ///
    /// # Errors
    /// [`Error::NothingToPlace`] for 0; [`Error::NoSpace`] if the RAM windows are too small.
    pub fn ram_ranges(&self, size: u64) -> Result<Vec<(GuestAddress, u64)>> {
        if size == 0 {
            return Err(Error::NothingToPlace {
                owner: "boot RAM".into(),
            });
        }
        let mut left = size;
        let mut out = Vec::new();
        for w in self.windows_of(WindowKind::Ram) {
            if left == 0 {
                break;
            }
            let take = left.min(w.size);
            out.push((GuestAddress(w.start), take));
            left -= take;
        }
        if left > 0 {
            return Err(Error::NoSpace {
                window: WindowKind::Ram,
                size,
                align: 1,
            });
        }
        Ok(out)
    }

    /// A [`Placer`] over every window, all free, with the preset's interrupt numbers (none
    /// for a custom layout; its legacy ones given only by number) and I/O ports (none for a
    /// custom layout either). An x86-64 preset layout's placer holds what KVM's in-kernel
    /// devices use, as a [`plan`](crate::plan::plan)'s placer does: the timer's GSIs 0 and 2 (owned
    /// by `legacy ISA`) and the ports of the PICs, the PIT and the ELCR
    /// ([`Platform::kernel_ports`], each under its device's name). [`Platform::placer`] holds
    /// them too, and takes the platform's reserved ranges as well.
    ///
    /// Like the placer's owner names and the window list, the few dozen bytes of its interrupt
    /// and port allocators are allocated infallibly: if the heap refuses them, the global
    /// allocator's failure handler runs
    /// ([`handle_alloc_error`](std::alloc::handle_alloc_error), an abort by default).
    /// [`Platform::placer`] and [`Snapshot::placer`](crate::Snapshot::placer) return that
    /// refusal as [`Error::Allocator`] instead.
    #[must_use]
    pub fn placer(&self) -> Placer {
        let platform = self.arch.map(Platform::new);
        let placer = self.placer_with(platform.as_ref()).and_then(|mut placer| {
            if let Some(p) = &platform {
                p.hold_kernel_devices(&mut placer)?;
            }
            Ok(placer)
        });
        match placer {
            Ok(placer) => placer,
            // A preset's interrupt range is not empty: only the heap can refuse it.
            Err(Error::Allocator {
                source: memvisor_resources::Error::HeapRefused { bytes },
                ..
            }) => crate::error::abort_on_heap_refusal(bytes),
            Err(e) => unreachable!(
                "preset interrupt ranges are not empty, and a new placer holds no port: {e}"
            ),
        }
    }

    pub(crate) fn placer_with(&self, platform: Option<&Platform>) -> Result<Placer> {
        Placer::new(
            &self.windows,
            platform.map(|p| (p.irq_range(), p.irq_name(), p.legacy_irqs())),
            platform.and_then(Platform::io_ports),
        )
    }
}

/// Builds a preset [`Layout`]; made by [`Layout::x86_64`] and [`Layout::aarch64`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutBuilder {
    arch: Arch,
    ram: u64,
    hotplug: u64,
    dax: u64,
    device_high: u64,
    phys_bits: u32,
    low_ram_limit: Option<u64>,
    window_align: u64,
}

impl LayoutBuilder {
    /// The window alignment of the presets: [`window_align`](Self::window_align)'s default,
    /// and the most it may be (1 GiB).
    pub const DEFAULT_WINDOW_ALIGN: u64 = GIB;

    fn new(arch: Arch) -> Self {
        Self {
            arch,
            ram: GIB,
            hotplug: 0,
            dax: 0,
            device_high: 0,
            phys_bits: 40,
            low_ram_limit: None,
            window_align: Self::DEFAULT_WINDOW_ALIGN,
        }
    }

    /// Boot RAM in bytes (default 1 GiB); sizes the RAM window above the hole (x86-64) or the
    /// RAM window (AArch64), rounded up to the window alignment
    /// ([`window_align`](Self::window_align), 1 GiB by default).
    #[must_use]
    pub fn ram(mut self, bytes: u64) -> Self {
        self.ram = bytes;
        self
    }

    /// Size of the hotplug window (default 0: none), rounded up to the window alignment.
    #[must_use]
    pub fn hotplug(mut self, bytes: u64) -> Self {
        self.hotplug = bytes;
        self
    }

    /// Size of the DAX window (default 0: none), rounded up to the window alignment.
    #[must_use]
    pub fn dax(mut self, bytes: u64) -> Self {
        self.dax = bytes;
        self
    }

    /// Size of the 64-bit device window above RAM (default 0: none), rounded up to the window
    /// alignment.
    #[must_use]
    pub fn device_high(mut self, bytes: u64) -> Self {
        self.device_high = bytes;
        self
    }

    /// Guest physical address bits (default 40: 1 TiB); the limit is `2^bits - 1`. Any of 32
    /// to 64 is taken ([`build`](Self::build) refuses others): a layout describes an address
    /// space, which need not be a KVM guest's. A [`plan`](crate::plan::plan), which lays out a
    /// guest for KVM, takes at most [`MAX_PHYS_BITS`](crate::plan::MAX_PHYS_BITS) (52, the
    /// most an x86-64 or AArch64 host has); a VMM building a layout for such a guest gives it
    /// no more bits than its host has.
    #[must_use]
    pub fn phys_bits(mut self, bits: u32) -> Self {
        self.phys_bits = bits;
        self
    }

    /// x86-64: at most `bytes` of RAM below the 32-bit hole (default: up to 3 GiB); the
    /// rest goes from 4 GiB up. `0` puts all RAM above 4 GiB. For small VMs whose RAM should
    /// sit above 4 GiB (or mostly so), for example to test 64-bit DMA.
    ///
    /// ```
    /// use memvisor_space::Layout;
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// let layout = Layout::x86_64().ram(512 << 20).low_ram_limit(1 << 20).build()?;
    /// let ram = layout.ram_ranges(512 << 20)?;
    /// assert_eq!(ram, [(GuestAddress(0), 1 << 20), (GuestAddress(4 << 30), (512 << 20) - (1 << 20))]);
    /// # Ok::<(), memvisor_space::Error>(())
    /// ```
    #[must_use]
    pub fn low_ram_limit(mut self, bytes: u64) -> Self {
        self.low_ram_limit = Some(bytes);
        self
    }

    /// The alignment of the windows after the fixed ones: the RAM window above the 32-bit hole
    /// (x86-64) or from 1 GiB (AArch64) is boot RAM rounded up to it, and the hotplug, DAX and
    /// 64-bit device windows each start at the next multiple of it after the window before
    /// and have their sizes rounded up to it. A power of two from the 4 KiB guest page
    /// ([`GUEST_PAGE_SIZE`](crate::GUEST_PAGE_SIZE)) to 1 GiB; the default, 1 GiB
    /// ([`DEFAULT_WINDOW_ALIGN`](Self::DEFAULT_WINDOW_ALIGN)), gives the preset layouts. A smaller
    /// one puts the windows where a VMM that aligns less puts them: Cloud Hypervisor starts
    /// hot-pluggable memory at the 128 MiB boundary after boot RAM. Checked by
    /// [`build`](Self::build).
    ///
    /// ```
    /// use memvisor_space::{Layout, WindowKind};
    ///
    /// let ram = 4608 << 20; // 3 GiB below the hole, 1.5 GiB from 4 GiB
    /// let gib = Layout::x86_64().ram(ram).hotplug(1 << 30).build()?;
    /// let mib128 = Layout::x86_64().ram(ram).hotplug(1 << 30).window_align(128 << 20).build()?;
    /// let start = |l: &Layout| l.windows_of(WindowKind::Hotplug).next().unwrap().start().0;
    /// assert_eq!(start(&gib), 0x1_8000_0000);
    /// assert_eq!(start(&mib128), 0x1_6000_0000);
    /// # Ok::<(), memvisor_space::Error>(())
    /// ```
    #[must_use]
    pub fn window_align(mut self, bytes: u64) -> Self {
        self.window_align = bytes;
        self
    }

    /// Lays the windows out.
    ///
    /// # Errors
    /// [`Error::InvalidAlignment`] for a window alignment that is not a power of two;
    /// [`Error::InvalidLayout`] for one below the 4 KiB guest page or above 1 GiB, no RAM, address
    /// bits outside 32..=64, a low-RAM limit on AArch64 or not a multiple of the guest page, or
    /// a size that rounds up to the window alignment past `u64::MAX`;
    /// [`Error::AddressLimit`] or [`Error::Overflow`] if the windows do not fit.
    pub fn build(self) -> Result<Layout> {
        let align = self.window_align;
        if !align.is_power_of_two() {
            return Err(Error::InvalidAlignment { align });
        }
        if !(GUEST_PAGE_SIZE..=Self::DEFAULT_WINDOW_ALIGN).contains(&align) {
            return Err(Error::InvalidLayout {
                reason: format!(
                    "window alignment {align:#x} is outside the 4 KiB guest page to 1 GiB"
                ),
            });
        }
        if self.ram == 0 {
            return Err(Error::InvalidLayout {
                reason: "boot RAM size is zero".into(),
            });
        }
        if !(32..=64).contains(&self.phys_bits) {
            return Err(Error::InvalidLayout {
                reason: format!("{} physical address bits (need 32 to 64)", self.phys_bits),
            });
        }
        if let Some(low) = self.low_ram_limit {
            if self.arch != Arch::X86_64 {
                return Err(Error::InvalidLayout {
                    reason: format!("a low-RAM limit on {} (one RAM window)", self.arch),
                });
            }
            if !low.is_multiple_of(GUEST_PAGE_SIZE) {
                return Err(Error::InvalidLayout {
                    reason: format!("low-RAM limit {low:#x} is not a multiple of the guest page"),
                });
            }
        }
        let limit = if self.phys_bits == 64 {
            u64::MAX
        } else {
            (1u64 << self.phys_bits) - 1
        };
        let mut windows = Vec::new();
        // Adds a window; returns where the next one may start (`None` after one that ends at
        // `u64::MAX`: only a window after it is refused).
        let mut push = |kind, start: u64, size: u64| -> Result<Option<u64>> {
            let w = Window::new(kind, GuestAddress(start), size)?;
            windows.push(w);
            Ok(w.last().checked_add(1))
        };
        let mut next = match self.arch {
            Arch::X86_64 => {
                let hole = 3 * GIB;
                let low = self.low_ram_limit.map_or(hole, |l| l.min(hole));
                if low > 0 {
                    push(WindowKind::Ram, 0, low)?;
                }
                push(WindowKind::Device, hole, 0xfec0_0000 - hole)?;
                push(WindowKind::Reserved, 0xfec0_0000, 0xffc0_0000 - 0xfec0_0000)?;
                push(WindowKind::Firmware, 0xffc0_0000, 4 * GIB - 0xffc0_0000)?;
                match self.ram.checked_sub(low) {
                    Some(high) if high > 0 => push(
                        WindowKind::Ram,
                        4 * GIB,
                        aligned_size(WindowKind::Ram, high, align)?,
                    )?,
                    _ => Some(4 * GIB),
                }
            }
            Arch::Aarch64 => {
                push(WindowKind::Firmware, 0, 64 << 20)?;
                push(WindowKind::Reserved, 64 << 20, 80 << 20)?;
                push(WindowKind::Device, 144 << 20, GIB - (144 << 20))?;
                push(
                    WindowKind::Ram,
                    GIB,
                    aligned_size(WindowKind::Ram, self.ram, align)?,
                )?
            }
        };
        for (kind, size) in [
            (WindowKind::Hotplug, self.hotplug),
            (WindowKind::Dax, self.dax),
            (WindowKind::Device, self.device_high),
        ] {
            if size > 0 {
                let size = aligned_size(kind, size, align)?;
                let after = next.ok_or(Error::Overflow {
                    base: u64::MAX,
                    size,
                })?;
                let start = after
                    .checked_next_multiple_of(align)
                    .ok_or(Error::Overflow { base: after, size })?;
                next = push(kind, start, size)?;
            }
        }
        let mut layout = Layout::new(GuestAddress(limit), windows)?;
        layout.arch = Some(self.arch);
        Ok(layout)
    }
}

/// A `kind` window's size of `bytes` rounded up to a multiple of `align`; past `u64::MAX` it
/// is no size a window can have (the error names the size asked for, not an address).
fn aligned_size(kind: WindowKind, bytes: u64, align: u64) -> Result<u64> {
    bytes
        .checked_next_multiple_of(align)
        .ok_or_else(|| Error::InvalidLayout {
            reason: format!("a {kind} window of {bytes:#x} bytes is past the 64-bit address space"),
        })
}

// Safe code only: Miri would take minutes over these tests and check nothing the native run
// does not.
#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn last_window_may_end_at_the_top_of_the_address_space() {
        let top = u64::MAX - (2 << 30) + 1;
        let l = Layout::aarch64()
            .phys_bits(64)
            .ram(GIB)
            .device_high(top)
            .build()
            .unwrap();
        let last = *l.windows().last().unwrap();
        assert_eq!(last.range().last(), GuestAddress(u64::MAX));
        let l = Layout::x86_64()
            .phys_bits(64)
            .ram(u64::MAX - GIB + 1)
            .build()
            .unwrap();
        assert_eq!(
            l.windows().last().unwrap().range().last(),
            GuestAddress(u64::MAX)
        );
        // A window after one that ends at the top does not fit.
        let err = Layout::aarch64()
            .phys_bits(64)
            .ram(GIB)
            .dax(top)
            .device_high(GIB)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::Overflow { .. }), "{err}");
    }

    #[test]
    fn sizes_past_the_address_space_name_the_size_not_an_address() {
        for (builder, kind) in [
            (
                Layout::x86_64().low_ram_limit(0).ram(u64::MAX),
                WindowKind::Ram,
            ),
            (Layout::aarch64().ram(u64::MAX - 5), WindowKind::Ram),
            (
                Layout::x86_64().ram(GIB).hotplug(u64::MAX),
                WindowKind::Hotplug,
            ),
            (
                Layout::aarch64().ram(GIB).dax(u64::MAX - GIB + 2),
                WindowKind::Dax,
            ),
        ] {
            match builder.phys_bits(64).build() {
                Err(Error::InvalidLayout { reason }) => {
                    assert!(
                        reason.starts_with(&format!("a {kind} window of 0x")),
                        "{reason}"
                    );
                    assert!(
                        reason.ends_with("is past the 64-bit address space"),
                        "{reason}"
                    );
                }
                other => panic!("{kind}: {other:?}"),
            }
        }
    }

    #[test]
    fn x86_64_small_ram_has_no_high_window() {
        let l = Layout::x86_64().ram(GIB).build().unwrap();
        assert_eq!(l.windows_of(WindowKind::Ram).count(), 1);
        assert_eq!(l.arch(), Some(Arch::X86_64));
        assert_eq!(l.limit(), GuestAddress((1 << 40) - 1));
    }

    #[test]
    fn x86_64_windows_follow_the_hole() {
        let l = Layout::x86_64()
            .ram(5 * GIB)
            .hotplug(3 * GIB)
            .dax(GIB / 2)
            .device_high(GIB)
            .build()
            .unwrap();
        let kinds: Vec<_> = l
            .windows()
            .iter()
            .map(|w| (w.kind(), w.start().0))
            .collect();
        assert_eq!(
            kinds,
            [
                (WindowKind::Ram, 0),
                (WindowKind::Device, 3 * GIB),
                (WindowKind::Reserved, 0xfec0_0000),
                (WindowKind::Firmware, 0xffc0_0000),
                (WindowKind::Ram, 4 * GIB),
                (WindowKind::Hotplug, 6 * GIB),
                (WindowKind::Dax, 9 * GIB),
                (WindowKind::Device, 10 * GIB),
            ]
        );
    }

    #[test]
    fn x86_64_low_ram_limit_moves_ram_above_4g() {
        let l = Layout::x86_64().ram(GIB).low_ram_limit(0).build().unwrap();
        assert_eq!(l.ram_ranges(GIB).unwrap(), [(GuestAddress(4 * GIB), GIB)]);
        let l = Layout::x86_64()
            .ram(4 * GIB)
            .low_ram_limit(8 * GIB)
            .build()
            .unwrap();
        assert_eq!(
            l.ram_ranges(4 * GIB).unwrap(),
            [(GuestAddress(0), 3 * GIB), (GuestAddress(4 * GIB), GIB)]
        );
        for bad in [
            Layout::x86_64().low_ram_limit(0x800),
            Layout::aarch64().low_ram_limit(0),
        ] {
            assert!(matches!(bad.build(), Err(Error::InvalidLayout { .. })));
        }
    }

    #[test]
    fn check_empty_or_wrapping_spec_names_its_own_base() {
        let l = Layout::x86_64().build().unwrap();
        let zero = RegionSpec::new(RegionType::Reserved, GuestAddress(0xfee0_0000), 0);
        assert!(matches!(
            l.check(&zero),
            Err(Error::ZeroSize { base: 0xfee0_0000 })
        ));
        let wrap = RegionSpec::new(RegionType::Reserved, GuestAddress(u64::MAX - 0xfff), 0x2000);
        assert!(matches!(
            l.check(&wrap),
            Err(Error::Overflow { base, size: 0x2000 }) if base == u64::MAX - 0xfff
        ));
        assert!(matches!(
            l.ram_ranges(0),
            Err(Error::NothingToPlace { ref owner }) if owner == "boot RAM"
        ));
    }

    #[test]
    fn aarch64_ram_starts_at_1g() {
        let l = Layout::aarch64().ram(2 * GIB).build().unwrap();
        let ram = l.ram_ranges(2 * GIB).unwrap();
        assert_eq!(ram, [(GuestAddress(GIB), 2 * GIB)]);
        assert!(l.ram_ranges(3 * GIB).is_err());
    }

    #[test]
    fn build_windows_past_limit_error() {
        let err = Layout::x86_64()
            .ram(GIB)
            .hotplug(1 << 40)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::AddressLimit { .. }), "{err}");
        assert!(matches!(
            Layout::x86_64().phys_bits(20).build(),
            Err(Error::InvalidLayout { .. })
        ));
        assert!(matches!(
            Layout::aarch64().ram(0).build(),
            Err(Error::InvalidLayout { .. })
        ));
    }

    #[test]
    fn new_overlapping_windows_error() {
        let a = Window::new(WindowKind::Ram, GuestAddress(0), 0x2000).unwrap();
        let b = Window::new(WindowKind::Device, GuestAddress(0x1000), 0x2000).unwrap();
        let err = Layout::new(GuestAddress(u64::MAX), [b, a]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "range at 0x1000 of size 0x2000 overlaps the one at 0x0 of size 0x2000"
        );
    }

    #[test]
    fn check_each_type_in_its_window() {
        let l = Layout::x86_64()
            .ram(GIB)
            .hotplug(GIB)
            .dax(GIB)
            .build()
            .unwrap();
        let p = 0x1000;
        let ok = [
            RegionSpec::ram(GuestAddress(0), p),
            RegionSpec::new(RegionType::Device, GuestAddress(3 * GIB), p),
            RegionSpec::new(RegionType::Firmware, GuestAddress(0xffc0_0000), p),
            RegionSpec::ram(GuestAddress(4 * GIB), p).with_hotplug(true),
            RegionSpec::new(RegionType::Dax, GuestAddress(5 * GIB), p),
            RegionSpec::new(RegionType::Reserved, GuestAddress(0xfee0_0000), p),
        ];
        for spec in &ok {
            l.check(spec).unwrap();
        }
        let bad = [
            RegionSpec::ram(GuestAddress(3 * GIB), p),
            RegionSpec::ram(GuestAddress(4 * GIB), p),
            RegionSpec::new(RegionType::Dax, GuestAddress(0), p),
            RegionSpec::new(RegionType::Device, GuestAddress(3 * GIB - p), 2 * p),
        ];
        for spec in &bad {
            assert!(
                matches!(l.check(spec), Err(Error::OutsideWindow { .. })),
                "{spec:?}"
            );
        }
        let far = RegionSpec::new(RegionType::Reserved, GuestAddress(1 << 40), p);
        assert!(matches!(l.check(&far), Err(Error::AddressLimit { .. })));
    }

    #[test]
    fn plan_on_64k_host_aligns_to_guest_pages() {
        use crate::spec::with_host_page_size;
        use crate::{AddressSpace, Region};
        let l = Layout::x86_64().ram(GIB).build().unwrap();
        let mut p = l.placer();
        let mmio = p
            .place(WindowKind::Device, 0x1000, 0x1000, "dev")
            .unwrap()
            .start();
        let specs = [
            RegionSpec::ram(GuestAddress(0), 0x10_1000),
            RegionSpec::new(RegionType::Device, mmio, 0x1000),
        ];
        with_host_page_size(0x1_0000, || {
            AddressSpace::plan(l.clone(), specs.clone()).unwrap();
            // Backing is where the host page counts: refused before anything is mapped.
            let err = Region::back(specs[0].clone()).unwrap_err();
            assert!(matches!(
                err,
                Error::Misaligned {
                    page_size: 0x1_0000,
                    ..
                }
            ));
            // An unbacked region has no host pages to be aligned to.
            Region::back(specs[1].clone()).unwrap();
        });
        // Misaligned to the guest page: refused by the plan whatever the host.
        let odd = RegionSpec::new(RegionType::Device, GuestAddress(0xc000_0800), 0x1000);
        assert!(matches!(
            l.check(&odd),
            Err(Error::Misaligned {
                page_size: 0x1000,
                ..
            })
        ));
    }

    /// The preset layouts as they are with whole-GiB windows, written out independently of
    /// `build`: `(kind, start, size)` of each window, or `None` where they do not fit.
    fn whole_gib_windows(
        arch: Arch,
        ram: u64,
        low: Option<u64>,
        later: [u64; 3],
    ) -> Option<Vec<(WindowKind, u64, u64)>> {
        let round = |b: u64| b.checked_next_multiple_of(GIB);
        let mut out = Vec::new();
        let mut next = match arch {
            Arch::X86_64 => {
                let below = low.map_or(3 * GIB, |l| l.min(3 * GIB));
                if below > 0 {
                    out.push((WindowKind::Ram, 0, below));
                }
                out.push((WindowKind::Device, 3 * GIB, 0xfec0_0000 - 3 * GIB));
                out.push((WindowKind::Reserved, 0xfec0_0000, 0x80_0000 * 2));
                out.push((WindowKind::Firmware, 0xffc0_0000, 0x40_0000));
                if ram > below {
                    let size = round(ram - below)?;
                    out.push((WindowKind::Ram, 4 * GIB, size));
                    (4 * GIB).checked_add(size)?
                } else {
                    4 * GIB
                }
            }
            Arch::Aarch64 => {
                out.push((WindowKind::Firmware, 0, 64 << 20));
                out.push((WindowKind::Reserved, 64 << 20, 80 << 20));
                out.push((WindowKind::Device, 144 << 20, GIB - (144 << 20)));
                let size = round(ram)?;
                out.push((WindowKind::Ram, GIB, size));
                GIB.checked_add(size)?
            }
        };
        for (kind, size) in [WindowKind::Hotplug, WindowKind::Dax, WindowKind::Device]
            .into_iter()
            .zip(later)
        {
            if size > 0 {
                let size = round(size)?;
                let start = round(next)?;
                out.push((kind, start, size));
                next = start.checked_add(size)?;
            }
        }
        Some(out)
    }

    #[test]
    fn default_window_alignment_lays_out_whole_gib_windows_as_before() {
        let sizes = [
            1,
            0x1000,
            GIB - 1,
            GIB,
            GIB + 0x1000,
            3 * GIB,
            3 * GIB + 1,
            4608 << 20,
            5 * GIB,
            (1 << 39) + 7,
        ];
        let mut laid = 0;
        for arch in [Arch::X86_64, Arch::Aarch64] {
            for &ram in &sizes {
                for later in [
                    [0, 0, 0],
                    [GIB, 0, 0],
                    [1, 3 << 29, GIB + 1],
                    [0, 0x1000, 0],
                ] {
                    let lows: &[Option<u64>] = match arch {
                        Arch::X86_64 => &[None, Some(0), Some(GIB + 0x1000)],
                        Arch::Aarch64 => &[None],
                    };
                    for &low in lows {
                        let mut b = LayoutBuilder::new(arch)
                            .ram(ram)
                            .hotplug(later[0])
                            .dax(later[1])
                            .device_high(later[2]);
                        if let Some(low) = low {
                            b = b.low_ram_limit(low);
                        }
                        let default = b.build().ok();
                        let explicit = b.window_align(GIB).build().ok();
                        assert_eq!(default, explicit, "{arch} {ram:#x} {later:?} {low:?}");
                        let expected = whole_gib_windows(arch, ram, low, later)
                            .filter(|w| w.iter().all(|&(_, s, n)| s + (n - 1) < 1 << 40));
                        let got = default.map(|l| {
                            l.windows()
                                .iter()
                                .map(|w| (w.kind(), w.start().0, w.size()))
                                .collect::<Vec<_>>()
                        });
                        assert_eq!(got, expected, "{arch} {ram:#x} {later:?} {low:?}");
                        laid += usize::from(got.is_some());
                    }
                }
            }
        }
        assert!(laid > 50, "{laid}");
    }

    #[test]
    fn window_alignment_moves_ram_rounding_and_later_windows() {
        const MIB: u64 = 1 << 20;
        // x86-64, 4.5 GiB of RAM: 1.5 GiB of it from 4 GiB, to 0x1_6000_0000.
        let l = Layout::x86_64()
            .ram(4608 * MIB)
            .hotplug(GIB)
            .dax(64 * MIB)
            .device_high(130 * MIB)
            .window_align(128 * MIB)
            .build()
            .unwrap();
        let high: Vec<_> = l
            .windows()
            .iter()
            .filter(|w| w.start().0 >= 4 * GIB)
            .map(|w| (w.kind(), w.start().0, w.size()))
            .collect();
        assert_eq!(
            high,
            [
                (WindowKind::Ram, 0x1_0000_0000, 1536 * MIB),
                (WindowKind::Hotplug, 0x1_6000_0000, GIB),
                (WindowKind::Dax, 0x1_a000_0000, 128 * MIB),
                (WindowKind::Device, 0x1_a800_0000, 256 * MIB),
            ]
        );
        // RAM that is not a multiple of the alignment: the RAM window is rounded up to it.
        let l = Layout::x86_64()
            .ram(3 * GIB + 100 * MIB)
            .hotplug(GIB)
            .window_align(128 * MIB)
            .build()
            .unwrap();
        let hot = l.windows_of(WindowKind::Hotplug).next().unwrap();
        assert_eq!(hot.start().0, 4 * GIB + 128 * MIB);
        assert_eq!(l.ram_ranges(3 * GIB + 100 * MIB).unwrap().len(), 2);
        // RAM below the hole: the later windows still start at 4 GiB.
        let l = Layout::x86_64()
            .ram(GIB)
            .hotplug(128 * MIB)
            .window_align(0x1000)
            .build()
            .unwrap();
        let hot = l.windows_of(WindowKind::Hotplug).next().unwrap();
        assert_eq!((hot.start().0, hot.size()), (4 * GIB, 128 * MIB));
        // AArch64: RAM from 1 GiB, rounded to the alignment.
        let l = Layout::aarch64()
            .ram(GIB + 0x1000)
            .hotplug(0x3000)
            .window_align(0x2000)
            .build()
            .unwrap();
        let ram = l.windows_of(WindowKind::Ram).next().unwrap();
        assert_eq!((ram.start().0, ram.size()), (GIB, GIB + 0x2000));
        let hot = l.windows_of(WindowKind::Hotplug).next().unwrap();
        assert_eq!((hot.start().0, hot.size()), (2 * GIB + 0x2000, 0x4000));
        // The alignment is no window's size: nothing is added where nothing is asked for.
        let l = Layout::x86_64()
            .ram(GIB)
            .window_align(128 * MIB)
            .build()
            .unwrap();
        assert_eq!(l, Layout::x86_64().ram(GIB).build().unwrap());
    }

    #[test]
    fn bad_window_alignments_are_refused() {
        for align in [3, 0x1800, (1 << 30) + 1, u64::MAX] {
            for b in [Layout::x86_64(), Layout::aarch64()] {
                let e = b.window_align(align).build().unwrap_err();
                assert!(
                    matches!(e, Error::InvalidAlignment { align: a } if a == align),
                    "{align:#x}: {e}"
                );
            }
        }
        for align in [0, 1, 0x800, 2 << 30, 1 << 63] {
            match Layout::x86_64().ram(GIB).window_align(align).build() {
                Err(Error::InvalidLayout { reason }) => {
                    assert!(reason.contains("window alignment"), "{reason}");
                    assert!(reason.contains("4 KiB guest page to 1 GiB"), "{reason}");
                }
                Err(Error::InvalidAlignment { align: 0 }) if align == 0 => {}
                other => panic!("{align:#x}: {other:?}"),
            }
        }
        // The bounds themselves are taken.
        for align in [0x1000, 128 << 20, GIB] {
            Layout::x86_64().window_align(align).build().unwrap();
        }
    }

    #[test]
    fn small_window_alignment_fits_to_the_top_or_is_refused() {
        // Windows end exactly at the top of a 64-bit space with a 4 KiB alignment.
        let l = Layout::aarch64()
            .phys_bits(64)
            .ram(GIB)
            .device_high(u64::MAX - 2 * GIB + 1)
            .window_align(0x1000)
            .build()
            .unwrap();
        assert_eq!(
            l.windows().last().unwrap().range().last(),
            GuestAddress(u64::MAX)
        );
        // One page more is past the address space, one window more has nowhere to start.
        let e = Layout::aarch64()
            .phys_bits(64)
            .ram(GIB)
            .device_high(u64::MAX - 2 * GIB + 0x1001)
            .window_align(0x1000)
            .build()
            .unwrap_err();
        assert!(matches!(e, Error::Overflow { .. }), "{e}");
        let e = Layout::aarch64()
            .phys_bits(64)
            .ram(GIB)
            .dax(u64::MAX - 2 * GIB + 1)
            .device_high(1)
            .window_align(0x1000)
            .build()
            .unwrap_err();
        assert!(matches!(e, Error::Overflow { .. }), "{e}");
        let e = Layout::x86_64()
            .phys_bits(64)
            .ram(GIB)
            .hotplug(u64::MAX - 0xfff)
            .window_align(0x2000)
            .build()
            .unwrap_err();
        assert!(matches!(e, Error::InvalidLayout { .. }), "{e}");
    }
}
