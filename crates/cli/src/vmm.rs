//! Other VMMs' memory options as memvisor specs: Firecracker's JSON configuration
//! (`machine-config` and the virtio devices) and Cloud Hypervisor's `--memory` option. The
//! result is spec TOML, serialized by `toml` (so no value can inject syntax), read and checked
//! as any spec is.

use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;
use toml::{Table, Value};

use crate::error::{Error, Problem, Result, SpecError};
use crate::size::SizeError;
use crate::spec::{MAX_DEVICES, MAX_SPEC_BYTES, Source};

/// Firecracker's `machine-config` (its `PUT /machine-config` body).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FcMachine {
    mem_size_mib: u64,
    #[serde(default)]
    huge_pages: Option<String>,
    // Not about memory layout: accepted and left out.
    #[serde(default)]
    #[allow(dead_code)]
    vcpu_count: Option<u64>,
    #[serde(default)]
    #[allow(dead_code)]
    smt: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    cpu_template: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    track_dirty_pages: Option<bool>,
}

/// A device of Firecracker's configuration file; only its id matters here.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a Firecracker device object")]
struct FcId {
    #[serde(alias = "drive_id", alias = "iface_id", alias = "vsock_id")]
    id: Option<String>,
}

/// Whether a Firecracker file is a whole configuration (it has `machine-config`) or a
/// `machine-config` object alone; every other key is skipped without being kept.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a Firecracker configuration object")]
struct FcShape {
    #[serde(rename = "machine-config")]
    machine: Option<IgnoredAny>,
}

/// A list of devices as written: how many entries it has, and the text of the first
/// [`MAX_DEVICES`] + 1 of them (no more is kept, however long the list), read into fields only
/// once the count is known to be within the limit.
#[derive(Debug, Default)]
struct FcList<'a> {
    entries: Vec<&'a RawValue>,
    total: usize,
}

impl<'de: 'a, 'a> Deserialize<'de> for FcList<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = FcList<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of Firecracker device objects")
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<FcList<'a>, A::Error> {
                let mut list = FcList::default();
                while let Some(entry) = seq.next_element::<&'de RawValue>()? {
                    if list.entries.len() <= MAX_DEVICES {
                        list.entries.push(entry);
                    }
                    list.total = list.total.saturating_add(1);
                }
                Ok(list)
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// Firecracker's configuration file (`--config-file`), as far as memory and devices go.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a Firecracker configuration object")]
struct FcConfig<'a> {
    #[serde(rename = "machine-config")]
    machine: FcMachine,
    #[serde(default, borrow)]
    drives: FcList<'a>,
    #[serde(default, borrow, rename = "network-interfaces")]
    network: FcList<'a>,
    #[serde(default, borrow)]
    vsock: Option<&'a RawValue>,
    #[serde(default, borrow)]
    balloon: Option<&'a RawValue>,
    #[serde(default, borrow)]
    entropy: Option<&'a RawValue>,
}

/// Reads `T` from `text`, the part of the file `src` that starts at byte `base`; `field` is the
/// path of `text` in the file (empty for the whole file). A mistake is a [`SpecError`] with
/// the field serde was in and its line and column in the file.
fn from_json<'a, T: Deserialize<'a>>(
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
        json_error(src, base, text, path, e.inner())
    })?;
    de.end()
        .map_err(|e| json_error(src, base, text, field.to_owned(), &e))?;
    Ok(value)
}

/// `e`, found in `text` (the part of the file `src` from byte `base`), as a [`SpecError`] at
/// its line and column in the file.
fn json_error(
    src: Source<'_>,
    base: usize,
    text: &str,
    field: String,
    e: &serde_json::Error,
) -> SpecError {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    let what = if e.is_syntax() || e.is_eof() {
        "not JSON"
    } else {
        "not a Firecracker configuration"
    };
    // serde_json counts lines from 1 and columns in bytes, the column of the last byte read
    // (0 at the start of a line).
    let span = (e.line() > 0).then(|| {
        let line_start = if e.line() == 1 {
            0
        } else {
            text.match_indices('\n')
                .nth(e.line() - 2)
                .map_or(text.len(), |(i, _)| i + 1)
        };
        let mut at = (line_start + e.column().saturating_sub(1)).min(text.len());
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        base + at..base + at + 1
    });
    src.error(
        field,
        span,
        Problem::Invalid(format!("{what}: {}", crate::render::escape(message))),
    )
}

fn spec_error(origin: &str, message: String) -> Error {
    Error::Import {
        origin: origin.to_owned(),
        message,
    }
}

fn device(ty: &str, name: Option<&str>) -> Value {
    let mut t = Table::new();
    t.insert("type".into(), Value::String(ty.into()));
    if let Some(name) = name {
        t.insert("name".into(), Value::String(name.into()));
    }
    Value::Table(t)
}

/// The spec of a Firecracker configuration: a whole `--config-file` JSON (memory from
/// `machine-config`; a virtio-blk per drive, a virtio-net per network interface, then vsock,
/// balloon and entropy devices, in that order; the serial port) or a `machine-config` object
/// alone (memory and the serial port). `mem_size_mib` becomes `memory.size`; `huge_pages =
/// "2M"` becomes memfd memory of 2 MiB huge pages (Firecracker backs it with a hugetlbfs
/// memfd), `"None"` private anonymous memory. `vcpu_count`, `smt`, `cpu_template` and
/// `track_dirty_pages` do not change the memory map and are left out.
///
/// The device lists are counted before any entry is read: more than [`MAX_DEVICES`] devices in
/// all are refused as a spec with that many `[[device]]` tables is, naming the first entry past
/// the limit (`drives[96]`). The converted spec is held to [`MAX_SPEC_BYTES`] as a spec file is.
///
/// # Errors
/// [`Error::Spec`] for JSON that is not a Firecracker configuration or has too many devices,
/// with the field and its line and column in the file; [`Error::Import`] for an unknown
/// `huge_pages` value; [`Error::SpecTooLarge`] when the converted spec would be larger than a
/// spec may be.
///
/// ```
/// use memvisor_cli::vmm::firecracker_spec;
///
/// let toml = firecracker_spec("vm.json", r#"{"vcpu_count": 2, "mem_size_mib": 1024, "huge_pages": "2M"}"#)?;
/// assert!(toml.contains("size = \"1024MiB\""), "{toml}");
/// assert!(toml.contains("huge_pages = \"2MiB\""), "{toml}");
/// # Ok::<(), memvisor_cli::Error>(())
/// ```
pub fn firecracker_spec(origin: &str, json: &str) -> Result<String> {
    let src = Source { origin, text: json };
    // Where an entry's text starts in the file.
    let offset =
        |raw: &RawValue| (raw.get().as_ptr() as usize).saturating_sub(json.as_ptr() as usize);
    let shape: FcShape = from_json(src, 0, json, "")?;
    let config = if shape.machine.is_some() {
        from_json::<FcConfig<'_>>(src, 0, json, "")?
    } else {
        FcConfig {
            machine: from_json(src, 0, json, "")?,
            drives: FcList::default(),
            network: FcList::default(),
            vsock: None,
            balloon: None,
            entropy: None,
        }
    };
    // Counts first, as for a spec's [[device]] tables: no entry is read past the limit.
    let lists = [
        ("drives", &config.drives),
        ("network-interfaces", &config.network),
    ];
    let singles = [
        ("vsock", config.vsock),
        ("balloon", config.balloon),
        ("entropy", config.entropy),
    ];
    let total = lists
        .iter()
        .map(|(_, l)| l.total)
        .chain(singles.iter().map(|(_, s)| usize::from(s.is_some())))
        .fold(0usize, usize::saturating_add);
    if total > MAX_DEVICES {
        // The first device past the limit, in the order they become devices.
        let mut before = 0usize;
        let mut past = None;
        for (name, list) in lists {
            if before + list.total > MAX_DEVICES {
                let i = MAX_DEVICES - before;
                past = Some((format!("{name}[{i}]"), list.entries.get(i).copied()));
                break;
            }
            before += list.total;
        }
        if past.is_none() {
            past = singles
                .iter()
                .filter_map(|(name, s)| s.map(|s| (name.to_string(), Some(s))))
                .nth(MAX_DEVICES - before);
        }
        let (field, raw) = past.unwrap_or_default();
        return Err(src
            .error(
                field,
                raw.map(|r| offset(r)..offset(r) + r.get().len()),
                crate::spec::too_many_devices(total),
            )
            .into());
    }
    let ids = |name: &str, list: &FcList<'_>| -> Result<Vec<Option<String>>> {
        list.entries
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                from_json::<FcId>(src, offset(raw), raw.get(), &format!("{name}[{i}]"))
                    .map(|d| d.id)
                    .map_err(Error::from)
            })
            .collect()
    };
    let drives = ids("drives", &config.drives)?;
    let network = ids("network-interfaces", &config.network)?;
    let vsock = config
        .vsock
        .map(|raw| from_json::<FcId>(src, offset(raw), raw.get(), "vsock"))
        .transpose()?;
    let mut memory = Table::new();
    let mib = config.machine.mem_size_mib;
    memory.insert("size".into(), Value::String(format!("{mib}MiB")));
    match config.machine.huge_pages.as_deref() {
        None | Some("None") => {
            memory.insert("backing".into(), Value::String("anonymous".into()));
        }
        Some("2M") => {
            memory.insert("backing".into(), Value::String("memfd".into()));
            memory.insert("huge_pages".into(), Value::String("2MiB".into()));
        }
        Some(other) => {
            return Err(spec_error(
                origin,
                format!(
                    "machine-config.huge_pages: unknown value `{}` (Firecracker knows None and 2M)",
                    crate::render::escape(other)
                ),
            ));
        }
    }
    let mut devices = Vec::new();
    for id in &drives {
        devices.push(device("virtio-blk", id.as_deref()));
    }
    for id in &network {
        devices.push(device("virtio-net", id.as_deref()));
    }
    if let Some(v) = &vsock {
        devices.push(device("virtio-vsock", v.id.as_deref()));
    }
    if config.balloon.is_some() {
        devices.push(device("virtio-balloon", None));
    }
    if config.entropy.is_some() {
        devices.push(device("virtio-rng", None));
    }
    let mut spec = Table::new();
    spec.insert("name".into(), Value::String(stem(origin)));
    spec.insert("memory".into(), Value::Table(memory));
    spec.insert("serial".into(), Value::Table(Table::new()));
    if !devices.is_empty() {
        spec.insert("device".into(), Value::Array(devices));
    }
    // The converted spec is held to a spec's limits: escaping in TOML can make it longer than
    // the file it came from.
    let text = spec.to_string();
    if text.len() > MAX_SPEC_BYTES {
        return Err(Error::SpecTooLarge {
            path: format!("{origin} (as a memvisor spec)"),
            limit: MAX_SPEC_BYTES,
        });
    }
    Ok(text)
}

/// The spec of Cloud Hypervisor's `--memory` option (`size=1G,hotplug_size=4G,shared=on`):
/// `size` is the boot RAM; `hotplug_size` one hotplug slot of that size; `shared=on` memfd
/// memory (else private anonymous); `hugepages=on` explicit huge pages of `hugepage_size`
/// (default 2M), else transparent ones unless `thp=off`; `prefault=on` one prefault thread.
/// `hotplug_method`, `hotplugged_size` and `mergeable` are accepted and left out. Sizes take
/// Cloud Hypervisor's `K`, `M`, `G` suffixes (binary) or none (bytes).
///
/// # Errors
/// [`Error::Import`] for an unknown option, a bad size or `on`/`off` value, or no `size`.
///
/// ```
/// use memvisor_cli::vmm::cloud_hypervisor_spec;
///
/// let toml = cloud_hypervisor_spec("size=1G,hotplug_size=4G,shared=on")?;
/// assert!(toml.contains("size = 1073741824"), "{toml}");
/// assert!(toml.contains("slot_size = 4294967296"), "{toml}");
/// assert!(cloud_hypervisor_spec("size=1G,ballon=on").is_err());
/// # Ok::<(), memvisor_cli::Error>(())
/// ```
pub fn cloud_hypervisor_spec(option: &str) -> Result<String> {
    let origin = "--memory";
    let err = |m: String| spec_error(origin, m);
    let mut size = None;
    let mut hotplug = None;
    let mut shared = false;
    let mut hugepages = false;
    let mut hugepage_size = 2u64 << 20;
    let mut thp = true;
    let mut prefault = false;
    for item in option.split(',').filter(|s| !s.is_empty()) {
        let (key, value) = item.split_once('=').ok_or_else(|| {
            err(format!(
                "`{}` is not key=value",
                crate::render::escape(item)
            ))
        })?;
        let on_off = || match value {
            "on" | "true" => Ok(true),
            "off" | "false" => Ok(false),
            _ => Err(err(format!(
                "{key}: `{}` is not on or off",
                crate::render::escape(value)
            ))),
        };
        let bytes = || ch_size(value).map_err(|e| err(format!("{key}: {e}")));
        match key {
            "size" => size = Some(bytes()?),
            "hotplug_size" => hotplug = Some(bytes()?),
            "hugepage_size" => hugepage_size = bytes()?,
            "shared" => shared = on_off()?,
            "hugepages" => hugepages = on_off()?,
            "thp" => thp = on_off()?,
            "prefault" => prefault = on_off()?,
            "mergeable" => {
                on_off()?;
            }
            "hotplug_method" | "hotplugged_size" => {}
            other => {
                return Err(err(format!(
                    "unknown option `{}` (known: size, hotplug_size, hotplug_method, \
                     hotplugged_size, shared, hugepages, hugepage_size, thp, prefault, mergeable)",
                    crate::render::escape(other)
                )));
            }
        }
    }
    let size = size.ok_or_else(|| err("no size=".to_owned()))?;
    let mut memory = Table::new();
    memory.insert(
        "size".into(),
        Value::Integer(to_toml_int(size).map_err(|m| err(format!("size: {m}")))?),
    );
    memory.insert(
        "backing".into(),
        Value::String(if shared { "memfd" } else { "anonymous" }.into()),
    );
    let pages = match (hugepages, hugepage_size, thp) {
        (true, 0x20_0000, _) => "2MiB",
        (true, 0x4000_0000, _) => "1GiB",
        (true, other, _) => {
            return Err(err(format!(
                "hugepage_size: {} huge pages are not supported (2M or 1G)",
                crate::size::Size(other)
            )));
        }
        (false, _, true) => "transparent",
        (false, _, false) => "none",
    };
    memory.insert("huge_pages".into(), Value::String(pages.into()));
    if prefault {
        memory.insert("prefault".into(), Value::Integer(1));
    }
    let mut spec = Table::new();
    spec.insert("name".into(), Value::String("cloud-hypervisor".into()));
    spec.insert("memory".into(), Value::Table(memory));
    if let Some(h) = hotplug.filter(|&h| h > 0) {
        let mut t = Table::new();
        t.insert("slots".into(), Value::Integer(1));
        t.insert(
            "slot_size".into(),
            Value::Integer(to_toml_int(h).map_err(|m| err(format!("hotplug_size: {m}")))?),
        );
        spec.insert("hotplug".into(), Value::Table(t));
    }
    spec.insert("serial".into(), Value::Table(Table::new()));
    Ok(spec.to_string())
}

fn to_toml_int(v: u64) -> std::result::Result<i64, String> {
    i64::try_from(v).map_err(|_| format!("{v} bytes is more than 2^63 - 1"))
}

/// A Cloud Hypervisor size: digits with an optional `K`, `M` or `G` (binary).
fn ch_size(text: &str) -> std::result::Result<u64, SizeError> {
    let (digits, shift) = match text.as_bytes().last() {
        Some(b'K') => (&text[..text.len() - 1], 10),
        Some(b'M') => (&text[..text.len() - 1], 20),
        Some(b'G') => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SizeError::BadNumber(
            crate::render::escape(text).into_owned(),
        ));
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|v| v.checked_mul(1 << shift))
        .ok_or_else(|| SizeError::TooLarge(text.to_owned()))
}

fn stem(origin: &str) -> String {
    let stem = std::path::Path::new(origin)
        .file_stem()
        .map_or_else(|| origin.to_owned(), |s| s.to_string_lossy().into_owned());
    let mut name: String = crate::render::escape(&stem)
        .chars()
        .take(crate::spec::MAX_NAME_CHARS)
        .collect();
    if name.trim().is_empty() {
        name = "firecracker".to_owned();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{PageKind, Source, parse};

    fn spec_of(toml: &str) -> crate::spec::VmSpec {
        parse(Source {
            origin: "x",
            text: toml,
        })
        .unwrap()
    }

    #[test]
    fn firecracker_full_config_gives_memory_and_devices() {
        let json = r#"{
            "boot-source": {"kernel_image_path": "vmlinux", "boot_args": "console=ttyS0"},
            "drives": [{"drive_id": "rootfs", "path_on_host": "r.ext4", "is_root_device": true, "is_read_only": false}],
            "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0"}],
            "vsock": {"vsock_id": "vsock0", "guest_cid": 3, "uds_path": "/tmp/v.sock"},
            "balloon": {"amount_mib": 0, "deflate_on_oom": false},
            "machine-config": {"vcpu_count": 2, "mem_size_mib": 1024, "smt": false, "track_dirty_pages": true}
        }"#;
        let spec = spec_of(&firecracker_spec("fc.json", json).unwrap());
        assert_eq!(spec.name, "fc");
        assert_eq!(spec.ram(), 1 << 30);
        let names: Vec<&str> = spec.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["rootfs", "eth0", "vsock0", "balloon0"]);
        assert!(spec.serial.is_some());
    }

    #[test]
    fn firecracker_bad_input_is_refused() {
        let e =
            firecracker_spec("x", "{\"mem_size_mib\": 64, \"huge_pages\": \"1G\"}").unwrap_err();
        assert!(e.to_string().contains("unknown value `1G`"), "{e}");
        let e = firecracker_spec("x", "{\"mem_size_mib\": 64, \"mem_size\": 1}").unwrap_err();
        assert!(e.to_string().contains("unknown field `mem_size`"), "{e}");
        let e = firecracker_spec("x", "[1,").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        // A drive id that would break TOML stays a string, then the name check refuses it.
        let json = r#"{"machine-config": {"mem_size_mib": 64}, "drives": [{"drive_id": "a\"\n[memory]"}]}"#;
        let toml = firecracker_spec("x", json).unwrap();
        assert!(
            parse(Source {
                origin: "x",
                text: &toml
            })
            .is_err()
        );
    }

    #[test]
    fn cloud_hypervisor_options_map_to_spec() {
        let spec = spec_of(&cloud_hypervisor_spec("size=512M,hugepages=on,hugepage_size=2M,prefault=on,hotplug_method=virtio-mem,hotplug_size=2G").unwrap());
        assert_eq!(spec.ram(), 512 << 20);
        assert_eq!(spec.memory.pages, PageKind::Huge2M);
        assert_eq!(spec.memory.prefault_threads, 1);
        assert_eq!(spec.hotplug.as_ref().map(|h| h.slot_size), Some(2 << 30));
        let spec = spec_of(&cloud_hypervisor_spec("size=1073741824,thp=off").unwrap());
        assert_eq!(spec.memory.pages, PageKind::Base);
    }

    #[test]
    fn cloud_hypervisor_bad_options_are_refused() {
        for (option, expected) in [
            ("hotplug_size=1G", "no size="),
            ("size=1X", "size: `1X` is not a number"),
            ("size=1G,shared=maybe", "shared: `maybe` is not on or off"),
            (
                "size=1G,hugepages=on,hugepage_size=4M",
                "4 MiB huge pages are not supported",
            ),
            ("size=99999999999G", "does not fit in 64 bits"),
            ("size", "`size` is not key=value"),
        ] {
            let e = cloud_hypervisor_spec(option).unwrap_err().to_string();
            assert!(e.contains(expected), "{option}: {e}");
        }
    }
}
