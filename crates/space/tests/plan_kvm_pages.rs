//! KVM's TSS and identity-map pages and its in-kernel devices, for every kind of plan: where
//! the pages lie against every window, region and map entry a plan makes (low-RAM limits,
//! 32 to 52 address bits, hotplug and DAX windows, PCI MMCONFIG), what `Platform::placer`
//! holds and gives back, and the address bits a plan refuses before it lays anything out.
#![cfg(not(miri))]

use memvisor_space::plan::{
    DeviceRequest, HotplugRequest, NodeRequest, PlanItem, PlanRequest, SerialRequest, plan,
};
use memvisor_space::{
    Arch, E820_MAX_ENTRIES, Error, GuestRange, LEGACY_HOLE, MemoryType, Platform, RegionSpec,
    RegionType, ReservationKind, WindowKind,
};
use vm_memory::GuestAddress;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const PAGE: u64 = 4 * KIB;

fn ram_spec() -> RegionSpec {
    RegionSpec::ram(GuestAddress(0), 0)
}

fn request(platform: Platform, bits: u32, nodes: &[u64]) -> PlanRequest {
    PlanRequest {
        platform,
        phys_bits: bits,
        nodes: nodes
            .iter()
            .map(|&size| NodeRequest {
                size,
                memory: ram_spec(),
            })
            .collect(),
        serial: Some(SerialRequest::default()),
        devices: (0..6)
            .map(|i| DeviceRequest {
                name: format!("dev{i}"),
                mmio_size: PAGE << (i * 3),
                address: None,
                irq: None,
                dax_size: (i % 3 == 0).then_some(2 * MIB),
            })
            .collect(),
        hotplug: None,
        low_ram_limit: None,
        window_align: None,
    }
}

fn kvm_pages(platform: &Platform) -> GuestRange {
    platform
        .reservations()
        .iter()
        .find(|r| r.name() == "KVM TSS, identity map")
        .unwrap()
        .range()
}

fn range(first: u64, last: u64) -> GuestRange {
    GuestRange::inclusive(GuestAddress(first), GuestAddress(last)).unwrap()
}

/// Every x86-64 plan, whatever its low-RAM limit, address bits, node sizes, hotplug slots and
/// DAX windows, leaves KVM's 5 pages to KVM: they lie in the firmware window only, under no
/// planned region but a reserved one and no device, held by the plan's placer; its memory map
/// (and e820 table) is sorted, apart, lists them reserved exactly once, lists each byte of
/// boot RAM exactly once as RAM and no RAM in any range the platform reserves. An AArch64
/// plan lists none of it.
#[test]
fn kvm_pages_are_never_ram_or_a_window_in_any_plan() {
    let limits = [
        None,
        Some(0),
        Some(PAGE),
        Some(640 * KIB),
        Some(MIB),
        Some(3 * GIB - PAGE),
        Some(3 * GIB),
        Some(8 * GIB),
    ];
    let mut made = 0;
    for mmconfig in [false, true] {
        let mut platform = Platform::x86_64();
        if mmconfig {
            platform = platform.with_pci_mmconfig().unwrap();
        }
        let kvm = kvm_pages(&platform);
        for bits in [32, 36, 40, 52] {
            for low in limits {
                for nodes in [&[256 * MIB][..], &[GIB, 2 * GIB + PAGE], &[3 * GIB]] {
                    for hotplug in [false, true] {
                        let mut r = request(platform.clone(), bits, nodes);
                        r.low_ram_limit = low;
                        r.hotplug = hotplug.then(|| HotplugRequest {
                            slots: 2,
                            slot_size: 128 * MIB,
                            node: 0,
                            memory: ram_spec(),
                        });
                        let what = format!("{bits} {low:x?} {nodes:x?} {hotplug} {mmconfig}");
                        let p = match plan(&r) {
                            Ok(p) => p,
                            Err(e) => {
                                // Only what does not fit 32 or 36 address bits is refused.
                                assert!(bits < 40, "{what}: {e}");
                                assert!(
                                    matches!(
                                        e.error,
                                        Error::AddressLimit { .. } | Error::NoRoom { .. }
                                    ),
                                    "{what}: {e}"
                                );
                                continue;
                            }
                        };
                        made += 1;
                        for w in p.layout.windows() {
                            if w.range().overlaps(&kvm) {
                                assert_eq!(w.kind(), WindowKind::Firmware, "{what}");
                                assert!(w.range().contains_range(&kvm), "{what}");
                            }
                        }
                        for x in p.regions.iter().chain(&p.slots) {
                            let x_range = GuestRange::new(x.spec.base(), x.spec.size()).unwrap();
                            assert!(
                                x.spec.ty() == RegionType::Reserved || !x_range.overlaps(&kvm),
                                "{what}: {} over {kvm}",
                                x.owner
                            );
                        }
                        for d in &p.devices {
                            assert!(d.mmio.is_none_or(|m| !m.overlaps(&kvm)), "{what}");
                        }
                        for page in [kvm.start().0, kvm.last().0] {
                            assert_eq!(
                                p.placer.owner_of(GuestAddress(page)),
                                Some(("KVM TSS, identity map", kvm)),
                                "{what}"
                            );
                        }
                        check_map(&platform, &p, &what);
                    }
                }
            }
        }
    }
    assert!(made >= 150, "{made} plans made");
    let arm = Platform::aarch64();
    let p = plan(&request(arm, 40, &[GIB])).unwrap();
    assert!(p.memory_map().iter().all(|e| e.ty == MemoryType::Ram));
}

/// The plan's map as the guest reads it.
fn check_map(platform: &Platform, p: &memvisor_space::plan::Plan, what: &str) {
    let kvm = kvm_pages(platform);
    let map = p.memory_map();
    assert!(
        map.windows(2).all(|w| w[0].last() < w[1].addr),
        "{what}: {map:x?}"
    );
    assert!(map.iter().all(|e| e.size > 0), "{what}: {map:x?}");
    let listed: Vec<_> = map
        .iter()
        .filter(|e| e.addr == kvm.start().0)
        .map(|e| (e.size, e.ty))
        .collect();
    assert_eq!(
        listed,
        [(5 * PAGE, MemoryType::Reserved)],
        "{what}: {map:x?}"
    );
    // Each byte of boot RAM once, as RAM (the legacy hole reserved instead), and nothing else.
    let mut boot: Vec<(u64, u64)> = p
        .regions
        .iter()
        .filter(|r| r.spec.ty() == RegionType::Ram && !r.spec.hotplug())
        .map(|r| (r.spec.base().0, r.spec.base().0 + r.spec.size() - 1))
        .collect();
    boot.sort_unstable();
    let mut want: Vec<(u64, u64)> = Vec::new();
    for (first, last) in boot {
        for (a, b) in [
            (first, last.min(LEGACY_HOLE.start() - 1)),
            (first.max(LEGACY_HOLE.end() + 1), last),
        ] {
            if a > b {
                continue;
            }
            match want.last_mut() {
                Some(prev) if prev.1 + 1 == a => prev.1 = b,
                _ => want.push((a, b)),
            }
        }
    }
    let ram: Vec<(u64, u64)> = map
        .iter()
        .filter(|e| e.ty == MemoryType::Ram)
        .map(|e| (e.addr, e.last()))
        .collect();
    assert_eq!(ram, want, "{what}: {map:x?}");
    for e in map.iter().filter(|e| e.ty == MemoryType::Ram) {
        let e = range(e.addr, e.last());
        for r in platform.reservations_of(ReservationKind::Reserved) {
            assert!(!e.overlaps(&r.range()), "{what}: RAM {e} over {}", r.name());
        }
    }
    let table = p.e820_table().unwrap();
    assert_eq!(table, map, "{what}");
    assert!(table.len() <= E820_MAX_ENTRIES, "{what}");
}

/// `Platform::placer` of x86-64 holds exactly the ports of `kernel_ports`, each under its
/// device's name, and exactly GSIs 0 and 2 (`legacy ISA`); each is given back exactly as held,
/// and a timer GSI given back is given again only by number. AArch64's holds nothing.
#[test]
fn platform_placer_holds_exactly_the_kernel_devices_and_gives_them_back() {
    let platform = Platform::x86_64();
    let layout = platform.layout().ram(GIB).build().unwrap();
    let mut p = platform.placer(&layout).unwrap();
    let mut held: Vec<(String, GuestRange)> = p
        .port_allocations()
        .map(|(o, r)| (o.to_owned(), r))
        .collect();
    held.sort_by_key(|(_, r)| *r);
    let mut want: Vec<(String, GuestRange)> = platform
        .kernel_ports()
        .iter()
        .map(|&(d, first, last)| (d.to_owned(), range(first, last)))
        .collect();
    want.sort_by_key(|(_, r)| *r);
    assert_eq!(held, want);
    let owners: Vec<u32> = platform
        .irq_range()
        .filter(|&i| p.irq_owner(i).is_some())
        .collect();
    assert_eq!(owners, [0, 2]);
    assert!(owners.iter().all(|&i| p.irq_owner(i) == Some("legacy ISA")));
    // A part of a device's ports is not what was held.
    assert!(matches!(
        p.release_ports(range(0x40, 0x41)),
        Err(Error::NotPlaced { .. })
    ));
    for (_, r) in &want {
        p.release_ports(*r).unwrap();
        assert!(matches!(p.release_ports(*r), Err(Error::NotPlaced { .. })));
    }
    assert_eq!(p.port_allocations().count(), 0);
    for gsi in [0, 2] {
        p.release_irq(gsi).unwrap();
        assert_eq!(p.irq_owner(gsi), None);
        assert!(matches!(p.release_irq(gsi), Err(Error::IrqNotTaken { .. })));
    }
    let first_come: Vec<u32> = (0..3).map(|i| p.irq(&format!("d{i}")).unwrap()).collect();
    assert_eq!(first_come, [5, 6, 7]);
    assert_eq!(p.irq_at(0, "pit").unwrap(), 0);
    assert_eq!(p.irq_at(2, "cascade").unwrap(), 2);
    for (name, r) in &want {
        p.ports_at(*r, &format!("own {name}")).unwrap();
    }

    let arm = Platform::aarch64();
    let p = arm.placer(&arm.layout().build().unwrap()).unwrap();
    assert_eq!(p.port_allocations().count(), 0);
    assert!(arm.irq_range().all(|i| p.irq_owner(i).is_none()));
}

/// A plan's placer holds each of KVM's in-kernel ports once and the serial port's beside them:
/// the plan's own placer is `Platform::placer`'s, and the plan holds nothing twice.
#[test]
fn plan_placer_holds_kernel_ports_once() {
    let platform = Platform::x86_64();
    let p = plan(&request(platform.clone(), 40, &[GIB])).unwrap();
    let mut held: Vec<(String, GuestRange)> = p
        .placer
        .port_allocations()
        .map(|(o, r)| (o.to_owned(), r))
        .collect();
    held.sort_by_key(|(_, r)| *r);
    let mut want: Vec<(String, GuestRange)> = platform
        .kernel_ports()
        .iter()
        .map(|&(d, first, last)| (d.to_owned(), range(first, last)))
        .chain([("serial".to_owned(), range(0x3f8, 0x3ff))])
        .collect();
    want.sort_by_key(|(_, r)| *r);
    assert_eq!(held, want);
    assert_eq!(p.placer.irq_owner(0), Some("legacy ISA"));
    assert_eq!(p.placer.irq_owner(2), Some("legacy ISA"));
    assert_eq!(p.placer.irq_owner(4), Some("serial"));
}

/// The address bits are checked before anything is laid out, for every request: bits outside
/// 32 to 52 are refused at `PlanItem::PhysBits` even when the layout could not be built for
/// another reason too, and bits inside never are.
#[test]
fn address_bits_are_refused_first_and_only_outside_32_to_52() {
    let requests = |arch: Arch| {
        let platform = Platform::new(arch);
        let mut huge = request(platform.clone(), 40, &[u64::MAX / 2, u64::MAX / 2]);
        huge.hotplug = Some(HotplugRequest {
            slots: 1,
            slot_size: 1 << 62,
            node: 0,
            memory: ram_spec(),
        });
        let mut none = request(platform.clone(), 40, &[]);
        none.low_ram_limit = Some(0x800);
        let mut aligned = request(platform.clone(), 40, &[GIB]);
        aligned.window_align = Some(3);
        [request(platform, 40, &[GIB]), huge, none, aligned]
    };
    for arch in Arch::ALL {
        for bits in (0..=80).chain([u32::MAX - 1, u32::MAX]) {
            for mut r in requests(arch) {
                r.phys_bits = bits;
                let refused = plan(&r).err().map(|e| e.item);
                if (32..=52).contains(&bits) {
                    assert_ne!(refused, Some(PlanItem::PhysBits), "{arch} {bits}");
                } else {
                    assert_eq!(refused, Some(PlanItem::PhysBits), "{arch} {bits}");
                }
            }
        }
    }
}

/// The low-RAM limit a plan takes: any multiple of the guest page on x86-64, 0 included; an
/// unaligned limit is refused at `PlanItem::Memory`, and so is any limit on AArch64.
#[test]
fn low_ram_limits_a_plan_takes() {
    let x86 = Platform::x86_64();
    for low in [0, PAGE, 640 * KIB, 3 * GIB, u64::MAX - (PAGE - 1)] {
        let mut r = request(x86.clone(), 40, &[GIB]);
        r.low_ram_limit = Some(low);
        let p = plan(&r).unwrap_or_else(|e| panic!("{low:#x}: {e}"));
        let below_4g: u64 = p
            .memory_map()
            .iter()
            .filter(|e| e.ty == MemoryType::Ram && e.addr < 4 * GIB)
            .map(|e| e.size)
            .sum();
        assert!(below_4g <= low, "{low:#x}");
    }
    for low in [1, 0x800, PAGE + 1, u64::MAX] {
        let mut r = request(x86.clone(), 40, &[GIB]);
        r.low_ram_limit = Some(low);
        let e = plan(&r).unwrap_err();
        assert_eq!(e.item, PlanItem::Memory, "{low:#x}: {e}");
        assert!(matches!(e.error, Error::InvalidLayout { .. }), "{e}");
    }
    let mut r = request(Platform::aarch64(), 40, &[GIB]);
    r.low_ram_limit = Some(0);
    let e = plan(&r).unwrap_err();
    assert_eq!(e.item, PlanItem::Memory, "{e}");
}
