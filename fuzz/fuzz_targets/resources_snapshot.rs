//! Arbitrary bytes as allocator snapshots (JSON): loading never panics, never hangs and, when it
//! succeeds, gives an allocator that saves to a snapshot which loads back to the same state, and
//! that answers calls as the same state built by calls does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memvisor_resources::{AddressAllocator, AllocPolicy, IdAllocator, Request};

/// Ranges up to this many IDs are rebuilt by calls and compared.
const REBUILD_IDS: u64 = 1 << 12;

/// The same state as `ids`, built by calls: every ID ever allocated is allocated, then those
/// now free are freed.
fn rebuild_ids(ids: &IdAllocator) -> IdAllocator {
    let mut built = IdAllocator::new(ids.first(), ids.last()).expect("a loaded range is valid");
    let mut ever = vec![true; usize::try_from(ids.capacity()).expect("a small range")];
    for r in ids.never_allocated_runs() {
        for id in r {
            ever[(id - ids.first()) as usize] = false;
        }
    }
    let ids_ever = || {
        (ids.first()..=ids.last())
            .zip(&ever)
            .filter(|(_, e)| **e)
            .map(|(id, _)| id)
    };
    for id in ids_ever() {
        built.allocate_id_at(id).expect("a free ID is allocated");
    }
    for id in ids_ever().filter(|&id| !ids.is_allocated(id)) {
        built.free_id(id).expect("an allocated ID is freed");
    }
    built
}

fn check_ids(data: &[u8], mut ids: IdAllocator) {
    if ids.capacity() > REBUILD_IDS {
        return;
    }
    let mut built = rebuild_ids(&ids);
    assert_eq!(
        ids, built,
        "loaded IdAllocator differs from the state built by calls"
    );
    // The input's bytes as calls; then both hand out the same IDs until none is left.
    for w in data.chunks(2) {
        let id = ids.first().saturating_add(u32::from(w[0]));
        let count = u32::from(*w.get(1).unwrap_or(&1) % 16) + 1;
        let (a, b) = match w[0] % 4 {
            0 => (ids.free_id(id).map(|()| id), built.free_id(id).map(|()| id)),
            1 => (ids.allocate_id_at(id), built.allocate_id_at(id)),
            2 => (
                ids.allocate_ids(count, 1 << (w[0] % 5)).map(|r| *r.start()),
                built
                    .allocate_ids(count, 1 << (w[0] % 5))
                    .map(|r| *r.start()),
            ),
            _ => (ids.allocate_id(), built.allocate_id()),
        };
        assert_eq!(a, b, "loaded and built IdAllocators answer differently");
    }
    loop {
        let (a, b) = (ids.allocate_id(), built.allocate_id());
        assert_eq!(a, b, "loaded and built IdAllocators hand out different IDs");
        if a.is_err() {
            break;
        }
    }
}

fn check_addresses(data: &[u8], loaded: &AddressAllocator<u32>) {
    let mut built = AddressAllocator::<u32>::new(loaded.space());
    for a in loaded.allocated() {
        built
            .reserve_with(a.range, *a.tag)
            .expect("a loaded range can be reserved");
    }
    let mut loaded = loaded.clone();
    for w in data.chunks(2).take(64) {
        let size = u64::from(*w.get(1).unwrap_or(&1)) + 1;
        let policy = if w[0] & 1 == 0 {
            AllocPolicy::FirstMatch
        } else {
            AllocPolicy::LastMatch
        };
        let Ok(req) = Request::new(size, 1 << (w[0] % 13), policy) else {
            continue;
        };
        let (a, b) = if w[0] % 3 == 0 {
            let nth = |x: &AddressAllocator<u32>| {
                let n = x.len();
                (n > 0).then(|| x.allocated().nth(usize::from(w[0]) % n).map(|a| a.range))?
            };
            match nth(&loaded) {
                Some(r) => (
                    loaded.free(&r).map(u64::from),
                    built.free(&r).map(u64::from),
                ),
                None => continue,
            }
        } else {
            (
                loaded.allocate_with(&req, 1).map(|r| r.start()),
                built.allocate_with(&req, 1).map(|r| r.start()),
            )
        };
        assert_eq!(
            a, b,
            "loaded and built AddressAllocators answer differently"
        );
        loaded
            .check_invariants()
            .expect("a loaded AddressAllocator keeps its invariants");
    }
    assert!(
        loaded
            .allocated()
            .map(|a| a.range)
            .eq(built.allocated().map(|a| a.range)),
        "loaded and built AddressAllocators differ"
    );
}

fuzz_target!(|data: &[u8]| {
    if let Ok(ids) = serde_json::from_slice::<IdAllocator>(data) {
        let saved = serde_json::to_vec(&ids).expect("a loaded IdAllocator saves");
        let again: IdAllocator = serde_json::from_slice(&saved).expect("a saved snapshot loads");
        assert!(
            ids.iter().eq(again.iter()),
            "IdAllocator snapshot does not round-trip"
        );
        check_ids(data, ids);
    }
    if let Ok(ranges) = serde_json::from_slice::<AddressAllocator<u32>>(data) {
        ranges
            .check_invariants()
            .expect("a loaded AddressAllocator keeps its invariants");
        let saved = serde_json::to_vec(&ranges).expect("a loaded AddressAllocator saves");
        let again: AddressAllocator<u32> =
            serde_json::from_slice(&saved).expect("a saved snapshot loads");
        let state = |a: &AddressAllocator<u32>| {
            a.allocated().map(|x| (x.range, *x.tag)).collect::<Vec<_>>()
        };
        assert_eq!(
            state(&ranges),
            state(&again),
            "AddressAllocator snapshot does not round-trip"
        );
        check_addresses(data, &ranges);
    }
});
