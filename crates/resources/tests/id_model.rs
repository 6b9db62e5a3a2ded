//! Model-based property test: `IdAllocator` against a `BTreeSet` (see `model::run_id_ops`), for
//! `u32` IDs and, with the same operation scripts, `u16` and `u64` IDs.

use memvisor_resources::model::{IdOp, run_id_ops, run_id_ops_with};
use memvisor_resources::{Id, MAX_ID_RANGE};
use proptest::prelude::*;
use proptest::test_runner::RngAlgorithm;

const CASES: u32 = if cfg!(miri) { 16 } else { 10_000 };
/// Fewer cases for the other widths: they run the same scripts.
const WIDTH_CASES: u32 = if cfg!(miri) { 8 } else { 3_000 };

/// `cases` cases; under Miri, which cannot read the working directory, no failure files.
fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(cases);
    if cfg!(miri) {
        config.failure_persistence = None;
    }
    // The cases come from proptest's XorShift generator: its default ChaCha is slow unoptimized
    // (`addr_model` took 2.6 times as long with it, `id_wide_model` 1.1 times).
    config.rng_algorithm = RngAlgorithm::XorShift;
    config
}

/// ID ranges to test for a type whose largest value is `max`: small, touching 0, touching
/// `max`, a single ID, the largest range an allocator may hold (used densely from the bottom),
/// at the bottom and at the top of the type, and, for `u64`, ranges one ID too large.
fn id_range(max: u64) -> impl Strategy<Value = (u64, u64)> {
    let widest = (MAX_ID_RANGE - 1).min(max);
    prop_oneof![
        Just((0, 199)),
        Just((max - 199, max)),
        Just((1000, 1000)),
        Just((5, 300)),
        Just((0, widest)),
        Just((max - widest, max)),
        Just((max - widest - u64::from(max > widest), max)),
        Just((0, max)),
        (0u64..100, 0u64..400).prop_map(|(a, len)| (a, a + len)),
    ]
}

/// An ID near the bottom or the top of `first..=last`, or just outside it (never past `max`).
/// Ranges wider than a few thousand IDs only get IDs near the bottom, so the bitmap stays
/// small.
fn id(first: u64, last: u64, max: u64) -> impl Strategy<Value = u64> {
    let near_top = if last - first < 10_000 {
        last.saturating_sub(250)
    } else {
        first
    };
    prop_oneof![
        (0u64..260).prop_map(move |o| first.saturating_add(o).min(max)),
        (0u64..260).prop_map(move |o| near_top
            .saturating_add(o)
            .min(last.saturating_add(2))
            .min(max)),
        (0u64..3).prop_map(move |o| first.saturating_sub(o)),
    ]
}

fn op(first: u64, last: u64, max: u64) -> impl Strategy<Value = IdOp<u64>> {
    // Alignments past 2^31 (up to 2^63) only in small ranges.
    let big_align = if last - first < 10_000 {
        prop_oneof![
            Just(1u64 << 31),
            Just(1 << 32),
            Just(1 << 40),
            Just(1 << 63)
        ]
        .boxed()
    } else {
        Just(1u64 << 6).boxed()
    };
    prop_oneof![
        6 => Just(IdOp::Allocate),
        3 => id(first, last, max).prop_map(IdOp::AllocateAt),
        // A huge alignment in a huge range would make the bitmap cover 2^31 IDs.
        2 => (0u32..20, prop_oneof![5 => (0u32..5).prop_map(|k| 1 << k), 1 => Just(0u64), 1 => Just(3u64), 1 => big_align])
            .prop_map(|(count, alignment)| IdOp::AllocateRun { count, alignment }),
        2 => (0u32..20).prop_map(IdOp::AllocateMany),
        // Sometimes one ID past the end of the range, or a run past the type's end: never a
        // run that fits, so a huge range is never filled.
        2 => (id(first, last, max), prop_oneof![4 => 0u32..20, 1 => Just(u32::MAX)])
            .prop_map(move |(at, count)| {
                if count != u32::MAX || at > last {
                    return IdOp::AllocateRunAt { first: at, count };
                }
                match u32::try_from((last - at).saturating_add(2)) {
                    Ok(count) => IdOp::AllocateRunAt { first: at, count },
                    // A run that ends one ID past `last`.
                    Err(_) => IdOp::AllocateRunAt { first: last - u64::from(u32::MAX) + 2, count: u32::MAX },
                }
            }),
        5 => id(first, last, max).prop_map(IdOp::Free),
        1 => (id(first, last, max), 0u64..12)
            .prop_map(move |(a, len)| IdOp::FreeRun { first: a, last: a.saturating_add(len).min(max).saturating_sub(u64::from(len == 11) * 12) }),
        1 => id(first, last, max).prop_map(IdOp::IsAllocated),
    ]
}

/// A range of a type whose largest value is `max` and a script on it, in `u64`.
fn script(max: u64) -> impl Strategy<Value = (u64, u64, Vec<IdOp<u64>>)> {
    id_range(max).prop_flat_map(move |(first, last)| {
        (
            Just(first),
            Just(last),
            prop::collection::vec(op(first, last, max), 0..50),
        )
    })
}

/// `v` as an `I`; every value a script for `I` holds fits.
fn narrow<I: Id + TryFrom<u64>>(v: u64) -> I {
    I::try_from(v).unwrap_or_else(|_| panic!("{v} does not fit the ID type"))
}

/// The `u64` script `op` for `I` IDs.
fn to_width<I: Id + TryFrom<u64>>(op: &IdOp<u64>) -> IdOp<I> {
    match *op {
        IdOp::Allocate => IdOp::Allocate,
        IdOp::AllocateAt(id) => IdOp::AllocateAt(narrow(id)),
        IdOp::AllocateRun { count, alignment } => IdOp::AllocateRun { count, alignment },
        IdOp::AllocateMany(count) => IdOp::AllocateMany(count),
        IdOp::AllocateRunAt { first, count } => IdOp::AllocateRunAt {
            first: narrow(first),
            count,
        },
        IdOp::Free(id) => IdOp::Free(narrow(id)),
        IdOp::FreeRun { first, last } => IdOp::FreeRun {
            first: narrow(first),
            last: narrow(last),
        },
        IdOp::IsAllocated(id) => IdOp::IsAllocated(narrow(id)),
    }
}

fn run_as<I: Id + TryFrom<u64>>(first: u64, last: u64, ops: &[IdOp<u64>]) -> Result<(), String> {
    let ops: Vec<IdOp<I>> = ops.iter().map(to_width).collect();
    run_id_ops_with(narrow::<I>(first), narrow::<I>(last), &ops).map_err(|m| m.to_string())
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn id_allocator_matches_model((first, last, ops) in script(u64::from(u32::MAX))) {
        // The `u32` entry point, as callers use it.
        let ops: Vec<IdOp> = ops.iter().map(to_width).collect();
        if let Err(m) = run_id_ops(narrow(first), narrow(last), &ops) {
            prop_assert!(false, "{}", m);
        }
    }
}

proptest! {
    #![proptest_config(config(WIDTH_CASES))]

    #[test]
    fn id_allocator_u16_matches_model((first, last, ops) in script(u64::from(u16::MAX))) {
        if let Err(m) = run_as::<u16>(first, last, &ops) {
            prop_assert!(false, "{}", m);
        }
    }

    #[test]
    fn id_allocator_u64_matches_model((first, last, ops) in script(u64::MAX)) {
        if let Err(m) = run_as::<u64>(first, last, &ops) {
            prop_assert!(false, "{}", m);
        }
    }

    /// The `u64` scripts shifted above 2^40, where no ID fits a `u32`.
    #[test]
    fn id_allocator_u64_high_matches_model((first, last, ops) in script(u64::from(u32::MAX))) {
        let shift = |v: u64| v + (1 << 40);
        let ops: Vec<IdOp<u64>> = ops
            .iter()
            .map(|op| match *op {
                IdOp::AllocateAt(id) => IdOp::AllocateAt(shift(id)),
                IdOp::AllocateRunAt { first, count } => IdOp::AllocateRunAt { first: shift(first), count },
                IdOp::Free(id) => IdOp::Free(shift(id)),
                IdOp::FreeRun { first, last } => IdOp::FreeRun { first: shift(first), last: shift(last) },
                IdOp::IsAllocated(id) => IdOp::IsAllocated(shift(id)),
                other => other,
            })
            .collect();
        if let Err(m) = run_as::<u64>(shift(first), shift(last), &ops) {
            prop_assert!(false, "{}", m);
        }
    }
}

#[test]
fn id_model_runs_fill_free_and_reuse() {
    let mut ops = vec![IdOp::Allocate; 70];
    ops.extend((0..70).step_by(3).map(IdOp::Free));
    ops.extend([IdOp::Allocate; 30]);
    ops.push(IdOp::AllocateRun {
        count: 8,
        alignment: 8,
    });
    ops.push(IdOp::FreeRun { first: 0, last: 5 });
    run_id_ops(0, 99, &ops).unwrap();
}

#[test]
fn id_model_u64_top_of_type_runs_and_overflow() {
    let top = u64::MAX - 99;
    let ops = [
        IdOp::AllocateRun {
            count: 64,
            alignment: 64,
        },
        IdOp::AllocateRunAt {
            first: u64::MAX - 3,
            count: 4,
        },
        IdOp::AllocateRunAt {
            first: u64::MAX - 1,
            count: 5,
        },
        IdOp::AllocateMany(40),
        IdOp::Allocate,
        IdOp::FreeRun {
            first: u64::MAX - 1,
            last: u64::MAX,
        },
        IdOp::AllocateRun {
            count: 2,
            alignment: 2,
        },
        IdOp::IsAllocated(u64::MAX),
    ];
    run_id_ops_with(top, u64::MAX, &ops).unwrap();
}
