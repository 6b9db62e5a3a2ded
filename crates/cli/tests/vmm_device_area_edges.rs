//! Crafted Cloud Hypervisor configurations around its 64-bit PCI device area bound: with `n`
//! virtio PCI devices, each taking an 8 MiB-aligned slot from the top of the guest address
//! space down, guest memory may end at `2^bits - n * 8 MiB` and no later. Memory ending
//! exactly there is planned, a page later is refused with the field and exit code 2, for the
//! command line and for a JSON `VmConfig` (given as text and as a file), up to the 31 devices
//! PCI segment 0's bus holds, and 32 are refused whatever the memory.

mod common;

use common::{HUGE_PAGES_2M, Memvisor, Outcome, scratch};

const K: u64 = 1 << 10;
const M: u64 = 1 << 20;
const G: u64 = 1 << 30;

fn run(args: &[&str]) -> Outcome {
    Memvisor::new().flags(&HUGE_PAGES_2M).run(args)
}

/// Where Cloud Hypervisor puts the BARs of `n` virtio PCI devices with `bits` address bits:
/// its platform device area is the 1 MiB below the last 64 KiB, and each 512 KiB BAR is put
/// at the highest multiple of 8 MiB where it fits below what is taken. Gives the lowest BAR.
fn lowest_bar(bits: u32, n: u64) -> u64 {
    let mut top = (1u64 << bits) - 64 * K - M;
    let mut bar = 0;
    for _ in 0..n {
        bar = (top - 512 * K) & !(8 * M - 1);
        top = bar;
    }
    bar
}

/// A `VmConfig` with boot RAM of `size` bytes, `bits` address bits and `net` virtio-net
/// devices (besides virtio-rng and virtio-console: `net + 2` devices).
fn json(size: u64, bits: u32, net: usize) -> String {
    format!(
        r#"{{"payload": {{"kernel": "vmlinux"}}, "net": [{}],
 "cpus": {{"boot_vcpus": 1, "max_vcpus": 1, "max_phys_bits": {bits}}},
 "memory": {{"size": {size}}}}}"#,
        vec!["{}"; net].join(", ")
    )
}

#[track_caller]
fn assert_outcome(what: &str, (code, out, err): Outcome, planned: bool, field: &str) {
    assert!(!err.contains("panicked"), "{what}: {err}");
    if planned {
        assert_eq!(code, 0, "{what}: {err}");
        assert!(out.contains("RAM "), "{what}: {out}");
    } else {
        assert_eq!(code, 2, "{what}: {out}{err}");
        assert!(out.is_empty(), "{what}: {out}");
        assert!(err.contains(field), "{what}: {err}");
        assert!(err.contains("device area"), "{what}: {err}");
    }
}

#[test]
fn memory_may_end_at_the_lowest_bar_and_not_a_page_later() {
    let file = scratch("vmm_device_area_edges.json");
    for bits in [34, 40, 46, 52] {
        for n in [2, 3, 30, 31] {
            let end = lowest_bar(bits, n);
            assert_eq!(end, (1u64 << bits) - n * 8 * M, "{bits} {n}");
            // On x86_64 boot RAM past 3 GiB goes on from 4 GiB: it ends at `size + 1 GiB`.
            for (size, planned) in [(end - G, true), (end - G + 4 * K, false)] {
                let text = json(size, bits, usize::try_from(n - 2).unwrap());
                let what = format!("{bits} bits, {n} devices, size {size:#x}");
                let text_run = run(&["plan", "--from", "cloud-hypervisor", "--", &text]);
                assert_outcome(&what, text_run, planned, "memory.size");
                let file_run = Memvisor::new().flags(&HUGE_PAGES_2M).run_on_file(
                    &file,
                    &text,
                    &["plan", "--from", "cloud-hypervisor-json", "FILE"],
                );
                assert_outcome(&what, file_run, planned, "memory.size");
            }
        }
        // 32 devices do not fit on the bus, wherever memory ends.
        let text = json(G, bits, 30);
        let (code, out, err) = run(&["plan", "--from", "cloud-hypervisor", "--", &text]);
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.contains("32 PCI devices"), "{err}");
    }
}

#[test]
fn the_command_line_bound_is_the_same() {
    // Its guest has virtio-rng and virtio-console, 46 address bits: memory ends at
    // `2^46 - 16 MiB` at the latest.
    let end = lowest_bar(46, 2);
    assert_eq!(end, (1u64 << 46) - 16 * M);
    for (size, planned) in [(end - G, true), (end - G + 4 * K, false)] {
        let options = format!("--memory size={size}");
        let outcome = run(&["plan", "--from", "cloud-hypervisor", "--", &options]);
        assert_outcome(&options, outcome, planned, "size");
    }
    // ACPI hotplug: its area starts at the 128 MiB boundary after boot RAM.
    let boot = 2 * G;
    let hotplug = end - 4 * G;
    for (slot, planned) in [(hotplug, true), (hotplug + 4 * K, false)] {
        let options = format!("--memory size={boot},hotplug_size={slot}");
        let outcome = run(&["plan", "--from", "cloud-hypervisor", "--", &options]);
        assert_outcome(&options, outcome, planned, "hotplug_size");
    }
}

#[test]
fn explicit_device_ids_at_the_limits_fill_the_bus() {
    // 31 devices, the last ones at the bus's highest device ids: planned.
    let net: Vec<String> = (0..29)
        .map(|i| format!(r#"{{"pci_device_id": {}}}"#, 31 - i))
        .collect();
    let text = format!(
        r#"{{"payload": {{"kernel": "vmlinux"}}, "net": [{}], "memory": {{"size": 1073741824}}}}"#,
        net.join(", ")
    );
    let (code, _, err) = run(&["plan", "--from", "cloud-hypervisor", "--", &text]);
    assert_eq!(code, 0, "{err}");
}
