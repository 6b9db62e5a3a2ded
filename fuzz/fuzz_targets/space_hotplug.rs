//! An `AddressSpace` (a small layout: a 64 MiB RAM window, a 16 MiB hotplug window, a window of
//! every other kind; one small backed RAM region) under random inserts of planned regions (every
//! type, in and out of their windows, misaligned and overflowing), removes, plugs and unplugs of
//! small backed regions, listeners that accept, refuse or panic, lookups and translations, guest
//! memory reads and writes through vm-memory's `Bytes` (the snapshot's own and `GuestBytes`), and
//! snapshots held across changes. Compared with a model: a sorted list of regions, the bytes of
//! each backed one, and each listener's own view of the regions. Checked after every step:
//! regions never overlap and equal the model, lookups and translations agree with it, slot
//! numbers are unique, a refused or panicking listener leaves the space (and every listener's
//! view) as it was, freshly plugged memory reads as zero, a held snapshot still shows (and
//! reads) what it held; nothing panics except the listeners told to.
#![no_main]

use std::any::Any;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Once};

use libfuzzer_sys::fuzz_target;
use memvisor_fuzz::{Input, all_bytes};
use memvisor_space::{
    AddressSpace, Backing, ChangeKind, Error, Layout, Region, RegionEvent, RegionListener,
    RegionSpec, RegionType, Snapshot, Window, WindowKind,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

const PAGE: u64 = 4096;
const HOTPLUG: u64 = 128 << 20;
const HOTPLUG_SIZE: u64 = 16 << 20;
/// Steps per input, listeners per space, bytes per access.
const MAX_STEPS: usize = 200;
const MAX_LISTENERS: usize = 3;
const MAX_ACCESS: u64 = 3 * PAGE;

thread_local! {
    /// Set while a listener is about to panic on purpose: the panic hook stays quiet.
    static EXPECTED_PANIC: Cell<bool> = const { Cell::new(false) };
}

/// The payload of a listener's deliberate panic.
struct ListenerPanic;

/// libFuzzer's hook aborts on every panic; a deliberate listener panic must unwind to the
/// address space (which catches it, cancels the change and resumes it) and then to us.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let fuzzer_hook = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !EXPECTED_PANIC.with(Cell::get) {
                fuzzer_hook(info);
            }
        }));
    });
}

const ACCEPT: u8 = 0;
const REFUSE: u8 = 1;
const PANIC: u8 = 2;

/// A listener whose answer the input sets, keeping its own view of the regions.
#[derive(Default)]
struct Recorder {
    mode: AtomicU8,
    view: Mutex<BTreeMap<u64, u64>>,
}

impl RegionListener for Recorder {
    fn region_changed(&self, event: &RegionEvent<'_>) -> Result<(), memvisor_space::ListenerError> {
        match self.mode.load(Ordering::Relaxed) {
            REFUSE => return Err("refused".into()),
            PANIC => {
                EXPECTED_PANIC.with(|p| p.set(true));
                panic::panic_any(ListenerPanic);
            }
            _ => {}
        }
        let (base, size) = (event.region.base().0, event.region.size());
        let mut view = self.view.lock().expect("not poisoned");
        match event.kind {
            ChangeKind::Inserted => {
                assert!(view.insert(base, size).is_none(), "told of an insert twice");
            }
            ChangeKind::Removed => {
                assert_eq!(
                    view.remove(&base),
                    Some(size),
                    "told of a remove of an unknown region"
                );
            }
        }
        Ok(())
    }
}

/// One region of the model.
struct ModelRegion {
    size: u64,
    ty: RegionType,
    has_slot: bool,
    region: Arc<Region>,
    /// The bytes of a region with host memory.
    bytes: Option<Vec<u8>>,
}

/// A snapshot held across changes, with the bytes of the regions it holds that were removed
/// since (nobody writes them any more).
struct Held {
    snapshot: Arc<Snapshot>,
    regions: Vec<(u64, u64, RegionType)>,
    removed: Vec<(Arc<Region>, Vec<u8>)>,
}

struct Model {
    regions: BTreeMap<u64, ModelRegion>,
}

impl Model {
    fn overlaps(&self, base: u64, size: u64) -> bool {
        let last = base + (size - 1);
        self.regions
            .range(..=last)
            .next_back()
            .is_some_and(|(&b, r)| b + (r.size - 1) >= base)
    }

    fn find(&self, addr: u64) -> Option<(u64, &ModelRegion)> {
        let (&b, r) = self.regions.range(..=addr).next_back()?;
        (addr - b < r.size).then_some((b, r))
    }

    /// How many bytes from `addr` lie in consecutive regions with host memory.
    fn backed_run(&self, addr: u64, len: u64) -> u64 {
        let mut done = 0;
        while done < len {
            let Some((b, r)) = self.find(addr + done) else {
                break;
            };
            if r.bytes.is_none() {
                break;
            }
            done += (b + r.size - (addr + done)).min(len - done);
        }
        done
    }

    fn sorted(&self) -> Vec<(u64, u64, RegionType)> {
        self.regions
            .iter()
            .map(|(&b, r)| (b, r.size, r.ty))
            .collect()
    }

    /// Reads the real bytes of every backed region back into the model (after an access
    /// whose partial outcome the model does not predict), checking that nothing outside
    /// `lo..hi` changed.
    fn resync(&mut self, lo: u64, hi: u64) {
        for (&b, r) in &mut self.regions {
            let Some(bytes) = &mut r.bytes else { continue };
            let real = host_bytes(&r.region);
            // The part of the region inside `lo..hi`, as offsets; the bytes before and after it
            // must not have changed (compared a slice at a time: a loop over each byte costs
            // the fuzzer a comparison callback per byte).
            let len = bytes.len() as u64;
            let from = lo.saturating_sub(b).min(len) as usize;
            let to = hi.saturating_sub(b).min(len).max(from as u64) as usize;
            for (old, new, at) in [
                (&bytes[..from], &real[..from], 0),
                (&bytes[to..], &real[to..], to),
            ] {
                if old != new {
                    let i = old.iter().zip(new).position(|(o, n)| o != n).unwrap_or(0);
                    panic!("byte {:#x} changed", b + (at + i) as u64);
                }
            }
            *bytes = real;
        }
    }
}

/// The bytes of a backed region, read through its host mapping.
fn host_bytes(region: &Region) -> Vec<u8> {
    let ptr = region.host_ptr().expect("a backed region");
    let len = usize::try_from(region.size()).expect("small regions");
    // SAFETY: the region's mapping is `len` readable bytes, alive while `region` is.
    unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec()
}

/// The outcome of a change, as the model expects or the space gave it.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Refused,
    Panicked,
    Overlap,
    NotFound,
    SlotBusy,
    OtherError,
}

fn outcome<T>(result: std::thread::Result<Result<T, Error>>) -> Outcome {
    match result {
        Ok(Ok(_)) => Outcome::Ok,
        Ok(Err(Error::Listener { .. })) => Outcome::Refused,
        Ok(Err(Error::Overlap { .. })) => Outcome::Overlap,
        Ok(Err(Error::RegionNotFound { .. })) => Outcome::NotFound,
        Ok(Err(Error::SlotBusy { .. })) => Outcome::SlotBusy,
        Ok(Err(_)) => Outcome::OtherError,
        Err(payload) => {
            let payload: Box<dyn Any + Send> = payload;
            EXPECTED_PANIC.with(|p| p.set(false));
            if payload.downcast_ref::<ListenerPanic>().is_none() {
                panic::resume_unwind(payload);
            }
            Outcome::Panicked
        }
    }
}

/// What the listeners, in order, do to a change the space itself accepts.
fn listeners_outcome(listeners: &[Arc<Recorder>]) -> Outcome {
    match listeners
        .iter()
        .map(|l| l.mode.load(Ordering::Relaxed))
        .find(|&m| m != ACCEPT)
    {
        Some(REFUSE) => Outcome::Refused,
        Some(_) => Outcome::Panicked,
        None => Outcome::Ok,
    }
}

/// A small layout, each kind of window once: RAM `[0, 64 MiB)`, device `[64, 96 MiB)`, reserved
/// `[96, 100 MiB)`, firmware `[100, 104 MiB)`, hotplug `[128, 144 MiB)`, DAX `[160, 176 MiB)`,
/// addresses up to 256 MiB. (A 1 GiB hotplug window, as the x86_64 preset rounds to, costs
/// its host reservation's bookkeeping on every input.)
fn layout() -> Layout {
    const MIB: u64 = 1 << 20;
    let windows = [
        (WindowKind::Ram, 0, 64 * MIB),
        (WindowKind::Device, 64 * MIB, 32 * MIB),
        (WindowKind::Reserved, 96 * MIB, 4 * MIB),
        (WindowKind::Firmware, 100 * MIB, 4 * MIB),
        (WindowKind::Hotplug, HOTPLUG, HOTPLUG_SIZE),
        (WindowKind::Dax, 160 * MIB, 16 * MIB),
    ]
    .map(|(kind, start, size)| Window::new(kind, GuestAddress(start), size).expect("a window"));
    Layout::new(GuestAddress(256 * MIB - 1), windows).expect("the layout")
}

fn region_type(input: &mut Input<'_>) -> RegionType {
    match input.u8() % 6 {
        0 | 1 => RegionType::Ram,
        2 => RegionType::Device,
        3 => RegionType::Reserved,
        4 => RegionType::Firmware,
        _ => RegionType::Dax,
    }
}

/// A guest address: near the start of a window, near a region of the model, or anything.
fn address(input: &mut Input<'_>, layout: &Layout, model: &Model) -> u64 {
    match input.u8() % 4 {
        0 | 1 => {
            let windows = layout.windows();
            let w = &windows[usize::from(input.u8()) % windows.len()];
            w.start()
                .0
                .saturating_add(PAGE * u64::from(input.u8() % 64))
        }
        2 => {
            let picked = model
                .regions
                .iter()
                .nth(usize::from(input.u8()) % model.regions.len().max(1));
            let (b, r) = picked.map_or((0, PAGE), |(&b, r)| (b, r.size));
            match input.u8() % 4 {
                0 => b,
                1 => b
                    .saturating_add(r)
                    .saturating_sub(1 + u64::from(input.u8())),
                2 => b.saturating_add(r),
                _ => b.saturating_sub(1 + u64::from(input.u8())),
            }
        }
        _ => input.size(),
    }
}

fn size(input: &mut Input<'_>) -> u64 {
    match input.u8() % 16 {
        0 => input.size(),
        _ => PAGE * (1 + u64::from(input.u8() % 8)),
    }
}

fn check(space: &AddressSpace, model: &Model, listeners: &[Arc<Recorder>], held: &Option<Held>) {
    let snap = space.snapshot();
    snap.check_invariants();
    let walked: Vec<_> = snap
        .regions()
        .map(|r| (r.base().0, r.size(), r.ty()))
        .collect();
    assert_eq!(walked, model.sorted(), "the regions");
    for pair in walked.windows(2) {
        assert!(pair[0].0 + (pair[0].1 - 1) < pair[1].0, "regions overlap");
    }
    let mut slots: Vec<u32> = Vec::new();
    for (r, slot) in snap.regions_with_slots() {
        let m = &model.regions[&r.base().0];
        assert_eq!(slot.is_some(), m.has_slot, "slot of {:#x}", r.base().0);
        assert!(Arc::ptr_eq(
            &m.region,
            &snap.find_arc(r.base()).expect("present")
        ));
        slots.extend(slot);
    }
    slots.sort_unstable();
    assert!(
        slots.windows(2).all(|w| w[0] != w[1]),
        "a slot number used twice"
    );
    let last_ram = model
        .regions
        .iter()
        .rev()
        .find(|(_, r)| r.ty == RegionType::Ram)
        .map(|(&b, r)| GuestAddress(b + r.size - 1));
    assert_eq!(snap.last_ram_addr(), last_ram);
    for l in listeners {
        let view: Vec<(u64, u64)> = l
            .view
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(&b, &s)| (b, s))
            .collect();
        let expected: Vec<(u64, u64)> = model.regions.iter().map(|(&b, r)| (b, r.size)).collect();
        assert_eq!(view, expected, "a listener's view");
    }
    if let Some(h) = held {
        let walked: Vec<_> = h
            .snapshot
            .regions()
            .map(|r| (r.base().0, r.size(), r.ty()))
            .collect();
        assert_eq!(walked, h.regions, "a held snapshot changed");
    }
}

fuzz_target!(|data: &[u8]| {
    install_hook();
    let mut input = Input::new(data);
    let layout = layout();
    let first = RegionSpec::ram(GuestAddress(0), 4 * PAGE).with_backing(Backing::AnonymousPrivate);
    let (space, _) = AddressSpace::back(layout.clone(), [first]).expect("a small backed space");
    let mut model = Model {
        regions: BTreeMap::new(),
    };
    let region = space
        .find_region(GuestAddress(0))
        .expect("the first region");
    assert_eq!(
        host_bytes(&region),
        vec![0; 4 * PAGE as usize],
        "new memory reads as zero"
    );
    model.regions.insert(
        0,
        ModelRegion {
            size: 4 * PAGE,
            ty: RegionType::Ram,
            has_slot: true,
            bytes: Some(vec![0; 4 * PAGE as usize]),
            region,
        },
    );
    let mut listeners: Vec<Arc<Recorder>> = Vec::new();
    let mut held: Option<Held> = None;

    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 12 {
            0 | 1 => {
                // Insert a planned region (no host memory; a slot if its spec has a backing).
                let ty = region_type(&mut input);
                let base = address(&mut input, &layout, &model);
                let size = size(&mut input);
                let hotplug = ty == RegionType::Ram && input.u8().is_multiple_of(3);
                let backing = if input.u8().is_multiple_of(2) {
                    Backing::AnonymousPrivate
                } else {
                    Backing::None
                };
                let spec = RegionSpec::new(ty, GuestAddress(base), size)
                    .with_hotplug(hotplug)
                    .with_backing(backing.clone());
                // A spec that is not valid (zero, misaligned, overflowing) is refused here.
                let Ok(region) = Region::plan(spec.clone()) else {
                    continue;
                };
                let region = Arc::new(region);
                let expected = if layout.check(&spec).is_err() {
                    Outcome::OtherError
                } else if model.overlaps(base, size) {
                    Outcome::Overlap
                } else {
                    listeners_outcome(&listeners)
                };
                let got = outcome(panic::catch_unwind(AssertUnwindSafe(|| {
                    space.insert_region(Arc::clone(&region))
                })));
                assert_eq!(got, expected, "insert {spec:?}");
                if got == Outcome::Ok {
                    // A type with a window lies wholly inside one of its kind.
                    if let Some(kind) = WindowKind::for_region(ty, hotplug) {
                        let w = layout.window_containing(GuestAddress(base));
                        assert!(
                            w.is_some_and(|w| w.kind() == kind && w.contains_range(base, size)),
                            "accepted outside its window"
                        );
                    }
                    model.regions.insert(
                        base,
                        ModelRegion {
                            size,
                            ty,
                            has_slot: backing.has_memory(),
                            region,
                            bytes: None,
                        },
                    );
                }
            }
            2 | 3 => {
                // Plug a small backed region into the hotplug window (sometimes not marked
                // hot-pluggable, or at a random place).
                let base = if input.u8().is_multiple_of(8) {
                    address(&mut input, &layout, &model)
                } else {
                    HOTPLUG + PAGE * u64::from(input.u8() % 64)
                };
                let size = size(&mut input);
                let hotplug = !input.u8().is_multiple_of(16);
                let spec = RegionSpec::ram(GuestAddress(base), size)
                    .with_backing(Backing::AnonymousPrivate)
                    .with_hotplug(hotplug);
                let in_window = base >= HOTPLUG
                    && base
                        .checked_add(size)
                        .is_some_and(|end| end <= HOTPLUG + HOTPLUG_SIZE);
                let valid = hotplug
                    && in_window
                    && size > 0
                    && size.is_multiple_of(PAGE)
                    && base % PAGE == 0;
                // A held snapshot keeps the memory of a region it holds that was removed since.
                let busy = held.as_ref().is_some_and(|h| {
                    h.removed.iter().any(|(r, _)| {
                        let (b, s) = (r.base().0, r.size());
                        base < b + s && b < base.saturating_add(size)
                    })
                });
                let got = outcome(panic::catch_unwind(AssertUnwindSafe(|| {
                    space.plug(spec.clone())
                })));
                if !valid {
                    assert!(
                        matches!(got, Outcome::OtherError | Outcome::Overlap),
                        "plug {spec:?}: {got:?}"
                    );
                } else if model.overlaps(base, size) {
                    assert_eq!(got, Outcome::Overlap, "plug {spec:?}");
                } else if busy && got == Outcome::SlotBusy {
                } else {
                    assert_eq!(got, listeners_outcome(&listeners), "plug {spec:?}");
                }
                if got == Outcome::Ok {
                    let region = space.find_region(GuestAddress(base)).expect("plugged");
                    assert!(region.is_backed() && region.hotplug());
                    let bytes = host_bytes(&region);
                    assert!(all_bytes(&bytes, 0), "plugged memory is not zero");
                    model.regions.insert(
                        base,
                        ModelRegion {
                            size,
                            ty: RegionType::Ram,
                            has_slot: true,
                            region,
                            bytes: Some(bytes),
                        },
                    );
                }
            }
            4 | 5 => {
                // Remove (unplug) a region of the model, or a random range.
                let (base, size) = if input.u8().is_multiple_of(4) {
                    (address(&mut input, &layout, &model), size(&mut input))
                } else {
                    let picked = model
                        .regions
                        .iter()
                        .nth(usize::from(input.u8()) % model.regions.len().max(1));
                    let Some((&b, r)) = picked else { continue };
                    (b, r.size)
                };
                let exists = model.regions.get(&base).is_some_and(|r| r.size == size);
                let expected = if exists {
                    listeners_outcome(&listeners)
                } else {
                    Outcome::NotFound
                };
                let got = outcome(panic::catch_unwind(AssertUnwindSafe(|| {
                    space.remove_region(GuestAddress(base), size)
                })));
                assert_eq!(got, expected, "remove {base:#x}+{size:#x}");
                if got == Outcome::Ok {
                    let removed = model.regions.remove(&base).expect("in the model");
                    if let (Some(h), Some(bytes)) = (&mut held, removed.bytes)
                        && h.snapshot
                            .find_arc(GuestAddress(base))
                            .is_some_and(|r| Arc::ptr_eq(&r, &removed.region))
                    {
                        h.removed.push((removed.region, bytes));
                    }
                }
            }
            6 => {
                // Add a listener (it starts with the current regions) or set one's answer.
                if listeners.len() < MAX_LISTENERS && input.u8().is_multiple_of(2) {
                    let l = Arc::new(Recorder::default());
                    *l.view.lock().expect("not poisoned") =
                        model.regions.iter().map(|(&b, r)| (b, r.size)).collect();
                    space
                        .add_listener(Arc::clone(&l) as Arc<dyn RegionListener>)
                        .expect("not called by a listener");
                    listeners.push(l);
                } else if !listeners.is_empty() {
                    let l = &listeners[usize::from(input.u8()) % listeners.len()];
                    let mode = match input.u8() % 4 {
                        0 => REFUSE,
                        1 => PANIC,
                        _ => ACCEPT,
                    };
                    l.mode.store(mode, Ordering::Relaxed);
                }
            }
            7 => {
                // Lookups and translations.
                let addr = address(&mut input, &layout, &model);
                let snap = space.memory();
                let found = model.find(addr);
                let got = snap
                    .find_region(GuestAddress(addr))
                    .map(|r| (r.base().0, r.size(), r.ty()));
                assert_eq!(
                    got,
                    found.map(|(b, r)| (b, r.size, r.ty)),
                    "lookup {addr:#x}"
                );
                let again = snap
                    .find_region(GuestAddress(addr))
                    .map(|r| (r.base().0, r.size(), r.ty()));
                assert_eq!(again, got, "second lookup {addr:#x}");
                assert_eq!(
                    snap.region_type(GuestAddress(addr)),
                    found.map(|(_, r)| r.ty)
                );
                // vm-memory's view holds only the regions with host memory.
                let backed = found.is_some_and(|(_, r)| r.bytes.is_some());
                assert_eq!(
                    snap.address_in_range(GuestAddress(addr)),
                    backed,
                    "in range {addr:#x}"
                );
                assert_eq!(
                    snap.slot(GuestAddress(addr)).is_some(),
                    found.is_some_and(|(_, r)| r.has_slot)
                );
                let host = snap.get_host_address(GuestAddress(addr));
                match found {
                    Some((b, r)) if r.bytes.is_some() => {
                        let start = r.region.host_ptr().expect("backed");
                        assert_eq!(
                            host.ok(),
                            Some(start.wrapping_add((addr - b) as usize)),
                            "translate {addr:#x}"
                        );
                    }
                    _ => assert!(host.is_err(), "translated {addr:#x} without memory"),
                }
                if let Some((b, _)) = found.filter(|_| backed) {
                    assert_eq!(
                        snap.to_region_addr(GuestAddress(addr)).map(|(_, a)| a.0),
                        Some(addr - b)
                    );
                }
            }
            8 | 9 => {
                // Write, or read, through vm-memory's `Bytes`.
                let addr = address(&mut input, &layout, &model);
                let len = 1 + input.below(MAX_ACCESS);
                let write = input.u8().is_multiple_of(2);
                let fill = input.u8();
                let snap = space.snapshot();
                let run = model.backed_run(addr, len);
                let mut buf = vec![fill; len as usize];
                let result = match (write, input.u8().is_multiple_of(2)) {
                    (true, _) => snap.write(&buf, GuestAddress(addr)),
                    (false, true) => snap.read(&mut buf, GuestAddress(addr)),
                    (false, false) => snap.bytes().read(&mut buf, GuestAddress(addr)),
                };
                if run == len {
                    assert_eq!(
                        result.as_ref().ok(),
                        Some(&(len as usize)),
                        "access {addr:#x}+{len}"
                    );
                } else if model.find(addr).is_none_or(|(_, r)| r.bytes.is_none()) {
                    assert!(result.is_err(), "access {addr:#x}+{len} outside memory");
                } else if let Ok(n) = result {
                    assert!(
                        n as u64 >= run && n as u64 <= len,
                        "access {addr:#x}+{len}: {n} bytes"
                    );
                }
                if write {
                    if run == len {
                        let mut done = 0;
                        while done < len {
                            let (b, r) = model.find(addr + done).expect("in the run");
                            let off = (addr + done - b) as usize;
                            let n = ((r.size - off as u64).min(len - done)) as usize;
                            let bytes = model
                                .regions
                                .get_mut(&b)
                                .and_then(|r| r.bytes.as_mut())
                                .expect("backed");
                            bytes[off..off + n].fill(fill);
                            done += n as u64;
                        }
                    }
                    model.resync(addr, addr.saturating_add(len));
                } else if run == len {
                    let mut expected = Vec::with_capacity(len as usize);
                    let mut done = 0;
                    while done < len {
                        let (b, r) = model.find(addr + done).expect("in the run");
                        let off = (addr + done - b) as usize;
                        let n = ((r.size - off as u64).min(len - done)) as usize;
                        expected
                            .extend_from_slice(&r.bytes.as_ref().expect("backed")[off..off + n]);
                        done += n as u64;
                    }
                    assert!(buf == expected, "read {addr:#x}+{len}");
                }
            }
            10 => {
                // Hold the current snapshot, or let it go.
                if held.is_some() && input.u8().is_multiple_of(2) {
                    held = None;
                } else {
                    let snapshot = space.snapshot();
                    let regions = snapshot
                        .regions()
                        .map(|r| (r.base().0, r.size(), r.ty()))
                        .collect();
                    held = Some(Held {
                        snapshot,
                        regions,
                        removed: Vec::new(),
                    });
                }
            }
            _ => {
                // Read a removed region through the snapshot that still holds it.
                let Some(h) = &held else { continue };
                let Some((r, bytes)) = h
                    .removed
                    .get(usize::from(input.u8()) % h.removed.len().max(1))
                else {
                    continue;
                };
                let mut buf = vec![0; bytes.len()];
                let n = h
                    .snapshot
                    .read(&mut buf, r.base())
                    .expect("held memory reads");
                assert_eq!(n, bytes.len());
                assert!(buf == *bytes, "held memory changed");
            }
        }
        check(&space, &model, &listeners, &held);
    }
});
