//! ID and address-range allocators for virtual machine monitors.
//!
//! A VMM hands out interrupt numbers (GSIs), memory-slot numbers, device IDs and MMIO/PIO
//! address ranges for the whole life of a VM. This crate keeps that bookkeeping, with no OS
//! calls:
//!
//! - [`IdAllocator`]: `u32` IDs ([`IdAllocator::new`]; `u16` or `u64` ones with
//!   [`IdAllocator::with_range`]) from an inclusive range, smallest free first, a specific ID or
//!   run, any `n` free IDs, or a contiguous aligned run; about one bit per ID.
//! - [`AddressAllocator`]: ranges of a `u64` space placed first-fit, last-fit or exactly, with any
//!   power-of-two alignment, optionally inside a window; reservations, owner tags, lookup, and
//!   relocation that cannot lose a range, growing or shrinking the space. O(log n) worst case per
//!   operation, whatever the addresses (an AVL index), except that a placement passes over each gap
//!   large enough in size but unusable for its alignment or window at O(log n) apiece: with every
//!   gap misaligned, an aligned request visits them all. What a refusal over the whole space proves
//!   is kept per alignment, and recent frees are tracked, so asking again fails at once and a
//!   request after a few frees searches only the freed ranges (see DESIGN.md).
//! - [`AllocatorSet`]: several disjoint address spaces behind one allocator, tried in order, with a
//!   minimum and a preferred alignment.
//! - [`RoomTree`]: upper bounds on the largest free range of many allocators in a max tree, to find
//!   the first one that may hold a size in O(log n) (what [`AllocatorSet`] keeps; the placer of
//!   `memvisor-space` keeps one per window kind).
//! - [`AddressRange`]: a checked inclusive range that can reach `u64::MAX`.
//!
//! Every failure is an [`Error`] that carries the offending values, and a failed call leaves
//! the allocator exactly as it was: equal to what it was before, and printed the same by
//! `Debug`, which shows what an allocator holds rather than its index. With the `serde` feature
//! both allocators serialize to one canonical form and loading checks it completely, so a
//! crafted snapshot cannot make an allocator hand out anything twice.
//!
//! Tags (the owner of each range: any `T`, for example a device handle, a file or an `Arc`)
//! are moved in on success only. The `try_` methods
//! ([`AddressAllocator::try_allocate_with`], [`AddressAllocator::try_reserve_with`], and on
//! [`AllocatorSet`] `try_allocate_with`, `try_reserve_with`, `try_allocate_keyed` and
//! `try_reserve_keyed`) hand the tag back on refusal in a [`Refused`], with the error; `?`
//! still turns that into an [`Error`]. The plain forms (`allocate_with`, `reserve_with`, ...)
//! drop the tag on refusal.
//!
//! # Example
//!
//! Lay out the devices of a small VM: GSIs for legacy interrupts, a run of MSI vectors, a
//! 32-bit MMIO window with a hole, and a 64-bit BAR placed from the top.
//!
//! ```
//! use memvisor_resources::{
//!     AddressAllocator, AllocPolicy, Error, IdAllocator, AddressRange, Request,
//! };
//!
//! // Interrupts 5..=23 for legacy devices.
//! let mut gsis = IdAllocator::new(5, 23)?;
//! let serial = gsis.allocate_id()?;
//! let rtc = gsis.allocate_id_at(8)?;
//! assert_eq!((serial, rtc), (5, 8));
//! // Four MSI vectors, contiguous and aligned to four.
//! assert_eq!(gsis.allocate_ids(4, 4)?, 12..=15);
//! assert_eq!(gsis.free_id(9), Err(Error::IdNeverAllocated(9)));
//!
//! // MMIO below 4 GiB, each range tagged with the device that owns it.
//! let mmio32 = AddressRange::new(0xc000_0000, 0xffff_ffff)?;
//! let mut mmio = AddressAllocator::<&str>::new(mmio32);
//! // The interrupt controller's fixed window is a hole nobody else may use.
//! mmio.reserve_with(AddressRange::from_start_and_size(0xfec0_0000, 0x10_0000)?, "ioapic")?;
//! let page = Request::new(0x1000, 0x1000, AllocPolicy::FirstMatch)?;
//! let virtio_net = mmio.allocate_with(&page, "virtio-net")?;
//! assert_eq!(virtio_net.start(), 0xc000_0000);
//! // A 256 MiB BAR from the top of the window, below the hole.
//! let bar = Request::new(0x1000_0000, 0x1000_0000, AllocPolicy::LastMatch)?
//!     .within(AddressRange::new(0xc000_0000, 0xfebf_ffff)?);
//! let gpu = mmio.allocate_with(&bar, "gpu")?;
//! assert_eq!(gpu, AddressRange::new(0xe000_0000, 0xefff_ffff)?);
//!
//! // Who owns an address? Which ranges does a device own?
//! assert_eq!(mmio.allocation_containing(0xe000_1234).map(|a| *a.tag), Some("gpu"));
//! assert_eq!(mmio.find_tagged(&"virtio-net").collect::<Vec<_>>(), [virtio_net]);
//!
//! // The guest moves the BAR: the old range stays valid until the new one is placed.
//! let moved = mmio.relocate(&gpu, &Request::new(0x1000_0000, 0x1000_0000, AllocPolicy::ExactMatch(0xd000_0000))?)?;
//! assert_eq!(moved.start(), 0xd000_0000);
//! // Asking for something that overlaps fails with the culprit and changes nothing.
//! assert_eq!(
//!     mmio.reserve_with(AddressRange::new(0xd000_0000, 0xd000_0fff)?, "rogue"),
//!     Err(Error::Overlap {
//!         requested: AddressRange::new(0xd000_0000, 0xd000_0fff)?,
//!         existing: moved,
//!     })
//! );
//! assert_eq!(mmio.len(), 3);
//! assert_eq!(mmio.used(), 0x10_0000 + 0x1000 + 0x1000_0000);
//! assert_eq!(mmio.free(&virtio_net)?, "virtio-net");
//! # Ok::<(), Error>(())
//! ```
//!
//! # Coming from vm-allocator or crosvm
//!
//! | vm-allocator 0.1 | crosvm `resources` | memvisor-resources |
//! | --- | --- | --- |
//! | `RangeInclusive` | `AddressRange` | [`AddressRange`] (inclusive end, checked constructors; `[0, u64::MAX]` is a valid range, [`AddressRange::FULL`], which `RangeInclusive::new` refuses) |
//! | `AddressAllocator::new(base, size)` | `AddressAllocator::new(pool, min_align, preferred_align)` | [`AddressAllocator::with_base_and_size`] (untagged) or [`AddressAllocator::new`] with an [`AddressRange`] (tagged) |
//! | `allocate(size, align, AllocPolicy)` | `allocate(size, Alloc, tag)` / `allocate_with_align` | [`AddressAllocator::allocate`] (default tag) or [`AddressAllocator::allocate_with`] with a [`Request`] and a tag |
//! | `Constraint::new(size, align, policy)`, `size()`, `align()` | — | [`Request::new`] (the same checks, in the same order: [`Error::ZeroSize`], [`Error::InvalidAlignment`], [`Error::UnalignedAddress`]; and one more, [`Error::Overflow`] for an exact range past `u64::MAX`, which `Constraint::new` accepts and vm-allocator's `allocate` refuses later), [`Request::size`], [`Request::alignment`], [`Request::policy`]; [`Request::within`] adds a window |
//! | `DEFAULT_CONSTRAINT_ALIGN` (4) | — | no default: every [`Request`] names its alignment (pass 4 for the same requests); an [`AllocatorSet`] can impose a minimum and a preferred one ([`AllocatorSet::with_alignment`]) |
//! | `AllocPolicy::ExactMatch(addr)` | `allocate_at(range, alloc, tag)` | [`AllocPolicy::ExactMatch`] or [`AddressAllocator::reserve_with`] |
//! | — | — | [`AddressAllocator::try_allocate_with`], [`AddressAllocator::try_reserve_with`]: the tag back on refusal ([`Refused`]) |
//! | `free(&range)` | `release(alloc)` / `release_containing(addr)` | [`AddressAllocator::free`] (returns the tag) / [`AddressAllocator::release_containing`] |
//! | — | `get(&alloc)` | [`AddressAllocator::allocation_containing`], [`AddressAllocator::find_tagged`] |
//! | `IdAllocator::new(start, end)` | `SystemAllocator` GSI pools | [`IdAllocator::new`] |
//! | `AddressAllocator::base()`, `end()` | — | [`AddressAllocator::space`] (one [`AddressRange`]) |
//! | `allocate_id()`, `free_id(id)` (returns the ID) | `allocate_irq()`, `release_irq(irq)` | [`IdAllocator::allocate_id`], [`IdAllocator::free_id`] (returns `()`: the caller has the ID) |
//! | — | — | [`IdAllocator::allocate_ids`] (contiguous, aligned), [`IdAllocator::allocate_ids_at`], [`IdAllocator::allocate_many`] (any free IDs) |
//!
//! Differences to know: every failure is a typed [`Error`] carrying the values involved and
//! leaves the allocator unchanged; ranges may end at `u64::MAX`; allocation sizes are `u64` and
//! counts of used units `u128`. Placement is always the lowest (`FirstMatch`) or highest
//! (`LastMatch`) aligned fit: with sizes or alignments that are not page multiples, vm-allocator
//! 0.1.4 sometimes places a range elsewhere or refuses one that fits, so answers differ there.
//! Snapshots (`serde`) have their own form: a state saved by vm-allocator's `serde` feature
//! (fields `address_space` and `interval_tree`; `range_base`, `next_id`, `range_end` and
//! `freed_ids`) is refused by `Deserialize for AddressAllocator` and `IdAllocator`, with the
//! unknown field named; only [`AddressRange`] keeps the `{start, end}` form of `RangeInclusive`.
//! To restore such a state, read it as a `VmAddressAllocatorSnapshot` or
//! `VmIdAllocatorSnapshot` (they stand in for vm-allocator's types in a saved structure) and
//! build the allocator with `AddressAllocator::from_vm_allocator_snapshot` or
//! `IdAllocator::from_vm_allocator_snapshot` (feature `serde`), which check the state completely (a
//! crafted one is refused with an [`Error`]) and give an allocator that answers as vm-allocator's
//! would, except where vm-allocator 0.1.4 errs (above).
//!
//! ```
//! # #[cfg(feature = "serde")] {
//! use memvisor_resources::{
//!     AddressAllocator, IdAllocator, IdLoadLimits, VmAddressAllocatorSnapshot,
//!     VmIdAllocatorSnapshot,
//! };
//!
//! // A VMM's saved devices, written when they were vm-allocator's allocators.
//! #[derive(serde::Deserialize)]
//! struct SavedResources {
//!     gsi: VmIdAllocatorSnapshot,
//!     mmio: VmAddressAllocatorSnapshot,
//! }
//! let text = r#"{"gsi":{"range_base":5,"next_id":7,"range_end":23,"freed_ids":[]},
//!     "mmio":{"address_space":{"start":4096,"end":8191},"interval_tree":{"root":
//!     {"key":{"start":4096,"end":8191},"node_state":"Free","left":null,"right":null,"height":1}}}}"#;
//! let saved: SavedResources = serde_json::from_str(text).unwrap();
//! let gsis = IdAllocator::from_vm_allocator_snapshot(&saved.gsi, &IdLoadLimits::default())?;
//! let mmio = AddressAllocator::<()>::from_vm_allocator_snapshot(&saved.mmio)?;
//! assert_eq!((gsis.used(), mmio.used()), (2, 0));
//! # }
//! # Ok::<(), memvisor_resources::Error>(())
//! ```
//!
//! # Features
//!
//! - `std` (default): links the standard library. Everything works the same without it: the crate
//!   is `no_std` + `alloc`, and [`Error`] implements `core::error::Error` either way.
//! - `serde`: `Serialize`/`Deserialize` for [`AddressRange`], [`IdAllocator`] and
//!   [`AddressAllocator`], with full validation on load; an ID snapshot allocates at most
//!   `IdLoadLimits::max_bitmap_bytes` of bitmap, an address snapshot loads in O(n). Also the import
//!   of vm-allocator 0.1's snapshots (`VmIdAllocatorSnapshot`, `VmAddressAllocatorSnapshot`),
//!   checked as completely.
//! - `model`: reference models and operation scripts (`model`) and index statistics, for property
//!   tests, fuzzing and benchmarks. Not meant for production builds.
#![cfg_attr(not(any(feature = "std", test)), no_std)]
// Without `std`, the docs' links to what `std` adds (its constructors, its error sources)
// have nothing to point at; the `std` build checks every link.
#![cfg_attr(not(feature = "std"), allow(rustdoc::broken_intra_doc_links))]
#![forbid(unsafe_code)]

extern crate alloc;

mod address;
mod debug;
mod error;
mod id;
mod id_width;
#[cfg(feature = "model")]
pub mod model;
mod range;
#[cfg(feature = "serde")]
mod serde_impl;
#[cfg(test)]
mod test_rng;
#[cfg(feature = "serde")]
mod vm_import;

pub use crate::address::{
    AddressAllocator, AllocPolicy, Allocation, Allocations, AllocatorSet, FreeRanges, Request,
    RoomTree,
};
pub use crate::error::{Error, Refused, Result};
pub use crate::id::{AllocatedIds, IdAllocator, MAX_ID_RANGE};
pub use crate::id_width::Id;
pub use crate::range::AddressRange;
#[cfg(feature = "serde")]
pub use crate::serde_impl::{IdLoadLimits, IdSnapshot};
#[cfg(feature = "serde")]
pub use crate::vm_import::{VmAddressAllocatorSnapshot, VmIdAllocatorSnapshot, VmImported};
