//! The fields of a Cloud Hypervisor `VmConfig`'s devices that make Cloud Hypervisor refuse the
//! configuration: a device's `pci_segment` past the only segment there is, a `pci_device_id`
//! that is no device id of the bus (or its host bridge's), the same `pci_device_id` given to
//! two devices, a top-level `pci_segments` entry for a segment there is not (or of aperture
//! weight 0), `iommu: true` on a device that cannot be behind the virtio-iommu, a device left
//! out of the IOMMU on a segment of `platform.iommu_segments`, and vhost-user and vfio-user
//! devices without shared guest memory. Each is refused with the field named.

mod common;

use common::{HUGE_PAGES_2M, Memvisor, Outcome, planned, refused};

fn plan(json: &str) -> Outcome {
    Memvisor::new()
        .flags(&HUGE_PAGES_2M)
        .run(&["plan", "--from", "cloud-hypervisor", "--", json])
}

/// A `VmConfig` with 1 GiB of memory (`memory` fields added) and `rest` (fields of the
/// `VmConfig`, each followed by a comma).
fn config(memory: &str, rest: &str) -> String {
    format!(
        r#"{{{rest} "payload": {{"kernel": "vmlinux"}},
 "memory": {{"size": 1073741824{memory}}}}}"#
    )
}

#[track_caller]
fn assert_refused(json: &str, field: &str, words: &[&str]) {
    let err = refused(json, plan(json), words);
    assert!(err.contains(field), "{json}: {field} not in {err}");
}

#[track_caller]
fn assert_planned(json: &str) {
    planned(json, plan(json));
}

/// Each device section (with what its entry needs besides the field tested), as a list or
/// an object, and whether it needs shared memory.
const SECTIONS: &[(&str, bool, &str)] = &[
    ("disks", true, ""),
    ("net", true, ""),
    ("fs", true, r#""tag": "t", "socket": "/s""#),
    ("generic_vhost_user", true, r#""device_type": 26"#),
    ("pmem", true, ""),
    ("user_devices", true, ""),
    ("vdpa", true, ""),
    ("devices", true, ""),
    ("rng", false, ""),
    ("console", false, r#""mode": "Tty""#),
    ("rtc", false, ""),
    ("balloon", false, r#""size": 0"#),
    ("vsock", false, ""),
];

/// A section holding one device with `fields` (and what the section needs).
fn section(key: &str, list: bool, needs: &str, fields: &str) -> String {
    let sep = if needs.is_empty() || fields.is_empty() {
        ""
    } else {
        ", "
    };
    let entry = format!("{{{needs}{sep}{fields}}}");
    if list {
        format!(r#""{key}": [{entry}],"#)
    } else {
        format!(r#""{key}": {entry},"#)
    }
}

/// The path of the device of `key`.
fn path(key: &str, list: bool) -> String {
    if list {
        format!("{key}[0]")
    } else {
        key.to_owned()
    }
}

/// Shared memory, which vhost-user and vfio-user devices need.
const SHARED: &str = r#", "shared": true"#;

#[test]
fn device_on_a_pci_segment_past_the_first_is_refused() {
    for &(key, list, needs) in SECTIONS {
        let ok = config(SHARED, &section(key, list, needs, r#""pci_segment": 0"#));
        assert_planned(&ok);
        for segment in [1, 95, 65535] {
            let json = config(
                SHARED,
                &section(key, list, needs, &format!(r#""pci_segment": {segment}"#)),
            );
            assert_refused(
                &json,
                &format!("{}.pci_segment", path(key, list)),
                &[&format!("PCI segment {segment}"), "Cloud Hypervisor"],
            );
        }
        // Not a `u16`, as Cloud Hypervisor's type has it.
        let json = config(
            SHARED,
            &section(key, list, needs, r#""pci_segment": 65536"#),
        );
        assert_refused(&json, &format!("{}.pci_segment", path(key, list)), &[]);
    }
}

#[test]
fn pci_segments_entries_are_checked() {
    assert_planned(&config("", r#""pci_segments": [{"pci_segment": 0}],"#));
    assert_planned(&config(
        "",
        r#""pci_segments": [{"pci_segment": 0, "mmio32_aperture_weight": 4,
            "mmio64_aperture_weight": 4294967295}],"#,
    ));
    assert_planned(&config("", r#""pci_segments": [],"#));
    assert_planned(&config("", r#""pci_segments": null,"#));
    assert_refused(
        &config(
            "",
            r#""pci_segments": [{"pci_segment": 0}, {"pci_segment": 1}],"#,
        ),
        "pci_segments[1].pci_segment",
        &["PCI segment 1"],
    );
    for weight in ["mmio32_aperture_weight", "mmio64_aperture_weight"] {
        assert_refused(
            &config("", &format!(r#""pci_segments": [{{"{weight}": 0}}],"#)),
            &format!("pci_segments[0].{weight}"),
            &["0"],
        );
    }
    assert_refused(
        &config("", r#""pci_segments": {"pci_segment": 0},"#),
        "pci_segments",
        &[],
    );
}

#[test]
fn pci_device_id_outside_the_bus_or_given_twice_is_refused() {
    for &(key, list, needs) in SECTIONS {
        let p = path(key, list);
        for ok in [1, 31] {
            let json = config(
                SHARED,
                &section(key, list, needs, &format!(r#""pci_device_id": {ok}"#)),
            );
            assert_planned(&json);
        }
        let json = config(
            SHARED,
            &section(key, list, needs, r#""pci_device_id": null"#),
        );
        assert_planned(&json);
        for (bad, words) in [(0, "host bridge"), (32, "0 to 31"), (255, "0 to 31")] {
            let json = config(
                SHARED,
                &section(key, list, needs, &format!(r#""pci_device_id": {bad}"#)),
            );
            assert_refused(&json, &format!("{p}.pci_device_id"), &[words]);
        }
        // Not a `u8`.
        let json = config(
            SHARED,
            &section(key, list, needs, r#""pci_device_id": 256"#),
        );
        assert_refused(&json, &format!("{p}.pci_device_id"), &[]);
    }
    assert_refused(
        &config(
            "",
            r#""net": [{"pci_device_id": 7}], "pmem": [{"pci_device_id": 7}],"#,
        ),
        "pmem[0].pci_device_id",
        &["net[0]", "7"],
    );
}

#[test]
fn iommu_on_a_device_without_one_is_refused() {
    for key in ["fs", "generic_vhost_user", "user_devices"] {
        let &(_, list, needs) = SECTIONS.iter().find(|s| s.0 == key).unwrap();
        assert_planned(&config(
            SHARED,
            &section(key, list, needs, r#""iommu": false"#),
        ));
        assert_refused(
            &config(SHARED, &section(key, list, needs, r#""iommu": true"#)),
            &format!("{}.iommu", path(key, list)),
            &["IOMMU"],
        );
    }
}

#[test]
fn device_outside_the_iommu_on_an_iommu_segment_is_refused() {
    let iommu = r#""platform": {"iommu_segments": [0]},"#;
    let behind = r#""rng": {"iommu": true}, "console": {"mode": "Tty", "iommu": true},"#;
    assert_planned(&config("", &format!("{iommu}{behind}")));
    // The default virtio-rng device is not behind the IOMMU.
    assert_refused(
        &config(
            "",
            &format!(r#"{iommu}"console": {{"mode": "Off", "iommu": true}},"#),
        ),
        "rng",
        &["iommu_segments", "IOMMU"],
    );
    assert_refused(
        &config("", &format!(r#"{iommu}"rng": {{"iommu": true}},"#)),
        "console",
        &["iommu_segments"],
    );
    assert_refused(
        &config(
            "",
            &format!(r#"{iommu}{behind}"net": [{{"iommu": true}}, {{}}],"#),
        ),
        "net[1]",
        &["iommu_segments"],
    );
    // Without the platform's segment, a device need not be behind it.
    assert_planned(&config("", r#""net": [{"iommu": true}, {}],"#));
}

#[test]
fn vhost_user_devices_need_shared_memory() {
    let devices = [
        (r#""fs": [{"tag": "t", "socket": "/s"}],"#, "fs"),
        (
            r#""generic_vhost_user": [{"device_type": 26}],"#,
            "generic_vhost_user",
        ),
        (r#""user_devices": [{"socket": "/s"}],"#, "user_devices"),
        (r#""net": [{}, {"vhost_user": true}],"#, "net[1].vhost_user"),
        (r#""disks": [{"vhost_user": true}],"#, "disks[0].vhost_user"),
    ];
    for (device, field) in devices {
        assert_refused(&config("", device), field, &["shared", "hugepages"]);
        assert_planned(&config(SHARED, device));
        assert_planned(&config(r#", "hugepages": true"#, device));
        // Zones all shared are shared memory; zones that are not are not.
        let zones = |shared: bool| {
            format!(
                r#"{{{device} "payload": {{"kernel": "vmlinux"}},
                 "memory": {{"size": 0, "zones": [{{"id": "a", "size": 1073741824,
                 "shared": {shared}}}, {{"id": "b", "size": 1073741824, "shared": {shared}}}]}}}}"#
            )
        };
        assert_planned(&zones(true));
        assert_refused(&zones(false), field, &["shared"]);
    }
    // Empty lists and devices that are no vhost-user ones need nothing.
    for device in [
        r#""fs": [],"#,
        r#""generic_vhost_user": [],"#,
        r#""user_devices": [],"#,
        r#""net": [{"vhost_user": false}],"#,
        r#""disks": [{}],"#,
    ] {
        assert_planned(&config("", device));
    }
}

#[test]
fn vhost_user_disk_or_net_behind_the_iommu_is_refused() {
    for key in ["disks", "net"] {
        let device = |iommu: bool| {
            format!(r#""{key}": [{{"vhost_user": true, "vhost_socket": "/s", "iommu": {iommu}}}],"#)
        };
        assert_planned(&config(SHARED, &device(false)));
        assert_refused(
            &config(SHARED, &device(true)),
            &format!("{key}[0].iommu"),
            &["vhost-user", "IOMMU"],
        );
        // One that is no vhost-user device may be behind it.
        assert_planned(&config(
            "",
            &format!(r#""{key}": [{{"vhost_user": false, "iommu": true}}],"#),
        ));
    }
}

#[test]
fn fields_a_section_does_not_have_are_ignored_even_twice() {
    // `vhost_user` is a field of `disks` and `net` entries alone, and a rate limit group has
    // no `iommu`: elsewhere they are unknown fields, which Cloud Hypervisor ignores.
    for json in [
        config(
            "",
            r#""pmem": [{"file": "/f", "vhost_user": true, "vhost_user": 1}],"#,
        ),
        config("", r#""rng": {"vhost_user": 1, "vhost_user": null},"#),
        config(
            "",
            r#""rate_limit_groups": [{"id": "g", "iommu": true, "iommu": 7,
                "rate_limiter_config": {"ops": {"size": 1, "refill_time": 1}}}],"#,
        ),
    ] {
        assert_planned(&json);
    }
    // In a `disks` entry it is read, and given twice it is refused.
    assert_refused(
        &config(
            SHARED,
            r#""disks": [{"vhost_user": true, "vhost_user": true}],"#,
        ),
        "disks[0]",
        &["vhost_user"],
    );
}
