//! `AllocatorSet` against a naive model that knows nothing of its indexes: one `AddrModel` per
//! space (a sorted list of what it holds, placements by a walk over its free ranges), every
//! placement the first hit of a linear scan over the spaces in the set's order (the preferred
//! alignment in every space, then the required one), reservations split by brute force into
//! their parts, frees and lookups by a scan of every part. The spaces themselves are random
//! too: the whole 64-bit space alone, spaces that touch, spaces of one unit, spaces ending at
//! `u64::MAX`, spaces above 2^24 units (where the bounds round), given in any order. Every
//! answer and error must be the model's; a refusal must leave the set as it printed; after
//! every step the set's own checks (its address order and max tree against a fresh look at
//! each space) pass and each space's `largest_free` is the model's largest free range.

use memvisor_resources::model::{AddrAnswer, AddrModel, AddrOp};
use memvisor_resources::{AddressRange, AllocPolicy, AllocatorSet, Error, Request};
use proptest::prelude::*;

const CASES: u32 = if cfg!(miri) { 4 } else { 512 };
const OPS: usize = if cfg!(miri) { 12 } else { 60 };

fn r(start: u64, end: u64) -> AddressRange {
    AddressRange::new(start, end).unwrap()
}

/// A length or a gap: one unit, a few, around 2^24 (where the bounds start to round), large.
fn span() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => Just(1u64),
        4 => 2u64..0x200,
        1 => Just(0x1000u64),
        2 => ((1u64 << 24) - 2)..((1u64 << 24) + 0x41),
        1 => (1u64 << 40)..(1u64 << 40) + 3,
        1 => (1u64 << 62)..(1u64 << 62) + 0x1000,
    ]
}

/// Disjoint spaces, in a random order: the whole 64-bit space alone, or a run of spaces from
/// near 0 (or from 0), each after a gap (or none: touching), the last one sometimes running to
/// `u64::MAX`.
fn spaces() -> impl Strategy<Value = Vec<AddressRange>> {
    let run = (
        prop_oneof![Just(0u64), 0u64..0x1000, Just(u64::MAX - 0x1000)],
        prop::collection::vec((prop_oneof![1 => Just(0u64), 2 => span()], span()), 1..9),
        any::<bool>(),
    )
        .prop_map(|(first, shapes, to_top)| {
            let mut out = Vec::new();
            let mut next = Some(first);
            for (gap, len) in shapes {
                let Some(start) = next.and_then(|n| n.checked_add(gap)) else {
                    break;
                };
                let end = start.saturating_add(len - 1);
                out.push(r(start, end));
                next = end.checked_add(1);
            }
            if out.is_empty() {
                out.push(r(first, first));
            }
            if to_top && let Some(last) = out.last_mut() {
                *last = r(last.start(), u64::MAX);
            }
            out
        })
        .prop_shuffle();
    prop_oneof![1 => Just(vec![AddressRange::FULL]), 6 => run]
}

/// An address resolved against the spaces: anywhere, or near an edge of one of them.
#[derive(Clone, Copy, Debug)]
struct Addr {
    space: usize,
    edge: u8,
    off: u64,
    raw: u64,
}

impl Addr {
    fn at(self, spaces: &[AddressRange]) -> u64 {
        let s = spaces[self.space % spaces.len()];
        match self.edge % 6 {
            0 => self.raw,
            1 => s.start().wrapping_add(self.off),
            2 => s.end().wrapping_sub(self.off),
            3 => s.start().wrapping_sub(self.off).wrapping_sub(1),
            4 => s.end().wrapping_add(self.off).wrapping_add(1),
            _ => s.start().wrapping_add(s.end() / 2 - s.start() / 2),
        }
    }
}

fn addr() -> impl Strategy<Value = Addr> {
    (
        any::<usize>(),
        any::<u8>(),
        prop_oneof![3 => 0u64..0x40, 1 => any::<u64>()],
        any::<u64>(),
    )
        .prop_map(|(space, edge, off, raw)| Addr {
            space,
            edge,
            off,
            raw,
        })
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 1u64..0x100,
        2 => span(),
        1 => Just(u64::MAX),
        1 => Just(1u64 << 63),
    ]
}

fn align() -> impl Strategy<Value = u64> {
    prop_oneof![6 => (0u32..10).prop_map(|k| 1u64 << k), 1 => (10u32..64).prop_map(|k| 1u64 << k)]
}

#[derive(Clone, Debug)]
enum Op {
    Allocate {
        size: u64,
        align: u64,
        last: bool,
        window: Option<(Addr, Addr)>,
        key: Option<u64>,
    },
    Exact {
        at: Addr,
        size: u64,
        align: u64,
        window: Option<(Addr, Addr)>,
    },
    Reserve {
        from: Addr,
        to: Addr,
        key: Option<u64>,
    },
    FreeNth(usize),
    FreeRange(Addr, Addr),
    Release(u64),
    Lookup(Addr),
    Clone,
    Align(u64, u64),
}

fn key() -> impl Strategy<Value = Option<u64>> {
    prop::option::weighted(0.3, 0u64..4)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (size(), align(), any::<bool>(), prop::option::weighted(0.25, (addr(), addr())), key())
            .prop_map(|(size, align, last, window, key)| Op::Allocate { size, align, last, window, key }),
        3 => (addr(), size(), align(), prop::option::weighted(0.3, (addr(), addr())))
            .prop_map(|(at, size, align, window)| Op::Exact { at, size, align, window }),
        4 => (addr(), addr(), key()).prop_map(|(from, to, key)| Op::Reserve { from, to, key }),
        4 => any::<usize>().prop_map(Op::FreeNth),
        2 => (addr(), addr()).prop_map(|(a, b)| Op::FreeRange(a, b)),
        2 => (0u64..4).prop_map(Op::Release),
        2 => addr().prop_map(Op::Lookup),
        1 => Just(Op::Clone),
        1 => ((0u32..5).prop_map(|k| 1u64 << k), (0u32..12).prop_map(|k| 1u64 << k))
            .prop_map(|(m, p)| Op::Align(m, p)),
    ]
}

/// One live allocation: its parts (space, range; one per space it touches), the range it was
/// asked for, its key and its tag.
#[derive(Clone, Debug)]
struct Group {
    parts: Vec<(usize, AddressRange)>,
    given: AddressRange,
    key: Option<u64>,
    tag: u32,
}

impl Group {
    /// The range the set names for it: the hull of its parts.
    fn whole(&self) -> AddressRange {
        let low = self.parts.iter().map(|p| p.1.start()).min().unwrap();
        let high = self.parts.iter().map(|p| p.1.end()).max().unwrap();
        r(low, high)
    }
}

/// The naive set.
#[derive(Clone, Debug)]
struct Model {
    spaces: Vec<AddressRange>,
    pools: Vec<AddrModel>,
    groups: Vec<Group>,
    min: u64,
    pref: u64,
}

impl Model {
    fn new(spaces: &[AddressRange]) -> Self {
        Self {
            spaces: spaces.to_vec(),
            pools: spaces.iter().map(|&s| AddrModel::new(s)).collect(),
            groups: Vec::new(),
            min: 1,
            pref: 1,
        }
    }

    /// Every part: its space, range, and the group it belongs to.
    fn parts(&self) -> impl Iterator<Item = (usize, AddressRange, usize)> + '_ {
        self.groups
            .iter()
            .enumerate()
            .flat_map(|(g, grp)| grp.parts.iter().map(move |&(i, p)| (i, p, g)))
    }

    /// Where a placement lands: a linear scan over the spaces in the set's order.
    fn place(&self, req: &Request) -> Result<(usize, AddressRange), Error> {
        let size = req.size();
        let align = req.alignment().max(self.min);
        let first = self.spaces[0];
        let try_in = |i: usize, a: u64, policy: AllocPolicy, window: Option<AddressRange>| {
            let op = AddrOp::Allocate {
                size,
                alignment: a,
                policy,
                window: window.map(|w| (w.start(), w.end())),
                tag: 0,
            };
            match self.pools[i].clone().apply(&op) {
                Ok(AddrAnswer::Placed(got)) => Ok(got),
                Ok(other) => panic!("a placement answered {other:?}"),
                Err(e) => Err(e),
            }
        };
        if let AllocPolicy::ExactMatch(address) = req.policy() {
            if address & (align - 1) != 0 {
                return Err(Error::UnalignedAddress {
                    address,
                    alignment: align,
                });
            }
            let range = AddressRange::from_start_and_size(address, size)?;
            let Some(i) = self.spaces.iter().position(|s| s.contains_range(&range)) else {
                return Err(Error::OutsideSpace {
                    range,
                    space: first,
                });
            };
            let mut window = None;
            if let Some(w) = req.window() {
                if !w.contains_range(&range) {
                    return Err(Error::OutsideSpace { range, space: w });
                }
                window = w.intersection(&self.spaces[i]);
            }
            return try_in(i, align, req.policy(), window).map(|got| (i, got));
        }
        if let Some(w) = req.window()
            && !self.spaces.iter().any(|s| s.overlaps(&w))
        {
            return Err(Error::OutsideSpace {
                range: w,
                space: first,
            });
        }
        let passes: &[u64] = if self.pref > align {
            &[self.pref, align]
        } else {
            &[align]
        };
        for &a in passes {
            for (i, space) in self.spaces.iter().enumerate() {
                let window = match req.window() {
                    Some(w) => match w.intersection(space) {
                        Some(clipped) => Some(clipped),
                        None => continue,
                    },
                    None => None,
                };
                if let Ok(got) = try_in(i, a, req.policy(), window) {
                    return Ok((i, got));
                }
            }
        }
        Err(Error::OutOfSpace {
            size,
            alignment: align,
        })
    }

    fn add(
        &mut self,
        parts: Vec<(usize, AddressRange)>,
        given: AddressRange,
        key: Option<u64>,
        tag: u32,
    ) {
        for &(i, p) in &parts {
            self.pools[i]
                .apply(&AddrOp::Reserve {
                    start: p.start(),
                    end: p.end(),
                    tag,
                })
                .unwrap();
        }
        self.groups.push(Group {
            parts,
            given,
            key,
            tag,
        });
    }

    fn remove(&mut self, g: usize) -> Group {
        let grp = self.groups.remove(g);
        for &(i, p) in &grp.parts {
            self.pools[i]
                .apply(&AddrOp::FreeRange {
                    start: p.start(),
                    end: p.end(),
                })
                .unwrap();
        }
        grp
    }

    fn key_in_use(&self, key: Option<u64>) -> Result<(), Error> {
        match key {
            Some(k) if self.groups.iter().any(|g| g.key == Some(k)) => Err(Error::KeyInUse(k)),
            _ => Ok(()),
        }
    }

    fn allocate(
        &mut self,
        req: &Request,
        key: Option<u64>,
        tag: u32,
    ) -> Result<AddressRange, Error> {
        self.key_in_use(key)?;
        let (i, got) = self.place(req)?;
        self.add(vec![(i, got)], got, key, tag);
        Ok(got)
    }

    /// A reservation: its part in every space, all free, or the lowest allocation in the way.
    fn reserve(&mut self, range: AddressRange, key: Option<u64>, tag: u32) -> Result<(), Error> {
        self.key_in_use(key)?;
        let parts: Vec<(usize, AddressRange)> = self
            .spaces
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.intersection(&range).map(|p| (i, p)))
            .collect();
        if parts.is_empty() {
            return Err(Error::OutsideSpace {
                range,
                space: self.spaces[0],
            });
        }
        if let Some((_, existing, _)) = self
            .parts()
            .filter(|(_, p, _)| p.overlaps(&range))
            .min_by_key(|(_, p, _)| p.start())
        {
            return Err(Error::Overlap {
                requested: range,
                existing,
            });
        }
        self.add(parts, range, key, tag);
        Ok(())
    }

    /// A free: the parts of `range` in the spaces must be exactly the parts of one allocation.
    fn free(&mut self, range: AddressRange) -> Result<u32, Error> {
        let inside: Vec<AddressRange> = self
            .spaces
            .iter()
            .filter_map(|s| s.intersection(&range))
            .collect();
        let lowest = self
            .parts()
            .filter(|(_, p, _)| p.overlaps(&range))
            .map(|(_, _, g)| self.groups[g].whole())
            .min_by_key(AddressRange::start);
        let Some(existing) = lowest else {
            return Err(Error::NotAllocated(range));
        };
        let hit = self.groups.iter().position(|g| {
            let mut mine: Vec<AddressRange> = g.parts.iter().map(|p| p.1).collect();
            let mut theirs = inside.clone();
            mine.sort_by_key(AddressRange::start);
            theirs.sort_by_key(AddressRange::start);
            mine == theirs
        });
        match hit {
            Some(g) => Ok(self.remove(g).tag),
            None => Err(Error::NotExactAllocation {
                requested: range,
                existing,
            }),
        }
    }

    /// What the set lists: space by space in the set's order, each in address order.
    fn allocated(&self) -> Vec<(AddressRange, u32)> {
        self.pools
            .iter()
            .flat_map(|p| p.ranges().iter().copied())
            .collect()
    }
}

fn window(w: Option<(Addr, Addr)>, spaces: &[AddressRange]) -> Option<AddressRange> {
    w.map(|(a, b)| {
        let (a, b) = (a.at(spaces), b.at(spaces));
        r(a.min(b), a.max(b))
    })
}

fn check(set: &AllocatorSet<u32>, model: &Model) -> Result<(), TestCaseError> {
    set.check_invariants()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let got: Vec<(AddressRange, u32)> = set.allocated().map(|a| (a.range, *a.tag)).collect();
    prop_assert_eq!(got, model.allocated());
    for g in &model.groups {
        if let Some(k) = g.key {
            prop_assert_eq!(set.get(k), Some(g.given));
        }
    }
    for k in 0..4 {
        if !model.groups.iter().any(|g| g.key == Some(k)) {
            prop_assert_eq!(set.get(k), None);
        }
    }
    let allocated = model.allocated();
    prop_assert_eq!(set.len(), allocated.len());
    prop_assert_eq!(set.is_empty(), allocated.is_empty());
    let used: u128 = allocated.iter().map(|(r, _)| r.size_u128()).sum();
    prop_assert_eq!(set.used(), used);
    for (pool, m) in set.pools().iter().zip(&model.pools) {
        let largest = m
            .free_ranges()
            .iter()
            .map(AddressRange::size_u128)
            .max()
            .unwrap_or(0);
        prop_assert_eq!(pool.largest_free(), largest, "{:?}", pool.space());
        let bound = u128::from(pool.largest_free_bound());
        prop_assert!(bound >= largest.min(u128::from(u64::MAX)));
        if largest < 1 << 24 {
            prop_assert_eq!(bound, largest);
        } else if largest < 1 << 64 {
            // Rounded up by less than one part in 2^23.
            prop_assert!(
                (bound - largest) << 23 < largest,
                "{:#x} for {:#x}",
                bound,
                largest
            );
        } else {
            prop_assert_eq!(bound, u128::from(u64::MAX));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_answer_is_a_linear_scan_over_the_spaces(
        spaces in spaces(),
        ops in prop::collection::vec(op(), 1..OPS),
    ) {
        let mut set = AllocatorSet::<u32>::new(&spaces).unwrap();
        let mut model = Model::new(&spaces);
        check(&set, &model)?;
        for (step, op) in ops.iter().enumerate() {
            let tag = u32::try_from(step).unwrap();
            let before = format!("{set:?}");
            let failed = match *op {
                Op::Allocate { size, align, last, window: w, key } => {
                    let policy = if last { AllocPolicy::LastMatch } else { AllocPolicy::FirstMatch };
                    let mut req = Request::new(size, align, policy).unwrap();
                    if let Some(w) = window(w, &spaces) {
                        req = req.within(w);
                    }
                    let want = model.allocate(&req, key, tag);
                    let got = match key {
                        Some(k) => set.allocate_keyed(k, &req, tag),
                        None => set.allocate_with(&req, tag),
                    };
                    prop_assert_eq!(got, want, "step {}: {:?}", step, op);
                    got.is_err()
                }
                Op::Exact { at, size, align, window: w } => {
                    let at = at.at(&spaces) & !(align - 1);
                    match Request::new(size, align, AllocPolicy::ExactMatch(at)) {
                        Err(_) => false,
                        Ok(mut req) => {
                            if let Some(w) = window(w, &spaces) {
                                req = req.within(w);
                            }
                            let want = model.allocate(&req, None, tag);
                            let got = set.allocate_with(&req, tag);
                            prop_assert_eq!(got, want, "step {}: {:?}", step, op);
                            got.is_err()
                        }
                    }
                }
                Op::Reserve { from, to, key } => {
                    let (a, b) = (from.at(&spaces), to.at(&spaces));
                    let range = r(a.min(b), a.max(b));
                    let want = model.reserve(range, key, tag);
                    let got = match key {
                        Some(k) => set.reserve_keyed(k, range, tag),
                        None => set.reserve_with(range, tag),
                    };
                    prop_assert_eq!(got, want, "step {}: {:?}", step, op);
                    got.is_err()
                }
                Op::FreeNth(n) => {
                    if model.groups.is_empty() {
                        false
                    } else {
                        let g = &model.groups[n % model.groups.len()];
                        let range = g.given;
                        let want = model.free(range);
                        prop_assert!(want.is_ok());
                        let got = set.free(&range);
                        prop_assert_eq!(got, want, "step {}: {:?}", step, op);
                        false
                    }
                }
                Op::FreeRange(a, b) => {
                    let (a, b) = (a.at(&spaces), b.at(&spaces));
                    let range = r(a.min(b), a.max(b));
                    let want = model.free(range);
                    let got = set.free(&range);
                    prop_assert_eq!(got, want, "step {}: {:?}", step, op);
                    got.is_err()
                }
                Op::Release(k) => {
                    let want = match model.groups.iter().position(|g| g.key == Some(k)) {
                        Some(g) => {
                            let given = model.groups[g].given;
                            Ok((given, model.remove(g).tag))
                        }
                        None => Err(Error::UnknownKey(k)),
                    };
                    let got = set.release(k);
                    prop_assert_eq!(got, want, "step {}: {:?}", step, op);
                    got.is_err()
                }
                Op::Lookup(a) => {
                    let a = a.at(&spaces);
                    let want = model
                        .allocated()
                        .into_iter()
                        .find(|(p, _)| p.contains(a));
                    let got = set.allocation_containing(a).map(|x| (x.range, *x.tag));
                    prop_assert_eq!(got, want, "step {}: {:?}", step, op);
                    false
                }
                Op::Clone => {
                    set = set.clone();
                    false
                }
                Op::Align(m, p) => {
                    set.set_alignment(m, p).unwrap();
                    (model.min, model.pref) = (m, p.max(m));
                    false
                }
            };
            if failed {
                prop_assert_eq!(format!("{set:?}"), before, "step {}: {:?} failed but changed the set", step, op);
            }
            check(&set, &model)?;
        }
    }
}
