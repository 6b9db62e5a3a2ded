//! Cloud Hypervisor's 64-bit PCI device area holds the BAR of every virtio PCI device of PCI
//! segment 0 other than a boot-time block device: 512 KiB each, at a multiple of 8 MiB
//! (`VIRTIO_PCI_BAR_ALIGN`), allocated from the top of the area down, one 8 MiB slot each.
//! The area ends at the platform device area, 1 MiB and 64 KiB below `2^phys_bits`, so the
//! highest slot is at `2^phys_bits - 8 MiB` and `n` devices need guest memory to end at
//! `2^phys_bits - n * 8 MiB` at the latest. Every guest has a virtio-rng device and, unless its
//! console is `Off`, a virtio-console device (`--console tty` by default); the JSON
//! `VmConfig`'s `net`, `fs`, `vdpa`, `generic_vhost_user`, `pmem`, `balloon`, `vsock` and
//! `watchdog` add theirs, and a virtio-mem hotplug area its virtio-mem device. Zone ids share
//! one namespace with the ids of devices, which Cloud Hypervisor refuses twice.

const M: u64 = 1 << 20;
const G: u64 = 1 << 30;
const K: u64 = 1 << 10;

mod common;

use common::{HUGE_PAGES_2M, Memvisor, Outcome, planned, refused};
use memvisor_cli::check::{HostFacts, Status, check_spec};
use memvisor_cli::plan::plan as plan_spec;
use memvisor_cli::spec::{Arch, Source, parse};
use memvisor_cli::vmm::{DefaultHugePage, cloud_hypervisor_json_spec};

fn plan(options: &str) -> Outcome {
    Memvisor::new().flags(&HUGE_PAGES_2M).run(&[
        "plan",
        "--from",
        "cloud-hypervisor",
        "--",
        options,
    ])
}

fn assert_refused(options: &str, field: &str) -> String {
    let err = refused(options, plan(options), &[]);
    assert!(err.contains(&format!("{field}: ")), "{options}: {err}");
    assert!(err.contains("device area"), "{options}: {err}");
    let first = err.lines().next().unwrap_or_default();
    assert!(!first.contains("  "), "{options}: {err}");
    err
}

fn assert_planned(options: &str) {
    planned(options, plan(options));
}

/// The latest end of guest memory that leaves `slots` 8 MiB BAR slots below the platform area.
fn last(bits: u32, slots: u64) -> u64 {
    (1u64 << bits) - slots * 8 * M
}

/// A `VmConfig` with boot RAM of `size` bytes (on x86_64 from 4 GiB it ends at `size + 1 GiB`),
/// shared (as vhost-user devices need), 46 address bits, and `rest` (further top-level fields,
/// each followed by a comma).
fn json(size: u64, rest: &str) -> String {
    format!(
        r#"{{{rest} "payload": {{"kernel": "vmlinux"}},
 "cpus": {{"boot_vcpus": 1, "max_vcpus": 1, "max_phys_bits": 46}},
 "memory": {{"size": {size}, "shared": true}}}}"#
    )
}

#[test]
fn the_default_console_takes_a_second_slot() {
    // virtio-rng and the default virtio-console: two slots.
    assert_planned(&format!("size={}", last(46, 2) - G));
    let err = assert_refused(&format!("size={}", last(46, 2) - G + 4 * K), "size");
    assert!(err.contains("virtio-console"), "{err}");
    assert_refused(&format!("size={}", last(46, 1) - G), "size");
    assert_refused(&format!("--memory size={}", last(46, 1) - G), "size");
    assert_planned(&json(last(46, 2) - G, ""));
    assert_refused(&json(last(46, 1) - G, ""), "size");
}

#[test]
fn a_console_turned_off_takes_no_slot() {
    let off = r#""console": {"mode": "Off"},"#;
    assert_planned(&json(last(46, 1) - G, off));
    assert_refused(&json(last(46, 1) - G + 4 * K, off), "size");
    let tty = r#""console": {"mode": "Tty"},"#;
    assert_refused(&json(last(46, 1) - G, tty), "size");
}

#[test]
fn each_virtio_device_of_the_config_takes_a_slot() {
    // rng, console, 3 net, 1 fs, 1 generic vhost-user (a virtio-fs one), 1 pmem, rtc,
    // balloon, vsock, watchdog: 12 slots (a vDPA device is not counted).
    let devices = r#""net": [{}, {"id": "n1"}, {}], "fs": [{"tag": "t", "socket": "/s"}],
 "vdpa": [{"path": "/dev/vhost-vdpa-0"}],
 "generic_vhost_user": [{"socket": "/g", "queue_sizes": [128], "device_type": 26}],
 "pmem": [{"file": "/p", "size": 2097152}], "balloon": {"size": 0},
 "rtc": {}, "vsock": {"cid": 3, "socket": "/v"}, "watchdog": true,"#;
    assert_planned(&json(last(46, 12) - G, devices));
    let err = assert_refused(&json(last(46, 12) - G + 4 * K, devices), "size");
    assert!(err.contains("12 virtio PCI devices"), "{err}");
    // A watchdog that is off adds nothing.
    let quiet = devices.replace(r#""watchdog": true"#, r#""watchdog": false"#);
    assert_planned(&json(last(46, 11) - G, &quiet));
    // A virtio-iommu device adds one; a pvpanic device has a 32-bit BAR.
    let iommu = format!(r#"{devices} "iommu": true, "pvpanic": true,"#);
    assert_refused(&json(last(46, 12) - G, &iommu), "size");
    assert_planned(&json(last(46, 13) - G, &iommu));
}

#[test]
fn boot_time_disks_take_no_slot() {
    // A virtio-blk device of segment 0 given at boot has a 32-bit BAR.
    let disks = r#""console": {"mode": "Off"}, "disks": [{"path": "/a"}, {"path": "/b"}],"#;
    assert_planned(&json(last(46, 1) - G, disks));
}

#[test]
fn a_virtio_mem_device_takes_a_slot() {
    // rng, console and 14 net: 16 slots, 128 MiB. Boot RAM of 4 GiB ends at 5 GiB and the
    // hotplug area ends 128 MiB below 2^46: ACPI hotplug adds no device and fits, virtio-mem
    // adds one and does not.
    let net = format!(r#""net": [{}],"#, vec!["{}"; 14].join(", "));
    let hotplug = last(46, 16) - 5 * G;
    let memory = |method: &str| {
        format!(
            r#"{{{net} "payload": {{"kernel": "vmlinux"}},
 "memory": {{"size": {}, "hotplug_size": {hotplug}, "hotplug_method": "{method}"}}}}"#,
            4 * G
        )
    };
    assert_planned(&memory("Acpi"));
    assert_refused(&memory("VirtioMem"), "hotplug_size");
}

#[test]
fn a_zone_id_used_by_a_device_is_refused() {
    let zones = |id: &str| {
        format!(
            r#"{{"payload": {{"kernel": "vmlinux"}}, "net": [{{"id": "{id}"}}],
 "memory": {{"size": 0, "zones": [{{"id": "mem0", "size": 1073741824}}]}}}}"#
        )
    };
    assert_planned(&zones("net0"));
    let (code, out, err) = plan(&zones("mem0"));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("memory.zones[0].id"), "{err}");
    assert!(err.contains("net[0].id"), "{err}");
    for section in [
        r#""disks": [{"path": "/a", "id": "mem0"}]"#,
        r#""rng": {"src": "/dev/urandom", "id": "mem0"}"#,
        r#""console": {"mode": "Tty", "id": "mem0"}"#,
        r#""vsock": {"cid": 3, "socket": "/v", "id": "mem0"}"#,
        r#""devices": [{"path": "/sys/x", "id": "mem0"}]"#,
        r#""rate_limit_groups": [{"id": "mem0", "rate_limiter_config": {}}]"#,
    ] {
        let text = format!(
            r#"{{{section}, "payload": {{"kernel": "vmlinux"}},
 "memory": {{"size": 0, "zones": [{{"id": "mem0", "size": 1073741824}}]}}}}"#
        );
        let (code, out, err) = plan(&text);
        assert_eq!(code, 2, "{section}: {out}{err}");
        assert!(err.contains("memory.zones[0].id"), "{section}: {err}");
    }
}

#[test]
fn device_sections_of_the_wrong_shape_are_refused() {
    for section in [
        r#""net": {}"#,
        r#""net": [1]"#,
        r#""console": {"mode": 1}"#,
        r#""console": {"mode": "Loud"}"#,
        r#""watchdog": 1"#,
        r#""net": [{"id": 5}]"#,
    ] {
        let text = json(G, &format!("{section},"));
        let (code, out, err) = plan(&text);
        assert_eq!(code, 2, "{section}: {out}{err}");
        assert!(!err.contains("panicked"), "{section}: {err}");
    }
}

fn host(bits: u32) -> HostFacts {
    HostFacts {
        thp_enabled: "madvise".into(),
        thp_shmem_enabled: "advise".into(),
        thp_pmd_knobs: None,
        huge_page_pools: vec![(2 * M, 0, 0)],
        huge_page_reserved: vec![],
        mounts: vec![("/".into(), None)],
        numa_nodes: vec![(0, 8 * G)],
        phys_bits: Some(bits),
        kvm_error: None,
        max_map_count: Some(65530),
        map_count: 100,
        overcommit_mode: 0,
        commit: Some((16 * G, G)),
        memory_and_swap: Some(16 * G),
        memory_available: Some(8 * G),
        swap_free: None,
        paths: Vec::new(),
        resolved: Vec::new(),
    }
}

/// `memvisor check`'s `address_bits` finding for the plan of the `VmConfig` `text`, on a host
/// CPU of `bits` address bits.
fn address_bits(text: &str, bits: u32) -> (Status, String, Option<String>) {
    address_bits_on(text, bits, Arch::X86_64)
}

/// [`address_bits`] of a guest converted for `arch`.
fn address_bits_on(text: &str, bits: u32, arch: Arch) -> (Status, String, Option<String>) {
    let mut toml =
        cloud_hypervisor_json_spec("vm.json", text, DefaultHugePage::Pinned(2 * M), arch).unwrap();
    // As `init --from cloud-hypervisor --arch aarch64` writes it.
    if arch == Arch::Aarch64 {
        toml.insert_str(0, "arch = \"aarch64\"\n");
    }
    let src = Source {
        origin: "vm.toml",
        text: &toml,
    };
    let spec = parse(src).unwrap();
    let findings = check_spec(&spec, &plan_spec(&spec, src).unwrap(), &host(bits));
    let f = findings
        .into_iter()
        .find(|f| f.check == "address_bits")
        .unwrap();
    (f.status, f.detail, f.fix)
}

#[test]
fn check_applies_the_device_area_bound_at_the_hosts_narrower_width() {
    // Planned with 46 bits; Cloud Hypervisor gives the guest min(host, max_phys_bits) bits.
    // Memory ending a page above 2^40 - 8 MiB fits a 40-bit host CPU, but leaves Cloud
    // Hypervisor no place there even for the BAR of the virtio-rng device every guest has.
    let tight = json(last(40, 1) - G + 4 * K, "");
    let (status, detail, fix) = address_bits(&tight, 40);
    assert_eq!(status, Status::Fail, "{detail}");
    assert!(detail.contains("device area"), "{detail}");
    assert!(
        fix.unwrap_or_default().contains("max_phys_bits = 40"),
        "{detail}"
    );
    // Room for the virtio-rng BAR: whether the other devices fit at 40 bits is for the
    // conversion with `max_phys_bits` 40 to say, which the warning's fix asks for.
    for slots in [1, 2] {
        let text = json(last(40, slots) - G, "");
        let (status, detail, fix) = address_bits(&text, 40);
        assert_eq!(status, Status::Warn, "{detail}");
        assert!(
            fix.unwrap_or_default().contains("max_phys_bits = 40"),
            "{detail}"
        );
    }
    // A host with as many bits as the spec: nothing to say.
    let (status, detail, _) = address_bits(&tight, 46);
    assert_eq!(status, Status::Ok, "{detail}");
}

#[test]
fn pci_segment_0_has_31_device_slots() {
    // Its bus has 32 device ids, the first the host bridge's: rng, console and 29 net fill it.
    let config = |net: usize, disks: usize, memory: &str| {
        format!(
            r#"{{"payload": {{"kernel": "vmlinux"}}, "net": [{}], "disks": [{}],
 "memory": {memory}}}"#,
            vec!["{}"; net].join(", "),
            vec![r#"{"path": "/d"}"#; disks].join(", ")
        )
    };
    let small = r#"{"size": 1073741824}"#;
    assert_planned(&config(29, 0, small));
    assert_planned(&config(28, 1, small));
    for (net, disks, memory) in [
        (30, 0, small),
        (28, 2, small),
        (
            29,
            0,
            r#"{"size": 1073741824, "hotplug_size": 1073741824, "hotplug_method": "VirtioMem"}"#,
        ),
    ] {
        let text = config(net, disks, memory);
        let (code, out, err) = plan(&text);
        assert_eq!(code, 2, "{net} {disks} {memory}: {out}{err}");
        assert!(
            err.contains("32 PCI devices"),
            "{net} {disks} {memory}: {err}"
        );
        assert!(err.contains("31"), "{err}");
    }
    // A pvpanic device takes a device id too.
    let pvpanic = config(29, 0, small).replacen('{', r#"{"pvpanic": true, "#, 1);
    let (code, out, err) = plan(&pvpanic);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("32 PCI devices"), "{err}");
    // ACPI hotplug adds no device.
    assert_planned(&config(
        29,
        0,
        r#"{"size": 1073741824, "hotplug_size": 1073741824}"#,
    ));
}

#[test]
fn a_device_behind_the_iommu_adds_the_virtio_iommu_device() {
    // rng and console, and a virtio-iommu device when a device says `iommu` or the platform
    // has IOMMU segments.
    assert_planned(&json(last(46, 2) - G, r#""net": [],"#));
    for rest in [
        r#""net": [{"iommu": true}],"#,
        r#""rng": {"src": "/dev/urandom", "iommu": true},"#,
        r#""console": {"mode": "Tty", "iommu": true},"#,
        r#""disks": [{"path": "/d", "iommu": true}],"#,
        r#""platform": {"iommu_segments": []},"#,
    ] {
        // A net device with `iommu` has a slot of its own too.
        let slots = if rest.contains("net") { 4 } else { 3 };
        assert_planned(&json(last(46, slots) - G, rest));
        assert_refused(&json(last(46, slots - 1) - G, rest), "size");
    }
    // `iommu` off adds nothing.
    assert_planned(&json(last(46, 3) - G, r#""net": [{"iommu": false}],"#));
}

#[test]
fn a_generic_vhost_user_block_device_takes_no_slot() {
    // Its `device_type` is the virtio device id it presents; a block device (2) given at boot
    // on segment 0 has a 32-bit BAR, as a virtio-blk one has.
    let user = |kind: u32| {
        format!(
            r#""generic_vhost_user": [{{"socket": "/g", "queue_sizes": [128], "device_type": {kind}}}],"#
        )
    };
    assert_planned(&json(last(46, 2) - G, &user(2)));
    assert_refused(&json(last(46, 2) - G + 4 * K, &user(2)), "size");
    assert_refused(&json(last(46, 2) - G, &user(26)), "size");
    assert_planned(&json(last(46, 3) - G, &user(26)));
    // Cloud Hypervisor requires the field.
    let (code, out, err) = plan(&json(G, r#""generic_vhost_user": [{"socket": "/g"}],"#));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("generic_vhost_user[0]"), "{err}");
    assert!(err.contains("device_type"), "{err}");
}

#[test]
fn a_vdpa_device_takes_no_counted_slot() {
    // The virtio device type of a vDPA device is the host device's: a block one has a 32-bit
    // BAR, so a vDPA device is not counted (as VFIO devices are not).
    let vdpa = r#""vdpa": [{"path": "/dev/vhost-vdpa-0"}, {"path": "/dev/vhost-vdpa-1"}],"#;
    assert_planned(&json(last(46, 2) - G, vdpa));
    // It still takes a device id of segment 0's bus.
    let net = format!(
        r#""net": [{}], "vdpa": [{{"path": "/v"}}],"#,
        vec!["{}"; 29].join(", ")
    );
    let (code, out, err) = plan(&json(G, &net));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("32 PCI devices"), "{err}");
}

#[test]
fn a_device_id_given_twice_or_starting_with_two_underscores_is_refused() {
    // Cloud Hypervisor keeps the ids of all device sections in one namespace, refuses an id
    // given twice there and keeps ids starting with `__` for its own devices.
    for (sections, field, other) in [
        (
            r#""net": [{"id": "a"}, {"id": "a"}],"#,
            "net[1].id",
            "net[0].id",
        ),
        (
            r#""disks": [{"path": "/d", "id": "a"}], "vsock": {"cid": 3, "socket": "/v", "id": "a"},"#,
            "vsock.id",
            "disks[0].id",
        ),
        (
            r#""rng": {"src": "/dev/urandom", "id": "a"}, "console": {"mode": "Tty", "id": "a"},"#,
            "console.id",
            "rng.id",
        ),
        (
            r#""rate_limit_groups": [{}, {}],"#,
            "rate_limit_groups[1]",
            "rate_limit_groups[0]",
        ),
        (r#""net": [{"id": "__net"}],"#, "net[0].id", "__"),
    ] {
        let text = json(G, sections);
        let (code, out, err) = plan(&text);
        assert_eq!(code, 2, "{sections}: {out}{err}");
        assert!(out.is_empty(), "{sections}: {out}");
        assert!(err.contains(&format!("{field}: ")), "{sections}: {err}");
        assert!(err.contains(other), "{sections}: {err}");
    }
    // Ids that differ, in case too, are planned.
    assert_planned(&json(
        G,
        r#""net": [{"id": "a"}, {"id": "A"}], "rate_limit_groups": [{}],"#,
    ));
}

#[test]
fn check_applies_the_device_area_bound_to_cloud_hypervisors_aarch64_layout() {
    // On AArch64 Cloud Hypervisor's RAM runs from 1 GiB to 4032 MiB, then from 4 GiB: past
    // that hole it ends 64 MiB above the plan's RAM, which runs on from 1 GiB. Memory the plan
    // ends 32 MiB below 2^40 - 8 MiB ends 32 MiB above it in Cloud Hypervisor.
    let ram = last(40, 1) - G - 32 * M;
    let (status, detail, _) = address_bits_on(&json(ram, ""), 40, Arch::Aarch64);
    assert_eq!(status, Status::Fail, "{detail}");
    assert!(detail.contains("device area"), "{detail}");
    let (status, detail, _) = address_bits_on(&json(ram - 64 * M, ""), 40, Arch::Aarch64);
    assert_eq!(status, Status::Warn, "{detail}");
    // Its hotplug area starts at the next 128 MiB boundary after that RAM.
    let hotplug = |ram: u64, size: u64| {
        format!(
            r#"{{"payload": {{"kernel": "vmlinux"}},
 "cpus": {{"boot_vcpus": 1, "max_vcpus": 1, "max_phys_bits": 46}},
 "memory": {{"size": {ram}, "hotplug_size": {size}, "hotplug_method": "VirtioMem"}}}}"#
        )
    };
    // 4 GiB of RAM ends at 5 GiB + 64 MiB, so hotplug from 5 GiB + 128 MiB.
    let size = (1 << 40) - 5 * G - 256 * M;
    let (status, detail, _) = address_bits_on(&hotplug(4 * G, size), 40, Arch::Aarch64);
    assert_eq!(status, Status::Warn, "{detail}");
    let (status, detail, _) = address_bits_on(&hotplug(4 * G, size + 128 * M), 40, Arch::Aarch64);
    assert_eq!(status, Status::Fail, "{detail}");
    // On x86_64 the plan's memory ends where Cloud Hypervisor's does.
    let (status, detail, _) = address_bits_on(&hotplug(4 * G, size + 128 * M), 40, Arch::X86_64);
    assert_eq!(status, Status::Warn, "{detail}");
}

#[test]
fn a_rate_limit_group_is_read_as_cloud_hypervisor_reads_it() {
    // `RateLimiterGroupConfig` has no `iommu` (an unknown field, ignored) and a `String` id
    // (`null` refused).
    assert_planned(&json(
        G,
        r#""rate_limit_groups": [{"id": "r", "iommu": 5, "rate_limiter_config": {}}],"#,
    ));
    let (code, out, err) = plan(&json(G, r#""rate_limit_groups": [{"id": null}],"#));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("rate_limit_groups[0].id: "), "{err}");
}

#[test]
fn a_console_in_socket_mode_is_refused() {
    // Cloud Hypervisor's virtio-console has no socket back end: it refuses to create the VM.
    let (code, out, err) = plan(&json(
        G,
        r#""console": {"mode": "Socket", "socket": "/s"},"#,
    ));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("console.mode: "), "{err}");
    assert!(err.contains("Socket"), "{err}");
    for mode in ["Off", "Pty", "Tty", "File", "Null"] {
        assert_planned(&json(G, &format!(r#""console": {{"mode": "{mode}"}},"#)));
    }
}

#[test]
fn a_device_id_of_the_default_zones_virtio_mem_device_is_refused() {
    // Without zones, Cloud Hypervisor's memory is one zone, `mem0`, and its virtio-mem device
    // takes that id: a device with it too makes Cloud Hypervisor fail to add both.
    let config = |section: &str, method: &str| {
        format!(
            r#"{{{section}, "payload": {{"kernel": "vmlinux"}},
 "memory": {{"size": 1073741824, "hotplug_size": 1073741824, "hotplug_method": "{method}"}}}}"#
        )
    };
    for section in [
        r#""net": [{"id": "mem0"}]"#,
        r#""devices": [{"path": "/sys/x", "id": "mem0"}]"#,
    ] {
        let (code, out, err) = plan(&config(section, "VirtioMem"));
        assert_eq!(code, 2, "{section}: {out}{err}");
        assert!(err.contains(".id: "), "{section}: {err}");
        assert!(err.contains("virtio-mem"), "{section}: {err}");
        // ACPI hotplug has no virtio-mem device.
        assert_planned(&config(section, "Acpi"));
    }
    // A rate limit group is no device; another id is planned.
    assert_planned(&config(
        r#""rate_limit_groups": [{"id": "mem0"}]"#,
        "VirtioMem",
    ));
    assert_planned(&config(r#""net": [{"id": "mem1"}]"#, "VirtioMem"));
}
