//! System calls the kernel refuses on demand, one at a time: a seccomp filter sends every call
//! of the chosen numbers to a supervisor thread of the same process (`SECCOMP_RET_USER_NOTIF`),
//! which lets each go on (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`) except the one it was told to
//! refuse: the `n`th whose first argument (the address, for the memory calls) lies in a given
//! range. So a test can fail the first, second, ... call of a multi-step operation in turn, and
//! lift the refusal afterwards, which a plain filter (it cannot count, and stays for good)
//! cannot do. The filter is the installing thread's and its children's, and is never removed:
//! install it in a process of its own (see [`in_child`]). Linux on x86-64, kernel 5.5 or later;
//! [`Refuser::install`] answers `None` where the kernel has no such filter. Each test file that
//! uses it runs its one test in a child process ([`in_child`]) and skips it under a sanitizer
//! ([`under_sanitizer`]).
//!
//! [`Refuser::each_call_in_turn`] is the loop such a test runs: each call of an operation
//! refused alone ([`Refusal::Nth`]) and with every call after it ([`Refusal::FromNth`]), up to
//! a run that refuses nothing, and the counts ([`InTurn`]) the test asserts on: that some call
//! was refused, and that the operation's last call was reached.
//!
//! The supervisor allocates nothing while it serves: a filtered thread may be inside the heap's
//! own `mmap`, holding its lock.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

/// What the supervisor is told; shared with it.
#[derive(Debug, Default)]
struct Plan {
    /// Calls whose first argument lies in `lo..hi` count; the others always go on.
    lo: AtomicUsize,
    hi: AtomicUsize,
    /// The index (from 0) of the counted call to refuse; `u64::MAX`: none.
    refuse: AtomicU64,
    /// Counted calls so far.
    seen: AtomicU64,
    /// Whether the calls the heap makes are left alone: an `mmap` counts only if it is fixed
    /// or of a file, an `mprotect` never (the heap grows its arenas with it).
    spare_heap: AtomicBool,
    /// Whether every counted call from the `refuse`th on is refused, not only that one.
    from_on: AtomicBool,
    /// The errno of the refusal.
    errno: AtomicI32,
    /// Whether the refusal was made.
    refused: AtomicBool,
    /// The call number of the (first) refused call.
    refused_nr: AtomicI32,
}

/// The supervisor of a filter installed on the calling thread.
#[derive(Debug)]
pub struct Refuser {
    plan: Arc<Plan>,
}

impl Refuser {
    /// Installs, on this thread (and the threads it starts from now on), a filter that hands
    /// every call of the numbers in `calls` to a supervisor thread; at first every call goes
    /// on. `None` where the kernel refuses such a filter.
    pub fn install(calls: &[libc::c_long]) -> Option<Self> {
        let plan = Arc::new(Plan {
            refuse: AtomicU64::new(u64::MAX),
            ..Plan::default()
        });
        // A channel of one preallocated slot: sending on it allocates nothing, as the sending
        // thread is filtered by then and its heap's `mmap` would wait for a supervisor that
        // waits for the descriptor (an unbounded channel allocates its first block on the
        // first send).
        let (fd_tx, fd_rx) = mpsc::sync_channel::<i32>(1);
        let served = Arc::clone(&plan);
        // Started before the filter, so its own calls are not filtered.
        std::thread::spawn(move || {
            let Ok(fd) = fd_rx.recv() else { return };
            supervise(fd, &served);
        });
        let mut program = filter(calls);
        let prog = libc::sock_fprog {
            len: u16::try_from(program.len()).unwrap(),
            filter: program.as_mut_ptr(),
        };
        // SAFETY: plain `prctl` and `seccomp` calls; `prog` points at a live program.
        let fd = unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &raw const prog,
            )
        };
        if fd < 0 {
            eprintln!(
                "SKIPPED: no seccomp user notification here ({})",
                std::io::Error::last_os_error()
            );
            return None;
        }
        fd_tx.send(i32::try_from(fd).unwrap()).unwrap();
        Some(Self { plan })
    }

    /// From now on, refuses with `errno` the `index`th call (from 0) whose first argument
    /// lies in `range`, counting from this call; the others go on.
    pub fn refuse_nth(&self, range: core::ops::Range<usize>, index: u64, errno: i32) {
        self.plan.from_on.store(false, Ordering::SeqCst);
        self.arm(range, index, errno);
    }

    /// As [`refuse_nth`](Self::refuse_nth), but refuses every counted call from the
    /// `index`th on: a refusal whose undoing is refused too.
    pub fn refuse_from(&self, range: core::ops::Range<usize>, index: u64, errno: i32) {
        self.plan.from_on.store(true, Ordering::SeqCst);
        self.arm(range, index, errno);
    }

    fn arm(&self, range: core::ops::Range<usize>, index: u64, errno: i32) {
        self.plan.refuse.store(u64::MAX, Ordering::SeqCst);
        self.plan.lo.store(range.start, Ordering::SeqCst);
        self.plan.hi.store(range.end, Ordering::SeqCst);
        self.plan.seen.store(0, Ordering::SeqCst);
        self.plan.errno.store(errno, Ordering::SeqCst);
        self.plan.refused.store(false, Ordering::SeqCst);
        self.plan.refuse.store(index, Ordering::SeqCst);
    }

    /// Leaves alone the calls the heap makes (anonymous `mmap`s at an address of the
    /// kernel's choice, `mprotect`), so that the counted calls are the code's under test
    /// only; for calls whose first argument is not an address, with a range of everything.
    pub fn spare_heap(&self, spare: bool) {
        self.plan.spare_heap.store(spare, Ordering::SeqCst);
    }

    /// Lets every call go on again; returns the number of the (first) refused call, if one
    /// was.
    pub fn lift(&self) -> Option<libc::c_long> {
        self.plan.refuse.store(u64::MAX, Ordering::SeqCst);
        self.plan
            .refused
            .swap(false, Ordering::SeqCst)
            .then(|| libc::c_long::from(self.plan.refused_nr.load(Ordering::SeqCst)))
    }
}

/// Which counted calls a run refuses, from the `n`th on (from 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The `n`th only; the calls after it go on (an undoing that succeeds).
    Nth,
    /// The `n`th and every one after it: a refusal whose undoing is refused too.
    FromNth,
}

/// Both refusals, each call refused alone before it is refused with every call after it.
pub const EACH_REFUSAL: [Refusal; 2] = [Refusal::Nth, Refusal::FromNth];

/// One run of [`Refuser::each_call_in_turn`]: which call it refuses, and how.
#[derive(Debug)]
pub struct Turn<'a> {
    refuser: &'a Refuser,
    /// The index (from 0) of the first refused call among the counted ones.
    pub index: u64,
    /// Whether the calls after it are refused too.
    pub refusal: Refusal,
    errno: i32,
    /// The number of the first call refused, once [`refuse`](Self::refuse) has run.
    refused: Option<Option<libc::c_long>>,
}

impl Turn<'_> {
    /// `f`'s result, with this run's calls whose first argument lies in `range` refused as
    /// planned, and the number of the first call refused (`None`: the call made fewer counted
    /// calls than [`index`](Self::index) + 1, so nothing was refused). Every call goes on
    /// again when this returns, also when `f` panics. Called once per run.
    ///
    /// # Panics
    ///
    /// When called a second time in one run.
    pub fn refuse<T>(
        &mut self,
        range: core::ops::Range<usize>,
        f: impl FnOnce() -> T,
    ) -> (T, Option<libc::c_long>) {
        assert!(self.refused.is_none(), "one refusal per run");
        match self.refusal {
            Refusal::Nth => self.refuser.refuse_nth(range, self.index, self.errno),
            Refusal::FromNth => self.refuser.refuse_from(range, self.index, self.errno),
        }
        let lifted = Lifted(self.refuser);
        let out = f();
        let refused = lifted.0.lift();
        drop(lifted);
        self.refused = Some(refused);
        (out, refused)
    }
}

impl core::fmt::Display for Turn<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "call {}", self.index)?;
        if let Some(Some(nr)) = self.refused {
            write!(f, " (number {nr})")?;
        }
        if self.refusal == Refusal::FromNth {
            write!(f, " and every call after it")?;
        }
        write!(f, " refused")
    }
}

/// Lifts the refusal when dropped, so that a panicking call leaves no refusal armed.
struct Lifted<'a>(&'a Refuser);

impl Drop for Lifted<'_> {
    fn drop(&mut self) {
        self.0.lift();
    }
}

/// What refusing each call of an operation in turn came to: what a test asserts after
/// [`Refuser::each_call_in_turn`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InTurn {
    /// Runs in which a call was refused (each checked by `run`).
    pub refused: usize,
    /// The counted calls the operation makes: the index of the last call refused plus one; 0
    /// when it made none (the filter sees none of its calls, or the range missed them).
    pub calls: u64,
    /// Whether a run refused nothing, so the operation's every call was refused in turn;
    /// `false` when it makes more calls than the loop tried.
    pub reached_end: bool,
}

impl Refuser {
    /// Refuses each counted call of an operation in turn: for `n` = 0, 1, ... below
    /// `max_calls`, and each refusal of `refusals` in order at that `n`, `run` is called with
    /// a [`Turn`]; it sets the operation up, calls it under [`Turn::refuse`] (once) and checks
    /// what it left. The loop stops after the first run that refused nothing (`run` has
    /// checked the operation's success by then), or at `max_calls`; it returns the counts a
    /// test asserts on. A run that does not call [`Turn::refuse`] is a test's mistake: it
    /// panics.
    ///
    /// The loop checks nothing by itself: an operation the filter never sees (0 `calls`), or
    /// one making more calls than `max_calls` (`reached_end` false), runs without a failure, so
    /// a test must assert on the counts it returns. Dropping them unread is a warning:
    ///
    /// ```compile_fail
    /// #![deny(unused_must_use)]
    /// use memvisor_testkit::refused_calls::{EACH_REFUSAL, Refuser};
    ///
    /// fn unchecked(refuser: &Refuser) {
    ///     refuser.each_call_in_turn(&EACH_REFUSAL, 8, libc::ENOMEM, |turn| {
    ///         turn.refuse(0..1, || ());
    ///     });
    /// }
    /// ```
    ///
    /// # Panics
    ///
    /// When `run` panics, or returns without calling [`Turn::refuse`].
    #[must_use = "an operation that made no counted call, or more than `max_calls`, passes \
                  unless the counts are asserted on"]
    pub fn each_call_in_turn(
        &self,
        refusals: &[Refusal],
        max_calls: u64,
        errno: i32,
        mut run: impl FnMut(&mut Turn<'_>),
    ) -> InTurn {
        let mut counts = InTurn::default();
        for index in 0..max_calls {
            for &refusal in refusals {
                let mut turn = Turn {
                    refuser: self,
                    index,
                    refusal,
                    errno,
                    refused: None,
                };
                run(&mut turn);
                match turn.refused {
                    None => panic!("run {index} ({refusal:?}) called no Turn::refuse"),
                    Some(None) => {
                        counts.reached_end = true;
                        return counts;
                    }
                    Some(Some(_)) => {
                        counts.refused += 1;
                        counts.calls = index + 1;
                    }
                }
            }
        }
        counts
    }
}

/// The program: the calls of `calls` to the supervisor, every other call allowed. (Calls made
/// for another architecture's numbers are not expected from these tests.)
fn filter(calls: &[libc::c_long]) -> Vec<libc::sock_filter> {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: u16::try_from(code).unwrap(),
        jt: 0,
        jf: 0,
        k,
    };
    let mut program = vec![stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0)];
    let n = calls.len();
    for (i, &nr) in calls.iter().enumerate() {
        // On a match, skip the remaining tests and the allowing return.
        program.push(libc::sock_filter {
            code: u16::try_from(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K).unwrap(),
            jt: u8::try_from(n - i).unwrap(),
            jf: 0,
            k: u32::try_from(nr).unwrap(),
        });
    }
    program.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
    program.push(stmt(
        libc::BPF_RET | libc::BPF_K,
        libc::SECCOMP_RET_USER_NOTIF,
    ));
    program
}

/// Serves the notifications of listener `fd` until it closes.
fn supervise(fd: i32, plan: &Plan) {
    loop {
        // SAFETY: plain data, all zeroes valid (the kernel wants it zeroed).
        let mut req: libc::seccomp_notif = unsafe { core::mem::zeroed() };
        // SAFETY: `req` is a valid out-pointer of the size the request names.
        if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &raw mut req) } != 0 {
            // `ENOENT`: the calling thread was killed before the notification was read.
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR | libc::ENOENT) => continue,
                _ => return,
            }
        }
        let addr = usize::try_from(req.data.args[0]).unwrap_or(usize::MAX);
        let nr = libc::c_long::from(req.data.nr);
        let heap = plan.spare_heap.load(Ordering::SeqCst)
            && (nr == libc::SYS_mprotect
                || (nr == libc::SYS_mmap
                    && req.data.args[3] & u64::try_from(libc::MAP_FIXED).unwrap() == 0
                    && req.data.args[4] & 0xffff_ffff == 0xffff_ffff));
        let mut error = 0;
        if !heap && (plan.lo.load(Ordering::SeqCst)..plan.hi.load(Ordering::SeqCst)).contains(&addr)
        {
            let seen = plan.seen.fetch_add(1, Ordering::SeqCst);
            let refuse = plan.refuse.load(Ordering::SeqCst);
            if seen == refuse || (plan.from_on.load(Ordering::SeqCst) && seen > refuse) {
                error = -plan.errno.load(Ordering::SeqCst);
                if !plan.refused.swap(true, Ordering::SeqCst) {
                    plan.refused_nr.store(req.data.nr, Ordering::SeqCst);
                }
            }
        }
        let mut resp = libc::seccomp_notif_resp {
            id: req.id,
            val: 0,
            error,
            flags: if error == 0 {
                u32::try_from(libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE).unwrap()
            } else {
                0
            },
        };
        // SAFETY: `resp` is a valid response of the size the request names. A call whose
        // thread went away meanwhile is answered `ENOENT`: nothing to do.
        unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &raw mut resp) };
    }
}

/// How long a child may take: far more than any of these tests needs, so that a child that
/// hangs (a call the supervisor never answers) fails the test instead of stopping the run.
pub const CHILD_DEADLINE: Duration = Duration::from_secs(120);

/// Runs test `name` of this test binary again in a child process with `env` set, and asserts
/// that it passed there (and ran: it prints `marker`) within [`CHILD_DEADLINE`], killing it
/// otherwise. The parent's part of the test returns after this; the child's part runs when
/// `env` is set.
pub fn in_child(name: &str, env: &str, marker: &str) {
    let out = crate::child_process::output_within(
        Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(env, "1"),
        CHILD_DEADLINE,
    )
    .unwrap_or_else(|hung| panic!("{hung}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
    assert!(
        stdout.contains(marker) || stderr.contains("SKIPPED"),
        "the child did not run: {stdout}\n{stderr}"
    );
    for line in stdout.lines().filter(|l| l.contains(marker)) {
        eprintln!("child: {line}");
    }
    eprint!(
        "{}",
        stderr
            .lines()
            .filter(|l| l.contains("SKIPPED"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Whether this looks like a sanitizer's run (its runtime's own mappings would meet the
/// filter): the gate sets the sanitizers' options for those runs, and a runtime linked as a
/// shared library shows in the process's mappings.
pub fn under_sanitizer() -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let env = ["ASAN_OPTIONS", "TSAN_OPTIONS", "MSAN_OPTIONS"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    env || maps.contains("libclang_rt.") || maps.contains("libasan") || maps.contains("libtsan")
}
