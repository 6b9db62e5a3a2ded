//! A language VM with many isolates: 1,000 clients on two threads, each allocating, handing
//! blocks to the other thread to free through the arena (remote frees), trimming, and
//! deleting clients while the other thread's remote frees of other clients are in flight,
//! with the arena's free chunks decommitted meanwhile. The arena's statistics stay exact after
//! every phase, every block reads what was written to it, and every client's memory goes
//! back.

#![cfg(feature = "std")]

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, mpsc};
use std::thread;

use memvisor_arena::{Arena, Client, Config, Flags, Quota};

const CHUNK: usize = 64 << 10;
const PER_THREAD: usize = 500;
/// Blocks each client allocates: two it frees itself, two it keeps, four the other thread
/// frees through the arena.
const BLOCKS: usize = 8;

/// A block a client keeps: address, size, tag written in it.
type Kept = (NonNull<u8>, usize, u8);

/// A block on its way to the other thread: address, size asked for, tag written in it.
struct Sent(usize, usize, u8);

fn size_of(rng: &mut u64) -> usize {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    16 + usize::try_from(*rng % 1_500).unwrap()
}

fn check(p: *const u8, size: usize, tag: u8) {
    // SAFETY: a live block of at least `size` bytes that its writer filled with `tag`.
    let bytes = unsafe { std::slice::from_raw_parts(p, size) };
    assert!(
        bytes.iter().all(|&b| b == tag),
        "block at {p:p} overwritten"
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a thousand clients; the remote-free models run under loom"
)]
fn thousand_clients_on_two_threads_free_remotely_trim_and_delete_exactly() {
    let arena = Arena::with_reservation(
        4 * PER_THREAD * CHUNK,
        Config::new()
            .with_chunk_size(CHUNK)
            .with_flags(Flags::STATISTICS),
    )
    .unwrap();
    let barrier = Barrier::new(2);
    // What the live clients of both threads hold after the trims, in bytes and blocks.
    let (all_bytes, all_blocks) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let (to_1, from_0) = mpsc::channel::<Sent>();
    let (to_0, from_1) = mpsc::channel::<Sent>();
    // What each thread's live clients hold after the remote frees are taken in: bytes and
    // blocks, counted by the thread from the sizes `alloc_sized` gave.
    let held: Vec<(usize, usize)> = thread::scope(|s| {
        let arena = &arena;
        let barrier = &barrier;
        let (all_bytes, all_blocks) = (&all_bytes, &all_blocks);
        let run = move |t: usize, send: mpsc::Sender<Sent>, receive: mpsc::Receiver<Sent>| {
            let mut rng = 0x9E37_79B9_7F4A_7C15_u64 + t as u64;
            let clients: Vec<Client<'_>> = (0..PER_THREAD)
                .map(|_| arena.create_client(Quota::UNLIMITED).unwrap())
                .collect();
            let mut kept: Vec<Vec<Kept>> = vec![Vec::new(); PER_THREAD];
            for (i, client) in clients.iter().enumerate() {
                for b in 0..BLOCKS {
                    let size = size_of(&mut rng);
                    let tag = u8::try_from((t * 97 + i * 13 + b) % 251).unwrap();
                    let (p, got) = client
                        .alloc_sized(Layout::from_size_align(size, 8).unwrap())
                        .unwrap_or_else(|e| panic!("client {t}/{i}: {e}"));
                    // SAFETY: a live block of `got` bytes.
                    unsafe { p.as_ptr().write_bytes(tag, got) };
                    // Only the clients this thread keeps past the deletions below send blocks.
                    if b >= 4 && i >= PER_THREAD / 2 {
                        send.send(Sent(p.as_ptr() as usize, got, tag)).unwrap();
                    } else {
                        kept[i].push((p, got, tag));
                    }
                }
                // Two blocks freed by the client itself.
                for (p, got, tag) in kept[i].drain(..2) {
                    check(p.as_ptr(), got, tag);
                    // SAFETY: a live block of this client, not used after.
                    assert_eq!(unsafe { client.free(p) }, Ok(got));
                }
            }
            drop(send);
            // The first half of the clients goes while the other thread frees blocks of this
            // thread's second half through the arena.
            let mut clients = clients;
            let keep = clients.split_off(PER_THREAD / 2);
            for (i, client) in clients.into_iter().enumerate() {
                for &(p, got, tag) in &kept[i] {
                    check(p.as_ptr(), got, tag);
                }
                arena.delete_client(client);
            }
            // The other thread's blocks, freed through the arena.
            let mut remote = 0;
            for Sent(addr, got, tag) in receive {
                check(addr as *const u8, got, tag);
                // SAFETY: a live block of a client the other thread keeps alive until the
                // barrier below, freed once and not used after.
                unsafe { arena.free(NonNull::new(addr as *mut u8).unwrap()) }.unwrap();
                remote += 1;
            }
            assert_eq!(remote, PER_THREAD / 2 * 4);
            arena.decommit_free_chunks().unwrap();
            barrier.wait();
            // Every remote free of this thread's blocks is done: each kept client takes them
            // in and gives back what it keeps for reuse.
            let (mut bytes, mut blocks) = (0, 0);
            for (i, client) in keep.iter().enumerate() {
                client.trim();
                let stats = client.stats();
                let mine = &kept[PER_THREAD / 2 + i];
                let used: usize = mine.iter().map(|&(_, got, _)| got).sum();
                assert_eq!(stats.live_blocks, mine.len());
                assert_eq!(stats.used_bytes, used);
                assert_eq!(stats.cached_bytes, 0);
                for &(p, got, tag) in mine {
                    check(p.as_ptr(), got, tag);
                }
                bytes += used;
                blocks += mine.len();
            }
            arena.decommit_free_chunks().unwrap();
            all_bytes.fetch_add(bytes, Ordering::Relaxed);
            all_blocks.fetch_add(blocks, Ordering::Relaxed);
            barrier.wait();
            // Both threads are idle between these waits: the arena's totals are exact.
            if t == 0 {
                let stats = arena.stats();
                assert_eq!(stats.used_bytes, Some(all_bytes.load(Ordering::Relaxed)));
                assert_eq!(stats.live_blocks, Some(all_blocks.load(Ordering::Relaxed)));
                assert_eq!(stats.clients, PER_THREAD);
            }
            barrier.wait();
            for client in keep {
                arena.delete_client(client);
            }
            (bytes, blocks)
        };
        let first = s.spawn(move || run(0, to_1, from_1));
        let second = s.spawn(move || run(1, to_0, from_0));
        vec![first.join().unwrap(), second.join().unwrap()]
    });
    assert!(held.iter().all(|&(_, blocks)| blocks == PER_THREAD / 2 * 2));
    let stats = arena.stats();
    assert_eq!(stats.clients, 0);
    assert_eq!(stats.held_chunks, 0);
    assert_eq!(stats.used_bytes, Some(0));
    assert_eq!(stats.live_blocks, Some(0));
    assert_eq!(stats.pinned_chunks, Some(0));
    assert_eq!(stats.free_chunks, stats.chunks);
    let committed = stats.cached_chunks;
    assert_eq!(arena.decommit_free_chunks(), Ok(committed));
    assert_eq!(arena.stats().cached_chunks, 0);
    assert_eq!(arena.resident_bytes().unwrap(), Some(0));
}
