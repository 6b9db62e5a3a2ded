//! Memory the heap refuses is an error, not an abort of the caller's process: the global
//! allocator here refuses any request over 64 MiB, as a process under a memory limit (or a
//! 32-bit one, for a request past `isize::MAX`) would, and on a thread whose `REFUSE_AFTER` is
//! set, every request after that many more.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;

use memvisor_resources::{Error, IdAllocator, IdLoadLimits, IdSnapshot};

struct Refusing;

const MAX_REQUEST: usize = 64 << 20;

thread_local! {
    /// Per thread, so that tests running beside each other are not refused.
    static REFUSE_AFTER: Cell<Option<usize>> = const { Cell::new(None) };
}

fn refused(size: usize) -> bool {
    size > MAX_REQUEST
        || REFUSE_AFTER
            .try_with(|left| match left.get() {
                Some(0) => true,
                Some(n) => {
                    left.set(Some(n - 1));
                    false
                }
                None => false,
            })
            .unwrap_or(false)
}

/// `f`'s result with every heap request after the first `granted` refused.
fn refusing_after<T>(granted: usize, f: impl FnOnce() -> T) -> T {
    REFUSE_AFTER.with(|left| left.set(Some(granted)));
    let out = f();
    REFUSE_AFTER.with(|left| left.set(None));
    out
}

// SAFETY: requests that are not refused are passed to `System` unchanged; refused ones get
// null, which `GlobalAlloc` allows.
unsafe impl GlobalAlloc for Refusing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refused(layout.size()) {
            return ptr::null_mut();
        }
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if refused(new_size) {
            return ptr::null_mut();
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Refusing = Refusing;

#[test]
fn allocate_many_result_the_heap_refuses_fails_and_changes_nothing() {
    // 2^32 IDs, so that any count is available; the bitmap grows only as IDs are handed out.
    let mut a = IdAllocator::<u64>::with_range(1 << 40, (1 << 40) + u64::from(u32::MAX)).unwrap();
    assert_eq!(
        a.allocate_many(3),
        Ok(vec![1 << 40, (1 << 40) + 1, (1 << 40) + 2])
    );
    a.free_id((1 << 40) + 1).unwrap();
    let before = a.clone();
    // 20 million IDs of 8 bytes: a result the heap refuses.
    assert_eq!(
        a.allocate_many(20_000_000),
        Err(Error::HeapRefused { bytes: 160_000_000 })
    );
    // Every free ID: 32 GiB of result, past what a 32-bit process can even ask for.
    assert_eq!(a.available(), u64::from(u32::MAX) - 1);
    assert_eq!(
        a.allocate_many(u32::MAX - 1),
        Err(Error::HeapRefused {
            bytes: 8 * u64::from(u32::MAX - 1)
        })
    );
    assert_eq!(a, before);
    assert_eq!(a.used(), 2);
    assert_eq!(a.allocate_id(), Ok((1 << 40) + 1));
    // A result the heap grants is still handed out whole.
    assert_eq!(a.allocate_many(1000).map(|ids| ids.len()), Ok(1000));
    assert_eq!(a.used(), 1003);
}

#[test]
fn allocate_many_bitmap_the_heap_refuses_fails_and_changes_nothing() {
    let mut a = IdAllocator::new(0, 1 << 20).unwrap();
    a.allocate_many(100).unwrap();
    a.free_id(7).unwrap();
    let before = a.clone();
    // The list is granted; the bitmap growing to cover ID 5099 is not. Nothing is taken, not
    // even the free IDs the bitmap already covers.
    // (The bitmap has 2 words; it needs 80.)
    assert_eq!(
        refusing_after(1, || a.allocate_many(5000)),
        Err(Error::HeapRefused { bytes: 78 * 8 })
    );
    assert_eq!(a, before);
    assert_eq!(
        a.allocate_many(5000).map(|ids| ids[..2].to_vec()),
        Ok(vec![7, 100])
    );
    assert_eq!(a.used(), 5099);
}

#[test]
fn bitmap_growth_the_heap_refuses_fails_and_changes_nothing() {
    // ID u32::MAX in the whole `u32` range needs a 512 MiB bitmap.
    let mut a = IdAllocator::new(0, u32::MAX).unwrap();
    a.allocate_id_at(3).unwrap();
    let before = a.clone();
    // The words past the one the bitmap has.
    let more = (1 << 29) - 8;
    assert_eq!(
        a.allocate_id_at(u32::MAX),
        Err(Error::HeapRefused { bytes: more })
    );
    assert_eq!(
        a.allocate_ids_at(u32::MAX - 9, 10),
        Err(Error::HeapRefused { bytes: more })
    );
    // The only run of 2^31 aligned to 2^31 past ID 3 starts at 2^31.
    assert!(matches!(
        a.allocate_ids(1 << 31, 1 << 31),
        Err(Error::HeapRefused { .. })
    ));
    assert_eq!(a, before);
    // The summary refused after the leaves were granted: nothing changes either.
    assert!(matches!(
        refusing_after(1, || a.allocate_id_at(1 << 20)),
        Err(Error::HeapRefused { .. })
    ));
    assert!(matches!(
        refusing_after(0, || a.allocate_ids(64, 1 << 20)),
        Err(Error::HeapRefused { .. })
    ));
    assert_eq!(a, before);
    assert!(!a.is_allocated(1 << 20));
    assert_eq!(a.allocate_id(), Ok(0));
    assert_eq!(a.allocate_id_at(1 << 20), Ok(1 << 20));
    assert_eq!(a.used(), 3);
    // Past what `allocate_id` can grow into at once: the smallest free ID is still handed out.
    let mut full = IdAllocator::new(0, 63).unwrap();
    full.allocate_ids(63, 1).unwrap();
    assert_eq!(refusing_after(0, || full.allocate_id()), Ok(63));
}

#[test]
fn snapshot_bitmap_the_heap_refuses_fails() {
    // Loading under a limit that allows 512 MiB: the heap refuses it, and the load says so.
    let text = r#"{"first":0,"last":4294967295,"used":1,"allocated":[[4294967295,4294967295]],
        "never_allocated":[[0,4294967294]]}"#;
    let snapshot: IdSnapshot = serde_json::from_str(text).unwrap();
    let roomy = IdLoadLimits {
        max_bitmap_bytes: 600 << 20,
    };
    assert_eq!(
        IdAllocator::from_snapshot(&snapshot, &roomy),
        Err(Error::HeapRefused { bytes: 1 << 29 })
    );
}
