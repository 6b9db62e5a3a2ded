//! Properties of `plan` over generated requests: every plan of an accepted request is a valid
//! map (inside the address bits, on its pages, in windows of its kinds, no overlap, a memory
//! map, e820 table and SRAT ranges that agree with its regions), the same for the same
//! request; and a refused placer call leaves the placer of a plan exactly as it was.
//!
//! Not run under Miri: the planner has no unsafe code, and these generated cases would take it
//! minutes to interpret while checking nothing the native run does not.

#![cfg(not(miri))]

use std::collections::BTreeMap;

use memvisor_space::plan::{
    DAX_ALIGN, DeviceRequest, HotplugRequest, NodeRequest, Plan, PlanItem, PlanRequest,
    SerialRequest, names_other_map_part, plan,
};
use memvisor_space::{
    AddressSpace, Arch, Backing, GuestRange, HugePageSize, HugePages, LEGACY_HOLE, MemoryType,
    NumaBinding, NumaRange, Platform, RegionSpec, RegionType, WindowKind,
};
use proptest::prelude::*;
use vm_memory::GuestAddress;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn cases() -> u32 {
    if cfg!(miri) { 2 } else { 96 }
}

/// A boot RAM or hotplug memory spec with `pages` and a backing with memory.
fn memory(pages: HugePages, backing: u8, host_node: Option<u32>, file: &str) -> RegionSpec {
    let backing = match (pages, backing % 4) {
        (HugePages::Explicit(_), 3) | (_, 0) => Backing::AnonymousPrivate,
        (_, 1) => Backing::AnonymousShared,
        (_, 2) => Backing::Memfd,
        (_, _) => Backing::File {
            path: format!("/srv/vm/{file}").into(),
            offset: 0,
        },
    };
    let spec = RegionSpec::ram(GuestAddress(0), 0)
        .with_backing(backing)
        .with_huge_pages(pages);
    match host_node {
        Some(n) => spec.with_numa(NumaBinding::bind(n)),
        None => spec,
    }
}

fn huge_pages() -> impl Strategy<Value = HugePages> {
    prop_oneof![
        4 => Just(HugePages::None),
        2 => Just(HugePages::Transparent),
        2 => Just(HugePages::Explicit(HugePageSize::Size2M)),
        1 => Just(HugePages::Explicit(HugePageSize::Size1G)),
    ]
}

fn page_of(pages: HugePages) -> u64 {
    match pages {
        HugePages::Explicit(size) => size.bytes(),
        _ => 4 * KIB,
    }
}

/// Requests the planner must accept: every field valid on its own and everything small enough
/// to fit the address bits, boot RAM and slots on the page of their memory (all nodes share
/// one page size and the low-RAM limit is a multiple of it, so that no node starts off it),
/// devices without fixed addresses or interrupts, few enough for the interrupts.
fn accepted() -> impl Strategy<Value = PlanRequest> {
    (
        (any::<bool>(), any::<bool>(), 36u32..=52),
        (
            huge_pages(),
            1usize..=4,
            prop::collection::vec((1u64..=3, any::<u8>()), 4),
        ),
        prop::option::of((1u32..=6, 1u64..=4, any::<u8>(), huge_pages())),
        (
            any::<bool>(),
            prop::collection::vec((0u32..=3, any::<bool>(), 0u64..=3), 0..=8),
        ),
        (
            prop::option::of(0u64..=4),
            prop::option::of(prop::sample::select(vec![2 * MIB, 4 * MIB, 128 * MIB, GIB])),
        ),
    )
        .prop_map(
            |(
                (x86, mmconfig, phys_bits),
                (pages, nodes, sizes),
                hotplug,
                (serial, devices),
                (low, window_align),
            )| {
                let arch = if x86 { Arch::X86_64 } else { Arch::Aarch64 };
                let mut platform = Platform::new(arch);
                if x86 && mmconfig {
                    platform = platform.with_pci_mmconfig().unwrap();
                }
                // Nodes of 1 to 3 units of their page size (at least 64 MiB).
                let unit = page_of(pages).max(64 * MIB);
                let nodes = sizes
                    .iter()
                    .take(nodes)
                    .enumerate()
                    .map(|(i, &(n, b))| NodeRequest {
                        size: n * unit,
                        memory: memory(
                            pages,
                            b,
                            (b % 3 == 0).then_some(u32::from(b % 2)),
                            &format!("node{i}"),
                        ),
                    })
                    .collect::<Vec<_>>();
                let node_count = u32::try_from(nodes.len()).unwrap();
                let hotplug = hotplug.map(|(slots, units, b, slot_pages)| HotplugRequest {
                    slots,
                    slot_size: units * page_of(slot_pages).max(2 * MIB),
                    node: u32::from(b) % node_count,
                    memory: memory(slot_pages, b, None, "slots"),
                });
                let devices = devices
                    .into_iter()
                    .enumerate()
                    .map(|(i, (shift, dax, dax_units))| DeviceRequest {
                        name: format!("dev{i}"),
                        mmio_size: (4 * KIB) << shift,
                        address: None,
                        irq: None,
                        dax_size: dax.then_some((1 + dax_units) * DAX_ALIGN),
                    })
                    .collect();
                let low_ram_limit = low.filter(|_| x86).map(|l| {
                    (l * 512 * MIB)
                        .next_multiple_of(page_of(pages))
                        .min(3 * GIB)
                });
                PlanRequest {
                    platform,
                    phys_bits,
                    nodes,
                    serial: serial.then(SerialRequest::default),
                    devices,
                    hotplug,
                    low_ram_limit,
                    window_align,
                }
            },
        )
}

fn limit(phys_bits: u32) -> u64 {
    if phys_bits == 64 {
        u64::MAX
    } else {
        (1 << phys_bits) - 1
    }
}

/// The bytes of `(base, size)` ranges that `a` covers and `b` does not.
fn uncovered(a: &[(u64, u64)], b: &[(u64, u64)]) -> u64 {
    let mut left = 0;
    for &(base, size) in a {
        let last = base + (size - 1);
        let mut covered = 0;
        for &(b_base, b_size) in b {
            let b_last = b_base + (b_size - 1);
            let (first, end) = (base.max(b_base), last.min(b_last));
            if first <= end {
                covered += end - first + 1;
            }
        }
        left += size - covered.min(size);
    }
    left
}

fn check(r: &PlanRequest, p: &Plan) {
    let layout = &p.layout;
    assert_eq!(layout.limit().0, limit(r.phys_bits));
    let all: Vec<_> = p.regions.iter().chain(&p.slots).collect();
    for x in &all {
        let s = &x.spec;
        // Valid, on its page, inside the address bits and in one window of its kind.
        s.validate()
            .unwrap_or_else(|e| panic!("{}: invalid: {e}", x.owner));
        layout
            .check(s)
            .unwrap_or_else(|e| panic!("{}: outside its window: {e}", x.owner));
        assert!(s.base().0.is_multiple_of(s.guest_page_size()));
        assert!(s.size().is_multiple_of(s.guest_page_size()));
    }
    // No two overlap.
    let mut ranges: Vec<(u64, u64)> = all
        .iter()
        .map(|x| (x.spec.base().0, x.spec.size()))
        .collect();
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        assert!(w[0].0 + (w[0].1 - 1) < w[1].0, "{w:x?} overlap");
    }
    // Slots: in the hotplug window, aligned so that their huge pages are (transparent ones
    // and base pages up to 2 MiB, explicit ones to their size).
    if let Some(h) = &r.hotplug {
        let window = layout.windows_of(WindowKind::Hotplug).next().unwrap();
        let page = page_of(h.memory.huge_pages()).max(2 * MIB);
        let align = (1u64 << h.slot_size.trailing_zeros()).min(page);
        for s in &p.slots {
            assert!(window.contains_range(s.spec.base().0, s.spec.size()));
            assert!(s.spec.hotplug());
            assert!(
                s.spec.base().0.is_multiple_of(align),
                "{} at {:#x} off {align:#x}",
                s.owner,
                s.spec.base().0
            );
        }
        // The window is the lead to the first multiple of the slots' alignment and the
        // slots, rounded up to the window alignment: no more. Every other window is where the
        // preset lays it beside a hotplug window of that size, so the lead moves nothing when
        // it is 0 (the window starts on the alignment) and the windows after it by no more
        // than itself.
        let lead = window.start().0.wrapping_neg() & (align - 1);
        assert_eq!(p.slots[0].spec.base().0, window.start().0 + lead);
        let slots = u64::from(h.slots) * h.slot_size;
        let window_align = r.window_align.unwrap_or(GIB);
        assert_eq!(
            window.size(),
            (lead + slots).next_multiple_of(window_align),
            "the hotplug window of {} slots of {:#x}",
            h.slots,
            h.slot_size
        );
        let ram: u64 = r.nodes.iter().map(|n| n.size).sum();
        let dax: u64 = r.devices.iter().filter_map(|d| d.dax_size).sum();
        let mut preset = r
            .platform
            .layout()
            .ram(ram)
            .phys_bits(r.phys_bits)
            .hotplug(lead + slots)
            .dax(dax);
        if let Some(low) = r.low_ram_limit {
            preset = preset.low_ram_limit(low);
        }
        if let Some(a) = r.window_align {
            preset = preset.window_align(a);
        }
        assert_eq!(&preset.build().unwrap(), layout, "a lead of {lead:#x}");
    }
    // Devices' windows and DAX windows are regions of the plan, inside the address bits.
    for d in &p.devices {
        for w in [d.mmio, d.dax].into_iter().flatten() {
            assert!(w.last().0 <= layout.limit().0);
            assert!(
                p.regions
                    .iter()
                    .any(|x| x.spec.base() == w.start() && Some(x.spec.size()) == w.size())
            );
        }
    }

    // The address space takes the plan and its slots; its maps agree with the regions.
    let space = AddressSpace::plan(layout.clone(), all.iter().map(|x| x.spec.clone()))
        .unwrap_or_else(|e| panic!("the plan refused by the address space: {e}"));
    let snap = space.snapshot();
    let boot_ram: Vec<(u64, u64)> = p
        .regions
        .iter()
        .filter(|x| x.spec.ty() == RegionType::Ram)
        .map(|x| (x.spec.base().0, x.spec.size()))
        .collect();
    let map = snap.memory_map();
    assert!(map.windows(2).all(|w| w[0].last() < w[1].addr), "{map:?}");
    let listed: Vec<(u64, u64)> = map.iter().map(|e| (e.addr, e.size)).collect();
    assert_eq!(uncovered(&boot_ram, &listed), 0, "RAM missing from {map:?}");
    assert_eq!(
        uncovered(&listed, &boot_ram),
        0,
        "{map:?} lists what is no RAM"
    );
    let hole = (
        *LEGACY_HOLE.start(),
        LEGACY_HOLE.end() - LEGACY_HOLE.start() + 1,
    );
    for e in &map {
        let in_hole = uncovered(&[(e.addr, e.size)], &[hole]) == 0;
        match e.ty {
            MemoryType::Ram => assert!(
                r.platform.arch() != Arch::X86_64
                    || uncovered(&[(e.addr, e.size)], &[hole]) == e.size,
                "usable {e} in the legacy hole"
            ),
            MemoryType::Reserved => {
                assert!(r.platform.arch() == Arch::X86_64 && in_hole, "reserved {e}")
            }
        }
    }
    match snap.e820_table() {
        Ok(table) => assert_eq!(table, map),
        Err(e) => assert!(map.len() > memvisor_space::E820_MAX_ENTRIES, "{e}"),
    }
    // The plan's own map, as the guest reads it: the snapshot's, with PCI MMCONFIG (when the
    // platform has it) and KVM's pages (x86-64) reserved; sorted, apart, each RAM byte once,
    // nothing reserved over RAM or over any planned region but a reserved one.
    let plan_map = p.memory_map();
    assert!(
        plan_map
            .windows(2)
            .all(|w| w[0].last() < w[1].addr && w[0].size > 0),
        "{plan_map:x?}"
    );
    let ram_of = |m: &[memvisor_space::MemoryMapEntry]| -> Vec<(u64, u64)> {
        m.iter()
            .filter(|e| e.ty == MemoryType::Ram)
            .map(|e| (e.addr, e.size))
            .collect()
    };
    assert_eq!(ram_of(&plan_map), ram_of(&map), "{plan_map:x?}");
    let mut extra: Vec<(u64, u64)> = r
        .platform
        .reservations()
        .iter()
        .filter(|x| {
            r.platform.arch() == Arch::X86_64
                && matches!(x.name(), "PCI MMCONFIG" | "KVM TSS, identity map")
        })
        .map(|x| (x.range().start().0, x.range().size().unwrap()))
        .collect();
    extra.extend(
        map.iter()
            .filter(|e| e.ty == MemoryType::Reserved)
            .map(|e| (e.addr, e.size)),
    );
    let reserved: Vec<(u64, u64)> = plan_map
        .iter()
        .filter(|e| e.ty == MemoryType::Reserved)
        .map(|e| (e.addr, e.size))
        .collect();
    assert_eq!(uncovered(&extra, &reserved), 0, "{plan_map:x?}");
    assert_eq!(uncovered(&reserved, &extra), 0, "{plan_map:x?}");
    assert_eq!(
        r.platform.arch() == Arch::X86_64,
        reserved.iter().any(|&(a, _)| a == 0xfffb_c000),
        "{plan_map:x?}"
    );
    for e in plan_map.iter().filter(|e| e.ty == MemoryType::Reserved) {
        if uncovered(&[(e.addr, e.size)], &[hole]) == 0 {
            continue;
        }
        let e = GuestRange::new(GuestAddress(e.addr), e.size).unwrap();
        for x in all.iter().filter(|x| x.spec.ty() != RegionType::Reserved) {
            let x_range = GuestRange::new(x.spec.base(), x.spec.size()).unwrap();
            assert!(!x_range.overlaps(&e), "{} over reserved {e}", x.owner);
        }
    }
    match p.e820_table() {
        Ok(table) => assert_eq!(table, plan_map),
        Err(e) => assert!(plan_map.len() > memvisor_space::E820_MAX_ENTRIES, "{e}"),
    }
    match p.pvh_memmap() {
        Ok(memmap) => {
            assert!(plan_map.len() <= memvisor_space::E820_MAX_ENTRIES);
            let want: Vec<u8> = plan_map
                .iter()
                .flat_map(memvisor_space::MemoryMapEntry::to_pvh_bytes)
                .collect();
            assert_eq!(memmap, want);
        }
        Err(e) => assert!(plan_map.len() > memvisor_space::E820_MAX_ENTRIES, "{e}"),
    }
    // Linux ignores an e820 table of fewer than 2 entries: an x86-64 plan's lists KVM's pages
    // beside its boot RAM, so it never is that short.
    if r.platform.arch() == Arch::X86_64 && !ram_of(&plan_map).is_empty() {
        assert!(plan_map.len() >= 2, "{plan_map:x?}");
    }
    match snap.pvh_memmap() {
        Ok(memmap) => {
            assert!(map.len() <= memvisor_space::E820_MAX_ENTRIES);
            assert_eq!(memmap.len(), 24 * map.len());
        }
        Err(e) => assert!(map.len() > memvisor_space::E820_MAX_ENTRIES, "{e}"),
    }
    // SRAT ranges: all RAM, boot and hot-pluggable, each flagged as it is.
    let srat = snap.numa_ranges();
    assert!(
        srat.windows(2)
            .all(|w| w[0].addr + (w[0].size - 1) < w[1].addr)
    );
    let ram: Vec<(u64, u64, bool)> = all
        .iter()
        .filter(|x| x.spec.ty() == RegionType::Ram)
        .map(|x| (x.spec.base().0, x.spec.size(), x.spec.hotplug()))
        .collect();
    for hotplug in [false, true] {
        let want: Vec<(u64, u64)> = ram
            .iter()
            .filter(|x| x.2 == hotplug)
            .map(|x| (x.0, x.1))
            .collect();
        let got: Vec<(u64, u64)> = srat
            .iter()
            .filter(|n| n.hotplug == hotplug)
            .map(|n| (n.addr, n.size))
            .collect();
        assert_eq!(uncovered(&want, &got), 0);
        assert_eq!(uncovered(&got, &want), 0);
    }
    // The plan's SRAT ranges: the same memory, each guest node's boot RAM its size, the slots
    // their node's.
    let guest = p.numa_ranges();
    assert!(
        guest
            .windows(2)
            .all(|w| w[0].addr + (w[0].size - 1) < w[1].addr)
    );
    for (i, n) in r.nodes.iter().enumerate() {
        let total: u64 = guest
            .iter()
            .filter(|g| !g.hotplug && g.node as usize == i)
            .map(|g| g.size)
            .sum();
        assert_eq!(total, n.size, "guest node {i}");
    }
    // Boot RAM: the same bytes as the snapshot's ranges; hot-pluggable memory: the whole
    // hotplug window, which holds the slots. Each range is under the guest node of every region
    // in it, and ranges of one node and flag that touch are merged.
    let of = |v: &[NumaRange], hotplug: bool| -> Vec<(u64, u64)> {
        v.iter()
            .filter(|n| n.hotplug == hotplug)
            .map(|n| (n.addr, n.size))
            .collect()
    };
    assert_eq!(uncovered(&of(&guest, false), &of(&srat, false)), 0);
    assert_eq!(uncovered(&of(&srat, false), &of(&guest, false)), 0);
    let windows: Vec<(u64, u64)> = layout
        .windows_of(WindowKind::Hotplug)
        .map(|w| (w.start().0, w.size()))
        .collect();
    assert_eq!(uncovered(&of(&guest, true), &windows), 0);
    assert_eq!(uncovered(&windows, &of(&guest, true)), 0);
    assert_eq!(uncovered(&of(&srat, true), &of(&guest, true)), 0);
    for g in &guest {
        for x in all.iter().filter(|x| x.spec.ty() == RegionType::Ram) {
            if uncovered(&[(x.spec.base().0, x.spec.size())], &[(g.addr, g.size)]) == 0 {
                assert_eq!(x.node, Some(g.node), "{} in {g:?}", x.owner);
                assert_eq!(x.spec.hotplug(), g.hotplug, "{} in {g:?}", x.owner);
            }
        }
    }
    assert!(
        guest.windows(2).all(|w| w[0].node != w[1].node
            || w[0].hotplug != w[1].hotplug
            || w[0].addr + w[0].size != w[1].addr),
        "{guest:x?}"
    );
    let hot: u64 = guest.iter().filter(|g| g.hotplug).map(|g| g.size).sum();
    match &r.hotplug {
        Some(h) => {
            assert!(hot >= u64::from(h.slots) * h.slot_size);
            assert!(guest.iter().filter(|g| g.hotplug).all(|g| g.node == h.node));
        }
        None => assert_eq!(hot, 0),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn plans_of_accepted_requests_are_valid_maps_and_the_same_every_time(r in accepted()) {
        let p = plan(&r).unwrap_or_else(|e| panic!("{e}\n{r:#?}"));
        check(&r, &p);
        let again = plan(&r).unwrap();
        prop_assert_eq!(&again.layout, &p.layout);
        prop_assert_eq!(&again.regions, &p.regions);
        prop_assert_eq!(&again.devices, &p.devices);
        prop_assert_eq!(&again.slots, &p.slots);
        let owners = |p: &Plan| -> Vec<(String, GuestRange)> {
            p.placer.allocations().map(|(o, r)| (o.to_owned(), r)).collect()
        };
        prop_assert_eq!(owners(&again), owners(&p));
    }
}

/// What a placer holds, as far as its public view tells: ranges and ports with their owners,
/// interrupt owners, and the largest free range of each window kind.
type Held = (
    Vec<(String, GuestRange)>,
    Vec<(String, GuestRange)>,
    BTreeMap<u32, String>,
    Vec<u64>,
);

fn held(p: &memvisor_space::Placer) -> Held {
    (
        p.allocations().map(|(o, r)| (o.to_owned(), r)).collect(),
        p.port_allocations()
            .map(|(o, r)| (o.to_owned(), r))
            .collect(),
        (0..=128)
            .filter_map(|i| p.irq_owner(i).map(|o| (i, o.to_owned())))
            .collect(),
        [
            WindowKind::Ram,
            WindowKind::Device,
            WindowKind::Dax,
            WindowKind::Hotplug,
            WindowKind::Firmware,
        ]
        .into_iter()
        .map(|k| p.largest_free(k))
        .collect(),
    )
}

#[derive(Clone, Debug)]
enum Op {
    Place(u8, u64, u64),
    TakeIn(u8, u64, u64),
    Take(u64, u64),
    Release(u64, u64),
    IrqAt(u32),
    ReleaseIrq(u32),
    PortsAt(u64, u64),
    ReleasePorts(u64, u64),
}

/// Addresses and sizes at the edges: 0, pages, window edges, the top of the space.
fn edge() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(4 * KIB),
        Just(3 * GIB),
        Just(0xfec0_0000),
        Just(0xfffb_c000),
        Just(4 * GIB),
        Just(u64::MAX),
        Just(u64::MAX - 4 * KIB + 1),
        Just(1 << 63),
        (0u64..=64).prop_map(|i| (4 * KIB) << (i % 40)),
        any::<u64>(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<u8>(), edge(), edge()).prop_map(|(k, s, a)| Op::Place(k, s, a)),
        (any::<u8>(), edge(), edge()).prop_map(|(k, b, s)| Op::TakeIn(k, b, s)),
        (edge(), edge()).prop_map(|(b, s)| Op::Take(b, s)),
        (edge(), edge()).prop_map(|(b, s)| Op::Release(b, s)),
        prop_oneof![0u32..=140, any::<u32>()].prop_map(Op::IrqAt),
        prop_oneof![0u32..=140, any::<u32>()].prop_map(Op::ReleaseIrq),
        (prop_oneof![0u64..=0x1_0000, edge()], edge()).prop_map(|(b, s)| Op::PortsAt(b, s)),
        (prop_oneof![0u64..=0x1_0000, edge()], edge()).prop_map(|(b, s)| Op::ReleasePorts(b, s)),
    ]
}

fn kind(k: u8) -> WindowKind {
    [
        WindowKind::Ram,
        WindowKind::Device,
        WindowKind::Dax,
        WindowKind::Hotplug,
        WindowKind::Firmware,
        WindowKind::Reserved,
    ][usize::from(k) % 6]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn refused_placer_calls_on_a_plan_leave_it_as_it_was(
        r in accepted(),
        ops in prop::collection::vec(op(), 1..=(if cfg!(miri) { 4 } else { 48 })),
    ) {
        let mut placer = plan(&r).unwrap().placer;
        for op in ops {
            let before = held(&placer);
            let range = |b: u64, s: u64| GuestRange::new(GuestAddress(b), s);
            let refused = match op {
                Op::Place(k, s, a) => placer.place(kind(k), s, a, "extra").is_err(),
                Op::TakeIn(k, b, s) => match range(b, s) {
                    Ok(x) => placer.take_in(kind(k), x, "extra").is_err(),
                    Err(_) => true,
                },
                Op::Take(b, s) => match range(b, s) {
                    Ok(x) => placer.take(x, "extra").is_err(),
                    Err(_) => true,
                },
                Op::Release(b, s) => match range(b, s) {
                    Ok(x) => placer.release(x).is_err(),
                    Err(_) => true,
                },
                Op::IrqAt(i) => placer.irq_at(i, "extra").is_err(),
                Op::ReleaseIrq(i) => placer.release_irq(i).is_err(),
                Op::PortsAt(b, s) => match range(b, s) {
                    Ok(x) => placer.ports_at(x, "extra").is_err(),
                    Err(_) => true,
                },
                Op::ReleasePorts(b, s) => match range(b, s) {
                    Ok(x) => placer.release_ports(x).is_err(),
                    Err(_) => true,
                },
            };
            if refused {
                prop_assert_eq!(held(&placer), before);
            }
        }
    }

    /// A request refused is refused the same way every time, with its item and cause.
    #[test]
    fn refused_requests_are_refused_the_same_way_every_time(
        r in accepted(),
        phys_bits in prop_oneof![0u32..=31, 53u32..=u32::MAX],
        which in 0u8..6,
    ) {
        let mut r = r;
        match which {
            0 => r.phys_bits = phys_bits,
            1 => r.nodes[0].size = 0,
            2 => r.nodes[0].size = u64::MAX,
            3 => r.window_align = Some(3 * MIB),
            4 => r.nodes.clear(),
            _ => r.devices.push(DeviceRequest {
                name: "serial".into(),
                mmio_size: 4 * KIB,
                address: None,
                irq: None,
                dax_size: None,
            }),
        }
        let Err(a) = plan(&r) else { panic!("accepted {r:#?}") };
        let Err(b) = plan(&r) else { panic!("accepted the second time") };
        prop_assert_eq!(a.item, b.item);
        prop_assert_eq!(a.to_string(), b.to_string());
        prop_assert!(std::error::Error::source(&a).is_some());
    }
}

/// Slots of 1 GiB pages in a hotplug window aligned to 2 MiB after boot RAM that is no
/// multiple of 1 GiB: the window starts off their page, and the slots are laid from the first
/// 1 GiB boundary in it, all of them.
#[test]
fn one_gib_page_slots_fit_a_window_aligned_below_their_page() {
    for arch in [Arch::Aarch64, Arch::X86_64] {
        for slots in [1, 2, 5] {
            let r = PlanRequest {
                platform: Platform::new(arch),
                phys_bits: 40,
                nodes: vec![NodeRequest {
                    size: 64 * MIB,
                    memory: RegionSpec::ram(GuestAddress(0), 0),
                }],
                serial: None,
                devices: vec![DeviceRequest {
                    name: "pmem0".into(),
                    mmio_size: 4 * KIB,
                    address: None,
                    irq: None,
                    dax_size: Some(2 * MIB),
                }],
                hotplug: Some(HotplugRequest {
                    slots,
                    slot_size: GIB,
                    node: 0,
                    memory: RegionSpec::ram(GuestAddress(0), 0)
                        .with_huge_pages(HugePages::Explicit(HugePageSize::Size1G)),
                }),
                low_ram_limit: (arch == Arch::X86_64).then_some(0),
                window_align: Some(2 * MIB),
            };
            let p = plan(&r).unwrap_or_else(|e| panic!("{arch}, {slots} slots: {e}"));
            check(&r, &p);
            assert_eq!(p.slots.len(), slots as usize);
            let window = p.layout.windows_of(WindowKind::Hotplug).next().unwrap();
            let first = window.start().0.next_multiple_of(GIB);
            for (i, s) in p.slots.iter().enumerate() {
                assert_eq!(s.spec.base().0, first + i as u64 * GIB, "{arch}: slot {i}");
            }
            // The window holds the lead and the slots, no more than the alignment asks.
            assert_eq!(
                window.size(),
                (first - window.start().0) + u64::from(slots) * GIB
            );
        }
    }
}

/// The SRAT ranges of a plan are its guest nodes: two guest nodes on no host node, or on one
/// host node, are two proximity domains, and hotplug slots are their guest node's.
#[test]
fn plan_numa_ranges_name_guest_nodes_not_host_nodes() {
    let node = |size, host: Option<u32>| NodeRequest {
        size,
        memory: match host {
            Some(n) => RegionSpec::ram(GuestAddress(0), 0).with_numa(NumaBinding::bind(n)),
            None => RegionSpec::ram(GuestAddress(0), 0),
        },
    };
    for host in [None, Some(0), Some(3)] {
        let r = PlanRequest {
            platform: Platform::x86_64(),
            phys_bits: 40,
            // Node 1 crosses the 32-bit hole: two regions, one guest node.
            nodes: vec![node(2 * GIB, host), node(2 * GIB, host)],
            serial: None,
            devices: vec![],
            hotplug: Some(HotplugRequest {
                slots: 2,
                slot_size: GIB,
                node: 1,
                memory: RegionSpec::ram(GuestAddress(0), 0),
            }),
            low_ram_limit: None,
            window_align: None,
        };
        let p = plan(&r).unwrap();
        let hotplug = p
            .layout
            .windows_of(WindowKind::Hotplug)
            .next()
            .unwrap()
            .start()
            .0;
        let want = [
            NumaRange {
                node: 0,
                addr: 0,
                size: 2 * GIB,
                hotplug: false,
            },
            NumaRange {
                node: 1,
                addr: 2 * GIB,
                size: GIB,
                hotplug: false,
            },
            NumaRange {
                node: 1,
                addr: 4 * GIB,
                size: GIB,
                hotplug: false,
            },
            NumaRange {
                node: 1,
                addr: hotplug,
                size: 2 * GIB,
                hotplug: true,
            },
        ];
        assert_eq!(p.numa_ranges(), want, "host node {host:?}");
    }
}

fn any_size() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(4 * KIB),
        Just(2 * MIB),
        Just(3 * MIB),
        Just(GIB),
        Just(3 * GIB),
        Just(u64::MAX),
        Just(u64::MAX - 4 * KIB + 1),
        Just(1 << 63),
        (1u64..=64).prop_map(|n| n * 64 * MIB),
        any::<u64>(),
    ]
}

/// Requests of any values, valid or not.
fn any_request() -> impl Strategy<Value = PlanRequest> {
    let node = (any_size(), huge_pages(), any::<u8>());
    let device = (
        prop::sample::select(vec!["net0", "blk0", "serial", "", "eth0 DAX", "net0"]),
        any_size(),
        prop::option::of(any_size()),
        prop::option::of(prop_oneof![0u32..=130, any::<u32>()]),
        prop::option::of(any_size()),
    );
    (
        (any::<bool>(), prop_oneof![30u32..=66, any::<u32>()]),
        prop::collection::vec(node, 0..=4),
        prop::option::of((
            prop::option::of(prop_oneof![0u32..=130, any::<u32>()]),
            prop::option::of(any_size()),
            prop::option::of(any_size()),
        )),
        prop::collection::vec(device, 0..=6),
        prop::option::of((
            prop_oneof![0u32..=40, Just(u32::MAX)],
            any_size(),
            prop_oneof![0u32..=4, Just(u32::MAX)],
            huge_pages(),
        )),
        (prop::option::of(any_size()), prop::option::of(any_size())),
    )
        .prop_map(
            |((x86, phys_bits), nodes, serial, devices, hotplug, (low, align))| {
                let arch = if x86 { Arch::X86_64 } else { Arch::Aarch64 };
                PlanRequest {
                    platform: Platform::new(arch),
                    phys_bits,
                    nodes: nodes
                        .into_iter()
                        .enumerate()
                        .map(|(i, (size, pages, b))| NodeRequest {
                            size,
                            memory: memory(pages, b, None, &format!("node{i}")),
                        })
                        .collect(),
                    serial: serial.map(|(irq, port, address)| SerialRequest { irq, port, address }),
                    devices: devices
                        .into_iter()
                        .map(|(name, mmio_size, address, irq, dax_size)| DeviceRequest {
                            name: name.into(),
                            mmio_size,
                            address,
                            irq,
                            dax_size,
                        })
                        .collect(),
                    hotplug: hotplug.map(|(slots, slot_size, node, pages)| HotplugRequest {
                        slots,
                        slot_size,
                        node,
                        memory: memory(pages, 0, None, "slots"),
                    }),
                    low_ram_limit: low,
                    window_align: align,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases() * 4, ..ProptestConfig::default() })]

    /// Any request is planned into a valid map or refused, never a panic, and the same way
    /// twice.
    #[test]
    fn any_request_is_a_valid_map_or_refused_the_same_way_twice(r in any_request()) {
        match (plan(&r), plan(&r)) {
            (Ok(p), Ok(again)) => {
                check(&r, &p);
                prop_assert_eq!(&again.regions, &p.regions);
                prop_assert_eq!(&again.slots, &p.slots);
                prop_assert_eq!(&again.devices, &p.devices);
            }
            (Err(a), Err(b)) => {
                prop_assert_eq!(a.item, b.item);
                prop_assert_eq!(a.to_string(), b.to_string());
            }
            (a, b) => panic!("{:?} then {:?}", a.map(|_| ()), b.map(|_| ())),
        }
    }
}

fn x86_serial(serial: SerialRequest) -> PlanRequest {
    PlanRequest {
        platform: Platform::x86_64(),
        phys_bits: 40,
        nodes: vec![NodeRequest {
            size: 256 * MIB,
            memory: RegionSpec::ram(GuestAddress(0), 0),
        }],
        serial: Some(serial),
        devices: vec![],
        hotplug: None,
        low_ram_limit: None,
        window_align: None,
    }
}

/// KVM's in-kernel PICs, PIT and ELCR answer their ports in the kernel: a serial port over
/// one of them would never see its accesses, so the plan refuses it, and its placer keeps
/// them from any later device too.
#[test]
fn serial_ports_over_kvm_in_kernel_devices_are_refused() {
    for (port, other) in [
        (0x20, "PIC"),
        (0x1a, "PIC"),
        (0x3c, "PIT"),
        (0x43, "PIT"),
        (0x5a, "PIT"),
        (0x61, "PIT"),
        (0xa1, "PIC"),
        (0x4c9, "ELCR"),
        (0x4d1, "ELCR"),
    ] {
        let r = x86_serial(SerialRequest {
            port: Some(port),
            ..SerialRequest::default()
        });
        let e = plan(&r).map(|_| ()).unwrap_err();
        assert_eq!(e.item, PlanItem::SerialPort, "{port:#x}: {e}");
        assert!(
            matches!(&e.error, memvisor_space::Error::Taken { other: o, .. } if o == other),
            "{port:#x}: {e}"
        );
    }
    // Next to them, and COM1 to COM4, are planned.
    for port in [
        0x22, 0x38, 0x44, 0x62, 0x98, 0xa2, 0x4c8, 0x4d2, 0x3f8, 0x2f8, 0x3e8, 0x2e8,
    ] {
        let r = x86_serial(SerialRequest {
            port: Some(port),
            ..SerialRequest::default()
        });
        let mut p = plan(&r).unwrap_or_else(|e| panic!("{port:#x}: {e}"));
        // The plan's placer holds the in-kernel ports for what is placed later.
        let pit = GuestRange::new(GuestAddress(0x40), 4).unwrap();
        assert!(p.placer.ports_at(pit, "another UART").is_err());
    }
}

/// GSI 0 is the PIT's and GSI 2 the IOAPIC pin KVM routes it to (also the PICs' cascade):
/// the serial port does not get them, as no device does.
#[test]
fn serial_interrupts_of_the_timer_are_refused() {
    for irq in [0, 2] {
        let r = x86_serial(SerialRequest {
            irq: Some(irq),
            ..SerialRequest::default()
        });
        let e = plan(&r).map(|_| ()).unwrap_err();
        assert_eq!(e.item, PlanItem::SerialIrq, "{irq}: {e}");
        assert!(
            matches!(e.error, memvisor_space::Error::IrqTaken { irq: i, .. } if i == irq),
            "{irq}: {e}"
        );
    }
    for irq in [1, 3, 4, 5, 15] {
        let r = x86_serial(SerialRequest {
            irq: Some(irq),
            ..SerialRequest::default()
        });
        let p = plan(&r).unwrap_or_else(|e| panic!("{irq}: {e}"));
        assert_eq!(p.devices[0].irq, irq);
    }
}

/// Hotplug slots right after boot RAM of their own guest node (AArch64, windows aligned to
/// 2 MiB: the hotplug window starts where RAM ends) are a range of their own, flagged
/// hot-pluggable, and so are boot RAM ranges of two nodes that touch.
#[test]
fn plan_numa_ranges_keep_touching_ranges_of_other_nodes_or_flags_apart() {
    let node = NodeRequest {
        size: 64 * MIB,
        memory: RegionSpec::ram(GuestAddress(0), 0),
    };
    for hotplug_node in [0, 1] {
        let r = PlanRequest {
            platform: Platform::aarch64(),
            phys_bits: 40,
            nodes: vec![node.clone(), node.clone()],
            serial: None,
            devices: vec![],
            hotplug: Some(HotplugRequest {
                slots: 3,
                slot_size: 2 * MIB,
                node: hotplug_node,
                memory: RegionSpec::ram(GuestAddress(0), 0),
            }),
            low_ram_limit: None,
            window_align: Some(2 * MIB),
        };
        let p = plan(&r).unwrap();
        check(&r, &p);
        let range = |node, addr, size, hotplug| NumaRange {
            node,
            addr,
            size,
            hotplug,
        };
        assert_eq!(
            p.numa_ranges(),
            [
                range(0, GIB, 64 * MIB, false),
                range(1, GIB + 64 * MIB, 64 * MIB, false),
                range(hotplug_node, GIB + 128 * MIB, 6 * MIB, true),
            ],
            "slots on node {hotplug_node}"
        );
    }
}

/// A hotplug window that starts on the slots' page holds no lead: the layout is the one a
/// window of the slots alone gives, and the windows after it (DAX) do not move.
#[test]
fn hotplug_windows_starting_on_the_slots_page_hold_the_slots_alone() {
    // x86-64 RAM below the hole (hotplug from 4 GiB) and AArch64 RAM of whole GiBs.
    for (platform, ram) in [
        (Platform::x86_64(), 2 * GIB),
        (Platform::aarch64(), 3 * GIB),
    ] {
        let aligns: &[Option<u64>] = if cfg!(miri) {
            &[Some(2 * MIB)]
        } else {
            &[None, Some(2 * MIB), Some(128 * MIB)]
        };
        for &window_align in aligns {
            let r = PlanRequest {
                platform: platform.clone(),
                phys_bits: 46,
                nodes: vec![NodeRequest {
                    size: ram,
                    memory: RegionSpec::ram(GuestAddress(0), 0),
                }],
                serial: None,
                devices: vec![DeviceRequest {
                    name: "pmem0".into(),
                    mmio_size: 4 * KIB,
                    address: None,
                    irq: None,
                    dax_size: Some(2 * MIB),
                }],
                hotplug: Some(HotplugRequest {
                    slots: 3,
                    slot_size: GIB,
                    node: 0,
                    memory: RegionSpec::ram(GuestAddress(0), 0)
                        .with_huge_pages(HugePages::Explicit(HugePageSize::Size1G)),
                }),
                low_ram_limit: None,
                window_align,
            };
            let p = plan(&r).unwrap_or_else(|e| panic!("{window_align:?}: {e}"));
            check(&r, &p);
            let mut preset = platform.layout().ram(ram).phys_bits(46).hotplug(3 * GIB);
            preset = preset.dax(2 * MIB);
            if let Some(a) = window_align {
                preset = preset.window_align(a);
            }
            assert_eq!(p.layout, preset.build().unwrap(), "{window_align:?}");
            let window = p.layout.windows_of(WindowKind::Hotplug).next().unwrap();
            assert_eq!(window.size(), 3 * GIB, "{window_align:?}");
            assert_eq!(p.slots[0].spec.base(), window.start(), "{window_align:?}");
        }
    }
}

/// Every port KVM's in-kernel PICs, PIT and ELCR answer, and the timer's interrupts, stay
/// held in an x86-64 plan's placer, whatever is asked of it later (a window of ports over any
/// one of them, an interrupt by number or the next free one); an AArch64 plan holds neither.
#[test]
fn kvm_in_kernel_ports_and_timer_interrupts_stay_held_for_later_devices() {
    let kernel = [
        (0x20, 0x21, "PIC"),
        (0x40, 0x43, "PIT"),
        (0x61, 0x61, "PIT"),
        (0xa0, 0xa1, "PIC"),
        (0x4d0, 0x4d1, "ELCR"),
    ];
    for serial in [None, Some(SerialRequest::default())] {
        let r = PlanRequest {
            serial,
            ..x86_serial(SerialRequest::default())
        };
        let mut placer = plan(&r).unwrap().placer;
        for &(first, last, device) in &kernel {
            for port in first..=last {
                for len in [1, 2, 8] {
                    let base = port + 1 - len.min(port + 1);
                    let ports = GuestRange::new(GuestAddress(base), len).unwrap();
                    let e = placer.ports_at(ports, "uart").unwrap_err();
                    assert!(
                        matches!(&e, memvisor_space::Error::Taken { other, .. } if other == device),
                        "{ports:?}: {e}"
                    );
                }
            }
        }
        for gsi in [0, 2] {
            let e = placer.irq_at(gsi, "uart").unwrap_err();
            assert!(
                matches!(e, memvisor_space::Error::IrqTaken { irq, .. } if irq == gsi),
                "GSI {gsi}: {e}"
            );
        }
        for _ in 0..19 {
            let gsi = placer.irq("virtio").unwrap();
            assert!(gsi > 4, "GSI {gsi}");
        }
    }
    // AArch64: no port space, and no interrupt held but the serial port's.
    let r = PlanRequest {
        platform: Platform::aarch64(),
        serial: Some(SerialRequest::default()),
        ..x86_serial(SerialRequest::default())
    };
    let p = plan(&r).unwrap();
    assert_eq!(p.placer.port_allocations().count(), 0);
    let owners: Vec<_> = (0..=1019)
        .filter_map(|i| p.placer.irq_owner(i).map(|o| (i, o.to_owned())))
        .collect();
    assert_eq!(owners, [(p.devices[0].irq, "serial".to_owned())]);
}

/// An x86-64 plan's placer holds the ports of KVM's in-kernel devices under their names
/// (`PIC`, `PIT`, `ELCR`): a device of one of those names would be told apart from them
/// nowhere (its window and their ports under one owner, a later `Taken` naming either), so it
/// is refused as the names of the map's other parts are, on every platform.
#[test]
fn devices_named_as_kvm_in_kernel_devices_are_refused() {
    for name in ["PIC", "PIT", "ELCR"] {
        assert!(names_other_map_part(name), "{name}");
        for platform in [Platform::x86_64(), Platform::aarch64()] {
            let r = PlanRequest {
                platform,
                devices: vec![DeviceRequest {
                    name: name.into(),
                    mmio_size: 4 * KIB,
                    address: None,
                    irq: None,
                    dax_size: None,
                }],
                ..x86_serial(SerialRequest::default())
            };
            let r = PlanRequest { serial: None, ..r };
            let e = plan(&r).map(|_| ()).unwrap_err();
            assert_eq!(e.item, PlanItem::DeviceName(0), "{name}: {e}");
            assert!(
                matches!(&e.error, memvisor_space::Error::InvalidName { name: n, .. } if n == name),
                "{name}: {e}"
            );
        }
    }
    // Names that only contain them are devices' own.
    for name in ["PIT0", "pic", "ELCR, PIC", "my PIC"] {
        assert!(!names_other_map_part(name), "{name}");
    }
}

/// Plans at the edges of what the planner takes, checked as the guest reads their maps: 32
/// address bits (x86-64 boot RAM below the hole only, AArch64 RAM below 4 GiB) and 52, every
/// interrupt given to a device (some with DAX windows), several nodes with the hotplug slots on
/// the last, with and without PCI MMCONFIG. A request that cannot fit 32 bits is refused,
/// typed, at the part that did not fit; every plan made passes [`check`].
#[test]
fn plans_at_the_address_bit_limits_are_valid_maps() {
    let mut made = 0;
    for arch in Arch::ALL {
        let free_irqs = match arch {
            Arch::X86_64 => 19,
            Arch::Aarch64 => 96,
        };
        for (bits, mmconfig, nodes, devices, hotplug) in itertools_product() {
            if mmconfig && arch != Arch::X86_64 {
                continue;
            }
            let mut platform = Platform::new(arch);
            if mmconfig {
                platform = platform.with_pci_mmconfig().unwrap();
            }
            let node = |i: usize| NodeRequest {
                size: 256 * MIB,
                memory: memory(HugePages::None, 0, None, &format!("node{i}")),
            };
            // Every interrupt a device can get: on AArch64 the serial port takes one of them.
            let count = match (devices, arch) {
                (false, _) => 0,
                (true, Arch::X86_64) => free_irqs,
                (true, Arch::Aarch64) => free_irqs - 1,
            };
            let r = PlanRequest {
                platform,
                phys_bits: bits,
                nodes: (0..nodes).map(node).collect(),
                serial: (arch == Arch::Aarch64 || !devices).then(SerialRequest::default),
                devices: (0..count)
                    .map(|i| DeviceRequest {
                        name: format!("dev{i}"),
                        mmio_size: (4 * KIB) << (i % 4),
                        address: None,
                        irq: None,
                        dax_size: (i % 7 == 0).then_some(DAX_ALIGN),
                    })
                    .collect(),
                hotplug: hotplug.then(|| HotplugRequest {
                    slots: 4,
                    slot_size: 128 * MIB,
                    node: u32::try_from(nodes - 1).unwrap(),
                    memory: memory(HugePages::None, 0, None, "slots"),
                }),
                low_ram_limit: None,
                window_align: Some(2 * MIB),
            };
            match plan(&r) {
                Ok(p) => {
                    check(&r, &p);
                    made += 1;
                }
                Err(e) => {
                    assert_eq!(bits, 32, "{arch} {bits}: {e}");
                    assert!(
                        matches!(
                            e.error,
                            memvisor_space::Error::AddressLimit { .. }
                                | memvisor_space::Error::NoRoom { .. }
                        ),
                        "{arch} {bits} {nodes} {devices} {hotplug}: {e}"
                    );
                    assert!(
                        matches!(
                            e.item,
                            PlanItem::Hotplug | PlanItem::DeviceDaxSize(_) | PlanItem::Memory
                        ),
                        "{arch}: {e}"
                    );
                }
            }
        }
    }
    assert!(made >= 16, "{made} plans made");
}

/// Address bits, MMCONFIG, node count, every interrupt used, hotplug slots.
fn itertools_product() -> impl Iterator<Item = (u32, bool, usize, bool, bool)> {
    [32u32, 52].into_iter().flat_map(|bits| {
        [false, true].into_iter().flat_map(move |mmconfig| {
            [1usize, 3].into_iter().flat_map(move |nodes| {
                [false, true].into_iter().flat_map(move |devices| {
                    [false, true]
                        .into_iter()
                        .map(move |hotplug| (bits, mmconfig, nodes, devices, hotplug))
                })
            })
        })
    })
}
