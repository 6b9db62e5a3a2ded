//! The vectors, their iterators, drains and handles are `Send` / `Sync` only when their
//! elements allow it. Each check below compiles only if the type does *not* have the trait.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::MutexGuard;

use memvisor_vmem::vec::{
    ConcurrentIntoIter, ConcurrentVec, Drain, Entries, IntoIter, Iter, IterMut, Pusher, Vec,
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
