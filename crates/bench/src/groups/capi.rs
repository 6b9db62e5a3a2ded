//! `capi`: the arena through its C library (`memvisor-capi`) against the same workload called
//! from Rust, over the same 256 MiB block as the `arena` group.
//!
//! - `pair_small`: 10,000 live blocks of 16 B–1 KiB, then ns per pair of a free of a random live
//!   block and an allocation of a fresh size in its place (the `arena` group's workload and seed).
//!   The memvisor column calls `memvisor_alloc` and `memvisor_client_free` through function
//!   pointers, as a C caller linked against the library does (no inlining across the boundary;
//!   every call checks its handle and catches panics). The `rust-call` variant makes the same calls
//!   on an arena `Client` directly.

use std::cell::RefCell;
use std::ffi::c_void;
use std::hint::black_box;
use std::ptr::{self, NonNull};

use ::capi::status::Status;
use ::capi::types::{Client, Context, MEMVISOR_UNLIMITED};
use memvisor_arena::Quota;

use super::arena::{BLOCK, Heap, LIVE, Memvisor, PAIRS, Region, Workload, pair_run};
use crate::harness::{Bench, Sample};
use crate::report::{Better, Row};

/// Runs every scenario of the group.
pub fn run(bench: &Bench) -> Vec<Row> {
    let mut region = Region::new(BLOCK);
    vec![pair_small(bench, &mut region)]
}

type AllocFn = unsafe extern "C" fn(Client, usize, *mut *mut c_void) -> Status;
type FreeFn = unsafe extern "C" fn(Client, *mut c_void, *mut usize) -> Status;

/// A client of the C library, called through its exported functions.
struct CApi {
    client: Client,
    alloc: AllocFn,
    free: FreeFn,
}

impl Heap for CApi {
    #[inline]
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        let mut p: *mut c_void = ptr::null_mut();
        // SAFETY: `p` is writable.
        let status = unsafe { (self.alloc)(self.client, size, &mut p) };
        (status == Status::Ok)
            .then(|| NonNull::new(p.cast::<u8>()))
            .flatten()
    }
    #[inline]
    unsafe fn free(&mut self, ptr: NonNull<u8>, _size: usize) {
        // SAFETY: a live block of this client, not used again (the caller's promise).
        let _ = unsafe { (self.free)(self.client, ptr.as_ptr().cast(), ptr::null_mut()) };
    }
}

/// A context and one client over the region, through the C library; deleted on drop.
struct CContext {
    context: Context,
    client: Client,
}

impl CContext {
    fn new(region: &mut Region) -> Result<Self, String> {
        let mut context = Context::default();
        let mut client = Client::default();
        // SAFETY: the region is valid for its length and the `&mut` borrow keeps everything
        // else off it while the context lives (dropped before the borrow ends); the outputs
        // are writable.
        unsafe {
            let status = ::capi::memvisor_context_create(
                region.ptr.as_ptr().cast(),
                region.len(),
                ptr::null(),
                &mut context,
            );
            if status != Status::Ok {
                return Err(format!("context: {}", status.message()));
            }
            let status = ::capi::memvisor_client_create(context, MEMVISOR_UNLIMITED, &mut client);
            if status != Status::Ok {
                ::capi::memvisor_context_delete(context);
                return Err(format!("client: {}", status.message()));
            }
        }
        Ok(Self { context, client })
    }
}

impl Drop for CContext {
    fn drop(&mut self) {
        // SAFETY: the client is this context's alone, used on one thread, and its blocks are
        // not used after.
        unsafe { ::capi::memvisor_client_delete(self.client) };
        ::capi::memvisor_context_delete(self.context);
    }
}

fn pair_small(bench: &Bench, region: &mut Region) -> Row {
    let work = Workload::new(LIVE, PAIRS, 1_024, 7);
    let region = RefCell::new(region);
    bench
        .scenario("pair_small", LIVE as u64, "ns/op", Better::Lower)
        .memvisor(|| {
            let c = CContext::new(&mut region.borrow_mut())?;
            let mut heap = CApi {
                client: c.client,
                alloc: black_box(::capi::memvisor_alloc as AllocFn),
                free: black_box(::capi::memvisor_client_free as FreeFn),
            };
            pair_run(&mut heap, &work)
        })
        .variant("rust-call", || -> Sample {
            let mut region = region.borrow_mut();
            let arena = region.arena()?;
            let client = arena
                .create_client(Quota::UNLIMITED)
                .map_err(|e| e.to_string())?;
            pair_run(&mut Memvisor(&client), &work)
        })
        .run()
}
