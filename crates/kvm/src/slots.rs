//! [`MemorySlots`]: KVM user memory slots kept equal to an address space's backed regions.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use kvm_bindings::{KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, kvm_userspace_memory_region};
use kvm_ioctls::{Cap, VmFd};
use memvisor_space::plan::MAX_MEMORY_SLOTS;
use memvisor_space::{
    AddressSpace, ChangeKind, GuestRange, ListenerError, Region, RegionEvent, RegionListener,
};

use crate::error::{Error, Result};
use crate::slot_entry::{OutOfSyncRegion, RegisteredSlot};

/// The number of memory slots KVM documents for a kernel that does not answer
/// `KVM_CAP_NR_MEMSLOTS`.
const DEFAULT_KVM_SLOTS: u32 = 32;

/// The number of user memory slots `vm` accepts (`KVM_CAP_NR_MEMSLOTS`; 32 if the kernel does
/// not say, at most `memvisor_space::plan::MAX_MEMORY_SLOTS`, 65536: the slot numbers of one KVM
/// address space). Build the address space with `SpaceBuilder::slots(slot_limit(&vm))` so that
/// its slot allocator never hands out a number KVM refuses.
///
/// ```
/// # if cfg!(miri) { return Ok(()); } // Miri cannot open /dev/kvm.
/// let Ok(kvm) = memvisor_kvm::kvm_ioctls::Kvm::new() else {
///     return Ok(()); // no /dev/kvm here
/// };
/// let vm = kvm.create_vm()?;
/// assert!(memvisor_kvm::slot_limit(&vm) >= 32);
/// let layout = memvisor_space::Layout::x86_64().ram(1 << 30).build().unwrap();
/// let builder = memvisor_space::AddressSpace::builder(layout).slots(memvisor_kvm::slot_limit(&vm));
/// # let _ = builder;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub fn slot_limit(vm: &VmFd) -> u32 {
    limit_of_reply(vm.check_extension_int(Cap::NrMemslots))
}

/// The slot limit KVM's answer to `KVM_CAP_NR_MEMSLOTS` gives: the default for no answer, at
/// most [`MAX_MEMORY_SLOTS`] (the slot numbers of one KVM address space: bits 16 and up of a
/// slot number choose the address space, SMM on x86, not a slot) whatever the answer.
fn limit_of_reply(reply: i32) -> u32 {
    u32::try_from(reply)
        .ok()
        .filter(|&n| n > 0)
        .map_or(DEFAULT_KVM_SLOTS, |n| n.min(MAX_MEMORY_SLOTS))
}

/// One region registered with KVM. Holding the `Arc` keeps the region's host memory mapped for
/// as long as KVM may touch it.
struct Registered {
    region: Arc<Region>,
    /// The region's range, which KVM's slot maps.
    guest: GuestRange,
    /// The region's host memory, KVM's `userspace_addr`.
    host_address: u64,
    flags: u32,
}

/// The last region deleted from KVM, kept until the next change: if a listener after this
/// one refuses the removal, the address space undoes it by inserting the same region again,
/// and the slot comes back as it was: its flags, and (for a slot that logged dirty pages) every
/// page dirty in the next fetch, since KVM dropped the log with the slot. (A deletion that
/// undoes a refused insertion is not kept: inserting the region again after that, with the
/// same generation, is a fresh insertion.) The removal of a region KVM would not take back
/// ([`Lost`]) is kept too, although KVM had nothing to delete: its undo then ends the change
/// rather than start one that a retry of the removal could seem to undo, and gives the slot
/// the flags and owed log of the region's [`Lost`] record.
pub(crate) struct Removed {
    slot: u32,
    /// The generation of the removal's event. The undo carries the same one; a removal that
    /// went through is published, so any later insertion (of the same region too) carries a
    /// later generation and is a fresh one.
    generation: u64,
    /// Weak: a removal that goes through must not keep the region (and its mapping) alive.
    region: Weak<Region>,
    /// The flags the undo gives the slot. Until the space publishes the removal or undoes it,
    /// `set_dirty_logging` changes them (see [`MemorySlots::removing`]).
    pub(crate) flags: u32,
    /// Whether KVM deleted the slot (not so for a region KVM would not take back, [`Lost`]).
    deleted: bool,
    /// Whether the log KVM dropped with the slot is still owed: every page of the region is
    /// reported dirty by the next fetch, in the gap or after the undo. Set when the slot logged
    /// at its deletion; cleared by such a fetch and by turning logging off in the gap (not by
    /// turning it on while on: see `MemorySlots::set_dirty_logging`).
    pub(crate) owed: bool,
}

#[derive(Default)]
pub(crate) struct State {
    /// Registered regions by memory-slot number. Changed only through
    /// [`register`](Self::register) and [`unregister`](Self::unregister).
    slots: BTreeMap<u32, Registered>,
    /// How many registered regions there are of each size (none of 0), to find the largest
    /// after a deletion in O(log n) rather than by a walk over every slot.
    sizes: BTreeMap<u64, usize>,
    /// Memory-slot number by guest base.
    by_base: BTreeMap<u64, u32>,
    /// See [`Removed`].
    removed: Option<Removed>,
    /// The slot and generation of the insertion just made, kept until the next change: a
    /// removal of that slot with that generation right after it is its undo (a listener after
    /// this one refused the insertion, which never took effect), not a removal to keep for
    /// undoing. A removal that went through carries a later generation than the insertion
    /// of the region it removes, which was published.
    inserted: Option<(u32, u64)>,
    /// Slots whose next fetch reports every page dirty: a removal of theirs was undone, and
    /// KVM dropped their log with the deleted slot (including pages a vCPU wrote right up to
    /// the deletion, which no fetch can give).
    all_dirty: BTreeSet<u32>,
    /// Regions the space holds but KVM does not, by slot: a listener after this one refused
    /// their removal, and KVM refused to take the slot back (the space ignores errors of an
    /// undo). Each keeps the flags and the owed log of its slot (see [`Lost`]). Dropped once
    /// KVM takes a region under that slot number, or when found out of the space (or in it
    /// under another number: removed and inserted again).
    lost: BTreeMap<u32, Lost>,
    /// Slots KVM would not delete when undoing a refused insertion: KVM still has them, but
    /// the space gave their numbers back. Each is deleted again before every change and every
    /// query of what is registered, and leaves `slots` once KVM lets it go.
    stale: BTreeSet<u32>,
}

impl State {
    /// Records `registered` as KVM's slot `slot`, which KVM took.
    /// `slot` is free in `slots` (the callers check it), so no record is replaced.
    fn register(&mut self, slot: u32, registered: Registered) {
        *self.sizes.entry(registered.region.size()).or_insert(0) += 1;
        if let Some(replaced) = self.slots.insert(slot, registered) {
            self.forget_size(replaced.region.size());
        }
    }

    /// Forgets KVM's slot `slot`, which KVM deleted, and returns its record.
    fn unregister(&mut self, slot: u32) -> Option<Registered> {
        let registered = self.slots.remove(&slot)?;
        self.forget_size(registered.region.size());
        Some(registered)
    }

    /// Counts one region of `size` fewer in `sizes`.
    fn forget_size(&mut self, size: u64) {
        if let Some(count) = self.sizes.get_mut(&size) {
            *count -= 1;
            if *count == 0 {
                self.sizes.remove(&size);
            }
        }
    }

    /// The size of the largest region KVM has, 0 if it has none: the last key of `sizes`,
    /// O(log n) in the slots registered.
    fn largest_size(&self) -> u64 {
        self.sizes.last_key_value().map_or(0, |(&size, _)| size)
    }

    /// Panics, naming `ctx`, unless the count of registered regions by size is what a walk
    /// over every registered slot counts, and the largest size is the walk's largest.
    #[cfg(test)]
    pub(crate) fn check_sizes(&self, ctx: &str) {
        let mut walked = BTreeMap::new();
        for registered in self.slots.values() {
            *walked.entry(registered.region.size()).or_insert(0) += 1;
        }
        assert_eq!(self.sizes, walked, "{ctx}: sizes counted against a walk");
        let largest = self.slots.values().map(|r| r.region.size()).max();
        assert_eq!(self.largest_size(), largest.unwrap_or(0), "{ctx}");
    }
}

/// A region of the space whose slot KVM would not take back after an undone removal.
struct Lost {
    /// Weak: only the space keeps it.
    region: Weak<Region>,
    /// The region's range.
    guest: GuestRange,
    /// The flags the slot gets when KVM takes the region back (the undo of a later refused
    /// removal); `set_dirty_logging` changes them meanwhile, as for a removal under way.
    flags: u32,
    /// Whether the log KVM dropped with the slot is still owed, as [`Removed::owed`]: the
    /// next fetch (while the region is out of sync, or once KVM takes it back) reports every
    /// page.
    owed: bool,
}

/// A region the space holds under a slot number that KVM has no slot for, as the dirty-log
/// methods see it: one whose removal is under way ([`Removed`]) or one out of sync ([`Lost`]).
/// No guest write reaches its memory meanwhile (KVM has no slot for it there), so its log is
/// what it owes, and its flags are those KVM gets when it takes the slot back.
pub(crate) struct Unslotted<'s> {
    pub(crate) region: Arc<Region>,
    pub(crate) slot: u32,
    pub(crate) flags: &'s mut u32,
    pub(crate) owed: &'s mut bool,
}

impl State {
    /// Whether the next fetch of `slot` reports every page dirty (a removal of it was undone);
    /// cleared.
    pub(crate) fn take_all_dirty(&mut self, slot: u32) -> bool {
        self.all_dirty.remove(&slot)
    }
}

pub(crate) struct Shared {
    vm: Arc<VmFd>,
    limit: u32,
    readonly: bool,
    state: Mutex<State>,
    /// Where dirty logs are fetched; taken only while `state` is held.
    log_buffer: Mutex<crate::dirty::LogBuffer>,
    /// Makes every slot deletion fail as if KVM refused it: KVM refuses a well-formed
    /// deletion only when the kernel is out of memory, which a test cannot arrange.
    #[cfg(test)]
    refuse_deletions: std::sync::atomic::AtomicBool,
    /// Makes the deletion of every slot kept when undoing a refused insertion fail when tried
    /// again (other deletions go through): the kept slot stays while other regions leave and
    /// give their numbers back.
    #[cfg(test)]
    keep_stale: std::sync::atomic::AtomicBool,
    /// Run once by the next removal of a slot, right before its deletion: where a running vCPU
    /// may write.
    #[cfg(test)]
    before_deletion: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// The `KVM_SET_USER_MEMORY_REGION` and `KVM_GET_DIRTY_LOG` calls made (or refused here)
    /// since the count was last reset.
    #[cfg(test)]
    calls: std::sync::atomic::AtomicU64,
    /// The call (counted as `calls` counts them, from 0) that fails as if KVM refused it
    /// (`EIO`); `u64::MAX` for none.
    #[cfg(test)]
    refuse_call: std::sync::atomic::AtomicU64,
}

/// What a change does to KVM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Add,
    Delete,
}

/// Keeps the user memory slots of a KVM VM equal to the backed regions of an
/// [`AddressSpace`]: each region with host memory is KVM slot *n*, where *n* is its memvisor
/// memory-slot number; read-only regions are `KVM_MEM_READONLY`; regions without host memory
/// (planned only, or with a non-memory backing) and regions whose mapping cannot be read are
/// left out, so guest accesses there exit to the VMM as MMIO.
///
/// [`attach`](Self::attach) registers what the space holds now and then follows every
/// insertion and removal through a region listener, both through the same function. A slot
/// KVM refuses makes the listener refuse the change, so the address space rolls it back and
/// KVM and the space still agree. Regions registered with KVM are kept alive (and their host
/// memory mapped) until KVM has let go of them, including when this value is dropped: dropping
/// it deletes every slot from KVM first.
///
/// One `MemorySlots` per VM: KVM slot numbers are the space's, so a second one (of the same
/// address space or another) would manage the same KVM slots. [`attach`](Self::attach) refuses
/// a VM that has a live `MemorySlots` already ([`Error::AlreadyAttached`]), whether through the
/// same `VmFd` or another `VmFd` over a duplicate of its descriptor (`dup`, or passed over a
/// socket); once that one is dropped, the VM can be attached again. One address space may be
/// attached to several VMs. Duplicates are recognised with `kcmp(2)`; where the kernel has no
/// `kcmp` or refuses it (built without `CONFIG_KCMP`, a seccomp filter denying it), only a
/// second attach through the same `VmFd` is refused, so do not attach two `VmFd`s of one VM
/// there: they would manage the same KVM slot numbers, and one's changes would undo the
/// other's (changes refused, slots missing, dirty-log fetches failing). Memory stays safe even
/// then: KVM maps only memory one of them keeps, and a fetch never lets KVM write past the log
/// it sized. `kcmp` is called only while another VM of this process has a live `MemorySlots`
/// (one `kcmp` per such VM): a process under a seccomp filter that attaches several VMs must
/// allow it, or make it fail with an error, rather than kill the process.
///
/// KVM slot numbers are the space's slot numbers, `0` up to the count the space was built
/// with (`memvisor_space::SpaceBuilder::slots`). A VMM that registers memory of its own with
/// KVM (`VmFd::set_user_memory_region`: a ROM, a device's shared memory) builds the space
/// with fewer numbers than [`slot_limit`] and uses the numbers from that count up to the limit
/// for its own. A number both use is refused by KVM (`EINVAL`: the memory of a live slot
/// cannot change): [`attach`](Self::attach) fails with [`Error::SetMemoryRegion`], and an
/// insertion or plug given that number is refused by the listener with it and rolled back;
/// the VMM's slot is left as it was either way.
///
/// Its methods may be called from a region listener of the space (one added after it sees a
/// new region registered already). Attaching one there is refused with
/// [`Error::AttachDuringChange`] (the space takes no listener during a change, see
/// `memvisor_space::RegionListener`); one dropped there deletes its slots, and its listener,
/// which cannot leave the space during the change, stays with nothing to act on.
///
/// The guest's physical address width is not checked here: it is the address space's limit
/// (`memvisor_space::LayoutBuilder::phys_bits`), which the VMM sets to the width it gives the
/// guest in `CPUID`, and the space refuses a region past it before any listener hears of it.
/// KVM itself takes a slot anywhere below the largest guest physical address it maps (the
/// host's MAXPHYADDR), which may be above the guest's, and refuses one past it
/// ([`Error::SetMemoryRegion`]).
///
/// KVM serves a VM only in the process that created it: in another one (a forked child, or
/// a process the descriptor was passed to) every call fails with `EIO`, so attaching a space
/// with a slot fails with [`Error::SetMemoryRegion`], every change of the space that reaches
/// KVM is refused (a removal too, which keeps the region and its slot), the dirty-log methods
/// that reach KVM fail and change nothing (turning logging on while on reaches none; except on a
/// region out of sync, see [`out_of_sync`](Self::out_of_sync), for which KVM has a slot in no
/// process: they answer from its record there too, which only that process's copy of the slots
/// holds), and dropping the slots keeps their regions mapped for the life of the process.
///
/// ```
/// use std::sync::Arc;
///
/// use memvisor_kvm::{MemorySlots, slot_limit};
/// use memvisor_space::{AddressSpace, Layout, RegionSpec};
/// use memvisor_space::vm_memory::GuestAddress;
///
/// # if cfg!(miri) { return Ok(()); } // Miri cannot open /dev/kvm.
/// let Ok(kvm) = memvisor_kvm::kvm_ioctls::Kvm::new() else {
///     return Ok(()); // no /dev/kvm here
/// };
/// let vm = Arc::new(kvm.create_vm()?);
/// let layout = Layout::x86_64().ram(1 << 30).build()?;
/// let (space, _) = AddressSpace::builder(layout)
///     .slots(slot_limit(&vm))
///     .region(RegionSpec::ram(GuestAddress(0), 64 << 20))
///     .back()?;
/// let slots = MemorySlots::attach(Arc::clone(&vm), &space)?;
/// assert_eq!(slots.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MemorySlots {
    shared: Arc<Shared>,
    /// The space followed and the listener added to it, removed again on drop.
    space: AddressSpace,
    listener: Arc<dyn RegionListener>,
}

impl fmt::Debug for MemorySlots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("MemorySlots")
            .field("limit", &self.shared.limit)
            .field("slots", &state.slots.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl MemorySlots {
    /// Registers every backed region of `space` with `vm` under its memory-slot number, then
    /// keeps KVM in sync with every later change of `space`.
    ///
    /// No change of `space` can slip between the two steps: the listener is added first and
    /// waits until the regions present are registered, and the space publishes a change only
    /// after its listeners accept it.
    ///
    /// # Errors
    /// [`Error::AlreadyAttached`] if the VM of `vm` has a live `MemorySlots` already, through
    /// `vm` or a duplicate of its descriptor (see [`MemorySlots`]; nothing is done then). As the
    /// listener would refuse a region: [`Error::SlotLimit`], [`Error::TooBig`],
    /// [`Error::ReadOnlyUnsupported`], [`Error::SetMemoryRegion`]. The slots registered before
    /// the failure are deleted again and the listener is taken out of `space`.
    /// [`Error::AttachDuringChange`] if called by a listener of `space` during a change of it
    /// (nothing is done then).
    pub fn attach(vm: Arc<VmFd>, space: &AddressSpace) -> Result<Self> {
        let limit = slot_limit(&vm);
        Self::attach_with_limit(vm, space, limit)
    }

    /// [`attach`](Self::attach) with a given slot limit (at most the VM's).
    fn attach_with_limit(vm: Arc<VmFd>, space: &AddressSpace, limit: u32) -> Result<Self> {
        // Claimed before anything reaches KVM; `Drop for Shared` gives the claim back (also
        // when this attach fails below).
        claim_vm(&vm)?;
        let readonly = vm.check_extension(Cap::ReadonlyMem);
        #[cfg(test)]
        let readonly = readonly && !NO_READONLY_MEM.with(std::cell::Cell::get);
        let shared = Arc::new(Shared {
            vm,
            limit,
            readonly,
            state: Mutex::new(State::default()),
            log_buffer: Mutex::new(crate::dirty::LogBuffer::default()),
            #[cfg(test)]
            refuse_deletions: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            keep_stale: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            before_deletion: Mutex::new(None),
            #[cfg(test)]
            calls: std::sync::atomic::AtomicU64::new(0),
            #[cfg(test)]
            refuse_call: std::sync::atomic::AtomicU64::new(u64::MAX),
        });
        let mut state = shared.lock();
        let weak = Arc::downgrade(&shared);
        let listener: Arc<dyn RegionListener> = Arc::new(Listener(weak));
        space
            .add_listener(Arc::clone(&listener))
            .map_err(|source| Error::AttachDuringChange { source })?;
        // Any change from here on waits in the listener for `state`, and a change is published
        // only after the listeners accept it: this snapshot is exactly what the listener's
        // first event applies to.
        let snapshot = space.snapshot();
        for (region, slot) in snapshot.regions_with_slots() {
            let Some(region) = snapshot.find_arc(region.base()) else {
                continue;
            };
            // On an error `state` still holds what was registered; the listener is taken out
            // of the space, and dropping `shared` (the only strong reference) deletes the slots.
            let generation = snapshot.generation();
            if let Err(e) =
                shared.apply(&mut state, ChangeKind::Inserted, &region, slot, generation)
            {
                drop(state);
                let _ = space.remove_listener(&listener);
                return Err(e);
            }
        }
        drop(state);
        Ok(Self {
            shared,
            space: space.clone(),
            listener,
        })
    }

    /// The VM.
    #[must_use]
    pub fn vm(&self) -> &Arc<VmFd> {
        &self.shared.vm
    }

    /// The number of memory slots the VM accepts.
    #[must_use]
    pub fn limit(&self) -> u32 {
        self.shared.limit
    }

    /// How many slots KVM has (see [`registered`](Self::registered)).
    #[must_use]
    pub fn len(&self) -> usize {
        self.shared.locked().slots.len()
    }

    /// Whether no region is registered with KVM.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of the slot KVM has at `base`, if any (see [`registered`](Self::registered)).
    #[must_use]
    pub fn slot_at(&self, base: vm_memory::GuestAddress) -> Option<u32> {
        self.shared.locked().by_base.get(&base.0).copied()
    }

    /// The regions the address space holds with a memory slot but KVM does not, in slot
    /// order: each one's slot number and guest range. Empty unless KVM refused an undo: when a
    /// region listener after this one refuses a removal, the slot already left KVM and goes
    /// back (see [`attach`](Self::attach)); if KVM refuses that, the address space ignores the
    /// error and keeps the region. Such a region is not registered (guest accesses to it exit
    /// as MMIO, and [`registered`](Self::registered) and [`slot_at`](Self::slot_at) leave it
    /// out). The dirty-log methods act on it as while its removal was under way (see
    /// [`set_dirty_logging`](Self::set_dirty_logging)): on the flags the slot gets when KVM
    /// takes it back, and on the log KVM dropped with the slot, which is owed: the next fetch
    /// (now, or once KVM took the slot back) gives every page of the region if the slot logged
    /// at its deletion and logging was not turned off since, and later fetches while it is
    /// out of sync give nothing (no vCPU of this VM writes its memory while KVM has no slot
    /// for it). The VMM's own writes to it through the address space (a device model's DMA,
    /// or the VMM completing a vCPU's MMIO exit there by writing the region) are never in
    /// KVM's log, here as for any region: the VMM marks them in the bitmap it passes to
    /// [`fetch_dirty_log_into`](Self::fetch_dirty_log_into) (or tracks them in the region).
    /// A guest of another VM the address space is attached to writes it through that VM's
    /// slot, whose log (that VM's [`MemorySlots`]) holds those writes. It stays here until the
    /// address space removes it (inserting it again then makes it a slot again, with fresh
    /// flags and nothing owed: the removal that goes through drops what it owed, as KVM drops a
    /// slot's log with the slot, so fetch its log first when removing it to mend it) or a
    /// removal of it that a listener after this one refuses is undone by inserting it again,
    /// which KVM takes (with the flags set meanwhile, and what is still owed).
    #[must_use]
    pub fn out_of_sync(&self) -> Vec<OutOfSyncRegion> {
        let mut state = self.shared.lock();
        // A record of a region the space no longer holds is done with. A change in progress
        // waits for `state` in the listener or has passed it; either way it has not published
        // yet, so the snapshot is the state before it. So is one of a region the space holds
        // under another number: removed and inserted again (which mends it).
        let snapshot = self.space.snapshot();
        state.lost.retain(|&slot, l| {
            let base = l.guest.start();
            snapshot
                .find_arc(base)
                .is_some_and(|r| std::ptr::eq(l.region.as_ptr(), Arc::as_ptr(&r)))
                && snapshot.slot(base) == Some(slot)
        });
        state
            .lost
            .iter()
            .map(|(&slot, l)| OutOfSyncRegion {
                slot,
                guest: l.guest,
            })
            .collect()
    }

    /// The slots KVM has, in slot order: each one's number, guest range, host address and KVM
    /// flags, as KVM was given them. Each is a
    /// region of the address space, except a slot KVM refused to delete when undoing an
    /// insertion a listener after this one refused: KVM still has it, so it is listed (and
    /// its region kept mapped) until KVM lets it go. Its deletion is tried again before every
    /// change of the space, before every insertion is checked (also one the space then
    /// refuses), before every plug checks its place, and on every call of this
    /// method, [`len`](Self::len), [`slot_at`](Self::slot_at) and the dirty-log methods. A plug
    /// of the address space at the place of such a slot's region answers
    /// `memvisor_space::Error::SlotBusy` only while KVM still refuses the deletion.
    #[must_use]
    pub fn registered(&self) -> Vec<RegisteredSlot> {
        self.shared
            .locked()
            .slots
            .iter()
            .map(|(&slot, r)| RegisteredSlot {
                slot,
                guest: r.guest,
                host_address: r.host_address,
                flags: r.flags,
            })
            .collect()
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The region at `base` whose removal is under way, and its record: KVM deleted its slot
    /// (so it is not registered), and the space still holds it under that slot number, since a
    /// region listener after this one has not answered yet (or refused, and the undo bringing
    /// the slot back is to come). A call on it then acts as if made before the removal: on the
    /// record's flags, which the undo gives the slot back, and on the log KVM dropped with it.
    /// `state` is this value's, locked.
    fn removing<'s>(
        &self,
        state: &'s mut State,
        base: u64,
    ) -> Option<(Arc<Region>, &'s mut Removed)> {
        let removed = state.removed.as_mut().filter(|r| r.deleted)?;
        let region = removed.region.upgrade()?;
        if region.base().0 != base {
            return None;
        }
        // The change waits for `state` in our listener (the undo) or is past every listener,
        // unpublished; a removal published is in no later snapshot (nor is the region under
        // the number again: that insertion would have gone through our listener first).
        self.holds(&region, removed.slot)
            .then_some((region, removed))
    }

    /// Whether the space holds `region` under `slot` (its snapshot, which a change under way
    /// has not replaced yet).
    fn holds(&self, region: &Arc<Region>, slot: u32) -> bool {
        let snapshot = self.space.snapshot();
        let address = region.base();
        snapshot
            .find_arc(address)
            .is_some_and(|r| Arc::ptr_eq(&r, region))
            && snapshot.slot(address) == Some(slot)
    }

    /// The region at `base` that the space holds but KVM has no slot for: one whose removal
    /// is under way ([`removing`](Self::removing)), or one out of sync (KVM refused to take its
    /// slot back after a later listener refused its removal, see
    /// [`out_of_sync`](Self::out_of_sync)). The dirty-log methods act on it as if its slot
    /// were there: on the flags KVM gets when it takes the slot back, and on the log KVM
    /// dropped with the slot. `state` is this value's, locked.
    pub(crate) fn unslotted<'s>(&self, state: &'s mut State, base: u64) -> Option<Unslotted<'s>> {
        if self.removing(state, base).is_some() {
            let (region, removed) = self.removing(state, base)?;
            return Some(Unslotted {
                region,
                slot: removed.slot,
                flags: &mut removed.flags,
                owed: &mut removed.owed,
            });
        }
        // A record of a region the space no longer holds under that number is done with (see
        // `out_of_sync`), and may still be there, also at the same base: the one held counts.
        let (slot, region) = state.lost.iter().find_map(|(&slot, l)| {
            let region = l.region.upgrade().filter(|r| r.base().0 == base)?;
            self.holds(&region, slot).then_some((slot, region))
        })?;
        let lost = state.lost.get_mut(&slot)?;
        Some(Unslotted {
            region,
            slot,
            flags: &mut lost.flags,
            owed: &mut lost.owed,
        })
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation of `State` is one map insert or remove after its ioctl succeeded, so a
        // panic elsewhere cannot leave it half changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The memory dirty logs are fetched into (see `dirty::LogBuffer`). A panic while it was
    /// held left at most a log in it, which the next fetch clears.
    pub(crate) fn log_buffer(&self) -> MutexGuard<'_, crate::dirty::LogBuffer> {
        self.log_buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// [`lock`](Self::lock), after trying again to delete the slots KVM kept when undoing a
    /// refused insertion.
    pub(crate) fn locked(&self) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        self.delete_stale(&mut state);
        state
    }

    /// Tries again to delete each slot KVM kept when undoing a refused insertion; those KVM
    /// lets go leave the state (and release their region).
    fn delete_stale(&self, state: &mut State) {
        if state.stale.is_empty() {
            return;
        }
        let stale = std::mem::take(&mut state.stale);
        let mut released = false;
        for slot in stale {
            let Some(registered) = state.slots.get(&slot) else {
                continue;
            };
            #[cfg(test)]
            let kept = self.keep_stale.load(std::sync::atomic::Ordering::Relaxed);
            #[cfg(not(test))]
            let kept = false;
            if kept
                || self
                    .set(slot, &registered.region, registered.flags, Op::Delete)
                    .is_err()
            {
                state.stale.insert(slot);
                continue;
            }
            let base = registered.region.base().0;
            state.unregister(slot);
            if state.by_base.get(&base) == Some(&slot) {
                state.by_base.remove(&base);
            }
            state.all_dirty.remove(&slot);
            released = true;
        }
        if released {
            self.fit_log_buffer(state);
        }
    }

    /// Shrinks the memory dirty logs are fetched into to the log of the largest region KVM
    /// still has (none if it has none), after a slot left KVM, when it holds more than twice
    /// that log's pages. A shrink the system refuses keeps the larger buffer.
    fn fit_log_buffer(&self, state: &State) {
        let largest = state.largest_size();
        // A registered region's size fits `usize` (`set` checks it).
        if let Some(bytes) = crate::dirty::log_bytes(largest) {
            self.log_buffer().fit(bytes);
        }
    }

    pub(crate) fn vm(&self) -> &VmFd {
        &self.vm
    }

    /// Counts a call to KVM about to be made: whether it is the one to refuse (`refuse_call`).
    #[cfg(test)]
    pub(crate) fn refuses_next_call(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.calls.fetch_add(1, Relaxed) == self.refuse_call.load(Relaxed)
    }

    /// Applies one change to KVM: the one code path for the first registration and for the
    /// listener.
    fn apply(
        &self,
        state: &mut State,
        kind: ChangeKind,
        region: &Arc<Region>,
        slot: Option<u32>,
        generation: u64,
    ) -> Result<()> {
        // Before every change, also one that gives KVM nothing to do: a kept slot goes (and
        // releases its region) as soon as KVM agrees.
        self.delete_stale(state);
        let (Some(slot), Some(host)) = (slot, region.host_ptr()) else {
            return Ok(());
        };
        if !region.protection().readable() {
            return Ok(());
        }
        let base = region.base().0;
        // Only the change right after a removal (an insertion) can be its undo.
        let removed = state.removed.take();
        let inserted = state.inserted.take();
        match kind {
            ChangeKind::Inserted => {
                if slot >= self.limit {
                    return Err(Error::SlotLimit {
                        slot,
                        base,
                        limit: self.limit,
                    });
                }
                if state.slots.contains_key(&slot) {
                    // The space hands out a number no region of it holds: KVM kept the slot
                    // when undoing a refused insertion (whose error the space ignores), and
                    // still refused to delete it just above. The number stays busy meanwhile.
                    return Err(Error::SlotBusy { slot, base });
                }
                let guest = region.range();
                // The undo of the removal just made: the slot as it was.
                let undo = removed.filter(|r| {
                    r.generation == generation
                        && r.slot == slot
                        && std::ptr::eq(r.region.as_ptr(), Arc::as_ptr(region))
                });
                // The flags and owed log of the slot as it was: the removal's record, or, for
                // a region out of sync (which KVM had no slot for), its record, which
                // `set_dirty_logging` and fetches changed meanwhile.
                let (flags, owed) = match &undo {
                    Some(undo) if !undo.deleted => state
                        .lost
                        .get(&slot)
                        .filter(|l| std::ptr::eq(l.region.as_ptr(), Arc::as_ptr(region)))
                        .map_or((undo.flags, undo.owed), |l| (l.flags, l.owed)),
                    Some(undo) => (undo.flags, undo.owed),
                    None => (self.fresh_flags(region)?, false),
                };
                if let Err(e) = self.set(slot, region, flags, Op::Add) {
                    // (A lost region inserted again keeps its record.)
                    if undo.is_some() {
                        // The space keeps the region although KVM no longer has it: say so
                        // until the region goes, and keep what its log owes (every page) and
                        // its flags for the fetches meanwhile and for when KVM takes it back.
                        state.lost.insert(
                            slot,
                            Lost {
                                region: Arc::downgrade(region),
                                guest,
                                flags,
                                owed,
                            },
                        );
                    }
                    return Err(e);
                }
                state.lost.remove(&slot);
                state.register(
                    slot,
                    Registered {
                        region: Arc::clone(region),
                        guest,
                        // As `set` gave it to KVM.
                        host_address: host as u64,
                        flags,
                    },
                );
                state.by_base.insert(base, slot);
                match undo {
                    Some(_) => {
                        // KVM dropped the log with the slot, and a vCPU may have written up to
                        // the deletion: report every page in the next fetch (unless a fetch
                        // or logging turned off while the removal was under way, or while the
                        // region was out of sync, settled it).
                        if owed {
                            state.all_dirty.insert(slot);
                        }
                    }
                    // The undo of a removal ends its change; a fresh insertion may be undone.
                    None => state.inserted = Some((slot, generation)),
                }
            }
            ChangeKind::Removed => {
                // Not registered (a lost region too): KVM has nothing to delete. A lost
                // region's record goes once the space no longer holds it (see `out_of_sync`).
                let Some(registered) = state.slots.get(&slot) else {
                    // Should a later listener refuse the removal of a lost region, its undo
                    // inserts it with the flags of its record (and what its log owes), which
                    // mends it if KVM agrees. It is kept as a removal so that the undo is known
                    // as one: taken for a fresh insertion, it would make a retry of the
                    // removal (same generation) look like the undo of that insertion.
                    let lost = state
                        .lost
                        .get(&slot)
                        .filter(|l| std::ptr::eq(l.region.as_ptr(), Arc::as_ptr(region)));
                    if let Some(lost) = lost {
                        state.removed = Some(Removed {
                            slot,
                            generation,
                            region: Arc::downgrade(region),
                            flags: lost.flags,
                            deleted: false,
                            owed: lost.owed,
                        });
                    }
                    return Ok(());
                };
                if !Arc::ptr_eq(&registered.region, region) {
                    return Ok(());
                }
                let flags = registered.flags;
                // KVM's log is not fetched first: a refused deletion leaves it in KVM, and
                // after one that goes through, no fetch could give what a vCPU writes between
                // that fetch and the deletion. An undo reports every page instead.
                #[cfg(test)]
                if let Some(hook) = self
                    .before_deletion
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                {
                    hook();
                }
                if let Err(e) = self.set(slot, region, flags, Op::Delete) {
                    if inserted == Some((slot, generation)) {
                        // The undo of the insertion just made: the space gives the number
                        // back, but KVM keeps the slot (and the space, told by the error,
                        // keeps a writable file region's bytes from other regions until we
                        // drop the `Arc`). Delete it again later.
                        state.stale.insert(slot);
                    }
                    // Otherwise KVM keeps the slot with its log: the change is refused.
                    return Err(e);
                }
                state.unregister(slot);
                state.by_base.remove(&base);
                state.all_dirty.remove(&slot);
                self.fit_log_buffer(state);
                if inserted == Some((slot, generation)) {
                    // The undo of the insertion just made: the region goes as if it had never
                    // come, and inserting it again is a fresh insertion.
                    return Ok(());
                }
                state.removed = Some(Removed {
                    slot,
                    generation,
                    region: Arc::downgrade(region),
                    flags,
                    deleted: true,
                    owed: flags & KVM_MEM_LOG_DIRTY_PAGES != 0,
                });
            }
        }
        Ok(())
    }

    /// The KVM flags of a newly registered slot of `region`: read-only if the guest may not
    /// write it.
    fn fresh_flags(&self, region: &Region) -> Result<u32> {
        if region.protection().writable() {
            Ok(0)
        } else if self.readonly {
            Ok(KVM_MEM_READONLY)
        } else {
            Err(Error::ReadOnlyUnsupported {
                base: region.base().0,
            })
        }
    }

    /// Changes the flags of a registered slot (dirty logging).
    pub(crate) fn set_flags(&self, state: &mut State, slot: u32, flags: u32) -> Result<()> {
        let Some(registered) = state.slots.get_mut(&slot) else {
            return Ok(());
        };
        self.set(slot, &registered.region, flags, Op::Add)?;
        registered.flags = flags;
        if flags & KVM_MEM_LOG_DIRTY_PAGES == 0 {
            state.all_dirty.remove(&slot);
        }
        Ok(())
    }

    /// One `KVM_SET_USER_MEMORY_REGION`.
    fn set(&self, slot: u32, region: &Region, flags: u32, op: Op) -> Result<()> {
        let base = region.base().0;
        let size = region.size();
        let Some(host) = region.host_ptr() else {
            return Ok(());
        };
        if usize::try_from(size).is_err() {
            return Err(Error::TooBig { base, size });
        }
        let memory_size = if op == Op::Add { size } else { 0 };
        #[cfg(test)]
        if self.refuses_next_call() {
            return Err(Error::SetMemoryRegion {
                slot,
                base,
                size: memory_size,
                flags,
                source: kvm_ioctls::Error::new(libc::EIO),
            });
        }
        #[cfg(test)]
        if op == Op::Delete
            && self
                .refuse_deletions
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(Error::SetMemoryRegion {
                slot,
                base,
                size: 0,
                flags,
                // ENOMEM: what KVM answers when it cannot allocate the new slot array.
                source: kvm_ioctls::Error::new(12),
            });
        }
        let mem = kvm_userspace_memory_region {
            slot,
            flags,
            guest_phys_addr: base,
            memory_size,
            userspace_addr: host as u64,
        };
        // SAFETY: on `Op::Add`, `host..host + size` is the region's live mapping, and the
        // caller keeps the `Arc<Region>` (so the mapping) in `State` until the slot is deleted
        // again (`Op::Delete`, or `Drop for Shared`, which leaks the region if that fails).
        // Deleting refers to no memory.
        unsafe { self.vm.set_user_memory_region(mem) }.map_err(|source| Error::SetMemoryRegion {
            slot,
            base,
            size: memory_size,
            flags,
            source,
        })
    }

    /// The slot KVM has for the region at `base`: not one kept after the undo of a refused
    /// insertion (stale), whose region the space does not hold.
    pub(crate) fn slot_of(state: &State, base: u64) -> Option<(u32, &Arc<Region>, u32)> {
        let slot = *state.by_base.get(&base)?;
        if state.stale.contains(&slot) {
            return None;
        }
        let r = state.slots.get(&slot)?;
        Some((slot, &r.region, r.flags))
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let state = std::mem::take(self.state.get_mut().unwrap_or_else(PoisonError::into_inner));
        for (slot, registered) in state.slots {
            if self
                .set(slot, &registered.region, registered.flags, Op::Delete)
                .is_err()
            {
                // KVM may still use the memory: keep it mapped for the life of the process.
                std::mem::forget(registered.region);
            }
        }
        release_vm(&self.vm);
    }
}

/// The VMs with a live [`Shared`]: the address of their `VmFd` and its descriptor (the
/// `Shared` keeps the `VmFd` alive, so no other `VmFd` can take that address, and the
/// descriptor stays open, meanwhile).
static ATTACHED: Mutex<Vec<(usize, RawFd)>> = Mutex::new(Vec::new());

/// Records that `vm` has memory slots attached.
///
/// # Errors
/// [`Error::AlreadyAttached`] if it has already: through the same `VmFd`, or through another
/// descriptor of the same VM (a `dup` of it, or one passed over a socket) where the kernel
/// compares open files ([`same_file`]).
fn claim_vm(vm: &Arc<VmFd>) -> Result<()> {
    let key = Arc::as_ptr(vm).addr();
    let fd = vm.as_raw_fd();
    let mut attached = ATTACHED.lock().unwrap_or_else(PoisonError::into_inner);
    if attached
        .iter()
        .any(|&(k, other)| k == key || same_file(fd, other) == Some(true))
    {
        return Err(Error::AlreadyAttached { vm_fd: fd });
    }
    attached.push((key, fd));
    Ok(())
}

/// Takes back the record of [`claim_vm`].
fn release_vm(vm: &Arc<VmFd>) {
    let key = Arc::as_ptr(vm).addr();
    let mut attached = ATTACHED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(i) = attached.iter().position(|&(k, _)| k == key) {
        attached.swap_remove(i);
    }
}

/// Whether the open descriptors `a` and `b` of this process refer to the same open file (so,
/// for KVM VM descriptors, the same VM: each `KVM_CREATE_VM` makes one file, and every other
/// descriptor of that VM is a duplicate of one of it). `None` if the kernel cannot say:
/// `kcmp(2)` missing (a kernel built without `CONFIG_KCMP`, another architecture) or refused
/// (a seccomp filter, a ptrace policy).
fn same_file(a: RawFd, b: RawFd) -> Option<bool> {
    if a == b {
        return Some(true);
    }
    let (Ok(a), Ok(b)) = (
        std::ffi::c_ulong::try_from(a),
        std::ffi::c_ulong::try_from(b),
    ) else {
        return None;
    };
    #[cfg(test)]
    if NO_KCMP.with(std::cell::Cell::get) {
        return None;
    }
    let number = KCMP?;
    let pid = std::ffi::c_long::from(std::process::id().cast_signed());
    // SAFETY: `kcmp(pid, pid, KCMP_FILE, a, b)` only compares two descriptors of this
    // process; it reads and writes no memory of ours.
    match unsafe { syscall(number, pid, pid, KCMP_FILE, a, b) } {
        0 => Some(true),
        n if n > 0 => Some(false),
        _ => None,
    }
}

#[cfg(test)]
thread_local! {
    /// Makes [`same_file`] answer as on a kernel without `kcmp`, on this thread.
    static NO_KCMP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
thread_local! {
    /// Makes [`MemorySlots::attach`] on this thread answer as for a KVM without
    /// `KVM_CAP_READONLY_MEM` (every x86 KVM has it).
    static NO_READONLY_MEM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `kcmp`'s system call number on this architecture, if known.
#[cfg(target_arch = "x86_64")]
const KCMP: Option<std::ffi::c_long> = Some(312);
#[cfg(target_arch = "x86")]
const KCMP: Option<std::ffi::c_long> = Some(349);
#[cfg(any(
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "loongarch64"
))]
const KCMP: Option<std::ffi::c_long> = Some(272);
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "loongarch64"
)))]
const KCMP: Option<std::ffi::c_long> = None;

/// `kcmp`'s comparison of two open files (`<linux/kcmp.h>`).
const KCMP_FILE: std::ffi::c_long = 0;

unsafe extern "C" {
    /// The C library's generic system call entry (`syscall(2)`): the result, or -1 with
    /// `errno` set.
    fn syscall(number: std::ffi::c_long, ...) -> std::ffi::c_long;
}

/// The region listener added to the address space. [`MemorySlots`] takes it out again when
/// dropped; a call already under way when that happens finds the slots gone and does nothing.
struct Listener(Weak<Shared>);

impl Drop for MemorySlots {
    fn drop(&mut self) {
        // The listener leaves the space first (waiting for a change in progress), then the
        // last strong reference to `shared` goes with this value and deletes every slot. Dropped
        // by a listener of the space during a change, it cannot leave: it stays, holding only a
        // weak reference, and finds the slots gone at every later change.
        let _ = self.space.remove_listener(&self.listener);
    }
}

impl memvisor_space::RegionListener for Listener {
    fn region_changed(&self, event: &RegionEvent<'_>) -> std::result::Result<(), ListenerError> {
        let Some(shared) = self.0.upgrade() else {
            return Ok(());
        };
        let mut state = shared.lock();
        shared
            .apply(
                &mut state,
                event.kind,
                event.region,
                event.slot,
                event.generation,
            )
            .map_err(ListenerError::from)
    }

    /// Tries again to delete the slots KVM kept when undoing a refused insertion: a plugged
    /// region's slot kept so holds its place in the hotplug window, and a writable region's
    /// over a file its file bytes (the space lists the region, as one whose undo failed), which
    /// the space checks right after this.
    fn settle(&self) {
        if let Some(shared) = self.0.upgrade() {
            drop(shared.locked());
        }
    }
}

#[cfg(all(test, target_arch = "x86_64", not(miri)))]
mod model;

#[cfg(all(test, target_arch = "x86_64", not(miri)))]
mod refused_calls;

#[cfg(all(test, target_arch = "x86_64", not(miri)))]
mod tests {
    use std::sync::atomic::Ordering;

    use memvisor_space::{Layout, RegionSpec, WindowKind};
    use vm_memory::GuestAddress;

    use super::*;

    #[test]
    fn count_by_size_is_a_walk_through_duplicate_and_huge_sizes_at_the_slot_limit() {
        // KVM's usual slot limit (the space's default): regions of 1 to 5 pages (each size
        // many times), one of 64 pages, and two of the largest size a region may have (the
        // largest a `usize` holds, page-aligned below 2^63), registered and deleted in an
        // order that deletes a largest one while another of its size is left.
        let count = memvisor_space::DEFAULT_SLOTS;
        let page = 0x1000;
        let huge = (1u64 << 62) - page;
        let big = count / 2;
        let size_of = |slot: u32| match slot {
            _ if slot == big => 64 * page,
            1 | 2 => huge,
            _ => (1 + u64::from(slot % 5)) * page,
        };
        let mut state = State::default();
        state.check_sizes("empty");
        for slot in 0..count {
            let base = if size_of(slot) == huge {
                u64::from(slot) << 62
            } else {
                (1 << 63) + (u64::from(slot) << 20)
            };
            let spec = RegionSpec::ram(GuestAddress(base), size_of(slot));
            let region = Arc::new(Region::plan(spec).unwrap());
            let registered = Registered {
                guest: region.range(),
                host_address: 0,
                region,
                flags: 0,
            };
            state.register(slot, registered);
        }
        state.check_sizes("all registered");
        assert_eq!(state.largest_size(), huge);
        // One of the two largest: the other is still the largest.
        assert_eq!(state.unregister(1).unwrap().region.size(), huge);
        state.check_sizes("one huge left");
        assert_eq!(state.largest_size(), huge);
        // A slot deleted twice: the second finds nothing and counts nothing.
        assert!(state.unregister(1).is_none());
        state.check_sizes("deleted twice");
        assert_eq!(state.unregister(2).unwrap().region.size(), huge);
        assert_eq!(state.largest_size(), 64 * page);
        assert_eq!(state.unregister(big).unwrap().region.size(), 64 * page);
        state.check_sizes("the 64-page region deleted");
        assert_eq!(state.largest_size(), 5 * page);
        // Down to one size, then none.
        for slot in (0..count).filter(|s| s % 5 == 4) {
            state.unregister(slot);
        }
        state.check_sizes("no 5-page region");
        assert_eq!(state.largest_size(), 4 * page);
        for slot in 0..count {
            state.unregister(slot);
        }
        state.check_sizes("none");
        assert_eq!(state.largest_size(), 0);
        assert!(state.sizes.is_empty());
    }

    /// Panics, naming `ctx`, unless `slots`' count of registered regions by size is what a
    /// walk over its slots counts (see [`State::check_sizes`]). Tries no kept slot's deletion
    /// again, so it changes nothing.
    pub(super) fn check_sizes(ctx: &str, slots: &MemorySlots) {
        slots.shared().lock().check_sizes(ctx);
    }

    #[test]
    fn slot_limit_stays_inside_the_slot_id_field() {
        assert_eq!(limit_of_reply(0), DEFAULT_KVM_SLOTS);
        assert_eq!(limit_of_reply(-22), DEFAULT_KVM_SLOTS);
        assert_eq!(limit_of_reply(509), 509);
        assert_eq!(limit_of_reply(32764), 32764);
        // Bits 16 and up of a slot number choose KVM's address space (SMM on x86): a number
        // there is no slot of the VM's ordinary memory, whatever the kernel answers.
        assert_eq!(MAX_MEMORY_SLOTS, 1 << 16);
        assert_eq!(limit_of_reply(1 << 16), MAX_MEMORY_SLOTS);
        assert_eq!(limit_of_reply((1 << 16) + 1), MAX_MEMORY_SLOTS);
        assert_eq!(limit_of_reply(i32::MAX), MAX_MEMORY_SLOTS);
    }

    /// The entry `registered` lists for KVM's slot `slot` over the region of `space` at
    /// `base` (its host address is that region's mapping).
    pub(super) fn entry(
        space: &AddressSpace,
        slot: u32,
        base: u64,
        size: u64,
        flags: u32,
    ) -> RegisteredSlot {
        let region = space
            .snapshot()
            .find_arc(GuestAddress(base))
            .unwrap_or_else(|| panic!("no region at {base:#x}"));
        RegisteredSlot {
            slot,
            guest: GuestRange::new(GuestAddress(base), size).unwrap(),
            host_address: region.host_ptr().unwrap() as u64,
            flags,
        }
    }

    /// The entry `registered` lists for KVM's slot `slot` over `region`, which the space need
    /// not hold (a slot KVM kept).
    pub(super) fn region_entry(region: &Region, slot: u32, flags: u32) -> RegisteredSlot {
        RegisteredSlot {
            slot,
            guest: region.range(),
            host_address: region.host_ptr().unwrap() as u64,
            flags,
        }
    }

    /// `entry`'s slot, guest base, size and flags, for the models, which do not hold host
    /// addresses (each caller checks those against the space's regions).
    pub(super) fn fields(entry: &RegisteredSlot) -> (u32, u64, u64, u32) {
        let size = entry.guest.size().unwrap();
        (entry.slot, entry.guest.start().0, size, entry.flags)
    }

    /// `region`'s slot, guest base and size.
    pub(super) fn lost_fields(region: &OutOfSyncRegion) -> (u32, u64, u64) {
        let size = region.guest.size().unwrap();
        (region.slot, region.guest.start().0, size)
    }

    /// The entry `out_of_sync` lists for the region at `base`, of memory slot `slot`.
    pub(super) fn lost(slot: u32, base: u64, size: u64) -> OutOfSyncRegion {
        OutOfSyncRegion {
            slot,
            guest: GuestRange::new(GuestAddress(base), size).unwrap(),
        }
    }

    /// A VM of the host's KVM, or `None` after saying loudly that `test` is skipped because
    /// `/dev/kvm` cannot be opened.
    pub(super) fn vm_or_skip(test: &str) -> Option<Arc<VmFd>> {
        let Ok(kvm) = kvm_ioctls::Kvm::new() else {
            eprintln!("\n*** SKIPPED {test}: /dev/kvm is not usable here ***\n");
            return None;
        };
        Some(Arc::new(kvm.create_vm().unwrap()))
    }

    /// A backed address space over 1 GiB of RAM, followed by a hotplug window of `hotplug`
    /// bytes unless 0, handing out `slots` memory-slot numbers (the space's default if
    /// `None`), holding `regions`.
    pub(super) fn space(hotplug: u64, slots: Option<u32>, regions: &[RegionSpec]) -> AddressSpace {
        let mut layout = Layout::x86_64().ram(1 << 30);
        if hotplug != 0 {
            layout = layout.hotplug(hotplug);
        }
        let mut builder = AddressSpace::builder(layout.build().unwrap()).regions(regions.to_vec());
        if let Some(slots) = slots {
            builder = builder.slots(slots);
        }
        builder.back().unwrap().0
    }

    /// Where the space's hotplug window starts.
    pub(super) fn hotplug_start(space: &AddressSpace) -> GuestAddress {
        space
            .layout()
            .windows_of(WindowKind::Hotplug)
            .next()
            .unwrap()
            .start()
    }

    /// A VM, a space as [`space`] makes it with the VM's slot limit, and the memory slots
    /// attached to both; `None` if `test` is skipped (see [`vm_or_skip`]).
    fn attached(
        test: &str,
        hotplug: u64,
        regions: &[RegionSpec],
    ) -> Option<(Arc<VmFd>, AddressSpace, MemorySlots)> {
        let vm = vm_or_skip(test)?;
        let space = space(hotplug, Some(slot_limit(&vm)), regions);
        let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
        Some((vm, space, slots))
    }

    /// A listener that refuses every change.
    pub(super) fn refusing() -> Arc<dyn RegionListener> {
        Arc::new(
            |_: &RegionEvent<'_>| -> std::result::Result<(), ListenerError> { Err("no".into()) },
        )
    }

    /// Makes KVM refuse (or no longer refuse) every slot deletion of `slots`.
    pub(super) fn refuse_deletions(slots: &MemorySlots, on: bool) {
        slots.shared.refuse_deletions.store(on, Ordering::Relaxed);
    }

    /// Makes KVM refuse (or no longer refuse) the deletion of every slot `slots` kept when
    /// undoing a refused insertion, tried again, while other deletions go through.
    pub(super) fn keep_stale(slots: &MemorySlots, on: bool) {
        slots.shared.keep_stale.store(on, Ordering::Relaxed);
    }

    #[test]
    fn attach_and_drop_by_a_listener_during_a_change_refuse_or_leave_nothing_behind() {
        use std::sync::Mutex;

        let Some(vm) = vm_or_skip("attach_and_drop_by_a_listener") else {
            return;
        };
        let space = space(0, Some(slot_limit(&vm)), &[]);
        // A listener that attaches the VM to the space it listens to, during a change.
        let result: Arc<Mutex<Option<Result<()>>>> = Arc::new(Mutex::new(None));
        let (v, s, r) = (Arc::clone(&vm), space.clone(), Arc::clone(&result));
        let attaching: Arc<dyn RegionListener> = Arc::new(move |_: &RegionEvent<'_>| {
            let attached = MemorySlots::attach(Arc::clone(&v), &s).map(drop);
            *r.lock().unwrap() = Some(attached);
            Ok::<(), ListenerError>(())
        });
        space.add_listener(Arc::clone(&attaching)).unwrap();
        let first = RegionSpec::ram(GuestAddress(0), 1 << 20);
        space
            .insert_region(Arc::new(Region::back(first).unwrap().0))
            .unwrap();
        assert!(space.remove_listener(&attaching).unwrap());
        let err = result.lock().unwrap().take().unwrap().unwrap_err();
        assert!(
            matches!(
                &err,
                Error::AttachDuringChange {
                    source: memvisor_space::Error::ListenerReentry { .. }
                }
            ),
            "{err:?}"
        );
        // Nothing was claimed: the VM attaches now.
        let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
        assert_eq!(slots.registered().len(), 1);

        // Dropped by a listener during a change: the slots go, the change goes on.
        let held = Arc::new(Mutex::new(Some(slots)));
        let h = Arc::clone(&held);
        let dropping: Arc<dyn RegionListener> = Arc::new(move |_: &RegionEvent<'_>| {
            drop(h.lock().unwrap().take());
            Ok::<(), ListenerError>(())
        });
        space.add_listener(Arc::clone(&dropping)).unwrap();
        let second = RegionSpec::ram(GuestAddress(4 << 20), 1 << 20);
        space
            .insert_region(Arc::new(Region::back(second).unwrap().0))
            .unwrap();
        assert!(held.lock().unwrap().is_none());
        assert!(space.remove_listener(&dropping).unwrap());
        assert_eq!(space.snapshot().len(), 2);
        // The VM is free again, and a later change reaches only the new slots.
        let again = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
        assert_eq!(again.registered().len(), 2);
        space.remove_region(GuestAddress(0), 1 << 20).unwrap();
        assert_eq!(again.registered().len(), 1);
    }

    #[test]
    fn same_file_tells_duplicates_from_other_vms_and_unknown_descriptors() {
        let Some(vm) = vm_or_skip("same_file_tells_duplicates") else {
            return;
        };
        let other = vm_or_skip("same_file_tells_duplicates").unwrap();
        // SAFETY: `vm` keeps its descriptor open while it is borrowed here.
        let dup = unsafe { std::os::fd::BorrowedFd::borrow_raw(vm.as_raw_fd()) }
            .try_clone_to_owned()
            .unwrap();
        let (fd, dup) = (vm.as_raw_fd(), std::os::fd::AsRawFd::as_raw_fd(&dup));
        assert_eq!(same_file(fd, fd), Some(true));
        assert_eq!(same_file(fd, dup), Some(true));
        assert_eq!(same_file(fd, other.as_raw_fd()), Some(false));
        // A descriptor that is not open: the kernel cannot compare, and nothing is claimed.
        assert_eq!(same_file(fd, i32::MAX), None);
        assert_eq!(same_file(fd, -1), None);
    }

    #[test]
    fn attach_without_kcmp_refuses_only_the_same_vm_fd() {
        let Some(vm) = vm_or_skip("attach_without_kcmp") else {
            return;
        };
        NO_KCMP.with(|no| no.set(true));
        // SAFETY: `vm` keeps its descriptor open while it is borrowed here.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(vm.as_raw_fd()) }
            .try_clone_to_owned()
            .unwrap();
        let kvm = kvm_ioctls::Kvm::new().unwrap();
        // SAFETY: `fd` is a fresh descriptor of a KVM VM, owned by nothing else.
        let twin = Arc::new(
            unsafe { kvm.create_vmfd_from_rawfd(std::os::fd::IntoRawFd::into_raw_fd(fd)) }.unwrap(),
        );
        assert_eq!(same_file(vm.as_raw_fd(), twin.as_raw_fd()), None);
        let space_a = space(0, None, &[RegionSpec::ram(GuestAddress(0), 1 << 20)]);
        let first = MemorySlots::attach(Arc::clone(&vm), &space_a).unwrap();
        // The same `VmFd` is still refused; a duplicate is not recognised (the documented
        // fallback), so it is attached, here to an empty space.
        assert!(matches!(
            MemorySlots::attach(Arc::clone(&vm), &space_a),
            Err(Error::AlreadyAttached { .. })
        ));
        let empty = space(0, None, &[]);
        let second = MemorySlots::attach(twin, &empty).unwrap();
        assert!(second.is_empty());
        assert_eq!(first.registered(), [entry(&space_a, 0, 0, 1 << 20, 0)]);
        NO_KCMP.with(|no| no.set(false));
    }

    /// Whether KVM holds guest memory at `addr` (the model test's probe, with a page of its
    /// own).
    fn kvm_holds(vm: &VmFd, addr: u64) -> bool {
        let probe = Region::back(RegionSpec::ram(GuestAddress(0), 0x1000))
            .unwrap()
            .0;
        super::model::kvm_has(vm, &probe, addr)
    }

    #[test]
    fn read_only_region_without_readonly_mem_is_refused_at_attach_and_insert() {
        let Some(vm) = vm_or_skip("read_only_region_without_readonly_mem") else {
            return;
        };
        NO_READONLY_MEM.with(|no| no.set(true));
        let rom = RegionSpec::ram(GuestAddress(4 << 20), 1 << 20)
            .with_protection(memvisor_space::Protection::Read);
        let ram = RegionSpec::ram(GuestAddress(0), 1 << 20);

        // At attach: refused with the region's base; slot 0, registered first, leaves KVM
        // again, and so does the listener.
        let boot = space(0, Some(slot_limit(&vm)), &[ram.clone(), rom.clone()]);
        let err = MemorySlots::attach(Arc::clone(&vm), &boot).unwrap_err();
        assert!(
            matches!(err, Error::ReadOnlyUnsupported { base: 0x40_0000 }),
            "{err}"
        );
        assert!(!kvm_holds(&vm, 0));
        assert!(!kvm_holds(&vm, 4 << 20));
        boot.remove_region(GuestAddress(4 << 20), 1 << 20).unwrap();

        // Inserted later: the space refuses the change and KVM and the slots stay as they were.
        let space = space(0, Some(slot_limit(&vm)), &[ram]);
        let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
        let before = slots.registered();
        let generation = space.snapshot().generation();
        let err = space
            .insert_region(Arc::new(Region::back(rom).unwrap().0))
            .unwrap_err();
        let memvisor_space::Error::Listener { source, .. } = &err else {
            panic!("{err}");
        };
        assert!(
            matches!(
                source.downcast_ref::<Error>(),
                Some(Error::ReadOnlyUnsupported { base: 0x40_0000 })
            ),
            "{err}"
        );
        assert_eq!(space.snapshot().generation(), generation);
        assert_eq!(space.snapshot().len(), 1);
        assert_eq!(slots.registered(), before);
        assert!(!kvm_holds(&vm, 4 << 20));
        // The number was given back: the next region takes it.
        let next = Region::back(RegionSpec::ram(GuestAddress(8 << 20), 1 << 20))
            .unwrap()
            .0;
        space.insert_region(Arc::new(next)).unwrap();
        assert_eq!(
            slots.registered(),
            [
                entry(&space, 0, 0, 1 << 20, 0),
                entry(&space, 1, 8 << 20, 1 << 20, 0)
            ]
        );
        NO_READONLY_MEM.with(|no| no.set(false));
    }

    #[test]
    fn attach_past_slot_limit_errors_and_deletes_registered() {
        let Some(vm) = vm_or_skip("attach_past_slot_limit") else {
            return;
        };
        let space = space(
            0,
            None,
            &[
                RegionSpec::ram(GuestAddress(0), 1 << 20),
                RegionSpec::ram(GuestAddress(1 << 20), 1 << 20),
            ],
        );
        let err = MemorySlots::attach_with_limit(Arc::clone(&vm), &space, 1).unwrap_err();
        assert!(
            matches!(
                err,
                Error::SlotLimit {
                    slot: 1,
                    base: 0x10_0000,
                    limit: 1
                }
            ),
            "{err}"
        );
        // Slot 0 left KVM again: the same range under another slot number does not overlap.
        let region = space.find_region(GuestAddress(0)).unwrap();
        let mem = kvm_userspace_memory_region {
            slot: 9,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: region.size(),
            userspace_addr: region.host_ptr().unwrap() as u64,
        };
        // SAFETY: the region's mapping outlives the VM (`vm` is dropped first below).
        unsafe { vm.set_user_memory_region(mem) }.unwrap();
        drop(vm);
        // The listener left the space with the failed attach: the change goes through.
        space.remove_region(GuestAddress(0), 1 << 20).unwrap();
    }

    #[test]
    fn insert_past_slot_limit_errors_and_leaves_space_and_kvm() {
        let Some(vm) = vm_or_skip("insert_past_slot_limit") else {
            return;
        };
        // The space hands out more numbers than the VM (limited to 2 here) accepts.
        let space = space(0, None, &[RegionSpec::ram(GuestAddress(0), 1 << 20)]);
        let slots = MemorySlots::attach_with_limit(Arc::clone(&vm), &space, 2).unwrap();
        let backed = |base: u64| {
            Arc::new(
                Region::back(RegionSpec::ram(GuestAddress(base), 1 << 20))
                    .unwrap()
                    .0,
            )
        };
        space.insert_region(backed(2 << 20)).unwrap();
        let before = slots.registered();
        let generation = space.snapshot().generation();
        let third = backed(4 << 20);
        let err = space.insert_region(Arc::clone(&third)).unwrap_err();
        let memvisor_space::Error::Listener { source, .. } = &err else {
            panic!("{err}");
        };
        assert!(
            matches!(
                source.downcast_ref::<Error>(),
                Some(Error::SlotLimit {
                    slot: 2,
                    base: 0x40_0000,
                    limit: 2
                })
            ),
            "{err}"
        );
        assert_eq!(space.snapshot().generation(), generation);
        assert_eq!(space.snapshot().len(), 2);
        assert_eq!(slots.registered(), before);
        // A number given back is taken again, within the limit.
        space.remove_region(GuestAddress(0), 1 << 20).unwrap();
        space.insert_region(third).unwrap();
        assert_eq!(
            slots.registered(),
            [
                entry(&space, 0, 4 << 20, 1 << 20, 0),
                entry(&space, 1, 2 << 20, 1 << 20, 0)
            ]
        );
    }

    /// Runs a real-mode guest at guest address 0 that writes one byte to `target` and halts.
    fn guest_writes_byte(vm: &VmFd, space: &AddressSpace, target: u16) {
        use vm_memory::Bytes;
        let [low, high] = target.to_le_bytes();
        // mov byte [target], 1; hlt
        let code = [0xc6, 0x06, low, high, 0x01, 0xf4];
        space.memory().write_slice(&code, GuestAddress(0)).unwrap();
        let mut vcpu = vm.create_vcpu(0).unwrap();
        let mut sregs = vcpu.get_sregs().unwrap();
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        sregs.ds.base = 0;
        sregs.ds.selector = 0;
        vcpu.set_sregs(&sregs).unwrap();
        let mut regs = vcpu.get_regs().unwrap();
        regs.rip = 0;
        regs.rflags = 2;
        vcpu.set_regs(&regs).unwrap();
        match vcpu.run().unwrap() {
            kvm_ioctls::VcpuExit::Hlt => {}
            exit => panic!("unexpected exit {exit:?}"),
        }
    }

    #[test]
    fn insert_after_kvm_refused_undo_of_refused_insertion_retries_deletion() {
        let Some((vm, space, slots)) = attached("insert_after_kvm_refused_undo", 0, &[]) else {
            return;
        };
        // A later listener refuses the insertion; KVM then refuses to delete the slot again.
        let refuse = refusing();
        space.add_listener(Arc::clone(&refuse)).unwrap();
        let first = Arc::new(
            Region::back(RegionSpec::ram(GuestAddress(0), 1 << 20))
                .unwrap()
                .0,
        );
        refuse_deletions(&slots, true);
        assert!(space.insert_region(Arc::clone(&first)).is_err());
        refuse_deletions(&slots, false);
        space.remove_listener(&refuse).unwrap();
        assert!(space.snapshot().is_empty());

        // The space gives slot 0 to the next region: the stale slot is deleted then, and the
        // new region takes the number.
        let second = Arc::new(
            Region::back(RegionSpec::ram(GuestAddress(4 << 20), 1 << 20))
                .unwrap()
                .0,
        );
        space.insert_region(Arc::clone(&second)).unwrap();
        assert_eq!(slots.registered(), [entry(&space, 0, 4 << 20, 1 << 20, 0)]);
        assert_eq!(slots.slot_at(GuestAddress(0)), None);
        // KVM let go of the first region: its range takes another slot, and no one else
        // holds it.
        let mem = kvm_userspace_memory_region {
            slot: 9,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: first.size(),
            userspace_addr: first.host_ptr().unwrap() as u64,
        };
        // SAFETY: `first` outlives the VM (`slots` and `vm` are dropped first below).
        unsafe { vm.set_user_memory_region(mem) }.unwrap();
        assert_eq!(Arc::strong_count(&first), 1);
        drop(slots);
        drop(vm);
    }

    /// Inserts `region` while a later listener refuses it and KVM refuses to delete the slot
    /// again: the slot stays in KVM although the space does not hold the region.
    fn insert_refused_with_refused_undo(
        space: &AddressSpace,
        slots: &MemorySlots,
        region: &Arc<Region>,
    ) {
        let refuse = refusing();
        space.add_listener(Arc::clone(&refuse)).unwrap();
        refuse_deletions(slots, true);
        assert!(space.insert_region(Arc::clone(region)).is_err());
        refuse_deletions(slots, false);
        space.remove_listener(&refuse).unwrap();
    }

    #[test]
    fn change_of_region_without_slot_retries_deletion_of_kept_slot() {
        let Some((vm, space, slots)) = attached("change_of_region_without_slot", 0, &[]) else {
            return;
        };
        let kept = Arc::new(
            Region::back(RegionSpec::ram(GuestAddress(0), 1 << 20))
                .unwrap()
                .0,
        );
        // KVM keeps the slot of a refused insertion, then agrees to let it go.
        insert_refused_with_refused_undo(&space, &slots, &kept);
        assert!(kvm_holds(&vm, 0));
        // A change of the space that gives KVM nothing to do (a region without host memory,
        // then one the guest cannot read) still tries the deletion again first: KVM lets go
        // and the region is released, with no query of the slots.
        let planned = Region::plan(RegionSpec::ram(GuestAddress(8 << 20), 1 << 20)).unwrap();
        space.insert_region(Arc::new(planned)).unwrap();
        assert!(!kvm_holds(&vm, 0));
        assert_eq!(Arc::strong_count(&kept), 1);

        insert_refused_with_refused_undo(&space, &slots, &kept);
        assert!(kvm_holds(&vm, 0));
        let hidden = Region::back(
            RegionSpec::ram(GuestAddress(16 << 20), 1 << 20)
                .with_protection(memvisor_space::Protection::None),
        )
        .unwrap()
        .0;
        space.insert_region(Arc::new(hidden)).unwrap();
        assert!(!kvm_holds(&vm, 0));
        assert_eq!(Arc::strong_count(&kept), 1);
        assert_eq!(slots.registered(), []);
    }

    /// The region of a refused insertion whose slot KVM would not delete again maps its file
    /// bytes in the guest as long as KVM keeps the slot, though the space never held it: a
    /// vCPU or device writing there would change a new region over the same bytes without its
    /// dirty log. So a region inserted or plugged over those bytes is refused
    /// (`FileAliased`) while KVM keeps the slot, and taken once KVM lets it go, which the
    /// insertion (as the plug) asks for first.
    #[test]
    fn file_region_kvm_keeps_after_refused_undo_is_an_alias_until_kvm_lets_it_go() {
        use memvisor_space::Backing;

        let Some((vm, space, slots)) = attached("file_region_kvm_keeps", 1 << 30, &[]) else {
            return;
        };
        // A planned region (no slot in KVM) holds number 0, so the refused one is given 1;
        // once the planned one is removed, a new region gets 0, which KVM does not hold.
        let planned = Region::plan(RegionSpec::ram(GuestAddress(16 << 20), 1 << 20)).unwrap();
        space.insert_region(Arc::new(planned)).unwrap();
        let dir =
            std::env::temp_dir().join(format!("memvisor-kvm-kept-alias-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("guest.img");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        let on_file = |base: u64, offset: u64| {
            RegionSpec::ram(GuestAddress(base), 2 << 20).with_backing(Backing::File {
                path: path.clone(),
                offset,
            })
        };
        let first = Arc::new(Region::back(on_file(0, 0)).unwrap().0);
        insert_refused_with_refused_undo(&space, &slots, &first);
        refuse_deletions(&slots, true);
        space
            .remove_region(GuestAddress(16 << 20), 1 << 20)
            .unwrap();
        assert!(space.snapshot().is_empty());
        assert!(kvm_holds(&vm, 0));
        assert_eq!(slots.registered(), [region_entry(&first, 1, 0)]);
        drop(first);

        let hotplug = hotplug_start(&space);
        let over = Arc::new(Region::back(on_file(4 << 20, 1 << 20)).unwrap().0);
        let err = space.insert_region(Arc::clone(&over)).unwrap_err();
        assert!(
            matches!(
                err,
                memvisor_space::Error::FileAliased {
                    base: 0x40_0000,
                    other_base: 0
                }
            ),
            "{err}"
        );
        let plugged = on_file(hotplug.0, 0).with_hotplug(true);
        let err = space.plug(plugged).unwrap_err();
        assert!(
            matches!(
                err,
                memvisor_space::Error::FileAliased { other_base: 0, .. }
            ),
            "{err}"
        );
        assert!(space.snapshot().is_empty());
        assert!(kvm_holds(&vm, 0));

        // KVM lets go: the insertion deletes the kept slot before it compares, and is taken.
        refuse_deletions(&slots, false);
        space.insert_region(Arc::clone(&over)).unwrap();
        assert!(!kvm_holds(&vm, 0));
        assert_eq!(slots.registered(), [entry(&space, 0, 4 << 20, 2 << 20, 0)]);
        drop(slots);
        drop(vm);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn registered_after_refused_undo_reports_slot_only_while_kvm_keeps_it() {
        let Some((vm, space, slots)) = attached("registered_after_refused_undo", 0, &[]) else {
            return;
        };
        let region = Arc::new(
            Region::back(RegionSpec::ram(GuestAddress(0), 1 << 20))
                .unwrap()
                .0,
        );
        // While KVM refuses, the slot is what KVM has.
        let refuse = refusing();
        space.add_listener(Arc::clone(&refuse)).unwrap();
        refuse_deletions(&slots, true);
        assert!(space.insert_region(Arc::clone(&region)).is_err());
        space.remove_listener(&refuse).unwrap();
        assert_eq!(slots.registered(), [region_entry(&region, 0, 0)]);
        assert_eq!(slots.len(), 1);
        // Once KVM lets go, it is gone, with no change of the space needed.
        refuse_deletions(&slots, false);
        assert_eq!(slots.registered(), []);
        assert!(slots.is_empty());
        assert_eq!(slots.slot_at(GuestAddress(0)), None);
        assert_eq!(Arc::strong_count(&region), 1);
        drop(slots);
        drop(vm);
    }

    /// Removes the 1 MiB region at `base` while a later listener puts memory of its own at that
    /// range in KVM (slot 9) and refuses the removal: KVM does not take the region's slot back,
    /// so the region is out of sync. Returns that memory, which must outlive slot 9
    /// ([`give_back_foreign_slot`]).
    pub(super) fn lose_to_foreign_memory(
        vm: &Arc<VmFd>,
        space: &AddressSpace,
        base: u64,
    ) -> Region {
        let foreign = Region::back(RegionSpec::ram(GuestAddress(0), 1 << 20))
            .unwrap()
            .0;
        let mem = kvm_userspace_memory_region {
            slot: 9,
            flags: 0,
            guest_phys_addr: base,
            memory_size: 1 << 20,
            userspace_addr: foreign.host_ptr().unwrap() as u64,
        };
        let v = Arc::clone(vm);
        let taking: Arc<dyn RegionListener> = Arc::new(move |e: &RegionEvent<'_>| {
            if e.kind == ChangeKind::Removed {
                // SAFETY: the caller deletes the slot before it drops `foreign`.
                unsafe { v.set_user_memory_region(mem) }.unwrap();
                return Err("not now".into());
            }
            Ok(())
        });
        space.add_listener(Arc::clone(&taking)).unwrap();
        assert!(space.remove_region(GuestAddress(base), 1 << 20).is_err());
        space.remove_listener(&taking).unwrap();
        foreign
    }

    /// Deletes the slot [`lose_to_foreign_memory`] put in KVM.
    pub(super) fn give_back_foreign_slot(vm: &VmFd) {
        let none = kvm_userspace_memory_region {
            slot: 9,
            ..Default::default()
        };
        // SAFETY: deleting a slot refers to no memory.
        unsafe { vm.set_user_memory_region(none) }.unwrap();
    }

    #[test]
    fn kvm_refusing_removal_of_mended_region_keeps_its_slot() {
        let Some((vm, space, slots)) = attached("kvm_refusing_removal_of_mended_region", 0, &[])
        else {
            return;
        };
        let region = Arc::new(
            Region::back(RegionSpec::ram(GuestAddress(0), 1 << 20))
                .unwrap()
                .0,
        );
        space.insert_region(Arc::clone(&region)).unwrap();
        let foreign = lose_to_foreign_memory(&vm, &space, 0);
        assert_eq!(slots.out_of_sync(), [lost(0, 0, 1 << 20)]);
        give_back_foreign_slot(&vm);
        // A refused removal mends it: its undo inserts the region, which KVM takes now.
        let refuse = refusing();
        space.add_listener(Arc::clone(&refuse)).unwrap();
        assert!(space.remove_region(GuestAddress(0), 1 << 20).is_err());
        space.remove_listener(&refuse).unwrap();
        assert_eq!(slots.registered(), [entry(&space, 0, 0, 1 << 20, 0)]);
        // The same removal again, refused by KVM: the space keeps the region, and KVM its slot,
        // also once KVM would let it go.
        refuse_deletions(&slots, true);
        assert!(space.remove_region(GuestAddress(0), 1 << 20).is_err());
        refuse_deletions(&slots, false);
        assert_eq!(space.snapshot().len(), 1);
        assert_eq!(slots.registered(), [entry(&space, 0, 0, 1 << 20, 0)]);
        assert!(kvm_holds(&vm, 0));
        assert!(slots.out_of_sync().is_empty());
        space.remove_region(GuestAddress(0), 1 << 20).unwrap();
        assert!(!kvm_holds(&vm, 0));
        drop(slots);
        drop(vm);
        drop(foreign);
    }

    #[test]
    fn lost_region_inserted_again_under_other_number_is_no_longer_out_of_sync() {
        let Some((vm, space, slots)) = attached("lost_region_inserted_again", 0, &[]) else {
            return;
        };
        let first = Arc::new(
            Region::back(RegionSpec::ram(GuestAddress(0), 1 << 20))
                .unwrap()
                .0,
        );
        let region = Arc::new(
            Region::back(RegionSpec::ram(GuestAddress(4 << 20), 1 << 20))
                .unwrap()
                .0,
        );
        space.insert_region(Arc::clone(&first)).unwrap();
        space.insert_region(Arc::clone(&region)).unwrap();
        assert_eq!(space.snapshot().slot(GuestAddress(4 << 20)), Some(1));
        // KVM does not take slot 1 back.
        let foreign = lose_to_foreign_memory(&vm, &space, 4 << 20);
        give_back_foreign_slot(&vm);
        assert_eq!(slots.out_of_sync(), [lost(1, 4 << 20, 1 << 20)]);
        // Both go; the lost region comes back under number 0, which KVM takes.
        space.remove_region(GuestAddress(0), 1 << 20).unwrap();
        space.remove_region(GuestAddress(4 << 20), 1 << 20).unwrap();
        space.insert_region(Arc::clone(&region)).unwrap();
        assert_eq!(space.snapshot().slot(GuestAddress(4 << 20)), Some(0));
        assert_eq!(slots.registered(), [entry(&space, 0, 4 << 20, 1 << 20, 0)]);
        assert!(kvm_holds(&vm, 4 << 20));
        assert_eq!(slots.out_of_sync(), []);
        drop(slots);
        drop(vm);
        drop(foreign);
    }

    #[test]
    fn plug_at_place_of_refused_undo_succeeds_once_kvm_lets_slot_go() {
        let Some((_vm, space, slots)) = attached("plug_at_place_of_refused_undo", 1 << 30, &[])
        else {
            return;
        };
        let base = hotplug_start(&space);
        let spec = RegionSpec::ram(base, 2 << 20).with_hotplug(true);
        // A later listener refuses the plug; KVM then refuses to delete the slot again, which
        // keeps the plugged memory mapped at its place.
        let refuse = refusing();
        space.add_listener(Arc::clone(&refuse)).unwrap();
        refuse_deletions(&slots, true);
        assert!(space.plug(spec.clone()).is_err());
        space.remove_listener(&refuse).unwrap();
        // While KVM still refuses, the kept slot holds the place.
        let err = space.plug(spec.clone()).unwrap_err();
        assert!(
            matches!(err, memvisor_space::Error::SlotBusy { .. }),
            "{err}"
        );
        assert!(space.snapshot().is_empty());
        refuse_deletions(&slots, false);
        // Once KVM agrees, the plug itself lets the kept slot go first: no query is needed.
        let (region, _) = space.plug(spec).unwrap();
        let state = slots.shared.lock();
        assert!(state.stale.is_empty());
        assert!(Arc::ptr_eq(&state.slots[&0].region, &region));
        drop(state);
        assert_eq!(slots.registered(), [entry(&space, 0, base.0, 2 << 20, 0)]);
    }

    #[test]
    fn insert_over_range_of_refused_undo_under_other_number_succeeds_once_kvm_agrees() {
        let regions = [
            RegionSpec::ram(GuestAddress(0), 1 << 20),
            RegionSpec::ram(GuestAddress(1 << 20), 1 << 20),
        ];
        let Some((_vm, space, slots)) = attached("insert_over_range_of_refused_undo", 0, &regions)
        else {
            return;
        };
        let backed = |base: u64| {
            Arc::new(
                Region::back(RegionSpec::ram(GuestAddress(base), 1 << 20))
                    .unwrap()
                    .0,
            )
        };
        // Slot 2 stays in KVM over 8 MiB; then slot 0 is given back.
        insert_refused_with_refused_undo(&space, &slots, &backed(8 << 20));
        space.remove_region(GuestAddress(0), 1 << 20).unwrap();
        // The next region over the same range gets number 0: KVM took slot 2 back first.
        space.insert_region(backed(8 << 20)).unwrap();
        assert_eq!(
            slots.registered(),
            [
                entry(&space, 0, 8 << 20, 1 << 20, 0),
                entry(&space, 1, 1 << 20, 1 << 20, 0)
            ]
        );
        assert_eq!(slots.slot_at(GuestAddress(8 << 20)), Some(0));
    }

    #[test]
    fn undone_removal_reports_guest_write_made_just_before_deletion() {
        let Some((vm, space, slots)) = attached(
            "undone_removal_reports_guest_write_made_just_before_deletion",
            0,
            &[RegionSpec::ram(GuestAddress(0), 1 << 20)],
        ) else {
            return;
        };
        vm.set_tss_address(0xfffb_d000).unwrap();
        slots.set_dirty_logging(GuestAddress(0), true).unwrap();
        let before = slots.registered();
        // The guest writes a page right before KVM deletes the slot (as a running vCPU may),
        // so no fetch before the deletion could give it; then a later listener refuses the
        // removal.
        let (hook_vm, hook_space) = (Arc::clone(&vm), space.clone());
        *slots.shared.before_deletion.lock().unwrap() = Some(Box::new(move || {
            guest_writes_byte(&hook_vm, &hook_space, 0x3000)
        }));
        let refuse = refusing();
        space.add_listener(Arc::clone(&refuse)).unwrap();
        assert!(space.remove_region(GuestAddress(0), 1 << 20).is_err());
        space.remove_listener(&refuse).unwrap();
        assert!(slots.shared.before_deletion.lock().unwrap().is_none());
        assert_eq!(slots.registered(), before);
        // The slot came back with a fresh log, but the write is in the next fetch: every page
        // is, since KVM dropped its log with the slot.
        let dirty = slots.fetch_dirty_log(GuestAddress(0)).unwrap();
        assert!(dirty.is_dirty(GuestAddress(0x3000)), "{:?}", dirty.words());
        assert_eq!(dirty.count(), dirty.pages());
        // Fetched once: the next fetch is clean.
        assert_eq!(slots.fetch_dirty_log(GuestAddress(0)).unwrap().count(), 0);
    }

    #[test]
    fn undone_removal_of_65_page_region_reports_exactly_its_pages() {
        let page = memvisor_vmem::page_size() as u64;
        let Some((_vm, space, slots)) = attached(
            "undone_removal_of_65_page_region",
            0,
            &[RegionSpec::ram(GuestAddress(0), 65 * page)],
        ) else {
            return;
        };
        slots.set_dirty_logging(GuestAddress(0), true).unwrap();
        let refuse = refusing();
        space.add_listener(Arc::clone(&refuse)).unwrap();
        assert!(space.remove_region(GuestAddress(0), 65 * page).is_err());
        space.remove_listener(&refuse).unwrap();
        // Every page of the region, and no bit past its last page: two words, the second
        // holding page 64 only.
        let dirty = slots.fetch_dirty_log(GuestAddress(0)).unwrap();
        assert_eq!(dirty.words(), [u64::MAX, 1]);
        assert_eq!(dirty.count(), 65);
        assert_eq!(dirty.dirty_pages().last(), Some(GuestAddress(64 * page)));
        // Into a bitmap of the VMM's own marks: the same pages, the marks kept.
        space.add_listener(Arc::clone(&refuse)).unwrap();
        assert!(space.remove_region(GuestAddress(0), 65 * page).is_err());
        space.remove_listener(&refuse).unwrap();
        let mut own = crate::DirtyBitmap::new(GuestAddress(0), 65 * page, page).unwrap();
        own.mark(GuestAddress(64 * page), 1);
        slots.fetch_dirty_log_into(&mut own).unwrap();
        assert_eq!(own.words(), [u64::MAX, 1]);
        assert_eq!(slots.fetch_dirty_log(GuestAddress(0)).unwrap().count(), 0);
    }

    #[test]
    fn log_buffer_shrinks_to_the_largest_region_held() {
        let page = memvisor_vmem::page_size();
        // One bit per page, whole 64-bit words, whole host pages.
        let log = |size: u64| {
            (usize::try_from(size).unwrap().div_ceil(page).div_ceil(64) * 8).next_multiple_of(page)
        };
        let (small, large) = (1 << 20, 512 << 20);
        let Some((_vm, space, slots)) = attached(
            "log_buffer_shrinks_to_the_largest_region_held",
            0,
            &[
                RegionSpec::ram(GuestAddress(0), small),
                RegionSpec::ram(GuestAddress(64 << 20), large),
            ],
        ) else {
            return;
        };
        let held = || slots.shared.log_buffer().held();
        assert_eq!(held(), 0);
        for base in [0, 64 << 20] {
            slots.set_dirty_logging(GuestAddress(base), true).unwrap();
        }
        slots.fetch_dirty_log(GuestAddress(64 << 20)).unwrap();
        assert_eq!(held(), log(large));
        // The large region is still held: fetching the small one keeps the buffer.
        slots.fetch_dirty_log(GuestAddress(0)).unwrap();
        assert_eq!(held(), log(large));

        // A removal that a later listener refuses comes back: the next fetch grows it again.
        let refuse = refusing();
        space.add_listener(Arc::clone(&refuse)).unwrap();
        assert!(space.remove_region(GuestAddress(64 << 20), large).is_err());
        space.remove_listener(&refuse).unwrap();
        let dirty = slots.fetch_dirty_log(GuestAddress(64 << 20)).unwrap();
        assert_eq!(dirty.count(), dirty.pages());
        assert_eq!(held(), log(large));

        // Removed: what is left is the log of the largest region held.
        space.remove_region(GuestAddress(64 << 20), large).unwrap();
        assert!(log(small) < log(large));
        assert_eq!(held(), log(small));
        assert_eq!(slots.fetch_dirty_log(GuestAddress(0)).unwrap().count(), 0);
        assert_eq!(held(), log(small));
        // Nothing held: nothing kept.
        space.remove_region(GuestAddress(0), small).unwrap();
        assert_eq!(held(), 0);
        // A region inserted again is fetched as before.
        let again = Arc::new(
            Region::back(RegionSpec::ram(GuestAddress(64 << 20), large))
                .unwrap()
                .0,
        );
        space.insert_region(again).unwrap();
        slots
            .set_dirty_logging(GuestAddress(64 << 20), true)
            .unwrap();
        assert_eq!(
            slots
                .fetch_dirty_log(GuestAddress(64 << 20))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(held(), log(large));
        drop(slots);
    }

    #[test]
    fn log_buffer_is_kept_through_plug_and_unplug_of_a_region_up_to_twice_the_largest_left() {
        let page = memvisor_vmem::page_size();
        let log = |size: u64| {
            (usize::try_from(size).unwrap().div_ceil(page).div_ceil(64) * 8).next_multiple_of(page)
        };
        // With 4 KiB pages: logs of 2, 4 and 6 pages.
        let (boot, dimm, larger) = (256 << 20, 512 << 20, 768 << 20);
        assert!(log(dimm) <= 2 * log(boot) && log(larger) > 2 * log(boot));
        let Some((_vm, space, slots)) = attached(
            "log_buffer_is_kept_through_plug_and_unplug",
            0,
            &[RegionSpec::ram(GuestAddress(0), boot)],
        ) else {
            return;
        };
        let held = || slots.shared.log_buffer().held();
        let at = GuestAddress(512 << 20);
        let plug_fetch_unplug = |size: u64| {
            let region = Region::back(RegionSpec::ram(at, size)).unwrap().0;
            space.insert_region(Arc::new(region)).unwrap();
            slots.set_dirty_logging(at, true).unwrap();
            assert_eq!(slots.fetch_dirty_log(at).unwrap().count(), 0);
            assert_eq!(held(), log(size));
            space.remove_region(at, size).unwrap();
        };
        // A region whose log is at most twice the largest one left: the buffer that served it
        // stays for the next plug, which fetches into it without reserving anew.
        for _ in 0..20 {
            plug_fetch_unplug(dimm);
            assert_eq!(held(), log(dimm));
        }
        // Larger than that: given back down to the largest region left.
        plug_fetch_unplug(larger);
        assert_eq!(held(), log(boot));
        // Nothing left: nothing kept.
        space.remove_region(GuestAddress(0), boot).unwrap();
        assert_eq!(held(), 0);
    }

    #[test]
    fn log_buffer_shrinks_when_a_refused_insertion_or_a_kept_slot_leaves_kvm() {
        let page = memvisor_vmem::page_size();
        let log = move |size: u64| {
            (usize::try_from(size).unwrap().div_ceil(page).div_ceil(64) * 8).next_multiple_of(page)
        };
        let (small, large) = (1 << 20, 512 << 20);
        let Some((_vm, space, slots)) = attached(
            "log_buffer_shrinks_when_a_refused_insertion_or_a_kept_slot_leaves_kvm",
            0,
            &[RegionSpec::ram(GuestAddress(0), small)],
        ) else {
            return;
        };
        let slots = Arc::new(slots);
        let big = GuestAddress(64 << 20);
        // A later listener fetches the log of the large region while its insertion is under
        // way (KVM has its slot), then refuses the insertion.
        let weak = Arc::downgrade(&slots);
        let fetch_then_refuse: Arc<dyn RegionListener> = Arc::new(
            move |event: &RegionEvent<'_>| -> std::result::Result<(), ListenerError> {
                if event.kind == ChangeKind::Inserted
                    && let Some(slots) = weak.upgrade()
                {
                    slots.set_dirty_logging(big, true).unwrap();
                    assert_eq!(slots.fetch_dirty_log(big).unwrap().count(), 0);
                    assert_eq!(slots.shared.log_buffer().held(), log(large));
                }
                Err("no".into())
            },
        );
        space.add_listener(Arc::clone(&fetch_then_refuse)).unwrap();
        let backed = || Arc::new(Region::back(RegionSpec::ram(big, large)).unwrap().0);
        // Undone: the slot leaves KVM, and the buffer shrinks to the small region's log.
        assert!(space.insert_region(backed()).is_err());
        assert_eq!(slots.registered(), [entry(&space, 0, 0, small, 0)]);
        assert_eq!(slots.shared.log_buffer().held(), log(small));
        // Undone, but KVM keeps the slot: so does the buffer, until KVM lets it go.
        refuse_deletions(&slots, true);
        assert!(space.insert_region(backed()).is_err());
        assert_eq!(slots.len(), 2);
        assert_eq!(slots.shared.log_buffer().held(), log(large));
        refuse_deletions(&slots, false);
        assert_eq!(slots.len(), 1);
        assert_eq!(slots.shared.log_buffer().held(), log(small));
        space.remove_listener(&fetch_then_refuse).unwrap();
    }

    #[test]
    fn log_buffer_shrinks_while_other_threads_fetch() {
        use std::sync::atomic::AtomicBool;

        let page = memvisor_vmem::page_size();
        let log = |size: u64| {
            (usize::try_from(size).unwrap().div_ceil(page).div_ceil(64) * 8).next_multiple_of(page)
        };
        let (small, large) = (1 << 20, 512 << 20);
        let Some((_vm, space, slots)) = attached(
            "log_buffer_shrinks_while_other_threads_fetch",
            0,
            &[RegionSpec::ram(GuestAddress(0), small)],
        ) else {
            return;
        };
        slots.set_dirty_logging(GuestAddress(0), true).unwrap();
        let big = GuestAddress(64 << 20);
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let fetchers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        while !done.load(Ordering::Relaxed) {
                            assert_eq!(slots.fetch_dirty_log(GuestAddress(0)).unwrap().count(), 0);
                            match slots.fetch_dirty_log(big) {
                                // Every page in the middle of a removal (KVM dropped the
                                // log with the slot), else none.
                                Ok(dirty) => {
                                    assert!(dirty.count() == 0 || dirty.count() == dirty.pages());
                                }
                                // Not inserted yet, or not logging yet.
                                Err(Error::NotRegistered { .. } | Error::DirtyLog { .. }) => {}
                                Err(e) => panic!("{e:?}"),
                            }
                        }
                    })
                })
                .collect();
            // Stops the fetchers also when an assertion below fails: the scope waits for them,
            // so the test would hang rather than fail.
            struct Done<'a>(&'a AtomicBool);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let stop = Done(&done);
            for _ in 0..50 {
                let region = Region::back(RegionSpec::ram(big, large)).unwrap().0;
                space.insert_region(Arc::new(region)).unwrap();
                slots.set_dirty_logging(big, true).unwrap();
                slots.fetch_dirty_log(big).unwrap();
                space.remove_region(big, large).unwrap();
                assert!(slots.shared.log_buffer().held() <= log(small));
            }
            drop(stop);
            for f in fetchers {
                f.join().unwrap();
            }
        });
        assert_eq!(slots.shared.log_buffer().held(), log(small));
    }

    #[test]
    fn remove_region_kvm_refuses_deletion_keeps_slot_and_dirty_log() {
        let Some((vm, space, slots)) = attached(
            "remove_region_kvm_refuses_deletion",
            0,
            &[RegionSpec::ram(GuestAddress(0), 1 << 20)],
        ) else {
            return;
        };
        vm.set_tss_address(0xfffb_d000).unwrap();
        slots.set_dirty_logging(GuestAddress(0), true).unwrap();
        let before = slots.registered();
        guest_writes_byte(&vm, &space, 0x3000);

        // Refused twice before a fetch: KVM keeps the slot, and its log, each time.
        refuse_deletions(&slots, true);
        for _ in 0..2 {
            let err = space.remove_region(GuestAddress(0), 1 << 20).unwrap_err();
            assert!(
                matches!(err, memvisor_space::Error::Listener { base: 0, .. }),
                "{err}"
            );
            assert_eq!(slots.registered(), before);
            assert_eq!(space.snapshot().len(), 1);
        }
        refuse_deletions(&slots, false);
        // No refused deletion touched KVM's log: the guest's write, and only it, is in the
        // next fetch.
        let dirty = slots.fetch_dirty_log(GuestAddress(0)).unwrap();
        assert_eq!(
            dirty.dirty_pages().collect::<Vec<_>>(),
            [GuestAddress(0x3000)]
        );
        // Fetched once: the next fetch is clean.
        assert_eq!(slots.fetch_dirty_log(GuestAddress(0)).unwrap().count(), 0);
        space.remove_region(GuestAddress(0), 1 << 20).unwrap();
        assert!(slots.is_empty());
    }

    #[test]
    fn dirty_log_methods_at_the_base_of_a_kept_slot_answer_not_registered() {
        let Some((vm, space, slots)) = attached(
            "dirty_log_methods_at_the_base_of_a_kept_slot",
            0,
            &[RegionSpec::ram(GuestAddress(0), 1 << 20)],
        ) else {
            return;
        };
        let at = GuestAddress(8 << 20);
        let kept = Arc::new(Region::back(RegionSpec::ram(at, 1 << 20)).unwrap().0);
        // The insertion is refused by a later listener and KVM keeps its slot (number 1),
        // which the space gave back.
        keep_stale(&slots, true);
        insert_refused_with_refused_undo(&space, &slots, &kept);
        assert_eq!(slots.registered()[1], region_entry(&kept, 1, 0));
        // The space holds a region without host memory there now: no slot of it.
        let planned = Region::plan(RegionSpec::ram(at, 1 << 20)).unwrap();
        space.insert_region(Arc::new(planned)).unwrap();
        // Neither the region the space holds there nor any other it holds is the kept slot's:
        // logging is not turned on for the kept slot, and no log of it is given.
        for result in [
            slots.set_dirty_logging(at, true),
            slots.fetch_dirty_log(at).map(drop),
            crate::DirtyBitmap::new(at, 1 << 20, memvisor_vmem::page_size() as u64)
                .and_then(|mut b| slots.fetch_dirty_log_into(&mut b)),
            slots.set_dirty_logging(at, false),
        ] {
            assert!(
                matches!(result, Err(Error::NotRegistered { base }) if base == at.0),
                "{result:?}"
            );
        }
        // KVM's slot is as it was: not logging (KVM answers `ENOENT`).
        assert_eq!(slots.registered()[1], region_entry(&kept, 1, 0));
        let err = vm.get_dirty_log(1, 1 << 20).unwrap_err();
        assert_eq!(err.errno(), libc::ENOENT);
        // Once KVM lets it go, the same answer.
        keep_stale(&slots, false);
        assert_eq!(slots.registered(), [entry(&space, 0, 0, 1 << 20, 0)]);
        assert!(matches!(
            slots.fetch_dirty_log(at),
            Err(Error::NotRegistered { .. })
        ));
    }

    #[test]
    fn region_out_of_sync_is_found_past_the_record_of_one_the_space_no_longer_holds() {
        let Some((vm, space, slots)) = attached("region_out_of_sync_is_found_past", 0, &[]) else {
            return;
        };
        let at = GuestAddress(4 << 20);
        let region = || Arc::new(Region::back(RegionSpec::ram(at, 1 << 20)).unwrap().0);
        // A region out of sync under number 0, removed for good; its record is not looked at
        // (no `out_of_sync` call) before the next one comes.
        space.insert_region(region()).unwrap();
        let first = lose_to_foreign_memory(&vm, &space, at.0);
        give_back_foreign_slot(&vm);
        space.remove_region(at, 1 << 20).unwrap();
        // Number 0 goes to a region the guest may not access (no slot), so the next region
        // at the same place gets number 1, logs, and is out of sync too.
        let hidden = RegionSpec::ram(GuestAddress(16 << 20), 1 << 20)
            .with_protection(memvisor_space::Protection::None);
        space
            .insert_region(Arc::new(Region::back(hidden).unwrap().0))
            .unwrap();
        space.insert_region(region()).unwrap();
        assert_eq!(slots.slot_at(at), Some(1));
        slots.set_dirty_logging(at, true).unwrap();
        let second = lose_to_foreign_memory(&vm, &space, at.0);
        // Its removal owes every page, once.
        let dirty = slots.fetch_dirty_log(at).unwrap();
        assert_eq!(dirty.count(), dirty.pages());
        assert_eq!(slots.fetch_dirty_log(at).unwrap().count(), 0);
        assert_eq!(slots.out_of_sync(), [lost(1, at.0, 1 << 20)]);
        give_back_foreign_slot(&vm);
        drop(slots);
        drop(vm);
        drop((first, second));
    }
}
