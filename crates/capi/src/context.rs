//! The context functions: create, delete, flags, statistics. Every one may be called from any
//! thread at the same time as any other, except that deleting a context must not race with
//! calls on it that the caller expects to succeed (they get `INVALID_HANDLE` or make the
//! delete return `CONTEXT_BUSY`; neither is undefined behaviour).

use std::ffi::c_void;
use std::ptr::NonNull;

use memvisor_arena::{Arena, Config as ArenaConfig, Quota};

use crate::client::write_freed_size;
use crate::registry::{self, Claim};
use crate::status::{Status, guard};
use crate::types::{
    Client, Config, Context, ContextStats, MEMVISOR_UNLIMITED, Plain, served_len, write_sized,
};

/// Reads the caller's configuration (null means the defaults). Fields past its `size` (a
/// structure from an older header) take their defaults; bytes past this library's structure
/// (a newer header's) are not read.
///
/// # Safety
/// `config` is null or points to a `memvisor_config` with at least `size` readable bytes.
unsafe fn read_config(config: *const Config) -> Result<ArenaConfig, Status> {
    if config.is_null() {
        return Ok(ArenaConfig::new());
    }
    // SAFETY: the caller's promise: its first field, `size`, is readable.
    let size = unsafe { config.cast::<usize>().read_unaligned() };
    let len = served_len::<Config>(size)?;
    let mut known = Config::default();
    // SAFETY: the caller's promise: `size >= len` readable bytes holding its fields.
    unsafe { known.read_fields(config.cast(), len) };
    known.to_arena()
}

/// Writes a handle to `out`, checked for null first.
fn check_out<T>(out: *mut T) -> Result<(), Status> {
    if out.is_null() {
        Err(Status::NullPointer)
    } else {
        Ok(())
    }
}

/// Makes a context over `len` bytes at `memory`, cut as `config` says (null: the defaults;
/// fields past `config->size`, in a structure of an older header, take their defaults).
/// Chunk 0 starts at `memory` rounded up to `config->alignment`; the tail that does not fill
/// a chunk is left alone. Flags the block cannot honour are dropped (see
/// `memvisor_context_accepted_flags`).
///
/// The whole block, from `memory` to `memory + len` (its head before chunk 0 and its tail
/// included), is the context's until it is deleted: a block sharing a byte with the memory of
/// a live context (another caller's block, a reservation of
/// `memvisor_context_create_reserved`, or a block allocated from either: contexts do not
/// nest) is refused with `BLOCK_IN_USE`, checked against every live context before the
/// block is used (a search of a balanced tree of them, O(log n) with n live contexts, under
/// a lock every create and delete takes).
///
/// Errors: `NULL_POINTER` (`memory` or `out`), `STRUCT_SIZE`, `UNKNOWN_FLAGS`,
/// `INVALID_CONFIG`, `TOO_LARGE` (`len` over `PTRDIFF_MAX`, or the block reaches the end of
/// the address space: `memory + len` over `UINTPTR_MAX`), `BLOCK_TOO_SMALL`, `OS` (the
/// memory for the context's side tables, about 2% of `len`, was refused, or room for the
/// block's entry among the live contexts'), `LIMIT_REACHED`, `BLOCK_IN_USE`. Nothing is made
/// or written on error. The block is checked against the live contexts (`BLOCK_IN_USE`, or
/// `OS` for its entry) before anything is laid out over it, so before `BLOCK_TOO_SMALL`: a
/// block too small for one chunk that shares a byte with a live context is `BLOCK_IN_USE`.
///
/// A block ending exactly at the end of the address space (`memory + len` equal to
/// `UINTPTR_MAX + 1`, its last byte at `UINTPTR_MAX`) is refused with `TOO_LARGE` too: the
/// address just past a block must be one, as in C (and Rust, whose allocations end at or
/// below `usize::MAX`), and no system this library runs on maps that last page (Linux keeps
/// the top of the address space for the kernel, a 32-bit process's included).
///
/// Thread safety: any thread, any time.
///
/// # Safety
/// `memory` is valid for reads and writes of `len` bytes and used by nothing else until the
/// context is deleted (the library refuses a block of another live context's, but cannot see
/// other uses); `config` is null or a `memvisor_config` (of this header or another)
/// with its `size` set and at least that many readable bytes; `out` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memvisor_context_create(
    memory: *mut c_void,
    len: usize,
    config: *const Config,
    out: *mut Context,
) -> Status {
    guard(|| {
        check_out(out)?;
        let memory = NonNull::new(memory.cast::<u8>()).ok_or(Status::NullPointer)?;
        // SAFETY: the caller's promise.
        let config = unsafe { read_config(config) }?;
        // No block is that long: refused before side tables are sized after it.
        if isize::try_from(len).is_err() || memory.addr().get().checked_add(len).is_none() {
            return Err(Status::TooLarge);
        }
        // Claimed before an arena is made over it: a live context's memory is never touched.
        let claim = Claim::new(memory.addr().get(), len)?;
        // SAFETY: the caller's promise on `memory`, which the context keeps until deleted.
        let arena = unsafe { Arena::from_raw(memory, len, config) }?;
        let id = registry::create_context(arena, claim)?;
        // SAFETY: checked not null; the caller's promise.
        unsafe { out.write_unaligned(Context { id }) };
        Ok(())
    })
}

/// Makes a context over a fresh reservation of `len` bytes of address space (`config` as for
/// `memvisor_context_create`): chunks are committed when a client first takes them, and with
/// `MEMVISOR_FLAG_DECOMMIT` decommitted when given back. Deleting the context releases the
/// reservation.
///
/// Errors: `NULL_POINTER` (`out`), `STRUCT_SIZE`, `UNKNOWN_FLAGS`, `INVALID_CONFIG`,
/// `TOO_LARGE` (`len` over `PTRDIFF_MAX`; nothing is reserved), `BLOCK_TOO_SMALL`, `OS` (the
/// reservation, or the memory for the context's side tables, about 2% of `len`, was
/// refused), `LIMIT_REACHED`, `BLOCK_IN_USE` (the system reserved addresses a live context
/// over a caller's block claims, which only a block that was not the caller's memory can
/// make happen; the reservation is released). Nothing is made or written on error.
///
/// Thread safety: any thread, any time.
///
/// # Safety
/// `config` is null or a `memvisor_config` (of this header or another) with its `size` set
/// and at least that many readable bytes; `out` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memvisor_context_create_reserved(
    len: usize,
    config: *const Config,
    out: *mut Context,
) -> Status {
    guard(|| {
        check_out(out)?;
        // SAFETY: the caller's promise.
        let config = unsafe { read_config(config) }?;
        // No block is that long: refused before anything is reserved (a 32-bit process may
        // get that much address space), so every target answers alike.
        if isize::try_from(len).is_err() {
            return Err(Status::TooLarge);
        }
        let arena = Arena::with_reservation(len, config)?;
        // The whole reservation (whole pages, maybe past `len`) is the context's.
        let backing = arena.backing();
        let reserved = backing.reservation().map_or(backing.len(), |r| r.len());
        let claim = Claim::new(backing.as_ptr().addr(), reserved)?;
        let id = registry::create_context(arena, claim)?;
        // SAFETY: checked not null; the caller's promise.
        unsafe { out.write_unaligned(Context { id }) };
        Ok(())
    })
}

/// Deletes a context. It must have no live client: delete them first (each delete frees all
/// the client holds). A caller's memory block is the caller's again afterwards; a reservation
/// is released.
///
/// Errors: `INVALID_HANDLE`, `CONTEXT_BUSY` (live clients, or a call on the context running
/// on another thread; nothing changes); `INTERNAL` (an internal error: found before the
/// context's memory is touched, it changes nothing; cutting the freeing of that memory short,
/// it leaves the context gone all the same and its handle refused afterwards).
///
/// A poisoned context (one whose calls answer `POISONED`) is deleted like any other once its
/// clients are deleted: a caller's block is the caller's again, a reservation is released
/// and the side tables are freed, none of it by reading the state the panic interrupted.
///
/// Thread safety: any thread; calls on the context racing with its deletion are refused with
/// `INVALID_HANDLE` or make the deletion fail with `CONTEXT_BUSY`.
#[unsafe(no_mangle)]
pub extern "C" fn memvisor_context_delete(context: Context) -> Status {
    guard(|| registry::delete_context(context.id))
}

/// The `MEMVISOR_FLAG_*` bits the context took on.
///
/// Errors: `NULL_POINTER`, `INVALID_HANDLE`, `POISONED`.
///
/// Thread safety: any thread, any time.
///
/// # Safety
/// `out` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memvisor_context_accepted_flags(
    context: Context,
    out: *mut u32,
) -> Status {
    guard(|| {
        check_out(out)?;
        let flags = registry::pin(context.id)?.run(|shared| shared.arena.accepted_flags());
        // SAFETY: checked not null; the caller's promise.
        unsafe { out.write_unaligned(flags.bits()) };
        Ok(())
    })
}

/// Statistics of the context. Totals are kept as blocks come and go (read in constant
/// time), except `largest_free_block`, found by a scan of the context's free-chunk bitmap
/// (a bit per chunk); `used_bytes`, `live_blocks`, `cached_bytes` and `pinned_chunks` need
/// `MEMVISOR_FLAG_STATISTICS`. Set `out->size` first: the structure is filled up to it (an
/// older header's) or up to this library's fields (a newer header's), and `size` comes back
/// as the bytes filled.
///
/// Errors: `NULL_POINTER`, `STRUCT_SIZE` (a size no version of the structure has; nothing is
/// written), `INVALID_HANDLE`, `POISONED`.
///
/// Thread safety: any thread, any time; with clients working on other threads the figures
/// are a moment's snapshot, not a consistent set.
///
/// # Safety
/// `out` is null or a `memvisor_context_stats` (of this header or another) with its `size`
/// set and at least that many writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memvisor_context_get_stats(
    context: Context,
    out: *mut ContextStats,
) -> Status {
    guard(|| {
        // SAFETY: the caller's promise.
        unsafe {
            write_sized(out, || {
                Ok(registry::pin(context.id)?.run(|shared| {
                    let arena = &shared.arena;
                    ContextStats::from_arena(&arena.stats(), arena)
                }))
            })
        }
    })
}

/// Frees the block at `ptr`, whichever client of the context allocated it, from any thread;
/// if `size` is not null, the block's size is written there, unless `size` overlaps the
/// freed block (which is no longer the caller's to read). The block stops being live at
/// once (ownership tests, sizes and a second free refuse it); its client takes the memory
/// back at its next free, trim or allocation that misses its caches, and until then the
/// statistics still count it as live (its client's and the context's `used_bytes` and
/// `live_blocks`; the client's `frees` counts it once it is taken in).
/// A foreign, interior or already freed address is refused and nothing changes.
///
/// Errors: `NULL_POINTER` (`ptr`), `INVALID_HANDLE`, `POISONED`, `FOREIGN_POINTER` (outside the
/// context), `NOT_OWNED` (in memory no client holds), `NOT_A_BLOCK` (not the start of a live
/// block: interior or already freed), `OS` (the chunk's remote-free bits,
/// made at the first such free in a chunk, could not be allocated).
///
/// Thread safety: any thread, any time, also while the block's client works on another
/// thread; a client being deleted waits for the frees already looking at its blocks, and a
/// free that comes after the delete is a free after it (see Safety).
///
/// # Safety
/// `size` is null or writable. If `ptr` is a live block, nothing uses it after the call, and
/// its allocation happened before this call (the pointer reached this thread without a data
/// race). No other free of the same block (`memvisor_client_free` or `memvisor_free`) may
/// run at the same time on another thread: once one wins, the client may hand the address out
/// again, and a late one would free the new block. The same holds for the delete of the
/// block's client, which frees it too: a free racing with that delete may run after it, and
/// then frees the block another client has at that address by then, if one does. A double
/// free ordered after the first is refused while the address has not been handed out again.
/// Any other `ptr` value (stale or made up) is refused without being read, as long as no
/// client of the context hands out a block at that address while the call runs: a block
/// handed out meanwhile looks like one handed over, so the call reads its page record
/// unordered with the client's write of it (a data race) and frees it under its client.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memvisor_free(
    context: Context,
    ptr: *mut c_void,
    size: *mut usize,
) -> Status {
    guard(|| {
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(Status::NullPointer)?;
        let bytes = registry::pin(context.id)?.run(|shared| {
            let _alive = shared
                .deleting
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // SAFETY: the caller's promise (the block is not used again, its allocation is
            // ordered before this call and no free of it by its client races with it); no
            // client is dropped while `_alive` is held, so the block's client outlives the call.
            unsafe { shared.arena.free(ptr) }
        })?;
        // SAFETY: the caller's promise.
        unsafe { write_freed_size(size, ptr, bytes) };
        Ok(())
    })
}

/// The client whose live block starts at `ptr`, written to `*out`. On another thread than
/// that client's, the answer is a snapshot the client may change at once, but never names a
/// client for a block it did not have: a block whose chunk passes to another client during the
/// call is `NOT_A_BLOCK`, and for a block of a client being deleted during the call the
/// answer is that client (whose handle is refused from then on) or `NOT_A_BLOCK`, never the
/// next client made, which may be given its place (the delete waits for the call).
///
/// Errors: `NULL_POINTER` (`ptr` or `out`), `INVALID_HANDLE`, `POISONED`, `FOREIGN_POINTER`
/// (outside the context), `NOT_A_BLOCK` (no client has a live block starting there).
///
/// Thread safety: any thread, any time.
///
/// # Safety
/// `out` is null or writable. `ptr` is never read.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memvisor_context_owner(
    context: Context,
    ptr: *const c_void,
    out: *mut Client,
) -> Status {
    guard(|| {
        check_out(out)?;
        if ptr.is_null() {
            return Err(Status::NullPointer);
        }
        let id = registry::pin(context.id)?.run(|shared| {
            if !shared.arena.contains(ptr.cast()) {
                return Err(Status::ForeignPointer);
            }
            // No client is dropped while this is held, so the arena identifier found stays
            // the same client's until its handle is looked up: a deleted client's identifier
            // goes to the next client made, which must not be named for the deleted one's
            // block.
            let _alive = shared
                .deleting
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            shared
                .arena
                .owner_of(ptr.cast())
                .and_then(|id| {
                    #[cfg(test)]
                    if let Some(pause) = OWNER_PAUSE.take() {
                        pause();
                    }
                    registry::handle_of(shared, id)
                })
                .ok_or(Status::NotABlock)
        })?;
        // SAFETY: checked not null; the caller's promise.
        unsafe { out.write_unaligned(Client { id }) };
        Ok(())
    })
}

/// Asks every client of the context to give back what it keeps for reuse (cached blocks,
/// empty slabs, its empty chunk) at its next free or allocation that misses its caches;
/// `memvisor_client_trim` does it at once for one client.
///
/// Errors: `INVALID_HANDLE`, `POISONED`.
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub extern "C" fn memvisor_context_trim(context: Context) -> Status {
    guard(|| {
        registry::pin(context.id)?.run(|shared| shared.arena.trim());
        Ok(())
    })
}

/// Makes a client of the context that may hold at most `quota` bytes of live blocks
/// (`MEMVISOR_UNLIMITED` for no limit but the context's size).
///
/// Errors: `NULL_POINTER`, `INVALID_HANDLE`, `POISONED`, `LIMIT_REACHED` (the context has 2^30 live
/// clients, however many threads make clients at once, until one is deleted; or the process
/// has 2^31 live clients, or no client handle is left; a refusal changes nothing), `OS` (the
/// process's allocator refused the client's records; nothing changes).
///
/// A context makes any number of clients over its life: a deleted client's place (its
/// identifier in the context's tables, and its handle's slot) goes to a later client, and
/// the deleted client's handle is never given out again (the slot's generation changes), so
/// it stays `INVALID_HANDLE`. Only a slot used about 2^31 times is retired, so handles run
/// out after about 2^62 clients made in the process.
///
/// Thread safety: any thread, any time. The new client may be used on any one thread at a
/// time.
///
/// # Safety
/// `out` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memvisor_client_create(
    context: Context,
    quota: usize,
    out: *mut Client,
) -> Status {
    guard(|| {
        check_out(out)?;
        let pinned = registry::pin(context.id)?;
        let quota = if quota == MEMVISOR_UNLIMITED {
            Quota::UNLIMITED
        } else {
            Quota::bytes(quota)
        };
        let id = pinned.run(|_| registry::create_client(&pinned, quota))?;
        // SAFETY: checked not null; the caller's promise.
        unsafe { out.write_unaligned(Client { id }) };
        Ok(())
    })
}

// A test's pause in `memvisor_context_owner` on its own thread, between the arena's answer and
// the look-up of its client's handle: runs once, then is gone.
#[cfg(test)]
thread_local! {
    static OWNER_PAUSE: std::cell::RefCell<Option<Box<dyn FnOnce()>>> =
        const { std::cell::RefCell::new(None) };
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::channel;
    use std::time::Duration;

    use super::*;
    use crate::client::{memvisor_alloc, memvisor_client_delete};

    /// `memvisor_free` of client `c1`'s block stops inside the arena's free, with the block
    /// claimed and `c1`'s mailbox about to take it, while another thread deletes `c1`. The
    /// delete must wait for the free (it drops `c1`, its mailbox with it): the free returns
    /// `OK` with the block's size and the delete finishes after it. Without the delete lock
    /// the free holds, the delete finished while the free was stopped, and the free went on
    /// into the mailbox of a dropped client.
    #[test]
    #[cfg_attr(miri, ignore = "waits 200 ms for a delete that must not finish")]
    fn free_racing_the_delete_of_its_client_holds_the_delete_off() {
        let mut ctx = Context::default();
        // SAFETY: `out` is writable; no config.
        let made = unsafe { memvisor_context_create_reserved(4 << 20, std::ptr::null(), &mut ctx) };
        assert_eq!(made, Status::Ok);
        let mut c1 = Client::default();
        // SAFETY: `out` is writable.
        let made = unsafe { memvisor_client_create(ctx, usize::MAX, &mut c1) };
        assert_eq!(made, Status::Ok);
        let mut block = std::ptr::null_mut();
        // SAFETY: `out` is writable.
        assert_eq!(unsafe { memvisor_alloc(c1, 64, &mut block) }, Status::Ok);
        let block = block as usize;
        let deleted = std::sync::Arc::new(AtomicBool::new(false));
        let (paused, delete_done) = (channel(), channel());
        let (status, size, deleted_meanwhile) = std::thread::scope(|scope| {
            let deleted_in_pause = std::sync::Arc::clone(&deleted);
            let freer = scope.spawn(move || {
                let (tell, wait) = (paused.0, delete_done.1);
                let seen = std::sync::Arc::new(AtomicBool::new(false));
                let seen_in_pause = std::sync::Arc::clone(&seen);
                memvisor_arena::Arena::pause_next_free_on_this_thread(Box::new(move || {
                    tell.send(()).unwrap();
                    // The delete cannot finish while the call holds the lock: go on then.
                    let _ = wait.recv_timeout(Duration::from_millis(200));
                    // A free going on into a deleted client's mailbox is a use after free:
                    // stop it here (the panic becomes `INTERNAL`).
                    let gone = deleted_in_pause.load(Ordering::SeqCst);
                    seen_in_pause.store(gone, Ordering::SeqCst);
                    assert!(!gone, "the client was deleted under a free of its block");
                }));
                let mut size = 0;
                // SAFETY: `size` is writable; the block is live, its allocation ordered before
                // (the thread was spawned after it) and not used after; no other free of it.
                let status = unsafe { memvisor_free(ctx, block as *mut c_void, &mut size) };
                (status, size, seen.load(Ordering::SeqCst))
            });
            paused.1.recv().unwrap();
            // SAFETY: no other call uses `c1`; its block is freed by the call above.
            assert_eq!(unsafe { memvisor_client_delete(c1) }, Status::Ok);
            deleted.store(true, Ordering::SeqCst);
            // The freer may have gone on already (it does when the delete waited for it).
            let _ = delete_done.0.send(());
            freer.join().unwrap()
        });
        assert!(
            !deleted_meanwhile,
            "the delete of {c1:?} finished while a free of its block was under way"
        );
        assert_eq!((status, size), (Status::Ok, 64));
        assert_eq!(memvisor_context_delete(ctx), Status::Ok);
    }

    /// `memvisor_context_owner` finds client `c1`'s identifier in the arena; before it looks
    /// up the handle, another thread deletes `c1` and makes `c2`, which gets `c1`'s identifier
    /// (deleted clients' identifiers are reused first). The answer must not name `c2` for
    /// `c1`'s block: the delete waits for the look-up, so the answer is `NOT_A_BLOCK` (the
    /// delete took `c1`'s handle out first) or `c1`. Without the lock the call holds across
    /// both look-ups, it named `c2`.
    #[test]
    #[cfg_attr(miri, ignore = "waits 200 ms for a delete that must not finish")]
    fn owner_racing_a_delete_never_names_the_next_client() {
        let mut ctx = Context::default();
        // SAFETY: `out` is writable; no config.
        let made = unsafe { memvisor_context_create_reserved(4 << 20, std::ptr::null(), &mut ctx) };
        assert_eq!(made, Status::Ok);
        let mut c1 = Client::default();
        // SAFETY: `out` is writable.
        let made = unsafe { memvisor_client_create(ctx, usize::MAX, &mut c1) };
        assert_eq!(made, Status::Ok);
        let mut block = std::ptr::null_mut();
        // SAFETY: `out` is writable.
        assert_eq!(unsafe { memvisor_alloc(c1, 64, &mut block) }, Status::Ok);
        let block = block as usize;
        let (paused, made_next) = (channel(), channel());
        let (status, named, c2) = std::thread::scope(|scope| {
            let asker = scope.spawn(move || {
                let (tell, wait) = (paused.0, made_next.1);
                OWNER_PAUSE.set(Some(Box::new(move || {
                    tell.send(()).unwrap();
                    // The delete cannot finish while the call holds the lock: go on then.
                    let _ = wait.recv_timeout(Duration::from_millis(200));
                })));
                let mut out = Client::default();
                // SAFETY: `out` is writable; `ptr` is never read.
                let status =
                    unsafe { memvisor_context_owner(ctx, block as *const c_void, &mut out) };
                (status, out)
            });
            paused.1.recv().unwrap();
            // SAFETY: no other call uses `c1`; its block is not used after.
            assert_eq!(unsafe { memvisor_client_delete(c1) }, Status::Ok);
            let mut c2 = Client::default();
            // SAFETY: `out` is writable.
            let made = unsafe { memvisor_client_create(ctx, usize::MAX, &mut c2) };
            assert_eq!(made, Status::Ok);
            // The asker may have gone on already (it does when the delete waited for it).
            let _ = made_next.0.send(());
            let (status, named) = asker.join().unwrap();
            (status, named, c2)
        });
        assert!(
            status == Status::NotABlock || (status == Status::Ok && named == c1),
            "owner answered {status:?} {named:?} for the block of deleted {c1:?} (next client {c2:?})"
        );
        // SAFETY: no other call uses `c2`.
        assert_eq!(unsafe { memvisor_client_delete(c2) }, Status::Ok);
        assert_eq!(memvisor_context_delete(ctx), Status::Ok);
    }
}
