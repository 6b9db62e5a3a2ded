//! The guest physical address space of a virtual machine: typed regions in layout windows,
//! real backing memory (anonymous, memfd, hugetlbfs, file), NUMA binding, explicit and
//! transparent huge pages, parallel prefault, and hotplug with lock-free snapshots for readers.
//!
//! # Platforms
//!
//! Linux first and fully; the crate builds on every system `memvisor-vmem` supports (Linux,
//! macOS, FreeBSD, Windows). Layouts, platform presets, the placer, plans, region specs,
//! snapshots and the address space are the same everywhere, and so is private anonymous backing
//! (mapped over a `memvisor-vmem` reservation; on Windows the reservation's own committed
//! pages), prefault, read-only regions, dirty tracking and the hotplug window. What the host
//! system does not have is refused with [`Error::Unsupported`], naming the feature and the
//! systems that have it, before anything is made; never skipped:
//!
//! - only on Linux: [`Backing::Memfd`], [`Backing::Hugetlbfs`], [`NumaBinding`] (`mbind`),
//!   [`HugePages::Explicit`] and [`HugePages::Transparent`] (with a [`HugePageFallback`] other than
//!   `Fail`, base pages are used instead and the [`RegionReport`] says so), dontfork
//!   (`MADV_DONTFORK`) and [`Region::discard`];
//! - only on Unix systems (not Windows): [`Backing::AnonymousShared`], [`Backing::File`] and
//!   [`Snapshot::to_guest_memory_mmap`] (vm-memory's Windows mappings cannot be made over memory
//!   they do not own).
//!
//! Adopting vm-memory mappings ([`SpaceBuilder::adopt`], within the builder's memory-slot numbers,
//! or [`AddressSpace::from_guest_memory_mmap`] with the default ones) works everywhere.
//!
//! 64-bit hosts only: vm-memory, whose `GuestAddress` and memory traits this crate speaks,
//! refuses to build for a 32-bit target such as i686 (its `compile_error!`, "vm-memory only
//! supports 64-bit targets!"), so this crate does not build there either.
//!
//! # The pieces
//!
//! - [`RegionSpec`] describes a region: [`RegionType`] (RAM, device, DAX, firmware, reserved), base
//!   and size, [`Backing`], [`Protection`] (`memvisor-vmem`'s), [`HugePages`], [`NumaBinding`],
//!   hotplug, dontfork and prefault, each set with a `with_` method and read back with the method
//!   of the same name without it ([`RegionSpec::with_backing`], [`RegionSpec::backing`]).
//! - [`Layout`] holds the windows each type must sit in, with [`Layout::x86_64`] and
//!   [`Layout::aarch64`] presets; a [`Platform`] adds the architecture's interrupts, legacy ports
//!   and reserved ranges; a [`Placer`] finds free ranges, interrupts and ports for named owners
//!   with `memvisor-resources`, all or nothing; [`plan::plan`] lays a whole VM out with them. Plans
//!   read nothing from the host: regions align to the guest page, and the host page size is checked
//!   only when backing.
//! - [`AddressSpace`] checks regions (typed [`Error`]s, never a panic), gives them memory
//!   ([`SpaceBuilder::back`], with a [`BackingReport`] of what was done) or not
//!   ([`SpaceBuilder::plan`]), and publishes immutable [`Snapshot`]s. Readers look addresses up in
//!   O(log n) without locks; writers ([`AddressSpace::insert_region`],
//!   [`AddressSpace::remove_region`], [`AddressSpace::plug`]) are serialized and tell
//!   [`RegionListener`]s of each change.
//! - A [`Snapshot`] implements vm-memory's `GuestMemoryBackend` (so `vm_memory::Bytes` works on
//!   it), a [`Region`] implements `GuestMemoryRegion`, and [`AddressSpace`] implements
//!   `GuestAddressSpace`, so rust-vmm device crates can use them directly. Those traits are
//!   vm-memory 0.18's: the crate re-exports that vm-memory as [`vm_memory`], so a program names its
//!   traits and types (`memvisor_space::vm_memory::{Bytes, GuestAddress}`) without a dependency of
//!   its own; one that has its own must ask for the same version (`vm-memory = "0.18"`), as another
//!   version's traits are not implemented.
//!
//! # Coming from dbs-address-space
//!
//! | dbs-address-space | memvisor-space |
//! | --- | --- |
//! | `AddressSpaceRegion` | [`RegionSpec`] (what to make) and [`Region`] (what was made) |
//! | `AddressSpaceRegionType::{DefaultMemory, DeviceMemory, DAXMemory}` | [`RegionType::Ram`], [`RegionType::Device`], [`RegionType::Dax`] (and `Firmware`, `Reserved`) |
//! | `create_default_memory_region(.., mem_type, ..)`: `"mmap"` / `"hugemmap"` | [`RegionSpec::ram`] with [`Backing::AnonymousPrivate`], plus [`HugePages::Transparent`] for the huge variant |
//! | `mem_type` `"shmem"` / `"hugeshmem"` | [`Backing::Memfd`] (or [`Backing::AnonymousShared`]), plus [`HugePages::Transparent`] |
//! | `mem_type` `"hugetlbfs"` with a file path | [`Backing::Hugetlbfs`] with a directory on the mount (the file is made and unlinked there) and [`HugePages::Explicit`] |
//! | `mem_prealloc` | [`RegionSpec::with_prefault_threads`] (really populates, in parallel) |
//! | `host_numa_node_id` | [`RegionSpec::with_numa`] ([`NumaBinding`], applied with `mbind`) |
//! | `is_anon` (`MADV_DONTFORK`) | [`RegionSpec::with_dontfork`] |
//! | `is_hotplug` (a hint) | a rule: hot-pluggable RAM must lie in the layout's hotplug window ([`Error::OutsideWindow`]), plugged with [`AddressSpace::plug`] |
//! | `AddressSpaceLayout::new(phys_end, mem_start, mem_end)` | [`Layout`], with [`Layout::x86_64`] and [`Layout::aarch64`] presets |
//! | `AddressSpace::from_regions` (panics on bad input) | [`AddressSpace::builder`] then [`SpaceBuilder::plan`] or [`SpaceBuilder::back`] (typed [`Error`]s) |
//! | `insert_region`, `remove_region` | [`AddressSpace::insert_region`], [`AddressSpace::remove_region`] ([`RegionListener`]s told) |
//! | `walk_regions` | [`Snapshot::regions`] |
//! | `is_dax_region`, `numa_node_id` | [`Snapshot::is_dax`], [`Snapshot::numa_node`] |
//! | `last_addr` (last address of the highest region that is not DAX) | [`Snapshot::last_ram_addr`] (RAM only) or [`Snapshot::last_region_addr`] (any type); the old value is `regions().filter(|r| !r.is_dax()).map(Region::last).max()` |
//!
//! Differences to know: [`Backing::File`] maps a file by path, shared; for a file already open
//! or a private (copy-on-write) file mapping (`file_offset` with other `perm_flags`), make a
//! vm-memory `GuestRegionMmap` and adopt it with [`Region::from_guest_region_mmap`] — such a
//! region gets no NUMA binding, dontfork or prefault from this crate, and refuses
//! [`Region::discard`]. Not provided: vCPU ids per guest NUMA node (dbs's `NumaIdTable`; a
//! VMM's ACPI code keeps them) and regions over raw host pointers (`GuestRegionRaw`).
//!
//! # Example
//!
//! A VM with 64 MiB of RAM, a device window, and a hotplug window into which 2 MiB of RAM is
//! plugged later, contiguous on the host with the window's other slots:
//!
//! ```
//! use memvisor_space::{
//!     AddressSpace, Backing, ChangeKind, HugePageFallback, HugePages, Layout, RegionEvent,
//!     RegionSpec, RegionType, WindowKind,
//! };
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//!
//! use memvisor_space::vm_memory::{Bytes, GuestAddress};
//!
//! # if cfg!(miri) { return Ok(()); } // Miri cannot map memory.
//! # if !cfg!(target_os = "linux") { return Ok(()); } // Memfds are Linux's.
//! let layout = Layout::x86_64().ram(64 << 20).hotplug(1 << 30).build()?;
//!
//! // Place a device's MMIO window with the layout's placer.
//! let mut placer = layout.placer();
//! let net = placer.place(WindowKind::Device, 0x1000, 0x1000, "net0")?;
//! let mmio = net.start();
//!
//! let ram = layout.ram_ranges(64 << 20)?;
//! let mut specs: Vec<RegionSpec> = ram
//!     .iter()
//!     .map(|&(base, size)| {
//!         RegionSpec::ram(base, size)
//!             .with_backing(Backing::Memfd)
//!             .with_huge_pages(HugePages::Transparent)
//!             // Base pages (and a warning in the report) if the host's shmem setting is `never`.
//!             .with_fallback(HugePageFallback::BasePages)
//!             .with_prefault_threads(2)
//!     })
//!     .collect();
//! specs.push(RegionSpec::for_range(RegionType::Device, net)?);
//!
//! let (space, report) = AddressSpace::back(layout, specs)?;
//! assert_eq!(report.total_bytes(), 64 << 20);
//!
//! // Guest memory through vm-memory's traits.
//! let mem = space.memory();
//! mem.write_obj(0x1234_5678_u32, GuestAddress(0x1000)).unwrap();
//! assert_eq!(mem.read_obj::<u32>(GuestAddress(0x1000)).unwrap(), 0x1234_5678);
//! assert_eq!(mem.region_type(mmio), Some(RegionType::Device));
//! assert_eq!(mem.last_ram_addr(), Some(GuestAddress((64 << 20) - 1)));
//! drop(mem);
//!
//! // Count changes, as a KVM memory-slot updater would see them.
//! let plugged = Arc::new(AtomicUsize::new(0));
//! let seen = Arc::clone(&plugged);
//! space.add_listener(Arc::new(move |e: &RegionEvent<'_>| {
//!     if e.kind == ChangeKind::Inserted {
//!         seen.fetch_add(1, Ordering::Relaxed);
//!     }
//!     Ok(())
//! }))?;
//!
//! // Hot-plug 2 MiB at the first free slot of the hotplug window.
//! let slot = space.snapshot().placer()?.place(WindowKind::Hotplug, 2 << 20, 2 << 20, "slot0")?;
//! let slot = slot.start();
//! let (region, plug_report) = space.plug(RegionSpec::ram(slot, 2 << 20).with_hotplug(true))?;
//! assert!(plug_report.in_hotplug_window);
//! assert_eq!(plugged.load(Ordering::Relaxed), 1);
//! space.memory().write_obj(7u8, slot).unwrap();
//!
//! // Unplug: readers holding older snapshots keep the memory until they drop them.
//! space.remove_region(region.base(), region.size())?;
//! assert!(space.memory().find_region(slot).is_none());
//! # Ok::<(), memvisor_space::Error>(())
//! ```

mod alias;
mod bytes;
mod error;
mod firmware;
mod layout;
mod memory;
mod placer;
pub mod plan;
mod platform;
mod range;
mod region;
mod snapshot;
mod space;
mod spec;
mod sys;

pub use bytes::GuestBytes;
pub use error::{Error, ListenerError, Result};
pub use firmware::{
    E820_MAX_ENTRIES, LEGACY_HOLE, LINUX_MAX_NUMNODES, LINUX_MOST_NUMNODES, MemoryMapEntry,
    MemoryType, NumaRange,
};
pub use layout::{Layout, LayoutBuilder, Window, WindowKind};
pub use memory::{BackingReport, RegionReport};
/// memvisor-resources, whose `AddressRange` [`GuestRange::as_range`] returns and whose `Error`
/// [`Error::Allocator`] carries.
pub use memvisor_resources;
/// memvisor-vmem, whose `Error` [`Error::Reservation`] and other host failures carry.
pub use memvisor_vmem;
pub use placer::{AllocatorsRefused, Placer, PlacerAllocators};
pub use platform::{Arch, Platform, Reservation, ReservationKind, SerialPreset};
pub use range::GuestRange;
pub use region::{Region, RegionRef};
pub use snapshot::Snapshot;
pub use space::{
    AddressSpace, ChangeKind, DEFAULT_SLOTS, RegionEvent, RegionListener, SnapshotGuard,
    SpaceBuilder, SpaceReader,
};
pub use spec::{
    Backing, GUEST_PAGE_SIZE, HugePageFallback, HugePageSize, HugePages, MAX_PREFAULT_THREADS,
    NumaBinding, NumaPolicy, Protection, RegionSpec, RegionType,
};
/// The vm-memory crate whose traits the space, its snapshots and regions implement, so that
/// users name the same version of them.
pub use vm_memory;
