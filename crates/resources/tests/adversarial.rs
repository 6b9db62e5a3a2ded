//! Address sets crafted against a hash-priority treap, the index this crate used before its
//! AVL tree: the treap's shape was fixed by a hash of each start address, so addresses whose hash
//! rises (or falls) with the address turned it into a list.
//!
//! The fixtures in `tests/data` hold 20,000 page numbers each, LEB128-coded differences from the
//! previous one: `treap_rising_20000.bin` where the old priority rises with the address,
//! `treap_falling_20000.bin` where it falls. [`fixture_is_crafted`] checks that they are what
//! they claim; they were found by scanning pages in order and keeping each one whose priority
//! continues the run within a small step.

use memvisor_resources::{AddressAllocator, AddressRange, AllocPolicy};

const PAGE: u64 = 0x1000;
const RISING: &[u8] = include_bytes!("data/treap_rising_20000.bin");
const FALLING: &[u8] = include_bytes!("data/treap_falling_20000.bin");

/// The old treap's priority of a start address (a fixed 64-bit mixing function).
fn old_priority(start: u64) -> u32 {
    let mut z = start.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    u32::try_from(z >> 32).unwrap()
}

/// Start addresses of the fixture's one-page ranges, ascending.
fn starts(bytes: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let (mut page, mut delta, mut shift) = (0u64, 0u64, 0u32);
    for &b in bytes {
        delta |= u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            page += delta;
            out.push(page * PAGE);
            (delta, shift) = (0, 0);
        }
    }
    out
}

/// The AVL bound: at most `1.4405 * log2(n + 2) - 0.3277` levels.
fn avl_limit(n: usize) -> usize {
    let mut levels = 0;
    // Fibonacci trees are the sparsest AVL trees: height h needs at least F(h + 2) - 1 nodes.
    let (mut a, mut b) = (1usize, 2usize);
    while b - 1 <= n {
        (a, b) = (b, a + b);
        levels += 1;
    }
    levels
}

/// Runs `f` on a thread with a 2 MiB stack, as a VMM's worker thread might have.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

fn space_of(starts: &[u64]) -> AddressRange {
    AddressRange::new(starts[0], starts[starts.len() - 1] + 4 * PAGE).unwrap()
}

#[test]
fn fixture_is_crafted() {
    for (bytes, rising) in [(RISING, true), (FALLING, false)] {
        let s = starts(bytes);
        assert_eq!(s.len(), 20_000);
        for w in s.windows(2) {
            assert!(w[0] + PAGE <= w[1]);
            let (p, q) = (old_priority(w[0]), old_priority(w[1]));
            assert!(if rising { p < q } else { p > q });
        }
    }
}

#[test]
fn reserve_rising_hash_then_free_lowest_and_first_fit_succeeds() {
    on_small_stack(|| {
        let s = starts(RISING);
        let mut a = AddressAllocator::<()>::new(space_of(&s));
        for &start in &s {
            a.reserve(AddressRange::from_start_and_size(start, PAGE).unwrap())
                .unwrap();
        }
        assert!(
            a.index_height() <= avl_limit(a.len()),
            "height {}",
            a.index_height()
        );
        let lowest = AddressRange::from_start_and_size(s[0], PAGE).unwrap();
        a.free(&lowest).unwrap();
        assert_eq!(a.allocate(PAGE, PAGE, AllocPolicy::FirstMatch), Ok(lowest));
        assert_eq!(a.len(), 20_000);
        a.check_invariants().unwrap();
    });
}

#[test]
fn reserve_falling_hash_work_stays_n_log_n() {
    on_small_stack(|| {
        let s = starts(FALLING);
        let mut a = AddressAllocator::<()>::new(space_of(&s));
        for &start in &s {
            a.reserve(AddressRange::from_start_and_size(start, PAGE).unwrap())
                .unwrap();
        }
        let n = s.len() as u64;
        // Each insert walks one root-to-leaf path (at most 21 levels at this size); the old
        // treap walked the whole list here, about n^2 / 2 = 2 * 10^8 nodes.
        let work = a.index_work();
        assert!(work <= n * 24, "{work} nodes visited for {n} inserts");
        assert!(a.index_height() <= avl_limit(a.len()));
        for &start in s.iter().rev().step_by(2) {
            a.free(&AddressRange::from_start_and_size(start, PAGE).unwrap())
                .unwrap();
        }
        assert!(a.index_work() - work <= n / 2 * 2 * 24);
        a.check_invariants().unwrap();
    });
}

fn snapshot_json(starts: &[u64]) -> String {
    let space = space_of(starts);
    let mut json = format!(
        "{{\"space\":{{\"start\":{},\"end\":{}}},\"count\":{},\"allocations\":[",
        space.start(),
        space.end(),
        starts.len()
    );
    for (i, &s) in starts.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!(
            "{{\"range\":{{\"start\":{s},\"end\":{}}},\"tag\":null}}",
            s + PAGE - 1
        ));
    }
    json.push_str("]}");
    json
}

#[test]
fn snapshot_crafted_load_is_linear_and_balanced() {
    on_small_stack(|| {
        for bytes in [RISING, FALLING] {
            let s = starts(bytes);
            let mut a: AddressAllocator = serde_json::from_str(&snapshot_json(&s)).unwrap();
            assert_eq!(a.len(), s.len());
            // One pass over the sorted list builds the tree: n nodes of work.
            assert_eq!(a.index_work(), s.len() as u64);
            assert!(a.index_height() <= avl_limit(a.len()));
            a.check_invariants().unwrap();
            let lowest = AddressRange::from_start_and_size(s[0], PAGE).unwrap();
            a.free(&lowest).unwrap();
            assert_eq!(a.allocate(PAGE, PAGE, AllocPolicy::FirstMatch), Ok(lowest));
            a.check_invariants().unwrap();
        }
    });
}

#[test]
fn snapshot_unsorted_fails_and_builds_nothing() {
    let s = starts(RISING);
    let mut swapped = s[..100].to_vec();
    swapped.swap(10, 11);
    let err = serde_json::from_str::<AddressAllocator>(&snapshot_json(&swapped)).unwrap_err();
    assert!(err.to_string().contains("not sorted or overlap"), "{err}");
}
