//! A client as the global allocator of a thread: while a thread has a client installed, every
//! global allocation of that thread is a block of the client, including the memory the client
//! asks of the global allocator for itself (its cache bins). A client must therefore not be in
//! the middle of a call when it asks: the nested call would work on state the outer one holds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr::{self, NonNull};

use memvisor_arena::{Arena, Backing, Client, Config, Quota};

/// Serves a thread's allocations from its installed client, others from `System`.
struct PerThread;

thread_local! {
    /// The client serving this thread's global allocations, if any (its lifetime erased).
    static CLIENT: Cell<*const Client<'static>> = const { Cell::new(ptr::null()) };
    /// The address range of that client's arena, kept while the arena lives: blocks freed
    /// there once the client is gone go back with the arena.
    static ARENA: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

fn installed() -> *const Client<'static> {
    CLIENT.try_with(Cell::get).unwrap_or(ptr::null())
}

fn in_arena(ptr: *mut u8) -> bool {
    let (start, len) = ARENA.try_with(Cell::get).unwrap_or((0, 0));
    ptr.addr().wrapping_sub(start) < len
}

// SAFETY: a block of the installed client is valid for its layout until freed; everything else
// goes to `System` unchanged. A block of the arena is freed by the client while it is
// installed, and otherwise left to the arena (its client is gone, and with it its chunks).
unsafe impl GlobalAlloc for PerThread {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: a client is installed only while it lives, by this thread (the test below).
        match unsafe { installed().as_ref() } {
            Some(client) => client
                .alloc(layout)
                .map_or(ptr::null_mut(), NonNull::as_ptr),
            // SAFETY: the caller's contract for `alloc` is passed on as is.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if in_arena(ptr) {
            // SAFETY: as in `alloc`.
            if let Some(client) = unsafe { installed().as_ref() } {
                // SAFETY: the block came from `alloc` above and the caller no longer uses it.
                let freed = unsafe { client.free(NonNull::new_unchecked(ptr)) };
                assert!(freed.is_ok(), "{freed:?}");
            }
            return;
        }
        // SAFETY: `ptr` was returned by `System` for this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: PerThread = PerThread;

#[test]
fn global_allocator_client_makes_its_bins_between_calls() {
    let arena = Arena::new(
        Backing::heap(1 << 20, 4096).unwrap(),
        Config::new().with_chunk_size(64 << 10),
    )
    .unwrap();
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    ARENA.set((arena.backing().as_ptr().addr(), arena.backing().len()));
    CLIENT.set(ptr::from_ref(&client).cast());
    // Boxes of the thread are the client's blocks now.
    let first = Box::new([7u8; 100]);
    let first_at = ptr::from_ref(&*first).cast::<u8>();
    assert!(client.owns(first_at));
    // The client's first free makes its cache bins, from the global allocator: the client.
    drop(first);
    let stats = client.stats();
    CLIENT.set(ptr::null());
    assert!(!client.owns(first_at));
    // The freed block is cached, and the bins are a live block of the client.
    assert_eq!(stats.cached_bytes, 112);
    assert_eq!(stats.live_blocks, 1);
    assert_eq!(stats.allocations, 2);
    assert_eq!(stats.frees, 1);
    let again = client.alloc(Layout::new::<[u8; 100]>()).unwrap();
    assert_eq!(
        again.as_ptr().cast_const(),
        first_at,
        "the cached block comes back"
    );
    drop(client);
    ARENA.set((0, 0));
}
