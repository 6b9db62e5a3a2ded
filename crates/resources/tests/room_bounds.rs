//! Placement after refusals, frees, moves and resizes, step by step against the reference model
//! (`model::AddrModel`, brute-force first and last fit): what the allocator remembers about
//! refused requests must never change an answer. The mix is weighted toward small spaces and
//! aligned requests, so refusals, and requests right after the frees that answer them, are common.

use memvisor_resources::model::{AddrModel, AddrOp, apply_addr, check_addr};
use memvisor_resources::{AddressAllocator, AddressRange, AllocPolicy};

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

    fn index(&mut self) -> usize {
        usize::try_from(self.below(1 << 16)).unwrap()
    }

    /// An alignment of up to 512 units and a first- or last-fit policy.
    fn alignment_and_policy(&mut self) -> (u64, AllocPolicy) {
        let alignment = 1u64 << self.below(10);
        let policy = if self.below(2) == 0 {
            AllocPolicy::LastMatch
        } else {
            AllocPolicy::FirstMatch
        };
        (alignment, policy)
    }
}

/// The next operation on an allocator of `space` holding `live`.
fn next_op(rng: &mut Rng, space: AddressRange, live: &[(AddressRange, u32)]) -> AddrOp {
    match rng.below(6) {
        0 | 1 => {
            let size = 1 + rng.below(0x100);
            let (alignment, policy) = rng.alignment_and_policy();
            let window = if rng.below(3) == 0 {
                let s = space.start() + rng.below(space.size().unwrap());
                Some((s, s + rng.below(space.end() - s + 1)))
            } else {
                (rng.below(2) == 0).then_some((space.start(), space.end()))
            };
            AddrOp::Allocate {
                size,
                alignment,
                policy,
                window,
                tag: 0,
            }
        }
        2 => AddrOp::FreeNth(rng.index()),
        3 => {
            // Around every live allocation: grows or shrinks the space, never cuts one.
            let lo = live.iter().map(|(r, _)| r.start()).min().unwrap_or(0x800);
            let hi = live.iter().map(|(r, _)| r.end()).max().unwrap_or(0x800);
            AddrOp::Resize {
                start: lo.saturating_sub(rng.below(0x200)),
                end: hi + rng.below(0x200),
            }
        }
        4 => {
            let size = 1 + rng.below(0x200);
            let (alignment, policy) = rng.alignment_and_policy();
            AddrOp::RelocateNth {
                index: rng.index(),
                size,
                alignment,
                policy,
            }
        }
        _ => {
            let start = space.start() + rng.below(space.size().unwrap());
            AddrOp::Reserve {
                start,
                end: (start + rng.below(0x40)).min(space.end()),
                tag: 1,
            }
        }
    }
}

#[test]
#[cfg_attr(miri, ignore)] // safe arithmetic only, and slow under Miri
fn placement_after_refusals_frees_and_resizes_matches_model() {
    for seed in 1..=25u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut space = AddressRange::new(0x100, 0x10ff).unwrap();
        let mut real = AddressAllocator::<u32>::new(space);
        let mut model = AddrModel::new(space);
        for step in 0..300 {
            let op = next_op(&mut rng, space, model.ranges());
            let got = apply_addr(&mut real, &op);
            assert_eq!(got, model.apply(&op), "seed {seed} step {step}: {op:?}");
            if let (AddrOp::Resize { start, end }, Ok(_)) = (op, &got) {
                space = AddressRange::new(start, end).unwrap();
            }
            check_addr(&real, &model)
                .unwrap_or_else(|d| panic!("seed {seed} step {step}: after {op:?}: {d}"));
        }
    }
}
