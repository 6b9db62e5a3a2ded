//! Error atomicity: for random operation sequences, every call of an `IdAllocator`, an
//! `AddressAllocator` or an `AllocatorSet` that returns an error leaves the whole observable
//! state as it was before the call: what iteration yields, the counts, the heap held, the
//! snapshots' bytes, the keys' ranges and the `Debug` text (which shows the index). The models
//! check the answers; this checks that a refusal changes nothing the answers do not show either.

use memvisor_resources::model::{AddrOp, IdOp, apply_addr, apply_id};
use memvisor_resources::{
    AddressAllocator, AddressRange, AllocPolicy, AllocatorSet, IdAllocator, Request,
};
use proptest::prelude::*;

const CASES: u32 = 64;

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(CASES)
}

/// Everything an `IdAllocator` shows.
fn id_state(a: &IdAllocator) -> (Vec<u32>, u64, u64, usize, String, String) {
    (
        a.iter().collect(),
        a.used(),
        a.available(),
        a.heap_bytes(),
        serde_json::to_string(a).unwrap(),
        format!("{a:?}"),
    )
}

/// Everything an `AddressAllocator` shows.
fn addr_state(
    a: &AddressAllocator<u32>,
) -> (Vec<(AddressRange, u32)>, usize, u128, usize, String, String) {
    (
        a.allocated().map(|e| (e.range, *e.tag)).collect(),
        a.len(),
        a.used(),
        a.heap_bytes(),
        serde_json::to_string(a).unwrap(),
        format!("{a:?}"),
    )
}

fn id_range() -> impl Strategy<Value = (u32, u32)> {
    prop_oneof![
        Just((0, 199)),
        Just((5, 300)),
        Just((1000, 1000)),
        Just((u32::MAX - 199, u32::MAX)),
        Just((0, u32::MAX)),
        (0u32..100, 0u32..400).prop_map(|(a, len)| (a, a + len)),
    ]
}

/// An ID near the bottom or the top of `first..=last` (the bottom only for wide ranges, so the
/// bitmap stays small), or just outside it.
fn id(first: u32, last: u32) -> impl Strategy<Value = u32> {
    let near_top = if last - first < 10_000 {
        last.saturating_sub(250)
    } else {
        first
    };
    prop_oneof![
        (0u32..260).prop_map(move |o| first.saturating_add(o)),
        (0u32..260).prop_map(move |o| near_top.saturating_add(o).min(last.saturating_add(2))),
        (0u32..3).prop_map(move |o| first.saturating_sub(o)),
    ]
}

fn id_op(first: u32, last: u32) -> impl Strategy<Value = IdOp> {
    let alignment = prop_oneof![
        5 => (0u32..5).prop_map(|k| 1u64 << k),
        1 => Just(0u64),
        1 => Just(3u64),
        1 => Just(1u64 << 40),
    ];
    // A count of `u32::MAX` only where it cannot succeed: in a wide range it would allocate
    // every ID (and list them), as asked.
    let huge = if last - first < 10_000 { u32::MAX } else { 19 };
    let count = move || prop_oneof![4 => 0u32..20, 1 => Just(huge)];
    prop_oneof![
        6 => Just(IdOp::Allocate),
        3 => id(first, last).prop_map(IdOp::AllocateAt),
        2 => (0u32..20, alignment).prop_map(|(count, alignment)| IdOp::AllocateRun { count, alignment }),
        2 => count().prop_map(IdOp::AllocateMany),
        2 => (id(first, last), count())
            .prop_map(|(first, count)| IdOp::AllocateRunAt { first, count }),
        5 => id(first, last).prop_map(IdOp::Free),
        2 => (id(first, last), 0u32..12, any::<bool>()).prop_map(|(a, len, flip)| {
            let b = a.saturating_add(len);
            if flip { IdOp::FreeRun { first: b, last: a } } else { IdOp::FreeRun { first: a, last: b } }
        }),
    ]
}

fn id_script() -> impl Strategy<Value = (u32, u32, Vec<IdOp>)> {
    id_range().prop_flat_map(|(first, last)| {
        (
            Just(first),
            Just(last),
            prop::collection::vec(id_op(first, last), 0..60),
        )
    })
}

fn space() -> impl Strategy<Value = AddressRange> {
    prop_oneof![
        Just(AddressRange::new(0, 0xfff).unwrap()),
        Just(AddressRange::new(u64::MAX - 0xfff, u64::MAX).unwrap()),
        Just(AddressRange::FULL),
        Just(AddressRange::new(7, 7).unwrap()),
    ]
}

fn addr(space: AddressRange) -> impl Strategy<Value = u64> {
    let (lo, hi) = (space.start(), space.end());
    prop_oneof![
        4 => (0u64..0x1100).prop_map(move |o| lo.saturating_add(o)),
        4 => (0u64..0x1100).prop_map(move |o| hi.saturating_sub(o)),
        1 => any::<u64>(),
    ]
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        12 => 1u64..=0x40,
        2 => 0x40u64..=0x400,
        1 => Just(0u64),
        1 => Just(u64::MAX),
    ]
}

fn alignment() -> impl Strategy<Value = u64> {
    prop_oneof![
        12 => (0u32..8).prop_map(|k| 1u64 << k),
        1 => Just(0u64),
        1 => Just(3u64),
        1 => Just(1u64 << 63),
    ]
}

fn policy(space: AddressRange, alignment: u64) -> impl Strategy<Value = AllocPolicy> {
    (0u8..3, addr(space)).prop_map(move |(kind, at)| match kind {
        0 => AllocPolicy::FirstMatch,
        1 => AllocPolicy::LastMatch,
        _ if alignment == 0 => AllocPolicy::ExactMatch(at),
        _ => AllocPolicy::ExactMatch(at & !(alignment - 1)),
    })
}

fn addr_op(space: AddressRange) -> impl Strategy<Value = AddrOp> {
    let window = prop_oneof![
        3 => Just(None),
        1 => (addr(space), addr(space)).prop_map(|(a, b)| Some((a.min(b), a.max(b)))),
        1 => (addr(space), addr(space)).prop_map(Some),
    ];
    let placed = move || {
        (size(), alignment()).prop_flat_map(move |(size, alignment)| {
            (Just(size), Just(alignment), policy(space, alignment))
        })
    };
    prop_oneof![
        8 => (placed(), window, 0u32..4).prop_map(|((size, alignment, policy), window, tag)| {
            AddrOp::Allocate { size, alignment, policy, window, tag }
        }),
        2 => (addr(space), 0u64..0x40, any::<bool>(), 0u32..4).prop_map(|(start, len, flip, tag)| {
            let end = start.saturating_add(len);
            if flip { AddrOp::Reserve { start: end, end: start, tag } } else { AddrOp::Reserve { start, end, tag } }
        }),
        4 => any::<usize>().prop_map(AddrOp::FreeNth),
        2 => (addr(space), 0u64..0x40).prop_map(|(start, len)| AddrOp::FreeRange { start, end: start.saturating_add(len) }),
        2 => addr(space).prop_map(AddrOp::Release),
        3 => (any::<usize>(), placed()).prop_map(|(index, (size, alignment, policy))| {
            AddrOp::RelocateNth { index, size, alignment, policy }
        }),
        2 => (addr(space), addr(space)).prop_map(|(a, b)| AddrOp::Resize { start: a.min(b), end: a.max(b) }),
        1 => (addr(space), addr(space)).prop_map(|(a, b)| AddrOp::Resize { start: a, end: b }),
    ]
}

fn addr_script() -> impl Strategy<Value = (AddressRange, Vec<AddrOp>)> {
    space().prop_flat_map(|s| (Just(s), prop::collection::vec(addr_op(s), 0..60)))
}

/// Everything an `AllocatorSet` shows: its allocations, counts, keys 0 to 7, and each space's
/// allocator (snapshot, heap held).
type SetState = (
    Vec<(AddressRange, u32)>,
    usize,
    u128,
    Vec<Option<AddressRange>>,
    Vec<(String, usize)>,
    String,
);

fn set_state(s: &AllocatorSet<u32>) -> SetState {
    (
        s.allocated().map(|e| (e.range, *e.tag)).collect(),
        s.len(),
        s.used(),
        (0..8).map(|key| s.get(key)).collect(),
        s.pools()
            .iter()
            .map(|p| (serde_json::to_string(p).unwrap(), p.heap_bytes()))
            .collect(),
        format!("{s:?}"),
    )
}

/// Three spaces, not in address order, with holes between them.
fn set_spaces() -> Vec<AddressRange> {
    [(0x2000, 0x2fff), (0x0, 0x7ff), (0x4000, 0x43ff)]
        .iter()
        .map(|&(a, b)| AddressRange::new(a, b).unwrap())
        .collect()
}

#[derive(Clone, Debug)]
enum SetOp {
    Align(u64, u64),
    Allocate {
        size: u64,
        alignment: u64,
        policy: AllocPolicy,
        key: Option<u64>,
    },
    Reserve {
        start: u64,
        end: u64,
        key: Option<u64>,
    },
    Free(usize),
    FreeAt(u64, u64),
    Release(u64),
}

fn set_addr() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..0x4800, Just(u64::MAX), any::<u64>()]
}

fn set_op() -> impl Strategy<Value = SetOp> {
    let key = prop_oneof![Just(None), (0u64..8).prop_map(Some)];
    let align =
        prop_oneof![5 => (0u32..12).prop_map(|k| 1u64 << k), 1 => Just(0u64), 1 => Just(3u64)];
    prop_oneof![
        1 => (align.clone(), align.clone()).prop_map(|(a, b)| SetOp::Align(a, b)),
        6 => (size(), align, (0u8..3, set_addr()), key.clone()).prop_map(|(size, alignment, (kind, at), key)| {
            let policy = match kind {
                0 => AllocPolicy::FirstMatch,
                1 => AllocPolicy::LastMatch,
                _ => AllocPolicy::ExactMatch(at),
            };
            SetOp::Allocate { size, alignment, policy, key }
        }),
        2 => (set_addr(), 0u64..0x100, key).prop_map(|(start, len, key)| SetOp::Reserve { start, end: start.saturating_add(len), key }),
        3 => any::<usize>().prop_map(SetOp::Free),
        1 => (set_addr(), 0u64..0x100).prop_map(|(a, len)| SetOp::FreeAt(a, a.saturating_add(len))),
        2 => (0u64..8).prop_map(SetOp::Release),
    ]
}

/// Applies `op` to `s`; whether it failed.
fn apply_set(s: &mut AllocatorSet<u32>, op: &SetOp, tag: u32) -> bool {
    match *op {
        SetOp::Align(min, preferred) => s.set_alignment(min, preferred).is_err(),
        SetOp::Allocate {
            size,
            alignment,
            policy,
            key,
        } => {
            let Ok(request) = Request::new(size, alignment, policy) else {
                return false;
            };
            match key {
                None => s.allocate_with(&request, tag).is_err(),
                Some(key) => s.allocate_keyed(key, &request, tag).is_err(),
            }
        }
        SetOp::Reserve { start, end, key } => {
            let range = AddressRange::new(start, end).unwrap();
            match key {
                None => s.reserve_with(range, tag).is_err(),
                Some(key) => s.reserve_keyed(key, range, tag).is_err(),
            }
        }
        SetOp::Free(nth) => {
            let ranges: Vec<AddressRange> = s.allocated().map(|e| e.range).collect();
            if ranges.is_empty() {
                return false;
            }
            s.free(&ranges[nth % ranges.len()]).is_err()
        }
        SetOp::FreeAt(start, end) => s.free(&AddressRange::new(start, end).unwrap()).is_err(),
        SetOp::Release(key) => s.release(key).is_err(),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    #[cfg_attr(miri, ignore = "slow under Miri; the models run there")]
    fn id_allocator_call_that_fails_changes_nothing((first, last, ops) in id_script()) {
        let mut a = IdAllocator::new(first, last).unwrap();
        for (step, op) in ops.iter().enumerate() {
            // A copy and the heap held (which a copy does not keep): the state is read from
            // them only when the call fails.
            let (copy, heap) = (a.clone(), a.heap_bytes());
            if let Err(e) = apply_id(&mut a, op) {
                let mut before = id_state(&copy);
                before.3 = heap;
                prop_assert_eq!(&id_state(&a), &before, "step {}: {:?} failed with {}", step, op, e);
            }
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "slow under Miri; the models run there")]
    fn address_allocator_call_that_fails_changes_nothing((space, ops) in addr_script()) {
        let mut a = AddressAllocator::<u32>::new(space);
        for (step, op) in ops.iter().enumerate() {
            let (copy, heap) = (a.clone(), a.heap_bytes());
            if let Err(e) = apply_addr(&mut a, op) {
                let mut before = addr_state(&copy);
                before.3 = heap;
                prop_assert_eq!(&addr_state(&a), &before, "step {}: {:?} failed with {}", step, op, e);
            }
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "slow under Miri; the models run there")]
    fn allocator_set_call_that_fails_changes_nothing(ops in prop::collection::vec(set_op(), 0..60)) {
        let mut s = AllocatorSet::<u32>::new(&set_spaces()).unwrap();
        for (step, op) in ops.iter().enumerate() {
            let before = set_state(&s);
            if apply_set(&mut s, op, u32::try_from(step).unwrap()) {
                prop_assert_eq!(&set_state(&s), &before, "step {}: {:?} failed", step, op);
            }
        }
    }
}
