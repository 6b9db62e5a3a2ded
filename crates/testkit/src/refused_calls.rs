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
//! The supervisor allocates nothing while it serves: a filtered thread may be inside the heap's
//! own `mmap`, holding its lock.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

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
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(env, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read on threads of their own, so that a child writing more than a pipe holds goes on.
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > CHILD_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap();
            panic!(
                "the child ran past {CHILD_DEADLINE:?} and was killed: {}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
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

/// Reads `pipe` to its end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
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
