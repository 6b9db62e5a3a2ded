//! An ID allocator's memory follows the IDs it holds, not the highest one: an ID near the top
//! of a huge range costs a few dozen bytes, not a bitmap covering every ID below it. The
//! global allocator here counts every byte requested, per thread (tests run beside each
//! other).

use memvisor_resources::{Error, IdAllocator, IdLoadLimits, IdSnapshot, MAX_ID_RANGE};
use memvisor_testkit::counting_heap::{Counting, requested_by};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn allocate_id_at_near_the_top_of_u32_requests_a_few_bytes() {
    let mut a = IdAllocator::new(0, u32::MAX).unwrap();
    let (res, bytes) = requested_by(|| a.allocate_id_at(0xFFFF_0000));
    assert_eq!(res, Ok(0xFFFF_0000));
    assert!(bytes <= 1024, "{bytes} bytes requested");
    assert!(a.heap_bytes() <= 2048, "{} bytes held", a.heap_bytes());
    // Every answer is as before.
    assert!(a.is_allocated(0xFFFF_0000) && !a.is_allocated(0xFFFF_0001));
    assert_eq!(
        a.allocate_id_at(0xFFFF_0000),
        Err(Error::IdAlreadyAllocated(0xFFFF_0000))
    );
    assert_eq!(
        a.free_id(0xFFFF_0001),
        Err(Error::IdNeverAllocated(0xFFFF_0001))
    );
    assert_eq!(a.allocate_id(), Ok(0));
    assert_eq!(a.iter().collect::<Vec<_>>(), [0, 0xFFFF_0000]);
    assert_eq!(
        a.allocated_runs().collect::<Vec<_>>(),
        [0..=0, 0xFFFF_0000..=0xFFFF_0000]
    );
    assert_eq!(
        a.never_allocated_runs().collect::<Vec<_>>(),
        [1..=0xFFFE_FFFF, 0xFFFF_0001..=u32::MAX]
    );
    assert_eq!((a.used(), a.available()), (2, MAX_ID_RANGE - 2));
    // The snapshot is the same, and loads in as few bytes.
    let text = serde_json::to_string(&a).unwrap();
    let (loaded, bytes) = requested_by(|| serde_json::from_str::<IdAllocator>(&text));
    assert_eq!(loaded.unwrap(), a);
    assert!(bytes <= 4096, "{bytes} bytes requested");
    assert_eq!(a.free_id(0xFFFF_0000), Ok(()));
    assert_eq!(
        a.free_id(0xFFFF_0000),
        Err(Error::IdAlreadyFree(0xFFFF_0000))
    );
    assert_eq!(a.allocate_id_at(u32::MAX), Ok(u32::MAX));
    assert!(a.heap_bytes() <= 2048, "{} bytes held", a.heap_bytes());
}

#[test]
fn runs_near_the_top_request_bytes_in_proportion_to_the_runs() {
    let mut a = IdAllocator::new(0, u32::MAX).unwrap();
    let (res, bytes) = requested_by(|| {
        for k in 1..=1000u32 {
            a.allocate_ids_at(u32::MAX - k * 4096, 7)?;
            a.allocate_id_at(k << 22)?;
        }
        a.allocate_ids(16, 1 << 31)
    });
    assert_eq!(res, Ok(0..=15), "0 is aligned to everything");
    // Each step adds two runs held past the bitmap and splits the never-allocated run twice:
    // 28 bytes a run, held with an eighth of slack; growing by an eighth asks for about nine
    // times the final size in all.
    let held = 4 * 2001 * 28 * 9 / 8;
    assert!(a.heap_bytes() <= held, "{} bytes held", a.heap_bytes());
    assert!(bytes <= 10 * held, "{bytes} bytes requested");
    assert_eq!(a.used(), 1000 * 8 + 16);
    // Runs found among the held ones: the smallest fit, aligned, skipping them.
    assert_eq!(a.allocate_ids(8, 4096), Ok(4096..=4103));
    assert_eq!(a.free_ids(4096..=4103), Ok(()));
    // Every multiple of 2^22 up to 1000 * 2^22 is taken.
    assert_eq!(
        a.allocate_ids(3, 1 << 22),
        Ok(1001 << 22..=(1001 << 22) + 2)
    );
    // Freeing the middle of a held run splits it; its ends are still allocated.
    let at = u32::MAX - 4096;
    assert_eq!(a.free_ids(at + 2..=at + 4), Ok(()));
    assert_eq!(
        a.free_id(at + 3),
        Err(Error::IdAlreadyFree(u64::from(at) + 3))
    );
    assert_eq!(
        a.free_id(at + 7),
        Err(Error::IdNeverAllocated(u64::from(at) + 7))
    );
    assert_eq!(
        a.allocate_ids_at(at, 3),
        Err(Error::IdAlreadyAllocated(at.into()))
    );
    assert_eq!(a.allocate_ids_at(at + 2, 3), Ok(at + 2..=at + 4));
    assert_eq!(
        a.free_ids(at..=at + 7),
        Err(Error::IdNeverAllocated(u64::from(at) + 7))
    );
    assert_eq!(a.free_ids(at..=at + 6), Ok(()));
    assert_eq!(a.used(), 1000 * 8 + 16 + 3 - 7);
    assert!(a.heap_bytes() <= held, "{} bytes held", a.heap_bytes());
}

#[test]
fn u64_window_top_id_requests_a_few_bytes() {
    let first = u64::MAX - (MAX_ID_RANGE - 1);
    let mut a = IdAllocator::<u64>::with_range(first, u64::MAX).unwrap();
    let (res, bytes) = requested_by(|| a.allocate_id_at(u64::MAX));
    assert_eq!(res, Ok(u64::MAX));
    assert!(bytes <= 1024, "{bytes} bytes requested");
    assert_eq!(a.allocate_ids(2, 1), Ok(first..=first + 1));
    assert_eq!(a.iter().collect::<Vec<_>>(), [first, first + 1, u64::MAX]);
    assert_eq!(a.free_ids(u64::MAX..=u64::MAX), Ok(()));
    assert_eq!(a.free_id(u64::MAX), Err(Error::IdAlreadyFree(u64::MAX)));
}

#[test]
fn snapshot_of_a_few_high_ids_loads_without_a_limit_to_raise() {
    let text = r#"{"first":0,"last":4294967295,"used":3,"allocated":[[7,7],[4000000000,4000000001]],"never_allocated":[]}"#;
    let snapshot: IdSnapshot = serde_json::from_str(text).unwrap();
    // The smallest limit: no bitmap at all is needed for the IDs far up.
    let limits = IdLoadLimits {
        max_bitmap_bytes: 8 * 3,
    };
    let (res, bytes) = requested_by(|| IdAllocator::from_snapshot(&snapshot, &limits));
    let a = res.unwrap();
    assert!(bytes <= 1024, "{bytes} bytes requested");
    assert_eq!(
        a.iter().collect::<Vec<_>>(),
        [7, 4_000_000_000, 4_000_000_001]
    );
    assert_eq!(serde_json::to_string(&a).unwrap(), text);
}

#[test]
fn allocate_many_steps_over_held_runs_and_the_bitmap_takes_them() {
    let mut a = IdAllocator::new(0, u32::MAX).unwrap();
    // Few IDs allocated this high: held above the bitmap, which covers nothing yet.
    assert_eq!(a.allocate_ids_at(70_000, 3), Ok(70_000..=70_002));
    assert_eq!(a.allocate_ids_at(70_010, 2), Ok(70_010..=70_011));
    assert!(a.heap_bytes() <= 2048, "{} bytes held", a.heap_bytes());
    // The smallest free IDs: all below 70,000, then those between the held runs.
    let many = a.allocate_many(70_005).unwrap();
    assert_eq!(many.len(), 70_005);
    assert!(many[..70_000].iter().copied().eq(0..70_000));
    assert_eq!(many[70_000..], [70_003, 70_004, 70_005, 70_006, 70_007]);
    // The bitmap now covers the held runs: the next IDs step over them all the same.
    assert_eq!(a.allocate_id(), Ok(70_008));
    assert_eq!(a.allocate_id(), Ok(70_009));
    assert_eq!(a.allocate_id(), Ok(70_012));
    assert_eq!(a.free_id(70_011), Ok(()));
    assert_eq!(a.free_id(70_013), Err(Error::IdNeverAllocated(70_013)));
    assert_eq!(a.used(), 70_005 + 5 + 3 - 1);
    assert_eq!(
        a.allocated_runs().collect::<Vec<_>>(),
        [0..=70_010, 70_012..=70_012]
    );
}
