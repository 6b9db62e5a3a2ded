//! The placer against a model: every operation either succeeds or leaves every allocation,
//! interrupt, I/O port and owner exactly as before; what is held never overlaps and always lies
//! in a window of the kind it was asked for; a release (of a range, an interrupt or I/O ports)
//! succeeds exactly for what is held; interrupts and ports are given as the model says; a
//! transaction that fails leaves everything as before, and one that succeeds leaves what the
//! same operations leave outside a transaction.
//!
//! The placer is safe code, so the file is left out of Miri runs (which look for undefined
//! behaviour in unsafe code and take minutes over it).
#![cfg(not(miri))]

use std::collections::BTreeMap;

use memvisor_space::{Error, GuestRange, Layout, Placer, Platform, WindowKind};
use proptest::prelude::*;
use vm_memory::GuestAddress;

const GIB: u64 = 1 << 30;
/// x86-64: GSIs 0-23, of which 0-4 are legacy; ports 0-0xffff.
const LAST_GSI: u32 = 23;
const LEGACY_GSIS: u32 = 5;
const LAST_PORT: u64 = 0xffff;

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
    /// An interrupt held (by index), or any number.
    ReleaseIrqHeld(usize),
    ReleaseIrq(u32),
    PortsAt(u64, u64),
    /// Ports held (by index), or any range of ports.
    ReleasePortsHeld(usize),
    ReleasePorts(u64, u64),
    /// Ports held widened by ports below and above.
    ReleasePortsWider(usize, u64, u64),
    /// Operations in a transaction, which fails at its end when asked to.
    Transaction(Vec<Op>, bool),
}

fn kind() -> impl Strategy<Value = WindowKind> {
    prop_oneof![
        Just(WindowKind::Device),
        Just(WindowKind::Hotplug),
        Just(WindowKind::Reserved),
        Just(WindowKind::Ram),
    ]
}

fn simple_op() -> impl Strategy<Value = Op> {
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
    // Ports near the legacy devices, around the PIT's and the ELCR's (which KVM answers in the
    // kernel, held from the start) and the end of the port space.
    let port = prop_oneof![
        Just(0x2f8u64),
        Just(0x3f8),
        Just(0x38),
        Just(0x4c8),
        Just(0xfff0)
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
        (0usize..8).prop_map(Op::ReleaseIrqHeld),
        prop_oneof![0u32..30, Just(u32::MAX)].prop_map(Op::ReleaseIrq),
        (port.clone(), 0u64..16, 1u64..24).prop_map(|(b, o, s)| Op::PortsAt(b + o, s)),
        (0usize..8).prop_map(Op::ReleasePortsHeld),
        (port, 0u64..16, 1u64..24).prop_map(|(b, o, s)| Op::ReleasePorts(b + o, s)),
        (0usize..8, 0u64..3, 0u64..3).prop_map(|(i, lo, hi)| Op::ReleasePortsWider(i, lo, hi)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        9 => simple_op(),
        1 => (proptest::collection::vec(simple_op(), 0..8), any::<bool>())
            .prop_map(|(ops, fail)| Op::Transaction(ops, fail)),
    ]
}

/// Every range, interrupt and port range held, with its owner.
type State = (
    Vec<(String, GuestRange)>,
    Vec<Option<String>>,
    Vec<(String, GuestRange)>,
);

fn state(p: &Placer) -> State {
    let ranges = p.allocations().map(|(o, r)| (o.to_owned(), r)).collect();
    let irqs = (0..=LAST_GSI + 1)
        .map(|i| p.irq_owner(i).map(str::to_owned))
        .collect();
    let ports = p
        .port_allocations()
        .map(|(o, r)| (o.to_owned(), r))
        .collect();
    (ranges, irqs, ports)
}

fn range(b: u64, s: u64) -> GuestRange {
    GuestRange::new(GuestAddress(b), s).unwrap()
}

/// What the placer holds: ranges as placed or taken, interrupts and ports with their owners.
#[derive(Clone, Debug)]
struct Model {
    layout: Layout,
    held: Vec<GuestRange>,
    irqs: BTreeMap<u32, String>,
    ports: Vec<(GuestRange, String)>,
}

impl Model {
    /// Releases `r`, which must succeed exactly when it is a range held (placed or taken as
    /// one; every range held has a part inside a window); then it is held no more.
    fn release(&mut self, p: &mut Placer, r: GuestRange) -> Result<(), Error> {
        let in_window = self.layout.windows().iter().any(|w| w.range().overlaps(&r));
        let index = self.held.iter().position(|&h| h == r);
        let result = p.release(r);
        match (index, in_window, &result) {
            (Some(i), true, Ok(())) => {
                self.held.remove(i);
            }
            (_, _, Err(Error::NotPlaced { range }))
                if *range == r && !(index.is_some() && in_window) => {}
            _ => panic!("release of {r:?} (held: {index:?}, in a window: {in_window}): {result:?}"),
        }
        result
    }

    /// Gives interrupt `irq` back: only one held, out of range refused as such.
    fn release_irq(&mut self, p: &mut Placer, irq: u32) -> Result<(), Error> {
        let result = p.release_irq(irq);
        match (&result, self.irqs.contains_key(&irq)) {
            (Ok(()), true) => {
                self.irqs.remove(&irq);
            }
            (Err(Error::IrqOutOfRange { irq: i, .. }), false) if *i == irq && irq > LAST_GSI => {}
            (Err(Error::IrqNotTaken { irq: i, .. }), false) if *i == irq && irq <= LAST_GSI => {}
            _ => panic!("release_irq({irq}) (held: {:?}): {result:?}", self.irqs),
        }
        result
    }

    /// Gives ports `r` back: only exactly ports held.
    fn release_ports(&mut self, p: &mut Placer, r: GuestRange) -> Result<(), Error> {
        let index = self.ports.iter().position(|(h, _)| *h == r);
        let result = p.release_ports(r);
        match (&result, index) {
            (Ok(()), Some(i)) => {
                self.ports.remove(i);
            }
            (Err(Error::NotPlaced { range }), None) if *range == r => {}
            _ => panic!("release_ports({r:?}) (held: {:?}): {result:?}", self.ports),
        }
        result
    }

    fn step(&mut self, p: &mut Placer, op: &Op, owner: &str) -> Result<(), Error> {
        match *op {
            Op::Place(k, size, align) => p.place(k, size, 0x1000 << align, owner).map(|r| {
                let w = self.layout.window_containing(r.start()).unwrap();
                assert_eq!(w.kind(), k);
                assert!(w.range().contains_range(&r));
                self.held.push(r);
            }),
            Op::Take(b, s) => {
                let r = range(b, s);
                let result = p.take(r, owner);
                // A range crossing no window holds nothing: refused.
                if !self.layout.windows().iter().any(|w| w.range().overlaps(&r)) {
                    assert!(
                        matches!(&result, Err(Error::OutsideWindows { range, .. }) if *range == r),
                        "take of {r:?} outside every window: {result:?}"
                    );
                }
                result.map(|()| self.held.push(r))
            }
            Op::TakeIn(k, b, s) => p.take_in(k, range(b, s), owner).map(|()| {
                let w = self.layout.window_containing(GuestAddress(b)).unwrap();
                assert_eq!(w.kind(), k);
                self.held.push(range(b, s));
            }),
            Op::Release(i) => match self.held.get(i).copied() {
                Some(r) => self.release(p, r),
                None => Ok(()),
            },
            Op::ReleaseRange(b, s) => self.release(p, range(b, s)),
            Op::ReleaseWider(i, lo, hi) => match self.held.get(i).copied() {
                Some(r) => {
                    let wider = GuestRange::inclusive(
                        GuestAddress(r.start().0.saturating_sub(lo << 12)),
                        GuestAddress(r.last().0.saturating_add(hi << 12)),
                    )
                    .unwrap();
                    self.release(p, wider)
                }
                None => Ok(()),
            },
            Op::Irq => {
                let lowest = (LEGACY_GSIS..=LAST_GSI).find(|i| !self.irqs.contains_key(i));
                let result = p.irq(owner);
                match (&result, lowest) {
                    (Ok(i), Some(l)) => assert_eq!(*i, l),
                    (Err(Error::NoFreeIrq { .. }), None) => {}
                    _ => panic!("irq (lowest free {lowest:?}): {result:?}"),
                }
                result.map(|i| {
                    self.irqs.insert(i, owner.to_owned());
                })
            }
            Op::IrqAt(irq) => {
                let result = p.irq_at(irq, owner);
                match (&result, self.irqs.get(&irq)) {
                    (Ok(i), None) if *i == irq && irq <= LAST_GSI => {
                        self.irqs.insert(irq, owner.to_owned());
                    }
                    (Err(Error::IrqTaken { other, .. }), Some(o)) if other == o => {}
                    (Err(Error::IrqOutOfRange { .. }), None) if irq > LAST_GSI => {}
                    _ => panic!("irq_at({irq}): {result:?} (held: {:?})", self.irqs),
                }
                result.map(drop)
            }
            Op::ReleaseIrqHeld(i) => match self.irqs.keys().nth(i).copied() {
                Some(irq) => self.release_irq(p, irq),
                None => Ok(()),
            },
            Op::ReleaseIrq(irq) => self.release_irq(p, irq),
            Op::PortsAt(b, s) => {
                let r = range(b, s);
                // The lowest held range it overlaps is the one named.
                let clash = self
                    .ports
                    .iter()
                    .filter(|(h, _)| h.overlaps(&r))
                    .min_by_key(|(h, _)| *h);
                let result = p.ports_at(r, owner);
                match (&result, clash) {
                    (Err(Error::PortsOutOfRange { ports: x, .. }), _)
                        if *x == r && r.last().0 > LAST_PORT => {}
                    (
                        Err(Error::Taken {
                            other, other_range, ..
                        }),
                        Some((h, o)),
                    ) if r.last().0 <= LAST_PORT && other == o && other_range == h => {}
                    (Ok(()), None) if r.last().0 <= LAST_PORT => {
                        self.ports.push((r, owner.to_owned()));
                    }
                    _ => panic!("ports_at({r:?}): {result:?} (held: {:?})", self.ports),
                }
                result
            }
            Op::ReleasePortsHeld(i) => match self.ports.get(i) {
                Some(&(r, _)) => self.release_ports(p, r),
                None => Ok(()),
            },
            Op::ReleasePorts(b, s) => self.release_ports(p, range(b, s)),
            Op::ReleasePortsWider(i, lo, hi) => match self.ports.get(i) {
                Some(&(r, _)) => {
                    let wider = GuestRange::inclusive(
                        GuestAddress(r.start().0.saturating_sub(lo)),
                        GuestAddress(r.last().0.saturating_add(hi)),
                    )
                    .unwrap();
                    self.release_ports(p, wider)
                }
                None => Ok(()),
            },
            Op::Transaction(ref ops, fail) => {
                // The same operations outside a transaction, on a copy.
                let mut twin = p.clone();
                let mut twin_model = self.clone();
                for (n, op) in ops.iter().enumerate() {
                    let _ = twin_model.step(&mut twin, op, &format!("{owner}.{n}"));
                }
                let before = state(p);
                let mut inner = self.clone();
                let result = p.transaction(|p| {
                    for (n, op) in ops.iter().enumerate() {
                        let _ = inner.step(p, op, &format!("{owner}.{n}"));
                    }
                    if fail { Err(Error::NoIrqs) } else { Ok(()) }
                });
                if result.is_ok() {
                    assert_eq!(state(p), state(&twin), "{op:?} kept other than it did");
                    *self = inner;
                } else {
                    assert_eq!(state(p), before, "{op:?} failed but changed the placer");
                }
                result
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 256 }))]

    #[test]
    fn placer_ops_are_all_or_nothing(ops in proptest::collection::vec(op(), 1..40)) {
        let layout = Layout::x86_64().ram(GIB).hotplug(GIB).build().unwrap();
        let mut p = Platform::x86_64().placer(&layout).unwrap();
        // The platform's reservations are held from the start, each as it was taken.
        let held: Vec<GuestRange> = p.allocations().map(|(_, r)| r).collect();
        // So are what KVM's in-kernel devices use: the timer's GSIs and their ports.
        let irqs: BTreeMap<u32, String> = (0..=LAST_GSI)
            .filter_map(|i| p.irq_owner(i).map(|o| (i, o.to_owned())))
            .collect();
        let ports: Vec<(GuestRange, String)> =
            p.port_allocations().map(|(o, r)| (r, o.to_owned())).collect();
        prop_assert_eq!(irqs.keys().copied().collect::<Vec<_>>(), [0, 2]);
        prop_assert_eq!(ports.len(), Platform::x86_64().kernel_ports().len());
        let mut model = Model { layout, held, irqs, ports };
        for (n, op) in ops.iter().enumerate() {
            let before = state(&p);
            let result = model.step(&mut p, op, &format!("o{n}"));
            if result.is_err() {
                prop_assert_eq!(&state(&p), &before, "{:?} failed but changed the placer", op);
            }
            // What is held never overlaps; the model's interrupts and ports are the placer's.
            let (ranges, irqs, ports) = state(&p);
            let mut all: Vec<GuestRange> = ranges.iter().map(|&(_, r)| r).collect();
            all.sort();
            for pair in all.windows(2) {
                prop_assert!(!pair[0].overlaps(&pair[1]), "{:?} / {:?}", pair[0], pair[1]);
            }
            let model_irqs: Vec<Option<String>> =
                (0..=LAST_GSI + 1).map(|i| model.irqs.get(&i).cloned()).collect();
            prop_assert_eq!(irqs, model_irqs);
            let mut model_ports: Vec<(String, GuestRange)> =
                model.ports.iter().map(|(r, o)| (o.clone(), *r)).collect();
            model_ports.sort_by_key(|&(_, r)| r);
            prop_assert_eq!(ports, model_ports);
        }
    }
}
