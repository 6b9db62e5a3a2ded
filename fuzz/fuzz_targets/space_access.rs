//! Guest memory access through the vm-memory traits of a `Snapshot` and of its `GuestBytes`,
//! compared byte for byte with a model of the guest. The address space is built from the input:
//! up to 8 small regions (1 to 4 pages) in four areas (from address 0, across the 4 GiB line,
//! across the edge of the RAM window and the device window at the top, and the last pages of
//! the 64-bit space), each read-write (anonymous, private or shared), read-only (a file's
//! contents, or zeros), without access, or without host memory (planned RAM, reserved, device),
//! with or without gaps between them. Regions that cannot be made (memory ending at the top of
//! the space, a region across its window's edge) must be refused with the documented error and
//! leave the space as it was. Then a sequence of accesses at region edges, across regions, into
//! holes and at `u64::MAX`: `Bytes` `read`, `write`, `read_slice`, `write_slice`, `load`,
//! `store`, `read_volatile_from` (and the exact variant) from a source that reads short, is
//! interrupted or fails, `write_volatile_to` (and the all variant) to a sink that writes short
//! or fills up, `get_slice`, `get_slices`, `check_range`, `get_host_address` and the lookups.
//! Every count, every error and every byte (returned, left in the buffer, written to the guest,
//! handed to the sink) must be the model's; the memory of every readable region is compared
//! with the model after each access that writes.
#![no_main]

use std::fs::File;
use std::io::{self, ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use memvisor_fuzz::Input;
use memvisor_space::{
    AddressSpace, Backing, Error, Layout, Protection, Region, RegionSpec, RegionType, Snapshot,
    Window, WindowKind,
};
use vm_memory::bitmap::BitmapSlice;
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, ReadVolatile, VolatileMemoryError,
    VolatileSlice, WriteVolatile,
};

const PAGE: u64 = 4096;
/// The device window: the last MiB of the 64-bit space; the RAM window is everything below.
const DEVICE_START: u64 = 0u64.wrapping_sub(1 << 20);
/// Where the regions of each area start being laid, one after the other.
const AREAS: [u64; 4] = [
    0,
    (4 << 30) - 8 * PAGE,
    DEVICE_START - 6 * PAGE,
    0u64.wrapping_sub(8 * PAGE),
];
/// Regions, pages per region, pages of the read-only file, accesses per input, bytes of a
/// buffer.
const MAX_REGIONS: u8 = 8;
const MAX_PAGES: u64 = 4;
const FILE_PAGES: u64 = 8;
const MAX_STEPS: usize = 64;
const MAX_BUF: usize = 40 << 10;

/// The contents of the read-only file at byte `i`.
fn file_byte(i: u64) -> u8 {
    (i.wrapping_mul(131) ^ (i >> 9).wrapping_mul(7)) as u8
}

/// A file of `FILE_PAGES` pages of `file_byte`, unlinked at once, and the path that opens it
/// again while this process keeps it open.
fn file_path() -> &'static PathBuf {
    static FILE: OnceLock<(File, PathBuf)> = OnceLock::new();
    let (_, path) = FILE.get_or_init(|| {
        let name =
            std::env::temp_dir().join(format!("memvisor-fuzz-space-access-{}", std::process::id()));
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&name)
            .expect("a temporary file");
        let bytes: Vec<u8> = (0..FILE_PAGES * PAGE).map(file_byte).collect();
        file.write_all(&bytes).expect("the file's contents");
        std::fs::remove_file(&name).expect("unlinked");
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        (file, path)
    });
    path
}

fn layout() -> Layout {
    let windows = [
        Window::new(WindowKind::Ram, GuestAddress(0), DEVICE_START).expect("the RAM window"),
        Window::new(WindowKind::Device, GuestAddress(DEVICE_START), 1 << 20)
            .expect("the device window"),
    ];
    Layout::new(GuestAddress(u64::MAX), windows).expect("the layout")
}

/// What a region's memory allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    ReadWrite,
    ReadOnly,
    NoAccess,
    Unbacked,
}

impl Kind {
    fn backed(self) -> bool {
        self != Kind::Unbacked
    }

    fn readable(self) -> bool {
        matches!(self, Kind::ReadWrite | Kind::ReadOnly)
    }

    fn writable(self) -> bool {
        self == Kind::ReadWrite
    }
}

/// A region of the model: its guest range, its kind, its bytes (readable regions) and the host
/// address of its first byte (regions with memory).
#[derive(Debug)]
struct Mem {
    base: u64,
    size: u64,
    kind: Kind,
    bytes: Vec<u8>,
    host: usize,
}

/// An error of vm-memory's, as the model predicts it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Got {
    Invalid(u64),
    NoHost,
    Backend,
    Partial(usize, usize),
    Io,
    Other(String),
}

fn got(e: &GuestMemoryError) -> Got {
    match e {
        GuestMemoryError::InvalidGuestAddress(a) => Got::Invalid(a.0),
        GuestMemoryError::HostAddressNotAvailable => Got::NoHost,
        GuestMemoryError::InvalidBackendAddress => Got::Backend,
        GuestMemoryError::PartialBuffer {
            expected,
            completed,
        } => Got::Partial(*expected, *completed),
        GuestMemoryError::IOError(_) => Got::Io,
        other => Got::Other(other.to_string()),
    }
}

fn res<T>(r: Result<T, GuestMemoryError>) -> Result<T, Got> {
    r.map_err(|e| got(&e))
}

/// A piece of an access: the region's index, the offset in it, the length.
type Piece = (usize, usize, usize);

struct Model {
    /// Sorted by address, never overlapping.
    regions: Vec<Mem>,
}

impl Model {
    fn index(&self, addr: u64) -> Option<usize> {
        self.regions
            .iter()
            .position(|r| addr >= r.base && addr - r.base < r.size)
    }

    /// The region vm-memory's view finds at `addr` (one with memory), or the error of an access
    /// there that needs `ok`.
    fn first(&self, addr: u64, ok: fn(Kind) -> bool) -> Result<&Mem, Got> {
        let r = self
            .index(addr)
            .map(|i| &self.regions[i])
            .filter(|r| r.kind.backed())
            .ok_or(Got::Invalid(addr))?;
        if ok(r.kind) { Ok(r) } else { Err(Got::NoHost) }
    }

    /// The pieces of `addr..addr + count` in consecutive regions that allow `ok`, from `addr`
    /// up to the first gap or region that does not.
    fn pieces(&self, addr: u64, count: usize, ok: fn(Kind) -> bool) -> Vec<Piece> {
        let mut out = Vec::new();
        let mut cur = addr;
        let mut left = count as u64;
        while left > 0 {
            let Some(i) = self.index(cur) else { break };
            let r = &self.regions[i];
            if !ok(r.kind) {
                break;
            }
            let off = cur - r.base;
            let n = (r.size - off).min(left);
            out.push((i, off as usize, n as usize));
            left -= n;
            match r.base.checked_add(r.size) {
                Some(next) => cur = next,
                None => break,
            }
        }
        out
    }

    fn total(pieces: &[Piece]) -> usize {
        pieces.iter().map(|p| p.2).sum()
    }

    /// The bytes of the pieces, in order.
    fn read(&self, pieces: &[Piece]) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::total(pieces));
        for &(i, off, n) in pieces {
            out.extend_from_slice(&self.regions[i].bytes[off..off + n]);
        }
        out
    }

    /// Writes `data` over the pieces, in order, as far as it goes.
    fn write(&mut self, pieces: &[Piece], data: &[u8]) {
        let mut at = 0;
        for &(i, off, n) in pieces {
            let n = n.min(data.len() - at);
            self.regions[i].bytes[off..off + n].copy_from_slice(&data[at..at + n]);
            at += n;
        }
    }

    /// An access of `size` bytes at `addr` as a whole (an atomic load or store): one region
    /// allowing `ok`, the whole value inside it, aligned to its size.
    fn atomic(&self, addr: u64, size: usize, ok: fn(Kind) -> bool) -> Result<(usize, usize), Got> {
        let r = self.first(addr, ok)?;
        let off = addr - r.base;
        if r.size - off < size as u64 || !addr.is_multiple_of(size as u64) {
            return Err(Got::Backend);
        }
        Ok((self.index(addr).expect("found"), off as usize))
    }

    /// Every readable region's memory, as its host mapping holds it, against the model.
    fn check_memory(&self) {
        for r in self.regions.iter().filter(|r| r.kind.readable()) {
            // SAFETY: the region's readable mapping of `size` bytes lives as long as the space,
            // which outlives the model's use; guest memory is only written by this thread.
            let real = unsafe { std::slice::from_raw_parts(r.host as *const u8, r.size as usize) };
            assert!(real == r.bytes.as_slice(), "memory of {:#x}", r.base);
        }
    }
}

/// A `ReadVolatile` source: `data`, handed out at most `chunk` bytes a call, each call
/// interrupted once first if `interrupt`, failing at call `fail_at`. The model runs a copy.
#[derive(Clone, Debug)]
struct Source {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
    interrupt: bool,
    interrupted: bool,
    fail_at: Option<usize>,
    calls: usize,
}

impl Source {
    /// A call asking for `want` bytes: how many it gives (the next `n` bytes of `data`), or
    /// `None` for a failure.
    fn take(&mut self, want: usize) -> Option<usize> {
        let call = self.calls;
        self.calls += 1;
        if self.fail_at == Some(call) {
            return None;
        }
        let n = want.min(self.chunk).min(self.data.len() - self.pos);
        self.pos += n;
        Some(n)
    }
}

impl ReadVolatile for Source {
    fn read_volatile<B: BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        if self.interrupt {
            self.interrupted = !self.interrupted;
            if self.interrupted {
                return Err(VolatileMemoryError::IOError(ErrorKind::Interrupted.into()));
            }
        }
        let from = self.pos;
        let n = self
            .take(buf.len())
            .ok_or_else(|| VolatileMemoryError::IOError(io::Error::other("source failed")))?;
        buf.copy_from(&self.data[from..from + n]);
        Ok(n)
    }
}

/// A `WriteVolatile` sink of at most `cap` bytes, taking at most `chunk` a call, each call
/// interrupted once first if `interrupt`, failing at call `fail_at`. The model runs a copy.
#[derive(Clone, Debug)]
struct Sink {
    out: Vec<u8>,
    cap: usize,
    chunk: usize,
    interrupt: bool,
    interrupted: bool,
    fail_at: Option<usize>,
    calls: usize,
}

impl Sink {
    /// A call offering `bytes`: how many it takes, or `None` for a failure.
    fn put(&mut self, bytes: &[u8]) -> Option<usize> {
        let call = self.calls;
        self.calls += 1;
        if self.fail_at == Some(call) {
            return None;
        }
        let n = bytes.len().min(self.chunk).min(self.cap - self.out.len());
        self.out.extend_from_slice(&bytes[..n]);
        Some(n)
    }

    /// `write_all_volatile` as the model sees it: calls until all of `bytes` is taken, an
    /// error at a failure or a call that takes nothing.
    fn put_all(&mut self, mut bytes: &[u8]) -> Result<(), Got> {
        while !bytes.is_empty() {
            match self.put(bytes) {
                Some(0) | None => return Err(Got::Io),
                Some(n) => bytes = &bytes[n..],
            }
        }
        Ok(())
    }
}

impl WriteVolatile for Sink {
    fn write_volatile<B: BitmapSlice>(
        &mut self,
        buf: &VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        if self.interrupt {
            self.interrupted = !self.interrupted;
            if self.interrupted {
                return Err(VolatileMemoryError::IOError(ErrorKind::Interrupted.into()));
            }
        }
        let mut copy = vec![0; buf.len()];
        buf.copy_to(&mut copy[..]);
        self.put(&copy)
            .ok_or_else(|| VolatileMemoryError::IOError(io::Error::other("sink failed")))
    }
}

/// Bytes of a buffer: distinct along the buffer, different for each `seed`.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i as u8).wrapping_mul(37)) ^ (i >> 8) as u8)
        .collect()
}

/// A guest address: at, before, inside or after a region, near the top, or anything.
fn address(input: &mut Input<'_>, model: &Model) -> u64 {
    let delta = match input.u8() % 4 {
        0 => 0,
        1 => 1 + u64::from(input.u8() % 8),
        2 => u64::from(input.u16()) % (2 * PAGE),
        _ => PAGE,
    };
    match input.u8() % 10 {
        0..=5 if !model.regions.is_empty() => {
            let r = &model.regions[usize::from(input.u8()) % model.regions.len()];
            let end = r.base.wrapping_add(r.size);
            match input.u8() % 5 {
                0 => r.base.wrapping_add(delta),
                1 => r.base.wrapping_sub(delta),
                2 => end.wrapping_sub(delta),
                3 => end.wrapping_add(delta),
                _ => r.base + input.below(r.size),
            }
        }
        6 => u64::MAX - delta,
        7 => AREAS[usize::from(input.u8()) % AREAS.len()].wrapping_add(delta),
        8 => delta,
        _ => input.u64(),
    }
}

/// The length of an access: 0, small, a few pages, or (when `huge`) up to `usize::MAX`;
/// otherwise at most `MAX_BUF`.
fn count(input: &mut Input<'_>, huge: bool) -> usize {
    match input.u8() % 8 {
        0 => 0,
        1 => 1 + usize::from(input.u8() % 16),
        2..=4 => 1 + usize::from(input.u16()) % (3 * PAGE as usize),
        5 | 6 => (PAGE as usize) * (1 + usize::from(input.u8() % 9)) - usize::from(input.u8() % 2),
        _ if huge => match input.u8() % 3 {
            0 => usize::MAX - usize::from(input.u8()),
            1 => 1 << (input.u8() % 64),
            _ => usize::from(input.u16()) << 8,
        },
        _ => MAX_BUF - usize::from(input.u8()),
    }
}

/// A region asked for: its spec, its kind, and the error making it must give (if any).
struct Asked {
    spec: RegionSpec,
    kind: Kind,
    /// Its bytes when made (readable regions).
    bytes: Vec<u8>,
    /// Planned RAM: a region with a memory spec but no memory (made with `Region::plan`).
    planned: bool,
    refusal: Option<Refusal>,
}

#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// Memory ending at the top of the space.
    Overflow,
    /// Not inside one window of the kind its type needs.
    OutsideWindow,
}

/// The regions to make, from the input.
fn regions(input: &mut Input<'_>) -> Vec<Asked> {
    let layout = layout();
    let mut cursors: [Option<u64>; 4] = AREAS.map(Some);
    let mut out = Vec::new();
    let n = 1 + input.u8() % MAX_REGIONS;
    for _ in 0..n {
        let area = usize::from(input.u8()) % AREAS.len();
        let gap = u64::from(input.u8() % 3) * PAGE;
        let size = (1 + input.below(MAX_PAGES)) * PAGE;
        let kind_byte = input.u8();
        let Some(base) = cursors[area].and_then(|c| c.checked_add(gap)) else {
            continue;
        };
        if base.checked_add(size - 1).is_none() {
            cursors[area] = None;
            continue;
        }
        cursors[area] = base.checked_add(size);
        let device = base >= DEVICE_START;
        let ty = if device {
            RegionType::Device
        } else {
            RegionType::Ram
        };
        let at = GuestAddress(base);
        let (spec, kind, bytes, planned) = match kind_byte % 9 {
            0 | 1 => (
                RegionSpec::new(ty, at, size).with_backing(Backing::AnonymousPrivate),
                Kind::ReadWrite,
                Vec::new(),
                false,
            ),
            2 => (
                RegionSpec::new(ty, at, size).with_backing(Backing::AnonymousShared),
                Kind::ReadWrite,
                Vec::new(),
                false,
            ),
            3 | 4 => {
                let offset = input.below(FILE_PAGES - size / PAGE + 1) * PAGE;
                let backing = Backing::File {
                    path: file_path().clone(),
                    offset,
                };
                (
                    RegionSpec::new(ty, at, size)
                        .with_backing(backing)
                        .with_protection(Protection::Read),
                    Kind::ReadOnly,
                    (offset..offset + size).map(file_byte).collect(),
                    false,
                )
            }
            5 => (
                RegionSpec::new(ty, at, size)
                    .with_backing(Backing::AnonymousPrivate)
                    .with_protection(Protection::Read),
                Kind::ReadOnly,
                vec![0; size as usize],
                false,
            ),
            6 => (
                RegionSpec::new(ty, at, size)
                    .with_backing(Backing::AnonymousPrivate)
                    .with_protection(Protection::None),
                Kind::NoAccess,
                Vec::new(),
                false,
            ),
            7 => (
                RegionSpec::new(RegionType::Reserved, at, size),
                Kind::Unbacked,
                Vec::new(),
                false,
            ),
            _ if device => (
                RegionSpec::new(RegionType::Device, at, size),
                Kind::Unbacked,
                Vec::new(),
                false,
            ),
            _ => (RegionSpec::ram(at, size), Kind::Unbacked, Vec::new(), true),
        };
        let refusal = if kind.backed() && base.checked_add(size).is_none() {
            Some(Refusal::Overflow)
        } else if layout.check(&spec).is_err() {
            Some(Refusal::OutsideWindow)
        } else {
            None
        };
        out.push(Asked {
            spec,
            kind,
            bytes,
            planned,
            refusal,
        });
    }
    out
}

fn refused(result: Result<impl std::fmt::Debug, Error>, refusal: &Refusal, spec: &RegionSpec) {
    match (refusal, &result) {
        (Refusal::Overflow, Err(Error::Overflow { .. }))
        | (Refusal::OutsideWindow, Err(Error::OutsideWindow { .. })) => {}
        _ => panic!("{spec:?}: {result:?}, expected {refusal:?}"),
    }
}

/// Makes the regions, all at once (`AddressSpace::back`) or one by one (`insert_region`), and
/// checks the refusals; fills the read-write ones with bytes from the input.
fn build(input: &mut Input<'_>) -> (AddressSpace, Model) {
    let asked = regions(input);
    let one_by_one = input.u8().is_multiple_of(2);
    let space = if one_by_one {
        AddressSpace::plan(layout(), []).expect("an empty space")
    } else {
        let specs = asked
            .iter()
            .filter(|a| a.refusal.is_none() && !a.planned)
            .map(|a| a.spec.clone());
        let (space, _) = AddressSpace::back(layout(), specs).expect("a valid space");
        space
    };
    let mut made = if one_by_one {
        0
    } else {
        asked
            .iter()
            .filter(|a| a.refusal.is_none() && !a.planned)
            .count()
    };
    for a in &asked {
        if !one_by_one && a.refusal.is_none() && !a.planned {
            continue;
        }
        let region = if a.kind.backed() {
            let result = Region::back(a.spec.clone());
            if a.refusal == Some(Refusal::Overflow) {
                refused(result, &Refusal::Overflow, &a.spec);
                continue;
            }
            result.expect("a region with memory").0
        } else {
            Region::plan(a.spec.clone()).expect("a planned region")
        };
        let result = space.insert_region(Arc::new(region));
        match &a.refusal {
            Some(r) => refused(result, r, &a.spec),
            None => {
                result.expect("an insert");
                made += 1;
            }
        }
        assert_eq!(space.snapshot().len(), made, "a refusal changed the space");
    }
    let snap = space.snapshot();
    let mut model = Model {
        regions: Vec::new(),
    };
    for a in asked.into_iter().filter(|a| a.refusal.is_none()) {
        let region = snap.find_region(a.spec.base()).expect("made");
        assert_eq!(
            (region.base(), region.size(), region.is_backed()),
            (a.spec.base(), a.spec.size(), a.kind.backed())
        );
        let host = region.host_ptr().map_or(0, |p| p as usize);
        let mut bytes = a.bytes;
        if a.kind == Kind::ReadWrite {
            bytes = pattern(input.u8(), a.spec.size() as usize);
            // SAFETY: the region's read-write mapping is `size` bytes, alive with the space.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), host as *mut u8, bytes.len());
            }
        }
        model.regions.push(Mem {
            base: a.spec.base().0,
            size: a.spec.size(),
            kind: a.kind,
            bytes,
            host,
        });
    }
    model.regions.sort_by_key(|r| r.base);
    assert_eq!(snap.len(), model.regions.len());
    model.check_memory();
    (space, model)
}

fn source(input: &mut Input<'_>) -> Source {
    let len = count(input, false).min(MAX_BUF);
    Source {
        data: pattern(input.u8(), len),
        pos: 0,
        chunk: 1 + usize::from(input.u16()) % (5 * PAGE as usize),
        interrupt: input.u8().is_multiple_of(3),
        interrupted: false,
        fail_at: input
            .u8()
            .is_multiple_of(4)
            .then(|| usize::from(input.u8() % 4)),
        calls: 0,
    }
}

fn sink(input: &mut Input<'_>) -> Sink {
    Sink {
        out: Vec::new(),
        cap: count(input, false).min(MAX_BUF),
        chunk: 1 + usize::from(input.u16()) % (5 * PAGE as usize),
        interrupt: input.u8().is_multiple_of(3),
        interrupted: false,
        fail_at: input
            .u8()
            .is_multiple_of(4)
            .then(|| usize::from(input.u8() % 4)),
        calls: 0,
    }
}

/// A load of `size` bytes (1, 2, 4 or 8) through `view`, as a little-endian number.
fn load(
    view: &impl Bytes<GuestAddress, E = GuestMemoryError>,
    addr: u64,
    size: usize,
) -> Result<u64, Got> {
    let at = GuestAddress(addr);
    let o = Ordering::SeqCst;
    res(match size {
        1 => view.load::<u8>(at, o).map(u64::from),
        2 => view.load::<u16>(at, o).map(u64::from),
        4 => view.load::<u32>(at, o).map(u64::from),
        _ => view.load::<u64>(at, o),
    })
}

fn store(
    view: &impl Bytes<GuestAddress, E = GuestMemoryError>,
    value: u64,
    addr: u64,
    size: usize,
) -> Result<(), Got> {
    let at = GuestAddress(addr);
    let o = Ordering::SeqCst;
    res(match size {
        1 => view.store(value as u8, at, o),
        2 => view.store(value as u16, at, o),
        4 => view.store(value as u32, at, o),
        _ => view.store(value, at, o),
    })
}

fn step(input: &mut Input<'_>, snap: &Snapshot, model: &mut Model) {
    let bytes = snap.bytes();
    let addr = address(input, model);
    let at = GuestAddress(addr);
    let op = input.u8() % 14;
    // Through vm-memory's own `Bytes` (the snapshot's), or through `GuestBytes`.
    let guest_bytes = input.u8().is_multiple_of(2);
    match op {
        0 | 1 => {
            // write / write_slice: the bytes up to the first gap or region that is not
            // read-write are written, even when the whole slice is refused.
            let n = count(input, false);
            let data = pattern(input.u8(), n);
            let pieces = model.pieces(addr, n, Kind::writable);
            let done = Model::total(&pieces);
            let first = if n == 0 {
                Ok(())
            } else {
                model.first(addr, Kind::writable).map(|_| ())
            };
            let slice = op == 1;
            let got = match (slice, guest_bytes) {
                (false, false) => res(snap.write(&data, at)),
                (false, true) => res(bytes.write(&data, at)),
                (true, false) => res(snap.write_slice(&data, at)).map(|()| n),
                (true, true) => res(bytes.write_slice(&data, at)).map(|()| n),
            };
            let whole = if slice && done < n {
                Err(Got::Partial(n, done))
            } else {
                Ok(done)
            };
            let expected = first.clone().and(whole);
            assert_eq!(got, expected, "write {addr:#x}+{n:#x}");
            if first.is_ok() {
                model.write(&pieces, &data);
            }
            model.check_memory();
        }
        2 | 3 => {
            // read / read_slice: vm-memory's reads read-write memory only, `GuestBytes`'
            // read-only memory too; the buffer past the bytes read keeps its contents.
            let n = count(input, false);
            let before = pattern(input.u8(), n);
            let mut buf = before.clone();
            let ok: fn(Kind) -> bool = if guest_bytes {
                Kind::readable
            } else {
                Kind::writable
            };
            let pieces = model.pieces(addr, n, ok);
            let done = Model::total(&pieces);
            let first = if n == 0 {
                Ok(())
            } else {
                model.first(addr, ok).map(|_| ())
            };
            let slice = op == 3;
            let got = match (slice, guest_bytes) {
                (false, false) => res(snap.read(&mut buf, at)),
                (false, true) => res(bytes.read(&mut buf, at)),
                (true, false) => res(snap.read_slice(&mut buf, at)).map(|()| n),
                (true, true) => res(bytes.read_slice(&mut buf, at)).map(|()| n),
            };
            let whole = if slice && done < n {
                Err(Got::Partial(n, done))
            } else {
                Ok(done)
            };
            let expected = first.clone().and(whole);
            assert_eq!(got, expected, "read {addr:#x}+{n:#x}");
            let mut want = before;
            if first.is_ok() {
                want[..done].copy_from_slice(&model.read(&pieces));
            }
            assert!(buf == want, "read {addr:#x}+{n:#x}: the bytes");
        }
        4 => {
            // store: one read-write region, aligned, the whole value inside it.
            let size = 1 << (input.u8() % 4);
            let value = input.u64();
            let got = if guest_bytes {
                store(&bytes, value, addr, size)
            } else {
                store(snap, value, addr, size)
            };
            let expected = model.atomic(addr, size, Kind::writable);
            assert_eq!(
                got,
                expected.as_ref().map(|_| ()).map_err(|e| e.clone()),
                "store {addr:#x}/{size}"
            );
            if let Ok((i, off)) = expected {
                model.regions[i].bytes[off..off + size]
                    .copy_from_slice(&value.to_le_bytes()[..size]);
            }
            model.check_memory();
        }
        5 => {
            // load: as store, and `GuestBytes` loads from read-only memory too.
            let size = 1 << (input.u8() % 4);
            let (got, ok): (_, fn(Kind) -> bool) = if guest_bytes {
                (load(&bytes, addr, size), Kind::readable)
            } else {
                (load(snap, addr, size), Kind::writable)
            };
            let expected = model.atomic(addr, size, ok).map(|(i, off)| {
                let mut le = [0; 8];
                le[..size].copy_from_slice(&model.regions[i].bytes[off..off + size]);
                u64::from_le_bytes(le)
            });
            assert_eq!(got, expected, "load {addr:#x}/{size}");
        }
        6 | 7 => {
            // get_slice: read-write memory, the whole slice inside one region; read it, and
            // sometimes write through it.
            let n = count(input, true);
            let real = GuestMemoryBackend::get_slice(snap, at, n);
            let expected = model.first(addr, Kind::writable).and_then(|r| {
                let off = addr - r.base;
                if (n as u64) > r.size - off {
                    Err(Got::Backend)
                } else {
                    Ok((
                        r.host + off as usize,
                        model.index(addr).expect("found"),
                        off as usize,
                    ))
                }
            });
            match (&real, &expected) {
                (Ok(slice), Ok((host, i, off))) => {
                    assert_eq!(slice.len(), n, "get_slice {addr:#x}+{n:#x}");
                    assert_eq!(slice.ptr_guard().as_ptr() as usize, *host);
                    let mut copy = vec![0; n];
                    slice.copy_to(&mut copy[..]);
                    let want = &model.regions[*i].bytes[*off..*off + n];
                    assert!(copy == want, "get_slice {addr:#x}+{n:#x}: the bytes");
                    if op == 7 {
                        let data = pattern(input.u8(), n);
                        slice.copy_from(&data[..]);
                        let (i, off) = (*i, *off);
                        model.regions[i].bytes[off..off + n].copy_from_slice(&data);
                        model.check_memory();
                    }
                }
                (Err(e), Err(want)) => assert_eq!(&got(e), want, "get_slice {addr:#x}+{n:#x}"),
                _ => panic!(
                    "get_slice {addr:#x}+{n:#x}: {:?}, expected {expected:?}",
                    real.map(|s| s.len())
                ),
            }
        }
        8 => {
            // get_host_address: read-write memory only; the byte there is the model's.
            let got = res(snap.get_host_address(at));
            let expected = model.first(addr, Kind::writable).map(|r| {
                (
                    r.host + (addr - r.base) as usize,
                    r.bytes[(addr - r.base) as usize],
                )
            });
            assert_eq!(
                got.map(|p| p as usize),
                expected.as_ref().map(|e| e.0).map_err(Got::clone),
                "host address {addr:#x}"
            );
            if let Ok((host, byte)) = expected {
                // SAFETY: a host address of read-write guest memory, alive with the space.
                let real = unsafe { std::ptr::read_volatile(host as *const u8) };
                assert_eq!(real, byte, "the byte at {addr:#x}");
            }
        }
        9 => {
            // get_slices and check_range: the slices of read-write memory up to the first gap
            // (an error naming its address) or region without a slice (an error).
            let n = count(input, true);
            let got: Vec<Result<(usize, usize), Got>> = GuestMemoryBackend::get_slices(snap, at, n)
                .map(|s| res(s.map(|s| (s.ptr_guard().as_ptr() as usize, s.len()))))
                .collect();
            let mut expected = Vec::new();
            let mut cur = addr;
            let mut left = n as u64;
            while left > 0 {
                let Some(r) = model
                    .index(cur)
                    .map(|i| &model.regions[i])
                    .filter(|r| r.kind.backed())
                else {
                    expected.push(Err(Got::Invalid(cur)));
                    break;
                };
                let off = cur - r.base;
                let len = (r.size - off).min(left);
                if !r.kind.writable() {
                    expected.push(Err(Got::NoHost));
                    break;
                }
                expected.push(Ok((r.host + off as usize, len as usize)));
                left -= len;
                cur = r.base + r.size;
            }
            assert_eq!(got, expected, "get_slices {addr:#x}+{n:#x}");
            let whole = expected.iter().all(Result::is_ok);
            assert_eq!(
                GuestMemoryBackend::check_range(snap, at, n),
                whole,
                "check_range {addr:#x}+{n:#x}"
            );
        }
        10 | 11 => {
            // read_volatile_from (and the exact variant) into read-write memory: vm-memory's
            // reads once per region and goes on after a short read; `GuestBytes` stops there
            // (and its exact variant reads again until the range is full).
            let n = count(input, true);
            let exact = op == 11;
            let mut src = source(input);
            let mut model_src = src.clone();
            let got = match (exact, guest_bytes) {
                (false, false) => res(snap.read_volatile_from(at, &mut src, n)),
                (false, true) => res(bytes.read_volatile_from(at, &mut src, n)),
                (true, false) => res(snap.read_exact_volatile_from(at, &mut src, n)).map(|()| n),
                (true, true) => res(bytes.read_exact_volatile_from(at, &mut src, n)).map(|()| n),
            };
            let expected = if n == 0 {
                Ok(0)
            } else {
                let first = model.first(addr, Kind::writable).map(|_| ());
                first.and_then(|()| {
                    let pieces = model.pieces(addr, n, Kind::writable);
                    let mut done = 0;
                    for &(i, off, len) in &pieces {
                        let mut left = len;
                        let mut at_off = off;
                        loop {
                            let from = model_src.pos;
                            let Some(k) = model_src.take(left) else {
                                return Err(Got::Io);
                            };
                            model.regions[i].bytes[at_off..at_off + k]
                                .copy_from_slice(&model_src.data[from..from + k]);
                            done += k;
                            left -= k;
                            at_off += k;
                            if !(exact && guest_bytes) || left == 0 {
                                break;
                            }
                            if k == 0 {
                                return Err(Got::Partial(n, done));
                            }
                        }
                        if guest_bytes && !exact && left > 0 {
                            break;
                        }
                    }
                    if exact && done != n {
                        Err(Got::Partial(n, done))
                    } else {
                        Ok(done)
                    }
                })
            };
            assert_eq!(got, expected, "read_volatile_from {addr:#x}+{n:#x} {src:?}");
            assert_eq!(src.pos, model_src.pos, "bytes taken from the source");
            model.check_memory();
        }
        12 | 13 => {
            // write_volatile_to (and the all variant): vm-memory's from read-write memory,
            // `GuestBytes`' from read-only memory too; each piece is written whole or fails.
            let n = count(input, true);
            let all = op == 13;
            let mut dst = sink(input);
            let mut model_dst = dst.clone();
            let got = match (all, guest_bytes) {
                (false, false) => res(snap.write_volatile_to(at, &mut dst, n)),
                (false, true) => res(bytes.write_volatile_to(at, &mut dst, n)),
                (true, false) => res(snap.write_all_volatile_to(at, &mut dst, n)).map(|()| n),
                (true, true) => res(bytes.write_all_volatile_to(at, &mut dst, n)).map(|()| n),
            };
            let ok: fn(Kind) -> bool = if guest_bytes {
                Kind::readable
            } else {
                Kind::writable
            };
            let expected = if n == 0 {
                Ok(0)
            } else {
                let first = model.first(addr, ok).map(|_| ());
                first.and_then(|()| {
                    let pieces = model.pieces(addr, n, ok);
                    for p in &pieces {
                        model_dst.put_all(&model.read(&[*p]))?;
                    }
                    let done = Model::total(&pieces);
                    if all && done != n {
                        Err(Got::Partial(n, done))
                    } else {
                        Ok(done)
                    }
                })
            };
            assert_eq!(got, expected, "write_volatile_to {addr:#x}+{n:#x}");
            assert!(
                dst.out == model_dst.out,
                "write_volatile_to {addr:#x}+{n:#x}: the bytes"
            );
        }
        _ => unreachable!(),
    }
    // Lookups agree with the model at every access's address.
    let found = model.index(addr).map(|i| &model.regions[i]);
    assert_eq!(
        snap.find_region(at).map(|r| (r.base().0, r.size())),
        found.map(|r| (r.base, r.size)),
        "find_region {addr:#x}"
    );
    let backed = found.filter(|r| r.kind.backed());
    assert_eq!(
        GuestMemoryBackend::address_in_range(snap, at),
        backed.is_some()
    );
    assert_eq!(
        GuestMemoryBackend::to_region_addr(snap, at).map(|(r, off)| (r.base().0, off.0)),
        backed.map(|r| (r.base, addr - r.base)),
        "to_region_addr {addr:#x}"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let (space, mut model) = build(&mut input);
    let snap = space.snapshot();
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        step(&mut input, &snap, &mut model);
    }
    model.check_memory();
});
