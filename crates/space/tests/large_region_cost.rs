//! What backing a very large region costs the process when nothing of it is touched: the
//! reservation's per-page records of a whole region are kept per block of pages, so backing,
//! plugging and unplugging terabytes add little resident memory.
#![cfg(all(target_os = "linux", target_pointer_width = "64", not(miri)))]

use memvisor_space::{AddressSpace, Backing, Layout, Region, RegionSpec, WindowKind};
use memvisor_testkit::resident::{measuring, rss_bytes};
use vm_memory::{Bytes, GuestAddress, GuestMemoryRegion, MemoryRegionAddress};

const TIB: u64 = 1 << 40;

/// The most resident memory backing (or plugging and unplugging) 1 TiB may add. One bit per
/// base page of one bitmap is 32 MiB; backing a region records a dozen of them.
const BOUND: usize = 16 << 20;

fn grew(before: usize, what: &str) {
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < BOUND,
        "{what} added {grown} bytes of resident memory (bound {BOUND})"
    );
}

#[test]
fn backing_a_tib_memfd_region_adds_little_resident_memory() {
    let _one = measuring();
    let before = rss_bytes();
    let spec = RegionSpec::ram(GuestAddress(1 << 32), TIB).with_backing(Backing::Memfd);
    let (region, report) = Region::back(spec).unwrap();
    grew(before, "backing");
    assert_eq!(report.map(|r| r.size), Some(TIB));
    let last = MemoryRegionAddress(TIB - 8);
    region.write_obj(0x1234_u64, last).unwrap();
    assert_eq!(region.read_obj::<u64>(last).unwrap(), 0x1234);
    assert_eq!(region.len(), TIB);
    drop(region);
    grew(before, "backing and dropping");
}

#[test]
fn plugging_and_unplugging_a_tib_slot_adds_little_resident_memory() {
    let _one = measuring();
    let layout = Layout::x86_64()
        .ram(1 << 30)
        .hotplug(TIB)
        .phys_bits(46)
        .build()
        .unwrap();
    let window = *layout.windows_of(WindowKind::Hotplug).next().unwrap();
    let before = rss_bytes();
    let (space, _) = AddressSpace::builder(layout).back().unwrap();
    grew(before, "reserving the hotplug window");
    let spec = RegionSpec::ram(window.start(), window.size())
        .with_backing(Backing::Memfd)
        .with_hotplug(true);
    let (region, _) = space.plug(spec).unwrap();
    grew(before, "plugging");
    region
        .write_obj(7_u32, MemoryRegionAddress(window.size() - 4))
        .unwrap();
    drop(region);
    let removed = space.remove_region(window.start(), window.size()).unwrap();
    drop(removed);
    grew(before, "plugging and unplugging");
    // The slot was given back: it can be plugged again.
    let spec = RegionSpec::ram(window.start(), window.size())
        .with_backing(Backing::Memfd)
        .with_hotplug(true);
    let (region, _) = space.plug(spec).unwrap();
    assert_eq!(
        region
            .read_obj::<u32>(MemoryRegionAddress(window.size() - 4))
            .unwrap(),
        0
    );
}
