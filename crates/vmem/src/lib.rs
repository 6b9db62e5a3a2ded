//! Host virtual memory for virtual machine monitors.
//!
//! A [`Reservation`] takes a range of the process's address space without committing any
//! memory; page-aligned parts of it are then committed, decommitted (memory and commit charge
//! go back to the system at once), prefaulted (made resident for real), protected, locked,
//! turned into guard pages, advised to use transparent huge pages, and asked which of their
//! pages are resident. Every range argument is checked and a bad one is a typed [`Error`],
//! never a panic; OS failures keep their error code.
//!
//! Two [`CommitMode`]s choose how commits meet the system's limit on the number of mappings:
//! [`CommitMode::Protected`] keeps uncommitted pages inaccessible, [`CommitMode::Sparse`]
//! keeps one mapping whatever the pattern of commits. See the crate's `DESIGN.md`.
//!
//! ```
//! use memvisor_vmem::{Reservation, page_size};
//!
//! let page = page_size();
//! // 1 GiB of address space, nothing committed.
//! let mut r = Reservation::builder().alignment(2 << 20).reserve(1 << 30)?;
//! r.commit(0, 16 * page)?;
//! r.prefault(0, 16 * page)?;
//! assert_eq!(r.resident_pages(0, 16 * page)?, 16);
//! // Bad input is an error, not a panic.
//! assert!(r.commit(1, page).is_err());
//! r.decommit(0, 16 * page)?;
//! assert_eq!(r.resident_pages(0, 16 * page)?, 0);
//! # Ok::<(), memvisor_vmem::Error>(())
//! ```
//!
//! The [`vec`] module builds on reservations: vectors that grow in place without moving,
//! one with a single owner that also gives memory back, and one that many threads push into
//! without a lock.
//!
//! The crate is `no_std` (with `alloc`). The default `std` feature adds what needs threads or
//! the standard library: [`Reservation::prefault_parallel`] and
//! [`Reservation::prefault_parallel_with`]; `MapSource::file` (Unix); the per-thread blocks
//! that a [`vec::ConcurrentVec`]'s plain pushes claim once threads interleave (which also need
//! 64-bit atomics; without them every plain push claims one slot, and a [`vec::Pusher`] claims
//! blocks either way); a reservation's call lock that waits by sleeping, where without `std` it
//! spins; the system's message for an [`OsError`] in its `Display`; the conversion of an
//! [`OsError`] into `std::io::Error`; and, on Windows, the message on standard error before the
//! process is aborted because a dropped reservation could not be unmapped (Unix writes it
//! either way).

#![no_std]
// Without `std`, the docs' links to what `std` adds (its constructors, its error sources)
// have nothing to point at; the `std` build checks every link.
#![cfg_attr(not(feature = "std"), allow(rustdoc::broken_intra_doc_links))]

extern crate alloc;
// Unit tests use the standard library (threads, files, the thread-local failure hooks) also
// when the crate is built without it.
#[cfg(any(feature = "std", test))]
extern crate std;

mod bitmap;
mod error;
mod page;
mod reservation;
mod sync;
mod sys;
pub mod vec;

pub use error::{Error, Operation, OsError, Result};
pub use page::{allocation_granularity, page_size};
#[cfg(unix)]
pub use reservation::FileSource;
pub use reservation::{
    Advice, CommitMode, HugePageAdvice, HugeTlbSize, MapSource, NUMA_NODES, NumaPolicy, Protection,
    Reservation, ReservationBuilder,
};
