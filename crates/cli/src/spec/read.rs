//! Reading the TOML form of a spec and checking every field into a [`VmSpec`].

use std::fmt;
use std::ops::Range;

use memvisor_space::plan::MAX_PHYS_BITS;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

use super::keys::{Exceeded, MAX_DOTTED_PARTS, MAX_KEY_PARTS};
use super::values::{Exceeded as ValuesExceeded, MAX_DEPTH, MAX_KEYS, MAX_TABLES, MAX_VALUES};
use super::{
    Arch, BackingKind, DEFAULT_MMIO_SIZE, DEFAULT_ORIGIN, DEFAULT_PHYS_BITS, DeviceSpec,
    DeviceType, HotplugSpec, Loc, MAX_DEVICES, MAX_GUEST_NODES, MAX_HOST_NODES, MAX_HOTPLUG_SLOTS,
    MAX_NAME_CHARS, MAX_PREFAULT_THREADS, MAX_WINDOW_ALIGN, MIN_WINDOW_ALIGN, MemoryOptions,
    NodeSpec, PageKind, Policy, SerialSpec, Source, VmSpec,
};
use crate::error::{Problem, SpecError};
use crate::render::{escape, needs_escape};
use crate::size::parse_size;

/// A size as written: an integer or a string with a unit.
#[derive(Clone, Debug)]
enum RawSize {
    Int(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: an integer or a string such as \"512MiB\" or \"0x1000\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize::Int(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                u64::try_from(v)
                    .map(RawSize::Int)
                    .map_err(|_| E::custom(format!("negative size {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A whole number of 32 bits as written: a wrong value is refused in words ("expected a whole
/// number from 0 to 4294967295"), where `u32` would name its Rust type.
#[derive(Clone, Copy, Debug)]
struct Whole(u32);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Whole;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a whole number from 0 to {}", u32::MAX)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Whole, E> {
                u32::try_from(v)
                    .map(Whole)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Whole, E> {
                u32::try_from(v)
                    .map(Whole)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
        }
        d.deserialize_u32(V)
    }
}

/// `true` or `false` as written, refused in those words.
#[derive(Clone, Copy, Debug)]
struct Flag(bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(v))
            }
        }
        d.deserialize_bool(V)
    }
}

/// A guest node's `host_nodes` as written: an array of whole numbers.
#[derive(Clone, Debug)]
struct HostNodes(Vec<u32>);

impl<'de> Deserialize<'de> for HostNodes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HostNodes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of host node numbers")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<HostNodes, A::Error> {
                // The spec's value limit bounds the entries; their count is checked later.
                let mut nodes = Vec::new();
                while let Some(Whole(n)) = seq.next_element()? {
                    nodes.push(n);
                }
                Ok(HostNodes(nodes))
            }
        }
        d.deserialize_seq(V)
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, expecting = "a VM spec table")]
struct RawSpec {
    name: Option<Spanned<String>>,
    arch: Option<Spanned<String>>,
    phys_bits: Option<Spanned<Whole>>,
    window_align: Option<Spanned<RawSize>>,
    memory: Option<Spanned<RawMemory>>,
    #[serde(default)]
    numa: Vec<Spanned<RawNode>>,
    hotplug: Option<Spanned<RawHotplug>>,
    serial: Option<Spanned<RawSerial>>,
    #[serde(default)]
    device: Vec<Spanned<RawDevice>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, expecting = "the [memory] table")]
struct RawMemory {
    size: Option<Spanned<RawSize>>,
    backing: Option<Spanned<String>>,
    hugetlbfs: Option<Spanned<String>>,
    huge_pages: Option<Spanned<String>>,
    huge_page_fallback: Option<Spanned<String>>,
    prefault: Option<Spanned<Whole>>,
    dontfork: Option<Flag>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, expecting = "a [[numa]] table")]
struct RawNode {
    size: Spanned<RawSize>,
    host_nodes: Option<Spanned<HostNodes>>,
    policy: Option<Spanned<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, expecting = "the [hotplug] table")]
struct RawHotplug {
    slots: Spanned<Whole>,
    slot_size: Spanned<RawSize>,
    node: Option<Spanned<Whole>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, expecting = "the [serial] table")]
struct RawSerial {
    irq: Option<Spanned<Whole>>,
    port: Option<Spanned<RawSize>>,
    address: Option<Spanned<RawSize>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, expecting = "a [[device]] table")]
struct RawDevice {
    #[serde(rename = "type")]
    ty: Spanned<String>,
    name: Option<Spanned<String>>,
    mmio_size: Option<Spanned<RawSize>>,
    address: Option<Spanned<RawSize>>,
    irq: Option<Spanned<Whole>>,
    dax_size: Option<Spanned<RawSize>>,
}

/// Reads and checks a spec.
///
/// # Errors
/// A [`SpecError`] naming the field, its line and column, and the problem: TOML syntax, an
/// unknown field, a bad size or size unit, an unknown device type or option value, or values
/// that contradict each other. Placement problems (overlap, too big for a window) are found by
/// [`crate::plan::plan`].
///
/// ```
/// use memvisor_cli::spec::{Source, parse};
///
/// let text = "[memory]\nsize = \"1GiB\"\n[[device]]\ntype = \"virtio-gpu\"\n";
/// let err = parse(Source { origin: "vm.toml", text }).unwrap_err();
/// assert_eq!(err.field, "device[0].type");
/// assert_eq!(err.position, Some((4, 8)));
/// ```
pub fn parse(src: Source<'_>) -> Result<VmSpec, SpecError> {
    parse_for(src, None)
}

/// [`parse`], with `arch` (when given) replacing the spec's `arch` before any check, as
/// `--arch` does.
///
/// # Errors
/// As [`parse`]; fields that only one architecture has (`serial.port` on x86_64,
/// `serial.address` on aarch64) are refused for the other.
///
/// ```
/// use memvisor_cli::spec::{Arch, Source, parse_for};
///
/// let src = Source { origin: "vm.toml", text: "[memory]\nsize = 4096\n[serial]\nport = 0x2f8\n" };
/// assert_eq!(parse_for(src, None)?.arch, Arch::X86_64);
/// let err = parse_for(src, Some(Arch::Aarch64)).unwrap_err();
/// assert_eq!(err.field, "serial.port");
/// # Ok::<(), memvisor_cli::SpecError>(())
/// ```
pub fn parse_for(src: Source<'_>, arch: Option<Arch>) -> Result<VmSpec, SpecError> {
    let toml_error = |e: &toml::de::Error, field: String| {
        src.error(
            field,
            e.span(),
            Problem::Toml(escape(e.message().trim()).into_owned()),
        )
    };
    key_limits(src)?;
    value_limits(src)?;
    let root = toml::de::DeTable::parse(src.text).map_err(|e| toml_error(&e, String::new()))?;
    // Counts first, before any entry is read into its fields (lists written other than with
    // one header per entry, such as `device = [{ … }]`, are counted here).
    count_entries(src, root.get_ref(), "device", MAX_DEVICES)?;
    count_entries(src, root.get_ref(), "numa", MAX_GUEST_NODES)?;
    let de = toml::Deserializer::from(root);
    let raw: RawSpec = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = field_path(e.path());
        let mut err = toml_error(e.inner(), field);
        if let Some(problem) = date_time_named(src.text, e.inner()) {
            err.problem = Box::new(problem);
        }
        err
    })?;
    check(src, raw, arch)
}

/// The TOML reader hands a date or time to serde as a map, so a wrong type that is one reads
/// `invalid type: map`: the problem of `e` with the date or time named as written instead, or
/// `None` when `e` is about something else (a table is a map).
fn date_time_named(text: &str, e: &toml::de::Error) -> Option<Problem> {
    let rest = e.message().trim().strip_prefix("invalid type: map")?;
    let written = text.get(e.span()?)?.trim();
    written.parse::<toml::value::Datetime>().ok()?;
    Some(Problem::Toml(format!(
        "invalid type: date-time `{}`{}",
        escape(written),
        escape(rest)
    )))
}

/// Refuses a dotted key or table header of more than [`MAX_KEY_PARTS`] parts, or more than
/// [`MAX_DOTTED_PARTS`] parts after the first in all, before the TOML reader builds a table for
/// each part, naming the key's position and the table it is in (`serial.x`, or `serial.q` for a key
/// in the inline table of `q`).
fn key_limits(src: Source<'_>) -> Result<(), SpecError> {
    let Some(found) = super::keys::first_past_limit(src.text) else {
        return Ok(());
    };
    let field = field_of_key(src.text, found.span.start, found.outer);
    let problem = match found.exceeded {
        Exceeded::Parts => Problem::Invalid(format!(
            "a dotted key or table header of {} parts (at most {MAX_KEY_PARTS})",
            found.parts
        )),
        Exceeded::Dotted => Problem::Invalid(format!(
            "more than {MAX_DOTTED_PARTS} dotted key parts in the spec (the parts after the \
             first of every dotted key and table header)"
        )),
    };
    Err(src.error(field, Some(found.span), problem))
}

/// Refuses more than [`MAX_VALUES`] values, more than [`MAX_KEYS`] keys, more than
/// [`MAX_TABLES`] tables and arrays, or arrays and inline tables nested more than [`MAX_DEPTH`]
/// deep, before the TOML reader builds them, naming the position of the first one past the limit
/// and the key that holds it (`numa[0].host_nodes`).
fn value_limits(src: Source<'_>) -> Result<(), SpecError> {
    let lists = [("device", MAX_DEVICES), ("numa", MAX_GUEST_NODES)];
    let Some(found) = super::values::first_past_limit(src.text, &lists) else {
        return Ok(());
    };
    // The key's line gives the table: a line inside a multi-line array may look like a header.
    let line_of = found.outer.as_ref().map_or(found.span.start, |o| o.start);
    let field = if found.header {
        String::new()
    } else {
        field_of_key(src.text, line_of, found.outer)
    };
    let problem = match found.exceeded {
        ValuesExceeded::Values => Problem::Invalid(format!(
            "more than {MAX_VALUES} values in the spec (each key's value and each array entry \
             is one)"
        )),
        ValuesExceeded::Keys => Problem::Invalid(format!(
            "more than {MAX_KEYS} keys in the spec (each `key = value` is one)"
        )),
        ValuesExceeded::Tables => Problem::Invalid(format!(
            "more than {MAX_TABLES} arrays, inline tables and table headers in the spec"
        )),
        ValuesExceeded::Depth => Problem::Invalid(format!(
            "arrays and inline tables nested more than {MAX_DEPTH} deep"
        )),
        ValuesExceeded::Entries { key, max, total } => {
            return Err(src.error(
                format!("{key}[{max}]"),
                Some(found.span),
                entries_problem(key, total),
            ));
        }
    };
    Err(src.error(field, Some(found.span), problem))
}

/// The field path of a key at `at` whose first part is `outer` (when it is a bare word): the
/// table its line is in and that part (`serial.x`); empty for a table header.
fn field_of_key(text: &str, at: usize, outer: Option<Range<usize>>) -> String {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let header = text[line_start..at]
        .trim_start_matches('\u{feff}')
        .trim_start()
        .starts_with('[');
    let mut field = if header {
        String::new()
    } else {
        table_of_line(text, line_start)
    };
    if let Some(outer) = outer.filter(|_| !header) {
        let part: String = text[outer].chars().take(MAX_NAME_CHARS).collect();
        if !field.is_empty() {
            field.push('.');
        }
        field.push_str(&part);
    }
    field
}

/// The field path of the table the line at `line_start` is in: the last table header before
/// it (`serial`, `device[1]` for the second `[[device]]`), empty at the top level. Headers are
/// recognised line by line, as a line that is a header on its own; a header-like line inside a
/// multi-line string could mislead it, which only costs the field of an error message.
fn table_of_line(text: &str, line_start: usize) -> String {
    let header = |line: &str| -> Option<(String, bool)> {
        let line = line.trim_start_matches('\u{feff}').trim();
        let (inner, array) = match line.strip_prefix("[[") {
            Some(rest) => (rest.split_once("]]")?.0, true),
            None => (line.strip_prefix('[')?.split_once(']')?.0, false),
        };
        let inner = inner.trim();
        inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' '))
            .then(|| {
                (
                    inner
                        .split('.')
                        .map(str::trim)
                        .collect::<Vec<_>>()
                        .join("."),
                    array,
                )
            })
    };
    let before = &text[..line_start];
    let Some((path, array)) = before.lines().rev().find_map(header) else {
        return String::new();
    };
    if !array {
        return path;
    }
    let index = before
        .lines()
        .filter_map(header)
        .filter(|(p, a)| *a && *p == path)
        .count()
        .saturating_sub(1);
    format!("{path}[{index}]")
}

/// Refuses a list `key` of the document with more than `max` entries, naming the first entry
/// past the limit, before any entry is deserialized: the work done on a long list stops at its
/// length. Anything else under `key` (no list, a table) is left to the deserializer.
fn count_entries(
    src: Source<'_>,
    root: &toml::de::DeTable<'_>,
    key: &str,
    max: usize,
) -> Result<(), SpecError> {
    let Some(list) = root.get(key).and_then(|v| v.get_ref().as_array()) else {
        return Ok(());
    };
    match list.get(max) {
        Some(first_past) => Err(src.error(
            format!("{key}[{max}]"),
            Some(first_past.span()),
            entries_problem(key, list.len()),
        )),
        None => Ok(()),
    }
}

/// The problem of a list `key` (`device`, `numa`) of `n` entries, more than it may have.
fn entries_problem(key: &str, n: usize) -> Problem {
    if key == "device" {
        super::too_many_devices(n)
    } else {
        Problem::Invalid(format!("{n} guest NUMA nodes (at most {MAX_GUEST_NODES})"))
    }
}

/// The field path serde was in when it failed (`device[1].type`), without the segments of
/// [`Spanned`]'s own fields; empty at the top level.
pub(crate) fn field_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } if key.starts_with("$__serde_spanned_private") => {}
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&escape(key));
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

fn size_of(src: Source<'_>, field: &str, raw: &Spanned<RawSize>) -> Result<u64, SpecError> {
    match raw.get_ref() {
        RawSize::Int(v) => Ok(*v),
        RawSize::Text(t) => {
            parse_size(t).map_err(|e| src.error(field, Some(raw.span()), Problem::BadSize(e)))
        }
    }
}

fn nonzero(src: Source<'_>, field: &str, raw: &Spanned<RawSize>) -> Result<u64, SpecError> {
    let v = size_of(src, field, raw)?;
    if v == 0 {
        return Err(src.error(
            field,
            Some(raw.span()),
            Problem::Invalid("size zero".into()),
        ));
    }
    Ok(v)
}

/// The longest `memory.hugetlbfs` path, in bytes: one less than Linux's `PATH_MAX`, which
/// counts the terminating NUL.
const MAX_HUGETLBFS_PATH_BYTES: usize = crate::render::PATH_MAX - 1;

/// Checks a name: not empty, no white space at either end (the name would look like the one
/// without it) nor white space other than the space in it (it would look like the space), at
/// most [`MAX_NAME_CHARS`] characters, no control or invisible formatting characters (they
/// would act on the terminal the plan is printed on).
fn check_name(src: Source<'_>, field: &str, raw: &Spanned<String>) -> Result<String, SpecError> {
    let name = raw.get_ref();
    let problem = if name.trim().is_empty() {
        Some("an empty name".to_owned())
    } else if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        // It would show as the name without it: `"eth0 "` beside `eth0`, `"serial "` beside
        // the serial port.
        Some(
            "the name starts or ends with white space (a name may not: it would look like the \
             name without it)"
                .to_owned(),
        )
    } else if name.chars().count() > MAX_NAME_CHARS {
        Some(format!(
            "a name of {} characters (at most {MAX_NAME_CHARS})",
            name.chars().count()
        ))
    } else if let Some(c) = name.chars().find(|&c| needs_escape(c)) {
        Some(format!(
            "the name contains the control or formatting character {}",
            escape(c.encode_utf8(&mut [0; 4]))
        ))
    } else {
        // A no-break or wide space would look like the space: `eth\u{a0}0` beside `eth 0`.
        name.chars()
            .find(|&c| c.is_whitespace() && c != ' ')
            .map(|c| {
                format!(
                    "the name contains the white space character U+{:04X} (no white space other \
                     than the space may be in a name: it would look like the space)",
                    u32::from(c)
                )
            })
    };
    match problem {
        Some(p) => Err(src.error(field, Some(raw.span()), Problem::Invalid(p))),
        None => Ok(name.clone()),
    }
}

/// A count or number that must not exceed `max`.
fn at_most<T: PartialOrd + fmt::Display>(
    src: Source<'_>,
    field: &str,
    span: Range<usize>,
    value: T,
    max: T,
    what: &str,
) -> Result<T, SpecError> {
    if value > max {
        return Err(src.error(
            field,
            Some(span),
            Problem::Invalid(format!("{value} {what} (at most {max})")),
        ));
    }
    Ok(value)
}

fn choice<T>(
    src: Source<'_>,
    field: &str,
    raw: &Spanned<String>,
    parse: impl Fn(&str) -> Option<T>,
    expected: &'static str,
) -> Result<T, SpecError> {
    parse(raw.get_ref()).ok_or_else(|| {
        src.error(
            field,
            Some(raw.span()),
            Problem::UnknownValue {
                found: escape(raw.get_ref()).into_owned(),
                expected,
            },
        )
    })
}

fn check(src: Source<'_>, raw: RawSpec, arch: Option<Arch>) -> Result<VmSpec, SpecError> {
    // The lengths of the device and NUMA lists were checked before they were deserialized
    // (`count_entries`).
    debug_assert!(raw.device.len() <= MAX_DEVICES && raw.numa.len() <= MAX_GUEST_NODES);
    let written = match &raw.arch {
        Some(a) => choice(src, "arch", a, Arch::parse, "x86_64, aarch64")?,
        None => Arch::X86_64,
    };
    let arch = arch.unwrap_or(written);
    let phys_bits = match &raw.phys_bits {
        Some(b) if !(32..=MAX_PHYS_BITS).contains(&b.get_ref().0) => {
            return Err(src.error(
                "phys_bits",
                Some(b.span()),
                Problem::Invalid(format!(
                    "{} address bits; use 32 to {MAX_PHYS_BITS}",
                    b.get_ref().0
                )),
            ));
        }
        Some(b) => b.get_ref().0,
        None => DEFAULT_PHYS_BITS,
    };
    let window_align = raw
        .window_align
        .as_ref()
        .map(|raw| {
            let align = size_of(src, "window_align", raw)?;
            if align.is_power_of_two() && (MIN_WINDOW_ALIGN..=MAX_WINDOW_ALIGN).contains(&align) {
                Ok(align)
            } else {
                Err(src.error(
                    "window_align",
                    Some(raw.span()),
                    Problem::Invalid(format!(
                        "{} is not a power of two from 2 MiB to 1 GiB",
                        crate::size::Size(align)
                    )),
                ))
            }
        })
        .transpose()?;
    let Some(mem) = &raw.memory else {
        return Err(src.error(
            "memory",
            None,
            Problem::Invalid("the [memory] table is missing".into()),
        ));
    };
    let mem_span = mem.span();
    let mem = mem.get_ref();
    let memory = memory_options(src, mem)?;
    let total = mem
        .size
        .as_ref()
        .map(|s| nonzero(src, "memory.size", s))
        .transpose()?;

    let mut nodes = Vec::new();
    let mut sum = 0u64;
    for (i, n) in raw.numa.iter().enumerate() {
        let r = n.get_ref();
        let loc = Loc::new(format!("numa[{i}]"), n.span())
            .with("size", Some(r.size.span()))
            .with("host_nodes", r.host_nodes.as_ref().map(Spanned::span));
        let size = nonzero(src, &loc.field("size"), &r.size)?;
        sum = sum.checked_add(size).ok_or_else(|| {
            src.error(
                loc.field("size"),
                Some(r.size.span()),
                Problem::Invalid(format!(
                    "the [[numa]] nodes up to this one add up to 2^64 bytes or more ({} + {})",
                    crate::size::Size(sum),
                    crate::size::Size(size)
                )),
            )
        })?;
        let host_span = r.host_nodes.as_ref().map_or(n.span(), Spanned::span);
        let host_nodes: &[u32] = r.host_nodes.as_ref().map_or(&[], |h| &h.get_ref().0);
        at_most(
            src,
            &loc.field("host_nodes"),
            host_span.clone(),
            host_nodes.len(),
            MAX_HOST_NODES as usize,
            "host nodes",
        )?;
        if let Some(&bad) = host_nodes.iter().find(|&&h| h >= MAX_HOST_NODES) {
            return Err(src.error(
                loc.field("host_nodes"),
                Some(host_span),
                Problem::Invalid(format!(
                    "host node {bad} (host nodes are numbered below {MAX_HOST_NODES})"
                )),
            ));
        }
        let policy = match &r.policy {
            Some(p) => choice(
                src,
                &loc.field("policy"),
                p,
                parse_policy,
                "bind, preferred, interleave",
            )?,
            None => Policy::Bind,
        };
        if r.policy.is_some() && host_nodes.is_empty() {
            return Err(src.error(
                loc.field("policy"),
                r.policy.as_ref().map(Spanned::span),
                Problem::Invalid("a policy needs host_nodes".into()),
            ));
        }
        // The binding is a set of host nodes (the kernel's node mask): each once, in order.
        let mut set = host_nodes.to_vec();
        set.sort_unstable();
        set.dedup();
        // MPOL_PREFERRED prefers the lowest node of the set, whatever the order written.
        if let (Policy::Preferred, Some(&first), Some(&lowest)) =
            (policy, host_nodes.first(), set.first())
            && first != lowest
        {
            return Err(src.error(
                loc.field("host_nodes"),
                Some(host_span),
                Problem::Invalid(format!(
                    "policy = \"preferred\" prefers the lowest-numbered of host_nodes (host node \
                     {lowest}), not host node {first}, written first: write host node {lowest} \
                     first, or host_nodes = [{first}] to prefer host node {first}"
                )),
            ));
        }
        nodes.push(NodeSpec {
            size,
            host_nodes: set,
            policy,
            loc,
        });
    }
    match (total, nodes.is_empty()) {
        (None, true) => {
            return Err(src.error(
                "memory.size",
                Some(mem_span),
                Problem::Invalid("no RAM: give memory.size or [[numa]] nodes".into()),
            ));
        }
        (Some(size), true) => nodes.push(NodeSpec {
            size,
            host_nodes: Vec::new(),
            policy: Policy::Bind,
            loc: Loc::new(
                "memory.size",
                mem.size.as_ref().map_or(mem_span, Spanned::span),
            ),
        }),
        (Some(size), false) => {
            if sum != size {
                return Err(src.error(
                    "memory.size",
                    mem.size.as_ref().map(Spanned::span),
                    Problem::Invalid(format!(
                        "memory.size is {} but the [[numa]] nodes add up to {}",
                        crate::size::Size(size),
                        crate::size::Size(sum)
                    )),
                ));
            }
        }
        (None, false) => {}
    }
    if let Some(page) = memory.pages.explicit_bytes() {
        for n in &nodes {
            if !n.size.is_multiple_of(page) {
                let field = if n.loc.path == "memory.size" {
                    n.loc.path.clone()
                } else {
                    n.loc.field("size")
                };
                return Err(src.error(
                    field,
                    n.loc.span_of(Some("size")),
                    Problem::Invalid(format!(
                        "{} is not a multiple of the {} huge page size",
                        crate::size::Size(n.size),
                        crate::size::Size(page)
                    )),
                ));
            }
        }
    }

    let hotplug = match &raw.hotplug {
        None => None,
        Some(h) => {
            let r = h.get_ref();
            let loc = Loc::new("hotplug", h.span())
                .with("slots", Some(r.slots.span()))
                .with("slot_size", Some(r.slot_size.span()))
                .with("node", r.node.as_ref().map(Spanned::span));
            at_most(
                src,
                "hotplug.slots",
                r.slots.span(),
                r.slots.get_ref().0,
                MAX_HOTPLUG_SLOTS,
                "slots",
            )?;
            if r.slots.get_ref().0 == 0 {
                return Err(src.error(
                    "hotplug.slots",
                    Some(r.slots.span()),
                    Problem::Invalid("zero slots (leave [hotplug] out for none)".into()),
                ));
            }
            let slot_size = nonzero(src, "hotplug.slot_size", &r.slot_size)?;
            if let Some(page) = memory.pages.explicit_bytes()
                && !slot_size.is_multiple_of(page)
            {
                return Err(src.error(
                    "hotplug.slot_size",
                    Some(r.slot_size.span()),
                    Problem::Invalid(format!(
                        "{} is not a multiple of the {} huge page size",
                        crate::size::Size(slot_size),
                        crate::size::Size(page)
                    )),
                ));
            }
            if u64::from(r.slots.get_ref().0)
                .checked_mul(slot_size)
                .is_none()
            {
                return Err(src.error(
                    "hotplug.slot_size",
                    Some(r.slot_size.span()),
                    Problem::Invalid(format!(
                        "{} slots of {} add up to 2^64 bytes or more",
                        r.slots.get_ref().0,
                        crate::size::Size(slot_size)
                    )),
                ));
            }
            let node = r.node.as_ref().map_or(0, |n| n.get_ref().0);
            if usize::try_from(node).map_or(true, |n| n >= nodes.len()) {
                return Err(src.error(
                    "hotplug.node",
                    r.node.as_ref().map(Spanned::span),
                    Problem::Invalid(format!(
                        "guest NUMA node {node} does not exist ({} node{})",
                        nodes.len(),
                        if nodes.len() == 1 { "" } else { "s" }
                    )),
                ));
            }
            Some(HotplugSpec {
                slots: r.slots.get_ref().0,
                slot_size,
                node,
                loc,
            })
        }
    };

    let serial = match &raw.serial {
        None => None,
        Some(s) => {
            let r = s.get_ref();
            let loc = Loc::new("serial", s.span())
                .with("irq", r.irq.as_ref().map(Spanned::span))
                .with("port", r.port.as_ref().map(Spanned::span))
                .with("address", r.address.as_ref().map(Spanned::span));
            let port = r
                .port
                .as_ref()
                .map(|p| size_of(src, "serial.port", p))
                .transpose()?;
            let address = r
                .address
                .as_ref()
                .map(|a| size_of(src, "serial.address", a))
                .transpose()?;
            match arch {
                Arch::X86_64 if address.is_some() => {
                    return Err(src.error(
                        "serial.address",
                        r.address.as_ref().map(Spanned::span),
                        Problem::Invalid(
                            "the x86_64 serial port uses port I/O; give `port`".into(),
                        ),
                    ));
                }
                Arch::Aarch64 if port.is_some() => {
                    return Err(src.error(
                        "serial.port",
                        r.port.as_ref().map(Spanned::span),
                        Problem::Invalid("the aarch64 serial port is MMIO; give `address`".into()),
                    ));
                }
                _ => {}
            }
            // The x86_64 serial port is an ISA UART: its interrupt is one of the ISA lines, but
            // not the timer's (GSI 0, the PIT; GSI 2, where the IOAPIC takes the PIT's line,
            // also the PIC cascade). aarch64's SPIs are checked by the planner.
            if let (Arch::X86_64, Some(irq), Some(raw_irq)) =
                (arch, r.irq.as_ref().map(|i| i.get_ref().0), &r.irq)
                && (irq == 0 || irq == 2 || irq > 15)
            {
                return Err(src.error(
                    "serial.irq",
                    Some(raw_irq.span()),
                    Problem::Invalid(format!(
                        "GSI {irq} is not an interrupt line of the serial port (an ISA \
                         UART on x86_64: 1 or 3 to 15; 0 and 2 are the timer's)"
                    )),
                ));
            }
            if let (Some(p), Some(raw_port)) = (port, &r.port)
                && p > 0xfff8
            {
                return Err(src.error(
                    "serial.port",
                    Some(raw_port.span()),
                    Problem::Invalid(if p > 0xffff {
                        format!("port {p:#x} is past the 16-bit I/O space (0 to 0xffff)")
                    } else {
                        format!(
                            "the serial port's 8 ports {p:#x} to {:#x} run past the 16-bit I/O \
                             space, which ends at 0xffff",
                            p + 7
                        )
                    }),
                ));
            }
            // KVM's in-kernel PIC, PIT and ELCR answer these ports in the kernel: a serial port
            // over one of them would never see its accesses.
            if let (Some(p), Some(raw_port)) = (port, &r.port)
                && let Some((device, first, last)) = memvisor_space::Platform::new(arch)
                    .kernel_ports()
                    .iter()
                    .find(|&&(_, first, last)| p <= last && first <= p + 7)
            {
                return Err(src.error(
                    "serial.port",
                    Some(raw_port.span()),
                    Problem::Invalid(format!(
                        "ports {p:#x}..={:#x} overlap the {device} at {first:#x}..={last:#x}, \
                         which KVM handles in the kernel",
                        p + 7
                    )),
                ));
            }
            // A fixed MMIO window is aligned to its size, as a device's is.
            if let (Some(a), Some(raw_a), memvisor_space::SerialPreset::Mmio { size }) = (
                address,
                &r.address,
                memvisor_space::Platform::new(arch).serial(),
            ) && !a.is_multiple_of(size)
            {
                return Err(src.error(
                    "serial.address",
                    Some(raw_a.span()),
                    Problem::Invalid(format!(
                        "{a:#x} is not aligned to the serial port's MMIO size {size:#x}"
                    )),
                ));
            }
            Some(SerialSpec {
                irq: r.irq.as_ref().map(|i| i.get_ref().0),
                port,
                address,
                loc,
            })
        }
    };

    let mut devices: Vec<DeviceSpec> = Vec::new();
    let mut counts = std::collections::HashMap::new();
    // Each name and the device that has it, to find a duplicate in one look-up.
    let mut names: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    // The names given in the spec: a default name never takes one of them.
    let given: std::collections::HashSet<&str> = raw
        .device
        .iter()
        .filter_map(|d| d.get_ref().name.as_ref().map(|n| n.get_ref().as_str()))
        .collect();
    for (i, d) in raw.device.iter().enumerate() {
        let r = d.get_ref();
        let loc = Loc::new(format!("device[{i}]"), d.span())
            .with("name", r.name.as_ref().map(Spanned::span))
            .with("mmio_size", r.mmio_size.as_ref().map(Spanned::span))
            .with("address", r.address.as_ref().map(Spanned::span))
            .with("irq", r.irq.as_ref().map(Spanned::span))
            .with("dax_size", r.dax_size.as_ref().map(Spanned::span));
        let ty = DeviceType::parse(r.ty.get_ref()).ok_or_else(|| {
            src.error(
                loc.field("type"),
                Some(r.ty.span()),
                Problem::UnknownDeviceType {
                    found: escape(r.ty.get_ref()).into_owned(),
                },
            )
        })?;
        let n: &mut usize = counts.entry(ty).or_default();
        let name = match &r.name {
            Some(name) => {
                let checked = check_name(src, &loc.field("name"), name)?;
                if memvisor_space::plan::names_other_map_part(&checked) {
                    return Err(src.error(
                        loc.field("name"),
                        Some(name.span()),
                        Problem::Invalid(format!(
                            "`{}` is not a device's name: the plan gives it to another part of \
                             the map (the serial port, a reserved range, one of KVM's in-kernel \
                             devices, RAM, a hotplug slot or a DAX window); choose another",
                            escape(&checked)
                        )),
                    ));
                }
                checked
            }
            // The type's short name and its count so far, or the next number no device has
            // (at most `MAX_DEVICES` tries).
            None => (*n..)
                .map(|k| format!("{}{k}", ty.short()))
                .find(|name| !given.contains(name.as_str()) && !names.contains_key(name))
                .unwrap_or_default(),
        };
        *n += 1;
        if let Some(other) = names.insert(name.clone(), i) {
            return Err(src.error(
                loc.field("name"),
                r.name.as_ref().map_or(Some(d.span()), |n| Some(n.span())),
                Problem::Invalid(format!(
                    "the name `{name}` is already used by device[{other}]"
                )),
            ));
        }
        let mmio_size = match &r.mmio_size {
            Some(s) => {
                let v = nonzero(src, &loc.field("mmio_size"), s)?;
                if !v.is_power_of_two() || v < DEFAULT_MMIO_SIZE {
                    return Err(src.error(
                        loc.field("mmio_size"),
                        Some(s.span()),
                        Problem::Invalid(format!("{v:#x} is not a power of two of at least 4 KiB")),
                    ));
                }
                v
            }
            None => DEFAULT_MMIO_SIZE,
        };
        let address = r
            .address
            .as_ref()
            .map(|a| size_of(src, &loc.field("address"), a))
            .transpose()?;
        if let (Some(a), Some(raw_a)) = (address, &r.address)
            && !a.is_multiple_of(mmio_size)
        {
            return Err(src.error(
                loc.field("address"),
                Some(raw_a.span()),
                Problem::Invalid(format!(
                    "{a:#x} is not aligned to the MMIO size {mmio_size:#x}"
                )),
            ));
        }
        let dax_size = match (&r.dax_size, ty) {
            (Some(s), DeviceType::Fs | DeviceType::Pmem) => {
                let v = nonzero(src, &loc.field("dax_size"), s)?;
                if !v.is_multiple_of(2 << 20) {
                    return Err(src.error(
                        loc.field("dax_size"),
                        Some(s.span()),
                        Problem::Invalid(format!(
                            "{} is not a multiple of 2 MiB",
                            crate::size::Size(v)
                        )),
                    ));
                }
                Some(v)
            }
            (Some(s), _) => {
                return Err(src.error(
                    loc.field("dax_size"),
                    Some(s.span()),
                    Problem::Invalid(format!("a {} has no DAX window", ty.name())),
                ));
            }
            (None, DeviceType::Pmem) => {
                return Err(src.error(
                    loc.field("dax_size"),
                    Some(d.span()),
                    Problem::Invalid("a virtio-pmem device needs dax_size".into()),
                ));
            }
            (None, _) => None,
        };
        devices.push(DeviceSpec {
            name,
            ty,
            mmio_size,
            address,
            irq: r.irq.as_ref().map(|i| i.get_ref().0),
            dax_size,
            loc,
        });
    }

    let name = match &raw.name {
        Some(name) => check_name(src, "name", name)?,
        None if src.origin == DEFAULT_ORIGIN => "default".to_owned(),
        // The file name, made a name: it may hold any character.
        None => crate::spec::name_of_file(src.origin, "vm"),
    };
    Ok(VmSpec {
        name,
        arch,
        phys_bits,
        window_align,
        memory,
        nodes,
        hotplug,
        serial,
        devices,
    })
}

fn parse_policy(text: &str) -> Option<Policy> {
    match text {
        "bind" => Some(Policy::Bind),
        "preferred" => Some(Policy::Preferred),
        "interleave" => Some(Policy::Interleave),
        _ => None,
    }
}

fn memory_options(src: Source<'_>, mem: &RawMemory) -> Result<MemoryOptions, SpecError> {
    let pages = match &mem.huge_pages {
        Some(p) => choice(
            src,
            "memory.huge_pages",
            p,
            |t| match t {
                "none" => Some(PageKind::Base),
                "transparent" => Some(PageKind::Transparent),
                "2MiB" => Some(PageKind::Huge2M),
                "1GiB" => Some(PageKind::Huge1G),
                _ => None,
            },
            "none, transparent, 2MiB, 1GiB",
        )?,
        None => PageKind::Base,
    };
    let backing = match &mem.backing {
        Some(b) => choice(
            src,
            "memory.backing",
            b,
            |t| match t {
                "anonymous" => Some(BackingKind::Anonymous),
                "anonymous-shared" => Some(BackingKind::AnonymousShared),
                "memfd" => Some(BackingKind::Memfd),
                "hugetlbfs" => Some(BackingKind::Hugetlbfs(String::new())),
                _ => None,
            },
            "anonymous, anonymous-shared, memfd, hugetlbfs",
        )?,
        None => BackingKind::Anonymous,
    };
    let backing = match (backing, &mem.hugetlbfs) {
        (BackingKind::Hugetlbfs(_), Some(path)) => {
            let text = path.get_ref();
            let problem = if !text.starts_with('/') {
                Some(format!(
                    "`{}` is not an absolute path (a hugetlbfs mount's path starts with `/`)",
                    escape(text)
                ))
            } else if text.len() > MAX_HUGETLBFS_PATH_BYTES {
                Some(format!(
                    "a path of {} bytes (a hugetlbfs mount's path is at most \
                     {MAX_HUGETLBFS_PATH_BYTES})",
                    text.len()
                ))
            } else {
                text.chars().find(|&c| needs_escape(c)).map(|c| {
                    format!(
                        "the path contains the control or formatting character {}",
                        escape(c.encode_utf8(&mut [0; 4]))
                    )
                })
            };
            if let Some(problem) = problem {
                return Err(src.error(
                    "memory.hugetlbfs",
                    Some(path.span()),
                    Problem::Invalid(problem),
                ));
            }
            BackingKind::Hugetlbfs(text.clone())
        }
        (BackingKind::Hugetlbfs(_), None) => BackingKind::Hugetlbfs("/dev/hugepages".to_owned()),
        (_, Some(path)) => {
            return Err(src.error(
                "memory.hugetlbfs",
                Some(path.span()),
                Problem::Invalid(
                    "a hugetlbfs mount is only used with backing = \"hugetlbfs\"".into(),
                ),
            ));
        }
        (other, None) => other,
    };
    if matches!(backing, BackingKind::Hugetlbfs(_)) && pages.explicit_bytes().is_none() {
        return Err(src.error(
            "memory.huge_pages",
            mem.huge_pages
                .as_ref()
                .map(Spanned::span)
                .or(mem.backing.as_ref().map(Spanned::span)),
            Problem::Invalid("a hugetlbfs backing needs huge_pages = \"2MiB\" or \"1GiB\"".into()),
        ));
    }
    let fallback_transparent = match &mem.huge_page_fallback {
        Some(f) => choice(
            src,
            "memory.huge_page_fallback",
            f,
            |t| match t {
                "fail" => Some(false),
                "transparent" => Some(true),
                _ => None,
            },
            "fail, transparent",
        )?,
        None => false,
    };
    if let Some(f) = &mem.huge_page_fallback
        && fallback_transparent
        && pages.explicit_bytes().is_none()
    {
        return Err(src.error(
            "memory.huge_page_fallback",
            Some(f.span()),
            Problem::Invalid("a fallback only applies to explicit huge pages".into()),
        ));
    }
    if let Some(f) = &mem.huge_page_fallback
        && fallback_transparent
        && matches!(backing, BackingKind::Hugetlbfs(_))
    {
        return Err(src.error(
            "memory.huge_page_fallback",
            Some(f.span()),
            Problem::Invalid(
                "a hugetlbfs file cannot fall back to transparent huge pages; use backing = \
                 \"anonymous\", \"anonymous-shared\" or \"memfd\" for a fallback"
                    .into(),
            ),
        ));
    }
    let prefault_threads = match &mem.prefault {
        Some(p) => at_most(
            src,
            "memory.prefault",
            p.span(),
            p.get_ref().0,
            MAX_PREFAULT_THREADS,
            "prefault threads",
        )?,
        None => 0,
    };
    let prefault_threads = usize::try_from(prefault_threads).unwrap_or(usize::MAX);
    Ok(MemoryOptions {
        backing,
        pages,
        fallback_transparent,
        prefault_threads,
        dontfork: mem.dontfork.is_some_and(|f| f.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::src;

    #[test]
    fn parse_window_align_is_a_power_of_two_from_2m_to_1g() {
        for (value, align) in [
            ("\"2MiB\"", 2 << 20),
            ("\"128MiB\"", 128 << 20),
            ("134217728", 128 << 20),
            ("\"1GiB\"", 1 << 30),
        ] {
            let text = format!("window_align = {value}\n[memory]\nsize = 4096\n");
            let spec = parse(src(&text)).unwrap();
            assert_eq!(spec.window_align, Some(align), "{text}");
        }
        let spec = parse(src("[memory]\nsize = 4096\n")).unwrap();
        assert_eq!(spec.window_align, None);
        for (value, expected) in [
            ("0", "0 B is not a power of two from 2 MiB to 1 GiB"),
            ("\"3KiB\"", "is not a power of two from 2 MiB to 1 GiB"),
            (
                "\"4KiB\"",
                "4 KiB is not a power of two from 2 MiB to 1 GiB",
            ),
            (
                "\"1MiB\"",
                "1 MiB is not a power of two from 2 MiB to 1 GiB",
            ),
            (
                "\"2GiB\"",
                "2 GiB is not a power of two from 2 MiB to 1 GiB",
            ),
            (
                "\"96MiB\"",
                "96 MiB is not a power of two from 2 MiB to 1 GiB",
            ),
            ("\"16EiB\"", ""),
            ("-1", ""),
            ("\"lots\"", ""),
            ("true", ""),
            ("1.5", ""),
        ] {
            let text = format!("window_align = {value}\n[memory]\nsize = 4096\n");
            let err = parse(src(&text)).unwrap_err();
            assert_eq!(err.field, "window_align", "{text}: {err}");
            assert!(err.position.is_some(), "{text}: {err}");
            assert!(err.problem.to_string().contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn parse_dotted_keys_are_read() {
        let spec = parse(src("memory.size = \"256MiB\"\nmemory.prefault = 1\n")).unwrap();
        assert_eq!(spec.ram(), 256 << 20);
        assert_eq!(spec.memory.prefault_threads, 1);
    }

    #[test]
    fn parse_wrong_numbers_say_what_is_expected_in_words() {
        let fields = [
            ("phys_bits = V\n[memory]\nsize = 4096\n", "phys_bits"),
            ("[memory]\nsize = 4096\nprefault = V\n", "memory.prefault"),
            (
                "[memory]\nsize = 4096\n[hotplug]\nslots = V\nslot_size = 4096\n",
                "hotplug.slots",
            ),
            (
                "[memory]\nsize = 4096\n[hotplug]\nslots = 1\nslot_size = 4096\nnode = V\n",
                "hotplug.node",
            ),
            ("[memory]\nsize = 4096\n[serial]\nirq = V\n", "serial.irq"),
            (
                "[memory]\nsize = 4096\n[[device]]\ntype = \"virtio-net\"\nirq = V\n",
                "device[0].irq",
            ),
            (
                "[memory]\n[[numa]]\nsize = 4096\nhost_nodes = [0, V]\n",
                "numa[0].host_nodes[1]",
            ),
        ];
        for (template, field) in fields {
            for value in ["-1", "1.5", "4294967296", "\"7\"", "true"] {
                let text = template.replace('V', value);
                let err = parse(src(&text)).unwrap_err();
                assert_eq!(err.field, field, "{text}: {err}");
                let message = err.problem.to_string();
                assert!(
                    message.ends_with("expected a whole number from 0 to 4294967295"),
                    "{text}: {message}"
                );
                assert!(err.position.is_some(), "{text}: {err}");
            }
        }
        // The other kinds of value say so in words too.
        for (text, expected) in [
            (
                "[memory]\nsize = 4096\ndontfork = 1\n",
                "expected true or false",
            ),
            ("name = 1\n[memory]\nsize = 4096\n", "expected a string"),
            (
                "[memory]\n[[numa]]\nsize = 4096\nhost_nodes = 0\n",
                "expected an array of host node numbers",
            ),
        ] {
            let message = parse(src(text)).unwrap_err().problem.to_string();
            assert!(message.ends_with(expected), "{text}: {message}");
        }
    }

    #[test]
    fn parse_wrong_type_names_no_internal_type() {
        let err = parse(src("memory = 3\n")).unwrap_err();
        assert_eq!(err.field, "memory");
        assert_eq!(err.position, Some((1, 10)));
        assert_eq!(
            err.problem.to_string(),
            "invalid type: integer `3`, expected the [memory] table"
        );
    }

    #[test]
    fn parse_type_error_path_comes_from_serde() {
        let text =
            "[memory]\nsize = 4096\n[[device]]\ntype = \"virtio-net\"\n[[device]]\ntype = 3\n";
        let err = parse(src(text)).unwrap_err();
        assert_eq!(err.field, "device[1].type");
        assert_eq!(err.position, Some((6, 8)));
    }

    #[test]
    fn parse_device_names_of_other_map_parts_are_refused() {
        for name in [
            "serial",
            "GIC",
            "IOAPIC",
            "IOAPIC, local APIC",
            "KVM TSS, identity map",
            "PCI MMCONFIG",
            "reserved",
            "legacy ISA",
            "boot RAM",
            "RAM node0",
            "hotplug slot 1",
            "hotplug slot 1 (empty)",
            "a DAX",
        ] {
            let text = format!(
                "[memory]\nsize = 4096\n[serial]\n[[device]]\ntype = \"virtio-fs\"\nname = \"a\"\n\
                 [[device]]\ntype = \"virtio-net\"\nname = \"{name}\"\n"
            );
            let err = parse(src(&text)).unwrap_err();
            assert_eq!(err.field, "device[1].name", "{name}: {err}");
            assert_eq!(err.position, Some((9, 8)), "{name}: {err}");
            assert!(
                err.problem.to_string().contains("is not a device"),
                "{name}: {err}"
            );
        }
        // Names that only look alike are a device's own.
        for name in [
            "Serial",
            "serial0",
            "DAX",
            "gic",
            "RAM",
            "hotplug",
            "a DAX window",
        ] {
            let text = format!(
                "[memory]\nsize = 4096\n[serial]\n[[device]]\ntype = \"virtio-net\"\nname = \"{name}\"\n"
            );
            parse(src(&text)).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn parse_names_with_white_space_at_either_end_are_refused() {
        // Beside `[serial]`, or beside a device of the name without the space, such a name
        // would show as the other one.
        for (name, other) in [
            ("serial ", ""),
            (" serial", ""),
            ("eth0 ", "eth0"),
            ("\\teth0", "eth0"),
            ("eth0\\u00a0", "eth0"),
        ] {
            let first = if other.is_empty() {
                String::new()
            } else {
                format!("[[device]]\ntype = \"virtio-net\"\nname = \"{other}\"\n")
            };
            let text = format!(
                "[memory]\nsize = 4096\n[serial]\n{first}[[device]]\ntype = \"virtio-net\"\n\
                 name = \"{name}\"\n"
            );
            let err = parse(src(&text)).unwrap_err();
            let index = usize::from(!other.is_empty());
            assert_eq!(
                err.field,
                format!("device[{index}].name"),
                "{name:?}: {err}"
            );
            assert!(
                err.problem
                    .to_string()
                    .contains("starts or ends with white space"),
                "{name:?}: {err}"
            );
        }
        let err = parse(src("name = \" vm\"\n[memory]\nsize = 4096\n")).unwrap_err();
        assert_eq!(err.field, "name", "{err}");
        assert_eq!(err.position, Some((1, 8)), "{err}");
        // White space inside a name is the name's own.
        parse(src(
            "name = \"my VM\"\n[memory]\nsize = 4096\n[[device]]\ntype = \"virtio-net\"\n\
             name = \"eth 0\"\n",
        ))
        .unwrap();
    }

    #[test]
    fn parse_names_with_white_space_other_than_the_space_are_refused() {
        // A no-break or other wide space looks like the space: `eth\u{a0}0` beside `eth 0`.
        for space in ['\u{a0}', '\u{2003}', '\u{3000}', '\u{1680}'] {
            let text = format!(
                "[memory]\nsize = 4096\n[[device]]\ntype = \"virtio-net\"\nname = \"eth{space}0\"\n"
            );
            let err = parse(src(&text)).unwrap_err();
            assert_eq!(err.field, "device[0].name", "{space:?}: {err}");
            assert!(
                err.problem
                    .to_string()
                    .contains("white space other than the space"),
                "{space:?}: {err}"
            );
        }
    }

    #[test]
    fn parse_names_with_invisible_or_reordering_characters_are_refused() {
        for c in [
            '\u{ad}',
            '\u{61c}',
            '\u{180e}',
            '\u{200b}',
            '\u{200f}',
            '\u{2028}',
            '\u{2029}',
            '\u{202e}',
            '\u{2066}',
            '\u{206a}',
            '\u{206f}',
            '\u{feff}',
            '\u{fff9}',
            '\u{fffb}',
            '\u{600}',
            '\u{605}',
            '\u{6dd}',
            '\u{70f}',
            '\u{890}',
            '\u{8e2}',
            '\u{110bd}',
            '\u{110cd}',
            '\u{13430}',
            '\u{1343f}',
            '\u{1bca0}',
            '\u{1d173}',
            '\u{1d17a}',
            '\u{e0001}',
            '\u{e0020}',
            '\u{e0041}',
            '\u{e007f}',
        ] {
            for text in [
                format!("name = \"a{c}b\"\n[memory]\nsize = 4096\n"),
                format!(
                    "[memory]\nsize = 4096\n[[device]]\ntype = \"virtio-net\"\nname = \"a{c}b\"\n"
                ),
            ] {
                let err = parse(src(&text)).unwrap_err();
                assert!(err.field.ends_with("name"), "{c:?}: {err}");
                assert!(
                    err.problem
                        .to_string()
                        .contains(&format!("\\u{{{:x}}}", u32::from(c))),
                    "{c:?}: {err}"
                );
            }
        }
    }

    #[test]
    fn parse_dotted_key_too_deep_has_position_and_table() {
        let key = vec!["x"; MAX_KEY_PARTS + 1].join(".");
        let text = format!("[memory]\nsize = 4096\n[serial]\n  {key} = 1\n");
        let err = parse(src(&text)).unwrap_err();
        assert_eq!(err.position, Some((4, 3)), "{err}");
        assert_eq!(err.field, "serial.x", "{err}");
        assert!(
            err.problem.to_string().contains("of 17 parts (at most 16)"),
            "{err}"
        );
        // At the limit, the key is read (and here refused as unknown).
        let at_limit = vec!["x"; MAX_KEY_PARTS].join(".");
        let err = parse(src(&format!(
            "[memory]\nsize = 4096\n[serial]\n{at_limit} = 1\n"
        )))
        .unwrap_err();
        assert!(!err.problem.to_string().contains("parts"), "{err}");
        // In an array of tables, and in a header.
        let text = format!(
            "[memory]\nsize = 4096\n[[device]]\ntype = \"virtio-net\"\n[[device]]\n{key} = 1\n"
        );
        let err = parse(src(&text)).unwrap_err();
        assert_eq!(
            (err.position, err.field.as_str()),
            (Some((6, 1)), "device[1].x")
        );
        let text = format!("[memory]\nsize = 4096\n\n[{key}]\n");
        let err = parse(src(&text)).unwrap_err();
        assert_eq!((err.position, err.field.as_str()), (Some((4, 2)), ""));
        // In a multi-line inline table: the key's own line and column, and the key holding
        // the table.
        let text = format!("[memory]\nsize = 4096\n[serial]\nq = {{\n  {key} = 1,\n}}\n");
        let err = parse(src(&text)).unwrap_err();
        assert_eq!(
            (err.position, err.field.as_str()),
            (Some((5, 3)), "serial.q")
        );
        // A quoted first part with a comma in it.
        let text = format!("[memory]\nsize = 4096\n[serial]\n\"a,b\".{key} = 1\n");
        let err = parse(src(&text)).unwrap_err();
        assert_eq!((err.position, err.field.as_str()), (Some((4, 1)), "serial"));
    }

    #[test]
    fn parse_too_many_dotted_parts_refused_at_the_key_past_the_limit() {
        let mut text = String::from("[memory]\nsize = 4096\n[serial]\n");
        for i in 0..=MAX_DOTTED_PARTS {
            text.push_str(&format!("k{i}.a = 1\n"));
        }
        let err = parse(src(&text)).unwrap_err();
        assert_eq!(err.position, Some((MAX_DOTTED_PARTS + 4, 1)), "{err}");
        assert_eq!(err.field, format!("serial.k{MAX_DOTTED_PARTS}"));
        assert!(
            err.problem.to_string().contains("dotted key parts"),
            "{err}"
        );
    }

    #[test]
    fn parse_syntax_error_has_position_and_no_field() {
        let err = parse(src("[memory]\nsize = \"4096\n")).unwrap_err();
        assert_eq!(err.field, "");
        assert_eq!(err.position.map(|p| p.0), Some(2));
        assert!(err.to_string().starts_with("t.toml:2:"), "{err}");
        assert!(!err.to_string().contains(": :"), "{err}");
    }

    /// On x86_64 the serial port is an ISA UART: its interrupt is an ISA line, 1 or 3 to 15;
    /// GSI 0 is the timer (the PIT) and GSI 2 the timer's line on the IOAPIC (and the PIC
    /// cascade). On aarch64 the planner keeps it to the SPIs.
    #[test]
    fn parse_serial_irq_of_the_timer_or_past_the_isa_lines_is_refused_on_x86_64() {
        for irq in [0u32, 2, 16, 23] {
            let text = format!("[memory]\nsize = 4096\n[serial]\nirq = {irq}\n");
            let err = parse(src(&text)).unwrap_err();
            assert_eq!(err.field, "serial.irq", "{text}: {err}");
            assert_eq!(err.position, Some((4, 7)), "{text}: {err}");
            assert!(
                err.problem.to_string().starts_with(&format!(
                    "GSI {irq} is not an interrupt line of the serial port"
                )),
                "{text}: {err}"
            );
        }
        for irq in [1u32, 3, 4, 5, 15] {
            let text = format!("[memory]\nsize = 4096\n[serial]\nirq = {irq}\n");
            let spec = parse(src(&text)).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(spec.serial.map(|s| s.irq), Some(Some(irq)));
        }
        let text = "arch = \"aarch64\"\n[memory]\nsize = 4096\n[serial]\nirq = 40\n";
        assert!(parse(src(text)).is_ok());
    }

    /// KVM handles the ports of its in-kernel PIC, PIT and ELCR itself: a serial port over
    /// any of them would never see its accesses.
    #[test]
    fn parse_serial_port_over_kvm_in_kernel_devices_is_refused() {
        for (port, device) in [
            (0x1au64, "the PIC"),
            (0x21, "the PIC"),
            (0x3c, "the PIT"),
            (0x43, "the PIT"),
            (0x5a, "the PIT"),
            (0x9a, "the PIC"),
            (0x4c9, "the ELCR"),
        ] {
            let text = format!("[memory]\nsize = 4096\n[serial]\nport = {port:#x}\n");
            let err = parse(src(&text)).unwrap_err();
            assert_eq!(err.field, "serial.port", "{text}: {err}");
            assert!(
                err.problem.to_string().contains(device),
                "{text}: {err}\nexpected {device}"
            );
        }
        for port in [0x22u64, 0x38, 0x44, 0x62, 0x2f8, 0x3f8, 0x4d2, 0xfff8] {
            let text = format!("[memory]\nsize = 4096\n[serial]\nport = {port:#x}\n");
            parse(src(&text)).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    #[test]
    fn hugetlbfs_path_of_path_max_bytes_is_refused() {
        // Linux's PATH_MAX (4096) counts the terminating NUL: 4095 bytes is the longest path.
        let spec_with = |path: &str| {
            format!(
                "[memory]\nsize = \"256MiB\"\nbacking = \"hugetlbfs\"\nhuge_pages = \
                 \"2MiB\"\nhugetlbfs = \"{path}\"\n"
            )
        };
        let longest = format!("/{}", "a".repeat(4094));
        parse(src(&spec_with(&longest))).unwrap();
        for len in [4096, 4097] {
            let path = format!("/{}", "a".repeat(len - 1));
            let err = parse(src(&spec_with(&path))).unwrap_err();
            assert_eq!(err.field, "memory.hugetlbfs");
            assert_eq!(
                err.problem.to_string(),
                format!("a path of {len} bytes (a hugetlbfs mount's path is at most 4095)")
            );
        }
    }
}
