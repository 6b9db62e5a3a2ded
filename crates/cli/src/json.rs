//! The JSON forms of the command's output, with their schema (`schemars`): versioned, every
//! name and enum value in `snake_case`, and every 64-bit address or size a `"0x..."` string, so
//! readers that keep numbers as doubles lose nothing. The schema of a plan is committed as
//! `schema/plan.schema.json` and a test keeps it in step with these types.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Serialize, Serializer};

use crate::check::Finding;
use crate::error::Error;
use crate::plan::{BackingPlan, Plan, Span};
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

/// `memvisor check --json`.
#[derive(Clone, Debug, Serialize)]
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
    /// The whole message.
    pub message: String,
    /// The spec's file name, for spec mistakes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based line, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column in characters, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// The field path (`device[2].address`), when known.
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
        if let Error::Spec(s) = e {
            body.file = Some(s.origin.clone());
            body.line = s.position.map(|p| p.0);
            body.column = s.position.map(|p| p.1);
            body.field = (!s.field.is_empty()).then(|| s.field.clone());
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
}
