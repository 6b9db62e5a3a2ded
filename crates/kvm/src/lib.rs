//! KVM memory slots and dirty logging kept in sync with a memvisor address space.
//!
//! **Linux only**: on other systems the crate is empty. **64-bit hosts only**: vm-memory, under
//! `memvisor-space`, refuses to build for a 32-bit target such as i686, and kvm-ioctls does not
//! compile for 32-bit x86 (kvm-bindings has no KVM structures for it).
//!
//! - [`MemorySlots::attach`] registers every backed region of a [`memvisor_space::AddressSpace`] as
//!   a KVM user memory slot under its memvisor slot number and then follows every insertion and
//!   removal (hotplug, unplug) through a region listener. A slot KVM refuses makes the listener
//!   refuse, so the space rolls the change back.
//! - [`MemorySlots::registered`] lists the slots KVM has ([`RegisteredSlot`]), and
//!   [`MemorySlots::out_of_sync`] the regions it could not take back ([`OutOfSyncRegion`]).
//! - [`slot_limit`] reads `KVM_CAP_NR_MEMSLOTS`, to give the space's slot allocator.
//! - The VM is kvm-ioctls 0.24's `VmFd`: the crate re-exports that kvm-ioctls as [`kvm_ioctls`], so
//!   a program opens `/dev/kvm` and makes the VM with the version [`MemorySlots::attach`] and
//!   [`slot_limit`] take (`memvisor_kvm::kvm_ioctls::Kvm`), without a dependency of its own; one
//!   that has its own must ask for the same version (`kvm-ioctls = "0.24"`). Guest addresses are
//!   vm-memory's, re-exported by `memvisor-space` (`memvisor_space::vm_memory::GuestAddress`).
//! - [`MemorySlots::set_dirty_logging`] and [`MemorySlots::fetch_dirty_log_into`] turn KVM's dirty
//!   log on per region and merge it into a [`DirtyBitmap`].
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//!
//! use memvisor_kvm::kvm_ioctls::Kvm;
//! use memvisor_kvm::{MemorySlots, slot_limit};
//! use memvisor_space::vm_memory::GuestAddress;
//! use memvisor_space::{AddressSpace, GuestRange, Layout, RegionSpec, WindowKind};
//!
//! # if cfg!(miri) { return Ok(()); } // Miri cannot open /dev/kvm.
//! let Ok(kvm) = Kvm::new() else {
//!     eprintln!("no /dev/kvm: example skipped");
//!     return Ok(());
//! };
//! let vm = Arc::new(kvm.create_vm()?);
//! let layout = Layout::x86_64().ram(64 << 20).hotplug(1 << 30).build()?;
//! let ram = layout.ram_ranges(64 << 20)?;
//! let (space, _) = AddressSpace::builder(layout)
//!     .slots(slot_limit(&vm))
//!     .regions(ram.iter().map(|&(base, size)| RegionSpec::ram(base, size)))
//!     .back()?;
//! let slots = MemorySlots::attach(Arc::clone(&vm), &space)?;
//!
//! // A hotplugged region becomes a KVM slot before the space publishes it.
//! let base = space
//!     .snapshot()
//!     .placer()?
//!     .place(WindowKind::Hotplug, 2 << 20, 2 << 20, "dimm0")?
//!     .start();
//! space.plug(RegionSpec::ram(base, 2 << 20).with_hotplug(true))?;
//! assert_eq!(slots.slot_at(base), Some(1));
//! assert_eq!(slots.len(), 2);
//! // What KVM has, slot by slot: number, guest range, host address, flags.
//! let plugged = slots.registered()[1];
//! assert_eq!((plugged.slot, plugged.guest), (1, GuestRange::new(base, 2 << 20)?));
//! assert!(slots.out_of_sync().is_empty());
//!
//! // Dirty logging of the boot RAM.
//! slots.set_dirty_logging(GuestAddress(0), true)?;
//! let dirty = slots.fetch_dirty_log(GuestAddress(0))?;
//! assert_eq!(dirty.count(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg(target_os = "linux")]

mod dirty;
mod error;
mod slot_entry;
mod slots;

pub use dirty::DirtyBitmap;
pub use error::{Error, KvmError, Result};
/// The kvm-ioctls crate whose `VmFd` [`MemorySlots`] and [`slot_limit`] take, so that users
/// make their VM with the same version.
pub use kvm_ioctls;
pub use slot_entry::{OutOfSyncRegion, RegisteredSlot};
pub use slots::{MemorySlots, slot_limit};
