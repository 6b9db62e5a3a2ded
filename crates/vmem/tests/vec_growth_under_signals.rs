//! Growth while signals keep arriving, as a language VM's profiler or timer signals do: a
//! handler installed without `SA_RESTART`, so that any system call a signal interrupts would
//! fail with `EINTR`, and another thread signalling the growing thread without pause. Commits
//! (`mprotect`), the kernel's populate (`MADV_POPULATE_WRITE`, `MADV_POPULATE_READ`) and the
//! vectors' growth must all succeed: none of them gives up for a signal that is not fatal.
//! Linux only.
#![cfg(all(target_os = "linux", feature = "std", not(miri)))]

use std::sync::atomic::{AtomicBool, Ordering};

use memvisor_vmem::vec::{Builder, ConcurrentVec, Vec};
use memvisor_vmem::{Protection, Reservation};

extern "C" fn ignore(_: libc::c_int) {}

/// Runs `work` on this thread while another thread sends it `SIGUSR1` without pause; returns
/// `work`'s result and how many signals were sent.
fn under_signals<R>(work: impl FnOnce() -> R) -> (R, u64) {
    // SAFETY: `sigaction` is plain data; all zeros is a valid value.
    let mut action: libc::sigaction = unsafe { core::mem::zeroed() };
    action.sa_sigaction = ignore as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // No `SA_RESTART`: an interrupted call returns `EINTR`.
    action.sa_flags = 0;
    // SAFETY: installs a handler that does nothing, for a signal nothing else in this process
    // uses.
    let installed =
        unsafe { libc::sigaction(libc::SIGUSR1, &raw const action, core::ptr::null_mut()) };
    assert_eq!(installed, 0);
    // SAFETY: the calling thread's own handle.
    let target = unsafe { libc::pthread_self() };
    let stop = AtomicBool::new(false);
    /// Stops the signaller when dropped, so that a `work` that panics fails the test instead
    /// of leaving the scope waiting for a signaller that never stops.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        let signaller = s.spawn(|| {
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: `target` is this scope's caller, which lives until the scope ends
                // (the loop stops before).
                assert_eq!(unsafe { libc::pthread_kill(target, libc::SIGUSR1) }, 0);
                sent += 1;
            }
            sent
        });
        let stopping = Stop(&stop);
        let result = work();
        drop(stopping);
        (result, signaller.join().unwrap())
    })
}

#[test]
fn growth_and_prefault_succeed_while_signals_arrive() {
    let len = 16 << 20;
    let ((), sent) = under_signals(|| {
        let mut v: Vec<u64> = Builder::new(len / 8).build().unwrap();
        let c: ConcurrentVec<u64> = Builder::new(len / 8).build_concurrent().unwrap();
        for i in 0..(len / 8) as u64 / 16 {
            v.try_push(i).unwrap();
            c.try_push(i).unwrap();
        }
        v.try_reserve_exact(len / 8 - v.len()).unwrap();
        let mut r = Reservation::new(len).unwrap();
        r.commit(0, len).unwrap();
        r.prefault(0, len).unwrap();
        r.protect(0, len, Protection::Read).unwrap();
        r.prefault_read(0, len).unwrap();
        assert!(v.iter().copied().eq(0..(len / 8) as u64 / 16));
        assert_eq!(c.count(), len / 128);
    });
    assert!(sent > 0);
}
