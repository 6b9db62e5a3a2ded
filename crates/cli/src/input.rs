//! Reading a spec's text from a file or standard input, bounded by [`MAX_SPEC_BYTES`].

use std::io::{self, Read};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::spec::MAX_SPEC_BYTES;

/// The path that names standard input.
pub const STDIN: &str = "-";

/// How long a spec that is not a regular file (a FIFO, a pipe, a device), or standard input
/// that is not a terminal, may keep the command waiting for its data and its end: 10 seconds
/// from the start of the reading.
pub const MAX_READ_WAIT: Duration = Duration::from_secs(10);

/// `O_NONBLOCK` of the target, the kernel's value (`std` has no constant for it): a FIFO opened
/// with it does not wait for a writer, and a read of a pipe or device with nothing to give
/// says so instead of waiting. It changes nothing for a regular file.
#[cfg(all(
    target_os = "linux",
    any(
        target_arch = "mips",
        target_arch = "mips32r6",
        target_arch = "mips64",
        target_arch = "mips64r6"
    )
))]
pub(crate) const O_NONBLOCK: i32 = 0o200;
#[cfg(all(
    target_os = "linux",
    any(target_arch = "sparc", target_arch = "sparc64")
))]
pub(crate) const O_NONBLOCK: i32 = 0x4000;
#[cfg(all(
    target_os = "linux",
    not(any(
        target_arch = "mips",
        target_arch = "mips32r6",
        target_arch = "mips64",
        target_arch = "mips64r6",
        target_arch = "sparc",
        target_arch = "sparc64"
    ))
))]
pub(crate) const O_NONBLOCK: i32 = 0o4000;
/// The BSDs' and macOS's `O_NONBLOCK`.
#[cfg(not(target_os = "linux"))]
pub(crate) const O_NONBLOCK: i32 = 0x4;

/// Reads at most [`MAX_SPEC_BYTES`] bytes of UTF-8 text from `reader`; `path` names it in errors.
///
/// One byte more than the limit is read, never more, so an endless source (`/dev/zero`, a
/// pipe that never closes after writing enough) is refused at once instead of filling memory.
/// A reader that has nothing to give yet (`WouldBlock`, a non-blocking pipe or device) is
/// waited for, at most [`MAX_READ_WAIT`] from the start.
///
/// # Errors
/// [`Error::ReadSpec`] if reading fails or the data does not come in time,
/// [`Error::SpecTooLarge`] past the limit, [`Error::SpecNotUtf8`] if the text is not UTF-8.
///
/// ```
/// use memvisor_cli::input::read_bounded;
/// use memvisor_cli::spec::MAX_SPEC_BYTES;
///
/// assert_eq!(read_bounded("x", &b"[memory]\n"[..])?, "[memory]\n");
/// let zeros = std::io::repeat(0);
/// assert!(read_bounded("zeros", zeros).is_err());
/// # Ok::<(), memvisor_cli::Error>(())
/// ```
pub fn read_bounded(path: &str, reader: impl Read) -> Result<String> {
    read_within(path, reader, MAX_READ_WAIT)
}

/// [`read_bounded`] of a reader that waits for its data (standard input from a pipe, FIFO or
/// socket): before each read, `poll(2)` waits for its descriptor to have data or its end, at
/// most until `wait` after the start, and no thread is needed; what has not come whole by
/// then is refused.
///
/// A pipe, FIFO or socket may have other readers, which can take the data `poll(2)` saw
/// before this read does, and a read that then waited would wait for the writer past `wait`:
/// each read of one is made not to wait ([`Unwaiting`]), so that it finds nothing instead.
/// This needs no `/proc`.
#[cfg(unix)]
fn read_waiting(
    path: &str,
    reader: impl Read + std::os::fd::AsFd,
    wait: Duration,
) -> Result<String> {
    read_waiting_via(path, reader, wait, std::path::Path::new("/proc/self/fd"))
}

/// [`read_waiting`], finding this process's descriptors in `fd_dir` (`/proc/self/fd`).
#[cfg(unix)]
fn read_waiting_via(
    path: &str,
    reader: impl Read + std::os::fd::AsFd,
    wait: Duration,
    fd_dir: &std::path::Path,
) -> Result<String> {
    read_polled(path, Unwaiting::new(reader, fd_dir), wait)
}

/// A reader of standard input whose reads do not wait: one with nothing to give yet fails
/// with `WouldBlock`, even when the descriptor blocks and is shared with other readers.
///
/// - A pipe or socket is read as it is, each read with `preadv2(2)`'s `RWF_NOWAIT` (Linux 4.14),
///   which asks that one read not to wait and changes nothing that others see.
/// - Where the kernel does not take that flag for the file (a FIFO made with `mkfifo`, an older
///   kernel), the pipe or FIFO is opened again through `fd_dir` (`/proc/self/fd`) with
///   `O_NONBLOCK`: a file description of its own, whose flag no one else sees.
/// - Where that cannot be opened either (no `/proc`, as in a container or chroot without it),
///   `O_NONBLOCK` is set on the description given, for as long as this value lives, and it is given
///   back its flags when this value is dropped. Another process reading the same description
///   meanwhile (two commands given one `< fifo`) may then find nothing to read instead of waiting.
///   Such a process may give the description its flags back while this value still reads it (it set
///   the flag first, and this value found it set): so the flag is looked at before each read and
///   set again if it is gone, and this value then gives the flags back in turn. Only a process that
///   gives them back between that look and the read can make that one read wait; and a signal that
///   ends the command while it reads leaves the flag set.
///
/// Anything else (a regular file, `/dev/null`, a device) is read as it is: a regular file
/// never waits, and opening a device again may act.
#[cfg(unix)]
struct Unwaiting<'a, R: std::os::fd::AsFd> {
    reader: R,
    fd_dir: &'a std::path::Path,
    mode: ReadMode,
}

/// How an [`Unwaiting`] reads.
#[cfg(unix)]
enum ReadMode {
    /// Each read with `RWF_NOWAIT`.
    #[cfg(target_os = "linux")]
    NoWait,
    /// Through a description of its own, opened with `O_NONBLOCK`.
    #[cfg(target_os = "linux")]
    Reopened(std::fs::File),
    /// Through the description given, `O_NONBLOCK` set on it before each read; the flags it
    /// had before this value first set the flag (`None` while the flag was found set, by the
    /// owner of the description or another reader of it), given back on drop.
    Flagged(Option<rustix::fs::OFlags>),
    /// As it is.
    AsIs,
}

#[cfg(unix)]
impl<'a, R: Read + std::os::fd::AsFd> Unwaiting<'a, R> {
    fn new(reader: R, fd_dir: &'a std::path::Path) -> Self {
        let kind = rustix::fs::fstat(&reader)
            .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode))
            .ok();
        let shared = matches!(
            kind,
            Some(rustix::fs::FileType::Fifo | rustix::fs::FileType::Socket)
        );
        let mut this = Self {
            reader,
            fd_dir,
            mode: ReadMode::AsIs,
        };
        if shared {
            #[cfg(target_os = "linux")]
            {
                this.mode = ReadMode::NoWait;
            }
            #[cfg(not(target_os = "linux"))]
            {
                this.mode = this.fallback();
            }
        }
        this
    }

    /// How to read a pipe or FIFO whose reads cannot each be asked not to wait.
    fn fallback(&self) -> ReadMode {
        use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};

        #[cfg(target_os = "linux")]
        if let Some(pipe) = reopen_pipe(self.reader.as_fd(), self.fd_dir) {
            return ReadMode::Reopened(pipe);
        }
        match fcntl_getfl(&self.reader) {
            Ok(flags) if flags.contains(OFlags::NONBLOCK) => ReadMode::Flagged(None),
            Ok(flags) if fcntl_setfl(&self.reader, flags | OFlags::NONBLOCK).is_ok() => {
                ReadMode::Flagged(Some(flags))
            }
            // Read as it is: a read that loses its data to another reader waits.
            _ => ReadMode::AsIs,
        }
    }
}

#[cfg(unix)]
impl<R: Read + std::os::fd::AsFd> Read for Unwaiting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match &mut self.mode {
                #[cfg(target_os = "linux")]
                ReadMode::NoWait => {
                    use rustix::io::{Errno, ReadWriteFlags, preadv2};
                    // `u64::MAX`: at the current position, as a read is.
                    match preadv2(
                        &self.reader,
                        &mut [io::IoSliceMut::new(buf)],
                        u64::MAX,
                        ReadWriteFlags::NOWAIT,
                    ) {
                        // The flag is not taken for this file (nothing was read).
                        Err(Errno::OPNOTSUPP | Errno::NOSYS) => self.mode = self.fallback(),
                        read => return read.map_err(io::Error::from),
                    }
                }
                #[cfg(target_os = "linux")]
                ReadMode::Reopened(pipe) => return pipe.read(buf),
                ReadMode::Flagged(saved) => {
                    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
                    // Another reader of the description may have given it back its flags since
                    // (it set the flag first): set it again, and give them back in turn.
                    if let Ok(flags) = fcntl_getfl(&self.reader)
                        && !flags.contains(OFlags::NONBLOCK)
                        && fcntl_setfl(&self.reader, flags | OFlags::NONBLOCK).is_ok()
                    {
                        saved.get_or_insert(flags);
                    }
                    return self.reader.read(buf);
                }
                ReadMode::AsIs => return self.reader.read(buf),
            }
        }
    }
}

/// What `poll(2)` waits on: always the description given, also when reads go through one
/// opened again. Both read one pipe, so both have data at once; but a FIFO opened after its
/// last writer left never says `POLLHUP` (the kernel tells the end only to readers that were
/// there when a writer was), so polling it would wait out [`MAX_READ_WAIT`] for an end that
/// its reads (`0`: no writer) and the description given both tell at once.
#[cfg(unix)]
impl<R: std::os::fd::AsFd> std::os::fd::AsFd for Unwaiting<'_, R> {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.reader.as_fd()
    }
}

#[cfg(unix)]
impl<R: std::os::fd::AsFd> Drop for Unwaiting<'_, R> {
    fn drop(&mut self) {
        if let ReadMode::Flagged(Some(flags)) = self.mode {
            // The description's flags as they were; should that fail, nothing more can be
            // done.
            let _ = rustix::fs::fcntl_setfl(&self.reader, flags);
        }
    }
}

/// The pipe or FIFO `fd` reads from, opened again for reading without waiting
/// (`O_NONBLOCK`) through `/proc/self/fd`, a description of its own whose flag no one else
/// sees; `None` if `fd` is no pipe or FIFO or cannot be opened so. Other files are not opened
/// again: a regular file would start over at its first byte, and opening a device may do
/// something.
#[cfg(target_os = "linux")]
fn reopen_pipe(fd: std::os::fd::BorrowedFd<'_>, fd_dir: &std::path::Path) -> Option<std::fs::File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};

    let given = std::fs::File::from(fd.try_clone_to_owned().ok()?)
        .metadata()
        .ok()?;
    if !given.file_type().is_fifo() {
        return None;
    }
    let pipe = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(fd_dir.join(fd.as_raw_fd().to_string()))
        .ok()?;
    let opened = pipe.metadata().ok()?;
    (opened.file_type().is_fifo() && (opened.dev(), opened.ino()) == (given.dev(), given.ino()))
        .then_some(pipe)
}

/// [`read_waiting`] of `reader` as it is given: `poll(2)` before each read.
#[cfg(unix)]
fn read_polled(
    path: &str,
    reader: impl Read + std::os::fd::AsFd,
    wait: Duration,
) -> Result<String> {
    read_until(path, reader, wait, |reader, left| {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};

        if left.is_zero() {
            return Ok(false);
        }
        // `left` is at most `wait`, a few seconds: it fits a `timespec`.
        let timeout = Timespec::try_from(left).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut fds = [PollFd::new(reader, PollFlags::IN)];
        // Ready also when the writer is gone (`POLLHUP`) or the descriptor is bad: the read
        // then says which (end of file, an error).
        Ok(poll(&mut fds, Some(&timeout)).map_err(io::Error::from)? > 0)
    })
}

/// [`read_bounded`] of a terminal: read as it is typed, without a time limit (up to end of
/// file, Ctrl-D). Before each read `poll(2)` waits, without a timeout, for a line or the end,
/// so that a terminal another program left non-blocking (`O_NONBLOCK`) is waited for as a
/// blocking one is, not refused after [`MAX_READ_WAIT`]. The terminal's flags are not changed.
#[cfg(unix)]
fn read_typed(path: &str, reader: impl Read + std::os::fd::AsFd) -> Result<String> {
    read_until(path, reader, Duration::MAX, |reader, _| {
        use rustix::event::{PollFd, PollFlags, poll};

        let mut fds = [PollFd::new(reader, PollFlags::IN)];
        // Ready also when the terminal hangs up or the descriptor is bad: the read then says
        // which.
        Ok(poll(&mut fds, None).map_err(io::Error::from)? > 0)
    })
}

/// Why data that did not come in `wait` is refused.
fn no_end(wait: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "no end of its data after {} s (a FIFO, pipe or device whose writer neither writes \
             nor closes it)",
            wait.as_secs()
        ),
    )
}

/// [`read_bounded`], waiting at most `wait` for data that is not there yet.
fn read_within(path: &str, reader: impl Read, wait: Duration) -> Result<String> {
    read_until(path, reader, wait, |_, _| Ok(true))
}

/// [`read_within`], asking `ready` before each read whether the reader has something to give
/// (its data or its end) within the time left (`Ok(false)`: it has not, the wait is over).
fn read_until<R: Read>(
    path: &str,
    mut reader: R,
    wait: Duration,
    mut ready: impl FnMut(&R, Duration) -> io::Result<bool>,
) -> Result<String> {
    let failed = |source| Error::ReadSpec {
        path: path.to_owned(),
        source,
    };
    let start = Instant::now();
    let limit = MAX_SPEC_BYTES.saturating_add(1);
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    while bytes.len() < limit {
        match ready(&reader, wait.saturating_sub(start.elapsed())) {
            Ok(true) => {}
            Ok(false) => return Err(failed(no_end(wait))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(failed(source)),
        }
        // `bytes.len() < limit` (the loop's condition).
        let want = (limit - bytes.len()).min(buf.len());
        match reader.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if start.elapsed() >= wait {
                    return Err(failed(no_end(wait)));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(source) => return Err(failed(source)),
        }
    }
    if bytes.len() > MAX_SPEC_BYTES {
        return Err(Error::SpecTooLarge {
            path: path.to_owned(),
            limit: MAX_SPEC_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|e| Error::SpecNotUtf8 {
        path: path.to_owned(),
        offset: e.utf8_error().valid_up_to(),
    })
}

/// Reads the spec at `path`, or standard input for `-`. The path need not be UTF-8; errors
/// show it lossily (U+FFFD for what is not UTF-8).
///
/// The file is opened without waiting (`O_NONBLOCK`): a FIFO that no one has open for
/// writing reads as empty at once, and a FIFO, pipe or device whose data does not come is
/// refused after [`MAX_READ_WAIT`], so no path makes the command wait without end. Standard
/// input that is a terminal is read as it is typed, without a time limit (up to end of file,
/// Ctrl-D), even one left non-blocking by another program, and its flags are not changed; any
/// other standard input (a pipe, a FIFO, a file, a socket) must give all its
/// data and its end within [`MAX_READ_WAIT`] from the start, else it is refused.
///
/// # Errors
/// As [`read_bounded`]; opening the file fails with [`Error::ReadSpec`], and so does standard
/// input that cannot be read (not open, or open for writing only), before anything is read.
pub fn read_spec(path: impl AsRef<std::path::Path>) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt;

    let path = path.as_ref();
    if path.as_os_str() == STDIN {
        let stdin = std::io::stdin();
        if let Some(source) = unreadable_stdin(&stdin) {
            return Err(Error::ReadSpec {
                path: "<stdin>".to_owned(),
                source,
            });
        }
        if std::io::IsTerminal::is_terminal(&stdin) {
            return read_typed("<stdin>", stdin.lock());
        }
        return read_waiting("<stdin>", stdin.lock(), MAX_READ_WAIT);
    }
    let shown = path.to_string_lossy();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)
        .map_err(|source| Error::ReadSpec {
            path: shown.clone().into_owned(),
            source,
        })?;
    read_bounded(&shown, file)
}

/// Why standard input cannot be read, if it cannot: it is no open descriptor, or it is open
/// for writing only (`0>file`) or as a path only (`O_PATH`). `std` takes the `EBADF` a read
/// of such a descriptor fails with for end of file, which would read as an empty spec.
#[cfg(unix)]
fn unreadable_stdin(stdin: &std::io::Stdin) -> Option<io::Error> {
    use rustix::fs::OFlags;

    match rustix::fs::fcntl_getfl(stdin) {
        Err(e) => Some(io::Error::new(
            io::Error::from(e).kind(),
            format!("standard input is not an open descriptor ({e})"),
        )),
        Ok(flags) => {
            let mode = flags & OFlags::RWMODE;
            #[cfg(target_os = "linux")]
            let path_only = flags.contains(OFlags::PATH);
            #[cfg(not(target_os = "linux"))]
            let path_only = false;
            (mode == OFlags::WRONLY || path_only).then(|| {
                io::Error::other(
                    "standard input is not open for reading (it is open for writing only, as \
                     with `0>FILE`, or as a path only)",
                )
            })
        }
    }
}

/// The most bytes read of a `/proc` or `/sys` file that holds one value or a short table
/// (`meminfo`, a THP mode, a huge page pool's counter, a node's `cpulist`, `status`): 64 KiB,
/// some 40 times the longest the kernel writes.
pub const MAX_HOST_FILE_BYTES: u64 = 64 << 10;

/// The most bytes read of a `/proc` file that lists what the host has (`/proc/mounts`,
/// `/proc/self/maps`): 16 MiB, some 100,000 mounts or mappings.
pub const MAX_HOST_LIST_BYTES: u64 = 16 << 20;

/// Reads the host file at `path` (a `/proc` or `/sys` file), at most `max` bytes: the outer
/// result refuses a file longer than `max`, the inner one says why a file cannot be read
/// (absent, not a regular file, not UTF-8, a read error), which each caller handles as a
/// file the host does not have.
///
/// Only a regular file is read, opened without waiting (`O_NONBLOCK`) and judged by what was
/// opened, so a FIFO or device put at the path cannot make the command wait or read without
/// end; at most `max` + 1 bytes are read.
///
/// # Errors
/// [`Error::HostFileTooLarge`] if the file holds more than `max` bytes.
pub fn read_host_file(path: &std::path::Path, max: u64) -> Result<io::Result<String>> {
    use std::os::unix::fs::OpenOptionsExt;

    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)
        .and_then(|f| {
            if f.metadata()?.is_file() {
                Ok(f)
            } else {
                Err(io::Error::other("not a file"))
            }
        });
    let mut bytes = Vec::new();
    if let Err(e) = file.and_then(|f| f.take(max.saturating_add(1)).read_to_end(&mut bytes)) {
        return Ok(Err(e));
    }
    if bytes.len() as u64 > max {
        return Err(Error::HostFileTooLarge {
            path: path.to_string_lossy().into_owned(),
            limit: max,
        });
    }
    Ok(String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn read_bounded_at_limit_is_accepted() {
        let text = "#".repeat(MAX_SPEC_BYTES);
        assert_eq!(
            read_bounded("x", text.as_bytes()).unwrap().len(),
            MAX_SPEC_BYTES
        );
    }

    #[test]
    fn read_bounded_past_limit_is_refused() {
        let text = "#".repeat(MAX_SPEC_BYTES + 1);
        let err = read_bounded("big.toml", text.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "big.toml is larger than 1048576 bytes, the most a spec may hold"
        );
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn read_bounded_endless_source_is_refused() {
        let err = read_bounded("/dev/zero", std::io::repeat(0)).unwrap_err();
        assert!(matches!(err, Error::SpecTooLarge { .. }), "{err}");
    }

    /// A reader that never has data (a pipe whose writer neither writes nor closes it).
    struct Silent;

    impl Read for Silent {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    /// A reader that gives `text` a byte at a time, with nothing to give in between.
    struct Trickle<'a>(&'a [u8], bool);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 = !self.1;
            if self.1 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let Some((&first, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buf[0] = first;
            self.0 = rest;
            Ok(1)
        }
    }

    #[test]
    fn read_bounded_waits_a_bounded_time_for_data() {
        let err = read_within("fifo", Silent, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, Error::ReadSpec { .. }), "{err}");
        let why = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            why.is_some_and(|w| w.contains("no end of its data after 0 s")),
            "{err:?}"
        );
        assert_eq!(err.exit_code(), 2);
        // Data that comes in pieces is read whole.
        let text = "[memory]\nsize = \"1GiB\"\n";
        let read = read_within("fifo", Trickle(text.as_bytes(), false), MAX_READ_WAIT).unwrap();
        assert_eq!(read, text);
    }

    #[test]
    fn read_bounded_binary_is_refused() {
        let err = read_bounded("x", &b"ab\xff\xfe"[..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "x is not UTF-8 text (bad byte at offset 2)"
        );
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn host_file_is_read_whole_up_to_its_limit() {
        let dir = std::env::temp_dir().join(format!("memvisor-host-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("meminfo");
        std::fs::write(&file, "MemTotal: 1 kB\n").unwrap();
        assert_eq!(
            read_host_file(&file, 15).unwrap().unwrap(),
            "MemTotal: 1 kB\n"
        );
        let err = read_host_file(&file, 14).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} is larger than 14 bytes, the most read of it",
                file.display()
            )
        );
        assert_eq!(err.exit_code(), 1);
        // What cannot be read (absent, a folder, not UTF-8) is said as before, not refused.
        let absent = read_host_file(&dir.join("absent"), 15)
            .unwrap()
            .unwrap_err();
        assert_eq!(absent.kind(), io::ErrorKind::NotFound);
        assert!(read_host_file(&dir, 15).unwrap().is_err());
        std::fs::write(&file, b"\xff").unwrap();
        assert!(read_host_file(&file, 15).unwrap().is_err());
        // A FIFO no one writes is not waited for.
        let fifo = dir.join("fifo");
        if std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(read_host_file(&fifo, 15).unwrap().is_err());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn pipe_whose_writer_stays_silent_is_refused_in_time() {
        use std::io::Write;
        let (reader, mut writer) = std::io::pipe().unwrap();
        writer.write_all(b"[memory]\n").unwrap();
        let err = read_waiting("<stdin>", reader, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, Error::ReadSpec { .. }), "{err}");
        let why = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            why.is_some_and(|w| w.contains("no end of its data")),
            "{err:?}"
        );
        drop(writer);
        // A pipe closed after its data is read whole.
        let (reader, mut writer) = std::io::pipe().unwrap();
        writer.write_all(b"[memory]\n").unwrap();
        drop(writer);
        assert_eq!(
            read_waiting("<stdin>", reader, MAX_READ_WAIT).unwrap(),
            "[memory]\n"
        );
    }

    /// The threads of this process (`/proc/self/task`).
    #[cfg(target_os = "linux")]
    fn threads() -> usize {
        std::fs::read_dir("/proc/self/task").unwrap().count()
    }

    /// A pipe whose writer never writes, read as standard input is, leaves no thread behind
    /// once it is refused. Run in a process of its own (one test at a time), so that no other
    /// test's threads change the count.
    #[test]
    #[cfg(target_os = "linux")]
    #[cfg_attr(miri, ignore)]
    fn silent_pipe_leaves_no_thread_behind() {
        const CHILD: &str = "MEMVISOR_SILENT_PIPE_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let status = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "input::tests::silent_pipe_leaves_no_thread_behind",
                    "--exact",
                    "--test-threads=1",
                    "--nocapture",
                ])
                .env(CHILD, "1")
                .status()
                .unwrap();
            assert!(status.success(), "{status}");
            return;
        }
        let (reader, writer) = std::io::pipe().unwrap();
        let before = threads();
        let err = read_waiting("<stdin>", reader, Duration::from_millis(200)).unwrap_err();
        let why = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            why.is_some_and(|w| w.contains("no end of its data")),
            "{err:?}"
        );
        assert_eq!(threads(), before, "a thread is left behind");
        drop(writer);
    }

    /// A wait cut short by a signal (`EINTR`) is waited again, and the data read whole.
    #[test]
    fn interrupted_wait_is_retried() {
        let mut interruptions = 3;
        let text = read_until("x", &b"[memory]\n"[..], MAX_READ_WAIT, |_, _| {
            if interruptions == 0 {
                return Ok(true);
            }
            interruptions -= 1;
            Err(io::ErrorKind::Interrupted.into())
        })
        .unwrap();
        assert_eq!((text.as_str(), interruptions), ("[memory]\n", 0));
    }

    /// A writer that writes more than a pipe holds, a little at a time, then closes: every
    /// byte is read, in order.
    #[test]
    #[cfg(unix)]
    #[cfg_attr(miri, ignore)]
    fn slow_writer_past_one_pipe_buffer_is_read_whole() {
        use std::io::Write;
        let line = |i: usize| format!("# line {i:06} {}\n", "x".repeat(80));
        let text: String = (0..3000).map(line).collect();
        assert!(text.len() > 4 * (64 << 10) && text.len() <= MAX_SPEC_BYTES);
        let (reader, mut writer) = std::io::pipe().unwrap();
        let sent = text.clone();
        let writing = std::thread::spawn(move || {
            for chunk in sent.as_bytes().chunks(50_000) {
                writer.write_all(chunk).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let got = read_waiting("<stdin>", reader, MAX_READ_WAIT).unwrap();
        writing.join().unwrap();
        assert!(got == text, "{} bytes of {}", got.len(), text.len());
    }

    /// A regular file and `/dev/null` given as standard input are read at once, as a pipe
    /// that is closed.
    #[test]
    #[cfg(unix)]
    #[cfg_attr(miri, ignore)]
    fn regular_file_and_dev_null_are_read_at_once() {
        let null = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(read_waiting("<stdin>", null, MAX_READ_WAIT).unwrap(), "");
        let path = std::env::temp_dir().join(format!("memvisor-stdin-{}", std::process::id()));
        let text = "[memory]\nsize = \"1GiB\"\n".repeat(4000);
        std::fs::write(&path, &text).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let got = read_waiting("<stdin>", file, MAX_READ_WAIT);
        std::fs::remove_file(&path).unwrap();
        assert!(got.unwrap() == text);
    }

    /// Two readers of one pipe whose writer writes a byte and then keeps it open: one of them
    /// takes the byte, and neither waits past its time.
    #[test]
    #[cfg(unix)]
    #[cfg_attr(miri, ignore)]
    fn pipe_shared_with_another_reader_is_refused_in_time() {
        shared_pipe_is_refused_in_time(Path::new("/proc/self/fd"));
    }

    /// Where this process's descriptors cannot be opened again (no `/proc`: a container or
    /// chroot without it).
    const NO_PROC: &str = "/nonexistent/proc/self/fd";

    /// [`pipe_shared_with_another_reader_is_refused_in_time`] without `/proc`.
    #[test]
    #[cfg(unix)]
    #[cfg_attr(miri, ignore)]
    fn pipe_shared_with_another_reader_is_refused_in_time_without_proc() {
        shared_pipe_is_refused_in_time(Path::new(NO_PROC));
    }

    fn shared_pipe_is_refused_in_time(fd_dir: &Path) {
        use std::io::Write;
        for _ in 0..20 {
            let (reader, mut writer) = std::io::pipe().unwrap();
            let other = reader.try_clone().unwrap();
            let wait = Duration::from_millis(300);
            let (tx, rx) = std::sync::mpsc::channel();
            for r in [reader, other] {
                let tx = tx.clone();
                let fd_dir = fd_dir.to_owned();
                std::thread::spawn(move || {
                    let _ = tx.send(read_waiting_via("<stdin>", r, wait, &fd_dir).is_err());
                });
            }
            std::thread::sleep(Duration::from_millis(50));
            writer.write_all(b"x").unwrap();
            for _ in 0..2 {
                let refused = rx.recv_timeout(Duration::from_secs(60));
                assert_eq!(refused, Ok(true), "a reader waits past its time");
            }
            drop(writer);
        }
    }

    /// A FIFO (made with `mkfifo`) that two readers read through one open file description,
    /// as two commands given `< fifo` by one shell: one of them takes the writer's byte, and
    /// neither waits past its time, with `/proc` and without. The description's flags are as
    /// they were once both are done.
    #[test]
    #[cfg(target_os = "linux")]
    #[cfg_attr(miri, ignore)]
    fn fifo_shared_with_another_reader_is_refused_in_time() {
        use std::io::Write;

        for fd_dir in [Path::new("/proc/self/fd"), Path::new(NO_PROC)] {
            for _ in 0..5 {
                let Some((dir, reader, mut writer)) = blocking_fifo("shared-fifo") else {
                    return;
                };
                let flags = rustix::fs::fcntl_getfl(&reader).unwrap();
                let other = reader.try_clone().unwrap();
                let wait = Duration::from_millis(300);
                let (tx, rx) = std::sync::mpsc::channel();
                let readers: Vec<_> = [reader.try_clone().unwrap(), other]
                    .into_iter()
                    .map(|r| {
                        let tx = tx.clone();
                        let fd_dir = fd_dir.to_owned();
                        std::thread::spawn(move || {
                            let _ = tx.send(read_waiting_via("<stdin>", r, wait, &fd_dir).is_err());
                        })
                    })
                    .collect();
                std::thread::sleep(Duration::from_millis(50));
                writer.write_all(b"x").unwrap();
                for _ in 0..2 {
                    let refused = rx.recv_timeout(Duration::from_secs(60));
                    assert_eq!(
                        refused,
                        Ok(true),
                        "a reader waits past its time ({fd_dir:?})"
                    );
                }
                for r in readers {
                    r.join().unwrap();
                }
                assert_eq!(
                    rustix::fs::fcntl_getfl(&reader).unwrap(),
                    flags,
                    "the flags of the description are changed ({fd_dir:?})"
                );
                drop(writer);
                std::fs::remove_dir_all(&dir).unwrap();
            }
        }
    }

    /// Without `/proc`, a read of a blocking pipe, socket or FIFO that has nothing yet, whose
    /// writer is there, says so (`WouldBlock`) instead of waiting; what the writer writes is
    /// then read; the FIFO's description has its flags back once the reader is dropped.
    #[test]
    #[cfg(target_os = "linux")]
    #[cfg_attr(miri, ignore)]
    fn empty_pipe_socket_and_fifo_are_not_waited_for_without_proc() {
        use std::io::Write;

        /// Reads `reader` twice on another thread: before and after `writer` writes.
        fn reads_twice(
            reader: impl Read + std::os::fd::AsFd + Send + 'static,
            mut writer: impl Write,
        ) {
            let (tx, rx) = std::sync::mpsc::channel();
            let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
            let reading = std::thread::spawn(move || {
                let mut unwaiting = Unwaiting::new(reader, Path::new(NO_PROC));
                let mut buf = [0u8; 16];
                let _ = tx.send(unwaiting.read(&mut buf).map_err(|e| e.kind()));
                go_rx.recv().unwrap();
                let _ = tx.send(unwaiting.read(&mut buf).map_err(|e| e.kind()));
            });
            let first = rx.recv_timeout(Duration::from_secs(60));
            assert_eq!(first, Ok(Err(io::ErrorKind::WouldBlock)), "the read waits");
            writer.write_all(b"abc").unwrap();
            go_tx.send(()).unwrap();
            assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok(Ok(3)));
            reading.join().unwrap();
        }

        let (reader, writer) = std::io::pipe().unwrap();
        reads_twice(reader, writer);
        let (reader, writer) = std::os::unix::net::UnixStream::pair().unwrap();
        reads_twice(reader, writer);

        if let Some((dir, reader, writer)) = blocking_fifo("empty-fifo") {
            let flags = rustix::fs::fcntl_getfl(&reader).unwrap();
            reads_twice(reader.try_clone().unwrap(), writer);
            assert_eq!(rustix::fs::fcntl_getfl(&reader).unwrap(), flags);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    /// A terminal that another program left non-blocking (`O_NONBLOCK`) is read as it is
    /// typed, however long the typing takes, as a blocking one is: here a non-blocking pipe
    /// whose writer writes nothing for longer than [`MAX_READ_WAIT`], then the rest.
    #[test]
    #[cfg(unix)]
    #[cfg_attr(miri, ignore)]
    fn non_blocking_terminal_is_read_without_a_time_limit() {
        use std::io::Write;

        let (reader, mut writer) = std::io::pipe().unwrap();
        let flags = rustix::fs::fcntl_getfl(&reader).unwrap();
        rustix::fs::fcntl_setfl(&reader, flags | rustix::fs::OFlags::NONBLOCK).unwrap();
        let typing = std::thread::spawn(move || {
            writer.write_all(b"[memory]\n").unwrap();
            std::thread::sleep(MAX_READ_WAIT + Duration::from_secs(1));
            // Refused already, the reader is gone: the assertion below says so.
            let _ = writer.write_all(b"size = \"1GiB\"\n");
        });
        let got = read_typed("<stdin>", reader);
        typing.join().unwrap();
        assert_eq!(got.unwrap(), "[memory]\nsize = \"1GiB\"\n");
    }

    /// Makes a FIFO (with `mkfifo`) in a directory of its own and opens it as a shell opens
    /// `< fifo`: a blocking reader, once the writer is there. `None` without `mkfifo`.
    #[cfg(target_os = "linux")]
    fn blocking_fifo(name: &str) -> Option<(std::path::PathBuf, std::fs::File, std::fs::File)> {
        use std::os::unix::fs::OpenOptionsExt;

        let dir = std::env::temp_dir().join(format!("memvisor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        if !std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success())
        {
            std::fs::remove_dir_all(&dir).unwrap();
            return None;
        }
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        let flags = rustix::fs::fcntl_getfl(&reader).unwrap() - rustix::fs::OFlags::NONBLOCK;
        rustix::fs::fcntl_setfl(&reader, flags).unwrap();
        Some((dir, reader, writer))
    }

    /// A FIFO whose writer wrote the spec and closed it before the command reads it (`cat
    /// spec > fifo &` ahead of `memvisor plan - < fifo`) is read whole, with `/proc` and without,
    /// at once: its end is seen though the description opened again through `/proc` came after
    /// the writer left.
    #[test]
    #[cfg(target_os = "linux")]
    #[cfg_attr(miri, ignore)]
    fn fifo_whose_writer_is_gone_is_read_to_its_end() {
        use std::io::Write;

        for fd_dir in [Path::new("/proc/self/fd"), Path::new(NO_PROC)] {
            let Some((dir, reader, mut writer)) = blocking_fifo("writer-gone") else {
                return;
            };
            writer.write_all(b"[memory]\n").unwrap();
            drop(writer);
            let got = read_waiting_via("<stdin>", &reader, MAX_READ_WAIT, fd_dir);
            assert_eq!(got.unwrap(), "[memory]\n", "{fd_dir:?}");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    /// Two readers of one FIFO description without `/proc`, one after the other: the first
    /// sets `O_NONBLOCK` on it, the second finds it set. Once the first is done and has given
    /// the description its flags back, the second's reads still do not wait, and the
    /// description has its flags back once both are done, whichever is done first. Each read
    /// runs on a thread of its own, so that one that waited is seen rather than hanging the
    /// test; nothing depends on how long anything takes.
    #[test]
    #[cfg(target_os = "linux")]
    #[cfg_attr(miri, ignore)]
    fn second_reader_of_a_flagged_fifo_does_not_wait_once_the_first_is_done() {
        use std::io::Write;

        type Reader = Unwaiting<'static, std::fs::File>;

        /// Reads `reader` on another thread; its result, and the reader back.
        fn read_apart(mut reader: Reader, writer: &mut std::fs::File) -> (io::ErrorKind, Reader) {
            let (tx, rx) = std::sync::mpsc::channel();
            let reading = std::thread::spawn(move || {
                let mut buf = [0u8; 16];
                let got = reader.read(&mut buf).map(|_| ()).map_err(|e| e.kind());
                let _ = tx.send(());
                (got, reader)
            });
            // A read that waits for the writer ends when the writer writes, so the test ends.
            if rx.recv_timeout(Duration::from_secs(60)).is_err() {
                writer.write_all(b"late").unwrap();
            }
            let (got, reader) = reading.join().unwrap();
            (got.err().unwrap_or(io::ErrorKind::Other), reader)
        }

        for first_done_first in [true, false] {
            let Some((dir, reader, mut writer)) = blocking_fifo("flagged-twice") else {
                return;
            };
            let flags = rustix::fs::fcntl_getfl(&reader).unwrap();
            let mut first: Reader = Unwaiting::new(reader.try_clone().unwrap(), Path::new(NO_PROC));
            let second: Reader = Unwaiting::new(reader.try_clone().unwrap(), Path::new(NO_PROC));
            writer.write_all(b"x").unwrap();
            let mut buf = [0u8; 16];
            assert_eq!(first.read(&mut buf).unwrap(), 1);
            let (got, second) = read_apart(second, &mut writer);
            assert_eq!(got, io::ErrorKind::WouldBlock, "the second reader waits");
            let (first, second) = if first_done_first {
                drop(first);
                let (got, second) = read_apart(second, &mut writer);
                assert_eq!(
                    got,
                    io::ErrorKind::WouldBlock,
                    "the second reader waits once the first is done"
                );
                (None, second)
            } else {
                (Some(first), second)
            };
            drop(second);
            drop(first);
            assert_eq!(
                rustix::fs::fcntl_getfl(&reader).unwrap(),
                flags,
                "the flags of the description are changed"
            );
            drop(writer);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    /// Without `/proc`, a pipe and a FIFO are read whole, past one pipe buffer, from a writer
    /// that writes a little at a time.
    #[test]
    #[cfg(target_os = "linux")]
    #[cfg_attr(miri, ignore)]
    fn pipe_and_fifo_are_read_whole_without_proc() {
        use std::io::Write;

        let line = |i: usize| format!("# line {i:06} {}\n", "x".repeat(80));
        let text: String = (0..3000).map(line).collect();
        let send = |mut writer: std::fs::File| {
            let sent = text.clone();
            std::thread::spawn(move || {
                for chunk in sent.as_bytes().chunks(50_000) {
                    writer.write_all(chunk).unwrap();
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let (reader, writer) = std::io::pipe().unwrap();
        let writing = send(std::os::fd::OwnedFd::from(writer).into());
        let got = read_waiting_via("<stdin>", reader, MAX_READ_WAIT, Path::new(NO_PROC));
        writing.join().unwrap();
        assert!(got.as_ref().is_ok_and(|got| *got == text), "{got:?}");

        if let Some((dir, reader, writer)) = blocking_fifo("fifo-whole") {
            let flags = rustix::fs::fcntl_getfl(&reader).unwrap();
            let writing = send(writer);
            let got = read_waiting_via("<stdin>", &reader, MAX_READ_WAIT, Path::new(NO_PROC));
            writing.join().unwrap();
            assert!(got.as_ref().is_ok_and(|got| *got == text), "{got:?}");
            assert_eq!(rustix::fs::fcntl_getfl(&reader).unwrap(), flags);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
