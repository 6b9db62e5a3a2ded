//! Several clients of one arena (of a random chunk size, chunk alignment and flags, over a
//! caller's memory or a reservation) under random allocations (small blocks, buddy blocks and
//! runs of whole chunks), frees by the client and through the arena (their own, another
//! client's, interior pointers, one past the end, one before, freed blocks, blocks of another
//! arena, addresses outside), trims of a client and of the arena, quota hits and deletes.
//!
//! Checked after every step, against a model of the live blocks and of the blocks freed
//! through the arena that their client has not taken in yet: live blocks never overlap, lie
//! inside the arena, are aligned as asked (an alignment past the arena's is refused, a size
//! past its largest block too), are owned by exactly their client (`Client::owns`,
//! `Arena::owner_of`, `Client::size_of`) and keep the bytes written into them (so no block was
//! handed to anyone else while live); every bad free, by a client or through the arena, is
//! refused with the error its address calls for and changes nothing (statistics included);
//! with `ZERO` a new block reads zero, with `POISON` a freed one reads `POISON_BYTE` (past the
//! bytes the docs keep); the client statistics equal the model's bytes and blocks, their chunks
//! add up to the arena's held chunks, and with `STATISTICS` the arena's totals are the sums of
//! the clients'; a trimmed client keeps no cached block and no chunk without a live block; a
//! deleted client's blocks are owned by no one and its chunks go back, so that a new client
//! gets the arena's largest free block at once; nothing may panic.
//!
//! `Allocator::grow`, `grow_zeroed` and `shrink` move a client's own blocks, keeping their
//! bytes (and zeroing past the old size with `ZERO` or `grow_zeroed`), and refuse, changing
//! nothing, another client's block, an interior or foreign pointer, an old size past the block
//! and a new size on the wrong side of the old one.
#![no_main]

use std::alloc::Layout;
use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::ptr::NonNull;

use libfuzzer_sys::fuzz_target;
use memvisor_arena::allocator_api2::alloc::Allocator;
use memvisor_arena::{
    Arena, ArenaStats, Backing, Client, ClientStats, Config, Error, Flags, POISON_BYTE, Quota,
};
use memvisor_fuzz::{Input, all_bytes};

const CLIENTS: usize = 4;
const CHUNKS: usize = 8;
/// The period of the memory's misalignment: twice the largest chunk alignment tried.
const PAD: usize = 8192;
/// The largest size class: a freed block up to this size keeps its first 2 bytes (a free-list
/// link) under `POISON`.
const SMALL: usize = 2048;

#[derive(Clone, Copy, Debug)]
struct Live {
    client: usize,
    /// The size asked for (and written).
    len: usize,
    /// The size `size_of` reports.
    size: usize,
    fill: u8,
}

/// What the arena must answer.
#[derive(Default)]
struct Model {
    live: BTreeMap<usize, Live>,
    /// Per client, the blocks freed through the arena that it may not have taken in yet:
    /// address and size. They count as its live blocks until it does.
    mail: [Vec<(usize, usize)>; CLIENTS],
    /// Addresses of blocks freed not long ago (a second free of them is refused, unless a
    /// live block starts there again).
    dead: Vec<usize>,
    ids: [u32; CLIENTS],
}

impl Model {
    fn nth_live(&self, n: u16) -> Option<(usize, Live)> {
        self.live
            .iter()
            .nth(usize::from(n) % self.live.len().max(1))
            .map(|(&addr, &block)| (addr, block))
    }

    fn bury(&mut self, addr: usize) {
        if self.dead.len() >= 16 {
            self.dead.remove(0);
        }
        self.dead.push(addr);
    }
}

/// Every client's statistics and the arena's, to tell that a refused call changed nothing.
fn snapshot(arena: &Arena, clients: &[Option<Client<'_>>]) -> (Vec<ClientStats>, ArenaStats) {
    (
        clients.iter().flatten().map(Client::stats).collect(),
        arena.stats(),
    )
}

/// Checks a block just handed out to client `c` (`len` bytes asked, aligned to `align`; `new`:
/// a new block, not one moved by a grow or shrink) and records it, filled with `fill`.
#[allow(clippy::too_many_arguments)]
fn record_alloc(
    arena: &Arena,
    client: &Client<'_>,
    model: &mut Model,
    c: usize,
    ptr: NonNull<u8>,
    size: usize,
    len: usize,
    align: usize,
    new: bool,
    fill: u8,
) {
    let addr = ptr.as_ptr() as usize;
    assert_eq!(addr % align, 0, "alignment");
    assert!(size >= len, "a block smaller than asked");
    assert_eq!(
        client.size_of(ptr.as_ptr()),
        Ok(size),
        "size_of of a new block"
    );
    assert!(
        arena.contains(ptr.as_ptr()) && arena.contains((addr + size - 1) as *const u8),
        "a block outside the arena"
    );
    if new && arena.accepted_flags().contains(Flags::ZERO) {
        // SAFETY: a fresh block of `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(ptr.as_ptr(), size) };
        assert!(all_bytes(bytes, 0), "a ZERO block did not read zero");
    }
    if let Some((&below, prev)) = model.live.range(..=addr).next_back() {
        assert!(below + prev.size <= addr, "overlaps the block below");
    }
    if let Some((&above, _)) = model.live.range(addr..).next() {
        assert!(addr + size <= above, "overlaps the block above");
    }
    // SAFETY: a fresh block of at least `len` bytes.
    unsafe { ptr.as_ptr().write_bytes(fill, len) };
    model.live.insert(
        addr,
        Live {
            client: c,
            len,
            size,
            fill,
        },
    );
}

/// Checks that a block of `size` bytes at `addr`, just freed by its client, reads
/// `POISON_BYTE` past the bytes a small block keeps (arenas that do not decommit only: a chunk
/// given back may be gone otherwise).
fn check_poison(arena: &Arena, addr: usize, size: usize) {
    let flags = arena.accepted_flags();
    if !flags.contains(Flags::POISON) || flags.contains(Flags::DECOMMIT) {
        return;
    }
    let keep = if size <= SMALL { 2 } else { 0 };
    // SAFETY: the block lies in the arena's memory, committed while the arena lives (nothing
    // is decommitted without `DECOMMIT`), and no block overlaps it now.
    let bytes = unsafe { std::slice::from_raw_parts((addr + keep) as *const u8, size - keep) };
    assert!(
        all_bytes(bytes, POISON_BYTE),
        "a freed block was not poisoned"
    );
}

/// The checks made after every step.
fn check_all(arena: &Arena, clients: &[Option<Client<'_>>], model: &mut Model) {
    for (&addr, block) in &model.live {
        let ptr = addr as *const u8;
        for (index, client) in clients.iter().enumerate() {
            if let Some(client) = client {
                assert_eq!(client.owns(ptr), index == block.client, "owns");
            }
        }
        assert_eq!(
            arena.owner_of(ptr),
            Some(model.ids[block.client]),
            "owner_of a live block"
        );
        let owner = clients[block.client]
            .as_ref()
            .expect("a live block's client lives");
        assert_eq!(owner.size_of(ptr), Ok(block.size), "size_of a live block");
        // Both ends and the middle every step (a neighbour's overrun shows there).
        for offset in [0, block.len / 2, block.len - 1] {
            // SAFETY: inside a live block of `len` bytes, written at allocation.
            assert_eq!(
                unsafe { ptr.add(offset).read() },
                block.fill,
                "a live block changed"
            );
        }
    }
    let mut held = 0;
    let (mut used, mut live, mut cached, mut pinned) = (0, 0, 0, 0);
    for (c, client) in clients.iter().enumerate() {
        let Some(client) = client else { continue };
        for &(addr, _) in &model.mail[c] {
            if !model.live.contains_key(&addr) {
                assert_eq!(
                    arena.owner_of(addr as *const u8),
                    None,
                    "owner_of a freed block"
                );
                assert!(
                    clients.iter().flatten().all(|k| !k.owns(addr as *const u8)),
                    "a block freed through the arena is still owned"
                );
            }
        }
        let stats = client.stats();
        let blocks = model.live.values().filter(|b| b.client == c);
        let (bytes, count) = blocks.fold((0, 0), |(s, n), b| (s + b.size, n + 1));
        let mail: usize = model.mail[c].iter().map(|&(_, size)| size).sum();
        if stats.used_bytes == bytes && stats.live_blocks == count {
            // Taken in (or none).
            model.mail[c].clear();
        } else {
            assert_eq!(
                (stats.used_bytes, stats.live_blocks),
                (bytes + mail, count + model.mail[c].len()),
                "client statistics against the model (blocks freed through the arena waiting)"
            );
        }
        if let Some(limit) = client.quota().limit() {
            assert!(stats.used_bytes <= limit, "over the quota");
        }
        assert_eq!(stats.total_bytes, stats.chunks * arena.chunk_size());
        assert_eq!(stats.free_bytes, stats.total_bytes - stats.used_bytes);
        assert!(
            stats.pinned_chunks <= 1,
            "more than one chunk without a live block"
        );
        assert!(stats.cached_chunks <= stats.pinned_chunks);
        held += stats.chunks;
        used += stats.used_bytes;
        live += stats.live_blocks;
        cached += stats.cached_bytes;
        pinned += stats.pinned_chunks;
    }
    let stats = arena.stats();
    assert_eq!(
        stats.held_chunks, held,
        "held chunks are the clients' chunks"
    );
    assert_eq!(stats.held_chunks + stats.free_chunks, CHUNKS);
    assert_eq!(stats.free_bytes, stats.free_chunks * arena.chunk_size());
    assert_eq!(stats.clients, clients.iter().flatten().count());
    if arena.accepted_flags().contains(Flags::STATISTICS) {
        assert_eq!(stats.used_bytes, Some(used), "arena used bytes");
        assert_eq!(stats.live_blocks, Some(live), "arena live blocks");
        assert_eq!(stats.cached_bytes, Some(cached), "arena cached bytes");
        assert_eq!(stats.pinned_chunks, Some(pinned), "arena pinned chunks");
    } else {
        assert_eq!(stats.used_bytes, None);
        assert_eq!(stats.live_blocks, None);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let chunk = 1usize << (16 + input.u8() % 3);
    // The chunk alignment, the largest a block may ask for; the memory starts exactly that
    // aligned (not more), so a block aligned past it could only be so by mistake.
    let max_align = [16usize, 32, 64, 4096][usize::from(input.u8() % 4)];
    let setup = input.u8();
    let flags = Flags::from_bits_truncate(u32::from(setup));
    let reserved = setup & 0x80 != 0;
    // Eight chunks: room for every client's chunk, runs of several chunks for the large
    // blocks, and running out, without the setup of a larger arena on every input.
    let len = CHUNKS * chunk;
    let config = Config::new()
        .with_chunk_size(chunk)
        .with_alignment(max_align)
        .with_flags(flags);
    let mut memory = if reserved {
        Vec::new()
    } else {
        vec![0u8; len + 2 * PAD]
    };
    let arena = if reserved {
        Arena::with_reservation(len, config)
    } else {
        let skip = (max_align + PAD - memory.as_ptr() as usize % PAD) % PAD;
        let start = NonNull::new(memory[skip..].as_mut_ptr()).expect("a vector is not null");
        // SAFETY: `start..start + len` lies in `memory`, which outlives the arena (declared
        // before it) and is not touched while the arena lives.
        Arena::new(unsafe { Backing::from_raw(start, len) }, config)
    };
    let Ok(arena) = arena else {
        return;
    };
    // Only a reservation takes `DECOMMIT` and `GUARD` (a chunk of at least 16 pages here).
    let needs_reservation = Flags::DECOMMIT | Flags::GUARD;
    let expected = if reserved {
        flags
    } else {
        Flags::from_bits_truncate(flags.bits() & !needs_reservation.bits())
    };
    assert_eq!(arena.accepted_flags(), expected, "accepted flags");
    let guard = expected.contains(Flags::GUARD);
    assert_eq!(arena.chunk_count(), CHUNKS);
    assert_eq!(arena.max_alignment(), max_align);
    let max_block = if guard { chunk / 2 } else { len };
    assert_eq!(arena.max_block_size(), max_block);
    let base = arena.backing().as_ptr() as usize;

    // A block of another arena, made when first asked for.
    let other = OnceCell::new();
    let mut other_client = None;
    let mut other_block = None;

    let mut model = Model::default();
    let mut clients: Vec<Option<Client<'_>>> = (0..CLIENTS)
        .map(|_| {
            let quota = match input.u8() % 4 {
                0 => Quota::bytes(usize::from(input.u16()) * 16),
                _ => Quota::UNLIMITED,
            };
            arena.create_client(quota).ok()
        })
        .collect();
    for (c, client) in clients.iter().enumerate() {
        model.ids[c] = client.as_ref().map_or(0, Client::id);
    }
    loop {
        // After every step, those that stop early included (each may have taken in blocks
        // freed through the arena, which only the statistics tell).
        check_all(&arena, &clients, &mut model);
        if input.is_empty() {
            break;
        }
        let c = usize::from(input.u8()) % CLIENTS;
        match input.u8() % 10 {
            0 | 1 => {
                let Some(client) = &clients[c] else { continue };
                let size = match input.u8() % 4 {
                    0 => 1 + input.below(SMALL as u64) as usize,
                    1 => 1 + input.below(chunk as u64) as usize,
                    // Runs of whole chunks, up to past the arena.
                    2 => chunk + input.below(len as u64) as usize,
                    _ => 1 + (input.size() % (2 * chunk as u64)) as usize,
                };
                let align = 1usize << (input.u8() % 13);
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                let before = snapshot(&arena, &clients);
                let result = client.alloc_sized(layout);
                if align > max_align {
                    assert_eq!(
                        result,
                        Err(Error::UnsupportedAlignment {
                            align,
                            max: max_align
                        }),
                        "an alignment past the arena's is refused"
                    );
                } else if size > max_block {
                    assert_eq!(
                        result,
                        Err(Error::TooLarge {
                            size,
                            max: max_block
                        }),
                        "a size past the largest block is refused"
                    );
                }
                match result {
                    Ok((ptr, got)) => {
                        let fill = input.u8();
                        record_alloc(
                            &arena, client, &mut model, c, ptr, got, size, align, true, fill,
                        );
                    }
                    Err(Error::UnsupportedAlignment { .. } | Error::TooLarge { .. }) => {
                        // Refused for its shape: nothing taken in, nothing changed.
                        assert!(
                            snapshot(&arena, &clients) == before,
                            "a refused allocation changed something"
                        );
                    }
                    Err(Error::QuotaExceeded { .. } | Error::OutOfMemory { .. }) => {}
                    Err(e) => panic!("unexpected allocation error {e:?}"),
                }
            }
            2 => {
                // Free a live block through its own client, or a wrong client.
                let Some((addr, block)) = model.nth_live(input.u16()) else {
                    continue;
                };
                let Some(client) = &clients[c] else { continue };
                let ptr = NonNull::new(addr as *mut u8).expect("live blocks are non-null");
                // SAFETY: a live block of `len` bytes, written at allocation.
                let bytes = unsafe { std::slice::from_raw_parts(ptr.as_ptr(), block.len) };
                assert!(all_bytes(bytes, block.fill), "a live block changed");
                let before = snapshot(&arena, &clients);
                // SAFETY: `addr` is a live block of this arena; a wrong client refuses it.
                let result = unsafe { client.free(ptr) };
                if block.client == c {
                    assert_eq!(result, Ok(block.size), "a client frees its own live block");
                    model.live.remove(&addr);
                    model.bury(addr);
                    // A free takes in what was freed through the arena.
                    model.mail[c].clear();
                    check_poison(&arena, addr, block.size);
                } else {
                    assert!(
                        matches!(result, Err(Error::NotOwned { addr: a, .. }) if a == addr),
                        "a client freed another client's block: {result:?}"
                    );
                    assert!(
                        snapshot(&arena, &clients) == before,
                        "a refused free changed something"
                    );
                }
            }
            3 => {
                // Free a live block through the arena.
                let Some((addr, block)) = model.nth_live(input.u16()) else {
                    continue;
                };
                let ptr = NonNull::new(addr as *mut u8).expect("live blocks are non-null");
                // SAFETY: a live block of this arena, not used afterwards; its client lives.
                let result = unsafe { arena.free(ptr) };
                assert_eq!(result, Ok(block.size), "the arena frees a live block");
                model.live.remove(&addr);
                model.bury(addr);
                model.mail[block.client].push((addr, block.size));
            }
            4 => {
                // A pointer that is no live block's start: refused by every client and by the
                // arena, changing nothing.
                let how = input.u8();
                let picked = model.nth_live(input.u16());
                let bad = match (how % 9, picked) {
                    // Interior.
                    (0, Some((addr, block))) if block.size > 1 => {
                        addr + 1 + usize::from(input.u16()) % (block.size - 1)
                    }
                    // One past the end, one before, one granule before.
                    (1, Some((addr, block))) => addr + block.size,
                    (2, Some((addr, _))) => addr - 1,
                    (3, Some((addr, _))) => addr.wrapping_sub(16),
                    // A block freed before, through the arena or by its client.
                    (4, _) => match model.mail.iter().flatten().next() {
                        Some(&(addr, _)) => addr,
                        None => continue,
                    },
                    (5, _) => match model.dead.last() {
                        Some(&addr) => addr,
                        None => continue,
                    },
                    // A live block of another arena.
                    (6, _) => {
                        if other_block.is_none() {
                            let arena = other.get_or_init(|| {
                                let backing =
                                    Backing::heap(1 << 16, 4096).expect("a small heap backing");
                                Arena::new(backing, Config::new().with_chunk_size(1 << 16))
                                    .expect("a small arena")
                            });
                            let client = other_client.insert(
                                arena
                                    .create_client(Quota::UNLIMITED)
                                    .expect("a client of another arena"),
                            );
                            let block = client
                                .alloc(Layout::from_size_align(64, 16).expect("a layout"))
                                .expect("a block of another arena");
                            other_block = Some(block.as_ptr() as usize);
                        }
                        other_block.expect("just made")
                    }
                    // Anywhere in the arena or around it.
                    (7, _) => base + usize::from(input.u16()) * 16 % (len + 32) - 16,
                    _ => [8, base + len, usize::MAX & !15][usize::from(how >> 4) % 3],
                };
                if model.live.contains_key(&bad) {
                    continue;
                }
                let ptr = NonNull::new(bad as *mut u8).expect("non-null");
                assert_eq!(arena.owner_of(ptr.as_ptr()), None, "owner_of a non-block");
                for client in clients.iter().flatten() {
                    assert!(!client.owns(ptr.as_ptr()), "owns a non-block");
                    assert!(client.size_of(ptr.as_ptr()).is_err(), "size_of a non-block");
                }
                let inside = arena.contains(ptr.as_ptr());
                let before = snapshot(&arena, &clients);
                let result = if how & 0x80 != 0 {
                    // SAFETY: the free is refused (not a live block), nothing changes.
                    unsafe { arena.free(ptr) }
                } else {
                    let Some(client) = &clients[c] else { continue };
                    // SAFETY: as above.
                    unsafe { client.free(ptr) }
                };
                match result {
                    Err(Error::Foreign { addr }) => {
                        assert!(!inside && addr == bad, "Foreign for {bad:#x}")
                    }
                    Err(Error::NotOwned { addr, .. } | Error::NotABlock { addr }) => {
                        assert!(inside && addr == bad, "not Foreign for {bad:#x}")
                    }
                    other => panic!("a bad free of {bad:#x} gave {other:?}"),
                }
                assert!(
                    snapshot(&arena, &clients) == before,
                    "a refused free changed something"
                );
            }
            5 | 6 => {
                // Grow, grow zeroed or shrink a live block (through its own client or a wrong
                // one), an interior or foreign address, or with sizes that break the contract.
                let Some(client) = &clients[c] else { continue };
                let how = input.u8();
                let picked = model
                    .nth_live(input.u16())
                    .map(|(addr, block)| (addr, block.len, block.client, block.fill));
                let (addr, len, owner, fill) = match (picked, how % 4) {
                    (Some(picked), 0..=2) => picked,
                    // An interior pointer of a live block, or an address outside the arena.
                    (Some((addr, len, ..)), _) if len > 1 => (
                        addr + 1 + usize::from(input.u8()) % (len - 1),
                        len,
                        CLIENTS,
                        0,
                    ),
                    _ => (8, 16, CLIENTS, 0),
                };
                if owner == CLIENTS && model.live.contains_key(&addr) {
                    continue;
                }
                // The caller's old size: the block's, or (for a few) past its real size.
                let real = client.size_of(addr as *const u8).unwrap_or(0);
                let old_len = if how & 0x10 != 0 { real + 16 } else { len };
                let new_len = match how >> 5 {
                    0 => chunk + input.below(2 * chunk as u64) as usize,
                    _ => 1 + (input.size() % (2 * chunk as u64)) as usize,
                };
                let (Ok(old), Ok(new)) = (
                    Layout::from_size_align(old_len, 1),
                    Layout::from_size_align(new_len, 1),
                ) else {
                    continue;
                };
                let kind = (how >> 2) % 3;
                let growing = kind < 2;
                // A sound call: this client's live block, an old size within it, and a new size
                // on the right side of the old one.
                let sound = owner == c
                    && old_len <= real
                    && if growing {
                        new_len >= old_len
                    } else {
                        new_len <= old_len
                    };
                let before = snapshot(&arena, &clients);
                let ptr = NonNull::new(addr as *mut u8).expect("non-null");
                // SAFETY: a sound call passes this client's live block of at least `old_len`
                // bytes, not used afterwards; any other is refused before anything is read,
                // written, allocated or freed, which is what is checked.
                let result = unsafe {
                    match kind {
                        0 => client.grow(ptr, old, new),
                        1 => client.grow_zeroed(ptr, old, new),
                        _ => client.shrink(ptr, old, new),
                    }
                };
                if !sound {
                    assert!(result.is_err(), "a bad grow or shrink was accepted");
                    assert!(
                        snapshot(&arena, &clients) == before,
                        "a refused grow or shrink changed something"
                    );
                    continue;
                }
                let Ok(moved) = result else {
                    // Out of memory or quota: the block stays as it was (checked below).
                    assert!(client.owns(ptr.as_ptr()), "a failed move freed the block");
                    continue;
                };
                let to = moved.cast::<u8>();
                let size = client.size_of(to.as_ptr()).expect("a moved block is live");
                assert!(size >= new_len && moved.len() <= size, "a short block");
                let kept = len.min(new_len);
                // SAFETY: the block returned holds at least `new_len >= kept` bytes.
                let bytes = unsafe { std::slice::from_raw_parts(to.as_ptr(), kept) };
                assert!(all_bytes(bytes, fill), "a move lost bytes");
                let zero = arena.accepted_flags().contains(Flags::ZERO);
                // Past the old size, zero: with `ZERO` up to the block's end, for
                // `grow_zeroed` up to the new size.
                let zeroed_to = if zero {
                    size
                } else if kind == 1 {
                    new_len
                } else {
                    0
                };
                if zeroed_to > kept {
                    // SAFETY: inside the returned block of `size` bytes.
                    let zeroed = unsafe {
                        std::slice::from_raw_parts(to.as_ptr().add(kept), zeroed_to - kept)
                    };
                    assert!(all_bytes(zeroed, 0), "bytes past the old size are not zero");
                }
                if to != ptr {
                    assert!(!client.owns(ptr.as_ptr()), "the old block was not freed");
                }
                model.live.remove(&addr);
                if to != ptr {
                    model.bury(addr);
                }
                let fill = input.u8();
                record_alloc(
                    &arena, client, &mut model, c, to, size, new_len, 1, false, fill,
                );
            }
            7 => {
                if input.u8().is_multiple_of(4) {
                    arena.trim();
                    continue;
                }
                let Some(client) = &clients[c] else { continue };
                client.trim();
                // Taken in, and freed like any block.
                for (addr, size) in std::mem::take(&mut model.mail[c]) {
                    if !model.live.contains_key(&addr) {
                        check_poison(&arena, addr, size);
                    }
                }
                let stats = client.stats();
                assert_eq!(
                    stats.cached_bytes, 0,
                    "a trimmed client keeps cached blocks"
                );
                assert_eq!(
                    stats.pinned_chunks, 0,
                    "a trimmed client keeps a chunk without a live block"
                );
            }
            8 if input.u8().is_multiple_of(4) => {
                let Some(client) = clients[c].take() else {
                    continue;
                };
                let chunks = client.stats().chunks;
                let held = arena.stats().held_chunks;
                arena.delete_client(client);
                assert_eq!(
                    arena.stats().held_chunks,
                    held - chunks,
                    "a deleted client's chunks did not all go back"
                );
                let gone: Vec<usize> = model
                    .live
                    .iter()
                    .filter(|(_, b)| b.client == c)
                    .map(|(&a, _)| a)
                    .collect();
                for addr in gone {
                    model.live.remove(&addr);
                    assert_eq!(
                        arena.owner_of(addr as *const u8),
                        None,
                        "a deleted client's block is still owned"
                    );
                    model.bury(addr);
                }
                model.mail[c].clear();
                let Ok(fresh) = arena.create_client(Quota::UNLIMITED) else {
                    continue;
                };
                model.ids[c] = fresh.id();
                // The memory goes out again: the largest free block, to a new client at once.
                let largest = arena.stats().largest_free_block;
                if largest > 0 {
                    let layout = Layout::from_size_align(largest, 16).expect("a layout");
                    let (ptr, size) = fresh
                        .alloc_sized(layout)
                        .expect("a new client gets the largest free block");
                    let fill = input.u8();
                    record_alloc(
                        &arena, &fresh, &mut model, c, ptr, size, largest, 16, true, fill,
                    );
                }
                clients[c] = Some(fresh);
            }
            _ => {}
        }
    }
});
