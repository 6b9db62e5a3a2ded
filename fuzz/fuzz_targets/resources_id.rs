//! Random operation sequences on an `IdAllocator` and its naive model: every answer, the set of
//! allocated IDs, the counts and the runs must agree after each step; nothing may panic. The
//! first byte picks the width: `u32` IDs from a 16-bit start, or `u64` IDs in a window that
//! ends at `u64::MAX`, where runs asked for at the top go past the end of the type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memvisor_fuzz::Input;
use memvisor_resources::Id;
use memvisor_resources::model::{IdOp, run_id_ops_with};

/// An ID width the target drives: conversions from and to `u64` (saturating into the type).
trait Width: Id + TryFrom<u64> + Into<u64> {
    const TOP: Self;

    fn saturate(v: u64) -> Self {
        Self::try_from(v).unwrap_or(Self::TOP)
    }
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

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let result = if input.u8().is_multiple_of(2) {
        let first = u64::from(input.u16());
        let last = (first + u64::from(input.u16() % 4096)).min(u64::from(u32::MAX));
        let ops = ops::<u32>(&mut input, first, last);
        run_id_ops_with(first as u32, last as u32, &ops)
    } else {
        let last = u64::MAX;
        let first = last - u64::from(input.u16() % 4096);
        let ops = ops::<u64>(&mut input, first, last);
        run_id_ops_with(first, last, &ops)
    };
    if let Err(mismatch) = result {
        panic!("IdAllocator differs from its model: {mismatch}");
    }
});
