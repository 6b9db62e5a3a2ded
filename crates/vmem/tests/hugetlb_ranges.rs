//! Ranges mapped with explicit huge pages (`map` with a `HugeTlbSize`, or a hugetlbfs memfd):
//! the system acts on them in whole huge pages only, so every call whose range cuts one is
//! refused with `Error::Misaligned` naming the huge page size before anything changes, and
//! calls over whole huge pages work. Needs free huge pages (`vm.nr_hugepages`); without them
//! the tests say so and check nothing. Linux only.
#![cfg(all(target_os = "linux", feature = "std", not(miri)))]

use std::fs::File;
use std::os::fd::{AsFd, FromRawFd};

use memvisor_testkit::huge_page_lock;
use memvisor_vmem::{
    Advice, CommitMode, Error, HugePageAdvice, HugeTlbSize, MapSource, NumaPolicy, Operation,
    Protection, Reservation, page_size,
};

fn page() -> usize {
    page_size()
}

const HUGE: usize = 2 << 20;

/// A memfd on hugetlbfs of `len` bytes, or `None` where the kernel has none.
fn hugetlb_memfd(len: usize) -> Option<File> {
    let flags = libc::MFD_CLOEXEC | libc::MFD_HUGETLB;
    // SAFETY: a valid C string; no other preconditions.
    let fd = unsafe { libc::memfd_create(c"memvisor-vmem-huge-ranges".as_ptr(), flags) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(len as u64).ok()?;
    Some(file)
}

/// Whether the mapping holding `addr` is a hugetlb one (`ht` in its `VmFlags`).
fn is_hugetlb_at(addr: usize) -> bool {
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
        } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
            return flags.split_whitespace().any(|f| f == "ht");
        }
    }
    panic!("no mapping at {addr:#x}");
}

/// A reservation of four huge pages whose middle two are mapped from `source` with explicit
/// huge pages, each of whose pages holds its index; `None` (and a printed reason) when the
/// system has no huge pages to give.
fn mapped(mode: CommitMode, file: Option<&File>) -> Option<Reservation> {
    let mut r = Reservation::builder()
        .alignment(HUGE)
        .mode(mode)
        .reserve(4 * HUGE)
        .unwrap();
    r.commit(0, 4 * HUGE).unwrap();
    let source = file.map_or(MapSource::AnonymousPrivate, |f| {
        MapSource::file(f.as_fd(), 0)
    });
    match r.map(
        HUGE,
        2 * HUGE,
        source,
        Protection::ReadWrite,
        Some(HugeTlbSize::Size2M),
    ) {
        Ok(()) => {}
        Err(Error::Os {
            operation: Operation::Map,
            source,
        }) if source.raw() == libc::ENOMEM => {
            eprintln!("SKIPPED: no free 2 MiB huge pages (vm.nr_hugepages)");
            return None;
        }
        Err(e) => panic!("map: {e:?}"),
    }
    for at in (0..4 * HUGE).step_by(page()) {
        // SAFETY: committed read-write.
        unsafe { r.as_ptr().add(at).cast::<usize>().write(at) };
    }
    Some(r)
}

/// Every page still holds its index, is committed read-write, and the huge pages are there.
fn assert_unchanged(r: &Reservation, what: &str) {
    assert_eq!(r.committed_bytes(), 4 * HUGE, "{what}");
    assert!(r.is_committed(0, 4 * HUGE).unwrap(), "{what}");
    for at in (0..4 * HUGE).step_by(page()) {
        // SAFETY: committed.
        let value = unsafe { r.as_ptr().add(at).cast::<usize>().read() };
        assert_eq!(value, at, "{what}: page {at:#x}");
    }
    for at in [HUGE, 2 * HUGE, 3 * HUGE - page()] {
        assert!(is_hugetlb_at(r.as_ptr() as usize + at), "{what}: {at:#x}");
    }
    assert!(!is_hugetlb_at(r.as_ptr() as usize), "{what}");
}

/// Ranges that cut a huge page of the mapped run `HUGE..3 * HUGE`, with the error each gets.
fn cutting_ranges() -> Vec<(usize, usize, Error)> {
    let cut = |what, value| Error::Misaligned {
        what,
        value,
        page_size: HUGE,
    };
    vec![
        // The start inside a huge page.
        (HUGE + page(), page(), cut("offset", HUGE + page())),
        (2 * HUGE - page(), HUGE, cut("offset", 2 * HUGE - page())),
        (3 * HUGE - page(), HUGE, cut("offset", 3 * HUGE - page())),
        // The start on a boundary (or before the run), the end inside a huge page.
        (HUGE, page(), cut("end", HUGE + page())),
        (0, HUGE + page(), cut("end", HUGE + page())),
        (2 * HUGE, HUGE - page(), cut("end", 3 * HUGE - page())),
    ]
}

/// Each call that acts on the pages of a range, over `offset..offset + len`.
#[allow(clippy::type_complexity, reason = "a table of calls")]
fn calls() -> Vec<(
    &'static str,
    Box<dyn Fn(&mut Reservation, usize, usize) -> Result<(), Error>>,
)> {
    vec![
        ("commit", Box::new(|r, o, l| r.commit(o, l))),
        ("decommit", Box::new(|r, o, l| r.decommit(o, l))),
        (
            "protect",
            Box::new(|r, o, l| r.protect(o, l, Protection::Read)),
        ),
        ("lock", Box::new(|r, o, l| r.lock(o, l))),
        ("unlock", Box::new(|r, o, l| r.unlock(o, l))),
        (
            "advise_huge_pages",
            Box::new(|r, o, l| r.advise_huge_pages(o, l, HugePageAdvice::NoHuge)),
        ),
        (
            "advise",
            Box::new(|r, o, l| r.advise(o, l, Advice::DontDump)),
        ),
        (
            "bind_numa",
            Box::new(|r, o, l| r.bind_numa(o, l, NumaPolicy::Preferred, &[0])),
        ),
        ("guard", Box::new(|r, o, l| r.guard(o, l))),
        ("unguard", Box::new(|r, o, l| r.unguard(o, l))),
        ("free", Box::new(|r, o, l| r.free(o, l))),
        ("discard", Box::new(|r, o, l| r.discard(o, l))),
        ("purge", Box::new(|r, o, l| r.purge(o, l))),
        (
            "map",
            Box::new(|r, o, l| {
                r.map(
                    o,
                    l,
                    MapSource::AnonymousPrivate,
                    Protection::ReadWrite,
                    None,
                )
            }),
        ),
    ]
}

fn refuses_every_cut(file: Option<&File>) {
    for mode in [CommitMode::Protected, CommitMode::Sparse] {
        let Some(mut r) = mapped(mode, file) else {
            return;
        };
        assert_unchanged(&r, "after map");
        for (name, call) in calls() {
            for (offset, len, expected) in cutting_ranges() {
                let got = call(&mut r, offset, len);
                assert_eq!(got, Err(expected), "{mode:?} {name} {offset:#x}+{len:#x}");
                assert_unchanged(&r, name);
            }
        }
        // Queries and prefaults change no mapping: any page range is accepted.
        for (offset, len, _) in cutting_ranges() {
            assert!(r.is_committed(offset, len).unwrap(), "{mode:?}");
            assert!(!r.is_guarded(offset, len).unwrap(), "{mode:?}");
            assert_eq!(
                r.resident_pages(offset, len).unwrap(),
                len / page(),
                "{mode:?}"
            );
            r.prefault(offset, len).unwrap();
            r.prefault_read(offset, len).unwrap();
        }
        assert_unchanged(&r, "queries and prefaults");
        // Linux cannot free explicit huge pages lazily (nor shared pages): refused before
        // any advice.
        let expected = if file.is_some() {
            Error::Shared { offset: HUGE }
        } else {
            Error::HugeTlb {
                offset: HUGE,
                operation: Operation::Free,
            }
        };
        assert_eq!(r.free(0, 2 * HUGE), Err(expected));
        assert_unchanged(&r, "free");
        // Whole huge pages are the system's unit: they are accepted.
        r.protect(HUGE, HUGE, Protection::Read).unwrap();
        r.commit(HUGE, HUGE).unwrap();
        r.lock(HUGE, 2 * HUGE).unwrap();
        r.unlock(HUGE, 2 * HUGE).unwrap();
        r.discard(2 * HUGE, HUGE).unwrap();
        // SAFETY: committed; a discarded private or shared-but-punched page reads zero or
        // its source, and a fresh hugetlb memfd's source is zero too.
        assert_eq!(unsafe { r.as_ptr().add(2 * HUGE).read() }, 0);
        r.decommit(HUGE, 2 * HUGE).unwrap();
        // The reservation's own pages are back: any page may be acted on again.
        assert!(!is_hugetlb_at(r.as_ptr() as usize + HUGE));
        r.commit(HUGE + page(), page()).unwrap();
        r.decommit(HUGE + page(), page()).unwrap();
    }
}

#[test]
fn hugetlb_anonymous_ranges_refuse_every_call_cutting_a_huge_page() {
    let _huge_pages = huge_page_lock::huge_page_lock();
    refuses_every_cut(None);
}

#[test]
fn hugetlbfs_file_ranges_refuse_every_call_cutting_a_huge_page() {
    let _huge_pages = huge_page_lock::huge_page_lock();
    let Some(file) = hugetlb_memfd(2 * HUGE) else {
        eprintln!("SKIPPED: this kernel has no hugetlbfs memfds");
        return;
    };
    refuses_every_cut(Some(&file));
}

/// A map of explicit huge pages over a range holding huge pages of an earlier map is checked
/// like any other call: a range cutting the earlier huge pages is refused.
#[test]
fn map_over_part_of_earlier_huge_pages_is_refused() {
    let _huge_pages = huge_page_lock::huge_page_lock();
    let Some(mut r) = mapped(CommitMode::Protected, None) else {
        return;
    };
    let err = r.map(
        0,
        HUGE + HUGE / 2,
        MapSource::AnonymousShared,
        Protection::ReadWrite,
        None,
    );
    assert_eq!(
        err,
        Err(Error::Misaligned {
            what: "end",
            value: HUGE + HUGE / 2,
            page_size: HUGE
        })
    );
    assert_unchanged(&r, "map over half a huge page");
}

/// A hugetlbfs file is mapped in its own huge pages, which the system places only at addresses
/// aligned to them: a range whose offset and length are multiples of the huge page size, in a
/// reservation whose start is not, is `Misaligned` naming the address before the system is
/// asked (it would refuse with `EINVAL`), also without `huge`, and the range keeps its pages.
#[test]
fn hugetlbfs_file_at_an_unaligned_address_is_misaligned_and_changes_nothing() {
    let _huge_pages = huge_page_lock::huge_page_lock();
    let Some(file) = hugetlb_memfd(HUGE) else {
        eprintln!("SKIPPED: this kernel has no hugetlbfs memfds");
        return;
    };
    // Reservations are kept until one starts off a huge page boundary, so each try lands
    // elsewhere.
    let mut tries = Vec::new();
    let mut r = loop {
        let r = Reservation::new(2 * HUGE + page()).unwrap();
        if !(r.as_ptr() as usize).is_multiple_of(HUGE) {
            break r;
        }
        assert!(
            tries.len() < 64,
            "every reservation starts at a huge page boundary"
        );
        tries.push(r);
    };
    r.commit(0, HUGE).unwrap();
    // SAFETY: committed read-write, nothing else uses it.
    unsafe { r.as_ptr().write(7) };
    for huge in [None, Some(HugeTlbSize::Size2M)] {
        let err = r
            .map(
                0,
                HUGE,
                MapSource::file(file.as_fd(), 0),
                Protection::ReadWrite,
                huge,
            )
            .unwrap_err();
        assert_eq!(
            err,
            Error::Misaligned {
                what: "address",
                value: r.as_ptr() as usize,
                page_size: HUGE
            },
            "{huge:?}"
        );
    }
    assert_eq!(r.committed_bytes(), HUGE);
    // SAFETY: still committed read-write.
    assert_eq!(unsafe { r.as_ptr().read() }, 7);
}
