//! A language VM's heap of several vectors, as the process meets what such heaps meet: a
//! `fork` (the child reads and grows its copies while the parent grows its own) and an address
//! space limit (`RLIMIT_AS`) that refuses the next reservation (skipped under a sanitizer,
//! whose runtime maps memory of its own). Each test runs in a child
//! process of its own (memvisor-testkit's `in_child`): `fork` is made from a process that
//! runs that test alone, and the limit, which cannot be raised again, stays with that process.
//! The forked child is bounded (`Forked`): killed and reaped if the parent's part fails, if
//! it is not done within `FORK_DEADLINE`, and when the thread that forked it ends; it never
//! outlives the test. Linux on x86-64, where the child-process support is.
#![cfg(all(
    target_os = "linux",
    target_arch = "x86_64",
    feature = "std",
    not(miri)
))]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use memvisor_testkit::refused_calls::{CHILD_DEADLINE, in_child, under_sanitizer};
use memvisor_vmem::vec::{Builder, ConcurrentVec, Error, Vec};

/// How long a forked child may take before it is killed and its test fails: far more than it
/// needs, and well within testkit's `CHILD_DEADLINE`, which kills the process that forked it.
const FORK_DEADLINE: Duration = Duration::from_secs(60);
const _: () = assert!(FORK_DEADLINE.as_secs() * 2 <= CHILD_DEADLINE.as_secs());

/// A child process made by `fork`, waiting to be let go; killed and reaped on drop unless
/// [`wait`](Self::wait) reaped it.
struct Forked {
    /// The child's process id; 0 once it was reaped.
    pid: libc::pid_t,
    /// The write end of the pipe the child waits on.
    go: OwnedFd,
}

impl Forked {
    /// Forks a child that waits until [`go`](Self::go), runs `child` and exits with 0 where it
    /// returns `true`, 1 where it returns `false`, 2 where it panics, and 3 where the parent
    /// went away before letting it go. The child closes its copy of the pipe's write end, so
    /// that the parent's end is the only one and its close (the parent's exit) wakes the
    /// child, and it is killed when the thread that forked it ends.
    ///
    /// # Safety
    /// As `fork`: the child may only use what another thread of this process cannot have
    /// left locked (`child` runs in the child; the harness's main thread waits for the test's,
    /// holding no lock).
    unsafe fn new(child: impl FnOnce() -> bool) -> Self {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid array of two descriptors to write.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both descriptors were just made and are owned here alone.
        let (wait, go) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: this process's id.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the caller promises what the child may use; it leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: closes the child's copy of the write end, which nothing else uses; then
            // asks for SIGKILL when the forking thread ends, and checks that it had not ended
            // before the request.
            let code = unsafe {
                libc::close(go.as_raw_fd());
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                let mut byte = 0u8;
                if libc::getppid() != parent
                    || libc::read(wait.as_raw_fd(), (&raw mut byte).cast(), 1) != 1
                {
                    3
                } else {
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)) {
                        Ok(true) => 0,
                        Ok(false) => 1,
                        Err(_) => 2,
                    }
                }
            };
            // SAFETY: leaves the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        drop(wait);
        Self { pid, go }
    }

    /// Lets the child go.
    fn go(&self) {
        // SAFETY: writes one byte from a live local.
        let wrote = unsafe { libc::write(self.go.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        assert_eq!(wrote, 1, "{}", std::io::Error::last_os_error());
    }

    /// Waits for the child's exit and returns its code, or says why there is none: it was not
    /// done within `deadline` (it is killed and reaped then) or a signal ended it.
    fn wait(mut self, deadline: Duration) -> Result<i32, String> {
        let start = Instant::now();
        let mut status = 0;
        loop {
            // SAFETY: polls the child made by `new`, not reaped yet (`pid != 0`).
            let got = unsafe { libc::waitpid(self.pid, &raw mut status, libc::WNOHANG) };
            if got < 0 {
                return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
            }
            if got == self.pid {
                self.pid = 0;
                break;
            }
            if start.elapsed() >= deadline {
                // Dropping `self` kills and reaps the child.
                return Err(format!(
                    "the forked child ran past {deadline:?} and was killed"
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if libc::WIFEXITED(status) {
            Ok(libc::WEXITSTATUS(status))
        } else {
            Err(format!(
                "the forked child ended by a signal (status {status:#x})"
            ))
        }
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        if self.pid != 0 {
            // SAFETY: kills and reaps the child made by `new`, not reaped yet.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, core::ptr::null_mut(), 0);
            }
        }
    }
}

/// Whether `pid` names a process (a zombie too).
fn exists(pid: libc::pid_t) -> bool {
    // SAFETY: sends no signal, only checks the process.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// A forked child whose parent's part fails before letting it go (a panic, whose unwinding
/// drops the `Forked`) is killed and reaped, where it waited on the pipe for ever.
#[test]
fn a_forked_child_is_killed_and_reaped_when_the_parent_part_fails() {
    // SAFETY: the child only waits on its pipe, then returns.
    let child = unsafe { Forked::new(|| true) };
    let pid = child.pid;
    drop(child);
    assert!(!exists(pid), "child {pid} left behind");
}

/// A forked child that does not finish fails its test at the deadline, killed and reaped.
#[test]
fn a_forked_child_that_hangs_is_killed_at_the_deadline() {
    // SAFETY: the child waits for a signal, nothing else.
    let child = unsafe {
        Forked::new(|| {
            libc::pause();
            true
        })
    };
    let pid = child.pid;
    child.go();
    let waited = child.wait(Duration::from_millis(50));
    assert!(waited.unwrap_err().contains("ran past"));
    assert!(!exists(pid), "child {pid} left behind");
}

const FORK_CHILD: &str = "MEMVISOR_VMEM_HEAP_FORK_CHILD";
const LIMIT_CHILD: &str = "MEMVISOR_VMEM_HEAP_LIMIT_CHILD";

/// Elements in each vector when the process forks, and pushed by each side after.
const BEFORE: usize = 100_000;
const AFTER: usize = 300_000;

/// A heap of 512 MiB of reservation per vector, grown in steps.
fn heap() -> (Vec<u64>, ConcurrentVec<u64>) {
    let v = Builder::new(1 << 26).build::<u64>().unwrap();
    let c = Builder::new(1 << 26).build_concurrent::<u64>().unwrap();
    (v, c)
}

/// Checks that `v` and `c` hold `0..n` and then `n` values of `mark` (and nothing else).
fn check(v: &Vec<u64>, c: &ConcurrentVec<u64>, n: usize, more: usize, mark: u64) -> bool {
    let expected = (0..n as u64).chain(std::iter::repeat_n(mark, more));
    v.len() == n + more
        && v.iter().copied().eq(expected.clone())
        && c.len() == n + more
        && c.iter().copied().eq(expected)
}

#[test]
fn fork_child_reads_and_grows_its_copy_while_the_parent_grows() {
    if std::env::var_os(FORK_CHILD).is_none() {
        in_child(
            "fork_child_reads_and_grows_its_copy_while_the_parent_grows",
            FORK_CHILD,
            "fork checked",
        );
        return;
    }
    let (mut v, c) = heap();
    for i in 0..BEFORE as u64 {
        v.push(i);
        c.push(i);
    }
    // SAFETY: the process runs this test alone; the child uses the vectors (no lock of theirs
    // is held: this thread holds none, and no other thread uses them).
    let child = unsafe {
        Forked::new(|| {
            // Let go once the parent grew its copies: it reads and grows its own.
            let mut ok = check(&v, &c, BEFORE, 0, 0);
            for _ in 0..AFTER {
                ok &= v.try_push(7).is_ok() && c.try_push(7).is_ok();
            }
            ok && check(&v, &c, BEFORE, AFTER, 7)
        })
    };
    // The parent grows its copies past what was committed at the fork, then lets the child go.
    for _ in 0..AFTER {
        v.push(9);
        c.push(9);
    }
    child.go();
    assert_eq!(
        child.wait(FORK_DEADLINE),
        Ok(0),
        "the child saw other contents than its own (1) or panicked (2)"
    );
    assert!(check(&v, &c, BEFORE, AFTER, 9));
    println!("fork checked");
}

/// The process's virtual memory size, from `/proc/self/status`.
fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    kib * 1024
}

#[test]
fn heap_past_an_address_space_limit_is_refused_typed_and_goes_on() {
    if std::env::var_os(LIMIT_CHILD).is_none() {
        if under_sanitizer() {
            eprintln!("SKIPPED: a sanitizer's runtime maps memory the limit would refuse");
            return;
        }
        in_child(
            "heap_past_an_address_space_limit_is_refused_typed_and_goes_on",
            LIMIT_CHILD,
            "limit checked",
        );
        return;
    }
    // Room for three vectors of 256 MiB of reservation more than the process has now.
    let vector = 256u64 << 20;
    let limit = libc::rlimit {
        rlim_cur: vm_size() + 3 * vector + vector / 2,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid `rlimit` for this process.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_AS, &raw const limit) };
    assert_eq!(set, 0);
    let capacity = usize::try_from(vector).unwrap() / 8 - 1024;
    let mut heap: std::vec::Vec<Vec<u64>> = (0..3)
        .map(|_| Builder::new(capacity).build::<u64>().unwrap())
        .collect();
    for (i, v) in heap.iter_mut().enumerate() {
        v.extend(0..10_000);
        v.push(i as u64);
    }
    // A fourth is refused with the system's error, typed, for either kind of vector.
    for refused in [
        Builder::new(capacity).build::<u64>().err(),
        Builder::new(capacity).build_concurrent::<u64>().err(),
    ] {
        match refused {
            Some(Error::Reserve {
                source: memvisor_vmem::Error::Os { source, .. },
                ..
            }) => assert_eq!(source.raw(), libc::ENOMEM),
            other => panic!("expected the system's refusal, got {other:?}"),
        }
    }
    // The vectors there go on growing, and freeing one makes room for another.
    for v in &mut heap {
        v.extend(0..100_000);
    }
    drop(heap.pop());
    let c = Builder::new(capacity).build_concurrent::<u64>().unwrap();
    for value in 0..100_000 {
        c.push(value);
    }
    assert_eq!(c.count(), 100_000);
    assert!(heap.iter().all(|v| v.len() == 110_001));
    println!("limit checked");
}

/// Pages advised `DontFork` are not in the child at all: a gap of its address space (which
/// `msync` answers with `ENOMEM`, as for any address nothing is mapped at), where the child's
/// own mappings may be placed, not pages of the reservation that fault. The reservation's pages
/// around them are copied as usual.
#[test]
fn dont_fork_pages_are_a_gap_in_the_child() {
    let page = memvisor_vmem::page_size();
    let r = memvisor_vmem::Reservation::new(3 * page).unwrap();
    r.commit(0, 3 * page).unwrap();
    r.advise(page, page, memvisor_vmem::Advice::DontFork)
        .unwrap();
    // SAFETY: the reservation's pages are committed and nothing else refers to them.
    unsafe { r.as_ptr().add(2 * page).write(7) };
    let gap = r.as_ptr() as usize + page;
    // SAFETY: the child asks the kernel about an address range and reads a committed byte: no
    // lock.
    let child = unsafe {
        Forked::new(|| {
            let synced = libc::msync(gap as *mut libc::c_void, page, libc::MS_ASYNC);
            let in_gap = synced == -1
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOMEM);
            in_gap && r.as_ptr().add(2 * page).read() == 7
        })
    };
    child.go();
    assert_eq!(child.wait(FORK_DEADLINE), Ok(0), "no gap in the child");
}
