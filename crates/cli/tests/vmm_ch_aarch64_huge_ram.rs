//! Cloud Hypervisor lays guest RAM out in whole pages of the memory's alignment (its huge page
//! size): on AArch64 its RAM below the 32-bit hole, `[1 GiB, 4032 MiB)`, holds 3008 MiB, so
//! memory of 1 GiB pages takes only 2 GiB of it and the rest runs on from 4 GiB, ending 960 MiB
//! higher than memory of smaller pages. The 64-bit PCI device area starts where that memory
//! ends, and must hold the BARs of the guest's virtio PCI devices.

mod common;

use common::{Memvisor, Outcome, planned, refused};

const M: u64 = 1 << 20;
const G: u64 = 1 << 30;

fn plan(host_page: &str, json: &str) -> Outcome {
    Memvisor::new().run(&[
        "plan",
        "--arch",
        "aarch64",
        "--host-hugepage-size",
        host_page,
        "--from",
        "cloud-hypervisor",
        "--",
        json,
    ])
}

/// A `VmConfig` of 36 address bits (64 GiB) and this `memory`.
fn json(memory: &str) -> String {
    format!(
        r#"{{"payload": {{"kernel": "vmlinux"}}, "cpus": {{"boot_vcpus": 1, "max_vcpus": 1,
 "max_phys_bits": 36}}, "memory": {memory}}}"#
    )
}

#[track_caller]
fn assert_refused(host_page: &str, json: &str) {
    let err = refused(json, plan(host_page, json), &[]);
    assert!(
        err.contains("size: ") && err.contains("device area"),
        "{json}: {err}"
    );
}

#[track_caller]
fn assert_planned(host_page: &str, json: &str) {
    planned(json, plan(host_page, json));
}

#[test]
fn cloud_hypervisor_aarch64_memory_of_1_gib_pages_ends_past_the_hole_in_whole_pages() {
    // 1 GiB pages: 2 GiB below the hole, the rest from 4 GiB, so `size` + 2 GiB is the end;
    // two BAR slots (virtio-rng, virtio-console) must fit below 64 GiB: end <= 64 GiB - 16 MiB.
    let huge = |size: u64| {
        json(&format!(
            r#"{{"size": {size}, "hugepages": true, "hugepage_size": {G}}}"#
        ))
    };
    assert_planned("2M", &huge(61 * G));
    assert_refused("2M", &huge(62 * G));
    // The host's default of 1 GiB pages, taken for hugepages without hugepage_size.
    let default = |size: u64| json(&format!(r#"{{"size": {size}, "hugepages": true}}"#));
    assert_planned("1G", &default(61 * G));
    assert_refused("1G", &default(62 * G));
    // Zones, all of 1 GiB pages.
    let zones = |size: u64| {
        json(&format!(
            r#"{{"size": 0, "zones": [{{"id": "a", "size": {G}, "hugepages": true,
 "hugepage_size": {G}}}, {{"id": "b", "size": {size}, "hugepages": true, "hugepage_size": {G}}}]}}"#
        ))
    };
    assert_planned("2M", &zones(60 * G));
    assert_refused("2M", &zones(61 * G));
    // 2 MiB pages fill the 3008 MiB below the hole: the end is `size` + 1088 MiB.
    let small = |size: u64| {
        json(&format!(
            r#"{{"size": {size}, "hugepages": true, "hugepage_size": {}}}"#,
            2 * M
        ))
    };
    assert_planned("2M", &small(64 * G - 1088 * M - 16 * M));
    assert_refused("2M", &small(64 * G - 1088 * M - 14 * M));
}

#[test]
fn check_lays_aarch64_memory_of_1_gib_pages_out_as_cloud_hypervisor_does() {
    use memvisor_cli::check::{HostFacts, Status, check_spec};
    use memvisor_cli::plan::plan;
    use memvisor_cli::spec::{Arch, Source, parse};
    use memvisor_cli::vmm::{DefaultHugePage, cloud_hypervisor_json_spec};

    // Planned at Cloud Hypervisor's 46 bits, on a host CPU of 36: there Cloud Hypervisor's
    // memory of 1 GiB pages ends at `size` + 2 GiB, past the virtio-rng BAR's last place
    // (64 GiB - 8 MiB) for 62 GiB, not for 61 GiB.
    let status = |size: u64| {
        let text = format!(
            r#"{{"payload": {{"kernel": "vmlinux"}}, "memory": {{"size": {size},
 "hugepages": true, "hugepage_size": {G}}}}}"#
        );
        let toml = cloud_hypervisor_json_spec(
            "vm.json",
            &text,
            DefaultHugePage::Pinned(2 * M),
            Arch::Aarch64,
        )
        .unwrap();
        let toml = format!("arch = \"aarch64\"\n{toml}");
        let src = Source {
            origin: "vm.toml",
            text: &toml,
        };
        let spec = parse(src).unwrap();
        let host = HostFacts {
            phys_bits: Some(36),
            ..HostFacts::default()
        };
        check_spec(&spec, &plan(&spec, src).unwrap(), &host)
            .into_iter()
            .find(|f| f.check == "address_bits")
            .unwrap()
            .status
    };
    assert_eq!(status(61 * G), Status::Warn);
    assert_eq!(status(62 * G), Status::Fail);
}
