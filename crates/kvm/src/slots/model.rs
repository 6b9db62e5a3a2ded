//! [`MemorySlots`] against a model on the host's real KVM: seeded random sequences of region
//! insertions (of fresh regions, and of removed ones again), removals, hotplug plugs and unplugs
//! and dirty-logging changes, with KVM refusing deletions switched on and off (every one, or
//! only the deletions of slots it kept, tried again, while other regions leave), some regions
//! over bytes of one shared file (so that a region KVM keeps a slot of, and a removed one the
//! test still holds, refuses a new region over its bytes as `FileAliased`), and a later
//! listener that accepts, refuses, or refuses a removal after putting memory of its own at the
//! region's range (so that KVM refuses to take the slot back and the region is out of sync;
//! that memory leaves KVM again at a later step). After every step the space and the guest
//! ranges KVM holds (probed with a slot of our own) must equal the model, and so must
//! `registered()`, `slot_at` and `out_of_sync()` after every step for some seeds and after one
//! in five for others (the steps in between see no query of the slots). The later listener also
//! fetches the log of a region being removed, or turns its logging on or off, before it answers
//! (KVM deleted the slot then, and the space still holds the region): the answer, and the
//! flags and log the slot comes back with if the removal is refused, must be the model's (a
//! region out of sync answers as one whose removal is under way, and keeps what it owes). A
//! step that turns logging on fetches the log right after, every other step (turned on again,
//! logging keeps the pages an undone removal owes).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU8, Ordering};

use memvisor_space::RegionSpec;
use vm_memory::GuestAddress;

use super::tests::{
    check_sizes, fields, hotplug_start, keep_stale, lost_fields, refuse_deletions, space,
    vm_or_skip,
};
use super::*;

const MIB: u64 = 1 << 20;
/// Places of boot RAM regions (`BOOT + i * GAP`) and of hot-plugged ones (`hotplug + i * GAP`).
const PLACES: u64 = 4;
const BOOT: u64 = 16 * MIB;
const GAP: u64 = 4 * MIB;
/// Memory-slot numbers the space hands out; the probe's slot is past them.
const SPACE_SLOTS: u32 = 6;
const PROBE_SLOT: u32 = 100;
/// The slot number of the later listener's own memory at place `i` is `FOREIGN_SLOT + i`.
const FOREIGN_SLOT: u32 = 101;
/// The largest region of the test: the size of the later listener's memory at each place.
const LARGEST: u64 = 2 * MIB;
/// Regions over the shared file start at a whole number of MiB below this, so that two of
/// them often share bytes.
const FILE_OFFSETS: u64 = 4;

/// Which region a model entry is (regions are compared by identity, as the space compares a
/// region inserted again with itself), and the bytes of the shared file it maps, if any:
/// `(start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mapping {
    id: u64,
    file: Option<(u64, u64)>,
}

impl Mapping {
    /// Whether both map some byte of the shared file (all regions here are writable), and are
    /// not the same region.
    fn aliases(&self, other: &Self) -> bool {
        self.id != other.id
            && match (self.file, other.file) {
                (Some(a), Some(b)) => a.0 < b.1 && b.0 < a.1,
                _ => false,
            }
    }
}

/// What the listener added after the slots' does with a change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Later {
    /// Accepts it.
    #[default]
    Accept,
    /// Refuses it.
    Refuse,
    /// Refuses it; a removal after putting memory of its own at the region's range (unless it
    /// has some there already), which KVM keeps until a later step deletes it.
    Take,
}

impl Later {
    const ALL: [Self; 3] = [Self::Accept, Self::Refuse, Self::Take];
}

/// What the later listener does with the slots while a removal is under way, before it
/// answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gap {
    Nothing,
    /// Fetches the region's log.
    Fetch,
    /// Turns its dirty logging on.
    On,
    /// Turns its dirty logging off.
    Off,
}

impl Gap {
    const ALL: [Self; 4] = [Self::Nothing, Self::Fetch, Self::On, Self::Off];
}

/// SplitMix64: a seeded sequence, so a failing case can be replayed by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One of `items` (not empty).
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        let n = u64::try_from(items.len()).unwrap();
        items[usize::try_from(self.below(n)).unwrap()]
    }
}

/// What the space and KVM should hold.
#[derive(Debug, Default)]
struct Model {
    /// The space's regions with memory: base -> (slot, size, KVM flags).
    regions: BTreeMap<u64, (u32, u64, u32)>,
    /// Slots KVM kept when it refused to undo a refused insertion: slot -> (base, size, KVM
    /// flags).
    stale: BTreeMap<u32, (u64, u64, u32)>,
    /// Which region each of `regions` is: base -> mapping.
    mappings: BTreeMap<u64, Mapping>,
    /// Which region each of `stale` keeps (KVM holds it, and the space lists it as one whose
    /// undo failed): slot -> mapping.
    stale_mappings: BTreeMap<u32, Mapping>,
    /// The removed boot regions the test still holds: base -> mapping.
    held: BTreeMap<u64, Mapping>,
    /// The region the last removal that went through took out.
    last_removed: Option<Mapping>,
    /// KVM refuses every deletion (`refuse_deletions`).
    refuse_kvm: bool,
    /// KVM refuses the deletion of kept slots, tried again (`keep_stale`).
    keep_stale: bool,
    /// What a listener after ours does with every change.
    later: Later,
    /// Bases of regions of the space KVM has no slot for: the undo of their refused removal
    /// found the later listener's memory at their range (`out_of_sync()`).
    lost: BTreeSet<u64>,
    /// The later listener's own memory in KVM: base -> size.
    foreign: BTreeMap<u64, u64>,
    /// Bases of logging regions whose removal was undone since their last fetch: the next
    /// fetch reports every page.
    all_dirty: BTreeSet<u64>,
}

impl Model {
    /// The number the space hands out next: the smallest its regions do not hold.
    fn next_slot(&self) -> Option<u32> {
        (0..SPACE_SLOTS).find(|s| !self.regions.values().any(|&(slot, ..)| slot == *s))
    }

    /// A change or query reached the slots: they try the kept slots' deletion again, which
    /// goes through once KVM agrees.
    fn retry_stale(&mut self) {
        if !self.refuse_kvm && !self.keep_stale {
            self.stale.clear();
            self.stale_mappings.clear();
        }
    }

    /// Whether `region` maps file bytes of a region of the space.
    fn aliases_space(&self, region: &Mapping) -> bool {
        self.mappings.values().any(|m| region.aliases(m))
    }

    /// Whether `region` maps file bytes of a region held outside the space: one KVM keeps a
    /// slot of, or a removed one the test holds.
    fn aliases_held(&self, region: &Mapping) -> bool {
        self.stale_mappings
            .values()
            .chain(self.held.values())
            .any(|m| region.aliases(m))
    }

    /// The flags the dirty-log methods act on at `base`: those of the region of the space
    /// there (of its slot, or, for a region out of sync, those KVM gets when it takes the slot
    /// back). A slot KVM kept after the undo of a refused insertion is no region of the space:
    /// none.
    fn flags_at(&mut self, base: u64) -> Option<&mut u32> {
        self.regions.get_mut(&base).map(|(_, _, flags)| flags)
    }

    /// Whether KVM holds guest memory at `addr`.
    fn kvm_has(&self, addr: u64) -> bool {
        let inside = |base: u64, size: u64| (base..base + size).contains(&addr);
        self.regions
            .iter()
            .any(|(&b, &(_, s, _))| !self.lost.contains(&b) && inside(b, s))
            || self.stale.values().any(|&(b, s, _)| inside(b, s))
            || self.foreign.iter().any(|(&b, &s)| inside(b, s))
    }

    /// Inserting (`plug`: plugging) `region`, of `size` at `base`: whether it goes through, and
    /// the model after.
    fn insert(&mut self, base: u64, size: u64, region: Mapping, plug: bool) -> bool {
        // `insert_region` asks the listeners to settle before anything else; `plug` after its
        // checks of the place and of the file bytes regions of the space map.
        if !plug {
            self.retry_stale();
        }
        // Refused by the space before any listener hears of it: the place is taken, the file
        // bytes are mapped by a region of the space or (after the listeners settled) one held
        // outside it, (plugging) a kept slot still maps the hotplug place, or no number is
        // left.
        if self.regions.contains_key(&base) || self.aliases_space(&region) {
            return false;
        }
        if plug {
            self.retry_stale();
        }
        if self.aliases_held(&region) {
            return false;
        }
        if plug && self.stale.values().any(|&(b, ..)| b == base) {
            return false;
        }
        let Some(slot) = self.next_slot() else {
            return false;
        };
        self.retry_stale();
        // KVM still holds the place (an overlap) or the number (`SlotBusy`), or the later
        // listener's memory is there.
        if self.stale.values().any(|&(b, ..)| b == base)
            || self.stale.contains_key(&slot)
            || self.foreign.contains_key(&base)
        {
            return false;
        }
        if self.later != Later::Accept {
            // Our listener registered the slot; its undo deletes it again unless KVM refuses.
            if self.refuse_kvm {
                self.stale.insert(slot, (base, size, 0));
                self.stale_mappings.insert(slot, region);
            }
            return false;
        }
        self.regions.insert(base, (slot, size, 0));
        self.mappings.insert(base, region);
        true
    }

    /// Removing the region at `base` of `size`, with the later listener doing `gap` while the
    /// removal is under way: whether it goes through, and what `gap` answers: `None` if the
    /// later listener is not asked, `Some(None)` for an error, else the pages a fetch reports
    /// (0 for a change of logging).
    fn remove(&mut self, base: u64, size: u64, gap: Gap) -> (bool, Option<Option<u64>>) {
        if self.regions.get(&base).is_none_or(|&(_, s, _)| s != size) {
            return (false, None);
        }
        self.retry_stale();
        let lost = self.lost.contains(&base);
        // KVM refusing the deletion refuses the change (a lost region has no slot to delete).
        if self.refuse_kvm && !lost {
            return (false, None);
        }
        // The slot left KVM with its log: every page is owed if it logged. A region out of sync
        // owes what it owed when KVM refused to take it back, unless a fetch gave it since or
        // logging was turned off.
        let owed_before = self.all_dirty.contains(&base);
        let flags = &mut self.regions.get_mut(&base).unwrap().2;
        let mut owed = if lost {
            owed_before
        } else {
            *flags & KVM_MEM_LOG_DIRTY_PAGES != 0
        };
        let answer = match gap {
            Gap::Nothing => None,
            Gap::Fetch if *flags & KVM_MEM_LOG_DIRTY_PAGES == 0 => Some(None),
            Gap::Fetch => {
                let pages = size / memvisor_vmem::page_size() as u64;
                Some(Some(if std::mem::take(&mut owed) { pages } else { 0 }))
            }
            Gap::On | Gap::Off => {
                if gap == Gap::On {
                    // Turned on again, the pages owed stay owed.
                    *flags |= KVM_MEM_LOG_DIRTY_PAGES;
                } else {
                    *flags &= !KVM_MEM_LOG_DIRTY_PAGES;
                    owed = false;
                }
                Some(Some(0))
            }
        };
        (self.finish_removal(base, size, owed), answer)
    }

    /// The rest of [`remove`](Self::remove), once the later listener heard of it: whether it
    /// goes through.
    fn finish_removal(&mut self, base: u64, size: u64, owed: bool) -> bool {
        if self.later == Later::Accept {
            self.regions.remove(&base);
            self.last_removed = self.mappings.remove(&base);
            self.lost.remove(&base);
            self.all_dirty.remove(&base);
            return true;
        }
        if self.later == Later::Take {
            // The slot left KVM (or was not there), the later listener's memory takes the
            // range, and the undo cannot put the slot back.
            self.foreign.entry(base).or_insert(size);
        }
        if self.foreign.contains_key(&base) {
            // Out of sync, with its flags and what it owes kept for the fetches meanwhile and
            // for when KVM takes it back.
            self.lost.insert(base);
        } else {
            // Back as it was (also a region out of sync, which KVM takes now: mended), with
            // the flags set meanwhile.
            self.lost.remove(&base);
        }
        if owed {
            // Every page dirty in the next fetch.
            self.all_dirty.insert(base);
        } else {
            self.all_dirty.remove(&base);
        }
        false
    }

    /// What `registered()` should list.
    fn registered(&self) -> Vec<(u32, u64, u64, u32)> {
        let mut out: Vec<_> = self
            .regions
            .iter()
            .filter(|&(base, _)| !self.lost.contains(base))
            .map(|(&base, &(slot, size, flags))| (slot, base, size, flags))
            .chain(
                self.stale
                    .iter()
                    .map(|(&slot, &(base, size, flags))| (slot, base, size, flags)),
            )
            .collect();
        out.sort_unstable();
        out
    }

    /// What `out_of_sync()` should list.
    fn out_of_sync(&self) -> Vec<(u32, u64, u64)> {
        let mut out: Vec<_> = self
            .lost
            .iter()
            .map(|base| (self.regions[base].0, *base, self.regions[base].1))
            .collect();
        out.sort_unstable();
        out
    }
}

/// The listener added after the slots: does with each change what `mode` says ([`Later`]),
/// putting its own memory at `FOREIGN_SLOT + i` for place `places[i]`.
struct LaterListener {
    mode: AtomicU8,
    vm: Arc<VmFd>,
    places: Vec<u64>,
    /// One region of [`LARGEST`] bytes per place, the host memory of its slot there.
    memory: Vec<Region>,
    /// Its memory in KVM: base -> size.
    taken: Mutex<BTreeMap<u64, u64>>,
    /// What it does with `slots` at the next removal, before it answers ([`Gap`]).
    gap: Mutex<Gap>,
    slots: std::sync::OnceLock<Weak<MemorySlots>>,
    /// What that did: the pages a fetch reported (0 for a change of logging), or the error.
    gap_result: Mutex<Option<Result<u64>>>,
}

impl LaterListener {
    fn mode(&self) -> Later {
        Later::ALL[usize::from(self.mode.load(Ordering::SeqCst))]
    }

    fn set_mode(&self, later: Later) {
        let i = Later::ALL.iter().position(|&l| l == later).unwrap();
        self.mode.store(u8::try_from(i).unwrap(), Ordering::SeqCst);
    }

    /// Registers (`size` not 0) or deletes (`size` 0) its memory at `base`.
    fn set(&self, base: u64, size: u64) {
        let i = self.places.iter().position(|&p| p == base).unwrap();
        let mem = kvm_userspace_memory_region {
            slot: FOREIGN_SLOT + u32::try_from(i).unwrap(),
            flags: 0,
            guest_phys_addr: base,
            memory_size: size,
            userspace_addr: self.memory[i].host_ptr().unwrap() as u64,
        };
        // SAFETY: `self.memory[i]` is mapped for `LARGEST >= size` bytes, and stays so until
        // every slot of ours is deleted (by `Drop`, at the latest, before the field goes).
        unsafe { self.vm.set_user_memory_region(mem) }.unwrap();
    }

    /// Deletes its memory at `base` from KVM, if it has some there.
    fn release(&self, base: u64) {
        if self.taken.lock().unwrap().remove(&base).is_some() {
            self.set(base, 0);
        }
    }

    fn delete_all(&self) {
        let bases: Vec<u64> = self.taken.lock().unwrap().keys().copied().collect();
        for base in bases {
            self.release(base);
        }
    }
}

impl Drop for LaterListener {
    /// Its memory leaves KVM before it is unmapped (also when a check failed part way).
    fn drop(&mut self) {
        let taken = std::mem::take(self.taken.get_mut().unwrap_or_else(PoisonError::into_inner));
        for base in taken.into_keys() {
            self.set(base, 0);
        }
    }
}

impl RegionListener for LaterListener {
    fn region_changed(&self, event: &RegionEvent<'_>) -> std::result::Result<(), ListenerError> {
        let gap = std::mem::replace(&mut *self.gap.lock().unwrap(), Gap::Nothing);
        if event.kind == ChangeKind::Removed
            && gap != Gap::Nothing
            && let Some(slots) = self.slots.get().and_then(Weak::upgrade)
        {
            let base = event.region.base();
            let result = match gap {
                Gap::Fetch => slots.fetch_dirty_log(base).map(|log| log.count()),
                _ => slots.set_dirty_logging(base, gap == Gap::On).map(|()| 0),
            };
            *self.gap_result.lock().unwrap() = Some(result);
        }
        match self.mode() {
            Later::Accept => Ok(()),
            Later::Refuse => Err("refused".into()),
            Later::Take => {
                let (base, size) = (event.region.base().0, event.region.size());
                if event.kind == ChangeKind::Removed
                    && !self.taken.lock().unwrap().contains_key(&base)
                {
                    // The slot left KVM (or was not there): KVM takes memory of ours there.
                    self.set(base, size);
                    self.taken.lock().unwrap().insert(base, size);
                }
                Err("taken".into())
            }
        }
    }
}

/// Whether KVM holds guest memory at `addr`: a one-page slot of our own there is refused
/// exactly when it overlaps a slot KVM has.
pub(super) fn kvm_has(vm: &VmFd, probe: &Region, addr: u64) -> bool {
    probe_refused(vm, probe, PROBE_SLOT, addr)
}

/// Whether KVM refuses `probe`'s memory as slot `slot` at `addr` (the slot is deleted again
/// when KVM takes it): refused exactly when KVM has a slot of that number, or one overlapping
/// `addr`.
pub(super) fn probe_refused(vm: &VmFd, probe: &Region, slot: u32, addr: u64) -> bool {
    let mut mem = kvm_userspace_memory_region {
        slot,
        flags: 0,
        guest_phys_addr: addr,
        memory_size: probe.size(),
        userspace_addr: probe.host_ptr().unwrap() as u64,
    };
    // SAFETY: `probe`'s mapping is live, and the slot is deleted again right below (or was
    // never made).
    if unsafe { vm.set_user_memory_region(mem) }.is_err() {
        return true;
    }
    mem.memory_size = 0;
    // SAFETY: deleting a slot refers to no memory.
    unsafe { vm.set_user_memory_region(mem) }.unwrap();
    false
}

/// Checks the space, the later listener's memory and what KVM holds (probed with `probe`)
/// against `model`, asking the slots nothing.
fn check_kvm(
    ctx: &str,
    space: &AddressSpace,
    vm: &VmFd,
    later: &LaterListener,
    model: &Model,
    places: &[u64],
    probe: &Region,
) {
    assert_eq!(*later.taken.lock().unwrap(), model.foreign, "{ctx}");
    let snapshot = space.snapshot();
    let held: Vec<(u64, u64, Option<u32>)> = snapshot
        .regions_with_slots()
        .map(|(r, slot)| (r.base().0, r.size(), slot))
        .collect();
    let want: Vec<(u64, u64, Option<u32>)> = model
        .regions
        .iter()
        .map(|(&base, &(slot, size, _))| (base, size, Some(slot)))
        .collect();
    assert_eq!(held, want, "{ctx}");
    for &place in places {
        for addr in [place, place + MIB, place + 2 * MIB] {
            assert_eq!(
                kvm_has(vm, probe, addr),
                model.kvm_has(addr),
                "{ctx}: KVM at {addr:#x}"
            );
        }
    }
}

/// Checks what the slots say (`registered()`, `len()`, `out_of_sync()`, `slot_at`) against
/// `model`. (Each query tries the kept slots' deletion again.)
fn check_slots(ctx: &str, slots: &MemorySlots, model: &mut Model, places: &[u64]) {
    model.retry_stale();
    let registered = slots.registered();
    let listed: Vec<_> = registered.iter().map(fields).collect();
    assert_eq!(listed, model.registered(), "{ctx}");
    // KVM's slot of a region the model holds maps the region's memory.
    for e in &registered {
        let held = model.regions.get(&e.guest.start().0);
        if let Some(region) = held.and_then(|_| slots.space.snapshot().find_arc(e.guest.start())) {
            assert_eq!(
                e.host_address,
                region.host_ptr().unwrap() as u64,
                "{ctx}: {e:?}"
            );
        }
    }
    assert_eq!(slots.len(), model.registered().len(), "{ctx}");
    let out_of_sync: Vec<_> = slots.out_of_sync().iter().map(lost_fields).collect();
    assert_eq!(out_of_sync, model.out_of_sync(), "{ctx}");
    for &place in places {
        let at = model
            .regions
            .get(&place)
            .filter(|_| !model.lost.contains(&place))
            .map(|&(slot, ..)| slot)
            .or_else(|| {
                model
                    .stale
                    .iter()
                    .find(|&(_, &(b, ..))| b == place)
                    .map(|(&s, _)| s)
            });
        assert_eq!(
            slots.slot_at(GuestAddress(place)),
            at,
            "{ctx} at {place:#x}"
        );
    }
}

fn run_seed(vm: Arc<VmFd>, seed: u64, steps: usize) {
    let space = space(1 << 30, Some(SPACE_SLOTS), &[]);
    let hotplug = hotplug_start(&space).0;
    let slots = Arc::new(MemorySlots::attach(Arc::clone(&vm), &space).unwrap());
    let places: Vec<u64> = (0..PLACES)
        .map(|i| BOOT + i * GAP)
        .chain((0..PLACES).map(|i| hotplug + i * GAP))
        .collect();
    let later = Arc::new(LaterListener {
        mode: AtomicU8::new(0),
        vm: Arc::clone(&vm),
        places: places.clone(),
        memory: places
            .iter()
            .map(|_| {
                Region::back(RegionSpec::ram(GuestAddress(0), LARGEST))
                    .unwrap()
                    .0
            })
            .collect(),
        taken: Mutex::new(BTreeMap::new()),
        gap: Mutex::new(Gap::Nothing),
        slots: std::sync::OnceLock::new(),
        gap_result: Mutex::new(None),
    });
    later.slots.set(Arc::downgrade(&slots)).unwrap();
    let listener: Arc<dyn RegionListener> = Arc::clone(&later) as _;
    space.add_listener(Arc::clone(&listener)).unwrap();
    let probe = Region::back(RegionSpec::ram(GuestAddress(0), 0x1000))
        .unwrap()
        .0;
    // The boot regions removed last at each place, inserted again by some steps.
    let mut removed: BTreeMap<u64, Arc<Region>> = BTreeMap::new();
    let mut model = Model::default();
    let mut rng = Rng(seed);
    // Half the fresh regions map bytes of this file (which has every byte a region may map).
    let file = std::env::temp_dir().join(format!(
        "memvisor-kvm-model-{}-{seed}.img",
        std::process::id()
    ));
    std::fs::File::create(&file)
        .unwrap()
        .set_len(FILE_OFFSETS * MIB + LARGEST)
        .unwrap();
    let mut ids = 0..;
    for step in 0..steps {
        let i = rng.below(PLACES);
        let size = (1 + rng.below(2)) * MIB;
        // A fresh region's spec at `base`, and which region it is.
        let on_file = rng.below(2) == 0;
        let offset = rng.below(FILE_OFFSETS) * MIB;
        let mut fresh = |base: u64| {
            let mut spec = RegionSpec::ram(GuestAddress(base), size);
            if on_file {
                spec = spec.with_backing(memvisor_space::Backing::File {
                    path: file.clone(),
                    offset,
                });
            }
            let mapping = Mapping {
                id: ids.next().unwrap(),
                file: on_file.then_some((offset, offset + size)),
            };
            (spec, mapping)
        };
        // Removals mostly name the region there as it is (or a size it does not have).
        let exact = rng.below(4) != 0;
        let removal = |model: &Model, base: u64| match model.regions.get(&base) {
            Some(&(_, held, _)) if exact => held,
            _ => size,
        };
        // What the later listener does while a removal is under way, and checks of it.
        let gap = rng.pick(&Gap::ALL);
        *later.gap.lock().unwrap() = gap;
        let check_gap = |ctx: &str, want: Option<Option<u64>>| {
            let got = later.gap_result.lock().unwrap().take();
            *later.gap.lock().unwrap() = Gap::Nothing;
            assert_eq!(
                got.as_ref().map(|r| r.as_ref().ok().copied()),
                want,
                "{ctx}: {gap:?} gave {got:?}"
            );
        };
        let op = rng.below(22);
        let ctx = format!("seed {seed} step {step} op {op} place {i} size {size:#x}");
        match op {
            0..=2 => {
                let base = BOOT + i * GAP;
                let (spec, mapping) = fresh(base);
                let region = Arc::new(Region::back(spec).unwrap().0);
                let want = model.insert(base, size, mapping, false);
                assert_eq!(space.insert_region(region).is_ok(), want, "{ctx}");
            }
            3..=5 => {
                let base = BOOT + i * GAP;
                let size = removal(&model, base);
                let (want, gap_want) = model.remove(base, size, gap);
                let got = space.remove_region(GuestAddress(base), size);
                check_gap(&ctx, gap_want);
                assert_eq!(got.is_ok(), want, "{ctx}");
                if let Ok(region) = got {
                    // Held by the test from now on, in place of the one removed there before.
                    removed.insert(base, region);
                    model.held.insert(base, model.last_removed.take().unwrap());
                }
            }
            6..=7 => {
                // A region removed last at a free place, inserted again: under the number the
                // space hands out now, which may not be the one it had.
                let free: Vec<u64> = removed
                    .keys()
                    .copied()
                    .filter(|base| !model.regions.contains_key(base))
                    .collect();
                if !free.is_empty() {
                    let base = rng.pick(&free);
                    let region = Arc::clone(&removed[&base]);
                    let want = model.insert(base, region.size(), model.held[&base], false);
                    assert_eq!(
                        space.insert_region(region).is_ok(),
                        want,
                        "{ctx} at {base:#x}"
                    );
                }
            }
            8..=10 => {
                let base = hotplug + i * GAP;
                let (spec, mapping) = fresh(base);
                let spec = spec.with_hotplug(true);
                let want = model.insert(base, size, mapping, true);
                assert_eq!(space.plug(spec).is_ok(), want, "{ctx}");
            }
            11..=12 => {
                let base = hotplug + i * GAP;
                let size = removal(&model, base);
                let (want, gap_want) = model.remove(base, size, gap);
                let got = space.remove_region(GuestAddress(base), size);
                check_gap(&ctx, gap_want);
                assert_eq!(got.is_ok(), want, "{ctx}");
            }
            13..=15 => {
                // KVM refuses every deletion, then (three times in four) still those of the slots
                // it kept, tried again: other regions leave and give their numbers back, so a
                // region under such a number reaches KVM while it keeps the slot.
                if model.refuse_kvm {
                    model.refuse_kvm = false;
                    model.keep_stale = rng.below(4) != 0;
                } else if model.keep_stale && rng.below(2) == 0 {
                    model.keep_stale = false;
                } else {
                    model.refuse_kvm = true;
                }
                refuse_deletions(&slots, model.refuse_kvm);
                keep_stale(&slots, model.keep_stale);
            }
            16..=17 => {
                model.later = rng.pick(&Later::ALL);
                later.set_mode(model.later);
                // Half the time all the later listener's memory leaves KVM too: the regions it
                // left out of sync stay so until their removal is refused or goes through.
                if rng.below(2) == 0 {
                    later.delete_all();
                    model.foreign.clear();
                }
            }
            18 => {
                // Mostly where the later listener has memory.
                let taken: Vec<u64> = model.foreign.keys().copied().collect();
                let base = if taken.is_empty() || rng.below(4) == 0 {
                    rng.pick(&places)
                } else {
                    rng.pick(&taken)
                };
                later.release(base);
                model.foreign.remove(&base);
            }
            19..=20 => {
                let base = if rng.below(2) == 0 { BOOT } else { hotplug } + i * GAP;
                let on = rng.below(2) == 0;
                model.retry_stale();
                // Off drops what an undone removal owes; on (again) keeps it.
                if !on {
                    model.all_dirty.remove(&base);
                }
                let want = model.flags_at(base).map(|flags| {
                    if on {
                        *flags |= KVM_MEM_LOG_DIRTY_PAGES;
                    } else {
                        *flags &= !KVM_MEM_LOG_DIRTY_PAGES;
                    }
                });
                assert_eq!(
                    slots.set_dirty_logging(GuestAddress(base), on).is_ok(),
                    want.is_some(),
                    "{ctx} on {on}"
                );
                // Every other step, the log right after: turned on (again), it still gives
                // every page an undone removal owes (without drawing from `rng`, so that the
                // sequences stay those of the seeds).
                if on && want.is_some() && step % 2 == 0 {
                    let log = slots.fetch_dirty_log(GuestAddress(base)).unwrap();
                    let all = model.all_dirty.remove(&base);
                    let pages = log.size() / memvisor_vmem::page_size() as u64;
                    assert_eq!(
                        log.count(),
                        if all { pages } else { 0 },
                        "{ctx} fetch after on"
                    );
                }
            }
            _ => {
                let base = if rng.below(2) == 0 { BOOT } else { hotplug } + i * GAP;
                model.retry_stale();
                let want = model
                    .flags_at(base)
                    .is_some_and(|flags| *flags & KVM_MEM_LOG_DIRTY_PAGES != 0);
                // No guest runs: the log is clean, except after an undone removal, which
                // reports every page.
                let got = slots.fetch_dirty_log(GuestAddress(base));
                assert_eq!(got.is_ok(), want, "{ctx}: {got:?}");
                if let Ok(log) = got {
                    let all = model.all_dirty.remove(&base);
                    let pages = log.size() / memvisor_vmem::page_size() as u64;
                    assert_eq!(log.count(), if all { pages } else { 0 }, "{ctx}");
                }
            }
        }
        // What KVM holds, after every step; what the slots say, after every step for some
        // seeds and after one in five for others (a query tries the kept slots' deletion
        // again, and forgets regions out of sync that the space no longer holds).
        let ctx = format!("{ctx}: {model:?}");
        check_kvm(&ctx, &space, &vm, &later, &model, &places, &probe);
        check_sizes(&ctx, &slots);
        if rng.below(1 + seed % 5) == 0 {
            check_slots(&ctx, &slots, &mut model, &places);
        }
    }
    // Dropping the slots deletes every slot KVM has, and leaves the later listener's memory.
    refuse_deletions(&slots, false);
    keep_stale(&slots, false);
    assert!(space.remove_listener(&listener).unwrap());
    drop(slots);
    for &place in &places {
        assert_eq!(
            kvm_has(&vm, &probe, place),
            model.foreign.contains_key(&place),
            "seed {seed}: {place:#x} after the slots were dropped"
        );
    }
    later.delete_all();
    for &place in &places {
        assert!(
            !kvm_has(&vm, &probe, place),
            "seed {seed}: {place:#x} left in KVM"
        );
    }
    let _ = std::fs::remove_file(&file);
}

#[test]
fn random_changes_with_refusals_keep_space_slots_and_kvm_equal_to_model() {
    for seed in 0..64 {
        let Some(vm) = vm_or_skip("random_changes_with_refusals") else {
            return;
        };
        run_seed(vm, seed, 250);
    }
}
