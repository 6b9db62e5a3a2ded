//! Listeners that call back into the address space they listen to, from inside a change: the
//! change holds the writer lock until its listeners return, so such a call must come back
//! with an error (or, for the methods that return none, a panic) instead of waiting forever
//! for that lock; the change then ends as the listener's answer says, and the space stays
//! usable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use memvisor_space::{
    AddressSpace, ChangeKind, Error, Layout, ListenerError, Region, RegionEvent, RegionListener,
    RegionSpec,
};
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

/// Runs `f` on another thread and fails the test if it has not returned within 10 s.
fn within_time<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(value)) => value,
        Ok(Err(payload)) => std::panic::resume_unwind(payload),
        Err(_) => panic!("{what} did not return: the space waits for itself"),
    }
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
    space.add_listener(Arc::clone(&listener));
    let s = space.clone();
    within_time("insert_region", move || s.insert_region(planned(0))).unwrap();
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
    assert!(space.remove_listener(&listener));
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
    space.add_listener(Arc::clone(&listener));
    space.insert_region(planned(0)).unwrap();
    let s = space.clone();
    let err = within_time("remove_region", move || {
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
    assert!(space.remove_listener(&listener));
}

#[test]
fn listener_adding_or_removing_listeners_of_its_space_panics_and_cancels() {
    let space = space();
    let first = Arc::new(AtomicBool::new(true));
    let (s, once) = (space.clone(), Arc::clone(&first));
    let me: Arc<Mutex<Option<Arc<dyn RegionListener>>>> = Arc::default();
    let mine = Arc::clone(&me);
    let listener: Arc<dyn RegionListener> = Arc::new(move |_: &RegionEvent<'_>| {
        // One shot: a listener that takes itself out on its first change.
        if once.swap(false, Ordering::SeqCst) {
            let me = mine.lock().unwrap().take().unwrap();
            s.remove_listener(&me);
        }
        Ok::<(), ListenerError>(())
    });
    *me.lock().unwrap() = Some(Arc::clone(&listener));
    space.add_listener(Arc::clone(&listener));
    let s = space.clone();
    let panicked = within_time("insert_region", move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.insert_region(planned(0))))
    });
    let payload = panicked.unwrap_err();
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap();
    assert_eq!(
        message,
        "AddressSpace::remove_listener was called by a listener of the same address space during a change"
    );
    // The change was cancelled, and the space is usable.
    assert!(space.snapshot().is_empty());
    space.insert_region(planned(0)).unwrap();

    let s = space.clone();
    let adds = Arc::new(|_: &RegionEvent<'_>| -> Result<(), ListenerError> { Ok(()) });
    let adding: Arc<dyn RegionListener> = Arc::new(move |_: &RegionEvent<'_>| {
        s.add_listener(adds.clone());
        Ok::<(), ListenerError>(())
    });
    space.add_listener(Arc::clone(&adding));
    let s = space.clone();
    let panicked = within_time("remove_region", move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            s.remove_region(GuestAddress(0), page())
        }))
    });
    assert!(panicked.is_err());
    assert_eq!(space.snapshot().len(), 1);
    assert!(space.remove_listener(&listener));
    assert!(space.remove_listener(&adding));
}

#[test]
fn listener_of_one_space_changes_another() {
    let (outer, inner) = (space(), space());
    let i = inner.clone();
    outer.add_listener(Arc::new(move |e: &RegionEvent<'_>| {
        if e.kind == ChangeKind::Inserted {
            i.insert_region(planned(e.region.base().0))?;
        }
        Ok(())
    }));
    let o = outer.clone();
    within_time("insert_region", move || o.insert_region(planned(0))).unwrap();
    assert_eq!(inner.snapshot().len(), 1);
    assert_eq!(outer.snapshot().len(), 1);
}

#[test]
fn listener_trying_to_add_or_remove_listeners_of_its_space_gets_an_error_and_nothing_changes() {
    let space = space();
    let me: Arc<Mutex<Option<Arc<dyn RegionListener>>>> = Arc::new(Mutex::new(None));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s, who, results) = (space.clone(), Arc::clone(&me), Arc::clone(&seen));
    let listener: Arc<dyn RegionListener> = Arc::new(move |e: &RegionEvent<'_>| {
        if e.kind == ChangeKind::Inserted {
            let mine = who.lock().unwrap().clone().unwrap();
            let other: Arc<dyn RegionListener> =
                Arc::new(|_: &RegionEvent<'_>| -> Result<(), ListenerError> { Ok(()) });
            let added = s.try_add_listener(other).map_err(|e| e.to_string());
            let removed = s.try_remove_listener(&mine).map_err(|e| e.to_string());
            results.lock().unwrap().push((added, removed));
        }
        Ok::<(), ListenerError>(())
    });
    *me.lock().unwrap() = Some(Arc::clone(&listener));
    space.add_listener(Arc::clone(&listener));
    let s = space.clone();
    within_time("insert_region", move || s.insert_region(planned(0))).unwrap();
    let first = seen.lock().unwrap().clone();
    assert_eq!(
        first,
        [(
            Err(
                "AddressSpace::try_add_listener was called by a listener of the same address \
                 space during a change"
                    .to_owned()
            ),
            Err(
                "AddressSpace::try_remove_listener was called by a listener of the same \
                 address space during a change"
                    .to_owned()
            )
        )]
    );
    // The change went on, and the listener stayed: it hears the next change too.
    assert_eq!(space.snapshot().len(), 1);
    space.snapshot().check_invariants();
    let s = space.clone();
    within_time("insert_region", move || s.insert_region(planned(page()))).unwrap();
    assert_eq!(seen.lock().unwrap().len(), 2);
    me.lock().unwrap().take();
    // Outside a change both work.
    assert!(space.try_remove_listener(&listener).unwrap());
    assert!(!space.try_remove_listener(&listener).unwrap());
    let other: Arc<dyn RegionListener> =
        Arc::new(|_: &RegionEvent<'_>| -> Result<(), ListenerError> { Ok(()) });
    space.try_add_listener(Arc::clone(&other)).unwrap();
    assert!(space.remove_listener(&other));
}
