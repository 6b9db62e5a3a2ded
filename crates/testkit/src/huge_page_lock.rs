//! The lock that the tests taking huge pages from the host's pool hold, across test binaries
//! and crates: the test runner starts each test in its own process, several at once, and the
//! pool is shared by the whole host, so tests that count the pool's pages must see only their
//! own.

use std::fs::{File, OpenOptions};

/// Waits for, then holds, the lock (a file in the temporary folder, the same for every test
/// binary); held until the file returned is dropped.
///
/// # Panics
///
/// If the lock file cannot be opened or locked.
pub fn huge_page_lock() -> File {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("memvisor-hugetlb-tests.lock"))
        .unwrap();
    file.lock().unwrap();
    file
}
