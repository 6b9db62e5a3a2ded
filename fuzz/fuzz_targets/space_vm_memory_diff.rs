//! A snapshot against vm-memory's own `GuestMemoryMmap<AtomicBitmap>` built from the same
//! ranges, call for call, both read from the input: the comparison of
//! `crates/space/tests/support/vm_memory_diff.rs` (which says what it builds, calls and
//! compares), here with up to 48 calls and at most two regions of 2 MiB, so that an input takes
//! about a second at most.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/space/tests/support/vm_memory_diff.rs"]
mod vm_memory_diff;

use vm_memory_diff::{Limits, run};

const LIMITS: Limits = Limits {
    steps: 48,
    large: 2 << 20,
};

fuzz_target!(|data: &[u8]| run(data, LIMITS));
