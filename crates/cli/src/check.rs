//! `memvisor check`: whether this host can back a spec as written, before anything is mapped.
//!
//! The host is read once into [`HostFacts`]; [`check_spec`] is a pure function of the spec, its
//! plan and those facts, so every rule is tested with made-up hosts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;

use serde::Serialize;

use crate::hostmem::{field_kib, huge_page_dirs, read_number};
use crate::plan::Plan;
use crate::render::Table;
use crate::size::{Size, approx};
use crate::spec::{BackingKind, PageKind, Policy, VmSpec};

/// What the checks need to know about the host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostFacts {
    /// `transparent_hugepage/enabled` (`always`, `madvise`, `never`), or `unavailable`.
    pub thp_enabled: String,
    /// `transparent_hugepage/shmem_enabled` (`always`, `within_size`, `advise`, `never`,
    /// `deny`, `force`), or `unavailable`.
    pub thp_shmem_enabled: String,
    /// The per-size knobs of the PMD huge page size (kernel 6.8 and later): (page size in bytes,
    /// `hugepages-<size>kB/enabled`, `hugepages-<size>kB/shmem_enabled`), each `inherit` when
    /// the top-level knob applies; `None` when the kernel has none.
    pub thp_pmd_knobs: Option<(u64, String, String)>,
    /// Huge page pools: (page size in bytes, free pages, total pages).
    pub huge_page_pools: Vec<(u64, u64, u64)>,
    /// Huge pages of each pool that are free but reserved by another mapping (`resv_hugepages`):
    /// (page size in bytes, reserved pages). They cannot be had until that mapping lets go.
    pub huge_page_reserved: Vec<(u64, u64)>,
    /// Every mount, in `/proc/mounts` order: (mount point, page size in bytes for hugetlbfs,
    /// `None` for any other file system). A later mount at or above a path hides the earlier
    /// ones there, except the root, which lies under every other mount wherever it is listed.
    pub mounts: Vec<(String, Option<u64>)>,
    /// Host NUMA nodes: (node, free bytes).
    pub numa_nodes: Vec<(u32, u64)>,
    /// The CPU's physical address bits, as Cloud Hypervisor takes them ([`cpu_phys_bits`]);
    /// `None` where they are not read (on a host other than x86_64).
    pub phys_bits: Option<u32>,
    /// Why `/dev/kvm` cannot be opened for reading and writing; `None` when it can.
    pub kvm_error: Option<String>,
    /// `vm.max_map_count`.
    pub max_map_count: Option<u64>,
    /// Mappings this process has now.
    pub map_count: u64,
    /// `vm.overcommit_memory`.
    pub overcommit_mode: u64,
    /// `CommitLimit` and `Committed_AS`, bytes.
    pub commit: Option<(u64, u64)>,
    /// `MemTotal` + `SwapTotal`, bytes.
    pub memory_and_swap: Option<u64>,
    /// `MemAvailable`, bytes.
    pub memory_available: Option<u64>,
    /// `SwapFree`, bytes: swap that prefaulted anonymous and memfd pages (or the pages they
    /// push out) can go to.
    pub swap_free: Option<u64>,
    /// What is at the paths the spec names (its hugetlbfs folder), from [`path_state`]; a path
    /// not listed is not judged.
    pub paths: Vec<(String, PathState)>,
    /// Where the paths the spec names lead, from [`resolve`]: (the path as written, where the
    /// kernel takes it). A path not listed is judged by its text, `..` taken back lexically.
    pub resolved: Vec<(String, Resolved)>,
}

/// Where a path leads, as the kernel resolves it: every symlink followed (the last one too),
/// `.` skipped and `..` taken from the folder reached so far, so that `link/..` is the folder
/// above the link's target, not the one holding the link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolved {
    /// Something is there: the absolute path, symlinks followed.
    To(String),
    /// Nothing is there. `to` is where the path leads once the folders missing on the way are
    /// made (`mkdir -p` of the path). `missing` is set when the path goes on past a missing
    /// folder with `..`: the kernel cannot go back out of a folder that is not there, so the
    /// path does not resolve until that folder (the one named) is made, whatever `to` is.
    Missing {
        /// Where the path leads once its missing folders are made.
        to: String,
        /// The first missing folder on the way, where the kernel stops, when a `..` comes
        /// after it.
        missing: Option<String>,
    },
    /// The path cannot be followed at `at` (an absolute path, symlinks before it followed):
    /// `why` says why, to be read after it (`is not a directory` when the path goes on past a
    /// file, too many symlinks, or the error looking it up).
    Blocked {
        /// Where the path stops.
        at: String,
        /// Why.
        why: String,
    },
}

/// The most symlinks the kernel follows in one path (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// Where `path` (absolute) leads, resolved one part at a time as the kernel resolves it (see
/// [`Resolved`]); a relative path is taken from the root. Reads the file system (`lstat` and
/// `readlink` of each part), nothing else.
#[must_use]
pub fn resolve(path: &str) -> Resolved {
    use std::ffi::OsString;
    use std::path::{Component, PathBuf};

    let shown = |p: &std::path::Path| p.to_string_lossy().into_owned();
    // The parts still to take, the next one last.
    let mut todo: Vec<OsString> = path.split('/').rev().map(OsString::from).collect();
    let mut at = PathBuf::from("/");
    // How many of the last parts of `at` do not exist (they would be made).
    let mut made = 0usize;
    let mut first_made: Option<PathBuf> = None;
    let mut missing: Option<PathBuf> = None;
    let mut links = 0usize;
    while let Some(part) = todo.pop() {
        match part.to_str() {
            Some("" | ".") => continue,
            Some("..") => {
                if made > 0 {
                    missing = missing.or_else(|| first_made.clone());
                    made -= 1;
                }
                at.pop();
                continue;
            }
            _ => {}
        }
        let next = at.join(&part);
        if made > 0 {
            made += 1;
            at = next;
            continue;
        }
        match fs::symlink_metadata(&next) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                made = 1;
                first_made.get_or_insert_with(|| next.clone());
                at = next;
            }
            Err(e) => {
                return Resolved::Blocked {
                    at: shown(&next),
                    why: format!("cannot be looked up: {e}"),
                };
            }
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                let target = match fs::read_link(&next) {
                    Ok(target) if links <= MAX_SYMLINKS => target,
                    Ok(_) => {
                        return Resolved::Blocked {
                            at: shown(&next),
                            why: format!(
                                "leads through more than {MAX_SYMLINKS} symlinks (a loop?)"
                            ),
                        };
                    }
                    Err(e) => {
                        return Resolved::Blocked {
                            at: shown(&next),
                            why: format!("cannot be read: {e}"),
                        };
                    }
                };
                // A process's link in /proc (`fd/N`, `cwd`, `exe`) whose text is not a path
                // (`pipe:[123]`, `socket:[45]`, `anon_inode:[eventfd]`): the kernel takes it to
                // the open object itself, never to a folder, and the text leads nowhere. (The
                // links of /proc itself, `self` and `mounts`, name paths.)
                if next.starts_with("/proc")
                    && next.parent() != Some(std::path::Path::new("/proc"))
                    && !target.is_absolute()
                {
                    return Resolved::Blocked {
                        at: shown(&next),
                        why: format!(
                            "is a link to `{}`, an open object that no path leads into",
                            target.to_string_lossy()
                        ),
                    };
                }
                if target.is_absolute() {
                    at = PathBuf::from("/");
                }
                // A trailing `/` asks for a folder, as at the end of the path.
                if target.as_os_str().to_string_lossy().ends_with('/') {
                    todo.push(OsString::new());
                }
                todo.extend(target.components().rev().filter_map(|c| match c {
                    Component::Normal(p) => Some(p.to_owned()),
                    Component::ParentDir => Some("..".into()),
                    Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
                }));
            }
            // The path goes on past a file (a trailing `/` or `.` too).
            Ok(m) if !m.is_dir() && !todo.is_empty() => {
                return Resolved::Blocked {
                    at: shown(&next),
                    why: "is not a directory".to_owned(),
                };
            }
            Ok(_) => at = next,
        }
    }
    if first_made.is_none() {
        Resolved::To(shown(&at))
    } else {
        Resolved::Missing {
            to: shown(&at),
            missing: missing.as_deref().map(shown),
        }
    }
}

/// What is at a path on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathState {
    /// Nothing (or it cannot be seen).
    Missing,
    /// An empty directory.
    EmptyDirectory,
    /// A directory that holds something (or cannot be listed).
    Directory,
    /// Something that is not a directory.
    NotDirectory,
}

/// Reads what is at `path`.
#[must_use]
pub fn path_state(path: &str) -> PathState {
    match fs::metadata(path) {
        Err(_) => PathState::Missing,
        Ok(m) if !m.is_dir() => PathState::NotDirectory,
        Ok(_) => match fs::read_dir(path).map(|mut entries| entries.next().is_none()) {
            Ok(true) => PathState::EmptyDirectory,
            _ => PathState::Directory,
        },
    }
}

/// The default huge page size of the host (`Hugepagesize` in `/proc/meminfo`), bytes.
fn default_huge_page_size(meminfo: &str) -> u64 {
    field_kib(meminfo, "Hugepagesize").map_or(2 << 20, |k| k.saturating_mul(1024))
}

/// A field of `/proc/mounts` with the kernel's octal escapes (`\040` for a space, `\011`,
/// `\012`, `\134`) decoded.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        if let Some(byte) = code {
            out.push(byte);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `path` as one shell word: as it is when it holds only characters no shell treats
/// specially, else in single quotes (a quote inside written `'\''`).
fn shell_word(path: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:=@%".contains(c);
    if !path.is_empty() && path.chars().all(plain) {
        path.to_owned()
    } else {
        format!("'{}'", path.replace('\'', "'\\''"))
    }
}

/// `pagesize=2M` / `1G` / `2048k` of a mount's options, in bytes.
fn mount_page_size(options: &str, default: u64) -> u64 {
    options
        .split(',')
        .find_map(|o| o.strip_prefix("pagesize="))
        .and_then(|v| {
            let (digits, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit())?);
            let n: u64 = digits.parse().ok()?;
            let shift = match unit {
                "K" | "k" => 10,
                "M" | "m" => 20,
                "G" | "g" => 30,
                _ => return None,
            };
            n.checked_mul(1 << shift)
        })
        .unwrap_or(default)
}

/// `path` with repeated slashes, `.` components and a trailing slash dropped, and `..`
/// components taken back lexically.
fn normalize_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Whether the mount point `point` is `path` or a directory above it.
fn contains(point: &str, path: &str) -> bool {
    let point = normalize_path(point);
    point == "/"
        || path == point
        || path
            .strip_prefix(point.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The mounts of a `/proc/mounts` text, in its order: (mount point, page size in bytes for
/// hugetlbfs, `None` for any other file system); a hugetlbfs mount without `pagesize=` has
/// `default_huge`.
pub(crate) fn parse_mounts(text: &str, default_huge: u64) -> Vec<(String, Option<u64>)> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let point = unescape_mount_field(f.nth(1)?);
            let kind = f.next();
            let size = (kind == Some("hugetlbfs"))
                .then(|| mount_page_size(f.next().unwrap_or(""), default_huge));
            Some((point, size))
        })
        .collect()
}

/// The mount in use at `path` (normalized): of the mounts at or above it other than the root,
/// the last one in `/proc/mounts` order, as a later mount hides what it is mounted over; the
/// root (the last one listed) if there is none. The root lies under every other mount wherever
/// it is listed: in a container, whose root is set up after `/proc` and the like are mounted,
/// it often comes after them.
pub(crate) fn mount_of<'a>(
    mounts: &'a [(String, Option<u64>)],
    path: &str,
) -> Option<&'a (String, Option<u64>)> {
    let is_root = |m: &(String, Option<u64>)| normalize_path(&m.0) == "/";
    mounts
        .iter()
        .rev()
        .find(|m| !is_root(m) && contains(&m.0, path))
        .or_else(|| mounts.iter().rev().find(|m| is_root(m)))
}

/// The physical address bits of an x86_64 CPU from CPUID, as Cloud Hypervisor takes them:
/// the low byte of `EAX` of leaf `0x8000_0008` (`leaf_8000_0008_eax`), or 36 when the CPU has
/// no such leaf (`None`: its largest extended leaf, `EAX` of leaf `0x8000_0000`, is lower).
/// Cloud Hypervisor 53 and later take that value as it is; up to 52 it took away the address
/// bits AMD's memory encryption (SME) reserves on a CPU that has SME. Linux's `address sizes`
/// in `/proc/cpuinfo` is not the same: it takes those bits away only where memory encryption
/// is on, and a host that is not x86_64 (AArch64) has no such line.
#[must_use]
pub fn phys_bits_of_cpuid(leaf_8000_0008_eax: Option<u32>) -> u32 {
    leaf_8000_0008_eax.map_or(36, |eax| eax & 0xff)
}

/// The host CPU's physical address bits, where Cloud Hypervisor reads them: on x86_64 CPUID
/// ([`phys_bits_of_cpuid`]); elsewhere `None`, not read. On AArch64 Cloud Hypervisor takes
/// the largest guest physical address size KVM offers (`KVM_CAP_ARM_VM_IPA_SIZE` on
/// `/dev/kvm`, 40 bits when KVM gives none), which this command does not ask KVM for.
#[must_use]
pub fn cpu_phys_bits() -> Option<u32> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        // `__cpuid` is an unsafe function on the oldest Rust this crate supports (1.88) and a
        // safe one on later ones.
        #[allow(unsafe_code, unused_unsafe)]
        let eax = |leaf: u32| {
            // SAFETY: every x86_64 CPU has the CPUID instruction, which only reads the CPU's
            // identification registers and writes no memory; the leaves asked are the largest
            // extended leaf's and, when the CPU has it, leaf 0x8000_0008.
            unsafe { __cpuid(leaf) }.eax
        };
        let top = eax(0x8000_0000);
        Some(phys_bits_of_cpuid(
            (top >= 0x8000_0008).then(|| eax(0x8000_0008)),
        ))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// Reads the host's facts from `/proc`, `/sys` and `/dev/kvm`. Each file is read at most
/// [`MAX_HOST_FILE_BYTES`](crate::input::MAX_HOST_FILE_BYTES) long
/// ([`MAX_HOST_LIST_BYTES`](crate::input::MAX_HOST_LIST_BYTES) for `/proc/mounts` and
/// `/proc/self/maps`); one that is absent or cannot be read is a fact the host does not give.
/// The CPU's physical address bits are CPUID's ([`cpu_phys_bits`]).
///
/// # Errors
/// [`Error::HostFileTooLarge`](crate::Error::HostFileTooLarge) naming a file longer than
/// its limit.
pub fn host_facts() -> crate::Result<HostFacts> {
    use crate::hostmem::host_text;
    let list = |path: &str| -> crate::Result<Option<String>> {
        Ok(crate::input::read_host_file(path.as_ref(), crate::input::MAX_HOST_LIST_BYTES)?.ok())
    };
    let meminfo = host_text("/proc/meminfo".as_ref())?;
    let bytes = |key| field_kib(&meminfo, key).map(|k| k.saturating_mul(1024));
    let mode = |path: &str| -> crate::Result<String> {
        Ok(
            match crate::input::read_host_file(path.as_ref(), crate::input::MAX_HOST_FILE_BYTES)? {
                Err(_) => "unavailable".to_owned(),
                Ok(text) => text
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix('[')?.strip_suffix(']').map(str::to_owned))
                    .unwrap_or_else(|| text.trim().to_owned()),
            },
        )
    };
    let default_huge = default_huge_page_size(&meminfo);
    let mounts = parse_mounts(&list("/proc/mounts")?.unwrap_or_default(), default_huge);
    let mut numa_nodes = Vec::new();
    for e in fs::read_dir("/sys/devices/system/node")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Some(node) = e
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("node")?.parse::<u32>().ok())
        else {
            continue;
        };
        let text = host_text(&e.path().join("meminfo"))?;
        let free = text
            .lines()
            .find(|l| l.contains("MemFree:"))
            .and_then(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
            .unwrap_or(0);
        numa_nodes.push((node, free.saturating_mul(1024)));
    }
    let phys_bits = cpu_phys_bits();
    let kvm_error = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .err()
        .map(|e| e.to_string());
    let thp_pmd_knobs = match read_number("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size")? {
        None => None,
        Some(size) => {
            let dir = format!(
                "/sys/kernel/mm/transparent_hugepage/hugepages-{}kB",
                size / 1024
            );
            let knob = |name: &str| -> crate::Result<String> {
                let m = mode(&format!("{dir}/{name}"))?;
                Ok(if m == "unavailable" {
                    "inherit".to_owned()
                } else {
                    m
                })
            };
            if std::path::Path::new(&dir).is_dir() {
                Some((size, knob("enabled")?, knob("shmem_enabled")?))
            } else {
                None
            }
        }
    };
    let mut huge_page_pools = Vec::new();
    let mut huge_page_reserved = Vec::new();
    for (kib, dir) in huge_page_dirs() {
        huge_page_pools.push((
            kib * 1024,
            read_number(dir.join("free_hugepages"))?.unwrap_or(0),
            read_number(dir.join("nr_hugepages"))?.unwrap_or(0),
        ));
        huge_page_reserved.push((
            kib * 1024,
            read_number(dir.join("resv_hugepages"))?.unwrap_or(0),
        ));
    }
    let mut facts = HostFacts {
        thp_enabled: mode("/sys/kernel/mm/transparent_hugepage/enabled")?,
        thp_shmem_enabled: mode("/sys/kernel/mm/transparent_hugepage/shmem_enabled")?,
        thp_pmd_knobs,
        huge_page_pools,
        huge_page_reserved,
        mounts,
        numa_nodes,
        phys_bits,
        kvm_error,
        max_map_count: read_number("/proc/sys/vm/max_map_count")?,
        map_count: list("/proc/self/maps")?.map_or(0, |m| m.lines().count() as u64),
        overcommit_mode: read_number("/proc/sys/vm/overcommit_memory")?.unwrap_or(0),
        commit: bytes("CommitLimit").zip(bytes("Committed_AS")),
        memory_and_swap: bytes("MemTotal")
            .map(|m| m.saturating_add(bytes("SwapTotal").unwrap_or(0))),
        memory_available: bytes("MemAvailable"),
        swap_free: bytes("SwapFree"),
        paths: Vec::new(),
        resolved: Vec::new(),
    };
    facts.numa_nodes.sort_unstable();
    Ok(facts)
}

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The host can do it.
    Ok,
    /// It works, but not as well as it could (a fallback, a tight margin).
    Warn,
    /// Backing the spec as written fails.
    Fail,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Finding {
    /// What was checked (`thp`, `huge_pages`, `numa`, ...).
    pub check: &'static str,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it, when it is not `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Sorted, distinct numbers written as runs: `3-5, 7, 9`.
fn runs(sorted: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while let Some(&first) = sorted.get(i) {
        let mut last = first;
        while sorted
            .get(i + 1)
            .is_some_and(|&next| Some(next) == last.checked_add(1))
        {
            i += 1;
            last = sorted[i];
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        // Writing to a `String` cannot fail.
        let _ = if last == first {
            write!(out, "{first}")
        } else {
            write!(out, "{first}-{last}")
        };
        i += 1;
    }
    out
}

/// Warns if the guest nodes of `group` (indices into `spec.nodes`), each bound to host node `h`
/// alone, need more than its `free` bytes together.
fn host_node_short(
    out: &mut Vec<Finding>,
    spec: &VmSpec,
    group: &[usize],
    h: u32,
    free: u64,
    host: &HostFacts,
) {
    let nodes = group.iter().map(|&i| &spec.nodes[i]);
    let total = nodes.clone().fold(0u64, |t, n| t.saturating_add(n.size));
    if free >= total {
        return;
    }
    // Only another host node can make up the difference.
    let others = host.numa_nodes.iter().any(|x| x.0 != h);
    let preferred = nodes.clone().all(|n| n.policy == Policy::Preferred);
    let (note, fix) = match (others, preferred) {
        (false, _) => (" (the host has no other node)", None),
        (true, true) => (
            "; the rest will come from other host nodes (preferred)",
            None,
        ),
        (true, false) => (
            "",
            Some(format!(
                "use policy = \"preferred\" or spread the {} over more host nodes",
                if group.len() == 1 { "node" } else { "nodes" }
            )),
        ),
    };
    let paths: Vec<&str> = nodes.map(|n| n.loc.path.as_str()).collect();
    out.push(finding(
        "numa",
        Status::Warn,
        format!(
            "{}: {} bound to host node {h}, which has {} free{note}",
            paths.join(", "),
            Size(total),
            approx(free)
        ),
        fix,
    ));
}

fn finding(check: &'static str, status: Status, detail: String, fix: Option<String>) -> Finding {
    Finding {
        check,
        status,
        detail,
        fix,
    }
}

/// Memory that shares pages with other processes (memfd, shared anonymous) gets transparent
/// huge pages by `shmem_enabled`; private memory by `enabled`.
fn shared_backing(b: &BackingKind) -> bool {
    matches!(b, BackingKind::Memfd | BackingKind::AnonymousShared)
}

/// Checks whether the host described by `host` can back `spec` (planned as `plan`).
///
/// Its `memory` finding counts prefaulted memory as `back` counts it (boot RAM and every
/// hotplug slot, which `back` plugs at once), so a spec without that failure is not refused by
/// `back`'s own bound for it on a host that gives the same facts.
///
/// ```
/// use memvisor_cli::check::{HostFacts, Status, check_spec};
/// use memvisor_cli::plan::plan;
/// use memvisor_cli::spec::{Source, parse};
///
/// let src = Source { origin: "vm.toml", text: "[memory]\nsize = \"64MiB\"\nhuge_pages = \"2MiB\"\n" };
/// let spec = parse(src)?;
/// let host = HostFacts { huge_page_pools: vec![(2 << 20, 4, 4)], ..HostFacts::default() };
/// let findings = check_spec(&spec, &plan(&spec, src)?, &host);
/// let huge = findings.iter().find(|f| f.check == "huge_pages").unwrap();
/// assert_eq!(huge.status, Status::Fail);
/// assert!(huge.fix.as_ref().unwrap().contains("nr_hugepages"));
/// # Ok::<(), memvisor_cli::SpecError>(())
/// ```
#[must_use]
pub fn check_spec(spec: &VmSpec, plan: &Plan, host: &HostFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    let mem = &spec.memory;
    let ram = plan.ram;
    let hotplug: u64 = plan
        .hotplug
        .iter()
        .fold(0, |a, s| a.saturating_add(s.span.size));
    let shared = shared_backing(&mem.backing);

    // Transparent huge pages.
    let thp_wanted = mem.pages == PageKind::Transparent || mem.fallback_transparent;
    if thp_wanted {
        let (knob, top, good): (&str, &str, &[&str]) = if shared {
            (
                "shmem_enabled",
                &host.thp_shmem_enabled,
                &["always", "within_size", "advise", "force"],
            )
        } else {
            ("enabled", &host.thp_enabled, &["always", "madvise"])
        };
        // The PMD size's own knob decides unless it is `inherit`.
        let per_size = host
            .thp_pmd_knobs
            .as_ref()
            .and_then(|(size, enabled, shmem)| {
                let m = if shared { shmem } else { enabled };
                (m != "inherit")
                    .then(|| (format!("hugepages-{}kB/{knob}", size / 1024), m.as_str()))
            });
        let (knob, mode) = match &per_size {
            Some((path, m)) => (path.as_str(), *m),
            None => (knob, top),
        };
        // The advice is a hint: memory without huge pages still works, only slower.
        let status = if good.contains(&mode) {
            Status::Ok
        } else {
            Status::Warn
        };
        let kind = if shared { "shared (memfd)" } else { "private" };
        let value = if shared { "advise" } else { "madvise" };
        let inherits = host
            .thp_pmd_knobs
            .as_ref()
            .map(|(size, ..)| format!(" (hugepages-{}kB/{knob} is `inherit`)", size / 1024))
            .filter(|_| per_size.is_none())
            .unwrap_or_default();
        out.push(finding(
            "thp",
            status,
            format!(
                "{kind} memory gets transparent huge pages by {knob}, which is `{mode}`{inherits}{}",
                if status == Status::Ok {
                    ""
                } else {
                    ": it will get none"
                }
            ),
            (status != Status::Ok).then(|| {
                format!("echo {value} > /sys/kernel/mm/transparent_hugepage/{knob} (as root)")
            }),
        ));
    }

    // Explicit huge pages: pool, and mount for hugetlbfs.
    // Whether some memory may not get its explicit huge pages and fall back to other pages.
    let mut may_fall_back = false;
    if let Some(page) = mem.pages.explicit_bytes() {
        let needed = ram / page;
        let with_hotplug = ram.saturating_add(hotplug) / page;
        let reserved = host
            .huge_page_reserved
            .iter()
            .find(|r| r.0 == page)
            .map_or(0, |r| r.1);
        // Free pages reserved by another mapping cannot be had: only the rest are available.
        let pool = host
            .huge_page_pools
            .iter()
            .find(|p| p.0 == page)
            .map(|&(size, free, total)| (size, free.saturating_sub(reserved), total));
        let not_counting = if reserved > 0 {
            format!(", not counting {reserved} reserved by other mappings")
        } else {
            String::new()
        };
        let dir = format!(
            "/sys/kernel/mm/hugepages/hugepages-{}kB/nr_hugepages",
            page / 1024
        );
        let (status, detail, fix) = match pool {
            None => (
                Status::Fail,
                format!("the host has no {} huge page pool", Size(page)),
                Some(format!(
                    "boot with hugepagesz={} hugepages={with_hotplug}",
                    if page == 1 << 30 { "1G" } else { "2M" }
                )),
            ),
            Some((_, free, total)) if free < needed => (
                Status::Fail,
                format!(
                    "boot RAM needs {needed} free {} pages; the pool has {free} free of {total}{not_counting}",
                    Size(page)
                ),
                Some(format!(
                    "echo {} > {dir} (as root)",
                    total.saturating_add(with_hotplug - free.min(with_hotplug))
                )),
            ),
            // `back` plugs every slot at once: a slot the pool cannot hold fails its plug
            // unless it may fall back (a warning then, below).
            Some((_, free, total)) if free < with_hotplug => (
                Status::Fail,
                format!(
                    "boot RAM fits ({needed} pages) but plugging every slot, as `back` does at once, needs {with_hotplug} free {} pages; {free} free of {total}{not_counting}",
                    Size(page)
                ),
                Some(format!(
                    "echo {} > {dir} (as root)",
                    total.saturating_add(with_hotplug - free)
                )),
            ),
            Some((_, free, total)) => (
                Status::Ok,
                format!(
                    "{with_hotplug} {} pages needed (boot and hotplug); {free} free of {total}{not_counting}",
                    Size(page)
                ),
                None,
            ),
        };
        may_fall_back = mem.fallback_transparent && status != Status::Ok;
        let status = if status == Status::Fail && mem.fallback_transparent {
            Status::Warn
        } else {
            status
        };
        out.push(finding("huge_pages", status, detail, fix));
        if let BackingKind::Hugetlbfs(written) = &mem.backing {
            let flag = if page == 1 << 30 { "1G" } else { "2M" };
            let new_mount = || {
                format!(
                    "mkdir -p DIR && mount -t hugetlbfs -o pagesize={flag} none DIR (as root), \
                     DIR an empty directory of its own, and set memory.hugetlbfs = \"DIR\""
                )
            };
            let resolved = host
                .resolved
                .iter()
                .find(|(p, _)| p == written)
                .map(|(_, r)| r);
            // Judged where the kernel takes it: where it leads, or would lead once the folders
            // missing on the way are made.
            let (wanted, state) = match resolved {
                Some(Resolved::To(to)) => (
                    normalize_path(to),
                    host.paths
                        .iter()
                        .find(|(p, _)| p == written)
                        .map(|&(_, state)| state),
                ),
                Some(Resolved::Missing { to, .. }) => {
                    (normalize_path(to), Some(PathState::Missing))
                }
                Some(Resolved::Blocked { .. }) | None => (
                    normalize_path(written),
                    host.paths
                        .iter()
                        .find(|(p, _)| p == written)
                        .map(|&(_, state)| state),
                ),
            };
            let path = &if resolved.is_some() && wanted != normalize_path(written) {
                format!("{written} (resolves to {wanted})")
            } else {
                written.clone()
            };
            let (status, detail, fix) = match (resolved, mount_of(&host.mounts, &wanted)) {
                // The kernel stops on the way: no mount or folder makes this path work.
                (Some(Resolved::Blocked { at, why }), _) => (
                    Status::Fail,
                    format!("{written} does not resolve: {at} {why}"),
                    Some(new_mount()),
                ),
                // Made folders would not help either: `..` cannot leave a folder that is not
                // there, so the path is to be written without it.
                (
                    Some(Resolved::Missing {
                        missing: Some(missing),
                        ..
                    }),
                    _,
                ) => (
                    Status::Fail,
                    format!(
                        "{written} does not resolve: {missing} does not exist, and the kernel \
                         cannot go back up (`..`) out of a folder that is not there"
                    ),
                    Some(format!(
                        "set memory.hugetlbfs = {}, the path without `..` (or mkdir -p {} (as \
                         root) to keep it)",
                        toml::Value::String(wanted.clone()),
                        shell_word(missing)
                    )),
                ),
                (_, Some((point, Some(size)))) => {
                    let point = normalize_path(point);
                    let what = if point == wanted {
                        format!("{path} is a hugetlbfs mount")
                    } else {
                        format!("{path} is in {point}, a hugetlbfs mount")
                    };
                    if *size == page {
                        match state {
                            Some(PathState::Missing) => (
                                Status::Fail,
                                format!(
                                    "{path} does not exist (in {point}, a hugetlbfs mount of {} pages)",
                                    Size(*size)
                                ),
                                Some(format!("mkdir -p {} (as root)", shell_word(&wanted))),
                            ),
                            Some(PathState::NotDirectory) => (
                                Status::Fail,
                                format!(
                                    "{path} is not a directory (in {point}, a hugetlbfs mount)"
                                ),
                                Some(new_mount()),
                            ),
                            _ => (Status::Ok, format!("{what} of {} pages", Size(*size)), None),
                        }
                    } else {
                        (
                            Status::Fail,
                            format!("{what} of {} pages, not {}", Size(*size), Size(page)),
                            Some(new_mount()),
                        )
                    }
                }
                (_, Some((point, None))) if normalize_path(point) == wanted => (
                    Status::Fail,
                    format!("{path} is the mount point of another file system, not hugetlbfs"),
                    Some(new_mount()),
                ),
                _ => match state {
                    // Mounting there would hide what the folder holds, or cannot be done.
                    Some(held @ (PathState::Directory | PathState::NotDirectory)) => (
                        Status::Fail,
                        format!(
                            "{path} is not a hugetlbfs mount, and {}",
                            if held == PathState::Directory {
                                "it holds files that a mount there would hide"
                            } else {
                                "it is not a directory"
                            }
                        ),
                        Some(new_mount()),
                    ),
                    _ => (
                        Status::Fail,
                        if state == Some(PathState::Missing) {
                            format!("{path} does not exist, and no hugetlbfs mount holds it")
                        } else {
                            format!("{path} is not a hugetlbfs mount")
                        },
                        Some(format!(
                            "mkdir -p {dir} && mount -t hugetlbfs -o pagesize={flag} none {dir} (as root)",
                            dir = shell_word(&wanted),
                        )),
                    ),
                },
            };
            out.push(finding("hugetlbfs", status, detail, fix));
        }
    }

    // Host NUMA nodes.
    // One finding per guest node for the host nodes it names that do not exist (written as
    // runs), not one per host node: a spec may name 64 x 1024 of them.
    let mut bound = false;
    let mut free_of: BTreeMap<u32, u64> = BTreeMap::new();
    for &(node, free) in &host.numa_nodes {
        free_of.entry(node).or_insert(free);
    }
    // The guest nodes bound to one host node alone, by host node: their memory all comes from
    // it, so they are checked against its free memory together, in one finding (at the first
    // of them). Explicit huge pages come from the pools, checked above.
    let mut alone_on: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    if mem.pages.explicit_bytes().is_none() {
        for (i, n) in spec.nodes.iter().enumerate() {
            if let [h] = n.host_nodes[..] {
                alone_on.entry(h).or_default().push(i);
            }
        }
    }
    for (i, n) in spec.nodes.iter().enumerate() {
        let mut missing: Vec<u32> = Vec::new();
        for &h in &n.host_nodes {
            bound = true;
            let Some(&free) = free_of.get(&h) else {
                missing.push(h);
                continue;
            };
            if let Some(group) = alone_on.get(&h)
                && group.first() == Some(&i)
            {
                host_node_short(&mut out, spec, group, h, free, host);
            }
        }
        if !missing.is_empty() {
            missing.sort_unstable();
            missing.dedup();
            let have: Vec<String> = host.numa_nodes.iter().map(|x| x.0.to_string()).collect();
            let (nodes, verb) = if missing.len() == 1 {
                ("node", "does")
            } else {
                ("nodes", "do")
            };
            out.push(finding(
                "numa",
                Status::Fail,
                format!(
                    "{}: host {nodes} {} {verb} not exist (this host has {})",
                    n.loc.path,
                    runs(&missing),
                    if have.is_empty() {
                        "no NUMA information".to_owned()
                    } else {
                        format!("node {}", have.join(", "))
                    }
                ),
                Some(format!(
                    "bind {} to an existing node in host_nodes, or drop host_nodes",
                    n.loc.path
                )),
            ));
        }
    }
    if bound && !out.iter().any(|f| f.check == "numa") {
        out.push(finding(
            "numa",
            Status::Ok,
            "every bound host node exists".to_owned(),
            None,
        ));
    }

    // Guest physical addresses against the CPU's.
    let highest = plan.map.iter().map(|m| m.span.end).max().unwrap_or(0);
    match host.phys_bits {
        Some(bits) => {
            let host_limit = if bits >= 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            // What Cloud Hypervisor adds about a converted spec, when it runs the guest with
            // fewer bits than the spec says.
            let mut device_area = String::new();
            let (status, fix) = if highest > host_limit {
                (
                    Status::Fail,
                    Some(format!(
                        "the map must end below 2^{bits}: shrink RAM, hotplug or DAX windows"
                    )),
                )
            } else if spec.phys_bits > bits && spec.name == crate::vmm::CH_SPEC_NAME {
                // Cloud Hypervisor gives the guest min(host bits, max_phys_bits): its 64-bit PCI
                // device area ends below 2^bits, and must hold the virtio-rng device's BAR.
                let bound = crate::vmm::ch_memory_end_bound(bits);
                // Where its guest memory ends: on aarch64 above the plan's.
                let hotplug = plan.hotplug.iter().map(|s| s.span.size).sum::<u64>();
                let page = spec.memory.pages.explicit_bytes().unwrap_or(4096);
                let end = crate::vmm::ch_memory_end(plan.ram, hotplug, spec.arch, page)
                    .max(u128::from(highest) + 1);
                let redo = format!(
                    "set max_phys_bits = {bits} (cpus in Cloud Hypervisor's VmConfig) and convert \
                     again, which checks that its PCI devices fit at {bits} bits"
                );
                if end > bound {
                    device_area = format!(
                        ": Cloud Hypervisor gives the guest {bits} bits, and its 64-bit PCI device \
                         area then has no place for the virtio-rng device's BAR (memory must end \
                         at {bound:#x} at the latest)"
                    );
                    (
                        Status::Fail,
                        Some(format!("shrink RAM or hotplug below {bound:#x}; {redo}")),
                    )
                } else {
                    (Status::Warn, Some(redo))
                }
            } else if spec.phys_bits > bits {
                (
                    Status::Warn,
                    Some(format!(
                        "set phys_bits = {bits} so the guest is not told it has more address bits than the host"
                    )),
                )
            } else {
                (Status::Ok, None)
            };
            out.push(finding(
                "address_bits",
                status,
                format!(
                    "the map ends at {highest:#x}; guest phys_bits {}, host CPU {bits} \
                     bits{device_area}",
                    spec.phys_bits
                ),
                fix,
            ));
        }
        None => out.push(finding(
            "address_bits",
            Status::Warn,
            "the CPU's physical address bits are unknown, not read on this host (on x86_64 \
             they are CPUID's; on AArch64 Cloud Hypervisor takes KVM's largest guest address \
             size, KVM_CAP_ARM_VM_IPA_SIZE, 40 bits when KVM gives none)"
                .to_owned(),
            None,
        )),
    }

    // KVM.
    out.push(match &host.kvm_error {
        None => finding("kvm", Status::Ok, "/dev/kvm opens for reading and writing".to_owned(), None),
        Some(e) => finding(
            "kvm",
            Status::Warn,
            format!("/dev/kvm cannot be opened: {e} (memory can be backed, but no VM run)"),
            Some("load kvm_intel or kvm_amd, and add the user to the group owning /dev/kvm (usually `kvm`)".to_owned()),
        ),
    });

    // Mappings: each region and slot with memory is one mapping, guard pages and splits (NUMA
    // policy, huge page advice) can make it a few; device and reserved regions map nothing.
    let with_memory = plan
        .regions
        .iter()
        .chain(&plan.slots)
        .filter(|r| r.spec.backing().has_memory())
        .count();
    let mappings = with_memory as u64 * 4;
    if let Some(max) = host.max_map_count {
        let used = host.map_count.saturating_add(mappings);
        let status = if used > max { Status::Fail } else { Status::Ok };
        out.push(finding(
            "max_map_count",
            status,
            format!(
                "up to {mappings} new mappings, {} in use, limit {max}",
                host.map_count
            ),
            (status != Status::Ok)
                .then(|| format!("sysctl -w vm.max_map_count={}", used.saturating_mul(2))),
        ));
    }

    // Overcommit: anonymous memory, private or shared (DAX windows too), is charged when it is
    // mapped, each region and each plugged slot one mapping; explicit huge pages and memfd
    // memory are not (a memfd's pages are charged as they are allocated). Memory whose explicit
    // huge pages may be short falls back to charged pages.
    let charged: Vec<&crate::plan::MapEntry> = plan
        .map
        .iter()
        .filter(|m| {
            matches!(m.ty, "RAM" | "DAX" | "hotplug")
                && matches!(m.backing.kind, "anonymous" | "anonymous-shared")
                && (may_fall_back || !matches!(m.backing.pages, "2MiB" | "1GiB"))
        })
        .collect();
    let total_charged = charged
        .iter()
        .fold(0u64, |a, m| a.saturating_add(m.span.size));
    // memfd memory of base or transparent pages: charged page by page as the guest touches it.
    let charged_later = plan
        .map
        .iter()
        .filter(|m| {
            matches!(m.ty, "RAM" | "DAX" | "hotplug")
                && m.backing.kind == "memfd"
                && (may_fall_back || !matches!(m.backing.pages, "2MiB" | "1GiB"))
        })
        .fold(0u64, |a, m| a.saturating_add(m.span.size));
    let (status, detail, fix) = match (host.overcommit_mode, host.commit) {
        (2, Some((limit, committed))) => {
            let room = limit.saturating_sub(committed);
            if total_charged <= room && total_charged.saturating_add(charged_later) > room {
                (
                    Status::Warn,
                    format!(
                        "overcommit is off (mode 2): {} of memfd memory is charged as the guest touches it, and {} of room under CommitLimit is left after {} charged when mapped: the guest may be refused pages later (SIGBUS)",
                        approx(charged_later),
                        approx(room.saturating_sub(total_charged)),
                        approx(total_charged)
                    ),
                    Some(
                        "sysctl -w vm.overcommit_memory=0, raise vm.overcommit_ratio, or use explicit huge pages"
                            .to_owned(),
                    ),
                )
            } else if total_charged > room {
                (
                    Status::Fail,
                    format!(
                        "overcommit is off (mode 2): {} to charge, {} of room under CommitLimit",
                        approx(total_charged),
                        approx(room)
                    ),
                    Some(
                        "sysctl -w vm.overcommit_memory=0, or raise vm.overcommit_ratio".to_owned(),
                    ),
                )
            } else {
                (
                    Status::Ok,
                    format!(
                        "overcommit is off (mode 2): {} to charge fits in {} of room",
                        approx(total_charged),
                        approx(room)
                    ),
                    None,
                )
            }
        }
        (0, _) => {
            // The kernel checks each mapping on its own against RAM and swap.
            let largest = charged.iter().max_by_key(|m| m.span.size);
            match (host.memory_and_swap, largest) {
                (Some(total), Some(m)) if m.span.size > total => (
                    Status::Fail,
                    format!(
                        "heuristic overcommit (mode 0) refuses one mapping larger than RAM and swap ({}): {} is {}",
                        approx(total),
                        m.owner.trim_end_matches(" (empty)"),
                        Size(m.span.size)
                    ),
                    Some(if m.ty == "DAX" {
                        "sysctl -w vm.overcommit_memory=1, or a smaller dax_size".to_owned()
                    } else {
                        "sysctl -w vm.overcommit_memory=1, or use huge pages or backing = \"memfd\""
                            .to_owned()
                    }),
                ),
                (Some(total), Some(m)) => (
                    Status::Ok,
                    format!(
                        "heuristic overcommit (mode 0): the largest charged mapping, {} of {}, fits in RAM and swap ({})",
                        m.owner.trim_end_matches(" (empty)"),
                        Size(m.span.size),
                        approx(total)
                    ),
                    None,
                ),
                (_, None) => (
                    Status::Ok,
                    "heuristic overcommit (mode 0): nothing is charged when mapped".to_owned(),
                    None,
                ),
                (None, Some(_)) => (Status::Ok, "heuristic overcommit (mode 0)".to_owned(), None),
            }
        }
        (mode, _) => (Status::Ok, format!("overcommit mode {mode}"), None),
    };
    out.push(finding("overcommit", status, detail, fix));

    // Prefaulted memory must be there now, or its pages (or those it pushes out) go to swap:
    // base or transparent pages, explicit ones too where their pool is short and they fall
    // back. Counted as `back` counts it, boot RAM and every hotplug slot (it plugs them all).
    if let Some(avail) = host
        .memory_available
        .map(|a| a.saturating_add(host.swap_free.unwrap_or(0)))
    {
        let (boot, all) = prefaulted(plan, host);
        if all > u128::from(avail) {
            let slots = all - boot;
            let made = if slots == 0 {
                format!("{} resident", size_of(all))
            } else {
                format!(
                    "{} resident: boot RAM {} and the hotplug slots {}, which `back` plugs at once",
                    size_of(all),
                    size_of(boot),
                    size_of(slots)
                )
            };
            let fix = if slots == 0 {
                "prefault = 0, a smaller spec, or `memvisor back --scale N` to try it"
            } else {
                "prefault = 0, fewer or smaller hotplug slots, or `memvisor back --scale N` to \
                 try it"
            };
            out.push(finding(
                "memory",
                Status::Fail,
                format!(
                    "prefault makes {made}; {} is available (MemAvailable and SwapFree)",
                    approx(avail)
                ),
                Some(fix.to_owned()),
            ));
        }
    }
    out
}

/// `bytes` as a [`Size`], or `u64::MAX` bytes past it (the plan's memory is at most that).
fn size_of(bytes: u128) -> String {
    Size(u64::try_from(bytes).unwrap_or(u64::MAX)).to_string()
}

/// The bytes `back` makes resident by prefaulting the plan's boot regions, and those and every
/// hotplug slot together (`back`'s own count, from the pools `host` gives: their free pages
/// less those reserved by other mappings).
fn prefaulted(plan: &Plan, host: &HostFacts) -> (u128, u128) {
    let pool_free = |page: u64| -> Result<u128, std::convert::Infallible> {
        let reserved = host
            .huge_page_reserved
            .iter()
            .find(|r| r.0 == page)
            .map_or(0, |r| r.1);
        Ok(host
            .huge_page_pools
            .iter()
            .find(|p| p.0 == page)
            .map_or(0, |&(_, free, _)| {
                u128::from(free.saturating_sub(reserved)) * u128::from(page)
            }))
    };
    let boot = plan.regions.iter().map(|r| &r.spec);
    let Ok(boot) = crate::back::prefaulted_of(boot, pool_free);
    let all = plan.regions.iter().chain(&plan.slots).map(|r| &r.spec);
    let Ok(all) = crate::back::prefaulted_of(all, pool_free);
    (boot, all)
}

/// The findings as a table, each fix on the line after its finding, under the details. A fix
/// is a command to run: it is printed whole (escaped, never cut as a long cell would be).
#[must_use]
pub fn check_text(name: &str, findings: &[Finding]) -> String {
    let mut t = Table::new(&["CHECK", "STATUS", "DETAIL"]);
    for f in findings {
        t.row(vec![
            f.check.to_owned(),
            f.status.name().to_owned(),
            f.detail.clone(),
        ]);
    }
    let table = t.to_string();
    let mut lines = table.lines();
    let header = lines.next().unwrap_or("");
    let indent = " ".repeat(header.find("DETAIL").unwrap_or(0));
    let mut body = format!("{header}\n");
    // Cells are escaped, so each finding is one line.
    for (line, f) in lines.zip(findings) {
        body.push_str(line);
        body.push('\n');
        if let Some(fix) = &f.fix {
            let _ = writeln!(body, "{indent}fix: {}", crate::render::escape(fix));
        }
    }
    let fails = findings.iter().filter(|f| f.status == Status::Fail).count();
    let warns = findings.iter().filter(|f| f.status == Status::Warn).count();
    format!(
        "{}: {}\n\n{body}",
        crate::render::escape(name),
        match (fails, warns) {
            (0, 0) => "this host can back the spec as written".to_owned(),
            (0, w) => format!(
                "this host can back the spec as written ({w} warning{})",
                if w == 1 { "" } else { "s" }
            ),
            (f, _) => format!(
                "this host cannot back the spec as written ({f} problem{})",
                if f == 1 { "" } else { "s" }
            ),
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::plan;
    use crate::spec::{Source, parse};

    fn run(text: &str, host: &HostFacts) -> Vec<Finding> {
        let src = Source {
            origin: "vm.toml",
            text,
        };
        let spec = parse(src).unwrap();
        check_spec(&spec, &plan(&spec, src).unwrap(), host)
    }

    fn get<'a>(f: &'a [Finding], check: &str) -> &'a Finding {
        f.iter()
            .find(|x| x.check == check)
            .unwrap_or_else(|| panic!("no {check} in {f:?}"))
    }

    fn good_host() -> HostFacts {
        HostFacts {
            thp_enabled: "madvise".into(),
            thp_shmem_enabled: "advise".into(),
            thp_pmd_knobs: None,
            huge_page_pools: vec![(2 << 20, 1024, 1024), (1 << 30, 0, 0)],
            huge_page_reserved: vec![],
            mounts: vec![
                ("/".into(), None),
                ("/proc".into(), None),
                ("/dev/hugepages".into(), Some(2 << 20)),
            ],
            numa_nodes: vec![(0, 8 << 30)],
            phys_bits: Some(46),
            kvm_error: None,
            max_map_count: Some(65530),
            map_count: 100,
            overcommit_mode: 0,
            commit: Some((16 << 30, 1 << 30)),
            memory_and_swap: Some(16 << 30),
            memory_available: Some(8 << 30),
            swap_free: None,
            paths: Vec::new(),
            resolved: Vec::new(),
        }
    }

    #[test]
    fn unescape_mount_field_decodes_octal_escapes_only() {
        assert_eq!(unescape_mount_field(r"/mnt/my\040huge"), "/mnt/my huge");
        assert_eq!(unescape_mount_field(r"/a\011b\012c\134d"), "/a\tb\nc\\d");
        // Not an escape: fewer than three octal digits, or a digit past 7.
        assert_eq!(unescape_mount_field(r"/a\04"), r"/a\04");
        assert_eq!(unescape_mount_field(r"/a\089"), r"/a\089");
        assert_eq!(unescape_mount_field(r"/a\777"), r"/a\777");
    }

    #[test]
    fn shell_word_quotes_what_a_shell_would_read() {
        assert_eq!(shell_word("/mnt/huge-2M_1.x"), "/mnt/huge-2M_1.x");
        assert_eq!(shell_word("/mnt/my huge"), "'/mnt/my huge'");
        assert_eq!(shell_word("/a;b$(c)`d`"), "'/a;b$(c)`d`'");
        assert_eq!(shell_word("/it's"), r"'/it'\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn check_default_spec_on_good_host_passes() {
        let src = Source {
            origin: "<default>",
            text: crate::spec::DEFAULT_SPEC,
        };
        let spec = parse(src).unwrap();
        let f = check_spec(&spec, &plan(&spec, src).unwrap(), &good_host());
        assert!(f.iter().all(|x| x.status == Status::Ok), "{f:#?}");
    }

    #[test]
    fn check_memfd_thp_with_shmem_never_warns_with_fix() {
        let host = HostFacts {
            thp_shmem_enabled: "never".into(),
            ..good_host()
        };
        let f = run(
            "[memory]\nsize = \"64MiB\"\nbacking = \"memfd\"\nhuge_pages = \"transparent\"\n",
            &host,
        );
        let thp = get(&f, "thp");
        assert_eq!(thp.status, Status::Warn);
        assert!(
            thp.detail
                .contains("shmem_enabled, which is `never`: it will get none"),
            "{}",
            thp.detail
        );
        assert_eq!(
            thp.fix.as_deref(),
            Some("echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled (as root)")
        );
        // Private memory looks at `enabled` instead.
        let f = run(
            "[memory]\nsize = \"64MiB\"\nhuge_pages = \"transparent\"\n",
            &host,
        );
        assert_eq!(get(&f, "thp").status, Status::Ok);
    }

    #[test]
    fn check_huge_pool_short_fails_or_warns_with_fallback() {
        let host = HostFacts {
            huge_page_pools: vec![(2 << 20, 10, 10)],
            ..good_host()
        };
        let f = run("[memory]\nsize = \"64MiB\"\nhuge_pages = \"2MiB\"\n", &host);
        let h = get(&f, "huge_pages");
        assert_eq!(h.status, Status::Fail);
        assert_eq!(
            h.fix.as_deref(),
            Some("echo 32 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages (as root)")
        );
        let f = run(
            "[memory]\nsize = \"64MiB\"\nhuge_pages = \"2MiB\"\nhuge_page_fallback = \"transparent\"\n",
            &host,
        );
        assert_eq!(get(&f, "huge_pages").status, Status::Warn);
    }

    #[test]
    fn check_missing_1g_pool_and_mount_fail() {
        let f = run(
            "[memory]\nsize = \"2GiB\"\nbacking = \"hugetlbfs\"\nhugetlbfs = \"/mnt/huge1g\"\nhuge_pages = \"1GiB\"\n",
            &HostFacts {
                huge_page_pools: vec![(2 << 20, 0, 0)],
                ..good_host()
            },
        );
        assert_eq!(
            get(&f, "huge_pages").fix.as_deref(),
            Some("boot with hugepagesz=1G hugepages=2")
        );
        let m = get(&f, "hugetlbfs");
        assert_eq!(m.status, Status::Fail);
        assert!(
            m.fix
                .as_ref()
                .unwrap()
                .contains("mount -t hugetlbfs -o pagesize=1G none /mnt/huge1g")
        );
    }

    #[test]
    fn check_hugetlbfs_folder_over_files_is_not_mounted_over() {
        let spec = "[memory]\nsize = \"64MiB\"\nbacking = \"hugetlbfs\"\nhugetlbfs = \"/srv/vm\"\nhuge_pages = \"2MiB\"\n";
        // A folder that holds files: mounting there would hide them, so the fix is a folder
        // of its own.
        for state in [PathState::Directory, PathState::NotDirectory] {
            let f = run(
                spec,
                &HostFacts {
                    paths: vec![("/srv/vm".to_owned(), state)],
                    ..good_host()
                },
            );
            let m = get(&f, "hugetlbfs");
            assert_eq!(m.status, Status::Fail, "{state:?}");
            let fix = m.fix.as_deref().unwrap();
            assert!(fix.contains("DIR an empty directory"), "{state:?}: {fix}");
            assert!(!fix.contains("none /srv/vm"), "{state:?}: {fix}");
        }
        // A missing or empty folder may be mounted on.
        for state in [PathState::Missing, PathState::EmptyDirectory] {
            let f = run(
                spec,
                &HostFacts {
                    paths: vec![("/srv/vm".to_owned(), state)],
                    ..good_host()
                },
            );
            let fix = get(&f, "hugetlbfs").fix.clone().unwrap();
            assert!(fix.contains("none /srv/vm"), "{state:?}: {fix}");
        }
    }

    #[test]
    fn check_hugetlbfs_subfolder_must_exist() {
        let spec = "[memory]\nsize = \"64MiB\"\nbacking = \"hugetlbfs\"\nhugetlbfs = \"/dev/hugepages/vm1\"\nhuge_pages = \"2MiB\"\n";
        let host = |state| HostFacts {
            mounts: vec![("/dev/hugepages".to_owned(), Some(2 << 20))],
            paths: vec![("/dev/hugepages/vm1".to_owned(), state)],
            ..good_host()
        };
        let f = run(spec, &host(PathState::Missing));
        let m = get(&f, "hugetlbfs");
        assert_eq!(m.status, Status::Fail);
        assert!(m.detail.contains("does not exist"), "{}", m.detail);
        assert_eq!(
            m.fix.as_deref(),
            Some("mkdir -p /dev/hugepages/vm1 (as root)")
        );
        let f = run(spec, &host(PathState::NotDirectory));
        let m = get(&f, "hugetlbfs");
        assert_eq!(m.status, Status::Fail);
        assert!(m.detail.contains("not a directory"), "{}", m.detail);
        for state in [PathState::EmptyDirectory, PathState::Directory] {
            assert_eq!(
                get(&run(spec, &host(state)), "hugetlbfs").status,
                Status::Ok
            );
        }
        // Unknown (not read): as before, the mount decides.
        let f = run(
            spec,
            &HostFacts {
                mounts: vec![("/dev/hugepages".to_owned(), Some(2 << 20))],
                ..good_host()
            },
        );
        assert_eq!(get(&f, "hugetlbfs").status, Status::Ok);
    }

    /// The path is judged where the kernel will find it: a symlink to a hugetlbfs mount is
    /// that mount (and the detail says where it leads); a path that does not resolve (a `..`
    /// after a missing folder, a file on the way) does not exist, whatever its text looks
    /// like, and every fix names a path the kernel will find.
    #[test]
    fn check_hugetlbfs_judges_the_path_the_kernel_resolves() {
        let spec = |path: &str| {
            format!(
                "[memory]\nsize = \"64MiB\"\nbacking = \"hugetlbfs\"\nhugetlbfs = \"{path}\"\nhuge_pages = \"2MiB\"\n"
            )
        };
        let check = |path: &str, state: PathState, resolved: Resolved| {
            let f = run(
                &spec(path),
                &HostFacts {
                    paths: vec![(path.to_owned(), state)],
                    resolved: vec![(path.to_owned(), resolved)],
                    ..good_host()
                },
            );
            get(&f, "hugetlbfs").clone()
        };
        let to = |p: &str| Resolved::To(p.to_owned());
        let m = check("/srv/huge", PathState::EmptyDirectory, to("/dev/hugepages"));
        assert_eq!(m.status, Status::Ok, "{}", m.detail);
        assert_eq!(
            m.detail,
            "/srv/huge (resolves to /dev/hugepages) is a hugetlbfs mount of 2 MiB pages"
        );
        // A missing folder under a symlink into the mount is made where the symlink leads.
        let missing = |to: &str, missing: Option<&str>| Resolved::Missing {
            to: to.to_owned(),
            missing: missing.map(str::to_owned),
        };
        let m = check(
            "/srv/huge/vm1",
            PathState::Missing,
            missing("/dev/hugepages/vm1", None),
        );
        assert_eq!(m.status, Status::Fail);
        assert_eq!(
            m.detail,
            "/srv/huge/vm1 (resolves to /dev/hugepages/vm1) does not exist (in /dev/hugepages, \
             a hugetlbfs mount of 2 MiB pages)"
        );
        assert_eq!(
            m.fix.as_deref(),
            Some("mkdir -p /dev/hugepages/vm1 (as root)")
        );
        // A symlink that leads nowhere: the mount goes where it leads, not over the symlink.
        let m = check("/srv/link", PathState::Missing, missing("/mnt/huge", None));
        assert_eq!(
            m.detail,
            "/srv/link (resolves to /mnt/huge) does not exist, and no hugetlbfs mount holds it"
        );
        assert_eq!(
            m.fix.as_deref(),
            Some(
                "mkdir -p /mnt/huge && mount -t hugetlbfs -o pagesize=2M none /mnt/huge (as root)"
            )
        );
        // `/tmp/gone/../../dev/hugepages` reads as `/dev/hugepages`, but the kernel stops at
        // the missing `/tmp/gone`, and `mkdir -p /dev/hugepages` would not change that.
        let path = "/tmp/gone/../../dev/hugepages";
        let m = check(
            path,
            PathState::Missing,
            missing("/dev/hugepages", Some("/tmp/gone")),
        );
        assert_eq!(m.status, Status::Fail, "{}", m.detail);
        assert_eq!(
            m.detail,
            "/tmp/gone/../../dev/hugepages does not resolve: /tmp/gone does not exist, and the \
             kernel cannot go back up (`..`) out of a folder that is not there"
        );
        assert_eq!(
            m.fix.as_deref(),
            Some(
                "set memory.hugetlbfs = \"/dev/hugepages\", the path without `..` (or mkdir -p \
                 /tmp/gone (as root) to keep it)"
            )
        );
        // Stopped on the way: a folder of its own, whatever the text reads as.
        let m = check(
            "/dev/hugepages/x/vm",
            PathState::Missing,
            Resolved::Blocked {
                at: "/dev/hugepages/x".to_owned(),
                why: "is not a directory".to_owned(),
            },
        );
        assert_eq!(m.status, Status::Fail);
        assert_eq!(
            m.detail,
            "/dev/hugepages/x/vm does not resolve: /dev/hugepages/x is not a directory"
        );
        assert!(m.fix.unwrap().contains("DIR an empty directory of its own"));
    }

    /// A scratch folder under the temporary folder, as the kernel names it.
    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("memvisor-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::canonicalize(&dir).unwrap()
    }

    #[test]
    fn resolve_follows_symlinks_as_the_kernel_does() {
        use std::os::unix::fs::symlink;
        let dir = scratch("resolve-links");
        let d = dir.to_str().unwrap().to_owned();
        let at = |rest: &str| format!("{d}/{rest}");
        let to = |rest: &str| Resolved::To(at(rest));
        fs::create_dir_all(dir.join("a/b")).unwrap();
        fs::write(dir.join("file"), b"").unwrap();
        symlink(dir.join("a/b"), dir.join("abs")).unwrap();
        symlink("a/b", dir.join("rel")).unwrap();
        symlink("rel", dir.join("chain")).unwrap();
        symlink("loop", dir.join("loop")).unwrap();
        symlink("a/./b/", dir.join("slash")).unwrap();
        symlink("file/", dir.join("file-slash")).unwrap();
        symlink("../../file", dir.join("a/b/up")).unwrap();
        assert_eq!(resolve(&at("a/b")), to("a/b"));
        assert_eq!(resolve(&at("./a//b/")), to("a/b"));
        assert_eq!(resolve(&at("abs")), to("a/b"));
        assert_eq!(resolve(&at("rel")), to("a/b"));
        assert_eq!(resolve(&at("chain/")), to("a/b"));
        // `..` after a symlink leaves its target, not the folder holding the link.
        assert_eq!(resolve(&at("abs/..")), to("a"));
        assert_eq!(resolve(&at("rel/../b")), to("a/b"));
        assert_eq!(resolve(&at("file")), to("file"));
        assert_eq!(resolve(&at("slash")), to("a/b"));
        assert_eq!(resolve(&at("abs/up")), to("file"));
        assert_eq!(resolve("/../.."), Resolved::To("/".to_owned()));
        let blocked = |rest: &str, why: &str| Resolved::Blocked {
            at: at(rest),
            why: why.to_owned(),
        };
        assert_eq!(
            resolve(&at("file/x")),
            blocked("file", "is not a directory")
        );
        assert_eq!(resolve(&at("file/")), blocked("file", "is not a directory"));
        assert_eq!(
            resolve(&at("file-slash")),
            blocked("file", "is not a directory")
        );
        assert_eq!(
            resolve(&at("loop/x")),
            blocked("loop", "leads through more than 40 symlinks (a loop?)")
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn resolve_stops_at_a_proc_link_to_an_open_object() {
        use std::os::fd::AsRawFd;
        // `/proc/self/fd/N` of a pipe reads as `pipe:[INODE]`, which the kernel never takes as
        // a path: it takes the link to the pipe itself. Followed as text, it named a missing
        // `/proc/PID/fd/pipe:[INODE]` that `mkdir -p` was to make.
        let (reader, _writer) = std::io::pipe().unwrap();
        let path = format!("/proc/self/fd/{}", reader.as_raw_fd());
        for written in [path.clone(), format!("{path}/x")] {
            let Resolved::Blocked { at, why } = resolve(&written) else {
                panic!("{written}: {:?}", resolve(&written));
            };
            let pid = std::process::id();
            assert_eq!(at, format!("/proc/{pid}/fd/{}", reader.as_raw_fd()));
            assert!(why.starts_with("is a link to `pipe:["), "{why}");
        }
        // Links of /proc itself name paths, and are followed.
        assert_eq!(
            resolve("/proc/self/fd/.."),
            Resolved::To(format!("/proc/{}", std::process::id()))
        );
    }

    #[test]
    fn resolve_says_where_a_missing_path_would_lead() {
        use std::os::unix::fs::symlink;
        let dir = scratch("resolve-missing");
        let d = dir.to_str().unwrap().to_owned();
        let at = |rest: &str| format!("{d}/{rest}");
        fs::create_dir_all(dir.join("real")).unwrap();
        symlink(dir.join("real"), dir.join("link")).unwrap();
        symlink(dir.join("gone/huge"), dir.join("dangling")).unwrap();
        let missing = |to: &str, missing: Option<&str>| Resolved::Missing {
            to: at(to),
            missing: missing.map(at),
        };
        assert_eq!(resolve(&at("x/y")), missing("x/y", None));
        assert_eq!(resolve(&at("link/sub")), missing("real/sub", None));
        assert_eq!(resolve(&at("dangling")), missing("gone/huge", None));
        assert_eq!(resolve(&at("dangling/vm")), missing("gone/huge/vm", None));
        // `..` out of a missing folder: the kernel stops there, whatever follows exists.
        assert_eq!(resolve(&at("gone/../real")), missing("real", Some("gone")));
        assert_eq!(
            resolve(&at("gone/more/../../link")),
            missing("real", Some("gone"))
        );
        assert_eq!(
            resolve(&at("link/gone/../sub")),
            missing("real/sub", Some("real/gone"))
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn path_state_reads_the_file_system() {
        let dir = std::env::temp_dir().join(format!("memvisor-path-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(path_state(dir.to_str().unwrap()), PathState::Missing);
        fs::create_dir(&dir).unwrap();
        assert_eq!(path_state(dir.to_str().unwrap()), PathState::EmptyDirectory);
        fs::write(dir.join("f"), b"x").unwrap();
        assert_eq!(path_state(dir.to_str().unwrap()), PathState::Directory);
        assert_eq!(
            path_state(dir.join("f").to_str().unwrap()),
            PathState::NotDirectory
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn check_missing_host_node_fails() {
        let f = run(
            "[memory]\n[[numa]]\nsize = \"64MiB\"\nhost_nodes = [3]\n",
            &good_host(),
        );
        let n = get(&f, "numa");
        assert_eq!(n.status, Status::Fail);
        assert_eq!(
            n.detail,
            "numa[0]: host node 3 does not exist (this host has node 0)"
        );
    }

    #[test]
    fn check_many_missing_host_nodes_are_one_finding_per_guest_node() {
        // 64 guest nodes of 1023 missing host nodes each: 65,472 findings of a line each
        // (11 MB of report) before; one per guest node, the nodes as runs, now.
        let list = (1..1024)
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let nodes = format!("[[numa]]\nsize = \"2MiB\"\nhost_nodes = [{list}, 0]\n").repeat(64);
        let f = run(
            &format!("[memory]\nsize = \"128MiB\"\n{nodes}"),
            &good_host(),
        );
        let numa: Vec<&Finding> = f.iter().filter(|x| x.check == "numa").collect();
        assert_eq!(numa.len(), 64);
        assert_eq!(
            numa[0].detail,
            "numa[0]: host nodes 1-1023 do not exist (this host has node 0)"
        );
        assert_eq!(numa[63].status, Status::Fail);
        // Runs and single nodes, in order.
        let f = run(
            "[memory]\n[[numa]]\nsize = \"64MiB\"\nhost_nodes = [9, 3, 4, 0, 5, 7]\n",
            &good_host(),
        );
        assert_eq!(
            get(&f, "numa").detail,
            "numa[0]: host nodes 3-5, 7, 9 do not exist (this host has node 0)"
        );
    }

    #[test]
    fn missing_host_nodes_runs_end_at_u32_max_and_count_each_node_once() {
        // The run that ends at the largest number stops there, without wrapping to 0.
        assert_eq!(runs(&[]), "");
        assert_eq!(runs(&[u32::MAX]), "4294967295");
        assert_eq!(
            runs(&[0, 1, 2, u32::MAX - 1, u32::MAX]),
            "0-2, 4294967294-4294967295"
        );
        assert_eq!(runs(&[0, u32::MAX]), "0, 4294967295");
        // A host node named twice is one missing node, and a run is not broken by it.
        let f = run(
            "[memory]\n[[numa]]\nsize = \"64MiB\"\nhost_nodes = [5, 5, 0, 6, 5]\n",
            &good_host(),
        );
        assert_eq!(
            get(&f, "numa").detail,
            "numa[0]: host nodes 5-6 do not exist (this host has node 0)"
        );
        let f = run(
            "[memory]\n[[numa]]\nsize = \"64MiB\"\nhost_nodes = [7, 7]\n",
            &good_host(),
        );
        assert_eq!(
            get(&f, "numa").detail,
            "numa[0]: host node 7 does not exist (this host has node 0)"
        );
        assert_eq!(f.iter().filter(|x| x.check == "numa").count(), 1);
    }

    #[test]
    fn check_address_bits_past_host_fail() {
        let host = HostFacts {
            phys_bits: Some(36),
            ..good_host()
        };
        let f = run(
            "phys_bits = 40\n[memory]\nsize = \"64MiB\"\n[hotplug]\nslots = 1\nslot_size = \"64GiB\"\n",
            &host,
        );
        assert_eq!(get(&f, "address_bits").status, Status::Fail);
        let f = run("phys_bits = 40\n[memory]\nsize = \"64MiB\"\n", &host);
        let a = get(&f, "address_bits");
        assert_eq!(a.status, Status::Warn);
        assert!(a.fix.as_ref().unwrap().contains("phys_bits = 36"));
    }

    #[test]
    fn check_memfd_in_strict_overcommit_warns_of_later_refusals() {
        let host = |room: u64| HostFacts {
            overcommit_mode: 2,
            commit: Some((4 << 30, (4 << 30) - room)),
            ..good_host()
        };
        let spec = "[memory]\nsize = \"1GiB\"\nbacking = \"memfd\"\n";
        // Nothing is charged when mapped, but the guest's pages are as it touches them.
        let o = get(&run(spec, &host(512 << 20)), "overcommit").clone();
        assert_eq!(o.status, Status::Warn, "{o:?}");
        assert!(o.detail.contains("as the guest touches it"), "{}", o.detail);
        assert!(o.fix.is_some());
        assert_eq!(
            get(&run(spec, &host(2 << 30)), "overcommit").status,
            Status::Ok
        );
        // Explicit huge pages of a memfd are not charged at all.
        let huge = "[memory]\nsize = \"1GiB\"\nbacking = \"memfd\"\nhuge_pages = \"2MiB\"\n";
        let f = run(
            huge,
            &HostFacts {
                huge_page_pools: vec![(2 << 20, 1024, 1024)],
                ..host(512 << 20)
            },
        );
        assert_eq!(get(&f, "overcommit").status, Status::Ok);
    }

    #[test]
    fn map_count_counts_only_regions_with_memory() {
        // One RAM region and eight devices: four mappings at most, not 36.
        let spec = format!(
            "[memory]\nsize = \"1GiB\"\n{}",
            (0..8)
                .map(|i| format!("[[device]]\nname = \"d{i}\"\ntype = \"virtio-blk\"\n"))
                .collect::<String>()
        );
        let host = HostFacts {
            max_map_count: Some(100),
            map_count: 96,
            ..good_host()
        };
        let f = run(&spec, &host);
        let m = get(&f, "max_map_count");
        assert_eq!(m.status, Status::Ok, "{}", m.detail);
        assert!(m.detail.starts_with("up to 4 new mappings"), "{}", m.detail);
    }

    #[test]
    fn check_kvm_map_count_overcommit_are_reported() {
        let host = HostFacts {
            kvm_error: Some("No such file or directory".into()),
            max_map_count: Some(50),
            map_count: 49,
            overcommit_mode: 2,
            commit: Some((2 << 30, 1 << 30)),
            ..good_host()
        };
        let f = run("[memory]\nsize = \"2GiB\"\n", &host);
        assert_eq!(get(&f, "kvm").status, Status::Warn);
        assert_eq!(get(&f, "max_map_count").status, Status::Fail);
        let o = get(&f, "overcommit");
        assert_eq!(o.status, Status::Fail);
        assert!(
            o.fix
                .as_ref()
                .unwrap()
                .starts_with("sysctl -w vm.overcommit_memory=0")
        );
        let text = check_text("vm", &f);
        assert!(
            text.starts_with("vm: this host cannot back the spec as written (2 problems)\n"),
            "{text}"
        );
    }

    #[test]
    fn default_huge_page_size_past_64_bits_saturates() {
        assert_eq!(
            default_huge_page_size("Hugepagesize:    2048 kB\n"),
            2 << 20
        );
        assert_eq!(default_huge_page_size(""), 2 << 20);
        assert_eq!(
            default_huge_page_size("Hugepagesize: 18014398509481984 kB\n"),
            u64::MAX
        );
    }

    #[test]
    fn mount_page_size_reads_option() {
        assert_eq!(
            mount_page_size("rw,relatime,pagesize=1024M", 2 << 20),
            1 << 30
        );
        assert_eq!(mount_page_size("rw,pagesize=2M", 0), 2 << 20);
        assert_eq!(mount_page_size("rw,relatime", 2 << 20), 2 << 20);
    }
}
