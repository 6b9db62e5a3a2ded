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
