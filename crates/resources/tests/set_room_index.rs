//! The set's indexes (its spaces by address, and the max tree of each space's largest free
//! range) against an oracle that knows nothing of them: every placement is the one a walk over
//! the spaces in the set's order gives (a copy of each space asked in turn, preferred
//! alignment in every space, then the required one), with the same errors, over many spaces
//! (some larger than 2^24 units, where the bounds round) and random sequences of placements,
//! reservations, frees, keyed calls, refusals, clones and alignment changes. After every step
//! each space's `largest_free` is exact and `largest_free_bound` is at least it.

use memvisor_resources::{
    AddressAllocator, AddressRange, AllocPolicy, AllocatorSet, Error, Request,
};
use proptest::prelude::*;

const CASES: u32 = if cfg!(miri) { 4 } else { 256 };
const OPS: usize = if cfg!(miri) { 16 } else { 80 };

fn r(start: u64, end: u64) -> AddressRange {
    AddressRange::new(start, end).unwrap()
}

const BIG: u64 = 1 << 40;

/// Eleven spaces, not in address order: small ones, ones above 2^24 units and the top of the
/// 64-bit space, with holes between them.
fn spaces() -> Vec<AddressRange> {
    vec![
        r(0x3000, 0x3fff),
        r(BIG, 2 * BIG - 1),
        r(0x0, 0x7ff),
        r(0x1000, 0x10ff),
        r(4 * BIG, 4 * BIG + (1 << 25) + 0x1233),
        r(0x2000, 0x2fff),
        r(u64::MAX - (BIG - 1), u64::MAX),
        r(0x8000, 0x8fff),
        r(3 * BIG, 3 * BIG + 0x3f),
        r(0x5000, 0x5001),
        r(0x6000, 0x6000),
    ]
}

/// An address near the interesting places: inside or around one of the spaces.
fn addr() -> impl Strategy<Value = u64> {
    let s = spaces();
    (0..s.len(), any::<bool>(), 0u64..0x2_0000, any::<u64>()).prop_map(
        move |(i, high, off, far)| {
            let sp = s[i];
            match (high, far % 4) {
                (_, 0) => far,
                (false, _) => sp.start().wrapping_add(off).wrapping_sub(0x100),
                (true, _) => sp.end().wrapping_sub(off).wrapping_add(0x100),
            }
        },
    )
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 1u64..0x400,
        1 => 0x400u64..0x2000,
        2 => (1u64 << 24)..(1u64 << 27),
        1 => (BIG / 4)..BIG + 2,
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Allocate {
        size: u64,
        align: u64,
        last: bool,
        window: Option<(u64, u64)>,
        try_: bool,
    },
    Exact {
        at: u64,
        size: u64,
        window: Option<(u64, u64)>,
    },
    Reserve(u64, u64),
    FreeNth(usize),
    FreeRange(u64, u64),
    AllocateKeyed(u64, u64),
    ReserveKeyed(u64, u64, u64),
    Release(u64),
    Clone,
    Align(u64, u64),
}

/// Two addresses, lower first.
fn pair() -> impl Strategy<Value = (u64, u64)> {
    (addr(), addr()).prop_map(|(a, b)| (a.min(b), a.max(b)))
}

/// An address and one a little above it.
fn near() -> impl Strategy<Value = (u64, u64)> {
    (addr(), 0u64..0x3000).prop_map(|(a, len)| (a, a.saturating_add(len)))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (size(), (0u32..14).prop_map(|k| 1u64 << k), any::<bool>(),
              prop::option::weighted(0.25, pair()), any::<bool>())
            .prop_map(|(size, align, last, window, try_)| Op::Allocate { size, align, last, window, try_ }),
        2 => (addr(), size(), prop::option::weighted(0.3, pair()))
            .prop_map(|(at, size, window)| Op::Exact { at, size, window }),
        3 => prop_oneof![near(), pair()].prop_map(|(a, b)| Op::Reserve(a, b)),
        5 => any::<usize>().prop_map(Op::FreeNth),
        1 => pair().prop_map(|(a, b)| Op::FreeRange(a, b)),
        2 => (0u64..6, size()).prop_map(|(k, s)| Op::AllocateKeyed(k, s)),
        1 => (0u64..6, near()).prop_map(|(k, (a, b))| Op::ReserveKeyed(k, a, b)),
        2 => (0u64..6).prop_map(Op::Release),
        1 => Just(Op::Clone),
        1 => ((0u32..4).prop_map(|k| 1u64 << k), (0u32..14).prop_map(|k| 1u64 << k))
            .prop_map(|(m, p)| Op::Align(m, p)),
    ]
}

/// Where a placement must land, by the set's promise and nothing else: the first space in the
/// set's order (preferred alignment in every space, then the required one) where a copy of
/// that space takes the request.
fn oracle(
    pools: &[AddressAllocator<u32>],
    req: &Request,
    min: u64,
    pref: u64,
) -> Result<(usize, AddressRange), Error> {
    let size = req.size();
    let align = req.alignment().max(min);
    let first = pools[0].space();
    if let AllocPolicy::ExactMatch(address) = req.policy() {
        if address & (align - 1) != 0 {
            return Err(Error::UnalignedAddress {
                address,
                alignment: align,
            });
        }
        let range = AddressRange::from_start_and_size(address, size)?;
        let Some(i) = pools.iter().position(|p| p.space().contains_range(&range)) else {
            return Err(Error::OutsideSpace {
                range,
                space: first,
            });
        };
        let mut one = Request::new(size, align, req.policy())?;
        if let Some(w) = req.window() {
            if !w.contains_range(&range) {
                return Err(Error::OutsideSpace { range, space: w });
            }
            one = one.within(w.intersection(&pools[i].space()).unwrap());
        }
        return pools[i].clone().allocate_with(&one, 0).map(|got| (i, got));
    }
    if let Some(w) = req.window()
        && !pools.iter().any(|p| p.space().overlaps(&w))
    {
        return Err(Error::OutsideSpace {
            range: w,
            space: first,
        });
    }
    let passes: &[u64] = if pref > align {
        &[pref, align]
    } else {
        &[align]
    };
    for &a in passes {
        for (i, pool) in pools.iter().enumerate() {
            let mut one = Request::new(size, a, req.policy())?;
            if let Some(w) = req.window() {
                let Some(clipped) = w.intersection(&pool.space()) else {
                    continue;
                };
                one = one.within(clipped);
            }
            if let Ok(got) = pool.clone().allocate_with(&one, 0) {
                return Ok((i, got));
            }
        }
    }
    Err(Error::OutOfSpace {
        size,
        alignment: align,
    })
}

/// Each space's largest free range is exact, its bound holds it, and the set's own checks
/// (which include the max tree against the spaces) pass.
fn check(set: &AllocatorSet<u32>) -> Result<(), TestCaseError> {
    set.check_invariants()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for pool in set.pools() {
        let largest = pool.free_ranges().map(|f| f.size_u128()).max().unwrap_or(0);
        prop_assert_eq!(pool.largest_free(), largest, "{:?}", pool.space());
        prop_assert!(u128::from(pool.largest_free_bound()) >= largest.min(u64::MAX.into()));
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
    fn placements_match_a_walk_over_the_spaces_in_order(
        ops in prop::collection::vec(op(), 1..OPS),
    ) {
        let mut set = AllocatorSet::<u32>::new(&spaces()).unwrap();
        let (mut min, mut pref) = (1u64, 1u64);
        for (step, op) in ops.iter().enumerate() {
            let tag = u32::try_from(step).unwrap();
            let before = format!("{set:?}");
            let result: Result<(), Error> = match *op {
                Op::Allocate { size, align, last, window, try_ } => {
                    let policy = if last { AllocPolicy::LastMatch } else { AllocPolicy::FirstMatch };
                    let mut req = Request::new(size, align, policy).unwrap();
                    if let Some((a, b)) = window {
                        req = req.within(r(a, b));
                    }
                    let want = oracle(set.pools(), &req, min, pref);
                    let got = if try_ {
                        set.try_allocate_with(&req, tag).map_err(|refused| {
                            assert_eq!(*refused.tag(), tag);
                            refused.error()
                        })
                    } else {
                        set.allocate_with(&req, tag)
                    };
                    prop_assert_eq!(got, want.map(|(_, g)| g), "step {}: {:?}", step, op);
                    got.map(|_| ())
                }
                Op::Exact { at, size, window } => {
                    match Request::new(size, 1, AllocPolicy::ExactMatch(at)) {
                        Err(_) => Ok(()),
                        Ok(mut req) => {
                            if let Some((a, b)) = window {
                                req = req.within(r(a, b));
                            }
                            let want = oracle(set.pools(), &req, min, pref);
                            let got = set.allocate_with(&req, tag);
                            prop_assert_eq!(got, want.map(|(_, g)| g), "step {}: {:?}", step, op);
                            got.map(|_| ())
                        }
                    }
                }
                Op::Reserve(a, b) => set.reserve_with(r(a, b), tag),
                Op::FreeNth(n) => {
                    let all: Vec<AddressRange> = set.allocated().map(|a| a.range).collect();
                    if all.is_empty() {
                        Ok(())
                    } else {
                        set.free(&all[n % all.len()]).map(|_| ())
                    }
                }
                Op::FreeRange(a, b) => set.free(&r(a, b)).map(|_| ()),
                Op::AllocateKeyed(key, size) => {
                    let req = Request::new(size, 1, AllocPolicy::FirstMatch).unwrap();
                    let want = oracle(set.pools(), &req, min, pref);
                    let got = set.allocate_keyed(key, &req, tag);
                    if set.get(key).is_some() && got.is_err() {
                        prop_assert_eq!(got, Err(Error::KeyInUse(key)));
                    } else {
                        prop_assert_eq!(got, want.map(|(_, g)| g), "step {}: {:?}", step, op);
                    }
                    got.map(|_| ())
                }
                Op::ReserveKeyed(key, a, b) => set.reserve_keyed(key, r(a, b), tag),
                Op::Release(key) => set.release(key).map(|_| ()),
                Op::Clone => {
                    let copy = set.clone();
                    prop_assert!(copy == set);
                    set = copy;
                    Ok(())
                }
                Op::Align(m, p) => {
                    set.set_alignment(m, p).unwrap();
                    (min, pref) = (m, p.max(m));
                    Ok(())
                }
            };
            if result.is_err() {
                prop_assert_eq!(format!("{set:?}"), before, "step {}: {:?} failed but changed the set", step, op);
            }
            check(&set)?;
        }
        // Whatever is left: a fresh set given the same reservations places as this one does.
        let mut fresh = AllocatorSet::<u32>::new(&spaces()).unwrap().with_alignment(min, pref).unwrap();
        for a in set.allocated() {
            fresh.reserve_with(a.range, 0).unwrap();
        }
        for size in [1u64, 0x100, 0x1000, 1 << 24, (1 << 25) + 1, BIG / 2, BIG] {
            let req = Request::new(size, 1, AllocPolicy::FirstMatch).unwrap();
            prop_assert_eq!(set.clone().allocate_with(&req, 0), fresh.clone().allocate_with(&req, 0), "size {:#x}", size);
        }
    }
}

/// The bounds at the edges: a whole 64-bit space, all free, all taken, one unit, and gaps
/// above 2^24 units that round to one bound, wherever the largest lies.
#[test]
fn largest_free_and_its_bound_at_the_edges() {
    let whole = AddressAllocator::<u32>::new(AddressRange::FULL);
    assert_eq!(whole.largest_free(), 1 << 64);
    assert_eq!(whole.largest_free_bound(), u64::MAX);
    let mut one = AddressAllocator::<u32>::new(r(7, 7));
    assert_eq!((one.largest_free(), one.largest_free_bound()), (1, 1));
    one.reserve_with(r(7, 7), 0).unwrap();
    assert_eq!((one.largest_free(), one.largest_free_bound()), (0, 0));
    // One unit taken at each end of the whole space: the gap between is 2^64 - 2.
    let mut ends = AddressAllocator::<u32>::new(AddressRange::FULL);
    ends.reserve_with(r(0, 0), 0).unwrap();
    assert_eq!(ends.largest_free(), u128::from(u64::MAX));
    ends.reserve_with(r(u64::MAX, u64::MAX), 0).unwrap();
    assert_eq!(ends.largest_free(), u128::from(u64::MAX - 1));
    assert!(ends.largest_free_bound() >= u64::MAX - 1);
    ends.check_invariants().unwrap();
    // Free ranges just above 2^24 units, one unit apart in size: the bound rounds up, the
    // exact answer does not.
    for top in 0..5u64 {
        let mut a = AddressAllocator::<u32>::new(r(0, (1 << 32) - 1));
        let mut at = 0u64;
        for k in 0..5u64 {
            let gap = (1 << 24) + 1 + if k == top { 5 } else { k };
            at += gap;
            a.reserve_with(r(at, at), 0).unwrap();
            at += 1;
        }
        a.reserve_with(r(at, (1 << 32) - 1), 0).unwrap();
        assert_eq!(a.largest_free(), (1 << 24) + 6);
        assert!(a.largest_free_bound() >= (1 << 24) + 6);
        a.check_invariants().unwrap();
        // A set holding it still places the exact largest size there, and refuses one more.
        let mut set = AllocatorSet::<u32>::new(&[r(0, (1 << 32) - 1)]).unwrap();
        for f in a.allocated() {
            set.reserve_with(f.range, 0).unwrap();
        }
        let fits = Request::new((1 << 24) + 6, 1, AllocPolicy::FirstMatch).unwrap();
        let over = Request::new((1 << 24) + 7, 1, AllocPolicy::FirstMatch).unwrap();
        assert!(matches!(
            set.clone().allocate_with(&over, 0),
            Err(Error::OutOfSpace { .. })
        ));
        set.allocate_with(&fits, 0).unwrap();
        set.check_invariants().unwrap();
    }
}
