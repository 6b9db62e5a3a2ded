//! Firecracker's `logger` (its `LoggerConfig`), `metrics` (`MetricsConfig`) and `cpu-config`
//! (a custom CPU template, or the path of a file that holds one): the command refuses, at the
//! field, what Firecracker refuses when it reads and applies the file (a wrong type, a field
//! `logger` or a template does not know, a log level or number it does not read, a path that
//! names no file), and plans what it takes as without them: they add no device and no memory.

use std::process::Output;

mod common;

use common::{binary, scratch};

/// Runs `memvisor plan --json --from firecracker --arch ARCH` on a configuration whose
/// `section` is `value` (written on line 2), or that has none for `None`.
fn plan(name: &str, arch: &str, section: &str, value: Option<&str>) -> Output {
    let path = scratch(name);
    let value = value.map_or(String::new(), |v| format!(r#","{section}": {v}"#));
    std::fs::write(
        &path,
        format!("{{\"boot-source\": {{\"kernel_image_path\": \"k\"}}, \"drives\": []\n{value}}}"),
    )
    .unwrap();
    binary(&[
        "plan",
        "--json",
        "--arch",
        arch,
        "--from",
        "firecracker",
        path.to_str().unwrap(),
    ])
}

#[test]
fn firecracker_logger_metrics_and_cpu_config_it_takes_are_planned_as_without_them() {
    // (arch, section, value)
    let cases: &[(&str, &str, &str)] = &[
        ("x86_64", "logger", "null"),
        ("x86_64", "logger", "{}"),
        (
            "x86_64",
            "logger",
            r#"{"log_path": "/tmp/fc.log", "level": "Warning", "show_level": true,
                "show_log_origin": false, "module": "vmm::devices"}"#,
        ),
        ("x86_64", "logger", r#"{"level": "tRaCe"}"#),
        (
            "x86_64",
            "logger",
            r#"{"log_path": null, "level": null, "show_level": null, "show_log_origin": null,
                "module": null}"#,
        ),
        ("x86_64", "metrics", "null"),
        (
            "x86_64",
            "metrics",
            r#"{"metrics_path": "/tmp/fc.metrics"}"#,
        ),
        // Firecracker 1.16's MetricsConfig takes fields it does not know.
        (
            "x86_64",
            "metrics",
            r#"{"metrics_path": "m", "emit_id": "later", "x": [1]}"#,
        ),
        ("x86_64", "cpu-config", "null"),
        ("x86_64", "cpu-config", r#""/etc/fc/template.json""#),
        ("x86_64", "cpu-config", "{}"),
        (
            "x86_64",
            "cpu-config",
            r#"{"kvm_capabilities": ["171", "!172", "+3"],
                "cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0b0", "flags": 0,
                    "modifiers": [{"register": "eax", "bitmap": "0bx00100xxx1xxxxxxxxxxxxxxxxxxxxx"},
                                  {"register": "edx", "bitmap": "1_0_x"}]}],
                "msr_modifiers": [{"addr": "0x10a", "bitmap": "0b0000000000000000000000000000000000000000000000000000000000000000"}]}"#,
        ),
        (
            "aarch64",
            "cpu-config",
            r#"{"kvm_capabilities": ["!170"],
                "vcpu_features": [{"index": 0, "bitmap": "0b1100000"}],
                "reg_modifiers": [{"addr": "0x603000000013c020", "bitmap": "0bxxxxxxxxxxxx0000xxxxxxxxxxxxxxxx"}]}"#,
        ),
        ("x86_64", "logger", r#"{"level": "off"}"#),
        ("x86_64", "logger", r#"{"level": "DEBUG"}"#),
        ("x86_64", "logger", r#"{"level": "info"}"#),
        ("x86_64", "logger", r#"{"level": "WARN"}"#),
        ("x86_64", "logger", r#"{"level": "Error"}"#),
        // Each number and bitmap at its widest.
        (
            "x86_64",
            "cpu-config",
            r#"{"kvm_capabilities": ["4294967295", "!4294967295"],
                "cpuid_modifiers": [{"leaf": "0xffffffff", "subleaf": "0b11111111111111111111111111111111", "flags": 4294967295, "modifiers": []}],
                "msr_modifiers": [{"addr": "0xffffffff", "bitmap": "0bxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}]}"#,
        ),
        (
            "aarch64",
            "cpu-config",
            r#"{"vcpu_features": [{"index": 4294967295, "bitmap": "0b11111111111111111111111111111111"}],
                "reg_modifiers": [{"addr": "0xffffffffffffffff", "bitmap": "0bxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx1"}]}"#,
        ),
    ];
    for &(arch, section, value) in cases {
        let without = plan("fc-sections-taken.json", arch, section, None);
        assert_eq!(without.status.code(), Some(0));
        let without: serde_json::Value = serde_json::from_slice(&without.stdout).unwrap();
        let out = plan("fc-sections-taken.json", arch, section, Some(value));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{arch} {section}: {value}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc, without, "{arch} {section}: {value}");
    }
}

#[test]
fn firecracker_logger_metrics_and_cpu_config_it_refuses_are_refused_at_the_field() {
    // (arch, section, value, the field, the text underlined, words of the message)
    let cases: &[(&str, &str, &str, &str, &str, &str)] = &[
        ("x86_64", "logger", "[]", "logger", "[]", "invalid type"),
        ("x86_64", "logger", "true", "logger", "true", "invalid type"),
        (
            "x86_64",
            "logger",
            r#"{"log_path": 1}"#,
            "logger.log_path",
            "1",
            "invalid type",
        ),
        (
            "x86_64",
            "logger",
            r#"{"log_path": ""}"#,
            "logger.log_path",
            r#""""#,
            "empty path",
        ),
        (
            "x86_64",
            "logger",
            r#"{"log_path": "a\u0000b"}"#,
            "logger.log_path",
            r#""a\u0000b""#,
            "NUL",
        ),
        (
            "x86_64",
            "logger",
            r#"{"level": "verbose"}"#,
            "logger.level",
            r#""verbose""#,
            "log level",
        ),
        (
            "x86_64",
            "logger",
            r#"{"level": 3}"#,
            "logger.level",
            "3",
            "invalid type",
        ),
        (
            "x86_64",
            "logger",
            r#"{"show_level": "yes"}"#,
            "logger.show_level",
            r#""yes""#,
            "invalid type",
        ),
        (
            "x86_64",
            "logger",
            r#"{"show_log_origin": 0}"#,
            "logger.show_log_origin",
            "0",
            "invalid type",
        ),
        (
            "x86_64",
            "logger",
            r#"{"module": ["vmm"]}"#,
            "logger.module",
            r#"["vmm"]"#,
            "invalid type",
        ),
        (
            "x86_64",
            "logger",
            r#"{"level": "Info", "log_level": "Info"}"#,
            "logger.log_level",
            r#""log_level""#,
            "unknown field `log_level`",
        ),
        (
            "x86_64",
            "logger",
            r#"{"level": "Info", "level": "Off"}"#,
            "logger",
            // The second key is underlined.
            r#""level": "Off""#,
            "duplicate field `level`",
        ),
        (
            "x86_64",
            "metrics",
            r#""m""#,
            "metrics",
            r#""m""#,
            "invalid type",
        ),
        ("x86_64", "metrics", "{}", "metrics", "}", "metrics_path"),
        (
            "x86_64",
            "metrics",
            r#"{"metrics_path": null}"#,
            "metrics.metrics_path",
            "null",
            "invalid type",
        ),
        (
            "x86_64",
            "metrics",
            r#"{"metrics_path": ""}"#,
            "metrics.metrics_path",
            r#""""#,
            "empty path",
        ),
        (
            "x86_64",
            "cpu-config",
            "7",
            "cpu-config",
            "7",
            "invalid type",
        ),
        (
            "x86_64",
            "cpu-config",
            r#""""#,
            "cpu-config",
            r#""""#,
            "empty path",
        ),
        (
            "x86_64",
            "cpu-config",
            r#"{"reg_modifiers": []}"#,
            "cpu-config.reg_modifiers",
            r#""reg_modifiers""#,
            "unknown field `reg_modifiers`",
        ),
        (
            "aarch64",
            "cpu-config",
            r#"{"cpuid_modifiers": []}"#,
            "cpu-config.cpuid_modifiers",
            r#""cpuid_modifiers""#,
            "unknown field `cpuid_modifiers`",
        ),
        (
            "x86_64",
            "cpu-config",
            r#"{"kvm_capabilities": null}"#,
            "cpu-config.kvm_capabilities",
            "null",
            "invalid type",
        ),
        (
            "x86_64",
            "cpu-config",
            r#"{"kvm_capabilities": ["!x"]}"#,
            "cpu-config.kvm_capabilities[0]",
            r#""!x""#,
            "KVM capability",
        ),
        (
            "x86_64",
            "cpu-config",
            r#"{"kvm_capabilities": [171]}"#,
            "cpu-config.kvm_capabilities[0]",
            "171",
            "invalid type",
        ),
        (
            "x86_64",
            "cpu-config",
            r#"{"cpuid_modifiers": [{"leaf": "1", "subleaf": "0x0", "flags": 0, "modifiers": []}]}"#,
            "cpu-config.cpuid_modifiers[0].leaf",
            r#""1""#,
            "0x",
        ),
        (
            "x86_64",
            "cpu-config",
            r#"{"cpuid_modifiers": [{"leaf": "0x100000000", "subleaf": "0x0", "flags": 0, "modifiers": []}]}"#,
            "cpu-config.cpuid_modifiers[0].leaf",
            r#""0x100000000""#,
            "number",
        ),
        (
            "x86_64",
            "cpu-config",
            r#"{"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": -1, "modifiers": []}]}"#,
            "cpu-config.cpuid_modifiers[0].flags",
            "-1",
            "invalid",
        ),
        (
            "x86_64",
            "cpu-config",
            r#"{"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0}]}"#,
            "cpu-config.cpuid_modifiers[0]",
            "}",
            "modifiers",
        ),
        (
            "x86_64",
            "cpu-config",
            r#"{"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0, "modifiers": [{"register": "EAX", "bitmap": "0"}]}]}"#,
            "cpu-config.cpuid_modifiers[0].modifiers[0].register",
            r#""EAX""#,
            "CPUID register",
        ),
        (
            "x86_64",
            "cpu-config",
            r#"{"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0, "modifiers": [{"register": "eax", "bitmap": "0b2"}]}]}"#,
            "cpu-config.cpuid_modifiers[0].modifiers[0].bitmap",
            r#""0b2""#,
            "bitmap",
        ),
        (
            "x86_64",
            "cpu-config",
            r#"{"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0, "modifiers": [{"register": "eax", "bitmap": "0b000000000000000000000000000000000"}]}]}"#,
            "cpu-config.cpuid_modifiers[0].modifiers[0].bitmap",
            r#""0b000000000000000000000000000000000""#,
            "bitmap of 32 bits",
        ),
        (
            "x86_64",
            "cpu-config",
            r#"{"msr_modifiers": [{"addr": "0x10a"}]}"#,
            "cpu-config.msr_modifiers[0]",
            "}",
            "bitmap",
        ),
        (
            "aarch64",
            "cpu-config",
            r#"{"vcpu_features": [{"index": "0", "bitmap": "0"}]}"#,
            "cpu-config.vcpu_features[0].index",
            r#""0""#,
            "invalid type",
        ),
        (
            "aarch64",
            "cpu-config",
            r#"{"reg_modifiers": [{"addr": "0x10000000000000000", "bitmap": "0"}]}"#,
            "cpu-config.reg_modifiers[0].addr",
            r#""0x10000000000000000""#,
            "number",
        ),
        (
            "x86_64",
            "metrics",
            r#"{"metrics_path": "m\u0000"}"#,
            "metrics.metrics_path",
            r#""m\u0000""#,
            "NUL",
        ),
        (
            "x86_64",
            "cpu-config",
            r#""t\u0000.json""#,
            "cpu-config",
            r#""t\u0000.json""#,
            "NUL",
        ),
        (
            "x86_64",
            "cpu-config",
            r#"{"kvm_capabilities": ["!4294967296"]}"#,
            "cpu-config.kvm_capabilities[0]",
            r#""!4294967296""#,
            "KVM capability",
        ),
        (
            "x86_64",
            "cpu-config",
            r#"{"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 4294967296, "modifiers": []}]}"#,
            "cpu-config.cpuid_modifiers[0].flags",
            "4294967296",
            "4294967295",
        ),
        (
            "x86_64",
            "cpu-config",
            r#"{"cpuid_modifiers": [{"leaf": "0x1", "flags": 0, "modifiers": []}]}"#,
            "cpu-config.cpuid_modifiers[0]",
            "}",
            "subleaf",
        ),
        (
            "x86_64",
            "cpu-config",
            r#"{"msr_modifiers": [{"addr": "0x100000000", "bitmap": "0"}]}"#,
            "cpu-config.msr_modifiers[0].addr",
            r#""0x100000000""#,
            "32 bits",
        ),
        (
            "x86_64",
            "cpu-config",
            r#"{"msr_modifiers": [{"addr": "0x10a", "bitmap": "0b1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}]}"#,
            "cpu-config.msr_modifiers[0].bitmap",
            r#""0b1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx""#,
            "bitmap of 64 bits",
        ),
        (
            "aarch64",
            "cpu-config",
            r#"{"vcpu_features": [{"index": 4294967296, "bitmap": "0"}]}"#,
            "cpu-config.vcpu_features[0].index",
            "4294967296",
            "4294967295",
        ),
        (
            "aarch64",
            "cpu-config",
            r#"{"vcpu_features": [{"index": 0, "bitmap": "1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}]}"#,
            "cpu-config.vcpu_features[0].bitmap",
            r#""1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx""#,
            "bitmap of 32 bits",
        ),
        (
            "aarch64",
            "cpu-config",
            r#"{"reg_modifiers": [{"addr": "0x0", "bitmap": "0b1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}]}"#,
            "cpu-config.reg_modifiers[0].bitmap",
            r#""0b1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx""#,
            "bitmap of 128 bits",
        ),
    ];
    for &(arch, section, value, field, underlined, words) in cases {
        let out = plan("fc-sections-refused.json", arch, section, Some(value));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{arch} {section}: {value}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let e = &doc["error"];
        assert_eq!(e["field"].as_str().unwrap(), field, "{value}: {e}");
        assert_eq!(e["line"], 2, "{value}: {e}");
        // The column of the underlined text: `,"SECTION": ` is the section's length and 5.
        let column = section.len() + 6 + value.find(underlined).unwrap();
        assert_eq!(e["column"], column, "{value}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains(words),
            "{value}: {words} not in {e}"
        );
    }
}

/// A small deterministic generator (xorshift) for the templates below.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A bitmap of `bits` characters, each `0`, `1` or `x` (left as the host has it), as
    /// Firecracker's templates write them.
    fn bitmap(&mut self, bits: usize) -> String {
        let digits: String = (0..bits)
            .map(|_| ['0', '1', 'x', 'x'][usize::try_from(self.below(4)).unwrap()])
            .collect();
        format!("0b{digits}")
    }
}

/// A custom CPU template of the shape Firecracker's x86_64 templates have (CPUID leaves of the
/// standard and extended ranges with a subleaf, `flags` 0 or 1 and a 32-bit bitmap per
/// register, MSRs with 64-bit bitmaps, KVM capabilities added and removed).
fn x86_64_template(rng: &mut Rng) -> String {
    const LEAVES: [&str; 8] = [
        "0x1",
        "0x7",
        "0xd",
        "0x14",
        "0x1d",
        "0x80000001",
        "0x80000008",
        "0x8000001f",
    ];
    const REGISTERS: [&str; 4] = ["eax", "ebx", "ecx", "edx"];
    const MSRS: [&str; 4] = ["0x10a", "0x1a0", "0xc0000080", "0x48"];
    let leaves: Vec<String> = (0..1 + rng.below(12))
        .map(|_| {
            let mut modifiers = Vec::new();
            for register in REGISTERS {
                if rng.below(3) != 0 {
                    modifiers.push(format!(
                        r#"{{"register": "{register}", "bitmap": "{}"}}"#,
                        rng.bitmap(32)
                    ));
                }
            }
            format!(
                r#"{{"leaf": "{}", "subleaf": "{:#x}", "flags": {}, "modifiers": [{}]}}"#,
                LEAVES[usize::try_from(rng.below(8)).unwrap()],
                rng.below(4),
                rng.below(2),
                modifiers.join(", ")
            )
        })
        .collect();
    let msrs: Vec<String> = (0..rng.below(4))
        .map(|_| {
            format!(
                r#"{{"addr": "{}", "bitmap": "{}"}}"#,
                MSRS[usize::try_from(rng.below(4)).unwrap()],
                rng.bitmap(64)
            )
        })
        .collect();
    format!(
        r#"{{"kvm_capabilities": ["{}", "!{}"], "cpuid_modifiers": [{}], "msr_modifiers": [{}]}}"#,
        170 + rng.below(10),
        180 + rng.below(10),
        leaves.join(", "),
        msrs.join(", ")
    )
}

/// A custom CPU template of the shape Firecracker's aarch64 templates have (register modifiers
/// of the ID registers' 64-bit encodings with 64-bit bitmaps, a 128-bit one, vCPU features, KVM
/// capabilities).
fn aarch64_template(rng: &mut Rng) -> String {
    let registers: Vec<String> = (0..rng.below(6))
        .map(|_| {
            let wide = rng.below(5) == 0;
            format!(
                r#"{{"addr": "{:#x}", "bitmap": "{}"}}"#,
                if wide {
                    0x6040_0000_0010_0000_u64
                } else {
                    0x6030_0000_0013_c000_u64 + rng.below(0x40)
                },
                rng.bitmap(if wide { 128 } else { 64 })
            )
        })
        .collect();
    format!(
        r#"{{"kvm_capabilities": ["{}"], "vcpu_features": [{{"index": 0, "bitmap": "{}"}}], "reg_modifiers": [{}]}}"#,
        170 + rng.below(10),
        rng.bitmap(7),
        registers.join(", ")
    )
}

/// Custom CPU templates of the shapes Firecracker's own (those its tests boot with: CPUID and
/// MSR modifiers on x86_64, register modifiers and vCPU features on aarch64): written in the
/// file as `cpu-config`, each is planned as the file without it, for its architecture, and
/// refused for the other (whose template has other fields).
#[test]
fn cpu_templates_of_firecracker_shapes_are_planned_for_their_architecture() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..24 {
        let (arch, other, template) = if round % 2 == 0 {
            ("x86_64", "aarch64", x86_64_template(&mut rng))
        } else {
            ("aarch64", "x86_64", aarch64_template(&mut rng))
        };
        let without = plan("fc-template-shapes.json", arch, "cpu-config", None);
        assert_eq!(without.status.code(), Some(0));
        let out = plan(
            "fc-template-shapes.json",
            arch,
            "cpu-config",
            Some(&template),
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{template} for {arch}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(out.stdout, without.stdout, "{template} for {arch}");
        let out = plan(
            "fc-template-shapes.json",
            other,
            "cpu-config",
            Some(&template),
        );
        assert_eq!(out.status.code(), Some(2), "{template} for {other}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("unknown field"),
            "{template} for {other}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
