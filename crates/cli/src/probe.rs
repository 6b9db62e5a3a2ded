//! What this host offers for guest memory: page sizes, transparent huge pages, huge page
//! pools, NUMA nodes, `MADV_POPULATE_WRITE`, guard pages, the mapping limit and overcommit.

use std::fmt::Write as _;
use std::fs;

use memvisor_space::{Region, RegionSpec};
use memvisor_vmem::{CommitMode, Reservation};
use serde::Serialize;
use vm_memory::GuestAddress;

use crate::hostmem::{field_kib, host_text, huge_page_dirs, read_number};
use crate::size::{Size, approx};

/// Transparent huge page settings (`/sys/kernel/mm/transparent_hugepage`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Thp {
    /// The `enabled` mode (`always`, `madvise`, `never`), or `unavailable`.
    pub enabled: String,
    /// The `defrag` mode.
    pub defrag: String,
    /// The `shmem_enabled` mode (memfds and shared memory).
    pub shmem_enabled: String,
    /// The PMD huge page size in bytes (`hpage_pmd_size`).
    pub pmd_size: Option<u64>,
}

/// One explicit huge page pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HugePagePool {
    /// Page size in bytes.
    pub page_size: u64,
    /// Pages in the pool (`nr_hugepages`).
    pub total: u64,
    /// Free pages.
    pub free: u64,
    /// Pages reserved by mappings but not yet faulted.
    pub reserved: u64,
    /// Surplus pages (overcommitted).
    pub surplus: u64,
}

/// A host NUMA node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NumaNode {
    /// Its number.
    pub node: u32,
    /// Its memory in bytes.
    pub total: u64,
    /// Its free memory in bytes.
    pub free: u64,
    /// Its CPUs as the kernel lists them (`0-3`).
    pub cpus: String,
}

/// Whether a feature was tried and worked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Check {
    /// It worked.
    pub works: bool,
    /// What was tried, or why it failed.
    pub detail: String,
}

/// Overcommit settings and the commit charge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Overcommit {
    /// `vm.overcommit_memory`: 0, 1 or 2.
    pub mode: u64,
    /// `heuristic`, `always` or `never`.
    pub name: &'static str,
    /// `vm.overcommit_ratio` (percent, used in mode 2).
    pub ratio: Option<u64>,
    /// `CommitLimit` in bytes.
    pub commit_limit: Option<u64>,
    /// `Committed_AS` in bytes.
    pub committed: Option<u64>,
}

/// Everything `probe` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// The kernel release.
    pub kernel: String,
    /// The base page size in bytes.
    pub page_size: u64,
    /// Total memory in bytes.
    pub memory_total: Option<u64>,
    /// Available memory in bytes.
    pub memory_available: Option<u64>,
    /// Transparent huge pages.
    pub thp: Thp,
    /// Explicit huge page pools, by page size.
    pub huge_page_pools: Vec<HugePagePool>,
    /// NUMA nodes (empty when the host has no NUMA information).
    pub numa_nodes: Vec<NumaNode>,
    /// Whether `MADV_POPULATE_WRITE` prefaults memory.
    pub madv_populate_write: Check,
    /// Whether guard pages can be made.
    pub guard_pages: Check,
    /// `vm.max_map_count`.
    pub max_map_count: Option<u64>,
    /// Overcommit.
    pub overcommit: Overcommit,
}

/// The selected mode of a `/sys` file such as `always [madvise] never`.
fn selected(path: &str) -> crate::Result<String> {
    let Ok(text) = crate::input::read_host_file(path.as_ref(), crate::input::MAX_HOST_FILE_BYTES)?
    else {
        return Ok("unavailable".to_owned());
    };
    Ok(text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('[')?.strip_suffix(']').map(str::to_owned))
        .unwrap_or_else(|| text.trim().to_owned()))
}

fn numa_nodes() -> crate::Result<Vec<NumaNode>> {
    numa_nodes_in(std::path::Path::new("/sys/devices/system/node"))
}

/// The NUMA nodes of a directory laid out as `/sys/devices/system/node`.
fn numa_nodes_in(root: &std::path::Path) -> crate::Result<Vec<NumaNode>> {
    let mut out: Vec<NumaNode> = Vec::new();
    for e in fs::read_dir(root).into_iter().flatten().flatten() {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let Some(digits) = name.strip_prefix("node") else {
            continue;
        };
        // Digits only: `parse` takes a sign.
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(node) = digits.parse::<u32>() else {
            continue;
        };
        let meminfo = host_text(&e.path().join("meminfo"))?;
        // Lines read "Node 0 MemTotal:  16318124 kB".
        let prefix = format!("Node {node} ");
        let stripped: String = meminfo
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(|l| format!("{l}\n"))
            .collect();
        out.push(NumaNode {
            node,
            total: field_kib(&stripped, "MemTotal").map_or(0, kib_bytes),
            free: field_kib(&stripped, "MemFree").map_or(0, kib_bytes),
            cpus: host_text(&e.path().join("cpulist"))?.trim().to_owned(),
        });
    }
    out.sort_by_key(|n| n.node);
    Ok(out)
}

/// KiB as bytes, at most `u64::MAX` (a value a `/proc` or `/sys` file gives).
fn kib_bytes(kib: u64) -> u64 {
    kib.saturating_mul(1024)
}

/// Prefaults one page with `memvisor-space`, which uses `MADV_POPULATE_WRITE` and reports the
/// kernel's refusal.
fn check_populate() -> Check {
    let page = memvisor_vmem::page_size() as u64;
    match Region::back(RegionSpec::ram(GuestAddress(0), page).with_prefault_threads(1)) {
        Ok(_) => Check {
            works: true,
            detail: "prefaulted one page".to_owned(),
        },
        Err(e) => failure(&e),
    }
}

/// A check that could not be done, with why: the error and every cause of it.
fn failure(e: &dyn std::error::Error) -> Check {
    Check {
        works: false,
        detail: crate::back::error_chain(e),
    }
}

/// Makes a guard page between two committed pages with `memvisor-vmem` and checks that it
/// stays a guard page and cannot be committed.
fn check_guard() -> Check {
    let page = memvisor_vmem::page_size();
    let result = (|| -> Result<bool, memvisor_vmem::Error> {
        let mut r = Reservation::builder()
            .mode(CommitMode::Sparse)
            .reserve(3 * page)?;
        r.commit(0, 3 * page)?;
        r.guard(page, page)?;
        let guarded = r.is_guarded(page, page)?;
        let refused = r.commit(page, page).is_err();
        r.unguard(page, page)?;
        Ok(guarded && refused)
    })();
    guard_check(result)
}

/// The guard page check's line of `result`: whether the guard held, or why it could not be
/// tried.
fn guard_check(result: Result<bool, memvisor_vmem::Error>) -> Check {
    match result {
        Ok(true) => Check {
            works: true,
            detail: "guarded a page between two committed ones".to_owned(),
        },
        Ok(false) => Check {
            works: false,
            detail: "the guard page could be committed".to_owned(),
        },
        Err(e) => failure(&e),
    }
}

/// Looks at this host. Each `/proc` and `/sys` file is read at most
/// [`MAX_HOST_FILE_BYTES`](crate::input::MAX_HOST_FILE_BYTES) long; one that is absent or
/// cannot be read is a fact the host does not give.
///
/// # Errors
/// [`Error::HostFileTooLarge`](crate::Error::HostFileTooLarge) naming a file longer than
/// that.
pub fn probe() -> crate::Result<Probe> {
    let meminfo = host_text("/proc/meminfo".as_ref())?;
    let bytes = |key| field_kib(&meminfo, key).map(kib_bytes);
    let mode = read_number("/proc/sys/vm/overcommit_memory")?.unwrap_or(0);
    let mut huge_page_pools = Vec::new();
    for (kib, dir) in huge_page_dirs() {
        huge_page_pools.push(HugePagePool {
            page_size: kib * 1024,
            total: read_number(dir.join("nr_hugepages"))?.unwrap_or(0),
            free: read_number(dir.join("free_hugepages"))?.unwrap_or(0),
            reserved: read_number(dir.join("resv_hugepages"))?.unwrap_or(0),
            surplus: read_number(dir.join("surplus_hugepages"))?.unwrap_or(0),
        });
    }
    let kernel = crate::input::read_host_file(
        "/proc/sys/kernel/osrelease".as_ref(),
        crate::input::MAX_HOST_FILE_BYTES,
    )?
    .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
    Ok(Probe {
        kernel,
        page_size: memvisor_vmem::page_size() as u64,
        memory_total: bytes("MemTotal"),
        memory_available: bytes("MemAvailable"),
        thp: Thp {
            enabled: selected("/sys/kernel/mm/transparent_hugepage/enabled")?,
            defrag: selected("/sys/kernel/mm/transparent_hugepage/defrag")?,
            shmem_enabled: selected("/sys/kernel/mm/transparent_hugepage/shmem_enabled")?,
            pmd_size: read_number("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size")?,
        },
        huge_page_pools,
        numa_nodes: numa_nodes()?,
        madv_populate_write: check_populate(),
        guard_pages: check_guard(),
        max_map_count: read_number("/proc/sys/vm/max_map_count")?,
        overcommit: Overcommit {
            mode,
            name: match mode {
                0 => "heuristic",
                1 => "always",
                _ => "never",
            },
            ratio: read_number("/proc/sys/vm/overcommit_ratio")?,
            commit_limit: bytes("CommitLimit"),
            committed: bytes("Committed_AS"),
        },
    })
}

fn opt_size(v: Option<u64>) -> String {
    v.map_or_else(|| "unknown".to_owned(), approx)
}

fn yes_no(c: &Check) -> String {
    format!("{} ({})", if c.works { "yes" } else { "no" }, c.detail)
}

/// The probe as `key: value` lines, one fact per line; a control or format character in a
/// value (as `/proc` or `/sys` gave it) is shown escaped (`\u{1b}`).
#[must_use]
pub fn probe_text(p: &Probe) -> String {
    let mut lines: Vec<(String, String)> = vec![
        ("kernel".into(), p.kernel.clone()),
        (
            "page size".into(),
            format!("{} ({})", p.page_size, Size(p.page_size)),
        ),
        (
            "memory".into(),
            format!(
                "total {}, available {}",
                opt_size(p.memory_total),
                opt_size(p.memory_available)
            ),
        ),
        (
            "transparent huge pages".into(),
            format!(
                "{} (defrag {}, shmem {}, PMD size {})",
                p.thp.enabled,
                p.thp.defrag,
                p.thp.shmem_enabled,
                opt_size(p.thp.pmd_size)
            ),
        ),
    ];
    if p.huge_page_pools.is_empty() {
        lines.push(("huge pages".into(), "none (no hugetlb pools)".into()));
    }
    for pool in &p.huge_page_pools {
        lines.push((
            format!("huge pages {}", Size(pool.page_size)),
            format!(
                "total {}, free {}, reserved {}, surplus {}",
                pool.total, pool.free, pool.reserved, pool.surplus
            ),
        ));
    }
    if p.numa_nodes.is_empty() {
        lines.push(("NUMA".into(), "no NUMA information".into()));
    }
    for n in &p.numa_nodes {
        lines.push((
            format!("NUMA node {}", n.node),
            format!(
                "total {}, free {}, CPUs {}",
                approx(n.total),
                approx(n.free),
                n.cpus
            ),
        ));
    }
    lines.push(("MADV_POPULATE_WRITE".into(), yes_no(&p.madv_populate_write)));
    lines.push(("guard pages".into(), yes_no(&p.guard_pages)));
    lines.push((
        "vm.max_map_count".into(),
        p.max_map_count
            .map_or_else(|| "unknown".to_owned(), |v| v.to_string()),
    ));
    lines.push((
        "overcommit".into(),
        format!(
            "{} ({}), ratio {}%, commit limit {}, committed {}",
            p.overcommit.mode,
            p.overcommit.name,
            p.overcommit
                .ratio
                .map_or_else(|| "?".to_owned(), |r| r.to_string()),
            opt_size(p.overcommit.commit_limit),
            opt_size(p.overcommit.committed)
        ),
    ));
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (k, v) in lines {
        // Values from /proc and /sys, escaped as a table cell is.
        let v = crate::render::escape(&v);
        let _ = writeln!(out, "{:<width$} {v}", format!("{k}:"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vmem error's OS error is its source, not in its message: the check's detail says the
    /// whole chain, the OS error once.
    #[test]
    fn guard_check_failure_says_the_os_error_once() {
        let os = std::io::Error::from_raw_os_error(12).to_string();
        let check = guard_check(Err(memvisor_vmem::Error::Os {
            operation: memvisor_vmem::Operation::Reserve,
            source: memvisor_vmem::OsError::from_raw(12),
        }));
        assert!(!check.works);
        assert_eq!(check.detail.matches(&os).count(), 1, "{}", check.detail);
        assert!(
            check.detail.starts_with("reserve failed: "),
            "{}",
            check.detail
        );
        assert!(guard_check(Ok(true)).works);
        assert!(!guard_check(Ok(false)).works);
    }

    /// A region that could not be prefaulted for want of a worker thread: the detail says the
    /// space error, the vmem error and the OS error, each once.
    #[test]
    fn failure_says_every_cause_once() {
        let os = std::io::Error::from_raw_os_error(11).to_string();
        let e = memvisor_space::Error::Os {
            op: "prefault",
            base: 0,
            source: std::io::Error::other(memvisor_vmem::Error::ThreadSpawn {
                index: 1,
                source: memvisor_vmem::OsError::from_raw(11),
            }),
        };
        let check = failure(&e);
        assert!(!check.works);
        assert_eq!(
            check.detail,
            format!(
                "prefault failed for the region at 0x0: could not start worker thread 1 of a \
                 parallel prefault: {os}"
            )
        );
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn probe_page_size_matches_vmem() {
        let p = probe().unwrap();
        assert_eq!(p.page_size, memvisor_vmem::page_size() as u64);
        assert!(p.guard_pages.works, "{}", p.guard_pages.detail);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn numa_nodes_in_odd_sysfs_reads_what_is_there() {
        let root = crate::hostmem::tests::scratch_dir("nodes");
        for name in ["node0", "node2", "node+3", "nodes", "possible"] {
            fs::create_dir(root.join(name)).unwrap();
        }
        // A node without meminfo or cpulist; one whose sizes in bytes pass 64 bits.
        fs::write(
            root.join("node2/meminfo"),
            "Node 2 MemTotal: 18014398509481984 kB\nNode 2 MemFree: 99999999999999999999 kB\n",
        )
        .unwrap();
        let nodes = numa_nodes_in(&root).unwrap();
        let ids: Vec<u32> = nodes.iter().map(|n| n.node).collect();
        assert_eq!(ids, [0, 2]);
        assert_eq!((nodes[0].total, nodes[0].free), (0, 0));
        assert_eq!((nodes[1].total, nodes[1].free), (u64::MAX, 0));
        assert!(numa_nodes_in(&root.join("missing")).unwrap().is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn numa_node_file_past_the_limit_is_refused_by_name() {
        let root = crate::hostmem::tests::scratch_dir("nodes-oversized");
        fs::create_dir(root.join("node0")).unwrap();
        let limit = usize::try_from(crate::input::MAX_HOST_FILE_BYTES).unwrap();
        fs::write(root.join("node0/cpulist"), "0-3\n".repeat(limit / 4 + 1)).unwrap();
        let err = numa_nodes_in(&root).unwrap_err();
        assert!(
            matches!(&err, crate::Error::HostFileTooLarge { path, .. } if path.ends_with("node0/cpulist")),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("node0/cpulist is larger than 65536 bytes"),
            "{err}"
        );
        fs::remove_dir_all(&root).unwrap();
    }

    fn sample_probe() -> Probe {
        Probe {
            kernel: "6.1.0".into(),
            page_size: 4096,
            memory_total: None,
            memory_available: None,
            thp: Thp {
                enabled: "madvise".into(),
                defrag: "madvise".into(),
                shmem_enabled: "never".into(),
                pmd_size: None,
            },
            huge_page_pools: vec![],
            numa_nodes: vec![],
            madv_populate_write: Check {
                works: true,
                detail: "ok".into(),
            },
            guard_pages: Check {
                works: true,
                detail: "ok".into(),
            },
            max_map_count: None,
            overcommit: Overcommit {
                mode: 0,
                name: "heuristic",
                ratio: None,
                commit_limit: None,
                committed: None,
            },
        }
    }

    #[test]
    fn probe_text_control_characters_are_escaped() {
        // What /proc and /sys give is shown as the tables show a cell: no control or format
        // character reaches the terminal raw.
        let mut p = sample_probe();
        p.kernel = "6.1\u{1b}[2J".into();
        p.thp.enabled = "evil\nfake: line".into();
        p.numa_nodes.push(NumaNode {
            node: 0,
            total: 0,
            free: 0,
            cpus: "0-3\u{202e}".into(),
        });
        let text = probe_text(&p);
        assert!(
            !text
                .chars()
                .any(|c| c != '\n' && crate::render::needs_escape(c)),
            "{text}"
        );
        assert!(
            text.contains("kernel:                 6.1\\u{1b}[2J\n"),
            "{text}"
        );
        assert!(text.contains("evil\\u{a}fake: line (defrag"), "{text}");
        assert!(text.contains("CPUs 0-3\\u{202e}\n"), "{text}");
    }

    #[test]
    fn probe_text_lists_pools_and_nodes() {
        let p = Probe {
            kernel: "6.1.0".into(),
            page_size: 4096,
            memory_total: Some(8 << 30),
            memory_available: None,
            thp: Thp {
                enabled: "madvise".into(),
                defrag: "madvise".into(),
                shmem_enabled: "never".into(),
                pmd_size: Some(2 << 20),
            },
            huge_page_pools: vec![HugePagePool {
                page_size: 2 << 20,
                total: 4,
                free: 3,
                reserved: 0,
                surplus: 0,
            }],
            numa_nodes: vec![],
            madv_populate_write: Check {
                works: true,
                detail: "ok".into(),
            },
            guard_pages: Check {
                works: false,
                detail: "refused".into(),
            },
            max_map_count: Some(65530),
            overcommit: Overcommit {
                mode: 0,
                name: "heuristic",
                ratio: Some(50),
                commit_limit: None,
                committed: None,
            },
        };
        let text = probe_text(&p);
        assert!(
            text.contains("page size:              4096 (4 KiB)\n"),
            "{text}"
        );
        assert!(text.contains("huge pages 2 MiB:       total 4, free 3, reserved 0, surplus 0\n"));
        assert!(text.contains("guard pages:            no (refused)\n"));
        assert!(text.contains("NUMA:                   no NUMA information\n"));
    }
}
