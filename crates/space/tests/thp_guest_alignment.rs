//! Transparent huge pages reach the guest only where its addresses and the host's agree modulo
//! 2 MiB: KVM gives a memory slot no 2 MiB mappings at all when its guest base and host address
//! differ there, whatever huge pages the host has. A private anonymous region with transparent
//! huge pages is therefore placed on the host congruent to its guest base modulo 2 MiB, even
//! when that base is not 2 MiB aligned (dbs-address-space's own memory regions start at 1 MiB).

#![cfg(target_os = "linux")]

use memvisor_space::{
    AddressSpace, Backing, HugePageFallback, HugePages, Layout, Region, RegionSpec,
};
use vm_memory::{Bytes, GuestAddress, MemoryRegionAddress};

const HUGE: u64 = 2 << 20;

fn spec(base: u64, size: u64) -> RegionSpec {
    RegionSpec::ram(GuestAddress(base), size)
        .with_backing(Backing::AnonymousPrivate)
        .with_huge_pages(HugePages::Transparent)
        .with_fallback(HugePageFallback::BasePages)
}

#[test]
#[cfg_attr(miri, ignore = "Miri has no transparent huge pages")]
fn private_transparent_huge_pages_agree_with_the_guest_modulo_2_mib() {
    let page = memvisor_vmem::page_size() as u64;
    for base in [0, page, HUGE / 2, HUGE - page, 3 * HUGE / 2, HUGE] {
        let (region, report) = Region::back(spec(base, 4 * HUGE)).unwrap();
        let report = report.unwrap();
        if report.huge_pages != HugePages::Transparent {
            // The host gives none: base pages, placed anywhere.
            continue;
        }
        let host = region.host_ptr().unwrap() as u64;
        assert_eq!(host % HUGE, base % HUGE, "guest base {base:#x}");
        assert_eq!(report.host_addr as u64, host);
        // The memory is the region's, all of it, and only it.
        let last = MemoryRegionAddress(4 * HUGE - 8);
        region
            .write_obj(0x1234_u64, MemoryRegionAddress(0))
            .unwrap();
        region.write_obj(0x5678_u64, last).unwrap();
        assert_eq!(
            region.read_obj::<u64>(MemoryRegionAddress(0)).unwrap(),
            0x1234
        );
        assert_eq!(region.read_obj::<u64>(last).unwrap(), 0x5678);
        assert!(
            region
                .write_obj(0_u64, MemoryRegionAddress(4 * HUGE))
                .is_err()
        );
        region.discard(0, 4 * HUGE).unwrap();
        assert_eq!(region.read_obj::<u64>(last).unwrap(), 0);
    }
}

/// The same through an address space, with prefault, dontfork and a discard through the
/// snapshot: each works on the region's own memory.
#[test]
#[cfg_attr(miri, ignore = "Miri has no transparent huge pages")]
fn a_space_of_unaligned_transparent_huge_page_ram_works_as_any() {
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let base = 1 << 20;
    let (space, report) = AddressSpace::back(
        layout,
        [spec(base, 8 * HUGE)
            .with_prefault_threads(2)
            .with_dontfork(true)],
    )
    .unwrap();
    let snap = space.snapshot();
    let region = snap.find_region(GuestAddress(base)).unwrap();
    if report.regions[0].huge_pages == HugePages::Transparent {
        assert_eq!(region.host_ptr().unwrap() as u64 % HUGE, base % HUGE);
    }
    let at = GuestAddress(base + 5 * HUGE + 12);
    snap.write_obj(0xabcd_u32, at).unwrap();
    assert_eq!(snap.read_obj::<u32>(at).unwrap(), 0xabcd);
    snap.discard(GuestAddress(base + 4 * HUGE), 4 * HUGE)
        .unwrap();
    assert_eq!(snap.read_obj::<u32>(at).unwrap(), 0);
    drop(snap);
    let removed = space.remove_region(GuestAddress(base), 8 * HUGE).unwrap();
    assert_eq!(removed.size(), 8 * HUGE);
}
