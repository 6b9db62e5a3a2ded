//! The two builds of mimalloc v2 in this binary, behind one trait: [`Plain`], the one
//! `libmimalloc-sys` builds (release, no checks of frees), and [`Secure`], the same source built
//! again by this crate's build script with `MI_SECURE=4`, its symbols prefixed with
//! `mimalloc_secure_` so that the two copies do not clash.
//!
//! What `MI_SECURE=4` adds to the plain build (mimalloc's `types.h` levels 1 to 4): guard pages
//! between a segment's metadata and its pages and at the segment's end, randomized allocation
//! order within a page, free lists encoded with per-page keys, a canary after each block checked
//! at free (a write past the requested size is reported), a cookie check that the pointer's
//! segment is mimalloc's, and double-free detection: a freed block whose first word decodes to a
//! pointer into its own page (or null) is looked for in the page's free lists and, if found,
//! reported (`EAGAIN`, "double free detected") and not freed again. Each report goes to the hook
//! set by [`Mimalloc::register_error`]; without one, `EFAULT` (corrupted metadata, an overflowed
//! block) aborts and the others are ignored. Either way the message is printed to standard error
//! when `MIMALLOC_SHOW_ERRORS=1`.
//!
//! What it does not check: an interior pointer is not recognized as such; the canary check then
//! finds none after the block it would start (the canary is keyed on the block's address) and
//! reports a buffer overflow (`EFAULT`), after which, given a hook that returns, the address is
//! pushed on the free list as a block (in a page holding blocks over-allocated for an alignment
//! above 16, it is rounded down to its block and freed with no report). A free of a block that has
//! since been allocated again (a stale pointer) frees the new owner's block. A pointer outside
//! mimalloc's memory is masked to a segment address (the byte before it, rounded down to 32 MiB)
//! that is read: a wrong cookie there is reported (`EINVAL`) and the free ignored, an unmapped one
//! faults; a pointer that masks to no segment (below 32 MiB, or with its top bit set) is ignored
//! with no report, by either build. memvisor's arena refuses
//! every one of these (foreign, interior, double, stale, outside the block) by name, with a
//! typed error that changes nothing.
//!
//! The secure build also gives up transparent huge pages: its segments are allocated with large
//! pages disallowed (`MI_SECURE == 0` is a condition of them in mimalloc's `segment.c`), so they
//! are never advised for them, and where THP is `madvise` its blocks lie in 4 KiB pages.
//!
//! Both builds keep their state per thread: a heap is used and destroyed on the thread that made
//! it.

use std::ffi::{c_int, c_void};

/// A mimalloc error hook: the error code (`EAGAIN` for a double free, `EFAULT` for corrupted
/// metadata or an overflowed block, `EINVAL` for an invalid pointer, `ENOMEM`, `EOVERFLOW`) and
/// the argument given to [`Mimalloc::register_error`].
pub type ErrorHook = Option<unsafe extern "C" fn(code: c_int, arg: *mut c_void)>;

/// One build of mimalloc v2: its first-class heap calls and its error hook.
///
/// The functions are mimalloc's own, with its contracts: a heap is used only on the thread that
/// made it, a pointer freed is one that heap returned and is live, a destroyed heap and its
/// blocks are not used again.
pub trait Mimalloc {
    /// The peer's name in the arena group.
    const NAME: &'static str;

    /// `mi_heap_new`: a new heap of this thread, or null.
    ///
    /// # Safety
    ///
    /// None beyond mimalloc's (see the trait).
    unsafe fn heap_new() -> *mut c_void;

    /// `mi_heap_malloc_aligned`: `size` bytes aligned to `align` from `heap`, or null.
    ///
    /// # Safety
    ///
    /// `heap` is a live heap of this build made on this thread.
    unsafe fn heap_malloc_aligned(heap: *mut c_void, size: usize, align: usize) -> *mut c_void;

    /// `mi_free`: frees a block of this build.
    ///
    /// # Safety
    ///
    /// `ptr` is a live block of this build allocated on this thread, or null.
    unsafe fn free(ptr: *mut c_void);

    /// `mi_heap_destroy`: frees `heap` with every block in it.
    ///
    /// # Safety
    ///
    /// `heap` is a live heap of this build made on this thread; neither it nor its blocks are
    /// used after.
    unsafe fn heap_destroy(heap: *mut c_void);

    /// `mi_register_error`: the hook this build calls on every error it detects (process-wide;
    /// `None` restores the default).
    ///
    /// # Safety
    ///
    /// `hook` is safe to call with `arg` from any thread until it is replaced.
    unsafe fn register_error(hook: ErrorHook, arg: *mut c_void);
}

/// mimalloc as `libmimalloc-sys` builds it (release, `MI_SECURE=0`): frees are not checked.
#[derive(Debug, Clone, Copy)]
pub struct Plain;

impl Mimalloc for Plain {
    const NAME: &'static str = "mimalloc-heap";

    #[inline]
    unsafe fn heap_new() -> *mut c_void {
        // SAFETY: no precondition.
        unsafe { libmimalloc_sys::mi_heap_new() }.cast()
    }

    #[inline]
    unsafe fn heap_malloc_aligned(heap: *mut c_void, size: usize, align: usize) -> *mut c_void {
        // SAFETY: the caller's promise.
        unsafe { libmimalloc_sys::mi_heap_malloc_aligned(heap.cast(), size, align) }
    }

    #[inline]
    unsafe fn free(ptr: *mut c_void) {
        // SAFETY: the caller's promise.
        unsafe { libmimalloc_sys::mi_free(ptr) }
    }

    #[inline]
    unsafe fn heap_destroy(heap: *mut c_void) {
        // SAFETY: the caller's promise.
        unsafe { libmimalloc_sys::mi_heap_destroy(heap.cast()) }
    }

    unsafe fn register_error(hook: ErrorHook, arg: *mut c_void) {
        // SAFETY: the caller's promise.
        unsafe { libmimalloc_sys::mi_register_error(hook, arg) }
    }
}

/// The same mimalloc v2 source built with `MI_SECURE=4` (see the module docs for what that
/// checks and what it does not).
#[derive(Debug, Clone, Copy)]
pub struct Secure;

// The secure copy's symbols, renamed by the build script (`mi_free` is `mimalloc_secure_mi_free`).
// Its heap type is opaque here: a `void*`.
unsafe extern "C" {
    fn mimalloc_secure_mi_heap_new() -> *mut c_void;
    fn mimalloc_secure_mi_heap_malloc_aligned(
        heap: *mut c_void,
        size: usize,
        align: usize,
    ) -> *mut c_void;
    fn mimalloc_secure_mi_free(ptr: *mut c_void);
    fn mimalloc_secure_mi_heap_destroy(heap: *mut c_void);
    fn mimalloc_secure_mi_register_error(hook: ErrorHook, arg: *mut c_void);
}

impl Mimalloc for Secure {
    const NAME: &'static str = "mimalloc-heap-secure";

    #[inline]
    unsafe fn heap_new() -> *mut c_void {
        // SAFETY: no precondition.
        unsafe { mimalloc_secure_mi_heap_new() }
    }

    #[inline]
    unsafe fn heap_malloc_aligned(heap: *mut c_void, size: usize, align: usize) -> *mut c_void {
        // SAFETY: the caller's promise.
        unsafe { mimalloc_secure_mi_heap_malloc_aligned(heap, size, align) }
    }

    #[inline]
    unsafe fn free(ptr: *mut c_void) {
        // SAFETY: the caller's promise.
        unsafe { mimalloc_secure_mi_free(ptr) }
    }

    #[inline]
    unsafe fn heap_destroy(heap: *mut c_void) {
        // SAFETY: the caller's promise.
        unsafe { mimalloc_secure_mi_heap_destroy(heap) }
    }

    unsafe fn register_error(hook: ErrorHook, arg: *mut c_void) {
        // SAFETY: the caller's promise.
        unsafe { mimalloc_secure_mi_register_error(hook, arg) }
    }
}
