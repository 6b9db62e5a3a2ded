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
/// test failing meanwhile), it stops the guest and waits for its thread, which would otherwise
/// run on beside the test binary's later tests; see its `Drop` for what fails then.
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

/// How long a dropped guest may take to end its pass (a pass takes milliseconds: the guest
/// leaves `KVM_RUN` at the end of each, and at a bad host word or an access where no memory is).
const DROP_PATIENCE: Duration = Duration::from_secs(30);

impl Drop for Running {
    /// Stops the guest and waits for its thread to end. Unless the test is failing already,
    /// that fails it when the guest stopped otherwise than asked (a bad host word, an MMIO
    /// access, its thread's panic, which a test that never joined would not see) or did not
    /// end within [`DROP_PATIENCE`].
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let Some(thread) = self.thread.take() else {
            return;
        };
        let start = Instant::now();
        while !thread.is_finished() && start.elapsed() < DROP_PATIENCE {
            thread::sleep(Duration::from_millis(1));
        }
        if thread::panicking() {
            // The test fails with its own message; a panic here would abort the binary.
            if !thread.is_finished() {
                eprintln!("the guest did not stop within {DROP_PATIENCE:?} of its drop");
            }
            return;
        }
        assert!(
            thread.is_finished(),
            "the guest did not stop within {DROP_PATIENCE:?} of its drop"
        );
        match thread.join() {
            Ok(Stop::Passes(_)) => {}
            Ok(stop) => panic!("the guest, dropped without a join, had stopped: {stop:?}"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}
