//! Cloud Hypervisor's memory options as a memvisor spec: its `--memory` option string, or the
//! part of its command line that lays out guest memory (`--memory`, `--memory-zone`,
//! `--numa`). Every option string is read as Cloud Hypervisor's option parser reads it, and
//! what Cloud Hypervisor refuses is refused; what a spec cannot express is refused by name.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use toml::{Table, Value};

use crate::error::{Error, Result};
use crate::render::escape;
use crate::size::{Size, SizeError};
use crate::spec::{Arch, MAX_GUEST_NODES, MAX_HOST_NODES, MAX_SPEC_BYTES};

mod json;
pub use json::cloud_hypervisor_json_spec;
use json::{JSON_ORIGIN, is_json};

/// Cloud Hypervisor's boot RAM when `size` is not given (`DEFAULT_MEMORY_MB`, 512 MiB), for
/// `--memory` and for a memory zone alike.
const CH_DEFAULT_MEMORY: u64 = 512 << 20;

/// Where the planning host's default huge page size is read: its `Hugepagesize` line.
pub const HOST_MEMINFO: &str = "/proc/meminfo";

/// Where the planning host's mounts are read, to find the page size of [`HOST_HUGETLBFS`].
pub const HOST_MOUNTS: &str = "/proc/mounts";

/// The folder whose file system's block size (`statfs`'s `f_bsize`, the page size of a
/// hugetlbfs mount) Cloud Hypervisor aligns memory of `hugepages=on` without `hugepage_size`
/// to.
pub const HOST_HUGETLBFS: &str = "/dev/hugepages";

/// The most of a meminfo file read (the kernel's is some 1.5 KiB).
const MEMINFO_MAX: u64 = crate::input::MAX_HOST_FILE_BYTES;

/// The most of a mounts file read: some 100,000 mounts; a longer one is refused rather than
/// judged by its start.
const MOUNTS_MAX: u64 = crate::input::MAX_HOST_LIST_BYTES;

/// The huge page size Cloud Hypervisor takes for `hugepages=on` without `hugepage_size`: the
/// default huge page size of the host it runs on (its memfd is made with `MFD_HUGETLB` and
/// no size), and the size it aligns that memory to: the block size of the file system at
/// `/dev/hugepages` (`statfs`), the page size of a hugetlbfs mount there, the base page for
/// any other file system; with nothing at `/dev/hugepages` it refuses to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultHugePage<'a> {
    /// The planning host's, read from these files only when a setting needs it. The
    /// converted spec then starts with a `# note: ` comment that says so.
    Host {
        /// `Hugepagesize` of this meminfo file ([`HOST_MEMINFO`]) is the default huge page
        /// size.
        meminfo: &'a Path,
        /// The mount in use at `hugetlbfs`, in this mounts file ([`HOST_MOUNTS`]), gives the
        /// alignment: its `pagesize=` for a hugetlbfs mount.
        mounts: &'a Path,
        /// Cloud Hypervisor's `/dev/hugepages` ([`HOST_HUGETLBFS`]), resolved on this host.
        hugetlbfs: &'a str,
    },
    /// This size in bytes, whatever the host (planning for another host, or a plan that does
    /// not depend on the host): the default huge page size and, as on a host whose
    /// `/dev/hugepages` is a hugetlbfs mount of that default size, the alignment.
    Pinned(u64),
}

impl DefaultHugePage<'static> {
    /// The planning host's: [`HOST_MEMINFO`], [`HOST_MOUNTS`] and [`HOST_HUGETLBFS`].
    #[must_use]
    pub fn host() -> Self {
        DefaultHugePage::Host {
            meminfo: Path::new(HOST_MEMINFO),
            mounts: Path::new(HOST_MOUNTS),
            hugetlbfs: HOST_HUGETLBFS,
        }
    }
}

/// The default huge page size once it is needed, the alignment, and the note of where they
/// came from.
struct HugeDefault<'a> {
    how: DefaultHugePage<'a>,
    found: Option<u64>,
    align: Option<u64>,
    /// Where the default came from, when it is the host's.
    note: Option<String>,
    /// The alignment and the mount that asks it, when it is more than the default.
    note_align: Option<String>,
}

impl<'a> HugeDefault<'a> {
    fn new(how: DefaultHugePage<'a>) -> Self {
        Self {
            how,
            found: None,
            align: None,
            note: None,
            note_align: None,
        }
    }

    /// The note the converted spec starts with, when the host's files were read.
    fn note(&self) -> Option<String> {
        self.note.as_ref().map(|note| {
            format!(
                "{note}{}; give hugepage_size, or plan with --host-hugepage-size, for another \
                 host",
                self.note_align.as_deref().unwrap_or_default()
            )
        })
    }

    /// The default huge page size, read once; a mistake is shown at `place`'s `hugepages`.
    fn size(&mut self, place: &Place<'_>) -> Result<u64> {
        if let Some(size) = self.found {
            return Ok(size);
        }
        let size = match self.how {
            DefaultHugePage::Pinned(size) => size,
            DefaultHugePage::Host { meminfo, .. } => {
                let size = meminfo_huge_page(meminfo).map_err(|why| {
                    place.err(format_args!(
                        "hugepages: on without hugepage_size is the host's default huge page \
                         size (as Cloud Hypervisor takes it), and {why}; give hugepage_size \
                         (2M or 1G), or plan with --host-hugepage-size"
                    ))
                })?;
                self.note = Some(format!(
                    "hugepage_size is not given: Cloud Hypervisor takes the host's default huge \
                     page size, on this host {} (Hugepagesize in {})",
                    Size(size),
                    escape(&meminfo.to_string_lossy())
                ));
                size
            }
        };
        self.found = Some(size);
        Ok(size)
    }

    /// The size Cloud Hypervisor aligns memory of `hugepages=on` without `hugepage_size` to,
    /// read once (after [`HugeDefault::size`]), and a mistake shown at `place`'s `hugepages`.
    fn align(&mut self, place: &Place<'_>) -> Result<u64> {
        let default = self.size(place)?;
        if let Some(align) = self.align {
            return Ok(align);
        }
        let align = match self.how {
            DefaultHugePage::Pinned(size) => size,
            DefaultHugePage::Host {
                mounts, hugetlbfs, ..
            } => {
                let (align, mount) = mount_page(mounts, hugetlbfs, default).map_err(|why| {
                    place.err(format_args!(
                        "hugepages: on without hugepage_size: Cloud Hypervisor aligns the \
                         memory to the page size of the file system at {HOST_HUGETLBFS} \
                         (statfs), and {why}; mount hugetlbfs there, give hugepage_size (2M or \
                         1G), or plan with --host-hugepage-size"
                    ))
                })?;
                // Said only where it asks more than the pages themselves do.
                if align > default {
                    self.note_align = Some(format!(", and aligns it to {} ({mount})", Size(align)));
                }
                align
            }
        };
        self.align = Some(align);
        Ok(align)
    }
}

/// Checks `size` of memory with `hugepages=on` without `hugepage_size` against the alignment
/// Cloud Hypervisor takes for it ([`HugeDefault::align`]) where that is larger than its pages
/// (which the caller or the spec checks); other memory has nothing to check.
fn mount_aligned(
    size: u64,
    hugepages: bool,
    hugepage_size: Option<u64>,
    place: &Place<'_>,
    default: &mut HugeDefault<'_>,
) -> Result<()> {
    if !hugepages || hugepage_size.is_some() {
        return Ok(());
    }
    let align = default.align(place)?;
    // Both are powers of two: an alignment no larger than the pages is checked with them.
    if align <= default.size(place)? || size.is_multiple_of(align) {
        return Ok(());
    }
    Err(place.err(format_args!(
        "size: {} is not a multiple of {}, the page size of {HOST_HUGETLBFS}, which Cloud \
         Hypervisor aligns memory of hugepages=on without hugepage_size to (it refuses it)",
        Size(size),
        Size(align)
    )))
}

/// What Cloud Hypervisor aligns guest RAM to (`memory_zone_get_align_size`): the huge page
/// size given, or without one the page size of the file system at `/dev/hugepages`
/// ([`HugeDefault::align`]), for `hugepages`; else the base page.
fn ram_align(
    hugepages: bool,
    hugepage_size: Option<u64>,
    place: &Place<'_>,
    default: &mut HugeDefault<'_>,
) -> Result<u64> {
    match (hugepages, hugepage_size) {
        (false, _) => Ok(BASE_PAGE),
        (true, Some(size)) => Ok(size),
        (true, None) => default.align(place),
    }
}

/// The text of the file at `path`, at most `max` bytes ([`crate::input::read_host_file`]);
/// why not, in words.
fn read_host_file(path: &Path, max: u64) -> std::result::Result<String, String> {
    let lossy = path.to_string_lossy();
    let shown = escape(&lossy);
    match crate::input::read_host_file(path, max) {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => Err(format!("{shown} cannot be read ({e})")),
        Err(_) => Err(format!("{shown} is longer than {}", Size(max))),
    }
}

/// The alignment Cloud Hypervisor takes from the file system at `hugetlbfs` (resolved on this
/// host, its mount found in the mounts file at `mounts`): a hugetlbfs mount's page size (its
/// `pagesize=`, else `default`), the base page for any other file system; and that mount in
/// words. Why not, in words: nothing at `hugetlbfs`, or a mounts file that cannot be read.
fn mount_page(
    mounts: &Path,
    hugetlbfs: &str,
    default: u64,
) -> std::result::Result<(u64, String), String> {
    let shown = escape(hugetlbfs);
    let at = match crate::check::resolve(hugetlbfs) {
        crate::check::Resolved::To(at) if std::fs::metadata(&at).is_ok() => at,
        crate::check::Resolved::Blocked { at, why } => {
            return Err(format!(
                "{shown} does not resolve ({} {why}), so it refuses to start",
                escape(&at)
            ));
        }
        _ => {
            return Err(format!(
                "{shown} does not exist here, so it refuses to start"
            ));
        }
    };
    let text = read_host_file(mounts, MOUNTS_MAX)?;
    let table = crate::check::parse_mounts(&text, default);
    Ok(match crate::check::mount_of(&table, &at) {
        Some((point, Some(page))) if page.is_power_of_two() && *page <= 1 << 30 => (
            (*page).max(BASE_PAGE),
            format!(
                "{shown} is in a hugetlbfs mount of {} pages at {}",
                Size(*page),
                escape(point)
            ),
        ),
        Some((point, Some(page))) => {
            return Err(format!(
                "{shown} is in a hugetlbfs mount of {} pages at {}, which is not modelled \
                 (a power of two up to 1 GiB)",
                Size(*page),
                escape(point)
            ));
        }
        _ => (BASE_PAGE, format!("{shown} is not in a hugetlbfs mount")),
    })
}

/// `Hugepagesize` of the meminfo file at `path`, in bytes; why not, in words.
fn meminfo_huge_page(path: &Path) -> std::result::Result<u64, String> {
    let lossy = path.to_string_lossy();
    let shown = escape(&lossy);
    let text = read_host_file(path, MEMINFO_MAX)?;
    let Some(line) = text.lines().find_map(|l| l.strip_prefix("Hugepagesize:")) else {
        return Err(format!(
            "{shown} has no Hugepagesize (a kernel without huge pages)"
        ));
    };
    line.trim()
        .strip_suffix(" kB")
        .and_then(|n| n.trim().parse::<u64>().ok())
        .and_then(|kib| kib.checked_mul(1024))
        .filter(|&b| b > 0)
        .ok_or_else(|| {
            format!(
                "{shown}'s Hugepagesize `{}` is not a number of kB",
                escape(line.trim())
            )
        })
}

/// Cloud Hypervisor's default `max_phys_bits`, the most address bits it gives a guest.
const CH_PHYS_BITS: i64 = 46;

/// The most `--memory-zone` values read (zones of one guest node add up, so there may be more
/// than [`MAX_GUEST_NODES`]); more are refused before any is read.
pub const MAX_MEMORY_ZONES: usize = 1024;

/// The spec's `window_align` of an import, 128 MiB: Cloud Hypervisor starts the area after
/// boot RAM (hot-pluggable memory, then its device area) at the next 128 MiB boundary
/// (`MemoryManager::start_addr`), or at 4 GiB (`RAM_64BIT_START`) when RAM ends below 3 GiB;
/// a spec's RAM window above the hole is rounded to it and the windows after it start there.
const CH_WINDOW_ALIGN: &str = "128MiB";

/// Its virtio-mem device takes a region of whole 128 MiB blocks...
const VIRTIO_MEM_ALIGN: u64 = 128 << 20;
/// ...plugged 2 MiB at a time.
const VIRTIO_MEM_BLOCK: u64 = 2 << 20;

/// The guest page: RAM that is not a multiple of it cannot be mapped.
const BASE_PAGE: u64 = 4 << 10;

/// The top of the guest address space Cloud Hypervisor keeps: the last 64 KiB unused, the
/// 1 MiB below them its platform device area (`mmio_address_space_size`,
/// `PLATFORM_DEVICE_AREA_SIZE`).
const CH_TOP_KEPT: u128 = (64 << 10) + (1 << 20);

/// Where Cloud Hypervisor places a virtio-pci device's 512 KiB BAR in its 64-bit PCI device
/// area: at a multiple of 8 MiB (`VIRTIO_PCI_BAR_ALIGN`), from the top of that area down, one
/// 8 MiB slot per device. With one PCI segment the area is segment 0's whole 64-bit window.
/// The highest slot is at `2^phys_bits - 8 MiB` (the area ends 1 MiB and 64 KiB below
/// `2^phys_bits`), so `n` such devices need guest memory to end at `2^phys_bits - n * 8 MiB`
/// at the latest ([`PciDevices`]).
const CH_VIRTIO_BAR_ALIGN: u128 = 8 << 20;

/// The name of a spec converted from Cloud Hypervisor's configuration.
pub(crate) const CH_SPEC_NAME: &str = "cloud-hypervisor";

/// The latest end of guest memory (exclusive) that leaves Cloud Hypervisor, with a guest of
/// `bits` address bits, a place in its 64-bit PCI device area for the BAR of the virtio-rng
/// device every guest has: `2^bits - 8 MiB` (0 below 23 bits).
pub(crate) fn ch_memory_end_bound(bits: u32) -> u128 {
    (1u128 << bits.min(64)).saturating_sub(CH_VIRTIO_BAR_ALIGN)
}

/// Where Cloud Hypervisor's 64-bit PCI device area starts (the end of guest memory, 4 GiB at
/// the earliest) with `ram` bytes of boot RAM aligned to `align` (its page size) laid out as it
/// lays them out on `arch` ([`ChRam::end`]), then a hotplug area of `hotplug` bytes (0 for none)
/// from the next 128 MiB boundary, as [`device_area`] lays them out. On aarch64 past its 32-bit
/// hole that is up to 128 MiB above the end of a memvisor plan of the same memory, whose RAM runs
/// on from 1 GiB (up to 1088 MiB with 1 GiB pages, of which only 2 GiB go below that hole).
pub(crate) fn ch_memory_end(ram: u64, hotplug: u64, arch: Arch, align: u64) -> u128 {
    let ram_end = ChRam::of(arch).end(u128::from(ram), align);
    if hotplug == 0 {
        return ram_end;
    }
    let align = u128::from(VIRTIO_MEM_ALIGN);
    ram_end.div_ceil(align) * align + u128::from(hotplug)
}

/// The virtio PCI devices of a configuration that take a slot of the 64-bit PCI device area
/// ([`CH_VIRTIO_BAR_ALIGN`]) besides a virtio-mem device, by kind: how many of each. Every
/// guest has a virtio-rng device, and a virtio-console device unless its console is off
/// (`--console tty` by default); a JSON `VmConfig` adds those of its device sections. A
/// virtio-blk device given at boot on PCI segment 0 has a 32-bit BAR and takes no slot.
/// The second field holds the sizes of the virtio-pmem devices' regions that are given (a
/// region whose size is not given is its file's, which is not read), which Cloud Hypervisor
/// takes from the same area before any BAR ([`pmem_low`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PciDevices(pub(super) Vec<(&'static str, u64)>, pub(super) Vec<u64>);

impl PciDevices {
    /// Cloud Hypervisor's defaults: its virtio-rng and virtio-console devices.
    fn defaults() -> Self {
        Self(vec![("virtio-rng", 1), ("virtio-console", 1)], Vec::new())
    }

    /// `3 virtio PCI devices (virtio-rng, virtio-console, virtio-mem)` and how many there are.
    fn describe(&self, virtio_mem: bool) -> (u64, String) {
        let mut count = 0u64;
        let mut names = Vec::new();
        let mem = [("virtio-mem", 1)];
        let extra: &[(&str, u64)] = if virtio_mem { &mem } else { &[] };
        for &(name, n) in self.0.iter().chain(extra).filter(|(_, n)| *n > 0) {
            count = count.saturating_add(n);
            names.push(if n == 1 {
                name.to_owned()
            } else {
                format!("{n} {name}")
            });
        }
        let noun = if count == 1 { "device" } else { "devices" };
        (
            count,
            format!("{count} virtio PCI {noun} ({})", names.join(", ")),
        )
    }
}

/// Where Cloud Hypervisor's RAM runs: the end of its RAM below the 32-bit hole (RAM from
/// `start` up to `hole`), then from 4 GiB (`RAM_64BIT_START`).
struct ChRam {
    start: u128,
    hole: u128,
}

impl ChRam {
    fn of(arch: Arch) -> Self {
        const MIB: u128 = 1 << 20;
        match arch {
            // `[0, 3 GiB)`, then from 4 GiB.
            Arch::X86_64 => Self {
                start: 0,
                hole: 3072 * MIB,
            },
            // `[1 GiB, 4032 MiB)` (`RAM_START`, `MEM_32BIT_RESERVED_START`), then from 4 GiB.
            Arch::Aarch64 => Self {
                start: 1024 * MIB,
                hole: 4032 * MIB,
            },
        }
    }

    /// Where what follows `ram` bytes of boot RAM starts (`MemoryManager::start_addr` without
    /// hotplug): its end, or 4 GiB when it ends below the hole. Cloud Hypervisor lays memory
    /// aligned to `align` (its huge page size, `memory_zone_get_align_size`) out in whole
    /// multiples of it, so below the hole it takes only what is a multiple of `align` (on
    /// aarch64, 2 GiB of the 3008 MiB for 1 GiB pages), and the rest runs on from 4 GiB.
    fn end(&self, ram: u128, align: u64) -> u128 {
        self.end_of(&[(ram, align)])
    }

    /// [`ChRam::end`] of memory zones laid out in order, each `(size, align)`, as Cloud
    /// Hypervisor lays them out (`create_memory_regions_from_zones`): each zone takes what is
    /// left below the hole rounded down to its own alignment, and once a zone runs past it or
    /// takes all of that (the RAM region is then used up, even with less than a page of the
    /// zone's alignment left), that zone's rest and every later zone run on from 4 GiB.
    fn end_of(&self, zones: &[(u128, u64)]) -> u128 {
        const GIB4: u128 = 4 << 30;
        let mut left = self.hole - self.start;
        let mut high: u128 = 0;
        let mut spilled = false;
        for &(size, align) in zones {
            if spilled {
                high = high.saturating_add(size);
                continue;
            }
            let align = u128::from(align.max(1));
            let room = left / align * align;
            if size < room {
                left -= size;
            } else {
                high = size - room;
                spilled = true;
            }
        }
        GIB4.saturating_add(high)
    }
}

/// Where Cloud Hypervisor's aarch64 device tree starts the 64-bit PCI device area when it
/// starts lower (`PCI_HIGH_BASE`, 8 GiB): it gives the area's size less the part below 8 GiB,
/// so an area that ends below 8 GiB gets a size below zero.
const CH_AARCH64_PCI_HIGH_BASE: u128 = 8 << 30;

/// The alignment and size granule of a virtio-pmem device's region in the 64-bit PCI device
/// area (Cloud Hypervisor refuses a size off it, `PmemSizeNotAligned`).
pub(super) const CH_PMEM_ALIGN: u64 = 2 << 20;

/// The size of a virtio-pci device's BAR (`CAPABILITY_BAR_SIZE`).
const CH_VIRTIO_BAR_SIZE: u128 = 512 << 10;

/// Where the lowest of virtio-pmem regions of `total` bytes together starts in a PCI device
/// area that ends at `top`: Cloud Hypervisor makes its virtio devices, and takes each pmem
/// region from the area, before it gives any device its BAR; its allocator takes each range
/// from the top down, aligned (2 MiB, which every region's size is a multiple of), so the
/// regions lie one under the other from `top` rounded down to 2 MiB. `top` itself when there
/// are none.
fn pmem_low(top: u128, total: u128) -> u128 {
    if total == 0 {
        return top;
    }
    let align = u128::from(CH_PMEM_ALIGN);
    (top / align * align).saturating_sub(total)
}

/// Refuses guest memory that leaves Cloud Hypervisor no usable 64-bit PCI device area. Boot RAM,
/// `zones` of `(size, alignment)` in order, is laid out as Cloud Hypervisor lays it out on
/// `arch` ([`ChRam::end_of`]), then a
/// hotplug area of `hotplug` bytes from the next 128 MiB boundary (or from 4 GiB); the PCI
/// device area runs from there up to the platform device area, the 1 MiB below the last
/// 64 KiB of the `phys_bits`-bit address space. It must hold a BAR slot
/// ([`CH_VIRTIO_BAR_ALIGN`]) for each of `devices` and, when the hotplug area is virtio-mem
/// (`virtio_mem`), for its virtio-mem device, so memory must end at
/// `2^phys_bits - n * 8 MiB` at the latest. On aarch64 the area must also reach past 8 GiB
/// ([`CH_AARCH64_PCI_HIGH_BASE`]). What crosses first is named: `size` at `ram_place`, or
/// `hotplug_size` at `hotplug_place`.
fn device_area(
    zones: &[(u128, u64)],
    (hotplug, virtio_mem): (Option<u64>, bool),
    devices: &PciDevices,
    phys_bits: i64,
    arch: Arch,
    ram_place: &Place<'_>,
    hotplug_place: &Place<'_>,
) -> Result<()> {
    let bits = u32::try_from(phys_bits.clamp(0, 64)).unwrap_or(64);
    let platform = (1u128 << bits).saturating_sub(CH_TOP_KEPT);
    if arch == Arch::Aarch64 && platform <= CH_AARCH64_PCI_HIGH_BASE {
        return Err(ram_place.err(format_args!(
            "size: with {bits} address bits Cloud Hypervisor's platform device area starts at \
             {platform:#x}, so its 64-bit PCI device area ends below 8 GiB, where its aarch64 \
             device tree starts that area (it would give the area a size below zero); give \
             max_phys_bits of 34 or more"
        )));
    }
    let (slots, mut what_devices) = devices.describe(hotplug.is_some() && virtio_mem);
    // The highest start of the PCI device area that still holds a slot for each device below
    // the platform device area and the virtio-pmem regions, which are taken first (one slot at
    // least: an empty area makes Cloud Hypervisor fail).
    let pmem: u128 = devices.1.iter().map(|&s| u128::from(s)).sum();
    let below = pmem_low(platform, pmem);
    let first =
        below.saturating_sub(CH_VIRTIO_BAR_SIZE) / CH_VIRTIO_BAR_ALIGN * CH_VIRTIO_BAR_ALIGN;
    let last = first.saturating_sub(CH_VIRTIO_BAR_ALIGN * u128::from(slots.max(1) - 1));
    if below < platform {
        let alone = if below == 0 {
            ", which leave no space below its platform device area"
        } else {
            ""
        };
        what_devices = format!(
            "{what_devices}, under {} of virtio-pmem regions, which it takes first{alone}",
            crate::size::exact(pmem)
        );
    }
    let ram_end = ChRam::of(arch).end_of(zones);
    let align = u128::from(VIRTIO_MEM_ALIGN);
    let (end, field, what, place) = match hotplug {
        Some(size) if ram_end <= last => (
            ram_end.div_ceil(align) * align + u128::from(size),
            "hotplug_size",
            "the hotplug area",
            hotplug_place,
        ),
        _ => (ram_end, "size", "boot RAM", ram_place),
    };
    if end <= last {
        return Ok(());
    }
    Err(place.err(format_args!(
        "{field}: Cloud Hypervisor's 64-bit PCI device area would start at {end:#x}, after \
         {what} (at 4 GiB at the earliest), and its platform device area starts at \
         {platform:#x} (1 MiB below the last 64 KiB of a {bits}-bit guest address space): the \
         PCI device area has no room for the 8 MiB-aligned BARs of the guest's {what_devices} \
         (memory must end at {last:#x} at the latest), and Cloud Hypervisor cannot start"
    )))
}

const MEMORY_KEYS: &[&str] = &[
    "size",
    "file",
    "hotplug_size",
    "hotplug_method",
    "hotplugged_size",
    "shared",
    "hugepages",
    "hugepage_size",
    "thp",
    "prefault",
    "reserve",
    "mergeable",
];

const ZONE_KEYS: &[&str] = &[
    "id",
    "size",
    "file",
    "shared",
    "hugepages",
    "hugepage_size",
    "host_numa_node",
    "hotplug_size",
    "hotplugged_size",
    "prefault",
    "reserve",
    "mergeable",
];

const NUMA_KEYS: &[&str] = &[
    "guest_numa_id",
    "cpus",
    "distances",
    "device_id",
    "memory_zones",
    "pci_segments",
];

/// Where a mistake is shown: on the command line, the option (`--memory`, `--memory-zone`,
/// `--numa`) and, for one of several, which one; in a JSON `VmConfig`, the object's field path
/// and where its fields are in the file ([`json::JsonPlace`]). The checks are shared by both
/// forms: a message that starts with a field's name and `: ` (`size: 0 B is not ...`) is
/// about that field.
enum Place<'s> {
    Option {
        origin: &'static str,
        prefix: String,
    },
    Json(json::JsonPlace<'s>),
}

impl Place<'_> {
    fn new(origin: &'static str) -> Place<'static> {
        Place::option(origin, String::new())
    }

    fn option(origin: &'static str, prefix: String) -> Place<'static> {
        Place::Option { origin, prefix }
    }

    /// On the command line, names the option value (`zone 1 (`a`): `) once its id is known.
    fn set_prefix(&mut self, new: String) {
        if let Place::Option { prefix, .. } = self {
            *prefix = new;
        }
    }

    /// How another setting's message names this one: `zone 2 (`a`)`, `node 1
    /// (guest_numa_id=0)` on the command line, `memory.zones[1]` in JSON.
    fn name(&self) -> String {
        match self {
            Place::Option { origin, prefix } if prefix.is_empty() => (*origin).to_owned(),
            Place::Option { prefix, .. } => prefix.trim_end_matches(": ").to_owned(),
            Place::Json(place) => place.path.clone(),
        }
    }

    fn err(&self, message: impl std::fmt::Display) -> Error {
        match self {
            Place::Option { origin, prefix } => spec_error(origin, format!("{prefix}{message}")),
            Place::Json(place) => place.err(&message.to_string()),
        }
    }
}

impl std::fmt::Debug for Place<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Option { origin, prefix } => write!(f, "{origin} {prefix}"),
            Place::Json(place) => write!(f, "{}", place.path),
        }
    }
}

/// An option string read as Cloud Hypervisor's option parser reads it: split into items
/// ([`ch_items`]), each `key=value` with a key it knows, the value trimmed; a key given again
/// takes the last value, and an empty value is one not given.
struct ChOptions<'a> {
    keys: &'static [&'static str],
    values: Vec<Option<&'a str>>,
}

impl<'a> ChOptions<'a> {
    fn parse(option: &'a str, keys: &'static [&'static str], place: &Place<'_>) -> Result<Self> {
        let mut values = vec![None; keys.len()];
        // An option string of white space alone gives every default.
        if !option.trim().is_empty() {
            for item in ch_items(option).map_err(|m| place.err(m))? {
                let (key, value) = item.split_once('=').ok_or_else(|| {
                    place.err(format_args!("`{}` is not key=value", escape(item)))
                })?;
                let Some(at) = keys.iter().position(|k| *k == key) else {
                    let gone = if key == "sgx_epc_sections" {
                        "; SGX EPC sections are not modelled, and Cloud Hypervisor no longer \
                         takes them"
                    } else {
                        ""
                    };
                    return Err(place.err(format_args!(
                        "unknown option `{}` (known: {}){gone}",
                        escape(key),
                        keys.join(", ")
                    )));
                };
                values[at] = Some(value.trim());
            }
        }
        Ok(Self { keys, values })
    }

    /// The value of `key`, `None` when not given or empty.
    fn raw(&self, key: &str) -> Option<&'a str> {
        let at = self.keys.iter().position(|k| *k == key)?;
        self.values[at].filter(|v| !v.is_empty())
    }

    /// An on/off toggle (`on`, `off`, `true`, `false` in any case, no quotes).
    fn toggle(&self, key: &str, default: bool, place: &Place<'_>) -> Result<bool> {
        let Some(value) = self.raw(key) else {
            return Ok(default);
        };
        match value.to_lowercase().as_str() {
            "on" | "true" => Ok(true),
            "off" | "false" => Ok(false),
            _ => Err(place.err(format_args!("{key}: `{}` is not on or off", escape(value)))),
        }
    }

    /// A size ([`ch_size`]; it may be quoted).
    fn size(&self, key: &str, place: &Place<'_>) -> Result<Option<u64>> {
        self.raw(key)
            .map(|v| ch_size(&ch_dequote(v)).map_err(|e| place.err(format_args!("{key}: {e}"))))
            .transpose()
    }

    /// A whole number of 32 bits (it may be quoted).
    fn u32(&self, key: &str, place: &Place<'_>) -> Result<Option<u32>> {
        self.raw(key)
            .map(|v| {
                ch_dequote(v).parse::<u32>().map_err(|_| {
                    place.err(format_args!(
                        "{key}: `{}` is not a whole number from 0 to 4294967295",
                        escape(v)
                    ))
                })
            })
            .transpose()
    }

    /// A text value without its quotes (`id`, `device_id`), as Cloud Hypervisor reads one.
    fn text(&self, key: &str) -> Option<String> {
        self.raw(key).map(ch_dequote)
    }
}

/// `--memory` (or a `VmConfig`'s `memory`), read.
#[derive(Debug)]
struct ChMemory<'s> {
    place: Place<'s>,
    /// A `file` was given.
    file: bool,
    size: Option<u64>,
    hotplug: Option<u64>,
    hotplugged: Option<u64>,
    virtio_mem: bool,
    shared: bool,
    hugepages: bool,
    hugepage_size: Option<u64>,
    thp: bool,
    prefault: bool,
    mergeable: bool,
}

/// `--memory`'s option string, read as Cloud Hypervisor reads it (checked by
/// [`check_memory`]).
fn ch_memory(option: &str) -> Result<ChMemory<'static>> {
    let place = Place::new("--memory");
    let o = ChOptions::parse(option, MEMORY_KEYS, &place)?;
    let virtio_mem = match o
        .raw("hotplug_method")
        .map(|m| ch_dequote(m).to_lowercase())
    {
        // Not given: Cloud Hypervisor's default, ACPI.
        None => false,
        Some(m) if m == "acpi" => false,
        Some(m) if m == "virtio-mem" => true,
        Some(_) => {
            return Err(place.err(format_args!(
                "hotplug_method: `{}` is not acpi or virtio-mem",
                escape(o.raw("hotplug_method").unwrap_or_default())
            )));
        }
    };
    // Whether the memory is mapped without MAP_NORESERVE: not about the map.
    o.toggle("reserve", false, &place)?;
    Ok(ChMemory {
        file: o.raw("file").is_some(),
        size: o.size("size", &place)?,
        hotplug: o.size("hotplug_size", &place)?,
        hotplugged: o.size("hotplugged_size", &place)?,
        virtio_mem,
        shared: o.toggle("shared", false, &place)?,
        hugepages: o.toggle("hugepages", false, &place)?,
        hugepage_size: o.size("hugepage_size", &place)?,
        thp: o.toggle("thp", true, &place)?,
        prefault: o.toggle("prefault", false, &place)?,
        mergeable: o.toggle("mergeable", false, &place)?,
        place,
    })
}

/// What Cloud Hypervisor checks of its memory settings whether or not memory zones are given,
/// and a `file`, which is not modelled.
fn check_memory(memory: &ChMemory<'_>) -> Result<()> {
    let place = &memory.place;
    if memory.file {
        return Err(place.err(
            "file: memory backed by a file is not modelled (a spec's memory is anonymous, a \
             memfd or hugetlbfs files); remove it to plan the rest",
        ));
    }
    huge_page_size_given(memory.hugepages, memory.hugepage_size, place)?;
    if memory.mergeable && memory.shared {
        return Err(place.err("mergeable: on with shared on (Cloud Hypervisor refuses the pair)"));
    }
    Ok(())
}

/// Cloud Hypervisor refuses a `hugepage_size` without `hugepages=on`, and one that is not a
/// power of two.
fn huge_page_size_given(hugepages: bool, size: Option<u64>, place: &Place<'_>) -> Result<()> {
    match size {
        Some(_) if !hugepages => {
            Err(place
                .err("hugepage_size: given without hugepages=on (Cloud Hypervisor refuses it)"))
        }
        Some(s) if !s.is_power_of_two() => Err(place.err(format_args!(
            "hugepage_size: {} is not a power of two (Cloud Hypervisor refuses it)",
            Size(s)
        ))),
        _ => Ok(()),
    }
}

/// The spec's `huge_pages` of memory with these options: explicit huge pages of
/// `hugepage_size` (when not given, the host's default, as Cloud Hypervisor takes it:
/// `default`), else transparent ones unless `thp=off`; and the page its sizes must be a
/// multiple of.
fn pages(
    hugepages: bool,
    size: Option<u64>,
    thp: bool,
    place: &Place<'_>,
    default: &mut HugeDefault<'_>,
) -> Result<(&'static str, u64)> {
    let size = match (hugepages, size) {
        (true, None) => {
            let size = default.size(place)?;
            if size != 2 << 20 && size != 1 << 30 {
                return Err(place.err(format_args!(
                    "hugepages: on without hugepage_size is the host's default huge page size, \
                     {}, and a spec has 2 MiB or 1 GiB huge pages; give hugepage_size (2M or \
                     1G), or plan with --host-hugepage-size",
                    Size(size)
                )));
            }
            size
        }
        (_, size) => size.unwrap_or(2 << 20),
    };
    Ok(match (hugepages, size, thp) {
        (true, 0x20_0000, _) => ("2MiB", 2 << 20),
        (true, 0x4000_0000, _) => ("1GiB", 1 << 30),
        (true, other, _) => {
            return Err(place.err(format_args!(
                "hugepage_size: {} huge pages are not supported (2M or 1G)",
                Size(other)
            )));
        }
        (false, _, true) => ("transparent", BASE_PAGE),
        (false, _, false) => ("none", BASE_PAGE),
    })
}

/// A memory zone as given (a `--memory-zone` option string or a `memory.zones` entry), read
/// but not checked ([`ch_zone`] checks it).
#[derive(Debug)]
struct ChZoneInput<'s> {
    place: Place<'s>,
    id: Option<String>,
    file: bool,
    size: Option<u64>,
    shared: bool,
    hugepages: bool,
    hugepage_size: Option<u64>,
    host_node: Option<u32>,
    hotplug: Option<u64>,
    hotplugged: Option<u64>,
    prefault: bool,
    mergeable: bool,
}

/// A `--memory-zone` option string, read as Cloud Hypervisor reads it; `mergeable` is
/// `--memory`'s, which a zone takes unless it says otherwise.
fn ch_zone_options(option: &str, index: usize, mergeable: bool) -> Result<ChZoneInput<'static>> {
    let mut place = Place::option("--memory-zone", format!("zone {}: ", index + 1));
    let o = ChOptions::parse(option, ZONE_KEYS, &place)?;
    let id = o.text("id");
    if let Some(id) = &id {
        place.set_prefix(format!("zone {} (`{}`): ", index + 1, escape(id)));
    }
    // Whether the memory is mapped without MAP_NORESERVE: not about the map.
    o.toggle("reserve", false, &place)?;
    Ok(ChZoneInput {
        id,
        file: o.raw("file").is_some(),
        size: o.size("size", &place)?,
        shared: o.toggle("shared", false, &place)?,
        hugepages: o.toggle("hugepages", false, &place)?,
        hugepage_size: o.size("hugepage_size", &place)?,
        host_node: o.u32("host_numa_node", &place)?,
        hotplug: o.size("hotplug_size", &place)?,
        hotplugged: o.size("hotplugged_size", &place)?,
        prefault: o.toggle("prefault", false, &place)?,
        mergeable: o.toggle("mergeable", mergeable, &place)?,
        place,
    })
}

/// A memory zone, read and checked.
#[derive(Debug)]
struct ChZone<'s> {
    place: Place<'s>,
    id: String,
    size: u64,
    /// The spec's backing, huge pages and prefault: what must be alike in every zone.
    backing: (&'static str, &'static str, bool),
    host_node: Option<u32>,
    hotplug: Option<u64>,
    /// What Cloud Hypervisor aligns the zone's RAM to ([`ram_align`]).
    align: u64,
}

fn ch_zone<'s>(
    zone: ChZoneInput<'s>,
    memory: &ChMemory<'_>,
    default: &mut HugeDefault<'_>,
) -> Result<ChZone<'s>> {
    let ChZoneInput {
        place,
        id,
        file,
        size,
        shared,
        hugepages,
        hugepage_size,
        host_node,
        hotplug,
        hotplugged,
        prefault,
        mergeable,
    } = zone;
    let Some(id) = id.filter(|id| !id.is_empty()) else {
        return Err(place.err("id: missing (Cloud Hypervisor requires every memory zone's id)"));
    };
    if file {
        return Err(place.err(
            "file: memory backed by a file is not modelled (a spec's memory is anonymous, a \
             memfd or hugetlbfs files); remove it to plan the rest",
        ));
    }
    if id.starts_with("__") {
        return Err(
            place.err("id: an id starting with `__` is Cloud Hypervisor's own (it refuses it)")
        );
    }
    let size = size.unwrap_or(CH_DEFAULT_MEMORY);
    // What Cloud Hypervisor checks when it reads the configuration, then when it lays out
    // the memory, in its order.
    if shared && mergeable {
        return Err(place.err(
            "mergeable: on with shared on (Cloud Hypervisor refuses the pair; on its command \
             line a zone is mergeable when --memory is)",
        ));
    }
    huge_page_size_given(hugepages, hugepage_size, &place)?;
    if hotplug.is_some() && !memory.virtio_mem {
        return Err(place.err(
            "hotplug_size: a memory zone's hotplug needs --memory hotplug_method=virtio-mem \
             (Cloud Hypervisor refuses ACPI hotplug for memory zones)",
        ));
    }
    hotplugged_within(hotplugged, hotplug, &place)?;
    if size == 0 {
        return Err(place.err(
            "size: 0 B is not a memory zone's size (Cloud Hypervisor cannot map an empty zone)",
        ));
    }
    let (pages, page) = pages(hugepages, hugepage_size, memory.thp, &place, default)?;
    mount_aligned(size, hugepages, hugepage_size, &place, default)?;
    if !size.is_multiple_of(page) {
        return Err(place.err(format_args!(
            "size: {} is not a multiple of the {} page (Cloud Hypervisor refuses it)",
            Size(size),
            Size(page)
        )));
    }
    if hotplug == Some(0) {
        return Err(place.err(
            "hotplug_size: 0 B is not a hotplug size (Cloud Hypervisor refuses it; leave \
             hotplug_size out for none)",
        ));
    }
    if let Some(window) = hotplug.filter(|w| !w.is_multiple_of(VIRTIO_MEM_ALIGN)) {
        return Err(place.err(format_args!(
            "hotplug_size: {} is not a multiple of {} (Cloud Hypervisor's virtio-mem refuses it)",
            Size(window),
            Size(VIRTIO_MEM_ALIGN)
        )));
    }
    if let Some(plugged) = hotplugged.filter(|p| !p.is_multiple_of(VIRTIO_MEM_BLOCK)) {
        return Err(place.err(format_args!(
            "hotplugged_size: {} is not a multiple of {} (Cloud Hypervisor's virtio-mem refuses \
             it)",
            Size(plugged),
            Size(VIRTIO_MEM_BLOCK)
        )));
    }
    if let Some(node) = host_node.filter(|&n| n >= MAX_HOST_NODES) {
        return Err(place.err(format_args!(
            "host_numa_node: host node {node} (host nodes are numbered below {MAX_HOST_NODES})"
        )));
    }
    let align = ram_align(hugepages, hugepage_size, &place, default)?;
    Ok(ChZone {
        place,
        id,
        size,
        align,
        backing: (
            if shared || hugepages {
                "memfd"
            } else {
                "anonymous"
            },
            pages,
            prefault,
        ),
        host_node,
        hotplug,
    })
}

/// A NUMA node as given (a `--numa` option string or a `numa` entry), read but not checked
/// ([`ch_node`] checks it).
#[derive(Debug)]
struct ChNodeInput<'s> {
    place: Place<'s>,
    id: u32,
    /// How many CPUs or ranges of CPUs `cpus` lists.
    cpus: Option<usize>,
    distances: Option<Vec<(u64, u64)>>,
    device: Option<String>,
    zones: Option<Vec<String>>,
    /// The PCI segments, as ranges `(first, last)`.
    segments: Option<Vec<(u64, u64)>>,
}

/// A `--numa` option string, read as Cloud Hypervisor reads it.
fn ch_node_options(option: &str, index: usize) -> Result<ChNodeInput<'static>> {
    let mut place = Place::option("--numa", format!("node {}: ", index + 1));
    let o = ChOptions::parse(option, NUMA_KEYS, &place)?;
    let id = o.u32("guest_numa_id", &place)?.ok_or_else(|| {
        place.err("guest_numa_id: missing (Cloud Hypervisor requires it for every NUMA node)")
    })?;
    place.set_prefix(format!("node {} (guest_numa_id={id}): ", index + 1));
    let cpus = o
        .raw("cpus")
        .map(|v| {
            integer_list(v).map(|l| l.len()).ok_or_else(|| {
                place.err(format_args!(
                    "cpus: `{}` is not a list of numbers and ranges (`[0-3,6]`)",
                    escape(v)
                ))
            })
        })
        .transpose()?;
    let distances = o
        .raw("distances")
        .map(|v| {
            tuple_list(v).ok_or_else(|| {
                place.err(format_args!(
                    "distances: `{}` is not a list of node@distance pairs (`[0@10,1@20]`)",
                    escape(v)
                ))
            })
        })
        .transpose()?;
    let device = o.text("device_id");
    // As Cloud Hypervisor's string list: the brackets trimmed off, split at commas outside
    // quotes and brackets, each name kept as written.
    let zones = o
        .raw("memory_zones")
        .map(|v| {
            ch_items(v.trim().trim_matches(['[', ']']))
                .map(|items| items.into_iter().map(str::to_owned).collect())
                .map_err(|m| place.err(format_args!("memory_zones: {m}")))
        })
        .transpose()?;
    let segments = o
        .raw("pci_segments")
        .map(|v| {
            integer_list(v).ok_or_else(|| {
                place.err(format_args!(
                    "pci_segments: `{}` is not a list of numbers and ranges",
                    escape(v)
                ))
            })
        })
        .transpose()?;
    Ok(ChNodeInput {
        place,
        id,
        cpus,
        distances,
        device,
        zones,
        segments,
    })
}

/// A NUMA node, checked on its own.
#[derive(Debug)]
struct ChNode<'s> {
    place: Place<'s>,
    id: u32,
    zones: Vec<String>,
    distances: Vec<(u64, u64)>,
    /// The PCI segments, as ranges `(first, last)`.
    segments: Vec<(u64, u64)>,
}

/// What Cloud Hypervisor checks of a NUMA node on its own: `device_id` alone (and not empty),
/// or `cpus` (not empty) or `memory_zones` (not empty when without `cpus`).
fn ch_node(node: ChNodeInput<'_>) -> Result<ChNode<'_>> {
    let place = &node.place;
    match (&node.device, node.cpus, &node.zones) {
        (Some(device), None, None) => {
            if device.is_empty() {
                return Err(place.err("device_id: empty (Cloud Hypervisor refuses it)"));
            }
        }
        (None, Some(0), _) => {
            return Err(place.err("cpus: an empty list (Cloud Hypervisor refuses it)"));
        }
        (None, None, Some(zones)) if zones.is_empty() => {
            return Err(place.err("memory_zones: an empty list (Cloud Hypervisor refuses it)"));
        }
        (None, Some(_), _) | (None, None, Some(_)) => {}
        (Some(_), _, _) => {
            return Err(place
                .err("device_id: given with cpus or memory_zones (Cloud Hypervisor refuses it)"));
        }
        (None, None, None) => {
            return Err(place.err(
                "neither cpus, memory_zones nor device_id given (Cloud Hypervisor refuses a \
                 node without any)",
            ));
        }
    }
    Ok(ChNode {
        id: node.id,
        zones: node.zones.unwrap_or_default(),
        distances: node.distances.unwrap_or_default(),
        segments: node.segments.unwrap_or_default(),
        place: node.place,
    })
}

/// A list of numbers and ranges as Cloud Hypervisor's integer list reads it (`[0-3,6]`: the
/// brackets trimmed off, `A-B` with `A < B`), as `(first, last)` pairs; a range is not
/// expanded.
fn integer_list(text: &str) -> Option<Vec<(u64, u64)>> {
    text.trim()
        .trim_matches(['[', ']'])
        .split(',')
        .map(|range| {
            let mut parts = range.split('-');
            let first: u64 = parts.next()?.parse().ok()?;
            let last = match parts.next() {
                None => first,
                Some(l) => l.parse().ok().filter(|&l| first < l)?,
            };
            parts.next().is_none().then_some((first, last))
        })
        .collect()
}

/// A list of `key@value` pairs of numbers as Cloud Hypervisor's tuple list reads it (inside
/// brackets, split at commas outside quotes and brackets).
fn tuple_list(text: &str) -> Option<Vec<(u64, u64)>> {
    let body = text.trim().strip_prefix('[')?.strip_suffix(']')?;
    ch_items(body)
        .ok()?
        .into_iter()
        .map(|pair| {
            let (key, value) = pair.trim().split_once('@')?;
            if value.contains('@') {
                return None;
            }
            Some((ch_dequote(key).parse().ok()?, value.parse().ok()?))
        })
        .collect()
}

/// The options of Cloud Hypervisor's command line that lay out guest memory.
#[derive(Debug, Default)]
struct ChCommandLine<'a> {
    memory: Option<&'a str>,
    zones: Vec<&'a str>,
    numa: Vec<&'a str>,
}

/// The words of a command line: split at ASCII white space outside double quotes (quotes
/// are kept, for the option parser to read).
fn words(text: &str) -> std::result::Result<Vec<&str>, &'static str> {
    let mut words = Vec::new();
    let (mut start, mut quoted) = (None, false);
    for (at, c) in text.char_indices() {
        if c == '"' {
            quoted = !quoted;
        }
        if c.is_ascii_whitespace() && !quoted {
            if let Some(s) = start.take() {
                words.push(&text[s..at]);
            }
        } else if start.is_none() {
            start = Some(at);
        }
    }
    if quoted {
        return Err("unbalanced quotes");
    }
    if let Some(s) = start {
        words.push(&text[s..]);
    }
    Ok(words)
}

/// Cloud Hypervisor's `--memory`, `--memory-zone` and `--numa` in a command line: `--memory`
/// once, with one value; `--memory-zone` and `--numa` as often as wanted, each with one value
/// or more (up to the next option); `--option=value` as well as `--option value`.
fn command_line(text: &str) -> Result<ChCommandLine<'_>> {
    let place = Place::new("cloud-hypervisor");
    let mut line = ChCommandLine::default();
    // The option whose values the words after it are, and whether it has one yet.
    let mut current: Option<(&str, bool)> = None;
    for word in words(text).map_err(|m| place.err(m))? {
        let (option, value) = if let Some(flag) = word.strip_prefix("--") {
            if let Some((option, _)) = current.filter(|(_, has)| !has) {
                return Err(place.err(format_args!("--{option} needs a value")));
            }
            let (option, value) = match flag.split_once('=') {
                Some((o, v)) => (o, Some(v)),
                None => (flag, None),
            };
            if !matches!(option, "memory" | "memory-zone" | "numa") {
                return Err(place.err(format_args!(
                    "`--{}` is not imported (only --memory, --memory-zone and --numa, which lay \
                     out guest memory, are)",
                    escape(option)
                )));
            }
            if option == "memory" && line.memory.is_some() {
                return Err(place.err("--memory given twice (Cloud Hypervisor takes it once)"));
            }
            current = Some((option, false));
            match value {
                Some(v) => (option, v),
                None => continue,
            }
        } else {
            match current {
                Some((option, has)) if option != "memory" || !has => (option, word),
                _ => {
                    return Err(place.err(format_args!(
                        "`{}` is not the value of an option",
                        escape(word)
                    )));
                }
            }
        };
        current = Some((option, true));
        match option {
            "memory" => line.memory = Some(value),
            "memory-zone" => {
                if line.zones.len() == MAX_MEMORY_ZONES {
                    return Err(spec_error(
                        "--memory-zone",
                        format!("more than {MAX_MEMORY_ZONES} memory zones"),
                    ));
                }
                line.zones.push(value);
            }
            _ => {
                if line.numa.len() == MAX_GUEST_NODES {
                    return Err(spec_error(
                        "--numa",
                        format!(
                            "more than {MAX_GUEST_NODES} NUMA nodes (a spec has at most \
                             {MAX_GUEST_NODES})"
                        ),
                    ));
                }
                line.numa.push(value);
            }
        }
    }
    if let Some((option, false)) = current {
        return Err(place.err(format_args!("--{option} needs a value")));
    }
    Ok(line)
}

/// How mistakes in the spec converted from Cloud Hypervisor's `options` name it:
/// `cloud-hypervisor` for its command line (starting with `--`), `--memory` for its
/// `--memory` option string.
///
/// ```
/// use memvisor_cli::vmm::cloud_hypervisor_origin;
///
/// assert_eq!(cloud_hypervisor_origin("size=1G"), "--memory");
/// assert_eq!(cloud_hypervisor_origin(" --memory size=1G"), "cloud-hypervisor");
/// assert_eq!(cloud_hypervisor_origin(" {\"memory\": {}}"), "<VmConfig>");
/// ```
#[must_use]
pub fn cloud_hypervisor_origin(options: &str) -> &'static str {
    if is_json(options) {
        JSON_ORIGIN
    } else if is_command_line(options) {
        "cloud-hypervisor"
    } else {
        "--memory"
    }
}

fn is_command_line(options: &str) -> bool {
    options.trim_start().starts_with("--")
}

/// The spec of Cloud Hypervisor's memory options on the guest architecture `arch`: its
/// `--memory` option string (`size=1G,hotplug_size=4G,shared=on`), or, starting with `--`, the
/// options of its command line that lay out guest memory: `--memory`, `--memory-zone` and
/// `--numa` (`--memory size=0 --memory-zone id=mem0,size=1G --numa
/// guest_numa_id=0,memory_zones=mem0`).
///
/// `--memory`: `size` is the boot RAM (Cloud Hypervisor's default, 512 MiB, when it is not
/// given; an option string of white space alone gives every default); `hotplug_size` one
/// hotplug slot of that size; `shared=on` or `hugepages=on` memfd memory (else private
/// anonymous); `hugepages=on` explicit huge pages of `hugepage_size` (when not given, this
/// host's default huge page size, `Hugepagesize` in [`HOST_MEMINFO`], as Cloud Hypervisor
/// takes its host's, and the size a multiple of the page size of the mount at
/// [`HOST_HUGETLBFS`], which Cloud Hypervisor aligns it to, with `default`
/// [`DefaultHugePage::host()`], the spec then starting with a [`NOTE`] comment that says so;
/// [`DefaultHugePage::Pinned`] pins them), else
/// transparent ones unless `thp=off`; `prefault=on` one prefault thread. `hotplug_method`,
/// `hotplugged_size`, `mergeable` and `reserve` are checked and left out. Sizes take Cloud
/// Hypervisor's `K`, `M`, `G` suffixes (binary) or none (bytes). An empty value is one not
/// given, as in Cloud Hypervisor (`thp=` leaves THP on).
///
/// With memory zones (`--memory size=0`, as Cloud Hypervisor requires), each zone's RAM is on
/// the guest NUMA node whose `memory_zones` names it (one node of all zones without `--numa`),
/// bound to its `host_numa_node`, with its backing; a zone's `hotplug_size` is the hotplug
/// slot, on its node. What a spec cannot express is refused by name: zones whose backing
/// (`shared`/`hugepages`, `hugepage_size`, `prefault`) differ, zones of one node bound to
/// different host nodes, more than one zone with `hotplug_size`, a node without memory zones,
/// a zone in no node when nodes are given, guest NUMA ids other than `0` to `N - 1`, and zones
/// not given in the order of their nodes (Cloud Hypervisor lays zones out in the order given,
/// a spec node after node).
///
/// Hot-pluggable memory (`hotplug_size` of `--memory` or of a zone, ACPI or virtio-mem) is
/// planned where Cloud Hypervisor's x86_64 layout puts it: at the 128 MiB boundary after boot
/// RAM (boot RAM is laid over `[0, 3 GiB)` then from 4 GiB), or at 4 GiB when RAM ends below
/// 3 GiB. The spec says `window_align = "128MiB"` for that (its RAM window above 4 GiB is
/// rounded up to 128 MiB and its hotplug window starts at the next 128 MiB), so planning the
/// converted spec gives the same plan. The hotplug slot is `hotplug_size` long, as Cloud
/// Hypervisor's area: an ACPI `hotplug_size` off 128 MiB is taken as it is, as Cloud
/// Hypervisor takes it (only each DIMM it plugs must be a multiple of 128 MiB).
///
/// `arch` is where Cloud Hypervisor's device area is checked: its memory is laid out as Cloud
/// Hypervisor lays it out on `arch` (on aarch64 from 1 GiB, with its hole from 4032 MiB to
/// 4 GiB); the spec itself is the same for either (it is planned on memvisor's layout of the
/// architecture it is planned for).
///
/// # Errors
/// [`Error::Import`] for an unknown option, a bad size, number or `on`/`off` value, a `file`
/// (not modelled), what a spec cannot express (above), or what Cloud Hypervisor refuses:
/// `hotplug_size=0`, a `hotplugged_size` without `hotplug_method=virtio-mem` or larger than
/// `hotplug_size`, virtio-mem sizes off its alignment (128 MiB for `hotplug_size`, 2 MiB for
/// `hotplugged_size`), `hugepage_size` without `hugepages=on`, `mergeable=on` with
/// `shared=on`; memory zones without `--memory size=0` or `size=0` without them, a zone
/// without an id, with an id used twice or starting with `__`, of size 0 or not a multiple of
/// its page, with `hotplug_size` and `hotplug_method=acpi`; a node without `guest_numa_id`, with
/// one used twice, naming an unknown zone or one another node names, a distance to an unknown
/// node or two to one node, a PCI segment other than 0 (or 0 on a node other than 0);
/// `hugepages=on` without `hugepage_size` where the host's default huge page size cannot be
/// read (the meminfo file cannot be read or has no `Hugepagesize`) or is neither 2 MiB nor 1
/// GiB, or where nothing is at [`HOST_HUGETLBFS`] (Cloud Hypervisor refuses to start), refused
/// at `hugepages`; a size of such memory that is not a multiple of the page size of the mount
/// there, refused at `size`; guest memory, laid out as Cloud Hypervisor lays it out on
/// `arch`, that leaves its 64-bit PCI device area no 8 MiB slot for the BAR of each of its
/// virtio PCI devices, the virtio-rng and virtio-console devices a guest has by default and a
/// virtio-mem device (memory must end at `2^46 - 16 MiB` at the latest, `2^46 - 24 MiB` with a
/// virtio-mem hotplug area), refused at the `size` or `hotplug_size` that crosses it.
///
/// ```
/// use memvisor_cli::spec::Arch;
/// use memvisor_cli::vmm::{DefaultHugePage, cloud_hypervisor_spec};
///
/// let host = DefaultHugePage::host();
/// let toml = cloud_hypervisor_spec("size=1G,hotplug_size=4G,shared=on", host, Arch::X86_64)?;
/// assert!(toml.contains("size = 1073741824"), "{toml}");
/// assert!(toml.contains("slot_size = 4294967296"), "{toml}");
/// assert!(cloud_hypervisor_spec("size=1G,ballon=on", host, Arch::X86_64).is_err());
///
/// let toml = cloud_hypervisor_spec(
///     "--memory size=0 --memory-zone id=mem0,size=1G id=mem1,size=2G,host_numa_node=1 \
///      --numa guest_numa_id=0,memory_zones=mem0 --numa guest_numa_id=1,memory_zones=mem1",
///     host,
///     Arch::X86_64,
/// )?;
/// assert!(toml.contains("[[numa]]\nhost_nodes = [1]\nsize = 2147483648"), "{toml}");
///
/// // 46 address bits: the RAM must end by 2^46 - 16 MiB; on aarch64 it ends 64 MiB later.
/// let size = format!("size={}", (1u64 << 46) - (16 << 20) - (1 << 30));
/// let pinned = DefaultHugePage::Pinned(2 << 20);
/// assert!(cloud_hypervisor_spec(&size, pinned, Arch::X86_64).is_ok());
/// assert!(cloud_hypervisor_spec(&size, pinned, Arch::Aarch64).is_err());
/// # Ok::<(), memvisor_cli::Error>(())
/// ```
pub fn cloud_hypervisor_spec(
    option: &str,
    default: DefaultHugePage<'_>,
    arch: Arch,
) -> Result<String> {
    if option.len() > MAX_SPEC_BYTES {
        return Err(spec_error(
            "cloud-hypervisor",
            format!(
                "the options are {} bytes long (at most {MAX_SPEC_BYTES}, as a spec)",
                option.len()
            ),
        ));
    }
    if is_json(option) {
        return cloud_hypervisor_json_spec(JSON_ORIGIN, option, default, arch);
    }
    let line = if is_command_line(option) {
        command_line(option)?
    } else {
        ChCommandLine {
            memory: Some(option),
            ..ChCommandLine::default()
        }
    };
    // In Cloud Hypervisor's order (`VmConfig::parse`): each `--numa`, then `--memory` and its
    // zones, so that of several mistakes the one it names is named.
    let nodes = line
        .numa
        .iter()
        .enumerate()
        .map(|(i, o)| ch_node_options(o, i))
        .collect::<Result<Vec<_>>>()?;
    let memory = ch_memory(line.memory.unwrap_or_default())?;
    let zones = line
        .zones
        .iter()
        .enumerate()
        .map(|(i, o)| ch_zone_options(o, i, memory.mergeable))
        .collect::<Result<Vec<_>>>()?;
    config_spec(
        ChConfig {
            memory,
            zones_given: !zones.is_empty(),
            zones,
            nodes,
            phys_bits: None,
            arch,
            // The command line imports no device option: Cloud Hypervisor's defaults.
            devices: PciDevices::defaults(),
        },
        default,
        || Ok(()),
    )
}

/// Cloud Hypervisor's memory settings, from its command line or a JSON `VmConfig`, read but
/// not checked: [`config_spec`] checks them and makes the spec, the same for both.
#[derive(Debug)]
struct ChConfig<'s> {
    memory: ChMemory<'s>,
    /// Whether a list of zones was given, even an empty one (JSON's `"zones": []`).
    zones_given: bool,
    zones: Vec<ChZoneInput<'s>>,
    nodes: Vec<ChNodeInput<'s>>,
    /// The guest's most address bits, where the configuration gives them (JSON's
    /// `cpus.max_phys_bits`, 32 to 52); else Cloud Hypervisor's default, 46.
    phys_bits: Option<i64>,
    /// The architecture Cloud Hypervisor runs on, whose layout [`device_area`] checks.
    arch: Arch,
    /// Its virtio PCI devices with a 64-bit BAR, besides a virtio-mem one.
    devices: PciDevices,
}

/// The spec TOML of Cloud Hypervisor's memory settings, checked as Cloud Hypervisor checks
/// them; what a spec cannot express is refused by name. `validate` is what Cloud Hypervisor
/// checks of the rest of the configuration once the memory is laid out and before it creates
/// its devices, whose address space ([`device_area`]) is checked after it.
fn config_spec(
    config: ChConfig<'_>,
    default: DefaultHugePage<'_>,
    validate: impl FnOnce() -> Result<()>,
) -> Result<String> {
    let ChConfig {
        memory,
        zones_given,
        zones,
        nodes,
        phys_bits,
        arch,
        devices: pci,
    } = config;
    let mut default = HugeDefault::new(default);
    check_memory(&memory)?;
    if zones_given && zones.is_empty() && memory.size != Some(0) {
        return Err(memory.place.err(
            "zones: given with a memory size other than 0 (Cloud Hypervisor refuses a list of \
             zones, even an empty one, unless the memory size is 0)",
        ));
    }
    let mut spec = Table::new();
    spec.insert("name".into(), Value::String(CH_SPEC_NAME.into()));
    // Cloud Hypervisor gives its guests the host CPU's address bits, at most `max_phys_bits`
    // (46 by default): the plan takes that most (`memvisor check` says when the host has
    // fewer).
    let phys_bits = phys_bits.unwrap_or(CH_PHYS_BITS);
    spec.insert("phys_bits".into(), Value::Integer(phys_bits));
    // Cloud Hypervisor starts hot-pluggable memory (and, after it, its device area) at the
    // 128 MiB boundary after boot RAM, or at 4 GiB: the spec's windows are aligned alike.
    spec.insert("window_align".into(), Value::String(CH_WINDOW_ALIGN.into()));
    let devices;
    if zones.is_empty() {
        let place = &memory.place;
        if memory.size == Some(0) {
            return Err(place.err(
                "size: 0 B without memory zones (Cloud Hypervisor takes size 0 to mean that \
                 memory zones give the memory, and refuses it without any)",
            ));
        }
        let (table, hotplug) = memory_table(&memory, place, &mut default)?;
        let align = ram_align(memory.hugepages, memory.hugepage_size, place, &mut default)?;
        devices = device_area(
            &[(u128::from(memory.size.unwrap_or(CH_DEFAULT_MEMORY)), align)],
            (memory.hotplug, memory.virtio_mem),
            &pci,
            phys_bits,
            arch,
            place,
            place,
        );
        spec.insert("memory".into(), Value::Table(table));
        if let Some(h) = hotplug {
            spec.insert("hotplug".into(), Value::Table(h));
        }
        // Guest nodes without zones.
        if let Some(node) = nodes.into_iter().next() {
            let node = ch_node(node)?;
            return Err(match node.zones.first() {
                Some(zone) => node.place.err(format_args!(
                    "memory_zones: unknown memory zone `{}` (there is no memory zone; Cloud \
                     Hypervisor refuses it)",
                    escape(zone)
                )),
                None => no_zones(&node.place),
            });
        }
    } else {
        if let Some(size) = memory.size.or(Some(CH_DEFAULT_MEMORY)).filter(|&s| s != 0) {
            return Err(memory.place.err(format_args!(
                "size: {} with memory zones (Cloud Hypervisor takes memory zones only with a \
                 memory size of 0; without size its command line gives 512 MiB)",
                Size(size)
            )));
        }
        devices = zones_spec(
            zones,
            nodes,
            &memory,
            &mut spec,
            &mut default,
            (phys_bits, arch, &pci),
        )?;
    }
    validate()?;
    devices?;
    spec.insert("serial".into(), Value::Table(Table::new()));
    let toml = crate::render::escape_toml(&spec.to_string());
    Ok(match default.note() {
        Some(note) => format!("{NOTE}{note}\n{toml}"),
        None => toml,
    })
}

/// How a converted spec's first lines start when they say something about the conversion
/// (one line each), to be shown where the spec is planned.
pub const NOTE: &str = "# note: ";

fn no_zones(place: &Place<'_>) -> Error {
    place
        .err("a guest NUMA node without memory_zones is not modelled (a spec's guest node has RAM)")
}

/// Refuses a `hotplugged_size` (of `--memory` or of a memory zone) without a `hotplug_size`
/// or larger than it, as Cloud Hypervisor does.
fn hotplugged_within(
    hotplugged: Option<u64>,
    hotplug: Option<u64>,
    place: &Place<'_>,
) -> Result<()> {
    let Some(plugged) = hotplugged else {
        return Ok(());
    };
    let Some(window) = hotplug else {
        return Err(
            place.err("hotplugged_size: given without hotplug_size (Cloud Hypervisor refuses it)")
        );
    };
    if plugged > window {
        return Err(place.err(format_args!(
            "hotplugged_size: {} is more than hotplug_size ({}; Cloud Hypervisor refuses it)",
            Size(plugged),
            Size(window)
        )));
    }
    Ok(())
}

/// The `[memory]` and `[hotplug]` tables of `--memory` without memory zones.
fn memory_table(
    memory: &ChMemory<'_>,
    place: &Place<'_>,
    default: &mut HugeDefault<'_>,
) -> Result<(Table, Option<Table>)> {
    // Cloud Hypervisor's memory manager refuses these when it starts, in this order.
    hotplugged_within(memory.hotplugged, memory.hotplug, place)?;
    if memory.hotplugged.is_some() && !memory.virtio_mem {
        return Err(place.err(
            "hotplugged_size: given with hotplug_method=acpi, the default (Cloud \
             Hypervisor refuses it; hotplugged_size needs hotplug_method=virtio-mem)",
        ));
    }
    if memory.hotplug == Some(0) {
        return Err(place.err(
            "hotplug_size: 0 B is not a hotplug size (Cloud Hypervisor refuses it; leave \
             hotplug_size out for none)",
        ));
    }
    if let Some(window) = memory
        .hotplug
        .filter(|w| memory.virtio_mem && !w.is_multiple_of(VIRTIO_MEM_ALIGN))
    {
        return Err(place.err(format_args!(
            "hotplug_size: {} is not a multiple of {} (Cloud Hypervisor's virtio-mem refuses it)",
            Size(window),
            Size(VIRTIO_MEM_ALIGN)
        )));
    }
    if let Some(plugged) = memory
        .hotplugged
        .filter(|p| !p.is_multiple_of(VIRTIO_MEM_BLOCK))
    {
        return Err(place.err(format_args!(
            "hotplugged_size: {} is not a multiple of {} (Cloud Hypervisor's virtio-mem refuses \
             it)",
            Size(plugged),
            Size(VIRTIO_MEM_BLOCK)
        )));
    }
    let size = memory.size.unwrap_or(CH_DEFAULT_MEMORY);
    let mut table = Table::new();
    table.insert("size".into(), integer(size, "size", place)?);
    // Cloud Hypervisor backs shared memory and explicit huge pages alike with a memfd (of
    // hugetlb pages for the latter), mapped shared.
    let backing = if memory.shared || memory.hugepages {
        "memfd"
    } else {
        "anonymous"
    };
    table.insert("backing".into(), Value::String(backing.into()));
    let (pages, _) = pages(
        memory.hugepages,
        memory.hugepage_size,
        memory.thp,
        place,
        default,
    )?;
    table.insert("huge_pages".into(), Value::String(pages.into()));
    mount_aligned(size, memory.hugepages, memory.hugepage_size, place, default)?;
    if memory.prefault {
        table.insert("prefault".into(), Value::Integer(1));
    }
    let hotplug = memory
        .hotplug
        .map(|h| hotplug_table(h, 0, place))
        .transpose()?;
    Ok((table, hotplug))
}

/// The `[hotplug]` table of a hotplug area of `size` bytes on guest node `node`: one slot of
/// that size, as long as Cloud Hypervisor's area (not rounded; its ACPI DIMMs are multiples
/// of 128 MiB, its virtio-mem regions are checked to be). With the spec's `window_align` of
/// `CH_WINDOW_ALIGN` it starts where Cloud Hypervisor starts it.
fn hotplug_table(size: u64, node: usize, place: &Place<'_>) -> Result<Table> {
    let field = "hotplug_size";
    let mut t = Table::new();
    t.insert("slots".into(), Value::Integer(1));
    t.insert("slot_size".into(), integer(size, field, place)?);
    if node != 0 {
        t.insert(
            "node".into(),
            Value::Integer(i64::try_from(node).unwrap_or(i64::MAX)),
        );
    }
    Ok(t)
}

fn integer(v: u64, field: &str, place: &Place<'_>) -> Result<Value> {
    i64::try_from(v)
        .map(Value::Integer)
        .map_err(|_| place.err(format_args!("{field}: {v} bytes is more than 2^63 - 1")))
}

/// The `[memory]`, `[[numa]]` and `[hotplug]` tables of memory zones and NUMA nodes, and
/// [`device_area`]'s verdict on them (checked later, in Cloud Hypervisor's order).
fn zones_spec(
    inputs: Vec<ChZoneInput<'_>>,
    nodes: Vec<ChNodeInput<'_>>,
    memory: &ChMemory<'_>,
    spec: &mut Table,
    default: &mut HugeDefault<'_>,
    (phys_bits, arch, pci): (i64, Arch, &PciDevices),
) -> Result<Result<()>> {
    let mut zones: Vec<ChZone<'_>> = Vec::with_capacity(inputs.len());
    let mut ids: HashMap<String, usize> = HashMap::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let zone = ch_zone(input, memory, default)?;
        if let Some(first) = ids.insert(zone.id.clone(), i) {
            return Err(zone.place.err(format_args!(
                "id: `{}` is the id of {} too (Cloud Hypervisor refuses it)",
                escape(&zone.id),
                zones[first].place.name()
            )));
        }
        zones.push(zone);
    }
    // The guest node (its index in the spec) of each zone.
    let mut node_of = vec![0usize; zones.len()];
    let mut guest_ids = Vec::new();
    if !nodes.is_empty() {
        let nodes = nodes.into_iter().map(ch_node).collect::<Result<Vec<_>>>()?;
        let owner = numa_checks(&nodes, &ids)?;
        // What a spec cannot express.
        if let Some(node) = nodes.iter().find(|n| n.zones.is_empty()) {
            return Err(no_zones(&node.place));
        }
        let mut sorted: Vec<u32> = nodes.iter().map(|n| n.id).collect();
        sorted.sort_unstable();
        if let Some((at, &id)) = sorted
            .iter()
            .enumerate()
            .find(|&(at, &id)| u64::from(id) != at as u64)
        {
            let node = nodes.iter().find(|n| n.id == id).unwrap_or(&nodes[0]);
            return Err(node.place.err(format_args!(
                "guest_numa_id: {id}: the guest NUMA ids are not 0 to {} (a spec numbers its \
                 guest nodes from 0 without gaps; {at} is missing)",
                sorted.len() - 1,
            )));
        }
        for (z, zone) in zones.iter().enumerate() {
            let Some(&n) = owner.get(zone.id.as_str()) else {
                return Err(zone.place.err(
                    "in no NUMA node's memory_zones (its memory would be in no guest NUMA node, \
                     which a spec cannot express)",
                ));
            };
            node_of[z] = usize::try_from(nodes[n].id).unwrap_or(usize::MAX);
        }
        guest_ids = sorted;
    }
    let count = guest_ids.len().max(1);
    // Zones are laid out in the order given; a spec lays out node after node.
    for z in 1..zones.len() {
        if node_of[z] < node_of[z - 1] {
            return Err(zones[z].place.err(format_args!(
                "on guest node {}, it comes after {} on guest node {}: Cloud Hypervisor lays \
                 zones out in the order given and a spec lays out its guest nodes in order, so \
                 give the zones in the order of their nodes",
                node_of[z],
                zones[z - 1].place.name(),
                node_of[z - 1]
            )));
        }
    }
    // `config_spec` calls this only with zones (without, it makes `[memory]` itself).
    let first = &zones[0];
    let mut hotplug: Option<(usize, &ChZone<'_>)> = None;
    let mut sizes = vec![0u64; count];
    let mut hosts: Vec<Option<(usize, Option<u32>)>> = vec![None; count];
    for (z, zone) in zones.iter().enumerate() {
        let place = &zone.place;
        if zone.backing != first.backing {
            let show = |(backing, pages, prefault): (&str, &str, bool)| {
                format!(
                    "{backing}, {pages} pages{}",
                    if prefault { ", prefaulted" } else { "" }
                )
            };
            return Err(place.err(format_args!(
                "its backing ({}) differs from {}'s ({}): a spec backs all guest RAM alike \
                 (per-zone shared, hugepages, hugepage_size and prefault are not modelled)",
                show(zone.backing),
                first.place.name(),
                show(first.backing)
            )));
        }
        let node = node_of[z];
        match hosts[node] {
            None => hosts[node] = Some((z, zone.host_node)),
            Some((other, host)) if host != zone.host_node => {
                let show = |h: Option<u32>| h.map_or_else(|| "none".to_owned(), |h| h.to_string());
                return Err(place.err(format_args!(
                    "host_numa_node: {} differs from {}'s ({}) on the same guest node {node}: a \
                     spec binds all of a guest node's memory alike",
                    show(zone.host_node),
                    zones[other].place.name(),
                    show(host)
                )));
            }
            Some(_) => {}
        }
        sizes[node] = sizes[node].checked_add(zone.size).ok_or_else(|| {
            place.err("size: the zones of its guest node add up to 2^64 bytes or more")
        })?;
        if zone.hotplug.is_some() {
            if let Some((other, _)) = hotplug {
                return Err(place.err(format_args!(
                    "hotplug_size: {} has one too: a spec has one hotplug window, on one guest \
                     node (hotplug of more than one zone is not modelled)",
                    zones[other].place.name()
                )));
            }
            hotplug = Some((z, zone));
        }
    }
    let mut table = Table::new();
    let (backing, pages, prefault) = first.backing;
    table.insert("backing".into(), Value::String(backing.into()));
    table.insert("huge_pages".into(), Value::String(pages.into()));
    if prefault {
        table.insert("prefault".into(), Value::Integer(1));
    }
    spec.insert("memory".into(), Value::Table(table));
    let mut nodes = Vec::with_capacity(count);
    for (size, host) in sizes.iter().zip(&hosts) {
        let mut t = Table::new();
        // The node's first zone is where a total too large is shown.
        let place = host.map_or(&first.place, |(z, _)| &zones[z].place);
        t.insert("size".into(), integer(*size, "size", place)?);
        if let Some((_, Some(h))) = host {
            t.insert(
                "host_nodes".into(),
                Value::Array(vec![Value::Integer(i64::from(*h))]),
            );
        }
        nodes.push(Value::Table(t));
    }
    spec.insert("numa".into(), Value::Array(nodes));
    if let Some((z, zone)) = hotplug {
        let size = zone.hotplug.unwrap_or_default();
        spec.insert(
            "hotplug".into(),
            Value::Table(hotplug_table(size, node_of[z], &zone.place)?),
        );
    }
    // Zones are laid out one after another, the last one's memory ending boot RAM.
    let last = zones.last().unwrap_or(first);
    let laid: Vec<(u128, u64)> = zones
        .iter()
        .map(|z| (u128::from(z.size), z.align))
        .collect();
    Ok(device_area(
        &laid,
        // A zone's hotplug area is always virtio-mem.
        (hotplug.and_then(|(_, zone)| zone.hotplug), true),
        pci,
        phys_bits,
        arch,
        &last.place,
        hotplug.map_or(&last.place, |(_, zone)| &zone.place),
    ))
}

/// What Cloud Hypervisor checks of its NUMA nodes, in its order; gives the node (its index in
/// `nodes`) of each zone a node names.
fn numa_checks<'a>(
    nodes: &'a [ChNode<'_>],
    ids: &HashMap<String, usize>,
) -> Result<HashMap<&'a str, usize>> {
    let err = |i: usize, message: String| nodes[i].place.err(message);
    let mut owner: HashMap<&str, usize> = HashMap::new();
    let mut segment_zero: Option<usize> = None;
    for (i, node) in nodes.iter().enumerate() {
        for zone in &node.zones {
            if let Some(other) = owner.insert(zone.as_str(), i) {
                return Err(err(
                    i,
                    format!(
                        "memory_zones: zone `{}` is in {} too (Cloud Hypervisor refuses it)",
                        escape(zone),
                        nodes[other].place.name()
                    ),
                ));
            }
        }
        // With one PCI segment (more are refused as not modelled: `--platform` is not
        // imported, a JSON `platform.num_pci_segments` above 1 refused), there is segment 0, on
        // guest node 0.
        for &(first, last) in &node.segments {
            if let Some(cut) = [first, last].into_iter().find(|&s| s > u64::from(u16::MAX)) {
                return Err(err(
                    i,
                    format!(
                        "pci_segments: {cut} is more than 65535 (Cloud Hypervisor would keep \
                         only its low 16 bits)"
                    ),
                ));
            }
            if first != 0 || last != 0 {
                let bad = if first != 0 { first } else { last };
                return Err(err(
                    i,
                    format!(
                        "pci_segments: there is no PCI segment {bad} (there is one, 0: more, \
                         Cloud Hypervisor's platform num_pci_segments, are not modelled)"
                    ),
                ));
            }
            if node.id != 0 {
                return Err(err(
                    i,
                    "pci_segments: segment 0 is on guest node 0 (Cloud Hypervisor refuses it \
                     elsewhere)"
                        .to_owned(),
                ));
            }
            if let Some(other) = segment_zero.replace(i) {
                return Err(err(
                    i,
                    format!(
                        "pci_segments: segment 0 is in {} too (Cloud Hypervisor refuses it)",
                        nodes[other].place.name()
                    ),
                ));
            }
        }
    }
    let mut seen: HashMap<u32, usize> = HashMap::new();
    let known: HashSet<u64> = nodes.iter().map(|n| u64::from(n.id)).collect();
    for (i, node) in nodes.iter().enumerate() {
        if let Some(other) = seen.insert(node.id, i) {
            return Err(err(
                i,
                format!(
                    "guest_numa_id: {} is {}'s too (Cloud Hypervisor refuses it)",
                    node.id,
                    nodes[other].place.name()
                ),
            ));
        }
        if let Some(zone) = node.zones.iter().find(|z| !ids.contains_key(z.as_str())) {
            return Err(err(
                i,
                format!(
                    "memory_zones: unknown memory zone `{}` (Cloud Hypervisor refuses it)",
                    escape(zone)
                ),
            ));
        }
        let mut to = HashSet::new();
        for &(dest, distance) in &node.distances {
            if !known.contains(&dest) {
                return Err(err(
                    i,
                    format!(
                        "distances: unknown destination node {dest} (Cloud Hypervisor refuses it)"
                    ),
                ));
            }
            if !to.insert(dest) {
                return Err(err(
                    i,
                    format!(
                        "distances: node {dest} is given two distances (Cloud Hypervisor \
                         refuses it)"
                    ),
                ));
            }
            if distance > u64::from(u8::MAX) {
                return Err(err(
                    i,
                    format!(
                        "distances: {distance} to node {dest} is more than 255 (Cloud \
                         Hypervisor would keep only its low 8 bits)"
                    ),
                ));
            }
        }
    }
    Ok(owner)
}

/// The items of a Cloud Hypervisor option string, split as Cloud Hypervisor splits them: the
/// string is trimmed, and a comma inside double quotes or brackets does not split; unbalanced
/// quotes or brackets are refused.
fn ch_items(option: &str) -> std::result::Result<Vec<&str>, &'static str> {
    let option = option.trim();
    let mut items = Vec::new();
    let (mut start, mut brackets, mut quoted) = (0, 0usize, false);
    for (at, c) in option.char_indices() {
        match c {
            '"' => quoted = !quoted,
            _ if quoted => {}
            '[' => brackets += 1,
            ']' => {
                brackets = brackets
                    .checked_sub(1)
                    .ok_or("unbalanced quotes or brackets")?;
            }
            ',' if brackets == 0 => {
                items.push(&option[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    if quoted || brackets != 0 {
        return Err("unbalanced quotes or brackets");
    }
    items.push(&option[start..]);
    Ok(items)
}

/// A value without its double quotes, as Cloud Hypervisor reads a quoted value (`"1G"` is
/// `1G`; `""` inside quotes is a quote).
fn ch_dequote(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let (mut previous, mut quoted) = ('\0', false);
    for c in value.chars() {
        if c == '"' {
            if previous == '"' && !quoted {
                out.push('"');
            }
            quoted = !quoted;
        } else {
            out.push(c);
        }
        previous = c;
    }
    out
}

/// A Cloud Hypervisor size: digits with an optional `K`, `M` or `G` (binary), white space
/// around it ignored.
fn ch_size(text: &str) -> std::result::Result<u64, SizeError> {
    let text = text.trim();
    let (digits, shift) = match text.as_bytes().last() {
        Some(b'K') => (&text[..text.len() - 1], 10),
        Some(b'M') => (&text[..text.len() - 1], 20),
        Some(b'G') => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SizeError::BadNumber(escape(text).into_owned()));
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|v| v.checked_mul(1 << shift))
        .ok_or_else(|| SizeError::TooLarge(text.to_owned()))
}

fn spec_error(origin: &str, message: String) -> Error {
    Error::Import {
        origin: origin.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{BackingKind, PageKind, VmSpec};

    /// The huge page size tests take as the host's default, whatever the host.
    const PINNED: DefaultHugePage<'static> = DefaultHugePage::Pinned(2 << 20);

    fn spec_of(options: &str) -> VmSpec {
        let toml = cloud_hypervisor_spec(options, PINNED, Arch::X86_64)
            .unwrap_or_else(|e| panic!("{options}: {e}"));
        crate::spec::parse(crate::spec::Source {
            origin: "ch.toml",
            text: &toml,
        })
        .unwrap_or_else(|e| panic!("{options}: {e}\n{toml}"))
    }

    #[test]
    fn a_zone_taking_all_the_whole_pages_below_the_hole_sends_the_next_zones_past_it() {
        const MIB: u128 = 1 << 20;
        const GIB: u128 = 1 << 30;
        let ram = ChRam::of(Arch::Aarch64);
        // 2 GiB of 1 GiB pages takes all the whole 1 GiB pages of the 3008 MiB below the hole:
        // Cloud Hypervisor counts that RAM region used up (`ram_region_consumed`), so a zone of
        // 4 KiB pages after it runs from 4 GiB, not in the 960 MiB left below the hole.
        assert_eq!(
            ram.end_of(&[(2 * GIB, 1 << 30), (512 * MIB, 4096)]),
            4 * GIB + 512 * MIB
        );
        // Short of them, the next zone takes the rest below the hole in its own pages.
        assert_eq!(ram.end_of(&[(GIB, 1 << 30), (512 * MIB, 4096)]), 4 * GIB);
        assert_eq!(
            ram.end_of(&[(GIB, 1 << 30), (2 * GIB, 4096)]),
            4 * GIB + 2 * GIB - 1984 * MIB
        );
        // On x86_64, 3 GiB of 4 KiB pages fills `[0, 3 GiB)` exactly.
        let ram = ChRam::of(Arch::X86_64);
        assert_eq!(ram.end_of(&[(3 * GIB, 4096), (GIB, 4096)]), 5 * GIB);
        assert_eq!(ram.end_of(&[(3 * GIB, 4096)]), 4 * GIB);
    }

    fn error_of(options: &str) -> String {
        match cloud_hypervisor_spec(options, PINNED, Arch::X86_64) {
            Ok(toml) => panic!("{options}: taken as\n{toml}"),
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{options}: {e}");
                e.to_string()
            }
        }
    }

    fn nodes(spec: &VmSpec) -> Vec<(u64, Vec<u32>)> {
        spec.nodes
            .iter()
            .map(|n| (n.size, n.host_nodes.clone()))
            .collect()
    }

    const ZONE: &str = "--memory size=0 --memory-zone";

    #[test]
    fn cloud_hypervisor_zones_without_numa_nodes_are_one_guest_node() {
        let spec = spec_of(&format!("{ZONE} id=a,size=1G id=b,size=512M"));
        assert_eq!(nodes(&spec), [(1536 << 20, vec![])]);
        assert_eq!(spec.memory.backing, BackingKind::Anonymous);
        assert_eq!(spec.memory.pages, PageKind::Transparent);
        assert!(spec.hotplug.is_none());
        // A zone's size left out is Cloud Hypervisor's default, 512 MiB.
        let spec = spec_of(&format!("{ZONE} id=a"));
        assert_eq!(nodes(&spec), [(512 << 20, vec![])]);
        // Repeated options, `--option=value` and quotes, as Cloud Hypervisor takes them.
        let spec = spec_of(
            "--memory=size=0 --memory-zone=id=\"a\",size=\"1G\" --memory-zone id=b,size=1G \
             --numa=guest_numa_id=0,memory_zones=[a,b]",
        );
        assert_eq!(nodes(&spec), [(2 << 30, vec![])]);
        // As Cloud Hypervisor's option parser, a key given again takes its last value, which
        // alone is read.
        let spec = spec_of("size=1G,shared=maybe,shared=on,size=2G");
        assert_eq!(spec.ram(), 2 << 30);
        assert_eq!(spec.memory.backing, BackingKind::Memfd);
    }

    #[test]
    fn cloud_hypervisor_zone_options_give_the_backing() {
        for (options, backing, pages, prefault) in [
            (
                "id=a,size=1G",
                BackingKind::Anonymous,
                PageKind::Transparent,
                0,
            ),
            (
                "id=a,size=1G,shared=on",
                BackingKind::Memfd,
                PageKind::Transparent,
                0,
            ),
            (
                "id=a,size=1G,hugepages=on",
                BackingKind::Memfd,
                PageKind::Huge2M,
                0,
            ),
            (
                "id=a,size=1G,hugepages=on,hugepage_size=1G",
                BackingKind::Memfd,
                PageKind::Huge1G,
                0,
            ),
            (
                "id=a,size=1G,prefault=on",
                BackingKind::Anonymous,
                PageKind::Transparent,
                1,
            ),
            (
                "id=a,size=1G,reserve=on,mergeable=on",
                BackingKind::Anonymous,
                PageKind::Transparent,
                0,
            ),
        ] {
            let spec = spec_of(&format!("{ZONE} {options}"));
            assert_eq!(spec.memory.backing, backing, "{options}");
            assert_eq!(spec.memory.pages, pages, "{options}");
            assert_eq!(spec.memory.prefault_threads, prefault, "{options}");
        }
        // `--memory thp=off` applies to the zones.
        let spec = spec_of("--memory size=0,thp=off --memory-zone id=a,size=1G");
        assert_eq!(spec.memory.pages, PageKind::Base);
        let spec = spec_of(&format!("{ZONE} id=a,size=1G,host_numa_node=3"));
        assert_eq!(nodes(&spec), [(1 << 30, vec![3])]);
        let spec = spec_of(
            "--memory size=0,hotplug_method=virtio-mem --memory-zone id=a,size=1G \
             id=b,size=1G,hotplug_size=4G,hotplugged_size=2G \
             --numa guest_numa_id=0,memory_zones=a --numa guest_numa_id=1,memory_zones=b",
        );
        let hotplug = spec.hotplug.as_ref().unwrap();
        assert_eq!(
            (hotplug.slots, hotplug.slot_size, hotplug.node),
            (1, 4 << 30, 1)
        );
    }

    #[test]
    fn cloud_hypervisor_numa_nodes_take_their_zones() {
        let spec = spec_of(
            "--memory size=0 --memory-zone id=a,size=1G,host_numa_node=1 \
             id=b,size=1G,host_numa_node=1 id=c,size=2G,host_numa_node=0 \
             --numa guest_numa_id=1,memory_zones=c,cpus=[2-3,5],distances=[0@20,1@10] \
             guest_numa_id=0,memory_zones=[a,b],cpus=0,pci_segments=[0],distances=[1@20]",
        );
        assert_eq!(nodes(&spec), [(2 << 30, vec![1]), (2 << 30, vec![0])]);
    }

    #[test]
    fn cloud_hypervisor_zone_and_numa_mistakes_are_refused_as_it_refuses_them() {
        let virtio = "--memory size=0,hotplug_method=virtio-mem --memory-zone";
        for (options, expected) in [
            // Zones need --memory size=0, and size=0 needs zones.
            (
                "--memory-zone id=a,size=1G",
                "--memory: size: 512 MiB with memory zones",
            ),
            (
                "--memory size=1G --memory-zone id=a",
                "size: 1 GiB with memory zones",
            ),
            ("size=0", "size: 0 B without memory zones"),
            ("--memory size=0", "size: 0 B without memory zones"),
            // Zones.
            (&format!("{ZONE} size=1G"), "zone 1: id: missing"),
            (&format!("{ZONE} id=,size=1G"), "zone 1: id: missing"),
            (
                &format!("{ZONE} id=a id=a"),
                "zone 2 (`a`): id: `a` is the id of zone 1 (`a`) too",
            ),
            (&format!("{ZONE} id=__a"), "id: an id starting with `__`"),
            (
                &format!("{ZONE} id=a,size=0"),
                "zone 1 (`a`): size: 0 B is not a memory zone's size",
            ),
            (
                &format!("{ZONE} id=a,size=1000"),
                "size: 1000 B is not a multiple of the 4 KiB page",
            ),
            (
                &format!("{ZONE} id=a,size=1M,hugepages=on"),
                "size: 1 MiB is not a multiple of the 2 MiB page",
            ),
            (
                &format!("{ZONE} id=a,hugepage_size=2M"),
                "hugepage_size: given without hugepages=on",
            ),
            (
                &format!("{ZONE} id=a,hugepages=on,hugepage_size=3M"),
                "hugepage_size: 3 MiB is not a power of two",
            ),
            (
                &format!("{ZONE} id=a,hugepages=on,hugepage_size=4M"),
                "4 MiB huge pages are not supported",
            ),
            (
                &format!("{ZONE} id=a,shared=on,mergeable=on"),
                "mergeable: on with shared on",
            ),
            (
                "--memory size=0,mergeable=on --memory-zone id=a,shared=on",
                "mergeable: on with shared on",
            ),
            (
                &format!("{ZONE} id=a,file=/dev/shm/x"),
                "file: memory backed by a file is not modelled",
            ),
            (&format!("{ZONE} id=a,bogus=1"), "unknown option `bogus`"),
            (
                &format!("{ZONE} id=a,prefault=yes"),
                "prefault: `yes` is not on or off",
            ),
            (
                &format!("{ZONE} id=a,host_numa_node=-1"),
                "host_numa_node: `-1` is not a whole number",
            ),
            (
                &format!("{ZONE} id=a,host_numa_node=1024"),
                "host node 1024",
            ),
            (
                &format!("{ZONE} id=a,size=1X"),
                "size: `1X` is not a number",
            ),
            (
                &format!("{ZONE} id=a,hotplug_size=1G"),
                "needs --memory hotplug_method=virtio-mem",
            ),
            (
                &format!("{virtio} id=a,hotplug_size=0"),
                "hotplug_size: 0 B is not a hotplug size",
            ),
            (
                &format!("{virtio} id=a,hotplug_size=64M"),
                "64 MiB is not a multiple of 128 MiB",
            ),
            (
                &format!("{virtio} id=a,hotplugged_size=1G"),
                "hotplugged_size: given without hotplug_size",
            ),
            (
                &format!("{virtio} id=a,hotplug_size=1G,hotplugged_size=2G"),
                "hotplugged_size: 2 GiB is more than hotplug_size",
            ),
            (
                &format!("{virtio} id=a,hotplug_size=1G,hotplugged_size=1M"),
                "hotplugged_size: 1 MiB is not a multiple of 2 MiB",
            ),
            // NUMA nodes.
            (
                &format!("{ZONE} id=a --numa memory_zones=a"),
                "guest_numa_id: missing",
            ),
            (
                &format!("{ZONE} id=a --numa guest_numa_id=x,memory_zones=a"),
                "`x` is not a whole number",
            ),
            (
                &format!("{ZONE} id=a --numa guest_numa_id=0"),
                "neither cpus, memory_zones nor device_id",
            ),
            (
                &format!("{ZONE} id=a --numa guest_numa_id=0,memory_zones=a,device_id=d"),
                "device_id: given with cpus or memory_zones",
            ),
            (
                &format!("{ZONE} id=a --numa guest_numa_id=0,memory_zones=b"),
                "unknown memory zone `b`",
            ),
            (
                &format!("{ZONE} id=a --numa guest_numa_id=0,memory_zones=[]"),
                "unknown memory zone ``",
            ),
            (
                &format!("{ZONE} id=a --numa guest_numa_id=0,memory_zones=[a,a]"),
                "zone `a` is in node 1 (guest_numa_id=0) too",
            ),
            (
                &format!(
                    "{ZONE} id=a id=b --numa guest_numa_id=0,memory_zones=a guest_numa_id=1,memory_zones=a"
                ),
                "node 2 (guest_numa_id=1): memory_zones: zone `a` is in node 1",
            ),
            (
                &format!(
                    "{ZONE} id=a id=b --numa guest_numa_id=0,memory_zones=a guest_numa_id=0,memory_zones=b"
                ),
                "guest_numa_id: 0 is node 1 (guest_numa_id=0)'s too",
            ),
            (
                &format!("{ZONE} id=a --numa guest_numa_id=0,memory_zones=a,distances=[1@20]"),
                "distances: unknown destination node 1",
            ),
            (
                &format!("{ZONE} id=a --numa guest_numa_id=0,memory_zones=a,distances=[0@10,0@10]"),
                "distances: node 0 is given two distances",
            ),
            (
                &format!("{ZONE} id=a --numa guest_numa_id=0,memory_zones=a,distances=[0@256]"),
                "distances: 256 to node 0 is more than 255",
            ),
            (
                &format!("{ZONE} id=a --numa guest_numa_id=0,memory_zones=a,distances=0@10"),
                "distances: `0@10` is not a list",
            ),
            (
                &format!("{ZONE} id=a --numa guest_numa_id=0,memory_zones=a,cpus=[3-1]"),
                "cpus: `[3-1]` is not a list",
            ),
            (
                &format!("{ZONE} id=a --numa guest_numa_id=0,memory_zones=a,pci_segments=[1]"),
                "there is no PCI segment 1",
            ),
            (
                &format!("{ZONE} id=a --numa guest_numa_id=0,memory_zones=a,pci_segments=[0-1]"),
                "there is no PCI segment 1",
            ),
            (
                &format!(
                    "{ZONE} id=a id=b --numa guest_numa_id=0,memory_zones=a guest_numa_id=1,memory_zones=b,pci_segments=0"
                ),
                "segment 0 is on guest node 0",
            ),
            (
                &format!("{ZONE} id=a --numa guest_numa_id=0,memory_zones=a,sgx_epc_sections=[x]"),
                "unknown option `sgx_epc_sections`",
            ),
            // What a spec cannot express, by name.
            (
                &format!("{ZONE} id=a,shared=on id=b"),
                "zone 2 (`b`): its backing (anonymous, transparent pages) differs from zone 1 (`a`)'s",
            ),
            (
                &format!("{ZONE} id=a,prefault=on id=b,prefault=on id=c"),
                "zone 3 (`c`): its backing",
            ),
            (
                &format!("{ZONE} id=a,host_numa_node=0 id=b,host_numa_node=1"),
                "host_numa_node: 1 differs from zone 1 (`a`)'s (0)",
            ),
            (
                &format!("{ZONE} id=a,host_numa_node=0 id=b"),
                "host_numa_node: none differs from zone 1",
            ),
            (
                &format!("{virtio} id=a,hotplug_size=1G id=b,hotplug_size=1G"),
                "zone 2 (`b`): hotplug_size: zone 1 (`a`) has one too",
            ),
            (
                &format!("{ZONE} id=a id=b --numa guest_numa_id=0,memory_zones=a"),
                "zone 2 (`b`): in no NUMA node's memory_zones",
            ),
            (
                &format!(
                    "{ZONE} id=a --numa guest_numa_id=0,memory_zones=a guest_numa_id=1,cpus=1"
                ),
                "node 2 (guest_numa_id=1): a guest NUMA node without memory_zones",
            ),
            (
                &format!(
                    "{ZONE} id=a --numa guest_numa_id=0,memory_zones=a guest_numa_id=1,device_id=v"
                ),
                "a guest NUMA node without memory_zones",
            ),
            (
                "--memory size=1G --numa guest_numa_id=0,cpus=0",
                "a guest NUMA node without memory_zones",
            ),
            (
                "--memory size=1G --numa guest_numa_id=0,memory_zones=a",
                "unknown memory zone `a` (there is no memory zone",
            ),
            (
                &format!(
                    "{ZONE} id=a id=b --numa guest_numa_id=0,memory_zones=a guest_numa_id=2,memory_zones=b"
                ),
                "guest_numa_id: 2: the guest NUMA ids are not 0 to 1",
            ),
            (
                &format!(
                    "{ZONE} id=a id=b --numa guest_numa_id=1,memory_zones=a guest_numa_id=0,memory_zones=b"
                ),
                "zone 2 (`b`): on guest node 0, it comes after zone 1 (`a`) on guest node 1",
            ),
            // The command line.
            ("--memory size=1G --cpus boot=2", "`--cpus` is not imported"),
            (
                "--memory size=1G size=2G",
                "`size=2G` is not the value of an option",
            ),
            ("--memory size=1G --memory size=2G", "--memory given twice"),
            ("--memory", "--memory needs a value"),
            (
                "--memory size=0 --memory-zone --numa x",
                "--memory-zone needs a value",
            ),
            ("--memory size=0 --memory-zone id=\"a", "unbalanced quotes"),
        ] {
            let e = error_of(options);
            assert!(e.contains(expected), "{options}: {e}");
        }
    }

    #[test]
    fn cloud_hypervisor_options_are_bounded() {
        let zones = vec!["id=a"; MAX_MEMORY_ZONES + 1].join(" ");
        let e = error_of(&format!("{ZONE} {zones}"));
        assert!(e.contains("more than 1024 memory zones"), "{e}");
        let nodes = vec!["guest_numa_id=0,cpus=0"; MAX_GUEST_NODES + 1].join(" ");
        let e = error_of(&format!("{ZONE} id=a --numa {nodes}"));
        assert!(e.contains("more than 64 NUMA nodes"), "{e}");
        let e = error_of(&"x".repeat(MAX_SPEC_BYTES + 1));
        assert!(e.contains("bytes long (at most 1048576"), "{e}");
        // Ranges are checked, never expanded.
        let spec = spec_of(&format!(
            "{ZONE} id=a --numa guest_numa_id=0,memory_zones=a,cpus=[0-18446744073709551615]"
        ));
        assert_eq!(spec.nodes.len(), 1);
        // Zones adding up past 2^64 are refused, not wrapped.
        let e = error_of(&format!(
            "{ZONE} id=a,size=17179869180G id=b,size=17179869180G"
        ));
        assert!(e.contains("add up to 2^64 bytes or more"), "{e}");
        let e = error_of(&format!("{ZONE} id=a,size=9007199254740992K"));
        assert!(e.contains("is more than 2^63 - 1"), "{e}");
    }

    #[test]
    fn cloud_hypervisor_options_map_to_spec() {
        let spec = spec_of(
            "size=512M,hugepages=on,hugepage_size=2M,prefault=on,hotplug_method=virtio-mem,hotplug_size=2G",
        );
        assert_eq!(spec.ram(), 512 << 20);
        assert_eq!(spec.memory.pages, PageKind::Huge2M);
        assert_eq!(spec.memory.prefault_threads, 1);
        assert_eq!(spec.hotplug.as_ref().map(|h| h.slot_size), Some(2 << 30));
        let spec = spec_of("size=1073741824,thp=off");
        assert_eq!(spec.memory.pages, PageKind::Base);
        // As Cloud Hypervisor reads them: values trimmed, on/off in any case, empty is off.
        let spec = spec_of("size= 1G ,thp=OFF,shared=,prefault=On");
        assert_eq!(spec.ram(), 1 << 30);
        assert_eq!(spec.memory.pages, PageKind::Base);
        assert_eq!(spec.memory.prefault_threads, 1);
        assert!(
            cloud_hypervisor_spec("size=1G,shared=", PINNED, Arch::X86_64)
                .unwrap()
                .contains("anonymous")
        );
        assert!(
            cloud_hypervisor_spec("size=1G,shared=TRUE", PINNED, Arch::X86_64)
                .unwrap()
                .contains("memfd")
        );
    }

    #[test]
    fn cloud_hypervisor_hotplug_options_refused_as_cloud_hypervisor_refuses_them() {
        for (option, expected) in [
            (
                "size=1G,hotplug_size=0",
                "hotplug_size: 0 B is not a hotplug size",
            ),
            (
                "size=1G,hotplug_method=virtio-mem,hotplugged_size=1G",
                "hotplugged_size: given without hotplug_size",
            ),
            (
                "size=1G,hotplug_method=virtio-mem,hotplug_size=1G,hotplugged_size=2G",
                "hotplugged_size: 2 GiB is more than hotplug_size (1 GiB;",
            ),
            (
                "size=1G,hotplug_size=1G,hotplugged_size=512M",
                "hotplugged_size: given with hotplug_method=acpi",
            ),
            (
                "size=1G,hotplug_method=ACPI,hotplug_size=1G,hotplugged_size=0",
                "hotplugged_size: given with hotplug_method=acpi",
            ),
            // Its virtio-mem device takes a region of 128 MiB blocks, plugged 2 MiB at a time.
            (
                "size=1G,hotplug_method=virtio-mem,hotplug_size=64M",
                "hotplug_size: 64 MiB is not a multiple of 128 MiB",
            ),
            (
                "size=1G,hotplug_method=virtio-mem,hotplug_size=1G,hotplugged_size=1M",
                "hotplugged_size: 1 MiB is not a multiple of 2 MiB",
            ),
        ] {
            let e = cloud_hypervisor_spec(option, PINNED, Arch::X86_64)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{option}: {e}");
        }
        // What Cloud Hypervisor takes: an empty value is none given, the last value counts.
        for option in [
            "size=1G,hotplug_size=",
            "size=1G,hotplug_size=1G,hotplugged_size=",
            "size=1G,hotplug_size=0,hotplug_size=1G",
            "size=1G,hotplug_method=virtio-mem,hotplug_size=1G,hotplugged_size=1G",
            "size=1G,hotplug_method=\"Virtio-Mem\",hotplug_size=1G,hotplugged_size=0",
            "size=1G,hotplug_method=virtio-mem,hotplug_size=384M,hotplugged_size=6M",
            "size=1G,hotplug_size=64M",
            "size=1G,hotplug_method=acpi,hotplug_size=1G,hotplug_method=virtio-mem,\
             hotplugged_size=512M",
        ] {
            cloud_hypervisor_spec(option, PINNED, Arch::X86_64)
                .unwrap_or_else(|e| panic!("{option}: {e}"));
        }
    }

    #[test]
    fn cloud_hypervisor_huge_pages_are_a_memfd() {
        // Cloud Hypervisor backs explicit huge pages with a hugetlb memfd, mapped shared.
        for option in [
            "size=1G,hugepages=on",
            "size=1G,hugepages=on,hugepage_size=1G",
            "size=1G,hugepages=on,shared=on",
        ] {
            let spec = spec_of(option);
            assert_eq!(spec.memory.backing, BackingKind::Memfd, "{option}");
        }
        let spec = spec_of("size=1G,hugepages=off");
        assert_eq!(spec.memory.backing, BackingKind::Anonymous);
    }

    #[test]
    fn cloud_hypervisor_bad_options_are_refused() {
        for (option, expected) in [
            ("size=1X", "size: `1X` is not a number"),
            ("size=1G,shared=maybe", "shared: `maybe` is not on or off"),
            (
                "size=1G,hugepages=on,hugepage_size=4M",
                "4 MiB huge pages are not supported",
            ),
            ("size=99999999999G", "does not fit in 64 bits"),
            // Cloud Hypervisor's own reader takes these (a sign, several suffixes stripped):
            // refused rather than guessed at.
            ("size=+1G", "size: `+1G` is not a number"),
            ("size=1GG", "size: `1GG` is not a number"),
            ("size=1KMG", "size: `1KMG` is not a number"),
            ("size=1g", "size: `1g` is not a number"),
            ("size", "`size` is not key=value"),
            ("size=1G,,shared=on", "`` is not key=value"),
            ("size=1G,", "`` is not key=value"),
            (
                "size=1G,hugepage_size=2M",
                "hugepage_size: given without hugepages=on",
            ),
            (
                "size=1G,mergeable=on,shared=on",
                "mergeable: on with shared on",
            ),
        ] {
            let e = cloud_hypervisor_spec(option, PINNED, Arch::X86_64)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{option}: {e}");
        }
    }

    /// As Cloud Hypervisor: `size` left out (or empty) is its default, 512 MiB, and an empty
    /// option string is every default; `reserve` is taken (it does not change the map);
    /// `file`, which it takes, is refused by name as not modelled rather than as unknown.
    #[test]
    fn cloud_hypervisor_size_defaults_to_512_mib_and_reserve_is_taken() {
        for (option, ram) in [
            ("", 512 << 20),
            ("  ", 512 << 20),
            ("hotplug_size=1G", 512 << 20),
            ("size=", 512 << 20),
            ("reserve=on", 512 << 20),
            ("size=1G,reserve=off", 1 << 30),
        ] {
            assert_eq!(spec_of(option).ram(), ram, "{option:?}");
        }
        let e = cloud_hypervisor_spec("size=1G,reserve=maybe", PINNED, Arch::X86_64).unwrap_err();
        assert!(
            e.to_string().contains("reserve: `maybe` is not on or off"),
            "{e}"
        );
        let e = cloud_hypervisor_spec("size=1G,file=/srv/mem", PINNED, Arch::X86_64).unwrap_err();
        assert!(
            e.to_string()
                .contains("file: memory backed by a file is not modelled"),
            "{e}"
        );
    }

    /// The hotplug slot's `(start, size)` in the plan of `options`.
    fn hotplug_at(options: &str) -> (u64, u64) {
        let toml = cloud_hypervisor_spec(options, PINNED, Arch::X86_64)
            .unwrap_or_else(|e| panic!("{options}: {e}"));
        let src = crate::spec::Source {
            origin: "ch.toml",
            text: &toml,
        };
        let spec = crate::spec::parse(src).unwrap_or_else(|e| panic!("{options}: {e}\n{toml}"));
        let plan = crate::plan::plan(&spec, src).unwrap_or_else(|e| panic!("{options}: {e}"));
        let [slot] = plan.hotplug.as_slice() else {
            panic!("{options}: {:?}", plan.hotplug);
        };
        (slot.span.start, slot.span.size)
    }

    /// Cloud Hypervisor's x86_64 placement of hot-pluggable memory, written out from its
    /// code (vmm/src/memory_manager.rs, arch/src/x86_64): boot RAM is laid over `[0, 3 GiB)`
    /// (`MEM_32BIT_RESERVED_START`) then from 4 GiB (`RAM_64BIT_START`,
    /// `arch_memory_regions`); the hotplug area starts at `MemoryManager::start_addr(last RAM
    /// address, true)`: the last address with its low 27 bits set, plus one (the next 128 MiB
    /// boundary), or 4 GiB when the last address is below 3 GiB.
    fn ch_hotplug_start(ram: u64) -> u64 {
        let last = if ram <= 3 << 30 {
            ram - 1
        } else {
            (4 << 30) + (ram - (3 << 30)) - 1
        };
        if last < 3 << 30 {
            4 << 30
        } else {
            (last | ((128 << 20) - 1)) + 1
        }
    }

    /// Where Cloud Hypervisor puts hot-pluggable memory: at `ch_hotplug_start` of the boot
    /// RAM. ACPI hotplug (`--memory hotplug_size`) plugs its DIMMs from there, and its area is
    /// `hotplug_size` long, not rounded (`start_of_device_area` grows by it); a virtio-mem
    /// region (`hotplug_method=virtio-mem`, of `--memory` or of a zone) starts there rounded up
    /// to `VIRTIO_MEM_ALIGN_SIZE`, 128 MiB, which it already is, and is `hotplug_size` long
    /// (a multiple of 128 MiB, or its virtio-mem device refuses it). The numbers below are
    /// worked out by hand from those rules.
    #[test]
    fn cloud_hypervisor_hotplug_is_where_cloud_hypervisor_puts_it() {
        const G: u64 = 1 << 30;
        const M: u64 = 1 << 20;
        for (options, start, size) in [
            // ACPI, RAM below 3 GiB: RAM_64BIT_START.
            ("size=1G,hotplug_size=1G", 4 * G, G),
            ("size=3G,hotplug_size=1G", 4 * G, G),
            // ACPI, RAM past 3 GiB: 1 GiB of it from 4 GiB, last address 0x1_3fff_ffff.
            ("size=4G,hotplug_size=1G", 0x1_4000_0000, G),
            // 3.875 GiB: 896 MiB from 4 GiB, last address 0x1_37ff_ffff.
            ("size=3968M,hotplug_size=1G", 0x1_3800_0000, G),
            // 4.5 GiB: 1.5 GiB from 4 GiB, last address 0x1_5fff_ffff.
            ("size=4608M,hotplug_size=1G", 0x1_6000_0000, G),
            // 3100 MiB: 28 MiB from 4 GiB, last address 0x1_01bf_ffff, rounded up to 128 MiB.
            ("size=3100M,hotplug_size=1G", 0x1_0800_0000, G),
            // An ACPI hotplug_size off 128 MiB: Cloud Hypervisor takes it as it is (only each
            // DIMM plugged must be a multiple of 128 MiB), and so does the plan.
            ("size=4608M,hotplug_size=100M", 0x1_6000_0000, 100 * M),
            ("size=1G,hotplug_size=1000M", 4 * G, 1000 * M),
            // virtio-mem of --memory: the same start, already 128 MiB aligned.
            (
                "size=2G,hotplug_method=virtio-mem,hotplug_size=1G",
                4 * G,
                G,
            ),
            (
                "size=6G,hotplug_method=virtio-mem,hotplug_size=2G",
                7 * G,
                2 * G,
            ),
            (
                "size=4608M,hotplug_method=virtio-mem,hotplug_size=1G",
                0x1_6000_0000,
                G,
            ),
            // virtio-mem of a zone: zones' RAM laid out as --memory's, in the order given.
            (
                "--memory size=0,hotplug_method=virtio-mem \
                 --memory-zone id=a,size=1G id=b,size=4G,hotplug_size=1G",
                6 * G,
                G,
            ),
            (
                "--memory size=0,hotplug_method=virtio-mem \
                 --memory-zone id=a,size=512M,hotplug_size=128M",
                4 * G,
                128 * M,
            ),
            // 3.625 GiB of zones: 640 MiB from 4 GiB, last address 0x1_27ff_ffff.
            (
                "--memory size=0,hotplug_method=virtio-mem \
                 --memory-zone id=a,size=3G id=b,size=640M,hotplug_size=1G",
                0x1_2800_0000,
                G,
            ),
            // 2 MiB huge pages, 4610 MiB: 1538 MiB from 4 GiB, last address 0x1_6020_0000 - 1.
            (
                "--memory size=0,hotplug_method=virtio-mem \
                 --memory-zone id=a,size=4610M,hugepages=on,hugepage_size=2M,\
                 hotplug_size=256M",
                0x1_6800_0000,
                256 * M,
            ),
        ] {
            let (at, len) = hotplug_at(options);
            assert_eq!((at, len), (start, size), "{options}: {at:#x}");
        }
    }

    /// Every converted spec says its windows' alignment, 128 MiB, so that planning it again
    /// gives the same plan.
    #[test]
    fn cloud_hypervisor_spec_says_its_window_alignment() {
        assert_eq!(crate::size::parse_size(CH_WINDOW_ALIGN), Ok(128 << 20));
        for options in [
            "size=1G",
            "size=4608M,hotplug_size=1G",
            "--memory size=0 --memory-zone id=a,size=1G",
        ] {
            assert_eq!(spec_of(options).window_align, Some(128 << 20), "{options}");
        }
    }

    /// Over boot RAM sizes of every 2 MiB step below 3 GiB and past it, the plan's hotplug
    /// slot starts where Cloud Hypervisor's `start_addr` puts it.
    #[test]
    fn cloud_hypervisor_hotplug_start_matches_over_boot_ram_sizes() {
        let mut sizes: Vec<u64> = (1..=64).map(|i| i * (2 << 20)).collect();
        sizes.extend((0..600).map(|i| (3 << 30) - (64 << 20) + i * (2 << 20)));
        sizes.extend((0..40).map(|i| (5 << 30) + i * (50 << 20)));
        for ram in sizes {
            let options = format!("size={ram},hotplug_method=virtio-mem,hotplug_size=128M");
            let (at, _) = hotplug_at(&options);
            assert_eq!(at, ch_hotplug_start(ram), "{options}: {at:#x}");
            let options = format!("size={ram},hotplug_size=1000M");
            let (at, _) = hotplug_at(&options);
            assert_eq!(at, ch_hotplug_start(ram), "{options}: {at:#x}");
        }
    }

    /// A folder of its own with a folder `huge` in it, and a mounts file (in the folder) that
    /// has `huge` mounted as `kind` with `options`: (the mounts file, `huge`).
    fn mount(name: &str, kind: &str, options: &str) -> (std::path::PathBuf, String) {
        let dir =
            std::env::temp_dir().join(format!("memvisor-ch-mount-{}-{name}", std::process::id()));
        let point = dir.join("huge");
        std::fs::create_dir_all(&point).unwrap();
        let point = std::fs::canonicalize(&point).unwrap();
        let mounts = dir.join("mounts");
        std::fs::write(
            &mounts,
            format!(
                "/dev/root / ext4 rw 0 0\n{kind} {} {kind} {options} 0 0\n",
                point.display()
            ),
        )
        .unwrap();
        (mounts, point.to_str().unwrap().to_owned())
    }

    /// A host of the meminfo file at `meminfo` whose `/dev/hugepages` is `mount`'s folder.
    fn on_host<'a>(
        meminfo: &'a std::path::Path,
        mount: &'a (std::path::PathBuf, String),
    ) -> DefaultHugePage<'a> {
        DefaultHugePage::Host {
            meminfo,
            mounts: &mount.0,
            hugetlbfs: &mount.1,
        }
    }

    /// A meminfo file of `text` in a folder of its own.
    fn meminfo(name: &str, text: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("memvisor-ch-meminfo-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("meminfo");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Cloud Hypervisor aligns memory of `hugepages=on` without `hugepage_size` to the page size
    /// of the file system at `/dev/hugepages` (`statfs`), which can differ from the default
    /// huge page size its memfd gets: a size must be a multiple of both, and a host without
    /// `/dev/hugepages` is refused, as Cloud Hypervisor refuses to start there.
    #[test]
    fn cloud_hypervisor_default_huge_pages_align_to_the_dev_hugepages_mount() {
        let two_m = meminfo("mount-2m", "Hugepagesize:       2048 kB\n");
        let one_g_mount = mount("1g", "hugetlbfs", "rw,relatime,pagesize=1024M");
        let two_m_mount = mount("2m", "hugetlbfs", "rw,relatime,pagesize=2M");
        let plain = mount("tmpfs", "tmpfs", "rw,nosuid");
        let json = |size: u64| {
            format!(
                r#"{{"payload": {{"kernel": "/k"}}, "memory": {{"size": {size}, "hugepages": true}}}}"#
            )
        };
        // Multiples of 1 GiB pass under the 1 GiB mount, with 2 MiB pages, and a note of both.
        for options in [
            "size=3G,hugepages=on".to_owned(),
            "--memory size=0 --memory-zone id=a,size=1G,hugepages=on id=b,size=2G,hugepages=on"
                .to_owned(),
            json(3 << 30),
        ] {
            let toml = cloud_hypervisor_spec(&options, on_host(&two_m, &one_g_mount), Arch::X86_64)
                .unwrap_or_else(|e| panic!("{options}: {e}"));
            assert!(toml.contains("huge_pages = \"2MiB\""), "{options}: {toml}");
            let note = toml.lines().next().unwrap_or_default();
            assert!(note.contains("and aligns it to 1 GiB"), "{note}");
            assert!(note.contains("hugetlbfs mount of 1 GiB pages"), "{note}");
        }
        // 1026 MiB is a multiple of the 2 MiB page, not of the mount's 1 GiB.
        for (options, at) in [
            ("size=1026M,hugepages=on".to_owned(), "--memory: size: "),
            (
                "--memory size=0 --memory-zone id=a,size=1026M,hugepages=on".to_owned(),
                "zone 1 (`a`): size: ",
            ),
            (json(1026 << 20), "memory.size"),
        ] {
            let e = cloud_hypervisor_spec(&options, on_host(&two_m, &one_g_mount), Arch::X86_64)
                .unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            let e = e.to_string();
            assert!(e.contains(at), "{options}: {e}");
            assert!(
                e.contains("1026 MiB is not a multiple of 1 GiB, the page size of /dev/hugepages"),
                "{options}: {e}"
            );
            // A mount of the default size, or a folder in another file system, takes it.
            for mount in [&two_m_mount, &plain] {
                let toml = cloud_hypervisor_spec(&options, on_host(&two_m, mount), Arch::X86_64)
                    .unwrap_or_else(|e| panic!("{options}: {e}"));
                assert!(toml.contains("huge_pages = \"2MiB\""), "{options}: {toml}");
                assert!(!toml.contains("aligns it"), "{options}: {toml}");
            }
            // An explicit hugepage_size needs no mount.
            let given = options
                .replace("hugepages=on", "hugepages=on,hugepage_size=2M")
                .replace(
                    r#""hugepages": true"#,
                    r#""hugepages": true, "hugepage_size": 2097152"#,
                );
            let gone = (
                plain.0.clone(),
                "/nonexistent/memvisor/hugepages".to_owned(),
            );
            cloud_hypervisor_spec(&given, on_host(&two_m, &gone), Arch::X86_64)
                .unwrap_or_else(|e| panic!("{given}: {e}"));
        }
        // 3 MiB is a multiple of the 4 KiB page of a plain folder but not of the 2 MiB pages.
        let e = cloud_hypervisor_spec(
            "--memory size=0 --memory-zone id=a,size=3M,hugepages=on",
            on_host(&two_m, &plain),
            Arch::X86_64,
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a multiple of"), "{e}");
        // Nothing at /dev/hugepages: Cloud Hypervisor's statfs fails and it refuses to start.
        let gone = (
            plain.0.clone(),
            "/nonexistent/memvisor/hugepages".to_owned(),
        );
        let file = (plain.0.clone(), plain.0.to_str().unwrap().to_owned() + "/x");
        for mount in [&gone, &file] {
            for options in [
                "size=2G,hugepages=on".to_owned(),
                "--memory size=0 --memory-zone id=a,size=2G,hugepages=on".to_owned(),
                json(2 << 30),
            ] {
                let e = cloud_hypervisor_spec(&options, on_host(&two_m, mount), Arch::X86_64)
                    .unwrap_err();
                assert_eq!(e.exit_code(), 2, "{e}");
                let e = e.to_string();
                assert!(e.contains("hugepages: on without hugepage_size"), "{e}");
                assert!(e.contains("refuses to start"), "{e}");
                assert!(e.contains("--host-hugepage-size"), "{e}");
            }
        }
        // A mounts file that is a folder, or too long, is refused, not read without end.
        let folder = (plain.0.parent().unwrap().to_owned(), plain.1.clone());
        let e = cloud_hypervisor_spec(
            "size=2G,hugepages=on",
            on_host(&two_m, &folder),
            Arch::X86_64,
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot be read (not a file)"), "{e}");
        let long = plain.0.with_file_name("long-mounts");
        std::fs::write(&long, vec![b'#'; usize::try_from(MOUNTS_MAX + 1).unwrap()]).unwrap();
        let long = (long, plain.1.clone());
        let e = cloud_hypervisor_spec("size=2G,hugepages=on", on_host(&two_m, &long), Arch::X86_64)
            .unwrap_err();
        assert!(e.to_string().contains("is longer than 16 MiB"), "{e}");
        // A mounts or meminfo file that is a FIFO no one writes is refused at once.
        let fifo = plain.0.with_file_name("fifo");
        let _ = std::fs::remove_file(&fifo);
        if std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success())
        {
            let at_fifo = (fifo.clone(), plain.1.clone());
            let e = cloud_hypervisor_spec(
                "size=2G,hugepages=on",
                on_host(&two_m, &at_fifo),
                Arch::X86_64,
            )
            .unwrap_err();
            assert!(e.to_string().contains("cannot be read (not a file)"), "{e}");
            let e =
                cloud_hypervisor_spec("size=2G,hugepages=on", on_host(&fifo, &plain), Arch::X86_64)
                    .unwrap_err();
            assert!(e.to_string().contains("cannot be read (not a file)"), "{e}");
        }
        // Pinned: the mount is taken to have the pinned size; nothing is read.
        let toml = cloud_hypervisor_spec("size=1026M,hugepages=on", PINNED, Arch::X86_64).unwrap();
        assert!(toml.contains("huge_pages = \"2MiB\""), "{toml}");
        for m in [one_g_mount.0, two_m_mount.0, plain.0, two_m] {
            let _ = std::fs::remove_dir_all(m.parent().unwrap());
        }
    }

    /// `hugepages=on` without `hugepage_size` is the host's default huge page size
    /// (`Hugepagesize` in meminfo), read only when needed, with a note; a host without one, a
    /// file that cannot be read or a size a spec does not have is refused at `hugepages`.
    #[test]
    fn cloud_hypervisor_default_huge_page_size_is_read_from_meminfo() {
        // `/dev/hugepages` in a file system that is not hugetlbfs: the base page aligns.
        let plain = mount("plain", "tmpfs", "rw");
        let one_g = meminfo(
            "1g",
            "MemTotal:       16384000 kB\nHugePages_Total:       0\nHugepagesize:    1048576 kB\n",
        );
        for options in [
            "size=2G,hugepages=on",
            "--memory size=0 --memory-zone id=a,size=1G,hugepages=on id=b,size=1G,hugepages=on",
            r#"{"payload": {"kernel": "/k"}, "memory": {"size": 2147483648, "hugepages": true}}"#,
        ] {
            let toml = cloud_hypervisor_spec(options, on_host(&one_g, &plain), Arch::X86_64)
                .unwrap_or_else(|e| panic!("{options}: {e}"));
            assert!(toml.contains("huge_pages = \"1GiB\""), "{options}: {toml}");
            let note = toml.lines().next().unwrap_or_default();
            assert!(note.starts_with(NOTE), "{options}: {toml}");
            assert!(note.contains("1 GiB (Hugepagesize in "), "{note}");
            assert!(!note.contains("  "), "{note}");
            // The note is a comment: the spec reads as without it.
            let src = crate::spec::Source {
                origin: "ch.toml",
                text: &toml,
            };
            assert_eq!(
                crate::spec::parse(src).unwrap().memory.pages,
                PageKind::Huge1G
            );
        }
        // A zone of 2 MiB pages and one of the default (1 GiB here) differ.
        let e = cloud_hypervisor_spec(
            "--memory size=0 --memory-zone id=a,size=1G,hugepages=on \
             id=b,size=1G,hugepages=on,hugepage_size=2M",
            on_host(&one_g, &plain),
            Arch::X86_64,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("differs"), "{e}");
        // Not read when not needed: no note, and a missing file does no harm.
        let missing = std::path::Path::new("/nonexistent/memvisor/meminfo");
        for options in [
            "size=2G,hugepages=on,hugepage_size=1G",
            "size=2G",
            "size=2G,shared=on",
        ] {
            let toml = cloud_hypervisor_spec(options, on_host(missing, &plain), Arch::X86_64)
                .unwrap_or_else(|e| panic!("{options}: {e}"));
            assert!(!toml.contains(NOTE), "{options}: {toml}");
        }
        // Pinned: no note.
        let toml = cloud_hypervisor_spec("size=2G,hugepages=on", PINNED, Arch::X86_64).unwrap();
        assert!(toml.contains("huge_pages = \"2MiB\""), "{toml}");
        assert!(!toml.contains(NOTE), "{toml}");
        // Refused, at `hugepages`, with the way to pin it.
        let folder = std::env::temp_dir();
        let none = meminfo("none", "MemTotal:       16384000 kB\n");
        let bad = meminfo("bad", "Hugepagesize:    2 MB\n");
        let arm = meminfo("arm", "Hugepagesize:     524288 kB\n");
        for (file, expected) in [
            (missing, "cannot be read"),
            (folder.as_path(), "cannot be read (not a file)"),
            (none.as_path(), "has no Hugepagesize"),
            (bad.as_path(), "is not a number of kB"),
            (
                arm.as_path(),
                "512 MiB, and a spec has 2 MiB or 1 GiB huge pages",
            ),
        ] {
            for (options, at) in [
                ("size=2G,hugepages=on", "--memory: hugepages: "),
                (
                    "--memory size=0 --memory-zone id=a,size=2G,hugepages=on",
                    "zone 1 (`a`): hugepages: ",
                ),
            ] {
                let e = cloud_hypervisor_spec(options, on_host(file, &plain), Arch::X86_64)
                    .unwrap_err();
                assert_eq!(e.exit_code(), 2, "{e}");
                let e = e.to_string();
                assert!(e.contains(at), "{options}: {e}");
                assert!(e.contains(expected), "{options}: {e}");
                assert!(e.contains("--host-hugepage-size"), "{options}: {e}");
                assert!(!e.contains("  "), "{options}: {e}");
            }
            let json = r#"{"payload": {"kernel": "/k"},
                "memory": {"size": 2147483648, "hugepages": true}}"#;
            match cloud_hypervisor_json_spec("vm.json", json, on_host(file, &plain), Arch::X86_64) {
                Err(Error::Spec(e)) => {
                    assert_eq!(e.field, "memory.hugepages", "{e}");
                    assert_eq!(e.position, Some((2, 61)), "{e}");
                }
                other => panic!("{other:?}"),
            }
        }
        for f in [one_g, none, bad, arm, plain.0] {
            let _ = std::fs::remove_dir_all(f.parent().unwrap());
        }
    }
}
