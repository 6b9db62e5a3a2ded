//! The first context a process makes takes the first segment of the context handle table from
//! the host's heap. Refused there, after the context's arena and shared record were made, the
//! create is the status `OS` and gives both back, the caller's block claim included: the next
//! create over the same block is judged afresh, never `BLOCK_IN_USE`. This file holds one test
//! so that no other context made the segment first, and it is small enough to run under Miri,
//! which checks the record's release.

use std::alloc::Layout;

use memvisor::status::Status;
use memvisor::types::{Config, Context};
use memvisor::*;
use memvisor_testkit::refusing_heap::{Refusing, refusing_after};

#[global_allocator]
static GLOBAL: Refusing = Refusing::up_to(64 << 20);

#[test]
fn first_context_refused_at_each_heap_request_is_os_status_and_its_block_free_again() {
    const CHUNK: usize = 64 << 10;
    let layout = Layout::from_size_align(4 * CHUNK, CHUNK).unwrap();
    // SAFETY: non-zero size.
    let memory = unsafe { std::alloc::alloc(layout) };
    assert!(!memory.is_null());
    let mut config = Config::default();
    // SAFETY: `config` is writable.
    assert_eq!(unsafe { memvisor_config_init(&mut config) }, Status::Ok);
    config.chunk_size = CHUNK;
    let untouched = Context { id: 0 };
    let mut refused = 0;
    let ctx = loop {
        assert!(refused < 1000, "never succeeded");
        let mut out = untouched;
        // SAFETY: the block is ours until the context is deleted below; config readable;
        // `out` writable.
        let status = refusing_after(refused, || unsafe {
            memvisor_context_create(memory.cast(), layout.size(), &config, &mut out)
        });
        if status == Status::Ok {
            break out;
        }
        assert_eq!(status, Status::Os, "refused after {refused} requests");
        assert_eq!(out, untouched, "no output on error");
        refused += 1;
    };
    assert!(refused > 0, "a context needs memory of the host");
    assert_eq!(memvisor_context_delete(ctx), Status::Ok);
    // SAFETY: allocated above with this layout; no context uses it any more.
    unsafe { std::alloc::dealloc(memory, layout) };
}
