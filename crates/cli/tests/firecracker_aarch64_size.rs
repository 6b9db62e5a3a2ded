//! Firecracker on aarch64 gives a guest at most 1022 GiB of memory: a larger `mem_size_mib`
//! is cut to that (with a warning in its log), so the plan of such a file would show memory
//! the guest never gets. It is refused at its value; 1022 GiB and less are planned.

use std::sync::atomic::{AtomicUsize, Ordering};

mod common;

use common::{Memvisor, Outcome};

fn plan(json: &str, arch: &str) -> Outcome {
    static FILES: AtomicUsize = AtomicUsize::new(0);
    let file = std::env::temp_dir().join(format!(
        "memvisor-fc-aarch64-size-{}-{}.json",
        std::process::id(),
        FILES.fetch_add(1, Ordering::Relaxed)
    ));
    Memvisor::new().run_on_file(
        file,
        json,
        &["plan", "--arch", arch, "--from", "firecracker", "FILE"],
    )
}

fn machine(mib: u64) -> String {
    format!(r#"{{"vcpu_count": 1, "mem_size_mib": {mib}}}"#)
}

#[test]
fn aarch64_memory_past_1022_gib_is_refused() {
    for mib in [1022 * 1024 + 1, 1023 * 1024, 4 * 1024 * 1024] {
        let (code, out, err) = plan(&machine(mib), "aarch64");
        assert_eq!(code, 2, "{mib}: {out}{err}");
        assert!(out.is_empty(), "{mib}: {out}");
        assert!(err.contains("mem_size_mib"), "{mib}: {err}");
        assert!(err.contains("1022 GiB"), "{mib}: {err}");
        assert!(err.contains(&mib.to_string()), "{mib}: {err}");
    }
    // Also in a whole configuration, with the field's path.
    let whole = format!(
        r#"{{"boot-source": {{"kernel_image_path": "vmlinux"}}, "drives": [],
            "machine-config": {}}}"#,
        machine(1023 * 1024)
    );
    let (code, _, err) = plan(&whole, "aarch64");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("machine-config.mem_size_mib"), "{err}");
}

#[test]
fn aarch64_memory_up_to_1022_gib_is_planned() {
    for mib in [1, 254 * 1024, 1022 * 1024] {
        let (code, out, err) = plan(&machine(mib), "aarch64");
        assert_eq!(code, 0, "{mib}: {err}");
        let ram = format!("RAM {} in 1 NUMA node", memvisor_cli::size::Size(mib << 20));
        assert!(out.contains(&ram), "{mib}: {ram}: {out}");
    }
}
