//! Random operation sequences on an `IdAllocator` and its naive model: every answer, the set of
//! allocated IDs, the counts and the runs must agree after each step; nothing may panic. The
//! first byte picks the width and the kind of range: `u32` IDs from a 16-bit start, or `u64` IDs
//! in a window that ends at `u64::MAX`, where runs asked for at the top go past the end of the
//! type; each either small (up to 4096 IDs) or large (up to 2^32 IDs, or the whole `u16` range),
//! far past the 64 Ki IDs the bitmap always covers, with the IDs clustered at the bottom, around
//! that floor, at a few points above it and at the top, so that IDs are held as runs above the
//! bitmap, merged, split, stepped over and swallowed when it grows. The same operations are
//! then replayed on a fresh allocator, each held to the heap budget the crate's DESIGN.md
//! promises (see [`within_budget`]).
#![no_main]

use libfuzzer_sys::fuzz_target;
use memvisor_fuzz::Input;
use memvisor_resources::model::{IdAnswer, IdOp, apply_id, run_id_ops_with};
use memvisor_resources::{Id, IdAllocator};
use memvisor_testkit::counting_heap::{Counting, used_by};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// IDs the bitmap may always cover, and the bits it may cover per allocated ID beyond them
/// (DESIGN.md, "Memory").
const DENSE_FLOOR: u64 = 1 << 16;
const DENSE_BITS_PER_ID: u64 = 64;
/// Bytes per never-allocated run and per run held above the bitmap.
const RUN_BYTES: usize = 28;

/// The most a run set (never-allocated runs, or runs held above the bitmap) of at most `runs`
/// runs holds: 28 bytes a run, growing by an eighth, at least 16 runs at a time.
fn run_set_bound(runs: usize) -> usize {
    RUN_BYTES * (runs + (runs / 8).max(16))
}

/// The most the bitmap holds once at most `peak` IDs were allocated at once: it covers at most
/// the floor or 64 bits per such ID (and never more than the range), its leaves grow by an
/// eighth, and its summary (a word per 64 leaves) and top (a word per 64 summary words) by
/// doubling.
fn bitmap_bound(peak: u64, span: u64) -> usize {
    let covered = DENSE_FLOOR
        .max(peak.saturating_mul(DENSE_BITS_PER_ID))
        .min(span);
    let leaves = usize::try_from(covered / 64 + 1).unwrap();
    let leaves = leaves + leaves / 8 + 1;
    let summary = 2 * (leaves / 64 + 1);
    let top = 2 * (summary / 64 + 1);
    8 * (leaves + summary + top)
}

/// Replays `ops` on a fresh allocator over `first..=last`: each operation may ask the heap
/// only for the allocator's own growth (kept: the bitmap never shrinks, nor do the run sets'
/// capacities) and its answer's list of IDs, and what the allocator holds after each must stay
/// within DESIGN.md's memory bound (each operation splits at most one run).
fn within_budget<I: Width>(first: I, last: I, ops: &[IdOp<I>]) {
    let Ok(mut alloc) = IdAllocator::<I>::with_range(first, last) else {
        return;
    };
    let span = (last.into() - first.into()).saturating_add(1);
    let mut peak = 0;
    for (i, op) in ops.iter().enumerate() {
        let (answer, usage) = used_by(|| apply_id(&mut alloc, op));
        let list = match &answer {
            Ok(IdAnswer::Ids(ids)) => ids.capacity() * size_of::<I>(),
            _ => 0,
        };
        drop(answer);
        let held = alloc.heap_bytes();
        assert!(
            usage.bytes <= list + held,
            "{op:?} asked the heap for {} bytes in {} requests, where the allocator holds {held} \
             and the answer {list}",
            usage.bytes,
            usage.requests
        );
        peak = peak.max(alloc.used());
        let bound = bitmap_bound(peak, span) + 2 * run_set_bound(i + 2);
        assert!(
            held <= bound,
            "after {op:?}, {} IDs allocated at most, the allocator holds {held} bytes (bound \
             {bound})",
            peak
        );
    }
}

/// An ID width the target drives: conversions from and to `u64` (saturating into the type).
trait Width: Id + TryFrom<u64> + Into<u64> {
    const TOP: Self;

    fn saturate(v: u64) -> Self {
        Self::try_from(v).unwrap_or(Self::TOP)
    }
}

impl Width for u16 {
    const TOP: Self = u16::MAX;
}

impl Width for u32 {
    const TOP: Self = u32::MAX;
}

impl Width for u64 {
    const TOP: Self = u64::MAX;
}

/// Operations per input. Every step compares the whole state with the model (a walk over
/// every allocated ID), so a step costs up to the range's size; 128 steps of runs up to 255
/// IDs still fill the largest range.
const MAX_OPS: usize = 128;

/// A run length: mostly small, sometimes the largest count there is (a run that cannot fit,
/// or that runs past the end of the type).
fn count(input: &mut Input<'_>) -> u32 {
    match input.u8() % 16 {
        0 => u32::MAX,
        _ => u32::from(input.u8()),
    }
}

/// `MAX_OPS` operations over `first..=last`, with IDs from 50 below the range to 50 above
/// it (wrapping at the ends of the type).
fn ops<I: Width>(input: &mut Input<'_>, first: u64, last: u64) -> Vec<IdOp<I>> {
    let span = last - first + 1;
    let id = |input: &mut Input<'_>| {
        I::saturate(
            first
                .wrapping_add(input.u64() % (span + 100))
                .wrapping_sub(50),
        )
    };
    let mut ops = Vec::new();
    while !input.is_empty() && ops.len() < MAX_OPS {
        let op = match input.u8() % 8 {
            0 => IdOp::Allocate,
            1 => IdOp::AllocateAt(id(input)),
            2 => IdOp::AllocateRun {
                count: u32::from(input.u8()),
                alignment: 1 << (input.u8() % 12),
            },
            3 => IdOp::Free(id(input)),
            4 => {
                let a = id(input);
                let end = a.into().saturating_add(u64::from(input.u8()));
                IdOp::FreeRun {
                    first: a,
                    last: I::saturate(end),
                }
            }
            5 => IdOp::AllocateMany(u32::from(input.u8())),
            6 => IdOp::AllocateRunAt {
                first: id(input),
                count: count(input),
            },
            _ => IdOp::IsAllocated(id(input)),
        };
        ops.push(op);
    }
    ops
}

/// Operations per input on a large range; a step's check walks every allocated ID, so the
/// fill of the bitmap's floor (65,236 IDs, at most once) keeps each input to a few million.
const MAX_LARGE_OPS: usize = 64;

/// The bitmap's floor: it always covers this many IDs from the bottom.
const FLOOR: u64 = 1 << 16;

/// `MAX_LARGE_OPS` operations over the large range `first..=last`. IDs lie around a few
/// centers (a byte's distance either side): the bottom, the bitmap's floor, three points above
/// it picked by the input, the middle and the top, and now and then anywhere, or just outside
/// the range. Counts stay small, so the naive model's work stays bounded, except that runs at
/// the top may ask for any count (they end past the range or the type, and are refused), and
/// one step may fill the bottom up to just below the floor.
fn large_ops<I: Width>(input: &mut Input<'_>, first: u64, last: u64) -> Vec<IdOp<I>> {
    let span = last - first;
    let points = [
        0,
        FLOOR.min(span),
        input.below(span / 64 + 1) + FLOOR.min(span),
        input.below(span + 1),
        input.below(span + 1),
        span / 2,
        span,
    ];
    // The offset of a clustered ID, and the ID (saturating into the type and past the top).
    let id = |input: &mut Input<'_>| -> (u64, I) {
        let off = match input.u8() % 16 {
            0 => input.below(span + 1),
            k => {
                let c = points[usize::from(k) % points.len()];
                (c + u64::from(input.u8())).saturating_sub(128)
            }
        };
        let v = first
            .saturating_add(off)
            .min(last.saturating_add(u64::from(input.u8() % 2)));
        (off, I::saturate(v))
    };
    let mut filled = false;
    let mut ops = Vec::new();
    while !input.is_empty() && ops.len() < MAX_LARGE_OPS {
        let op = match input.u8() % 10 {
            0 => IdOp::Allocate,
            1 | 2 => IdOp::AllocateAt(id(input).1),
            3 => IdOp::AllocateRun {
                count: u32::from(input.u8() % 64) + 1,
                alignment: 1 << (input.u8() % 64),
            },
            4 => IdOp::Free(id(input).1),
            5 => {
                let (_, a) = id(input);
                let end = a.into().saturating_add(u64::from(input.u8()));
                IdOp::FreeRun {
                    first: a,
                    last: I::saturate(end),
                }
            }
            6 if !filled && input.u8() == 0 => {
                filled = true;
                IdOp::AllocateMany((FLOOR - 300).min(span / 2) as u32 + 1)
            }
            6 => IdOp::AllocateMany(u32::from(input.u8()) + 1),
            7 => {
                let (off, a) = id(input);
                // Any count only near the top, where the run cannot fit: the model would
                // otherwise take billions of IDs one at a time.
                let count = if off + 1024 > span && input.u8().is_multiple_of(4) {
                    u32::MAX - u32::from(input.u8())
                } else {
                    u32::from(input.u8() % 64) + 1
                };
                IdOp::AllocateRunAt { first: a, count }
            }
            8 => IdOp::AllocateRun {
                count: u32::from(input.u8() % 3) + 1,
                alignment: 1 << (16 + input.u8() % 48),
            },
            _ => IdOp::IsAllocated(id(input).1),
        };
        ops.push(op);
    }
    ops
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mode = input.u8();
    let result = if mode % 8 == 2 {
        // The whole `u32` range or one that starts or ends a little inside it.
        let first = u64::from(input.u16() % 256) * u64::from(input.u8() % 2);
        let last = u64::from(u32::MAX) - u64::from(input.u16()) * u64::from(input.u8() % 2);
        let ops = large_ops::<u32>(&mut input, first, last);
        within_budget(first as u32, last as u32, &ops);
        run_id_ops_with(first as u32, last as u32, &ops)
    } else if mode % 8 == 3 {
        // A window of up to 2^32 IDs that ends at `u64::MAX`.
        let first = u64::MAX - u64::from(u32::MAX) + u64::from(input.u16());
        let ops = large_ops::<u64>(&mut input, first, u64::MAX);
        within_budget(first, u64::MAX, &ops);
        run_id_ops_with(first, u64::MAX, &ops)
    } else if mode % 8 == 4 {
        // The whole `u16` range: no ID lies above the bitmap's floor.
        let ops = large_ops::<u16>(&mut input, 0, u64::from(u16::MAX));
        within_budget(0, u16::MAX, &ops);
        run_id_ops_with(0, u16::MAX, &ops)
    } else if mode.is_multiple_of(2) {
        let first = u64::from(input.u16());
        let last = (first + u64::from(input.u16() % 4096)).min(u64::from(u32::MAX));
        let ops = ops::<u32>(&mut input, first, last);
        within_budget(first as u32, last as u32, &ops);
        run_id_ops_with(first as u32, last as u32, &ops)
    } else {
        let last = u64::MAX;
        let first = last - u64::from(input.u16() % 4096);
        let ops = ops::<u64>(&mut input, first, last);
        within_budget(first, last, &ops);
        run_id_ops_with(first, last, &ops)
    };
    if let Err(mismatch) = result {
        panic!("IdAllocator differs from its model: {mismatch}");
    }
});
