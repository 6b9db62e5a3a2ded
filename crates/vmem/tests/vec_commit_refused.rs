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
//! that limit too, the tests say so and return. The tests take turns, and each restores the limit
//! when it ends (or fails), so no other test of the binary runs under it.
#![cfg(all(target_os = "linux", not(miri)))]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, MutexGuard, PoisonError};

use memvisor_vmem::vec::{Builder, ConcurrentVec, Error, Growth, Vec};
use memvisor_vmem::{CommitMode, Operation};

/// What the data limit leaves the process above what it used when it was lowered.
const DATA_MARGIN: u64 = 32 << 20;

/// Turns of the tests that need a refusal: one at a time, so that none restores the data limit
/// while another relies on it lowered.
static TURN: Mutex<()> = Mutex::new(());

/// A commit the system refuses, of [`bytes`](Self::bytes), while this is held. Where that needs
/// the process's data limit lowered, holding it keeps the limit lowered, and dropping it (at the
/// end of the test, or while a failed test unwinds) restores the limit it found; it holds
/// [`TURN`] meanwhile, so the tests' threads run under the lowered limit only while one is held.
struct Refusal {
    bytes: usize,
    /// The limit to restore, where it was lowered.
    restore: Option<libc::rlimit>,
    _turn: MutexGuard<'static, ()>,
}

impl Drop for Refusal {
    fn drop(&mut self) {
        if let Some(old) = self.restore {
            // SAFETY: a valid `rlimit` for the calling process, the one `getrlimit` gave.
            let set = unsafe { libc::setrlimit(libc::RLIMIT_DATA, &raw const old) };
            // Not an assertion: a panic here while unwinding would abort the test binary.
            if set != 0 {
                eprintln!(
                    "RLIMIT_DATA not restored: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

/// A commit no single commit can get: twice the machine's memory and swap, rounded up to a power
/// of two, where that fits a quarter of the address space and the system refuses what it cannot
/// give; else 64 MiB, over a data limit lowered for it while the [`Refusal`] is held. `None`
/// when neither can be refused.
fn refused() -> Option<Refusal> {
    let turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
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
        Ok(bytes) if mode.trim() != "1" && bytes <= usize::MAX / 4 => Some(Refusal {
            bytes,
            restore: None,
            _turn: turn,
        }),
        _ => lower_data_limit(turn),
    }
}

/// The process's data limit.
fn data_limit() -> libc::rlimit {
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `now` is a valid `rlimit` to write.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_DATA, &raw mut now) };
    assert_eq!(got, 0);
    now
}

/// Lowers the process's data limit to its data size plus [`DATA_MARGIN`] and returns a
/// [`Refusal`] of twice the margin, which restores the limit when dropped; `None` (said, and the
/// limit restored) where the kernel does not enforce it.
fn lower_data_limit(turn: MutexGuard<'static, ()>) -> Option<Refusal> {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let data_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmData:"))
        .and_then(|l| l.split_whitespace().next())
        .expect("a VmData line")
        .parse()
        .unwrap();
    let limit = data_kib * 1024 + DATA_MARGIN;
    let old = data_limit();
    let rlimit = libc::rlimit {
        rlim_cur: libc::rlim_t::try_from(limit).unwrap().min(old.rlim_cur),
        rlim_max: old.rlim_max,
    };
    // SAFETY: a valid `rlimit` for the calling process.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_DATA, &raw const rlimit) };
    assert_eq!(set, 0);
    let refusal = Refusal {
        bytes: usize::try_from(2 * DATA_MARGIN).unwrap(),
        restore: Some(old),
        _turn: turn,
    };
    // SAFETY: a fresh private anonymous mapping, unmapped at once if made.
    let probe = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            refusal.bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if probe == libc::MAP_FAILED {
        return Some(refusal);
    }
    // SAFETY: the mapping just made, used by nothing.
    unsafe { libc::munmap(probe, refusal.bytes) };
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
    let Some(refusal) = refused() else { return };
    let huge = refusal.bytes;
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
    let Some(refusal) = refused() else { return };
    let huge = refusal.bytes;
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
    let Some(refusal) = refused() else { return };
    let huge = refusal.bytes;
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
    let Some(refusal) = refused() else { return };
    let huge = refusal.bytes;
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

/// The data limit lowered for a refusal is the process's only while the refusal is held: the
/// tests before, beside and after it run under the limit they found (a failure's backtrace,
/// under a limit left lowered, could not be printed and the test binary hung). Run here whatever
/// the system's overcommit mode, so the lowered limit's refusal is checked everywhere.
#[test]
fn data_limit_lowered_for_a_refusal_is_restored() {
    // Read under the lock: another test holding it may have the limit lowered.
    let turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let before = data_limit();
    {
        let Some(refusal) = lower_data_limit(turn) else {
            return;
        };
        assert!(data_limit().rlim_cur <= before.rlim_cur);
        let mut v = Builder::new(refusal.bytes)
            .mode(CommitMode::Protected)
            .build::<u8>()
            .unwrap();
        assert_refused(&v.try_reserve(refusal.bytes).unwrap_err());
    }
    // Dropping the refusal let go of the turn: take it again, so that no other test has the
    // limit lowered while it is read.
    let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let after = data_limit();
    assert_eq!(
        (after.rlim_cur, after.rlim_max),
        (before.rlim_cur, before.rlim_max)
    );
}
