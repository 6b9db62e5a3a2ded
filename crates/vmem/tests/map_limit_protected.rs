//! In protected mode scattered commits split the mapping until the system's limit on the
//! number of mappings (`vm.max_map_count`) is reached. In its own test binary, because it
//! drives this process to the limit on purpose. Linux only: the limit is read from `/proc`.
#![cfg(all(target_os = "linux", not(miri)))]

use memvisor_vmem::{Error, Operation, Reservation, page_size};

/// In protected mode each scattered commit splits the mapping; when the system's limit is
/// reached the commit fails with a typed error carrying the OS code, and the bookkeeping says
/// the page is not committed.
#[test]
fn protected_scattered_commits_fail_cleanly_at_map_limit() {
    let limit: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let page = page_size();
    let commits = limit / 2 + 1_000;
    let r = Reservation::new(2 * commits * page).unwrap();
    let mut failed_at = None;
    for i in 0..commits {
        match r.commit(2 * i * page, page) {
            Ok(()) => {}
            Err(Error::Os {
                operation: Operation::Commit,
                source,
            }) => {
                assert_eq!(source.raw(), libc::ENOMEM);
                assert!(!r.is_committed(2 * i * page, page).unwrap());
                failed_at = Some(i);
                break;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    let failed_at = failed_at.expect("the mapping limit was never reached");
    assert!(failed_at > limit / 4, "failed too early, at {failed_at}");
    assert_eq!(r.committed_bytes(), failed_at * page);
    drop(r);
    // The limit is released with the reservation.
    Reservation::new(page).unwrap().commit(0, page).unwrap();
}
