//! A Firecracker file with several mistakes is refused at the first one found, in the order
//! SPEC.md gives (which may differ from Firecracker's: it finds every type mistake of the file
//! before any value it refuses). Each pair below holds two mistakes; the field named is the
//! one SPEC.md's order puts first, whichever comes first in the text.

use memvisor_cli::Error;
use memvisor_cli::spec::Arch;
use memvisor_cli::vmm::firecracker_spec;

/// The field the conversion of `json` names.
fn refused_at(json: &str) -> String {
    match firecracker_spec("vm.json", json, Arch::X86_64) {
        Err(Error::Spec(e)) => e.field,
        other => panic!("{json}: not a spec mistake: {other:?}"),
    }
}

const BOOT: &str = r#""boot-source": {"kernel_image_path": "vmlinux"}"#;

#[test]
fn firecracker_mistakes_are_named_in_the_documented_order() {
    for (json, field) in [
        // Syntax anywhere before any type.
        (
            r#"{"machine-config": {"vcpu_count": "x", "mem_size_mib": 1}, "drives": [}"#.to_owned(),
            "drives",
        ),
        // machine-config's field types before a drive's, wherever they are.
        (
            format!(
                r#"{{"drives": [{{"drive_id": 5}}], {BOOT}, "machine-config": {{"vcpu_count": "x", "mem_size_mib": 1}}}}"#
            ),
            "machine-config.vcpu_count",
        ),
        // vcpu_count's value before a drive's type (Firecracker names the drive).
        (
            format!(
                r#"{{"drives": [{{"drive_id": 5}}], {BOOT}, "machine-config": {{"vcpu_count": 0, "mem_size_mib": 1}}}}"#
            ),
            "machine-config.vcpu_count",
        ),
        // A drive before boot-source (Firecracker refuses the empty kernel path first).
        (
            r#"{"boot-source": {"kernel_image_path": ""}, "drives": [{"drive_id": 5}]}"#.to_owned(),
            "drives[0].drive_id",
        ),
        // A drive's value before mem_size_mib's (Firecracker refuses the memory first).
        (
            format!(
                r#"{{{BOOT}, "machine-config": {{"vcpu_count": 1, "mem_size_mib": 0}}, "drives": [{{"drive_id": "a", "path_on_host": "", "is_root_device": false}}]}}"#
            ),
            "drives[0].path_on_host",
        ),
        // huge_pages after the sections, before mem_size_mib.
        (
            format!(
                r#"{{{BOOT}, "machine-config": {{"vcpu_count": 1, "mem_size_mib": 0, "huge_pages": "x"}}, "drives": []}}"#
            ),
            "machine-config.huge_pages",
        ),
        // mem_size_mib before the balloon's amount against it.
        (
            format!(
                r#"{{{BOOT}, "machine-config": {{"vcpu_count": 1, "mem_size_mib": 0}}, "drives": [], "balloon": {{"amount_mib": 5, "deflate_on_oom": true}}}}"#
            ),
            "machine-config.mem_size_mib",
        ),
        // vsock before balloon, as Firecracker applies them.
        (
            format!(
                r#"{{{BOOT}, "drives": [], "balloon": {{"amount_mib": 1000, "deflate_on_oom": false}}, "vsock": {{"guest_cid": 3, "uds_path": "a\u0000"}}}}"#
            ),
            "vsock.uds_path",
        ),
    ] {
        assert_eq!(refused_at(&json), field, "{json}");
    }
}
