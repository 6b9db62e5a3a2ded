//! The index behind [`AddressAllocator`](super::AddressAllocator): an AVL tree of live
//! allocations in a dense arena, each node knowing the free gap in front of it and an upper bound
//! of the largest gap in its subtree.
//!
//! A node stores its allocation's start and the free units between the previous allocation (or
//! the start of the space) and that start. An allocation's end is therefore read from its
//! successor: `succ.start - succ.gap - 1`, or from the free tail after the last node.
//!
//! The tree is height-balanced (AVL): the heights of a node's two subtrees differ by at most one,
//! so a tree of n nodes is at most `1.44 * log2(n + 2)` levels deep whatever the addresses and
//! whatever the order of the operations. With fewer than 2^32 nodes that is below 47 levels, so
//! every walk keeps its path in a fixed array of [`MAX_HEIGHT`] entries: no recursion, no heap
//! allocation. The balance factor lives in the top two bits of the largest-gap word, so a node
//! stays 28 bytes.
//!
//! The largest-gap bound is kept as a 30-bit floating encoding that is exact below 2^24 and
//! otherwise rounds up; pruning with an upper bound never skips a fit.

use alloc::vec::Vec;

use crate::error::{Error, Result};

/// Index of "no node".
pub(super) const NIL: u32 = u32::MAX;

/// Most nodes a tree holds: one per index below [`NIL`], 2^32 - 1.
pub(super) const MAX_NODES: u32 = NIL;

/// Room for any path: an AVL tree of fewer than 2^32 nodes is at most 46 levels deep.
const MAX_HEIGHT: usize = 64;

/// Bits of [`Node::meta`] that hold the encoded largest gap; the two bits above hold the balance.
const GAP_MASK: u32 = (1 << 30) - 1;

/// One live allocation. 28 bytes: the arena costs at most 32 bytes per live range with its
/// growth slack.
#[derive(Clone, Copy, Debug)]
#[repr(C, packed(4))]
pub(super) struct Node {
    /// First unit of the allocation.
    pub(super) start: u64,
    /// Free units right before `start`.
    pub(super) gap: u64,
    left: u32,
    right: u32,
    /// Bits 0..30: encoded upper bound of the largest `gap` in this subtree. Bits 30..32: the
    /// balance factor, height(right) - height(left): 0 -> 0, 1 -> -1, 2 -> +1.
    meta: u32,
}

impl Node {
    fn bal(self) -> i8 {
        match self.meta >> 30 {
            1 => -1,
            2 => 1,
            _ => 0,
        }
    }

    fn child(self, right: bool) -> u32 {
        if right { self.right } else { self.left }
    }
}

/// Encodes `v` as `m << e` (`e` in bits 24..30, 24-bit `m` below), rounding up.
pub(super) fn encode_bound(v: u64) -> u32 {
    const M: u32 = 24;
    let bits = 64 - v.leading_zeros();
    if bits <= M {
        // Fits the mantissa exactly: `e` is 0.
        return u32::try_from(v).unwrap_or(u32::MAX);
    }
    let mut e = bits - M;
    let rounded_up = v & ((1u64 << e) - 1) != 0;
    let mut m = (v >> e) + u64::from(rounded_up);
    if m == 1 << M {
        m >>= 1;
        e += 1;
    }
    (e << M) | u32::try_from(m).unwrap_or(u32::MAX)
}

/// Decodes [`encode_bound`]; saturates at `u64::MAX` (only 2^64 itself needs it).
pub(super) fn decode_bound(c: u32) -> u64 {
    let e = c >> 24;
    let m = u64::from(c & 0x00ff_ffff);
    if e >= 41 {
        return u64::MAX;
    }
    m << e
}

/// A walk from the root: the nodes passed and, for each, whether the walk went right.
struct Path {
    nodes: [u32; MAX_HEIGHT],
    right: u64,
    len: usize,
}

impl Path {
    fn new() -> Self {
        Self {
            nodes: [NIL; MAX_HEIGHT],
            right: 0,
            len: 0,
        }
    }

    fn push(&mut self, t: u32, right: bool) {
        // A balanced tree of fewer than 2^32 nodes never fills the array; indexing checks it.
        self.nodes[self.len] = t;
        if right {
            self.right |= 1 << self.len;
        } else {
            self.right &= !(1 << self.len);
        }
        self.len += 1;
    }

    fn get(&self, k: usize) -> (u32, bool) {
        (self.nodes[k], self.right & (1 << k) != 0)
    }
}

/// What [`Tree::locate`] found: the nodes around an address and the path to them.
pub(super) struct Located {
    pub(super) around: Around,
    path: Path,
    /// Positions of `around.pred` and `around.succ` on `path` (when they are not `NIL`).
    pred_at: usize,
    succ_at: usize,
}

/// The AVL tree. Node indices are dense: `0..len`.
#[derive(Clone, Debug)]
pub(super) struct Tree {
    nodes: Vec<Node>,
    root: u32,
    /// Whether the largest-gap bounds are kept. Trees used as ordered maps (runs of IDs, keys)
    /// never read them, and skipping them saves reading both children of every node on a path.
    bounds: bool,
    /// Nodes visited by inserts and removes so far (path lengths), for tests that bound the work.
    work: u64,
    /// Nodes probed by placement searches so far, for tests that bound the work.
    #[cfg(test)]
    pub(super) probes: core::cell::Cell<u64>,
}

/// What a descent for an address found: the node with the largest start `<= addr` and the one
/// with the smallest start `> addr`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Around {
    pub(super) pred: u32,
    pub(super) succ: u32,
}

impl Tree {
    pub(super) fn new() -> Self {
        Self {
            nodes: Vec::new(),
            root: NIL,
            bounds: true,
            work: 0,
            #[cfg(test)]
            probes: core::cell::Cell::new(0),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.root == NIL
    }

    pub(super) fn node(&self, i: u32) -> Node {
        #[cfg(test)]
        tests::count_node_read();
        self.nodes[i as usize]
    }

    /// Nodes read (through [`node`](Self::node)) on this thread so far, for tests that bound
    /// the work of a search.
    #[cfg(test)]
    pub(crate) fn nodes_read() -> usize {
        tests::NODES_READ.with(core::cell::Cell::get)
    }

    pub(super) fn capacity_bytes(&self) -> usize {
        self.nodes.capacity() * core::mem::size_of::<Node>()
    }

    pub(super) fn shrink_to_fit(&mut self) {
        self.nodes.shrink_to_fit();
    }

    /// Nodes visited by inserts and removes since the tree was made.
    #[cfg(any(test, feature = "model"))]
    pub(super) fn work(&self) -> u64 {
        self.work
    }

    /// The number of levels (0 for an empty tree). O(n).
    #[cfg(any(test, feature = "model"))]
    pub(super) fn height(&self) -> usize {
        let mut best = 0;
        let mut stack: Vec<(u32, usize)> = Vec::new();
        if self.root != NIL {
            stack.push((self.root, 1));
        }
        while let Some((t, d)) = stack.pop() {
            best = best.max(d);
            let n = self.node(t);
            for c in [n.left, n.right] {
                if c != NIL {
                    stack.push((c, d + 1));
                }
            }
        }
        best
    }

    /// Sets the gap of node `i`. The caller must then [`insert`](Self::insert) the node right
    /// before `i`, whose search path passes through `i`, so the bounds above it are fixed.
    pub(super) fn set_gap(&mut self, i: u32, gap: u64) {
        self.nodes[i as usize].gap = gap;
        self.pull(i);
    }

    /// Finds the nodes around `addr`.
    pub(super) fn around(&self, addr: u64) -> Around {
        let mut out = Around {
            pred: NIL,
            succ: NIL,
        };
        let mut t = self.root;
        while t != NIL {
            let n = self.node(t);
            if n.start <= addr {
                out.pred = t;
                t = n.right;
            } else {
                out.succ = t;
                t = n.left;
            }
        }
        out
    }

    /// The node after `i` in address order: the first whose start is above `i`'s.
    pub(super) fn successor(&self, i: u32) -> u32 {
        self.around(self.node(i).start).succ
    }

    /// Makes room for `more` nodes beyond those present, so that as many inserts need no
    /// memory. The arena grows by an eighth (at least 16 nodes) at a time, so that spare
    /// capacity stays small.
    ///
    /// # Errors
    ///
    /// [`Error::HeapRefused`] if the heap refuses the memory; the tree is unchanged.
    pub(super) fn try_reserve(&mut self, more: usize) -> Result<()> {
        let (len, cap) = (self.nodes.len(), self.nodes.capacity());
        if cap - len >= more {
            return Ok(());
        }
        let extra = more.max(len / 8).max(16);
        self.nodes
            .try_reserve_exact(extra)
            .map_err(|_| heap_refused::<Node>(extra))
    }

    /// Appends a node to the arena. Every caller has reserved its room first
    /// ([`try_reserve`](Self::try_reserve)), so this never allocates.
    fn push_node(&mut self, start: u64, gap: u64) -> u32 {
        let i = u32::try_from(self.nodes.len()).unwrap_or(NIL);
        debug_assert!(
            self.nodes.len() < self.nodes.capacity(),
            "room not reserved"
        );
        self.nodes.push(Node {
            start,
            gap,
            left: NIL,
            right: NIL,
            meta: encode_bound(gap),
        });
        i
    }

    /// Inserts a node. The caller has checked that the tree holds fewer than [`MAX_NODES`] and
    /// that `start` is not present, has reserved room for it ([`try_reserve`](Self::try_reserve)),
    /// and has already set the gap of the node that follows it: that node lies on the search
    /// path for `start`, whose every node is pulled here.
    pub(super) fn insert(&mut self, start: u64, gap: u64) -> u32 {
        let i = self.push_node(start, gap);
        let mut path = Path::new();
        let mut t = self.root;
        while t != NIL {
            let n = self.node(t);
            let right = start > n.start;
            path.push(t, right);
            t = n.child(right);
        }
        self.work += path.len as u64 + 1;
        self.replace_child(&path, path.len, i);
        let mut growing = true;
        for k in (0..path.len).rev() {
            let (p, right) = path.get(k);
            if !growing {
                self.pull(p);
                continue;
            }
            let b = self.node(p).bal() + if right { 1 } else { -1 };
            if b.abs() <= 1 {
                self.set_bal(p, b);
                self.pull(p);
                // The subtree grew unless it is now balanced.
                growing = b != 0;
            } else {
                // After an insert, a rotation restores the height the subtree had before.
                let (sub, _) = self.rebalance(p, b);
                self.replace_child(&path, k, sub);
                growing = false;
            }
        }
        i
    }

    /// Removes the node that starts at `start` (it must be present), sets the gap of the node
    /// that followed it (if any, by its start) to `succ_gap`, and returns the index the removed
    /// node had. The node that was last in the arena moves into that index (the caller moves its
    /// side data the same way, as `Vec::swap_remove` does).
    pub(super) fn remove(&mut self, start: u64, succ: Option<(u64, u64)>) -> u32 {
        let mut path = Path::new();
        let mut t = self.root;
        while t != NIL {
            let n = self.node(t);
            if n.start == start {
                break;
            }
            let right = start > n.start;
            path.push(t, right);
            t = n.child(right);
        }
        let m = t;
        let n = self.node(m);
        let at = path.len;
        if n.left != NIL && n.right != NIL {
            // Put the in-order successor (leftmost of the right subtree) in the removed node's
            // place; the right subtree lost a node.
            path.push(m, true);
            let mut s = n.right;
            loop {
                let sn = self.node(s);
                if sn.left == NIL {
                    break;
                }
                path.push(s, false);
                s = sn.left;
            }
            let sr = self.node(s).right;
            self.replace_child(&path, path.len, sr);
            let after = self.node(m);
            let sn = &mut self.nodes[s as usize];
            sn.left = after.left;
            sn.right = after.right;
            self.set_bal(s, after.bal());
            path.nodes[at] = s;
            self.replace_child(&path, at, s);
        } else {
            let child = if n.left != NIL { n.left } else { n.right };
            self.replace_child(&path, at, child);
        }
        self.work += path.len as u64 + 1;
        let mut shrinking = true;
        for k in (0..path.len).rev() {
            let (p, right) = path.get(k);
            if !shrinking {
                self.pull(p);
                continue;
            }
            let b = self.node(p).bal() + if right { -1 } else { 1 };
            if b.abs() <= 1 {
                self.set_bal(p, b);
                self.pull(p);
                // The subtree got lower only if it was leaning to the side that lost a node.
                shrinking = b == 0;
            } else {
                let (sub, lower) = self.rebalance(p, b);
                self.replace_child(&path, k, sub);
                shrinking = lower;
            }
        }
        if let Some((succ_start, gap)) = succ {
            self.update_gap(succ_start, gap);
        }
        let last = u32::try_from(self.nodes.len() - 1).unwrap_or(NIL);
        if m != last {
            let moved = self.node(last);
            self.nodes[m as usize] = moved;
            self.relink(moved.start, last, m);
        }
        self.nodes.pop();
        m
    }

    /// A tree that keeps no largest-gap bounds, for use as an ordered map from `start` to
    /// `gap` ([`RunSet`](super::RunSet), the key maps): placement searches and
    /// [`check`](Self::check) need the bounds and are not for it.
    pub(super) fn without_bounds() -> Self {
        Self {
            bounds: false,
            ..Self::new()
        }
    }

    /// Sets node `i`'s start and gap in a tree [`without_bounds`](Self::without_bounds): O(1).
    /// `start` must lie strictly between the starts of the node's neighbours, so the order of
    /// the tree is kept.
    pub(super) fn set_unbounded(&mut self, i: u32, start: u64, gap: u64) {
        debug_assert!(!self.bounds, "the bounds on the path would go stale");
        let node = &mut self.nodes[i as usize];
        node.start = start;
        node.gap = gap;
    }

    /// Sets the gap of the node that starts at `start` (it must be present) and refreshes the
    /// bounds on its path.
    pub(super) fn update_gap(&mut self, start: u64, gap: u64) {
        self.update(start, start, gap);
    }

    /// Moves the node that starts at `start` (it must be present) to `new_start`, which lies
    /// strictly between the starts of its neighbours (so the order is kept), sets its gap, and
    /// refreshes the bounds on its path.
    pub(super) fn update(&mut self, start: u64, new_start: u64, gap: u64) {
        let mut path = Path::new();
        let mut t = self.root;
        while t != NIL {
            let n = self.node(t);
            path.push(t, start > n.start);
            if n.start == start {
                break;
            }
            t = n.child(start > n.start);
        }
        self.work += path.len as u64;
        self.set_on_path(&path, path.len - 1, new_start, gap);
    }

    /// Finds the nodes around `addr`, as [`around`](Self::around) does, and keeps the path
    /// taken, so that [`set_at`](Self::set_at) can change either of them without a second
    /// descent.
    pub(super) fn locate(&self, addr: u64) -> Located {
        let mut out = Located {
            around: Around {
                pred: NIL,
                succ: NIL,
            },
            path: Path::new(),
            pred_at: 0,
            succ_at: 0,
        };
        let mut t = self.root;
        while t != NIL {
            let n = self.node(t);
            let right = n.start <= addr;
            if right {
                out.around.pred = t;
                out.pred_at = out.path.len;
            } else {
                out.around.succ = t;
                out.succ_at = out.path.len;
            }
            out.path.push(t, right);
            t = n.child(right);
        }
        out
    }

    /// Moves the predecessor (`pred`) or the successor found by `at` to `new_start`, which
    /// lies strictly between the starts of its neighbours, sets its gap, and refreshes the
    /// bounds on the path `at` took: no second descent. `at` must be the tree's last
    /// [`locate`](Self::locate), with no change since.
    pub(super) fn set_at(&mut self, at: &Located, pred: bool, new_start: u64, gap: u64) {
        let k = if pred { at.pred_at } else { at.succ_at };
        debug_assert_eq!(
            at.path.get(k).0,
            if pred { at.around.pred } else { at.around.succ }
        );
        self.work += k as u64 + 1;
        self.set_on_path(&at.path, k, new_start, gap);
    }

    /// Sets the start and gap of `path[k]` and brings the bounds of `path[..=k]` up to date,
    /// bottom up: a node's bound is read again from its other child only where the largest
    /// gap below it shrank and was its bound; it stops at the first node whose bound does not
    /// change.
    fn set_on_path(&mut self, path: &Path, k: usize, new_start: u64, gap: u64) {
        let t = path.get(k).0;
        let node = &mut self.nodes[t as usize];
        let old_gap = node.gap;
        node.start = new_start;
        node.gap = gap;
        if !self.bounds {
            return;
        }
        // What changed below each node on the way up: the encoded bound of one of its parts
        // (its own gap first, then the child on the path), from `old` to `new`.
        let (mut old, mut new) = (encode_bound(old_gap), encode_bound(gap));
        for j in (0..=k).rev() {
            if old == new {
                return;
            }
            let p = path.get(j).0;
            let meta = self.nodes[p as usize].meta;
            let bound = meta & GAP_MASK;
            // Codes order as the values they encode, so the bound is the largest code of the
            // node's gap and its children's bounds.
            let fresh = if new >= bound {
                new
            } else if old < bound {
                // The part that changed was below the bound before and still is.
                return;
            } else if j == k {
                let n = self.node(p);
                encode_bound(gap.max(self.max_of(n.left)).max(self.max_of(n.right)))
            } else {
                // The child on the path now has bound `new`: only the other one is read.
                let n = self.node(p);
                let other = n.child(!path.get(j).1);
                encode_bound(n.gap.max(self.max_of(other))).max(new)
            };
            self.nodes[p as usize].meta = (meta & !GAP_MASK) | fresh;
            (old, new) = (bound, fresh);
        }
    }

    /// Makes `child` the subtree below `path[..k]`: the root if `k` is 0, otherwise the child of
    /// `path[k - 1]` on the side the walk took.
    fn replace_child(&mut self, path: &Path, k: usize, child: u32) {
        if k == 0 {
            self.root = child;
            return;
        }
        let (p, right) = path.get(k - 1);
        let n = &mut self.nodes[p as usize];
        if right {
            n.right = child;
        } else {
            n.left = child;
        }
    }

    /// Restores balance at `x`, whose balance factor would be `b` (+2 or -2). Returns the new
    /// root of the subtree and whether the subtree is now one level lower than it was with `x`
    /// unbalanced (always the case after an insert; after a removal, unless the taller child
    /// was itself balanced).
    fn rebalance(&mut self, x: u32, b: i8) -> (u32, bool) {
        let right = b > 0;
        let y = self.node(x).child(right);
        let by = self.node(y).bal();
        let lean = if right { 1 } else { -1 };
        if by == -lean {
            // Double rotation: `y`'s inner child `z` becomes the root.
            let z = self.node(y).child(!right);
            let bz = self.node(z).bal();
            let (zl, zr) = (self.node(z).left, self.node(z).right);
            if right {
                self.nodes[x as usize].right = zl;
                self.nodes[y as usize].left = zr;
                self.nodes[z as usize].left = x;
                self.nodes[z as usize].right = y;
            } else {
                self.nodes[x as usize].left = zr;
                self.nodes[y as usize].right = zl;
                self.nodes[z as usize].right = x;
                self.nodes[z as usize].left = y;
            }
            self.set_bal(x, if bz == lean { -lean } else { 0 });
            self.set_bal(y, if bz == -lean { lean } else { 0 });
            self.set_bal(z, 0);
            self.pull(x);
            self.pull(y);
            self.pull(z);
            return (z, true);
        }
        // Single rotation: `y` becomes the root, its inner subtree moves under `x`.
        let inner = self.node(y).child(!right);
        if right {
            self.nodes[x as usize].right = inner;
            self.nodes[y as usize].left = x;
        } else {
            self.nodes[x as usize].left = inner;
            self.nodes[y as usize].right = x;
        }
        if by == 0 {
            self.set_bal(x, lean);
            self.set_bal(y, -lean);
        } else {
            self.set_bal(x, 0);
            self.set_bal(y, 0);
        }
        self.pull(x);
        self.pull(y);
        (y, by != 0)
    }

    fn set_bal(&mut self, t: u32, b: i8) {
        let code = match b {
            -1 => 1,
            1 => 2,
            _ => 0,
        };
        let n = &mut self.nodes[t as usize];
        n.meta = (n.meta & GAP_MASK) | (code << 30);
    }

    /// Replaces the link to `old` (the node starting at `start`) with `new`.
    fn relink(&mut self, start: u64, old: u32, new: u32) {
        if self.root == old {
            self.root = new;
            return;
        }
        let mut t = self.root;
        while t != NIL {
            let n = &mut self.nodes[t as usize];
            let next = if start < n.start { n.left } else { n.right };
            if next == old {
                if start < n.start {
                    n.left = new;
                } else {
                    n.right = new;
                }
                return;
            }
            t = next;
        }
    }

    /// An upper bound on the largest gap in the tree (0 when empty): the root's bound.
    pub(super) fn largest_gap_bound(&self) -> u64 {
        self.max_of(self.root)
    }

    /// The largest gap in the tree (0 when empty), exactly: a walk that enters a subtree only
    /// if its bound is above the largest gap seen so far, the child with the larger bound
    /// first. The bounds are exact below 2^24, so then it walks down the path to the largest
    /// gap, O(log n); gaps above that which round to the same bound as the largest may each
    /// add a path (at worst every node: O(n)).
    pub(super) fn largest_gap(&self) -> u64 {
        let mut best = 0;
        // Each level leaves at most one sibling waiting, and a tree of fewer than 2^32 nodes
        // has at most 46 levels.
        let mut stack = [NIL; 2 * MAX_HEIGHT];
        let mut len = 0;
        if self.root != NIL {
            stack[0] = self.root;
            len = 1;
        }
        while len > 0 {
            len -= 1;
            let t = stack[len];
            if self.max_of(t) <= best {
                continue;
            }
            let n = self.node(t);
            best = best.max(n.gap);
            let (later, first) = if self.max_of(n.left) >= self.max_of(n.right) {
                (n.right, n.left)
            } else {
                (n.left, n.right)
            };
            for c in [later, first] {
                if c != NIL && self.max_of(c) > best {
                    stack[len] = c;
                    len += 1;
                }
            }
        }
        best
    }

    fn max_of(&self, t: u32) -> u64 {
        if t == NIL {
            0
        } else {
            decode_bound(self.node(t).meta & GAP_MASK)
        }
    }

    fn pull(&mut self, t: u32) {
        if !self.bounds {
            return;
        }
        let n = self.node(t);
        let m = n.gap.max(self.max_of(n.left)).max(self.max_of(n.right));
        self.nodes[t as usize].meta = (n.meta & !GAP_MASK) | encode_bound(m);
    }

    /// Builds the tree from `(start, gap)` pairs in increasing start order, replacing what was
    /// there: O(n), perfectly balanced (each node the middle of its range).
    ///
    /// # Errors
    ///
    /// [`Error::HeapRefused`] if the heap refuses the arena (exactly one node per item) or the
    /// visiting order (4 bytes per item, freed before returning); the tree is empty then.
    #[cfg(any(test, feature = "serde"))]
    pub(super) fn build(&mut self, items: impl ExactSizeIterator<Item = (u64, u64)>) -> Result<()> {
        self.nodes.clear();
        self.root = NIL;
        let count = items.len();
        let mut order: Vec<u32> = Vec::new();
        self.nodes
            .try_reserve_exact(count)
            .map_err(|_| heap_refused::<Node>(count))?;
        order
            .try_reserve_exact(count)
            .map_err(|_| heap_refused::<u32>(count))?;
        for (start, gap) in items.take(count) {
            self.push_node(start, gap);
        }
        let n = u32::try_from(self.nodes.len()).unwrap_or(NIL);
        self.work += u64::from(n);
        if n == 0 {
            return Ok(());
        }
        // Pre-order over index ranges `[lo, hi)`; `order` lists the nodes in that order, so
        // reading it backwards visits every child before its parent. The stack holds at most
        // one pending right half per level (33 levels for 2^32 nodes): a fixed array.
        let mut stack = [(0u32, 0u32, NIL, false); MAX_HEIGHT];
        stack[0] = (0, n, NIL, false);
        let mut depth = 1;
        while depth > 0 {
            depth -= 1;
            let (lo, hi, parent, right) = stack[depth];
            let mid = lo + (hi - lo) / 2;
            let (ls, rs) = (mid - lo, hi - mid - 1);
            // A midpoint split of s nodes is bit_length(s) levels deep.
            let h = |s: u32| 32 - s.leading_zeros();
            let b = i8::try_from(i64::from(h(rs)) - i64::from(h(ls))).unwrap_or(0);
            self.set_bal(mid, b);
            if parent == NIL {
                self.root = mid;
            } else if right {
                self.nodes[parent as usize].right = mid;
            } else {
                self.nodes[parent as usize].left = mid;
            }
            order.push(mid);
            if ls > 0 {
                stack[depth] = (lo, mid, mid, false);
                depth += 1;
            }
            if rs > 0 {
                stack[depth] = (mid + 1, hi, mid, true);
                depth += 1;
            }
        }
        for &t in order.iter().rev() {
            self.pull(t);
        }
        Ok(())
    }

    /// Depth-first search in address order (`rev` for descending) for the first node whose gap
    /// yields a placement. Subtrees whose largest gap is below `size` are skipped (`skipped`
    /// is raised to their largest-gap bound), as are those that the probe rules out by
    /// position. Iterative; the stack holds at most one frame per level.
    pub(super) fn find<F>(
        &self,
        size: u64,
        rev: bool,
        f: &mut F,
        skipped: &mut u64,
    ) -> Option<(u32, u64)>
    where
        F: FnMut(&Node) -> Search,
    {
        // Each frame: a node, what the probe said about it, and whether its first subtree is
        // done.
        let mut stack: [(u32, Search); MAX_HEIGHT] = [(NIL, Search::NONE); MAX_HEIGHT];
        let mut len = 0usize;
        let mut next = self.root;
        loop {
            let bound = self.max_of(next);
            if next != NIL && bound < size {
                *skipped = (*skipped).max(bound);
            }
            if next != NIL && bound >= size {
                let n = self.node(next);
                #[cfg(test)]
                self.probes.set(self.probes.get() + 1);
                let s = f(&n);
                stack[len] = (next, s);
                len += 1;
                let (first, go) = if rev {
                    (n.right, s.right)
                } else {
                    (n.left, s.left)
                };
                next = if go { first } else { NIL };
                continue;
            }
            // The first subtree of the top frame is done: try its own gap, then its second
            // subtree in its place (the frame is finished either way).
            if len == 0 {
                return None;
            }
            len -= 1;
            let (t, s) = stack[len];
            if let Some(addr) = s.here {
                return Some((t, addr));
            }
            let n = self.node(t);
            let (second, go) = if rev {
                (n.left, s.left)
            } else {
                (n.right, s.right)
            };
            next = if go { second } else { NIL };
        }
    }

    /// Nodes in address order.
    pub(super) fn iter(&self) -> InOrder<'_> {
        let mut it = InOrder {
            tree: self,
            stack: [NIL; MAX_HEIGHT],
            len: 0,
        };
        it.push_left(self.root);
        it
    }

    /// Checks the structure (order, balance, bounds, arena density); used by tests. Iterative.
    pub(super) fn check(&self) -> core::result::Result<(), &'static str> {
        let len = self.nodes.len();
        // Post-order: heights and true largest gaps of each subtree.
        let mut height = alloc::vec![0u8; len];
        let mut largest = alloc::vec![0u64; len];
        let mut visited = 0usize;
        let mut stack: Vec<(u32, bool)> = Vec::new();
        if self.root != NIL {
            stack.push((self.root, false));
        }
        while let Some((t, children_done)) = stack.pop() {
            if t as usize >= len {
                return Err("link outside the arena");
            }
            let n = self.node(t);
            if !children_done {
                visited += 1;
                if visited > len {
                    return Err("a node is reachable twice");
                }
                stack.push((t, true));
                for c in [n.left, n.right] {
                    if c != NIL {
                        stack.push((c, false));
                    }
                }
                continue;
            }
            let (hl, ml) = self.sub(n.left, &height, &largest);
            let (hr, mr) = self.sub(n.right, &height, &largest);
            if i16::from(hr) - i16::from(hl) != i16::from(n.bal()) || n.meta >> 30 == 3 {
                return Err("balance factor wrong or out of range");
            }
            let m = n.gap.max(ml).max(mr);
            if decode_bound(n.meta & GAP_MASK) < m {
                return Err("largest-gap bound below the real largest gap");
            }
            if n.meta & GAP_MASK != encode_bound(m) {
                return Err("largest-gap bound stale");
            }
            height[t as usize] = hl.max(hr) + 1;
            largest[t as usize] = m;
        }
        if visited != len {
            return Err("arena holds nodes that are not in the tree");
        }
        let mut prev: Option<u64> = None;
        for t in self.iter() {
            let s = self.node(t).start;
            if prev.is_some_and(|p| p >= s) {
                return Err("starts out of order");
            }
            prev = Some(s);
        }
        Ok(())
    }

    fn sub(&self, t: u32, height: &[u8], largest: &[u64]) -> (u8, u64) {
        if t == NIL {
            (0, 0)
        } else {
            (height[t as usize], largest[t as usize])
        }
    }
}

/// What the search closure says about one node.
#[derive(Clone, Copy, Debug)]
pub(super) struct Search {
    /// A placement in this node's gap, if any.
    pub(super) here: Option<u64>,
    /// Whether the lower-address subtree can hold a placement.
    pub(super) left: bool,
    /// Whether the higher-address subtree can hold a placement.
    pub(super) right: bool,
}

impl Search {
    const NONE: Self = Self {
        here: None,
        left: false,
        right: false,
    };
}

/// In-order iterator over node indices. Its stack holds one node per level, so it lives in a
/// fixed array: iterating never allocates.
#[derive(Clone, Debug)]
pub(super) struct InOrder<'a> {
    tree: &'a Tree,
    stack: [u32; MAX_HEIGHT],
    len: usize,
}

impl InOrder<'_> {
    fn push_left(&mut self, mut t: u32) {
        while t != NIL {
            // A balanced tree of fewer than 2^32 nodes never fills the array; indexing checks it.
            self.stack[self.len] = t;
            self.len += 1;
            t = self.tree.node(t).left;
        }
    }
}

impl Iterator for InOrder<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        self.len = self.len.checked_sub(1)?;
        let t = self.stack[self.len];
        self.push_left(self.tree.node(t).right);
        Some(t)
    }
}

/// [`Error::HeapRefused`] for `count` items of `E`.
pub(super) fn heap_refused<E>(count: usize) -> Error {
    let bytes = (count as u128).saturating_mul(core::mem::size_of::<E>() as u128);
    Error::HeapRefused {
        bytes: u64::try_from(bytes).unwrap_or(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]

    use super::*;

    std::thread_local! {
        /// Nodes read on this thread.
        pub(super) static NODES_READ: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
    }

    pub(super) fn count_node_read() {
        NODES_READ.with(|c| c.set(c.get() + 1));
    }

    #[test]
    fn node_size_is_28_bytes() {
        assert_eq!(core::mem::size_of::<Node>(), 28);
    }

    #[test]
    fn encode_bound_small_values_exact() {
        for v in [0, 1, 4095, 4096, (1 << 24) - 1] {
            assert_eq!(decode_bound(encode_bound(v)), v);
        }
    }

    #[test]
    fn encode_bound_large_values_round_up_tightly() {
        for v in [
            1 << 24,
            (1 << 24) + 1,
            (1 << 40) + 12345,
            u64::MAX / 3,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let d = decode_bound(encode_bound(v));
            assert!(d >= v, "{v:#x} decoded to {d:#x}");
            assert!(d - v <= (v >> 23) + 1, "{v:#x} decoded to {d:#x}");
        }
    }

    #[test]
    fn encode_bound_is_monotone_and_idempotent() {
        let mut prev = 0;
        for k in 0..64u32 {
            for v in [1u64 << k, (1u64 << k) | 1, (1u64 << k).wrapping_sub(1)] {
                let c = encode_bound(v);
                assert_eq!(encode_bound(decode_bound(c)), c);
                if v >= prev {
                    assert!(decode_bound(c) >= decode_bound(encode_bound(prev)));
                    prev = v;
                }
            }
        }
    }

    #[test]
    fn insert_remove_keeps_structure_valid() {
        let mut t = Tree::new();
        for k in 0..200u64 {
            t.try_reserve(1).unwrap();
            t.insert(k * 10, 5);
            t.check().unwrap();
        }
        for k in (0..200u64).step_by(3) {
            t.remove(k * 10, None);
            t.check().unwrap();
        }
        let starts: Vec<u64> = t.iter().map(|i| t.node(i).start).collect();
        let want: Vec<u64> = (0..200u64).filter(|k| k % 3 != 0).map(|k| k * 10).collect();
        assert_eq!(starts, want);
    }

    /// The AVL bound: at most `1.4405 * log2(n + 2) - 0.3277` levels.
    fn avl_limit(n: usize) -> usize {
        let n = n as f64;
        (1.4405 * (n + 2.0).log2() - 0.3277).floor() as usize
    }

    #[test]
    fn insert_ascending_keeps_height_logarithmic() {
        let mut t = Tree::new();
        for k in 0..4096u64 {
            t.try_reserve(1).unwrap();
            t.insert(k, 0);
        }
        t.check().unwrap();
        assert!(t.height() <= avl_limit(4096), "height {}", t.height());
    }

    #[test]
    fn insert_descending_keeps_height_logarithmic() {
        let mut t = Tree::new();
        for k in (0..4096u64).rev() {
            t.try_reserve(1).unwrap();
            t.insert(k * 2, 1);
        }
        t.check().unwrap();
        assert!(t.height() <= avl_limit(4096), "height {}", t.height());
    }

    #[test]
    fn remove_in_every_order_keeps_structure_valid() {
        for stride in [1u64, 7, 31, 97] {
            let mut t = Tree::new();
            let n = 300u64;
            for k in 0..n {
                t.try_reserve(1).unwrap();
                t.insert(k * 4, k);
            }
            for j in 0..n {
                let k = (j * stride) % n;
                if t.around(k * 4).pred != NIL && t.node(t.around(k * 4).pred).start == k * 4 {
                    t.remove(k * 4, None);
                    t.check().unwrap();
                    assert!(t.height() <= avl_limit(t.len()));
                }
            }
        }
    }

    #[test]
    fn build_sorted_is_balanced_and_valid() {
        for n in [0u64, 1, 2, 3, 7, 8, 100, 1000] {
            let mut t = Tree::new();
            t.build((0..n as usize).map(|k| (k as u64 * 10, k as u64)))
                .unwrap();
            t.check().unwrap();
            assert_eq!(t.len() as u64, n);
            assert!(t.height() <= avl_limit(t.len()));
            let starts: Vec<u64> = t.iter().map(|i| t.node(i).start).collect();
            assert_eq!(starts, (0..n).map(|k| k * 10).collect::<Vec<_>>());
        }
    }

    #[test]
    fn set_at_keeps_every_bound_exact() {
        // Gaps of every size class, those past 2^24 rounded in their bounds, changed at the
        // predecessor or the successor a descent found; the bounds must equal a fresh look.
        let mut next = crate::test_rng::xorshift(0x9E37_79B9_7F4A_7C15);
        let gap = |next: &mut dyn FnMut() -> u64| match next() % 4 {
            0 => next() % 4,
            1 => next() % 1000,
            2 => (1 << 24) + next() % (1 << 30),
            _ => next() >> 2,
        };
        let n = if cfg!(miri) { 40 } else { 400 };
        let mut t = Tree::new();
        t.build((0..n).map(|k| (k as u64 * 16, gap(&mut next))))
            .unwrap();
        t.check().unwrap();
        for _ in 0..if cfg!(miri) { 200 } else { 20_000 } {
            let addr = next() % (n as u64 * 16 + 8);
            let at = t.locate(addr);
            let pred = next().is_multiple_of(2);
            let i = if pred { at.around.pred } else { at.around.succ };
            if i == NIL {
                continue;
            }
            let start = t.node(i).start;
            // Sometimes moved within its slot of 16 (neighbours start 16 apart).
            let base = start - start % 16;
            let new_start = if next().is_multiple_of(4) {
                base + next() % 16
            } else {
                start
            };
            let g = gap(&mut next);
            t.set_at(&at, pred, new_start, g);
            t.check().unwrap();
            let (s, got) = (t.node(i).start, t.node(i).gap);
            assert_eq!((s, got), (new_start, g));
            let largest = t.iter().map(|j| t.node(j).gap).max().unwrap();
            assert_eq!(t.largest_gap(), largest);
        }
    }

    #[test]
    fn bound_refreshes_stay_exact_with_tied_and_rounded_gaps_between_rotations() {
        // Few gap values, so that both children and the node itself often hold the same
        // largest gap, and values past 2^24 that share a rounded bound (2^24 + 1 and
        // 2^24 + 2, 2^64 - 2 and 2^64 - 1) or sit next to it; small trees reshaped by
        // inserts and removals (rotations pull every bound on their path) between changes
        // made through a kept path and through a descent by start.
        const GAPS: [u64; 12] = [
            0,
            1,
            7,
            (1 << 24) - 1,
            1 << 24,
            (1 << 24) + 1,
            (1 << 24) + 2,
            (1 << 24) + 3,
            (1 << 40) + 1,
            u64::MAX - 2,
            u64::MAX - 1,
            u64::MAX,
        ];
        let mut next = crate::test_rng::xorshift(0x2545_F491_4F6C_DD1D);
        let mut gap = || GAPS[(next() % GAPS.len() as u64) as usize];
        let mut pick = crate::test_rng::xorshift(0x1234_5678_9ABC_DEF1);
        let rounds = if cfg!(miri) { 20 } else { 2_000 };
        for _ in 0..rounds {
            let mut t = Tree::new();
            let mut starts: Vec<u64> = Vec::new();
            for _ in 0..if cfg!(miri) { 20 } else { 60 } {
                // One node at most per slot of 4 starts.
                let slot = pick() % 24;
                let held = starts.iter().copied().find(|&s| s / 4 == slot);
                let present = held.is_some();
                let start = held.unwrap_or(slot * 4);
                match pick() % 4 {
                    0 | 1 if !present && starts.len() < 16 => {
                        t.try_reserve(1).unwrap();
                        t.insert(start, gap());
                        starts.push(start);
                    }
                    0 if present => {
                        // Sometimes with the gap of the node after it changed too.
                        let after = starts.iter().copied().filter(|&s| s > start).min();
                        let succ = after
                            .filter(|_| pick().is_multiple_of(2))
                            .map(|s| (s, gap()));
                        t.remove(start, succ);
                        starts.retain(|&s| s != start);
                    }
                    2 if present => t.update_gap(start, gap()),
                    _ => {
                        let at = t.locate(start);
                        let pred = pick().is_multiple_of(2);
                        let i = if pred { at.around.pred } else { at.around.succ };
                        if i != NIL {
                            let (s, g) = (t.node(i).start, gap());
                            // Neighbours start at least 4 apart: moving within the slot keeps
                            // the order.
                            let new_start = s - s % 4 + pick() % 4;
                            t.set_at(&at, pred, new_start, g);
                            assert_eq!((t.node(i).start, t.node(i).gap), (new_start, g));
                            starts.retain(|&x| x != s);
                            starts.push(new_start);
                        }
                    }
                }
                t.check().unwrap();
                let largest = t.iter().map(|j| t.node(j).gap).max().unwrap_or(0);
                assert_eq!(t.largest_gap(), largest);
                assert_eq!(t.largest_gap_bound(), decode_bound(encode_bound(largest)));
            }
        }
    }

    #[test]
    fn find_first_fit_skips_small_gaps() {
        let mut t = Tree::new();
        t.build((0..1000usize).map(|k| (k as u64 * 100, if k == 700 { 50 } else { 1 })))
            .unwrap();
        let mut probe = |n: &Node| Search {
            here: (n.gap >= 10).then_some(n.start - n.gap),
            left: true,
            right: true,
        };
        let hit = t
            .find(10, false, &mut probe, &mut 0)
            .map(|(i, a)| (t.node(i).start, a));
        assert_eq!(hit, Some((70_000, 69_950)));
    }
}
