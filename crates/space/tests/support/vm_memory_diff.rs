//! A snapshot against vm-memory's own `GuestMemoryMmap<AtomicBitmap>` built from the same
//! ranges, call for call, the ranges and calls read from bytes: `tests/vm_memory_diff.rs` runs
//! it over bytes proptest draws and the `space_vm_memory_diff` fuzz target (which includes
//! this file) over the fuzzer's. The ranges: up to 10 read-write regions (private or shared
//! anonymous memory or a memfd, each dirty-tracked or not, 1 to 4 pages or, at most two, of
//! the run's large size), laid one after the other from one of three starts (address 0, just
//! below 4 GiB, and the last pages of the 64-bit space, where the last region may end at the
//! top of the space), adjacent or with gaps; some gaps hold a region without memory (planned
//! RAM), which vm-memory's view of a snapshot leaves out, so the reference has nothing there.
//! More than 8 regions make lookups go through the snapshot's hit index. Both must take the
//! ranges or both refuse them. Then a sequence of calls at region edges (start - 1, start,
//! end - 1, end), across adjacent regions and gaps, at 0 and at `u64::MAX`, with lengths 0, 1,
//! a few bytes, a page and one more, and `usize::MAX`: every method of `GuestMemoryBackend`
//! and of `Bytes<GuestAddress>` (`read`, `write`, `read_slice`, `write_slice`, `read_obj`,
//! `write_obj`, volatile reads from a source and writes to a sink, exact and all variants,
//! `load` and `store` of every width, `get_slice`, `get_slices`, `try_access`,
//! `check_address`, `check_range`, `checked_offset`, `to_region_addr`, `find_region`,
//! `address_in_range`, `last_addr`, `num_regions`, `iter`, `get_host_address`) and the
//! region-level ones, through the snapshot and (the `Bytes` calls) through its `GuestBytes`.
//! Every result (value, count, error, compared as text, so errors by variant and fields),
//! every byte the guest holds afterwards and every dirty page of a tracked region must be the
//! reference's; a host address found must be the region's own memory at that offset.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use memvisor_space::{
    AddressSpace, Backing, Layout, Region, RegionSpec, Snapshot, Window, WindowKind,
};
use vm_memory::bitmap::{AtomicBitmap, Bitmap};
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};

/// Reads numbers from the bytes, little-endian; past the end every read is zero.
struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((first, rest)) => {
                self.bytes = rest;
                *first
            }
            None => 0,
        }
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |v, i| v | (u64::from(self.u8()) << (8 * i)))
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.u64() % n }
    }
}

type Reference = GuestMemoryMmap<AtomicBitmap>;

const PAGE: u64 = 4096;
/// Regions, bytes of a buffer.
const MAX_REGIONS: u64 = 10;
const MAX_BUF: usize = 3 * PAGE as usize;
/// Large regions per input: each is compared whole after every call that writes.
const MAX_LARGE: u32 = 2;

/// What one run may do: calls, and the size of a large region.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Calls at most.
    pub steps: usize,
    /// Bytes of a large region (at most `MAX_LARGE` of them, below 8 GiB).
    pub large: u64,
}
/// Where the regions are laid from.
const STARTS: [u64; 3] = [0, (4 << 30) - 4 * PAGE, 0u64.wrapping_sub(12 * PAGE)];

/// A range of the input: memory (in both) or a planned region without memory (memvisor only).
#[derive(Clone, Copy, Debug)]
struct Range {
    base: u64,
    size: u64,
    memory: bool,
    tracked: bool,
    backing: u8,
}

fn layout() -> Layout {
    let half = 1u64 << 63;
    let windows = [
        Window::new(WindowKind::Ram, GuestAddress(0), half).expect("the lower window"),
        Window::new(WindowKind::Ram, GuestAddress(half), half).expect("the upper window"),
    ];
    Layout::new(GuestAddress(u64::MAX), windows).expect("the layout")
}

/// The ranges the input asks for, in address order; `None` where they wrap past the top.
fn ranges(input: &mut Input<'_>, large_size: u64) -> Option<Vec<Range>> {
    let mut at = STARTS[input.below(STARTS.len() as u64) as usize];
    let count = 1 + input.below(MAX_REGIONS);
    let mut out = Vec::new();
    let mut large = 0;
    for _ in 0..count {
        let shape = input.u8();
        let gap = match shape % 4 {
            0 | 1 => 0,
            2 => PAGE,
            _ => PAGE * (1 + input.below(3)),
        };
        // A planned region filling the gap, which vm-memory's view must not show.
        if gap != 0 && shape & 0x10 != 0 {
            out.push(Range {
                base: at,
                size: gap,
                memory: false,
                tracked: false,
                backing: 0,
            });
        }
        at = at.checked_add(gap)?;
        let size = if shape & 0x20 != 0 && at < (8 << 30) && large < MAX_LARGE {
            large += 1;
            large_size
        } else {
            PAGE * (1 + input.below(4))
        };
        out.push(Range {
            base: at,
            size,
            memory: true,
            tracked: shape & 0x40 != 0,
            backing: (shape >> 2) % 3,
        });
        at = at.checked_add(size)?;
    }
    Some(out)
}

fn spec(r: &Range) -> RegionSpec {
    let spec = RegionSpec::ram(GuestAddress(r.base), r.size);
    let backing = match r.backing {
        0 => Backing::AnonymousPrivate,
        1 => Backing::AnonymousShared,
        _ => Backing::Memfd,
    };
    spec.with_backing(backing).with_dirty_tracking(r.tracked)
}

/// An address at an edge of one of the ranges, or at the ends of the space.
fn address(input: &mut Input<'_>, ranges: &[Range]) -> u64 {
    let r = ranges[input.below(ranges.len() as u64) as usize];
    let end = r.base.wrapping_add(r.size);
    let near = match input.u8() % 10 {
        0 => return 0,
        1 => return u64::MAX - u64::from(input.u8() % 8),
        2 => return input.u64(),
        3 => r.base.wrapping_sub(1),
        4 => r.base,
        5 => end.wrapping_sub(1),
        6 => end,
        7 => r.base.wrapping_add(input.below(r.size)),
        _ => end.wrapping_sub(1 + u64::from(input.u8() % 16)),
    };
    near.wrapping_add(u64::from(input.u8() % 4)).wrapping_sub(1)
}

/// A length at the edges: 0, 1, a few bytes, a page and one more, and sometimes huge.
fn length(input: &mut Input<'_>) -> usize {
    let p = PAGE as usize;
    match input.u8() % 9 {
        0 => 0,
        1 => 1,
        2 => usize::MAX,
        3 => p - 1,
        4 => p,
        5 => p + 1,
        6 => 2 * p + usize::from(input.u8()),
        _ => usize::from(input.u8() % 24),
    }
}

/// A length for a buffer of our own: `length` bounded by `MAX_BUF`.
fn buffer(input: &mut Input<'_>) -> usize {
    length(input).min(MAX_BUF)
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i * 7) as u8)).collect()
}

/// The region that holds `addr` and the offset there, as the memory's region list has them.
fn place<M: GuestMemoryBackend>(m: &M, addr: u64) -> Option<(u64, u64)> {
    m.iter()
        .find(|r| addr >= r.start_addr().0 && addr - r.start_addr().0 < r.len())
        .map(|r| (r.start_addr().0, addr - r.start_addr().0))
}

/// One call on `m`, recorded as text (values, counts and errors; host addresses as the region
/// and offset they belong to).
fn call<M: GuestMemoryBackend>(m: &M, op: u8, addr: u64, len: usize, seed: u8) -> String {
    let a = GuestAddress(addr);
    match op {
        0..=9 => bytes_call(m, op, addr, len, seed),
        10 => format!(
            "get_slice {:?}",
            m.get_slice(a, len).map(|s| (s.len(), place(m, addr)))
        ),
        11 => {
            let slices: Vec<_> = m
                .get_slices(a, len)
                .take(16)
                .map(|s| s.map(|s| s.len()))
                .collect();
            format!("get_slices {slices:?}")
        }
        12 => {
            let mut calls = Vec::new();
            #[allow(deprecated)]
            let r = m.try_access(len, a, |off, count, raddr, region| {
                calls.push((off, count, raddr, region.start_addr()));
                if calls.len() > 16 {
                    return Err(GuestMemoryError::InvalidBackendAddress);
                }
                Ok(count.min(usize::from(seed) + 1))
            });
            format!("try_access {r:?} {calls:?}")
        }
        13 => format!(
            "check {:?} {} {} {:?} {:?}",
            m.check_address(a),
            m.address_in_range(a),
            m.check_range(a, len),
            m.checked_offset(a, len),
            m.checked_offset(a, usize::from(seed))
        ),
        14 => format!(
            "find {:?} {:?}",
            m.find_region(a)
                .map(|r| (r.start_addr(), r.len(), r.last_addr())),
            m.to_region_addr(a).map(|(r, o)| (r.start_addr(), o))
        ),
        15 => {
            // The host address must be the region's own memory at that offset: compare the
            // offset from the region's host address of offset 0.
            let r = m.get_host_address(a).map(|host| {
                let region = m.find_region(a).expect("a region holds a host address");
                let first = region
                    .get_host_address(MemoryRegionAddress(0))
                    .expect("its first byte has one");
                (host as usize - first as usize, place(m, addr))
            });
            format!("get_host_address {r:?}")
        }
        _ => region_call(m, addr, len, seed),
    }
}

/// One `Bytes<GuestAddress>` call on `m`, recorded as text.
fn bytes_call<B: Bytes<GuestAddress, E = GuestMemoryError>>(
    m: &B,
    op: u8,
    addr: u64,
    len: usize,
    seed: u8,
) -> String {
    let a = GuestAddress(addr);
    match op {
        0 => format!("write {:?}", m.write(&pattern(seed, len.min(MAX_BUF)), a)),
        1 => format!(
            "write_slice {:?}",
            m.write_slice(&pattern(seed, len.min(MAX_BUF)), a)
        ),
        2 => {
            let mut buf = vec![0xa5; len.min(MAX_BUF)];
            let r = m.read(&mut buf, a);
            format!("read {r:?} {buf:?}")
        }
        3 => {
            let mut buf = vec![0xa5; len.min(MAX_BUF)];
            let r = m.read_slice(&mut buf, a);
            format!("read_slice {r:?} {buf:?}")
        }
        4 => format!(
            "write_obj {:?} {:?} {:?}",
            m.write_obj(u64::from(seed) * 0x0101_0101_0101_0101, a),
            m.write_obj(u16::from(seed), a),
            m.write_obj([seed; 5], a)
        ),
        5 => format!(
            "read_obj {:?} {:?} {:?}",
            m.read_obj::<u64>(a),
            m.read_obj::<u32>(a),
            m.read_obj::<[u8; 3]>(a)
        ),
        6 => format!(
            "store {:?} {:?} {:?} {:?}",
            m.store(u64::from(seed) << 3, a, Ordering::SeqCst),
            m.store(u32::from(seed), a, Ordering::Release),
            m.store(u16::from(seed), a, Ordering::Relaxed),
            m.store(seed, a, Ordering::SeqCst)
        ),
        7 => format!(
            "load {:?} {:?} {:?} {:?}",
            m.load::<u64>(a, Ordering::SeqCst),
            m.load::<u32>(a, Ordering::Acquire),
            m.load::<u16>(a, Ordering::Relaxed),
            m.load::<u8>(a, Ordering::SeqCst)
        ),
        8 => {
            // A source shorter than, equal to or longer than the count.
            let data = pattern(seed, usize::from(seed) * 64);
            let mut src: &[u8] = &data;
            let r = m.read_volatile_from(a, &mut src, len);
            let mut src2: &[u8] = &data;
            let exact = m.read_exact_volatile_from(a, &mut src2, len);
            format!(
                "read_volatile_from {r:?} left {} exact {exact:?} left {}",
                src.len(),
                src2.len()
            )
        }
        9 => {
            let mut sink = Vec::new();
            let r = m.write_volatile_to(a, &mut sink, len.min(1 << 20));
            let mut all = Vec::new();
            let all_r = m.write_all_volatile_to(a, &mut all, len.min(1 << 20));
            format!("write_volatile_to {r:?} {sink:?} all {all_r:?} {all:?}")
        }
        _ => unreachable!("a Bytes call is 0 to 9"),
    }
}

/// The region-level methods of the region that `addr` picks (by its rank): the checks at every
/// edge offset (0, the last byte, the end, one past it, `u64::MAX`) and one more, the accesses
/// at the offset `seed` picks.
fn region_call<M: GuestMemoryBackend>(m: &M, addr: u64, len: usize, seed: u8) -> String {
    let n = m.num_regions();
    let Some(r) = m.iter().nth(addr as usize % n.max(1)) else {
        return "no region".into();
    };
    let size = r.len();
    let offsets = [0, size - 1, size, size + 1, u64::MAX, addr % (size + 8)];
    let first = r.get_host_address(MemoryRegionAddress(0));
    let checks: Vec<String> = offsets
        .iter()
        .map(|&offset| {
            let at = MemoryRegionAddress(offset);
            // A host address as its distance from the region's first byte.
            let host = r.get_host_address(at).map(|host| {
                let first = *first.as_ref().expect("its first byte has one");
                host as usize - first as usize
            });
            format!(
                "{:?} {} {:?} {:?} {host:?}",
                r.check_address(at),
                r.address_in_range(at),
                r.checked_offset(at, len),
                r.get_slice(at, len).map(|s| s.len()),
            )
        })
        .collect();
    let at = MemoryRegionAddress(offsets[usize::from(seed) % offsets.len()]);
    let mut buf = vec![0u8; len.min(MAX_BUF)];
    let read = r.read(&mut buf, at);
    format!(
        "region {:?} {size:#x} {:?} {:?} {checks:?} {read:?} {:?} {:?}",
        r.start_addr(),
        r.last_addr(),
        r.to_region_addr(GuestAddress(addr)),
        r.write(&pattern(seed, len.min(MAX_BUF)), at),
        r.store(seed, at, Ordering::Relaxed),
    )
}

/// Every byte and every dirty page of both, region by region (the reference's regions are
/// all tracked; memvisor's untracked ones must show nothing dirty).
fn compare_memory(ours: &Snapshot, theirs: &Reference, ranges: &[Range]) {
    let mut tracked = ranges.iter().filter(|r| r.memory).map(|r| r.tracked);
    for (o, t) in ours.iter().zip(theirs.iter()) {
        assert_eq!(o.start_addr(), t.start_addr());
        assert_eq!(o.len(), t.len());
        let len = o.len() as usize;
        let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
        o.read_slice(&mut a, MemoryRegionAddress(0)).unwrap();
        t.read_slice(&mut b, MemoryRegionAddress(0)).unwrap();
        assert!(a == b, "memory of {:?}", o.start_addr());
        let on = tracked.next().expect("a range per region");
        for page in 0..o.len() / PAGE {
            let at = (page * PAGE) as usize;
            let want = on && t.bitmap().dirty_at(at);
            assert_eq!(
                o.bitmap().dirty_at(at),
                want,
                "dirty page {page} of {:?}",
                o.start_addr()
            );
        }
    }
}

/// Builds both memories from `data` and runs the calls it asks for, comparing as it goes;
/// panics at the first difference.
pub fn run(data: &[u8], limits: Limits) {
    let mut input = Input::new(data);
    let Some(ranges) = ranges(&mut input, limits.large) else {
        return;
    };
    let specs: Vec<RegionSpec> = ranges.iter().filter(|r| r.memory).map(spec).collect();
    let with_memory: Vec<(GuestAddress, usize)> = ranges
        .iter()
        .filter(|r| r.memory)
        .map(|r| (GuestAddress(r.base), r.size as usize))
        .collect();
    let ours = AddressSpace::back(layout(), specs);
    let theirs = Reference::from_ranges(&with_memory);
    let (space, theirs) = match (ours, theirs) {
        (Ok((space, _)), Ok(theirs)) => (space, theirs),
        (Err(_), Err(_)) => return,
        (ours, theirs) => panic!(
            "one refuses the ranges {ranges:?}: ours {:?}, vm-memory {:?}",
            ours.map(|_| ()),
            theirs.map(|_| ())
        ),
    };
    for r in ranges.iter().filter(|r| !r.memory) {
        let planned =
            Region::plan(RegionSpec::ram(GuestAddress(r.base), r.size)).expect("a planned region");
        space
            .insert_region(Arc::new(planned))
            .expect("a planned region in a gap");
    }
    let ours = space.snapshot();
    assert_eq!(ours.num_regions(), theirs.num_regions());
    assert_eq!(ours.last_addr(), theirs.last_addr());
    assert_eq!(
        ours.iter()
            .map(|r| (r.start_addr(), r.len()))
            .collect::<Vec<_>>(),
        theirs
            .iter()
            .map(|r| (r.start_addr(), r.len()))
            .collect::<Vec<_>>()
    );
    for step in 0..limits.steps {
        if input.is_empty() {
            break;
        }
        let op = input.u8() % 17;
        let addr = address(&mut input, &ranges);
        let len = if matches!(op, 0..=3) {
            buffer(&mut input)
        } else {
            length(&mut input)
        };
        let seed = input.u8();
        let o = call(&*ours, op, addr, len, seed);
        let t = call(&theirs, op, addr, len, seed);
        assert_eq!(o, t, "step {step}: call {op} at {addr:#x} of {len:#x}");
        // Only these calls write (a volatile read from a source writes guest memory).
        let writes = matches!(op, 0 | 1 | 4 | 6 | 8 | 16);
        if writes {
            compare_memory(&ours, &theirs, &ranges);
        }
        // The same call through `GuestBytes`, which must agree for read-write memory (again
        // on the reference, so that both write the same bytes twice).
        if op <= 9 {
            let o = bytes_call(&ours.bytes(), op, addr, len, seed);
            let t = bytes_call(&theirs, op, addr, len, seed);
            assert_eq!(
                o, t,
                "step {step}: GuestBytes call {op} at {addr:#x} of {len:#x}"
            );
            if writes {
                compare_memory(&ours, &theirs, &ranges);
            }
        }
    }
    // Reads mark nothing: the dirty pages after the last reads are still the reference's.
    compare_memory(&ours, &theirs, &ranges);
}
