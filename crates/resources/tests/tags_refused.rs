//! A refused tagged allocation or reservation gives its tag back, intact, and leaves the
//! allocator exactly as it was: the `try_` methods of `AddressAllocator` and `AllocatorSet`.
//! Tags here are `Rc`s, which are not `Copy` and whose strong count shows whether one was
//! dropped or cloned and kept.

use std::rc::Rc;

use memvisor_resources::{
    AddressAllocator, AddressRange, AllocPolicy, AllocatorSet, Error, Refused, Request,
};

fn r(start: u64, end: u64) -> AddressRange {
    AddressRange::new(start, end).unwrap()
}

fn req(size: u64, alignment: u64, policy: AllocPolicy) -> Request {
    Request::new(size, alignment, policy).unwrap()
}

/// A tag that is not `Clone`: an owned handle, as a device or a file would be.
#[derive(PartialEq, Eq)]
struct Handle(Rc<u32>);

/// Checks that `refused` carries `error` and the very tag `tag` was made from, and that
/// nobody else holds it.
fn check_back<T>(
    refused: Refused<T>,
    error: Error,
    probe: &Rc<u32>,
    unwrap: impl Fn(T) -> Rc<u32>,
) {
    assert_eq!(refused.error(), error);
    let tag = unwrap(refused.into_tag());
    assert!(Rc::ptr_eq(&tag, probe), "another tag came back");
    // The caller's probe and the tag given back: no copy kept inside, none dropped.
    assert_eq!(Rc::strong_count(probe), 2);
}

/// An allocator over `0x1000..=0x1_0fff` with a reservation at `0x4000..=0x4fff`.
fn pool() -> AddressAllocator<Handle> {
    let mut a = AddressAllocator::new(r(0x1000, 0x1_0fff));
    a.try_reserve_with(r(0x4000, 0x4fff), Handle(Rc::new(0)))
        .unwrap_or_else(|e| panic!("{e}"));
    a
}

fn debug_of(a: &AddressAllocator<Handle>) -> String {
    let ranges: Vec<_> = a.allocated().map(|x| (x.range, *x.tag.0)).collect();
    format!("{:?} {} {:?}", a.space(), a.used(), ranges)
}

#[test]
fn address_try_allocate_with_gives_the_tag_back_on_every_refusal() {
    let cases = [
        // A window reaching past the space.
        (
            req(0x10, 1, AllocPolicy::FirstMatch).within(r(0, 0x1fff)),
            Error::OutsideSpace {
                range: r(0, 0x1fff),
                space: r(0x1000, 0x1_0fff),
            },
        ),
        // An exact range past the end of the space.
        (
            req(0x100, 1, AllocPolicy::ExactMatch(0x1_0f80)),
            Error::OutsideSpace {
                range: r(0x1_0f80, 0x1_107f),
                space: r(0x1000, 0x1_0fff),
            },
        ),
        // An exact range over the reservation.
        (
            req(0x100, 1, AllocPolicy::ExactMatch(0x3f80)),
            Error::Overlap {
                requested: r(0x3f80, 0x407f),
                existing: r(0x4000, 0x4fff),
            },
        ),
        // Nothing free is that large, from either end.
        (
            req(0x1_0000, 1, AllocPolicy::FirstMatch),
            Error::OutOfSpace {
                size: 0x1_0000,
                alignment: 1,
            },
        ),
        (
            req(0x8000, 0x1_0000, AllocPolicy::LastMatch),
            Error::OutOfSpace {
                size: 0x8000,
                alignment: 0x1_0000,
            },
        ),
    ];
    for (request, error) in cases {
        let mut a = pool();
        let before = debug_of(&a);
        let probe = Rc::new(7);
        let refused = a
            .try_allocate_with(&request, Handle(Rc::clone(&probe)))
            .expect_err("refused");
        check_back(refused, error, &probe, |h| h.0);
        assert_eq!(debug_of(&a), before, "{error}");
        a.check_invariants().unwrap();
    }
}

#[test]
fn address_try_reserve_with_gives_the_tag_back_on_every_refusal() {
    let cases = [
        (
            r(0x800, 0x1800),
            Error::OutsideSpace {
                range: r(0x800, 0x1800),
                space: r(0x1000, 0x1_0fff),
            },
        ),
        (
            r(0x4fff, 0x5000),
            Error::Overlap {
                requested: r(0x4fff, 0x5000),
                existing: r(0x4000, 0x4fff),
            },
        ),
        (
            r(0x1000, 0x1_0fff),
            Error::Overlap {
                requested: r(0x1000, 0x1_0fff),
                existing: r(0x4000, 0x4fff),
            },
        ),
    ];
    for (range, error) in cases {
        let mut a = pool();
        let before = debug_of(&a);
        let probe = Rc::new(7);
        let refused = a
            .try_reserve_with(range, Handle(Rc::clone(&probe)))
            .expect_err("refused");
        check_back(refused, error, &probe, |h| h.0);
        assert_eq!(debug_of(&a), before, "{error}");
    }
}

#[test]
fn address_try_methods_place_as_the_plain_ones() {
    let mut a = pool();
    let mut b = pool();
    let requests = [
        req(0x100, 0x100, AllocPolicy::FirstMatch),
        req(0x100, 0x1000, AllocPolicy::LastMatch),
        req(0x10, 1, AllocPolicy::ExactMatch(0x3000)),
    ];
    for (i, request) in (1u32..).zip(requests) {
        let got = a.try_allocate_with(&request, Handle(Rc::new(i))).ok();
        let want = b.allocate_with(&request, Handle(Rc::new(i))).ok();
        assert_eq!(got, want);
    }
    assert!(
        a.try_reserve_with(r(0x5000, 0x50ff), Handle(Rc::new(9)))
            .is_ok()
    );
    assert!(
        b.reserve_with(r(0x5000, 0x50ff), Handle(Rc::new(9)))
            .is_ok()
    );
    assert_eq!(debug_of(&a), debug_of(&b));
    // A granted tag is held by the allocator and comes back on free.
    let probe = Rc::new(3);
    let got = a
        .try_allocate_with(
            &req(0x10, 1, AllocPolicy::FirstMatch),
            Handle(Rc::clone(&probe)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(Rc::strong_count(&probe), 2);
    assert!(Rc::ptr_eq(&a.free(&got).unwrap().0, &probe));
}

#[test]
fn refused_reads_as_its_error_and_converts_to_it() {
    let mut a = pool();
    let refused = a
        .try_reserve_with(r(0x4000, 0x40ff), Handle(Rc::new(5)))
        .expect_err("refused");
    let error = Error::Overlap {
        requested: r(0x4000, 0x40ff),
        existing: r(0x4000, 0x4fff),
    };
    // Display is the error's; Debug needs no `Debug` of the tag.
    assert_eq!(refused.to_string(), error.to_string());
    let debug = format!("{refused:?}");
    assert!(debug.starts_with("Refused"), "{debug}");
    assert!(debug.contains(&format!("{error:?}")), "{debug}");
    assert_eq!(*refused.tag().0, 5);
    let (e, tag) = refused.into_parts();
    assert_eq!((e, *tag.0), (error, 5));

    // `?` turns a refusal into the crate's error (the tag is dropped then).
    fn reserve(a: &mut AddressAllocator<Handle>) -> Result<(), Error> {
        a.try_reserve_with(r(0x4800, 0x48ff), Handle(Rc::new(6)))?;
        Ok(())
    }
    assert!(matches!(reserve(&mut a), Err(Error::Overlap { .. })));
    // And into a boxed error, whose text is the error's.
    fn boxed(a: &mut AddressAllocator<u8>) -> Result<(), Box<dyn std::error::Error>> {
        a.try_reserve_with(r(0, 0x10), 1)?;
        Ok(())
    }
    let mut small = AddressAllocator::<u8>::new(r(0x100, 0x1ff));
    let err = boxed(&mut small).unwrap_err();
    assert_eq!(
        err.to_string(),
        Error::OutsideSpace {
            range: r(0, 0x10),
            space: r(0x100, 0x1ff)
        }
        .to_string()
    );
}

/// Two spaces, not in address order, with a hole between them; a reservation in the first.
fn set() -> AllocatorSet<Rc<u32>> {
    let mut s = AllocatorSet::new(&[r(0x2000, 0x2fff), r(0x0, 0x7ff)]).unwrap();
    s.try_reserve_with(r(0x2800, 0x28ff), Rc::new(0))
        .unwrap_or_else(|e| panic!("{e}"));
    s
}

fn set_debug(s: &AllocatorSet<Rc<u32>>) -> String {
    format!("{s:?}")
}

#[test]
fn set_try_allocate_with_gives_the_tag_back_on_every_refusal() {
    let aligned = AllocatorSet::<Rc<u32>>::new(&[r(0x2000, 0x2fff)])
        .unwrap()
        .with_alignment(0x100, 0x100)
        .unwrap();
    let cases = [
        (
            set(),
            req(0x10, 1, AllocPolicy::ExactMatch(0x1000)),
            Error::OutsideSpace {
                range: r(0x1000, 0x100f),
                space: r(0x2000, 0x2fff),
            },
        ),
        (
            set(),
            req(0x10, 1, AllocPolicy::ExactMatch(0x2000)).within(r(0x2100, 0x2fff)),
            Error::OutsideSpace {
                range: r(0x2000, 0x200f),
                space: r(0x2100, 0x2fff),
            },
        ),
        (
            set(),
            req(0x10, 1, AllocPolicy::FirstMatch).within(r(0x1000, 0x1fff)),
            Error::OutsideSpace {
                range: r(0x1000, 0x1fff),
                space: r(0x2000, 0x2fff),
            },
        ),
        (
            set(),
            req(0x10, 1, AllocPolicy::ExactMatch(0x28f8)),
            Error::Overlap {
                requested: r(0x28f8, 0x2907),
                existing: r(0x2800, 0x28ff),
            },
        ),
        (
            set(),
            req(0x1000, 1, AllocPolicy::FirstMatch),
            Error::OutOfSpace {
                size: 0x1000,
                alignment: 1,
            },
        ),
        (
            set(),
            req(0x900, 0x10, AllocPolicy::LastMatch),
            Error::OutOfSpace {
                size: 0x900,
                alignment: 0x10,
            },
        ),
        (
            aligned,
            req(0x10, 1, AllocPolicy::ExactMatch(0x2010)),
            Error::UnalignedAddress {
                address: 0x2010,
                alignment: 0x100,
            },
        ),
    ];
    for (mut s, request, error) in cases {
        let before = set_debug(&s);
        let probe = Rc::new(7);
        let refused = s
            .try_allocate_with(&request, Rc::clone(&probe))
            .expect_err("refused");
        check_back(refused, error, &probe, |t| t);
        assert_eq!(set_debug(&s), before, "{error}");
        s.check_invariants().unwrap();
    }
}

#[test]
fn set_try_reserve_with_gives_the_tag_back_on_every_refusal() {
    let cases = [
        (
            r(0x1000, 0x1fff),
            Error::OutsideSpace {
                range: r(0x1000, 0x1fff),
                space: r(0x2000, 0x2fff),
            },
        ),
        // Spanning both spaces, its part in the first overlapping the reservation.
        (
            r(0x700, 0x2fff),
            Error::Overlap {
                requested: r(0x700, 0x2fff),
                existing: r(0x2800, 0x28ff),
            },
        ),
    ];
    for (range, error) in cases {
        let mut s = set();
        let before = set_debug(&s);
        let probe = Rc::new(7);
        let refused = s
            .try_reserve_with(range, Rc::clone(&probe))
            .expect_err("refused");
        check_back(refused, error, &probe, |t| t);
        assert_eq!(set_debug(&s), before, "{error}");
    }
    // A granted spanning reservation holds one copy of the tag per part, and no more.
    let mut s = set();
    let probe = Rc::new(8);
    s.try_reserve_with(r(0x700, 0x27ff), Rc::clone(&probe))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(Rc::strong_count(&probe), 3);
    assert!(Rc::ptr_eq(&s.free(&r(0x700, 0x27ff)).unwrap(), &probe));
    assert_eq!(Rc::strong_count(&probe), 1);
}

#[test]
fn set_try_keyed_gives_the_tag_back_on_every_refusal() {
    let mut s = set();
    s.try_allocate_keyed(4, &req(0x10, 1, AllocPolicy::FirstMatch), Rc::new(4))
        .unwrap_or_else(|e| panic!("{e}"));
    let before = set_debug(&s);
    let probe = Rc::new(7);
    let request = req(0x10, 1, AllocPolicy::FirstMatch);
    let refused = s
        .try_allocate_keyed(4, &request, Rc::clone(&probe))
        .expect_err("refused");
    check_back(refused, Error::KeyInUse(4), &probe, |t| t);
    let refused = s
        .try_reserve_keyed(4, r(0x100, 0x1ff), Rc::clone(&probe))
        .expect_err("refused");
    check_back(refused, Error::KeyInUse(4), &probe, |t| t);
    let big = req(0x1000, 1, AllocPolicy::FirstMatch);
    let refused = s
        .try_allocate_keyed(5, &big, Rc::clone(&probe))
        .expect_err("refused");
    check_back(
        refused,
        Error::OutOfSpace {
            size: 0x1000,
            alignment: 1,
        },
        &probe,
        |t| t,
    );
    let refused = s
        .try_reserve_keyed(5, r(0x2100, 0x2fff), Rc::clone(&probe))
        .expect_err("refused");
    check_back(
        refused,
        Error::Overlap {
            requested: r(0x2100, 0x2fff),
            existing: r(0x2800, 0x28ff),
        },
        &probe,
        |t| t,
    );
    assert_eq!(set_debug(&s), before);
    // Granted, the key names the range and the tag comes back on release.
    let got = s
        .try_allocate_keyed(5, &request, Rc::clone(&probe))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.get(5), Some(got));
    assert!(Rc::ptr_eq(&s.release(5).unwrap().1, &probe));
}

/// A tag whose `clone` panics once `budget` copies have been made.
struct Brittle {
    budget: Rc<std::cell::Cell<u32>>,
}

impl Clone for Brittle {
    fn clone(&self) -> Self {
        let left = self.budget.get();
        assert!(left > 0, "no copy of this tag can be made");
        self.budget.set(left - 1);
        Self {
            budget: Rc::clone(&self.budget),
        }
    }
}

#[test]
fn set_spanning_reservation_whose_tag_copy_panics_changes_nothing() {
    // Three spaces: a reservation over all of them needs two copies of its tag.
    let spaces = [r(0x0, 0xfff), r(0x1000, 0x1fff), r(0x2000, 0x2fff)];
    for copies in 0..2 {
        let mut s = AllocatorSet::<Brittle>::new(&spaces).unwrap();
        let budget = Rc::new(std::cell::Cell::new(copies));
        let tag = Brittle {
            budget: Rc::clone(&budget),
        };
        let keyed = copies == 1;
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if keyed {
                s.reserve_keyed(9, r(0x800, 0x27ff), tag)
            } else {
                s.reserve_with(r(0x800, 0x27ff), tag)
            }
        }));
        assert!(panicked.is_err(), "the copy did not panic");
        // Nothing of the reservation is in the set, and it holds no tag.
        assert_eq!(s.used(), 0, "{copies} copies");
        assert_eq!(s.allocated().count(), 0, "{copies} copies");
        assert_eq!(s.get(9), None);
        s.check_invariants().unwrap();
        assert_eq!(Rc::strong_count(&budget), 1, "a copy of the tag is kept");
        // The set still takes the same reservation whole.
        budget.set(2);
        let tag = Brittle {
            budget: Rc::clone(&budget),
        };
        s.reserve_with(r(0x800, 0x27ff), tag)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.used(), 0x2000);
        s.free(&r(0x800, 0x27ff)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.used(), 0);
        s.check_invariants().unwrap();
    }
}

/// A tag whose drop panics while `armed` is set, as a handle whose release asserts would.
#[derive(Clone)]
struct Fragile {
    armed: Rc<std::cell::Cell<bool>>,
}

impl Drop for Fragile {
    fn drop(&mut self) {
        // Disarmed first, so that one drop panics and the unwinding drops of the others do not
        // (a second panic would abort the test).
        assert!(!self.armed.replace(false), "the tag's release failed");
    }
}

#[test]
fn set_free_of_a_spanning_reservation_whose_tag_copy_drop_panics_frees_it_whole() {
    // Three spaces: a reservation over all of them holds two copies of its tag and the tag.
    let spaces = [r(0x0, 0xfff), r(0x1000, 0x1fff), r(0x2000, 0x2fff)];
    for keyed in [false, true] {
        let mut s = AllocatorSet::<Fragile>::new(&spaces).unwrap();
        let armed = Rc::new(std::cell::Cell::new(false));
        let tag = Fragile {
            armed: Rc::clone(&armed),
        };
        let whole = r(0x800, 0x27ff);
        if keyed {
            s.reserve_keyed(9, whole, tag)
        } else {
            s.reserve_with(whole, tag)
        }
        .unwrap_or_else(|e| panic!("{e}"));
        armed.set(true);
        let freed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if keyed {
                s.release(9).map(|(_, tag)| tag)
            } else {
                s.free(&whole)
            }
        }));
        assert!(freed.is_err(), "no copy's drop panicked");
        // The reservation is gone whole: no part, no key, no copy of the tag left inside.
        assert_eq!(s.used(), 0, "keyed: {keyed}");
        assert_eq!(s.allocated().count(), 0, "keyed: {keyed}");
        assert_eq!(s.get(9), None);
        assert_eq!(Rc::strong_count(&armed), 1, "a copy of the tag is kept");
        s.check_invariants().unwrap();
        // The same range can be reserved again, under the same key.
        let tag = Fragile {
            armed: Rc::clone(&armed),
        };
        s.reserve_keyed(9, whole, tag)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.release(9).map(|(range, _)| range), Ok(whole));
        assert_eq!(s.used(), 0);
    }
}
