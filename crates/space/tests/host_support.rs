//! What each host system backs: anonymous memory, the hotplug window and vm-memory adoption on
//! every system; a feature the host does not have (memfds, hugetlbfs, NUMA binding, huge pages,
//! dontfork and discarding off Linux; shared anonymous memory, file mappings and vm-memory
//! mappings over this crate's memory on Windows) is `Error::Unsupported`, naming the feature
//! and where it exists, before anything is made. A fallback the spec allows is taken instead,
//! and the report says so.

#![allow(clippy::cast_possible_truncation)]

use memvisor_space::{
    AddressSpace, Backing, Error, HugePageFallback, HugePageSize, HugePages, Layout, NumaBinding,
    Protection, Region, RegionSpec, RegionType,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, MemoryRegionAddress};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn page() -> u64 {
    memvisor_vmem::page_size() as u64
}

/// Checks that `result` is `Error::Unsupported` for `feature`, only on `only_on`, off the
/// systems that have it; on those, whatever else it is, it is not that error.
fn refused_where_missing<T: std::fmt::Debug>(
    result: memvisor_space::Result<T>,
    feature: &str,
    only_on: &str,
    here: bool,
) {
    match result {
        Err(Error::Unsupported {
            feature: f,
            only_on: o,
            base,
        }) => {
            assert!(!here, "{feature} is refused on a host that has it");
            assert!(f.contains(feature), "{f} does not name {feature}");
            assert_eq!(o, only_on, "{f}");
            let text = Error::Unsupported {
                feature: f,
                base,
                only_on: o,
            }
            .to_string();
            assert!(text.contains(&format!("only on {only_on}")), "{text}");
            assert!(text.contains(std::env::consts::OS), "{text}");
        }
        other => assert!(here, "{feature} gave {other:?} on a host without it"),
    }
}

const LINUX: bool = cfg!(target_os = "linux");
const UNIX: &str = "Unix systems (Linux, macOS, FreeBSD)";

#[test]
#[cfg_attr(miri, ignore = "memfds, files and sysfs: Miri has none")]
fn linux_only_features_are_refused_by_name_elsewhere() {
    let ram = || RegionSpec::ram(GuestAddress(0), 2 * MIB);
    let explicit = HugePages::Explicit(HugePageSize::Size2M);
    let cases = [
        (ram().with_backing(Backing::Memfd), "memfd"),
        (
            ram()
                .with_backing(Backing::Hugetlbfs(std::env::temp_dir()))
                .with_huge_pages(explicit),
            "hugetlbfs",
        ),
        (ram().with_numa(NumaBinding::bind(0)), "NUMA binding"),
        (ram().with_dontfork(true), "MADV_DONTFORK"),
        (
            ram()
                .with_huge_pages(explicit)
                .with_fallback(HugePageFallback::Fail),
            "explicit huge pages",
        ),
        (
            ram()
                .with_huge_pages(HugePages::Transparent)
                .with_fallback(HugePageFallback::Fail),
            "transparent huge pages",
        ),
    ];
    for (spec, feature) in cases {
        refused_where_missing(Region::back(spec), feature, "Linux", LINUX);
    }
}

#[test]
#[cfg_attr(miri, ignore = "reads sysfs for the transparent huge page setting")]
fn huge_pages_fall_back_to_base_pages_where_allowed() {
    for huge in [
        HugePages::Explicit(HugePageSize::Size2M),
        HugePages::Transparent,
    ] {
        let spec = RegionSpec::ram(GuestAddress(0), 2 * MIB)
            .with_huge_pages(huge)
            .with_fallback(HugePageFallback::BasePages);
        let (region, report) = Region::back(spec).unwrap();
        let report = report.unwrap();
        if !LINUX {
            assert!(report.fell_back, "{report}");
            assert_eq!(report.huge_pages, HugePages::None);
            assert_eq!(report.page_size, page());
            assert!(
                report.warnings.iter().any(|w| w.contains("only on Linux")),
                "{report}"
            );
        }
        region.write_obj(7u32, MemoryRegionAddress(MIB)).unwrap();
        assert_eq!(region.read_obj::<u32>(MemoryRegionAddress(MIB)).unwrap(), 7);
    }
}

#[test]
fn discard_is_linux_only() {
    let p = page();
    let (region, _) = Region::back(RegionSpec::ram(GuestAddress(0), 4 * p)).unwrap();
    region.write_obj(9u8, MemoryRegionAddress(p)).unwrap();
    // Bad input is refused as such on every host, before the host is asked.
    assert!(matches!(
        region.discard(0, 5 * p),
        Err(Error::DiscardOutOfRange { .. })
    ));
    refused_where_missing(region.discard(0, p), "discarding pages", "Linux", LINUX);
    assert_eq!(region.read_obj::<u8>(MemoryRegionAddress(p)).unwrap(), 9);
}

#[test]
#[cfg_attr(miri, ignore = "maps a file: Miri has no file mappings")]
fn shared_and_file_backings_are_unix_only() {
    let path = std::env::temp_dir().join(format!("memvisor-host-{}.img", std::process::id()));
    std::fs::write(&path, vec![0x5a; (2 * page()) as usize]).unwrap();
    let ram = || RegionSpec::ram(GuestAddress(0), 2 * page());
    refused_where_missing(
        Region::back(ram().with_backing(Backing::AnonymousShared)),
        "shared anonymous",
        UNIX,
        cfg!(unix),
    );
    let file = ram().with_backing(Backing::File {
        path: path.clone(),
        offset: 0,
    });
    let backed = Region::back(file);
    if let Ok((region, _)) = &backed {
        assert_eq!(region.read_obj::<u8>(MemoryRegionAddress(0)).unwrap(), 0x5a);
    }
    refused_where_missing(backed, "file backing", UNIX, cfg!(unix));
    std::fs::remove_file(&path).unwrap();
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a 1 GiB hotplug window is too large for Miri's allocator-backed reservations"
)]
fn anonymous_memory_and_hotplug_work_everywhere() {
    let p = page();
    let layout = Layout::x86_64().ram(GIB).hotplug(GIB).build().unwrap();
    let hp = layout
        .windows_of(memvisor_space::WindowKind::Hotplug)
        .next()
        .unwrap()
        .start()
        .0;
    let specs = [
        RegionSpec::ram(GuestAddress(0), 4 * p).with_prefault_threads(2),
        RegionSpec::new(RegionType::Firmware, GuestAddress(0xffc0_0000), 2 * p)
            .with_protection(Protection::Read)
            .with_prefault_threads(1),
    ];
    let (space, report) = AddressSpace::back(layout, specs).unwrap();
    assert_eq!(report.total_bytes(), 6 * p);
    assert!(report.hotplug_window.is_some());
    let mem = space.memory();
    mem.write_obj(0x1234_5678_u32, GuestAddress(p - 2)).unwrap();
    assert_eq!(
        mem.read_obj::<u32>(GuestAddress(p - 2)).unwrap(),
        0x1234_5678
    );
    // The read-only region reads zeros and refuses writes.
    let bytes = mem.bytes();
    assert_eq!(bytes.read_obj::<u64>(GuestAddress(0xffc0_0000)).unwrap(), 0);
    assert!(bytes.write_obj(1u8, GuestAddress(0xffc0_0000)).is_err());
    drop(mem);

    let slot = GuestAddress(hp + 2 * MIB);
    let (region, plugged) = space
        .plug(RegionSpec::ram(slot, 2 * MIB).with_hotplug(true))
        .unwrap();
    assert!(plugged.in_hotplug_window);
    let (window_host, _) = report.hotplug_window.unwrap();
    assert_eq!(plugged.host_addr, window_host + 2 * MIB as usize);
    space.memory().write_obj(0xab_u8, slot).unwrap();
    drop(region);
    space.remove_region(slot, 2 * MIB).unwrap();
    // Plugged again: fresh memory.
    let (_, again) = space
        .plug(RegionSpec::ram(slot, 2 * MIB).with_hotplug(true))
        .unwrap();
    assert_eq!(again.host_addr, plugged.host_addr);
    assert_eq!(space.memory().read_obj::<u8>(slot).unwrap(), 0);
}

#[test]
#[cfg_attr(miri, ignore = "vm-memory's own mmap: Miri cannot map")]
fn vm_memory_adoption_everywhere_and_mappings_over_ours_on_unix() {
    let layout = Layout::x86_64().ram(GIB).build().unwrap();
    let gm = vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 * MIB as usize)])
        .unwrap();
    let space = AddressSpace::from_guest_memory_mmap(layout, &gm).unwrap();
    gm.write_obj(77u32, GuestAddress(0x100)).unwrap();
    let snap = space.snapshot();
    assert_eq!(
        snap.protection(GuestAddress(0)),
        Some(Protection::ReadWrite)
    );
    assert_eq!(snap.read_obj::<u32>(GuestAddress(0x100)).unwrap(), 77);
    // SAFETY: `snap` outlives the result (dropped first below).
    let back = unsafe { snap.to_guest_memory_mmap() };
    if let Ok(back) = &back {
        assert_eq!(back.num_regions(), 1);
        assert_eq!(back.read_obj::<u32>(GuestAddress(0x100)).unwrap(), 77);
    }
    refused_where_missing(back, "vm-memory mapping", UNIX, cfg!(unix));
}
