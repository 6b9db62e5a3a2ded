//! The atomics of the chunk hand-out, switched to loom's under `cfg(loom)` so that the loom
//! tests can explore every interleaving of concurrent hand-out and return.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

/// One turn of a wait for a flag another thread holds for a few instructions: a spin hint, a
/// yield to the scheduler with `std` (the holder may have been preempted), a yield to loom's
/// scheduler under loom.
#[inline]
pub(crate) fn spin() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(all(not(loom), feature = "std"))]
    std::thread::yield_now();
    #[cfg(all(not(loom), not(feature = "std")))]
    core::hint::spin_loop();
}

/// How long a taker that finds no chunk free waits for the chunks
/// [`Arena::decommit_free_chunks`](crate::Arena::decommit_free_chunks) has out of the free set
/// before it is refused: far over a decommit's one system call, and over the time a loaded
/// machine usually leaves a thread ready but not running.
#[cfg(all(not(loom), feature = "std"))]
pub(crate) const DECOMMIT_WAIT: core::time::Duration = core::time::Duration::from_millis(100);

/// A taker's wait for a chunk out of the free set for its decommit: a few yields (a decommit
/// running on another core is back in microseconds), then sleeps doubling from 10 µs to 1 ms,
/// which leave the core to a decommitting thread waiting for it and keep many waiting takers
/// from spinning, until [`DECOMMIT_WAIT`] has passed.
pub(crate) struct DecommitWait {
    #[cfg(all(not(loom), feature = "std"))]
    start: std::time::Instant,
    pauses: u32,
}

/// Yields of a [`DecommitWait`] before it sleeps.
#[cfg(all(not(loom), feature = "std"))]
const YIELDS: u32 = 64;

impl DecommitWait {
    pub(crate) fn new() -> Self {
        Self {
            #[cfg(all(not(loom), feature = "std"))]
            start: std::time::Instant::now(),
            pauses: 0,
        }
    }

    /// Lets other threads run for a moment; `false`, without pausing, once the wait is over.
    pub(crate) fn pause(&mut self) -> bool {
        self.pauses = self.pauses.saturating_add(1);
        #[cfg(all(not(loom), feature = "std"))]
        {
            let waited = self.start.elapsed();
            if waited >= DECOMMIT_WAIT {
                return false;
            }
            if self.pauses <= YIELDS {
                std::thread::yield_now();
            } else {
                let doublings = (self.pauses - YIELDS - 1).min(7);
                let nap = core::time::Duration::from_micros(10 << doublings)
                    .min(core::time::Duration::from_millis(1));
                std::thread::sleep(nap.min(DECOMMIT_WAIT - waited));
            }
            true
        }
        // Loom explores every order of a few pauses; time does not pass there.
        #[cfg(loom)]
        {
            loom::thread::yield_now();
            self.pauses <= 3
        }
        // Without `std` there is no `decommit_free_chunks`, so nothing is ever out to wait for.
        #[cfg(all(not(loom), not(feature = "std")))]
        false
    }
}
