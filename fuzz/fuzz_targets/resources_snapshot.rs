//! Arbitrary bytes as allocator snapshots (JSON): loading never panics, never hangs and, when it
//! succeeds, gives an allocator that saves to a snapshot which loads back to the same state, and
//! that answers calls as the same state built by calls does. A load is also held to what the
//! crate promises it asks of the heap (see [`load_budget`]): a snapshot small on disk that
//! loads into much more fails the target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memvisor_resources::{AddressAllocator, AllocPolicy, IdAllocator, IdLoadLimits, Request};
use memvisor_testkit::counting_heap::{Counting, requested_by};

/// Counts the bytes each heap request asks for, on this thread.
#[global_allocator]
static GLOBAL: Counting = Counting;

/// The heap bytes loading a snapshot of `input` bytes may ask for. The crate promises (DESIGN.md,
/// Snapshots) that an ID snapshot allocates at most `IdLoadLimits::max_bitmap_bytes` of bitmap
/// (1 MiB by default, and its summary words, under 1/64 more) besides its decoded lists and a
/// node per run, and that an address snapshot loads in O(n) memory: so a fixed part, the
/// bitmap, and a part per input byte (a run or range takes at least 5 bytes of JSON and costs
/// its decoded entry, grown by doubling, and its node with its tag: under 64 bytes a byte).
fn load_budget(input: usize) -> u64 {
    let bitmap = IdLoadLimits::default().max_bitmap_bytes;
    (64 << 10) + bitmap + bitmap / 32 + 64 * input as u64
}

/// `load` of `data`, failing the target if it asks the heap for more than [`load_budget`].
fn load_within_budget<T>(data: &[u8], load: impl FnOnce() -> T, what: &str) -> T {
    let (out, bytes) = requested_by(load);
    let bytes = bytes as u64;
    let budget = load_budget(data.len());
    assert!(
        bytes <= budget,
        "loading {} bytes as {what} asked the heap for {bytes} bytes (budget {budget})",
        data.len()
    );
    out
}

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
    let ids = load_within_budget(
        data,
        || serde_json::from_slice::<IdAllocator>(data),
        "an IdAllocator",
    );
    if let Ok(ids) = ids {
        let saved = serde_json::to_vec(&ids).expect("a loaded IdAllocator saves");
        let again: IdAllocator = serde_json::from_slice(&saved).expect("a saved snapshot loads");
        assert!(
            ids.iter().eq(again.iter()),
            "IdAllocator snapshot does not round-trip"
        );
        check_ids(data, ids);
    }
    let ranges = load_within_budget(
        data,
        || serde_json::from_slice::<AddressAllocator<u32>>(data),
        "an AddressAllocator",
    );
    if let Ok(ranges) = ranges {
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
