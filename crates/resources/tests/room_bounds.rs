//! Placement after refusals, frees, moves and resizes, checked against a scan of the free ranges:
//! what the allocator remembers about refused requests must never change an answer.

use memvisor_resources::{AddressAllocator, AddressRange, AllocPolicy, Request};

/// xorshift64: a fixed, seedable sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(u64::try_from(len).unwrap())).unwrap()
    }
}

/// The lowest (or highest) aligned start in `w` with `size` free units, by scanning.
fn naive(
    a: &AddressAllocator<u32>,
    size: u64,
    align: u64,
    last: bool,
    w: AddressRange,
) -> Option<u64> {
    let mut best = None;
    for f in a.free_ranges() {
        let Some(f) = f.intersection(&w) else {
            continue;
        };
        if f.end() - f.start() < size - 1 {
            continue;
        }
        let cand = if last {
            (f.end() - (size - 1)) & !(align - 1)
        } else {
            match f.start().checked_add(align - 1) {
                Some(x) => x & !(align - 1),
                None => continue,
            }
        };
        if cand < f.start() || cand > f.end() || f.end() - cand < size - 1 {
            continue;
        }
        best = Some(match best {
            None => cand,
            Some(b) if last => cand.max(b),
            Some(b) => cand.min(b),
        });
    }
    best
}

#[test]
#[cfg_attr(miri, ignore)] // safe arithmetic only, and slow under Miri
fn placement_after_refusals_frees_and_resizes_matches_scan() {
    let seeds: u64 = 25;
    let steps = 300;

    for seed in 1..=seeds {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut space = AddressRange::new(0x100, 0x10ff).unwrap();
        let mut a = AddressAllocator::<u32>::new(space);
        let mut live: Vec<AddressRange> = Vec::new();
        for step in 0..steps {
            match rng.below(6) {
                0 | 1 => {
                    let size = 1 + rng.below(0x100);
                    let align = 1u64 << rng.below(10);
                    let last = rng.below(2) == 0;
                    let w = if rng.below(3) == 0 {
                        let s = space.start() + rng.below(space.size().unwrap());
                        let e = s + rng.below(space.end() - s + 1);
                        AddressRange::new(s, e).unwrap()
                    } else {
                        space
                    };
                    let mut req = Request::new(
                        size,
                        align,
                        if last {
                            AllocPolicy::LastMatch
                        } else {
                            AllocPolicy::FirstMatch
                        },
                    )
                    .unwrap();
                    if w != space || rng.below(2) == 0 {
                        req = req.within(w);
                    }
                    let want = naive(&a, size, align, last, w);
                    let got = a.allocate_with(&req, 0);
                    assert_eq!(
                        got.as_ref().ok().map(|r| r.start()),
                        want,
                        "seed {seed} step {step}"
                    );
                    if let Ok(r) = got {
                        live.push(r);
                    }
                }
                2 => {
                    if !live.is_empty() {
                        let i = rng.index(live.len());
                        a.free(&live.swap_remove(i)).unwrap();
                    }
                }
                3 => {
                    let lo = live.iter().map(|r| r.start()).min().unwrap_or(0x800);
                    let hi = live.iter().map(|r| r.end()).max().unwrap_or(0x800);
                    let s = lo.saturating_sub(rng.below(0x200));
                    let e = hi + rng.below(0x200);
                    let ns = AddressRange::new(s.min(lo), e.max(hi)).unwrap();
                    a.resize(ns).unwrap();
                    space = ns;
                }
                4 => {
                    if !live.is_empty() {
                        let i = rng.index(live.len());
                        let size = 1 + rng.below(0x200);
                        let align = 1u64 << rng.below(10);
                        let last = rng.below(2) == 0;
                        let req = Request::new(
                            size,
                            align,
                            if last {
                                AllocPolicy::LastMatch
                            } else {
                                AllocPolicy::FirstMatch
                            },
                        )
                        .unwrap();
                        let mut b = a.clone();
                        b.free(&live[i]).unwrap();
                        let want = naive(&b, size, align, last, space);
                        let got = a.relocate(&live[i], &req);
                        assert_eq!(
                            got.as_ref().ok().map(|r| r.start()),
                            want,
                            "reloc seed {seed} step {step}"
                        );
                        if let Ok(r) = got {
                            live[i] = r;
                        }
                    }
                }
                _ => {
                    let s = space.start() + rng.below(space.size().unwrap());
                    let r = AddressRange::new(s, (s + rng.below(0x40)).min(space.end())).unwrap();
                    if a.reserve_with(r, 1).is_ok() {
                        live.push(r);
                    }
                }
            }
            a.check_invariants().unwrap();
        }
    }
}
