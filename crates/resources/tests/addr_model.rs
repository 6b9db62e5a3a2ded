//! Model-based property test: `AddressAllocator` against a sorted `Vec` of ranges with
//! brute-force first and last fit (see `model::run_addr_ops`). Allocations and reservations
//! with an odd tag go through the `try_` methods, whose refusals must give the tag back.

use memvisor_resources::model::{AddrOp, run_addr_ops};
use memvisor_resources::{AddressRange, AllocPolicy};
use proptest::prelude::*;
use proptest::test_runner::RngAlgorithm;

const CASES: u32 = if cfg!(miri) { 16 } else { 10_000 };

/// `CASES` cases; under Miri, which cannot read the working directory, no failure files.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(CASES);
    if cfg!(miri) {
        config.failure_persistence = None;
    }
    // The cases come from proptest's XorShift generator: its default ChaCha is slow unoptimized
    // (`addr_model` took 2.6 times as long with it, `id_wide_model` 1.1 times).
    config.rng_algorithm = RngAlgorithm::XorShift;
    config
}

/// Spaces to test: small ones touching 0 and `u64::MAX`, one in the middle, one of 2^26 units
/// and more, and the whole 64-bit space.
fn space() -> impl Strategy<Value = AddressRange> {
    prop_oneof![
        Just(AddressRange::new(0, 0xfff).unwrap()),
        Just(AddressRange::new(u64::MAX - 0xfff, u64::MAX).unwrap()),
        Just(AddressRange::new(0x1_0000, 0x1_07ff).unwrap()),
        Just(AddressRange::FULL),
        Just(AddressRange::new(7, 7).unwrap()),
        // Gaps between the two ends past 2^24 units, whose bounds are rounded up.
        Just(AddressRange::new(0x1000, 0x1000 + (1 << 26) + 0x7ff).unwrap()),
    ]
}

/// An address near either end of the space, or anywhere.
fn addr(space: AddressRange) -> impl Strategy<Value = u64> {
    let (lo, hi) = (space.start(), space.end());
    prop_oneof![
        4 => (0u64..0x1100).prop_map(move |o| lo.saturating_add(o)),
        4 => (0u64..0x1100).prop_map(move |o| hi.saturating_sub(o)),
        1 => (0u64..4).prop_map(move |o| lo.wrapping_sub(o)),
        1 => any::<u64>(),
    ]
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        12 => 1u64..=0x40,
        2 => 0x40u64..=0x400,
        1 => Just(0u64),
        1 => Just(u64::MAX),
        1 => Just(1u64 << 63),
        // Near the gaps of the space above 2^24 units, on either side of their rounded bounds.
        1 => ((1u64 << 26) - 0x3000)..=((1u64 << 26) + 0x800),
    ]
}

fn alignment() -> impl Strategy<Value = u64> {
    prop_oneof![
        12 => (0u32..8).prop_map(|k| 1u64 << k),
        1 => Just(0u64),
        1 => Just(3u64),
        1 => Just(1u64 << 63),
    ]
}

fn policy(space: AddressRange) -> impl Strategy<Value = (u8, u64, bool)> {
    (0u8..3, addr(space), any::<bool>())
}

fn make_policy((kind, addr, raw): (u8, u64, bool), alignment: u64) -> AllocPolicy {
    match kind {
        0 => AllocPolicy::FirstMatch,
        1 => AllocPolicy::LastMatch,
        // Mostly aligned exact addresses, so that many of them can succeed.
        _ if raw || alignment == 0 => AllocPolicy::ExactMatch(addr),
        _ => AllocPolicy::ExactMatch(addr & !(alignment - 1)),
    }
}

fn op(space: AddressRange) -> impl Strategy<Value = AddrOp> {
    let window = prop_oneof![
        4 => Just(None),
        1 => (addr(space), addr(space)).prop_map(|(a, b)| Some((a.min(b), a.max(b)))),
        1 => (addr(space), addr(space)).prop_map(Some),
    ];
    prop_oneof![
        8 => (size(), alignment(), policy(space), window, 0u32..4).prop_map(|(size, alignment, p, window, tag)| {
            AddrOp::Allocate { size, alignment, policy: make_policy(p, alignment), window, tag }
        }),
        1 => (addr(space), 0u64..0x40, any::<bool>(), 0u32..4).prop_map(|(start, len, flip, tag)| {
            let end = start.saturating_add(len);
            if flip { AddrOp::Reserve { start: end, end: start, tag } } else { AddrOp::Reserve { start, end, tag } }
        }),
        5 => any::<usize>().prop_map(AddrOp::FreeNth),
        1 => (addr(space), 0u64..0x40).prop_map(|(start, len)| AddrOp::FreeRange { start, end: start.saturating_add(len) }),
        1 => addr(space).prop_map(AddrOp::Release),
        2 => (any::<usize>(), size(), alignment(), policy(space)).prop_map(|(index, size, alignment, p)| {
            AddrOp::RelocateNth { index, size, alignment, policy: make_policy(p, alignment) }
        }),
        1 => addr(space).prop_map(AddrOp::Lookup),
        // Grow or shrink at either end; now and then an inverted pair.
        1 => (addr(space), addr(space), 0u8..8).prop_map(|(a, b, k)| if k == 0 {
            AddrOp::Resize { start: a, end: b }
        } else {
            AddrOp::Resize { start: a.min(b), end: a.max(b) }
        }),
    ]
}

fn script() -> impl Strategy<Value = (AddressRange, Vec<AddrOp>)> {
    space().prop_flat_map(|s| (Just(s), prop::collection::vec(op(s), 0..50)))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn address_allocator_matches_model((space, ops) in script()) {
        if let Err(m) = run_addr_ops(space, &ops) {
            prop_assert!(false, "{}", m);
        }
    }
}

#[test]
fn addr_model_runs_fill_and_free_at_both_ends() {
    let alloc = |policy| AddrOp::Allocate {
        size: 0x10,
        alignment: 0x10,
        policy,
        window: None,
        tag: 1,
    };
    let mut ops = vec![alloc(AllocPolicy::FirstMatch); 5];
    ops.extend(vec![alloc(AllocPolicy::LastMatch); 5]);
    ops.extend((0..4).map(|i| AddrOp::FreeNth(i * 2)));
    ops.push(alloc(AllocPolicy::ExactMatch(0x20)));
    run_addr_ops(AddressRange::new(0, 0xff).unwrap(), &ops).unwrap();
    run_addr_ops(AddressRange::new(u64::MAX - 0xff, u64::MAX).unwrap(), &ops).unwrap();
}
