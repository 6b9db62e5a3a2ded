//! A loaded snapshot behaves as the allocator it was saved from: a script is cut at a random
//! step, the allocator saved and loaded (JSON), and the rest of the script runs on both, every
//! answer and the state after each step compared.
#![cfg(feature = "serde")]

use memvisor_resources::model::{AddrOp, IdOp, apply_addr, apply_id};
use memvisor_resources::{AddressAllocator, AddressRange, AllocPolicy, IdAllocator};
use proptest::prelude::*;

const CASES: u32 = if cfg!(miri) { 8 } else { 128 };

/// `CASES` cases; under Miri, which cannot read the working directory, no failure files.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(CASES);
    if cfg!(miri) {
        config.failure_persistence = None;
    }
    config
}

fn reload<T>(a: &T) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let text = serde_json::to_string(a).expect("an allocator saves");
    serde_json::from_str(&text).expect("a saved allocator loads")
}

/// ID ranges: small, across a summary word (4096 IDs), across a top word (2^18 IDs) and at
/// the top of `u32`.
fn id_range() -> impl Strategy<Value = (u32, u32)> {
    prop_oneof![
        Just((0, 199)),
        Just((3, 4300)),
        Just((0, (1 << 18) + 300)),
        Just((u32::MAX - 199, u32::MAX)),
        Just((0, u32::MAX)),
    ]
}

/// An ID near the bottom, near a word boundary (64, 4096, 2^18) or near the top of the range
/// when the range is small.
fn id(first: u32, last: u32) -> impl Strategy<Value = u32> {
    let near = move |base: u32| {
        (0u32..140).prop_map(move |o| base.saturating_add(o).saturating_sub(70).clamp(first, last))
    };
    let top = if last - first < 10_000 {
        last - 100
    } else {
        first
    };
    prop_oneof![
        near(first.saturating_add(70)),
        near(first.saturating_add(4096)),
        near(first.saturating_add(1 << 18)),
        near(top),
    ]
}

fn id_op(first: u32, last: u32) -> impl Strategy<Value = IdOp> {
    prop_oneof![
        6 => Just(IdOp::Allocate),
        3 => id(first, last).prop_map(IdOp::AllocateAt),
        2 => (1u32..80, (0u32..8).prop_map(|k| 1u64 << k))
            .prop_map(|(count, alignment)| IdOp::AllocateRun { count, alignment }),
        1 => (1u32..40).prop_map(IdOp::AllocateMany),
        2 => (id(first, last), 1u32..100).prop_map(|(first, count)| IdOp::AllocateRunAt { first, count }),
        6 => id(first, last).prop_map(IdOp::Free),
        1 => (id(first, last), 0u32..100)
            .prop_map(move |(a, len)| IdOp::FreeRun { first: a, last: a.saturating_add(len).min(last) }),
        1 => id(first, last).prop_map(IdOp::IsAllocated),
    ]
}

fn id_script() -> impl Strategy<Value = (u32, u32, Vec<IdOp>, usize)> {
    id_range().prop_flat_map(|(first, last)| {
        (
            Just(first),
            Just(last),
            prop::collection::vec(id_op(first, last), 0..60),
            0usize..60,
        )
    })
}

/// Spaces touching 0 and `u64::MAX`, and the whole space.
fn space() -> impl Strategy<Value = AddressRange> {
    prop_oneof![
        Just(AddressRange::new(0, 0xfff).unwrap()),
        Just(AddressRange::new(u64::MAX - 0xfff, u64::MAX).unwrap()),
        Just(AddressRange::FULL),
    ]
}

fn addr(space: AddressRange) -> impl Strategy<Value = u64> {
    let (lo, hi) = (space.start(), space.end());
    prop_oneof![
        (0u64..0x1100).prop_map(move |o| lo.saturating_add(o)),
        (0u64..0x1100).prop_map(move |o| hi.saturating_sub(o)),
    ]
}

fn policy(space: AddressRange) -> impl Strategy<Value = AllocPolicy> {
    prop_oneof![
        Just(AllocPolicy::FirstMatch),
        Just(AllocPolicy::LastMatch),
        addr(space).prop_map(|a| AllocPolicy::ExactMatch(a & !0xf)),
    ]
}

fn addr_op(space: AddressRange) -> impl Strategy<Value = AddrOp> {
    let size = prop_oneof![1u64..=0x40, 0x40u64..=0x300];
    let alignment = (0u32..8).prop_map(|k| 1u64 << k);
    prop_oneof![
        8 => (size.clone(), alignment.clone(), policy(space), 0u32..4).prop_map(|(size, alignment, policy, tag)| {
            let policy = match policy {
                AllocPolicy::ExactMatch(a) => AllocPolicy::ExactMatch(a & !(alignment - 1)),
                p => p,
            };
            AddrOp::Allocate { size, alignment, policy, window: None, tag }
        }),
        2 => (addr(space), 0u64..0x40, 0u32..4)
            .prop_map(|(start, len, tag)| AddrOp::Reserve { start, end: start.saturating_add(len), tag }),
        4 => any::<usize>().prop_map(AddrOp::FreeNth),
        1 => addr(space).prop_map(AddrOp::Release),
        2 => (any::<usize>(), size, alignment, policy(space))
            .prop_map(|(index, size, alignment, policy)| {
                let policy = match policy {
                    AllocPolicy::ExactMatch(a) => AllocPolicy::ExactMatch(a & !(alignment - 1)),
                    p => p,
                };
                AddrOp::RelocateNth { index, size, alignment, policy }
            }),
        1 => addr(space).prop_map(AddrOp::Lookup),
        1 => (addr(space), addr(space))
            .prop_map(|(a, b)| AddrOp::Resize { start: a.min(b), end: a.max(b) }),
    ]
}

fn addr_script() -> impl Strategy<Value = (AddressRange, Vec<AddrOp>, usize)> {
    space().prop_flat_map(|s| {
        (
            Just(s),
            prop::collection::vec(addr_op(s), 0..60),
            0usize..60,
        )
    })
}

fn addr_state(a: &AddressAllocator<u32>) -> (AddressRange, Vec<(AddressRange, u32)>, u128) {
    (
        a.space(),
        a.allocated().map(|x| (x.range, *x.tag)).collect(),
        a.used(),
    )
}

proptest! {
    #![proptest_config(config())]

    // Pure bookkeeping with no `unsafe` below it, and minutes under Miri.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn id_snapshot_loaded_mid_script_answers_as_the_original(
        (first, last, ops, cut) in id_script(),
    ) {
        let mut original = IdAllocator::new(first, last).unwrap();
        let cut = cut.min(ops.len());
        for op in &ops[..cut] {
            let _ = apply_id(&mut original, op);
        }
        let mut loaded = reload(&original);
        prop_assert_eq!(&loaded, &original);
        for (step, op) in ops[cut..].iter().enumerate() {
            let want = apply_id(&mut original, op);
            let got = apply_id(&mut loaded, op);
            prop_assert_eq!(&got, &want, "step {} after the cut: {:?}", step, op);
            prop_assert_eq!(loaded.snapshot(), original.snapshot());
            prop_assert_eq!(loaded.available(), original.available());
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn address_snapshot_loaded_mid_script_answers_as_the_original(
        (space, ops, cut) in addr_script(),
    ) {
        let mut original = AddressAllocator::<u32>::new(space);
        let cut = cut.min(ops.len());
        for op in &ops[..cut] {
            let _ = apply_addr(&mut original, op);
        }
        let mut loaded = reload(&original);
        loaded.check_invariants().unwrap();
        for (step, op) in ops[cut..].iter().enumerate() {
            let want = apply_addr(&mut original, op);
            let got = apply_addr(&mut loaded, op);
            prop_assert_eq!(&got, &want, "step {} after the cut: {:?}", step, op);
            prop_assert!(loaded.check_invariants().is_ok());
            prop_assert_eq!(addr_state(&loaded), addr_state(&original));
            prop_assert!(loaded.free_ranges().eq(original.free_ranges()));
        }
    }
}

/// Runs of the IDs `first + i` whose `states[i]` is `want`, as snapshot pairs.
fn runs_of(first: u32, states: &[u8], want: u8) -> Vec<(u32, u32)> {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for (i, &s) in (0u32..).zip(states) {
        if s != want {
            continue;
        }
        match runs.last_mut() {
            Some(last) if last.1 + 1 == first + i => last.1 = first + i,
            _ => runs.push((first + i, first + i)),
        }
    }
    runs
}

fn list(runs: &[(u32, u32)]) -> String {
    let items: Vec<String> = runs.iter().map(|(a, b)| format!("[{a},{b}]")).collect();
    items.join(",")
}

proptest! {
    #![proptest_config(config())]

    /// Any consistent snapshot, written by hand rather than saved, loads into an allocator that
    /// answers every call as the same state built by calls does.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn id_snapshot_written_by_hand_answers_as_the_state_built_by_calls(
        first in prop_oneof![Just(0u32), Just(60), Just(4000), Just(u32::MAX - 300)],
        // 0: never allocated, 1: allocated, 2: allocated once and freed.
        states in prop::collection::vec(prop_oneof![3 => Just(0u8), 3 => Just(1), 2 => Just(2)], 1..300),
        ops in prop::collection::vec((0u8..4, 0u32..310, 1u32..20), 0..40),
    ) {
        let last = first + u32::try_from(states.len()).unwrap() - 1;
        let allocated = runs_of(first, &states, 1);
        let never = runs_of(first, &states, 0);
        let used = states.iter().filter(|&&s| s == 1).count();
        let text = format!(
            r#"{{"first":{first},"last":{last},"used":{used},"allocated":[{}],"never_allocated":[{}]}}"#,
            list(&allocated),
            list(&never)
        );
        let mut loaded: IdAllocator = serde_json::from_str(&text).unwrap();
        let mut built = IdAllocator::new(first, last).unwrap();
        for (id, &s) in (first..).zip(&states) {
            if s != 0 {
                built.allocate_id_at(id).unwrap();
            }
        }
        for (id, &s) in (first..).zip(&states) {
            if s == 2 {
                built.free_id(id).unwrap();
            }
        }
        prop_assert_eq!(&loaded, &built);
        for (kind, off, count) in ops {
            let id = first.saturating_add(off);
            let op = match kind {
                0 => IdOp::Allocate,
                1 => IdOp::Free(id),
                2 => IdOp::AllocateRun { count, alignment: 1 << (off % 4) },
                _ => IdOp::AllocateRunAt { first: id, count },
            };
            prop_assert_eq!(apply_id(&mut loaded, &op), apply_id(&mut built, &op), "{:?}", op);
        }
        prop_assert_eq!(loaded.snapshot(), built.snapshot());
        // Both hand out the same IDs, in the same order, until none is left.
        loop {
            let (a, b) = (loaded.allocate_id(), built.allocate_id());
            prop_assert_eq!(a, b);
            if a.is_err() {
                break;
            }
        }
    }
}
