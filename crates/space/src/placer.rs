//! [`Placer`]: finds room for ranges and interrupts in a layout, each tagged with its owner,
//! all or nothing.

mod allocators;

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

pub use allocators::{AllocatorsRefused, PlacerAllocators};
use memvisor_resources::{AddressAllocator, AllocPolicy, IdAllocator, Request, RoomTree};

use crate::error::{Error, Result};
use crate::layout::{Window, WindowKind};
use crate::range::GuestRange;

/// Interrupt numbers with their owners, over an [`IdAllocator`].
#[derive(Clone, Debug)]
struct Irqs {
    /// Every number taken, the unclaimed legacy ones included (so that [`Placer::irq`] never
    /// picks one).
    ids: IdAllocator,
    /// The owner of every number taken, but for unclaimed legacy ones.
    owners: BTreeMap<u32, String>,
    /// The platform's legacy interrupts: given only by number ([`Placer::irq_at`]).
    legacy: &'static [u32],
    name: &'static str,
}

/// Places ranges in a layout's windows (device MMIO windows, hotplug slots, DAX windows) and
/// hands out interrupts and I/O ports, one `memvisor-resources` allocator per window, every
/// range and number tagged with its owner so that a collision names both parties. What it
/// hands out it takes back: [`release`](Self::release) for ranges,
/// [`release_irq`](Self::release_irq) for interrupts, [`release_ports`](Self::release_ports)
/// for I/O ports, each only for exactly what was handed out. Every operation is all or
/// nothing, and [`transaction`](Self::transaction) makes a sequence of them (releases
/// included) all or nothing too.
///
/// What the allocators refuse for want of heap is [`Error::Allocator`], never taken for a
/// range or number that is not free. Owner names are copied, infallibly, once per range,
/// interrupt or port range held (and into the errors that name them); their length and number
/// are the caller's to bound.
///
/// Cost, for w windows and n ranges held in a window: the windows are sorted by address and
/// each kind's windows have a max tree of their largest free ranges, so
/// [`take`](Self::take), [`take_in`](Self::take_in), [`release`](Self::release) and
/// [`owner_of`](Self::owner_of) find their windows in O(log w) (plus O(log n) for each window
/// a range crosses), and [`place`](Self::place) goes straight to the first window of its kind
/// whose largest free range may hold the size, O(log w + log n), passing over windows too
/// full for it without trying them (a window with room for the size but not at the alignment
/// asked is still tried). A refused `place` or `take_in` names the largest free range of the
/// kind, found as [`largest_free`](Self::largest_free) finds it: down the kind's max tree to
/// the window with the largest bound, then through that window's index
/// ([`AddressAllocator::largest_free`](memvisor_resources::AddressAllocator::largest_free)),
/// O(log w + log n) when ranges are below 16 MiB (larger ones whose sizes round to the same
/// 24-bit bound may each add a path: at worst, every window of the kind and every free range
/// in them). [`transaction`](Self::transaction) copies the whole
/// placer.
///
/// Made by [`Layout::placer`](crate::Layout::placer) (windows, and the preset's interrupts),
/// [`Platform::placer`](crate::Platform::placer) (also I/O ports and the platform's reserved
/// ranges; on x86-64 both hold what KVM's in-kernel devices use) or
/// [`Snapshot::placer`](crate::Snapshot::placer) (the snapshot's regions taken).
///
/// ```
/// use memvisor_space::{Error, GuestRange, Layout, WindowKind};
/// use memvisor_space::vm_memory::GuestAddress;
///
/// let layout = Layout::x86_64().ram(1 << 30).build()?;
/// let mut placer = layout.placer();
/// let a = placer.place(WindowKind::Device, 0x1000, 0x1000, "net0")?;
/// let b = placer.place(WindowKind::Device, 0x1000, 0x1000, "blk0")?;
/// assert_eq!(a.start(), GuestAddress(0xc000_0000));
/// assert_eq!(b.start(), GuestAddress(0xc000_1000));
/// let err = placer.take(a, "rng0").unwrap_err();
/// assert_eq!(err.to_string(), "rng0's range [0xc0000000, 0xc0000fff] overlaps net0's range [0xc0000000, 0xc0000fff]");
/// assert_eq!(placer.irq_at(4, "serial")?, 4);
/// assert_eq!(placer.irq("net0")?, 5); // GSIs 0-4 are legacy: given only by number
/// let err = placer.irq_at(4, "blk0").unwrap_err();
/// assert_eq!(err.to_string(), "GSI 4 of blk0 is taken by serial");
/// # Ok::<(), memvisor_space::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Placer {
    windows: Vec<(Window, AddressAllocator<String>)>,
    /// For each part of a range taken across windows or past a window's edge, by the part's
    /// start: the range as taken. The parts are given back together, and only for that range.
    /// (A part missing here was placed or taken exactly as it is.)
    spans: BTreeMap<u64, GuestRange>,
    /// The windows of each kind that has some, with a bound on each one's largest free range
    /// (see [`Kind`]).
    kinds: Vec<Kind>,
    /// For each window (in `windows`' order): the index of its kind in `kinds` and its position
    /// among the windows of that kind.
    kind_of: Vec<(usize, usize)>,
    irqs: Option<Irqs>,
    ports: Option<AddressAllocator<String>>,
}

/// The windows of one kind, in layout order, and an upper bound on each one's largest free
/// range: a placement finds the first window of its kind that may hold it in O(log w) steps
/// instead of trying every full window before it.
#[derive(Clone, Debug)]
struct Kind {
    kind: WindowKind,
    /// Indices into [`Placer::windows`].
    windows: Vec<usize>,
    room: RoomTree,
}

impl Placer {
    /// A placer over `windows`, with interrupts `irqs` (their range, what they are called and
    /// the legacy ones, which only [`irq_at`](Self::irq_at) gives) and I/O ports `ports`.
    pub(crate) fn new(
        windows: &[Window],
        irqs: Option<(RangeInclusive<u32>, &'static str, &'static [u32])>,
        ports: Option<GuestRange>,
    ) -> Result<Self> {
        let irqs = match irqs {
            Some((range, name, legacy)) => {
                let mut ids =
                    IdAllocator::new(*range.start(), *range.end()).map_err(|e| match e {
                        memvisor_resources::Error::HeapRefused { .. } => Error::Allocator {
                            what: name,
                            owner: format!("the {name} range {range:?}"),
                            source: e,
                        },
                        _ => Error::InvalidLayout {
                            reason: format!("empty {name} range {range:?}"),
                        },
                    })?;
                for &pin in legacy {
                    match ids.allocate_id_at(pin) {
                        // A pin outside the range is never given out anyway.
                        Ok(_)
                        | Err(
                            memvisor_resources::Error::IdOutOfRange { .. }
                            | memvisor_resources::Error::IdAlreadyAllocated(_),
                        ) => {}
                        // Not kept from `irq`, it could be handed out: no placer then.
                        Err(source) => {
                            return Err(Error::Allocator {
                                what: name,
                                owner: format!("legacy {name} {pin}"),
                                source,
                            });
                        }
                    }
                }
                Some(Irqs {
                    ids,
                    owners: BTreeMap::new(),
                    legacy,
                    name,
                })
            }
            None => None,
        };
        // Windows come from a layout: sorted by address and disjoint, which the lookups by
        // address rely on.
        debug_assert!(windows.windows(2).all(|p| p[0].last_addr() < p[1].start()));
        let mut kinds: Vec<Kind> = Vec::new();
        let mut kind_of = Vec::with_capacity(windows.len());
        for (i, w) in windows.iter().enumerate() {
            let k = match kinds.iter().position(|k| k.kind == w.kind()) {
                Some(k) => k,
                None => {
                    kinds.push(Kind {
                        kind: w.kind(),
                        windows: Vec::new(),
                        room: RoomTree::default(),
                    });
                    kinds.len() - 1
                }
            };
            kind_of.push((k, kinds[k].windows.len()));
            kinds[k].windows.push(i);
        }
        for k in &mut kinds {
            k.room = RoomTree::new(k.windows.len()).map_err(|source| Error::Allocator {
                what: "room index",
                owner: format!("the {} windows", k.kind),
                source,
            })?;
            for (j, &i) in k.windows.iter().enumerate() {
                // Every window of the kind has its entry: the tree has one per window.
                let _ = k.room.set(j, windows[i].size());
            }
        }
        Ok(Self {
            windows: windows
                .iter()
                .map(|w| (*w, AddressAllocator::new(w.range().as_range())))
                .collect(),
            spans: BTreeMap::new(),
            kinds,
            kind_of,
            irqs,
            ports: ports.map(|p| AddressAllocator::new(p.as_range())),
        })
    }

    /// Records the largest free range of window `i` (after a change of it). O(log w).
    fn refresh(&mut self, i: usize) {
        let (k, j) = self.kind_of[i];
        let old = self.kinds[k]
            .room
            .set(j, self.windows[i].1.largest_free_bound());
        debug_assert!(
            old.is_some(),
            "window {i} has no entry in its kind's max tree"
        );
    }

    /// The indices of the windows `range` touches, in address order: O(log w), the windows
    /// being sorted and disjoint.
    fn touching(&self, range: &GuestRange) -> std::ops::Range<usize> {
        let lo = self.windows.partition_point(|(w, _)| {
            look();
            w.last_addr() < range.start()
        });
        let hi = self.windows.partition_point(|(w, _)| {
            look();
            w.start() <= range.last()
        });
        lo..hi.max(lo)
    }

    /// Runs `f` on this placer and keeps what it did only if it succeeds: on an error, the
    /// placer is exactly as before.
    ///
    /// # Errors
    /// What `f` returns.
    ///
    /// ```
    /// use memvisor_space::{Layout, WindowKind};
    ///
    /// let mut placer = Layout::x86_64().ram(1 << 30).build()?.placer();
    /// let failed = placer.transaction(|p| {
    ///     p.place(WindowKind::Device, 0x1000, 0x1000, "net0")?;
    ///     p.place(WindowKind::Dax, 0x1000, 0x1000, "net0 DAX") // no DAX window
    /// });
    /// assert!(failed.is_err());
    /// // net0's window was given back.
    /// assert_eq!(placer.place(WindowKind::Device, 0x1000, 0x1000, "blk0")?.start().0, 0xc000_0000);
    /// # Ok::<(), memvisor_space::Error>(())
    /// ```
    pub fn transaction<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        let mut next = self.clone();
        let out = f(&mut next)?;
        *self = next;
        Ok(out)
    }

    /// Places `size` bytes aligned to `align` (a power of two) for `owner` in the lowest window
    /// of `kind` that has room, first fit.
    ///
    /// # Errors
    /// [`Error::OwnerNameReserved`] for the owner name
    /// [`PlacerAllocators::RESERVED_OWNER`]; [`Error::NothingToPlace`] for 0,
    /// [`Error::InvalidAlignment`] for an alignment that is not a power of two, [`Error::NoRoom`]
    /// (with the largest free range) if no window of that kind has room; [`Error::Allocator`]
    /// if a window's allocator that has room fails (the heap refused its bookkeeping). Nothing
    /// is placed then.
    pub fn place(
        &mut self,
        kind: WindowKind,
        size: u64,
        align: u64,
        owner: &str,
    ) -> Result<GuestRange> {
        caller_owner(owner)?;
        if size == 0 {
            return Err(Error::NothingToPlace {
                owner: owner.to_owned(),
            });
        }
        let request = Request::new(size, align, AllocPolicy::FirstMatch)
            .map_err(|_| Error::InvalidAlignment { align })?;
        // Only the windows whose largest free range may hold `size` are tried, in layout order.
        let k = self.kinds.iter().position(|k| k.kind == kind);
        let mut from = 0;
        while let Some(k) = k
            && let Some(j) = self.kinds[k].room.first_from(from, size)
        {
            from = j + 1;
            let i = self.kinds[k].windows[j];
            look();
            match self.windows[i].1.allocate_with(&request, owner.to_owned()) {
                Ok(range) => {
                    self.refresh(i);
                    return Ok(range.into());
                }
                // No room in this window: the next one of the kind may have some.
                Err(memvisor_resources::Error::OutOfSpace { .. }) => {}
                Err(source) => {
                    return Err(Error::Allocator {
                        what: ADDRESSES,
                        owner: owner.to_owned(),
                        source,
                    });
                }
            }
        }
        Err(Error::NoRoom {
            owner: owner.to_owned(),
            window: kind,
            size,
            align,
            largest_free: self.largest_free(kind),
        })
    }

    /// Takes `range` for `owner` in the windows of `kind`: it must lie inside one of them.
    ///
    /// # Errors
    /// [`Error::OwnerNameReserved`] for the owner name
    /// [`PlacerAllocators::RESERVED_OWNER`]; [`Error::NotInWindow`] if no window of `kind`
    /// holds it all; [`Error::Taken`] naming
    /// the owner of a range it overlaps, and that range as it was placed or taken;
    /// [`Error::Allocator`] if the window's allocator fails (the heap refused its
    /// bookkeeping). Nothing is taken then.
    pub fn take_in(&mut self, kind: WindowKind, range: GuestRange, owner: &str) -> Result<()> {
        caller_owner(owner)?;
        // The windows are disjoint: one that holds `range` is the only one it touches.
        let touched = self.touching(&range);
        let Some(i) = touched.clone().next().filter(|&i| {
            let w = &self.windows[i].0;
            touched.len() == 1 && w.kind() == kind && w.range().contains_range(&range)
        }) else {
            return Err(Error::NotInWindow {
                owner: owner.to_owned(),
                range,
                window: kind,
                largest_free: self.largest_free(kind),
            });
        };
        reserve(&mut self.windows[i].1, range, owner, ADDRESSES).map_err(|e| match e {
            Error::Taken {
                owner,
                range,
                other,
                other_range,
            } => Error::Taken {
                owner,
                range,
                other,
                other_range: as_taken(&self.spans, other_range),
            },
            e => e,
        })?;
        self.refresh(i);
        Ok(())
    }

    /// Takes `range` for `owner` in every window it crosses (an existing region, a platform
    /// reservation); parts outside every window are not tracked (nothing is ever placed
    /// there), but [`release`](Self::release) gives its parts back only for `range` itself.
    /// All or nothing: if one part is taken already, the parts before it are given back.
    ///
    /// # Errors
    /// [`Error::OwnerNameReserved`] for the owner name
    /// [`PlacerAllocators::RESERVED_OWNER`]; [`Error::OutsideWindows`] if `range` crosses no
    /// window at all (the placer would hold
    /// nothing, and [`release`](Self::release) would have nothing to give back);
    /// [`Error::Taken`] naming the owner of a range it overlaps, and that range as it was
    /// placed or taken; [`Error::Allocator`] if a window's allocator fails (the heap refused
    /// its bookkeeping). Nothing is taken then.
    pub fn take(&mut self, range: GuestRange, owner: &str) -> Result<()> {
        caller_owner(owner)?;
        if self.take_parts(range, owner)? {
            Ok(())
        } else {
            Err(Error::OutsideWindows {
                owner: owner.to_owned(),
                range,
            })
        }
    }

    /// [`take`](Self::take) for ranges that may lie outside every window (a platform
    /// reservation or a reserved region outside a custom layout's windows, which nothing can
    /// be placed over anyway): whether a part of `range` was taken.
    pub(crate) fn take_parts(&mut self, range: GuestRange, owner: &str) -> Result<bool> {
        // The parts taken are counted, not listed: a refusal then needs no heap to undo them.
        let (mut parts, mut whole) = (0usize, false);
        let touched = self.touching(&range);
        for i in touched.clone() {
            look();
            let (w, alloc) = &mut self.windows[i];
            let Some(part) = w.range().intersection(&range) else {
                continue;
            };
            if let Err(e) = reserve(alloc, part, owner, ADDRESSES) {
                // Every part of `range` in a window before this one was reserved just above,
                // so freeing it cannot fail (and `free` needs no heap).
                for j in touched.start..i {
                    let (w, alloc) = &mut self.windows[j];
                    if let Some(taken) = w.range().intersection(&range) {
                        let _ = alloc.free(&taken.as_range());
                    }
                    self.refresh(j);
                }
                return Err(match e {
                    Error::Taken {
                        other, other_range, ..
                    } => Error::Taken {
                        owner: owner.to_owned(),
                        range,
                        other,
                        other_range: as_taken(&self.spans, other_range),
                    },
                    e => e,
                });
            }
            parts += 1;
            whole = part == range;
            self.refresh(i);
        }
        let held = parts > 0;
        if parts > 1 || (held && !whole) {
            for (w, _) in &self.windows[touched] {
                if let Some(part) = w.range().intersection(&range) {
                    self.spans.insert(part.start().0, range);
                }
            }
        }
        Ok(held)
    }

    /// Gives a placed or taken range back (every part of a range taken across windows).
    ///
    /// # Errors
    /// [`Error::NotPlaced`] unless `range` is exactly one placed or taken range, as it was
    /// placed or taken: every part of it inside a window taken exactly, all by the one call
    /// that took `range` (so neither a part of a range taken across windows alone, nor ranges
    /// taken apart, nor a taken range widened into the gaps between windows, are given back;
    /// a range wholly outside every window is never held); nothing is given back then.
    pub fn release(&mut self, range: GuestRange) -> Result<()> {
        let parts: Vec<(usize, GuestRange)> = self
            .touching(&range)
            .filter_map(|i| {
                look();
                self.windows[i]
                    .0
                    .range()
                    .intersection(&range)
                    .map(|p| (i, p))
            })
            .collect();
        let exact = !parts.is_empty()
            && parts.iter().all(|&(i, p)| {
                self.windows[i]
                    .1
                    .allocation_containing(p.start().0)
                    .is_some_and(|a| a.range == p.as_range())
                    && self.spans.get(&p.start().0).copied().unwrap_or(p) == range
            });
        if !exact {
            return Err(Error::NotPlaced { range });
        }
        for (i, p) in parts {
            // Checked just above to be an exact allocation.
            let _ = self.windows[i].1.free(&p.as_range());
            self.refresh(i);
            self.spans.remove(&p.start().0);
        }
        Ok(())
    }

    /// The owner and range of what holds `addr`, if anything: the range as it was placed or
    /// taken (all of a range taken across windows or past a window's edge, not only its part
    /// holding `addr`), so that [`release`](Self::release) gives it back.
    #[must_use]
    pub fn owner_of(&self, addr: vm_memory::GuestAddress) -> Option<(&str, GuestRange)> {
        let here = GuestRange::new(addr, 1).ok()?;
        self.windows[self.touching(&here)]
            .iter()
            .find_map(|(_, a)| a.allocation_containing(addr.0))
            .map(|a| (a.tag.as_str(), as_taken(&self.spans, a.range.into())))
    }

    /// Every range placed or taken, with its owner, once, as it was placed or taken (all of a
    /// range taken across windows or past a window's edge), by the address of its first part
    /// inside a window: what [`owner_of`](Self::owner_of) names at each of its addresses
    /// inside a window, and what [`release`](Self::release) gives back. Addresses outside
    /// every window are no one's, so `owner_of` answers `None` there even for a range listed
    /// here that reaches over them.
    pub fn allocations(&self) -> impl Iterator<Item = (&str, GuestRange)> + '_ {
        self.windows
            .iter()
            .enumerate()
            .flat_map(move |(i, (_, a))| {
                a.allocated().filter_map(move |x| {
                    let part: GuestRange = x.range.into();
                    let taken = as_taken(&self.spans, part);
                    // A range held in several windows is listed at its first part only: the
                    // window before holds no part of it.
                    let first = taken == part
                        || i == 0
                        || self.windows[i - 1].0.range().intersection(&taken).is_none();
                    first.then_some((x.tag.as_str(), taken))
                })
            })
    }

    /// Every range of I/O ports taken, with its owner, by port (none if the platform has no
    /// I/O ports).
    pub fn port_allocations(&self) -> impl Iterator<Item = (&str, GuestRange)> + '_ {
        self.ports
            .iter()
            .flat_map(|a| a.allocated().map(|x| (x.tag.as_str(), x.range.into())))
    }

    /// The windows of `kind` this placer works in, by address.
    pub fn windows_of(&self, kind: WindowKind) -> impl Iterator<Item = &Window> + '_ {
        self.windows
            .iter()
            .map(|(w, _)| w)
            .filter(move |w| w.kind() == kind)
    }

    /// The largest free range in the windows of `kind` (0 if none).
    #[must_use]
    pub fn largest_free(&self, kind: WindowKind) -> u64 {
        let Some(k) = self.kinds.iter().find(|k| k.kind == kind) else {
            return 0;
        };
        // Down the kind's max tree, the window with the largest bound first: with exact
        // bounds, one window's index is searched, O(log w + log n).
        let best = k.room.largest(|j| {
            look();
            self.windows[k.windows[j]].1.largest_free()
        });
        u64::try_from(best).unwrap_or(u64::MAX)
    }

    /// The lowest free interrupt number for `owner`, never one of the platform's legacy
    /// interrupts ([`Platform::legacy_irqs`](crate::Platform::legacy_irqs): x86-64 GSIs 0–4,
    /// which only [`irq_at`](Self::irq_at) gives). Given back with
    /// [`release_irq`](Self::release_irq).
    ///
    /// # Errors
    /// [`Error::OwnerNameReserved`] for the owner name
    /// [`PlacerAllocators::RESERVED_OWNER`]; [`Error::NoIrqs`] if the placer has no interrupt
    /// range; [`Error::NoFreeIrq`] if every
    /// number it may give is taken; [`Error::Allocator`] if the interrupt allocator fails
    /// (the heap refused the growth of its bitmap). Nothing is taken then.
    pub fn irq(&mut self, owner: &str) -> Result<u32> {
        caller_owner(owner)?;
        let irqs = self.irqs.as_mut().ok_or(Error::NoIrqs)?;
        let irq = irqs.ids.allocate_id().map_err(|e| match e {
            memvisor_resources::Error::OutOfIds { .. } => Error::NoFreeIrq {
                owner: owner.to_owned(),
                name: irqs.name,
                first: irqs.ids.first(),
                last: irqs.ids.last(),
            },
            source => Error::Allocator {
                what: irqs.name,
                owner: owner.to_owned(),
                source,
            },
        })?;
        irqs.owners.insert(irq, owner.to_owned());
        Ok(irq)
    }

    /// Interrupt `irq` for `owner` (given back with [`release_irq`](Self::release_irq)).
    ///
    /// # Errors
    /// [`Error::OwnerNameReserved`] for the owner name
    /// [`PlacerAllocators::RESERVED_OWNER`]; [`Error::NoIrqs`] if the placer has no interrupt
    /// range; [`Error::IrqOutOfRange`]; [`Error::IrqTaken`] naming its owner; [`Error::Allocator`]
    /// if the interrupt allocator fails (the heap refused the growth of its bitmap). Nothing is
    /// taken then.
    pub fn irq_at(&mut self, irq: u32, owner: &str) -> Result<u32> {
        caller_owner(owner)?;
        let irqs = self.irqs.as_mut().ok_or(Error::NoIrqs)?;
        // An unclaimed legacy interrupt is taken already, for no owner: it is free by number.
        let unclaimed_legacy = irqs.legacy.contains(&irq) && !irqs.owners.contains_key(&irq);
        let taken = if unclaimed_legacy {
            Ok(irq)
        } else {
            irqs.ids.allocate_id_at(irq)
        };
        match taken {
            Ok(irq) => {
                irqs.owners.insert(irq, owner.to_owned());
                Ok(irq)
            }
            Err(memvisor_resources::Error::IdAlreadyAllocated(_)) => Err(Error::IrqTaken {
                irq,
                name: irqs.name,
                owner: owner.to_owned(),
                other: irqs.owners.get(&irq).cloned().unwrap_or_default(),
            }),
            Err(memvisor_resources::Error::IdOutOfRange { .. }) => Err(Error::IrqOutOfRange {
                irq,
                name: irqs.name,
                first: irqs.ids.first(),
                last: irqs.ids.last(),
            }),
            Err(source) => Err(Error::Allocator {
                what: irqs.name,
                owner: owner.to_owned(),
                source,
            }),
        }
    }

    /// Gives interrupt `irq` back, so that [`irq`](Self::irq) and [`irq_at`](Self::irq_at)
    /// may hand it out again (a device unplugged, or plugged again at the same number). A
    /// legacy interrupt ([`Platform::legacy_irqs`](crate::Platform::legacy_irqs)) goes back
    /// to being unclaimed: given again only by number.
    ///
    /// # Errors
    /// [`Error::NoIrqs`] if the placer has no interrupt range; [`Error::IrqOutOfRange`];
    /// [`Error::IrqNotTaken`] if `irq` is not handed out (never given, given back already, or
    /// an unclaimed legacy interrupt). Nothing changes then.
    ///
    /// ```
    /// use memvisor_space::{Error, Layout};
    ///
    /// let mut placer = Layout::x86_64().ram(1 << 30).build()?.placer();
    /// let gsi = placer.irq("net0")?;
    /// placer.release_irq(gsi)?;
    /// assert!(matches!(placer.release_irq(gsi), Err(Error::IrqNotTaken { .. })));
    /// assert_eq!(placer.irq_at(gsi, "net0")?, gsi);
    /// # Ok::<(), memvisor_space::Error>(())
    /// ```
    pub fn release_irq(&mut self, irq: u32) -> Result<()> {
        let irqs = self.irqs.as_mut().ok_or(Error::NoIrqs)?;
        let (first, last) = (irqs.ids.first(), irqs.ids.last());
        if !(first..=last).contains(&irq) {
            return Err(Error::IrqOutOfRange {
                irq,
                name: irqs.name,
                first,
                last,
            });
        }
        let not_taken = Error::IrqNotTaken {
            irq,
            name: irqs.name,
        };
        if !irqs.owners.contains_key(&irq) {
            return Err(not_taken);
        }
        // A legacy number stays allocated for no owner, as before it was claimed; any other
        // owned number was allocated by `irq` or `irq_at`. `free_id` changes nothing when it
        // fails, so the owner is dropped only after it succeeded.
        if !irqs.legacy.contains(&irq) {
            irqs.ids.free_id(irq).map_err(|_| not_taken)?;
        }
        irqs.owners.remove(&irq);
        Ok(())
    }

    /// The owner of interrupt `irq`, if it is taken.
    #[must_use]
    pub fn irq_owner(&self, irq: u32) -> Option<&str> {
        self.irqs.as_ref()?.owners.get(&irq).map(String::as_str)
    }

    /// Takes the I/O ports `ports` for `owner` (given back with
    /// [`release_ports`](Self::release_ports)).
    ///
    /// # Errors
    /// [`Error::OwnerNameReserved`] for the owner name
    /// [`PlacerAllocators::RESERVED_OWNER`]; [`Error::NoIoPorts`] if the platform has none;
    /// [`Error::PortsOutOfRange`] naming the port space if `ports` passes its last port (the
    /// whole 64-bit range included); [`Error::Taken`] naming the owner of ports it overlaps;
    /// [`Error::Allocator`] if the port allocator fails (the heap refused its bookkeeping).
    /// Nothing is taken then.
    pub fn ports_at(&mut self, ports: GuestRange, owner: &str) -> Result<()> {
        caller_owner(owner)?;
        let alloc = self.ports.as_mut().ok_or(Error::NoIoPorts)?;
        if !alloc.space().contains_range(&ports.as_range()) {
            return Err(Error::PortsOutOfRange {
                ports,
                space: alloc.space().into(),
            });
        }
        reserve(alloc, ports, owner, PORTS)
    }

    /// Gives back the I/O ports `ports`, exactly as one [`ports_at`](Self::ports_at) took
    /// them, so that they may be taken again.
    ///
    /// # Errors
    /// [`Error::NoIoPorts`] if the platform has no I/O ports;
    /// [`Error::NotPlaced`] unless `ports` is exactly ports taken by one call (not a part of
    /// them, not a wider range, not ports taken by two calls, not free ports or ports past the
    /// port space). Nothing is given back then.
    ///
    /// ```
    /// use memvisor_space::{Error, GuestRange, Platform};
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// let platform = Platform::x86_64();
    /// let mut placer = platform.placer(&platform.layout().build()?)?;
    /// let com1 = GuestRange::new(GuestAddress(0x3f8), 8)?;
    /// placer.ports_at(com1, "serial")?;
    /// let half = GuestRange::new(GuestAddress(0x3f8), 4)?;
    /// assert!(matches!(placer.release_ports(half), Err(Error::NotPlaced { .. })));
    /// placer.release_ports(com1)?;
    /// placer.ports_at(com1, "serial")?;
    /// # Ok::<(), memvisor_space::Error>(())
    /// ```
    pub fn release_ports(&mut self, ports: GuestRange) -> Result<()> {
        let alloc = self.ports.as_mut().ok_or(Error::NoIoPorts)?;
        // `free` frees only an exact allocation and changes nothing otherwise.
        alloc
            .free(&ports.as_range())
            .map(drop)
            .map_err(|_| Error::NotPlaced { range: ports })
    }
}

#[cfg(test)]
thread_local! {
    /// Windows looked at by this thread's placers, for tests that bound the work.
    static LOOKED_AT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Counts one window looked at (a test hook; nothing outside tests).
#[inline]
fn look() {
    #[cfg(test)]
    LOOKED_AT.with(|c| c.set(c.get() + 1));
}

/// The range as it was placed or taken that holds `part` (an allocation of one window): the
/// whole of a range taken across windows or past a window's edge, else `part` itself.
fn as_taken(spans: &BTreeMap<u64, GuestRange>, part: GuestRange) -> GuestRange {
    spans.get(&part.start().0).copied().unwrap_or(part)
}

/// [`Error::OwnerNameReserved`] for the name under which the placer's allocators hold reserved
/// windows' free ranges ([`PlacerAllocators::RESERVED_OWNER`]): no range, interrupt or port of a
/// caller's is held under it, so such a hold is always the allocators' own.
fn caller_owner(owner: &str) -> Result<()> {
    if owner == PlacerAllocators::RESERVED_OWNER {
        return Err(Error::OwnerNameReserved {
            owner: owner.to_owned(),
        });
    }
    Ok(())
}

/// What [`Error::Allocator`] says the window allocators allocate.
const ADDRESSES: &str = "guest addresses";
/// What [`Error::Allocator`] says the port allocator allocates.
const PORTS: &str = "I/O ports";

/// Takes exactly `range` in `alloc` for `owner`: [`Error::Taken`] if it overlaps a range taken,
/// [`Error::Allocator`] (allocating `what`) for any other refusal of the allocator. Callers
/// check first that `range` lies in the allocator's space.
fn reserve(
    alloc: &mut AddressAllocator<String>,
    range: GuestRange,
    owner: &str,
    what: &'static str,
) -> Result<()> {
    match alloc.reserve_with(range.as_range(), owner.to_owned()) {
        Ok(()) => Ok(()),
        Err(memvisor_resources::Error::Overlap { existing, .. }) => {
            let other = alloc
                .allocation_containing(existing.start())
                .map(|a| a.tag.clone())
                .unwrap_or_default();
            Err(Error::Taken {
                owner: owner.to_owned(),
                range,
                other,
                other_range: existing.into(),
            })
        }
        // The heap refused the allocator's bookkeeping, or (the range lies inside the
        // allocator's space, checked by callers) it holds all the ranges it can count.
        Err(source) => Err(Error::Allocator {
            what,
            owner: owner.to_owned(),
            source,
        }),
    }
}

// Safe code only: Miri would take minutes over these tests and check nothing the native run
// does not.
#[cfg(all(test, not(miri)))]
mod tests {
    use vm_memory::GuestAddress;

    use super::*;
    use crate::Layout;

    const GIB: u64 = 1 << 30;

    fn range(base: u64, size: u64) -> GuestRange {
        GuestRange::new(GuestAddress(base), size).unwrap()
    }

    /// Windows looked at while `f` runs.
    fn looked_at<R>(f: impl FnOnce() -> R) -> (R, u64) {
        let before = LOOKED_AT.with(std::cell::Cell::get);
        let r = f();
        (r, LOOKED_AT.with(std::cell::Cell::get) - before)
    }

    /// A custom layout of `n` windows of 2 MiB, 4 MiB apart, RAM and device in turn.
    fn many_windows(n: u64) -> Layout {
        let windows = (0..n).map(|i| {
            let kind = if i % 2 == 0 {
                WindowKind::Ram
            } else {
                WindowKind::Device
            };
            crate::Window::new(kind, GuestAddress(i << 22), 2 << 20).unwrap()
        });
        Layout::new(GuestAddress(u64::MAX >> 1), windows).unwrap()
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "thousands of windows and calls, safe code only: slow under Miri"
    )]
    fn filling_many_windows_looks_at_each_window_a_bounded_number_of_times() {
        const N: u64 = 4096;
        let mut p = many_windows(N).placer();
        let ((), work) = looked_at(|| {
            for i in 0..N / 2 {
                let r = p.place(WindowKind::Device, 2 << 20, 0x1000, "dev").unwrap();
                assert_eq!(r.start().0, ((2 * i + 1) << 22));
            }
        });
        // Each placement goes to the first device window with room in O(log n) steps, not by
        // trying every full window before it (n * n / 4, 4 million here).
        assert!(work <= 64 * N, "{work} windows looked at");
        assert!(matches!(
            p.place(WindowKind::Device, 0x1000, 0x1000, "more"),
            Err(Error::NoRoom {
                largest_free: 0,
                ..
            })
        ));
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "thousands of windows and calls, safe code only: slow under Miri"
    )]
    fn refused_placements_in_many_fragmented_windows_do_not_walk_every_free_range() {
        const N: u64 = 2048;
        let mut p = many_windows(N).placer();
        // Each device window: every other 4 KiB page taken, so 256 free pages of 4 KiB
        // (262,144 free ranges in all), and one free range of 12 KiB in the last window.
        for i in (1..N).step_by(2) {
            for k in (0..512).step_by(2) {
                p.take_in(
                    WindowKind::Device,
                    range((i << 22) + k * 0x1000, 0x1000),
                    "x",
                )
                .unwrap();
            }
        }
        p.release(range(((N - 1) << 22) + 2 * 0x1000, 0x1000))
            .unwrap();
        let (err, work) = looked_at(|| {
            for _ in 0..99 {
                p.place(WindowKind::Device, 0x4000, 0x1000, "big")
                    .unwrap_err();
            }
            p.place(WindowKind::Device, 0x4000, 0x1000, "big")
                .unwrap_err()
        });
        assert!(
            matches!(
                err,
                Error::NoRoom {
                    largest_free: 0x3000,
                    ..
                }
            ),
            "{err}"
        );
        // A refusal finds the largest free range through the windows' bounds, not by walking
        // all 262,144 free ranges (26 million for 100 refusals).
        assert!(
            work <= 100 * 64 * 64,
            "{work} windows and free ranges looked at"
        );
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "thousands of windows and calls, safe code only: slow under Miri"
    )]
    fn taking_and_finding_in_many_windows_looks_at_the_windows_touched() {
        const N: u64 = 4096;
        let layout = many_windows(N);
        let specs = (0..N)
            .step_by(2)
            .map(|i| crate::RegionSpec::ram(GuestAddress(i << 22), 2 << 20));
        let space = crate::AddressSpace::builder(layout.clone())
            .slots(u32::MAX)
            .regions(specs)
            .plan()
            .unwrap();
        let snapshot = space.snapshot();
        let (placer, work) = looked_at(|| snapshot.placer().unwrap());
        let mut placer = placer;
        let ((), more) = looked_at(|| {
            for i in (0..N).step_by(2) {
                let at = GuestAddress((i << 22) + 0x1000);
                assert!(placer.owner_of(at).is_some());
                let r = range(i << 22, 2 << 20);
                placer.release(r).unwrap();
                placer.take_in(WindowKind::Ram, r, "again").unwrap();
            }
        });
        // Four calls per region (one to build), each finding its window by address in
        // O(log n) steps (two binary searches of 12 steps here), not by a walk over all
        // windows (8 million).
        assert!(
            work + more <= 4 * 32 * N,
            "{} windows looked at",
            work + more
        );
        // A range over every window is still taken part by part, and given back.
        let all = range(0, N << 22);
        let mut fresh = layout.placer();
        fresh.take(all, "all").unwrap();
        fresh.release(all).unwrap();
    }

    /// Each kind's max tree and the map from windows to it, against a fresh look at every
    /// window: every window has the entry of its kind holding its allocator's own bound.
    fn assert_index_fresh(p: &Placer, what: &str) {
        assert!(
            p.windows
                .windows(2)
                .all(|w| w[0].0.last_addr() < w[1].0.start()),
            "{what}: windows out of order"
        );
        assert_eq!(p.kind_of.len(), p.windows.len(), "{what}");
        for (i, (w, alloc)) in p.windows.iter().enumerate() {
            let (k, j) = p.kind_of[i];
            let kind = &p.kinds[k];
            assert_eq!(kind.kind, w.kind(), "{what}: window {i}");
            assert_eq!(kind.windows.get(j), Some(&i), "{what}: window {i}");
            assert_eq!(
                kind.room.get(j),
                Some(alloc.largest_free_bound()),
                "{what}: window {i}'s bound"
            );
        }
        for kind in &p.kinds {
            assert_eq!(kind.room.len(), kind.windows.len(), "{what}");
        }
    }

    #[test]
    fn every_change_and_every_refusal_leaves_the_index_as_a_fresh_walk_gives() {
        // Windows that touch, one at the top of the address space, and the x86-64 layout.
        let w = |kind, start: u64, size: u64| Window::new(kind, GuestAddress(start), size).unwrap();
        let custom = Layout::new(
            GuestAddress(u64::MAX),
            [
                w(WindowKind::Device, 0x1_0000, 0x4000),
                w(WindowKind::Device, 0x1_4000, 0x2000),
                w(WindowKind::Ram, 0x1_6000, 0x1000),
                w(WindowKind::Device, 0x2_0000, (1 << 24) + 0x3000),
                w(WindowKind::Hotplug, 0x200_0000, 0x1_0000),
                w(WindowKind::Device, u64::MAX - 0xffff, 0x1_0000),
            ],
        )
        .unwrap();
        let x86 = Layout::x86_64().ram(GIB).build().unwrap();
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let steps = if cfg!(miri) { 60 } else { 3000 };
        for layout in [custom, x86] {
            let mut p = layout.placer();
            let edges: Vec<u64> = p
                .windows
                .iter()
                .flat_map(|(w, _)| [w.start().0, w.last_addr().0])
                .collect();
            let kinds = [WindowKind::Device, WindowKind::Ram, WindowKind::Hotplug];
            for step in 0..steps {
                let kind = kinds[(next() % 3) as usize];
                let edge = edges[usize::try_from(next() % edges.len() as u64).unwrap()];
                let at = (edge.wrapping_add(next() % 0x6000).wrapping_sub(0x3000)) & !0xfff;
                let size =
                    [0x1000, 0x2000, 0x5000, 1 << 24, (1 << 24) + 0x1000][(next() % 5) as usize];
                let owner = format!("o{step}");
                let what = format!("step {step}");
                match next() % 6 {
                    0 | 1 => drop(p.place(kind, size, 1 << (next() % 14), &owner)),
                    2 => {
                        if let Ok(r) = GuestRange::new(GuestAddress(at), size) {
                            drop(p.take_in(kind, r, &owner));
                        }
                    }
                    3 => {
                        // Often across windows, and often over something held: the parts
                        // taken before the refusal are given back.
                        if let Ok(r) = GuestRange::new(GuestAddress(at), size + 0x3000) {
                            drop(p.take(r, &owner));
                        }
                    }
                    4 => {
                        let held: Vec<GuestRange> = p.allocations().map(|(_, r)| r).collect();
                        if !held.is_empty() {
                            let whole = held[usize::try_from(next() % held.len() as u64).unwrap()];
                            let part = p
                                .windows
                                .iter()
                                .find_map(|(w, _)| w.range().intersection(&whole))
                                .unwrap();
                            // A part alone is refused when the range crossed windows.
                            drop(p.release(part));
                            drop(p.release(whole));
                        }
                    }
                    _ => {
                        let fail = next() % 2 == 0;
                        drop(p.transaction(|p| {
                            p.place(kind, size, 0x1000, &owner)?;
                            if fail {
                                return Err(Error::NoIrqs);
                            }
                            Ok(())
                        }));
                    }
                }
                assert_index_fresh(&p, &what);
            }
        }
    }

    #[test]
    fn take_across_windows_refused_takes_nothing() {
        let l = Layout::x86_64().ram(GIB).build().unwrap();
        let mut p = l.placer();
        // The last device page and the first reserved page: two windows.
        let hole_end = 0xfec0_0000;
        p.take(range(hole_end, 0x1000), "IOAPIC").unwrap();
        let err = p
            .take(range(hole_end - 0x1000, 0x2000), "net0")
            .unwrap_err();
        assert!(
            matches!(&err, Error::Taken { other, other_range, .. }
                if other == "IOAPIC" && other_range.start().0 == hole_end),
            "{err}"
        );
        // The device part was given back: it can be taken on its own.
        p.take(range(hole_end - 0x1000, 0x1000), "net0").unwrap();
    }

    #[test]
    fn take_outside_every_window_is_refused_and_holds_nothing() {
        // x86-64 with 1 GiB of RAM: the windows end at 4 GiB (the firmware window).
        let l = Layout::x86_64().ram(GIB).build().unwrap();
        let end = l.windows().last().unwrap().last_addr().0 + 1;
        assert_eq!(end, 4 * GIB);
        let mut p = l.placer();
        let before = p.allocations().count();
        let outside = range(1 << 50, 0x1000);
        let err = p.take(outside, "pmem0").unwrap_err();
        assert!(
            matches!(&err, Error::OutsideWindows { owner, range } if owner == "pmem0" && *range == outside),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "pmem0's range [0x4000000000000, 0x4000000000fff] lies in no window of the layout"
        );
        assert_eq!(p.allocations().count(), before);
        assert!(matches!(p.release(outside), Err(Error::NotPlaced { .. })));
        // The top page of the address space, past every window, too.
        let top = range(u64::MAX - 0xfff, 0x1000);
        assert!(matches!(
            p.take(top, "x"),
            Err(Error::OutsideWindows { .. })
        ));
        // A range that reaches into a window is still taken there, and given back as taken.
        let across = range(end - 0x1000, 0x2000);
        p.take(across, "blk0").unwrap();
        assert_eq!(p.allocations().count(), before + 1);
        p.release(across).unwrap();
        assert_eq!(p.allocations().count(), before);
    }

    #[test]
    fn placers_of_platforms_and_snapshots_skip_what_lies_outside_every_window() {
        // A custom layout with one device window: the platform's reservations and a reserved
        // region lie outside it, where nothing can be placed.
        let device = Window::new(WindowKind::Device, GuestAddress(0x1000_0000), 0x10_0000).unwrap();
        let l = Layout::new(GuestAddress(u64::MAX), [device]).unwrap();
        for arch in crate::Arch::ALL {
            let p = crate::Platform::new(arch).placer(&l).unwrap();
            assert_eq!(p.allocations().count(), 0);
        }
        let reserved = crate::RegionSpec::new(
            crate::RegionType::Reserved,
            GuestAddress(0x2000_0000),
            0x1000,
        );
        let space = crate::AddressSpace::plan(l, [reserved]).unwrap();
        let mut p = space.snapshot().placer().unwrap();
        assert_eq!(p.allocations().count(), 0);
        p.place(WindowKind::Device, 0x1000, 0x1000, "net0").unwrap();
    }

    #[test]
    fn owner_of_a_part_of_a_range_taken_across_windows_names_the_whole_range() {
        let l = Layout::x86_64().ram(GIB).build().unwrap();
        let mut p = l.placer();
        // The last device page and the first reserved page: one take, two windows.
        let both = range(0xfec0_0000 - 0x1000, 0x2000);
        p.take(both, "net0").unwrap();
        for addr in [0xfec0_0000 - 0x1000, 0xfec0_0000, 0xfec0_0fff] {
            assert_eq!(p.owner_of(GuestAddress(addr)), Some(("net0", both)));
        }
        // A collision with a part names the range as taken too.
        for err in [
            p.take(range(0xfec0_0000, 0x1000), "IOAPIC").unwrap_err(),
            p.take_in(WindowKind::Reserved, range(0xfec0_0000, 0x1000), "IOAPIC")
                .unwrap_err(),
        ] {
            assert!(
                matches!(&err, Error::Taken { other, other_range, .. }
                    if other == "net0" && *other_range == both),
                "{err}"
            );
        }
        // What `owner_of` names is what `release` gives back.
        let (_, held) = p.owner_of(GuestAddress(0xfec0_0000)).unwrap();
        p.release(held).unwrap();
        assert_eq!(p.owner_of(GuestAddress(0xfec0_0000)), None);
        assert_eq!(p.allocations().count(), 0);
    }

    #[test]
    fn release_whole_address_space_names_its_range() {
        let l = Layout::x86_64().ram(GIB).build().unwrap();
        let mut p = l.placer();
        let whole = GuestRange::inclusive(GuestAddress(0), GuestAddress(u64::MAX)).unwrap();
        let before = p.allocations().count();
        let err = p.release(whole).unwrap_err();
        assert!(
            matches!(err, Error::NotPlaced { range } if range == whole),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "[0x0, 0xffffffffffffffff] is not a range placed or taken as one"
        );
        assert_eq!(p.allocations().count(), before);
    }

    #[test]
    fn release_gives_back_only_what_one_call_took() {
        let l = Layout::x86_64().ram(GIB).build().unwrap();
        let mut p = l.placer();
        // Two takes, in the device window and the reserved window next to it.
        p.take(range(0xfeb0_0000, 0x10_0000), "net0").unwrap();
        p.take(range(0xfec0_0000, 0x1000), "IOAPIC").unwrap();
        let before = p
            .allocations()
            .map(|(o, r)| (o.to_owned(), r))
            .collect::<Vec<_>>();
        let err = p.release(range(0xfeb0_0000, 0x10_1000)).unwrap_err();
        assert!(
            matches!(err, Error::NotPlaced { range: r } if r == range(0xfeb0_0000, 0x10_1000)),
            "{err}"
        );
        let after = p
            .allocations()
            .map(|(o, r)| (o.to_owned(), r))
            .collect::<Vec<_>>();
        assert_eq!(before, after);
        p.release(range(0xfeb0_0000, 0x10_0000)).unwrap();
        p.release(range(0xfec0_0000, 0x1000)).unwrap();
        // One take across both windows: its parts go back together, never alone.
        p.take(range(0xfeb0_0000, 0x10_1000), "both").unwrap();
        assert_eq!(p.allocations().count(), 1);
        assert!(p.release(range(0xfeb0_0000, 0x10_0000)).is_err());
        assert!(p.release(range(0xfec0_0000, 0x1000)).is_err());
        assert_eq!(p.allocations().count(), 1);
        p.release(range(0xfeb0_0000, 0x10_1000)).unwrap();
        assert_eq!(p.allocations().count(), 0);
        // The same parts taken apart again are released apart.
        p.take(range(0xfeb0_0000, 0x10_0000), "net0").unwrap();
        p.release(range(0xfeb0_0000, 0x10_0000)).unwrap();
    }

    #[test]
    fn release_of_range_reaching_into_gap_is_refused() {
        // Two device windows with a gap between them, and nothing past the second.
        let device = |b: u64, s: u64| Window::new(WindowKind::Device, GuestAddress(b), s).unwrap();
        let l = Layout::new(
            GuestAddress(0xffff_ffff),
            [device(0x1000_0000, 0x1000), device(0x1000_2000, 0x1000)],
        )
        .unwrap();
        let mut p = l.placer();
        p.take(range(0x1000_2000, 0x1000), "net0").unwrap();
        let before = p
            .allocations()
            .map(|(o, r)| (o.to_owned(), r))
            .collect::<Vec<_>>();
        // Its only part inside a window is net0's range, but neither range is net0's.
        for wider in [
            range(0x1000_1000, 0x2000),
            range(0x1000_2000, 0x2000),
            range(0x1000_1000, 0x3000),
        ] {
            let err = p.release(wider).unwrap_err();
            assert!(
                matches!(err, Error::NotPlaced { range: r } if r == wider),
                "{err}"
            );
            assert_eq!(
                p.allocations()
                    .map(|(o, r)| (o.to_owned(), r))
                    .collect::<Vec<_>>(),
                before
            );
        }
        p.release(range(0x1000_2000, 0x1000)).unwrap();
        assert_eq!(p.allocations().count(), 0);

        // A range taken across the gap (and past the last window) goes back only as taken.
        let taken = range(0x1000_0800, 0x3000);
        p.take(taken, "blk0").unwrap();
        assert_eq!(p.allocations().count(), 1);
        for other in [
            range(0x1000_0800, 0x2800),
            range(0x1000_0800, 0x4000),
            range(0x1000_0000, 0x3800),
        ] {
            assert!(matches!(p.release(other), Err(Error::NotPlaced { .. })));
            assert_eq!(p.allocations().count(), 1);
        }
        p.release(taken).unwrap();
        assert_eq!(p.allocations().count(), 0);
    }

    #[test]
    fn take_then_place_skips_taken() {
        let l = Layout::x86_64().ram(GIB).hotplug(GIB).build().unwrap();
        let mut p = l.placer();
        p.take(range(4 * GIB, 0x20_0000), "slot0").unwrap();
        let slot = p
            .place(WindowKind::Hotplug, 0x20_0000, 0x20_0000, "slot1")
            .unwrap();
        assert_eq!(slot, range(4 * GIB + 0x20_0000, 0x20_0000));
        assert_eq!(
            p.owner_of(GuestAddress(4 * GIB + 0x30_0000)),
            Some(("slot1", slot))
        );
        let err = p.take(range(4 * GIB, 0x1000), "x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "x's range [0x100000000, 0x100000fff] overlaps slot0's range [0x100000000, 0x1001fffff]"
        );
        p.release(range(4 * GIB, 0x20_0000)).unwrap();
        assert!(p.release(range(4 * GIB, 0x20_0000)).is_err());
        assert!(p.release(range(4 * GIB + 0x20_0000, 0x1000)).is_err());
        assert!(matches!(
            p.place(WindowKind::Dax, 0x1000, 0x1000, "d"),
            Err(Error::NoRoom {
                largest_free: 0,
                ..
            })
        ));
        assert!(matches!(
            p.place(WindowKind::Hotplug, 0x1000, 3, "d"),
            Err(Error::InvalidAlignment { align: 3 })
        ));
        assert!(matches!(
            p.place(WindowKind::Hotplug, 0, 0x1000, "d"),
            Err(Error::NothingToPlace { ref owner }) if owner == "d"
        ));
        let err = p
            .place(WindowKind::Hotplug, 2 * GIB, 0x1000, "big")
            .unwrap_err();
        assert!(
            matches!(err, Error::NoRoom { ref owner, largest_free, .. }
                if owner == "big" && largest_free == GIB - 0x40_0000),
            "{err}"
        );
    }

    #[test]
    fn errors_display_owner_and_values() {
        let l = Layout::x86_64().ram(GIB).build().unwrap();
        let mut p = l.placer();
        assert_eq!(
            p.place(WindowKind::Device, 0, 0x1000, "net0")
                .unwrap_err()
                .to_string(),
            "net0 asks for zero bytes"
        );
        assert_eq!(
            p.place(WindowKind::Device, 2 * GIB, 0x1000, "pmem0")
                .unwrap_err()
                .to_string(),
            "no free range of 0x80000000 bytes aligned to 0x1000 for pmem0 in the device windows \
             (largest free range 0x3ec00000)"
        );
        assert_eq!(
            p.take_in(WindowKind::Device, range(0x1000, 0x1000), "net0")
                .unwrap_err()
                .to_string(),
            "net0's range [0x1000, 0x1fff] is not inside a device window"
        );
        let mut arm = Layout::aarch64().build().unwrap().placer();
        assert_eq!(
            arm.ports_at(range(0x3f8, 8), "serial")
                .unwrap_err()
                .to_string(),
            "the platform has no I/O ports"
        );
        let mut x86 = crate::Platform::x86_64()
            .placer(&crate::Platform::x86_64().layout().build().unwrap())
            .unwrap();
        assert_eq!(
            x86.ports_at(range(0xfffc, 8), "com")
                .unwrap_err()
                .to_string(),
            "I/O ports [0xfffc, 0x10003] pass the platform's port space [0x0, 0xffff]"
        );
        assert_eq!(
            Error::InvalidRange { first: 2, last: 1 }.to_string(),
            "range 0x2..=0x1 is reversed"
        );
    }

    #[test]
    fn take_in_outside_its_kind_errors() {
        let l = Layout::x86_64().ram(GIB).build().unwrap();
        let mut p = l.placer();
        let err = p
            .take_in(WindowKind::Device, range(0x1000, 0x1000), "net0")
            .unwrap_err();
        assert!(matches!(
            err,
            Error::NotInWindow {
                window: WindowKind::Device,
                ..
            }
        ));
        p.take_in(WindowKind::Device, range(0xd000_0000, 0x1_0000), "net0")
            .unwrap();
        let err = p
            .take_in(WindowKind::Device, range(0xd000_8000, 0x1000), "blk0")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "blk0's range [0xd0008000, 0xd0008fff] overlaps net0's range [0xd0000000, 0xd000ffff]"
        );
    }

    #[test]
    fn irqs_name_their_owners() {
        let l = Layout::x86_64().ram(GIB).build().unwrap();
        let mut p = l.placer();
        assert_eq!(p.irq_at(4, "serial").unwrap(), 4);
        let err = p.irq_at(4, "net0").unwrap_err();
        assert_eq!(err.to_string(), "GSI 4 of net0 is taken by serial");
        assert_eq!(
            p.irq_at(24, "net0").unwrap_err().to_string(),
            "GSI 24 is outside 0..=23"
        );
        // The legacy GSIs 0-4 only by number: the lowest free one for a device is 5.
        assert_eq!(p.irq("net0").unwrap(), 5);
        // The timer's GSIs are held for KVM's in-kernel PIT, the other legacy ones by no one.
        assert_eq!(p.irq_owner(0), Some("legacy ISA"));
        assert_eq!(p.irq_owner(2), Some("legacy ISA"));
        assert_eq!(p.irq_owner(1), None);
        for i in 6..24 {
            assert_eq!(p.irq(&format!("d{i}")).unwrap(), i);
        }
        assert_eq!(p.irq_owner(23), Some("d23"));
        assert_eq!(p.irq_owner(3), None);
        assert_eq!(
            p.irq("late").unwrap_err().to_string(),
            "no free GSI is left for late (0..=23 are all taken)"
        );
        // Asked for by number, a legacy GSI is given once.
        assert_eq!(p.irq_at(3, "rtc").unwrap(), 3);
        assert_eq!(p.irq_owner(3), Some("rtc"));
        assert_eq!(
            p.irq_at(3, "other").unwrap_err().to_string(),
            "GSI 3 of other is taken by rtc"
        );
        let custom = Layout::new(GuestAddress(u64::MAX), []).unwrap();
        assert!(matches!(custom.placer().irq("x"), Err(Error::NoIrqs)));
    }

    #[test]
    fn transaction_error_keeps_state() {
        let l = Layout::x86_64().ram(GIB).build().unwrap();
        let mut p = l.placer();
        let r: Result<()> = p.transaction(|p| {
            p.irq_at(9, "net0")?;
            p.place(WindowKind::Device, 0x1000, 0x1000, "net0")?;
            p.irq_at(9, "blk0").map(drop)
        });
        assert!(matches!(r, Err(Error::IrqTaken { irq: 9, .. })));
        assert_eq!(p.irq_owner(9), None);
        assert_eq!(p.owner_of(GuestAddress(0xc000_0000)), None);
    }

    #[test]
    fn release_irq_gives_back_a_number_for_the_next_device() {
        let l = Layout::x86_64().ram(GIB).build().unwrap();
        let mut p = l.placer();
        assert_eq!(p.irq("net0").unwrap(), 5);
        assert_eq!(p.irq("blk0").unwrap(), 6);
        p.release_irq(5).unwrap();
        assert_eq!(p.irq_owner(5), None);
        // The lowest free number again, and by number too.
        assert_eq!(p.irq("rng0").unwrap(), 5);
        p.release_irq(6).unwrap();
        assert_eq!(p.irq_at(6, "blk0").unwrap(), 6);
        assert_eq!(p.irq_owner(6), Some("blk0"));
    }

    #[test]
    fn release_irq_of_a_legacy_number_keeps_it_from_irq() {
        let l = Layout::x86_64().ram(GIB).build().unwrap();
        let mut p = l.placer();
        assert_eq!(p.irq_at(4, "serial").unwrap(), 4);
        p.release_irq(4).unwrap();
        assert_eq!(p.irq_owner(4), None);
        // Still legacy: never picked by `irq`, given again by number.
        assert_eq!(p.irq("net0").unwrap(), 5);
        assert_eq!(p.irq_at(4, "serial").unwrap(), 4);
        assert_eq!(p.irq_owner(4), Some("serial"));
        // An unclaimed legacy number was never handed out: nothing to give back.
        let before = p.clone();
        let err = p.release_irq(3).unwrap_err();
        assert!(
            matches!(
                err,
                Error::IrqNotTaken {
                    irq: 3,
                    name: "GSI"
                }
            ),
            "{err}"
        );
        assert_eq!(err.to_string(), "GSI 3 is not taken");
        assert_eq!(p.irq("blk0").unwrap(), before.clone().irq("blk0").unwrap());
        assert!(p.irq_at(3, "rtc").is_ok());
    }

    #[test]
    fn release_irq_errors_change_nothing() {
        let l = Layout::x86_64().ram(GIB).build().unwrap();
        let mut p = l.placer();
        p.irq_at(9, "net0").unwrap();
        let owners = |p: &Placer| {
            (0..24)
                .map(|i| p.irq_owner(i).map(str::to_owned))
                .collect::<Vec<_>>()
        };
        let before = owners(&p);
        // Never handed out.
        assert!(matches!(
            p.release_irq(10),
            Err(Error::IrqNotTaken { irq: 10, .. })
        ));
        // Outside the range.
        let err = p.release_irq(24).unwrap_err();
        assert!(
            matches!(
                err,
                Error::IrqOutOfRange {
                    irq: 24,
                    first: 0,
                    last: 23,
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            p.release_irq(u32::MAX),
            Err(Error::IrqOutOfRange { .. })
        ));
        assert_eq!(owners(&p), before);
        // Given back once only.
        p.release_irq(9).unwrap();
        assert!(matches!(
            p.release_irq(9),
            Err(Error::IrqNotTaken { irq: 9, .. })
        ));
        assert_eq!(p.irq_owner(9), None);
        // Nothing is handed out twice after the failed releases.
        assert_eq!(p.irq("a").unwrap(), 5);
        assert_eq!(p.irq_at(9, "b").unwrap(), 9);
        assert!(matches!(p.irq_at(9, "c"), Err(Error::IrqTaken { .. })));
        let custom = Layout::new(GuestAddress(u64::MAX), []).unwrap();
        assert!(matches!(custom.placer().release_irq(5), Err(Error::NoIrqs)));
    }

    #[test]
    fn release_irq_of_every_number_empties_the_range() {
        let l = Layout::aarch64().build().unwrap();
        let mut p = l.placer();
        let all: Vec<u32> = std::iter::from_fn(|| p.irq("d").ok()).collect();
        assert_eq!(all, (32..=127).collect::<Vec<_>>());
        for &i in all.iter().rev() {
            p.release_irq(i).unwrap();
        }
        assert!(matches!(
            p.release_irq(31),
            Err(Error::IrqOutOfRange {
                irq: 31,
                name: "INTID",
                ..
            })
        ));
        let again: Vec<u32> = std::iter::from_fn(|| p.irq("d").ok()).collect();
        assert_eq!(again, all);
    }

    #[test]
    fn release_ports_gives_back_exactly_what_was_taken() {
        let platform = crate::Platform::x86_64();
        let l = platform.layout().build().unwrap();
        let mut p = platform.placer(&l).unwrap();
        p.ports_at(range(0x3f8, 8), "serial").unwrap();
        p.ports_at(range(0x2f8, 8), "com2").unwrap();
        // Re-plugged at the same ports after it is given back.
        p.release_ports(range(0x3f8, 8)).unwrap();
        p.ports_at(range(0x3f8, 8), "serial").unwrap();
        // Only exactly a range taken: not a part, not a wider range, not two ranges at once,
        // not free ports, not ports past the port space.
        for wrong in [
            range(0x3f8, 4),
            range(0x3fc, 4),
            range(0x3f0, 0x10),
            range(0x2f8, 0x108),
            range(0x500, 8),
            range(0xfffc, 8),
            range(0x1_0000, 8),
        ] {
            let err = p.release_ports(wrong).unwrap_err();
            assert!(
                matches!(err, Error::NotPlaced { range } if range == wrong),
                "{wrong}: {err}"
            );
            assert!(matches!(
                p.ports_at(range(0x3f8, 8), "x"),
                Err(Error::Taken { ref other, .. }) if other == "serial"
            ));
            assert!(matches!(
                p.ports_at(range(0x2f8, 8), "x"),
                Err(Error::Taken { ref other, .. }) if other == "com2"
            ));
        }
        p.release_ports(range(0x2f8, 8)).unwrap();
        assert!(matches!(
            p.release_ports(range(0x2f8, 8)),
            Err(Error::NotPlaced { .. })
        ));
        p.ports_at(range(0x2f8, 8), "com2").unwrap();
        // Besides KVM's in-kernel devices, which the platform's placer holds from the start.
        let kernel: Vec<&str> = platform.kernel_ports().iter().map(|&(d, ..)| d).collect();
        assert_eq!(
            p.port_allocations()
                .filter(|(owner, _)| !kernel.contains(owner))
                .collect::<Vec<_>>(),
            [("com2", range(0x2f8, 8)), ("serial", range(0x3f8, 8))]
        );
        // Ports are not guest addresses: `release` does not give them back, nor the other way.
        assert!(matches!(
            p.release(range(0x3f8, 8)),
            Err(Error::NotPlaced { .. })
        ));
        let mut arm = crate::Platform::aarch64()
            .placer(&crate::Layout::aarch64().build().unwrap())
            .unwrap();
        assert!(matches!(
            arm.release_ports(range(0x3f8, 8)),
            Err(Error::NoIoPorts)
        ));
    }

    #[test]
    fn transaction_rolls_back_released_irqs_and_ports() {
        let platform = crate::Platform::x86_64();
        let l = platform.layout().build().unwrap();
        let mut p = platform.placer(&l).unwrap();
        p.ports_at(range(0x3f8, 8), "serial").unwrap();
        p.irq_at(4, "serial").unwrap();
        let net = p.irq("net0").unwrap();
        let r: Result<()> = p.transaction(|p| {
            p.release_ports(range(0x3f8, 8))?;
            p.release_irq(4)?;
            p.release_irq(net)?;
            p.ports_at(range(0x60, 1), "i8042")?;
            // The number given back is handed out again, inside the transaction.
            assert_eq!(p.irq("blk0")?, net);
            p.release_irq(net + 1) // never handed out: refused
        });
        assert!(matches!(r, Err(Error::IrqNotTaken { .. })), "{r:?}");
        assert_eq!(p.irq_owner(4), Some("serial"));
        assert_eq!(p.irq_owner(net), Some("net0"));
        assert_eq!(p.irq_owner(net + 1), None);
        assert!(matches!(
            p.ports_at(range(0x3f8, 8), "x"),
            Err(Error::Taken { ref other, .. }) if other == "serial"
        ));
        p.ports_at(range(0x60, 1), "i8042").unwrap();
        // A transaction that succeeds keeps its releases.
        p.transaction(|p| {
            p.release_ports(range(0x3f8, 8))?;
            p.release_irq(4)
        })
        .unwrap();
        assert_eq!(p.irq_owner(4), None);
        p.ports_at(range(0x3f8, 8), "serial").unwrap();
    }

    #[test]
    fn ports_at_checks_space_and_owner() {
        let platform = crate::Platform::x86_64();
        let l = platform.layout().build().unwrap();
        let mut p = platform.placer(&l).unwrap();
        p.ports_at(range(0x3f8, 8), "serial").unwrap();
        assert!(matches!(
            p.ports_at(range(0x3fc, 8), "com"),
            Err(Error::Taken { .. })
        ));
        assert!(matches!(
            p.ports_at(range(0xfffc, 8), "com"),
            Err(Error::PortsOutOfRange { .. })
        ));
        let mut arm = crate::Platform::aarch64()
            .placer(&crate::Layout::aarch64().build().unwrap())
            .unwrap();
        assert!(matches!(
            arm.ports_at(range(0x3f8, 8), "serial"),
            Err(Error::NoIoPorts)
        ));
    }
}
