//! The planner (`memvisor_space::plan::plan`, what the `memvisor` command lays a VM out with)
//! under requests decoded from the input, at and past every limit: node and slot sizes of 0, 1,
//! `u64::MAX`, not page multiples, huge; 0 to `u32::MAX` hotplug slots and up to 64 nodes;
//! address bits 31 to 65; file offsets near the top; window
//! alignments that are not powers of two or out of range; device names the plan gives to other
//! parts of the map, repeated or empty; fixed interrupts, ports and addresses anywhere; memory
//! specs of every backing, page kind and type. Nothing is mapped: plans only.
//!
//! Checked: nothing panics; the same request plans the same way twice; a request that breaks a
//! documented rule is refused, with an error naming a request item that exists; a plan has
//! exactly the boot RAM asked for on each node (its regions carrying the node's memory spec,
//! a file's offset moved on by the bytes laid before), regions that do not overlap, sorted by
//! address, the devices, interrupts, windows and slots asked for where they were fixed, its
//! layout within the address bits and windows on the asked alignment, a hotplug window no
//! larger than its slots and the lead to their alignment, on x86-64 the ports of KVM's
//! in-kernel devices and the timer's interrupts held by its placer and given to no device, SRAT
//! ranges of each guest node's memory; and an `AddressSpace` takes the plan's regions, and its
//! hotplug slots with them.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use memvisor_fuzz::Input;
use memvisor_space::plan::{
    DAX_ALIGN, DeviceRequest, HotplugRequest, MAX_PHYS_BITS, NodeRequest, Plan, PlanError,
    PlanItem, PlanRequest, SerialRequest, names_other_map_part, plan,
};
use memvisor_space::{
    AddressSpace, Arch, Backing, DEFAULT_SLOTS, GuestRange, HugePageSize, HugePages, NumaBinding,
    NumaPolicy, Platform, Protection, Region, RegionSpec, RegionType, WindowKind,
};
use vm_memory::GuestAddress;

const PAGE: u64 = 0x1000;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Devices per request, slots whose plugging is checked one by one.
const MAX_DEVICES: u8 = 6;
const MAX_PLUGGED: usize = 16;
/// x86-64: the first and last I/O ports of KVM's in-kernel PICs, PIT (and its speaker port)
/// and ELCR, and the timer's interrupts, which a plan gives to no device.
const KVM_PORTS: [(u64, u64); 5] = [
    (0x20, 0x21),
    (0x40, 0x43),
    (0x61, 0x61),
    (0xa0, 0xa1),
    (0x4d0, 0x4d1),
];
const TIMER_GSIS: [u32; 2] = [0, 2];
/// The 8 ports of a serial port at `base` overlap those of a KVM in-kernel device.
fn over_kvm_ports(base: u64) -> bool {
    KVM_PORTS
        .iter()
        .any(|&(first, last)| base <= last && base.checked_add(7).is_none_or(|end| end >= first))
}

/// A size: 0, 1, near `u64::MAX`, any, page, MiB and GiB multiples, powers of two, or a page
/// multiple and a little.
fn bytes(input: &mut Input<'_>) -> u64 {
    match input.u8() % 11 {
        0 => 0,
        1 => 1,
        2 => u64::MAX - u64::from(input.u8()),
        3 => input.u64(),
        4 => (1 + u64::from(input.u16())) * PAGE,
        5 | 6 => (1 + u64::from(input.u8())) * MIB,
        7 => (1 + u64::from(input.u8() % 64)) * GIB,
        8 => 1 << (input.u8() % 64),
        9 => (1 + u64::from(input.u8())) * 2 * MIB,
        _ => (1 + u64::from(input.u16())) * PAGE + 1 + u64::from(input.u8()),
    }
}

/// A memory spec for boot RAM or hotplug slots: mostly valid RAM, sometimes of another type,
/// hot-pluggable, without memory, with contradicting options, a file offset near the top.
fn memory_spec(input: &mut Input<'_>) -> RegionSpec {
    let ty = match input.u8() % 16 {
        0 => RegionType::Device,
        1 => RegionType::Dax,
        2 => RegionType::Firmware,
        3 => RegionType::Reserved,
        _ => RegionType::Ram,
    };
    let mut spec = RegionSpec::new(ty, GuestAddress(input.size()), input.size());
    let backing = match input.u8() % 10 {
        0 => Backing::None,
        1 => Backing::Memfd,
        2 => Backing::AnonymousShared,
        3 => Backing::Hugetlbfs(PathBuf::from("/dev/hugepages")),
        4 | 5 => {
            let offset = match input.u8() % 4 {
                0 => 0,
                1 => (u64::MAX - u64::from(input.u16()) * PAGE) & !(PAGE - 1),
                2 => input.u64(),
                _ => u64::from(input.u16()) * PAGE,
            };
            Backing::File {
                path: PathBuf::from("/nonexistent/memvisor-fuzz"),
                offset,
            }
        }
        _ => Backing::AnonymousPrivate,
    };
    spec = spec.with_backing(backing);
    match input.u8() % 8 {
        0 => spec = spec.with_huge_pages(HugePages::Transparent),
        1 => spec = spec.with_huge_pages(HugePages::Explicit(HugePageSize::Size2M)),
        2 => spec = spec.with_huge_pages(HugePages::Explicit(HugePageSize::Size1G)),
        _ => {}
    }
    match input.u8() % 8 {
        0 => spec = spec.with_numa(NumaBinding::bind(u32::from(input.u8()))),
        1 => spec = spec.with_numa(NumaBinding::new(NumaPolicy::Bind, [])),
        2 => spec = spec.with_protection(Protection::Read),
        3 => spec = spec.with_hotplug(true),
        4 => spec = spec.with_prefault_threads(usize::from(input.u8())),
        _ => {}
    }
    spec
}

fn name(input: &mut Input<'_>) -> String {
    match input.u8() % 14 {
        0 => String::new(),
        1 => "serial".into(),
        2 => format!("hotplug slot {}", input.u8() % 4),
        3 => "net0 DAX".into(),
        4 => "IOAPIC, local APIC".into(),
        5 => "GIC".into(),
        6 => "RAM node0".into(),
        7 => "legacy ISA".into(),
        _ => format!("dev{}", input.u8() % 8),
    }
}

fn irq(input: &mut Input<'_>) -> Option<u32> {
    match input.u8() % 6 {
        0 => Some(u32::from(input.u8())),
        1 => Some(u32::MAX - u32::from(input.u8() % 2)),
        _ => None,
    }
}

/// An MMIO address: in a preset's device window, any, near the top.
fn mmio_address(input: &mut Input<'_>, size: u64) -> Option<u64> {
    let align = if size.is_power_of_two() { size } else { PAGE };
    match input.u8() % 8 {
        0 => Some(0xc000_0000u64.wrapping_add(u64::from(input.u8()).wrapping_mul(align))),
        1 => Some(0x0900_0000u64.wrapping_add(u64::from(input.u8()).wrapping_mul(align))),
        2 => Some(input.u64()),
        3 => Some(u64::MAX - u64::from(input.u8())),
        4 => Some((u64::MAX - u64::from(input.u8()) * PAGE) & !(align - 1)),
        _ => None,
    }
}

fn request(input: &mut Input<'_>) -> PlanRequest {
    let platform = match input.u8() % 3 {
        0 => Platform::x86_64(),
        1 => Platform::x86_64()
            .with_pci_mmconfig()
            .expect("the preset takes MMCONFIG"),
        _ => Platform::aarch64(),
    };
    let phys_bits = 31 + u32::from(input.u8() % 35);
    // Not up to the memory-slot numbers: a request of 32,764 nodes costs what a thousand small
    // ones do (the planner's unit tests ask for one more than there are numbers, and as many).
    let nodes = match input.u8() % 32 {
        0 => 0,
        1 => 5 + usize::from(input.u8() % 60),
        _ => 1 + usize::from(input.u8() % 4),
    };
    let nodes = if nodes > 4 {
        let node = NodeRequest {
            size: bytes(input),
            memory: memory_spec(input),
        };
        vec![node; nodes]
    } else {
        (0..nodes)
            .map(|_| NodeRequest {
                size: bytes(input),
                memory: memory_spec(input),
            })
            .collect()
    };
    let serial = input.u8().is_multiple_of(3).then(|| SerialRequest {
        irq: irq(input),
        port: match input.u8() % 6 {
            0 => Some(0x2f8),
            1 => Some(u64::MAX - u64::from(input.u8() % 16)),
            2 => Some(u64::from(input.u16())),
            // At and around the ports KVM answers in the kernel.
            3 => {
                let (first, _) = KVM_PORTS[usize::from(input.u8()) % KVM_PORTS.len()];
                Some(first.saturating_sub(8) + u64::from(input.u8() % 12))
            }
            _ => None,
        },
        address: if input.u8().is_multiple_of(4) {
            mmio_address(input, PAGE)
        } else {
            None
        },
    });
    let devices = (0..input.u8() % (MAX_DEVICES + 1))
        .map(|_| {
            let name = name(input);
            let mmio_size = match input.u8() % 10 {
                0 => 0,
                1 => 1,
                2 => 0x200,
                3 => 0x3000,
                4 => 1 << (input.u8() % 64),
                5 => input.u64(),
                6 => u64::MAX,
                _ => PAGE << (input.u8() % 4),
            };
            let address = mmio_address(input, mmio_size);
            let irq = irq(input);
            let dax_size = match input.u8() % 8 {
                0 => Some(0),
                1 => Some((1 + u64::from(input.u8() % 8)) * DAX_ALIGN),
                2 => Some(!(DAX_ALIGN - 1)),
                3 => Some(bytes(input)),
                _ => None,
            };
            DeviceRequest {
                name,
                mmio_size,
                address,
                irq,
                dax_size,
            }
        })
        .collect();
    let hotplug = input.u8().is_multiple_of(2).then(|| HotplugRequest {
        slots: match input.u8() % 10 {
            0 => 0,
            1 => DEFAULT_SLOTS - u32::from(input.u8() % 4),
            2 => DEFAULT_SLOTS + u32::from(input.u8() % 2),
            3 => u32::MAX,
            _ => 1 + u32::from(input.u8() % 16),
        },
        slot_size: bytes(input),
        node: match input.u8() % 8 {
            0 => u32::MAX,
            n => u32::from(n % 6),
        },
        memory: memory_spec(input),
    });
    let low_ram_limit = input.u8().is_multiple_of(4).then(|| bytes(input));
    let window_align = match input.u8() % 8 {
        0 => Some(0),
        1 => Some(1 << (input.u8() % 64)),
        2 => Some(2 * MIB),
        3 => Some(128 * MIB),
        4 => Some(input.u64()),
        _ => None,
    };
    PlanRequest {
        platform,
        phys_bits,
        nodes,
        serial,
        devices,
        hotplug,
        low_ram_limit,
        window_align,
    }
}

/// The page size a memory spec's regions must be multiples of (as `RegionSpec::validate`).
fn page_of(spec: &RegionSpec) -> u64 {
    match spec.huge_pages() {
        HugePages::Explicit(size) => size.bytes(),
        _ => PAGE,
    }
}

/// A memory spec that boot RAM or a slot can be made of: RAM, with memory, valid options
/// (checked on a copy with a valid range).
fn usable_memory(spec: &RegionSpec) -> bool {
    let page = page_of(spec);
    let probe = RegionSpec::clone(spec);
    spec.ty() == RegionType::Ram
        && spec.backing().has_memory()
        && Region::plan(with_range(probe, page, page)).is_ok()
}

/// `spec` at `base` with `size` bytes, the rest kept.
fn with_range(spec: RegionSpec, base: u64, size: u64) -> RegionSpec {
    let mut out = RegionSpec::new(spec.ty(), GuestAddress(base), size)
        .with_backing(spec.backing().clone())
        .with_protection(spec.protection())
        .with_huge_pages(spec.huge_pages())
        .with_fallback(spec.fallback())
        .with_hotplug(spec.hotplug())
        .with_dontfork(spec.dontfork())
        .with_prefault_threads(spec.prefault_threads())
        .with_dirty_tracking(spec.dirty_tracking());
    if let Some(numa) = spec.numa() {
        out = out.with_numa(numa.clone());
    }
    out
}

/// `spec` with a file offset moved on by `by` (other backings as they are).
fn shifted(spec: &RegionSpec, by: u64) -> Option<Backing> {
    match spec.backing() {
        Backing::File { path, offset } => Some(Backing::File {
            path: path.clone(),
            offset: offset.checked_add(by)?,
        }),
        other => Some(other.clone()),
    }
}

/// The documented rules a request breaks on its own (any of them must refuse it), as reasons.
fn broken_rules(r: &PlanRequest) -> Vec<&'static str> {
    let mut broken = Vec::new();
    let mut rule = |b: bool, why| {
        if b {
            broken.push(why);
        }
    };
    let arch = r.platform.arch();
    rule(!(32..=MAX_PHYS_BITS).contains(&r.phys_bits), "address bits");
    rule(r.nodes.is_empty(), "no nodes");
    rule(
        r.nodes.len() > DEFAULT_SLOTS as usize,
        "more nodes than slot numbers",
    );
    rule(
        r.nodes
            .iter()
            .try_fold(0u64, |s, n| s.checked_add(n.size))
            .is_none(),
        "boot RAM overflows",
    );
    // Many nodes share one spec: each spec is judged once.
    let mut judged: Option<(&RegionSpec, bool)> = None;
    for n in &r.nodes {
        let usable = match judged {
            Some((spec, usable)) if *spec == n.memory => usable,
            _ => usable_memory(&n.memory),
        };
        judged = Some((&n.memory, usable));
        rule(n.size == 0, "a node without RAM");
        rule(n.memory.hotplug(), "hot-pluggable boot RAM");
        rule(!usable, "boot RAM's spec");
        rule(
            !n.size.is_multiple_of(page_of(&n.memory)),
            "boot RAM off its page",
        );
    }
    if let Some(h) = &r.hotplug {
        rule(h.slots == 0, "no slots");
        rule(h.slots > DEFAULT_SLOTS, "more slots than slot numbers");
        rule(
            usize::try_from(h.node).map_or(true, |n| n >= r.nodes.len()),
            "the slots' node",
        );
        rule(h.slot_size == 0, "slots of 0 bytes");
        rule(
            !h.slot_size.is_multiple_of(page_of(&h.memory)),
            "slots off their page",
        );
        rule(
            u64::from(h.slots).checked_mul(h.slot_size).is_none(),
            "slots overflow",
        );
        let probe = RegionSpec::clone(&h.memory).with_hotplug(true);
        rule(!usable_memory(&probe), "the slots' spec");
    }
    if let Some(s) = &r.serial {
        rule(
            arch == Arch::Aarch64 && s.port.is_some(),
            "a serial port on AArch64",
        );
        rule(
            arch == Arch::X86_64 && s.address.is_some(),
            "an MMIO serial on x86-64",
        );
        rule(
            arch == Arch::X86_64 && s.irq.is_some_and(|i| TIMER_GSIS.contains(&i)),
            "a serial interrupt of the timer",
        );
        rule(
            arch == Arch::X86_64 && over_kvm_ports(s.port.unwrap_or(0x3f8)),
            "serial ports over KVM's in-kernel devices",
        );
    }
    for (i, d) in r.devices.iter().enumerate() {
        rule(d.name.is_empty(), "an empty name");
        rule(names_other_map_part(&d.name), "a name of another part");
        rule(
            r.devices[..i].iter().any(|e| e.name == d.name),
            "a repeated name",
        );
        rule(d.mmio_size == 0, "no MMIO window");
        rule(
            !d.mmio_size.is_power_of_two(),
            "an MMIO size not a power of two",
        );
        rule(d.mmio_size < PAGE, "an MMIO window below a page");
        rule(
            arch == Arch::X86_64 && d.irq.is_some_and(|i| TIMER_GSIS.contains(&i)),
            "a device interrupt of the timer",
        );
        rule(
            d.address
                .is_some_and(|a| d.mmio_size != 0 && !a.is_multiple_of(d.mmio_size)),
            "an address off its window size",
        );
        rule(
            d.dax_size
                .is_some_and(|s| s == 0 || !s.is_multiple_of(DAX_ALIGN)),
            "a DAX size",
        );
    }
    rule(
        r.devices
            .iter()
            .filter_map(|d| d.dax_size)
            .try_fold(0u64, u64::checked_add)
            .is_none(),
        "DAX sizes overflow",
    );
    rule(
        r.window_align
            .is_some_and(|a| !a.is_power_of_two() || !(2 * MIB..=GIB).contains(&a)),
        "the window alignment",
    );
    if let Some(low) = r.low_ram_limit {
        rule(arch != Arch::X86_64, "a low-RAM limit off x86-64");
        rule(!low.is_multiple_of(PAGE), "a low-RAM limit off the page");
    }
    let mut fixed: Vec<u32> = r.devices.iter().filter_map(|d| d.irq).collect();
    fixed.extend(r.serial.and_then(|s| s.irq));
    fixed.sort_unstable();
    rule(
        fixed.windows(2).any(|w| w[0] == w[1]),
        "an interrupt fixed twice",
    );
    broken
}

/// An error names a request item that exists.
fn check_error(r: &PlanRequest, e: &PlanError) {
    let device = |i: usize| i < r.devices.len();
    let ok = match e.item {
        PlanItem::PhysBits | PlanItem::Memory | PlanItem::Platform => true,
        PlanItem::Node(i) => i < r.nodes.len(),
        PlanItem::Hotplug | PlanItem::HotplugSlotSize | PlanItem::HotplugNode => {
            r.hotplug.is_some()
        }
        PlanItem::Serial | PlanItem::SerialIrq | PlanItem::SerialPort | PlanItem::SerialAddress => {
            r.serial.is_some()
        }
        PlanItem::Device(i)
        | PlanItem::DeviceName(i)
        | PlanItem::DeviceIrq(i)
        | PlanItem::DeviceAddress(i)
        | PlanItem::DeviceMmioSize(i) => device(i),
        PlanItem::DeviceDaxSize(i) => device(i) && r.devices[i].dax_size.is_some(),
    };
    assert!(ok, "{e} names no item of the request");
    assert!(!e.to_string().is_empty());
    assert!(std::error::Error::source(e).is_some(), "{e} has no cause");
}

/// A plan as the request asked.
fn check_plan(r: &PlanRequest, p: &Plan) {
    let limit = if r.phys_bits == 64 {
        u64::MAX
    } else {
        (1 << r.phys_bits) - 1
    };
    assert_eq!(p.layout.limit().0, limit, "the address limit");
    assert_eq!(p.layout.arch(), Some(r.platform.arch()));

    // Boot RAM: each node's size, in regions of its spec, a file's offset moved on.
    let ram: Vec<_> = p
        .regions
        .iter()
        .filter(|x| x.spec.ty() == RegionType::Ram)
        .collect();
    let mut by_node = vec![Vec::new(); r.nodes.len()];
    for x in &ram {
        let node = x.node.map(|n| n as usize).filter(|&n| n < r.nodes.len());
        by_node[node.expect("RAM of a node of the request")].push(*x);
    }
    for (i, (node, mine)) in r.nodes.iter().zip(&by_node).enumerate() {
        let total: u64 = mine.iter().map(|x| x.spec.size()).sum();
        assert_eq!(total, node.size, "boot RAM of node {i}");
        let mut laid = 0;
        for x in mine {
            let s = &x.spec;
            assert_eq!(x.owner, format!("RAM node{i}"));
            let backing = shifted(&node.memory, laid).expect("an offset that fits");
            let want = with_range(node.memory.clone(), s.base().0, s.size()).with_backing(backing);
            assert_eq!(s, &want, "node {i}'s region at {:#x}", s.base().0);
            laid += s.size();
        }
    }
    if r.platform.arch() == Arch::X86_64
        && let Some(low) = r.low_ram_limit
    {
        let below: u64 = ram
            .iter()
            .filter(|x| x.spec.base().0 < 4 * GIB)
            .map(|x| x.spec.size())
            .sum();
        assert!(
            below <= low,
            "{below:#x} bytes of RAM below 4 GiB, limit {low:#x}"
        );
    }

    // Regions and slots: sorted by address, none overlapping.
    for list in [&p.regions, &p.slots] {
        assert!(
            list.windows(2).all(|w| w[0].spec.base() < w[1].spec.base()),
            "not sorted by address"
        );
    }
    let mut all: Vec<(u64, u64)> = p
        .regions
        .iter()
        .chain(&p.slots)
        .map(|x| (x.spec.base().0, x.spec.size()))
        .collect();
    all.sort_unstable();
    for w in all.windows(2) {
        assert!(
            w[0].0
                .checked_add(w[0].1 - 1)
                .is_some_and(|last| last < w[1].0),
            "{:#x}+{:#x} overlaps {:#x}+{:#x}",
            w[0].0,
            w[0].1,
            w[1].0,
            w[1].1
        );
    }

    // Devices: the serial port first, then the devices in order, as fixed.
    let serial = usize::from(r.serial.is_some());
    assert_eq!(p.devices.len(), serial + r.devices.len());
    if let Some(s) = &r.serial {
        let d = &p.devices[0];
        assert_eq!(d.name, "serial");
        if let Some(irq) = s.irq {
            assert_eq!(d.irq, irq, "the serial interrupt");
        }
        match r.platform.arch() {
            Arch::X86_64 => {
                assert!(d.mmio.is_none());
                let ports = d.ports.expect("serial ports");
                assert_eq!(ports.start().0, s.port.unwrap_or(0x3f8));
            }
            Arch::Aarch64 => {
                assert!(d.ports.is_none());
                let mmio = d.mmio.expect("an MMIO serial");
                if let Some(a) = s.address {
                    assert_eq!(mmio.start().0, a);
                }
                assert!(has_region(
                    p,
                    mmio.start().0,
                    mmio.size().expect("a window size"),
                    RegionType::Device,
                    "serial"
                ));
            }
        }
    }
    for (asked, d) in r.devices.iter().zip(&p.devices[serial..]) {
        assert_eq!(d.name, asked.name);
        let mmio = d.mmio.expect("a device window");
        assert_eq!(mmio.size(), Some(asked.mmio_size), "{}'s window", d.name);
        assert!(mmio.start().0.is_multiple_of(asked.mmio_size));
        if let Some(a) = asked.address {
            assert_eq!(mmio.start().0, a, "{}'s address", d.name);
        }
        if let Some(irq) = asked.irq {
            assert_eq!(d.irq, irq, "{}'s interrupt", d.name);
        }
        assert!(has_region(
            p,
            mmio.start().0,
            asked.mmio_size,
            RegionType::Device,
            &d.name
        ));
        match (asked.dax_size, d.dax) {
            (None, None) => {}
            (Some(size), Some(dax)) => {
                assert_eq!(dax.size(), Some(size), "{}'s DAX window", d.name);
                assert!(dax.start().0.is_multiple_of(DAX_ALIGN));
                let owner = format!("{} DAX", d.name);
                assert!(has_region(p, dax.start().0, size, RegionType::Dax, &owner));
            }
            other => panic!("{}'s DAX window: {other:?}", d.name),
        }
    }
    if r.platform.arch() == Arch::X86_64 {
        // KVM's in-kernel ports and the timer's interrupts: nobody's in the plan, held by its
        // placer for what comes later.
        let mut placer = p.placer.clone();
        for &(first, last) in &KVM_PORTS {
            let ports = GuestRange::inclusive(GuestAddress(first), GuestAddress(last)).unwrap();
            assert!(
                p.devices
                    .iter()
                    .all(|d| d.ports.is_none_or(|x| !x.overlaps(&ports)))
            );
            assert!(placer.ports_at(ports, "later").is_err(), "{ports:?} free");
        }
        for gsi in TIMER_GSIS {
            assert!(p.devices.iter().all(|d| d.irq != gsi), "GSI {gsi} given");
            assert!(placer.irq_at(gsi, "later").is_err(), "GSI {gsi} free");
        }
    }
    let mut irqs: Vec<u32> = p.devices.iter().map(|d| d.irq).collect();
    irqs.sort_unstable();
    assert!(
        irqs.windows(2).all(|w| w[0] != w[1]),
        "an interrupt given twice"
    );

    // Windows on the alignment asked.
    let align = r.window_align.unwrap_or(GIB);
    for kind in [WindowKind::Hotplug, WindowKind::Dax] {
        for w in p.layout.windows_of(kind) {
            assert!(
                w.start().0.is_multiple_of(align),
                "{kind} window off {align:#x}"
            );
        }
    }
    assert_eq!(
        p.layout.windows_of(WindowKind::Hotplug).count(),
        usize::from(r.hotplug.is_some())
    );

    // Hotplug slots: as many as asked, of the size asked, in index order, from its spec.
    match &r.hotplug {
        None => assert!(p.slots.is_empty()),
        Some(h) => {
            assert_eq!(p.slots.len(), h.slots as usize, "hotplug slots");
            for (i, s) in p.slots.iter().enumerate() {
                assert_eq!(s.owner, format!("hotplug slot {i}"));
                assert_eq!(s.node, Some(h.node));
                let by = i as u64 * h.slot_size;
                let backing = shifted(&h.memory, by).expect("an offset that fits");
                let want = with_range(h.memory.clone(), s.spec.base().0, h.slot_size)
                    .with_backing(backing)
                    .with_hotplug(true);
                assert_eq!(s.spec, want, "slot {i}");
            }
            // The window holds the lead to the first slot (less than the slots' alignment,
            // at most their page) and the slots, rounded up to the window alignment: no more.
            let w = p
                .layout
                .windows_of(WindowKind::Hotplug)
                .next()
                .expect("a window");
            let lead = p.slots[0].spec.base().0 - w.start().0;
            let page = match h.memory.huge_pages() {
                HugePages::Explicit(size) => size.bytes(),
                _ => 2 * MIB,
            };
            assert!(lead < page.max(2 * MIB), "a lead of {lead:#x}");
            let slots = u64::from(h.slots) * h.slot_size;
            assert_eq!(
                w.size(),
                (lead + slots).next_multiple_of(align),
                "hotplug window"
            );
        }
    }

    // SRAT ranges by guest node: each node's boot RAM, the whole hotplug window under the
    // slots' node.
    let srat = p.numa_ranges();
    for (i, node) in r.nodes.iter().enumerate() {
        let total: u64 = srat
            .iter()
            .filter(|n| !n.hotplug && n.node as usize == i)
            .map(|n| n.size)
            .sum();
        assert_eq!(total, node.size, "SRAT of node {i}");
    }
    let plugged: u64 = srat
        .iter()
        .filter(|n| n.hotplug)
        .inspect(|n| assert_eq!(r.hotplug.as_ref().map(|h| h.node), Some(n.node)))
        .map(|n| n.size)
        .sum();
    let want: u64 = p
        .layout
        .windows_of(WindowKind::Hotplug)
        .map(memvisor_space::Window::size)
        .sum();
    assert_eq!(plugged, want, "SRAT of the hotplug window");
    assert!(
        srat.windows(2).all(|w| w[0]
            .addr
            .checked_add(w[0].size - 1)
            .is_some_and(|l| l < w[1].addr)),
        "SRAT ranges overlap or are out of order"
    );

    // An address space takes the plan, then each slot, or all of them at once.
    let boot = p.regions.iter().map(|x| x.spec.clone());
    let space = AddressSpace::plan(p.layout.clone(), boot.clone())
        .unwrap_or_else(|e| panic!("the plan's regions refused: {e}"));
    if p.slots.len() <= MAX_PLUGGED {
        for s in &p.slots {
            let region = Region::plan(s.spec.clone()).expect("a valid slot");
            space
                .insert_region(std::sync::Arc::new(region))
                .unwrap_or_else(|e| panic!("{} refused: {e}", s.owner));
        }
    } else {
        AddressSpace::plan(
            p.layout.clone(),
            boot.chain(p.slots.iter().map(|s| s.spec.clone())),
        )
        .unwrap_or_else(|e| panic!("the plan's slots refused: {e}"));
    }
}

fn has_region(p: &Plan, base: u64, size: u64, ty: RegionType, owner: &str) -> bool {
    p.regions.iter().any(|x| {
        x.spec.base().0 == base && x.spec.size() == size && x.spec.ty() == ty && x.owner == owner
    })
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let r = request(&mut input);
    let first = plan(&r);
    let again = plan(&r);
    match (&first, &again) {
        (Ok(a), Ok(b)) => {
            assert!(
                a.layout == b.layout
                    && a.regions == b.regions
                    && a.devices == b.devices
                    && a.slots == b.slots,
                "two plans of one request differ"
            );
        }
        (Err(a), Err(b)) => {
            assert_eq!(
                (a.item, a.to_string()),
                (b.item, b.to_string()),
                "two refusals differ"
            );
        }
        _ => panic!("one request planned once and refused once"),
    }
    let broken = broken_rules(&r);
    match first {
        Ok(p) => {
            assert!(broken.is_empty(), "planned against the rules: {broken:?}");
            check_plan(&r, &p);
        }
        Err(e) => check_error(&r, &e),
    }
});
