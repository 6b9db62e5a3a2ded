//! The arena's free chunks: a bitmap of atomic words (bit set = free), from which clients take
//! single chunks or runs of contiguous chunks and to which they give them back, lock-free.

use alloc::boxed::Box;

use crate::sync::{AtomicU64, AtomicUsize, Ordering};
use crate::table;

/// No chunk: the end of a chain.
pub(crate) const NIL: u32 = u32::MAX;

/// The bits of word `w` that chunks `first..first + count` cover.
fn span(w: usize, first: usize, count: usize) -> u64 {
    let lo = first.max(w * 64);
    let hi = (first + count).min(w * 64 + 64);
    if lo >= hi {
        return 0;
    }
    let bits = hi - lo;
    let ones = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    ones << (lo - w * 64)
}

/// The free chunks. A chunk is taken by clearing its bit (an `Acquire` read-modify-write) and
/// given back by setting it (`Release`), so everything its last holder did is visible to the
/// next.
#[derive(Debug)]
pub(crate) struct ChunkSet {
    words: Box<[AtomicU64]>,
    count: usize,
    len: AtomicUsize,
}

impl ChunkSet {
    /// A set holding chunks `0..count`; `None` if the allocator refuses its words.
    pub(crate) fn new(count: u32) -> Option<Self> {
        let count = count as usize;
        Some(Self {
            words: table::filled(count.div_ceil(64), |w| AtomicU64::new(span(w, 0, count)))?,
            count,
            len: AtomicUsize::new(count),
        })
    }

    /// Takes the lowest free chunk. A scan that finds none while the count says some are
    /// free (given back behind the scan) looks again.
    pub(crate) fn pop(&self) -> Option<u32> {
        loop {
            for (w, word) in self.words.iter().enumerate() {
                let mut v = word.load(Ordering::Relaxed);
                while v != 0 {
                    let bit = v & v.wrapping_neg();
                    match word.compare_exchange_weak(
                        v,
                        v & !bit,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => {
                            self.len.fetch_sub(1, Ordering::Relaxed);
                            let chunk = w * 64 + bit.trailing_zeros() as usize;
                            return u32::try_from(chunk).ok();
                        }
                        Err(now) => v = now,
                    }
                }
            }
            if self.len.load(Ordering::Relaxed) == 0 {
                return None;
            }
            #[cfg(loom)]
            loom::thread::yield_now();
        }
    }

    /// Takes `n` (at least 1) contiguous free chunks, the lowest such run found; returns the
    /// first. Claims them word by word; if a word's part was taken meanwhile, gives back what
    /// it claimed and looks further.
    pub(crate) fn pop_run(&self, n: usize) -> Option<u32> {
        if n == 0 || n > self.count {
            return None;
        }
        let mut first = 0;
        while first + n <= self.count {
            // Where the run starting at `first` breaks (its first taken chunk), if it does.
            let broken = (first..first + n)
                .find(|&c| self.words[c / 64].load(Ordering::Relaxed) & (1 << (c % 64)) == 0);
            if let Some(c) = broken {
                first = c + 1;
                continue;
            }
            if self.claim(first, n) {
                self.len.fetch_sub(n, Ordering::Relaxed);
                return u32::try_from(first).ok();
            }
            first += 1;
        }
        None
    }

    /// The first chunk of the lowest run of `n` (at least 1) contiguous chunks that includes
    /// chunk `held` (held by the caller) and whose other chunks are free, in a snapshot: the
    /// run [`pop_run_at`](Self::pop_run_at) can take once `held` is given back. Changes
    /// nothing.
    pub(crate) fn run_around(&self, n: usize, held: usize) -> Option<usize> {
        if n == 0 || n > self.count || held >= self.count {
            return None;
        }
        let free = |c: usize| {
            c == held || self.words[c / 64].load(Ordering::Relaxed) & (1 << (c % 64)) != 0
        };
        // Runs through `held` start at most `n - 1` chunks before it and end inside the set.
        let mut first = (held + 1).saturating_sub(n);
        let last = held.min(self.count - n);
        while first <= last {
            match (first..first + n).find(|&c| !free(c)) {
                Some(c) => first = c + 1,
                None => return Some(first),
            }
        }
        None
    }

    /// Takes chunks `first..first + n` if all are free (all or none); whether it did.
    pub(crate) fn pop_run_at(&self, first: usize, n: usize) -> bool {
        if n == 0 || first.checked_add(n).is_none_or(|end| end > self.count) {
            return false;
        }
        if self.claim(first, n) {
            self.len.fetch_sub(n, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Clears the bits of chunks `first..first + n`, all or none: false if one was not set.
    fn claim(&self, first: usize, n: usize) -> bool {
        let (lo, hi) = (first / 64, (first + n - 1) / 64);
        for w in lo..=hi {
            let mask = span(w, first, n);
            let word = &self.words[w];
            let mut v = word.load(Ordering::Relaxed);
            loop {
                if v & mask != mask {
                    for back in lo..w {
                        self.words[back].fetch_or(span(back, first, n), Ordering::Release);
                    }
                    return false;
                }
                match word.compare_exchange_weak(v, v & !mask, Ordering::Acquire, Ordering::Relaxed)
                {
                    Ok(_) => break,
                    Err(now) => v = now,
                }
            }
        }
        true
    }

    /// Gives chunk `chunk`, held by the caller, back. The `Release` publishes everything the
    /// caller did to it.
    pub(crate) fn push(&self, chunk: u32) {
        let c = chunk as usize;
        self.words[c / 64].fetch_or(1 << (c % 64), Ordering::Release);
        self.len.fetch_add(1, Ordering::Relaxed);
    }

    /// How many chunks are free (exact when no hand-out is in flight).
    /// The length of the longest run of free chunks (a snapshot: chunks taken or given back
    /// meanwhile may or may not count).
    pub(crate) fn longest_run(&self) -> usize {
        let (mut best, mut run) = (0, 0);
        for (w, word) in self.words.iter().enumerate() {
            let bits = word.load(Ordering::Relaxed);
            let valid = (self.count - w * 64).min(64);
            let mut i = 0;
            while i < valid {
                let ones = ((bits >> i).trailing_ones() as usize).min(valid - i);
                run += ones;
                best = best.max(run);
                i += ones;
                if i < valid {
                    // Bit `i` is clear: the run breaks; skip to the next set bit.
                    run = 0;
                    i += ((bits >> i).trailing_zeros() as usize).min(valid - i);
                }
            }
        }
        best
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use alloc::vec::Vec;

    use super::*;

    #[test]
    fn pop_all_then_none() {
        let set = ChunkSet::new(3).unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(set.pop(), Some(0));
        assert_eq!(set.pop(), Some(1));
        assert_eq!(set.pop(), Some(2));
        assert_eq!(set.pop(), None);
        assert_eq!(set.len(), 0);
    }

    #[test]
    fn push_makes_chunk_free_again() {
        let set = ChunkSet::new(4).unwrap();
        let taken: Vec<u32> = (0..4).map(|_| set.pop().unwrap()).collect();
        assert_eq!(taken, [0, 1, 2, 3]);
        set.push(2);
        assert_eq!(set.len(), 1);
        assert_eq!(set.pop(), Some(2));
        assert_eq!(set.pop(), None);
    }

    #[test]
    fn new_empty_pops_none() {
        let set = ChunkSet::new(0).unwrap();
        assert_eq!(set.pop(), None);
        assert_eq!(set.pop_run(1), None);
    }

    #[test]
    fn pop_run_across_words_skips_taken_chunks() {
        let set = ChunkSet::new(200).unwrap();
        for _ in 0..70 {
            set.pop().unwrap();
        }
        assert_eq!(set.pop_run(10), Some(70));
        // 75 free alone: a run of 3 cannot start there.
        set.push(75);
        assert_eq!(set.pop_run(3), Some(80));
        assert_eq!(set.pop_run(100), Some(83), "across two words");
        assert_eq!(set.len(), 200 - 70 - 10 + 1 - 3 - 100);
        assert_eq!(set.pop_run(100), None, "nothing changed on failure");
        assert_eq!(set.len(), 18);
        assert_eq!(set.pop_run(17), Some(183));
        assert_eq!(set.pop(), Some(75));
        assert_eq!(set.pop(), None);
    }

    #[test]
    fn longest_run_follows_pops_and_pushes() {
        let set = ChunkSet::new(200).unwrap();
        assert_eq!(set.longest_run(), 200);
        // Take 0..130, give back 10..20 and 64..128 (a run across a word boundary).
        assert_eq!(set.pop_run(130), Some(0));
        assert_eq!(set.longest_run(), 70);
        for c in (10..20).chain(64..128) {
            set.push(c);
        }
        assert_eq!(set.longest_run(), 70);
        set.push(128);
        set.push(129);
        assert_eq!(set.longest_run(), 64 + 2 + 70);
        while set.pop().is_some() {}
        assert_eq!(set.longest_run(), 0);
        assert_eq!(ChunkSet::new(0).unwrap().longest_run(), 0);
    }

    #[test]
    fn run_around_finds_the_lowest_run_through_the_held_chunk() {
        let set = ChunkSet::new(70).unwrap();
        for c in [0, 2, 64] {
            set.claim(c, 1);
        }
        assert_eq!(set.run_around(3, 0), None, "chunk 1 alone beside it");
        assert_eq!(set.run_around(2, 0), Some(0));
        assert_eq!(set.run_around(3, 2), Some(1));
        assert_eq!(set.run_around(2, 64), Some(63), "across words");
        assert_eq!(set.run_around(7, 64), Some(58));
        assert_eq!(set.run_around(67, 64), Some(3));
        assert_eq!(set.run_around(68, 64), None);
        assert_eq!(set.run_around(1, 70), None, "past the set");
        assert_eq!(set.run_around(0, 0), None);
        assert_eq!(set.pop(), Some(1), "nothing taken");
    }

    #[test]
    fn pop_run_at_takes_all_or_none() {
        let set = ChunkSet::new(70).unwrap();
        set.claim(65, 1);
        assert!(!set.pop_run_at(60, 6), "chunk 65 is taken");
        assert_eq!(set.len(), 70);
        assert!(!set.pop_run_at(69, 2), "past the set");
        assert!(!set.pop_run_at(usize::MAX, 2));
        assert!(set.pop_run_at(60, 5));
        assert_eq!(set.len(), 65);
        assert_eq!(set.pop_run(5), Some(0));
        assert_eq!(set.pop_run(60), None, "chunks 60..65 are taken");
    }

    #[test]
    fn pop_run_longer_than_set_is_none() {
        let set = ChunkSet::new(5).unwrap();
        assert_eq!(set.pop_run(6), None);
        assert_eq!(set.pop_run(5), Some(0));
        assert_eq!(set.len(), 0);
    }
}
