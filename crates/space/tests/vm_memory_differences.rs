//! Each deliberate difference that README names between a snapshot's vm-memory view and
//! vm-memory's own `GuestMemoryMmap` of the same read-write ranges, shown on both: the calls
//! `vm_memory_diff` compares agree everywhere else.
#![cfg(target_os = "linux")]
#![cfg(not(miri))] // vm-memory's own mmap: Miri cannot map
#![allow(clippy::cast_possible_truncation)]

use std::sync::Arc;

use memvisor_space::{AddressSpace, Backing, Layout, Protection, Region, RegionSpec};
use vm_memory::bitmap::{AtomicBitmap, Bitmap};
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryMmap, GuestMemoryRegion,
    ReadVolatile, VolatileMemoryError, VolatileSlice,
};

type Reference = GuestMemoryMmap<AtomicBitmap>;

const PAGE: u64 = 0x1000;

fn back(specs: impl IntoIterator<Item = RegionSpec>) -> AddressSpace {
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    AddressSpace::back(layout, specs).unwrap().0
}

/// Two adjacent read-write pages at 0 and `PAGE`, in both.
fn adjacent() -> (AddressSpace, Reference) {
    let space = back([
        RegionSpec::ram(GuestAddress(0), PAGE),
        RegionSpec::ram(GuestAddress(PAGE), PAGE),
    ]);
    let reference = Reference::from_ranges(&[
        (GuestAddress(0), PAGE as usize),
        (GuestAddress(PAGE), PAGE as usize),
    ])
    .unwrap();
    (space, reference)
}

/// A source that gives at most `chunk` bytes a read.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl ReadVolatile for Chunked<'_> {
    fn read_volatile<B: vm_memory::bitmap::BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf.copy_from(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn a_region_without_memory_is_not_in_the_view() {
    let space = back([RegionSpec::ram(GuestAddress(0), PAGE)]);
    let planned = Region::plan(RegionSpec::ram(GuestAddress(PAGE), PAGE)).unwrap();
    space.insert_region(Arc::new(planned)).unwrap();
    let snap = space.snapshot();
    assert_eq!(snap.regions().count(), 2);
    assert_eq!(GuestMemoryBackend::num_regions(&*snap), 1);
    assert!(GuestMemoryBackend::find_region(&*snap, GuestAddress(PAGE)).is_none());
    assert_eq!(
        GuestMemoryBackend::last_addr(&*snap),
        GuestAddress(PAGE - 1)
    );
}

/// Read-only memory is found and counted, gives no slice and no host address, so the
/// snapshot's reads stop at its edge; `GuestBytes` reads it.
#[test]
fn memory_not_read_write_gives_no_slice_and_guest_bytes_reads_it() {
    let space = back([
        RegionSpec::ram(GuestAddress(0), PAGE),
        RegionSpec::ram(GuestAddress(PAGE), PAGE).with_protection(Protection::Read),
    ]);
    let snap = space.snapshot();
    assert_eq!(GuestMemoryBackend::num_regions(&*snap), 2);
    let rom = GuestMemoryBackend::find_region(&*snap, GuestAddress(PAGE)).expect("found");
    assert_eq!(rom.start_addr(), GuestAddress(PAGE));
    assert!(matches!(
        snap.get_slice(GuestAddress(PAGE), 1),
        Err(GuestMemoryError::HostAddressNotAvailable)
    ));
    assert!(matches!(
        snap.get_host_address(GuestAddress(PAGE)),
        Err(GuestMemoryError::HostAddressNotAvailable)
    ));
    let mut buf = [0xa5u8; 16];
    assert!(matches!(
        snap.read_slice(&mut buf, GuestAddress(PAGE)),
        Err(GuestMemoryError::HostAddressNotAvailable)
    ));
    // Across the edge: the read-write page only.
    assert_eq!(snap.read(&mut buf, GuestAddress(PAGE - 8)).unwrap(), 8);
    snap.bytes()
        .read_slice(&mut buf, GuestAddress(PAGE))
        .unwrap();
    assert_eq!(buf, [0; 16]);
}

/// vm-memory's `GuestMemoryMmap::from_ranges` does not say whether a region is on hugetlbfs
/// and gives anonymous memory, without a file; a snapshot's region with memory says whether it
/// is on hugetlbfs, and a memfd region gives its file.
#[test]
fn is_hugetlbfs_answers_and_a_memfd_region_gives_its_file() {
    let space = back([
        RegionSpec::ram(GuestAddress(0), PAGE),
        RegionSpec::ram(GuestAddress(PAGE), PAGE).with_backing(Backing::Memfd),
    ]);
    let reference = Reference::from_ranges(&[
        (GuestAddress(0), PAGE as usize),
        (GuestAddress(PAGE), PAGE as usize),
    ])
    .unwrap();
    let snap = space.snapshot();
    let ours: Vec<_> = GuestMemoryBackend::iter(&*snap).collect();
    let theirs: Vec<_> = reference.iter().collect();
    assert_eq!((ours.len(), theirs.len()), (2, 2));
    for (o, t) in ours.iter().zip(&theirs) {
        assert_eq!(o.is_hugetlbfs(), Some(false));
        assert_eq!(t.is_hugetlbfs(), None);
        assert!(t.file_offset().is_none());
    }
    assert!(ours[0].file_offset().is_none());
    assert_eq!(ours[1].file_offset().map(|f| f.start()), Some(0));
}

/// A source that stops short in one region: the snapshot (as vm-memory) goes on reading into
/// the next, `GuestBytes` stops; an exact read goes on reading in `GuestBytes` and fails in
/// vm-memory.
#[test]
fn guest_bytes_stream_reads_stop_at_a_short_read_and_exact_reads_read_again() {
    let (space, reference) = adjacent();
    let snap = space.snapshot();
    let data: Vec<u8> = (1..=16).collect();
    let at = GuestAddress(PAGE - 8);
    let read = |m: &dyn Fn(&mut Chunked<'_>) -> Result<usize, GuestMemoryError>| {
        let mut src = Chunked {
            data: &data,
            chunk: 4,
        };
        m(&mut src).unwrap()
    };
    assert_eq!(
        read(&|s| reference.read_volatile_from(at, s, 16)),
        8,
        "vm-memory reads once per region"
    );
    assert_eq!(read(&|s| snap.read_volatile_from(at, s, 16)), 8);
    assert_eq!(read(&|s| snap.bytes().read_volatile_from(at, s, 16)), 4);

    let mut src = Chunked {
        data: &data,
        chunk: 4,
    };
    assert!(matches!(
        reference.read_exact_volatile_from(at, &mut src, 16),
        Err(GuestMemoryError::PartialBuffer {
            expected: 16,
            completed: 8
        })
    ));
    let mut src = Chunked {
        data: &data,
        chunk: 4,
    };
    snap.bytes()
        .read_exact_volatile_from(at, &mut src, 16)
        .unwrap();
    let mut back = [0u8; 16];
    snap.read_slice(&mut back, at).unwrap();
    assert_eq!(back[..], data[..]);
}

/// `to_guest_memory_mmap`'s regions have no dirty bitmap: a write through it is not marked in
/// a region that tracks writes, where the same write through the snapshot is.
#[test]
fn to_guest_memory_mmap_marks_no_dirty_page() {
    let space = back([RegionSpec::ram(GuestAddress(0), 2 * PAGE).with_dirty_tracking(true)]);
    let snap = space.snapshot();
    // SAFETY: `snap` outlives `mmap`.
    let mmap = unsafe { snap.to_guest_memory_mmap() }.unwrap();
    mmap.write_obj(7u32, GuestAddress(PAGE)).unwrap();
    let region = GuestMemoryBackend::find_region(&*snap, GuestAddress(0)).unwrap();
    assert_eq!(snap.read_obj::<u32>(GuestAddress(PAGE)).unwrap(), 7);
    assert!(!region.bitmap().dirty_at(PAGE as usize));
    snap.write_obj(7u32, GuestAddress(0)).unwrap();
    assert!(region.bitmap().dirty_at(0));
}
