//! Dirty-page tracking: `Bytes` writes mark pages, logs are taken and cleared per region, and
//! an external (KVM-style) dirty log merges in.

#![cfg_attr(miri, allow(dead_code, unused_imports))]

use memvisor_space::{AddressSpace, Error, Layout, Region, RegionSpec, RegionType};
use vm_memory::{Bytes, GuestAddress, GuestMemoryRegion, MemoryRegionAddress};

const MIB: u64 = 1 << 20;

fn page() -> u64 {
    memvisor_vmem::page_size() as u64
}

#[test]
fn dirty_tracking_without_memory_is_invalid() {
    let spec =
        RegionSpec::new(RegionType::Device, GuestAddress(0), page()).with_dirty_tracking(true);
    assert!(matches!(spec.validate(), Err(Error::InvalidSpec { .. })));
    let planned =
        Region::plan(RegionSpec::ram(GuestAddress(0), page()).with_dirty_tracking(true)).unwrap();
    assert!(planned.dirty_bitmap().is_none());
    assert!(planned.take_dirty_log().is_none());
    assert!(matches!(
        planned.merge_dirty_log(&[1]),
        Err(Error::DirtyLogUnavailable { base: 0 })
    ));
}

#[test]
fn bytes_writes_mark_pages_and_take_clears() {
    let p = page();
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let specs = [
        RegionSpec::ram(GuestAddress(0), MIB).with_dirty_tracking(true),
        RegionSpec::ram(GuestAddress(MIB), MIB),
    ];
    let (space, _) = AddressSpace::back(layout, specs).unwrap();
    let mem = space.memory();
    // One byte in page 3, and a write spanning pages 5 and 6.
    mem.write_obj(1u8, GuestAddress(3 * p)).unwrap();
    mem.write_slice(&[2u8; 8], GuestAddress(6 * p - 4)).unwrap();
    // Reads do not mark.
    let _: u64 = mem.read_obj(GuestAddress(9 * p)).unwrap();
    let tracked = mem.find_region(GuestAddress(0)).unwrap();
    assert!(tracked.is_dirty(3 * p) && tracked.is_dirty(5 * p) && tracked.is_dirty(6 * p));
    assert!(!tracked.is_dirty(4 * p) && !tracked.is_dirty(9 * p));
    let log = tracked.take_dirty_log().unwrap();
    assert_eq!(log.len(), usize::try_from((MIB / p).div_ceil(64)).unwrap());
    assert_eq!(log[0], (1 << 3) | (1 << 5) | (1 << 6));
    assert!(log[1..].iter().all(|&w| w == 0));
    assert!(!tracked.is_dirty(3 * p), "taking the log clears it");
    assert_eq!(tracked.take_dirty_log().unwrap()[0], 0);
    // A region without tracking has no log; writes to it work as before.
    mem.write_obj(3u8, GuestAddress(MIB)).unwrap();
    let plain = mem.find_region(GuestAddress(MIB)).unwrap();
    assert!(plain.take_dirty_log().is_none());
    assert!(!plain.is_dirty(0));
    // Region-relative writes mark too, and clear resets.
    tracked.write_obj(4u8, MemoryRegionAddress(p)).unwrap();
    assert!(tracked.is_dirty(p));
    tracked.clear_dirty_log();
    assert!(!tracked.is_dirty(p));
    assert!(tracked.bitmap().is_some());
}

#[test]
fn merge_dirty_log_adds_external_bits_and_checks_size() {
    let p = page();
    // 100 pages: two words, the second with 36 bits used.
    let (region, _) =
        Region::back(RegionSpec::ram(GuestAddress(0), 100 * p).with_dirty_tracking(true)).unwrap();
    region.write_obj(1u8, MemoryRegionAddress(0)).unwrap();
    region.merge_dirty_log(&[1 << 10, 1 << 35]).unwrap();
    assert!(region.is_dirty(0) && region.is_dirty(10 * p) && region.is_dirty(99 * p));
    for bad in [&[0u64][..], &[0, 0, 0], &[0, 1 << 36]] {
        let err = region.merge_dirty_log(bad).unwrap_err();
        assert!(
            matches!(
                err,
                Error::DirtyLogSize {
                    base: 0,
                    pages: 100,
                    ..
                }
            ),
            "{err}"
        );
    }
    assert_eq!(
        region.merge_dirty_log(&[0]).unwrap_err().to_string(),
        "a dirty log of 1 words does not fit the region at 0x0 of 100 pages"
    );
    let log = region.take_dirty_log().unwrap();
    assert_eq!(log, [1 | (1 << 10), 1 << 35]);
}

#[cfg(unix)]
#[test]
#[cfg_attr(miri, ignore = "vm-memory mappings over this crate's memory")]
fn writes_through_a_guest_memory_mmap_copy_are_not_logged() {
    let p = page();
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let spec = RegionSpec::ram(GuestAddress(0), MIB).with_dirty_tracking(true);
    let (space, _) = AddressSpace::back(layout, [spec]).unwrap();
    let snap = space.snapshot();
    let tracked = snap.find_region(GuestAddress(0)).unwrap();
    // SAFETY: `snap` outlives `copy` (dropped first below).
    let copy = unsafe { snap.to_guest_memory_mmap() }.unwrap();
    // The copy's regions have no bitmap: the write lands, unlogged.
    copy.write_obj(7u32, GuestAddress(2 * p)).unwrap();
    assert_eq!(snap.read_obj::<u32>(GuestAddress(2 * p)).unwrap(), 7);
    assert!(!tracked.is_dirty(2 * p));
    // The snapshot's own write to the same page is logged.
    snap.write_obj(8u32, GuestAddress(2 * p)).unwrap();
    assert!(tracked.is_dirty(2 * p));
    drop(copy);
}
