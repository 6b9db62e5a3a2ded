//! Reading a spec's text from a file or standard input, bounded by [`MAX_SPEC_BYTES`].

use std::io::{self, Read};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::spec::MAX_SPEC_BYTES;

/// The path that names standard input.
pub const STDIN: &str = "-";

/// How long a spec that is not a regular file (a FIFO, a pipe, a device) may keep the
/// command waiting for its data: 10 seconds from the start of the reading.
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

/// [`read_bounded`], waiting at most `wait` for data that is not there yet.
fn read_within(path: &str, mut reader: impl Read, wait: Duration) -> Result<String> {
    let failed = |source| Error::ReadSpec {
        path: path.to_owned(),
        source,
    };
    let start = Instant::now();
    let limit = MAX_SPEC_BYTES.saturating_add(1);
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    while bytes.len() < limit {
        let want = (limit - bytes.len()).min(buf.len());
        match reader.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if start.elapsed() >= wait {
                    return Err(failed(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no end of its data after {} s (a FIFO or device whose writer \
                             neither writes nor closes it)",
                            wait.as_secs()
                        ),
                    )));
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
/// input is read as it is given (a terminal waits for what is typed).
///
/// # Errors
/// As [`read_bounded`]; opening the file fails with [`Error::ReadSpec`].
pub fn read_spec(path: impl AsRef<std::path::Path>) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt;

    let path = path.as_ref();
    if path.as_os_str() == STDIN {
        return read_bounded("<stdin>", std::io::stdin().lock());
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

#[cfg(test)]
mod tests {
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
        let start = Instant::now();
        let err = read_within("fifo", Silent, Duration::from_millis(100)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5), "{err}");
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
}
