//! The next snapshot of a change is built before any listener hears of it. A listener refusing
//! the change then leaves nothing of it behind: no snapshot holding the region, no memory-slot
//! number, no hotplug slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use memvisor_space::{
    AddressSpace, Error, Layout, ListenerError, Region, RegionEvent, RegionSpec, WindowKind,
};
use vm_memory::GuestAddress;

const MIB: u64 = 1 << 20;

/// A space of two RAM regions whose listener refuses every change while `refuse` is set.
fn space(hotplug: bool) -> (AddressSpace, Arc<AtomicBool>) {
    let mut layout = Layout::x86_64().ram(1 << 30);
    if hotplug {
        layout = layout.hotplug(1 << 30);
    }
    let ram = |i: u64| RegionSpec::ram(GuestAddress(i * 2 * MIB), 2 * MIB);
    let (space, _) = AddressSpace::back(layout.build().unwrap(), (0..2).map(ram)).unwrap();
    let refuse = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&refuse);
    space
        .add_listener(Arc::new(
            move |_: &RegionEvent<'_>| -> Result<(), ListenerError> {
                if flag.load(Ordering::SeqCst) {
                    Err("refused".into())
                } else {
                    Ok(())
                }
            },
        ))
        .unwrap();
    (space, refuse)
}

#[test]
fn refused_insertion_leaves_no_holder_and_no_slot_number() {
    let (space, refuse) = space(false);
    let before = space.snapshot();
    let region = Arc::new(Region::plan(RegionSpec::ram(GuestAddress(8 * MIB), 2 * MIB)).unwrap());
    let e = space.insert_region(Arc::clone(&region)).unwrap_err();
    assert!(matches!(e, Error::Listener { .. }), "{e}");
    assert!(Arc::ptr_eq(&before, &space.snapshot()));
    assert_eq!(Arc::strong_count(&region), 1, "nothing holds the region");
    refuse.store(false, Ordering::SeqCst);
    space.insert_region(Arc::clone(&region)).unwrap();
    // The number the refused insertion took was given back: the next one is the third.
    assert_eq!(space.snapshot().slot(GuestAddress(8 * MIB)), Some(2));
}

#[test]
fn refused_removal_leaves_the_region_in_place() {
    let (space, refuse) = space(false);
    let before = space.snapshot();
    let e = space.remove_region(GuestAddress(0), 2 * MIB).unwrap_err();
    assert!(matches!(e, Error::Listener { .. }), "{e}");
    assert!(Arc::ptr_eq(&before, &space.snapshot()));
    drop(before);
    refuse.store(false, Ordering::SeqCst);
    let removed = space.remove_region(GuestAddress(0), 2 * MIB).unwrap();
    // No snapshot built for the refused removal holds it.
    assert_eq!(Arc::strong_count(&removed), 1);
}

#[test]
fn refused_plug_gives_the_hotplug_slot_back() {
    let (space, refuse) = space(true);
    let window = space
        .layout()
        .windows_of(WindowKind::Hotplug)
        .next()
        .unwrap()
        .start();
    let spec = RegionSpec::ram(window, 2 * MIB).with_hotplug(true);
    let before = space.snapshot();
    let e = space.plug(spec.clone()).map(|_| ()).unwrap_err();
    assert!(matches!(e, Error::Listener { .. }), "{e}");
    assert!(Arc::ptr_eq(&before, &space.snapshot()));
    refuse.store(false, Ordering::SeqCst);
    let (region, _) = space.plug(spec).unwrap();
    assert_eq!(
        Arc::strong_count(&region),
        2,
        "the space's snapshot and this one"
    );
}
