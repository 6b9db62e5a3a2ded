//! Random operation sequences on an `AddressAllocator` and its naive model (a sorted list of
//! ranges with brute-force first and last fit): every answer and the whole state must agree
//! after each step; nothing may panic. The managed space sometimes ends at `u64::MAX`, where
//! arithmetic that wraps would show. The same operations are then replayed on a fresh
//! allocator, each held to the heap budget the crate's DESIGN.md promises (see
//! [`op_budget`]).
#![no_main]

use libfuzzer_sys::fuzz_target;
use memvisor_fuzz::Input;
use memvisor_resources::model::{AddrOp, apply_addr, run_addr_ops};
use memvisor_resources::{AddressAllocator, AddressRange, AllocPolicy};
use memvisor_testkit::counting_heap::{Counting, used_by};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes of the index per range (DESIGN.md: "28 bytes per live range").
const NODE_BYTES: usize = 28;

/// The most an operation on an allocator of `ranges` ranges may ask of the heap: an
/// allocation or a reservation makes room for one more range first, growing the index and the
/// tags by an eighth, at least 16 entries (a reallocation asks for the whole new size); every
/// other operation (a free, a release, a relocation, a lookup) asks for nothing.
fn op_budget(op: &AddrOp, ranges: usize) -> usize {
    match op {
        AddrOp::Allocate { .. } | AddrOp::Reserve { .. } => {
            (NODE_BYTES + size_of::<u32>()) * (ranges + (ranges / 8).max(16))
        }
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let len = 1 + input.below(1 << 16);
    let start = match input.u8() % 4 {
        0 => u64::MAX - (len - 1),
        1 => 0,
        _ => input.u64() >> 1,
    };
    let Ok(space) = AddressRange::from_start_and_size(start, len) else {
        return;
    };
    let at = |input: &mut Input<'_>| start.wrapping_add(input.below(len + 64)).wrapping_sub(32);
    let mut ops = Vec::new();
    while !input.is_empty() && ops.len() < 256 {
        let policy = |input: &mut Input<'_>| match input.u8() % 3 {
            0 => AllocPolicy::FirstMatch,
            1 => AllocPolicy::LastMatch,
            _ => AllocPolicy::ExactMatch(at(input)),
        };
        let op = match input.u8() % 7 {
            0 => AddrOp::Allocate {
                size: input.size(),
                alignment: 1 << (input.u8() % 70).min(63),
                policy: policy(&mut input),
                window: input
                    .u8()
                    .is_multiple_of(4)
                    .then(|| (at(&mut input), at(&mut input))),
                tag: u32::from(input.u8()),
            },
            1 => {
                let first = at(&mut input);
                AddrOp::Reserve {
                    start: first,
                    end: first.saturating_add(input.size() % 4096),
                    tag: u32::from(input.u8()),
                }
            }
            2 => AddrOp::FreeNth(usize::from(input.u8())),
            3 => {
                let first = at(&mut input);
                AddrOp::FreeRange {
                    start: first,
                    end: first.saturating_add(u64::from(input.u16())),
                }
            }
            4 => AddrOp::Release(at(&mut input)),
            5 => AddrOp::RelocateNth {
                index: usize::from(input.u8()),
                size: input.size(),
                alignment: 1 << (input.u8() % 16),
                policy: policy(&mut input),
            },
            _ => AddrOp::Lookup(at(&mut input)),
        };
        ops.push(op);
    }
    if let Err(mismatch) = run_addr_ops(space, &ops) {
        panic!("AddressAllocator differs from its model: {mismatch}");
    }
    let mut alloc = AddressAllocator::<u32>::new(space);
    for op in &ops {
        let ranges = alloc.len();
        let (_, usage) = used_by(|| apply_addr(&mut alloc, op));
        let budget = op_budget(op, ranges);
        assert!(
            usage.bytes <= budget,
            "{op:?} on {ranges} ranges asked the heap for {} bytes in {} requests (budget \
             {budget})",
            usage.bytes,
            usage.requests
        );
    }
});
