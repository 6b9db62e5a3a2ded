//! Arbitrary bytes as allocator snapshots (JSON): loading never panics, never hangs and, when it
//! succeeds, gives an allocator that saves to a snapshot which loads back to the same state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memvisor_resources::{AddressAllocator, IdAllocator};

fuzz_target!(|data: &[u8]| {
    if let Ok(ids) = serde_json::from_slice::<IdAllocator>(data) {
        let saved = serde_json::to_vec(&ids).expect("a loaded IdAllocator saves");
        let again: IdAllocator = serde_json::from_slice(&saved).expect("a saved snapshot loads");
        assert!(
            ids.iter().eq(again.iter()),
            "IdAllocator snapshot does not round-trip"
        );
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
    }
});
