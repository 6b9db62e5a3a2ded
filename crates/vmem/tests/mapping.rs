//! Mapping sources into a reservation, NUMA policy, advice, discarding and read-populating,
//! checked against what the kernel reports in `/proc/self/maps` and `smaps`. Linux only.
#![cfg(all(target_os = "linux", feature = "std", not(miri)))]

use std::fs::File;
use std::os::fd::{AsFd, FromRawFd};
use std::os::unix::fs::FileExt;

use memvisor_testkit::huge_page_lock;
use memvisor_vmem::{
    Advice, CommitMode, Error, HugeTlbSize, MapSource, NumaPolicy, Operation, Protection,
    Reservation, page_size,
};

fn page() -> usize {
    page_size()
}

/// The permissions (`rw-p`, ...) and `VmFlags` of the mapping that holds `addr`.
fn mapping_at(addr: usize) -> (String, String) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut found: Option<String> = None;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let head = words.next().unwrap_or("");
        if let Some((start, end)) = head.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            if found.is_some() {
                break;
            }
            if start <= addr && addr < end {
                found = Some(words.next().unwrap_or("").to_owned());
            }
        } else if let (Some(perms), Some(flags)) = (&found, line.strip_prefix("VmFlags:")) {
            return (perms.clone(), flags.trim().to_owned());
        }
    }
    panic!("no mapping at {addr:#x}");
}

fn memfd(len: usize) -> File {
    // SAFETY: a valid C string; no other preconditions.
    let fd = unsafe { libc::memfd_create(c"memvisor-vmem-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(len as u64).unwrap();
    file
}

fn both_modes() -> [CommitMode; 2] {
    [CommitMode::Protected, CommitMode::Sparse]
}

fn reserve(mode: CommitMode, pages: usize) -> Reservation {
    Reservation::builder()
        .mode(mode)
        .reserve(pages * page())
        .unwrap()
}

#[test]
fn map_anonymous_shared_commits_and_decommit_restores_own_pages() {
    for mode in both_modes() {
        let mut r = reserve(mode, 16);
        r.map(
            4 * page(),
            4 * page(),
            MapSource::AnonymousShared,
            Protection::ReadWrite,
            None,
        )
        .unwrap();
        assert!(r.is_committed(4 * page(), 4 * page()).unwrap());
        assert_eq!(r.committed_bytes(), 4 * page());
        let addr = r.as_ptr() as usize + 4 * page();
        assert_eq!(mapping_at(addr).0, "rw-s", "{mode:?}");
        // SAFETY: mapped read-write; nothing else uses it.
        unsafe { (addr as *mut u8).write(9) };
        r.prefault(4 * page(), 4 * page()).unwrap();
        r.decommit(4 * page(), 4 * page()).unwrap();
        assert_eq!(r.committed_bytes(), 0);
        assert!(mapping_at(addr).0.ends_with('p'), "{mode:?}: still shared");
        r.commit(4 * page(), page()).unwrap();
        // SAFETY: committed again; fresh pages read as zero.
        assert_eq!(unsafe { (addr as *const u8).read() }, 0);
    }
}

#[test]
fn map_memfd_at_offset_reads_the_file() {
    for mode in both_modes() {
        let file = memfd(8 * page());
        file.write_all_at(b"guest", 2 * page() as u64).unwrap();
        let mut r = reserve(mode, 8);
        r.map(
            page(),
            2 * page(),
            MapSource::file(file.as_fd(), 2 * page() as u64),
            Protection::Read,
            None,
        )
        .unwrap();
        drop(file);
        let addr = r.as_ptr().wrapping_add(page());
        // SAFETY: mapped readable; the mapping keeps the memfd alive.
        let bytes = unsafe { core::slice::from_raw_parts(addr, 5) };
        assert_eq!(bytes, b"guest");
        assert_eq!(mapping_at(addr as usize).0, "r--s");
        assert_eq!(
            r.prefault(page(), 2 * page()).unwrap_err(),
            Error::NotWritable { offset: page() }
        );
        r.prefault_read(page(), 2 * page()).unwrap();
        assert_eq!(r.resident_pages(page(), 2 * page()).unwrap(), 2);
        r.decommit(page(), 2 * page()).unwrap();
        r.commit(page(), page()).unwrap();
        // SAFETY: committed; the reservation's own fresh page.
        assert_eq!(unsafe { addr.read() }, 0, "{mode:?}");
    }
}

#[test]
fn map_bad_input_is_error_and_changes_nothing() {
    let huge = HugeTlbSize::Size2M.bytes();
    let mut r = Reservation::builder()
        .alignment(huge)
        .reserve(2 * huge)
        .unwrap();
    let anon = MapSource::AnonymousPrivate;
    assert_eq!(
        r.map(
            page(),
            huge,
            anon,
            Protection::ReadWrite,
            Some(HugeTlbSize::Size2M)
        )
        .unwrap_err(),
        Error::Misaligned {
            what: "offset",
            value: page(),
            page_size: huge
        }
    );
    let file = memfd(4 * page());
    assert_eq!(
        r.map(
            0,
            page(),
            MapSource::file(file.as_fd(), 1),
            Protection::Read,
            None
        )
        .unwrap_err(),
        Error::FileOffsetMisaligned {
            file_offset: 1,
            page_size: page()
        }
    );
    assert!(matches!(
        r.map(0, 3 * huge, anon, Protection::ReadWrite, None),
        Err(Error::OutOfBounds { .. })
    ));
    r.guard(page(), page()).unwrap();
    assert_eq!(
        r.map(0, 2 * page(), anon, Protection::ReadWrite, None)
            .unwrap_err(),
        Error::Guarded { offset: page() }
    );
    // A file opened for reading only cannot be mapped shared for writing: the system refuses.
    let path = std::env::temp_dir().join(format!("memvisor-map-ro-{}", std::process::id()));
    std::fs::write(&path, vec![0u8; page()]).unwrap();
    let read_only = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        r.map(
            2 * page(),
            page(),
            MapSource::file(read_only.as_fd(), 0),
            Protection::ReadWrite,
            None
        ),
        Err(Error::Os {
            operation: Operation::Map,
            ..
        })
    ));
    assert_eq!(r.committed_bytes(), 0);
}

/// The system maps a regular file or a plain memfd in base pages whatever huge page size is
/// named (only anonymous memory and hugetlbfs files have explicit huge pages): a range of
/// whole base pages is mapped as asked, at any page-aligned address, and records no huge page
/// (a later call may cut it anywhere).
#[test]
fn map_file_ignores_a_named_huge_page_size() {
    let path = std::env::temp_dir().join(format!("memvisor-map-huge-{}", std::process::id()));
    std::fs::write(&path, vec![7u8; 4 * page()]).unwrap();
    let regular = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let shmem = memfd(4 * page());
    shmem.write_all_at(&[7], page() as u64).unwrap();
    for mode in both_modes() {
        for (kind, file) in [("regular", &regular), ("memfd", &shmem)] {
            for named in [HugeTlbSize::Size2M, HugeTlbSize::Size1G] {
                // Page-aligned only: the reservation has no huge page alignment.
                let mut r = reserve(mode, 8);
                let source = MapSource::file(file.as_fd(), page() as u64);
                r.map(
                    page(),
                    3 * page(),
                    source,
                    Protection::ReadWrite,
                    Some(named),
                )
                .unwrap_or_else(|e| panic!("{mode:?} {kind} {named:?}: {e}"));
                let addr = r.as_ptr() as usize + page();
                assert_eq!(mapping_at(addr).0, "rw-s", "{mode:?} {kind} {named:?}");
                assert!(!mapping_at(addr).1.contains("ht"), "{kind}");
                // SAFETY: mapped read-write from the file, whose byte there is 7.
                assert_eq!(unsafe { (addr as *const u8).read() }, 7);
                assert_eq!(r.committed_bytes(), 3 * page());
                // No huge page recorded: one base page of the range can be changed alone.
                r.protect(2 * page(), page(), Protection::Read).unwrap();
                r.decommit(2 * page(), page()).unwrap();
                r.decommit(page(), 3 * page()).unwrap();
                assert_eq!(r.committed_bytes(), 0);
            }
        }
    }
}

#[test]
fn map_hugetlb_maps_or_reports_no_huge_pages() {
    let _huge_pages = huge_page_lock::huge_page_lock();
    let huge = HugeTlbSize::Size2M.bytes();
    let mut r = Reservation::builder()
        .alignment(huge)
        .reserve(2 * huge)
        .unwrap();
    match r.map(
        0,
        huge,
        MapSource::AnonymousPrivate,
        Protection::ReadWrite,
        Some(HugeTlbSize::Size2M),
    ) {
        Ok(()) => {
            assert_eq!(r.committed_bytes(), huge);
            assert!(mapping_at(r.as_ptr() as usize).1.contains("ht"));
            r.decommit(0, huge).unwrap();
            assert!(!mapping_at(r.as_ptr() as usize).1.contains("ht"));
        }
        Err(Error::Os {
            operation: Operation::Map,
            source,
        }) => {
            assert_eq!(source.raw(), libc::ENOMEM);
            assert_eq!(r.committed_bytes(), 0);
        }
        Err(e) => panic!("unexpected {e}"),
    }
}

#[test]
fn map_hugetlb_refused_leaves_no_hole_in_the_reservation() {
    let _huge_pages = huge_page_lock::huge_page_lock();
    // A refused explicit-huge-page mapping over committed pages: the system may take the old
    // pages before it refuses. The range must stay the reservation's own (mapped, so nothing
    // else can be placed there) and the bookkeeping must say what is there.
    let huge = HugeTlbSize::Size2M.bytes();
    for mode in both_modes() {
        let mut r = Reservation::builder()
            .alignment(huge)
            .mode(mode)
            .reserve(2 * huge)
            .unwrap();
        r.commit(0, 2 * huge).unwrap();
        // SAFETY: committed read-write above.
        unsafe { r.as_ptr().add(huge).write(42) };
        let Err(err) = r.map(
            0,
            huge,
            MapSource::AnonymousPrivate,
            Protection::ReadWrite,
            Some(HugeTlbSize::Size2M),
        ) else {
            // The host had a free huge page: nothing to check here.
            r.decommit(0, huge).unwrap();
            continue;
        };
        assert!(
            matches!(
                err,
                Error::Os {
                    operation: Operation::Map,
                    ..
                }
            ),
            "{err}"
        );
        // Still a mapping of the reservation at every page of the range.
        for at in (0..huge).step_by(page()) {
            let _ = mapping_at(r.as_ptr() as usize + at);
        }
        // The untouched half keeps its contents and stays committed.
        assert!(r.is_committed(huge, huge).unwrap());
        // SAFETY: committed read-write.
        assert_eq!(unsafe { r.as_ptr().add(huge).read() }, 42);
        // What the bookkeeping says of the refused range is true: committed pages read and
        // write, uncommitted ones can be committed again.
        if r.is_committed(0, huge).unwrap() {
            // SAFETY: committed read-write, as the bookkeeping says.
            unsafe { r.as_ptr().write(7) };
        } else {
            assert_eq!(r.committed_bytes(), huge);
            r.commit(0, huge).unwrap();
            // SAFETY: committed read-write just now.
            unsafe { r.as_ptr().write(7) };
        }
        // SAFETY: as above.
        assert_eq!(unsafe { r.as_ptr().read() }, 7);
    }
}

#[test]
fn decommit_of_a_read_only_file_mapping_puts_own_pages_back_in_both_modes() {
    let path = std::env::temp_dir().join(format!("memvisor-vmem-ro-{}", std::process::id()));
    std::fs::write(&path, vec![7u8; 2 * page()]).unwrap();
    let file = File::open(&path).unwrap();
    for mode in both_modes() {
        let mut r = reserve(mode, 4);
        r.map(
            0,
            2 * page(),
            MapSource::file(file.as_fd(), 0),
            Protection::Read,
            None,
        )
        .unwrap();
        // SAFETY: mapped readable above.
        assert_eq!(unsafe { r.as_ptr().read() }, 7);
        r.decommit(0, 4 * page()).unwrap();
        assert_eq!(r.committed_bytes(), 0);
        r.commit(0, page()).unwrap();
        // SAFETY: committed read-write: the reservation's own fresh pages.
        unsafe { r.as_ptr().write(1) };
        // SAFETY: as above.
        assert_eq!(unsafe { r.as_ptr().read() }, 1);
    }
    drop(file);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn decommit_keeps_dontfork_and_dontdump_in_both_modes() {
    for mode in both_modes() {
        for mapped in [false, true] {
            let mut r = reserve(mode, 4);
            if mapped {
                r.map(
                    0,
                    2 * page(),
                    MapSource::AnonymousShared,
                    Protection::ReadWrite,
                    None,
                )
                .unwrap();
            }
            r.commit(0, 4 * page()).unwrap();
            r.advise(0, 4 * page(), Advice::DontFork).unwrap();
            r.advise(0, 4 * page(), Advice::DontDump).unwrap();
            r.decommit(0, 2 * page()).unwrap();
            r.commit(0, 2 * page()).unwrap();
            for at in [0, 3 * page()] {
                let flags = mapping_at(r.as_ptr() as usize + at).1;
                assert!(
                    flags.contains("dc") && flags.contains("dd"),
                    "{mode:?} mapped {mapped} page {at}: {flags}"
                );
            }
            // Advised back, the fresh pages after a decommit stay without it.
            r.advise(0, 4 * page(), Advice::DoFork).unwrap();
            r.decommit(0, 2 * page()).unwrap();
            assert!(
                !mapping_at(r.as_ptr() as usize).1.contains("dc"),
                "{mode:?}"
            );
        }
    }
}

#[test]
fn bind_numa_checks_nodes_and_applies_policy() {
    let r = Reservation::new(4 * page()).unwrap();
    assert_eq!(
        r.bind_numa(0, 4 * page(), NumaPolicy::Bind, &[1024])
            .unwrap_err(),
        Error::NumaNode {
            node: 1024,
            limit: 1024
        }
    );
    for policy in [
        NumaPolicy::Preferred,
        NumaPolicy::Bind,
        NumaPolicy::Interleave,
    ] {
        match r.bind_numa(0, 4 * page(), policy, &[0]) {
            Ok(()) => {}
            // A kernel built without NUMA.
            Err(Error::Os { source, .. }) if source.raw() == libc::ENOSYS => return,
            Err(e) => panic!("{policy:?}: {e}"),
        }
    }
    r.bind_numa(0, 4 * page(), NumaPolicy::Default, &[])
        .unwrap();
    r.commit(0, page()).unwrap();
    r.bind_numa(0, page(), NumaPolicy::Bind, &[0]).unwrap();
    // The kernel leaves out nodes that do not exist (no system has node 1023 and node 0 only)
    // and refuses a set with none left.
    let at = r.as_ptr() as usize;
    r.bind_numa(0, page(), NumaPolicy::Bind, &[1023, 0])
        .unwrap();
    assert_eq!(numa_policy_at(at), "bind:0");
    r.bind_numa(0, page(), NumaPolicy::Preferred, &[1023, 0])
        .unwrap();
    assert_eq!(numa_policy_at(at), "prefer:0");
    assert!(matches!(
        r.bind_numa(0, page(), NumaPolicy::Interleave, &[1023]),
        Err(Error::Os {
            operation: Operation::BindNuma,
            source
        }) if source.raw() == libc::EINVAL
    ));
}

/// The NUMA policy `/proc/self/numa_maps` shows for the mapping that holds `addr`.
fn numa_policy_at(addr: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/numa_maps").unwrap();
    let mut found = None;
    for line in maps.lines() {
        let mut words = line.split_whitespace();
        let start = usize::from_str_radix(words.next().unwrap_or(""), 16).unwrap();
        if start <= addr {
            found = words.next().map(str::to_owned);
        }
    }
    found.unwrap_or_else(|| panic!("no mapping at {addr:#x}"))
}

#[test]
fn sparse_decommit_over_a_mapped_page_keeps_policy_of_own_pages() {
    let mut r = reserve(CommitMode::Sparse, 4);
    match r.bind_numa(0, 4 * page(), NumaPolicy::Preferred, &[0]) {
        Ok(()) => {}
        // A kernel built without NUMA.
        Err(Error::Os { source, .. }) if source.raw() == libc::ENOSYS => return,
        Err(e) => panic!("{e}"),
    }
    r.commit(0, 4 * page()).unwrap();
    r.map(
        page(),
        page(),
        MapSource::AnonymousPrivate,
        Protection::Read,
        None,
    )
    .unwrap();
    r.protect(2 * page(), page(), Protection::Read).unwrap();
    let base = r.as_ptr() as usize;
    r.decommit(0, 4 * page()).unwrap();
    // Only the page `map` replaced lost the policy; the reservation's own pages keep it.
    for at in [0, 2, 3] {
        assert_eq!(numa_policy_at(base + at * page()), "prefer:0", "page {at}");
    }
    assert_eq!(numa_policy_at(base + page()), "default");
    // Every page is the reservation's own again: uncommitted and read-write underneath.
    for at in 0..4 {
        assert_eq!(&mapping_at(base + at * page()).0[..3], "rw-", "page {at}");
    }
    r.commit(0, 4 * page()).unwrap();
    r.prefault(0, 4 * page()).unwrap();
    // SAFETY: committed read-write; decommitted pages read zero.
    assert_eq!(unsafe { r.as_ptr().add(page()).read() }, 0);
}

#[test]
fn advise_dontfork_and_dontdump_reach_the_kernel() {
    let r = Reservation::new(4 * page()).unwrap();
    let addr = r.as_ptr() as usize;
    r.advise(0, 4 * page(), Advice::DontFork).unwrap();
    r.advise(0, 4 * page(), Advice::DontDump).unwrap();
    let flags = mapping_at(addr).1;
    assert!(flags.split_whitespace().any(|f| f == "dc"), "{flags}");
    assert!(flags.split_whitespace().any(|f| f == "dd"), "{flags}");
    r.advise(0, 4 * page(), Advice::DoFork).unwrap();
    r.advise(0, 4 * page(), Advice::DoDump).unwrap();
    let flags = mapping_at(addr).1;
    assert!(
        !flags.split_whitespace().any(|f| f == "dc" || f == "dd"),
        "{flags}"
    );
}

#[test]
fn discard_and_purge_keep_pages_committed() {
    for mode in both_modes() {
        let file = memfd(4 * page());
        let mut r = reserve(mode, 8);
        r.commit(0, 4 * page()).unwrap();
        r.map(
            4 * page(),
            4 * page(),
            MapSource::file(file.as_fd(), 0),
            Protection::ReadWrite,
            None,
        )
        .unwrap();
        let base = r.as_ptr();
        // SAFETY: committed or mapped read-write; nothing else uses them.
        unsafe {
            base.write(1);
            base.add(4 * page()).write(2);
        }
        r.discard(0, 8 * page()).unwrap();
        // SAFETY: still committed: private pages read zero, the memfd keeps its byte.
        unsafe {
            assert_eq!(base.read(), 0);
            assert_eq!(base.add(4 * page()).read(), 2);
        }
        r.purge(0, 8 * page()).unwrap();
        let mut byte = [9u8];
        file.read_exact_at(&mut byte, 0).unwrap();
        assert_eq!(byte, [0], "{mode:?}: purge did not punch the memfd");
        // SAFETY: still committed.
        assert_eq!(unsafe { base.add(4 * page()).read() }, 0);
        // SAFETY: private page, committed read-write.
        unsafe { base.write(3) };
        r.free(0, 4 * page()).unwrap();
        assert_eq!(r.committed_bytes(), 8 * page());
        assert_eq!(
            r.discard(0, 9 * page()).unwrap_err(),
            Error::OutOfBounds {
                offset: 0,
                len: 9 * page(),
                size: 8 * page()
            }
        );
        r.decommit(page(), page()).unwrap();
        assert_eq!(
            r.purge(0, 2 * page()).unwrap_err(),
            Error::NotCommitted { offset: page() }
        );
    }
}

#[test]
fn prefault_read_needs_readable_pages() {
    let mut r = Reservation::new(4 * page()).unwrap();
    r.commit(0, 4 * page()).unwrap();
    r.protect(0, 2 * page(), Protection::Read).unwrap();
    r.protect(2 * page(), page(), Protection::None).unwrap();
    r.prefault_read(0, 2 * page()).unwrap();
    assert_eq!(
        r.prefault_read(0, 4 * page()).unwrap_err(),
        Error::NotReadable { offset: 2 * page() }
    );
    r.commit(2 * page(), page()).unwrap();
    r.prefault_read(0, 4 * page()).unwrap();
}

#[test]
fn protect_execute_reaches_the_kernel() {
    let mut r = Reservation::new(2 * page()).unwrap();
    r.commit(0, 2 * page()).unwrap();
    r.protect(0, page(), Protection::ReadExecute).unwrap();
    assert_eq!(mapping_at(r.as_ptr() as usize).0, "r-xp");
    assert_eq!(
        r.prefault(0, page()).unwrap_err(),
        Error::NotWritable { offset: 0 }
    );
    r.protect(0, page(), Protection::ReadWriteExecute).unwrap();
    assert_eq!(mapping_at(r.as_ptr() as usize).0, "rwxp");
    r.prefault(0, page()).unwrap();
}

/// Commit makes pages read-write and decommit puts them back in the mode's base state, also
/// after they were executable (a sparse reservation's pages are read-write without being
/// committed, so only the bookkeeping tells which need their protection back).
#[test]
fn commit_and_decommit_take_execute_away_in_both_modes() {
    for mode in both_modes() {
        for (how, executable) in [
            ("protect", Protection::ReadWriteExecute),
            ("protect", Protection::ReadExecute),
            ("map", Protection::ReadWriteExecute),
        ] {
            let mut r = reserve(mode, 2);
            let at = r.as_ptr() as usize;
            if how == "map" {
                r.map(0, page(), MapSource::AnonymousShared, executable, None)
                    .unwrap();
            } else {
                r.commit(0, page()).unwrap();
                r.protect(0, page(), executable).unwrap();
            }
            assert_eq!(
                mapping_at(at).0[..3],
                executable.to_string(),
                "{mode:?} {how}"
            );
            r.commit(0, page()).unwrap();
            assert_eq!(
                mapping_at(at).0[..3],
                *"rw-",
                "{mode:?} {how} {executable}: commit"
            );
            r.protect(0, page(), executable).unwrap();
            r.decommit(0, page()).unwrap();
            let base = if mode == CommitMode::Sparse {
                "rw-"
            } else {
                "---"
            };
            assert_eq!(
                mapping_at(at).0[..3],
                *base,
                "{mode:?} {how} {executable}: decommit"
            );
            r.commit(0, page()).unwrap();
            assert_eq!(
                mapping_at(at).0[..3],
                *"rw-",
                "{mode:?} {how} {executable}: again"
            );
        }
    }
}

/// Content-dropping advice over a range with a locked page is refused before anything is
/// dropped (Linux would zero the pages before the locked one and then fail).
#[test]
fn discard_purge_free_over_locked_pages_refused_and_change_nothing() {
    for mode in both_modes() {
        let mut r = reserve(mode, 4);
        r.commit(0, 4 * page()).unwrap();
        let base = r.as_ptr();
        // SAFETY: committed read-write; nothing else uses them.
        unsafe {
            base.write(0xaa);
            base.add(2 * page()).write(0xbb);
        }
        if r.lock(2 * page(), page()).is_err() {
            // No room under the lock limit here: nothing to check.
            continue;
        }
        let locked = Error::Locked { offset: 2 * page() };
        assert_eq!(r.discard(0, 4 * page()), Err(locked.clone()));
        assert_eq!(r.purge(0, 4 * page()), Err(locked.clone()));
        assert_eq!(r.free(0, 4 * page()), Err(locked));
        // SAFETY: still committed, unchanged.
        unsafe {
            assert_eq!(base.read(), 0xaa);
            assert_eq!(base.add(2 * page()).read(), 0xbb);
        }
        // Around the locked page the advice is taken.
        r.discard(0, 2 * page()).unwrap();
        // SAFETY: committed.
        unsafe { assert_eq!(base.read(), 0) };
        r.unlock(2 * page(), page()).unwrap();
        r.discard(0, 4 * page()).unwrap();
        // SAFETY: committed.
        unsafe { assert_eq!(base.add(2 * page()).read(), 0) };
    }
}

/// A memfd on hugetlbfs, or `None` where the kernel has no hugetlbfs.
fn hugetlb_memfd(len: usize) -> Option<File> {
    let flags = libc::MFD_CLOEXEC | libc::MFD_HUGETLB;
    // SAFETY: a valid C string; no other preconditions.
    let fd = unsafe { libc::memfd_create(c"memvisor-vmem-huge".as_ptr(), flags) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(len as u64).ok()?;
    Some(file)
}

/// The system maps a hugetlbfs file in whole huge pages: a shorter range would be rounded up
/// and replace memory past its end (past the reservation's, even). Such a range is refused
/// before any system call, whatever `huge` says, and the reservation keeps all its pages.
#[test]
fn map_hugetlbfs_file_range_not_a_multiple_of_its_page_size_is_refused() {
    let _huge_pages = huge_page_lock::huge_page_lock();
    let huge = HugeTlbSize::Size2M.bytes();
    let Some(file) = hugetlb_memfd(huge) else {
        return;
    };
    for mode in both_modes() {
        let mut r = Reservation::builder()
            .alignment(huge)
            .mode(mode)
            .reserve(2 * huge)
            .unwrap();
        r.commit(0, 2 * huge).unwrap();
        // SAFETY: committed read-write above.
        unsafe { r.as_ptr().add(page()).write(42) };
        for (offset, len, file_offset, what, value) in [
            (0, page(), 0, "length", page()),
            (0, huge + page(), 0, "length", huge + page()),
            (page(), huge, 0, "offset", page()),
        ] {
            for named in [None, Some(HugeTlbSize::Size2M)] {
                let source = MapSource::file(file.as_fd(), file_offset);
                let err = r
                    .map(offset, len, source, Protection::ReadWrite, named)
                    .unwrap_err();
                let expected = Error::Misaligned {
                    what,
                    value,
                    page_size: huge,
                };
                assert_eq!(err, expected, "{mode:?} {offset:#x}+{len:#x} {named:?}");
            }
        }
        for named in [None, Some(HugeTlbSize::Size2M)] {
            let source = MapSource::file(file.as_fd(), page() as u64);
            assert_eq!(
                r.map(0, huge, source, Protection::ReadWrite, named),
                Err(Error::FileOffsetMisaligned {
                    file_offset: page() as u64,
                    page_size: huge
                }),
                "{mode:?} {named:?}"
            );
        }
        for at in [0, page(), huge - page(), huge, 2 * huge - page()] {
            let (perms, _) = mapping_at(r.as_ptr() as usize + at);
            assert_eq!(perms, "rw-p", "{mode:?} page {at:#x}");
        }
        assert_eq!(r.committed_bytes(), 2 * huge);
        // SAFETY: committed read-write, untouched.
        assert_eq!(unsafe { r.as_ptr().add(page()).read() }, 42);
    }
}

/// A hugetlbfs file is mapped in its own huge pages: a larger huge page size named for it asks
/// nothing more of the range (a 2 MiB file's range need not be a multiple of 1 GiB).
#[test]
fn map_hugetlbfs_file_takes_its_own_page_size_over_the_named_one() {
    let _huge_pages = huge_page_lock::huge_page_lock();
    let huge = HugeTlbSize::Size2M.bytes();
    let Some(file) = hugetlb_memfd(huge) else {
        return;
    };
    let mut r = Reservation::builder()
        .alignment(huge)
        .reserve(2 * huge)
        .unwrap();
    let source = MapSource::file(file.as_fd(), 0);
    match r.map(
        0,
        huge,
        source,
        Protection::ReadWrite,
        Some(HugeTlbSize::Size1G),
    ) {
        Ok(()) => {
            assert!(mapping_at(r.as_ptr() as usize).1.contains("ht"));
            assert_eq!(r.committed_bytes(), huge);
            // Its own huge page is recorded: cutting it is refused.
            assert_eq!(
                r.decommit(0, page()).unwrap_err(),
                Error::Misaligned {
                    what: "end",
                    value: page(),
                    page_size: huge
                }
            );
            r.decommit(0, huge).unwrap();
        }
        Err(Error::Os {
            operation: Operation::Map,
            source,
        }) => assert_eq!(source.raw(), libc::ENOMEM),
        Err(e) => panic!("unexpected {e}"),
    }
}

/// Past the end of a regular file every access faults (`SIGBUS`): a range reaching there is
/// refused, and the reservation is left as it was.
#[test]
fn map_past_the_end_of_a_file_is_refused_and_changes_nothing() {
    for mode in both_modes() {
        let file = memfd(2 * page());
        let mut r = reserve(mode, 4);
        r.commit(0, 4 * page()).unwrap();
        for (len, file_offset) in [
            (3 * page(), 0),
            (2 * page(), page() as u64),
            (page(), 2 * page() as u64),
            (page(), u64::MAX - (page() as u64 - 1)),
        ] {
            let source = MapSource::file(file.as_fd(), file_offset);
            assert_eq!(
                r.map(0, len, source, Protection::ReadWrite, None),
                Err(Error::PastEndOfFile {
                    file_offset,
                    len,
                    file_len: 2 * page() as u64
                }),
                "{mode:?} {len:#x} at {file_offset:#x}"
            );
        }
        assert_eq!(r.committed_bytes(), 4 * page());
        assert_eq!(mapping_at(r.as_ptr() as usize).0, "rw-p", "{mode:?}");
        // Up to the end is fine.
        let source = MapSource::file(file.as_fd(), page() as u64);
        r.map(0, page(), source, Protection::ReadWrite, None)
            .unwrap();
        r.prefault(0, page()).unwrap();
    }
}

/// File offsets are `u64` on every host: a file longer than 4 GiB is mapped at its start and
/// past 4 GiB alike, in a 32-bit process too (whose `off_t` and `struct stat` are 32 bits).
#[test]
fn map_file_longer_than_4_gib_at_any_offset_reads_the_file() {
    let far = (4u64 << 30) + page() as u64;
    // Sparse: the memfd takes memory only for the pages written.
    let file = memfd(0);
    file.set_len(far + page() as u64).unwrap();
    file.write_all_at(b"near", 0).unwrap();
    file.write_all_at(b"mid", 2u64 << 30).unwrap();
    file.write_all_at(b"far", far).unwrap();
    let mut r = reserve(CommitMode::Sparse, 3);
    for (offset, file_offset, text) in [
        (0, 0, &b"near"[..]),
        (page(), 2u64 << 30, b"mid"),
        (2 * page(), far, b"far"),
    ] {
        r.map(
            offset,
            page(),
            MapSource::file(file.as_fd(), file_offset),
            Protection::Read,
            None,
        )
        .unwrap_or_else(|e| panic!("{file_offset:#x}: {e}"));
        // SAFETY: mapped readable; the mapping keeps the memfd alive.
        let bytes = unsafe { core::slice::from_raw_parts(r.as_ptr().add(offset), text.len()) };
        assert_eq!(bytes, text, "{file_offset:#x}");
    }
    assert_eq!(
        r.map(
            0,
            2 * page(),
            MapSource::file(file.as_fd(), far),
            Protection::Read,
            None
        ),
        Err(Error::PastEndOfFile {
            file_offset: far,
            len: 2 * page(),
            file_len: far + page() as u64
        })
    );
}

/// A misaligned file offset is named whole, past 4 GiB too, in a 32-bit process as well (whose
/// `usize` cannot hold it).
#[test]
fn map_misaligned_file_offset_past_4_gib_names_the_whole_offset() {
    let file = memfd(page());
    let mut r = reserve(CommitMode::Sparse, 1);
    for file_offset in [1, (4u64 << 30) + 1, u64::MAX] {
        let err = r
            .map(
                0,
                page(),
                MapSource::file(file.as_fd(), file_offset),
                Protection::Read,
                None,
            )
            .unwrap_err();
        assert_eq!(
            err,
            Error::FileOffsetMisaligned {
                file_offset,
                page_size: page()
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "file offset {file_offset:#x} is not a multiple of the page size {:#x}",
                page()
            )
        );
    }
    assert_eq!(r.committed_bytes(), 0);
}

/// `MADV_FREE` works on private memory only: a range with pages of a shared source is refused
/// before its private pages are freed (the system would free them and then refuse).
#[test]
fn free_over_shared_pages_is_refused_before_any_advice() {
    // Enough pages that the kernel's per-CPU batch of lazily freed pages fills and `smaps`
    // counts them.
    let private = 64;
    for mode in both_modes() {
        let mut r = reserve(mode, private + 2);
        r.commit(0, private * page()).unwrap();
        // SAFETY: committed read-write; nothing else uses it.
        unsafe { r.as_ptr().write_bytes(5, private * page()) };
        let shared = private * page();
        r.map(
            shared,
            2 * page(),
            MapSource::AnonymousShared,
            Protection::ReadWrite,
            None,
        )
        .unwrap();
        assert_eq!(
            r.free(0, shared + 2 * page()),
            Err(Error::Shared { offset: shared }),
            "{mode:?}"
        );
        assert_eq!(lazy_free_kb(r.as_ptr() as usize), 0, "{mode:?}");
        r.free(0, shared).unwrap();
        assert!(lazy_free_kb(r.as_ptr() as usize) > 0, "{mode:?}");
    }
}

/// The `LazyFree` kilobytes of the mapping that holds `addr` (pages given `MADV_FREE`).
fn lazy_free_kb(addr: usize) -> usize {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        let head = line.split_whitespace().next().unwrap_or("");
        if let Some((start, end)) = head.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            inside = start <= addr && addr < end;
        } else if inside && let Some(kb) = line.strip_prefix("LazyFree:") {
            return kb.trim().trim_end_matches("kB").trim().parse().unwrap();
        }
    }
    panic!("no mapping at {addr:#x}");
}

/// The permissions (`rw-p`, `---p`, ...) of each page of `r`, from one read of
/// `/proc/self/maps`.
fn page_perms(r: &Reservation) -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let base = r.as_ptr() as usize;
    let mut perms = vec![String::new(); r.len() / page()];
    for line in maps.lines() {
        let mut words = line.split_whitespace();
        let (start, end) = words.next().unwrap().split_once('-').unwrap();
        let start = usize::from_str_radix(start, 16).unwrap();
        let end = usize::from_str_radix(end, 16).unwrap();
        let perm = words.next().unwrap();
        for (i, slot) in perms.iter_mut().enumerate() {
            let at = base + i * page();
            if start <= at && at < end {
                *slot = perm.to_owned();
            }
        }
    }
    perms
}

/// After a call, refused or not, `committed_bytes` is the count of committed pages, and in
/// [`CommitMode::Protected`] a page counts as committed exactly where the kernel has it
/// accessible (the reservation's own uncommitted pages are `---p`; a source mapped with no
/// access is `---s`).
fn assert_counts_true(r: &Reservation, after: &str) {
    let perms = page_perms(r);
    let mut committed = 0;
    for (i, perm) in perms.iter().enumerate() {
        assert!(!perm.is_empty(), "{after}: page {i} is not mapped");
        let is = r.is_committed(i * page(), page()).unwrap();
        committed += usize::from(is);
        if r.mode() == CommitMode::Protected && !r.is_guarded(i * page(), page()).unwrap() {
            assert_eq!(is, perm != "---p", "{after}: page {i} is {perm}");
        }
    }
    assert_eq!(r.committed_bytes(), committed * page(), "{after}");
}

#[test]
fn counts_stay_true_after_every_refused_call() {
    let _huge_pages = huge_page_lock::huge_page_lock();
    let file = memfd(2 * page());
    for mode in both_modes() {
        let mut r = reserve(mode, 16);
        r.commit(0, 8 * page()).unwrap();
        r.guard(12 * page(), page()).unwrap();
        r.map(
            4 * page(),
            2 * page(),
            MapSource::AnonymousShared,
            Protection::None,
            None,
        )
        .unwrap();
        r.protect(2 * page(), page(), Protection::Read).unwrap();
        assert_counts_true(&r, "setup");
        let source = MapSource::file(file.as_fd(), 0);
        let huge = Some(HugeTlbSize::Size2M);
        let rw = Protection::ReadWrite;
        type Call<'a> = Box<dyn Fn(&mut Reservation) -> Result<(), Error> + 'a>;
        let refusals: Vec<(&str, Call<'_>)> = vec![
            (
                "commit guard",
                Box::new(|r| r.commit(10 * page(), 4 * page())),
            ),
            (
                "map past end",
                Box::new(|r| r.map(8 * page(), 3 * page(), source, rw, None)),
            ),
            (
                "map guard",
                Box::new(|r| r.map(12 * page(), page(), source, rw, None)),
            ),
            (
                "map huge",
                Box::new(|r| r.map(0, 16 * page(), source, rw, huge)),
            ),
            (
                "protect",
                Box::new(|r| r.protect(6 * page(), 4 * page(), rw)),
            ),
            ("lock", Box::new(|r| r.lock(6 * page(), 4 * page()))),
            ("unlock", Box::new(|r| r.unlock(12 * page(), page()))),
            ("prefault", Box::new(|r| r.prefault(0, 4 * page()))),
            (
                "prefault read",
                Box::new(|r| r.prefault_read(0, 6 * page())),
            ),
            ("free", Box::new(|r| r.free(0, 6 * page()))),
            ("discard", Box::new(|r| r.discard(0, 10 * page()))),
            ("purge", Box::new(|r| r.purge(6 * page(), 4 * page()))),
            ("unguard", Box::new(|r| r.unguard(11 * page(), 2 * page()))),
            ("decommit", Box::new(|r| r.decommit(0, 17 * page()))),
            ("guard", Box::new(|r| r.guard(15 * page(), 2 * page()))),
            (
                "numa",
                Box::new(|r| r.bind_numa(0, page(), NumaPolicy::Bind, &[2000])),
            ),
        ];
        for (what, call) in refusals {
            assert!(call(&mut r).is_err(), "{mode:?} {what}: accepted");
            assert_counts_true(&r, &format!("{mode:?} {what}"));
        }
        r.decommit(0, 8 * page()).unwrap();
        assert_counts_true(&r, "decommit");
        assert_eq!(r.committed_bytes(), 0);
    }
}

/// A file source the system refuses before it unmaps anything leaves the range as it was: its
/// contents, its protection and its bookkeeping, in both modes, and the reservation goes on
/// working there. Each is refused by `mmap` with `MAP_FIXED`, which checks the descriptor,
/// its access and the offset before it replaces the old pages: a pipe and a directory
/// (`ENODEV`), an `O_PATH` descriptor (`EBADF`), a read-only descriptor mapped writable
/// (`EACCES`), a write-sealed memfd mapped writable (`EPERM`), and a device file at an offset
/// past `off_t` (`EOVERFLOW`, refused before `mmap`).
#[test]
fn map_of_a_file_the_system_refuses_leaves_the_range_as_it_was() {
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::fs::OpenOptionsExt;

    let page_bytes = page() as u64;
    let mut fds = [0; 2];
    // SAFETY: a valid out-array of two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fresh descriptors owned by nobody else.
    let ends = unsafe { [OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])] };
    // The pipe open for reading and writing: a mapping asks for read access, and each end has
    // only one of the two.
    let pipe = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{}", ends[0].as_raw_fd()))
        .unwrap();
    let directory = File::open("/").unwrap();
    let path_only = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open("/dev/zero")
        .unwrap();
    let read_only = {
        let file = memfd(4 * page());
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        (file, File::open(path).unwrap())
    };
    let sealed = {
        // SAFETY: a valid C string; no other preconditions.
        let fd = unsafe {
            libc::memfd_create(
                c"memvisor-vmem-sealed".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(4 * page_bytes).unwrap();
        // SAFETY: sealing a memfd of ours that nothing maps.
        let sealed = unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_WRITE) };
        assert_eq!(sealed, 0);
        file
    };
    let zero = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/zero")
        .unwrap();
    let past_off_t = 1u64 << 63;
    let (read, write) = (Protection::Read, Protection::ReadWrite);
    let refused: [(&str, MapSource<'_>, Protection, libc::c_int); 6] = [
        ("pipe", MapSource::file(pipe.as_fd(), 0), read, libc::ENODEV),
        (
            "directory",
            MapSource::file(directory.as_fd(), 0),
            read,
            libc::ENODEV,
        ),
        (
            "O_PATH",
            MapSource::file(path_only.as_fd(), 0),
            read,
            libc::EBADF,
        ),
        (
            "read-only",
            MapSource::file(read_only.1.as_fd(), 0),
            write,
            libc::EACCES,
        ),
        (
            "write-sealed",
            MapSource::file(sealed.as_fd(), 0),
            write,
            libc::EPERM,
        ),
        (
            "past off_t",
            MapSource::file(zero.as_fd(), past_off_t),
            write,
            libc::EOVERFLOW,
        ),
    ];
    for mode in both_modes() {
        let mut r = reserve(mode, 4);
        r.commit(0, 4 * page()).unwrap();
        for at in 0..4_u8 {
            // SAFETY: committed read-write.
            unsafe { r.as_ptr().add(usize::from(at) * page()).write(at + 1) };
        }
        r.protect(3 * page(), page(), Protection::Read).unwrap();
        let before = (
            mapping_at(r.as_ptr() as usize).0,
            mapping_at(r.as_ptr() as usize + 3 * page()).0,
        );
        for (what, source, protection, code) in refused {
            match r.map(page(), 2 * page(), source, protection, None) {
                Err(Error::Os {
                    operation: Operation::Map,
                    source,
                }) => assert_eq!(source.raw(), code, "{mode:?} {what}: {source}"),
                other => panic!("{mode:?} {what}: {other:?}"),
            }
            assert_eq!(r.committed_bytes(), 4 * page(), "{mode:?} {what}");
            assert!(r.is_committed(0, 4 * page()).unwrap(), "{mode:?} {what}");
            for at in 0..4_u8 {
                // SAFETY: committed and readable.
                let byte = unsafe { r.as_ptr().add(usize::from(at) * page()).read() };
                assert_eq!(byte, at + 1, "{mode:?} {what}: page {at}");
            }
            assert_eq!(
                (
                    mapping_at(r.as_ptr() as usize).0,
                    mapping_at(r.as_ptr() as usize + 3 * page()).0,
                ),
                before,
                "{mode:?} {what}"
            );
            // The records still say what the pages are: the read-only page is refused a
            // prefault, the others are prefaulted and written.
            assert_eq!(
                r.prefault(0, 4 * page()),
                Err(Error::NotWritable { offset: 3 * page() }),
                "{mode:?} {what}"
            );
            r.prefault(0, 3 * page()).unwrap();
        }
        // And the range is mapped over once a source the system takes is given.
        r.map(
            page(),
            2 * page(),
            MapSource::file(sealed.as_fd(), 0),
            Protection::Read,
            None,
        )
        .unwrap();
        // SAFETY: mapped readable from the memfd, which reads as zero.
        assert_eq!(unsafe { r.as_ptr().add(page()).read() }, 0);
    }
}
