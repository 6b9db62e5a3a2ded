//! [`Owners`]: the `Arc`s that keep a snapshot's regions alive, in shared chunks.
//!
//! A change rebuilds only the chunk it touches, or adds a chunk of its own, and shares the
//! others (one reference-count update per chunk). The first [`INLINE`] chunks are held inline,
//! so a snapshot of a few chunks needs no chunk list: a change then allocates the new chunk and
//! nothing else.

use std::sync::Arc;

use crate::guest_region::Region;

/// Regions per ownership chunk: a change copies one chunk and the chunk list, so it costs
/// O(n / CHUNK + CHUNK) reference-count updates instead of O(n).
pub(super) const CHUNK: usize = 32;

/// The most chunks a snapshot of `len` regions keeps before a removal repacks them: twice as
/// many as full chunks would take, and a few.
pub(super) fn max_chunks(len: usize) -> usize {
    2 * (len / CHUNK) + 4
}

/// One chunk of region owners (one allocation, shared between snapshots).
pub(super) type Chunk = Arc<[Arc<Region>]>;

/// Chunks held without a list.
const INLINE: usize = 2;

/// The chunks, in no particular order: those in `head`, then `tail`. `head` fills from the
/// front (a `None` is followed only by `None`s) and `tail` is empty unless `head` is full; no
/// chunk is empty.
#[derive(Clone, Default)]
pub(super) struct Owners {
    head: [Option<Chunk>; INLINE],
    tail: Vec<Chunk>,
}

impl FromIterator<Chunk> for Owners {
    fn from_iter<I: IntoIterator<Item = Chunk>>(chunks: I) -> Self {
        let mut chunks = chunks.into_iter().filter(|c| !c.is_empty());
        let head = std::array::from_fn(|_| chunks.next());
        // Nothing is allocated when there are no more chunks.
        let tail = chunks.collect();
        Self { head, tail }
    }
}

impl Owners {
    /// `regions` in chunks of [`CHUNK`].
    pub(super) fn chunked(regions: impl Iterator<Item = Arc<Region>>) -> Self {
        let mut chunks = Vec::new();
        let mut chunk = Vec::with_capacity(CHUNK);
        for r in regions {
            chunk.push(r);
            if chunk.len() == CHUNK {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                chunks.push(Chunk::from(full));
            }
        }
        if !chunk.is_empty() {
            chunks.push(Chunk::from(chunk));
        }
        chunks.into_iter().collect()
    }

    /// The chunks.
    pub(super) fn chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.head.iter().flatten().chain(&self.tail)
    }

    /// The number of chunks.
    pub(super) fn len(&self) -> usize {
        self.head.iter().flatten().count() + self.tail.len()
    }

    /// Chunk `c`.
    pub(super) fn get(&self, c: usize) -> Option<&Chunk> {
        match c.checked_sub(INLINE) {
            None => self.head[c].as_ref(),
            Some(t) => self.tail.get(t),
        }
    }

    /// The last chunk and its index.
    pub(super) fn last(&self) -> Option<(usize, &Chunk)> {
        self.len()
            .checked_sub(1)
            .and_then(|c| Some((c, self.get(c)?)))
    }

    /// A copy with chunk `c` replaced by `chunk`, or left out if `chunk` is `None` or empty.
    /// (Only the other chunks are shared: no reference-count update for the one replaced.)
    pub(super) fn replaced(&self, c: usize, chunk: Option<Chunk>) -> Self {
        let mut chunk = chunk;
        self.chunks()
            .enumerate()
            .filter_map(|(i, old)| {
                if i == c {
                    chunk.take()
                } else {
                    Some(Arc::clone(old))
                }
            })
            .collect()
    }

    /// A copy with `chunk` added.
    pub(super) fn pushed(&self, chunk: Chunk) -> Self {
        self.chunks()
            .cloned()
            .chain(std::iter::once(chunk))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::RegionSpec;

    fn regions(n: usize) -> Vec<Arc<Region>> {
        let p = crate::spec::host_page_size();
        (0..n as u64)
            .map(|i| {
                let spec = RegionSpec::ram(vm_memory::GuestAddress(i * p), p);
                Arc::new(Region::plan(spec).unwrap())
            })
            .collect()
    }

    fn sizes(o: &Owners) -> Vec<usize> {
        o.chunks().map(|c| c.len()).collect()
    }

    #[test]
    fn chunked_few_regions_has_no_tail() {
        let o = Owners::chunked(regions(3).into_iter());
        assert_eq!(sizes(&o), [3]);
        assert!(o.tail.is_empty());
        assert_eq!(o.last().map(|(i, c)| (i, c.len())), Some((0, 3)));
        let o = Owners::chunked(regions(3 * CHUNK).into_iter());
        assert_eq!(sizes(&o), [CHUNK; 3]);
        assert_eq!(o.tail.len(), 1);
        assert_eq!(o.last().map(|(i, c)| (i, c.len())), Some((2, CHUNK)));
    }

    #[test]
    fn chunked_many_regions_fills_chunks() {
        let o = Owners::chunked(regions(CHUNK + 1).into_iter());
        assert_eq!(sizes(&o), [CHUNK, 1]);
        assert_eq!(o.len(), 2);
        assert_eq!(o.last().map(|(i, c)| (i, c.len())), Some((1, 1)));
    }

    #[test]
    fn replaced_with_empty_chunk_drops_it() {
        let o = Owners::chunked(regions(CHUNK + 2).into_iter());
        let without_head = o.replaced(0, None);
        assert_eq!(sizes(&without_head), [2]);
        let without_tail = o.replaced(1, Some(Chunk::from([])));
        assert_eq!(sizes(&without_tail), [CHUNK]);
        let empty = without_tail.replaced(0, None);
        assert_eq!(empty.len(), 0);
        assert!(empty.last().is_none());
    }

    #[test]
    fn pushed_shares_the_other_chunks() {
        let o = Owners::chunked(regions(2).into_iter());
        let head = Arc::clone(o.get(0).unwrap());
        let more = o.pushed(Chunk::from(regions(1)));
        assert_eq!(sizes(&more), [2, 1]);
        assert!(Arc::ptr_eq(more.get(0).unwrap(), &head));
        let most = more.pushed(Chunk::from(regions(3)));
        assert_eq!(sizes(&most), [2, 1, 3]);
        assert_eq!(sizes(&most.replaced(1, None)), [2, 3]);
        assert_eq!(Owners::default().pushed(Chunk::from(regions(1))).len(), 1);
    }
}
