//! Model-based property test: `AllocatorSet` against one naive `AddrModel` per space, tried in
//! the set's order (preferred alignment in every space, then the required one). Steps with an
//! odd tag go through the `try_` methods, whose refusals must give the tag back.

use memvisor_resources::model::{AddrModel, AddrOp};
use memvisor_resources::{AddressRange, AllocPolicy, AllocatorSet, Error, Refused, Request};
use proptest::prelude::*;

const CASES: u32 = if cfg!(miri) { 16 } else { 2_000 };

fn r(start: u64, end: u64) -> AddressRange {
    AddressRange::new(start, end).unwrap()
}

/// Three spaces, deliberately not in address order, with holes between them.
fn spaces() -> Vec<AddressRange> {
    vec![r(0x2000, 0x2fff), r(0x0, 0x7ff), r(0x4000, 0x43ff)]
}

/// Runs a `try_` call with `tag`; a refusal must give that tag back and leave the set as it
/// printed before. Returns the call's result with the refusal's error.
fn tagged<R>(
    set: &mut AllocatorSet<u32>,
    tag: u32,
    call: impl FnOnce(&mut AllocatorSet<u32>) -> Result<R, Refused<u32>>,
) -> Result<Result<R, Error>, TestCaseError> {
    let before = format!("{set:?}");
    match call(set) {
        Ok(r) => Ok(Ok(r)),
        Err(refused) => {
            prop_assert_eq!(*refused.tag(), tag, "another tag came back");
            prop_assert_eq!(format!("{set:?}"), before, "a refusal changed the set");
            Ok(Err(refused.error()))
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Allocate {
        size: u64,
        align: u64,
        last: bool,
        window: Option<(u64, u64)>,
    },
    Reserve {
        start: u64,
        end: u64,
    },
    FreeNth(usize),
    FreeSpan(usize),
    Lookup(u64),
    AllocateKeyed {
        key: u64,
        size: u64,
    },
    Release(u64),
    Get(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let addr = 0u64..0x4800;
    prop_oneof![
        6 => (1u64..0x400, (0u32..8).prop_map(|k| 1u64 << k), any::<bool>(),
              prop::option::weighted(0.2, (0u64..0x4800, 0u64..0x4800)))
            .prop_map(|(size, align, last, w)| Op::Allocate {
                size, align, last, window: w.map(|(a, b)| (a.min(b), a.max(b))),
            }),
        2 => (addr.clone(), 0u64..0x2800).prop_map(|(start, len)| Op::Reserve { start, end: start + len }),
        3 => any::<usize>().prop_map(Op::FreeNth),
        1 => any::<usize>().prop_map(Op::FreeSpan),
        1 => addr.prop_map(Op::Lookup),
        2 => (0u64..6, 1u64..0x200).prop_map(|(key, size)| Op::AllocateKeyed { key, size }),
        2 => (0u64..6).prop_map(Op::Release),
        1 => (0u64..6).prop_map(Op::Get),
    ]
}

struct Model {
    keys: std::collections::BTreeMap<u64, AddressRange>,
    models: Vec<AddrModel>,
    /// The hull of each live reservation that spans spaces, with its parts.
    spans: Vec<(AddressRange, Vec<(usize, AddressRange)>)>,
    min: u64,
    pref: u64,
}

impl Model {
    fn allocate(
        &mut self,
        size: u64,
        align: u64,
        last: bool,
        window: Option<(u64, u64)>,
        tag: u32,
    ) -> Result<AddressRange, Error> {
        let align = align.max(self.min);
        let policy = if last {
            AllocPolicy::LastMatch
        } else {
            AllocPolicy::FirstMatch
        };
        if let Some((a, b)) = window {
            let w = r(a, b);
            if !spaces().iter().any(|s| s.overlaps(&w)) {
                return Err(Error::OutsideSpace {
                    range: w,
                    space: spaces()[0],
                });
            }
        }
        let passes: Vec<u64> = if self.pref > align {
            vec![self.pref, align]
        } else {
            vec![align]
        };
        for a in passes {
            for (m, space) in self.models.iter_mut().zip(spaces()) {
                let window = match window {
                    Some((lo, hi)) => match r(lo, hi).intersection(&space) {
                        Some(c) => Some((c.start(), c.end())),
                        None => continue,
                    },
                    None => None,
                };
                let op = AddrOp::Allocate {
                    size,
                    alignment: a,
                    policy,
                    window,
                    tag,
                };
                if let Ok(memvisor_resources::model::AddrAnswer::Placed(p)) = m.apply(&op) {
                    return Ok(p);
                }
            }
        }
        Err(Error::OutOfSpace {
            size,
            alignment: align,
        })
    }

    fn reserve(&mut self, range: AddressRange, tag: u32) -> Result<(), Error> {
        let mut parts = Vec::new();
        let mut lowest: Option<AddressRange> = None;
        for (i, space) in spaces().iter().enumerate() {
            let Some(part) = range.intersection(space) else {
                continue;
            };
            if let Some(&(existing, _)) = self.models[i]
                .ranges()
                .iter()
                .find(|(x, _)| x.overlaps(&part))
                && lowest.is_none_or(|l| existing.start() < l.start())
            {
                lowest = Some(existing);
            }
            parts.push((i, part));
        }
        if let Some(existing) = lowest {
            return Err(Error::Overlap {
                requested: range,
                existing,
            });
        }
        if parts.is_empty() {
            return Err(Error::OutsideSpace {
                range,
                space: spaces()[0],
            });
        }
        if parts.len() > 1 {
            let low = parts.iter().map(|p| p.1.start()).min().unwrap();
            let high = parts.iter().map(|p| p.1.end()).max().unwrap();
            self.spans.push((r(low, high), parts.clone()));
        }
        for (i, part) in parts {
            self.models[i]
                .apply(&AddrOp::Reserve {
                    start: part.start(),
                    end: part.end(),
                    tag,
                })
                .unwrap();
        }
        Ok(())
    }
}

fn check(set: &AllocatorSet<u32>, model: &Model) -> Result<(), TestCaseError> {
    set.check_invariants()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for (pool, m) in set.pools().iter().zip(&model.models) {
        let got: Vec<(AddressRange, u32)> = pool.allocated().map(|a| (a.range, *a.tag)).collect();
        prop_assert_eq!(&got[..], m.ranges());
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
    fn allocator_set_matches_models(
        min in (0u32..5).prop_map(|k| 1u64 << k),
        pref in (0u32..8).prop_map(|k| 1u64 << k),
        ops in prop::collection::vec(op(), 0..60),
    ) {
        let mut set = AllocatorSet::<u32>::new(&spaces()).unwrap().with_alignment(min, pref).unwrap();
        let mut model = Model {
            keys: std::collections::BTreeMap::new(),
            models: spaces().into_iter().map(AddrModel::new).collect(),
            spans: Vec::new(),
            min,
            pref: pref.max(min),
        };
        for (step, op) in ops.iter().enumerate() {
            let tag = u32::try_from(step).unwrap();
            match *op {
                Op::Allocate { size, align, last, window } => {
                    let policy = if last { AllocPolicy::LastMatch } else { AllocPolicy::FirstMatch };
                    let mut req = Request::new(size, align, policy).unwrap();
                    if let Some((a, b)) = window {
                        req = req.within(r(a, b));
                    }
                    let got = if tag % 2 == 1 {
                        tagged(&mut set, tag, |s| s.try_allocate_with(&req, tag))?
                    } else {
                        set.allocate_with(&req, tag)
                    };
                    let want = model.allocate(size, align, last, window, tag);
                    prop_assert_eq!(got, want, "step {}: {:?}", step, op);
                }
                Op::Reserve { start, end } => {
                    let range = r(start, end);
                    let got = if tag % 2 == 1 {
                        tagged(&mut set, tag, |s| s.try_reserve_with(range, tag))?
                    } else {
                        set.reserve_with(range, tag)
                    };
                    prop_assert_eq!(got, model.reserve(range, tag), "step {}", step);
                }
                Op::FreeNth(n) => {
                    let all: Vec<(usize, AddressRange)> = model.models.iter().enumerate()
                        .flat_map(|(i, m)| m.ranges().iter().map(move |&(x, _)| (i, x)))
                        .collect();
                    if all.is_empty() {
                        continue;
                    }
                    let (i, victim) = all[n % all.len()];
                    let got = set.free(&victim);
                    // A part of a spanning reservation is not freed alone.
                    if let Some((hull, _)) = model.spans.iter().find(|(_, parts)| parts.iter().any(|&(_, p)| p == victim)) {
                        prop_assert_eq!(got, Err(Error::NotExactAllocation { requested: victim, existing: *hull }), "step {}", step);
                        continue;
                    }
                    let want = model.models[i].apply(&AddrOp::FreeRange { start: victim.start(), end: victim.end() });
                    model.keys.retain(|_, r| *r != victim);
                    prop_assert_eq!(
                        got.map(memvisor_resources::model::AddrAnswer::Freed),
                        want,
                        "step {}", step
                    );
                }
                Op::FreeSpan(n) => {
                    if model.spans.is_empty() {
                        continue;
                    }
                    let (hull, parts) = model.spans.remove(n % model.spans.len());
                    let got = set.free(&hull);
                    let mut want = None;
                    let mut sorted = parts.clone();
                    sorted.sort_by_key(|&(_, p)| p.start());
                    for (i, p) in sorted {
                        let ans = model.models[i].apply(&AddrOp::FreeRange { start: p.start(), end: p.end() });
                        match ans {
                            Ok(memvisor_resources::model::AddrAnswer::Freed(t)) => { want.get_or_insert(t); }
                            other => panic!("model free failed: {other:?}"),
                        }
                    }
                    prop_assert_eq!(got, Ok(want.unwrap()), "step {}", step);
                }
                Op::AllocateKeyed { key, size } => {
                    let req = Request::new(size, 1, AllocPolicy::FirstMatch).unwrap();
                    let got = if tag % 2 == 1 {
                        tagged(&mut set, tag, |s| s.try_allocate_keyed(key, &req, tag))?
                    } else {
                        set.allocate_keyed(key, &req, tag)
                    };
                    let want = if model.keys.contains_key(&key) {
                        Err(Error::KeyInUse(key))
                    } else {
                        model.allocate(size, 1, false, None, tag)
                    };
                    if let Ok(r) = want {
                        model.keys.insert(key, r);
                    }
                    prop_assert_eq!(got, want, "step {}", step);
                }
                Op::Release(key) => {
                    let got = set.release(key);
                    let want = match model.keys.remove(&key) {
                        None => Err(Error::UnknownKey(key)),
                        Some(r) => {
                            let i = spaces().iter().position(|s| s.contains_range(&r)).unwrap();
                            let ans = model.models[i].apply(&AddrOp::FreeRange { start: r.start(), end: r.end() });
                            match ans {
                                Ok(memvisor_resources::model::AddrAnswer::Freed(t)) => Ok((r, t)),
                                other => panic!("model free failed: {other:?}"),
                            }
                        }
                    };
                    prop_assert_eq!(got, want, "step {}", step);
                }
                Op::Get(key) => {
                    prop_assert_eq!(set.get(key), model.keys.get(&key).copied());
                }
                Op::Lookup(addr) => {
                    let got = set.allocation_containing(addr).map(|a| (a.range, *a.tag));
                    let want = model.models.iter()
                        .flat_map(|m| m.ranges().iter().copied())
                        .find(|(x, _)| x.contains(addr));
                    prop_assert_eq!(got, want);
                }
            }
            check(&set, &model)?;
        }
    }
}

#[test]
fn set_reserve_spanning_overlap_fails_unchanged() {
    let mut set = AllocatorSet::<u32>::new(&spaces()).unwrap();
    set.reserve_with(r(0x4100, 0x41ff), 1).unwrap();
    let before = set.clone();
    assert_eq!(
        set.reserve_with(r(0x2f00, 0x4100), 2),
        Err(Error::Overlap {
            requested: r(0x2f00, 0x4100),
            existing: r(0x4100, 0x41ff)
        })
    );
    assert_eq!(set, before);
    // Spanning two spaces: both parts, one tag each; freed together.
    set.reserve_with(r(0x2f00, 0x40ff), 3).unwrap();
    assert_eq!(set.len(), 3);
    assert_eq!(
        set.allocation_containing(0x4000).map(|a| (a.range, *a.tag)),
        Some((r(0x4000, 0x40ff), 3))
    );
    assert_eq!(set.free(&r(0x2f00, 0x40ff)), Ok(3));
    assert_eq!(set.len(), 1);
}

#[test]
fn set_new_overlapping_or_empty_fails() {
    assert_eq!(
        AllocatorSet::<()>::new(&[r(0, 0xfff), r(0x800, 0x1fff)]).map(|s| s.len()),
        Err(Error::Overlap {
            requested: r(0x800, 0x1fff),
            existing: r(0, 0xfff)
        })
    );
    assert_eq!(
        AllocatorSet::<()>::new(&[]).map(|s| s.len()),
        Err(Error::EmptySet)
    );
    assert_eq!(
        Error::EmptySet.to_string(),
        "an allocator set needs at least one address space"
    );
    assert_eq!(
        AllocatorSet::<()>::new(&spaces())
            .unwrap()
            .with_alignment(3, 4)
            .map(|s| s.len()),
        Err(Error::InvalidAlignment(3))
    );
}

#[test]
fn set_preferred_alignment_falls_back_to_minimum() {
    let mut set = AllocatorSet::<()>::new(&[r(0x100, 0x1ff)])
        .unwrap()
        .with_alignment(0x10, 0x1000)
        .unwrap();
    let req = Request::new(0x10, 1, AllocPolicy::FirstMatch).unwrap();
    assert_eq!(set.allocate_with(&req, ()), Ok(r(0x100, 0x10f)));
    let odd = Request::new(0x10, 1, AllocPolicy::ExactMatch(0x118)).unwrap();
    assert_eq!(
        set.allocate_with(&odd, ()),
        Err(Error::UnalignedAddress {
            address: 0x118,
            alignment: 0x10
        })
    );
}
