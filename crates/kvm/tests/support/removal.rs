//! Removals held open by a later region listener, so that tests can call into the slots while
//! KVM has deleted a slot that the address space still holds.

use std::io::Write;
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memvisor_space::{AddressSpace, ChangeKind, ListenerError, RegionEvent, RegionListener};
use vm_memory::GuestAddress;

/// What a later listener holding a removal open ([`during_removal`]) answers once the calls
/// made during the removal are done.
pub enum Answer {
    Accept,
    Refuse,
    /// Runs this (on the removing thread, inside the listener), then refuses.
    RefuseAfter(Box<dyn FnOnce() + Send>),
}

/// Removes the `size` bytes at `base` on another thread, with a region listener after the
/// slots' ones that, once KVM deleted the slot, waits for `during` to run here and then answers
/// as `answer` says. Whether the removal went through.
pub fn during_removal(
    space: &AddressSpace,
    base: GuestAddress,
    size: u64,
    answer: Answer,
    during: impl FnOnce(),
) -> bool {
    let (at_removal_tx, at_removal) = channel();
    let (answer_tx, answers) = channel::<Answer>();
    let (at_removal_tx, answers) = (Mutex::new(at_removal_tx), Mutex::new(answers));
    let listener: Arc<dyn RegionListener> = Arc::new(
        move |event: &RegionEvent<'_>| -> Result<(), ListenerError> {
            if event.kind != ChangeKind::Removed || event.region.base() != base {
                return Ok(());
            }
            at_removal_tx.lock().unwrap().send(()).unwrap();
            // No answer (the test failed meanwhile): refuse.
            match answers.lock().unwrap().recv().unwrap_or(Answer::Refuse) {
                Answer::Accept => Ok(()),
                Answer::Refuse => Err("removal refused".into()),
                Answer::RefuseAfter(before) => {
                    before();
                    Err("removal refused".into())
                }
            }
        },
    );
    space.add_listener(Arc::clone(&listener)).unwrap();
    let removed = std::thread::scope(|s| {
        let (tid_tx, tid) = channel();
        let removal = s.spawn(move || {
            // SAFETY: `gettid` has no preconditions.
            tid_tx.send(unsafe { libc::gettid() }).unwrap();
            space.remove_region(base, size)
        });
        let tid = tid.recv().unwrap();
        // Dropped when `during` fails: the listener then refuses, and the removal ends.
        let answer_tx = answer_tx;
        // The removal reaches the listener, or ends without reaching it (refused before, or
        // panicking): that fails the test at once, with the removal's answer or panic. Stuck
        // on its way there (asleep on a lock, not run for `STUCK`), or not there within
        // `LIMIT`, it fails the test too, by aborting: the scope would wait for ever for its
        // thread.
        let start = Instant::now();
        let mut progress = Progress::of(tid);
        loop {
            match at_removal.recv_timeout(Duration::from_millis(10)) {
                Ok(()) => break,
                Err(_) if removal.is_finished() => match removal.join() {
                    Ok(answer) => panic!("the removal never reached the listener: {answer:?}"),
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                Err(_) => {
                    if let Some(blocked) = progress.stuck(tid) {
                        abort_stuck(&format!(
                            "the removal of {size:#x} bytes at {:#x} is stuck before its \
                             listener: its thread ({tid}) has been asleep on a lock without \
                             running for {STUCK:?} ({blocked})",
                            base.0
                        ));
                    }
                    if start.elapsed() >= LIMIT {
                        abort_stuck(&format!(
                            "the removal of {size:#x} bytes at {:#x} did not reach its \
                             listener within {LIMIT:?}",
                            base.0
                        ));
                    }
                }
            }
        }
        during();
        answer_tx.send(answer).unwrap();
        removal.join().unwrap().is_ok()
    });
    space.remove_listener(&listener).unwrap();
    removed
}

/// How long the removing thread may sleep on a lock of this process (a futex: a mutex, condition
/// variable or channel) without running at all before its listener is called: a removal waits
/// for no lock that long (one held for ever is a deadlock), while a thread that is only slow, on
/// a loaded machine, is runnable or keeps running now and then. A sleep in the kernel (KVM's
/// deletion of a slot waits in `synchronize_srcu` for the slot's readers) is not counted, however
/// long: a removal that never comes back from the kernel is failed at `LIMIT`. (In 740 removals
/// of the kvm tests run beside a busy loop on this 2-core machine under nested KVM, the longest
/// took 0.12 s, and the removing thread never slept 10 ms unchanged.)
pub const STUCK: Duration = Duration::from_secs(5);

/// How long a removal that keeps running may take to reach its listener.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Ends the test process with `why` on its standard error, past the test harness's capture: a
/// removal that never returns cannot be joined, so no panic could end the test.
fn abort_stuck(why: &str) -> ! {
    let _ = writeln!(
        std::io::stderr(),
        "during_removal: {why}; aborting the test process"
    );
    std::process::abort()
}

/// What the kernel says of a thread of this process: whether it is asleep on a lock of this
/// process, and its counts of CPU time and context switches, which change whenever it runs.
#[derive(PartialEq, Eq)]
struct Sample {
    asleep_on_lock: bool,
    counts: [u64; 4],
}

impl Sample {
    /// The thread's state (`/proc/self/task/<tid>/stat`: `S` or `D` for asleep, then user and
    /// system time), the system call it sleeps in (`syscall`: the futex call for a lock) and its
    /// context switches (`status`), or `None` if any cannot be read.
    fn of(tid: libc::pid_t) -> Option<(Self, String)> {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
        // The fields after the command name, which may hold spaces, ends with the last ')'.
        let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        let state = *fields.first()?;
        let switches = |key: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line[key.len()..].trim().parse().ok()
        };
        let syscall = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).ok()?;
        // The call's number, or `running`, or -1 when the thread sleeps outside any call.
        let in_futex = syscall
            .split_whitespace()
            .next()
            .and_then(|call| call.parse::<libc::c_long>().ok())
            == Some(libc::SYS_futex);
        let sample = Self {
            asleep_on_lock: (state == "S" || state == "D") && in_futex,
            counts: [
                fields.get(11)?.parse().ok()?,
                fields.get(12)?.parse().ok()?,
                switches("voluntary_ctxt_switches:")?,
                switches("nonvoluntary_ctxt_switches:")?,
            ],
        };
        let wchan =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/wchan")).unwrap_or_default();
        Some((
            sample,
            format!("state {state}, in the futex call, waiting in {wchan:?}"),
        ))
    }
}

/// The removing thread's last sample, and since when it has not changed.
struct Progress {
    last: Option<Sample>,
    since: Instant,
}

impl Progress {
    fn of(tid: libc::pid_t) -> Self {
        Self {
            last: Sample::of(tid).map(|(sample, _)| sample),
            since: Instant::now(),
        }
    }

    /// Samples the thread again: `Some` (its state, for the message) once it has been asleep on
    /// a lock with the same counts for `STUCK`.
    fn stuck(&mut self, tid: libc::pid_t) -> Option<String> {
        let Some((sample, state)) = Sample::of(tid) else {
            self.last = None;
            return None;
        };
        if !sample.asleep_on_lock || self.last.as_ref() != Some(&sample) {
            self.last = Some(sample);
            self.since = Instant::now();
            return None;
        }
        (self.since.elapsed() >= STUCK).then_some(state)
    }
}
