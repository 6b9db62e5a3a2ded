//! [`HeldRuns`]: sorted, disjoint, non-adjacent runs of `u64` values in the AVL arena of the
//! address index, each node knowing the free values in front of its run and the largest-gap
//! bound of its subtree, so that a search for a free stretch of some length skips every
//! subtree whose stretches are all shorter.
//!
//! The layout is the address index's: a node's `start` is the first value of its run and its
//! `gap` the free values between the previous run's last value and `start` (for the first run,
//! every value below `start`). A run's last value is therefore read from the next node
//! (`next.start - next.gap - 1`), or, for the last run, from [`HeldRuns::last_end`].

use super::tree::{Located, NIL, Search, Tree};
use crate::error::Result;

/// Sorted runs `lo..=hi` that neither overlap nor touch: O(log r) lookup, insertion (with
/// merging), cutting, and search for the first free stretch that holds a request, for r runs.
/// Memory is reserved before it is used.
#[derive(Clone, Debug)]
pub(crate) struct HeldRuns {
    tree: Tree,
    /// Last value of the last run (0 when there is none).
    last_end: u64,
}

/// What [`HeldRuns::find`] found for a value: the run that holds it, if any, and the path the
/// lookup took, so that [`HeldRuns::cut_found`] changes the index without a second descent.
pub(crate) struct Found {
    at: Located,
    run: Option<(u64, u64)>,
}

impl Found {
    /// The run `lo..=hi` that holds the value looked up, if any.
    pub(crate) fn run(&self) -> Option<(u64, u64)> {
        self.run
    }
}

impl HeldRuns {
    /// No runs.
    pub(crate) fn new() -> Self {
        Self {
            tree: Tree::new(),
            last_end: 0,
        }
    }

    /// Heap bytes held (capacity included).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.tree.capacity_bytes()
    }

    /// Whether there are no runs: O(1).
    pub(crate) fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Makes room for one more run, so that the next [`insert`](Self::insert) or
    /// [`cut`](Self::cut) allocates nothing.
    ///
    /// # Errors
    ///
    /// [`Error::HeapRefused`](crate::Error::HeapRefused) if the heap refuses; the runs are
    /// unchanged.
    pub(crate) fn reserve_insert(&mut self) -> Result<()> {
        self.tree.try_reserve(1)
    }

    /// The last value of the run whose next node is `next` (`NIL` for the last run).
    fn end_before(&self, next: u32) -> u64 {
        if next == NIL {
            self.last_end
        } else {
            let n = self.tree.node(next);
            n.start - n.gap - 1
        }
    }

    /// The run that holds `v`, or else the first run that starts after `v`: O(log r).
    pub(crate) fn run_from(&self, v: u64) -> Option<(u64, u64)> {
        let around = self.tree.around(v);
        if around.pred != NIL {
            let end = self.end_before(around.succ);
            if v <= end {
                return Some((self.tree.node(around.pred).start, end));
            }
        }
        (around.succ != NIL).then(|| {
            let start = self.tree.node(around.succ).start;
            (start, self.end_before(self.tree.around(start).succ))
        })
    }

    /// The run that holds `v`, if any, with the path to it: one descent, O(log r).
    pub(crate) fn find(&self, v: u64) -> Found {
        let at = self.tree.locate(v);
        let run = (at.around.pred != NIL)
            .then(|| {
                (
                    self.tree.node(at.around.pred).start,
                    self.end_before(at.around.succ),
                )
            })
            .filter(|&(_, end)| v <= end);
        Found { at, run }
    }

    /// Removes the value `v` from the run that holds it, which `found` found: `found` must be
    /// the last [`find`](Self::find) of `v`, with no change to the runs since (making room
    /// with [`reserve_insert`](Self::reserve_insert) moves no node), and have found a run.
    /// Shrinking the run from either end or removing it costs no descent beyond the one
    /// [`find`](Self::find) made, but removing a node's own; splitting it adds a run, which
    /// needs the room [`reserve_insert`](Self::reserve_insert) made. O(log r).
    pub(crate) fn cut_found(&mut self, found: &Found, v: u64) {
        debug_assert!(found.run.is_some_and(|(lo, hi)| lo <= v && v <= hi));
        // One value inside one run: whatever the case, no other run is touched.
        self.cut_located(&found.at, v, v);
    }

    /// Whether a run holds `v`: O(log r).
    pub(crate) fn contains(&self, v: u64) -> bool {
        let around = self.tree.around(v);
        around.pred != NIL && v <= self.end_before(around.succ)
    }

    /// Adds `lo..=hi`, which overlaps no run, merging it with the runs it touches. A new run
    /// needs the room [`reserve_insert`](Self::reserve_insert) made; merging needs none.
    /// O(log r).
    pub(crate) fn insert(&mut self, lo: u64, hi: u64) {
        let at = self.tree.locate(lo);
        let around = at.around;
        // No run holds `lo`, so the run before it (if any) ends below `lo`.
        let below_end = (around.pred != NIL).then(|| self.end_before(around.succ));
        let above = (around.succ != NIL).then(|| self.tree.node(around.succ));
        let joins_below = below_end.is_some_and(|e| e + 1 == lo);
        let joins_above = above.is_some_and(|a| hi.checked_add(1) == Some(a.start));
        match (below_end, above) {
            // Three runs become one: the node above goes, and the gap after it is unchanged.
            (Some(_), Some(a)) if joins_below && joins_above => {
                self.tree.remove(a.start, None);
            }
            // The run below now ends at `hi`: the gap after it shrinks.
            (Some(e), a) if joins_below => match a {
                Some(a) => self.tree.set_at(&at, false, a.start, a.gap - (hi - e)),
                None => self.last_end = hi,
            },
            // The run above now starts at `lo`, still after the run below it (which ends
            // before `lo - 1`): its gap shrinks by what it gained.
            (_, Some(a)) if joins_above => {
                self.tree.set_at(&at, false, lo, a.gap - (a.start - lo));
            }
            (below_end, above) => {
                let gap = below_end.map_or(lo, |e| lo - e - 1);
                match above {
                    // The node above lies on the new node's search path, which `insert`
                    // brings up to date.
                    Some(a) => self.tree.set_gap(around.succ, a.start - hi - 1),
                    None => self.last_end = hi,
                }
                self.tree.insert(lo, gap);
            }
        }
    }

    /// The runs in increasing order, as `(lo, hi)`.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut nodes = self.tree.iter().peekable();
        core::iter::from_fn(move || {
            let t = nodes.next()?;
            let next = nodes.peek().copied().unwrap_or(NIL);
            Some((self.tree.node(t).start, self.end_before(next)))
        })
    }

    /// Removes `lo..=hi` from the runs: each run it overlaps loses that part. Splitting a run
    /// in two adds one run, which needs the room [`reserve_insert`](Self::reserve_insert)
    /// made; no other case adds one. O(log r) per run touched.
    pub(crate) fn cut(&mut self, lo: u64, hi: u64) {
        // Runs are disjoint and sorted, so the last one starting at or before `hi` overlaps the
        // range exactly when it ends at or after `lo`, and when it does not, no run does.
        while self.cut_located(&self.tree.locate(hi), lo, hi) {}
    }

    /// One step of [`cut`](Self::cut): `at` is a [`locate`](Tree::locate) of `hi` with no
    /// change since; the run it finds starting at or before `hi` loses its part in `lo..=hi`.
    /// Returns whether a run starting below that one may still overlap `lo..=hi`.
    fn cut_located(&mut self, at: &Located, lo: u64, hi: u64) -> bool {
        let around = at.around;
        if around.pred == NIL {
            return false;
        }
        let n = self.tree.node(around.pred);
        let end = self.end_before(around.succ);
        if end < lo {
            return false;
        }
        let next = (around.succ != NIL).then(|| self.tree.node(around.succ));
        match (n.start < lo, end > hi) {
            (true, true) => {
                // Split: the high part is a new node after the `hi - lo + 1` values cut;
                // the gap after the run is unchanged.
                self.tree.insert(hi + 1, hi - lo + 1);
                false
            }
            (true, false) => {
                // The run now ends at `lo - 1`; runs below end before its start.
                match next {
                    Some(s) => self.tree.set_at(at, false, s.start, s.gap + (end - lo + 1)),
                    None => self.last_end = lo - 1,
                }
                false
            }
            // The run now starts past `hi`, between its old start and its successor's.
            (false, true) => {
                self.tree
                    .set_at(at, true, hi + 1, n.gap + (hi + 1 - n.start));
                n.start > lo
            }
            (false, false) => {
                match next {
                    // The run goes: its values and the gap before it join the next gap.
                    Some(s) => {
                        let gap = s.gap + n.gap + (end - n.start + 1);
                        self.tree.remove(n.start, Some((s.start, gap)));
                    }
                    None => {
                        // The last run goes; the one before it, if any, is now the last.
                        self.last_end = if self.tree.len() > 1 {
                            n.start - n.gap - 1
                        } else {
                            0
                        };
                        self.tree.remove(n.start, None);
                    }
                }
                n.start > lo
            }
        }
    }

    /// The lowest value `fits` gives for a free stretch at or after `from` and up to `until`:
    /// the stretches between runs are offered in increasing order, each clipped to start at
    /// `from` or later, and the first answer wins. Only stretches of at least `len` values
    /// are offered (`fits` must answer `None` for shorter ones): a subtree whose largest-gap
    /// bound is below `len` is skipped whole, so with no stretch of `len` values the search is
    /// one path, O(log r); each stretch long enough that `fits` refuses adds at most a path,
    /// and so does, for a `len` above 2^24, each shorter stretch whose bound, rounded up by
    /// less than one part in 2^23, reaches `len`.
    pub(crate) fn first_fit(
        &self,
        from: u64,
        until: u64,
        len: u64,
        fits: impl Fn(u64, u64) -> Option<u64>,
    ) -> Option<u64> {
        let mut probe = |n: &super::tree::Node| {
            // The stretch before this run is `start - gap..start`; those before the runs of
            // the lower subtree end below `start - gap`.
            let lo = (n.start - n.gap).max(from);
            Search {
                here: (lo < n.start).then(|| fits(lo, n.start - 1)).flatten(),
                left: n.start - n.gap > from,
                right: true,
            }
        };
        let mut skipped = 0;
        if let Some((_, at)) = self.tree.find(len, false, &mut probe, &mut skipped) {
            return Some(at);
        }
        let tail = if self.tree.is_empty() {
            from
        } else {
            (self.last_end + 1).max(from)
        };
        (tail <= until).then(|| fits(tail, until)).flatten()
    }

    /// The number of levels of the index (0 with no runs). O(r).
    #[cfg(test)]
    pub(crate) fn height(&self) -> usize {
        self.tree.height()
    }

    /// Checks the index (order, balance, bounds) and that the runs neither overlap nor touch.
    #[cfg(test)]
    pub(crate) fn check(&self) -> core::result::Result<(), &'static str> {
        self.tree.check()?;
        let mut prev: Option<u64> = None;
        for t in self.tree.iter() {
            let n = self.tree.node(t);
            match prev {
                // The first run's gap is every value below it.
                None if n.gap != n.start => return Err("the first run's gap is not its start"),
                // Runs do not touch: at least one free value lies between two.
                Some(_) if n.gap == 0 || n.gap > n.start => {
                    return Err("two runs touch or overlap");
                }
                Some(p) if n.start - n.gap - 1 < p => return Err("a run ends before it starts"),
                _ => {}
            }
            prev = Some(n.start);
        }
        if prev.is_some_and(|p| self.last_end < p) {
            return Err("the last run ends before it starts");
        }
        Ok(())
    }
}

impl PartialEq for HeldRuns {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for HeldRuns {}

#[cfg(test)]
mod tests {
    use super::HeldRuns;
    use crate::test_rng::xorshift;

    /// The values set in `set`, as sorted runs that neither overlap nor touch.
    fn runs_of(set: &[bool]) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (v, _) in set.iter().enumerate().filter(|&(_, &b)| b) {
            let v = v as u64;
            match out.last_mut() {
                Some((_, hi)) if *hi + 1 == v => *hi = v,
                _ => out.push((v, v)),
            }
        }
        out
    }

    #[test]
    fn cut_and_cut_found_match_a_set_of_values() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let size = 300usize;
        let mut pick = |below: usize| usize::try_from(next() % below as u64).unwrap();
        for _ in 0..if cfg!(miri) { 2 } else { 40 } {
            let (mut held, mut set) = (HeldRuns::new(), vec![false; size]);
            for _ in 0..400 {
                let lo = pick(size);
                let len = pick(12);
                let hi = (lo + len).min(size - 1);
                match pick(3) {
                    // Insert `lo..=hi` where it overlaps nothing: its free part up to the first
                    // held value.
                    0 => {
                        if let Some(hi) = (lo..=hi).take_while(|&v| !set[v]).last() {
                            held.reserve_insert().unwrap();
                            held.insert(lo as u64, hi as u64);
                            set[lo..=hi].fill(true);
                        }
                    }
                    // Cut any range: across several runs and the gaps between them.
                    1 => {
                        held.reserve_insert().unwrap();
                        held.cut(lo as u64, hi as u64);
                        set[lo..=hi].fill(false);
                    }
                    // Cut one value through `find`.
                    _ => {
                        let found = held.find(lo as u64);
                        let expect = runs_of(&set)
                            .into_iter()
                            .find(|&(a, b)| a <= lo as u64 && lo as u64 <= b);
                        assert_eq!(found.run(), expect);
                        if expect.is_some() {
                            held.reserve_insert().unwrap();
                            held.cut_found(&found, lo as u64);
                            set[lo] = false;
                        }
                    }
                }
                assert_eq!(held.check(), Ok(()));
                assert_eq!(held.iter().collect::<Vec<_>>(), runs_of(&set));
            }
        }
    }
}
