//! The guest memory map of a Firecracker configuration against the one Firecracker builds
//! (the facts of Firecracker 1.14, `src/vmm/src/arch/*/layout.rs`, `arch_memory_regions`
//! and its MMIO device manager), and hostile Firecracker files, through the command.

mod common;

use common::{Memvisor, Outcome, scratch};

/// Runs `memvisor ARGS` on the Firecracker file `json` (written where `FILE` is).
fn run_on_json(name: &str, json: &str, args: &[&str]) -> Outcome {
    Memvisor::new().run_on_file(scratch(name), json, args)
}

/// A whole configuration of `mem_mib` MiB with `drives` drives and `rest` added at the top.
fn config(mem_mib: u64, drives: usize, rest: &str) -> String {
    let drives: Vec<String> = (0..drives)
        .map(|i| format!(r#"{{"drive_id": "d{i}", "is_root_device": false, "path_on_host": "d"}}"#))
        .collect();
    format!(
        r#"{{"boot-source": {{"kernel_image_path": "k"}}, "drives": [{}],
        "machine-config": {{"vcpu_count": 1, "mem_size_mib": {mem_mib}}}{rest}}}"#,
        drives.join(",")
    )
}

/// The `(start, end, gsi)` of each device of `--json` plan `out`, by name.
fn devices(out: &str) -> Vec<(String, u64, u64, u64)> {
    let doc: serde_json::Value = serde_json::from_str(out).unwrap();
    let hex = |v: &serde_json::Value| {
        u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    };
    doc["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["mmio"].is_object())
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_owned(),
                hex(&d["mmio"]["start"]),
                hex(&d["mmio"]["end"]),
                d["irq"]["gsi"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Firecracker's x86_64 MMIO devices are allocated from `MEM_32BIT_DEVICES_START`, one 4 KiB
/// page past the boot device page at 3 GiB (`BOOT_DEVICE_MEM_START`), in attach order, with
/// legacy GSIs from 5.
#[test]
fn firecracker_x86_64_devices_start_past_the_boot_device_page() {
    let json = config(
        256,
        2,
        r#", "balloon": {"amount_mib": 0, "deflate_on_oom": false},
        "vsock": {"guest_cid": 3, "uds_path": "v"}, "entropy": {}"#,
    );
    let (code, out, err) = run_on_json(
        "fc-x86-mmio.json",
        &json,
        &["plan", "--json", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
    let got = devices(&out);
    let names: Vec<&str> = got.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(names, ["balloon0", "d0", "d1", "vsock0", "rng0"], "{out}");
    for (i, (name, start, end, gsi)) in got.iter().enumerate() {
        let i = i as u64;
        assert_eq!(*start, 0xc000_1000 + i * 0x1000, "{name}: {out}");
        assert_eq!(*end, 0xc000_1fff + i * 0x1000, "{name}: {out}");
        assert_eq!(*gsi, 5 + i, "{name}: {out}");
    }
}

/// Firecracker's x86_64 RAM above 4 GiB stops at the 64-bit MMIO gap
/// `[256 GiB, 512 GiB)` and goes on past it: 255 GiB is the most the plan lays out as
/// Firecracker does; more is refused at `mem_size_mib`, never planned across the gap.
#[test]
fn firecracker_x86_64_memory_past_the_64_bit_mmio_gap_is_refused() {
    let (code, out, err) = run_on_json(
        "fc-255g.json",
        &config(255 << 10, 0, ""),
        &["plan", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("0x0100000000  0x3fffffffff  252 GiB  RAM"),
        "{out}"
    );
    let json = config((255 << 10) + 2, 0, "");
    let (code, out, err) = run_on_json(
        "fc-256g.json",
        &json,
        &["plan", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("machine-config.mem_size_mib"), "{err}");
    assert!(err.contains("[256 GiB, 512 GiB)"), "{err}");
    assert!(err.contains(":2:61"), "{err}");
}

/// Firecracker 1.16 hands its x86_64 legacy GSIs 5 to 23 out in attach order and gives the
/// last two to its VMGenID and VMClock devices: 17 virtio devices boot, an 18th does not.
#[test]
fn firecracker_x86_64_eighteenth_virtio_device_is_refused() {
    let (code, out, err) = run_on_json(
        "fc-17.json",
        &config(128, 17, ""),
        &["plan", "--json", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
    let got = devices(&out);
    assert_eq!(got.len(), 17, "{out}");
    assert_eq!(got[16].3, 21, "{out}");
    assert_eq!(got[16].1, 0xc001_1000, "{out}");
    let rest = r#", "entropy": {}"#;
    let (code, _, err) = run_on_json(
        "fc-18.json",
        &config(128, 17, rest),
        &["plan", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("error: entropy: 18 virtio devices (the rng is number 18): Firecracker boots at most 17 on x86_64"), "{err}");
    assert!(err.contains(":2:78"), "{err}");
    // Repeated ids merge entries into one device before the devices are counted.
    let mut json = config(128, 17, "");
    json = json.replace(
        r#""drives": ["#,
        r#""drives": [{"drive_id": "d3", "is_root_device": false, "path_on_host": "d"},"#,
    );
    let (code, _, err) = run_on_json(
        "fc-17-merged.json",
        &json,
        &["plan", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
    // aarch64 has more interrupts: the limit is x86_64's.
    let (code, _, err) = run_on_json(
        "fc-18-arm.json",
        &config(128, 17, rest),
        &["plan", "--arch", "aarch64", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
}

/// The converted spec says which architecture its device windows are for, and `init` takes
/// `--arch`, so that planning what `init` prints gives the plan of the file.
#[test]
fn firecracker_init_writes_the_architecture_of_its_device_windows() {
    let json = config(256, 1, "");
    let (code, out, err) = run_on_json(
        "fc-init.json",
        &json,
        &["init", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("arch = \"x86_64\""), "{out}");
    assert!(out.contains("address = \"0xc0001000\""), "{out}");
    let (code, out, err) = run_on_json(
        "fc-init-arm.json",
        &json,
        &["init", "--arch", "aarch64", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("arch = \"aarch64\""), "{out}");
    assert!(!out.contains("address"), "{out}");
    // On aarch64 the 64-bit MMIO gap check is not x86_64's.
    let (code, _, err) = run_on_json(
        "fc-300g-arm.json",
        &config(300 << 10, 0, ""),
        &["plan", "--arch", "aarch64", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
}

/// Firecracker refuses `smt: true` on aarch64 (`MachineConfigError::SmtNotSupported`), even
/// with one vCPU; on x86_64 it takes it with 1 or an even number of vCPUs.
#[test]
fn firecracker_aarch64_smt_is_refused() {
    let json = "{\"vcpu_count\": 2,\n \"mem_size_mib\": 128, \"smt\": true}";
    let (code, _, err) = run_on_json(
        "fc-smt-arm.json",
        json,
        &["plan", "--arch", "aarch64", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with("error: smt: SMT on aarch64 (Firecracker refuses it)"),
        "{err}"
    );
    assert!(err.contains(":2:30"), "{err}");
    let json = json.replace("\"vcpu_count\": 2", "\"vcpu_count\": 1");
    let (code, _, err) = run_on_json(
        "fc-smt-arm1.json",
        &json,
        &["init", "--arch", "aarch64", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run_on_json(
        "fc-smt-x86.json",
        &json,
        &["plan", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
    let json = json.replace("true", "false");
    let (code, _, err) = run_on_json(
        "fc-nosmt-arm.json",
        &json,
        &["plan", "--arch", "aarch64", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
}
