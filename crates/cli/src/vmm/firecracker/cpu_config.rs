//! Firecracker's `cpu-config`: a custom CPU template, written in the file or in a file of its
//! own whose path is given. It adds no device or memory; it is checked as Firecracker 1.16
//! reads it (`CustomCpuTemplateOrPath`, the `CustomCpuTemplate` of the architecture it is
//! built for), without reading any other file: a path is held to what every host refuses
//! (empty, a NUL), and the template it names is not read.

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{FcObject, fc_path_not_empty, fc_path_without_nul};

/// What a `cpu-config` is: the path of a template file (checked as it is read) or a template
/// object, read for the conversion's architecture afterwards.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FcCpuConfigShape {
    Path,
    Template,
}

impl<'de> Deserialize<'de> for FcCpuConfigShape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FcCpuConfigShape;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the path of a CPU template file (a string) or a CPU template object")
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<FcCpuConfigShape, E> {
                fc_path_not_empty(v)
                    .and_then(|()| fc_path_without_nul(v))
                    .map_err(E::custom)?;
                Ok(FcCpuConfigShape::Path)
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<FcCpuConfigShape, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(FcCpuConfigShape::Template)
            }
        }
        d.deserialize_any(V)
    }
}

/// Firecracker's x86_64 `CustomCpuTemplate`: three lists, each may be left out (not `null`),
/// and no other field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an x86_64 CPU template object")]
pub(super) struct FcX86Template {
    #[serde(default)]
    #[allow(dead_code)]
    kvm_capabilities: Vec<FcKvmCapability>,
    #[serde(default)]
    #[allow(dead_code)]
    cpuid_modifiers: Vec<super::Object<FcCpuidLeafModifier>>,
    #[serde(default)]
    #[allow(dead_code)]
    msr_modifiers: Vec<super::Object<FcMsrModifier>>,
}

impl FcObject for FcX86Template {
    const WHAT: &'static str = "an x86_64 CPU template object";
}

/// Firecracker's aarch64 `CustomCpuTemplate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an aarch64 CPU template object")]
pub(super) struct FcArmTemplate {
    #[serde(default)]
    #[allow(dead_code)]
    kvm_capabilities: Vec<FcKvmCapability>,
    #[serde(default)]
    #[allow(dead_code)]
    vcpu_features: Vec<super::Object<FcVcpuFeatures>>,
    #[serde(default)]
    #[allow(dead_code)]
    reg_modifiers: Vec<super::Object<FcArmRegModifier>>,
}

impl FcObject for FcArmTemplate {
    const WHAT: &'static str = "an aarch64 CPU template object";
}

/// Firecracker's x86_64 `CpuidLeafModifier` (it takes fields it does not know).
#[derive(Debug, Deserialize)]
#[serde(expecting = "a CPUID leaf modifier object")]
struct FcCpuidLeafModifier {
    #[allow(dead_code)]
    leaf: FcPrefixed<32>,
    #[allow(dead_code)]
    subleaf: FcPrefixed<32>,
    #[allow(dead_code)]
    flags: FcU32,
    #[allow(dead_code)]
    modifiers: Vec<super::Object<FcCpuidRegisterModifier>>,
}

impl FcObject for FcCpuidLeafModifier {
    const WHAT: &'static str = "a CPUID leaf modifier object";
}

/// Firecracker's x86_64 `CpuidRegisterModifier`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a CPUID register modifier object")]
struct FcCpuidRegisterModifier {
    #[allow(dead_code)]
    register: FcCpuidRegister,
    #[allow(dead_code)]
    bitmap: FcBitmap<32>,
}

impl FcObject for FcCpuidRegisterModifier {
    const WHAT: &'static str = "a CPUID register modifier object";
}

/// Firecracker's x86_64 `RegisterModifier` (an MSR).
#[derive(Debug, Deserialize)]
#[serde(expecting = "an MSR modifier object")]
struct FcMsrModifier {
    #[allow(dead_code)]
    addr: FcPrefixed<32>,
    #[allow(dead_code)]
    bitmap: FcBitmap<64>,
}

impl FcObject for FcMsrModifier {
    const WHAT: &'static str = "an MSR modifier object";
}

/// Firecracker's aarch64 `VcpuFeatures`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a vCPU features object")]
struct FcVcpuFeatures {
    #[allow(dead_code)]
    index: FcU32,
    #[allow(dead_code)]
    bitmap: FcBitmap<32>,
}

impl FcObject for FcVcpuFeatures {
    const WHAT: &'static str = "a vCPU features object";
}

/// Firecracker's aarch64 `RegisterModifier`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a register modifier object")]
struct FcArmRegModifier {
    #[allow(dead_code)]
    addr: FcPrefixed<64>,
    #[allow(dead_code)]
    bitmap: FcBitmap<128>,
}

impl FcObject for FcArmRegModifier {
    const WHAT: &'static str = "a register modifier object";
}

/// Reads a string and holds it to `check`, whose refusal is the error.
fn fc_checked_str<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
    check: &dyn Fn(&str) -> std::result::Result<(), String>,
) -> std::result::Result<(), D::Error> {
    struct V<'c> {
        what: &'static str,
        check: &'c dyn Fn(&str) -> std::result::Result<(), String>,
    }
    impl Visitor<'_> for V<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.what)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<(), E> {
            (self.check)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(V { what, check })
}

/// A `kvm_capabilities` entry: a KVM capability number (`u32`, as Rust's `parse` reads it) to
/// require, or `!` and one to no longer require.
#[derive(Debug)]
struct FcKvmCapability;

impl<'de> Deserialize<'de> for FcKvmCapability {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        fc_checked_str(d, "a KVM capability string", &|v| {
            v.strip_prefix('!')
                .unwrap_or(v)
                .parse::<u32>()
                .map(drop)
                .map_err(|e| {
                    format!(
                        "`{}` is not a KVM capability (a number to 4294967295, or `!` and one): \
                         {e}",
                        crate::render::escape(v)
                    )
                })
        })
        .map(|()| FcKvmCapability)
    }
}

/// A number of `BITS` bits written as a string with a `0x` (hexadecimal) or `0b` (binary)
/// prefix, as Rust's `from_str_radix` reads the rest (Firecracker's `deserialize_from_str_*`).
#[derive(Debug)]
struct FcPrefixed<const BITS: u32>;

impl<'de, const BITS: u32> Deserialize<'de> for FcPrefixed<BITS> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        fc_checked_str(d, "a number string", &|v| {
            let parsed = if let Some(s) = v.strip_prefix("0b") {
                u128::from_str_radix(s, 2)
            } else if let Some(s) = v.strip_prefix("0x") {
                u128::from_str_radix(s, 16)
            } else {
                return Err(format!(
                    "`{}` has no number prefix (`0x` for a hexadecimal number, `0b` for a \
                     binary one)",
                    crate::render::escape(v)
                ));
            };
            let fits = |n: u128| BITS >= 128 || n >> BITS == 0;
            match parsed {
                Ok(n) if fits(n) => Ok(()),
                Ok(_) => Err(format!(
                    "`{}` is not a number of {BITS} bits (it is too large)",
                    crate::render::escape(v)
                )),
                Err(e) => Err(format!(
                    "`{}` is not a number of {BITS} bits: {e}",
                    crate::render::escape(v)
                )),
            }
        })
        .map(|()| FcPrefixed)
    }
}

/// A bitmap of a register of `BITS` bits (Firecracker's `RegisterValueFilter`): an optional
/// `0b`, then `0`, `1` (bits set to that) and `x` (bits kept), at most `BITS` of them, read
/// from the end, with `_` anywhere among them until `BITS` are read.
#[derive(Debug)]
struct FcBitmap<const BITS: u32>;

impl<'de, const BITS: u32> Deserialize<'de> for FcBitmap<BITS> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        fc_checked_str(d, "a bitmap string", &|v| {
            let digits = v.strip_prefix("0b").unwrap_or(v);
            let mut read = 0u32;
            for c in digits.bytes().rev() {
                if read == BITS {
                    return Err(format!(
                        "`{}` is not a bitmap of {BITS} bits: it is longer",
                        crate::render::escape(v)
                    ));
                }
                match c {
                    b'_' => continue,
                    b'x' | b'0' | b'1' => read += 1,
                    _ => {
                        return Err(format!(
                            "`{}` is not a bitmap: each bit is `0`, `1` or `x` (`_` between \
                             them)",
                            crate::render::escape(v)
                        ));
                    }
                }
            }
            Ok(())
        })
        .map(|()| FcBitmap)
    }
}

/// A CPUID register: `eax`, `ebx`, `ecx` or `edx`, as written.
#[derive(Debug)]
struct FcCpuidRegister;

impl<'de> Deserialize<'de> for FcCpuidRegister {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        fc_checked_str(d, "a CPUID register name", &|v| {
            if ["eax", "ebx", "ecx", "edx"].contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "`{}` is not a CPUID register (eax, ebx, ecx or edx)",
                    crate::render::escape(v)
                ))
            }
        })
        .map(|()| FcCpuidRegister)
    }
}

/// A JSON whole number to 2^32 - 1.
#[derive(Debug)]
struct FcU32;

impl<'de> Deserialize<'de> for FcU32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FcU32;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number to 4294967295")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<FcU32, E> {
                u32::try_from(v)
                    .map(|_| FcU32)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
        }
        d.deserialize_u64(V)
    }
}
