//! A vm-allocator snapshot imported with a tag per kind of range: the stretches no node covers
//! (ranges vm-allocator 0.1.4 lost when a free failed) are told from the ranges its tree marks
//! allocated.

use memvisor_resources::{
    AddressAllocator, AddressRange, Error, VmAddressAllocatorSnapshot, VmImported,
};
use vm_allocator::{AddressAllocator as VmAddr, AllocPolicy as VmPolicy};

fn r(start: u64, end: u64) -> AddressRange {
    AddressRange::new(start, end).unwrap()
}

fn saved(vm: &VmAddr) -> VmAddressAllocatorSnapshot {
    serde_json::from_str(&serde_json::to_string(vm).unwrap()).unwrap()
}

#[test]
fn vm_import_lost_range_gets_its_own_tag() {
    // vm-allocator removes the node of a range starting at 1 and then fails its free: the
    // range is covered by no node.
    let mut vm = VmAddr::new(0, 0xffff).unwrap();
    let lost = vm.allocate(0x10, 1, VmPolicy::ExactMatch(1)).unwrap();
    let kept = vm.allocate(0x100, 0x100, VmPolicy::FirstMatch).unwrap();
    assert!(vm.free(&lost).is_err());
    let snapshot = saved(&vm);

    let a = AddressAllocator::from_vm_allocator_snapshot_with(&snapshot, |kind| kind).unwrap();
    let tags: Vec<(AddressRange, VmImported)> = a.allocated().map(|x| (x.range, *x.tag)).collect();
    assert_eq!(
        tags,
        [
            (r(1, 0x10), VmImported::Uncovered(r(1, 0x10))),
            (
                r(kept.start(), kept.end()),
                VmImported::Allocated(r(kept.start(), kept.end()))
            ),
        ]
    );
    // The lost range can be found by its tag and freed.
    let mut a = AddressAllocator::from_vm_allocator_snapshot_with(&snapshot, |kind| {
        matches!(kind, VmImported::Uncovered(_))
    })
    .unwrap();
    let uncovered: Vec<AddressRange> = a.find_tagged(&true).collect();
    assert_eq!(uncovered, [r(1, 0x10)]);
    assert_eq!(a.free(&uncovered[0]), Ok(true));
    assert_eq!(a.find_tagged(&true).count(), 0);

    // The plain import holds the same ranges, every one with the default tag.
    let plain = AddressAllocator::<u32>::from_vm_allocator_snapshot(&snapshot).unwrap();
    let ranges: Vec<AddressRange> = plain.allocated().map(|x| x.range).collect();
    assert_eq!(ranges, [r(1, 0x10), r(kept.start(), kept.end())]);
    assert!(plain.allocated().all(|x| *x.tag == 0));
}

#[test]
fn vm_import_refused_calls_no_tag() {
    // A node outside the space: refused before any tag is made.
    let text = r#"{"address_space":{"start":4096,"end":8191},"interval_tree":{"root":
        {"key":{"start":0,"end":4095},"node_state":"Allocated","left":null,"right":null,
        "height":1}}}"#;
    let snapshot: VmAddressAllocatorSnapshot = serde_json::from_str(text).unwrap();
    let mut calls = 0;
    let res = AddressAllocator::from_vm_allocator_snapshot_with(&snapshot, |_| {
        calls += 1;
    });
    assert_eq!(
        res.err(),
        Some(Error::OutsideSpace {
            range: r(0, 4095),
            space: r(4096, 8191)
        })
    );
    assert_eq!(calls, 0);
}
