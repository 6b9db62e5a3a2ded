//! The live contexts and clients behind the handles, and the rules that keep a context alive
//! while anything uses it.
//!
//! - A context is a heap allocation ([`Shared`]) whose address never changes; its slot in
//!   [`CONTEXTS`] holds the pointer and a count of *users*: live clients plus calls in flight.
//!   Deleting locks the count from 0 to [`LOCKED`] in one compare-exchange, so a context with a
//!   live client or a call in progress on another thread is never freed
//!   (`MEMVISOR_STATUS_CONTEXT_BUSY` instead).
//! - The count shares one atomic word with the generation of the context it counts for, and every
//!   change to it by a call names that generation: a call (or a delete) that found a slot for a
//!   handle just before the context was deleted and the slot given to a new context fails its
//!   compare-exchange instead of counting on (or locking) the new one.
//! - A client slot in [`CLIENTS`] holds the arena's `Client<'static>`. The `'static` is the
//!   invariant above: the client holds one user count of its context from creation until it is
//!   dropped, so the arena it borrows outlives it.
//! - Slots are never freed and handles carry a generation (see [`crate::table`]), so a stale or
//!   forged handle is refused without reading freed memory.
//! - The memory of every live context (a caller's block, or a reservation) is claimed in
//!   [`BLOCKS`], so that a block sharing a byte with it is refused (`MEMVISOR_STATUS_BLOCK_IN_USE`)
//!   before anything is made over it.

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

use memvisor_arena::{Arena, Client as ArenaClient};

use crate::ranges::Ranges;
use crate::status::Status;
use crate::table::{Kind, Slot, Table};

/// The users count's bit that says the context is being deleted (with no user counted
/// beside it) or is poisoned (with one more than its users counted beside it).
const LOCKED: u64 = 1 << 31;
/// The bits of a slot's state below [`LOCKED`]: the users count (plus one while the context
/// is poisoned).
const USERS: u64 = LOCKED - 1;
/// The most live clients a context may have. Its users count is those clients plus clients
/// being deleted and calls in flight (at most one of each per thread), so it stays far below
/// [`LOCKED`].
const MAX_CLIENTS: u64 = LOCKED / 2;
/// The bits of a slot's state that hold the users count and [`LOCKED`]; the generation of the
/// context they count for is above them.
const COUNT_BITS: u64 = (1 << 32) - 1;

/// A slot's state with no users and not locked, for the context whose handle is `handle`.
const fn unused(handle: u64) -> u64 {
    handle & !COUNT_BITS
}

/// A context's state, at a fixed heap address while it lives.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The arena.
    pub(crate) arena: Arena,
    /// The client handle of each live client, by the arena's client id.
    pub(crate) handles: Mutex<HashMap<u32, u64>>,
    /// Held for reading by frees through the context (which need the block's client alive
    /// until they return) and for writing while a client is dropped.
    pub(crate) deleting: RwLock<()>,
    /// The context's memory, claimed in [`BLOCKS`] until the context is deleted.
    pub(crate) claim: Claim,
}

/// The memory of the live contexts as `start..end` address ranges (never empty); no two
/// share a byte. Each create or delete of a context takes the lock once, for a search of a
/// balanced tree of them (O(log n) with n live contexts).
static BLOCKS: Mutex<Ranges> = Mutex::new(Ranges::new());

/// A context's memory claimed in [`BLOCKS`]: released when dropped. An empty block claims
/// nothing.
#[derive(Debug)]
pub(crate) struct Claim {
    /// The claimed range's start, `None` for an empty block.
    start: Option<usize>,
}

impl Claim {
    /// Claims the `len` bytes at `start` for a context.
    ///
    /// # Errors
    /// [`Status::BlockInUse`] if they share a byte with a live context's memory,
    /// [`Status::Os`] if the allocator refuses room for the entry, [`Status::TooLarge`] if
    /// they reach the end of the address space (which the callers refuse before this);
    /// nothing is claimed then.
    pub(crate) fn new(start: usize, len: usize) -> Result<Self, Status> {
        if len == 0 {
            return Ok(Self { start: None });
        }
        let end = start.checked_add(len).ok_or(Status::TooLarge)?;
        BLOCKS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .claim(start, end)?;
        Ok(Self { start: Some(start) })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let Some(start) = self.start else { return };
        BLOCKS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release(start);
    }
}

/// A context slot.
#[derive(Debug, Default)]
pub(crate) struct ContextSlot {
    /// The generation of the context it counts for (high 32 bits, as in the context's handle;
    /// a live context's is odd, and the slot of no live context holds an even one), and that
    /// context's live clients plus calls in flight, with [`LOCKED`] while it is being deleted
    /// (low 32 bits).
    state: AtomicU64,
    /// The context (null while the slot is free).
    shared: AtomicPtr<Shared>,
}

/// A live client.
#[derive(Debug)]
pub(crate) struct Live {
    /// The client. Dropped before its context's user count is released.
    pub(crate) client: ArenaClient<'static>,
    /// Its context's slot.
    pub(crate) home: &'static ContextSlot,
    /// Its context.
    pub(crate) shared: *const Shared,
}

impl Live {
    /// Runs `f` on the arena's client; if it unwinds, its context is poisoned first. Costs
    /// nothing unless it unwinds.
    #[inline(always)]
    pub(crate) fn run<R>(&self, f: impl FnOnce(&ArenaClient<'static>) -> R) -> R {
        // Holds the client only: its context is found from it on the unwind path alone.
        struct Armed<'a>(&'a Live);
        impl Drop for Armed<'_> {
            fn drop(&mut self) {
                // SAFETY: the client holds a user count of its context, so `shared` is alive.
                poison(self.0.home, unsafe { &*self.0.shared });
            }
        }
        let armed = Armed(self);
        let result = f(&self.client);
        std::mem::forget(armed);
        result
    }
}

/// A client slot.
#[derive(Debug, Default)]
pub(crate) struct ClientSlot {
    /// The client while the slot is live.
    live: UnsafeCell<Option<Live>>,
    /// Whether its context is poisoned (set by [`poison`], cleared when the slot is taken).
    poisoned: AtomicBool,
}

// SAFETY: a client slot's cell is written only by `take` (before the slot's generation is
// published with `Release`) and by `delete_client` (after `retire` won the generation
// compare-exchange), and read only by calls on the client's handle. The C contract lets one
// thread at a time call a client's functions (delete included), passing the handle between
// threads with the caller's own synchronisation, so no two threads touch one cell at once.
// `Client` is `Send`, so moving its use between threads is fine.
unsafe impl Sync for ClientSlot {}

/// Every context.
pub(crate) static CONTEXTS: Table<ContextSlot> = Table::new(Kind::Context);
/// Every client.
pub(crate) static CLIENTS: Table<ClientSlot> = Table::new(Kind::Client);

/// A context pinned for the length of a call: it cannot be deleted until this is dropped.
#[derive(Debug)]
pub(crate) struct Pinned {
    slot: &'static ContextSlot,
    shared: &'static Shared,
}

impl Pinned {
    /// The context.
    pub(crate) fn shared(&self) -> &'static Shared {
        self.shared
    }

    /// Runs `f` on the context; if it unwinds, the context is poisoned first, while still
    /// pinned (a call that unwinds may have left the arena half-changed: nothing reaches it
    /// again). The guard is forgotten when `f` returns, so this costs nothing unless it
    /// unwinds, and a call made while its thread already unwinds (from a Rust drop) poisons
    /// nothing unless it panics itself.
    #[inline(always)]
    pub(crate) fn run<R>(&self, f: impl FnOnce(&'static Shared) -> R) -> R {
        let armed = PoisonOnUnwind {
            slot: self.slot,
            shared: self.shared,
        };
        let result = f(self.shared);
        std::mem::forget(armed);
        result
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        self.slot.state.fetch_sub(1, Ordering::Release);
    }
}

/// Marks the context of `slot` poisoned, and every live client of it, so that no later call
/// reaches its arena: a call on it or on one of its clients panicked, maybe half-way
/// through a change of the arena's state.
///
/// The caller holds a user count of the context (a pin or a live client), so the slot counts
/// for it and is not locked for deleting: [`LOCKED`] set there means poisoned. Must not be
/// called with `shared.handles` held.
fn poison(slot: &ContextSlot, shared: &Shared) {
    let mut state = slot.state.load(Ordering::Relaxed);
    // The extra count keeps the users bits non-zero while poisoned, so that a poisoned
    // context is told from one being deleted (`LOCKED` with no user).
    while state & LOCKED == 0 {
        match slot.state.compare_exchange_weak(
            state,
            state + LOCKED + 1,
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => break,
            Err(now) => state = now,
        }
    }
    // Under the lock that `create_client_in` holds from its check of the state to publishing
    // its client: a client made before is marked here, one made after sees the state.
    let handles = shared
        .handles
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for &handle in handles.values() {
        // A client being deleted (retired, its entry not yet removed) is passed over.
        if let Some(client) = CLIENTS.get(handle) {
            // Releasing, so that a call refused for it sees what came before (see `client`).
            client.value().poisoned.store(true, Ordering::Release);
        }
    }
}

/// Whether the context of `slot`, of which the caller holds a user count, is poisoned.
fn poisoned(slot: &ContextSlot) -> bool {
    slot.state.load(Ordering::Acquire) & LOCKED != 0
}

/// Poisons a context when dropped: armed around arena calls, and forgotten when they return,
/// so that only an unwind drops it.
struct PoisonOnUnwind<'a> {
    slot: &'a ContextSlot,
    shared: &'a Shared,
}

impl Drop for PoisonOnUnwind<'_> {
    fn drop(&mut self) {
        poison(self.slot, self.shared);
    }
}

/// Pins the context of `handle`.
///
/// # Errors
/// [`Status::InvalidHandle`] if it is not live (or being deleted), [`Status::Poisoned`] if
/// it is poisoned.
pub(crate) fn pin(handle: u64) -> Result<Pinned, Status> {
    let slot = CONTEXTS.get(handle).ok_or(Status::InvalidHandle)?.value();
    pin_at(slot, handle)
}

/// Pins the context of `handle`, whose slot is `slot` (as a look-up found it, maybe just
/// before the context was deleted and the slot given to another).
///
/// # Errors
/// [`Status::InvalidHandle`] if the slot's context is not the handle's (or is being deleted),
/// [`Status::Poisoned`] if it is poisoned.
fn pin_at(slot: &'static ContextSlot, handle: u64) -> Result<Pinned, Status> {
    let mut state = slot.state.load(Ordering::Relaxed);
    loop {
        // Only the handle's own context is counted: once it is deleted, locked for deleting
        // or poisoned, the count is left alone (the slot may already count for another
        // context). The poison is read from the word the pin reads anyway.
        if unused(state) != unused(handle) || state & LOCKED != 0 {
            return Err(refusal(state, handle));
        }
        match slot.state.compare_exchange_weak(
            state,
            state + 1,
            Ordering::Acquire,
            Ordering::Relaxed,
        ) {
            Ok(_) => break,
            Err(now) => state = now,
        }
    }
    let shared = slot.shared.load(Ordering::Acquire);
    // SAFETY: the count was raised for the handle's generation while not locked, so the
    // context is live and is not freed until the count drops back to zero; `shared` was stored
    // before the state that names its generation (`Release`, read above with `Acquire`).
    let shared: &'static Shared = unsafe { &*shared };
    Ok(Pinned { slot, shared })
}

/// Why a slot in state `state` is refused to a call with `handle`.
///
/// The state was read `Relaxed`; the fence makes a refusal see what came before the write
/// it read (the poison's, the delete's lock, the unlock of a deleted slot or a new
/// context's state, all releasing): a call refused after a panicking call or a delete has
/// begun sees what their thread did before them, as a call that starts after them should.
/// Off the fast path, so the pin pays nothing for it.
#[cold]
fn refusal(state: u64, handle: u64) -> Status {
    std::sync::atomic::fence(Ordering::Acquire);
    if unused(state) == unused(handle) && state & LOCKED != 0 && state & USERS != 0 {
        Status::Poisoned
    } else {
        Status::InvalidHandle
    }
}

/// `value` on the heap, as a raw pointer (freed with `Box::from_raw`), or `value` back if the
/// allocator refuses it (for the caller to dispose of in its own order).
fn boxed<T>(value: T) -> Result<*mut T, T> {
    let layout = std::alloc::Layout::new::<T>();
    assert_ne!(layout.size(), 0, "only records with fields are boxed");
    // SAFETY: the layout is not zero-sized (checked above).
    let p = unsafe { std::alloc::alloc(layout) }.cast::<T>();
    if p.is_null() {
        return Err(value);
    }
    // SAFETY: `p` was just allocated with `T`'s layout, so it is valid for a write of one, and
    // `Box::from_raw` frees it with that layout through the same allocator.
    unsafe { p.write(value) };
    Ok(p)
}

/// Makes a context over `arena`; returns its handle.
///
/// # Errors
/// [`Status::LimitReached`] if no handle is left, [`Status::Os`] if the allocator refuses
/// the context's record or a handle table.
pub(crate) fn create_context(arena: Arena, claim: Claim) -> Result<u64, Status> {
    // A record refused is freed as a deleted context's is: dropped as it stands, its
    // reservation would be released while still claimed.
    let shared = boxed(Shared {
        arena,
        handles: Mutex::new(HashMap::new()),
        deleting: RwLock::new(()),
        claim,
    })
    .map_err(|shared| {
        free_shared(shared);
        Status::Os
    })?;
    let result = CONTEXTS.take(
        Status::LimitReached,
        Status::Os,
        |slot: &'static Slot<ContextSlot>, handle| {
            slot.value().shared.store(shared, Ordering::Release);
            slot.value().state.store(unused(handle), Ordering::Release);
            Ok(())
        },
    );
    if result.is_err() {
        // SAFETY: made above and never published.
        free_shared(*unsafe { Box::from_raw(shared) });
    }
    result
}

/// Frees a context's state. A caller's block stays claimed until the arena over it is gone;
/// a reservation is unclaimed first, so that the address space it gives back, which the
/// system may hand to another reservation at once, is never found claimed.
fn free_shared(shared: Shared) {
    let Shared { arena, claim, .. } = shared;
    if arena.backing().is_reserved() {
        drop(claim);
        drop(arena);
    } else {
        drop(arena);
        drop(claim);
    }
}

/// Deletes the context of `handle` if nothing uses it. A poisoned context is freed all the
/// same: dropping an `Arena` runs none of its logic (it frees its tables and releases its
/// reservation), so nothing reads the state a panic interrupted.
///
/// # Errors
/// [`Status::InvalidHandle`] if it is not live, [`Status::ContextBusy`] if it has live clients
/// or calls in flight.
pub(crate) fn delete_context(handle: u64) -> Result<(), Status> {
    delete_context_with(handle, free_shared)
}

/// [`delete_context`], with `free` freeing the context's state.
fn delete_context_with(handle: u64, free: impl FnOnce(Shared)) -> Result<(), Status> {
    let slot = CONTEXTS.get(handle).ok_or(Status::InvalidHandle)?.value();
    let before = lock_for_delete(slot, handle)?;
    // Only the delete that locked the handle's generation retires it.
    if CONTEXTS.retire(handle).is_none() {
        // Unlocked as it was found (a poisoned context stays poisoned).
        slot.state.store(before, Ordering::Release);
        return Err(Status::Internal);
    }
    let shared = slot.shared.swap(std::ptr::null_mut(), Ordering::AcqRel);
    // The slot is given back once the state is freed, also on an unwind: the state is gone
    // then too (its record was freed when it was moved out, and an unwind drops what `free`
    // had not dropped yet), so nothing refers to it.
    let _release = ReleaseContextSlot { slot, handle };
    // SAFETY: made by `create_context` with `Box::into_raw`; the count was 0 (no client, no
    // call in flight) when locked, and the lock keeps new pins out, so nothing refers to it any
    // more.
    free(*unsafe { Box::from_raw(shared) });
    Ok(())
}

/// A deleted context's slot, its state freed: unlocked to the even generation no handle
/// names, and put back on the free list, when dropped.
struct ReleaseContextSlot {
    slot: &'static ContextSlot,
    handle: u64,
}

impl Drop for ReleaseContextSlot {
    fn drop(&mut self) {
        self.slot
            .state
            .store(unused(self.handle) + (1 << 32), Ordering::Release);
        CONTEXTS.recycle(self.handle);
    }
}

/// Locks `slot`, as a look-up found it for `handle` (maybe just before the context was
/// deleted and the slot given to another), for deleting the handle's context.
///
/// A poisoned context is locked from its poisoned state with no user (the extra count
/// alone) to the same locked state, with no user, as any other. Returns the state it was
/// locked from.
///
/// # Errors
/// [`Status::ContextBusy`] if that context has users, [`Status::InvalidHandle`] if the slot
/// counts for another context (or this one is being deleted).
fn lock_for_delete(slot: &ContextSlot, handle: u64) -> Result<u64, Status> {
    let idle = unused(handle);
    let mut expected = idle;
    loop {
        // Releasing, so that a call refused for the lock sees what came before the delete
        // (see `refusal`).
        match slot.state.compare_exchange(
            expected,
            idle | LOCKED,
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            Ok(before) => return Ok(before),
            Err(now) if unused(now) != idle => return Err(Status::InvalidHandle),
            Err(now) if now & LOCKED == 0 => return Err(Status::ContextBusy),
            // Being deleted by another call.
            Err(now) if now & USERS == 0 => return Err(Status::InvalidHandle),
            // Poisoned, with no user but the extra count: tried again from there (users
            // only leave a poisoned context).
            Err(now) if now & USERS == 1 => expected = now,
            Err(_) => return Err(Status::ContextBusy),
        }
    }
}

/// Makes a client of the pinned context; returns its handle.
///
/// # Errors
/// The arena's error, or [`Status::LimitReached`] if no handle is left or the context has
/// [`MAX_CLIENTS`] live clients.
pub(crate) fn create_client(pinned: &Pinned, quota: memvisor_arena::Quota) -> Result<u64, Status> {
    create_client_in(&CLIENTS, pinned, quota, MAX_CLIENTS)
}

/// [`create_client`] with the client's slot taken from `clients`, and at most `max_clients`
/// live clients in the context.
fn create_client_in(
    clients: &Table<ClientSlot>,
    pinned: &Pinned,
    quota: memvisor_arena::Quota,
    max_clients: u64,
) -> Result<u64, Status> {
    let shared = pinned.shared();
    // The lock is held until the client's entry is published. Its entries are the context's
    // live clients, so counting them and adding one under it is one step: no number of
    // threads making clients at once passes the limit, and calls in flight do not count.
    let mut handles = shared
        .handles
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if u64::try_from(handles.len()).map_or(true, |live| live >= max_clients) {
        return Err(Status::LimitReached);
    }
    // A context poisoned since it was pinned makes no client; one poisoned from here on
    // waits for the lock, and marks this client with the others.
    if poisoned(pinned.slot) {
        return Err(Status::Poisoned);
    }
    // Room for the client's entry first, so that publishing it cannot fail; the lock keeps
    // any other client of the context from taking that room.
    handles.try_reserve(1).map_err(|_| Status::Os)?;
    // The client is made last, once its slot is had: a client made and then dropped because
    // no slot could be had would have spent an identifier of the arena.
    let mut id = 0;
    let handle = clients.take(Status::LimitReached, Status::Os, |slot, _| {
        #[cfg(test)]
        if let Some(error) = hooks::ARENA_REFUSES_CLIENT.take() {
            return Err(error.into());
        }
        #[cfg(test)]
        assert!(
            !hooks::ARENA_PANICS.take(),
            "broken invariant in making the arena's client"
        );
        let client = shared.arena.create_client(quota)?;
        id = client.id();
        // The client's own user count, taken before it is published.
        pinned.slot.state.fetch_add(1, Ordering::Relaxed);
        // The slot's mark from a client of a poisoned context before it.
        slot.value().poisoned.store(false, Ordering::Relaxed);
        // SAFETY: the slot is not live (its generation is even), so no call reads its cell, and
        // the table's lock keeps other takers out.
        unsafe {
            *slot.value().live.get() = Some(Live {
                client,
                home: pinned.slot,
                shared,
            });
        }
        Ok(())
    })?;
    #[cfg(test)]
    if let Some(hook) = hooks::BEFORE_INSERT.take() {
        hook();
    }
    handles.insert(id, handle);
    Ok(handle)
}

/// Points where a test steps into [`create_client_in`] on its own thread.
#[cfg(test)]
mod hooks {
    use std::cell::{Cell, RefCell};

    thread_local! {
        /// The arena's answer to the next client made on this thread, in place of asking it.
        pub(super) static ARENA_REFUSES_CLIENT: Cell<Option<memvisor_arena::Error>> =
            const { Cell::new(None) };
        /// Whether the next client made on this thread panics where the arena makes it, as
        /// a broken invariant of the arena would.
        pub(super) static ARENA_PANICS: Cell<bool> = const { Cell::new(false) };
        /// Runs once, on this thread, after a client's slot is taken and before its entry
        /// goes into the room reserved for it in the context's `handles`.
        pub(super) static BEFORE_INSERT: RefCell<Option<Box<dyn FnOnce()>>> =
            const { RefCell::new(None) };
    }
}

/// The handle of the client whose arena id is `id`, if it is live.
pub(crate) fn handle_of(shared: &Shared, id: u32) -> Option<u64> {
    shared
        .handles
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&id)
        .copied()
}

/// The live client of `handle`.
///
/// # Errors
/// [`Status::InvalidHandle`] if it is not live, [`Status::Poisoned`] if its context is
/// poisoned.
///
/// # Safety
/// No other thread may use the same client (delete it, or call any client function on it)
/// until the returned reference is gone.
#[inline]
pub(crate) unsafe fn client<'a>(handle: u64) -> Result<&'a Live, Status> {
    let slot = CLIENTS.get(handle).ok_or(Status::InvalidHandle)?;
    // The one load the poison costs a client's call, of the slot the look-up reads.
    if slot.value().poisoned.load(Ordering::Relaxed) {
        // A refused call sees what came before the mark, as for a context (`refusal`).
        std::sync::atomic::fence(Ordering::Acquire);
        return Err(Status::Poisoned);
    }
    // SAFETY: live slot; the caller's promise keeps writers away while the reference lives.
    unsafe { &*slot.value().live.get() }
        .as_ref()
        .ok_or(Status::InvalidHandle)
}

/// Deletes the client of `handle`, freeing all it holds.
///
/// # Errors
/// [`Status::InvalidHandle`] if it is not live.
///
/// # Safety
/// No other thread may use the same client during the call, except to delete it too: two
/// deletes race only on the generation's compare-exchange, and the loser touches nothing.
pub(crate) unsafe fn delete_client(handle: u64) -> Result<(), Status> {
    // SAFETY: the caller's promise.
    unsafe { delete_client_with(handle, drop) }
}

/// [`delete_client`], with `drop_client` dropping the arena's client.
///
/// However the drop ends, a panic included (which only a broken invariant of the arena can
/// cause), the client is gone once it returns or unwinds: its user count of the context and
/// its slot are given back then too, so a context is never left `CONTEXT_BUSY` by a client
/// that no longer exists. A drop that panics poisons the context (it may have left the
/// arena half-changed). The client of a poisoned context is forgotten, not dropped: its
/// drop would walk the arena's state a panic interrupted; its records stay allocated.
///
/// # Safety
/// As [`delete_client`].
unsafe fn delete_client_with(
    handle: u64,
    drop_client: impl FnOnce(ArenaClient<'static>),
) -> Result<(), Status> {
    let slot = CLIENTS.retire(handle).ok_or(Status::InvalidHandle)?;
    // The slot goes back to the free list last, also on an unwind: its cell is empty by then.
    let _recycle = Recycle(handle);
    // SAFETY: `retire` won the generation, so new calls refuse the handle, and the caller's
    // promise keeps calls already holding it away.
    let live = unsafe { (*slot.value().live.get()).take() }.ok_or(Status::Internal)?;
    // SAFETY: the client holds a user count of its context, so `shared` is alive.
    let shared = unsafe { &*live.shared };
    shared
        .handles
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&live.client.id());
    // The client's user count, given back once the client is dropped (after `guard`, which is
    // declared after it); also on an unwind, since the client is gone then too.
    let _count = UserCount(live.home);
    if poisoned(live.home) {
        std::mem::forget(live.client);
        return Ok(());
    }
    // Poisons the context if the drop unwinds, before the count is given back (and after
    // `guard`, so that `handles` can be locked).
    let armed = PoisonOnUnwind {
        slot: live.home,
        shared,
    };
    // Frees through the context that may have found one of its blocks finish first.
    let guard = shared
        .deleting
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    drop_client(live.client);
    drop(guard);
    std::mem::forget(armed);
    Ok(())
}

/// A client's user count of its context: given back when dropped.
struct UserCount(&'static ContextSlot);

impl Drop for UserCount {
    fn drop(&mut self) {
        self.0.state.fetch_sub(1, Ordering::Release);
    }
}

/// A retired client slot: put back on the free list when dropped.
struct Recycle(u64);

impl Drop for Recycle {
    fn drop(&mut self) {
        CLIENTS.recycle(self.0);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::sync::atomic::AtomicBool;

    use memvisor_arena::{Backing, Config, Quota};

    use super::*;

    /// Makes a call on the context of `ctx` panic in its work on the arena, as a broken
    /// invariant would.
    fn panic_in_a_call(ctx: u64) {
        let panicked = std::panic::catch_unwind(|| {
            pin(ctx)
                .unwrap()
                .run(|_| panic!("broken invariant in a context call"))
        });
        assert!(panicked.is_err());
    }

    fn arena() -> Arena {
        let config = Config::new().with_chunk_size(64 << 10);
        Arena::new(Backing::heap(256 << 10, 4096).unwrap(), config).unwrap()
    }

    /// A context over [`arena`], its memory claimed.
    fn create_context(arena: Arena) -> Result<u64, Status> {
        let backing = arena.backing();
        let claim = Claim::new(backing.as_ptr().addr(), backing.len())?;
        super::create_context(arena, claim)
    }

    #[test]
    fn delete_context_with_client_busy_until_client_deleted() {
        let ctx = create_context(arena()).unwrap();
        let client = create_client(&pin(ctx).unwrap(), Quota::UNLIMITED).unwrap();
        assert_eq!(delete_context(ctx), Err(Status::ContextBusy));
        assert!(pin(ctx).is_ok());
        // SAFETY: no other thread uses the client.
        unsafe { delete_client(client) }.unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { delete_client(client) }, Err(Status::InvalidHandle));
        delete_context(ctx).unwrap();
        assert!(pin(ctx).is_err());
        assert_eq!(delete_context(ctx), Err(Status::InvalidHandle));
    }

    #[test]
    fn claim_sharing_a_byte_with_a_live_claim_refused_until_released() {
        // Addresses no memory has (the top of the address space), so that contexts of tests
        // running beside this one never meet them; nothing is read or written there.
        let base = usize::MAX - (1 << 20);
        let live = Claim::new(base + 0x1000, 0x1000).unwrap();
        for (start, len) in [
            (base + 0x1000, 0x1000),
            (base + 0x1fff, 1),
            (base, 0x1001),
            (base + 0x1800, 0x10),
            (base, 0x4000),
            (base + 0x1fff, usize::MAX - base - 0x1fff),
        ] {
            assert_eq!(
                Claim::new(start, len).err(),
                Some(Status::BlockInUse),
                "{start:#x} + {len:#x}"
            );
        }
        assert_eq!(
            Claim::new(base + 0x1fff, usize::MAX).err(),
            Some(Status::TooLarge)
        );
        // Beside it, and empty, is no overlap.
        let before = Claim::new(base, 0x1000).unwrap();
        let after = Claim::new(base + 0x2000, 0x1000).unwrap();
        let empty = Claim::new(base + 0x1800, 0).unwrap();
        drop((before, after, empty));
        // A refusal claimed nothing, and a released claim frees its range.
        assert_eq!(Claim::new(base, 0x2000).err(), Some(Status::BlockInUse));
        drop(live);
        let again = Claim::new(base, 0x4000).unwrap();
        drop(again);
    }

    /// A client whose drop panics (a broken invariant of the arena) is gone all the same, and
    /// poisons its context.
    #[test]
    fn client_whose_drop_panics_gives_its_context_back() {
        let ctx = create_context(arena()).unwrap();
        let client = create_client(&pin(ctx).unwrap(), Quota::UNLIMITED).unwrap();
        // A drop that panics once the client is gone (a broken invariant of the arena).
        let deleted = std::panic::catch_unwind(|| {
            // SAFETY: no other thread uses the client.
            unsafe {
                delete_client_with(client, |c| {
                    drop(c);
                    panic!("broken invariant while dropping a client")
                })
            }
        });
        assert!(deleted.is_err());
        // SAFETY: as above.
        assert_eq!(unsafe { delete_client(client) }, Err(Status::InvalidHandle));
        // The drop may have left the arena half-changed: the context is poisoned, but the
        // client is gone, so its context is not left busy.
        assert_eq!(pin(ctx).err(), Some(Status::Poisoned));
        assert_eq!(delete_context(ctx), Ok(()));
        assert_eq!(pin(ctx).err(), Some(Status::InvalidHandle));
    }

    /// A context whose state panics while it is freed (a broken invariant of the arena) is
    /// gone all the same: its handle is refused with `INVALID_HANDLE`, its memory is no
    /// longer claimed, and its slot serves the next context.
    #[test]
    fn context_whose_free_panics_gives_its_slot_and_memory_back() {
        // Addresses no memory has (the top of the address space), as in the claim test.
        let start = usize::MAX - (4 << 20);
        let ctx = super::create_context(arena(), Claim::new(start, 0x1000).unwrap()).unwrap();
        let slot = CONTEXTS.get(ctx).unwrap().value();
        let client = create_client(&pin(ctx).unwrap(), Quota::UNLIMITED).unwrap();
        // SAFETY: no other thread uses the client.
        unsafe { delete_client(client) }.unwrap();
        let deleted = std::panic::catch_unwind(|| {
            delete_context_with(ctx, |shared| {
                drop(shared);
                panic!("broken invariant while freeing a context")
            })
        });
        assert!(deleted.is_err());
        // So is a call or delete that looked the slot up before the delete: the slot is
        // unlocked to a generation no live handle has.
        for refused in [
            pin(ctx).err(),
            delete_context(ctx).err(),
            pin_at(slot, ctx).err(),
            lock_for_delete(slot, ctx).err(),
        ] {
            assert_eq!(refused, Some(Status::InvalidHandle));
        }
        // The memory is free for another context, and the slot is taken again (by this
        // test's contexts or by those of tests running beside it).
        let again = Claim::new(start, 0x1000).unwrap();
        drop(again);
        let successor = context_in(slot);
        assert!(pin(successor).is_ok());
        assert_eq!(pin(ctx).err(), Some(Status::InvalidHandle));
        delete_context(successor).unwrap();
    }

    /// A context whose free panics before any of its state is dropped (the unwind drops it
    /// all) gives its memory back exactly once: one claim of it is had again, a second is
    /// refused, and the slot is free.
    #[test]
    fn context_whose_free_panics_first_releases_its_claim_once() {
        // Addresses no memory has, apart from the other claim tests'.
        let start = usize::MAX - (8 << 20);
        let ctx = super::create_context(arena(), Claim::new(start, 0x3000).unwrap()).unwrap();
        let slot = CONTEXTS.get(ctx).unwrap().value();
        let deleted = std::panic::catch_unwind(|| {
            delete_context_with(ctx, |shared| {
                let _unwound = shared;
                panic!("broken invariant before a context's state is freed")
            })
        });
        assert!(deleted.is_err());
        assert_eq!(pin_at(slot, ctx).err(), Some(Status::InvalidHandle));
        let again = Claim::new(start, 0x3000).unwrap();
        assert_eq!(
            Claim::new(start + 0x1000, 0x1000).err(),
            Some(Status::BlockInUse)
        );
        drop(again);
        let successor = context_in(slot);
        delete_context(successor).unwrap();
    }

    /// Calls racing a delete whose free panics either run before it (the delete is then
    /// `CONTEXT_BUSY`, and is tried again) or are refused: none reaches the freed state, also
    /// once the slot is given back (and maybe taken by another test's context).
    #[test]
    fn calls_racing_a_delete_whose_free_panics_never_reach_its_state() {
        let ctx = create_context(arena()).unwrap();
        let slot = CONTEXTS.get(ctx).unwrap().value();
        let deleted = AtomicBool::new(false);
        let threads = if cfg!(miri) { 2 } else { 4 };
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        // A call that looked the slot up before the delete.
                        match pin_at(slot, ctx) {
                            Ok(pinned) => {
                                let _ = pinned.shared().arena.accepted_flags();
                            }
                            Err(refused) => {
                                assert_eq!(refused, Status::InvalidHandle);
                                if deleted.load(Ordering::Acquire) {
                                    break;
                                }
                            }
                        }
                        std::thread::yield_now();
                    }
                });
            }
            let mut busy = 0_u32;
            loop {
                let attempt = std::panic::catch_unwind(|| {
                    delete_context_with(ctx, |shared| {
                        drop(shared);
                        panic!("broken invariant while freeing a context")
                    })
                });
                match attempt {
                    Ok(Err(Status::ContextBusy)) => busy += 1,
                    Ok(other) => panic!("{other:?} after {busy} busy deletes"),
                    Err(_) => break,
                }
                std::thread::yield_now();
            }
            deleted.store(true, Ordering::Release);
        });
        assert_eq!(pin(ctx).err(), Some(Status::InvalidHandle));
        let successor = context_in(slot);
        assert_eq!(pin_at(slot, ctx).err(), Some(Status::InvalidHandle));
        delete_context(successor).unwrap();
    }

    /// A context in a slot at its last generation whose free panics retires the slot for
    /// good, as a delete that returns does: no handle of it matches again, whatever its
    /// generation, and no later context is given the slot.
    #[test]
    fn context_at_the_last_generation_whose_free_panics_retires_its_slot() {
        use crate::table::LAST_GENERATION;
        let ctx = create_context(arena()).unwrap();
        let slot = CONTEXTS.get(ctx).unwrap();
        let index = ctx & u64::from(u32::MAX);
        // The context as the slot's last: its handle and its count name that generation.
        let last = u64::from(LAST_GENERATION) << 32 | index;
        slot.value().state.store(unused(last), Ordering::Release);
        slot.set_generation(LAST_GENERATION);
        assert_eq!(pin(ctx).err(), Some(Status::InvalidHandle));
        drop(pin(last).unwrap());
        let deleted = std::panic::catch_unwind(|| {
            delete_context_with(last, |shared| {
                drop(shared);
                panic!("broken invariant while freeing a context")
            })
        });
        assert!(deleted.is_err());
        for generation in [1, LAST_GENERATION, LAST_GENERATION + 1, u32::MAX] {
            let forged = u64::from(generation) << 32 | index;
            assert_eq!(pin(forged).err(), Some(Status::InvalidHandle));
            assert_eq!(delete_context(forged), Err(Status::InvalidHandle));
        }
        // Nor does a late call or delete of the last context (a look-up only ever finds a
        // slot for a handle of a live, odd, generation).
        assert_eq!(
            pin_at(slot.value(), last).err(),
            Some(Status::InvalidHandle)
        );
        assert_eq!(
            lock_for_delete(slot.value(), last),
            Err(Status::InvalidHandle)
        );
        // Fewer under Miri, where each context's arena takes a second to interpret.
        let count = if cfg!(miri) { 16 } else { 200 };
        let made: Vec<u64> = (0..count)
            .map(|_| create_context(arena()).unwrap())
            .collect();
        for &other in &made {
            assert_ne!(other & u64::from(u32::MAX), index);
        }
        for other in made {
            delete_context(other).unwrap();
        }
    }

    /// A context call that panics while the context is pinned (a broken invariant of the
    /// arena) leaves its context poisoned: every later call on it or on its clients answers
    /// `POISONED` without reaching the arena, deleting a client forgets its arena client
    /// instead of running its drop over the interrupted state, and the context, once its
    /// clients are deleted, is deleted and its handle refused as any deleted one.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "a poisoned context's clients are forgotten on purpose, which Miri reports as a leak"
    )]
    fn context_whose_call_panics_refuses_later_calls_until_deleted() {
        let ctx = create_context(arena()).unwrap();
        let cl = create_client(&pin(ctx).unwrap(), Quota::UNLIMITED).unwrap();
        panic_in_a_call(ctx);
        assert_eq!(pin(ctx).err(), Some(Status::Poisoned));
        // SAFETY: no other thread uses the client.
        assert_eq!(unsafe { client(cl) }.err(), Some(Status::Poisoned));
        assert_eq!(delete_context(ctx), Err(Status::ContextBusy));
        // The client's drop is not run over the interrupted state: the arena still counts it.
        let shared = CONTEXTS
            .get(ctx)
            .unwrap()
            .value()
            .shared
            .load(Ordering::Acquire);
        // SAFETY: as above.
        let deleted =
            unsafe { delete_client_with(cl, |_| panic!("a poisoned context's client is dropped")) };
        assert_eq!(deleted, Ok(()));
        // SAFETY: the context is not deleted yet; its arena is only read.
        assert_eq!(unsafe { &*shared }.arena.stats().clients, 1);
        // SAFETY: as above.
        assert_eq!(unsafe { client(cl) }.err(), Some(Status::InvalidHandle));
        assert_eq!(delete_context(ctx), Ok(()));
        assert_eq!(pin(ctx).err(), Some(Status::InvalidHandle));
        assert_eq!(delete_context(ctx), Err(Status::InvalidHandle));
    }

    /// A panic in a client's call poisons its context and every client of it, whichever
    /// thread uses them; the functions a C caller calls answer `POISONED`, except the
    /// deletes, which succeed in order (clients, then the context).
    #[test]
    #[cfg_attr(
        miri,
        ignore = "a poisoned context's clients are forgotten on purpose, which Miri reports as a leak"
    )]
    fn client_whose_call_panics_poisons_its_context_and_its_other_clients() {
        use crate::types::{Client, ClientStats, Context, ContextStats};
        let ctx = create_context(arena()).unwrap();
        let a = create_client(&pin(ctx).unwrap(), Quota::UNLIMITED).unwrap();
        let b = create_client(&pin(ctx).unwrap(), Quota::UNLIMITED).unwrap();
        let (context, ca, cb) = (Context { id: ctx }, Client { id: a }, Client { id: b });
        let mut p = std::ptr::null_mut();
        // SAFETY: `p` is writable; no other thread uses the client.
        assert_eq!(unsafe { crate::memvisor_alloc(cb, 64, &mut p) }, Status::Ok);
        let panicked = std::panic::catch_unwind(|| {
            // SAFETY: no other thread uses the client.
            let live = unsafe { client(a) }.unwrap();
            live.run(|c| {
                let _ = c.quota();
                panic!("broken invariant in an allocation")
            })
        });
        assert!(panicked.is_err());
        let mut q = std::ptr::null_mut();
        let mut size = 0_usize;
        let mut owns = false;
        let mut flags = 0_u32;
        let mut owner = Client { id: 0 };
        let mut made = Client { id: 0 };
        let mut cstats = ClientStats {
            size: size_of::<ClientStats>(),
            ..ClientStats::default()
        };
        let mut xstats = ContextStats {
            size: size_of::<ContextStats>(),
            ..ContextStats::default()
        };
        // SAFETY: every output is writable; no other thread uses the clients; `p` is only
        // looked up.
        let answers = unsafe {
            [
                crate::memvisor_alloc(ca, 64, &mut q),
                crate::memvisor_alloc(cb, 64, &mut q),
                crate::memvisor_alloc_aligned(cb, 64, 64, &mut q),
                crate::memvisor_client_free(cb, p, &mut size),
                crate::memvisor_client_owns(cb, p, &mut owns),
                crate::memvisor_size_of(cb, p, &mut size),
                crate::memvisor_client_trim(cb),
                crate::memvisor_client_get_stats(cb, &mut cstats),
                crate::memvisor_free(context, p, &mut size),
                crate::memvisor_context_owner(context, p, &mut owner),
                crate::memvisor_context_trim(context),
                crate::memvisor_context_accepted_flags(context, &mut flags),
                crate::memvisor_context_get_stats(context, &mut xstats),
                crate::memvisor_client_create(context, 0, &mut made),
            ]
        };
        assert_eq!(answers, [Status::Poisoned; 14]);
        // Nothing was written.
        assert!(q.is_null());
        assert_eq!((size, owns, flags, owner.id, made.id), (0, false, 0, 0, 0));
        assert_eq!(crate::memvisor_context_delete(context), Status::ContextBusy);
        // SAFETY: the client is used on this thread alone, and its blocks not after.
        assert_eq!(unsafe { crate::memvisor_client_delete(ca) }, Status::Ok);
        // SAFETY: the client is used on this thread alone, and its blocks not after.
        assert_eq!(unsafe { crate::memvisor_client_delete(cb) }, Status::Ok);
        let again = {
            // SAFETY: as above; the handle no longer names a client.
            unsafe { crate::memvisor_client_delete(cb) }
        };
        assert_eq!(again, Status::InvalidHandle);
        // SAFETY: as above.
        let trimmed = unsafe { crate::memvisor_client_trim(cb) };
        assert_eq!(trimmed, Status::InvalidHandle);
        assert_eq!(crate::memvisor_context_delete(context), Status::Ok);
        assert_eq!(crate::memvisor_context_trim(context), Status::InvalidHandle);
        assert_eq!(
            crate::memvisor_context_delete(context),
            Status::InvalidHandle
        );
    }

    /// What each function answers for a poisoned context and its clients is fixed by one
    /// order, the same as for a live one: the arguments checked alone first (`NULL_POINTER`,
    /// `STRUCT_SIZE`, `UNSUPPORTED_ALIGNMENT`, `TOO_LARGE`), then the handle (`POISONED`), and
    /// nothing written; the functions that take no handle work as usual, and the deletes
    /// succeed (a client, then the context).
    #[test]
    #[cfg_attr(
        miri,
        ignore = "a poisoned context's clients are forgotten on purpose, which Miri reports as a leak"
    )]
    fn poisoned_context_answers_argument_errors_first_then_poisoned() {
        use crate::types::{Client, Config, Context};
        let ctx = create_context(arena()).unwrap();
        let cl = create_client(&pin(ctx).unwrap(), Quota::UNLIMITED).unwrap();
        let (context, client) = (Context { id: ctx }, Client { id: cl });
        let mut p = std::ptr::null_mut();
        // SAFETY: `p` is writable; no other thread uses the client.
        let made = unsafe { crate::memvisor_alloc(client, 64, &mut p) };
        assert_eq!(made, Status::Ok);
        panic_in_a_call(ctx);
        crate::handle_sweep::argument_errors_come_first(context, client, p);
        // The functions that take no handle do not see the poison.
        let mut config = Config::default();
        // SAFETY: `config` is writable for its size.
        let status = unsafe { crate::memvisor_config_init_sized(&mut config, size_of::<Config>()) };
        assert_eq!(status, Status::Ok);
        assert_eq!(
            crate::memvisor_supported_flags(),
            Arena::supported_flags().bits()
        );
        // SAFETY: the client is used on this thread alone, and its blocks not after.
        assert_eq!(unsafe { crate::memvisor_client_delete(client) }, Status::Ok);
        assert_eq!(crate::memvisor_context_delete(context), Status::Ok);
    }

    /// A client create that pinned its context before another call on it panicked looks
    /// again before it makes its client: it answers `Poisoned` and makes nothing, where the
    /// other calls that pinned before the poison run on; the context is deleted once the
    /// pin is out.
    #[test]
    fn client_create_pinned_before_the_poison_answers_poisoned() {
        let ctx = create_context(arena()).unwrap();
        let pinned = pin(ctx).unwrap();
        panic_in_a_call(ctx);
        assert_eq!(pin(ctx).err(), Some(Status::Poisoned));
        assert_eq!(
            create_client(&pinned, Quota::UNLIMITED),
            Err(Status::Poisoned)
        );
        assert!(pinned.shared().handles.lock().unwrap().is_empty());
        assert_eq!(pinned.run(|shared| shared.arena.stats().clients), 0);
        assert_eq!(delete_context(ctx), Err(Status::ContextBusy));
        drop(pinned);
        assert_eq!(delete_context(ctx), Ok(()));
    }

    /// A call in flight on a context when another call on it panics holds it: the delete is
    /// `CONTEXT_BUSY` until that call is out, then succeeds; the slot the context had serves
    /// the next context unpoisoned, and a client slot a poisoned client had serves the next
    /// client unpoisoned.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "a poisoned context's clients are forgotten on purpose, which Miri reports as a leak"
    )]
    fn poisoned_context_deleted_once_calls_in_flight_are_out_and_its_slots_serve_again() {
        let ctx = create_context(arena()).unwrap();
        let slot = CONTEXTS.get(ctx).unwrap().value();
        let cl = create_client(&pin(ctx).unwrap(), Quota::UNLIMITED).unwrap();
        let in_flight = pin(ctx).unwrap();
        panic_in_a_call(ctx);
        assert_eq!(pin(ctx).err(), Some(Status::Poisoned));
        // SAFETY: no other thread uses the client.
        unsafe { delete_client(cl) }.unwrap();
        assert_eq!(delete_context(ctx), Err(Status::ContextBusy));
        assert_eq!(pin(ctx).err(), Some(Status::Poisoned));
        drop(in_flight);
        assert_eq!(delete_context(ctx), Ok(()));
        assert_eq!(pin(ctx).err(), Some(Status::InvalidHandle));
        assert_eq!(pin_at(slot, ctx).err(), Some(Status::InvalidHandle));
        let successor = context_in(slot);
        let pinned = pin(successor).unwrap();
        // A client made in the poisoned client's slot (tests running beside this one may take
        // it first).
        let reused = client_in(&pinned, cl & u64::from(u32::MAX));
        // SAFETY: no other thread uses the client.
        let live = unsafe { client(reused) }.unwrap();
        let block = live
            .run(|c| c.alloc(std::alloc::Layout::new::<u64>()))
            .unwrap();
        // SAFETY: as above; the block is this client's and not used again.
        assert!(live.run(|c| unsafe { c.free(block) }).is_ok());
        // SAFETY: as above.
        unsafe { delete_client(reused) }.unwrap();
        drop(pinned);
        delete_context(successor).unwrap();
    }

    /// Pins racing a context call that panics and a delete of the context, with no client
    /// (so that nothing is forgotten, and Miri checks it too): a pin succeeds only before the
    /// panicking call has returned, and reads a live context then; afterwards it is refused
    /// with `POISONED` until the delete succeeds, and with `INVALID_HANDLE` after.
    #[test]
    fn pins_racing_a_panicking_call_and_a_delete_never_reach_a_freed_context() {
        let threads = if cfg!(miri) { 2 } else { 4 };
        let ctx = create_context(arena()).unwrap();
        let panicked = AtomicBool::new(false);
        let deleted = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        let (after, gone) = (
                            panicked.load(Ordering::Acquire),
                            deleted.load(Ordering::Acquire),
                        );
                        match pin(ctx) {
                            Ok(pinned) => {
                                assert!(!after, "pinned after the panic");
                                assert_eq!(pinned.shared().arena.chunk_count(), 4);
                            }
                            Err(Status::Poisoned) => assert!(!gone, "poisoned after the delete"),
                            Err(Status::InvalidHandle) => {
                                let after = panicked.load(Ordering::Acquire);
                                assert!(after, "refused before the panic");
                                break;
                            }
                            Err(other) => panic!("{other:?}"),
                        }
                        std::thread::yield_now();
                    }
                });
            }
            scope.spawn(|| {
                std::thread::yield_now();
                panic_in_a_call(ctx);
                panicked.store(true, Ordering::Release);
                loop {
                    match delete_context(ctx) {
                        Ok(()) => break,
                        Err(Status::ContextBusy) => std::thread::yield_now(),
                        Err(other) => panic!("{other:?}"),
                    }
                }
                deleted.store(true, Ordering::Release);
            });
        });
        assert_eq!(pin(ctx).err(), Some(Status::InvalidHandle));
    }

    /// A context call made while its thread unwinds from a panic of the caller's own (from
    /// a Rust drop, the crate being usable as a Rust library) that returns normally poisons
    /// nothing: only a panic during the call does.
    #[test]
    fn call_made_while_its_thread_unwinds_poisons_nothing() {
        struct TrimOnDrop<'a>(u64, &'a Mutex<Option<Status>>);
        impl Drop for TrimOnDrop<'_> {
            fn drop(&mut self) {
                let trimmed = crate::memvisor_context_trim(crate::types::Context { id: self.0 });
                *self.1.lock().unwrap_or_else(PoisonError::into_inner) = Some(trimmed);
            }
        }
        let ctx = create_context(arena()).unwrap();
        let answer = Mutex::new(None);
        let unwound = std::panic::catch_unwind(|| {
            let _trim = TrimOnDrop(ctx, &answer);
            panic!("a panic of the caller's, outside any call")
        });
        assert!(unwound.is_err());
        assert_eq!(*answer.lock().unwrap(), Some(Status::Ok));
        assert!(pin(ctx).is_ok());
        delete_context(ctx).unwrap();
    }

    /// Clients made on several threads racing a context call that panics: a make answers
    /// `OK` or `POISONED`, never `OK` once it starts after the panicking call has returned,
    /// and every client made (handed to another thread) answers `POISONED` afterwards: none
    /// escapes the mark. Deleting them all, then the context, succeeds.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "a poisoned context's clients are forgotten on purpose, which Miri reports as a leak"
    )]
    fn clients_made_racing_a_panicking_call_are_all_poisoned() {
        let makers = if cfg!(miri) { 2 } else { 3 };
        let rounds = if cfg!(miri) { 1 } else { 20 };
        // Clients a maker makes at most per round, so that the context never runs out.
        let most = 200;
        for _ in 0..rounds {
            let ctx = create_context(arena()).unwrap();
            let context = crate::types::Context { id: ctx };
            let panicked = AtomicBool::new(false);
            let (made, received) = std::sync::mpsc::channel::<u64>();
            let wrong = Mutex::new(Vec::new());
            std::thread::scope(|scope| {
                for _ in 0..makers {
                    let (made, panicked, wrong) = (made.clone(), &panicked, &wrong);
                    scope.spawn(move || {
                        let mut count = 0;
                        loop {
                            let after = panicked.load(Ordering::Acquire);
                            let mut out = crate::types::Client { id: 0 };
                            // SAFETY: `out` is writable.
                            let answer = unsafe {
                                crate::memvisor_client_create(
                                    context,
                                    crate::types::MEMVISOR_UNLIMITED,
                                    &mut out,
                                )
                            };
                            match answer {
                                Status::Ok if !after => {
                                    made.send(out.id).unwrap();
                                    count += 1;
                                }
                                Status::Poisoned => break,
                                other => {
                                    wrong.lock().unwrap().push((after, other));
                                    if other == Status::Ok {
                                        made.send(out.id).unwrap();
                                    }
                                    break;
                                }
                            }
                            if count == most {
                                while !panicked.load(Ordering::Acquire) {
                                    std::thread::yield_now();
                                }
                            }
                            std::thread::yield_now();
                        }
                    });
                }
                scope.spawn(|| {
                    std::thread::yield_now();
                    panic_in_a_call(ctx);
                    panicked.store(true, Ordering::Release);
                });
            });
            drop(made);
            assert_eq!(*wrong.lock().unwrap(), []);
            let clients: Vec<u64> = received.iter().collect();
            for &cl in &clients {
                let client = crate::types::Client { id: cl };
                // SAFETY: only this thread uses the client now.
                let trimmed = unsafe { crate::memvisor_client_trim(client) };
                assert_eq!(trimmed, Status::Poisoned);
            }
            for cl in clients {
                assert_eq!(
                    // SAFETY: the client is used on this thread alone, and its blocks not after.
                    unsafe { crate::memvisor_client_delete(crate::types::Client { id: cl }) },
                    Status::Ok
                );
            }
            assert_eq!(delete_context(ctx), Ok(()));
        }
    }

    /// Calls racing a call that panics, on the same context and on other clients of it,
    /// from other threads: each answers as if before the panic (`OK`) or `POISONED`, and
    /// every call that starts after the panicking call has returned is `POISONED`. A delete
    /// of the context racing them is `CONTEXT_BUSY` until the last client is deleted and the
    /// last call is out, then succeeds; later calls are `INVALID_HANDLE`.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "a poisoned context's clients are forgotten on purpose, which Miri reports as a leak"
    )]
    fn calls_racing_a_panicking_call_answer_ok_or_poisoned() {
        let threads = if cfg!(miri) { 2 } else { 4 };
        let rounds = if cfg!(miri) { 2 } else { 50 };
        for _ in 0..rounds {
            let ctx = create_context(arena()).unwrap();
            let clients: Vec<u64> = (0..threads)
                .map(|_| create_client(&pin(ctx).unwrap(), Quota::UNLIMITED).unwrap())
                .collect();
            let panicker = create_client(&pin(ctx).unwrap(), Quota::UNLIMITED).unwrap();
            let panicked = AtomicBool::new(false);
            let wrong = Mutex::new(Vec::new());
            std::thread::scope(|scope| {
                for &cl in &clients {
                    let (panicked, wrong) = (&panicked, &wrong);
                    scope.spawn(move || {
                        loop {
                            let after = panicked.load(Ordering::Acquire);
                            let context = crate::types::Context { id: ctx };
                            let mut flags = 0;
                            // SAFETY: `flags` is writable.
                            let on_context = unsafe {
                                crate::memvisor_context_accepted_flags(context, &mut flags)
                            };
                            let mut p = std::ptr::null_mut();
                            let client = crate::types::Client { id: cl };
                            // SAFETY: only this thread uses the client.
                            let on_client = unsafe { crate::memvisor_alloc(client, 32, &mut p) };
                            // What was allocated is freed, so that the context never fills.
                            let freed = if on_client == Status::Ok {
                                // SAFETY: as above; `p` is the client's live block.
                                unsafe {
                                    crate::memvisor_client_free(client, p, std::ptr::null_mut())
                                }
                            } else {
                                Status::Poisoned
                            };
                            for answer in [on_context, on_client, freed] {
                                let fits =
                                    answer == Status::Poisoned || (!after && answer == Status::Ok);
                                let mut wrong = wrong.lock().unwrap();
                                if !fits && wrong.len() < 10 {
                                    wrong.push((after, answer));
                                }
                            }
                            if after {
                                break;
                            }
                            std::thread::yield_now();
                        }
                        assert_eq!(
                            // SAFETY: the client is used on this thread alone, and its blocks not
                            // after.
                            unsafe {
                                crate::memvisor_client_delete(crate::types::Client { id: cl })
                            },
                            Status::Ok
                        );
                    });
                }
                scope.spawn(|| {
                    std::thread::yield_now();
                    let hit = std::panic::catch_unwind(|| {
                        // SAFETY: only this thread uses the client.
                        unsafe { client(panicker) }
                            .unwrap()
                            .run(|_| panic!("broken invariant in an allocation"))
                    });
                    assert!(hit.is_err());
                    panicked.store(true, Ordering::Release);
                    assert_eq!(
                        // SAFETY: the client is used on this thread alone, and its blocks not
                        // after.
                        unsafe {
                            crate::memvisor_client_delete(crate::types::Client { id: panicker })
                        },
                        Status::Ok
                    );
                });
                scope.spawn(|| {
                    loop {
                        match delete_context(ctx) {
                            Ok(()) => break,
                            Err(Status::ContextBusy) => std::thread::yield_now(),
                            Err(other) => panic!("{other:?}"),
                        }
                    }
                });
            });
            assert_eq!(*wrong.lock().unwrap(), []);
            assert_eq!(pin(ctx).err(), Some(Status::InvalidHandle));
            for cl in clients {
                // SAFETY: no other thread uses the client.
                assert_eq!(unsafe { client(cl) }.err(), Some(Status::InvalidHandle));
            }
        }
    }

    #[test]
    fn delete_context_while_pinned_busy() {
        let ctx = create_context(arena()).unwrap();
        let pinned = pin(ctx).unwrap();
        assert_eq!(delete_context(ctx), Err(Status::ContextBusy));
        drop(pinned);
        delete_context(ctx).unwrap();
    }

    /// Makes a client, then one that `refuse` says cannot be made, then another: the refusal
    /// is `LimitReached` and spends no identifier of the arena and no user count of the
    /// context, so the next client gets the next identifier.
    fn refused_create_spends_nothing(refuse: impl FnOnce(&Pinned) -> Result<u64, Status>) {
        let ctx = create_context(arena()).unwrap();
        let pinned = pin(ctx).unwrap();
        let first = create_client(&pinned, Quota::UNLIMITED).unwrap();
        // SAFETY: no other thread uses the client.
        let first_id = unsafe { client(first) }.unwrap().client.id();
        let users = pinned.slot.state.load(Ordering::Relaxed);
        assert_eq!(refuse(&pinned), Err(Status::LimitReached));
        assert_eq!(pinned.slot.state.load(Ordering::Relaxed), users);
        assert_eq!(pinned.shared().arena.stats().clients, 1);
        let second = create_client(&pinned, Quota::UNLIMITED).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { client(second) }.unwrap().client.id(), first_id + 1);
        // SAFETY: as above.
        unsafe { delete_client(first) }.unwrap();
        // SAFETY: as above.
        unsafe { delete_client(second) }.unwrap();
        drop(pinned);
        delete_context(ctx).unwrap();
    }

    /// A context whose arena refuses a client for want of identifiers refuses the create with
    /// `LimitReached`, spends nothing (no slot, no user count, no entry), and its clients and
    /// later calls work as before. The arena's refusal is put in place of its answer: it
    /// gives a deleted client's identifier to the next client, so it refuses only with
    /// 2^32 - 2 clients live at once, past the 2^30 live clients a context allows (and 2 KiB
    /// of the process's heap each, 8 TiB in all); no sequence of real creates reaches it. The
    /// arena's own test runs real creates up to the refusal, its counter moved near the end.
    #[test]
    fn client_create_with_identifiers_used_up_is_limit_reached_and_spends_nothing() {
        // A table of this test's own, so that which slot is next is known.
        static TABLE: Table<ClientSlot> = Table::new(Kind::Client);
        refused_create_spends_nothing(|pinned| {
            hooks::ARENA_REFUSES_CLIENT.set(Some(memvisor_arena::Error::ClientIdsExhausted {
                max: u32::MAX - 1,
            }));
            let entries = pinned.shared().handles.lock().unwrap().len();
            let refused = create_client_in(&TABLE, pinned, Quota::UNLIMITED, MAX_CLIENTS);
            assert_eq!(pinned.shared().handles.lock().unwrap().len(), entries);
            // The slot went back: the table's next taker gets its first index again.
            let next = TABLE.take((), (), |_, _| Ok(())).unwrap();
            assert_eq!(next & u64::from(u32::MAX >> 1), 0);
            refused
        });
    }

    /// A client create that panics where the arena makes its client (a broken invariant)
    /// gives its slot back (the table's next taker gets it), takes no user count and makes
    /// no entry, and poisons the context, which is deleted as usual once the call is out.
    #[test]
    fn client_create_whose_arena_call_panics_gives_its_slot_back_and_poisons() {
        // A table of this test's own, so that which slot is next is known.
        static TABLE: Table<ClientSlot> = Table::new(Kind::Client);
        let ctx = create_context(arena()).unwrap();
        let pinned = pin(ctx).unwrap();
        let users = pinned.slot.state.load(Ordering::Relaxed);
        hooks::ARENA_PANICS.set(true);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pinned.run(|_| create_client_in(&TABLE, &pinned, Quota::UNLIMITED, MAX_CLIENTS))
        }));
        assert!(panicked.is_err());
        // Poisoned (the lock bit and its extra count), and no count of a client.
        assert_eq!(
            pinned.slot.state.load(Ordering::Relaxed),
            users + LOCKED + 1
        );
        let handles = pinned
            .shared()
            .handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        assert!(handles.is_empty());
        drop(handles);
        let next = TABLE.take((), (), |_, _| Ok(())).unwrap();
        assert_eq!(next & u64::from(u32::MAX >> 1), 0);
        drop(pinned);
        assert_eq!(pin(ctx).err(), Some(Status::Poisoned));
        assert_eq!(delete_context(ctx), Ok(()));
    }

    /// A client's entry goes into the room reserved for it under the same hold of the
    /// context's `handles` lock: another thread's create, started between the reservation
    /// and the insertion, cannot take that room (its insertion would then allocate, and abort
    /// the process where the allocator refuses). It waits until the first is published. Both
    /// creates run under a watchdog: one that never returns (a lock left held) fails the
    /// test instead of hanging the run.
    #[test]
    #[cfg_attr(miri, ignore = "waits 100 ms for a create that must not finish")]
    fn client_create_between_reserve_and_insert_holds_the_room() {
        let ctx = create_context(arena()).unwrap();
        let (first, second, ran_between) = memvisor_testkit::watchdog::within(
            "two client creates, one stopped before its insertion",
            std::time::Duration::from_secs(10),
            move || {
                let (done, finished) = std::sync::mpsc::channel();
                let other = std::sync::Arc::new(Mutex::new(None));
                let spawned = std::sync::Arc::clone(&other);
                // The hook is this thread's: it runs in the create made below.
                hooks::BEFORE_INSERT.set(Some(Box::new(move || {
                    let thread = std::thread::spawn(move || {
                        let made = create_client(&pin(ctx).unwrap(), Quota::UNLIMITED);
                        // The receiver is gone once the hook has waited.
                        let _ = done.send(());
                        made
                    });
                    let ran_between = finished
                        .recv_timeout(std::time::Duration::from_millis(100))
                        .is_ok();
                    *spawned.lock().unwrap() = Some((thread, ran_between));
                })));
                let first = create_client(&pin(ctx).unwrap(), Quota::UNLIMITED).unwrap();
                let (thread, ran_between) = other.lock().unwrap().take().unwrap();
                let second = thread.join().unwrap().unwrap();
                (first, second, ran_between)
            },
        );
        assert!(
            !ran_between,
            "a create finished between another's reservation and its insertion"
        );
        let shared = pin(ctx).unwrap().shared();
        assert_eq!(shared.handles.lock().unwrap().len(), 2);
        for handle in [first, second] {
            // SAFETY: no other thread uses the client.
            unsafe { delete_client(handle) }.unwrap();
        }
        delete_context(ctx).unwrap();
    }

    /// A context at its client limit keeps counting: with [`MAX_CLIENTS`] clients' user
    /// counts and calls in flight on many threads, a pin still raises and lowers the count
    /// without reaching [`LOCKED`] or the generation above it, a delete is `CONTEXT_BUSY`,
    /// and once the counts are given back the context is deleted. (The limit itself is
    /// refused at [`MAX_CLIENTS`] live clients by `create_client_in`, tested above with a
    /// limit of a few: 2^30 real clients take about 2 TiB of the process's heap.)
    #[test]
    fn context_counting_its_most_users_never_reaches_the_lock_bit() {
        // Every user a thread may add beside the live clients (a call in flight and a
        // client being deleted), for as many threads as Linux allows (`PID_MAX_LIMIT`,
        // 2^22), fits below the lock bit.
        const { assert!(MAX_CLIENTS == 1 << 30) };
        const { assert!(MAX_CLIENTS + 2 * (1 << 22) < LOCKED) };
        let ctx = create_context(arena()).unwrap();
        let slot = CONTEXTS.get(ctx).unwrap().value();
        let idle = slot.state.load(Ordering::Relaxed);
        // The user counts of 2^30 live clients, as `create_client_in` takes them.
        slot.state.fetch_add(MAX_CLIENTS, Ordering::Relaxed);
        let threads = if cfg!(miri) { 3 } else { 16 };
        let barrier = Barrier::new(threads + 1);
        // Every thread passes both barriers whatever it and the checks find, so that a wrong
        // answer fails the test instead of leaving the others waiting.
        let (state, busy, pinned) = std::thread::scope(|scope| {
            let calls: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let pinned = pin(ctx);
                        barrier.wait();
                        barrier.wait();
                        pinned.map(drop)
                    })
                })
                .collect();
            barrier.wait();
            let state = slot.state.load(Ordering::Relaxed);
            let busy = delete_context(ctx);
            barrier.wait();
            let pinned: Vec<_> = calls.into_iter().map(|call| call.join().unwrap()).collect();
            (state, busy, pinned)
        });
        assert!(pinned.iter().all(Result::is_ok), "{pinned:?}");
        assert_eq!(state, idle + MAX_CLIENTS + threads as u64);
        assert_eq!(state & LOCKED, 0);
        assert_eq!(unused(state), unused(ctx));
        assert_eq!(busy, Err(Status::ContextBusy));
        assert_eq!(delete_context(ctx), Err(Status::ContextBusy));
        assert_eq!(slot.state.load(Ordering::Relaxed), idle + MAX_CLIENTS);
        slot.state.fetch_sub(MAX_CLIENTS, Ordering::Relaxed);
        delete_context(ctx).unwrap();
    }

    /// A client that cannot be made because no slot is left for it spends nothing.
    #[test]
    fn failed_client_create_spends_no_client_id() {
        refused_create_spends_nothing(|pinned| {
            let full = Table::<ClientSlot>::exhausted(Kind::Client);
            create_client_in(&full, pinned, Quota::UNLIMITED, MAX_CLIENTS)
        });
    }

    /// A context with as many live clients as its limit takes no more, and the refusal spends
    /// nothing.
    #[test]
    fn client_create_at_client_limit_is_refused_and_spends_nothing() {
        refused_create_spends_nothing(|pinned| {
            create_client_in(&CLIENTS, pinned, Quota::UNLIMITED, 1)
        });
    }

    /// The limit counts live clients only: calls in flight on the context do not make a
    /// client refused, and a deleted client makes room for another.
    #[test]
    fn client_create_refused_only_at_the_limit_whatever_calls_in_flight() {
        const LIMIT: u64 = 2;
        let ctx = create_context(arena()).unwrap();
        let calls: Vec<Pinned> = (0..10).map(|_| pin(ctx).unwrap()).collect();
        let pinned = &calls[0];
        let first = create_client_in(&CLIENTS, pinned, Quota::UNLIMITED, LIMIT).unwrap();
        let second = create_client_in(&CLIENTS, pinned, Quota::UNLIMITED, LIMIT).unwrap();
        let refused = create_client_in(&CLIENTS, pinned, Quota::UNLIMITED, LIMIT);
        assert_eq!(refused, Err(Status::LimitReached));
        // SAFETY: no other thread uses the client.
        unsafe { delete_client(first) }.unwrap();
        let third = create_client_in(&CLIENTS, pinned, Quota::UNLIMITED, LIMIT).unwrap();
        for client in [second, third] {
            // SAFETY: as above.
            unsafe { delete_client(client) }.unwrap();
        }
        drop(calls);
        delete_context(ctx).unwrap();
    }

    /// Threads making clients of one context at once against a limit of a few: never more
    /// live clients than the limit, and every refusal is `LimitReached`.
    #[test]
    fn client_create_racing_never_passes_the_limit() {
        const LIMIT: u64 = 3;
        let threads = if cfg!(miri) { 4 } else { 16 };
        let rounds = if cfg!(miri) { 3 } else { 3000 };
        let ctx = create_context(arena()).unwrap();
        let pinned = pin(ctx).unwrap();
        // Clients made and not yet deleted, and the most there were; lowered before the
        // delete, so it never counts more than are live.
        let live = AtomicU64::new(0);
        let peak = AtomicU64::new(0);
        let made = AtomicU64::new(0);
        let other_refusals = Mutex::new(Vec::new());
        let barrier = Barrier::new(threads);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for _ in 0..rounds {
                        // Every thread makes its client at once; all that were made are live
                        // together until the second wait.
                        barrier.wait();
                        let made_now = create_client_in(&CLIENTS, &pinned, Quota::UNLIMITED, LIMIT);
                        if made_now.is_ok() {
                            made.fetch_add(1, Ordering::Relaxed);
                            let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            let clients = pinned.shared().arena.stats().clients;
                            peak.fetch_max(clients as u64, Ordering::SeqCst);
                        }
                        barrier.wait();
                        match made_now {
                            Ok(client) => {
                                live.fetch_sub(1, Ordering::SeqCst);
                                // SAFETY: only this thread uses the client.
                                unsafe { delete_client(client) }.unwrap();
                            }
                            Err(Status::LimitReached) => {}
                            Err(e) => other_refusals.lock().unwrap().push(e),
                        }
                    }
                });
            }
        });
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak <= LIMIT, "{peak} live clients, limit {LIMIT}");
        assert_eq!(*other_refusals.lock().unwrap(), []);
        // The limit was reached in every round, not merely never approached.
        assert_eq!(made.load(Ordering::Relaxed), LIMIT * rounds);
        drop(pinned);
        delete_context(ctx).unwrap();
    }

    /// Threads making and deleting clients of one context without waiting for each other,
    /// against a limit of a few: the clients live at once never pass the limit, every refusal
    /// is `LimitReached`, and once they are all deleted the context counts no client and no
    /// call but the test's own, so it is deleted at once.
    #[test]
    fn client_create_and_delete_churning_keep_the_limit_and_leave_no_count() {
        const LIMIT: u64 = 2;
        let threads = if cfg!(miri) { 3 } else { 8 };
        let rounds = if cfg!(miri) { 4 } else { 2000 };
        let ctx = create_context(arena()).unwrap();
        let pinned = pin(ctx).unwrap();
        let idle = pinned.slot.state.load(Ordering::Relaxed);
        // Raised after a client is made and lowered before it is deleted: never above the
        // clients live, so above the limit only if the library let too many be made.
        let live = AtomicU64::new(0);
        let other_refusals = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for _ in 0..rounds {
                        match create_client_in(&CLIENTS, &pinned, Quota::UNLIMITED, LIMIT) {
                            Ok(client) => {
                                let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                                assert!(now <= LIMIT, "{now} live clients, limit {LIMIT}");
                                std::thread::yield_now();
                                live.fetch_sub(1, Ordering::SeqCst);
                                // SAFETY: only this thread uses the client.
                                unsafe { delete_client(client) }.unwrap();
                            }
                            Err(Status::LimitReached) => std::thread::yield_now(),
                            Err(e) => other_refusals.lock().unwrap().push(e),
                        }
                    }
                });
            }
        });
        assert_eq!(*other_refusals.lock().unwrap(), []);
        assert_eq!(pinned.slot.state.load(Ordering::Relaxed), idle);
        assert!(pinned.shared().handles.lock().unwrap().is_empty());
        assert_eq!(pinned.shared().arena.stats().clients, 0);
        drop(pinned);
        delete_context(ctx).unwrap();
    }

    #[test]
    fn client_stale_handle_refused_after_slot_reuse() {
        let ctx = create_context(arena()).unwrap();
        let first = create_client(&pin(ctx).unwrap(), Quota::UNLIMITED).unwrap();
        // SAFETY: no other thread uses the client.
        unsafe { delete_client(first) }.unwrap();
        let second = create_client(&pin(ctx).unwrap(), Quota::UNLIMITED).unwrap();
        assert_ne!(first, second);
        // SAFETY: as above.
        assert!(unsafe { client(first) }.is_err());
        // SAFETY: as above.
        assert!(unsafe { client(second) }.is_ok());
        // SAFETY: as above.
        unsafe { delete_client(second) }.unwrap();
        delete_context(ctx).unwrap();
    }

    /// How many contexts or clients [`context_in`] and [`client_in`] make before giving up.
    const SLOT_ATTEMPTS: u32 = if cfg!(miri) { 1_000 } else { 1_000_000 };
    /// How many contexts or clients made elsewhere [`context_in`] and [`client_in`] hold at
    /// once, so that memory stays bounded however long they wait.
    const HELD_AT_MOST: usize = 64;

    /// A context made until one lands in `slot`. Tests running beside this one may take a
    /// freed slot first and keep it for as long as they run, or free theirs after it, which
    /// puts them above it on the free list: the contexts made elsewhere are held, so that the
    /// next one made comes from deeper in the list, and deleted by [`HELD_AT_MOST`] at a time
    /// before trying again, so that a slot kept for long by another test is waited for.
    fn context_in(slot: &ContextSlot) -> u64 {
        let mut held = Vec::new();
        for _ in 0..SLOT_ATTEMPTS {
            let ctx = create_context(arena()).unwrap();
            let found = std::ptr::eq(CONTEXTS.get(ctx).unwrap().value(), slot);
            if !found {
                held.push(ctx);
            }
            if found || held.len() == HELD_AT_MOST {
                for other in held.drain(..) {
                    delete_context(other).unwrap();
                }
            }
            if found {
                return ctx;
            }
            std::thread::yield_now();
        }
        panic!("the slot is never reused");
    }

    /// A client of `pinned` made until one lands in the slot of `index` (as [`context_in`]).
    fn client_in(pinned: &Pinned, index: u64) -> u64 {
        let mut held = Vec::new();
        for _ in 0..SLOT_ATTEMPTS {
            let made = create_client(pinned, Quota::UNLIMITED).unwrap();
            let found = made & u64::from(u32::MAX) == index;
            if !found {
                held.push(made);
            }
            if found || held.len() == HELD_AT_MOST {
                for other in held.drain(..) {
                    // SAFETY: no other thread uses the client.
                    unsafe { delete_client(other) }.unwrap();
                }
            }
            if found {
                return made;
            }
            std::thread::yield_now();
        }
        panic!("the client slot is never reused");
    }

    #[test]
    fn delete_of_deleted_context_never_locks_successor_in_its_slot() {
        let ctx = create_context(arena()).unwrap();
        // A delete on another thread looks the handle up, then waits while the context is
        // deleted and a new one takes its slot.
        let slot = CONTEXTS.get(ctx).unwrap().value();
        delete_context(ctx).unwrap();
        let successor = context_in(slot);
        // The late delete is refused, and leaves the live context alone; so is a late call,
        // which does not count as a user of the new context either.
        let before = slot.state.load(Ordering::Relaxed);
        assert_eq!(lock_for_delete(slot, ctx), Err(Status::InvalidHandle));
        assert_eq!(pin_at(slot, ctx).err(), Some(Status::InvalidHandle));
        assert_eq!(slot.state.load(Ordering::Relaxed), before);
        assert!(pin(successor).is_ok());
        let client = create_client(&pin(successor).unwrap(), Quota::UNLIMITED).unwrap();
        assert_eq!(delete_context(successor), Err(Status::ContextBusy));
        // SAFETY: no other thread uses the client.
        unsafe { delete_client(client) }.unwrap();
        delete_context(successor).unwrap();
    }

    #[test]
    fn delete_context_racing_pins_never_frees_in_use() {
        let rounds = if cfg!(miri) { 3 } else { 200 };
        for _ in 0..rounds {
            let ctx = create_context(arena()).unwrap();
            let deleted = AtomicBool::new(false);
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    scope.spawn(|| {
                        for _ in 0..if cfg!(miri) { 5 } else { 200 } {
                            match pin(ctx) {
                                Ok(p) => {
                                    // A pinned context is alive: read it.
                                    assert_eq!(p.shared().arena.chunk_count(), 4);
                                }
                                Err(e) => assert_eq!(e, Status::InvalidHandle),
                            }
                        }
                    });
                }
                scope.spawn(|| {
                    while !deleted.load(Ordering::Relaxed) {
                        match delete_context(ctx) {
                            Ok(()) => deleted.store(true, Ordering::Relaxed),
                            Err(e) => assert_eq!(e, Status::ContextBusy),
                        }
                        std::thread::yield_now();
                    }
                });
            });
            assert!(pin(ctx).is_err());
        }
    }
}
