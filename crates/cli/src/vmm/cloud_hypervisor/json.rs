//! Cloud Hypervisor's JSON `VmConfig` (the body of its API's `vm.create`, what
//! `ch-remote create` sends): its `memory` (with `zones`) and `numa` sections, read with the
//! types, defaults and required fields of Cloud Hypervisor's `MemoryConfig`,
//! `MemoryZoneConfig`, `NumaConfig` and `NumaDistance`, into the same [`ChConfig`] the command
//! line gives, so both are checked and turned into a spec by one code path ([`config_spec`]).
//! Its device sections are read for their ids and the PCI devices they add ([`devices`]).
//!
//! Every object is read as a map of its fields' raw JSON text (unknown fields ignored, as
//! Cloud Hypervisor's serde ignores them; a field given twice refused, as it refuses it), then
//! each field is read on its own where it is in the file, so every mistake names its field
//! and its line and column, and a check of the shared path about a field points at it.

use std::marker::PhantomData;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{
    CH_DEFAULT_MEMORY, CH_PMEM_ALIGN, ChConfig, ChMemory, ChNodeInput, ChZoneInput,
    DefaultHugePage, MAX_MEMORY_ZONES, PciDevices, Place, config_spec, spec_error,
};
use crate::error::{Error, Problem, Result};
use crate::size::Size;
use crate::spec::{Arch, MAX_GUEST_NODES, MAX_SPEC_BYTES, Source};
use crate::vmm::firecracker::WholeTo;
use crate::vmm::firecracker::json_position::from_json_as;

mod unplanned_sections;

/// How mistakes name a `VmConfig` given as text rather than as a file.
pub(super) const JSON_ORIGIN: &str = "<VmConfig>";

/// What a mistake in a value makes the file.
const WHAT: &str = "not a Cloud Hypervisor VmConfig";

/// Cloud Hypervisor's `u64` fields (sizes).
type Whole64 = WholeTo<{ u64::MAX }>;
/// Its `u32` fields.
type Whole32 = WholeTo<{ u32::MAX as u64 }>;
/// Its `u16` fields (PCI segments).
type Whole16 = WholeTo<{ u16::MAX as u64 }>;
/// Its `u8` fields (NUMA distances).
type Whole8 = WholeTo<{ u8::MAX as u64 }>;

/// Whether `text` is a JSON `VmConfig`: an object, `{` after JSON white space.
pub(super) fn is_json(text: &str) -> bool {
    text.trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
}

/// A JSON object of Cloud Hypervisor's configuration: the fields it knows, and what errors
/// call it.
trait ChObject {
    const KEYS: &'static [&'static str];
    /// `a memory object`.
    const WHAT: &'static str;
}

/// Cloud Hypervisor's `VmConfig`, of an x86_64 build when `X86_64`.
struct VmObject<const X86_64: bool>;
impl<const X86_64: bool> ChObject for VmObject<X86_64> {
    // The sections that lay out guest memory, those that decide whether Cloud Hypervisor
    // boots the configuration at all, and those with ids or PCI devices ([`DEVICE_SECTIONS`]);
    // `ivshmem`, of an optional feature, only to name it in the note of what is not counted
    // (given twice, it is refused as a build with that feature refuses it); `serial`, `tpm`,
    // `landlock_enable` and `landlock_rules`, fields of every build, and `debug_console`, a
    // field of x86_64 builds (the last, left out for others), add nothing to the plan and are
    // checked for their types ([`unplanned_sections`]); the others are not read.
    const KEYS: &'static [&'static str] = match VM_KEYS.split_last() {
        Some((_, others)) if !X86_64 => others,
        _ => VM_KEYS,
    };
    const WHAT: &'static str = "a VmConfig object";
}

/// The fields of [`VmObject`] on x86_64: `debug_console` last.
const VM_KEYS: &[&str] = &[
    "memory",
    "numa",
    "payload",
    "cpus",
    "platform",
    "watchdog",
    "rng",
    "console",
    "disks",
    "net",
    "fs",
    "generic_vhost_user",
    "pmem",
    "vdpa",
    "devices",
    "user_devices",
    "rate_limit_groups",
    "balloon",
    "vsock",
    "rtc",
    "iommu",
    "pvpanic",
    "pci_segments",
    "ivshmem",
    "serial",
    "tpm",
    "landlock_enable",
    "landlock_rules",
    "debug_console",
];

/// Cloud Hypervisor's `PayloadConfig` (`igvm`, `host_data` and `fw_cfg_config` are fields of
/// optional features, ignored like unknown ones).
struct PayloadObject;
impl ChObject for PayloadObject {
    const KEYS: &'static [&'static str] = &["firmware", "kernel", "cmdline", "initramfs"];
    const WHAT: &'static str = "a payload object";
}

/// The fields of Cloud Hypervisor's `CpusConfig` that decide whether it boots.
struct CpusObject;
impl ChObject for CpusObject {
    const KEYS: &'static [&'static str] = &["boot_vcpus", "max_vcpus", "max_phys_bits"];
    const WHAT: &'static str = "a cpus object";
}

/// The fields of Cloud Hypervisor's `PlatformConfig` about PCI segments.
struct PlatformObject;
impl ChObject for PlatformObject {
    const KEYS: &'static [&'static str] = &["num_pci_segments", "iommu_segments"];
    const WHAT: &'static str = "a platform object";
}

/// An entry of `rate_limit_groups`: its `id` is read, and no other field (Cloud Hypervisor's
/// `RateLimiterGroupConfig` has no `iommu`: there it is an unknown field, ignored).
struct GroupObject;
impl ChObject for GroupObject {
    const KEYS: &'static [&'static str] = &["id"];
    const WHAT: &'static str = "a device object";
}

/// An object of a device section: the fields of Cloud Hypervisor's `PciDeviceCommonConfig`
/// (`id`, `iommu`, `pci_segment`, `pci_device_id`) are read (its other fields are not).
struct DeviceObject;
impl ChObject for DeviceObject {
    const KEYS: &'static [&'static str] = &["id", "iommu", "pci_segment", "pci_device_id"];
    const WHAT: &'static str = "a device object";
}

/// The `balloon` object: the fields of [`DeviceObject`] and `size`, the most memory the
/// balloon takes from the guest (required: Cloud Hypervisor's `BalloonConfig` has no default).
struct BalloonObject;
impl ChObject for BalloonObject {
    const KEYS: &'static [&'static str] = &["id", "iommu", "pci_segment", "pci_device_id", "size"];
    const WHAT: &'static str = "a balloon object";
}

/// An entry of `pmem`: the fields of [`DeviceObject`] and `size`, its region's size (`null` or
/// not given: the file's size, which is not read).
struct PmemObject;
impl ChObject for PmemObject {
    const KEYS: &'static [&'static str] = &["id", "iommu", "pci_segment", "pci_device_id", "size"];
    const WHAT: &'static str = "a device object";
}

/// An entry of `disks` or `net`: the fields of [`DeviceObject`] and `vhost_user`, which only
/// their types have (elsewhere it is an unknown field, ignored).
struct VhostDeviceObject;
impl ChObject for VhostDeviceObject {
    const KEYS: &'static [&'static str] =
        &["id", "iommu", "pci_segment", "pci_device_id", "vhost_user"];
    const WHAT: &'static str = "a device object";
}

/// An entry of `generic_vhost_user`: the fields of `PciDeviceCommonConfig` and `device_type`,
/// the virtio device id it presents (required).
struct VhostUserObject;
impl ChObject for VhostUserObject {
    const KEYS: &'static [&'static str] =
        &["id", "iommu", "pci_segment", "pci_device_id", "device_type"];
    const WHAT: &'static str = "a generic vhost-user device object";
}

/// An entry of the top-level `pci_segments` (Cloud Hypervisor's `PciSegmentConfig`).
struct PciSegmentObject;
impl ChObject for PciSegmentObject {
    const KEYS: &'static [&'static str] = &[
        "pci_segment",
        "mmio32_aperture_weight",
        "mmio64_aperture_weight",
    ];
    const WHAT: &'static str = "a PCI segment object";
}

/// The virtio device id of a block device (`VirtioDeviceType::Block`): given at boot on PCI
/// segment 0, its BAR is a 32-bit one.
const VIRTIO_ID_BLOCK: u64 = 2;

/// The `console` object: the fields of `PciDeviceCommonConfig` and those of
/// `CommonConsoleConfig` (`mode`, and `file` and `socket`, whose types are checked).
struct ConsoleObject;
impl ChObject for ConsoleObject {
    const KEYS: &'static [&'static str] = &[
        "id",
        "iommu",
        "pci_segment",
        "pci_device_id",
        "file",
        "mode",
        "socket",
    ];
    const WHAT: &'static str = "a console object";
}

/// The sections whose devices' `iommu: true` gives the guest a virtio-iommu device (Cloud
/// Hypervisor's `VmConfig::validate` sets its `iommu` from theirs).
const IOMMU_SECTIONS: &[&str] = &[
    "disks", "net", "pmem", "rng", "rtc", "console", "vdpa", "balloon", "devices", "vsock",
];

/// The sections of a `VmConfig` with ids Cloud Hypervisor keeps in one namespace with zone ids
/// (besides `rng` and `console`), whether each is a list, the virtio PCI device each entry
/// adds to the 64-bit PCI device area (`None`: no slot of 8 MiB there: boot-time virtio-blk
/// devices have 32-bit BARs, and the BARs of VFIO and vfio-user devices are not counted, nor
/// those of vDPA devices, whose virtio device type is the host device's: a block one has a
/// 32-bit BAR; a generic vhost-user entry takes one unless its `device_type` is a block
/// device's), and whether each entry is a PCI device of segment 0 (rate limit groups are not).
/// `ivshmem` and `pvmemcontrol` are fields of optional features of Cloud Hypervisor, which ignores
/// them without those: they are not read (a given `ivshmem` is named in the note of what is not
/// counted, [`Devices::uncounted_note`]).
const DEVICE_SECTIONS: &[(&str, bool, Option<&str>, bool)] = &[
    ("rate_limit_groups", true, None, false),
    ("disks", true, None, true),
    ("net", true, Some("virtio-net"), true),
    ("fs", true, Some("virtio-fs"), true),
    ("generic_vhost_user", true, Some("vhost-user"), true),
    ("pmem", true, Some("virtio-pmem"), true),
    ("rtc", false, Some("virtio-rtc"), true),
    ("user_devices", true, None, true),
    ("vdpa", true, None, true),
    ("balloon", false, Some("virtio-balloon"), true),
    ("devices", true, None, true),
    ("vsock", false, Some("virtio-vsock"), true),
];

/// The flags of a `VmConfig` that add a PCI device of segment 0 when `true`, and the virtio
/// PCI device with a 64-bit BAR each is (the pvpanic device's BAR is 32-bit).
const DEVICE_FLAGS: &[(&str, Option<&str>)] = &[
    ("watchdog", Some("virtio-watchdog")),
    ("iommu", Some("virtio-iommu")),
    ("pvpanic", None),
];

/// The device ids of the bus of a PCI segment (`NUM_DEVICE_IDS`), the first its host
/// bridge's.
const CH_PCI_DEVICE_IDS: u64 = 32;

/// The `mode` of a console, as Cloud Hypervisor's `ConsoleOutputMode` names it.
struct ConsoleMode(&'static str);

impl<'de> Deserialize<'de> for ConsoleMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        const MODES: &[&str] = &["Off", "Pty", "Tty", "File", "Socket", "Null"];
        struct V;
        impl Visitor<'_> for V {
            type Value = ConsoleMode;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a console mode, `Off`, `Pty`, `Tty`, `File`, `Socket` or `Null`")
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<Self::Value, E> {
                if let Some(mode) = MODES.iter().find(|m| **m == v) {
                    Ok(ConsoleMode(mode))
                } else {
                    Err(E::unknown_variant(v, MODES))
                }
            }
        }
        d.deserialize_str(V)
    }
}

/// The devices of a `VmConfig`: its virtio PCI devices with a 64-bit BAR (besides a
/// virtio-mem one), how many PCI devices of segment 0 it has in all (besides virtio-mem ones),
/// and the ids of its device sections with the path where each is first given (`net[0].id`).
struct Devices {
    pci: PciDevices,
    on_bus: u64,
    ids: std::collections::HashMap<String, String>,
    /// The first device id Cloud Hypervisor refuses: one given twice, or starting with `__`.
    refused: Option<Error>,
    /// The first device (not rate limit group) with the id [`DEFAULT_ZONE`], refused when
    /// the virtio-mem device of a configuration without zones takes it.
    default_zone: Option<Error>,
    /// The first vhost-user or vfio-user device, which Cloud Hypervisor refuses without shared
    /// guest memory: its field path, where it is in the file, and what it is.
    needs_shared: Option<(String, Range<usize>, &'static str)>,
    /// The `balloon`'s `size` and where it is in the file.
    balloon: Option<(u64, Range<usize>)>,
    /// What may take room in the 64-bit PCI device area that is not counted: how many VFIO,
    /// vfio-user and vDPA devices (their BARs are the host devices') and `pmem` entries
    /// without `size` (the region is the file's size) there are, and whether an `ivshmem`
    /// device is given (its BAR is there only in builds with Cloud Hypervisor's `ivshmem`
    /// feature), as [`Devices::uncounted_note`] names them.
    uncounted: [(u64, &'static str, &'static str); 5],
}

impl Devices {
    /// The note that says what the PCI device area does not count, when there is any: `2
    /// VFIO devices, 1 pmem region without `size` ...`.
    fn uncounted_note(&self) -> Option<String> {
        let named: Vec<String> = self
            .uncounted
            .iter()
            .filter(|(n, _, _)| *n > 0)
            .map(|&(n, one, many)| format!("{n} {}", if n == 1 { one } else { many }))
            .collect();
        let sized_by_host = self.uncounted[..4].iter().any(|(n, _, _)| *n > 0);
        let ivshmem = self.uncounted[4].0 > 0;
        let mut why = Vec::new();
        if sized_by_host {
            why.push(
                "the file does not give their sizes: the BARs of VFIO, vfio-user and vDPA \
                 devices are the host devices', a pmem region without size is its file's",
            );
        }
        if ivshmem {
            why.push(
                "`ivshmem` is a field of Cloud Hypervisor's optional `ivshmem` feature, which a \
                 build without it ignores; in a build with it, the device is a PCI device of \
                 segment 0 with a BAR of its `size` in the area",
            );
        }
        (!named.is_empty()).then(|| {
            format!(
                "not counted in the 64-bit PCI device area: {} ({}); with them Cloud Hypervisor \
                 needs guest memory to end lower than this plan checks",
                named.join(", "),
                why.join("; ")
            )
        })
    }

    /// Refuses more PCI devices than segment 0's bus has device ids for (the host bridge
    /// takes the first), `virtio_mem` of them virtio-mem devices: Cloud Hypervisor fails to
    /// add the one past them. Shown at the `VmConfig`'s object, `vm`.
    fn check_bus(&self, virtio_mem: u64, vm: &Place<'_>) -> Result<()> {
        let count = self.on_bus.saturating_add(virtio_mem);
        if count < CH_PCI_DEVICE_IDS {
            return Ok(());
        }
        Err(vm.err(format_args!(
            "{count} PCI devices on PCI segment 0 (virtio-rng, the console unless it is off, \
             and those of the device sections and virtio-mem), and its bus has {} device ids \
             for them (the host bridge takes the first of {CH_PCI_DEVICE_IDS}): Cloud \
             Hypervisor cannot add them all",
            CH_PCI_DEVICE_IDS - 1
        )))
    }
}

/// The sections whose devices Cloud Hypervisor does not put behind its virtio-iommu: it
/// refuses `iommu: true` in them.
const NO_IOMMU_SECTIONS: &[&str] = &["fs", "generic_vhost_user", "user_devices"];

/// Reads the device sections of `vm`: `rng` (always a device), `console` (a device unless its
/// `mode` is `Off`; `mode` required), [`DEVICE_SECTIONS`], each entry an object whose `id`,
/// when given, is kept, and [`DEVICE_FLAGS`]. The `iommu` flag's virtio-iommu device is
/// there too when the platform's `iommu_segments` are given (`iommu_segments`) or a device of
/// [`IOMMU_SECTIONS`] says `iommu: true`. Each device's `pci_segment` (0, the only segment),
/// `pci_device_id` (1 to 31, each given once) and `iommu` ([`NO_IOMMU_SECTIONS`] none, nor a
/// `disks` or `net` entry with `vhost_user: true`, and every device when segment 0 is an IOMMU
/// segment, `iommu_segment0`) are checked as Cloud
/// Hypervisor checks them; the first refusal is kept, with those of the ids.
fn devices(vm: &Object<'_>, iommu_segments: bool, iommu_segment0: bool) -> Result<Devices> {
    let mut pci = vec![("virtio-rng", 1)];
    let mut iommu = iommu_segments;
    // The first id Cloud Hypervisor refuses, and where each id is first given.
    let mut refused: Option<Error> = None;
    let mut default_zone: Option<Error> = None;
    let mut needs_shared: Option<(String, Range<usize>, &'static str)> = None;
    let mut balloon: Option<(u64, Range<usize>)> = None;
    // The sizes of the pmem regions given, and the first one Cloud Hypervisor refuses.
    let mut pmem: Vec<u64> = Vec::new();
    let mut pmem_refused: Option<Error> = None;
    // VFIO, vfio-user and vDPA devices, and pmem entries without size.
    let mut uncounted = [
        (0u64, "VFIO device", "VFIO devices"),
        (0, "vfio-user device", "vfio-user devices"),
        (0, "vDPA device", "vDPA devices"),
        (
            0,
            "pmem region without `size`",
            "pmem regions without `size`",
        ),
        (0, "ivshmem device", "ivshmem devices"),
    ];
    if vm.raw("ivshmem").is_some_and(|raw| raw.get() != "null") {
        uncounted[4].0 = 1;
    }
    let mut ids: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    // Where each `pci_device_id` is first given.
    let mut device_ids: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
    // Cloud Hypervisor's default devices refused on an IOMMU segment.
    let mut absent: Option<Error> = None;
    // `exists`: the device is created (a console whose mode is `Off` is only checked).
    let mut keep_id = |o: &Object<'_>, section: &str, exists: bool| -> Result<()> {
        // A rate limit group's id is a `String` (`null` refused) that defaults to the empty
        // one; a device's an `Option<String>`.
        let group = section == "rate_limit_groups";
        let id = match if group {
            o.get::<String>("id")?
        } else {
            o.option::<String>("id")?
        } {
            Some(id) => Some((id, join(&o.path, "id"), o.raw("id"))),
            None if group => Some((String::new(), o.path.clone(), None)),
            None => None,
        };
        if let Some((id, path, raw)) = id {
            let problem = if id.starts_with("__") {
                Some(
                    "an id starting with `__` is Cloud Hypervisor's own (it refuses it)".to_owned(),
                )
            } else {
                ids.get(&id).map(|other| {
                    format!(
                        "`{}` is the id of {other} too (Cloud Hypervisor refuses an id given twice)",
                        crate::render::escape(&id)
                    )
                })
            };
            let span = || raw.map_or_else(|| o.span.clone(), |raw| span_of(o.src, raw));
            if let Some(problem) = problem
                && refused.is_none()
            {
                refused = Some(Error::Spec(o.src.error(
                    path.clone(),
                    Some(span()),
                    Problem::Invalid(problem),
                )));
            }
            if !group && id == DEFAULT_ZONE && default_zone.is_none() {
                default_zone = Some(Error::Spec(o.src.error(
                    path.clone(),
                    Some(span()),
                    Problem::Invalid(format!(
                        "`{DEFAULT_ZONE}` is the id of the virtio-mem device of the hotplug area \
                         too (Cloud Hypervisor names it after the memory's one zone, \
                         `{DEFAULT_ZONE}` without zones, and fails to add both devices)"
                    )),
                )));
            }
            ids.entry(id).or_insert(path);
        }
        // Read in every device section, as Cloud Hypervisor's types have it in every one (a
        // rate limit group has none: there it is an unknown field, ignored).
        if group {
            return Ok(());
        }
        let on = o.flag("iommu", false)?;
        iommu |= on && IOMMU_SECTIONS.contains(&section);
        let segment = o.get::<Whole16>("pci_segment")?.map_or(0, |w| w.0);
        let device_id = o.option::<Whole8>("pci_device_id")?.map(|w| w.0);
        // Cloud Hypervisor's `PciDeviceCommonConfig::validate`, in its order.
        let problem = if on && NO_IOMMU_SECTIONS.contains(&section) {
            Some((
                "iommu",
                format!(
                    "Cloud Hypervisor puts no `{section}` device behind its IOMMU (it refuses \
                     `iommu: true` here)"
                ),
            ))
        } else if segment > 0 {
            Some((
                "pci_segment",
                format!(
                    "there is no PCI segment {segment} (there is one, 0: more, Cloud \
                     Hypervisor's platform num_pci_segments, are not modelled; Cloud \
                     Hypervisor refuses a device on a segment it does not have)"
                ),
            ))
        } else if iommu_segment0 && !on {
            Some((
                "",
                "the device is on PCI segment 0, one of platform.iommu_segments, and not \
                 behind the IOMMU (`iommu: true`): Cloud Hypervisor refuses it"
                    .to_owned(),
            ))
        } else if let Some(id) = device_id {
            if id >= CH_PCI_DEVICE_IDS {
                Some((
                    "pci_device_id",
                    format!(
                        "{id} is no device id of the PCI bus (0 to {}; Cloud Hypervisor \
                         refuses it)",
                        CH_PCI_DEVICE_IDS - 1
                    ),
                ))
            } else if id == 0 {
                Some((
                    "pci_device_id",
                    "0 is the host bridge's device id on PCI segment 0 (Cloud Hypervisor \
                     refuses it)"
                        .to_owned(),
                ))
            } else if !exists {
                None
            } else if let Some(other) = device_ids.get(&id) {
                Some((
                    "pci_device_id",
                    format!(
                        "{id} is the pci_device_id of {other} too (Cloud Hypervisor refuses a \
                         device id given twice)"
                    ),
                ))
            } else {
                device_ids.insert(id, o.path.clone());
                None
            }
        } else {
            None
        };
        // `DiskConfig::validate` and `NetConfig::validate`, after the common checks: a
        // vhost-user device cannot be behind the IOMMU (`vhost_user` is read in `disks` and
        // `net` alone, and is `false` elsewhere).
        let vhost_user = o.flag("vhost_user", false)?;
        let problem = problem.or_else(|| {
            (on && vhost_user).then(|| {
                (
                    "iommu",
                    "Cloud Hypervisor puts no vhost-user device behind its IOMMU (it refuses \
                     `iommu: true` with `vhost_user: true`)"
                        .to_owned(),
                )
            })
        });
        if let Some((field, problem)) = problem
            && refused.is_none()
        {
            let (path, raw) = if field.is_empty() {
                (o.path.clone(), None)
            } else {
                (join(&o.path, field), o.raw(field))
            };
            let span = raw.map_or_else(|| o.span.clone(), |raw| span_of(o.src, raw));
            refused = Some(Error::Spec(o.src.error(
                path,
                Some(span),
                Problem::Invalid(problem),
            )));
        }
        Ok(())
    };
    match vm.raw("rng") {
        Some(raw) => {
            let o = Object::read::<DeviceObject>(vm.src, raw, "rng".to_owned())?;
            keep_id(&o, "rng", true)?;
        }
        // Cloud Hypervisor's default virtio-rng device, not behind the IOMMU.
        None if iommu_segment0 => {
            absent = Some(absent_off_iommu(vm, "rng", "virtio-rng device"));
        }
        None => {}
    }
    let console = match vm.raw("console") {
        Some(raw) => {
            let o = Object::read::<ConsoleObject>(vm.src, raw, "console".to_owned())?;
            o.option::<String>("file")?;
            o.option::<String>("socket")?;
            let mode = o.get::<ConsoleMode>("mode")?.map(|m| m.0);
            keep_id(&o, "console", mode != Some("Off"))?;
            let mode = o.required::<ConsoleMode>("mode")?.0;
            if mode == "Socket" {
                // Its virtio-console has no socket back end: it refuses to create the VM.
                let raw = o.raw("mode").unwrap_or(raw);
                return Err(Error::Spec(vm.src.error(
                    join(&o.path, "mode"),
                    Some(span_of(vm.src, raw)),
                    Problem::Invalid(
                        "Cloud Hypervisor's virtio-console has no `Socket` mode (it refuses it; \
                         `Socket` is the serial port's)"
                            .to_owned(),
                    ),
                )));
            }
            mode != "Off"
        }
        // `--console tty`, not behind the IOMMU.
        None => {
            if iommu_segment0 && absent.is_none() {
                absent = Some(absent_off_iommu(vm, "console", "virtio-console device"));
            }
            true
        }
    };
    pci.push(("virtio-console", u64::from(console)));
    let mut on_bus = 1 + u64::from(console);
    for &(key, list, device, bus) in DEVICE_SECTIONS {
        // The entries alone: each one's field path is made as it is read, so that a list of
        // many entries (a 1 MiB file holds some 350,000 `{}`) holds no string per entry.
        let entries = if list {
            vm.option::<Vec<&RawValue>>(key)?.unwrap_or_default()
        } else {
            vm.option::<&RawValue>(key)?.into_iter().collect()
        };
        let mut count = 0u64;
        for (i, raw) in entries.iter().enumerate() {
            let path = if list {
                format!("{key}[{i}]")
            } else {
                key.to_owned()
            };
            let path = &path;
            if matches!(key, "fs" | "generic_vhost_user" | "user_devices") {
                // Cloud Hypervisor refuses a non-empty list of them without shared memory.
                needs_shared.get_or_insert_with(|| {
                    let raw = vm.raw(key).unwrap_or(raw);
                    let what = if key == "user_devices" {
                        "a vfio-user device"
                    } else {
                        "a vhost-user device"
                    };
                    (key.to_owned(), span_of(vm.src, raw), what)
                });
            }
            if key == "generic_vhost_user" {
                let o = Object::read::<VhostUserObject>(vm.src, raw, path.clone())?;
                keep_id(&o, key, true)?;
                let kind = o.required::<Whole32>("device_type")?.0;
                count += u64::from(kind != VIRTIO_ID_BLOCK);
                on_bus += 1;
                continue;
            }
            if key == "rate_limit_groups" {
                let o = Object::read::<GroupObject>(vm.src, raw, path.clone())?;
                keep_id(&o, key, false)?;
                continue;
            }
            let o = if matches!(key, "disks" | "net") {
                Object::read::<VhostDeviceObject>(vm.src, raw, path.clone())?
            } else if key == "balloon" {
                Object::read::<BalloonObject>(vm.src, raw, path.clone())?
            } else if key == "pmem" {
                Object::read::<PmemObject>(vm.src, raw, path.clone())?
            } else {
                Object::read::<DeviceObject>(vm.src, raw, path.clone())?
            };
            keep_id(&o, key, true)?;
            let unknown = match key {
                "devices" => Some(0),
                "user_devices" => Some(1),
                "vdpa" => Some(2),
                "pmem" if o.option::<Whole64>("size")?.is_none() => Some(3),
                _ => None,
            };
            if let Some(at) = unknown {
                uncounted[at].0 += 1;
            }
            if key == "pmem"
                && let Some(size) = o.option::<Whole64>("size")?.map(|w| w.0)
            {
                if size == 0 || !size.is_multiple_of(CH_PMEM_ALIGN) {
                    let span = o
                        .raw("size")
                        .map_or_else(|| o.span.clone(), |r| span_of(o.src, r));
                    pmem_refused.get_or_insert_with(|| {
                        Error::Spec(o.src.error(
                            join(&o.path, "size"),
                            Some(span),
                            Problem::Invalid(format!(
                                "{size} bytes is not a whole number of {} above 0 (Cloud \
                                 Hypervisor refuses such a virtio-pmem region)",
                                Size(CH_PMEM_ALIGN)
                            )),
                        ))
                    });
                }
                pmem.push(size);
            }
            if key == "balloon" {
                let size = o.required::<Whole64>("size")?.0;
                let span = o
                    .raw("size")
                    .map_or_else(|| o.span.clone(), |r| span_of(o.src, r));
                balloon = Some((size, span));
            }
            if o.flag("vhost_user", false)? {
                needs_shared.get_or_insert_with(|| {
                    let raw = o.raw("vhost_user");
                    let span = raw.map_or_else(|| o.span.clone(), |raw| span_of(o.src, raw));
                    (join(&o.path, "vhost_user"), span, "a vhost-user device")
                });
            }
            count += 1;
            on_bus += u64::from(bus);
        }
        if let Some(name) = device {
            pci.push((name, count));
        }
    }
    for &(key, device) in DEVICE_FLAGS {
        let mut on = vm.flag(key, false)?;
        if key == "iommu" {
            on |= iommu;
        }
        let on = u64::from(on);
        if let Some(name) = device {
            pci.push((name, on));
        }
        on_bus += on;
    }
    Ok(Devices {
        pci: PciDevices(pci, pmem),
        on_bus,
        ids,
        refused: refused.or(pmem_refused).or(absent),
        default_zone,
        needs_shared,
        balloon,
        uncounted,
    })
}

/// Refuses a balloon as large as the guest's memory or larger: Cloud Hypervisor's
/// `VmConfig::validate` compares its `size` with all of the memory (`memory.size`, the zones'
/// sizes and every `hotplugged_size`) and refuses it unless it is smaller.
fn balloon_too_large(
    src: Source<'_>,
    balloon: Option<(u64, Range<usize>)>,
    memory: &ChMemory<'_>,
    zones: &[ChZoneInput<'_>],
) -> Option<Error> {
    let (size, span) = balloon?;
    let total: u128 = [memory.size, memory.hotplugged]
        .into_iter()
        .chain(zones.iter().flat_map(|z| [z.size, z.hotplugged]))
        .map(|s| u128::from(s.unwrap_or(0)))
        .sum();
    if u128::from(size) < total {
        return None;
    }
    let shown = |bytes: u128| {
        u64::try_from(bytes).map_or_else(|_| format!("{bytes} B"), |b| Size(b).to_string())
    };
    Some(Error::Spec(src.error(
        "balloon.size".to_owned(),
        Some(span),
        Problem::Invalid(format!(
            "a balloon of {} is not smaller than the guest's memory, {} (memory.size, the \
             zones' sizes and hotplugged_size together): Cloud Hypervisor refuses it",
            Size(size),
            shown(total)
        )),
    )))
}

/// Refuses Cloud Hypervisor's default `device` (`section` not given), which is not behind the
/// IOMMU, on PCI segment 0 made an IOMMU segment: shown at `platform.iommu_segments`.
fn absent_off_iommu(vm: &Object<'_>, section: &str, device: &str) -> Error {
    let platform = vm.raw("platform");
    let list = platform.and_then(|raw| {
        let o = Object::read::<PlatformObject>(vm.src, raw, "platform".to_owned()).ok()?;
        o.raw("iommu_segments")
    });
    let span = list
        .or(platform)
        .map_or_else(|| vm.span.clone(), |raw| span_of(vm.src, raw));
    Error::Spec(vm.src.error(
        "platform.iommu_segments".to_owned(),
        Some(span),
        Problem::Invalid(format!(
            "the default {device} (`{section}` is not given) is on PCI segment 0, one of \
             platform.iommu_segments, and not behind the IOMMU: Cloud Hypervisor refuses it \
             (give `{section}` with `iommu: true`)"
        )),
    ))
}

/// The id of Cloud Hypervisor's memory zone when none is given (`DEFAULT_MEMORY_ZONE`), which
/// names the virtio-mem device of its hotplug area.
const DEFAULT_ZONE: &str = "mem0";

/// Refuses a zone whose id is a device's too: Cloud Hypervisor keeps zone and device ids in
/// one namespace and refuses an id given twice.
fn zone_id_clash(
    zones: &[ChZoneInput<'_>],
    ids: &std::collections::HashMap<String, String>,
) -> Option<Error> {
    zones.iter().find_map(|zone| {
        let id = zone.id.as_deref()?;
        let other = ids.get(id)?;
        Some(zone.place.err(format_args!(
            "id: `{}` is the id of {other} too (Cloud Hypervisor refuses an id given twice)",
            crate::render::escape(id)
        )))
    })
}

/// Cloud Hypervisor's most PCI segments (`MAX_NUM_PCI_SEGMENTS`).
const CH_MAX_PCI_SEGMENTS: u64 = 96;

/// Cloud Hypervisor's most vCPUs on x86_64 (`MAX_SUPPORTED_CPUS`).
const CH_MAX_VCPUS: u64 = 8192;

struct MemoryObject;
impl ChObject for MemoryObject {
    const KEYS: &'static [&'static str] = &[
        "size",
        "mergeable",
        "hotplug_method",
        "hotplug_size",
        "hotplugged_size",
        "shared",
        "hugepages",
        "hugepage_size",
        "prefault",
        "reserve",
        "zones",
        "thp",
    ];
    const WHAT: &'static str = "a memory object";
}

struct ZoneObject;
impl ChObject for ZoneObject {
    /// The fields of Cloud Hypervisor's zone object are its `--memory-zone` option's keys.
    const KEYS: &'static [&'static str] = super::ZONE_KEYS;
    const WHAT: &'static str = "a memory zone object";
}

struct NumaObject;
impl ChObject for NumaObject {
    const KEYS: &'static [&'static str] = &[
        "guest_numa_id",
        "cpus",
        "distances",
        "memory_zones",
        "pci_segments",
        "device_id",
    ];
    const WHAT: &'static str = "a NUMA node object";
}

struct DistanceObject;
impl ChObject for DistanceObject {
    const KEYS: &'static [&'static str] = &["destination", "distance"];
    const WHAT: &'static str = "a NUMA distance object";
}

/// The raw text of an object's known fields, in `T::KEYS` order. Only a JSON object is taken
/// (serde's derive would also take an array of the fields' values in order, which no
/// configuration holds).
struct Fields<'a, T> {
    values: Vec<Option<&'a RawValue>>,
    kind: PhantomData<T>,
}

impl<'de, T: ChObject> Deserialize<'de> for Fields<'de, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: ChObject> Visitor<'de> for V<T> {
            type Value = Fields<'de, T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(T::WHAT)
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut values = vec![None; T::KEYS.len()];
                while let Some(key) = map.next_key::<String>()? {
                    match T::KEYS.iter().position(|k| *k == key) {
                        Some(at) if values[at].is_some() => {
                            return Err(serde::de::Error::duplicate_field(T::KEYS[at]));
                        }
                        Some(at) => values[at] = Some(map.next_value::<&'de RawValue>()?),
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Fields {
                    values,
                    kind: PhantomData,
                })
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// Where a check of the shared path shows its mistake: an object's field path and span, and
/// the spans of its fields. A message that starts with one of its fields' names and `: `
/// (`size: 0 B is not ...`) is shown at that field (at the object when it is not given).
pub(super) struct JsonPlace<'s> {
    src: Source<'s>,
    pub(super) path: String,
    span: Range<usize>,
    keys: &'static [&'static str],
    fields: Vec<Option<Range<usize>>>,
}

impl JsonPlace<'_> {
    pub(super) fn err(&self, message: &str) -> Error {
        let field = message
            .split_once(": ")
            .and_then(|(key, rest)| Some((self.keys.iter().position(|k| *k == key)?, rest)));
        let (path, span, message) = match field {
            Some((at, rest)) => (
                join(&self.path, self.keys[at]),
                self.fields[at].clone().unwrap_or_else(|| self.span.clone()),
                rest,
            ),
            None => (self.path.clone(), self.span.clone(), message),
        };
        Error::Spec(
            self.src
                .error(path, Some(span), Problem::Invalid(message.to_owned())),
        )
    }
}

/// `path.key`, or `key` at the top.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Where `raw`, read from the text of `src`, is in it.
fn span_of(src: Source<'_>, raw: &RawValue) -> Range<usize> {
    let start = (raw.get().as_ptr() as usize)
        .checked_sub(src.text.as_ptr() as usize)
        .filter(|&s| s <= src.text.len())
        .unwrap_or(0);
    start..start + raw.get().len()
}

/// An object of the file, its fields found.
struct Object<'a> {
    src: Source<'a>,
    path: String,
    span: Range<usize>,
    keys: &'static [&'static str],
    values: Vec<Option<&'a RawValue>>,
}

impl<'a> Object<'a> {
    fn read<T: ChObject>(src: Source<'a>, raw: &'a RawValue, path: String) -> Result<Self> {
        let span = span_of(src, raw);
        let fields: Fields<'a, T> = from_json_as(WHAT, src, span.start, raw.get(), &path)?;
        Ok(Self {
            src,
            path,
            span,
            keys: T::KEYS,
            values: fields.values,
        })
    }

    fn raw(&self, key: &str) -> Option<&'a RawValue> {
        let at = self.keys.iter().position(|k| *k == key)?;
        self.values[at]
    }

    /// The field `key` read as a `T`, `None` when it is not given.
    fn get<T: Deserialize<'a>>(&self, key: &str) -> Result<Option<T>> {
        let Some(raw) = self.raw(key) else {
            return Ok(None);
        };
        let at = span_of(self.src, raw).start;
        Ok(Some(from_json_as(
            WHAT,
            self.src,
            at,
            raw.get(),
            &join(&self.path, key),
        )?))
    }

    /// A field Cloud Hypervisor requires: one not given is refused at the object's end.
    fn required<T: Deserialize<'a>>(&self, key: &str) -> Result<T> {
        self.get(key)?.ok_or_else(|| {
            let end = self.span.end.saturating_sub(1).max(self.span.start);
            Error::Spec(self.src.error(
                self.path.clone(),
                Some(end..self.span.end),
                Problem::Invalid(format!("{WHAT}: missing field `{key}`")),
            ))
        })
    }

    /// A flag, `default` when not given (`null` is refused, as Cloud Hypervisor's `bool` is
    /// no `Option`).
    fn flag(&self, key: &str, default: bool) -> Result<bool> {
        Ok(self.get::<bool>(key)?.unwrap_or(default))
    }

    /// A field of an `Option` type: not given and `null` are both none.
    fn option<T: Deserialize<'a>>(&self, key: &str) -> Result<Option<T>> {
        Ok(self.get::<Option<T>>(key)?.flatten())
    }

    /// A list of at most `max` entries, each kept as raw text; more are refused at the list.
    fn list(&self, key: &str, max: usize, what: &str) -> Result<Option<Vec<&'a RawValue>>> {
        let Some(list) = self.option::<Vec<&'a RawValue>>(key)? else {
            return Ok(None);
        };
        if list.len() > max {
            let raw = self.raw(key).unwrap_or_else(|| list[0]);
            return Err(Error::Spec(self.src.error(
                join(&self.path, key),
                Some(span_of(self.src, raw)),
                Problem::Invalid(format!("more than {max} {what}")),
            )));
        }
        Ok(Some(list))
    }

    fn place(&self) -> Place<'a> {
        Place::Json(JsonPlace {
            src: self.src,
            path: self.path.clone(),
            span: self.span.clone(),
            keys: self.keys,
            fields: self
                .values
                .iter()
                .map(|v| v.map(|raw| span_of(self.src, raw)))
                .collect(),
        })
    }
}

/// Cloud Hypervisor's `HotplugMethod`: `Acpi` or `VirtioMem`, as its serde names them;
/// `true` for virtio-mem.
struct HotplugMethod(bool);

impl<'de> Deserialize<'de> for HotplugMethod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HotplugMethod;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a hotplug method, `Acpi` or `VirtioMem`")
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<Self::Value, E> {
                match v {
                    "Acpi" => Ok(HotplugMethod(false)),
                    "VirtioMem" => Ok(HotplugMethod(true)),
                    _ => Err(E::unknown_variant(v, &["Acpi", "VirtioMem"])),
                }
            }
        }
        d.deserialize_str(V)
    }
}

/// `memory`, read (Cloud Hypervisor's default memory, 512 MiB, when the section is not there).
fn memory<'a>(vm: &Object<'a>) -> Result<(ChMemory<'a>, Option<Vec<&'a RawValue>>)> {
    let Some(raw) = vm.raw("memory") else {
        let memory = ChMemory {
            place: Place::Json(JsonPlace {
                src: vm.src,
                path: "memory".to_owned(),
                span: vm.span.clone(),
                keys: MemoryObject::KEYS,
                fields: vec![None; MemoryObject::KEYS.len()],
            }),
            file: false,
            size: Some(CH_DEFAULT_MEMORY),
            hotplug: None,
            hotplugged: None,
            virtio_mem: false,
            shared: false,
            hugepages: false,
            hugepage_size: None,
            thp: true,
            prefault: false,
            mergeable: false,
        };
        return Ok((memory, None));
    };
    let o = Object::read::<MemoryObject>(vm.src, raw, "memory".to_owned())?;
    let size = o.required::<Whole64>("size")?.0;
    let zones = o.list("zones", MAX_MEMORY_ZONES, "memory zones")?;
    // Whether the memory is mapped without MAP_NORESERVE: not about the map.
    o.flag("reserve", false)?;
    let memory = ChMemory {
        file: false,
        size: Some(size),
        hotplug: o.option::<Whole64>("hotplug_size")?.map(|w| w.0),
        hotplugged: o.option::<Whole64>("hotplugged_size")?.map(|w| w.0),
        virtio_mem: o
            .get::<HotplugMethod>("hotplug_method")?
            .is_some_and(|m| m.0),
        shared: o.flag("shared", false)?,
        hugepages: o.flag("hugepages", false)?,
        hugepage_size: o.option::<Whole64>("hugepage_size")?.map(|w| w.0),
        thp: o.flag("thp", true)?,
        prefault: o.flag("prefault", false)?,
        mergeable: o.flag("mergeable", false)?,
        place: o.place(),
    };
    Ok((memory, zones))
}

/// A `memory.zones` entry, read.
fn zone<'a>(src: Source<'a>, raw: &'a RawValue, index: usize) -> Result<ChZoneInput<'a>> {
    let o = Object::read::<ZoneObject>(src, raw, format!("memory.zones[{index}]"))?;
    let id = o.required::<String>("id")?;
    let size = o.required::<Whole64>("size")?.0;
    o.flag("reserve", false)?;
    Ok(ChZoneInput {
        id: Some(id),
        file: o.option::<String>("file")?.is_some(),
        size: Some(size),
        shared: o.flag("shared", false)?,
        hugepages: o.flag("hugepages", false)?,
        hugepage_size: o.option::<Whole64>("hugepage_size")?.map(|w| w.0),
        host_node: o
            .option::<Whole32>("host_numa_node")?
            .and_then(|w| u32::try_from(w.0).ok()),
        hotplug: o.option::<Whole64>("hotplug_size")?.map(|w| w.0),
        hotplugged: o.option::<Whole64>("hotplugged_size")?.map(|w| w.0),
        prefault: o.flag("prefault", false)?,
        // In JSON a zone's `mergeable` is its own (`false` when not given).
        mergeable: o.flag("mergeable", false)?,
        place: o.place(),
    })
}

/// A `numa` entry, read.
fn node<'a>(src: Source<'a>, raw: &'a RawValue, index: usize) -> Result<ChNodeInput<'a>> {
    let path = format!("numa[{index}]");
    let o = Object::read::<NumaObject>(src, raw, path.clone())?;
    let id = o.required::<Whole32>("guest_numa_id")?.0;
    let cpus = o.option::<Vec<Whole32>>("cpus")?.map(|c| c.len());
    let distances = o
        .option::<Vec<&'a RawValue>>("distances")?
        .map(|list| {
            list.into_iter()
                .enumerate()
                .map(|(i, raw)| {
                    let d =
                        Object::read::<DistanceObject>(src, raw, format!("{path}.distances[{i}]"))?;
                    let destination = d.get::<Whole32>("destination")?.map_or(0, |w| w.0);
                    let distance = d.get::<Whole8>("distance")?.map_or(0, |w| w.0);
                    Ok((destination, distance))
                })
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    let zones = o.option::<Vec<String>>("memory_zones")?;
    let segments = o
        .option::<Vec<Whole16>>("pci_segments")?
        .map(|list| list.into_iter().map(|w| (w.0, w.0)).collect());
    let device = o.option::<String>("device_id")?;
    Ok(ChNodeInput {
        id: u32::try_from(id).unwrap_or(u32::MAX),
        cpus,
        distances,
        device,
        zones,
        segments,
        place: o.place(),
    })
}

/// What of a `VmConfig`'s `payload` and `cpus` Cloud Hypervisor checks when it boots it, read
/// (types and required fields); [`Boot::check`] checks the values.
struct Boot<'a> {
    payload: Option<(Object<'a>, bool, bool)>,
    cpus: Option<(Object<'a>, u64, u64)>,
    /// `cpus.max_phys_bits`, at most 52.
    phys_bits: Option<i64>,
    vm_span: Range<usize>,
    src: Source<'a>,
}

impl<'a> Boot<'a> {
    fn read(vm: &Object<'a>) -> Result<Self> {
        let payload = match vm.option::<&'a RawValue>("payload")? {
            Some(raw) => {
                let o = Object::read::<PayloadObject>(vm.src, raw, "payload".to_owned())?;
                let firmware = o.option::<String>("firmware")?.is_some();
                let kernel = o.option::<String>("kernel")?.is_some();
                o.option::<String>("cmdline")?;
                o.option::<String>("initramfs")?;
                Some((o, firmware, kernel))
            }
            None => None,
        };
        // `cpus` is no `Option` (`null` refused); left out, one vCPU.
        let mut phys_bits = None;
        let cpus = match vm.raw("cpus") {
            Some(raw) => {
                let o = Object::read::<CpusObject>(vm.src, raw, "cpus".to_owned())?;
                let boot = o.required::<Whole32>("boot_vcpus")?.0;
                let max = o.required::<Whole32>("max_vcpus")?.0;
                if let Some(bits) = o.get::<Whole8>("max_phys_bits")?.map(|w| w.0) {
                    if bits < 32 {
                        return Err(o.place().err(format_args!(
                            "max_phys_bits: {bits} address bits are not modelled (a spec's \
                             guest has 32 to 52)"
                        )));
                    }
                    // More than 52 is the host's bits, which are no more than 52.
                    let most = memvisor_space::plan::MAX_PHYS_BITS;
                    phys_bits =
                        Some(i64::try_from(bits.min(u64::from(most))).unwrap_or(i64::from(most)));
                }
                Some((o, boot, max))
            }
            None => None,
        };
        Ok(Self {
            payload,
            cpus,
            phys_bits,
            vm_span: vm.span.clone(),
            src: vm.src,
        })
    }

    /// What Cloud Hypervisor's `VmConfig::validate` refuses of them, in its order.
    fn check(&self) -> Result<()> {
        let Some((payload, firmware, kernel)) = &self.payload else {
            // At the end of the file's object, as a missing field.
            let end = self.vm_span.end.saturating_sub(1).max(self.vm_span.start);
            return Err(Error::Spec(
                self.src.error(
                    "payload".to_owned(),
                    Some(end..self.vm_span.end),
                    Problem::Invalid(
                        "missing (Cloud Hypervisor boots a VmConfig only with a payload: a kernel \
                     or a firmware)"
                            .to_owned(),
                    ),
                ),
            ));
        };
        let place = payload.place();
        match (firmware, kernel) {
            (true, true) => {
                return Err(place.err(
                    "firmware: given with a kernel: a payload is one or the other (Cloud \
                     Hypervisor refuses both)",
                ));
            }
            (false, false) => {
                return Err(place.err(
                    "neither kernel nor firmware (Cloud Hypervisor has nothing to boot and \
                     refuses it)",
                ));
            }
            _ => {}
        }
        if let Some((cpus, boot, max)) = &self.cpus {
            let place = cpus.place();
            if max < boot {
                return Err(place.err(format_args!(
                    "max_vcpus: {max} is fewer than boot_vcpus ({boot}; Cloud Hypervisor \
                     refuses it)"
                )));
            }
            if *max > CH_MAX_VCPUS {
                return Err(place.err(format_args!(
                    "max_vcpus: {max} vCPUs (Cloud Hypervisor takes at most {CH_MAX_VCPUS})"
                )));
            }
        }
        Ok(())
    }
}

/// `platform`, read and checked: Cloud Hypervisor takes 1 to 96 PCI segments, and an IOMMU
/// segment must be one of them; a spec describes no PCI segment but the first, so more are
/// refused by name. Gives whether `iommu_segments` is given (even empty), which gives the
/// guest a virtio-iommu device, and whether segment 0 is one of them, which puts every device
/// behind it.
fn platform(vm: &Object<'_>) -> Result<(bool, bool)> {
    let Some(raw) = vm.option::<&RawValue>("platform")? else {
        return Ok((false, false));
    };
    let o = Object::read::<PlatformObject>(vm.src, raw, "platform".to_owned())?;
    let segments = o.get::<Whole16>("num_pci_segments")?.map_or(1, |w| w.0);
    let iommu = o.option::<Vec<Whole16>>("iommu_segments")?;
    let place = o.place();
    if segments == 0 || segments > CH_MAX_PCI_SEGMENTS {
        return Err(place.err(format_args!(
            "num_pci_segments: {segments} is not 1 to {CH_MAX_PCI_SEGMENTS} (Cloud Hypervisor \
             refuses it)"
        )));
    }
    if let Some(bad) = iommu.iter().flatten().find(|s| s.0 >= segments) {
        return Err(place.err(format_args!(
            "iommu_segments: there is no PCI segment {} ({segments} PCI segments; Cloud \
             Hypervisor refuses it)",
            bad.0
        )));
    }
    if segments > 1 {
        return Err(place.err(format_args!(
            "num_pci_segments: {segments} PCI segments are not modelled (Cloud Hypervisor gives \
             each segment past the first its own configuration space and 32-bit and 64-bit \
             MMIO windows, which a spec cannot describe); remove it to plan with one segment"
        )));
    }
    let segment0 = iommu.iter().flatten().any(|s| s.0 == 0);
    Ok((iommu.is_some(), segment0))
}

/// The top-level `pci_segments` (`null` for none), read and checked as Cloud Hypervisor's
/// `PciSegmentConfig::validate` checks each entry: its `pci_segment` (default 0) is a segment
/// there is (0 alone: more are refused by the platform) and its aperture weights (default 1)
/// are not 0. A segment's weights share the PCI device areas among the segments, so with one
/// segment they change nothing.
fn pci_segments(vm: &Object<'_>) -> Result<()> {
    for (i, raw) in vm
        .option::<Vec<&RawValue>>("pci_segments")?
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let o = Object::read::<PciSegmentObject>(vm.src, raw, format!("pci_segments[{i}]"))?;
        let segment = o.get::<Whole16>("pci_segment")?.map_or(0, |w| w.0);
        let mmio32 = o
            .get::<Whole32>("mmio32_aperture_weight")?
            .map_or(1, |w| w.0);
        let mmio64 = o
            .get::<Whole32>("mmio64_aperture_weight")?
            .map_or(1, |w| w.0);
        let place = o.place();
        if segment > 0 {
            return Err(place.err(format_args!(
                "pci_segment: there is no PCI segment {segment} (there is one, 0: more, Cloud \
                 Hypervisor's platform num_pci_segments, are not modelled; Cloud Hypervisor \
                 refuses it)"
            )));
        }
        for (key, weight) in [
            ("mmio32_aperture_weight", mmio32),
            ("mmio64_aperture_weight", mmio64),
        ] {
            if weight == 0 {
                return Err(place.err(format_args!(
                    "{key}: 0 gives the segment no share of its PCI device area (Cloud \
                     Hypervisor refuses it)"
                )));
            }
        }
    }
    Ok(())
}

/// The spec of Cloud Hypervisor's JSON `VmConfig` `text` (the file `origin`) on the guest
/// architecture `arch`: its `memory` section (with `zones`) and its `numa` nodes, read with
/// Cloud Hypervisor's field names, types, defaults and required fields (`memory.size`, a
/// zone's `id` and `size`, a node's `guest_numa_id`; `memory` not given is 512 MiB), then
/// checked and converted as the command-line options are ([`super::cloud_hypervisor_spec`],
/// with `default` as the huge page size of `"hugepages": true` without `hugepage_size`, and
/// the device area checked on `arch`'s layout): what Cloud Hypervisor refuses and what a spec
/// cannot express are refused the same way. Sizes are bytes, as JSON numbers;
/// `hotplug_method` is `"Acpi"` or `"VirtioMem"`. What decides whether Cloud Hypervisor boots
/// the configuration at all is checked too: a `payload` with a `kernel` or a `firmware` (not
/// both) is required, `cpus` (when given) needs `boot_vcpus` and `max_vcpus`, no fewer than
/// `boot_vcpus` and at most 8192 (its `max_phys_bits`, 32 or more, is the spec's
/// `phys_bits`, at most 52), and `platform.num_pci_segments` is 1 to 96 (more than one
/// is refused as not modelled) with `iommu_segments` among them. The device sections are
/// read for their ids and their PCI devices: each entry of `net`, `fs`, `generic_vhost_user`
/// (but a block device, `device_type` 2) and `pmem`, and `rtc`, `balloon`, `vsock`,
/// `watchdog: true`, a
/// virtio-iommu (`iommu: true` at the top or in a device, or `platform.iommu_segments`),
/// `rng` (always) and `console` (unless its `mode` is `Off`; `Socket` refused; none given is
/// `Tty`) takes an 8 MiB slot of the 64-bit PCI device area for its BAR, as does a
/// virtio-mem hotplug area's device; `disks` and `pvpanic: true` (32-bit BARs) take none. A
/// `pmem` entry's region of the `size` given (a multiple of 2 MiB above 0) is taken from the
/// top of that area before any BAR, which go below it. The BARs of `devices` (VFIO),
/// `user_devices` and `vdpa` (the host device's type: a block one's BAR is 32-bit), the region
/// of a `pmem` entry without `size` (its file's) and the regions of
/// vhost-user shared memory, are not counted, so with those Cloud Hypervisor's bound is lower
/// than this one; the converted spec then starts with a `# note: ` line that names how many
/// VFIO, vfio-user and vDPA devices and `pmem` entries without `size` are not counted. All of them
/// are PCI devices of segment 0, whose bus holds 31: more are refused. A zone id that a device
/// section uses too (`id` of `disks`, `net`, `rng`, `console`, `rate_limit_groups`, ...) is
/// refused, as Cloud Hypervisor refuses an id given twice, and so is a device id given twice or
/// starting with `__`, and, without zones, a device id `mem0` with a virtio-mem hotplug area, whose
/// device takes that id. Each device's `pci_segment` must be 0 and its `pci_device_id` 1 to 31,
/// given to one device only; `fs`, `generic_vhost_user` and `user_devices` take no `iommu: true`,
/// nor does a `disks` or `net` entry with `vhost_user: true`; with
/// segment 0 in `platform.iommu_segments` every device (the default `rng` and `console` too)
/// needs `iommu: true`; vhost-user devices (`fs`, `generic_vhost_user`, a `disks` or `net`
/// entry with `vhost_user: true`) and vfio-user ones (`user_devices`) need shared memory
/// (`shared` or `hugepages`, of `memory` or of every zone); the `balloon` needs its `size`,
/// smaller than all of the guest's memory (`memory.size`, the zones' sizes and every
/// `hotplugged_size`); the top-level `pci_segments`
/// entries are for segment 0 with aperture weights other than 0. The entries' other fields
/// are not read. Unknown fields and the
/// other sections are not read, as Cloud Hypervisor ignores unknown fields; a field given
/// twice is refused.
///
/// # Errors
/// [`Error::Spec`], with the field path (`memory.zones[1].size`) and its line and column, for
/// text that is not JSON, a field of the wrong type, a required field missing, more than 1024
/// zones or 64 NUMA nodes, every refusal of the command-line import, and the `platform`
/// refusals above and a `console.mode` of `Socket` (before the memory's) and the payload and `cpus`
/// ones (after them, as Cloud Hypervisor lays out memory before it checks those), and memory that
/// leaves Cloud Hypervisor no 8 MiB slot for the BAR of each of its virtio PCI devices in its
/// 64-bit PCI device area (ending above `2^max_phys_bits - n * 8 MiB` with `n` devices; last, as it
/// creates its devices after those checks), a device id given twice, starting with `__` or
/// taken by the virtio-mem device (`mem0` without zones), a
/// zone id a device section uses too, a device's PCI placement or back end Cloud Hypervisor
/// refuses (above), a balloon as large as the guest's memory, and more
/// than 31 PCI devices (after the payload and `cpus` checks), a `pci_segments` entry Cloud
/// Hypervisor refuses (with the `platform` ones), and on
/// aarch64 `max_phys_bits` below 34, which leaves a 64-bit PCI device area ending below
/// 8 GiB; [`Error::Import`] for text longer than a spec may be.
///
/// ```
/// use memvisor_cli::spec::Arch;
/// use memvisor_cli::vmm::{DefaultHugePage, cloud_hypervisor_json_spec};
///
/// let host = DefaultHugePage::host();
/// let toml = cloud_hypervisor_json_spec(
///     "vm.json",
///     r#"{"payload": {"kernel": "/vmlinux"},
///         "memory": {"size": 1073741824, "hotplug_size": 4294967296, "shared": true}}"#,
///     host,
///     Arch::X86_64,
/// )?;
/// assert!(toml.contains("size = 1073741824"), "{toml}");
/// assert!(toml.contains("slot_size = 4294967296"), "{toml}");
/// let bad = r#"{"memory": {"size": "1G"}}"#;
/// let e = cloud_hypervisor_json_spec("vm.json", bad, host, Arch::X86_64).unwrap_err();
/// assert!(e.to_string().contains("memory.size"), "{e}");
/// # Ok::<(), memvisor_cli::Error>(())
/// ```
pub fn cloud_hypervisor_json_spec(
    origin: &str,
    text: &str,
    default: DefaultHugePage<'_>,
    arch: Arch,
) -> Result<String> {
    if text.len() > MAX_SPEC_BYTES {
        return Err(spec_error(
            origin,
            format!(
                "the VmConfig is {} bytes long (at most {MAX_SPEC_BYTES}, as a spec)",
                text.len()
            ),
        ));
    }
    let src = Source { origin, text };
    let top: &RawValue = from_json_as(WHAT, src, 0, text, "")?;
    let vm = if arch == Arch::X86_64 {
        Object::read::<VmObject<true>>(src, top, String::new())?
    } else {
        Object::read::<VmObject<false>>(src, top, String::new())?
    };
    unplanned_sections::check(&vm, arch)?;
    let (iommu_segments, iommu_segment0) = platform(&vm)?;
    pci_segments(&vm)?;
    let boot = Boot::read(&vm)?;
    let mut devices = devices(&vm, iommu_segments, iommu_segment0)?;
    let (memory, zone_list) = memory(&vm)?;
    let zones_given = zone_list.is_some();
    let zones = zone_list
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, raw)| zone(src, raw, i))
        .collect::<Result<Vec<_>>>()?;
    let nodes = vm
        .list(
            "numa",
            MAX_GUEST_NODES,
            "NUMA nodes (a spec has at most 64)",
        )?
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, raw)| node(src, raw, i))
        .collect::<Result<Vec<_>>>()?;
    let default_zone = !zones_given && memory.virtio_mem && memory.hotplug.is_some();
    // Cloud Hypervisor's `backed_by_shared_memory`: vhost-user and vfio-user devices need it.
    let shared = memory.shared
        || memory.hugepages
        || (memory.size == Some(0) && zones_given && zones.iter().all(|z| z.shared || z.hugepages));
    let unshared = devices
        .needs_shared
        .take()
        .filter(|_| !shared)
        .map(|(path, span, what)| {
            Error::Spec(src.error(
                path,
                Some(span),
                Problem::Invalid(format!(
                    "{what} needs guest memory Cloud Hypervisor shares: memory.shared or \
                 memory.hugepages (or every zone's shared or hugepages); it refuses it \
                 without"
                )),
            ))
        });
    let balloon = balloon_too_large(src, devices.balloon.take(), &memory, &zones);
    let clash = match devices.refused.take().or(unshared).or(balloon) {
        Some(refused) => Some(refused),
        None if default_zone => devices.default_zone.take(),
        None => zone_id_clash(&zones, &devices.ids),
    };
    // A virtio-mem device for each zone with hot-pluggable memory, or for `memory`'s.
    let virtio_mem = if zones_given {
        zones.iter().filter(|z| z.hotplug.is_some()).count() as u64
    } else {
        u64::from(memory.virtio_mem && memory.hotplug.is_some())
    };
    let bus = devices.check_bus(virtio_mem, &vm.place());
    let uncounted = devices.uncounted_note();
    let spec = config_spec(
        ChConfig {
            memory,
            zones_given,
            zones,
            nodes,
            phys_bits: boot.phys_bits,
            arch,
            devices: devices.pci,
        },
        default,
        // Cloud Hypervisor checks the rest of the configuration once the memory is laid out.
        || {
            boot.check()?;
            clash.map_or(Ok(()), Err)?;
            // Cloud Hypervisor creates its devices once the configuration is checked.
            bus
        },
    )?;
    Ok(match uncounted {
        Some(note) => format!("{}{note}\n{spec}", super::NOTE),
        None => spec,
    })
}

#[cfg(test)]
mod tests {
    use super::super::cloud_hypervisor_spec;
    use super::*;
    use crate::spec::{BackingKind, PageKind, VmSpec};

    /// `json` with a payload Cloud Hypervisor boots (a kernel) when it has none, put first so
    /// that the positions of what follows do not matter.
    /// The huge page size tests take as the host's default, whatever the host.
    const PINNED: DefaultHugePage<'static> = DefaultHugePage::Pinned(2 << 20);

    fn bootable(json: &str) -> String {
        if json.contains("\"payload\"") {
            return json.to_owned();
        }
        let rest = json.trim_start().strip_prefix('{').unwrap_or(json);
        let comma = if rest.trim_start().starts_with('}') {
            ""
        } else {
            ", "
        };
        format!(r#"{{"payload": {{"kernel": "/k"}}{comma}{rest}"#)
    }

    fn spec_of(json: &str) -> VmSpec {
        let json = &bootable(json);
        let toml = cloud_hypervisor_json_spec("vm.json", json, PINNED, Arch::X86_64)
            .unwrap_or_else(|e| panic!("{json}: {e}"));
        crate::spec::parse(Source {
            origin: "ch.toml",
            text: &toml,
        })
        .unwrap_or_else(|e| panic!("{json}: {e}\n{toml}"))
    }

    /// The refusal of `json`: its field path, line and column, and message.
    fn refusal(json: &str) -> (String, Option<(usize, usize)>, String) {
        match cloud_hypervisor_json_spec("vm.json", json, PINNED, Arch::X86_64) {
            Ok(toml) => panic!("{json}: taken as\n{toml}"),
            Err(Error::Spec(e)) => (e.field.clone(), e.position, e.problem.to_string()),
            Err(e) => panic!("{json}: not a spec error: {e}"),
        }
    }

    fn nodes(spec: &VmSpec) -> Vec<(u64, Vec<u32>)> {
        spec.nodes
            .iter()
            .map(|n| (n.size, n.host_nodes.clone()))
            .collect()
    }

    #[test]
    fn cloud_hypervisor_json_memory_fields_map_to_spec() {
        // No memory section: Cloud Hypervisor's default, 512 MiB.
        let spec = spec_of(
            r#"{"cpus": {"boot_vcpus": 2, "max_vcpus": 2}, "payload": {"kernel": "/k"},
                "disks": [{"path": "/d"}]}"#,
        );
        assert_eq!(spec.ram(), 512 << 20);
        assert_eq!(spec.memory.pages, PageKind::Transparent);
        let spec = spec_of(r#"{"memory": {"size": 1073741824}}"#);
        assert_eq!(spec.ram(), 1 << 30);
        assert_eq!(spec.memory.backing, BackingKind::Anonymous);
        assert!(spec.hotplug.is_none());
        let spec = spec_of(r#"{"memory": {"size": 1073741824, "shared": true, "prefault": true}}"#);
        assert_eq!(spec.memory.backing, BackingKind::Memfd);
        assert_eq!(spec.memory.prefault_threads, 1);
        let spec = spec_of(r#"{"memory": {"size": 1073741824, "thp": false}}"#);
        assert_eq!(spec.memory.pages, PageKind::Base);
        let spec = spec_of(
            r#"{"memory": {"size": 1073741824, "hugepages": true, "hugepage_size": 1073741824}}"#,
        );
        assert_eq!(spec.memory.pages, PageKind::Huge1G);
        assert_eq!(spec.memory.backing, BackingKind::Memfd);
        let spec = spec_of(
            r#"{"memory": {"size": 1073741824, "hotplug_method": "VirtioMem",
                "hotplug_size": 2147483648, "hotplugged_size": 1073741824,
                "mergeable": true, "reserve": true, "hugepage_size": null, "zones": null}}"#,
        );
        assert_eq!(spec.hotplug.as_ref().map(|h| h.slot_size), Some(2 << 30));
        // `null` is none for Cloud Hypervisor's `Option` fields.
        let spec =
            spec_of(r#"{"memory": {"size": 1073741824, "hotplug_size": null}, "numa": null}"#);
        assert!(spec.hotplug.is_none());
    }

    #[test]
    fn cloud_hypervisor_json_zones_and_numa_map_to_spec() {
        let spec = spec_of(
            r#"{"memory": {"size": 0, "hotplug_method": "VirtioMem", "zones": [
                {"id": "a", "size": 1073741824, "host_numa_node": 1, "file": null},
                {"id": "b", "size": 1073741824, "host_numa_node": 0, "hotplug_size": 4294967296,
                 "hotplugged_size": 2097152, "reserve": false, "mergeable": false}]},
               "numa": [
                {"guest_numa_id": 0, "cpus": [0, 1], "memory_zones": ["a"], "pci_segments": [0],
                 "distances": [{"destination": 1, "distance": 20}, {"destination": 0}]},
                {"guest_numa_id": 1, "cpus": [2], "memory_zones": ["b"],
                 "distances": [{"destination": 0, "distance": 20}], "device_id": null}]}"#,
        );
        assert_eq!(nodes(&spec), [(1 << 30, vec![1]), (1 << 30, vec![0])]);
        let hotplug = spec.hotplug.as_ref().unwrap();
        assert_eq!((hotplug.slot_size, hotplug.node), (4 << 30, 1));
        // Zones without nodes are one guest node.
        let spec = spec_of(
            r#"{"memory": {"size": 0, "zones": [{"id": "a", "size": 1073741824, "shared": true},
                {"id": "b", "size": 536870912, "shared": true}]}}"#,
        );
        assert_eq!(nodes(&spec), [(1536 << 20, vec![])]);
        assert_eq!(spec.memory.backing, BackingKind::Memfd);
    }

    /// The command line and the JSON of the same settings give the same spec.
    #[test]
    fn cloud_hypervisor_command_line_and_json_give_the_same_spec() {
        for (line, json) in [
            ("size=1G", r#"{"memory": {"size": 1073741824}}"#),
            ("", r#"{}"#),
            (
                "size=2G,shared=on,thp=off,prefault=on,hotplug_size=1G",
                r#"{"memory": {"size": 2147483648, "shared": true, "thp": false,
                    "prefault": true, "hotplug_size": 1073741824}}"#,
            ),
            (
                "size=1G,hugepages=on,hugepage_size=2M,hotplug_method=virtio-mem,\
                 hotplug_size=2G,hotplugged_size=512M,mergeable=on",
                r#"{"memory": {"size": 1073741824, "hugepages": true, "hugepage_size": 2097152,
                    "hotplug_method": "VirtioMem", "hotplug_size": 2147483648,
                    "hotplugged_size": 536870912, "mergeable": true}}"#,
            ),
            (
                "--memory size=0,hotplug_method=virtio-mem --memory-zone \
                 id=a,size=1G,host_numa_node=1 id=b,size=2G,hotplug_size=1G,host_numa_node=0 \
                 --numa guest_numa_id=0,memory_zones=a,cpus=[0-1],distances=[1@20] \
                 guest_numa_id=1,memory_zones=b,cpus=2",
                r#"{"memory": {"size": 0, "hotplug_method": "VirtioMem", "zones": [
                    {"id": "a", "size": 1073741824, "host_numa_node": 1},
                    {"id": "b", "size": 2147483648, "hotplug_size": 1073741824,
                     "host_numa_node": 0}]},
                   "numa": [{"guest_numa_id": 0, "memory_zones": ["a"], "cpus": [0, 1],
                             "distances": [{"destination": 1, "distance": 20}]},
                            {"guest_numa_id": 1, "memory_zones": ["b"], "cpus": [2]}]}"#,
            ),
        ] {
            let from_line = cloud_hypervisor_spec(line, PINNED, Arch::X86_64)
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            let json = &bootable(json);
            let from_json = cloud_hypervisor_json_spec("vm.json", json, PINNED, Arch::X86_64)
                .unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(from_line, from_json, "{line}");
            // JSON text given where the options go is read as JSON.
            assert_eq!(
                cloud_hypervisor_spec(&format!("\n {json}"), PINNED, Arch::X86_64).unwrap(),
                from_json
            );
        }
        // The same refusal, from one check.
        let line = cloud_hypervisor_spec("size=1G,hotplug_size=0", PINNED, Arch::X86_64)
            .unwrap_err()
            .to_string();
        let (field, _, json) = refusal(r#"{"memory": {"size": 1073741824, "hotplug_size": 0}}"#);
        assert_eq!(field, "memory.hotplug_size");
        assert!(line.contains(&json), "{line} / {json}");
    }

    #[test]
    fn cloud_hypervisor_json_mistakes_name_field_and_position() {
        for (json, field, at, expected) in [
            // Not JSON, or not an object.
            ("{", "", (1, 1), "not JSON"),
            (r#"{"memory": {"size": 1}} x"#, "", (1, 25), "not JSON"),
            // A byte order mark, which the excerpt does not show, is named.
            (
                "\u{feff}{\"memory\": {\"size\": 1}}",
                "",
                (1, 1),
                "not JSON: the text starts with a byte order mark (U+FEFF)",
            ),
            (
                r#"{"memory": [1073741824]}"#,
                "memory",
                (1, 12),
                "expected a memory object",
            ),
            (
                r#"{"memory": null}"#,
                "memory",
                (1, 12),
                "expected a memory object",
            ),
            // Types, as Cloud Hypervisor's serde reads them.
            (
                r#"{"memory": {"size": "1G"}}"#,
                "memory.size",
                (1, 21),
                "expected a whole number",
            ),
            (
                r#"{"memory": {"size": -1}}"#,
                "memory.size",
                (1, 21),
                "expected a whole number",
            ),
            (
                r#"{"memory": {"size": 1.5}}"#,
                "memory.size",
                (1, 21),
                "expected a whole number",
            ),
            (
                r#"{"memory": {"size": 18446744073709551616}}"#,
                "memory.size",
                (1, 21),
                "",
            ),
            (
                r#"{"memory": {"size": 1073741824, "shared": null}}"#,
                "memory.shared",
                (1, 43),
                "expected a boolean",
            ),
            (
                r#"{"memory": {"size": 1073741824, "thp": "on"}}"#,
                "memory.thp",
                (1, 40),
                "expected a boolean",
            ),
            (
                r#"{"memory": {"size": 1073741824, "hotplug_method": "virtio-mem"}}"#,
                "memory.hotplug_method",
                (1, 51),
                "unknown variant `virtio-mem`, expected `Acpi` or `VirtioMem`",
            ),
            (
                r#"{"memory": {"size": 1073741824, "reserve": 1}}"#,
                "memory.reserve",
                (1, 44),
                "expected a boolean",
            ),
            (
                r#"{"memory": {}}"#,
                "memory",
                (1, 13),
                "missing field `size`",
            ),
            (
                r#"{"memory": {"size": 1, "size": 2}}"#,
                "memory",
                (1, 24),
                "duplicate field `size`",
            ),
            (
                r#"{"memory": {"size": 0}, "memory": {"size": 0}}"#,
                "",
                (1, 25),
                "duplicate field `memory`",
            ),
            (
                r#"{"memory": {"size": 0, "zones": {}}}"#,
                "memory.zones",
                (1, 33),
                "expected a sequence",
            ),
            // Zones.
            (
                r#"{"memory": {"size": 0, "zones": [{"size": 1073741824}]}}"#,
                "memory.zones[0]",
                (1, 53),
                "missing field `id`",
            ),
            (
                r#"{"memory": {"size": 0, "zones": [{"id": "a"}]}}"#,
                "memory.zones[0]",
                (1, 44),
                "missing field `size`",
            ),
            (
                r#"{"memory": {"size": 0, "zones": [{"id": 7, "size": 0}]}}"#,
                "memory.zones[0].id",
                (1, 41),
                "expected a string",
            ),
            (
                r#"{"memory": {"size": 0, "zones": [{"id": "a", "size": 1073741824, "host_numa_node": 4294967296}]}}"#,
                "memory.zones[0].host_numa_node",
                (1, 84),
                "a whole number from 0 to 4294967295",
            ),
            (
                r#"{"memory": {"size": 0, "zones": [{"id": "a", "size": 1073741824, "file": 1}]}}"#,
                "memory.zones[0].file",
                (1, 74),
                "expected a string",
            ),
            // NUMA nodes.
            (
                r#"{"numa": [{"cpus": [0]}]}"#,
                "numa[0]",
                (1, 23),
                "missing field `guest_numa_id`",
            ),
            (
                r#"{"numa": [{"guest_numa_id": 0, "cpus": [-1]}]}"#,
                "numa[0].cpus[0]",
                (1, 41),
                "a whole number from 0 to 4294967295",
            ),
            (
                r#"{"numa": [{"guest_numa_id": 0, "pci_segments": [65536]}]}"#,
                "numa[0].pci_segments[0]",
                (1, 49),
                "a whole number from 0 to 65535",
            ),
            (
                r#"{"numa": [{"guest_numa_id": 0, "distances": [{"destination": 0, "distance": 256}]}]}"#,
                "numa[0].distances[0].distance",
                (1, 77),
                "a whole number from 0 to 255",
            ),
            (
                r#"{"numa": [{"guest_numa_id": 0, "distances": [[0, 10]]}]}"#,
                "numa[0].distances[0]",
                (1, 46),
                "expected a NUMA distance object",
            ),
            (
                r#"{"numa": [{"guest_numa_id": 0, "memory_zones": "a"}]}"#,
                "numa[0].memory_zones",
                (1, 48),
                "expected a sequence",
            ),
        ] {
            let (f, position, message) = refusal(json);
            assert_eq!(f, field, "{json}: {message}");
            assert_eq!(position, Some(at), "{json}: {message}");
            assert!(message.contains(expected), "{json}: {message}");
        }
    }

    /// What Cloud Hypervisor refuses and what a spec cannot express, refused by the checks the
    /// command line shares, shown at the field they are about.
    #[test]
    fn cloud_hypervisor_json_refusals_are_the_shared_checks() {
        let zone = |z: &str| format!(r#"{{"memory": {{"size": 0, "zones": [{z}]}}}}"#);
        for (json, field, expected) in [
            (
                r#"{"memory": {"size": 0}}"#.to_owned(),
                "memory.size",
                "0 B without memory zones",
            ),
            (
                r#"{"memory": {"size": 0, "zones": []}}"#.to_owned(),
                "memory.size",
                "0 B without memory zones",
            ),
            (
                r#"{"memory": {"size": 1073741824, "zones": [{"id": "a", "size": 1073741824}]}}"#
                    .to_owned(),
                "memory.size",
                "1 GiB with memory zones",
            ),
            // Cloud Hypervisor refuses a zone list, even an empty one, with a memory size.
            (
                r#"{"memory": {"size": 1073741824, "zones": []}}"#.to_owned(),
                "memory.zones",
                "given with a memory size other than 0",
            ),
            (
                r#"{"memory": {"size": 1073741824, "hugepage_size": 2097152}}"#.to_owned(),
                "memory.hugepage_size",
                "given without hugepages=on",
            ),
            (
                r#"{"memory": {"size": 1073741824, "hugepages": true, "hugepage_size": 3145728}}"#
                    .to_owned(),
                "memory.hugepage_size",
                "not a power of two",
            ),
            (
                r#"{"memory": {"size": 1073741824, "shared": true, "mergeable": true}}"#.to_owned(),
                "memory.mergeable",
                "on with shared on",
            ),
            (
                r#"{"memory": {"size": 1073741824, "hotplug_size": 0}}"#.to_owned(),
                "memory.hotplug_size",
                "0 B is not a hotplug size",
            ),
            (
                r#"{"memory": {"size": 1073741824, "hotplug_size": 1073741824, "hotplugged_size": 1073741824}}"#.to_owned(),
                "memory.hotplugged_size",
                "given with hotplug_method=acpi",
            ),
            (
                r#"{"memory": {"size": 1073741824, "hotplug_method": "VirtioMem", "hotplug_size": 67108864}}"#.to_owned(),
                "memory.hotplug_size",
                "not a multiple of 128 MiB",
            ),
            (
                r#"{"memory": {"size": 9223372036854775808}}"#.to_owned(),
                "memory.size",
                "more than 2^63 - 1",
            ),
            (zone(r#"{"id": "", "size": 1073741824}"#), "memory.zones[0].id", "missing"),
            (zone(r#"{"id": "__a", "size": 1073741824}"#), "memory.zones[0].id", "`__`"),
            (
                zone(r#"{"id": "a", "size": 1073741824, "file": "/dev/shm/m"}"#),
                "memory.zones[0].file",
                "not modelled",
            ),
            (zone(r#"{"id": "a", "size": 0}"#), "memory.zones[0].size", "0 B is not"),
            (
                zone(r#"{"id": "a", "size": 1000}"#),
                "memory.zones[0].size",
                "not a multiple of the 4 KiB page",
            ),
            (
                zone(r#"{"id": "a", "size": 1073741824, "shared": true, "mergeable": true}"#),
                "memory.zones[0].mergeable",
                "on with shared on",
            ),
            (
                zone(r#"{"id": "a", "size": 1073741824, "hotplug_size": 1073741824}"#),
                "memory.zones[0].hotplug_size",
                "needs --memory hotplug_method=virtio-mem",
            ),
            (
                zone(r#"{"id": "a", "size": 1073741824, "host_numa_node": 1024}"#),
                "memory.zones[0].host_numa_node",
                "host node 1024",
            ),
            (
                zone(r#"{"id": "a", "size": 4096}, {"id": "a", "size": 4096}"#),
                "memory.zones[1].id",
                "is the id of memory.zones[0] too",
            ),
            (
                zone(r#"{"id": "a", "size": 4096}, {"id": "b", "size": 4096, "shared": true}"#),
                "memory.zones[1]",
                "its backing (memfd, transparent pages) differs from memory.zones[0]'s",
            ),
            (
                r#"{"memory": {"size": 0, "zones": [{"id": "a", "size": 4096}]},
                    "numa": [{"guest_numa_id": 0}]}"#
                    .to_owned(),
                "numa[0]",
                "neither cpus, memory_zones nor device_id",
            ),
            (
                r#"{"memory": {"size": 0, "zones": [{"id": "a", "size": 4096}]},
                    "numa": [{"guest_numa_id": 0, "cpus": []}]}"#
                    .to_owned(),
                "numa[0].cpus",
                "an empty list",
            ),
            (
                r#"{"memory": {"size": 0, "zones": [{"id": "a", "size": 4096}]},
                    "numa": [{"guest_numa_id": 0, "memory_zones": []}]}"#
                    .to_owned(),
                "numa[0].memory_zones",
                "an empty list",
            ),
            (
                r#"{"memory": {"size": 0, "zones": [{"id": "a", "size": 4096}]},
                    "numa": [{"guest_numa_id": 0, "device_id": ""}]}"#
                    .to_owned(),
                "numa[0].device_id",
                "empty",
            ),
            (
                r#"{"memory": {"size": 0, "zones": [{"id": "a", "size": 4096}]},
                    "numa": [{"guest_numa_id": 0, "memory_zones": ["a"], "device_id": "d"}]}"#
                    .to_owned(),
                "numa[0].device_id",
                "given with cpus or memory_zones",
            ),
            (
                r#"{"memory": {"size": 0, "zones": [{"id": "a", "size": 4096}]},
                    "numa": [{"guest_numa_id": 0, "memory_zones": ["b"]}]}"#
                    .to_owned(),
                "numa[0].memory_zones",
                "unknown memory zone `b`",
            ),
            (
                r#"{"memory": {"size": 0, "zones": [{"id": "a", "size": 4096}]},
                    "numa": [{"guest_numa_id": 0, "memory_zones": ["a"], "pci_segments": [1]}]}"#
                    .to_owned(),
                "numa[0].pci_segments",
                "there is no PCI segment 1",
            ),
            (
                r#"{"memory": {"size": 0, "zones": [{"id": "a", "size": 4096}]},
                    "numa": [{"guest_numa_id": 0, "memory_zones": ["a"],
                              "distances": [{"destination": 3, "distance": 20}]}]}"#
                    .to_owned(),
                "numa[0].distances",
                "unknown destination node 3",
            ),
            (
                r#"{"memory": {"size": 0, "zones": [{"id": "a", "size": 4096}, {"id": "b", "size": 4096}]},
                    "numa": [{"guest_numa_id": 0, "memory_zones": ["a"]}]}"#
                    .to_owned(),
                "memory.zones[1]",
                "in no NUMA node's memory_zones",
            ),
            (
                r#"{"memory": {"size": 0, "zones": [{"id": "a", "size": 4096}]},
                    "numa": [{"guest_numa_id": 1, "memory_zones": ["a"]}]}"#
                    .to_owned(),
                "numa[0].guest_numa_id",
                "the guest NUMA ids are not 0 to 0",
            ),
            (
                r#"{"memory": {"size": 1073741824}, "numa": [{"guest_numa_id": 0, "cpus": [0]}]}"#
                    .to_owned(),
                "numa[0]",
                "a guest NUMA node without memory_zones",
            ),
        ] {
            let (f, position, message) = refusal(&json);
            assert_eq!(f, field, "{json}: {message}");
            assert!(position.is_some(), "{json}: {message}");
            assert!(message.contains(expected), "{json}: {message}");
        }
    }

    #[test]
    fn cloud_hypervisor_json_is_bounded() {
        let zones = vec![r#"{"id": "a", "size": 4096}"#; MAX_MEMORY_ZONES + 1].join(",");
        let (field, _, message) = refusal(&format!(
            r#"{{"memory": {{"size": 0, "zones": [{zones}]}}}}"#
        ));
        assert_eq!(field, "memory.zones");
        assert!(message.contains("more than 1024 memory zones"), "{message}");
        let nodes = vec![r#"{"guest_numa_id": 0}"#; MAX_GUEST_NODES + 1].join(",");
        let (field, _, message) = refusal(&format!(r#"{{"numa": [{nodes}]}}"#));
        assert_eq!(field, "numa");
        assert!(message.contains("more than 64 NUMA nodes"), "{message}");
        let long = format!(r#"{{"x": "{}"}}"#, "a".repeat(MAX_SPEC_BYTES));
        let e = cloud_hypervisor_json_spec("vm.json", &long, PINNED, Arch::X86_64).unwrap_err();
        assert!(e.to_string().contains("at most 1048576"), "{e}");
        // Deep nesting is skipped without recursion in a section that is not read, and
        // refused at its first wrong value in one that is.
        let depth = MAX_SPEC_BYTES / 2 - 48;
        let deep = format!(
            r#"{{"pvmemcontrol": {}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert_eq!(spec_of(&deep).ram(), 512 << 20);
        let deep = format!(
            r#"{{"landlock_rules": {}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let (field, _, message) = refusal(&deep);
        assert_eq!(field, "landlock_rules[0]");
        assert!(
            message.contains("expected a landlock rule object"),
            "{message}"
        );
        // So is a field of a device entry that is not read.
        let deep = format!(
            r#"{{"net": [{{"tap": {}{}}}]}}"#,
            "[".repeat(depth - 8),
            "]".repeat(depth - 8)
        );
        assert_eq!(spec_of(&deep).ram(), 512 << 20);
        let deep = format!(r#"{{"disks": {}{}}}"#, "[".repeat(depth), "]".repeat(depth));
        let (field, _, message) = refusal(&bootable(&deep));
        assert_eq!(field, "disks[0]");
        assert!(message.contains("expected a device object"), "{message}");
        let deep = format!(
            r#"{{"numa": [{{"guest_numa_id": 0, "cpus": {}{}}}]}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let (field, _, message) = refusal(&deep);
        assert_eq!(field, "numa[0].cpus[0]");
        assert!(message.contains("expected a whole number"), "{message}");
    }

    /// Cloud Hypervisor boots a `VmConfig` only with a payload of a kernel or a firmware (not
    /// both): it refuses the rest when the VM is booted, after laying out its memory.
    #[test]
    fn cloud_hypervisor_json_needs_a_bootable_payload() {
        for (json, field, expected) in [
            (r#"{"memory": {"size": 1073741824}}"#, "payload", "missing"),
            (r#"{}"#, "payload", "missing"),
            (r#"{"payload": null}"#, "payload", "missing"),
            (
                r#"{"payload": {}}"#,
                "payload",
                "neither kernel nor firmware",
            ),
            (
                r#"{"payload": {"cmdline": "console=ttyS0", "initramfs": "/i"}}"#,
                "payload",
                "neither kernel nor firmware",
            ),
            (
                r#"{"payload": {"kernel": "/k", "firmware": "/f"}}"#,
                "payload.firmware",
                "both",
            ),
            (
                r#"{"payload": {"kernel": 1}}"#,
                "payload.kernel",
                "invalid type",
            ),
            (
                r#"{"payload": [1]}"#,
                "payload",
                "expected a payload object",
            ),
            (
                r#"{"payload": {"kernel": "/k", "kernel": "/k2"}}"#,
                "payload",
                "duplicate field `kernel`",
            ),
        ] {
            let (f, position, message) = refusal(json);
            assert_eq!(f, field, "{json}: {message}");
            assert!(position.is_some(), "{json}: {message}");
            assert!(message.contains(expected), "{json}: {message}");
            assert!(!message.contains("  "), "{json}: {message}");
        }
        // A mistake of the memory layout is found first, as Cloud Hypervisor lays out the
        // memory before it checks the payload.
        let (f, _, _) = refusal(r#"{"memory": {"size": 1073741824, "hotplug_size": 0}}"#);
        assert_eq!(f, "memory.hotplug_size");
        for json in [
            r#"{"payload": {"firmware": "/f", "cmdline": null}}"#,
            r#"{"payload": {"kernel": "/k", "cmdline": "x", "initramfs": "/i", "firmware": null}}"#,
        ] {
            assert_eq!(spec_of(json).ram(), 512 << 20, "{json}");
        }
    }

    /// `cpus` needs `boot_vcpus` and `max_vcpus` (Cloud Hypervisor's `CpusConfig` has no
    /// default for them), at most 8192 and no fewer than `boot_vcpus`.
    #[test]
    fn cloud_hypervisor_json_cpus_are_checked() {
        for (json, field, expected) in [
            (
                r#"{"payload": {"kernel": "/k"}, "cpus": {"boot_vcpus": 2}}"#,
                "cpus",
                "missing field `max_vcpus`",
            ),
            (
                r#"{"payload": {"kernel": "/k"}, "cpus": {"max_vcpus": 2}}"#,
                "cpus",
                "missing field `boot_vcpus`",
            ),
            (
                r#"{"payload": {"kernel": "/k"}, "cpus": null}"#,
                "cpus",
                "expected a cpus object",
            ),
            (
                r#"{"payload": {"kernel": "/k"}, "cpus": [1, 1]}"#,
                "cpus",
                "expected a cpus object",
            ),
            (
                r#"{"payload": {"kernel": "/k"}, "cpus": {"boot_vcpus": -1, "max_vcpus": 1}}"#,
                "cpus.boot_vcpus",
                "expected a whole number",
            ),
            (
                r#"{"payload": {"kernel": "/k"}, "cpus": {"boot_vcpus": 4, "max_vcpus": 2}}"#,
                "cpus.max_vcpus",
                "fewer than boot_vcpus",
            ),
            (
                r#"{"payload": {"kernel": "/k"}, "cpus": {"boot_vcpus": 1, "max_vcpus": 8193}}"#,
                "cpus.max_vcpus",
                "at most 8192",
            ),
        ] {
            let (f, position, message) = refusal(json);
            assert_eq!(f, field, "{json}: {message}");
            assert!(position.is_some(), "{json}: {message}");
            assert!(message.contains(expected), "{json}: {message}");
            assert!(!message.contains("  "), "{json}: {message}");
        }
        let spec = spec_of(r#"{"cpus": {"boot_vcpus": 2, "max_vcpus": 8192, "nested": false}}"#);
        assert_eq!(spec.ram(), 512 << 20);
    }

    /// `platform.num_pci_segments` is 1 to 96 for Cloud Hypervisor; more than one segment
    /// adds PCI windows a spec cannot describe, so it is refused by name.
    #[test]
    fn cloud_hypervisor_json_pci_segments_are_checked() {
        for (json, field, expected) in [
            (
                r#"{"platform": {"num_pci_segments": 2}}"#,
                "platform.num_pci_segments",
                "not modelled",
            ),
            (
                r#"{"platform": {"num_pci_segments": 0}}"#,
                "platform.num_pci_segments",
                "1 to 96",
            ),
            (
                r#"{"platform": {"num_pci_segments": 97}}"#,
                "platform.num_pci_segments",
                "1 to 96",
            ),
            (
                r#"{"platform": {"num_pci_segments": 65536}}"#,
                "platform.num_pci_segments",
                "expected a whole number",
            ),
            (
                r#"{"platform": {"iommu_segments": [1]}}"#,
                "platform.iommu_segments",
                "PCI segment 1",
            ),
            (
                r#"{"platform": 1}"#,
                "platform",
                "expected a platform object",
            ),
        ] {
            let json = &bootable(json);
            let (f, position, message) = refusal(json);
            assert_eq!(f, field, "{json}: {message}");
            assert!(position.is_some(), "{json}: {message}");
            assert!(message.contains(expected), "{json}: {message}");
            assert!(!message.contains("  "), "{json}: {message}");
        }
        // Two segments are refused before a node's segment is looked at.
        let (f, _, _) = refusal(&bootable(
            r#"{"platform": {"num_pci_segments": 2}, "numa": [{"guest_numa_id": 0,
                "pci_segments": [1]}]}"#,
        ));
        assert_eq!(f, "platform.num_pci_segments");
        for json in [
            r#"{"platform": null}"#,
            r#"{"platform": {}}"#,
            // Segment 0 an IOMMU segment: every device on it behind the IOMMU.
            r#"{"platform": {"num_pci_segments": 1, "iommu_segments": [0]},
                "rng": {"iommu": true}, "console": {"mode": "Tty", "iommu": true}}"#,
        ] {
            assert_eq!(spec_of(json).ram(), 512 << 20, "{json}");
        }
        let (f, _, _) = refusal(&bootable(
            r#"{"platform": {"num_pci_segments": 1, "iommu_segments": [0]}}"#,
        ));
        assert_eq!(f, "platform.iommu_segments");
    }

    /// The sections read for the checks are read with their types' depth, so deep nesting is
    /// refused at its first wrong value, without recursion past it.
    #[test]
    fn cloud_hypervisor_json_checked_sections_are_bounded() {
        let depth = MAX_SPEC_BYTES / 2 - 64;
        for key in ["payload", "cpus", "platform"] {
            let deep = format!(r#"{{"{key}": {}{}}}"#, "[".repeat(depth), "]".repeat(depth));
            let (f, _, message) = refusal(&deep);
            assert_eq!(f, key, "{message}");
            assert!(message.contains("expected a"), "{message}");
            let deep = format!(
                r#"{{"payload": {{"kernel": "/k"}}, "{key}": {{"x": {}{}}}}}"#,
                "[".repeat(depth / 2),
                "]".repeat(depth / 2)
            );
            let _ = cloud_hypervisor_json_spec("vm.json", &deep, PINNED, Arch::X86_64);
        }
    }

    /// Cloud Hypervisor gives a guest at most `cpus.max_phys_bits` address bits (default 46;
    /// fewer where the host has fewer, which `check` reports): the spec's `phys_bits`.
    #[test]
    fn cloud_hypervisor_json_max_phys_bits_is_the_address_limit() {
        for (json, bits) in [
            (r#"{}"#, 46),
            (r#"{"cpus": {"boot_vcpus": 1, "max_vcpus": 1}}"#, 46),
            (
                r#"{"cpus": {"boot_vcpus": 1, "max_vcpus": 1, "max_phys_bits": 40}}"#,
                40,
            ),
            (
                r#"{"cpus": {"boot_vcpus": 1, "max_vcpus": 1, "max_phys_bits": 33}}"#,
                33,
            ),
            // More than 52 is the host's, which has no more than 52.
            (
                r#"{"cpus": {"boot_vcpus": 1, "max_vcpus": 1, "max_phys_bits": 255}}"#,
                52,
            ),
        ] {
            assert_eq!(spec_of(json).phys_bits, bits, "{json}");
        }
        for (json, expected) in [
            (
                r#"{"cpus": {"boot_vcpus": 1, "max_vcpus": 1, "max_phys_bits": 31}}"#,
                "not modelled",
            ),
            (
                r#"{"cpus": {"boot_vcpus": 1, "max_vcpus": 1, "max_phys_bits": 256}}"#,
                "expected a whole number",
            ),
        ] {
            let (f, position, message) = refusal(&bootable(json));
            assert_eq!(f, "cpus.max_phys_bits", "{json}: {message}");
            assert!(position.is_some(), "{json}: {message}");
            assert!(message.contains(expected), "{json}: {message}");
        }
        // Cloud Hypervisor's 64-bit device area starts at 4 GiB at the earliest, and with 32
        // bits its platform device area is below that: it cannot start.
        let (f, _, message) = refusal(&bootable(
            r#"{"cpus": {"boot_vcpus": 1, "max_vcpus": 1, "max_phys_bits": 32}}"#,
        ));
        assert_eq!(f, "memory.size", "{message}");
        assert!(message.contains("device area"), "{message}");
        // A hotplug window past the address bits (from 4 GiB to 12 GiB, of 8 GiB) is refused
        // at its size, as it leaves no device area either.
        let json = r#"{"cpus": {"boot_vcpus": 1, "max_vcpus": 1, "max_phys_bits": 33},
            "memory": {"size": 1073741824, "hotplug_size": 8589934592}}"#;
        let (f, position, message) = refusal(&bootable(json));
        assert_eq!(f, "memory.hotplug_size", "{message}");
        assert!(position.is_some(), "{message}");
        assert!(message.contains("device area"), "{message}");
        // One that ends below the platform device area is planned.
        let json = r#"{"cpus": {"boot_vcpus": 1, "max_vcpus": 1, "max_phys_bits": 33},
            "memory": {"size": 1073741824, "hotplug_size": 3221225472}}"#;
        let toml =
            cloud_hypervisor_json_spec("vm.json", &bootable(json), PINNED, Arch::X86_64).unwrap();
        let src = Source {
            origin: "ch.toml",
            text: &toml,
        };
        let spec = crate::spec::parse(src).unwrap();
        assert!(crate::plan::plan(&spec, src).is_ok(), "{toml}");
    }
}
