//! Spec errors shown as `rustc` shows its own: the message, the file, line and column, and the
//! source line with the faulty value underlined (drawn by `annotate-snippets`).

use std::ops::Range;

use crate::error::SpecError;
use crate::render::needs_escape;

/// The most characters of a source line kept in an [`Excerpt`]: longer lines are cut around
/// the underlined part.
pub const MAX_EXCERPT_CHARS: usize = 160;

/// Marks where an [`Excerpt`] cut its line.
pub const CUT: char = '…';

/// The line of a spec an error points at, kept with the error so it can be shown without the
/// spec's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Excerpt {
    /// Its 1-based line number.
    pub line: usize,
    /// The line (or the part of it around the span, at most [`MAX_EXCERPT_CHARS`]
    /// characters, with [`CUT`] at each end where the line goes on), with every control or
    /// formatting character replaced by `�` so that it cannot act on the terminal.
    pub text: String,
    /// The underlined bytes of `text`, on character boundaries: never empty, except at the
    /// end of `text` (`text.len()..text.len()`), where it marks the end of the line (a span
    /// at or past it, such as the end of an object that misses a field).
    pub span: Range<usize>,
}

impl Excerpt {
    /// The excerpt of `text` for the byte span `span`: its first line, cut to at most
    /// [`MAX_EXCERPT_CHARS`] characters around the span's start (and [`CUT`] where it was cut).
    ///
    /// ```
    /// use memvisor_cli::diagnostic::Excerpt;
    ///
    /// let e = Excerpt::new("[memory]\nsize = \"2GB\"\n", 16..21);
    /// assert_eq!((e.line, e.text.as_str(), e.span.clone()), (2, "size = \"2GB\"", 7..12));
    /// ```
    #[must_use]
    pub fn new(text: &str, span: Range<usize>) -> Self {
        let start = floor_char_boundary(text, span.start.min(text.len()));
        let end = floor_char_boundary(text, span.end.clamp(start, text.len()));
        let before = text.get(..start).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        // The first line starts after a byte order mark; a span on the mark starts the line.
        let bom = crate::spec::bom_len(text);
        let line_start = before.rfind('\n').map_or(bom, |i| i + 1);
        let (start, end) = (start.max(line_start), end.max(line_start));
        let mut line_end = text
            .get(start..)
            .and_then(|rest| rest.find('\n'))
            .map_or(text.len(), |i| start + i);
        // The `\r` of a CRLF line ending is the ending's, not the line's.
        if line_end > line_start && text.as_bytes().get(line_end - 1) == Some(&b'\r') {
            line_end -= 1;
        }
        let (start, end) = (start.min(line_end), end.min(line_end));
        // Columns in characters within the line, the span cut at the line's end.
        let line_text = text.get(line_start..line_end).unwrap_or("");
        let col_start = text.get(line_start..start).map_or(0, |s| s.chars().count());
        let col_end = text
            .get(line_start..end)
            .map_or(col_start, |s| s.chars().count())
            .max(col_start);
        let total = line_text.chars().count();
        let first = col_start.saturating_sub(MAX_EXCERPT_CHARS / 3);
        let last = (first + MAX_EXCERPT_CHARS).min(total);
        let mut out = String::new();
        if first > 0 {
            out.push(CUT);
        }
        let mut span_bytes = 0..0;
        for (i, c) in line_text.chars().enumerate().take(last).skip(first) {
            if i == col_start {
                span_bytes.start = out.len();
            }
            if i == col_end {
                span_bytes.end = out.len();
            }
            out.push(if needs_escape(c) { '\u{fffd}' } else { c });
        }
        if col_start >= last {
            span_bytes.start = out.len();
        }
        if col_end >= last {
            span_bytes.end = out.len();
        }
        if last < total {
            out.push(CUT);
        }
        if span_bytes.end <= span_bytes.start {
            // Underline one character (or the end of the line).
            span_bytes.end = out
                .get(span_bytes.start..)
                .and_then(|s| s.chars().next())
                .map_or(span_bytes.start, |c| span_bytes.start + c.len_utf8());
        }
        Self {
            line,
            text: out,
            span: span_bytes,
        }
    }
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while at > 0 && !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The error as `rustc` would show it: `error: FIELD: PROBLEM`, then ` --> FILE:LINE:COLUMN`
/// and the source line with the value underlined; a single `error: ...` line when the error
/// has no position.
///
/// ```
/// use memvisor_cli::diagnostic::report;
/// use memvisor_cli::spec::{Source, parse};
///
/// let err = parse(Source { origin: "vm.toml", text: "[memory]\nsize = \"2GB\"\n" }).unwrap_err();
/// let text = report(&err);
/// assert!(text.starts_with("error: memory.size: unknown size unit `GB`"), "{text}");
/// assert!(text.contains(" --> vm.toml:2:8\n"), "{text}");
/// assert!(text.contains("2 | size = \"2GB\"\n"), "{text}");
/// assert!(text.contains("  |        ^^^^^"), "{text}");
/// ```
#[must_use]
pub fn report(err: &SpecError) -> String {
    use annotate_snippets::{AnnotationKind, Level, Renderer, Snippet};

    let problem = err.problem.to_string();
    let problem = crate::render::clip_quoted(&problem);
    let title = if err.field.is_empty() {
        problem.into_owned()
    } else {
        format!("{}: {problem}", crate::render::clip_field(&err.field))
    };
    let (Some(excerpt), Some(_)) = (&err.excerpt, err.position) else {
        return format!("error: {err}\n");
    };
    let origin = crate::render::escape(&err.origin);
    // An excerpt's fields are public: its span may be anything and its text hold anything.
    // Keep the span inside the text and on character boundaries, as the renderer needs, and
    // replace what must not reach a terminal (as `Excerpt::new` does).
    let raw = &excerpt.text;
    let raw_start = floor_char_boundary(raw, excerpt.span.start.min(raw.len()));
    let raw_end = floor_char_boundary(raw, excerpt.span.end.clamp(raw_start, raw.len()));
    let mut text = String::with_capacity(raw.len());
    let (mut start, mut end) = (None, None);
    for (i, c) in raw.char_indices() {
        if i == raw_start {
            start = Some(text.len());
        }
        if i == raw_end {
            end = Some(text.len());
        }
        text.push(if needs_escape(c) { '\u{fffd}' } else { c });
    }
    let start = start.unwrap_or(text.len());
    let end = end.unwrap_or(text.len()).max(start);
    let group = Level::ERROR.primary_title(&title).element(
        Snippet::source(&text)
            .line_start(excerpt.line)
            .path(origin.as_ref())
            .annotation(AnnotationKind::Primary.span(start..end)),
    );
    let mut text = Renderer::plain().render(&[group]);
    // annotate-snippets gives the column within the excerpt; the line may have been cut, so
    // write the true one.
    if let Some((line, column)) = err.position {
        let shown = format!("{origin}:{}:", excerpt.line);
        if let Some(at) = text.find(&shown) {
            let tail_start = at + shown.len();
            let tail_end = text[tail_start..]
                .find('\n')
                .map_or(text.len(), |i| tail_start + i);
            text.replace_range(at..tail_end, &format!("{origin}:{line}:{column}"));
        }
    }
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Source, parse};

    #[test]
    fn excerpt_long_line_is_cut_around_span() {
        let text = format!("name = \"{}\"\nx = 1\n", "n".repeat(10_000));
        let e = Excerpt::new(&text, 7..10_009);
        assert_eq!(e.line, 1);
        assert_eq!(e.text.chars().count(), MAX_EXCERPT_CHARS + 1);
        assert!(e.text.ends_with(CUT), "the cut end is marked");
        assert_eq!(e.span.start, 7);
        assert_eq!(e.span.end, e.text.len() - CUT.len_utf8());
    }

    #[test]
    fn excerpt_cut_on_the_left_is_marked() {
        let text = format!("backing = \"{}\" ; size = \"1GiB\"\n", "a".repeat(300));
        let at = text.find("size").unwrap();
        let e = Excerpt::new(&text, at..at + 4);
        assert!(e.text.starts_with(CUT), "{}", e.text);
        assert!(!e.text.ends_with(CUT), "{}", e.text);
        assert_eq!(&e.text[e.span.clone()], "size");
    }

    #[test]
    fn excerpt_control_characters_are_replaced() {
        let e = Excerpt::new("a = \"\u{1b}[2J\"\n", 4..11);
        assert_eq!(e.text, "a = \"\u{fffd}[2J\"");
        assert!(!e.text.chars().any(needs_escape));
    }

    #[test]
    fn excerpt_format_characters_are_replaced() {
        let e = Excerpt::new("size = \"2GB\" # \u{e0041}\u{600}\u{1d173}\n", 7..12);
        assert_eq!(e.text, "size = \"2GB\" # \u{fffd}\u{fffd}\u{fffd}");
        assert_eq!(&e.text[e.span.clone()], "\"2GB\"");
    }

    #[test]
    fn excerpt_leaves_out_byte_order_mark_and_carriage_return() {
        let e = Excerpt::new("\u{feff}arch = 5\r\n[memory]\r\n", 10..11);
        assert_eq!((e.line, e.text.as_str()), (1, "arch = 5"));
        assert_eq!(&e.text[e.span.clone()], "5");
        let e = Excerpt::new("\u{feff}arch = 5\r\n[memory]\r\n", 13..21);
        assert_eq!((e.line, e.text.as_str()), (2, "[memory]"));
        assert_eq!(&e.text[e.span.clone()], "[memory]");
        // A span on the mark itself underlines the line's first character.
        let e = Excerpt::new("\u{feff}arch = 5\n", 0..3);
        assert_eq!((e.text.as_str(), e.span.clone()), ("arch = 5", 0..1));
        // A `\r` inside a line is the line's own, and shown replaced.
        let e = Excerpt::new("a\rb\n", 0..1);
        assert_eq!(e.text, "a\u{fffd}b");
    }

    #[test]
    fn excerpt_span_past_end_underlines_end() {
        let e = Excerpt::new("abc", 10..20);
        assert_eq!((e.line, e.text.as_str(), e.span), (1, "abc", 3..3));
    }

    #[test]
    fn report_multibyte_line_keeps_column() {
        let text = "name = \"日本\"\n[memory]\nsize = \"1 gib\"\n";
        let err = parse(Source {
            origin: "vm.toml",
            text,
        })
        .unwrap_err();
        let shown = report(&err);
        assert!(shown.contains(" --> vm.toml:3:8\n"), "{shown}");
        assert!(
            shown.contains("3 | size = \"1 gib\"\n  |        ^^^^^^^\n"),
            "{shown}"
        );
    }

    #[test]
    fn report_repairs_any_excerpt_span() {
        use crate::error::Problem;
        for (text, span, line) in [
            ("abc", 10..20, 1),
            ("abc", Range { start: 2, end: 1 }, 1),
            ("日本", 1..2, 1),
            ("日本", 4..5, 1),
            ("", 0..0, 1),
            ("", Range { start: 3, end: 1 }, 1),
            ("abc", usize::MAX..usize::MAX, 0),
            ("abc", 0..usize::MAX, usize::MAX),
            ("a\nb", 0..3, 2),
            ("\u{1b}[2J日", 1..9, 1),
        ] {
            let err = SpecError {
                origin: "vm.toml".into(),
                position: Some((line, 1)),
                field: "x".into(),
                problem: Box::new(Problem::Invalid("bad".into())),
                excerpt: Some(Box::new(Excerpt {
                    line,
                    text: text.into(),
                    span: span.clone(),
                })),
            };
            let shown = report(&err);
            assert!(
                shown.starts_with("error: x: bad\n"),
                "{text:?} {span:?}: {shown}"
            );
            assert!(!shown.contains('\u{1b}'), "{shown}");
        }
    }

    #[test]
    fn report_without_position_is_one_line() {
        let err = parse(Source {
            origin: "vm.toml",
            text: "",
        })
        .unwrap_err();
        assert_eq!(
            report(&err),
            "error: vm.toml: memory: the [memory] table is missing\n"
        );
    }
}
