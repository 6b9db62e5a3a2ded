//! The crate's error type.

/// The error of a KVM system call, with the OS error code.
pub type KvmError = kvm_ioctls::Error;

/// Everything that can go wrong keeping KVM in sync with an address space. Variants carry the
/// values that caused them; a failed operation leaves KVM and the address space agreeing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `KVM_SET_USER_MEMORY_REGION` failed.
    #[error("KVM refused memory slot {slot} for {size:#x} bytes at {base:#x} (flags {flags:#x})")]
    SetMemoryRegion {
        /// The memory-slot number.
        slot: u32,
        /// The region's guest base.
        base: u64,
        /// The size asked for (0 when deleting).
        size: u64,
        /// The slot flags asked for.
        flags: u32,
        /// The OS error.
        #[source]
        source: KvmError,
    },
    /// A region's memory-slot number is not below the VM's slot limit.
    #[error(
        "memory slot {slot} of the region at {base:#x} is past the VM's limit of {limit} slots"
    )]
    SlotLimit {
        /// The memory-slot number.
        slot: u32,
        /// The region's guest base.
        base: u64,
        /// The number of slots the VM has (`KVM_CAP_NR_MEMSLOTS`).
        limit: u32,
    },
    /// The slot number is still registered for another region: its deletion from KVM failed,
    /// and failed again when retried for this region.
    #[error("memory slot {slot} asked for the region at {base:#x} is still held by another region")]
    SlotBusy {
        /// The memory-slot number.
        slot: u32,
        /// The region's guest base.
        base: u64,
    },
    /// The VM has a live [`MemorySlots`](crate::MemorySlots) already (through this `VmFd` or
    /// another descriptor of the same VM): a second one would manage the same KVM slot numbers.
    #[error("the VM (file descriptor {vm_fd}) has memory slots attached already")]
    AlreadyAttached {
        /// The VM's file descriptor.
        vm_fd: i32,
    },
    /// A read-only region, but this KVM has no `KVM_CAP_READONLY_MEM`.
    #[error("the region at {base:#x} is read-only, which this KVM cannot map")]
    ReadOnlyUnsupported {
        /// The region's guest base.
        base: u64,
    },
    /// A region too big for this host's address space.
    #[error("the region at {base:#x} of {size:#x} bytes does not fit this host's address space")]
    TooBig {
        /// The region's guest base.
        base: u64,
        /// Its size.
        size: u64,
    },
    /// No region starting at this address is registered with KVM.
    #[error("no region starting at {base:#x} is registered with KVM")]
    NotRegistered {
        /// The address asked for.
        base: u64,
    },
    /// `KVM_GET_DIRTY_LOG` failed (for example dirty logging is off for the slot), or, for a
    /// region whose removal is under way or that is out of sync (KVM has no slot for it then),
    /// the answer KVM gives a slot that does not log (`ENOENT`), made without asking KVM.
    #[error("fetching the dirty log of memory slot {slot} at {base:#x} failed")]
    DirtyLog {
        /// The memory-slot number.
        slot: u32,
        /// The region's guest base.
        base: u64,
        /// The OS error.
        #[source]
        source: KvmError,
    },
    /// A dirty bitmap of no pages, a page size that is not a power of two or is below the
    /// host page size, a range past `u64::MAX` or above 128 PiB, or one too big to allocate.
    #[error("no dirty bitmap for {size:#x} bytes at {base:#x} in pages of {page_size:#x} bytes")]
    InvalidBitmap {
        /// The range's base.
        base: u64,
        /// Its size.
        size: u64,
        /// The page size asked for.
        page_size: u64,
    },
    /// Two dirty bitmaps of different regions or page sizes were merged.
    #[error(
        "cannot merge the dirty bitmap of {other_size:#x} bytes at {other_base:#x} in pages of \
         {other_page_size:#x} bytes into the one of {size:#x} bytes at {base:#x} in pages of \
         {page_size:#x} bytes"
    )]
    BitmapMismatch {
        /// Base of the bitmap merged into.
        base: u64,
        /// Its size in bytes.
        size: u64,
        /// Its page size in bytes.
        page_size: u64,
        /// Base of the other bitmap.
        other_base: u64,
        /// Its size in bytes.
        other_size: u64,
        /// Its page size in bytes (for KVM's log, the host page size).
        other_page_size: u64,
    },
    /// [`MemorySlots::attach`](crate::MemorySlots::attach) was called by a listener of the
    /// address space during a change of it: the space cannot take a listener then
    /// ([`memvisor_space::Error::ListenerReentry`], the source). Nothing was registered.
    #[error("memory slots cannot be attached by a listener of the address space during a change")]
    AttachDuringChange {
        /// The address space's refusal.
        #[source]
        source: memvisor_space::Error,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_slot_limit_names_values() {
        let e = Error::SlotLimit {
            slot: 509,
            base: 0x1_0000_0000,
            limit: 509,
        };
        assert_eq!(
            e.to_string(),
            "memory slot 509 of the region at 0x100000000 is past the VM's limit of 509 slots"
        );
    }

    #[test]
    fn display_set_memory_region_keeps_source() {
        let e = Error::SetMemoryRegion {
            slot: 3,
            base: 0x1000,
            size: 0x2000,
            flags: 2,
            source: KvmError::new(libc_einval()),
        };
        assert_eq!(
            e.to_string(),
            "KVM refused memory slot 3 for 0x2000 bytes at 0x1000 (flags 0x2)"
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    fn libc_einval() -> i32 {
        22
    }

    #[test]
    fn display_of_every_variant_names_its_values() {
        let space_err = memvisor_space::Error::ListenerReentry {
            op: "AddressSpace::add_listener",
        };
        let cases = [
            (
                Error::SlotBusy {
                    slot: 7,
                    base: 0x20_0000,
                },
                "memory slot 7 asked for the region at 0x200000 is still held by another region",
            ),
            (
                Error::AlreadyAttached { vm_fd: 13 },
                "the VM (file descriptor 13) has memory slots attached already",
            ),
            (
                Error::ReadOnlyUnsupported { base: 0xd_0000 },
                "the region at 0xd0000 is read-only, which this KVM cannot map",
            ),
            (
                Error::TooBig {
                    base: 0x1_0000_0000,
                    size: 1 << 40,
                },
                "the region at 0x100000000 of 0x10000000000 bytes does not fit this host's \
                 address space",
            ),
            (
                Error::NotRegistered { base: 0x3000 },
                "no region starting at 0x3000 is registered with KVM",
            ),
            (
                Error::DirtyLog {
                    slot: 4,
                    base: 0x40_0000,
                    source: KvmError::new(6),
                },
                "fetching the dirty log of memory slot 4 at 0x400000 failed",
            ),
            (
                Error::InvalidBitmap {
                    base: 0x5000,
                    size: 0x6000,
                    page_size: 0x3000,
                },
                "no dirty bitmap for 0x6000 bytes at 0x5000 in pages of 0x3000 bytes",
            ),
            (
                Error::BitmapMismatch {
                    base: 0x1000,
                    size: 0x2000,
                    page_size: 0x1000,
                    other_base: 0x3000,
                    other_size: 0x4000,
                    other_page_size: 0x20_0000,
                },
                "cannot merge the dirty bitmap of 0x4000 bytes at 0x3000 in pages of 0x200000 \
                 bytes into the one of 0x2000 bytes at 0x1000 in pages of 0x1000 bytes",
            ),
            (
                Error::AttachDuringChange { source: space_err },
                "memory slots cannot be attached by a listener of the address space during a \
                 change",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
        // The OS error and the space's refusal stay reachable as sources.
        let e = Error::DirtyLog {
            slot: 4,
            base: 0,
            source: KvmError::new(6),
        };
        let source = std::error::Error::source(&e).unwrap();
        assert_eq!(source.downcast_ref::<KvmError>().unwrap().errno(), 6);
        let e = Error::AttachDuringChange {
            source: memvisor_space::Error::ListenerReentry {
                op: "AddressSpace::add_listener",
            },
        };
        assert!(std::error::Error::source(&e).is_some());
    }
}
