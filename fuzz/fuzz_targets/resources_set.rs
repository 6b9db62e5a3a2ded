//! Random operation sequences on an `AllocatorSet` of one to three small spaces (sometimes one
//! ending at `u64::MAX`) against a shadow list of what each successful call made: every
//! allocation must lie in free space, in one space, aligned and in its window; `OutOfSpace`
//! must mean no space has room; an overlap must name the lowest allocation overlapped; `free`
//! must take exactly one whole allocation (every part of a spanning reservation) or refuse and
//! change nothing; keys must follow their allocations. After each step the set's allocations,
//! keys and invariants must match the shadow. Steps with an odd tag call the `try_` methods,
//! whose refusals must give that tag back. Nothing may panic. Each allocation and reservation
//! without a key that touches at most one space is held to the heap budget the crate's
//! DESIGN.md promises (see [`op_budget`]).
#![no_main]

use libfuzzer_sys::fuzz_target;
use memvisor_fuzz::Input;
use memvisor_resources::{AddressRange, AllocPolicy, AllocatorSet, Error, Refused, Request};
use memvisor_testkit::counting_heap::{Counting, used_by};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes of a space's index per range (DESIGN.md: "A node is 28 bytes"), and of its tag.
const NODE_BYTES: usize = 28 + size_of::<u16>();

/// The most an allocation or a reservation without a key, touching at most one space, may ask
/// of the heap. DESIGN.md (AllocatorSet): "Every operation reserves the memory it will need
/// (the maps' entries, each space's node and tag, the list of parts, one entry per space the
/// range touches, and the list of the spaces a placement's window touches)"; a space's index
/// and tags grow by an eighth, at least 16 ranges, at a time (`AddressAllocator`'s docs). Such
/// a call makes one range in one space: so the growth by an eighth of one space (the fullest),
/// and a list entry a space ([`LIST_BYTES`]). The maps' memory has no promised bound: a key,
/// or a reservation spanning spaces, is not held to one.
fn op_budget(set: &AllocatorSet<u16>) -> usize {
    let grown = set
        .pools()
        .iter()
        .map(|pool| NODE_BYTES * (pool.len() + (pool.len() / 8).max(16)))
        .max()
        .unwrap_or(0);
    grown + LIST_BYTES * set.pools().len()
}

/// Bytes of an entry of the lists an operation makes: a part names its space, its range and
/// where its node goes (an index, an `AddressRange` and a `u32`: 32 bytes); a space of a
/// placement's window is an index.
const LIST_BYTES: usize = 32;

/// `call` on `set`, failing the target if it asks the heap for more than [`op_budget`] (when
/// `held` says the call is held to one).
fn within_budget<R>(
    set: &mut AllocatorSet<u16>,
    held: bool,
    what: &str,
    call: impl FnOnce(&mut AllocatorSet<u16>) -> R,
) -> R {
    let budget = op_budget(set);
    let ranges = set.len();
    let (out, usage) = used_by(|| call(set));
    assert!(
        !held || usage.bytes <= budget,
        "{what} on {ranges} ranges asked the heap for {} bytes in {} requests (budget {budget})",
        usage.bytes,
        usage.requests
    );
    out
}

/// The result of a `try_` call with the refusal's error, once the refusal gave `tag` back.
fn given_back<R>(got: Result<R, Refused<u16>>, tag: u16) -> Result<R, Error> {
    got.map_err(|refused| {
        assert_eq!(*refused.tag(), tag, "a refusal gave back another tag");
        refused.error()
    })
}

/// Operations per input.
const MAX_OPS: usize = 128;

/// One live allocation as the shadow knows it: its parts (one per space it touches), the
/// range it was asked with, its key and its tag.
#[derive(Clone, Debug)]
struct Group {
    parts: Vec<AddressRange>,
    key: Option<u64>,
    tag: u16,
}

impl Group {
    fn hull(&self) -> AddressRange {
        let low = self.parts.iter().map(AddressRange::start).min().unwrap();
        let high = self.parts.iter().map(AddressRange::end).max().unwrap();
        AddressRange::new(low, high).unwrap()
    }
}

struct Shadow {
    spaces: Vec<AddressRange>,
    min_align: u64,
    groups: Vec<Group>,
}

impl Shadow {
    fn parts(&self) -> impl Iterator<Item = (AddressRange, u16)> + '_ {
        self.groups
            .iter()
            .flat_map(|g| g.parts.iter().map(move |&p| (p, g.tag)))
    }

    fn overlapping(&self, range: &AddressRange) -> Option<AddressRange> {
        self.parts()
            .map(|(p, _)| p)
            .filter(|p| p.overlaps(range))
            .min_by_key(AddressRange::start)
    }

    /// Whether any space has a free range of `size` aligned to `align` inside `window`: the
    /// first aligned address of each free gap is the one to try.
    fn has_room(&self, size: u64, align: u64, window: Option<AddressRange>) -> bool {
        self.spaces.iter().any(|space| {
            let Some(area) = window.map_or(Some(*space), |w| w.intersection(space)) else {
                return false;
            };
            let taken: Vec<AddressRange> = self.parts().map(|(p, _)| p).collect();
            core::iter::once(Some(area.start()))
                .chain(taken.iter().map(|t| t.end().checked_add(1)))
                .flatten()
                .filter_map(|c| c.checked_next_multiple_of(align))
                .filter_map(|s| AddressRange::from_start_and_size(s, size).ok())
                .any(|r| area.contains_range(&r) && taken.iter().all(|t| !t.overlaps(&r)))
        })
    }
}

fn range_in(input: &mut Input<'_>, lo: u64, span: u64) -> (u64, u64) {
    let first = lo
        .wrapping_add(input.below(span + 0x200))
        .wrapping_sub(0x100);
    let len = input.size() % 0x3000;
    (first, first.saturating_add(len))
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let count = 1 + input.below(3);
    let mut spaces: Vec<AddressRange> = Vec::new();
    let top = input.u8().is_multiple_of(4);
    // Spaces of up to 16 KiB, with holes between them (or touching), in a shuffled order.
    let mut at = if top {
        u64::MAX - 0xc000
    } else {
        input.below(1 << 20)
    };
    for _ in 0..count {
        let len = 1 + input.below(0x4000);
        let Ok(space) = AddressRange::from_start_and_size(at, len) else {
            break;
        };
        spaces.push(space);
        let Some(next) = space
            .end()
            .checked_add(1 + input.below(2) * input.below(0x1000))
        else {
            break;
        };
        at = next;
    }
    if input.u8().is_multiple_of(2) {
        spaces.reverse();
    }
    let lo = spaces.iter().map(AddressRange::start).min().unwrap();
    let span = spaces.iter().map(AddressRange::end).max().unwrap() - lo;
    let min_align = 1u64 << (input.u8() % 6);
    let pref_align = 1u64 << (input.u8() % 10);
    let Ok(set) = AllocatorSet::<u16>::new(&spaces) else {
        panic!("disjoint spaces refused: {spaces:?}");
    };
    let mut set = set.with_alignment(min_align, pref_align).unwrap();
    let mut shadow = Shadow {
        spaces,
        min_align,
        groups: Vec::new(),
    };

    let mut ops = 0;
    while !input.is_empty() && ops < MAX_OPS {
        ops += 1;
        let before = set.clone();
        let mut changed = false;
        let tag = u16::try_from(ops).unwrap();
        let key = input
            .u8()
            .is_multiple_of(3)
            .then(|| u64::from(input.u8() % 8));
        match input.u8() % 7 {
            0 | 1 => {
                let size = 1 + input.size() % 0x2000;
                let align = 1u64 << (input.u8() % 12);
                let (a, b) = range_in(&mut input, lo, span);
                let policy = match input.u8() % 3 {
                    0 => AllocPolicy::FirstMatch,
                    1 => AllocPolicy::LastMatch,
                    _ => AllocPolicy::ExactMatch(a),
                };
                let window = input
                    .u8()
                    .is_multiple_of(3)
                    .then(|| AddressRange::new(a.min(b), a.max(b)).unwrap());
                // An exact range past `u64::MAX` is refused by `Request::new` itself.
                let Ok(mut req) = Request::new(size, align, policy) else {
                    continue;
                };
                if let Some(w) = window {
                    req = req.within(w);
                }
                let got = within_budget(&mut set, key.is_none(), "an allocation", |set| {
                    match (key, tag % 2 == 1) {
                        (Some(k), false) => set.allocate_keyed(k, &req, tag),
                        (None, false) => set.allocate_with(&req, tag),
                        (Some(k), true) => given_back(set.try_allocate_keyed(k, &req, tag), tag),
                        (None, true) => given_back(set.try_allocate_with(&req, tag), tag),
                    }
                });
                let need = align.max(shadow.min_align);
                match got {
                    Ok(r) => {
                        assert!(key.is_none_or(|k| shadow.groups.iter().all(|g| g.key != Some(k))));
                        assert_eq!(r.size(), Some(size), "{r}");
                        assert!(
                            r.start().is_multiple_of(need),
                            "{r} not aligned to {need:#x}"
                        );
                        assert!(shadow.spaces.iter().any(|s| s.contains_range(&r)), "{r}");
                        assert!(
                            window.is_none_or(|w| w.contains_range(&r)),
                            "{r} {window:?}"
                        );
                        assert_eq!(shadow.overlapping(&r), None, "{r} overlaps");
                        if let AllocPolicy::ExactMatch(addr) = policy {
                            assert_eq!(r.start(), addr);
                        }
                        shadow.groups.push(Group {
                            parts: vec![r],
                            key,
                            tag,
                        });
                        changed = true;
                    }
                    Err(Error::KeyInUse(k)) => {
                        assert!(shadow.groups.iter().any(|g| g.key == Some(k)));
                    }
                    Err(Error::OutOfSpace { .. }) => {
                        assert!(!matches!(policy, AllocPolicy::ExactMatch(_)));
                        assert!(
                            !shadow.has_room(size, need, window),
                            "OutOfSpace with room for {size:#x} aligned {need:#x} in {window:?}"
                        );
                    }
                    Err(Error::Overlap { existing, .. }) => {
                        let AllocPolicy::ExactMatch(addr) = policy else {
                            panic!("overlap for a placement that is not exact");
                        };
                        let r = AddressRange::from_start_and_size(addr, size).unwrap();
                        assert_eq!(shadow.overlapping(&r), Some(existing));
                    }
                    Err(_) => {}
                }
            }
            2 => {
                let (a, b) = range_in(&mut input, lo, span);
                let range = AddressRange::new(a, b).unwrap();
                let parts: Vec<AddressRange> = shadow
                    .spaces
                    .iter()
                    .filter_map(|s| range.intersection(s))
                    .collect();
                let held = key.is_none() && parts.len() <= 1;
                let got = within_budget(&mut set, held, "a reservation", |set| {
                    match (key, tag % 2 == 1) {
                        (Some(k), false) => set.reserve_keyed(k, range, tag),
                        (None, false) => set.reserve_with(range, tag),
                        (Some(k), true) => given_back(set.try_reserve_keyed(k, range, tag), tag),
                        (None, true) => given_back(set.try_reserve_with(range, tag), tag),
                    }
                });
                let lowest = parts
                    .iter()
                    .filter_map(|p| shadow.overlapping(p))
                    .min_by_key(AddressRange::start);
                let key_taken = key.is_some_and(|k| shadow.groups.iter().any(|g| g.key == Some(k)));
                match got {
                    Ok(()) => {
                        assert!(!key_taken && lowest.is_none() && !parts.is_empty());
                        shadow.groups.push(Group { parts, key, tag });
                        changed = true;
                    }
                    Err(Error::KeyInUse(_)) => assert!(key_taken),
                    Err(Error::Overlap {
                        requested,
                        existing,
                    }) => {
                        assert_eq!((requested, Some(existing)), (range, lowest));
                    }
                    Err(Error::OutsideSpace { .. }) => assert!(parts.is_empty()),
                    Err(e) => panic!("reserve {range}: {e}"),
                }
            }
            3 | 4 => {
                // A whole allocation by its hull or by a wider range, one of its parts, or any
                // range at all.
                let n = usize::from(input.u8());
                let range = match (
                    input.u8() % 4,
                    shadow.groups.get(n % shadow.groups.len().max(1)),
                ) {
                    (0, Some(g)) => g.hull(),
                    (1, Some(g)) => {
                        let h = g.hull();
                        AddressRange::new(h.start().saturating_sub(input.below(0x40)), h.end())
                            .unwrap()
                    }
                    (2, Some(g)) => g.parts[n % g.parts.len()],
                    _ => {
                        let (a, b) = range_in(&mut input, lo, span);
                        AddressRange::new(a, b).unwrap()
                    }
                };
                let parts: Vec<AddressRange> = shadow
                    .spaces
                    .iter()
                    .filter_map(|s| range.intersection(s))
                    .collect();
                // It frees the group whose parts are exactly the range's parts, if one is.
                let mut sorted = parts.clone();
                sorted.sort_by_key(AddressRange::start);
                let found = shadow.groups.iter().position(|g| {
                    let mut gp = g.parts.clone();
                    gp.sort_by_key(AddressRange::start);
                    gp == sorted
                });
                match (set.free(&range), found) {
                    (Ok(t), Some(i)) => {
                        let g = shadow.groups.remove(i);
                        assert_eq!(t, g.tag);
                        changed = true;
                    }
                    (Err(e), None) => {
                        // The refusal names the range given and the lowest allocation it
                        // overlaps (a spanning reservation by its hull), if any.
                        let lowest = shadow.overlapping(&range).map(|p| {
                            let owner = shadow.groups.iter().find(|g| g.parts.contains(&p));
                            owner.map_or(p, Group::hull)
                        });
                        let want = match lowest {
                            Some(existing) => Error::NotExactAllocation {
                                requested: range,
                                existing,
                            },
                            None => Error::NotAllocated(range),
                        };
                        assert_eq!(e, want, "free {range}");
                    }
                    (got, want) => panic!("free {range}: {got:?}, shadow group {want:?}"),
                }
            }
            5 => {
                let k = u64::from(input.u8() % 8);
                let found = shadow.groups.iter().position(|g| g.key == Some(k));
                match (set.release(k), found) {
                    (Ok((_, t)), Some(i)) => {
                        let g = shadow.groups.remove(i);
                        assert_eq!(t, g.tag);
                        changed = true;
                    }
                    (Err(Error::UnknownKey(got)), None) => assert_eq!(got, k),
                    (got, want) => panic!("release {k}: {got:?}, shadow group {want:?}"),
                }
            }
            _ => {
                let addr = lo
                    .wrapping_add(input.below(span + 0x200))
                    .wrapping_sub(0x100);
                let got = set.allocation_containing(addr).map(|a| (a.range, *a.tag));
                let want = shadow.parts().find(|(p, _)| p.contains(addr));
                assert_eq!(got, want, "lookup {addr:#x}");
            }
        }
        // The whole state against the shadow.
        if let Err(e) = set.check_invariants() {
            panic!("invariants after step {ops}: {e}");
        }
        let mut got: Vec<(AddressRange, u16)> =
            set.allocated().map(|a| (a.range, *a.tag)).collect();
        let mut want: Vec<(AddressRange, u16)> = shadow.parts().collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "allocations after step {ops}");
        for k in 0..8 {
            let g = shadow.groups.iter().find(|g| g.key == Some(k));
            assert_eq!(set.get(k).is_some(), g.is_some(), "key {k}");
        }
        // A refused call (or a lookup) leaves the set exactly as it was.
        assert!(
            changed || set == before,
            "step {ops} changed the set without succeeding"
        );
    }
});
