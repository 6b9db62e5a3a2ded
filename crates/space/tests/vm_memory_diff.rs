//! A snapshot against vm-memory's own `GuestMemoryMmap<AtomicBitmap>` of the same ranges, call
//! for call, over layouts and calls proptest draws (see `support/vm_memory_diff.rs`, which the
//! `space_vm_memory_diff` fuzz target runs for longer, with large regions of 2 MiB): a short
//! run, with large regions of 64 pages.
#![cfg(target_os = "linux")]
#![cfg(not(miri))] // vm-memory's own mmap and memfds: Miri has neither
#![allow(clippy::cast_possible_truncation)]

#[path = "support/vm_memory_diff.rs"]
mod vm_memory_diff;

use proptest::prelude::*;
use vm_memory_diff::{Limits, run};

const LIMITS: Limits = Limits {
    steps: 32,
    large: 64 * 4096,
};

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn same_results_as_vm_memory(data in prop::collection::vec(any::<u8>(), 0..320)) {
        run(&data, LIMITS);
    }
}
