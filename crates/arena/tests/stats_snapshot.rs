//! Statistics read while other threads take and give back chunks: every snapshot keeps the
//! relations the documentation states between its figures.

use core::alloc::Layout;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use memvisor_arena::{Arena, Backing, Config, Flags, Quota};

const CHUNK: usize = 64 << 10;

/// Two threads take and give back runs of many chunks (each chunk's bit cleared before the
/// free count is raised, the count lowered after the bits are set), while this thread reads
/// the statistics: the largest free block is never more than the free bytes, and held plus
/// free chunks are all the chunks.
#[test]
#[cfg_attr(
    miri,
    ignore = "a race of real threads: this thread's reads outrun the others there"
)]
fn largest_free_block_never_exceeds_free_bytes_while_chunks_move() {
    let chunks = 128;
    let config = Config::new()
        .with_chunk_size(CHUNK)
        .with_flags(Flags::STATISTICS);
    let arena = Arena::new(Backing::heap(chunks * CHUNK, 4096).unwrap(), config).unwrap();
    let rounds = 5_000;
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            let (arena, stop, done) = (&arena, &stop, &done);
            s.spawn(move || {
                let c = arena.create_client(Quota::UNLIMITED).unwrap();
                let run = Layout::from_size_align(40 * CHUNK, 16).unwrap();
                for _ in 0..rounds {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(p) = c.alloc(run) {
                        // SAFETY: just allocated, not used.
                        unsafe { c.free(p) }.unwrap();
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
        let mut bad = None;
        let mut i = 0u64;
        while done.load(Ordering::Relaxed) < 2 {
            i += 1;
            let st = arena.stats();
            assert_eq!(st.held_chunks + st.free_chunks, st.chunks);
            if st.largest_free_block > st.free_bytes {
                bad = Some((i, st));
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert_eq!(bad, None, "a snapshot with more in one block than free");
    });
}
