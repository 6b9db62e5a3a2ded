//! What a Cloud Hypervisor `VmConfig` puts in its 64-bit PCI device area that cannot be known
//! from the file: the BARs of VFIO (`devices`), vfio-user (`user_devices`) and vDPA (`vdpa`)
//! devices, which are the host devices', and the region of a `pmem` entry without `size`, its
//! file's. They are not counted; the plan says so in a note rather than leaving them out
//! silently, and the converted spec starts with that note.

mod common;

use common::{HUGE_PAGES_2M, Memvisor};

fn json(sections: &str) -> String {
    format!(
        r#"{{"payload": {{"kernel": "vmlinux"}}, "memory": {{"size": 1073741824, "shared": true}}{sections}}}"#
    )
}

#[test]
fn cloud_hypervisor_devices_whose_bars_are_not_known_are_named_in_a_note() {
    let sections = r#", "devices": [{"path": "/sys/bus/pci/devices/0000:01:00.0"}, {"path": "/sys/bus/pci/devices/0000:02:00.0"}],
        "user_devices": [{"socket": "/run/u.sock"}], "vdpa": [{"path": "/dev/vhost-vdpa-0"}],
        "pmem": [{"file": "/p"}, {"file": "/q", "size": 2097152}]"#;
    let text = json(sections);
    let (code, out, err) = Memvisor::new().flags(&HUGE_PAGES_2M).run(&[
        "plan",
        "--from",
        "cloud-hypervisor",
        "--",
        &text,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.is_empty());
    let note = err
        .lines()
        .find(|l| l.starts_with("note: ") && l.contains("not counted"))
        .unwrap_or_else(|| panic!("no note in {err:?}"));
    for words in [
        "2 VFIO devices",
        "1 vfio-user device",
        "1 vDPA device",
        "1 pmem region without `size`",
    ] {
        assert!(note.contains(words), "{words} not in {note}");
    }
    // The converted spec starts with it, as a comment.
    let (code, spec, err) = Memvisor::new().flags(&HUGE_PAGES_2M).run(&[
        "init",
        "--from",
        "cloud-hypervisor",
        "--",
        &text,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        spec.lines()
            .any(|l| l.starts_with("# note: ") && l.contains("2 VFIO devices")),
        "{spec}"
    );
    // Without such devices: no note.
    let (code, _, err) = Memvisor::new().flags(&HUGE_PAGES_2M).run(&[
        "plan",
        "--from",
        "cloud-hypervisor",
        "--",
        &json(""),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("not counted"), "{err}");
}

/// Cloud Hypervisor's `ivshmem` device, a field of its optional `ivshmem` feature (a build
/// without it ignores the field), has a 64-bit BAR of its `size` in the PCI device area in a
/// build with it. Whether the build has it cannot be known from the file, so the BAR is not
/// counted, and the note says so rather than leaving it out silently.
#[test]
fn cloud_hypervisor_ivshmem_is_named_in_the_note() {
    let text = json(r#", "ivshmem": {"path": "/dev/shm/ivshmem", "size": 1073741824}"#);
    let (code, _, err) = Memvisor::new().flags(&HUGE_PAGES_2M).run(&[
        "plan",
        "--from",
        "cloud-hypervisor",
        "--",
        &text,
    ]);
    assert_eq!(code, 0, "{err}");
    let note = err
        .lines()
        .find(|l| l.starts_with("note: ") && l.contains("not counted"))
        .unwrap_or_else(|| panic!("no note in {err:?}"));
    assert!(note.contains("1 ivshmem device"), "{note}");
    assert!(note.contains("`ivshmem` feature"), "{note}");
    // Given twice, it is refused, as a build with the feature refuses it.
    let text = json(r#", "ivshmem": null, "ivshmem": null"#);
    let (code, _, err) = Memvisor::new().flags(&HUGE_PAGES_2M).run(&[
        "plan",
        "--from",
        "cloud-hypervisor",
        "--",
        &text,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("duplicate field `ivshmem`"), "{err}");
    // `null` is none.
    let text = json(r#", "ivshmem": null"#);
    let (code, _, err) = Memvisor::new().flags(&HUGE_PAGES_2M).run(&[
        "plan",
        "--from",
        "cloud-hypervisor",
        "--",
        &text,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("not counted"), "{err}");
}
