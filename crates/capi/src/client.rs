//! The client functions: delete, allocate, free, ownership, block size, statistics.
//!
//! A client is used by one thread at a time: no two calls that take the same client handle may
//! run at the same time (the handle may move between threads with the caller's own
//! synchronisation). Different clients, of one context or not, may be used on different
//! threads at once. The library does not detect two threads using one client at once.

use std::alloc::Layout;
use std::ffi::c_void;
use std::ptr::NonNull;

use memvisor_arena::MAX_CHUNK_SIZE;

use crate::registry;
use crate::status::{Status, guard};
use crate::types::{Client, ClientStats, MEMVISOR_MIN_ALIGN, write_sized};

/// Deletes a client and frees every block it holds, whatever it leaked, in time proportional
/// to its chunks. Its blocks must not be used afterwards.
///
/// Errors: `INVALID_HANDLE` (null, deleted or forged handle); `INTERNAL` (an internal error
/// cut taking the client apart short: the client is gone all the same, its handle refused
/// afterwards, and its context poisoned).
///
/// A client of a poisoned context (whose calls answer `POISONED`) is deleted without being
/// taken apart, since that would walk the state the panic interrupted: its handle is refused
/// afterwards and it no longer keeps its context from being deleted, but the records it
/// keeps on the process's heap stay allocated for good, and its blocks and chunks are given
/// back only with the context's memory, when the context is deleted.
///
/// Thread safety: one thread at a time per client: no other call on the same client may run
/// during the delete, except another delete of it (one wins, the other gets
/// `INVALID_HANDLE`).
///
/// # Safety
/// No block of the client is used after the call, and no other call on this client (but
/// another delete) runs at the same time on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memvisor_client_delete(client: Client) -> Status {
    // SAFETY: the caller's promise: no other call on the client runs meanwhile; two deletes
    // race only on the generation's compare-exchange, which one wins. A stale handle is
    // refused by its generation.
    guard(|| unsafe { registry::delete_client(client.id) })
}

/// Allocates `size` bytes aligned to `align` (a power of two up to the context's largest
/// alignment). Sizes up to 2 KiB with alignment up to 64 are rounded up to a size class (with
/// alignment 32 or 64, to a class that is a multiple of it); larger sizes, and smaller ones
/// aligned above 64, to whole buddy pages (256 bytes for chunks up to 1 MiB, a 4096th of the
/// chunk above) and, over 16 pages, to a multiple of a sixteenth of the power of two of pages
/// at or above that (less than an eighth over the size rounded to a page); blocks larger than
/// a chunk to a run of whole chunks (up to the context's `max_block_size`); a zero size gets
/// the smallest block. `memvisor_size_of` gives the length a block got, the length the quota
/// and the statistics count. With `MEMVISOR_FLAG_ZERO` the block reads as zero.
///
/// A run of chunks is made of chunks no client holds. The empty chunk this client keeps for
/// reuse (its `pinned_chunks`) is given back to the context first when the run would then
/// take it.
///
/// Errors: `NULL_POINTER`, `INVALID_HANDLE`, `POISONED`, `UNSUPPORTED_ALIGNMENT`, `TOO_LARGE`,
/// `QUOTA_EXCEEDED`, `OUT_OF_MEMORY`, `OS` (committing a chunk failed). On error `*out` is
/// left alone, and nothing changes, with three exceptions: a call refused for lack of room
/// (`QUOTA_EXCEEDED`, `OUT_OF_MEMORY`, `OS`) may first have taken in the blocks freed with
/// `memvisor_free` and honoured a `memvisor_context_trim` (work every allocation that misses
/// the client's caches does), which the statistics show; a call refused because no chunk
/// (or run of chunks) is free (`OUT_OF_MEMORY`) asks every client of the context to trim, as
/// `memvisor_context_trim` does, so each gives back its cached blocks and empty chunk at its
/// next free or allocation that misses its caches; and a run refused after its client's
/// empty chunk was given back for it (another thread took the chunks meanwhile, or
/// committing failed) leaves that chunk given back. A run whose commit the system refuses
/// part-way (`OS`) decommits again the chunks it committed before the refusal (if the system
/// refuses that too, they stay committed, counted in the context's `cached_chunks`).
///
/// Thread safety: one thread at a time per client.
///
/// # Safety
/// `out` is null or writable. No other call on this client (`memvisor_client_delete`
/// included) runs at the same time on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memvisor_alloc_aligned(
    client: Client,
    size: usize,
    align: usize,
    out: *mut *mut c_void,
) -> Status {
    guard(|| {
        if out.is_null() {
            return Err(Status::NullPointer);
        }
        // No context aligns past its chunk size, and chunks are at most `MAX_CHUNK_SIZE`: an
        // alignment past that is refused as one before `Layout` (which has none past
        // `isize::MAX`) can call it a size error.
        if !align.is_power_of_two() || align > MAX_CHUNK_SIZE {
            return Err(Status::UnsupportedAlignment);
        }
        // No context has a block past `MAX_BLOCK_SIZE`: such a size is refused as one before
        // the handle is looked up, so a dead handle answers it as a live one does.
        if size > memvisor_arena::MAX_BLOCK_SIZE {
            return Err(Status::TooLarge);
        }
        let layout = Layout::from_size_align(size, align).map_err(|_| Status::TooLarge)?;
        // SAFETY: the per-client thread contract.
        let live = unsafe { registry::client(client.id) }?;
        let p = live.run(|c| c.alloc(layout))?;
        // SAFETY: checked not null; the caller's promise.
        unsafe { out.write_unaligned(p.as_ptr().cast()) };
        Ok(())
    })
}

/// Allocates `size` bytes aligned to 16 (`MEMVISOR_MIN_ALIGN`); as `memvisor_alloc_aligned`.
///
/// Errors: `NULL_POINTER`, `INVALID_HANDLE`, `POISONED`, `TOO_LARGE`, `QUOTA_EXCEEDED`,
/// `OUT_OF_MEMORY`, `OS`. On error `*out` is left alone; what else a refusal for lack of
/// room may do is as for `memvisor_alloc_aligned`.
///
/// Thread safety: one thread at a time per client.
///
/// # Safety
/// As `memvisor_alloc_aligned`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memvisor_alloc(
    client: Client,
    size: usize,
    out: *mut *mut c_void,
) -> Status {
    // SAFETY: the caller's promise, passed on.
    unsafe { memvisor_alloc_aligned(client, size, MEMVISOR_MIN_ALIGN, out) }
}

/// Frees the block at `ptr`, which this client allocated. If `size` is not null, the freed
/// block's size is written there, unless `size` overlaps the freed block (which is no longer
/// the caller's to read). A foreign, interior or already freed address is refused and nothing
/// changes.
///
/// Errors: `NULL_POINTER` (`ptr`), `INVALID_HANDLE`, `POISONED`, `FOREIGN_POINTER` (outside the
/// context), `NOT_OWNED` (in memory this client does not hold: another client's, or no
/// client's), `NOT_A_BLOCK` (not the start of a live block of this client).
///
/// Thread safety: one thread at a time per client.
///
/// # Safety
/// `size` is null or writable. If `ptr` is a live block of this client, nothing uses it after
/// the call, and no `memvisor_free` of it runs at the same time on another thread. Any other
/// `ptr` value is refused without being read. No other call on this client
/// (`memvisor_client_delete` included) runs at the same time on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memvisor_client_free(
    client: Client,
    ptr: *mut c_void,
    size: *mut usize,
) -> Status {
    guard(|| {
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(Status::NullPointer)?;
        // SAFETY: the per-client thread contract.
        let live = unsafe { registry::client(client.id) }?;
        let bytes = live.run(|c| {
            // SAFETY: the caller's promise: a freed block is not used again; other addresses
            // are only looked up in the side tables.
            unsafe { c.free(ptr) }
        })?;
        // SAFETY: the caller's promise.
        unsafe { write_freed_size(size, ptr, bytes) };
        Ok(())
    })
}

/// Writes `bytes`, the size of the block at `block` just freed, to `size` if it is not null
/// and does not overlap the block: the freed block may already hold the allocator's links,
/// be handed out again or be decommitted.
///
/// # Safety
/// `size` is null or writable.
pub(crate) unsafe fn write_freed_size(size: *mut usize, block: NonNull<u8>, bytes: usize) {
    let (at, start) = (size.addr(), block.as_ptr().addr());
    let overlaps =
        at < start.saturating_add(bytes) && start < at.saturating_add(size_of::<usize>());
    if !size.is_null() && !overlaps {
        // SAFETY: not null; the caller's promise.
        unsafe { size.write_unaligned(bytes) };
    }
}

/// Whether `ptr` is the start of a live block of this client: `*out` is 1 if so, else 0
/// (any address may be asked about; none is read).
///
/// Errors: `NULL_POINTER` (`ptr` or `out`), `INVALID_HANDLE`, `POISONED`.
///
/// Thread safety: one thread at a time per client.
///
/// # Safety
/// `out` is null or writable. No other call on this client (`memvisor_client_delete`
/// included) runs at the same time on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memvisor_client_owns(
    client: Client,
    ptr: *const c_void,
    out: *mut bool,
) -> Status {
    guard(|| {
        if out.is_null() || ptr.is_null() {
            return Err(Status::NullPointer);
        }
        // SAFETY: the per-client thread contract.
        let live = unsafe { registry::client(client.id) }?;
        let owns = live.run(|c| c.owns(ptr.cast()));
        // SAFETY: checked not null; the caller's promise.
        unsafe { out.write_unaligned(owns) };
        Ok(())
    })
}

/// The size of the live block of this client at `ptr` (its requested size rounded up).
///
/// Errors: `NULL_POINTER` (`ptr` or `out`), `INVALID_HANDLE`, `POISONED`, `FOREIGN_POINTER`,
/// `NOT_OWNED`, `NOT_A_BLOCK`.
///
/// Thread safety: one thread at a time per client.
///
/// # Safety
/// `out` is null or writable. No other call on this client (`memvisor_client_delete`
/// included) runs at the same time on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memvisor_size_of(
    client: Client,
    ptr: *const c_void,
    out: *mut usize,
) -> Status {
    guard(|| {
        if out.is_null() || ptr.is_null() {
            return Err(Status::NullPointer);
        }
        // SAFETY: the per-client thread contract.
        let live = unsafe { registry::client(client.id) }?;
        let size = live.run(|c| c.size_of(ptr.cast()))?;
        // SAFETY: checked not null; the caller's promise.
        unsafe { out.write_unaligned(size) };
        Ok(())
    })
}

/// Gives back everything the client keeps for reuse: takes in the blocks freed through
/// `memvisor_free` on other threads, returns cached blocks and empty slabs to its buddy
/// allocator and every chunk left without a live block to the context. Live blocks are not
/// touched.
///
/// Errors: `INVALID_HANDLE`, `POISONED`.
///
/// Thread safety: one thread at a time per client.
///
/// # Safety
/// No other call on this client (`memvisor_client_delete` included) runs at the same time on
/// another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memvisor_client_trim(client: Client) -> Status {
    guard(|| {
        // SAFETY: the per-client thread contract.
        let live = unsafe { registry::client(client.id) }?;
        live.run(memvisor_arena::Client::trim);
        Ok(())
    })
}

/// Statistics of the client, computed on demand (in time proportional to the chunks it
/// holds, its size classes and cache bins). Set `out->size` first: the structure is filled
/// up to it (an older header's) or up to this library's fields (a newer header's), and `size`
/// comes back as the bytes filled.
///
/// Errors: `NULL_POINTER`, `STRUCT_SIZE` (a size no version of the structure has; nothing is
/// written), `INVALID_HANDLE`, `POISONED`.
///
/// Thread safety: one thread at a time per client.
///
/// # Safety
/// `out` is null or a `memvisor_client_stats` (of this header or another) with its `size` set
/// and at least that many writable bytes. No other call on this client
/// (`memvisor_client_delete` included) runs at the same time on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memvisor_client_get_stats(
    client: Client,
    out: *mut ClientStats,
) -> Status {
    guard(|| {
        // SAFETY: the caller's promise.
        unsafe {
            write_sized(out, || {
                // SAFETY: the per-client thread contract.
                let live = registry::client(client.id)?;
                Ok(live.run(|c| ClientStats::from_client(&c.stats(), c.quota().limit())))
            })
        }
    })
}
