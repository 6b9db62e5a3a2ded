//! Decommit gives memory and commit charge back to the system at once: the process's RSS and
//! the system's `Committed_AS` return to their baseline. Linux only (they are read from
//! `/proc`).
#![cfg(all(target_os = "linux", not(miri)))]

use memvisor_testkit::resident::rss_bytes;
use memvisor_vmem::{CommitMode, Reservation, page_size};

const GIB: usize = 1 << 30;

fn meminfo_kib(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} not in /proc/meminfo"))
}

/// In bytes, as `u64`: the system's charge passes 4 GiB whatever the process's word size.
fn committed_as() -> u64 {
    meminfo_kib("Committed_AS") * 1024
}

/// `Committed_AS` counts the whole system, so other processes move it too: the check is
/// repeated a few times and passes when one attempt shows the 4 GiB charge (1 GiB in a 32-bit
/// process, which has 4 GiB of address space) taken by commit and returned by decommit,
/// within a margin of 512 MiB.
#[test]
fn decommit_returns_commit_charge() {
    let size = GIB
        .checked_mul(4)
        .filter(|_| usize::BITS == 64)
        .unwrap_or(GIB);
    let charge = size as u64;
    let margin = (GIB / 2) as u64;
    let mut last = (0, 0, 0);
    for _ in 0..5 {
        let mut r = Reservation::new(size).unwrap();
        let before = committed_as();
        r.commit(0, size).unwrap();
        let committed = committed_as();
        r.decommit(0, size).unwrap();
        let after = committed_as();
        last = (before, committed, after);
        if committed >= before + charge - margin
            && committed >= after + charge - margin
            && after.abs_diff(before) < margin
        {
            return;
        }
    }
    panic!("commit charge not returned: before/committed/after = {last:?}");
}

/// The scenarios run one after another in one test, since RSS counts the whole process.
#[test]
fn decommit_and_drop_return_rss() {
    decommit_returns_rss(CommitMode::Protected);
    decommit_returns_rss(CommitMode::Sparse);
    drop_returns_rss();
}

fn decommit_returns_rss(mode: CommitMode) {
    let size = 256 << 20;
    let mut r = Reservation::builder().mode(mode).reserve(size).unwrap();
    let before = rss_bytes();
    r.commit(0, size).unwrap();
    r.prefault(0, size).unwrap();
    let resident = rss_bytes();
    assert!(
        resident >= before + size * 9 / 10,
        "{mode:?} prefault: {before} -> {resident}"
    );
    assert_eq!(r.resident_pages(0, size).unwrap(), size / page_size());
    r.decommit(0, size).unwrap();
    let after = rss_bytes();
    assert!(
        after < before + size / 10,
        "{mode:?} decommit: {before} -> {resident} -> {after}"
    );
    assert_eq!(r.resident_pages(0, size).unwrap(), 0);
}

fn drop_returns_rss() {
    let size = 128 << 20;
    let before = rss_bytes();
    {
        let mut r = Reservation::new(size).unwrap();
        r.commit(0, size).unwrap();
        r.prefault(0, size).unwrap();
        assert!(rss_bytes() >= before + size * 9 / 10);
    }
    assert!(rss_bytes() < before + size / 10);
}
