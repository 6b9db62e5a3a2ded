//! The arena's free chunks: a bitmap of atomic words (bit clear = free), from which clients
//! take single chunks or runs of contiguous chunks and to which they give them back, lock-free.
//!
//! A clear bit is a free chunk so that the bitmap of a new arena is zero words: from zeroed
//! memory, untouched until chunks are taken, whatever the number of chunks. Only the bits past
//! the last chunk, in the last word, are set when the set is made.

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

/// The bits of [`ChunkSet::hint`] that hold the word index; the bits above count the
/// lowerings.
const HINT_WORD: u64 = (1 << 32) - 1;

/// The generation step of [`ChunkSet::hint`].
const HINT_STEP: u64 = 1 << 32;

/// The free chunks. A chunk is taken by setting its bit (an `Acquire` read-modify-write) and
/// given back by clearing it (`Release`), so everything its last holder did is visible to the
/// next.
#[derive(Debug)]
pub(crate) struct ChunkSet {
    /// Bit `c % 64` of word `c / 64` is set while chunk `c` is taken, and always for `c` past
    /// the last chunk.
    words: Box<[AtomicU64]>,
    count: usize,
    len: AtomicUsize,
    /// Where searches start: the low 32 bits are the index of a word such that every word
    /// below it was seen full (all bits set) and has not been given a bit back since; the high
    /// 32 bits count the lowerings. [`pop`](Self::pop) raises it past the full words it
    /// passes with a `compare_exchange` from the value it started from, so a chunk given back
    /// (its bit cleared, then the hint lowered to its word and the count bumped) while a scan
    /// was past its word makes that raise fail instead of hiding the chunk. Raises never
    /// change which chunk is taken: the lowest free chunk is never below the hint.
    hint: AtomicU64,
    /// Words read by [`run_around`](Self::run_around), for tests of its cost.
    #[cfg(test)]
    around_reads: AtomicUsize,
}

impl ChunkSet {
    /// A set holding chunks `0..count`; `None` if the allocator refuses its words. Writes one
    /// word at most: the bits past the last chunk.
    pub(crate) fn new(count: u32) -> Option<Self> {
        let count = count as usize;
        let words: Box<[AtomicU64]> = table::empty(count.div_ceil(64))?;
        if let Some(last) = words.last() {
            let w = words.len() - 1;
            let past = !span(w, 0, count);
            if past != 0 {
                last.store(past, Ordering::Relaxed);
            }
        }
        Some(Self {
            words,
            count,
            len: AtomicUsize::new(count),
            hint: AtomicU64::new(0),
            #[cfg(test)]
            around_reads: AtomicUsize::new(0),
        })
    }

    /// The word index in hint value `h`.
    fn hint_word(h: u64) -> usize {
        // At most the word count, which fits: a set has at most 2^32 chunks.
        usize::try_from(h & HINT_WORD).unwrap_or(usize::MAX)
    }

    /// Raises the hint from `seen` (a value loaded before the words below `word` were seen
    /// full) to `word`; does nothing if the hint changed meanwhile (a chunk given back, or
    /// another raise), which leaves it a lower bound.
    fn raise_hint(&self, seen: u64, word: usize) {
        if word > Self::hint_word(seen) {
            let raised = (seen & !HINT_WORD) | word as u64;
            let _ = self
                .hint
                .compare_exchange(seen, raised, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// Lowers the hint to word `word` at most, after a bit of it was cleared, and counts the
    /// lowering so that a raise from an older value fails. The `Release` makes the cleared
    /// bit visible to a search that starts from the new value.
    fn lower_hint(&self, word: usize) {
        let mut h = self.hint.load(Ordering::Relaxed);
        loop {
            let lowered =
                (h & !HINT_WORD).wrapping_add(HINT_STEP) | (Self::hint_word(h).min(word) as u64);
            match self
                .hint
                .compare_exchange_weak(h, lowered, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => h = now,
            }
        }
    }

    /// Whether chunk `c` (below `count`) is free, in a snapshot (a relaxed load).
    #[cfg_attr(not(any(test, feature = "std")), allow(dead_code))]
    pub(crate) fn is_free(&self, c: usize) -> bool {
        self.words[c / 64].load(Ordering::Relaxed) & (1 << (c % 64)) == 0
    }

    /// Takes the lowest free chunk. The scan starts at the hint's word (every word below it
    /// is full) and raises the hint past the full words it passes. A scan that finds none
    /// while the count says some are free (given back behind the scan) looks again, from the
    /// first word.
    pub(crate) fn pop(&self) -> Option<u32> {
        let mut from_start = false;
        loop {
            let seen = self.hint.load(Ordering::Acquire);
            let start = if from_start { 0 } else { Self::hint_word(seen) };
            for (w, word) in self.words.iter().enumerate().skip(start) {
                let mut v = word.load(Ordering::Relaxed);
                while v != u64::MAX {
                    // The lowest clear bit.
                    let bit = !v & v.wrapping_add(1);
                    match word.compare_exchange_weak(
                        v,
                        v | bit,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => {
                            self.len.fetch_sub(1, Ordering::Relaxed);
                            self.raise_hint(seen, w);
                            let chunk = w * 64 + bit.trailing_zeros() as usize;
                            return u32::try_from(chunk).ok();
                        }
                        Err(now) => v = now,
                    }
                }
            }
            // Every word from `start` (at most the hint's) on was seen full.
            self.raise_hint(seen, self.words.len());
            if self.len() == 0 {
                return None;
            }
            from_start = true;
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
        // No run starts in the full words below the hint.
        let mut from = Self::hint_word(self.hint.load(Ordering::Acquire)) * 64;
        while let Some(first) = self.find_run(from, n) {
            if self.claim(first, n) {
                self.len.fetch_sub(n, Ordering::Relaxed);
                return u32::try_from(first).ok();
            }
            from = first + 1;
        }
        None
    }

    /// The first chunk of the lowest run of `n` (at least 1) free chunks starting at or
    /// after `from`, in a snapshot. Reads each word once, testing a word's free bits for a
    /// run inside it with `log2(n)` shifts, and carries the free bits at the top of a word
    /// over to the next: the cost is in words, whatever the pattern of free and taken chunks.
    fn find_run(&self, from: usize, n: usize) -> Option<usize> {
        // Free chunks ending at the top of the words read so far (the run they make).
        let mut run = 0usize;
        for w in from / 64..self.words.len() {
            // Bits past the last chunk are set, so they never count as free.
            let mut free = !self.words[w].load(Ordering::Relaxed);
            if w == from / 64 {
                free &= u64::MAX << (from % 64);
            }
            if run + free.trailing_ones() as usize >= n {
                return Some(w * 64 - run);
            }
            if n <= 64 {
                // Bit `i` of `starts` is set while chunks `i..i + n` of the word are free.
                let (mut starts, mut len) = (free, 1);
                while len < n && starts != 0 {
                    let step = len.min(n - len);
                    starts &= starts >> step;
                    len += step;
                }
                if starts != 0 {
                    return Some(w * 64 + starts.trailing_zeros() as usize);
                }
            }
            run = if free == u64::MAX {
                run + 64
            } else {
                free.leading_ones() as usize
            };
        }
        None
    }

    /// The first chunk of the lowest run of `n` (at least 1) contiguous chunks that includes
    /// chunk `held` (held by the caller) and whose other chunks are free, in a snapshot: the
    /// run [`pop_run_at`](Self::pop_run_at) can take once `held` is given back. Changes
    /// nothing. Counts the free chunks right below `held` (at most `n - 1`), then those right
    /// above it (as many as the run still needs), a word at a time: the cost is in words, as
    /// for [`find_run`](Self::find_run), not in chunks.
    pub(crate) fn run_around(&self, n: usize, held: usize) -> Option<usize> {
        if n == 0 || n > self.count || held >= self.count {
            return None;
        }
        // The lowest start is as far below `held` as the free chunks there reach (a run
        // through `held` starts at most `n - 1` chunks before it); the run then needs the
        // rest above it, where the set bits past the last chunk end it.
        let below = self.free_below(held, n - 1);
        let need = n - 1 - below;
        (self.free_above(held, need) == need).then(|| held - below)
    }

    /// Word `w`, as [`run_around`](Self::run_around) reads it (counted in tests).
    fn around_word(&self, w: usize) -> u64 {
        #[cfg(test)]
        self.around_reads.fetch_add(1, Ordering::Relaxed);
        self.words[w].load(Ordering::Relaxed)
    }

    /// How many chunks right below chunk `c` are free, counting at most `limit`.
    fn free_below(&self, c: usize, limit: usize) -> usize {
        let mut found = 0;
        let mut at = c;
        while found < limit && at > 0 {
            // The free bits of chunks `at - 1` down to the start of its word, from the top.
            let top = at - 1;
            let free = !self.around_word(top / 64) << (63 - top % 64);
            let run = (free.leading_ones() as usize).min(top % 64 + 1);
            found += run;
            if run <= top % 64 {
                break;
            }
            at -= run;
        }
        found.min(limit)
    }

    /// How many chunks right above chunk `c` are free, counting at most `limit`.
    fn free_above(&self, c: usize, limit: usize) -> usize {
        let mut found = 0;
        let mut at = c + 1;
        // Bits past the last chunk are set, so a run never counts past it.
        while found < limit && at / 64 < self.words.len() {
            let free = !self.around_word(at / 64) >> (at % 64);
            let run = (free.trailing_ones() as usize).min(64 - at % 64);
            found += run;
            if run < 64 - at % 64 {
                break;
            }
            at += run;
        }
        found.min(limit)
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

    /// Sets the bits of chunks `first..first + n`, all or none: false if one was set.
    fn claim(&self, first: usize, n: usize) -> bool {
        let (lo, hi) = (first / 64, (first + n - 1) / 64);
        for w in lo..=hi {
            let mask = span(w, first, n);
            let word = &self.words[w];
            let mut v = word.load(Ordering::Relaxed);
            loop {
                if v & mask != 0 {
                    for back in lo..w {
                        self.words[back].fetch_and(!span(back, first, n), Ordering::Release);
                    }
                    if w > lo {
                        self.lower_hint(lo);
                    }
                    return false;
                }
                match word.compare_exchange_weak(v, v | mask, Ordering::Acquire, Ordering::Relaxed)
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
        let mut batch = self.batch();
        batch.push(chunk);
    }

    /// A batch of chunks to give back, which lowers the hint once, when it is dropped: a
    /// client's whole chunk list goes back with one update of it.
    pub(crate) fn batch(&self) -> PushBatch<'_> {
        PushBatch {
            set: self,
            lowest: None,
        }
    }
}

/// Chunks given back to a [`ChunkSet`]: each is free (and counted) at
/// [`push`](Self::push); the hint is lowered to the lowest of their words when the batch is
/// dropped (until then a search that started above them may not see them).
#[derive(Debug)]
pub(crate) struct PushBatch<'a> {
    set: &'a ChunkSet,
    /// The lowest word of a chunk given back.
    lowest: Option<usize>,
}

impl PushBatch<'_> {
    /// Gives chunk `chunk`, held by the caller, back. The `Release` publishes everything the
    /// caller did to it.
    pub(crate) fn push(&mut self, chunk: u32) {
        let c = chunk as usize;
        self.set.words[c / 64].fetch_and(!(1 << (c % 64)), Ordering::Release);
        self.lowest = Some(self.lowest.map_or(c / 64, |w| w.min(c / 64)));
        self.set.len.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for PushBatch<'_> {
    /// Lowers the hint after every bit of the batch was cleared.
    fn drop(&mut self) {
        if let Some(w) = self.lowest {
            self.set.lower_hint(w);
        }
    }
}

impl ChunkSet {
    /// The length of the longest run of free chunks (a snapshot: chunks taken or given back
    /// meanwhile may or may not count).
    pub(crate) fn longest_run(&self) -> usize {
        let (mut best, mut run) = (0, 0);
        for (w, word) in self.words.iter().enumerate() {
            // Set bits: free chunks (and bits past the last chunk, which `valid` leaves out).
            let bits = !word.load(Ordering::Relaxed);
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

    /// How many chunks are free (exact when no hand-out is in flight).
    ///
    /// A chunk given back is counted after its bit is cleared, and one taken after its bit
    /// is set, so a taker may lower the count before the giver raised it: below zero, the
    /// count wraps past `count` (it is at most `count` otherwise, the chunks claimed and not
    /// yet subtracted having been counted free), and then reads as 0 — every chunk but those
    /// in flight is taken. (Read as it is, it made a snapshot of an arena whose chunks were
    /// all held report every chunk free.)
    pub(crate) fn len(&self) -> usize {
        let n = self.len.load(Ordering::Relaxed);
        if n > self.count { 0 } else { n }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use alloc::vec::Vec;

    use super::*;

    /// A run sought past a long stretch of taken chunks reads their words, not each chunk:
    /// 2^28 chunks taken before the free pair cost a few million word loads per search here,
    /// where a chunk-by-chunk scan made it 2^28 bit tests (seconds in a debug build, each).
    #[test]
    #[cfg_attr(miri, ignore = "a set of 2^28 chunks")]
    fn run_search_past_taken_chunks_reads_words_not_chunks() {
        let count = (1usize << 28) + 2;
        let set = ChunkSet::new(u32::try_from(count).unwrap()).unwrap();
        assert_eq!(set.pop_run(count - 2), Some(0));
        for _ in 0..5 {
            let first = set.pop_run(2);
            assert_eq!(first, Some(u32::try_from(count - 2).unwrap()));
            set.push(first.unwrap());
            set.push(first.unwrap() + 1);
            assert_eq!(set.pop_run(3), None);
        }
    }

    /// `find_run` against a chunk-by-chunk scan: set sizes a multiple of 64 and not, runs of
    /// 1, 63, 64, 65 and many words' chunks, runs at bit 0 and ending at bit 63, every start
    /// (in the middle of a word too), over random and regular patterns of taken chunks.
    #[test]
    fn find_run_matches_a_chunk_by_chunk_scan() {
        let trials = if cfg!(miri) { 2 } else { 40 };
        let mut next = crate::test_rng::xorshift(0x2545_F491_4F6C_DD1D_u64);
        let counts: &[usize] = if cfg!(miri) {
            &[1, 64, 130]
        } else {
            &[1, 2, 63, 64, 65, 127, 128, 130, 200, 256, 259]
        };
        for &count in counts {
            let set = ChunkSet::new(u32::try_from(count).unwrap()).unwrap();
            let words = count.div_ceil(64);
            for trial in 0..trials {
                // Taken chunks: none, all, stripes of 1 to 70, or random at some density.
                let taken = |c: usize, r: u64| match trial {
                    0 => false,
                    1 => true,
                    2..=9 => (c / (1 + 9 * (trial - 2))) % 2 == 1,
                    _ => r % 8 < (trial as u64 % 8),
                };
                for w in 0..words {
                    let mut v = !span(w, 0, count);
                    for bit in 0..64 {
                        let c = w * 64 + bit;
                        if c < count && taken(c, next()) {
                            v |= 1 << bit;
                        }
                    }
                    set.words[w].store(v, Ordering::Relaxed);
                }
                let free: Vec<bool> = (0..count).map(|c| set.is_free(c)).collect();
                let scan = |from: usize, n: usize| {
                    (from..count.saturating_sub(n - 1)).find(|&f| free[f..f + n].iter().all(|&x| x))
                };
                for n in [
                    1, 2, 3, 7, 31, 32, 33, 63, 64, 65, 66, 127, 128, 129, 190, count,
                ] {
                    if n > count {
                        continue;
                    }
                    // Under Miri, starts at and beside word edges and one inside each word.
                    let near_edge = |f: usize| !cfg!(miri) || matches!(f % 64, 0 | 1 | 17 | 63);
                    for from in (0..=count + 1).filter(|&f| near_edge(f)) {
                        assert_eq!(
                            set.find_run(from, n),
                            scan(from, n),
                            "count {count}, trial {trial}, n {n}, from {from}"
                        );
                    }
                }
            }
        }
    }

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
    fn new_set_is_zero_words_but_the_bits_past_the_last_chunk() {
        let set = ChunkSet::new(200).unwrap();
        let words: Vec<u64> = set
            .words
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .collect();
        assert_eq!(words, [0, 0, 0, !0xFF]);
        let set = ChunkSet::new(128).unwrap();
        assert!(set.words.iter().all(|w| w.load(Ordering::Relaxed) == 0));
        assert_eq!(set.len(), 128);
        assert_eq!(set.longest_run(), 128);
        assert_eq!(set.pop_run(128), Some(0));
        assert!(
            set.words
                .iter()
                .all(|w| w.load(Ordering::Relaxed) == u64::MAX)
        );
        assert_eq!(set.pop(), None);
        assert_eq!(set.longest_run(), 0);
    }

    #[test]
    fn chunks_past_the_last_are_never_handed_out() {
        let set = ChunkSet::new(70).unwrap();
        let taken: Vec<u32> = core::iter::from_fn(|| set.pop()).collect();
        assert_eq!(taken, (0..70).collect::<Vec<u32>>());
        assert_eq!(set.len(), 0);
        assert_eq!(set.pop_run(1), None);
        set.push(69);
        assert_eq!(set.longest_run(), 1);
        assert_eq!(set.pop_run(2), None, "no chunk 70");
        assert_eq!(set.pop_run(1), Some(69));
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

    /// `run_around` against a chunk-by-chunk scan of the runs through the held chunk: set
    /// sizes a multiple of 64 and not, runs of 1 to many words' chunks, the held chunk at
    /// every place (word edges included), over random and regular patterns of taken chunks.
    #[test]
    fn run_around_matches_a_chunk_by_chunk_scan() {
        let trials = if cfg!(miri) { 2 } else { 24 };
        let mut next = crate::test_rng::xorshift(0x9E37_79B9_7F4A_7C15_u64);
        let counts: &[usize] = if cfg!(miri) {
            &[1, 65]
        } else {
            &[1, 2, 63, 64, 65, 128, 130, 259]
        };
        for &count in counts {
            let set = ChunkSet::new(u32::try_from(count).unwrap()).unwrap();
            for trial in 0..trials {
                let taken = |c: usize, r: u64| match trial {
                    0 => false,
                    1 => true,
                    2..=7 => (c / (1 + 13 * (trial - 2))) % 2 == 1,
                    _ => r % 8 < (trial as u64 % 8),
                };
                for w in 0..count.div_ceil(64) {
                    let mut v = !span(w, 0, count);
                    for bit in 0..64 {
                        let c = w * 64 + bit;
                        if c < count && taken(c, next()) {
                            v |= 1 << bit;
                        }
                    }
                    set.words[w].store(v, Ordering::Relaxed);
                }
                let free: Vec<bool> = (0..count).map(|c| set.is_free(c)).collect();
                let step = if cfg!(miri) { 31 } else { 1 };
                for held in (0..count).step_by(step) {
                    let scan = |n: usize| {
                        (held.saturating_sub(n - 1)..=held)
                            .filter(|&f| f + n <= count)
                            .find(|&f| (f..f + n).all(|c| c == held || free[c]))
                    };
                    for n in [1, 2, 3, 63, 64, 65, 66, 129, count - 1, count] {
                        if n == 0 || n > count {
                            continue;
                        }
                        assert_eq!(
                            set.run_around(n, held),
                            scan(n),
                            "count {count} trial {trial} held {held} n {n}"
                        );
                    }
                }
            }
        }
    }

    /// A run sought through the held chunk reads words, not chunks: with the held chunk in
    /// the middle of 2^20 free chunks and the set's first and last chunks taken, a run of all
    /// but one chunk is refused after reading the words on either side (2^14 and two more),
    /// not after a test of each chunk (2^20; a debug build took about 5 s for 2^28).
    #[test]
    #[cfg_attr(miri, ignore = "a set of 2^20 chunks")]
    fn run_around_past_free_chunks_reads_words_not_chunks() {
        let count = (1usize << 20) + 2;
        let set = ChunkSet::new(u32::try_from(count).unwrap()).unwrap();
        let held = count / 2;
        for c in [0, held, count - 1] {
            assert!(set.claim(c, 1));
        }
        set.around_reads.store(0, Ordering::Relaxed);
        assert_eq!(set.run_around(count - 1, held), None);
        let reads = set.around_reads.load(Ordering::Relaxed);
        assert!(
            reads <= count.div_ceil(64) + 2,
            "{reads} words read for {} words",
            count.div_ceil(64)
        );
        assert_eq!(set.run_around(count - 2, held), Some(1));
        // A run through the held chunk that fits between its neighbours reads a word or two.
        set.around_reads.store(0, Ordering::Relaxed);
        assert!(set.claim(held - 3, 1) && set.claim(held + 3, 1));
        assert_eq!(set.run_around(5, held), Some(held - 2));
        assert!(set.around_reads.load(Ordering::Relaxed) <= 4);
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

    /// Whether every word below the hint's is full: what lets a search start there.
    fn hint_holds(set: &ChunkSet) -> bool {
        let h = ChunkSet::hint_word(set.hint.load(Ordering::Relaxed));
        h <= set.words.len()
            && set.words[..h]
                .iter()
                .all(|w| w.load(Ordering::Relaxed) == u64::MAX)
    }

    #[test]
    fn pop_takes_the_lowest_free_chunk_after_pushes_below_and_above_the_hint() {
        let set = ChunkSet::new(300).unwrap();
        assert_eq!(set.pop_run(200), Some(0));
        assert!(set.pop_run_at(280, 1));
        assert_eq!(set.pop(), Some(200));
        assert_eq!(ChunkSet::hint_word(set.hint.load(Ordering::Relaxed)), 3);
        // Above the hint's word: chunk 280 is given back, but 201 is lower.
        set.push(280);
        assert!(hint_holds(&set));
        assert_eq!(set.pop(), Some(201));
        // Below the hint's word: the lowest free chunk is now 7.
        set.push(130);
        set.push(7);
        assert!(hint_holds(&set));
        assert_eq!(set.pop(), Some(7));
        assert_eq!(set.pop(), Some(130));
        assert_eq!(set.pop(), Some(202));
        // Runs start no lower than the hint, and still at the lowest run.
        set.push(64);
        set.push(65);
        assert_eq!(set.pop_run(2), Some(64));
        // A claim that fails part-way (chunk 270 is taken) gives back the part of word 3 it
        // claimed and lowers the hint, counting the lowering.
        assert!(set.pop_run_at(270, 1));
        let before = set.hint.load(Ordering::Relaxed);
        assert!(!set.pop_run_at(250, 40));
        assert_ne!(set.hint.load(Ordering::Relaxed), before);
        assert!(hint_holds(&set));
        assert!(set.is_free(250));
        set.push(270);
        set.push(3);
        assert_eq!(set.pop_run(1), Some(3));
        // The whole set taken: the hint passes the last word, and a push brings it back.
        while set.pop().is_some() {}
        assert_eq!(
            ChunkSet::hint_word(set.hint.load(Ordering::Relaxed)),
            set.words.len()
        );
        assert_eq!(set.pop(), None);
        set.push(299);
        assert_eq!(ChunkSet::hint_word(set.hint.load(Ordering::Relaxed)), 4);
        // A batch lowers the hint once, to the lowest of its words.
        let mut batch = set.batch();
        for c in [150, 1, 70] {
            batch.push(c);
        }
        drop(batch);
        assert!(hint_holds(&set));
        assert_eq!(ChunkSet::hint_word(set.hint.load(Ordering::Relaxed)), 0);
        assert_eq!(set.len(), 4);
        let taken: Vec<u32> = core::iter::from_fn(|| set.pop()).collect();
        assert_eq!(taken, [1, 70, 150, 299]);
    }

    #[test]
    fn pops_and_runs_match_a_model_of_the_lowest_free_chunks() {
        // Which chunks are free, against random pops, pushes, runs and claims at a place;
        // after each step the hint must leave only full words below it.
        let steps = if cfg!(miri) { 100 } else { 20_000 };
        let count = 200;
        let set = ChunkSet::new(u32::try_from(count).unwrap()).unwrap();
        let mut free = alloc::vec![true; count];
        let mut next = crate::test_rng::xorshift(0x9E37_79B9_7F4A_7C15_u64);
        // The first chunk of the lowest run of `n` free chunks.
        let lowest_run = |free: &[bool], n: usize| {
            let mut run = 0;
            for (c, &f) in free.iter().enumerate() {
                run = if f { run + 1 } else { 0 };
                if run == n {
                    return Some(c + 1 - n);
                }
            }
            None
        };
        for _ in 0..steps {
            let r = next();
            let n = 1 + usize::try_from((r >> 8) % 70).unwrap();
            match r % 5 {
                0 | 1 => {
                    let want = free.iter().position(|&f| f);
                    let got = set.pop().map(|c| c as usize);
                    assert_eq!(got, want);
                    if let Some(c) = got {
                        free[c] = false;
                    }
                }
                2 => {
                    // Give back a held chunk, if it is one.
                    let c = usize::try_from((r >> 8) % count as u64).unwrap();
                    if !free[c] {
                        set.push(u32::try_from(c).unwrap());
                        free[c] = true;
                    }
                }
                3 => {
                    let want = lowest_run(&free, n);
                    assert_eq!(set.pop_run(n).map(|c| c as usize), want);
                    if let Some(f) = want {
                        free[f..f + n].fill(false);
                    }
                }
                _ => {
                    let f = usize::try_from((r >> 20) % count as u64).unwrap();
                    let want = f + n <= count && free[f..f + n].iter().all(|&f| f);
                    assert_eq!(set.pop_run_at(f, n), want);
                    if want {
                        free[f..f + n].fill(false);
                    }
                }
            }
            assert_eq!(set.len(), free.iter().filter(|&&f| f).count());
            assert!(hint_holds(&set));
            for (c, &f) in free.iter().enumerate() {
                assert_eq!(set.is_free(c), f, "chunk {c}");
            }
        }
    }

    #[test]
    fn pop_run_longer_than_set_is_none() {
        let set = ChunkSet::new(5).unwrap();
        assert_eq!(set.pop_run(6), None);
        assert_eq!(set.pop_run(5), Some(0));
        assert_eq!(set.len(), 0);
    }
}
