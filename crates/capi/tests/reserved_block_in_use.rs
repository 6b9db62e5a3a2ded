//! `memvisor_context_create_reserved` answering `MEMVISOR_STATUS_BLOCK_IN_USE`: the system
//! reserves addresses that a live context over a caller's block claims. That block cannot be
//! the caller's memory (the system would not hand its addresses out again), so the test makes
//! one on purpose: it learns where a reservation of a length lands, releases it, claims those
//! addresses with a context over them that no client ever touches, and reserves the same
//! length again. In a file of its own so that no other test's mapping lands in the claimed
//! addresses while they are claimed.

use std::ffi::c_void;
use std::ptr;

use memvisor::status::Status;
use memvisor::types::{Client, Config, Context, ContextStats, MEMVISOR_UNLIMITED};
use memvisor::*;

const CHUNK: usize = 64 << 10;
const LEN: usize = 4 * CHUNK;

fn config() -> Config {
    let mut c = Config {
        size: 0,
        chunk_size: 0,
        min_block: 0,
        alignment: 0,
        flags: 0,
    };
    // SAFETY: `c` is writable.
    assert_eq!(unsafe { memvisor_config_init(&mut c) }, Status::Ok);
    c.chunk_size = CHUNK;
    c.alignment = 4096;
    c
}

fn stats(ctx: Context) -> ContextStats {
    // SAFETY: all-zero bytes are a valid `ContextStats`.
    let mut s: ContextStats = unsafe { std::mem::zeroed() };
    s.size = size_of::<ContextStats>();
    // SAFETY: `s` is writable and its size is set.
    let st = unsafe { memvisor_context_get_stats(ctx, &mut s) };
    assert_eq!(st, Status::Ok);
    s
}

/// Where a reservation of `LEN` bytes starts, the reservation made and released again: the
/// first byte of a block of all its chunks.
fn reservation_start(c: &Config) -> *mut c_void {
    let mut ctx = Context::default();
    // SAFETY: `c` and `ctx` are valid locals.
    let st = unsafe { memvisor_context_create_reserved(LEN, c, &mut ctx) };
    assert_eq!(st, Status::Ok);
    let mut cl = Client::default();
    // SAFETY: `cl` is writable.
    let st = unsafe { memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &mut cl) };
    assert_eq!(st, Status::Ok);
    let mut p = ptr::null_mut();
    // SAFETY: `p` is writable.
    assert_eq!(unsafe { memvisor_alloc(cl, LEN, &mut p) }, Status::Ok);
    // SAFETY: the client is used on this thread alone, and its blocks not after.
    assert_eq!(unsafe { memvisor_client_delete(cl) }, Status::Ok);
    assert_eq!(memvisor_context_delete(ctx), Status::Ok);
    p
}

#[test]
#[cfg_attr(miri, ignore = "claims addresses no allocation holds")]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "relies on the system placing a reservation where the last one of its length was"
)]
fn reservation_over_a_live_contexts_block_is_block_in_use_and_changes_nothing() {
    let c = config();
    let mut seen = 0;
    for _ in 0..20 {
        let start = reservation_start(&c);
        let mut claimed = Context::default();
        // SAFETY: no client of `claimed` is ever made, so nothing reads or writes its block,
        // which the system released above; `c` and `claimed` are valid locals.
        let st = unsafe { memvisor_context_create(start, LEN, &c, &mut claimed) };
        assert_eq!(st, Status::Ok);
        let before = stats(claimed);
        // Twice: the second reservation lands at the same addresses only if the first was
        // released.
        let mut answers = [Status::Ok; 2];
        for answer in &mut answers {
            let mut out = Context::default();
            // SAFETY: `c` and `out` are valid locals.
            *answer = unsafe { memvisor_context_create_reserved(LEN, &c, &mut out) };
            if *answer == Status::Ok {
                assert_eq!(memvisor_context_delete(out), Status::Ok);
            } else {
                assert_eq!(out, Context::default(), "a refused create wrote its output");
            }
        }
        assert_eq!(stats(claimed), before, "the live context changed");
        assert_eq!(memvisor_context_delete(claimed), Status::Ok);
        if answers == [Status::BlockInUse; 2] {
            seen += 1;
            break;
        }
        // The system placed the reservation elsewhere: only `BLOCK_IN_USE` or success.
        assert!(answers.iter().all(|&a| a == Status::Ok), "{answers:?}");
    }
    assert_eq!(seen, 1, "the system never reused the released addresses");
    // Nothing is left claimed: a reservation at those addresses is accepted now.
    let mut ctx = Context::default();
    // SAFETY: `c` and `ctx` are valid locals.
    let st = unsafe { memvisor_context_create_reserved(LEN, &c, &mut ctx) };
    assert_eq!(st, Status::Ok);
    assert_eq!(memvisor_context_delete(ctx), Status::Ok);
}
