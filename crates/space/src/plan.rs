//! [`plan`]: lays a VM out — boot RAM per guest NUMA node, the platform's reserved ranges,
//! the serial port, device MMIO windows, interrupts and DAX windows, hotplug slots — with a
//! [`Platform`] preset and its [`Placer`], and checks the result as an
//! [`AddressSpace`] would. A plan depends on no host value.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use vm_memory::GuestAddress;

use crate::error::{Error, Result};
use crate::firmware::{
    MemoryMapEntry, MemoryType, NumaRange, e820_of, push_merged, push_numa, push_ram, pvh_of,
};
use crate::layout::{Arch, Layout, WindowKind};
use crate::placer::Placer;
use crate::platform::{Platform, ReservationKind, SerialPreset};
use crate::range::GuestRange;
use crate::space::{AddressSpace, DEFAULT_SLOTS, SpaceBuilder};
use crate::spec::{Backing, HugePages, RegionSpec, RegionType};

/// Alignment of DAX windows.
pub const DAX_ALIGN: u64 = 2 << 20;
/// The most guest physical address bits a plan takes: the most an x86-64 (5-level paging's
/// 52-bit physical addresses) or AArch64 (`FEAT_LPA`) host has, so the most a guest of KVM
/// can be given.
pub const MAX_PHYS_BITS: u32 = 52;
/// The most memory-slot numbers a plan takes ([`plan_with_memory_slots`]): KVM's slot
/// numbers of one address space are 16 bits (the bits above choose the address space, SMM on
/// x86), so no KVM gives a VM more, and this bounds the slots a request can make a plan place.
/// memvisor-kvm's `slot_limit` caps KVM's answer to `KVM_CAP_NR_MEMSLOTS` with it too.
pub const MAX_MEMORY_SLOTS: u32 = 1 << 16;
/// The largest alignment a hotplug slot gets without explicit huge pages.
const SLOT_ALIGN: u64 = 2 << 20;

/// What to lay out. Items are placed in a fixed order, so the same request always gives the
/// same plan: fixed interrupts, then the serial port's and the devices' automatic ones; fixed
/// MMIO addresses, then first fit in request order; then DAX windows; then hotplug slots.
#[derive(Clone, Debug)]
pub struct PlanRequest {
    /// The platform (and so the layout preset).
    pub platform: Platform,
    /// Guest physical address bits: 32 to [`MAX_PHYS_BITS`] (52, the most an x86-64 or
    /// AArch64 host has), others are refused ([`Error::InvalidLayout`] at
    /// [`PlanItem::PhysBits`]), and so is a layout that does not fit them
    /// ([`Error::AddressLimit`], naming the part that did not fit). A
    /// [`LayoutBuilder`](crate::LayoutBuilder) of its own takes up to 64.
    pub phys_bits: u32,
    /// Guest NUMA nodes, in order: boot RAM is laid over the RAM windows node after node. At
    /// least one: none is refused ([`Error::InvalidLayout`] at [`PlanItem::Memory`]), and so
    /// are sizes that add up to 2^64 bytes or more. Each boot RAM region takes one of the
    /// VM's memory-slot numbers ([`plan_with_memory_slots`]): more nodes than there are is
    /// [`Error::InvalidLayout`], boot RAM in more regions [`Error::NoSlotNumber`], both at
    /// [`PlanItem::Memory`].
    pub nodes: Vec<NodeRequest>,
    /// The serial port, if any.
    pub serial: Option<SerialRequest>,
    /// virtio-mmio devices, in order; each needs a free interrupt ([`Error::NoFreeIrq`]).
    pub devices: Vec<DeviceRequest>,
    /// Hotplug slots, if any.
    pub hotplug: Option<HotplugRequest>,
    /// x86-64: at most this much boot RAM below the 32-bit hole
    /// ([`LayoutBuilder::low_ram_limit`](crate::LayoutBuilder::low_ram_limit)). The plan
    /// takes any multiple of the guest page, 0 included (then its memory map lists no RAM below
    /// 4 GiB at all); another limit, and any limit on AArch64, is refused
    /// ([`Error::InvalidLayout`] at [`PlanItem::Memory`]). But a Linux guest needs usable RAM
    /// below 1 MiB (its real-mode trampoline, which starts the other CPUs, is allocated there)
    /// and its boot parameters in RAM below 4 GiB: a VMM that boots Linux keeps the limit at
    /// least at the start of the [`LEGACY_HOLE`](crate::LEGACY_HOLE).
    pub low_ram_limit: Option<u64>,
    /// The alignment of the RAM window above the fixed ones and of the hotplug and DAX
    /// windows ([`LayoutBuilder::window_align`](crate::LayoutBuilder::window_align)); `None`
    /// is the presets' 1 GiB. A plan takes a power of two from [`DAX_ALIGN`], 2 MiB (DAX
    /// windows and hotplug slots without explicit huge pages are placed up to 2 MiB aligned,
    /// so that windows of their sizes hold them), to 1 GiB; others are refused
    /// ([`Error::InvalidLayout`] at [`PlanItem::Memory`]). Slots of explicit huge pages larger
    /// than the alignment (1 GiB pages in a window aligned to 2 MiB) start at the first
    /// multiple of their page in the hotplug window, which holds that lead as well.
    pub window_align: Option<u64>,
}

/// A guest NUMA node's boot RAM.
#[derive(Clone, Debug)]
pub struct NodeRequest {
    /// Bytes of boot RAM: not zero (a node without boot RAM is refused:
    /// [`Error::NothingToPlace`] at [`PlanItem::Node`]), and a multiple of the page size of
    /// `memory` (the guest page, or its explicit huge page size: [`Error::Misaligned`]).
    pub size: u64,
    /// How its RAM regions are made: a RAM spec whose base and size are replaced by the
    /// planned ones. A [`Backing::File`]'s offset is where the node's RAM starts in the file:
    /// each region of the node maps the part of the file after the regions before it (no two
    /// map the same bytes; an offset that would pass `u64::MAX` is [`Error::Overflow`] at
    /// [`PlanItem::Node`]). Two nodes given one file are the caller's to lay apart. Another region
    /// type, or a hot-pluggable spec, is refused ([`Error::InvalidSpec`] at
    /// [`PlanItem::Node`]); so is a spec without memory (as [`RegionSpec::validate`] refuses
    /// RAM without memory).
    pub memory: RegionSpec,
}

/// The serial port.
#[derive(Clone, Copy, Debug, Default)]
pub struct SerialRequest {
    /// A fixed interrupt (default: the platform's, if it has one, else the next free one).
    /// One outside the platform's range or already taken is refused
    /// ([`Error::IrqOutOfRange`], [`Error::IrqTaken`] at [`PlanItem::SerialIrq`]); so is, on
    /// x86-64, one of the timer's (GSI 0, the PIT's, and GSI 2, where KVM routes it, also the
    /// PICs' cascade: [`Error::IrqTaken`] by `legacy ISA`). The other legacy ISA interrupts
    /// (1, 3, 4) may be asked for.
    pub irq: Option<u32>,
    /// A fixed I/O port base, on platforms with port I/O (x86-64; default: the platform's).
    /// Refused on a platform whose serial port is MMIO (AArch64: [`Error::NoIoPorts`]), and
    /// when the ports pass the platform's port space ([`Error::PortsOutOfRange`] naming them
    /// and the space; [`Error::Overflow`] naming the base and the number of ports when they
    /// would pass the 64-bit range too, which no range can name) or overlap others
    /// ([`Error::Taken`]), at [`PlanItem::SerialPort`]. The ports KVM's in-kernel devices
    /// answer on x86-64 are others' (`PIC` 0x20–0x21 and 0xa0–0xa1, `PIT` 0x40–0x43 and 0x61,
    /// `ELCR` 0x4d0–0x4d1): the plan's [`Placer`] holds them, for the serial port and for
    /// what is placed later.
    pub port: Option<u64>,
    /// A fixed MMIO address, on platforms with an MMIO serial port (AArch64; default: first
    /// fit). Refused on a platform whose serial port is on I/O ports (x86-64:
    /// [`Error::NoMmioSerial`]), and when the window is not page-aligned or not inside a
    /// device window, at [`PlanItem::SerialAddress`]. The serial port is placed before every
    /// device, so a device's fixed window over it is the one refused, at the device's address
    /// ([`Error::Taken`] naming `serial`).
    pub address: Option<u64>,
}

/// A virtio-mmio device.
#[derive(Clone, Debug)]
pub struct DeviceRequest {
    /// Its name: the owner of its window, interrupt and DAX window. Refused
    /// ([`Error::InvalidName`] at [`PlanItem::DeviceName`]) when empty, when another device
    /// has it, or when the plan gives it to another part of the map on some platform
    /// (`serial`, `reserved`, `legacy ISA`, `boot RAM`, a platform reservation such as `GIC`
    /// or several joined by `, `, `RAM node…`, `hotplug slot…`, ending in ` DAX`, or a device
    /// of KVM's whose I/O ports the plan's placer holds: `PIC`, `PIT`, `ELCR`;
    /// [`names_other_map_part`]).
    pub name: String,
    /// Its MMIO window size: not zero ([`Error::NothingToPlace`]), a power of two (it is also
    /// the alignment; [`Error::InvalidAlignment`]) and at least a guest page
    /// ([`Error::Misaligned`], with or without a fixed address), at
    /// [`PlanItem::DeviceMmioSize`].
    pub mmio_size: u64,
    /// A fixed MMIO address: a multiple of `mmio_size` ([`Error::NotMultiple`]), with the
    /// window inside a device window ([`Error::NotInWindow`]) and over no other
    /// ([`Error::Taken`]), at [`PlanItem::DeviceAddress`].
    pub address: Option<u64>,
    /// A fixed interrupt: inside the platform's range and free ([`Error::IrqOutOfRange`],
    /// [`Error::IrqTaken`] at [`PlanItem::DeviceIrq`]).
    pub irq: Option<u32>,
    /// A DAX window of this size: not zero ([`Error::NothingToPlace`]) and a multiple of
    /// [`DAX_ALIGN`] ([`Error::NotMultiple`]), at [`PlanItem::DeviceDaxSize`]. The window has
    /// memory and takes one of the VM's memory-slot numbers after boot RAM's
    /// ([`plan_with_memory_slots`]): none left is [`Error::NoSlotNumber`] there.
    pub dax_size: Option<u64>,
}

/// Hotplug slots.
#[derive(Clone, Debug)]
pub struct HotplugRequest {
    /// How many: at least 1 (0 is refused, [`Error::InvalidLayout`] at [`PlanItem::Hotplug`]:
    /// for no slots, ask for no hotplug), and at most the VM's memory-slot numbers
    /// ([`plan_with_memory_slots`]; [`DEFAULT_SLOTS`] for [`plan`]) less one for each boot RAM
    /// region and DAX window, so that every slot can be plugged and a request cannot make the
    /// planner loop or allocate without bound; more is [`Error::InvalidLayout`] at
    /// [`PlanItem::Hotplug`], naming both numbers.
    pub slots: u32,
    /// Bytes each: not zero ([`Error::NothingToPlace`]) and a multiple of the page size of
    /// `memory` ([`Error::Misaligned`]), at [`PlanItem::HotplugSlotSize`]. Each slot is aligned
    /// to the largest power of two dividing this size, up to the explicit huge page size of
    /// `memory` or, without one, 2 MiB; the slots lie one after the other from the first such
    /// multiple in the hotplug window.
    pub slot_size: u64,
    /// The guest NUMA node of their memory: one of the request's nodes (an index into
    /// [`PlanRequest::nodes`]); others are refused ([`Error::NoGuestNode`] at
    /// [`PlanItem::HotplugNode`]).
    pub node: u32,
    /// How their memory is made once plugged: a RAM spec with memory whose base and size are
    /// replaced. A [`Backing::File`]'s offset is slot 0's, and slot `i` maps the file from
    /// `offset + i * slot_size` (an offset that would pass `u64::MAX` is [`Error::Overflow`] at
    /// [`PlanItem::Hotplug`]). Another region type, a spec without memory or with options that
    /// contradict each other is refused ([`Error::InvalidSpec`] at [`PlanItem::Hotplug`], or
    /// at the node when boot RAM's spec is refused for the same reason).
    pub memory: RegionSpec,
}

/// The request item an error is about, for a caller to point at its own input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlanItem {
    /// The address bits.
    PhysBits,
    /// Boot RAM as a whole (its window did not fit, or its regions need more memory-slot
    /// numbers than the VM has ([`plan_with_memory_slots`]), or those are out of range).
    Memory,
    /// A node's boot RAM.
    Node(usize),
    /// The hotplug slots as a whole (their number, also beside boot RAM within the VM's
    /// memory-slot numbers ([`plan_with_memory_slots`]), their window did not fit, or their
    /// memory spec is not valid).
    Hotplug,
    /// The hotplug slot size (a slot did not fit, or a slot of that size does not lie on its
    /// page size).
    HotplugSlotSize,
    /// The guest NUMA node of the hotplug slots (it is not one of the request's nodes).
    HotplugNode,
    /// The serial port.
    Serial,
    /// The serial port's interrupt.
    SerialIrq,
    /// The serial port's I/O ports.
    SerialPort,
    /// The serial port's MMIO address.
    SerialAddress,
    /// A device as a whole.
    Device(usize),
    /// A device's name.
    DeviceName(usize),
    /// A device's interrupt.
    DeviceIrq(usize),
    /// A device's fixed address.
    DeviceAddress(usize),
    /// A device's MMIO window size.
    DeviceMmioSize(usize),
    /// A device's DAX window size (a window did not fit, or the DAX window did not fit the
    /// layout: then the last device with one).
    DeviceDaxSize(usize),
    /// A range the platform reserves.
    Platform,
}

impl fmt::Display for PlanItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanItem::PhysBits => f.write_str("phys_bits"),
            PlanItem::Memory => f.write_str("memory"),
            PlanItem::Node(i) => write!(f, "node {i}"),
            PlanItem::Hotplug => f.write_str("hotplug"),
            PlanItem::HotplugSlotSize => f.write_str("hotplug slot size"),
            PlanItem::HotplugNode => f.write_str("hotplug node"),
            PlanItem::Serial => f.write_str("serial"),
            PlanItem::SerialIrq => f.write_str("serial irq"),
            PlanItem::SerialPort => f.write_str("serial port"),
            PlanItem::SerialAddress => f.write_str("serial address"),
            PlanItem::Device(i) => write!(f, "device {i}"),
            PlanItem::DeviceName(i) => write!(f, "device {i} name"),
            PlanItem::DeviceIrq(i) => write!(f, "device {i} irq"),
            PlanItem::DeviceAddress(i) => write!(f, "device {i} address"),
            PlanItem::DeviceMmioSize(i) => write!(f, "device {i} mmio size"),
            PlanItem::DeviceDaxSize(i) => write!(f, "device {i} DAX size"),
            PlanItem::Platform => f.write_str("platform"),
        }
    }
}

/// A plan that failed: which request item, and why.
#[derive(Debug, thiserror::Error)]
#[error("{item}: {error}")]
pub struct PlanError {
    /// The item the error is about.
    pub item: PlanItem,
    /// What went wrong.
    #[source]
    pub error: Error,
    /// The layout, if the error came after it was built (to describe its windows).
    pub layout: Option<Box<Layout>>,
}

/// A planned region and who it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRegion {
    /// What [`AddressSpace`] gets.
    pub spec: RegionSpec,
    /// Its owner (`RAM node0`, `eth0`, `eth0 DAX`, `IOAPIC, local APIC`, `hotplug slot 0`).
    pub owner: String,
    /// The guest NUMA node, for RAM and hotplug slots.
    pub node: Option<u32>,
}

/// A planned device (or the serial port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedDevice {
    /// Its name (`serial` for the serial port).
    pub name: String,
    /// Its MMIO window.
    pub mmio: Option<GuestRange>,
    /// Its I/O ports.
    pub ports: Option<GuestRange>,
    /// Its interrupt.
    pub irq: u32,
    /// Its DAX window.
    pub dax: Option<GuestRange>,
}

/// A laid-out VM.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The layout.
    pub layout: Layout,
    /// The platform.
    pub platform: Platform,
    /// Boot regions (RAM, reserved, devices, DAX), by address.
    pub regions: Vec<PlannedRegion>,
    /// The serial port first (if asked for), then the devices in request order.
    pub devices: Vec<PlannedDevice>,
    /// Hotplug slots, by address.
    pub slots: Vec<PlannedRegion>,
    /// The memory-slot numbers the plan was checked against ([`DEFAULT_SLOTS`] from [`plan`],
    /// the VM's from [`plan_with_memory_slots`]): boot RAM's regions and all the hotplug slots
    /// fit in them.
    pub memory_slots: u32,
    /// The placer with everything above taken, for more placements later: boot RAM's regions
    /// (each under its owner, `RAM node0`, ...), the devices' MMIO and DAX windows, the
    /// hotplug slots, the serial port's ports, the interrupts and the platform's reservations,
    /// so that nothing placed through it lands on any of them; a VMM whose device manager
    /// allocates through memvisor-resources takes its allocators, each holding what the plan
    /// placed, with [`Placer::into_allocators`]. (The rest of a reserved window, which the
    /// plan lists as one reserved region, is free in the placer but for the reservations, and
    /// held as reserved in the allocators it hands over.)
    pub placer: Placer,
}

impl Plan {
    /// A builder of the plan's address space: its layout, its boot regions and its
    /// [`memory_slots`](Self::memory_slots), so that every hotplug slot can be plugged into
    /// the space it builds ([`SpaceBuilder::plan`](crate::SpaceBuilder::plan) or
    /// [`back`](crate::SpaceBuilder::back)).
    ///
    /// ```
    /// use memvisor_space::plan::{HotplugRequest, NodeRequest, PlanRequest, plan_with_memory_slots};
    /// use memvisor_space::{Platform, RegionSpec};
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// let request = PlanRequest {
    ///     platform: Platform::x86_64(),
    ///     phys_bits: 40,
    ///     nodes: vec![NodeRequest { size: 256 << 20, memory: RegionSpec::ram(GuestAddress(0), 0) }],
    ///     serial: None,
    ///     devices: vec![],
    ///     hotplug: Some(HotplugRequest {
    ///         slots: 31,
    ///         slot_size: 2 << 20,
    ///         node: 0,
    ///         memory: RegionSpec::ram(GuestAddress(0), 0),
    ///     }),
    ///     low_ram_limit: None,
    ///     window_align: None,
    /// };
    /// let plan = plan_with_memory_slots(&request, 32)?; // KVM's slot limit
    /// let space = plan.space_builder().plan()?;
    /// assert_eq!(space.snapshot().len(), plan.regions.len());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn space_builder(&self) -> SpaceBuilder {
        AddressSpace::builder(self.layout.clone())
            .slots(self.memory_slots)
            .regions(self.regions.iter().map(|r| r.spec.clone()))
    }

    /// The guest memory map of the plan: its boot RAM as
    /// [`Snapshot::memory_map`](crate::Snapshot::memory_map) lists it for the address space
    /// the plan's regions make (the [`LEGACY_HOLE`](crate::LEGACY_HOLE) carved out and
    /// reserved on x86-64), the PCI MMCONFIG (ECAM) range reserved when the platform
    /// reserves it ([`Platform::with_pci_mmconfig`]): Linux uses MMCONFIG only where the e820
    /// map or ACPI reserves it; and on x86-64 KVM's TSS and identity-map pages reserved
    /// ([`Platform::kvm_tss_addr`], [`Platform::kvm_identity_map_addr`]; 5 pages at
    /// 0xfffb_c000, or the 4 of [`Platform::with_kvm_pages_at`]), as QEMU reserves its own: nothing
    /// else tells the guest that KVM's private memory slots lie there, and Linux keeps e820's
    /// reserved ranges out of the addresses it assigns to PCI devices. The platform's other
    /// reservations (IOAPIC, local APIC, the GIC) are not listed: the guest finds its interrupt
    /// controllers in its ACPI tables or device tree, and the map lists no RAM in any of them.
    /// Sorted, adjacent entries of one type merged. (A [`Snapshot`](crate::Snapshot) cannot
    /// tell which reserved region is MMCONFIG or KVM's, so its map lists boot RAM only.)
    ///
    /// ```
    /// use memvisor_space::plan::{NodeRequest, PlanRequest, plan};
    /// use memvisor_space::{MemoryMapEntry, MemoryType, Platform, RegionSpec};
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// let request = PlanRequest {
    ///     platform: Platform::x86_64().with_pci_mmconfig()?,
    ///     phys_bits: 40,
    ///     nodes: vec![NodeRequest { size: 256 << 20, memory: RegionSpec::ram(GuestAddress(0), 0) }],
    ///     serial: None,
    ///     devices: vec![],
    ///     hotplug: None,
    ///     low_ram_limit: None,
    ///     window_align: None,
    /// };
    /// let map = plan(&request)?.memory_map();
    /// assert_eq!(
    ///     map[3],
    ///     MemoryMapEntry { addr: 0xe000_0000, size: 256 << 20, ty: MemoryType::Reserved }
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn memory_map(&self) -> Vec<MemoryMapEntry> {
        let carve = self.platform.arch() == Arch::X86_64;
        // (first, last, RAM?): the boot RAM regions (a plan's are never hot-pluggable; one
        // changed by hand to size 0 is skipped), MMCONFIG and KVM's pages, by address.
        let mut ranges: Vec<(u64, u64, bool)> = self
            .regions
            .iter()
            .filter(|r| r.spec.ty == RegionType::Ram && !r.spec.hotplug)
            .filter_map(|r| {
                let last = r.spec.base.checked_add(r.spec.size.checked_sub(1)?)?;
                Some((r.spec.base, last, true))
            })
            .chain(
                self.platform
                    .pci_mmconfig()
                    .into_iter()
                    .chain(self.platform.kvm_pages())
                    .map(|m| (m.range().start().0, m.range().last().0, false)),
            )
            .collect();
        ranges.sort_unstable();
        let mut out = Vec::new();
        for (first, last, ram) in ranges {
            if ram {
                push_ram(&mut out, first, last, carve);
            } else {
                push_merged(&mut out, first, last, MemoryType::Reserved);
            }
        }
        out
    }

    /// The e820 table of the plan: its [`memory_map`](Self::memory_map), to write into
    /// `boot_params.e820_table` as [`Snapshot::e820_table`](crate::Snapshot::e820_table)
    /// says. e820 is x86's: on AArch64, which has none, this is the same list of boot RAM,
    /// no legacy hole, no MMCONFIG and no KVM pages in it (what a device tree's memory nodes
    /// list). On x86-64 it lists KVM's pages beside the boot RAM, so a plan with boot RAM never
    /// has a table of fewer than the 2 entries Linux wants.
    ///
    /// # Errors
    /// [`Error::TooManyMapEntries`] if the map has more than
    /// [`E820_MAX_ENTRIES`](crate::E820_MAX_ENTRIES) entries.
    pub fn e820_table(&self) -> Result<Vec<MemoryMapEntry>> {
        e820_of(self.memory_map())
    }

    /// The PVH memory map of the plan as bytes: its [`e820_table`](Self::e820_table), each
    /// entry as [`MemoryMapEntry::to_pvh_bytes`], to write into guest memory as
    /// [`Snapshot::pvh_memmap`](crate::Snapshot::pvh_memmap) says. A planned VM booted
    /// through PVH takes this one: the space's own map lacks PCI MMCONFIG and KVM's pages.
    ///
    /// # Errors
    /// [`Error::TooManyMapEntries`] if the map has more than
    /// [`E820_MAX_ENTRIES`](crate::E820_MAX_ENTRIES) entries, which Linux's PVH entry copies
    /// into `boot_params.e820_table` without checking the count.
    pub fn pvh_memmap(&self) -> Result<Vec<u8>> {
        Ok(pvh_of(&self.e820_table()?))
    }

    /// Guest memory by guest NUMA node, for an ACPI SRAT memory affinity structure: boot RAM
    /// under the node of the request it was laid out for, and the whole hotplug window
    /// (flagged hot-pluggable) under [`HotplugRequest::node`], sorted, adjacent ranges of one
    /// node and flag merged. The window is listed whole, as QEMU lists its device memory
    /// region: the slots, the lead before the first slot's page boundary and the rest up to
    /// the window alignment, so that memory hot-added anywhere in it (a slot, or a range
    /// [`Plan::placer`](Plan) places there later) lies in a hot-pluggable range of its node,
    /// where Linux looks for its node and which bounds the memory it makes room for. (A
    /// window whose slots a plan edited by hand gives to different nodes belongs to no one
    /// node: each of its slots is listed under its own node, and the rest of it not at all.) The
    /// nodes are the guest's (indexes into [`PlanRequest::nodes`]), whatever
    /// host nodes their memory is bound to: two guest nodes on one host node are two
    /// proximity domains. ([`Snapshot::numa_ranges`](crate::Snapshot::numa_ranges) knows only
    /// the regions' host NUMA bindings.)
    ///
    /// ```
    /// use memvisor_space::plan::{NodeRequest, PlanRequest, plan};
    /// use memvisor_space::{NumaRange, Platform, RegionSpec};
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// let node = NodeRequest { size: 1 << 30, memory: RegionSpec::ram(GuestAddress(0), 0) };
    /// let request = PlanRequest {
    ///     platform: Platform::aarch64(),
    ///     phys_bits: 40,
    ///     nodes: vec![node.clone(), node],
    ///     serial: None,
    ///     devices: vec![],
    ///     hotplug: None,
    ///     low_ram_limit: None,
    ///     window_align: None,
    /// };
    /// let srat = plan(&request)?.numa_ranges();
    /// assert_eq!(srat[1], NumaRange { node: 1, addr: 2 << 30, size: 1 << 30, hotplug: false });
    /// # Ok::<(), memvisor_space::plan::PlanError>(())
    /// ```
    ///
    /// Linux takes at most `MAX_NUMNODES` proximity domains and `NR_NODE_MEMBLKS` (twice as
    /// many) memory ranges from an SRAT and rejects the whole table past either, so the guest
    /// boots without NUMA: [`numa_ranges_for_guest`](Self::numa_ranges_for_guest) checks the
    /// ranges against the guest kernel's limit. This list is not checked, as the plan cannot
    /// know the guest's kernel ([`LINUX_MAX_NUMNODES`](crate::LINUX_MAX_NUMNODES) for one
    /// built from the x86-64 defconfig, 1,024 for most distributions').
    #[must_use]
    pub fn numa_ranges(&self) -> Vec<NumaRange> {
        // (base, size, node, hot-pluggable): boot RAM, and each hotplug window under the node
        // of its slots.
        let mut ram: Vec<(u64, u64, u32, bool)> = self
            .regions
            .iter()
            .filter(|r| r.spec.ty == RegionType::Ram && !r.spec.hotplug)
            .filter_map(|r| Some((r.spec.base, r.spec.size, r.node?, false)))
            .collect();
        // By window start: the node of every slot (with one) inside that hotplug window, or
        // `None` if they belong to different nodes. One look-up per slot, so a plan edited to
        // hold many windows and slots costs O(s log w), not O(s * w).
        let mut hot: HashMap<u64, Option<u32>> = HashMap::new();
        let mut in_window = Vec::new();
        for s in &self.slots {
            let Some(node) = s.node else { continue };
            if let Some(w) = self.layout.window_containing(GuestAddress(s.spec.base))
                && w.kind() == WindowKind::Hotplug
                && w.contains_range(s.spec.base, s.spec.size)
            {
                let one = hot.entry(w.start().0).or_insert(Some(node));
                if *one != Some(node) {
                    *one = None;
                }
                in_window.push((w.start().0, s.spec.base, s.spec.size, node));
            }
        }
        for w in self.layout.windows_of(WindowKind::Hotplug) {
            if let Some(&Some(node)) = hot.get(&w.start().0) {
                ram.push((w.start().0, w.size(), node, true));
            }
        }
        // A window whose slots belong to different nodes is no one node's: each slot under
        // its own.
        for (window, base, size, node) in in_window {
            if hot.get(&window) == Some(&None) {
                ram.push((base, size, node, true));
            }
        }
        ram.sort_unstable();
        let mut out = Vec::new();
        for (base, size, node, hotplug) in ram {
            push_numa(&mut out, node, base, size, hotplug);
        }
        out
    }

    /// [`numa_ranges`](Self::numa_ranges), checked against a guest kernel that maps at most
    /// `max_nodes` NUMA nodes (its `MAX_NUMNODES`:
    /// [`LINUX_MAX_NUMNODES`](crate::LINUX_MAX_NUMNODES) for the x86-64 defconfig, 1,024 for a
    /// `MAXSMP` build) and so keeps at most `2 * max_nodes` memory ranges (`NR_NODE_MEMBLKS`).
    /// Past either limit Linux rejects the whole SRAT and boots without NUMA, which the VMM
    /// would learn only from the guest's log. Linux also rejects it for a node (proximity
    /// domain) at or past its `MAX_PXM_DOMAINS` (256, or `max_nodes` where that is more),
    /// however few nodes there are: a plan numbers its nodes from 0 with none left out, so
    /// only one whose nodes were edited afterwards names one. Processor affinity structures
    /// naming nodes without memory are the VMM's and count toward the same limits in the
    /// guest; they are not seen here. Hot-pluggable ranges are counted, as a guest kernel with
    /// memory hotplug (`CONFIG_MEMORY_HOTPLUG`) counts them; one without skips them, so for it
    /// these checks may refuse a table it would take.
    ///
    /// `max_nodes` must be a Linux kernel's: a power of two (`1 << CONFIG_NODES_SHIFT`) up to
    /// [`LINUX_MOST_NUMNODES`](crate::LINUX_MOST_NUMNODES) (1,024, the most of any build), so
    /// every node numbered 1,024 or more is refused whatever the kernel.
    ///
    /// # Errors
    /// [`Error::GuestNodeLimitUnknown`] if `max_nodes` is 0, not a power of two or more than
    /// 1,024;
    /// [`Error::TooManyGuestNodes`] if the ranges name more than `max_nodes` nodes;
    /// [`Error::GuestNodeOutOfRange`] if they name a node at or past `max_nodes.max(256)`;
    /// [`Error::TooManyNumaRanges`] if there are more than `2 * max_nodes` ranges.
    ///
    /// ```
    /// use memvisor_space::plan::{NodeRequest, PlanRequest, plan};
    /// use memvisor_space::{Error, LINUX_MAX_NUMNODES, Platform, RegionSpec};
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// let node = NodeRequest { size: 2 << 20, memory: RegionSpec::ram(GuestAddress(0), 0) };
    /// let request = PlanRequest {
    ///     platform: Platform::x86_64(),
    ///     phys_bits: 40,
    ///     nodes: vec![node; 65],
    ///     serial: None,
    ///     devices: vec![],
    ///     hotplug: None,
    ///     low_ram_limit: None,
    ///     window_align: None,
    /// };
    /// let plan = plan(&request).expect("a plan");
    /// let err = plan.numa_ranges_for_guest(LINUX_MAX_NUMNODES).unwrap_err();
    /// assert!(matches!(err, Error::TooManyGuestNodes { nodes: 65, max: 64 }));
    /// assert_eq!(plan.numa_ranges_for_guest(1024)?.len(), 65);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn numa_ranges_for_guest(&self, max_nodes: u32) -> Result<Vec<NumaRange>> {
        if !max_nodes.is_power_of_two() || max_nodes > crate::LINUX_MOST_NUMNODES {
            return Err(Error::GuestNodeLimitUnknown {
                max_nodes,
                most: crate::LINUX_MOST_NUMNODES,
            });
        }
        let ranges = self.numa_ranges();
        let nodes = ranges
            .iter()
            .map(|r| r.node)
            .collect::<std::collections::BTreeSet<_>>();
        if nodes.len() > usize::try_from(max_nodes).unwrap_or(usize::MAX) {
            return Err(Error::TooManyGuestNodes {
                nodes: nodes.len(),
                max: max_nodes,
            });
        }
        // Linux's MAX_PXM_DOMAINS: the 8-bit domains of the first SRATs, or MAX_NUMNODES.
        let domains = max_nodes.max(256);
        if let Some(&node) = nodes.last()
            && node >= domains
        {
            return Err(Error::GuestNodeOutOfRange { node, domains });
        }
        let max = 2 * u64::from(max_nodes);
        if u64::try_from(ranges.len()).unwrap_or(u64::MAX) > max {
            return Err(Error::TooManyNumaRanges {
                ranges: ranges.len(),
                max,
            });
        }
        Ok(ranges)
    }
}

/// The owner of a device's DAX window, in the plan's regions and its placer alike.
fn dax_owner(device: &str) -> String {
    format!("{device} DAX")
}

fn at(item: PlanItem) -> impl FnOnce(Error) -> PlanError {
    move |error| PlanError {
        item,
        error,
        layout: None,
    }
}

/// Moves a [`Backing::File`]'s offset `by` bytes on, so that the regions made from one spec
/// (a node's RAM split over windows, the hotplug slots) map consecutive parts of the file
/// rather than the same bytes: the file's part at `offset` is the first region's.
///
/// # Errors
/// [`Error::Overflow`] (the spec's offset and `by`) when the offset passes `u64::MAX`.
fn shift_file_offset(spec: &mut RegionSpec, by: u64) -> Result<()> {
    if let Backing::File { offset, .. } = &mut spec.backing {
        *offset = offset.checked_add(by).ok_or(Error::Overflow {
            base: *offset,
            size: by,
        })?;
    }
    Ok(())
}

/// Lays out `request`.
///
/// # Errors
/// A [`PlanError`] naming the request item: a request item refused on its own (each field of
/// the request types says what it refuses; a setting the platform cannot honour is refused,
/// never dropped), the layout does not fit the address bits
/// (naming boot RAM, the hotplug slots or the last DAX window, whichever window did not fit),
/// more memory-slot numbers needed than the [`DEFAULT_SLOTS`] there are
/// ([`plan_with_memory_slots`] says which refusal: [`Error::InvalidLayout`] or
/// [`Error::NoSlotNumber`]),
/// an interrupt taken or out of range ([`Error::IrqTaken`], [`Error::IrqOutOfRange`],
/// [`Error::NoFreeIrq`]), a window that overlaps another ([`Error::Taken`]) or does not fit
/// ([`Error::NoRoom`], [`Error::NotInWindow`]), or anything
/// [`AddressSpace::plan`](crate::AddressSpace::plan) refuses.
///
/// ```
/// use memvisor_space::plan::{DeviceRequest, NodeRequest, PlanRequest, SerialRequest, plan};
/// use memvisor_space::{Platform, RegionSpec};
/// use memvisor_space::vm_memory::GuestAddress;
///
/// let request = PlanRequest {
///     platform: Platform::x86_64(),
///     phys_bits: 40,
///     nodes: vec![NodeRequest { size: 256 << 20, memory: RegionSpec::ram(GuestAddress(0), 0) }],
///     serial: Some(SerialRequest::default()),
///     devices: vec![DeviceRequest {
///         name: "net0".into(),
///         mmio_size: 0x1000,
///         address: None,
///         irq: None,
///         dax_size: None,
///     }],
///     hotplug: None,
///     low_ram_limit: None,
///     window_align: None,
/// };
/// let plan = plan(&request)?;
/// assert_eq!(plan.devices[0].irq, 4); // COM1
/// assert_eq!(plan.devices[1].mmio.unwrap().start(), GuestAddress(0xc000_0000));
/// assert_eq!(plan.devices[1].irq, 5); // after the legacy ISA interrupts
/// # Ok::<(), memvisor_space::plan::PlanError>(())
/// ```
pub fn plan(request: &PlanRequest) -> Result<Plan, PlanError> {
    plan_with_memory_slots(request, DEFAULT_SLOTS)
}

/// [`plan`] for a VM of `memory_slots` memory-slot numbers: KVM's slot limit
/// (`memvisor_kvm::slot_limit`: 509 on many hosts, 32,764 or 32,767 on recent ones, 32 when
/// KVM does not answer), 1 to [`MAX_MEMORY_SLOTS`] (others are refused,
/// [`Error::InvalidLayout`] at [`PlanItem::Memory`]). Each boot RAM region, each device's DAX
/// window and each hotplug slot takes one, so that every slot can be plugged: a plan whose
/// boot RAM needs more is refused at [`PlanItem::Memory`] (see [`PlanRequest::nodes`]), one
/// whose DAX windows need more [`Error::NoSlotNumber`] at the first
/// [`PlanItem::DeviceDaxSize`] past them, one whose hotplug slots need more
/// [`Error::InvalidLayout`] at [`PlanItem::Hotplug`], naming the numbers. The plan keeps
/// the number ([`Plan::memory_slots`]) for the address space built from it
/// ([`Plan::space_builder`]). [`plan`] is this with [`DEFAULT_SLOTS`].
///
/// # Errors
/// As [`plan`].
pub fn plan_with_memory_slots(request: &PlanRequest, memory_slots: u32) -> Result<Plan, PlanError> {
    if !(1..=MAX_MEMORY_SLOTS).contains(&memory_slots) {
        return Err(at(PlanItem::Memory)(Error::InvalidLayout {
            reason: format!("{memory_slots} memory-slot numbers (need 1 to {MAX_MEMORY_SLOTS})"),
        }));
    }
    check_request(request, memory_slots)?;
    let (layout, ram) = build_layout(request)?;
    plan_in(request, layout.clone(), ram, memory_slots).map_err(|mut e| {
        e.layout = Some(Box::new(layout));
        e
    })
}

fn plan_in(request: &PlanRequest, layout: Layout, ram: u64, count: u32) -> Result<Plan, PlanError> {
    let platform = &request.platform;
    // The platform's placer holds the timer's interrupts (not even a fixed serial interrupt
    // gets them) and the ports KVM answers in the kernel (nothing placed over them would see
    // its accesses) before anything is placed.
    let mut placer = platform.placer(&layout).map_err(at(PlanItem::Platform))?;
    let mut regions: Vec<(PlannedRegion, PlanItem)> = Vec::new();

    // Boot RAM, node by node, over the RAM windows.
    let mut ranges = layout
        .ram_ranges(ram)
        .map_err(at(PlanItem::Memory))?
        .into_iter()
        .map(|(b, s)| (b.0, s));
    let mut current = ranges.next();
    for (i, node) in request.nodes.iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        let mut left = node.size;
        while left > 0 {
            let Some((base, avail)) = current else {
                break;
            };
            let take = left.min(avail);
            let range = GuestRange::new(GuestAddress(base), take).map_err(at(PlanItem::Node(i)))?;
            let mut spec = node
                .memory
                .clone()
                .with_range(range)
                .map_err(at(PlanItem::Node(i)))?;
            // The node's bytes laid before this region (at most its size, so no overflow).
            shift_file_offset(&mut spec, node.size - left).map_err(at(PlanItem::Node(i)))?;
            let owner = format!("RAM node{index}");
            // Held like every range the plan gives, so that nothing placed through the
            // plan's placer (or its allocators) lands on boot RAM.
            placer
                .take_in(WindowKind::Ram, range, &owner)
                .map_err(at(PlanItem::Node(i)))?;
            regions.push((
                PlannedRegion {
                    spec,
                    owner,
                    node: Some(index),
                },
                PlanItem::Node(i),
            ));
            left -= take;
            current = if take == avail {
                ranges.next()
            } else {
                Some((base + take, avail - take))
            };
        }
    }

    // Reserved windows, named after the reservations inside them; reservations elsewhere.
    let reserved: Vec<_> = platform
        .reservations_of(ReservationKind::Reserved)
        .collect();
    for w in layout.windows_of(WindowKind::Reserved) {
        let names: Vec<&str> = reserved
            .iter()
            .filter(|r| w.range().contains_range(&r.range()))
            .map(|r| r.name())
            .collect();
        let owner = if names.is_empty() {
            "reserved".to_owned()
        } else {
            names.join(", ")
        };
        regions.push((
            PlannedRegion {
                spec: RegionSpec::new(RegionType::Reserved, w.start(), w.size()),
                owner,
                node: None,
            },
            PlanItem::Platform,
        ));
    }
    for r in &reserved {
        let in_window = layout
            .windows_of(WindowKind::Reserved)
            .any(|w| w.range().contains_range(&r.range()));
        if !in_window {
            let spec = RegionSpec::for_range(RegionType::Reserved, r.range())
                .map_err(at(PlanItem::Platform))?;
            regions.push((
                PlannedRegion {
                    spec,
                    owner: r.name().to_owned(),
                    node: None,
                },
                PlanItem::Platform,
            ));
        }
    }

    let (serial_irq, device_irqs) = assign_irqs(request, &mut placer)?;
    let (serial_mmio, serial_ports, device_mmio) = place_mmio(request, &mut placer)?;

    // DAX windows.
    let mut device_dax = vec![None; request.devices.len()];
    for (i, (d, slot)) in request.devices.iter().zip(&mut device_dax).enumerate() {
        if let Some(size) = d.dax_size {
            *slot = Some(
                placer
                    .place(WindowKind::Dax, size, DAX_ALIGN, &dax_owner(&d.name))
                    .map_err(at(PlanItem::DeviceDaxSize(i)))?,
            );
        }
    }

    let mut devices = Vec::new();
    if request.serial.is_some() {
        devices.push(PlannedDevice {
            name: "serial".to_owned(),
            mmio: serial_mmio,
            ports: serial_ports,
            irq: serial_irq.unwrap_or_default(),
            dax: None,
        });
        if let Some(r) = serial_mmio {
            let spec =
                RegionSpec::for_range(RegionType::Device, r).map_err(at(PlanItem::Serial))?;
            regions.push((
                PlannedRegion {
                    spec,
                    owner: "serial".to_owned(),
                    node: None,
                },
                PlanItem::Serial,
            ));
        }
    }
    for (i, d) in request.devices.iter().enumerate() {
        let mmio = device_mmio[i];
        let spec =
            RegionSpec::for_range(RegionType::Device, mmio).map_err(at(PlanItem::Device(i)))?;
        regions.push((
            PlannedRegion {
                spec,
                owner: d.name.clone(),
                node: None,
            },
            PlanItem::Device(i),
        ));
        if let Some(r) = device_dax[i] {
            let spec =
                RegionSpec::for_range(RegionType::Dax, r).map_err(at(PlanItem::Device(i)))?;
            regions.push((
                PlannedRegion {
                    spec,
                    owner: dax_owner(&d.name),
                    node: None,
                },
                PlanItem::Device(i),
            ));
        }
        devices.push(PlannedDevice {
            name: d.name.clone(),
            mmio: Some(mmio),
            ports: None,
            irq: device_irqs[i],
            dax: device_dax[i],
        });
    }

    // Boot RAM's own specs first, as the address space's check below would see them: a
    // memory spec that boot RAM and the hotplug slots share is then refused at the node.
    for (r, item) in &regions {
        if let PlanItem::Node(_) = item {
            r.spec.validate().map_err(at(*item))?;
        }
    }

    // Each region with memory (boot RAM, then the devices' DAX windows) and each plugged slot
    // takes a memory-slot number: the first of them past the numbers is refused.
    let numbers = u64::from(count);
    let no_number = || Error::NoSlotNumber { count: numbers };
    let with_memory = |node: bool| {
        regions.iter().filter(move |(r, item)| {
            r.spec.backing.has_memory() && matches!(item, PlanItem::Node(_)) == node
        })
    };
    let ram = with_memory(true).count() as u64;
    if ram > numbers {
        return Err(at(PlanItem::Memory)(no_number()));
    }
    let mut dax = 0;
    for (_, item) in with_memory(false) {
        dax += 1;
        if ram + dax > numbers {
            let item = match *item {
                PlanItem::Device(i) => PlanItem::DeviceDaxSize(i),
                other => other,
            };
            return Err(at(item)(no_number()));
        }
    }
    let hotplug_slots = request.hotplug.as_ref().map_or(0, |h| u64::from(h.slots));
    if ram + dax + hotplug_slots > numbers {
        return Err(at(PlanItem::Hotplug)(too_few_numbers(
            hotplug_slots,
            ram,
            dax,
            numbers,
        )));
    }

    // Hotplug slots.
    let mut slots = Vec::new();
    if let Some(h) = &request.hotplug {
        let align = slot_align(h);
        for index in 0..h.slots {
            let owner = format!("hotplug slot {index}");
            let range = placer
                .place(WindowKind::Hotplug, h.slot_size, align, &owner)
                .map_err(at(PlanItem::HotplugSlotSize))?;
            let mut spec = h
                .memory
                .clone()
                .with_range(range)
                .map_err(at(PlanItem::HotplugSlotSize))?
                .with_hotplug(true);
            // `index * slot_size` fits: the slots' total was checked with the layout.
            shift_file_offset(&mut spec, u64::from(index) * h.slot_size)
                .map_err(at(PlanItem::Hotplug))?;
            if let Err(e) = spec.validate().and_then(|()| layout.check(&spec)) {
                // Options that contradict each other or the type are the memory spec's, the
                // same for every slot; the rest is about where a slot of this size lies.
                let item = if matches!(e, Error::InvalidSpec { .. }) {
                    PlanItem::Hotplug
                } else {
                    PlanItem::HotplugSlotSize
                };
                return Err(at(item)(e));
            }
            slots.push(PlannedRegion {
                spec,
                owner,
                node: Some(h.node),
            });
        }
    }

    // The address space's own check of the whole map.
    if let Err(e) = AddressSpace::builder(layout.clone())
        .slots(count)
        .regions(regions.iter().map(|(r, _)| r.spec.clone()))
        .plan()
    {
        // Slot numbers were counted above, so this is a region's own refusal.
        let item = error_base(&e)
            .and_then(|b| regions.iter().find(|(r, _)| r.spec.base == b))
            .map_or(PlanItem::Platform, |(_, item)| field_behind(*item, &e));
        return Err(at(item)(e));
    }

    regions.sort_by_key(|(r, _)| r.spec.base);
    Ok(Plan {
        layout,
        platform: platform.clone(),
        regions: regions.into_iter().map(|(r, _)| r).collect(),
        devices,
        slots,
        memory_slots: count,
        placer,
    })
}

/// The alignment of the hotplug slots: the largest power of two that divides their size, up
/// to their explicit huge page size or, without one, [`SLOT_ALIGN`] (2 MiB, a transparent
/// huge page).
fn slot_align(h: &HotplugRequest) -> u64 {
    let cap = match h.memory.huge_pages {
        HugePages::Explicit(size) => size.bytes(),
        _ => SLOT_ALIGN,
    }
    .max(SLOT_ALIGN);
    (1u64 << h.slot_size.trailing_zeros().min(63)).min(cap)
}

/// The bytes from the start of the hotplug window `builder` lays out to the first multiple of
/// `align` (0 when it starts on one, or when the layout does not build: the steps of
/// [`build_layout`] then name the part that does not fit). The window starts on the window
/// alignment, so a slot aligned to more (a 1 GiB huge page in a window aligned to 2 MiB)
/// starts that far into it.
fn slot_lead(builder: crate::LayoutBuilder, align: u64) -> u64 {
    builder
        .build()
        .ok()
        .and_then(|l| {
            l.windows_of(WindowKind::Hotplug)
                .next()
                .map(|w| w.start().0)
        })
        .map_or(0, |start| start.wrapping_neg() & (align - 1))
}

/// The refusal of hotplug slots that do not fit the memory-slot numbers beside boot RAM's
/// regions (at least `regions`: one per node before the layout) and `dax` DAX windows.
fn too_few_numbers(slots: u64, regions: u64, dax: u64, count: u64) -> Error {
    let need = slots.saturating_add(regions).saturating_add(dax);
    let dax = if dax > 0 {
        format!(", {regions} boot RAM regions and {dax} DAX windows")
    } else {
        format!(" and {regions} boot RAM regions")
    };
    Error::InvalidLayout {
        reason: format!(
            "{slots} hotplug slots{dax} need {need} memory-slot numbers, more than the {count} of \
             the address space"
        ),
    }
}

/// The checks of request items on their own, before anything is laid out: what no layout
/// could honour.
fn check_request(request: &PlanRequest, memory_slots: u32) -> Result<(), PlanError> {
    if !(32..=MAX_PHYS_BITS).contains(&request.phys_bits) {
        return Err(at(PlanItem::PhysBits)(Error::InvalidLayout {
            reason: format!(
                "{} guest physical address bits (need 32 to {MAX_PHYS_BITS}, the most an x86-64 \
                 or AArch64 host has)",
                request.phys_bits
            ),
        }));
    }
    let count = u64::from(memory_slots);
    // Each node's boot RAM is at least one region with memory, which takes a memory-slot
    // number: more nodes than numbers can never be laid out (and this bounds the work below).
    let nodes = request.nodes.len() as u64;
    if nodes > count {
        return Err(at(PlanItem::Memory)(Error::InvalidLayout {
            reason: format!(
                "{nodes} nodes need more than the {count} memory-slot numbers of the address space"
            ),
        }));
    }
    for (i, node) in request.nodes.iter().enumerate() {
        if node.size == 0 {
            return Err(at(PlanItem::Node(i))(Error::NothingToPlace {
                owner: format!("RAM node{i}"),
            }));
        }
        let refused = |reason| {
            at(PlanItem::Node(i))(Error::InvalidSpec {
                ty: node.memory.ty,
                base: node.memory.base,
                reason,
            })
        };
        if node.memory.ty != RegionType::Ram {
            return Err(refused("boot RAM needs a RAM spec"));
        }
        if node.memory.hotplug {
            return Err(refused("boot RAM is not hot-pluggable"));
        }
    }
    if let Some(h) = &request.hotplug {
        if h.slots == 0 {
            return Err(at(PlanItem::Hotplug)(Error::InvalidLayout {
                reason: "0 hotplug slots: ask for no hotplug slots instead".into(),
            }));
        }
        if usize::try_from(h.node).map_or(true, |n| n >= request.nodes.len()) {
            return Err(at(PlanItem::HotplugNode)(Error::NoGuestNode {
                node: h.node,
                nodes: request.nodes.len(),
            }));
        }
        // Every slot can be plugged beside boot RAM's regions, at least one per node (this
        // bounds the work of placing the slots).
        if nodes.saturating_add(u64::from(h.slots)) > count {
            return Err(at(PlanItem::Hotplug)(too_few_numbers(
                u64::from(h.slots),
                nodes,
                0,
                count,
            )));
        }
    }
    if let Some(s) = &request.serial {
        match request.platform.serial() {
            SerialPreset::Port { .. } => {
                if let Some(address) = s.address {
                    return Err(at(PlanItem::SerialAddress)(Error::NoMmioSerial { address }));
                }
            }
            SerialPreset::Mmio { .. } => {
                if s.port.is_some() {
                    return Err(at(PlanItem::SerialPort)(Error::NoIoPorts));
                }
            }
        }
    }
    let mut names = HashMap::with_capacity(request.devices.len());
    for (i, d) in request.devices.iter().enumerate() {
        let refused = |reason: String| {
            at(PlanItem::DeviceName(i))(Error::InvalidName {
                name: d.name.clone(),
                reason,
            })
        };
        if d.name.is_empty() {
            return Err(refused("is empty".into()));
        }
        if names_other_map_part(&d.name) {
            return Err(refused(
                "is what the plan calls another part of the map (the serial port, a reserved \
                 range, RAM, a hotplug slot or a DAX window)"
                    .into(),
            ));
        }
        if let Some(other) = names.insert(d.name.as_str(), i) {
            return Err(refused(format!("is device {other}'s name too")));
        }
        if d.mmio_size == 0 {
            return Err(at(PlanItem::DeviceMmioSize(i))(Error::NothingToPlace {
                owner: d.name.clone(),
            }));
        }
        if !d.mmio_size.is_power_of_two() {
            return Err(at(PlanItem::DeviceMmioSize(i))(Error::InvalidAlignment {
                align: d.mmio_size,
            }));
        }
        if let Some(a) = d.address
            && !a.is_multiple_of(d.mmio_size)
        {
            return Err(at(PlanItem::DeviceAddress(i))(Error::NotMultiple {
                owner: d.name.clone(),
                what: "address",
                value: a,
                of: d.mmio_size,
            }));
        }
        if let Some(size) = d.dax_size
            && size != 0
            && !size.is_multiple_of(DAX_ALIGN)
        {
            return Err(at(PlanItem::DeviceDaxSize(i))(Error::NotMultiple {
                owner: d.name.clone(),
                what: "DAX size",
                value: size,
                of: DAX_ALIGN,
            }));
        }
    }
    Ok(())
}

/// Whether `name` is one the plan gives to a part of the map or an interrupt that is not a
/// device, on any platform preset: the serial port (`serial`), a reserved range (a platform
/// reservation such as `GIC` or `KVM TSS, identity map`, several joined by `, `, or
/// `reserved`), the legacy ISA interrupts (`legacy ISA`), RAM (`boot RAM`, `RAM node0`), a
/// hotplug slot (`hotplug slot 0`), a DAX window (`eth0 DAX`) or a device of KVM's whose I/O
/// ports the plan's placer holds (x86-64: `PIC`, `PIT`, `ELCR`). [`plan`] refuses a device of
/// such a name ([`Error::InvalidName`]): it would be told apart from that part nowhere in the
/// plan.
///
/// ```
/// use memvisor_space::plan::names_other_map_part;
///
/// assert!(names_other_map_part("serial"));
/// assert!(names_other_map_part("IOAPIC, local APIC"));
/// assert!(names_other_map_part("eth0 DAX"));
/// assert!(names_other_map_part("PIT"));
/// assert!(!names_other_map_part("eth0"));
/// ```
#[must_use]
pub fn names_other_map_part(name: &str) -> bool {
    if matches!(name, "serial" | "reserved" | "legacy ISA" | "boot RAM")
        || name.starts_with("RAM node")
        || name.starts_with("hotplug slot")
        || name.ends_with(" DAX")
    {
        return true;
    }
    let (reservations, kernel_devices) = preset_names();
    kernel_devices.contains(&name) || joined(name, reservations)
}

/// The names of every platform preset's reservations, and of the devices whose ports KVM
/// answers in the kernel, built once.
fn preset_names() -> &'static (Vec<&'static str>, Vec<&'static str>) {
    static NAMES: OnceLock<(Vec<&'static str>, Vec<&'static str>)> = OnceLock::new();
    NAMES.get_or_init(|| {
        #[cfg(test)]
        PRESET_BUILDS.with(|c| c.set(c.get() + 1));
        let x86 = Platform::x86_64();
        let platforms = [
            x86.clone().with_pci_mmconfig().unwrap_or(x86),
            Platform::aarch64(),
        ];
        let reservations = platforms
            .iter()
            .flat_map(Platform::reservations)
            .map(crate::platform::Reservation::name)
            .collect();
        let kernel_devices = platforms
            .iter()
            .flat_map(Platform::kernel_ports)
            .map(|&(device, ..)| device)
            .collect();
        (reservations, kernel_devices)
    })
}

#[cfg(test)]
thread_local! {
    /// How many times this thread built the platform presets for their reservation names.
    static PRESET_BUILDS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Whether `name` is one or more of `parts` joined by `, ` (a part may hold `, ` itself):
/// which byte offsets a sequence of parts can reach, in one pass over `name` (no recursion, so
/// a name of any length is checked in bounded stack and `O(len * parts)` time).
fn joined(name: &str, parts: &[&str]) -> bool {
    let mut reachable = vec![false; name.len() + 1];
    reachable[0] = true;
    for start in 0..name.len() {
        if !reachable[start] {
            continue;
        }
        let Some(rest) = name.get(start..) else {
            continue;
        };
        for p in parts {
            if let Some(after) = rest.strip_prefix(p) {
                if after.is_empty() {
                    return true;
                }
                if after.starts_with(", ") {
                    let next = name.len() - after.len() + 2;
                    if let Some(r) = reachable.get_mut(next) {
                        *r = true;
                    }
                }
            }
        }
    }
    false
}

/// The layout, built window by window so that an error names the part that did not fit, and
/// the boot RAM size. Called after [`check_request`], so the address bits are 32 to
/// [`MAX_PHYS_BITS`], which every layout builder takes: an error here is the part's.
fn build_layout(request: &PlanRequest) -> Result<(Layout, u64), PlanError> {
    let ram = request
        .nodes
        .iter()
        .try_fold(0u64, |sum, n| sum.checked_add(n.size))
        .ok_or(Error::InvalidLayout {
            reason: "the nodes' RAM sizes overflow".into(),
        })
        .map_err(at(PlanItem::Memory))?;
    let hotplug = match &request.hotplug {
        Some(h) => u64::from(h.slots)
            .checked_mul(h.slot_size)
            .ok_or(Error::InvalidLayout {
                reason: "slots * slot_size overflows".into(),
            })
            .map_err(at(PlanItem::Hotplug))?,
        None => 0,
    };
    let last_dax = request
        .devices
        .iter()
        .rposition(|d| d.dax_size.is_some())
        .map_or(PlanItem::Memory, PlanItem::DeviceDaxSize);
    let dax = request
        .devices
        .iter()
        .filter_map(|d| d.dax_size)
        .try_fold(0u64, u64::checked_add)
        .ok_or(Error::InvalidLayout {
            reason: "the DAX window sizes overflow".into(),
        })
        .map_err(at(last_dax))?;
    let mut builder = request
        .platform
        .layout()
        .ram(ram)
        .phys_bits(request.phys_bits);
    if let Some(low) = request.low_ram_limit {
        builder = builder.low_ram_limit(low);
    }
    if let Some(align) = request.window_align {
        if !align.is_power_of_two() || !(DAX_ALIGN..=1 << 30).contains(&align) {
            return Err(at(PlanItem::Memory)(Error::InvalidLayout {
                reason: format!(
                    "window alignment {align:#x} is not a power of two from 2 MiB (the \
                     alignment of DAX windows and hotplug slots) to 1 GiB"
                ),
            }));
        }
        builder = builder.window_align(align);
    }
    // Slots aligned to more than the window alignment start on the first multiple of it in
    // the window: the window holds that lead too, so that all the slots fit.
    let hotplug = match &request.hotplug {
        Some(h) => hotplug
            .checked_add(slot_lead(builder.hotplug(hotplug), slot_align(h)))
            .ok_or(Error::InvalidLayout {
                reason: "slots * slot_size and the lead to the slots' alignment overflow".into(),
            })
            .map_err(at(PlanItem::Hotplug))?,
        None => 0,
    };
    let steps = [
        (builder, PlanItem::Memory),
        (builder.hotplug(hotplug), PlanItem::Hotplug),
        (builder.hotplug(hotplug).dax(dax), last_dax),
    ];
    let mut layout = None;
    for (b, item) in steps {
        let item = match b.build() {
            Ok(l) => {
                layout = Some(l);
                continue;
            }
            Err(e) => at(item)(e),
        };
        return Err(item);
    }
    Ok((
        layout.unwrap_or_else(|| unreachable!("the last step built it")),
        ram,
    ))
}

/// Interrupts: fixed ones first (the serial port's, the legacy ones, the devices'), then the
/// serial port's and the devices' in order.
fn assign_irqs(
    request: &PlanRequest,
    placer: &mut Placer,
) -> Result<(Option<u32>, Vec<u32>), PlanError> {
    let platform = &request.platform;
    let mut serial_irq = None;
    if let Some(s) = &request.serial {
        let fixed = s.irq.or(match platform.serial() {
            SerialPreset::Port { irq, .. } => Some(irq),
            SerialPreset::Mmio { .. } => None,
        });
        if let Some(irq) = fixed {
            serial_irq = Some(
                placer
                    .irq_at(irq, "serial")
                    .map_err(at(PlanItem::SerialIrq))?,
            );
        }
    }
    for &pin in platform.legacy_irqs() {
        if placer.irq_owner(pin).is_none() {
            placer
                .irq_at(pin, "legacy ISA")
                .map_err(at(PlanItem::SerialIrq))?;
        }
    }
    let mut device_irqs = vec![None; request.devices.len()];
    for (i, (d, slot)) in request.devices.iter().zip(&mut device_irqs).enumerate() {
        if let Some(irq) = d.irq {
            *slot = Some(
                placer
                    .irq_at(irq, &d.name)
                    .map_err(at(PlanItem::DeviceIrq(i)))?,
            );
        }
    }
    if request.serial.is_some() && serial_irq.is_none() {
        serial_irq = Some(placer.irq("serial").map_err(at(PlanItem::SerialIrq))?);
    }
    for (i, (d, slot)) in request.devices.iter().zip(&mut device_irqs).enumerate() {
        if slot.is_none() {
            *slot = Some(placer.irq(&d.name).map_err(at(PlanItem::DeviceIrq(i)))?);
        }
    }
    Ok((serial_irq, device_irqs.into_iter().flatten().collect()))
}

type Mmio = (Option<GuestRange>, Option<GuestRange>, Vec<GuestRange>);

/// MMIO windows (and the serial port's I/O ports): fixed addresses first, then first fit in
/// request order.
fn place_mmio(request: &PlanRequest, placer: &mut Placer) -> Result<Mmio, PlanError> {
    let mut serial_mmio = None;
    let mut serial_ports = None;
    let serial_size = match request.platform.serial() {
        SerialPreset::Port { base, len, .. } => {
            if let Some(s) = &request.serial {
                let ports = GuestRange::new(GuestAddress(s.port.unwrap_or(base)), len)
                    .map_err(at(PlanItem::SerialPort))?;
                placer
                    .ports_at(ports, "serial")
                    .map_err(at(PlanItem::SerialPort))?;
                serial_ports = Some(ports);
            }
            None
        }
        SerialPreset::Mmio { size } => {
            if let Some(a) = request.serial.as_ref().and_then(|s| s.address) {
                let range =
                    GuestRange::new(GuestAddress(a), size).map_err(at(PlanItem::SerialAddress))?;
                placer
                    .take_in(WindowKind::Device, range, "serial")
                    .map_err(at(PlanItem::SerialAddress))?;
                serial_mmio = Some(range);
            }
            Some(size)
        }
    };
    let mut device_mmio = vec![None; request.devices.len()];
    for (i, (d, slot)) in request.devices.iter().zip(&mut device_mmio).enumerate() {
        if let Some(a) = d.address {
            let range = GuestRange::new(GuestAddress(a), d.mmio_size)
                .map_err(at(PlanItem::DeviceAddress(i)))?;
            placer
                .take_in(WindowKind::Device, range, &d.name)
                .map_err(at(PlanItem::DeviceAddress(i)))?;
            *slot = Some(range);
        }
    }
    if let Some(size) = serial_size
        && request.serial.is_some()
        && serial_mmio.is_none()
    {
        serial_mmio = Some(
            placer
                .place(WindowKind::Device, size, size, "serial")
                .map_err(at(PlanItem::Serial))?,
        );
    }
    for (i, (d, slot)) in request.devices.iter().zip(&mut device_mmio).enumerate() {
        if slot.is_none() {
            *slot = Some(
                placer
                    .place(WindowKind::Device, d.mmio_size, d.mmio_size, &d.name)
                    .map_err(at(PlanItem::DeviceMmioSize(i)))?,
            );
        }
    }
    Ok((
        serial_mmio,
        serial_ports,
        device_mmio.into_iter().flatten().collect(),
    ))
}

/// The request field behind an address-space error about a planned region of `item`: a
/// window off page alignment comes from the serial port's fixed address (the planner places
/// the others aligned to their size), or from a device's size below a page, or else from its
/// fixed address.
fn field_behind(item: PlanItem, e: &Error) -> PlanItem {
    match (item, e) {
        (PlanItem::Serial, Error::Misaligned { .. }) => PlanItem::SerialAddress,
        (
            PlanItem::Device(i),
            Error::Misaligned {
                size, page_size, ..
            },
        ) => {
            if size.is_multiple_of(*page_size) {
                PlanItem::DeviceAddress(i)
            } else {
                PlanItem::DeviceMmioSize(i)
            }
        }
        _ => item,
    }
}

/// The base address an address-space error is about, to find the item behind it.
fn error_base(e: &Error) -> Option<u64> {
    match e {
        Error::ZeroSize { base }
        | Error::Overflow { base, .. }
        | Error::Misaligned { base, .. }
        | Error::Overlap { base, .. }
        | Error::OutsideWindow { base, .. }
        | Error::AddressLimit { base, .. }
        | Error::InvalidSpec { base, .. } => Some(*base),
        _ => None,
    }
}

// Safe code only: Miri would take minutes over these tests and check nothing the native run
// does not.
#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use crate::Arch;
    use crate::spec::with_host_page_size;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn device(name: &str) -> DeviceRequest {
        DeviceRequest {
            name: name.into(),
            mmio_size: 0x1000,
            address: None,
            irq: None,
            dax_size: None,
        }
    }

    fn request(arch: Arch, ram: u64) -> PlanRequest {
        PlanRequest {
            platform: Platform::new(arch),
            phys_bits: 40,
            nodes: vec![NodeRequest {
                size: ram,
                memory: RegionSpec::ram(GuestAddress(0), 0),
            }],
            serial: Some(SerialRequest::default()),
            devices: vec![device("net0"), device("blk0")],
            hotplug: None,
            low_ram_limit: None,
            window_align: None,
        }
    }

    #[test]
    fn plan_refuses_boot_ram_that_is_not_ram_or_is_hot_pluggable() {
        for arch in Arch::ALL {
            // A reserved spec has no memory and may sit anywhere: it would be planned as a
            // node's "RAM" that the guest never gets.
            let mut r = request(arch, 256 * MIB);
            r.nodes[0].memory = RegionSpec::new(RegionType::Reserved, GuestAddress(0), 0);
            let Err(e) = plan(&r) else {
                panic!("a reserved spec planned as boot RAM")
            };
            assert_eq!(e.item, PlanItem::Node(0), "{e}");
            assert!(
                matches!(
                    e.error,
                    Error::InvalidSpec {
                        ty: RegionType::Reserved,
                        ..
                    }
                ),
                "{e}"
            );
            assert_eq!(
                e.to_string(),
                "node 0: invalid reserved region at 0x0: boot RAM needs a RAM spec"
            );
            for ty in [RegionType::Device, RegionType::Dax, RegionType::Firmware] {
                r.nodes[0].memory = RegionSpec::new(ty, GuestAddress(0), 0)
                    .with_backing(crate::Backing::AnonymousPrivate);
                let e = plan(&r).unwrap_err();
                assert_eq!(e.item, PlanItem::Node(0), "{e}");
                assert!(matches!(e.error, Error::InvalidSpec { .. }), "{e}");
            }
            r.nodes[0].memory = RegionSpec::ram(GuestAddress(0), 0).with_hotplug(true);
            let e = plan(&r).unwrap_err();
            assert_eq!(e.item, PlanItem::Node(0), "{e}");
            assert_eq!(
                e.to_string(),
                "node 0: invalid RAM region at 0x0: boot RAM is not hot-pluggable"
            );
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "tens of thousands of regions: slow under Miri")]
    fn plan_more_ram_regions_than_slot_numbers_names_memory() {
        let node = || NodeRequest {
            size: 0x1000,
            memory: RegionSpec::ram(GuestAddress(0), 0),
        };
        for arch in Arch::ALL {
            // More nodes than memory-slot numbers: refused before anything is laid out.
            let mut r = request(arch, 0x1000);
            r.nodes = vec![node(); DEFAULT_SLOTS as usize + 1];
            let Err(e) = plan(&r) else {
                panic!("too many nodes planned")
            };
            assert_eq!(e.item, PlanItem::Memory, "{e}");
            assert!(matches!(e.error, Error::InvalidLayout { .. }), "{e}");
            assert_eq!(
                e.to_string(),
                "memory: invalid layout: 32765 nodes need more than the 32764 memory-slot numbers \
                 of the address space"
            );
        }
        // As many nodes as numbers, but the last node's boot RAM split by the x86-64 32-bit
        // hole over two RAM windows: one region more than numbers.
        let mut r = request(Arch::X86_64, 0x1000);
        r.nodes = vec![node(); DEFAULT_SLOTS as usize - 1];
        r.nodes.push(NodeRequest {
            size: 4 * GIB,
            memory: RegionSpec::ram(GuestAddress(0), 0),
        });
        let Err(e) = plan(&r) else {
            panic!("more regions than slot numbers planned")
        };
        assert_eq!(e.item, PlanItem::Memory, "{e}");
        assert!(
            matches!(e.error, Error::NoSlotNumber { count: 32_764 }),
            "{e}"
        );
    }

    #[test]
    fn plan_on_64k_host_places_4k_windows() {
        for arch in Arch::ALL {
            let mut r = request(arch, 256 * MIB + 0x1000);
            r.hotplug = Some(HotplugRequest {
                slots: 2,
                slot_size: 128 * MIB,
                node: 0,
                memory: RegionSpec::ram(GuestAddress(0), 0),
            });
            let here = plan(&r).unwrap();
            let there = with_host_page_size(0x1_0000, || plan(&r)).unwrap();
            assert_eq!(here.regions, there.regions, "{arch}");
            assert_eq!(here.devices, there.devices, "{arch}");
            assert_eq!(here.slots, there.slots, "{arch}");
            let mmio = there.devices[1].mmio.unwrap();
            assert_eq!(mmio.size(), Some(0x1000));
        }
    }

    #[test]
    fn plan_x86_reserves_kvm_pages_and_names_owners() {
        let p = plan(&request(Arch::X86_64, 256 * MIB)).unwrap();
        let owners: Vec<(&str, u64)> = p
            .regions
            .iter()
            .filter(|r| r.spec.ty == RegionType::Reserved)
            .map(|r| (r.owner.as_str(), r.spec.base))
            .collect();
        assert_eq!(
            owners,
            [
                ("IOAPIC, local APIC", 0xfec0_0000),
                ("KVM TSS, identity map", 0xfffb_c000)
            ]
        );
        assert_eq!(p.devices[0].ports.unwrap().start(), GuestAddress(0x3f8));
        assert_eq!(
            p.devices.iter().map(|d| d.irq).collect::<Vec<_>>(),
            [4, 5, 6]
        );
        // The returned placer knows every owner.
        let mut placer = p.placer;
        let err = placer
            .take_in(
                WindowKind::Device,
                GuestRange::new(GuestAddress(0xc000_1000), 0x1000).unwrap(),
                "rng0",
            )
            .unwrap_err();
        assert!(
            matches!(err, Error::Taken { ref other, .. } if other == "blk0"),
            "{err}"
        );
        assert_eq!(placer.irq_owner(1), Some("legacy ISA"));
    }

    #[test]
    fn plan_aarch64_places_serial_in_mmio() {
        let p = plan(&request(Arch::Aarch64, 256 * MIB)).unwrap();
        assert_eq!(p.devices[0].ports, None);
        assert_eq!(p.devices[0].mmio.unwrap().start(), GuestAddress(144 * MIB));
        assert_eq!(
            p.devices.iter().map(|d| d.irq).collect::<Vec<_>>(),
            [32, 33, 34]
        );
        let gic = p.regions.iter().find(|r| r.owner == "GIC").unwrap();
        assert_eq!(gic.spec.base, 64 * MIB);
    }

    #[test]
    fn plan_layout_too_big_names_the_part() {
        let mut r = request(Arch::X86_64, 256 * MIB);
        r.phys_bits = 32;
        r.hotplug = Some(HotplugRequest {
            slots: 1,
            slot_size: GIB,
            node: 0,
            memory: RegionSpec::ram(GuestAddress(0), 0),
        });
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::Hotplug);
        assert!(matches!(e.error, Error::AddressLimit { .. }), "{e}");
        r.hotplug = None;
        r.devices[1].dax_size = Some(GIB);
        assert_eq!(plan(&r).unwrap_err().item, PlanItem::DeviceDaxSize(1));
        r.devices[1].dax_size = None;
        r.nodes[0].size = 8 * GIB;
        assert_eq!(plan(&r).unwrap_err().item, PlanItem::Memory);
        r.phys_bits = 20;
        assert_eq!(plan(&r).unwrap_err().item, PlanItem::PhysBits);
    }

    #[test]
    fn plan_conflicts_name_item_and_owner() {
        let mut r = request(Arch::X86_64, 256 * MIB);
        r.devices[0].irq = Some(9);
        r.devices[1].irq = Some(9);
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::DeviceIrq(1));
        assert_eq!(e.error.to_string(), "GSI 9 of blk0 is taken by net0");
        let mut r = request(Arch::X86_64, 256 * MIB);
        r.devices[0].address = Some(0xd000_0000);
        r.devices[0].mmio_size = 0x1_0000;
        r.devices[1].address = Some(0xd000_8000);
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::DeviceAddress(1));
        assert!(e.layout.is_some());
        assert_eq!(
            e.error.to_string(),
            "blk0's range [0xd0008000, 0xd0008fff] overlaps net0's range [0xd0000000, 0xd000ffff]"
        );
        let mut r = request(Arch::X86_64, 256 * MIB);
        r.devices[0].mmio_size = 2 * GIB;
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::DeviceMmioSize(0));
        assert!(
            matches!(e.error, Error::NoRoom { largest_free, .. } if largest_free == 1004 * MIB)
        );
    }

    #[test]
    fn plan_more_slots_than_slot_numbers_errors_at_once() {
        let mut r = request(Arch::X86_64, 256 * MIB);
        r.phys_bits = MAX_PHYS_BITS;
        r.hotplug = Some(HotplugRequest {
            slots: u32::MAX,
            slot_size: 0x1000,
            node: 0,
            memory: RegionSpec::ram(GuestAddress(0), 0),
        });
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::Hotplug);
        assert!(matches!(e.error, Error::InvalidLayout { .. }), "{e}");
        assert!(
            e.to_string().contains(
                "4294967295 hotplug slots and 1 boot RAM regions need \
                 4294967296 memory-slot numbers, more than the 32764"
            ),
            "{e}"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "plans and plugs 32,762 slots")]
    fn plan_slots_leave_numbers_for_the_regions_with_memory() {
        // 4 GiB of boot RAM on x86-64 is two regions (below and above the MMIO hole), each
        // taking a memory-slot number: only `DEFAULT_SLOTS - 2` slots can all be plugged.
        let mut r = request(Arch::X86_64, 4 * GIB);
        r.devices.clear();
        r.hotplug = Some(HotplugRequest {
            slots: DEFAULT_SLOTS - 1,
            slot_size: 2 * MIB,
            node: 0,
            memory: RegionSpec::ram(GuestAddress(0), 0),
        });
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::Hotplug);
        // Counted as laid out: boot RAM is two regions.
        assert!(
            e.to_string()
                .contains("32763 hotplug slots and 2 boot RAM regions need 32765"),
            "{e}"
        );
        if let Some(h) = &mut r.hotplug {
            h.slots = DEFAULT_SLOTS - 2;
        }
        let p = plan(&r).unwrap();
        let space =
            AddressSpace::plan(p.layout.clone(), p.regions.iter().map(|r| r.spec.clone())).unwrap();
        for s in &p.slots {
            let region = std::sync::Arc::new(crate::Region::plan(s.spec.clone()).unwrap());
            space.insert_region(region).unwrap();
        }
    }

    fn slots(node: u32) -> Option<HotplugRequest> {
        Some(HotplugRequest {
            slots: 2,
            slot_size: GIB,
            node,
            memory: RegionSpec::ram(GuestAddress(0), 0),
        })
    }

    #[test]
    fn plan_hotplug_on_missing_node_is_refused() {
        let mut r = request(Arch::X86_64, 256 * MIB);
        r.hotplug = slots(1);
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::HotplugNode);
        assert!(
            matches!(e.error, Error::NoGuestNode { node: 1, nodes: 1 }),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "hotplug node: guest NUMA node 1 does not exist (1 nodes)"
        );
        r.nodes.push(NodeRequest {
            size: 256 * MIB,
            memory: RegionSpec::ram(GuestAddress(0), 0),
        });
        let p = plan(&r).unwrap();
        assert!(p.slots.iter().all(|s| s.node == Some(1)));
        r.hotplug = slots(u32::MAX);
        assert_eq!(plan(&r).unwrap_err().item, PlanItem::HotplugNode);
    }

    #[test]
    fn plan_zero_hotplug_slots_are_refused() {
        let mut r = request(Arch::X86_64, 256 * MIB);
        r.hotplug = slots(0);
        if let Some(h) = &mut r.hotplug {
            h.slots = 0;
        }
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::Hotplug);
        assert!(matches!(e.error, Error::InvalidLayout { .. }), "{e}");
    }

    #[test]
    fn plan_node_without_ram_is_refused() {
        let mut r = request(Arch::X86_64, 256 * MIB);
        r.nodes.push(NodeRequest {
            size: 0,
            memory: RegionSpec::ram(GuestAddress(0), 0),
        });
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::Node(1));
        assert!(
            matches!(e.error, Error::NothingToPlace { ref owner } if owner == "RAM node1"),
            "{e}"
        );
    }

    #[test]
    fn plan_dax_size_not_a_multiple_of_2m_is_refused() {
        for size in [0x1000, 3 * MIB, 2 * MIB + 0x1000] {
            let mut r = request(Arch::X86_64, 256 * MIB);
            r.devices[1].dax_size = Some(size);
            let e = plan(&r).unwrap_err();
            assert_eq!(e.item, PlanItem::DeviceDaxSize(1), "{size:#x}");
            assert!(
                matches!(
                    e.error,
                    Error::NotMultiple { ref owner, value, of: DAX_ALIGN, .. }
                        if owner == "blk0" && value == size
                ),
                "{e}"
            );
        }
        let e = {
            let mut r = request(Arch::X86_64, 256 * MIB);
            r.devices[1].dax_size = Some(0x1000);
            plan(&r).unwrap_err()
        };
        assert_eq!(
            e.to_string(),
            "device 1 DAX size: blk0's DAX size 0x1000 is not a multiple of 0x200000"
        );
        let mut r = request(Arch::X86_64, 256 * MIB);
        r.devices[1].dax_size = Some(4 * MIB);
        plan(&r).unwrap();
    }

    #[test]
    fn plan_device_address_not_aligned_to_its_window_size_is_refused() {
        let mut r = request(Arch::X86_64, 256 * MIB);
        r.devices[0].mmio_size = 0x2000;
        r.devices[0].address = Some(0xc000_1000);
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::DeviceAddress(0));
        assert!(
            matches!(
                e.error,
                Error::NotMultiple {
                    value: 0xc000_1000,
                    of: 0x2000,
                    ..
                }
            ),
            "{e}"
        );
        r.devices[0].address = Some(0xc000_2000);
        plan(&r).unwrap();
        // A window size that is not a power of two, at a fixed address too.
        r.devices[0].mmio_size = 0x3000;
        r.devices[0].address = Some(0xc000_0000);
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::DeviceMmioSize(0));
        assert!(
            matches!(e.error, Error::InvalidAlignment { align: 0x3000 }),
            "{e}"
        );
    }

    #[test]
    fn plan_serial_setting_the_platform_lacks_is_refused() {
        let mut r = request(Arch::Aarch64, 256 * MIB);
        r.serial = Some(SerialRequest {
            port: Some(0x3f8),
            ..SerialRequest::default()
        });
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::SerialPort);
        assert!(matches!(e.error, Error::NoIoPorts), "{e}");
        let mut r = request(Arch::X86_64, 256 * MIB);
        r.serial = Some(SerialRequest {
            address: Some(0xc000_0000),
            ..SerialRequest::default()
        });
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::SerialAddress);
        assert!(
            matches!(
                e.error,
                Error::NoMmioSerial {
                    address: 0xc000_0000
                }
            ),
            "{e}"
        );
        // Each platform's own setting is still honoured.
        let mut r = request(Arch::X86_64, 256 * MIB);
        r.serial = Some(SerialRequest {
            port: Some(0x2f8),
            ..SerialRequest::default()
        });
        let p = plan(&r).unwrap();
        assert_eq!(p.devices[0].ports.unwrap().start(), GuestAddress(0x2f8));
        let mut r = request(Arch::Aarch64, 256 * MIB);
        r.serial = Some(SerialRequest {
            address: Some(0x0900_1000),
            ..SerialRequest::default()
        });
        let p = plan(&r).unwrap();
        assert_eq!(
            p.devices[0].mmio.unwrap().start(),
            GuestAddress(0x0900_1000)
        );
    }

    /// A serial port's fixed MMIO address off page alignment is refused at the address.
    #[test]
    fn plan_misaligned_serial_address_is_refused_at_the_address() {
        let page = memvisor_vmem::page_size() as u64;
        let mut r = request(Arch::Aarch64, 256 * MIB);
        r.serial = Some(SerialRequest {
            address: Some(0x0900_0000 + page / 2),
            ..SerialRequest::default()
        });
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::SerialAddress, "{e}");
        assert!(matches!(e.error, Error::Misaligned { .. }), "{e}");
    }

    /// A device window smaller than a guest page is refused at its size, placed or fixed.
    #[test]
    fn plan_device_window_below_a_page_is_refused_at_its_size() {
        for arch in Arch::ALL {
            // A fixed address inside the platform's device window.
            let fixed = match arch {
                Arch::X86_64 => 0xd000_0000,
                Arch::Aarch64 => 0x2000_0000,
            };
            for address in [None, Some(fixed)] {
                let mut r = request(arch, 256 * MIB);
                r.devices[1].mmio_size = 0x100;
                r.devices[1].address = address;
                let e = plan(&r).unwrap_err();
                assert_eq!(e.item, PlanItem::DeviceMmioSize(1), "{arch:?} {e}");
                assert!(
                    matches!(e.error, Error::Misaligned { size: 0x100, .. }),
                    "{arch:?} {e}"
                );
            }
        }
    }

    /// A device without a window is refused at its size, with or without a fixed address.
    #[test]
    fn plan_device_window_of_zero_is_refused_at_its_size() {
        for arch in Arch::ALL {
            for address in [None, Some(0xd000_0000)] {
                let mut r = request(arch, 256 * MIB);
                r.devices[1].mmio_size = 0;
                r.devices[1].address = address;
                let e = plan(&r).unwrap_err();
                assert_eq!(e.item, PlanItem::DeviceMmioSize(1), "{arch:?} {e}");
                assert!(
                    matches!(e.error, Error::NothingToPlace { ref owner } if owner == "blk0"),
                    "{arch:?} {e}"
                );
            }
        }
    }

    #[test]
    fn plan_many_devices_builds_platform_presets_at_most_once() {
        let mut r = request(Arch::X86_64, 256 * MIB);
        r.devices = (0..8).map(|i| device(&format!("dev{i}"))).collect();
        let before = PRESET_BUILDS.with(std::cell::Cell::get);
        plan(&r).unwrap();
        let builds = PRESET_BUILDS.with(std::cell::Cell::get) - before;
        assert!(builds <= 1, "{builds} builds for 8 devices");
    }

    #[test]
    fn plan_device_names_must_tell_devices_apart() {
        for arch in Arch::ALL {
            for (name, index) in [
                ("", 1),
                ("net0", 1),
                ("serial", 1),
                ("legacy ISA", 1),
                ("reserved", 1),
                ("boot RAM", 1),
                ("RAM node0", 1),
                ("hotplug slot 3", 1),
                ("net0 DAX", 1),
                ("GIC", 1),
                ("IOAPIC, local APIC", 1),
                ("KVM TSS, identity map", 1),
                ("PCI MMCONFIG", 1),
            ] {
                let mut r = request(arch, 256 * MIB);
                r.devices[index].name = name.into();
                let e = plan(&r).unwrap_err();
                assert_eq!(e.item, PlanItem::DeviceName(index), "{arch} {name:?}: {e}");
                assert!(
                    matches!(e.error, Error::InvalidName { name: ref n, .. } if n == name),
                    "{arch} {name:?}: {e}"
                );
            }
            // Names that only look alike are a device's own.
            for name in [
                "Serial",
                "serial0",
                "DAX",
                "gic",
                "RAM",
                "hotplug",
                "a DAX window",
            ] {
                let mut r = request(arch, 256 * MIB);
                r.devices[1].name = name.into();
                plan(&r).unwrap_or_else(|e| panic!("{arch} {name:?}: {e}"));
            }
        }
        // A long name is checked without deep recursion (shorter under Miri, which interprets
        // each step of the check).
        let parts = if cfg!(miri) { 200 } else { 200_000 };
        let mut r = request(Arch::Aarch64, 256 * MIB);
        r.devices[1].name = "GIC, ".repeat(parts) + "GIC";
        assert_eq!(plan(&r).unwrap_err().item, PlanItem::DeviceName(1));
        r.devices[1].name = "GIC, ".repeat(parts) + "GICx";
        plan(&r).unwrap();
        let mut r = request(Arch::X86_64, 256 * MIB);
        r.devices[1].name = "net0".into();
        assert_eq!(
            plan(&r).unwrap_err().to_string(),
            "device 1 name: device name \"net0\" is device 0's name too"
        );
    }

    #[test]
    fn plan_low_ram_limit_puts_ram_above_4g() {
        let mut r = request(Arch::X86_64, 512 * MIB);
        r.low_ram_limit = Some(MIB);
        let p = plan(&r).unwrap();
        let ram: Vec<(u64, u64)> = p
            .regions
            .iter()
            .filter(|r| r.spec.ty == RegionType::Ram)
            .map(|r| (r.spec.base, r.spec.size))
            .collect();
        assert_eq!(ram, [(0, MIB), (4 * GIB, 511 * MIB)]);
    }

    #[test]
    fn plan_window_align_puts_hotplug_after_ram_at_that_alignment() {
        let hotplug = |r: &mut PlanRequest| {
            r.hotplug = Some(HotplugRequest {
                slots: 2,
                slot_size: 512 * MIB,
                node: 0,
                memory: RegionSpec::ram(GuestAddress(0), 0).with_hotplug(true),
            });
        };
        let mut r = request(Arch::X86_64, 4608 * MIB);
        hotplug(&mut r);
        let whole_gib = plan(&r).unwrap();
        let slots = |p: &Plan| -> Vec<u64> { p.slots.iter().map(|r| r.spec.base).collect() };
        assert_eq!(slots(&whole_gib), [6 * GIB, 6 * GIB + 512 * MIB]);
        r.window_align = Some(GIB);
        assert_eq!(plan(&r).unwrap().layout, whole_gib.layout);
        r.window_align = Some(128 * MIB);
        let p = plan(&r).unwrap();
        assert_eq!(slots(&p), [0x1_6000_0000, 0x1_8000_0000]);
        for bad in [0, 3, 0x1000, MIB, 3 * MIB, 2 * GIB, u64::MAX] {
            r.window_align = Some(bad);
            let e = plan(&r).unwrap_err();
            assert_eq!(e.item, PlanItem::Memory, "{bad:#x}: {e}");
            assert!(
                matches!(e.error, Error::InvalidLayout { ref reason }
                    if reason.contains("from 2 MiB")),
                "{bad:#x}: {e}"
            );
        }
        // From 2 MiB, DAX windows and slots of 2 MiB fit windows of their sizes, however
        // RAM ends.
        r.window_align = Some(2 * MIB);
        r.nodes[0].size = 3 * GIB + MIB;
        r.hotplug.as_mut().unwrap().slot_size = 2 * MIB;
        r.devices[0].dax_size = Some(2 * MIB);
        r.devices[1].dax_size = Some(6 * MIB);
        let p = plan(&r).unwrap();
        assert_eq!(slots(&p), [4 * GIB + 2 * MIB, 4 * GIB + 4 * MIB]);
        let dax: Vec<_> = p.devices.iter().filter_map(|d| d.dax).collect();
        assert_eq!(dax.len(), 2);
        assert_eq!(dax[0].start(), GuestAddress(4 * GIB + 6 * MIB));
    }
}
