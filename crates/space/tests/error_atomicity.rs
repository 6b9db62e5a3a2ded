//! Every public call of the address space that changes it, refused, leaves it exactly as it
//! was: random sequences of insertions, removals, plugs, discards and listener refusals run
//! against a model of the regions and their memory-slot numbers; after each refused call the
//! observable state (regions, their slot numbers and types, the generation, what the
//! snapshot's placer holds) must be the state before it, and after each call the space must be
//! the model's (so a call that failed but kept a slot number, a hotplug slot or a region shows
//! when a later call is refused or numbered differently than the model says). The refusing
//! listener is the second: the first has accepted each change it refuses, and its record of
//! the regions, kept from the events it hears (the undo of a refused change among them), must
//! be the space's after every call.
#![cfg(not(miri))]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use memvisor_space::{
    AddressSpace, ChangeKind, Error, GuestRange, Layout, ListenerError, Region, RegionEvent,
    RegionSpec, RegionType, WindowKind,
};
use proptest::prelude::*;
use vm_memory::GuestAddress;

const MIB: u64 = 1 << 20;
/// Boot RAM regions at the start of the RAM window.
const BOOT: u64 = 2;
/// The places tried, 2 MiB apart, in the RAM window and in the hotplug window.
const PLACES: u64 = 8;

#[derive(Clone, Debug)]
enum Op {
    /// A planned RAM region of `size` 2 MiB units at place `at` of the RAM window (or a
    /// reserved one).
    Insert { at: u64, size: u64, reserved: bool },
    /// A hotplug RAM region at place `at` of the hotplug window, of `size` units; not marked
    /// hotplug, or outside the window, when asked.
    Plug {
        at: u64,
        size: u64,
        marked: bool,
        outside: bool,
    },
    /// The region at place `at` of either window, with `size` units (often not its size).
    Remove { hotplug: bool, at: u64, size: u64 },
    /// A discard at page `page` of place `at` of `pages` pages.
    Discard {
        hotplug: bool,
        at: u64,
        page: u64,
        pages: u64,
    },
    /// The listener refuses every change from now on, or accepts them.
    Refuse(bool),
    /// Holds the current snapshot (keeping its regions' memory, and so the hotplug slots of
    /// plugged regions removed later, busy), or lets it go.
    Hold(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..PLACES, 1..3u64, prop::bool::weighted(0.2))
            .prop_map(|(at, size, reserved)| Op::Insert { at, size, reserved }),
        3 => (0..PLACES, 1..3u64, prop::bool::weighted(0.9), prop::bool::weighted(0.1))
            .prop_map(|(at, size, marked, outside)| Op::Plug { at, size, marked, outside }),
        3 => (any::<bool>(), 0..PLACES, 1..3u64)
            .prop_map(|(hotplug, at, size)| Op::Remove { hotplug, at, size }),
        1 => (any::<bool>(), 0..PLACES, 0..600u64, 0..600u64)
            .prop_map(|(hotplug, at, page, pages)| Op::Discard { hotplug, at, page, pages }),
        1 => prop::bool::weighted(0.3).prop_map(Op::Refuse),
        1 => any::<bool>().prop_map(Op::Hold),
    ]
}

/// What the space shows: each region's base, size, type and slot number, the generation, and
/// the ranges the snapshot's placer holds with their owners.
type State = (
    Vec<(u64, u64, RegionType, Option<u32>)>,
    u64,
    Vec<(String, GuestRange)>,
);

fn state(space: &AddressSpace) -> State {
    let snapshot = space.snapshot();
    let regions = snapshot
        .regions_with_slots()
        .map(|(r, slot)| (r.base().0, r.size(), r.ty(), slot))
        .collect();
    let placer = snapshot.placer().unwrap();
    let held = placer
        .allocations()
        .map(|(o, r)| (o.to_owned(), r))
        .collect();
    (regions, snapshot.generation(), held)
}

/// The model: each region's base, size, type and slot number.
#[derive(Clone, Debug, Default)]
struct Model {
    regions: Vec<(u64, u64, RegionType, Option<u32>)>,
}

impl Model {
    fn free(&self, base: u64, size: u64) -> bool {
        self.regions
            .iter()
            .all(|&(b, s, ..)| base + size <= b || b + s <= base)
    }

    /// The lowest slot number no region holds.
    fn next_slot(&self) -> u32 {
        (0..)
            .find(|n| self.regions.iter().all(|&(.., s)| s != Some(*n)))
            .unwrap()
    }

    fn add(&mut self, base: u64, size: u64, ty: RegionType) {
        let slot = (ty == RegionType::Ram).then(|| self.next_slot());
        self.regions.push((base, size, ty, slot));
        self.regions.sort_by_key(|&(b, ..)| b);
    }
}

/// What a listener that accepts every change learns of the regions from the events it hears:
/// each region's size, type and slot number, by base.
type Heard = Arc<Mutex<BTreeMap<u64, (u64, RegionType, Option<u32>)>>>;

/// The regions as `heard` records them, in the order `state` lists them.
fn heard_regions(heard: &Heard) -> Vec<(u64, u64, RegionType, Option<u32>)> {
    heard
        .lock()
        .unwrap()
        .iter()
        .map(|(&base, &(size, ty, slot))| (base, size, ty, slot))
        .collect()
}

/// The address space, the refusing listener's switch, the model, the first free byte of the
/// RAM window, the hotplug window's start and what the accepting listener heard.
type World = (AddressSpace, Arc<AtomicBool>, Model, u64, u64, Heard);

fn world() -> World {
    let layout = Layout::x86_64()
        .ram(1 << 30)
        .hotplug(1 << 30)
        .build()
        .unwrap();
    let hotplug = layout.windows_of(WindowKind::Hotplug).next().unwrap();
    let ram = |i: u64| RegionSpec::ram(GuestAddress(i * 2 * MIB), 2 * MIB);
    let (space, _) = AddressSpace::back(layout.clone(), (0..BOOT).map(ram)).unwrap();
    // The first listener accepts every change and records it, so it hears the undo of each
    // change the second refuses.
    let heard: Heard = Arc::default();
    {
        let mut record = heard.lock().unwrap();
        for (r, slot) in space.snapshot().regions_with_slots() {
            record.insert(r.base().0, (r.size(), r.ty(), slot));
        }
    }
    let record = Arc::clone(&heard);
    space
        .add_listener(Arc::new(
            move |e: &RegionEvent<'_>| -> Result<(), ListenerError> {
                let mut record = record.lock().unwrap();
                let r = e.region;
                match e.kind {
                    ChangeKind::Inserted => {
                        let old = record.insert(r.base().0, (r.size(), r.ty(), e.slot));
                        assert!(old.is_none(), "{:#x} inserted twice", r.base().0);
                    }
                    ChangeKind::Removed => {
                        let old = record.remove(&r.base().0);
                        assert_eq!(old, Some((r.size(), r.ty(), e.slot)), "{:#x}", r.base().0);
                    }
                }
                Ok(())
            },
        ))
        .unwrap();
    let refuse = Arc::new(AtomicBool::new(false));
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
    let mut model = Model::default();
    for i in 0..BOOT {
        model.add(i * 2 * MIB, 2 * MIB, RegionType::Ram);
    }
    (
        space,
        refuse,
        model,
        BOOT * 2 * MIB,
        hotplug.start().0,
        heard,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn refused_calls_leave_the_space_as_it_was(ops in prop::collection::vec(op(), 1..40)) {
        let (space, refuse, mut model, ram, hotplug, heard) = world();
        let mut refusing = false;
        let mut held = None;
        for op in &ops {
            let before = state(&space);
            let (result, expected): (Result<(), Error>, Option<bool>) = match *op {
                Op::Insert { at, size, reserved } => {
                    let (base, size) = (ram + at * 2 * MIB, size * 2 * MIB);
                    let ty = if reserved { RegionType::Reserved } else { RegionType::Ram };
                    let spec = RegionSpec::new(ty, GuestAddress(base), size);
                    let ok = !refusing && model.free(base, size);
                    let r = space.insert_region(Arc::new(Region::plan(spec).unwrap()));
                    if r.is_ok() {
                        model.add(base, size, ty);
                    }
                    (r, Some(ok))
                }
                Op::Plug { at, size, marked, outside } => {
                    let base = if outside { ram + at * 2 * MIB } else { hotplug + at * 2 * MIB };
                    let size = size * 2 * MIB;
                    let spec = RegionSpec::ram(GuestAddress(base), size).with_hotplug(marked);
                    let ok = !refusing && marked && !outside && model.free(base, size);
                    let r = space.plug(spec).map(drop);
                    if r.is_ok() {
                        model.add(base, size, RegionType::Ram);
                    }
                    // A held snapshot may keep a removed region's slot busy.
                    (r, if held.is_some() && ok { None } else { Some(ok) })
                }
                Op::Remove { hotplug: h, at, size } => {
                    let base = if h { hotplug } else { ram } + at * 2 * MIB;
                    let size = size * 2 * MIB;
                    let held = model.regions.iter().position(|&(b, s, ..)| b == base && s == size);
                    let r = space.remove_region(GuestAddress(base), size).map(drop);
                    if r.is_ok() {
                        model.regions.remove(held.unwrap());
                    }
                    (r, Some(!refusing && held.is_some()))
                }
                Op::Discard { hotplug: h, at, page, pages } => {
                    let base = if h { hotplug } else { ram } + at * 2 * MIB;
                    (space.snapshot().discard(GuestAddress(base + page * 0x1000), pages * 0x1000), None)
                }
                Op::Hold(on) => {
                    held = on.then(|| space.snapshot());
                    (Ok(()), None)
                }
                Op::Refuse(on) => {
                    refuse.store(on, Ordering::SeqCst);
                    refusing = on;
                    (Ok(()), None)
                }
            };
            if let Some(ok) = expected {
                prop_assert_eq!(result.is_ok(), ok, "{:?}: {:?}", op, result);
            }
            let after = state(&space);
            if result.is_err() {
                prop_assert_eq!(&after, &before, "{:?} was refused ({:?}) but changed the space", op, result);
            }
            prop_assert_eq!(&after.0, &model.regions, "after {:?}", op);
            // The accepting listener was told the undo of every change refused after it.
            prop_assert_eq!(&heard_regions(&heard), &model.regions, "heard after {:?}", op);
        }
    }
}
