//! Growth the system refuses: a vector whose commit fails gets a typed [`Error::Commit`] and is
//! left as it was (a `Vec` exactly; a `ConcurrentVec` with the documented hole of the failed
//! push), and goes on working afterwards.
//!
//! The refusal is real: in [`CommitMode::Protected`] committing makes private pages writable,
//! which Linux charges against its commit limit, and under the default heuristic overcommit
//! (`vm.overcommit_memory` 0) or strict accounting (2) a single commit larger than the
//! machine's memory and swap is refused. With overcommit always allowed (1) nothing is refused,
//! so the tests say so and return.
#![cfg(all(target_os = "linux", not(miri)))]

use std::panic::{AssertUnwindSafe, catch_unwind};

use memvisor_vmem::vec::{Builder, ConcurrentVec, Error, Growth, Vec};
use memvisor_vmem::{CommitMode, Operation};

/// A byte count no single commit can get: twice the machine's memory and swap, rounded up to
/// a power of two; `None` when the system overcommits without limit.
fn refused_bytes() -> Option<usize> {
    let mode = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").ok()?;
    if mode.trim() == "1" {
        eprintln!("SKIPPED: vm.overcommit_memory is 1, the system refuses no commit");
        return None;
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    let kib = |key: &str| -> usize {
        let line = meminfo
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("a {key} line"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let total = (kib("MemTotal:") + kib("SwapTotal:")) * 1024;
    Some((2 * total).next_power_of_two())
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
