//! Differential test: memvisor and vm-allocator 0.1.4 run the same random page-sized
//! workloads, away from the edges of the 64-bit space where vm-allocator has known defects, and
//! must give the same answer every time.
//!
//! Exact requests that overlap a live allocation are not sent to vm-allocator: it may split an
//! allocated node there instead of refusing (memvisor's own answer, an overlap error, is checked
//! by the model test).

use memvisor_resources::{AddressAllocator, AddressRange, AllocPolicy, Error};
use proptest::prelude::*;
use vm_allocator::{AddressAllocator as VmAddr, AllocPolicy as VmPolicy};

const CASES: u32 = if cfg!(miri) { 8 } else { 1_000 };

/// `CASES` cases; under Miri, which cannot read the working directory, no failure files.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(CASES);
    if cfg!(miri) {
        config.failure_persistence = None;
    }
    config
}
const PAGE: u64 = 0x1000;
const BASE: u64 = 0x1_0000_0000;
const PAGES: u64 = 1024;

#[derive(Clone, Copy, Debug)]
enum Op {
    /// Size in pages, alignment as a power of two in pages, policy.
    Alloc(u64, u32, u8, u64),
    /// Free the live allocation at this index (modulo their number).
    Free(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u64..=16, 0u32..4, 0u8..3, 0u64..PAGES + 8)
            .prop_map(|(size, align, kind, at)| Op::Alloc(size, align, kind, at)),
        2 => any::<usize>().prop_map(Op::Free),
    ]
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut ours = AddressAllocator::<()>::with_base_and_size(BASE, PAGES * PAGE).unwrap();
    let mut vm = VmAddr::new(BASE, PAGES * PAGE).unwrap();
    let mut live: Vec<AddressRange> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Alloc(pages, align, kind, at) => {
                let (size, align) = (pages * PAGE, PAGE << align);
                let (policy, vm_policy) = match kind {
                    0 => (AllocPolicy::FirstMatch, VmPolicy::FirstMatch),
                    1 => (AllocPolicy::LastMatch, VmPolicy::LastMatch),
                    _ => {
                        let addr = (BASE + at * PAGE) & !(align - 1);
                        (AllocPolicy::ExactMatch(addr), VmPolicy::ExactMatch(addr))
                    }
                };
                let got = ours.allocate(size, align, policy);
                if matches!(got, Err(Error::Overlap { .. })) {
                    continue;
                }
                let want = vm.allocate(size, align, vm_policy);
                match (&got, &want) {
                    (Ok(g), Ok(w)) => {
                        prop_assert_eq!(
                            (g.start(), g.end()),
                            (w.start(), w.end()),
                            "step {} {:?}",
                            step,
                            op
                        );
                        live.push(*g);
                    }
                    (Err(_), Err(_)) => {}
                    _ => prop_assert!(
                        false,
                        "step {} {:?}: ours {:?}, vm-allocator {:?}",
                        step,
                        op,
                        got,
                        want
                    ),
                }
            }
            Op::Free(n) => {
                if live.is_empty() {
                    continue;
                }
                let r = live.swap_remove(n % live.len());
                prop_assert!(ours.free(&r).is_ok());
                let key = vm_allocator::RangeInclusive::new(r.start(), r.end()).unwrap();
                prop_assert!(
                    vm.free(&key).is_ok(),
                    "step {}: vm-allocator refused {:?}",
                    step,
                    r
                );
            }
        }
    }
    ours.check_invariants()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn placement_matches_vm_allocator(ops in prop::collection::vec(op(), 0..150)) {
        run(&ops)?;
    }
}

#[test]
fn placement_matches_vm_allocator_on_a_fragmented_fill() {
    let mut ops: Vec<Op> = (0..200)
        .map(|i| Op::Alloc(1 + i % 5, (i % 3) as u32, (i % 2) as u8, 0))
        .collect();
    ops.extend((0..60).map(|i| Op::Free(i * 7)));
    ops.extend((0..100).map(|i| Op::Alloc(1 + i % 3, (i % 4) as u32, (i % 2) as u8, 0)));
    run(&ops).unwrap();
}
