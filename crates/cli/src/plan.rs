//! Planning: turns a [`VmSpec`] into the guest physical memory map with `memvisor-space`'s
//! planner ([`memvisor_space::plan::plan`]), points its errors at the spec, and shapes the
//! result for rendering. Nothing here depends on the host, so a plan prints the same
//! everywhere.

use std::fmt;

pub use memvisor_space::plan::PlannedRegion;
use memvisor_space::plan::{
    DeviceRequest, HotplugRequest, NodeRequest, PlanError, PlanItem, PlanRequest, SerialRequest,
};
use memvisor_space::{
    Backing, Error as SpaceError, GuestRange, HugePageFallback, HugePageSize, HugePages, Layout,
    NumaBinding, NumaPolicy, Platform, RegionSpec, RegionType, WindowKind,
};
use serde::Serialize;
use vm_memory::GuestAddress;

use crate::error::{Problem, SpecError};
use crate::size::Size;
use crate::spec::{Arch, BackingKind, Loc, MemoryOptions, PageKind, Policy, Source, VmSpec};

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
    fn from_range(r: GuestRange) -> Self {
        Self {
            start: r.start().0,
            end: r.last().0,
            size: r.size().unwrap_or(u64::MAX),
        }
    }

    /// `start` and `size` are a layout window's or a planned region's, which
    /// `memvisor-space` keeps non-empty and ending at most at `u64::MAX`.
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

/// The planned guest physical address space.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// The spec's name.
    pub name: String,
    /// The architecture.
    #[serde(serialize_with = "arch_name")]
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

fn arch_name<S: serde::Serializer>(arch: &Arch, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(arch.name())
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
        .with_backing(backing)
        .with_huge_pages(pages)
        .with_prefault_threads(m.prefault_threads)
        .with_dontfork(m.dontfork);
    if m.fallback_transparent || pages == HugePages::Transparent {
        spec = spec.with_fallback(HugePageFallback::Transparent);
    }
    if !host_nodes.is_empty() {
        let policy = match policy {
            Policy::Bind => NumaPolicy::Bind,
            Policy::Preferred => NumaPolicy::Preferred,
            Policy::Interleave => NumaPolicy::Interleave,
        };
        spec = spec.with_numa(NumaBinding::new(policy, host_nodes.iter().copied()));
    }
    spec
}

/// An error about `field` of the item at `loc` (the item itself for none), at the field's
/// value when it was written.
fn err(src: Source<'_>, loc: &Loc, field: Option<&str>, problem: Problem) -> SpecError {
    let path = field.map_or_else(|| loc.path.clone(), |f| loc.field(f));
    src.error(path, loc.span_of(field), problem)
}

/// Plans the address space of `spec`. `src` is the spec's text, to point errors at lines.
///
/// # Errors
/// A [`SpecError`] for what does not fit: a device window that overlaps another or is too big
/// for (or outside) the device windows, an interrupt that is taken or out of range, RAM, the
/// hotplug or DAX windows past the address limit, or anything `memvisor-space` refuses.
///
/// ```
/// use memvisor_cli::plan::plan;
/// use memvisor_cli::spec::{DEFAULT_ORIGIN, DEFAULT_SPEC, Source, parse};
///
/// let src = Source { origin: DEFAULT_ORIGIN, text: DEFAULT_SPEC };
/// let plan = plan(&parse(src)?, src)?;
/// let net = plan.devices.iter().find(|d| d.name == "eth0").unwrap();
/// assert_eq!(net.mmio.unwrap().start, 0xc000_2000);
/// assert_eq!(net.irq, 7);
/// assert_eq!(plan.hotplug.len(), 4);
/// # Ok::<(), memvisor_cli::SpecError>(())
/// ```
pub fn plan(spec: &VmSpec, src: Source<'_>) -> Result<Plan, SpecError> {
    if let Some(h) = &spec.hotplug
        && u64::from(h.slots).checked_mul(h.slot_size).is_none()
    {
        return Err(err(
            src,
            &h.loc,
            None,
            Problem::Invalid("slots * slot_size overflows".into()),
        ));
    }
    let request = request(spec);
    let planned = memvisor_space::plan::plan(&request).map_err(|e| locate(spec, src, e))?;

    let ram = spec.ram();
    let mut map = Vec::new();
    for r in &planned.regions {
        let span = Span::new(r.spec.base().0, r.spec.size());
        let (ty, backing) = match r.spec.ty() {
            RegionType::Ram => {
                let node = r.node.and_then(|n| spec.nodes.get(n as usize));
                let backing = node.map_or_else(BackingPlan::none, |n| {
                    BackingPlan::ram(&spec.memory, &n.host_nodes, n.policy)
                });
                ("RAM", backing)
            }
            RegionType::Dax => ("DAX", BackingPlan::shared()),
            RegionType::Device => ("device", BackingPlan::none()),
            RegionType::Firmware => ("firmware", BackingPlan::none()),
            RegionType::Reserved => ("reserved", BackingPlan::none()),
        };
        map.push(MapEntry {
            span,
            ty,
            owner: r.owner.clone(),
            node: r.node,
            backing,
        });
    }
    let mut hotplug = Vec::new();
    if let Some(h) = &spec.hotplug {
        let (host_nodes, policy) = spec
            .nodes
            .get(h.node as usize)
            .map_or((&[][..], Policy::Bind), |n| (&n.host_nodes[..], n.policy));
        for (index, s) in (0..).zip(&planned.slots) {
            let span = Span::new(s.spec.base().0, s.spec.size());
            let backing = BackingPlan::ram(&spec.memory, host_nodes, policy);
            map.push(MapEntry {
                span,
                ty: "hotplug",
                owner: format!("{} (empty)", s.owner),
                node: Some(h.node),
                backing: backing.clone(),
            });
            hotplug.push(SlotEntry {
                index,
                span,
                node: h.node,
                backing,
            });
        }
    }
    map.sort_by_key(|m| m.span.start);

    let mut devices = Vec::new();
    let types = spec
        .serial
        .as_ref()
        .map(|_| "serial")
        .into_iter()
        .chain(spec.devices.iter().map(|d| d.ty.name()));
    for (d, ty) in planned.devices.iter().zip(types) {
        devices.push(DeviceEntry {
            name: d.name.clone(),
            ty,
            mmio: d.mmio.map(Span::from_range),
            pio: d.ports.map(Span::from_range),
            irq: d.irq,
            dax: d.dax.map(Span::from_range),
        });
    }
    let nodes = (0..)
        .zip(&spec.nodes)
        .map(|(node, n)| NodeEntry {
            node,
            size: n.size,
            host_nodes: n.host_nodes.clone(),
        })
        .collect();
    let layout = planned.layout;
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
        regions: planned.regions,
        slots: planned.slots,
    })
}

/// The library's request for `spec`, in spec order.
fn request(spec: &VmSpec) -> PlanRequest {
    let platform = Platform::new(spec.arch);
    PlanRequest {
        platform,
        phys_bits: spec.phys_bits,
        nodes: spec
            .nodes
            .iter()
            .map(|n| NodeRequest {
                size: n.size,
                memory: ram_spec(0, 0, &spec.memory, &n.host_nodes, n.policy),
            })
            .collect(),
        serial: spec.serial.as_ref().map(|s| SerialRequest {
            irq: s.irq,
            port: s.port,
            address: s.address,
        }),
        devices: spec
            .devices
            .iter()
            .map(|d| DeviceRequest {
                name: d.name.clone(),
                mmio_size: d.mmio_size,
                address: d.address,
                irq: d.irq,
                dax_size: d.dax_size,
            })
            .collect(),
        hotplug: spec.hotplug.as_ref().map(|h| {
            let (host_nodes, policy) = spec
                .nodes
                .get(h.node as usize)
                .map_or((&[][..], Policy::Bind), |n| (&n.host_nodes[..], n.policy));
            HotplugRequest {
                slots: h.slots,
                slot_size: h.slot_size,
                node: h.node,
                memory: ram_spec(0, 0, &spec.memory, host_nodes, policy),
            }
        }),
        low_ram_limit: None,
        window_align: spec.window_align,
    }
}

/// Points a planner error at the spec item it is about, in this command's words.
fn locate(spec: &VmSpec, src: Source<'_>, e: PlanError) -> SpecError {
    let none = Loc::default();
    let serial = spec.serial.as_ref().map_or(&none, |s| &s.loc);
    let device = |i: usize| spec.devices.get(i).map_or(&none, |d| &d.loc);
    let hot = spec.hotplug.as_ref().map_or(&none, |h| &h.loc);
    let (loc, field): (&Loc, Option<&str>) = match e.item {
        PlanItem::PhysBits => return src.error("phys_bits", None, Problem::Space(e.error)),
        PlanItem::Memory | PlanItem::Hotplug
            if matches!(
                e.error,
                SpaceError::AddressLimit { .. }
                    | SpaceError::Overflow { .. }
                    | SpaceError::InvalidLayout { .. }
            ) =>
        {
            return layout_error(spec, src, e);
        }
        PlanItem::DeviceDaxSize(_) if matches!(e.error, SpaceError::AddressLimit { .. }) => {
            return layout_error(spec, src, e);
        }
        PlanItem::Memory => return memory_error(spec, src, Problem::Space(e.error)),
        PlanItem::Node(i) => (spec.nodes.get(i).map_or(&none, |n| &n.loc), None),
        PlanItem::Hotplug => (hot, Some("slots")),
        PlanItem::HotplugSlotSize => (hot, Some("slot_size")),
        PlanItem::HotplugNode => (hot, Some("node")),
        // The serial port's own region: about its address when it has a fixed one.
        PlanItem::Serial => (
            serial,
            spec.serial
                .as_ref()
                .and_then(|s| s.address)
                .map(|_| "address"),
        ),
        PlanItem::SerialIrq => (serial, Some("irq")),
        PlanItem::SerialPort => (serial, Some("port")),
        PlanItem::SerialAddress => (serial, Some("address")),
        PlanItem::Device(i) => (device(i), None),
        PlanItem::DeviceName(i) => (device(i), Some("name")),
        PlanItem::DeviceIrq(i) => (device(i), Some("irq")),
        PlanItem::DeviceAddress(i) => (device(i), Some("address")),
        PlanItem::DeviceMmioSize(i) => (device(i), Some("mmio_size")),
        PlanItem::DeviceDaxSize(i) => (device(i), Some("dax_size")),
        PlanItem::Platform => (&none, None),
    };
    let problem = problem(spec.arch, e.layout.as_deref(), e.error);
    if loc.path.is_empty() {
        return src.error("(spec)", loc.span.clone(), problem);
    }
    err(src, loc, field, problem)
}

/// A layout that does not fit the address bits, pointed at the part whose window did not
/// fit: boot RAM, the hotplug slots or the last DAX window.
fn layout_error(spec: &VmSpec, src: Source<'_>, e: PlanError) -> SpecError {
    let what = "the layout (RAM, hotplug and DAX windows)";
    let hotplug = spec
        .hotplug
        .as_ref()
        .map_or(Some(0), |h| u64::from(h.slots).checked_mul(h.slot_size));
    let total = spec
        .devices
        .iter()
        .filter_map(|d| d.dax_size)
        .try_fold(spec.ram(), u64::checked_add)
        .zip(hotplug)
        .and_then(|(sum, hotplug)| sum.checked_add(hotplug));
    let problem = match total {
        Some(size) => Problem::TooBig {
            what: what.into(),
            size: Size(size),
            window: format!(
                "a {}-bit guest physical address space ({})",
                spec.phys_bits, e.error
            ),
        },
        // No total to give: it does not fit in 64 bits.
        None => Problem::Invalid(format!(
            "{what} adds up to more than the 64-bit address space ({})",
            e.error
        )),
    };
    match e.item {
        PlanItem::Hotplug => match &spec.hotplug {
            Some(h) => err(src, &h.loc, Some("slot_size"), problem),
            None => src.error("phys_bits", None, problem),
        },
        PlanItem::DeviceDaxSize(i) => match spec.devices.get(i) {
            Some(d) => err(src, &d.loc, Some("dax_size"), problem),
            None => src.error("phys_bits", None, problem),
        },
        PlanItem::Memory => memory_error(spec, src, problem),
        _ => src.error("phys_bits", None, problem),
    }
}

/// An error about the boot RAM as a whole, pointed at where its size was written:
/// `memory.size` when it makes the one node, else the last `[[numa]]` entry (the nodes up to
/// it add up to the RAM).
fn memory_error(spec: &VmSpec, src: Source<'_>, problem: Problem) -> SpecError {
    match spec.nodes.last() {
        Some(n) if n.loc.path == "memory.size" => {
            src.error("memory.size", n.loc.span.clone(), problem)
        }
        Some(n) if !n.loc.path.is_empty() => err(src, &n.loc, Some("size"), problem),
        _ => src.error("memory", None, problem),
    }
}

/// An interrupt number as what it is on `arch`: a GSI on x86_64; on AArch64 the GIC INTID a
/// spec's `irq` is, with its SPI number (the INTID minus 32) when it is an SPI's.
fn irq_text(arch: Arch, irq: u32) -> String {
    match arch {
        Arch::X86_64 => format!("GSI {irq}"),
        Arch::Aarch64 => match irq.checked_sub(crate::render::SPI_INTID_BASE) {
            Some(spi) => format!("INTID {irq} (SPI {spi})"),
            None => format!("INTID {irq}"),
        },
    }
}

/// The command's wording of a planner error. The planner names an AArch64 interrupt by its
/// INTID; the command adds the SPI number and says what SPIs the platform has.
fn problem(arch: Arch, layout: Option<&Layout>, e: SpaceError) -> Problem {
    let windows = |kind: WindowKind, largest: u64| {
        let what = match kind {
            WindowKind::Device => "device windows",
            WindowKind::Dax => "DAX windows",
            WindowKind::Hotplug => "hotplug window",
            _ => "windows",
        };
        let spans: Vec<String> = layout
            .iter()
            .flat_map(|l| l.windows_of(kind))
            .map(|w| format!("{:#x}-{:#x}", w.start().0, w.last_addr().0))
            .collect();
        format!(
            "the {what} ({}; largest free range {})",
            if spans.is_empty() {
                "none".to_owned()
            } else {
                spans.join(", ")
            },
            Size(largest)
        )
    };
    match e {
        SpaceError::Taken {
            owner,
            range,
            other,
            other_range,
        } => Problem::Overlap {
            what: format!("{owner}'s window {range}"),
            other: format!("{other}'s window {other_range}"),
        },
        SpaceError::NoRoom {
            owner,
            window,
            size,
            largest_free,
            ..
        } => Problem::TooBig {
            what: format!("{owner}'s window"),
            size: Size(size),
            window: windows(window, largest_free),
        },
        SpaceError::NotInWindow {
            owner,
            range,
            window,
            largest_free,
        } => Problem::TooBig {
            what: format!("{owner}'s window at {:#x}", range.start().0),
            size: Size(range.size().unwrap_or(u64::MAX)),
            window: windows(window, largest_free),
        },
        SpaceError::IrqTaken { irq, other, .. } => Problem::Overlap {
            what: irq_text(arch, irq),
            other: format!("the one of {other}"),
        },
        SpaceError::NoFreeIrq {
            name, first, last, ..
        } => Problem::Invalid(match arch {
            Arch::X86_64 => format!("no free {name} is left ({first}..={last} are all taken)"),
            Arch::Aarch64 => {
                format!("no free SPI is left (INTIDs {first}..={last} are all taken)")
            }
        }),
        SpaceError::IrqOutOfRange {
            irq, first, last, ..
        } => Problem::Invalid(match arch {
            Arch::X86_64 => format!("{} is outside {first}..={last}", irq_text(arch, irq)),
            Arch::Aarch64 => {
                format!("INTID {irq} is not an SPI (SPIs are INTIDs {first}..={last})")
            }
        }),
        e @ (SpaceError::NoIoPorts | SpaceError::PortsOutOfRange { .. }) => {
            Problem::Invalid(e.to_string())
        }
        e => Problem::Space(e),
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
    fn plan_layout_too_big_names_the_part_that_did_not_fit() {
        let e = plan_of(
            "phys_bits = 32\n[memory]\nsize = \"64MiB\"\n[[device]]\ntype = \"virtio-pmem\"\n\
             dax_size = \"2GiB\"\n",
        )
        .unwrap_err();
        assert_eq!(e.field, "device[0].dax_size");
        assert!(
            e.problem
                .to_string()
                .starts_with("the layout (RAM, hotplug and DAX windows) of 2112 MiB"),
            "{}",
            e.problem
        );
        let e = plan_of("phys_bits = 32\n[memory]\nsize = \"8GiB\"\n").unwrap_err();
        assert_eq!(e.field, "memory.size");
    }

    #[test]
    fn plan_more_slots_than_allowed_names_slots() {
        let e = plan_of(
            "phys_bits = 52\n[memory]\nsize = \"64MiB\"\n[hotplug]\nslots = 4000000000\n\
             slot_size = 4096\n",
        )
        .unwrap_err();
        // The spec's own bound on slots (SPEC.md, Limits) refuses it before the planner's
        // bound on memory-slot numbers is reached; that one is tested in memvisor-space.
        assert_eq!(e.field, "hotplug.slots");
        assert!(
            e.problem.to_string().contains("at most 1024"),
            "{}",
            e.problem
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
