//! Room bounds: what [`AddressAllocator`](super::AddressAllocator) knows, per alignment, about
//! the largest request any free range can still hold, so that a request no free range can hold
//! fails without walking the gaps.
//!
//! The aligned room of a free range `[lo, hi]` for alignment 2^k is the units from its lowest
//! multiple of 2^k to `hi` (0 if it holds none): a request of `size` units aligned to 2^k fits
//! in the range exactly when `size <= room`. Room never grows when a range shrinks, and never
//! grows with the alignment.
//!
//! Invariant: for every free range `G` and every `k`, `room_k(G) <= base[k]`, or `G` lies inside
//! one of the `recent` ranges whose mask has bit `k`. Allocating only shrinks free ranges, so it
//! keeps the invariant; a free (or growing the space) records the new free range in `recent`
//! for the alignments where it has more room than `base`, and when `recent` is full folds the
//! oldest recorded range into `base`. A search over the whole space that finds nothing tightens the
//! bounds again.

use crate::range::AddressRange;

/// Free ranges recorded since the bounds were last tightened, at most.
const RECENT: usize = 4;

/// The bounds; see the module docs.
#[derive(Clone, Debug)]
pub(super) struct RoomBounds {
    /// `base[k]`: a bound on the room, at alignment 2^k, of every free range outside `recent`.
    base: [u64; 64],
    /// Free ranges that may have more room than `base`, each with the alignments (bit `k`) for
    /// which it may.
    recent: [Option<(AddressRange, u64)>; RECENT],
}

/// Where a request can fit, as far as the bounds know.
#[derive(Debug)]
pub(super) enum Where {
    /// Anywhere: search every gap.
    Anywhere,
    /// Only inside these ranges (none: nowhere).
    Inside([Option<AddressRange>; RECENT]),
}

impl RoomBounds {
    /// The bounds of an allocator whose only free range is `space` (or whose free ranges all lie
    /// inside it).
    pub(super) fn new(space: AddressRange) -> Self {
        let mut base = [0; 64];
        for (bound, room) in base.iter_mut().zip(aligned_room(space)) {
            *bound = room;
        }
        Self {
            base,
            recent: [None; RECENT],
        }
    }

    /// Where a request of `size` units aligned to 2^k can fit.
    pub(super) fn lookup(&self, size: u64, k: u32) -> Where {
        let k = k as usize;
        if size <= self.base[k] {
            return Where::Anywhere;
        }
        let mut inside = [None; RECENT];
        for (slot, recent) in inside.iter_mut().zip(&self.recent) {
            if let Some((range, mask)) = recent
                && mask & (1 << k) != 0
            {
                *slot = Some(*range);
            }
        }
        Where::Inside(inside)
    }

    /// Records that `free` became a free range (or grew into one).
    pub(super) fn add_free(&mut self, free: AddressRange) {
        let mut mask = 0u64;
        for (k, room) in aligned_room(free).enumerate() {
            if room > self.base[k] {
                mask |= 1 << k;
            }
        }
        if mask == 0 {
            return;
        }
        for (range, m) in self.recent.iter_mut().flatten() {
            if range.contains_range(&free) {
                *m |= mask;
                return;
            }
        }
        if let Some(slot) = self.recent.iter_mut().find(|r| r.is_none()) {
            *slot = Some((free, mask));
            return;
        }
        // Full: fold the oldest recorded range into `base` to make room.
        if let Some((range, m)) = self.recent[0] {
            for (k, room) in aligned_room(range).enumerate() {
                if m & (1 << k) != 0 {
                    self.base[k] = self.base[k].max(room);
                }
            }
        }
        self.recent.rotate_left(1);
        self.recent[RECENT - 1] = Some((free, mask));
    }

    /// Records that a search of every gap for alignment 2^k found no fit, and that no free range
    /// has more room than `most` at that alignment (so none has at any larger one).
    pub(super) fn found_none_anywhere(&mut self, k: u32, most: u64) {
        for j in k as usize..64 {
            if most <= self.base[j] {
                self.base[j] = most;
                self.forget(j);
            }
        }
    }

    /// Records that a search inside the recent ranges of alignment 2^k for `size` units found no
    /// fit: no free range has `size` units of room at that alignment.
    pub(super) fn found_none_inside(&mut self, k: u32, size: u64) {
        let k = k as usize;
        // `base[k] < size` here (else every gap was searched), so this raises it, and it now
        // bounds the recent ranges too.
        self.base[k] = self.base[k].max(size - 1);
        self.forget(k);
    }

    /// Drops alignment 2^k from every recent range, and ranges left with none.
    fn forget(&mut self, k: usize) {
        for slot in &mut self.recent {
            if let Some((_, mask)) = slot {
                *mask &= !(1 << k);
                if *mask == 0 {
                    *slot = None;
                }
            }
        }
    }

    /// Whether the free range `free` respects the invariant.
    pub(super) fn covers(&self, free: AddressRange) -> bool {
        aligned_room(free).enumerate().all(|(k, room)| {
            room <= self.base[k]
                || self
                    .recent
                    .iter()
                    .flatten()
                    .any(|(range, mask)| mask & (1 << k) != 0 && range.contains_range(&free))
        })
    }
}

/// For each alignment 2^k in turn, the units of `free` from its lowest multiple of 2^k to its
/// end (saturating at `u64::MAX`), until there is no such multiple (room only shrinks as the
/// alignment grows, so every later one is 0 too).
pub(super) fn aligned_room(free: AddressRange) -> impl Iterator<Item = u64> {
    (0..64u32).map_while(move |k| {
        let mask = (1u64 << k) - 1;
        let first = free.start().checked_add(mask)? & !mask;
        (first <= free.end()).then(|| (free.end() - first).saturating_add(1))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> AddressRange {
        AddressRange::new(start, end).unwrap()
    }

    #[test]
    fn aligned_room_misaligned_range_shrinks_then_ends() {
        let got: Vec<u64> = aligned_room(r(0x800, 0x17ff)).collect();
        assert_eq!(&got[..12], [0x1000; 12]);
        assert_eq!(got[12], 0x800);
        assert_eq!(got.len(), 13);
    }

    #[test]
    fn aligned_room_full_space_saturates() {
        let got: Vec<u64> = aligned_room(AddressRange::FULL).collect();
        assert_eq!(got.len(), 64);
        assert!(got.iter().all(|&x| x == u64::MAX));
    }

    #[test]
    fn add_free_beyond_recent_folds_oldest_into_base() {
        let mut b = RoomBounds::new(r(0, 0xffff));
        b.found_none_anywhere(0, 0);
        for i in 0..=RECENT as u64 {
            b.add_free(r(i * 0x1000, i * 0x1000 + i));
            assert!(b.covers(r(i * 0x1000, i * 0x1000 + i)));
        }
        // The first range (1 unit) went into `base`; the others are still searched alone.
        assert!(matches!(b.lookup(1, 0), Where::Anywhere));
        let Where::Inside(inside) = b.lookup(2, 0) else {
            panic!("a 2-unit request should be searched in the recent ranges")
        };
        assert_eq!(inside[0], Some(r(0x1000, 0x1001)));
        assert_eq!(inside[RECENT - 1], Some(r(0x4000, 0x4004)));
    }
}
