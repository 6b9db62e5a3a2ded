//! [`Owners`]: the `Arc`s that keep a snapshot's regions alive, in shared chunks.
//!
//! A change rebuilds only the chunk it touches, or adds a chunk of its own, and shares the
//! others (one reference-count update per chunk). The first [`INLINE`] chunks are held inline,
//! so a snapshot of a few chunks needs no chunk list: a change then allocates the new chunk and
//! nothing else.

use std::ops::Deref;
use std::sync::Arc;

use crate::region::Region;

/// Regions per ownership chunk: a change copies one chunk and the chunk list, so it costs
/// O(n / CHUNK + CHUNK) reference-count updates instead of O(n).
pub(super) const CHUNK: usize = 32;

/// The most chunks a snapshot of `len` regions keeps before a removal repacks them: twice as
/// many as full chunks would take, and a few.
pub(super) fn max_chunks(len: usize) -> usize {
    2 * (len / CHUNK) + 4
}

/// One chunk of region owners, shared between snapshots: a single region's own `Arc` (no
/// allocation: a hotplugged region usually gets a chunk of its own, and leaves with it), or a
/// shared slice of them (one allocation).
#[derive(Clone)]
pub(super) enum Chunk {
    /// One region.
    One(Arc<Region>),
    /// Any number of regions.
    Many(Arc<[Arc<Region>]>),
}

impl Deref for Chunk {
    type Target = [Arc<Region>];

    fn deref(&self) -> &[Arc<Region>] {
        match self {
            Self::One(region) => std::slice::from_ref(region),
            Self::Many(regions) => regions,
        }
    }
}

impl FromIterator<Arc<Region>> for Chunk {
    /// Exact-size iterators allocate the chunk once, and one region not at all.
    fn from_iter<I: IntoIterator<Item = Arc<Region>>>(regions: I) -> Self {
        let mut regions = regions.into_iter();
        if regions.size_hint() == (1, Some(1))
            && let Some(region) = regions.next()
        {
            return Self::One(region);
        }
        Self::Many(regions.collect())
    }
}

impl From<Vec<Arc<Region>>> for Chunk {
    fn from(regions: Vec<Arc<Region>>) -> Self {
        regions.into_iter().collect()
    }
}

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
        // `head` fills from the front.
        match self.head.iter().position(Option::is_none) {
            Some(filled) => filled,
            None => INLINE + self.tail.len(),
        }
    }

    /// Chunk `c`.
    pub(super) fn get(&self, c: usize) -> Option<&Chunk> {
        match c.checked_sub(INLINE) {
            None => self.head[c].as_ref(),
            Some(t) => self.tail.get(t),
        }
    }

    /// Chunk `c`, which exists.
    ///
    /// # Panics
    /// If there is no chunk `c` (a broken invariant of the caller).
    pub(super) fn chunk(&self, c: usize) -> &Chunk {
        self.get(c).expect("the chunk exists")
    }

    /// Region `pos` of chunk `c`, which exist, taken out of the chunks (moved when the chunk
    /// is the region's own).
    ///
    /// # Panics
    /// If there is no such region (a broken invariant of the caller).
    pub(super) fn take(mut self, c: usize, pos: usize) -> Arc<Region> {
        let chunk = match c.checked_sub(INLINE) {
            None => self.head[c].take(),
            Some(t) => (t < self.tail.len()).then(|| self.tail.swap_remove(t)),
        };
        match chunk.expect("the chunk exists") {
            Chunk::One(region) => region,
            Chunk::Many(regions) => Arc::clone(&regions[pos]),
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
        let mut chunk = chunk.filter(|k| !k.is_empty());
        if chunk.is_some() && c < self.len() {
            // Same shape: each place keeps its chunk but `c`.
            let mut at = |i: usize, old: &Chunk| {
                let new = if i == c { chunk.take() } else { None };
                new.unwrap_or_else(|| old.clone())
            };
            let head = std::array::from_fn(|i| self.head[i].as_ref().map(|old| at(i, old)));
            let tail = (self.tail.iter().enumerate())
                .map(|(t, old)| at(t + INLINE, old))
                .collect();
            return Self { head, tail };
        }
        if c + 1 == self.len() {
            // The last chunk leaves: the others keep their places.
            let head = std::array::from_fn(|i| if i == c { None } else { self.head[i].clone() });
            let tail = self
                .tail
                .get(..c.saturating_sub(INLINE))
                .unwrap_or_default()
                .to_vec();
            return Self { head, tail };
        }
        // Chunk `c` leaves: the ones after it move up a place.
        let mut next = Self {
            head: Default::default(),
            tail: Vec::with_capacity(self.tail.len().saturating_sub(1)),
        };
        let mut place = 0;
        for (i, old) in self.chunks().enumerate() {
            if i == c {
                continue;
            }
            match next.head.get_mut(place) {
                Some(free) => *free = Some(old.clone()),
                None => next.tail.push(old.clone()),
            }
            place += 1;
        }
        next
    }

    /// A copy with `chunk` added.
    pub(super) fn pushed(&self, chunk: Chunk) -> Self {
        if chunk.is_empty() {
            return self.clone();
        }
        let mut next = Self {
            head: self.head.clone(),
            tail: Vec::new(),
        };
        match next.head.iter_mut().find(|h| h.is_none()) {
            Some(free) => *free = Some(chunk),
            None => {
                next.tail.reserve_exact(self.tail.len() + 1);
                next.tail.extend(self.tail.iter().cloned());
                next.tail.push(chunk);
            }
        }
        next
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
    fn chunk_of_one_region_is_the_region_itself() {
        let one: Chunk = regions(1).into_iter().collect();
        assert!(matches!(one, Chunk::One(_)));
        let many = Chunk::from(regions(2));
        assert!(matches!(&many, Chunk::Many(r) if r.len() == 2));
        let shrunk: Chunk = many[1..].iter().cloned().collect();
        assert!(matches!(shrunk, Chunk::One(_)));
        assert_eq!(shrunk[0].base(), many[1].base());
    }

    #[test]
    fn replaced_with_empty_chunk_drops_it() {
        let o = Owners::chunked(regions(CHUNK + 2).into_iter());
        let without_head = o.replaced(0, None);
        assert_eq!(sizes(&without_head), [2]);
        let without_tail = o.replaced(1, Some(Chunk::from(Vec::new())));
        assert_eq!(sizes(&without_tail), [CHUNK]);
        let empty = without_tail.replaced(0, None);
        assert_eq!(empty.len(), 0);
        assert!(empty.last().is_none());
    }

    #[test]
    fn pushed_shares_the_other_chunks() {
        let o = Owners::chunked(regions(2).into_iter());
        let head = o.get(0).unwrap().clone();
        let more = o.pushed(Chunk::from(regions(1)));
        assert_eq!(sizes(&more), [2, 1]);
        assert!(std::ptr::eq(more.get(0).unwrap().as_ptr(), head.as_ptr()));
        let most = more.pushed(Chunk::from(regions(3)));
        assert_eq!(sizes(&most), [2, 1, 3]);
        assert_eq!(sizes(&most.replaced(1, None)), [2, 3]);
        let last_gone = most.replaced(2, None);
        assert_eq!(sizes(&last_gone), [2, 1]);
        assert!(last_gone.tail.is_empty());
        let four = most.pushed(Chunk::from(regions(4)));
        assert_eq!(sizes(&four.replaced(3, None)), [2, 1, 3]);
        assert_eq!(sizes(&four.replaced(3, None).replaced(1, None)), [2, 3]);
        assert_eq!(Owners::default().pushed(Chunk::from(regions(1))).len(), 1);
    }
}
