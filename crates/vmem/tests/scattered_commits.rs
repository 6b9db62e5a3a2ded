//! Scattered single-page commits do not run into the system's limit on the number of mappings
//! (`vm.max_map_count`) in sparse mode.

use memvisor_vmem::{CommitMode, Reservation, page_size};

/// 100,000 single-page commits, every other page of one reservation: all succeed in sparse
/// mode, where commits never split the mapping.
#[test]
fn sparse_scattered_commits_all_succeed() {
    let commits = if cfg!(miri) { 64 } else { 100_000 };
    let page = page_size();
    let mut r = Reservation::builder()
        .mode(CommitMode::Sparse)
        .reserve(2 * commits * page)
        .unwrap();
    for i in 0..commits {
        r.commit(2 * i * page, page).unwrap();
    }
    assert_eq!(r.committed_bytes(), commits * page);
    // Every committed page is usable; the pages between stay uncommitted.
    for i in (0..commits).step_by(997) {
        // SAFETY: page 2i is committed read-write.
        unsafe { r.as_ptr().add(2 * i * page).write(1) };
        assert!(!r.is_committed((2 * i + 1) * page, page).unwrap());
    }
    // Decommitting them one by one works as well.
    for i in 0..commits {
        r.decommit(2 * i * page, page).unwrap();
    }
    assert_eq!(r.committed_bytes(), 0);
}
