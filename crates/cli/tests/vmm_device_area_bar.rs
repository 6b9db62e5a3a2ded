//! Every Cloud Hypervisor guest has a virtio-rng device (its `rng` has no "off") and, with
//! the default `--console tty`, a virtio-console device, and a virtio device on PCI segment 0
//! other than a boot-time block device takes its 512 KiB BAR from the 64-bit PCI device area,
//! at an 8 MiB-aligned address (`VIRTIO_PCI_BAR_ALIGN`), allocated from the top, one 8 MiB
//! slot each. The platform device area starts 1 MiB and 64 KiB below `2^phys_bits`, so the
//! highest slot is at `2^phys_bits - 8 MiB` and the two default devices need guest memory to
//! end at `2^phys_bits - 16 MiB` at the latest: memory ending above it leaves Cloud Hypervisor
//! no place for their BARs, and it cannot start (`vmm_device_area_pci.rs` counts the devices of
//! a `VmConfig`). On aarch64 Cloud Hypervisor's RAM starts at 1 GiB and its hole runs from
//! 4032 MiB to 4 GiB, so memory ends 64 MiB higher than on x86_64, and its device tree takes
//! the 64-bit PCI device area from 8 GiB, so that area must reach past 8 GiB.

const M: u64 = 1 << 20;
const G: u64 = 1 << 30;
const K: u64 = 1 << 10;

mod common;

use common::{HUGE_PAGES_2M, Memvisor, Outcome, planned, refused};

/// Runs `memvisor ARGS` with Cloud Hypervisor's default huge page size pinned to 2 MiB.
fn run(args: &[&str]) -> Outcome {
    Memvisor::new().flags(&HUGE_PAGES_2M).run(args)
}

fn plan(arch: &str, options: &str) -> Outcome {
    run(&[
        "plan",
        "--from",
        "cloud-hypervisor",
        "--arch",
        arch,
        "--",
        options,
    ])
}

fn assert_refused(arch: &str, options: &str, field: &str) {
    let err = refused(&format!("{arch} {options}"), plan(arch, options), &[]);
    assert!(
        err.contains(&format!("{field}: ")),
        "{arch} {options}: {err}"
    );
    assert!(err.contains("device area"), "{arch} {options}: {err}");
    // One message line, its words one space apart.
    let first = err.lines().next().unwrap_or_default();
    assert!(!first.contains("  "), "{arch} {options}: {err}");
}

fn assert_planned(arch: &str, options: &str) {
    planned(&format!("{arch} {options}"), plan(arch, options));
}

/// The highest start of the 64-bit PCI device area that still holds the BARs of the
/// virtio-rng and virtio-console devices.
fn last_bar(bits: u32) -> u64 {
    (1u64 << bits) - 16 * M
}

#[test]
fn boot_ram_must_leave_room_for_the_virtio_rng_bar() {
    // On x86_64 RAM from 4 GiB on ends at `size + 1 GiB`.
    let last = last_bar(46);
    assert_planned("x86_64", &format!("size={}", last - G));
    // A page more: the 64-bit area is just under 15 MiB, and holds one 8 MiB-aligned BAR only.
    assert_refused("x86_64", &format!("size={}", last - G + 4 * K), "size");
    assert_refused("x86_64", &format!("size={}", last - G + 4 * M), "size");
}

#[test]
fn acpi_hotplug_must_leave_room_for_the_virtio_rng_bar() {
    // Boot RAM of 4 GiB ends at 5 GiB, a 128 MiB boundary, where the hotplug area starts.
    let last = last_bar(46);
    assert_planned(
        "x86_64",
        &format!("size={},hotplug_size={}", 4 * G, last - 5 * G),
    );
    assert_refused(
        "x86_64",
        &format!("size={},hotplug_size={}", 4 * G, last - 5 * G + 4 * K),
        "hotplug_size",
    );
}

#[test]
fn zones_must_leave_room_for_the_virtio_rng_bar() {
    let last = last_bar(46);
    let zones = |second: u64| {
        format!("--memory size=0 --memory-zone id=a,size=2G --memory-zone id=b,size={second}")
    };
    assert_planned("x86_64", &zones(last - 3 * G));
    assert_refused("x86_64", &zones(last - 3 * G + 4 * K), "size");
}

#[test]
fn aarch64_lays_memory_out_as_cloud_hypervisor_does_there() {
    let last = last_bar(46);
    // On aarch64 RAM of more than 3008 MiB ends at `size + 1088 MiB`.
    assert_planned("aarch64", &format!("size={}", last - 1088 * M));
    assert_refused(
        "aarch64",
        &format!("size={}", last - 1088 * M + 4 * K),
        "size",
    );
    // What x86_64 plans is refused on aarch64.
    assert_planned("x86_64", &format!("size={}", last - 1024 * M));
    assert_refused("aarch64", &format!("size={}", last - 1024 * M), "size");
    // Hot-pluggable memory starts at the 128 MiB boundary after that end.
    let size = 4 * G;
    let start = (size + 1088 * M).div_ceil(128 * M) * (128 * M);
    assert_planned(
        "aarch64",
        &format!("size={size},hotplug_size={}", last - start),
    );
    assert_refused(
        "aarch64",
        &format!("size={size},hotplug_size={}", last - start + 4 * K),
        "hotplug_size",
    );
}

#[test]
fn aarch64_device_area_must_reach_past_8_gib() {
    // Cloud Hypervisor's aarch64 device tree gives the 64-bit PCI device area from 8 GiB:
    // with 33 address bits it ends below 8 GiB, and that window's size would be negative.
    let json = |bits: u32| {
        format!(
            r#"{{"payload": {{"kernel": "vmlinux"}},
 "cpus": {{"boot_vcpus": 1, "max_vcpus": 1, "max_phys_bits": {bits}}},
 "memory": {{"size": 1073741824}}}}"#
        )
    };
    let (code, out, err) = plan("aarch64", &json(33));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("device area"), "{err}");
    assert!(err.contains("8 GiB"), "{err}");
    assert!(
        !err.lines().next().unwrap_or_default().contains("  "),
        "{err}"
    );
    let (code, _, err) = plan("aarch64", &json(34));
    assert_eq!(code, 0, "{err}");
    // On x86_64, 33 bits leave room for the default devices' BARs below 8 GiB.
    let (code, _, err) = plan("x86_64", &json(33));
    assert_eq!(code, 0, "{err}");
}
