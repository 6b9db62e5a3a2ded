//! `back` for real on small specs: the steps, the memory they make resident and give back, and
//! the release of everything after a failed step.

use serde_json::Value;

mod common;

use common::{Memvisor, binary as memvisor, example};

fn steps(report: &Value) -> Vec<&str> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect()
}

fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name}"))
}

fn kib(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap()
}

#[test]
#[cfg_attr(miri, ignore)]
fn back_scaled_microvm_reports_every_step() {
    let out = memvisor(&["back", "--scale", "8", "--json", &example("microvm.toml")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["scale"], 8);
    assert_eq!(report["boot_bytes"], "0x2000000");
    assert_eq!(report["hotplug_bytes"], "0x2000000");
    assert!(report["failure"].is_null());
    assert_eq!(
        steps(&report),
        [
            "create address space",
            "back RAM node0 (32 MiB)",
            "plug hotplug slot 0 (16 MiB)",
            "plug hotplug slot 1 (16 MiB)",
            "unplug hotplug slot 1",
            "unplug hotplug slot 0",
            "release everything",
        ]
    );
    for s in report["steps"].as_array().unwrap() {
        assert!(s["elapsed_ms"].as_f64().unwrap() >= 0.0);
    }
    // The window alignment (1 GiB) is divided too: two 16 MiB slots in a 128 MiB window.
    let detail = step(&report, "create address space")["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        detail.starts_with("hotplug window: 128 MiB of host address space reserved"),
        "{detail}"
    );
    let ram = step(&report, "back RAM node0 (32 MiB)");
    assert!(
        ram["detail"].as_str().unwrap().starts_with("memfd, page "),
        "{ram}"
    );
    assert!(
        ram["detail"]
            .as_str()
            .unwrap()
            .contains("prefaulted by 1 thread(s)")
    );
    let plug = step(&report, "plug hotplug slot 1 (16 MiB)");
    assert!(
        plug["detail"]
            .as_str()
            .unwrap()
            .ends_with("in the hotplug window")
    );

    // Prefaulted memfd memory is resident shared memory of this process, and goes back.
    let before = kib(&report["before"], "rss_shmem_kib");
    let booted = kib(&ram["memory"], "rss_shmem_kib");
    let plugged = kib(&plug["memory"], "rss_shmem_kib");
    let unplugged = kib(
        &step(&report, "unplug hotplug slot 0")["memory"],
        "rss_shmem_kib",
    );
    let released = kib(&report["after"], "rss_shmem_kib");
    assert!(booted >= before + (32 << 10), "{before} -> {booted}");
    assert!(plugged >= booted + (32 << 10), "{booted} -> {plugged}");
    assert!(
        unplugged + (32 << 10) <= plugged,
        "{plugged} -> {unplugged}"
    );
    assert!(
        released + (32 << 10) <= unplugged,
        "{unplugged} -> {released}"
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn back_table_lists_steps() {
    let out = memvisor(&["back", "--scale", "16", &example("microvm.toml")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("microVM: backing 16 MiB at boot and 16 MiB in hotplug slots (sizes divided by 16)")
    );
    let header = text.lines().find(|l| l.starts_with("STEP")).unwrap();
    for column in [
        "TIME",
        "RSS",
        "ANON",
        "SHMEM",
        "HUGETLB",
        "THP",
        "COMMITTED",
        "DETAIL",
    ] {
        assert!(header.contains(column), "{header}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("plug hotplug slot 1 (8 MiB)")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("release everything")),
        "{text}"
    );
    // What the kernel gave, from smaps, not what was asked for.
    assert!(
        text.lines()
            .any(|l| l.starts_with("huge pages obtained (peak): ")),
        "{text}"
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn back_failure_releases_and_exits_1() {
    // Node 1 is bound to a host node no machine has: its step fails after node 0 was backed.
    let spec = "[memory]\nbacking = \"memfd\"\nprefault = 1\n\
                [[numa]]\nsize = \"16MiB\"\n\
                [[numa]]\nsize = \"16MiB\"\nhost_nodes = [1023]\n";
    let path = common::scratch("back-failure.toml");
    std::fs::write(&path, spec).unwrap();
    let out = memvisor(&["back", "--json", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(
            "error: back RAM node1 (16 MiB) failed; everything created was released: NUMA node \
             1023 does not exist on this host"
        ),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["failure"]["step"], "back RAM node1 (16 MiB)");
    assert_eq!(
        steps(&report),
        [
            "create address space",
            "back RAM node0 (16 MiB)",
            "release after the failure"
        ]
    );
    let backed = kib(
        &step(&report, "back RAM node0 (16 MiB)")["memory"],
        "rss_shmem_kib",
    );
    let released = kib(&report["after"], "rss_shmem_kib");
    assert!(backed >= kib(&report["before"], "rss_shmem_kib") + (16 << 10));
    assert!(released + (16 << 10) <= backed, "{backed} -> {released}");
}

#[test]
#[cfg_attr(miri, ignore)]
fn back_large_spec_is_only_planned_in_tests() {
    // The large example needs 1 GiB huge pages on two NUMA nodes; its plan must still work.
    let out = memvisor(&["plan", &example("large-vm.toml")]);
    assert!(out.status.success());
}

#[test]
#[cfg_attr(miri, ignore)]
fn back_with_progress_bar_completes() {
    // In-process with the progress bar on (drawn only on a terminal, but its ticking thread
    // runs): the run must finish and report every step.
    let path = example("microvm.toml");
    let (code, out, err) = Memvisor::new()
        .progress(true)
        .run(&["back", "--scale", "32", "--json", &path]);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(steps(&report).len(), 7);
}
