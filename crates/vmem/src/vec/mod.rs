//! Vectors that grow in place inside a [`Reservation`](crate::Reservation): the address space
//! for the maximum capacity is reserved once, and memory is committed as they grow, so they
//! never reallocate and element addresses never change.
//!
//! - [`Vec`] has one owner. It works like `std::vec::Vec` (push, pop, insert, remove, retain,
//!   drain, … and a slice through `Deref`), and gives memory back: [`Vec::shrink_to_fit`] decommits
//!   the pages past its last element.
//! - [`ConcurrentVec`] is shared: [`ConcurrentVec::push`] takes `&self`, is lock-free (but for the
//!   pushes that commit memory to grow, which take turns with the reservation's other page changes)
//!   and returns the new element's index; [`ConcurrentVec::get`] never sees a half-written element.
//!   It costs one bit per element beyond the element itself.
//!
//! Both are made by [`Builder`] (or `with_capacity`), which fixes the capacity, the [`Growth`]
//! policy (how much is committed at a time), the start's alignment and the
//! [`CommitMode`](crate::CommitMode). Memory is sized from the element's real size and
//! alignment: zero-sized and over-aligned element types work, and no slot lies outside the
//! reservation.
//!
//! ```
//! use memvisor_vmem::vec::{Builder, ConcurrentVec, Error, Growth, Vec};
//!
//! // One owner: up to 65,536 elements, committed 64 KiB at a time.
//! let mut v = Builder::new(1 << 16).growth(Growth::Fixed(64 << 10)).build::<u32>()?;
//! v.extend(0..10);
//! v.retain(|x| x % 3 == 0);
//! assert_eq!(v, [0, 3, 6, 9]);
//! assert!(v.try_push(1).is_ok());
//!
//! // Full vectors hand the value back.
//! let mut small = Vec::with_capacity(1)?;
//! small.push("one");
//! let err = small.try_push("two").unwrap_err();
//! assert!(matches!(err.error(), Error::CapacityExceeded { capacity: 1, .. }));
//!
//! // Shared: pushes from many threads, stable references.
//! let shared = ConcurrentVec::with_capacity(1 << 12)?;
//! std::thread::scope(|s| {
//!     for t in 0..2 {
//!         let shared = &shared;
//!         s.spawn(move || {
//!             for i in 0..100 {
//!                 shared.push(t * 100 + i);
//!             }
//!         });
//!     }
//! });
//! assert_eq!(shared.len(), 200);
//! assert_eq!(shared.iter().sum::<i32>(), (0..200).sum());
//! # Ok::<(), Error>(())
//! ```
//!
//! The invariants and the concurrent protocol are in `src/vec/DESIGN.md`.

mod builder;
mod concurrent;
mod error;
mod iter;
mod layout;
mod owned;

pub use builder::{Builder, Growth};
/// Loom models only: makes the next `count` commits of a `ConcurrentVec`'s slots on this
/// thread fail with [`Error::Commit`].
#[cfg(loom)]
#[doc(hidden)]
pub use concurrent::refuse_commits;
pub use concurrent::{
    ConcurrentVec, Entries, IntoIter as ConcurrentIntoIter, Iter, IterMut, Pusher,
};
pub use error::{Error, PushError, Result};
pub use iter::{Drain, IntoIter};
pub use owned::Vec;
