//! The values of a spec, counted by one pass over its text before the TOML reader builds any of
//! them: more than [`MAX_VALUES`] values, more than [`MAX_KEYS`] keys, more than
//! [`MAX_TABLES`] tables and arrays, or arrays and inline tables nested more than [`MAX_DEPTH`]
//! deep are refused here with the position of
//! the first one past the limit, as is an entry of an array of tables (`[[device]]`) past the
//! most entries its list may have. The reader builds the whole document before anything is
//! checked, and every value costs it an allocation or more: 1 MiB of small inline tables
//! (`x = [{a = 0}, {a = 0}, …]`) took some 250 MB, one of `[[[[]]]]` arrays 160 MB, a flat
//! array of numbers 80 MB, and 130,000 `key = 0` lines 50 MB (a key and its value cost more
//! than an array entry, hence their own, lower, limit). Past its own depth limit (80) the reader
//! goes on reading, and building, the rest of the document.
//!
//! The pass knows the same TOML as the one over keys (`keys.rs`): comments and the four kinds
//! of strings, whose content it skips. Outside them it counts:
//! - a key and a value for each `=`, and a value for each entry of an array;
//! - a table or array for each `[` that opens an array, each `{` that opens an inline table, and
//!   each table header (`[t]`, `[[t]]`: a `[` first on its line outside any value);
//! - the headers of each list it is given (`[[device]]`, `[[ "device" ]]`): past the list's limit
//!   it goes on counting only them, for the message, and stops at the end.
//!
//! For a TOML document these are the values, arrays and tables the reader builds (the tables
//! that dotted keys make are bounded by `keys.rs`), so a document within the limits is never
//! refused here. Anything the pass gets wrong about a document that is not TOML only changes
//! which error it gets: the reader refuses it afterwards.

use core::ops::Range;

use super::keys::{bare, comment_end, skip_blanks, string_end, word_or_string_end};

/// Most values in one spec: each key's value and each entry of an array, at any depth. The
/// largest spec within the other limits has some 66,000 (64 `[[numa]]` nodes, each with 1024
/// `host_nodes`); hand-written ones a few hundred at most.
pub(crate) const MAX_VALUES: usize = 98_304;

/// Most keys in one spec (`key = value` pairs, in tables and inline tables). The largest spec
/// within the other limits has some 800 (six per device, three per node).
pub(crate) const MAX_KEYS: usize = 16_384;

/// Most tables and arrays in one spec: table headers, inline tables and arrays, at any depth.
/// The largest spec within the other limits has a few hundred (a header per device and node,
/// an array per node's `host_nodes`).
pub(crate) const MAX_TABLES: usize = 4_096;

/// Deepest nesting of arrays and inline tables in a value: the TOML reader's own limit. A
/// spec's deepest value has 2 (`numa = [{ host_nodes = [0] }]`).
pub(crate) const MAX_DEPTH: usize = 80;

/// A value past a limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ValueLimit {
    /// Where it is in the text: the first character of the value or bracket, or the whole
    /// table header.
    pub(crate) span: Range<usize>,
    /// Which limit.
    pub(crate) exceeded: Exceeded,
    /// The first part of the key whose value holds it, outside any array or inline table, if
    /// it is a bare word: `x` for `x = [[…]]`. None for a table header.
    pub(crate) outer: Option<Range<usize>>,
    /// Whether it is a table header.
    pub(crate) header: bool,
}

/// Which limit a value broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exceeded {
    /// More than [`MAX_VALUES`] values.
    Values,
    /// More than [`MAX_KEYS`] keys.
    Keys,
    /// More than [`MAX_TABLES`] tables and arrays.
    Tables,
    /// Arrays and inline tables more than [`MAX_DEPTH`] deep.
    Depth,
    /// More entries in an array of tables than its limit.
    Entries {
        /// The list (`device`).
        key: &'static str,
        /// Its limit.
        max: usize,
        /// Its entries (headers) in the whole text.
        total: usize,
    },
}

/// An array or inline table the pass is in.
#[derive(Clone, Copy, Debug)]
struct Open {
    /// An array (else an inline table).
    array: bool,
    /// In an array: the next value seen is a new entry (after `[` or `,`).
    expecting: bool,
}

/// The first value of `text` past a limit, in one pass; `lists` are the arrays of tables with
/// the most entries each may have (`("device", 96)`).
pub(crate) fn first_past_limit(text: &str, lists: &[(&'static str, usize)]) -> Option<ValueLimit> {
    let b = text.as_bytes();
    // Never deeper than `MAX_DEPTH` + 1: the pass stops there.
    let mut open: Vec<Open> = Vec::new();
    let mut values = 0usize;
    let mut keys = 0usize;
    let mut tables = 0usize;
    // Outside any value: whether only blanks came before on this line, and the first part of
    // the line's key.
    let mut line_blank = true;
    let mut key: Option<Range<usize>> = None;
    // The headers of each list so far, and the first list past its limit with that header.
    let mut entries = vec![0usize; lists.len()];
    let mut over: Option<(usize, Range<usize>)> = None;
    // A byte order mark is no part of the first line.
    let mut i = super::bom_len(text);
    let past = |at: usize, exceeded: Exceeded, key: &Option<Range<usize>>| {
        Some(ValueLimit {
            span: at..at + 1,
            exceeded,
            outer: key.clone(),
            header: false,
        })
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                if open.is_empty() {
                    line_blank = true;
                }
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => {
                i = comment_end(b, i);
                continue;
            }
            _ => {}
        }
        // A new entry of the array the pass is in.
        if over.is_none()
            && let Some(top) = open.last_mut()
            && top.array
            && top.expecting
            && !matches!(c, b',' | b']')
        {
            top.expecting = false;
            values += 1;
            if values > MAX_VALUES {
                return past(i, Exceeded::Values, &key);
            }
        }
        let at_line_start = open.is_empty() && line_blank;
        line_blank = false;
        match c {
            // A table header: its keys are the other pass's.
            b'[' if at_line_start => {
                key = None;
                let end = header_end(b, i);
                if let Some(list) = list_of(&b[i..end], lists) {
                    entries[list] += 1;
                    if over.is_none() && entries[list] > lists[list].1 {
                        over = Some((list, i..end));
                    }
                }
                if over.is_none() {
                    tables += 1;
                    if tables > MAX_TABLES {
                        return Some(ValueLimit {
                            span: i..end,
                            exceeded: Exceeded::Tables,
                            outer: None,
                            header: true,
                        });
                    }
                }
                i = end;
            }
            // Past a list's limit only its headers are counted.
            _ if over.is_some() => i = skip(b, i),
            b'[' | b'{' => {
                tables += 1;
                if tables > MAX_TABLES {
                    return past(i, Exceeded::Tables, &key);
                }
                open.push(Open {
                    array: c == b'[',
                    expecting: c == b'[',
                });
                if open.len() > MAX_DEPTH {
                    return past(i, Exceeded::Depth, &key);
                }
                i += 1;
            }
            b']' | b'}' => {
                if open.last().is_some_and(|o| o.array == (c == b']')) {
                    open.pop();
                }
                i += 1;
            }
            b',' => {
                if let Some(top) = open.last_mut()
                    && top.array
                {
                    top.expecting = true;
                }
                i += 1;
            }
            b'=' => {
                values += 1;
                keys += 1;
                let exceeded = if values > MAX_VALUES {
                    Exceeded::Values
                } else if keys > MAX_KEYS {
                    Exceeded::Keys
                } else {
                    i += 1;
                    continue;
                };
                return past(skip_blanks(b, i + 1), exceeded, &key);
            }
            b'"' | b'\'' => {
                if at_line_start {
                    key = None;
                }
                i = string_end(b, i);
            }
            c if at_line_start && bare(c) => {
                // A key at the top level: its first part names the values it holds.
                let end = word_or_string_end(b, i);
                key = Some(i..end);
                i = end;
            }
            _ => i += 1,
        }
    }
    over.map(|(list, span)| ValueLimit {
        span,
        exceeded: Exceeded::Entries {
            key: lists[list].0,
            max: lists[list].1,
            total: entries[list],
        },
        outer: None,
        header: true,
    })
}

/// The offset past the character at `i`, or past the string that starts there.
fn skip(b: &[u8], i: usize) -> usize {
    match b[i] {
        b'"' | b'\'' => string_end(b, i),
        _ => i + 1,
    }
}

/// Which of `lists` the header `header` (`[[device]]`, `[[ 'device' ]]`) is an entry of.
fn list_of(header: &[u8], lists: &[(&'static str, usize)]) -> Option<usize> {
    let inner = header
        .strip_prefix(b"[[")?
        .strip_suffix(b"]]")?
        .trim_ascii();
    let name = match inner {
        [q @ (b'"' | b'\''), name @ .., last] if last == q => name,
        name => name,
    };
    lists.iter().position(|(key, _)| key.as_bytes() == name)
}

/// The offset past the table header that starts at `i` (`[` or `[[`): its first `]` outside a
/// quoted key, and a second one right after it, with nothing but a key (bare parts, quoted
/// parts, dots, blanks) before it. Otherwise the header is only its brackets: the reader goes
/// on after a broken header, and the rest of the line is counted as values.
fn header_end(b: &[u8], i: usize) -> usize {
    let broken = if b.get(i + 1) == Some(&b'[') {
        i + 2
    } else {
        i + 1
    };
    let mut j = broken;
    while j < b.len() {
        match b[j] {
            b'"' | b'\'' => j = string_end(b, j),
            b']' => {
                return if b.get(j + 1) == Some(&b']') {
                    j + 2
                } else {
                    j + 1
                };
            }
            c if bare(c) || matches!(c, b'.' | b' ' | b'\t') => j += 1,
            _ => return broken,
        }
    }
    broken
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Option<(usize, Exceeded, Option<&str>)> {
        first_past_limit(text, &[]).map(|f| (f.span.start, f.exceeded, f.outer.map(|o| &text[o])))
    }

    #[test]
    fn values_are_counted_up_to_the_limit() {
        // `x = [` is one value; each entry another.
        let at_limit = format!("x = [{}]\n", vec!["1"; MAX_VALUES - 1].join(", "));
        assert_eq!(found(&at_limit), None);
        let past = format!("x = [{}]\n", vec!["1"; MAX_VALUES].join(", "));
        let at = past.rfind('1').unwrap();
        assert_eq!(found(&past), Some((at, Exceeded::Values, Some("x"))));
        // An empty array and a trailing comma add no entry; strings, dates and times are one.
        let text = format!(
            "x = [ ]\ny = [\n  '''a,b''', \"c,d\", 1979-05-27 07:32:00, # e, f\n]\nz = [{}]\n",
            vec!["1"; MAX_VALUES - 6].join(",")
        );
        assert_eq!(found(&text), None);
        let text = format!("{text}w = 1\n");
        let (_, exceeded, outer) = found(&text).unwrap();
        assert_eq!((exceeded, outer), (Exceeded::Values, Some("w")));
    }

    #[test]
    fn keys_are_counted_up_to_the_limit() {
        // In tables and inline tables: the position is the value's.
        let mut text = String::from("[serial]\n");
        for k in 0..MAX_KEYS - 2 {
            text.push_str(&format!("k{k} = 1\n"));
        }
        assert_eq!(found(&text), None);
        text.push_str("q = { a = 1, last =  2 }\n");
        let at = text.rfind('2').unwrap();
        assert_eq!(found(&text), Some((at, Exceeded::Keys, Some("q"))));
    }

    #[test]
    fn tables_and_arrays_are_counted_up_to_the_limit() {
        let at_limit = format!("x = [{}]\n", vec!["{}"; MAX_TABLES - 1].join(","));
        assert_eq!(found(&at_limit), None);
        let past = format!("x = [{}]\n", vec!["[]"; MAX_TABLES].join(","));
        let at = past.rfind('[').unwrap();
        assert_eq!(found(&past), Some((at, Exceeded::Tables, Some("x"))));
        // Headers count too, and name no key.
        let text = "[[device]]\ntype = 'virtio-net'\n".repeat(MAX_TABLES + 1);
        let at = text.rfind("[[").unwrap();
        assert_eq!(found(&text), Some((at, Exceeded::Tables, None)));
        // A header whose quoted key holds `]`.
        let text = format!("[\"a]b\" . c]\n{}", "[t]\n".repeat(MAX_TABLES - 1));
        assert_eq!(found(&text), None);
    }

    #[test]
    fn list_entries_past_their_limit_are_found_and_all_counted() {
        let lists = [("device", 96), ("numa", 64)];
        let entry = "[[device]]\ntype = \"virtio-net\"\n";
        assert_eq!(first_past_limit(&entry.repeat(96), &lists), None);
        // Far past the limits of tables and values, every header is still counted.
        let text = format!("[memory]\n{}", entry.repeat(50_000));
        let f = first_past_limit(&text, &lists).unwrap();
        assert_eq!(&text[f.span.clone()], "[[device]]");
        assert_eq!(f.span.start, 9 + 96 * entry.len());
        assert_eq!(
            f.exceeded,
            Exceeded::Entries {
                key: "device",
                max: 96,
                total: 50_000
            }
        );
        // Quoted and spaced names are the list's; dotted ones and single tables are not.
        let text = format!("{}[[ 'numa' ]] # x\n", "[[ \"numa\" ]]\n".repeat(64));
        let f = first_past_limit(&text, &lists).unwrap();
        assert_eq!(&text[f.span.clone()], "[[ 'numa' ]]");
        let text = "[[numa.x]]\n[numa]\n[[numas]]\n".repeat(100);
        assert_eq!(first_past_limit(&text, &lists), None);
        // After a byte order mark, the first line's header is one.
        let text = format!("\u{feff}{}", "[[device]]\n".repeat(97));
        let f = first_past_limit(&text, &lists).unwrap();
        assert_eq!(f.span.start, 3 + 96 * 11);
    }

    #[test]
    fn depth_past_the_readers_limit_is_found_at_its_bracket() {
        let ok = format!("x = {}{}\n", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(found(&ok), None);
        let deep = format!("x = {}{}\n", "[".repeat(500_000), "]".repeat(500_000));
        assert_eq!(
            found(&deep),
            Some((4 + MAX_DEPTH, Exceeded::Depth, Some("x")))
        );
        let deep = format!(
            "x = {}1{}\n",
            "{b = ".repeat(MAX_DEPTH + 1),
            "}".repeat(500)
        );
        assert_eq!(
            found(&deep).map(|f| f.1),
            Some(Exceeded::Depth),
            "inline tables"
        );
        // Closed brackets are left: siblings do not add up.
        let text = format!("x = [{}]\n", vec!["[[1]]"; 100].join(","));
        assert_eq!(found(&text), None);
    }

    #[test]
    fn what_the_reader_builds_after_a_broken_string_comment_or_header_is_counted() {
        // The reader reports these and goes on reading what follows on the line; so the pass
        // counts it too.
        let body = format!("x = [{}]\n", "{a=0},".repeat(MAX_TABLES + 1));
        for text in [
            // A one-line string ends at its line, backslash or not.
            format!("s = \"\\\n{body}"),
            format!("[\"a\\\n{body}"),
            // A comment ends at a lone carriage return.
            format!("#\r{body}"),
            // A header without its closing bracket ends where it starts.
            format!("[x {}", &body[4..]),
            format!("[[x {}", &body[4..]),
        ] {
            assert_eq!(
                found(&text).map(|f| f.1),
                Some(Exceeded::Tables),
                "{:?}",
                &text[..8]
            );
        }
    }

    #[test]
    fn strings_and_comments_hide_what_is_in_them() {
        let many = "[{=,".repeat(MAX_VALUES);
        for text in [
            format!("# {many}\n"),
            format!("s = \"{many}\"\n"),
            format!("s = '{many}'\n"),
            format!("s = \"\"\"\n{many}\n\"\"\"\n"),
            format!("s = '''\n{many}\n'''''\n"),
            format!("s = \"\\\"{many}\"\n"),
            format!("s = \"\"\"\\\"\"\"\n{many}\n\"\"\"\n"),
            format!("x = [ # {many}\n]\n"),
        ] {
            assert_eq!(found(&text), None, "{}", &text[..20]);
        }
        // After a string closes, brackets count again.
        let text = format!("s = \"a[\" {}\n", "[".repeat(MAX_DEPTH + 1));
        assert_eq!(found(&text).map(|f| f.1), Some(Exceeded::Depth));
    }
}
