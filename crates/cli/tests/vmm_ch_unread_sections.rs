//! A Cloud Hypervisor `VmConfig`'s sections that add nothing to the plan and whose shape is
//! small (`serial`, `debug_console` on x86_64, `tpm`, `landlock_enable`, `landlock_rules`,
//! and `console`'s `file` and `socket`): a field of a type Cloud Hypervisor's serde refuses,
//! or a field it requires left out, is refused at the field with exit code 2; what it takes is
//! planned as without them.

use std::process::Output;

mod common;

use common::{binary, scratch};

/// Runs `memvisor plan --json --arch ARCH --from cloud-hypervisor-json` on a `VmConfig` with
/// a kernel and `section` set to `value` (written on line 2), or without it for `None`.
fn plan(name: &str, arch: &str, section: &str, value: Option<&str>) -> Output {
    let path = scratch(name);
    let value = value.map_or(String::new(), |v| format!(r#","{section}": {v}"#));
    std::fs::write(
        &path,
        format!("{{\"payload\": {{\"kernel\": \"vmlinux\"}}\n{value}}}"),
    )
    .unwrap();
    binary(&[
        "plan",
        "--json",
        "--arch",
        arch,
        "--from",
        "cloud-hypervisor-json",
        path.to_str().unwrap(),
    ])
}

#[test]
fn cloud_hypervisor_sections_it_takes_are_planned_as_without_them() {
    let cases: &[(&str, &str, &str)] = &[
        ("x86_64", "serial", r#"{"mode": "Tty"}"#),
        (
            "x86_64",
            "serial",
            r#"{"mode": "Socket", "socket": "/run/s.sock", "file": null, "other": [1]}"#,
        ),
        (
            "x86_64",
            "debug_console",
            r#"{"mode": "Off", "iobase": 233}"#,
        ),
        (
            "x86_64",
            "debug_console",
            r#"{"mode": "File", "file": "/tmp/d", "iobase": null}"#,
        ),
        // Not a field of an aarch64 build: ignored there.
        ("aarch64", "debug_console", r#"{"mode": 7}"#),
        ("x86_64", "tpm", "null"),
        ("x86_64", "tpm", r#"{"socket": "/run/swtpm.sock"}"#),
        ("x86_64", "landlock_enable", "true"),
        ("x86_64", "landlock_rules", "null"),
        ("x86_64", "landlock_rules", "[]"),
        (
            "x86_64",
            "landlock_rules",
            r#"[{"path": "/srv", "access": "rw"}, {"path": "/tmp", "access": "r", "x": 1}]"#,
        ),
        (
            "x86_64",
            "console",
            r#"{"mode": "File", "file": "/tmp/c", "socket": null}"#,
        ),
    ];
    for &(arch, section, value) in cases {
        let without = plan("ch-sections-taken.json", arch, section, None);
        assert_eq!(without.status.code(), Some(0));
        let without: serde_json::Value = serde_json::from_slice(&without.stdout).unwrap();
        let out = plan("ch-sections-taken.json", arch, section, Some(value));
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
fn cloud_hypervisor_sections_of_the_wrong_shape_are_refused_at_the_field() {
    // (arch, section, value, the field, the text underlined, words of the message)
    let cases: &[(&str, &str, &str, &str, &str, &str)] = &[
        ("x86_64", "serial", "null", "serial", "null", "invalid type"),
        (
            "x86_64",
            "serial",
            r#""tty""#,
            "serial",
            r#""tty""#,
            "invalid type",
        ),
        (
            "x86_64",
            "serial",
            "{}",
            "serial",
            "}",
            "missing field `mode`",
        ),
        (
            "x86_64",
            "serial",
            r#"{"mode": "tty"}"#,
            "serial.mode",
            r#""tty""#,
            "unknown variant",
        ),
        (
            "x86_64",
            "serial",
            r#"{"mode": "File", "file": 3}"#,
            "serial.file",
            "3",
            "invalid type",
        ),
        (
            "x86_64",
            "serial",
            r#"{"mode": "Socket", "socket": ["/s"]}"#,
            "serial.socket",
            r#"["/s"]"#,
            "invalid type",
        ),
        (
            "x86_64",
            "debug_console",
            r#"{"mode": "Off", "iobase": 65536}"#,
            "debug_console.iobase",
            "65536",
            "65535",
        ),
        (
            "x86_64",
            "debug_console",
            r#"{"iobase": 233}"#,
            "debug_console",
            "}",
            "missing field `mode`",
        ),
        ("x86_64", "tpm", "{}", "tpm", "}", "missing field `socket`"),
        (
            "x86_64",
            "tpm",
            r#"{"socket": null}"#,
            "tpm.socket",
            "null",
            "invalid type",
        ),
        (
            "x86_64",
            "landlock_enable",
            "null",
            "landlock_enable",
            "null",
            "invalid type",
        ),
        (
            "x86_64",
            "landlock_enable",
            "1",
            "landlock_enable",
            "1",
            "invalid type",
        ),
        (
            "x86_64",
            "landlock_rules",
            r#"{"path": "/srv", "access": "rw"}"#,
            "landlock_rules",
            "{",
            "invalid type",
        ),
        (
            "x86_64",
            "landlock_rules",
            r#"[{"path": "/srv"}]"#,
            "landlock_rules[0]",
            "}",
            "missing field `access`",
        ),
        (
            "x86_64",
            "landlock_rules",
            r#"[{"path": "/srv", "access": "rw"}, {"path": 1, "access": "r"}]"#,
            "landlock_rules[1].path",
            "1,",
            "invalid type",
        ),
        (
            "x86_64",
            "console",
            r#"{"mode": "File", "file": false}"#,
            "console.file",
            "false",
            "invalid type",
        ),
        (
            "x86_64",
            "debug_console",
            "null",
            "debug_console",
            "null",
            "invalid type",
        ),
        (
            "x86_64",
            "debug_console",
            r#"{"mode": "Tty", "file": 1}"#,
            "debug_console.file",
            "1",
            "invalid type",
        ),
        (
            "x86_64",
            "debug_console",
            r#"{"mode": "tty"}"#,
            "debug_console.mode",
            r#""tty""#,
            "unknown variant",
        ),
        (
            "x86_64",
            "landlock_rules",
            r#"[{"path": "/srv", "access": ["r"]}]"#,
            "landlock_rules[0].access",
            r#"["r"]"#,
            "invalid type",
        ),
        (
            "x86_64",
            "console",
            r#"{"mode": "Tty", "socket": 2}"#,
            "console.socket",
            "2",
            "invalid type",
        ),
    ];
    for &(arch, section, value, field, underlined, words) in cases {
        let out = plan("ch-sections-refused.json", arch, section, Some(value));
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

/// Whole `VmConfig`s Cloud Hypervisor takes, with these sections as its own tests and docs
/// write them (`cloud-hypervisor/src/main.rs`'s tests of `--serial`, `--console`,
/// `--debug-console` and `--tpm` against their JSON, `docs/landlock.md`) and as it writes its
/// defaults back (`vm.info`: `serial`, `console` and `debug_console` with `mode` and the
/// fields it does not leave out): each is planned, for x86_64, as the file of its payload
/// alone; for aarch64 too but for the one with `debug_console`, a field aarch64 builds do
/// not have (ignored there, so planned as well).
#[test]
fn cloud_hypervisor_configs_of_its_own_tests_and_docs_are_planned() {
    let payload = r#""payload": {"kernel": "/path/to/kernel"}"#;
    let configs = [
        r#""debug_console": {"mode": "Tty", "iobase": 233}"#,
        r#""serial": {"mode": "Null"}, "console": {"mode": "Tty"}"#,
        r#""serial": {"mode": "Null"}, "console": {"mode": "Tty", "iommu": false, "pci_segment": 0, "pci_device_id": 7}"#,
        r#""serial": {"mode": "Tty"}, "console": {"mode": "Off"}"#,
        r#""serial": {"mode": "Pty"}, "console": {"mode": "Pty"}"#,
        r#""tpm": {"socket": "/path/to/tpm/sock"}"#,
        r#""landlock_enable": true, "landlock_rules": [{"path": "/tmp/disk1", "access": "rw"}, {"path": "/tmp/disk2", "access": "rw"}]"#,
        r#""serial": {"mode": "Null"}, "console": {"mode": "Tty", "pci_segment": 0},
           "debug_console": {"mode": "Off", "iobase": 233}, "landlock_enable": false"#,
    ];
    for arch in ["x86_64", "aarch64"] {
        let path = scratch(&format!("ch-configs-of-its-tests-{arch}.json"));
        let run = |text: String| {
            std::fs::write(&path, text).unwrap();
            binary(&[
                "plan",
                "--json",
                "--arch",
                arch,
                "--from",
                "cloud-hypervisor-json",
                path.to_str().unwrap(),
            ])
        };
        let without = run(format!("{{{payload}}}"));
        assert_eq!(without.status.code(), Some(0));
        for config in configs {
            let out = run(format!("{{{payload}, {config}}}"));
            assert_eq!(
                out.status.code(),
                Some(0),
                "{arch}: {config}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert_eq!(out.stdout, without.stdout, "{arch}: {config}");
        }
    }
}
