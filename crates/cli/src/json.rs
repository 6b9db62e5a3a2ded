//! The JSON forms of the command's output, with their schema (`schemars`): versioned, every
//! name and enum value in `snake_case`, and every 64-bit address or size a `"0x..."` string, so
//! readers that keep numbers as doubles lose nothing. The schema of a plan is committed as
//! `schema/plan.schema.json` and a test keeps it in step with these types.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Serialize, Serializer};

use crate::back::{BackReport, Failure, Step};
use crate::check::Finding;
use crate::error::Error;
use crate::hostmem::MemorySample;
use crate::plan::{BackingPlan, Plan, Span};
use crate::probe::{Check, Probe};
use crate::render::SPI_INTID_BASE;
use crate::spec::Arch;

/// The version of every JSON document this command writes; it changes when a field changes
/// meaning or is removed (added fields keep it).
pub const SCHEMA_VERSION: u32 = 1;

/// A 64-bit address or size, written as a lowercase hexadecimal string (`"0xc0000000"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hex(pub u64);

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:#x}", self.0))
    }
}

impl JsonSchema for Hex {
    fn schema_name() -> Cow<'static, str> {
        "Hex".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^0x[0-9a-f]{1,16}$",
            "description": "A 64-bit address or size in bytes, as a hexadecimal string."
        })
    }
}

/// `RAM` → `ram`, `anonymous-shared` → `anonymous_shared`, `virtio-net` → `virtio_net`.
fn snake(text: &str) -> String {
    text.to_ascii_lowercase().replace(['-', ' '], "_")
}

/// An inclusive address range.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct RangeDoc {
    /// First address.
    pub start: Hex,
    /// Last address (inclusive).
    pub end: Hex,
    /// Size in bytes.
    pub size: Hex,
}

impl From<Span> for RangeDoc {
    fn from(s: Span) -> Self {
        Self {
            start: Hex(s.start),
            end: Hex(s.end),
            size: Hex(s.size),
        }
    }
}

/// How memory gets its host pages.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct BackingDoc {
    /// `none` (no memory), `anonymous`, `anonymous_shared`, `memfd` or `hugetlbfs`.
    pub kind: String,
    /// The hugetlbfs mount, for `hugetlbfs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `none`, `transparent`, `huge_2mib` or `huge_1gib`.
    pub pages: String,
    /// Explicit huge pages fall back to transparent ones.
    pub fallback_transparent: bool,
    /// `bind`, `preferred` or `interleave`, when bound to host nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Host NUMA nodes.
    pub host_nodes: Vec<u32>,
    /// Prefault threads (0: none).
    pub prefault_threads: usize,
    /// Kept out of child processes.
    pub dontfork: bool,
}

impl From<&BackingPlan> for BackingDoc {
    fn from(b: &BackingPlan) -> Self {
        Self {
            kind: snake(b.kind),
            path: b.path.clone(),
            pages: match b.pages {
                "2MiB" => "huge_2mib".to_owned(),
                "1GiB" => "huge_1gib".to_owned(),
                other => snake(other),
            },
            fallback_transparent: b.fallback_transparent,
            policy: b.policy.map(snake),
            host_nodes: b.host_nodes.clone(),
            prefault_threads: b.prefault_threads,
            dontfork: b.dontfork,
        }
    }
}

/// One entry of the memory map.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct MapEntryDoc {
    /// The addresses.
    #[serde(flatten)]
    pub range: RangeDoc,
    /// `ram`, `device`, `dax`, `reserved` or `hotplug` (an empty hotplug slot).
    #[serde(rename = "type")]
    pub ty: String,
    /// Who uses it.
    pub owner: String,
    /// The guest NUMA node, for memory.
    pub node: Option<u32>,
    /// Its host memory.
    pub backing: BackingDoc,
}

/// A layout window.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct WindowDoc {
    /// `ram`, `device`, `dax`, `hotplug`, `firmware` or `reserved`.
    pub kind: String,
    /// The addresses.
    #[serde(flatten)]
    pub range: RangeDoc,
}

/// A device's interrupt.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct IrqDoc {
    /// The GSI: the IOAPIC pin on x86_64; on AArch64 the SPI number (`intid - 32`) that KVM's
    /// irqfd and `KVM_IRQ_LINE` take.
    pub gsi: u32,
    /// AArch64 only: the GIC interrupt ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intid: Option<u32>,
}

/// A device.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct DeviceDoc {
    /// Its name.
    pub name: String,
    /// `serial`, `virtio_net`, `virtio_blk`, ...
    #[serde(rename = "type")]
    pub ty: String,
    /// Its MMIO window.
    pub mmio: Option<RangeDoc>,
    /// Its I/O ports (x86_64 serial).
    pub pio: Option<RangeDoc>,
    /// Its interrupt.
    pub irq: IrqDoc,
    /// Its DAX window.
    pub dax: Option<RangeDoc>,
}

/// A hotplug slot.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SlotDoc {
    /// Its number.
    pub index: u32,
    /// Its addresses.
    #[serde(flatten)]
    pub range: RangeDoc,
    /// The guest NUMA node of its memory.
    pub node: u32,
    /// Its host memory once plugged.
    pub backing: BackingDoc,
}

/// A guest NUMA node.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct NodeDoc {
    /// Its number.
    pub node: u32,
    /// Its boot RAM in bytes.
    pub size: Hex,
    /// The host nodes it is bound to.
    pub host_nodes: Vec<u32>,
}

/// `memvisor plan --json`: the guest physical memory map.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct PlanDoc {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The spec's name.
    pub name: String,
    /// `x86_64` or `aarch64`.
    pub arch: String,
    /// Guest physical address bits.
    pub phys_bits: u32,
    /// The highest guest physical address.
    pub address_limit: Hex,
    /// Boot RAM in bytes.
    pub ram: Hex,
    /// Guest NUMA nodes.
    pub nodes: Vec<NodeDoc>,
    /// Layout windows, by address.
    pub windows: Vec<WindowDoc>,
    /// The memory map, by address.
    pub map: Vec<MapEntryDoc>,
    /// Devices: the serial port first, then the virtio-mmio devices in spec order.
    pub devices: Vec<DeviceDoc>,
    /// Hotplug slots, by address.
    pub hotplug: Vec<SlotDoc>,
}

impl From<&Plan> for PlanDoc {
    fn from(p: &Plan) -> Self {
        let aarch64 = p.arch == Arch::Aarch64;
        Self {
            schema_version: SCHEMA_VERSION,
            name: p.name.clone(),
            arch: p.arch.to_string(),
            phys_bits: p.phys_bits,
            address_limit: Hex(p.address_limit),
            ram: Hex(p.ram),
            nodes: p
                .nodes
                .iter()
                .map(|n| NodeDoc {
                    node: n.node,
                    size: Hex(n.size),
                    host_nodes: n.host_nodes.clone(),
                })
                .collect(),
            windows: p
                .windows
                .iter()
                .map(|w| WindowDoc {
                    kind: snake(&w.kind),
                    range: w.span.into(),
                })
                .collect(),
            map: p
                .map
                .iter()
                .map(|m| MapEntryDoc {
                    range: m.span.into(),
                    ty: snake(m.ty),
                    owner: m.owner.clone(),
                    node: m.node,
                    backing: (&m.backing).into(),
                })
                .collect(),
            devices: p
                .devices
                .iter()
                .map(|d| DeviceDoc {
                    name: d.name.clone(),
                    ty: snake(d.ty),
                    mmio: d.mmio.map(Into::into),
                    pio: d.pio.map(Into::into),
                    irq: if aarch64 {
                        IrqDoc {
                            gsi: d.irq.saturating_sub(SPI_INTID_BASE),
                            intid: Some(d.irq),
                        }
                    } else {
                        IrqDoc {
                            gsi: d.irq,
                            intid: None,
                        }
                    },
                    dax: d.dax.map(Into::into),
                })
                .collect(),
            hotplug: p
                .hotplug
                .iter()
                .map(|s| SlotDoc {
                    index: s.index,
                    range: s.span.into(),
                    node: s.node,
                    backing: (&s.backing).into(),
                })
                .collect(),
        }
    }
}

/// `memvisor back --json`: what was made, step by step. Sizes in bytes are hex strings;
/// memory samples stay numbers of KiB (below 2^53, exact as doubles).
#[derive(Debug, Serialize, JsonSchema)]
pub struct BackDoc {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The spec's name.
    pub name: String,
    /// The divisor applied to memory sizes, 1 to 2^53 (a number a double holds exactly).
    #[schemars(range(min = 1, max = 9_007_199_254_740_992_u64))]
    pub scale: u64,
    /// Bytes of guest memory backed at boot (RAM and DAX).
    pub boot_bytes: Hex,
    /// Bytes plugged through the hotplug slots.
    pub hotplug_bytes: Hex,
    /// Memory use before the first step.
    pub before: MemorySample,
    /// The steps, in order; the last is the release of everything.
    pub steps: Vec<Step>,
    /// Memory use after everything was released.
    pub after: MemorySample,
    /// Whether any memory asked for transparent huge pages (directly or as the fallback).
    pub thp_requested: bool,
    /// Whether any memory asked for explicit huge pages.
    pub hugetlb_requested: bool,
    /// The most transparent huge page memory this process had after any step, KiB.
    pub peak_thp_kib: u64,
    /// The most explicit huge page memory this process had after any step, KiB.
    pub peak_hugetlb_kib: u64,
    /// The step that failed, if one did (everything made before it was released).
    pub failure: Option<Failure>,
}

impl From<&BackReport> for BackDoc {
    fn from(r: &BackReport) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            name: r.name.clone(),
            scale: r.scale,
            boot_bytes: Hex(r.boot_bytes),
            hotplug_bytes: Hex(r.hotplug_bytes),
            before: r.before,
            steps: r.steps.clone(),
            after: r.after,
            thp_requested: r.thp_requested,
            hugetlb_requested: r.hugetlb_requested,
            peak_thp_kib: r.peak_thp_kib,
            peak_hugetlb_kib: r.peak_hugetlb_kib,
            failure: r.failure.clone(),
        }
    }
}

/// Transparent huge page settings.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ThpDoc {
    /// The `enabled` mode (`always`, `madvise`, `never`), or `unavailable`.
    pub enabled: String,
    /// The `defrag` mode.
    pub defrag: String,
    /// The `shmem_enabled` mode (memfds and shared memory).
    pub shmem_enabled: String,
    /// The PMD huge page size in bytes (`hpage_pmd_size`).
    pub pmd_size: Option<Hex>,
}

/// One explicit huge page pool.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct HugePagePoolDoc {
    /// Page size in bytes.
    pub page_size: Hex,
    /// Pages in the pool (`nr_hugepages`).
    pub total: u64,
    /// Free pages.
    pub free: u64,
    /// Pages reserved by mappings but not yet faulted.
    pub reserved: u64,
    /// Surplus pages (overcommitted).
    pub surplus: u64,
}

/// A host NUMA node.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct NumaNodeDoc {
    /// Its number.
    pub node: u32,
    /// Its memory in bytes.
    pub total: Hex,
    /// Its free memory in bytes.
    pub free: Hex,
    /// Its CPUs as the kernel lists them (`0-3`).
    pub cpus: String,
}

/// Overcommit settings and the commit charge.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct OvercommitDoc {
    /// `vm.overcommit_memory`: 0, 1 or 2.
    pub mode: u64,
    /// `heuristic`, `always` or `never`.
    pub name: String,
    /// `vm.overcommit_ratio` (percent, used in mode 2).
    pub ratio: Option<u64>,
    /// `CommitLimit` in bytes.
    pub commit_limit: Option<Hex>,
    /// `Committed_AS` in bytes.
    pub committed: Option<Hex>,
}

/// `memvisor probe --json`: what this host offers for guest memory.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ProbeDoc {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The kernel release.
    pub kernel: String,
    /// The base page size in bytes.
    pub page_size: Hex,
    /// Total memory in bytes.
    pub memory_total: Option<Hex>,
    /// Available memory in bytes.
    pub memory_available: Option<Hex>,
    /// Transparent huge pages.
    pub thp: ThpDoc,
    /// Explicit huge page pools, by page size.
    pub huge_page_pools: Vec<HugePagePoolDoc>,
    /// NUMA nodes (empty when the host has no NUMA information).
    pub numa_nodes: Vec<NumaNodeDoc>,
    /// Whether `MADV_POPULATE_WRITE` prefaults memory.
    pub madv_populate_write: Check,
    /// Whether guard pages can be made.
    pub guard_pages: Check,
    /// `vm.max_map_count`.
    pub max_map_count: Option<u64>,
    /// Overcommit.
    pub overcommit: OvercommitDoc,
}

impl From<&Probe> for ProbeDoc {
    fn from(p: &Probe) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            kernel: p.kernel.clone(),
            page_size: Hex(p.page_size),
            memory_total: p.memory_total.map(Hex),
            memory_available: p.memory_available.map(Hex),
            thp: ThpDoc {
                enabled: p.thp.enabled.clone(),
                defrag: p.thp.defrag.clone(),
                shmem_enabled: p.thp.shmem_enabled.clone(),
                pmd_size: p.thp.pmd_size.map(Hex),
            },
            huge_page_pools: p
                .huge_page_pools
                .iter()
                .map(|h| HugePagePoolDoc {
                    page_size: Hex(h.page_size),
                    total: h.total,
                    free: h.free,
                    reserved: h.reserved,
                    surplus: h.surplus,
                })
                .collect(),
            numa_nodes: p
                .numa_nodes
                .iter()
                .map(|n| NumaNodeDoc {
                    node: n.node,
                    total: Hex(n.total),
                    free: Hex(n.free),
                    cpus: n.cpus.clone(),
                })
                .collect(),
            madv_populate_write: p.madv_populate_write.clone(),
            guard_pages: p.guard_pages.clone(),
            max_map_count: p.max_map_count,
            overcommit: OvercommitDoc {
                mode: p.overcommit.mode,
                name: p.overcommit.name.to_owned(),
                ratio: p.overcommit.ratio,
                commit_limit: p.overcommit.commit_limit.map(Hex),
                committed: p.overcommit.committed.map(Hex),
            },
        }
    }
}

/// `memvisor check --json`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct CheckDoc<'a> {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The spec's name.
    pub name: &'a str,
    /// No check failed.
    pub ok: bool,
    /// Every check.
    pub findings: &'a [Finding],
}

/// An error under `--json`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ErrorDoc {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The error.
    pub error: ErrorBody,
}

/// What went wrong.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ErrorBody {
    /// `spec` (a mistake in the spec or its file; exit code 2), `usage` (exit code 2) or
    /// `runtime` (exit code 1).
    pub kind: String,
    /// The process exit code.
    pub exit_code: u8,
    /// The whole message (a quoted value longer than 80 characters shown in part, with its
    /// length).
    pub message: String,
    /// The spec's file name, for spec mistakes and for a spec that cannot be read (`<stdin>`
    /// for standard input, `<default>` for the built-in spec, `--memory` for Cloud
    /// Hypervisor's option, `NAME (as a memvisor spec)` for a mistake found after another
    /// VMM's configuration was converted; a path of 4096 bytes or more, which names no file,
    /// shown in part); for a runtime error, the host file that is too long to read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based line, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column in characters, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// The field path (`device[2].address`), when known; one longer than 80 characters (an
    /// unknown key as written) is cut to its first 60 and marked with `…`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl From<&Error> for ErrorDoc {
    fn from(e: &Error) -> Self {
        let code = e.exit_code();
        let mut body = ErrorBody {
            kind: match e {
                Error::Usage(_) => "usage",
                _ if code == 2 => "spec",
                _ => "runtime",
            }
            .to_owned(),
            exit_code: code,
            message: crate::back::error_chain(e),
            file: None,
            line: None,
            column: None,
            field: None,
        };
        match e {
            Error::Spec(s) => {
                body.file = Some(s.origin.clone());
                body.line = s.position.map(|p| p.0);
                body.column = s.position.map(|p| p.1);
                body.field =
                    (!s.field.is_empty()).then(|| crate::render::clip_field(&s.field).into_owned());
            }
            Error::ReadSpec { path, .. }
            | Error::SpecTooLarge { path, .. }
            | Error::SpecNotUtf8 { path, .. }
            | Error::HostFileTooLarge { path, .. } => {
                body.file = Some(crate::render::clip_path(path).into_owned());
            }
            Error::Import { origin, .. } => body.file = Some(origin.clone()),
            _ => {}
        }
        Self {
            schema_version: SCHEMA_VERSION,
            error: body,
        }
    }
}

/// The JSON schema of [`PlanDoc`] (draft 2020-12), pretty-printed with a final newline: the
/// text of `schema/plan.schema.json`.
#[must_use]
pub fn plan_schema() -> String {
    let mut text =
        serde_json::to_string_pretty(&schemars::schema_for!(PlanDoc)).unwrap_or_default();
    text.push('\n');
    text
}

/// The JSON schema of [`ErrorDoc`], as [`plan_schema`]: the text of
/// `schema/error.schema.json`.
#[must_use]
pub fn error_schema() -> String {
    let mut text =
        serde_json::to_string_pretty(&schemars::schema_for!(ErrorDoc)).unwrap_or_default();
    text.push('\n');
    text
}

/// The JSON schema of [`BackDoc`], as [`plan_schema`]: the text of `schema/back.schema.json`.
#[must_use]
pub fn back_schema() -> String {
    let mut text =
        serde_json::to_string_pretty(&schemars::schema_for!(BackDoc)).unwrap_or_default();
    text.push('\n');
    text
}

/// The JSON schema of [`CheckDoc`], as [`plan_schema`]: the text of
/// `schema/check.schema.json`.
#[must_use]
pub fn check_schema() -> String {
    let mut text =
        serde_json::to_string_pretty(&schemars::schema_for!(CheckDoc<'_>)).unwrap_or_default();
    text.push('\n');
    text
}

/// The JSON schema of [`ProbeDoc`], as [`plan_schema`]: the text of
/// `schema/probe.schema.json`.
#[must_use]
pub fn probe_schema() -> String {
    let mut text =
        serde_json::to_string_pretty(&schemars::schema_for!(ProbeDoc)).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_serializes_as_string() {
        assert_eq!(
            serde_json::to_string(&Hex(u64::MAX)).unwrap(),
            "\"0xffffffffffffffff\""
        );
        assert_eq!(serde_json::to_string(&Hex(0)).unwrap(), "\"0x0\"");
    }

    #[test]
    fn snake_makes_names_consistent() {
        assert_eq!(snake("RAM"), "ram");
        assert_eq!(snake("anonymous-shared"), "anonymous_shared");
        assert_eq!(snake("virtio-net"), "virtio_net");
    }

    #[test]
    fn host_file_too_large_names_its_file() {
        let err = Error::HostFileTooLarge {
            path: "/proc/mounts".into(),
            limit: 16 << 20,
        };
        let doc = ErrorDoc::from(&err);
        assert_eq!(doc.error.kind, "runtime");
        assert_eq!(doc.error.exit_code, 1);
        assert_eq!(doc.error.file.as_deref(), Some("/proc/mounts"));
        // A path no file can have is shown in part, as for a spec's file.
        let long = format!("/{}", "p".repeat(5000));
        let doc = ErrorDoc::from(&Error::HostFileTooLarge {
            path: long.clone(),
            limit: 1,
        });
        assert_eq!(
            doc.error.file.as_deref(),
            Some(crate::render::clip_path(&long).as_ref())
        );
        assert_ne!(doc.error.file.as_deref(), Some(long.as_str()));
    }
}
