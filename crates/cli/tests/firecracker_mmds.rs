//! Firecracker's `mmds-config` (its `MmdsConfig`): the command refuses, at the field, what
//! Firecracker refuses when it applies the file (a version other than `V1` or `V2`, an empty
//! `network_interfaces`, an id no interface has, an `ipv4_address` that is not a link-local
//! address it takes, a type or field it does not know), and plans what it takes as without it:
//! the metadata service adds no device and no memory.

use std::process::Output;

mod common;

use common::{binary, scratch};

/// Runs `memvisor plan --json --from firecracker` on a configuration with two interfaces and
/// `mmds` as its `mmds-config` (written on line 2), or none for `None`.
fn plan(name: &str, mmds: Option<&str>) -> Output {
    let path = scratch(name);
    let mmds = mmds.map_or(String::new(), |m| format!(r#","mmds-config": {m}"#));
    std::fs::write(
        &path,
        format!(
            "{{\"boot-source\": {{\"kernel_image_path\": \"k\"}}, \"drives\": [], \"network-interfaces\": [{{\"iface_id\": \"eth0\", \"host_dev_name\": \"tap0\"}}, {{\"iface_id\": \"eth1\", \"host_dev_name\": \"tap1\"}}]\n{mmds}}}"
        ),
    )
    .unwrap();
    binary(&[
        "plan",
        "--json",
        "--from",
        "firecracker",
        path.to_str().unwrap(),
    ])
}

#[test]
fn firecracker_mmds_config_it_takes_is_planned_as_without_it() {
    let without = plan("fc-mmds-taken.json", None);
    assert_eq!(without.status.code(), Some(0));
    let without: serde_json::Value = serde_json::from_slice(&without.stdout).unwrap();
    for mmds in [
        "null",
        r#"{"network_interfaces": ["eth0"]}"#,
        r#"{"network_interfaces": ["eth1", "eth0", "eth1"], "version": "V2"}"#,
        r#"{"version": "V1", "network_interfaces": ["eth0"], "ipv4_address": "169.254.169.254", "imds_compat": true}"#,
        r#"{"network_interfaces": ["eth0"], "ipv4_address": "169.254.1.0"}"#,
        r#"{"network_interfaces": ["eth0"], "ipv4_address": "169.254.254.255"}"#,
        r#"{"network_interfaces": ["eth0"], "ipv4_address": null}"#,
    ] {
        let out = plan("fc-mmds-taken.json", Some(mmds));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{mmds}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc, without, "{mmds}");
    }
}

#[test]
fn firecracker_mmds_config_it_refuses_is_refused_at_the_field() {
    // (mmds-config, the field, the text underlined, words of the message)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            r#"{"network_interfaces": []}"#,
            "mmds-config.network_interfaces",
            "[]",
            "empty",
        ),
        (
            r#"{"network_interfaces": ["eth0", "eth9"]}"#,
            "mmds-config.network_interfaces[1]",
            r#""eth9""#,
            "no network interface",
        ),
        (
            r#"{"network_interfaces": ["ETH0"]}"#,
            "mmds-config.network_interfaces[0]",
            r#""ETH0""#,
            "no network interface",
        ),
        (
            r#"{"network_interfaces": ["eth0"], "ipv4_address": "10.0.0.1"}"#,
            "mmds-config.ipv4_address",
            r#""10.0.0.1""#,
            "link-local",
        ),
        (
            r#"{"network_interfaces": ["eth0"], "ipv4_address": "169.254.0.9"}"#,
            "mmds-config.ipv4_address",
            r#""169.254.0.9""#,
            "link-local",
        ),
        (
            r#"{"network_interfaces": ["eth0"], "ipv4_address": "169.254.255.1"}"#,
            "mmds-config.ipv4_address",
            r#""169.254.255.1""#,
            "link-local",
        ),
        (
            r#"{"network_interfaces": ["eth0"], "ipv4_address": "169.254.01.1"}"#,
            "mmds-config.ipv4_address",
            r#""169.254.01.1""#,
            "IPv4",
        ),
        (
            r#"{"network_interfaces": ["eth0"], "ipv4_address": "fe80::1"}"#,
            "mmds-config.ipv4_address",
            r#""fe80::1""#,
            "IPv4",
        ),
        (
            r#"{"network_interfaces": ["eth0"], "version": "V3"}"#,
            "mmds-config.version",
            r#""V3""#,
            "expected `V1` or `V2`",
        ),
        (
            r#"{"network_interfaces": ["eth0"], "version": null}"#,
            "mmds-config.version",
            "null",
            "invalid type",
        ),
        (
            r#"{"network_interfaces": ["eth0"], "imds_compat": 1}"#,
            "mmds-config.imds_compat",
            "1",
            "invalid type",
        ),
        (
            r#"{"network_interfaces": null}"#,
            "mmds-config.network_interfaces",
            "null",
            "invalid type",
        ),
        (
            r#"{"network_interfaces": [1]}"#,
            "mmds-config.network_interfaces[0]",
            "1",
            "invalid type",
        ),
        (
            r#"{"network_interfaces": ["eth0"], "ttl": 1}"#,
            "mmds-config",
            r#""ttl""#,
            "unknown field `ttl`",
        ),
        (
            r#"{"version": "V2"}"#,
            "mmds-config",
            "}",
            "network_interfaces",
        ),
        (r#"["eth0"]"#, "mmds-config", r#"["eth0"]"#, "invalid type"),
    ];
    for &(mmds, field, underlined, words) in cases {
        let out = plan("fc-mmds-refused.json", Some(mmds));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{mmds}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let e = &doc["error"];
        assert!(
            e["field"].as_str().unwrap().starts_with(field),
            "{mmds}: {e}"
        );
        assert_eq!(e["line"], 2, "{mmds}: {e}");
        // The column of the underlined text: `,"mmds-config": ` is 16 characters.
        let column = 17 + mmds.find(underlined).unwrap();
        assert_eq!(e["column"], column, "{mmds}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains(words),
            "{mmds}: {words} not in {e}"
        );
    }
}
