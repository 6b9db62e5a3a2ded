//! [`MemorySlots`] against a model on the host's real KVM: seeded random sequences of region
//! insertions, removals, hotplug plugs and unplugs and dirty-logging changes, with KVM refusing
//! deletions and a later listener refusing changes switched on and off. After most steps the
//! space, `registered()`, `slot_at`, `out_of_sync()` and the guest ranges KVM holds (probed with
//! a slot of our own) must equal the model; the steps in between see no query.

use std::collections::{BTreeMap, BTreeSet};

use memvisor_space::RegionSpec;
use vm_memory::GuestAddress;

use super::tests::{hotplug_start, refuse_deletions, refusing, space, vm_or_skip};
use super::*;

const MIB: u64 = 1 << 20;
/// Places of boot RAM regions (`BOOT + i * GAP`) and of hot-plugged ones (`hotplug + i * GAP`).
const PLACES: u64 = 4;
const BOOT: u64 = 16 * MIB;
const GAP: u64 = 4 * MIB;
/// Memory-slot numbers the space hands out; the probe's slot is past them.
const SPACE_SLOTS: u32 = 6;
const PROBE_SLOT: u32 = 100;

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
}

/// What the space and KVM should hold.
#[derive(Debug, Default)]
struct Model {
    /// The space's regions with memory: base -> (slot, size, KVM flags).
    regions: BTreeMap<u64, (u32, u64, u32)>,
    /// Slots KVM kept when it refused to undo a refused insertion: slot -> (base, size, KVM
    /// flags).
    stale: BTreeMap<u32, (u64, u64, u32)>,
    /// KVM refuses every deletion (`refuse_deletions`).
    refuse_kvm: bool,
    /// A listener after ours refuses every change.
    refuse_later: bool,
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
        if !self.refuse_kvm {
            self.stale.clear();
        }
    }

    /// The flags of the slot KVM has at `base`, a region's or a kept one's.
    fn flags_at(&mut self, base: u64) -> Option<&mut u32> {
        if let Some((_, _, flags)) = self.regions.get_mut(&base) {
            return Some(flags);
        }
        self.stale
            .values_mut()
            .find(|(b, ..)| *b == base)
            .map(|(_, _, flags)| flags)
    }

    /// Whether KVM holds guest memory at `addr`.
    fn kvm_has(&self, addr: u64) -> bool {
        let inside = |base: u64, size: u64| (base..base + size).contains(&addr);
        self.regions.iter().any(|(&b, &(_, s, _))| inside(b, s))
            || self.stale.values().any(|&(b, s, _)| inside(b, s))
    }

    /// Inserting (`plug`: plugging) a region of `size` at `base`: whether it goes through, and
    /// the model after.
    fn insert(&mut self, base: u64, size: u64, plug: bool) -> bool {
        // Refused by the space before any listener hears of it: the place is taken, (plugging)
        // a kept slot still maps the hotplug place after the listeners settled, or no number
        // is left.
        if self.regions.contains_key(&base) {
            return false;
        }
        if plug {
            self.retry_stale();
            if self.stale.values().any(|&(b, ..)| b == base) {
                return false;
            }
        }
        let Some(slot) = self.next_slot() else {
            return false;
        };
        self.retry_stale();
        // KVM still holds the place (an overlap) or the number (`SlotBusy`).
        if self.stale.values().any(|&(b, ..)| b == base) || self.stale.contains_key(&slot) {
            return false;
        }
        if self.refuse_later {
            // Our listener registered the slot; its undo deletes it again unless KVM refuses.
            if self.refuse_kvm {
                self.stale.insert(slot, (base, size, 0));
            }
            return false;
        }
        self.regions.insert(base, (slot, size, 0));
        true
    }

    /// Removing the region at `base` of `size`: whether it goes through.
    fn remove(&mut self, base: u64, size: u64) -> bool {
        if self.regions.get(&base).is_none_or(|&(_, s, _)| s != size) {
            return false;
        }
        self.retry_stale();
        // KVM refusing the deletion refuses the change; a later listener's refusal puts the
        // slot back as it was.
        if self.refuse_kvm {
            return false;
        }
        if self.refuse_later {
            if self.regions[&base].2 & KVM_MEM_LOG_DIRTY_PAGES != 0 {
                self.all_dirty.insert(base);
            }
            return false;
        }
        self.regions.remove(&base);
        self.all_dirty.remove(&base);
        true
    }

    /// What `registered()` should list.
    fn registered(&self) -> Vec<(u32, u64, u64, u32)> {
        let mut out: Vec<_> = self
            .regions
            .iter()
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
}

/// Whether KVM holds guest memory at `addr`: a one-page slot of our own there is refused
/// exactly when it overlaps a slot KVM has.
pub(super) fn kvm_has(vm: &VmFd, probe: &Region, addr: u64) -> bool {
    let mut mem = kvm_userspace_memory_region {
        slot: PROBE_SLOT,
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

/// Checks the space, the slots and KVM against `model`.
fn check(
    seed: u64,
    step: usize,
    space: &AddressSpace,
    slots: &MemorySlots,
    model: &mut Model,
    places: &[u64],
) {
    let ctx = format!("seed {seed} step {step}: {model:?}");
    model.retry_stale();
    assert_eq!(slots.registered(), model.registered(), "{ctx}");
    assert_eq!(slots.len(), model.registered().len(), "{ctx}");
    assert_eq!(slots.out_of_sync(), [], "{ctx}");
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
    let probe = Region::back(RegionSpec::ram(GuestAddress(0), 0x1000))
        .unwrap()
        .0;
    for &place in places {
        let at = model
            .regions
            .get(&place)
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
        for addr in [place, place + MIB, place + 2 * MIB] {
            assert_eq!(
                kvm_has(slots.vm(), &probe, addr),
                model.kvm_has(addr),
                "{ctx}: KVM at {addr:#x}"
            );
        }
    }
}

fn run_seed(vm: Arc<VmFd>, seed: u64, steps: usize) {
    let space = space(1 << 30, Some(SPACE_SLOTS), &[]);
    let hotplug = hotplug_start(&space).0;
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    let refuse = refusing();
    let places: Vec<u64> = (0..PLACES)
        .map(|i| BOOT + i * GAP)
        .chain((0..PLACES).map(|i| hotplug + i * GAP))
        .collect();
    let mut model = Model::default();
    let mut rng = Rng(seed);
    for step in 0..steps {
        let i = rng.below(PLACES);
        let size = (1 + rng.below(2)) * MIB;
        let op = rng.below(15);
        let ctx = format!("seed {seed} step {step} op {op} place {i} size {size:#x}");
        match op {
            0..=2 => {
                let base = BOOT + i * GAP;
                let region = Arc::new(
                    Region::back(RegionSpec::ram(GuestAddress(base), size))
                        .unwrap()
                        .0,
                );
                let want = model.insert(base, size, false);
                assert_eq!(space.insert_region(region).is_ok(), want, "{ctx}");
            }
            3..=4 => {
                let base = BOOT + i * GAP;
                let want = model.remove(base, size);
                assert_eq!(
                    space.remove_region(GuestAddress(base), size).is_ok(),
                    want,
                    "{ctx}"
                );
            }
            5..=7 => {
                let base = hotplug + i * GAP;
                let spec = RegionSpec::ram(GuestAddress(base), size).with_hotplug(true);
                let want = model.insert(base, size, true);
                assert_eq!(space.plug(spec).is_ok(), want, "{ctx}");
            }
            8..=9 => {
                let base = hotplug + i * GAP;
                let want = model.remove(base, size);
                assert_eq!(
                    space.remove_region(GuestAddress(base), size).is_ok(),
                    want,
                    "{ctx}"
                );
            }
            10 => {
                model.refuse_kvm = !model.refuse_kvm;
                refuse_deletions(&slots, model.refuse_kvm);
            }
            11 => {
                model.refuse_later = !model.refuse_later;
                if model.refuse_later {
                    space.add_listener(Arc::clone(&refuse)).unwrap();
                } else {
                    assert!(space.remove_listener(&refuse).unwrap());
                }
            }
            12..=13 => {
                let base = if op == 12 { BOOT } else { hotplug } + i * GAP;
                let on = rng.below(2) == 0;
                model.retry_stale();
                model.all_dirty.remove(&base);
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
        // Some steps follow each other with no query between.
        if rng.below(3) != 0 {
            check(seed, step, &space, &slots, &mut model, &places);
        }
    }
    // Dropping the slots deletes every slot KVM has.
    refuse_deletions(&slots, false);
    drop(slots);
    let probe = Region::back(RegionSpec::ram(GuestAddress(0), 0x1000))
        .unwrap()
        .0;
    for &place in &places {
        assert!(
            !kvm_has(&vm, &probe, place),
            "seed {seed}: {place:#x} left in KVM"
        );
    }
}

#[test]
fn random_changes_with_refusals_keep_space_slots_and_kvm_equal_to_model() {
    for seed in 0..12 {
        let Some(vm) = vm_or_skip("random_changes_with_refusals") else {
            return;
        };
        run_seed(vm, seed, 200);
    }
}
