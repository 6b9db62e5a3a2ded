//! Isolated clients over one region of backing memory.
//!
//! An [`Arena`] is made from one region of [`Backing`] memory (a caller's memory, a heap
//! allocation, or a reserved range of address space committed on demand) and a [`Config`]: chunk
//! size, minimum block size, alignment and [`Flags`]. [`Client`]s made in it allocate and free
//! memory in isolation: each takes whole chunks of the backing, which no other client touches while
//! it holds them, and runs a buddy allocator with size-class slabs over them. A client tells in
//! constant time whether it owns an address and how large a block is; freeing a foreign,
//! interior or already freed address is an error that changes nothing. Deleting a client gives
//! all its chunks back at once, however many blocks it leaked.
//!
//! ```
//! use core::alloc::Layout;
//!
//! use memvisor_arena::allocator_api2::vec::Vec;
//! use memvisor_arena::{Arena, Backing, Config, Error, Flags, Quota};
//!
//! // 8 MiB of backing memory in 1 MiB chunks; new blocks read as zero.
//! let config = Config::new().with_flags(Flags::ZERO | Flags::STATISTICS);
//! let arena = Arena::new(Backing::heap(8 << 20, 4096)?, config)?;
//! assert_eq!(arena.chunk_count(), 8);
//!
//! // Two programs, one of them limited to 64 KiB.
//! let program = arena.create_client(Quota::UNLIMITED)?;
//! let profile = arena.create_client(Quota::bytes(64 << 10))?;
//!
//! let block = program.alloc(Layout::from_size_align(1000, 8).unwrap())?;
//! assert!(program.owns(block.as_ptr()));
//! assert!(!profile.owns(block.as_ptr()));
//! assert_eq!(program.size_of(block.as_ptr())?, 1024);
//!
//! // The other client cannot free it: an error, nothing changes.
//! // SAFETY: `profile` refuses the block, so nothing is freed.
//! let err = unsafe { profile.free(block) }.unwrap_err();
//! assert!(matches!(err, Error::NotOwned { .. }));
//! assert!(program.owns(block.as_ptr()));
//!
//! // Quotas are errors, not panics.
//! let big = Layout::from_size_align(100 << 10, 8).unwrap();
//! assert!(matches!(profile.alloc(big), Err(Error::QuotaExceeded { .. })));
//!
//! // Collections can live inside a client.
//! let mut v = Vec::new_in(&profile);
//! v.extend(0..1000u32);
//! assert!(profile.stats().used_bytes >= 4000);
//! drop(v);
//!
//! // A program that leaks: deleting it returns everything at once.
//! for _ in 0..1000 {
//!     program.alloc(Layout::new::<[u8; 200]>())?;
//! }
//! assert!(arena.stats().held_chunks > 0);
//! arena.delete_client(program);
//! drop(profile);
//! assert_eq!(arena.stats().held_chunks, 0);
//! assert_eq!(arena.stats().used_bytes, Some(0));
//! # Ok::<(), Error>(())
//! ```
//!
//! # Features
//! The crate is `no_std` with `alloc` (for its side tables). The default `std` feature adds
//! arenas over a memvisor-vmem reservation ([`Arena::with_reservation`], [`Backing::reserve`];
//! memvisor-vmem is re-exported as [`memvisor_vmem`] for its `CommitMode` and `Reservation`),
//! which commit a chunk when a client takes it uncommitted (never taken before, decommitted
//! when given back, or by a caller through
#![cfg_attr(feature = "std", doc = "[`Backing::reservation`]),")]
#![cfg_attr(not(feature = "std"), doc = "`Backing::reservation`),")]
//! and can decommit chunks given back
//! ([`Flags::DECOMMIT`]), or the free chunks still committed at any time while clients live
#![cfg_attr(feature = "std", doc = "([`Arena::decommit_free_chunks`]),")]
#![cfg_attr(not(feature = "std"), doc = "(`Arena::decommit_free_chunks`),")]
//! and put a guard page after each chunk ([`Flags::GUARD`]).
//!
//! # Threads
//! [`Arena`] is `Sync`: clients on different threads take and return chunks lock-free. A
//! [`Client`] is `Send` but not `Sync`; `&Client` implements
//! [`Allocator`](allocator_api2::alloc::Allocator) of `allocator-api2` 0.2, which the crate
//! re-exports as [`allocator_api2`]: collections in a client are named through it
//! (`memvisor_arena::allocator_api2::vec::Vec`, as above), with no dependency of the caller's own
//! to keep at the same version. Any thread can free any client's block
//! through the arena ([`Arena::free`]) and ask whose it is ([`Arena::owner_of`]), in constant
//! time; the client takes such blocks back at its next free, trim, or allocation that misses
//! its caches.
//!
//! # Pressure
//! A client keeps at most one chunk without a live block; its other chunks each hold a live
//! block, so its caches of freed blocks never keep more than that one chunk from other
//! clients. A client that finds no chunk left asks the others to trim at their next free, or
//! their next allocation that misses their caches;
//! [`Client::trim`] and [`Arena::trim`] give back what is kept on demand. Blocks larger than a
//! chunk are runs of contiguous whole chunks.
//!
//! See the crate's `DESIGN.md` for the layout, the invariants and the space overheads.

#![no_std]
// Without `std`, the docs' links to what `std` adds (its constructors, its error sources)
// have nothing to point at; the `std` build checks every link.
#![cfg_attr(not(feature = "std"), allow(rustdoc::broken_intra_doc_links))]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod arena;
mod backing;
mod chunks;
mod classes;
mod client;
mod client_ids;
mod config;
mod error;
mod remote_bits;
mod sync;
mod table;
#[cfg(test)]
mod test_rng;

/// The `allocator-api2` crate whose [`Allocator`](allocator_api2::alloc::Allocator) `&Client`
/// implements, so that users name the same version of the trait.
pub use allocator_api2;
pub use arena::{Arena, ArenaStats, MAX_BLOCK_SIZE};
pub use backing::Backing;
pub use client::{Client, ClientStats, POISON_BYTE};
pub use config::{Config, Flags, MAX_CHUNK_SIZE, MAX_MIN_BLOCK, MIN_BLOCK, MIN_CHUNK_SIZE, Quota};
pub use error::{Error, Exhausted, HostTable, Result};
/// The memvisor-vmem crate of the reservations an arena can own ([`Backing::reserve`] takes
/// its `CommitMode`, [`Backing::reservation`] hands out its `Reservation`), so that users name
/// them without a dependency of their own.
#[cfg(feature = "std")]
pub use memvisor_vmem;
