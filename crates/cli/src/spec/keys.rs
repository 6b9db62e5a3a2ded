//! The keys of a spec, found by one pass over its text before the TOML reader builds any table:
//! a dotted key or table header of more than [`MAX_KEY_PARTS`] parts, or more than
//! [`MAX_DOTTED_PARTS`] parts after the first in all keys, is refused here with its position.
//! The reader builds a table for every part of a dotted key but the last (its own limit, 80
//! parts, comes without a position): a 1 MiB spec of long dotted keys cost some 500 MB and a
//! third of a second, where one of as many plain keys or `[[device]]` headers costs a few.
//!
//! The pass knows only enough TOML to tell keys from the rest: comments, the four kinds of
//! strings, and runs of bare words and quoted strings joined by dots. A run followed by `=` or
//! `]` is a key or a header (a float or time in an array, such as `[1.5]`, also counts: two
//! parts, which no limit here comes near). Anything the pass gets wrong about a document that
//! is not TOML only changes which error it gets: the reader refuses it afterwards.

/// Most parts of one dotted key or table header (`a.b.c` has 3). A spec's deepest key has 3.
pub(crate) const MAX_KEY_PARTS: usize = 16;

/// Most parts after the first, over all dotted keys and table headers of one spec (`a.b.c`
/// has 2): the tables dotting makes. Specs name their fields within their tables, so a spec
/// written by hand has few or none; at the limit the reader's tables take some 20 MB.
pub(crate) const MAX_DOTTED_PARTS: usize = 16_384;

/// A key past a limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyLimit {
    /// Where the key starts and ends in the text.
    pub(crate) span: core::ops::Range<usize>,
    /// Its parts (for [`Exceeded::Parts`]).
    pub(crate) parts: usize,
    /// Which limit.
    pub(crate) exceeded: Exceeded,
    /// The first part of the key outside any inline table that holds this key (the key itself
    /// when it is not in one), if it is a bare word: `q` for `q = { a.b = 1 }`.
    pub(crate) outer: Option<core::ops::Range<usize>>,
}

/// Which limit a key broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exceeded {
    /// More than [`MAX_KEY_PARTS`] parts.
    Parts,
    /// The spec's parts after the first passed [`MAX_DOTTED_PARTS`] with this key.
    Dotted,
}

/// Whether `b` may be part of a bare word (a bare key, a number, a date's digits).
pub(super) fn bare(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+')
}

/// The first key of `text` past a limit, in one pass.
pub(crate) fn first_past_limit(text: &str) -> Option<KeyLimit> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut dotted = 0usize;
    // Depth of inline tables, and the first part of the key that opened the outermost one.
    let mut braces = 0usize;
    let mut outer: Option<core::ops::Range<usize>> = None;
    while i < b.len() {
        match b[i] {
            b'#' => i = comment_end(b, i),
            b'{' => {
                braces += 1;
                i += 1;
            }
            b'}' => {
                braces = braces.saturating_sub(1);
                i += 1;
            }
            // A run starts with a bare word or a quoted part; a string that no dot follows is
            // a run of one part, and so skipped whole.
            c if bare(c) || c == b'"' || c == b'\'' => {
                // A run: part (space? '.' space? part)*.
                let start = i;
                let first = start..word_or_string_end(b, start);
                let mut parts = 1;
                let mut end = first.end;
                loop {
                    let after = skip_blanks(b, end);
                    if b.get(after) != Some(&b'.') {
                        break;
                    }
                    let next = skip_blanks(b, after + 1);
                    match b.get(next) {
                        Some(&c) if bare(c) || c == b'"' || c == b'\'' => {
                            end = word_or_string_end(b, next);
                            parts += 1;
                        }
                        _ => break,
                    }
                }
                i = end;
                let after = skip_blanks(b, end);
                if matches!(b.get(after), Some(b'=' | b']')) {
                    // A bare part is bare characters only; a quoted one starts with its quote.
                    if braces == 0 {
                        outer = bare(b[start]).then_some(first);
                    }
                    dotted = dotted.saturating_add(parts - 1);
                    let exceeded = if parts > MAX_KEY_PARTS {
                        Exceeded::Parts
                    } else if dotted > MAX_DOTTED_PARTS {
                        Exceeded::Dotted
                    } else {
                        continue;
                    };
                    return Some(KeyLimit {
                        span: start..end,
                        parts,
                        exceeded,
                        outer,
                    });
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// The offset past the part at `i`: a quoted string or a bare word.
pub(super) fn word_or_string_end(b: &[u8], i: usize) -> usize {
    match b.get(i) {
        Some(b'"' | b'\'') => string_end(b, i),
        _ => {
            let mut j = i;
            while j < b.len() && bare(b[j]) {
                j += 1;
            }
            j
        }
    }
}

/// The offset past the blanks (spaces and tabs) at `i`.
pub(super) fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

/// The offset of the end of the comment at `i`: its line's `\n`, a carriage return (a lone
/// one is an error in TOML, after which the reader goes on with the rest of the line, so the
/// passes must read it too), or the end of the text.
pub(super) fn comment_end(b: &[u8], i: usize) -> usize {
    b[i..]
        .iter()
        .position(|&c| c == b'\n' || c == b'\r')
        .map_or(b.len(), |n| i + n)
}

/// The offset past the string that starts at `i` (a `"` or `'`): basic and literal strings end
/// at their closing quote or the line's end (also after a backslash: a one-line string cannot
/// hold a line break, and the reader goes on after it); multi-line ones at their closing three
/// quotes (and up to two quotes more, which belong to the string). Unclosed strings run to the
/// end.
pub(super) fn string_end(b: &[u8], i: usize) -> usize {
    let quote = b[i];
    let triple = b.get(i + 1) == Some(&quote) && b.get(i + 2) == Some(&quote);
    let basic = quote == b'"';
    let mut j = if triple { i + 3 } else { i + 1 };
    while j < b.len() {
        let c = b[j];
        if !triple && (c == b'\n' || c == b'\r') {
            return j;
        }
        if basic && c == b'\\' && (triple || !matches!(b.get(j + 1), Some(b'\n' | b'\r'))) {
            j += 2;
            continue;
        }
        if c == quote {
            if !triple {
                return j + 1;
            }
            if b.get(j + 1) == Some(&quote) && b.get(j + 2) == Some(&quote) {
                let mut end = j + 3;
                while end < j + 5 && b.get(end) == Some(&quote) {
                    end += 1;
                }
                return end;
            }
        }
        j += 1;
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deep(parts: usize) -> String {
        vec!["x"; parts].join(".")
    }

    #[test]
    fn keys_within_limits_pass() {
        let text = format!(
            "[memory]\nsize = \"1.5GiB\" # a.b.c.d\n[serial]\n{} = 1\nt = 07:32:00.999\nf = [1.5, 2.5]\ns = \"{}\"\nm = '''\n{}\n'''\n",
            deep(MAX_KEY_PARTS),
            deep(100),
            deep(100)
        );
        assert_eq!(first_past_limit(&text), None);
    }

    #[test]
    fn deep_key_found_where_it_starts_with_its_outer_key() {
        let key = deep(MAX_KEY_PARTS + 1);
        let text = format!("[serial]\n  {key} = 1\n");
        let found = first_past_limit(&text).unwrap();
        assert_eq!(found.exceeded, Exceeded::Parts);
        assert_eq!(found.parts, MAX_KEY_PARTS + 1);
        assert_eq!(&text[found.span.clone()], key);
        assert_eq!(&text[found.outer.unwrap()], "x");
        // In a multi-line inline table: the key's own position, and the key that opened it.
        let text = format!("[serial]\nq = {{\n  {key} = 1,\n}}\n");
        let found = first_past_limit(&text).unwrap();
        assert_eq!(found.span.start, text.find("x.").unwrap());
        assert_eq!(&text[found.outer.unwrap()], "q");
        // Quoted parts and blanks around the dots are parts too; a comma in a quoted part is
        // not an inline table's.
        let quoted = format!("\"a,b\" . {}", deep(MAX_KEY_PARTS));
        let text = format!("[serial]\n{quoted} = 1\n");
        let found = first_past_limit(&text).unwrap();
        assert_eq!(&text[found.span.clone()], quoted);
        assert_eq!(found.outer, None);
        // A table header.
        let text = format!("[memory]\n[{key}]\n");
        let found = first_past_limit(&text).unwrap();
        assert_eq!(found.span.start, 10);
    }

    #[test]
    fn too_many_dotted_parts_found_at_the_key_past_the_limit() {
        let text = "a.b = 1\n".repeat(MAX_DOTTED_PARTS + 1);
        let found = first_past_limit(&text).unwrap();
        assert_eq!(found.exceeded, Exceeded::Dotted);
        assert_eq!(found.span.start, 8 * MAX_DOTTED_PARTS);
        // Plain keys and headers of one part make no table by dotting: no limit here.
        let text = "[[device]]\na = 1\n".repeat(MAX_DOTTED_PARTS + 1);
        assert_eq!(first_past_limit(&text), None);
    }

    #[test]
    fn strings_and_comments_hide_what_is_in_them() {
        let key = deep(MAX_KEY_PARTS + 1);
        for text in [
            format!("# {key} = 1\n"),
            format!("s = \"{key} = 1\"\n"),
            format!("s = '{key} = 1'\n"),
            format!("s = \"\"\"\n{key} = 1\n\"\"\"\n"),
            format!("s = \"\"\"\\\"\"\"\n{key} = 1\n\"\"\"\n"),
            format!("s = '''\n{key} = 1\n'''''\n"),
            format!("s = \"\\\"{key} = 1\"\n"),
        ] {
            assert_eq!(first_past_limit(&text), None, "{text}");
        }
        // After a string closes, keys count again.
        let text = format!("s = \"\"\"x\"\"\"\"\"\n{key} = 1\n");
        assert!(first_past_limit(&text).is_some());
    }
}
