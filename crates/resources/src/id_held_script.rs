//! Random scripts on ranges far larger than the bitmap's floor, so that most allocations are
//! held as runs above the bitmap: after every step the index of those runs is checked (order,
//! balance, largest-gap bounds, gaps, last run's end) and the allocator against a set of the
//! allocated IDs, every answer compared with the naive one.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use super::*;
use crate::id_width::Sealed;
use crate::test_rng::xorshift;

/// The allocated IDs, in `u64`, and the naive answers.
struct Naive {
    first: u64,
    last: u64,
    set: BTreeSet<u64>,
}

impl Naive {
    /// The free stretches `lo..=hi` in increasing order.
    fn gaps(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut from = Some(self.first);
        let mut it = self.set.iter().copied();
        core::iter::from_fn(move || {
            loop {
                let lo = from?;
                match it.next() {
                    Some(id) => {
                        from = id.checked_add(1).filter(|&f| f <= self.last);
                        if id > lo {
                            return Some((lo, id - 1));
                        }
                    }
                    None => {
                        from = None;
                        return Some((lo, self.last));
                    }
                }
            }
        })
    }

    fn fit(&self, count: u64, align: u64) -> Option<(u64, u64)> {
        self.gaps().find_map(|(lo, hi)| {
            let a = lo.checked_next_multiple_of(align)?;
            let end = a.checked_add(count - 1)?;
            (end <= hi).then_some((a, end))
        })
    }

    fn all_in(&self, lo: u64, hi: u64) -> bool {
        self.set.range(lo..=hi).count() as u64 == hi - lo + 1
    }

    fn none_in(&self, lo: u64, hi: u64) -> bool {
        self.set.range(lo..=hi).next().is_none()
    }
}

fn check<I: Id>(a: &IdAllocator<I>, m: &Naive, step: usize, what: &str) {
    if let Err(e) = a.far.check() {
        panic!("step {step} ({what}): held runs' index: {e}");
    }
    let held: u64 = a.far.iter().map(|(lo, hi)| hi - lo + 1).sum();
    assert_eq!(a.held_ids, held, "step {step} ({what}): held count");
    assert!(
        a.far
            .iter()
            .next()
            .is_none_or(|(lo, _)| lo >= a.bitmap_ids()),
        "step {step} ({what}): a held run inside the bitmap"
    );
    assert!(
        a.iter().map(|i| i.to_u64()).eq(m.set.iter().copied()),
        "step {step} ({what}): allocated IDs differ"
    );
    assert_eq!(a.used(), m.set.len() as u64, "step {step} ({what}): used");
}

/// One script of `steps` calls on `first..=last` (2^22 IDs or fewer), IDs drawn around
/// `centers` (offsets) so that runs are held, merged, split and moved into the bitmap.
#[allow(clippy::too_many_lines)]
fn script<I: Id>(seed: u64, first: u64, last: u64, steps: usize) {
    let mut next = xorshift(seed);
    let span = last - first;
    let mut a =
        IdAllocator::<I>::with_range(I::from_u64(first).unwrap(), I::from_u64(last).unwrap())
            .unwrap();
    let mut m = Naive {
        first,
        last,
        set: BTreeSet::new(),
    };
    let id = |v: u64| I::from_u64(v).unwrap();
    let centers = [0, 1 << 16, span / 3, span / 2, span - span / 8, span];
    for step in 0..steps {
        let c = centers[usize::try_from(next() % centers.len() as u64).unwrap()];
        let off = c.saturating_add(next() % 600).saturating_sub(300).min(span);
        let at = first + off;
        let small = 1 + next() % 40;
        let before = a.clone();
        let what;
        match next() % 12 {
            0 | 1 => {
                what = "allocate_id_at";
                let got = a.allocate_id_at(id(at)).map(Sealed::to_u64);
                if m.set.insert(at) {
                    assert_eq!(got, Ok(at), "step {step}: {what}({at})");
                } else {
                    assert_eq!(got, Err(Error::IdAlreadyAllocated(at)), "step {step}");
                }
            }
            2 | 3 => {
                what = "allocate_ids_at";
                let hi = at.saturating_add(small - 1).min(last);
                let n = u32::try_from(hi - at + 1).unwrap();
                let got = a.allocate_ids_at(id(at), n);
                if m.none_in(at, hi) {
                    assert_eq!(got, Ok(id(at)..=id(hi)), "step {step}: {what}({at}, {n})");
                    m.set.extend(at..=hi);
                } else {
                    assert!(got.is_err(), "step {step}: {what}({at}, {n}): {got:?}");
                }
            }
            4 | 5 => {
                // Free an allocated ID (the first at or after `at`, or the last of its run, so
                // that runs shrink from either end), or a free one.
                what = "free_id";
                let mut target = m.set.range(at..).next().copied().unwrap_or(at);
                if next().is_multiple_of(2) {
                    while target < last && m.set.contains(&target) && m.set.contains(&(target + 1))
                    {
                        target += 1;
                    }
                }
                let got = a.free_id(id(target));
                if m.set.remove(&target) {
                    assert_eq!(got, Ok(()), "step {step}: {what}({target})");
                } else {
                    assert!(got.is_err(), "step {step}: {what}({target})");
                }
            }
            6 => {
                what = "free_ids";
                // Part of the allocated run at or after `at`.
                let lo = m.set.range(at..).next().copied().unwrap_or(at);
                let mut hi = lo;
                while hi < last && m.set.contains(&(hi + 1)) && hi - lo < small {
                    hi += 1;
                }
                let (lo, hi) = if next().is_multiple_of(2) && hi > lo {
                    (lo + 1, hi)
                } else {
                    (lo, hi)
                };
                let got = a.free_ids(id(lo)..=id(hi));
                if m.all_in(lo, hi) {
                    assert_eq!(got, Ok(()), "step {step}: {what}({lo}..={hi})");
                    for v in lo..=hi {
                        m.set.remove(&v);
                    }
                } else {
                    assert!(got.is_err(), "step {step}: {what}({lo}..={hi})");
                }
            }
            7..=9 => {
                what = "allocate_ids";
                // A batch of the whole range (or more) only once something is allocated, so
                // that it fails (or takes all but an ID at an end) and the set stays small.
                let count = match next() % 6 {
                    1 | 2 if m.set.is_empty() => small,
                    0 => 1,
                    1 => span + 1,
                    2 => span + 2,
                    3 => 100 + next() % 400,
                    _ => small * (1 + next() % 20),
                }
                .min(u64::from(u32::MAX));
                let align = 1u64 << (next() % 64);
                let n = u32::try_from(count).unwrap();
                let got = a.allocate_ids(n, align);
                match m.fit(count, align) {
                    Some((lo, hi)) => {
                        assert_eq!(
                            got,
                            Ok(id(lo)..=id(hi)),
                            "step {step}: {what}({count}, {align})"
                        );
                        m.set.extend(lo..=hi);
                    }
                    None => assert_eq!(
                        got,
                        Err(Error::OutOfIds {
                            count: n,
                            alignment: align
                        }),
                        "step {step}: {what}({count}, {align})"
                    ),
                }
            }
            10 => {
                what = "allocate_id";
                let got = a.allocate_id().map(Sealed::to_u64);
                match m.fit(1, 1) {
                    Some((v, _)) => {
                        assert_eq!(got, Ok(v), "step {step}: {what}");
                        m.set.insert(v);
                    }
                    None => assert!(got.is_err(), "step {step}: {what}"),
                }
            }
            _ => {
                what = "allocate_many";
                let n = 1 + next() % 8;
                let got = a.allocate_many(u32::try_from(n).unwrap());
                let want: Vec<u64> = m
                    .gaps()
                    .flat_map(|(lo, hi)| lo..=hi)
                    .take(usize::try_from(n).unwrap())
                    .collect();
                if want.len() as u64 == n {
                    assert_eq!(
                        got.map(|v| v.into_iter().map(Sealed::to_u64).collect::<Vec<_>>()),
                        Ok(want.clone()),
                        "step {step}: {what}({n})"
                    );
                    m.set.extend(want);
                } else {
                    assert!(got.is_err(), "step {step}: {what}({n})");
                }
            }
        }
        if m.set.len() as u64 == before.used() && a != before {
            panic!("step {step} ({what}): a call that changed nothing changed the allocator");
        }
        check(&a, &m, step, what);
        if step % 100 == 99 {
            copies(&a, &m, step);
        }
    }
}

/// A clone and, with the `serde` feature, an allocator loaded from a snapshot are equal to
/// `a`, their index of held runs is true, and they answer the next batch request as `a` does.
fn copies<I: Id>(a: &IdAllocator<I>, m: &Naive, step: usize) {
    #[cfg_attr(not(feature = "serde"), allow(unused_mut))]
    let mut copies = alloc::vec![a.clone()];
    #[cfg(feature = "serde")]
    copies.push(
        IdAllocator::from_snapshot(&a.snapshot(), &crate::IdLoadLimits::default())
            .unwrap_or_else(|e| panic!("step {step}: snapshot: {e}")),
    );
    for (k, c) in copies.iter_mut().enumerate() {
        assert!(*c == *a, "step {step}: copy {k} differs");
        check(c, m, step, "copy");
        for (count, align) in [(1, 1), (300, 1), (301, 64), (2000, 1)] {
            let want = a.clone().allocate_ids(count, align);
            assert_eq!(
                c.clone().allocate_ids(count, align),
                want,
                "step {step}: copy {k}"
            );
        }
    }
}

/// The scripts of one range: 2^22 IDs from `first`.
fn scripts<I: Id>(seed: u64, first: u64) {
    let steps = if cfg!(miri) { 60 } else { 1500 };
    let seeds = if cfg!(miri) { 1 } else { 2 };
    for s in 0..seeds {
        script::<I>(seed + s, first, first + ((1 << 22) - 1), steps);
    }
}

#[test]
fn held_runs_index_stays_true_from_zero() {
    scripts::<u32>(1, 0);
}

#[test]
fn held_runs_index_stays_true_from_an_unaligned_first() {
    scripts::<u32>(101, 77);
}

#[test]
fn held_runs_index_stays_true_up_to_u32_max() {
    scripts::<u32>(201, u64::from(u32::MAX) - (1 << 22) + 1);
}

#[test]
fn held_runs_index_stays_true_up_to_u64_max() {
    scripts::<u64>(301, u64::MAX - (1 << 22) + 1);
}

#[test]
fn held_runs_index_stays_true_in_a_u64_window() {
    scripts::<u64>(401, 1 << 40);
}
