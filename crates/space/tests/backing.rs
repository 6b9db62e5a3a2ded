//! Real backing memory: every backing kind mapped, written through `vm_memory::Bytes` and read
//! back; NUMA binding checked in `/proc/self/numa_maps`; prefault checked by residency; the
//! hotplug window keeps plugged memory contiguous on the host. Tests of Linux's features
//! (memfds, hugetlbfs, NUMA, huge pages, sysfs and `/proc` accounting) run on Linux only, those
//! of file mappings and vm-memory's raw-pointer mappings on Unix systems; the rest everywhere.

#![allow(clippy::cast_possible_truncation)]
#![cfg_attr(miri, allow(dead_code, unused_imports))]
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use memvisor_space::{
    AddressSpace, Backing, Error, HugePageFallback, HugePageSize, HugePages, Layout, NumaBinding,
    NumaPolicy, Protection, Region, RegionSpec, RegionType, Window, WindowKind,
};
use memvisor_testkit::huge_page_lock::huge_page_lock;
use memvisor_testkit::watchdog::within;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn page() -> u64 {
    memvisor_vmem::page_size() as u64
}

/// Where the layout's hotplug window starts.
fn hotplug_start(layout: &Layout) -> u64 {
    layout
        .windows_of(WindowKind::Hotplug)
        .next()
        .unwrap()
        .start()
        .0
}

/// The `numa_maps` line of the mapping starting at `addr`.
#[cfg(target_os = "linux")]
fn numa_maps_line(addr: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/numa_maps").unwrap();
    let key = format!("{addr:x} ");
    maps.lines()
        .find(|l| l.starts_with(&key))
        .unwrap_or_else(|| panic!("no numa_maps line for {addr:#x}"))
        .to_owned()
}

/// Pages on node `node` according to a `numa_maps` line (`N0=123`).
#[cfg(target_os = "linux")]
fn pages_on_node(line: &str, node: u32) -> u64 {
    let key = format!("N{node}=");
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(&key))
        .map_or(0, |n| n.parse().unwrap())
}

#[cfg(target_os = "linux")]
#[test]
#[cfg_attr(miri, ignore = "memfds and file mappings: Miri has neither")]
fn every_backing_kind_round_trips_through_bytes() {
    let dir = std::env::temp_dir().join(format!("memvisor-space-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("flash.img");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&vec![0xa5; (2 * page()) as usize]).unwrap();
    f.write_all(b"firmware").unwrap();
    f.set_len(4 * page()).unwrap();
    drop(f);

    let layout = Layout::x86_64().ram(GIB).dax(GIB).build().unwrap();
    let dax = layout.windows_of(WindowKind::Dax).next().unwrap().start();
    let specs = [
        RegionSpec::ram(GuestAddress(0), 4 * MIB).with_backing(Backing::AnonymousPrivate),
        RegionSpec::ram(GuestAddress(4 * MIB), 4 * MIB).with_backing(Backing::AnonymousShared),
        RegionSpec::ram(GuestAddress(8 * MIB), 4 * MIB)
            .with_backing(Backing::Memfd)
            .with_dontfork(true),
        RegionSpec::ram(GuestAddress(12 * MIB), 4 * MIB).with_huge_pages(HugePages::Transparent),
        RegionSpec::new(RegionType::Dax, dax, 2 * MIB).with_backing(Backing::Memfd),
        RegionSpec::new(RegionType::Firmware, GuestAddress(0xffc0_0000), 2 * page())
            .with_backing(Backing::File {
                path: path.clone(),
                offset: 2 * page(),
            })
            .with_protection(Protection::ReadWrite),
    ];
    let (space, report) = AddressSpace::back(layout, specs).unwrap();
    assert_eq!(report.regions.len(), 6);
    assert_eq!(report.regions[2].backing, "memfd");
    assert!(report.regions[2].dontfork);
    let thp = report
        .regions
        .iter()
        .find(|r| r.base.0 == 12 * MIB)
        .unwrap();
    assert_eq!(thp.huge_pages, HugePages::Transparent);
    assert_eq!(thp.host_addr % (2 << 20), 0, "THP mapping is 2 MiB aligned");
    let mem = space.memory();
    for r in mem.regions() {
        let at = GuestAddress(r.base().0 + r.size() - 8);
        mem.write_obj(r.base().0 ^ 0x5a5a, at).unwrap();
        assert_eq!(mem.read_obj::<u64>(at).unwrap(), r.base().0 ^ 0x5a5a);
    }
    // The file was mapped from its offset: its bytes are there, and writes reach the file.
    let mut buf = [0u8; 8];
    mem.read_slice(&mut buf, GuestAddress(0xffc0_0000)).unwrap();
    assert_eq!(&buf, b"firmware");
    mem.write_slice(b"FIRMWARE", GuestAddress(0xffc0_0000))
        .unwrap();
    let fw = mem.find_region(GuestAddress(0xffc0_0000)).unwrap();
    assert_eq!(fw.file_offset().map(|f| f.start()), Some(2 * page()));
    drop(mem);
    drop(space);
    let bytes = std::fs::read(&path).unwrap();
    let at = (2 * page()) as usize;
    assert_eq!(&bytes[at..at + 8], b"FIRMWARE");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn access_across_two_regions_splits() {
    let layout = Layout::x86_64().ram(GIB).build().unwrap();
    let (space, _) = AddressSpace::back(
        layout,
        [
            RegionSpec::ram(GuestAddress(0), page()),
            RegionSpec::ram(GuestAddress(page()), page()),
        ],
    )
    .unwrap();
    let mem = space.snapshot();
    let data: Vec<u8> = (0..16).collect();
    mem.write_slice(&data, GuestAddress(page() - 8)).unwrap();
    let mut back = [0u8; 16];
    mem.read_slice(&mut back, GuestAddress(page() - 8)).unwrap();
    assert_eq!(&back[..], &data[..]);
    assert!(
        mem.write_slice(&data, GuestAddress(2 * page() - 8))
            .is_err()
    );
}

#[cfg(target_os = "linux")]
#[test]
#[cfg_attr(miri, ignore = "reads the kernel's accounting in /proc/self/numa_maps")]
fn numa_bind_to_node_0_shows_in_numa_maps() {
    let spec = RegionSpec::ram(GuestAddress(0), 8 * MIB)
        .with_numa(NumaBinding::bind(0))
        .with_prefault_threads(2);
    let (region, report) = Region::back(spec).unwrap();
    let report = report.unwrap();
    // 8 MiB is under one thread's share (64 MiB): one thread did it, and the report says so.
    assert_eq!(report.prefault_threads, 1);
    let line = numa_maps_line(report.host_addr);
    assert!(line.contains(" bind:0 "), "{line}");
    // Prefaulted: every page is resident, on node 0.
    assert_eq!(pages_on_node(&line, 0), 8 * MIB / page(), "{line}");
    drop(region);
}

#[cfg(target_os = "linux")]
#[test]
#[cfg_attr(miri, ignore = "reads the kernel's accounting in /proc/self/numa_maps")]
fn numa_interleave_and_preferred_show_in_numa_maps() {
    for (policy, word) in [
        (NumaPolicy::Interleave, "interleave:0"),
        (NumaPolicy::Preferred, "prefer:0"),
    ] {
        let spec =
            RegionSpec::ram(GuestAddress(0), 2 * MIB).with_numa(NumaBinding::new(policy, [0]));
        let (_region, report) = Region::back(spec).unwrap();
        let line = numa_maps_line(report.unwrap().host_addr);
        assert!(line.contains(word), "{policy}: {line}");
    }
}

#[cfg(target_os = "linux")]
#[test]
#[cfg_attr(miri, ignore = "reads the host NUMA nodes from sysfs")]
fn numa_missing_node_errors_clearly() {
    let spec = RegionSpec::ram(GuestAddress(0), 2 * MIB).with_numa(NumaBinding::bind(1023));
    let err = Region::back(spec).unwrap_err();
    assert!(
        matches!(err, Error::NumaNodeMissing { node: 1023, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("NUMA node 1023 does not exist on this host (nodes online: "),
        "{err}"
    );
}

#[cfg(target_os = "linux")]
#[test]
#[cfg_attr(miri, ignore = "reads the kernel's residency accounting")]
fn prefault_many_threads_makes_all_resident() {
    let spec = RegionSpec::ram(GuestAddress(0), 256 * MIB).with_prefault_threads(4);
    let (region, report) = Region::back(spec).unwrap();
    let report = report.unwrap();
    assert_eq!(report.prefault_threads, 4);
    let line = numa_maps_line(report.host_addr);
    let resident: u64 = (0..64).map(|n| pages_on_node(&line, n)).sum();
    assert_eq!(resident, 256 * MIB / page(), "{line}");
    // Contents are intact and writable after prefault.
    region
        .write_obj(9u64, MemoryRegionAddress(255 * MIB))
        .unwrap();
    assert_eq!(
        region
            .read_obj::<u64>(MemoryRegionAddress(255 * MIB))
            .unwrap(),
        9
    );
}

#[test]
fn read_only_region_is_not_reachable_through_vm_memory() {
    let spec = RegionSpec::new(RegionType::Firmware, GuestAddress(0xffc0_0000), 2 * page())
        .with_protection(Protection::Read)
        .with_prefault_threads(1);
    let (region, report) = Region::back(spec).unwrap();
    assert_eq!(report.unwrap().prefault_threads, 1);
    assert!(region.host_ptr().is_some());
    // A write would fault on the read-only mapping, so vm-memory gets no slice at all.
    assert!(matches!(
        region.write_obj(1u32, MemoryRegionAddress(0)),
        Err(vm_memory::GuestMemoryError::HostAddressNotAvailable)
    ));
    assert!(region.read_obj::<u32>(MemoryRegionAddress(0)).is_err());
    // (Read prefault of private anonymous memory maps the shared zero page, which numa_maps
    // does not count, so there is no residency to check here.)
}

#[cfg(unix)]
#[test]
#[cfg_attr(miri, ignore = "opens files: Miri isolates the file system")]
fn file_too_small_and_missing_error() {
    let path = std::env::temp_dir().join(format!("memvisor-space-small-{}", std::process::id()));
    std::fs::write(&path, [0u8; 16]).unwrap();
    let spec = RegionSpec::ram(GuestAddress(0), page()).with_backing(Backing::File {
        path: path.clone(),
        offset: 0,
    });
    let err = Region::back(spec).unwrap_err();
    assert!(matches!(err, Error::File { .. }), "{err}");
    assert!(
        std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("the region needs")
    );
    std::fs::remove_file(&path).unwrap();
    let spec = RegionSpec::ram(GuestAddress(0), page()).with_backing(Backing::File {
        path: path.clone(),
        offset: 0,
    });
    assert!(matches!(Region::back(spec), Err(Error::File { .. })));
}

/// A new FIFO (named pipe) in a directory of its own; the directory is the first value.
#[cfg(unix)]
fn fifo(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("memvisor-space-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    (dir, fifo)
}

/// Asserts that `err` refuses the backing file `path` as `what`, not a regular file.
#[cfg(unix)]
fn assert_not_regular(err: &Error, path: &std::path::Path, what: &str) {
    match err {
        Error::File { path: p, .. } => assert_eq!(p, path, "{err}"),
        _ => panic!("not a file error: {err}"),
    }
    let cause = std::error::Error::source(err).unwrap().to_string();
    assert_eq!(cause, format!("not a regular file ({what})"));
}

/// A read-only backing file that is a FIFO is refused at once by `Region::back` and
/// `AddressSpace::back`: opening it for reading would wait for a writer forever.
#[cfg(unix)]
#[test]
#[cfg_attr(miri, ignore = "opens files: Miri isolates the file system")]
fn file_backing_fifo_is_refused_without_waiting() {
    let (dir, fifo) = fifo("fifo-back");
    for protection in [Protection::Read, Protection::ReadWrite] {
        let spec = RegionSpec::ram(GuestAddress(0), page())
            .with_protection(protection)
            .with_backing(Backing::File {
                path: fifo.clone(),
                offset: 0,
            });
        let err = within("Region::back", Duration::from_secs(10), {
            let spec = spec.clone();
            move || Region::back(spec).unwrap_err()
        });
        assert_not_regular(&err, &fifo, "a FIFO");
        let layout = Layout::x86_64().ram(GIB).build().unwrap();
        let err = within("AddressSpace::back", Duration::from_secs(10), move || {
            AddressSpace::back(layout, [spec]).map(|_| ()).unwrap_err()
        });
        assert_not_regular(&err, &fifo, "a FIFO");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Plugging a slot backed by a FIFO is refused at once, without holding up other writers:
/// the slot stays empty and can be plugged with memory right after.
#[cfg(unix)]
#[test]
#[cfg_attr(miri, ignore = "opens files: Miri isolates the file system")]
fn plug_of_fifo_backing_is_refused_and_leaves_the_slot_pluggable() {
    let (dir, fifo) = fifo("fifo-plug");
    let layout = Layout::x86_64().ram(GIB).hotplug(GIB).build().unwrap();
    let hp = hotplug_start(&layout);
    let (space, _) = AddressSpace::back(layout, []).unwrap();
    let space = Arc::new(space);
    let generation = space.snapshot().generation();
    let slot = RegionSpec::ram(GuestAddress(hp), 2 * MIB).with_hotplug(true);
    let err = within("plug", Duration::from_secs(10), {
        let space = Arc::clone(&space);
        let spec = slot
            .clone()
            .with_protection(Protection::Read)
            .with_backing(Backing::File {
                path: fifo.clone(),
                offset: 0,
            });
        move || space.plug(spec).map(|_| ()).unwrap_err()
    });
    assert_not_regular(&err, &fifo, "a FIFO");
    assert!(space.snapshot().find_region(GuestAddress(hp)).is_none());
    assert_eq!(space.snapshot().generation(), generation);
    let (region, _) = within("plug after", Duration::from_secs(10), {
        let space = Arc::clone(&space);
        move || space.plug(slot).unwrap()
    });
    assert_eq!(region.base(), GuestAddress(hp));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Only a regular file backs a region: a directory, a socket and a character device are
/// refused, naming what they are.
#[cfg(unix)]
#[test]
#[cfg_attr(miri, ignore = "opens files: Miri isolates the file system")]
fn file_backing_must_be_a_regular_file() {
    let dir = std::env::temp_dir().join(format!("memvisor-space-kinds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    for (path, what) in [
        (dir.clone(), "a directory"),
        (socket, "a socket"),
        (std::path::PathBuf::from("/dev/null"), "a character device"),
    ] {
        let spec = RegionSpec::ram(GuestAddress(0), page())
            .with_protection(Protection::Read)
            .with_backing(Backing::File {
                path: path.clone(),
                offset: 0,
            });
        let err = Region::back(spec).unwrap_err();
        assert_not_regular(&err, &path, what);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(target_os = "linux")]
#[test]
#[cfg_attr(miri, ignore = "opens files: Miri isolates the file system")]
fn hugetlbfs_backing_on_other_fs_errors() {
    let spec = RegionSpec::ram(GuestAddress(0), 2 * MIB)
        .with_huge_pages(HugePages::Explicit(memvisor_space::HugePageSize::Size2M))
        .with_backing(Backing::Hugetlbfs(std::env::temp_dir()));
    let err = Region::back(spec).unwrap_err();
    assert!(matches!(err, Error::NotHugetlbfs { .. }), "{err}");
    assert!(err.to_string().contains("is not on hugetlbfs"), "{err}");
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a 1 GiB hotplug window is too large for Miri's allocator-backed reservations"
)]
fn plug_in_a_window_off_huge_page_alignment_keeps_guest_alignment_on_the_host() {
    let _huge_pages = huge_page_lock();
    // A window that starts one page past a 1 GiB boundary: a slot 2 MiB aligned in the guest
    // is 2 MiB aligned on the host, and explicit huge pages map there.
    let start = GIB + page();
    let layout = Layout::new(
        GuestAddress((1 << 40) - 1),
        [
            Window::new(WindowKind::Ram, GuestAddress(0), GIB).unwrap(),
            Window::new(WindowKind::Hotplug, GuestAddress(start), GIB).unwrap(),
        ],
    )
    .unwrap();
    let (space, report) = AddressSpace::back(layout, []).unwrap();
    let (window_host, window_len) = report.hotplug_window.unwrap();
    assert_eq!(window_len as u64, GIB);
    assert_eq!(window_host as u64 % GIB, start % GIB);
    let base = GIB + 2 * MIB;
    let spec = RegionSpec::ram(GuestAddress(base), 2 * MIB).with_hotplug(true);
    let (region, thp) = space
        .plug(spec.clone().with_huge_pages(HugePages::Transparent))
        .unwrap();
    assert_eq!(thp.host_addr as u64 % (2 * MIB), 0, "{thp}");
    assert_eq!(thp.host_addr, window_host + (base - start) as usize);
    drop(region);
    space.remove_region(GuestAddress(base), 2 * MIB).unwrap();
    // Explicit huge pages with a fallback: mapped if the host has a free 2 MiB page, else the
    // fallback; never an error from a misaligned mapping.
    let (_, explicit) = space
        .plug(
            spec.with_huge_pages(HugePages::Explicit(HugePageSize::Size2M))
                .with_fallback(HugePageFallback::BasePages),
        )
        .unwrap();
    assert_eq!(explicit.host_addr, thp.host_addr);
    assert!(
        explicit.fell_back || explicit.page_size == 2 * MIB,
        "{explicit:?}"
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a 1 GiB hotplug window is too large for Miri's allocator-backed reservations"
)]
fn plug_maps_slots_contiguously_in_the_window_and_unplug_frees_after_last_snapshot() {
    let layout = Layout::x86_64().ram(GIB).hotplug(GIB).build().unwrap();
    let hp = hotplug_start(&layout);
    let (space, report) =
        AddressSpace::back(layout, [RegionSpec::ram(GuestAddress(0), 2 * MIB)]).unwrap();
    let (window_host, window_len) = report.hotplug_window.unwrap();
    assert_eq!(window_len as u64, GIB);
    let (a, ra) = space
        .plug(
            RegionSpec::ram(GuestAddress(hp), 2 * MIB)
                .with_hotplug(true)
                .with_prefault_threads(1),
        )
        .unwrap();
    let (b, rb) = space
        .plug(RegionSpec::ram(GuestAddress(hp + 2 * MIB), 2 * MIB).with_hotplug(true))
        .unwrap();
    assert_eq!(ra.host_addr, window_host);
    assert_eq!(
        rb.host_addr,
        window_host + (2 << 20),
        "slots contiguous on the host"
    );
    assert!(ra.in_hotplug_window && rb.in_hotplug_window);
    // One access spanning both slots works because they are in different regions; check the
    // host contiguity through raw addresses too.
    assert_eq!(
        b.host_ptr().unwrap() as usize - a.host_ptr().unwrap() as usize,
        (2 << 20) as usize
    );
    let mem = space.snapshot();
    mem.write_obj(0xabcd_u16, GuestAddress(hp + 2 * MIB - 1))
        .unwrap();
    assert_eq!(
        mem.read_obj::<u16>(GuestAddress(hp + 2 * MIB - 1)).unwrap(),
        0xabcd
    );
    // Overlapping plug is refused before any mapping.
    let err = space
        .plug(RegionSpec::ram(GuestAddress(hp + MIB), 2 * MIB).with_hotplug(true))
        .unwrap_err();
    assert!(matches!(err, Error::Overlap { .. }), "{err}");

    // Unplug `a` while `mem` (an older snapshot) still holds it: its memory stays, and the slot
    // cannot be plugged again until that snapshot is gone.
    drop(a);
    space.remove_region(GuestAddress(hp), 2 * MIB).unwrap();
    assert_eq!(
        mem.read_obj::<u16>(GuestAddress(hp + 2 * MIB - 1)).unwrap(),
        0xabcd
    );
    let err = space
        .plug(RegionSpec::ram(GuestAddress(hp), 2 * MIB).with_hotplug(true))
        .unwrap_err();
    assert!(matches!(err, Error::SlotBusy { .. }), "{err}");
    assert!(space.snapshot().find_region(GuestAddress(hp)).is_none());
    drop(mem);
    let (again, r) = space
        .plug(RegionSpec::ram(GuestAddress(hp), 2 * MIB).with_hotplug(true))
        .unwrap();
    assert_eq!(r.host_addr, window_host);
    // Fresh memory: the old contents are gone.
    assert_eq!(
        again
            .read_obj::<u8>(MemoryRegionAddress(2 * MIB - 1))
            .unwrap(),
        0
    );
    drop(b);
}

#[cfg(unix)]
#[test]
#[cfg_attr(miri, ignore = "vm-memory's own mmap: Miri cannot map")]
fn guest_memory_mmap_conversions_share_memory() {
    let layout = Layout::x86_64().ram(GIB).build().unwrap();
    let gm = vm_memory::GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), 2 << 20),
        (GuestAddress(4 << 20), 2 << 20),
    ])
    .unwrap();
    let space = AddressSpace::from_guest_memory_mmap(layout, &gm).unwrap();
    gm.write_obj(77u32, GuestAddress(4 << 20)).unwrap();
    let snap = space.snapshot();
    assert_eq!(snap.read_obj::<u32>(GuestAddress(4 << 20)).unwrap(), 77);
    drop(gm);
    // The adopted mappings outlive the original collection.
    snap.write_obj(78u32, GuestAddress(0)).unwrap();

    // SAFETY: `snap` outlives `back` (dropped first below).
    let back = unsafe { snap.to_guest_memory_mmap() }.unwrap();
    assert_eq!(back.num_regions(), 2);
    assert_eq!(back.read_obj::<u32>(GuestAddress(0)).unwrap(), 78);
    back.write_obj(79u32, GuestAddress(4 << 20)).unwrap();
    assert_eq!(snap.read_obj::<u32>(GuestAddress(4 << 20)).unwrap(), 79);
    drop(back);
}

/// A device-crate style consumer, generic over vm-memory's traits.
fn checksum<M: vm_memory::GuestAddressSpace>(mem: &M, at: GuestAddress, len: usize) -> u64 {
    let m = mem.memory();
    let mut buf = vec![0u8; len];
    m.read_slice(&mut buf, at).unwrap();
    buf.iter().map(|&b| u64::from(b)).sum()
}

#[test]
fn generic_vm_memory_consumer_takes_the_address_space() {
    let layout = Layout::x86_64().ram(GIB).build().unwrap();
    let (space, _) = AddressSpace::back(layout, [RegionSpec::ram(GuestAddress(0), MIB)]).unwrap();
    space
        .memory()
        .write_slice(&[1, 2, 3], GuestAddress(10))
        .unwrap();
    assert_eq!(checksum(&space, GuestAddress(10), 3), 6);
    let arc = Arc::new(space.snapshot());
    assert_eq!(arc.num_regions(), 1);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a 1 GiB hotplug window is too large for Miri's allocator-backed reservations"
)]
fn concurrent_plug_unplug_with_readers_keeps_memory_valid() {
    use std::sync::atomic::{AtomicBool, Ordering};

    let layout = Layout::x86_64().ram(GIB).hotplug(GIB).build().unwrap();
    let hp = hotplug_start(&layout);
    let (space, _) = AddressSpace::back(layout, []).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let space = space.clone();
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut seen = 0u64;
                while !done.load(Ordering::Acquire) {
                    // Whatever the writers do, memory of a snapshot's regions stays usable
                    // while the snapshot is held.
                    let snap = space.snapshot();
                    for r in snap.regions() {
                        let at = GuestAddress(r.base().0 + r.size() - 8);
                        snap.write_obj(r.base().0, at).unwrap();
                        assert_eq!(snap.read_obj::<u64>(at).unwrap(), r.base().0);
                        seen += 1;
                    }
                    std::thread::yield_now();
                }
                seen
            })
        })
        .collect();
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let space = space.clone();
            std::thread::spawn(move || {
                let base = GuestAddress(hp + w * 2 * MIB);
                let mut busy = 0u32;
                for round in 0..25u64 {
                    let spec = RegionSpec::ram(base, 2 * MIB).with_hotplug(true);
                    let region = loop {
                        match space.plug(spec.clone()) {
                            Ok((region, _)) => break region,
                            Err(Error::SlotBusy { .. }) => {
                                busy += 1;
                                std::thread::yield_now();
                            }
                            Err(e) => panic!("plug: {e}"),
                        }
                    };
                    // Fresh memory every time: nothing of the previous round survives.
                    assert_eq!(region.read_obj::<u64>(MemoryRegionAddress(0)).unwrap(), 0);
                    region.write_obj(round + 1, MemoryRegionAddress(0)).unwrap();
                    drop(region);
                    space.remove_region(base, 2 * MIB).unwrap();
                }
                busy
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Release);
    for r in readers {
        r.join().unwrap();
    }
    assert!(space.snapshot().is_empty());
    assert_eq!(space.snapshot().generation(), 4 * 25 * 2);
}

#[cfg(target_os = "linux")]
#[test]
#[cfg_attr(miri, ignore = "vm-memory's own mmap: Miri cannot map")]
fn from_guest_memory_mmap_read_only_mapping_is_recorded_read_only() {
    let len = 2 << 20;
    let mapping = vm_memory::MmapRegion::<()>::build(
        None,
        len,
        libc::PROT_READ,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
    )
    .unwrap();
    let region = vm_memory::GuestRegionMmap::new(mapping, GuestAddress(0)).unwrap();
    let gm = vm_memory::GuestMemoryMmap::from_regions(vec![region]).unwrap();
    let layout = Layout::x86_64().ram(GIB).build().unwrap();
    let space = AddressSpace::from_guest_memory_mmap(layout, &gm).unwrap();
    let mem = space.memory();
    assert_eq!(mem.protection(GuestAddress(0)), Some(Protection::Read));
    // A write is an error, not a fault on the read-only mapping.
    assert!(mem.write_obj(1u32, GuestAddress(0)).is_err());
    assert!(mem.write_slice(&[1, 2, 3], GuestAddress(0x10)).is_err());
    // SAFETY: `mem` outlives `back` (dropped first below).
    let back = unsafe { mem.to_guest_memory_mmap() }.unwrap();
    assert_eq!(back.num_regions(), 0, "read-only regions are left out");
    drop(back);
}

/// A memfd is handed to other processes (vhost-user back ends): none of them may shrink it
/// under the guest, as an access to a page past the end of a shared file mapping raises
/// `SIGBUS` in every process that maps it. The memfd is sealed against resizing, and against
/// more seals (a write seal would make discarding its pages fail).
#[cfg(target_os = "linux")]
#[test]
#[cfg_attr(miri, ignore = "memfds: Miri has no memfd_create")]
fn memfd_backing_cannot_be_resized_or_sealed_further() {
    let spec = RegionSpec::ram(GuestAddress(0), 4 * page()).with_backing(Backing::Memfd);
    let (region, _) = Region::back(spec).unwrap();
    let file = region.file_offset().unwrap().file();
    for len in [0, page(), 8 * page()] {
        let err = file.set_len(len).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "set_len({len:#x})");
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(file);
    // SAFETY: `fd` is the region's open memfd; F_ADD_SEALS takes an int.
    let added = unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_FUTURE_WRITE) };
    assert_eq!(added, -1, "a seal was added");
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EPERM)
    );
    // The memory is whole and usable.
    region
        .write_obj(0x5au8, MemoryRegionAddress(4 * page() - 1))
        .unwrap();
    assert_eq!(file.metadata().unwrap().len(), 4 * page());
    region.discard(0, page()).unwrap();
}

#[cfg(target_os = "linux")]
#[test]
#[cfg_attr(miri, ignore = "memfds: Miri has no memfd_create")]
fn to_guest_memory_mmap_keeps_memfd_file_offset() {
    let layout = Layout::x86_64().ram(GIB).build().unwrap();
    let specs = [
        RegionSpec::ram(GuestAddress(0), 2 * MIB).with_backing(Backing::Memfd),
        RegionSpec::ram(GuestAddress(2 * MIB), 2 * MIB),
    ];
    let (space, _) = AddressSpace::back(layout, specs).unwrap();
    let snap = space.snapshot();
    // SAFETY: `snap` outlives `gm` (dropped first below).
    let gm = unsafe { snap.to_guest_memory_mmap() }.unwrap();
    let memfd = gm.find_region(GuestAddress(0)).unwrap();
    let fo = memfd
        .file_offset()
        .expect("the memfd's file offset is kept");
    assert_eq!(fo.start(), 0);
    let own = snap
        .find_region(GuestAddress(0))
        .unwrap()
        .file_offset()
        .unwrap();
    // The same open file, which a vhost-user back end can be handed.
    assert_eq!(
        std::os::fd::AsRawFd::as_raw_fd(fo.file()),
        std::os::fd::AsRawFd::as_raw_fd(own.file())
    );
    assert_eq!(memfd.is_hugetlbfs(), Some(false));
    let anon = gm.find_region(GuestAddress(2 * MIB)).unwrap();
    assert!(anon.file_offset().is_none());
    // Writes through the file reach the converted memory.
    std::os::unix::fs::FileExt::write_all_at(fo.file(), &[0x5a], 0x40).unwrap();
    assert_eq!(gm.read_obj::<u8>(GuestAddress(0x40)).unwrap(), 0x5a);
    drop(gm);
}

/// A layout with RAM at 0 and a hotplug window at `start`.
fn layout_with_hotplug_at(start: u64, size: u64) -> Layout {
    use memvisor_space::Window;
    Layout::new(
        GuestAddress(u64::MAX >> 16),
        [
            Window::new(WindowKind::Ram, GuestAddress(0), GIB).unwrap(),
            Window::new(WindowKind::Hotplug, GuestAddress(start), size).unwrap(),
        ],
    )
    .unwrap()
}

#[test]
fn back_hotplug_window_off_page_boundary_errors() {
    let half = page() / 2;
    for (start, size) in [(4 * GIB + half, GIB), (4 * GIB, GIB + half)] {
        let layout = layout_with_hotplug_at(start, size);
        let err = AddressSpace::back(layout, [RegionSpec::ram(GuestAddress(0), MIB)]).unwrap_err();
        assert!(
            matches!(err, Error::WindowMisaligned { start: s, size: z, .. } if s == start && z == size),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "hotplug window at {start:#x} of size {size:#x} is not aligned to the host page size {:#x}",
                page()
            )
        );
    }
}

#[cfg(target_os = "linux")]
#[test]
#[cfg_attr(miri, ignore = "reads sysfs and reserves a 1 GiB hotplug window")]
fn plug_failed_mmap_restores_the_slot() {
    // A sysfs attribute: long enough, opens read-only, but cannot be mapped.
    let path = std::path::PathBuf::from("/sys/kernel/mm/transparent_hugepage/enabled");
    if !path.exists() {
        eprintln!("skipped: {} is missing", path.display());
        return;
    }
    let layout = layout_with_hotplug_at(4 * GIB, GIB);
    let (space, _) = AddressSpace::back(layout, [RegionSpec::ram(GuestAddress(0), MIB)]).unwrap();
    let slot = GuestAddress(4 * GIB);
    let bad = RegionSpec::ram(slot, page())
        .with_hotplug(true)
        .with_protection(Protection::Read)
        .with_backing(Backing::File { path, offset: 0 });
    let err = space.plug(bad).unwrap_err();
    assert!(matches!(err, Error::Os { op: "mmap", .. }), "{err}");
    assert_eq!(space.snapshot().len(), 1);
    // The slot was given back: the same place plugs at once.
    let (region, _) = space
        .plug(RegionSpec::ram(slot, page()).with_hotplug(true))
        .unwrap();
    space.memory().write_obj(5u8, slot).unwrap();
    assert_eq!(region.base(), slot);
}

/// The selected value of a transparent huge page setting.
#[cfg(target_os = "linux")]
fn thp_setting(file: &str) -> Option<String> {
    let text =
        std::fs::read_to_string(format!("/sys/kernel/mm/transparent_hugepage/{file}")).ok()?;
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[')?.strip_suffix(']').map(str::to_owned))
}

#[cfg(target_os = "linux")]
#[test]
#[cfg_attr(miri, ignore = "reads the host THP setting from sysfs")]
fn back_memfd_thp_is_reported_only_when_the_shmem_setting_allows() {
    let in_effect = matches!(
        thp_setting("shmem_enabled").as_deref(),
        Some("always" | "within_size" | "advise" | "force")
    );
    for backing in [Backing::Memfd, Backing::AnonymousShared] {
        let spec = RegionSpec::ram(GuestAddress(0), 4 * MIB)
            .with_backing(backing.clone())
            .with_huge_pages(HugePages::Transparent);
        if in_effect {
            let (_r, report) = Region::back(spec).unwrap();
            let report = report.unwrap();
            assert_eq!(report.huge_pages, HugePages::Transparent);
            assert!(!report.fell_back && report.warnings.is_empty());
            continue;
        }
        let err = Region::back(spec.clone()).unwrap_err();
        assert!(
            matches!(err, Error::TransparentHugePagesUnavailable { base: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("shmem_enabled"), "{err}");
        let (region, report) =
            Region::back(spec.with_fallback(memvisor_space::HugePageFallback::BasePages)).unwrap();
        let report = report.unwrap();
        assert_eq!(report.huge_pages, HugePages::None);
        assert!(report.fell_back);
        assert_eq!(report.warnings.len(), 1);
        assert!(
            report
                .to_string()
                .contains("warning: transparent huge pages are off")
        );
        region.write_obj(1u8, MemoryRegionAddress(0)).unwrap();
    }
}

#[cfg(target_os = "linux")]
#[test]
#[cfg_attr(miri, ignore = "reads the host THP setting from sysfs")]
fn back_anonymous_thp_follows_the_enabled_setting() {
    let in_effect = matches!(
        thp_setting("enabled").as_deref(),
        Some("always" | "madvise")
    );
    let spec = RegionSpec::ram(GuestAddress(0), 4 * MIB).with_huge_pages(HugePages::Transparent);
    match Region::back(spec) {
        Ok((_r, report)) => {
            assert!(in_effect);
            assert_eq!(report.unwrap().huge_pages, HugePages::Transparent);
        }
        Err(err) => {
            assert!(!in_effect);
            assert!(
                matches!(err, Error::TransparentHugePagesUnavailable { .. }),
                "{err}"
            );
        }
    }
}

#[test]
fn vm_memory_view_excludes_mmio_and_guard_is_deref_clone() {
    let layout = Layout::x86_64().ram(GIB).build().unwrap();
    let mut placer = layout.placer();
    let mmio = placer
        .place(WindowKind::Device, 0x1000, 0x1000, "mmio")
        .unwrap()
        .start();
    let specs = [
        RegionSpec::ram(GuestAddress(0), MIB),
        RegionSpec::new(RegionType::Device, mmio, 0x1000),
        RegionSpec::ram(GuestAddress(2 * MIB), MIB),
    ];
    let (space, _) = AddressSpace::back(layout, specs).unwrap();
    let mem = space.memory();
    assert_eq!(mem.len(), 3, "the snapshot itself holds every region");
    // vm-memory's view: guest memory only, so an e820 built from it has no MMIO.
    let e820: Vec<(u64, u64)> = GuestMemoryBackend::iter(&*mem)
        .map(|r| (r.start_addr().0, r.len()))
        .collect();
    assert_eq!(e820, [(0, MIB), (2 * MIB, MIB)]);
    assert_eq!(GuestMemoryBackend::num_regions(&*mem), 2);
    assert!(GuestMemoryBackend::find_region(&*mem, mmio).is_none());
    assert!(mem.find_region(mmio).is_some());
    assert!(mem.write_obj(1u32, mmio).is_err());
    mem.write_obj(0xfeed_u32, GuestAddress(2 * MIB)).unwrap();
    let copy = mem.clone();
    assert_eq!(copy.read_obj::<u32>(GuestAddress(2 * MIB)).unwrap(), 0xfeed);
}

#[cfg(unix)]
#[test]
#[cfg_attr(miri, ignore = "maps a file: Miri has no file mappings")]
fn bytes_view_reads_read_only_regions_and_refuses_writes() {
    let dir = std::env::temp_dir().join(format!("memvisor-space-rom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rom.img");
    let mut image = vec![0u8; (2 * page()) as usize];
    image[..8].copy_from_slice(b"firmware");
    std::fs::write(&path, &image).unwrap();
    let layout = Layout::x86_64().ram(GIB).build().unwrap();
    let rom_base = 0xffc0_0000;
    let specs = [
        RegionSpec::ram(GuestAddress(0), MIB),
        RegionSpec::new(RegionType::Firmware, GuestAddress(rom_base), 2 * page())
            .with_backing(Backing::File {
                path: path.clone(),
                offset: 0,
            })
            .with_protection(Protection::Read),
    ];
    let (space, _) = AddressSpace::back(layout, specs).unwrap();
    let snap = space.snapshot();
    let bytes = snap.bytes();
    let mut buf = [0u8; 8];
    bytes.read_slice(&mut buf, GuestAddress(rom_base)).unwrap();
    assert_eq!(&buf, b"firmware");
    assert_eq!(
        bytes
            .load::<u32>(GuestAddress(rom_base), std::sync::atomic::Ordering::Relaxed)
            .unwrap(),
        u32::from_le_bytes(*b"firm")
    );
    let mut out = Vec::new();
    bytes
        .write_all_volatile_to(GuestAddress(rom_base), &mut out, 8)
        .unwrap();
    assert_eq!(out, b"firmware");
    // Writes to the read-only region are errors, never faults; RAM is written as usual.
    assert!(bytes.write_obj(1u8, GuestAddress(rom_base)).is_err());
    assert!(
        bytes
            .store(
                1u32,
                GuestAddress(rom_base),
                std::sync::atomic::Ordering::Relaxed
            )
            .is_err()
    );
    bytes.write_obj(0x1234u16, GuestAddress(0x10)).unwrap();
    assert_eq!(bytes.read_obj::<u16>(GuestAddress(0x10)).unwrap(), 0x1234);
    // Through the snapshot itself the read-only region gives no slice at all.
    assert!(snap.read_obj::<u8>(GuestAddress(rom_base)).is_err());
    // A read running past the end of the memory stops there.
    let mut tail = [0u8; 16];
    let n = bytes
        .read(&mut tail, GuestAddress(rom_base + 2 * page() - 8))
        .unwrap();
    assert_eq!(n, 8);
    assert!(
        bytes
            .read_slice(&mut tail, GuestAddress(rom_base + 2 * page() - 8))
            .is_err()
    );
    assert!(bytes.read_obj::<u8>(GuestAddress(2 * MIB)).is_err());
    drop(snap);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn plug_unplug_small_window_round_trips() {
    let p = page();
    let layout = layout_with_hotplug_at(4 * GIB, 64 * p);
    let (space, report) =
        AddressSpace::back(layout, [RegionSpec::ram(GuestAddress(0), 4 * p)]).unwrap();
    assert!(report.hotplug_window.is_some());
    let slot = GuestAddress(4 * GIB + 8 * p);
    let (region, plugged) = space
        .plug(RegionSpec::ram(slot, 4 * p).with_hotplug(true))
        .unwrap();
    assert!(plugged.in_hotplug_window);
    space.memory().write_obj(0xabcd_u32, slot).unwrap();
    let old = space.snapshot();
    space.remove_region(region.base(), region.size()).unwrap();
    drop(region);
    // An older snapshot still holds the memory: the slot is busy, and still readable.
    let busy = space
        .plug(RegionSpec::ram(slot, 4 * p).with_hotplug(true))
        .unwrap_err();
    assert!(matches!(busy, Error::SlotBusy { .. }), "{busy}");
    assert_eq!(old.read_obj::<u32>(slot).unwrap(), 0xabcd);
    drop(old);
    // Released: the slot plugs again, with fresh memory.
    space
        .plug(RegionSpec::ram(slot, 4 * p).with_hotplug(true))
        .unwrap();
    assert_eq!(space.memory().read_obj::<u32>(slot).unwrap(), 0);
}

/// A plug that a listener refuses, or panics on, gives the slot back at once: its memory is
/// unmapped (nobody holds the region), the slot plugs again with fresh memory, and the
/// listeners that accepted were told the removal.
#[test]
fn plug_refused_or_panicked_by_a_listener_frees_the_slot() {
    use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

    let p = page();
    let layout = layout_with_hotplug_at(4 * GIB, 64 * p);
    let (space, _) = AddressSpace::back(layout, []).unwrap();
    let live = Arc::new(AtomicI64::new(0));
    let counted = Arc::clone(&live);
    space
        .add_listener(Arc::new(move |e: &memvisor_space::RegionEvent<'_>| {
            let step = match e.kind {
                memvisor_space::ChangeKind::Inserted => 1,
                memvisor_space::ChangeKind::Removed => -1,
            };
            counted.fetch_add(step, Ordering::SeqCst);
            Ok(())
        }))
        .unwrap();
    // 0: refuse, 1: panic, then accept.
    let mode = Arc::new(AtomicU32::new(0));
    let m = Arc::clone(&mode);
    space.add_listener(Arc::new(
        move |e: &memvisor_space::RegionEvent<'_>| -> Result<(), memvisor_space::ListenerError> {
            if e.kind == memvisor_space::ChangeKind::Inserted {
                match m.load(Ordering::SeqCst) {
                    0 => return Err("no slot".into()),
                    1 => panic!("listener bug"),
                    _ => {}
                }
            }
            Ok(())
        },
    )).unwrap();
    let slot = GuestAddress(4 * GIB + 8 * p);
    let spec = RegionSpec::ram(slot, 4 * p).with_hotplug(true);
    let err = space.plug(spec.clone()).unwrap_err();
    assert!(matches!(err, Error::Listener { .. }), "{err}");
    mode.store(1, Ordering::SeqCst);
    let s = space.clone();
    let again = spec.clone();
    assert!(std::panic::catch_unwind(move || s.plug(again)).is_err());
    assert_eq!(
        live.load(Ordering::SeqCst),
        0,
        "accepted listeners were undone"
    );
    assert!(space.snapshot().is_empty());
    assert_eq!(space.snapshot().generation(), 0);
    mode.store(2, Ordering::SeqCst);
    let (region, _) = space.plug(spec).unwrap();
    assert_eq!(region.read_obj::<u64>(MemoryRegionAddress(0)).unwrap(), 0);
    assert_eq!(live.load(Ordering::SeqCst), 1);
    assert_eq!(space.snapshot().slot(slot), Some(0));
}

/// A listener that keeps a region whose plug it refused holds its place; a plug lets the
/// listeners settle first, so once the listener lets go, the place plugs again with no other
/// call in between.
#[test]
fn plug_at_place_kept_by_listener_succeeds_once_listener_settles() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use memvisor_space::{ListenerError, RegionEvent, RegionListener};

    #[derive(Default)]
    struct Keeper {
        kept: Mutex<Vec<Arc<Region>>>,
        refuse: AtomicBool,
        release: AtomicBool,
    }

    impl RegionListener for Keeper {
        fn region_changed(&self, e: &RegionEvent<'_>) -> Result<(), ListenerError> {
            if self.refuse.load(Ordering::SeqCst) {
                self.kept.lock().unwrap().push(Arc::clone(e.region));
                return Err("kept".into());
            }
            Ok(())
        }

        fn settle(&self) {
            if self.release.load(Ordering::SeqCst) {
                self.kept.lock().unwrap().clear();
            }
        }
    }

    let p = page();
    let layout = layout_with_hotplug_at(4 * GIB, 64 * p);
    let (space, _) = AddressSpace::back(layout, []).unwrap();
    let keeper = Arc::new(Keeper::default());
    space
        .add_listener(Arc::clone(&keeper) as Arc<dyn RegionListener>)
        .unwrap();
    let slot = GuestAddress(4 * GIB + 8 * p);
    let spec = RegionSpec::ram(slot, 4 * p).with_hotplug(true);
    keeper.refuse.store(true, Ordering::SeqCst);
    let err = space.plug(spec.clone()).unwrap_err();
    assert!(matches!(err, Error::Listener { .. }), "{err}");
    keeper.refuse.store(false, Ordering::SeqCst);
    // Still kept after settling: the place is busy, and nothing changed.
    let err = space.plug(spec.clone()).unwrap_err();
    assert!(matches!(err, Error::SlotBusy { .. }), "{err}");
    assert_eq!(keeper.kept.lock().unwrap().len(), 1);
    assert!(space.snapshot().is_empty());
    assert_eq!(space.snapshot().generation(), 0);
    // Let go when settling: the plug that asks goes through.
    keeper.release.store(true, Ordering::SeqCst);
    let (region, _) = space.plug(spec).unwrap();
    assert!(keeper.kept.lock().unwrap().is_empty());
    assert_eq!(region.read_obj::<u64>(MemoryRegionAddress(0)).unwrap(), 0);
    assert_eq!(space.snapshot().slot(slot), Some(0));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "asks the allocator for 1 EiB: Miri aborts where the host refuses"
)]
fn back_hotplug_window_host_refuses_names_window() {
    // A window far larger than any host's user address space: the reservation is refused.
    let window = Window::new(WindowKind::Hotplug, GuestAddress(1 << 60), 1 << 60).unwrap();
    let layout = Layout::new(GuestAddress(u64::MAX), [window]).unwrap();
    let err = AddressSpace::builder(layout).back().unwrap_err();
    let Error::Reservation { window: range, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(*range, window.range());
    assert!(std::error::Error::source(&err).is_some());
    assert_eq!(
        err.to_string(),
        "reserving host address space for the hotplug window \
         [0x1000000000000000, 0x1fffffffffffffff]"
    );
}

/// A layout with two hotplug windows: the report gives the host range of each, in layout
/// order, and the first of them as `hotplug_window`; each window's slots are mapped inside
/// its own range.
#[test]
#[cfg_attr(
    miri,
    ignore = "1 GiB hotplug windows are too large for Miri's allocator-backed reservations"
)]
fn back_reports_every_hotplug_window() {
    let (first, second) = (2 * GIB, 4 * GIB + page());
    let layout = Layout::new(
        GuestAddress((1 << 40) - 1),
        [
            Window::new(WindowKind::Ram, GuestAddress(0), GIB).unwrap(),
            Window::new(WindowKind::Hotplug, GuestAddress(first), GIB).unwrap(),
            Window::new(WindowKind::Hotplug, GuestAddress(second), 512 * MIB).unwrap(),
        ],
    )
    .unwrap();
    let (space, report) = AddressSpace::back(layout, []).unwrap();
    let windows = report.hotplug_windows.clone();
    assert_eq!(windows.len(), 2, "{report:?}");
    assert_eq!(report.hotplug_window, Some(windows[0]));
    assert_eq!(windows[0].1 as u64, GIB);
    assert_eq!(windows[1].1 as u64, 512 * MIB);
    assert_eq!(windows[1].0 as u64 % GIB, second % GIB);
    let text = report.to_string();
    for (addr, len) in &windows {
        assert!(
            text.contains(&format!("host {addr:#x}, {len:#x} bytes")),
            "{text}"
        );
    }
    let (_, plugged) = space
        .plug(RegionSpec::ram(GuestAddress(second + 2 * MIB), 2 * MIB).with_hotplug(true))
        .unwrap();
    assert_eq!(plugged.host_addr, windows[1].0 + 2 * MIB as usize);
}
