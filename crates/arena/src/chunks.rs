//! The arena's free chunks: a lock-free stack of chunk indices (Treiber stack with a tag
//! against ABA), from which clients take chunks and to which they give them back, singly or a
//! whole chain at once.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::sync::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// No chunk: the end of a chain, or an empty stack.
pub(crate) const NIL: u32 = u32::MAX;

fn pack(tag: u32, index: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(index)
}

fn index_of(head: u64) -> u32 {
    u32::try_from(head & u64::from(u32::MAX)).unwrap_or(NIL)
}

fn tag_of(head: u64) -> u32 {
    u32::try_from(head >> 32).unwrap_or(0)
}

/// The stack. `next[i]` links chunk `i` to the one below it while `i` is on the stack (and,
/// while a chain is being given back, to the next chunk of the chain).
#[derive(Debug)]
pub(crate) struct ChunkStack {
    /// Tag (bumped by every successful update) in the high half, top index in the low half.
    head: AtomicU64,
    next: Box<[AtomicU32]>,
    len: AtomicUsize,
}

impl ChunkStack {
    /// A stack holding chunks `0..count`, lowest on top.
    pub(crate) fn new(count: u32) -> Self {
        let next: Vec<AtomicU32> = (0..count)
            .map(|i| AtomicU32::new(if i + 1 < count { i + 1 } else { NIL }))
            .collect();
        let top = if count == 0 { NIL } else { 0 };
        Self {
            head: AtomicU64::new(pack(0, top)),
            next: next.into_boxed_slice(),
            len: AtomicUsize::new(count as usize),
        }
    }

    /// Takes the top chunk. The `Acquire` on success makes everything its previous holder did
    /// before giving it back visible to the caller.
    pub(crate) fn pop(&self) -> Option<u32> {
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let top = index_of(head);
            if top == NIL {
                return None;
            }
            // If `head` is still current when the exchange below runs, `top` has not left the
            // stack since it was read, so this is the link its last push published; if not,
            // the tag has moved on and the exchange fails.
            let below = self.next[top as usize].load(Ordering::Relaxed);
            match self.head.compare_exchange_weak(
                head,
                pack(tag_of(head).wrapping_add(1), below),
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    return Some(top);
                }
                Err(now) => head = now,
            }
        }
    }

    /// Links `chunk` to `next` in a chain being prepared for [`push_chain`](Self::push_chain).
    /// Only the holder of `chunk` may call this.
    pub(crate) fn link(&self, chunk: u32, next: u32) {
        self.next[chunk as usize].store(next, Ordering::Relaxed);
    }

    /// Puts back a chain of `count` chunks from `first` to `last`, linked with
    /// [`link`](Self::link), in one exchange. The `Release` publishes the links and everything
    /// the giver did to the chunks.
    pub(crate) fn push_chain(&self, first: u32, last: u32, count: usize) {
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            self.next[last as usize].store(index_of(head), Ordering::Relaxed);
            match self.head.compare_exchange_weak(
                head,
                pack(tag_of(head).wrapping_add(1), first),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => head = now,
            }
        }
        self.len.fetch_add(count, Ordering::Relaxed);
    }

    /// How many chunks are on the stack (exact when no hand-out is in flight).
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn pop_all_then_none() {
        let stack = ChunkStack::new(3);
        assert_eq!(stack.len(), 3);
        assert_eq!(stack.pop(), Some(0));
        assert_eq!(stack.pop(), Some(1));
        assert_eq!(stack.pop(), Some(2));
        assert_eq!(stack.pop(), None);
        assert_eq!(stack.len(), 0);
    }

    #[test]
    fn push_chain_restores_all_in_chain_order() {
        let stack = ChunkStack::new(4);
        let taken: Vec<u32> = (0..4).map(|_| stack.pop().unwrap()).collect();
        stack.link(3, 1);
        stack.link(1, 2);
        stack.push_chain(3, 2, 3);
        assert_eq!(stack.len(), 3);
        assert_eq!(stack.pop(), Some(3));
        assert_eq!(stack.pop(), Some(1));
        assert_eq!(stack.pop(), Some(2));
        assert_eq!(stack.pop(), None);
        assert_eq!(taken, [0, 1, 2, 3]);
    }

    #[test]
    fn new_empty_pops_none() {
        let stack = ChunkStack::new(0);
        assert_eq!(stack.pop(), None);
    }
}
