//! Firecracker builds a drive of a file (`path_on_host`, no `socket`) or a vhost-user drive
//! (`socket`, and none of `is_read_only`, `path_on_host`, `rate_limiter`, `io_engine`), and
//! refuses any other drive; it refuses an interface whose `mtu` is below 68. The command
//! refuses them too, at the field, through the real binary, and takes what Firecracker takes.

use std::process::Output;

mod common;

use common::{binary, scratch};

const BOOT: &str = r#""boot-source": {"kernel_image_path": "vmlinux"}"#;

/// Runs `memvisor plan --from firecracker` (with `--json` when `json`) on a file of `body`.
fn plan(name: &str, body: &str, json: bool) -> Output {
    let path = scratch(name);
    std::fs::write(&path, format!("{{{BOOT},\n{body}}}")).unwrap();
    let path = path.to_str().unwrap();
    let mut args = vec!["plan", "--from", "firecracker", path];
    if json {
        args.push("--json");
    }
    binary(&args)
}

/// Checks that `body` is refused with exit code 2 at `field`, line 2 and `column`, saying
/// `words`, in text and in `--json`.
#[track_caller]
fn refused_at(name: &str, body: &str, field: &str, column: u64, words: &str) {
    let out = plan(name, body, false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{body}: {err}");
    assert!(out.stdout.is_empty(), "{body}");
    assert!(
        err.starts_with(&format!("error: {field}: ")),
        "{body}: {err}"
    );
    assert!(err.contains(&format!(":2:{column}\n")), "{body}: {err}");
    assert!(err.contains(words), "{body}: {words} not in {err}");
    let out = plan(name, body, true);
    assert_eq!(out.status.code(), Some(2), "{body}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["field"], field, "{doc}");
    assert_eq!(doc["error"]["line"], 2, "{doc}");
    assert_eq!(doc["error"]["column"], column, "{doc}");
}

#[track_caller]
fn planned(name: &str, body: &str) {
    let out = plan(name, body, false);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{body}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn firecracker_drive_of_neither_kind_is_refused() {
    let drives = |d: &str| format!(r#""drives": [{d}]"#);
    // Neither a file nor a socket (a `null` one is none): at the end of the drive's object, as
    // a missing field is.
    for d in [
        r#"{"drive_id": "r", "is_root_device": true}"#,
        r#"{"drive_id": "r", "is_root_device": true, "socket": null, "path_on_host": null}"#,
    ] {
        let end = 11 + d.len() as u64;
        refused_at(
            "fc-drive-none.json",
            &drives(d),
            "drives[0]",
            end,
            "`path_on_host`",
        );
    }
    // A vhost-user drive with a field of a drive of a file: at that field's value.
    for (field, value) in [
        ("path_on_host", r#""rootfs.ext4""#),
        ("is_read_only", "false"),
        ("io_engine", r#""Sync""#),
        ("rate_limiter", r#"{"bandwidth": null}"#),
    ] {
        let d = format!(
            r#"{{"drive_id": "r", "is_root_device": true, "socket": "/b.sock", "{field}": {value}}}"#
        );
        let column = 12 + d.find(value).unwrap() as u64;
        refused_at(
            "fc-drive-both.json",
            &drives(&d),
            &format!("drives[0].{field}"),
            column,
            "vhost-user",
        );
    }
    // The socket after the field: the same refusal, at the field.
    let d =
        r#"{"drive_id": "r", "is_read_only": true, "socket": "/b.sock", "is_root_device": false}"#;
    refused_at(
        "fc-drive-both-first.json",
        &drives(d),
        "drives[0].is_read_only",
        12 + d.find("true").unwrap() as u64,
        "vhost-user",
    );
    // What Firecracker builds: a file, with or without its optional fields (`null` ones too);
    // a socket with a `partuuid`, `cache_type` or `null` file fields.
    for d in [
        r#"{"drive_id": "r", "is_root_device": true, "path_on_host": "r.ext4"}"#,
        r#"{"drive_id": "r", "is_root_device": true, "path_on_host": "r.ext4", "socket": null, "is_read_only": true, "io_engine": "Sync"}"#,
        r#"{"drive_id": "r", "is_root_device": true, "socket": "/b.sock", "partuuid": "1", "cache_type": "Writeback"}"#,
        r#"{"drive_id": "r", "is_root_device": true, "socket": "/b.sock", "path_on_host": null, "is_read_only": null, "io_engine": null, "rate_limiter": null}"#,
    ] {
        planned("fc-drive-taken.json", &drives(d));
    }
}

#[test]
fn firecracker_interface_mtu_below_68_is_refused() {
    let iface = |mtu: &str| {
        format!(
            r#""drives": [], "network-interfaces": [{{"iface_id": "eth0", "host_dev_name": "tap0", "mtu": {mtu}}}]"#
        )
    };
    for mtu in ["0", "67"] {
        let body = iface(mtu);
        let column = 1 + body.rfind(mtu).unwrap() as u64;
        refused_at(
            "fc-mtu-low.json",
            &body,
            "network-interfaces[0].mtu",
            column,
            "68 to 65535",
        );
    }
    for mtu in ["68", "1500", "65535", "null"] {
        planned("fc-mtu-taken.json", &iface(mtu));
    }
}

#[test]
fn firecracker_interface_host_dev_name_of_16_bytes_or_more_is_refused() {
    // Firecracker opens the tap by a NUL-terminated name of at most 16 bytes (`IFNAMSIZ`):
    // a longer one is refused whatever the host has.
    let iface = |name: &str| {
        format!(
            r#""drives": [], "network-interfaces": [{{"iface_id": "eth0", "host_dev_name": "{name}"}}]"#
        )
    };
    for name in ["abcdefghijklmnop", "tap-ééééééé", &"t".repeat(300)] {
        let body = iface(name);
        let column = 1 + body.find(&format!("\"{name}\"")).unwrap() as u64;
        refused_at(
            "fc-tap-long.json",
            &body,
            "network-interfaces[0].host_dev_name",
            column,
            "16 bytes",
        );
    }
    for name in ["abcdefghijklmno", "tap0", "", "tap-ééééé"] {
        planned("fc-tap-taken.json", &iface(name));
    }
}

#[test]
fn firecracker_guest_mac_is_read_as_firecracker_reads_it() {
    // Firecracker's `MacAddr` takes six parts of two bytes each, each read by Rust's
    // `u8::from_str_radix(part, 16)`, which takes a `+` before one digit: `+a` is 0x0a.
    let ifaces = |macs: &[&str]| {
        let list: Vec<String> = macs
            .iter()
            .enumerate()
            .map(|(i, m)| {
                format!(
                    r#"{{"iface_id": "eth{i}", "host_dev_name": "tap{i}", "guest_mac": "{m}"}}"#
                )
            })
            .collect();
        format!(
            r#""drives": [], "network-interfaces": [{}]"#,
            list.join(", ")
        )
    };
    for mac in ["+a:fc:00:00:00:01", "AA:fc:+0:+F:00:01"] {
        planned("fc-mac-taken.json", &ifaces(&[mac]));
    }
    for mac in [
        "a:fc:00:00:00:01",
        "+:fc:00:00:00:01",
        "-1:fc:00:00:00:01",
        "+aa:fc:00:00:00:0",
        "é:fc:00:00:00:01",
    ] {
        let body = ifaces(&[mac]);
        let column = 1 + body.find(&format!("\"{mac}\"")).unwrap() as u64;
        refused_at(
            "fc-mac-refused.json",
            &body,
            "network-interfaces[0].guest_mac",
            column,
            "not a MAC address",
        );
    }
    // The same address written two ways is in use by the first interface.
    let body = ifaces(&["+a:fc:00:00:00:01", "0A:FC:00:00:00:01"]);
    let column = 1 + body.find("\"0A:").unwrap() as u64;
    refused_at(
        "fc-mac-in-use.json",
        &body,
        "network-interfaces[1].guest_mac",
        column,
        "in use by `eth0`",
    );
}

/// The refusal of a `guest_mac` says what a MAC address is as Firecracker reads it, the
/// `+` and one digit it takes included, not only the two hex digits it also takes.
#[test]
fn firecracker_guest_mac_refusal_says_what_firecracker_takes() {
    let body = r#""drives": [], "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "a:fc:00:00:00:01"}]"#;
    let column = 1 + body.find("\"a:fc").unwrap() as u64;
    refused_at(
        "fc-mac-refusal-words.json",
        body,
        "network-interfaces[0].guest_mac",
        column,
        "six bytes joined by `:`, each two hex digits or `+` and one",
    );
}

#[test]
fn firecracker_paths_it_cannot_open_on_any_host_are_refused() {
    // Firecracker opens a drive's `path_on_host`, connects to a vhost-user drive's `socket`,
    // opens `kernel_image_path` and `initrd_path` and binds the vsock's `uds_path` when it
    // applies the file: an empty path (but `uds_path`'s), or one with a NUL, fails there on
    // every host.
    let cases = |path: &str| {
        [
            (
                format!(
                    r#""drives": [{{"drive_id": "r", "is_root_device": true, "path_on_host": {path}}}]"#
                ),
                "drives[0].path_on_host",
            ),
            (
                format!(
                    r#""drives": [{{"drive_id": "r", "is_root_device": false, "socket": {path}}}]"#
                ),
                "drives[0].socket",
            ),
            (
                format!(r#""drives": [], "vsock": {{"guest_cid": 3, "uds_path": {path}}}"#),
                "vsock.uds_path",
            ),
        ]
    };
    for path in [r#""""#, r#""a\u0000b""#, r#""\u0000""#] {
        for (body, field) in cases(path) {
            // An empty `uds_path` binds: Rust's `UnixListener::bind("")` gives the kernel an
            // address without a path, which it binds to an abstract name of its own choice.
            if path == r#""""# && field == "vsock.uds_path" {
                planned("fc-path-autobind.json", &body);
                continue;
            }
            let column = 1 + body.find(path).unwrap() as u64;
            refused_at("fc-path-empty.json", &body, field, column, "Firecracker");
        }
    }
    for path in [r#""d""#, r#"" ""#, r#""/run/é.sock""#] {
        for (body, _) in cases(path) {
            planned("fc-path-taken.json", &body);
        }
    }
    // The boot source's paths, on the file's first line.
    for (boot, field) in [
        (
            r#"{"kernel_image_path": ""}"#,
            "boot-source.kernel_image_path",
        ),
        (
            r#"{"kernel_image_path": "k\u0000"}"#,
            "boot-source.kernel_image_path",
        ),
        (
            r#"{"kernel_image_path": "k", "initrd_path": ""}"#,
            "boot-source.initrd_path",
        ),
    ] {
        let path = scratch("fc-boot-path-empty.json");
        std::fs::write(&path, format!(r#"{{"boot-source": {boot}, "drives": []}}"#)).unwrap();
        let out = binary(&["plan", "--from", "firecracker", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{boot}: {err}");
        assert!(
            err.starts_with(&format!("error: {field}: ")),
            "{boot}: {err}"
        );
    }
}

#[test]
fn firecracker_socket_paths_longer_than_a_unix_address_holds_are_refused() {
    // Firecracker binds the vsock's `uds_path` (`UnixListener::bind`) and connects to a
    // vhost-user drive's `socket` (`UnixStream::connect`) when it applies the file: Rust
    // refuses a path of 108 bytes or more there on every Linux host (`sun_path` holds 108
    // bytes with the NUL); one of 107 bytes binds. A file's path has no such limit.
    let cases = |path: &str| {
        [
            (
                format!(
                    r#""drives": [{{"drive_id": "r", "is_root_device": false, "socket": "{path}"}}]"#
                ),
                "drives[0].socket",
            ),
            (
                format!(r#""drives": [], "vsock": {{"guest_cid": 3, "uds_path": "{path}"}}"#),
                "vsock.uds_path",
            ),
        ]
    };
    let long = format!("/run/{}", "s".repeat(103));
    assert_eq!(long.len(), 108);
    for (body, field) in cases(&long) {
        let column = 1 + body.find(&long).unwrap() as u64 - 1;
        refused_at("fc-socket-long.json", &body, field, column, "108 bytes");
    }
    for (body, _) in cases(&long[1..]) {
        planned("fc-socket-fits.json", &body);
    }
    // A drive's file may have a longer path.
    planned(
        "fc-file-long.json",
        &format!(
            r#""drives": [{{"drive_id": "r", "is_root_device": true, "path_on_host": "{long}"}}]"#
        ),
    );
}
