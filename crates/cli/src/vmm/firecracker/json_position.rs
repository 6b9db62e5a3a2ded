//! Where in a JSON file a serde_json error is: the field serde was in, and the whole value
//! the error is about (or the character a syntax error is at), as a line and column.

use serde::Deserialize;

use crate::error::{Problem, SpecError};
use crate::spec::Source;

/// Reads `T` from `text`, the part of the file `src` that starts at byte `base`; `field` is the
/// path of `text` in the file (empty for the whole file). A mistake is a [`SpecError`] with
/// the field serde was in and its line and column in the file.
pub(super) fn from_json<'a, T: Deserialize<'a>>(
    src: Source<'_>,
    base: usize,
    text: &'a str,
    field: &str,
) -> std::result::Result<T, SpecError> {
    from_json_as("not a Firecracker configuration", src, base, text, field)
}

/// [`from_json`] for another kind of file: a mistake in a value is said to make it `what`
/// (`not a Cloud Hypervisor VmConfig`); a syntax error is `not JSON`.
pub(in crate::vmm) fn from_json_as<'a, T: Deserialize<'a>>(
    what: &str,
    src: Source<'_>,
    base: usize,
    text: &'a str,
    field: &str,
) -> std::result::Result<T, SpecError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = crate::spec::field_path(e.path());
        let path = if field.is_empty() || inner.is_empty() || inner.starts_with('[') {
            format!("{field}{inner}")
        } else {
            format!("{field}.{inner}")
        };
        json_error(what, src, base, text, path, e.inner())
    })?;
    de.end()
        .map_err(|e| json_error(what, src, base, text, field.to_owned(), &e))?;
    Ok(value)
}

/// `e`, found in `text` (the part of the file `src` from byte `base`), as a [`SpecError`] at
/// its line and column in the file.
fn json_error(
    kind: &str,
    src: Source<'_>,
    base: usize,
    text: &str,
    field: String,
    e: &serde_json::Error,
) -> SpecError {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let mut message = full.strip_suffix(&suffix).unwrap_or(&full);
    // serde_json refuses a byte order mark as it refuses any other character before the
    // value, and the excerpt cannot show it (the mark is no part of a line): say what it is.
    if base == 0 && text.starts_with('\u{feff}') && e.is_syntax() && e.line() == 1 {
        message = "the text starts with a byte order mark (U+FEFF), which JSON does not allow: \
                   save it without one";
    }
    let what = if e.is_syntax() || e.is_eof() {
        "not JSON"
    } else {
        kind
    };
    // serde_json counts lines from 1 and columns in bytes: the bytes of the line it has read
    // (0 at the start of a line).
    let span = (e.line() > 0).then(|| {
        let line_start = if e.line() == 1 {
            0
        } else {
            text.match_indices('\n')
                .nth(e.line() - 2)
                .map_or(text.len(), |(i, _)| i + 1)
        };
        let mut read = (line_start + e.column()).min(text.len());
        while !text.is_char_boundary(read) {
            read -= 1;
        }
        let span = if e.is_data() {
            data_span(text, read, message.starts_with("missing field"))
        } else {
            // A syntax error is at the byte serde_json stopped at (the start of its line when
            // it read none of it), past any white space.
            let mut at = (line_start + e.column().saturating_sub(1)).min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            if let Some(skip) = text[at..].find(|c: char| !is_json_space(c))
                && text[at..].starts_with(is_json_space)
            {
                at += skip;
            }
            one_char(text, at)
        };
        base + span.start..base + span.end
    });
    src.error(
        field,
        span,
        Problem::Invalid(format!("{what}: {}", crate::render::escape(message))),
    )
}

/// JSON's white space.
fn is_json_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// A byte of a number or of `true`, `false`, `null`.
fn is_scalar_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-')
}

/// The character at byte `at` of `text` (nothing at its end).
fn one_char(text: &str, at: usize) -> std::ops::Range<usize> {
    at..at + text[at..].chars().next().map_or(0, char::len_utf8)
}

/// The whole JSON value a data error of serde_json is about, given the byte `read` it had
/// read up to (its line and column). serde_json reads a scalar, string or key before it
/// finds it is wrong (it ends just before `read`), but only peeks at the `[` or `{` of an
/// array or object of the wrong type (it starts at the first byte from `read` that is not
/// white space, the byte before being the `:`, `,`, `[` or `{` that precedes a value). A
/// missing field (`missing`) is found once its object is read: it is that object's `}`.
fn data_span(text: &str, read: usize, missing: bool) -> std::ops::Range<usize> {
    let bytes = text.as_bytes();
    let is_space = |b: u8| is_json_space(char::from(b));
    let next = (read..bytes.len())
        .find(|&i| !is_space(bytes[i]))
        .unwrap_or(bytes.len());
    let last = (0..read).rev().find(|&i| !is_space(bytes[i]));
    match last {
        Some(last) if missing => one_char(text, last),
        Some(last) if !matches!(bytes[last], b':' | b',' | b'[' | b'{') => {
            value_ending_at(text, last)
        }
        _ => value_starting_at(text, next),
    }
}

/// The JSON value that starts at byte `at`: an array or object to its matching bracket
/// (strings skipped: a bracket in one does not count), a string to its closing quote, a
/// number or literal to its last byte; anything else (a closing bracket) is that character.
fn value_starting_at(text: &str, at: usize) -> std::ops::Range<usize> {
    let bytes = text.as_bytes();
    match bytes.get(at) {
        Some(b'[' | b'{') => {
            let mut depth = 0usize;
            for (i, b) in outside_strings(bytes, at) {
                match b {
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            return at..i + 1;
                        }
                    }
                    _ => {}
                }
            }
            one_char(text, at)
        }
        Some(b'"') => {
            let mut escaped = false;
            for (i, &b) in bytes.iter().enumerate().skip(at + 1) {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => return at..i + 1,
                    _ => {}
                }
            }
            one_char(text, at)
        }
        Some(&b) if is_scalar_byte(b) => {
            let end = (at..bytes.len())
                .find(|&i| !is_scalar_byte(bytes[i]))
                .unwrap_or(bytes.len());
            at..end
        }
        _ => one_char(text, at.min(text.len())),
    }
}

/// The JSON value whose last byte is `at`: a string back to its opening quote, an array or
/// object back to its opening bracket, a number or literal back to its first byte; anything
/// else is that character.
fn value_ending_at(text: &str, at: usize) -> std::ops::Range<usize> {
    let bytes = text.as_bytes();
    match bytes[at] {
        b'"' => {
            // The opening quote: the first one before that no odd run of `\` escapes.
            let mut i = at;
            while let Some(q) = text[..i].rfind('"') {
                let backslashes = text[..q].bytes().rev().take_while(|&b| b == b'\\').count();
                if backslashes % 2 == 0 {
                    return q..at + 1;
                }
                i = q;
            }
            one_char(text, at)
        }
        b']' | b'}' => {
            // The bracket it closes, read from the start of the text (where no string is
            // open), strings skipped.
            let mut open = Vec::new();
            for (i, b) in outside_strings(&bytes[..=at], 0) {
                match b {
                    b'[' | b'{' => open.push(i),
                    b']' | b'}' => {
                        let start = open.pop();
                        if i == at {
                            return start.map_or_else(|| one_char(text, at), |s| s..at + 1);
                        }
                    }
                    _ => {}
                }
            }
            one_char(text, at)
        }
        b if is_scalar_byte(b) => {
            let start = (0..at)
                .rev()
                .find(|&i| !is_scalar_byte(bytes[i]))
                .map_or(0, |i| i + 1);
            start..at + 1
        }
        _ => one_char(text, at),
    }
}

/// The bytes of JSON `bytes` from `from` (where no string is open) that lie outside strings,
/// with their offsets; the quotes of strings are left out too.
fn outside_strings(bytes: &[u8], from: usize) -> impl Iterator<Item = (usize, u8)> + '_ {
    let mut in_string = false;
    let mut escaped = false;
    bytes
        .iter()
        .enumerate()
        .skip(from)
        .filter_map(move |(i, &b)| {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                return None;
            }
            if b == b'"' {
                in_string = true;
                return None;
            }
            Some((i, b))
        })
}
