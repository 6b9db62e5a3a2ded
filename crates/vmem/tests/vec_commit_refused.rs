//! Growth the system refuses: a vector whose commit fails gets a typed [`Error::Commit`] and is
//! left as it was (a `Vec` exactly; a `ConcurrentVec` with the documented hole of the failed
//! push), and goes on working afterwards.
//!
//! The refusal is real: in [`CommitMode::Protected`] committing makes private pages writable,
//! which Linux charges against its commit limit, and under the default heuristic overcommit
//! (`vm.overcommit_memory` 0) or strict accounting (2) a single commit larger than the
//! machine's memory and swap is refused. Where no such commit fits the address space (a 32-bit
//! process on a machine of more than 512 MiB) or the system overcommits without limit (1), the
//! process's data limit (`RLIMIT_DATA`, which counts private writable mappings) is lowered to
//! what it uses plus 32 MiB instead, and a commit of 64 MiB is refused; where the kernel ignores
//! that limit too, the tests say so and return.
#![cfg(all(target_os = "linux", not(miri)))]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use memvisor_vmem::vec::{Builder, ConcurrentVec, Error, Growth, Vec};
use memvisor_vmem::{CommitMode, Operation};

/// What the data limit leaves the process above what it used when it was lowered.
const DATA_MARGIN: u64 = 32 << 20;

/// A byte count no single commit can get, once: twice the machine's memory and swap, rounded up
/// to a power of two, where that fits a quarter of the address space and the system refuses
/// what it cannot give; else 64 MiB, over a data limit lowered for it. `None` when neither can
/// be refused.
fn refused_bytes() -> Option<usize> {
    static REFUSED: OnceLock<Option<usize>> = OnceLock::new();
    *REFUSED.get_or_init(|| {
        let mode = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").ok()?;
        let meminfo = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
        let kib = |key: &str| -> u64 {
            let line = meminfo
                .lines()
                .find(|l| l.starts_with(key))
                .unwrap_or_else(|| panic!("a {key} line"));
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        let total = (kib("MemTotal:") + kib("SwapTotal:")) * 1024;
        match usize::try_from((2 * total).next_power_of_two()) {
            Ok(bytes) if mode.trim() != "1" && bytes <= usize::MAX / 4 => Some(bytes),
            _ => lower_data_limit(),
        }
    })
}

/// Lowers the process's data limit to its data size plus [`DATA_MARGIN`] and returns twice the
/// margin, a commit the limit refuses; `None` (said) where the kernel does not enforce it.
fn lower_data_limit() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let data_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmData:"))
        .and_then(|l| l.split_whitespace().next())
        .expect("a VmData line")
        .parse()
        .unwrap();
    let limit = data_kib * 1024 + DATA_MARGIN;
    let rlimit = libc::rlimit {
        rlim_cur: libc::rlim_t::try_from(limit).unwrap(),
        rlim_max: libc::RLIM_INFINITY,
    };
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid `rlimit` to write.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_DATA, &raw mut old) };
    assert_eq!(got, 0);
    let rlimit = libc::rlimit {
        rlim_cur: rlimit.rlim_cur.min(old.rlim_cur),
        rlim_max: old.rlim_max,
    };
    // SAFETY: a valid `rlimit` for the calling process.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_DATA, &raw const rlimit) };
    assert_eq!(set, 0);
    let bytes = usize::try_from(2 * DATA_MARGIN).unwrap();
    // SAFETY: a fresh private anonymous mapping, unmapped at once if made.
    let probe = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if probe == libc::MAP_FAILED {
        return Some(bytes);
    }
    // SAFETY: the mapping just made, used by nothing.
    unsafe { libc::munmap(probe, bytes) };
    eprintln!("SKIPPED: the system overcommits without limit and does not enforce RLIMIT_DATA");
    None
}

/// Asserts that `e` is the system's refusal of a commit.
fn assert_refused(e: &Error) {
    match e {
        Error::Commit { source, len, .. } => {
            assert!(*len > 0);
            assert!(
                matches!(
                    source,
                    memvisor_vmem::Error::Os {
                        operation: Operation::Commit,
                        ..
                    }
                ),
                "{source:?}"
            );
        }
        other => panic!("expected a commit error, got {other:?}"),
    }
}

#[test]
fn vec_growth_refused_leaves_vector_unchanged_and_usable() {
    let Some(huge) = refused_bytes() else { return };
    let mut v = Builder::new(huge)
        .mode(CommitMode::Protected)
        .build::<u8>()
        .unwrap();
    v.extend([1, 2, 3]);
    let state = |v: &Vec<u8>| (v.len(), v.committed_capacity(), v.committed_bytes());
    let before = state(&v);

    assert_refused(&v.try_reserve(huge - 3).unwrap_err());
    assert_eq!(state(&v), before);

    // The panicking forms refuse before anything moves.
    assert!(catch_unwind(AssertUnwindSafe(|| v.resize(huge, 9))).is_err());
    assert!(catch_unwind(AssertUnwindSafe(|| v.reserve(huge - 3))).is_err());
    assert_eq!(state(&v), before);
    assert_eq!(v, [1, 2, 3]);

    // Still grows by ordinary steps.
    v.extend(4..=200);
    assert_eq!(v.len(), 200);
    assert_eq!(v[199], 200);
}

#[test]
fn vec_push_commit_refused_hands_value_back_and_changes_nothing() {
    let Some(huge) = refused_bytes() else { return };
    // Every growth step asks for the whole slot region at once.
    let mut v = Builder::new(huge)
        .growth(Growth::Fixed(huge))
        .build::<String>()
        .unwrap();
    let e = v.try_push(String::from("kept")).unwrap_err();
    assert_refused(e.error());
    assert_eq!(e.into_value(), "kept");
    let e = v.try_insert(0, String::from("again")).unwrap_err();
    assert_refused(e.error());
    assert_eq!(e.into_value(), "again");
    assert_refused(&v.try_extend_from_slice(&[String::from("a")]).unwrap_err());
    let mut other = Vec::with_capacity(4).unwrap();
    other.push(String::from("moved"));
    assert_refused(&v.try_append(&mut other).unwrap_err());
    assert_eq!(other, ["moved"]);
    assert!(v.is_empty());
    assert_eq!((v.committed_capacity(), v.committed_bytes()), (0, 0));
    assert_eq!(v.reservation().committed_bytes(), 0);
}

#[test]
fn concurrent_reserve_refused_leaves_vector_unchanged_and_usable() {
    let Some(huge) = refused_bytes() else { return };
    let v = ConcurrentVec::<u8>::with_capacity(huge).unwrap();
    v.push(1);
    let (len, committed) = (v.len(), v.committed_capacity());
    assert_refused(&v.reserve(huge - 1).unwrap_err());
    assert_eq!((v.len(), v.committed_capacity()), (len, committed));
    assert_eq!(v.push(2), 1);
    assert_eq!(v.iter().copied().collect::<std::vec::Vec<_>>(), [1, 2]);
}

#[test]
fn concurrent_push_commit_refused_leaves_a_hole_never_read() {
    let Some(huge) = refused_bytes() else { return };
    let v = Builder::new(huge)
        .growth(Growth::Fixed(huge))
        .thread_block(1)
        .build_concurrent::<String>()
        .unwrap();
    let e = v.try_push(String::from("back")).unwrap_err();
    assert_refused(e.error());
    assert_eq!(e.into_value(), "back");
    // The constructor is not called when the commit is refused.
    let e = v
        .try_push_with(|_| -> String { panic!("constructor called") })
        .unwrap_err();
    assert_refused(&e);
    assert_refused(v.pusher().try_push(String::from("p")).unwrap_err().error());
    // The claimed slots are holes: counted by `len`, never read, never dropped.
    assert!(v.len() >= 2);
    assert_eq!(v.count(), 0);
    assert_eq!(v.committed_capacity(), 0);
    assert!(v.get(0).is_none() && v.get(1).is_none());
    assert_eq!(v.iter().count(), 0);
}
