//! Every call of the placer that takes a range, at its edges: the whole 2^64 space, a range
//! ending at `u64::MAX`, one straddling a window's end or the port space's end. Each answers
//! the truth, or an error naming what is wrong with the range, and changes nothing when it
//! refuses.

use memvisor_space::vm_memory::GuestAddress;
use memvisor_space::{Error, GuestRange, Placer, Platform, WindowKind};

fn range(base: u64, size: u64) -> GuestRange {
    GuestRange::new(GuestAddress(base), size).unwrap()
}

fn whole() -> GuestRange {
    GuestRange::inclusive(GuestAddress(0), GuestAddress(u64::MAX)).unwrap()
}

fn to_the_top() -> GuestRange {
    GuestRange::inclusive(GuestAddress(0xfff8), GuestAddress(u64::MAX)).unwrap()
}

fn x86_64() -> Placer {
    let platform = Platform::x86_64();
    platform
        .placer(&platform.layout().ram(1 << 30).build().unwrap())
        .unwrap()
}

/// Ranges held, with their owners.
type Held = Vec<(String, GuestRange)>;

/// The ranges and the ports a placer holds.
fn shown(p: &Placer) -> (Held, Held) {
    (
        p.allocations().map(|(o, r)| (o.to_owned(), r)).collect(),
        p.port_allocations()
            .map(|(o, r)| (o.to_owned(), r))
            .collect(),
    )
}

#[test]
fn ports_past_the_port_space_are_refused_naming_the_space() {
    let mut p = x86_64();
    let before = shown(&p);
    let space = Platform::x86_64().io_ports().unwrap();
    assert_eq!(space, range(0, 0x1_0000));
    for ports in [whole(), to_the_top(), range(0xfffc, 8), range(0x1_0000, 1)] {
        let e = p.ports_at(ports, "com").unwrap_err();
        assert!(
            matches!(&e, Error::PortsOutOfRange { ports: x, space: s } if *x == ports && *s == space),
            "{ports}: {e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("I/O ports {ports} pass the platform's port space [0x0, 0xffff]")
        );
        // Never placed, so not given back either.
        assert!(matches!(
            p.release_ports(ports),
            Err(Error::NotPlaced { range }) if range == ports
        ));
    }
    assert_eq!(shown(&p), before);
    // A platform without ports says so, whatever the range.
    let arm = Platform::aarch64();
    let mut q = arm
        .placer(&arm.layout().ram(1 << 30).build().unwrap())
        .unwrap();
    for ports in [whole(), range(0x3f8, 8)] {
        assert!(matches!(q.ports_at(ports, "com"), Err(Error::NoIoPorts)));
        assert!(matches!(q.release_ports(ports), Err(Error::NoIoPorts)));
    }
    // The last port is a port.
    p.ports_at(range(0xffff, 1), "last").unwrap();
    p.release_ports(range(0xffff, 1)).unwrap();
}

#[test]
fn window_calls_over_the_whole_space_and_its_top() {
    let mut p = x86_64();
    let before = shown(&p);
    for r in [whole(), to_the_top()] {
        assert!(
            matches!(p.take_in(WindowKind::Device, r, "x"), Err(Error::NotInWindow { range, .. }) if range == r)
        );
        assert!(matches!(p.release(r), Err(Error::NotPlaced { range }) if range == r));
        assert_eq!(shown(&p), before);
    }
    // Taken across every window: the platform's reservations are in the way.
    assert!(matches!(p.take(whole(), "x"), Err(Error::Taken { .. })));
    assert_eq!(shown(&p), before);
    // On a placer with nothing held the whole space is taken, listed and given back whole.
    let layout = Platform::x86_64().layout().ram(1 << 30).build().unwrap();
    let mut empty = layout.placer();
    let held = shown(&empty);
    let mut free = empty.clone();
    for (_, r) in held.0 {
        free.release(r).unwrap();
    }
    free.take(whole(), "all").unwrap();
    assert_eq!(free.allocations().collect::<Vec<_>>(), [("all", whole())]);
    assert_eq!(free.owner_of(GuestAddress(0)), Some(("all", whole())));
    free.release(whole()).unwrap();
    assert_eq!(free.allocations().count(), 0);
    // A range past every window at the top is outside them all.
    assert!(matches!(
        empty.take(range(u64::MAX - 0xfff, 0x1000), "x"),
        Err(Error::OutsideWindows { .. })
    ));
    // Straddling the device window's end into the reserved window: refused by kind.
    let straddle = range(0xfec0_0000 - 0x1000, 0x2000);
    assert!(matches!(
        empty.take_in(WindowKind::Device, straddle, "x"),
        Err(Error::NotInWindow { .. })
    ));
}

#[test]
fn take_reserved_over_the_whole_space_is_not_in_a_reserved_window() {
    let mut a = x86_64().into_allocators();
    for r in [whole(), to_the_top()] {
        assert!(matches!(
            a.take_reserved(r, "x"),
            Err(Error::NotInWindow { window: WindowKind::Reserved, range, .. }) if range == r
        ));
    }
}
