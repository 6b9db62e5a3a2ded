//! Snapshots written by vm-allocator 0.1.4's `serde` feature, imported: states saved by the real
//! vm-allocator after real allocations and frees load into allocators that answer as
//! vm-allocator does afterwards (away from its known defects, `tests/vm_allocator_bugs.rs`), and
//! crafted snapshots are refused with the error each check documents.

mod common;

use common::page_workload::{allocators, op, step};
use memvisor_resources::{
    AddressAllocator, AddressRange, AllocPolicy, Error, IdAllocator, IdLoadLimits,
    VmAddressAllocatorSnapshot, VmIdAllocatorSnapshot,
};
use proptest::prelude::*;
use serde_json::{Value, json};
use vm_allocator::{
    AddressAllocator as VmAddr, AllocPolicy as VmPolicy, IdAllocator as VmIds,
    RangeInclusive as VmRange,
};

const CASES: u32 = if cfg!(miri) { 8 } else { 500 };

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(CASES);
    if cfg!(miri) {
        config.failure_persistence = None;
    }
    config
}

fn r(start: u64, end: u64) -> AddressRange {
    AddressRange::new(start, end).unwrap()
}

fn import_ids(text: &str) -> Result<IdAllocator, Error> {
    let saved: VmIdAllocatorSnapshot = serde_json::from_str(text).expect("the fields read");
    IdAllocator::from_vm_allocator_snapshot(&saved, &IdLoadLimits::default())
}

fn import_addr(value: &Value) -> Result<AddressAllocator<()>, Error> {
    let saved: VmAddressAllocatorSnapshot =
        serde_json::from_value(value.clone()).expect("the fields read");
    AddressAllocator::from_vm_allocator_snapshot(&saved)
}

fn vm_import_addr(vm: &VmAddr) -> AddressAllocator<()> {
    let text = serde_json::to_string(vm).unwrap();
    let saved: VmAddressAllocatorSnapshot = serde_json::from_str(&text).unwrap();
    let a = AddressAllocator::from_vm_allocator_snapshot(&saved).unwrap();
    a.check_invariants().unwrap();
    a
}

fn vm_import_ids(vm: &VmIds) -> IdAllocator {
    import_ids(&serde_json::to_string(vm).unwrap()).unwrap()
}

/// The allocated ranges of a vm-allocator snapshot, in address order, read from its JSON.
fn vm_allocated(value: &Value) -> Vec<AddressRange> {
    fn walk(node: &Value, out: &mut Vec<AddressRange>) {
        if node.is_null() {
            return;
        }
        walk(&node["left"], out);
        if node["node_state"] == "Allocated" {
            let key = &node["key"];
            out.push(r(
                key["start"].as_u64().unwrap(),
                key["end"].as_u64().unwrap(),
            ));
        }
        walk(&node["right"], out);
    }
    let mut out = Vec::new();
    walk(&value["interval_tree"]["root"], &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// IDs

/// A step of an ID workload: allocate, or free the ID at this offset from one below the range.
fn id_step(
    ours: &mut IdAllocator,
    vm: &mut VmIds,
    lo: u32,
    hi: u32,
    choice: u64,
) -> Result<(), TestCaseError> {
    use vm_allocator::Error as VmError;
    if choice.is_multiple_of(3) {
        match (ours.allocate_id(), vm.allocate_id()) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(Error::OutOfIds { .. }), Err(_)) => {}
            (a, b) => prop_assert!(false, "allocate in {lo}..={hi}: {a:?}, vm-allocator {b:?}"),
        }
    } else {
        let id = lo
            .wrapping_add(u32::try_from((choice / 3) % (u64::from(hi - lo) + 3)).unwrap())
            .wrapping_sub(1);
        let id64 = u64::from(id);
        match (ours.free_id(id), vm.free_id(id)) {
            (Ok(()), Ok(b)) => prop_assert_eq!(b, id),
            (Err(Error::IdOutOfRange { id: a, .. }), Err(VmError::OutOfRange(b)))
            | (Err(Error::IdNeverAllocated(a)), Err(VmError::NeverAllocated(b)))
            | (Err(Error::IdAlreadyFree(a)), Err(VmError::AlreadyReleased(b))) => {
                prop_assert_eq!((a, u64::from(b)), (id64, id64));
            }
            (a, b) => prop_assert!(false, "free {id} in {lo}..={hi}: {a:?}, vm-allocator {b:?}"),
        }
    }
    for id in [
        lo,
        hi,
        lo.wrapping_sub(1),
        hi.wrapping_add(1),
        lo / 2 + hi / 2,
    ] {
        prop_assert_eq!(ours.is_allocated(id), vm.is_allocated(id), "{}", id);
    }
    Ok(())
}

fn id_range() -> impl Strategy<Value = (u32, u32)> {
    prop_oneof![
        Just((0u32, 0u32)),
        Just((0, 5)),
        Just((7, 70)),
        Just((u32::MAX - 5, u32::MAX)),
        Just((u32::MAX, u32::MAX)),
        (0u32..1000, 0u32..200).prop_map(|(lo, len)| (lo, lo + len)),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// vm-allocator runs a workload; its state, saved at a random step, is imported; the rest
    /// of the workload runs on both, with the same answers and the same `is_allocated`.
    #[test]
    fn id_snapshot_from_vm_allocator_answers_as_vm_allocator(
        (lo, hi) in id_range(),
        ops in prop::collection::vec(any::<u64>(), 0..120),
        cut in any::<prop::sample::Index>(),
    ) {
        let cut = cut.index(ops.len() + 1);
        let mut vm = VmIds::new(lo, hi).unwrap();
        let mut ours = IdAllocator::new(lo, hi).unwrap();
        for &op in &ops[..cut] {
            id_step(&mut ours, &mut vm, lo, hi, op)?;
        }
        let mut loaded = vm_import_ids(&vm);
        prop_assert_eq!(&loaded, &ours, "imported state differs from the one built by calls");
        for &op in &ops[cut..] {
            id_step(&mut loaded, &mut vm, lo, hi, op)?;
        }
        if hi - lo < 300 {
            for id in lo..=hi {
                prop_assert_eq!(loaded.is_allocated(id), vm.is_allocated(id));
            }
        }
        // Both hand out the same IDs until none is left.
        loop {
            match (loaded.allocate_id(), vm.allocate_id()) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => break,
                (a, b) => prop_assert!(false, "{a:?}, vm-allocator {b:?}"),
            }
        }
    }
}

#[test]
fn id_snapshot_of_a_range_handed_out_to_u32_max_imports() {
    let mut vm = VmIds::new(u32::MAX - 3, u32::MAX).unwrap();
    for _ in 0..4 {
        vm.allocate_id().unwrap();
    }
    vm.free_id(u32::MAX - 1).unwrap();
    let text = serde_json::to_string(&vm).unwrap();
    assert!(text.contains(r#""next_id":null"#), "{text}");
    let mut ours = import_ids(&text).unwrap();
    assert_eq!(ours.used(), 3);
    assert_eq!(ours.never_allocated_runs().count(), 0);
    assert_eq!(
        ours.free_id(u32::MAX - 1),
        Err(Error::IdAlreadyFree(u64::from(u32::MAX - 1)))
    );
    assert_eq!(ours.allocate_id(), Ok(u32::MAX - 1));
    assert!(ours.allocate_id().is_err());
    assert!(vm.allocate_id().is_ok());
    assert!(vm.allocate_id().is_err());
}

#[test]
fn id_snapshot_of_the_whole_u32_range_imports_within_the_limit() {
    let mut vm = VmIds::new(0, u32::MAX).unwrap();
    for _ in 0..1000 {
        vm.allocate_id().unwrap();
    }
    for id in (0..1000).step_by(7) {
        vm.free_id(id).unwrap();
    }
    let ours = vm_import_ids(&vm);
    assert_eq!(ours.used(), 1000 - 143);
    assert_eq!(ours.capacity(), 1 << 32);
    assert!(ours.heap_bytes() < 4096);
}

#[test]
fn id_snapshot_needing_a_large_bitmap_is_refused_under_the_limit() {
    // 100 bytes that hand out every ID below 2^32 - 1.
    let text = r#"{"range_base":0,"next_id":4294967295,"range_end":4294967295,"freed_ids":[]}"#;
    let saved: VmIdAllocatorSnapshot = serde_json::from_str(text).unwrap();
    let limits = IdLoadLimits::default();
    assert!(matches!(
        IdAllocator::from_vm_allocator_snapshot(&saved, &limits),
        Err(Error::SnapshotTooLarge { limit, .. }) if limit == limits.max_bitmap_bytes
    ));
}

#[test]
fn crafted_id_snapshots_are_refused() {
    let cases: &[(&str, Error)] = &[
        // vm-allocator loads this one and then hands out ID 0 twice.
        (
            r#"{"range_base":0,"next_id":0,"range_end":10,"freed_ids":[0]}"#,
            Error::IdNeverAllocated(0),
        ),
        (
            r#"{"range_base":0,"next_id":3,"range_end":10,"freed_ids":[3]}"#,
            Error::IdNeverAllocated(3),
        ),
        (
            r#"{"range_base":5,"next_id":8,"range_end":10,"freed_ids":[4]}"#,
            Error::IdOutOfRange {
                id: 4,
                first: 5,
                last: 10,
            },
        ),
        (
            r#"{"range_base":0,"next_id":null,"range_end":4294967294,"freed_ids":[4294967295]}"#,
            Error::VmNextIdNull {
                range_end: 4_294_967_294,
            },
        ),
        (
            r#"{"range_base":0,"next_id":null,"range_end":4294967295,"freed_ids":[2,2]}"#,
            Error::VmFreedIdsUnsorted { id: 2, previous: 2 },
        ),
        (
            r#"{"range_base":0,"next_id":9,"range_end":10,"freed_ids":[5,1]}"#,
            Error::VmFreedIdsUnsorted { id: 1, previous: 5 },
        ),
        (
            r#"{"range_base":9,"next_id":9,"range_end":1,"freed_ids":[]}"#,
            Error::InvalidIdRange { first: 9, last: 1 },
        ),
        (
            r#"{"range_base":5,"next_id":4,"range_end":10,"freed_ids":[]}"#,
            Error::VmNextIdOutOfRange {
                next_id: 4,
                range_base: 5,
                range_end: 10,
            },
        ),
        (
            r#"{"range_base":5,"next_id":12,"range_end":10,"freed_ids":[]}"#,
            Error::VmNextIdOutOfRange {
                next_id: 12,
                range_base: 5,
                range_end: 10,
            },
        ),
    ];
    for (text, want) in cases {
        assert_eq!(import_ids(text).map(|_| ()), Err(*want), "{text}");
    }
    // The edges that are valid: everything handed out, nothing handed out.
    assert_eq!(
        import_ids(r#"{"range_base":5,"next_id":11,"range_end":10,"freed_ids":[5,10]}"#)
            .map(|a| a.used()),
        Ok(4)
    );
    assert_eq!(
        import_ids(r#"{"range_base":5,"next_id":5,"range_end":10,"freed_ids":[]}"#)
            .map(|a| a.used()),
        Ok(0)
    );
    // Fields that are not vm-allocator's, or missing, are refused when read.
    for text in [
        r#"{"range_base":0,"next_id":0,"range_end":10,"freed_ids":[],"extra":1}"#,
        r#"{"range_base":0,"next_id":0,"freed_ids":[]}"#,
        r#"{"first":0,"last":10,"used":0,"allocated":[],"never_allocated":[[0,10]]}"#,
        r#"{"range_base":0,"next_id":-1,"range_end":10,"freed_ids":[]}"#,
    ] {
        assert!(
            serde_json::from_str::<VmIdAllocatorSnapshot>(text).is_err(),
            "{text}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Addresses

proptest! {
    #![proptest_config(config())]

    /// vm-allocator runs a page-sized workload; its state, saved at a random step, is imported:
    /// the same ranges allocated, and the rest of the workload gives the same answers.
    #[test]
    fn address_snapshot_from_vm_allocator_answers_as_vm_allocator(
        ops in prop::collection::vec(op(), 0..150),
        cut in any::<prop::sample::Index>(),
    ) {
        let cut = cut.index(ops.len() + 1);
        let (mut ours, mut vm) = allocators();
        let mut live = Vec::new();
        for &op in &ops[..cut] {
            step(&mut ours, &mut vm, &mut live, op)?;
        }
        let value = serde_json::to_value(&vm).unwrap();
        let mut loaded = vm_import_addr(&vm);
        prop_assert_eq!(&loaded, &ours, "imported state differs from the one built by calls");
        prop_assert_eq!(
            loaded.allocated().map(|a| a.range).collect::<Vec<_>>(),
            vm_allocated(&value)
        );
        for &op in &ops[cut..] {
            step(&mut loaded, &mut vm, &mut live, op)?;
        }
        loaded.check_invariants().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(
            loaded.allocated().map(|a| a.range).collect::<Vec<_>>(),
            vm_allocated(&serde_json::to_value(&vm).unwrap())
        );
    }
}

#[test]
fn address_snapshot_in_sequence_form_imports() {
    // A struct may be written as a sequence of its fields (what non-self-describing formats
    // do); vm-allocator reads both forms, and so does the import.
    let mut vm = VmAddr::new(0x1000, 0x4000).unwrap();
    let a = vm.allocate(0x1000, 0x1000, VmPolicy::LastMatch).unwrap();
    vm.allocate(0x800, 0x1000, VmPolicy::FirstMatch).unwrap();
    // Fields in their declaration order (a JSON object's keys come back sorted).
    const ORDER: [&str; 10] = [
        "address_space",
        "interval_tree",
        "root",
        "key",
        "node_state",
        "left",
        "right",
        "height",
        "start",
        "end",
    ];
    fn to_seq(v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let mut fields: Vec<_> = map.iter().collect();
                fields.sort_by_key(|(k, _)| ORDER.iter().position(|o| o == k).unwrap());
                Value::Array(fields.into_iter().map(|(_, v)| to_seq(v)).collect())
            }
            _ => v.clone(),
        }
    }
    let seq = to_seq(&serde_json::to_value(&vm).unwrap());
    let back: VmAddr = serde_json::from_value(seq.clone()).unwrap();
    assert_eq!(back, vm);
    let ours = import_addr(&seq).unwrap();
    assert_eq!(
        ours.allocated().map(|x| x.range).collect::<Vec<_>>(),
        [r(0x1000, 0x17ff), r(a.start(), a.end())]
    );
}

#[test]
fn range_lost_by_a_failed_vm_allocator_free_imports_as_allocated() {
    // vm-allocator removes the node of 1..=0x10, then fails: no node covers it any more.
    let mut vm = VmAddr::new(0, 0x1000).unwrap();
    let x = vm.allocate(0x10, 1, VmPolicy::ExactMatch(1)).unwrap();
    assert!(vm.free(&x).is_err());
    let mut ours = vm_import_addr(&vm);
    let x = r(1, 0x10);
    assert_eq!(ours.allocated().map(|a| a.range).collect::<Vec<_>>(), [x]);
    // As in vm-allocator, nothing else is handed that range...
    assert!(ours.allocate(0x10, 1, AllocPolicy::ExactMatch(1)).is_err());
    assert!(vm.allocate(0x10, 1, VmPolicy::ExactMatch(1)).is_err());
    // ... and its owner, told the free failed, can free it.
    assert_eq!(ours.free(&x), Ok(()));
    assert_eq!(ours.free_ranges().collect::<Vec<_>>(), [r(0, 0xfff)]);

    // The whole space lost: a tree with no root.
    let mut vm = VmAddr::new(1, 0x10).unwrap();
    let x = vm.allocate(0x10, 1, VmPolicy::FirstMatch).unwrap();
    assert!(vm.free(&x).is_err());
    assert_eq!(
        serde_json::to_value(&vm).unwrap()["interval_tree"]["root"],
        Value::Null
    );
    let ours = vm_import_addr(&vm);
    assert_eq!(
        ours.allocated().map(|a| a.range).collect::<Vec<_>>(),
        [r(1, 0x10)]
    );
}

#[test]
fn free_ranges_vm_allocator_left_unmerged_import_merged() {
    let mut vm = VmAddr::new(0x1000, 0x1000).unwrap();
    vm.allocate(0x100, 1, VmPolicy::ExactMatch(0x1000)).unwrap();
    let b = vm.allocate(0xff, 1, VmPolicy::ExactMatch(0x1101)).unwrap();
    vm.allocate(0xe00, 1, VmPolicy::ExactMatch(0x1200)).unwrap();
    vm.free(&b).unwrap();
    let mut ours = vm_import_addr(&vm);
    assert_eq!(ours.free_ranges().collect::<Vec<_>>(), [r(0x1100, 0x11ff)]);
    assert_eq!(
        ours.allocate(0x100, 1, AllocPolicy::ExactMatch(0x1100)),
        Ok(r(0x1100, 0x11ff))
    );
}

// Crafted trees.

fn node(start: u64, end: u64, allocated: bool, left: Value, right: Value, height: u64) -> Value {
    json!({
        "key": {"start": start, "end": end},
        "node_state": if allocated { "Allocated" } else { "Free" },
        "left": left,
        "right": right,
        "height": height,
    })
}

fn leaf(start: u64, end: u64, allocated: bool) -> Value {
    node(start, end, allocated, Value::Null, Value::Null, 1)
}

fn snapshot(start: u64, end: u64, root: Value) -> Value {
    json!({
        "address_space": {"start": start, "end": end},
        "interval_tree": {"root": root},
    })
}

/// A chain of `n` nodes, each the right child of the one before, with true heights.
fn chain(n: u64) -> Value {
    let mut root = Value::Null;
    for i in (0..n).rev() {
        root = node(
            i * 0x10,
            i * 0x10 + 0xf,
            i % 2 == 0,
            Value::Null,
            root,
            n - i,
        );
    }
    root
}

#[test]
fn crafted_address_snapshots_are_refused() {
    let three = |a: Value, b: Value, c: Value| node_at(b, a, c, 2);
    fn node_at(mut mid: Value, left: Value, right: Value, height: u64) -> Value {
        mid["left"] = left;
        mid["right"] = right;
        mid["height"] = json!(height);
        mid
    }
    let cases: Vec<(Value, Error)> = vec![
        (
            snapshot(0x10, 0xf, Value::Null),
            Error::InvalidRange {
                start: 0x10,
                end: 0xf,
            },
        ),
        (
            snapshot(0, 0xff, leaf(0x20, 0x1f, true)),
            Error::InvalidRange {
                start: 0x20,
                end: 0x1f,
            },
        ),
        (
            snapshot(0x100, 0x1ff, leaf(0x80, 0x17f, true)),
            Error::OutsideSpace {
                range: r(0x80, 0x17f),
                space: r(0x100, 0x1ff),
            },
        ),
        (
            snapshot(0x100, 0x1ff, leaf(0x180, 0x27f, true)),
            Error::OutsideSpace {
                range: r(0x180, 0x27f),
                space: r(0x100, 0x1ff),
            },
        ),
        // Overlapping, out of order, the same range twice.
        (
            snapshot(
                0,
                0xff,
                three(
                    leaf(0, 0x10, true),
                    leaf(0x10, 0x1f, true),
                    leaf(0x20, 0xff, false),
                ),
            ),
            Error::VmTreeRangesOverlap {
                range: r(0x10, 0x1f),
                previous: r(0, 0x10),
            },
        ),
        (
            snapshot(
                0,
                0xff,
                three(
                    leaf(0x20, 0x2f, true),
                    leaf(0x10, 0x1f, true),
                    leaf(0x30, 0xff, false),
                ),
            ),
            Error::VmTreeRangesOverlap {
                range: r(0x10, 0x1f),
                previous: r(0x20, 0x2f),
            },
        ),
        (
            snapshot(
                0,
                0xff,
                three(
                    leaf(0, 0xf, true),
                    leaf(0x10, 0x1f, true),
                    leaf(0x10, 0x1f, false),
                ),
            ),
            Error::VmTreeRangesOverlap {
                range: r(0x10, 0x1f),
                previous: r(0x10, 0x1f),
            },
        ),
        // Heights that are not the subtree's, a tree out of balance.
        (
            snapshot(0, 0xff, node(0, 0xff, true, Value::Null, Value::Null, 2)),
            Error::VmTreeHeight {
                start: 0,
                end: 0xff,
                stored: 2,
                actual: 1,
            },
        ),
        (
            snapshot(0, 0xff, node(0, 0xff, true, Value::Null, Value::Null, 0)),
            Error::VmTreeHeight {
                start: 0,
                end: 0xff,
                stored: 0,
                actual: 1,
            },
        ),
        (
            snapshot(
                0,
                0xff,
                node(0, 0xff, true, Value::Null, Value::Null, u64::MAX),
            ),
            Error::VmTreeHeight {
                start: 0,
                end: 0xff,
                stored: u64::MAX,
                actual: 1,
            },
        ),
        (
            snapshot(0, 0xfff, chain(3)),
            Error::VmTreeUnbalanced {
                start: 0,
                end: 0xf,
                left: 0,
                right: 2,
            },
        ),
        // As deep as reading allows: read, then refused as unbalanced.
        (
            snapshot(0, u64::MAX, chain(50)),
            Error::VmTreeUnbalanced {
                start: 47 * 0x10,
                end: 47 * 0x10 + 0xf,
                left: 0,
                right: 2,
            },
        ),
        // A node after one that ends at u64::MAX.
        (
            snapshot(
                0,
                u64::MAX,
                three(
                    leaf(0, 0xf, true),
                    leaf(0x10, u64::MAX, false),
                    leaf(0x20, 0x2f, true),
                ),
            ),
            Error::VmTreeRangesOverlap {
                range: r(0x20, 0x2f),
                previous: r(0x10, u64::MAX),
            },
        ),
    ];
    for (value, want) in cases {
        assert_eq!(import_addr(&value).map(|_| ()), Err(want), "{value}");
    }
}

#[test]
fn crafted_address_snapshots_are_refused_when_read() {
    let ok = snapshot(0, 0xff, leaf(0, 0xff, false));
    assert!(serde_json::from_value::<VmAddressAllocatorSnapshot>(ok.clone()).is_ok());
    let mut bad = Vec::new();
    // Deeper than vm-allocator builds: refused before reading further.
    bad.push(snapshot(0, u64::MAX, chain(51)));
    // Unknown, missing and repeated fields; a state that is not Free or Allocated.
    let mut v = ok.clone();
    v["interval_tree"]["root"]["extra"] = json!(1);
    bad.push(v);
    let mut v = ok.clone();
    v["extra"] = json!(1);
    bad.push(v);
    let mut v = ok.clone();
    v["interval_tree"]["root"]["node_state"] = json!("Reserved");
    bad.push(v);
    let mut v = ok.clone();
    v["interval_tree"]["root"]
        .as_object_mut()
        .unwrap()
        .remove("key");
    bad.push(v);
    let mut v = ok.clone();
    v.as_object_mut().unwrap().remove("interval_tree");
    bad.push(v);
    let mut v = ok.clone();
    v["interval_tree"]["root"]["height"] = json!(-1);
    bad.push(v);
    // A memvisor snapshot is not a vm-allocator one.
    bad.push(json!({"space": {"start": 0, "end": 0xff}, "count": 0, "allocations": []}));
    for value in bad {
        let text = value.to_string();
        assert!(
            serde_json::from_str::<VmAddressAllocatorSnapshot>(&text).is_err(),
            "{text}"
        );
    }
    let deep = snapshot(0, u64::MAX, chain(51)).to_string();
    let err = serde_json::from_str::<VmAddressAllocatorSnapshot>(&deep).unwrap_err();
    assert!(err.to_string().contains("deeper than 50 levels"), "{err}");
    // Repeated fields: the second child subtree would add nodes to the tree.
    for text in [
        r#"{"address_space":{"start":0,"end":255},"interval_tree":{"root":{"key":{"start":0,"end":255},"node_state":"Free","left":null,"left":{"key":{"start":0,"end":0},"node_state":"Free","left":null,"right":null,"height":1},"right":null,"height":1}}}"#,
        r#"{"address_space":{"start":0,"end":255},"interval_tree":{"root":null,"root":null}}"#,
        r#"{"address_space":{"start":0,"end":255},"interval_tree":{"root":null},"interval_tree":{"root":null}}"#,
        r#"{"address_space":{"start":0,"end":255},"address_space":{"start":0,"end":255},"interval_tree":{"root":null}}"#,
    ] {
        let err = serde_json::from_str::<VmAddressAllocatorSnapshot>(text).unwrap_err();
        assert!(err.to_string().contains("duplicate field"), "{err}");
    }
}

#[test]
fn missing_children_and_root_read_as_none() {
    // What vm-allocator's own reader does (a format that leaves out `None` fields writes this).
    let text = r#"{"address_space":{"start":0,"end":255},"interval_tree":{"root":
        {"key":{"start":16,"end":31},"node_state":"Allocated","height":1}}}"#;
    let saved: VmAddressAllocatorSnapshot = serde_json::from_str(text).unwrap();
    let vm: VmAddr = serde_json::from_str(text).unwrap();
    drop(vm);
    let ours = AddressAllocator::<()>::from_vm_allocator_snapshot(&saved).unwrap();
    // The space around the one node is covered by none: kept allocated.
    assert_eq!(
        ours.allocated().map(|a| a.range).collect::<Vec<_>>(),
        [r(0, 15), r(16, 31), r(32, 255)]
    );
    let text = r#"{"address_space":{"start":0,"end":255},"interval_tree":{}}"#;
    let saved: VmAddressAllocatorSnapshot = serde_json::from_str(text).unwrap();
    let ours = AddressAllocator::<()>::from_vm_allocator_snapshot(&saved).unwrap();
    assert_eq!(ours.used(), 256);
}

#[test]
fn whole_64_bit_space_and_its_edges_import() {
    let root = node(
        1,
        u64::MAX - 1,
        false,
        leaf(0, 0, true),
        leaf(u64::MAX, u64::MAX, true),
        2,
    );
    let mut ours = import_addr(&snapshot(0, u64::MAX, root)).unwrap();
    ours.check_invariants().unwrap();
    assert_eq!(
        ours.allocated().map(|a| a.range).collect::<Vec<_>>(),
        [r(0, 0), r(u64::MAX, u64::MAX)]
    );
    assert_eq!(
        ours.allocate(u64::MAX - 1, 1, AllocPolicy::FirstMatch),
        Ok(r(1, u64::MAX - 1))
    );
}

/// A perfectly balanced tree over `ranges` (sorted), with true heights.
fn balanced(ranges: &[(u64, u64, bool)]) -> (Value, u64) {
    if ranges.is_empty() {
        return (Value::Null, 0);
    }
    let mid = ranges.len() / 2;
    let (left, hl) = balanced(&ranges[..mid]);
    let (right, hr) = balanced(&ranges[mid + 1..]);
    let (s, e, a) = ranges[mid];
    let h = hl.max(hr) + 1;
    (node(s, e, a, left, right, h), h)
}

#[test]
fn large_balanced_tree_imports_in_order() {
    let n = if cfg!(miri) { 200 } else { 20_000 };
    let ranges: Vec<(u64, u64, bool)> = (0..n)
        .map(|i| (i * 0x10, i * 0x10 + 0xf, i % 3 != 0))
        .collect();
    let (root, _) = balanced(&ranges);
    let ours = import_addr(&snapshot(0, n * 0x10 - 1, root)).unwrap();
    ours.check_invariants().unwrap();
    let want: Vec<AddressRange> = ranges
        .iter()
        .filter(|x| x.2)
        .map(|&(s, e, _)| r(s, e))
        .collect();
    assert_eq!(ours.allocated().map(|a| a.range).collect::<Vec<_>>(), want);
}

/// Every state vm-allocator reaches, misplacements, unmerged free ranges and lost ranges
/// included, imports: the allocated ranges are its allocated nodes plus the ranges no node
/// covers.
#[test]
fn every_state_vm_allocator_reaches_imports() {
    let mut seed = 0x5eed_1234_u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let cases = if cfg!(miri) { 3 } else { 300 };
    let (mut lost, mut states) = (0, 0);
    for case in 0..cases {
        let base = [0, 1, 0x1000, u64::MAX - 0x200][case % 4];
        let size = 1 + rand(if base > 1 << 63 { 0x200 } else { 400 });
        let mut vm = VmAddr::new(base, size).unwrap();
        let mut live: Vec<VmRange> = Vec::new();
        for _ in 0..60 {
            if rand(3) == 0 && !live.is_empty() {
                let x = live.swap_remove(usize::try_from(rand(live.len() as u64)).unwrap());
                let _ = vm.free(&x);
            } else {
                let (units, align) = (1 + rand(40), 1 << rand(7));
                let policy = match rand(3) {
                    0 => VmPolicy::FirstMatch,
                    1 => VmPolicy::LastMatch,
                    _ => VmPolicy::ExactMatch(base.wrapping_add(rand(size + 10)) & !(align - 1)),
                };
                if let Ok(x) = vm.allocate(units, align, policy) {
                    live.push(x);
                }
            }
            let value = serde_json::to_value(&vm).unwrap();
            // The nodes in order, then the ranges they do not cover.
            let mut nodes = Vec::new();
            fn walk(node: &Value, out: &mut Vec<(u64, u64, bool)>) {
                if node.is_null() {
                    return;
                }
                walk(&node["left"], out);
                let key = &node["key"];
                out.push((
                    key["start"].as_u64().unwrap(),
                    key["end"].as_u64().unwrap(),
                    node["node_state"] == "Allocated",
                ));
                walk(&node["right"], out);
            }
            walk(&value["interval_tree"]["root"], &mut nodes);
            let mut want = Vec::new();
            let mut next = Some(base);
            for &(s, e, allocated) in &nodes {
                let from = next.unwrap();
                if s > from {
                    want.push(r(from, s - 1));
                    lost += 1;
                }
                if allocated {
                    want.push(r(s, e));
                }
                next = e.checked_add(1);
            }
            let end = base + (size - 1);
            if let Some(from) = next.filter(|&f| f <= end) {
                want.push(r(from, end));
                lost += 1;
            }
            let ours = vm_import_addr(&vm);
            assert_eq!(ours.allocated().map(|a| a.range).collect::<Vec<_>>(), want);
            states += 1;
        }
    }
    // The workload reaches vm-allocator's lost ranges.
    assert!(
        cfg!(miri) || lost > 0,
        "{lost} lost ranges in {states} states"
    );
}
