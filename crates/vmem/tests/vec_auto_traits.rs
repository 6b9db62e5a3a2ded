//! The vectors, their iterators, drains, handles and push errors are `Send` / `Sync` exactly
//! when what they give access to allows it, with the same bounds as their `std` counterparts
//! where there is one:
//!
//! | type                        | `Send` when        | `Sync` when        | like              |
//! |-----------------------------|--------------------|--------------------|-------------------|
//! | `Vec<T>`                    | `T: Send`          | `T: Sync`          | `std::vec::Vec`   |
//! | `Drain<T>`                  | `T: Send`          | `T: Sync`          | `std::vec::Drain` |
//! | `IntoIter<T>`               | `T: Send`          | `T: Sync`          | `std::vec::IntoIter` |
//! | `ConcurrentVec<T>`          | `T: Send`          | `T: Send + Sync`   | (pushes via `&self`) |
//! | `Iter<T>`, `Entries<T>`     | `T: Sync`          | `T: Sync`          | `std::slice::Iter` |
//! | `IterMut<T>`                | `T: Send`          | `T: Sync`          | `std::slice::IterMut` |
//! | `ConcurrentIntoIter<T>`     | `T: Send`          | `T: Sync`          | `std::vec::IntoIter` |
//! | `Pusher<T>`                 | `T: Send + Sync`   | `T: Send + Sync`   | `&ConcurrentVec<T>` (its `vec()`) |
//! | `PushError<T>`              | `T: Send`          | `T: Sync`          | holds the `T`     |
//!
//! Each `NotSend` / `NotSync` check below compiles only if the type does *not* have the trait;
//! each `send` / `sync` call compiles only if it does. Element types: `Cell<u8>` is `Send`
//! and not `Sync`, `MutexGuard` is `Sync` and not `Send`, `Rc` is neither.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::MutexGuard;

use memvisor_vmem::vec::{
    Builder, ConcurrentIntoIter, ConcurrentVec, Drain, Entries, Error, Growth, IntoIter, Iter,
    IterMut, PushError, Pusher, Vec,
};

/// `<X as NotSend<_>>::check()` is ambiguous, and fails to compile, when `X: Send`.
trait NotSend<A> {
    fn check() {}
}
impl<T: ?Sized> NotSend<()> for T {}
impl<T: ?Sized + Send> NotSend<u8> for T {}

/// `<X as NotSync<_>>::check()` is ambiguous, and fails to compile, when `X: Sync`.
trait NotSync<A> {
    fn check() {}
}
impl<T: ?Sized> NotSync<()> for T {}
impl<T: ?Sized + Sync> NotSync<u8> for T {}

fn send<X: Send>() {}

fn sync<X: Sync>() {}

fn send_and_sync<X: Send + Sync>() {}

/// Sendable, not shareable.
type Unshared = Cell<u8>;
/// Shareable, not sendable.
type Unsent = MutexGuard<'static, u8>;
/// Neither.
type Local = Rc<u8>;

#[test]
fn owned_vector_is_send_with_sendable_and_sync_with_shareable_elements() {
    send_and_sync::<Vec<u8>>();
    send::<Vec<Unshared>>();
    <Vec<Unshared> as NotSync<_>>::check();
    sync::<Vec<Unsent>>();
    <Vec<Unsent> as NotSend<_>>::check();
    <Vec<Local> as NotSend<_>>::check();
    <Vec<Local> as NotSync<_>>::check();
}

#[test]
fn drain_is_send_with_sendable_and_sync_with_shareable_elements() {
    send_and_sync::<Drain<'static, u8>>();
    send::<Drain<'static, Unshared>>();
    <Drain<'static, Unshared> as NotSync<_>>::check();
    sync::<Drain<'static, Unsent>>();
    <Drain<'static, Unsent> as NotSend<_>>::check();
    <Drain<'static, Local> as NotSend<_>>::check();
    <Drain<'static, Local> as NotSync<_>>::check();
}

#[test]
fn owned_into_iter_is_send_with_sendable_and_sync_with_shareable_elements() {
    send_and_sync::<IntoIter<u8>>();
    send::<IntoIter<Unshared>>();
    <IntoIter<Unshared> as NotSync<_>>::check();
    sync::<IntoIter<Unsent>>();
    <IntoIter<Unsent> as NotSend<_>>::check();
    <IntoIter<Local> as NotSend<_>>::check();
    <IntoIter<Local> as NotSync<_>>::check();
}

#[test]
fn concurrent_vector_is_sync_only_with_elements_both_sendable_and_shareable() {
    send_and_sync::<ConcurrentVec<u8>>();
    send::<ConcurrentVec<Unshared>>();
    <ConcurrentVec<Unshared> as NotSync<_>>::check();
    // Shared, it takes pushes from every thread: the elements must be sendable too.
    <ConcurrentVec<Unsent> as NotSend<_>>::check();
    <ConcurrentVec<Unsent> as NotSync<_>>::check();
    <ConcurrentVec<Local> as NotSend<_>>::check();
    <ConcurrentVec<Local> as NotSync<_>>::check();
}

#[test]
fn shared_iterators_need_only_shareable_elements() {
    send_and_sync::<Iter<'static, u8>>();
    send_and_sync::<Entries<'static, u8>>();
    // They only hand out `&T`, as `std::slice::Iter` does.
    send_and_sync::<Iter<'static, Unsent>>();
    send_and_sync::<Entries<'static, Unsent>>();
    <Iter<'static, Unshared> as NotSend<_>>::check();
    <Iter<'static, Unshared> as NotSync<_>>::check();
    <Entries<'static, Unshared> as NotSend<_>>::check();
    <Entries<'static, Unshared> as NotSync<_>>::check();
    <Iter<'static, Local> as NotSend<_>>::check();
    <Iter<'static, Local> as NotSync<_>>::check();
    <Entries<'static, Local> as NotSend<_>>::check();
    <Entries<'static, Local> as NotSync<_>>::check();
}

#[test]
fn mutable_iterator_is_send_with_sendable_and_sync_with_shareable_elements() {
    send_and_sync::<IterMut<'static, u8>>();
    send::<IterMut<'static, Unshared>>();
    <IterMut<'static, Unshared> as NotSync<_>>::check();
    sync::<IterMut<'static, Unsent>>();
    <IterMut<'static, Unsent> as NotSend<_>>::check();
    <IterMut<'static, Local> as NotSend<_>>::check();
    <IterMut<'static, Local> as NotSync<_>>::check();
}

#[test]
fn concurrent_into_iter_is_send_with_sendable_and_sync_with_shareable_elements() {
    send_and_sync::<ConcurrentIntoIter<u8>>();
    send::<ConcurrentIntoIter<Unshared>>();
    <ConcurrentIntoIter<Unshared> as NotSync<_>>::check();
    sync::<ConcurrentIntoIter<Unsent>>();
    <ConcurrentIntoIter<Unsent> as NotSend<_>>::check();
    <ConcurrentIntoIter<Local> as NotSend<_>>::check();
    <ConcurrentIntoIter<Local> as NotSync<_>>::check();
}

#[test]
fn pusher_needs_what_a_shared_concurrent_vector_needs() {
    // `Pusher::vec` hands out the `&ConcurrentVec`, so moving or sharing a pusher shares the
    // vector: pushes and reads from the other thread.
    send_and_sync::<Pusher<'static, u8>>();
    <Pusher<'static, Unshared> as NotSend<_>>::check();
    <Pusher<'static, Unshared> as NotSync<_>>::check();
    <Pusher<'static, Unsent> as NotSend<_>>::check();
    <Pusher<'static, Unsent> as NotSync<_>>::check();
    <Pusher<'static, Local> as NotSend<_>>::check();
    <Pusher<'static, Local> as NotSync<_>>::check();
}

#[test]
fn push_errors_follow_the_value_they_hand_back() {
    send_and_sync::<PushError<u8>>();
    send::<PushError<Unshared>>();
    <PushError<Unshared> as NotSync<_>>::check();
    sync::<PushError<Unsent>>();
    <PushError<Unsent> as NotSend<_>>::check();
    <PushError<Local> as NotSend<_>>::check();
    <PushError<Local> as NotSync<_>>::check();
}

#[test]
fn options_and_errors_are_send_and_sync() {
    send_and_sync::<Builder>();
    send_and_sync::<Growth>();
    send_and_sync::<Error>();
}

/// A shared iterator moved to another thread reads the elements there, also when they could
/// not be moved themselves.
#[test]
fn shared_iterator_of_unsendable_elements_reads_on_another_thread() {
    let lock = std::sync::Mutex::new(7u8);
    let v = ConcurrentVec::with_capacity(4).unwrap();
    v.push(lock.lock().unwrap());
    let mut iter = v.iter();
    let read = std::thread::scope(|s| s.spawn(move || **iter.next().unwrap()).join().unwrap());
    assert_eq!(read, 7);
}
