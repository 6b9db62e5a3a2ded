//! Model-based differential test against vm-allocator 0.1.4 in small spaces, where
//! fragmentation decides: random sequences of placements (every policy, sizes of 1 to 24
//! units, alignments of 1 to 64) and frees on spaces of 1 to 96 units, near 0, at 2^40 and
//! ending at `u64::MAX`.
//!
//! After every call memvisor's answer must be the one a naive model finds by trying every
//! address, and it must never refuse what vm-allocator places. Where vm-allocator places a
//! range elsewhere (it misplaces some requests), its range must be free and aligned in the
//! state both share; memvisor then takes that range instead of its own, so the two stay in
//! step and the rest of the sequence is compared too. After every step the state vm-allocator
//! saves (its `serde` form, imported) holds exactly memvisor's allocations: neither ever holds a
//! range the other would call overlapping.
//!
//! The same for `IdAllocator` on small ID ranges (at 0, in the middle and at `u32::MAX`).

use memvisor_resources::{
    AddressAllocator, AddressRange, AllocPolicy, Error, IdAllocator, IdLoadLimits,
    VmAddressAllocatorSnapshot, VmIdAllocatorSnapshot,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use vm_allocator::{
    AddressAllocator as VmAddr, AllocPolicy as VmPolicy, Error as VmError, IdAllocator as VmIds,
    RangeInclusive as VmRange,
};

const CASES: u32 = if cfg!(miri) { 4 } else { 96 };

/// `CASES` cases; under Miri, which cannot read the working directory, no failure files.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(CASES);
    if cfg!(miri) {
        config.failure_persistence = None;
    }
    config
}

/// One call on both address allocators.
#[derive(Clone, Copy, Debug)]
enum AddrOp {
    /// `size` units aligned to `1 << align_log2`; policy 0 first fit, 1 last fit, else exact at
    /// `at` units from the base, rounded down to the alignment.
    Alloc {
        size: u64,
        align_log2: u32,
        policy: u8,
        at: u64,
    },
    /// Free the live allocation at this index (modulo their number).
    Free(usize),
}

fn addr_op() -> impl Strategy<Value = AddrOp> {
    prop_oneof![
        3 => (1u64..=24, 0u32..=6, 0u8..3, 0u64..100).prop_map(|(size, align_log2, policy, at)| {
            AddrOp::Alloc { size, align_log2, policy, at }
        }),
        2 => any::<usize>().prop_map(AddrOp::Free),
    ]
}

/// A space of 1 to 96 units: near 0 (a range starting at 1 ends the comparison when freed:
/// vm-allocator 0.1.4 loses it, `tests/vm_allocator_bugs.rs`), off page boundaries, at 2^40, or
/// ending at `u64::MAX` (where vm-allocator refuses more, and loses a freed range ending at
/// `u64::MAX - 1`).
fn space() -> impl Strategy<Value = (u64, u64)> {
    let base = prop_oneof![
        Just(0u64),
        Just(2),
        Just(0x1000),
        Just(0x1_0000_0003),
        Just(1 << 40)
    ];
    prop_oneof![
        4 => (base, 1u64..=96),
        1 => (1u64..=96).prop_map(|size| (u64::MAX - size + 1, size)),
    ]
}

/// Lowest (or highest) start in `free` for `size` units aligned to `align`, found by trying
/// every address.
fn brute_fit(free: &[AddressRange], size: u64, align: u64, last: bool) -> Option<u64> {
    let mut fits = free.iter().flat_map(|f| {
        (f.start()..=f.end()).filter(move |&a| a % align == 0 && f.end() - a >= size - 1)
    });
    if last { fits.last() } else { fits.next() }
}

fn is_free(free: &[AddressRange], range: &AddressRange) -> bool {
    free.iter().any(|f| f.contains_range(range))
}

/// vm-allocator's allocations, read from the state it saves.
fn vm_allocations(vm: &VmAddr) -> Vec<AddressRange> {
    let text = serde_json::to_string(vm).unwrap();
    let saved: VmAddressAllocatorSnapshot = serde_json::from_str(&text).unwrap();
    let imported = AddressAllocator::<()>::from_vm_allocator_snapshot(&saved).unwrap();
    imported.allocated().map(|a| a.range).collect()
}

/// What the run saw, for the checks that the workload reaches vm-allocator's misplacements.
#[derive(Default)]
struct Seen {
    misplaced: usize,
    refused_by_vm_only: usize,
}

fn run_addr(base: u64, size: u64, ops: &[AddrOp], seen: &mut Seen) -> Result<(), TestCaseError> {
    let mut ours = AddressAllocator::<()>::with_base_and_size(base, size).unwrap();
    let mut vm = VmAddr::new(base, size).unwrap();
    let mut live: Vec<AddressRange> = Vec::new();
    for (i, &op) in ops.iter().enumerate() {
        let free: Vec<AddressRange> = ours.free_ranges().collect();
        match op {
            AddrOp::Alloc {
                size: units,
                align_log2,
                policy,
                at,
            } => {
                let align = 1u64 << align_log2;
                let (policy, vm_policy) = match policy {
                    0 => (AllocPolicy::FirstMatch, VmPolicy::FirstMatch),
                    1 => (AllocPolicy::LastMatch, VmPolicy::LastMatch),
                    _ => {
                        let addr = base.saturating_add(at) & !(align - 1);
                        (AllocPolicy::ExactMatch(addr), VmPolicy::ExactMatch(addr))
                    }
                };
                let want = match policy {
                    AllocPolicy::FirstMatch => brute_fit(&free, units, align, false),
                    AllocPolicy::LastMatch => brute_fit(&free, units, align, true),
                    AllocPolicy::ExactMatch(addr) => AddressRange::from_start_and_size(addr, units)
                        .ok()
                        .filter(|r| is_free(&free, r))
                        .map(|r| r.start()),
                };
                let before = format!("{ours:?}");
                let got = ours.allocate(units, align, policy);
                prop_assert_eq!(
                    got.map(|g| g.start()).ok(),
                    want,
                    "step {}: {:?}: memvisor {:?}",
                    i,
                    op,
                    got
                );
                match got {
                    Err(Error::OutOfSpace { .. } | Error::Overlap { .. }) => {
                        prop_assert_eq!(&format!("{ours:?}"), &before, "step {}: changed", i);
                    }
                    Err(Error::OutsideSpace { .. } | Error::Overflow { .. }) => {
                        prop_assert!(matches!(policy, AllocPolicy::ExactMatch(_)));
                    }
                    Err(e) => prop_assert!(false, "step {}: {:?}: unexpected {}", i, op, e),
                    Ok(_) => {}
                }
                if matches!(policy, AllocPolicy::ExactMatch(_)) && want.is_none() {
                    // vm-allocator may split a live allocation here (an exact request over
                    // it): not sent. memvisor's refusal was checked against the model.
                    continue;
                }
                let theirs = vm
                    .allocate(units, align, vm_policy)
                    .ok()
                    .map(|t| AddressRange::new(t.start(), t.end()).unwrap());
                match (got, theirs) {
                    (Ok(g), Some(t)) if g == t => live.push(g),
                    (Ok(g), Some(t)) => {
                        // vm-allocator placed it elsewhere: a range both states call free and
                        // aligned, or vm-allocator overlapped something.
                        prop_assert!(
                            is_free(&free, &t) && t.start() % align == 0,
                            "step {i}: {op:?}: vm-allocator placed {t} over a live range"
                        );
                        prop_assert_eq!(t.size(), Some(units));
                        seen.misplaced += 1;
                        ours.free(&g).unwrap();
                        ours.reserve(t).unwrap();
                        live.push(t);
                    }
                    (Err(e), Some(t)) => {
                        prop_assert!(
                            false,
                            "step {i}: {op:?}: vm-allocator placed {t}, memvisor refused: {e}"
                        )
                    }
                    (Ok(g), None) => {
                        seen.refused_by_vm_only += 1;
                        ours.free(&g).unwrap();
                    }
                    (Err(_), None) => {}
                }
            }
            AddrOp::Free(n) => {
                if live.is_empty() {
                    continue;
                }
                let r = live.swap_remove(n % live.len());
                prop_assert!(ours.free(&r).is_ok());
                let key = VmRange::new(r.start(), r.end()).unwrap();
                if vm.free(&key).is_err() {
                    // vm-allocator 0.1.4 removes a range starting at 1 or ending at
                    // `u64::MAX - 1` and then fails (`tests/vm_allocator_bugs.rs`): the states
                    // part here.
                    prop_assert!(
                        r.start() == 1 || r.end() == u64::MAX - 1,
                        "step {i}: vm-allocator refused {r}"
                    );
                    return Ok(());
                }
            }
        }
        ours.check_invariants()
            .map_err(|e| TestCaseError::fail(format!("step {i}: {e}")))?;
        let mine: Vec<AddressRange> = ours.allocated().map(|a| a.range).collect();
        let mut listed = live.clone();
        listed.sort_unstable();
        prop_assert_eq!(&mine, &listed, "step {}: memvisor's allocations", i);
        prop_assert_eq!(
            vm_allocations(&vm),
            mine,
            "step {}: vm-allocator's allocations",
            i
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn small_spaces_answer_as_the_model_and_never_refuse_what_vm_allocator_places(
        (base, size) in space(),
        ops in prop::collection::vec(addr_op(), 0..80),
    ) {
        run_addr(base, size, &ops, &mut Seen::default())?;
    }

    #[test]
    fn small_id_ranges_answer_as_vm_allocator(
        (first, last) in prop_oneof![
            (0u32..4, 0u32..40).prop_map(|(f, n)| (f, f + n)),
            (0u32..40).prop_map(|n| (1 << 20, (1 << 20) + n)),
            (0u32..40).prop_map(|n| (u32::MAX - n, u32::MAX)),
        ],
        ops in prop::collection::vec((0u8..3, 0u32..44), 0..120),
    ) {
        run_ids(first, last, &ops)?;
    }
}

/// The workload does reach vm-allocator's misplacements and refusals, so the test above checks
/// something where the two differ.
#[test]
fn the_small_space_workload_reaches_vm_allocator_misplacements() {
    let mut seen = Seen::default();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (space(), prop::collection::vec(addr_op(), 0..80));
    for _ in 0..if cfg!(miri) { 2 } else { 60 } {
        let ((base, size), ops) = strategy.new_tree(&mut runner).unwrap().current();
        run_addr(base, size, &ops, &mut seen).unwrap();
    }
    assert!(cfg!(miri) || (seen.misplaced > 0 && seen.refused_by_vm_only > 0));
}

/// One allocate (op 0), free (1) or `is_allocated` (2) on both ID allocators, IDs from one
/// below the range to one past it; after each, the state vm-allocator saves imports to one
/// equal to memvisor's.
fn run_ids(first: u32, last: u32, ops: &[(u8, u32)]) -> Result<(), TestCaseError> {
    let mut ours = IdAllocator::new(first, last).unwrap();
    let mut vm = VmIds::new(first, last).unwrap();
    for (i, &(kind, k)) in ops.iter().enumerate() {
        let id = first.wrapping_add(k % (last - first + 3)).wrapping_sub(1);
        let id64 = u64::from(id);
        match kind {
            0 => match (ours.allocate_id(), vm.allocate_id()) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "step {}", i),
                (Err(Error::OutOfIds { .. }), Err(_)) => {}
                (a, b) => prop_assert!(false, "step {i}: allocate: {a:?}, vm-allocator {b:?}"),
            },
            1 => match (ours.free_id(id), vm.free_id(id)) {
                (Ok(()), Ok(b)) => prop_assert_eq!(b, id),
                (Err(Error::IdOutOfRange { id: a, .. }), Err(VmError::OutOfRange(b)))
                | (Err(Error::IdNeverAllocated(a)), Err(VmError::NeverAllocated(b)))
                | (Err(Error::IdAlreadyFree(a)), Err(VmError::AlreadyReleased(b))) => {
                    prop_assert_eq!((a, u64::from(b)), (id64, id64));
                }
                (a, b) => prop_assert!(false, "step {i}: free {id}: {a:?}, vm-allocator {b:?}"),
            },
            _ => prop_assert_eq!(ours.is_allocated(id), vm.is_allocated(id), "step {}", i),
        }
        let text = serde_json::to_string(&vm).unwrap();
        let saved: VmIdAllocatorSnapshot = serde_json::from_str(&text).unwrap();
        let imported =
            IdAllocator::from_vm_allocator_snapshot(&saved, &IdLoadLimits::default()).unwrap();
        prop_assert_eq!(
            imported.iter().collect::<Vec<_>>(),
            ours.iter().collect::<Vec<_>>(),
            "step {}: vm-allocator's IDs",
            i
        );
    }
    Ok(())
}
