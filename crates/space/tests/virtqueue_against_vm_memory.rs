//! rust-vmm's virtio-queue walking descriptor chains that proptest draws, over a snapshot and
//! over vm-memory's own `GuestMemoryMmap<AtomicBitmap>` of the same ranges (two adjacent
//! regions, a gap, the region holding the queue, one just below the top of the 64-bit space):
//! descriptors at and across region edges, into the gap, past the top, over the queue itself,
//! of length 0 to 4 GiB - 1, chained, writable and indirect at random, with loops and
//! out-of-range indices. The device's side (popping chains, iterating their descriptors,
//! reading the readable part and filling the writable part through virtio-queue's `Reader` and
//! `Writer`, adding used entries) must give the same descriptors, counts, bytes and errors on
//! both, and leave the same memory and dirty pages.
#![cfg(target_os = "linux")]
#![cfg(not(miri))] // vm-memory's own mmap: Miri cannot map
#![allow(clippy::cast_possible_truncation)]

use std::io::{Read, Write};

use memvisor_space::{AddressSpace, Layout, RegionSpec, Snapshot, Window, WindowKind};
use proptest::prelude::*;
use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::bitmap::{AtomicBitmap, Bitmap};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

type Reference = GuestMemoryMmap<AtomicBitmap>;

const P: u64 = 4096;
/// Where the queue lives (in region C): descriptor table, available ring, used ring.
const DESC: u64 = 32 * P;
const AVAIL: u64 = 33 * P;
const USED: u64 = 34 * P;
const QUEUE_SIZE: u16 = 8;
/// The most bytes a chain's reader reads or its writer writes here.
const MAX_IO: usize = 6 * P as usize;

/// A and B adjacent, C after a gap (holding the queue), D one page below the top of the space.
fn ranges() -> Vec<(u64, u64)> {
    vec![
        (16 * P, 4 * P),
        (20 * P, 4 * P),
        (32 * P, 4 * P),
        (0u64.wrapping_sub(2 * P), P),
    ]
}

fn space() -> AddressSpace {
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
    AddressSpace::back(layout, specs).unwrap().0
}

fn reference() -> Reference {
    let ranges: Vec<(GuestAddress, usize)> = ranges()
        .into_iter()
        .map(|(base, size)| (GuestAddress(base), size as usize))
        .collect();
    Reference::from_ranges(&ranges).unwrap()
}

/// Addresses at the edges that matter to a descriptor.
const ADDRESSES: [u64; 12] = [
    16 * P,
    16 * P - 8,
    20 * P - 8,
    20 * P,
    24 * P - 4,
    28 * P,
    36 * P - 4,
    DESC,
    0u64.wrapping_sub(2 * P),
    0u64.wrapping_sub(P + 4),
    u64::MAX - 3,
    0,
];
const LENGTHS: [u32; 8] = [0, 1, 8, 16, 4095, 4096, 4 * 4096 + 3, u32::MAX];

/// A descriptor: an address (from `ADDRESSES`, moved by a few bytes), a length (from
/// `LENGTHS`), flags (next, write, indirect) and the next index (past the table at times).
#[derive(Clone, Copy, Debug)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

fn desc() -> impl Strategy<Value = Desc> {
    (
        0..ADDRESSES.len(),
        0u64..24,
        0..LENGTHS.len(),
        0u16..8,
        0u16..QUEUE_SIZE + 2,
    )
        .prop_map(|(a, shift, l, flags, next)| Desc {
            addr: ADDRESSES[a].wrapping_add(shift),
            len: LENGTHS[l],
            flags,
            next,
        })
}

/// Lays out the descriptors and the available ring (`heads`) through `m`.
fn driver<M: GuestMemoryBackend>(m: &M, descs: &[Desc], heads: &[u16]) {
    for (i, d) in descs.iter().enumerate() {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&d.addr.to_le_bytes());
        raw[8..12].copy_from_slice(&d.len.to_le_bytes());
        raw[12..14].copy_from_slice(&d.flags.to_le_bytes());
        raw[14..].copy_from_slice(&d.next.to_le_bytes());
        m.write_slice(&raw, GuestAddress(DESC + 16 * i as u64))
            .unwrap();
    }
    for (i, &h) in heads.iter().enumerate() {
        m.write_obj(h.to_le(), GuestAddress(AVAIL + 4 + 2 * i as u64))
            .unwrap();
    }
    m.write_obj((heads.len() as u16).to_le(), GuestAddress(AVAIL + 2))
        .unwrap();
}

/// The device's side over `m`: every chain popped, its descriptors, what its reader reads and
/// its writer writes, and the used entries, as text.
fn device<M: GuestMemoryBackend>(m: &M, fill: u8) -> Vec<String> {
    let mut log = Vec::new();
    let mut queue = Queue::new(QUEUE_SIZE).unwrap();
    queue.set_size(QUEUE_SIZE);
    queue.set_desc_table_address(Some(DESC as u32), Some(0));
    queue.set_avail_ring_address(Some(AVAIL as u32), Some(0));
    queue.set_used_ring_address(Some(USED as u32), Some(0));
    queue.set_ready(true);
    for _ in 0..QUEUE_SIZE {
        let Some(chain) = queue.pop_descriptor_chain(m) else {
            log.push("no chain".into());
            break;
        };
        let head = chain.head_index();
        let descs: Vec<_> = chain
            .clone()
            .take(32)
            .map(|d| (d.addr(), d.len(), d.flags(), d.next()))
            .collect();
        log.push(format!("chain {head}: {descs:?}"));
        match Reader::new(m, chain.clone()) {
            Ok(mut reader) => {
                let available = reader.available_bytes();
                let mut buf = vec![0u8; available.min(MAX_IO)];
                let r = reader.read(&mut buf).map_err(|e| e.kind());
                log.push(format!("reader {available} {r:?} {buf:?}"));
            }
            Err(e) => log.push(format!("reader refused: {e:?}")),
        }
        let written = match Writer::new(m, chain) {
            Ok(mut writer) => {
                let available = writer.available_bytes();
                let data = vec![fill; available.min(MAX_IO)];
                let r = writer.write(&data).map_err(|e| e.kind());
                log.push(format!(
                    "writer {available} {r:?} {}",
                    writer.bytes_written()
                ));
                writer.bytes_written() as u32
            }
            Err(e) => {
                log.push(format!("writer refused: {e:?}"));
                0
            }
        };
        log.push(format!("add_used {:?}", queue.add_used(m, head, written)));
    }
    log
}

/// Every byte and dirty page of every region.
fn image<M: GuestMemoryBackend>(m: &M) -> Vec<(Vec<u8>, Vec<bool>)> {
    m.iter()
        .map(|r| {
            let mut bytes = vec![0u8; r.len() as usize];
            r.read_slice(&mut bytes, vm_memory::MemoryRegionAddress(0))
                .unwrap();
            let dirty = (0..r.len() / P)
                .map(|i| r.bitmap().dirty_at((i * P) as usize))
                .collect();
            (bytes, dirty)
        })
        .collect()
}

fn run(descs: &[Desc], heads: &[u16], fill: u8) {
    let space = space();
    let ours = space.snapshot();
    let ours: &Snapshot = &ours;
    let theirs = reference();
    driver(ours, descs, heads);
    driver(&theirs, descs, heads);
    let (o, t) = (device(ours, fill), device(&theirs, fill));
    for (o, t) in o.iter().zip(&t) {
        assert_eq!(o, t);
    }
    assert_eq!(o.len(), t.len());
    assert!(
        image(ours) == image(&theirs),
        "memory or dirty pages differ"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn same_chains_as_over_vm_memory(
        descs in prop::collection::vec(desc(), QUEUE_SIZE as usize),
        heads in prop::collection::vec(0u16..QUEUE_SIZE + 2, 0..=QUEUE_SIZE as usize),
        fill in any::<u8>(),
    ) {
        run(&descs, &heads, fill);
    }
}
