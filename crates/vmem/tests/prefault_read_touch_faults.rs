//! `prefault_read` where the kernel cannot populate (Linux before 5.14, which answers
//! `MADV_POPULATE_READ` with `EINVAL`): it reads each page's first byte, and each read must
//! reach the page, taking one fault per page and leaving every page resident (the load's value
//! goes to a volatile write, so that the compiler must make it). Natively the kernel here
//! populates; a seccomp filter (memvisor-testkit's `refused_calls`) answers the reservation's
//! `madvise` calls with `EINVAL`, as an older kernel would, in a child process of its own (the
//! filter cannot be removed); skipped under a sanitizer, whose runtime maps memory of its own.
//! Linux on x86-64 only.
#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

use memvisor_testkit::refused_calls::{Refuser, in_child, under_sanitizer};
use memvisor_vmem::{CommitMode, Protection, Reservation, page_size};

const CHILD: &str = "MEMVISOR_VMEM_PREFAULT_READ_TOUCH_CHILD";
const PAGES: usize = 64;

/// The minor faults the calling thread has taken.
fn minor_faults() -> i64 {
    // SAFETY: `rusage` is plain data; all zeros is a valid value.
    let mut usage: libc::rusage = unsafe { core::mem::zeroed() };
    // SAFETY: a valid `rusage` to write, for the calling thread.
    let got = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &raw mut usage) };
    assert_eq!(got, 0);
    usage.ru_minflt
}

#[test]
fn prefault_read_without_populate_faults_each_page_in() {
    if std::env::var_os(CHILD).is_none() {
        if under_sanitizer() {
            eprintln!("SKIPPED: a sanitizer's runtime maps memory the filter would see");
            return;
        }
        in_child(
            "prefault_read_without_populate_faults_each_page_in",
            CHILD,
            "pages read in",
        );
        return;
    }
    let page = page_size();
    let len = PAGES * page;
    let mut r = Reservation::builder()
        .mode(CommitMode::Protected)
        .reserve(len)
        .unwrap();
    r.commit(0, len).unwrap();
    r.protect(0, len, Protection::Read).unwrap();
    assert_eq!(r.resident_pages(0, len).unwrap(), 0);
    let Some(refuser) = Refuser::install(&[libc::SYS_madvise]) else {
        return;
    };
    let base = r.as_ptr() as usize;
    // Every `madvise` inside the reservation, the probe over no pages too: a kernel that does
    // not know the advice.
    refuser.refuse_from(base..base + len, 0, libc::EINVAL);
    let before = minor_faults();
    r.prefault_read(0, len).unwrap();
    let faults = minor_faults() - before;
    assert!(
        refuser.lift().is_some(),
        "the kernel was not asked to populate"
    );
    assert_eq!(r.resident_pages(0, len).unwrap(), PAGES);
    assert!(faults >= i64::try_from(PAGES).unwrap(), "{faults} faults");
    println!("pages read in: {PAGES} pages, {faults} faults");
}
