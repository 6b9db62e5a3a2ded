//! Discarding guest pages: each backing gives its pages back the right way, reads see zeros,
//! and bad ranges or regions are refused with typed errors. Discarding is Linux's, so the tests
//! that discard run on Linux only; the refusals are checked everywhere.

#![allow(clippy::cast_possible_truncation)]
#![cfg_attr(miri, allow(dead_code, unused_imports))]
#![cfg_attr(not(target_os = "linux"), allow(unused_imports))]

#[cfg(target_os = "linux")]
use std::os::unix::fs::FileExt;

use memvisor_space::{
    AddressSpace, Backing, Error, Layout, Protection, Region, RegionSpec, RegionType,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryRegion, MemoryRegionAddress};

fn page() -> u64 {
    memvisor_vmem::page_size() as u64
}

/// Resident pages of `len` bytes at `ptr` (`mincore`).
#[cfg(target_os = "linux")]
fn resident(ptr: *mut u8, len: u64) -> usize {
    let pages = usize::try_from(len / page()).unwrap();
    let mut vec = vec![0u8; pages];
    // SAFETY: `ptr..ptr + len` is a live mapping of ours; `vec` has one byte per page.
    let ret = unsafe { libc::mincore(ptr.cast(), len as usize, vec.as_mut_ptr()) };
    assert_eq!(ret, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&b| b & 1 == 1).count()
}

#[cfg(target_os = "linux")]
#[test]
#[cfg_attr(
    miri,
    ignore = "memfds, and the kernel's residency accounting (mincore)"
)]
fn discard_each_backing_reads_zeros_and_keeps_the_rest() {
    let p = page();
    for backing in [
        Backing::AnonymousPrivate,
        Backing::AnonymousShared,
        Backing::Memfd,
    ] {
        let spec = RegionSpec::ram(GuestAddress(0), 4 * p).with_backing(backing.clone());
        let (region, _) = Region::back(spec).unwrap();
        for i in 0..4 {
            region
                .write_slice(&[0xa5; 16], MemoryRegionAddress(i * p))
                .unwrap();
        }
        let host = region.host_ptr().unwrap();
        assert_eq!(resident(host, 4 * p), 4);
        region.discard(p, 2 * p).unwrap();
        assert_eq!(resident(host, 4 * p), 2, "{backing:?}: pages given back");
        for (i, expected) in [(0, 0xa5), (1, 0), (2, 0), (3, 0xa5)] {
            let got: u8 = region.read_obj(MemoryRegionAddress(i * p)).unwrap();
            assert_eq!(got, expected, "{backing:?} page {i}");
        }
        if let Some(fo) = region.file_offset() {
            let mut byte = [0xffu8];
            fo.file().read_exact_at(&mut byte, p).unwrap();
            assert_eq!(byte, [0], "the hole is in the file");
        }
        // The memory is still there to write.
        region.write_obj(1u8, MemoryRegionAddress(p)).unwrap();
    }
}

#[test]
fn discard_bad_range_errors_and_keeps_contents() {
    let p = page();
    let (region, _) = Region::back(RegionSpec::ram(GuestAddress(0x10_0000), 4 * p)).unwrap();
    region.write_obj(9u8, MemoryRegionAddress(0)).unwrap();
    let misaligned = region.discard(1, p).unwrap_err();
    assert!(
        matches!(
            misaligned,
            Error::Misaligned {
                base: 0x10_0001,
                ..
            }
        ),
        "{misaligned}"
    );
    assert!(matches!(
        region.discard(0, p + 1),
        Err(Error::Misaligned { .. })
    ));
    let size = 4 * p;
    for (offset, len) in [
        (4 * p, p),
        (3 * p, 2 * p),
        (0, 0),
        (u64::MAX - p + 1, p),
        (4 * p + 1, 1),
    ] {
        let err = region.discard(offset, len).unwrap_err();
        assert!(
            matches!(err, Error::DiscardOutOfRange { base: 0x10_0000, offset: o, len: l, size: s }
                if (o, l, s) == (offset, len, size)),
            "{err}"
        );
    }
    let err = region.discard(u64::MAX - p + 1, p).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot discard {p:#x} bytes at offset {:#x} of the region at 0x100000 of size {size:#x}",
            u64::MAX - p + 1
        )
    );
    assert_eq!(region.read_obj::<u8>(MemoryRegionAddress(0)).unwrap(), 9);
}

#[test]
fn discard_unbacked_region_is_refused() {
    let p = page();
    let planned = Region::plan(RegionSpec::ram(GuestAddress(0), p)).unwrap();
    let err = planned.discard(0, p).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot discard pages of the region at 0x0: the region has no host memory"
    );
    let device = Region::plan(RegionSpec::new(RegionType::Device, GuestAddress(0), p)).unwrap();
    assert!(matches!(
        device.discard(0, p),
        Err(Error::DiscardRefused { .. })
    ));
}

#[cfg(unix)]
#[test]
#[cfg_attr(miri, ignore = "maps a file: Miri has no file mappings")]
fn discard_file_read_only_and_non_ram_are_refused() {
    let p = page();
    let path = std::env::temp_dir().join(format!("memvisor-discard-{}.img", std::process::id()));
    std::fs::write(&path, vec![0x5a; 2 * p as usize]).unwrap();
    let file = RegionSpec::ram(GuestAddress(0), 2 * p).with_backing(Backing::File {
        path: path.clone(),
        offset: 0,
    });
    let (region, _) = Region::back(file).unwrap();
    assert!(matches!(
        region.discard(0, p),
        Err(Error::DiscardRefused { .. })
    ));
    let read_only = RegionSpec::ram(GuestAddress(0), p).with_protection(Protection::Read);
    let (region, _) = Region::back(read_only).unwrap();
    assert!(matches!(
        region.discard(0, p),
        Err(Error::DiscardRefused { .. })
    ));
    let dax = RegionSpec::new(RegionType::Dax, GuestAddress(0), p);
    let (region, _) = Region::back(dax).unwrap();
    assert!(matches!(
        region.discard(0, p),
        Err(Error::DiscardRefused { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), vec![0x5a; 2 * p as usize]);
    std::fs::remove_file(&path).unwrap();
}

#[cfg(target_os = "linux")]
#[test]
#[cfg_attr(miri, ignore = "memfds: Miri has no memfd_create")]
fn snapshot_discard_finds_the_region() {
    let p = page();
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let specs = [
        RegionSpec::ram(GuestAddress(0), 4 * p),
        RegionSpec::ram(GuestAddress(8 * p), 4 * p).with_backing(Backing::Memfd),
    ];
    let (space, _) = AddressSpace::back(layout, specs).unwrap();
    let mem = space.memory();
    mem.write_obj(3u32, GuestAddress(9 * p)).unwrap();
    mem.discard(GuestAddress(9 * p), p).unwrap();
    assert_eq!(mem.read_obj::<u32>(GuestAddress(9 * p)).unwrap(), 0);
    assert!(matches!(
        mem.discard(GuestAddress(5 * p), p),
        Err(Error::RegionNotFound { .. })
    ));
    assert!(matches!(
        mem.discard(GuestAddress(3 * p), 2 * p),
        Err(Error::DiscardOutOfRange { base: 0, .. })
    ));
}

/// A discard changes what the guest reads (zeros where data was), so a page it gives back must
/// be sent again by a migration that sent it before: the discarded pages are dirty, the rest
/// are not.
#[cfg(target_os = "linux")]
#[test]
#[cfg_attr(miri, ignore = "memfds")]
fn discard_marks_the_pages_dirty() {
    let p = page();
    for backing in [
        Backing::AnonymousPrivate,
        Backing::AnonymousShared,
        Backing::Memfd,
    ] {
        let spec = RegionSpec::ram(GuestAddress(0), 4 * p)
            .with_backing(backing.clone())
            .with_dirty_tracking(true);
        let (region, _) = Region::back(spec).unwrap();
        region
            .write_slice(&[0xa5; 16], MemoryRegionAddress(p))
            .unwrap();
        // The page was sent: the log is taken and clean.
        region.take_dirty_log().unwrap();
        assert!(!region.is_dirty(p));
        region.discard(p, 2 * p).unwrap();
        for (i, dirty) in [(0, false), (1, true), (2, true), (3, false)] {
            assert_eq!(region.is_dirty(i * p), dirty, "{backing:?} page {i}");
        }
        // A refused discard changes nothing, so it marks nothing.
        region.take_dirty_log().unwrap();
        assert!(region.discard(p, 5 * p).is_err());
        assert!((0..4).all(|i| !region.is_dirty(i * p)), "{backing:?}");
    }
}
