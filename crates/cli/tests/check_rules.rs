//! `memvisor check` rules on made-up hosts: hugetlbfs mounts, huge page pools with hotplug,
//! NUMA binding, unknown address bits, overcommit modes, prefault, and the summary line.

use memvisor_cli::check::{Finding, HostFacts, Status, check_spec, check_text};
use memvisor_cli::plan::plan;
use memvisor_cli::spec::{Source, parse};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn run(text: &str, host: &HostFacts) -> Vec<Finding> {
    let src = Source {
        origin: "vm.toml",
        text,
    };
    let spec = parse(src).unwrap();
    check_spec(&spec, &plan(&spec, src).unwrap(), host)
}

fn get<'a>(findings: &'a [Finding], check: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.check == check)
        .unwrap_or_else(|| panic!("no {check} in {findings:?}"))
}

fn good_host() -> HostFacts {
    HostFacts {
        thp_enabled: "madvise".into(),
        thp_shmem_enabled: "advise".into(),
        thp_pmd_knobs: None,
        huge_page_pools: vec![(2 * MIB, 1024, 1024), (GIB, 0, 0)],
        huge_page_reserved: vec![],
        mounts: vec![
            ("/".into(), None),
            ("/proc".into(), None),
            ("/sys".into(), None),
            ("/dev/hugepages".into(), Some(2 * MIB)),
        ],
        numa_nodes: vec![(0, 8 * GIB), (1, 8 * GIB)],
        phys_bits: Some(46),
        kvm_error: None,
        max_map_count: Some(65530),
        map_count: 100,
        overcommit_mode: 0,
        commit: Some((16 * GIB, GIB)),
        memory_and_swap: Some(16 * GIB),
        memory_available: Some(8 * GIB),
        swap_free: None,
        paths: Vec::new(),
        resolved: Vec::new(),
    }
}

const HUGETLBFS_2M: &str = "[memory]\nsize = \"64MiB\"\nbacking = \"hugetlbfs\"\nhugetlbfs = \"/mnt/huge\"\nhuge_pages = \"2MiB\"\n";

#[test]
fn check_hugetlbfs_mount_of_matching_page_size_passes() {
    let host = HostFacts {
        mounts: vec![("/".into(), None), ("/mnt/huge".into(), Some(2 * MIB))],
        ..good_host()
    };
    let f = run(HUGETLBFS_2M, &host);
    let m = get(&f, "hugetlbfs");
    assert_eq!(m.status, Status::Ok);
    assert_eq!(m.detail, "/mnt/huge is a hugetlbfs mount of 2 MiB pages");
    assert_eq!(m.fix, None);
}

#[test]
fn check_hugetlbfs_mount_of_other_page_size_fails_with_remount_fix() {
    let host = HostFacts {
        mounts: vec![("/".into(), None), ("/mnt/huge".into(), Some(GIB))],
        ..good_host()
    };
    let f = run(HUGETLBFS_2M, &host);
    let m = get(&f, "hugetlbfs");
    assert_eq!(m.status, Status::Fail);
    assert_eq!(
        m.detail,
        "/mnt/huge is a hugetlbfs mount of 1 GiB pages, not 2 MiB"
    );
    assert_eq!(
        m.fix.as_deref(),
        Some(
            "mkdir -p DIR && mount -t hugetlbfs -o pagesize=2M none DIR (as root), DIR an empty \
             directory of its own, and set memory.hugetlbfs = \"DIR\""
        )
    );
    // The pool itself is fine: only the mount is the problem.
    assert_eq!(get(&f, "huge_pages").status, Status::Ok);
}

#[test]
fn check_hugetlbfs_missing_mount_fix_is_one_quoted_shell_word() {
    // A path the shell would split or run as a command is quoted in the fix.
    let src = "[memory]\nsize = \"64MiB\"\nbacking = \"hugetlbfs\"\nhuge_pages = \"2MiB\"\nhugetlbfs = \"/mnt/huge; rm -rf / #it's\"\n";
    let f = run(src, &good_host());
    let m = get(&f, "hugetlbfs");
    assert_eq!(m.status, Status::Fail);
    assert_eq!(
        m.fix.as_deref(),
        Some(
            "mkdir -p '/mnt/huge; rm -rf / #it'\\''s' && mount -t hugetlbfs -o pagesize=2M none \
             '/mnt/huge; rm -rf / #it'\\''s' (as root)"
        )
    );
    // A plain path stays as it is.
    let f = run(HUGETLBFS_2M, &good_host());
    assert_eq!(
        get(&f, "hugetlbfs").fix.as_deref(),
        Some("mkdir -p /mnt/huge && mount -t hugetlbfs -o pagesize=2M none /mnt/huge (as root)")
    );
}

#[test]
fn check_hugetlbfs_on_another_file_systems_mount_point_is_not_offered_as_the_fix() {
    let src = "[memory]\nsize = \"64MiB\"\nbacking = \"hugetlbfs\"\nhuge_pages = \"2MiB\"\nhugetlbfs = \"/proc\"\n";
    let f = run(src, &good_host());
    let m = get(&f, "hugetlbfs");
    assert_eq!(m.status, Status::Fail);
    assert_eq!(
        m.detail,
        "/proc is the mount point of another file system, not hugetlbfs"
    );
    let fix = m.fix.as_deref().unwrap();
    assert!(!fix.contains("/proc"), "{fix}");
    assert!(fix.contains("none DIR"), "{fix}");
}

#[test]
fn check_huge_pool_enough_for_boot_but_not_hotplug_fails_as_back_plugs_every_slot() {
    // 64 MiB boot RAM is 32 pages; two 64 MiB slots need 64 more, and `back` plugs both at
    // once: without a fallback the plug of a slot the pool cannot hold fails.
    let host = HostFacts {
        huge_page_pools: vec![(2 * MIB, 40, 50)],
        ..good_host()
    };
    let spec = "[memory]\nsize = \"64MiB\"\nhuge_pages = \"2MiB\"\n[hotplug]\nslots = 2\nslot_size = \"64MiB\"\n";
    let f = run(spec, &host);
    let h = get(&f, "huge_pages");
    assert_eq!(h.status, Status::Fail, "{h:?}");
    assert!(
        h.detail.starts_with("boot RAM fits (32 pages)"),
        "{}",
        h.detail
    );
    assert_eq!(
        h.fix.as_deref(),
        Some("echo 106 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages (as root)")
    );
    // A slot that may fall back to transparent huge pages is plugged all the same: a warning.
    let f = run(
        &spec.replace(
            "[hotplug]",
            "huge_page_fallback = \"transparent\"\n[hotplug]",
        ),
        &host,
    );
    let h = get(&f, "huge_pages");
    assert_eq!(h.status, Status::Warn, "{h:?}");
    assert!(
        h.detail.starts_with("boot RAM fits (32 pages)"),
        "{}",
        h.detail
    );
}

#[test]
fn check_host_node_with_too_little_free_memory_warns() {
    let host = HostFacts {
        numa_nodes: vec![(0, 8 * GIB), (1, 16 * MIB)],
        ..good_host()
    };
    let f = run(
        "[memory]\n[[numa]]\nsize = \"64MiB\"\nhost_nodes = [1]\n",
        &host,
    );
    let n = get(&f, "numa");
    assert_eq!(n.status, Status::Warn);
    assert!(
        n.detail
            .starts_with("numa[0]: 64 MiB bound to host node 1, which has"),
        "{}",
        n.detail
    );
    assert!(n.fix.as_ref().unwrap().contains("preferred"));
    // Spread over two host nodes, the same node is not checked against one node's memory.
    let f = run(
        "[memory]\n[[numa]]\nsize = \"64MiB\"\nhost_nodes = [0, 1]\n",
        &host,
    );
    let n = get(&f, "numa");
    assert_eq!(n.status, Status::Ok);
    assert_eq!(n.detail, "every bound host node exists");
}

#[test]
fn guest_nodes_sharing_a_host_node_are_checked_against_its_memory_together() {
    let host = HostFacts {
        numa_nodes: vec![(0, 8 * GIB), (1, 100 * MIB)],
        ..good_host()
    };
    // Each fits host node 1 alone; the two together (128 MiB) do not.
    let two = "[memory]\n[[numa]]\nsize = \"64MiB\"\nhost_nodes = [1]\n\
               [[numa]]\nsize = \"64MiB\"\nhost_nodes = [1]\n";
    let f = run(two, &host);
    let warns: Vec<&Finding> = f
        .iter()
        .filter(|f| f.check == "numa" && f.status == Status::Warn)
        .collect();
    assert_eq!(warns.len(), 1, "{f:?}");
    assert!(
        warns[0]
            .detail
            .starts_with("numa[0], numa[1]: 128 MiB bound to host node 1, which has"),
        "{}",
        warns[0].detail
    );
    assert!(warns[0].fix.as_ref().unwrap().contains("preferred"));
    // Bound to different host nodes, each fits its own.
    let apart = "[memory]\n[[numa]]\nsize = \"64MiB\"\nhost_nodes = [1]\n\
                 [[numa]]\nsize = \"64MiB\"\nhost_nodes = [0]\n";
    let f = run(apart, &host);
    let n = get(&f, "numa");
    assert_eq!(n.status, Status::Ok, "{}", n.detail);
}

#[test]
fn check_host_node_on_host_without_numa_information_fails() {
    let host = HostFacts {
        numa_nodes: Vec::new(),
        ..good_host()
    };
    let f = run(
        "[memory]\n[[numa]]\nsize = \"64MiB\"\nhost_nodes = [0]\n",
        &host,
    );
    let n = get(&f, "numa");
    assert_eq!(n.status, Status::Fail);
    assert_eq!(
        n.detail,
        "numa[0]: host node 0 does not exist (this host has no NUMA information)"
    );
}

#[test]
fn check_unbound_nodes_have_no_numa_finding() {
    let f = run("[memory]\nsize = \"64MiB\"\n", &good_host());
    assert!(f.iter().all(|x| x.check != "numa"), "{f:?}");
}

#[test]
fn check_unknown_address_bits_warn_without_fix() {
    let host = HostFacts {
        phys_bits: None,
        ..good_host()
    };
    let f = run("[memory]\nsize = \"64MiB\"\n", &host);
    let a = get(&f, "address_bits");
    assert_eq!(a.status, Status::Warn);
    assert!(a.detail.contains("unknown"), "{}", a.detail);
    assert_eq!(a.fix, None);
}

#[test]
fn check_overcommit_modes_report_room_or_refusal() {
    // Mode 2 with room: ok, and the detail says how much.
    let host = HostFacts {
        overcommit_mode: 2,
        commit: Some((4 * GIB, GIB)),
        ..good_host()
    };
    let o = get(&run("[memory]\nsize = \"64MiB\"\n", &host), "overcommit").clone();
    assert_eq!(o.status, Status::Ok);
    assert!(
        o.detail.starts_with("overcommit is off (mode 2)"),
        "{}",
        o.detail
    );
    assert_eq!(o.fix, None);

    // Mode 0 refuses a mapping larger than RAM and swap.
    let host = HostFacts {
        overcommit_mode: 0,
        memory_and_swap: Some(GIB),
        ..good_host()
    };
    let o = get(&run("[memory]\nsize = \"2GiB\"\n", &host), "overcommit").clone();
    assert_eq!(o.status, Status::Fail);
    assert!(
        o.detail
            .starts_with("heuristic overcommit (mode 0) refuses"),
        "{}",
        o.detail
    );
    assert!(
        o.fix
            .unwrap()
            .starts_with("sysctl -w vm.overcommit_memory=1")
    );

    // Explicit huge pages are not charged, so the same size passes in mode 0.
    let o = get(
        &run("[memory]\nsize = \"2GiB\"\nhuge_pages = \"2MiB\"\n", &host),
        "overcommit",
    )
    .clone();
    assert_eq!(o.status, Status::Ok);

    // Mode 1 always overcommits.
    let host = HostFacts {
        overcommit_mode: 1,
        ..good_host()
    };
    let o = get(&run("[memory]\nsize = \"64MiB\"\n", &host), "overcommit").clone();
    assert_eq!(
        (o.status, o.detail.as_str()),
        (Status::Ok, "overcommit mode 1")
    );
}

#[test]
fn check_prefault_past_available_memory_fails() {
    let host = HostFacts {
        memory_available: Some(32 * MIB),
        paths: Vec::new(),
        resolved: Vec::new(),
        ..good_host()
    };
    let f = run("[memory]\nsize = \"64MiB\"\nprefault = 2\n", &host);
    let m = get(&f, "memory");
    assert_eq!(m.status, Status::Fail);
    assert!(
        m.detail.starts_with("prefault makes 64 MiB resident"),
        "{}",
        m.detail
    );
    // Without prefault nothing is made resident up front.
    let f = run("[memory]\nsize = \"64MiB\"\n", &host);
    assert!(f.iter().all(|x| x.check != "memory"), "{f:?}");
}

#[test]
fn check_prefault_counts_free_swap_as_available() {
    // 32 MiB available and 64 MiB of free swap: prefaulting 64 MiB swaps pages out, it does
    // not run out of memory, as `back` holds it to both.
    let host = HostFacts {
        memory_available: Some(32 * MIB),
        swap_free: Some(64 * MIB),
        ..good_host()
    };
    let f = run("[memory]\nsize = \"64MiB\"\nprefault = 2\n", &host);
    assert!(f.iter().all(|x| x.check != "memory"), "{f:?}");
    let f = run("[memory]\nsize = \"128MiB\"\nprefault = 2\n", &host);
    let m = get(&f, "memory");
    assert_eq!(m.status, Status::Fail);
    assert!(
        m.detail.starts_with(
            "prefault makes 128 MiB resident; 96.0 MiB is available (MemAvailable and SwapFree)"
        ),
        "{}",
        m.detail
    );
}

#[test]
fn check_prefault_of_huge_pages_that_fall_back_needs_available_memory() {
    // The 2 MiB pool is short: boot RAM falls back to base pages, which prefault takes from
    // the memory available.
    let short = HostFacts {
        memory_available: Some(32 * MIB),
        huge_page_pools: vec![(2 * MIB, 8, 8)],
        ..good_host()
    };
    let spec = "[memory]\nsize = \"64MiB\"\nhuge_pages = \"2MiB\"\nhuge_page_fallback = \"transparent\"\nprefault = 2\n";
    let f = run(spec, &short);
    assert_eq!(get(&f, "huge_pages").status, Status::Warn);
    let m = get(&f, "memory");
    assert_eq!(m.status, Status::Fail);
    assert!(
        m.detail.starts_with("prefault makes 64 MiB resident"),
        "{}",
        m.detail
    );
    // With the pages in the pool (only the hotplug slots short), boot RAM gets its huge pages:
    // they are not taken from the memory available.
    let slots_short = HostFacts {
        huge_page_pools: vec![(2 * MIB, 32, 32)],
        ..short.clone()
    };
    let f = run(
        &format!("{spec}[hotplug]\nslots = 1\nslot_size = \"1GiB\"\n"),
        &slots_short,
    );
    assert_eq!(get(&f, "huge_pages").status, Status::Warn);
    // ... but the slot the pool does not hold falls back, and `back` plugs and prefaults it.
    let m = get(&f, "memory");
    assert_eq!(m.status, Status::Fail);
    assert!(
        m.detail
            .starts_with("prefault makes 1 GiB resident: boot RAM 0 B and the hotplug slots 1 GiB"),
        "{}",
        m.detail
    );
    // Without a fallback the pool's shortage is the failure; the pages are not other memory.
    let f = run(
        &spec.replace("huge_page_fallback = \"transparent\"\n", ""),
        &short,
    );
    assert_eq!(get(&f, "huge_pages").status, Status::Fail);
    assert!(f.iter().all(|x| x.check != "memory"), "{f:?}");
}

#[test]
fn check_prefault_counts_the_hotplug_slots_back_plugs() {
    // Boot RAM fits in what is available, but `back` plugs and prefaults every slot too: a
    // spec `check` passes must not be refused by `back` for memory `check` can count.
    let host = HostFacts {
        memory_available: Some(256 * MIB),
        ..good_host()
    };
    let spec =
        "[memory]\nsize = \"64MiB\"\nprefault = 2\n[hotplug]\nslots = 2\nslot_size = \"128MiB\"\n";
    let f = run(spec, &host);
    let m = get(&f, "memory");
    assert_eq!(m.status, Status::Fail);
    assert_eq!(
        m.detail,
        "prefault makes 320 MiB resident: boot RAM 64 MiB and the hotplug slots 256 MiB, \
         which `back` plugs at once; 256.0 MiB is available (MemAvailable and SwapFree)"
    );
    assert!(m.fix.as_ref().unwrap().contains("hotplug"), "{m:?}");
    // One slot fits with boot RAM: nothing to say.
    let f = run(&spec.replace("slots = 2", "slots = 1"), &host);
    assert!(f.iter().all(|x| x.check != "memory"), "{f:?}");
    // Slots of explicit huge pages the pool holds are not other memory.
    let pooled = HostFacts {
        huge_page_pools: vec![(2 * MIB, 1024, 1024)],
        ..host.clone()
    };
    let f = run(
        &spec.replace("prefault", "huge_pages = \"2MiB\"\nprefault"),
        &pooled,
    );
    assert!(f.iter().all(|x| x.check != "memory"), "{f:?}");
}

#[test]
fn check_text_counts_warnings_and_problems() {
    let host = HostFacts {
        kvm_error: Some("Permission denied".into()),
        ..good_host()
    };
    let f = run("[memory]\nsize = \"64MiB\"\n", &host);
    let text = check_text("vm", &f);
    assert!(
        text.starts_with("vm: this host can back the spec as written (1 warning)\n"),
        "{text}"
    );
    assert!(text.contains("fix: load kvm_intel or kvm_amd"), "{text}");

    let host = HostFacts {
        phys_bits: None,
        ..host
    };
    let f = run("[memory]\nsize = \"64MiB\"\n", &host);
    assert!(
        check_text("vm", &f)
            .starts_with("vm: this host can back the spec as written (2 warnings)\n")
    );

    let f = run("[memory]\nsize = \"64MiB\"\n", &good_host());
    assert!(check_text("vm", &f).starts_with("vm: this host can back the spec as written\n"));

    let host = HostFacts {
        max_map_count: Some(10),
        ..good_host()
    };
    let f = run("[memory]\nsize = \"64MiB\"\n", &host);
    assert!(
        check_text("vm", &f)
            .starts_with("vm: this host cannot back the spec as written (1 problem)\n")
    );
}

#[test]
fn check_huge_pool_reserved_pages_are_not_free() {
    // 40 free pages, all reserved by another process's mapping: none can be had.
    let host = HostFacts {
        huge_page_pools: vec![(2 * MIB, 40, 40)],
        huge_page_reserved: vec![(2 * MIB, 40)],
        ..good_host()
    };
    let f = run("[memory]\nsize = \"16MiB\"\nhuge_pages = \"2MiB\"\n", &host);
    let h = get(&f, "huge_pages");
    assert_eq!(h.status, Status::Fail, "{h:?}");
    assert_eq!(
        h.detail,
        "boot RAM needs 8 free 2 MiB pages; the pool has 0 free of 40, not counting 40 reserved by other mappings"
    );
    assert_eq!(
        h.fix.as_deref(),
        Some("echo 48 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages (as root)")
    );
    // Some reserved: the rest counts.
    let host = HostFacts {
        huge_page_pools: vec![(2 * MIB, 40, 40)],
        huge_page_reserved: vec![(2 * MIB, 30)],
        ..good_host()
    };
    let f = run("[memory]\nsize = \"16MiB\"\nhuge_pages = \"2MiB\"\n", &host);
    let h = get(&f, "huge_pages");
    assert_eq!(h.status, Status::Ok, "{h:?}");
    assert_eq!(
        h.detail,
        "8 2 MiB pages needed (boot and hotplug); 10 free of 40, not counting 30 reserved by other mappings"
    );
}

/// A host of 23.5 GiB of RAM and no swap, in heuristic overcommit.
fn small_host() -> HostFacts {
    HostFacts {
        overcommit_mode: 0,
        memory_and_swap: Some(23 * GIB + GIB / 2),
        ..good_host()
    }
}

#[test]
fn check_overcommit_mode0_counts_dax_windows() {
    // A DAX window is shared anonymous memory, charged when mapped.
    let f = run(
        "[memory]\nsize = \"64MiB\"\n[[device]]\ntype = \"virtio-pmem\"\ndax_size = \"32GiB\"\n",
        &small_host(),
    );
    let o = get(&f, "overcommit");
    assert_eq!(o.status, Status::Fail, "{o:?}");
    assert!(o.detail.contains("pmem0 DAX"), "{}", o.detail);
    assert!(
        o.fix.as_deref().unwrap().contains("smaller dax_size"),
        "{o:?}"
    );
}

#[test]
fn check_overcommit_mode0_checks_each_mapping_on_its_own() {
    // Two 16 GiB nodes are two mappings, each smaller than RAM and swap.
    let f = run(
        "[memory]\n[[numa]]\nsize = \"16GiB\"\n[[numa]]\nsize = \"16GiB\"\n",
        &small_host(),
    );
    let o = get(&f, "overcommit");
    assert_eq!(o.status, Status::Ok, "{o:?}");
    // One 32 GiB node is one mapping larger than both.
    let f = run("[memory]\nsize = \"32GiB\"\n", &small_host());
    assert_eq!(get(&f, "overcommit").status, Status::Fail);
    // So is shared anonymous memory.
    let f = run(
        "[memory]\nsize = \"32GiB\"\nbacking = \"anonymous-shared\"\n",
        &small_host(),
    );
    assert_eq!(get(&f, "overcommit").status, Status::Fail);
    // A hotplug slot is a mapping of its own when plugged.
    let f = run(
        "[memory]\nsize = \"1GiB\"\n[hotplug]\nslots = 2\nslot_size = \"16GiB\"\n",
        &small_host(),
    );
    assert_eq!(get(&f, "overcommit").status, Status::Ok);
}

#[test]
fn check_overcommit_memfd_is_not_charged_when_mapped() {
    let f = run(
        "[memory]\nsize = \"32GiB\"\nbacking = \"memfd\"\n",
        &small_host(),
    );
    let o = get(&f, "overcommit");
    assert_eq!(o.status, Status::Ok, "{o:?}");
    // Strict accounting sums what is charged when mapped: memfd memory is not (mapping it
    // cannot fail), DAX windows are. memfd memory is charged as the guest touches it, so more
    // of it than the room left is a warning, not a failure.
    let strict = HostFacts {
        overcommit_mode: 2,
        commit: Some((4 * GIB, GIB)),
        ..good_host()
    };
    let f = run("[memory]\nsize = \"8GiB\"\nbacking = \"memfd\"\n", &strict);
    assert_eq!(get(&f, "overcommit").status, Status::Warn);
    let f = run("[memory]\nsize = \"2GiB\"\nbacking = \"memfd\"\n", &strict);
    assert_eq!(get(&f, "overcommit").status, Status::Ok);
    let f = run(
        "[memory]\nsize = \"2GiB\"\n[[device]]\ntype = \"virtio-pmem\"\ndax_size = \"2GiB\"\n",
        &strict,
    );
    assert_eq!(get(&f, "overcommit").status, Status::Fail);
}

fn hugetlbfs_at(path: &str, mounts: &[(&str, Option<u64>)]) -> Finding {
    let host = HostFacts {
        mounts: mounts.iter().map(|&(p, s)| (p.to_owned(), s)).collect(),
        ..good_host()
    };
    let src = format!(
        "[memory]\nsize = \"64MiB\"\nbacking = \"hugetlbfs\"\nhugetlbfs = \"{path}\"\nhuge_pages = \"2MiB\"\n"
    );
    get(&run(&src, &host), "hugetlbfs").clone()
}

#[test]
fn check_hugetlbfs_finds_the_mount_in_use_at_the_path() {
    let two = Some(2 * MIB);
    let one = Some(GIB);
    // A trailing slash or a subdirectory is still in the mount.
    let m = hugetlbfs_at("/mnt/huge/", &[("/", None), ("/mnt/huge", two)]);
    assert_eq!(m.status, Status::Ok, "{m:?}");
    let m = hugetlbfs_at("/mnt/huge/sub", &[("/", None), ("/mnt/huge", two)]);
    assert_eq!(m.status, Status::Ok, "{m:?}");
    assert_eq!(
        m.detail,
        "/mnt/huge/sub is in /mnt/huge, a hugetlbfs mount of 2 MiB pages"
    );
    // A name that only starts like the mount point is not in it.
    let m = hugetlbfs_at("/mnt/hugepages", &[("/", None), ("/mnt/huge", two)]);
    assert_eq!(m.status, Status::Fail, "{m:?}");
    // Stacked mounts: the last one is in use.
    let m = hugetlbfs_at(
        "/mnt/huge",
        &[("/", None), ("/mnt/huge", one), ("/mnt/huge", two)],
    );
    assert_eq!(m.status, Status::Ok, "{m:?}");
    let m = hugetlbfs_at(
        "/mnt/huge",
        &[("/", None), ("/mnt/huge", two), ("/mnt/huge", one)],
    );
    assert_eq!(m.status, Status::Fail, "{m:?}");
    assert_eq!(
        m.detail,
        "/mnt/huge is a hugetlbfs mount of 1 GiB pages, not 2 MiB"
    );
    // The fix never mounts another hugetlbfs over the one in use.
    let fix = m.fix.unwrap();
    assert!(!fix.contains("/mnt/huge"), "{fix}");
    // The root lies under every other mount, even listed after them (as in containers).
    let m = hugetlbfs_at("/mnt/huge", &[("/mnt/huge", two), ("/", None)]);
    assert_eq!(m.status, Status::Ok, "{m:?}");
    let m = hugetlbfs_at("/mnt/other", &[("/mnt/huge", two), ("/", None)]);
    assert_eq!(m.status, Status::Fail, "{m:?}");
    // A file system mounted over a parent hides the hugetlbfs mount.
    let m = hugetlbfs_at(
        "/mnt/huge",
        &[("/", None), ("/mnt/huge", two), ("/mnt", None)],
    );
    assert_eq!(m.status, Status::Fail, "{m:?}");
    // A subdirectory of a mount of the wrong size is not offered as a mount point.
    let m = hugetlbfs_at("/mnt/huge/sub/", &[("/", None), ("/mnt/huge", one)]);
    assert_eq!(m.status, Status::Fail, "{m:?}");
    assert!(m.fix.unwrap().contains("none DIR"));
}

#[test]
fn check_text_prints_a_long_fix_whole() {
    let dir = format!("/work/{}", "d".repeat(300));
    let src = format!(
        "[memory]\nsize = \"64MiB\"\nbacking = \"hugetlbfs\"\nhuge_pages = \"2MiB\"\nhugetlbfs = \"{dir}\"\n"
    );
    let f = run(&src, &good_host());
    let fix = get(&f, "hugetlbfs").fix.clone().unwrap();
    assert!(fix.contains(&format!("mkdir -p {dir} && ")), "{fix}");
    let text = check_text("vm", &f);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("fix: mkdir"))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(line.trim_start(), format!("fix: {fix}"));
    // The fix sits under the details, as before.
    let header = text.lines().find(|l| l.starts_with("CHECK")).unwrap();
    assert_eq!(line.find("fix:"), header.find("DETAIL"), "{text}");
}

#[test]
fn check_numa_short_node_fix_changes_the_outcome_or_is_none() {
    // Already preferred, with other host nodes: the rest comes from them; nothing to change.
    let two = HostFacts {
        numa_nodes: vec![(0, 10 * GIB), (1, 10 * GIB)],
        ..good_host()
    };
    let preferred =
        "[memory]\n[[numa]]\nsize = \"20GiB\"\nhost_nodes = [0]\npolicy = \"preferred\"\n";
    let n = get(&run(preferred, &two), "numa").clone();
    assert_eq!(n.status, Status::Warn, "{n:?}");
    assert_eq!(n.fix, None, "{n:?}");
    assert!(n.detail.contains("from other host nodes"), "{}", n.detail);
    // A host of one node: no policy changes where the memory comes from.
    let one = HostFacts {
        numa_nodes: vec![(0, 10 * GIB)],
        ..good_host()
    };
    for policy in ["bind", "preferred", "interleave"] {
        let src = format!(
            "[memory]\n[[numa]]\nsize = \"20GiB\"\nhost_nodes = [0]\npolicy = \"{policy}\"\n"
        );
        let n = get(&run(&src, &one), "numa").clone();
        assert_eq!(n.status, Status::Warn, "{policy}: {n:?}");
        assert!(
            n.fix.as_deref().is_none_or(|f| !f.contains("policy")),
            "{policy}: {n:?}"
        );
    }
    // Bound, with other host nodes: preferred or spreading does change it.
    let bind = "[memory]\n[[numa]]\nsize = \"20GiB\"\nhost_nodes = [0]\n";
    let n = get(&run(bind, &two), "numa").clone();
    assert!(n.fix.unwrap().contains("policy = \"preferred\""));
}

#[test]
fn check_thp_reads_the_pmd_size_knob() {
    let private = "[memory]\nsize = \"64MiB\"\nhuge_pages = \"transparent\"\n";
    let memfd = "[memory]\nsize = \"64MiB\"\nbacking = \"memfd\"\nhuge_pages = \"transparent\"\n";
    // The per-size knob says never: the top-level madvise does not apply.
    let host = HostFacts {
        thp_pmd_knobs: Some((2 * MIB, "never".into(), "inherit".into())),
        ..good_host()
    };
    let t = get(&run(private, &host), "thp").clone();
    assert_eq!(t.status, Status::Warn, "{t:?}");
    assert_eq!(
        t.detail,
        "private memory gets transparent huge pages by hugepages-2048kB/enabled, which is `never`: it will get none"
    );
    assert_eq!(
        t.fix.as_deref(),
        Some(
            "echo madvise > /sys/kernel/mm/transparent_hugepage/hugepages-2048kB/enabled (as root)"
        )
    );
    // Shared memory inherits shmem_enabled, which is advise.
    assert_eq!(get(&run(memfd, &host), "thp").status, Status::Ok);
    // inherit: the top-level knob applies.
    let host = HostFacts {
        thp_enabled: "never".into(),
        thp_pmd_knobs: Some((2 * MIB, "inherit".into(), "never".into())),
        ..good_host()
    };
    let t = get(&run(private, &host), "thp").clone();
    assert_eq!(t.status, Status::Warn, "{t:?}");
    assert_eq!(
        t.fix.as_deref(),
        Some("echo madvise > /sys/kernel/mm/transparent_hugepage/enabled (as root)")
    );
    assert_eq!(get(&run(memfd, &host), "thp").status, Status::Warn);
    // The per-size knob allows it even when the top-level one does not.
    let host = HostFacts {
        thp_enabled: "never".into(),
        thp_pmd_knobs: Some((2 * MIB, "madvise".into(), "inherit".into())),
        ..good_host()
    };
    assert_eq!(get(&run(private, &host), "thp").status, Status::Ok);
}

#[test]
fn check_overcommit_counts_explicit_pages_that_fall_back() {
    let src =
        "[memory]\nsize = \"32GiB\"\nhuge_pages = \"2MiB\"\nhuge_page_fallback = \"transparent\"\n";
    // A pool too small: the memory falls back to transparent pages, charged when mapped.
    let short = HostFacts {
        huge_page_pools: vec![(2 * MIB, 0, 0)],
        ..small_host()
    };
    assert_eq!(get(&run(src, &short), "overcommit").status, Status::Fail);
    // A pool large enough: explicit huge pages, not charged.
    let enough = HostFacts {
        huge_page_pools: vec![(2 * MIB, 16384, 16384)],
        ..small_host()
    };
    assert_eq!(get(&run(src, &enough), "overcommit").status, Status::Ok);
}
