//! Text tables: the plan's memory map, devices and hotplug slots.

use std::fmt::{self, Write as _};

use unicode_width::UnicodeWidthStr as _;

use crate::plan::{Plan, Span};
use crate::size::Size;

/// A text table with a header row: columns are padded to their widest
/// cell (in terminal columns, by Unicode width), two spaces apart, and the columns marked as
/// numeric are aligned right. Control characters in cells are escaped (see [`escape`]), so a
/// cell cannot move the cursor, change colours or add rows.
#[derive(Clone, Debug, Default)]
pub struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns; a header ending in `>` is aligned right (the `>` is not
    /// shown).
    ///
    /// ```
    /// use memvisor_cli::render::Table;
    ///
    /// let mut t = Table::new(&["NAME", "SIZE>"]);
    /// t.row(vec!["a".into(), "1 KiB".into()]);
    /// t.row(vec!["bbb".into(), "12 MiB".into()]);
    /// assert_eq!(t.to_string(), "NAME    SIZE\na      1 KiB\nbbb   12 MiB\n");
    /// ```
    #[must_use]
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.trim_end_matches('>')).collect(),
            right: headers.iter().map(|h| h.ends_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are empty, extra ones ignored).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.headers.len();
        // Every cell escaped, cut and measured once, the header row first, in one allocation:
        // a cell allocates only when it needs escaping or cutting.
        let measured = |text| {
            let c = cell(text);
            let width = c.width();
            (c, width)
        };
        let mut cells = std::vec::Vec::with_capacity(n * (self.rows.len() + 1));
        cells.extend(self.headers.iter().map(|h| measured(h)));
        for row in &self.rows {
            cells.extend((0..n).map(|i| measured(row.get(i).map_or("", String::as_str))));
        }
        // Each column as wide as its widest cell, and at least one column.
        let mut widths = std::vec![1; n];
        for (i, (_, width)) in cells.iter().enumerate() {
            widths[i % n] = widths[i % n].max(*width);
        }
        let mut line = String::new();
        for r in 0..=self.rows.len() {
            line.clear();
            for (i, ((c, own), width)) in cells[r * n..(r + 1) * n].iter().zip(&widths).enumerate()
            {
                let pad = width - own;
                if self.right.get(i) == Some(&true) {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
                if i + 1 < n {
                    line.push_str("  ");
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// The longest cell shown whole, in characters; longer ones (which no checked spec yields:
/// names are at most [`crate::spec::MAX_NAME_CHARS`]) end in `…` after this many.
pub const MAX_CELL_CHARS: usize = 256;

/// A cell's text: escaped, and cut to [`MAX_CELL_CHARS`].
fn cell(text: &str) -> std::borrow::Cow<'_, str> {
    let escaped = escape(text);
    match escaped.char_indices().nth(MAX_CELL_CHARS) {
        None => escaped,
        Some((_, _)) => {
            let mut cut: String = escaped.chars().take(MAX_CELL_CHARS - 1).collect();
            cut.push('…');
            std::borrow::Cow::Owned(cut)
        }
    }
}

/// The characters of a quoted value a message shows whole; a longer one is cut to
/// [`QUOTE_KEEP`] characters.
pub const QUOTE_MAX: usize = 80;

/// The characters of a longer quoted value a message keeps.
pub const QUOTE_KEEP: usize = 60;

/// Linux's `PATH_MAX`, which counts a path's terminating NUL: a message shows a path of fewer
/// bytes whole, and cuts one of this many or more (which no file can have) as a long quoted
/// value is.
pub const PATH_MAX: usize = 4096;

/// `value` cut to its first [`QUOTE_KEEP`] characters (to be marked with `…`).
pub(crate) fn cut(value: &str) -> &str {
    value
        .char_indices()
        .nth(QUOTE_KEEP)
        .map_or(value, |(at, _)| &value[..at])
}

/// A long `value` as messages show it: its first [`QUOTE_KEEP`] characters, `…`, the closing
/// `quote` (empty for none) and its length in characters, in parentheses.
pub(crate) fn shortened(value: &str, quote: &str) -> String {
    format!(
        "{}…{quote} ({} characters)",
        cut(value),
        value.chars().count()
    )
}

/// The end of a string that serde quotes in a message (`string "…"`, written as Rust writes
/// a string, `\"` and `\\` escaped) in `body`, the text after its opening `"`.
fn closing_double_quote(body: &str) -> Option<usize> {
    let mut escaped = false;
    for (at, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(at),
            _ => {}
        }
    }
    None
}

/// A message with every quoted value longer than [`QUOTE_MAX`] characters cut to its first
/// [`QUOTE_KEEP`], marked with `…`, and followed by its length: a value of a megabyte is not
/// echoed whole into an error's headline. Values are quoted in backticks (ours and serde's
/// names), or in double quotes as serde quotes a string it did not expect (`invalid type:
/// string "…"`); a quote that is not closed quotes to the end. Everything else is unchanged.
///
/// ```
/// use memvisor_cli::render::clip_quoted;
///
/// assert_eq!(clip_quoted("`2GB` is not a size"), "`2GB` is not a size");
/// let long = format!("`{}` is not a size", "9".repeat(100));
/// assert_eq!(
///     clip_quoted(&long),
///     format!("`{}…` (100 characters) is not a size", "9".repeat(60))
/// );
/// let long = format!("invalid type: string \"{}\", expected a whole number", "9".repeat(100));
/// assert_eq!(
///     clip_quoted(&long),
///     format!(
///         "invalid type: string \"{}…\" (100 characters), expected a whole number",
///         "9".repeat(60)
///     )
/// );
/// ```
#[must_use]
pub fn clip_quoted(text: &str) -> std::borrow::Cow<'_, str> {
    let mut out = String::new();
    let mut rest = text;
    let mut clipped = false;
    while let Some(open) = rest.find(['`', '"']) {
        let quote = &rest[open..=open];
        let body = &rest[open + 1..];
        let close = if quote == "`" {
            body.find('`')
        } else {
            closing_double_quote(body)
        };
        let (value, after) = match close {
            Some(at) => (&body[..at], &body[at + 1..]),
            None => (body, ""),
        };
        out.push_str(&rest[..=open]);
        let closing = if close.is_some() { quote } else { "" };
        if value.chars().nth(QUOTE_MAX).is_some() {
            clipped = true;
            out.push_str(&shortened(value, closing));
        } else {
            out.push_str(value);
            out.push_str(closing);
        }
        rest = after;
    }
    if !clipped {
        return std::borrow::Cow::Borrowed(text);
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// A field path (`memory.size`, or one holding a key as written) longer than [`QUOTE_MAX`]
/// characters cut to its first [`QUOTE_KEEP`] and marked with `…`: an unknown key of a
/// megabyte is not echoed whole as the field.
///
/// ```
/// use memvisor_cli::render::clip_field;
///
/// assert_eq!(clip_field("device[2].address"), "device[2].address");
/// let long = format!("memory.{}", "x".repeat(100));
/// assert_eq!(clip_field(&long), format!("memory.{}…", "x".repeat(53)));
/// ```
#[must_use]
pub fn clip_field(field: &str) -> std::borrow::Cow<'_, str> {
    if field.chars().nth(QUOTE_MAX).is_none() {
        return std::borrow::Cow::Borrowed(field);
    }
    std::borrow::Cow::Owned(format!("{}…", cut(field)))
}

/// A path of [`PATH_MAX`] bytes or more (it names no file) cut as [`clip_quoted`] cuts a
/// value, with its length; any other path whole.
///
/// ```
/// use memvisor_cli::render::clip_path;
///
/// assert_eq!(clip_path("/etc/vm.toml"), "/etc/vm.toml");
/// let long = format!("/{}", "x".repeat(5000));
/// assert_eq!(clip_path(&long), format!("/{}… (5001 characters)", "x".repeat(59)));
/// ```
#[must_use]
pub fn clip_path(path: &str) -> std::borrow::Cow<'_, str> {
    if path.len() < PATH_MAX {
        return std::borrow::Cow::Borrowed(path);
    }
    std::borrow::Cow::Owned(shortened(path, ""))
}

/// `text` with every control character (C0, DEL, C1) and every Unicode bidirectional or
/// invisible formatting character written as an escape (`\u{1b}`), so that it shows as what
/// it is and cannot act on the terminal; other text is unchanged.
///
/// ```
/// use memvisor_cli::render::escape;
///
/// assert_eq!(escape("net0"), "net0");
/// assert_eq!(escape("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
/// assert_eq!(escape("x\ny"), "x\\u{a}y");
/// ```
#[must_use]
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// JSON text as `serde_json` writes it, with every character [`needs_escape`] names written
/// as a JSON `\u` escape (two, a surrogate pair, past U+FFFF): `serde_json` escapes only the
/// C0 controls, so a right-to-left override or a C1 control from a file name would reach the
/// reader raw. Such characters can only be inside strings, where the escape stands for the
/// same character; a C0 control outside one is the text's own layout and is kept.
///
/// ```
/// use memvisor_cli::render::escape_json;
///
/// let text = serde_json::to_string(&["a\u{202e}b", "\u{85}\u{e0041}\n"]).unwrap();
/// let escaped = escape_json(&text);
/// assert_eq!(escaped, r#"["a\u202eb","\u0085\udb40\udc41\n"]"#);
/// let back: Vec<String> = serde_json::from_str(&escaped).unwrap();
/// assert_eq!(back, ["a\u{202e}b", "\u{85}\u{e0041}\n"]);
/// ```
#[must_use]
pub fn escape_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if needs_escape(c) && u32::from(c) >= 0x20 {
            let mut units = [0; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// TOML text as `toml`'s serializer writes it, with every character [`needs_escape`] names
/// that is inside a string written as a TOML escape (`\u202E`, `\U000E0041`): the serializer
/// escapes only the C0 controls, so a right-to-left override or a C1 control from another
/// VMM's configuration would reach the reader raw. A literal string (`'…'`, `'''…'''`), which
/// has no escapes, that holds one becomes a basic string of the same text; a multi-line
/// string keeps its line breaks. Outside strings the text is kept as it is.
///
/// ```
/// use memvisor_cli::render::escape_toml;
///
/// let text = toml::to_string(&toml::toml! { a = "x\u{202e}y"  b = "q\"\u{85}\\" }).unwrap();
/// let escaped = escape_toml(&text);
/// assert!(!escaped.contains(['\u{202e}', '\u{85}']), "{escaped}");
/// assert_eq!(toml::from_str::<toml::Table>(&escaped).unwrap(), toml::from_str(&text).unwrap());
/// ```
#[must_use]
pub fn escape_toml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c != '"' && c != '\'' {
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let basic = c == '"';
        let triple = rest.as_bytes().get(1) == Some(&(c as u8))
            && rest.as_bytes().get(2) == Some(&(c as u8));
        let open = if triple { 3 } else { 1 };
        let (content_end, end) = toml_string_end(rest, open, basic, triple);
        let content = &rest[open..content_end];
        let raw = |ch: char| needs_escape(ch) && !(triple && ch == '\n');
        if basic || content.chars().any(raw) {
            let quotes = if triple { "\"\"\"" } else { "\"" };
            out.push_str(quotes);
            for ch in content.chars() {
                match ch {
                    _ if raw(ch) => {
                        let code = u32::from(ch);
                        let _ = if code > 0xffff {
                            write!(out, "\\U{code:08X}")
                        } else {
                            write!(out, "\\u{code:04X}")
                        };
                    }
                    // A literal string's backslashes and quotes are text.
                    '\\' | '"' if !basic => {
                        out.push('\\');
                        out.push(ch);
                    }
                    _ => out.push(ch),
                }
            }
            out.push_str(quotes);
        } else {
            out.push_str(&rest[..end]);
        }
        rest = &rest[end..];
    }
    out
}

/// Where the string whose content starts at byte `open` of `text` ends: its content's end and
/// the end of its closing quotes (a multi-line string's content may end in up to two quotes).
/// An unclosed string runs to the end of the text.
fn toml_string_end(text: &str, open: usize, basic: bool, triple: bool) -> (usize, usize) {
    let b = text.as_bytes();
    let quote = b[0];
    let mut j = open;
    while j < b.len() {
        if basic && b[j] == b'\\' {
            j += 2;
            continue;
        }
        if b[j] == quote {
            if !triple {
                return (j, j + 1);
            }
            let run = b[j..].iter().take(5).take_while(|&&q| q == quote).count();
            if run >= 3 {
                return (j + run - 3, j + run);
            }
            j += run;
            continue;
        }
        j += 1;
    }
    (b.len().min(text.len()), b.len())
}

/// Whether `c` must not reach a terminal raw: a control character (C0, DEL, C1), a line or
/// paragraph separator (U+2028, U+2029), or a format character (Unicode general category Cf:
/// the soft hyphen, bidirectional marks, embeddings, overrides and isolates, zero-width
/// characters, the byte order mark, Arabic number signs, tag characters and the other
/// format controls of Unicode 16's table), which reorder, hide or join text invisibly.
#[must_use]
pub fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || is_format(c)
}

/// Whether `c` is a format character (general category Cf), by a binary search of [`FORMAT`].
fn is_format(c: char) -> bool {
    let c = u32::from(c);
    FORMAT
        .binary_search_by(|&(first, last)| {
            if last < c {
                std::cmp::Ordering::Less
            } else if first > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// The format characters (general category Cf) of Unicode 16, as sorted, disjoint inclusive
/// ranges (generated from the Unicode Character Database, `DerivedGeneralCategory.txt`), plus
/// the unassigned U+2065 among the invisible operators and isolates.
const FORMAT: [(u32, u32); 20] = [
    (0x00ad, 0x00ad),   // soft hyphen
    (0x0600, 0x0605),   // Arabic number signs
    (0x061c, 0x061c),   // Arabic letter mark
    (0x06dd, 0x06dd),   // Arabic end of ayah
    (0x070f, 0x070f),   // Syriac abbreviation mark
    (0x0890, 0x0891),   // Arabic pound and piastre marks above
    (0x08e2, 0x08e2),   // Arabic disputed end of ayah
    (0x180e, 0x180e),   // Mongolian vowel separator
    (0x200b, 0x200f),   // zero-width characters, directional marks
    (0x202a, 0x202e),   // bidirectional embeddings and overrides
    (0x2060, 0x206f),   // invisible operators, isolates, deprecated format characters
    (0xfeff, 0xfeff),   // byte order mark
    (0xfff9, 0xfffb),   // interlinear annotation
    (0x110bd, 0x110bd), // Kaithi number sign
    (0x110cd, 0x110cd), // Kaithi number sign above
    (0x13430, 0x1343f), // Egyptian hieroglyph format controls
    (0x1bca0, 0x1bca3), // shorthand format controls
    (0x1d173, 0x1d17a), // musical symbol format characters
    (0xe0001, 0xe0001), // language tag
    (0xe0020, 0xe007f), // tag characters
];

/// The first GIC shared peripheral interrupt's INTID: an SPI's GSI is its INTID minus this.
pub const SPI_INTID_BASE: u32 = 32;

/// Hex digits needed for addresses up to `limit` (at least 8).
fn digits(limit: u64) -> usize {
    let bits = 64 - limit.leading_zeros() as usize;
    bits.div_ceil(4).max(8)
}

fn addr(value: u64, width: usize) -> String {
    format!("0x{value:0width$x}")
}

fn range(span: Option<Span>, width: usize) -> String {
    span.map_or_else(
        || "-".to_owned(),
        |s| format!("{}-{}", addr(s.start, width), addr(s.end, width)),
    )
}

/// The plan as text: a summary, the memory map, the devices, the hotplug slots and the layout
/// windows.
#[must_use]
pub fn plan_text(plan: &Plan) -> String {
    let w = digits(plan.address_limit);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {}, {}-bit guest physical addresses (limit {:#x})",
        escape(&plan.name),
        plan.arch,
        plan.phys_bits,
        plan.address_limit
    );
    let nodes: Vec<String> = plan
        .nodes
        .iter()
        .map(|n| format!("node{} {}", n.node, Size(n.size)))
        .collect();
    let _ = writeln!(
        out,
        "RAM {} in {} NUMA node{} ({}); {} device{}; {} hotplug slot{}",
        Size(plan.ram),
        plan.nodes.len(),
        if plan.nodes.len() == 1 { "" } else { "s" },
        nodes.join(", "),
        plan.devices.len(),
        if plan.devices.len() == 1 { "" } else { "s" },
        plan.hotplug.len(),
        if plan.hotplug.len() == 1 { "" } else { "s" },
    );

    out.push_str("\nGuest physical memory map\n");
    let mut t = Table::new(&["START", "END", "SIZE>", "TYPE", "OWNER", "NODE", "BACKING"]);
    for m in &plan.map {
        t.row(vec![
            addr(m.span.start, w),
            addr(m.span.end, w),
            Size(m.span.size).to_string(),
            m.ty.to_owned(),
            m.owner.clone(),
            m.node.map_or_else(|| "-".to_owned(), |n| n.to_string()),
            m.backing.to_string(),
        ]);
    }
    out.push_str(&t.to_string());

    // x86_64: the IOAPIC GSI. AArch64: the GIC INTID and its GSI, the SPI number (INTID - 32)
    // that KVM's irqfd and KVM_IRQ_LINE and the device tree's `interrupts` cell use.
    let aarch64 = plan.arch == crate::spec::Arch::Aarch64;
    out.push_str("\nDevices\n");
    let headers: &[&'static str] = if aarch64 {
        &[
            "NAME", "TYPE", "MMIO", "SIZE>", "PORTS", "GSI>", "INTID>", "DAX",
        ]
    } else {
        &["NAME", "TYPE", "MMIO", "SIZE>", "PORTS", "GSI>", "DAX"]
    };
    let mut t = Table::new(headers);
    for d in &plan.devices {
        let irq = if aarch64 {
            vec![
                d.irq
                    .checked_sub(SPI_INTID_BASE)
                    .map_or_else(|| "-".to_owned(), |g| g.to_string()),
                d.irq.to_string(),
            ]
        } else {
            vec![d.irq.to_string()]
        };
        t.row(
            [
                vec![
                    d.name.clone(),
                    d.ty.to_owned(),
                    range(d.mmio, w),
                    d.mmio
                        .map_or_else(|| "-".to_owned(), |s| Size(s.size).to_string()),
                    d.pio.map_or_else(
                        || "-".to_owned(),
                        |p| format!("{:#x}-{:#x}", p.start, p.end),
                    ),
                ],
                irq,
                vec![d.dax.map_or_else(
                    || "-".to_owned(),
                    |s| format!("{} ({})", range(Some(s), w), Size(s.size)),
                )],
            ]
            .concat(),
        );
    }
    out.push_str(&t.to_string());

    out.push_str("\nHotplug slots\n");
    if plan.hotplug.is_empty() {
        out.push_str("none\n");
    } else {
        let mut t = Table::new(&["SLOT>", "START", "END", "SIZE>", "NODE", "BACKING"]);
        for s in &plan.hotplug {
            t.row(vec![
                s.index.to_string(),
                addr(s.span.start, w),
                addr(s.span.end, w),
                Size(s.span.size).to_string(),
                s.node.to_string(),
                s.backing.to_string(),
            ]);
        }
        out.push_str(&t.to_string());
    }

    out.push_str("\nLayout windows\n");
    let mut t = Table::new(&["KIND", "START", "END", "SIZE>"]);
    for win in &plan.windows {
        t.row(vec![
            win.kind.clone(),
            addr(win.span.start, w),
            addr(win.span.end, w),
            Size(win.span.size).to_string(),
        ]);
    }
    out.push_str(&t.to_string());
    out
}

/// A size as the kernel's `memparse` reads it: bytes in the largest of `G`, `M`, `K` that
/// divides them.
fn memparse(bytes: u64) -> String {
    match bytes {
        b if b != 0 && b.is_multiple_of(1 << 30) => format!("{}G", b >> 30),
        b if b != 0 && b.is_multiple_of(1 << 20) => format!("{}M", b >> 20),
        b if b != 0 && b.is_multiple_of(1 << 10) => format!("{}K", b >> 10),
        b => b.to_string(),
    }
}

/// The guest kernel's command line arguments for the plan's virtio-mmio devices, one
/// `virtio_mmio.device=SIZE@BASE:IRQ` per device in plan order, separated by spaces, with a
/// final newline (empty line for none). Linux reads these on x86_64; AArch64 guests find their
/// devices in the device tree instead.
///
/// # Errors
/// A message for an AArch64 plan.
///
/// ```
/// use memvisor_cli::plan::plan;
/// use memvisor_cli::render::kernel_cmdline;
/// use memvisor_cli::spec::{Source, parse};
///
/// let src = Source { origin: "vm.toml", text: "[memory]\nsize = 4096\n[[device]]\ntype = \"virtio-net\"\n" };
/// let plan = plan(&parse(src)?, src)?;
/// assert_eq!(kernel_cmdline(&plan).unwrap(), "virtio_mmio.device=4K@0xc0000000:5\n");
/// # Ok::<(), memvisor_cli::SpecError>(())
/// ```
pub fn kernel_cmdline(plan: &Plan) -> Result<String, String> {
    if plan.arch != crate::spec::Arch::X86_64 {
        return Err(format!(
            "{} guests find virtio-mmio devices in the device tree; virtio_mmio.device= is for \
             x86_64",
            plan.arch
        ));
    }
    let args: Vec<String> = plan
        .devices
        .iter()
        .filter(|d| d.ty.starts_with("virtio-"))
        .filter_map(|d| {
            d.mmio.map(|m| {
                format!(
                    "virtio_mmio.device={}@{:#x}:{}",
                    memparse(m.size),
                    m.start,
                    d.irq
                )
            })
        })
        .collect();
    Ok(format!("{}\n", args.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_cover_limit() {
        assert_eq!(digits(0xff_ffff_ffff), 10);
        assert_eq!(digits(0xffff), 8);
        assert_eq!(digits(u64::MAX), 16);
    }

    #[test]
    fn table_cell_of_70000_chars_is_cut() {
        let mut t = Table::new(&["NAME", "IRQ>"]);
        t.row(vec!["n".repeat(70_000), "5".into()]);
        t.row(vec!["a".into(), "10".into()]);
        let text = t.to_string();
        let cut = format!("{}…", "n".repeat(MAX_CELL_CHARS - 1));
        assert_eq!(text.lines().nth(1).unwrap(), format!("{cut}    5"));
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn table_control_characters_are_escaped() {
        let mut t = Table::new(&["NAME"]);
        t.row(vec!["a\u{1b}[2J\nfake row\u{202e}".into()]);
        assert_eq!(t.to_string(), "NAME\na\\u{1b}[2J\\u{a}fake row\\u{202e}\n");
    }

    #[test]
    fn escape_toml_turns_literal_strings_into_basic_ones_only_when_needed() {
        for (text, expected) in [
            (r#"a = 'x"y'"#, r#"a = 'x"y'"#),
            ("a = 'x\u{202e}\\\"'", r#"a = "x\u202E\\\"""#),
            (
                "a = '''\nx\u{85}\ny'''''",
                "a = \"\"\"\nx\\u0085\ny''\"\"\"",
            ),
            (
                "a = \"\"\"\nx\\\"\"\"\u{2028}\"\"\"\"",
                "a = \"\"\"\nx\\\"\"\"\\u2028\"\"\"\"",
            ),
            ("a = \"\\\\\" # \u{202e}", "a = \"\\\\\" # \u{202e}"),
        ] {
            let escaped = escape_toml(text);
            assert_eq!(escaped, expected, "{text:?}");
            let table = |t: &str| t.parse::<toml::Table>().unwrap();
            assert_eq!(table(&escaped), table(text), "{text:?}");
        }
    }

    #[test]
    fn every_format_character_is_escaped() {
        // Unicode 16's format characters (general category Cf), line and paragraph separators.
        let ranges: [(u32, u32); 23] = [
            (0xad, 0xad),
            (0x600, 0x605),
            (0x61c, 0x61c),
            (0x6dd, 0x6dd),
            (0x70f, 0x70f),
            (0x890, 0x891),
            (0x8e2, 0x8e2),
            (0x180e, 0x180e),
            (0x200b, 0x200f),
            (0x2028, 0x2029),
            (0x202a, 0x202e),
            (0x2060, 0x2064),
            (0x2066, 0x206f),
            (0xfeff, 0xfeff),
            (0xfff9, 0xfffb),
            (0x110bd, 0x110bd),
            (0x110cd, 0x110cd),
            (0x13430, 0x1343f),
            (0x1bca0, 0x1bca3),
            (0x1d173, 0x1d17a),
            (0xe0001, 0xe0001),
            (0xe0020, 0xe007f),
            (0x0, 0x1f),
        ];
        for (first, last) in ranges {
            for c in (first..=last).filter_map(char::from_u32) {
                assert!(needs_escape(c), "{:#x}", u32::from(c));
                assert_eq!(escape(&c.to_string()), format!("\\u{{{:x}}}", u32::from(c)));
            }
        }
        let mut t = Table::new(&["NAME"]);
        t.row(vec!["a\u{e0041}\u{600}b".into()]);
        assert_eq!(t.to_string(), "NAME\na\\u{e0041}\\u{600}b\n");
        // The table is sorted and its ranges disjoint, as the binary search needs.
        assert!(
            FORMAT
                .windows(2)
                .all(|w| w[0].1 < w[1].0 && w[0].0 <= w[0].1)
        );
        // Their neighbours, and marks and letters that show, are text.
        for c in [
            'a',
            ' ',
            '\u{a0}',
            '\u{5ff}',
            '\u{606}',
            '\u{6dc}',
            '\u{6de}',
            '\u{110be}',
            '\u{13440}',
            '\u{1d172}',
            '\u{1d17b}',
            '\u{e0000}',
            '\u{e0080}',
            '\u{e0100}',
            'é',
            '日',
        ] {
            assert!(!needs_escape(c), "{:#x}", u32::from(c));
        }
    }

    #[test]
    fn table_wide_characters_count_by_display_width() {
        let mut t = Table::new(&["NAME", "X"]);
        t.row(vec!["日本".into(), "1".into()]);
        t.row(vec!["abcd".into(), "2".into()]);
        assert_eq!(t.to_string(), "NAME  X\n日本  1\nabcd  2\n");
    }

    #[test]
    fn table_pads_missing_cells() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["x".into()]);
        assert_eq!(t.to_string(), "A  B\nx\n");
    }

    #[test]
    fn path_of_path_max_bytes_is_cut() {
        // PATH_MAX counts the terminating NUL: 4095 bytes is the longest path a file has.
        let longest = format!("/{}", "p".repeat(PATH_MAX - 2));
        assert_eq!(clip_path(&longest), longest.as_str());
        let none = format!("{longest}p");
        assert_eq!(
            clip_path(&none),
            format!("/{}… (4096 characters)", "p".repeat(59))
        );
    }
}
