//! The lock of the tests that take huge pages from the host's pool.

/// Holds the lock every test of the workspace that takes huge pages from the host's pool takes
/// (the test runner starts each test in its own process, several at once), so tests that count
/// the pool's pages see only their own.
#[allow(
    clippy::incompatible_msrv,
    reason = "tests are built with the current toolchain; the minimum version is the libraries'"
)]
pub fn huge_page_lock() -> std::fs::File {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("memvisor-hugetlb-tests.lock"))
        .unwrap();
    file.lock().unwrap();
    file
}
