//! `Snapshot::bytes`: accesses that run from a readable region into one the guest cannot read
//! stop at its start, an access that starts there is an error, and the volatile copies in and
//! out go through the same rules.

use memvisor_space::{AddressSpace, Layout, Protection, RegionSpec};
use vm_memory::bitmap::BitmapSlice;
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryError, ReadVolatile, VolatileMemoryError, VolatileSlice,
};

const PAGE: u64 = 0x1000;
const PAGE_LEN: usize = 0x1000;

/// RAM at `0..PAGE`, a region without access at `PAGE..2 * PAGE`, RAM again at
/// `2 * PAGE..3 * PAGE`.
fn space() -> AddressSpace {
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let (space, _) = AddressSpace::back(
        layout,
        [
            RegionSpec::ram(GuestAddress(0), PAGE),
            RegionSpec::ram(GuestAddress(PAGE), PAGE).with_protection(Protection::None),
            RegionSpec::ram(GuestAddress(2 * PAGE), PAGE),
        ],
    )
    .unwrap();
    space
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect()
}

#[test]
fn read_into_unreadable_region_stops_at_its_start() {
    let space = space();
    let snap = space.snapshot();
    let bytes = snap.bytes();
    let data = pattern(PAGE_LEN);
    bytes.write_slice(&data, GuestAddress(0)).unwrap();

    let mut buf = vec![0u8; 0x1000];
    assert_eq!(bytes.read(&mut buf, GuestAddress(0x800)).unwrap(), 0x800);
    assert_eq!(buf[..0x800], data[0x800..]);
    assert!(buf[0x800..].iter().all(|&b| b == 0));

    let mut buf = vec![0u8; 0x1000];
    assert!(matches!(
        bytes.read_slice(&mut buf, GuestAddress(0x800)),
        Err(GuestMemoryError::PartialBuffer {
            expected: 0x1000,
            completed: 0x800
        })
    ));
}

#[test]
fn read_starting_in_unreadable_region_errors() {
    let space = space();
    let snap = space.snapshot();
    let bytes = snap.bytes();
    let mut buf = [0u8; 8];
    assert!(matches!(
        bytes.read(&mut buf, GuestAddress(PAGE + 8)),
        Err(GuestMemoryError::HostAddressNotAvailable)
    ));
    assert!(bytes.read_obj::<u64>(GuestAddress(PAGE)).is_err());
    // Past every region: the address is reported.
    assert!(matches!(
        bytes.read(&mut buf, GuestAddress(1 << 29)),
        Err(GuestMemoryError::InvalidGuestAddress(GuestAddress(a))) if a == 1 << 29
    ));
    // The writable neighbour beyond the gap is read as usual.
    bytes
        .write_obj(0x1122_3344_u32, GuestAddress(2 * PAGE))
        .unwrap();
    assert_eq!(
        bytes.read_obj::<u32>(GuestAddress(2 * PAGE)).unwrap(),
        0x1122_3344
    );
}

#[test]
fn write_through_bytes_goes_to_writable_memory_only() {
    let space = space();
    let snap = space.snapshot();
    let bytes = snap.bytes();
    assert_eq!(bytes.write(&[7u8; 16], GuestAddress(0x10)).unwrap(), 16);
    assert_eq!(
        bytes.read_obj::<[u8; 16]>(GuestAddress(0x10)).unwrap(),
        [7; 16]
    );
    assert!(bytes.write(&[7u8; 16], GuestAddress(PAGE)).is_err());
}

#[test]
fn read_volatile_from_source_fills_guest_memory() {
    let space = space();
    let snap = space.snapshot();
    let bytes = snap.bytes();
    let data = pattern(64);

    let mut src: &[u8] = &data;
    assert_eq!(
        bytes
            .read_volatile_from(GuestAddress(0x100), &mut src, 64)
            .unwrap(),
        64
    );
    let mut back = [0u8; 64];
    bytes.read_slice(&mut back, GuestAddress(0x100)).unwrap();
    assert_eq!(back[..], data[..]);

    let mut src: &[u8] = &data[..32];
    bytes
        .read_exact_volatile_from(GuestAddress(2 * PAGE), &mut src, 32)
        .unwrap();
    assert_eq!(
        bytes.read_obj::<[u8; 32]>(GuestAddress(2 * PAGE)).unwrap()[..],
        data[..32]
    );
    // Into the region without access: refused.
    let mut src: &[u8] = &data;
    assert!(
        bytes
            .read_exact_volatile_from(GuestAddress(PAGE), &mut src, 64)
            .is_err()
    );
}

#[test]
fn write_all_volatile_to_past_readable_memory_is_partial() {
    let space = space();
    let snap = space.snapshot();
    let bytes = snap.bytes();
    let data = pattern(PAGE_LEN);
    bytes.write_slice(&data, GuestAddress(0)).unwrap();

    let mut out = Vec::new();
    assert_eq!(
        bytes
            .write_volatile_to(GuestAddress(PAGE - 16), &mut out, 64)
            .unwrap(),
        16
    );
    assert_eq!(out[..], data[data.len() - 16..]);
    let mut out = Vec::new();
    assert!(matches!(
        bytes.write_all_volatile_to(GuestAddress(PAGE - 16), &mut out, 64),
        Err(GuestMemoryError::PartialBuffer {
            expected: 64,
            completed: 16
        })
    ));
}

/// A layout reaching the top of the 64-bit space, with a RAM window over its last 1 MiB and
/// RAM at guest address 0.
fn top_layout() -> Layout {
    use memvisor_space::{Window, WindowKind};
    Layout::new(
        GuestAddress(u64::MAX),
        [
            Window::new(WindowKind::Ram, GuestAddress(0), 1 << 20).unwrap(),
            Window::new(
                WindowKind::Ram,
                GuestAddress(u64::MAX - (1 << 20) + 1),
                1 << 20,
            )
            .unwrap(),
        ],
    )
    .unwrap()
}

#[test]
fn memory_ending_at_the_top_of_the_space_is_refused_before_any_is_made() {
    // vm-memory's access loop takes the address after the last byte of the space for 0, so an
    // access running past the top would go on at guest address 0.
    let top = GuestAddress(u64::MAX - PAGE + 1);
    let err = AddressSpace::back(
        top_layout(),
        [
            RegionSpec::ram(GuestAddress(0), PAGE),
            RegionSpec::ram(top, PAGE),
        ],
    )
    .unwrap_err();
    assert!(
        matches!(err, memvisor_space::Error::Overflow { base, size: PAGE } if base == top.0),
        "{err}"
    );
    // Planned (no memory), the same region is fine.
    let planned = AddressSpace::plan(top_layout(), [RegionSpec::ram(top, PAGE)]).unwrap();
    assert_eq!(planned.snapshot().len(), 1);
}

#[test]
fn access_running_off_the_highest_memory_stops_there() {
    let (space, _) = AddressSpace::back(
        top_layout(),
        [
            RegionSpec::ram(GuestAddress(0), PAGE),
            RegionSpec::ram(GuestAddress(u64::MAX - 2 * PAGE + 1), PAGE),
        ],
    )
    .unwrap();
    let snap = space.snapshot();
    let end = u64::MAX - PAGE + 1;
    assert!(matches!(
        snap.write_slice(&[1; 8], GuestAddress(end - 4)),
        Err(GuestMemoryError::PartialBuffer {
            expected: 8,
            completed: 4
        })
    ));
    assert_eq!(snap.read_obj::<u32>(GuestAddress(0)).unwrap(), 0);
}

/// A source that gives at most `chunk` bytes a read, as a pipe or a socket may.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl ReadVolatile for Chunked<'_> {
    fn read_volatile<B: BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let n = self.chunk.min(self.data.len());
        let mut part = &self.data[..n];
        let read = part.read_volatile(buf)?;
        self.data = &self.data[read..];
        Ok(read)
    }
}

/// Two adjacent RAM regions, `0..PAGE` and `PAGE..2 * PAGE`.
fn adjacent() -> AddressSpace {
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let (space, _) = AddressSpace::back(
        layout,
        [
            RegionSpec::ram(GuestAddress(0), PAGE),
            RegionSpec::ram(GuestAddress(PAGE), PAGE),
        ],
    )
    .unwrap();
    space
}

#[test]
fn read_volatile_from_short_source_fills_only_the_bytes_it_counts() {
    let space = adjacent();
    let snap = space.snapshot();
    let data = pattern(16);
    let at = GuestAddress(PAGE - 8);
    let mut src = Chunked {
        data: &data,
        chunk: 4,
    };
    // The first read stops short inside the first region: that is all that is read, and the
    // count says where it ends.
    let n = snap.bytes().read_volatile_from(at, &mut src, 16).unwrap();
    assert_eq!(n, 4);
    let mut back = [0u8; 16];
    snap.bytes().read_slice(&mut back, at).unwrap();
    assert_eq!(back[..4], data[..4]);
    assert!(back[4..].iter().all(|&b| b == 0), "{back:?}");
    // The rest of the source is still there for the next call.
    assert_eq!(src.data, &data[4..]);
}

#[test]
fn read_exact_volatile_from_chunked_source_fills_across_regions() {
    let space = adjacent();
    let snap = space.snapshot();
    let data = pattern(16);
    let at = GuestAddress(PAGE - 6);
    let mut src = Chunked {
        data: &data,
        chunk: 4,
    };
    snap.bytes()
        .read_exact_volatile_from(at, &mut src, 16)
        .unwrap();
    let mut back = [0u8; 16];
    snap.bytes().read_slice(&mut back, at).unwrap();
    assert_eq!(back, data[..]);
    // A source that ends early: the bytes it had are in place, and the count says so.
    let mut src = Chunked {
        data: &data[..10],
        chunk: 3,
    };
    assert!(matches!(
        snap.bytes()
            .read_exact_volatile_from(GuestAddress(0x100), &mut src, 16),
        Err(GuestMemoryError::PartialBuffer {
            expected: 16,
            completed: 10
        })
    ));
    snap.bytes()
        .read_slice(&mut back, GuestAddress(0x100))
        .unwrap();
    assert_eq!(back[..10], data[..10]);
}

/// A sink that scribbles over the buffer it is handed before it takes the bytes, as a
/// `WriteVolatile` written in safe code may: the slice it gets allows writes.
#[cfg(unix)]
struct Scribbler(Vec<u8>);

#[cfg(unix)]
impl vm_memory::WriteVolatile for Scribbler {
    fn write_volatile<B: BitmapSlice>(
        &mut self,
        buf: &VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let mut got = vec![0u8; buf.len()];
        buf.copy_to(&mut got[..]);
        buf.write_slice(&vec![0xee; buf.len()], 0)?;
        self.0.extend_from_slice(&got);
        Ok(got.len())
    }
}

/// Copying read-only memory out hands the sink no slice of it: a sink that writes to what it
/// is handed neither faults on the read-only mapping nor changes it, and gets its bytes.
#[cfg(unix)]
#[test]
#[cfg_attr(miri, ignore = "maps a file: Miri has no file mappings")]
fn write_volatile_to_from_read_only_memory_hands_out_no_slice_of_it() {
    use memvisor_space::{Backing, RegionType};

    // More than the 64 KiB copied at a time.
    let rom_len = 20 * PAGE_LEN;
    let image = pattern(rom_len);
    let path = std::env::temp_dir().join(format!("memvisor-rom-{}.img", std::process::id()));
    std::fs::write(&path, &image).unwrap();
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let rom_base = 0xffc0_0000;
    let rom = RegionSpec::new(RegionType::Firmware, GuestAddress(rom_base), 20 * PAGE)
        .with_protection(Protection::Read)
        .with_backing(Backing::File {
            path: path.clone(),
            offset: 0,
        });
    let (space, _) =
        AddressSpace::back(layout, [RegionSpec::ram(GuestAddress(0), PAGE), rom]).unwrap();
    std::fs::remove_file(&path).unwrap();
    let snap = space.snapshot();
    let bytes = snap.bytes();

    let mut sink = Scribbler(Vec::new());
    let at = GuestAddress(rom_base + 0x10);
    let count = rom_len - 0x10;
    assert_eq!(
        bytes.write_volatile_to(at, &mut sink, count).unwrap(),
        count
    );
    assert_eq!(sink.0[..], image[0x10..]);
    let mut sink = Scribbler(Vec::new());
    bytes
        .write_all_volatile_to(GuestAddress(rom_base), &mut sink, rom_len)
        .unwrap();
    assert_eq!(sink.0, image);
    // The read-only memory is as it was.
    let mut back = vec![0u8; rom_len];
    bytes.read_slice(&mut back, GuestAddress(rom_base)).unwrap();
    assert_eq!(back, image);

    // Writable memory is handed out as vm-memory hands it out: the sink's writes land there.
    bytes.write_slice(&[1; 16], GuestAddress(0)).unwrap();
    let mut sink = Scribbler(Vec::new());
    bytes
        .write_all_volatile_to(GuestAddress(0), &mut sink, 16)
        .unwrap();
    assert_eq!(sink.0, [1; 16]);
    assert_eq!(snap.read_obj::<u8>(GuestAddress(0)).unwrap(), 0xee);
}

/// A stream that hands out `good` bytes of 0xee at most `chunk` at a time, then fails.
struct Failing {
    good: usize,
    chunk: usize,
}

impl ReadVolatile for Failing {
    fn read_volatile<B: BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        if self.good == 0 {
            return Err(VolatileMemoryError::IOError(std::io::Error::other(
                "the device failed",
            )));
        }
        let n = buf.len().min(self.chunk).min(self.good);
        buf.copy_from(&vec![0xee; n]);
        self.good -= n;
        Ok(n)
    }
}

impl vm_memory::WriteVolatile for Failing {
    fn write_volatile<B: BitmapSlice>(
        &mut self,
        _buf: &VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        Err(VolatileMemoryError::IOError(std::io::Error::other(
            "the device failed",
        )))
    }
}

/// Streams that fail, at once or after a few bytes, through the snapshot's vm-memory `Bytes`
/// and through `Snapshot::bytes`, over two adjacent dirty-tracked regions: an error (or the
/// count of what came before it), never a panic; the pages marked dirty are exactly the pages
/// whose bytes changed; a sink that fails changes nothing and marks nothing.
#[test]
fn failing_streams_mark_exactly_the_pages_they_filled() {
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let (space, _) = AddressSpace::back(
        layout,
        [
            RegionSpec::ram(GuestAddress(0), PAGE).with_dirty_tracking(true),
            RegionSpec::ram(GuestAddress(PAGE), PAGE).with_dirty_tracking(true),
        ],
    )
    .unwrap();
    let snap = space.snapshot();
    let page = memvisor_vmem::page_size() as u64;
    let at = GuestAddress(PAGE - 8);
    let check = |what: &str| {
        for r in snap.regions() {
            let mut bytes = vec![0u8; PAGE_LEN];
            snap.read_slice(&mut bytes, r.base()).unwrap();
            for p in 0..PAGE / page {
                let range =
                    usize::try_from(p * page).unwrap()..usize::try_from((p + 1) * page).unwrap();
                let changed = bytes[range].iter().any(|&b| b != 0);
                assert_eq!(
                    r.is_dirty(p * page),
                    changed,
                    "{what}: {:#x} page {p}",
                    r.base().0
                );
            }
        }
    };
    let reset = || {
        for r in snap.regions() {
            snap.write_slice(&[0; PAGE_LEN], r.base()).unwrap();
            r.clear_dirty_log();
        }
    };
    // Under Miri, which interprets every byte compared, the cases that fail at once and part
    // way across the edge.
    let cases: &[(usize, usize)] = if cfg!(miri) {
        &[(0, 16), (12, 4)]
    } else {
        &[(0, 16), (4, 4), (8, 16), (12, 16), (12, 4), (16, 16)]
    };
    for &(good, chunk) in cases {
        for bytes in [false, true] {
            reset();
            let mut src = Failing { good, chunk };
            let what = format!("{good} good bytes, {chunk} a read, GuestBytes {bytes}");
            let result = if bytes {
                snap.bytes().read_volatile_from(at, &mut src, 16)
            } else {
                snap.read_volatile_from(at, &mut src, 16)
            };
            if good == 0 {
                assert!(result.is_err(), "{what}: {result:?}");
            }
            check(&what);
            reset();
            let mut src = Failing { good, chunk };
            let result = if bytes {
                snap.bytes().read_exact_volatile_from(at, &mut src, 16)
            } else {
                snap.read_exact_volatile_from(at, &mut src, 16)
            };
            if good < 16 {
                assert!(result.is_err(), "{what}: {result:?}");
            }
            check(&what);
        }
    }
    // A sink that fails is given guest memory to read, and writes none of it.
    reset();
    snap.write_slice(&[1; 16], at).unwrap();
    for r in snap.regions() {
        r.clear_dirty_log();
    }
    assert!(
        snap.write_volatile_to(at, &mut Failing { good: 0, chunk: 0 }, 16)
            .is_err()
    );
    assert!(
        snap.bytes()
            .write_all_volatile_to(at, &mut Failing { good: 0, chunk: 0 }, 16)
            .is_err()
    );
    assert!(
        snap.regions()
            .all(|r| !r.is_dirty(0) && !r.is_dirty(PAGE - 1))
    );
}
