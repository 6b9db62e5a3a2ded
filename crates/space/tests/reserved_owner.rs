//! The owner name under which `Placer::into_allocators` holds a reserved window's free ranges
//! (`PlacerAllocators::RESERVED_OWNER`) is no caller's: a hold under it is always the
//! allocators' own, so a caller can neither make one (and later have a fixed device split it
//! as if it were reserved) nor be taken for one.

use memvisor_space::vm_memory::GuestAddress;
use memvisor_space::{Error, GuestRange, Placer, PlacerAllocators, Platform, WindowKind};

const RESERVED: &str = PlacerAllocators::RESERVED_OWNER;

fn range(base: u64, size: u64) -> GuestRange {
    GuestRange::new(GuestAddress(base), size).unwrap()
}

fn x86_64() -> Placer {
    let platform = Platform::x86_64();
    platform
        .placer(&platform.layout().ram(1 << 30).build().unwrap())
        .unwrap()
}

/// Ranges, interrupts and ports held, with their owners.
type Shown = (Vec<(String, GuestRange)>, Vec<Option<String>>, Vec<String>);

/// Everything a placer shows.
fn shown(p: &Placer) -> Shown {
    (
        p.allocations().map(|(o, r)| (o.to_owned(), r)).collect(),
        (0..24).map(|i| p.irq_owner(i).map(str::to_owned)).collect(),
        p.port_allocations()
            .map(|(o, r)| format!("{o} {r}"))
            .collect(),
    )
}

fn assert_refused<T: std::fmt::Debug>(what: &str, r: Result<T, Error>) {
    match r {
        Err(Error::OwnerNameReserved { owner }) => assert_eq!(owner, RESERVED, "{what}"),
        other => panic!("{what}: {other:?}"),
    }
}

#[test]
fn the_placer_refuses_the_reserved_owner_name_with_nothing_changed() {
    let mut p = x86_64();
    let before = shown(&p);
    // A free page of the reserved window (between the IOAPIC and the local APIC).
    let free = range(0xfed4_0000, 0x1000);
    assert_refused("take_in", p.take_in(WindowKind::Reserved, free, RESERVED));
    assert_refused("take", p.take(free, RESERVED));
    assert_refused(
        "place",
        p.place(WindowKind::Device, 0x1000, 0x1000, RESERVED),
    );
    assert_refused("irq", p.irq(RESERVED));
    assert_refused("irq_at", p.irq_at(9, RESERVED));
    assert_refused("ports_at", p.ports_at(range(0x3f8, 8), RESERVED));
    assert_eq!(shown(&p), before);
    assert_eq!(
        Error::OwnerNameReserved {
            owner: RESERVED.to_owned()
        }
        .to_string(),
        "the owner name \"reserved\" is kept for the holds on reserved windows' free ranges"
    );
    // Other names, "Reserved" and "reserved " among them, are a caller's.
    p.take_in(WindowKind::Reserved, free, "Reserved").unwrap();
    p.take(range(0xfed5_0000, 0x1000), "reserved ").unwrap();
}

/// Before the name was refused, a range a caller took in a reserved window under it was
/// handed over as a reserved hold: `take_reserved` then split a caller's range as if it were
/// free reserved space, and the caller's range could not be told from the window's hold.
#[test]
fn a_reserved_hold_in_the_allocators_is_always_the_allocators_own() {
    let mut p = x86_64();
    let device = range(0xfed4_0000, 0x4000);
    assert_refused("take_in", p.take_in(WindowKind::Reserved, device, RESERVED));
    p.take_in(WindowKind::Reserved, device, "vmgenid").unwrap();
    let mut allocators = p.into_allocators();
    // The caller's range keeps its owner and is not split for a fixed device.
    let e = allocators
        .take_reserved(range(0xfed4_1000, 0x1000), "tpm")
        .unwrap_err();
    assert!(
        matches!(&e, Error::Taken { other, other_range, .. }
            if other == "vmgenid" && *other_range == device),
        "{e:?}"
    );
    // Nor can a fixed device be recorded under the reserved name.
    let held = |a: &mut PlacerAllocators| -> Vec<(String, GuestRange)> {
        a.first_of(WindowKind::Reserved)
            .unwrap()
            .allocated()
            .map(|h| (h.tag.clone(), h.range.into()))
            .collect()
    };
    let before = held(&mut allocators);
    assert_refused(
        "take_reserved",
        allocators.take_reserved(range(0xfed5_0000, 0x1000), RESERVED),
    );
    assert_eq!(held(&mut allocators), before);
}
