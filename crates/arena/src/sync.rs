//! The atomics of the chunk hand-out, switched to loom's under `cfg(loom)` so that the loom
//! tests can explore every interleaving of concurrent hand-out and return.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
