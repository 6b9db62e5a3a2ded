//! [`Ranges`]: disjoint address ranges in a balanced search tree whose nodes live in one
//! vector, so that claiming a range allocates at most once (fallibly, before anything
//! changes) and releasing one never allocates.

use crate::status::Status;

/// No node.
const NIL: u32 = u32::MAX;

/// One range and its place in the tree.
#[derive(Clone, Copy, Debug)]
struct Node {
    /// First address.
    start: usize,
    /// Past the last address; above `start`.
    end: usize,
    /// The subtree of ranges before this one, or [`NIL`]; on the free list, the next free node.
    left: u32,
    /// The subtree of ranges after this one, or [`NIL`].
    right: u32,
    /// Nodes on the longest path down from this one, itself included.
    height: u8,
}

/// Disjoint, non-empty address ranges `start..end`, kept in an AVL tree ordered by start:
/// a look-up, a claim and a release each take O(log n) steps with n ranges (the tree's
/// height is under 1.45 log2(n + 2), so under 46 for every n a `u32` index allows).
#[derive(Debug)]
pub(crate) struct Ranges {
    /// Every node made, live or free.
    nodes: Vec<Node>,
    /// The tree's root, or [`NIL`].
    root: u32,
    /// The first free node, or [`NIL`]; the others follow through `left`.
    free: u32,
}

impl Ranges {
    /// No range (usable in a `static`).
    pub(crate) const fn new() -> Self {
        Self {
            nodes: Vec::new(),
            root: NIL,
            free: NIL,
        }
    }

    /// Adds `start..end` (the caller keeps `start < end`) if it shares no address with a range
    /// already there.
    ///
    /// # Errors
    /// [`Status::BlockInUse`] if it shares an address with one, [`Status::Os`] if the
    /// allocator refuses room for its node (or `u32::MAX` nodes are made, more than the
    /// contexts that can be live); nothing changes then.
    pub(crate) fn claim(&mut self, start: usize, end: usize) -> Result<(), Status> {
        // The range with the greatest start below `end` is the only one that can share an
        // address with the new one: any other that starts below `end` ends at or before its
        // start, so at or before `start` if this one does not reach past `start` either.
        let mut at = self.root;
        let mut before = None;
        while at != NIL {
            let node = self.node(at);
            if node.start < end {
                before = Some(node);
                at = node.right;
            } else {
                at = node.left;
            }
        }
        if before.is_some_and(|node| node.end > start) {
            return Err(Status::BlockInUse);
        }
        let node = Node {
            start,
            end,
            left: NIL,
            right: NIL,
            height: 1,
        };
        let new = if self.free == NIL {
            let index = u32::try_from(self.nodes.len())
                .ok()
                .filter(|&i| i != NIL)
                .ok_or(Status::Os)?;
            self.nodes.try_reserve(1).map_err(|_| Status::Os)?;
            self.nodes.push(node);
            index
        } else {
            let index = self.free;
            self.free = self.node(index).left;
            *self.node_mut(index) = node;
            index
        };
        self.root = self.insert(self.root, new);
        Ok(())
    }

    /// Removes the range that starts at `start`, if there is one; its node is kept for reuse.
    pub(crate) fn release(&mut self, start: usize) {
        let mut removed = NIL;
        self.root = self.remove(self.root, start, &mut removed);
        if removed != NIL {
            self.node_mut(removed).left = self.free;
            self.free = removed;
        }
    }

    /// The node at `index`, which the tree or the free list holds.
    fn node(&self, index: u32) -> Node {
        self.nodes[index as usize]
    }

    /// The node at `index`, to change.
    fn node_mut(&mut self, index: u32) -> &mut Node {
        &mut self.nodes[index as usize]
    }

    /// The height of the subtree at `index` (0 for [`NIL`]).
    fn height(&self, index: u32) -> u8 {
        if index == NIL {
            0
        } else {
            self.node(index).height
        }
    }

    /// Sets the height of the node at `index` from its children's.
    fn update(&mut self, index: u32) {
        let node = self.node(index);
        self.node_mut(index).height = 1 + self.height(node.left).max(self.height(node.right));
    }

    /// Turns the subtree at `index` right (its left child becomes its root); returns the root.
    fn rotate_right(&mut self, index: u32) -> u32 {
        let left = self.node(index).left;
        self.node_mut(index).left = self.node(left).right;
        self.node_mut(left).right = index;
        self.update(index);
        self.update(left);
        left
    }

    /// Turns the subtree at `index` left (its right child becomes its root); returns the root.
    fn rotate_left(&mut self, index: u32) -> u32 {
        let right = self.node(index).right;
        self.node_mut(index).right = self.node(right).left;
        self.node_mut(right).left = index;
        self.update(index);
        self.update(right);
        right
    }

    /// Balances the subtree at `index`, whose children are balanced and differ in height by
    /// at most 2; returns its root.
    fn rebalance(&mut self, index: u32) -> u32 {
        self.update(index);
        let Node { left, right, .. } = self.node(index);
        let (hl, hr) = (self.height(left), self.height(right));
        if hl > hr + 1 {
            if self.height(self.node(left).left) < self.height(self.node(left).right) {
                self.node_mut(index).left = self.rotate_left(left);
            }
            self.rotate_right(index)
        } else if hr > hl + 1 {
            if self.height(self.node(right).right) < self.height(self.node(right).left) {
                self.node_mut(index).right = self.rotate_right(right);
            }
            self.rotate_left(index)
        } else {
            index
        }
    }

    /// Puts the node `new` into the subtree at `index`; returns the subtree's root.
    fn insert(&mut self, index: u32, new: u32) -> u32 {
        if index == NIL {
            return new;
        }
        if self.node(new).start < self.node(index).start {
            let left = self.insert(self.node(index).left, new);
            self.node_mut(index).left = left;
        } else {
            let right = self.insert(self.node(index).right, new);
            self.node_mut(index).right = right;
        }
        self.rebalance(index)
    }

    /// Takes the node of the range starting at `start` out of the subtree at `index`, into
    /// `removed`; returns the subtree's root.
    fn remove(&mut self, index: u32, start: usize, removed: &mut u32) -> u32 {
        if index == NIL {
            return NIL;
        }
        let node = self.node(index);
        if start < node.start {
            let left = self.remove(node.left, start, removed);
            self.node_mut(index).left = left;
        } else if start > node.start {
            let right = self.remove(node.right, start, removed);
            self.node_mut(index).right = right;
        } else {
            *removed = index;
            if node.left == NIL {
                return node.right;
            }
            if node.right == NIL {
                return node.left;
            }
            // The next range takes the removed one's place.
            let mut next = NIL;
            let right = self.remove_first(node.right, &mut next);
            self.node_mut(next).left = node.left;
            self.node_mut(next).right = right;
            return self.rebalance(next);
        }
        self.rebalance(index)
    }

    /// Takes the first node out of the subtree at `index`, into `first`; returns the
    /// subtree's root.
    fn remove_first(&mut self, index: u32, first: &mut u32) -> u32 {
        let node = self.node(index);
        if node.left == NIL {
            *first = index;
            return node.right;
        }
        let left = self.remove_first(node.left, first);
        self.node_mut(index).left = left;
        self.rebalance(index)
    }
}

// Safe code only: Miri would spend a minute on these tests and check nothing the native run
// does not.
#[cfg(all(test, not(miri)))]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    impl Ranges {
        /// The ranges in order, after checking the tree: ordered, disjoint, heights right and
        /// balanced, every node either in it or free.
        fn check(&self) -> Vec<(usize, usize)> {
            fn walk(r: &Ranges, index: u32, out: &mut Vec<(usize, usize)>) -> u8 {
                if index == NIL {
                    return 0;
                }
                let node = r.node(index);
                let hl = walk(r, node.left, out);
                out.push((node.start, node.end));
                let hr = walk(r, node.right, out);
                assert!(hl.abs_diff(hr) <= 1, "unbalanced at {index}");
                assert_eq!(node.height, 1 + hl.max(hr), "height of {index}");
                node.height
            }
            let mut out = Vec::new();
            walk(self, self.root, &mut out);
            for pair in out.windows(2) {
                assert!(pair[0].0 < pair[0].1 && pair[0].1 <= pair[1].0, "{pair:?}");
            }
            let mut free = 0;
            let mut at = self.free;
            while at != NIL {
                free += 1;
                at = self.node(at).left;
            }
            assert_eq!(out.len() + free, self.nodes.len());
            out
        }

        /// The starts in preorder (each node before its left subtree, then its right), which
        /// fixes the tree's shape.
        fn preorder(&self) -> Vec<usize> {
            fn walk(r: &Ranges, index: u32, out: &mut Vec<usize>) {
                if index != NIL {
                    let node = r.node(index);
                    out.push(node.start);
                    walk(r, node.left, out);
                    walk(r, node.right, out);
                }
            }
            let mut out = Vec::new();
            walk(self, self.root, &mut out);
            out
        }
    }

    /// The ranges `s..s + 1`, claimed in the order given.
    fn claimed(starts: &[usize]) -> Ranges {
        let mut r = Ranges::new();
        for &s in starts {
            r.claim(s, s + 1).unwrap();
        }
        r.check();
        r
    }

    /// Each kind of imbalance a claim makes is mended by its own rotation: one turn for a
    /// subtree leaning outwards, two for one leaning inwards.
    #[test]
    fn claim_mends_each_imbalance_with_its_rotation() {
        for order in [[10, 20, 30], [30, 20, 10], [30, 10, 20], [10, 30, 20]] {
            assert_eq!(claimed(&order).preorder(), [20, 10, 30], "{order:?}");
        }
    }

    /// Each kind of imbalance a release makes is mended: a child leaning outwards or not
    /// leaning at all (which only a release makes) by one turn, one leaning inwards by two.
    #[test]
    fn release_mends_each_imbalance_with_its_rotation() {
        for (order, gone, shape) in [
            // The left side too high, its child leaning left, level, or right.
            (&[20, 10, 30, 5][..], 30, &[10, 5, 20][..]),
            (&[20, 10, 30, 5, 15], 30, &[10, 5, 20, 15]),
            (&[20, 10, 30, 15], 30, &[15, 10, 20]),
            // The right side too high, its child leaning right, level, or left.
            (&[20, 10, 30, 40], 10, &[30, 20, 40]),
            (&[20, 10, 30, 25, 35], 10, &[30, 20, 25, 35]),
            (&[20, 10, 30, 25], 10, &[25, 20, 30]),
        ] {
            let mut r = claimed(order);
            r.release(gone);
            r.check();
            assert_eq!(r.preorder(), shape, "{order:?} without {gone}");
        }
    }

    /// A range with ranges on both sides gives its place to the next one, whose own removal
    /// from below may need a rotation first.
    #[test]
    fn release_with_both_sides_takes_the_next_range() {
        for (order, gone, shape) in [
            // The next range is the right child itself.
            (
                &[40, 20, 60, 10, 30, 50, 70, 35][..],
                20,
                &[40, 30, 10, 35, 60, 50, 70][..],
            ),
            // The next range is further down; the root is replaced.
            (
                &[40, 20, 60, 10, 30, 50, 70, 35],
                40,
                &[50, 20, 10, 30, 35, 60, 70],
            ),
            // Taking the next range out leaves the right side leaning: it is turned first.
            (&[20, 10, 40, 5, 30, 50, 60], 20, &[30, 10, 5, 50, 40, 60]),
            // The next range in its new place has a left side two higher: it is turned then.
            (&[20, 10, 30, 5, 15, 25, 3], 20, &[10, 5, 3, 25, 15, 30]),
        ] {
            let mut r = claimed(order);
            r.release(gone);
            r.check();
            assert_eq!(r.preorder(), shape, "{order:?} without {gone}");
        }
    }

    /// Ranges that reach up to the last address: one ending at `usize::MAX` (its last byte
    /// just below) is refused by every claim sharing a byte with it, and leaves room below.
    #[test]
    fn claim_at_the_top_of_the_address_space() {
        let mut r = Ranges::new();
        r.claim(usize::MAX - 1, usize::MAX).unwrap();
        for (s, e) in [
            (usize::MAX - 1, usize::MAX),
            (0, usize::MAX),
            (usize::MAX - 2, usize::MAX),
        ] {
            assert_eq!(r.claim(s, e), Err(Status::BlockInUse), "{s}..{e}");
        }
        r.claim(usize::MAX - 2, usize::MAX - 1).unwrap();
        r.claim(0, 1).unwrap();
        assert_eq!(r.claim(0, usize::MAX - 2), Err(Status::BlockInUse));
        r.claim(1, usize::MAX - 2).unwrap();
        assert_eq!(
            r.check(),
            [
                (0, 1),
                (1, usize::MAX - 2),
                (usize::MAX - 2, usize::MAX - 1),
                (usize::MAX - 1, usize::MAX)
            ]
        );
    }

    #[test]
    fn claim_sharing_an_address_refused_beside_accepted() {
        let mut r = Ranges::new();
        r.claim(100, 200).unwrap();
        for (s, e) in [
            (100, 200),
            (199, 200),
            (0, 101),
            (150, 160),
            (0, usize::MAX),
        ] {
            assert_eq!(r.claim(s, e), Err(Status::BlockInUse), "{s}..{e}");
        }
        r.claim(0, 100).unwrap();
        r.claim(200, usize::MAX).unwrap();
        assert_eq!(r.check(), [(0, 100), (100, 200), (200, usize::MAX)]);
        r.release(100);
        // Releasing a start no range has changes nothing.
        r.release(150);
        r.claim(150, 160).unwrap();
        assert_eq!(r.check(), [(0, 100), (150, 160), (200, usize::MAX)]);
    }

    #[test]
    fn descending_and_ascending_claims_stay_balanced() {
        // 2000 ranges: an AVL tree of that many nodes is at most 15 high.
        let (half, most) = (1000, 15);
        let mut r = Ranges::new();
        for i in (0..half).rev() {
            r.claim(i * 10, i * 10 + 5).unwrap();
        }
        for i in half..2 * half {
            r.claim(i * 10, i * 10 + 5).unwrap();
        }
        assert_eq!(r.check().len(), 2 * half);
        assert!(r.height(r.root) <= most, "height {}", r.height(r.root));
        for i in 0..2 * half {
            r.release(i * 10);
        }
        assert_eq!(r.check(), []);
        // Nodes are reused, not made again.
        r.claim(3, 4).unwrap();
        assert_eq!(r.nodes.len(), 2 * half);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Claims and releases of small ranges over a small space (so that they meet often)
        /// answer as a map of the live ranges does. Most releases name a live range (so that
        /// the tree shrinks as well as grows, through every kind of rotation), the others any
        /// start; a node is made only when none is free.
        #[test]
        fn claims_and_releases_match_a_model(
            ops in prop::collection::vec(
                (0u8..20, 0usize..200, 1usize..20),
                0..300,
            )
        ) {
            let mut r = Ranges::new();
            let mut model = BTreeMap::new();
            let mut most = 0;
            for (kind, start, len) in ops {
                if kind < 10 {
                    let end = start + len;
                    let overlaps = model.iter().any(|(&s, &e)| s < end && start < e);
                    let expected = if overlaps { Err(Status::BlockInUse) } else { Ok(()) };
                    prop_assert_eq!(r.claim(start, end), expected);
                    if !overlaps {
                        model.insert(start, end);
                    }
                } else {
                    let start = match model.keys().nth(start % model.len().max(1)) {
                        Some(&live) if kind < 17 => live,
                        _ => start,
                    };
                    r.release(start);
                    model.remove(&start);
                }
                let live: Vec<_> = model.iter().map(|(&s, &e)| (s, e)).collect();
                prop_assert_eq!(r.check(), live);
                most = most.max(model.len());
                prop_assert_eq!(r.nodes.len(), most);
            }
        }
    }
}
