//! [`PlacerAllocators`]: a placer taken apart into the memvisor-resources allocators it holds.

use std::collections::BTreeMap;

use memvisor_resources::{AddressAllocator, AddressRange, IdAllocator};

use super::{ADDRESSES, Placer};
use crate::error::{Error, Result};
use crate::layout::{Window, WindowKind};
use crate::range::GuestRange;

/// The memvisor-resources allocators of a [`Placer`], for a VMM whose device manager
/// allocates through them after planning: each holds everything the placer held, ranges
/// tagged with their owners' names, so a range or number allocated from them is over none of
/// the plan's. From [`Placer::into_allocators`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PlacerAllocators {
    /// Each window of the layout, by address, with the allocator of its guest addresses
    /// (limited to the window). A range the placer took across windows or past a window's
    /// edge is held as one allocation per window, each of the part in that window, and is
    /// freed part by part. A [reserved](WindowKind::Reserved) window's allocator is full: what
    /// the placer held there keeps its owner, and every free range left is held under
    /// [`RESERVED_OWNER`](PlacerAllocators::RESERVED_OWNER), so no allocation from it lands in a
    /// range the guest is told is reserved (see [`Placer::into_allocators`]).
    pub windows: Vec<(Window, AddressAllocator<String>)>,
    /// The I/O ports (on a platform with port I/O, from
    /// [`Platform::placer`](crate::Platform::placer)), every port range held tagged.
    pub ports: Option<AddressAllocator<String>>,
    /// The interrupt numbers (of a preset with interrupts), every one the placer held
    /// allocated, and the platform's legacy ones too, claimed or not, so that
    /// [`IdAllocator::allocate_id`] never gives one (a legacy number is asked for by number,
    /// after [`IdAllocator::free_id`] if unclaimed: not in [`irq_owners`](Self::irq_owners)).
    pub irqs: Option<IdAllocator>,
    /// The owner of each interrupt number the placer handed out (no unclaimed legacy one).
    pub irq_owners: BTreeMap<u32, String>,
}

impl PlacerAllocators {
    /// The owner under which [`Placer::into_allocators`] holds the free ranges of each reserved
    /// window.
    pub const RESERVED_OWNER: &str = "reserved";

    /// The allocator of the first window of `kind` (by address), if the layout has one.
    pub fn first_of(&mut self, kind: WindowKind) -> Option<&mut AddressAllocator<String>> {
        self.windows
            .iter_mut()
            .find(|(w, _)| w.kind() == kind)
            .map(|(_, a)| a)
    }

    /// Records a device that must sit at the fixed `range` inside a
    /// [reserved](WindowKind::Reserved) window (Cloud Hypervisor's TPM at `0xfed4_0000` on
    /// x86-64) under `owner`, in the window's allocator: the range held under
    /// [`RESERVED_OWNER`](Self::RESERVED_OWNER) that holds it is split into `range`, under
    /// `owner`, and the parts before and after it, still held as reserved. All or nothing, so
    /// no part of the window is ever left for an allocation to take. `range` may be a
    /// [`GuestRange`] or memvisor-resources' `AddressRange`. To give it back, free it
    /// ([`AddressAllocator::free`]) and hold it again under `RESERVED_OWNER`
    /// ([`AddressAllocator::reserve_with`], which needs no heap right after the free).
    ///
    /// # Errors
    /// [`Error::NotInWindow`] if no reserved window holds all of `range`; [`Error::Taken`] if
    /// it overlaps a range held under another owner (a platform reservation, a device), naming
    /// it, or runs out of the range held as reserved that it starts or ends in (naming that
    /// one; a range all free in the window, given back and not held again, is taken as it
    /// is); [`Error::Allocator`]
    /// if the heap refuses the allocator room for the parts. Nothing changes then.
    ///
    /// ```
    /// use memvisor_space::vm_memory::GuestAddress;
    /// use memvisor_space::{Error, GuestRange, PlacerAllocators, Platform, WindowKind};
    ///
    /// let platform = Platform::x86_64();
    /// let layout = platform.layout().ram(1 << 30).build()?;
    /// let mut allocators = platform.placer(&layout)?.into_allocators();
    /// let tpm = GuestRange::new(GuestAddress(0xfed4_0000), 0x5000)?;
    /// allocators.take_reserved(tpm, "tpm")?;
    /// let reserved = allocators.first_of(WindowKind::Reserved).expect("a reserved window");
    /// assert_eq!(reserved.allocation_containing(0xfed4_0000).unwrap().tag, "tpm");
    /// let next = reserved.allocation_containing(0xfed4_5000).unwrap();
    /// assert_eq!(next.tag, PlacerAllocators::RESERVED_OWNER);
    /// assert!(matches!(allocators.take_reserved(tpm, "tpm2"), Err(Error::Taken { .. })));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn take_reserved(&mut self, range: impl Into<GuestRange>, owner: &str) -> Result<()> {
        let range: GuestRange = range.into();
        let want = range.as_range();
        let Some((_, alloc)) = self
            .windows
            .iter_mut()
            .find(|(w, _)| w.kind() == WindowKind::Reserved && w.range().contains_range(&range))
        else {
            return Err(Error::NotInWindow {
                owner: owner.to_owned(),
                range,
                window: WindowKind::Reserved,
                largest_free: 0,
            });
        };
        let hold = match alloc.allocation_containing(want.start()) {
            Some(h) if h.tag == Self::RESERVED_OWNER && h.range.contains_range(&want) => h.range,
            _ => {
                // Name the first range in the way: one of another owner's if any, else the
                // reserved range `range` runs out of.
                let overlapping = || alloc.allocated().filter(|h| h.range.overlaps(&want));
                let other = overlapping()
                    .find(|h| h.tag != Self::RESERVED_OWNER)
                    .or_else(|| overlapping().next());
                return Err(match other {
                    Some(h) => Error::Taken {
                        owner: owner.to_owned(),
                        range,
                        other: h.tag.clone(),
                        other_range: h.range.into(),
                    },
                    // All free: a range given back and not held again, taken as it is.
                    None => {
                        return alloc
                            .reserve_with(want, owner.to_owned())
                            .map_err(|source| Error::Allocator {
                                what: ADDRESSES,
                                owner: owner.to_owned(),
                                source,
                            });
                    }
                });
            }
        };
        let (_, tag) = match alloc.release_containing(want.start()) {
            Ok(released) => released,
            Err(e) => unreachable!("the hold just found is refused: {e}"),
        };
        // `want` lies inside `hold`: the part before ends above `hold`'s start, the part after
        // starts below its end, so neither bound wraps.
        let before = (hold.start() < want.start())
            .then(|| AddressRange::new(hold.start(), want.start() - 1).ok())
            .flatten();
        let after = (want.end() < hold.end())
            .then(|| AddressRange::new(want.end() + 1, hold.end()).ok())
            .flatten();
        // The device's part first: it takes the entry just freed, so only the parts after it
        // may need the heap.
        let parts = [
            Some((want, owner)),
            before.map(|b| (b, Self::RESERVED_OWNER)),
            after.map(|a| (a, Self::RESERVED_OWNER)),
        ];
        for (i, &(part, who)) in parts.iter().flatten().enumerate() {
            if let Err(source) = alloc.reserve_with(part, who.to_owned()) {
                for &(done, _) in parts.iter().flatten().take(i) {
                    let _ = alloc.free(&done);
                }
                // Back to the entries held before the release, so the index has room for the
                // hold again without the heap (as after any free).
                if let Err(e) = alloc.reserve_with(hold, tag) {
                    unreachable!("a hold freed just before is refused: {e}");
                }
                return Err(Error::Allocator {
                    what: ADDRESSES,
                    owner: owner.to_owned(),
                    source,
                });
            }
        }
        Ok(())
    }
}

impl Placer {
    /// Hands over the allocators this placer holds, with everything it placed or took still
    /// held (see [`PlacerAllocators`]): for a VMM that allocates more MMIO windows, I/O ports
    /// and interrupts through memvisor-resources after planning. The placer's all-or-nothing
    /// calls, its owner checks and its ranges across windows are its own: what the VMM
    /// allocates from here on is as the allocators answer.
    ///
    /// A [reserved](WindowKind::Reserved) window is handed over full: each range free in it is
    /// held under [`RESERVED_OWNER`](PlacerAllocators::RESERVED_OWNER), one allocation per free
    /// range, beside what the placer held there (a platform's IOAPIC, local APIC and KVM pages,
    /// the AArch64 GIC) under its own owner. A plan lists the whole window as one reserved
    /// region in the guest's memory map, and on x86-64 the local APIC's megabyte beyond its
    /// page (`0xfee0_1000` on) is where a device's writes are interrupt messages, so a BAR
    /// allocated there (by a device manager that allocates from every window it is given) could
    /// not work. Cloud Hypervisor and Firecracker hand out their 32-bit device ranges only,
    /// never the reserved range below 4 GiB, and put what sits there (Cloud Hypervisor's TPM at
    /// `0xfed4_0000`) at a fixed address; a VMM records such a device in the allocators with
    /// [`PlacerAllocators::take_reserved`], all or nothing. The placer itself still places and
    /// takes in a reserved window when asked by kind ([`Placer::take_in`] with
    /// [`WindowKind::Reserved`]).
    ///
    /// Holding those ranges allocates one allocator entry each, infallibly, as the placer's
    /// owner names are: if the heap refuses it, the global allocator's failure handler runs
    /// ([`handle_alloc_error`](std::alloc::handle_alloc_error), an abort by default).
    ///
    /// ```
    /// use memvisor_space::memvisor_resources::{AllocPolicy, Request};
    /// use memvisor_space::{Error, Platform, WindowKind};
    ///
    /// let platform = Platform::x86_64();
    /// let layout = platform.layout().ram(1 << 30).build()?;
    /// let mut placer = platform.placer(&layout)?;
    /// let net = placer.place(WindowKind::Device, 0x1000, 0x1000, "net0")?;
    /// let mut allocators = placer.into_allocators();
    /// let devices = allocators.first_of(WindowKind::Device).expect("a device window");
    /// assert_eq!(devices.allocation_containing(net.start().0).unwrap().tag, "net0");
    /// let request = Request::new(0x1000, 0x1000, AllocPolicy::FirstMatch).expect("a request");
    /// let rng = devices.allocate_with(&request, "rng0".to_string()).expect("room");
    /// assert!(!rng.overlaps(&net.as_range()));
    /// # Ok::<(), Error>(())
    /// ```
    #[must_use]
    pub fn into_allocators(mut self) -> PlacerAllocators {
        for (window, alloc) in &mut self.windows {
            if window.kind() != WindowKind::Reserved {
                continue;
            }
            while let Some(free) = alloc.free_ranges().next() {
                match alloc.reserve_with(free, PlacerAllocators::RESERVED_OWNER.to_owned()) {
                    Ok(()) => {}
                    Err(memvisor_resources::Error::HeapRefused { bytes }) => {
                        std::alloc::handle_alloc_error(
                            std::alloc::Layout::array::<u8>(
                                usize::try_from(bytes).unwrap_or(usize::MAX),
                            )
                            .unwrap_or(std::alloc::Layout::new::<u64>()),
                        )
                    }
                    // `free` is free and inside the allocator's space; an allocator holds at
                    // most one free range more than its allocations, so one whose next entry
                    // would pass its count of 2^32 - 1 holds 2^31 ranges or more of a window
                    // already, more than a process's heap can hold.
                    Err(e) => unreachable!("a free range of a reserved window is refused: {e}"),
                }
            }
        }
        let (irqs, irq_owners) = match self.irqs {
            Some(irqs) => (Some(irqs.ids), irqs.owners),
            None => (None, BTreeMap::new()),
        };
        PlacerAllocators {
            windows: self.windows,
            ports: self.ports,
            irqs,
            irq_owners,
        }
    }
}
