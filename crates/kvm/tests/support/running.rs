//! The test guest running on a thread of its own, counting its passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use kvm_ioctls::VcpuFd;
use memvisor_space::AddressSpace;

use super::{Stop, run};

/// The guest on its own thread: how many passes it finished, and a flag that stops it at the
/// end of its current pass. Dropped without [`stop`](Self::stop) or [`join`](Self::join) (a
/// test failing meanwhile), it stops the guest, which would otherwise run on beside the test
/// binary's later tests.
pub struct Running {
    passes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// `None` once joined.
    thread: Option<thread::JoinHandle<Stop>>,
}

impl Running {
    /// Runs `vcpu` over `space` on a new thread.
    pub fn start(mut vcpu: VcpuFd, space: &AddressSpace) -> Self {
        let passes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s, space) = (Arc::clone(&passes), Arc::clone(&stop), space.clone());
        let thread = thread::spawn(move || {
            run(&mut vcpu, &space, |n| {
                p.store(n, Ordering::SeqCst);
                s.load(Ordering::SeqCst)
            })
        });
        Self {
            passes,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until the guest finished `n` passes in all: false if it stopped first or
    /// `patience` ran out.
    pub fn wait_passes(&self, n: u64, patience: Duration) -> bool {
        let start = Instant::now();
        while self.passes() < n {
            if self.is_finished() || start.elapsed() > patience {
                return false;
            }
            thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// The passes the guest finished so far.
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::SeqCst)
    }

    /// Whether the guest's thread ended (the guest stopped on its own or was stopped).
    pub fn is_finished(&self) -> bool {
        self.thread
            .as_ref()
            .is_none_or(thread::JoinHandle::is_finished)
    }

    /// Stops the guest at the end of its pass and gives how it stopped.
    pub fn stop(self) -> Stop {
        self.stop.store(true, Ordering::SeqCst);
        self.join()
    }

    /// Waits for the guest to stop on its own and gives how it stopped.
    pub fn join(mut self) -> Stop {
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
