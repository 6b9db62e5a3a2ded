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
    /// window. No caller's range, interrupt or port is held under it: the placer's calls and
    /// [`take_reserved`](Self::take_reserved) refuse it as an owner name
    /// ([`Error::OwnerNameReserved`]), so a hold under it in the allocators handed over is
    /// always a reserved window's (unless the VMM allocates under it through the allocators
    /// themselves, whose tags are its own).
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
    /// [`Error::OwnerNameReserved`] for the owner name [`RESERVED_OWNER`](Self::RESERVED_OWNER)
    /// (a hold under it is always a reserved window's free range, never a device's);
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
        super::caller_owner(owner)?;
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
    /// ([`handle_alloc_error`](std::alloc::handle_alloc_error), an abort by default);
    /// [`try_into_allocators`](Self::try_into_allocators) returns that refusal instead, with
    /// the placer as it was.
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
    pub fn into_allocators(self) -> PlacerAllocators {
        match self.try_into_allocators() {
            Ok(allocators) => allocators,
            Err(AllocatorsRefused {
                error:
                    Error::Allocator {
                        source: memvisor_resources::Error::HeapRefused { bytes },
                        ..
                    },
                ..
            }) => crate::error::abort_on_heap_refusal(bytes),
            // An allocator holds at most one free range more than its allocations, so one
            // whose next entry would pass its count of 2^32 - 1 holds 2^31 ranges or more of a
            // window already, more than a process's heap can hold.
            Err(refused) => unreachable!(
                "a free range of a reserved window is refused: {}",
                refused.error
            ),
        }
    }

    /// [`into_allocators`](Self::into_allocators), with the heap's refusal of room for the
    /// reserved windows' holds returned rather than aborting.
    ///
    /// # Errors
    /// [`AllocatorsRefused`], holding [`Error::Allocator`] (with
    /// [`memvisor_resources::Error::HeapRefused`] as its source) and this placer as it was.
    ///
    /// ```
    /// use memvisor_space::{Error, Platform, WindowKind};
    ///
    /// let platform = Platform::x86_64();
    /// let placer = platform.placer(&platform.layout().ram(1 << 30).build()?)?;
    /// let mut allocators = placer.try_into_allocators().map_err(|r| r.into_parts().0)?;
    /// let reserved = allocators.first_of(WindowKind::Reserved).expect("a reserved window");
    /// assert_eq!(reserved.free_ranges().count(), 0);
    /// # Ok::<(), Error>(())
    /// ```
    // The placer comes back in place: boxing it would ask the heap that just refused.
    #[allow(clippy::result_large_err)]
    pub fn try_into_allocators(
        mut self,
    ) -> std::result::Result<PlacerAllocators, AllocatorsRefused> {
        if let Err(error) = self.hold_reserved_windows() {
            return Err(AllocatorsRefused {
                error,
                placer: self,
            });
        }
        let (irqs, irq_owners) = match self.irqs {
            Some(irqs) => (Some(irqs.ids), irqs.owners),
            None => (None, BTreeMap::new()),
        };
        Ok(PlacerAllocators {
            windows: self.windows,
            ports: self.ports,
            irqs,
            irq_owners,
        })
    }
}

impl Placer {
    /// Holds every free range of each reserved window under
    /// [`PlacerAllocators::RESERVED_OWNER`], all or nothing: on an error the ranges held here
    /// are free again, without the heap.
    fn hold_reserved_windows(&mut self) -> Result<()> {
        let reserved = |w: &Window| w.kind() == WindowKind::Reserved;
        let count: usize = self
            .windows
            .iter()
            .filter(|(w, _)| reserved(w))
            .map(|(_, a)| a.free_ranges().count())
            .sum();
        // The ranges held here, to free them if a later one is refused: room for all of them
        // first, so that the undo needs no heap.
        let mut held: Vec<(usize, AddressRange)> = Vec::new();
        held.try_reserve_exact(count)
            .map_err(|_| Error::Allocator {
                what: ADDRESSES,
                owner: PlacerAllocators::RESERVED_OWNER.to_owned(),
                source: memvisor_resources::Error::HeapRefused {
                    bytes: u64::try_from(count).unwrap_or(u64::MAX).saturating_mul(
                        u64::try_from(std::mem::size_of::<(usize, AddressRange)>())
                            .unwrap_or(u64::MAX),
                    ),
                },
            })?;
        for i in 0..self.windows.len() {
            if !reserved(&self.windows[i].0) {
                continue;
            }
            while let Some(free) = self.windows[i].1.free_ranges().next() {
                let alloc = &mut self.windows[i].1;
                if let Err(source) =
                    alloc.reserve_with(free, PlacerAllocators::RESERVED_OWNER.to_owned())
                {
                    for (j, range) in &held {
                        // Held just above: freeing it cannot fail, and needs no heap.
                        let _ = self.windows[*j].1.free(range);
                    }
                    return Err(Error::Allocator {
                        what: ADDRESSES,
                        owner: PlacerAllocators::RESERVED_OWNER.to_owned(),
                        source,
                    });
                }
                // Room for every free range counted above, and this one was free then.
                held.push((i, free));
            }
        }
        Ok(())
    }
}

/// The heap's refusal of [`Placer::try_into_allocators`]: the error, and the placer as it was.
#[derive(Debug)]
pub struct AllocatorsRefused {
    error: Error,
    placer: Placer,
}

impl AllocatorsRefused {
    /// The error: [`Error::Allocator`], with the heap's refusal as its source.
    #[must_use]
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The error and the placer, as it was before the call.
    #[must_use]
    pub fn into_parts(self) -> (Error, Placer) {
        (self.error, self.placer)
    }
}

impl std::fmt::Display for AllocatorsRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for AllocatorsRefused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}
