//! rust-vmm's virtio-queue over the address space: a split virtqueue laid out in guest memory
//! is served with the memory given as `AddressSpace::memory()`'s guard and as an
//! `Arc<Snapshot>` (both meet the chains' `M: Deref + Clone, M::Target: GuestMemory` bound);
//! buffers are read and written through the chain's memory and used entries land in the ring;
//! descriptors pointing at MMIO or past the end of RAM fail with errors, never a panic; and a
//! popped chain keeps its snapshot, and so its memory, across later changes to the space.

#![cfg(target_os = "linux")]
#![cfg_attr(miri, allow(dead_code, unused_imports))]

use std::io::{Read, Write};
use std::ops::Deref;
use std::sync::Arc;

use memvisor_space::{
    AddressSpace, Layout, Protection, RegionSpec, RegionType, Snapshot, WindowKind,
};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The queue's size (a power of two).
const QUEUE_SIZE: u16 = 16;
/// The descriptor table (16-byte aligned), the available ring and the used ring.
const DESC_TABLE: u64 = 0x1_0000;
const AVAIL_RING: u64 = 0x1_1000;
const USED_RING: u64 = 0x1_2000;
/// Request (device-readable) and response (device-writable) buffers of two requests.
const REQ: u64 = 0x2_0000;
const RESP: u64 = 0x3_0000;
const REQ2: u64 = 0x4_0000;
const RESP2: u64 = 0x5_0000;

/// `VIRTQ_DESC_F_NEXT` and `VIRTQ_DESC_F_WRITE` (virtio 1.2, 2.7.5).
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
/// `VIRTQ_DESC_F_INDIRECT`.
const F_INDIRECT: u16 = 4;

/// A descriptor, as the driver writes it into the table: `addr` (le64), `len` (le32), `flags`
/// (le16), `next` (le16).
fn put_desc(mem: &Snapshot, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let at = GuestAddress(DESC_TABLE + 16 * u64::from(index));
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&addr.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&flags.to_le_bytes());
    raw[14..].copy_from_slice(&next.to_le_bytes());
    mem.write_slice(&raw, at).unwrap();
}

/// Offers the chains starting at `heads` in the available ring, then publishes its `idx`.
fn offer(mem: &Snapshot, heads: &[u16]) {
    for (i, head) in heads.iter().enumerate() {
        let at = GuestAddress(AVAIL_RING + 4 + 2 * i as u64);
        mem.write_obj(head.to_le(), at).unwrap();
    }
    mem.write_obj(0u16, GuestAddress(AVAIL_RING)).unwrap();
    let idx = u16::try_from(heads.len()).unwrap();
    mem.write_obj(idx.to_le(), GuestAddress(AVAIL_RING + 2))
        .unwrap();
}

/// Points `queue` at its rings as a driver does through the transport: each address in a low
/// and a high 32-bit half.
fn set_rings(queue: &mut Queue, desc_table: u64, avail_ring: u64, used_ring: u64) {
    let low = |a: u64| Some(u32::try_from(a & 0xffff_ffff).unwrap());
    let high = |a: u64| Some(u32::try_from(a >> 32).unwrap());
    queue.set_desc_table_address(low(desc_table), high(desc_table));
    queue.set_avail_ring_address(low(avail_ring), high(avail_ring));
    queue.set_used_ring_address(low(used_ring), high(used_ring));
}

/// A ready queue over the rings above.
fn ready_queue() -> Queue {
    let mut queue = Queue::new(QUEUE_SIZE).unwrap();
    queue.set_size(QUEUE_SIZE);
    set_rings(&mut queue, DESC_TABLE, AVAIL_RING, USED_RING);
    queue.set_ready(true);
    assert_eq!(queue.desc_table(), DESC_TABLE);
    assert_eq!(queue.avail_ring(), AVAIL_RING);
    assert_eq!(queue.used_ring(), USED_RING);
    queue
}

/// The used ring's `idx` and its entry `i` (`id`, `len`), read as the driver would.
fn used(mem: &Snapshot, i: u64) -> (u16, u32, u32) {
    let idx = u16::from_le(mem.read_obj(GuestAddress(USED_RING + 2)).unwrap());
    let id = u32::from_le(mem.read_obj(GuestAddress(USED_RING + 4 + 8 * i)).unwrap());
    let len = u32::from_le(mem.read_obj(GuestAddress(USED_RING + 8 + 8 * i)).unwrap());
    (idx, id, len)
}

/// Every descriptor of a chain: guest address, length, device-writable.
fn descriptors<M>(chain: &DescriptorChain<M>) -> Vec<(u64, u32, bool)>
where
    M: Deref + Clone,
    M::Target: vm_memory::GuestMemory,
{
    chain
        .clone()
        .map(|d| (d.addr().0, d.len(), d.is_write_only()))
        .collect()
}

/// Two requests of a readable and a writable descriptor each: heads 0 and 2.
fn two_requests(mem: &Snapshot) {
    put_desc(mem, 0, REQ, 16, F_NEXT, 1);
    put_desc(mem, 1, RESP, 64, F_WRITE, 0);
    put_desc(mem, 2, REQ2, 8, F_NEXT, 3);
    put_desc(mem, 3, RESP2, 32, F_WRITE, 0);
    mem.write_slice(b"first request!!!", GuestAddress(REQ))
        .unwrap();
    mem.write_slice(b"second!!", GuestAddress(REQ2)).unwrap();
    offer(mem, &[0, 2]);
}

#[test]
#[cfg_attr(miri, ignore = "maps memory: Miri cannot")]
fn chains_round_trip_through_the_guard_and_an_arc_snapshot() {
    let layout = Layout::x86_64().ram(GIB).build().unwrap();
    let (space, _) =
        AddressSpace::back(layout, [RegionSpec::ram(GuestAddress(0), 2 * MIB)]).unwrap();
    two_requests(&space.memory());
    let mut queue = ready_queue();
    assert!(queue.is_valid(&*space.memory()));

    // The guard as the chain's memory.
    let chain = queue.pop_descriptor_chain(space.memory()).unwrap();
    assert_eq!(chain.head_index(), 0);
    assert_eq!(descriptors(&chain), [(REQ, 16, false), (RESP, 64, true)]);
    assert_eq!(chain.clone().readable().count(), 1);
    assert_eq!(chain.clone().writable().count(), 1);
    let mut request = [0u8; 16];
    chain
        .memory()
        .read_slice(&mut request, GuestAddress(REQ))
        .unwrap();
    assert_eq!(&request, b"first request!!!");
    chain
        .memory()
        .write_slice(b"first response", GuestAddress(RESP))
        .unwrap();
    let mut response = [0u8; 14];
    space
        .snapshot()
        .read_slice(&mut response, GuestAddress(RESP))
        .unwrap();
    assert_eq!(&response, b"first response");
    // virtio-queue's own reader and writer, over `GuestMemory::get_slices`.
    let mut reader = chain.clone().reader(chain.memory()).unwrap();
    assert_eq!(reader.available_bytes(), 16);
    let mut all = Vec::new();
    reader.read_to_end(&mut all).unwrap();
    assert_eq!(all, b"first request!!!");
    let mut writer = chain.clone().writer(chain.memory()).unwrap();
    assert_eq!(writer.available_bytes(), 64);
    writer.write_all(b"FIRST").unwrap();
    assert_eq!(writer.bytes_written(), 5);
    space
        .memory()
        .read_slice(&mut response, GuestAddress(RESP))
        .unwrap();
    assert_eq!(&response, b"FIRST response");
    assert_eq!(used(&space.memory(), 0), (0, 0, 0));
    queue
        .add_used(chain.memory(), chain.head_index(), 14)
        .unwrap();
    assert_eq!(used(&space.snapshot(), 0), (1, 0, 14));
    drop(chain);

    // An `Arc<Snapshot>` as the chain's memory.
    let chain: DescriptorChain<Arc<Snapshot>> =
        queue.pop_descriptor_chain(space.snapshot()).unwrap();
    assert_eq!(chain.head_index(), 2);
    assert_eq!(descriptors(&chain), [(REQ2, 8, false), (RESP2, 32, true)]);
    let mut request = [0u8; 8];
    chain
        .memory()
        .read_slice(&mut request, GuestAddress(REQ2))
        .unwrap();
    assert_eq!(&request, b"second!!");
    chain
        .memory()
        .write_obj(0xdead_beef_u32.to_le(), GuestAddress(RESP2 + 28))
        .unwrap();
    assert_eq!(
        space
            .memory()
            .read_obj::<u32>(GuestAddress(RESP2 + 28))
            .unwrap(),
        0xdead_beef_u32.to_le()
    );
    queue
        .add_used(&*space.snapshot(), chain.head_index(), 32)
        .unwrap();
    assert_eq!(used(&space.memory(), 0), (2, 0, 14));
    assert_eq!(used(&space.memory(), 1), (2, 2, 32));

    // Both offered chains were taken.
    assert!(queue.pop_descriptor_chain(space.memory()).is_none());
    assert_eq!(queue.next_avail(), 2);
    assert_eq!(queue.next_used(), 2);
}

#[test]
#[cfg_attr(miri, ignore = "maps memory: Miri cannot")]
fn descriptors_at_mmio_or_past_ram_fail_with_errors() {
    let layout = Layout::x86_64().ram(GIB).build().unwrap();
    let mut placer = layout.placer();
    let mmio = placer
        .place(WindowKind::Device, 0x1000, 0x1000, "mmio")
        .unwrap()
        .start();
    let specs = [
        RegionSpec::ram(GuestAddress(0), 2 * MIB),
        RegionSpec::new(RegionType::Device, mmio, 0x1000),
    ];
    let (space, _) = AddressSpace::back(layout, specs).unwrap();
    let mem = space.memory();
    assert_eq!(mem.region_type(mmio), Some(RegionType::Device));
    // One chain: readable at the MMIO window, readable past the end of RAM, writable across it.
    let past = 2 * MIB + 0x1000;
    let across = 2 * MIB - 8;
    put_desc(&mem, 0, mmio.0, 0x100, F_NEXT, 1);
    put_desc(&mem, 1, past, 16, F_NEXT, 2);
    put_desc(&mem, 2, across, 16, F_WRITE, 0);
    offer(&mem, &[0]);
    drop(mem);

    let mut queue = ready_queue();
    let chain = queue.pop_descriptor_chain(space.memory()).unwrap();
    assert_eq!(
        descriptors(&chain),
        [
            (mmio.0, 0x100, false),
            (past, 16, false),
            (across, 16, true)
        ]
    );
    let mut buf = [0u8; 16];
    assert!(matches!(
        chain.memory().read_slice(&mut buf, mmio),
        Err(GuestMemoryError::InvalidGuestAddress(a)) if a == mmio
    ));
    assert!(matches!(
        chain.memory().read_slice(&mut buf, GuestAddress(past)),
        Err(GuestMemoryError::InvalidGuestAddress(a)) if a == GuestAddress(past)
    ));
    let across_err = chain
        .memory()
        .write_slice(&[0xaa; 16], GuestAddress(across))
        .unwrap_err();
    assert!(
        matches!(
            across_err,
            GuestMemoryError::PartialBuffer {
                expected: 16,
                completed: 8
            }
        ),
        "{across_err:?}"
    );
    assert!(matches!(
        chain.memory().write_obj(1u32, mmio),
        Err(GuestMemoryError::InvalidGuestAddress(a)) if a == mmio
    ));
    // virtio-queue's reader and writer refuse the chain as a whole.
    assert!(matches!(
        chain.clone().reader(chain.memory()),
        Err(virtio_queue::Error::InvalidChain)
    ));
    assert!(matches!(
        chain.clone().writer(chain.memory()),
        Err(virtio_queue::Error::InvalidChain)
    ));

    // A queue whose rings are not in guest memory is not valid, and yields nothing.
    let mut outside = ready_queue();
    set_rings(&mut outside, mmio.0, AVAIL_RING, USED_RING);
    assert_eq!(outside.desc_table(), mmio.0);
    assert!(!outside.is_valid(&*space.memory()));
    set_rings(&mut outside, DESC_TABLE, AVAIL_RING, USED_RING);
    assert!(outside.is_valid(&*space.memory()));
    set_rings(&mut outside, DESC_TABLE, past, USED_RING);
    assert!(!outside.is_valid(&*space.memory()));
    assert!(outside.pop_descriptor_chain(space.memory()).is_none());
    assert_eq!(outside.next_avail(), 0);
}

#[test]
#[cfg_attr(miri, ignore = "maps memory: Miri cannot")]
fn popped_chains_keep_their_snapshot_and_its_memory() {
    let layout = Layout::x86_64().ram(GIB).hotplug(GIB).build().unwrap();
    let (space, _) =
        AddressSpace::back(layout, [RegionSpec::ram(GuestAddress(0), 2 * MIB)]).unwrap();
    two_requests(&space.memory());
    let mut queue = ready_queue();
    let first = queue.pop_descriptor_chain(space.memory()).unwrap();
    let second = queue.pop_descriptor_chain(space.snapshot()).unwrap();
    let generation = space.snapshot().generation();
    assert_eq!(first.memory().generation(), generation);
    assert_eq!(second.memory().generation(), generation);

    // Plug 2 MiB: the space's snapshot has it, the chains' do not.
    let slot = space
        .snapshot()
        .placer()
        .unwrap()
        .place(WindowKind::Hotplug, 2 * MIB, 2 * MIB, "slot0")
        .unwrap()
        .start();
    space
        .plug(RegionSpec::ram(slot, 2 * MIB).with_hotplug(true))
        .unwrap();
    assert!(space.memory().find_region(slot).is_some());
    assert!(first.memory().find_region(slot).is_none());
    assert!(second.memory().find_region(slot).is_none());
    assert_eq!(space.snapshot().generation(), generation + 1);
    assert_eq!(first.memory().generation(), generation);

    // Remove the RAM the rings and buffers are in, and drop the removed region: the space can no
    // longer reach it, the chains' snapshots still hold it.
    let removed = space.remove_region(GuestAddress(0), 2 * MIB).unwrap();
    drop(removed);
    let mut buf = [0u8; 16];
    assert!(matches!(
        space.memory().read_slice(&mut buf, GuestAddress(REQ)),
        Err(GuestMemoryError::InvalidGuestAddress(a)) if a == GuestAddress(REQ)
    ));
    assert!(queue.pop_descriptor_chain(space.memory()).is_none());
    // The descriptor table is read from the chains' own snapshots.
    assert_eq!(descriptors(&first), [(REQ, 16, false), (RESP, 64, true)]);
    assert_eq!(descriptors(&second), [(REQ2, 8, false), (RESP2, 32, true)]);
    first
        .memory()
        .read_slice(&mut buf, GuestAddress(REQ))
        .unwrap();
    assert_eq!(&buf, b"first request!!!");
    let mut writer = second.clone().writer(second.memory()).unwrap();
    writer.write_all(b"still mapped").unwrap();
    let mut response = [0u8; 12];
    second
        .memory()
        .read_slice(&mut response, GuestAddress(RESP2))
        .unwrap();
    assert_eq!(&response, b"still mapped");
    // Both chains' snapshots are the same one: a write through one is seen through the other.
    first
        .memory()
        .read_slice(&mut response, GuestAddress(RESP2))
        .unwrap();
    assert_eq!(&response, b"still mapped");
    queue
        .add_used(first.memory(), first.head_index(), 7)
        .unwrap();
    queue
        .add_used(second.memory(), second.head_index(), 12)
        .unwrap();
    assert_eq!(used(second.memory(), 0), (2, 0, 7));
    assert_eq!(used(second.memory(), 1), (2, 2, 12));
    assert!(queue.add_used(&*space.memory(), 0, 1).is_err());
}

/// The dirty pages of every region, as (region base, page index).
fn dirty_pages(mem: &Snapshot) -> Vec<(u64, u64)> {
    let p = memvisor_vmem::page_size() as u64;
    let mut out = Vec::new();
    for r in mem.regions() {
        for i in 0..r.size() / p {
            if r.is_dirty(i * p) {
                out.push((r.base().0, i));
            }
        }
    }
    out
}

/// Pops the chain at `head` (offered alone) from a fresh queue over the rings above.
fn pop_alone(space: &AddressSpace, head: u16) -> DescriptorChain<Arc<Snapshot>> {
    offer(&space.snapshot(), &[head]);
    let mut queue = ready_queue();
    queue.pop_descriptor_chain(space.snapshot()).unwrap()
}

/// Descriptor tables as a hostile driver writes them: chains that loop, indirect tables of bad
/// lengths, in a hole, across two regions or nested, buffers in a hole, in read-only memory,
/// across two regions, across a region and a hole, at the top of the address space, and a used
/// ring in read-only memory. Every walk ends (within the queue's size), nothing panics, bad
/// buffers are errors, read-only memory keeps its bytes, and the pages marked dirty are exactly
/// the ones the device wrote.
#[test]
fn crafted_descriptor_tables_end_in_errors_and_write_only_where_allowed() {
    let layout = Layout::x86_64().ram(GIB).build().unwrap();
    let rom = layout
        .windows_of(WindowKind::Firmware)
        .next()
        .unwrap()
        .start();
    let specs = [
        RegionSpec::ram(GuestAddress(0), 2 * MIB).with_dirty_tracking(true),
        RegionSpec::ram(GuestAddress(2 * MIB), 2 * MIB).with_dirty_tracking(true),
        RegionSpec::new(RegionType::Firmware, rom, 0x1000).with_protection(Protection::Read),
    ];
    let (space, _) = AddressSpace::back(layout, specs).unwrap();
    let mem = space.snapshot();
    let hole = 4 * MIB + 0x1000;
    let p = memvisor_vmem::page_size() as u64;
    let clear = || {
        mem.regions()
            .for_each(memvisor_space::Region::clear_dirty_log)
    };
    let rom_bytes = || {
        let mut buf = [0u8; 0x1000];
        mem.bytes().read_slice(&mut buf, rom).unwrap();
        buf
    };
    assert_eq!(rom_bytes(), [0; 0x1000]);

    // A chain that loops on itself, and one of two descriptors that point at each other: the
    // walk ends after at most the queue's size of descriptors.
    put_desc(&mem, 0, RESP, 16, F_WRITE | F_NEXT, 0);
    put_desc(&mem, 1, RESP2, 16, F_WRITE | F_NEXT, 2);
    put_desc(&mem, 2, RESP2 + 16, 16, F_WRITE | F_NEXT, 1);
    for head in [0, 1] {
        let chain = pop_alone(&space, head);
        let walked = descriptors(&chain);
        assert!(
            !walked.is_empty() && walked.len() <= usize::from(QUEUE_SIZE),
            "{walked:?}"
        );
        let mut writer = chain.clone().writer(chain.memory()).unwrap();
        assert!(writer.available_bytes() <= 16 * usize::from(QUEUE_SIZE));
        clear();
        writer.write_all(&[0x5a; 16]).unwrap();
        let page = if head == 0 { RESP } else { RESP2 };
        assert_eq!(dirty_pages(&mem), [(0, page / p)]);
    }

    // Indirect tables: a length that is not a multiple of 16, a length of 0, a table in a hole,
    // a table past the top of the address space, a table whose entry is itself indirect: the
    // walk yields nothing (or stops), never panics.
    const TABLE: u64 = 0x6_0000;
    let put_indirect = |at: u64, i: u64, addr: u64, len: u32, flags: u16, next: u16| {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..].copy_from_slice(&next.to_le_bytes());
        mem.write_slice(&raw, GuestAddress(at + 16 * i)).unwrap();
    };
    put_indirect(TABLE, 0, RESP, 8, F_WRITE | F_NEXT, 1);
    put_indirect(TABLE, 1, TABLE, 32, F_INDIRECT, 0);
    for (addr, len, yields) in [
        (TABLE, 15, 0),
        (TABLE, 0, 0),
        (TABLE, 17, 0),
        (hole, 32, 0),
        (u64::MAX - 15, 32, 0),
        (u64::MAX - 15, 16, 0),
        (TABLE, 16 * u32::from(u16::MAX) + 16, 0),
        // The nested table stops the walk after the first entry.
        (TABLE, 32, 1),
    ] {
        put_desc(&mem, 3, addr, len, F_INDIRECT, 0);
        let chain = pop_alone(&space, 3);
        let walked = descriptors(&chain);
        assert_eq!(walked.len(), yields, "{addr:#x}+{len:#x}: {walked:?}");
    }
    // An indirect table that runs across the two adjacent regions is read whole.
    let across = 2 * MIB - 16;
    put_indirect(across, 0, RESP, 8, F_WRITE | F_NEXT, 1);
    put_indirect(across, 1, RESP + 8, 8, F_WRITE, 0);
    put_desc(&mem, 3, across, 32, F_INDIRECT, 0);
    let chain = pop_alone(&space, 3);
    assert_eq!(descriptors(&chain), [(RESP, 8, true), (RESP + 8, 8, true)]);

    // Buffers the device must not write: read-only memory, a hole, across a region and the
    // hole, past the top of the address space, a length that runs past it. The writer refuses
    // the chain, the memory refuses the write, the ROM keeps its zeros and no page is marked.
    let top = 4 * MIB - 8;
    for (addr, len) in [
        (rom.0, 16),
        (hole, 16),
        (top, 16),
        (u64::MAX - 7, 16),
        (0, u32::MAX),
    ] {
        put_desc(&mem, 4, addr, len, F_WRITE, 0);
        let chain = pop_alone(&space, 4);
        assert_eq!(descriptors(&chain), [(addr, len, true)]);
        clear();
        assert!(
            matches!(
                chain.clone().writer(chain.memory()),
                Err(virtio_queue::Error::InvalidChain)
            ),
            "{addr:#x}+{len:#x}"
        );
        let data = vec![0xa5; 16];
        let written = chain.memory().write(&data, GuestAddress(addr));
        // What the memory takes of 16 bytes there (the chain as a whole is refused): the part
        // before the hole, or all of them at the start of RAM.
        let expected: &[(u64, u64)] = match addr {
            a if a == top => {
                assert_eq!(written.unwrap(), 8);
                &[(2 * MIB, (2 * MIB - p) / p)]
            }
            0 => {
                assert_eq!(written.unwrap(), 16);
                &[(0, 0)]
            }
            _ => {
                assert!(written.is_err(), "{addr:#x}: {written:?}");
                &[]
            }
        };
        assert_eq!(dirty_pages(&mem), expected, "{addr:#x}+{len:#x}");
        assert!(chain.memory().write_obj(1u64, GuestAddress(rom.0)).is_err());
        assert_eq!(rom_bytes(), [0; 0x1000], "{addr:#x}+{len:#x}");
    }
    // A buffer across the two adjacent regions is written whole, and marks one page of each.
    put_desc(&mem, 4, 2 * MIB - 8, 16, F_WRITE, 0);
    let chain = pop_alone(&space, 4);
    let mut writer = chain.clone().writer(chain.memory()).unwrap();
    clear();
    writer.write_all(&[0x3c; 16]).unwrap();
    assert_eq!(dirty_pages(&mem), [(0, (2 * MIB - p) / p), (2 * MIB, 0)]);
    let mut back = [0u8; 16];
    mem.read_slice(&mut back, GuestAddress(2 * MIB - 8))
        .unwrap();
    assert_eq!(back, [0x3c; 16]);

    // A used ring in read-only memory, in a hole or at the top: the queue is not valid, and a
    // used entry put there anyway is an error that writes nothing.
    for used_ring in [rom.0, hole, u64::MAX - 3] {
        let mut queue = ready_queue();
        set_rings(&mut queue, DESC_TABLE, AVAIL_RING, used_ring);
        assert!(!queue.is_valid(&*mem), "{used_ring:#x}");
        clear();
        assert!(queue.add_used(&*mem, 0, 16).is_err(), "{used_ring:#x}");
        assert_eq!(dirty_pages(&mem), [], "{used_ring:#x}");
        assert_eq!(rom_bytes(), [0; 0x1000]);
    }
}
