//! The vectors, their iterators, drains, handles and push errors are `Send` / `Sync` only when
//! their elements allow it: each `NotSend` / `NotSync` check below compiles only if the type
//! does *not* have the trait. The last test checks the other way: each type has the traits
//! when its elements do.

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

/// Sendable, not shareable.
type Unshared = Cell<u8>;
/// Shareable, not sendable.
type Unsent = MutexGuard<'static, u8>;

#[test]
fn owned_vector_types_follow_their_elements() {
    <Vec<Rc<u8>> as NotSend<_>>::check();
    <Vec<Rc<u8>> as NotSync<_>>::check();
    <Vec<Unshared> as NotSync<_>>::check();
    <Vec<Unsent> as NotSend<_>>::check();
    <Drain<'static, Unsent> as NotSend<_>>::check();
    <Drain<'static, Unshared> as NotSync<_>>::check();
    <IntoIter<Unsent> as NotSend<_>>::check();
    <IntoIter<Unshared> as NotSync<_>>::check();
    <IntoIter<Rc<u8>> as NotSend<_>>::check();
    <IntoIter<Rc<u8>> as NotSync<_>>::check();
    <Drain<'static, Rc<u8>> as NotSend<_>>::check();
    <Drain<'static, Rc<u8>> as NotSync<_>>::check();
}

#[test]
fn concurrent_vector_types_follow_their_elements() {
    <ConcurrentVec<Unsent> as NotSend<_>>::check();
    <ConcurrentVec<Unsent> as NotSync<_>>::check();
    <ConcurrentVec<Unshared> as NotSync<_>>::check();
    <Iter<'static, Unshared> as NotSend<_>>::check();
    <Iter<'static, Unshared> as NotSync<_>>::check();
    <Iter<'static, Unsent> as NotSend<_>>::check();
    <Iter<'static, Unsent> as NotSync<_>>::check();
    <Entries<'static, Unshared> as NotSend<_>>::check();
    <Entries<'static, Unshared> as NotSync<_>>::check();
    <Entries<'static, Unsent> as NotSend<_>>::check();
    <Entries<'static, Unsent> as NotSync<_>>::check();
    <IterMut<'static, Unsent> as NotSend<_>>::check();
    <IterMut<'static, Unsent> as NotSync<_>>::check();
    <IterMut<'static, Unshared> as NotSync<_>>::check();
    <ConcurrentIntoIter<Unsent> as NotSend<_>>::check();
    <ConcurrentIntoIter<Unsent> as NotSync<_>>::check();
    <ConcurrentIntoIter<Unshared> as NotSync<_>>::check();
    <Pusher<'static, Unshared> as NotSend<_>>::check();
    <Pusher<'static, Unsent> as NotSend<_>>::check();
    <Pusher<'static, Unshared> as NotSync<_>>::check();
    <Pusher<'static, Unsent> as NotSync<_>>::check();
}

#[test]
fn push_errors_follow_the_value_they_hand_back() {
    <PushError<Rc<u8>> as NotSend<_>>::check();
    <PushError<Rc<u8>> as NotSync<_>>::check();
    <PushError<Unsent> as NotSend<_>>::check();
    <PushError<Unshared> as NotSync<_>>::check();
}

fn send_and_sync<X: Send + Sync>() {}

fn send<X: Send>() {}

#[test]
fn every_type_is_send_and_sync_when_its_elements_are() {
    send_and_sync::<Vec<u8>>();
    send_and_sync::<Drain<'static, u8>>();
    send_and_sync::<IntoIter<u8>>();
    send_and_sync::<ConcurrentVec<u8>>();
    send_and_sync::<Iter<'static, u8>>();
    send_and_sync::<Entries<'static, u8>>();
    send_and_sync::<IterMut<'static, u8>>();
    send_and_sync::<ConcurrentIntoIter<u8>>();
    send_and_sync::<Pusher<'static, u8>>();
    send_and_sync::<PushError<u8>>();
    send_and_sync::<Builder>();
    send_and_sync::<Growth>();
    send_and_sync::<Error>();
    // Owning types only need their elements to be sendable to be sent, as std's do.
    send::<Vec<Unshared>>();
    send::<IntoIter<Unshared>>();
    send::<Drain<'static, Unshared>>();
    send::<ConcurrentVec<Unshared>>();
    send::<ConcurrentIntoIter<Unshared>>();
    send::<IterMut<'static, Unshared>>();
}
