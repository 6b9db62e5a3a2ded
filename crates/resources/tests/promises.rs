//! The documented promises no other test file pins down exactly: the `Display` text of every
//! error (each names its values), the error each snapshot check names, "a failed call leaves the
//! allocator exactly as it was" for every fallible call (compared by equality, snapshot, heap
//! bytes and what the allocator does next), and the cost of `resize`.

use memvisor_resources::{
    AddressAllocator, AddressRange, AllocPolicy, AllocatorSet, Error, IdAllocator, IdLoadLimits,
    IdSnapshot, MAX_ID_RANGE, Request,
};

fn r(start: u64, end: u64) -> AddressRange {
    AddressRange::new(start, end).unwrap()
}

fn req(size: u64, alignment: u64, policy: AllocPolicy) -> Request {
    Request::new(size, alignment, policy).unwrap()
}

#[test]
fn error_display_names_every_value() {
    let cases: [(Error, &str); 35] = [
        (
            Error::InvalidRange { start: 9, end: 1 },
            "invalid range: start 0x9 is after end 0x1",
        ),
        (
            Error::ZeroSize,
            "invalid size: a size of zero was requested",
        ),
        (
            Error::InvalidAlignment(0x30),
            "invalid alignment 0x30: alignment must be a power of two",
        ),
        (
            Error::Overflow {
                start: u64::MAX,
                size: 2,
            },
            "overflow: 0x2 units starting at 0xffffffffffffffff go past u64::MAX",
        ),
        (
            Error::UnalignedAddress {
                address: 0x1800,
                alignment: 0x1000,
            },
            "address 0x1800 is not aligned to 0x1000",
        ),
        (
            Error::OutOfSpace {
                size: 0x2000,
                alignment: 0x1000,
            },
            "out of space: no free range holds 0x2000 units aligned to 0x1000",
        ),
        (
            Error::OutsideSpace {
                range: r(0x10, 0x1f),
                space: r(0x20, 0x2f),
            },
            "range [0x10, 0x1f] is outside the managed space [0x20, 0x2f]",
        ),
        (
            Error::Overlap {
                requested: r(0x10, 0x1f),
                existing: r(0x18, 0x18),
            },
            "range [0x10, 0x1f] overlaps the existing allocation [0x18, 0x18]",
        ),
        (
            Error::NotAllocated(r(0x10, 0x1f)),
            "range [0x10, 0x1f] is not allocated",
        ),
        (
            Error::NotExactAllocation {
                requested: r(0x10, 0x1f),
                existing: r(0x10, 0x2f),
            },
            "range [0x10, 0x1f] is not an allocation: the allocation there is [0x10, 0x2f]",
        ),
        (
            Error::AddressNotAllocated(0x1234),
            "address 0x1234 is not in any allocation",
        ),
        (
            Error::TooManyAllocations(u32::MAX),
            "too many allocations: the limit of 4294967295 live ranges is reached",
        ),
        (
            Error::InvalidIdRange { first: 9, last: 1 },
            "invalid ID range: first 9 is after last 1",
        ),
        (
            Error::IdRangeTooLarge {
                first: 0,
                last: u64::MAX,
                max: MAX_ID_RANGE,
            },
            "ID range 0..=18446744073709551615 holds more than 4294967296 IDs",
        ),
        (
            Error::IdOutOfRange {
                id: 4,
                first: 5,
                last: 23,
            },
            "ID 4 is outside the managed range 5..=23",
        ),
        (Error::IdAlreadyAllocated(7), "ID 7 is already allocated"),
        (Error::IdNeverAllocated(8), "ID 8 was never allocated"),
        (Error::IdAlreadyFree(9), "ID 9 is already free"),
        (
            Error::ZeroIdCount,
            "invalid ID count: zero IDs were requested",
        ),
        (
            Error::OutOfIds {
                count: 4,
                alignment: 8,
            },
            "out of IDs: no run of 4 free IDs aligned to 8",
        ),
        (
            Error::EmptySet,
            "an allocator set needs at least one address space",
        ),
        (Error::KeyInUse(3), "allocation key 3 is already in use"),
        (Error::UnknownKey(4), "no allocation has key 4"),
        (
            Error::NotEnoughIds {
                requested: 3,
                available: 2,
            },
            "not enough IDs: 3 requested, 2 free",
        ),
        (
            Error::SnapshotTooLarge {
                needed: 2048,
                limit: 1024,
            },
            "snapshot too large: loading it needs 2048 bytes of bitmap, the limit is 1024",
        ),
        (
            Error::HeapRefused { bytes: 448 },
            "the heap refused 448 bytes",
        ),
        (
            Error::Inconsistent("used count is wrong"),
            "inconsistent state: used count is wrong",
        ),
        (
            Error::VmNextIdOutOfRange {
                next_id: 12,
                range_base: 5,
                range_end: 10,
            },
            "vm-allocator snapshot: next_id 12 is outside range_base 5 to range_end + 1 (10 + 1)",
        ),
        (
            Error::VmNextIdNull { range_end: 7 },
            "vm-allocator snapshot: next_id is null (every ID up to u32::MAX handed out) but \
             range_end is 7",
        ),
        (
            Error::VmFreedIdsUnsorted { id: 1, previous: 5 },
            "vm-allocator snapshot: freed ID 1 is listed after 5",
        ),
        (
            Error::VmNotATree { node: 2, child: 3 },
            "vm-allocator snapshot: tree node 2 names node 3 as a child",
        ),
        (
            Error::VmTreeHeight {
                start: 0x10,
                end: 0x1f,
                stored: 2,
                actual: 1,
            },
            "vm-allocator snapshot: the tree node of [0x10, 0x1f] says height 2, its subtree has \
             height 1",
        ),
        (
            Error::VmTreeUnbalanced {
                start: 0,
                end: 0xf,
                left: 0,
                right: 2,
            },
            "vm-allocator snapshot: the tree node of [0x0, 0xf] is out of balance: subtrees of \
             heights 0 and 2",
        ),
        (
            Error::VmTreeTooDeep { limit: 50 },
            "vm-allocator snapshot: the tree is deeper than 50 levels",
        ),
        (
            Error::VmTreeRangesOverlap {
                range: AddressRange::new(0x10, 0x1f).unwrap(),
                previous: AddressRange::new(0, 0x10).unwrap(),
            },
            "vm-allocator snapshot: tree range [0x10, 0x1f] does not start after [0x0, 0x10]",
        ),
    ];
    for (err, text) in cases {
        assert_eq!(err.to_string(), text, "{err:?}");
    }
}

/// `OutOfIds` for one ID (what `allocate_id` gives when every ID is allocated) names no run.
#[test]
fn out_of_ids_for_one_id_reads_in_the_singular() {
    let mut gsis = IdAllocator::new(5, 5).unwrap();
    gsis.allocate_id().unwrap();
    assert_eq!(
        gsis.allocate_id().unwrap_err().to_string(),
        "out of IDs: no free ID"
    );
    assert_eq!(
        gsis.allocate_ids(1, 8).unwrap_err().to_string(),
        "out of IDs: no free ID aligned to 8"
    );
    assert_eq!(
        gsis.allocate_ids(2, 1).unwrap_err().to_string(),
        "out of IDs: no run of 2 free IDs aligned to 1"
    );
}

/// `IdAllocator::from_snapshot` of a snapshot written by hand.
fn load_ids(text: &str) -> Result<IdAllocator, Error> {
    let snapshot: IdSnapshot = serde_json::from_str(text).unwrap();
    IdAllocator::from_snapshot(&snapshot, &IdLoadLimits::default())
}

#[test]
fn id_snapshot_each_failed_check_is_named() {
    let cases = [
        (
            r#"{"first":9,"last":1,"used":0,"allocated":[],"never_allocated":[]}"#,
            Error::Inconsistent("first > last"),
        ),
        (
            r#"{"first":0,"last":10,"used":0,"allocated":[[3,1]],"never_allocated":[]}"#,
            Error::Inconsistent("a run starts after it ends"),
        ),
        (
            r#"{"first":2,"last":10,"used":2,"allocated":[[1,2]],"never_allocated":[]}"#,
            Error::Inconsistent("a run lies outside the ID range"),
        ),
        (
            r#"{"first":0,"last":10,"used":2,"allocated":[[10,11]],"never_allocated":[]}"#,
            Error::Inconsistent("a run lies outside the ID range"),
        ),
        (
            r#"{"first":0,"last":10,"used":2,"allocated":[[5,5],[1,1]],"never_allocated":[]}"#,
            Error::Inconsistent("runs are not sorted, overlap or touch"),
        ),
        (
            r#"{"first":0,"last":10,"used":4,"allocated":[[1,3],[3,3]],"never_allocated":[]}"#,
            Error::Inconsistent("runs are not sorted, overlap or touch"),
        ),
        (
            r#"{"first":0,"last":10,"used":4,"allocated":[[1,2],[3,4]],"never_allocated":[]}"#,
            Error::Inconsistent("runs are not sorted, overlap or touch"),
        ),
        (
            r#"{"first":0,"last":10,"used":0,"allocated":[],"never_allocated":[[4,6],[7,9]]}"#,
            Error::Inconsistent("runs are not sorted, overlap or touch"),
        ),
        (
            r#"{"first":0,"last":10,"used":5,"allocated":[[0,0]],"never_allocated":[]}"#,
            Error::Inconsistent("used count does not match the allocated runs"),
        ),
        (
            r#"{"first":0,"last":10,"used":1,"allocated":[[0,0]],"never_allocated":[[0,10]]}"#,
            Error::Inconsistent("an ID is both allocated and never allocated"),
        ),
        (
            r#"{"first":0,"last":4294967295,"used":4000000000,"allocated":[[0,3999999999]],"never_allocated":[]}"#,
            Error::SnapshotTooLarge {
                needed: 8 * (62_500_000 + 976_563 + 15_259),
                limit: 1 << 20,
            },
        ),
    ];
    for (text, want) in cases {
        assert_eq!(load_ids(text).map(|a| a.used()), Err(want), "{text}");
        // Through `Deserialize` the same check fails, and the message names it.
        let err = serde_json::from_str::<IdAllocator>(text).unwrap_err();
        assert!(err.to_string().contains(&want.to_string()), "{err}");
    }
    // A `u64` range of more than `MAX_ID_RANGE` IDs.
    let wide: IdSnapshot<u64> = serde_json::from_str(
        r#"{"first":0,"last":4294967296,"used":0,"allocated":[],"never_allocated":[]}"#,
    )
    .unwrap();
    assert_eq!(
        IdAllocator::from_snapshot(&wide, &IdLoadLimits::default()).map(|a| a.used()),
        Err(Error::IdRangeTooLarge {
            first: 0,
            last: 1 << 32,
            max: MAX_ID_RANGE
        })
    );
}

#[test]
fn address_snapshot_each_failed_check_is_named() {
    let space = r#""space":{"start":4096,"end":65535}"#;
    let entry = |s: u64, e: u64| format!(r#"{{"range":{{"start":{s},"end":{e}}},"tag":1}}"#);
    let cases = [
        (
            format!(
                r#"{{{space},"count":2,"allocations":[{},{}]}}"#,
                entry(4096, 8191),
                entry(8000, 9000)
            ),
            Error::Inconsistent("allocations are not sorted or overlap"),
        ),
        (
            format!(
                r#"{{{space},"count":2,"allocations":[{},{}]}}"#,
                entry(9000, 9001),
                entry(5000, 5001)
            ),
            Error::Inconsistent("allocations are not sorted or overlap"),
        ),
        (
            format!(
                r#"{{{space},"count":1,"allocations":[{}]}}"#,
                entry(65535, 65536)
            ),
            Error::OutsideSpace {
                range: r(65535, 65536),
                space: r(4096, 65535),
            },
        ),
        (
            format!(
                r#"{{{space},"count":3,"allocations":[{}]}}"#,
                entry(5000, 5001)
            ),
            Error::Inconsistent("count does not match the allocations"),
        ),
        (
            format!(
                r#"{{{space},"count":1,"allocations":[{}]}}"#,
                entry(5001, 5000)
            ),
            Error::InvalidRange {
                start: 5001,
                end: 5000,
            },
        ),
    ];
    for (text, want) in &cases {
        let err = serde_json::from_str::<AddressAllocator<u32>>(text).unwrap_err();
        assert!(
            err.to_string().contains(&want.to_string()),
            "{err} for {text}"
        );
    }
}

/// What a caller can see of an `IdAllocator`: every query, the snapshot and the heap it holds.
fn id_view(a: &IdAllocator) -> String {
    format!(
        "{} {} {} {:?} {:?} {:?} {}",
        a.used(),
        a.available(),
        a.heap_bytes(),
        a.iter().collect::<Vec<_>>(),
        a.allocated_runs().collect::<Vec<_>>(),
        a.never_allocated_runs().collect::<Vec<_>>(),
        serde_json::to_string(a).unwrap()
    )
}

/// The answers of a fixed script that reads every kind of state (smallest free, parked ID,
/// runs, never-allocated runs) run on `a`.
fn id_follow_up(mut a: IdAllocator) -> Vec<String> {
    let mut out = Vec::new();
    out.push(format!("{:?}", a.allocate_id()));
    out.push(format!("{:?}", a.allocate_ids(4, 4)));
    out.push(format!("{:?}", a.free_id(150)));
    out.push(format!("{:?}", a.allocate_many(3)));
    out.push(format!("{:?}", a.allocate_id_at(199)));
    out.push(format!("{:?}", a.free_ids(60..=70)));
    out.push(format!("{:?}", a.allocate_ids_at(60, 11)));
    out.push(id_view(&a));
    out
}

#[test]
fn id_every_failed_call_leaves_the_allocator_exactly_as_it_was() {
    // IDs 0..=99 handed out, some freed (the last one freed is held aside), 100..=200 never.
    let mut a = IdAllocator::new(0, 200).unwrap();
    a.allocate_ids(100, 1).unwrap();
    a.free_ids(20..=29).unwrap();
    a.free_id(5).unwrap();
    a.free_id(50).unwrap();
    let mut full = IdAllocator::new(0, 63).unwrap();
    full.allocate_many(64).unwrap();

    type Call = fn(&mut IdAllocator) -> Error;
    let calls: [(&str, Call); 19] = [
        ("allocate_id_at out of range", |a| {
            a.allocate_id_at(201).unwrap_err()
        }),
        ("allocate_id_at allocated", |a| {
            a.allocate_id_at(7).unwrap_err()
        }),
        ("allocate_ids zero", |a| a.allocate_ids(0, 1).unwrap_err()),
        ("allocate_ids bad alignment", |a| {
            a.allocate_ids(1, 3).unwrap_err()
        }),
        ("allocate_ids no run", |a| {
            a.allocate_ids(102, 1).unwrap_err()
        }),
        ("allocate_ids no aligned run", |a| {
            a.allocate_ids(2, 1 << 63).unwrap_err()
        }),
        ("allocate_many zero", |a| a.allocate_many(0).unwrap_err()),
        ("allocate_many too many", |a| {
            a.allocate_many(114).unwrap_err()
        }),
        ("allocate_ids_at zero", |a| {
            a.allocate_ids_at(150, 0).unwrap_err()
        }),
        ("allocate_ids_at past last", |a| {
            a.allocate_ids_at(195, 10).unwrap_err()
        }),
        ("allocate_ids_at first out of range", |a| {
            a.allocate_ids_at(300, 1).unwrap_err()
        }),
        ("allocate_ids_at taken", |a| {
            a.allocate_ids_at(15, 10).unwrap_err()
        }),
        ("allocate_ids_at over the parked ID", |a| {
            a.allocate_ids_at(45, 10).unwrap_err()
        }),
        ("free_id out of range", |a| a.free_id(201).unwrap_err()),
        ("free_id never", |a| a.free_id(150).unwrap_err()),
        ("free_id already free", |a| a.free_id(20).unwrap_err()),
        ("free_id parked", |a| a.free_id(50).unwrap_err()),
        ("free_ids empty", |a| {
            #[allow(clippy::reversed_empty_ranges)]
            a.free_ids(9..=8).unwrap_err()
        }),
        ("free_ids partly free", |a| a.free_ids(10..=25).unwrap_err()),
    ];
    for (what, call) in calls {
        let mut b = a.clone();
        let err = call(&mut b);
        assert_eq!(b, a, "{what}: {err}");
        // A clone holds no spare capacity: compare with one.
        assert_eq!(id_view(&b), id_view(&a.clone()), "{what}: {err}");
        assert_eq!(format!("{b:?}"), format!("{a:?}"), "{what}: {err}");
        assert_eq!(id_follow_up(b), id_follow_up(a.clone()), "{what}: {err}");
    }
    let mut b = a.clone();
    assert_eq!(b.free_ids(95..=201), Err(Error::IdNeverAllocated(100)));
    assert_eq!(id_view(&b), id_view(&a.clone()));
    let mut b = full.clone();
    assert_eq!(
        b.allocate_id(),
        Err(Error::OutOfIds {
            count: 1,
            alignment: 1
        })
    );
    assert_eq!(id_view(&b), id_view(&full.clone()));
    // A `u64` run whose last ID is past `u64::MAX`.
    let mut top = IdAllocator::<u64>::with_range(u64::MAX - 10, u64::MAX).unwrap();
    top.allocate_id_at(u64::MAX - 1).unwrap();
    top.free_id(u64::MAX - 1).unwrap();
    // Clones, so that neither holds spare capacity.
    let (mut top, before) = (top.clone(), top.clone());
    assert_eq!(
        top.allocate_ids_at(u64::MAX, 2),
        Err(Error::Overflow {
            start: u64::MAX,
            size: 2
        })
    );
    assert_eq!(top, before);
    assert_eq!(top.heap_bytes(), before.heap_bytes());
    assert_eq!(top.allocate_id(), Ok(u64::MAX - 10));
}

/// What a caller can see of an `AddressAllocator`.
fn addr_view(a: &AddressAllocator<u32>) -> String {
    format!(
        "{} {} {} {} {:?} {:?} {}",
        a.len(),
        a.used(),
        a.available(),
        a.heap_bytes(),
        a.allocated().map(|x| (x.range, *x.tag)).collect::<Vec<_>>(),
        a.free_ranges().collect::<Vec<_>>(),
        serde_json::to_string(a).unwrap()
    )
}

/// The answers of a fixed script of placements, frees and moves run on `a`.
fn addr_follow_up(mut a: AddressAllocator<u32>) -> Vec<String> {
    let mut out = Vec::new();
    for (size, align, policy) in [
        (0x1000, 0x1000, AllocPolicy::FirstMatch),
        (0x800, 0x1000, AllocPolicy::LastMatch),
        (0x3000, 0x1000, AllocPolicy::FirstMatch),
        (0x10, 0x10, AllocPolicy::LastMatch),
    ] {
        out.push(format!(
            "{:?}",
            a.allocate_with(&req(size, align, policy), 9)
        ));
    }
    out.push(format!("{:?}", a.free(&r(0x4000, 0x4fff))));
    out.push(format!(
        "{:?}",
        a.allocate_with(&req(0x2000, 0x2000, AllocPolicy::FirstMatch), 8)
    ));
    out.push(format!("{:?}", a.release_containing(0x8800)));
    out.push(format!(
        "{:?}",
        a.relocate(
            &r(0xc000, 0xcfff),
            &req(0x1000, 0x1000, AllocPolicy::FirstMatch)
        )
    ));
    a.check_invariants().unwrap();
    out.push(addr_view(&a));
    out
}

#[test]
fn address_every_failed_call_leaves_the_allocator_exactly_as_it_was() {
    // Space [0x1000, 0xffff]: allocations at 0x2000, 0x4000, 0x8000 (half a page), 0xc000;
    // two failed searches first, so that the room bounds hold what they learned.
    let mut a = AddressAllocator::<u32>::new(r(0x1000, 0xffff));
    a.reserve_with(r(0x2000, 0x2fff), 1).unwrap();
    a.reserve_with(r(0x4000, 0x4fff), 2).unwrap();
    a.reserve_with(r(0x8000, 0x87ff), 3).unwrap();
    a.reserve_with(r(0xc000, 0xcfff), 4).unwrap();
    let _ = a.allocate_with(&req(0x8000, 0x1000, AllocPolicy::FirstMatch), 0);
    let _ = a.allocate_with(&req(0x3000, 0x4000, AllocPolicy::LastMatch), 0);

    type Call = fn(&mut AddressAllocator<u32>) -> Error;
    let calls: [(&str, Call); 16] = [
        ("allocate window outside", |a| {
            let w = req(0x10, 1, AllocPolicy::FirstMatch).within(r(0, 0x1fff));
            a.allocate_with(&w, 0).unwrap_err()
        }),
        ("allocate exact overlap", |a| {
            let e = req(0x1000, 0x1000, AllocPolicy::ExactMatch(0x4000));
            a.allocate_with(&e, 0).unwrap_err()
        }),
        ("allocate exact outside space", |a| {
            let e = req(0x1000, 1, AllocPolicy::ExactMatch(0xf800));
            a.allocate_with(&e, 0).unwrap_err()
        }),
        ("allocate exact outside window", |a| {
            let e = req(0x1000, 1, AllocPolicy::ExactMatch(0x5000)).within(r(0x5000, 0x57ff));
            a.allocate_with(&e, 0).unwrap_err()
        }),
        ("allocate too big", |a| {
            a.allocate_with(&req(0x4000, 0x1000, AllocPolicy::FirstMatch), 0)
                .unwrap_err()
        }),
        ("allocate too big, window", |a| {
            let w = req(0x2000, 1, AllocPolicy::LastMatch).within(r(0x8000, 0x9fff));
            a.allocate_with(&w, 0).unwrap_err()
        }),
        ("reserve outside", |a| {
            a.reserve_with(r(0x800, 0x1800), 0).unwrap_err()
        }),
        ("reserve overlap", |a| {
            a.reserve_with(r(0x8700, 0x8900), 0).unwrap_err()
        }),
        ("free nothing", |a| a.free(&r(0x5000, 0x5fff)).unwrap_err()),
        ("free part", |a| a.free(&r(0x2000, 0x27ff)).unwrap_err()),
        ("free more", |a| a.free(&r(0x1800, 0x2fff)).unwrap_err()),
        ("release free address", |a| {
            a.release_containing(0x3000).unwrap_err()
        }),
        ("relocate not allocated", |a| {
            a.relocate(&r(0x5000, 0x5fff), &req(0x10, 1, AllocPolicy::FirstMatch))
                .unwrap_err()
        }),
        ("relocate without room", |a| {
            a.relocate(
                &r(0x8000, 0x87ff),
                &req(0x8000, 0x1000, AllocPolicy::LastMatch),
            )
            .unwrap_err()
        }),
        ("relocate onto another", |a| {
            a.relocate(
                &r(0x8000, 0x87ff),
                &req(0x1000, 1, AllocPolicy::ExactMatch(0xc800)),
            )
            .unwrap_err()
        }),
        ("resize dropping ranges", |a| {
            a.resize(r(0x3000, 0xffff)).unwrap_err()
        }),
    ];
    for (what, call) in calls {
        let mut b = a.clone();
        let err = call(&mut b);
        assert_eq!(b, a, "{what}: {err}");
        b.check_invariants().unwrap();
        // A clone holds no spare capacity: compare with one.
        assert_eq!(addr_view(&b), addr_view(&a.clone()), "{what}: {err}");
        assert_eq!(format!("{b:?}"), format!("{a:?}"), "{what}: {err}");
        assert_eq!(
            addr_follow_up(b),
            addr_follow_up(a.clone()),
            "{what}: {err}"
        );
    }
}

/// What a caller can see of an `AllocatorSet`.
fn set_view(s: &AllocatorSet<u32>, keys: &[u64]) -> String {
    format!(
        "{} {} {:?} {:?}",
        s.len(),
        s.used(),
        s.allocated().map(|x| (x.range, *x.tag)).collect::<Vec<_>>(),
        keys.iter().map(|&k| s.get(k)).collect::<Vec<_>>()
    )
}

#[test]
fn set_every_failed_call_leaves_the_set_exactly_as_it_was() {
    // Two spaces, not in address order; a keyed reservation spanning into a third.
    let mut s =
        AllocatorSet::<u32>::new(&[r(0x4000, 0x4fff), r(0x1000, 0x1fff), r(0x2000, 0x2fff)])
            .unwrap()
            .with_alignment(0x10, 0x100)
            .unwrap();
    s.reserve_keyed(1, r(0x1f00, 0x20ff), 1).unwrap();
    s.allocate_keyed(2, &req(0x100, 1, AllocPolicy::FirstMatch), 2)
        .unwrap();
    s.reserve_with(r(0x1000, 0x10ff), 3).unwrap();
    let keys = [1, 2, 3, 4];

    type Call = fn(&mut AllocatorSet<u32>) -> Error;
    let calls: [(&str, Call); 14] = [
        ("allocate exact unaligned", |s| {
            let e = req(0x10, 1, AllocPolicy::ExactMatch(0x1808));
            s.allocate_with(&e, 0).unwrap_err()
        }),
        ("allocate exact in no space", |s| {
            let e = req(0x100, 1, AllocPolicy::ExactMatch(0x3000));
            s.allocate_with(&e, 0).unwrap_err()
        }),
        ("allocate exact overlap", |s| {
            let e = req(0x100, 1, AllocPolicy::ExactMatch(0x1f80));
            s.allocate_with(&e, 0).unwrap_err()
        }),
        ("allocate window in no space", |s| {
            let w = req(0x10, 1, AllocPolicy::FirstMatch).within(r(0x3000, 0x3fff));
            s.allocate_with(&w, 0).unwrap_err()
        }),
        ("allocate too big", |s| {
            s.allocate_with(&req(0x1001, 1, AllocPolicy::FirstMatch), 0)
                .unwrap_err()
        }),
        ("reserve overlap", |s| {
            s.reserve_with(r(0x2080, 0x4080), 0).unwrap_err()
        }),
        ("reserve in no space", |s| {
            s.reserve_with(r(0x3000, 0x3fff), 0).unwrap_err()
        }),
        ("free part of a spanning reservation", |s| {
            s.free(&r(0x1f00, 0x1fff)).unwrap_err()
        }),
        ("free nothing", |s| s.free(&r(0x1800, 0x18ff)).unwrap_err()),
        ("free two allocations as one", |s| {
            s.free(&r(0x1000, 0x20ff)).unwrap_err()
        }),
        ("allocate_keyed key in use", |s| {
            s.allocate_keyed(1, &req(0x10, 1, AllocPolicy::FirstMatch), 0)
                .unwrap_err()
        }),
        ("allocate_keyed too big", |s| {
            s.allocate_keyed(4, &req(0x2000, 1, AllocPolicy::FirstMatch), 0)
                .unwrap_err()
        }),
        ("reserve_keyed overlap", |s| {
            s.reserve_keyed(4, r(0x1000, 0x1000), 0).unwrap_err()
        }),
        ("release unknown key", |s| s.release(4).unwrap_err()),
    ];
    for (what, call) in calls {
        let mut b = s.clone();
        let err = call(&mut b);
        assert_eq!(b, s, "{what}: {err}");
        b.check_invariants().unwrap();
        assert_eq!(set_view(&b, &keys), set_view(&s, &keys), "{what}: {err}");
        assert_eq!(format!("{b:?}"), format!("{s:?}"), "{what}: {err}");
        // The keys still free what they named, and the failed call left no key behind.
        assert_eq!(b.release(1), Ok((r(0x1f00, 0x20ff), 1)), "{what}");
        assert_eq!(b.release(4), Err(Error::UnknownKey(4)), "{what}");
        assert_eq!(b.release(2).map(|x| x.1), Ok(2), "{what}");
    }
}

/// `resize` is O(log n): one walk to the lowest allocation, whatever n.
#[test]
fn resize_work_is_logarithmic() {
    let n: u64 = if cfg!(miri) { 256 } else { 1 << 16 };
    let mut a = AddressAllocator::<()>::new(r(0x10_0000, 0x10_0000 + n * 0x2000 - 1));
    for i in 0..n {
        a.reserve(AddressRange::from_start_and_size(0x10_0000 + i * 0x2000, 0x1000).unwrap())
            .unwrap();
    }
    let top = a.space().end();
    for (lo, hi) in [
        (0, top + 0x1000),
        (0x10_0000, top),
        (0x8_0000, top + 0x10_0000),
    ] {
        let work = a.index_work();
        a.resize(r(lo, hi)).unwrap();
        // At most one root-to-node path (under 47 levels) per resize.
        assert!(a.index_work() - work <= 47, "{}", a.index_work() - work);
    }
    a.check_invariants().unwrap();
    assert_eq!(a.len(), usize::try_from(n).unwrap());
}

/// Memory of an address allocator that only grows: 28 bytes of index and the tag per live
/// range, plus room grown by an eighth, at least 16 ranges at a time.
#[test]
fn address_heap_stays_within_an_eighth_of_slack() {
    let n: u64 = if cfg!(miri) { 300 } else { 5_000 };
    let mut a = AddressAllocator::<u32>::new(r(0, u64::MAX));
    let per = 28 + size_of::<u32>();
    for i in 0..n {
        let tag = u32::try_from(i).unwrap();
        if i % 2 == 0 {
            a.reserve_with(
                AddressRange::from_start_and_size(i << 20, 0x1000).unwrap(),
                tag,
            )
            .unwrap();
        } else {
            a.allocate_with(&req(0x100, 0x100, AllocPolicy::LastMatch), tag)
                .unwrap();
        }
        let len = a.len();
        let bound = per * (len + (len / 8).max(16));
        assert!(
            a.heap_bytes() <= bound,
            "{} bytes for {len}",
            a.heap_bytes()
        );
    }
    a.shrink_to_fit();
    assert!(a.heap_bytes() <= per * a.len() * 9 / 8);
}

/// A reservation spanning k spaces of a set costs O(log n) in each of them, and the spaces it
/// does not touch cost nothing: index work grows with k, not with the number of spaces.
#[test]
fn set_spanning_reservation_work_is_per_space_touched() {
    let spaces: Vec<AddressRange> = (0..64u64)
        .map(|i| AddressRange::from_start_and_size(i << 16, 1 << 16).unwrap())
        .collect();
    let mut s = AllocatorSet::<u32>::new(&spaces).unwrap();
    // 256 ranges in every space (16 under Miri), so that each index has several levels.
    let step = if cfg!(miri) { 12 } else { 8 };
    for i in 0..64u64 << (16 - step) {
        s.reserve_with(
            AddressRange::from_start_and_size(i << step, 0x10).unwrap(),
            0,
        )
        .unwrap();
    }
    let work = |s: &AllocatorSet<u32>| -> Vec<u64> {
        s.pools().iter().map(AddressAllocator::index_work).collect()
    };
    let before = work(&s);
    // Spans spaces 10..=12: parts in three spaces, each a hole between two ranges.
    let span = r((10 << 16) + 0xff80, (12 << 16) + 0x20);
    assert_eq!(
        s.reserve_with(span, 1),
        Err(Error::Overlap {
            requested: span,
            existing: r(11 << 16, (11 << 16) + 0xf)
        })
    );
    assert_eq!(work(&s), before);
    let span = r((10 << 16) + 0xff80, (10 << 16) + 0x1_000f);
    let after = {
        // The part in space 11 overlaps its first range: free that one first.
        s.free(&r(11 << 16, (11 << 16) + 0xf)).unwrap();
        let w = work(&s);
        s.reserve_with(span, 1).unwrap();
        (w, work(&s))
    };
    for (i, (b, a)) in after.0.iter().zip(&after.1).enumerate() {
        if i == 10 || i == 11 {
            assert!(a - b <= 2 * 47, "space {i}: {}", a - b);
        } else {
            assert_eq!(a, b, "space {i}");
        }
    }
    assert_eq!(s.free(&span), Ok(1));
    s.check_invariants().unwrap();
}

/// Memory of an ID allocator: the bitmap up to the highest allocated ID (leaves grown by an
/// eighth, the two upper levels by doubling) plus 28 bytes per never-allocated run, with the
/// runs' index grown by an eighth, at least 16 runs at a time.
#[test]
fn id_heap_is_the_bitmap_plus_28_bytes_a_run() {
    let n: u32 = if cfg!(miri) { 200 } else { 20_000 };
    let mut a = IdAllocator::new(0, 4 * n).unwrap();
    for i in 0..n {
        // Every other ID: each allocation above the first cuts one more run.
        a.allocate_id_at(2 * i + 1).unwrap();
        // Runs `0`, then every even ID below `2 i + 1`, then the rest.
        let runs = i as usize + 2;
        if i % 1000 == 0 {
            assert_eq!(a.never_allocated_runs().count(), runs);
        }
        let leaves = (2 * i as usize + 1) / 64 + 1;
        let summary = leaves.div_ceil(64);
        let bitmap = 8 * (leaves + leaves / 8 + 1 + 2 * summary + 4 + 2 * summary.div_ceil(64) + 4);
        let bound = bitmap + 28 * (runs + (runs / 8).max(16));
        assert!(
            a.heap_bytes() <= bound,
            "{} bytes, {runs} runs",
            a.heap_bytes()
        );
    }
    assert_eq!(a.never_allocated_runs().count(), n as usize + 1);
    assert_eq!(a.used(), u64::from(n));
}

/// `Debug` prints what an allocator holds, not its index: equal allocators print the same,
/// however they were built.
#[test]
fn debug_prints_what_the_allocator_holds() {
    let mut ids = IdAllocator::new(5, 23).unwrap();
    ids.allocate_ids(3, 1).unwrap();
    ids.free_id(5).unwrap();
    ids.free_id(7).unwrap();
    ids.allocate_id_at(7).unwrap();
    assert_eq!(
        format!("{ids:?}"),
        "IdAllocator { first: 5, last: 23, used: 2, allocated: [6..=7], \
         never_allocated: [8..=23], .. }"
    );
    let loaded: IdAllocator = serde_json::from_str(&serde_json::to_string(&ids).unwrap()).unwrap();
    assert_eq!(format!("{loaded:?}"), format!("{ids:?}"));

    let mut a = AddressAllocator::<u8>::new(r(0, 0xff));
    a.reserve_with(r(0x40, 0x4f), 1).unwrap();
    a.allocate_with(&req(0x10, 0x10, AllocPolicy::FirstMatch), 2)
        .unwrap();
    a.free(&r(0x40, 0x4f)).unwrap();
    let mut b = AddressAllocator::<u8>::new(r(0, 0xff));
    b.reserve_with(r(0, 0xf), 2).unwrap();
    assert_eq!(
        format!("{a:?}"),
        "AddressAllocator { space: AddressRange { start: 0, end: 255 }, used: 16, allocations: \
         [Allocation { range: AddressRange { start: 0, end: 15 }, tag: 2 }], .. }"
    );
    assert_eq!(format!("{a:?}"), format!("{b:?}"));

    let mut s = AllocatorSet::<u8>::new(&[r(0x100, 0x1ff), r(0, 0xff)]).unwrap();
    s.reserve_keyed(9, r(0xf0, 0x10f), 1).unwrap();
    assert_eq!(
        format!("{s:?}"),
        "AllocatorSet { pools: [\
         AddressAllocator { space: AddressRange { start: 256, end: 511 }, used: 16, allocations: \
         [Allocation { range: AddressRange { start: 256, end: 271 }, tag: 1 }], .. }, \
         AddressAllocator { space: AddressRange { start: 0, end: 255 }, used: 16, allocations: \
         [Allocation { range: AddressRange { start: 240, end: 255 }, tag: 1 }], .. }], \
         min_align: 1, preferred_align: 1, \
         keys: [(9, AddressRange { start: 240, end: 271 })], \
         spans: [(AddressRange { start: 256, end: 271 }, AddressRange { start: 240, end: 271 }), \
         (AddressRange { start: 240, end: 255 }, AddressRange { start: 240, end: 271 })] }"
    );
}

/// Changing a populated set's alignments with a bad value is refused and keeps the set; a good
/// value applies to the placements that follow.
#[test]
fn set_alignment_refused_keeps_the_set() {
    let mut s = AllocatorSet::<u32>::new(&[r(0x1000, 0xffff)])
        .unwrap()
        .with_alignment(0x10, 0x10)
        .unwrap();
    let a = s
        .allocate_with(&req(0x8, 1, AllocPolicy::FirstMatch), 1)
        .unwrap();
    let before = s.clone();
    assert_eq!(s.set_alignment(3, 0x100), Err(Error::InvalidAlignment(3)));
    assert_eq!(s.set_alignment(0x100, 0), Err(Error::InvalidAlignment(0)));
    assert_eq!(s, before);
    assert_eq!(format!("{s:?}"), format!("{before:?}"));
    // Still aligned to 0x10, the minimum before the refused calls.
    assert_eq!(
        s.allocate_with(&req(0x8, 1, AllocPolicy::FirstMatch), 2),
        Ok(r(0x1010, 0x1017))
    );
    s.set_alignment(0x1000, 0x10).unwrap();
    assert_eq!(
        s.allocate_with(&req(0x8, 1, AllocPolicy::FirstMatch), 3),
        Ok(r(0x2000, 0x2007))
    );
    assert_eq!(s.free(&a), Ok(1));
}
