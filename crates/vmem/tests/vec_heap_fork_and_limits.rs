//! A language VM's heap of several vectors, as the process meets what such heaps meet: a
//! `fork` (the child reads and grows its copies while the parent grows its own) and an address
//! space limit (`RLIMIT_AS`) that refuses the next reservation (skipped under a sanitizer,
//! whose runtime maps memory of its own). Each test runs in a child
//! process of its own (memvisor-testkit's `in_child`): `fork` is made from a process with one
//! thread, and the limit, which cannot be raised again, stays with that process. Linux on
//! x86-64, where the child-process support is.
#![cfg(all(
    target_os = "linux",
    target_arch = "x86_64",
    feature = "std",
    not(miri)
))]

use memvisor_testkit::refused_calls::{in_child, under_sanitizer};
use memvisor_vmem::vec::{Builder, ConcurrentVec, Error, Vec};

const FORK_CHILD: &str = "MEMVISOR_VMEM_HEAP_FORK_CHILD";
const LIMIT_CHILD: &str = "MEMVISOR_VMEM_HEAP_LIMIT_CHILD";

/// Elements in each vector when the process forks, and pushed by each side after.
const BEFORE: usize = 100_000;
const AFTER: usize = 300_000;

/// A heap of 512 MiB of reservation per vector, grown in steps.
fn heap() -> (Vec<u64>, ConcurrentVec<u64>) {
    let v = Builder::new(1 << 26).build::<u64>().unwrap();
    let c = Builder::new(1 << 26).build_concurrent::<u64>().unwrap();
    (v, c)
}

/// Checks that `v` and `c` hold `0..n` and then `n` values of `mark` (and nothing else).
fn check(v: &Vec<u64>, c: &ConcurrentVec<u64>, n: usize, more: usize, mark: u64) -> bool {
    let expected = (0..n as u64).chain(std::iter::repeat_n(mark, more));
    v.len() == n + more
        && v.iter().copied().eq(expected.clone())
        && c.len() == n + more
        && c.iter().copied().eq(expected)
}

#[test]
fn fork_child_reads_and_grows_its_copy_while_the_parent_grows() {
    if std::env::var_os(FORK_CHILD).is_none() {
        in_child(
            "fork_child_reads_and_grows_its_copy_while_the_parent_grows",
            FORK_CHILD,
            "fork checked",
        );
        return;
    }
    let (mut v, c) = heap();
    for i in 0..BEFORE as u64 {
        v.push(i);
        c.push(i);
    }
    let mut go = [0; 2];
    // SAFETY: `go` is a valid array of two descriptors to write.
    assert_eq!(unsafe { libc::pipe(go.as_mut_ptr()) }, 0);
    // SAFETY: this process has one thread (the test runs alone in it); the child uses the
    // vectors (no lock of theirs is held) and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // The child waits until the parent grew its copies, then reads and grows its own.
        let mut byte = 0u8;
        // SAFETY: reads one byte into `byte`.
        let got = unsafe { libc::read(go[0], (&raw mut byte).cast(), 1) };
        let mut ok = got == 1 && check(&v, &c, BEFORE, 0, 0);
        for _ in 0..AFTER {
            ok &= v.try_push(7).is_ok() && c.try_push(7).is_ok();
        }
        ok &= check(&v, &c, BEFORE, AFTER, 7);
        // SAFETY: leaves the child without running the parent's exit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    // The parent grows its copies past what was committed at the fork, then lets the child go.
    for _ in 0..AFTER {
        v.push(9);
        c.push(9);
    }
    // SAFETY: writes one byte from a live local.
    assert_eq!(unsafe { libc::write(go[1], [1u8].as_ptr().cast(), 1) }, 1);
    let mut status = 0;
    // SAFETY: waits for the child made above.
    assert_eq!(unsafe { libc::waitpid(pid, &raw mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child saw other contents than its own (status {status:#x})"
    );
    assert!(check(&v, &c, BEFORE, AFTER, 9));
    println!("fork checked");
}

/// The process's virtual memory size, from `/proc/self/status`.
fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    kib * 1024
}

#[test]
fn heap_past_an_address_space_limit_is_refused_typed_and_goes_on() {
    if std::env::var_os(LIMIT_CHILD).is_none() {
        if under_sanitizer() {
            eprintln!("SKIPPED: a sanitizer's runtime maps memory the limit would refuse");
            return;
        }
        in_child(
            "heap_past_an_address_space_limit_is_refused_typed_and_goes_on",
            LIMIT_CHILD,
            "limit checked",
        );
        return;
    }
    // Room for three vectors of 256 MiB of reservation more than the process has now.
    let vector = 256u64 << 20;
    let limit = libc::rlimit {
        rlim_cur: vm_size() + 3 * vector + vector / 2,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid `rlimit` for this process.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_AS, &raw const limit) };
    assert_eq!(set, 0);
    let capacity = usize::try_from(vector).unwrap() / 8 - 1024;
    let mut heap: std::vec::Vec<Vec<u64>> = (0..3)
        .map(|_| Builder::new(capacity).build::<u64>().unwrap())
        .collect();
    for (i, v) in heap.iter_mut().enumerate() {
        v.extend(0..10_000);
        v.push(i as u64);
    }
    // A fourth is refused with the system's error, typed, for either kind of vector.
    for refused in [
        Builder::new(capacity).build::<u64>().err(),
        Builder::new(capacity).build_concurrent::<u64>().err(),
    ] {
        match refused {
            Some(Error::Reserve {
                source: memvisor_vmem::Error::Os { source, .. },
                ..
            }) => assert_eq!(source.raw(), libc::ENOMEM),
            other => panic!("expected the system's refusal, got {other:?}"),
        }
    }
    // The vectors there go on growing, and freeing one makes room for another.
    for v in &mut heap {
        v.extend(0..100_000);
    }
    drop(heap.pop());
    let c = Builder::new(capacity).build_concurrent::<u64>().unwrap();
    for value in 0..100_000 {
        c.push(value);
    }
    assert_eq!(c.count(), 100_000);
    assert!(heap.iter().all(|v| v.len() == 110_001));
    println!("limit checked");
}
