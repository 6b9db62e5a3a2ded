//! `libmemvisor`: the C library over [`memvisor_arena`], for virtual machines written in C.
//!
//! A *context* is made from one memory block (or a reservation committed on demand) and a
//! configuration; it hands out *clients*, each of which allocates in isolation and frees all
//! it holds when deleted, however much it leaked. Every function returns a
//! [`Status`](status::Status) code; outputs go through pointers. The C header,
//! `include/memvisor.h`, is generated from this crate by cbindgen; the crate's `README.md`
//! maps each concept of a libvmma-style API to its function.
//!
//! The functions are also callable from Rust (they are `extern "C"` items of the `rlib`):
//!
//! ```
//! use std::ffi::c_void;
//! use std::ptr;
//!
//! use memvisor::status::Status;
//! use memvisor::types::{Client, Context, MEMVISOR_UNLIMITED};
//! use memvisor::*;
//!
//! let mut memory = vec![0u8; 4 << 20];
//! let mut context = Context::default();
//! let mut program = Client::default();
//! let mut p: *mut c_void = ptr::null_mut();
//! // SAFETY: `memory` outlives the context and nothing else uses it; every out pointer is
//! // valid.
//! unsafe {
//!     let block = memory.as_mut_ptr().cast();
//!     let status = memvisor_context_create(block, memory.len(), ptr::null(), &mut context);
//!     assert_eq!(status, Status::Ok);
//!     assert_eq!(memvisor_client_create(context, MEMVISOR_UNLIMITED, &mut program), Status::Ok);
//!     assert_eq!(memvisor_alloc(program, 100, &mut p), Status::Ok);
//!     let mut size = 0;
//!     assert_eq!(memvisor_size_of(program, p, &mut size), Status::Ok);
//!     assert_eq!(size, 112);
//!     // A context with a live client cannot be deleted.
//!     assert_eq!(memvisor_context_delete(context), Status::ContextBusy);
//!     // Deleting the client frees the block it leaked; its handle is then refused.
//!     assert_eq!(memvisor_client_delete(program), Status::Ok);
//!     assert_eq!(memvisor_alloc(program, 100, &mut p), Status::InvalidHandle);
//!     assert_eq!(memvisor_context_delete(context), Status::Ok);
//! }
//! ```
//!
//! # Handles
//! Handles are small structures holding a kind (context or client), a slot index and a
//! generation. Slots live in tables that are never freed, so a null, deleted or forged handle,
//! or a handle of the other kind, is refused (`MEMVISOR_STATUS_INVALID_HANDLE`) without reading
//! freed memory. A forged handle that guesses a live slot's kind, index and generation exactly
//! cannot be told from the real one.
//!
//! # Panics
//! No panic crosses the boundary: every function catches it and returns
//! `MEMVISOR_STATUS_INTERNAL`.
//!
//! # Threads
//! Context functions may be called from any thread at any time; a client is used by one thread
//! at a time. Each function's documentation (and the header) says which applies. No function
//! is async-signal-safe, and a call must be left by its return: a signal handler that
//! `longjmp`s out of it, or the thread's cancellation inside it, may leave a lock held or a
//! context half-changed (the header's opening comment says what a handler may do). After `fork()`,
//! the child may use its copies of the contexts and clients only if no call of the library was
//! running on another thread at the fork (a lock that thread held would never be released in the
//! child); the header's opening comment says what the child gets.
//!
//! In Rust every function that works on a client is `unsafe`, with that rule in its `# Safety`
//! section, since two calls on one client at once are a data race. `memvisor_client_delete` is
//! too: a handle is a number that any code can copy or make up, so a safe delete would let
//! safe code end a client that another thread is in a call on, or whose blocks their owner
//! still uses, and no other function's contract could rule that out. Two deletes of one client
//! may still race (one wins, the other gets `InvalidHandle`). So safe code cannot call, say,
//! `memvisor_client_trim` from two threads:
//!
//! ```compile_fail
//! use memvisor::status::Status;
//! use memvisor::types::Client;
//!
//! let trim: extern "C" fn(Client) -> Status = memvisor::memvisor_client_trim;
//! ```
//!
//! nor delete a client, whose handle it may have copied or made up:
//!
//! ```compile_fail,E0133
//! // Guards against a safe delete: it would end the client under another thread's call on it,
//! // or under blocks their owner still uses.
//! let client = memvisor::types::Client { id: 1 };
//! memvisor::memvisor_client_delete(client);
//! ```

pub mod client;
pub mod context;
#[cfg(test)]
mod handle_sweep;
pub mod library;
mod ranges;
mod registry;
pub mod status;
mod table;
pub mod types;

pub use client::*;
pub use context::*;
pub use library::*;
