//! A short ID snapshot cannot make the loader allocate much: the bitmap it needs is checked
//! against [`IdLoadLimits`] before anything is allocated. The global allocator here counts every
//! byte requested while a snapshot loads, per thread (tests run beside each other).

use memvisor_resources::{Error, IdAllocator, IdLoadLimits, IdSnapshot};
use memvisor_testkit::counting_heap::{Counting, requested_by};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Everything but the bitmap: the input's decoded lists and the map, for inputs this short.
const OVERHEAD: usize = 4096;

#[test]
fn id_snapshot_high_id_loads_in_a_few_bytes() {
    // One ID at the top of the whole `u32` range: the bitmap does not cover the IDs below it,
    // so loading costs the decoded lists and a node, not 512 MiB (nor an error).
    let text = r#"{"first":0,"last":4294967295,"used":1,"allocated":[[4294967295,4294967295]],"never_allocated":[[0,4294967294]]}"#;
    let (res, bytes) = requested_by(|| serde_json::from_str::<IdAllocator>(text));
    let mut a = res.unwrap();
    assert!(bytes <= OVERHEAD, "{bytes} bytes requested");
    assert!(a.heap_bytes() <= 1024, "{} bytes held", a.heap_bytes());
    assert_eq!(a.iter().collect::<Vec<_>>(), [u32::MAX]);
    assert_eq!(serde_json::to_string(&a).unwrap(), text);
    assert_eq!(
        a.free_id(u32::MAX - 1),
        Err(Error::IdNeverAllocated(u64::from(u32::MAX) - 1))
    );
    assert_eq!(a.allocate_id(), Ok(0));
    assert_eq!(a.free_id(u32::MAX), Ok(()));
    assert_eq!(
        a.free_id(u32::MAX),
        Err(Error::IdAlreadyFree(u32::MAX.into()))
    );
}

#[test]
fn id_snapshot_of_every_id_load_stays_within_limit() {
    // A few bytes naming every ID but 0: that many IDs allocated need the whole bitmap.
    let text = r#"{"first":0,"last":4294967295,"used":4294967295,"allocated":[[1,4294967295]],"never_allocated":[[0,0]]}"#;
    assert!(text.len() <= 120);
    let (res, bytes) = requested_by(|| serde_json::from_str::<IdAllocator>(text));
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains(
            "snapshot too large: loading it needs 545390592 bytes of bitmap, the limit is 1048576"
        ),
        "{err}"
    );
    assert!(bytes <= OVERHEAD, "{bytes} bytes requested");

    // With an explicit limit, loading allocates at most that limit plus the overhead.
    let snapshot: IdSnapshot = serde_json::from_str(text).unwrap();
    let limits = IdLoadLimits {
        max_bitmap_bytes: 64 << 10,
    };
    let (res, bytes) = requested_by(|| IdAllocator::from_snapshot(&snapshot, &limits));
    assert_eq!(
        res.map(|a| a.used()),
        Err(Error::SnapshotTooLarge {
            needed: 545_390_592,
            limit: 64 << 10
        })
    );
    assert!(bytes <= OVERHEAD, "{bytes} bytes requested");

    // A snapshot just under the limit loads, within the limit.
    let near = r#"{"first":0,"last":4294967295,"used":1,"allocated":[[500000,500000]],"never_allocated":[[0,499999],[500001,4294967295]]}"#;
    let (res, bytes) = requested_by(|| serde_json::from_str::<IdAllocator>(near));
    let a = res.unwrap();
    assert_eq!(a.iter().collect::<Vec<_>>(), [500_000]);
    assert!(bytes <= (1 << 20) + OVERHEAD, "{bytes} bytes requested");
}

/// The bitmap a snapshot loads into is exactly what the limit check counted: runs that grow
/// it one after the other do not over-reserve past the limit, and nothing is held beyond it.
#[test]
fn id_snapshot_load_holds_no_more_than_the_limit() {
    // Two runs close together, the second just under the default 1 MiB limit.
    let two = r#"{"first":0,"last":4294967295,"used":2,"allocated":[[7454545,7454545],[8200000,8200000]],"never_allocated":[]}"#;
    let (res, bytes) = requested_by(|| serde_json::from_str::<IdAllocator>(two));
    let a = res.unwrap();
    assert_eq!(a.iter().collect::<Vec<_>>(), [7_454_545, 8_200_000]);
    assert!(a.heap_bytes() <= 1 << 20, "{} bytes held", a.heap_bytes());
    assert!(bytes <= (1 << 20) + OVERHEAD, "{bytes} bytes requested");

    // One run whose bitmap is exactly the limit: 1,000 leaf words, 16 summary words, 1 top.
    let one: IdSnapshot = serde_json::from_str(
        r#"{"first":0,"last":4294967295,"used":1,"allocated":[[63999,63999]],"never_allocated":[]}"#,
    )
    .unwrap();
    let limits = IdLoadLimits {
        max_bitmap_bytes: 8 * (1_000 + 16 + 1),
    };
    let a = IdAllocator::from_snapshot(&one, &limits).unwrap();
    assert_eq!(a.heap_bytes(), 8 * (1_000 + 16 + 1));
    let tighter = IdLoadLimits {
        max_bitmap_bytes: limits.max_bitmap_bytes - 1,
    };
    assert!(matches!(
        IdAllocator::from_snapshot(&one, &tighter),
        Err(Error::SnapshotTooLarge { needed: 8136, .. })
    ));
}

/// The default limit, 1 MiB, holds a bitmap of exactly 129,024 leaf words (8,257,536 IDs), 2,016
/// summary words and 32 top words: a snapshot of IDs `0..=8_257_535` loads through
/// `Deserialize` into exactly 1 MiB of bitmap, and one more ID needs a 129,025th leaf word (and a
/// 2,017th summary word), 1,048,592 bytes, which is refused with both numbers.
#[test]
#[cfg_attr(miri, ignore)] // marks 129,024 words: seconds under Miri; the arithmetic is native's
fn id_snapshot_at_the_default_limit_loads_and_one_id_more_is_refused() {
    let ids_per_default_limit: u32 = 129_024 * 64;
    assert_eq!(ids_per_default_limit, 8_257_536);
    let dense = |last: u32| {
        format!(
            r#"{{"first":0,"last":4294967295,"used":{},"allocated":[[0,{last}]],"never_allocated":[]}}"#,
            u64::from(last) + 1
        )
    };

    let at = dense(ids_per_default_limit - 1);
    let (res, bytes) = requested_by(|| serde_json::from_str::<IdAllocator>(&at));
    let mut a = res.unwrap();
    assert_eq!(a.used(), u64::from(ids_per_default_limit));
    assert_eq!(a.heap_bytes(), 1 << 20);
    assert_eq!(IdLoadLimits::default().max_bitmap_bytes, 1 << 20);
    assert!(bytes <= (1 << 20) + OVERHEAD, "{bytes} bytes requested");
    assert_eq!(a.allocate_id(), Ok(ids_per_default_limit));

    let over = dense(ids_per_default_limit);
    let (res, bytes) = requested_by(|| serde_json::from_str::<IdAllocator>(&over));
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains(
            "snapshot too large: loading it needs 1048592 bytes of bitmap, the limit is 1048576"
        ),
        "{err}"
    );
    assert!(bytes <= OVERHEAD, "{bytes} bytes requested");
    // The typed error carries the same numbers, and a caller that raises the limit by those 16
    // bytes loads it.
    let snapshot: IdSnapshot = serde_json::from_str(&over).unwrap();
    assert_eq!(
        IdAllocator::from_snapshot(&snapshot, &IdLoadLimits::default()).map(|a| a.used()),
        Err(Error::SnapshotTooLarge {
            needed: 1_048_592,
            limit: 1 << 20
        })
    );
    let raised = IdLoadLimits {
        max_bitmap_bytes: 1_048_592,
    };
    let loaded = IdAllocator::from_snapshot(&snapshot, &raised).unwrap();
    assert_eq!(loaded.used(), u64::from(ids_per_default_limit) + 1);
    assert_eq!(loaded.heap_bytes(), 1_048_592);
}

/// What VMMs' ID allocators hold, every ID allocated, is far under the default limit: the
/// figures `IdLoadLimits::default`'s docs give.
#[test]
fn id_snapshot_of_vmm_sized_ranges_needs_bytes_not_the_limit() {
    for (first, last, bitmap) in [(5_u32, 4095, 528), (0, 32_763, 4_168), (0, 31, 24)] {
        let text = format!(
            r#"{{"first":{first},"last":{last},"used":{},"allocated":[[{first},{last}]],"never_allocated":[]}}"#,
            last - first + 1
        );
        let a = serde_json::from_str::<IdAllocator>(&text).unwrap();
        assert_eq!(a.heap_bytes(), bitmap, "{first}..={last}");
    }
}
