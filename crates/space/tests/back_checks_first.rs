//! `SpaceBuilder::back` checks every spec (slot numbers, NUMA nodes, files) before it makes any
//! memory: a mistake in a later spec costs no earlier spec its mapping and prefault. Alone in
//! its file so that the process's peak resident memory is this test's own.
#![cfg(target_os = "linux")]

use std::path::PathBuf;

use memvisor_space::{AddressSpace, Backing, Error, Layout, NumaBinding, RegionSpec};
use vm_memory::GuestAddress;

const MIB: u64 = 1 << 20;

/// The process's peak resident memory, in KiB.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
#[cfg_attr(miri, ignore = "reads /proc and prefaults 256 MiB")]
fn back_refuses_a_later_spec_before_making_an_earlier_one() {
    let big = || RegionSpec::ram(GuestAddress(0), 256 * MIB).with_prefault_threads(1);
    let small = || RegionSpec::ram(GuestAddress(1 << 30), 4096);
    let builder = || AddressSpace::builder(Layout::x86_64().ram(2 << 30).build().unwrap());
    let missing = PathBuf::from("/nonexistent/memvisor-space-test-file");
    let before = peak_kib();

    let err = builder()
        .slots(1)
        .region(big())
        .region(small())
        .back()
        .unwrap_err();
    assert!(matches!(err, Error::NoSlotNumber { count: 1 }), "{err}");

    let err = builder()
        .region(big())
        .region(small().with_numa(NumaBinding::bind(999)))
        .back()
        .unwrap_err();
    assert!(
        matches!(err, Error::NumaNodeMissing { node: 999, .. }),
        "{err}"
    );

    let err = builder()
        .region(big())
        .region(small().with_backing(Backing::File {
            path: missing.clone(),
            offset: 0,
        }))
        .back()
        .unwrap_err();
    assert!(
        matches!(&err, Error::File { path, .. } if *path == missing),
        "{err}"
    );

    let grown = peak_kib() - before;
    assert!(
        grown < 64 << 10,
        "peak resident memory grew by {grown} KiB: an earlier region was made first"
    );
    // The same first spec alone is made and prefaulted: the figure above can tell.
    let (space, _) = builder().region(big()).back().unwrap();
    assert!(peak_kib() - before >= 200 << 10);
    drop(space);
}
