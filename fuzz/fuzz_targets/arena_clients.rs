//! Several clients of one arena (of a random chunk size and chunk alignment) under random
//! allocations, frees (their own, another client's, interior pointers, repeats), quota hits and
//! deletes. Checked after every step: live blocks never overlap, are aligned as asked (an
//! alignment past the arena's is refused), are owned by exactly their client and keep the bytes
//! written into them (so no block was handed to anyone else while live), every bad free is
//! refused and changes nothing, and a deleted client's blocks are owned by no one; nothing may
//! panic. `Allocator::grow`, `grow_zeroed` and `shrink` move a client's own blocks, keeping
//! their bytes, and refuse, changing nothing, another client's block, an interior or foreign
//! pointer, an old size past the block and a new size on the wrong side of the old one.
#![no_main]

use std::alloc::Layout;
use std::collections::BTreeMap;
use std::ptr::NonNull;

use libfuzzer_sys::fuzz_target;
use memvisor_arena::allocator_api2::alloc::Allocator;
use memvisor_arena::{Arena, Backing, Client, Config, Error, Quota};
use memvisor_fuzz::{Input, all_bytes};

const CLIENTS: usize = 4;
const CHUNKS: usize = 8;
/// The period of the memory's misalignment: twice the largest chunk alignment tried.
const PAD: usize = 8192;

struct Live {
    client: usize,
    len: usize,
    fill: u8,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let chunk = 1usize << (16 + input.u8() % 3);
    // The chunk alignment, the largest a block may ask for; the memory starts exactly that
    // aligned (not more), so a block aligned past it could only be so by mistake.
    let max_align = [16usize, 32, 64, 4096][usize::from(input.u8() % 4)];
    // Eight chunks: room for every client's chunk, runs of several chunks for the large
    // blocks, and running out, without the setup of a larger arena on every input.
    let len = CHUNKS * chunk;
    let mut memory = vec![0u8; len + 2 * PAD];
    let skip = (max_align + PAD - memory.as_ptr() as usize % PAD) % PAD;
    let start = NonNull::new(memory[skip..].as_mut_ptr()).expect("a vector is not null");
    // SAFETY: `start..start + len` lies in `memory`, which outlives the arena (declared
    // before it) and is not touched while the arena lives.
    let block = unsafe { Backing::from_raw(start, len) };
    let config = Config::new()
        .with_chunk_size(chunk)
        .with_alignment(max_align);
    let Ok(arena) = Arena::new(block, config) else {
        return;
    };
    assert_eq!(arena.max_alignment(), max_align);
    let mut clients: Vec<Option<Client<'_>>> = (0..CLIENTS)
        .map(|_| {
            let quota = match input.u8() % 4 {
                0 => Quota::bytes(usize::from(input.u16()) * 16),
                _ => Quota::UNLIMITED,
            };
            arena.create_client(quota).ok()
        })
        .collect();
    let mut live: BTreeMap<usize, Live> = BTreeMap::new();
    while !input.is_empty() {
        let c = usize::from(input.u8()) % CLIENTS;
        match input.u8() % 6 {
            0 | 1 => {
                let Some(client) = &clients[c] else { continue };
                let size = 1 + (input.size() % (2 * chunk as u64)) as usize;
                let align = 1usize << (input.u8() % 13);
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                let result = client.alloc(layout);
                if align > max_align {
                    assert_eq!(
                        result,
                        Err(Error::UnsupportedAlignment {
                            align,
                            max: max_align
                        }),
                        "an alignment past the arena's is refused"
                    );
                }
                if let Ok(ptr) = result {
                    let addr = ptr.as_ptr() as usize;
                    assert_eq!(addr % align, 0, "alignment");
                    let fill = input.u8();
                    // SAFETY: a fresh block of at least `size` bytes.
                    unsafe { ptr.as_ptr().write_bytes(fill, size) };
                    if let Some((&before, prev)) = live.range(..=addr).next_back() {
                        assert!(before + prev.len <= addr, "overlaps the block below");
                    }
                    if let Some((&after, _)) = live.range(addr..).next() {
                        assert!(addr + size <= after, "overlaps the block above");
                    }
                    live.insert(
                        addr,
                        Live {
                            client: c,
                            len: size,
                            fill,
                        },
                    );
                }
            }
            2 => {
                // Free a live block through its own client, or a wrong client.
                let Some(&addr) = live
                    .keys()
                    .nth(usize::from(input.u16()) % live.len().max(1))
                else {
                    continue;
                };
                let owner = live[&addr].client;
                let Some(client) = &clients[c] else { continue };
                let ptr = NonNull::new(addr as *mut u8).expect("live blocks are non-null");
                let block = &live[&addr];
                // SAFETY: a live block of `len` bytes, written at allocation.
                let bytes = unsafe { std::slice::from_raw_parts(ptr.as_ptr(), block.len) };
                assert!(all_bytes(bytes, block.fill), "a live block changed");
                // SAFETY: `addr` is a live block of this arena; a wrong client refuses it.
                let result = unsafe { client.free(ptr) };
                if owner == c {
                    result.expect("a client frees its own live block");
                    live.remove(&addr);
                } else {
                    assert!(result.is_err(), "a client freed another client's block");
                }
            }
            3 => {
                // An interior pointer of a live block, or an address outside the arena.
                let Some(client) = &clients[c] else { continue };
                let bad = match live
                    .iter()
                    .nth(usize::from(input.u16()) % live.len().max(1))
                {
                    Some((&addr, block)) if block.len > 1 => {
                        addr + 1 + usize::from(input.u8()) % (block.len - 1)
                    }
                    _ => 8,
                };
                if live.contains_key(&bad) {
                    continue;
                }
                let ptr = NonNull::new(bad as *mut u8).expect("non-null");
                // SAFETY: the free is refused (an interior or foreign address), nothing changes.
                assert!(
                    unsafe { client.free(ptr) }.is_err(),
                    "a bad free was accepted"
                );
            }
            5 => {
                // Grow, grow zeroed or shrink a live block (through its own client or a wrong
                // one), an interior or foreign address, or with sizes that break the contract.
                let Some(client) = &clients[c] else { continue };
                let how = input.u8();
                let picked = live
                    .iter()
                    .nth(usize::from(input.u16()) % live.len().max(1))
                    .map(|(&addr, block)| (addr, block.len, block.client, block.fill));
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
                if owner == CLIENTS && live.contains_key(&addr) {
                    continue;
                }
                // The caller's old size: the block's, or (for a few) past its real size.
                let real = client.size_of(addr as *const u8).unwrap_or(0);
                let old_len = if how & 0x10 != 0 { real + 16 } else { len };
                let new_len = 1 + (input.size() % (2 * chunk as u64)) as usize;
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
                let before: Vec<_> = clients.iter().flatten().map(Client::stats).collect();
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
                    let after: Vec<_> = clients.iter().flatten().map(Client::stats).collect();
                    assert!(
                        after == before,
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
                let kept = len.min(new_len);
                // SAFETY: the block returned holds at least `new_len >= kept` bytes.
                let bytes = unsafe { std::slice::from_raw_parts(to.as_ptr(), kept) };
                assert!(all_bytes(bytes, fill), "a move lost bytes");
                if kind == 1 {
                    // SAFETY: as above; `len..new_len` was zeroed.
                    let zeroed =
                        unsafe { std::slice::from_raw_parts(to.as_ptr().add(len), new_len - len) };
                    assert!(all_bytes(zeroed, 0), "grow_zeroed left bytes");
                }
                if to != ptr {
                    assert!(!client.owns(ptr.as_ptr()), "the old block was not freed");
                }
                let to = to.as_ptr() as usize;
                live.remove(&addr);
                // SAFETY: the new block holds at least `new_len` bytes.
                unsafe { (to as *mut u8).write_bytes(fill, new_len) };
                if let Some((&below, prev)) = live.range(..=to).next_back() {
                    assert!(below + prev.len <= to, "overlaps the block below");
                }
                if let Some((&above, _)) = live.range(to..).next() {
                    assert!(to + new_len <= above, "overlaps the block above");
                }
                live.insert(
                    to,
                    Live {
                        client: c,
                        len: new_len,
                        fill,
                    },
                );
            }
            4 if input.u8().is_multiple_of(8) => {
                if let Some(client) = clients[c].take() {
                    arena.delete_client(client);
                    live.retain(|_, block| block.client != c);
                    clients[c] = arena.create_client(Quota::UNLIMITED).ok();
                }
            }
            _ => {}
        }
        for (&addr, block) in &live {
            let ptr = addr as *const u8;
            for (index, client) in clients.iter().enumerate() {
                if let Some(client) = client {
                    assert_eq!(client.owns(ptr), index == block.client, "owns");
                }
            }
            // Both ends every step (a neighbour's overrun shows there); the whole block when
            // it is freed.
            let ends = [0, block.len / 2, block.len - 1];
            for offset in ends {
                // SAFETY: inside a live block of `len` bytes, written at allocation.
                assert_eq!(
                    unsafe { ptr.add(offset).read() },
                    block.fill,
                    "a live block changed"
                );
            }
        }
    }
});
