//! Cloud Hypervisor keeps the top of the guest address space for devices: the last 64 KiB
//! are never used, the 1 MiB below them is its platform device area, and its 64-bit PCI
//! device area runs from the end of guest memory (boot RAM, then the hotplug area) up to the
//! platform device area. Guest memory that leaves that device area empty is a configuration
//! Cloud Hypervisor cannot start, so the conversion refuses it; as the area must hold the
//! 8 MiB-aligned BARs of the virtio-rng and (by default) virtio-console devices, memory must
//! end 16 MiB below `2^phys_bits` at the latest (`vmm_device_area_bar.rs`), and what ends
//! there is accepted.

const K: u64 = 1 << 10;
const M: u64 = 1 << 20;
const G: u64 = 1 << 30;

mod common;

use common::{HUGE_PAGES_2M, Memvisor, Outcome, planned, refused};

/// Runs `memvisor ARGS` with Cloud Hypervisor's default huge page size pinned to 2 MiB.
fn run(args: &[&str]) -> Outcome {
    Memvisor::new().flags(&HUGE_PAGES_2M).run(args)
}

fn plan(options: &str) -> Outcome {
    run(&["plan", "--from", "cloud-hypervisor", "--", options])
}

/// A `VmConfig` with `memory` as its memory object and `max_phys_bits` address bits.
fn json(memory: &str, phys_bits: u32) -> String {
    format!(
        r#"{{"payload": {{"kernel": "vmlinux"}},
 "cpus": {{"boot_vcpus": 1, "max_vcpus": 1, "max_phys_bits": {phys_bits}}},
 "memory": {memory}}}"#
    )
}

fn assert_refused(options: &str, field: &str) {
    let err = refused(options, plan(options), &[]);
    assert!(err.contains(&format!("{field}: ")), "{options}: {err}");
    assert!(
        err.contains("device area") && err.contains("Cloud Hypervisor"),
        "{options}: {err}"
    );
}

fn assert_planned(options: &str) {
    planned(options, plan(options));
}

/// Where Cloud Hypervisor's platform device area starts with `bits` address bits.
fn platform_area(bits: u32) -> u64 {
    (1u64 << bits) - 64 * K - M
}

#[test]
fn boot_ram_up_to_the_platform_device_area_is_refused() {
    // RAM from 4 GiB on ends at `size + 1 GiB`: up to the platform area is refused, and so
    // is a page less, which leaves one page of device area and no place for a virtio BAR.
    let top = platform_area(46);
    assert_refused(&format!("size={}", top - G), "size");
    assert_refused(&format!("size={}", top - G - 4 * K), "size");
    assert_refused("size=65535G", "size");
    assert_planned(&format!("size={}", (1u64 << 46) - 16 * M - G));
    assert_planned("size=65534G");
}

#[test]
fn hotplug_area_up_to_the_platform_device_area_is_refused() {
    let top = platform_area(46);
    // Boot RAM ends at 4 GiB + 1 GiB; hot-pluggable memory starts there (a 128 MiB boundary).
    let window = top - 5 * G;
    assert_refused(
        &format!("size={},hotplug_size={window}", 4 * G),
        "hotplug_size",
    );
    assert_planned(&format!("size={},hotplug_size={}", 4 * G, window - 128 * M));
    // The same with virtio-mem, whose area is a multiple of 128 MiB.
    let window = (top - 5 * G) / (128 * M) * (128 * M) + 128 * M;
    assert_refused(
        &format!(
            "size={},hotplug_method=virtio-mem,hotplug_size={window}",
            4 * G
        ),
        "hotplug_size",
    );
    assert_planned(&format!(
        "size={},hotplug_method=virtio-mem,hotplug_size={}",
        4 * G,
        window - 128 * M
    ));
}

#[test]
fn zones_up_to_the_platform_device_area_are_refused() {
    let top = platform_area(46);
    let zones = |last: u64| {
        format!(
            "--memory size=0 --memory-zone id=a,size=2G --memory-zone id=b,size={}",
            last
        )
    };
    assert_refused(&zones(top - G - 2 * G), "size");
    assert_refused(&zones(top - G - 2 * G - 4 * K), "size");
    assert_planned(&zones((1u64 << 46) - 16 * M - G - 2 * G));
    let hotplug = |window: u64| {
        format!(
            "--memory size=0,hotplug_method=virtio-mem --memory-zone id=a,size=4G,\
             hotplug_size={window}"
        )
    };
    let window = (top - 5 * G) / (128 * M) * (128 * M) + 128 * M;
    assert_refused(&hotplug(window), "hotplug_size");
    assert_planned(&hotplug(window - 128 * M));
}

#[test]
fn json_max_phys_bits_moves_the_platform_device_area() {
    let top = platform_area(36);
    for (size, refused) in [(63 * G, true), (top - G, true), (62 * G, false)] {
        let config = json(&format!(r#"{{"size": {size}}}"#), 36);
        let (code, out, err) = plan(&config);
        if refused {
            assert_eq!(code, 2, "{size}: {out}{err}");
            assert!(err.contains("device area"), "{size}: {err}");
        } else {
            assert_eq!(code, 0, "{size}: {err}");
        }
    }
    // ACPI hotplug: boot RAM ends at 63 GiB, so a 1 GiB area reaches 64 GiB.
    let config = json(
        &format!(r#"{{"size": {}, "hotplug_size": {G}}}"#, 62 * G),
        36,
    );
    let (code, out, err) = plan(&config);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("hotplug_size"), "{err}");
    let config = json(
        &format!(r#"{{"size": {}, "hotplug_size": {}}}"#, 62 * G, G - 128 * M),
        36,
    );
    let (code, _, err) = plan(&config);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn init_refuses_what_plan_refuses() {
    let options = "size=65535G";
    let (code, out, err) = run(&["init", "--from", "cloud-hypervisor", "--", options]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("device area"), "{err}");
}

#[test]
fn json_payload_is_checked_before_the_device_area() {
    // Cloud Hypervisor validates the configuration (the payload) once its memory is laid out
    // and before it creates its devices, where the device area runs out: a configuration
    // with both mistakes is refused for its payload.
    let config = format!(
        r#"{{"cpus": {{"boot_vcpus": 1, "max_vcpus": 1, "max_phys_bits": 36}},
 "memory": {{"size": {}}}}}"#,
        63 * G
    );
    let (code, out, err) = plan(&config);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("payload"), "{err}");
    assert!(!err.contains("device area"), "{err}");
}
