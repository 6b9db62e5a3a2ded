//! The index behind [`AddressAllocator`](super::AddressAllocator): a treap of live allocations
//! in a dense arena, each node knowing the free gap in front of it and an upper bound of the
//! largest gap in its subtree.
//!
//! A node stores its allocation's start and the free units between the previous allocation (or
//! the start of the space) and that start. An allocation's end is therefore read from its
//! successor: `succ.start - succ.gap - 1`, or from the free tail after the last node.
//!
//! Priorities are a hash of the start address, so they need no storage and survive the moves
//! that keep the arena dense. The largest-gap bound is kept as a 32-bit floating encoding that
//! is exact below 2^24 and otherwise rounds up; pruning with an upper bound never skips a fit.

use alloc::vec::Vec;

/// Index of "no node".
pub(super) const NIL: u32 = u32::MAX;

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
    /// Encoded upper bound of the largest `gap` in this subtree.
    max_gap: u32,
}

/// Encodes `v` as `m << e` (`e` in the top byte, 24-bit `m` below), rounding up.
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

/// A 32-bit priority from a start address (a fixed mixing function).
fn priority(start: u64) -> u32 {
    let mut z = start.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    // Keep the high half; the truncation is the point.
    u32::try_from(z >> 32).unwrap_or(u32::MAX)
}

/// The treap. Node indices are dense: `0..len`.
#[derive(Clone, Debug, Default)]
pub(super) struct Tree {
    nodes: Vec<Node>,
    root: u32,
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
        }
    }

    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.root == NIL
    }

    pub(super) fn node(&self, i: u32) -> Node {
        self.nodes[i as usize]
    }

    pub(super) fn capacity_bytes(&self) -> usize {
        self.nodes.capacity() * core::mem::size_of::<Node>()
    }

    pub(super) fn shrink_to_fit(&mut self) {
        self.nodes.shrink_to_fit();
    }

    /// Whether one more node fits the `u32` index space.
    pub(super) fn has_room(&self) -> bool {
        self.nodes.len() < NIL as usize
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

    /// Inserts a node. The caller has checked [`has_room`](Self::has_room) and that `start` is
    /// not present, and has already set the gap of the node that follows it: that node lies on
    /// the search path for `start`, so its ancestors' bounds are refreshed here.
    pub(super) fn insert(&mut self, start: u64, gap: u64) -> u32 {
        let i = u32::try_from(self.nodes.len()).unwrap_or(NIL);
        if self.nodes.len() == self.nodes.capacity() {
            // Grow by an eighth so that spare capacity stays small.
            let extra = (self.nodes.len() / 8).max(16);
            self.nodes.reserve_exact(extra);
        }
        self.nodes.push(Node {
            start,
            gap,
            left: NIL,
            right: NIL,
            max_gap: encode_bound(gap),
        });
        self.root = self.insert_at(self.root, i, start, priority(start));
        i
    }

    /// Inserts node `i` (key `start`, priority `pri`) into subtree `t`: down the search path to
    /// the first node of lower priority, whose subtree is split around the new node. Every node
    /// on the search path for `start` is pulled on the way back.
    fn insert_at(&mut self, t: u32, i: u32, start: u64, pri: u32) -> u32 {
        if t == NIL {
            return i;
        }
        let n = self.node(t);
        if pri > priority(n.start) {
            let (l, r) = self.split(t, start);
            let new = &mut self.nodes[i as usize];
            new.left = l;
            new.right = r;
            self.pull(i);
            return i;
        }
        if start < n.start {
            let c = self.insert_at(n.left, i, start, pri);
            self.nodes[t as usize].left = c;
        } else {
            let c = self.insert_at(n.right, i, start, pri);
            self.nodes[t as usize].right = c;
        }
        self.pull(t);
        t
    }

    /// Removes the node that starts at `start` (it must be present), sets the gap of the node
    /// that followed it (if any, by its start) to `succ_gap`, and returns the index the removed
    /// node had. The node that was last in the arena moves into that index (the caller moves its
    /// side data the same way, as `Vec::swap_remove` does).
    pub(super) fn remove(&mut self, start: u64, succ: Option<(u64, u64)>) -> u32 {
        let (root, m) = self.remove_at(self.root, start);
        self.root = root;
        if let Some((succ_start, gap)) = succ {
            self.refresh(self.root, succ_start, gap);
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

    /// Unlinks the node with key `start` from subtree `t` (its children merged in its place)
    /// and returns the new subtree and the unlinked index.
    fn remove_at(&mut self, t: u32, start: u64) -> (u32, u32) {
        let n = self.node(t);
        if n.start == start {
            return (self.merge(n.left, n.right), t);
        }
        let m = if start < n.start {
            let (c, m) = self.remove_at(n.left, start);
            self.nodes[t as usize].left = c;
            m
        } else {
            let (c, m) = self.remove_at(n.right, start);
            self.nodes[t as usize].right = c;
            m
        };
        self.pull(t);
        (t, m)
    }

    /// Sets the gap of the node with key `start` in subtree `t` and pulls every node on the way
    /// back up.
    fn refresh(&mut self, t: u32, start: u64, gap: u64) {
        let n = self.node(t);
        if n.start == start {
            self.nodes[t as usize].gap = gap;
        } else if start < n.start {
            self.refresh(n.left, start, gap);
        } else {
            self.refresh(n.right, start, gap);
        }
        self.pull(t);
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

    fn max_of(&self, t: u32) -> u64 {
        if t == NIL {
            0
        } else {
            decode_bound(self.node(t).max_gap)
        }
    }

    fn pull(&mut self, t: u32) {
        let n = self.node(t);
        let m = n.gap.max(self.max_of(n.left)).max(self.max_of(n.right));
        self.nodes[t as usize].max_gap = encode_bound(m);
    }

    /// Splits `t` into starts `< key` and starts `>= key`.
    fn split(&mut self, t: u32, key: u64) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        let n = self.node(t);
        if n.start < key {
            let (l, r) = self.split(n.right, key);
            self.nodes[t as usize].right = l;
            self.pull(t);
            (t, r)
        } else {
            let (l, r) = self.split(n.left, key);
            self.nodes[t as usize].left = r;
            self.pull(t);
            (l, t)
        }
    }

    /// Joins two treaps where every start in `a` is below every start in `b`.
    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        let (na, nb) = (self.node(a), self.node(b));
        if priority(na.start) >= priority(nb.start) {
            let r = self.merge(na.right, b);
            self.nodes[a as usize].right = r;
            self.pull(a);
            a
        } else {
            let l = self.merge(a, nb.left);
            self.nodes[b as usize].left = l;
            self.pull(b);
            b
        }
    }

    /// Depth-first search in address order (`rev` for descending) for the first node whose gap
    /// yields a placement. Subtrees whose largest gap is below `size` are skipped, as are those
    /// that `skip_left`/`skip_right` rule out by position.
    pub(super) fn find<F>(&self, size: u64, rev: bool, f: &mut F) -> Option<(u32, u64)>
    where
        F: FnMut(&Node) -> Search,
    {
        self.find_in(self.root, size, rev, f)
    }

    fn find_in<F>(&self, t: u32, size: u64, rev: bool, f: &mut F) -> Option<(u32, u64)>
    where
        F: FnMut(&Node) -> Search,
    {
        if t == NIL || self.max_of(t) < size {
            return None;
        }
        let n = self.node(t);
        let s = f(&n);
        let (first, second, go_first, go_second) = if rev {
            (n.right, n.left, s.right, s.left)
        } else {
            (n.left, n.right, s.left, s.right)
        };
        if go_first && let Some(hit) = self.find_in(first, size, rev, f) {
            return Some(hit);
        }
        if let Some(addr) = s.here {
            return Some((t, addr));
        }
        if go_second {
            return self.find_in(second, size, rev, f);
        }
        None
    }

    /// Nodes in address order.
    pub(super) fn iter(&self) -> InOrder<'_> {
        let mut it = InOrder {
            tree: self,
            stack: Vec::new(),
        };
        it.push_left(self.root);
        it
    }

    /// Checks the structure (order, heap, bounds, arena density); used by tests.
    pub(super) fn check(&self) -> core::result::Result<(), &'static str> {
        let mut seen = 0usize;
        self.check_in(self.root, None, None, &mut seen)?;
        if seen != self.nodes.len() {
            return Err("arena holds nodes that are not in the tree");
        }
        Ok(())
    }

    fn check_in(
        &self,
        t: u32,
        lo: Option<u64>,
        hi: Option<u64>,
        seen: &mut usize,
    ) -> core::result::Result<u64, &'static str> {
        if t == NIL {
            return Ok(0);
        }
        *seen += 1;
        let n = self.node(t);
        if lo.is_some_and(|lo| n.start <= lo) || hi.is_some_and(|hi| n.start >= hi) {
            return Err("starts out of order");
        }
        for c in [n.left, n.right] {
            if c != NIL && priority(self.node(c).start) > priority(n.start) {
                return Err("heap order broken");
            }
        }
        let l = self.check_in(n.left, lo, Some(n.start), seen)?;
        let r = self.check_in(n.right, Some(n.start), hi, seen)?;
        let m = n.gap.max(l).max(r);
        if decode_bound(n.max_gap) < m {
            return Err("largest-gap bound below the real largest gap");
        }
        if n.max_gap != encode_bound(m) {
            return Err("largest-gap bound stale");
        }
        Ok(m)
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

/// In-order iterator over node indices.
#[derive(Debug)]
pub(super) struct InOrder<'a> {
    tree: &'a Tree,
    stack: Vec<u32>,
}

impl InOrder<'_> {
    fn push_left(&mut self, mut t: u32) {
        while t != NIL {
            self.stack.push(t);
            t = self.tree.node(t).left;
        }
    }
}

impl Iterator for InOrder<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let t = self.stack.pop()?;
        self.push_left(self.tree.node(t).right);
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
