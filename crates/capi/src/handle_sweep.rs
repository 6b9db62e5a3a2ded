//! The sweep of every function that takes a handle, called with each argument error it can
//! judge alone: shared by the tests of a handle that names nothing live (deleted, or never
//! handed out) and of a poisoned context's handles, which must answer alike, and the test of
//! the dead handles.

use std::ffi::c_void;

use crate::status::Status;
use crate::types::{Client, ClientStats, Config, Context, ContextStats};

/// Calls every function that takes `context` or `client` with each argument it judges alone
/// made bad (a null output or pointer, a structure size no header has, a size no block can
/// have, a bad alignment), `p` a block looked up only, and checks that each answers that
/// argument's status, whatever the handle, and writes nothing.
pub(crate) fn argument_errors_come_first(context: Context, client: Client, p: *mut c_void) {
    let null = std::ptr::null_mut::<c_void>();
    let mut q = std::ptr::null_mut();
    let mut owner = Client { id: 7 };
    let (mut size, mut owns) = (7usize, false);
    // A size under the `size` field: no version of the structures has it.
    let mut cstats = ClientStats {
        size: 1,
        ..ClientStats::default()
    };
    let mut xstats = ContextStats {
        size: 1,
        ..ContextStats::default()
    };
    // SAFETY: every output is null or writable; no other thread uses the client; `p` is only
    // looked up.
    let answers = unsafe {
        [
            crate::memvisor_alloc(client, 64, null.cast()),
            crate::memvisor_alloc(client, usize::MAX, &mut q),
            crate::memvisor_alloc(client, memvisor_arena::MAX_BLOCK_SIZE + 1, &mut q),
            crate::memvisor_alloc_aligned(client, 64, 64, null.cast()),
            crate::memvisor_alloc_aligned(client, 64, 3, &mut q),
            crate::memvisor_alloc_aligned(client, usize::MAX, 64, &mut q),
            crate::memvisor_alloc_aligned(client, memvisor_arena::MAX_BLOCK_SIZE + 1, 64, &mut q),
            crate::memvisor_client_free(client, null, null.cast()),
            crate::memvisor_client_owns(client, p, null.cast()),
            crate::memvisor_client_owns(client, null, &mut owns),
            crate::memvisor_size_of(client, p, null.cast()),
            crate::memvisor_size_of(client, null, &mut size),
            crate::memvisor_client_get_stats(client, null.cast()),
            crate::memvisor_client_get_stats(client, &mut cstats),
            crate::memvisor_free(context, null, null.cast()),
            crate::memvisor_context_owner(context, p, null.cast()),
            crate::memvisor_context_owner(context, null, &mut owner),
            crate::memvisor_context_accepted_flags(context, null.cast()),
            crate::memvisor_context_get_stats(context, null.cast()),
            crate::memvisor_context_get_stats(context, &mut xstats),
            crate::memvisor_client_create(context, 0, null.cast()),
        ]
    };
    use Status::{NullPointer, StructSize, TooLarge, UnsupportedAlignment};
    assert_eq!(
        answers,
        [
            NullPointer,
            TooLarge,
            TooLarge,
            NullPointer,
            UnsupportedAlignment,
            TooLarge,
            TooLarge,
            NullPointer,
            NullPointer,
            NullPointer,
            NullPointer,
            NullPointer,
            NullPointer,
            StructSize,
            NullPointer,
            NullPointer,
            NullPointer,
            NullPointer,
            NullPointer,
            StructSize,
            NullPointer,
        ],
        "{context:?} {client:?}"
    );
    assert!(q.is_null());
    assert_eq!((owner.id, size, owns), (7, 7, false));
    assert_eq!((cstats.size, xstats.size), (1, 1));
}

/// A handle that names no live context or client (deleted, or never handed out) is judged
/// after the arguments each function can judge alone: every function answers such an
/// argument's status whatever its handle (a C caller that passes a null output and a dead
/// handle gets `NULL_POINTER`), writes nothing, and answers `INVALID_HANDLE` once its other
/// arguments are good.
#[test]
fn dead_handles_answer_argument_errors_first_then_invalid_handle() {
    let mut config = Config::default();
    // SAFETY: `config` is writable for its size.
    let status = unsafe { crate::memvisor_config_init_sized(&mut config, size_of::<Config>()) };
    assert_eq!(status, Status::Ok);
    config.chunk_size = 64 << 10;
    let mut live = Context::default();
    // SAFETY: `config` is readable, `live` writable.
    let made = unsafe { crate::memvisor_context_create_reserved(4 << 16, &config, &mut live) };
    assert_eq!(made, Status::Ok);
    let mut deleted_client = Client::default();
    let mut p = std::ptr::null_mut();
    // SAFETY: outputs writable; the client is used on this thread alone, and its blocks not
    // after its delete.
    let answers = unsafe {
        [
            crate::memvisor_client_create(
                live,
                crate::types::MEMVISOR_UNLIMITED,
                &mut deleted_client,
            ),
            crate::memvisor_alloc(deleted_client, 64, &mut p),
            crate::memvisor_client_delete(deleted_client),
        ]
    };
    assert_eq!(answers, [Status::Ok; 3]);
    assert_eq!(crate::memvisor_context_delete(live), Status::Ok);
    let never = (Context { id: 0 }, Client { id: u64::MAX });
    for (ctx, cl) in [(live, deleted_client), never] {
        argument_errors_come_first(ctx, cl, p);
        // With good arguments, the handle is what is refused.
        let mut q = std::ptr::null_mut();
        let mut owner = Client { id: 7 };
        let (mut flags, mut size, mut owns) = (7u32, 7usize, false);
        let mut cstats = ClientStats {
            size: size_of::<ClientStats>(),
            ..ClientStats::default()
        };
        let mut xstats = ContextStats {
            size: size_of::<ContextStats>(),
            ..ContextStats::default()
        };
        // SAFETY: every output is writable; `p` is only looked up.
        let answers = unsafe {
            [
                crate::memvisor_alloc(cl, 64, &mut q),
                crate::memvisor_alloc_aligned(cl, 64, 64, &mut q),
                crate::memvisor_client_free(cl, p, &mut size),
                crate::memvisor_client_owns(cl, p, &mut owns),
                crate::memvisor_size_of(cl, p, &mut size),
                crate::memvisor_client_trim(cl),
                crate::memvisor_client_get_stats(cl, &mut cstats),
                crate::memvisor_client_delete(cl),
                crate::memvisor_free(ctx, p, &mut size),
                crate::memvisor_context_owner(ctx, p, &mut owner),
                crate::memvisor_context_accepted_flags(ctx, &mut flags),
                crate::memvisor_context_get_stats(ctx, &mut xstats),
                crate::memvisor_context_trim(ctx),
                crate::memvisor_client_create(ctx, 0, &mut owner),
                crate::memvisor_context_delete(ctx),
            ]
        };
        assert_eq!(answers, [Status::InvalidHandle; 15], "{ctx:?} {cl:?}");
        assert!(q.is_null());
        assert_eq!((owner.id, flags, size, owns), (7, 7, 7, false));
        assert_eq!(
            (cstats.size, xstats.size),
            (size_of::<ClientStats>(), size_of::<ContextStats>())
        );
    }
}
