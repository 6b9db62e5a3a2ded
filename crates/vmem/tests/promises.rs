//! Promises of the `Reservation` documentation, each checked by a test that fails when the
//! promise is broken.

use memvisor_vmem::{CommitMode, Error, Reservation, page_size};

const MODES: [CommitMode; 2] = [CommitMode::Protected, CommitMode::Sparse];

/// A reservation longer than `isize::MAX` bytes (after rounding up to pages) is refused with
/// `TooLarge` naming the length asked for and the limit, before the system is asked (the
/// system would refuse with `Os` on a 64-bit host, or map it in a 32-bit process), whatever
/// the alignment.
#[test]
fn reserve_past_isize_max_is_too_large_before_the_system() {
    let page = page_size();
    let limit = isize::MAX as usize - (page - 1);
    assert_eq!(limit % page, 0);
    for len in [
        limit + 1,
        isize::MAX as usize,
        isize::MAX as usize + 1,
        usize::MAX - page + 1,
        usize::MAX,
    ] {
        for mode in MODES {
            for alignment in [0, page, 3 * page, 1 << (usize::BITS - 1)] {
                let err = Reservation::builder()
                    .mode(mode)
                    .alignment(alignment)
                    .reserve(len)
                    .unwrap_err();
                assert_eq!(
                    err,
                    Error::TooLarge { len, limit },
                    "{len:#x} {mode:?} {alignment:#x}"
                );
                assert_eq!(
                    err.to_string(),
                    format!(
                        "a reservation of {len:#x} bytes exceeds the largest of {limit:#x} bytes"
                    )
                );
            }
        }
    }
}

/// A reservation of `len` bytes whose start is not a multiple of `unit`, or `None` where the
/// system places every such reservation at one (reservations are kept until one is found, so
/// each try lands at another address).
fn unaligned_reservation(len: usize, unit: usize, mode: CommitMode) -> Option<Reservation> {
    let mut tries = Vec::new();
    for _ in 0..64 {
        let r = Reservation::builder().mode(mode).reserve(len).unwrap();
        if !(r.as_ptr() as usize).is_multiple_of(unit) {
            return Some(r);
        }
        tries.push(r);
    }
    None
}

/// Explicit huge pages are mapped at addresses aligned to their size: a range whose offset and
/// length are multiples of the huge page size, in a reservation whose start is not, is
/// `Misaligned` naming the address before the system is asked (which would refuse with
/// `EINVAL`), and the range keeps its pages and contents.
#[test]
fn map_of_huge_pages_at_an_unaligned_address_is_misaligned_and_changes_nothing() {
    use memvisor_vmem::{HugeTlbSize, MapSource, Protection};
    let page = page_size();
    let huge = HugeTlbSize::Size2M.bytes();
    for mode in MODES {
        let Some(mut r) = unaligned_reservation(2 * huge + page, huge, mode) else {
            eprintln!("every reservation was placed at a huge page boundary; skipped");
            return;
        };
        r.commit(0, huge).unwrap();
        // SAFETY: the first huge page's bytes are committed read-write, nothing else uses them.
        unsafe { r.as_ptr().add(page).write(7) };
        for source in [MapSource::AnonymousPrivate, MapSource::AnonymousShared] {
            let err = r
                .map(
                    0,
                    huge,
                    source,
                    Protection::ReadWrite,
                    Some(HugeTlbSize::Size2M),
                )
                .unwrap_err();
            assert_eq!(
                err,
                Error::Misaligned {
                    what: "address",
                    value: r.as_ptr() as usize,
                    page_size: huge
                },
                "{mode:?} {source:?}"
            );
        }
        assert_eq!(r.committed_bytes(), huge);
        // SAFETY: still committed read-write.
        assert_eq!(unsafe { r.as_ptr().add(page).read() }, 7);
    }
}

/// What the public queries tell of every page: committed, guard page, and the first byte of
/// each committed page (all readable in [`prepared`]); and the committed bytes.
type Snapshot = (Vec<(bool, bool, Option<u8>)>, usize);

fn snapshot(r: &Reservation) -> Snapshot {
    let page = page_size();
    let pages = (0..r.len() / page)
        .map(|p| {
            let committed = r.is_committed(p * page, page).unwrap();
            // SAFETY: committed pages of `prepared` are readable, and nothing writes them.
            let value = committed.then(|| unsafe { r.as_ptr().add(p * page).read() });
            (committed, r.is_guarded(p * page, page).unwrap(), value)
        })
        .collect();
    (pages, r.committed_bytes())
}

/// Pages of the reservation [`prepared`] makes.
const PAGES: usize = 16;

/// A reservation of [`PAGES`] pages: 0..4 committed read-write, 4 read-only, 5 a guard page,
/// 6..8 uncommitted, 8 committed and locked, 9..11 (on Unix) shared anonymous memory, the rest
/// uncommitted; each committed page's first byte is its index plus one.
fn prepared(mode: CommitMode) -> Reservation {
    use memvisor_vmem::Protection;
    let page = page_size();
    let mut r = Reservation::builder()
        .mode(mode)
        .reserve(PAGES * page)
        .unwrap();
    r.commit(0, 5 * page).unwrap();
    r.commit(8 * page, page).unwrap();
    #[cfg(unix)]
    r.map(
        9 * page,
        2 * page,
        memvisor_vmem::MapSource::AnonymousShared,
        Protection::ReadWrite,
        None,
    )
    .unwrap();
    for p in (0..5).chain(8..if cfg!(unix) { 11 } else { 9 }) {
        // SAFETY: committed read-write, nothing else uses the reservation.
        unsafe { r.as_ptr().add(p * page).write(u8::try_from(p + 1).unwrap()) };
    }
    r.protect(4 * page, page, Protection::Read).unwrap();
    r.guard(5 * page, page).unwrap();
    r.lock(8 * page, page).unwrap();
    r
}

/// A fallible call of the reservation, named for the failure messages.
type Call = (
    &'static str,
    Box<dyn Fn(&mut Reservation, usize, usize) -> Result<(), Error>>,
);

/// Every call that takes a range, the mutators among them through `&mut`.
fn range_calls() -> Vec<Call> {
    use memvisor_vmem::{Advice, HugePageAdvice, MapSource, NumaPolicy, Protection};
    let calls: Vec<Call> = vec![
        ("commit", Box::new(|r, o, l| r.commit(o, l))),
        ("decommit", Box::new(|r, o, l| r.decommit(o, l))),
        (
            "protect",
            Box::new(|r, o, l| r.protect(o, l, Protection::None)),
        ),
        ("prefault", Box::new(|r, o, l| r.prefault(o, l))),
        ("prefault_read", Box::new(|r, o, l| r.prefault_read(o, l))),
        ("lock", Box::new(|r, o, l| r.lock(o, l))),
        ("unlock", Box::new(|r, o, l| r.unlock(o, l))),
        ("guard", Box::new(|r, o, l| r.guard(o, l))),
        ("unguard", Box::new(|r, o, l| r.unguard(o, l))),
        ("free", Box::new(|r, o, l| r.free(o, l))),
        ("discard", Box::new(|r, o, l| r.discard(o, l))),
        ("purge", Box::new(|r, o, l| r.purge(o, l))),
        (
            "advise",
            Box::new(|r, o, l| r.advise(o, l, Advice::DontDump)),
        ),
        (
            "advise_huge_pages",
            Box::new(|r, o, l| r.advise_huge_pages(o, l, HugePageAdvice::NoHuge)),
        ),
        (
            "bind_numa",
            Box::new(|r, o, l| r.bind_numa(o, l, NumaPolicy::Preferred, &[0])),
        ),
        (
            "map",
            Box::new(|r, o, l| r.map(o, l, MapSource::AnonymousPrivate, Protection::Read, None)),
        ),
        (
            "is_committed",
            Box::new(|r, o, l| r.is_committed(o, l).map(drop)),
        ),
        (
            "is_guarded",
            Box::new(|r, o, l| r.is_guarded(o, l).map(drop)),
        ),
        ("residency", Box::new(|r, o, l| r.residency(o, l).map(drop))),
        (
            "resident_pages",
            Box::new(|r, o, l| r.resident_pages(o, l).map(drop)),
        ),
    ];
    #[cfg(feature = "std")]
    let mut calls = calls;
    #[cfg(feature = "std")]
    calls.push((
        "prefault_parallel_with",
        Box::new(|r, o, l| {
            r.prefault_parallel_with(o, l, std::num::NonZeroUsize::new(2).unwrap(), 0)
        }),
    ));
    calls
}

/// Every call that takes a range refuses a bad one with the error its documentation names,
/// checked in the documented order (zero length, offset alignment, length alignment,
/// overflow, bounds), and the refusal changes nothing the queries can see.
#[test]
fn bad_ranges_are_refused_in_order_and_change_nothing() {
    let page = page_size();
    let size = PAGES * page;
    let top = usize::MAX - page + 1;
    let cases = [
        (top + 1, 0, Error::ZeroLength),
        (
            1,
            1,
            Error::Misaligned {
                what: "offset",
                value: 1,
                page_size: page,
            },
        ),
        (
            top,
            page + 1,
            Error::Misaligned {
                what: "length",
                value: page + 1,
                page_size: page,
            },
        ),
        (
            top,
            2 * page,
            Error::Overflow {
                value: top,
                add: 2 * page,
            },
        ),
        (
            size - page,
            2 * page,
            Error::OutOfBounds {
                offset: size - page,
                len: 2 * page,
                size,
            },
        ),
        (
            size,
            page,
            Error::OutOfBounds {
                offset: size,
                len: page,
                size,
            },
        ),
    ];
    for mode in MODES {
        let mut r = prepared(mode);
        let before = snapshot(&r);
        for (name, call) in range_calls() {
            for (offset, len, expected) in &cases {
                let err = call(&mut r, *offset, *len).unwrap_err();
                assert_eq!(&err, expected, "{name} {mode:?} {offset:#x} {len:#x}");
                // Under Miri, which interprets every query of the snapshot, once per call.
                if !cfg!(miri) {
                    assert_eq!(snapshot(&r), before, "{name} {mode:?} {offset:#x} {len:#x}");
                }
            }
            assert_eq!(snapshot(&r), before, "{name} {mode:?}");
        }
    }
}

/// Every documented refusal of a well-formed range for the state of its pages names the first
/// page at fault and changes nothing the queries can see.
#[test]
fn refusals_for_page_state_name_the_page_and_change_nothing() {
    use memvisor_vmem::{HugeTlbSize, MapSource, NumaPolicy, Protection};
    let page = page_size();
    let p = |n: usize| n * page;
    for mode in MODES {
        let mut r = prepared(mode);
        let before = snapshot(&r);
        let cases: Vec<(&str, Result<(), Error>, Error)> = vec![
            (
                "free locked",
                r.free(p(8), p(1)),
                Error::Locked { offset: p(8) },
            ),
            (
                "commit",
                r.commit(p(3), p(4)),
                Error::Guarded { offset: p(5) },
            ),
            (
                "decommit",
                r.decommit(p(0), p(8)),
                Error::Guarded { offset: p(5) },
            ),
            (
                "protect",
                r.protect(p(6), p(3), Protection::Read),
                Error::NotCommitted { offset: p(6) },
            ),
            (
                "protect guard",
                r.protect(p(4), p(2), Protection::ReadWrite),
                Error::Guarded { offset: p(5) },
            ),
            (
                "prefault",
                r.prefault(p(0), p(5)),
                Error::NotWritable { offset: p(4) },
            ),
            (
                "prefault gap",
                r.prefault(p(6), p(2)),
                Error::NotCommitted { offset: p(6) },
            ),
            (
                "prefault_read",
                r.prefault_read(p(0), p(6)),
                Error::Guarded { offset: p(5) },
            ),
            (
                "prefault_read gap",
                r.prefault_read(p(7), p(2)),
                Error::NotCommitted { offset: p(7) },
            ),
            (
                "lock",
                r.lock(p(6), p(3)),
                Error::NotCommitted { offset: p(6) },
            ),
            (
                "unlock",
                r.unlock(p(7), p(2)),
                Error::NotCommitted { offset: p(7) },
            ),
            (
                "unguard",
                r.unguard(p(5), p(2)),
                Error::NotGuarded { offset: p(6) },
            ),
            (
                "discard",
                r.discard(p(8), p(1)),
                Error::Locked { offset: p(8) },
            ),
            (
                "discard gap",
                r.discard(p(0), p(7)),
                Error::Guarded { offset: p(5) },
            ),
            (
                "free",
                r.free(p(7), p(2)),
                Error::NotCommitted { offset: p(7) },
            ),
            ("purge", r.purge(p(8), p(1)), Error::Locked { offset: p(8) }),
            (
                "bind_numa",
                r.bind_numa(p(0), p(4), NumaPolicy::Bind, &[0, 1024]),
                Error::NumaNode {
                    node: 1024,
                    limit: 1024,
                },
            ),
            (
                "map guard",
                r.map(
                    p(4),
                    p(2),
                    MapSource::AnonymousPrivate,
                    Protection::ReadWrite,
                    None,
                ),
                Error::Guarded { offset: p(5) },
            ),
            (
                "map huge offset",
                r.map(
                    p(1),
                    p(2),
                    MapSource::AnonymousPrivate,
                    Protection::ReadWrite,
                    Some(HugeTlbSize::Size2M),
                ),
                Error::Misaligned {
                    what: "offset",
                    value: p(1),
                    page_size: 2 << 20,
                },
            ),
        ];
        #[cfg(any(unix, feature = "std"))]
        let mut cases = cases;
        #[cfg(unix)]
        cases.push((
            "free shared",
            r.free(p(9), p(2)),
            Error::Shared { offset: p(9) },
        ));
        #[cfg(feature = "std")]
        cases.push((
            "prefault_parallel_with",
            r.prefault_parallel_with(p(0), p(5), std::num::NonZeroUsize::new(4).unwrap(), 0),
            Error::NotWritable { offset: p(4) },
        ));
        for (name, result, expected) in cases {
            assert_eq!(result, Err(expected), "{name} {mode:?}");
        }
        assert_eq!(snapshot(&r), before, "{mode:?}");
    }
}

/// The length is checked before the alignment, an alignment of zero (below the page size)
/// means the page size, and an alignment no address space can give is the system's `ENOMEM`.
#[test]
fn reserve_checks_the_length_first_and_reads_small_alignments_as_the_page_size() {
    let page = page_size();
    for mode in MODES {
        let builder = Reservation::builder().mode(mode);
        assert_eq!(
            builder.alignment(3).reserve(0).unwrap_err(),
            Error::ZeroLength
        );
        assert_eq!(
            builder.alignment(3).reserve(usize::MAX).unwrap_err(),
            Error::TooLarge {
                len: usize::MAX,
                limit: isize::MAX as usize - (page - 1)
            }
        );
        assert_eq!(
            builder.alignment(3 * page).reserve(page).unwrap_err(),
            Error::InvalidAlignment { align: 3 * page }
        );
        for alignment in [0, 1, page / 2] {
            let r = builder.alignment(alignment).reserve(1).unwrap();
            assert_eq!((r.alignment(), r.len(), r.mode()), (page, page, mode));
            assert!((r.as_ptr() as usize).is_multiple_of(page));
        }
        #[cfg(all(unix, target_pointer_width = "64"))]
        {
            let err = builder.alignment(1 << 63).reserve(page).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Os { operation: memvisor_vmem::Operation::Reserve, source }
                        if source.raw() == 12
                ),
                "{err:?}"
            );
        }
    }
}

/// Inaccessible pages cannot be made resident, so `lock` refuses a range holding one with
/// `NotReadable` naming it before the system is asked (Linux would lock the range and then
/// refuse with `ENOMEM`), the same on every system; read-only pages lock.
#[test]
fn lock_of_an_inaccessible_page_is_not_readable_and_changes_nothing() {
    use memvisor_vmem::Protection;
    let page = page_size();
    for mode in MODES {
        let mut r = prepared(mode);
        r.protect(2 * page, page, Protection::None).unwrap();
        let before = snapshot_without(&r, 2);
        assert_eq!(
            r.lock(0, 4 * page),
            Err(Error::NotReadable { offset: 2 * page }),
            "{mode:?}"
        );
        assert_eq!(snapshot_without(&r, 2), before, "{mode:?}");
        // Nothing was locked: every page of the range can be discarded (`Locked` otherwise),
        // where the system discards (Windows does not).
        if !cfg!(windows) {
            r.discard(0, 2 * page).unwrap();
        }
        r.lock(4 * page, page).unwrap();
    }
}

/// [`snapshot`], but not reading page `unreadable`.
fn snapshot_without(r: &Reservation, unreadable: usize) -> Snapshot {
    let page = page_size();
    let pages = (0..r.len() / page)
        .map(|p| {
            let committed = r.is_committed(p * page, page).unwrap();
            let value = (committed && p != unreadable)
                // SAFETY: committed and readable, and nothing writes it.
                .then(|| unsafe { r.as_ptr().add(p * page).read() });
            (committed, r.is_guarded(p * page, page).unwrap(), value)
        })
        .collect();
    (pages, r.committed_bytes())
}

/// The explicit huge page sizes are what their names say, as bytes and as shifts.
#[test]
fn huge_page_sizes_are_two_mib_and_one_gib() {
    use memvisor_vmem::HugeTlbSize;
    assert_eq!(
        (HugeTlbSize::Size2M.bytes(), HugeTlbSize::Size2M.shift()),
        (2 << 20, 21)
    );
    assert_eq!(
        (HugeTlbSize::Size1G.bytes(), HugeTlbSize::Size1G.shift()),
        (1 << 30, 30)
    );
}

/// A file source keeps the offset it was made with.
#[cfg(all(unix, feature = "std", not(miri)))]
#[test]
fn a_file_source_keeps_its_offset() {
    use std::os::fd::AsFd;

    use memvisor_vmem::MapSource;
    let file = std::fs::File::open("/dev/zero").unwrap();
    let offset = (1 << 40) + 3 * page_size() as u64;
    match MapSource::file(file.as_fd(), offset) {
        MapSource::File(source) => assert_eq!(source.offset(), offset),
        other => panic!("{other:?}"),
    }
}

/// `allocation_granularity` is "the granularity of reservation start addresses": every
/// reservation starts at a multiple of it, whatever its length, alignment and mode. It is a
/// power of two and a multiple of the page size, and the page size outside Windows.
#[test]
fn reservations_start_at_multiples_of_the_allocation_granularity() {
    let page = page_size();
    let granularity = memvisor_vmem::allocation_granularity();
    assert!(granularity.is_power_of_two());
    assert_eq!(granularity % page, 0);
    #[cfg(not(windows))]
    assert_eq!(granularity, page);
    for mode in MODES {
        for alignment in [0, 1, page, 2 << 20] {
            for len in [1, page, 3 * page + 1, 1 << 20] {
                let r = Reservation::builder()
                    .mode(mode)
                    .alignment(alignment)
                    .reserve(len)
                    .unwrap();
                let start = r.as_ptr() as usize;
                assert_eq!(start % granularity, 0, "{mode:?} {alignment} {len}");
                assert_eq!(start % r.alignment(), 0, "{mode:?} {alignment} {len}");
            }
        }
    }
}

/// `contains` answers "whether `ptr` points into the reservation": its first and last bytes
/// do; one past the end, one before the start, null and the top address do not.
#[test]
fn contains_holds_exactly_the_reserved_bytes() {
    let page = page_size();
    for mode in MODES {
        let r = Reservation::builder().mode(mode).reserve(3 * page).unwrap();
        let start = r.as_ptr().cast_const();
        assert!(r.contains(start));
        assert!(r.contains(start.wrapping_add(page)));
        assert!(r.contains(start.wrapping_add(3 * page - 1)));
        assert!(!r.contains(start.wrapping_add(3 * page)));
        assert!(!r.contains(start.wrapping_sub(1)));
        assert!(!r.contains(std::ptr::null()));
        assert!(!r.contains(std::ptr::without_provenance(usize::MAX)));
    }
}

/// A parallel prefault takes any number of threads ("at most 256, however many are asked for")
/// and any minimum part size, the largest included, and populates every page of the range.
#[cfg(feature = "std")]
#[test]
fn parallel_prefault_takes_any_thread_count_and_part_size() {
    use std::num::NonZeroUsize;

    let page = page_size();
    let len = 8 * page;
    let mut r = Reservation::new(len).unwrap();
    for (threads, min_part) in [
        (NonZeroUsize::MAX, 0),
        (NonZeroUsize::MAX, 1),
        (NonZeroUsize::MAX, usize::MAX),
        (NonZeroUsize::MIN, usize::MAX),
    ] {
        r.commit(0, len).unwrap();
        r.prefault_parallel_with(0, len, threads, min_part)
            .unwrap_or_else(|e| panic!("{threads} {min_part}: {e:?}"));
        assert_eq!(r.resident_pages(0, len).unwrap(), 8, "{threads} {min_part}");
        r.decommit(0, len).unwrap();
    }
    r.commit(0, len).unwrap();
    r.prefault_parallel(0, len, NonZeroUsize::MAX).unwrap();
    assert_eq!(r.resident_pages(0, len).unwrap(), 8);
}
