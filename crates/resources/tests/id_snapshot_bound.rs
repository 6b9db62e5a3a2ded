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
