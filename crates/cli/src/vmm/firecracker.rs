//! Firecracker's JSON configuration as a memvisor spec: a whole `--config-file` (memory from
//! `machine-config`, the virtio devices, the serial port) or a `machine-config` object alone.
//! What Firecracker checks when it applies a file is checked too, so a file it would refuse
//! is not planned.

use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use toml::{Table, Value};

use crate::error::{Error, Problem, Result};
use crate::spec::{Arch, MAX_DEVICES, MAX_NAME_CHARS, MAX_SPEC_BYTES, Source};

mod cpu_config;
pub(super) mod json_position;
mod output_sections;
use json_position::from_json;

/// A JSON object of Firecracker's configuration, read into a serde-derived struct. The derive
/// also takes a JSON array of the fields' values in order; Firecracker's files hold objects, so
/// anything but an object is refused, naming what was expected ([`FcObject::WHAT`]).
#[derive(Debug)]
struct Object<T>(T);

/// What a [`Object`] holds, as its errors name it.
trait FcObject {
    /// `a machine-config object`.
    const WHAT: &'static str;
}

impl<'de, T: Deserialize<'de> + FcObject> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + FcObject> Visitor<'de> for V<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(T::WHAT)
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<Object<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Object)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// Firecracker's `machine-config` (its `PUT /machine-config` body).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a machine-config object")]
struct FcMachine<'a> {
    mem_size_mib: Whole,
    /// Kept as written, so that a value Firecracker does not know is shown where it is;
    /// `null` too, which Firecracker refuses (its `HugePageConfig` has no `Option`).
    #[serde(default, borrow, deserialize_with = "present_raw")]
    huge_pages: Option<&'a RawValue>,
    /// Not about memory layout: checked as Firecracker checks it and left out; kept as
    /// written, so that a count Firecracker refuses is shown where it is. Required, as
    /// `mem_size_mib` is (`null` is not a count).
    #[serde(borrow)]
    vcpu_count: &'a RawValue,
    /// `false` when left out; `null` is refused, as Firecracker refuses it.
    #[serde(default)]
    smt: bool,
    // Not about memory layout: checked as Firecracker reads it (for the conversion's
    // architecture) and left out.
    #[serde(default)]
    cpu_template: Option<FcCpuTemplate>,
    #[serde(default)]
    #[allow(dead_code)]
    track_dirty_pages: bool,
}

/// A field kept as written when it is there, `null` included (serde takes `null` for `None`
/// when an `Option` is read as one).
fn present_raw<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// A whole number (errors say so rather than naming a Rust integer type).
#[derive(Debug, Clone, Copy)]
struct Whole(u64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Whole;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Whole, E> {
                Ok(Whole(v))
            }
        }
        d.deserialize_u64(V)
    }
}

/// One of Firecracker's static CPU templates (`StaticCpuTemplate`) of either architecture,
/// by name; [`fc_vcpus`] then holds it to the conversion's architecture's templates.
#[derive(Debug)]
struct FcCpuTemplate(&'static str);

/// The static CPU templates of Firecracker built for `arch`, in the order of its enum.
fn fc_cpu_templates(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::X86_64 => &["C3", "T2", "T2S", "None", "T2CL", "T2A"],
        Arch::Aarch64 => &["V1N1", "None"],
    }
}

impl<'de> Deserialize<'de> for FcCpuTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FcCpuTemplate;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a CPU template name")
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<Self::Value, E> {
                let mut known = Arch::ALL.into_iter().flat_map(fc_cpu_templates);
                if let Some(&name) = known.find(|&&t| t == v) {
                    Ok(FcCpuTemplate(name))
                } else {
                    // The architecture is held later; name each template with its own, so
                    // that none the conversion's architecture refuses is offered bare.
                    Err(E::custom(format_args!(
                        "unknown variant `{v}`, expected a static CPU template of Firecracker: \
                         x86_64's `C3`, `T2`, `T2S`, `T2CL`, `T2A`, aarch64's `V1N1`, or `None` \
                         on both"
                    )))
                }
            }
        }
        d.deserialize_str(V)
    }
}

/// A whole number from 0 to `MAX` (errors say so rather than naming a Rust integer type).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct WholeTo<const MAX: u64>(pub(super) u64);

/// Firecracker's `u32` fields.
type Whole32 = WholeTo<{ u32::MAX as u64 }>;

/// Firecracker's `u16` fields.
type Whole16 = WholeTo<{ u16::MAX as u64 }>;

impl<'de, const MAX: u64> Deserialize<'de> for WholeTo<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<const MAX: u64>;
        impl<const MAX: u64> Visitor<'_> for V<MAX> {
            type Value = WholeTo<MAX>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a whole number from 0 to {MAX}")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Self::Value, E> {
                if v <= MAX {
                    Ok(WholeTo(v))
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
                }
            }
        }
        d.deserialize_u64(V::<MAX>)
    }
}

/// The least MTU Firecracker's network device takes (`Net::new` refuses a smaller `mtu`).
const FC_MIN_MTU: u64 = 68;

/// A network interface's `mtu`: Firecracker's `u16`, from [`FC_MIN_MTU`] up (it refuses a
/// smaller one when it builds the interface).
#[derive(Debug)]
struct FcMtu;

impl<'de> Deserialize<'de> for FcMtu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FcMtu;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(
                    f,
                    "a whole number from {FC_MIN_MTU} to 65535 (Firecracker refuses a smaller MTU)"
                )
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<FcMtu, E> {
                if (FC_MIN_MTU..=u64::from(u16::MAX)).contains(&v) {
                    Ok(FcMtu)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
                }
            }
        }
        d.deserialize_u64(V)
    }
}

/// The bytes of a tap device's name with its terminating NUL, at most (`IFNAMSIZ`, Firecracker's
/// `IFACE_NAME_MAX_LEN`).
const FC_TAP_NAME_MAX_LEN: usize = 16;

/// A network interface's `host_dev_name`: a string of fewer than [`FC_TAP_NAME_MAX_LEN`]
/// bytes, as Firecracker refuses a longer one (`InvalidIfname`) whatever the host has.
#[derive(Debug)]
struct FcTapName;

impl<'de> Deserialize<'de> for FcTapName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FcTapName;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<FcTapName, E> {
                if v.len() < FC_TAP_NAME_MAX_LEN {
                    Ok(FcTapName)
                } else {
                    Err(E::custom(format!(
                        "a tap device name of {} bytes: Firecracker takes at most {} (a name \
                         and its NUL in {FC_TAP_NAME_MAX_LEN} bytes) and refuses a longer one",
                        v.len(),
                        FC_TAP_NAME_MAX_LEN - 1
                    )))
                }
            }
        }
        d.deserialize_str(V)
    }
}

/// A path Firecracker opens on the host when it applies the file (a drive's `path_on_host`,
/// `kernel_image_path`, `initrd_path`): a string that is not empty and holds no NUL, as the
/// system refuses both on every host (an empty path names nothing; a NUL cannot be in a C
/// string).
#[derive(Debug)]
struct FcHostPath;

impl<'de> Deserialize<'de> for FcHostPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        fc_path(d, |path| {
            fc_path_not_empty(path)?;
            fc_path_without_nul(path)
        })
        .map(|()| FcHostPath)
    }
}

/// A vhost-user drive's `socket`, which Firecracker connects to (`UnixStream::connect`) when it
/// applies the file: a string that is not empty (Linux refuses to connect to an address without
/// a path), holds no NUL and fits a Unix socket's address ([`fc_socket_path_fits`]).
#[derive(Debug)]
struct FcConnectPath;

impl<'de> Deserialize<'de> for FcConnectPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        fc_path(d, |path| {
            fc_path_not_empty(path)?;
            fc_path_without_nul(path)?;
            fc_socket_path_fits(path)
        })
        .map(|()| FcConnectPath)
    }
}

/// The vsock's `uds_path`, which Firecracker binds a Unix socket to (`UnixListener::bind`): a
/// string without a NUL that fits a Unix socket's address ([`fc_socket_path_fits`]). An empty
/// one binds too: Rust gives the kernel an address without a path, which Linux binds to an
/// abstract name of its choosing.
#[derive(Debug)]
struct FcBindPath;

impl<'de> Deserialize<'de> for FcBindPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        fc_path(d, |path| {
            fc_path_without_nul(path)?;
            fc_socket_path_fits(path)
        })
        .map(|()| FcBindPath)
    }
}

/// Reads a string, a path of the host, and holds it to `check`, whose refusal is the error.
fn fc_path<'de, D: Deserializer<'de>>(
    d: D,
    check: fn(&str) -> std::result::Result<(), String>,
) -> std::result::Result<(), D::Error> {
    struct V(fn(&str) -> std::result::Result<(), String>);
    impl Visitor<'_> for V {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<(), E> {
            (self.0)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(V(check))
}

/// Refuses an empty path, which names no file or socket.
fn fc_path_not_empty(path: &str) -> std::result::Result<(), String> {
    if path.is_empty() {
        return Err(
            "an empty path, which names no file: Firecracker fails to open it on every \
                    host"
                .to_owned(),
        );
    }
    Ok(())
}

/// Refuses a path with a NUL, which the system takes in no path.
fn fc_path_without_nul(path: &str) -> std::result::Result<(), String> {
    match path.find('\0') {
        Some(at) => Err(format!(
            "a path with a NUL (at byte {at}), which the system takes in no path: Firecracker \
             fails to open it on every host"
        )),
        None => Ok(()),
    }
}

/// The longest path of a Unix socket: `sun_path` holds 108 bytes with the NUL after the path,
/// and Rust's `UnixListener::bind` and `UnixStream::connect` refuse a longer path themselves,
/// on every Linux host.
const FC_SOCKET_PATH_MAX: usize = 107;

/// Refuses a socket's path longer than [`FC_SOCKET_PATH_MAX`].
fn fc_socket_path_fits(path: &str) -> std::result::Result<(), String> {
    if path.len() > FC_SOCKET_PATH_MAX {
        return Err(format!(
            "a socket path of {} bytes, where a Unix socket's address holds {} bytes with its \
             NUL ({FC_SOCKET_PATH_MAX} of path): Firecracker fails to bind or connect it on \
             every host",
            path.len(),
            FC_SOCKET_PATH_MAX + 1
        ));
    }
    Ok(())
}

/// One of the names of a Firecracker enum (`CacheType`, `FileEngineType`), as serde's derive
/// reads it: a string that is one of `names`.
fn fc_variant<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
    names: &'static [&'static str],
) -> std::result::Result<(), D::Error> {
    struct V {
        what: &'static str,
        names: &'static [&'static str],
    }
    impl Visitor<'_> for V {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.what)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<(), E> {
            if self.names.contains(&v) {
                Ok(())
            } else {
                Err(E::unknown_variant(v, self.names))
            }
        }
    }
    d.deserialize_str(V { what, names })
}

/// A drive's `cache_type` (Firecracker's `CacheType`; `null` is not one).
#[derive(Debug)]
struct FcCacheType;

impl<'de> Deserialize<'de> for FcCacheType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        fc_variant(d, "a cache type name", &["Unsafe", "Writeback"]).map(|()| FcCacheType)
    }
}

/// A drive's `io_engine` (Firecracker's `FileEngineType`).
#[derive(Debug)]
struct FcIoEngine;

impl<'de> Deserialize<'de> for FcIoEngine {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        fc_variant(d, "an I/O engine name", &["Async", "Sync"]).map(|()| FcIoEngine)
    }
}

/// Firecracker's `RateLimiterConfig` (a drive's `rate_limiter`, an interface's
/// `rx_rate_limiter` and `tx_rate_limiter`, the entropy device's `rate_limiter`), checked as
/// Firecracker reads it; it does not change the memory map.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a rate limiter object")]
struct FcRateLimiter {
    #[serde(default)]
    #[allow(dead_code)]
    bandwidth: Option<Object<FcTokenBucket>>,
    #[serde(default)]
    #[allow(dead_code)]
    ops: Option<Object<FcTokenBucket>>,
}

impl FcObject for FcRateLimiter {
    const WHAT: &'static str = "a rate limiter object";
}

/// Firecracker's `TokenBucketConfig`, which takes unknown fields.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a token bucket object")]
struct FcTokenBucket {
    #[allow(dead_code)]
    size: Whole,
    #[serde(default)]
    #[allow(dead_code)]
    one_time_burst: Option<Whole>,
    #[allow(dead_code)]
    refill_time: Whole,
}

impl FcObject for FcTokenBucket {
    const WHAT: &'static str = "a token bucket object";
}

impl FcObject for FcMachine<'_> {
    const WHAT: &'static str = "a machine-config object";
}

/// A device of Firecracker's configuration file; only its id matters here (`drive_id`,
/// `iface_id` or `vsock_id`, errors naming the key as written), and for a drive whether it is
/// the root drive (`is_root_device`, kept as written so that a mistake in it is shown where it
/// is).
#[derive(Debug)]
struct FcId<'a> {
    id: Option<String>,
    root: Option<&'a RawValue>,
    /// A drive's `socket` is set (not null): a vhost-user drive.
    vhost_user: bool,
    /// A network interface's `guest_mac`, read later where its position is known.
    guest_mac: Option<&'a RawValue>,
    /// A drive's `partuuid` has `console=` in it (on the root drive it is put on the kernel
    /// command line, where Firecracker on aarch64 looks for `console=`).
    partuuid_console: bool,
    /// The whole object, as written in the file (for a drive, whose kind is checked later,
    /// where its position is known).
    object: Option<&'a RawValue>,
}

/// The kinds of Firecracker's devices that have ids, as its structs read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FcKind {
    /// `BlockDeviceConfig`.
    Drive,
    /// `NetworkInterfaceConfig`.
    Net,
    /// `VsockDeviceConfig`.
    Vsock,
}

impl FcKind {
    /// The key of the id.
    fn id_key(self) -> &'static str {
        match self {
            Self::Drive => "drive_id",
            Self::Net => "iface_id",
            Self::Vsock => "vsock_id",
        }
    }

    /// Every field Firecracker reads; it refuses any other.
    fn fields(self) -> &'static [&'static str] {
        match self {
            Self::Drive => &[
                "drive_id",
                "partuuid",
                "is_root_device",
                "cache_type",
                "is_read_only",
                "path_on_host",
                "rate_limiter",
                "io_engine",
                "socket",
            ],
            Self::Net => &[
                "iface_id",
                "host_dev_name",
                "guest_mac",
                "mtu",
                "rx_rate_limiter",
                "tx_rate_limiter",
            ],
            Self::Vsock => &["vsock_id", "guest_cid", "uds_path"],
        }
    }

    /// The fields Firecracker requires besides the id (a drive's and an interface's id is
    /// required too; a vsock's is not).
    fn required(self) -> &'static [&'static str] {
        match self {
            Self::Drive => &["is_root_device"],
            Self::Net => &["host_dev_name"],
            Self::Vsock => &["guest_cid", "uds_path"],
        }
    }
}

/// Reads a device's id (and `is_root_device` and whether `socket` is set for a drive, the
/// `guest_mac` of an interface) from its object, checking the other fields Firecracker
/// requires and refusing the ones it does not know.
struct FcIdVisitor {
    kind: FcKind,
}

impl<'de> Visitor<'de> for FcIdVisitor {
    type Value = FcId<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.kind {
            FcKind::Vsock => "a vsock object",
            FcKind::Drive | FcKind::Net => "a Firecracker device object",
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<FcId<'de>, A::Error> {
        use serde::de::Error as _;
        let kind = self.kind;
        let mut id: Option<Option<String>> = None;
        let mut root = None;
        let mut socket: Option<Option<FcConnectPath>> = None;
        let mut guest_mac = None;
        let mut partuuid_console = false;
        let mut seen: Vec<&'static str> = Vec::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let Some(&field) = kind.fields().iter().find(|f| **f == key) else {
                return Err(A::Error::unknown_field(&key, kind.fields()));
            };
            if seen.contains(&field) {
                return Err(A::Error::duplicate_field(field));
            }
            seen.push(field);
            match field {
                "is_root_device" => root = Some(map.next_value::<&'de RawValue>()?),
                "socket" => socket = Some(map.next_value::<Option<FcConnectPath>>()?),
                "guest_mac" => guest_mac = Some(map.next_value::<&'de RawValue>()?),
                "host_dev_name" => {
                    map.next_value::<FcTapName>()?;
                }
                "uds_path" => {
                    map.next_value::<FcBindPath>()?;
                }
                "guest_cid" => {
                    map.next_value::<Whole32>()?;
                }
                // The other fields do not change the memory map: their types are checked as
                // Firecracker's structs read them.
                "partuuid" => {
                    partuuid_console = map
                        .next_value::<Option<String>>()?
                        .is_some_and(|p| p.contains(FC_CONSOLE_ARG));
                }
                "path_on_host" => {
                    map.next_value::<Option<FcHostPath>>()?;
                }
                "is_read_only" => {
                    map.next_value::<Option<bool>>()?;
                }
                "cache_type" => {
                    map.next_value::<FcCacheType>()?;
                }
                "io_engine" => {
                    map.next_value::<Option<FcIoEngine>>()?;
                }
                "rate_limiter" | "rx_rate_limiter" | "tx_rate_limiter" => {
                    map.next_value::<Option<Object<FcRateLimiter>>>()?;
                }
                "mtu" => {
                    map.next_value::<Option<FcMtu>>()?;
                }
                _ if field == kind.id_key() => {
                    id = Some(if kind == FcKind::Vsock {
                        map.next_value::<Option<String>>()?
                    } else {
                        Some(map.next_value::<String>()?)
                    });
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if kind != FcKind::Vsock && id.is_none() {
            return Err(A::Error::missing_field(kind.id_key()));
        }
        if let Some(missing) = kind.required().iter().find(|f| !seen.contains(f)) {
            return Err(A::Error::missing_field(missing));
        }
        Ok(FcId {
            id: id.flatten(),
            root,
            vhost_user: socket.flatten().is_some(),
            guest_mac,
            partuuid_console,
            object: None,
        })
    }
}

impl<'de> Deserialize<'de> for FcId<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_map(FcIdVisitor { kind: FcKind::Net })
    }
}

impl FcObject for FcId<'_> {
    const WHAT: &'static str = "a Firecracker device object";
}

/// An entry of Firecracker's `drives`.
#[derive(Debug)]
struct FcDrive<'a>(FcId<'a>);

impl<'de> Deserialize<'de> for FcDrive<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_map(FcIdVisitor {
            kind: FcKind::Drive,
        })
        .map(FcDrive)
    }
}

impl FcObject for FcDrive<'_> {
    const WHAT: &'static str = "a Firecracker device object";
}

/// Firecracker's `vsock` object.
#[derive(Debug)]
struct FcVsock<'a>(FcId<'a>);

impl<'de> Deserialize<'de> for FcVsock<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_map(FcIdVisitor {
            kind: FcKind::Vsock,
        })
        .map(FcVsock)
    }
}

impl FcObject for FcVsock<'_> {
    const WHAT: &'static str = "a vsock object";
}

/// Firecracker's `balloon` object: its target size (`amount_mib`, kept as written so that a
/// size Firecracker refuses is shown where it is); its other fields do not change the memory
/// map.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a balloon object")]
struct FcBalloon<'a> {
    /// Required, as `deflate_on_oom` is.
    #[serde(borrow)]
    amount_mib: &'a RawValue,
    #[allow(dead_code)]
    deflate_on_oom: bool,
    #[serde(default)]
    #[allow(dead_code)]
    stats_polling_interval_s: Whole16,
    #[serde(default)]
    #[allow(dead_code)]
    free_page_hinting: bool,
    #[serde(default)]
    #[allow(dead_code)]
    free_page_reporting: bool,
}

impl FcObject for FcBalloon<'_> {
    const WHAT: &'static str = "a balloon object";
}

/// Firecracker's `mmds-config` (its `MmdsConfig`): the metadata service its network devices
/// answer, which adds no device and no guest memory. Read as Firecracker reads it, then checked
/// as it checks it when it applies the file ([`fc_mmds`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an mmds-config object")]
struct FcMmds<'a> {
    #[serde(default)]
    #[allow(dead_code)]
    version: FcMmdsVersion,
    /// Required: the ids of the interfaces that answer metadata requests.
    #[serde(borrow)]
    network_interfaces: &'a RawValue,
    #[serde(default, borrow)]
    ipv4_address: Option<&'a RawValue>,
    #[serde(default)]
    #[allow(dead_code)]
    imds_compat: bool,
}

impl FcObject for FcMmds<'_> {
    const WHAT: &'static str = "an mmds-config object";
}

/// `mmds-config.version` (Firecracker's `MmdsVersion`; `V1` when left out, `null` is not one).
#[derive(Debug, Default)]
struct FcMmdsVersion;

impl<'de> Deserialize<'de> for FcMmdsVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        fc_variant(d, "an MMDS version name", &["V1", "V2"]).map(|()| FcMmdsVersion)
    }
}

/// Whether Firecracker takes `address` for its metadata service (`is_link_local_valid`): in
/// `169.254.0.0/16`, but not in its first or last `/24`, which RFC 3927 reserves.
fn fc_mmds_address_taken(address: std::net::Ipv4Addr) -> bool {
    matches!(address.octets(), [169, 254, third, _] if third != 0 && third != 255)
}

/// Checks `mmds-config` (`raw`, in the file `src`) as Firecracker checks it when it applies the
/// file (`set_mmds_network_stack_config`), after the network interfaces, whose ids are
/// `interfaces`: an `ipv4_address` it takes ([`fc_mmds_address_taken`]), then
/// `network_interfaces` not empty and naming only ids of `interfaces` (compared as written).
///
/// # Errors
/// [`SpecError`] at the field (the whole list when it is empty, the entry no interface has).
///
/// [`SpecError`]: crate::error::SpecError
fn fc_mmds(src: Source<'_>, raw: &RawValue, interfaces: &[Option<String>]) -> Result<()> {
    let span = |raw: &RawValue| {
        let at = fc_offset(src, raw);
        at..at + raw.get().len()
    };
    let mmds =
        from_json::<Object<FcMmds<'_>>>(src, fc_offset(src, raw), raw.get(), "mmds-config")?.0;
    let list = mmds.network_interfaces;
    let entries: Vec<&RawValue> = from_json(
        src,
        fc_offset(src, list),
        list.get(),
        "mmds-config.network_interfaces",
    )?;
    let mut ids = Vec::with_capacity(entries.len());
    for (i, raw) in entries.iter().enumerate() {
        let field = format!("mmds-config.network_interfaces[{i}]");
        ids.push(from_json::<std::borrow::Cow<'_, str>>(
            src,
            fc_offset(src, raw),
            raw.get(),
            &field,
        )?);
    }
    if let Some(raw) = mmds.ipv4_address {
        let field = "mmds-config.ipv4_address";
        let address: std::net::Ipv4Addr = from_json(src, fc_offset(src, raw), raw.get(), field)?;
        if !fc_mmds_address_taken(address) {
            return Err(src
                .error(
                    field.to_owned(),
                    Some(span(raw)),
                    Problem::Invalid(format!(
                        "{address} is not a link-local address Firecracker takes for its \
                         metadata service (169.254.1.0 to 169.254.254.255)"
                    )),
                )
                .into());
        }
    }
    if ids.is_empty() {
        return Err(src
            .error(
                "mmds-config.network_interfaces".to_owned(),
                Some(span(list)),
                Problem::Invalid(
                    "an empty list: Firecracker refuses a metadata service that no network \
                     interface answers"
                        .to_owned(),
                ),
            )
            .into());
    }
    // One look-up per entry, however long the list (the file allows some 200,000 entries).
    let known: std::collections::HashSet<&str> =
        interfaces.iter().filter_map(Option::as_deref).collect();
    if let Some((i, id)) = ids
        .iter()
        .enumerate()
        .find(|(_, id)| !known.contains(id.as_ref()))
    {
        return Err(src
            .error(
                format!("mmds-config.network_interfaces[{i}]"),
                Some(span(entries[i])),
                Problem::Invalid(format!(
                    "no network interface has the id `{}`: Firecracker refuses a metadata \
                     service on an interface it does not have",
                    crate::render::escape(id)
                )),
            )
            .into());
    }
    Ok(())
}

/// Firecracker's `boot-source` object, checked as Firecracker reads it; its fields do not
/// change the memory map.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a boot-source object")]
struct FcBootSource {
    /// Required.
    #[allow(dead_code)]
    kernel_image_path: FcHostPath,
    #[serde(default)]
    #[allow(dead_code)]
    initrd_path: Option<FcHostPath>,
    #[serde(default)]
    boot_args: Option<FcBootArgs>,
}

/// Firecracker's kernel command line, NUL included, at most (`CMDLINE_MAX_SIZE`, on x86_64 and
/// aarch64 alike).
const FC_CMDLINE_MAX_SIZE: usize = 2048;

/// What Firecracker on aarch64 looks for in the whole kernel command line (its `boot_args` and
/// the root drive's `root=PARTUUID=`) to add a serial port, which takes one of its interrupts.
const FC_CONSOLE_ARG: &str = "console=";

/// What separates the kernel's arguments from the init's on a command line.
const FC_INIT_ARGS_SEPARATOR: &str = " -- ";

/// `boot-source.boot_args`: a string whose kernel command line fits Firecracker's
/// [`FC_CMDLINE_MAX_SIZE`] bytes, measured as Firecracker's linux-loader (`Cmdline::try_from`)
/// measures it: the text split at the first [`FC_INIT_ARGS_SEPARATOR`] with an even number of
/// `"` before it, each part trimmed, the parts joined by the separator again (when the init's
/// part is not empty) and a NUL after. Firecracker refuses a longer one when it applies the
/// file; it takes one with a NUL then, but fails to boot with it (it makes a C string of the
/// command line, `Cmdline::as_cstring`, and stops when that fails), so a NUL is refused too.
#[derive(Debug)]
struct FcBootArgs {
    /// The command line has `console=` (on aarch64 Firecracker then adds a serial port, which
    /// takes one of its interrupts).
    console: bool,
}

/// The bytes of the kernel command line `raw` (`boot_args`) makes, its NUL included.
fn fc_cmdline_size(raw: &str) -> usize {
    // The quotes before each separator are counted once, from the previous one on: one pass
    // over the text, whatever number of separators it has.
    let mut quotes = 0usize;
    let mut counted = 0;
    let split = raw.match_indices(FC_INIT_ARGS_SEPARATOR).find(|&(at, _)| {
        // `counted <= at`: the separators come in order and do not overlap.
        quotes += raw
            .get(counted..at)
            .map_or(0, |part| part.matches('"').count());
        counted = at;
        quotes.is_multiple_of(2)
    });
    let (boot, init) = match split {
        None => (raw, ""),
        Some((at, sep)) => (&raw[..at], &raw[at + sep.len()..]),
    };
    let (boot, init) = (boot.trim(), init.trim());
    let init = if init.is_empty() {
        0
    } else {
        FC_INIT_ARGS_SEPARATOR.len() + init.len()
    };
    boot.len() + 1 + init
}

impl<'de> Deserialize<'de> for FcBootArgs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FcBootArgs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<FcBootArgs, E> {
                // The length first: Firecracker refuses it when it applies the file, and
                // meets a NUL only when it boots.
                let size = fc_cmdline_size(v);
                if size > FC_CMDLINE_MAX_SIZE {
                    return Err(E::custom(format!(
                        "a kernel command line of {size} bytes with its NUL, more than the \
                         {FC_CMDLINE_MAX_SIZE} Firecracker takes (the arguments and the init's \
                         after ` -- `, each trimmed)"
                    )));
                }
                if let Some(at) = v.find('\0') {
                    return Err(E::custom(format!(
                        "a NUL at byte {at}: Firecracker takes the text but cannot make the C \
                         string of the kernel command line when it boots, and stops there"
                    )));
                }
                Ok(FcBootArgs {
                    console: v.contains(FC_CONSOLE_ARG),
                })
            }
        }
        d.deserialize_str(V)
    }
}

impl FcObject for FcBootSource {
    const WHAT: &'static str = "a boot-source object";
}

/// Firecracker's largest `vcpu_count` (`MAX_SUPPORTED_VCPUS`).
const FC_MAX_VCPUS: u64 = 32;

/// Firecracker's `entropy` object; its one field does not change the memory map.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an entropy object")]
struct FcEntropy {
    #[serde(default)]
    #[allow(dead_code)]
    rate_limiter: Option<Object<FcRateLimiter>>,
}

impl FcObject for FcEntropy {
    const WHAT: &'static str = "an entropy object";
}

/// Whether a Firecracker file is a whole configuration (it has one of [`FC_SECTIONS`] as a
/// key, whatever its value) or a `machine-config` object alone; every value is skipped without
/// being kept. Anything but a JSON object is refused.
#[derive(Debug)]
struct FcShape {
    whole: bool,
}

/// The top-level keys of a whole Firecracker configuration (`--config-file`); a
/// `machine-config` object has none of them.
const FC_SECTIONS: [&str; 13] = [
    "boot-source",
    "drives",
    "network-interfaces",
    "machine-config",
    "vsock",
    "balloon",
    "entropy",
    "logger",
    "metrics",
    "mmds-config",
    "cpu-config",
    "pmem",
    "memory-hotplug",
];

/// Where Firecracker 1.16's x86_64 MMIO devices go (`MEM_32BIT_DEVICES_START` in
/// `arch/x86_64/layout.rs`): one page (`MMIO_LEN`) past the start of the 32-bit MMIO window at
/// 3 GiB (`MMIO32_MEM_START`), whose first page is kept for the boot timer
/// (`BOOT_DEVICE_MEM_START`). Each virtio device takes the next page, in the order they are
/// attached.
const FC_X86_DEVICES_START: u64 = 0xc000_0000 + FC_MMIO_LEN;

/// The MMIO window of each of Firecracker's virtio devices (`MMIO_LEN`).
const FC_MMIO_LEN: u64 = 0x1000;

/// The most virtio devices Firecracker 1.16 boots on x86_64: its legacy GSIs are 5 to 23
/// (`GSI_LEGACY_START`, `GSI_LEGACY_END`), handed out in attach order, and after the virtio
/// devices its VMGenID and VMClock devices take one each.
const FC_X86_MAX_VIRTIO_DEVICES: usize = 17;

/// The most virtio devices Firecracker boots on aarch64: its 96 legacy interrupts (SPIs 32 to
/// 127) go to them in attach order, then to its RTC, VMGenID and VMClock devices (and before
/// those to the serial port when the command line has `console=`, one fewer then).
const FC_AARCH64_MAX_VIRTIO_DEVICES: usize = 93;

/// The most memory Firecracker 1.16 lays out on x86_64 without crossing its 64-bit MMIO gap
/// `[256 GiB, 512 GiB)` (`MMIO64_MEM_START`, `MMIO64_MEM_SIZE`): 3 GiB below the 32-bit MMIO
/// window and 252 GiB from 4 GiB. More goes on at 512 GiB, which a spec's single RAM window
/// above 4 GiB cannot hold.
const FC_X86_MAX_MEM_MIB: u64 = 255 << 10;

/// The most memory Firecracker 1.16 gives a guest on aarch64 (`DRAM_MEM_MAX_SIZE`, 1022 GiB):
/// it cuts a larger `mem_size_mib` to this, with only a warning in its log.
const FC_AARCH64_MAX_MEM_MIB: u64 = 1022 << 10;

/// Firecracker's memory size when a configuration has no `machine-config` (or `null`).
const FC_DEFAULT_MEM_SIZE_MIB: u64 = 128;

const FC_CONFIG: &str = "a Firecracker configuration object (a whole configuration or its \
                         machine-config object)";

impl<'de> Deserialize<'de> for FcShape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FcShape;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(FC_CONFIG)
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<FcShape, A::Error> {
                let mut whole = false;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    whole |= FC_SECTIONS.contains(&key.as_ref());
                    map.next_value::<IgnoredAny>()?;
                }
                Ok(FcShape { whole })
            }
        }
        d.deserialize_map(V)
    }
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

/// Firecracker's configuration file (`--config-file`), as far as memory and devices go. The
/// single devices are kept as written (`null` is none) and each read as an object once the
/// devices are counted.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a Firecracker configuration object")]
struct FcConfig<'a> {
    /// None when left out or `null`: Firecracker's defaults.
    #[serde(default, rename = "machine-config", borrow)]
    machine: Option<Object<FcMachine<'a>>>,
    /// Required (an empty list for none), as in Firecracker.
    #[serde(borrow)]
    drives: FcList<'a>,
    #[serde(default, borrow, rename = "network-interfaces")]
    network: FcList<'a>,
    #[serde(default, borrow)]
    vsock: Option<&'a RawValue>,
    #[serde(default, borrow)]
    balloon: Option<&'a RawValue>,
    #[serde(default, borrow)]
    entropy: Option<&'a RawValue>,
    /// Read for its `initrd_path` only. Required (never `None` once read), as in
    /// Firecracker; `None` only for a `machine-config` object alone.
    #[serde(borrow, rename = "boot-source", deserialize_with = "required_raw")]
    boot_source: Option<&'a RawValue>,
    /// Not modelled: refused unless an empty list. May be left out, but is not `null` (read
    /// as a list, which `null` is not), as Firecracker's `Vec` with a serde default.
    #[serde(default, borrow, deserialize_with = "required_raw")]
    pmem: Option<&'a RawValue>,
    /// Checked as Firecracker checks it ([`fc_mmds`]); adds nothing to the plan.
    #[serde(default, borrow, rename = "mmds-config")]
    mmds: Option<&'a RawValue>,
    /// Not modelled: refused unless `null`.
    #[serde(default, borrow, rename = "memory-hotplug")]
    memory_hotplug: Option<&'a RawValue>,
    /// Sections that add nothing to the plan, checked as Firecracker reads them
    /// ([`fc_unplanned_sections`]); `null` is none.
    #[serde(default, borrow)]
    logger: Option<&'a RawValue>,
    #[serde(default, borrow)]
    metrics: Option<&'a RawValue>,
    #[serde(default, borrow, rename = "cpu-config")]
    cpu_config: Option<&'a RawValue>,
}

/// A field that must be given, kept as written (`null` included, refused when it is read).
fn required_raw<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

impl FcObject for FcConfig<'_> {
    const WHAT: &'static str = FC_CONFIG;
}

/// The names of Firecracker's devices, given as `(type, short type, id)` in spec order.
/// Firecracker keeps ids per device type, any string is an id, its own and of any length; a
/// spec's device names are unique, at most [`MAX_NAME_CHARS`] characters, not blank, with no
/// white space at an end nor other than the space inside, no control or format characters,
/// and may not be one the plan gives to another part of the map. So an id is the name of the
/// first device that has it unless it is too long, not a name ([`name_text`] changes it) or
/// the plan reserves it (`serial`, `GIC`, ...). Any other device with an id takes the first of
/// these that is a name neither taken nor reserved: for the first device with an id that is
/// too long or not a name, the id's [`name_text`]; then its short type and that
/// (`blk-serial`, `net-1`); then that with `-2`, `-3`... after it. A name that would be too long
/// keeps the start of the id, as much of it as fits with `~` after it to mark the cut (and the type
/// before and the number after it). A device without an id (a vsock may have none) gets the
/// spec's default name.
fn device_names(devices: &[(&str, &str, Option<&str>)]) -> Vec<Option<String>> {
    use std::collections::{HashMap, HashSet};
    let reserved = |name: &str| crate::spec::names_other_map_part(name);
    let fits = |name: &str| name.chars().count() <= MAX_NAME_CHARS;
    // Written as a name may be: `name_text` changes nothing, and it is not empty.
    let clean = |name: &str| !name.is_empty() && name_text(name).0 == name;
    // `prefix`, the id's text (with the bytes and characters of each of its parts: a
    // character, or the escape written for one) and `suffix`, the text cut after a whole part
    // (and `~` after it) where they would not fit.
    let fit = |prefix: &str, (text, parts): &(String, Vec<(usize, usize)>), suffix: &str| {
        let (p, s) = (prefix.chars().count(), suffix.chars().count());
        // Each part is a character at least: only a text of few parts can fit whole (so no
        // long id is counted again for every candidate).
        if parts.len() <= MAX_NAME_CHARS
            && p + parts.iter().map(|&(_, c)| c).sum::<usize>() + s <= MAX_NAME_CHARS
        {
            return format!("{prefix}{text}{suffix}");
        }
        let mut room = MAX_NAME_CHARS - p - s - 1;
        let mut end = 0;
        for &(bytes, chars) in parts {
            if chars > room {
                break;
            }
            room -= chars;
            end += bytes;
        }
        format!("{prefix}{}~{suffix}", &text[..end])
    };
    // Each id that is kept as a name, and the device that keeps it.
    let mut kept: HashMap<&str, usize> = HashMap::new();
    for (i, (_, _, id)) in devices.iter().enumerate() {
        if let Some(id) = id
            && fits(id)
            && clean(id)
            && !reserved(id)
        {
            kept.entry(id).or_insert(i);
        }
    }
    let mut used: HashSet<String> = kept.keys().map(|&id| id.to_owned()).collect();
    let mut seen: HashSet<&str> = HashSet::new();
    devices
        .iter()
        .enumerate()
        .map(|(i, (_, short, id))| {
            let id = (*id)?;
            let first = seen.insert(id);
            if kept.get(id) == Some(&i) {
                return Some(id.to_owned());
            }
            let text = name_text(id);
            let own = (first && !(fits(id) && clean(id))).then(|| fit("", &text, ""));
            let text = &text;
            let prefix = format!("{short}-");
            // Each candidate differs from the others, so at most one try more than there are
            // devices.
            let name = own
                .into_iter()
                .chain(std::iter::once(fit(&prefix, text, "")))
                .chain((2..).map(|k| fit(&prefix, text, &format!("-{k}"))))
                .find(|n| !n.is_empty() && !used.contains(n) && !reserved(n))
                .unwrap_or_default();
            used.insert(name.clone());
            Some(name)
        })
        .collect()
}

/// `id` as a name may hold it: each control or format character, white space other than the
/// space, and a space at either end written as `\u{..}` (its code point in hex), so that the
/// text shows what the id holds; with the bytes and characters of each part of the text (one
/// character of the id each), so that it can be cut between them.
fn name_text(id: &str) -> (String, Vec<(usize, usize)>) {
    let last = id.chars().count().saturating_sub(1);
    let mut text = String::with_capacity(id.len());
    let mut parts = Vec::new();
    for (i, c) in id.chars().enumerate() {
        if crate::render::needs_escape(c)
            || (c.is_whitespace() && (c != ' ' || i == 0 || i == last))
        {
            let escape = format!("\\u{{{:x}}}", u32::from(c));
            // ASCII: as many characters as bytes.
            parts.push((escape.len(), escape.len()));
            text.push_str(&escape);
        } else {
            parts.push((c.len_utf8(), 1));
            text.push(c);
        }
    }
    (text, parts)
}

/// The entries of the device list `name` of the file `src`, each read as a drive (`drive`) or
/// another device.
fn fc_entries<'a>(
    src: Source<'a>,
    name: &str,
    list: &FcList<'a>,
    drive: bool,
) -> Result<Vec<FcId<'a>>> {
    list.entries
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let field = format!("{name}[{i}]");
            let at = fc_offset(src, raw);
            let read = if drive {
                from_json::<Object<FcDrive<'a>>>(src, at, raw.get(), &field).map(|d| FcId {
                    object: Some(raw),
                    ..d.0.0
                })
            } else {
                from_json::<Object<FcId<'a>>>(src, at, raw.get(), &field).map(|d| d.0)
            };
            read.map_err(Error::from)
        })
        .collect()
}

/// Checks `machine`'s `vcpu_count` and `smt` (at field path prefix `path`) as Firecracker
/// does for `arch`: no `smt` on aarch64 (first, as Firecracker), a count of 1 to
/// [`FC_MAX_VCPUS`], and 1 or an even number with `smt`. The count is required.
///
/// # Errors
/// [`SpecError`] at `smt` on aarch64, at the count for one Firecracker refuses, or for one
/// that is not a whole number.
///
/// [`SpecError`]: crate::error::SpecError
fn fc_vcpus(src: Source<'_>, machine: &FcMachine<'_>, path: &str, arch: Arch) -> Result<()> {
    if arch == Arch::Aarch64 && machine.smt {
        return Err(src
            .error(
                format!("{path}smt"),
                fc_machine_span(src, |m| m.smt),
                Problem::Invalid("SMT on aarch64 (Firecracker refuses it)".to_owned()),
            )
            .into());
    }
    if let Some(FcCpuTemplate(name)) = machine.cpu_template
        && !fc_cpu_templates(arch).contains(&name)
    {
        let known = fc_cpu_templates(arch).join("`, `");
        return Err(src
            .error(
                format!("{path}cpu_template"),
                fc_machine_span(src, |m| m.cpu_template),
                Problem::Invalid(format!(
                    "`{name}` is not a CPU template of Firecracker on {arch} (it knows `{known}` \
                     there, and refuses another)"
                )),
            )
            .into());
    }
    let raw = machine.vcpu_count;
    let field = format!("{path}vcpu_count");
    let at = fc_offset(src, raw);
    let Whole(count) = from_json::<Whole>(src, at, raw.get(), &field)?;
    let problem = if count == 0 || count > FC_MAX_VCPUS {
        format!("{count} vCPUs (Firecracker takes 1 to {FC_MAX_VCPUS})")
    } else if machine.smt && count % 2 == 1 && count > 1 {
        format!("{count} vCPUs with smt (Firecracker takes 1 or an even number with SMT)")
    } else {
        return Ok(());
    };
    Err(src
        .error(
            field,
            Some(at..at + raw.get().len()),
            Problem::Invalid(problem),
        )
        .into())
}

/// Checks what Firecracker checks of the memory (`mem_size_mib`, the size and its field path;
/// `None` for Firecracker's default) and of its balloon: a
/// size of at least 1 MiB, a whole number of 2 MiB when `huge` (the memory is backed by 2 MiB
/// huge pages or transparent ones), and a size in bytes that fits in 64 bits; a balloon target
/// (`amount_mib`, at most 2^32 - 1) no larger than the memory.
///
/// # Errors
/// [`SpecError`] at the value Firecracker refuses.
///
/// [`SpecError`]: crate::error::SpecError
fn fc_memory(
    src: Source<'_>,
    mem: Option<(u64, &str)>,
    huge: bool,
    balloon: Option<&FcBalloon<'_>>,
) -> Result<()> {
    let span = |raw: &RawValue| {
        let at = fc_offset(src, raw);
        Some(at..at + raw.get().len())
    };
    let mem_size_mib = mem.map_or(FC_DEFAULT_MEM_SIZE_MIB, |(mib, _)| mib);
    if let Some((mib, field)) = mem {
        let problem = if mib == 0 {
            Some("0 MiB of guest memory (Firecracker refuses it)".to_owned())
        } else if huge && mib % 2 == 1 {
            Some(format!(
                "{mib} MiB is not a multiple of the 2 MiB huge page (Firecracker refuses it)"
            ))
        } else if mib.checked_mul(1 << 20).is_none() {
            Some(format!("{mib} MiB is more than 2^64 bytes"))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(src
                .error(
                    field.to_owned(),
                    fc_mem_size_span(src),
                    Problem::Invalid(problem),
                )
                .into());
        }
    }
    let Some(balloon) = balloon else {
        return Ok(());
    };
    let amount = balloon.amount_mib;
    let field = "balloon.amount_mib";
    let Whole(mib) = from_json(src, fc_offset(src, amount), amount.get(), field)?;
    let problem = if mib > u64::from(u32::MAX) {
        format!(
            "a balloon target of {mib} MiB is more than Firecracker takes (at most {} MiB)",
            u32::MAX
        )
    } else if mib > mem_size_mib {
        format!(
            "a balloon target of {mib} MiB is more than the {mem_size_mib} MiB of guest memory \
             (Firecracker refuses it)"
        )
    } else {
        return Ok(());
    };
    Err(src
        .error(field.to_owned(), span(amount), Problem::Invalid(problem))
        .into())
}

/// Where the `mem_size_mib` of the file `src` (a whole configuration or a `machine-config`
/// object, read without a mistake already) is written.
fn fc_mem_size_span(src: Source<'_>) -> Option<std::ops::Range<usize>> {
    fc_machine_span(src, |m| m.mem_size_mib)
}

/// Where the `machine-config` field that `field` picks is written in the file `src` (a whole
/// configuration or a `machine-config` object, read without a mistake already).
fn fc_machine_span(
    src: Source<'_>,
    field: impl for<'a> Fn(FcMachineSpans<'a>) -> Option<&'a RawValue>,
) -> Option<std::ops::Range<usize>> {
    #[derive(Deserialize)]
    struct Top<'a> {
        #[serde(default, borrow, rename = "machine-config")]
        machine: Option<&'a RawValue>,
    }
    let top: Top<'_> = serde_json::from_str(src.text).ok()?;
    let machine: FcMachineSpans<'_> =
        serde_json::from_str(top.machine.map_or(src.text, RawValue::get)).ok()?;
    let raw = field(machine)?;
    let at = fc_offset(src, raw);
    Some(at..at + raw.get().len())
}

/// The fields of a `machine-config` object whose place [`fc_machine_span`] finds.
#[derive(Deserialize)]
struct FcMachineSpans<'a> {
    #[serde(default, borrow)]
    mem_size_mib: Option<&'a RawValue>,
    #[serde(default, borrow)]
    smt: Option<&'a RawValue>,
    #[serde(default, borrow)]
    cpu_template: Option<&'a RawValue>,
}

/// Where `raw`, a part of the file `src`, starts in it.
fn fc_offset(src: Source<'_>, raw: &RawValue) -> usize {
    (raw.get().as_ptr() as usize).saturating_sub(src.text.as_ptr() as usize)
}

/// The ids of the drives Firecracker builds from `drives` (the entries in file order), in
/// the order it attaches them. As Firecracker's block device list does: a drive whose id an
/// earlier drive has replaces it in its place (one device); the root drive
/// (`is_root_device: true`) goes first, a new one put in front of the others and an earlier
/// drive made root by a later entry trading places with the first drive; a root drive other
/// than the one that is first is refused, naming both. (Every drive has an id: it is required.)
fn fc_block_devices(src: Source<'_>, drives: Vec<FcId<'_>>) -> Result<Vec<FcBlock>> {
    // Each drive's id, whether it is the root drive, and the entry it comes from.
    let mut list: std::collections::VecDeque<(FcBlock, bool, usize)> =
        std::collections::VecDeque::new();
    let offset = |raw: &RawValue| fc_offset(src, raw);
    for (i, drive) in drives.into_iter().enumerate() {
        let field = format!("drives[{i}].is_root_device");
        let root = match drive.root {
            Some(raw) => from_json::<bool>(src, offset(raw), raw.get(), &field)?,
            None => false,
        };
        let position = drive.id.as_deref().and_then(|id| {
            list.iter()
                .position(|(d, _, _)| d.id.as_deref() == Some(id))
        });
        if root
            && position != Some(0)
            && let Some((first, true, entry)) = list.front()
        {
            let first = fc_shown_id(first.id.as_deref(), "a drive without an id", "");
            return Err(src
                .error(
                    field,
                    drive.root.map(|r| offset(r)..offset(r) + r.get().len()),
                    Problem::Invalid(format!(
                        "a second root drive: {first} (drives[{entry}]) is the root drive \
                         already (Firecracker has at most one)"
                    )),
                )
                .into());
        }
        if let Some(object) = drive.object {
            fc_drive_kind(src, i, object)?;
        }
        let block = FcBlock {
            id: drive.id,
            vhost_user: drive.vhost_user,
            root_console: root && drive.partuuid_console,
        };
        let new = (block, root, i);
        match position {
            None if root => list.push_front(new),
            None => list.push_back(new),
            Some(k) => {
                list[k] = new;
                if root {
                    list.swap(0, k);
                }
            }
        }
    }
    Ok(list.into_iter().map(|(block, _, _)| block).collect())
}

/// The fields of a Firecracker drive of a file, which a vhost-user drive may not have.
const FC_FILE_DRIVE_FIELDS: [&str; 4] =
    ["path_on_host", "is_read_only", "rate_limiter", "io_engine"];

/// Checks that `drives[i]` (its `object` as written in the file `src`) is a drive Firecracker
/// builds: a drive of a file (`path_on_host` set, `socket` not) or a vhost-user drive
/// (`socket` set, none of [`FC_FILE_DRIVE_FIELDS`]); `null` is a field not set. Firecracker
/// refuses any other drive (`Block::new`), after its root drive checks.
///
/// # Errors
/// [`SpecError`] at the end of the object for a drive of neither kind, or at the first field
/// of a drive of a file in a vhost-user drive.
///
/// [`SpecError`]: crate::error::SpecError
fn fc_drive_kind(src: Source<'_>, i: usize, object: &RawValue) -> Result<()> {
    let at = fc_offset(src, object);
    let fields: std::collections::BTreeMap<String, &RawValue> =
        from_json(src, at, object.get(), &format!("drives[{i}]"))?;
    let set = |name: &str| fields.get(name).copied().filter(|raw| raw.get() != "null");
    let socket = set("socket").is_some();
    let file = FC_FILE_DRIVE_FIELDS
        .iter()
        .filter_map(|&name| set(name).map(|raw| (name, raw)))
        .min_by_key(|(_, raw)| fc_offset(src, raw));
    match file {
        Some((name, raw)) if socket => {
            let start = fc_offset(src, raw);
            Err(src
                .error(
                    format!("drives[{i}].{name}"),
                    Some(start..start + raw.get().len()),
                    Problem::Invalid(format!(
                        "a vhost-user drive (its `socket` is set) has no `{name}`, a field of a \
                         drive of a file: Firecracker builds no drive of both kinds"
                    )),
                )
                .into())
        }
        _ if socket || set("path_on_host").is_some() => Ok(()),
        _ => {
            let end = at + object.get().len();
            Err(src
                .error(
                    format!("drives[{i}]"),
                    Some(end - 1..end),
                    Problem::Invalid(
                        "missing field `path_on_host` (a drive of a file) or `socket` (a \
                         vhost-user drive): Firecracker builds no drive without one"
                            .to_owned(),
                    ),
                )
                .into())
        }
    }
}

/// A block device Firecracker builds from its drives.
struct FcBlock {
    /// Its `drive_id`.
    id: Option<String>,
    /// It is vhost-user (its drive has a `socket`): guest memory must be a memfd its back end
    /// can map.
    vhost_user: bool,
    /// It is the root drive and its `partuuid` has `console=` in it: Firecracker puts
    /// `root=PARTUUID=` on the kernel command line, and on aarch64 then adds a serial port.
    root_console: bool,
}

/// The ids of the network interfaces Firecracker builds from `interfaces` (the entries in
/// file order), in the order it attaches them. As Firecracker's list of interfaces does: an
/// interface whose id an earlier one has replaces it, the last interface taking the old one's
/// place and the new one going last (one device). (Every interface has an id: it is required.)
///
/// # Errors
/// [`SpecError`] for a `guest_mac` that is not a MAC address or that another interface of the
/// list has (Firecracker refuses it as in use).
///
/// [`SpecError`]: crate::error::SpecError
fn fc_net_devices(src: Source<'_>, interfaces: Vec<FcId<'_>>) -> Result<Vec<Option<String>>> {
    // Each interface's id and guest MAC address.
    let mut list: Vec<(Option<String>, Option<[u8; 6]>)> = Vec::new();
    for (i, interface) in interfaces.into_iter().enumerate() {
        let field = format!("network-interfaces[{i}].guest_mac");
        let mac = match interface.guest_mac {
            None => None,
            Some(raw) => {
                let at = fc_offset(src, raw);
                let span = Some(at..at + raw.get().len());
                match from_json::<Option<String>>(src, at, raw.get(), &field)? {
                    None => None,
                    Some(text) => Some(parse_mac(&text).ok_or_else(|| {
                        src.error(
                            field.clone(),
                            span.clone(),
                            Problem::Invalid(format!(
                                "`{}` is not a MAC address (six bytes joined by `:`, each two \
                                 hex digits or `+` and one)",
                                crate::render::escape(&text)
                            )),
                        )
                    })?),
                }
                .map(|mac| (mac, span))
            }
        };
        if let Some((mac, span)) = &mac
            && let Some((other, _)) = list
                .iter()
                .find(|(id, m)| m.as_ref() == Some(mac) && (id.is_none() || *id != interface.id))
        {
            let other = fc_shown_id(other.as_deref(), "an interface without an id", "");
            let this = fc_shown_id(interface.id.as_deref(), "this interface's", "'s");
            return Err(src
                .error(
                    field,
                    span.clone(),
                    Problem::Invalid(format!(
                        "{this} guest MAC address {} is in use by {other} (Firecracker refuses \
                         it)",
                        format_mac(mac)
                    )),
                )
                .into());
        }
        if let Some(id) = interface.id.as_deref()
            && let Some(k) = list.iter().position(|(d, _)| d.as_deref() == Some(id))
        {
            list.swap_remove(k);
        }
        list.push((interface.id, mac.map(|(mac, _)| mac)));
    }
    Ok(list.into_iter().map(|(id, _)| id).collect())
}

/// A device's id as messages show it, quoted and escaped with `suffix` after it, or `none`
/// for a device without one.
fn fc_shown_id(id: Option<&str>, none: &str, suffix: &str) -> String {
    id.map_or_else(
        || none.to_owned(),
        |id| format!("`{}`{suffix}", crate::render::escape(id)),
    )
}

/// A MAC address as Firecracker reads one: six bytes of two hex digits each (either case, or
/// `+` and one digit, which Rust's `from_str_radix` takes), joined by `:`.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        // As Firecracker's `MacAddr::from_str`: two bytes, read by `from_str_radix`, which
        // also takes a `+` before one digit (`+a` is 0x0a).
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// `mac` as `aa:bb:cc:dd:ee:ff`.
fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn device(ty: &str, name: Option<&str>) -> Value {
    let mut t = Table::new();
    t.insert("type".into(), Value::String(ty.into()));
    if let Some(name) = name {
        t.insert("name".into(), Value::String(name.into()));
    }
    Value::Table(t)
}

/// The spec of a Firecracker configuration for the guest architecture `arch` (written into the
/// spec, `arch`): a whole `--config-file` JSON (memory from
/// `machine-config`, 128 MiB without one; the balloon device, a virtio-blk per drive, a
/// virtio-net per network interface (as Firecracker builds them: a repeated id updates or
/// replaces a device, the root drive first), then vsock and entropy devices, in that order (the
/// order Firecracker attaches them in), named by their ids (an
/// id the plan reserves, or one a device of another type already took, is qualified by type:
/// `blk-serial`, `net-1`; one longer than a name may be is cut to fit, with `~` at the cut;
/// one that is not a name, such as an empty id or one with a control character, is named by
/// its text with those characters written as `\u{..}`; see SPEC.md); the serial port) or a
/// `machine-config` object alone (memory and the serial port).
///
/// What Firecracker requires is required: `boot-source` (with its `kernel_image_path`) and
/// `drives` (an empty list for none) in a whole configuration; `vcpu_count` and
/// `mem_size_mib` in `machine-config` (which may itself be left out or `null`: Firecracker's
/// defaults, 128 MiB); `amount_mib` and `deflate_on_oom` in a `balloon`. `null` is not a
/// value for any of these, nor for `smt` or `track_dirty_pages`; unknown fields of
/// `machine-config`, `boot-source` and `balloon` are refused, as Firecracker refuses them.
///
/// `mem_size_mib` becomes `memory.size`; `huge_pages = "2M"` becomes 2 MiB huge pages,
/// `"Transparent"` transparent huge pages, `"None"` base pages. The memory is private anonymous
/// memory, or a memfd when a drive is vhost-user (has a `socket`), as Firecracker backs it.
/// `vcpu_count`, `smt`, `cpu_template` and `track_dirty_pages` do not change the memory map and are
/// left out, once `vcpu_count` is checked as Firecracker checks it (1 to 32; 1 or even with `smt`)
/// and `cpu_template` is one of Firecracker's templates on `arch`.
/// As Firecracker, the memory is at least 1 MiB and a whole number of huge pages with `"2M"`, and a
/// balloon's `amount_mib` may not be more than `mem_size_mib`; a balloon and an initrd go with huge
/// pages (Firecracker 1.14 on). A drive is a drive of a file (`path_on_host`, no `socket`) or a
/// vhost-user drive (`socket`, and none of `path_on_host`, `is_read_only`, `rate_limiter`,
/// `io_engine`), and an interface's `mtu` is at least 68 and its `host_dev_name` under 16 bytes,
/// as Firecracker builds no other. The paths Firecracker opens when it applies the file
/// (`kernel_image_path`, `initrd_path`, a drive's `path_on_host` and `socket`) are not empty,
/// and those and the vsock's `uds_path` hold no NUL, and `boot_args` holds no NUL, as
/// Firecracker cannot open or boot with such a value on any host (an empty `uds_path` binds);
/// `socket` and `uds_path` are no longer than a Unix socket's address holds (107 bytes), as
/// Firecracker cannot connect or bind a longer one on any host.
/// `mmds-config` adds nothing to the plan and is checked as Firecracker checks it (SPEC.md): its
/// fields' types, a link-local `ipv4_address` it takes, a `network_interfaces` list that is not
/// empty and names only the interfaces' ids.
///
/// The device entries are counted before any is read: more than [`MAX_DEVICES`] in all are
/// refused as a spec with that many `[[device]]` tables is, even where repeated ids would merge
/// some, naming the first entry past the limit in the order of the devices (`drives[95]` after
/// a balloon). The converted spec is held to [`MAX_SPEC_BYTES`] as a spec file is.
///
/// On x86_64 the spec has Firecracker 1.16's device windows: each virtio device's `address`
/// is the next 4 KiB page from `0xc0001000`, in the order Firecracker attaches the devices
/// (the page at 3 GiB is kept for its boot timer), and their interrupts are the legacy GSIs from 5
/// in that order, as the plan hands them out. What Firecracker 1.16 cannot boot on x86_64 is
/// refused: more than 17 virtio devices (GSIs 22 and 23 go to its VMGenID and VMClock
/// devices) and more than 255 GiB of memory (Firecracker puts memory past 255 GiB above its
/// 64-bit MMIO gap `[256 GiB, 512 GiB)`, which a spec's one RAM window above 4 GiB cannot
/// hold).
///
/// On aarch64 the plan is memvisor's aarch64 layout, not Firecracker's (which puts RAM at
/// 2 GiB and devices from `0x40003000`): see SPEC.md. More than 1022 GiB of memory, which
/// Firecracker cuts to 1022 GiB there, is refused, and so are more than 93 virtio devices (92
/// when `boot_args` or the root drive's `partuuid` has `console=`), past the interrupts
/// Firecracker has for them there.
/// The device limits and x86_64 windows are those of Firecracker's default MMIO transport:
/// started with `--enable-pci` it boots up to 31 virtio devices on PCI on either
/// architecture, and more than 17 of them on x86_64 are refused here all the same.
///
/// # Errors
/// [`Error::Spec`] for JSON that is not a Firecracker configuration (an array or scalar where an
/// object belongs included, a required field missing or `null`, an unknown field), an unknown
/// `huge_pages` value, a second root drive, a drive of neither kind or of both, an `mtu` below
/// 68, a `host_dev_name` of 16 bytes or more, `boot_args` longer than Firecracker's 2048-byte
/// kernel command line or with a NUL, an empty path or one with a NUL (an empty `uds_path`
/// binds), a `socket` or `uds_path` longer than a Unix socket's 107 bytes, an `mmds-config`
/// Firecracker refuses, too many devices, a
/// `vcpu_count`, `mem_size_mib` or balloon target that Firecracker refuses, or the x86_64 and
/// aarch64 limits above, with the field and its line and column in the file (the limits at the
/// value that breaks them); [`Error::SpecTooLarge`] when the converted spec would be larger than a
/// spec may be.
///
/// ```
/// use memvisor_cli::spec::Arch;
/// use memvisor_cli::vmm::firecracker_spec;
///
/// let machine = r#"{"vcpu_count": 2, "mem_size_mib": 1024, "huge_pages": "2M"}"#;
/// let toml = firecracker_spec("vm.json", machine, Arch::X86_64)?;
/// assert!(toml.contains("size = \"1024MiB\""), "{toml}");
/// assert!(toml.contains("huge_pages = \"2MiB\""), "{toml}");
///
/// let json = r#"{"boot-source": {"kernel_image_path": "vmlinux"},
///     "drives": [{"drive_id": "rootfs", "is_root_device": true, "path_on_host": "d"}]}"#;
/// let toml = firecracker_spec("vm.json", json, Arch::X86_64)?;
/// assert!(toml.contains("address = \"0xc0001000\""), "{toml}");
/// let toml = firecracker_spec("vm.json", json, Arch::Aarch64)?;
/// assert!(!toml.contains("address"), "{toml}");
/// # Ok::<(), memvisor_cli::Error>(())
/// ```
pub fn firecracker_spec(origin: &str, json: &str, arch: Arch) -> Result<String> {
    let src = Source { origin, text: json };
    // Where an entry's text starts in the file.
    let offset =
        |raw: &RawValue| (raw.get().as_ptr() as usize).saturating_sub(json.as_ptr() as usize);
    let shape: FcShape = from_json(src, 0, json, "")?;
    // The field path of machine-config's fields.
    let machine_path = if shape.whole { "machine-config." } else { "" };
    let config = if shape.whole {
        from_json::<Object<FcConfig<'_>>>(src, 0, json, "")?.0
    } else {
        FcConfig {
            machine: Some(from_json(src, 0, json, "")?),
            drives: FcList::default(),
            network: FcList::default(),
            vsock: None,
            balloon: None,
            entropy: None,
            boot_source: None,
            pmem: None,
            mmds: None,
            memory_hotplug: None,
            logger: None,
            metrics: None,
            cpu_config: None,
        }
    };
    // Firecracker's virtio-pmem devices and virtio-mem hotplug memory take device windows,
    // interrupts and guest memory that a spec does not describe: refused rather than left out
    // of the plan.
    let pmem = config
        .pmem
        .map(|raw| {
            from_json::<FcList<'_>>(src, offset(raw), raw.get(), "pmem").map(|l| (raw, l.total))
        })
        .transpose()?;
    for (field, raw) in [
        (
            "pmem",
            pmem.and_then(|(raw, total)| (total > 0).then_some(raw)),
        ),
        ("memory-hotplug", config.memory_hotplug),
    ] {
        if let Some(raw) = raw {
            return Err(src
                .error(
                    field.to_owned(),
                    Some(offset(raw)..offset(raw) + raw.get().len()),
                    Problem::Invalid(format!(
                        "Firecracker's {field} is not modelled (its devices and memory are \
                         not in the plan); remove it to plan the rest"
                    )),
                )
                .into());
        }
    }
    let machine = config.machine.map(|m| m.0);
    if let Some(m) = &machine {
        fc_vcpus(src, m, machine_path, arch)?;
    }
    let (mem_size_mib, machine_huge_pages) = machine
        .as_ref()
        .map_or((FC_DEFAULT_MEM_SIZE_MIB, None), |m| {
            (m.mem_size_mib.0, m.huge_pages)
        });
    // Counts first, as for a spec's [[device]] tables: no entry is read past the limit. The
    // parts in the order Firecracker attaches their devices: a list's entries, or one object.
    let parts: [(&str, usize, Option<&FcList<'_>>, Option<&RawValue>); 5] = [
        (
            "balloon",
            usize::from(config.balloon.is_some()),
            None,
            config.balloon,
        ),
        ("drives", config.drives.total, Some(&config.drives), None),
        (
            "network-interfaces",
            config.network.total,
            Some(&config.network),
            None,
        ),
        (
            "vsock",
            usize::from(config.vsock.is_some()),
            None,
            config.vsock,
        ),
        (
            "entropy",
            usize::from(config.entropy.is_some()),
            None,
            config.entropy,
        ),
    ];
    let total = parts
        .iter()
        .map(|&(_, count, _, _)| count)
        .fold(0usize, usize::saturating_add);
    if total > MAX_DEVICES {
        // The first device past the limit, in the order they become devices.
        let mut before = 0usize;
        let mut past = None;
        for &(name, count, list, one) in &parts {
            if before + count > MAX_DEVICES {
                let i = MAX_DEVICES - before;
                past = Some(match list {
                    Some(list) => (format!("{name}[{i}]"), list.entries.get(i).copied()),
                    None => (name.to_owned(), one),
                });
                break;
            }
            before += count;
        }
        let (field, raw) = past.unwrap_or_default();
        return Err(src
            .error(
                field,
                raw.map(|r| offset(r)..offset(r) + r.get().len()),
                Problem::Invalid(format!(
                    "{total} device entries (at most {MAX_DEVICES} devices: each needs its own \
                     interrupt; entries are counted before repeated ids merge them)"
                )),
            )
            .into());
    }
    let drives = fc_block_devices(src, fc_entries(src, "drives", &config.drives, true)?)?;
    let network = fc_net_devices(
        src,
        fc_entries(src, "network-interfaces", &config.network, false)?,
    )?;
    let vsock = config
        .vsock
        .map(|raw| from_json::<Object<FcVsock>>(src, offset(raw), raw.get(), "vsock"))
        .transpose()?;
    let balloon = config
        .balloon
        .map(|raw| {
            from_json::<Object<FcBalloon>>(src, offset(raw), raw.get(), "balloon").map(|b| b.0)
        })
        .transpose()?;
    let console = match config.boot_source {
        Some(raw) => from_json::<Object<FcBootSource>>(src, offset(raw), raw.get(), "boot-source")?
            .0
            .boot_args
            .is_some_and(|a| a.console),
        None => false,
    };
    if let Some(raw) = config.mmds {
        fc_mmds(src, raw, &network)?;
    }
    if let Some(raw) = config.entropy {
        from_json::<Object<FcEntropy>>(src, offset(raw), raw.get(), "entropy")?;
    }
    fc_unplanned_sections(
        src,
        [config.logger, config.metrics, config.cpu_config],
        arch,
    )?;
    let mut memory = Table::new();
    let mib = mem_size_mib;
    memory.insert("size".into(), Value::String(format!("{mib}MiB")));
    let huge_pages_field = format!("{machine_path}huge_pages");
    let huge_pages = machine_huge_pages
        .map(|raw| {
            from_json::<String>(src, offset(raw), raw.get(), &huge_pages_field)
                .map(|value| (raw, value))
        })
        .transpose()?;
    // As Firecracker: a memfd only when a vhost-user drive's back end must map the memory
    // (shared memory faults cost more), else private anonymous memory; huge pages either way.
    let backing = if drives.iter().any(|d| d.vhost_user) {
        "memfd"
    } else {
        "anonymous"
    };
    memory.insert("backing".into(), Value::String(backing.into()));
    match huge_pages.as_ref().map(|(_, v)| v.as_str()) {
        None | Some("None") => {}
        Some("2M") => {
            memory.insert("huge_pages".into(), Value::String("2MiB".into()));
        }
        // `madvise(MADV_HUGEPAGE)` on private memory.
        Some("Transparent") => {
            memory.insert("huge_pages".into(), Value::String("transparent".into()));
        }
        Some(other) => {
            let raw = huge_pages.as_ref().map(|(raw, _)| *raw);
            return Err(src
                .error(
                    huge_pages_field,
                    raw.map(|r| offset(r)..offset(r) + r.get().len()),
                    Problem::UnknownValue {
                        found: crate::render::escape(other).into_owned(),
                        expected: "None, Transparent, 2M",
                    },
                )
                .into());
        }
    }
    // Firecracker takes memory of whole 2 MiB for transparent huge pages too.
    let huge = huge_pages
        .as_ref()
        .is_some_and(|(_, v)| v == "2M" || v == "Transparent");
    let mem_field = format!("{machine_path}mem_size_mib");
    fc_memory(
        src,
        machine
            .as_ref()
            .map(|m| (m.mem_size_mib.0, mem_field.as_str())),
        huge,
        balloon.as_ref(),
    )?;
    if arch == Arch::X86_64
        && let Some(m) = &machine
        && m.mem_size_mib.0 > FC_X86_MAX_MEM_MIB
    {
        return Err(src
            .error(
                mem_field,
                fc_mem_size_span(src),
                Problem::Invalid(format!(
                    "{} MiB is more than the {FC_X86_MAX_MEM_MIB} MiB (255 GiB) Firecracker \
                     lays out on x86_64 below its 64-bit MMIO gap [256 GiB, 512 GiB); the \
                     memory it puts above the gap is not modelled",
                    m.mem_size_mib.0
                )),
            )
            .into());
    }
    if arch == Arch::Aarch64
        && let Some(m) = &machine
        && m.mem_size_mib.0 > FC_AARCH64_MAX_MEM_MIB
    {
        return Err(src
            .error(
                mem_field,
                fc_mem_size_span(src),
                Problem::Invalid(format!(
                    "{} MiB is more than the {FC_AARCH64_MAX_MEM_MIB} MiB (1022 GiB) Firecracker \
                     gives a guest on aarch64 (it cuts the memory to that, so the guest would \
                     not have this size)",
                    m.mem_size_mib.0
                )),
            )
            .into());
    }
    let mut ided: Vec<(&str, &str, Option<&str>)> = Vec::new();
    ided.extend(
        drives
            .iter()
            .map(|d| ("virtio-blk", "blk", d.id.as_deref())),
    );
    ided.extend(
        network
            .iter()
            .map(|id| ("virtio-net", "net", id.as_deref())),
    );
    if let Some(v) = &vsock {
        ided.push(("virtio-vsock", "vsock", v.0.0.id.as_deref()));
    }
    let names = device_names(&ided);
    // Firecracker attaches the balloon before the drives, so its window and interrupt come
    // first.
    let mut devices: Vec<Value> = Vec::with_capacity(ided.len() + 2);
    if config.balloon.is_some() {
        devices.push(device("virtio-balloon", None));
    }
    devices.extend(
        ided.iter()
            .zip(&names)
            .map(|((ty, _, _), name)| device(ty, name.as_deref())),
    );
    if config.entropy.is_some() {
        devices.push(device("virtio-rng", None));
    }
    let sections = [config.balloon, config.vsock, config.entropy];
    match arch {
        Arch::X86_64 => fc_x86_devices(src, sections, &mut devices)?,
        Arch::Aarch64 => {
            let (most, why) = if console || drives.iter().any(|d| d.root_console) {
                (
                    FC_AARCH64_MAX_VIRTIO_DEVICES - 1,
                    "then one each to the serial port (`console=` is on the command line, in \
                     `boot_args` or the root drive's `partuuid`), its RTC, VMGenID and VMClock \
                     devices",
                )
            } else {
                (
                    FC_AARCH64_MAX_VIRTIO_DEVICES,
                    "then one each to its RTC, VMGenID and VMClock devices",
                )
            };
            fc_device_limit(
                src,
                sections,
                &devices,
                most,
                &format!("on aarch64 (its 96 SPIs go to them in order, {why})"),
            )?;
        }
    }
    let mut spec = Table::new();
    spec.insert("name".into(), Value::String(stem(origin)));
    spec.insert("arch".into(), Value::String(arch.name().into()));
    spec.insert("memory".into(), Value::Table(memory));
    spec.insert("serial".into(), Value::Table(Table::new()));
    if !devices.is_empty() {
        spec.insert("device".into(), Value::Array(devices));
    }
    // The converted spec is held to a spec's limits: escaping in TOML can make it longer than
    // the file it came from. Ids may hold any character: none that must not reach a terminal
    // raw is printed so.
    let text = crate::render::escape_toml(&spec.to_string());
    if text.len() > MAX_SPEC_BYTES {
        return Err(Error::SpecTooLarge {
            path: super::converted_origin(origin),
            limit: MAX_SPEC_BYTES,
        });
    }
    Ok(text)
}

/// Checks `logger`, `metrics` and `cpu-config` (the raw sections, `None` when left out or
/// `null`) as Firecracker reads them (types,
/// required and unknown fields, the values its readers refuse, a path it opens that names no
/// file), in that order; they add nothing to the plan. A `cpu-config` template is the one of
/// `arch`; a `cpu-config` path is not read.
///
/// # Errors
/// [`SpecError`] at the first field Firecracker refuses.
///
/// [`SpecError`]: crate::error::SpecError
fn fc_unplanned_sections(
    src: Source<'_>,
    [logger, metrics, cpu]: [Option<&RawValue>; 3],
    arch: Arch,
) -> Result<()> {
    let offset = |raw: &RawValue| fc_offset(src, raw);
    if let Some(raw) = logger {
        from_json::<Object<output_sections::FcLogger>>(src, offset(raw), raw.get(), "logger")?;
    }
    if let Some(raw) = metrics {
        from_json::<Object<output_sections::FcMetrics>>(src, offset(raw), raw.get(), "metrics")?;
    }
    if let Some(raw) = cpu {
        let (base, text) = (offset(raw), raw.get());
        let shape = from_json::<cpu_config::FcCpuConfigShape>(src, base, text, "cpu-config")?;
        if shape == cpu_config::FcCpuConfigShape::Template {
            match arch {
                Arch::X86_64 => {
                    from_json::<Object<cpu_config::FcX86Template>>(src, base, text, "cpu-config")?;
                }
                Arch::Aarch64 => {
                    from_json::<Object<cpu_config::FcArmTemplate>>(src, base, text, "cpu-config")?;
                }
            }
        }
    }
    Ok(())
}

/// Gives Firecracker's x86_64 virtio `devices` (in attach order) the MMIO windows Firecracker
/// 1.16 gives them, once their number is checked against the legacy GSIs it has for them.
///
/// # Errors
/// [`SpecError`] for more than [`FC_X86_MAX_VIRTIO_DEVICES`] devices, at the section of the
/// first device past the limit (its value when it is one of `[balloon, vsock, entropy]`, the
/// raw sections given).
///
/// [`SpecError`]: crate::error::SpecError
fn fc_x86_devices(
    src: Source<'_>,
    [balloon, vsock, entropy]: [Option<&RawValue>; 3],
    devices: &mut [Value],
) -> Result<()> {
    fc_device_limit(
        src,
        [balloon, vsock, entropy],
        devices,
        FC_X86_MAX_VIRTIO_DEVICES,
        "on x86_64 (its legacy GSIs 5 to 23 go to them in order, then one each to its VMGenID \
         and VMClock devices)",
    )?;
    let mut address = FC_X86_DEVICES_START;
    for device in devices {
        if let Value::Table(t) = device {
            t.insert("address".into(), Value::String(format!("{address:#x}")));
        }
        address += FC_MMIO_LEN;
    }
    Ok(())
}

/// Refuses more than `most` virtio `devices` (in attach order; the raw `balloon`, `vsock` and
/// `entropy` sections of the file `src` where they are written), which Firecracker cannot
/// boot for the reason `why`, at the section of the first device past them.
///
/// # Errors
/// [`SpecError`] for more than `most` devices.
///
/// [`SpecError`]: crate::error::SpecError
fn fc_device_limit(
    src: Source<'_>,
    [balloon, vsock, entropy]: [Option<&RawValue>; 3],
    devices: &[Value],
    most: usize,
    why: &str,
) -> Result<()> {
    if devices.len() > most {
        // The section of the first device past the limit, the devices in attach order.
        let past = &devices[most];
        let ty = past.get("type").and_then(Value::as_str).unwrap_or_default();
        let (field, raw) = match ty {
            "virtio-balloon" => ("balloon", balloon),
            "virtio-blk" => ("drives", None),
            "virtio-net" => ("network-interfaces", None),
            "virtio-vsock" => ("vsock", vsock),
            _ => ("entropy", entropy),
        };
        let at = |r: &RawValue| fc_offset(src, r)..fc_offset(src, r) + r.get().len();
        let name = past.get("name").and_then(Value::as_str).map_or_else(
            || format!("the {}", ty.strip_prefix("virtio-").unwrap_or(ty)),
            |n| format!("`{}`", crate::render::escape(n)),
        );
        return Err(src
            .error(
                field.to_owned(),
                raw.map(at),
                Problem::Invalid(format!(
                    "{} virtio devices ({name} is number {}): Firecracker boots at most {most} \
                     {why}",
                    devices.len(),
                    most + 1
                )),
            )
            .into());
    }
    Ok(())
}

/// The name of a spec made from the Firecracker file `origin`.
fn stem(origin: &str) -> String {
    crate::spec::name_of_file(origin, "firecracker")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SpecError;
    use crate::spec::{PageKind, Source, parse};

    fn spec_of(toml: &str) -> crate::spec::VmSpec {
        parse(Source {
            origin: "x",
            text: toml,
        })
        .unwrap()
    }

    /// A ` -- ` is the init's separator only with an even number of `"` before it: after one
    /// `"`, a spec's worth (1 MiB) of separators is measured in one pass over the text, not by
    /// counting the quotes before each separator again (some 10^11 byte reads, seconds of work
    /// for a file the command must check in milliseconds).
    #[test]
    #[cfg_attr(miri, ignore)]
    fn fc_cmdline_size_of_many_separators_after_a_quote_finishes() {
        let raw = format!("\"{}", FC_INIT_ARGS_SEPARATOR.repeat(1 << 18));
        let expected = raw.trim().len() + 1;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(fc_cmdline_size(&raw)));
        let size = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("still measuring after 5 s");
        assert_eq!(size, expected);
        // The quotes before each separator decide: split at the first with an even count.
        assert_eq!(
            fc_cmdline_size("a \" -- \" -- b"),
            "a \" -- \"".len() + 1 + 5
        );
        assert_eq!(fc_cmdline_size("\"\" -- b"), 3 + 5);
        assert_eq!(fc_cmdline_size("\" -- b"), 7);
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
        let spec = spec_of(&firecracker_spec("fc.json", json, Arch::X86_64).unwrap());
        assert_eq!(spec.name, "fc");
        assert_eq!(spec.ram(), 1 << 30);
        let names: Vec<&str> = spec.devices.iter().map(|d| d.name.as_str()).collect();
        // Firecracker attaches the balloon first, then drives, interfaces and vsock.
        assert_eq!(names, ["balloon0", "rootfs", "eth0", "vsock0"]);
        assert!(spec.serial.is_some());
    }

    /// As Firecracker backs guest memory: private anonymous memory (with 2 MiB huge pages for
    /// `huge_pages: "2M"`), and a memfd only when a drive is vhost-user (has a `socket`), so
    /// that its back end can map the memory.
    #[test]
    fn firecracker_memory_is_a_memfd_only_with_a_vhost_user_drive() {
        use crate::spec::{BackingKind, PageKind};
        let config = |huge: &str, drives: &str| {
            let json = format!(
                r#"{{"machine-config": {{"mem_size_mib": 64, "vcpu_count": 1, "huge_pages": "{huge}"}}, "drives": {drives}, "boot-source": {{"kernel_image_path": "k"}}}}"#
            );
            let memory = spec_of(&firecracker_spec("fc.json", &json, Arch::X86_64).unwrap()).memory;
            (memory.backing, memory.pages)
        };
        let plain = r#"[{"drive_id": "rootfs", "path_on_host": "r.ext4", "is_root_device": true}]"#;
        let vhost = r#"[{"drive_id": "rootfs", "path_on_host": "r.ext4", "is_root_device": true},
                        {"drive_id": "data", "socket": "/run/blk.sock", "is_root_device": false}]"#;
        let null_socket = r#"[{"drive_id": "rootfs", "socket": null, "is_root_device": true, "path_on_host": "d"}]"#;
        let huge = PageKind::Huge2M;
        assert_eq!(config("2M", plain), (BackingKind::Anonymous, huge));
        assert_eq!(config("2M", null_socket), (BackingKind::Anonymous, huge));
        assert_eq!(config("2M", vhost), (BackingKind::Memfd, huge));
        assert_eq!(
            config("None", plain),
            (BackingKind::Anonymous, PageKind::Base)
        );
        assert_eq!(config("None", vhost), (BackingKind::Memfd, PageKind::Base));
        // A later drive with the same id replaces the vhost-user one.
        let replaced = r#"[{"drive_id": "data", "socket": "/run/blk.sock", "is_root_device": false},
                           {"drive_id": "data", "path_on_host": "d.ext4", "is_root_device": false}]"#;
        assert_eq!(
            config("None", replaced),
            (BackingKind::Anonymous, PageKind::Base)
        );
    }

    #[test]
    fn firecracker_bad_input_is_refused() {
        let e = firecracker_spec(
            "x",
            "{\"vcpu_count\": 1, \"mem_size_mib\": 64, \"huge_pages\": \"1G\"}",
            Arch::X86_64,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown value `1G`"), "{e}");
        let e = firecracker_spec(
            "x",
            "{\"vcpu_count\": 1, \"mem_size_mib\": 64, \"mem_size\": 1}",
            Arch::X86_64,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `mem_size`"), "{e}");
        let e = firecracker_spec("x", "[1,", Arch::X86_64).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        // A drive id that would break TOML stays a string, its line break written out.
        let json = r#"{"machine-config": {"mem_size_mib": 64, "vcpu_count": 1}, "drives": [{"drive_id": "a\"\n[memory]", "is_root_device": false, "path_on_host": "d"}], "boot-source": {"kernel_image_path": "k"}}"#;
        let toml = firecracker_spec("x", json, Arch::X86_64).unwrap();
        let spec = spec_of(&toml);
        assert_eq!(spec.devices.len(), 1);
        assert_eq!(spec.devices[0].name, r#"a"\u{a}[memory]"#);
    }

    /// The error of a Firecracker file `json`, as a spec error (field, position, problem).
    fn fc_error(json: &str) -> SpecError {
        match firecracker_spec("fc.json", json, Arch::X86_64) {
            Err(Error::Spec(e)) => e,
            other => panic!("{json}: not a spec error: {other:?}"),
        }
    }

    /// Checks that the Firecracker file `json` is refused at `field`, with a position, and a
    /// problem that says `expected`.
    fn assert_refused_at(json: &str, field: &str, expected: &str) {
        let e = fc_error(json);
        assert_eq!(e.field, field, "{json}: {e}");
        assert!(e.position.is_some(), "{json}: {e}");
        assert!(
            e.problem.to_string().contains(expected),
            "{json}: {e}\nexpected: {expected}"
        );
    }

    /// As Firecracker: the optional fields of a drive, an interface, a vsock, a balloon, an
    /// entropy device and `machine-config` have the type Firecracker's structs give them, and
    /// a value of another type is refused at its field.
    #[test]
    fn firecracker_optional_device_fields_of_the_wrong_type_are_refused() {
        let drive = |field: &str| {
            format!(
                r#"{{{BOOT}, "drives": [{{"drive_id": "d", "is_root_device": false, {field}}}]}}"#
            )
        };
        let net = |field: &str| {
            format!(
                r#"{{{BOOT}, "drives": [], "network-interfaces": [{{"iface_id": "n", "host_dev_name": "tap0", {field}}}]}}"#
            )
        };
        let section =
            |section: &str, body: &str| format!(r#"{{{BOOT}, "drives": [], "{section}": {body}}}"#);
        let machine = |field: &str| format!(r#"{{"vcpu_count": 1, "mem_size_mib": 64, {field}}}"#);
        let bucket = r#"{"size": 1, "refill_time": 1}"#;
        for (json, field, expected) in [
            (
                drive(r#""partuuid": 7"#),
                "drives[0].partuuid",
                "expected a string",
            ),
            (
                drive(r#""is_read_only": "yes""#),
                "drives[0].is_read_only",
                "expected a boolean",
            ),
            (
                drive(r#""path_on_host": false"#),
                "drives[0].path_on_host",
                "expected a string",
            ),
            (
                drive(r#""cache_type": "Fast""#),
                "drives[0].cache_type",
                "unknown variant `Fast`",
            ),
            (
                drive(r#""cache_type": null"#),
                "drives[0].cache_type",
                "expected",
            ),
            (
                drive(r#""io_engine": 1"#),
                "drives[0].io_engine",
                "expected",
            ),
            (
                drive(r#""socket": 1"#),
                "drives[0].socket",
                "expected a string",
            ),
            (
                drive(r#""rate_limiter": 5"#),
                "drives[0].rate_limiter",
                "expected a rate limiter object",
            ),
            (
                drive(r#""rate_limiter": {"bandwidth": {"size": "1"}}"#),
                "drives[0].rate_limiter.bandwidth.size",
                "expected a whole number",
            ),
            (
                drive(r#""rate_limiter": {"ops": {"size": 1}}"#),
                "drives[0].rate_limiter.ops",
                "missing field `refill_time`",
            ),
            (
                drive(r#""rate_limiter": {"burst": 1}"#),
                "drives[0].rate_limiter.burst",
                "unknown field `burst`",
            ),
            (
                net(r#""mtu": "1500""#),
                "network-interfaces[0].mtu",
                "expected a whole number from 68 to 65535",
            ),
            (
                net(r#""mtu": 65536"#),
                "network-interfaces[0].mtu",
                "expected a whole number from 68 to 65535",
            ),
            (
                net(&format!(
                    r#""rx_rate_limiter": {{"ops": {bucket}, "bandwidth": {{"size": 1, "refill_time": 1, "one_time_burst": -1}}}}"#
                )),
                "network-interfaces[0].rx_rate_limiter.bandwidth.one_time_burst",
                "expected a whole number",
            ),
            (
                net(r#""tx_rate_limiter": []"#),
                "network-interfaces[0].tx_rate_limiter",
                "expected a rate limiter object",
            ),
            (
                section("vsock", r#"{"guest_cid": "3", "uds_path": "/v"}"#),
                "vsock.guest_cid",
                "expected a whole number",
            ),
            (
                section(
                    "vsock",
                    r#"{"vsock_id": 1, "guest_cid": 3, "uds_path": "/v"}"#,
                ),
                "vsock.vsock_id",
                "expected a string",
            ),
            (
                section(
                    "balloon",
                    r#"{"amount_mib": 0, "deflate_on_oom": false, "stats_polling_interval_s": "1"}"#,
                ),
                "balloon.stats_polling_interval_s",
                "expected a whole number from 0 to 65535",
            ),
            (
                section(
                    "balloon",
                    r#"{"amount_mib": 0, "deflate_on_oom": false, "free_page_hinting": 1}"#,
                ),
                "balloon.free_page_hinting",
                "expected a boolean",
            ),
            (
                section(
                    "entropy",
                    r#"{"rate_limiter": {"ops": {"size": 1, "refill_time": "x"}}}"#,
                ),
                "entropy.rate_limiter.ops.refill_time",
                "expected a whole number",
            ),
            (machine(r#""smt": "true""#), "smt", "expected a boolean"),
            (
                machine(r#""track_dirty_pages": 1"#),
                "track_dirty_pages",
                "expected a boolean",
            ),
            (
                machine(r#""cpu_template": 1"#),
                "cpu_template",
                "expected a CPU template name",
            ),
        ] {
            assert_refused_at(&json, field, expected);
        }
        // The right types are taken.
        for json in [
            drive(
                r#""partuuid": null, "is_read_only": true, "path_on_host": "/r", "cache_type": "Writeback", "io_engine": "Async", "socket": null, "rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1, "one_time_burst": null}, "ops": null}"#,
            ),
            net(r#""mtu": 1500, "rx_rate_limiter": null, "tx_rate_limiter": {}"#),
            section(
                "entropy",
                r#"{"rate_limiter": {"ops": {"size": 1, "refill_time": 1, "other": 1}}}"#,
            ),
        ] {
            firecracker_spec("fc.json", &json, Arch::X86_64)
                .unwrap_or_else(|e| panic!("{json}: {e}"));
        }
    }

    /// As Firecracker's `HugePageConfig`: `None`, `Transparent` (transparent huge pages, of a
    /// memory size in whole 2 MiB) or `2M`; `null` is not one.
    #[test]
    fn firecracker_huge_pages_are_its_three_values_and_not_null() {
        let config = |value: &str, mib: u64| {
            format!(r#"{{"vcpu_count": 1, "mem_size_mib": {mib}, "huge_pages": {value}}}"#)
        };
        for (value, pages) in [
            (r#""None""#, PageKind::Base),
            (r#""Transparent""#, PageKind::Transparent),
            (r#""2M""#, PageKind::Huge2M),
        ] {
            let toml = firecracker_spec("fc.json", &config(value, 64), Arch::X86_64).unwrap();
            assert_eq!(spec_of(&toml).memory.pages, pages, "{value}");
        }
        assert_refused_at(&config("null", 64), "huge_pages", "invalid type: null");
        assert_refused_at(
            &config(r#""transparent""#, 64),
            "huge_pages",
            "None, Transparent, 2M",
        );
        assert_refused_at(
            &config(r#""Transparent""#, 65),
            "mem_size_mib",
            "65 MiB is not a multiple of the 2 MiB huge page",
        );
    }

    #[test]
    fn firecracker_arrays_and_scalars_are_not_objects() {
        for (json, field, expected) in [
            (
                r#"[{"mem_size_mib": 64, "vcpu_count": 1}]"#,
                "",
                "invalid type: sequence, expected a Firecracker configuration object",
            ),
            (
                r#"[{"mem_size_mib": 64, "vcpu_count": 1}, [["rootfs"],["data"]], [["eth0"]], ["v0"], 1, 2]"#,
                "",
                "invalid type: sequence, expected a Firecracker configuration object",
            ),
            (
                r#"[[64, "2M"]]"#,
                "",
                "invalid type: sequence, expected a Firecracker configuration object",
            ),
            (
                r#"{"machine-config": [64], "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
                "machine-config",
                "invalid type: sequence, expected a machine-config object",
            ),
            (
                r#"{"machine-config": [64, "2M"], "drives": [["rootfs"]], "vsock": ["v0"], "balloon": false, "entropy": 0, "boot-source": {"kernel_image_path": "k"}}"#,
                "machine-config",
                "invalid type: sequence, expected a machine-config object",
            ),
            (
                r#"{"machine-config": {"mem_size_mib": 64, "vcpu_count": 1}, "drives": [["rootfs"]], "boot-source": {"kernel_image_path": "k"}}"#,
                "drives[0]",
                "invalid type: sequence, expected a Firecracker device object",
            ),
            (
                r#"{"machine-config": {"mem_size_mib": 64, "vcpu_count": 1}, "vsock": ["v0"], "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
                "vsock",
                "invalid type: sequence, expected a vsock object",
            ),
            (
                r#"{"machine-config": {"mem_size_mib": 64, "vcpu_count": 1}, "balloon": false, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
                "balloon",
                "invalid type: boolean `false`, expected a balloon object",
            ),
            (
                r#"{"machine-config": {"mem_size_mib": 64, "vcpu_count": 1}, "entropy": 0, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
                "entropy",
                "invalid type: integer `0`, expected an entropy object",
            ),
            (
                r#"{"machine-config": {"mem_size_mib": 64, "vcpu_count": 1}, "balloon": "x", "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
                "balloon",
                "invalid type: string \"x\", expected a balloon object",
            ),
        ] {
            assert_refused_at(json, field, expected);
        }
    }

    #[test]
    fn firecracker_null_devices_are_none() {
        let json = r#"{"machine-config": {"mem_size_mib": 64, "vcpu_count": 1}, "vsock": null, "balloon": null, "entropy": null, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#;
        let spec = spec_of(&firecracker_spec("fc.json", json, Arch::X86_64).unwrap());
        assert!(spec.devices.is_empty());
        let json = r#"{"machine-config": {"mem_size_mib": 64, "vcpu_count": 1}, "balloon": {"amount_mib": 0, "deflate_on_oom": false}, "entropy": {"rate_limiter": null}, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#;
        let spec = spec_of(&firecracker_spec("fc.json", json, Arch::X86_64).unwrap());
        let names: Vec<&str> = spec.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["balloon0", "rng0"]);
    }

    #[test]
    fn firecracker_messages_name_no_internal_type() {
        for json in [
            r#"{"machine-config": 5, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
            r#"{"machine-config": [], "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
            r#"{"machine-config": [64, "2M", 1, 2, 3, 4], "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
            r#"[]"#,
            r#"[64]"#,
            r#"5"#,
            r#"{"machine-config": {"mem_size_mib": 64, "vcpu_count": 1}, "drives": [7], "boot-source": {"kernel_image_path": "k"}}"#,
            r#"{"mem_size_mib": 1.5}"#,
            r#"{"mem_size_mib": -1}"#,
            r#"{"mem_size_mib": 64, "vcpu_count": "2"}"#,
        ] {
            let e = fc_error(json).to_string();
            assert!(
                !e.contains("struct") && !e.contains("Fc") && !e.contains("u64"),
                "{json}: {e}"
            );
        }
        assert!(
            fc_error(
                r#"{"machine-config": 5, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#
            )
            .to_string()
            .ends_with("invalid type: integer `5`, expected a machine-config object")
        );
    }

    #[test]
    fn firecracker_huge_pages_mistake_has_its_field_and_position() {
        let e = fc_error("{\"mem_size_mib\": 64, \"vcpu_count\": 1,\n \"huge_pages\": \"1G\"}");
        assert_eq!(e.field, "huge_pages");
        assert_eq!(e.position, Some((2, 16)));
        assert_eq!(
            e.problem.to_string(),
            "unknown value `1G` (expected one of: None, Transparent, 2M)"
        );
        let e = fc_error(
            r#"{"machine-config": {"mem_size_mib": 64, "huge_pages": "\u001b", "vcpu_count": 1}, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
        );
        assert_eq!(e.field, "machine-config.huge_pages");
        assert_eq!(e.position, Some((1, 55)));
        assert!(e.problem.to_string().contains("`\\u{1b}`"), "{e}");
        let e = fc_error(r#"{"vcpu_count": 1, "mem_size_mib": 64, "huge_pages": 2}"#);
        assert_eq!(e.field, "huge_pages");
        assert!(e.problem.to_string().contains("expected a string"), "{e}");
    }

    /// The JSON files a value `bad` in place of the string `"@"` in `config` makes: minified,
    /// pretty, and with the value on a line of its own.
    fn with_value(config: &serde_json::Value, bad: &serde_json::Value) -> Vec<(String, String)> {
        let minified = serde_json::to_string(config).unwrap();
        let pretty = serde_json::to_string_pretty(config).unwrap();
        let bad_min = serde_json::to_string(bad).unwrap();
        let bad_pretty = serde_json::to_string_pretty(bad).unwrap();
        vec![
            (minified.replace("\"@\"", &bad_min), bad_min.clone()),
            (pretty.replace("\"@\"", &bad_pretty), bad_pretty),
            (
                minified.replace("\"@\"", &format!("\n\t{bad_min} ")),
                bad_min,
            ),
        ]
    }

    #[test]
    fn firecracker_wrong_values_are_found_in_minified_and_pretty_json() {
        use serde_json::json;
        let boot = json!({"kernel_image_path": "k"});
        let machine =
            |v: serde_json::Value| json!({"machine-config": v, "boot-source": boot, "drives": []});
        let with_machine = |key: &str, v: serde_json::Value| {
            let mut config = machine(json!({"mem_size_mib": 64, "vcpu_count": 1}));
            config[key] = v;
            config
        };
        let array = json!([64]);
        let object = json!({"x": "]}", "y": [1, {"z": null}]});
        let cases = [
            (machine(json!("@")), "machine-config"),
            (
                machine(json!({"mem_size_mib": "@"})),
                "machine-config.mem_size_mib",
            ),
            (json!({"mem_size_mib": "@"}), "mem_size_mib"),
            (
                machine(json!({"mem_size_mib": 64, "smt": "@"})),
                "machine-config.smt",
            ),
            (
                machine(json!({"mem_size_mib": 64, "vcpu_count": "@"})),
                "machine-config.vcpu_count",
            ),
            (
                machine(json!({"mem_size_mib": 64, "track_dirty_pages": "@"})),
                "machine-config.track_dirty_pages",
            ),
            (
                with_machine(
                    "drives",
                    json!([{"drive_id": "@", "is_root_device": false, "path_on_host": "d"}]),
                ),
                "drives[0].drive_id",
            ),
            (
                with_machine(
                    "drives",
                    json!([{"drive_id": "a", "is_root_device": false, "path_on_host": "d"}, "@"]),
                ),
                "drives[1]",
            ),
            (
                with_machine(
                    "network-interfaces",
                    json!([{"iface_id": "@", "host_dev_name": "tap"}]),
                ),
                "network-interfaces[0].iface_id",
            ),
            (
                with_machine("vsock", json!({"vsock_id": "@"})),
                "vsock.vsock_id",
            ),
            (with_machine("vsock", json!("@")), "vsock"),
            (with_machine("balloon", json!("@")), "balloon"),
            (with_machine("entropy", json!("@")), "entropy"),
        ];
        for (config, field) in cases {
            // Each value of a type the field does not take: an array, an object, a number, a
            // boolean, a string (and null where null is not none).
            let mut values = vec![array.clone(), object.clone(), json!(-1.5e3), json!(true)];
            if !field.ends_with("_id") {
                values.push(json!("yes"));
            }
            if field.ends_with("mem_size_mib")
                || field.ends_with("vcpu_count")
                || field.ends_with("smt")
                || field.ends_with("dirty_pages")
                || field.ends_with("drives[1]")
            {
                values.push(json!(null));
            }
            if field.ends_with("_id") {
                values.retain(|v| !v.is_string());
            }
            if field.ends_with("mem_size_mib") || field.ends_with("vcpu_count") {
                values.retain(|v| !v.is_number() || v.as_f64().is_some_and(|n| n < 0.0));
            }
            if field.ends_with("smt") || field.ends_with("dirty_pages") {
                values.retain(|v| !v.is_boolean());
                values.push(json!(1));
            }
            if matches!(field, "vsock" | "balloon" | "entropy" | "machine-config")
                || field.ends_with(']')
            {
                // An object is what these take.
                values.retain(|v| !v.is_object());
            }
            for bad in &values {
                for (json, text) in with_value(&config, bad) {
                    let e = fc_error(&json);
                    let at = json.find(&text).unwrap();
                    let src = Source {
                        origin: "fc.json",
                        text: &json,
                    };
                    assert_eq!(e.field, field, "{json}\n{e}");
                    assert_eq!(e.position, Some(src.line_column(at)), "{json}\n{e}");
                    let excerpt = e.excerpt.as_ref().unwrap();
                    assert_eq!(
                        &excerpt.text[excerpt.span.clone()],
                        text.lines().next().unwrap(),
                        "{json}\n{e}"
                    );
                }
            }
        }
    }

    #[test]
    fn firecracker_missing_field_points_at_the_end_of_its_object() {
        for json in [
            r#"{"machine-config":{"vcpu_count":2}, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
            r#"{"machine-config":{"vcpu_count":2 }, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
            "{\"machine-config\": {\n  \"vcpu_count\": 2\n}, \"boot-source\": {\"kernel_image_path\": \"k\"}, \"drives\": []}",
            r#"{"smt":true}"#,
            r#"{"machine-config":{}, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
        ] {
            let e = fc_error(json);
            assert!(
                e.problem
                    .to_string()
                    .contains("missing field `mem_size_mib`"),
                "{e}"
            );
            let at = json.find('}').unwrap();
            let src = Source {
                origin: "fc.json",
                text: json,
            };
            assert_eq!(e.position, Some(src.line_column(at)), "{json}\n{e}");
            let excerpt = e.excerpt.as_ref().unwrap();
            assert_eq!(&excerpt.text[excerpt.span.clone()], "}", "{json}\n{e}");
        }
    }

    #[test]
    fn firecracker_ids_of_any_length_give_names_that_fit() {
        let a = |n: usize| "a".repeat(n);
        let cut = |prefix: &str, n: usize, suffix: &str| format!("{prefix}{}~{suffix}", a(n));
        let qualified_taken = cut("net-", 59, "");
        for (devices, expected) in [
            // An id shared by a drive and an interface, one that fits as it is.
            (
                vec![("virtio-blk", "blk", a(62)), ("virtio-net", "net", a(62))],
                vec![a(62), cut("net-", 59, "")],
            ),
            // An id of 64 characters fits; one of 65 is cut to 63 and `~`.
            (
                vec![("virtio-blk", "blk", a(64)), ("virtio-net", "net", a(65))],
                vec![a(64), cut("", 63, "")],
            ),
            // Two long ids that are the same in their first 63 characters, and a vsock.
            (
                vec![
                    ("virtio-blk", "blk", a(100)),
                    ("virtio-blk", "blk", a(99)),
                    ("virtio-net", "net", a(100)),
                    ("virtio-vsock", "vsock", a(100)),
                ],
                vec![
                    cut("", 63, ""),
                    cut("blk-", 59, ""),
                    cut("net-", 59, ""),
                    cut("vsock-", 57, ""),
                ],
            ),
            // A qualified name that is another device's id gets a number, and still fits.
            (
                vec![
                    ("virtio-blk", "blk", a(62)),
                    ("virtio-blk", "blk", qualified_taken.clone()),
                    ("virtio-net", "net", a(62)),
                ],
                vec![a(62), qualified_taken.clone(), cut("net-", 57, "-2")],
            ),
        ] {
            let ids: Vec<(&str, &str, Option<&str>)> = devices
                .iter()
                .map(|(ty, short, id)| (*ty, *short, Some(id.as_str())))
                .collect();
            let names: Vec<String> = device_names(&ids).into_iter().flatten().collect();
            assert_eq!(names, expected);
            for name in &names {
                assert!(
                    name.chars().count() <= crate::spec::MAX_NAME_CHARS,
                    "{name}"
                );
            }
        }
    }

    /// The device names of the spec of the Firecracker file with `drives` and `interfaces`
    /// (JSON lists of objects).
    fn fc_names(drives: &str, interfaces: &str) -> Vec<String> {
        let json = format!(
            r#"{{"machine-config": {{"mem_size_mib": 64, "vcpu_count": 1}}, "drives": {drives},
                "network-interfaces": {interfaces}, "boot-source": {{"kernel_image_path": "k"}}}}"#
        );
        let spec = spec_of(&firecracker_spec("fc.json", &json, Arch::X86_64).unwrap());
        spec.devices.iter().map(|d| d.name.clone()).collect()
    }

    #[test]
    fn firecracker_repeated_drive_id_updates_the_drive_and_the_root_drive_comes_first() {
        let d = |id: &str, root: bool| {
            format!(r#"{{"drive_id": "{id}", "is_root_device": {root}, "path_on_host": "d"}}"#)
        };
        for (drives, expected) in [
            // The same id twice is one drive, where the first was.
            (vec![d("rootfs", true), d("rootfs", true)], vec!["rootfs"]),
            (
                vec![d("a", false), d("b", false), d("a", false)],
                vec!["a", "b"],
            ),
            // The root drive goes first, whatever its place in the list.
            (
                vec![d("data", false), d("rootfs", true)],
                vec!["rootfs", "data"],
            ),
            (
                vec![d("a", false), d("b", false), d("r", true), d("c", false)],
                vec!["r", "a", "b", "c"],
            ),
            // A drive made the root drive by an update trades places with the first drive.
            (
                vec![d("a", false), d("b", false), d("c", false), d("c", true)],
                vec!["c", "b", "a"],
            ),
            // The root drive updated as root stays first, one device.
            (
                vec![d("r", true), d("x", false), d("r", true)],
                vec!["r", "x"],
            ),
            // The root drive updated as not root stays in its place; a later root drive goes
            // before it.
            (
                vec![d("r", true), d("x", false), d("r", false), d("s", true)],
                vec!["s", "r", "x"],
            ),
            (
                vec![d("a", false), d("b", false), d("c", false), d("r", true)],
                vec!["r", "a", "b", "c"],
            ),
        ] {
            let list = format!("[{}]", drives.join(", "));
            assert_eq!(fc_names(&list, "[]"), expected, "{list}");
        }
        // A repeated drive id and an interface of the same id: still one drive.
        assert_eq!(
            fc_names(
                &format!("[{}, {}]", d("1", false), d("1", false)),
                r#"[{"iface_id": "1", "host_dev_name": "tap"}]"#
            ),
            ["1", "net-1"]
        );
    }

    #[test]
    fn firecracker_second_root_drive_is_refused_at_its_flag() {
        let json = "{\"drives\": [{\"drive_id\": \"r1\", \"is_root_device\": true, \"path_on_host\": \"d\"},\n  \
                    {\"drive_id\": \"r2\", \"is_root_device\": true, \"path_on_host\": \"d\"}], \"boot-source\": {\"kernel_image_path\": \"k\"}}";
        let e = fc_error(json);
        assert_eq!(e.field, "drives[1].is_root_device");
        assert_eq!(e.position, Some((2, 40)), "{e}");
        assert!(
            e.problem
                .to_string()
                .contains("`r1` (drives[0]) is the root drive already"),
            "{e}"
        );
        let e = fc_error(
            r#"{"drives": [{"drive_id": "r", "is_root_device": "yes"}], "boot-source": {"kernel_image_path": "k"}}"#,
        );
        assert_eq!(e.field, "drives[0].is_root_device");
        assert!(e.problem.to_string().contains("expected a boolean"), "{e}");
    }

    #[test]
    fn firecracker_repeated_interface_id_replaces_the_interface_and_moves_it_last() {
        let n = |id: &str| format!(r#"{{"iface_id": "{id}", "host_dev_name": "tap-{id}"}}"#);
        for (interfaces, expected) in [
            (vec![n("eth0"), n("eth0")], vec!["eth0"]),
            // The last interface takes the old one's place, the new one goes last.
            (vec![n("a"), n("b"), n("c"), n("a")], vec!["c", "b", "a"]),
            (vec![n("a"), n("b"), n("c"), n("b")], vec!["a", "c", "b"]),
            (vec![n("a"), n("b"), n("b"), n("a")], vec!["b", "a"]),
        ] {
            let list = format!("[{}]", interfaces.join(", "));
            assert_eq!(fc_names("[]", &list), expected, "{list}");
        }
    }

    /// As Firecracker: a guest MAC address another interface has is refused (in any case of
    /// its hex digits), one the interface had before it was replaced is free, and a value that
    /// is not a MAC address is refused.
    #[test]
    fn firecracker_guest_mac_in_use_by_another_interface_is_refused() {
        let n = |id: &str, mac: &str| {
            format!(r#"{{"iface_id": "{id}", "host_dev_name": "tap-{id}", "guest_mac": "{mac}"}}"#)
        };
        let config = |interfaces: &[String]| {
            format!(
                r#"{{"machine-config": {{"mem_size_mib": 64, "vcpu_count": 1}}, "network-interfaces": [{}], "boot-source": {{"kernel_image_path": "k"}}, "drives": []}}"#,
                interfaces.join(", ")
            )
        };
        let e = fc_error(&config(&[
            n("eth0", "AA:FC:00:00:00:01"),
            n("eth1", "aa:fc:00:00:00:01"),
        ]));
        assert_eq!(e.field, "network-interfaces[1].guest_mac");
        assert_eq!(
            e.problem.to_string(),
            "`eth1`'s guest MAC address aa:fc:00:00:00:01 is in use by `eth0` (Firecracker \
             refuses it)"
        );
        // The same interface again takes its own address back.
        let same = config(&[
            n("eth0", "AA:FC:00:00:00:01"),
            n("eth0", "AA:FC:00:00:00:01"),
        ]);
        assert!(firecracker_spec("fc.json", &same, Arch::X86_64).is_ok());
        let moved = config(&[
            n("eth0", "AA:FC:00:00:00:01"),
            n("eth0", "AA:FC:00:00:00:02"),
            n("eth1", "AA:FC:00:00:00:01"),
        ]);
        assert!(firecracker_spec("fc.json", &moved, Arch::X86_64).is_ok());
        for bad in [
            "AA:FC:00:00:00",
            "AA:FC:00:00:00:0G",
            "AAFC00000001",
            "AA:FC:00:00:00:001",
        ] {
            let e = fc_error(&config(&[n("eth0", bad)]));
            assert_eq!(e.field, "network-interfaces[0].guest_mac", "{bad}");
            assert_eq!(
                e.problem.to_string(),
                format!(
                    "`{bad}` is not a MAC address (six bytes joined by `:`, each two hex digits \
                     or `+` and one)"
                )
            );
        }
    }

    #[test]
    fn firecracker_file_names_with_other_white_space_give_a_name() {
        for (origin, name) in [
            ("/tmp/vm\u{a0}prod.json", "vm prod"),
            ("vm\u{3000}a.json", "vm a"),
            ("\u{2003}vm.json", "vm"),
        ] {
            assert_eq!(stem(origin), name, "{origin:?}");
            let toml =
                firecracker_spec(origin, r#"{"machine-config": {"mem_size_mib": 64, "vcpu_count": 1}, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#, Arch::X86_64).unwrap();
            assert_eq!(spec_of(&toml).name, name);
        }
    }

    const BOOT: &str = r#""boot-source": {"kernel_image_path": "vmlinux"}"#;

    #[test]
    fn firecracker_required_fields_missing_or_null_are_refused() {
        for (json, field, expected) in [
            // machine-config alone: vcpu_count and mem_size_mib are required.
            (
                r#"{"mem_size_mib": 64}"#.to_owned(),
                "",
                "missing field `vcpu_count`",
            ),
            (
                r#"{"vcpu_count": null, "mem_size_mib": 64}"#.to_owned(),
                "vcpu_count",
                "invalid type: null, expected a whole number",
            ),
            (
                r#"{"vcpu_count": 1}"#.to_owned(),
                "",
                "missing field `mem_size_mib`",
            ),
            (
                r#"{"vcpu_count": 1, "mem_size_mib": null}"#.to_owned(),
                "mem_size_mib",
                "invalid type: null",
            ),
            (
                r#"{"vcpu_count": 1, "mem_size_mib": 64, "smt": null}"#.to_owned(),
                "smt",
                "invalid type: null",
            ),
            (
                r#"{"vcpu_count": 1, "mem_size_mib": 64, "track_dirty_pages": null}"#.to_owned(),
                "track_dirty_pages",
                "invalid type: null",
            ),
            // A whole configuration: boot-source and drives are required.
            (
                r#"{"drives": [], "machine-config": {"vcpu_count": 1, "mem_size_mib": 64}}"#
                    .to_owned(),
                "",
                "missing field `boot-source`",
            ),
            (
                r#"{"boot-source": null, "drives": []}"#.to_owned(),
                "boot-source",
                "invalid type: null, expected a boot-source object",
            ),
            (
                r#"{"boot-source": {}, "drives": []}"#.to_owned(),
                "boot-source",
                "missing field `kernel_image_path`",
            ),
            (
                r#"{"boot-source": {"kernel_image_path": "k", "kernel": 1}, "drives": []}"#
                    .to_owned(),
                "boot-source.kernel",
                "unknown field `kernel`",
            ),
            (format!("{{{BOOT}}}"), "", "missing field `drives`"),
            (
                format!(r#"{{{BOOT}, "drives": null}}"#),
                "drives",
                "invalid type: null",
            ),
            (
                format!(r#"{{{BOOT}, "drives": [], "machine-config": {{"mem_size_mib": 64}}}}"#),
                "machine-config",
                "missing field `vcpu_count`",
            ),
            // A balloon: amount_mib and deflate_on_oom are required.
            (
                format!(r#"{{{BOOT}, "drives": [], "balloon": {{"amount_mib": 0}}}}"#),
                "balloon",
                "missing field `deflate_on_oom`",
            ),
            (
                format!(r#"{{{BOOT}, "drives": [], "balloon": {{"deflate_on_oom": true}}}}"#),
                "balloon",
                "missing field `amount_mib`",
            ),
            (
                format!(
                    r#"{{{BOOT}, "drives": [], "balloon": {{"amount_mib": null, "deflate_on_oom": true}}}}"#
                ),
                "balloon.amount_mib",
                "invalid type: null",
            ),
            (
                format!(
                    r#"{{{BOOT}, "drives": [], "balloon": {{"amount_mib": 0, "deflate_on_oom": null}}}}"#
                ),
                "balloon.deflate_on_oom",
                "invalid type: null",
            ),
            (
                format!(
                    r#"{{{BOOT}, "drives": [], "balloon": {{"amount_mib": 0, "deflate_on_oom": true, "size": 1}}}}"#
                ),
                "balloon.size",
                "unknown field `size`",
            ),
        ] {
            assert_refused_at(&json, field, expected);
        }
    }

    /// What Firecracker takes: machine-config left out or `null` (its defaults, 128 MiB), and
    /// a balloon with its optional fields.
    #[test]
    fn firecracker_optional_sections_left_out_or_null_are_taken() {
        for json in [
            format!(r#"{{{BOOT}, "drives": []}}"#),
            format!(r#"{{{BOOT}, "drives": [], "machine-config": null}}"#),
            format!(
                r#"{{{BOOT}, "drives": [], "balloon": {{"amount_mib": 1, "deflate_on_oom": false,
                    "stats_polling_interval_s": 1, "free_page_hinting": true,
                    "free_page_reporting": false}}}}"#
            ),
            r#"{"boot-source": {"kernel_image_path": "k", "initrd_path": null,
                "boot_args": "console=ttyS0"}, "drives": []}"#
                .to_owned(),
        ] {
            let toml = firecracker_spec("fc.json", &json, Arch::X86_64)
                .unwrap_or_else(|e| panic!("{json}: {e}"));
            assert!(toml.contains("size = \"128MiB\""), "{toml}");
        }
    }

    /// As Firecracker (1.14 on): a balloon and an initrd go with huge pages; a memory size of
    /// 0, or one that is not a whole number of huge pages, is refused at `mem_size_mib`.
    #[test]
    fn firecracker_memory_size_is_checked_at_its_field_and_huge_pages_take_a_balloon() {
        for (json, field, expected) in [
            (
                r#"{"vcpu_count": 1, "mem_size_mib": 0}"#.to_owned(),
                "mem_size_mib",
                "0 MiB of guest memory (Firecracker refuses it)",
            ),
            (
                format!(
                    r#"{{{BOOT}, "drives": [], "machine-config": {{"vcpu_count": 1, "mem_size_mib": 65, "huge_pages": "2M"}}}}"#
                ),
                "machine-config.mem_size_mib",
                "65 MiB is not a multiple of the 2 MiB huge page (Firecracker refuses it)",
            ),
            (
                r#"{"vcpu_count": 1, "mem_size_mib": 17592186044416}"#.to_owned(),
                "mem_size_mib",
                "17592186044416 MiB is more than 2^64 bytes",
            ),
        ] {
            let e = fc_error(&json);
            assert_eq!(e.field, field, "{json}: {e}");
            // At the value after the key.
            let at = json.find(r#""mem_size_mib": "#).unwrap() + r#""mem_size_mib": "#.len();
            let src = Source {
                origin: "fc.json",
                text: &json,
            };
            assert_eq!(e.position, Some(src.line_column(at)), "{json}: {e}");
            assert_eq!(e.problem.to_string(), expected, "{json}: {e}");
        }
        for json in [
            r#"{"boot-source": {"kernel_image_path": "k", "initrd_path": "initrd.img"},
                "drives": [], "balloon": {"amount_mib": 64, "deflate_on_oom": true},
                "machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "huge_pages": "2M"}}"#
                .to_owned(),
            r#"{"vcpu_count": 1, "mem_size_mib": 65, "huge_pages": "None"}"#.to_owned(),
        ] {
            firecracker_spec("fc.json", &json, Arch::X86_64)
                .unwrap_or_else(|e| panic!("{json}: {e}"));
        }
    }

    /// Firecracker takes any string as a device's id; ids that are not names (empty, white
    /// space at an end or other than the space inside, control or format characters) are
    /// named by the id with those characters written as `\u{..}`, unique among the names.
    #[test]
    fn firecracker_ids_that_are_not_names_are_named_by_their_escaped_text() {
        let drives = r#"[{"drive_id": "", "is_root_device": false, "path_on_host": "d"}, {"drive_id": " a", "is_root_device": false, "path_on_host": "d"}, {"drive_id": "a ", "is_root_device": false, "path_on_host": "d"},
            {"drive_id": "a\tb", "is_root_device": false, "path_on_host": "d"}, {"drive_id": "a\u001bb", "is_root_device": false, "path_on_host": "d"}, {"drive_id": "a\u200bb", "is_root_device": false, "path_on_host": "d"},
            {"drive_id": "a\u00a0b", "is_root_device": false, "path_on_host": "d"}, {"drive_id": "\n", "is_root_device": false, "path_on_host": "d"}]"#;
        let interfaces = r#"[{"iface_id": "a\\u{9}b", "host_dev_name": "tap"}, {"iface_id": "a\tb", "host_dev_name": "tap"}]"#;
        let expected = [
            "blk-",
            r"\u{20}a",
            r"a\u{20}",
            r"blk-a\u{9}b",
            r"a\u{1b}b",
            r"a\u{200b}b",
            r"a\u{a0}b",
            r"\u{a}",
            r"a\u{9}b",
            r"net-a\u{9}b",
        ];
        assert_eq!(fc_names(drives, interfaces), expected);
    }

    /// As Firecracker's device structs: a drive needs `drive_id` and `is_root_device`, an
    /// interface `iface_id` and `host_dev_name`, a vsock `guest_cid` and `uds_path` (its
    /// `vsock_id` may be left out); none of them, nor `entropy`, takes an unknown field.
    #[test]
    fn firecracker_device_fields_firecracker_requires_are_required() {
        let with = |key: &str, value: &str| {
            format!(r#"{{{BOOT}, "drives": [], "{key}": {value}}}"#).replacen(
                r#""drives": [], "drives""#,
                r#""drives""#,
                1,
            )
        };
        for (json, field, expected) in [
            (
                with(
                    "drives",
                    r#"[{"is_root_device": false, "path_on_host": "d"}]"#,
                ),
                "drives[0]",
                "missing field `drive_id`",
            ),
            (
                with(
                    "drives",
                    r#"[{"drive_id": null, "is_root_device": false, "path_on_host": "d"}]"#,
                ),
                "drives[0].drive_id",
                "invalid type: null, expected a string",
            ),
            (
                with("drives", r#"[{"drive_id": "a"}]"#),
                "drives[0]",
                "missing field `is_root_device`",
            ),
            (
                with("drives", r#"[{"drive_id": "a", "is_root_device": null}]"#),
                "drives[0].is_root_device",
                "invalid type: null, expected a boolean",
            ),
            (
                with(
                    "drives",
                    r#"[{"drive_id": "a", "is_root_device": false, "size": 1}]"#,
                ),
                "drives[0]",
                "unknown field `size`",
            ),
            (
                with(
                    "drives",
                    r#"[{"iface_id": "a", "is_root_device": false, "path_on_host": "d"}]"#,
                ),
                "drives[0]",
                "unknown field `iface_id`",
            ),
            (
                with("network-interfaces", r#"[{"iface_id": "eth0"}]"#),
                "network-interfaces[0]",
                "missing field `host_dev_name`",
            ),
            (
                with("network-interfaces", r#"[{"host_dev_name": "tap0"}]"#),
                "network-interfaces[0]",
                "missing field `iface_id`",
            ),
            (
                with(
                    "network-interfaces",
                    r#"[{"iface_id": "eth0", "host_dev_name": null}]"#,
                ),
                "network-interfaces[0].host_dev_name",
                "invalid type: null, expected a string",
            ),
            (
                with(
                    "network-interfaces",
                    r#"[{"iface_id": "eth0", "host_dev_name": "tap0", "mac": 1}]"#,
                ),
                "network-interfaces[0]",
                "unknown field `mac`",
            ),
            (
                with("vsock", r#"{"vsock_id": "v", "uds_path": "/v.sock"}"#),
                "vsock",
                "missing field `guest_cid`",
            ),
            (
                with("vsock", r#"{"guest_cid": 3}"#),
                "vsock",
                "missing field `uds_path`",
            ),
            (
                with(
                    "vsock",
                    r#"{"guest_cid": 4294967296, "uds_path": "/v.sock"}"#,
                ),
                "vsock.guest_cid",
                "expected a whole number from 0 to 4294967295",
            ),
            (
                with(
                    "vsock",
                    r#"{"guest_cid": 3, "uds_path": "/v.sock", "cid": 3}"#,
                ),
                "vsock",
                "unknown field `cid`",
            ),
            (
                with("entropy", r#"{"rate": 1}"#),
                "entropy.rate",
                "unknown field `rate`",
            ),
        ] {
            assert_refused_at(&json, field, expected);
        }
        for json in [
            with("vsock", r#"{"guest_cid": 3, "uds_path": "/v.sock"}"#),
            with(
                "vsock",
                r#"{"vsock_id": null, "guest_cid": 3, "uds_path": "/v.sock"}"#,
            ),
            with("entropy", r#"{"rate_limiter": null}"#),
        ] {
            firecracker_spec("fc.json", &json, Arch::X86_64)
                .unwrap_or_else(|e| panic!("{json}: {e}"));
        }
    }

    /// As Firecracker: `cpu_template` is one of its static templates of the architecture
    /// (x86_64's `C3`, `T2`, `T2S`, `T2CL`, `T2A`, aarch64's `V1N1`, or `None`) or `null`.
    #[test]
    fn firecracker_cpu_template_is_one_firecracker_knows() {
        let config =
            |t: &str| format!(r#"{{"vcpu_count": 1, "mem_size_mib": 64, "cpu_template": {t}}}"#);
        for t in [
            "\"C3\"", "\"T2\"", "\"T2S\"", "\"T2CL\"", "\"T2A\"", "\"None\"", "null",
        ] {
            firecracker_spec("fc.json", &config(t), Arch::X86_64)
                .unwrap_or_else(|e| panic!("{t}: {e}"));
        }
        for t in ["\"V1N1\"", "\"None\"", "null"] {
            firecracker_spec("fc.json", &config(t), Arch::Aarch64)
                .unwrap_or_else(|e| panic!("{t}: {e}"));
        }
        for (t, expected) in [
            ("\"t2\"", "unknown variant `t2`"),
            ("\"M5\"", "unknown variant `M5`"),
            (
                "5",
                "invalid type: integer `5`, expected a CPU template name",
            ),
        ] {
            let e = fc_error(&config(t));
            assert_eq!(e.field, "cpu_template", "{t}: {e}");
            assert!(e.problem.to_string().contains(expected), "{t}: {e}");
        }
    }
}
