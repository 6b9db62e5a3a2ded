//! A copy of a dirty bitmap the heap refuses is a typed error, never an abort of the process.
//!
//! The global allocator here refuses one heap request on the calling thread: the first of a
//! given size aligned to 8 bytes or more, as a process near its memory limit would. Every other
//! request is granted, so the error itself can be made.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;

use memvisor_kvm::{DirtyBitmap, Error};
use vm_memory::GuestAddress;

struct RefusingOne;

thread_local! {
    /// The size of the one heap request to refuse; `None`: refuse none.
    static REFUSE_SIZE: Cell<Option<usize>> = const { Cell::new(None) };
}

fn refuse_now(layout: Layout) -> bool {
    layout.align() >= 8
        && REFUSE_SIZE
            .try_with(|s| {
                let hit = s.get() == Some(layout.size());
                if hit {
                    s.set(None);
                }
                hit
            })
            .unwrap_or(false)
}

// SAFETY: requests that are not refused go to `System` unchanged; a refused one gets null,
// which `GlobalAlloc` allows.
unsafe impl GlobalAlloc for RefusingOne {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refuse_now(layout) {
            return ptr::null_mut();
        }
        // SAFETY: the caller's contract for `alloc` is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if refuse_now(layout) {
            return ptr::null_mut();
        }
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = Layout::from_size_align(new_size, layout.align()).unwrap_or(layout);
        if refuse_now(new) {
            return ptr::null_mut();
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: RefusingOne = RefusingOne;

/// Runs `f` with the first request of exactly `size` bytes refused; whether it was made.
fn refusing_size<T>(size: usize, f: impl FnOnce() -> T) -> (T, bool) {
    REFUSE_SIZE.with(|s| s.set(Some(size)));
    let out = f();
    let refused = REFUSE_SIZE.with(|s| s.replace(None)).is_none();
    (out, refused)
}

/// A bitmap's copy takes one word per 64 pages of its region. The heap refusing them is
/// `Error::InvalidBitmap` for that bitmap from `try_clone`, and the bitmap is left as it was.
#[test]
fn bitmap_copy_refused_by_the_heap_is_an_error() {
    let page = memvisor_vmem::page_size() as u64;
    // 69 words: a size nothing else asks for while the bitmap is copied.
    let (base, size) = (GuestAddress(1 << 32), 69 * 64 * page);
    let mut bitmap = DirtyBitmap::new(base, size, page).unwrap();
    bitmap.mark(GuestAddress(base.0 + size - 1), 1);
    let before = bitmap.clone();

    let (out, refused) = refusing_size(69 * 8, || bitmap.try_clone());
    assert!(refused, "the copy asks for its words");
    let e = out.unwrap_err();
    assert!(
        matches!(e, Error::InvalidBitmap { base: b, size: s, page_size: p }
            if b == base.0 && s == size && p == page),
        "{e} ({e:?})"
    );
    assert_eq!(bitmap, before, "the bitmap is kept");

    let copy = bitmap.try_clone().unwrap();
    assert_eq!(copy, bitmap);
    assert_eq!(
        copy.dirty_pages().collect::<Vec<_>>(),
        [GuestAddress(base.0 + size - page)]
    );
}
