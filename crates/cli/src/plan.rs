//! Planning: turns a [`VmSpec`] into the guest physical memory map — RAM per NUMA node, device
//! MMIO windows and interrupts, DAX windows, hotplug slots — and checks it with
//! `memvisor-space`. Nothing here depends on the host, so a plan prints the same everywhere.

use std::collections::HashMap;
use std::fmt;

use memvisor_resources::{AddressAllocator, AddressRange, AllocPolicy, IdAllocator, Request};
use memvisor_space::{
    AddressSpace, Backing, HugePageFallback, HugePageSize, HugePages, Layout, NumaBinding,
    NumaPolicy, RegionSpec, RegionType, WindowKind,
};
use serde::Serialize;
use vm_memory::GuestAddress;

use crate::error::{Problem, SpecError};
use crate::size::Size;
use crate::spec::{
    Arch, BackingKind, DEFAULT_MMIO_SIZE, Loc, MemoryOptions, PageKind, Policy, Source, VmSpec,
};

/// First and last interrupt number of the x86-64 IOAPIC (24 pins).
pub const X86_GSI_RANGE: (u32, u32) = (0, 23);
/// Legacy ISA interrupts on x86-64 (timer, keyboard, cascade, COM2, COM1): never given to
/// virtio devices.
pub const X86_LEGACY_GSIS: u32 = 5;
/// The x86-64 serial port's default interrupt (COM1).
pub const X86_SERIAL_IRQ: u32 = 4;
/// The x86-64 serial port's default I/O port base (COM1).
pub const X86_SERIAL_PORT: u64 = 0x3f8;
/// Size of the serial port's I/O range (a 16550 UART: 8 registers).
pub const SERIAL_PORT_LEN: u64 = 8;
/// Interrupt numbers given to AArch64 devices: GIC shared peripheral interrupts (SPIs) start
/// at INTID 32; the range ends at 127 (as in Firecracker).
pub const AARCH64_SPI_RANGE: (u32, u32) = (32, 127);
/// Alignment of DAX windows.
pub const DAX_ALIGN: u64 = 2 << 20;

/// An inclusive address range in the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Span {
    /// First address.
    pub start: u64,
    /// Last address (inclusive).
    pub end: u64,
    /// Size in bytes.
    pub size: u64,
}

impl Span {
    fn from_range(r: AddressRange) -> Self {
        Self {
            start: r.start(),
            end: r.end(),
            size: r.end() - r.start() + 1,
        }
    }

    fn new(start: u64, size: u64) -> Self {
        Self {
            start,
            end: start + (size - 1),
            size,
        }
    }
}

/// How a map entry gets host memory, as planned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackingPlan {
    /// `none`, `anonymous`, `anonymous-shared`, `memfd` or `hugetlbfs`.
    pub kind: &'static str,
    /// The hugetlbfs mount, for `hugetlbfs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `none`, `transparent`, `2MiB` or `1GiB`.
    pub pages: &'static str,
    /// Whether explicit huge pages fall back to transparent ones.
    pub fallback_transparent: bool,
    /// Host NUMA policy, when bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<&'static str>,
    /// Host NUMA nodes, when bound.
    pub host_nodes: Vec<u32>,
    /// Prefault threads (0: none).
    pub prefault_threads: usize,
    /// Whether the memory is kept out of child processes.
    pub dontfork: bool,
}

impl BackingPlan {
    fn none() -> Self {
        Self {
            kind: "none",
            path: None,
            pages: "none",
            fallback_transparent: false,
            policy: None,
            host_nodes: Vec::new(),
            prefault_threads: 0,
            dontfork: false,
        }
    }

    fn shared() -> Self {
        Self {
            kind: "anonymous-shared",
            ..Self::none()
        }
    }

    fn ram(m: &MemoryOptions, host_nodes: &[u32], policy: Policy) -> Self {
        Self {
            kind: m.backing.name(),
            path: match &m.backing {
                BackingKind::Hugetlbfs(p) => Some(p.clone()),
                _ => None,
            },
            pages: m.pages.name(),
            fallback_transparent: m.fallback_transparent,
            policy: (!host_nodes.is_empty()).then(|| policy.name()),
            host_nodes: host_nodes.to_vec(),
            prefault_threads: m.prefault_threads,
            dontfork: m.dontfork,
        }
    }
}

impl fmt::Display for BackingPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == "none" {
            return f.write_str("-");
        }
        f.write_str(self.kind)?;
        if let Some(p) = &self.path {
            write!(f, " {p}")?;
        }
        match self.pages {
            "none" => {}
            "transparent" => f.write_str(", THP")?,
            other => write!(
                f,
                ", {} pages",
                other.replace("MiB", " MiB").replace("GiB", " GiB")
            )?,
        }
        if self.fallback_transparent {
            f.write_str(" (or THP)")?;
        }
        if let Some(policy) = self.policy {
            let nodes: Vec<String> = self.host_nodes.iter().map(u32::to_string).collect();
            write!(f, ", {policy} host {}", nodes.join(","))?;
        }
        if self.prefault_threads > 0 {
            write!(f, ", prefault x{}", self.prefault_threads)?;
        }
        if self.dontfork {
            f.write_str(", dontfork")?;
        }
        Ok(())
    }
}

/// One entry of the guest physical memory map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MapEntry {
    /// The addresses.
    #[serde(flatten)]
    pub span: Span,
    /// `RAM`, `device`, `DAX`, `reserved` or `hotplug` (an empty hotplug slot).
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// Who uses it.
    pub owner: String,
    /// The guest NUMA node, for memory.
    pub node: Option<u32>,
    /// Its host memory.
    pub backing: BackingPlan,
}

/// A layout window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WindowEntry {
    /// `RAM`, `device`, `DAX`, `hotplug`, `firmware` or `reserved`.
    pub kind: String,
    /// The addresses.
    #[serde(flatten)]
    pub span: Span,
}

/// A device: its MMIO window (or I/O ports), interrupt and DAX window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceEntry {
    /// Its name.
    pub name: String,
    /// Its type (`serial`, `virtio-net`, ...).
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// Its MMIO window.
    pub mmio: Option<Span>,
    /// Its I/O port range (x86-64 serial).
    pub pio: Option<Span>,
    /// Its interrupt: a GSI (x86-64) or GIC SPI INTID (AArch64).
    pub irq: u32,
    /// Its DAX window.
    pub dax: Option<Span>,
}

/// A hotplug slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlotEntry {
    /// Its number.
    pub index: u32,
    /// Its addresses.
    #[serde(flatten)]
    pub span: Span,
    /// The guest NUMA node of its memory.
    pub node: u32,
    /// Its host memory once plugged.
    pub backing: BackingPlan,
}

/// A guest NUMA node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeEntry {
    /// Its number.
    pub node: u32,
    /// Its boot RAM.
    pub size: u64,
    /// The host nodes it is bound to.
    pub host_nodes: Vec<u32>,
}

/// A region of the plan with the name it is reported under.
#[derive(Clone, Debug)]
pub struct PlannedRegion {
    /// What `memvisor-space` gets.
    pub spec: RegionSpec,
    /// Its owner (`RAM node0`, `eth0`, ...).
    pub owner: String,
}

/// The planned guest physical address space.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// The spec's name.
    pub name: String,
    /// The architecture.
    pub arch: Arch,
    /// Guest physical address bits.
    pub phys_bits: u32,
    /// The highest guest physical address.
    pub address_limit: u64,
    /// Boot RAM.
    pub ram: u64,
    /// Guest NUMA nodes.
    pub nodes: Vec<NodeEntry>,
    /// Layout windows, by address.
    pub windows: Vec<WindowEntry>,
    /// The memory map, by address: regions and empty hotplug slots.
    pub map: Vec<MapEntry>,
    /// Devices: the serial port first, then the virtio-mmio devices in spec order.
    pub devices: Vec<DeviceEntry>,
    /// Hotplug slots, by address.
    pub hotplug: Vec<SlotEntry>,
    /// The layout.
    #[serde(skip)]
    pub layout: Layout,
    /// Boot regions (RAM, devices, DAX, reserved), by address.
    #[serde(skip)]
    pub regions: Vec<PlannedRegion>,
    /// Hotplug slot regions, by address.
    #[serde(skip)]
    pub slots: Vec<PlannedRegion>,
}

/// Interrupt bookkeeping with owner names, over an [`IdAllocator`].
struct Irqs {
    ids: IdAllocator,
    owners: HashMap<u32, String>,
    arch: Arch,
}

impl Irqs {
    fn new(arch: Arch) -> Result<Self, Problem> {
        let (first, last) = match arch {
            Arch::X86_64 => X86_GSI_RANGE,
            Arch::Aarch64 => AARCH64_SPI_RANGE,
        };
        Ok(Self {
            ids: IdAllocator::new(first, last).map_err(|e| Problem::Invalid(e.to_string()))?,
            owners: HashMap::new(),
            arch,
        })
    }

    fn name(&self) -> &'static str {
        match self.arch {
            Arch::X86_64 => "GSI",
            Arch::Aarch64 => "SPI",
        }
    }

    fn take(&mut self, irq: u32, owner: &str) -> Result<u32, Problem> {
        match self.ids.allocate_id_at(irq) {
            Ok(irq) => {
                self.owners.insert(irq, owner.to_owned());
                Ok(irq)
            }
            Err(memvisor_resources::Error::IdAlreadyAllocated(_)) => Err(Problem::Overlap {
                what: format!("{} {irq}", self.name()),
                other: format!(
                    "the one of {}",
                    self.owners
                        .get(&irq)
                        .map_or("another device", String::as_str)
                ),
            }),
            Err(_) => Err(Problem::Invalid(format!(
                "{} {irq} is outside {}..={}",
                self.name(),
                self.ids.first(),
                self.ids.last()
            ))),
        }
    }

    fn next(&mut self, owner: &str) -> Result<u32, Problem> {
        let irq = self.ids.allocate_id().map_err(|_| {
            Problem::Invalid(format!(
                "no free {} is left ({}..={} are all taken)",
                self.name(),
                self.ids.first(),
                self.ids.last()
            ))
        })?;
        self.owners.insert(irq, owner.to_owned());
        Ok(irq)
    }
}

/// Places ranges in the windows of one kind, each range tagged with its owner.
struct Windows {
    what: &'static str,
    allocs: Vec<AddressAllocator<String>>,
}

impl Windows {
    fn new(layout: &Layout, kind: WindowKind, what: &'static str) -> Self {
        let allocs = layout
            .windows_of(kind)
            .filter_map(|w| AddressRange::from_start_and_size(w.start().0, w.size()).ok())
            .map(AddressAllocator::new)
            .collect();
        Self { what, allocs }
    }

    fn describe(&self) -> String {
        let largest = self
            .allocs
            .iter()
            .flat_map(|a| a.free_ranges())
            .map(|r| r.size_u128())
            .max()
            .unwrap_or(0);
        let spans: Vec<String> = self
            .allocs
            .iter()
            .map(|a| format!("{:#x}-{:#x}", a.space().start(), a.space().end()))
            .collect();
        format!(
            "the {} ({}; largest free range {})",
            self.what,
            if spans.is_empty() {
                "none".to_owned()
            } else {
                spans.join(", ")
            },
            Size(u64::try_from(largest).unwrap_or(u64::MAX))
        )
    }

    fn place(&mut self, size: u64, align: u64, owner: &str) -> Result<AddressRange, Problem> {
        let request = Request::new(size, align, AllocPolicy::FirstMatch)
            .map_err(|e| Problem::Invalid(e.to_string()))?;
        for a in &mut self.allocs {
            if let Ok(r) = a.allocate_with(&request, owner.to_owned()) {
                return Ok(r);
            }
        }
        Err(Problem::TooBig {
            what: format!("{owner}'s window"),
            size: Size(size),
            window: self.describe(),
        })
    }

    fn fix(&mut self, start: u64, size: u64, owner: &str) -> Result<AddressRange, Problem> {
        let range = AddressRange::from_start_and_size(start, size)
            .map_err(|e| Problem::Invalid(e.to_string()))?;
        let describe = self.describe();
        let Some(a) = self
            .allocs
            .iter_mut()
            .find(|a| a.space().contains_range(&range))
        else {
            return Err(Problem::TooBig {
                what: format!("{owner}'s window at {start:#x}"),
                size: Size(size),
                window: describe,
            });
        };
        match a.reserve_with(range, owner.to_owned()) {
            Ok(()) => Ok(range),
            Err(memvisor_resources::Error::Overlap { existing, .. }) => {
                let other = a
                    .allocation_containing(existing.start())
                    .map_or_else(|| "another device".to_owned(), |x| x.tag.clone());
                Err(Problem::Overlap {
                    what: format!("{owner}'s window {range}"),
                    other: format!("{other}'s window {existing}"),
                })
            }
            Err(e) => Err(Problem::Invalid(e.to_string())),
        }
    }
}

fn ram_spec(
    base: u64,
    size: u64,
    m: &MemoryOptions,
    host_nodes: &[u32],
    policy: Policy,
) -> RegionSpec {
    let backing = match &m.backing {
        BackingKind::Anonymous => Backing::AnonymousPrivate,
        BackingKind::AnonymousShared => Backing::AnonymousShared,
        BackingKind::Memfd => Backing::Memfd,
        BackingKind::Hugetlbfs(path) => Backing::Hugetlbfs(path.into()),
    };
    let pages = match m.pages {
        PageKind::Base => HugePages::None,
        PageKind::Transparent => HugePages::Transparent,
        PageKind::Huge2M => HugePages::Explicit(HugePageSize::Size2M),
        PageKind::Huge1G => HugePages::Explicit(HugePageSize::Size1G),
    };
    let mut spec = RegionSpec::ram(GuestAddress(base), size)
        .backing(backing)
        .huge_pages(pages)
        .prefault(m.prefault_threads)
        .dontfork(m.dontfork);
    if m.fallback_transparent {
        spec = spec.fallback(HugePageFallback::Transparent);
    }
    if !host_nodes.is_empty() {
        let policy = match policy {
            Policy::Bind => NumaPolicy::Bind,
            Policy::Preferred => NumaPolicy::Preferred,
            Policy::Interleave => NumaPolicy::Interleave,
        };
        spec = spec.numa(NumaBinding::new(policy, host_nodes.iter().copied()));
    }
    spec
}

fn err(src: Source<'_>, loc: &Loc, field: Option<&str>, problem: Problem) -> SpecError {
    let path = field.map_or_else(|| loc.path.clone(), |f| loc.field(f));
    src.error(path, loc.span.clone(), problem)
}

/// Plans the address space of `spec`. `src` is the spec's text, to point errors at lines.
///
/// # Errors
/// A [`SpecError`] for what does not fit: a device window that overlaps another or is too big
/// for (or outside) the device windows, an interrupt that is taken or out of range, a hotplug
/// window or RAM past the address limit, or anything `memvisor-space` refuses.
///
/// ```
/// use memvisor::plan::plan;
/// use memvisor::spec::{DEFAULT_ORIGIN, DEFAULT_SPEC, Source, parse};
///
/// let src = Source { origin: DEFAULT_ORIGIN, text: DEFAULT_SPEC };
/// let plan = plan(&parse(src)?, src)?;
/// let net = plan.devices.iter().find(|d| d.name == "eth0").unwrap();
/// assert_eq!(net.mmio.unwrap().start, 0xc000_2000);
/// assert_eq!(net.irq, 7);
/// assert_eq!(plan.hotplug.len(), 4);
/// # Ok::<(), memvisor::SpecError>(())
/// ```
pub fn plan(spec: &VmSpec, src: Source<'_>) -> Result<Plan, SpecError> {
    let ram = spec.ram();
    let hotplug_bytes = match &spec.hotplug {
        Some(h) => u64::from(h.slots).checked_mul(h.slot_size).ok_or_else(|| {
            err(
                src,
                &h.loc,
                None,
                Problem::Invalid("slots * slot_size overflows".into()),
            )
        })?,
        None => 0,
    };
    let dax_bytes: u64 = spec
        .devices
        .iter()
        .filter_map(|d| d.dax_size)
        .fold(0u64, u64::saturating_add);
    let builder = match spec.arch {
        Arch::X86_64 => Layout::x86_64(),
        Arch::Aarch64 => Layout::aarch64(),
    };
    let layout = builder
        .ram(ram)
        .hotplug(hotplug_bytes)
        .dax(dax_bytes)
        .phys_bits(spec.phys_bits)
        .build()
        .map_err(|e| {
            src.error(
                "phys_bits",
                None,
                Problem::TooBig {
                    what: "the layout (RAM, hotplug and DAX windows)".into(),
                    size: Size(ram.saturating_add(hotplug_bytes).saturating_add(dax_bytes)),
                    window: format!(
                        "a {}-bit guest physical address space ({e})",
                        spec.phys_bits
                    ),
                },
            )
        })?;

    let mut regions: Vec<(PlannedRegion, Loc)> = Vec::new();
    let mut map = Vec::new();

    // RAM, node by node, over the RAM windows.
    let ranges = layout
        .ram_ranges(ram)
        .map_err(|e| src.error("memory.size", None, Problem::Space(e)))?;
    let mut ranges = ranges.into_iter().map(|(b, s)| (b.0, s));
    let mut current = ranges.next();
    let mut nodes = Vec::new();
    for (i, node) in spec.nodes.iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        nodes.push(NodeEntry {
            node: index,
            size: node.size,
            host_nodes: node.host_nodes.clone(),
        });
        let mut left = node.size;
        while left > 0 {
            let Some((base, avail)) = current else {
                break;
            };
            let take = left.min(avail);
            let owner = format!("RAM node{index}");
            let rs = ram_spec(base, take, &spec.memory, &node.host_nodes, node.policy);
            map.push(MapEntry {
                span: Span::new(base, take),
                ty: "RAM",
                owner: owner.clone(),
                node: Some(index),
                backing: BackingPlan::ram(&spec.memory, &node.host_nodes, node.policy),
            });
            regions.push((PlannedRegion { spec: rs, owner }, node.loc.clone()));
            left -= take;
            current = if take == avail {
                ranges.next()
            } else {
                Some((base + take, avail - take))
            };
        }
    }

    // Reserved windows: interrupt controllers.
    for w in layout.windows_of(WindowKind::Reserved) {
        let owner = match spec.arch {
            Arch::X86_64 => "IOAPIC, local APIC",
            Arch::Aarch64 => "GIC",
        };
        map.push(MapEntry {
            span: Span::new(w.start().0, w.size()),
            ty: "reserved",
            owner: owner.to_owned(),
            node: None,
            backing: BackingPlan::none(),
        });
        regions.push((
            PlannedRegion {
                spec: RegionSpec::new(RegionType::Reserved, w.start(), w.size()),
                owner: owner.to_owned(),
            },
            Loc::default(),
        ));
    }

    let (serial_irq, device_irqs) = assign_irqs(spec, src)?;
    let (serial_mmio, serial_pio, device_mmio) = place_mmio(spec, src, &layout)?;

    // DAX windows.
    let mut dax = Windows::new(&layout, WindowKind::Dax, "DAX windows");
    let mut device_dax: Vec<Option<AddressRange>> = vec![None; spec.devices.len()];
    for (d, slot) in spec.devices.iter().zip(&mut device_dax) {
        if let Some(size) = d.dax_size {
            *slot = Some(
                dax.place(size, DAX_ALIGN, &d.name)
                    .map_err(|p| err(src, &d.loc, Some("dax_size"), p))?,
            );
        }
    }

    let mut devices = Vec::new();
    if let Some(s) = &spec.serial {
        let irq = serial_irq.unwrap_or_default();
        devices.push(DeviceEntry {
            name: "serial".to_owned(),
            ty: "serial",
            mmio: serial_mmio.map(Span::from_range),
            pio: serial_pio,
            irq,
            dax: None,
        });
        if let Some(r) = serial_mmio {
            map.push(MapEntry {
                span: Span::from_range(r),
                ty: "device",
                owner: "serial".to_owned(),
                node: None,
                backing: BackingPlan::none(),
            });
            regions.push((
                PlannedRegion {
                    spec: RegionSpec::new(
                        RegionType::Device,
                        GuestAddress(r.start()),
                        Span::from_range(r).size,
                    ),
                    owner: "serial".to_owned(),
                },
                s.loc.clone(),
            ));
        }
    }
    for (i, d) in spec.devices.iter().enumerate() {
        let mmio_range = Some(Span::from_range(device_mmio[i]));
        let dax_range = device_dax[i].map(Span::from_range);
        if let Some(r) = mmio_range {
            map.push(MapEntry {
                span: r,
                ty: "device",
                owner: d.name.clone(),
                node: None,
                backing: BackingPlan::none(),
            });
            regions.push((
                PlannedRegion {
                    spec: RegionSpec::new(RegionType::Device, GuestAddress(r.start), r.size),
                    owner: d.name.clone(),
                },
                d.loc.clone(),
            ));
        }
        if let Some(r) = dax_range {
            map.push(MapEntry {
                span: r,
                ty: "DAX",
                owner: format!("{} DAX", d.name),
                node: None,
                backing: BackingPlan::shared(),
            });
            regions.push((
                PlannedRegion {
                    spec: RegionSpec::new(RegionType::Dax, GuestAddress(r.start), r.size),
                    owner: format!("{} DAX", d.name),
                },
                d.loc.clone(),
            ));
        }
        devices.push(DeviceEntry {
            name: d.name.clone(),
            ty: d.ty.name(),
            mmio: mmio_range,
            pio: None,
            irq: device_irqs[i],
            dax: dax_range,
        });
    }

    // Hotplug slots.
    let mut hotplug = Vec::new();
    let mut slots = Vec::new();
    if let Some(h) = &spec.hotplug {
        let node = spec.nodes.get(h.node as usize);
        let (host_nodes, policy) =
            node.map_or((&[][..], Policy::Bind), |n| (&n.host_nodes[..], n.policy));
        let cap = spec
            .memory
            .pages
            .explicit_bytes()
            .unwrap_or(2 << 20)
            .max(2 << 20);
        let align = (1u64 << h.slot_size.trailing_zeros()).min(cap);
        let mut window = Windows::new(&layout, WindowKind::Hotplug, "hotplug window");
        for index in 0..h.slots {
            let owner = format!("hotplug slot {index}");
            let r = window
                .place(h.slot_size, align, &owner)
                .map_err(|p| err(src, &h.loc, Some("slot_size"), p))?;
            let span = Span::from_range(r);
            let backing = BackingPlan::ram(&spec.memory, host_nodes, policy);
            map.push(MapEntry {
                span,
                ty: "hotplug",
                owner: format!("{owner} (empty)"),
                node: Some(h.node),
                backing: backing.clone(),
            });
            hotplug.push(SlotEntry {
                index,
                span,
                node: h.node,
                backing,
            });
            let rs =
                ram_spec(span.start, span.size, &spec.memory, host_nodes, policy).hotplug(true);
            rs.validate()
                .and_then(|()| layout.check(&rs))
                .map_err(|e| err(src, &h.loc, Some("slot_size"), Problem::Space(e)))?;
            slots.push(PlannedRegion { spec: rs, owner });
        }
    }

    // The library's own check of the whole map.
    if let Err(e) = AddressSpace::plan(layout.clone(), regions.iter().map(|(r, _)| r.spec.clone()))
    {
        let base = space_error_base(&e);
        let loc = base
            .and_then(|b| regions.iter().find(|(r, _)| r.spec.base().0 == b))
            .map(|(_, loc)| loc.clone())
            .unwrap_or_default();
        let path = if loc.path.is_empty() {
            "(spec)".to_owned()
        } else {
            loc.path.clone()
        };
        return Err(src.error(path, loc.span, Problem::Space(e)));
    }

    map.sort_by_key(|m| m.span.start);
    regions.sort_by_key(|(r, _)| r.spec.base().0);
    let windows = layout
        .windows()
        .iter()
        .map(|w| WindowEntry {
            kind: w.kind().to_string(),
            span: Span::new(w.start().0, w.size()),
        })
        .collect();
    Ok(Plan {
        name: spec.name.clone(),
        arch: spec.arch,
        phys_bits: spec.phys_bits,
        address_limit: layout.limit().0,
        ram,
        nodes,
        windows,
        map,
        devices,
        hotplug,
        layout,
        regions: regions.into_iter().map(|(r, _)| r).collect(),
        slots,
    })
}

/// Interrupts: fixed ones first, then the serial port, then the devices in order. Returns the
/// serial port's and each device's.
fn assign_irqs(spec: &VmSpec, src: Source<'_>) -> Result<(Option<u32>, Vec<u32>), SpecError> {
    let mut irqs = Irqs::new(spec.arch).map_err(|p| src.error("arch", None, p))?;
    let mut serial_irq = None;
    if let Some(s) = &spec.serial {
        let fixed = s.irq.or(match spec.arch {
            Arch::X86_64 => Some(X86_SERIAL_IRQ),
            Arch::Aarch64 => None,
        });
        if let Some(irq) = fixed {
            serial_irq = Some(
                irqs.take(irq, "serial")
                    .map_err(|p| err(src, &s.loc, Some("irq"), p))?,
            );
        }
    }
    if spec.arch == Arch::X86_64 {
        for pin in 0..X86_LEGACY_GSIS {
            if !irqs.ids.is_allocated(pin) {
                irqs.take(pin, "legacy ISA")
                    .map_err(|p| src.error("serial.irq", None, p))?;
            }
        }
    }
    let mut device_irqs: Vec<Option<u32>> = vec![None; spec.devices.len()];
    for (d, slot) in spec.devices.iter().zip(&mut device_irqs) {
        if let Some(irq) = d.irq {
            *slot = Some(
                irqs.take(irq, &d.name)
                    .map_err(|p| err(src, &d.loc, Some("irq"), p))?,
            );
        }
    }
    if let Some(s) = &spec.serial
        && serial_irq.is_none()
    {
        serial_irq = Some(
            irqs.next("serial")
                .map_err(|p| err(src, &s.loc, Some("irq"), p))?,
        );
    }
    for (d, slot) in spec.devices.iter().zip(&mut device_irqs) {
        if slot.is_none() {
            *slot = Some(
                irqs.next(&d.name)
                    .map_err(|p| err(src, &d.loc, Some("irq"), p))?,
            );
        }
    }

    Ok((serial_irq, device_irqs.into_iter().flatten().collect()))
}

/// MMIO windows (and the x86-64 serial port's I/O ports): fixed addresses first, then first
/// fit in spec order. Returns the serial port's window or ports and each device's window.
#[allow(clippy::type_complexity)]
fn place_mmio(
    spec: &VmSpec,
    src: Source<'_>,
    layout: &Layout,
) -> Result<(Option<AddressRange>, Option<Span>, Vec<AddressRange>), SpecError> {
    let mut mmio = Windows::new(layout, WindowKind::Device, "device windows");
    let mut serial_mmio = None;
    let mut serial_pio = None;
    if let Some(s) = &spec.serial {
        match spec.arch {
            Arch::X86_64 => {
                let mut ports = AddressAllocator::<String>::new(
                    AddressRange::new(0, 0xffff).unwrap_or(AddressRange::FULL),
                );
                let port = s.port.unwrap_or(X86_SERIAL_PORT);
                let range = AddressRange::from_start_and_size(port, SERIAL_PORT_LEN)
                    .map_err(|e| err(src, &s.loc, Some("port"), Problem::Invalid(e.to_string())))?;
                ports
                    .reserve_with(range, "serial".to_owned())
                    .map_err(|e| err(src, &s.loc, Some("port"), Problem::Invalid(e.to_string())))?;
                serial_pio = Some(Span::from_range(range));
            }
            Arch::Aarch64 => {
                if let Some(a) = s.address {
                    serial_mmio = Some(
                        mmio.fix(a, DEFAULT_MMIO_SIZE, "serial")
                            .map_err(|p| err(src, &s.loc, Some("address"), p))?,
                    );
                }
            }
        }
    }
    let mut device_mmio: Vec<Option<AddressRange>> = vec![None; spec.devices.len()];
    for (d, slot) in spec.devices.iter().zip(&mut device_mmio) {
        if let Some(a) = d.address {
            *slot = Some(
                mmio.fix(a, d.mmio_size, &d.name)
                    .map_err(|p| err(src, &d.loc, Some("address"), p))?,
            );
        }
    }
    if let Some(s) = &spec.serial
        && spec.arch == Arch::Aarch64
        && serial_mmio.is_none()
    {
        serial_mmio = Some(
            mmio.place(DEFAULT_MMIO_SIZE, DEFAULT_MMIO_SIZE, "serial")
                .map_err(|p| err(src, &s.loc, None, p))?,
        );
    }
    for (d, slot) in spec.devices.iter().zip(&mut device_mmio) {
        if slot.is_none() {
            *slot = Some(
                mmio.place(d.mmio_size, d.mmio_size, &d.name)
                    .map_err(|p| err(src, &d.loc, Some("mmio_size"), p))?,
            );
        }
    }

    Ok((
        serial_mmio,
        serial_pio,
        device_mmio.into_iter().flatten().collect(),
    ))
}

/// The base address a `memvisor-space` error is about, to find the spec item behind it.
fn space_error_base(e: &memvisor_space::Error) -> Option<u64> {
    use memvisor_space::Error as E;
    match e {
        E::ZeroSize { base }
        | E::Overflow { base, .. }
        | E::Misaligned { base, .. }
        | E::Overlap { base, .. }
        | E::OutsideWindow { base, .. }
        | E::AddressLimit { base, .. }
        | E::InvalidSpec { base, .. } => Some(*base),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse;

    fn plan_of(text: &str) -> Result<Plan, SpecError> {
        let src = Source {
            origin: "t.toml",
            text,
        };
        plan(&parse(src)?, src)
    }

    #[test]
    fn plan_small_vm_places_devices_from_hole_start() {
        let p = plan_of(
            "[memory]\nsize = \"256MiB\"\n[serial]\n[[device]]\ntype = \"virtio-net\"\n\
             [[device]]\ntype = \"virtio-blk\"\nmmio_size = \"64KiB\"\n",
        )
        .unwrap();
        assert_eq!(p.devices[0].pio.unwrap().start, 0x3f8);
        assert_eq!(p.devices[0].irq, 4);
        assert_eq!(p.devices[1].mmio.unwrap().start, 0xc000_0000);
        assert_eq!(p.devices[1].irq, 5);
        assert_eq!(p.devices[2].mmio.unwrap().start, 0xc001_0000);
        assert_eq!(p.devices[2].irq, 6);
    }

    #[test]
    fn plan_ram_over_hole_splits_node() {
        let p = plan_of("[memory]\nsize = \"4GiB\"\n").unwrap();
        let ram: Vec<_> = p
            .map
            .iter()
            .filter(|m| m.ty == "RAM")
            .map(|m| (m.span.start, m.span.size))
            .collect();
        assert_eq!(ram, [(0, 3 << 30), (4 << 30, 1 << 30)]);
    }

    #[test]
    fn plan_fixed_irq_conflict_names_owner() {
        let e = plan_of(
            "[memory]\nsize = \"64MiB\"\n[[device]]\ntype = \"virtio-net\"\nirq = 9\n\
             [[device]]\ntype = \"virtio-blk\"\nirq = 9\n",
        )
        .unwrap_err();
        assert_eq!(e.field, "device[1].irq");
        assert_eq!(e.problem.to_string(), "GSI 9 overlaps the one of net0");
    }

    #[test]
    fn plan_legacy_irq_is_refused() {
        let e = plan_of("[memory]\nsize = \"64MiB\"\n[[device]]\ntype = \"virtio-net\"\nirq = 1\n")
            .unwrap_err();
        assert_eq!(
            e.problem.to_string(),
            "GSI 1 overlaps the one of legacy ISA"
        );
    }

    #[test]
    fn plan_too_many_devices_runs_out_of_gsis() {
        let text = format!(
            "[memory]\nsize = \"64MiB\"\n{}",
            "[[device]]\ntype = \"virtio-rng\"\n".repeat(20)
        );
        let e = plan_of(&text).unwrap_err();
        assert_eq!(e.field, "device[19].irq");
        assert_eq!(
            e.problem.to_string(),
            "no free GSI is left (0..=23 are all taken)"
        );
    }
}
