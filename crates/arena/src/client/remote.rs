//! Frees from other threads: [`Arena::free`] claims a block by clearing its start bit and
//! pushes it onto its holder's [`Mailbox`], a lock-free list threaded through the freed blocks;
//! the holder takes the whole list in one exchange and frees each block as its own.

use alloc::boxed::Box;
use core::ptr::NonNull;

use super::State;
use crate::arena::Arena;
use crate::sync::{AtomicUsize, Ordering};

/// A client's list of blocks freed through the arena: the offset (plus one) of the first, each
/// block's first word holding the next one's (0 at the end). Many threads push; only the
/// holder takes, and it takes all at once, so a pushed block is never seen twice and the
/// exchange needs no tag against ABA.
///
/// A mailbox also carries its client's identifier: when the client is deleted, both go to
/// a later client ([`ClientIds`](crate::client_ids::ClientIds)), and while they wait `next`
/// links the retired mailboxes.
#[derive(Debug)]
pub(crate) struct Mailbox {
    head: AtomicUsize,
    /// The identifier of the client that has the mailbox (0 until one is given).
    id: u32,
    /// The next retired mailbox while this one is retired; unused otherwise.
    next: *mut Mailbox,
}

impl Mailbox {
    /// An empty list.
    pub(crate) fn new() -> Self {
        Self {
            head: AtomicUsize::new(0),
            id: 0,
            next: core::ptr::null_mut(),
        }
    }

    /// An empty list on the heap, owned by the caller (freed with `Box::from_raw`), or `None`
    /// if the global allocator refuses it.
    pub(crate) fn boxed() -> Option<*mut Self> {
        crate::table::boxed(Self::new()).map(Box::into_raw)
    }

    /// The identifier of the client that has the mailbox.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// Gives the mailbox to the client of identifier `id`.
    pub(crate) fn set_id(&mut self, id: u32) {
        self.id = id;
    }

    /// Empties the list of a deleted client: the blocks in it lay in chunks the client gave
    /// back, whose tables the arena clears when it hands them out again.
    pub(crate) fn clear(&mut self) {
        self.head.store(0, Ordering::Relaxed);
    }

    /// The next retired mailbox.
    pub(crate) fn next(&self) -> *mut Mailbox {
        self.next
    }

    /// Links a retired mailbox to the next one.
    pub(crate) fn set_next(&mut self, next: *mut Mailbox) {
        self.next = next;
    }

    /// Pushes the block at offset `off` from `base`. The `Release` publishes its link (and
    /// everything the freeing thread did before) to the holder's `Acquire` in
    /// [`take`](Self::take).
    ///
    /// # Safety
    /// The block at `off` is one the caller claimed (cleared its start bit), at least a word
    /// long and aligned to one, and nothing else writes its first word until the holder takes
    /// it.
    pub(crate) unsafe fn push(&self, base: NonNull<u8>, off: usize) {
        let link = base.as_ptr().wrapping_add(off).cast::<usize>();
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: the caller's promise: the block is ours to write.
            unsafe { link.write(head) };
            match self.head.compare_exchange_weak(
                head,
                off + 1,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Whether the list looks empty (a push may be under way).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.head.load(Ordering::Relaxed) == 0
    }

    /// Takes the whole list: the offset plus one of its first block, or 0.
    fn take(&self) -> usize {
        self.head.swap(0, Ordering::Acquire)
    }
}

impl State {
    /// Whether there is anything for [`poll`](Self::poll) to do: blocks in the mailbox or a
    /// trim request not yet seen.
    #[inline]
    pub(super) fn has_mail(&self, arena: &Arena) -> bool {
        // SAFETY: the mailbox lives as long as the client.
        !unsafe { &*self.mailbox }.is_empty() || arena.trim_requests() != self.seen_trims
    }

    /// Frees the blocks in the mailbox and, if the arena asked for it, trims.
    #[cold]
    pub(super) fn poll(&mut self, arena: &Arena) {
        self.drain(arena);
        let requests = arena.trim_requests();
        if requests != self.seen_trims {
            self.trim(arena);
            self.seen_trims = requests;
        }
    }

    /// Frees every block in the mailbox.
    pub(super) fn drain(&mut self, arena: &Arena) {
        // SAFETY: the mailbox lives as long as the client.
        let mut at = unsafe { &*self.mailbox }.take();
        while at != 0 {
            let off = at - 1;
            // SAFETY: the block was pushed by `Arena::free`, which wrote its link and claimed
            // it; the `Acquire` of `take` made the write visible. It lies in a chunk this
            // client holds (a claimed block is not freed, so its chunk is not given back).
            at = unsafe { self.at(off).cast::<usize>().read() };
            // The block is ours again: dead to everyone (start bit clear), then unclaimed
            // (before `free`, which may give its chunk back).
            self.clear_start(off);
            arena.remote_bits().release(off);
            let meta = self.page_at(off);
            // SAFETY: as above, a block of this client lies at `off`.
            let chunk = unsafe { self.chunk_of(off) };
            self.free(arena, off, chunk, meta);
        }
    }
}
