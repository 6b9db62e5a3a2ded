//! Model-based property test: random client creation, allocation, reallocation through
//! [`Allocator`], good and bad frees and client deletion over several clients of one arena
//! (every flag, several minimum block sizes and alignments), checked after every step against a
//! map of live blocks: no overlap, isolation (ownership answers and block contents), alignment,
//! sizes, errors that change nothing, and statistics.

#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

mod common;

use std::alloc::Layout;
use std::collections::BTreeMap;
use std::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use common::all_bytes_are;
use memvisor_arena::{Arena, Backing, Client, Config, Error, Flags, Quota};
use proptest::prelude::*;

const CHUNK: usize = 64 << 10;
const CHUNKS: usize = 8;
const MAX_CLIENTS: usize = 4;

#[derive(Debug, Clone)]
enum Bad {
    Interior,
    Freed,
    OtherClient,
    Outside,
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        quota: Option<usize>,
    },
    Alloc {
        client: usize,
        size: usize,
        align_shift: u32,
    },
    Free {
        client: usize,
        pick: usize,
    },
    BadFree {
        client: usize,
        pick: usize,
        bad: Bad,
    },
    /// A free through the arena, as from another thread.
    RemoteFree {
        client: usize,
        pick: usize,
    },
    /// `Allocator::grow`, `grow_zeroed` or `shrink` (`how` picks) of a pointer that is not a
    /// live block of the client, or of a live block with an old size past the block: refused,
    /// nothing changes.
    BadRealloc {
        client: usize,
        pick: usize,
        bad: Option<Bad>,
        size: usize,
        how: u8,
    },
    /// `Allocator::grow` or `Allocator::shrink` of a live block to `size` bytes.
    Realloc {
        client: usize,
        pick: usize,
        size: usize,
    },
    /// Takes the largest block the client's statistics say it has room for, and the largest
    /// block the arena's statistics say a new client could get.
    Largest {
        client: usize,
    },
    Trim {
        client: usize,
    },
    ArenaTrim,
    /// `Arena::decommit_free_chunks`: over a reservation, every free chunk still committed
    /// is decommitted and the held ones are left alone.
    DecommitFree,
    Delete {
        client: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0..MAX_CLIENTS;
    prop_oneof![
        1 => prop_oneof![Just(None), (1usize..200_000).prop_map(Some)]
            .prop_map(|quota| Op::Create { quota }),
        8 => (
            client.clone(),
            prop_oneof![
                4 => 0usize..=64,
                4 => 65usize..=2048,
                2 => 2049usize..=70_000,
                1 => 70_001usize..=4 * CHUNK,
            ],
            prop_oneof![6 => 0u32..=4, 1 => 5u32..=13],
        )
            .prop_map(|(client, size, align_shift)| Op::Alloc { client, size, align_shift }),
        5 => (client.clone(), any::<usize>()).prop_map(|(client, pick)| Op::Free { client, pick }),
        2 => (
            client.clone(),
            any::<usize>(),
            prop_oneof![Just(Bad::Interior), Just(Bad::Freed), Just(Bad::OtherClient), Just(Bad::Outside)],
        )
            .prop_map(|(client, pick, bad)| Op::BadFree { client, pick, bad }),
        1 => client.clone().prop_map(|client| Op::Delete { client }),
        2 => (client.clone(), any::<usize>())
            .prop_map(|(client, pick)| Op::RemoteFree { client, pick }),
        2 => (
            client.clone(),
            any::<usize>(),
            prop_oneof![
                2 => 1usize..=2048,
                1 => 2049usize..=70_000,
                1 => 70_001usize..=3 * CHUNK,
            ],
        )
            .prop_map(|(client, pick, size)| Op::Realloc { client, pick, size }),
        2 => (
            client.clone(),
            any::<usize>(),
            prop_oneof![
                Just(None),
                Just(Some(Bad::Interior)),
                Just(Some(Bad::Freed)),
                Just(Some(Bad::OtherClient)),
                Just(Some(Bad::Outside)),
            ],
            prop_oneof![1usize..=2048, 2049usize..=3 * CHUNK],
            0u8..3,
        )
            .prop_map(|(client, pick, bad, size, how)| Op::BadRealloc { client, pick, bad, size, how }),
        1 => client.clone().prop_map(|client| Op::Largest { client }),
        1 => client.prop_map(|client| Op::Trim { client }),
        1 => Just(Op::ArenaTrim),
        1 => Just(Op::DecommitFree),
    ]
}

/// Every combination of flags (without the `std` feature, or under Miri, which has no
/// reservations, those that need none).
fn flags() -> impl Strategy<Value = Flags> {
    (0u32..32).prop_map(|bits| {
        let flags = Flags::from_bits_truncate(bits) & Arena::supported_flags();
        if cfg!(miri) {
            flags & !(Flags::DECOMMIT | Flags::GUARD)
        } else {
            flags
        }
    })
}

/// An arena of [`CHUNKS`] chunks: over a reservation with [`Flags::DECOMMIT`] or
/// [`Flags::GUARD`], over heap memory otherwise.
fn make_arena(flags: Flags, min_block: usize, align: usize) -> Arena {
    let config = Config::new()
        .with_chunk_size(CHUNK)
        .with_min_block(min_block)
        .with_alignment(align)
        .with_flags(flags);
    #[cfg(feature = "std")]
    if flags.contains(Flags::DECOMMIT) || flags.contains(Flags::GUARD) {
        return Arena::with_reservation(CHUNKS * CHUNK, config).unwrap();
    }
    // Room for the 4 KiB-aligned start to be rounded up to `align`, and not for one more chunk.
    let pad = align.max(4096) - 4096;
    Arena::new(Backing::heap(CHUNKS * CHUNK + pad, 4096).unwrap(), config).unwrap()
}

/// Whether the byte at `addr` may be read: inside the arena's memory and, over a reservation,
/// committed (a chunk given back with `DECOMMIT` is not).
fn readable(arena: &Arena, addr: usize) -> bool {
    #[cfg(feature = "std")]
    if let Some(r) = arena.backing().reservation() {
        let off = addr - arena.backing().as_ptr() as usize;
        let page = r.page_size();
        return r.is_committed(off / page * page, page).unwrap();
    }
    arena.contains(addr as *const u8)
}

/// Whether an error is the one a free of a bad pointer must give.
type ErrorTest = fn(&Error) -> bool;

/// A pointer that is not a live block of client `client` (`bad` says which kind, `pick` which
/// one) and the error a free of it must give, or `None` if there is none of that kind now.
fn bad_pointer(
    arena: &Arena,
    slots: &[Option<Slot<'_>>],
    client: usize,
    pick: usize,
    bad: &Bad,
) -> Option<(usize, ErrorTest)> {
    let slot = slots[client].as_ref()?;
    Some(match bad {
        Bad::Interior => {
            let (addr, live) = nth_live(slot, pick)?;
            if live.size < 32 {
                return None;
            }
            (addr + 16, |e| matches!(e, Error::NotABlock { .. }))
        }
        Bad::Freed => {
            if slot.freed.is_empty() {
                return None;
            }
            let addr = slot.freed[pick % slot.freed.len()];
            (addr, |e| {
                matches!(e, Error::NotABlock { .. } | Error::NotOwned { .. })
            })
        }
        Bad::OtherClient => {
            let others: Vec<(usize, Live)> = slots
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != client)
                .filter_map(|(_, s)| s.as_ref())
                .flat_map(|s| s.live.iter().map(|(&a, &l)| (a, l)))
                .collect();
            if others.is_empty() {
                return None;
            }
            (others[pick % others.len()].0, |e| {
                matches!(e, Error::NotOwned { .. })
            })
        }
        Bad::Outside => {
            let base = arena.backing().as_ptr() as usize;
            let addr = if pick.is_multiple_of(2) {
                base.wrapping_sub(64)
            } else {
                base + (CHUNKS + 1) * CHUNK
            };
            (addr, |e| matches!(e, Error::Foreign { .. }))
        }
    })
}

/// A live block as the model knows it.
#[derive(Debug, Clone, Copy)]
struct Live {
    size: usize,
    requested: usize,
    align: usize,
    tag: u8,
}

struct Slot<'a> {
    client: Client<'a>,
    live: BTreeMap<usize, Live>,
    freed: Vec<usize>,
    /// Blocks freed through the arena that the client may not have taken back yet: (address,
    /// size).
    pending: Vec<(usize, usize)>,
    quota: Option<usize>,
    used: usize,
}

fn tag_block(p: *mut u8, requested: usize, tag: u8) {
    if requested == 0 {
        return;
    }
    // SAFETY: the block is live and holds at least `requested` bytes.
    unsafe {
        p.write(tag);
        p.add(requested - 1).write(tag);
        p.add(requested / 2).write(tag);
    }
}

fn read_tags(p: usize, live: &Live) -> [u8; 3] {
    let p = p as *const u8;
    // SAFETY: the block is live and holds at least `requested` bytes.
    unsafe {
        [
            p.read(),
            p.add(live.requested - 1).read(),
            p.add(live.requested / 2).read(),
        ]
    }
}

fn check(arena: &Arena, slots: &mut [Option<Slot<'_>>]) -> Result<(), TestCaseError> {
    let mut all: Vec<(usize, usize)> = Vec::new();
    let mut chunks = 0;
    let mut used = 0;
    let mut blocks = 0;
    let mut cached = 0;
    let mut pinned = 0;
    for slot in slots.iter_mut().flatten() {
        // The client takes back all blocks freed through the arena at once, or none.
        let stats = slot.client.stats();
        if stats.live_blocks == slot.live.len() {
            slot.pending.clear();
        }
        let pending: usize = slot.pending.iter().map(|&(_, size)| size).sum();
        prop_assert_eq!(stats.used_bytes, slot.used + pending);
        prop_assert_eq!(stats.live_blocks, slot.live.len() + slot.pending.len());
        for &(addr, _) in &slot.pending {
            prop_assert!(!slot.client.owns(addr as *const u8));
            prop_assert_eq!(arena.owner_of(addr as *const u8), None);
        }
    }
    for (i, slot) in slots.iter().enumerate() {
        let Some(slot) = slot else { continue };
        let stats = slot.client.stats();
        let pending: usize = slot.pending.iter().map(|&(_, size)| size).sum();
        prop_assert_eq!(stats.total_bytes, stats.chunks * CHUNK);
        prop_assert_eq!(stats.free_bytes, stats.total_bytes - stats.used_bytes);
        prop_assert!(stats.cached_chunks <= 1);
        prop_assert!(stats.pinned_chunks <= 1);
        prop_assert_eq!(stats.pinned_bytes, stats.pinned_chunks * CHUNK);
        prop_assert_eq!(stats.cached_blocks == 0, stats.cached_bytes == 0);
        prop_assert!(stats.cached_blocks * 16 <= stats.cached_bytes);
        cached += stats.cached_bytes;
        pinned += stats.pinned_chunks;
        used += pending;
        blocks += slot.pending.len();
        if let Some(quota) = slot.quota {
            prop_assert!(slot.used <= quota);
        }
        chunks += stats.chunks;
        used += slot.used;
        blocks += slot.live.len();
        for (&addr, live) in &slot.live {
            let p = addr as *const u8;
            prop_assert!(arena.contains(p));
            prop_assert_eq!(addr % live.align, 0, "alignment");
            prop_assert_eq!(addr % 16, 0);
            prop_assert!(slot.client.owns(p));
            prop_assert_eq!(arena.owner_of(p), Some(slot.client.id()));
            prop_assert_eq!(slot.client.size_of(p), Ok(live.size));
            prop_assert!(live.size >= live.requested);
            if live.requested > 0 {
                prop_assert_eq!(read_tags(addr, live), [live.tag; 3], "contents changed");
            }
            for (j, other) in slots.iter().enumerate() {
                if let Some(other) = other
                    && j != i
                {
                    prop_assert!(!other.client.owns(p), "two owners");
                    prop_assert!(other.client.size_of(p).is_err());
                }
            }
            all.push((addr, live.size));
        }
    }
    all.sort_unstable();
    for w in all.windows(2) {
        prop_assert!(w[0].0 + w[0].1 <= w[1].0, "overlap: {:x?}", w);
    }
    let stats = arena.stats();
    prop_assert_eq!(stats.held_chunks, chunks);
    prop_assert_eq!(stats.free_chunks + stats.held_chunks, CHUNKS);
    prop_assert_eq!(stats.clients, slots.iter().flatten().count());
    if arena.accepted_flags().contains(Flags::STATISTICS) {
        prop_assert_eq!(stats.used_bytes, Some(used));
        prop_assert_eq!(stats.live_blocks, Some(blocks));
        prop_assert_eq!(stats.cached_bytes, Some(cached));
        prop_assert_eq!(stats.pinned_chunks, Some(pinned));
    } else {
        prop_assert_eq!(stats.used_bytes, None);
    }
    Ok(())
}

fn nth_live(slot: &Slot<'_>, pick: usize) -> Option<(usize, Live)> {
    if slot.live.is_empty() {
        return None;
    }
    slot.live
        .iter()
        .nth(pick % slot.live.len())
        .map(|(&a, &l)| (a, l))
}

fn run(flags: Flags, min_block: usize, align: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let arena = make_arena(flags, min_block, align);
    let flags = arena.accepted_flags();
    prop_assert_eq!(arena.chunk_count(), CHUNKS);
    let mut slots: Vec<Option<Slot<'_>>> = (0..MAX_CLIENTS).map(|_| None).collect();
    let mut next_tag = 1u8;
    for op in ops {
        match op {
            Op::Create { quota } => {
                if let Some(slot) = slots.iter_mut().find(|s| s.is_none()) {
                    let q = quota.map_or(Quota::UNLIMITED, Quota::bytes);
                    *slot = Some(Slot {
                        client: arena.create_client(q).unwrap(),
                        live: BTreeMap::new(),
                        freed: Vec::new(),
                        pending: Vec::new(),
                        quota: *quota,
                        used: 0,
                    });
                }
            }
            Op::Alloc {
                client,
                size,
                align_shift,
            } => {
                let Some(slot) = slots[*client].as_mut() else {
                    continue;
                };
                let align = 1usize << align_shift;
                let layout = Layout::from_size_align(*size, align).unwrap();
                let before = slot.client.stats();
                let held = arena.stats().held_chunks;
                match slot.client.alloc_sized(layout) {
                    Ok((p, got)) => {
                        let addr = p.as_ptr() as usize;
                        prop_assert!(got >= *size && got >= 1);
                        prop_assert!(!slot.live.contains_key(&addr));
                        if let Some(quota) = slot.quota {
                            prop_assert!(slot.used + got <= quota);
                        }
                        if flags.contains(Flags::ZERO) && *size > 0 {
                            // SAFETY: the block is live and holds `got` bytes.
                            let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), got) };
                            prop_assert!(all_bytes_are(bytes, 0), "not zeroed");
                        }
                        next_tag = next_tag.wrapping_add(1).max(1);
                        tag_block(p.as_ptr(), *size, next_tag);
                        slot.freed.retain(|&a| a != addr);
                        slot.live.insert(
                            addr,
                            Live {
                                size: got,
                                requested: *size,
                                align,
                                tag: next_tag,
                            },
                        );
                        slot.used += got;
                    }
                    Err(e) => {
                        match e {
                            Error::QuotaExceeded {
                                requested,
                                used,
                                quota,
                            } => {
                                prop_assert_eq!(Some(quota), slot.quota);
                                prop_assert!(used >= slot.used, "pending frees count until taken");
                                prop_assert!(used + requested > quota);
                            }
                            Error::OutOfMemory { .. } => {}
                            Error::TooLarge { size: s, max } => {
                                prop_assert_eq!(s, *size);
                                prop_assert!(s > max);
                                prop_assert_eq!(max, arena.max_block_size());
                            }
                            Error::UnsupportedAlignment { align: a, max } => {
                                prop_assert_eq!(a, align);
                                prop_assert!(a > max);
                            }
                            other => prop_assert!(false, "unexpected {other:?}"),
                        }
                        // A failed allocation changes nothing but taking back blocks freed
                        // through the arena and trimming if asked to.
                        let after = slot.client.stats();
                        if after != before {
                            prop_assert_eq!(
                                after.used_bytes,
                                slot.used,
                                "failed alloc changed stats"
                            );
                            prop_assert_eq!(after.allocations, before.allocations);
                            prop_assert!(after.chunks <= before.chunks);
                        }
                        prop_assert!(arena.stats().held_chunks <= held);
                    }
                }
            }
            Op::Free { client, pick } => {
                let Some(slot) = slots[*client].as_mut() else {
                    continue;
                };
                let Some((addr, live)) = nth_live(slot, *pick) else {
                    continue;
                };
                // SAFETY: a live block of this client, not used after this.
                let freed = unsafe { slot.client.free(NonNull::new(addr as *mut u8).unwrap()) };
                prop_assert_eq!(freed, Ok(live.size));
                if flags.contains(Flags::POISON)
                    && live.size > 8
                    && readable(&arena, addr + live.size - 1)
                {
                    // SAFETY: the memory stays in the arena; reading it is only done to check
                    // the poison, with nothing else running.
                    let byte = unsafe { (addr as *const u8).add(live.size - 1).read() };
                    prop_assert_eq!(byte, memvisor_arena::POISON_BYTE);
                }
                slot.live.remove(&addr);
                slot.freed.push(addr);
                slot.used -= live.size;
            }
            Op::BadFree { client, pick, bad } => {
                let Some(slot) = slots[*client].as_ref() else {
                    continue;
                };
                let Some((ptr, expect)) = bad_pointer(&arena, &slots, *client, *pick, bad) else {
                    continue;
                };
                let before = slot.client.stats();
                let arena_before = arena.stats();
                let p = NonNull::new(ptr as *mut u8).unwrap();
                prop_assert!(!slot.client.owns(p.as_ptr()));
                // SAFETY: the pointer is not a live block of this client, so nothing is freed.
                let result = unsafe { slot.client.free(p) };
                match result {
                    Ok(_) => prop_assert!(false, "bad free {bad:?} accepted"),
                    Err(e) => prop_assert!(expect(&e), "bad free {bad:?} gave {e:?}"),
                }
                prop_assert!(slot.client.size_of(p.as_ptr()).is_err());
                prop_assert_eq!(slot.client.stats(), before);
                prop_assert_eq!(arena.stats(), arena_before);
            }
            Op::RemoteFree { client, pick } => {
                let Some(slot) = slots[*client].as_mut() else {
                    continue;
                };
                let Some((addr, live)) = nth_live(slot, *pick) else {
                    continue;
                };
                let p = NonNull::new(addr as *mut u8).unwrap();
                // SAFETY: a live block of a client that outlives the call, not used after this.
                prop_assert_eq!(unsafe { arena.free(p) }, Ok(live.size));
                // SAFETY: now rejected: nothing is freed.
                let again = unsafe { arena.free(p) };
                prop_assert_eq!(again, Err(Error::NotABlock { addr }));
                slot.live.remove(&addr);
                slot.freed.push(addr);
                slot.pending.push((addr, live.size));
                slot.used -= live.size;
            }
            Op::BadRealloc {
                client,
                pick,
                bad,
                size,
                how,
            } => {
                let Some(slot) = slots[*client].as_ref() else {
                    continue;
                };
                // A bad pointer with an old size of 16 bytes, or a live block of this client
                // with an old size one granule past its block.
                let (ptr, old) = match bad {
                    Some(bad) => {
                        let Some((ptr, _)) = bad_pointer(&arena, &slots, *client, *pick, bad)
                        else {
                            continue;
                        };
                        (ptr, 16)
                    }
                    None => {
                        let Some((addr, live)) = nth_live(slot, *pick) else {
                            continue;
                        };
                        (addr, live.size + 16)
                    }
                };
                let old = Layout::from_size_align(old, 16).unwrap();
                let p = NonNull::new(ptr as *mut u8).unwrap();
                let stats_before: Vec<_> =
                    slots.iter().flatten().map(|s| s.client.stats()).collect();
                let arena_before = arena.stats();
                // SAFETY: not a live block of this client of `old.size()` bytes: refused before
                // anything is read, written, allocated or freed.
                let result = unsafe {
                    match how {
                        0 => {
                            let new = Layout::from_size_align(old.size().max(*size), 16).unwrap();
                            slot.client.grow(p, old, new)
                        }
                        1 => {
                            let new = Layout::from_size_align(old.size().max(*size), 16).unwrap();
                            slot.client.grow_zeroed(p, old, new)
                        }
                        _ => {
                            let new = Layout::from_size_align(old.size().min(*size), 16).unwrap();
                            slot.client.shrink(p, old, new)
                        }
                    }
                };
                prop_assert!(result.is_err(), "bad realloc {bad:?} ({how}) accepted");
                let stats_after: Vec<_> =
                    slots.iter().flatten().map(|s| s.client.stats()).collect();
                prop_assert_eq!(stats_after, stats_before);
                prop_assert_eq!(arena.stats(), arena_before);
            }
            Op::Realloc { client, pick, size } => {
                let Some(slot) = slots[*client].as_mut() else {
                    continue;
                };
                let Some((addr, live)) = nth_live(slot, *pick) else {
                    continue;
                };
                // The layout the allocator sees (a zero-sized request got a block too).
                let old = Layout::from_size_align(live.requested.max(1), live.align).unwrap();
                let new = Layout::from_size_align(*size, live.align).unwrap();
                let p = NonNull::new(addr as *mut u8).unwrap();
                let before = slot.client.stats();
                // SAFETY: a live block of this client of at least `old.size()` bytes aligned to
                // `old.align()`; not used after a successful call.
                let result = unsafe {
                    if new.size() >= old.size() {
                        slot.client.grow(p, old, new)
                    } else {
                        slot.client.shrink(p, old, new)
                    }
                };
                let Ok(q) = result else {
                    // The old block stays as it was (`check` reads its contents).
                    prop_assert!(
                        slot.client.owns(p.as_ptr()),
                        "failed realloc freed the block"
                    );
                    prop_assert_eq!(slot.client.stats().allocations, before.allocations);
                    check(&arena, &mut slots)?;
                    continue;
                };
                let q = q.cast::<u8>().as_ptr();
                let got = slot.client.size_of(q).unwrap();
                prop_assert!(got >= *size);
                prop_assert_eq!(q as usize % live.align, 0, "alignment");
                if q as usize != addr {
                    prop_assert!(!slot.client.owns(p.as_ptr()), "old block not freed");
                }
                // The bytes both blocks have are kept, and with ZERO the rest reads as zero.
                let kept = live.requested.min(*size);
                for at in [0, live.requested / 2, live.requested.saturating_sub(1)] {
                    if at < kept {
                        // SAFETY: inside the new block, live.
                        prop_assert_eq!(unsafe { q.add(at).read() }, live.tag, "contents lost");
                    }
                }
                if flags.contains(Flags::ZERO) {
                    // SAFETY: the new block is live and holds `got` bytes.
                    let bytes = unsafe { std::slice::from_raw_parts(q, got) };
                    prop_assert!(
                        all_bytes_are(&bytes[old.size().min(new.size())..], 0),
                        "not zeroed past the copied bytes"
                    );
                }
                slot.live.remove(&addr);
                slot.freed.push(addr);
                slot.used -= live.size;
                next_tag = next_tag.wrapping_add(1).max(1);
                tag_block(q, *size, next_tag);
                let q = q as usize;
                slot.freed.retain(|&a| a != q);
                slot.live.insert(
                    q,
                    Live {
                        size: got,
                        requested: *size,
                        align: live.align,
                        tag: next_tag,
                    },
                );
                slot.used += got;
            }
            Op::Largest { client } => {
                // A new client gets the largest block the arena's statistics promise.
                let largest = arena.stats().largest_free_block;
                if largest > 0 {
                    let fresh = arena.create_client(Quota::UNLIMITED).unwrap();
                    let got = fresh.alloc(Layout::from_size_align(largest, 16).unwrap());
                    prop_assert!(got.is_ok(), "a new client cannot get {largest}: {got:?}");
                    arena.delete_client(fresh);
                }
                let Some(slot) = slots[*client].as_mut() else {
                    continue;
                };
                // A block of buddy pages (over 2 KiB) no larger and aligned to no more than
                // the largest free run the client's statistics report takes no chunk. (Cached
                // blocks serve only their own order, so the promise is about free runs.)
                let stats = slot.client.stats();
                let largest = stats.largest_free_block;
                let room = slot
                    .quota
                    .is_none_or(|quota| stats.used_bytes + largest <= quota);
                if stats.cached_bytes != 0 || largest <= 2048 || !room {
                    continue;
                }
                let align = largest.min(arena.max_alignment());
                let held = arena.stats().held_chunks;
                let layout = Layout::from_size_align(largest, align).unwrap();
                let result = slot.client.alloc_sized(layout);
                prop_assert!(result.is_ok(), "largest free block {largest}: {result:?}");
                let (p, got) = result.unwrap();
                // Taking in blocks freed through the arena may give chunks back.
                prop_assert!(arena.stats().held_chunks <= held, "took a chunk");
                next_tag = next_tag.wrapping_add(1).max(1);
                tag_block(p.as_ptr(), largest, next_tag);
                let addr = p.as_ptr() as usize;
                slot.freed.retain(|&a| a != addr);
                slot.live.insert(
                    addr,
                    Live {
                        size: got,
                        requested: largest,
                        align,
                        tag: next_tag,
                    },
                );
                slot.used += got;
            }
            Op::Trim { client } => {
                let Some(slot) = slots[*client].as_mut() else {
                    continue;
                };
                slot.client.trim();
                let stats = slot.client.stats();
                prop_assert_eq!(stats.used_bytes, slot.used, "took back what was pending");
                prop_assert_eq!(stats.cached_bytes, 0);
                prop_assert_eq!(stats.pinned_chunks, 0);
                prop_assert_eq!(stats.cached_chunks, 0);
            }
            Op::ArenaTrim => arena.trim(),
            Op::DecommitFree => {
                #[cfg(feature = "std")]
                {
                    let before = arena.stats();
                    let done = arena.decommit_free_chunks().unwrap();
                    let after = arena.stats();
                    if arena.backing().is_reserved() {
                        prop_assert_eq!(done, before.cached_chunks);
                    } else {
                        prop_assert_eq!(done, 0);
                    }
                    prop_assert_eq!(after.cached_chunks, before.cached_chunks - done);
                    prop_assert_eq!(after.free_chunks, before.free_chunks);
                    prop_assert_eq!(after.held_chunks, before.held_chunks);
                }
            }
            Op::Delete { client } => {
                if let Some(slot) = slots[*client].take() {
                    let chunks = slot.client.stats().chunks;
                    let held = arena.stats().held_chunks;
                    arena.delete_client(slot.client);
                    prop_assert_eq!(arena.stats().held_chunks, held - chunks);
                }
            }
        }
        check(&arena, &mut slots)?;
    }
    drop(slots);
    prop_assert_eq!(arena.stats().held_chunks, 0);
    prop_assert_eq!(arena.stats().clients, 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // A tenth under the sanitizers, which run each case 5 to 15 times slower.
        cases: if cfg!(miri) { 4 } else if cfg!(memvisor_sanitized) { 1_000 } else { 10_000 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn model_random_ops_match_oracle(
        flags in flags(),
        min_block in prop_oneof![Just(16usize), Just(32), Just(256)],
        align in prop_oneof![Just(16usize), Just(64), Just(4096), Just(CHUNK)],
        ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 24 } else { 60 }),
    ) {
        run(flags, min_block, align, &ops)?;
    }
}

/// One step of [`cached_blocks_match_a_model_of_the_bins`]: an allocation of size class
/// `class` (an index into [`BIN_CLASSES`]), or the free of the live block `pick` picks.
#[derive(Debug, Clone)]
enum BinOp {
    Alloc { class: usize },
    Free { pick: usize },
}

/// Two small size classes and a buddy order whose blocks the model follows through the
/// client's bins.
const BIN_CLASSES: [usize; 3] = [48, 256, 4096];
/// Live blocks of each of [`BIN_CLASSES`] at most: below the bins' room (64 blocks of the small
/// classes, 16 of 4 KiB pages), so no bin is ever full and spilled, and few enough that all
/// blocks, their slabs and the cached blocks lie in the client's first chunk (a free that
/// leaves a second chunk without a live block gives back its cached blocks).
const BIN_LIVE_MAX: [usize; 3] = [40, 40, 4];

/// Runs `ops` on one client of a default arena and checks after every step that
/// `cached_blocks` and `cached_bytes` are exactly the model's: a free puts the block in its
/// class's bin (never full here), an allocation of a class takes a block from its bin if it
/// has one; after a trim none is left.
fn run_bins(ops: &[BinOp]) -> Result<(), TestCaseError> {
    let arena = Arena::new(
        Backing::heap(CHUNKS * CHUNK, 4096).unwrap(),
        Config::new().with_chunk_size(CHUNK),
    )
    .unwrap();
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let mut live: Vec<(NonNull<u8>, usize)> = Vec::new();
    let mut cached = [0usize; BIN_CLASSES.len()];
    for (step, op) in ops.iter().enumerate() {
        match *op {
            BinOp::Alloc { class } => {
                if live.iter().filter(|&&(_, c)| c == class).count() == BIN_LIVE_MAX[class] {
                    continue;
                }
                let layout = Layout::from_size_align(BIN_CLASSES[class], 16).unwrap();
                let p = client.alloc(layout).unwrap();
                prop_assert_eq!(client.size_of(p.as_ptr()), Ok(BIN_CLASSES[class]));
                cached[class] = cached[class].saturating_sub(1);
                live.push((p.cast(), class));
            }
            BinOp::Free { pick } => {
                if live.is_empty() {
                    continue;
                }
                let (p, class) = live.swap_remove(pick % live.len());
                // SAFETY: `p` is a live block of `client`, not used after this.
                unsafe { client.free(p) }.unwrap();
                cached[class] += 1;
            }
        }
        let stats = client.stats();
        prop_assert_eq!(
            stats.chunks,
            1,
            "step {}: the model holds in one chunk",
            step
        );
        prop_assert_eq!(
            stats.cached_blocks,
            cached.iter().sum::<usize>(),
            "step {}",
            step
        );
        prop_assert_eq!(
            stats.cached_bytes,
            cached
                .iter()
                .zip(BIN_CLASSES)
                .map(|(n, size)| n * size)
                .sum::<usize>(),
            "step {}",
            step
        );
        prop_assert_eq!(stats.live_blocks, live.len());
    }
    client.trim();
    let stats = client.stats();
    prop_assert_eq!((stats.cached_blocks, stats.cached_bytes), (0, 0));
    Ok(())
}

fn bin_op() -> impl Strategy<Value = BinOp> {
    prop_oneof![
        (0..BIN_CLASSES.len()).prop_map(|class| BinOp::Alloc { class }),
        any::<usize>().prop_map(|pick| BinOp::Free { pick }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn cached_blocks_match_a_model_of_the_bins(
        ops in proptest::collection::vec(bin_op(), 1..if cfg!(miri) { 24 } else { 200 }),
    ) {
        run_bins(&ops)?;
    }
}
