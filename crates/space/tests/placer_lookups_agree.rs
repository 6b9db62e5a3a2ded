//! What the placer's lookups say of one range agrees: `allocations` lists each range held as it
//! was placed or taken, once, and `owner_of` names that same range and owner at every address
//! of it inside a window; `release` gives back exactly what they name.

use memvisor_space::vm_memory::GuestAddress;
use memvisor_space::{GuestRange, Layout, Placer, Platform, Window, WindowKind};

fn range(base: u64, size: u64) -> GuestRange {
    GuestRange::new(GuestAddress(base), size).unwrap()
}

/// Checks that `allocations` and `owner_of` give one answer for everything `p` holds.
fn assert_lookups_agree(p: &Placer, windows: &[Window]) {
    let listed: Vec<(String, GuestRange)> =
        p.allocations().map(|(o, r)| (o.to_owned(), r)).collect();
    // Each range once.
    for (i, (_, r)) in listed.iter().enumerate() {
        assert!(
            listed[..i].iter().all(|(_, q)| q != r),
            "{r} listed twice: {listed:?}"
        );
    }
    // Every address of a listed range inside a window names that range and its owner.
    for (owner, r) in &listed {
        let parts: Vec<GuestRange> = windows
            .iter()
            .filter_map(|w| w.range().intersection(r))
            .collect();
        assert!(!parts.is_empty(), "{r} lies in no window");
        for part in parts {
            for at in [part.start(), part.last()] {
                assert_eq!(
                    p.owner_of(at),
                    Some((owner.as_str(), *r)),
                    "owner_of({:#x}) against the listing {listed:?}",
                    at.0
                );
            }
        }
        // And it is what `release` gives back.
        let mut q = p.clone();
        q.release(*r).unwrap();
        assert!(q.allocations().all(|(_, x)| x != *r));
    }
    // Every answer of `owner_of` inside a window is listed.
    for w in windows {
        for at in [w.start(), w.last_addr()] {
            if let Some((owner, r)) = p.owner_of(at) {
                assert!(
                    listed.iter().any(|(o, x)| o == owner && *x == r),
                    "owner_of({:#x}) = ({owner}, {r}) is not listed: {listed:?}",
                    at.0
                );
            }
        }
    }
}

#[test]
fn a_range_taken_across_windows_is_listed_once_as_taken() {
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let mut p = layout.placer();
    // The last device page and the first reserved page: two windows, one take.
    let both = range(0xfec0_0000 - 0x1000, 0x2000);
    p.take(both, "net0").unwrap();
    assert_eq!(
        p.allocations()
            .map(|(o, r)| (o.to_owned(), r))
            .collect::<Vec<_>>(),
        [("net0".to_owned(), both)]
    );
    assert_lookups_agree(&p, layout.windows());
}

#[test]
fn ranges_taken_past_window_edges_and_across_gaps_agree() {
    // Two device windows with a gap, and a RAM window touching the second.
    let device = |b: u64, s: u64| Window::new(WindowKind::Device, GuestAddress(b), s).unwrap();
    let windows = [
        device(0x1000_0000, 0x1000),
        device(0x1000_2000, 0x1000),
        Window::new(WindowKind::Ram, GuestAddress(0x1000_3000), 0x2000).unwrap(),
    ];
    let layout = Layout::new(GuestAddress(u64::MAX), windows).unwrap();
    let mut p = layout.placer();
    // Starting before the first window, across the gap, into the RAM window.
    let long = range(0x0fff_f000, 0x5000);
    p.take(long, "blk0").unwrap();
    // Past the last window's end.
    let tail = range(0x1000_4000, 0x3000);
    p.take(tail, "pmem0").unwrap();
    let listed: Vec<(&str, GuestRange)> = p.allocations().collect();
    assert_eq!(listed, [("blk0", long), ("pmem0", tail)]);
    assert_lookups_agree(&p, layout.windows());
    // Each listed range goes back as listed, and then nothing is left.
    for (_, r) in p.clone().allocations() {
        p.release(r).unwrap();
    }
    assert_eq!(p.allocations().count(), 0);
}

#[test]
fn a_platforms_reservations_are_listed_as_taken() {
    for platform in [Platform::x86_64(), Platform::aarch64()] {
        let layout = platform.layout().ram(1 << 30).build().unwrap();
        let mut p = platform.placer(&layout).unwrap();
        assert_lookups_agree(&p, layout.windows());
        p.take(range(0xfeb0_0000, 0x10_0000 + 0x1000), "x").ok();
        assert_lookups_agree(&p, layout.windows());
    }
}
