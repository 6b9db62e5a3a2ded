//! [`RegisteredSlot`] and [`OutOfSyncRegion`]: the entries [`MemorySlots::registered`] and
//! [`MemorySlots::out_of_sync`] list.
//!
//! [`MemorySlots::registered`]: crate::MemorySlots::registered
//! [`MemorySlots::out_of_sync`]: crate::MemorySlots::out_of_sync

use memvisor_space::GuestRange;

/// A memory slot KVM has: what [`MemorySlots::registered`](crate::MemorySlots::registered)
/// lists, the fields of the `kvm_userspace_memory_region` KVM was given for it.
///
/// It may get fields in a later version (those of `KVM_SET_USER_MEMORY_REGION2`'s
/// `guest_memfd`, should slots take them), so it is `#[non_exhaustive]`: code outside this
/// crate reads its fields and makes one with [`new`](Self::new), which gives any later field
/// the value of a slot without it.
///
/// ```
/// use memvisor_kvm::RegisteredSlot;
/// use memvisor_space::GuestRange;
/// use memvisor_space::vm_memory::GuestAddress;
///
/// let guest = GuestRange::new(GuestAddress(0), 1 << 20)?;
/// let entry = RegisteredSlot::new(0, guest, 0x7f00_0000_0000, 0);
/// assert_eq!(entry.guest.last(), GuestAddress(0xf_ffff));
/// # Ok::<(), memvisor_space::Error>(())
/// ```
///
/// A struct expression outside this crate does not compile:
///
/// ```compile_fail
/// # use memvisor_space::GuestRange;
/// # use memvisor_space::vm_memory::GuestAddress;
/// let entry = memvisor_kvm::RegisteredSlot {
///     slot: 0,
///     guest: GuestRange::new(GuestAddress(0), 1 << 20).unwrap(),
///     host_address: 0x7f00_0000_0000,
///     flags: 0,
/// };
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct RegisteredSlot {
    /// The memory-slot number (KVM's `slot`), the region's memvisor slot number.
    pub slot: u32,
    /// The guest physical addresses the slot maps (KVM's `guest_phys_addr` and
    /// `memory_size`): the region's range.
    pub guest: GuestRange,
    /// The host virtual address of the slot's memory (KVM's `userspace_addr`): the region's
    /// host pointer, which stays mapped while KVM has the slot.
    pub host_address: u64,
    /// KVM's flags for the slot: `KVM_MEM_LOG_DIRTY_PAGES` while dirty logging is on,
    /// `KVM_MEM_READONLY` for a region without write permission.
    pub flags: u32,
}

/// A region the address space holds with a memory slot but KVM does not: what
/// [`MemorySlots::out_of_sync`](crate::MemorySlots::out_of_sync) lists. `#[non_exhaustive]`
/// as [`RegisteredSlot`] is: made outside this crate with [`new`](Self::new).
///
/// ```
/// use memvisor_kvm::OutOfSyncRegion;
/// use memvisor_space::GuestRange;
/// use memvisor_space::vm_memory::GuestAddress;
///
/// let entry = OutOfSyncRegion::new(1, GuestRange::new(GuestAddress(1 << 20), 1 << 20)?);
/// assert_eq!(entry.guest.start(), GuestAddress(1 << 20));
/// # Ok::<(), memvisor_space::Error>(())
/// ```
///
/// A struct expression outside this crate does not compile:
///
/// ```compile_fail
/// # use memvisor_space::GuestRange;
/// # use memvisor_space::vm_memory::GuestAddress;
/// let guest = GuestRange::new(GuestAddress(1 << 20), 1 << 20).unwrap();
/// let entry = memvisor_kvm::OutOfSyncRegion { slot: 1, guest };
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct OutOfSyncRegion {
    /// The region's memvisor slot number, the slot KVM gets when it takes the region back.
    pub slot: u32,
    /// The guest physical addresses of the region.
    pub guest: GuestRange,
}

impl RegisteredSlot {
    /// The entry of KVM's slot `slot` mapping `guest` to the host memory at `host_address`,
    /// with KVM's `flags`.
    #[must_use]
    pub const fn new(slot: u32, guest: GuestRange, host_address: u64, flags: u32) -> Self {
        Self {
            slot,
            guest,
            host_address,
            flags,
        }
    }
}

impl OutOfSyncRegion {
    /// The entry of the region at `guest` under memory slot `slot`.
    #[must_use]
    pub const fn new(slot: u32, guest: GuestRange) -> Self {
        Self { slot, guest }
    }
}
