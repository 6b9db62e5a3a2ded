//! Random operation sequences on an `IdAllocator` and its naive model: every answer, the set of
//! allocated IDs, the counts and the runs must agree after each step; nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memvisor_fuzz::Input;
use memvisor_resources::model::{IdOp, run_id_ops};

/// Operations per input. Every step compares the whole state with the model (a walk over
/// every allocated ID), so a step costs up to the range's size; 128 steps of runs up to 255
/// IDs still fill the largest range.
const MAX_OPS: usize = 128;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let first = u32::from(input.u16());
    let last = first.saturating_add(u32::from(input.u16() % 4096));
    let id = |input: &mut Input<'_>| first.wrapping_add(input.u32() % 4200).wrapping_sub(50);
    let mut ops = Vec::new();
    while !input.is_empty() && ops.len() < MAX_OPS {
        let op = match input.u8() % 6 {
            0 => IdOp::Allocate,
            1 => IdOp::AllocateAt(id(&mut input)),
            2 => IdOp::AllocateRun {
                count: u32::from(input.u8()),
                alignment: 1 << (input.u8() % 12),
            },
            3 => IdOp::Free(id(&mut input)),
            4 => {
                let a = id(&mut input);
                IdOp::FreeRun {
                    first: a,
                    last: a.saturating_add(u32::from(input.u8())),
                }
            }
            _ => IdOp::IsAllocated(id(&mut input)),
        };
        ops.push(op);
    }
    if let Err(mismatch) = run_id_ops(first, last, &ops) {
        panic!("IdAllocator differs from its model: {mismatch}");
    }
});
