//! [`RunSet`]: sorted, disjoint runs of `u64` values in the AVL arena of the address index, so
//! that every growth is reserved (and may be refused) before anything changes.
//!
//! A node's `start` is the first value of its run and its `gap` field holds the run's last
//! value. The tree keeps no largest-gap bounds ([`Tree::without_bounds`]: nothing here reads
//! them), so shrinking a run is one write after the lookup, and inserts and removals do not
//! read the siblings along their path.

use super::tree::{NIL, Tree};
use crate::error::Result;

/// Sorted, disjoint runs `lo..=hi`: O(log r) lookup, removal and split for r runs, memory
/// reserved before it is used.
#[derive(Clone, Debug)]
pub(crate) struct RunSet {
    tree: Tree,
}

impl RunSet {
    /// No runs.
    pub(crate) fn new() -> Self {
        Self {
            tree: Tree::without_bounds(),
        }
    }

    /// The single run `lo..=hi`.
    ///
    /// # Errors
    ///
    /// [`Error::HeapRefused`](crate::Error::HeapRefused) if the heap refuses the node.
    pub(crate) fn one(lo: u64, hi: u64) -> Result<Self> {
        let mut this = Self::new();
        this.tree.try_reserve(1)?;
        this.tree.insert(lo, hi);
        Ok(this)
    }

    /// Runs given in increasing order, disjoint and not adjacent (the caller checked): O(n), the
    /// index built balanced in one pass.
    ///
    /// # Errors
    ///
    /// [`Error::HeapRefused`](crate::Error::HeapRefused) if the heap refuses the index.
    #[cfg(feature = "serde")]
    pub(crate) fn from_sorted(runs: impl ExactSizeIterator<Item = (u64, u64)>) -> Result<Self> {
        let mut this = Self::new();
        this.tree.build(runs)?;
        Ok(this)
    }

    /// Heap bytes held (capacity included).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.tree.capacity_bytes()
    }

    /// Makes room for one more run, so that the next [`cut`](Self::cut) allocates nothing.
    ///
    /// # Errors
    ///
    /// [`Error::HeapRefused`](crate::Error::HeapRefused) if the heap refuses; the runs are
    /// unchanged.
    pub(crate) fn reserve_one(&mut self) -> Result<()> {
        // With no runs, nothing can be split.
        if self.tree.is_empty() {
            return Ok(());
        }
        self.tree.try_reserve(1)
    }

    /// Whether a run holds `v`.
    pub(crate) fn contains(&self, v: u64) -> bool {
        let pred = self.tree.around(v).pred;
        pred != NIL && v <= self.tree.node(pred).gap
    }

    /// The runs in increasing order, as `(lo, hi)`.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.tree.iter().map(|t| {
            let n = self.tree.node(t);
            (n.start, n.gap)
        })
    }

    /// Removes `lo..=hi` from the runs: each run it overlaps loses that part. Splitting a run
    /// in two adds one run, which needs the room [`reserve_one`](Self::reserve_one) made; no
    /// other case adds one. O(log r) per run touched.
    pub(crate) fn cut(&mut self, lo: u64, hi: u64) {
        // Runs are disjoint and sorted, so the last one starting at or before `hi` overlaps the
        // range exactly when it ends at or after `lo`, and when it does not, no run does.
        loop {
            let pred = self.tree.around(hi).pred;
            if pred == NIL {
                return;
            }
            let n = self.tree.node(pred);
            let (start, end) = (n.start, n.gap);
            if end < lo {
                return;
            }
            match (start < lo, end > hi) {
                (true, true) => {
                    // Split: the low part keeps the node, the high part is a new one.
                    self.tree.set_unbounded(pred, start, lo - 1);
                    self.tree.insert(hi + 1, end);
                    return;
                }
                (true, false) => {
                    // Runs below end before `start`, below `lo`.
                    self.tree.set_unbounded(pred, start, lo - 1);
                    return;
                }
                // The run now starts past `hi`, between its old start and its successor's.
                (false, true) => self.tree.set_unbounded(pred, hi + 1, end),
                (false, false) => {
                    self.tree.remove(start, None);
                }
            }
        }
    }
}

impl PartialEq for RunSet {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for RunSet {}
