//! Each plan of the refusing heap refuses exactly the requests it names, on the planning
//! thread only, and the thread grants all again after the call.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use memvisor_testkit::child_process::output_within;
use memvisor_testkit::refusing_heap::{
    Refusing, pausing_then_refusing, refusing, refusing_after, refusing_one_after,
    refusing_one_of_size,
};

#[global_allocator]
static ALLOCATOR: Refusing = Refusing::up_to(1 << 30).aligned_from(8);

/// Whether a fresh request of `n` words is granted.
fn words(n: usize) -> bool {
    Vec::<u64>::new().try_reserve_exact(n).is_ok()
}

/// Whether a fresh request of `n` bytes (aligned to 1) is granted.
fn bytes(n: usize) -> bool {
    Vec::<u8>::new().try_reserve_exact(n).is_ok()
}

#[test]
fn refusing_after_grants_that_many_then_refuses_all() {
    let got = refusing_after(2, || [words(1), words(1), words(1), words(1)]);
    assert_eq!(got, [true, true, false, false]);
    assert!(words(1), "granted after the call");
    assert!(!refusing(|| words(1)));
}

#[test]
fn refusing_one_after_refuses_only_that_one_and_says_so() {
    let (got, refused) = refusing_one_after(1, || [words(1), words(1), words(1)]);
    assert_eq!((got, refused), ([true, false, true], true));
    let (got, refused) = refusing_one_after(5, || words(1));
    assert_eq!((got, refused), (true, false));
}

#[test]
fn refusing_one_of_size_refuses_the_first_of_that_size() {
    let (got, refused) = refusing_one_of_size(24, || [words(2), words(3), words(3)]);
    assert_eq!((got, refused), ([true, false, true], true));
    let (got, refused) = refusing_one_of_size(24, || words(4));
    assert_eq!((got, refused), (true, false));
}

#[test]
fn requests_aligned_below_the_floor_are_not_planned() {
    assert_eq!(refusing(|| [bytes(8), words(1)]), [true, false]);
}

#[test]
fn requests_over_the_limit_are_refused_on_every_thread() {
    assert!(!bytes((1 << 30) + 1));
    assert!(!std::thread::spawn(|| bytes((1 << 30) + 1)).join().unwrap());
    assert!(bytes(1 << 10));
}

#[test]
fn plans_are_per_thread() {
    let barrier = Arc::new(Barrier::new(2));
    let other = std::thread::spawn({
        let barrier = Arc::clone(&barrier);
        move || {
            barrier.wait();
            let granted = words(1);
            barrier.wait();
            granted
        }
    });
    // The other thread asks while this one refuses all.
    refusing(|| {
        barrier.wait();
        barrier.wait();
    });
    assert!(other.join().unwrap());
}

#[test]
fn pausing_then_refusing_waits_once_then_refuses() {
    let start = Instant::now();
    let got = pausing_then_refusing(Duration::from_millis(20), || [words(1), words(1)]);
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert_eq!(got, [true, false]);
}

/// Set in the child process of [`plans_whose_call_panics_give_the_thread_back_to_granting_all`].
const PANICKING_CHILD: &str = "MEMVISOR_TESTKIT_PANICKING_PLANS_CHILD";

/// Far more than the child needs; a child still running then has hung.
const CHILD_DEADLINE: Duration = Duration::from_secs(60);

#[test]
#[cfg_attr(miri, ignore = "starts a process")]
fn plans_whose_call_panics_give_the_thread_back_to_granting_all() {
    if std::env::var_os(PANICKING_CHILD).is_some() {
        // The panic's message, payload and backtrace are heap requests made while the plan
        // still holds: each must be granted, or the refused one aborts the process, or hangs
        // it (the allocation-failure hook waits for the backtrace lock the panic holds).
        let boom = || -> bool { panic!("a panic of {} words", words(1)) };
        assert!(std::panic::catch_unwind(|| refusing(boom)).is_err());
        assert!(words(1), "granted after refusing");
        assert!(std::panic::catch_unwind(|| refusing_after(1, boom)).is_err());
        assert!(words(1), "granted after refusing_after");
        assert!(std::panic::catch_unwind(|| refusing_one_after(0, || [words(1), boom()])).is_err());
        assert!(words(1), "granted after refusing_one_after");
        assert!(std::panic::catch_unwind(|| refusing_one_of_size(8, boom)).is_err());
        assert!(words(1), "granted after refusing_one_of_size");
        let pause = Duration::from_millis(1);
        assert!(std::panic::catch_unwind(|| pausing_then_refusing(pause, boom)).is_err());
        assert!(words(1), "granted after pausing_then_refusing");
        return;
    }
    // In a child process, so that one that aborts or hangs fails this test (killed at the
    // deadline) instead of the test binary; with and without backtraces, under the harness's
    // capture of the output as a test run has it.
    for backtrace in ["0", "full"] {
        let out = output_within(
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "plans_whose_call_panics_give_the_thread_back_to_granting_all",
                    "--exact",
                    "--test-threads=1",
                ])
                .env(PANICKING_CHILD, "1")
                .env("RUST_BACKTRACE", backtrace),
            CHILD_DEADLINE,
        )
        .unwrap_or_else(|hung| panic!("RUST_BACKTRACE={backtrace}: {hung}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "RUST_BACKTRACE={backtrace}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
