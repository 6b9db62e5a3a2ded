//! `RoomTree` against a plain list of bounds: `first_from` is the first entry from a position
//! on whose bound reaches a size, `largest` the largest exact value, `get` the entry or `None`,
//! and `set` of a position past the last entry answers `None` and changes nothing. Positions
//! and sizes are any `usize` and `u64`, past the end and `u64::MAX` included; nothing panics.

use memvisor_resources::RoomTree;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Set(usize, u64),
    First(usize, u64),
    Get(usize),
    Largest(u64),
    Clone,
}

fn pos(len: usize) -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0..len.max(1),
        1 => len..len + 3,
        1 => Just(usize::MAX),
        1 => any::<usize>(),
    ]
}

fn bound() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..20,
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => any::<u64>(),
    ]
}

fn ops(len: usize) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => (pos(len), bound()).prop_map(|(i, b)| Op::Set(i, b)),
        4 => (pos(len), bound()).prop_map(|(i, s)| Op::First(i, s)),
        1 => pos(len).prop_map(Op::Get),
        1 => (0u64..4).prop_map(Op::Largest),
        1 => Just(Op::Clone),
    ];
    prop::collection::vec(op, 1..80)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 512 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn room_tree_answers_as_a_walk_over_its_bounds(
        (len, ops) in (0usize..70).prop_flat_map(|len| (Just(len), ops(len))),
        default in any::<bool>(),
    ) {
        let mut t = if default && len == 0 { RoomTree::default() } else { RoomTree::new(len).unwrap() };
        let mut model = vec![0u64; len];
        prop_assert_eq!((t.len(), t.is_empty()), (len, len == 0));
        for op in ops {
            match op {
                Op::Set(i, b) => {
                    let before = t.clone();
                    let want = model.get_mut(i).map(|m| core::mem::replace(m, b));
                    prop_assert_eq!(t.set(i, b), want, "{:?}", op);
                    if want.is_none() {
                        prop_assert_eq!(&t, &before);
                    }
                }
                Op::First(from, size) => {
                    let want = (from..len).find(|&i| model[i] >= size);
                    prop_assert_eq!(t.first_from(from, size), want, "{:?}", op);
                }
                Op::Get(i) => prop_assert_eq!(t.get(i), model.get(i).copied()),
                Op::Largest(shift) => {
                    // Exact values at most the bounds, as the contract asks.
                    let exact = |i: usize| u128::from(model[i] >> shift);
                    let want = (0..len).map(exact).max().unwrap_or(0);
                    let mut calls = 0usize;
                    let got = t.largest(|i| {
                        calls += 1;
                        assert!(i < len, "entry {i} of {len}");
                        exact(i)
                    });
                    prop_assert_eq!(got, want);
                    prop_assert!(calls <= len);
                    if shift == 0 && len > 0 {
                        prop_assert_eq!(calls, usize::from(want > 0));
                    }
                }
                Op::Clone => t = t.clone(),
            }
        }
    }
}

#[test]
fn room_tree_of_no_entries_answers_nothing_and_never_panics() {
    for mut t in [RoomTree::default(), RoomTree::new(0).unwrap()] {
        assert_eq!(t.set(0, 1), None);
        assert_eq!(t.set(usize::MAX, u64::MAX), None);
        assert_eq!(t.get(0), None);
        assert_eq!(t.first_from(0, 0), None);
        assert_eq!(t.first_from(usize::MAX, 0), None);
        assert_eq!(t.largest(|_| unreachable!()), 0);
        assert!(t.is_empty());
    }
}
