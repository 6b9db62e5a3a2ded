//! [`Table`]: slots addressed by generation-checked handles, never freed.
//!
//! A handle is a 64-bit value: the slot's index in the low 31 bits, the table's kind in bit 31
//! and the slot's generation in the high 32. The kind keeps the tables apart: a handle of one
//! table is refused by every other, even where index and generation match a live slot there.
//! A live slot has an odd generation; deleting bumps it to even, and reusing it bumps it to odd
//! again, so a handle of a deleted slot never matches. Slots live in segments
//! that are allocated on demand and never freed (until the process ends), so looking a handle up
//! reads only memory that stays valid: a stale or forged handle is refused, never followed.
//! A slot whose generation would wrap is retired rather than reused.

use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

/// Slots of segment 0; segment `k` holds `BASE << k`.
const BASE_SHIFT: u32 = 6;
/// Segments: enough for every index below [`KIND_BIT`] (the last one holds `2^31` slots, so
/// its length fits a 32-bit `usize`).
const SEGMENTS: usize = 31 - BASE_SHIFT as usize + 1;
/// The last generation a slot may be given; one more use would wrap.
pub(crate) const LAST_GENERATION: u32 = u32::MAX - 2;

/// One slot: its generation and a value of type `T`.
#[derive(Debug)]
pub(crate) struct Slot<T> {
    generation: AtomicU32,
    value: T,
}

impl<T> Slot<T> {
    /// The slot's value.
    pub(crate) fn value(&self) -> &T {
        &self.value
    }

    /// Gives a live slot the live generation `generation`, as if it had been used that many
    /// times (tests only: the slot's value must then be made to agree).
    #[cfg(test)]
    pub(crate) fn set_generation(&self, generation: u32) {
        assert_eq!(generation & 1, 1, "a live generation is odd");
        self.generation.store(generation, Ordering::Release);
    }
}

/// The bit of a handle's low half that holds its table's kind.
const KIND_BIT: u32 = 1 << 31;

/// Which table a handle belongs to (bit 31 of its low half).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Contexts.
    Context,
    /// Clients.
    Client,
}

impl Kind {
    /// The kind's bit pattern in a handle's low half.
    const fn bits(self) -> u32 {
        match self {
            Self::Context => 0,
            Self::Client => KIND_BIT,
        }
    }
}

/// A handle's low half (kind and index) and generation (high half).
#[inline]
#[allow(
    clippy::cast_possible_truncation,
    reason = "each half is exactly 32 bits"
)]
fn split(handle: u64) -> (u32, u32) {
    (handle as u32, (handle >> 32) as u32)
}

/// Where a slot is: its segment and index in it.
#[inline]
fn locate(index: u32) -> (usize, usize) {
    let biased = u64::from(index) + (1 << BASE_SHIFT);
    let segment = 63 - biased.leading_zeros() - BASE_SHIFT;
    let start = (1u64 << (segment + BASE_SHIFT)) - (1 << BASE_SHIFT);
    // The subtraction stays below the segment's length, which is at most 2^32.
    (
        segment as usize,
        usize::try_from(u64::from(index) - start).unwrap_or(usize::MAX),
    )
}

/// The length of segment `segment`.
fn segment_len(segment: usize) -> usize {
    1usize << (segment + BASE_SHIFT as usize)
}

/// What the table's lock guards: the slots to reuse and the next never-used index.
#[derive(Debug)]
struct Free {
    reuse: Vec<u32>,
    next: u64,
}

/// An index taken from the free list, put back when dropped: [`Table::take`] forgets it once
/// `init` has filled the slot, before it makes the slot live (nothing between the two can
/// fail or panic), so only a failed or unwinding `init` drops it. Never allocates: `take`
/// made room on the list for every index handed out.
struct GiveBack<'a> {
    free: &'a mut Free,
    index: u32,
}

impl Drop for GiveBack<'_> {
    fn drop(&mut self) {
        self.free.reuse.push(self.index);
    }
}

/// Slots of `T` addressed by generation-checked handles of one [`Kind`]. Taking and giving back
/// a slot take a lock; looking a handle up does not.
#[derive(Debug)]
pub(crate) struct Table<T: 'static> {
    kind: Kind,
    segments: [AtomicPtr<Slot<T>>; SEGMENTS],
    free: Mutex<Free>,
}

impl<T: Default + 'static> Table<T> {
    /// An empty table whose handles are of `kind` (usable in a `static`).
    pub(crate) const fn new(kind: Kind) -> Self {
        Self {
            kind,
            segments: [const { AtomicPtr::new(std::ptr::null_mut()) }; SEGMENTS],
            free: Mutex::new(Free {
                reuse: Vec::new(),
                next: 0,
            }),
        }
    }

    /// A table every index of which is handed out: [`take`](Self::take) fails with `full`
    /// at once.
    #[cfg(test)]
    pub(crate) fn exhausted(kind: Kind) -> Self {
        let table = Self::new(kind);
        table
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next = KIND_BIT.into();
        table
    }

    /// The slot of `handle` if it is live with that generation.
    ///
    /// The answer is only as current as the caller's knowledge: a slot may be given back on
    /// another thread right after this returns (callers make that a contract breach, or keep
    /// the slot alive by other means).
    #[inline]
    pub(crate) fn get(&self, handle: u64) -> Option<&'static Slot<T>> {
        let (index, generation) = self.split(handle)?;
        let (segment, offset) = locate(index);
        let base = self.segments.get(segment)?.load(Ordering::Acquire);
        if base.is_null() || offset >= segment_len(segment) {
            return None;
        }
        // SAFETY: a non-null segment pointer points to `segment_len(segment)` initialised slots
        // that are never freed (see `take`), and `offset` is below that length.
        let slot = unsafe { &*base.add(offset) };
        (generation & 1 == 1 && slot.generation.load(Ordering::Acquire) == generation)
            .then_some(slot)
    }

    /// A handle's index and generation, if it is of this table's kind.
    #[inline]
    fn split(&self, handle: u64) -> Option<(u32, u32)> {
        let (low, generation) = split(handle);
        (low & KIND_BIT == self.kind.bits()).then_some((low & !KIND_BIT, generation))
    }

    /// Takes a free slot, lets `init` fill its value (given the handle it will have), and makes
    /// it live; returns the handle. Nothing is taken if `init` fails or panics (the slot goes
    /// back to the free list, its generation still even; the next `init` of it overwrites
    /// whatever the failed one wrote).
    ///
    /// # Errors
    /// `full` if every index (2^31 of them) is in use; `refused` if the allocator refuses the
    /// memory for a new segment or for the free list; `init`'s error.
    pub(crate) fn take<E>(
        &self,
        full: E,
        refused: E,
        init: impl FnOnce(&'static Slot<T>, u64) -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut free = self
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let index = match free.reuse.pop() {
            Some(index) => index,
            None => {
                let index = match u32::try_from(free.next) {
                    Ok(index) if index < KIND_BIT => index,
                    _ => return Err(full),
                };
                // Room on the (now empty) free list for every index handed out, so that giving
                // one back (`recycle`) never allocates.
                let handed_out = usize::try_from(free.next + 1).unwrap_or(usize::MAX);
                if free.reuse.try_reserve(handed_out).is_err() {
                    return Err(refused);
                }
                let (segment, offset) = locate(index);
                if offset == 0 {
                    let len = segment_len(segment);
                    let mut slots = Vec::new();
                    if slots.try_reserve_exact(len).is_err() {
                        return Err(refused);
                    }
                    slots.extend((0..len).map(|_| Slot {
                        generation: AtomicU32::new(0),
                        value: T::default(),
                    }));
                    // Leaked on purpose: handles may name these slots until the process ends.
                    let base = Box::leak(slots.into_boxed_slice()).as_mut_ptr();
                    self.segments[segment].store(base, Ordering::Release);
                }
                free.next += 1;
                index
            }
        };
        let (segment, offset) = locate(index);
        let base = self.segments[segment].load(Ordering::Acquire);
        // SAFETY: `index` was handed out by this table, so its segment exists (made above or
        // when the index was first used) and `offset` is inside it; segments are never freed.
        let slot: &'static Slot<T> = unsafe { &*base.add(offset) };
        // A free slot's generation is even and below `LAST_GENERATION` (see `recycle`).
        let generation = slot.generation.load(Ordering::Relaxed) + 1;
        let handle = u64::from(generation) << 32 | u64::from(index | self.kind.bits());
        // Gives the index back if `init` fails or unwinds, so a panic in it loses no slot.
        let back = GiveBack {
            free: &mut free,
            index,
        };
        init(slot, handle)?;
        std::mem::forget(back);
        slot.generation.store(generation, Ordering::Release);
        Ok(handle)
    }

    /// Makes the slot of `handle` free (if it is live with that generation) and returns it, so
    /// the caller can clear its value; the caller then passes it to [`recycle`](Self::recycle).
    /// From this call on, [`get`](Self::get) refuses the handle.
    pub(crate) fn retire(&self, handle: u64) -> Option<&'static Slot<T>> {
        let slot = self.get(handle)?;
        let (_, generation) = self.split(handle)?;
        // `get` found it live: its generation is at most `LAST_GENERATION`, so `+ 1` fits.
        slot.generation
            .compare_exchange(
                generation,
                generation + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .ok()
            .map(|_| slot)
    }

    /// Puts a slot given by [`retire`](Self::retire) back on the free list, once its value is
    /// cleared. A slot whose generation would wrap is kept out of use for good. Never
    /// allocates: [`take`](Self::take) made room for every index it handed out.
    pub(crate) fn recycle(&self, handle: u64) {
        let Some((index, generation)) = self.split(handle) else {
            return;
        };
        if generation < LAST_GENERATION {
            self.free
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .reuse
                .push(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn locate_segment_boundaries_map_contiguously() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(63), (0, 63));
        assert_eq!(locate(64), (1, 0));
        assert_eq!(locate(191), (1, 127));
        assert_eq!(locate(192), (2, 0));
        // The largest index a handle carries, in the last segment, on 32-bit targets too.
        let (segment, offset) = locate(KIND_BIT - 1);
        assert_eq!(segment, SEGMENTS - 1);
        assert!(offset < segment_len(segment));
    }

    #[test]
    fn get_after_retire_refuses_stale_handle() {
        static TABLE: Table<AtomicUsize> = Table::new(Kind::Context);
        let h = TABLE
            .take((), (), |slot, _| {
                slot.value().store(7, Ordering::Relaxed);
                Ok(())
            })
            .unwrap();
        assert_eq!(TABLE.get(h).unwrap().value().load(Ordering::Relaxed), 7);
        assert!(TABLE.retire(h).is_some());
        assert!(TABLE.get(h).is_none());
        assert!(TABLE.retire(h).is_none());
        TABLE.recycle(h);
        let again = TABLE.take((), (), |_, _| Ok(())).unwrap();
        assert_eq!(again & u64::from(u32::MAX), h & u64::from(u32::MAX));
        assert_ne!(again, h);
        assert!(TABLE.get(h).is_none());
        assert!(TABLE.get(again).is_some());
    }

    #[test]
    fn get_forged_handle_refused() {
        static TABLE: Table<AtomicUsize> = Table::new(Kind::Context);
        let h = TABLE.take((), (), |_, _| Ok(())).unwrap();
        assert!(TABLE.get(0).is_none());
        assert!(TABLE.get(h + 1).is_none());
        assert!(TABLE.get(h ^ (2 << 32)).is_none());
        assert!(TABLE.get(u64::MAX).is_none());
        assert!(TABLE.get(u64::from(u32::MAX) | 1 << 32).is_none());
    }

    #[test]
    fn get_handle_of_other_kind_refused() {
        static CONTEXTS: Table<AtomicUsize> = Table::new(Kind::Context);
        static CLIENTS: Table<AtomicUsize> = Table::new(Kind::Client);
        let context = CONTEXTS.take((), (), |_, _| Ok(())).unwrap();
        let client = CLIENTS.take((), (), |_, _| Ok(())).unwrap();
        // Same index and generation in both tables; only the kind tells them apart.
        assert_eq!(
            context & u64::from(!KIND_BIT),
            client & u64::from(!KIND_BIT)
        );
        assert!(CONTEXTS.get(context).is_some());
        assert!(CLIENTS.get(client).is_some());
        assert!(CLIENTS.get(context).is_none());
        assert!(CONTEXTS.get(client).is_none());
        assert!(CLIENTS.retire(context).is_none());
        CLIENTS.recycle(context);
        assert!(CONTEXTS.get(context).is_some());
        assert!(CLIENTS.retire(client).is_some());
        CLIENTS.recycle(client);
        assert_eq!(CLIENTS.take((), (), |_, _| Ok(())).unwrap() >> 32, 3);
    }

    #[test]
    fn take_failed_init_keeps_slot_free() {
        static TABLE: Table<AtomicUsize> = Table::new(Kind::Context);
        assert_eq!(TABLE.take(1, 3, |_, _| Err(2)), Err(2));
        let h = TABLE.take((), (), |_, _| Ok(())).unwrap();
        assert_eq!(h & u64::from(u32::MAX), 0);
    }

    /// A panic inside `init` gives the slot back, as a failed `init` does: the next take gets
    /// the same index (a fresh one and a reused one alike), and no slot is lost for the
    /// process's life.
    #[test]
    fn take_whose_init_panics_gives_the_slot_back() {
        static TABLE: Table<AtomicUsize> = Table::new(Kind::Context);
        let index = |h: u64| h & u64::from(u32::MAX);
        let panics = || {
            std::panic::catch_unwind(|| {
                TABLE.take((), (), |_, _| -> Result<(), ()> { panic!("init panics") })
            })
            .is_err()
        };
        // A never-used index.
        assert!(panics());
        let first = TABLE.take((), (), |_, _| Ok(())).unwrap();
        assert_eq!(index(first), 0);
        assert!(TABLE.retire(first).is_some());
        TABLE.recycle(first);
        // A reused one, whose generation is left as the retire made it.
        assert!(panics());
        let again = TABLE.take((), (), |_, _| Ok(())).unwrap();
        assert_eq!(index(again), 0);
        assert_eq!(again >> 32, 3);
        assert!(TABLE.get(first).is_none());
        // Nothing else was taken: the next index is 1.
        assert_eq!(index(TABLE.take((), (), |_, _| Ok(())).unwrap()), 1);
    }

    /// A slot driven to the last generations: it is reused up to [`LAST_GENERATION`] and then
    /// retired for good, so its generation never wraps and no stale handle of it (of the
    /// first generations, or of the last) ever addresses a newer value.
    #[test]
    fn slot_at_the_last_generation_is_retired_never_wrapped() {
        static TABLE: Table<AtomicUsize> = Table::new(Kind::Client);
        let first = TABLE.take((), (), |_, _| Ok(())).unwrap();
        let slot = TABLE.retire(first).unwrap();
        // As if the slot had been used 2^31 - 3 times: free, at the even generation before
        // the last two uses.
        slot.generation
            .store(LAST_GENERATION - 3, Ordering::Relaxed);
        TABLE.recycle(first);
        let index = |h: u64| h & u64::from(u32::MAX);
        let mut stale = vec![first];
        for expected in [LAST_GENERATION - 2, LAST_GENERATION] {
            let h = TABLE.take((), (), |_, _| Ok(())).unwrap();
            assert_eq!(index(h), index(first));
            assert_eq!(h >> 32, u64::from(expected));
            assert!(TABLE.get(h).is_some());
            for &old in &stale {
                assert!(TABLE.get(old).is_none(), "{old:#x} addresses {h:#x}");
                assert!(TABLE.retire(old).is_none());
            }
            assert!(TABLE.retire(h).is_some());
            TABLE.recycle(h);
            stale.push(h);
        }
        // The slot is out of use for good: every later take gets another index, and no
        // handle of it matches, whatever its generation (the ones past the last included).
        assert_eq!(slot.generation.load(Ordering::Relaxed), LAST_GENERATION + 1);
        for _ in 0..200 {
            let h = TABLE.take((), (), |_, _| Ok(())).unwrap();
            assert_ne!(index(h), index(first));
        }
        for generation in [1, 3, LAST_GENERATION, LAST_GENERATION + 1, u32::MAX] {
            let forged = u64::from(generation) << 32 | index(first);
            assert!(TABLE.get(forged).is_none(), "generation {generation}");
            assert!(TABLE.retire(forged).is_none());
        }
    }

    #[test]
    fn take_many_crosses_segments() {
        static TABLE: Table<AtomicUsize> = Table::new(Kind::Context);
        let handles: Vec<u64> = (0..300)
            .map(|_| TABLE.take((), (), |_, _| Ok(())).unwrap())
            .collect();
        for &h in &handles {
            assert!(TABLE.get(h).is_some());
        }
    }
}
