//! Differential test of the calls memvisor shares with vm-allocator 0.1.4 that the workload
//! tests (`vm_allocator_diff.rs`, `vm_allocator_small_spaces.rs`) do not reach: the checks of a
//! request (`Request::new` against `Constraint::new`), of an address space
//! (`AddressAllocator::with_base_and_size` against `AddressAllocator::new`), of an ID range
//! (`IdAllocator::new`), `allocate` with arguments `Constraint::new` refuses, and the range type
//! (`AddressRange` against `RangeInclusive`: its constructor, length, `overlaps` and `contains`),
//! on values drawn mostly from the edges (0, 1, powers of two up to 2^63, `u64::MAX` and its
//! neighbours). Where the answers differ on purpose, the crate's docs say so, and the test checks
//! the difference is exactly that one.

use memvisor_resources::{
    AddressAllocator, AddressRange, AllocPolicy, Error, IdAllocator, Request,
};
use proptest::prelude::*;
use vm_allocator::{
    AddressAllocator as VmAddr, AllocPolicy as VmPolicy, Constraint, Error as VmError,
    IdAllocator as VmIds, RangeInclusive as VmRange,
};

const CASES: u32 = if cfg!(miri) { 16 } else { 4_000 };

/// `CASES` cases; under Miri, which cannot read the working directory, no failure files.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(CASES);
    if cfg!(miri) {
        config.failure_persistence = None;
    }
    config
}

/// A `u64` from the edges most of the time: 0 and its neighbours, powers of two and their
/// neighbours, `u64::MAX` and its neighbours; any value otherwise.
fn edge() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => 0u64..=4,
        2 => (0u64..=4).prop_map(|d| u64::MAX - d),
        3 => (0u32..64, 0u8..3).prop_map(|(p, k)| match k {
            0 => 1u64 << p,
            1 => (1u64 << p) - 1,
            _ => (1u64 << p) + 1,
        }),
        2 => any::<u64>(),
    ]
}

/// A `u32` from the edges most of the time.
fn edge32() -> impl Strategy<Value = u32> {
    prop_oneof![
        2 => 0u32..=4,
        2 => (0u32..=4).prop_map(|d| u32::MAX - d),
        1 => (0u32..32).prop_map(|p| 1u32 << p),
        1 => any::<u32>(),
    ]
}

fn policies(addr: u64) -> [(AllocPolicy, VmPolicy); 3] {
    [
        (AllocPolicy::FirstMatch, VmPolicy::FirstMatch),
        (AllocPolicy::LastMatch, VmPolicy::LastMatch),
        (AllocPolicy::ExactMatch(addr), VmPolicy::ExactMatch(addr)),
    ]
}

/// `Request::new` against `Constraint::new`: the same three checks in the same order, plus one
/// of memvisor's own, documented (`Error::Overflow` for an exact range past `u64::MAX`, which
/// vm-allocator accepts and its `allocate` refuses later).
fn request_answers_as_constraint(size: u64, align: u64, addr: u64) -> Result<(), TestCaseError> {
    for (policy, vm_policy) in policies(addr) {
        let ours = Request::new(size, align, policy);
        let theirs = Constraint::new(size, align, vm_policy);
        match (&ours, &theirs) {
            (Ok(r), Ok(c)) => {
                // The one difference is made: an exact range past `u64::MAX` is never taken.
                prop_assert!(
                    !matches!(policy, AllocPolicy::ExactMatch(_))
                        || addr.checked_add(size - 1).is_some(),
                    "{size:#x} at {addr:#x} accepted past u64::MAX"
                );
                prop_assert_eq!((r.size(), r.alignment()), (c.size(), c.align()));
                prop_assert_eq!(r.policy(), policy);
                prop_assert_eq!(r.window(), None);
            }
            (Err(Error::ZeroSize), Err(VmError::InvalidSize(0)))
            | (Err(Error::InvalidAlignment(_)), Err(VmError::InvalidAlignment))
            | (Err(Error::UnalignedAddress { .. }), Err(VmError::UnalignedAddress)) => {}
            (Err(Error::Overflow { start, size: s }), Ok(_)) => {
                prop_assert_eq!((*start, *s), (addr, size));
                prop_assert!(matches!(policy, AllocPolicy::ExactMatch(_)));
                prop_assert!(addr.checked_add(size - 1).is_none());
            }
            _ => prop_assert!(
                false,
                "{size:#x} {align:#x} {policy:?}: ours {ours:?}, vm-allocator {theirs:?}"
            ),
        }
        if let Err(Error::InvalidAlignment(a)) = ours {
            prop_assert_eq!(a, align);
        }
        if let Err(Error::UnalignedAddress { address, alignment }) = ours {
            prop_assert_eq!((address, alignment), (addr, align));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn request_checks_are_constraint_checks(size in edge(), align in edge(), addr in edge()) {
        request_answers_as_constraint(size, align, addr)?;
    }

    /// The same space, or both refuse: a size of 0, or a space past `u64::MAX`.
    #[test]
    fn address_space_checks_are_vm_allocator_checks(base in edge(), size in edge()) {
        let ours = AddressAllocator::<()>::with_base_and_size(base, size);
        let theirs = VmAddr::new(base, size);
        match (&ours, &theirs) {
            (Ok(a), Ok(v)) => {
                prop_assert_eq!((a.space().start(), a.space().end()), (v.base(), v.end()));
                prop_assert_eq!(a.available(), u128::from(size));
                prop_assert_eq!(a.used(), 0);
            }
            (Err(Error::ZeroSize), Err(VmError::Underflow)) => prop_assert_eq!(size, 0),
            (Err(Error::Overflow { start, size: s }), Err(VmError::Overflow)) => {
                prop_assert_eq!((*start, *s), (base, size));
            }
            _ => prop_assert!(false, "{base:#x} {size:#x}: ours {ours:?}, vm-allocator {theirs:?}"),
        }
    }

    /// `allocate` with arguments `Constraint::new` refuses: both allocators refuse them with
    /// the same kind of error, and memvisor's is left as it was.
    #[test]
    fn allocate_refuses_what_constraint_refuses(
        base in edge(), space_size in edge(), size in edge(), align in edge(), addr in edge()
    ) {
        let (Ok(mut ours), Ok(mut vm)) = (
            AddressAllocator::<()>::with_base_and_size(base, space_size),
            VmAddr::new(base, space_size),
        ) else {
            return Ok(());
        };
        for (policy, vm_policy) in policies(addr) {
            if Constraint::new(size, align, vm_policy).is_ok() {
                continue;
            }
            let before = ours.clone();
            let got = ours.allocate(size, align, policy);
            let want = vm.allocate(size, align, vm_policy);
            match (&got, &want) {
                (Err(Error::ZeroSize), Err(VmError::InvalidSize(0)))
                | (Err(Error::InvalidAlignment(_)), Err(VmError::InvalidAlignment))
                | (Err(Error::UnalignedAddress { .. }), Err(VmError::UnalignedAddress)) => {}
                _ => prop_assert!(
                    false,
                    "{size:#x} {align:#x} {policy:?}: ours {got:?}, vm-allocator {want:?}"
                ),
            }
            prop_assert_eq!(&ours, &before);
        }
    }

    /// The same range, length, overlaps and containment; the one range vm-allocator refuses on
    /// purpose, the whole 64-bit space (its length does not fit a `u64`), memvisor accepts,
    /// with a `size()` of `None` (documented on `AddressRange::size`).
    #[test]
    fn address_ranges_answer_as_range_inclusive(
        a in edge(), b in edge(), c in edge(), d in edge()
    ) {
        let ours = AddressRange::new(a, b);
        let theirs = VmRange::new(a, b);
        match (&ours, &theirs) {
            (Ok(r), Ok(v)) => {
                prop_assert_eq!((r.start(), r.end()), (v.start(), v.end()));
                prop_assert_eq!(r.size(), Some(v.len()));
                prop_assert_eq!(r.size_u128(), u128::from(v.len()));
            }
            (Err(Error::InvalidRange { start, end }), Err(VmError::InvalidRange(s, e))) => {
                prop_assert_eq!((*start, *end), (*s, *e));
                // The one difference is made: the whole space is a range of memvisor's.
                prop_assert!(*start > *end, "{a:#x}..={b:#x} refused");
            }
            (Ok(r), Err(VmError::InvalidRange(0, u64::MAX))) => {
                prop_assert_eq!(*r, AddressRange::FULL);
                prop_assert_eq!(r.size(), None);
            }
            _ => prop_assert!(false, "{a:#x}..={b:#x}: ours {ours:?}, vm-allocator {theirs:?}"),
        }
        if let (Ok(r), Ok(v), Ok(s), Ok(w)) =
            (ours, theirs, AddressRange::new(c, d), VmRange::new(c, d))
        {
            prop_assert_eq!(r.overlaps(&s), v.overlaps(&w));
            prop_assert_eq!(r.contains_range(&s), v.contains(&w));
            prop_assert_eq!(s.contains_range(&r), w.contains(&v));
            prop_assert_eq!(r.intersection(&s).is_some(), v.overlaps(&w));
        }
    }

    /// The same range of IDs or both refuse (`first > last`); then the same first ID handed out
    /// and the same answers at the edges.
    #[test]
    fn id_range_checks_are_vm_allocator_checks(first in edge32(), last in edge32()) {
        let ours = IdAllocator::new(first, last);
        let theirs = VmIds::new(first, last);
        match (ours, theirs) {
            (Ok(mut ours), Ok(mut vm)) => {
                prop_assert_eq!((ours.first(), ours.last()), (first, last));
                prop_assert_eq!(ours.capacity(), u64::from(last - first) + 1);
                prop_assert_eq!(ours.allocate_id().ok(), vm.allocate_id().ok());
                for id in [first, last, first.wrapping_sub(1), last.wrapping_add(1)] {
                    prop_assert_eq!(ours.is_allocated(id), vm.is_allocated(id), "{}", id);
                }
            }
            (Err(Error::InvalidIdRange { first: f, last: l }), Err(VmError::InvalidRange(s, e))) => {
                prop_assert_eq!((f, l), (u64::from(first), u64::from(last)));
                prop_assert_eq!((s, e), (u64::from(first), u64::from(last)));
            }
            (ours, theirs) => prop_assert!(
                false,
                "{first}..={last}: ours {:?}, vm-allocator {:?}",
                ours.map(|_| ()),
                theirs.map(|_| ())
            ),
        }
    }
}
