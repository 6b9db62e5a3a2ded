//! Differential test: memvisor and vm-allocator 0.1.4 run the same random page-sized
//! workloads, away from the edges of the 64-bit space where vm-allocator has known defects, and
//! must give the same answer every time.
//!
//! Exact requests that overlap a live allocation are not sent to vm-allocator: it may split an
//! allocated node there instead of refusing (memvisor's own answer, an overlap error, is checked
//! by the model test).

mod common;

use common::page_workload::{Op, allocators, op, step};
use memvisor_resources::{AddressAllocator, AddressRange, AllocPolicy, Error, IdAllocator};
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
fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let (mut ours, mut vm) = allocators();
    let mut live: Vec<AddressRange> = Vec::new();
    for (i, &op) in ops.iter().enumerate() {
        step(&mut ours, &mut vm, &mut live, op)
            .map_err(|e| TestCaseError::fail(format!("step {i}: {e}")))?;
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

/// Lowest (or highest) start in `free` for `size` units aligned to `align`, found by trying
/// every address.
fn brute_fit(free: &[AddressRange], size: u64, align: u64, last: bool) -> Option<u64> {
    let mut fits = free.iter().flat_map(|f| {
        (f.start()..=f.end()).filter(move |&a| a % align == 0 && f.end() - a >= size - 1)
    });
    if last { fits.last() } else { fits.next() }
}

/// Unit-sized workloads (sizes of 1 to 40 units, alignments of 1 to 64) on small spaces:
/// vm-allocator 0.1.4 places some of these elsewhere than the lowest (highest) fit, or refuses
/// them. Wherever the two differ, memvisor's answer is the one found by trying every address,
/// and memvisor never refuses what vm-allocator places.
#[test]
fn unit_placement_differs_from_vm_allocator_only_where_it_misplaces() {
    let mut seed = 0x1234_5678_9abc_u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let cases = if cfg!(miri) { 5 } else { 300 };
    let mut differ = 0;
    for _ in 0..cases {
        let (base, size) = (0x1000, 1 + rand(300));
        let mut ours = AddressAllocator::<()>::with_base_and_size(base, size).unwrap();
        let mut vm = VmAddr::new(base, size).unwrap();
        let mut live: Vec<AddressRange> = Vec::new();
        for _ in 0..60 {
            if rand(3) == 0 && !live.is_empty() {
                let r = live.swap_remove(usize::try_from(rand(live.len() as u64)).unwrap());
                ours.free(&r).unwrap();
                let key = vm_allocator::RangeInclusive::new(r.start(), r.end()).unwrap();
                vm.free(&key).unwrap();
                continue;
            }
            let (units, align) = (1 + rand(40), 1 << rand(7));
            let (policy, vm_policy) = match rand(3) {
                0 => (AllocPolicy::FirstMatch, VmPolicy::FirstMatch),
                1 => (AllocPolicy::LastMatch, VmPolicy::LastMatch),
                _ => {
                    let addr = (base + rand(size + 10)) & !(align - 1);
                    (AllocPolicy::ExactMatch(addr), VmPolicy::ExactMatch(addr))
                }
            };
            let free: Vec<AddressRange> = ours.free_ranges().collect();
            let want = match policy {
                AllocPolicy::FirstMatch => brute_fit(&free, units, align, false),
                AllocPolicy::LastMatch => brute_fit(&free, units, align, true),
                AllocPolicy::ExactMatch(addr) => AddressRange::from_start_and_size(addr, units)
                    .ok()
                    .filter(|r| free.iter().any(|f| f.contains_range(r)))
                    .map(|r| r.start()),
            };
            let got = ours.allocate(units, align, policy);
            assert_eq!(
                got.map(|g| g.start()).ok(),
                want,
                "{units} units, {align}, {policy:?}"
            );
            if let AllocPolicy::ExactMatch(_) = policy
                && want.is_none()
            {
                // vm-allocator may split a live allocation here: not sent.
                continue;
            }
            let theirs = vm.allocate(units, align, vm_policy).ok();
            match (got, theirs) {
                (Ok(g), Some(t)) if (g.start(), g.end()) == (t.start(), t.end()) => {}
                (Ok(_), _) => {
                    // The two states part here (vm-allocator cannot always be put in step: it
                    // refuses some exact placements in free space too); next case.
                    differ += 1;
                    break;
                }
                (Err(e), Some(t)) => panic!("vm-allocator placed {t:?}, memvisor refused: {e}"),
                (Err(_), None) => {}
            }
            if let Ok(g) = got {
                live.push(g);
            }
        }
        ours.check_invariants().unwrap();
    }
    // The workload does reach vm-allocator's misplacements.
    assert!(cfg!(miri) || differ > 0);
}

/// `IdAllocator` against vm-allocator's: the same IDs handed out (smallest free first), the same
/// frees accepted, each refusal of the same kind for the same ID, and the same answer from
/// `is_allocated`, on ranges at 0, at `u32::MAX` and of a single ID.
#[test]
fn id_allocator_matches_vm_allocator() {
    use vm_allocator::Error as VmError;

    let mut seed = 0xdead_beef_u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let ranges = [
        (0u32, 0u32),
        (0, 5),
        (7, 70),
        (u32::MAX - 5, u32::MAX),
        (u32::MAX, u32::MAX),
    ];
    let runs = if cfg!(miri) { 2 } else { 60 };
    for (lo, hi) in ranges {
        for _ in 0..runs {
            let mut ours = IdAllocator::new(lo, hi).unwrap();
            let mut vm = vm_allocator::IdAllocator::new(lo, hi).unwrap();
            for _ in 0..80 {
                if rand(3) == 0 {
                    match (ours.allocate_id(), vm.allocate_id()) {
                        (Ok(a), Ok(b)) => assert_eq!(a, b),
                        (Err(Error::OutOfIds { .. }), Err(_)) => {}
                        (a, b) => panic!("allocate in {lo}..={hi}: {a:?}, vm-allocator {b:?}"),
                    }
                } else {
                    // IDs from one below the range to one above it (wrapping at the edges).
                    let id = lo
                        .wrapping_add(u32::try_from(rand(u64::from(hi - lo) + 3)).unwrap())
                        .wrapping_sub(1);
                    let id64 = u64::from(id);
                    match (ours.free_id(id), vm.free_id(id)) {
                        (Ok(()), Ok(b)) => assert_eq!(b, id),
                        (Err(Error::IdOutOfRange { id: a, .. }), Err(VmError::OutOfRange(b)))
                        | (Err(Error::IdNeverAllocated(a)), Err(VmError::NeverAllocated(b)))
                        | (Err(Error::IdAlreadyFree(a)), Err(VmError::AlreadyReleased(b))) => {
                            assert_eq!((a, u64::from(b)), (id64, id64));
                        }
                        (a, b) => panic!("free {id} in {lo}..={hi}: {a:?}, vm-allocator {b:?}"),
                    }
                }
                for id in [
                    lo,
                    hi,
                    lo.wrapping_sub(1),
                    hi.wrapping_add(1),
                    lo / 2 + hi / 2,
                ] {
                    assert_eq!(ours.is_allocated(id), vm.is_allocated(id), "{id}");
                }
            }
        }
    }
}
