//! [`PlacerAllocators`]: a placer taken apart into the memvisor-resources allocators it holds.

use std::collections::BTreeMap;

use memvisor_resources::{AddressAllocator, IdAllocator};

use super::Placer;
use crate::layout::{Window, WindowKind};

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
    /// freed part by part.
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
    /// The allocator of the first window of `kind` (by address), if the layout has one.
    pub fn first_of(&mut self, kind: WindowKind) -> Option<&mut AddressAllocator<String>> {
        self.windows
            .iter_mut()
            .find(|(w, _)| w.kind() == kind)
            .map(|(_, a)| a)
    }
}

impl Placer {
    /// Hands over the allocators this placer holds, with everything it placed or took still
    /// held (see [`PlacerAllocators`]): for a VMM that allocates more MMIO windows, I/O ports
    /// and interrupts through memvisor-resources after planning. The placer's all-or-nothing
    /// calls, its owner checks and its ranges across windows are its own: what the VMM
    /// allocates from here on is as the allocators answer.
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
