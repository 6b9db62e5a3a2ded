//! Other VMMs' formats (`plan --from firecracker|cloud-hypervisor`) and the guest kernel's
//! command line (`plan --kernel-cmdline`), through the command.

mod common;

use common::{HUGE_PAGES_2M, Memvisor, Outcome, example, run as run_on_host, scratch};

/// `memvisor` with Cloud Hypervisor's default huge page size pinned to 2 MiB (so that plans do
/// not depend on the host) when ARGS are for Cloud Hypervisor's formats and do not give it.
fn memvisor_for(args: &[&str]) -> Memvisor<'static> {
    let cloud_hypervisor = args
        .windows(2)
        .any(|w| w[0] == "--from" && w[1].starts_with("cloud-hypervisor"));
    if matches!(args.first(), Some(&("plan" | "back" | "check" | "init")))
        && cloud_hypervisor
        && !args.contains(&"--host-hugepage-size")
    {
        Memvisor::new().flags(&HUGE_PAGES_2M)
    } else {
        Memvisor::new()
    }
}

/// Runs `memvisor ARGS`, pinned as [`memvisor_for`] says.
fn run(args: &[&str]) -> Outcome {
    memvisor_for(args).run(args)
}

#[test]
fn plan_from_firecracker_config_maps_memory_and_devices() {
    let (code, out, err) = run(&[
        "plan",
        "--from",
        "firecracker",
        &example("firecracker.json"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("firecracker: x86_64"), "{out}");
    assert!(out.contains("RAM 1 GiB in 1 NUMA node"), "{out}");
    assert!(out.contains("anonymous, 2 MiB pages"), "{out}");
    for name in ["rootfs", "eth0", "vsock0", "serial"] {
        assert!(out.lines().any(|l| l.starts_with(name)), "{name}: {out}");
    }
}

#[test]
fn kernel_cmdline_of_firecracker_config_lists_virtio_devices() {
    let (code, out, err) = run(&[
        "plan",
        "--from",
        "firecracker",
        "--kernel-cmdline",
        &example("firecracker.json"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "virtio_mmio.device=4K@0xc0001000:5 virtio_mmio.device=4K@0xc0002000:6 \
         virtio_mmio.device=4K@0xc0003000:7\n"
    );
}

#[test]
fn plan_from_cloud_hypervisor_memory_option() {
    let (code, out, err) = run(&[
        "plan",
        "--from",
        "cloud-hypervisor",
        "size=2G,hotplug_size=8G,hugepages=on,shared=on",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("RAM 2 GiB in 1 NUMA node"), "{out}");
    assert!(
        out.contains("8 GiB  hotplug   hotplug slot 0 (empty)"),
        "{out}"
    );
}

#[test]
fn vmm_format_mistakes_exit_2() {
    for args in [
        vec!["plan", "--from", "cloud-hypervisor", "size=1G,bogus=1"],
        vec!["plan", "--from", "firecracker"],
        vec!["plan", "--from", "firecracker", "/nonexistent.json"],
        vec!["plan", "--kernel-cmdline", "--arch", "aarch64"],
        vec!["plan", "--kernel-cmdline", "--json"],
    ] {
        let (code, out, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
}

#[test]
fn aarch64_devices_show_gsi_and_intid_apart() {
    let (code, out, _) = run(&["plan", "--arch", "aarch64"]);
    assert_eq!(code, 0);
    let header = out.lines().find(|l| l.starts_with("NAME")).unwrap();
    assert!(header.contains("GSI  INTID"), "{header}");
    let serial = out.lines().find(|l| l.starts_with("serial")).unwrap();
    assert!(serial.contains("  0     32  "), "{serial}");
}

#[test]
fn init_from_firecracker_prints_the_converted_spec_which_plans_the_same() {
    let (code, spec, err) = run(&[
        "init",
        "--from",
        "firecracker",
        &example("firecracker.json"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(spec.contains("[memory]"), "{spec}");
    let path = scratch("firecracker.toml");
    std::fs::write(&path, &spec).unwrap();
    let (_, from_toml, _) = run(&["plan", path.to_str().unwrap()]);
    let (_, from_json, _) = run(&[
        "plan",
        "--from",
        "firecracker",
        &example("firecracker.json"),
    ]);
    assert_eq!(from_toml, from_json);
    let (code, _, _) = run(&["init", "somefile.toml"]);
    assert_eq!(code, 2);
}

#[test]
fn init_answers_every_combination_of_from_and_spec() {
    // `--from memvisor` is the default: without SPEC it prints the default spec, as `init`
    // does; a VMM's format needs SPEC; a memvisor SPEC has nothing to convert.
    let (code, default, err) = run(&["init"]);
    assert_eq!(code, 0, "{err}");
    let (code, explicit, err) = run(&["init", "--from", "memvisor"]);
    assert_eq!((code, explicit.as_str()), (0, default.as_str()), "{err}");
    for from in ["firecracker", "cloud-hypervisor"] {
        let (code, out, err) = run(&["init", "--from", from]);
        assert_eq!(code, 2, "{from}: {out}");
        assert!(out.is_empty(), "{from}");
        assert!(err.contains("--from needs SPEC"), "{from}: {err}");
    }
    let (code, out, err) = run(&["init", "--from", "memvisor", "vm.toml"]);
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("SPEC is only for --from firecracker"), "{err}");
}

#[test]
fn firecracker_devices_without_ids_take_names_no_drive_has() {
    // The entropy device's default name `rng0` and the balloon's `balloon0` are drive IDs
    // here: the unnamed devices take the next free numbers instead of clashing.
    let dir = std::env::temp_dir().join(format!("memvisor-vmm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fc.json");
    std::fs::write(
        &path,
        r#"{"machine-config": {"mem_size_mib": 128, "vcpu_count": 1},
            "drives": [{"drive_id": "rng0", "is_root_device": false, "path_on_host": "d"}, {"drive_id": "balloon0", "is_root_device": false, "path_on_host": "d"}],
            "entropy": {}, "balloon": {"amount_mib": 0, "deflate_on_oom": false}, "boot-source": {"kernel_image_path": "k"}}"#,
    )
    .unwrap();
    let (code, out, err) = run(&["plan", "--from", "firecracker", path.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 0, "{err}");
    for name in ["rng0", "balloon0", "rng1", "balloon1"] {
        assert!(out.lines().any(|l| l.starts_with(name)), "{name}: {out}");
    }
}

#[test]
fn default_names_skip_names_given_to_any_device() {
    // `net0` is given to a later device: the unnamed one before it becomes `net1`.
    let spec = "[memory]\nsize = \"64MiB\"\n[[device]]\ntype = \"virtio-net\"\n\
                [[device]]\ntype = \"virtio-blk\"\nname = \"net0\"\n[[device]]\ntype = \"virtio-net\"\n";
    let dir = std::env::temp_dir().join(format!("memvisor-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vm.toml");
    std::fs::write(&path, spec).unwrap();
    let (code, out, err) = run(&["plan", path.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 0, "{err}");
    for name in ["net1", "net0", "net2"] {
        assert!(out.lines().any(|l| l.starts_with(name)), "{name}: {out}");
    }
}

/// Runs `args` with `json` written to a file named `name` in place of `FILE`.
fn run_on_json(name: &str, json: &str, args: &[&str]) -> Outcome {
    memvisor_for(args).run_on_file(scratch(name), json, args)
}

/// A Firecracker file of `drives` drives and `interfaces` interfaces, each an empty object
/// (counted before any is read).
fn firecracker_with(drives: usize, interfaces: usize, rest: &str) -> String {
    format!(
        r#"{{"machine-config": {{"mem_size_mib": 64, "vcpu_count": 1}}, "drives": [{}], "network-interfaces": [{}]{rest}, "boot-source": {{"kernel_image_path": "k"}}}}"#,
        vec!["{}"; drives].join(","),
        vec!["{}"; interfaces].join(",")
    )
}

#[test]
fn firecracker_device_count_is_refused_before_conversion() {
    // A file of about 1 MiB with 349,000 empty drives is refused at its count, as a spec
    // with that many [[device]] tables is, for plan, check and init alike.
    let many = firecracker_with(349_000, 0, "");
    assert!(many.len() < 1 << 20);
    for command in ["plan", "check", "init"] {
        let (code, out, err) = run_on_json(
            &format!("fc-many-{command}.json"),
            &many,
            &[command, "--from", "firecracker", "FILE"],
        );
        assert_eq!(code, 2, "{command}: {err}");
        assert!(out.is_empty(), "{command}");
        assert!(
            err.contains("drives[96]: 349000 device entries (at most 96 devices: each needs its own interrupt"),
            "{command}: {err}"
        );
    }
    for (json, expected) in [
        (
            firecracker_with(97, 0, ""),
            "drives[96]: 97 device entries (at most 96",
        ),
        (
            firecracker_with(90, 7, ""),
            "network-interfaces[6]: 97 device entries (at most 96",
        ),
        (
            firecracker_with(60, 36, r#", "vsock": {"vsock_id": "v"}"#),
            "vsock: 97 device entries (at most 96",
        ),
        (
            firecracker_with(96, 0, r#", "entropy": {}"#),
            "entropy: 97 device entries (at most 96",
        ),
        // The balloon is the first device Firecracker attaches, so the 97th is a drive.
        (
            firecracker_with(96, 0, r#", "balloon": {"amount_mib": 0}"#),
            "drives[95]: 97 device entries (at most 96",
        ),
        (
            firecracker_with(95, 0, r#", "vsock": {"vsock_id": "v"}, "balloon": {}"#),
            "vsock: 97 device entries (at most 96",
        ),
    ] {
        let (code, _, err) = run_on_json(
            "fc-97.json",
            &json,
            &["plan", "--from", "firecracker", "FILE"],
        );
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(expected), "{expected}: {err}");
    }
    // 93 devices, the most Firecracker's 96 aarch64 SPIs serve (its RTC, VMGenID and VMClock
    // take the last three): a spec like any other.
    let drives: Vec<String> = (0..50)
        .map(|i| {
            format!(r#"{{"drive_id": "blk{i}", "is_root_device": false, "path_on_host": "d"}}"#)
        })
        .collect();
    let interfaces: Vec<String> = (0..43)
        .map(|i| format!(r#"{{"iface_id": "net{i}", "host_dev_name": "tap{i}"}}"#))
        .collect();
    let json = format!(
        r#"{{"drives": [{}], "network-interfaces": [{}], "boot-source": {{"kernel_image_path": "k"}}}}"#,
        drives.join(","),
        interfaces.join(",")
    );
    let (code, out, err) = run_on_json(
        "fc-93.json",
        &json,
        &["plan", "--from", "firecracker", "--arch", "aarch64", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.starts_with("net42")), "{out}");
}

#[test]
fn firecracker_device_count_error_has_the_entry_position() {
    let json = format!(
        "{{\"machine-config\": {{\"mem_size_mib\": 64, \"vcpu_count\": 1}},\n\"drives\": [\n{}\n], \"boot-source\": {{\"kernel_image_path\": \"k\"}}}}\n",
        vec!["{}"; 97].join(",\n")
    );
    let (code, out, _) = run_on_json(
        "fc-97-json.json",
        &json,
        &["plan", "--json", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 2);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let e = &doc["error"];
    assert_eq!(e["field"], "drives[96]");
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_u64()),
        (Some(99), Some(1))
    );
}

#[test]
fn firecracker_converted_spec_is_no_larger_than_a_spec() {
    // A drive id of DEL characters: each becomes a six-byte escape in TOML, so the converted
    // spec would be six times the file. The name made of it keeps only what fits a name, each
    // control character written out as `\u{7f}`.
    let id = "\u{7f}".repeat(200_000);
    let json = format!(
        r#"{{"machine-config": {{"mem_size_mib": 64, "vcpu_count": 1}}, "drives": [{{"drive_id": "{id}", "is_root_device": false, "path_on_host": "d"}}], "boot-source": {{"kernel_image_path": "k"}}}}"#
    );
    let (code, out, err) = run_on_json(
        "fc-big-id.json",
        &json,
        &["init", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.len() < 1024, "{out}");
    let (code, _, err) = run_on_json(
        "fc-big-id.json",
        &json,
        &["plan", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run_on_json(
        "fc-big-id.json",
        &json,
        &["plan", "--json", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
    // Cut after the last whole escape that fits, never inside one.
    let name = format!("{}~", r"\u{7f}".repeat(10));
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = doc["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["serial", name.as_str()], "{out}");
}

#[test]
fn firecracker_json_mistakes_have_file_line_and_column() {
    for (json, line, column, field, message) in [
        (
            "{\"machine-config\": {\"mem_size_mib\": 64, \"vcpu_count\": 1},\n  \"drives\": [1,\n",
            3,
            1,
            Some("drives"),
            "not JSON: EOF while parsing",
        ),
        (
            "{\"machine-config\": {\"mem_size_mib\": 64,\n  \"mem_size\": 1}, \"boot-source\": {\"kernel_image_path\": \"k\"}, \"drives\": []}\n",
            // serde_json finds an unknown key at its closing quote; the key is shown whole.
            2,
            3,
            Some("machine-config.mem_size"),
            "unknown field `mem_size`",
        ),
        (
            "{\"machine-config\": {\"mem_size_mib\": 64, \"vcpu_count\": 1},\n  \"drives\": [{\"drive_id\": 7, \"is_root_device\": false, \"path_on_host\": \"d\"}], \"boot-source\": {\"kernel_image_path\": \"k\"}}\n",
            2,
            27,
            Some("drives[0].drive_id"),
            "invalid type: integer `7`",
        ),
        (
            // A drive is an object, not the array form of its fields.
            "{\"machine-config\": {\"mem_size_mib\": 64, \"vcpu_count\": 1}, \"drives\": [[7]], \"boot-source\": {\"kernel_image_path\": \"k\"}}",
            1,
            70,
            Some("drives[0]"),
            "invalid type: sequence, expected a Firecracker device object",
        ),
        (
            "{\"mem_size_mib\": 64, \"vcpu_count\": 1,\n  \"huge_pages\": \"1G\"}",
            2,
            17,
            Some("huge_pages"),
            "unknown value `1G` (expected one of: None, Transparent, 2M)",
        ),
    ] {
        let (code, out, _) = run_on_json(
            "fc-mistake.json",
            json,
            &["plan", "--json", "--from", "firecracker", "FILE"],
        );
        assert_eq!(code, 2, "{json}");
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        let e = &doc["error"];
        assert_eq!(e["kind"], "spec", "{e}");
        assert!(
            e["file"].as_str().unwrap().ends_with("fc-mistake.json"),
            "{e}"
        );
        assert_eq!(
            (e["line"].as_u64(), e["column"].as_u64()),
            (Some(line), Some(column)),
            "{e}"
        );
        assert_eq!(e["field"].as_str(), field, "{e}");
        assert!(e["message"].as_str().unwrap().contains(message), "{e}");
    }
}

#[test]
fn firecracker_ids_of_names_the_plan_reserves_are_qualified_by_type() {
    // Firecracker's ids are its own: a drive may be `serial` or `GIC`.
    let json = r#"{"machine-config": {"mem_size_mib": 256, "vcpu_count": 1},
        "drives": [{"drive_id": "serial", "is_root_device": false, "path_on_host": "d"}, {"drive_id": "GIC", "is_root_device": false, "path_on_host": "d"}, {"drive_id": "reserved", "is_root_device": false, "path_on_host": "d"}],
        "network-interfaces": [{"iface_id": "boot RAM", "host_dev_name": "tap"}], "boot-source": {"kernel_image_path": "k"}}"#;
    let (code, out, err) = run_on_json(
        "fc-reserved.json",
        json,
        &["init", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
    for name in ["blk-serial", "blk-GIC", "blk-reserved", "net-boot RAM"] {
        assert!(out.contains(&format!("name = \"{name}\"")), "{name}: {out}");
    }
    let (code, out, err) = run_on_json(
        "fc-reserved.json",
        json,
        &["plan", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.starts_with("blk-serial")), "{out}");
}

#[test]
fn firecracker_ids_shared_by_a_drive_and_an_interface_are_qualified_by_type() {
    // Firecracker keeps ids per device type (its Go SDK numbers drives and interfaces from
    // "1" alike): the first device keeps the id, a later one of another type is qualified,
    // and a qualified name that is taken gets a number.
    let json = r#"{"machine-config": {"mem_size_mib": 256, "vcpu_count": 1},
        "drives": [{"drive_id": "1", "is_root_device": false, "path_on_host": "d"}, {"drive_id": "net-1", "is_root_device": false, "path_on_host": "d"}],
        "network-interfaces": [{"iface_id": "1", "host_dev_name": "tap"}],
        "vsock": {"vsock_id": "1", "guest_cid": 3, "uds_path": "/v.sock"}, "boot-source": {"kernel_image_path": "k"}}"#;
    let (code, out, err) = run_on_json(
        "fc-shared.json",
        json,
        &["init", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
    let names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .map(|l| l.trim_end_matches('"'))
        .collect();
    assert_eq!(names[1..], ["1", "net-1", "net-1-2", "vsock-1"], "{out}");
    let (code, _, err) = run_on_json(
        "fc-shared.json",
        json,
        &["plan", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn firecracker_long_ids_shared_by_a_drive_and_an_interface_are_not_refused() {
    // Firecracker sets no length on an id; a spec's names have at most 64 characters. A
    // qualified name that would be longer has its id cut, the cut marked by `~`.
    let id = "a".repeat(62);
    let long = "b".repeat(80);
    let json = format!(
        r#"{{"machine-config": {{"mem_size_mib": 256, "vcpu_count": 1}},
        "drives": [{{"drive_id": "{id}", "is_root_device": true, "path_on_host": "d"}}, {{"drive_id": "{long}", "is_root_device": false, "path_on_host": "d"}}],
        "network-interfaces": [{{"iface_id": "{id}", "host_dev_name": "tap0"}}, {{"iface_id": "{long}", "host_dev_name": "tap"}}],
        "boot-source": {{"kernel_image_path": "k"}}}}"#
    );
    let (code, out, err) = run_on_json(
        "fc-long.json",
        &json,
        &["init", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
    let names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .map(|l| l.trim_end_matches('"'))
        .collect();
    let net = format!("net-{}~", &id[..59]);
    let b63 = format!("{}~", &long[..63]);
    let net_b = format!("net-{}~", &long[..59]);
    assert_eq!(names[1..], [id.as_str(), &b63, &net, &net_b], "{out}");
    let (code, out, err) = run_on_json(
        "fc-long.json",
        &json,
        &["plan", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.starts_with(&net)), "{out}");
}

#[test]
fn firecracker_repeated_drive_id_is_one_device() {
    // Firecracker updates a drive whose id is given again: one virtio-blk device.
    let json = r#"{
  "boot-source": {"kernel_image_path": "vmlinux"},
  "drives": [
    {"drive_id": "rootfs", "path_on_host": "old.ext4", "is_root_device": true, "is_read_only": false},
    {"drive_id": "rootfs", "path_on_host": "new.ext4", "is_root_device": true, "is_read_only": false}
  ],
  "machine-config": {"vcpu_count": 1, "mem_size_mib": 256}
}"#;
    let (code, out, err) = run_on_json(
        "fc-dup.json",
        json,
        &["plan", "--from", "firecracker", "--kernel-cmdline", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "virtio_mmio.device=4K@0xc0001000:5\n");
    let (code, out, err) = run_on_json(
        "fc-dup.json",
        json,
        &["init", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("[[device]]").count(), 1, "{out}");
}

#[test]
fn firecracker_config_without_machine_config_has_128_mib() {
    // Firecracker's default when machine-config is left out or null.
    for json in [
        r#"{"boot-source": {"kernel_image_path": "vmlinux.bin"},
            "drives": [{"drive_id": "rootfs", "path_on_host": "rootfs.ext4", "is_root_device": true}]}"#,
        r#"{"boot-source": {"kernel_image_path": "/vmlinux"}, "machine-config": null, "drives": []}"#,
        r#"{"logger": {"log_path": "/log"}, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
    ] {
        let (code, out, err) = run_on_json(
            "fc-default.json",
            json,
            &["init", "--from", "firecracker", "FILE"],
        );
        assert_eq!(code, 0, "{json}: {err}");
        assert!(out.contains("size = \"128MiB\""), "{json}: {out}");
        let (code, out, err) = run_on_json(
            "fc-default.json",
            json,
            &["plan", "--from", "firecracker", "FILE"],
        );
        assert_eq!(code, 0, "{json}: {err}");
        assert!(out.contains("RAM 128 MiB"), "{json}: {out}");
    }
    // A machine-config object alone still needs its memory size.
    let (code, _, err) = run_on_json(
        "fc-default.json",
        r#"{"vcpu_count": 2}"#,
        &["plan", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("mem_size_mib"), "{err}");
}

#[test]
fn firecracker_value_mistakes_underline_the_whole_value() {
    for (json, value, field, message) in [
        (
            r#"{"machine-config": {"mem_size_mib": 128, "vcpu_count": 1}, "vsock": false, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
            "false",
            "vsock",
            "expected a vsock object",
        ),
        (
            r#"{"machine-config": {"mem_size_mib": 1.5}, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
            "1.5",
            "machine-config.mem_size_mib",
            "expected a whole number",
        ),
        (
            r#"{"mem_size_mib": -128}"#,
            "-128",
            "mem_size_mib",
            "expected a whole number",
        ),
        (
            r#"{"machine-config": {"mem_size_mib": 64, "smt": "yes"}, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
            r#""yes""#,
            "machine-config.smt",
            "expected a boolean",
        ),
        (
            r#"{"machine-config": {"mem_size_mib": 64, "mem_size": 1}, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
            r#""mem_size""#,
            "machine-config.mem_size",
            "unknown field `mem_size`",
        ),
        (
            r#"{"machine-config": {"mem_size_mib": 64, "vcpu_count": 1}, "drives": [[7, 8]], "boot-source": {"kernel_image_path": "k"}}"#,
            "[7, 8]",
            "drives[0]",
            "expected a Firecracker device object",
        ),
        (
            r#"{"machine-config": {"mem_size_mib": 64, "vcpu_count": 1}, "drives": [{"drive_id": "a\"b", "drive_id": "c"}], "boot-source": {"kernel_image_path": "k"}}"#,
            r#""drive_id""#,
            "drives[0]",
            "duplicate field `drive_id`",
        ),
        // Minified: the value right after the colon.
        (
            r#"{"machine-config":[64], "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
            "[64]",
            "machine-config",
            "expected a machine-config object",
        ),
        (
            r#"{"machine-config":{"mem_size_mib":64, "vcpu_count": 1},"vsock":{"vsock_id":["a"]}, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
            r#"["a"]"#,
            "vsock.vsock_id",
            "expected a string",
        ),
        (
            r#"{"machine-config":{"mem_size_mib":{"a":1}}, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
            r#"{"a":1}"#,
            "machine-config.mem_size_mib",
            "expected a whole number",
        ),
    ] {
        let (code, _, err) = run_on_json(
            "fc-value.json",
            json,
            &["plan", "--from", "firecracker", "FILE"],
        );
        assert_eq!(code, 2, "{json}: {err}");
        let at = json.rfind(value).unwrap();
        assert!(
            err.contains(&format!("fc-value.json:1:{}", at + 1)),
            "{json}: {err}"
        );
        // The whole value is underlined, and no more.
        let carets = err.lines().find(|l| l.contains('^')).unwrap_or_default();
        assert_eq!(carets.matches('^').count(), value.len(), "{json}: {err}");
        assert!(err.contains(&format!("error: {field}: ")), "{json}: {err}");
        assert!(err.contains(message), "{json}: {err}");
    }
}

#[test]
fn firecracker_file_name_with_white_space_at_either_end_names_the_vm() {
    // The file's name is the VM's, without the white space a name may not start or end with.
    let (code, out, err) = run_on_json(
        " fc vm .json",
        r#"{"mem_size_mib": 64, "vcpu_count": 1}"#,
        &["plan", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("fc vm: x86_64"), "{out}");
}

#[test]
fn init_from_firecracker_escapes_what_must_not_reach_a_terminal() {
    // Ids with a right-to-left override, a line separator, a C1 control, DEL and a tag
    // character, alone and beside quotes and backslashes (which could make the serializer
    // choose another kind of string): the spec printed has none of them raw, and names each
    // device by its id with those characters written out, a name the spec takes.
    let ids = [
        "a\u{202e}b\u{2028}c\u{85}d",
        "q\"u\u{202e}o",
        "s'q\"\u{7f}\\",
        "t\u{e0041}\\n",
        "multi\nline\u{2029}'''",
    ];
    let drives: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                "{{\"drive_id\": {}, \"is_root_device\": false, \"path_on_host\": \"d\"}}",
                serde_json::to_string(id).unwrap()
            )
        })
        .collect();
    let json = format!(
        r#"{{"machine-config": {{"mem_size_mib": 64, "vcpu_count": 1}}, "drives": [{}], "boot-source": {{"kernel_image_path": "k"}}}}"#,
        drives.join(",")
    );
    let (code, spec, err) = run_on_json(
        "fc-bidi.json",
        &json,
        &["init", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        !spec
            .chars()
            .any(|c| memvisor_cli::render::needs_escape(c) && c != '\n'),
        "{spec:?}"
    );
    let table: toml::Table = toml::from_str(&spec).unwrap();
    let names: Vec<&str> = table["device"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            r"a\u{202e}b\u{2028}c\u{85}d",
            r#"q"u\u{202e}o"#,
            r#"s'q"\u{7f}\"#,
            r"t\u{e0041}\n",
            r"multi\u{a}line\u{2029}'''",
        ]
    );
    let (code, _, err) = run_on_json(
        "fc-bidi.json",
        &json,
        &["plan", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn firecracker_pmem_and_memory_hotplug_are_refused_not_dropped() {
    // Both add devices and guest memory that the plan does not model: a plan without them
    // would not be Firecracker's map.
    let pmem = r#"{"machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
 "pmem": [{"id": "pmem0", "path_on_host": "/srv/pmem.img"}], "boot-source": {"kernel_image_path": "k"}, "drives": []}"#;
    let hotplug = r#"{"machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
 "memory-hotplug": {"total_size_mib": 1024}, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#;
    for (name, json, field, at) in [
        ("fc-pmem.json", pmem, "error: pmem: ", ":2:10"),
        (
            "fc-hotplug.json",
            hotplug,
            "error: memory-hotplug: ",
            ":2:20",
        ),
    ] {
        for command in ["plan", "check", "init"] {
            let (code, out, err) =
                run_on_json(name, json, &[command, "--from", "firecracker", "FILE"]);
            assert_eq!(code, 2, "{name} {command}: {out}{err}");
            assert!(out.is_empty(), "{name} {command}: {out}");
            assert!(err.starts_with(field), "{name} {command}: {err}");
            assert!(err.contains("not modelled"), "{name} {command}: {err}");
            assert!(err.contains(at), "{name} {command}: {err}");
        }
    }
    // Alone, they make a whole configuration, not a machine-config object.
    let (code, _, err) = run_on_json(
        "fc-pmem-alone.json",
        r#"{"pmem": [{"id": "p", "path_on_host": "/p"}], "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
        &["plan", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not modelled"), "{err}");
    // None of either is Firecracker's default.
    for rest in [r#", "pmem": []"#, r#", "memory-hotplug": null"#] {
        let (code, out, err) = run_on_json(
            "fc-none.json",
            &firecracker_with(0, 0, rest),
            &["plan", "--from", "firecracker", "FILE"],
        );
        assert_eq!(code, 0, "{rest}: {err}");
        assert!(out.contains("RAM 64 MiB"), "{rest}: {out}");
    }
}

#[test]
fn firecracker_pmem_null_is_refused_as_a_list_of_none_is() {
    // Firecracker's `pmem` is a list that may be left out (`serde(default)`), as
    // `network-interfaces` is: `null` is not a list, and Firecracker refuses it.
    for (rest, field) in [
        (r#", "pmem": null"#, "error: pmem: "),
        (
            r#", "network-interfaces": null"#,
            "error: network-interfaces: ",
        ),
    ] {
        let json = firecracker_with(0, 0, "").replace(r#", "network-interfaces": []"#, rest);
        let (code, out, err) = run_on_json(
            "fc-list-null.json",
            &json,
            &["plan", "--from", "firecracker", "FILE"],
        );
        assert_eq!(code, 2, "{rest}: {out}{err}");
        assert!(err.starts_with(field), "{rest}: {err}");
        assert!(err.contains("invalid type: null"), "{rest}: {err}");
    }
}

#[test]
fn cloud_hypervisor_reads_its_values_as_it_does() {
    // Accepted by Cloud Hypervisor: an empty value is one not given (`thp` stays on), the
    // string is trimmed as a whole, a size may be quoted.
    for (option, expect) in [
        ("size=1G,thp=", "anonymous, THP"),
        ("size=1G,thp=off,thp=", "anonymous, THP"),
        ("size=1G,hotplug_size=", "0 hotplug slots"),
        ("size=1G,hugepage_size=", "RAM 1 GiB"),
        ("size=1G,hotplugged_size=", "RAM 1 GiB"),
        (" size=1G ", "RAM 1 GiB"),
        ("size=\"1G\",hotplug_size=\"2G\"", "1 hotplug slot"),
        ("size=1G,hotplug_method=ACPI", "RAM 1 GiB"),
        (
            "size=1G,hotplug_method=virtio-mem,hotplug_size=1G,hotplugged_size=512M",
            "1 hotplug slot",
        ),
        ("size=1G,hugepages=on", "memfd, 2 MiB pages"),
        // Its guests have up to 46 address bits (its default `max_phys_bits`).
        ("size=1G", "46-bit guest physical addresses"),
        ("size=1G,hotplug_size=1024G", "1 hotplug slot"),
    ] {
        let (code, out, err) = run(&["plan", "--from", "cloud-hypervisor", option]);
        assert_eq!(code, 0, "{option}: {err}");
        assert!(out.contains(expect), "{option}: {out}");
    }
    // Refused by Cloud Hypervisor.
    for (option, expect) in [
        ("size=1G,hotplug_method=bogus", "hotplug_method: `bogus`"),
        ("size=1G,hotplug_method=\"\"", "hotplug_method: `\"\"`"),
        (
            "size=1G,hotplugged_size=xyz",
            "hotplugged_size: `xyz` is not a number",
        ),
        ("size=1G,hotplug_method=\"acpi", "unbalanced"),
        ("size=1G,shared=\"on\"", "shared: `\"on\"` is not on or off"),
        // Refused by its memory manager when the VM is made.
        ("size=1G,hotplug_size=0", "hotplug_size: 0 B"),
        (
            "size=1G,hotplug_method=virtio-mem,hotplugged_size=512M",
            "hotplugged_size: given without hotplug_size",
        ),
        (
            "size=1G,hotplug_method=virtio-mem,hotplug_size=1G,hotplugged_size=2G",
            "hotplugged_size: 2 GiB is more than hotplug_size",
        ),
        (
            "size=1G,hotplug_size=1G,hotplugged_size=1G",
            "hotplugged_size: given with hotplug_method=acpi",
        ),
        (
            "size=1G,hotplug_method=virtio-mem,hotplug_size=64M",
            "hotplug_size: 64 MiB is not a multiple of 128 MiB",
        ),
    ] {
        let (code, out, err) = run(&["plan", "--from", "cloud-hypervisor", option]);
        assert_eq!(code, 2, "{option}: {out}");
        assert!(err.contains(expect), "{option}: {err}");
    }
}

#[test]
fn firecracker_configs_firecracker_refuses_are_refused() {
    // What Firecracker refuses when it applies the configuration, with the field and where it
    // is written.
    for (json, field, problem, at) in [
        (
            r#"{"machine-config": {"vcpu_count": 0, "mem_size_mib": 64}, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
            "machine-config.vcpu_count",
            "1 to 32",
            ":1:35",
        ),
        (
            r#"{"vcpu_count": 33, "mem_size_mib": 64}"#,
            "vcpu_count",
            "1 to 32",
            ":1:16",
        ),
        (
            r#"{"vcpu_count": 3, "smt": true, "mem_size_mib": 64}"#,
            "vcpu_count",
            "1 or an even number",
            ":1:16",
        ),
        (
            r#"{"machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
 "balloon": {"amount_mib": 65, "deflate_on_oom": false}, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
            "balloon.amount_mib",
            "more than the 64 MiB of guest memory",
            ":2:28",
        ),
        (
            r#"{"machine-config": {"vcpu_count": 1,
 "mem_size_mib": 63, "huge_pages": "2M"}, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
            "machine-config.mem_size_mib",
            "63 MiB is not a multiple of the 2 MiB huge page",
            ":2:18",
        ),
        (
            r#"{"vcpu_count": 1, "mem_size_mib": 0}"#,
            "mem_size_mib",
            "0 MiB of guest memory",
            ":1:35",
        ),
    ] {
        for command in ["plan", "init"] {
            let (code, out, err) = run_on_json(
                "fc-refused.json",
                json,
                &[command, "--from", "firecracker", "FILE"],
            );
            assert_eq!(code, 2, "{json} {command}: {out}{err}");
            assert!(out.is_empty(), "{json} {command}: {out}");
            assert!(
                err.starts_with(&format!("error: {field}: ")),
                "{json} {command}: {err}"
            );
            assert!(err.contains(problem), "{json} {command}: {err}");
            assert!(err.contains(at), "{json} {command}: {err}");
        }
    }
    // What Firecracker takes: the limits themselves, a balloon as large as the memory, a
    // balloon or an initrd with base pages or with huge pages (since Firecracker 1.14 and 1.11).
    for json in [
        r#"{"machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "huge_pages": "2M"},
 "balloon": {"amount_mib": 0, "deflate_on_oom": false}, "boot-source": {"kernel_image_path": "k"}, "drives": []}"#,
        r#"{"machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "huge_pages": "2M"},
 "boot-source": {"kernel_image_path": "vmlinux", "initrd_path": "initrd.img"}, "drives": []}"#,
        r#"{"vcpu_count": 32, "smt": true, "mem_size_mib": 64}"#,
        r#"{"vcpu_count": 1, "smt": true, "mem_size_mib": 64}"#,
        r#"{"vcpu_count": 7, "mem_size_mib": 64}"#,
        r#"{"machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "huge_pages": "None"},
 "balloon": {"amount_mib": 64, "deflate_on_oom": true},
 "boot-source": {"kernel_image_path": "vmlinux", "initrd_path": "initrd.img"}, "drives": []}"#,
        r#"{"machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "huge_pages": "2M"},
 "boot-source": {"kernel_image_path": "vmlinux", "initrd_path": null}, "drives": []}"#,
    ] {
        let (code, _, err) = run_on_json(
            "fc-taken.json",
            json,
            &["plan", "--from", "firecracker", "FILE"],
        );
        assert_eq!(code, 0, "{json}: {err}");
    }
}

/// Cloud Hypervisor's memory zones and guest NUMA nodes, given as its command line: each
/// zone's RAM is on its guest node, bound to its host node, with the zones' backing.
#[test]
fn plan_from_cloud_hypervisor_memory_zones_and_numa_nodes() {
    let options = "--memory size=0,hotplug_method=virtio-mem \
                   --memory-zone id=mem0,size=1G,hugepages=on,host_numa_node=0 \
                   id=mem1,size=1G,hugepages=on,host_numa_node=0 \
                   --memory-zone id=mem2,size=3G,hugepages=on,host_numa_node=1,hotplug_size=2G \
                   --numa guest_numa_id=1,cpus=[2-3],memory_zones=mem2,distances=[0@20] \
                   --numa guest_numa_id=0,cpus=[0,1],memory_zones=[mem0,mem1]";
    // The options start with `--`: they follow a `--`, which ends memvisor's own options.
    let (code, out, err) = run(&["plan", "--from", "cloud-hypervisor", "--", options]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("RAM 5 GiB in 2 NUMA nodes"), "{out}");
    let (code, toml, err) = run(&["init", "--from", "cloud-hypervisor", "--", options]);
    assert_eq!(code, 0, "{err}");
    let spec = memvisor_cli::spec::parse(memvisor_cli::spec::Source {
        origin: "ch.toml",
        text: &toml,
    })
    .unwrap();
    let nodes: Vec<(u64, Vec<u32>)> = spec
        .nodes
        .iter()
        .map(|n| (n.size, n.host_nodes.clone()))
        .collect();
    assert_eq!(nodes, [(2 << 30, vec![0]), (3 << 30, vec![1])], "{toml}");
    assert_eq!(spec.memory.pages, memvisor_cli::spec::PageKind::Huge2M);
    let hotplug = spec.hotplug.as_ref().unwrap();
    assert_eq!(
        (hotplug.slots, hotplug.slot_size, hotplug.node),
        (1, 2 << 30, 1)
    );
    // What Cloud Hypervisor refuses is refused, with exit code 2.
    let (code, _, err) = run(&[
        "plan",
        "--from",
        "cloud-hypervisor",
        "--",
        "--memory size=0 --memory-zone id=mem0,size=1G --numa guest_numa_id=0,memory_zones=mem9",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown memory zone `mem9`"), "{err}");
}

/// A mistake found after Cloud Hypervisor's command line was converted points into the
/// converted spec, named after the command line rather than `--memory` alone.
#[test]
fn cloud_hypervisor_command_line_mistake_after_conversion_names_the_command_line() {
    let (code, _, err) = run(&[
        "plan",
        "--from",
        "cloud-hypervisor",
        "--",
        "--memory size=0,hotplug_method=virtio-mem \
         --memory-zone id=a,size=1G,hugepages=on,hugepage_size=1G,hotplug_size=128M",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--> cloud-hypervisor (as a memvisor spec):"),
        "{err}"
    );
    // The `--memory` option string alone keeps its name.
    let (code, _, err) = run(&["plan", "--from", "cloud-hypervisor", "size=4095"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--> --memory (as a memvisor spec):"), "{err}");
}

/// Cloud Hypervisor's JSON `VmConfig` (what `ch-remote create` sends), as a file and as text:
/// the same plan as its command line, and mistakes shown at their field's line and column.
#[test]
fn plan_from_cloud_hypervisor_json_vm_config() {
    let json = r#"{
  "cpus": {"boot_vcpus": 4, "max_vcpus": 4},
  "payload": {"kernel": "/srv/vmlinux", "cmdline": "console=ttyS0"},
  "disks": [{"path": "/srv/rootfs.img"}],
  "memory": {
    "size": 0,
    "hotplug_method": "VirtioMem",
    "zones": [
      {"id": "mem0", "size": 1073741824, "hugepages": true, "host_numa_node": 0},
      {"id": "mem1", "size": 1073741824, "hugepages": true, "host_numa_node": 0},
      {"id": "mem2", "size": 3221225472, "hugepages": true, "host_numa_node": 1,
       "hotplug_size": 2147483648}
    ]
  },
  "numa": [
    {"guest_numa_id": 0, "cpus": [0, 1], "memory_zones": ["mem0", "mem1"]},
    {"guest_numa_id": 1, "cpus": [2, 3], "memory_zones": ["mem2"],
     "distances": [{"destination": 0, "distance": 20}]}
  ]
}
"#;
    let options = "--memory size=0,hotplug_method=virtio-mem \
                   --memory-zone id=mem0,size=1G,hugepages=on,host_numa_node=0 \
                   id=mem1,size=1G,hugepages=on,host_numa_node=0 \
                   id=mem2,size=3G,hugepages=on,host_numa_node=1,hotplug_size=2G \
                   --numa guest_numa_id=0,cpus=[0,1],memory_zones=[mem0,mem1] \
                   --numa guest_numa_id=1,cpus=[2-3],memory_zones=mem2,distances=[0@20]";
    let dir = std::env::temp_dir().join(format!("memvisor-ch-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("vm.json");
    std::fs::write(&file, json).unwrap();
    let file = file.to_string_lossy().into_owned();
    let (code, from_file, err) = run(&["plan", "--from", "cloud-hypervisor-json", &file]);
    assert_eq!(code, 0, "{err}");
    assert!(
        from_file.contains("RAM 5 GiB in 2 NUMA nodes"),
        "{from_file}"
    );
    // The same plan from the text, and from the command line.
    let (code, from_text, err) = run(&["plan", "--from", "cloud-hypervisor", json]);
    assert_eq!(code, 0, "{err}");
    let (code, from_line, err) = run(&["plan", "--from", "cloud-hypervisor", "--", options]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(from_file, from_line);
    assert_eq!(from_text, from_line);
    let (code, toml, err) = run(&["init", "--from", "cloud-hypervisor-json", &file]);
    assert_eq!(code, 0, "{err}");
    let (_, toml_of_line, _) = run(&["init", "--from", "cloud-hypervisor", "--", options]);
    assert_eq!(toml, toml_of_line);
    let (code, out, err) = run(&["plan", "--json", "--from", "cloud-hypervisor-json", &file]);
    assert_eq!(code, 0, "{err}");
    let _: serde_json::Value = serde_json::from_str(&out).unwrap();

    // A mistake: its file, line, column and field, exit code 2.
    let bad = json.replace(r#""hotplug_size": 2147483648"#, r#""hotplug_size": 1000"#);
    std::fs::write(dir.join("bad.json"), &bad).unwrap();
    let bad_file = dir.join("bad.json").to_string_lossy().into_owned();
    let (code, _, err) = run(&["plan", "--from", "cloud-hypervisor-json", &bad_file]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{bad_file}:12:24")), "{err}");
    assert!(err.contains("memory.zones[2].hotplug_size"), "{err}");
    assert!(err.contains("not a multiple of 128 MiB"), "{err}");
    let (code, _, err) = run(&["plan", "--from", "cloud-hypervisor", &bad]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("<VmConfig>:12:24"), "{err}");
    let bad = json.replace(r#""size": 0,"#, r#""size": "0","#);
    std::fs::write(dir.join("bad.json"), &bad).unwrap();
    let (code, _, err) = run(&["plan", "--from", "cloud-hypervisor-json", &bad_file]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{bad_file}:6:13")), "{err}");
    assert!(err.contains("memory.size"), "{err}");
    let (code, _, err) = run(&["plan", "--from", "cloud-hypervisor-json"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&[
        "plan",
        "--from",
        "cloud-hypervisor-json",
        "/nonexistent/vm.json",
    ]);
    assert_ne!(code, 0, "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `hugepages=on` without `hugepage_size` is the planning host's default huge page size, as
/// Cloud Hypervisor takes it; a note says so and `--host-hugepage-size` pins it.
#[test]
fn cloud_hypervisor_default_huge_page_size_is_the_hosts_or_pinned() {
    for (pin, expect) in [("1G", "memfd, 1 GiB pages"), ("2M", "memfd, 2 MiB pages")] {
        for options in [
            "size=2G,hugepages=on",
            "--memory size=0 --memory-zone id=a,size=2G,hugepages=on",
        ] {
            let (code, out, err) = run(&[
                "plan",
                "--host-hugepage-size",
                pin,
                "--from",
                "cloud-hypervisor",
                "--",
                options,
            ]);
            assert_eq!(code, 0, "{options}: {err}");
            assert!(out.contains(expect), "{options}: {out}");
            assert!(err.is_empty(), "{options}: {err}");
        }
        let (code, toml, err) = run(&[
            "init",
            "--from",
            "cloud-hypervisor",
            "--host-hugepage-size",
            pin,
            r#"{"payload": {"kernel": "/k"}, "memory": {"size": 2147483648, "hugepages": true}}"#,
        ]);
        assert_eq!(code, 0, "{err}");
        let pages = if pin == "1G" { "1GiB" } else { "2MiB" };
        assert!(
            toml.contains(&format!("huge_pages = \"{pages}\"")),
            "{toml}"
        );
    }
    // An explicit hugepage_size is not the host's: no note.
    let (code, _, err) = run(&[
        "plan",
        "--from",
        "cloud-hypervisor",
        "size=2G,hugepages=on,hugepage_size=2M",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "{err}");
    // Without the pin, this host's default, with a note that says where it comes from; or,
    // where this host has no huge pages, or no /dev/hugepages for Cloud Hypervisor to take the
    // alignment from, a refusal that says how to pin it.
    let (code, out, err) =
        run_on_host(&["plan", "--from", "cloud-hypervisor", "size=2G,hugepages=on"]);
    let default = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("Hugepagesize:"))
            .map(str::to_owned)
    });
    let mount = std::fs::metadata("/dev/hugepages").is_ok();
    match default {
        Some(line) if !mount && (line.ends_with(" 2048 kB") || line.ends_with(" 1048576 kB")) => {
            assert_eq!(code, 2, "{out}");
            assert!(err.contains("/dev/hugepages"), "{err}");
            assert!(err.contains("--host-hugepage-size"), "{err}");
        }
        Some(line) if line.ends_with(" 2048 kB") || line.ends_with(" 1048576 kB") => {
            assert_eq!(code, 0, "{err}");
            assert!(out.contains("memfd, "), "{out}");
            assert!(err.starts_with("note: "), "{err}");
            assert!(err.contains("Hugepagesize in /proc/meminfo"), "{err}");
            assert!(err.contains("--host-hugepage-size"), "{err}");
        }
        _ => {
            assert_eq!(code, 2, "{out}");
            assert!(err.contains("--host-hugepage-size"), "{err}");
        }
    }
}

/// Hot-pluggable memory is planned where Cloud Hypervisor puts it, at the 128 MiB boundary
/// after boot RAM (its `MemoryManager::start_addr`): 4.5 GiB of RAM ends at 0x1_5fff_ffff, so
/// hotplug starts at 0x1_6000_0000; the converted spec says its window alignment, so planning
/// it gives the same plan.
#[test]
fn cloud_hypervisor_hotplug_plans_where_cloud_hypervisor_puts_it_also_from_the_spec() {
    let dir = std::env::temp_dir().join(format!("memvisor-ch-hotplug-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (options, slot) in [
        (
            "size=4608M,hotplug_size=1G",
            "0x000160000000  0x00019fffffff  1 GiB",
        ),
        (
            r#"{"payload": {"kernel": "/k"},
                "memory": {"size": 4831838208, "hotplug_method": "VirtioMem",
                           "hotplug_size": 1073741824}}"#,
            "0x000160000000  0x00019fffffff  1 GiB",
        ),
        // 3 GiB and 640 MiB of zones: RAM ends at 0x1_27ff_ffff.
        (
            "--memory size=0,hotplug_method=virtio-mem \
             --memory-zone id=a,size=3G id=b,size=640M,hotplug_size=1G",
            "0x000128000000  0x000167ffffff  1 GiB",
        ),
    ] {
        let (code, planned, err) = run(&["plan", "--from", "cloud-hypervisor", "--", options]);
        assert_eq!(code, 0, "{options}: {err}");
        assert!(planned.contains(slot), "{options}: {planned}");
        let (code, toml, err) = run(&["init", "--from", "cloud-hypervisor", "--", options]);
        assert_eq!(code, 0, "{options}: {err}");
        assert!(toml.contains("window_align = \"128MiB\""), "{toml}");
        let file = dir.join("vm.toml");
        std::fs::write(&file, &toml).unwrap();
        let (code, again, err) = run(&["plan", &file.to_string_lossy()]);
        assert_eq!(code, 0, "{options}: {err}");
        assert_eq!(again, planned, "{options}");
        // Without the key, the windows are whole GiB: another plan.
        let whole = toml.replace("window_align = \"128MiB\"\n", "");
        std::fs::write(&file, &whole).unwrap();
        let (code, other, err) = run(&["plan", &file.to_string_lossy()]);
        assert_eq!(code, 0, "{options}: {err}");
        assert!(!other.contains(slot), "{options}: {other}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--host-hugepage-size` only changes Cloud Hypervisor's formats: with any other it would have
/// no effect, so it is refused as a usage mistake, never silently ignored.
#[test]
fn host_hugepage_size_without_a_cloud_hypervisor_format_is_a_usage_error() {
    let firecracker = example("firecracker.json");
    let microvm = example("microvm.toml");
    let mut cases: Vec<Vec<&str>> = Vec::new();
    for command in ["plan", "back", "check"] {
        // The built-in default spec, a memvisor spec file, a Firecracker file.
        cases.push(vec![command, "--host-hugepage-size", "2M"]);
        cases.push(vec![command, "--host-hugepage-size", "1G", &microvm]);
        cases.push(vec![
            command,
            "--from",
            "memvisor",
            "--host-hugepage-size",
            "2M",
            &microvm,
        ]);
        cases.push(vec![
            command,
            "--from",
            "firecracker",
            "--host-hugepage-size",
            "2M",
            &firecracker,
        ]);
        cases.push(vec![
            command,
            "--json",
            "--host-hugepage-size",
            "2M",
            &microvm,
        ]);
    }
    cases.push(vec!["init", "--host-hugepage-size", "2M"]);
    cases.push(vec![
        "init",
        "--from",
        "firecracker",
        "--host-hugepage-size",
        "1G",
        &firecracker,
    ]);
    for args in cases {
        let (code, out, err) = run_on_host(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        if args.contains(&"--json") {
            let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(doc["error"]["kind"], "usage", "{args:?}: {out}");
            let message = doc["error"]["message"].as_str().unwrap();
            assert!(message.contains("--host-hugepage-size"), "{message}");
        } else {
            assert!(out.is_empty(), "{args:?}: {out}");
            assert!(
                err.contains("--host-hugepage-size") && err.contains("cloud-hypervisor"),
                "{args:?}: {err}"
            );
        }
    }
}

#[test]
fn host_hugepage_size_with_a_cloud_hypervisor_format_is_taken() {
    let (code, out, err) = run_on_host(&[
        "plan",
        "--from",
        "cloud-hypervisor",
        "--host-hugepage-size",
        "1G",
        "size=2G,hugepages=on",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 GiB"), "{out}");
    let (code, _, err) = run_on_host(&[
        "check",
        "--from",
        "cloud-hypervisor",
        "--host-hugepage-size",
        "2M",
        "size=64M",
    ]);
    assert!(code == 0 || code == 1, "{err}");
}

/// Firecracker's `VmmConfig` has `logger`, `metrics` and `cpu-config` fields, which the
/// conversion does not read: given twice, serde refuses them as it refuses any field given
/// twice, so Firecracker refuses the file; a key Firecracker does not know, which it ignores,
/// may be given twice.
#[test]
fn firecracker_skipped_sections_given_twice_are_refused() {
    for key in ["logger", "metrics", "cpu-config"] {
        let json = format!(
            r#"{{"{key}": null, "boot-source": {{"kernel_image_path": "k"}}, "drives": [], "{key}": null}}"#
        );
        let (code, _, err) = run_on_json(
            "fc-twice.json",
            &json,
            &["plan", "--from", "firecracker", "FILE"],
        );
        assert_eq!(code, 2, "{json}: {err}");
        assert!(
            err.contains(&format!("duplicate field `{key}`")),
            "{json}: {err}"
        );
        let at = json.rfind(&format!("\"{key}\"")).unwrap();
        assert!(
            err.contains(&format!("fc-twice.json:1:{}", at + 1)),
            "{json}: {err}"
        );
    }
    let json = r#"{"zz": 1, "boot-source": {"kernel_image_path": "k"}, "drives": [], "zz": 2}"#;
    let (code, _, err) = run_on_json(
        "fc-twice.json",
        json,
        &["plan", "--from", "firecracker", "FILE"],
    );
    assert_eq!(code, 0, "{json}: {err}");
}

/// Cloud Hypervisor's `VmConfig` has `serial`, `tpm`, `landlock_enable` and `landlock_rules`
/// fields in every build, which the conversion does not read: given twice, serde refuses them,
/// so Cloud Hypervisor refuses the file; a key it does not know may be given twice.
#[test]
fn cloud_hypervisor_unread_fields_given_twice_are_refused() {
    let config = |extra: &str| {
        format!(
            r#"{{{extra}, "payload": {{"kernel": "k"}}, "memory": {{"size": 1073741824}}, {extra}}}"#
        )
    };
    for (key, value) in [
        ("serial", "{}"),
        ("tpm", "null"),
        ("landlock_enable", "false"),
        ("landlock_rules", "null"),
    ] {
        let text = config(&format!(r#""{key}": {value}"#));
        let (code, _, err) = run(&["plan", "--from", "cloud-hypervisor", "--", &text]);
        assert_eq!(code, 2, "{text}: {err}");
        assert!(
            err.contains(&format!("duplicate field `{key}`")),
            "{text}: {err}"
        );
    }
    let text = config(r#""zz": 1"#);
    let (code, _, err) = run(&["plan", "--from", "cloud-hypervisor", "--", &text]);
    assert_eq!(code, 0, "{text}: {err}");
}

/// Cloud Hypervisor's `VmConfig` has a `debug_console` field in its x86_64 builds (only):
/// given twice, an x86_64 build refuses the file, as its serde refuses any field given twice,
/// so a conversion for x86_64 refuses it; one for aarch64, where it is an unknown field, plans
/// it.
#[test]
fn cloud_hypervisor_debug_console_given_twice_is_refused_on_x86_64() {
    let text = r#"{"debug_console": {}, "payload": {"kernel": "k"}, "memory": {"size": 1073741824}, "debug_console": {}}"#;
    let (code, _, err) = run(&["plan", "--from", "cloud-hypervisor", "--", text]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("duplicate field `debug_console`"), "{err}");
    let at = text.rfind("\"debug_console\"").unwrap();
    assert!(err.contains(&format!("<VmConfig>:1:{}", at + 1)), "{err}");
    let (code, _, err) = run(&[
        "plan",
        "--arch",
        "aarch64",
        "--from",
        "cloud-hypervisor",
        "--",
        text,
    ]);
    assert_eq!(code, 0, "{err}");
}
