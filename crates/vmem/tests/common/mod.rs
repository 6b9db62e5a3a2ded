//! Pieces shared by the integration tests.

use proptest::prelude::ProptestConfig;

/// `cases` proptest cases, or `miri_cases` under Miri, where no failure file is written
/// (Miri's isolation has no working directory), or a quarter of `cases` under the sanitizers,
/// which run each case 5 to 15 times slower.
pub fn proptest_config(cases: u32, miri_cases: u32) -> ProptestConfig {
    if cfg!(memvisor_sanitized) {
        ProptestConfig::with_cases(cases.div_ceil(4))
    } else if cfg!(miri) {
        ProptestConfig {
            cases: miri_cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    } else {
        ProptestConfig::with_cases(cases)
    }
}

/// Reads the first byte of a page without risking a fault: `write(2)` into a pipe reports
/// `EFAULT` for an address the process cannot read.
#[cfg(all(target_os = "linux", not(miri)))]
#[allow(
    dead_code,
    reason = "used by the model tests, not by every file sharing this module"
)]
pub fn probe_read(ptr: *const u8) -> Option<u8> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the kernel checks the address itself and fails with EFAULT rather than fault.
    let wrote = unsafe { libc::write(fds[1], ptr.cast(), 1) };
    let mut byte = 0u8;
    if wrote == 1 {
        // SAFETY: reading one byte into a local.
        assert_eq!(unsafe { libc::read(fds[0], (&raw mut byte).cast(), 1) }, 1);
    }
    // SAFETY: closing our own descriptors.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    (wrote == 1).then_some(byte)
}
