//! The placer against a model: every operation either succeeds or leaves every allocation,
//! interrupt and owner exactly as before; what is held never overlaps and always lies in a
//! window of the kind it was asked for; a release succeeds exactly for a range held.

use memvisor_space::{Error, GuestRange, Layout, Placer, WindowKind};
use proptest::prelude::*;
use vm_memory::GuestAddress;

const GIB: u64 = 1 << 30;

#[derive(Clone, Debug)]
enum Op {
    Place(WindowKind, u64, u32),
    Take(u64, u64),
    TakeIn(WindowKind, u64, u64),
    Release(usize),
    ReleaseRange(u64, u64),
    /// A held range widened by pages below and above.
    ReleaseWider(usize, u64, u64),
    Irq,
    IrqAt(u32),
}

fn kind() -> impl Strategy<Value = WindowKind> {
    prop_oneof![
        Just(WindowKind::Device),
        Just(WindowKind::Hotplug),
        Just(WindowKind::Reserved),
        Just(WindowKind::Ram),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    // Addresses near window edges: the end of the device window, the reserved window, the
    // 4 GiB line and the hotplug window.
    let edge = prop_oneof![
        Just(0xfebf_0000u64),
        Just(0xfec0_0000),
        Just(0xffbf_f000),
        Just(4 * GIB - 0x2000),
        Just(4 * GIB),
        Just(5 * GIB - 0x1000),
    ];
    prop_oneof![
        (kind(), 1u64..64, 0u32..6).prop_map(|(k, pages, a)| Op::Place(k, pages << 12, a)),
        (edge.clone(), 0u64..8, 1u64..64).prop_map(|(e, o, p)| Op::Take(e + (o << 12), p << 12)),
        (kind(), edge.clone(), 0u64..8, 1u64..16).prop_map(|(k, e, o, p)| Op::TakeIn(
            k,
            e + (o << 12),
            p << 12
        )),
        (0usize..16).prop_map(Op::Release),
        (edge.clone(), 0u64..8, 1u64..64)
            .prop_map(|(e, o, p)| Op::ReleaseRange(e + (o << 12), p << 12)),
        (0usize..16, 0u64..3, 0u64..3).prop_map(|(i, lo, hi)| Op::ReleaseWider(i, lo, hi)),
        Just(Op::Irq),
        (0u32..30).prop_map(Op::IrqAt),
    ]
}

type State = (Vec<(String, GuestRange)>, Vec<Option<String>>);

fn state(p: &Placer) -> State {
    let ranges = p.allocations().map(|(o, r)| (o.to_owned(), r)).collect();
    let irqs = (0..24).map(|i| p.irq_owner(i).map(str::to_owned)).collect();
    (ranges, irqs)
}

/// Releases `r`, which must succeed exactly when it is a range held (placed or taken as
/// one; every range held has a part inside a window); then it is held no more.
fn release(
    p: &mut Placer,
    held: &mut Vec<GuestRange>,
    layout: &Layout,
    r: GuestRange,
) -> Result<(), Error> {
    let in_window = layout.windows().iter().any(|w| w.range().overlaps(&r));
    let index = held.iter().position(|&h| h == r);
    let result = p.release(r);
    match (index, in_window, &result) {
        (Some(i), true, Ok(())) => {
            held.remove(i);
        }
        (_, _, Err(Error::NotPlaced { range }))
            if *range == r && !(index.is_some() && in_window) => {}
        _ => panic!("release of {r:?} (held: {index:?}, in a window: {in_window}): {result:?}"),
    }
    result
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 256 }))]

    #[test]
    fn placer_ops_are_all_or_nothing(ops in proptest::collection::vec(op(), 1..40)) {
        let layout = Layout::x86_64().ram(GIB).hotplug(GIB).build().unwrap();
        let mut p = layout.placer();
        let mut held: Vec<GuestRange> = Vec::new();
        for (n, op) in ops.iter().enumerate() {
            let before = state(&p);
            let owner = format!("o{n}");
            let range = |b: u64, s: u64| GuestRange::new(GuestAddress(b), s).unwrap();
            let result: Result<(), Error> = match *op {
                Op::Place(k, size, align) => p.place(k, size, 0x1000 << align, &owner).map(|r| {
                    let w = layout.window_containing(r.start()).unwrap();
                    assert_eq!(w.kind(), k);
                    assert!(w.range().contains_range(&r));
                    held.push(r);
                }),
                Op::Take(b, s) => {
                    let r = range(b, s);
                    let result = p.take(r, &owner);
                    // A range crossing no window holds nothing: refused.
                    if !layout.windows().iter().any(|w| w.range().overlaps(&r)) {
                        prop_assert!(
                            matches!(&result, Err(Error::OutsideWindows { range, .. }) if *range == r),
                            "take of {:?} outside every window: {:?}", r, result
                        );
                    }
                    result.map(|()| held.push(r))
                }
                Op::TakeIn(k, b, s) => p.take_in(k, range(b, s), &owner).map(|()| {
                    let w = layout.window_containing(GuestAddress(b)).unwrap();
                    assert_eq!(w.kind(), k);
                    held.push(range(b, s));
                }),
                Op::Release(i) => match held.get(i).copied() {
                    Some(r) => release(&mut p, &mut held, &layout, r),
                    None => Ok(()),
                },
                Op::ReleaseRange(b, s) => release(&mut p, &mut held, &layout, range(b, s)),
                Op::ReleaseWider(i, lo, hi) => match held.get(i).copied() {
                    Some(r) => {
                        let wider = GuestRange::inclusive(
                            GuestAddress(r.start().0.saturating_sub(lo << 12)),
                            GuestAddress(r.last().0.saturating_add(hi << 12)),
                        )
                        .unwrap();
                        release(&mut p, &mut held, &layout, wider)
                    }
                    None => Ok(()),
                },
                Op::Irq => p.irq(&owner).map(drop),
                Op::IrqAt(i) => p.irq_at(i, &owner).map(drop),
            };
            if result.is_err() {
                prop_assert_eq!(&state(&p), &before, "{:?} failed but changed the placer", op);
            }
            // What is held never overlaps.
            let mut all: Vec<GuestRange> = p.allocations().map(|(_, r)| r).collect();
            all.sort();
            for pair in all.windows(2) {
                prop_assert!(!pair[0].overlaps(&pair[1]), "{:?} / {:?}", pair[0], pair[1]);
            }
        }
    }
}
