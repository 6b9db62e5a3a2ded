//! `vec::Vec` against `std::vec::Vec` over random operations, including the calls that panic in
//! std (indices and ranges out of bounds) and the ones that panic here only at the capacity:
//! every call gives the same result, panics where std panics (and only there, below the
//! capacity), and leaves the same elements, each dropped exactly once.

mod common;

use std::cmp::Ordering;
use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use memvisor_vmem::vec::{Builder, Growth, Vec};
use proptest::prelude::*;

/// The largest number of elements the vector under test holds.
const CAP: usize = 40;

/// An element that counts its live copies through the strong count of a shared token.
#[derive(Clone)]
struct Counted(
    u8,
    #[allow(dead_code, reason = "held for its strong count, never read")] Rc<()>,
);

impl PartialEq for Counted {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Counted {}
impl PartialOrd for Counted {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Counted {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}
impl Hash for Counted {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}
impl fmt::Debug for Counted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[derive(Clone, Debug)]
enum Op {
    Push(u8),
    Pop,
    Insert(usize, u8),
    Remove(usize),
    SwapRemove(usize),
    Truncate(usize),
    Retain(u8),
    RetainMut(u8),
    Dedup,
    DedupByKey(u8),
    Drain(Bound<usize>, Bound<usize>, usize, usize),
    Resize(usize, u8),
    ExtendFromSlice(std::vec::Vec<u8>),
    Extend(std::vec::Vec<u8>),
    ExtendFromWithin(Bound<usize>, Bound<usize>),
    SplitOffAppend(usize, bool),
    Index(usize),
    IntoIter(usize, usize),
    Compare(usize, u8),
    Shrink,
    Clear,
}

/// Indices around the length and the capacity, and at the top of `usize`.
fn index() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..CAP + 3,
        1 => Just(usize::MAX),
        1 => Just(usize::MAX - 1),
    ]
}

fn bound() -> impl Strategy<Value = Bound<usize>> {
    prop_oneof![
        index().prop_map(Bound::Included),
        index().prop_map(Bound::Excluded),
        Just(Bound::Unbounded),
    ]
}

fn items() -> impl Strategy<Value = std::vec::Vec<u8>> {
    proptest::collection::vec(0u8..4, 0..12)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4).prop_map(Op::Push),
        1 => Just(Op::Pop),
        2 => (index(), 0u8..4).prop_map(|(i, x)| Op::Insert(i, x)),
        2 => index().prop_map(Op::Remove),
        2 => index().prop_map(Op::SwapRemove),
        1 => index().prop_map(Op::Truncate),
        1 => (1u8..4).prop_map(Op::Retain),
        1 => (1u8..4).prop_map(Op::RetainMut),
        1 => Just(Op::Dedup),
        1 => (1u8..4).prop_map(Op::DedupByKey),
        2 => (bound(), bound(), 0usize..4, 0usize..4).prop_map(|(a, b, f, k)| Op::Drain(a, b, f, k)),
        1 => (index(), 0u8..4).prop_map(|(n, x)| Op::Resize(n, x)),
        1 => items().prop_map(Op::ExtendFromSlice),
        1 => items().prop_map(Op::Extend),
        1 => (bound(), bound()).prop_map(|(a, b)| Op::ExtendFromWithin(a, b)),
        1 => (index(), any::<bool>()).prop_map(|(at, back)| Op::SplitOffAppend(at, back)),
        1 => index().prop_map(Op::Index),
        1 => (0usize..4, 0usize..4).prop_map(|(f, b)| Op::IntoIter(f, b)),
        1 => (0usize..CAP + 1, 0u8..4).prop_map(|(n, x)| Op::Compare(n, x)),
        1 => Just(Op::Shrink),
        1 => Just(Op::Clear),
    ]
}

fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

fn values(v: &[Counted]) -> std::vec::Vec<u8> {
    v.iter().map(|c| c.0).collect()
}

/// Runs `f`, telling whether it panicked; the expected panics are not printed (the other tests
/// of this file panic only when they fail, whose message may then be lost).
fn panics<R>(f: impl FnOnce() -> R) -> Result<R, ()> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = catch_unwind(AssertUnwindSafe(f)).map_err(|_| ());
    std::panic::set_hook(hook);
    result
}

proptest! {
    #![proptest_config(common::proptest_config(64, 1))]
    #[test]
    #[cfg_attr(miri, ignore = "minutes under Miri (each case catches dozens of panics); the \
        editing paths also run under Miri in vec_owned.rs")]
    fn vec_behaves_as_std_vec(ops in proptest::collection::vec(op(), 0..80)) {
        let token = Rc::new(());
        let c = |x: u8| Counted(x, Rc::clone(&token));
        let mut ours: Vec<Counted> = Builder::new(CAP).growth(Growth::Fixed(1)).build().unwrap();
        let mut model: std::vec::Vec<Counted> = std::vec::Vec::new();
        for op in ops {
            let len = model.len();
            let before = values(&model);
            // What std does with the call; `None` where it would take the vector past the
            // capacity, where ours must panic (or refuse) and change nothing.
            match op {
                Op::Push(x) => {
                    let r = panics(|| ours.push(c(x)));
                    if len < CAP {
                        prop_assert!(r.is_ok());
                        model.push(c(x));
                    } else {
                        prop_assert!(r.is_err());
                    }
                }
                Op::Pop => prop_assert_eq!(ours.pop(), model.pop()),
                Op::Insert(i, x) => {
                    let r = panics(|| ours.insert(i, c(x)));
                    if i > len {
                        prop_assert!(r.is_err());
                        prop_assert!(panics(|| model.insert(i, c(x))).is_err());
                    } else if len < CAP {
                        prop_assert!(r.is_ok());
                        model.insert(i, c(x));
                    } else {
                        prop_assert!(r.is_err());
                    }
                }
                Op::Remove(i) => {
                    let got = panics(|| ours.remove(i)).ok();
                    let want = panics(|| model.remove(i)).ok();
                    prop_assert_eq!(got, want);
                }
                Op::SwapRemove(i) => {
                    let got = panics(|| ours.swap_remove(i)).ok();
                    let want = panics(|| model.swap_remove(i)).ok();
                    prop_assert_eq!(got, want);
                }
                Op::Truncate(n) => {
                    ours.truncate(n);
                    model.truncate(n);
                }
                Op::Retain(m) => {
                    ours.retain(|x| x.0 % m != 0);
                    model.retain(|x| x.0 % m != 0);
                }
                Op::RetainMut(m) => {
                    let f = |x: &mut Counted| {
                        x.0 = (x.0 + 1) % 4;
                        !x.0.is_multiple_of(m)
                    };
                    ours.retain_mut(f);
                    model.retain_mut(f);
                }
                Op::Dedup => {
                    ours.dedup();
                    model.dedup();
                }
                Op::DedupByKey(m) => {
                    ours.dedup_by_key(|x| x.0 / m);
                    model.dedup_by_key(|x| x.0 / m);
                }
                Op::Drain(a, b, front, back) => {
                    let take = |d: &mut dyn DoubleEndedIterator<Item = Counted>| {
                        let mut got: std::vec::Vec<u8> = d.take(front).map(|c| c.0).collect();
                        got.extend(d.rev().take(back).map(|c| c.0));
                        got
                    };
                    // What it lends after yielding from both ends, through `as_slice` and
                    // `AsRef`, and its `Debug` before and after.
                    let got = panics(|| {
                        let mut d = ours.drain((a, b));
                        let debug = format!("{d:?}");
                        let taken = take(&mut d);
                        let rest: std::vec::Vec<u8> = d.as_slice().iter().map(|c| c.0).collect();
                        let lent: std::vec::Vec<u8> = d.as_ref().iter().map(|c| c.0).collect();
                        (taken, debug, d.len(), rest, lent, format!("{d:?}"))
                    });
                    let want = panics(|| {
                        let mut d = model.drain((a, b));
                        let debug = format!("{d:?}");
                        let taken = take(&mut d);
                        let rest: std::vec::Vec<u8> = d.as_slice().iter().map(|c| c.0).collect();
                        let lent: std::vec::Vec<u8> = d.as_ref().iter().map(|c| c.0).collect();
                        (taken, debug, d.len(), rest, lent, format!("{d:?}"))
                    });
                    prop_assert_eq!(got.ok(), want.ok());
                }
                Op::Resize(n, x) => {
                    let r = panics(|| ours.resize(n, c(x)));
                    if n <= CAP {
                        prop_assert!(r.is_ok());
                        model.resize(n, c(x));
                    } else {
                        prop_assert!(r.is_err());
                    }
                }
                Op::ExtendFromSlice(xs) => {
                    let xs: std::vec::Vec<Counted> = xs.into_iter().map(c).collect();
                    let r = panics(|| ours.extend_from_slice(&xs));
                    if len + xs.len() <= CAP {
                        prop_assert!(r.is_ok());
                        model.extend_from_slice(&xs);
                    } else {
                        prop_assert!(r.is_err());
                    }
                }
                Op::Extend(xs) => {
                    let r = panics(|| ours.extend(xs.iter().map(|&x| c(x))));
                    // Documented: at the capacity the elements appended before stay.
                    model.extend(xs.iter().take(CAP - len).map(|&x| c(x)));
                    prop_assert_eq!(r.is_err(), len + xs.len() > CAP);
                }
                Op::ExtendFromWithin(a, b) => {
                    let r = panics(|| ours.extend_from_within((a, b)));
                    let mut copy = model.clone();
                    let w = panics(|| copy.extend_from_within((a, b)));
                    if w.is_err() {
                        prop_assert!(r.is_err());
                    } else if copy.len() <= CAP {
                        prop_assert!(r.is_ok());
                        model = copy;
                    } else {
                        prop_assert!(r.is_err());
                    }
                }
                Op::SplitOffAppend(at, back) => {
                    let got = panics(|| ours.split_off(at));
                    let want = panics(|| model.split_off(at));
                    prop_assert_eq!(got.is_ok(), want.is_ok());
                    if let (Ok(mut tail), Ok(mut model_tail)) = (got, want) {
                        prop_assert_eq!(&tail, &model_tail);
                        prop_assert_eq!(tail.capacity(), CAP);
                        if back {
                            ours.append(&mut tail);
                            model.append(&mut model_tail);
                            prop_assert!(tail.is_empty());
                        }
                    }
                }
                Op::Index(i) => {
                    let got = panics(|| ours[i].0).ok();
                    let want = panics(|| model[i].0).ok();
                    prop_assert_eq!(got, want);
                    prop_assert_eq!(ours.get(i).map(|c| c.0), model.get(i).map(|c| c.0));
                }
                Op::IntoIter(front, back) => {
                    let mut it = ours.clone().into_iter();
                    let mut want = model.clone().into_iter();
                    for _ in 0..front {
                        prop_assert_eq!(it.next(), want.next());
                    }
                    for _ in 0..back {
                        prop_assert_eq!(it.next_back(), want.next_back());
                    }
                    prop_assert_eq!(it.len(), want.len());
                    prop_assert_eq!(it.as_slice(), want.as_slice());
                    prop_assert_eq!(AsRef::<[Counted]>::as_ref(&it), want.as_ref());
                    prop_assert_eq!(format!("{it:?}"), format!("{want:?}"));
                    // A write through the lent slice is what the next yield from either end
                    // gives.
                    if let Some(x) = it.as_mut_slice().first_mut() {
                        x.0 = x.0.wrapping_add(100);
                    }
                    if let Some(x) = it.as_mut_slice().last_mut() {
                        x.0 = x.0.wrapping_add(1);
                    }
                    if let Some(x) = want.as_mut_slice().first_mut() {
                        x.0 = x.0.wrapping_add(100);
                    }
                    if let Some(x) = want.as_mut_slice().last_mut() {
                        x.0 = x.0.wrapping_add(1);
                    }
                    prop_assert_eq!(it.as_mut_slice(), want.as_mut_slice());
                    prop_assert_eq!(it.next_back(), want.next_back());
                    prop_assert_eq!(it.next(), want.next());
                    prop_assert_eq!(it.as_slice(), want.as_slice());
                }
                Op::Compare(n, x) => {
                    let mut other: Vec<Counted> = Vec::with_capacity(CAP).unwrap();
                    other.extend(model.iter().take(n).cloned());
                    if n < len {
                        other.push(c(x));
                    }
                    let model_other: std::vec::Vec<Counted> = other.iter().cloned().collect();
                    prop_assert_eq!(ours == other, model == model_other);
                    prop_assert_eq!(ours.partial_cmp(&other), model.partial_cmp(&model_other));
                    prop_assert_eq!(ours.cmp(&other), model.cmp(&model_other));
                    prop_assert_eq!(ours < other, model < model_other);
                    prop_assert_eq!(hash_of(&ours), hash_of(&model));
                }
                Op::Shrink => {
                    ours.shrink_to_fit().unwrap();
                    model.shrink_to_fit();
                }
                Op::Clear => {
                    ours.clear();
                    model.clear();
                }
            }
            prop_assert_eq!(values(&ours), values(&model), "before: {:?}", before);
            prop_assert_eq!(format!("{ours:?}"), format!("{model:?}"));
            prop_assert!(ours.len() <= ours.committed_capacity());
            // Every element is alive once in each vector, and nothing else holds the token.
            prop_assert_eq!(Rc::strong_count(&token), 1 + ours.len() + model.len());
        }
    }
}

#[test]
fn comparisons_take_the_forms_std_vec_takes() {
    let mut a: Vec<i32> = Vec::with_capacity(4).unwrap();
    let mut b: Vec<i32> = Vec::with_capacity(4).unwrap();
    a.extend([1, 2]);
    b.extend([1, 3]);
    assert!(a < b);
    assert!(b > a);
    assert!(a <= a.clone());
    assert_eq!(a.cmp(&b), Ordering::Less);
    assert_eq!(a.partial_cmp(&b), Some(Ordering::Less));
    assert_eq!(std::cmp::max(a.clone(), b.clone()), [1, 3]);
    let mut nested = [b.clone(), a.clone()];
    nested.sort();
    assert_eq!(nested, [a.clone(), b.clone()]);
    // The right-hand sides have the types std's `Vec` is compared with.
    let mut plain = [1, 2];
    let as_mut: &mut [i32] = &mut plain;
    assert!(a == as_mut);
    let two: &[i32; 2] = &[1, 2];
    let three: &[i32; 3] = &[1, 2, 3];
    assert!(a == two);
    assert!(a != three);
}

#[test]
fn slices_and_std_vectors_compare_with_it_from_the_left() {
    let mut v: Vec<i32> = Vec::with_capacity(4).unwrap();
    v.extend([1, 2]);
    let std_vec = vec![1, 2];
    let mut plain = [1, 2];
    let slice: &[i32] = &plain;
    assert!(slice == v);
    assert!(*slice == v);
    assert!(std_vec == v);
    let as_mut: &mut [i32] = &mut plain;
    assert!(as_mut == v);
    assert!(vec![1, 3] != v);
}

#[test]
fn moving_iterators_lend_their_rest_as_std_ones_do() {
    fn rest<S: AsRef<[i32]>>(s: &S) -> std::vec::Vec<i32> {
        s.as_ref().to_vec()
    }
    let mut v: Vec<i32> = Vec::with_capacity(8).unwrap();
    v.extend([1, 2, 3, 4, 5]);
    {
        let mut drain = v.drain(1..4);
        assert_eq!(drain.next(), Some(2));
        assert_eq!(rest(&drain), [3, 4]);
    }
    assert_eq!(v, [1, 5]);
    let mut it = v.into_iter();
    assert_eq!(it.next(), Some(1));
    it.as_mut_slice()[0] = 50;
    assert_eq!(rest(&it), [50]);
    assert_eq!(it.next(), Some(50));
    assert!(it.as_mut_slice().is_empty());
}

#[test]
fn moving_iterators_lend_their_rest_after_yielding_from_both_ends() {
    fn rest<S: AsRef<[String]>>(s: &S) -> std::vec::Vec<&str> {
        s.as_ref().iter().map(String::as_str).collect()
    }
    let words = ["a", "b", "c", "d", "e", "f", "g"].map(String::from);
    let mut v: Vec<String> = Vec::with_capacity(8).unwrap();
    v.extend(words.iter().cloned());
    let mut model = words.to_vec();
    {
        let mut drain = v.drain(1..6);
        let mut want = model.drain(1..6);
        assert_eq!(drain.next_back(), want.next_back());
        assert_eq!(drain.next(), want.next());
        assert_eq!(rest(&drain), rest(&want));
        assert_eq!(rest(&drain), ["c", "d", "e"]);
        assert_eq!(drain.next_back(), want.next_back());
        assert_eq!(rest(&drain), rest(&want));
    }
    assert_eq!(v, model);
    v.extend(["h", "i"].map(String::from));
    model.extend(["h", "i"].map(String::from));
    let mut it = v.into_iter();
    let mut want = model.into_iter();
    assert_eq!(it.next_back(), want.next_back());
    assert_eq!(it.next(), want.next());
    assert_eq!(rest(&it), rest(&want));
    // Elements replaced through the lent slice are dropped in place of the old ones, and are
    // what the next yields give.
    for s in [it.as_mut_slice(), want.as_mut_slice()] {
        s[0] = String::from("first");
        *s.last_mut().unwrap() = String::from("last");
    }
    assert_eq!(rest(&it), ["first", "last"]);
    assert_eq!(it.next_back().as_deref(), Some("last"));
    assert_eq!(rest(&it), ["first"]);
    assert_eq!(it.next(), want.next());
    assert!(it.as_mut_slice().is_empty());
    assert_eq!(it.next_back(), None);
}
