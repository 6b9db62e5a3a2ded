//! The `mimalloc-heap-secure` peer is mimalloc built with `MI_SECURE=4`: it detects a double
//! free and reports an interior free, where the plain `mimalloc-heap` peer reports neither. Each
//! misuse runs in a child process (this test binary run again with [`CHILD`] set), since the
//! plain build's corrupts its heap: a block pushed on its page's free list twice makes a cycle
//! that mimalloc's collection at thread exit would walk for ever. A child still running at its
//! deadline ([`CHILD_LIMIT`]) is killed and fails the test; one that faults fails it with its
//! status.

use std::ffi::{c_int, c_void};
use std::io::Write as _;
use std::process::Command;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use memvisor_bench::mimalloc::{Mimalloc, Plain, Secure};
use memvisor_testkit::child_process::output_within;

/// Set in a child to `BUILD:MISUSE` (`plain` or `secure`; `double`, `interior`, `foreign`, `low`
/// or `hang`, see [`Misuse`]): the misuse it runs on that build.
const CHILD: &str = "MEMVISOR_BENCH_MIMALLOC_MISUSE";
/// What a child prints (after libtest's `test … ` on the same line) before what its build's
/// error hook saw.
const REPORT: &str = "mimalloc errors reported: ";

static ERRORS: AtomicUsize = AtomicUsize::new(0);
static LAST_CODE: AtomicI32 = AtomicI32::new(0);

unsafe extern "C" fn count_error(code: c_int, _arg: *mut c_void) {
    ERRORS.fetch_add(1, Ordering::SeqCst);
    LAST_CODE.store(code, Ordering::SeqCst);
}

/// In a child: runs the misuse [`CHILD`] names, if it is set (else returns).
fn run_misuse_if_child() {
    let Ok(what) = std::env::var(CHILD) else {
        return;
    };
    let kind = match what.split_once(':') {
        Some((_, "double")) => Misuse::Double,
        Some((_, "interior")) => Misuse::Interior,
        Some((_, "foreign")) => Misuse::Foreign,
        Some((_, "hang")) => Misuse::Hang,
        Some((_, "low")) => Misuse::Low,
        _ => panic!("unknown misuse `{what}` in {CHILD}"),
    };
    match what.split_once(':').map(|(build, _)| build) {
        Some("plain") => misuse::<Plain>(kind),
        Some("secure") => misuse::<Secure>(kind),
        _ => panic!("unknown build `{what}` in {CHILD}"),
    }
}

/// A wrong free a child runs.
#[derive(Clone, Copy)]
enum Misuse {
    /// A block freed twice.
    Double,
    /// A block freed by the address 16 bytes into it.
    Interior,
    /// A free of an address in zeroed memory of our own mapping, at a mimalloc segment's
    /// alignment (32 MiB), where mimalloc reads the segment header it takes the pointer to have.
    Foreign,
    /// No misuse: the child sleeps [`HANG`] before it reports, as a misuse that hangs would
    /// (the plain build walking a free list made a cycle), for the test of the parent's
    /// deadline.
    Hang,
    /// A free of an address below mimalloc's first segment (4 KiB): its segment address masks
    /// to null.
    Low,
}

/// How long a [`Misuse::Hang`] child sleeps: far past [`HANG_LIMIT`], bounded so that no run
/// leaves it behind for long.
const HANG: Duration = Duration::from_secs(10);
/// The deadline the test of a hung child gives it.
const HANG_LIMIT: Duration = Duration::from_millis(300);

/// mimalloc v2's segment size and alignment on 64-bit targets.
const SEGMENT: usize = 32 << 20;

/// An address 64 bytes into a zeroed, mapped region aligned to [`SEGMENT`] (the mapping is
/// never unmapped: the child ends right after).
fn foreign_address() -> *mut c_void {
    // SAFETY: a fresh anonymous private mapping, read and written only through mimalloc's free.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            2 * SEGMENT,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED, "mmap failed");
    let aligned = (map as usize).next_multiple_of(SEGMENT);
    map.cast::<u8>()
        .wrapping_add(aligned - map as usize + 64)
        .cast()
}

/// In the child: runs `kind` on a fresh heap of `M` with 64-byte blocks; prints how many errors
/// the build reported and the last one's code, and leaves without running any destructor (the
/// plain heap's free list is corrupt now).
fn misuse<M: Mimalloc>(kind: Misuse) -> ! {
    // SAFETY: the hook only touches atomics; it stays registered until the process ends.
    unsafe { M::register_error(Some(count_error), std::ptr::null_mut()) };
    // SAFETY: a heap of this thread; the blocks are 64 bytes aligned to 8, from that heap.
    unsafe {
        let heap = M::heap_new();
        assert!(!heap.is_null(), "mi_heap_new failed");
        let block = M::heap_malloc_aligned(heap, 64, 8);
        let other = M::heap_malloc_aligned(heap, 64, 8);
        assert!(
            !block.is_null() && !other.is_null(),
            "mi_heap_malloc failed"
        );
        match kind {
            Misuse::Double => {
                M::free(block);
                // The defect under test: the same block freed again.
                M::free(block);
            }
            // The defect under test: a free by an address inside the block.
            Misuse::Interior => M::free(block.cast::<u8>().add(16).cast()),
            // The defect under test: a free of memory mimalloc never gave.
            Misuse::Foreign => M::free(foreign_address()),
            Misuse::Hang => std::thread::sleep(HANG),
            Misuse::Low => M::free(std::ptr::without_provenance_mut(0x1000)),
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{REPORT}{} (last code {})",
        ERRORS.load(Ordering::SeqCst),
        LAST_CODE.load(Ordering::SeqCst)
    )
    .expect("write the report");
    out.flush().expect("flush the report");
    // SAFETY: ends the process at once, without exit handlers or thread-local destructors.
    unsafe { libc::_exit(0) }
}

/// Runs the test `test` again in a child with [`CHILD`] set to `what`; returns the child's
/// report and its standard error.
fn run_child(test: &str, what: &str) -> (String, String) {
    run_child_within(test, what, CHILD_LIMIT)
}

/// The deadline of a misuse child (each takes a few milliseconds).
const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// [`run_child`] with the deadline `limit`: a child still running then is killed and the
/// test fails, with what the child wrote by then.
fn run_child_within(test: &str, what: &str, limit: Duration) -> (String, String) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = output_within(
        Command::new(exe)
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(CHILD, what)
            .env("MIMALLOC_SHOW_ERRORS", "1"),
        limit,
    )
    .unwrap_or_else(|hung| panic!("{what} child: {hung}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{what} child failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let report = stdout
        .lines()
        .find_map(|line| line.split_once(REPORT).map(|(_, report)| report))
        .unwrap_or_else(|| panic!("{what} child printed no report:\n{stdout}\n{stderr}"))
        .to_owned();
    (report, stderr)
}

#[test]
fn secure_build_detects_a_double_free_the_plain_build_does_not() {
    run_misuse_if_child();
    let test = "secure_build_detects_a_double_free_the_plain_build_does_not";
    let (secure, secure_stderr) = run_child(test, "secure:double");
    assert_eq!(
        secure,
        format!("1 (last code {})", libc::EAGAIN),
        "the secure build reports the double free once, as EAGAIN; stderr:\n{secure_stderr}"
    );
    assert!(
        secure_stderr.contains("double free detected"),
        "the secure build names the double free: {secure_stderr}"
    );
    let (plain, plain_stderr) = run_child(test, "plain:double");
    assert_eq!(
        plain, "0 (last code 0)",
        "the plain build checks no free; stderr:\n{plain_stderr}"
    );
    assert!(!plain_stderr.contains("double free"), "{plain_stderr}");
}

/// The secure build does not recognize an interior pointer as such, but it checks the canary
/// after the block the pointer would start, which is not there (the canary is keyed on the
/// block's address): it reports a buffer overflow (`EFAULT`), once. The first block of a fresh
/// page is far from the page's end, so the check reads memory of the page.
#[test]
fn secure_build_reports_an_interior_free_as_an_overflow_the_plain_build_does_not() {
    run_misuse_if_child();
    let test = "secure_build_reports_an_interior_free_as_an_overflow_the_plain_build_does_not";
    let (secure, secure_stderr) = run_child(test, "secure:interior");
    assert_eq!(
        secure,
        format!("1 (last code {})", libc::EFAULT),
        "the secure build reports the interior free once, as EFAULT; stderr:\n{secure_stderr}"
    );
    assert!(
        secure_stderr.contains("buffer overflow in heap block"),
        "the secure build reports an overflow: {secure_stderr}"
    );
    let (plain, plain_stderr) = run_child(test, "plain:interior");
    assert_eq!(
        plain, "0 (last code 0)",
        "the plain build checks no free; stderr:\n{plain_stderr}"
    );
}

/// The secure build checks the cookie of the segment a freed pointer would lie in: in zeroed
/// memory of a mapping of ours, at a segment's alignment, it finds none, reports an invalid
/// pointer (`EINVAL`) and frees nothing. (The plain build is not run: it would take the zeroes
/// for a segment header and act on them.)
#[test]
fn secure_build_reports_a_foreign_pointer_in_mapped_memory_as_invalid() {
    run_misuse_if_child();
    let test = "secure_build_reports_a_foreign_pointer_in_mapped_memory_as_invalid";
    let (secure, secure_stderr) = run_child(test, "secure:foreign");
    assert_eq!(
        secure,
        format!("1 (last code {})", libc::EINVAL),
        "the secure build reports the foreign free once, as EINVAL; stderr:\n{secure_stderr}"
    );
    assert!(
        secure_stderr.contains("pointer does not point to a valid heap space"),
        "the secure build names the invalid pointer: {secure_stderr}"
    );
}

/// A pointer below 32 MiB (or with its top bit set) masks to no segment (mimalloc's
/// `_mi_ptr_segment` gives null): both builds ignore its free with no report and read nothing.
#[test]
fn both_builds_ignore_a_free_below_the_first_segment_with_no_report() {
    run_misuse_if_child();
    let test = "both_builds_ignore_a_free_below_the_first_segment_with_no_report";
    for build in ["secure", "plain"] {
        let (report, stderr) = run_child(test, &format!("{build}:low"));
        assert_eq!(report, "0 (last code 0)", "{build}; stderr:\n{stderr}");
    }
}

/// A child that does not end is killed at its deadline and the test fails, naming it, where the
/// test would otherwise wait for it for ever.
#[test]
fn a_child_past_its_deadline_is_killed_and_fails_the_test() {
    run_misuse_if_child();
    let test = "a_child_past_its_deadline_is_killed_and_fails_the_test";
    let (done, ended) = mpsc::channel();
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(|| run_child_within(test, "plain:hang", HANG_LIMIT));
        let _ = done.send(outcome.err().map(|payload| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default()
        }));
    });
    let message = ended
        .recv_timeout(HANG / 2)
        .expect("the parent waited for the hung child past its deadline")
        .expect("the hung child passed");
    assert!(message.contains("ran past"), "{message}");
}

static COEXIST_ERRORS: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn count_coexist_error(_code: c_int, _arg: *mut c_void) {
    COEXIST_ERRORS.fetch_add(1, Ordering::SeqCst);
}

/// Allocates `sizes` from a fresh heap of `M`, writes every block to its last requested byte,
/// and frees every other block; returns the heap and the blocks still live.
fn fill_and_free_half<M: Mimalloc>(sizes: &[usize]) -> (*mut c_void, Vec<*mut c_void>) {
    // SAFETY: a heap of this thread; each block is written within its requested size and freed
    // once.
    unsafe {
        let heap = M::heap_new();
        assert!(!heap.is_null(), "{}: mi_heap_new failed", M::NAME);
        let mut live = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let block = M::heap_malloc_aligned(heap, size, 8);
            assert!(!block.is_null(), "{}: mi_heap_malloc failed", M::NAME);
            block.cast::<u8>().write_bytes(0xa5, size);
            if i % 2 == 0 {
                M::free(block);
            } else {
                live.push(block);
            }
        }
        (heap, live)
    }
}

/// The two copies live side by side in one thread: the plain build's memory holds its own blocks
/// only (had the secure copy's calls reached the plain copy, its segment map would hold the
/// secure blocks), and blocks used within their size and freed once are no error for either,
/// the secure build's canaries and double-free check included.
#[test]
fn plain_and_secure_builds_keep_their_own_heaps_and_report_no_error_for_correct_frees() {
    let sizes: Vec<usize> = (0..2_000).map(|i| 16 + (i * 37) % 1_009).collect();
    // SAFETY: the hook only touches an atomic; it is replaced by `None` before the test ends.
    unsafe {
        Plain::register_error(Some(count_coexist_error), std::ptr::null_mut());
        Secure::register_error(Some(count_coexist_error), std::ptr::null_mut());
    }
    let (plain_heap, plain_live) = fill_and_free_half::<Plain>(&sizes);
    let (secure_heap, secure_live) = fill_and_free_half::<Secure>(&sizes);
    for &block in &secure_live {
        // SAFETY: queries of the plain build's segment map and of a live heap of it, made on
        // this thread; neither reads the block.
        unsafe {
            assert!(
                !libmimalloc_sys::mi_is_in_heap_region(block),
                "the plain build's memory holds the secure block {block:p}"
            );
            assert!(!libmimalloc_sys::mi_heap_check_owned(
                plain_heap.cast(),
                block
            ));
        }
    }
    for &block in &plain_live {
        // SAFETY: as above.
        unsafe {
            assert!(libmimalloc_sys::mi_is_in_heap_region(block));
            assert!(libmimalloc_sys::mi_heap_check_owned(
                plain_heap.cast(),
                block
            ));
        }
    }
    // SAFETY: every block in `*_live` is live in its heap and freed once; the heaps are
    // destroyed once and not used after.
    unsafe {
        for block in plain_live {
            Plain::free(block);
        }
        for block in secure_live {
            Secure::free(block);
        }
        Plain::heap_destroy(plain_heap);
        Secure::heap_destroy(secure_heap);
        Plain::register_error(None, std::ptr::null_mut());
        Secure::register_error(None, std::ptr::null_mut());
    }
    assert_eq!(COEXIST_ERRORS.load(Ordering::SeqCst), 0);
}
