//! Memory the host's allocator refuses (a context's side tables, a client's records, a handle
//! table, a chunk's remote-free bits) is the status `OS`, not an abort of the caller's
//! process, and leaves nothing behind. The global allocator here
//! refuses any request over 64 MiB, and on a thread inside `refusing_after`, every request
//! after that many more (`pausing_then_refusing`: after one slow request).

use std::alloc::Layout;
use std::ptr;
use std::time::Duration;

use memvisor::status::Status;
use memvisor::types::{Client, Context, MEMVISOR_UNLIMITED};
use memvisor::*;
use memvisor_testkit::refusing_heap::{Refusing, pausing_then_refusing, refusing, refusing_after};

/// Requests over this many bytes are always refused.
const MAX_REQUEST: usize = 64 << 20;

#[global_allocator]
static GLOBAL: Refusing = Refusing::up_to(MAX_REQUEST);

#[test]
#[cfg_attr(miri, ignore = "reserves 8 GiB of address space")]
// Side tables over `MAX_REQUEST` need a reservation of over 2 GiB, which a 32-bit target
// refuses as too large before asking for tables.
#[cfg(target_pointer_width = "64")]
fn context_whose_tables_are_refused_is_os_status() {
    let mut ctx = Context { id: 0 };
    // SAFETY: null config (the defaults), `out` writable.
    let status = unsafe { memvisor_context_create_reserved(8 << 30, ptr::null(), &raw mut ctx) };
    assert_eq!(status, Status::Os);
    assert_eq!(ctx.id, 0, "no output on error");

    // A context whose tables fit works as usual.
    // SAFETY: as above.
    let status = unsafe { memvisor_context_create_reserved(1 << 30, ptr::null(), &raw mut ctx) };
    assert_eq!(status, Status::Ok);
    let mut client = Client { id: 0 };
    // SAFETY: `out` writable.
    let status = unsafe { memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &raw mut client) };
    assert_eq!(status, Status::Ok);
    // SAFETY: the client is used on this thread alone, and its blocks not after.
    assert_eq!(unsafe { memvisor_client_delete(client) }, Status::Ok);
    assert_eq!(memvisor_context_delete(ctx), Status::Ok);
}

/// Runs `call` with the allocator refusing after 0, 1, 2, ... requests until it succeeds;
/// every earlier attempt must fail with `OS`. `call` returns its status and its output, which
/// must still be `untouched` after a failure. Returns the refused attempts and the output.
fn refuse_each_request<T: Copy + PartialEq + std::fmt::Debug>(
    untouched: T,
    mut call: impl FnMut(&mut T) -> Status,
) -> (usize, T) {
    for n in 0..1000 {
        let mut out = untouched;
        let status = refusing_after(n, || call(&mut out));
        if status == Status::Ok {
            return (n, out);
        }
        assert_eq!(status, Status::Os, "refused after {n} requests");
        assert_eq!(out, untouched, "no output on error");
    }
    panic!("never succeeded");
}

#[test]
#[cfg_attr(miri, ignore = "many contexts are slow under Miri")]
fn every_refused_request_of_create_and_delete_is_os_status() {
    let (refusals, ctx) = refuse_each_request(Context { id: 0 }, |out| {
        // SAFETY: null config (the defaults), `out` writable.
        unsafe { memvisor_context_create_reserved(8 << 20, ptr::null(), out) }
    });
    assert!(refusals > 0, "a context needs memory of the host");

    let (refusals, client) = refuse_each_request(Client { id: 0 }, |out| {
        // SAFETY: `out` writable.
        unsafe { memvisor_client_create(ctx, MEMVISOR_UNLIMITED, out) }
    });
    assert!(refusals > 0, "a client needs memory of the host");
    let mut block = ptr::null_mut();
    // SAFETY: `out` writable.
    let status = unsafe { memvisor_alloc(client, 100, &raw mut block) };
    assert_eq!(status, Status::Ok);

    // Deleting allocates nothing: with every request refused, both deletes succeed.
    let deleted = refusing(|| {
        (
            // SAFETY: the client is used on this thread alone, and its blocks not after.
            unsafe { memvisor_client_delete(client) },
            memvisor_context_delete(ctx),
        )
    });
    assert_eq!(deleted, (Status::Ok, Status::Ok));

    // The handles given back are reused as usual.
    let mut again = Context { id: 0 };
    // SAFETY: as above.
    let status = unsafe { memvisor_context_create_reserved(8 << 20, ptr::null(), &raw mut again) };
    assert_eq!(status, Status::Ok);
    assert_eq!(memvisor_context_delete(again), Status::Ok);
}

#[derive(Clone, Copy)]
struct SendContext(Context);
// SAFETY: a context handle is a plain value, usable from any thread.
unsafe impl Send for SendContext {}

/// A client made on one thread while another thread's client of the same context is being
/// made under a refusing allocator: each gets its status, none aborts. The slow request of the
/// first lets the second run in between, where a reservation of room made under one lock and
/// used under another would be taken by the second. (Where the pause falls depends on
/// which request comes first, so this does not force the interleaving; the unit test
/// `client_create_between_reserve_and_insert_holds_the_room` does, with a step between the
/// reservation and the insertion.)
#[test]
#[cfg_attr(miri, ignore = "sleeps")]
fn concurrent_client_creates_under_refusal_do_not_abort() {
    let create = |ctx| {
        let mut client = Client { id: 0 };
        // SAFETY: `out` writable.
        let status = unsafe { memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &raw mut client) };
        (status, client)
    };
    let mut ctx = Context { id: 0 };
    // SAFETY: null config (the defaults), `out` writable.
    let status = unsafe { memvisor_context_create_reserved(16 << 20, ptr::null(), &raw mut ctx) };
    assert_eq!(status, Status::Ok);
    // Free slots in the process's client table, so that taking one allocates nothing; made in
    // another context, so that this one's table of clients has room for exactly one more
    // after the two kept below.
    let mut other = Context { id: 0 };
    // SAFETY: as above.
    let status = unsafe { memvisor_context_create_reserved(16 << 20, ptr::null(), &raw mut other) };
    assert_eq!(status, Status::Ok);
    let spare: Vec<_> = (0..4).map(|_| create(other)).collect();
    for (status, client) in spare {
        assert_eq!(status, Status::Ok);
        // SAFETY: the client is used on this thread alone, and its blocks not after.
        assert_eq!(unsafe { memvisor_client_delete(client) }, Status::Ok);
    }
    assert_eq!(memvisor_context_delete(other), Status::Ok);
    let kept: Vec<_> = (0..2).map(|_| create(ctx).1).collect();
    let shared = SendContext(ctx);
    let first = std::thread::spawn(move || {
        let shared = shared;
        pausing_then_refusing(Duration::from_millis(300), || create(shared.0))
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    let second = create(ctx);
    let first = first.join().unwrap();
    for (status, client) in [first, second] {
        assert!(matches!(status, Status::Ok | Status::Os), "{status:?}");
        if status == Status::Ok {
            // SAFETY: the client is used on this thread alone, and its blocks not after.
            assert_eq!(unsafe { memvisor_client_delete(client) }, Status::Ok);
        }
    }
    for client in kept {
        // SAFETY: the client is used on this thread alone, and its blocks not after.
        assert_eq!(unsafe { memvisor_client_delete(client) }, Status::Ok);
    }
    assert_eq!(memvisor_context_delete(ctx), Status::Ok);
}

#[test]
#[cfg_attr(miri, ignore = "many contexts are slow under Miri")]
fn free_through_context_whose_remote_bits_are_refused_is_os_status_block_kept() {
    let mut ctx = Context { id: 0 };
    // SAFETY: null config (the defaults), `out` writable.
    let status = unsafe { memvisor_context_create_reserved(8 << 20, ptr::null(), &raw mut ctx) };
    assert_eq!(status, Status::Ok);
    let mut client = Client { id: 0 };
    // SAFETY: `out` writable.
    let status = unsafe { memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &raw mut client) };
    assert_eq!(status, Status::Ok);
    let mut block = ptr::null_mut();
    // SAFETY: `out` writable.
    let status = unsafe { memvisor_alloc(client, 100, &raw mut block) };
    assert_eq!(status, Status::Ok);

    // The first free through the context in a chunk makes the chunk's remote-free bits.
    let mut size = 7;
    // SAFETY: `block` is a live block allocated on this thread; `size` is writable.
    let status = refusing(|| unsafe { memvisor_free(ctx, block, &raw mut size) });
    assert_eq!(status, Status::Os);
    assert_eq!(size, 7, "no output on error");
    // Nothing changed: the block is still live, and freed once memory is had.
    let mut owns = false;
    // SAFETY: `out` writable; no other thread uses the client.
    let status = unsafe { memvisor_client_owns(client, block, &raw mut owns) };
    assert_eq!((status, owns), (Status::Ok, true));
    // SAFETY: as above.
    let status = unsafe { memvisor_free(ctx, block, &raw mut size) };
    assert_eq!(status, Status::Ok);
    assert_eq!(size, 112);
    // SAFETY: the client is used on this thread alone, and its blocks not after.
    assert_eq!(unsafe { memvisor_client_delete(client) }, Status::Ok);
    assert_eq!(memvisor_context_delete(ctx), Status::Ok);
}

#[test]
#[cfg_attr(miri, ignore = "many contexts are slow under Miri")]
fn every_refused_request_of_create_over_a_callers_block_is_os_status_nothing_claimed() {
    let layout = Layout::from_size_align(2 << 20, 4096).unwrap();
    // SAFETY: non-zero size.
    let memory = unsafe { std::alloc::alloc(layout) };
    assert!(!memory.is_null());
    // Each refused attempt leaves nothing behind, the block's claim included: the next
    // attempt over the same block is judged afresh, never `BLOCK_IN_USE`.
    let (refusals, ctx) = refuse_each_request(Context { id: 0 }, |out| {
        // SAFETY: the block is ours until the context is deleted below; null config (the
        // defaults); `out` writable.
        unsafe { memvisor_context_create(memory.cast(), layout.size(), ptr::null(), out) }
    });
    assert!(refusals > 0, "a context needs memory of the host");
    assert_eq!(memvisor_context_delete(ctx), Status::Ok);
    // SAFETY: allocated above with this layout; no context uses it any more.
    unsafe { std::alloc::dealloc(memory, layout) };
}
