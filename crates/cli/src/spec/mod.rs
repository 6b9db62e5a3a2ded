//! VM specs: the TOML format, reading it with positions kept, and checking every field into a
//! [`VmSpec`]. See `SPEC.md` in this crate for the format.

use std::ops::Range;

use crate::error::{Problem, SpecError};

mod keys;
mod read;
mod values;

pub(crate) use memvisor_space::plan::names_other_map_part;
pub(crate) use read::field_path;
pub use read::{parse, parse_for};

/// The built-in default microVM: 2 GiB of RAM over 2 guest NUMA nodes, a hotplug window of 4
/// slots of 1 GiB, 8 virtio-mmio devices and a serial port, x86-64 layout.
pub const DEFAULT_SPEC: &str = include_str!("../default.toml");

/// The name errors give the built-in spec.
pub const DEFAULT_ORIGIN: &str = "<default>";

/// A spec's text and where it came from, to turn byte offsets into lines and columns.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// A file name (or [`DEFAULT_ORIGIN`]).
    pub origin: &'a str,
    /// The TOML text.
    pub text: &'a str,
}

impl Source<'_> {
    /// The 1-based line and column (in characters) of byte offset `offset`: an offset past the
    /// end is the end, one inside a character that character. A byte order mark at the start
    /// of the text is no column (an offset on it is column 1).
    ///
    /// ```
    /// use memvisor_cli::spec::Source;
    ///
    /// let s = Source { origin: "x", text: "a = 1\nbb = 2\n" };
    /// assert_eq!(s.line_column(0), (1, 1));
    /// assert_eq!(s.line_column(8), (2, 3));
    /// ```
    #[must_use]
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = self.text.get(..offset).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let line_start = before
            .rfind('\n')
            .map_or_else(|| bom_len(self.text).min(offset), |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        (line, column)
    }

    /// A [`SpecError`] about `field` at `span`.
    #[must_use]
    pub fn error(
        &self,
        field: impl Into<String>,
        span: Option<Range<usize>>,
        problem: Problem,
    ) -> SpecError {
        SpecError {
            origin: self.origin.to_owned(),
            position: span.clone().map(|s| self.line_column(s.start)),
            excerpt: span.map(|s| Box::new(crate::diagnostic::Excerpt::new(self.text, s))),
            field: field.into(),
            problem: Box::new(problem),
        }
    }
}

/// The length in bytes of the byte order mark (U+FEFF) `text` starts with: 3, or 0 without
/// one. The TOML reader skips it; positions and excerpts leave it out.
pub(crate) fn bom_len(text: &str) -> usize {
    if text.starts_with('\u{feff}') { 3 } else { 0 }
}

/// The guest architecture, which picks the layout preset and the interrupt numbering: the
/// workspace's one architecture type.
pub use memvisor_space::Arch;

/// Where guest RAM's host memory comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BackingKind {
    /// Private anonymous memory.
    Anonymous,
    /// Shared anonymous memory.
    AnonymousShared,
    /// A memfd, shareable with other processes.
    Memfd,
    /// Files on the hugetlbfs mount at this path.
    Hugetlbfs(String),
}

impl BackingKind {
    /// The name used in specs.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            BackingKind::Anonymous => "anonymous",
            BackingKind::AnonymousShared => "anonymous-shared",
            BackingKind::Memfd => "memfd",
            BackingKind::Hugetlbfs(_) => "hugetlbfs",
        }
    }
}

/// The page kind of guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageKind {
    /// Base pages.
    Base,
    /// Transparent huge pages.
    Transparent,
    /// Explicit 2 MiB huge pages.
    Huge2M,
    /// Explicit 1 GiB huge pages.
    Huge1G,
}

impl PageKind {
    /// The name used in specs.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            PageKind::Base => "none",
            PageKind::Transparent => "transparent",
            PageKind::Huge2M => "2MiB",
            PageKind::Huge1G => "1GiB",
        }
    }

    /// The explicit huge page size in bytes, if any.
    #[must_use]
    pub fn explicit_bytes(self) -> Option<u64> {
        match self {
            PageKind::Huge2M => Some(2 << 20),
            PageKind::Huge1G => Some(1 << 30),
            PageKind::Base | PageKind::Transparent => None,
        }
    }
}

/// A host NUMA policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Only the listed nodes.
    Bind,
    /// The first listed node when it can: the lowest-numbered, as the kernel's
    /// `MPOL_PREFERRED` takes the lowest node of its set (a spec that lists another first is
    /// refused).
    Preferred,
    /// Round-robin over the listed nodes.
    Interleave,
}

impl Policy {
    /// The name used in specs.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Policy::Bind => "bind",
            Policy::Preferred => "preferred",
            Policy::Interleave => "interleave",
        }
    }
}

/// How guest RAM (boot and hot-plugged) gets its host memory.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MemoryOptions {
    /// The source.
    pub backing: BackingKind,
    /// The page kind.
    pub pages: PageKind,
    /// Fall back to transparent huge pages when explicit ones cannot be had.
    pub fallback_transparent: bool,
    /// Threads that prefault the memory when it is created (0: none).
    pub prefault_threads: usize,
    /// Keep the memory out of child processes.
    pub dontfork: bool,
}

/// A guest NUMA node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeSpec {
    /// Its RAM.
    pub size: u64,
    /// Host nodes its memory is bound to (empty: no binding): sorted, each once, as the
    /// binding (the kernel's node mask) takes them, whatever the order written; the first is
    /// the one `Policy::Preferred` prefers.
    pub host_nodes: Vec<u32>,
    /// The binding policy.
    pub policy: Policy,
    /// Where it was written.
    pub loc: Loc,
}

/// The hotplug window.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HotplugSpec {
    /// Number of slots.
    pub slots: u32,
    /// Size of each.
    pub slot_size: u64,
    /// Guest NUMA node of the hot-plugged memory.
    pub node: u32,
    /// Where it was written.
    pub loc: Loc,
}

/// The serial port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SerialSpec {
    /// A fixed interrupt number.
    pub irq: Option<u32>,
    /// The I/O port base (x86-64).
    pub port: Option<u64>,
    /// A fixed MMIO address (AArch64).
    pub address: Option<u64>,
    /// Where it was written.
    pub loc: Loc,
}

/// The kinds of virtio-mmio device a spec may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceType {
    /// virtio-net.
    Net,
    /// virtio-blk.
    Blk,
    /// virtio-console.
    Console,
    /// virtio-rng.
    Rng,
    /// virtio-balloon.
    Balloon,
    /// virtio-vsock.
    Vsock,
    /// virtio-fs (may have a DAX window).
    Fs,
    /// virtio-pmem (needs a DAX window).
    Pmem,
}

impl DeviceType {
    /// Every type, in the order the spec reference lists them.
    pub const ALL: [DeviceType; 8] = [
        DeviceType::Net,
        DeviceType::Blk,
        DeviceType::Console,
        DeviceType::Rng,
        DeviceType::Balloon,
        DeviceType::Vsock,
        DeviceType::Fs,
        DeviceType::Pmem,
    ];

    /// The name used in specs (`virtio-net`, ...).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            DeviceType::Net => "virtio-net",
            DeviceType::Blk => "virtio-blk",
            DeviceType::Console => "virtio-console",
            DeviceType::Rng => "virtio-rng",
            DeviceType::Balloon => "virtio-balloon",
            DeviceType::Vsock => "virtio-vsock",
            DeviceType::Fs => "virtio-fs",
            DeviceType::Pmem => "virtio-pmem",
        }
    }

    /// The prefix of default device names (`net`, `blk`, ...).
    #[must_use]
    pub fn short(self) -> &'static str {
        self.name().trim_start_matches("virtio-")
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == text)
    }
}

/// A virtio-mmio device.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeviceSpec {
    /// Its name (unique).
    pub name: String,
    /// Its type.
    pub ty: DeviceType,
    /// Size of its MMIO window.
    pub mmio_size: u64,
    /// A fixed MMIO address.
    pub address: Option<u64>,
    /// A fixed interrupt number.
    pub irq: Option<u32>,
    /// Size of its DAX window (virtio-fs, virtio-pmem).
    pub dax_size: Option<u64>,
    /// Where it was written.
    pub loc: Loc,
}

/// Where a spec item was written: its field path (`device[2]`) and byte span, and those of
/// its fields that were written, for errors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Loc {
    /// The field path.
    pub path: String,
    /// The byte span in the spec text, if known.
    pub span: Option<Range<usize>>,
    /// The byte spans of the item's fields as written (`irq`, `address`, ...): where an error
    /// about a field's value points.
    pub fields: Vec<(&'static str, Range<usize>)>,
}

impl Loc {
    fn new(path: impl Into<String>, span: Range<usize>) -> Self {
        Self {
            path: path.into(),
            span: Some(span),
            fields: Vec::new(),
        }
    }

    /// Records where `field` was written, if it was.
    fn with(mut self, field: &'static str, span: Option<Range<usize>>) -> Self {
        if let Some(span) = span {
            self.fields.push((field, span));
        }
        self
    }

    /// A sub-field of this item.
    #[must_use]
    pub fn field(&self, name: &str) -> String {
        format!("{}.{name}", self.path)
    }

    /// Where the value of `field` was written; the item's own span when it was not (a
    /// default), or for no field.
    ///
    /// ```
    /// use memvisor_cli::spec::{Source, parse};
    ///
    /// let text = "[memory]\nsize = 4096\n[[device]]\ntype = \"virtio-net\"\nirq = 9\n";
    /// let spec = parse(Source { origin: "vm.toml", text })?;
    /// let loc = &spec.devices[0].loc;
    /// assert_eq!(loc.span_of(Some("irq")), Some(text.len() - 2..text.len() - 1));
    /// assert_eq!(loc.span_of(Some("address")), loc.span);
    /// # Ok::<(), memvisor_cli::SpecError>(())
    /// ```
    #[must_use]
    pub fn span_of(&self, field: Option<&str>) -> Option<Range<usize>> {
        field
            .and_then(|f| self.fields.iter().find(|(name, _)| *name == f))
            .map(|(_, span)| span.clone())
            .or_else(|| self.span.clone())
    }
}

/// A checked VM spec.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VmSpec {
    /// A name for headings.
    pub name: String,
    /// The architecture.
    pub arch: Arch,
    /// Guest physical address bits.
    pub phys_bits: u32,
    /// The alignment of the RAM window above the fixed ones and of the hotplug and DAX
    /// windows (`window_align`): a power of two from 2 MiB to 1 GiB; `None`, 1 GiB.
    pub window_align: Option<u64>,
    /// Host memory options of guest RAM.
    pub memory: MemoryOptions,
    /// Guest NUMA nodes (at least one), in order; their sizes sum to the boot RAM.
    pub nodes: Vec<NodeSpec>,
    /// The hotplug window, if any.
    pub hotplug: Option<HotplugSpec>,
    /// The serial port, if any.
    pub serial: Option<SerialSpec>,
    /// The virtio-mmio devices, in order.
    pub devices: Vec<DeviceSpec>,
}

impl VmSpec {
    /// Boot RAM in bytes.
    ///
    /// A checked spec's nodes add up to at most `u64::MAX` bytes (the sum is checked when it is
    /// read); for a hand-made one the sum saturates.
    #[must_use]
    pub fn ram(&self) -> u64 {
        self.nodes
            .iter()
            .fold(0, |sum, n| sum.saturating_add(n.size))
    }

    /// The page size RAM sizes must be multiples of: the explicit huge page size, or the
    /// host's base page size.
    #[must_use]
    pub fn ram_page_size(&self) -> u64 {
        self.memory
            .pages
            .explicit_bytes()
            .unwrap_or(memvisor_vmem::page_size() as u64)
    }

    /// The spec with every memory size divided by `factor` (RAM of each node, hotplug slots, DAX
    /// windows), rounded down to the alignment it needs and at least that: the RAM page size
    /// for RAM and slots, 2 MiB for DAX windows; MMIO windows keep their size. The
    /// `window_align` that rounds the windows holding that memory (1 GiB when the spec has
    /// none) is divided too, rounded down to a power of two, at least 2 MiB and the RAM page
    /// size and at most the spec's own (which wins where it is below the RAM page, as 2 MiB
    /// with 1 GiB pages may be), so the hotplug window shrinks with its slots. `factor` 0 or
    /// 1 changes nothing.
    ///
    /// ```
    /// use memvisor_cli::spec::{DEFAULT_ORIGIN, DEFAULT_SPEC, Source, parse};
    ///
    /// let spec = parse(Source { origin: DEFAULT_ORIGIN, text: DEFAULT_SPEC })?;
    /// let small = spec.scaled(1024);
    /// assert_eq!(small.ram(), spec.ram() / 1024);
    /// # Ok::<(), memvisor_cli::SpecError>(())
    /// ```
    #[must_use]
    pub fn scaled(&self, factor: u64) -> Self {
        if factor <= 1 {
            return self.clone();
        }
        let ram_page = self.ram_page_size();
        let scale = |size: u64, page: u64| (size / factor / page * page).max(page);
        let mut out = self.clone();
        for n in &mut out.nodes {
            n.size = scale(n.size, ram_page);
        }
        if let Some(h) = &mut out.hotplug {
            h.slot_size = scale(h.slot_size, ram_page);
        }
        // DAX windows are multiples of 2 MiB.
        for d in &mut out.devices {
            if let Some(dax) = &mut d.dax_size {
                *dax = scale(*dax, memvisor_space::plan::DAX_ALIGN);
            }
        }
        // The alignment the windows that hold memory are rounded to shrinks with the memory:
        // a power of two, at least the least allowed and the RAM page, at most the spec's own.
        let align = self.window_align.unwrap_or(MAX_WINDOW_ALIGN);
        let divided = align / factor;
        let divided = if divided == 0 {
            0
        } else {
            1 << divided.ilog2()
        };
        out.window_align = Some(divided.max(MIN_WINDOW_ALIGN).max(ram_page).min(align));
        out
    }
}

/// The largest spec read, in bytes (1 MiB): far more than any real VM needs, small enough that
/// reading and checking it takes milliseconds. Longer input is refused after reading one byte
/// more than this, so endless sources (`/dev/zero`, a pipe) cannot make the command hang or
/// grow.
pub const MAX_SPEC_BYTES: usize = 1 << 20;

/// The longest name (of the VM or of a device), in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// The VM's name taken from the file `origin` names (its stem, the extension left out), made a
/// name as names are checked: control and format characters escaped (`\u{1b}`), other white
/// space than the space made a space, at most [`MAX_NAME_CHARS`] characters, no white space at
/// either end; `fallback` if nothing is left (a file named ` .toml`).
pub(crate) fn name_of_file(origin: &str, fallback: &str) -> String {
    let stem = std::path::Path::new(origin)
        .file_stem()
        .map_or_else(|| origin.to_owned(), |s| s.to_string_lossy().into_owned());
    let name: String = crate::render::escape(&stem)
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .take(MAX_NAME_CHARS)
        .collect();
    let name = name.trim();
    if name.is_empty() {
        fallback.to_owned()
    } else {
        name.to_owned()
    }
}

/// The most `[[device]]` entries: the largest number of interrupts any architecture hands out
/// (the 96 AArch64 SPIs; x86_64 has fewer). Checked before any device is looked at.
pub const MAX_DEVICES: usize = 96;

/// The problem of `n` devices, more than [`MAX_DEVICES`], for a spec and for an import alike.
pub(crate) fn too_many_devices(n: usize) -> Problem {
    Problem::Invalid(format!(
        "{n} devices (at most {MAX_DEVICES}: each needs its own interrupt)"
    ))
}

/// The most guest NUMA nodes (`[[numa]]` entries).
pub const MAX_GUEST_NODES: usize = 64;

/// The most host nodes one guest node may list, and one more than the highest host node
/// number accepted: the most nodes any Linux build maps (1,024,
/// [`memvisor_space::LINUX_MOST_NUMNODES`]).
pub const MAX_HOST_NODES: u32 = memvisor_space::LINUX_MOST_NUMNODES;

/// The most hotplug slots.
pub const MAX_HOTPLUG_SLOTS: u32 = 1024;

/// The most prefault threads.
pub const MAX_PREFAULT_THREADS: u32 = 256;

/// Default MMIO window of a virtio-mmio device: its register block, one 4 KiB page.
pub const DEFAULT_MMIO_SIZE: u64 = 0x1000;

/// Default guest physical address bits.
pub const DEFAULT_PHYS_BITS: u32 = 40;

/// The least `window_align`: 2 MiB, the alignment of DAX windows and hotplug slots.
pub const MIN_WINDOW_ALIGN: u64 = 2 << 20;

/// The most `window_align`, and what a spec without it has: 1 GiB.
pub const MAX_WINDOW_ALIGN: u64 = 1 << 30;

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` as the spec file `t.toml`.
    pub(super) fn src(text: &str) -> Source<'_> {
        Source {
            origin: "t.toml",
            text,
        }
    }

    #[test]
    fn parse_default_spec_matches_description() {
        let spec = parse(Source {
            origin: DEFAULT_ORIGIN,
            text: DEFAULT_SPEC,
        })
        .unwrap();
        assert_eq!(spec.ram(), 2 << 30);
        assert_eq!(spec.nodes.len(), 2);
        let h = spec.hotplug.as_ref().unwrap();
        assert_eq!((h.slots, h.slot_size), (4, 1 << 30));
        assert_eq!(spec.devices.len(), 8);
        assert!(spec.serial.is_some());
        assert_eq!(spec.arch, Arch::X86_64);
    }

    #[test]
    fn parse_memory_size_only_makes_one_node() {
        let spec = parse(src("[memory]\nsize = \"256MiB\"\n")).unwrap();
        assert_eq!(spec.nodes.len(), 1);
        assert_eq!(spec.ram(), 256 << 20);
        assert_eq!(spec.name, "t");
    }

    #[test]
    fn a_name_from_the_file_name_keeps_the_rules_of_names() {
        let long = "n".repeat(100);
        for (origin, name) in [
            (" .toml".to_owned(), "vm".to_owned()),
            ("  x  .toml".to_owned(), "x".to_owned()),
            ("\u{a0}.toml".to_owned(), "vm".to_owned()),
            ("a\u{a0}b\tc.toml".to_owned(), "a b\\u{9}c".to_owned()),
            (format!("/tmp/{long}.toml"), "n".repeat(MAX_NAME_CHARS)),
            ("ev\u{202e}il.toml".to_owned(), "ev\\u{202e}il".to_owned()),
        ] {
            let spec = parse(Source {
                origin: &origin,
                text: "[memory]\nsize = \"256MiB\"\n",
            })
            .unwrap();
            assert_eq!(spec.name, name, "{origin:?}");
            // It reads back as a name: written as one, it is taken as it is.
            let named = format!(
                "name = {}\n[memory]\nsize = \"256MiB\"\n",
                toml::Value::String(name.clone())
            );
            assert_eq!(parse(src(&named)).unwrap().name, name, "{origin:?}");
        }
    }

    #[test]
    fn parse_unknown_field_names_it() {
        let err = parse(src("[memory]\nsize = \"1GiB\"\nszie = 3\n")).unwrap_err();
        assert_eq!(err.position, Some((3, 1)));
        assert_eq!(err.field, "memory.szie");
        assert!(err.to_string().contains("unknown field `szie`"), "{err}");
    }

    #[test]
    fn parse_numa_sum_mismatch_errors() {
        let text = "[memory]\nsize = \"1GiB\"\n[[numa]]\nsize = \"256MiB\"\n";
        let err = parse(src(text)).unwrap_err();
        assert_eq!(err.field, "memory.size");
        assert_eq!(
            err.problem.to_string(),
            "memory.size is 1 GiB but the [[numa]] nodes add up to 256 MiB"
        );
    }

    #[test]
    fn line_column_does_not_count_a_byte_order_mark() {
        let s = src("\u{feff}ab\ncd");
        assert_eq!(s.line_column(0), (1, 1));
        assert_eq!(s.line_column(3), (1, 1));
        assert_eq!(s.line_column(4), (1, 2));
        assert_eq!(s.line_column(7), (2, 2));
    }

    #[test]
    fn line_column_inside_a_character_rounds_down() {
        let s = src("日本\nxyz\n");
        assert_eq!(s.line_column(0), (1, 1));
        assert_eq!(s.line_column(1), (1, 1));
        assert_eq!(s.line_column(2), (1, 1));
        assert_eq!(s.line_column(3), (1, 2));
        assert_eq!(s.line_column(5), (1, 2));
        assert_eq!(s.line_column(6), (1, 3));
        assert_eq!(s.line_column(7), (2, 1));
        assert_eq!(s.line_column(usize::MAX), (3, 1));
    }

    #[test]
    fn scaled_keeps_at_least_one_page() {
        let spec = parse(src("[memory]\nsize = \"8KiB\"\n")).unwrap();
        let small = spec.scaled(1 << 20);
        assert_eq!(small.ram(), memvisor_vmem::page_size() as u64);
    }
}
