//! A `Placer` (over the x86-64 or AArch64 preset with its platform, a preset layout without
//! one, or a custom layout of a few windows from the input) under a sequence of operations
//! decoded from the input: `place`, `take`, `take_in`, `release`, `irq`, `irq_at`,
//! `release_irq`, `ports_at`, `release_ports`, `owner_of`, `largest_free`, and transactions of
//! such operations that fail at their end or succeed. Compared with a model: the ranges held
//! as taken with their owners (the placer keeps their parts inside windows), the interrupts
//! held with their owners and the I/O ports held. Every answer, error included, must be the
//! model's; after every step the placer's allocations, interrupts and ports must be the
//! model's; a failed call (and a failed transaction) leaves them exactly as before; a
//! transaction that succeeds leaves what the same calls leave outside one. Before each call
//! that names an owner, the same call under `PlacerAllocators::RESERVED_OWNER` is refused
//! (`Error::OwnerNameReserved`) and changes nothing, whatever the placer holds. Nothing panics.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use memvisor_fuzz::Input;
use memvisor_space::{
    Error, GuestRange, Layout, Placer, PlacerAllocators, Platform, Window, WindowKind,
};
use vm_memory::GuestAddress;

const PAGE: u64 = 4096;
const GIB: u64 = 1 << 30;
/// Steps per input, operations per transaction, windows of a custom layout.
const MAX_STEPS: usize = 200;
const MAX_IN_TRANSACTION: u64 = 8;
const MAX_WINDOWS: u64 = 6;

const KINDS: [WindowKind; 5] = [
    WindowKind::Ram,
    WindowKind::Device,
    WindowKind::Hotplug,
    WindowKind::Dax,
    WindowKind::Reserved,
];

/// Interrupts as the model holds them.
#[derive(Clone, Debug)]
struct Irqs {
    first: u32,
    last: u32,
    legacy: &'static [u32],
    owners: BTreeMap<u32, String>,
}

/// What the placer holds.
#[derive(Clone, Debug)]
struct Model {
    windows: Vec<Window>,
    /// Ranges as placed or taken, with their owners.
    held: Vec<(GuestRange, String)>,
    irqs: Option<Irqs>,
    /// The port space and the ports held.
    ports: Option<(GuestRange, Vec<(GuestRange, String)>)>,
}

/// Everything the placer shows: allocations by window, interrupt owners, ports.
type State = (
    Vec<(String, GuestRange)>,
    Vec<(u32, Option<String>)>,
    Vec<(String, GuestRange)>,
);

impl Model {
    /// The parts of held ranges inside window `w`, by address: (part, range as taken, owner).
    fn parts_in(&self, w: &Window) -> Vec<(GuestRange, GuestRange, &str)> {
        let mut parts: Vec<_> = self
            .held
            .iter()
            .filter_map(|(r, o)| w.range().intersection(r).map(|p| (p, *r, o.as_str())))
            .collect();
        parts.sort_by_key(|&(p, _, _)| p);
        parts
    }

    /// The free ranges of window `w`, by address.
    fn gaps(&self, w: &Window) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        let mut at = Some(w.start().0);
        for (p, _, _) in self.parts_in(w) {
            if let Some(a) = at
                && a < p.start().0
            {
                gaps.push((a, p.start().0 - 1));
            }
            at = p.last().0.checked_add(1);
        }
        if let Some(a) = at
            && a <= w.last_addr().0
        {
            gaps.push((a, w.last_addr().0));
        }
        gaps
    }

    fn largest_free(&self, kind: WindowKind) -> u64 {
        self.windows
            .iter()
            .filter(|w| w.kind() == kind)
            .flat_map(|w| self.gaps(w))
            .map(|(a, b)| u128::from(b - a) + 1)
            .max()
            .map_or(0, |s| u64::try_from(s).unwrap_or(u64::MAX))
    }

    /// The lowest held part in window `w` that overlaps `r`: its range as taken and owner.
    fn clash_in(&self, w: &Window, r: GuestRange) -> Option<(GuestRange, String)> {
        self.parts_in(w)
            .into_iter()
            .find(|(p, _, _)| p.overlaps(&r))
            .map(|(_, taken, o)| (taken, o.to_owned()))
    }

    fn state(&self) -> State {
        // Each range once, as taken, by its first part inside a window.
        let mut firsts: Vec<(GuestRange, String, GuestRange)> = self
            .held
            .iter()
            .filter_map(|(r, o)| {
                let first = self
                    .windows
                    .iter()
                    .find_map(|w| w.range().intersection(r))?;
                Some((first, o.clone(), *r))
            })
            .collect();
        firsts.sort_by_key(|&(first, _, _)| first);
        let ranges = firsts.into_iter().map(|(_, o, r)| (o, r)).collect();
        let irqs = irq_numbers(self.irqs.as_ref().map(|i| (i.first, i.last)))
            .map(|n| {
                let owner = self.irqs.as_ref().and_then(|i| i.owners.get(&n)).cloned();
                (n, owner)
            })
            .collect();
        let mut ports: Vec<_> = self
            .ports
            .iter()
            .flat_map(|(_, held)| held.iter().map(|(r, o)| (o.clone(), *r)))
            .collect();
        ports.sort_by_key(|&(_, r)| r);
        (ranges, irqs, ports)
    }
}

/// The interrupt numbers checked: the range and one past each end (and a few when there is
/// none).
fn irq_numbers(range: Option<(u32, u32)>) -> impl Iterator<Item = u32> {
    let (first, last) = range.unwrap_or((0, 8));
    first.saturating_sub(1)..=last.saturating_add(1)
}

fn state(p: &Placer, range: Option<(u32, u32)>) -> State {
    let ranges = p.allocations().map(|(o, r)| (o.to_owned(), r)).collect();
    let irqs = irq_numbers(range)
        .map(|n| (n, p.irq_owner(n).map(str::to_owned)))
        .collect();
    let ports = p
        .port_allocations()
        .map(|(o, r)| (o.to_owned(), r))
        .collect();
    (ranges, irqs, ports)
}

/// One operation, decoded.
#[derive(Clone, Debug)]
enum Op {
    Place(WindowKind, u64, u64),
    Take(GuestRange),
    TakeIn(WindowKind, GuestRange),
    Release(GuestRange),
    Irq,
    IrqAt(u32),
    ReleaseIrq(u32),
    PortsAt(GuestRange),
    ReleasePorts(GuestRange),
    OwnerOf(u64),
    LargestFree(WindowKind),
    Transaction(Vec<Op>, bool),
}

/// An address near something the placer or the model knows: a window's edge, a held range's
/// edge, or any address.
fn address(input: &mut Input<'_>, m: &Model) -> u64 {
    let base = match input.u8() % 4 {
        0 if !m.windows.is_empty() => {
            let w = &m.windows[input.below(m.windows.len() as u64) as usize];
            if input.u8().is_multiple_of(2) {
                w.start().0
            } else {
                w.last_addr().0.wrapping_add(1)
            }
        }
        1 if !m.held.is_empty() => {
            let (r, _) = m.held[input.below(m.held.len() as u64) as usize];
            if input.u8().is_multiple_of(2) {
                r.start().0
            } else {
                r.last().0.wrapping_add(1)
            }
        }
        2 => return input.u64(),
        _ => 0xfec0_0000,
    };
    // A few pages either way, or a few bytes.
    let off = i64::from(input.u8() as i8);
    if input.u8().is_multiple_of(4) {
        base.wrapping_add_signed(off)
    } else {
        base.wrapping_add_signed(off * PAGE as i64)
    }
}

fn size(input: &mut Input<'_>) -> u64 {
    match input.u8() % 4 {
        0 => input.size(),
        _ => (u64::from(input.u8()) + 1) * PAGE,
    }
}

/// A range: `None` if the input gives none (zero size or past the top).
fn range(input: &mut Input<'_>, m: &Model) -> Option<GuestRange> {
    let start = address(input, m);
    let size = size(input);
    GuestRange::new(GuestAddress(start), size).ok()
}

fn held_or(input: &mut Input<'_>, m: &Model) -> Option<GuestRange> {
    match input.u8() % 4 {
        0 | 1 if !m.held.is_empty() => Some(m.held[input.below(m.held.len() as u64) as usize].0),
        2 if !m.held.is_empty() => {
            // A held range widened or narrowed by a page at either end.
            let (r, _) = m.held[input.below(m.held.len() as u64) as usize];
            let lo = r
                .start()
                .0
                .wrapping_add_signed(i64::from(input.u8() % 3) - 1);
            let hi = r
                .last()
                .0
                .wrapping_add_signed(i64::from(input.u8() % 3) - 1);
            GuestRange::inclusive(GuestAddress(lo), GuestAddress(hi)).ok()
        }
        _ => range(input, m),
    }
}

fn ports(input: &mut Input<'_>, m: &Model) -> Option<GuestRange> {
    let held = m.ports.as_ref().map(|(_, h)| h.as_slice()).unwrap_or(&[]);
    match input.u8() % 4 {
        0 if !held.is_empty() => Some(held[input.below(held.len() as u64) as usize].0),
        1 if !held.is_empty() => {
            let (r, _) = held[input.below(held.len() as u64) as usize];
            let lo = r
                .start()
                .0
                .wrapping_add_signed(i64::from(input.u8() % 5) - 2);
            let hi = r
                .last()
                .0
                .wrapping_add_signed(i64::from(input.u8() % 5) - 2);
            GuestRange::inclusive(GuestAddress(lo), GuestAddress(hi)).ok()
        }
        2 => GuestRange::new(GuestAddress(input.u64()), input.size()).ok(),
        _ => {
            let base = [0x2f8u64, 0x3f8, 0x60, 0xfff0][usize::from(input.u8() % 4)];
            let start = base + u64::from(input.u8() % 32);
            GuestRange::new(GuestAddress(start), u64::from(input.u8() % 24) + 1).ok()
        }
    }
}

fn irq_number(input: &mut Input<'_>, m: &Model) -> u32 {
    match (input.u8() % 4, &m.irqs) {
        (0, Some(i)) if !i.owners.is_empty() => {
            let n = input.below(i.owners.len() as u64) as usize;
            *i.owners.keys().nth(n).expect("in range")
        }
        (1, _) => input.u32(),
        (_, Some(i)) => i.first.saturating_sub(2) + u32::from(input.u8()) % (i.last - i.first + 5),
        (_, None) => u32::from(input.u8()),
    }
}

fn decode(input: &mut Input<'_>, m: &Model, nested: bool) -> Option<Op> {
    let kind = KINDS[usize::from(input.u8()) % KINDS.len()];
    Some(match input.u8() % 13 {
        0 | 1 => {
            let align = match input.u8() % 4 {
                0 => input.u64(),
                _ => 1 << (input.u8() % 34),
            };
            Op::Place(kind, size(input), align)
        }
        2 => Op::Take(range(input, m)?),
        3 => Op::TakeIn(kind, range(input, m)?),
        4 | 5 => Op::Release(held_or(input, m)?),
        6 => Op::Irq,
        7 => Op::IrqAt(irq_number(input, m)),
        8 => Op::ReleaseIrq(irq_number(input, m)),
        9 => Op::PortsAt(ports(input, m)?),
        10 => Op::ReleasePorts(ports(input, m)?),
        11 => match input.u8() % 2 {
            0 => Op::OwnerOf(address(input, m)),
            _ => Op::LargestFree(kind),
        },
        _ if nested => return None,
        _ => {
            let n = input.below(MAX_IN_TRANSACTION + 1);
            let fail = input.u8().is_multiple_of(2);
            // The operations decode against the state before the transaction.
            let ops = (0..n).filter_map(|_| decode(input, m, true)).collect();
            Op::Transaction(ops, fail)
        }
    })
}

/// `op` under the reserved windows' owner name, if it names an owner.
fn under_reserved_name(p: &mut Placer, op: &Op) -> Option<Result<(), Error>> {
    let owner = PlacerAllocators::RESERVED_OWNER;
    Some(match *op {
        Op::Place(kind, size, align) => p.place(kind, size, align, owner).map(drop),
        Op::Take(r) => p.take(r, owner),
        Op::TakeIn(kind, r) => p.take_in(kind, r, owner),
        Op::Irq => p.irq(owner).map(drop),
        Op::IrqAt(n) => p.irq_at(n, owner).map(drop),
        Op::PortsAt(r) => p.ports_at(r, owner),
        _ => return None,
    })
}

/// Runs `op` on the placer and the model, checking the placer's answer against the model's.
fn step(p: &mut Placer, m: &mut Model, op: &Op, owner: &str) -> Result<(), Error> {
    match *op {
        Op::Place(kind, size, align) => {
            let result = p.place(kind, size, align, owner);
            let expected = if size == 0 || !align.is_power_of_two() {
                None
            } else {
                m.windows
                    .iter()
                    .filter(|w| w.kind() == kind)
                    .flat_map(|w| m.gaps(w))
                    .find_map(|(a, b)| {
                        let start = a.checked_next_multiple_of(align)?;
                        let last = start.checked_add(size - 1)?;
                        (last <= b).then_some(start)
                    })
            };
            match (&result, expected) {
                (Ok(r), Some(start)) => {
                    assert_eq!(
                        (r.start().0, r.last().0),
                        (start, start + (size - 1)),
                        "{op:?}"
                    );
                    m.held.push((*r, owner.to_owned()));
                }
                (Err(Error::NothingToPlace { owner: o }), None) if size == 0 && o == owner => {}
                (Err(Error::InvalidAlignment { align: a }), None)
                    if size != 0 && !align.is_power_of_two() && *a == align => {}
                (
                    Err(Error::NoRoom {
                        window,
                        largest_free,
                        ..
                    }),
                    None,
                ) if size != 0 && align.is_power_of_two() => {
                    assert_eq!(*window, kind);
                    assert_eq!(*largest_free, m.largest_free(kind), "{op:?}");
                }
                _ => panic!("{op:?}: {result:?}, the model places at {expected:?}"),
            }
            result.map(drop)
        }
        Op::Take(r) => {
            let result = p.take(r, owner);
            let crossed: Vec<&Window> = m
                .windows
                .iter()
                .filter(|w| w.range().overlaps(&r))
                .collect();
            let clash = crossed.iter().find_map(|w| m.clash_in(w, r));
            match (&result, crossed.is_empty(), clash) {
                (Err(Error::OutsideWindows { range, .. }), true, _) if *range == r => {}
                (
                    Err(Error::Taken {
                        other,
                        other_range,
                        range,
                        ..
                    }),
                    false,
                    Some((t, o)),
                ) if *other == o && *other_range == t && *range == r => {}
                (Ok(()), false, None) => m.held.push((r, owner.to_owned())),
                (_, _, clash) => panic!("{op:?}: {result:?}, the model clashes with {clash:?}"),
            }
            result
        }
        Op::TakeIn(kind, r) => {
            let result = p.take_in(kind, r, owner);
            let window = m
                .windows
                .iter()
                .find(|w| w.kind() == kind && w.range().contains_range(&r));
            let clash = window.and_then(|w| m.clash_in(w, r));
            match (&result, window, clash) {
                (
                    Err(Error::NotInWindow {
                        window: k, range, ..
                    }),
                    None,
                    _,
                ) if *k == kind && *range == r => {}
                (
                    Err(Error::Taken {
                        other, other_range, ..
                    }),
                    Some(_),
                    Some((t, o)),
                ) if *other == o && *other_range == t => {}
                (Ok(()), Some(_), None) => m.held.push((r, owner.to_owned())),
                (_, w, clash) => {
                    panic!("{op:?}: {result:?}, the model's window {w:?}, clash {clash:?}")
                }
            }
            result
        }
        Op::Release(r) => {
            let result = p.release(r);
            let index = m.held.iter().position(|(h, _)| *h == r);
            match (&result, index) {
                (Ok(()), Some(i)) => {
                    m.held.remove(i);
                }
                (Err(Error::NotPlaced { range }), None) if *range == r => {}
                _ => panic!("{op:?}: {result:?}, held by the model: {index:?}"),
            }
            result
        }
        Op::Irq => {
            let result = p.irq(owner);
            match (&result, &mut m.irqs) {
                (Err(Error::NoIrqs), None) => {}
                (result, Some(i)) => {
                    let lowest = (i.first..=i.last)
                        .find(|n| !i.legacy.contains(n) && !i.owners.contains_key(n));
                    match (result, lowest) {
                        (Ok(n), Some(l)) if *n == l => {
                            i.owners.insert(l, owner.to_owned());
                        }
                        (Err(Error::NoFreeIrq { first, last, .. }), None)
                            if (*first, *last) == (i.first, i.last) => {}
                        _ => panic!("{op:?}: {result:?}, the model's lowest free {lowest:?}"),
                    }
                }
                _ => panic!("{op:?}: {result:?} without interrupts"),
            }
            result.map(drop)
        }
        Op::IrqAt(n) => {
            let result = p.irq_at(n, owner);
            match (&result, &mut m.irqs) {
                (Err(Error::NoIrqs), None) => {}
                (result, Some(i)) => match (result, i.owners.get(&n)) {
                    (Err(Error::IrqOutOfRange { irq, .. }), None)
                        if *irq == n && !(i.first..=i.last).contains(&n) => {}
                    (Err(Error::IrqTaken { irq, other, .. }), Some(o))
                        if *irq == n && other == o => {}
                    (Ok(got), None) if *got == n && (i.first..=i.last).contains(&n) => {
                        i.owners.insert(n, owner.to_owned());
                    }
                    (_, o) => panic!("{op:?}: {result:?}, held by {o:?} in the model"),
                },
                _ => panic!("{op:?}: {result:?} without interrupts"),
            }
            result.map(drop)
        }
        Op::ReleaseIrq(n) => {
            let result = p.release_irq(n);
            match (&result, &mut m.irqs) {
                (Err(Error::NoIrqs), None) => {}
                (result, Some(i)) => match (result, i.owners.contains_key(&n)) {
                    (Err(Error::IrqOutOfRange { irq, .. }), false)
                        if *irq == n && !(i.first..=i.last).contains(&n) => {}
                    (Err(Error::IrqNotTaken { irq, .. }), false)
                        if *irq == n && (i.first..=i.last).contains(&n) => {}
                    (Ok(()), true) => {
                        i.owners.remove(&n);
                    }
                    (_, held) => panic!("{op:?}: {result:?}, held in the model: {held}"),
                },
                _ => panic!("{op:?}: {result:?} without interrupts"),
            }
            result
        }
        Op::PortsAt(r) => {
            let result = p.ports_at(r, owner);
            match (&result, &mut m.ports) {
                (Err(Error::NoIoPorts), None) => {}
                (result, Some((space, held))) => {
                    let clash = held
                        .iter()
                        .filter(|(h, _)| h.overlaps(&r))
                        .min_by_key(|(h, _)| *h)
                        .cloned();
                    match (result, space.contains_range(&r), clash) {
                        (Err(Error::PortsOutOfRange { ports: x, space: s }), false, _)
                            if *x == r && s == space => {}
                        (
                            Err(Error::Taken {
                                other, other_range, ..
                            }),
                            true,
                            Some((t, o)),
                        ) if *other == o && *other_range == t => {}
                        (Ok(()), true, None) => held.push((r, owner.to_owned())),
                        (_, _, clash) => panic!("{op:?}: {result:?}, the model's clash {clash:?}"),
                    }
                }
                _ => panic!("{op:?}: {result:?} without ports"),
            }
            result
        }
        Op::ReleasePorts(r) => {
            let result = p.release_ports(r);
            match (&result, &mut m.ports) {
                (Err(Error::NoIoPorts), None) => {}
                (result, Some((_, held))) => {
                    let index = held.iter().position(|(h, _)| *h == r);
                    match (result, index) {
                        (Ok(()), Some(i)) => {
                            held.remove(i);
                        }
                        (Err(Error::NotPlaced { range }), None) if *range == r => {}
                        _ => panic!("{op:?}: {result:?}, held by the model: {index:?}"),
                    }
                }
                _ => panic!("{op:?}: {result:?} without ports"),
            }
            result
        }
        Op::OwnerOf(addr) => {
            let expected = m
                .windows
                .iter()
                .filter(|w| w.range().contains(GuestAddress(addr)))
                .flat_map(|w| m.parts_in(w))
                .find(|(p, _, _)| p.contains(GuestAddress(addr)))
                .map(|(_, t, o)| (o.to_owned(), t));
            let got = p
                .owner_of(GuestAddress(addr))
                .map(|(o, r)| (o.to_owned(), r));
            assert_eq!(got, expected, "{op:?}");
            Ok(())
        }
        Op::LargestFree(kind) => {
            assert_eq!(p.largest_free(kind), m.largest_free(kind), "{op:?}");
            Ok(())
        }
        Op::Transaction(ref ops, fail) => {
            let irq_range = m.irqs.as_ref().map(|i| (i.first, i.last));
            // The same calls outside a transaction, on copies.
            let mut twin = p.clone();
            let mut twin_model = m.clone();
            for (n, op) in ops.iter().enumerate() {
                let _ = step(&mut twin, &mut twin_model, op, &format!("{owner}.{n}"));
            }
            let before = state(p, irq_range);
            let mut inner = m.clone();
            let result = p.transaction(|p| {
                for (n, op) in ops.iter().enumerate() {
                    let _ = step(p, &mut inner, op, &format!("{owner}.{n}"));
                }
                if fail { Err(Error::NoIrqs) } else { Ok(()) }
            });
            match result {
                Ok(()) => {
                    assert_eq!(state(p, irq_range), state(&twin, irq_range), "{op:?}");
                    *m = inner;
                }
                Err(_) => assert_eq!(state(p, irq_range), before, "{op:?} failed"),
            }
            result
        }
    }
}

/// The placer and model the input asks for.
fn setup(input: &mut Input<'_>) -> (Placer, Model) {
    let custom = |input: &mut Input<'_>| {
        let n = input.below(MAX_WINDOWS) + 1;
        let windows: Vec<Window> = (0..n)
            .filter_map(|_| {
                let kind = KINDS[usize::from(input.u8()) % KINDS.len()];
                let start = match input.u8() % 2 {
                    0 => input.u64(),
                    _ => u64::from(input.u16()) * PAGE,
                };
                Window::new(kind, GuestAddress(start), size(input)).ok()
            })
            .collect();
        Layout::new(GuestAddress(u64::MAX), windows).ok()
    };
    let (layout, platform) = match input.u8() % 5 {
        0 => (
            Layout::aarch64().ram(GIB).hotplug(GIB).dax(GIB).build(),
            Some(Platform::aarch64()),
        ),
        1 => (Layout::x86_64().ram(GIB).build(), None),
        2 => match custom(input) {
            Some(l) => (Ok(l), None),
            None => (Layout::x86_64().ram(GIB).build(), None),
        },
        _ => (
            Layout::x86_64().ram(GIB).hotplug(GIB).dax(GIB).build(),
            Some(Platform::x86_64()),
        ),
    };
    let layout = layout.expect("preset layouts build");
    let placer = match &platform {
        Some(pl) => pl.placer(&layout).expect("a preset's own layout"),
        None => layout.placer(),
    };
    // The irqs and ports of the placer: a layout's placer has its preset's interrupts, and
    // holds from the start what KVM's in-kernel devices use (x86-64: the timer's GSIs, the
    // PICs', PIT's and ELCR's ports), as held.
    let irq_platform = platform
        .clone()
        .or_else(|| layout.arch().map(Platform::new));
    let irqs = irq_platform.as_ref().map(|pl| Irqs {
        first: *pl.irq_range().start(),
        last: *pl.irq_range().end(),
        legacy: pl.legacy_irqs(),
        owners: pl
            .irq_range()
            .filter_map(|n| placer.irq_owner(n).map(|o| (n, o.to_owned())))
            .collect(),
    });
    let ports = irq_platform.as_ref().and_then(Platform::io_ports).map(|s| {
        let held: Vec<(GuestRange, String)> = placer
            .port_allocations()
            .map(|(o, r)| (r, o.to_owned()))
            .collect();
        (s, held)
    });
    // What the platform took is held from the start, as taken.
    let mut held: Vec<(GuestRange, String)> = placer
        .allocations()
        .map(|(o, r)| (r, o.to_owned()))
        .collect();
    held.sort();
    held.dedup();
    let model = Model {
        windows: layout.windows().to_vec(),
        held,
        irqs,
        ports,
    };
    (placer, model)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let (mut p, mut m) = setup(&mut input);
    assert_eq!(state(&p, None).0, m.state().0, "the placer as made");
    let irq_range = m.irqs.as_ref().map(|i| (i.first, i.last));
    for n in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        let Some(op) = decode(&mut input, &m, false) else {
            continue;
        };
        let before = state(&p, irq_range);
        if let Some(refused) = under_reserved_name(&mut p, &op) {
            assert!(
                matches!(&refused, Err(Error::OwnerNameReserved { owner })
                    if owner == PlacerAllocators::RESERVED_OWNER),
                "{op:?} under the reserved name: {refused:?}"
            );
            assert_eq!(
                state(&p, irq_range),
                before,
                "{op:?} under the reserved name"
            );
        }
        let result = step(&mut p, &mut m, &op, &format!("o{n}"));
        let after = state(&p, irq_range);
        if result.is_err() {
            assert_eq!(after, before, "{op:?} failed but changed the placer");
        }
        assert_eq!(after, m.state(), "after {op:?}");
    }
});
