//! Large vectors built with `huge_pages(true)` ask for transparent huge pages once they commit
//! whole huge pages; small ones, and vectors with the default small pages, do not. Linux only: the
//! advice is read back from the `VmFlags` of `/proc/self/smaps` (`hg` is `MADV_HUGEPAGE`), which
//! does not depend on whether the kernel then finds free huge pages.
#![cfg(all(target_os = "linux", not(miri)))]

use memvisor_vmem::CommitMode;
use memvisor_vmem::vec::{Builder, Vec as MemVec};

const HUGE: usize = 2 << 20;

/// Whether the mapping holding `addr` carries the huge-page advice.
fn advised_huge(addr: usize) -> bool {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            inside = (start..end).contains(&addr);
        } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
            return flags.split_whitespace().any(|flag| flag == "hg");
        }
    }
    panic!("no mapping holds {addr:#x}");
}

fn grow_owned(builder: Builder, elements: usize) -> MemVec<u64> {
    let mut v = builder.build::<u64>().unwrap();
    for i in 0..elements {
        v.push(i as u64);
    }
    v
}

#[test]
fn owned_vec_advises_whole_huge_pages_past_the_first() {
    let v = grow_owned(Builder::new(4 << 20).huge_pages(true), 3 * HUGE / 8);
    let base = v.as_ptr() as usize;
    assert_eq!(base % HUGE, 0, "a huge-page vector starts on a huge page");
    assert!(v.committed_bytes().is_multiple_of(HUGE));
    assert!(advised_huge(base + HUGE));
    assert!(advised_huge(base + 2 * HUGE));
}

#[test]
fn small_or_default_vectors_are_not_advised() {
    // Committed less than a huge page: small pages only, even with a large capacity.
    let small = grow_owned(Builder::new(4 << 20).huge_pages(true), 1000);
    assert!(!advised_huge(small.as_ptr() as usize));
    assert!(small.committed_bytes() < HUGE);
    let off = grow_owned(Builder::new(4 << 20), 3 * HUGE / 8);
    let base = off.as_ptr() as usize;
    assert!(!advised_huge(base + HUGE));
    assert!(!advised_huge(base + 2 * HUGE));
    // A capacity under two huge pages never uses them.
    let tiny = grow_owned(Builder::new(HUGE / 8 + 10).huge_pages(true), HUGE / 8 + 10);
    assert!(!advised_huge(tiny.as_ptr() as usize));
}

#[test]
fn concurrent_vec_advises_in_both_modes() {
    for mode in [CommitMode::Protected, CommitMode::Sparse] {
        let v = Builder::new(4 << 20)
            .mode(mode)
            .huge_pages(true)
            .build_concurrent::<u64>()
            .unwrap();
        for i in 0..3 * HUGE / 8 {
            v.push(i as u64);
        }
        let base = v.reservation().as_ptr() as usize;
        assert_eq!(base % HUGE, 0);
        assert!(advised_huge(base + HUGE), "{mode:?}");
        assert!(advised_huge(base + 2 * HUGE), "{mode:?}");
        assert!(v.iter().copied().eq(0..(3 * HUGE / 8) as u64));
        let small = Builder::new(4 << 20)
            .huge_pages(true)
            .build_concurrent::<u64>()
            .unwrap();
        small.push(1);
        assert!(!advised_huge(small.reservation().as_ptr() as usize));
    }
}

#[test]
fn concurrent_pushes_racing_huge_page_growth_and_advice_all_land() {
    use std::sync::atomic::{AtomicBool, Ordering};

    use memvisor_vmem::{Advice, HugePageAdvice};

    /// Large elements keep the pushes few for the bytes grown.
    type Element = [u64; 32];
    let size = size_of::<Element>();
    // A huge page and a half of elements from two threads: growth crosses a huge page (and
    // advises it) while a third thread keeps advising the whole reservation.
    let per_thread = 3 * HUGE / (4 * size);
    for mode in [CommitMode::Protected, CommitMode::Sparse] {
        let v = Builder::new((4 << 20) / size)
            .mode(mode)
            .huge_pages(true)
            .build_concurrent::<Element>()
            .unwrap();
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let (v, done) = (&v, &done);
            let pushers: std::vec::Vec<_> = (0..2u64)
                .map(|t| {
                    s.spawn(move || {
                        for i in 0..per_thread as u64 {
                            v.push([t << 32 | i; 32]);
                        }
                    })
                })
                .collect();
            s.spawn(move || {
                let r = v.reservation();
                while !done.load(Ordering::Relaxed) {
                    r.advise(0, r.len(), Advice::DontDump).unwrap();
                    r.advise_huge_pages(0, r.len(), HugePageAdvice::Huge)
                        .unwrap();
                    std::thread::yield_now();
                }
            });
            for pusher in pushers {
                pusher.join().unwrap();
            }
            done.store(true, Ordering::Relaxed);
        });
        let mut seen: std::vec::Vec<u64> = v.iter().map(|e| e[0]).collect();
        seen.sort_unstable();
        let want: std::vec::Vec<u64> = (0..2u64)
            .flat_map(|t| (0..per_thread as u64).map(move |i| t << 32 | i))
            .collect();
        assert_eq!(seen, want, "{mode:?}");
        assert!(v.iter().all(|e| e.iter().all(|&x| x == e[0])), "{mode:?}");
        assert!(
            advised_huge(v.reservation().as_ptr() as usize + HUGE),
            "{mode:?}"
        );
    }
}
