//! Reading a spec's text from a file or standard input, bounded by [`MAX_SPEC_BYTES`].

use std::io::Read;

use crate::error::{Error, Result};
use crate::spec::MAX_SPEC_BYTES;

/// The path that names standard input.
pub const STDIN: &str = "-";

/// Reads at most [`MAX_SPEC_BYTES`] bytes of UTF-8 text from `reader`; `path` names it in errors.
///
/// One byte more than the limit is read, never more, so an endless source (`/dev/zero`, a
/// pipe that never closes after writing enough) is refused at once instead of filling memory.
///
/// # Errors
/// [`Error::ReadSpec`] if reading fails, [`Error::SpecTooLarge`] past the limit,
/// [`Error::SpecNotUtf8`] if the text is not UTF-8.
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
    let mut bytes = Vec::new();
    let limit = u64::try_from(MAX_SPEC_BYTES).unwrap_or(u64::MAX);
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| Error::ReadSpec {
            path: path.to_owned(),
            source,
        })?;
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
/// # Errors
/// As [`read_bounded`]; opening the file fails with [`Error::ReadSpec`].
pub fn read_spec(path: impl AsRef<std::path::Path>) -> Result<String> {
    let path = path.as_ref();
    if path.as_os_str() == STDIN {
        return read_bounded("<stdin>", std::io::stdin().lock());
    }
    let shown = path.to_string_lossy();
    let file = std::fs::File::open(path).map_err(|source| Error::ReadSpec {
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
