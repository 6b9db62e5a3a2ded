//! [`Flags::GUARD`]: a write just past the last usable byte of a chunk faults. Each case runs
//! in a child process (this test binary run again), which the fault ends.

#![cfg(all(feature = "std", not(miri)))]

use std::alloc::Layout;
use std::process::Command;

use memvisor_arena::{Arena, Backing, Config, Flags, Quota};
use memvisor_vmem::CommitMode;

/// Set in the child to the commit mode of its reservation.
const CHILD: &str = "MEMVISOR_ARENA_GUARD_CHILD";

/// In the child: takes the page-sized block that ends where a chunk's usable pages end (the
/// last piece of a fresh chunk), fills it, then writes the byte after it.
fn write_past_last_block(mode: CommitMode) {
    let chunk = 1 << 20;
    let page = memvisor_vmem::page_size();
    let config = Config::new()
        .with_chunk_size(chunk)
        .with_flags(Flags::GUARD);
    let arena = Arena::new(Backing::reserve(2 * chunk, chunk, mode).unwrap(), config).unwrap();
    assert!(arena.accepted_flags().contains(Flags::GUARD));
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let p = client
        .alloc(Layout::from_size_align(page, 8).unwrap())
        .unwrap();
    let end = p.as_ptr() as usize + page - arena.backing().as_ptr() as usize;
    assert_eq!(
        end % chunk,
        chunk - page,
        "the block ends at the guard page"
    );
    // SAFETY: a live block of `page` bytes.
    unsafe { p.as_ptr().write_bytes(1, page) };
    println!("block written");
    // SAFETY: the byte after the block is the chunk's guard page, reserved and never handed
    // out: the write faults instead of touching memory.
    unsafe { p.as_ptr().add(page).write_volatile(1) };
    println!("no fault");
}

#[test]
fn guard_write_past_last_block_of_chunk_faults() {
    if let Some(mode) = std::env::var_os(CHILD) {
        write_past_last_block(if mode == "sparse" {
            CommitMode::Sparse
        } else {
            CommitMode::Protected
        });
        return;
    }
    for mode in ["protected", "sparse"] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "guard_write_past_last_block_of_chunk_faults",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, mode)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stdout.contains("block written"),
            "{mode}: the child did not reach the write: {stdout}\n{stderr}"
        );
        assert!(
            !out.status.success() && !stdout.contains("no fault"),
            "{mode}: the write past the chunk did not fault: {stdout}\n{stderr}"
        );
    }
}
