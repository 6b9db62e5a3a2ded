//! A caller holding one range type calls every range-taking API without taking a range apart:
//! a placed `GuestRange`, or an `AddressRange` from the allocators a placer hands over, makes
//! a region's spec, and a region gives its range, each checked, never rebuilt from a base and a
//! size by hand.
//!
//! Not run under Miri: planned regions only, no unsafe code.

#![cfg(not(miri))]

use memvisor_space::memvisor_resources::{AddressRange, AllocPolicy, Request};
use memvisor_space::{
    Error, GuestRange, Layout, Region, RegionSpec, RegionType, Window, WindowKind,
};
use vm_memory::GuestAddress;

#[test]
fn placed_and_allocated_ranges_make_specs_and_regions_give_theirs() {
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let mut placer = layout.placer();
    let net = placer
        .place(WindowKind::Device, 0x1000, 0x1000, "net0")
        .unwrap();
    let spec = RegionSpec::for_range(RegionType::Device, net).unwrap();
    assert_eq!((spec.base(), spec.size()), (net.start(), 0x1000));
    assert_eq!(spec.range().unwrap(), net);
    layout.check(&spec).unwrap();
    let region = Region::plan(spec).unwrap();
    assert_eq!(region.range(), net);
    assert_eq!(AddressRange::from(region.range()), net.as_range());

    // An allocator's range, as it comes.
    let mut allocators = placer.into_allocators();
    let devices = allocators.first_of(WindowKind::Device).unwrap();
    let request = Request::new(0x2000, 0x1000, AllocPolicy::FirstMatch).unwrap();
    let blk: AddressRange = devices.allocate_with(&request, "blk0".into()).unwrap();
    let spec = RegionSpec::for_range(RegionType::Device, blk).unwrap();
    assert_eq!((spec.base().0, spec.size()), (blk.start(), 0x2000));
    assert_eq!(Region::plan(spec).unwrap().range().as_range(), blk);

    // The last byte of the space is a range and a spec; the whole space is a range no spec's
    // size can hold.
    let top = GuestRange::new(GuestAddress(u64::MAX - 0xfff), 0x1000).unwrap();
    let spec = RegionSpec::for_range(RegionType::Reserved, top).unwrap();
    assert_eq!(Region::plan(spec).unwrap().range(), top);
    let all = GuestRange::inclusive(GuestAddress(0), GuestAddress(u64::MAX)).unwrap();
    let err = RegionSpec::for_range(RegionType::Reserved, all).unwrap_err();
    assert!(matches!(err, Error::WholeAddressSpace), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the range [0x0, 0xffffffffffffffff] is the whole 64-bit address space, 2^64 bytes, \
         one more than a size, a u64, holds"
    );
}

#[test]
fn a_window_is_made_over_a_range_of_either_type() {
    let range = GuestRange::new(GuestAddress(0xc000_0000), 0x1000_0000).unwrap();
    let w = Window::for_range(WindowKind::Device, range).unwrap();
    assert_eq!((w.kind(), w.range()), (WindowKind::Device, range));
    let w = Window::for_range(WindowKind::Ram, AddressRange::new(0, 0xfff).unwrap()).unwrap();
    assert_eq!((w.start(), w.size()), (GuestAddress(0), 0x1000));
    let all = GuestRange::inclusive(GuestAddress(0), GuestAddress(u64::MAX)).unwrap();
    let err = Window::for_range(WindowKind::Ram, all).unwrap_err();
    assert!(matches!(err, Error::WholeAddressSpace), "{err:?}");
    // The text names no region: a window's size is asked for here.
    assert!(!err.to_string().contains("region"), "{err}");
}
