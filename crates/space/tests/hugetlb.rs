//! Explicit huge pages for real. Each test reserves a few huge pages on the machine
//! (`/proc/sys/vm/nr_hugepages` or the per-size file in `/sys/kernel/mm/hugepages`), restores
//! the old value afterwards even on failure, and checks the kernel's `HugePages_*` accounting.
//! Where the kernel cannot provide the pages (or the test is not root), the test says so and
//! skips; when it got them, it asserts. The tests take a file lock, so they never overlap, even
//! across processes. Explicit huge pages are Linux's, so the file is Linux-only.

#![cfg(target_os = "linux")]
#![allow(clippy::cast_possible_truncation)]
#![cfg_attr(miri, allow(dead_code, unused_imports))]

use std::path::{Path, PathBuf};
use std::process::Command;

use memvisor_space::{
    Backing, Error, HugePageFallback, HugePageSize, HugePages, Region, RegionSpec,
};
use memvisor_testkit::huge_page_lock::huge_page_lock;
use vm_memory::{Bytes, GuestAddress, MemoryRegionAddress};

const MIB: u64 = 1 << 20;

fn pool_file(size: HugePageSize) -> PathBuf {
    PathBuf::from(format!(
        "/sys/kernel/mm/hugepages/hugepages-{}kB",
        size.bytes() >> 10
    ))
}

fn read_count(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn free(size: HugePageSize) -> u64 {
    read_count(&pool_file(size).join("free_hugepages")).unwrap()
}

fn reserved(size: HugePageSize) -> u64 {
    read_count(&pool_file(size).join("resv_hugepages")).unwrap()
}

/// A field of `/proc/meminfo` (the default huge page size's accounting).
fn meminfo(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Sets the pool of `size` pages to hold `extra` more pages than now, and puts the old value
/// back when dropped.
struct PoolGuard {
    file: PathBuf,
    old: u64,
}

impl PoolGuard {
    /// Grows the pool; `None` (with the reason printed) if it cannot be done here.
    fn grow(size: HugePageSize, extra: u64) -> Option<Self> {
        let file = pool_file(size).join("nr_hugepages");
        let Some(old) = read_count(&file) else {
            eprintln!(
                "skipped: no {size} huge page pool on this kernel ({})",
                file.display()
            );
            return None;
        };
        let guard = Self { file, old };
        if let Err(e) = std::fs::write(&guard.file, (old + extra).to_string()) {
            eprintln!(
                "skipped: cannot set {}: {e} (needs root)",
                guard.file.display()
            );
            return None;
        }
        if free(size) < extra {
            eprintln!(
                "skipped: the kernel gave only {} free {size} huge pages of {extra} asked",
                free(size)
            );
            return None;
        }
        Some(guard)
    }
}

impl Drop for PoolGuard {
    fn drop(&mut self) {
        std::fs::write(&self.file, self.old.to_string()).unwrap();
    }
}

fn check_explicit_2m(backing: Backing) {
    let _serial = huge_page_lock();
    let size = HugePageSize::Size2M;
    let Some(_pool) = PoolGuard::grow(size, 4) else {
        return;
    };
    let free_before = free(size);
    let spec = RegionSpec::ram(GuestAddress(0), 4 * MIB)
        .with_backing(backing)
        .with_huge_pages(HugePages::Explicit(size));
    let (region, report) = Region::back(spec).unwrap();
    let report = report.unwrap();
    assert_eq!(report.page_size, 2 * MIB);
    assert_eq!(report.huge_pages, HugePages::Explicit(size));
    assert!(!report.fell_back);
    // Mapped, not yet touched: the two pages are reserved for the mapping.
    assert_eq!(reserved(size), 2, "pages reserved at map time");
    region.write_obj(0x77u8, MemoryRegionAddress(0)).unwrap();
    region
        .write_obj(0x88u8, MemoryRegionAddress(4 * MIB - 1))
        .unwrap();
    assert_eq!(
        region
            .read_obj::<u8>(MemoryRegionAddress(4 * MIB - 1))
            .unwrap(),
        0x88
    );
    assert_eq!(
        free_before - free(size),
        2,
        "two huge pages in use after writes"
    );
    assert_eq!(reserved(size), 0);
    assert_eq!(meminfo("HugePages_Free"), free(size), "meminfo agrees");
    let line = std::fs::read_to_string("/proc/self/numa_maps")
        .unwrap()
        .lines()
        .find(|l| l.starts_with(&format!("{:x} ", report.host_addr)))
        .unwrap()
        .to_owned();
    assert!(line.contains("kernelpagesize_kB=2048"), "{line}");
    assert!(line.contains(" huge "), "{line}");
    drop(region);
    assert_eq!(free(size), free_before, "pages returned to the pool");
}

#[test]
#[cfg_attr(miri, ignore = "needs the kernel's huge page pool and its accounting")]
fn explicit_2m_anonymous_is_accounted() {
    check_explicit_2m(Backing::AnonymousPrivate);
}

#[test]
#[cfg_attr(miri, ignore = "needs the kernel's huge page pool and its accounting")]
fn explicit_2m_memfd_is_accounted() {
    check_explicit_2m(Backing::Memfd);
}

#[test]
#[cfg_attr(miri, ignore = "needs the kernel's huge page pool and its accounting")]
fn explicit_2m_prefault_takes_pages_at_once() {
    let _serial = huge_page_lock();
    let size = HugePageSize::Size2M;
    let Some(_pool) = PoolGuard::grow(size, 4) else {
        return;
    };
    let free_before = free(size);
    let spec = RegionSpec::ram(GuestAddress(0), 8 * MIB)
        .with_backing(Backing::AnonymousShared)
        .with_huge_pages(HugePages::Explicit(size))
        .with_prefault_threads(2);
    let (region, report) = Region::back(spec).unwrap();
    // 8 MiB is under one thread's share: one thread prefaulted it.
    assert_eq!(report.unwrap().prefault_threads, 1);
    assert_eq!(
        free_before - free(size),
        4,
        "prefault made all four pages present"
    );
    drop(region);
    assert_eq!(free(size), free_before);
}

#[test]
#[cfg_attr(miri, ignore = "needs the kernel's huge page pool and its accounting")]
fn explicit_2m_more_than_free_errors_without_fallback() {
    let _serial = huge_page_lock();
    let size = HugePageSize::Size2M;
    let Some(_pool) = PoolGuard::grow(size, 2) else {
        return;
    };
    let want = free(size) + 1;
    let spec = RegionSpec::ram(GuestAddress(0), want * size.bytes())
        .with_huge_pages(HugePages::Explicit(size));
    let err = Region::back(spec.clone()).unwrap_err();
    match &err {
        Error::HugePagesUnavailable {
            needed, free: f, ..
        } => {
            assert_eq!(*needed, want);
            assert_eq!(*f, want - 1);
        }
        other => panic!("expected HugePagesUnavailable, got {other}"),
    }
    assert!(err.to_string().contains("2 MiB huge pages"), "{err}");
    assert_eq!(free(size), want - 1, "nothing kept after the error");
    // With a fallback asked for, the region is made with transparent huge pages and says so.
    let (region, report) = Region::back(spec.with_fallback(HugePageFallback::Transparent)).unwrap();
    let report = report.unwrap();
    assert!(report.fell_back);
    // Transparent huge pages if the host gives them to private anonymous memory.
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|s| !s.contains("[never]"));
    let expected = if thp {
        HugePages::Transparent
    } else {
        HugePages::None
    };
    assert_eq!(report.huge_pages, expected);
    assert!(!report.warnings.is_empty());
    assert_eq!(report.page_size, memvisor_vmem::page_size() as u64);
    region.write_obj(1u8, MemoryRegionAddress(0)).unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "needs the kernel's huge page pool and its accounting")]
fn explicit_1g_none_free_errors_or_is_accounted() {
    let _serial = huge_page_lock();
    let size = HugePageSize::Size1G;
    let spec =
        RegionSpec::ram(GuestAddress(0), size.bytes()).with_huge_pages(HugePages::Explicit(size));
    if free(size) == 0 {
        let err = Region::back(spec.clone()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::HugePagesUnavailable {
                    needed: 1,
                    free: 0,
                    ..
                }
            ),
            "{err}"
        );
        let (_r, report) =
            Region::back(spec.clone().with_fallback(HugePageFallback::Transparent)).unwrap();
        assert!(report.unwrap().fell_back);
    }
    let Some(_pool) = PoolGuard::grow(size, 1) else {
        return;
    };
    let free_before = free(size);
    let (region, report) = Region::back(spec.with_prefault_threads(1)).unwrap();
    let report = report.unwrap();
    assert_eq!(report.page_size, size.bytes());
    assert_eq!(report.host_addr as u64 % size.bytes(), 0, "1 GiB aligned");
    assert_eq!(free_before - free(size), 1);
    region
        .write_obj(5u64, MemoryRegionAddress(size.bytes() - 8))
        .unwrap();
    drop(region);
    assert_eq!(free(size), free_before);
}

/// Mounts hugetlbfs on a fresh directory; unmounts and removes it when dropped.
struct Mount(PathBuf);

impl Mount {
    fn new(pagesize: &str) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!(
            "memvisor-hugetlbfs-{}-{pagesize}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).ok()?;
        let mount = Self(dir);
        let status = Command::new("mount")
            .args([
                "-t",
                "hugetlbfs",
                "-o",
                &format!("pagesize={pagesize}"),
                "none",
            ])
            .arg(&mount.0)
            .status();
        match status {
            Ok(s) if s.success() => Some(mount),
            other => {
                eprintln!("skipped: cannot mount hugetlbfs: {other:?}");
                None
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
#[cfg_attr(miri, ignore = "needs the kernel's huge page pool and its accounting")]
fn hugetlbfs_path_is_checked_and_accounted() {
    let _serial = huge_page_lock();
    let size = HugePageSize::Size2M;
    let Some(_pool) = PoolGuard::grow(size, 2) else {
        return;
    };
    let Some(mount) = Mount::new("2M") else {
        return;
    };
    let free_before = free(size);
    let spec = RegionSpec::ram(GuestAddress(0), 4 * MIB)
        .with_huge_pages(HugePages::Explicit(size))
        .with_backing(Backing::Hugetlbfs(mount.0.clone()))
        .with_prefault_threads(1);
    let (region, report) = Region::back(spec).unwrap();
    assert_eq!(report.unwrap().backing, "hugetlbfs");
    assert_eq!(free_before - free(size), 2);
    region.write_obj(3u8, MemoryRegionAddress(MIB)).unwrap();
    assert_eq!(region.read_obj::<u8>(MemoryRegionAddress(MIB)).unwrap(), 3);
    // The file was unlinked at once: the mount is empty.
    assert_eq!(std::fs::read_dir(&mount.0).unwrap().count(), 0);
    drop(region);
    assert_eq!(free(size), free_before);

    let wrong = RegionSpec::ram(GuestAddress(0), 1 << 30)
        .with_huge_pages(HugePages::Explicit(HugePageSize::Size1G))
        .with_backing(Backing::Hugetlbfs(mount.0.clone()));
    let err = Region::back(wrong).unwrap_err();
    assert!(
        matches!(
            err,
            Error::HugePageSizeMismatch {
                found: 0x20_0000,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
#[cfg_attr(miri, ignore = "needs the kernel's huge page pool and its accounting")]
fn explicit_2m_discard_returns_whole_huge_pages() {
    let _serial = huge_page_lock();
    let size = HugePageSize::Size2M;
    let Some(_pool) = PoolGuard::grow(size, 4) else {
        return;
    };
    for backing in [
        Backing::AnonymousPrivate,
        Backing::AnonymousShared,
        Backing::Memfd,
    ] {
        let free_before = free(size);
        let spec = RegionSpec::ram(GuestAddress(0), 4 * MIB)
            .with_backing(backing.clone())
            .with_huge_pages(HugePages::Explicit(size))
            .with_prefault_threads(1);
        let (region, _) = Region::back(spec).unwrap();
        region
            .write_obj(0x77u8, MemoryRegionAddress(2 * MIB))
            .unwrap();
        assert_eq!(free_before - free(size), 2, "{backing:?}");
        // Huge page granularity: a base page is refused.
        let err = region.discard(0, 4096).unwrap_err();
        assert!(
            matches!(err, Error::Misaligned { page_size, .. } if page_size == 2 * MIB),
            "{err}"
        );
        region.discard(2 * MIB, 2 * MIB).unwrap();
        assert_eq!(
            free_before - free(size),
            1,
            "{backing:?}: one page back in the pool"
        );
        assert_eq!(
            region.read_obj::<u8>(MemoryRegionAddress(2 * MIB)).unwrap(),
            0
        );
        drop(region);
        assert_eq!(free(size), free_before);
    }
}

/// `is_hugetlbfs` says what the region got, not what its spec asked for: explicit huge pages
/// that fell back to base pages are not on hugetlbfs, for the region and for vm-memory's view
/// of the space.
#[test]
#[cfg_attr(miri, ignore = "maps real huge pages or falls back")]
fn is_hugetlbfs_says_what_was_obtained() {
    use memvisor_space::{AddressSpace, Layout, Window, WindowKind};
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

    let _serial = huge_page_lock();
    for fallback in [HugePageFallback::BasePages, HugePageFallback::Transparent] {
        // 1 GiB pages are rarely free: this mostly falls back; either way it must agree.
        let spec = RegionSpec::ram(GuestAddress(0), 1 << 30)
            .with_huge_pages(HugePages::Explicit(HugePageSize::Size1G))
            .with_fallback(fallback);
        let (region, report) = Region::back(spec.clone()).unwrap();
        let report = report.unwrap();
        let explicit = matches!(report.huge_pages, HugePages::Explicit(_));
        assert_eq!(explicit, !report.fell_back, "{report:?}");
        assert_eq!(region.is_hugetlbfs(), Some(explicit));
        drop(region);

        let layout = Layout::new(
            GuestAddress((1 << 40) - 1),
            [Window::new(WindowKind::Ram, GuestAddress(0), 1 << 30).unwrap()],
        )
        .unwrap();
        let (space, _) = AddressSpace::back(layout, [spec]).unwrap();
        let snap = space.snapshot();
        // SAFETY: the space outlives the copy, which is dropped first.
        let mm = unsafe { snap.to_guest_memory_mmap() }.unwrap();
        let got = mm.iter().next().unwrap().is_hugetlbfs();
        drop(mm);
        assert_eq!(got, Some(explicit));
    }
}

/// An existing file on a hugetlbfs mount (`Backing::File`, as Cloud Hypervisor's memory zones
/// `file=/dev/hugepages/...` are) is mapped in the mount's huge pages: the report and
/// `is_hugetlbfs` say so, a region, size or offset that is not a multiple of the huge page is
/// `Error::Misaligned` naming it (before any region of the space is made), and a file the pool
/// cannot fill is `Error::HugePagesUnavailable`.
#[test]
#[cfg_attr(miri, ignore = "needs the kernel's huge page pool and its accounting")]
fn file_on_hugetlbfs_is_huge_pages_and_checked_before_mapping() {
    use memvisor_space::{AddressSpace, Layout, Window, WindowKind};
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

    let _serial = huge_page_lock();
    let size = HugePageSize::Size2M;
    let Some(_pool) = PoolGuard::grow(size, 2) else {
        return;
    };
    let Some(mount) = Mount::new("2M") else {
        return;
    };
    let path = mount.0.join("guest-ram");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    let (free_before, reserved_before) = (free(size), reserved(size));
    file.set_len((free_before + 1) * size.bytes()).unwrap();
    let file_spec = |base: u64, len: u64, offset: u64| {
        RegionSpec::ram(GuestAddress(base), len).with_backing(Backing::File {
            path: path.clone(),
            offset,
        })
    };

    let (region, report) = Region::back(file_spec(0, 4 * MIB, 0)).unwrap();
    let report = report.unwrap();
    assert_eq!(report.page_size, size.bytes(), "{report:?}");
    assert_eq!(report.huge_pages, HugePages::Explicit(size), "{report:?}");
    assert!(!report.fell_back);
    assert_eq!(region.is_hugetlbfs(), Some(true));
    assert_eq!(
        reserved(size) - reserved_before,
        2,
        "the mapping reserves two huge pages"
    );
    region.write_obj(9u8, MemoryRegionAddress(3 * MIB)).unwrap();
    drop(region);

    // A size or an offset off the huge page: refused naming the huge page size.
    for (len, offset) in [(4096, 0), (2 * MIB + 4096, 0), (2 * MIB, 4096)] {
        let err = Region::back(file_spec(0, len, offset)).unwrap_err();
        assert!(
            matches!(err, Error::Misaligned { page_size, .. } if page_size == size.bytes()),
            "{len:#x} at {offset:#x}: {err:?}"
        );
    }
    // So is a base off the huge page (the guest's huge page would straddle two host ones).
    let err = Region::back(file_spec(4096, 2 * MIB, 0)).unwrap_err();
    assert!(
        matches!(err, Error::Misaligned { page_size, .. } if page_size == size.bytes()),
        "{err:?}"
    );

    // Checked before any region of the space is made: the first region, which could only fail
    // in the making (more huge pages than free), is not even tried.
    let layout = Layout::new(
        GuestAddress((1 << 40) - 1),
        [Window::new(WindowKind::Ram, GuestAddress(0), 1 << 30).unwrap()],
    )
    .unwrap();
    let too_many = RegionSpec::ram(GuestAddress(0), (free_before + 1) * size.bytes())
        .with_huge_pages(HugePages::Explicit(size));
    let misaligned = file_spec(512 * MIB, 4096, 0);
    let err = AddressSpace::back(layout.clone(), [too_many, misaligned]).unwrap_err();
    assert!(
        matches!(err, Error::Misaligned { page_size, .. } if page_size == size.bytes()),
        "{err:?}"
    );

    // More than the pool holds: the huge pages are what is missing. (The file keeps the page
    // written above, and the reservation of the other one, until it is removed.)
    let (free_now, reserved_now) = (free(size), reserved(size));
    assert_eq!(free_now, free_before - 1);
    let err = Region::back(file_spec(0, (free_before + 1) * size.bytes(), 0)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::HugePagesUnavailable { size: s, needed, free: f, .. }
                if s == size && needed == free_before + 1 && f == free_now
        ),
        "{err:?}"
    );
    assert_eq!(free(size), free_now, "nothing kept after the errors");
    assert_eq!(reserved(size), reserved_now);

    // vm-memory's view of a space says it too.
    let (space, _) = AddressSpace::back(layout, [file_spec(0, 2 * MIB, 0)]).unwrap();
    let snap = space.snapshot();
    assert_eq!(
        GuestMemoryBackend::find_region(&*snap, GuestAddress(0)).and_then(|r| r.is_hugetlbfs()),
        Some(true)
    );
    // SAFETY: the snapshot outlives the copy, which is dropped first.
    let mm = unsafe { snap.to_guest_memory_mmap() }.unwrap();
    assert_eq!(mm.iter().next().unwrap().is_hugetlbfs(), Some(true));
    drop(mm);
    drop((snap, space, file));
    std::fs::remove_file(&path).unwrap();
}

/// A `Backing::File` on a hugetlbfs mount that asks for transparent huge pages gets the mount's
/// explicit huge pages whatever its fallback: the report says so, takes no fallback and warns
/// of none, and `is_hugetlbfs` agrees. A file elsewhere still falls back to base pages, or is
/// refused without a fallback.
#[test]
#[cfg_attr(miri, ignore = "needs the kernel's huge page pool and its accounting")]
fn file_on_hugetlbfs_asking_transparent_reports_the_mounts_pages() {
    use vm_memory::GuestMemoryRegion;

    let _serial = huge_page_lock();
    let size = HugePageSize::Size2M;
    let Some(_pool) = PoolGuard::grow(size, 2) else {
        return;
    };
    let Some(mount) = Mount::new("2M") else {
        return;
    };
    let path = mount.0.join("guest-ram-thp");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    file.set_len(2 * MIB).unwrap();
    for fallback in [
        HugePageFallback::Fail,
        HugePageFallback::BasePages,
        HugePageFallback::Transparent,
    ] {
        let spec = RegionSpec::ram(GuestAddress(0), 2 * MIB)
            .with_backing(Backing::File {
                path: path.clone(),
                offset: 0,
            })
            .with_huge_pages(HugePages::Transparent)
            .with_fallback(fallback);
        let (region, report) = Region::back(spec).unwrap();
        let report = report.unwrap();
        assert_eq!(report.huge_pages, HugePages::Explicit(size), "{report}");
        assert_eq!(report.page_size, size.bytes(), "{report}");
        assert!(!report.fell_back, "{fallback:?}: {report}");
        assert!(
            report.warnings.iter().all(|w| !w.contains("base pages")),
            "{fallback:?}: {report}"
        );
        assert!(!report.to_string().contains("(fallback)"), "{report}");
        assert_eq!(region.is_hugetlbfs(), Some(true));
    }
    drop(file);
    std::fs::remove_file(&path).unwrap();

    // A file on another file system has no transparent huge pages to give.
    let plain = tempfile_in_tmp();
    plain.1.set_len(2 * MIB).unwrap();
    let spec = RegionSpec::ram(GuestAddress(0), 2 * MIB)
        .with_backing(Backing::File {
            path: plain.0.clone(),
            offset: 0,
        })
        .with_huge_pages(HugePages::Transparent);
    let err = Region::back(spec.clone()).unwrap_err();
    assert!(
        matches!(err, Error::TransparentHugePagesUnavailable { .. }),
        "{err:?}"
    );
    let (region, report) = Region::back(spec.with_fallback(HugePageFallback::BasePages)).unwrap();
    let report = report.unwrap();
    assert_eq!(report.huge_pages, HugePages::None, "{report}");
    assert!(report.fell_back, "{report}");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("base pages used")),
        "{report}"
    );
    assert_eq!(region.is_hugetlbfs(), Some(false));
    drop(region);
    std::fs::remove_file(&plain.0).unwrap();
}

/// A new empty file in the temporary directory.
fn tempfile_in_tmp() -> (PathBuf, std::fs::File) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "memvisor-space-thp-file-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    (path, file)
}
