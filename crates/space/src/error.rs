//! The error type of every fallible operation in this crate.

use std::io;
use std::path::PathBuf;

use crate::layout::WindowKind;
use crate::range::GuestRange;
use crate::spec::{HugePageSize, RegionType};

/// A failure a [`RegionListener`](crate::RegionListener) reports; it cancels the change.
pub type ListenerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in this crate. Variants carry the values that caused them;
/// OS failures keep the `io::Error` as their source. A failed operation leaves the address
/// space exactly as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A region or window of size zero.
    #[error("region at {base:#x} has size zero")]
    ZeroSize {
        /// Its base address.
        base: u64,
    },
    /// `base + size` goes past the end of the 64-bit address space.
    #[error("range at {base:#x} of size {size:#x} overflows the 64-bit address space")]
    Overflow {
        /// The base address.
        base: u64,
        /// The size.
        size: u64,
    },
    /// A range of the whole 64-bit address space was given where a region's or a window's
    /// size is needed: 2^64 bytes is one more than a `u64` holds
    /// ([`RegionSpec::for_range`](crate::RegionSpec::for_range),
    /// [`RegionSpec::with_range`](crate::RegionSpec::with_range),
    /// [`Window::for_range`](crate::Window::for_range)).
    #[error(
        "the range [0x0, 0xffffffffffffffff] is the whole 64-bit address space, 2^64 bytes, one more than a size, a u64, holds"
    )]
    WholeAddressSpace,
    /// The base or size is not a multiple of the region's page size.
    #[error("region at {base:#x} of size {size:#x} is not aligned to its page size {page_size:#x}")]
    Misaligned {
        /// The base address.
        base: u64,
        /// The size.
        size: u64,
        /// The page size it must be a multiple of: the guest page ([`crate::GUEST_PAGE_SIZE`]
        /// or the layout's), the host's when memory is made, or the explicit huge page size.
        page_size: u64,
    },
    /// Two regions (or two layout windows) share addresses.
    #[error(
        "range at {base:#x} of size {size:#x} overlaps the one at {other_base:#x} of size {other_size:#x}"
    )]
    Overlap {
        /// The base of the range being added.
        base: u64,
        /// Its size.
        size: u64,
        /// The base of the range already there.
        other_base: u64,
        /// Its size.
        other_size: u64,
    },
    /// A region does not sit entirely inside one layout window of the kind its type needs.
    #[error("{ty} region at {base:#x} of size {size:#x} is not inside a {window} window")]
    OutsideWindow {
        /// The region's type.
        ty: RegionType,
        /// Its base address.
        base: u64,
        /// Its size.
        size: u64,
        /// The kind of window it needs.
        window: WindowKind,
    },
    /// A range reaches past the layout's highest guest physical address.
    #[error("range at {base:#x} of size {size:#x} reaches past the address limit {limit:#x}")]
    AddressLimit {
        /// The base address.
        base: u64,
        /// The size.
        size: u64,
        /// The highest usable guest physical address (inclusive).
        limit: u64,
    },
    /// A layout parameter is out of range.
    #[error("invalid layout: {reason}")]
    InvalidLayout {
        /// What is wrong.
        reason: String,
    },
    /// The options of a region contradict each other or its type.
    #[error("invalid {ty} region at {base:#x}: {reason}")]
    InvalidSpec {
        /// The region's type.
        ty: RegionType,
        /// Its base address.
        base: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A hugetlbfs backing path is not on a hugetlbfs mount.
    #[error("{path} is not on hugetlbfs (file system magic {magic:#x})")]
    NotHugetlbfs {
        /// The path given.
        path: PathBuf,
        /// The file system type found.
        magic: i64,
    },
    /// A hugetlbfs mount's page size is not the one asked for.
    #[error("{path} has {found:#x}-byte huge pages, but {wanted} pages were asked for")]
    HugePageSizeMismatch {
        /// The path given.
        path: PathBuf,
        /// The mount's page size.
        found: u64,
        /// The size asked for.
        wanted: HugePageSize,
    },
    /// The kernel could not provide the explicit huge pages asked for, and no fallback was
    /// allowed.
    #[error(
        "cannot get {needed} {size} huge pages for the region at {base:#x} ({free} free); allow a fallback or reserve more in /sys/kernel/mm/hugepages"
    )]
    HugePagesUnavailable {
        /// The region's base address.
        base: u64,
        /// The huge page size.
        size: HugePageSize,
        /// How many pages the region needs.
        needed: u64,
        /// How many were free when the error was seen.
        free: u64,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// Explicit huge pages of a size this host has no pool of (sysfs lists its pools and not
    /// this one, `pool`), and no fallback was allowed. The kernel refuses such a mapping with
    /// `EINVAL`; this is checked first, before anything is mapped.
    #[error(
        "this host has no {size} huge page pool ({pool} is missing) for the region at {base:#x}; allow a fallback or use another huge page size"
    )]
    HugePageSizeUnavailable {
        /// The region's base address.
        base: u64,
        /// The huge page size asked for.
        size: HugePageSize,
        /// The sysfs directory the pool would have.
        pool: PathBuf,
    },
    /// Transparent huge pages were asked for, but the host's setting does not give them to
    /// this backing, and no fallback was allowed.
    #[error(
        "transparent huge pages for the {backing} region at {base:#x} are off on this host ({path} is {setting}); allow a fallback or change the setting"
    )]
    TransparentHugePagesUnavailable {
        /// The region's base address.
        base: u64,
        /// The backing's short name.
        backing: &'static str,
        /// The sysfs file that decides.
        path: &'static str,
        /// Its selected value (`never`, `deny`, or `unknown` when it cannot be read).
        setting: String,
    },
    /// A NUMA node that this machine does not have.
    #[error("NUMA node {node} does not exist on this host (nodes online: {online})")]
    NumaNodeMissing {
        /// The node asked for.
        node: u32,
        /// The nodes the host has, as in `/sys/devices/system/node/online`.
        online: String,
    },
    /// A system call failed.
    #[error("{op} failed for the region at {base:#x}")]
    Os {
        /// The operation (`mmap`, `mbind`, `memfd_create`, ...).
        op: &'static str,
        /// The region's base address.
        base: u64,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// A backing file could not be opened, is not a regular file (a FIFO, a socket, a device
    /// or a directory: the source says which), or is too small.
    #[error("backing file {path} for the region at {base:#x}")]
    File {
        /// The file.
        path: PathBuf,
        /// The region's base address.
        base: u64,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// Two regions would map the same bytes of one file (the same file, whatever the paths
    /// that name it, at overlapping offsets; or adopted vm-memory mappings without a file over
    /// the same host memory, one `MmapRegion` at two guest addresses), and at least one of them
    /// is writable: a guest
    /// write through one would change the other's memory without marking its dirty log, and
    /// vm-memory users take distinct guest ranges for distinct memory. Read-only regions may
    /// share bytes. A writable region removed from the address space counts while anything (an
    /// older snapshot) still holds it: a write through that holder would change the new
    /// region's memory unlogged.
    #[error(
        "region at {base:#x} would map bytes of a file that the region at {other_base:#x} maps too, and one of them is writable"
    )]
    FileAliased {
        /// The base of the region being added.
        base: u64,
        /// The base of the region already there (or listed before it, or removed but still
        /// held).
        other_base: u64,
    },
    /// No region with this base and size is in the address space.
    #[error("no region at {base:#x} of size {size:#x}")]
    RegionNotFound {
        /// The base asked for.
        base: u64,
        /// The size asked for.
        size: u64,
    },
    /// The slot's host range is still claimed, so nothing can be plugged there: an older
    /// snapshot, or anything else keeping the `Arc<Region>` (a listener that kept a region
    /// whose plug was refused, say, and did not let go of it when the plug asked it to
    /// [`settle`](crate::RegionListener::settle)), still holds the memory of a region plugged
    /// there (the range is free again once the last holder drops it), or the range could not be
    /// turned back into reserved space after a failed plug ([`Error::SlotNotRestored`]) or
    /// an unplug, which leaves it claimed for the address space's life.
    #[error(
        "hotplug slot at {base:#x} of size {size:#x} is still claimed: an older snapshot holds its memory, or it could not be restored to reserved space"
    )]
    SlotBusy {
        /// The slot's base.
        base: u64,
        /// Its size.
        size: u64,
    },
    /// A hot-pluggable region needs the host reservation of its hotplug window, and the
    /// address space has none: it was planned without backing memory, or built over
    /// vm-memory's mappings ([`SpaceBuilder::adopt`](crate::SpaceBuilder::adopt), which reserves
    /// no window). (A region outside every
    /// hotplug window of the layout is [`Error::OutsideWindow`].)
    #[error("the address space has no backed hotplug window for the region at {base:#x}")]
    NoHotplugWindow {
        /// The region's base.
        base: u64,
    },
    /// No free, aligned range of this size is left in the windows of this kind.
    #[error("no free range of {size:#x} bytes aligned to {align:#x} in the {window} windows")]
    NoSpace {
        /// The kind of window searched.
        window: WindowKind,
        /// The size asked for.
        size: u64,
        /// The alignment asked for.
        align: u64,
    },
    /// A request for zero bytes: there is no range to place.
    #[error("{owner} asks for zero bytes")]
    NothingToPlace {
        /// Who asked.
        owner: String,
    },
    /// No window of this kind has room for what an owner asked for.
    #[error(
        "no free range of {size:#x} bytes aligned to {align:#x} for {owner} in the {window} windows (largest free range {largest_free:#x})"
    )]
    NoRoom {
        /// Who asked.
        owner: String,
        /// The kind of window searched.
        window: WindowKind,
        /// The size asked for.
        size: u64,
        /// The alignment asked for.
        align: u64,
        /// The largest free range left in those windows.
        largest_free: u64,
    },
    /// A fixed range does not lie inside one window of the kind it needs.
    #[error("{owner}'s range {range} is not inside a {window} window")]
    NotInWindow {
        /// Who asked.
        owner: String,
        /// The range asked for.
        range: GuestRange,
        /// The kind of window it needs.
        window: WindowKind,
        /// The largest free range left in the windows of that kind.
        largest_free: u64,
    },
    /// A range to take ([`Placer::take`](crate::Placer::take)) lies wholly outside every
    /// window of the layout: a placer could hold nothing of it, so taking it would protect
    /// nothing.
    #[error("{owner}'s range {range} lies in no window of the layout")]
    OutsideWindows {
        /// Who asked.
        owner: String,
        /// The range asked for.
        range: GuestRange,
    },
    /// A range overlaps one that another owner holds.
    #[error("{owner}'s range {range} overlaps {other}'s range {other_range}")]
    Taken {
        /// Who asked.
        owner: String,
        /// The range asked for.
        range: GuestRange,
        /// Who holds the range it overlaps.
        other: String,
        /// That range.
        other_range: GuestRange,
    },
    /// An interrupt number another owner holds.
    #[error("{name} {irq} of {owner} is taken by {other}")]
    IrqTaken {
        /// The number.
        irq: u32,
        /// What the platform calls it (`GSI`, `INTID`).
        name: &'static str,
        /// Who asked.
        owner: String,
        /// Who holds it.
        other: String,
    },
    /// An interrupt number outside the platform's range.
    #[error("{name} {irq} is outside {first}..={last}")]
    IrqOutOfRange {
        /// The number.
        irq: u32,
        /// What the platform calls it.
        name: &'static str,
        /// The first number devices may get.
        first: u32,
        /// The last one.
        last: u32,
    },
    /// An interrupt number to give back ([`Placer::release_irq`](crate::Placer::release_irq))
    /// that is not handed out: never given, given back already, or a legacy interrupt nobody
    /// asked for by number.
    #[error("{name} {irq} is not taken")]
    IrqNotTaken {
        /// The number.
        irq: u32,
        /// What the platform calls it.
        name: &'static str,
    },
    /// Every interrupt number is taken.
    #[error("no free {name} is left for {owner} ({first}..={last} are all taken)")]
    NoFreeIrq {
        /// Who asked.
        owner: String,
        /// What the platform calls them.
        name: &'static str,
        /// The first number devices may get.
        first: u32,
        /// The last one.
        last: u32,
    },
    /// The placer has no interrupt numbers (a custom layout without a platform).
    #[error("no interrupt numbers: the layout has no platform preset")]
    NoIrqs,
    /// I/O ports on a platform without them.
    #[error("the platform has no I/O ports")]
    NoIoPorts,
    /// I/O ports that pass the end of the platform's port space (any range of addresses may
    /// be asked for, the whole 64-bit range included; ports are 16 bits on x86-64).
    #[error("I/O ports {ports} pass the platform's port space {space}")]
    PortsOutOfRange {
        /// The ports asked for.
        ports: GuestRange,
        /// The platform's port space.
        space: GuestRange,
    },
    /// A caller's owner name that the placer keeps for its own holds:
    /// [`PlacerAllocators::RESERVED_OWNER`](crate::PlacerAllocators::RESERVED_OWNER), under
    /// which [`Placer::into_allocators`](crate::Placer::into_allocators) holds the free ranges of
    /// reserved windows. Refused so that such a hold is never a caller's range, nor a caller's
    /// range taken for one.
    #[error("the owner name {owner:?} is kept for the holds on reserved windows' free ranges")]
    OwnerNameReserved {
        /// The name given.
        owner: String,
    },
    /// A fixed MMIO address for the serial port of a platform whose serial port is on I/O
    /// ports (x86-64): the platform cannot honour it.
    #[error(
        "the platform's serial port is on I/O ports and has no MMIO address ({address:#x} given)"
    )]
    NoMmioSerial {
        /// The address given.
        address: u64,
    },
    /// A guest NUMA node number past the nodes of the request.
    #[error("guest NUMA node {node} does not exist ({nodes} nodes)")]
    NoGuestNode {
        /// The node asked for.
        node: u32,
        /// How many guest nodes there are (numbered from 0).
        nodes: usize,
    },
    /// A size or address that must be a multiple of an alignment is not.
    #[error("{owner}'s {what} {value:#x} is not a multiple of {of:#x}")]
    NotMultiple {
        /// Whose value it is.
        owner: String,
        /// What the value is (`DAX size`, `address`).
        what: &'static str,
        /// The value given.
        value: u64,
        /// What it must be a multiple of.
        of: u64,
    },
    /// A device name that does not tell the device apart in the plan: empty, another
    /// device's, or one the plan gives to another part of the map.
    #[error("device name {name:?} {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// A range whose first address is above its last.
    #[error("range {first:#x}..={last:#x} is reversed")]
    InvalidRange {
        /// The first address given.
        first: u64,
        /// The last address given.
        last: u64,
    },
    /// An alignment that is not a power of two.
    #[error("alignment {align:#x} is not a power of two")]
    InvalidAlignment {
        /// The alignment given.
        align: u64,
    },
    /// Every memory-slot number is in use.
    #[error("all {count} memory-slot numbers are in use")]
    NoSlotNumber {
        /// How many slot numbers there are.
        count: u64,
    },
    /// A boot memory map has more entries than the boot protocol's table holds
    /// ([`Snapshot::e820_table`](crate::Snapshot::e820_table),
    /// [`Plan::e820_table`](crate::plan::Plan::e820_table), and the PVH maps
    /// [`Snapshot::pvh_memmap`](crate::Snapshot::pvh_memmap) and
    /// [`Plan::pvh_memmap`](crate::plan::Plan::pvh_memmap), which Linux copies into that
    /// table).
    #[error("the boot memory map has {entries} entries, more than the {max} the e820 table holds")]
    TooManyMapEntries {
        /// The entries of the map.
        entries: usize,
        /// The entries the table holds.
        max: usize,
    },
    /// A plan's SRAT has more guest NUMA nodes (proximity domains) than the guest kernel maps
    /// to nodes (its `MAX_NUMNODES`), which Linux answers by rejecting the whole SRAT
    /// ([`Plan::numa_ranges_for_guest`](crate::plan::Plan::numa_ranges_for_guest)).
    #[error(
        "the SRAT has {nodes} guest NUMA nodes, more than the {max} the guest kernel maps (it would boot without NUMA)"
    )]
    TooManyGuestNodes {
        /// The guest nodes of the SRAT's memory ranges.
        nodes: usize,
        /// The nodes the guest kernel maps.
        max: u32,
    },
    /// The NUMA node limit a plan's SRAT was to be checked against is no Linux kernel's: a
    /// kernel's `MAX_NUMNODES` is `1 << CONFIG_NODES_SHIFT`, a power of two from 1 (no NUMA) to
    /// [`LINUX_MOST_NUMNODES`](crate::LINUX_MOST_NUMNODES), 1,024
    /// ([`Plan::numa_ranges_for_guest`](crate::plan::Plan::numa_ranges_for_guest)).
    #[error(
        "no Linux guest kernel maps {max_nodes} NUMA nodes (MAX_NUMNODES is a power of two from 1 to {most})"
    )]
    GuestNodeLimitUnknown {
        /// The limit given.
        max_nodes: u32,
        /// The most nodes a Linux kernel maps.
        most: u32,
    },
    /// A plan's SRAT names a guest NUMA node (proximity domain) at or past the proximity
    /// domains the guest kernel reads (its `MAX_PXM_DOMAINS`: 256, or its `MAX_NUMNODES` where
    /// that is more), which Linux answers as it answers too many nodes, by rejecting the whole
    /// SRAT ([`Plan::numa_ranges_for_guest`](crate::plan::Plan::numa_ranges_for_guest)). Only
    /// a plan whose nodes were edited after planning names one.
    #[error(
        "the SRAT names guest NUMA node {node}, past the {domains} proximity domains the guest kernel reads (it would boot without NUMA)"
    )]
    GuestNodeOutOfRange {
        /// The highest guest node of the SRAT's memory ranges.
        node: u32,
        /// The proximity domains the guest kernel reads.
        domains: u32,
    },
    /// A plan's SRAT has more memory ranges than the guest kernel keeps (its
    /// `NR_NODE_MEMBLKS`, twice its `MAX_NUMNODES`), which Linux answers by rejecting the
    /// whole SRAT ([`Plan::numa_ranges_for_guest`](crate::plan::Plan::numa_ranges_for_guest)).
    #[error(
        "the SRAT has {ranges} memory ranges, more than the {max} the guest kernel keeps (it would boot without NUMA)"
    )]
    TooManyNumaRanges {
        /// The SRAT's memory ranges.
        ranges: usize,
        /// The ranges the guest kernel keeps.
        max: u64,
    },
    /// A listener refused a change; the change was not made.
    #[error("a listener refused the change of the region at {base:#x}")]
    Listener {
        /// The region's base.
        base: u64,
        /// The listener's reason.
        #[source]
        source: ListenerError,
    },
    /// A region listener called a method that changes the address space it is being told a
    /// change of ([`insert_region`](crate::AddressSpace::insert_region),
    /// [`remove_region`](crate::AddressSpace::remove_region), [`plug`](crate::AddressSpace::plug)):
    /// the change in progress holds the writer lock until its listeners return, so the call
    /// could never go through. Nothing was done; a listener that passes this error on refuses
    /// the change in progress.
    #[error("{op} was called by a listener of the same address space during a change")]
    ListenerReentry {
        /// The method called, as `AddressSpace::insert_region`.
        op: &'static str,
    },
    /// A window that gets host memory (a hotplug window) does not start or end on a host page
    /// boundary, so its slots could not be mapped where the guest expects them.
    #[error(
        "{kind} window at {start:#x} of size {size:#x} is not aligned to the host page size {page_size:#x}"
    )]
    WindowMisaligned {
        /// The kind of window.
        kind: WindowKind,
        /// Its start.
        start: u64,
        /// Its size.
        size: u64,
        /// The host page size.
        page_size: u64,
    },
    /// A plug failed (making the slot's memory: its mapping, or a step after it, advice, NUMA
    /// binding, prefault; or inserting the region: a listener refused it, say), and so did
    /// turning the slot back into reserved address space (or the refused mapping lost the
    /// slot's pages). The slot stays claimed (plugging there answers [`Error::SlotBusy`]), and
    /// whatever is mapped there stays, until the address space is dropped, so that no other
    /// mapping can take its addresses; nothing else changed. Only from
    /// [`AddressSpace::plug`](crate::AddressSpace::plug);
    /// [`SpaceBuilder::back`](crate::SpaceBuilder::back) answers
    /// [`Error::SlotNotRestoredWhileBacking`] instead, as it has no space to keep the slot.
    #[error(
        "plugging the hotplug slot at {base:#x} of size {size:#x} failed ({}) and so did restoring it to reserved space; the slot stays claimed and unusable until the address space is dropped",
        with_sources(.cause)
    )]
    SlotNotRestored {
        /// The slot's base.
        base: u64,
        /// Its size.
        size: u64,
        /// Why the plug failed: the failed step's own error (an [`Error::Os`] naming the
        /// system call, `mmap`, `madvise`, `mbind`, with the kernel's error; the huge pages
        /// refused; a listener's refusal; a slot number or bookkeeping refused). Not this
        /// error's source (`restore` is), so its text shows it with its own sources.
        cause: Box<Error>,
        /// Why restoring the slot failed.
        #[source]
        restore: memvisor_vmem::Error,
    },
    /// Backing a hot-pluggable region in its slot of a hotplug window failed, and so did
    /// turning the slot back into reserved address space (or the refused mapping lost the
    /// slot's pages), while [`SpaceBuilder::back`](crate::SpaceBuilder::back) built the
    /// space. No space was made, so no slot stays claimed: the window's reservation is
    /// unmapped with the error, but for pages the reservation reported lost (the `restore`
    /// error), which it leaves alone, mapped or not, until the process ends; every other
    /// region's memory is unmapped too.
    #[error(
        "backing the hot-pluggable region at {base:#x} of size {size:#x} failed ({}) and so did restoring its slot to reserved space; no address space was made and the hotplug window's reservation is unmapped",
        with_sources(.cause)
    )]
    SlotNotRestoredWhileBacking {
        /// The region's base.
        base: u64,
        /// Its size.
        size: u64,
        /// Why its backing failed: the failed step's own error, as for
        /// [`Error::SlotNotRestored`].
        cause: Box<Error>,
        /// Why restoring the slot failed.
        #[source]
        restore: memvisor_vmem::Error,
    },
    /// Pages of this region cannot be given back to the host.
    #[error("cannot discard pages of the region at {base:#x}: {reason}")]
    DiscardRefused {
        /// The region's base.
        base: u64,
        /// Why.
        reason: &'static str,
    },
    /// A range to discard is empty or runs past its region's end.
    #[error(
        "cannot discard {len:#x} bytes at offset {offset:#x} of the region at {base:#x} of size {size:#x}"
    )]
    DiscardOutOfRange {
        /// The region's base.
        base: u64,
        /// The offset asked for, from the region's base.
        offset: u64,
        /// The length asked for.
        len: u64,
        /// The region's size.
        size: u64,
    },
    /// A dirty log was asked of a region that does not track writes.
    #[error("the region at {base:#x} does not track dirty pages")]
    DirtyLogUnavailable {
        /// The region's base.
        base: u64,
    },
    /// A dirty log to merge does not fit the region.
    #[error("a dirty log of {words} words does not fit the region at {base:#x} of {pages} pages")]
    DirtyLogSize {
        /// The region's base.
        base: u64,
        /// Pages in the region (bits its log has).
        pages: u64,
        /// Words in the log given.
        words: u64,
    },
    /// The region needs a feature of the host system that this host does not have: memfds,
    /// hugetlbfs, explicit or transparent huge pages, NUMA binding, dontfork and discarding
    /// are Linux's; shared anonymous memory, file mappings and vm-memory mappings over this
    /// crate's memory are Unix's (not Windows'). Refused before anything is made (huge pages
    /// only when no fallback is allowed: with one, base pages are used and the report says
    /// so).
    #[error(
        "{feature} for the region at {base:#x} is only on {only_on}, not on this host ({os})",
        os = std::env::consts::OS
    )]
    Unsupported {
        /// The feature, with the system call or advice it needs.
        feature: &'static str,
        /// The region's base address.
        base: u64,
        /// The systems that have it (`Linux`, or Unix systems).
        only_on: &'static str,
    },
    /// Reserving the host address range of a hotplug window failed.
    #[error("reserving host address space for the hotplug window {window}")]
    Reservation {
        /// The window's guest range.
        window: GuestRange,
        /// Why the host refused.
        #[source]
        source: memvisor_vmem::Error,
    },
    /// A range to give back to a [`Placer`](crate::Placer) is not exactly one range it placed
    /// or took (every part of a range taken across windows, all of them taken by one call), or
    /// I/O ports to give back ([`Placer::release_ports`](crate::Placer::release_ports)) are not
    /// exactly ports taken by one [`Placer::ports_at`](crate::Placer::ports_at).
    #[error("{range} is not a range placed or taken as one")]
    NotPlaced {
        /// The range given.
        range: GuestRange,
    },
    /// One of the crate's `memvisor-resources` allocators (a [`Placer`](crate::Placer)'s
    /// window, interrupt or I/O-port allocator, the address space's memory-slot numbers, a
    /// hotplug window's slots) failed for a reason that is not in the request: the heap
    /// refused its bookkeeping ([`memvisor_resources::Error::HeapRefused`]), or it holds as
    /// many ranges as it can count ([`memvisor_resources::Error::TooManyAllocations`]). The
    /// allocator's error is the source. Nothing was taken. Also the heap refusing room in the
    /// address space's list of writable file regions held outside it (a region being removed
    /// or inserted, see [`AddressSpace::remove_region`](crate::AddressSpace::remove_region)),
    /// with `HeapRefused` as the source; nothing changed then. And the heap refusing the dirty
    /// bitmap of a region that tracks writes
    /// ([`RegionSpec::with_dirty_tracking`](crate::RegionSpec::with_dirty_tracking)) when its
    /// memory would be made, with `HeapRefused` as the source; it is asked for first, so no
    /// memory was made then.
    /// And the heap refusing the copy of a region's dirty log
    /// ([`Region::try_take_dirty_log`](crate::Region::try_take_dirty_log)), with `HeapRefused`
    /// as the source; the log is kept then.
    #[error("allocating {what} for {owner} failed")]
    Allocator {
        /// What was being allocated: `"guest addresses"`, `"I/O ports"`, the interrupts' name
        /// (`"GSI"`, `"INTID"`), `"a memory-slot number"`, `"a hotplug slot"`, `"a place in
        /// the list of file regions held outside the space"`, `"the snapshot table"`,
        /// `"the dirty bitmap"` or `"the dirty log"`.
        what: &'static str,
        /// Who it was for (the placer's owner name, or the region).
        owner: String,
        /// The allocator's error.
        #[source]
        source: memvisor_resources::Error,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs the global allocator's failure handler
/// ([`handle_alloc_error`](std::alloc::handle_alloc_error), an abort by default) for `bytes` an
/// allocator's bookkeeping was refused, as an infallible allocation of them would: for the calls
/// that return no error where only the heap can fail.
pub(crate) fn abort_on_heap_refusal(bytes: u64) -> ! {
    std::alloc::handle_alloc_error(
        std::alloc::Layout::array::<u8>(usize::try_from(bytes).unwrap_or(usize::MAX))
            .unwrap_or(std::alloc::Layout::new::<u64>()),
    )
}

/// The most sources [`with_sources`] shows: a listener's error may have a chain without end
/// (one that is its own source), and printing must end.
const SHOWN_SOURCES: usize = 16;

/// `error` and each of its sources (up to [`SHOWN_SOURCES`], then `: ...`), joined by `: `:
/// the text of an error carried in a field that is not its holder's source
/// ([`Error::SlotNotRestored`]'s `cause`, whose source is the restore's error), so that the
/// cause's own source (the kernel's error of the failed call) is not lost from the holder's
/// report.
fn with_sources(error: &Error) -> impl std::fmt::Display + '_ {
    struct WithSources<'a>(&'a Error);
    impl std::fmt::Display for WithSources<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}", self.0)?;
            let mut source = std::error::Error::source(self.0);
            let mut shown = 0;
            while let Some(e) = source {
                if shown == SHOWN_SOURCES {
                    return f.write_str(": ...");
                }
                write!(f, ": {e}")?;
                shown += 1;
                source = e.source();
            }
            Ok(())
        }
    }
    WithSources(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cause whose chain of sources never ends (a listener's error that is its own source)
    /// is shown up to a bound, so printing the error ends.
    #[test]
    fn slot_not_restored_text_ends_for_an_endless_chain() {
        #[derive(Debug)]
        struct OwnSource;
        impl std::fmt::Display for OwnSource {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("own source")
            }
        }
        impl std::error::Error for OwnSource {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(self)
            }
        }
        let err = Error::SlotNotRestored {
            base: 0x1_0000_0000,
            size: 0x20_0000,
            cause: Box::new(Error::Listener {
                base: 0x1_0000_0000,
                source: Box::new(OwnSource),
            }),
            restore: memvisor_vmem::Error::Os {
                operation: memvisor_vmem::Operation::Reserve,
                source: memvisor_vmem::OsError::from_raw(libc::ENOMEM),
            },
        };
        // Written into at most 64 KiB, so that a text without end fails instead of hanging.
        struct Bounded(String);
        impl std::fmt::Write for Bounded {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                if self.0.len() + s.len() > 64 << 10 {
                    return Err(std::fmt::Error);
                }
                self.0.push_str(s);
                Ok(())
            }
        }
        let mut bounded = Bounded(String::new());
        let ended = std::fmt::Write::write_fmt(&mut bounded, format_args!("{err}"));
        assert!(
            ended.is_ok(),
            "the text does not end: {}...",
            &bounded.0[..200]
        );
        let text = bounded.0;
        assert!(
            text.starts_with(
                "plugging the hotplug slot at 0x100000000 of size 0x200000 failed (a listener \
                 refused the change of the region at 0x100000000: own source: own source"
            ),
            "{text}"
        );
        assert!(text.len() < 4096, "{}", text.len());
    }

    #[test]
    fn display_names_offending_values() {
        let e = Error::Misaligned {
            base: 0x1000,
            size: 0x2000,
            page_size: 0x20_0000,
        };
        assert_eq!(
            e.to_string(),
            "region at 0x1000 of size 0x2000 is not aligned to its page size 0x200000"
        );
        let e = Error::Overlap {
            base: 0x1000,
            size: 0x1000,
            other_base: 0,
            other_size: 0x2000,
        };
        assert_eq!(
            e.to_string(),
            "range at 0x1000 of size 0x1000 overlaps the one at 0x0 of size 0x2000"
        );
        let e = Error::OutsideWindow {
            ty: RegionType::Dax,
            base: 0,
            size: 0x1000,
            window: WindowKind::Dax,
        };
        assert_eq!(
            e.to_string(),
            "DAX region at 0x0 of size 0x1000 is not inside a DAX window"
        );
        let e = Error::NumaNodeMissing {
            node: 7,
            online: "0".into(),
        };
        assert_eq!(
            e.to_string(),
            "NUMA node 7 does not exist on this host (nodes online: 0)"
        );
        let e = Error::HugePagesUnavailable {
            base: 0x4000_0000,
            size: HugePageSize::Size1G,
            needed: 2,
            free: 0,
            source: io::Error::from_raw_os_error(libc::ENOMEM),
        };
        assert!(
            e.to_string()
                .starts_with("cannot get 2 1 GiB huge pages for the region at 0x40000000 (0 free)")
        );
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(
            Error::InvalidAlignment { align: 3 }.to_string(),
            "alignment 0x3 is not a power of two"
        );
        let e = Error::Unsupported {
            feature: "memfd backing (memfd_create)",
            base: 0x1000,
            only_on: "Linux",
        };
        assert_eq!(
            e.to_string(),
            format!(
                "memfd backing (memfd_create) for the region at 0x1000 is only on Linux, not on this host ({})",
                std::env::consts::OS
            )
        );
    }

    #[test]
    fn display_of_each_variant_names_its_values() {
        let os_error = || io::Error::from_raw_os_error(libc::EINVAL);
        let range = GuestRange::new(vm_memory::GuestAddress(0x1000), 0x2000).unwrap();
        let cases: Vec<(Error, &str)> = vec![
            (
                Error::ZeroSize { base: 0x3000 },
                "region at 0x3000 has size zero",
            ),
            (
                Error::Overflow {
                    base: u64::MAX,
                    size: 2,
                },
                "range at 0xffffffffffffffff of size 0x2 overflows the 64-bit address space",
            ),
            (
                Error::AddressLimit {
                    base: 0x1000,
                    size: 0x2000,
                    limit: 0x1fff,
                },
                "range at 0x1000 of size 0x2000 reaches past the address limit 0x1fff",
            ),
            (
                Error::InvalidLayout {
                    reason: "no RAM window".into(),
                },
                "invalid layout: no RAM window",
            ),
            (
                Error::InvalidSpec {
                    ty: RegionType::Reserved,
                    base: 0x4000,
                    reason: "a reserved region has no host memory",
                },
                "invalid reserved region at 0x4000: a reserved region has no host memory",
            ),
            (
                Error::NotHugetlbfs {
                    path: "/tmp".into(),
                    magic: 0xef53,
                },
                "/tmp is not on hugetlbfs (file system magic 0xef53)",
            ),
            (
                Error::HugePageSizeMismatch {
                    path: "/dev/hugepages".into(),
                    found: 0x20_0000,
                    wanted: HugePageSize::Size1G,
                },
                "/dev/hugepages has 0x200000-byte huge pages, but 1 GiB pages were asked for",
            ),
            (
                Error::HugePageSizeUnavailable {
                    base: 0x4000_0000,
                    size: HugePageSize::Size1G,
                    pool: "/sys/kernel/mm/hugepages/hugepages-1048576kB".into(),
                },
                "this host has no 1 GiB huge page pool \
                 (/sys/kernel/mm/hugepages/hugepages-1048576kB is missing) for the region at \
                 0x40000000; allow a fallback or use another huge page size",
            ),
            (
                Error::TransparentHugePagesUnavailable {
                    base: 0,
                    backing: "memfd",
                    path: "/sys/kernel/mm/transparent_hugepage/shmem_enabled",
                    setting: "never".into(),
                },
                "transparent huge pages for the memfd region at 0x0 are off on this host \
                 (/sys/kernel/mm/transparent_hugepage/shmem_enabled is never); allow a fallback \
                 or change the setting",
            ),
            (
                Error::Os {
                    op: "mbind",
                    base: 0x8000,
                    source: os_error(),
                },
                "mbind failed for the region at 0x8000",
            ),
            (
                Error::File {
                    path: "/srv/ram".into(),
                    base: 0x1000,
                    source: os_error(),
                },
                "backing file /srv/ram for the region at 0x1000",
            ),
            (
                Error::RegionNotFound {
                    base: 0x5000,
                    size: 0x1000,
                },
                "no region at 0x5000 of size 0x1000",
            ),
            (
                Error::SlotBusy {
                    base: 0x1_0000_0000,
                    size: 0x20_0000,
                },
                "hotplug slot at 0x100000000 of size 0x200000 is still claimed: an older \
                 snapshot holds its memory, or it could not be restored to reserved space",
            ),
            (
                Error::NoHotplugWindow {
                    base: 0x1_0000_0000,
                },
                "the address space has no backed hotplug window for the region at 0x100000000",
            ),
            (
                Error::NoSpace {
                    window: WindowKind::Ram,
                    size: 0x4000_0000,
                    align: 0x1000,
                },
                "no free range of 0x40000000 bytes aligned to 0x1000 in the RAM windows",
            ),
            (
                Error::NotInWindow {
                    owner: "net0".into(),
                    range,
                    window: WindowKind::Device,
                    largest_free: 0,
                },
                "net0's range [0x1000, 0x2fff] is not inside a device window",
            ),
            (
                Error::IrqOutOfRange {
                    irq: 99,
                    name: "GSI",
                    first: 0,
                    last: 23,
                },
                "GSI 99 is outside 0..=23",
            ),
            (
                Error::NoFreeIrq {
                    owner: "blk0".into(),
                    name: "INTID",
                    first: 32,
                    last: 33,
                },
                "no free INTID is left for blk0 (32..=33 are all taken)",
            ),
            (
                Error::IrqNotTaken {
                    irq: 7,
                    name: "GSI",
                },
                "GSI 7 is not taken",
            ),
            (
                Error::NoIrqs,
                "no interrupt numbers: the layout has no platform preset",
            ),
            (Error::NoIoPorts, "the platform has no I/O ports"),
            (
                Error::PortsOutOfRange {
                    ports: range,
                    space: GuestRange::new(vm_memory::GuestAddress(0), 0x1000).unwrap(),
                },
                "I/O ports [0x1000, 0x2fff] pass the platform's port space [0x0, 0xfff]",
            ),
            (
                Error::OwnerNameReserved {
                    owner: "reserved".into(),
                },
                "the owner name \"reserved\" is kept for the holds on reserved windows' free \
                 ranges",
            ),
            (
                Error::NoMmioSerial { address: 0x3f8 },
                "the platform's serial port is on I/O ports and has no MMIO address (0x3f8 given)",
            ),
            (
                Error::NoGuestNode { node: 2, nodes: 1 },
                "guest NUMA node 2 does not exist (1 nodes)",
            ),
            (
                Error::NotMultiple {
                    owner: "pmem0".into(),
                    what: "DAX size",
                    value: 0x1000,
                    of: 0x20_0000,
                },
                "pmem0's DAX size 0x1000 is not a multiple of 0x200000",
            ),
            (
                Error::InvalidName {
                    name: "serial".into(),
                    reason: "is taken".into(),
                },
                "device name \"serial\" is taken",
            ),
            (
                Error::InvalidRange {
                    first: 0x2000,
                    last: 0x1000,
                },
                "range 0x2000..=0x1000 is reversed",
            ),
            (
                Error::FileAliased {
                    base: 0x20_0000,
                    other_base: 0,
                },
                "region at 0x200000 would map bytes of a file that the region at 0x0 maps too, \
                 and one of them is writable",
            ),
            (
                Error::ListenerReentry {
                    op: "AddressSpace::plug",
                },
                "AddressSpace::plug was called by a listener of the same address space during a \
                 change",
            ),
            (
                Error::WindowMisaligned {
                    kind: WindowKind::Hotplug,
                    start: 0x1_0000_0800,
                    size: 0x1000,
                    page_size: 0x1000,
                },
                "hotplug window at 0x100000800 of size 0x1000 is not aligned to the host page \
                 size 0x1000",
            ),
            (
                Error::DiscardRefused {
                    base: 0,
                    reason: "the region is read-only",
                },
                "cannot discard pages of the region at 0x0: the region is read-only",
            ),
            (
                Error::DiscardOutOfRange {
                    base: 0x1000,
                    offset: 0x2000,
                    len: 0x1000,
                    size: 0x2000,
                },
                "cannot discard 0x1000 bytes at offset 0x2000 of the region at 0x1000 of size \
                 0x2000",
            ),
            (
                Error::DirtyLogUnavailable { base: 0x1000 },
                "the region at 0x1000 does not track dirty pages",
            ),
            (
                Error::DirtyLogSize {
                    base: 0,
                    pages: 64,
                    words: 2,
                },
                "a dirty log of 2 words does not fit the region at 0x0 of 64 pages",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text, "{e:?}");
        }
        let e = Error::Reservation {
            window: GuestRange::new(vm_memory::GuestAddress(1 << 32), 1 << 30).unwrap(),
            source: memvisor_vmem::Error::Os {
                operation: memvisor_vmem::Operation::Reserve,
                source: memvisor_vmem::OsError::from_raw(libc::ENOMEM),
            },
        };
        assert_eq!(
            e.to_string(),
            "reserving host address space for the hotplug window [0x100000000, 0x13fffffff]"
        );
        assert!(std::error::Error::source(&e).is_some());
        let e = Error::Allocator {
            what: "guest addresses",
            owner: "net0".to_owned(),
            source: memvisor_resources::Error::HeapRefused { bytes: 384 },
        };
        assert_eq!(e.to_string(), "allocating guest addresses for net0 failed");
        assert_eq!(
            std::error::Error::source(&e).map(ToString::to_string),
            Some("the heap refused 384 bytes".to_owned())
        );
    }
}
