//! The C functions called from Rust, so that Miri checks their pointer handling too (the C
//! suite in `c_suite.rs` covers the same ground from C, natively).

use std::alloc::{Layout, alloc, dealloc};
use std::ffi::{CStr, c_void};
use std::ptr;

use memvisor::status::Status;
use memvisor::types::{
    Client, ClientStats, Config, Context, ContextStats, MEMVISOR_FLAG_STATISTICS,
    MEMVISOR_UNLIMITED,
};
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

fn config(flags: u32) -> Config {
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
    c.flags = flags;
    c
}

fn context(memory: &Memory, flags: u32) -> Context {
    let mut ctx = Context::default();
    let c = config(flags);
    // SAFETY: the block outlives the context (each test deletes it first); outputs writable.
    let st = unsafe { memvisor_context_create(memory.ptr.cast(), LEN, &c, &mut ctx) };
    assert_eq!(st, Status::Ok);
    ctx
}

fn client(ctx: Context) -> Client {
    let mut cl = Client::default();
    // SAFETY: `cl` is writable.
    let st = unsafe { memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &mut cl) };
    assert_eq!(st, Status::Ok);
    cl
}

fn alloc_in(cl: Client, size: usize) -> *mut c_void {
    let mut p = ptr::null_mut();
    // SAFETY: `p` is writable.
    assert_eq!(unsafe { memvisor_alloc(cl, size, &mut p) }, Status::Ok);
    p
}

#[test]
fn lifecycle_every_call_status_ok_and_values_right() {
    let memory = Memory::new(LEN);
    let ctx = context(&memory, MEMVISOR_FLAG_STATISTICS);
    let a = client(ctx);
    let b = client(ctx);
    let p = alloc_in(a, 100);
    let q = alloc_in(b, 3000);
    let mut size = 0usize;
    let mut owns = false;
    let mut who = Client::default();
    // SAFETY: every output is a valid local; `p` and `q` are live blocks not used after their
    // frees.
    unsafe {
        p.cast::<u8>().write_bytes(0x42, 100);
        assert_eq!(memvisor_size_of(a, p, &mut size), Status::Ok);
        assert_eq!(size, 112);
        assert_eq!(memvisor_client_owns(a, p, &mut owns), Status::Ok);
        assert!(owns);
        assert_eq!(memvisor_client_owns(b, p, &mut owns), Status::Ok);
        assert!(!owns);
        assert_eq!(memvisor_context_owner(ctx, q, &mut who), Status::Ok);
        assert_eq!(who, b);
        assert_eq!(
            memvisor_client_free(b, p, ptr::null_mut()),
            Status::NotOwned
        );
        assert_eq!(memvisor_free(ctx, q, &mut size), Status::Ok);
        assert_eq!(size, 3072);
        assert_eq!(memvisor_client_free(a, p, &mut size), Status::Ok);
        assert_eq!(memvisor_client_free(a, p, &mut size), Status::NotABlock);
        assert_eq!(memvisor_client_trim(a), Status::Ok);
        assert_eq!(memvisor_context_trim(ctx), Status::Ok);
        let mut cs = ClientStats {
            size: size_of::<ClientStats>(),
            ..ClientStats::default()
        };
        assert_eq!(memvisor_client_get_stats(a, &mut cs), Status::Ok);
        assert_eq!((cs.live_blocks, cs.allocations, cs.frees), (0, 1, 1));
        let mut s = ContextStats {
            size: size_of::<ContextStats>(),
            ..ContextStats::default()
        };
        assert_eq!(memvisor_context_get_stats(ctx, &mut s), Status::Ok);
        assert_eq!((s.chunks, s.clients), (4, 2));
        let mut flags = 0;
        assert_eq!(memvisor_context_accepted_flags(ctx, &mut flags), Status::Ok);
        assert_eq!(flags, MEMVISOR_FLAG_STATISTICS);
        assert_eq!(memvisor_context_delete(ctx), Status::ContextBusy);
        assert_eq!(memvisor_client_delete(a), Status::Ok);
        assert_eq!(memvisor_client_delete(b), Status::Ok);
        assert_eq!(memvisor_context_delete(ctx), Status::Ok);
        assert_eq!(memvisor_context_delete(ctx), Status::InvalidHandle);
    }
}

#[test]
fn null_and_stale_arguments_refused_outputs_untouched() {
    let memory = Memory::new(LEN);
    let ctx = context(&memory, 0);
    let a = client(ctx);
    let mut p: *mut c_void = ptr::null_mut();
    let mut local = 0u8;
    let lp = (&raw mut local).cast::<c_void>();
    // SAFETY: every output is a valid local or null.
    unsafe {
        assert_eq!(memvisor_alloc(a, 16, ptr::null_mut()), Status::NullPointer);
        assert_eq!(
            memvisor_client_free(a, ptr::null_mut(), ptr::null_mut()),
            Status::NullPointer
        );
        assert_eq!(
            memvisor_free(ctx, lp, ptr::null_mut()),
            Status::ForeignPointer
        );
        assert_eq!(
            memvisor_client_free(a, lp, ptr::null_mut()),
            Status::ForeignPointer
        );
        assert_eq!(
            memvisor_alloc_aligned(a, 16, 3, &mut p),
            Status::UnsupportedAlignment
        );
        assert_eq!(memvisor_alloc(a, usize::MAX, &mut p), Status::TooLarge);
        assert!(p.is_null());
        let mut s = ContextStats::default();
        assert_eq!(memvisor_context_get_stats(ctx, &mut s), Status::StructSize);
        assert_eq!(s, ContextStats::default());
        let mut bad = config(1 << 9);
        let mut other = Context::default();
        assert_eq!(
            memvisor_context_create(memory.ptr.cast(), LEN, &bad, &mut other),
            Status::UnknownFlags
        );
        bad = config(0);
        bad.size = 3;
        assert_eq!(
            memvisor_context_create(memory.ptr.cast(), LEN, &bad, &mut other),
            Status::StructSize
        );
        assert_eq!(other, Context::default());
        assert_eq!(memvisor_config_init(ptr::null_mut()), Status::NullPointer);
        assert_eq!(memvisor_client_delete(a), Status::Ok);
        assert_eq!(memvisor_alloc(a, 16, &mut p), Status::InvalidHandle);
        assert_eq!(memvisor_client_trim(a), Status::InvalidHandle);
        assert_eq!(memvisor_context_delete(ctx), Status::Ok);
        assert_eq!(memvisor_context_trim(ctx), Status::InvalidHandle);
        assert!(!CStr::from_ptr(memvisor_status_message(Status::Os.code())).is_empty());
        assert!(!CStr::from_ptr(memvisor_version()).is_empty());
    }
    assert_eq!(memvisor_supported_flags(), 0x1f);
}

#[test]
fn reserved_context_under_a_chunk_is_block_too_small() {
    let c = config(0);
    for len in [0, 1, CHUNK - 1] {
        let mut ctx = Context::default();
        // SAFETY: `c` and `ctx` are valid locals.
        let st = unsafe { memvisor_context_create_reserved(len, &c, &mut ctx) };
        assert_eq!(st, Status::BlockTooSmall, "len {len}");
        assert_eq!(ctx, Context::default());
    }
    // A length off whole chunks uses the chunks that fit in it.
    let mut ctx = Context::default();
    // SAFETY: as above.
    unsafe {
        assert_eq!(
            memvisor_context_create_reserved(2 * CHUNK - 1, &c, &mut ctx),
            Status::Ok
        );
        let mut s = ContextStats {
            size: std::mem::size_of::<ContextStats>(),
            ..ContextStats::default()
        };
        assert_eq!(memvisor_context_get_stats(ctx, &mut s), Status::Ok);
        assert_eq!(s.total_bytes, CHUNK);
        assert_eq!(memvisor_context_delete(ctx), Status::Ok);
    }
}

#[test]
fn reserved_context_over_ptrdiff_max_is_too_large_on_every_target() {
    // A 32-bit process may get 2 GiB of address space from the OS: the length is refused
    // before anything is reserved, with the same status on every target.
    let c = config(0);
    for len in [
        isize::MAX.unsigned_abs() + 1,
        usize::MAX - CHUNK + 1,
        usize::MAX,
    ] {
        let mut ctx = Context::default();
        // SAFETY: `c` and `ctx` are valid locals.
        let st = unsafe { memvisor_context_create_reserved(len, &c, &mut ctx) };
        assert_eq!(st, Status::TooLarge, "len {len:#x}");
        assert_eq!(ctx, Context::default());
    }
}

#[test]
fn handle_of_the_other_kind_refused() {
    let memory = Memory::new(LEN);
    let ctx = context(&memory, 0);
    // Clients until one has the context's slot index (both tables count from 0), so that,
    // but for the kind, the context's value would name it.
    let index = |id: u64| id & 0x7fff_ffff;
    let mut clients = vec![client(ctx)];
    while index(clients.last().unwrap().id) < index(ctx.id) && clients.len() < 4096 {
        clients.push(client(ctx));
    }
    let mut p: *mut c_void = ptr::null_mut();
    // A size the library serves: a bad one is refused before the handle is looked up.
    let mut s = ContextStats {
        size: size_of::<ContextStats>(),
        ..ContextStats::default()
    };
    // SAFETY: outputs are writable locals.
    unsafe {
        let as_client = Client { id: ctx.id };
        assert_eq!(memvisor_alloc(as_client, 16, &mut p), Status::InvalidHandle);
        assert_eq!(memvisor_client_trim(as_client), Status::InvalidHandle);
        assert_eq!(memvisor_client_delete(as_client), Status::InvalidHandle);
        assert!(p.is_null());
        for cl in &clients {
            let as_context = Context { id: cl.id };
            assert_eq!(memvisor_context_trim(as_context), Status::InvalidHandle);
            assert_eq!(
                memvisor_context_get_stats(as_context, &mut s),
                Status::InvalidHandle
            );
            assert_eq!(memvisor_context_delete(as_context), Status::InvalidHandle);
        }
        for cl in clients {
            assert_eq!(memvisor_client_delete(cl), Status::Ok);
        }
        assert_eq!(memvisor_context_delete(ctx), Status::Ok);
    }
}

#[test]
fn free_through_context_from_other_thread_while_client_works() {
    let n = if cfg!(miri) { 16 } else { 1000 };
    let memory = Memory::new(LEN);
    let ctx = context(&memory, 0);
    let cl = client(ctx);
    let blocks: Vec<usize> = (0..n)
        .map(|i| alloc_in(cl, 16 + i % 300) as usize)
        .collect();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for &b in &blocks {
                // SAFETY: each block is freed once, here, and not used again; its allocation
                // happened before the thread was spawned.
                let st = unsafe { memvisor_free(ctx, b as *mut c_void, ptr::null_mut()) };
                assert_eq!(st, Status::Ok);
            }
        });
        for _ in 0..n {
            let p = alloc_in(cl, 48);
            // SAFETY: `p` is a live block of `cl`, not used again.
            let st = unsafe { memvisor_client_free(cl, p, ptr::null_mut()) };
            assert_eq!(st, Status::Ok);
        }
    });
    // SAFETY: the thread that freed through the context is done; no other call on `cl` runs.
    assert_eq!(unsafe { memvisor_client_trim(cl) }, Status::Ok);
    let mut cs = ClientStats {
        size: size_of::<ClientStats>(),
        ..ClientStats::default()
    };
    // SAFETY: `cs` is writable with its size set.
    let st = unsafe { memvisor_client_get_stats(cl, &mut cs) };
    assert_eq!(st, Status::Ok);
    assert_eq!((cs.live_blocks, cs.used_bytes, cs.chunks), (0, 0, 0));
    // SAFETY: the client is used on this thread alone, and its blocks not after.
    assert_eq!(unsafe { memvisor_client_delete(cl) }, Status::Ok);
    assert_eq!(memvisor_context_delete(ctx), Status::Ok);
}

#[test]
fn alloc_aligned_alignment_past_largest_chunk_unsupported_not_too_large() {
    // An alignment no context can give is an alignment error, even where no `Layout` of that
    // alignment exists (past `isize::MAX`); a size no context can give stays `TOO_LARGE`.
    let memory = Memory::new(LEN);
    let ctx = context(&memory, 0);
    let cl = client(ctx);
    let mut p = ptr::null_mut();
    // SAFETY: `p` is writable.
    unsafe {
        for align in [
            1usize << (usize::BITS - 1),
            1 << (usize::BITS - 2),
            256 << 20,
            128 << 20,
        ] {
            assert_eq!(
                memvisor_alloc_aligned(cl, 1, align, &mut p),
                Status::UnsupportedAlignment,
                "align {align:#x}"
            );
        }
        assert_eq!(
            memvisor_alloc_aligned(cl, usize::MAX, 16, &mut p),
            Status::TooLarge
        );
    }
    assert!(p.is_null());
    // SAFETY: the client is used on this thread alone, and its blocks not after.
    assert_eq!(unsafe { memvisor_client_delete(cl) }, Status::Ok);
    assert_eq!(memvisor_context_delete(ctx), Status::Ok);
}

#[test]
fn alloc_aligned_past_a_low_context_alignment_unsupported() {
    // A context over memory that starts 16 bytes past a 64-byte boundary, with chunk starts
    // aligned to 16: small blocks asking for 32 or 64 are refused, not handed out misaligned.
    let memory = Memory::new(LEN + 64);
    let mut c = config(0);
    c.alignment = 16;
    let mut ctx = Context::default();
    // SAFETY: `memory.ptr + 16 .. + LEN` lies in the block, which outlives the context;
    // outputs writable.
    let st = unsafe { memvisor_context_create(memory.ptr.add(16).cast(), LEN, &c, &mut ctx) };
    assert_eq!(st, Status::Ok);
    let cl = client(ctx);
    let mut p = ptr::null_mut();
    // SAFETY: `p` is writable; blocks are freed once and not used after.
    unsafe {
        for align in [32usize, 64] {
            for size in [1usize, 32, 64, 2048] {
                assert_eq!(
                    memvisor_alloc_aligned(cl, size, align, &mut p),
                    Status::UnsupportedAlignment,
                    "size {size} align {align}"
                );
                assert!(p.is_null());
            }
        }
        assert_eq!(memvisor_alloc_aligned(cl, 64, 16, &mut p), Status::Ok);
        assert_eq!(p as usize % 16, 0);
        assert_eq!(memvisor_client_free(cl, p, ptr::null_mut()), Status::Ok);
    }
    // SAFETY: the client is used on this thread alone, and its blocks not after.
    assert_eq!(unsafe { memvisor_client_delete(cl) }, Status::Ok);
    assert_eq!(memvisor_context_delete(ctx), Status::Ok);
}

/// The bytes of `value`, every one of which must be defined (Miri reports reading padding
/// that was never written).
fn bytes_of<T>(value: &T) -> Vec<u8> {
    // SAFETY: `value` is `size_of::<T>()` readable bytes; the assertions that call this are
    // what checks they are all initialised.
    unsafe { std::slice::from_raw_parts(ptr::from_ref(value).cast::<u8>(), size_of::<T>()) }
        .to_vec()
}

/// A structure of `T` whose every byte is `fill`, with its `size` field (first) set.
fn filled<T>(fill: u8) -> std::mem::MaybeUninit<T> {
    let mut v = std::mem::MaybeUninit::<T>::uninit();
    // SAFETY: `v` has room for `T`; its first field is a `size_t`.
    unsafe {
        v.as_mut_ptr()
            .cast::<u8>()
            .write_bytes(fill, size_of::<T>());
        v.as_mut_ptr().cast::<usize>().write(size_of::<T>());
    }
    v
}

#[test]
fn filled_structures_every_byte_defined_on_every_target() {
    // On targets whose `uint64_t` is aligned to 8 with a 4-byte `size_t` (32-bit Arm, MIPS,
    // PowerPC, WebAssembly), `memvisor_client_stats` has padding before `allocations`:
    // whatever the caller's bytes were, the library's output is the same, byte for byte.
    let memory = Memory::new(LEN);
    let ctx = context(&memory, MEMVISOR_FLAG_STATISTICS);
    let cl = client(ctx);
    let p = alloc_in(cl, 100);
    let (mut k1, mut k2) = (filled::<ClientStats>(0xff), filled::<ClientStats>(0));
    let (mut s1, mut s2) = (filled::<ContextStats>(0xff), filled::<ContextStats>(0));
    let (mut c1, mut c2) = (filled::<Config>(0xff), filled::<Config>(0));
    // SAFETY: every output is a writable structure with its `size` set; the library fills
    // all of each on success.
    unsafe {
        assert_eq!(memvisor_client_get_stats(cl, k1.as_mut_ptr()), Status::Ok);
        assert_eq!(memvisor_client_get_stats(cl, k2.as_mut_ptr()), Status::Ok);
        assert_eq!(memvisor_context_get_stats(ctx, s1.as_mut_ptr()), Status::Ok);
        assert_eq!(memvisor_context_get_stats(ctx, s2.as_mut_ptr()), Status::Ok);
        assert_eq!(memvisor_config_init(c1.as_mut_ptr()), Status::Ok);
        assert_eq!(memvisor_config_init(c2.as_mut_ptr()), Status::Ok);
        assert_eq!(bytes_of(&k1), bytes_of(&k2));
        assert_eq!(bytes_of(&s1), bytes_of(&s2));
        assert_eq!(bytes_of(&c1), bytes_of(&c2));
        let (k, s, c) = (k1.assume_init(), s1.assume_init(), c1.assume_init());
        assert_eq!(
            (k.size, k.live_blocks, k.allocations),
            (size_of::<ClientStats>(), 1, 1)
        );
        assert_eq!(
            (s.size, s.live_blocks, s.accepted_flags),
            (size_of::<ContextStats>(), 1, MEMVISOR_FLAG_STATISTICS)
        );
        assert_eq!(c, Config::default());
        assert_eq!(memvisor_client_free(cl, p, ptr::null_mut()), Status::Ok);
    }
    // SAFETY: the client is used on this thread alone, and its blocks not after.
    assert_eq!(unsafe { memvisor_client_delete(cl) }, Status::Ok);
    assert_eq!(memvisor_context_delete(ctx), Status::Ok);
}

#[test]
fn context_create_block_past_the_address_space_too_large_nothing_allocated() {
    // No memory block is longer than `PTRDIFF_MAX` or runs past the end of the address space:
    // such a length (a negative value cast to `size_t`, say) is refused before anything is
    // allocated for it, rather than sizing side tables after it.
    let memory = Memory::new(LEN);
    let c = config(0);
    let top = ptr::without_provenance_mut::<c_void>(usize::MAX - 4095);
    let cases = [
        (memory.ptr.cast::<c_void>(), usize::MAX),
        (memory.ptr.cast(), isize::MAX.unsigned_abs() + 1),
        (memory.ptr.cast(), usize::MAX - memory.ptr.addr() + 1),
        (top, 2 * CHUNK),
        (top, 4096),
    ];
    for (at, len) in cases {
        let mut ctx = Context::default();
        // SAFETY: the block is refused before it is used; `c` and `ctx` are valid locals.
        let st = unsafe { memvisor_context_create(at, len, &c, &mut ctx) };
        assert_eq!(st, Status::TooLarge, "at {at:p} len {len:#x}");
        assert_eq!(ctx, Context::default());
    }
    // The largest length that fits is judged as usual.
    let mut ctx = Context::default();
    // SAFETY: as above: under one chunk, refused without being used.
    let st = unsafe { memvisor_context_create(top, 4095, &c, &mut ctx) };
    assert_eq!(st, Status::BlockTooSmall);
}

#[test]
fn client_delete_racing_on_two_threads_one_wins() {
    // Deleting is the one client function safe code may call from two threads at once.
    let rounds = if cfg!(miri) { 3 } else { 50 };
    let memory = Memory::new(LEN);
    let ctx = context(&memory, 0);
    for _ in 0..rounds {
        let cl = client(ctx);
        alloc_in(cl, 100);
        let results: Vec<Status> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..2)
                // SAFETY: the two deletes are the only calls on the client meanwhile, which
                // the contract allows; its blocks are not used after.
                .map(|_| scope.spawn(move || unsafe { memvisor_client_delete(cl) }))
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let mut sorted = results.clone();
        sorted.sort_by_key(|s| s.code());
        assert_eq!(sorted, [Status::Ok, Status::InvalidHandle], "{results:?}");
    }
    let mut s = ContextStats {
        size: size_of::<ContextStats>(),
        ..ContextStats::default()
    };
    // SAFETY: `s` is writable with its size set.
    let st = unsafe { memvisor_context_get_stats(ctx, &mut s) };
    assert_eq!(st, Status::Ok);
    assert_eq!((s.clients, s.held_chunks), (0, 0));
    assert_eq!(memvisor_context_delete(ctx), Status::Ok);
}

/// A structure of an older header: `N` words, the first its size. Boxed at its exact size,
/// so that Miri reports any byte written or read past it.
fn older<const N: usize>() -> Box<[usize; N]> {
    let mut words = Box::new([usize::MAX; N]);
    words[0] = N * size_of::<usize>();
    words
}

#[test]
fn config_init_sized_older_structure_filled_up_to_its_size_only() {
    let mut old = older::<3>();
    let defaults = Config::default();
    // SAFETY: `old` has the `size` writable bytes passed.
    let st = unsafe { memvisor_config_init_sized(old.as_mut_ptr().cast(), old[0]) };
    assert_eq!(st, Status::Ok);
    assert_eq!(*old, [old[0], defaults.chunk_size, defaults.min_block]);

    // Sizes no header has: refused, nothing written.
    for size in [0, 1, size_of::<usize>() + 1, old[0] - 1] {
        let mut old = older::<3>();
        let before = *old;
        // SAFETY: as above; a refused size writes nothing.
        let st = unsafe { memvisor_config_init_sized(old.as_mut_ptr().cast(), size) };
        assert_eq!(st, Status::StructSize, "{size}");
        assert_eq!(*old, before);
    }
    // SAFETY: null is refused before anything is written.
    let st = unsafe { memvisor_config_init_sized(ptr::null_mut(), size_of::<Config>()) };
    assert_eq!(st, Status::NullPointer);
}

#[test]
fn config_init_sized_newer_structure_filled_up_to_ours_bytes_past_kept() {
    let mut newer = [0xeeu8; size_of::<Config>() + 16];
    // SAFETY: `newer` has the `size` writable bytes passed.
    let st = unsafe { memvisor_config_init_sized(newer.as_mut_ptr().cast(), newer.len()) };
    assert_eq!(st, Status::Ok);
    // SAFETY: the first bytes now hold a whole `Config`.
    let c = unsafe { newer.as_ptr().cast::<Config>().read_unaligned() };
    assert_eq!(c, Config::default());
    assert!(newer[size_of::<Config>()..].iter().all(|&b| b == 0xee));
}

#[test]
fn context_create_older_config_fields_past_its_size_take_defaults() {
    let memory = Memory::new(LEN);
    // `size` and `chunk_size` only: `min_block`, `alignment` and `flags` lie past it.
    let mut old = older::<2>();
    old[1] = CHUNK;
    let mut ctx = Context::default();
    // SAFETY: the block outlives the context; `old` holds the bytes its size says.
    let st =
        unsafe { memvisor_context_create(memory.ptr.cast(), LEN, old.as_ptr().cast(), &mut ctx) };
    assert_eq!(st, Status::Ok);
    let mut s = ContextStats {
        size: size_of::<ContextStats>(),
        ..ContextStats::default()
    };
    // SAFETY: writable, size set.
    let st = unsafe { memvisor_context_get_stats(ctx, &mut s) };
    assert_eq!(st, Status::Ok);
    assert_eq!((s.chunk_size, s.chunks), (CHUNK, LEN / CHUNK));
    assert_eq!(
        (s.max_alignment, s.accepted_flags),
        (Config::default().alignment, 0)
    );
    assert_eq!(memvisor_context_delete(ctx), Status::Ok);

    // A size inside `chunk_size` is refused and nothing is made.
    old[0] = size_of::<usize>() + size_of::<usize>() / 2;
    let mut none = Context::default();
    // SAFETY: as above.
    let st =
        unsafe { memvisor_context_create(memory.ptr.cast(), LEN, old.as_ptr().cast(), &mut none) };
    assert_eq!((st, none), (Status::StructSize, Context::default()));
}

#[test]
fn get_stats_older_structures_filled_up_to_their_size_only() {
    let memory = Memory::new(LEN);
    let ctx = context(&memory, 0);
    let cl = client(ctx);
    let p = alloc_in(cl, 100);
    let mut s = older::<4>();
    let mut k = older::<3>();
    // SAFETY: each holds the bytes its size says; one thread uses the client.
    unsafe {
        assert_eq!(
            memvisor_context_get_stats(ctx, s.as_mut_ptr().cast()),
            Status::Ok
        );
        assert_eq!(
            memvisor_client_get_stats(cl, k.as_mut_ptr().cast()),
            Status::Ok
        );
    }
    assert_eq!(*s, [4 * size_of::<usize>(), LEN, CHUNK, LEN / CHUNK]);
    assert_eq!(*k, [3 * size_of::<usize>(), CHUNK, 112]);
    // SAFETY: a live block of the client.
    let st = unsafe { memvisor_client_free(cl, p, ptr::null_mut()) };
    assert_eq!(st, Status::Ok);
    // SAFETY: the client is used on this thread alone, and its blocks not after.
    assert_eq!(unsafe { memvisor_client_delete(cl) }, Status::Ok);
    assert_eq!(memvisor_context_delete(ctx), Status::Ok);
}

/// The context statistics of `ctx`.
fn context_stats(ctx: Context) -> ContextStats {
    let mut s = ContextStats {
        size: size_of::<ContextStats>(),
        ..ContextStats::default()
    };
    // SAFETY: `s` is writable with its size set.
    let st = unsafe { memvisor_context_get_stats(ctx, &mut s) };
    assert_eq!(st, Status::Ok);
    s
}

#[test]
fn context_create_over_a_live_contexts_memory_block_in_use_nothing_changed() {
    // One block cut in three: a context over the middle third; every block that shares a
    // byte with it is refused, the thirds beside it are not.
    let memory = Memory::new(3 * LEN);
    let c = config(0);
    let middle = memory.ptr.wrapping_add(LEN);
    let mut live = Context::default();
    // SAFETY: the middle third is ours until `live` is deleted below.
    let st = unsafe { memvisor_context_create(middle.cast(), LEN, &c, &mut live) };
    assert_eq!(st, Status::Ok);
    let cl = client(live);
    let block = alloc_in(cl, 100);
    let before = context_stats(live);
    let overlapping = [
        (middle, LEN),
        (middle, 1),
        (middle.wrapping_add(LEN - 1), LEN),
        (middle.wrapping_add(LEN / 2), LEN / 4),
        (memory.ptr, LEN + 1),
        (memory.ptr, 3 * LEN),
        (block.cast::<u8>(), CHUNK / 2),
    ];
    for (at, len) in overlapping {
        let mut ctx = Context::default();
        // SAFETY: refused before the block is used; `c` and `ctx` are valid locals.
        let st = unsafe { memvisor_context_create(at.cast(), len, &c, &mut ctx) };
        assert_eq!(st, Status::BlockInUse, "at {at:p} len {len:#x}");
        assert_eq!(ctx, Context::default(), "a refused create wrote its output");
    }
    assert_eq!(context_stats(live), before);
    // SAFETY: `block` is a live block of `cl`; no other thread uses the client.
    let st = unsafe { memvisor_client_free(cl, block, ptr::null_mut()) };
    assert_eq!(st, Status::Ok);
    // The thirds beside it touch it without sharing a byte.
    for at in [memory.ptr, middle.wrapping_add(LEN)] {
        let mut ctx = Context::default();
        // SAFETY: that third is ours and no context uses it; deleted below.
        let st = unsafe { memvisor_context_create(at.cast(), LEN, &c, &mut ctx) };
        assert_eq!(st, Status::Ok, "at {at:p}");
        assert_eq!(memvisor_context_delete(ctx), Status::Ok);
    }
    // SAFETY: the client is used on this thread alone, and its blocks not after.
    assert_eq!(unsafe { memvisor_client_delete(cl) }, Status::Ok);
    assert_eq!(memvisor_context_delete(live), Status::Ok);
    // Deleted, its memory is the caller's again: a new context may use it.
    let mut again = Context::default();
    // SAFETY: no context uses the block any more; deleted below.
    let st = unsafe { memvisor_context_create(memory.ptr.cast(), 3 * LEN, &c, &mut again) };
    assert_eq!(st, Status::Ok);
    assert_eq!(memvisor_context_delete(again), Status::Ok);
}

#[test]
fn context_create_inside_a_reserved_context_block_in_use() {
    let c = config(0);
    let mut reserved = Context::default();
    // SAFETY: `c` and `reserved` are valid locals.
    let st = unsafe { memvisor_context_create_reserved(LEN, &c, &mut reserved) };
    assert_eq!(st, Status::Ok);
    let cl = client(reserved);
    // A block of the reservation (the whole chunk a block larger than a chunk's half takes).
    let block = alloc_in(cl, 2 * CHUNK);
    let before = context_stats(reserved);
    let mut ctx = Context::default();
    // SAFETY: refused before the block is used; `c` and `ctx` are valid locals.
    let st = unsafe { memvisor_context_create(block, 2 * CHUNK, &c, &mut ctx) };
    assert_eq!(st, Status::BlockInUse);
    assert_eq!(ctx, Context::default());
    assert_eq!(context_stats(reserved), before);
    // SAFETY: the client is used on this thread alone, and its blocks not after.
    assert_eq!(unsafe { memvisor_client_delete(cl) }, Status::Ok);
    assert_eq!(memvisor_context_delete(reserved), Status::Ok);
}

#[test]
fn reserved_contexts_made_and_deleted_on_threads_never_block_in_use() {
    // A deleted context's reservation is unclaimed before it is released, so another thread's
    // new reservation, which the system may place at the same addresses at once, is never
    // refused.
    let rounds = if cfg!(miri) { 3 } else { 300 };
    let c = config(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..rounds {
                    let mut ctx = Context::default();
                    // SAFETY: `c` and `ctx` are valid locals.
                    let st = unsafe { memvisor_context_create_reserved(LEN, &c, &mut ctx) };
                    assert_eq!(st, Status::Ok);
                    assert_eq!(memvisor_context_delete(ctx), Status::Ok);
                }
            });
        }
    });
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
        let ctx = context(&memory, 0);
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
                            // SAFETY: the client is used on this thread alone, and its blocks not
                            // after.
                            assert_eq!(unsafe { memvisor_client_delete(cl) }, Status::Ok);
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

/// `memvisor_context_create` checks a block against the live contexts' memory before it lays
/// chunks out over it: a block too small for one chunk is `BLOCK_IN_USE` where it overlaps a
/// live context and `BLOCK_TOO_SMALL` elsewhere, as its docs say.
#[test]
fn context_create_too_small_block_in_use_is_block_in_use() {
    let memory = Memory::new(LEN);
    let spare = Memory::new(LEN);
    let live = context(&memory, 0);
    let c = config(0);
    let mut ctx = Context { id: 7 };
    // SAFETY: the blocks outlive any context made over them (none is); `ctx` is writable.
    let answers = unsafe {
        [
            memvisor_context_create(memory.ptr.cast(), CHUNK / 2, &c, &mut ctx),
            memvisor_context_create(spare.ptr.cast(), CHUNK / 2, &c, &mut ctx),
        ]
    };
    assert_eq!(answers, [Status::BlockInUse, Status::BlockTooSmall]);
    assert_eq!(ctx.id, 7);
    assert_eq!(memvisor_context_delete(live), Status::Ok);
}

/// A deleted client's arena identifier goes to the next client of the context, and maybe its
/// slot too: the deleted client's handle stays refused with `INVALID_HANDLE` (outputs left
/// alone), and the context names the new client, by its own handle, as the owner of its
/// blocks.
#[test]
fn stale_client_handle_refused_after_its_id_is_reused() {
    let memory = Memory::new(LEN);
    let ctx = context(&memory, 0);
    for _ in 0..if cfg!(miri) { 3 } else { 100 } {
        let old = client(ctx);
        let p = alloc_in(old, 64);
        let mut owner = Client::default();
        // SAFETY: `owner` is writable; `p` is only looked up.
        let found = unsafe { memvisor_context_owner(ctx, p, &mut owner) };
        assert_eq!(found, Status::Ok);
        assert_eq!(owner, old);
        // SAFETY: no other thread uses the client; its blocks are not used after.
        assert_eq!(unsafe { memvisor_client_delete(old) }, Status::Ok);
        let new = client(ctx);
        assert_ne!(new, old);
        let q = alloc_in(new, 64);
        // SAFETY: `owner` is writable; `q` is only looked up.
        let found = unsafe { memvisor_context_owner(ctx, q, &mut owner) };
        assert_eq!(found, Status::Ok);
        assert_eq!(owner, new);
        let mut out = p;
        let mut owns = true;
        let mut stats = ClientStats {
            size: size_of::<ClientStats>(),
            live_blocks: 7,
            ..ClientStats::default()
        };
        // SAFETY: outputs writable; no other thread uses the clients.
        let answers = unsafe {
            [
                memvisor_alloc(old, 64, &mut out),
                memvisor_client_owns(old, q, &mut owns),
                memvisor_client_get_stats(old, &mut stats),
                memvisor_client_trim(old),
                memvisor_client_delete(old),
            ]
        };
        assert_eq!(answers, [Status::InvalidHandle; 5]);
        assert_eq!((out, owns, stats.live_blocks), (p, true, 7));
        // SAFETY: as above.
        assert_eq!(unsafe { memvisor_client_delete(new) }, Status::Ok);
    }
    assert_eq!(memvisor_context_delete(ctx), Status::Ok);
}
