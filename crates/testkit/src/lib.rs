//! Test support for the memvisor crates' tests, one module per helper, so that each is written
//! once: heaps that refuse or count requests ([`refusing_heap`], [`counting_heap`]), a deadlock
//! watchdog ([`watchdog`]), the lock the tests that take the host's huge pages share
//! ([`huge_page_lock`]), the process's resident memory ([`resident`]), a child process run
//! within a deadline with its output read as it runs ([`child_process`]) and system calls the
//! kernel refuses on demand, one at a time (`refused_calls`, Linux on x86-64).
//!
//! It is a dev-dependency only and depends on no memvisor crate, so every crate of the
//! workspace can use it without a cycle. A global allocator is the test binary's own: this
//! crate exports the type, and each test file declares the `#[global_allocator]` static.
//!
//! ```
//! use std::time::Duration;
//!
//! use memvisor_testkit::watchdog::within;
//!
//! // A call that might deadlock runs on its own thread; the test fails instead of hanging.
//! assert_eq!(within("an addition", Duration::from_secs(10), || 2 + 2), 4);
//! ```

pub mod child_process;
pub mod counting_heap;
pub mod huge_page_lock;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod refused_calls;
pub mod refusing_heap;
#[cfg(target_os = "linux")]
pub mod resident;
pub mod watchdog;
