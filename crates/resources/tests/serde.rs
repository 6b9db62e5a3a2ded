//! Snapshots: one canonical form, and loading rejects anything inconsistent without panicking.
#![cfg(feature = "serde")]

use memvisor_resources::{AddressAllocator, AddressRange, AllocPolicy, IdAllocator};
use proptest::prelude::*;

const CASES: u32 = if cfg!(miri) { 16 } else { 2_000 };

/// `CASES` cases; under Miri, which cannot read the working directory, no failure files.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(CASES);
    if cfg!(miri) {
        config.failure_persistence = None;
    }
    config
}

fn id_json(body: &str) -> Result<IdAllocator, serde_json::Error> {
    serde_json::from_str(body)
}

fn addr_json(body: &str) -> Result<AddressAllocator<u32>, serde_json::Error> {
    serde_json::from_str(body)
}

#[test]
fn id_allocator_round_trips_canonically() {
    let mut a = IdAllocator::new(10, 300).unwrap();
    a.allocate_ids(20, 1).unwrap();
    a.allocate_id_at(200).unwrap();
    a.free_id(15).unwrap();
    let text = serde_json::to_string(&a).unwrap();
    assert_eq!(
        text,
        r#"{"first":10,"last":300,"used":20,"allocated":[[10,14],[16,29],[200,200]],"never_allocated":[[30,199],[201,300]]}"#
    );
    let mut b: IdAllocator = serde_json::from_str(&text).unwrap();
    assert_eq!(a, b);
    assert_eq!(serde_json::to_string(&b).unwrap(), text);
    // The loaded allocator keeps telling "never allocated" from "already free".
    assert_eq!(
        b.free_id(15),
        Err(memvisor_resources::Error::IdAlreadyFree(15))
    );
    assert_eq!(
        b.free_id(31),
        Err(memvisor_resources::Error::IdNeverAllocated(31))
    );
    assert_eq!(b.allocate_id(), Ok(15));
}

#[test]
fn id_snapshot_claiming_free_and_allocated_is_rejected() {
    // vm-allocator accepts the equivalent and then hands out ID 0 twice.
    let mut vm: vm_allocator::IdAllocator =
        serde_json::from_str(r#"{"range_base":0,"next_id":0,"range_end":10,"freed_ids":[0]}"#)
            .unwrap();
    assert_eq!(vm.allocate_id().unwrap(), 0);
    assert_eq!(vm.allocate_id().unwrap(), 0);

    let bad = [
        // An ID both allocated and never allocated.
        r#"{"first":0,"last":10,"used":1,"allocated":[[0,0]],"never_allocated":[[0,10]]}"#,
        // The count does not match.
        r#"{"first":0,"last":10,"used":5,"allocated":[[0,0]],"never_allocated":[]}"#,
        // A run outside the range.
        r#"{"first":0,"last":10,"used":2,"allocated":[[10,11]],"never_allocated":[]}"#,
        // Runs out of order, overlapping, touching, inverted.
        r#"{"first":0,"last":10,"used":2,"allocated":[[5,5],[1,1]],"never_allocated":[]}"#,
        r#"{"first":0,"last":10,"used":4,"allocated":[[1,3],[3,3]],"never_allocated":[]}"#,
        r#"{"first":0,"last":10,"used":4,"allocated":[[1,2],[3,4]],"never_allocated":[]}"#,
        r#"{"first":0,"last":10,"used":0,"allocated":[[3,1]],"never_allocated":[]}"#,
        // An inverted range, an unknown field, a missing field.
        r#"{"first":9,"last":1,"used":0,"allocated":[],"never_allocated":[]}"#,
        r#"{"first":0,"last":10,"used":0,"allocated":[],"never_allocated":[],"next":3}"#,
        r#"{"first":0,"last":10,"allocated":[],"never_allocated":[]}"#,
    ];
    for text in bad {
        assert!(id_json(text).is_err(), "accepted {text}");
    }
}

#[test]
fn address_allocator_round_trips_canonically() {
    let mut a = AddressAllocator::<u32>::new(AddressRange::new(0x1000, 0xffff).unwrap());
    a.reserve_with(AddressRange::new(0x8000, 0x8fff).unwrap(), 9)
        .unwrap();
    let req = memvisor_resources::Request::new(0x100, 0x100, AllocPolicy::LastMatch).unwrap();
    a.allocate_with(&req, 4).unwrap();
    let text = serde_json::to_string(&a).unwrap();
    assert_eq!(
        text,
        concat!(
            r#"{"space":{"start":4096,"end":65535},"count":2,"allocations":["#,
            r#"{"range":{"start":32768,"end":36863},"tag":9},"#,
            r#"{"range":{"start":65280,"end":65535},"tag":4}]}"#
        )
    );
    let b: AddressAllocator<u32> = serde_json::from_str(&text).unwrap();
    assert_eq!(a, b);
    b.check_invariants().unwrap();
    assert_eq!(serde_json::to_string(&b).unwrap(), text);
}

/// Loading keeps the memory bound of a live allocator (28 bytes a range plus an eighth of
/// slack, plus the tag): the tags do not keep the buffer the decoder grew for the list.
#[test]
fn address_snapshot_load_keeps_no_spare_tag_capacity() {
    // Past a power of two, so that a list grown by doubling has almost twice the room.
    let n: u64 = if cfg!(miri) { 300 } else { 8_200 };
    let mut a = AddressAllocator::<u64>::new(AddressRange::new(0, 1 << 40).unwrap());
    for i in 0..n {
        a.reserve_with(AddressRange::new(i * 16, i * 16 + 7).unwrap(), i)
            .unwrap();
    }
    let text = serde_json::to_string(&a).unwrap();
    let b: AddressAllocator<u64> = serde_json::from_str(&text).unwrap();
    assert_eq!(a, b);
    let n = usize::try_from(n).unwrap();
    let bound = (n * 28 + n * size_of::<u64>()) * 9 / 8;
    assert!(
        b.heap_bytes() <= bound,
        "{} heap bytes for {n} ranges, bound {bound}",
        b.heap_bytes()
    );
}

#[test]
fn address_snapshot_inconsistent_is_rejected() {
    let space = r#""space":{"start":4096,"end":65535}"#;
    let bad = [
        // Overlapping, unsorted, outside the space, count mismatch, inverted range.
        format!(
            r#"{{{space},"count":2,"allocations":[{{"range":{{"start":4096,"end":8191}},"tag":1}},{{"range":{{"start":8000,"end":9000}},"tag":2}}]}}"#
        ),
        format!(
            r#"{{{space},"count":2,"allocations":[{{"range":{{"start":9000,"end":9001}},"tag":1}},{{"range":{{"start":5000,"end":5001}},"tag":2}}]}}"#
        ),
        format!(
            r#"{{{space},"count":1,"allocations":[{{"range":{{"start":0,"end":4096}},"tag":1}}]}}"#
        ),
        format!(
            r#"{{{space},"count":1,"allocations":[{{"range":{{"start":65535,"end":65536}},"tag":1}}]}}"#
        ),
        format!(
            r#"{{{space},"count":3,"allocations":[{{"range":{{"start":5000,"end":5001}},"tag":1}}]}}"#
        ),
        format!(
            r#"{{{space},"count":1,"allocations":[{{"range":{{"start":5001,"end":5000}},"tag":1}}]}}"#
        ),
        r#"{"space":{"start":9,"end":1},"count":0,"allocations":[]}"#.to_string(),
    ];
    for text in &bad {
        assert!(addr_json(text).is_err(), "accepted {text}");
    }
}

#[test]
fn range_snapshot_inverted_is_rejected() {
    assert!(serde_json::from_str::<AddressRange>(r#"{"start":2,"end":1}"#).is_err());
    let r: AddressRange =
        serde_json::from_str(r#"{"start":0,"end":18446744073709551615}"#).unwrap();
    assert_eq!(r, AddressRange::FULL);
}

proptest! {
    #![proptest_config(config())]

    /// Any snapshot built from arbitrary lists either loads into an allocator that passes its
    /// own checks, or is refused.
    #[test]
    fn arbitrary_address_snapshot_never_yields_inconsistent_state(
        space in (0u64..64, 0u64..64),
        count in 0u64..6,
        entries in prop::collection::vec((0u64..80, 0u64..80, 0u32..3), 0..6),
    ) {
        let items: Vec<String> = entries.iter().map(|(s, e, t)| {
            format!(r#"{{"range":{{"start":{s},"end":{e}}},"tag":{t}}}"#)
        }).collect();
        let text = format!(
            r#"{{"space":{{"start":{},"end":{}}},"count":{count},"allocations":[{}]}}"#,
            space.0, space.1, items.join(",")
        );
        if let Ok(a) = addr_json(&text) {
            prop_assert!(a.check_invariants().is_ok());
            prop_assert_eq!(a.len() as u64, count);
            let ranges: Vec<_> = a.allocated().map(|x| x.range).collect();
            prop_assert!(ranges.windows(2).all(|w| w[0].end() < w[1].start()));
            prop_assert!(ranges.iter().all(|r| a.space().contains_range(r)));
        }
    }

    #[test]
    fn arbitrary_id_snapshot_never_hands_out_twice(
        first in 0u32..20,
        last in 0u32..60,
        used in 0u64..40,
        allocated in prop::collection::vec((0u32..70, 0u32..70), 0..5),
        never in prop::collection::vec((0u32..70, 0u32..70), 0..5),
    ) {
        let list = |v: &[(u32, u32)]| v.iter().map(|(a, b)| format!("[{a},{b}]")).collect::<Vec<_>>().join(",");
        let text = format!(
            r#"{{"first":{first},"last":{last},"used":{used},"allocated":[{}],"never_allocated":[{}]}}"#,
            list(&allocated), list(&never)
        );
        if let Ok(mut a) = id_json(&text) {
            let before: Vec<u32> = a.iter().collect();
            prop_assert_eq!(before.len() as u64, a.used());
            let mut handed = std::collections::BTreeSet::new();
            while let Ok(id) = a.allocate_id() {
                prop_assert!(!before.contains(&id));
                prop_assert!(handed.insert(id));
            }
            prop_assert_eq!(a.available(), 0);
        }
    }
}

#[test]
fn id_snapshot_u64_round_trips_and_u32_form_rejects_wide_ids() {
    let base = 1u64 << 40;
    let mut a = IdAllocator::<u64>::with_range(base, base + 4095).unwrap();
    a.allocate_ids(3, 1).unwrap();
    a.free_id(base + 1).unwrap();
    let text = serde_json::to_string(&a).unwrap();
    let b: IdAllocator<u64> = serde_json::from_str(&text).unwrap();
    assert_eq!(a, b);
    assert!(serde_json::from_str::<IdAllocator>(&text).is_err());
    assert!(serde_json::from_str::<IdAllocator<u16>>(&text).is_err());
}
