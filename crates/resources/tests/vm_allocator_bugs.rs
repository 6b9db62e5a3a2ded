//! Each defect measured in vm-allocator 0.1.4, reproduced on vm-allocator where it shows
//! directly, and the behaviour memvisor has instead.

use memvisor_resources::{
    AddressAllocator, AddressRange, AllocPolicy, Error, IdAllocator, Request,
};
use vm_allocator::{
    AddressAllocator as VmAddr, AllocPolicy as VmPolicy, RangeInclusive as VmRange,
};

fn r(start: u64, end: u64) -> AddressRange {
    AddressRange::new(start, end).unwrap()
}

fn vr(start: u64, end: u64) -> VmRange {
    VmRange::new(start, end).unwrap()
}

#[test]
fn last_match_space_ending_at_u64_max_succeeds() {
    let mut vm = VmAddr::new(u64::MAX - 0xfff, 0x1000).unwrap();
    assert!(vm.allocate(0x100, 0x100, VmPolicy::LastMatch).is_err());

    let mut a = AddressAllocator::<()>::with_base_and_size(u64::MAX - 0xfff, 0x1000).unwrap();
    assert_eq!(
        a.allocate(0x100, 0x100, AllocPolicy::LastMatch),
        Ok(r(u64::MAX - 0xff, u64::MAX))
    );
    assert_eq!(
        a.allocate(0x100, 1, AllocPolicy::ExactMatch(u64::MAX - 0x1ff)),
        Ok(r(u64::MAX - 0x1ff, u64::MAX - 0x100))
    );
    a.check_invariants().unwrap();
}

#[test]
fn allocation_ending_at_u64_max_succeeds_first_match() {
    let mut vm = VmAddr::new(u64::MAX - 0xff, 0x100).unwrap();
    assert!(vm.allocate(0x100, 1, VmPolicy::FirstMatch).is_err());

    let mut a = AddressAllocator::<()>::with_base_and_size(u64::MAX - 0xff, 0x100).unwrap();
    assert_eq!(
        a.allocate(0x100, 1, AllocPolicy::FirstMatch),
        Ok(r(u64::MAX - 0xff, u64::MAX))
    );
}

#[test]
fn exact_match_into_one_unit_gap_succeeds() {
    let mut vm = VmAddr::new(0x1000, 0x1000).unwrap();
    vm.allocate(0x100, 1, VmPolicy::ExactMatch(0x1000)).unwrap();
    vm.allocate(0xff, 1, VmPolicy::ExactMatch(0x1101)).unwrap();
    assert!(vm.allocate(1, 1, VmPolicy::ExactMatch(0x1100)).is_err());

    let mut a = AddressAllocator::<()>::with_base_and_size(0x1000, 0x1000).unwrap();
    a.allocate(0x100, 1, AllocPolicy::ExactMatch(0x1000))
        .unwrap();
    a.allocate(0xff, 1, AllocPolicy::ExactMatch(0x1101))
        .unwrap();
    assert_eq!(
        a.allocate(1, 1, AllocPolicy::ExactMatch(0x1100)),
        Ok(r(0x1100, 0x1100))
    );
}

#[test]
fn free_next_to_one_unit_gap_merges() {
    let mut vm = VmAddr::new(0x1000, 0x1000).unwrap();
    vm.allocate(0x100, 1, VmPolicy::ExactMatch(0x1000)).unwrap();
    let b = vm.allocate(0xff, 1, VmPolicy::ExactMatch(0x1101)).unwrap();
    vm.allocate(0xe00, 1, VmPolicy::ExactMatch(0x1200)).unwrap();
    vm.free(&b).unwrap();
    // The one-unit gap at 0x1100 and the freed range stay two nodes.
    assert!(vm.allocate(0x100, 1, VmPolicy::ExactMatch(0x1100)).is_err());

    let mut a = AddressAllocator::<()>::with_base_and_size(0x1000, 0x1000).unwrap();
    a.allocate(0x100, 1, AllocPolicy::ExactMatch(0x1000))
        .unwrap();
    let b = a
        .allocate(0xff, 1, AllocPolicy::ExactMatch(0x1101))
        .unwrap();
    a.allocate(0xe00, 1, AllocPolicy::ExactMatch(0x1200))
        .unwrap();
    a.free(&b).unwrap();
    assert_eq!(a.free_ranges().collect::<Vec<_>>(), [r(0x1100, 0x11ff)]);
    assert_eq!(
        a.allocate(0x100, 1, AllocPolicy::ExactMatch(0x1100)),
        Ok(r(0x1100, 0x11ff))
    );
}

#[test]
fn free_near_zero_never_loses_range() {
    // vm-allocator deletes the node, then fails computing `start - 2`: the range is gone.
    let mut vm = VmAddr::new(0, 0x1000).unwrap();
    let x = vm.allocate(0x10, 1, VmPolicy::ExactMatch(1)).unwrap();
    assert!(vm.free(&x).is_err());
    assert!(vm.free(&x).is_err());
    assert!(vm.allocate(0x10, 1, VmPolicy::ExactMatch(1)).is_err());

    let mut a = AddressAllocator::<()>::with_base_and_size(0, 0x1000).unwrap();
    let x = a.allocate(0x10, 1, AllocPolicy::ExactMatch(1)).unwrap();
    assert_eq!(a.free(&x), Ok(()));
    assert_eq!(a.free_ranges().collect::<Vec<_>>(), [a.space()]);
    assert_eq!(a.allocate(0x10, 1, AllocPolicy::ExactMatch(1)), Ok(x));
}

#[test]
fn free_near_max_never_loses_range() {
    let mut a = AddressAllocator::<()>::new(AddressRange::FULL);
    let x = a
        .allocate(0x10, 1, AllocPolicy::ExactMatch(u64::MAX - 0x10))
        .unwrap();
    assert_eq!(x.end(), u64::MAX - 1);
    assert_eq!(a.free(&x), Ok(()));
    assert_eq!(a.free_ranges().collect::<Vec<_>>(), [AddressRange::FULL]);
    assert_eq!(a.available(), 1u128 << 64);
}

#[test]
fn failed_free_changes_nothing() {
    let mut a = AddressAllocator::<u8>::new(AddressRange::from_start_and_size(0, 0x1000).unwrap());
    let x = a
        .allocate_with(
            &Request::new(0x10, 1, AllocPolicy::ExactMatch(1)).unwrap(),
            3,
        )
        .unwrap();
    let before = a.clone();
    assert!(a.free(&r(1, 0x20)).is_err());
    assert!(a.free(&r(0x100, 0x1ff)).is_err());
    assert_eq!(a, before);
    assert_eq!(a.free(&x), Ok(3));
}

#[test]
fn free_of_never_allocated_gap_fails() {
    let mut vm = VmAddr::new(0x1000, 0x1000).unwrap();
    assert!(vm.free(&vr(0x1000, 0x1fff)).is_ok());

    let mut a = AddressAllocator::<()>::with_base_and_size(0x1000, 0x1000).unwrap();
    assert_eq!(
        a.free(&r(0x1000, 0x1fff)),
        Err(Error::NotAllocated(r(0x1000, 0x1fff)))
    );
    a.allocate(0x100, 1, AllocPolicy::FirstMatch).unwrap();
    assert_eq!(
        a.free(&r(0x1100, 0x1fff)),
        Err(Error::NotAllocated(r(0x1100, 0x1fff)))
    );
}

#[test]
fn whole_64_bit_space_is_managed() {
    // vm-allocator refuses [0, u64::MAX] as a range.
    assert!(VmRange::new(0, u64::MAX).is_err());

    let mut a = AddressAllocator::<()>::new(AddressRange::FULL);
    assert_eq!(a.available(), 1u128 << 64);
    assert_eq!(
        a.allocate(1, 1, AllocPolicy::LastMatch),
        Ok(r(u64::MAX, u64::MAX))
    );
    assert_eq!(a.allocate(1, 1, AllocPolicy::FirstMatch), Ok(r(0, 0)));
    assert_eq!(
        a.allocate(u64::MAX - 1, 1, AllocPolicy::FirstMatch),
        Ok(r(1, u64::MAX - 1))
    );
    assert_eq!(a.available(), 0);
    assert_eq!(a.free_ranges().count(), 0);
    a.check_invariants().unwrap();
    a.free(&r(1, u64::MAX - 1)).unwrap();
    a.free(&r(0, 0)).unwrap();
    a.free(&r(u64::MAX, u64::MAX)).unwrap();
    assert_eq!(a.free_ranges().collect::<Vec<_>>(), [AddressRange::FULL]);
    a.reserve(AddressRange::FULL).unwrap();
    assert_eq!(a.used(), 1u128 << 64);
    assert_eq!(a.release_containing(12345), Ok((AddressRange::FULL, ())));
}

#[test]
fn id_free_never_allocated_is_told_apart() {
    let mut vm = vm_allocator::IdAllocator::new(0, 10).unwrap();
    vm.allocate_id().unwrap();

    let mut a = IdAllocator::new(0, 10).unwrap();
    a.allocate_id().unwrap();
    assert_eq!(a.free_id(5), Err(Error::IdNeverAllocated(5)));
    a.free_id(0).unwrap();
    assert_eq!(a.free_id(0), Err(Error::IdAlreadyFree(0)));
}
