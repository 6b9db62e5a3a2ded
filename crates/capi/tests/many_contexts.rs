//! Many live contexts at once over a caller's blocks: each create looks the block up among
//! all the live ones, and a block sharing a byte with any of them is refused while one just
//! beside them is not.

use std::alloc::{Layout, alloc, dealloc};
use std::time::Instant;

use memvisor::status::Status;
use memvisor::types::{Config, Context};
use memvisor::*;

const CHUNK: usize = 64 << 10;
/// Each context's block, one chunk, and the gap after it.
const STRIDE: usize = CHUNK + 4096;

fn config() -> Config {
    let mut c = Config::default();
    // SAFETY: `c` is writable.
    assert_eq!(unsafe { memvisor_config_init(&mut c) }, Status::Ok);
    c.chunk_size = CHUNK;
    c
}

/// Makes a context over the `len` bytes at `at`.
fn create(at: *mut u8, len: usize) -> Result<Context, Status> {
    let mut ctx = Context::default();
    let c = config();
    // SAFETY: `at` is inside the test's block, which outlives every context made here;
    // outputs writable.
    let status = unsafe { memvisor_context_create(at.cast(), len, &c, &mut ctx) };
    if status == Status::Ok {
        Ok(ctx)
    } else {
        Err(status)
    }
}

#[test]
#[cfg_attr(miri, ignore = "many contexts are slow under Miri")]
fn many_live_contexts_each_block_refused_beside_ones_accepted() {
    // Fewer on 32-bit targets, whose address space holds fewer blocks.
    let count: usize = if cfg!(target_pointer_width = "64") {
        100_000
    } else {
        2_000
    };
    let layout = Layout::from_size_align(count * STRIDE, 4096).unwrap();
    // SAFETY: non-zero size. The memory is never read or written by the test; the contexts
    // made over it touch none of it until a client allocates.
    let memory = unsafe { alloc(layout) };
    assert!(!memory.is_null());
    // SAFETY: within the block.
    let block = |i: usize| unsafe { memory.add(i * STRIDE) };

    // Made from the highest address down, as the system hands out mappings: each new block
    // comes before every live one.
    let started = Instant::now();
    let mut contexts: Vec<Context> = (0..count)
        .rev()
        .map(|i| create(block(i), CHUNK).unwrap())
        .collect();
    let made = started.elapsed();
    contexts.reverse();
    eprintln!("{count} contexts made in {made:?}");

    for i in (0..count).step_by(count / 1000) {
        // Sharing the first, the last, or every byte of a live block.
        assert_eq!(create(block(i), 1 << 20).err(), Some(Status::BlockInUse));
        // SAFETY: within the block.
        let last = unsafe { block(i).add(CHUNK - 1) };
        assert_eq!(create(last, CHUNK).err(), Some(Status::BlockInUse));
        // SAFETY: within the block.
        let before = unsafe { block(i).sub(1) };
        if i > 0 {
            assert_eq!(create(before, CHUNK + 2).err(), Some(Status::BlockInUse));
        }
        // The gap after a block is no context's: judged on its own merits (too small for a
        // chunk), never refused as in use.
        // SAFETY: within the block.
        let gap = unsafe { block(i).add(CHUNK) };
        assert_eq!(create(gap, 4096).err(), Some(Status::BlockTooSmall));
    }

    let started = Instant::now();
    for ctx in contexts {
        assert_eq!(memvisor_context_delete(ctx), Status::Ok);
    }
    eprintln!("{count} contexts deleted in {:?}", started.elapsed());
    // Every block is free again.
    let again = create(block(count / 2), CHUNK).unwrap();
    assert_eq!(memvisor_context_delete(again), Status::Ok);
    // SAFETY: allocated above with this layout; no context uses it any more.
    unsafe { dealloc(memory, layout) };
}
