//! The C library through its Rust `extern "C"` entry points: contexts (over a caller's block or
//! a reservation, with random configurations and flags) and their clients under random
//! allocations, frees (by the client, by the context, valid, foreign, interior, one past a
//! block, stale, null),
//! ownership, size and owner queries, statistics and trims, with null outputs and stale or
//! forged handles. Compared with a model of each client's live blocks: every call returns the
//! status the model allows (never `INTERNAL`), live blocks never overlap and keep the bytes
//! written into them, `owns`/`size_of`/`owner` agree with the model, a failed call writes no
//! output, a refused free changes no statistic of the client or the context, after a trim the
//! client's statistics count exactly its live blocks, and a second
//! context over memory sharing a byte with a live one's is refused (`BLOCK_IN_USE`).
#![no_main]

use std::alloc::{Layout, alloc, dealloc};
use std::ffi::c_void;
use std::ptr;

use libfuzzer_sys::fuzz_target;
use memvisor::status::Status;
use memvisor::types::{
    Client, ClientStats, Config, Context, ContextStats, MEMVISOR_FLAG_DECOMMIT as FLAG_DECOMMIT,
    MEMVISOR_FLAG_GUARD as FLAG_GUARD, MEMVISOR_FLAG_POISON as FLAG_POISON,
    MEMVISOR_FLAG_STATISTICS as FLAG_STATISTICS, MEMVISOR_FLAG_ZERO as FLAG_ZERO,
    MEMVISOR_UNLIMITED,
};
use memvisor::*;
use memvisor_fuzz::{Input, all_bytes};

/// At most this many clients live at once, and this many calls per input.
const MAX_CLIENTS: usize = 6;
const MAX_CALLS: usize = 400;

struct Block {
    addr: usize,
    size: usize,
    client: usize,
    fill: u8,
}

struct Model {
    ctx: Context,
    /// Where the context's memory starts and how long it is (a bound: blocks lie inside).
    base: usize,
    len: usize,
    flags: u32,
    max_block: usize,
    max_align: usize,
    clients: Vec<Option<Client>>,
    /// Handles deleted during this input (stale: always refused).
    stale: Vec<Client>,
    blocks: Vec<Block>,
    /// Addresses freed during this input that are not live blocks now.
    freed: Vec<usize>,
}

impl Model {
    fn live_handle(&self, cl: Client) -> bool {
        self.clients.iter().flatten().any(|&c| c == cl)
    }

    fn block_at(&self, addr: usize) -> Option<&Block> {
        self.blocks.iter().find(|b| b.addr == addr)
    }

    fn check_block(&self, b: &Block) {
        // SAFETY: a live block of `size` bytes, filled with `fill` when it was allocated.
        let bytes = unsafe { std::slice::from_raw_parts(b.addr as *const u8, b.size) };
        assert!(all_bytes(bytes, b.fill), "a live block changed");
    }

    /// A handle to call with: live, stale, null or forged.
    fn pick_handle(&self, input: &mut Input<'_>) -> (Client, Option<usize>) {
        match input.u8() % 8 {
            0 => {
                let cl = self
                    .stale
                    .get(usize::from(input.u8()))
                    .copied()
                    .unwrap_or_default();
                (cl, None)
            }
            1 => (Client::default(), None),
            2 => {
                let cl = Client { id: input.u64() };
                let index = self.clients.iter().position(|c| *c == Some(cl));
                (cl, index)
            }
            _ => {
                let live: Vec<usize> = (0..self.clients.len())
                    .filter(|&i| self.clients[i].is_some())
                    .collect();
                if live.is_empty() {
                    return (Client::default(), None);
                }
                let i = live[usize::from(input.u8()) % live.len()];
                (self.clients[i].expect("live"), Some(i))
            }
        }
    }
}

fn client_stats(cl: Client) -> (Status, ClientStats) {
    let mut cs = ClientStats {
        size: size_of::<ClientStats>(),
        ..ClientStats::default()
    };
    // SAFETY: writable, size set.
    let st = unsafe { memvisor_client_get_stats(cl, &mut cs) };
    (st, cs)
}

fn context_stats(ctx: Context) -> (Status, ContextStats) {
    let mut s = ContextStats {
        size: size_of::<ContextStats>(),
        ..ContextStats::default()
    };
    // SAFETY: writable, size set.
    let st = unsafe { memvisor_context_get_stats(ctx, &mut s) };
    (st, s)
}

/// The memory behind a context: a heap block of ours, or a reservation the library owns.
enum Memory {
    Heap(*mut u8, Layout),
    Reserved,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    assert!(
        !memvisor_status_message(17).is_null(),
        "every status has a message"
    );

    // A configuration: mostly valid, sometimes anything (then refused with a config status).
    let mut config = Config {
        size: 0,
        chunk_size: 0,
        min_block: 0,
        alignment: 0,
        flags: 0,
    };
    // SAFETY: writable.
    assert_eq!(unsafe { memvisor_config_init(&mut config) }, Status::Ok);
    let reserved = input.u8().is_multiple_of(3);
    let chunk = 1usize << (16 + input.u8() % 3);
    config.chunk_size = chunk;
    config.flags = u32::from(input.u8()) & (FLAG_ZERO | FLAG_POISON | FLAG_STATISTICS);
    if reserved {
        config.flags |= u32::from(input.u8()) & (FLAG_DECOMMIT | FLAG_GUARD);
    }
    let chunks = 2 + usize::from(input.u8() % 14);
    let len = chunks * chunk + usize::from(input.u8() % 2) * 4096;
    if input.u8().is_multiple_of(16) {
        // A broken configuration: refused with a status, nothing made.
        match input.u8() % 5 {
            // A size that ends inside a field (sizes of whole-field prefixes are served).
            0 => {
                let size = usize::from(input.u8()) % size_of::<Config>();
                config.size = if size.is_multiple_of(8) {
                    size + 1
                } else {
                    size
                };
            }
            1 => config.chunk_size = input.size() as usize,
            2 => config.min_block = input.size() as usize,
            3 => config.alignment = input.size() as usize,
            _ => config.flags = input.u32(),
        }
    }
    let mut ctx = Context::default();
    let (memory, status) = if reserved {
        // SAFETY: `config` is a configuration with its size set; `out` writable.
        let st = unsafe { memvisor_context_create_reserved(len, &config, &mut ctx) };
        (Memory::Reserved, st)
    } else {
        let layout = Layout::from_size_align(len, 4096).expect("a small layout");
        // SAFETY: non-zero size.
        let p = unsafe { alloc(layout) };
        if p.is_null() {
            return;
        }
        // SAFETY: `p` is ours for `len` bytes until the context is deleted below.
        let st = unsafe { memvisor_context_create(p.cast(), len, &config, &mut ctx) };
        (Memory::Heap(p, layout), st)
    };
    let release = |memory: Memory| {
        if let Memory::Heap(p, layout) = memory {
            // SAFETY: allocated above with this layout; no context uses it any more.
            unsafe { dealloc(p, layout) };
        }
    };
    if status != Status::Ok {
        assert!(
            matches!(
                status,
                Status::InvalidConfig
                    | Status::UnknownFlags
                    | Status::StructSize
                    | Status::BlockTooSmall
                    | Status::Os
                    | Status::LimitReached
            ),
            "context create returned {status:?}"
        );
        assert_eq!(ctx, Context::default(), "a failed create wrote its output");
        release(memory);
        return;
    }
    let (st, stats) = context_stats(ctx);
    assert_eq!(st, Status::Ok);
    let mut accepted = 0;
    // SAFETY: writable.
    assert_eq!(
        unsafe { memvisor_context_accepted_flags(ctx, &mut accepted) },
        Status::Ok
    );
    assert_eq!(
        accepted & !config.flags,
        0,
        "a flag accepted that was not asked for"
    );
    let base = match memory {
        Memory::Heap(p, _) => p as usize,
        Memory::Reserved => 0,
    };
    if let Memory::Heap(p, _) = memory {
        // A second context over memory sharing a byte with the live one: refused, nothing
        // made, the live one unchanged.
        let offset = input.size() as usize % len;
        let other_len = 1 + input.size() as usize % (2 * len);
        let mut other = Context::default();
        // SAFETY: refused before the memory is used (it is the live context's); `config`
        // and `other` are valid locals.
        let st = unsafe {
            memvisor_context_create(
                p.wrapping_add(offset).cast(),
                other_len,
                &config,
                &mut other,
            )
        };
        assert_eq!(
            st,
            Status::BlockInUse,
            "offset {offset:#x} len {other_len:#x}"
        );
        assert_eq!(
            other,
            Context::default(),
            "a refused create wrote its output"
        );
        assert_eq!(context_stats(ctx), (Status::Ok, stats));
    }
    let mut m = Model {
        ctx,
        base,
        len: if reserved { usize::MAX } else { len },
        flags: accepted,
        max_block: stats.max_block_size,
        max_align: stats.max_alignment,
        clients: Vec::new(),
        stale: Vec::new(),
        blocks: Vec::new(),
        freed: Vec::new(),
    };

    for _ in 0..MAX_CALLS {
        if input.is_empty() {
            break;
        }
        step(&mut m, &mut input);
    }

    // Trimmed, every client's statistics count exactly its live blocks.
    for (i, cl) in m.clients.iter().enumerate() {
        let Some(cl) = *cl else { continue };
        // SAFETY: this thread is the only one using the client.
        assert_eq!(unsafe { memvisor_client_trim(cl) }, Status::Ok);
        let (st, cs) = client_stats(cl);
        assert_eq!(st, Status::Ok);
        let mine: Vec<&Block> = m.blocks.iter().filter(|b| b.client == i).collect();
        assert_eq!(cs.live_blocks, mine.len(), "live blocks of client {i}");
        assert_eq!(
            cs.used_bytes,
            mine.iter().map(|b| b.size).sum::<usize>(),
            "used bytes"
        );
    }
    for b in &m.blocks {
        m.check_block(b);
    }
    let (st, s) = context_stats(m.ctx);
    assert_eq!(st, Status::Ok);
    if m.flags & FLAG_STATISTICS != 0 {
        assert_eq!(
            s.live_blocks,
            m.blocks.len(),
            "context live blocks, every client trimmed"
        );
        assert_eq!(
            s.used_bytes,
            m.blocks.iter().map(|b| b.size).sum::<usize>(),
            "context used bytes"
        );
    }
    // A context with clients is busy; once they are gone it deletes, then its handle is stale.
    if m.clients.iter().any(Option::is_some) {
        assert_eq!(memvisor_context_delete(m.ctx), Status::ContextBusy);
    }
    for cl in m.clients.iter().flatten() {
        // SAFETY: the model uses its clients on this thread alone, and no block after its
        // client is deleted.
        assert_eq!(unsafe { memvisor_client_delete(*cl) }, Status::Ok);
    }
    let (st, s) = context_stats(m.ctx);
    assert_eq!(st, Status::Ok);
    assert_eq!(
        (s.held_chunks, s.clients),
        (0, 0),
        "chunks or clients left after deletes"
    );
    assert_eq!(memvisor_context_delete(m.ctx), Status::Ok);
    assert_eq!(memvisor_context_delete(m.ctx), Status::InvalidHandle);
    assert_eq!(memvisor_context_trim(m.ctx), Status::InvalidHandle);
    let mut cl = Client::default();
    // SAFETY: writable.
    assert_eq!(
        unsafe { memvisor_client_create(m.ctx, MEMVISOR_UNLIMITED, &mut cl) },
        Status::InvalidHandle
    );
    release(memory);
});

fn step(m: &mut Model, input: &mut Input<'_>) {
    match input.u8() % 12 {
        0 => {
            // Create a client (sometimes with a null output).
            if m.clients.iter().flatten().count() >= MAX_CLIENTS {
                return;
            }
            let quota = match input.u8() % 3 {
                0 => usize::from(input.u16()) * 16,
                _ => MEMVISOR_UNLIMITED,
            };
            if input.u8().is_multiple_of(16) {
                // SAFETY: a null output is refused.
                let st = unsafe { memvisor_client_create(m.ctx, quota, ptr::null_mut()) };
                assert_eq!(st, Status::NullPointer);
                return;
            }
            let mut cl = Client::default();
            // SAFETY: writable.
            let st = unsafe { memvisor_client_create(m.ctx, quota, &mut cl) };
            match st {
                Status::Ok => {
                    assert!(!m.live_handle(cl), "a live handle handed out twice");
                    assert!(!m.stale.contains(&cl), "a stale handle handed out again");
                    m.clients.push(Some(cl));
                }
                Status::LimitReached => assert_eq!(cl, Client::default()),
                other => panic!("client create returned {other:?}"),
            }
        }
        1 => {
            // Delete a client: a live one deletes, anything else is refused.
            let (cl, index) = m.pick_handle(input);
            // SAFETY: as above; a handle of no live client is refused.
            let st = unsafe { memvisor_client_delete(cl) };
            match index {
                Some(i) => {
                    assert_eq!(st, Status::Ok);
                    m.clients[i] = None;
                    m.blocks.retain(|b| b.client != i);
                    m.stale.push(cl);
                }
                None => assert_eq!(st, Status::InvalidHandle, "deleted {cl:?}"),
            }
        }
        2..=4 => alloc_step(m, input),
        5 | 6 => {
            // Free a live block by its client or by the context.
            if m.blocks.is_empty() {
                return;
            }
            let k = usize::from(input.u16()) % m.blocks.len();
            let b = m.blocks.swap_remove(k);
            m.check_block(&b);
            let mut size = 0;
            let p = b.addr as *mut c_void;
            let by_context = input.u8().is_multiple_of(2);
            let out = if input.u8().is_multiple_of(4) {
                ptr::null_mut()
            } else {
                &raw mut size
            };
            let st = if by_context {
                // SAFETY: a live block of this context, not used again.
                unsafe { memvisor_free(m.ctx, p, out) }
            } else {
                let cl = m.clients[b.client].expect("blocks belong to live clients");
                // SAFETY: a live block of this client, not used again.
                unsafe { memvisor_client_free(cl, p, out) }
            };
            assert_eq!(st, Status::Ok, "freeing a live block");
            if !out.is_null() {
                assert_eq!(size, b.size, "the size a free reports");
            }
            m.freed.push(b.addr);
        }
        7 => bad_free(m, input),
        8 | 9 => query(m, input),
        10 => {
            // Trims, and statistics of a trimmed client.
            assert_eq!(memvisor_context_trim(m.ctx), Status::Ok);
            let (cl, index) = m.pick_handle(input);
            // SAFETY: this thread is the only one using the client (or the handle is stale).
            let st = unsafe { memvisor_client_trim(cl) };
            let (sst, cs) = client_stats(cl);
            match index {
                Some(i) => {
                    assert_eq!((st, sst), (Status::Ok, Status::Ok));
                    let mine: Vec<&Block> = m.blocks.iter().filter(|b| b.client == i).collect();
                    assert_eq!(cs.live_blocks, mine.len(), "live blocks");
                    assert_eq!(cs.used_bytes, mine.iter().map(|b| b.size).sum::<usize>());
                    assert!(cs.used_bytes <= cs.total_bytes);
                    assert!(cs.used_bytes <= cs.quota || cs.quota == MEMVISOR_UNLIMITED);
                }
                None => {
                    assert_eq!((st, sst), (Status::InvalidHandle, Status::InvalidHandle));
                    assert_eq!(cs.live_blocks, 0, "a refused call wrote its output");
                }
            }
            let (st, s) = context_stats(m.ctx);
            assert_eq!(st, Status::Ok);
            assert_eq!(
                s.clients,
                m.clients.iter().flatten().count(),
                "live clients"
            );
            if m.flags & FLAG_STATISTICS != 0 {
                // Frees through the context wait in the holder's mailbox until it drains it
                // (any trim or allocation of that client): counted as live until then.
                assert!(s.live_blocks >= m.blocks.len(), "context live blocks");
            }
            // A structure size that cuts a field is refused.
            let mut short = ClientStats {
                size: 12,
                ..ClientStats::default()
            };
            // SAFETY: writable.
            let st = unsafe { memvisor_client_get_stats(cl, &mut short) };
            assert!(
                matches!(st, Status::StructSize | Status::InvalidHandle),
                "{st:?}"
            );
        }
        _ => {
            // Forged context handles and null outputs.
            let forged = Context { id: input.u64() };
            if forged == m.ctx {
                return;
            }
            assert_eq!(memvisor_context_trim(forged), Status::InvalidHandle);
            assert_eq!(context_stats(forged).0, Status::InvalidHandle);
            // SAFETY: the address is only looked up.
            let st = unsafe { memvisor_free(forged, 16 as *mut c_void, ptr::null_mut()) };
            assert_eq!(st, Status::InvalidHandle);
            // SAFETY: a null output is refused.
            let st = unsafe { memvisor_context_get_stats(m.ctx, ptr::null_mut()) };
            assert_eq!(st, Status::NullPointer);
        }
    }
}

fn alloc_step(m: &mut Model, input: &mut Input<'_>) {
    let (cl, index) = m.pick_handle(input);
    let size = match input.u8() % 4 {
        0 => input.size() as usize,
        1 => usize::from(input.u16()) * 4,
        _ => usize::from(input.u8()),
    };
    let aligned = input.u8().is_multiple_of(3);
    let align = match input.u8() % 8 {
        0 => input.size() as usize,
        _ => 1usize << (input.u8() % 18),
    };
    let null_out = input.u8().is_multiple_of(32);
    let sentinel = 0x5a5a as *mut c_void;
    let mut p = sentinel;
    let out = if null_out {
        ptr::null_mut()
    } else {
        &raw mut p
    };
    let st = if aligned {
        // SAFETY: `out` is null or writable.
        unsafe { memvisor_alloc_aligned(cl, size, align, out) }
    } else {
        // SAFETY: `out` is null or writable.
        unsafe { memvisor_alloc(cl, size, out) }
    };
    let align = if aligned { align } else { 16 };
    if st != Status::Ok {
        assert_eq!(p, sentinel, "a failed alloc wrote its output");
        let allowed = null_out
            || index.is_none() && st == Status::InvalidHandle
            || aligned && !align.is_power_of_two() && st == Status::UnsupportedAlignment
            || align > m.max_align && st == Status::UnsupportedAlignment
            || size > m.max_block && st == Status::TooLarge
            || index.is_some() && matches!(st, Status::QuotaExceeded | Status::OutOfMemory);
        assert!(allowed, "alloc({size}, {align}) on {cl:?} returned {st:?}");
        if null_out {
            assert_eq!(st, Status::NullPointer);
        }
        return;
    }
    let i = index.expect("only a live client allocates");
    assert!(
        align.is_power_of_two() && align <= m.max_align,
        "alignment {align} accepted"
    );
    assert!(size <= m.max_block, "size {size} accepted");
    let addr = p as usize;
    assert_eq!(addr % align.max(16), 0, "alignment");
    let mut actual = 0;
    // SAFETY: writable.
    assert_eq!(unsafe { memvisor_size_of(cl, p, &mut actual) }, Status::Ok);
    assert!(
        actual >= size.max(1),
        "size_of {actual} below the request {size}"
    );
    assert!(
        addr >= m.base && addr - m.base + actual <= m.len,
        "a block outside the context"
    );
    for b in &m.blocks {
        assert!(
            addr + actual <= b.addr || b.addr + b.size <= addr,
            "overlap"
        );
    }
    if m.flags & FLAG_ZERO != 0 {
        // SAFETY: a fresh block of `actual` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), actual) };
        assert!(
            all_bytes(bytes, 0),
            "a zeroed context handed out a dirty block"
        );
    }
    let fill = input.u8();
    // SAFETY: a live block of `actual` bytes, ours.
    unsafe { p.cast::<u8>().write_bytes(fill, actual) };
    m.freed.retain(|&a| a != addr);
    m.blocks.push(Block {
        addr,
        size: actual,
        client: i,
        fill,
    });
}

fn bad_free(m: &mut Model, input: &mut Input<'_>) {
    let (cl, index) = m.pick_handle(input);
    // An address that is not a live block of `cl`: interior, another client's, stale, one
    // past a block, foreign or null.
    let local = 0u64;
    let mut by_context = input.u8().is_multiple_of(2);
    let (addr, expected): (usize, &[Status]) = match input.u8() % 6 {
        0 => {
            let Some(b) = m
                .blocks
                .get(usize::from(input.u16()) % m.blocks.len().max(1))
            else {
                return;
            };
            if b.size < 2 {
                return;
            }
            let addr = b.addr + 1 + usize::from(input.u16()) % (b.size - 1);
            if Some(b.client) == index {
                (addr, &[Status::NotABlock])
            } else {
                (addr, &[Status::NotOwned, Status::NotABlock])
            }
        }
        1 => {
            let Some(b) = m
                .blocks
                .get(usize::from(input.u16()) % m.blocks.len().max(1))
            else {
                return;
            };
            if Some(b.client) == index {
                return;
            }
            // Through the context this would be a valid free: only through a client.
            by_context = false;
            (b.addr, &[Status::NotOwned])
        }
        2 => {
            let Some(&addr) = m.freed.get(usize::from(input.u16()) % m.freed.len().max(1)) else {
                return;
            };
            if m.block_at(addr).is_some() {
                return;
            }
            (addr, &[Status::NotABlock, Status::NotOwned])
        }
        3 => {
            let Some(b) = m
                .blocks
                .get(usize::from(input.u16()) % m.blocks.len().max(1))
            else {
                return;
            };
            // One past the block: another block may start there, which is then not a bad
            // pointer.
            let addr = b.addr + b.size;
            if m.block_at(addr).is_some() {
                return;
            }
            (
                addr,
                &[Status::NotABlock, Status::NotOwned, Status::ForeignPointer],
            )
        }
        4 => (
            &raw const local as usize,
            &[Status::ForeignPointer, Status::NotOwned],
        ),
        _ => (0, &[Status::NullPointer, Status::ForeignPointer]),
    };
    let mut size = 7usize;
    let p = addr as *mut c_void;
    let client_before = client_stats(cl);
    let context_before = context_stats(m.ctx);
    let st = if by_context {
        // SAFETY: refused (not a live block start); the address is only looked up.
        unsafe { memvisor_free(m.ctx, p, &mut size) }
    } else {
        // SAFETY: as above.
        unsafe { memvisor_client_free(cl, p, &mut size) }
    };
    assert_eq!(size, 7, "a refused free wrote its output");
    let allowed = expected.contains(&st)
        // Through the context, ownership is not asked.
        || by_context && matches!(st, Status::NotABlock | Status::ForeignPointer | Status::NullPointer)
        || !by_context && index.is_none() && st == Status::InvalidHandle;
    assert!(
        allowed,
        "bad free of {addr:#x} (context: {by_context}) returned {st:?}"
    );
    assert_ne!(st, Status::Ok, "a bad free was accepted");
    assert_eq!(
        client_stats(cl),
        client_before,
        "a refused free changed the client"
    );
    assert_eq!(
        context_stats(m.ctx),
        context_before,
        "a refused free changed the context"
    );
}

fn query(m: &mut Model, input: &mut Input<'_>) {
    let (cl, index) = m.pick_handle(input);
    let target = match input.u8() % 3 {
        0 => m
            .blocks
            .get(usize::from(input.u16()) % m.blocks.len().max(1))
            .map(|b| b.addr),
        1 => m
            .freed
            .get(usize::from(input.u16()) % m.freed.len().max(1))
            .copied(),
        _ => Some(input.u64() as usize),
    };
    let Some(addr) = target else { return };
    let p = addr as *const c_void;
    if addr == 0 {
        let mut owns = false;
        // SAFETY: a null address is refused.
        let st = unsafe { memvisor_client_owns(cl, p, &mut owns) };
        assert!(
            matches!(st, Status::NullPointer | Status::InvalidHandle),
            "owns(null): {st:?}"
        );
        return;
    }
    let block = m.block_at(addr);
    let mut owns = false;
    // SAFETY: writable; the address is only looked up.
    let st = unsafe { memvisor_client_owns(cl, p, &mut owns) };
    match index {
        Some(i) => {
            assert_eq!(st, Status::Ok);
            assert_eq!(
                owns,
                block.is_some_and(|b| b.client == i),
                "owns({addr:#x})"
            );
        }
        None => assert_eq!((st, owns), (Status::InvalidHandle, false)),
    }
    let mut size = 0;
    // SAFETY: writable; the address is only looked up.
    let st = unsafe { memvisor_size_of(cl, p, &mut size) };
    match (index, block) {
        (Some(i), Some(b)) if b.client == i => assert_eq!((st, size), (Status::Ok, b.size)),
        (None, _) => assert_eq!((st, size), (Status::InvalidHandle, 0)),
        _ => {
            assert_ne!(
                st,
                Status::Ok,
                "size_of({addr:#x}) of a block not the client's"
            );
            assert_eq!(size, 0, "a refused size_of wrote its output");
        }
    }
    let mut who = Client { id: 77 };
    // SAFETY: writable; the address is only looked up.
    let st = unsafe { memvisor_context_owner(m.ctx, p, &mut who) };
    match block {
        Some(b) => assert_eq!(
            (st, Some(who)),
            (Status::Ok, m.clients[b.client]),
            "owner({addr:#x})"
        ),
        None => {
            assert!(
                matches!(
                    st,
                    Status::NotABlock | Status::ForeignPointer | Status::NullPointer
                ),
                "owner({addr:#x}): {st:?}"
            );
            assert_eq!(who, Client { id: 77 }, "a refused owner wrote its output");
        }
    }
    // SAFETY: a null output is refused.
    let st = unsafe { memvisor_size_of(cl, p, ptr::null_mut()) };
    assert!(
        matches!(st, Status::NullPointer | Status::InvalidHandle),
        "{st:?}"
    );
}
