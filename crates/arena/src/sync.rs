//! The atomics of the chunk hand-out, switched to loom's under `cfg(loom)` so that the loom
//! tests can explore every interleaving of concurrent hand-out and return.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{
    AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

/// Lets other threads run while this one waits for a chunk out of the free set for a moment
/// ([`Arena::decommit_free_chunks`](crate::Arena::decommit_free_chunks)).
pub(crate) fn pause() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(all(not(loom), feature = "std"))]
    std::thread::yield_now();
    #[cfg(all(not(loom), not(feature = "std")))]
    core::hint::spin_loop();
}
