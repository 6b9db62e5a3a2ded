//! `IdAllocator` against the naive model with IDs clustered far apart in a large range, so
//! that IDs are held both in the bitmap and in runs above it: held runs are merged, split and
//! moved into the bitmap when it grows past them, and every answer must stay the model's.

use memvisor_resources::model::{IdOp, run_id_ops};
use memvisor_resources::{IdAllocator, IdSnapshot};

fn xorshift(mut s: u64) -> impl FnMut() -> u64 {
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

/// A value below `n` from `next`.
fn below(next: &mut impl FnMut() -> u64, n: u32) -> u32 {
    u32::try_from(next() % u64::from(n)).unwrap_or(0)
}

/// A script on `first..=first + 2^22 - 1` with IDs around a few far-apart points; with `grow`,
/// one late step allocates enough IDs for the bitmap to cover the whole range.
fn script(seed: u64, first: u32, grow: bool) -> Vec<IdOp> {
    let mut next = xorshift(seed);
    let size = 1u32 << 22;
    let centers = [0, (1 << 16) - 100, 1 << 20, 3 << 20, size - 200];
    let steps = 300;
    let mut ops = Vec::with_capacity(steps + 2);
    for step in 0..steps {
        if grow && step == steps - 40 {
            ops.push(IdOp::AllocateRunAt {
                first: first + 100_000,
                count: 70_000,
            });
            ops.push(IdOp::FreeRun {
                first: first + 100_000,
                last: first + 160_000,
            });
        }
        let c = centers[below(&mut next, 5) as usize];
        let at = first + c + below(&mut next, 200);
        let small = 1 + below(&mut next, 100);
        ops.push(match next() % 10 {
            0 => IdOp::Allocate,
            1 | 2 => IdOp::AllocateAt(at),
            3 => IdOp::AllocateRunAt {
                first: at,
                count: small.min(first + size - at),
            },
            4 | 5 => IdOp::Free(at),
            6 => IdOp::FreeRun {
                first: at,
                last: (at + below(&mut next, 40)).min(first + size - 1),
            },
            7 => IdOp::AllocateRun {
                count: small,
                alignment: 1 << (next() % 22),
            },
            8 => IdOp::AllocateMany(1 + below(&mut next, 20)),
            _ => IdOp::IsAllocated(at),
        });
    }
    ops
}

#[test]
fn clustered_far_apart_ids_match_the_model() {
    for seed in 1..=16u64 {
        let first = if seed % 3 == 0 { 1000 } else { 0 };
        let ops = script(
            seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            first,
            seed % 2 == 0,
        );
        if let Err(m) = run_id_ops(first, first + (1 << 22) - 1, &ops) {
            panic!("seed {seed}: {m:?}");
        }
    }
}

#[test]
fn clustered_far_apart_ids_snapshot_and_clone_equal() {
    for seed in 1..=6u64 {
        let ops = script(seed, 0, seed % 2 == 0);
        let mut a = IdAllocator::new(0, (1 << 22) - 1).unwrap();
        for (step, op) in ops.iter().enumerate() {
            let _ = memvisor_resources::model::apply_id(&mut a, op);
            if step == 100 {
                // IDs near the top are held without a bitmap covering the range (512 KiB).
                assert!(a.iter().last() > Some(3 << 20));
                assert!(a.heap_bytes() < 64 << 10, "{} bytes", a.heap_bytes());
            }
            if step % 60 == 0 {
                let snapshot: IdSnapshot = a.snapshot();
                let text = serde_json::to_string(&snapshot).unwrap();
                let loaded: IdAllocator = serde_json::from_str(&text).unwrap();
                assert_eq!(loaded, a, "seed {seed} step {step}");
                assert_eq!(format!("{loaded:?}"), format!("{a:?}"));
                assert_eq!(loaded.snapshot(), snapshot);
                // Both answer the rest of the script alike.
                let (mut x, mut y) = (a.clone(), loaded);
                for op in &ops[step..] {
                    assert_eq!(
                        memvisor_resources::model::apply_id(&mut x, op),
                        memvisor_resources::model::apply_id(&mut y, op),
                        "seed {seed} step {step} {op:?}"
                    );
                }
                assert_eq!(x, y);
            }
        }
    }
}
