//! The crate's error type.

use crate::range::AddressRange;

/// Every way an operation of this crate can fail.
///
/// Each variant carries the values that caused it, so a caller can report or act on them. A
/// failed operation never changes the allocator it was called on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A range was given with its start after its end.
    #[error("invalid range: start {start:#x} is after end {end:#x}")]
    InvalidRange {
        /// The requested first unit.
        start: u64,
        /// The requested last unit.
        end: u64,
    },
    /// A size of zero was requested.
    #[error("invalid size: a size of zero was requested")]
    ZeroSize,
    /// An alignment that is not a power of two (or is zero) was requested.
    #[error("invalid alignment {0:#x}: alignment must be a power of two")]
    InvalidAlignment(u64),
    /// `start + size - 1` does not fit in `u64`: a range of addresses, or a run of IDs
    /// ([`IdAllocator::allocate_ids_at`](crate::IdAllocator::allocate_ids_at)), whose last unit
    /// would be past `u64::MAX`.
    #[error("overflow: {size:#x} units starting at {start:#x} go past u64::MAX")]
    Overflow {
        /// The first unit (address or ID) of the requested range.
        start: u64,
        /// The requested number of units.
        size: u64,
    },
    /// An exact placement was requested at an address that does not have the alignment asked
    /// for.
    #[error("address {address:#x} is not aligned to {alignment:#x}")]
    UnalignedAddress {
        /// The requested address.
        address: u64,
        /// The requested alignment.
        alignment: u64,
    },
    /// No free range can hold the requested size with the requested alignment (inside the
    /// window, if one was given).
    #[error("out of space: no free range holds {size:#x} units aligned to {alignment:#x}")]
    OutOfSpace {
        /// The requested size.
        size: u64,
        /// The requested alignment.
        alignment: u64,
    },
    /// A range (or window) reaches outside the space the allocator manages.
    #[error("range {range} is outside the managed space {space}")]
    OutsideSpace {
        /// The offending range.
        range: AddressRange,
        /// The space the allocator manages.
        space: AddressRange,
    },
    /// A requested range overlaps a live allocation.
    #[error("range {requested} overlaps the existing allocation {existing}")]
    Overlap {
        /// The range that was asked for.
        requested: AddressRange,
        /// The live allocation it overlaps (the lowest one, if several).
        existing: AddressRange,
    },
    /// A range to free (or relocate) overlaps no live allocation.
    #[error("range {0} is not allocated")]
    NotAllocated(AddressRange),
    /// A range to free (or relocate) overlaps a live allocation but is not exactly it.
    #[error("range {requested} is not an allocation: the allocation there is {existing}")]
    NotExactAllocation {
        /// The range that was given.
        requested: AddressRange,
        /// The live allocation it overlaps (the lowest one, if several).
        existing: AddressRange,
    },
    /// An address to look up or release lies in no live allocation.
    #[error("address {0:#x} is not in any allocation")]
    AddressNotAllocated(u64),
    /// The allocator holds as many ranges as its index type can count: 2^32 - 1, the limit
    /// carried.
    #[error("too many allocations: the limit of {0} live ranges is reached")]
    TooManyAllocations(u32),
    /// An ID range was given with its first ID after its last.
    #[error("invalid ID range: first {first} is after last {last}")]
    InvalidIdRange {
        /// The requested first ID.
        first: u64,
        /// The requested last ID.
        last: u64,
    },
    /// An ID range holds more IDs than one allocator may manage.
    #[error("ID range {first}..={last} holds more than {max} IDs")]
    IdRangeTooLarge {
        /// The requested first ID.
        first: u64,
        /// The requested last ID.
        last: u64,
        /// The most IDs a range may hold ([`MAX_ID_RANGE`](crate::MAX_ID_RANGE)).
        max: u64,
    },
    /// An ID lies outside the allocator's range.
    #[error("ID {id} is outside the managed range {first}..={last}")]
    IdOutOfRange {
        /// The offending ID.
        id: u64,
        /// The first ID of the managed range.
        first: u64,
        /// The last ID of the managed range.
        last: u64,
    },
    /// A specific ID was requested but it is already allocated.
    #[error("ID {0} is already allocated")]
    IdAlreadyAllocated(u64),
    /// An ID to free was never handed out.
    #[error("ID {0} was never allocated")]
    IdNeverAllocated(u64),
    /// An ID to free was handed out once but has been freed since.
    #[error("ID {0} is already free")]
    IdAlreadyFree(u64),
    /// A count of zero IDs was requested.
    #[error("invalid ID count: zero IDs were requested")]
    ZeroIdCount,
    /// No run of free IDs is long enough for the request. For one ID (`count` 1, what
    /// [`IdAllocator::allocate_id`](crate::IdAllocator::allocate_id) gives when every ID is
    /// allocated) the text names no run: "out of IDs: no free ID", with " aligned to ..." when
    /// the alignment is above 1.
    #[error("out of IDs: {}", OutOfIdsText { count: *.count, alignment: *.alignment })]
    OutOfIds {
        /// The requested number of contiguous IDs.
        count: u32,
        /// The requested alignment of the first ID.
        alignment: u64,
    },
    /// An allocator set was given no address space.
    #[error("an allocator set needs at least one address space")]
    EmptySet,
    /// An allocation key is already in use.
    #[error("allocation key {0} is already in use")]
    KeyInUse(u64),
    /// No live allocation has this key.
    #[error("no allocation has key {0}")]
    UnknownKey(u64),
    /// Fewer IDs are free than were requested.
    #[error("not enough IDs: {requested} requested, {available} free")]
    NotEnoughIds {
        /// The requested number of IDs.
        requested: u32,
        /// The number of free IDs.
        available: u64,
    },
    /// Loading a snapshot would allocate more than the load limit allows.
    #[error("snapshot too large: loading it needs {needed} bytes of bitmap, the limit is {limit}")]
    SnapshotTooLarge {
        /// Bytes the load would allocate.
        needed: u64,
        /// The limit it was loaded with.
        limit: u64,
    },
    /// The heap refused memory an allocator needed: for an [`IdAllocator`](crate::IdAllocator),
    /// the ID list of [`allocate_many`](crate::IdAllocator::allocate_many), its bitmap growing
    /// to cover a newly allocated ID (or a loaded snapshot's) or its index of never-allocated
    /// runs; for an [`AddressAllocator`](crate::AddressAllocator) or an
    /// [`AllocatorSet`](crate::AllocatorSet), the index of live ranges, the tags, the keys or
    /// the parts of a spanning reservation. Nothing was allocated and nothing changed.
    #[error("the heap refused {bytes} bytes")]
    HeapRefused {
        /// Bytes requested from the heap (also when the request is too large to make at all,
        /// past `isize::MAX` on a 32-bit target).
        bytes: u64,
    },
    /// A snapshot being loaded (or an allocator being checked) is inconsistent; the text says
    /// which check failed.
    #[error("inconsistent state: {0}")]
    Inconsistent(&'static str),
    /// A vm-allocator `IdAllocator` snapshot's `next_id` is below `range_base` or past
    /// `range_end + 1`
    /// ([`IdAllocator::from_vm_allocator_snapshot`](crate::IdAllocator::from_vm_allocator_snapshot)).
    #[error(
        "vm-allocator snapshot: next_id {next_id} is outside range_base {range_base} to range_end + 1 ({range_end} + 1)"
    )]
    VmNextIdOutOfRange {
        /// The saved `next_id`.
        next_id: u32,
        /// The saved `range_base`.
        range_base: u32,
        /// The saved `range_end`.
        range_end: u32,
    },
    /// A vm-allocator `IdAllocator` snapshot's `next_id` is null, which stands for every ID up
    /// to `u32::MAX` handed out, but its `range_end` is below `u32::MAX`.
    #[error(
        "vm-allocator snapshot: next_id is null (every ID up to u32::MAX handed out) but range_end is {range_end}"
    )]
    VmNextIdNull {
        /// The saved `range_end`.
        range_end: u32,
    },
    /// A vm-allocator `IdAllocator` snapshot's `freed_ids` do not strictly increase: `id` is
    /// listed right after `previous`, which is not below it.
    #[error("vm-allocator snapshot: freed ID {id} is listed after {previous}")]
    VmFreedIdsUnsorted {
        /// The freed ID out of order (or repeated).
        id: u32,
        /// The freed ID listed right before it.
        previous: u32,
    },
    /// A vm-allocator `AddressAllocator` snapshot's tree node list names as a child of node
    /// `node` (its index in the list) a node `child` not listed before it, so the list is not
    /// a tree.
    #[error("vm-allocator snapshot: tree node {node} names node {child} as a child")]
    VmNotATree {
        /// Index of the parent in the node list.
        node: u32,
        /// The child index it names.
        child: u32,
    },
    /// A vm-allocator `AddressAllocator` snapshot's tree node for `start..=end` says it is
    /// `stored` levels high, but its subtree is `actual` levels high.
    #[error(
        "vm-allocator snapshot: the tree node of [{start:#x}, {end:#x}] says height {stored}, its subtree has height {actual}"
    )]
    VmTreeHeight {
        /// Start of the node's range, as saved.
        start: u64,
        /// End of the node's range, as saved.
        end: u64,
        /// The height the node holds.
        stored: u64,
        /// The height of its subtree.
        actual: u64,
    },
    /// A vm-allocator `AddressAllocator` snapshot's tree is not balanced: the subtrees of the
    /// node for `start..=end` are `left` and `right` levels high, more than one apart.
    #[error(
        "vm-allocator snapshot: the tree node of [{start:#x}, {end:#x}] is out of balance: subtrees of heights {left} and {right}"
    )]
    VmTreeUnbalanced {
        /// Start of the node's range, as saved.
        start: u64,
        /// End of the node's range, as saved.
        end: u64,
        /// Height of its lower-address subtree.
        left: u64,
        /// Height of its higher-address subtree.
        right: u64,
    },
    /// A vm-allocator `AddressAllocator` snapshot's tree is deeper than `limit` levels (deeper
    /// than vm-allocator builds); it was refused while read, at that depth.
    #[error("vm-allocator snapshot: the tree is deeper than {limit} levels")]
    VmTreeTooDeep {
        /// The most levels accepted.
        limit: u32,
    },
    /// A vm-allocator `AddressAllocator` snapshot's tree ranges are not in increasing order or
    /// overlap: in address order, `range` comes after `previous` but does not start past its
    /// end.
    #[error("vm-allocator snapshot: tree range {range} does not start after {previous}")]
    VmTreeRangesOverlap {
        /// The range out of order.
        range: AddressRange,
        /// The range of the node before it in the tree's order.
        previous: AddressRange,
    },
}

/// The text of [`Error::OutOfIds`] after "out of IDs: ", in the singular for one ID.
struct OutOfIdsText {
    count: u32,
    alignment: u64,
}

impl core::fmt::Display for OutOfIdsText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match (self.count, self.alignment) {
            (1, 1) => f.write_str("no free ID"),
            (1, alignment) => write!(f, "no free ID aligned to {alignment}"),
            (count, alignment) => write!(f, "no run of {count} free IDs aligned to {alignment}"),
        }
    }
}

/// The result type of this crate.
pub type Result<T> = core::result::Result<T, Error>;

/// A refused tagged allocation or reservation: the [`Error`] and the tag it was given, handed
/// back unchanged.
///
/// Returned by [`AddressAllocator::try_allocate_with`](crate::AddressAllocator::try_allocate_with),
/// [`AddressAllocator::try_reserve_with`](crate::AddressAllocator::try_reserve_with) and the
/// `try_` methods of [`AllocatorSet`](crate::AllocatorSet), so that a tag that is costly or
/// impossible to make again (a device, a file, an `Arc`) is not lost when the allocator says
/// no. As with every error of this crate, the allocator is unchanged.
///
/// It prints as its [`Error`] does, and `?` turns it into that [`Error`] (dropping the tag).
/// `Debug` shows the error only, so it needs no `Debug` of the tag. Its
/// [`source`](core::error::Error::source) is the error's own (none): the error's text is
/// already this one's, and an error chain printed with its sources would repeat it.
///
/// ```
/// use memvisor_resources::{AddressAllocator, AddressRange, Error};
///
/// struct Device(std::fs::File);
///
/// fn attach(mmio: &mut AddressAllocator<Device>, at: AddressRange, dev: Device) -> Option<Device> {
///     match mmio.try_reserve_with(at, dev) {
///         Ok(()) => None,
///         // Refused: the device comes back, to be placed elsewhere or closed by its owner.
///         Err(refused) => {
///             assert!(matches!(refused.error(), Error::Overlap { .. }));
///             Some(refused.into_tag())
///         }
///     }
/// }
/// # let mut mmio = AddressAllocator::new(AddressRange::new(0x1000, 0x1fff)?);
/// # let at = AddressRange::new(0x1000, 0x10ff)?;
/// # let file = || std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
/// # assert!(attach(&mut mmio, at, Device(file())).is_none());
/// # assert!(attach(&mut mmio, at, Device(file())).is_some());
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Refused<T> {
    error: Error,
    tag: T,
}

impl<T> Refused<T> {
    /// A refusal of `tag` for `error`.
    #[must_use]
    pub fn new(error: Error, tag: T) -> Self {
        Self { error, tag }
    }

    /// Why the call was refused.
    #[must_use]
    pub fn error(&self) -> Error {
        self.error
    }

    /// The tag the call was given.
    #[must_use]
    pub fn tag(&self) -> &T {
        &self.tag
    }

    /// The tag the call was given, back to the caller.
    #[must_use]
    pub fn into_tag(self) -> T {
        self.tag
    }

    /// The error and the tag.
    #[must_use]
    pub fn into_parts(self) -> (Error, T) {
        (self.error, self.tag)
    }
}

impl<T> From<Refused<T>> for Error {
    /// The error of a refusal; the tag is dropped.
    fn from(refused: Refused<T>) -> Self {
        refused.error
    }
}

impl<T> core::fmt::Debug for Refused<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Refused")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<T> core::fmt::Display for Refused<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&self.error, f)
    }
}

impl<T> core::error::Error for Refused<T> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        core::error::Error::source(&self.error)
    }
}
