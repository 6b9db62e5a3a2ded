//! `IdAllocator` on ranges far larger than the 64 Ki IDs its bitmap always covers (the whole
//! `u32` range, windows of 2^32 `u64` IDs ending at `u64::MAX`, and the whole `u16` range),
//! with IDs clustered near the bottom, near the top and around the place where the bitmap
//! grows over runs held above it, against the naive model. Every call runs first with the heap
//! refusing (after 0, 1 or 2 requests): it either answers as the model does or is
//! `HeapRefused` and leaves the allocator as it was. Failed calls change nothing, and
//! snapshots, clones and allocators that reach the same state by other calls are equal.

use memvisor_resources::model::{IdModel, IdOp, apply_id};
use memvisor_resources::{Error, Id, IdAllocator, IdLoadLimits, IdSnapshot};
use memvisor_testkit::refusing_heap::{Refusing, refusing_after};

#[global_allocator]
static ALLOCATOR: Refusing = Refusing::ON_DEMAND;

fn xorshift(mut s: u64) -> impl FnMut() -> u64 {
    s |= 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

/// A script over `first..=last` (offsets taken in `u64`), with IDs around a few centers: the
/// bottom, the bitmap's floor (64 Ki IDs up), a point just above a large run that makes the
/// bitmap grow over the runs held below it, the middle and the top; and a few IDs just outside
/// the range. Some scripts also fill the bottom up to just below the floor.
fn script<I: Id + TryFrom<u64>>(seed: u64, first: u64, last: u64, steps: usize) -> Vec<IdOp<I>> {
    let mut next = xorshift(seed);
    let span = last - first;
    let centers = [
        0,
        (1u64 << 16).min(span),
        (300_000u64).min(span),
        span / 2,
        span,
    ];
    let id = |next: &mut dyn FnMut() -> u64| -> I {
        let c = centers[(next() % 5) as usize];
        let off = c.saturating_add(next() % 160).saturating_sub(80);
        let v = (first.wrapping_add(off)).min(last.saturating_add(next() % 3));
        I::try_from(v).ok().unwrap_or(I::MAX)
    };
    let mut ops = Vec::with_capacity(steps);
    for step in 0..steps {
        if step == steps / 2 && seed.is_multiple_of(2) && !cfg!(miri) {
            // A large run: the bitmap grows to cover it (and the runs held below its end).
            let at = I::try_from(first + (199_000u64).min(span / 4))
                .ok()
                .unwrap_or(I::MAX);
            ops.push(IdOp::AllocateRunAt {
                first: at,
                count: 100_000
                    .min(u32::try_from(span / 4).unwrap_or(u32::MAX))
                    .max(1),
            });
        }
        if step == steps / 4 && !seed.is_multiple_of(3) && !cfg!(miri) {
            // The bottom fills up to just below the bitmap's floor, next to the IDs held
            // above it: later steps hand out the smallest free IDs across them.
            ops.push(IdOp::AllocateMany(65_536 - 300));
        }
        let small = 1 + (next() % 40) as u32;
        ops.push(match next() % 11 {
            0 => IdOp::Allocate,
            1 | 2 => IdOp::AllocateAt(id(&mut next)),
            3 => IdOp::AllocateRunAt {
                first: id(&mut next),
                count: small,
            },
            4 | 5 => IdOp::Free(id(&mut next)),
            6 => {
                let a = id(&mut next);
                let end = a.to_u64().saturating_add(next() % 50);
                IdOp::FreeRun {
                    first: a,
                    last: I::try_from(end).ok().unwrap_or(I::MAX),
                }
            }
            7 => IdOp::AllocateRun {
                count: small,
                alignment: 1 << (next() % 64),
            },
            8 => IdOp::AllocateMany(1 + (next() % 200) as u32),
            9 => IdOp::AllocateRun {
                count: 1 + (next() % 3) as u32,
                alignment: 1 << (16 + next() % 17),
            },
            _ => IdOp::IsAllocated(id(&mut next)),
        });
    }
    ops
}

/// Runs `ops` against the model, each call first with the heap refusing; checks the state after
/// every step and the snapshot, clone and rebuilt allocator every `every` steps.
fn run<I: Id + TryFrom<u64>>(first: I, last: I, ops: &[IdOp<I>], every: usize) {
    let mut real = IdAllocator::<I>::with_range(first, last).unwrap();
    let mut model = IdModel::<I>::new(first, last).unwrap();
    let (mut refusals, mut far) = (0, false);
    for (step, op) in ops.iter().enumerate() {
        let before = real.clone();
        let got = match refusing_after(step % 3, || apply_id(&mut real, op)) {
            Err(Error::HeapRefused { .. }) => {
                refusals += 1;
                assert_eq!(
                    real, before,
                    "step {step} {op:?}: a refusal changed the state"
                );
                assert_eq!(format!("{real:?}"), format!("{before:?}"));
                apply_id(&mut real, op)
            }
            other => other,
        };
        let want = model.apply(op);
        assert_eq!(got, want, "step {step} {op:?}");
        if got.is_err() {
            assert_eq!(
                real, before,
                "step {step} {op:?}: a failed call changed the state"
            );
            assert_eq!(real.snapshot(), before.snapshot());
        }
        assert!(
            real.iter().eq(model.allocated().iter().copied()),
            "step {step} {op:?}: allocated IDs differ"
        );
        assert_eq!(real.used(), model.allocated().len() as u64);
        let runs: Vec<_> = real.allocated_runs().collect();
        assert!(
            runs.iter()
                .flat_map(|r| r.start().to_u64()..=r.end().to_u64())
                .eq(model.allocated().iter().map(|i| i.to_u64())),
            "step {step} {op:?}: runs {runs:?}"
        );
        assert!(
            runs.windows(2)
                .all(|w| w[0].end().to_u64() + 1 < w[1].start().to_u64())
        );
        for id in model.allocated().iter().take(50) {
            assert!(real.is_allocated(*id));
        }
        // IDs held far above the bitmap, which stays small.
        far |= real
            .iter()
            .last()
            .is_some_and(|l| l.to_u64() - first.to_u64() > 1 << 22)
            && real.heap_bytes() < 1 << 20;
        if step % every == every - 1 {
            check_copies(&real, &ops[step + 1..]);
        }
    }
    check_copies(&real, &[]);
    // Under Miri the scripts are too short to be sure to reach either.
    if !cfg!(miri) {
        assert!(refusals > 0, "{refusals} refusals");
        assert!(far || last.to_u64() - first.to_u64() < 1 << 22);
    }
}

/// The parts of `lo..=hi` outside `runs` (sorted, disjoint, inside `lo..=hi`).
fn complement(lo: u64, hi: u64, runs: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = Some(lo);
    for &(a, b) in runs.iter().filter(|&&(a, b)| b >= lo && a <= hi) {
        if let Some(p) = pos
            && p < a
        {
            out.push((p, a - 1));
        }
        pos = b.checked_add(1).filter(|&n| n <= hi);
    }
    if let Some(p) = pos
        && p <= hi
    {
        out.push((p, hi));
    }
    out
}

/// The snapshot loads equal (through serde and through `from_snapshot`), a clone is equal, an
/// allocator built by other calls to the same IDs is equal and prints the same, and all answer
/// `rest` alike.
fn check_copies<I: Id + TryFrom<u64>>(a: &IdAllocator<I>, rest: &[IdOp<I>]) {
    let snapshot = a.snapshot();
    let text = serde_json::to_string(&snapshot).unwrap();
    let parsed: IdSnapshot<I> = serde_json::from_str(&text).unwrap();
    let loaded = IdAllocator::from_snapshot(&parsed, &IdLoadLimits::default()).unwrap();
    assert_eq!(&loaded, a);
    let direct: IdAllocator<I> = serde_json::from_str(&serde_json::to_string(a).unwrap()).unwrap();
    assert_eq!(&direct, a);
    assert_eq!(format!("{loaded:?}"), format!("{a:?}"));
    assert_eq!(loaded.snapshot(), snapshot);
    // The same state by other calls: every ID ever handed out, run by run, then the free
    // ones given back, highest first.
    let mut other = IdAllocator::<I>::with_range(a.first(), a.last()).unwrap();
    let (lo, hi) = (a.first().to_u64(), a.last().to_u64());
    let never: Vec<(u64, u64)> = a
        .never_allocated_runs()
        .map(|r| (r.start().to_u64(), r.end().to_u64()))
        .collect();
    let allocated: Vec<(u64, u64)> = a
        .allocated_runs()
        .map(|r| (r.start().to_u64(), r.end().to_u64()))
        .collect();
    for (g, h) in complement(lo, hi, &never) {
        let (mut at, mut left) = (g, h - g + 1);
        while left > 0 {
            let n = left.min(1 << 20);
            let start = I::try_from(at).ok().unwrap();
            other
                .allocate_ids_at(start, u32::try_from(n).unwrap())
                .unwrap();
            at = at.wrapping_add(n);
            left -= n;
        }
    }
    let mut free = complement(lo, hi, &allocated);
    free.retain(|&(g, h)| !never.iter().any(|&(n, m)| n <= g && h <= m));
    for &(g, h) in free.iter().rev() {
        // A free run may hold never-allocated IDs too: free only the handed-out parts.
        for (x, y) in complement(g, h, &never) {
            let (x, y) = (I::try_from(x).ok().unwrap(), I::try_from(y).ok().unwrap());
            other.free_ids(x..=y).unwrap();
        }
    }
    assert_eq!(&other, a);
    assert_eq!(format!("{other:?}"), format!("{a:?}"));
    assert_eq!(other.snapshot(), snapshot);
    let mut copies = [a.clone(), loaded, other];
    let mut main = a.clone();
    for op in rest {
        let want = apply_id(&mut main, op);
        for c in &mut copies {
            assert_eq!(apply_id(c, op), want, "{op:?}");
        }
    }
    for c in &copies {
        assert_eq!(c, &main);
    }
}

const STEPS: usize = if cfg!(miri) { 20 } else { 400 };

#[test]
fn whole_u32_range_matches_the_model() {
    for seed in 1..=4u64 {
        let ops = script::<u32>(seed * 0x9e37_79b9, 0, u64::from(u32::MAX), STEPS);
        run(0u32, u32::MAX, &ops, 97);
    }
}

#[test]
fn u32_range_above_zero_matches_the_model() {
    for seed in 7..=9u64 {
        let (first, last) = (5000u64, u64::from(u32::MAX) - 3);
        let ops = script::<u32>(seed * 0x9e37_79b9, first, last, STEPS);
        run(5000u32, u32::MAX - 3, &ops, 113);
    }
}

#[test]
fn u64_window_at_the_top_matches_the_model() {
    for seed in 11..=14u64 {
        let first = u64::MAX - u64::from(u32::MAX);
        let ops = script::<u64>(seed * 0x9e37_79b9, first, u64::MAX, STEPS);
        run(first, u64::MAX, &ops, 89);
    }
}

#[test]
fn whole_u16_range_matches_the_model() {
    for seed in 17..=19u64 {
        let ops = script::<u16>(seed * 0x9e37_79b9, 0, u64::from(u16::MAX), STEPS);
        run(0u16, u16::MAX, &ops, 101);
    }
}
