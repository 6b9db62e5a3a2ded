//! Other VMMs' formats (`plan --from firecracker|cloud-hypervisor`) and the guest kernel's
//! command line (`plan --kernel-cmdline`), through the command.

use std::path::PathBuf;

fn run(args: &[&str]) -> (u8, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut argv = vec!["memvisor"];
    argv.extend_from_slice(args);
    let code = memvisor_cli::run(argv, &mut out, &mut err, false);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn firecracker_file() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/firecracker.json")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn plan_from_firecracker_config_maps_memory_and_devices() {
    let (code, out, err) = run(&["plan", "--from", "firecracker", &firecracker_file()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("firecracker: x86_64"), "{out}");
    assert!(out.contains("RAM 1 GiB in 1 NUMA node"), "{out}");
    assert!(out.contains("memfd, 2 MiB pages"), "{out}");
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
        &firecracker_file(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "virtio_mmio.device=4K@0xc0000000:5 virtio_mmio.device=4K@0xc0001000:6 \
         virtio_mmio.device=4K@0xc0002000:7\n"
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
    let (code, spec, err) = run(&["init", "--from", "firecracker", &firecracker_file()]);
    assert_eq!(code, 0, "{err}");
    assert!(spec.contains("[memory]"), "{spec}");
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("firecracker.toml");
    std::fs::write(&path, &spec).unwrap();
    let (_, from_toml, _) = run(&["plan", path.to_str().unwrap()]);
    let (_, from_json, _) = run(&["plan", "--from", "firecracker", &firecracker_file()]);
    assert_eq!(from_toml, from_json);
    let (code, _, _) = run(&["init", "somefile.toml"]);
    assert_eq!(code, 2);
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
        r#"{"machine-config": {"mem_size_mib": 128},
            "drives": [{"drive_id": "rng0"}, {"drive_id": "balloon0"}],
            "entropy": {}, "balloon": {"amount_mib": 0}}"#,
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
