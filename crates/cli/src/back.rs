//! `back`: makes a plan's host memory for real with `memvisor-space`, step by step — the
//! hotplug window's reservation, each region's memory, plugging and unplugging each hotplug
//! slot, releasing everything — timing each step and sampling memory use after it.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use memvisor_space::{
    AddressSpace, Backing, HugePageFallback, HugePages, Region, RegionReport, RegionSpec,
};
use serde::Serialize;

use crate::error::Error;
use crate::hostmem::{MemorySample, sample};
use crate::plan::Plan;
use crate::render::Table;
use crate::size::Size;

/// One step of `back`.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Step {
    /// What was done.
    pub step: String,
    /// Time it took, in milliseconds.
    pub elapsed_ms: f64,
    /// Memory use right after it.
    pub memory: MemorySample,
    /// What the library reported (page size, huge pages, NUMA, prefault).
    pub detail: String,
}

/// A failed step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Failure {
    /// The step.
    pub step: String,
    /// The error.
    pub message: String,
}

/// The largest `--scale`: 2^53, the largest integer up to which a double holds every integer,
/// so that the report's `scale` reads back exactly as a JSON number.
pub const MAX_SCALE: u64 = 1 << 53;

/// What `back` did.
#[derive(Debug, Serialize)]
pub struct BackReport {
    /// The spec's name.
    pub name: String,
    /// The divisor applied to memory sizes.
    pub scale: u64,
    /// Bytes of guest memory backed at boot (RAM and DAX).
    pub boot_bytes: u64,
    /// Bytes plugged through the hotplug slots.
    pub hotplug_bytes: u64,
    /// Memory use before the first step.
    pub before: MemorySample,
    /// The steps, in order; the last is the release of everything.
    pub steps: Vec<Step>,
    /// Memory use after everything was released.
    pub after: MemorySample,
    /// Whether any memory asked for transparent huge pages (directly or as the fallback).
    pub thp_requested: bool,
    /// Whether any memory asked for explicit huge pages.
    pub hugetlb_requested: bool,
    /// The most transparent huge page memory this process had after any step, KiB (from
    /// `/proc/self/smaps_rollup`).
    pub peak_thp_kib: u64,
    /// The most explicit huge page memory this process had after any step, KiB.
    pub peak_hugetlb_kib: u64,
    /// The step that failed, if one did (everything made before it was released).
    pub failure: Option<Failure>,
    #[serde(skip)]
    error: Option<(String, memvisor_space::Error)>,
}

impl BackReport {
    /// Takes the failed step's name and error out of the report.
    pub fn take_error(&mut self) -> Option<(String, memvisor_space::Error)> {
        self.error.take()
    }
}

/// What a fallback gave instead of the pages asked for, worded by what was asked.
fn fallback_note(asked: HugePages, got: HugePages) -> String {
    let instead = match got {
        HugePages::Transparent => "transparent huge pages advised instead",
        _ => "base pages instead",
    };
    match asked {
        HugePages::Explicit(size) => format!(" (no {size} huge pages to be had: {instead})"),
        HugePages::Transparent => {
            " (no transparent huge pages: the host's setting gives none to this memory)".to_owned()
        }
        HugePages::None => format!(" (fell back: {instead})"),
    }
}

/// A step's detail: the report of backing a region asked for `asked` pages.
fn detail(r: &RegionReport, asked: HugePages) -> String {
    let mut d = format!("{}, page {}", r.backing, Size(r.page_size));
    match r.huge_pages {
        HugePages::None => {}
        HugePages::Transparent => d.push_str(", THP advised"),
        HugePages::Explicit(size) => {
            let _ = write!(d, ", {size} huge pages");
        }
    }
    if r.fell_back {
        d.push_str(&fallback_note(asked, r.huge_pages));
    }
    if let Some(n) = &r.numa {
        let nodes: Vec<String> = n.nodes().iter().map(u32::to_string).collect();
        let _ = write!(d, ", NUMA {} {}", n.policy(), nodes.join(","));
    }
    if r.prefault_threads > 0 {
        let _ = write!(d, ", prefaulted by {} thread(s)", r.prefault_threads);
    }
    if r.dontfork {
        d.push_str(", dontfork");
    }
    if r.in_hotplug_window {
        d.push_str(", in the hotplug window");
    }
    d
}

struct Recorder {
    steps: Vec<Step>,
    /// The first sample that could not be taken (a `/proc` or `/sys` file past its limit).
    sample_error: Option<Error>,
}

impl Recorder {
    fn run<T>(
        &mut self,
        step: String,
        f: impl FnOnce() -> Result<(T, String), memvisor_space::Error>,
    ) -> Result<T, (String, memvisor_space::Error)> {
        let started = Instant::now();
        let (value, detail) = f().map_err(|e| (step.clone(), e))?;
        let elapsed = started.elapsed();
        self.push(step, elapsed, detail);
        Ok(value)
    }

    fn push(&mut self, step: String, elapsed: Duration, detail: String) {
        self.steps.push(Step {
            step,
            elapsed_ms: elapsed.as_secs_f64() * 1e3,
            memory: sample().unwrap_or_else(|e| {
                self.sample_error.get_or_insert(e);
                MemorySample::default()
            }),
            detail,
        });
    }
}

/// Creates the plan's memory, plugs and unplugs each hotplug slot, and releases everything,
/// recording each step. With `progress`, a progress bar on standard error (with rate and ETA)
/// counts the bytes of memory made over every backing and plugging step, following this
/// process's resident memory while prefaulted memory is made, and names the current step.
///
/// A failing step ends the run: everything made before it is released, and the report's
/// [`failure`](BackReport::failure) names the step.
///
/// Prefaulted memory is made resident at once, and more of it than the host has available
/// would have the kernel kill a process (this one or another) for memory rather than fail a
/// call: so before anything is made, the prefaulted memory of every region and hotplug slot
/// (all slots are plugged at once) is held to `MemAvailable` and `SwapFree` together
/// ([`prefault_fits`]).
///
/// `scale` is only reported (`plan` is already scaled); the command keeps it at most
/// [`MAX_SCALE`].
///
/// # Errors
/// [`Error::PrefaultTooLarge`] before anything is made, for prefaulted memory larger than
/// `MemAvailable` and `SwapFree` together; [`Error::HostFileTooLarge`] if a memory sample's `/proc`
/// or `/sys` file is longer than the most read of it: before anything is made, or after everything
/// made is released.
pub fn back(plan: &Plan, scale: u64, progress: bool) -> Result<BackReport, Error> {
    prefault_fits(plan)?;
    let before = sample()?;
    let mut rec = Recorder {
        steps: Vec::new(),
        sample_error: None,
    };
    // Every byte of memory made, boot and plugged: the bar covers each backing and plugging
    // step, not only prefaulting.
    let made: u64 = plan
        .regions
        .iter()
        .chain(&plan.slots)
        .filter(|r| r.spec.backing().has_memory())
        .map(|r| r.spec.size())
        .fold(0, u64::saturating_add);
    let bar = if progress && made > 0 {
        let bar = ProgressBar::with_draw_target(Some(made), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} \
             elapsed {elapsed} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    } else {
        ProgressBar::hidden()
    };
    let boot_bytes = plan
        .regions
        .iter()
        .filter(|r| r.spec.backing().has_memory())
        .map(|r| r.spec.size())
        .sum();
    let hotplug_bytes = plan.slots.iter().map(|r| r.spec.size()).sum();

    let result = run_steps(plan, &mut rec, &bar);
    bar.finish_and_clear();
    let started = Instant::now();
    // Dropping the address space (and, after a failure, whatever the failed step had made)
    // unmaps everything.
    let failure = match result {
        Ok(space) => {
            drop(space);
            rec.push(
                "release everything".into(),
                started.elapsed(),
                String::new(),
            );
            None
        }
        Err((step, e)) => {
            rec.push(
                "release after the failure".into(),
                started.elapsed(),
                String::new(),
            );
            Some((step, e))
        }
    };
    // Everything is released: a sample that could not be taken ends the command now.
    if let Some(e) = rec.sample_error {
        return Err(e);
    }
    let after = match rec.steps.last() {
        Some(s) => s.memory,
        None => sample()?,
    };
    let peak =
        |f: fn(&MemorySample) -> u64| rec.steps.iter().map(|s| f(&s.memory)).max().unwrap_or(0);
    let (peak_thp_kib, peak_hugetlb_kib) = (peak(|m| m.thp_kib), peak(|m| m.hugetlb_kib));
    let memory = plan
        .map
        .iter()
        .map(|m| &m.backing)
        .chain(plan.hotplug.iter().map(|s| &s.backing));
    let thp_requested = memory
        .clone()
        .any(|b| b.pages == "transparent" || b.fallback_transparent);
    let hugetlb_requested = memory
        .clone()
        .any(|b| b.pages == "2MiB" || b.pages == "1GiB");
    Ok(BackReport {
        name: plan.name.clone(),
        scale,
        boot_bytes,
        hotplug_bytes,
        before,
        steps: rec.steps,
        after,
        thp_requested,
        hugetlb_requested,
        peak_thp_kib,
        peak_hugetlb_kib,
        failure: failure.as_ref().map(|(step, e)| Failure {
            step: step.clone(),
            message: error_chain(e),
        }),
        error: failure,
    })
}

/// An error and its sources, joined by `: `. A source whose message the text already ends with
/// (an error that shows its source in its own message) is not said again.
#[must_use]
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let shown = s.to_string();
        if !text.ends_with(&shown) {
            let _ = write!(text, ": {shown}");
        }
        source = s.source();
    }
    text
}

/// This process's resident memory including explicit huge pages, KiB: read beside a prefault
/// being timed, so without [`sample`]'s page table walk ([`crate::hostmem::resident_kib`]).
fn resident_kib() -> u64 {
    // A reading that cannot be taken leaves the bar where it is; the step's own sample says why.
    crate::hostmem::resident_kib().unwrap_or(0)
}

/// Sets the flag and wakes the thread when dropped.
struct Stop<'a>(&'a AtomicBool, std::thread::Thread);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
        self.1.unpark();
    }
}

/// Runs `f`, which makes `bytes` of memory resident, and meanwhile moves the progress bar (if
/// there is one) as this process's resident memory grows: the library prefaults a region in
/// one call, so its growth is the only progress there is to see. At the end the bar stands
/// `bytes` further on.
fn watch<T>(bar: &ProgressBar, bytes: u64, f: impl FnOnce() -> T) -> T {
    if bytes == 0 || bar.length().is_none() {
        return f();
    }
    let start = bar.position();
    let base = resident_kib();
    let done = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            while !done.load(Ordering::Acquire) {
                let grown = resident_kib().saturating_sub(base).saturating_mul(1024);
                bar.set_position(start + grown.min(bytes));
                std::thread::park_timeout(Duration::from_millis(50));
            }
        });
        // Stops the watcher even if `f` panics (the scope would wait for it forever), and wakes
        // it at once, so the step's time does not include its sleep.
        let _stop = Stop(&done, watcher.thread().clone());
        f()
    });
    bar.set_position(start + bytes);
    result
}

/// The bytes `back` makes resident by prefaulting them ([`prefaulted_of`] the plan's regions and
/// hotplug slots), with the host's explicit huge page pools.
fn prefaulted_bytes(plan: &Plan) -> Result<u128, Error> {
    let specs = plan.regions.iter().chain(&plan.slots).map(|r| &r.spec);
    prefaulted_of(specs, |page| {
        let dir = crate::hostmem::huge_page_dirs()
            .into_iter()
            .find(|(kib, _)| u128::from(*kib) * 1024 == u128::from(page));
        Ok(match dir {
            Some((_, dir)) => {
                let free = crate::hostmem::read_number(dir.join("free_hugepages"))?.unwrap_or(0);
                let held = crate::hostmem::read_number(dir.join("resv_hugepages"))?.unwrap_or(0);
                u128::from(free.saturating_sub(held)) * u128::from(page)
            }
            None => 0,
        })
    })
}

/// The bytes of `specs` with memory and prefault threads, except explicit huge pages that
/// their pool holds. The kernel reserves a region's explicit huge pages when it is mapped
/// (prefaulted or not), and a pool short for them fails the mapping, so `specs` are taken in
/// the order `back` maps them, each from what is left of its pool (`pool_free` of its page
/// size, bytes, read once): a region the pool holds takes that much of it and makes nothing
/// else resident, and one it does not hold falls back whole to other pages (counted when
/// prefaulted) if its fallback lets it (else its mapping fails and takes nothing).
/// `check` counts with it too, from the pools it read, so that the two agree.
pub(crate) fn prefaulted_of<'a, E>(
    specs: impl Iterator<Item = &'a RegionSpec>,
    mut pool_free: impl FnMut(u64) -> Result<u128, E>,
) -> Result<u128, E> {
    let mut resident: u128 = 0;
    // What is left of each explicit huge page pool read so far: (page size, bytes).
    let mut pools: Vec<(u64, u128)> = Vec::new();
    for s in specs.filter(|s| s.backing().has_memory()) {
        let size = u128::from(s.size());
        let prefaulted = s.prefault_threads() > 0;
        match s.huge_pages() {
            HugePages::Explicit(page) => {
                let page = page.bytes();
                let at = match pools.iter().position(|(p, _)| *p == page) {
                    Some(at) => at,
                    None => {
                        pools.push((page, pool_free(page)?));
                        pools.len() - 1
                    }
                };
                let left = &mut pools[at].1;
                if size <= *left {
                    *left -= size;
                } else if prefaulted && s.fallback() != HugePageFallback::Fail {
                    resident += size;
                }
            }
            _ if matches!(s.backing(), Backing::Hugetlbfs(_)) => {}
            _ if prefaulted => resident += size,
            _ => {}
        }
    }
    Ok(resident)
}

/// Refuses, before anything is made, a plan whose prefaulted memory is more than the host's
/// `MemAvailable` and `SwapFree` together: prefaulting it would have the kernel's OOM killer
/// end this process or another one. Prefaulted memory is boot RAM and every prefaulted hotplug
/// slot (`back` plugs them all), explicit huge pages only where they fall back to ordinary
/// pages for want of a pool. A host without `MemAvailable` is not held to it. Less can still
/// meet the OOM killer: a memory cgroup's limit (a container's) and a NUMA binding to host
/// nodes with less free memory are not read.
///
/// # Errors
/// [`Error::PrefaultTooLarge`], or [`Error::HostFileTooLarge`] if `/proc/meminfo` or a pool's
/// counter is longer than the most read of it.
pub fn prefault_fits(plan: &Plan) -> Result<(), Error> {
    let resident = prefaulted_bytes(plan)?;
    if resident == 0 {
        return Ok(());
    }
    let meminfo = crate::hostmem::host_text("/proc/meminfo".as_ref())?;
    let Some(available) = available_bytes(&meminfo) else {
        return Ok(());
    };
    if resident > available {
        return Err(Error::PrefaultTooLarge {
            resident: u64::try_from(resident).unwrap_or(u64::MAX),
            available: u64::try_from(available).unwrap_or(u64::MAX),
        });
    }
    Ok(())
}

/// The bytes `/proc/meminfo` (`meminfo`) says can be made resident before the kernel runs out
/// of memory: `MemAvailable` and `SwapFree` (prefaulted anonymous and memfd pages, or the
/// pages they push out, can be swapped out; 0 without the line). `None` without
/// `MemAvailable`.
fn available_bytes(meminfo: &str) -> Option<u128> {
    let available = crate::hostmem::field_kib(meminfo, "MemAvailable")?;
    let swap = crate::hostmem::field_kib(meminfo, "SwapFree").unwrap_or(0);
    Some((u128::from(available) + u128::from(swap)) * 1024)
}

fn run_steps(
    plan: &Plan,
    rec: &mut Recorder,
    bar: &ProgressBar,
) -> Result<AddressSpace, (String, memvisor_space::Error)> {
    let unbacked: Vec<_> = plan
        .regions
        .iter()
        .filter(|r| !r.spec.backing().has_memory())
        .map(|r| r.spec.clone())
        .collect();
    let space = rec.run("create address space".into(), || {
        let (space, report) = AddressSpace::builder(plan.layout.clone())
            .regions(unbacked)
            .back()?;
        let reserved: u64 = report
            .hotplug_windows
            .iter()
            .map(|&(_, len)| len as u64)
            .sum();
        let detail = match report.hotplug_windows.len() {
            0 => "no hotplug window".to_owned(),
            1 => format!(
                "hotplug window: {} of host address space reserved",
                Size(reserved)
            ),
            n => format!(
                "{n} hotplug windows: {} of host address space reserved",
                Size(reserved)
            ),
        };
        Ok((space, detail))
    })?;
    for r in plan
        .regions
        .iter()
        .filter(|r| r.spec.backing().has_memory())
    {
        bar.set_message(r.owner.clone());
        let step = format!("back {} ({})", r.owner, Size(r.spec.size()));
        // Prefaulted memory moves the bar as it becomes resident; other memory at the end.
        let prefaulted = r.spec.size();
        rec.run(step, || {
            watch(bar, prefaulted, || {
                let (region, report) = Region::back(r.spec.clone())?;
                space.insert_region(Arc::new(region))?;
                let asked = r.spec.huge_pages();
                Ok((
                    (),
                    report
                        .as_ref()
                        .map(|report| detail(report, asked))
                        .unwrap_or_default(),
                ))
            })
        })?;
    }
    for s in &plan.slots {
        bar.set_message(s.owner.clone());
        let step = format!("plug {} ({})", s.owner, Size(s.spec.size()));
        // Prefaulted memory moves the bar as it becomes resident; other memory at the end.
        let prefaulted = s.spec.size();
        rec.run(step, || {
            watch(bar, prefaulted, || {
                let (_, report) = space.plug(s.spec.clone())?;
                Ok(((), detail(&report, s.spec.huge_pages())))
            })
        })?;
    }
    for s in plan.slots.iter().rev() {
        let step = format!("unplug {}", s.owner);
        bar.set_message(step.clone());
        rec.run(step, || {
            let region = space.remove_region(s.spec.base(), s.spec.size())?;
            // The last reference: the slot's memory goes back to the reserved window now.
            drop(region);
            Ok(((), String::new()))
        })?;
    }
    Ok(space)
}

fn mib(kib: u64) -> String {
    // KiB to MiB with one decimal, exactly (no float rounding surprises in tables).
    format!("{}.{}", kib / 1024, (kib % 1024) * 10 / 1024)
}

/// The report as text: a heading, then one row per step with its time and memory use.
#[must_use]
pub fn back_text(r: &BackReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: backing {} at boot and {} in hotplug slots{}",
        r.name,
        Size(r.boot_bytes),
        Size(r.hotplug_bytes),
        if r.scale > 1 {
            format!(" (sizes divided by {})", r.scale)
        } else {
            String::new()
        }
    );
    out.push_str(
        "memory in MiB: this process's RSS (anonymous, shared), hugetlb pages and transparent huge \
         pages obtained (smaps); the host's free huge pages and commit charge\n\n",
    );
    let mut t = Table::new(&[
        "STEP",
        "TIME>",
        "RSS>",
        "ANON>",
        "SHMEM>",
        "HUGETLB>",
        "THP>",
        "HP FREE>",
        "COMMITTED>",
        "DETAIL",
    ]);
    let row = |step: &str, time: String, m: &MemorySample, detail: &str| {
        vec![
            step.to_owned(),
            time,
            mib(m.rss_kib),
            mib(m.rss_anon_kib),
            mib(m.rss_shmem_kib),
            mib(m.hugetlb_kib),
            mib(m.thp_kib),
            mib(m.huge_pages_free_kib),
            mib(m.committed_kib),
            detail.to_owned(),
        ]
    };
    t.row(row("before", "-".to_owned(), &r.before, ""));
    for s in &r.steps {
        t.row(row(
            &s.step,
            format!("{:.2} ms", s.elapsed_ms),
            &s.memory,
            &s.detail,
        ));
    }
    out.push_str(&t.to_string());
    let _ = writeln!(
        out,
        "\nhuge pages obtained (peak): {} MiB transparent, {} MiB explicit",
        mib(r.peak_thp_kib),
        mib(r.peak_hugetlb_kib)
    );
    if r.thp_requested && r.peak_thp_kib == 0 {
        out.push_str(
            "transparent huge pages were asked for, but the host gave none (`memvisor check` says \
             why)\n",
        );
    }
    if r.hugetlb_requested && r.peak_hugetlb_kib == 0 && r.failure.is_none() {
        out.push_str("explicit huge pages were asked for, but none were mapped\n");
    }
    if let Some(f) = &r.failure {
        let _ = writeln!(out, "\nfailed at `{}`: {}", f.step, f.message);
    }
    out
}

#[cfg(test)]
mod tests {
    use memvisor_space::HugePageSize;
    use vm_memory::GuestAddress;

    use super::*;

    const GIB: u64 = 1 << 30;

    /// RAM of `size` bytes at `base` GiB in 2 MiB pages with this fallback, prefaulted or not.
    fn huge(base: u64, fallback: HugePageFallback, prefault: bool) -> RegionSpec {
        RegionSpec::ram(GuestAddress(base * GIB), GIB)
            .with_backing(Backing::Memfd)
            .with_huge_pages(HugePages::Explicit(HugePageSize::Size2M))
            .with_fallback(fallback)
            .with_prefault_threads(usize::from(prefault))
    }

    /// [`prefaulted_of`] `specs` with 1 GiB free in the 2 MiB pool, none in others.
    fn resident(specs: &[RegionSpec]) -> u128 {
        let Ok(resident) = prefaulted_of(specs.iter(), |page| {
            Ok::<_, std::convert::Infallible>(if page == 2 << 20 { u128::from(GIB) } else { 0 })
        });
        resident
    }

    #[test]
    fn prefaulted_of_takes_the_pool_region_by_region_in_the_order_they_are_mapped() {
        use HugePageFallback::{BasePages, Fail};
        // The first region of huge pages takes the whole pool; the second falls back whole.
        assert_eq!(
            resident(&[huge(0, BasePages, true), huge(1, BasePages, true)]),
            u128::from(GIB)
        );
        // A region that may not fall back takes the pool too, as does one not prefaulted:
        // the pages are reserved when it is mapped.
        assert_eq!(
            resident(&[huge(0, Fail, true), huge(1, BasePages, true)]),
            u128::from(GIB)
        );
        assert_eq!(
            resident(&[huge(0, BasePages, false), huge(1, BasePages, true)]),
            u128::from(GIB)
        );
        // A pool large enough for it: nothing falls back.
        assert_eq!(resident(&[huge(0, BasePages, true)]), 0);
        // Base pages count when prefaulted only.
        let anonymous = |base: u64, prefault: usize| {
            RegionSpec::ram(GuestAddress(base * GIB), GIB).with_prefault_threads(prefault)
        };
        assert_eq!(
            resident(&[anonymous(0, 1), anonymous(1, 0), huge(2, BasePages, true)]),
            u128::from(GIB)
        );
    }

    #[test]
    fn available_bytes_count_free_swap() {
        // A host with 4 GiB available and 8 GiB of free swap: prefaulting 6 GiB swaps out
        // other pages (or its own), it does not run out of memory.
        let meminfo = "MemTotal:       16777216 kB\nMemFree:         1048576 kB\n\
                       MemAvailable:    4194304 kB\nSwapTotal:       8388608 kB\n\
                       SwapFree:        8388608 kB\n";
        assert_eq!(available_bytes(meminfo), Some(12 << 30));
        // Without swap, or without its line, what is available is all there is.
        let meminfo = "MemAvailable:    4194304 kB\nSwapTotal:             0 kB\n\
                       SwapFree:              0 kB\n";
        assert_eq!(available_bytes(meminfo), Some(4 << 30));
        assert_eq!(available_bytes("MemAvailable: 4194304 kB\n"), Some(4 << 30));
        // Without MemAvailable (kernels before 3.14) nothing is bounded.
        assert_eq!(available_bytes("SwapFree: 8388608 kB\n"), None);
    }

    fn report(thp_requested: bool, peak_thp_kib: u64) -> BackReport {
        BackReport {
            name: "vm".into(),
            scale: 1,
            boot_bytes: 2 << 20,
            hotplug_bytes: 0,
            before: MemorySample::default(),
            steps: Vec::new(),
            after: MemorySample::default(),
            thp_requested,
            hugetlb_requested: false,
            peak_thp_kib,
            peak_hugetlb_kib: 0,
            failure: None,
            error: None,
        }
    }

    #[test]
    fn back_text_thp_advised_but_none_obtained_says_so() {
        let text = back_text(&report(true, 0));
        assert!(
            text.contains("huge pages obtained (peak): 0.0 MiB transparent, 0.0 MiB explicit\n"),
            "{text}"
        );
        assert!(
            text.contains("transparent huge pages were asked for, but the host gave none"),
            "{text}"
        );
        let text = back_text(&report(true, 2048));
        assert!(text.contains("2.0 MiB transparent"), "{text}");
        assert!(!text.contains("gave none"), "{text}");
    }

    #[test]
    fn fallback_note_says_what_was_asked() {
        use memvisor_space::HugePageSize;
        assert_eq!(
            fallback_note(HugePages::Transparent, HugePages::None),
            " (no transparent huge pages: the host's setting gives none to this memory)"
        );
        assert_eq!(
            fallback_note(
                HugePages::Explicit(HugePageSize::Size2M),
                HugePages::Transparent
            ),
            " (no 2 MiB huge pages to be had: transparent huge pages advised instead)"
        );
        assert_eq!(
            fallback_note(HugePages::Explicit(HugePageSize::Size1G), HugePages::None),
            " (no 1 GiB huge pages to be had: base pages instead)"
        );
    }

    #[test]
    fn mib_formats_one_decimal() {
        assert_eq!(mib(0), "0.0");
        assert_eq!(mib(1536), "1.5");
        assert_eq!(mib(2047), "1.9");
    }

    #[test]
    fn error_chain_joins_sources() {
        let e = memvisor_space::Error::Os {
            op: "mmap",
            base: 0x1000,
            source: std::io::Error::from_raw_os_error(12),
        };
        let text = error_chain(&e);
        assert!(
            text.starts_with("mmap failed for the region at 0x1000: "),
            "{text}"
        );
    }

    #[test]
    fn error_chain_source_shown_by_its_error_is_said_once() {
        // Each error of the chain says its own part: the reservation's the window, vmem's the
        // operation, and the OS error, vmem's source, its text; every part once.
        let e = memvisor_space::Error::Reservation {
            window: memvisor_space::GuestRange::new(vm_memory::GuestAddress(1 << 32), 1 << 30)
                .unwrap(),
            source: memvisor_vmem::Error::Os {
                operation: memvisor_vmem::Operation::Reserve,
                source: memvisor_vmem::OsError::from_raw(12),
            },
        };
        let os = std::io::Error::from_raw_os_error(12).to_string();
        assert_eq!(
            error_chain(&e),
            format!(
                "reserving host address space for the hotplug window [0x100000000, 0x13fffffff]: \
                 reserve failed: {os}"
            )
        );
    }
}
