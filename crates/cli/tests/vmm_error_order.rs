//! Input with several mistakes is refused at the first one found, in the order SPEC.md gives:
//! for a Firecracker file, one that may differ from Firecracker's (it finds every type mistake
//! of the file before any value it refuses); for Cloud Hypervisor's command line, its own.
//! Each case below holds two mistakes; the one named is the one SPEC.md's order puts first,
//! whichever comes first in the text.

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

/// Cloud Hypervisor parses each `--numa` before `--memory` and its `--memory-zone`s
/// (`VmConfig::parse`), so a command line with a mistake in both is refused at the `--numa`,
/// wherever it is written.
#[test]
fn cloud_hypervisor_numa_mistakes_are_named_before_memory_ones() {
    use memvisor_cli::vmm::{DefaultHugePage, cloud_hypervisor_spec};
    for (options, origin) in [
        ("--numa guest_numa_id=x --memory size=xx", "--numa"),
        ("--memory size=xx --numa guest_numa_id=x", "--numa"),
        (
            "--memory size=0 --memory-zone id=a,size=zz --numa guest_numa_id=0,cpus=[x]",
            "--numa",
        ),
        // Memory before its zones.
        ("--memory-zone id=a,size=zz --memory size=xx", "--memory"),
    ] {
        match cloud_hypervisor_spec(options, DefaultHugePage::Pinned(2 << 20), Arch::X86_64) {
            Err(Error::Import {
                origin: at,
                message,
            }) => {
                assert_eq!(at, origin, "{options}: {message}");
            }
            other => panic!("{options}: not an option's mistake: {other:?}"),
        }
    }
}
