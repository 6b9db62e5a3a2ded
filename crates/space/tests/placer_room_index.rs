//! The placer's indexes (windows by address, a max tree of each kind's largest free ranges)
//! against an oracle built from what the placer shows: a placement lands where a first fit in
//! the windows of its kind, in address order, would put it given the ranges held; a refusal
//! names the largest free range of the kind; `largest_free` is that range after every step;
//! `owner_of` finds what is held. Many windows (some above 16 MiB, where the bounds round, one
//! ending at the top of the address space, two that touch), random sequences of placements,
//! takes (across windows too), releases, refusals and transactions that fail or succeed.
//!
//! The placer is safe code, so the file is left out of Miri runs (which look for undefined
//! behaviour in unsafe code and take minutes over it).
#![cfg(not(miri))]

use memvisor_resources::{AddressAllocator, AllocPolicy, Request};
use memvisor_space::{Error, GuestRange, Layout, Placer, Window, WindowKind};
use proptest::prelude::*;
use vm_memory::GuestAddress;

const TOP: u64 = u64::MAX - 0xffff;
const OPS: usize = if cfg!(miri) { 12 } else { 60 };

/// The windows, given out of order (the layout sorts them).
fn layout() -> Layout {
    let w = |kind, start: u64, size: u64| Window::new(kind, GuestAddress(start), size).unwrap();
    Layout::new(
        GuestAddress(u64::MAX),
        [
            w(WindowKind::Device, 0x400_0000, (1 << 24) + 0x3000),
            w(WindowKind::Ram, 0, 0x10_0000),
            w(WindowKind::Device, 0x10_0000, 0x4000),
            w(WindowKind::Device, TOP, 0x1_0000),
            w(WindowKind::Device, 0x20_0000, 0x1000),
            w(WindowKind::Hotplug, 0x100_0000, 0x300_0000),
            w(WindowKind::Ram, 0x600_0000, 0x10_0000),
            w(WindowKind::Device, 0x610_0000, 0x8000),
            w(WindowKind::Device, 1 << 40, 1 << 36),
            w(WindowKind::Hotplug, 1 << 41, 0x1000),
        ],
    )
    .unwrap()
}

const KINDS: [WindowKind; 4] = [
    WindowKind::Ram,
    WindowKind::Device,
    WindowKind::Hotplug,
    WindowKind::Dax,
];

fn kind() -> impl Strategy<Value = WindowKind> {
    prop_oneof![
        1 => Just(WindowKind::Ram),
        3 => Just(WindowKind::Device),
        1 => Just(WindowKind::Hotplug),
    ]
}

/// An address near the windows' edges, or anywhere.
fn addr() -> impl Strategy<Value = u64> {
    let w: Vec<(u64, u64)> = layout()
        .windows()
        .iter()
        .map(|w| (w.start().0, w.last_addr().0))
        .collect();
    (0..w.len(), any::<bool>(), 0u64..0x2_0000, any::<u64>()).prop_map(
        move |(i, high, off, far)| match (high, far % 5) {
            (_, 0) => far,
            (false, _) => w[i].0.saturating_add(off).saturating_sub(0x2000) & !0xfff,
            (true, _) => (w[i].1.saturating_sub(off) & !0xfff).saturating_add(0x1000),
        },
    )
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (1u64..16).prop_map(|p| p << 12),
        1 => 1u64..0x3000,
        2 => (1u64 << 24)..(1u64 << 25) + 0x4000,
        1 => (1u64 << 30)..(1u64 << 37),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Place(WindowKind, u64, u64),
    TakeIn(WindowKind, u64, u64),
    Take(u64, u64),
    ReleaseNth(usize),
    Release(u64, u64),
    /// Placements in a transaction, which fails at its end when asked to.
    Transaction(Vec<(WindowKind, u64, u64)>, bool),
}

fn op() -> impl Strategy<Value = Op> {
    let align = (0u32..24).prop_map(|k| 1u64 << k);
    prop_oneof![
        6 => (kind(), size(), align.clone()).prop_map(|(k, s, a)| Op::Place(k, s, a)),
        2 => (kind(), addr(), size()).prop_map(|(k, a, s)| Op::TakeIn(k, a, s)),
        2 => (addr(), size()).prop_map(|(a, s)| Op::Take(a, s)),
        4 => any::<usize>().prop_map(Op::ReleaseNth),
        1 => (addr(), size()).prop_map(|(a, s)| Op::Release(a, s)),
        1 => (prop::collection::vec((kind(), size(), align), 1..4), any::<bool>())
            .prop_map(|(v, fail)| Op::Transaction(v, fail)),
    ]
}

/// One allocator per window of `kind`, in address order, holding what the placer holds there.
fn copies(p: &Placer, kind: WindowKind) -> Vec<AddressAllocator<()>> {
    let held: Vec<GuestRange> = p.allocations().map(|(_, r)| r).collect();
    p.windows_of(kind)
        .map(|w| {
            let space = w.range().as_range();
            let mut a = AddressAllocator::new(space);
            for r in &held {
                if let Some(part) = r.as_range().intersection(&space) {
                    a.reserve_with(part, ()).unwrap();
                }
            }
            a
        })
        .collect()
}

/// The largest free range in the windows of `kind`, from the free ranges themselves.
fn largest(p: &Placer, kind: WindowKind) -> u64 {
    copies(p, kind)
        .iter()
        .flat_map(|a| a.free_ranges().map(|f| f.size_u128()).collect::<Vec<_>>())
        .max()
        .map_or(0, |l| u64::try_from(l).unwrap_or(u64::MAX))
}

/// Where `place` must put `size` bytes: the first fit in the first window of `kind`, in
/// address order, that has room; else the largest free range of the kind.
fn oracle(p: &Placer, kind: WindowKind, size: u64, align: u64) -> Result<u64, u64> {
    let req = Request::new(size, align, AllocPolicy::FirstMatch).unwrap();
    for mut a in copies(p, kind) {
        if let Ok(r) = a.allocate_with(&req, ()) {
            return Ok(r.start());
        }
    }
    Err(largest(p, kind))
}

/// Places and checks the placement against the oracle.
fn place(
    p: &mut Placer,
    kind: WindowKind,
    size: u64,
    align: u64,
    owner: &str,
) -> Result<Result<GuestRange, Error>, TestCaseError> {
    let want = oracle(p, kind, size, align);
    let got = p.place(kind, size, align, owner);
    match (&got, want) {
        (Ok(r), Ok(start)) => {
            prop_assert_eq!(r.start().0, start);
            prop_assert_eq!(r.size(), Some(size));
        }
        (
            Err(Error::NoRoom {
                largest_free,
                window,
                size: s,
                align: a,
                ..
            }),
            Err(l),
        ) => {
            prop_assert_eq!((*largest_free, *window, *s, *a), (l, kind, size, align));
        }
        _ => prop_assert!(false, "placed {:?}, a first fit says {:x?}", got, want),
    }
    Ok(got)
}

fn state(p: &Placer) -> Vec<(String, GuestRange)> {
    p.allocations().map(|(o, r)| (o.to_owned(), r)).collect()
}

fn range(start: u64, size: u64) -> Option<GuestRange> {
    GuestRange::new(GuestAddress(start), size).ok()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn placements_match_a_first_fit_over_the_windows_in_order(
        ops in prop::collection::vec(op(), 1..OPS),
    ) {
        let mut p = layout().placer();
        for (n, op) in ops.iter().enumerate() {
            let owner = format!("o{n}");
            let before = state(&p);
            let result: Result<(), Error> = match op {
                &Op::Place(kind, size, align) => place(&mut p, kind, size, align, &owner)?.map(|_| ()),
                &Op::TakeIn(kind, at, size) => match range(at, size) {
                    Some(r) => {
                        let got = p.take_in(kind, r, &owner);
                        if let Err(Error::NotInWindow { largest_free, .. }) = &got {
                            prop_assert_eq!(*largest_free, largest(&p, kind));
                        }
                        got
                    }
                    None => Ok(()),
                },
                &Op::Take(at, size) => match range(at, size) {
                    Some(r) => p.take(r, &owner),
                    None => Ok(()),
                },
                &Op::ReleaseNth(i) => {
                    let held: Vec<GuestRange> = p.allocations().map(|(_, r)| r).collect();
                    match held.get(i % held.len().max(1)) {
                        Some(&r) => {
                            p.release(r).unwrap();
                            Ok(())
                        }
                        None => Ok(()),
                    }
                }
                &Op::Release(at, size) => match range(at, size) {
                    Some(r) => p.release(r),
                    None => Ok(()),
                },
                Op::Transaction(places, fail) => {
                    let mut checked = Ok(());
                    let got = p.transaction(|q| {
                        for (k, &(kind, size, align)) in places.iter().enumerate() {
                            match place(q, kind, size, align, &format!("{owner}.{k}")) {
                                Ok(r) => { r?; }
                                Err(e) => {
                                    checked = Err(e);
                                    return Err(Error::NothingToPlace { owner: owner.clone() });
                                }
                            }
                        }
                        if *fail {
                            return Err(Error::NothingToPlace { owner: owner.clone() });
                        }
                        Ok(())
                    });
                    checked?;
                    got
                }
            };
            if result.is_err() {
                prop_assert_eq!(&state(&p), &before, "{:?} failed but changed the placer", op);
            }
            for kind in KINDS {
                prop_assert_eq!(p.largest_free(kind), largest(&p, kind), "{:?} after {:?}", kind, op);
            }
            // Each range listed, as taken, is what `owner_of` names at its parts' ends.
            let windows: Vec<GuestRange> =
                KINDS.iter().flat_map(|&k| p.windows_of(k).map(|w| w.range())).collect();
            for (o, r) in state(&p) {
                for part in windows.iter().filter_map(|w| w.intersection(&r)) {
                    for at in [part.start(), part.last()] {
                        let found = p.owner_of(at).map(|(o, x)| (o.to_owned(), x));
                        prop_assert_eq!(found, Some((o.clone(), r)));
                    }
                }
            }
        }
    }
}

/// A window that ends at the top of the address space: its last byte can be placed, taken,
/// found and given back.
#[test]
fn the_last_byte_of_the_address_space_is_found() {
    let mut p = layout().placer();
    let last = GuestRange::new(GuestAddress(u64::MAX - 0xfff), 0x1000).unwrap();
    p.take_in(WindowKind::Device, last, "top").unwrap();
    assert_eq!(p.owner_of(GuestAddress(u64::MAX)), Some(("top", last)));
    p.release(last).unwrap();
    assert_eq!(p.owner_of(GuestAddress(u64::MAX)), None);
    let whole = GuestRange::new(GuestAddress(TOP), 0x1_0000).unwrap();
    p.take(whole, "all").unwrap();
    assert_eq!(p.owner_of(GuestAddress(u64::MAX)), Some(("all", whole)));
}
