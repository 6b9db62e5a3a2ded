//! [`Pusher`]: pushes into a [`ConcurrentVec`] from one thread, claiming slots in blocks.

use core::fmt;

use super::{Block, ConcurrentVec, MAX_BLOCK};
use crate::vec::error::{Error, PushError, Result};

/// Pushes into a [`ConcurrentVec`] from one thread, claiming its slots a block at a time
/// (512 slots: a cache line of ready-bit words; 256 where `usize` has 32 bits, half a line),
/// made by [`ConcurrentVec::pusher`].
///
/// A plain [`ConcurrentVec::push`] claims single slots from the shared counter while a thread
/// pushes alone, and moves to blocks of its own once it sees other threads pushing (see
/// [`Builder::thread_block`](crate::vec::Builder::thread_block)). A `Pusher` claims blocks from the
/// start, and without the per-push look-up of the thread's cache: for bulk pushes from one
/// thread. After one atomic update per block, a push is two plain stores (the element and its
/// ready bit), to cache lines no other thread writes (where `usize` has 32 bits, a block's
/// ready bits may share a line with the next block's). Use one per thread.
///
/// The price is in the indices: elements from one `Pusher` get increasing indices, but blocks of
/// different pushers interleave, and slots of its last block that it does not fill stay empty
/// for good. Like the slots of failed pushes, they are counted by
/// [`len`](ConcurrentVec::len), read as `None` and skipped by iteration.
///
/// Not in memory: a block's slots are committed as it fills, as single-slot pushes commit them.
/// A push whose slot is not committed yet commits a step of the vector's
/// [`Growth`](crate::vec::Growth) past what is committed (or the slot's pages, if it needs
/// more), so a `Pusher` of 1 MiB elements commits 2 MiB at a time with the default growth, not
/// the 512 MiB of its block, and memory [`reserve`](ConcurrentVec::reserve) committed covers
/// its pushes. Past the committed slots a push checks the vector's committed count once per
/// step; below them a push compares its slot with the end it last saw, nothing more.
///
/// # Examples
/// ```
/// use memvisor_vmem::vec::ConcurrentVec;
///
/// // 512 slots a block (256 where `usize` has 32 bits).
/// let block = 8 * usize::BITS as usize;
/// let v = ConcurrentVec::with_capacity(1000)?;
/// let mut pusher = v.pusher();
/// assert_eq!(pusher.push('a'), 0);
/// assert_eq!(pusher.push('b'), 1);
/// assert_eq!(pusher.remaining(), block - 2);
/// drop(pusher);
/// // A plain push after the block takes the next free slot.
/// assert_eq!(v.push('c'), block);
/// assert_eq!(v.iter().collect::<String>(), "abc");
/// assert_eq!(v.len(), block + 1);
/// # Ok::<(), memvisor_vmem::vec::Error>(())
/// ```
///
/// # Threads
/// `Send` and `Sync` only when `T: Send + Sync`, as `&ConcurrentVec<T>` is: a pusher on another
/// thread pushes from there, and [`vec`](Self::vec) hands that thread the vector to read.
/// Not with elements that must stay on their thread:
/// ```compile_fail
/// fn send<X: Send>() {}
/// send::<memvisor_vmem::vec::Pusher<'static, std::sync::MutexGuard<'static, u8>>>();
/// ```
/// nor with elements that cannot be shared:
/// ```compile_fail
/// fn send<X: Send>() {}
/// send::<memvisor_vmem::vec::Pusher<'static, std::cell::Cell<u8>>>();
/// ```
pub struct Pusher<'a, T> {
    vec: &'a ConcurrentVec<T>,
    /// The next slot of the current block.
    next: usize,
    /// The current block (`next == block.end`: used up). A block whose commit the system
    /// refused stays the current block, its commit tried again at the next push.
    block: Block,
    /// The slots of the block below this are committed (`next <= committed <= block.end`):
    /// pushes up to it take a slot without looking at the vector's committed count.
    committed: usize,
}

// `Send` and `Sync` are derived from `&ConcurrentVec<T>`: both need `ConcurrentVec<T>: Sync`,
// that is `T: Send + Sync`, and no less would do, since `vec()` hands the holder of a pusher
// (or of `&Pusher`) the shared vector, to push into and read from.

impl<T> fmt::Debug for Pusher<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pusher")
            .field("next", &self.next)
            .field("end", &self.block.end)
            .finish_non_exhaustive()
    }
}

impl<'a, T> Pusher<'a, T> {
    pub(super) fn new(vec: &'a ConcurrentVec<T>) -> Self {
        Self {
            vec,
            next: 0,
            block: Block {
                start: 0,
                end: 0,
                owned_start: 0,
                owned_end: 0,
            },
            committed: 0,
        }
    }

    /// The vector pushed into.
    #[must_use]
    pub fn vec(&self) -> &'a ConcurrentVec<T> {
        self.vec
    }

    /// Slots left in the current block (pushes before the next claim).
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.block.end - self.next
    }

    /// Takes the next slot of the block, claiming a new block first if needed and committing
    /// the slot's memory if it is not yet.
    #[inline]
    fn take_slot(&mut self) -> Result<usize> {
        if self.next == self.committed {
            self.commit_next()?;
        }
        self.next += 1;
        Ok(self.next - 1)
    }

    /// Makes slot `next` committed, claiming a new block first if the current one is used up.
    /// The commit covers a growth step past what is committed, as a single-slot push's does,
    /// not the whole block: a block of large elements is committed as it fills. A refused
    /// commit leaves the block this pusher's, its slots unfilled: the next push tries again at
    /// the same slot, claiming no other block.
    #[cold]
    fn commit_next(&mut self) -> Result<()> {
        if self.next == self.block.end {
            let block = self.vec.claim_block(MAX_BLOCK)?;
            self.next = block.start;
            self.committed = block.start;
            self.block = block;
        }
        self.committed = self.vec.commit_slot(self.next)?.min(self.block.end);
        Ok(())
    }

    /// Pushes `value` and returns its index, or hands it back.
    ///
    /// # Errors
    /// [`Error::CapacityExceeded`] when no slot is left (nothing changes then);
    /// [`Error::Commit`] if the system refuses memory for the slot (at the first push into a
    /// block, or at one past what is committed): the pusher keeps the block and the slot, and
    /// its next push tries the commit again (a retry claims no other block); the block's
    /// unfilled slots stay empty for good only if the pusher is dropped first.
    #[inline]
    pub fn try_push(&mut self, value: T) -> Result<usize, PushError<T>> {
        match self.take_slot() {
            Ok(index) => {
                let owned = self.block.owns_word_of(index);
                // SAFETY: `index` is a fresh slot of this pusher's block, below `committed`,
                // the vector's committed count that `commit_next` acquired (its memory is
                // committed); the block says whether it owns the slot's ready word, and
                // `&mut self` makes this pusher the block's only user.
                unsafe { self.vec.publish_claimed(index, value, owned) };
                Ok(index)
            }
            Err(e) => Err(PushError::new(value, e)),
        }
    }

    /// Pushes `value` and returns its index.
    ///
    /// # Panics
    /// At capacity, or if the system refuses memory, with a message naming the reason.
    ///
    /// # Examples
    /// A pusher of a vector of long-lived references does not take a shorter-lived one:
    /// ```compile_fail
    /// use memvisor_vmem::vec::ConcurrentVec;
    ///
    /// fn store<'a>(v: &ConcurrentVec<&'a str>, s: &'a str) {
    ///     v.pusher().push(s);
    /// }
    /// let v: ConcurrentVec<&'static str> = ConcurrentVec::with_capacity(4).unwrap();
    /// {
    ///     let short = String::from("freed at the end of this block");
    ///     store(&v, &short);
    /// }
    /// println!("{}", v[0]);
    /// ```
    #[inline]
    #[track_caller]
    pub fn push(&mut self, value: T) -> usize {
        match self.try_push(value) {
            Ok(index) => index,
            Err(e) => failed("push", e.error()),
        }
    }

    /// Takes a slot, builds its element with `make(index)` and publishes it. If `make` panics,
    /// the slot stays empty for good and the pusher goes on with the next one.
    ///
    /// # Errors
    /// As [`try_push`](Self::try_push); `make` is not called then.
    pub fn try_push_with<F: FnOnce(usize) -> T>(&mut self, make: F) -> Result<usize> {
        let index = self.take_slot()?;
        let value = make(index);
        let owned = self.block.owns_word_of(index);
        // SAFETY: as in `try_push`; the slot was taken before `make` ran, so a panic in
        // `make` only leaves it unwritten.
        unsafe { self.vec.publish_claimed(index, value, owned) };
        Ok(index)
    }

    /// As [`try_push_with`](Self::try_push_with), panicking where it returns an error.
    ///
    /// # Panics
    /// At capacity, or if the system refuses memory; and if `make` panics.
    #[track_caller]
    pub fn push_with<F: FnOnce(usize) -> T>(&mut self, make: F) -> usize {
        match self.try_push_with(make) {
            Ok(index) => index,
            Err(e) => failed("push_with", &e),
        }
    }
}

/// Panics with the operation and the reason.
#[cold]
#[track_caller]
fn failed(operation: &str, error: &Error) -> ! {
    panic!("memvisor_vmem::vec::Pusher::{operation}: {error}")
}
