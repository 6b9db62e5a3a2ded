//! `init --from` round trips: for random Firecracker files, Cloud Hypervisor option strings
//! and Cloud Hypervisor JSON `VmConfig`s (and the examples), the spec `init` prints plans to
//! the plan `plan --from` gives for the same input and flags, and `init` refuses (exit code 2)
//! every input `plan --from` refuses.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

mod common;

use common::run;

static CASE: AtomicUsize = AtomicUsize::new(0);

/// A file under the test directory holding `text`, its path.
fn temp_file(ext: &str, text: &str) -> PathBuf {
    let case = CASE.fetch_add(1, Ordering::Relaxed);
    let path = common::scratch(&format!("init-{}-{case}.{ext}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// `plan --json --from FROM SOURCE` and `init --from FROM SOURCE` with `flags` (`--arch`,
/// `--host-hugepage-size`), then the init output planned as a memvisor spec with no flag:
/// both plans are the same, or both commands refuse the input with exit code 2.
fn assert_round_trip(from: &str, source: &str, flags: &[&str]) {
    let mut plan_args = vec!["plan", "--json", "--from", from];
    plan_args.extend_from_slice(flags);
    plan_args.extend(["--", source]);
    let (plan_code, plan_out, plan_err) = run(&plan_args);
    let mut init_args = vec!["init", "--from", from];
    init_args.extend_from_slice(flags);
    init_args.extend(["--", source]);
    let (init_code, spec, init_err) = run(&init_args);
    assert!(
        plan_code == 0 || plan_code == 2,
        "plan {flags:?} {source}: {plan_code} {plan_err}"
    );
    if plan_code != 0 {
        assert_eq!(
            init_code, 2,
            "init {flags:?} {source} accepted what plan refuses ({plan_err}):\n{spec}"
        );
        assert!(spec.is_empty(), "{spec}");
        assert!(!init_err.is_empty());
        return;
    }
    assert_eq!(init_code, 0, "init {flags:?} {source}: {init_err}");
    let file = temp_file("toml", &spec);
    let (code, again, err) = run(&["plan", "--json", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(
        code, 0,
        "the spec init printed does not plan: {err}\n{spec}"
    );
    assert_eq!(
        again, plan_out,
        "init {flags:?} {source} printed a spec that plans differently:\n{spec}"
    );
}

/// The flags a conversion can take: `--arch` or none, and a pinned default huge page size
/// (so that nothing depends on this host).
fn flags() -> impl Strategy<Value = Vec<&'static str>> {
    (
        prop::sample::select(vec![None, Some("x86_64"), Some("aarch64")]),
        prop::sample::select(vec!["2M", "1G"]),
    )
        .prop_map(|(arch, huge)| {
            let mut flags = vec!["--host-hugepage-size", huge];
            if let Some(arch) = arch {
                flags.extend(["--arch", arch]);
            }
            flags
        })
}

/// The flags a Firecracker conversion can take: `--arch` or none (Firecracker's file names
/// its huge page size itself, so `--host-hugepage-size` is refused with it).
fn arch_flags() -> impl Strategy<Value = Vec<&'static str>> {
    prop::sample::select(vec![None, Some("x86_64"), Some("aarch64")])
        .prop_map(|arch| arch.map_or_else(Vec::new, |arch| vec!["--arch", arch]))
}

/// Memory sizes in MiB at the limits the conversions and the planner check.
fn mib() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..=4,
        1u64..=4096,
        Just(3072),
        Just(3073),
        Just(261_120),
        Just(261_121),
        Just(262_144),
        Just(1 << 26),
    ]
}

/// A Firecracker configuration file.
fn firecracker() -> impl Strategy<Value = String> {
    (
        (
            0u32..=34,
            prop::option::of(any::<bool>()),
            mib(),
            prop::sample::select(vec![None, Some("None"), Some("2M")]),
        ),
        (0usize..=19, any::<bool>(), 0usize..=3),
        (prop::option::of((0u64..=2048, any::<bool>())), any::<bool>()),
    )
        .prop_map(
            |((vcpus, smt, mem, huge), (drives, root, nets), (balloon, vsock))| {
                let mut machine = format!(r#""vcpu_count": {vcpus}, "mem_size_mib": {mem}"#);
                if let Some(smt) = smt {
                    machine.push_str(&format!(r#", "smt": {smt}"#));
                }
                if let Some(huge) = huge {
                    machine.push_str(&format!(r#", "huge_pages": "{huge}""#));
                }
                let drives: Vec<String> = (0..drives)
                    .map(|i| {
                        format!(
                            r#"{{"drive_id": "d{i}", "path_on_host": "d{i}.img", "is_root_device": {}, "is_read_only": false}}"#,
                            root && i == 0
                        )
                    })
                    .collect();
                let nets: Vec<String> = (0..nets)
                    .map(|i| format!(r#"{{"iface_id": "eth{i}", "host_dev_name": "tap{i}"}}"#))
                    .collect();
                let mut rest = String::new();
                if let Some((amount, deflate)) = balloon {
                    rest.push_str(&format!(
                        r#", "balloon": {{"amount_mib": {amount}, "deflate_on_oom": {deflate}}}"#
                    ));
                }
                if vsock {
                    rest.push_str(
                        r#", "vsock": {"vsock_id": "v", "guest_cid": 3, "uds_path": "/tmp/v.sock"}"#,
                    );
                }
                format!(
                    r#"{{"boot-source": {{"kernel_image_path": "k"}}, "machine-config": {{{machine}}}, "drives": [{}], "network-interfaces": [{}]{rest}}}"#,
                    drives.join(", "),
                    nets.join(", ")
                )
            },
        )
}

/// Sizes as Cloud Hypervisor writes them, at the limits.
fn ch_size() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_owned()),
        Just("4095".to_owned()),
        Just("4096".to_owned()),
        Just("1M".to_owned()),
        Just("2M".to_owned()),
        Just("3M".to_owned()),
        Just("128M".to_owned()),
        Just("1G".to_owned()),
        Just("3G".to_owned()),
        Just("5G".to_owned()),
        Just("64T".to_owned()),
        (1u64..=4096).prop_map(|m| format!("{m}M")),
    ]
}

/// Cloud Hypervisor memory settings: `(size, hotplug size, virtio-mem, shared, hugepages, page
/// size)`.
type ChMemory = (
    String,
    Option<String>,
    bool,
    bool,
    bool,
    Option<&'static str>,
);

fn ch_memory() -> impl Strategy<Value = ChMemory> {
    (
        ch_size(),
        prop::option::of(ch_size()),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec![None, Some("2M"), Some("1G")]),
    )
}

/// Cloud Hypervisor's `--memory` option string.
fn ch_option((size, hotplug, virtio_mem, shared, huge, page): &ChMemory) -> String {
    let mut o = format!("size={size}");
    if let Some(h) = hotplug {
        o.push_str(&format!(",hotplug_size={h}"));
    }
    if *virtio_mem {
        o.push_str(",hotplug_method=virtio-mem");
    }
    o.push_str(if *shared { ",shared=on" } else { "" });
    o.push_str(if *huge { ",hugepages=on" } else { "" });
    if let Some(p) = page {
        o.push_str(&format!(",hugepage_size={p}"));
    }
    o
}

/// Bytes of a size [`ch_size`] gives.
fn bytes(size: &str) -> u64 {
    let (digits, shift) = match size.as_bytes().last() {
        Some(b'M') => (&size[..size.len() - 1], 20),
        Some(b'G') => (&size[..size.len() - 1], 30),
        Some(b'T') => (&size[..size.len() - 1], 40),
        _ => (size, 0),
    };
    digits.parse::<u64>().unwrap() << shift
}

/// Cloud Hypervisor's JSON `VmConfig` with the same memory settings.
fn ch_json((size, hotplug, virtio_mem, shared, huge, page): &ChMemory) -> String {
    let mut memory = format!(
        r#""size": {}, "shared": {shared}, "hugepages": {huge}"#,
        bytes(size)
    );
    if let Some(h) = hotplug {
        memory.push_str(&format!(r#", "hotplug_size": {}"#, bytes(h)));
    }
    if *virtio_mem {
        memory.push_str(r#", "hotplug_method": "VirtioMem""#);
    }
    if let Some(p) = page {
        memory.push_str(&format!(r#", "hugepage_size": {}"#, bytes(p)));
    }
    format!(r#"{{"payload": {{"kernel": "/k"}}, "memory": {{{memory}}}}}"#)
}

/// Cloud Hypervisor's `--memory`, `--memory-zone` and `--numa` options: boot memory in zones,
/// each zone a NUMA node or all in one.
fn ch_zones() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((ch_size(), prop::option::of(ch_size())), 1..4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(zones, numa, virtio_mem)| {
            let method = if virtio_mem {
                ",hotplug_method=virtio-mem"
            } else {
                ""
            };
            let mut o = format!("--memory size=0{method}");
            for (i, (size, hotplug)) in zones.iter().enumerate() {
                o.push_str(&format!(" --memory-zone id=z{i},size={size}"));
                if let Some(h) = hotplug {
                    o.push_str(&format!(",hotplug_size={h}"));
                }
            }
            if numa {
                for i in 0..zones.len() {
                    o.push_str(&format!(" --numa guest_numa_id={i},memory_zones=[z{i}]"));
                }
            }
            o
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn init_from_firecracker_plans_as_plan_from_does(json in firecracker(), flags in arch_flags()) {
        let file = temp_file("json", &json);
        assert_round_trip("firecracker", file.to_str().unwrap(), &flags);
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn init_from_cloud_hypervisor_plans_as_plan_from_does(
        memory in ch_memory(),
        flags in flags(),
    ) {
        assert_round_trip("cloud-hypervisor", &ch_option(&memory), &flags);
        let json = ch_json(&memory);
        assert_round_trip("cloud-hypervisor", &json, &flags);
        let file = temp_file("json", &json);
        assert_round_trip("cloud-hypervisor-json", file.to_str().unwrap(), &flags);
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn init_from_cloud_hypervisor_zones_plans_as_plan_from_does(
        options in ch_zones(),
        flags in flags(),
    ) {
        assert_round_trip("cloud-hypervisor", &options, &flags);
    }
}

#[test]
fn init_of_the_examples_plans_as_plan_from_does() {
    let example = common::example("firecracker.json");
    for arch in [&[][..], &["--arch", "x86_64"], &["--arch", "aarch64"]] {
        assert_round_trip("firecracker", &example, arch);
        for huge in ["2M", "1G"] {
            let mut flags = vec!["--host-hugepage-size", huge];
            flags.extend_from_slice(arch);
            for option in [
                "size=1G,hotplug_size=4G",
                "size=2G,hugepages=on",
                "size=1G,hotplug_method=virtio-mem,hotplug_size=8G,shared=on",
                "--memory size=0 --memory-zone id=m0,size=1G --memory-zone id=m1,size=1G \
                 --numa guest_numa_id=0,memory_zones=[m0] --numa guest_numa_id=1,memory_zones=[m1]",
            ] {
                assert_round_trip("cloud-hypervisor", option, &flags);
            }
        }
    }
}

#[test]
fn init_refuses_what_plan_refuses() {
    // Boot memory that is not a whole number of guest pages converts, but does not plan.
    for option in ["size=4095", "size=1G,hotplug_size=4095"] {
        assert_round_trip("cloud-hypervisor", option, &["--host-hugepage-size", "2M"]);
        let (code, out, err) = run(&[
            "init",
            "--host-hugepage-size",
            "2M",
            "--from",
            "cloud-hypervisor",
            option,
        ]);
        assert_eq!(code, 2, "{option}: {out}");
        assert!(err.contains("not aligned"), "{option}: {err}");
    }
}

#[test]
fn init_from_cloud_hypervisor_keeps_the_architecture_asked_for() {
    let (code, spec, err) = run(&[
        "init",
        "--host-hugepage-size",
        "2M",
        "--arch",
        "aarch64",
        "--from",
        "cloud-hypervisor",
        "size=1G",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(spec.contains("arch = \"aarch64\""), "{spec}");
    assert_round_trip(
        "cloud-hypervisor",
        "size=1G",
        &["--host-hugepage-size", "2M", "--arch", "aarch64"],
    );
}
