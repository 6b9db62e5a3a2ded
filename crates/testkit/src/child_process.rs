//! A child process run to its end within a deadline, its output read while it runs: a test
//! that runs part of itself in a process of its own (a filter that cannot be removed, a call
//! that aborts or hangs) gets the child's status and output, or, when the child is still
//! running at the deadline, a [`Hung`] with the output read by then, and the child killed.
//!
//! Both pipes are read while the child runs, on threads of their own, so that a child writing
//! more than a pipe holds (64 KiB on Linux) goes on instead of waiting for a reader that waits
//! for it. What is kept of each stream is bounded: its first [`KEPT_HEAD`] bytes and its last
//! [`KEPT_TAIL`] bytes; the bytes between are read and dropped, and a line saying how many
//! stands in their place. A process the child started that holds the pipes open after the
//! child ended is waited for at most 5 s: the output read by then is given, and the readers are
//! left behind.

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
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Reader::start(child.stdout.take().unwrap());
    let stderr = Reader::start(child.stderr.take().unwrap());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > limit {
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
