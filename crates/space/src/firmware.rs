//! Firmware-facing memory maps of a [`Snapshot`]: the e820 table, the PVH memory map, and
//! per-node ranges for an ACPI SRAT.
//!
//! The maps describe boot RAM: RAM regions that are not hot-pluggable (hot-plugged memory is
//! announced to the guest through ACPI, not through the boot map). On x86-64 the PC legacy hole
//! (the EBDA, VGA and BIOS area, [`LEGACY_HOLE`]) is carved out of RAM and marked reserved, as
//! firmware reports it; the guest then never uses it as RAM. Adjacent entries of one type are
//! merged, so the map is what a guest kernel prints after sorting and merging its own.

use std::fmt;
use std::ops::RangeInclusive;

use crate::error::{Error, Result};
use crate::layout::Arch;
use crate::region::Region;
use crate::snapshot::Snapshot;
use crate::spec::RegionType;

/// The number of entries of `boot_params.e820_table`, the e820 table of Linux's x86 boot
/// protocol (`E820_MAX_ENTRIES_ZEROPAGE`): the most [`Snapshot::e820_table`] returns.
pub const E820_MAX_ENTRIES: usize = 128;

/// The x86 PC legacy hole: the extended BIOS data area, VGA memory and the BIOS ROM area,
/// reserved in the memory map of an x86-64 guest.
pub const LEGACY_HOLE: RangeInclusive<u64> = 0x9_fc00..=0xf_ffff;

/// What a memory map entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemoryType {
    /// Usable RAM (e820 and PVH type 1).
    Ram,
    /// Reserved: not RAM for the guest (e820 and PVH type 2).
    Reserved,
}

impl MemoryType {
    /// The e820 (and PVH `hvm_memmap_table_entry`) type number.
    #[must_use]
    pub const fn e820_type(self) -> u32 {
        match self {
            MemoryType::Ram => 1,
            MemoryType::Reserved => 2,
        }
    }
}

/// One entry of a guest memory map: `size` bytes (never 0) at `addr` (`addr + size - 1` does
/// not overflow).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemoryMapEntry {
    /// First guest physical address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// What it holds.
    pub ty: MemoryType,
}

impl MemoryMapEntry {
    /// The last address. For an entry made by hand that breaks the rule above, it saturates:
    /// `addr` for a size of 0, `u64::MAX` past the end of the address space.
    #[must_use]
    pub const fn last(&self) -> u64 {
        // Entries built from valid regions never saturate here.
        self.addr.saturating_add(self.size.saturating_sub(1))
    }

    /// The entry as Linux's `struct boot_e820_entry` (in `boot_params.e820_table`): address,
    /// size and type, little-endian, packed (20 bytes).
    #[must_use]
    pub fn to_e820_bytes(&self) -> [u8; 20] {
        let mut out = [0; 20];
        out[..8].copy_from_slice(&self.addr.to_le_bytes());
        out[8..16].copy_from_slice(&self.size.to_le_bytes());
        out[16..].copy_from_slice(&self.ty.e820_type().to_le_bytes());
        out
    }

    /// The entry as the PVH boot protocol's `struct hvm_memmap_table_entry`: address, size,
    /// type and a zero reserved word, little-endian (24 bytes). A PVH map made of these takes
    /// its entries from an e820 table, whose limit Linux's PVH entry needs too, not from a
    /// memory map, which has none: [`Snapshot::pvh_memmap`] and
    /// [`Plan::pvh_memmap`](crate::plan::Plan::pvh_memmap) do so.
    #[must_use]
    pub fn to_pvh_bytes(&self) -> [u8; 24] {
        let mut out = [0; 24];
        out[..20].copy_from_slice(&self.to_e820_bytes());
        out
    }
}

/// As a Linux kernel prints its `BIOS-e820` lines (after the `BIOS-e820: ` prefix):
/// `[mem 0x0000000000000000-0x000000000009fbff] usable`.
impl fmt::Display for MemoryMapEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.ty {
            MemoryType::Ram => "usable",
            MemoryType::Reserved => "reserved",
        };
        write!(f, "[mem {:#018x}-{:#018x}] {kind}", self.addr, self.last())
    }
}

/// The most NUMA nodes a Linux guest built from the x86-64 defconfig maps (`MAX_NUMNODES`,
/// `1 << CONFIG_NODES_SHIFT` with the shift's x86-64 default of 6); it keeps at most twice as
/// many memory ranges (`NR_NODE_MEMBLKS`). Past either, Linux rejects the whole SRAT
/// ("SRAT: Too many proximity domains", "too many memblk ranges") and boots without NUMA.
/// Kernels built with `MAXSMP`, as most distributions' x86-64 kernels are, map 1,024
/// (`NODES_SHIFT` 10); the AArch64 default is 16 (`NODES_SHIFT` 4). The limit to check a plan
/// against ([`Plan::numa_ranges_for_guest`](crate::plan::Plan::numa_ranges_for_guest)) is the
/// guest kernel's, which only the VMM knows.
pub const LINUX_MAX_NUMNODES: u32 = 64;

/// The most NUMA nodes any Linux build maps: `MAX_NUMNODES` is `1 << CONFIG_NODES_SHIFT`, and
/// the shift is at most 10 on every architecture (each architecture's Kconfig bounds it:
/// `range 1 10` on x86-64 and AArch64, where 10 is the x86-64 `MAXSMP` default, as on
/// powerpc). A guest node numbered this or more is in no Linux guest's SRAT, and a limit that
/// is not a power of two up to it is no Linux guest kernel's
/// ([`Plan::numa_ranges_for_guest`](crate::plan::Plan::numa_ranges_for_guest) refuses it); a
/// host node numbered this or more is on no Linux host
/// ([`RegionSpec::validate`](crate::RegionSpec::validate) refuses a binding to it, as
/// `mbind` would). The same number as vmem's [`NUMA_NODES`](memvisor_vmem::NUMA_NODES), the
/// bound host bindings are checked against.
pub const LINUX_MOST_NUMNODES: u32 = memvisor_vmem::NUMA_NODES;

/// Guest memory of one guest NUMA node, for an ACPI SRAT memory affinity structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NumaRange {
    /// The node (the first node of the regions' NUMA binding; 0 for regions without one).
    pub node: u32,
    /// First guest physical address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// Whether the range is hot-pluggable memory (the SRAT's hot-pluggable flag).
    pub hotplug: bool,
}

impl Snapshot {
    /// The guest memory map: boot RAM, with the [`LEGACY_HOLE`] carved out and reserved on
    /// x86-64, sorted, adjacent entries of one type merged (unless together they are the whole
    /// 64-bit space, whose size a `u64` cannot hold). The source of
    /// [`e820_table`](Self::e820_table) and [`pvh_memmap`](Self::pvh_memmap). A snapshot
    /// cannot tell which of its reserved regions is PCI MMCONFIG, which Linux needs reserved
    /// in e820 (or ACPI) to use it: a planned VM takes its map from
    /// [`Plan::memory_map`](crate::plan::Plan::memory_map), which lists it.
    ///
    /// It lists boot RAM by type, whether a region has host memory or not: a planned region
    /// ([`Region::plan`](crate::Region::plan)) inserted into a backed space is listed, though
    /// vm-memory's view of the snapshot leaves it out and a memory-slot listener (memvisor-kvm)
    /// gives it no slot, as is a region whose memory the guest cannot read
    /// ([`Protection::None`](crate::Protection::None)). A VMM that inserts such a region maps
    /// the guest's memory there itself (for example private memory that KVM takes from a
    /// `guest_memfd`, which the VMM never maps) before the guest boots, or the guest is told
    /// of RAM that is not there.
    ///
    /// ```
    /// use memvisor_space::{AddressSpace, Layout, MemoryMapEntry, MemoryType, RegionSpec};
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// let layout = Layout::x86_64().ram(512 << 20).build()?;
    /// let space = AddressSpace::plan(layout, [RegionSpec::ram(GuestAddress(0), 512 << 20)])?;
    /// let map = space.snapshot().memory_map();
    /// let lines: Vec<String> = map.iter().map(MemoryMapEntry::to_string).collect();
    /// assert_eq!(
    ///     lines,
    ///     [
    ///         "[mem 0x0000000000000000-0x000000000009fbff] usable",
    ///         "[mem 0x000000000009fc00-0x00000000000fffff] reserved",
    ///         "[mem 0x0000000000100000-0x000000001fffffff] usable",
    ///     ]
    /// );
    /// assert_eq!(map[1].ty, MemoryType::Reserved);
    /// # Ok::<(), memvisor_space::Error>(())
    /// ```
    #[must_use]
    pub fn memory_map(&self) -> Vec<MemoryMapEntry> {
        let carve = self.layout().arch() == Some(Arch::X86_64);
        let mut out: Vec<MemoryMapEntry> = Vec::new();
        for r in self.regions().filter(|r| is_boot_ram(r)) {
            push_ram(&mut out, r.base().0, r.last().0, carve);
        }
        out
    }

    /// The e820 table: [`memory_map`](Self::memory_map). Write each entry with
    /// [`MemoryMapEntry::to_e820_bytes`] into `boot_params.e820_table`, which holds
    /// [`E820_MAX_ENTRIES`] entries (with `boot_params.e820_entries` = the entry count). The
    /// map has one entry per boot RAM range (adjacent ones merged), the part of it inside the
    /// legacy hole cut out into an entry of its own. e820 is x86's: on AArch64, which has none,
    /// this is the same list of boot RAM, with no hole carved out.
    ///
    /// Linux ignores an e820 table of fewer than 2 entries and takes its memory from other
    /// `boot_params` fields (`alt_mem_k`, `screen_info.ext_mem_k`) instead. On x86-64 the table
    /// is that short exactly when there is no boot RAM, or when boot RAM is one range (adjacent
    /// regions merged) wholly below, inside or above the legacy hole. Such a table is returned
    /// as it is, neither refused nor padded, since it is the memory as it is: a VMM that boots
    /// Linux directly with it adds a reserved entry where there is no RAM, as Linux's PVH entry
    /// adds the ISA range (see [`pvh_memmap`](Self::pvh_memmap)). A plan's table on x86-64
    /// ([`Plan::e820_table`](crate::plan::Plan::e820_table)) lists KVM's pages too, and is never
    /// that short when it has boot RAM.
    ///
    /// ```
    /// use memvisor_space::{AddressSpace, E820_MAX_ENTRIES, Error, Layout, RegionSpec};
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// let layout = Layout::x86_64().ram(1 << 30).build()?;
    /// // 129 separate pages of RAM: one range more than the table holds.
    /// let ram = (0..129).map(|i| RegionSpec::ram(GuestAddress((16 << 20) + i * 0x2000), 0x1000));
    /// let space = AddressSpace::plan(layout, ram)?;
    /// let err = space.snapshot().e820_table().unwrap_err();
    /// assert!(matches!(err, Error::TooManyMapEntries { entries: 129, max: E820_MAX_ENTRIES }));
    /// # Ok::<(), memvisor_space::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::TooManyMapEntries`] if the map has more than [`E820_MAX_ENTRIES`] entries: a
    /// shorter table would hide RAM from the guest. ([`pvh_memmap`](Self::pvh_memmap) has the
    /// same limit.)
    pub fn e820_table(&self) -> Result<Vec<MemoryMapEntry>> {
        e820_of(self.memory_map())
    }

    /// The PVH memory map as bytes: one 24-byte `hvm_memmap_table_entry` per entry of
    /// [`e820_table`](Self::e820_table), ready to write into guest memory and point
    /// `hvm_start_info.memmap_paddr` at (with `memmap_entries` = the entry count).
    ///
    /// The PVH boot protocol sets no limit on the count, but Linux's PVH entry point copies
    /// every entry into `boot_params.e820_table`, which holds [`E820_MAX_ENTRIES`] entries,
    /// without checking the count: a longer map would overwrite what follows that table in
    /// the guest kernel (its count taken modulo 256, as `boot_params.e820_entries` is a byte,
    /// so some longer maps are cut short instead). So the map has the e820 table's limit, and
    /// a longer one is refused.
    ///
    /// Linux's PVH entry then appends a reserved entry for the ISA range (0xa_0000 to
    /// 0xf_ffff) to a map of fewer than 127 entries, so a map of one entry is not ignored as a
    /// one-entry e820 table is. An empty map (no boot RAM), which this returns as it is, stops
    /// it (`BUG`) unless it runs on Xen, which it then asks for the map.
    ///
    /// ```
    /// use memvisor_space::{AddressSpace, Layout, RegionSpec};
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// let layout = Layout::x86_64().ram(64 << 20).build()?;
    /// let space = AddressSpace::plan(layout, [RegionSpec::ram(GuestAddress(0), 64 << 20)])?;
    /// let memmap = space.snapshot().pvh_memmap()?;
    /// assert_eq!(memmap.len(), 3 * 24);
    /// assert_eq!(&memmap[24..32], &0x9_fc00u64.to_le_bytes());
    /// # Ok::<(), memvisor_space::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::TooManyMapEntries`] if the map has more than [`E820_MAX_ENTRIES`] entries.
    pub fn pvh_memmap(&self) -> Result<Vec<u8>> {
        Ok(pvh_of(&self.e820_table()?))
    }

    /// Guest memory by the host NUMA node it is bound to: every RAM region (hot-pluggable
    /// ones flagged), under the first node of its NUMA binding (node 0 without one), sorted,
    /// adjacent ranges of one node and flag merged (unless together they are the whole 64-bit
    /// space).
    ///
    /// A region knows its host binding, not the guest node it belongs to, so these are an
    /// ACPI SRAT's proximity domains only for a VMM that numbers its guest nodes as the host
    /// nodes they are bound to, each guest node bound: two guest nodes without a binding or on
    /// one host node come out as one node here. A VMM that planned its memory takes the SRAT
    /// from the plan's guest nodes ([`Plan::numa_ranges`](crate::plan::Plan::numa_ranges)).
    ///
    /// ```
    /// use memvisor_space::{AddressSpace, Layout, NumaBinding, NumaRange, RegionSpec};
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// let layout = Layout::x86_64().ram(1 << 30).build()?;
    /// let space = AddressSpace::plan(
    ///     layout,
    ///     [
    ///         RegionSpec::ram(GuestAddress(0), 256 << 20).with_numa(NumaBinding::bind(0)),
    ///         RegionSpec::ram(GuestAddress(256 << 20), 256 << 20).with_numa(NumaBinding::bind(1)),
    ///     ],
    /// )?;
    /// let nodes = space.snapshot().numa_ranges();
    /// assert_eq!(nodes[1], NumaRange { node: 1, addr: 256 << 20, size: 256 << 20, hotplug: false });
    /// # Ok::<(), memvisor_space::Error>(())
    /// ```
    #[must_use]
    pub fn numa_ranges(&self) -> Vec<NumaRange> {
        let mut out: Vec<NumaRange> = Vec::new();
        for r in self.regions().filter(|r| r.ty() == RegionType::Ram) {
            let node = r.numa().and_then(|n| n.first_node()).unwrap_or(0);
            push_numa(&mut out, node, r.base().0, r.size(), r.hotplug());
        }
        out
    }
}

/// Appends a RAM range of `node`, merged with the previous one if adjacent and alike. Called
/// in address order.
pub(crate) fn push_numa(out: &mut Vec<NumaRange>, node: u32, addr: u64, size: u64, hotplug: bool) {
    if let Some(prev) = out.last_mut()
        && prev.node == node
        && prev.hotplug == hotplug
        && prev.addr.checked_add(prev.size) == Some(addr)
        // Two ranges covering the whole 64-bit space stay apart: a `u64` size cannot say 2^64.
        && let Some(merged) = prev.size.checked_add(size)
    {
        prev.size = merged;
        return;
    }
    out.push(NumaRange {
        node,
        addr,
        size,
        hotplug,
    });
}

/// Appends boot RAM `first..=last` (in address order), with the [`LEGACY_HOLE`] carved out
/// and reserved if `carve` (x86-64).
pub(crate) fn push_ram(out: &mut Vec<MemoryMapEntry>, first: u64, last: u64, carve: bool) {
    if !carve || last < *LEGACY_HOLE.start() || first > *LEGACY_HOLE.end() {
        push_merged(out, first, last, MemoryType::Ram);
        return;
    }
    if first < *LEGACY_HOLE.start() {
        push_merged(out, first, LEGACY_HOLE.start() - 1, MemoryType::Ram);
    }
    let hole_first = first.max(*LEGACY_HOLE.start());
    let hole_last = last.min(*LEGACY_HOLE.end());
    push_merged(out, hole_first, hole_last, MemoryType::Reserved);
    if last > *LEGACY_HOLE.end() {
        push_merged(out, LEGACY_HOLE.end() + 1, last, MemoryType::Ram);
    }
}

/// The e820 table of `map`: [`Error::TooManyMapEntries`] past [`E820_MAX_ENTRIES`].
pub(crate) fn e820_of(map: Vec<MemoryMapEntry>) -> Result<Vec<MemoryMapEntry>> {
    if map.len() > E820_MAX_ENTRIES {
        return Err(Error::TooManyMapEntries {
            entries: map.len(),
            max: E820_MAX_ENTRIES,
        });
    }
    Ok(map)
}

/// The PVH memory map of an e820 `table`: each entry as a 24-byte `hvm_memmap_table_entry`.
pub(crate) fn pvh_of(table: &[MemoryMapEntry]) -> Vec<u8> {
    table
        .iter()
        .flat_map(MemoryMapEntry::to_pvh_bytes)
        .collect()
}

fn is_boot_ram(r: &Region) -> bool {
    r.ty() == RegionType::Ram && !r.hotplug()
}

/// Appends `first..=last` of type `ty`, merged with the previous entry if adjacent and alike.
/// Called in address order.
pub(crate) fn push_merged(out: &mut Vec<MemoryMapEntry>, first: u64, last: u64, ty: MemoryType) {
    // `first <= last`, both inside one valid region, whose size is a `u64`: no overflow.
    let size = last - first + 1;
    if let Some(prev) = out.last_mut()
        && prev.ty == ty
        && prev.last().checked_add(1) == Some(first)
        // Entries covering the whole 64-bit space stay apart: a `u64` size cannot say 2^64.
        && let Some(merged) = prev.size.checked_add(size)
    {
        prev.size = merged;
        return;
    }
    out.push(MemoryMapEntry {
        addr: first,
        size,
        ty,
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vm_memory::GuestAddress;

    use super::*;
    use crate::layout::Layout;
    use crate::space::AddressSpace;
    use crate::spec::{NumaBinding, RegionSpec};

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn map(layout: Layout, specs: Vec<RegionSpec>) -> Vec<(u64, u64, MemoryType)> {
        let space = AddressSpace::plan(layout, specs).unwrap();
        space
            .snapshot()
            .memory_map()
            .iter()
            .map(|e| (e.addr, e.last(), e.ty))
            .collect()
    }

    fn x86(ram: u64) -> Layout {
        Layout::x86_64().ram(ram).hotplug(GIB).build().unwrap()
    }

    use MemoryType::{Ram, Reserved};

    #[test]
    fn memory_map_low_ram_carves_legacy_hole() {
        let got = map(
            x86(512 * MIB),
            vec![RegionSpec::ram(GuestAddress(0), 512 * MIB)],
        );
        assert_eq!(
            got,
            [
                (0, 0x9_fbff, Ram),
                (0x9_fc00, 0xf_ffff, Reserved),
                (0x10_0000, 512 * MIB - 1, Ram)
            ]
        );
    }

    #[test]
    fn memory_map_split_ram_keeps_high_region() {
        let got = map(
            x86(4 * GIB),
            vec![
                RegionSpec::ram(GuestAddress(0), 3 * GIB),
                RegionSpec::ram(GuestAddress(4 * GIB), GIB),
            ],
        );
        assert_eq!(
            got,
            [
                (0, 0x9_fbff, Ram),
                (0x9_fc00, 0xf_ffff, Reserved),
                (0x10_0000, 3 * GIB - 1, Ram),
                (4 * GIB, 5 * GIB - 1, Ram)
            ]
        );
    }

    #[test]
    fn memory_map_merges_adjacent_and_skips_hotplug_and_devices() {
        let got = map(
            x86(GIB),
            vec![
                RegionSpec::ram(GuestAddress(2 * MIB), 2 * MIB),
                RegionSpec::ram(GuestAddress(4 * MIB), 4 * MIB),
                RegionSpec::ram(GuestAddress(16 * MIB), 2 * MIB),
                RegionSpec::new(RegionType::Device, GuestAddress(0xd000_0000), MIB),
                RegionSpec::ram(GuestAddress(4 * GIB), 2 * MIB).with_hotplug(true),
            ],
        );
        assert_eq!(
            got,
            [(2 * MIB, 8 * MIB - 1, Ram), (16 * MIB, 18 * MIB - 1, Ram)]
        );
    }

    #[test]
    fn memory_map_ram_ending_inside_hole_reserves_only_overlap() {
        let got = map(x86(GIB), vec![RegionSpec::ram(GuestAddress(0), 0xa_0000)]);
        assert_eq!(got, [(0, 0x9_fbff, Ram), (0x9_fc00, 0x9_ffff, Reserved)]);
    }

    #[test]
    fn memory_map_ram_inside_hole_is_all_reserved() {
        let got = map(
            x86(GIB),
            vec![RegionSpec::ram(GuestAddress(0xc_0000), 0x1_0000)],
        );
        assert_eq!(got, [(0xc_0000, 0xc_ffff, Reserved)]);
    }

    #[test]
    fn memory_map_aarch64_has_no_hole() {
        let layout = Layout::aarch64().ram(GIB).build().unwrap();
        let got = map(layout, vec![RegionSpec::ram(GuestAddress(GIB), 64 * MIB)]);
        assert_eq!(got, [(GIB, GIB + 64 * MIB - 1, Ram)]);
    }

    #[test]
    fn memory_map_empty_snapshot_is_empty() {
        assert!(map(x86(GIB), vec![]).is_empty());
    }

    #[test]
    fn to_e820_bytes_packs_addr_size_type() {
        let e = MemoryMapEntry {
            addr: 0x0102_0304_0506_0708,
            size: 0x1000,
            ty: Reserved,
        };
        let b = e.to_e820_bytes();
        assert_eq!(&b[..8], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&b[8..16], &0x1000u64.to_le_bytes());
        assert_eq!(&b[16..], &2u32.to_le_bytes());
        let p = e.to_pvh_bytes();
        assert_eq!(&p[..20], &b);
        assert_eq!(&p[20..], &[0; 4]);
    }

    #[test]
    fn pvh_memmap_is_entries_in_order() {
        let space =
            AddressSpace::plan(x86(GIB), [RegionSpec::ram(GuestAddress(0), 64 * MIB)]).unwrap();
        let snapshot = space.snapshot();
        let bytes = snapshot.pvh_memmap().unwrap();
        let want: Vec<u8> = snapshot
            .e820_table()
            .unwrap()
            .iter()
            .flat_map(MemoryMapEntry::to_pvh_bytes)
            .collect();
        assert_eq!(bytes, want);
        assert_eq!(bytes.len(), 3 * 24);
        assert_eq!(bytes[16..20], 1u32.to_le_bytes());
        assert_eq!(bytes[40..44], 2u32.to_le_bytes());
    }

    /// A snapshot of `n` boot RAM regions of one page each, one page apart, from 16 MiB: `n`
    /// usable entries plus none for the hole (which they do not touch).
    fn scattered_ram(n: u64) -> Arc<Snapshot> {
        let specs = (0..n).map(|i| RegionSpec::ram(GuestAddress(16 * MIB + i * 0x2000), 0x1000));
        AddressSpace::plan(x86(GIB), specs).unwrap().snapshot()
    }

    #[test]
    #[cfg_attr(miri, ignore)] // Safe code only: 129 regions are slow under Miri.
    fn e820_table_at_limit_holds_every_entry() {
        let snapshot = scattered_ram(E820_MAX_ENTRIES as u64);
        let table = snapshot.e820_table().unwrap();
        assert_eq!(table, snapshot.memory_map());
        assert_eq!(table.len(), E820_MAX_ENTRIES);
    }

    #[test]
    #[cfg_attr(miri, ignore)] // Safe code only: 129 regions are slow under Miri.
    fn e820_table_past_limit_errors_with_entry_count() {
        let snapshot = scattered_ram(E820_MAX_ENTRIES as u64 + 1);
        let err = snapshot.e820_table().unwrap_err();
        assert!(
            matches!(
                err,
                crate::Error::TooManyMapEntries {
                    entries: 129,
                    max: 128
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "the boot memory map has 129 entries, more than the 128 the e820 table holds"
        );
        // The map itself keeps every range: nothing is dropped to make it fit.
        assert_eq!(snapshot.memory_map().len(), 129);
    }

    #[test]
    fn last_and_display_of_hand_made_entry_past_u64_max_saturate() {
        let e = MemoryMapEntry {
            addr: u64::MAX - 1,
            size: 3,
            ty: Ram,
        };
        assert_eq!(e.last(), u64::MAX);
        assert_eq!(
            e.to_string(),
            "[mem 0xfffffffffffffffe-0xffffffffffffffff] usable"
        );
        let empty = MemoryMapEntry {
            addr: 0x1000,
            size: 0,
            ty: Reserved,
        };
        assert_eq!(empty.last(), 0x1000);
    }

    #[test]
    fn display_matches_kernel_e820_line() {
        let e = MemoryMapEntry {
            addr: 0x10_0000,
            size: 0x1ff0_0000,
            ty: Ram,
        };
        assert_eq!(
            e.to_string(),
            "[mem 0x0000000000100000-0x000000001fffffff] usable"
        );
    }

    #[test]
    fn numa_ranges_group_by_node_and_hotplug() {
        let space = AddressSpace::plan(
            x86(GIB),
            [
                RegionSpec::ram(GuestAddress(0), 64 * MIB),
                RegionSpec::ram(GuestAddress(64 * MIB), 64 * MIB).with_numa(NumaBinding::bind(0)),
                RegionSpec::ram(GuestAddress(128 * MIB), 64 * MIB).with_numa(NumaBinding::bind(1)),
                RegionSpec::ram(GuestAddress(256 * MIB), 64 * MIB).with_numa(NumaBinding::bind(1)),
                RegionSpec::ram(GuestAddress(4 * GIB), 2 * MIB)
                    .with_numa(NumaBinding::bind(1))
                    .with_hotplug(true),
            ],
        )
        .unwrap();
        let got = space.snapshot().numa_ranges();
        let r = |node, addr, size, hotplug| NumaRange {
            node,
            addr,
            size,
            hotplug,
        };
        assert_eq!(
            got,
            [
                r(0, 0, 128 * MIB, false),
                r(1, 128 * MIB, 64 * MIB, false),
                r(1, 256 * MIB, 64 * MIB, false),
                r(1, 4 * GIB, 2 * MIB, true),
            ]
        );
    }
}
