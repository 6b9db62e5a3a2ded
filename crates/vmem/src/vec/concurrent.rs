//! [`ConcurrentVec`]: a vector that many threads push into without a lock, growing in place.
//!
//! # Protocol
//!
//! - **Claim.** A push takes a slot index with one `fetch_add` on `next`. Indices are unique: a
//!   push that finds `index >= capacity` gives its increment back with `fetch_sub`; since only such
//!   pushes decrement, `next` never drops below the capacity once it has reached it (capacities are
//!   at most `isize::MAX`, so it cannot wrap).
//! - **Blocks.** A thread that sees another thread's claim between two of its own (its thread-local
//!   entry, module `local`, remembers its last index) claims blocks instead: a `fetch_update` moves
//!   `next` to the block's end, aligned to the block length, and the thread takes the block's slots
//!   from its entry with no atomic operation. Ready words wholly inside a block (`Block::owned_*`)
//!   are written by that thread alone, so it sets their bits with a load and a release store. An
//!   entry names its vector by an id that is never reused, and `clear` gives the vector a new one,
//!   so a block is never taken from a vector it was not claimed in.
//! - **Commit.** `committed` counts the slots whose memory (slot bytes and ready-bit word) is
//!   committed; it only grows. A push whose index is at or past it commits everything from the
//!   value it saw up to a target past its index (commits are idempotent and thread-safe, so racing
//!   pushes may commit the same pages; they take turns on the reservation's call lock, the only
//!   place a push may wait), then raises `committed` with `fetch_max` (release). Because each
//!   committer commits from the value it saw, every slot below the maximum is committed.
//! - **Write and publish.** The element is written into its slot, then the slot's ready bit is set
//!   with `fetch_or` (release).
//! - **Read.** `get(i)` loads `committed` (acquire: the bit's page is committed) and, if `i` is
//!   below it, the ready bit (acquire: the element's writes are visible). A *published prefix*
//!   (every slot below it is published) lets `get` skip the bit: the publisher of a ready word's
//!   last slot, and `published_prefix`, move it over the complete words (see `advance_prefix`); a
//!   preempted pusher only holds it back, and `get` then reads the bit. An unpublished slot is
//!   `None`. Nothing waits on another push, so a preempted writer delays only its own slot.
//! - **Holes.** A push whose element constructor panics, or whose commit fails, leaves its slot
//!   claimed but never published: it is never read and never dropped.
//! - **Drop.** Each published element is dropped once, in index order; its bit is cleared before
//!   the drop, and a panicking destructor does not stop the others.

use core::marker::PhantomData;
use core::ops::Index;
use core::ptr::NonNull;
use core::{fmt, mem, slice};

use super::builder::{Builder, Growth};
use super::error::{Error, PushError, Result};
use super::layout::{VecLayout, WORD_BITS};
use crate::reservation::Reservation;
use crate::sync::{AccessLog, AtomicUsize, Ordering};

mod claim;
mod compare;
mod iter;
mod publish;
mod pusher;
mod ready;

/// Per-thread claim caches (module `local`), where the platform has thread-locals and 64-bit
/// atomics: the one place that depends on them.
#[cfg(all(feature = "std", target_has_atomic = "64"))]
mod local;

/// Without thread-locals or 64-bit atomics every push claims from the shared counter.
#[cfg(not(all(feature = "std", target_has_atomic = "64")))]
mod local {
    use super::ConcurrentVec;
    use crate::vec::error::Result;

    /// A vector's name in the claim caches: there are none to name it in.
    pub(super) type VecId = ();

    /// A new name (nothing).
    pub(super) fn new_id() -> VecId {}

    /// Never claims: the caller claims from the shared counter.
    #[inline]
    pub(super) fn claim<T>(_vec: &ConcurrentVec<T>) -> Option<Result<(usize, bool)>> {
        None
    }
}

#[cfg(loom)]
pub use claim::loom_refusals::refuse_commits;
pub(crate) use claim::{Block, MAX_BLOCK};
pub use iter::{Entries, IntoIter, Iter, IterMut};
pub use pusher::Pusher;
use ready::ReadyBits;

/// A marker that makes a type invariant in `T`.
type Invariant<T> = fn(T) -> T;

/// Keeps a value on a cache line of its own (128 bytes covers adjacent-line prefetching).
#[derive(Debug)]
#[repr(align(128))]
struct CachePadded<T>(T);

/// A vector that many threads push into at once, without a lock, growing in place inside a
/// reservation of its maximum capacity. Elements never move, so `&T` from [`get`](Self::get)
/// stays valid while other threads push.
///
/// - [`push`](Self::push) takes `&self`, is lock-free and returns the element's index, except where
///   it commits memory for the vector to grow: committing takes turns with the other calls that
///   change the reservation's pages (see [`Reservation::commit`]), so a push that grows the vector
///   may wait for one of them (another push's commit, or a `lock` or advice through
///   [`reservation`](Self::reservation)).
/// - [`get`](Self::get) returns an element only once it is completely written (*published*); a slot
///   being written, or left empty by a failed push, reads as `None`.
/// - [`len`](Self::len) counts claimed slots: every index below it was handed to a push (or is held
///   by a pushing thread, see below), whose element may still be being written. Pushes publish out
///   of order; nothing waits for a slower thread.
/// - A thread pushing alone claims one slot per push, so its elements get consecutive indices and
///   `len` counts exactly its pushes. A thread that sees another thread's claim between two of its
///   own claims [`thread_block`](Self::thread_block) slots at a time from then on (512 for large
///   vectors) and fills them alone, so that threads pushing at once share no cache line per push. A
///   thread goes back to single slots after eight blocks in a row during which nobody else claimed.
///   These blocks need the `std` feature (thread-locals) and 64-bit atomics: without either, every
///   plain push claims one slot whatever the other threads do, and the only slots held unfilled
///   (below) are a [`Pusher`]'s.
/// - Slots a thread holds and has not filled count in `len` and go to no other thread; they are
///   filled by that thread's next pushes into the vector. A thread holds slots of one vector at a
///   time, at most `thread_block - 1` (or a whole block whose commit the system refused, which its
///   next push into the vector commits). It gives them up when it exits, or after 64 pushes in a
///   row into other vectors (pushes that alternate between vectors keep the block), and the slots
///   it gave up stay empty for good: up to `thread_block - 1` each time. These gaps add up over the
///   blocks given up, but each such block comes after two single-slot pushes of its thread into the
///   vector (one when it took the vector up, one after another thread's claim) and the push that
///   claimed it filled its first slot. So at most `thread_block - 1` of every `thread_block + 2`
///   slots below `len` are empty this way, held or given up (511 of 514 with blocks of 512), not
///   counting the holes of failed pushes and what a [`Pusher`] leaves; two threads that take turns
///   and keep moving between vectors can leave 509 of every 512 empty, so a full vector may hold
///   far fewer elements than its capacity. [`Builder::thread_block`]`(1)` turns blocks off, and a
///   [`Pusher`] keeps its block for as long as it lives.
/// - [`iter`](Self::iter) yields the published elements in index order, skipping slots that are not
///   published.
/// - Each published element is dropped exactly once, when the vector is dropped or cleared.
///
/// Memory per element is the element itself plus one bit (a ready bit in a bitmap next to the
/// slots), both committed in whole pages as the vector grows: a [`Growth`](super::Growth) step
/// at a time (a [`Pusher`]'s block too, as it fills), or, for a thread's block of
/// [`thread_block`](Self::thread_block) slots, through the block's end where that reaches
/// further: so with large elements such a claim may commit up to that many elements' bytes at
/// once.
///
/// Equality, order, hashing and `Debug` have one rule: a vector counts as the sequence of its
/// published elements in index order, what [`iter`](Self::iter) yields. Holes, slots being
/// written, indices and [`len`](Self::len) take no part, so two vectors whose holes lie in
/// different places are equal, and a vector of `len` 3 whose slot 1 is a hole equals the
/// slice `[a, c]` of its two elements, not a slice of 3. The comparisons with slices, arrays,
/// `std::vec::Vec` and `Cow` (either side) follow it, as do `Ord` and `Hash` (equal vectors
/// hash alike). It differs from virtual-buffer 2.0's concurrent vector, where a hole compares
/// by position (equal only to a hole) and a vector with any hole equals no slice: here holes
/// also come from thread blocks and [`Pusher`]s, where they fall wherever the threads' timing
/// put them, and a rule by position would make equal pushes compare unequal. While other
/// threads push, a comparison sees the elements published when it reads each slot.
///
/// ```
/// use std::panic::{AssertUnwindSafe, catch_unwind};
///
/// use memvisor_vmem::vec::ConcurrentVec;
///
/// let v = ConcurrentVec::with_capacity(8)?;
/// v.push('a');
/// let _ = catch_unwind(AssertUnwindSafe(|| v.push_with(|_| -> char { panic!("hole") })));
/// v.push('c');
/// assert_eq!(v.len(), 3);
/// assert!(v == ['a', 'c']);
/// let w = ConcurrentVec::with_capacity(8)?;
/// w.push('a');
/// w.push('c');
/// assert!(v == w);
/// assert_eq!(format!("{v:?}"), "['a', 'c']");
/// # Ok::<(), memvisor_vmem::vec::Error>(())
/// ```
///
/// It is `Send` when `T: Send` and `Sync` when `T: Send + Sync` (a shared vector moves values
/// in from any thread and shares them with all).
///
/// It is invariant in `T` (unlike `std::vec::Vec`, which is covariant): pushes write through
/// `&self`, so a vector of `&'static U` must not be usable as a vector of shorter-lived
/// references (see the `compile_fail` examples on [`push`](Self::push)). Its elements must
/// outlive it, since dropping it drops them, and its iterators and [`Pusher`]s cannot
/// outlive it:
/// ```compile_fail
/// use memvisor_vmem::vec::ConcurrentVec;
///
/// struct Reads<'a>(&'a String);
/// impl Drop for Reads<'_> {
///     fn drop(&mut self) {
///         println!("{}", self.0);
///     }
/// }
///
/// let v = ConcurrentVec::with_capacity(1).unwrap();
/// let s = String::from("dropped before the vector");
/// v.push(Reads(&s));
/// ```
/// ```compile_fail
/// use memvisor_vmem::vec::ConcurrentVec;
///
/// let pusher = {
///     let v = ConcurrentVec::<u8>::with_capacity(1).unwrap();
///     v.pusher()
/// };
/// drop(pusher);
/// ```
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// use std::thread;
///
/// use memvisor_vmem::vec::ConcurrentVec;
///
/// let v = Arc::new(ConcurrentVec::with_capacity(1 << 12)?);
/// let handles: Vec<_> = (0..4u64)
///     .map(|t| {
///         let v = Arc::clone(&v);
///         thread::spawn(move || {
///             for i in 0..250 {
///                 let index = v.push(t * 250 + i);
///                 assert_eq!(v[index], t * 250 + i);
///             }
///         })
///     })
///     .collect();
/// for h in handles {
///     h.join().unwrap();
/// }
/// assert_eq!(v.len(), 1000);
/// let mut all: Vec<u64> = v.iter().copied().collect();
/// all.sort_unstable();
/// assert!(all.iter().copied().eq(0..1000));
/// # Ok::<(), memvisor_vmem::vec::Error>(())
/// ```
///
/// # Threads
/// `Send` when `T: Send`. `Sync` only when `T: Send + Sync`: threads sharing it both push
/// (moving their values into it, to be dropped by whichever thread drops the vector) and read
/// (sharing `&T`).
/// Not `Sync` with elements that must stay on their thread, though they could be shared:
/// ```compile_fail
/// fn sync<X: Sync>() {}
/// sync::<memvisor_vmem::vec::ConcurrentVec<std::sync::MutexGuard<'static, u8>>>();
/// ```
/// nor with elements that cannot be shared:
/// ```compile_fail
/// fn sync<X: Sync>() {}
/// sync::<memvisor_vmem::vec::ConcurrentVec<std::cell::Cell<u8>>>();
/// ```
/// Not `Send` with elements that must stay on their thread:
/// ```compile_fail
/// fn send<X: Send>() {}
/// send::<memvisor_vmem::vec::ConcurrentVec<std::sync::MutexGuard<'static, u8>>>();
/// ```
pub struct ConcurrentVec<T> {
    /// The next slot to hand out.
    next: CachePadded<AtomicUsize>,
    /// Slots whose memory is committed, all of them below this index.
    committed: CachePadded<AtomicUsize>,
    /// Every slot below this is published (a fast path for `get`; it may lag).
    prefix: CachePadded<AtomicUsize>,
    base: NonNull<T>,
    ready: ReadyBits,
    log: AccessLog,
    layout: VecLayout,
    growth: Growth,
    /// Slots a thread claims at a time once it sees other threads' claims (1: never blocks).
    thread_block: usize,
    /// This vector's name in the threads' claim caches; replaced when its claims are reset.
    id: local::VecId,
    builder: Builder,
    reservation: Reservation,
    /// Owns `T`s (for drop checking) and is invariant in `T`: `push` writes through `&self`,
    /// so a covariant vector would let a `&ConcurrentVec<&'long U>` be used as a
    /// `&ConcurrentVec<&'short U>` and store a reference that dies before the vector.
    _owns: PhantomData<(T, Invariant<T>)>,
}

// SAFETY: the vector owns its elements and its reservation; sending it sends the elements,
// which needs `T: Send`, as for `std::vec::Vec`. The threads' claim caches name the vector by
// an id, not by address, and a slot a thread holds in its cache stays that thread's to fill
// wherever the vector goes, so moving it leaves every index claimed once.
unsafe impl<T: Send> Send for ConcurrentVec<T> {}
// SAFETY: through `&self`, threads move values into the vector (`push`: a value made on one
// thread is then read and dropped by others, so `T: Send`) and share `&T` with each other
// (`get`, `iter`, so `T: Sync`); both are needed, as for a `Mutex<Vec<T>>` that is read as
// well as pushed into without the lock. All shared bookkeeping is atomic.
unsafe impl<T: Send + Sync> Sync for ConcurrentVec<T> {}

impl<T> ConcurrentVec<T> {
    /// Reserves a vector of at most `capacity` elements with the default options (see
    /// [`Builder`]). Nothing is committed until the first push.
    ///
    /// # Errors
    /// [`Error::TooLarge`] if `capacity` elements and their ready bits, each rounded up to
    /// whole pages, take more than `isize::MAX` bytes, or `capacity` exceeds `isize::MAX`;
    /// [`Error::Reserve`] if the system has no room for them.
    ///
    /// # Examples
    /// ```
    /// let v = memvisor_vmem::vec::ConcurrentVec::<u64>::with_capacity(1 << 16)?;
    /// assert_eq!(v.capacity(), 1 << 16);
    /// assert!(v.is_empty());
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    pub fn with_capacity(capacity: usize) -> Result<Self> {
        Builder::new(capacity).build_concurrent()
    }

    /// Options for a vector of at most `capacity` elements; shorthand for [`Builder::new`].
    #[must_use]
    pub fn builder(capacity: usize) -> Builder {
        Builder::new(capacity)
    }

    pub(crate) fn from_builder(builder: &Builder) -> Result<Self> {
        let (layout, growth) = builder.prepare::<T>(true)?;
        if isize::try_from(layout.capacity).is_err() {
            return Err(Error::TooLarge {
                capacity: layout.capacity,
                element_size: layout.elem_size,
            });
        }
        let reservation = layout.reserve(builder.mode_setting())?;
        let base = reservation.as_non_null();
        // SAFETY: `data_len` is inside the reservation (its bit region starts there).
        let bits_start = unsafe { base.add(layout.data_len) };
        // SAFETY: the bit region starts on a page boundary (so is aligned for `usize`) and holds
        // one word per `WORD_BITS` slots; the reservation lives in the same struct and is
        // dropped after every use; words are used only below `committed`, whose pages
        // `commit_slots` committed.
        let ready = unsafe { ReadyBits::new(bits_start, layout.capacity) };
        Ok(Self {
            next: CachePadded(AtomicUsize::new(0)),
            committed: CachePadded(AtomicUsize::new(0)),
            prefix: CachePadded(AtomicUsize::new(0)),
            base: base.cast(),
            ready,
            log: AccessLog::new(layout.capacity),
            layout,
            growth,
            thread_block: builder.thread_block_slots()?,
            id: local::new_id(),
            builder: *builder,
            reservation,
            _owns: PhantomData,
        })
    }

    /// The number of claimed slots, at most the capacity: every index below it was handed to
    /// a push. Elements of pushes still running, and slots of failed pushes, are not published
    /// (so [`get`](Self::get) may return `None` below `len`).
    #[must_use]
    pub fn len(&self) -> usize {
        self.next
            .0
            .load(Ordering::Acquire)
            .min(self.layout.capacity)
    }

    /// Whether no slot was claimed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The maximum number of elements, fixed at creation.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.layout.capacity
    }

    /// A count of leading slots that are all published: every index below it reads as an
    /// element. It moves on a ready-bit word (64 slots) at a time (the last, partial word at the
    /// capacity counts whole), so it may lag behind the published elements by part of a word,
    /// and it stops before the first hole for good. The call first moves the prefix that
    /// [`get`](Self::get) relies on over the words completed since.
    ///
    /// # Examples
    /// ```
    /// let v = memvisor_vmem::vec::ConcurrentVec::with_capacity(100)?;
    /// for i in 0..70 {
    ///     v.push(i);
    /// }
    /// assert_eq!(v.published_prefix(), 64);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    #[must_use]
    pub fn published_prefix(&self) -> usize {
        self.advance_prefix()
    }

    /// The first [`published_prefix`](Self::published_prefix) elements as one slice, in index
    /// order: every element in it is published, and it stays valid (its elements unchanged)
    /// while other threads push. Like the prefix, it grows a ready-bit word (64 slots) at a
    /// time and ends before the first hole for good; [`iter`](Self::iter) yields every
    /// published element.
    ///
    /// # Examples
    /// ```
    /// let v = memvisor_vmem::vec::ConcurrentVec::with_capacity(100)?;
    /// for i in 0..70 {
    ///     v.push(i);
    /// }
    /// assert_eq!(v.published_slice(), (0..64).collect::<Vec<_>>());
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    #[must_use]
    pub fn published_slice(&self) -> &[T] {
        let len = self.advance_prefix();
        #[cfg(loom)]
        for index in 0..len {
            self.log.read(index);
        }
        // SAFETY: every slot below the prefix is published, and `advance_prefix`'s acquire
        // operations synchronize with the publications, so the elements' writes are visible;
        // published elements are never written or dropped through `&self`, and `&mut self`
        // (clear, iter_mut, drop) waits for this borrow. The slots lie in the slot region,
        // which spans at most `isize::MAX` bytes.
        unsafe { slice::from_raw_parts(self.base.as_ptr(), len) }
    }

    /// How many slots have committed memory now.
    #[must_use]
    pub fn committed_capacity(&self) -> usize {
        self.committed.0.load(Ordering::Acquire)
    }

    /// The number of bytes committed in the vector's reservation (slots and ready bits).
    #[must_use]
    pub fn committed_bytes(&self) -> usize {
        self.reservation.committed_bytes()
    }

    /// The reservation holding the elements and their ready bits, for queries and hints. Its
    /// safe `&self` methods cannot change what the vector reads, and its unsafe ones that
    /// would discard, replace or protect memory refuse with
    /// [`Error::HeldByVector`](crate::Error::HeldByVector) (see
    /// [`Vec::reservation`](super::Vec::reservation)).
    #[must_use]
    pub fn reservation(&self) -> &Reservation {
        &self.reservation
    }

    /// The options the vector was made with.
    #[must_use]
    pub fn options(&self) -> Builder {
        self.builder
    }

    /// A pointer to slot `index` (`index < capacity`).
    #[inline]
    fn slot(&self, index: usize) -> *mut T {
        debug_assert!(index < self.layout.capacity);
        // SAFETY: `index < capacity`, and the reservation's slot region holds `capacity` slots.
        unsafe { self.base.as_ptr().add(index) }
    }

    /// The slots a thread claims at a time once other threads push too (see
    /// [`Builder::thread_block`]; plain pushes claim one slot at a time without the `std`
    /// feature or 64-bit atomics).
    #[must_use]
    pub fn thread_block(&self) -> usize {
        self.thread_block
    }

    /// A handle for pushing many elements from one thread: it claims slots in blocks, so that
    /// threads pushing through their own handles do not contend on a shared counter or share
    /// cache lines. See [`Pusher`](Pusher).
    ///
    /// # Examples
    /// ```
    /// let v = memvisor_vmem::vec::ConcurrentVec::with_capacity(1 << 12)?;
    /// std::thread::scope(|s| {
    ///     for t in 0..2u32 {
    ///         let v = &v;
    ///         s.spawn(move || {
    ///             let mut pusher = v.pusher();
    ///             for i in 0..100 {
    ///                 pusher.push(t * 100 + i);
    ///             }
    ///         });
    ///     }
    /// });
    /// assert_eq!(v.iter().count(), 200);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    pub fn pusher(&self) -> Pusher<'_, T> {
        Pusher::new(self)
    }

    /// Pushes `value` and returns its index, or hands it back.
    ///
    /// # Errors
    /// [`Error::CapacityExceeded`] if every slot was claimed (nothing changes then). Slots
    /// that other threads hold in their blocks count as claimed and are not taken from them
    /// (each thread fills its own block with plain stores, so taking slots from it would cost
    /// every push an atomic update): at capacity, up to `thread_block - 1` slots per other
    /// thread pushing into the vector, and up to 511 per live [`Pusher`] (255 where `usize`
    /// has 32 bits), or a whole block where the system refused the block's commit, may still
    /// be empty while this push is refused; their holders fill them with their next pushes,
    /// or leave them empty when they give the blocks up. [`Builder::thread_block`]`(1)` makes
    /// plain pushes fill the capacity exactly, but not while a [`Pusher`] holds a block.
    /// [`Error::Commit`] if the system refuses memory, in which case the slot this push
    /// claimed stays empty for good (a *hole*: never published, skipped by iteration, counted
    /// by [`len`](Self::len)). A thread that claims blocks keeps a block whose commit was
    /// refused, and its next push into the vector tries that commit again instead of claiming
    /// another block: retried pushes under memory pressure leave at most one block empty.
    /// Pushes into other vectors in between keep it, as they keep a block that still has
    /// slots; the block becomes holes only if the thread gives it up (after 64 pushes in a row
    /// into other vectors, or when the thread exits).
    ///
    /// # Examples
    /// ```
    /// let v = memvisor_vmem::vec::ConcurrentVec::with_capacity(1)?;
    /// assert_eq!(v.try_push("a").unwrap(), 0);
    /// assert_eq!(v.try_push("b").unwrap_err().into_value(), "b");
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    #[inline]
    pub fn try_push(&self, value: T) -> Result<usize, PushError<T>> {
        match self.claim() {
            Ok((index, exclusive)) => {
                // SAFETY: `claim` handed out `index` to this push only, committed it, and says
                // whether its block owns the ready word (blocks are used by one thread).
                unsafe { self.publish_claimed(index, value, exclusive) };
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
    /// ```
    /// let v = memvisor_vmem::vec::ConcurrentVec::with_capacity(8)?;
    /// let i = v.push(10);
    /// assert_eq!(v.get(i), Some(&10));
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    ///
    /// A vector of long-lived references does not take a shorter-lived one, which would
    /// dangle once its owner is gone while the vector can still hand it out:
    /// ```compile_fail
    /// use memvisor_vmem::vec::ConcurrentVec;
    ///
    /// fn store<'a>(v: &ConcurrentVec<&'a str>, s: &'a str) {
    ///     v.push(s);
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
    pub fn push(&self, value: T) -> usize {
        match self.try_push(value) {
            Ok(index) => index,
            Err(e) => failed("push", e.error()),
        }
    }

    /// Claims a slot, builds its element in place with `make(index)` and publishes it; returns
    /// the index.
    ///
    /// If `make` panics, the slot stays empty for good (never published, never dropped) and
    /// the vector stays sound.
    ///
    /// # Errors
    /// As [`try_push`](Self::try_push); `make` is not called then.
    ///
    /// # Examples
    /// ```
    /// let v = memvisor_vmem::vec::ConcurrentVec::with_capacity(8)?;
    /// let i = v.try_push_with(|index| format!("element {index}"))?;
    /// assert_eq!(v[i], "element 0");
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    ///
    /// The element built cannot borrow anything shorter-lived than the vector's element type:
    /// ```compile_fail
    /// use memvisor_vmem::vec::ConcurrentVec;
    ///
    /// fn store<'a>(v: &ConcurrentVec<&'a str>, s: &'a str) {
    ///     v.try_push_with(|_| s).unwrap();
    /// }
    /// let v: ConcurrentVec<&'static str> = ConcurrentVec::with_capacity(4).unwrap();
    /// {
    ///     let short = String::from("freed at the end of this block");
    ///     store(&v, &short);
    /// }
    /// println!("{}", v[0]);
    /// ```
    pub fn try_push_with<F: FnOnce(usize) -> T>(&self, make: F) -> Result<usize> {
        let (index, exclusive) = self.claim()?;
        let value = make(index);
        // SAFETY: as in `try_push`; the slot was claimed before `make` ran, so a panic in
        // `make` only leaves it unwritten.
        unsafe { self.publish_claimed(index, value, exclusive) };
        Ok(index)
    }

    /// As [`try_push_with`](Self::try_push_with), panicking where it returns an error.
    ///
    /// # Panics
    /// At capacity, or if the system refuses memory; and if `make` panics.
    #[track_caller]
    pub fn push_with<F: FnOnce(usize) -> T>(&self, make: F) -> usize {
        match self.try_push_with(make) {
            Ok(index) => index,
            Err(e) => failed("push_with", &e),
        }
    }

    /// The element at `index`, if it is published.
    ///
    /// # Examples
    /// ```
    /// let v = memvisor_vmem::vec::ConcurrentVec::with_capacity(8)?;
    /// v.push('x');
    /// assert_eq!(v.get(0), Some(&'x'));
    /// assert_eq!(v.get(1), None);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    #[inline]
    #[must_use]
    pub fn get(&self, index: usize) -> Option<&T> {
        if index < self.prefix.0.load(Ordering::Acquire) {
            self.log.read(index);
            // SAFETY: every slot below the prefix is published, and the prefix's acquire load
            // synchronizes with the publications (see `advance_prefix`); published elements are
            // never written again through `&self`.
            return Some(unsafe { &*self.slot(index) });
        }
        if index >= self.committed.0.load(Ordering::Acquire) {
            return None;
        }
        // SAFETY: `index < committed`, so its ready word is committed.
        if !unsafe { self.ready.is_set(index) } {
            return None;
        }
        self.log.read(index);
        // SAFETY: the bit is set (acquire), so the element's write happened before and it is
        // never written again through `&self`; it lives until `&mut self` or drop.
        Some(unsafe { &*self.slot(index) })
    }

    /// The element at `index`, without the check that it is published (the call
    /// virtual-buffer's concurrent vector names alike). Debug builds check it all the same
    /// (through [`get`](Self::get): acquire loads of the published prefix, of the committed
    /// count and of the slot's ready bit) and panic where it is not.
    ///
    /// # Safety
    /// The element at `index` is published, and its publication happened before this call.
    /// Both hold for an index that a push into this vector (plain, `push_with`, or a
    /// [`Pusher`]'s) returned on this thread, or on another thread that this thread
    /// synchronized with since (joined it, received the index through a channel or a mutex;
    /// not through a relaxed atomic, which orders nothing), and for one that
    /// [`get`](Self::get) returned `Some` for, or that [`entries`](Self::entries) yielded, on
    /// this thread (their loads acquire); in each case only while no [`clear`](Self::clear)
    /// has run since, which drops the elements.
    ///
    /// Neither holds for any other slot below [`len`](Self::len): a slot another thread has
    /// claimed and is still writing (its index seen only through `len`, or sent before its
    /// push returned), whose read races with that write, or a hole (a failed push's slot),
    /// which was never written; nor for a slot at or past `len` or the capacity. Calling this
    /// for such a slot is undefined behaviour, even where the value is not used. The debug
    /// check catches a slot that is not published, but not a missing synchronization: its
    /// acquire load supplies the one the caller should have had, so only release builds
    /// show that race.
    ///
    /// # Examples
    /// ```
    /// let v = memvisor_vmem::vec::ConcurrentVec::with_capacity(8)?;
    /// let index = v.push('x');
    /// // SAFETY: `index` came from a push on this thread, which published it.
    /// assert_eq!(unsafe { v.get_unchecked(index) }, &'x');
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    #[inline]
    #[must_use]
    pub unsafe fn get_unchecked(&self, index: usize) -> &T {
        debug_assert!(
            self.get(index).is_some(),
            "ConcurrentVec::get_unchecked of slot {index}, which is not published"
        );
        self.log.read(index);
        // SAFETY: the caller promises `index < capacity` and that the element's publication
        // (its write, then its ready bit's release) happened before this call, so its write is
        // visible; published elements are never written again through `&self` and live until
        // `&mut self` or drop.
        unsafe { &*self.slot(index) }
    }

    /// The element at `index`, mutably, without the check that it is published. Debug builds
    /// check it all the same and panic where it is not.
    ///
    /// # Safety
    /// The element at `index` is published: [`get_mut`](Self::get_mut) would return `Some`
    /// for it. `&mut self` means that no push runs at the same time and that every push that
    /// returned happened before this call, so an index that a push into this vector returned
    /// qualifies while no [`clear`](Self::clear) has run since. A hole (a failed push's slot)
    /// and a slot at or past [`len`](Self::len) or the capacity hold no element: calling this
    /// for them is undefined behaviour.
    ///
    /// # Examples
    /// ```
    /// let mut v = memvisor_vmem::vec::ConcurrentVec::with_capacity(8)?;
    /// let index = v.push(1);
    /// // SAFETY: `index` came from a push into `v`, not cleared since.
    /// unsafe { *v.get_unchecked_mut(index) += 1 };
    /// assert_eq!(v.get(index), Some(&2));
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    #[inline]
    #[must_use]
    pub unsafe fn get_unchecked_mut(&mut self, index: usize) -> &mut T {
        debug_assert!(
            self.get(index).is_some(),
            "ConcurrentVec::get_unchecked_mut of slot {index}, which is not published"
        );
        // SAFETY: the caller promises the element is published; `&mut self` excludes every
        // other access.
        unsafe { &mut *self.slot(index) }
    }

    /// The element at `index`, if it is published, mutably.
    #[must_use]
    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.get(index)?;
        // SAFETY: published (checked above) and `&mut self` excludes every other access.
        Some(unsafe { &mut *self.slot(index) })
    }

    /// Every published slot is below this, and every ready word below it is committed.
    fn scan_limit(&self) -> usize {
        self.len().min(self.committed.0.load(Ordering::Acquire))
    }

    /// The first published slot in `from..limit` (`limit <= scan_limit()`).
    fn next_ready(&self, from: usize, limit: usize) -> Option<usize> {
        let mut word = from / WORD_BITS;
        while word * WORD_BITS < limit {
            // SAFETY: the word holds slots below `limit <= committed`, so it is committed.
            let bits = unsafe { self.ready.ready_in(word, from, limit) };
            if bits != 0 {
                return Some(word * WORD_BITS + bits.trailing_zeros() as usize);
            }
            word += 1;
        }
        None
    }

    /// Drops every published element at or after `from`, clearing its bit first; a panicking
    /// destructor does not stop the rest.
    fn drop_from(&mut self, from: usize) {
        /// Drops the rest if a destructor unwinds.
        struct Rest<'a, T> {
            vec: &'a mut ConcurrentVec<T>,
            from: usize,
        }
        impl<T> Drop for Rest<'_, T> {
            fn drop(&mut self) {
                self.vec.drop_from(self.from);
            }
        }

        let limit = self.scan_limit();
        let mut from = from;
        while let Some(index) = self.next_ready(from, limit) {
            // SAFETY: `index < committed`.
            unsafe { self.ready.clear(index) };
            self.log.write(index);
            let slot = self.slot(index);
            let rest = Rest {
                vec: self,
                from: index + 1,
            };
            // SAFETY: the slot held a published element, now unpublished and dropped once;
            // `&mut self` excludes every other access.
            unsafe { slot.drop_in_place() };
            mem::forget(rest);
            from = index + 1;
        }
    }

    /// Drops every element and forgets every claim, so that indices start at 0 again. Memory
    /// stays committed for reuse. If a destructor panics, the others are still dropped.
    ///
    /// # Examples
    /// ```
    /// let mut v = memvisor_vmem::vec::ConcurrentVec::with_capacity(8)?;
    /// v.push(1);
    /// v.clear();
    /// assert!(v.is_empty());
    /// assert_eq!(v.push(2), 0);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    pub fn clear(&mut self) {
        /// Forgets the claims, also on unwind.
        struct Reset<'a, T>(&'a mut ConcurrentVec<T>);
        impl<T> Drop for Reset<'_, T> {
            fn drop(&mut self) {
                self.0.next.0.store(0, Ordering::Relaxed);
                self.0.prefix.0.store(0, Ordering::Relaxed);
                // Blocks threads still hold name slots that will be handed out again.
                self.0.id = local::new_id();
            }
        }
        let reset = Reset(self);
        reset.0.drop_from(0);
    }

    /// A vector with the same options holding clones of the published elements at the same
    /// indices (holes stay holes), among the slots claimed when it starts: elements other
    /// threads push meanwhile are not copied, and the copy's own pushes continue from the
    /// length it started at.
    ///
    /// # Errors
    /// As [`Builder::build_concurrent`]; [`Error::Commit`] if the memory cannot be committed.
    pub fn try_clone(&self) -> Result<Self>
    where
        T: Clone,
    {
        let copy = self.builder.build_concurrent::<T>()?;
        let len = self.len();
        if len > 0 {
            copy.commit_through(len - 1)?;
        }
        copy.next.0.store(len, Ordering::Relaxed);
        // Only below `len`: elements other threads publish meanwhile lie past it, past what
        // the copy committed and at indices its own pushes will claim.
        for (index, value) in self.entries_below(len) {
            // SAFETY: `index < len`, committed above, and only this loop writes `copy`.
            unsafe { copy.publish_claimed(index, value.clone(), false) };
        }
        Ok(copy)
    }

    /// Takes published element `index` out, unpublishing it.
    ///
    /// # Safety
    /// Slot `index` is published and below `committed`; the caller has `&mut self`-like
    /// exclusive access.
    unsafe fn take(&self, index: usize) -> T {
        // SAFETY: the caller's promise.
        unsafe { self.ready.clear(index) };
        self.log.write(index);
        // SAFETY: the element was published and is now unpublished, so it is read out once.
        unsafe { self.slot(index).read() }
    }
}

/// Panics with the operation and the reason.
#[cold]
#[track_caller]
fn failed(operation: &str, error: &Error) -> ! {
    panic!("memvisor_vmem::vec::ConcurrentVec::{operation}: {error}")
}

impl<T> Drop for ConcurrentVec<T> {
    fn drop(&mut self) {
        self.drop_from(0);
    }
}

impl<T> Index<usize> for ConcurrentVec<T> {
    type Output = T;

    /// # Panics
    /// If the element at `index` is not published.
    #[track_caller]
    fn index(&self, index: usize) -> &T {
        match self.get(index) {
            Some(value) => value,
            None => panic!(
                "index {index} is not a published element (len {})",
                self.len()
            ),
        }
    }
}

/// The published elements in index order, as a list (holes skipped: see
/// [`ConcurrentVec`]'s rule for comparing).
impl<T: fmt::Debug> fmt::Debug for ConcurrentVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Clone> Clone for ConcurrentVec<T> {
    /// # Panics
    /// If the new reservation or its memory cannot be had (see [`ConcurrentVec::try_clone`]).
    #[track_caller]
    fn clone(&self) -> Self {
        match self.try_clone() {
            Ok(copy) => copy,
            Err(e) => failed("clone", &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vec_u64(capacity: usize, growth: Growth) -> ConcurrentVec<u64> {
        Builder::new(capacity)
            .growth(growth)
            .build_concurrent()
            .unwrap()
    }

    #[test]
    fn target_covers_index_and_whole_pages() {
        let page = crate::page_size();
        let v = vec_u64(1 << 20, Growth::Fixed(page));
        // One page of u64 slots from zero, as many as its ready bits allow.
        assert_eq!(v.target(0, 0), page / 8);
        // An index far ahead is covered even past one step.
        assert!(v.target(0, 10_000) > 10_000);
        // Never past the capacity.
        let small = vec_u64(10, Growth::Fixed(page));
        assert_eq!(small.target(0, 3), 10);
    }

    #[test]
    fn full_mask_last_word_covers_capacity_only() {
        let v = vec_u64(WORD_BITS + 6, Growth::default());
        assert_eq!(v.full_mask(0), usize::MAX);
        assert_eq!(v.full_mask(1), 0b11_1111);
    }

    #[test]
    fn claim_past_capacity_gives_increment_back() {
        let v = vec_u64(2, Growth::default());
        assert_eq!(v.claim_one().unwrap(), 0);
        assert_eq!(v.claim_one().unwrap(), 1);
        assert!(v.claim_one().is_err());
        assert!(v.claim_one().is_err());
        assert_eq!(v.next.0.load(Ordering::Relaxed), 2);
    }

    fn block(start: usize, end: usize, owned_start: usize, owned_end: usize) -> Block {
        Block {
            start,
            end,
            owned_start,
            owned_end,
        }
    }

    #[test]
    fn claim_block_aligns_to_its_length_and_owns_whole_words() {
        // In slots: a block's longest length (512 where `usize` has 64 bits, 256 where 32) and
        // a bitmap word (64 or 32).
        let (m, w) = (MAX_BLOCK, WORD_BITS);
        let cap = 4 * m - 48;
        let v = vec_u64(cap, Growth::default());
        for i in 0..3 {
            assert_eq!(v.claim_one().unwrap(), i);
        }
        let claim = |len| {
            let block = v.claim_block(len).unwrap();
            v.commit_block(&block).unwrap();
            block
        };
        // Up to the next multiple of the longest length; the partial first word is shared.
        assert_eq!(claim(m), block(3, m, w, m));
        assert_eq!(claim(m), block(m, 2 * m, m, 2 * m));
        assert_eq!(claim(w), block(2 * m, 2 * m + w, 2 * m, 2 * m + w));
        assert_eq!(claim(m), block(2 * m + w, 3 * m, 2 * m + w, 3 * m));
        // At the capacity the last, partial word has no slot outside the block.
        assert_eq!(claim(m), block(3 * m, cap, 3 * m, cap));
        assert!(matches!(
            v.claim_block(m),
            Err(Error::CapacityExceeded { capacity, .. }) if capacity == cap
        ));
        assert_eq!(v.next.0.load(Ordering::Relaxed), cap);
        assert!(v.committed_capacity() >= cap);
    }

    #[test]
    fn claim_block_of_odd_length_takes_that_many_and_owns_no_shared_word() {
        // 200 slots, blocks of 100 where a word has 64 bits; 104 and 52 where it has 32.
        let w = WORD_BITS;
        let (cap, len) = (3 * w + 8, w + w / 2 + 4);
        let v = vec_u64(cap, Growth::default());
        assert_eq!(v.claim_block(3).unwrap(), block(0, 3, 3, 3));
        let end = 3 + len;
        assert_eq!(v.claim_block(len).unwrap(), block(3, end, end, end));
        assert_eq!(v.claim_block(len).unwrap(), block(end, cap, 2 * w, cap));
    }

    #[test]
    fn commit_through_raises_committed_past_index() {
        let v = vec_u64(100_000, Growth::Fixed(1));
        v.commit_through(5_000).unwrap();
        assert!(v.committed_capacity() > 5_000);
        assert!(
            v.reservation
                .is_committed(0, v.layout.data_end(5_001))
                .unwrap()
        );
    }
}
