//! Listeners that call back into the address space they listen to, from inside a change: the
//! change holds the writer lock until its listeners return, so such a call must come back
//! with an error instead of waiting forever for that lock; the change then ends as the listener's
//! answer says, and the space stays usable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use memvisor_space::{
    AddressSpace, ChangeKind, Error, Layout, ListenerError, Region, RegionEvent, RegionListener,
    RegionSpec,
};
use memvisor_testkit::watchdog::within;
use vm_memory::GuestAddress;

fn page() -> u64 {
    memvisor_vmem::page_size() as u64
}

fn planned(base: u64) -> Arc<Region> {
    Arc::new(Region::plan(RegionSpec::ram(GuestAddress(base), page())).unwrap())
}

fn space() -> AddressSpace {
    AddressSpace::plan(Layout::x86_64().ram(1 << 30).build().unwrap(), []).unwrap()
}

#[test]
fn listener_changing_its_own_space_gets_an_error_and_the_change_goes_on() {
    let space = space();
    let inner = Arc::new(Mutex::new(None));
    let (s, seen) = (space.clone(), Arc::clone(&inner));
    let listener: Arc<dyn RegionListener> = Arc::new(move |e: &RegionEvent<'_>| {
        if e.kind == ChangeKind::Inserted && e.region.base().0 == 0 {
            let results = [
                s.insert_region(planned(page())),
                s.remove_region(GuestAddress(0), page()).map(|_| ()),
                s.plug(RegionSpec::ram(GuestAddress(1 << 32), page()).with_hotplug(true))
                    .map(|_| ()),
            ];
            *seen.lock().unwrap() = Some(results.map(|r| r.map_err(|e| e.to_string())));
        }
        Ok(())
    });
    space.add_listener(Arc::clone(&listener)).unwrap();
    let s = space.clone();
    within("insert_region", Duration::from_secs(10), move || {
        s.insert_region(planned(0))
    })
    .unwrap();
    let results = inner.lock().unwrap().take().unwrap();
    for (result, op) in results
        .iter()
        .zip(["insert_region", "remove_region", "plug"])
    {
        assert_eq!(
            result.as_ref().unwrap_err(),
            &format!(
                "AddressSpace::{op} was called by a listener of the same address space during a change"
            )
        );
    }
    // Only the outer change was made, and the space takes further changes.
    assert_eq!(space.snapshot().len(), 1);
    assert_eq!(space.snapshot().generation(), 1);
    space.insert_region(planned(page())).unwrap();
    assert_eq!(space.snapshot().len(), 2);
    // The listener holds the space: taking it out ends the cycle.
    assert!(space.remove_listener(&listener).unwrap());
}

#[test]
fn listener_passing_the_reentry_error_on_refuses_the_change() {
    let space = space();
    let s = space.clone();
    let listener: Arc<dyn RegionListener> = Arc::new(move |e: &RegionEvent<'_>| {
        if e.kind == ChangeKind::Removed {
            // Puts a region back where one goes: refused, and so is the removal.
            s.insert_region(planned(2 * page()))?;
        }
        Ok(())
    });
    space.add_listener(Arc::clone(&listener)).unwrap();
    space.insert_region(planned(0)).unwrap();
    let s = space.clone();
    let err = within("remove_region", Duration::from_secs(10), move || {
        s.remove_region(GuestAddress(0), page())
    })
    .unwrap_err();
    let Error::Listener { base: 0, source } = &err else {
        panic!("{err}");
    };
    assert!(
        matches!(
            source.downcast_ref::<Error>(),
            Some(Error::ListenerReentry {
                op: "AddressSpace::insert_region"
            })
        ),
        "{source}"
    );
    assert_eq!(space.snapshot().len(), 1);
    space.snapshot().check_invariants();
    assert!(space.remove_listener(&listener).unwrap());
}

#[test]
fn listener_adding_or_removing_listeners_of_its_space_gets_an_error_and_the_change_goes_on() {
    let space = space();
    let first = Arc::new(AtomicBool::new(true));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s, once, results) = (space.clone(), Arc::clone(&first), Arc::clone(&seen));
    let me: Arc<Mutex<Option<Arc<dyn RegionListener>>>> = Arc::default();
    let mine = Arc::clone(&me);
    let listener: Arc<dyn RegionListener> = Arc::new(move |_: &RegionEvent<'_>| {
        // A listener that tries to take itself out, and to add another, on its first change.
        if once.swap(false, Ordering::SeqCst) {
            let me = mine.lock().unwrap().clone().unwrap();
            let other: Arc<dyn RegionListener> =
                Arc::new(|_: &RegionEvent<'_>| -> Result<(), ListenerError> { Ok(()) });
            let removed = s.remove_listener(&me).map_err(|e| e.to_string());
            let added = s.add_listener(other).map_err(|e| e.to_string());
            results.lock().unwrap().push((removed, added));
        }
        Ok::<(), ListenerError>(())
    });
    *me.lock().unwrap() = Some(Arc::clone(&listener));
    space.add_listener(Arc::clone(&listener)).unwrap();
    let s = space.clone();
    within("insert_region", Duration::from_secs(10), move || {
        s.insert_region(planned(0))
    })
    .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [(
            Err(
                "AddressSpace::remove_listener was called by a listener of the same address \
                 space during a change"
                    .to_owned()
            ),
            Err(
                "AddressSpace::add_listener was called by a listener of the same address \
                 space during a change"
                    .to_owned()
            )
        )]
    );
    // The change was made, nothing was added or taken out, and the space is usable.
    assert_eq!(space.snapshot().len(), 1);
    space.snapshot().check_invariants();
    me.lock().unwrap().take();
    assert!(space.remove_listener(&listener).unwrap());
    assert!(!space.remove_listener(&listener).unwrap(), "only once");
}

#[test]
fn listener_of_one_space_changes_another() {
    let (outer, inner) = (space(), space());
    let i = inner.clone();
    outer
        .add_listener(Arc::new(move |e: &RegionEvent<'_>| {
            if e.kind == ChangeKind::Inserted {
                i.insert_region(planned(e.region.base().0))?;
            }
            Ok(())
        }))
        .unwrap();
    let o = outer.clone();
    within("insert_region", Duration::from_secs(10), move || {
        o.insert_region(planned(0))
    })
    .unwrap();
    assert_eq!(inner.snapshot().len(), 1);
    assert_eq!(outer.snapshot().len(), 1);
}
