//! `RegionListener::settle`, which `insert_region` and `plug` call on every listener under the
//! writer lock before their checks: a panic there leaves the change before anything changed
//! (and the space usable on that thread and others), and a writer method it calls on its own
//! space gets `ListenerReentry` instead of waiting for itself.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use memvisor_space::{
    AddressSpace, Error, Layout, ListenerError, Region, RegionEvent, RegionListener, RegionSpec,
};
use vm_memory::GuestAddress;

const MIB: u64 = 1 << 20;

fn space() -> AddressSpace {
    AddressSpace::plan(Layout::x86_64().ram(1 << 30).build().unwrap(), []).unwrap()
}

fn planned(base: u64) -> Arc<Region> {
    Arc::new(Region::plan(RegionSpec::ram(GuestAddress(base), MIB)).unwrap())
}

/// Counts the changes it hears of; its `settle` panics while `panic` is set, and otherwise
/// calls `insert_region` on `space` (if set) and keeps the answer.
#[derive(Default)]
struct Settler {
    changes: AtomicUsize,
    settled: AtomicUsize,
    panic: AtomicBool,
    space: OnceLock<AddressSpace>,
    reentry: Mutex<Vec<Result<(), Error>>>,
}

impl RegionListener for Settler {
    fn region_changed(&self, _: &RegionEvent<'_>) -> Result<(), ListenerError> {
        self.changes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn settle(&self) {
        self.settled.fetch_add(1, Ordering::SeqCst);
        assert!(!self.panic.load(Ordering::SeqCst), "settle panics");
        if let Some(space) = self.space.get() {
            let answer = space.insert_region(planned(8 * MIB));
            self.reentry.lock().unwrap().push(answer);
        }
    }
}

#[test]
fn a_panic_in_settle_leaves_insert_region_before_any_change_and_the_space_usable() {
    let space = space();
    let first = Arc::new(Settler::default());
    let second = Arc::new(Settler::default());
    space.add_listener(first.clone()).unwrap();
    space.add_listener(second.clone()).unwrap();
    second.panic.store(true, Ordering::SeqCst);
    let before = space.snapshot();
    let out = panic::catch_unwind(AssertUnwindSafe(|| space.insert_region(planned(0))));
    assert!(out.is_err(), "the panic reaches the caller");
    assert!(Arc::ptr_eq(&before, &space.snapshot()), "nothing published");
    assert_eq!(first.settled.load(Ordering::SeqCst), 1);
    assert_eq!(first.changes.load(Ordering::SeqCst), 0);
    assert_eq!(second.changes.load(Ordering::SeqCst), 0);

    // The same thread (which held the writer lock when the panic left it) and another one
    // change the space as before.
    second.panic.store(false, Ordering::SeqCst);
    space.insert_region(planned(0)).unwrap();
    let other = space.clone();
    std::thread::spawn(move || other.insert_region(planned(2 * MIB)).unwrap())
        .join()
        .unwrap();
    assert_eq!(space.snapshot().len(), 2);
    assert_eq!(first.changes.load(Ordering::SeqCst), 2);
    assert_eq!(second.changes.load(Ordering::SeqCst), 2);
    let removed = space.remove_region(GuestAddress(0), MIB).unwrap();
    assert_eq!(removed.base(), GuestAddress(0));
    assert_eq!(space.snapshot().len(), 1);
}

#[test]
fn a_writer_method_called_from_settle_gets_the_reentry_error_and_the_insertion_goes_on() {
    let space = space();
    let settler = Arc::new(Settler::default());
    assert!(settler.space.set(space.clone()).is_ok());
    space.add_listener(settler.clone()).unwrap();
    space.insert_region(planned(0)).unwrap();
    let answers = std::mem::take(&mut *settler.reentry.lock().unwrap());
    assert_eq!(answers.len(), 1);
    assert!(
        matches!(
            answers[0],
            Err(Error::ListenerReentry {
                op: "AddressSpace::insert_region"
            })
        ),
        "{:?}",
        answers[0]
    );
    let snapshot = space.snapshot();
    assert_eq!(snapshot.len(), 1);
    assert!(space.find_region(GuestAddress(8 * MIB)).is_none());
    assert_eq!(settler.changes.load(Ordering::SeqCst), 1);
    // The listener holds a handle to its own space: take it out so that the space can go.
    assert!(space.remove_listener(&(settler.clone() as _)).unwrap());
}
