//! Clients made on one thread while another deletes their context, through the C functions
//! (so that Miri checks the handle publication too).

use std::alloc::{Layout, alloc, dealloc};
use std::ffi::c_void;
use std::ptr;

use memvisor::status::Status;
use memvisor::types::{Client, Config, Context, MEMVISOR_UNLIMITED};
use memvisor::*;

const CHUNK: usize = 64 << 10;
const LEN: usize = 4 * CHUNK;

/// A caller's memory block, freed on drop.
struct Memory {
    ptr: *mut u8,
    layout: Layout,
}

impl Memory {
    fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc(layout) };
        assert!(!ptr.is_null());
        Self { ptr, layout }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) };
    }
}

fn context(memory: &Memory) -> Context {
    let mut c = Config::default();
    // SAFETY: `c` is writable.
    assert_eq!(unsafe { memvisor_config_init(&mut c) }, Status::Ok);
    c.chunk_size = CHUNK;
    let mut ctx = Context::default();
    // SAFETY: the block outlives the context (deleted before the block is freed); outputs
    // writable.
    let st = unsafe { memvisor_context_create(memory.ptr.cast(), LEN, &c, &mut ctx) };
    assert_eq!(st, Status::Ok);
    ctx
}

fn alloc_in(cl: Client, size: usize) -> *mut c_void {
    let mut p = ptr::null_mut();
    // SAFETY: `p` is writable.
    assert_eq!(unsafe { memvisor_alloc(cl, size, &mut p) }, Status::Ok);
    p
}

/// Clients made on one thread while another deletes their context: the context is deleted
/// only once no client of it is live, every client made works until it is deleted, and once
/// the context is gone no client is made of it.
#[test]
fn client_create_racing_context_delete_never_outlives_its_context() {
    let rounds = if cfg!(miri) { 2 } else { 200 };
    let creates = if cfg!(miri) { 3 } else { 50 };
    let memory = Memory::new(LEN);
    for _ in 0..rounds {
        let ctx = context(&memory);
        let (made, deleted) = std::thread::scope(|scope| {
            let maker = scope.spawn(move || {
                let mut made = 0;
                for _ in 0..creates {
                    let mut cl = Client::default();
                    // SAFETY: `cl` is writable.
                    match unsafe { memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &mut cl) } {
                        Status::Ok => {
                            made += 1;
                            let p = alloc_in(cl, 100);
                            // SAFETY: `p` holds 100 writable bytes while the client lives.
                            unsafe { p.cast::<u8>().write_bytes(0xa5, 100) };
                            assert_eq!(memvisor_client_delete(cl), Status::Ok);
                        }
                        Status::InvalidHandle => break,
                        other => panic!("create: {other:?}"),
                    }
                }
                made
            });
            let deleter = scope.spawn(move || {
                loop {
                    match memvisor_context_delete(ctx) {
                        Status::Ok => return true,
                        Status::ContextBusy => std::thread::yield_now(),
                        other => panic!("delete: {other:?}"),
                    }
                }
            });
            (maker.join().unwrap(), deleter.join().unwrap())
        });
        assert!(deleted && made <= creates);
        let mut cl = Client::default();
        // SAFETY: `cl` is writable.
        let st = unsafe { memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &mut cl) };
        assert_eq!(st, Status::InvalidHandle);
        assert_eq!(memvisor_context_delete(ctx), Status::InvalidHandle);
    }
}
