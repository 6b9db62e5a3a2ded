//! vm-memory's region and memory contracts over a snapshot: lookups, offsets and slices agree
//! with each other at every region edge and at the top of the 64-bit space (with and without
//! the snapshot's hit index), and memory that is not read-write gives neither a slice nor a
//! host address through vm-memory's traits.

#![allow(clippy::cast_possible_truncation)]

use memvisor_space::{AddressSpace, Layout, Protection, RegionSpec, RegionType, WindowKind};
use vm_memory::{
    Address, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryRegion,
    MemoryRegionAddress,
};

fn page() -> u64 {
    memvisor_vmem::page_size() as u64
}

/// `count` RAM regions of one to three pages, some adjacent and some apart, every fourth one
/// read-only, and a device region (no memory) after them; with the ranges of the RAM regions.
fn space(count: u64) -> (AddressSpace, Vec<(u64, u64, bool)>) {
    let p = page();
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let mut specs = Vec::new();
    let mut ram = Vec::new();
    let mut at = 0;
    for i in 0..count {
        let size = (i % 3 + 1) * p;
        let writable = i % 4 != 3;
        let protection = if writable {
            Protection::ReadWrite
        } else {
            Protection::Read
        };
        specs.push(RegionSpec::ram(GuestAddress(at), size).with_protection(protection));
        ram.push((at, size, writable));
        at += size + if i % 2 == 0 { 0 } else { p };
    }
    let device = layout
        .windows_of(WindowKind::Device)
        .next()
        .unwrap()
        .start();
    specs.push(RegionSpec::new(RegionType::Device, device, p));
    let (space, _) = AddressSpace::back(layout, specs).unwrap();
    (space, ram)
}

#[test]
fn lookups_agree_at_region_edges_and_the_top_of_the_space() {
    // Few regions (searched at once) and many (behind the hit index).
    for count in [4, 12] {
        let (space, ram) = space(count);
        let snap = space.snapshot();
        let mem = &*snap;
        let holding = |a: u64| {
            ram.iter()
                .copied()
                .find(|&(base, size, _)| a >= base && a - base < size)
        };
        let mut addrs = vec![0, 1, u64::MAX - 1, u64::MAX];
        for &(base, size, _) in &ram {
            let last = base + size - 1;
            addrs.extend([
                base.wrapping_sub(1),
                base,
                base + 1,
                last - 1,
                last,
                last + 1,
            ]);
        }
        // Twice over, so that repeated lookups in one region go through the hit index.
        for &a in addrs.iter().chain(&addrs).chain(&addrs) {
            let addr = GuestAddress(a);
            let expected = holding(a);
            let found = GuestMemoryBackend::find_region(mem, addr);
            assert_eq!(
                found.map(|r| (r.start_addr().0, r.len())),
                expected.map(|(base, size, _)| (base, size)),
                "find_region({a:#x})"
            );
            assert_eq!(
                mem.to_region_addr(addr)
                    .map(|(r, o)| (r.start_addr().0, o.0)),
                expected.map(|(base, ..)| (base, a - base)),
                "to_region_addr({a:#x})"
            );
            assert_eq!(mem.address_in_range(addr), expected.is_some());
            assert_eq!(mem.check_address(addr), expected.map(|_| addr));
            for offset in [0, 1, 7, usize::MAX] {
                let want = a
                    .checked_add(offset as u64)
                    .filter(|&b| holding(b).is_some())
                    .map(GuestAddress);
                assert_eq!(
                    mem.checked_offset(addr, offset),
                    want,
                    "checked_offset({a:#x}, {offset})"
                );
            }
            let Some((base, size, writable)) = expected else {
                assert!(matches!(
                    mem.get_slice(addr, 1),
                    Err(GuestMemoryError::InvalidGuestAddress(at)) if at == addr
                ));
                continue;
            };
            let region = found.unwrap();
            let offset = MemoryRegionAddress(a - base);
            let left = (size - (a - base)) as usize;
            assert_eq!(region.to_region_addr(addr), Some(offset));
            assert_eq!(
                region.checked_offset(offset, left - 1),
                Some(offset.unchecked_add(left as u64 - 1))
            );
            assert_eq!(region.checked_offset(offset, left), None);
            // The rest of the region is one slice, a byte more is refused; so for memory
            // that is not read-write, whose slices would allow writes.
            for count in [0, 1, left] {
                let slice = region.get_slice(offset, count);
                assert_eq!(slice.map(|s| s.len()).ok(), writable.then_some(count));
            }
            assert!(region.get_slice(offset, left + 1).is_err());
            assert!(region.get_slice(offset, usize::MAX).is_err());
            assert_eq!(mem.get_host_address(addr).is_ok(), writable);
        }
        assert_eq!(mem.num_regions(), ram.len());
        let listed: Vec<(u64, u64)> = mem.iter().map(|r| (r.start_addr().0, r.len())).collect();
        let want: Vec<(u64, u64)> = ram.iter().map(|&(b, s, _)| (b, s)).collect();
        assert_eq!(listed, want);
        let (base, size, _) = *ram.last().unwrap();
        assert_eq!(
            GuestMemoryBackend::last_addr(mem),
            GuestAddress(base + size - 1)
        );
    }
}

#[test]
fn host_address_of_memory_not_read_write_is_not_available() {
    let p = page();
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let (space, _) = AddressSpace::back(
        layout,
        [
            RegionSpec::ram(GuestAddress(0), p),
            RegionSpec::ram(GuestAddress(p), p).with_protection(Protection::Read),
            RegionSpec::ram(GuestAddress(2 * p), p).with_protection(Protection::None),
        ],
    )
    .unwrap();
    let snap = space.snapshot();
    let mem = &*snap;
    assert!(mem.get_host_address(GuestAddress(8)).is_ok());
    for base in [p, 2 * p] {
        let region = GuestMemoryBackend::find_region(mem, GuestAddress(base)).unwrap();
        // A write through such an address would kill the process: refused, as slices are.
        assert!(matches!(
            region.get_host_address(MemoryRegionAddress(8)),
            Err(GuestMemoryError::HostAddressNotAvailable)
        ));
        assert!(matches!(
            mem.get_host_address(GuestAddress(base + 8)),
            Err(GuestMemoryError::HostAddressNotAvailable)
        ));
        assert!(region.get_slice(MemoryRegionAddress(8), 1).is_err());
        // The address itself is still there for the caller that knows the protection.
        assert!(region.host_ptr().is_some());
    }
}
