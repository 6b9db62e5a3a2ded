//! Model-based property test of the slabs under every chunk size: random runs of small
//! allocations (sizes whose slabs keep a bitmap of their free blocks and sizes whose slabs keep
//! a free list, mixed), frees in random order, frees through the arena, double, interior and
//! foreign frees, trims and client deletion over several clients, on arenas of 64 KiB to 64 MiB
//! chunks (buddy pages of 256 bytes to 16 KiB, so slabs of 8 and 16 KiB and both forms of slab
//! record for the classes of 128 to 224 bytes). Checked at each step: no block handed out
//! overlaps a live block of any client, a live block keeps every byte written into it, every
//! free of a live block succeeds with its size, and every bad free is refused with its typed
//! error and leaves the client's statistics and the block it named as they were.

#![allow(clippy::cast_possible_truncation)]

mod common;

use std::alloc::Layout;
use std::collections::BTreeMap;
use std::ptr::NonNull;

use common::all_bytes_are;
use memvisor_arena::{Arena, Backing, Client, Config, Error, Quota};
use proptest::prelude::*;

const CHUNKS: usize = 3;
const MAX_CLIENTS: usize = 3;

/// Request sizes: below, at and past the bound of the bitmap form (at most 64 blocks a slab:
/// 128 bytes and up with 8 KiB slabs, 256 bytes and up with 16 KiB ones), each class edge
/// around it, and the largest classes (16 KiB slabs whatever the page).
const SIZES: [usize; 20] = [
    1, 16, 33, 64, 100, 112, 113, 128, 129, 160, 200, 224, 225, 256, 300, 640, 1024, 1100, 1800,
    2048,
];

#[derive(Debug, Clone)]
enum Op {
    Create,
    /// `count` allocations of `SIZES[size]` bytes.
    Allocs {
        client: usize,
        size: usize,
        count: usize,
    },
    /// Frees every `step`-th live block of the client from the `pick`-th (so whole slabs and
    /// scattered blocks of them go back).
    Frees {
        client: usize,
        pick: usize,
        step: usize,
        count: usize,
    },
    /// A free through the arena, as from another thread.
    RemoteFree {
        client: usize,
        pick: usize,
    },
    /// A free of a block the client freed before and no one holds now.
    DoubleFree {
        client: usize,
        pick: usize,
    },
    /// A free of a pointer 16 bytes (or more) inside a live block.
    InteriorFree {
        client: usize,
        pick: usize,
        at: usize,
    },
    /// A free of another client's live block.
    ForeignFree {
        client: usize,
        pick: usize,
    },
    Trim {
        client: usize,
    },
    ArenaTrim,
    Delete {
        client: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0..MAX_CLIENTS;
    prop_oneof![
        1 => Just(Op::Create),
        6 => (client.clone(), 0..SIZES.len(), prop_oneof![3 => 1usize..=8, 1 => 9usize..=140])
            .prop_map(|(client, size, count)| Op::Allocs { client, size, count }),
        5 => (client.clone(), any::<usize>(), 1usize..=4, 1usize..=80)
            .prop_map(|(client, pick, step, count)| Op::Frees { client, pick, step, count }),
        2 => (client.clone(), any::<usize>())
            .prop_map(|(client, pick)| Op::RemoteFree { client, pick }),
        2 => (client.clone(), any::<usize>())
            .prop_map(|(client, pick)| Op::DoubleFree { client, pick }),
        1 => (client.clone(), any::<usize>(), any::<usize>())
            .prop_map(|(client, pick, at)| Op::InteriorFree { client, pick, at }),
        1 => (client.clone(), any::<usize>())
            .prop_map(|(client, pick)| Op::ForeignFree { client, pick }),
        1 => client.clone().prop_map(|client| Op::Trim { client }),
        1 => Just(Op::ArenaTrim),
        1 => client.prop_map(|client| Op::Delete { client }),
    ]
}

/// A live block: its size and the byte every one of its bytes holds.
#[derive(Debug, Clone, Copy)]
struct Live {
    size: usize,
    tag: u8,
}

struct Slot<'a> {
    client: Client<'a>,
    live: BTreeMap<usize, Live>,
    /// Blocks this client freed that no client holds now.
    freed: Vec<usize>,
}

fn bytes_of(addr: usize, size: usize) -> &'static [u8] {
    // SAFETY: callers pass a live block of `size` bytes, read while nothing else runs.
    unsafe { std::slice::from_raw_parts(addr as *const u8, size) }
}

/// Whether `addr..addr + size` overlaps a live block of any client.
fn overlaps(slots: &[Option<Slot<'_>>], addr: usize, size: usize) -> bool {
    slots.iter().flatten().any(|s| {
        s.live
            .range(..addr + size)
            .next_back()
            .is_some_and(|(&a, l)| a + l.size > addr)
    })
}

/// The `pick`-th live block of `slot`.
fn nth_live(slot: &Slot<'_>, pick: usize) -> Option<(usize, Live)> {
    let n = slot.live.len();
    (n > 0).then(|| {
        let (&a, &l) = slot.live.iter().nth(pick % n).unwrap();
        (a, l)
    })
}

/// A bad free of `ptr` by `client` is refused with an error `expect` accepts, and changes
/// nothing: the client's statistics, and the block `intact` (a live block of some client),
/// which keeps its owner and bytes.
fn refused(
    arena: &Arena,
    slot: &Slot<'_>,
    ptr: usize,
    expect: fn(&Error) -> bool,
    intact: Option<(usize, Live, u32)>,
) -> Result<(), TestCaseError> {
    let before = slot.client.stats();
    // SAFETY: `ptr` is not a live block of this client, so nothing is freed.
    let result = unsafe { slot.client.free(NonNull::new(ptr as *mut u8).unwrap()) };
    match result {
        Ok(n) => prop_assert!(false, "bad free of {ptr:#x} accepted ({n} bytes)"),
        Err(e) => prop_assert!(expect(&e), "bad free of {ptr:#x} gave {e:?}"),
    }
    prop_assert_eq!(
        slot.client.stats(),
        before,
        "a refused free changed the client"
    );
    if let Some((addr, live, owner)) = intact {
        prop_assert_eq!(arena.owner_of(addr as *const u8), Some(owner));
        prop_assert!(all_bytes_are(bytes_of(addr, live.size), live.tag));
    }
    Ok(())
}

/// Frees the live block at `addr` of `slot` (checking its bytes first) and updates the model.
fn free_live(slot: &mut Slot<'_>, addr: usize) -> Result<(), TestCaseError> {
    let live = slot.live.remove(&addr).unwrap();
    prop_assert!(
        all_bytes_are(bytes_of(addr, live.size), live.tag),
        "block {addr:#x} of {} bytes lost its bytes",
        live.size
    );
    // SAFETY: a live block of this client, not used after this.
    let freed = unsafe { slot.client.free(NonNull::new(addr as *mut u8).unwrap()) };
    prop_assert_eq!(freed, Ok(live.size));
    slot.freed.push(addr);
    Ok(())
}

fn run(chunk_shift: u32, ops: &[Op]) -> Result<(), TestCaseError> {
    let chunk = 1usize << chunk_shift;
    let config = Config::new().with_chunk_size(chunk);
    let arena = Arena::new(Backing::heap(CHUNKS * chunk, 4096).unwrap(), config).unwrap();
    prop_assert_eq!(arena.chunk_count(), CHUNKS);
    let mut slots: Vec<Option<Slot<'_>>> = (0..MAX_CLIENTS).map(|_| None).collect();
    let mut tag = 0u8;
    for op in ops {
        match *op {
            Op::Create => {
                if let Some(slot) = slots.iter_mut().find(|s| s.is_none()) {
                    *slot = Some(Slot {
                        client: arena.create_client(Quota::UNLIMITED).unwrap(),
                        live: BTreeMap::new(),
                        freed: Vec::new(),
                    });
                }
            }
            Op::Allocs {
                client,
                size,
                count,
            } => {
                if slots[client].is_none() {
                    continue;
                }
                let layout = Layout::from_size_align(SIZES[size], 1).unwrap();
                for _ in 0..count {
                    let got = slots[client].as_ref().unwrap().client.alloc_sized(layout);
                    let (p, got) = match got {
                        Ok(block) => block,
                        Err(Error::OutOfMemory { .. }) => break,
                        Err(e) => return Err(TestCaseError::fail(format!("alloc: {e:?}"))),
                    };
                    let addr = p.as_ptr() as usize;
                    prop_assert!(got >= SIZES[size]);
                    prop_assert!(
                        !overlaps(&slots, addr, got),
                        "block {addr:#x} of {got} bytes handed out over a live block"
                    );
                    tag = tag.wrapping_add(1).max(1);
                    // SAFETY: the block was just handed out and holds `got` bytes.
                    unsafe { p.as_ptr().write_bytes(tag, got) };
                    let slot = slots[client].as_mut().unwrap();
                    slot.live.insert(addr, Live { size: got, tag });
                }
            }
            Op::Frees {
                client,
                pick,
                step,
                count,
            } => {
                let Some(slot) = slots[client].as_mut() else {
                    continue;
                };
                let addrs: Vec<usize> = slot.live.keys().copied().collect();
                if addrs.is_empty() {
                    continue;
                }
                let first = pick % addrs.len();
                for &addr in addrs[first..].iter().step_by(step).take(count) {
                    free_live(slot, addr)?;
                }
            }
            Op::RemoteFree { client, pick } => {
                let Some(slot) = slots[client].as_mut() else {
                    continue;
                };
                let Some((addr, live)) = nth_live(slot, pick) else {
                    continue;
                };
                prop_assert!(all_bytes_are(bytes_of(addr, live.size), live.tag));
                // SAFETY: a live block, not used after this.
                let freed = unsafe { arena.free(NonNull::new(addr as *mut u8).unwrap()) };
                prop_assert_eq!(freed, Ok(live.size));
                slot.live.remove(&addr);
                slot.freed.push(addr);
            }
            Op::DoubleFree { client, pick } => {
                let Some(slot) = slots[client].as_ref() else {
                    continue;
                };
                if slot.freed.is_empty() {
                    continue;
                }
                let addr = slot.freed[pick % slot.freed.len()];
                if overlaps(&slots, addr, 1) {
                    continue;
                }
                refused(
                    &arena,
                    slot,
                    addr,
                    |e| matches!(e, Error::NotABlock { .. } | Error::NotOwned { .. }),
                    None,
                )?;
            }
            Op::InteriorFree { client, pick, at } => {
                let Some(slot) = slots[client].as_ref() else {
                    continue;
                };
                let Some((addr, live)) = nth_live(slot, pick) else {
                    continue;
                };
                if live.size < 32 {
                    continue;
                }
                let inside = 16 * (1 + at % (live.size / 16 - 1));
                refused(
                    &arena,
                    slot,
                    addr + inside,
                    |e| matches!(e, Error::NotABlock { .. }),
                    Some((addr, live, slot.client.id())),
                )?;
            }
            Op::ForeignFree { client, pick } => {
                let Some(slot) = slots[client].as_ref() else {
                    continue;
                };
                let others: Vec<(usize, Live, u32)> = slots
                    .iter()
                    .flatten()
                    .filter(|s| s.client.id() != slot.client.id())
                    .flat_map(|s| s.live.iter().map(|(&a, &l)| (a, l, s.client.id())))
                    .collect();
                if others.is_empty() {
                    continue;
                }
                let other = others[pick % others.len()];
                refused(
                    &arena,
                    slot,
                    other.0,
                    |e| matches!(e, Error::NotOwned { .. }),
                    Some(other),
                )?;
            }
            Op::Trim { client } => {
                if let Some(slot) = slots[client].as_ref() {
                    slot.client.trim();
                }
            }
            Op::ArenaTrim => arena.trim(),
            Op::Delete { client } => {
                if let Some(slot) = slots[client].take() {
                    for (&addr, live) in &slot.live {
                        prop_assert!(all_bytes_are(bytes_of(addr, live.size), live.tag));
                    }
                    arena.delete_client(slot.client);
                }
            }
        }
        for slot in slots.iter().flatten() {
            let stats = slot.client.stats();
            prop_assert!(stats.live_blocks >= slot.live.len());
            for &addr in slot.live.keys() {
                prop_assert_eq!(arena.owner_of(addr as *const u8), Some(slot.client.id()));
            }
        }
    }
    for slot in slots.iter_mut().flatten() {
        let addrs: Vec<usize> = slot.live.keys().copied().collect();
        for addr in addrs {
            free_live(slot, addr)?;
        }
        slot.client.trim();
        prop_assert_eq!(slot.client.stats().live_blocks, 0);
    }
    drop(slots);
    prop_assert_eq!(arena.stats().held_chunks, 0);
    Ok(())
}

/// Chunk sizes: 64 KiB (256-byte pages), 1 MiB (the default), 32 MiB (8 KiB pages: the
/// largest with 8 KiB slabs) and 64 MiB (16 KiB pages, so 16 KiB slabs for every class).
/// Under Miri, which is a thousand times slower, the smallest only.
fn chunk_shift() -> impl Strategy<Value = u32> {
    if cfg!(miri) {
        Just(16u32).boxed()
    } else {
        prop_oneof![Just(16u32), Just(18), Just(20), Just(25), Just(26)].boxed()
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        // A quarter under the sanitizers, which run each case 5 to 15 times slower.
        cases: if cfg!(miri) { 4 } else if cfg!(memvisor_sanitized) { 128 } else { 512 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn slabs_of_both_forms_never_hand_out_a_block_twice(
        chunk_shift in chunk_shift(),
        ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 20 } else { 80 }),
    ) {
        run(chunk_shift, &ops)?;
    }
}
