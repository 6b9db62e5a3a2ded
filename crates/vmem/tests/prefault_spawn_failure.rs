//! `prefault_parallel` reports a thread that cannot be started as a typed error instead of
//! panicking. The failure is real: a child process caps its address space (`RLIMIT_AS`) just
//! above what it uses, so a worker's stack cannot be mapped. Linux only.
#![cfg(all(target_os = "linux", feature = "std", not(miri)))]

use std::num::NonZeroUsize;
use std::process::Command;

use memvisor_vmem::{Error, Reservation};

const CHILD_ENV: &str = "MEMVISOR_VMEM_SPAWN_CHILD";

/// The process's mapped address space in bytes (`VmSize`).
fn address_space() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmSize:"))
        .unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Run only as the child of `prefault_parallel_spawn_failure_is_error`.
#[test]
#[ignore = "run as a child process by prefault_parallel_spawn_failure_is_error"]
fn child_prefaults_with_capped_address_space() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let len = 16 << 20;
    let mut r = Reservation::new(len).unwrap();
    r.commit(0, len).unwrap();
    let cap = address_space() + (1 << 20);
    let limit = libc::rlimit {
        rlim_cur: libc::rlim_t::try_from(cap).unwrap(),
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `limit` is a valid rlimit; lowering the soft limit affects only this process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
    let result = r.prefault_parallel(0, len, NonZeroUsize::new(4).unwrap());
    assert!(
        matches!(result, Err(Error::ThreadSpawn { index: 1, .. })),
        "{result:?}"
    );
    // The reservation is still usable and the bookkeeping unchanged.
    assert!(r.is_committed(0, len).unwrap());
    r.prefault(0, len).unwrap();
}

#[test]
fn prefault_parallel_spawn_failure_is_error() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_prefaults_with_capped_address_space",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        // Worker stacks far larger than the headroom the child leaves itself.
        .env("RUST_MIN_STACK", (64 << 20).to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "child failed: {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("1 passed"),
        "child test did not run"
    );
}
