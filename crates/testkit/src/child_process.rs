//! A child process run to its end within a deadline, its output read while it runs: a test
//! that runs part of itself in a process of its own (a filter that cannot be removed, a call
//! that aborts or hangs) gets the child's status and output, or, when the child is still
//! running at the deadline, a [`Hung`] with the output read by then, and the child killed.
//!
//! Both pipes are read while the child runs, on threads of their own, so that a child writing
//! more than a pipe holds (64 KiB on Linux) goes on instead of waiting for a reader that waits
//! for it. What is kept of each stream is bounded: its first [`KEPT_HEAD`] bytes and its last
//! [`KEPT_TAIL`] bytes; the bytes between are read and dropped, and a line saying how many
//! stands in their place.
//!
//! On Linux the child runs in a process group of its own, and when it ends, or is killed at the
//! deadline, whatever else of that group still runs is killed before the child is reaped: a
//! process it started cannot hold the pipes open past its end, and both readers end with it.
//! A process that left the group (`setsid`), or any the child started elsewhere, is waited for
//! at most 5 s after the child's end: the output read by then is given, and its reader is left
//! behind, blocked on the pipe that process holds. Being in a group of its own, the child is
//! not in a terminal's foreground group: an interrupt typed at the terminal (Ctrl-C) ends the
//! parent, not the child, which runs on until it ends by itself (or writes to the pipe the
//! parent left and is refused).

use std::collections::VecDeque;
use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The bytes kept of the start of each stream.
pub const KEPT_HEAD: usize = 256 << 10;
/// The bytes kept of the end of each stream (a test harness prints its failures last).
pub const KEPT_TAIL: usize = 256 << 10;

/// A child still running at its deadline, killed: what it had written by then.
#[derive(Debug)]
pub struct Hung {
    /// The deadline it ran past.
    pub limit: Duration,
    /// Its standard output by then, bounded as the module says.
    pub stdout: Vec<u8>,
    /// Its standard error by then, bounded as the module says.
    pub stderr: Vec<u8>,
}

impl std::fmt::Display for Hung {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the child ran past {:?} and was killed; its output:\n{}\n{}",
            self.limit,
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        )
    }
}

/// How long the readers may take after the child ended: its output reaches its end at once,
/// unless a process the child started holds the pipes open; what was read by then is given.
const READERS_GRACE: Duration = Duration::from_secs(5);

/// Runs `command` with its standard output and error piped, reading both while it runs, and
/// waits for it at most `limit`.
///
/// # Errors
///
/// [`Hung`] when the child is still running after `limit`: it is killed and reaped first.
///
/// # Panics
///
/// When the child cannot be started or waited for.
pub fn output_within(command: &mut Command, limit: Duration) -> Result<Output, Hung> {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    #[cfg(target_os = "linux")]
    std::os::unix::process::CommandExt::process_group(command, 0);
    let mut child = command.spawn().unwrap();
    let stdout = Reader::start(child.stdout.take().unwrap());
    let stderr = Reader::start(child.stderr.take().unwrap());
    let start = Instant::now();
    let status = loop {
        if group::ended(&mut child) {
            group::kill(&child);
            break Some(child.wait().unwrap());
        }
        if start.elapsed() > limit {
            group::kill(&child);
            let _ = child.kill();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let grace = Instant::now() + READERS_GRACE;
    let (stdout, stderr) = (stdout.finish(grace), stderr.finish(grace));
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(Hung {
            limit,
            stdout,
            stderr,
        }),
    }
}

/// What is kept of a stream: its start, its end, and the count of the bytes between.
#[derive(Debug, Default)]
struct Kept {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    left_out: u64,
}

impl Kept {
    fn push(&mut self, bytes: &[u8]) {
        let to_head = bytes.len().min(KEPT_HEAD - self.head.len());
        self.head.extend_from_slice(&bytes[..to_head]);
        self.tail.extend(&bytes[to_head..]);
        let excess = self.tail.len().saturating_sub(KEPT_TAIL);
        self.tail.drain(..excess);
        self.left_out += excess as u64;
    }

    /// The start, a line saying how many bytes were left out (when some were), and the end.
    fn bytes(&self) -> Vec<u8> {
        let mut bytes = self.head.clone();
        if self.left_out > 0 {
            bytes.extend_from_slice(format!("\n[{} bytes left out]\n", self.left_out).as_bytes());
        }
        bytes.extend(&self.tail);
        bytes
    }
}

/// A pipe read to its end on a thread of its own, into a [`Kept`].
struct Reader {
    kept: Arc<Mutex<Kept>>,
    thread: std::thread::JoinHandle<()>,
}

impl Reader {
    fn start(mut pipe: impl Read + Send + 'static) -> Self {
        let kept = Arc::new(Mutex::new(Kept::default()));
        let filled = Arc::clone(&kept);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => filled.lock().unwrap().push(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        });
        Self { kept, thread }
    }

    /// What was kept, once the pipe reached its end or `deadline` passed (the reader is then
    /// left behind, blocked on a pipe another process holds open).
    fn finish(self, deadline: Instant) -> Vec<u8> {
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.kept.lock().unwrap().bytes()
    }
}

/// The child's process group (Linux): whether the child ended, without reaping it, and the
/// killing of the group's processes while the child, its leader, is not reaped yet (so that its
/// number names no other group).
#[cfg(target_os = "linux")]
mod group {
    use std::process::Child;

    /// Whether `child` ended; it is left to be reaped.
    pub(super) fn ended(child: &mut Child) -> bool {
        loop {
            // SAFETY: an all-zero `siginfo_t` is a valid value of the plain C struct.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: `info` is a valid, writable `siginfo_t`; `child` is our child, not
            // reaped yet (`Child::wait` reaps it, and it is called only after this says so).
            let ret = unsafe {
                libc::waitid(
                    libc::P_PID,
                    child.id(),
                    &raw mut info,
                    libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                )
            };
            if ret == 0 {
                // SAFETY: `waitid` filled `info` for a child (or left `si_pid` 0 when none
                // ended, WNOHANG), so it holds a child's `si_pid`.
                return unsafe { info.si_pid() } != 0;
            }
            let error = std::io::Error::last_os_error();
            assert!(
                error.kind() == std::io::ErrorKind::Interrupted,
                "waitid for the child: {error}"
            );
        }
    }

    /// Kills every process of `child`'s group, `child` included; none left is not an error.
    pub(super) fn kill(child: &Child) {
        let Ok(group) = libc::pid_t::try_from(child.id()) else {
            return;
        };
        // SAFETY: a plain system call; `group` is the process group `child` leads, whose
        // number stays its own while `child` is not reaped.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
}

/// Elsewhere the child shares our process group: whether it ended, reaping it, and nothing to
/// kill beside it.
#[cfg(not(target_os = "linux"))]
mod group {
    use std::process::Child;

    /// Whether `child` ended (reaped; `Child::wait` then gives its status).
    pub(super) fn ended(child: &mut Child) -> bool {
        child.try_wait().unwrap().is_some()
    }

    /// Nothing: the child has no group of its own.
    pub(super) fn kill(_child: &Child) {}
}

#[cfg(test)]
mod tests {
    use super::{KEPT_HEAD, KEPT_TAIL, Kept};

    /// `len` bytes that differ from their neighbours, fed to a [`Kept`] `chunk` bytes at a time.
    fn kept(len: usize, chunk: usize) -> (Vec<u8>, Kept) {
        let bytes: Vec<u8> = (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect();
        let mut kept = Kept::default();
        for piece in bytes.chunks(chunk) {
            kept.push(piece);
        }
        (bytes, kept)
    }

    #[test]
    #[cfg_attr(miri, ignore)] // Megabytes a byte at a time: seconds natively, hours under Miri.
    fn kept_bytes_at_and_past_the_bounds_are_the_first_and_last_with_the_count_between() {
        let whole = KEPT_HEAD + KEPT_TAIL;
        for len in [
            0,
            1,
            KEPT_HEAD - 1,
            KEPT_HEAD,
            KEPT_HEAD + 1,
            whole - 1,
            whole,
            whole + 1,
            2 * whole + 7,
        ] {
            for chunk in [8192, 4093, whole + 1] {
                let (bytes, kept) = kept(len, chunk);
                let left_out = len.saturating_sub(whole);
                assert_eq!(kept.left_out, left_out as u64, "{len} in {chunk}");
                assert!(kept.head.len() <= KEPT_HEAD && kept.tail.len() <= KEPT_TAIL);
                let head = len.min(KEPT_HEAD);
                let tail = (len - head).min(KEPT_TAIL);
                let mut expected = bytes[..head].to_vec();
                if left_out > 0 {
                    let line = format!("\n[{left_out} bytes left out]\n");
                    expected.extend_from_slice(line.as_bytes());
                }
                expected.extend_from_slice(&bytes[len - tail..]);
                assert!(kept.bytes() == expected, "{len} in chunks of {chunk}");
            }
        }
    }
}
