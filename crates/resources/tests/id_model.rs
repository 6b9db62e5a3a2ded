//! Model-based property test: `IdAllocator` against a `BTreeSet` (see `model::run_id_ops`).

use memvisor_resources::model::{IdOp, run_id_ops};
use proptest::prelude::*;

const CASES: u32 = if cfg!(miri) { 16 } else { 10_000 };

/// `CASES` cases; under Miri, which cannot read the working directory, no failure files.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(CASES);
    if cfg!(miri) {
        config.failure_persistence = None;
    }
    config
}

/// ID ranges to test: small, touching 0, touching `u32::MAX`, a single ID, and the whole
/// `u32` range (used densely from the bottom).
fn id_range() -> impl Strategy<Value = (u32, u32)> {
    prop_oneof![
        Just((0, 199)),
        Just((u32::MAX - 199, u32::MAX)),
        Just((1000, 1000)),
        Just((5, 300)),
        Just((0, u32::MAX)),
        (0u32..100, 0u32..400).prop_map(|(a, len)| (a, a + len)),
    ]
}

/// An ID near the bottom or the top of `first..=last`, or just outside it. Ranges wider than a
/// few thousand IDs only get IDs near the bottom, so the bitmap stays small.
fn id(first: u32, last: u32) -> impl Strategy<Value = u32> {
    let near_top = if last - first < 10_000 {
        last.saturating_sub(250)
    } else {
        first
    };
    prop_oneof![
        (0u32..260).prop_map(move |o| first.saturating_add(o)),
        (0u32..260).prop_map(move |o| near_top.saturating_add(o).min(last.saturating_add(2))),
        (0u32..3).prop_map(move |o| first.saturating_sub(o)),
    ]
}

fn op(first: u32, last: u32) -> impl Strategy<Value = IdOp> {
    let big_align = if last - first < 10_000 {
        1u32 << 31
    } else {
        1 << 6
    };
    prop_oneof![
        6 => Just(IdOp::Allocate),
        3 => id(first, last).prop_map(IdOp::AllocateAt),
        // A huge alignment in a huge range would make the bitmap cover 2^31 IDs.
        2 => (0u32..20, prop_oneof![5 => (0u32..5).prop_map(|k| 1 << k), 1 => Just(0u32), 1 => Just(3u32), 1 => Just(big_align)])
            .prop_map(|(count, alignment)| IdOp::AllocateRun { count, alignment }),
        2 => (0u32..20).prop_map(IdOp::AllocateMany),
        // Sometimes one ID past the end of the range, or past `u32::MAX`: never a run that
        // fits, so a huge range is never filled.
        2 => (id(first, last), prop_oneof![4 => 0u32..20, 1 => Just(u32::MAX)])
            .prop_map(move |(at, count)| {
                if count != u32::MAX || at > last {
                    return IdOp::AllocateRunAt { first: at, count };
                }
                match u32::try_from(u64::from(last - at) + 2) {
                    Ok(count) => IdOp::AllocateRunAt { first: at, count },
                    Err(_) => IdOp::AllocateRunAt { first: at.max(2), count: u32::MAX },
                }
            }),
        5 => id(first, last).prop_map(IdOp::Free),
        1 => (id(first, last), 0u32..12)
            .prop_map(|(a, len)| IdOp::FreeRun { first: a, last: a.saturating_add(len).saturating_sub(u32::from(len == 11) * 12) }),
        1 => id(first, last).prop_map(IdOp::IsAllocated),
    ]
}

fn script() -> impl Strategy<Value = (u32, u32, Vec<IdOp>)> {
    id_range().prop_flat_map(|(first, last)| {
        (
            Just(first),
            Just(last),
            prop::collection::vec(op(first, last), 0..50),
        )
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn id_allocator_matches_model((first, last, ops) in script()) {
        if let Err(m) = run_id_ops(first, last, &ops) {
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
