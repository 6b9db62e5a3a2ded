//! A snapshot against vm-memory's own `GuestMemoryMmap`, side by side, as rust-vmm consumers
//! use both: the same regions (two adjacent, one after a gap, eight small ones so that lookups
//! go through the hit index, one just below the top of the 64-bit space), the same calls, and
//! the same results, errors included, and the same memory and dirty pages afterwards. The calls
//! are vm-memory's provided methods at and across region edges (reads, writes, slices,
//! `try_access`, offsets, unaligned atomics, volatile reads from and writes to files, host
//! addresses), over the snapshot, its `GuestBytes`, a space adopting a `GuestMemoryMmap` and
//! the `GuestMemoryMmap` a snapshot gives out; rust-vmm's kernel loader (`linux-loader`: ELF
//! and bzImage kernels assembled here, a command line, the zero page), whose loads across a
//! gap or past the end fail on both the same way; and a virtqueue whose device writes mark
//! the pages they touch. The deliberate differences are tested too: read-only memory gives no
//! slice, and `GuestBytes` fills a range from a stream that reads a little at a time.

#![cfg(target_os = "linux")]
#![cfg_attr(miri, allow(dead_code, unused_imports))]
#![allow(deprecated)] // `GuestMemoryBackend::try_access`, still provided and still used
#![allow(clippy::cast_possible_truncation)]

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::load_cmdline;
use memvisor_space::{AddressSpace, Layout, RegionSpec, Snapshot, Window, WindowKind};
use vm_memory::bitmap::{AtomicBitmap, Bitmap};
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};

/// The reference: vm-memory's own mmap-backed memory, with dirty bitmaps.
type Reference = GuestMemoryMmap<AtomicBitmap>;

fn page() -> u64 {
    memvisor_vmem::page_size() as u64
}

/// The guest RAM ranges both memories have: A and B adjacent, C after a gap, eight one-page
/// regions with gaps between them (so that the snapshot has more than 8 regions and looks
/// them up through its hit index too), and D ending one page below the top of the space (a
/// region with memory must end below it, in both).
fn ranges() -> Vec<(u64, u64)> {
    let p = page();
    let mut out = vec![(16 * p, 4 * p), (20 * p, 4 * p), (32 * p, 4 * p)];
    out.extend((0..8).map(|i| ((40 + 2 * i) * p, p)));
    out.push((0u64.wrapping_sub(2 * p), p));
    out
}

/// A snapshot of the ranges, every region dirty-tracked.
fn snapshot() -> (AddressSpace, std::sync::Arc<Snapshot>) {
    let top = 1 << 24;
    let layout = Layout::new(
        GuestAddress(u64::MAX),
        [
            Window::new(WindowKind::Ram, GuestAddress(0), 1 << 30).unwrap(),
            Window::new(WindowKind::Ram, GuestAddress(0u64.wrapping_sub(top)), top).unwrap(),
        ],
    )
    .unwrap();
    let specs = ranges()
        .into_iter()
        .map(|(base, size)| RegionSpec::ram(GuestAddress(base), size).with_dirty_tracking(true));
    let (space, _) = AddressSpace::back(layout, specs).unwrap();
    let snap = space.snapshot();
    (space, snap)
}

fn reference() -> Reference {
    let ranges: Vec<(GuestAddress, usize)> = ranges()
        .into_iter()
        .map(|(base, size)| (GuestAddress(base), size as usize))
        .collect();
    Reference::from_ranges(&ranges).unwrap()
}

/// Every byte of every range, read back through `read_slice`.
fn image<M: GuestMemoryBackend>(m: &M) -> Vec<Vec<u8>> {
    ranges()
        .into_iter()
        .map(|(base, size)| {
            let mut buf = vec![0; size as usize];
            m.read_slice(&mut buf, GuestAddress(base)).unwrap();
            buf
        })
        .collect()
}

/// Dirty pages: (region start, page index).
type DirtyPages = Vec<(u64, u64)>;

/// The dirty pages of every region, in `iter` order.
fn dirty_pages<M: GuestMemoryBackend>(m: &M) -> DirtyPages {
    let p = page();
    let mut out = Vec::new();
    for r in m.iter() {
        for i in 0..r.len() / p {
            if r.bitmap().dirty_at((i * p) as usize) {
                out.push((r.start_addr().0, i));
            }
        }
    }
    out
}

/// A temporary file of `bytes`, removed when dropped.
struct TempFile {
    path: std::path::PathBuf,
    file: File,
}

impl TempFile {
    fn new(bytes: &[u8]) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "memvisor-space-reference-{}-{n}",
            std::process::id()
        ));
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.write_all(bytes).unwrap();
        file.rewind().unwrap();
        Self { path, file }
    }

    fn contents(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.file.rewind().unwrap();
        self.file.read_to_end(&mut out).unwrap();
        out
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Addresses at and around every region edge, in the gap, and at the top of the space.
fn addresses() -> Vec<u64> {
    let mut out = vec![0, 1, u64::MAX - 7, u64::MAX - 3, u64::MAX];
    for (base, size) in ranges() {
        let end = base + size;
        out.extend([
            base.wrapping_sub(3),
            base.wrapping_sub(1),
            base,
            base + 1,
            end - 9,
            end - 4,
            end - 3,
            end - 1,
            end,
            end + 1,
        ]);
    }
    out
}

/// A pattern that differs for every call `n`.
fn pattern(n: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (n * 31 + i * 7 + 1) as u8).collect()
}

/// Runs vm-memory's provided methods of the memory and of its regions at every address and
/// records each outcome (values and errors, as `Debug` text; host pointers only as found or
/// not).
fn battery<M: GuestMemoryBackend>(m: &M) -> Vec<String> {
    let p = page() as usize;
    let mut log = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    log.push(format!(
        "num_regions {} last_addr {:?}",
        m.num_regions(),
        m.last_addr()
    ));
    for a in addresses() {
        let addr = GuestAddress(a);
        let at = |what: &str, out: String| format!("{a:#x} {what}: {out}");
        log.extend(bytes_battery(m, a, &mut next));
        let slices: Vec<_> = m
            .get_slices(addr, 3 * p)
            .map(|s| s.map(|s| s.len()))
            .collect();
        log.push(at("get_slices", format!("{slices:?}")));
        log.push(at(
            "get_slice",
            format!("{:?}", m.get_slice(addr, 16).map(|s| s.len())),
        ));
        let mut calls = Vec::new();
        let r = m.try_access(3 * p, addr, |off, len, raddr, region| {
            calls.push((off, len, raddr, region.start_addr()));
            Ok(len)
        });
        log.push(at("try_access", format!("{r:?} {calls:?}")));
        for offset in [0, 1, p, usize::MAX] {
            log.push(at(
                "checked_offset",
                format!("{offset:#x} {:?}", m.checked_offset(addr, offset)),
            ));
        }
        log.push(at(
            "to_region_addr",
            format!(
                "{:?}",
                m.to_region_addr(addr).map(|(r, o)| (r.start_addr(), o))
            ),
        ));
        for len in [0, 1, 8, 2 * p] {
            log.push(at(
                "check_range",
                format!("{len:#x} {}", m.check_range(addr, len)),
            ));
        }
        log.push(at(
            "address_in_range",
            format!("{} {:?}", m.address_in_range(addr), m.check_address(addr)),
        ));
        log.push(at(
            "get_host_address",
            format!("{:?}", m.get_host_address(addr).map(|_| ())),
        ));
    }
    for region in m.iter() {
        log.extend(region_battery(region, &mut next));
    }
    log
}

/// vm-memory's `Bytes<GuestAddress>` methods at `a`: plain and exact reads and writes, atomics
/// of every width (unaligned ones included), and volatile reads from files longer and shorter
/// than the count and writes to files.
fn bytes_battery<B: Bytes<GuestAddress, E = GuestMemoryError>>(
    m: &B,
    a: u64,
    next: &mut impl FnMut() -> usize,
) -> Vec<String> {
    let p = page() as usize;
    let addr = GuestAddress(a);
    let at = |what: &str, out: String| format!("{a:#x} {what}: {out}");
    let mut log = Vec::new();
    log.push(at(
        "write",
        format!("{:?}", m.write(&pattern(next(), 8), addr)),
    ));
    log.push(at(
        "write_slice",
        format!("{:?}", m.write_slice(&pattern(next(), 16), addr)),
    ));
    let mut buf = [0u8; 8];
    let r = m.read(&mut buf, addr);
    log.push(at("read", format!("{r:?} {buf:?}")));
    let mut buf = [0u8; 16];
    let r = m.read_slice(&mut buf, addr);
    log.push(at("read_slice", format!("{r:?} {buf:?}")));
    let v = next() as u64;
    log.push(at(
        "store u64",
        format!("{:?}", m.store(v, addr, Ordering::SeqCst)),
    ));
    log.push(at(
        "store u32",
        format!("{:?}", m.store(v as u32, addr, Ordering::Relaxed)),
    ));
    log.push(at(
        "store u16",
        format!("{:?}", m.store(v as u16, addr, Ordering::Release)),
    ));
    log.push(at(
        "load u64",
        format!("{:?}", m.load::<u64>(addr, Ordering::SeqCst)),
    ));
    log.push(at(
        "load u32",
        format!("{:?}", m.load::<u32>(addr, Ordering::Acquire)),
    ));
    log.push(at(
        "load u8",
        format!("{:?}", m.load::<u8>(addr, Ordering::Relaxed)),
    ));
    // From a file longer than the count, and from one shorter.
    for file_len in [3 * p, p / 2] {
        let mut src = TempFile::new(&pattern(next(), file_len));
        let r = m.read_volatile_from(addr, &mut src.file, 2 * p);
        let pos = src.file.stream_position().unwrap();
        log.push(at(
            "read_volatile_from",
            format!("{file_len:#x} {r:?} at {pos:#x}"),
        ));
        let mut src = TempFile::new(&pattern(next(), file_len));
        let r = m.read_exact_volatile_from(addr, &mut src.file, 2 * p);
        log.push(at(
            "read_exact_volatile_from",
            format!("{file_len:#x} {r:?}"),
        ));
    }
    // Zero lengths, at every address (inside memory, in a gap, past the top).
    let mut empty = [0u8; 0];
    log.push(at(
        "zero length",
        format!(
            "{:?} {:?} {:?} {:?}",
            m.write(&[], addr),
            m.read(&mut empty, addr),
            m.write_slice(&[], addr),
            m.read_slice(&mut empty, addr)
        ),
    ));
    let mut src = TempFile::new(&pattern(next(), 16));
    let r = m.read_volatile_from(addr, &mut src.file, 0);
    let exact = m.read_exact_volatile_from(addr, &mut src.file, 0);
    let pos = src.file.stream_position().unwrap();
    let mut dst = TempFile::new(&[]);
    let out = m.write_volatile_to(addr, &mut dst.file, 0);
    let all = m.write_all_volatile_to(addr, &mut dst.file, 0);
    log.push(at(
        "zero length volatile",
        format!(
            "{r:?} {exact:?} at {pos:#x} {out:?} {all:?} {}",
            dst.contents().len()
        ),
    ));
    let mut dst = TempFile::new(&[]);
    let r = m.write_volatile_to(addr, &mut dst.file, 2 * p);
    let written = dst.contents();
    log.push(at(
        "write_volatile_to",
        format!(
            "{r:?} {} {:?}",
            written.len(),
            &written[..written.len().min(16)]
        ),
    ));
    let mut dst = TempFile::new(&[]);
    let r = m.write_all_volatile_to(addr, &mut dst.file, 2 * p);
    log.push(at(
        "write_all_volatile_to",
        format!("{r:?} {}", dst.contents().len()),
    ));
    log
}

/// The two logs line by line: the first line that differs fails with both versions.
fn assert_same(ours: &[String], theirs: &[String]) {
    for (o, t) in ours.iter().zip(theirs) {
        assert_eq!(o, t);
    }
    assert_eq!(ours.len(), theirs.len());
}

/// vm-memory's provided region methods at the region's own edges.
fn region_battery<R: GuestMemoryRegion>(r: &R, next: &mut impl FnMut() -> usize) -> Vec<String> {
    let len = r.len();
    let start = r.start_addr();
    let mut log = vec![format!(
        "region {start:?} len {len:#x} last {:?}",
        r.last_addr()
    )];
    for o in [
        0,
        1,
        len - 9,
        len - 4,
        len - 3,
        len - 1,
        len,
        len + 1,
        u64::MAX,
    ] {
        let at = MemoryRegionAddress(o);
        let line = |what: &str, out: String| format!("{start:?}+{o:#x} {what}: {out}");
        log.push(line(
            "check_address",
            format!("{:?} {}", r.check_address(at), r.address_in_range(at)),
        ));
        for offset in [0, 1, 4, usize::MAX] {
            log.push(line(
                "checked_offset",
                format!("{offset:#x} {:?}", r.checked_offset(at, offset)),
            ));
        }
        log.push(line(
            "to_region_addr",
            format!(
                "{:?} {:?}",
                r.to_region_addr(GuestAddress(start.0.wrapping_add(o))),
                r.to_region_addr(GuestAddress(start.0.wrapping_sub(o)))
            ),
        ));
        log.push(line(
            "get_host_address",
            format!("{:?}", r.get_host_address(at).map(|_| ())),
        ));
        for count in [0, 1, 4, usize::MAX] {
            log.push(line(
                "get_slice",
                format!("{count:#x} {:?}", r.get_slice(at, count).map(|s| s.len())),
            ));
        }
        log.push(line(
            "write",
            format!("{:?}", r.write(&pattern(next(), 4), at)),
        ));
        log.push(line(
            "write_slice",
            format!("{:?}", r.write_slice(&pattern(next(), 4), at)),
        ));
        let mut buf = [0u8; 4];
        let res = r.read(&mut buf, at);
        log.push(line("read", format!("{res:?} {buf:?}")));
        let v = next() as u32;
        log.push(line(
            "store u32",
            format!("{:?}", r.store(v, at, Ordering::SeqCst)),
        ));
        log.push(line(
            "load u32",
            format!("{:?}", r.load::<u32>(at, Ordering::SeqCst)),
        ));
        log.push(line(
            "load u16",
            format!("{:?}", r.load::<u16>(at, Ordering::SeqCst)),
        ));
    }
    log.push(format!(
        "{start:?} as_volatile_slice {:?}",
        r.as_volatile_slice().map(|s| s.len())
    ));
    log
}

#[test]
#[cfg_attr(miri, ignore = "maps memory and files: Miri cannot")]
fn provided_methods_match_guest_memory_mmap_at_every_edge() {
    let (_space, snap) = snapshot();
    let reference = reference();
    assert_same(&battery(&*snap), &battery(&reference));
    assert!(image(&*snap) == image(&reference), "memory differs");
    assert_eq!(dirty_pages(&*snap), dirty_pages(&reference));
    // The calls above did write across the A/B edge and at the top region, and marked it.
    let p = page();
    assert!(dirty_pages(&*snap).contains(&(16 * p, 3)));
    assert!(dirty_pages(&*snap).contains(&(20 * p, 0)));
    assert!(dirty_pages(&*snap).contains(&(0u64.wrapping_sub(2 * p), 0)));
}

/// The snapshot's `GuestBytes` view (which also reads read-only regions) gives the same
/// results as vm-memory's own `Bytes` on read-write memory, where files read in full.
#[test]
#[cfg_attr(miri, ignore = "maps memory and files: Miri cannot")]
fn guest_bytes_match_guest_memory_mmap_at_every_edge() {
    let (_space, snap) = snapshot();
    let reference = reference();
    let bytes = snap.bytes();
    let (mut n, mut m) = (0, 0);
    for a in addresses() {
        let ours = bytes_battery(&bytes, a, &mut || {
            n += 1;
            n
        });
        let theirs = bytes_battery(&reference, a, &mut || {
            m += 1;
            m
        });
        assert_same(&ours, &theirs);
    }
    assert!(image_eq(&snap, &reference), "memory differs");
    assert_eq!(dirty_pages(&*snap), dirty_pages(&reference));
}

/// The two vm-memory crossings: a space adopting a `GuestMemoryMmap`'s mappings, and the
/// `GuestMemoryMmap` a snapshot gives out, answer every call as a fresh reference does.
#[test]
#[cfg_attr(miri, ignore = "maps memory and files: Miri cannot")]
fn adopted_and_exported_mappings_match_guest_memory_mmap() {
    let (space, snap) = snapshot();
    let ranges: Vec<(GuestAddress, usize)> = ranges()
        .into_iter()
        .map(|(base, size)| (GuestAddress(base), size as usize))
        .collect();
    let mapped = GuestMemoryMmap::<()>::from_ranges(&ranges).unwrap();
    let adopted =
        AddressSpace::from_guest_memory_mmap(space.layout().as_ref().clone(), &mapped).unwrap();
    let adopted = adopted.snapshot();
    assert_same(&battery(&*adopted), &battery(&reference()));
    assert!(
        image(&*adopted) == image(&mapped),
        "the adopted memory is the mapping's"
    );
    // SAFETY: `snap` outlives `exported` and everything taken from it.
    let exported = unsafe { snap.to_guest_memory_mmap() }.unwrap();
    let reference = reference();
    assert_same(&battery(&exported), &battery(&reference));
    assert!(
        image(&*snap) == image(&reference),
        "the exported memory is the snapshot's"
    );
    assert!(
        dirty_pages(&*snap).is_empty(),
        "writes through the export are not marked"
    );
}

fn image_eq(snap: &Snapshot, reference: &Reference) -> bool {
    image(snap) == image(reference)
}

#[test]
#[cfg_attr(miri, ignore = "maps memory: Miri cannot")]
fn command_lines_load_as_into_guest_memory_mmap() {
    let mut cmdline = Cmdline::new(4096).unwrap();
    cmdline
        .insert_str("console=ttyS0 reboot=k panic=1")
        .unwrap();
    cmdline.insert("root", "/dev/vda").unwrap();
    let text = cmdline.as_cstring().unwrap();
    let bytes = text.as_bytes_with_nul();
    let p = page();
    let top = 0u64.wrapping_sub(2 * p);
    let len = bytes.len() as u64;
    for at in [
        16 * p,
        20 * p - 10,
        24 * p - len,
        24 * p - 10,
        26 * p,
        top + p - len,
        top + p - len + 1,
        u64::MAX - 4,
    ] {
        let (_space, snap) = snapshot();
        let reference = reference();
        let ours = format!("{:?}", load_cmdline(&*snap, GuestAddress(at), &cmdline));
        let theirs = format!("{:?}", load_cmdline(&reference, GuestAddress(at), &cmdline));
        assert_eq!(ours, theirs, "{at:#x}");
        assert!(image_eq(&snap, &reference), "{at:#x}: memory differs");
        assert_eq!(dirty_pages(&*snap), dirty_pages(&reference), "{at:#x}");
        if ours == "Ok(())" {
            let mut back = vec![0; bytes.len()];
            snap.read_slice(&mut back, GuestAddress(at)).unwrap();
            assert_eq!(back, bytes, "{at:#x}");
            let region = snap.find_region(GuestAddress(at)).unwrap();
            assert!(region.is_dirty(at - region.base().0), "{at:#x}");
        }
    }
}

/// rust-vmm's kernel loaders and boot configurator, which exist for x86 only.
#[cfg(target_arch = "x86_64")]
mod kernel_loader {
    use std::io::{Cursor, SeekFrom};

    use linux_loader::loader::KernelLoader;
    use linux_loader::loader::bzimage::BzImage;
    use linux_loader::loader::elf::Elf;

    use super::*;

    /// An ELF64 x86-64 executable with one `PT_LOAD` segment per `(paddr, bytes)`.
    fn elf(segments: &[(u64, Vec<u8>)], entry: u64) -> Vec<u8> {
        const EHDR: usize = 64;
        const PHDR: usize = 56;
        let mut out = vec![0u8; EHDR + PHDR * segments.len()];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // ELFCLASS64
        out[5] = 1; // little endian
        out[6] = 1; // EV_CURRENT
        out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        out[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[24..32].copy_from_slice(&entry.to_le_bytes());
        out[32..40].copy_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
        out[52..54].copy_from_slice(&(EHDR as u16).to_le_bytes());
        out[54..56].copy_from_slice(&(PHDR as u16).to_le_bytes());
        out[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (i, (paddr, bytes)) in segments.iter().enumerate() {
            let offset = out.len() as u64;
            let ph = EHDR + PHDR * i;
            let len = bytes.len() as u64;
            out[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
            out[ph + 4..ph + 8].copy_from_slice(&5u32.to_le_bytes()); // R + X
            out[ph + 8..ph + 16].copy_from_slice(&offset.to_le_bytes());
            out[ph + 16..ph + 24].copy_from_slice(&paddr.to_le_bytes()); // p_vaddr
            out[ph + 24..ph + 32].copy_from_slice(&paddr.to_le_bytes()); // p_paddr
            out[ph + 32..ph + 40].copy_from_slice(&len.to_le_bytes()); // p_filesz
            out[ph + 40..ph + 48].copy_from_slice(&(len + 16).to_le_bytes()); // p_memsz
            out[ph + 48..ph + 56].copy_from_slice(&0x10u64.to_le_bytes()); // p_align
            out.extend_from_slice(bytes);
        }
        out
    }

    /// A bzImage (boot protocol 2.06, one setup sector) whose protected-mode part is `payload`,
    /// to be loaded at `code32_start`.
    fn bzimage(code32_start: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 2 * 512];
        out[0x1f1] = 1; // setup_sects
        out[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        out[0x202..0x206].copy_from_slice(b"HdrS");
        out[0x206..0x208].copy_from_slice(&0x0206u16.to_le_bytes());
        out[0x211] = 1; // loadflags: LOADED_HIGH
        out[0x214..0x218].copy_from_slice(&code32_start.to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// The segment placements the loader tests use: inside A, across the A/B edge, exactly C,
    /// across the B/gap edge, in the gap, past the top region, and at the top region's end.
    fn placements() -> Vec<(&'static str, u64, usize)> {
        let p = page();
        let top = 0u64.wrapping_sub(2 * p);
        vec![
            ("inside", 16 * p + 12, 100),
            ("across adjacent regions", 20 * p - 300, 1000),
            ("a whole region", 32 * p, p as usize * 4),
            ("into the gap", 24 * p - 64, 200),
            ("in the gap", 26 * p, 10),
            ("past the end", top + p - 8, 32),
            ("to the last byte", top + p - 32, 32),
        ]
    }

    fn load_elf<M: GuestMemoryBackend>(m: &M, image: &[u8], offset: Option<u64>) -> String {
        let r = Elf::load(m, offset.map(GuestAddress), &mut Cursor::new(image), None);
        format!("{:?}", r.map(|r| (r.kernel_load, r.kernel_end)))
    }

    #[test]
    #[cfg_attr(miri, ignore = "maps memory: Miri cannot")]
    fn elf_kernels_load_as_into_guest_memory_mmap() {
        for (name, at, len) in placements() {
            let (_space, snap) = snapshot();
            let reference = reference();
            let segment = pattern(len, len);
            let image = elf(&[(at, segment.clone())], at);
            let ours = load_elf(&*snap, &image, None);
            assert_eq!(ours, load_elf(&reference, &image, None), "{name}");
            assert!(image_eq(&snap, &reference), "{name}: memory differs");
            assert_eq!(dirty_pages(&*snap), dirty_pages(&reference), "{name}");
            if ours.starts_with("Ok") {
                let mut back = vec![0; len];
                snap.read_slice(&mut back, GuestAddress(at)).unwrap();
                assert!(back == segment, "{name}: the segment's bytes");
                assert!(!dirty_pages(&*snap).is_empty(), "{name}: no page dirty");
            }
        }
        // Two segments, the second failing: the first stays loaded on both.
        let p = page();
        let (_space, snap) = snapshot();
        let reference = reference();
        let image = elf(
            &[(16 * p, pattern(1, 64)), (26 * p, pattern(2, 64))],
            16 * p,
        );
        let ours = load_elf(&*snap, &image, None);
        assert!(ours.starts_with("Err"), "{ours}");
        assert_eq!(ours, load_elf(&reference, &image, None));
        assert!(image_eq(&snap, &reference));
        assert_eq!(dirty_pages(&*snap), dirty_pages(&reference));
        // A kernel offset whose sum with the segment's address overflows.
        let image = elf(&[(16 * p, pattern(3, 64))], 16 * p);
        assert_eq!(
            load_elf(&*snap, &image, Some(u64::MAX)),
            load_elf(&reference, &image, Some(u64::MAX))
        );
    }

    fn load_bzimage<M: GuestMemoryBackend>(m: &M, image: &[u8], offset: Option<u64>) -> String {
        let r = BzImage::load(m, offset.map(GuestAddress), &mut Cursor::new(image), None);
        format!(
            "{:?}",
            r.map(|r| (
                r.kernel_load,
                r.kernel_end,
                r.setup_header.map(|h| h.code32_start)
            ))
        )
    }

    #[test]
    #[cfg_attr(miri, ignore = "maps memory: Miri cannot")]
    fn bzimage_kernels_load_as_into_guest_memory_mmap() {
        for (name, at, len) in placements() {
            let payload = pattern(len + 1, len);
            // At its `code32_start` when that fits in 32 bits, else at an explicit offset.
            let (image, offset) = match u32::try_from(at) {
                Ok(at) => (bzimage(at, &payload), None),
                Err(_) => (bzimage(0x10_0000, &payload), Some(at)),
            };
            let (_space, snap) = snapshot();
            let reference = reference();
            let ours = load_bzimage(&*snap, &image, offset);
            assert_eq!(ours, load_bzimage(&reference, &image, offset), "{name}");
            assert!(image_eq(&snap, &reference), "{name}: memory differs");
            assert_eq!(dirty_pages(&*snap), dirty_pages(&reference), "{name}");
            if ours.starts_with("Ok") {
                let mut back = vec![0; len];
                snap.read_slice(&mut back, GuestAddress(at)).unwrap();
                assert!(back == payload, "{name}: the kernel's bytes");
            }
        }
    }

    /// The zero page (`boot_params`) written by linux-loader's Linux boot configurator at every
    /// placement: the same outcome, bytes and dirty pages as on the reference (the configurator
    /// checks the byte after the page, so a page ending at the end of RAM is refused on both).
    #[test]
    #[cfg_attr(miri, ignore = "maps memory: Miri cannot")]
    fn zero_pages_are_written_as_into_guest_memory_mmap() {
        use linux_loader::configurator::linux::LinuxBootConfigurator;
        use linux_loader::configurator::{BootConfigurator, BootParams};
        use linux_loader::loader::bootparam::boot_params;

        let mut params = boot_params::default();
        params.hdr.boot_flag = 0xaa55;
        params.hdr.header = 0x5372_6448;
        params.hdr.type_of_loader = 0xff;
        params.hdr.cmd_line_ptr = 0x2_0000;
        params.e820_entries = 1;
        params.e820_table[0].size = 1 << 20;
        let len = std::mem::size_of::<boot_params>() as u64;
        let p = page();
        let top = 0u64.wrapping_sub(2 * p);
        for at in [
            16 * p,
            20 * p - 100,
            24 * p - len,
            24 * p - len - 1,
            24 * p - 100,
            26 * p,
            top,
            top + p - len,
            top + p - len - 1,
        ] {
            let bp = BootParams::new(&params, GuestAddress(at));
            let (_space, snap) = snapshot();
            let reference = reference();
            let ours = format!("{:?}", LinuxBootConfigurator::write_bootparams(&bp, &*snap));
            let theirs = format!(
                "{:?}",
                LinuxBootConfigurator::write_bootparams(&bp, &reference)
            );
            assert_eq!(ours, theirs, "{at:#x}");
            assert!(image_eq(&snap, &reference), "{at:#x}: memory differs");
            assert_eq!(dirty_pages(&*snap), dirty_pages(&reference), "{at:#x}");
            if ours == "Ok(())" {
                let back: boot_params = snap.read_obj(GuestAddress(at)).unwrap();
                let (cmd_line_ptr, size) = ({ back.hdr.cmd_line_ptr }, { back.e820_table[0].size });
                assert_eq!(cmd_line_ptr, 0x2_0000, "{at:#x}");
                assert_eq!(size, 1 << 20, "{at:#x}");
            }
        }
    }

    /// An ELF kernel read from a file (positioned anywhere: the loader seeks) across the A/B edge:
    /// its bytes in place and the pages it covers, and only those, dirty.
    #[test]
    #[cfg_attr(miri, ignore = "maps memory and files: Miri cannot")]
    fn elf_kernels_load_from_files() {
        let p = page();
        let segment = pattern(7, 3 * p as usize);
        let image = elf(&[(20 * p - 100, segment.clone())], 20 * p - 100);
        let mut file = TempFile::new(&image);
        let (_space, snap) = snapshot();
        file.file.seek(SeekFrom::Start(17)).unwrap();
        let r = Elf::load(&*snap, None, &mut file.file, None).unwrap();
        assert_eq!(r.kernel_load, GuestAddress(20 * p - 100));
        assert_eq!(r.kernel_end, 20 * p - 100 + 3 * p + 16);
        let mut back = vec![0; segment.len()];
        snap.read_slice(&mut back, GuestAddress(20 * p - 100))
            .unwrap();
        assert!(back == segment);
        let a = snap.find_region(GuestAddress(16 * p)).unwrap();
        let b = snap.find_region(GuestAddress(20 * p)).unwrap();
        assert!(a.is_dirty(3 * p) && !a.is_dirty(2 * p));
        assert!(b.is_dirty(0) && b.is_dirty(p) && b.is_dirty(2 * p) && !b.is_dirty(3 * p));
    }

    /// Kernel images as an attacker crafts them, against a space with a read-only firmware
    /// region and against the same RAM as vm-memory's own memory (without the ROM): segments and
    /// kernels aimed at the ROM, program headers past the end of the file, segments longer than
    /// the file, sizes and addresses that wrap, bzImages without their magic, with a protocol
    /// before 2.00, not loadable high, or with more setup sectors than the file has. Every load is
    /// refused with an error on both, never a panic; the ROM keeps its zeros; RAM holds the
    /// same bytes and the same pages are dirty on both (the part of a segment the file had is
    /// written before the rest is found missing, on both).
    #[test]
    fn crafted_kernels_are_refused_and_read_only_memory_is_never_written() {
        use memvisor_space::{Protection, RegionType};

        const RAM: usize = 2 << 20;
        let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
        let rom = layout
            .windows_of(WindowKind::Firmware)
            .next()
            .unwrap()
            .start();
        let fresh = || {
            let specs = [
                RegionSpec::ram(GuestAddress(0), RAM as u64).with_dirty_tracking(true),
                RegionSpec::new(RegionType::Firmware, rom, 0x1000)
                    .with_protection(Protection::Read),
            ];
            let (space, _) = AddressSpace::back(layout.clone(), specs).unwrap();
            let reference = Reference::from_ranges(&[(GuestAddress(0), RAM)]).unwrap();
            (space.snapshot(), reference)
        };
        let ram = 0x10_0000u64;
        // The loads aim at `ram` (or the ROM, or nowhere): the bytes around it are compared, and
        // the dirty pages of the whole of RAM.
        let around = GuestAddress(ram - 0x8000);
        let same = |what: &str, snap: &Snapshot, reference: &Reference| {
            let mut buf = vec![0u8; 0x1000];
            snap.bytes().read_slice(&mut buf, rom).unwrap();
            assert!(buf.iter().all(|&b| b == 0), "{what}: the ROM was written");
            let (mut ours, mut theirs) = (vec![0u8; 0x10000], vec![0u8; 0x10000]);
            snap.read_slice(&mut ours, around).unwrap();
            reference.read_slice(&mut theirs, around).unwrap();
            assert!(ours == theirs, "{what}: RAM differs");
            assert_eq!(dirty_pages(snap), dirty_pages(reference), "{what}");
        };
        let patch = |mut image: Vec<u8>, at: usize, bytes: &[u8]| {
            image[at..at + bytes.len()].copy_from_slice(bytes);
            image
        };
        let good = elf(&[(ram, pattern(1, 64))], ram);
        // Program header fields: 64 + p_offset at 8, p_paddr at 24, p_filesz at 32.
        let elves = [
            (
                "a segment in the ROM",
                elf(&[(rom.0 + 0x100, pattern(2, 64))], rom.0),
            ),
            (
                "a segment from RAM into the ROM",
                elf(&[(rom.0 - 32, pattern(3, 64))], rom.0 - 32),
            ),
            (
                "program headers past the end",
                patch(good.clone(), 32, &u64::MAX.to_le_bytes()),
            ),
            (
                "65535 program headers",
                patch(good.clone(), 56, &u16::MAX.to_le_bytes()),
            ),
            (
                "a segment longer than the file",
                patch(good.clone(), 64 + 32, &(1u64 << 40).to_le_bytes()),
            ),
            (
                "a segment of u64::MAX bytes",
                patch(good.clone(), 64 + 32, &u64::MAX.to_le_bytes()),
            ),
            (
                "a segment past the end of the file",
                patch(good.clone(), 64 + 8, &u64::MAX.to_le_bytes()),
            ),
            (
                "a segment at the top of the space",
                patch(good.clone(), 64 + 24, &(u64::MAX - 15).to_le_bytes()),
            ),
            ("no magic", patch(good.clone(), 0, b"\x7fELG")),
            ("big endian", patch(good.clone(), 5, &[2])),
            ("a truncated header", good[..40].to_vec()),
        ];
        // Under Miri, which builds two memories per case, every third case.
        let every = if cfg!(miri) { 3 } else { 1 };
        for (what, image) in elves.iter().step_by(every) {
            let (snap, reference) = fresh();
            let r = Elf::load(&*snap, None, &mut Cursor::new(image), None);
            assert!(r.is_err(), "{what}: {:?}", r.map(|r| r.kernel_load));
            assert!(Elf::load(&reference, None, &mut Cursor::new(image), None).is_err());
            same(what, &snap, &reference);
        }
        // A kernel offset that moves a good segment into the ROM, or past the top.
        for offset in [rom.0 + 0x100 - ram, u64::MAX - ram + 1] {
            let (snap, reference) = fresh();
            let offset = Some(GuestAddress(offset));
            assert!(Elf::load(&*snap, offset, &mut Cursor::new(&good), None).is_err());
            assert!(Elf::load(&reference, offset, &mut Cursor::new(&good), None).is_err());
            same("an offset", &snap, &reference);
        }
        // The same image where it belongs loads, and marks the page it wrote.
        let (snap, reference) = fresh();
        Elf::load(&*snap, None, &mut Cursor::new(&good), None).unwrap();
        Elf::load(&reference, None, &mut Cursor::new(&good), None).unwrap();
        same("a good ELF", &snap, &reference);
        assert_eq!(dirty_pages(&*snap), [(0, ram / page())]);

        let payload = pattern(9, 256);
        let good = bzimage(u32::try_from(ram).unwrap(), &payload);
        let rom32 = u32::try_from(rom.0).unwrap();
        let bzimages = [
            ("code32_start in the ROM", bzimage(rom32 + 0x100, &payload)),
            (
                "code32_start running into the ROM",
                bzimage(rom32 - 16, &payload),
            ),
            ("no HdrS", patch(good.clone(), 0x202, b"HdrT")),
            (
                "protocol 1.ff",
                patch(good.clone(), 0x206, &0x01ffu16.to_le_bytes()),
            ),
            ("not loadable high", patch(good.clone(), 0x211, &[0])),
            ("255 setup sectors", patch(good.clone(), 0x1f1, &[0xff])),
            ("a truncated header", good[..0x200].to_vec()),
        ];
        for (what, image) in bzimages.iter().step_by(every) {
            let (snap, reference) = fresh();
            let r = BzImage::load(&*snap, None, &mut Cursor::new(image), None);
            assert!(r.is_err(), "{what}: {:?}", r.map(|r| r.kernel_load));
            assert!(BzImage::load(&reference, None, &mut Cursor::new(image), None).is_err());
            same(what, &snap, &reference);
        }
        let (snap, reference) = fresh();
        BzImage::load(&*snap, None, &mut Cursor::new(&good), None).unwrap();
        BzImage::load(&reference, None, &mut Cursor::new(&good), None).unwrap();
        same("a good bzImage", &snap, &reference);
        assert_eq!(dirty_pages(&*snap), [(0, ram / page())]);
    }
}

/// A source that gives at most `chunk` bytes a read, as a pipe or a socket may.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl vm_memory::ReadVolatile for Chunked<'_> {
    fn read_volatile<B: vm_memory::bitmap::BitmapSlice>(
        &mut self,
        buf: &mut vm_memory::VolatileSlice<B>,
    ) -> Result<usize, vm_memory::VolatileMemoryError> {
        let n = self.chunk.min(self.data.len());
        let mut part = &self.data[..n];
        let read = part.read_volatile(buf)?;
        self.data = &self.data[read..];
        Ok(read)
    }
}

/// `GuestBytes` fills a range from a source that reads a little at a time (where vm-memory's
/// own `Bytes` reads once per region): the bytes land across the region edge and exactly the
/// pages they cover are dirty.
#[test]
#[cfg_attr(miri, ignore = "maps memory: Miri cannot")]
fn chunked_stream_reads_across_regions_mark_the_pages_they_fill() {
    let (_space, snap) = snapshot();
    let p = page();
    let at = 20 * p - 300;
    let data = pattern(9, 2 * p as usize);
    let mut src = Chunked {
        data: &data,
        chunk: 100,
    };
    snap.bytes()
        .read_exact_volatile_from(GuestAddress(at), &mut src, data.len())
        .unwrap();
    let mut back = vec![0; data.len()];
    snap.read_slice(&mut back, GuestAddress(at)).unwrap();
    assert!(back == data);
    assert_eq!(dirty_pages(&*snap), [(16 * p, 3), (20 * p, 0), (20 * p, 1)]);
    // vm-memory's own `Bytes` reads once a region: 100 bytes, then 100 more at the next
    // region's start, and the count hides the gap.
    let reference = reference();
    let mut src = Chunked {
        data: &data,
        chunk: 100,
    };
    let n = reference
        .read_volatile_from(GuestAddress(at), &mut src, data.len())
        .unwrap();
    assert_eq!(n, 200);
    let mut src = Chunked {
        data: &data,
        chunk: 100,
    };
    assert_eq!(
        snap.bytes()
            .read_volatile_from(GuestAddress(at), &mut src, data.len())
            .unwrap(),
        100,
        "stops at the first short read"
    );
}

/// Read-only memory: vm-memory finds it, but gives no slice of it (its slices allow writes),
/// so a range reaching into it is not a valid range for `check_range` and a read through the
/// snapshot stops at its edge; `GuestBytes` reads it.
#[test]
#[cfg_attr(miri, ignore = "maps memory: Miri cannot")]
fn read_only_memory_is_found_but_gives_no_slice() {
    use memvisor_space::Protection;
    let p = page();
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let (space, _) = AddressSpace::back(
        layout,
        [
            RegionSpec::ram(GuestAddress(0), p),
            RegionSpec::ram(GuestAddress(p), p).with_protection(Protection::Read),
        ],
    )
    .unwrap();
    let snap = space.snapshot();
    let mem = &*snap;
    assert!(mem.address_in_range(GuestAddress(p)));
    assert_eq!(
        mem.checked_offset(GuestAddress(0), p as usize),
        Some(GuestAddress(p))
    );
    assert!(mem.check_range(GuestAddress(0), p as usize));
    assert!(!mem.check_range(GuestAddress(0), p as usize + 1));
    assert!(!mem.check_range(GuestAddress(p), 1));
    let mut buf = [1u8; 16];
    assert_eq!(mem.read(&mut buf, GuestAddress(p - 8)).unwrap(), 8);
    assert!(mem.read(&mut buf, GuestAddress(p)).is_err());
    assert_eq!(
        snap.bytes().read(&mut buf, GuestAddress(p - 8)).unwrap(),
        16
    );
    assert_eq!(buf, [0; 16]);
}

/// A split virtqueue served over `m` as a device does: the driver lays out one request (a
/// readable and a writable descriptor) in pages of their own, then the device pops the chain,
/// writes its response through the chain's memory and adds a used entry. Returns the dirty
/// pages after the driver's part and after the device's.
fn serve_virtqueue<M: GuestMemoryBackend>(m: &M) -> (DirtyPages, DirtyPages) {
    use virtio_queue::{Queue, QueueT};
    let p = page();
    // In C, one page each: descriptor table, available ring, used ring, request; in A, the
    // response.
    let (desc, avail, used, req, resp) = (32 * p, 33 * p, 34 * p, 35 * p + 8, 17 * p + 16);
    let put_desc = |index: u64, addr: u64, len: u32, flags: u16, next: u16| {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..].copy_from_slice(&next.to_le_bytes());
        m.write_slice(&raw, GuestAddress(desc + 16 * index))
            .unwrap();
    };
    put_desc(0, req, 16, 1, 1);
    put_desc(1, resp, 64, 2, 0);
    m.write_slice(b"a request here!!", GuestAddress(req))
        .unwrap();
    m.write_obj(0u16.to_le(), GuestAddress(avail + 4)).unwrap();
    m.write_obj(1u16.to_le(), GuestAddress(avail + 2)).unwrap();
    let driver = dirty_pages(m);

    let mut queue = Queue::new(16).unwrap();
    queue.set_size(16);
    let low = |a: u64| Some((a & 0xffff_ffff) as u32);
    let high = |a: u64| Some((a >> 32) as u32);
    queue.set_desc_table_address(low(desc), high(desc));
    queue.set_avail_ring_address(low(avail), high(avail));
    queue.set_used_ring_address(low(used), high(used));
    queue.set_ready(true);
    let mut chain = queue.pop_descriptor_chain(m).unwrap();
    let head = chain.head_index();
    let request = chain.next().unwrap();
    let mut got = [0u8; 16];
    chain.memory().read_slice(&mut got, request.addr()).unwrap();
    assert_eq!(&got, b"a request here!!");
    let response = chain.next().unwrap();
    assert!(response.is_write_only());
    chain
        .memory()
        .write_slice(b"done", response.addr())
        .unwrap();
    queue.add_used(m, head, 4).unwrap();
    (driver, dirty_pages(m))
}

#[test]
#[cfg_attr(miri, ignore = "maps memory: Miri cannot")]
fn virtqueue_used_ring_and_response_writes_mark_pages_dirty() {
    let (_space, snap) = snapshot();
    let reference = reference();
    let (driver, device) = serve_virtqueue(&*snap);
    assert_eq!(
        (driver.clone(), device.clone()),
        serve_virtqueue(&reference)
    );
    let p = page();
    // The used ring (page 2 of C) and the response (page 1 of A) are the device's writes.
    for (region, index) in [(32 * p, 2), (16 * p, 1)] {
        assert!(!driver.contains(&(region, index)), "{index}");
        assert!(device.contains(&(region, index)), "{index}");
    }
    assert!(
        snap.find_region(GuestAddress(34 * p))
            .unwrap()
            .is_dirty(2 * p)
    );
    // A discard after the log was taken marks the discarded page again, so that a migration
    // sends its zeros.
    let a = snap.find_region(GuestAddress(16 * p)).unwrap();
    a.take_dirty_log().unwrap();
    assert!(!a.is_dirty(p));
    snap.discard(GuestAddress(17 * p), p).unwrap();
    assert!(a.is_dirty(p) && !a.is_dirty(0) && !a.is_dirty(2 * p));
    let mut back = [1u8; 4];
    snap.read_slice(&mut back, GuestAddress(17 * p + 16))
        .unwrap();
    assert_eq!(back, [0; 4]);
}
