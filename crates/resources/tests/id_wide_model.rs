//! Model-based property test on wide ID ranges: the scripts of `tests/id_model.rs` keep the
//! bitmap within a few words, so the summary and top levels (one summary word per 4096 IDs, one
//! top word per 2^18) are barely used there. Here the IDs cluster around those boundaries, runs
//! fill and free hundreds of thousands of IDs at once, and the model is a set of intervals, so
//! every answer is checked at any range size.

use std::collections::BTreeMap;

use memvisor_resources::{Error, IdAllocator, IdLoadLimits};
use proptest::prelude::*;
use proptest::test_runner::RngAlgorithm;

const CASES: u32 = if cfg!(miri) { 4 } else { 150 };

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(CASES);
    if cfg!(miri) {
        config.failure_persistence = None;
    }
    // The cases come from proptest's XorShift generator: its default ChaCha is slow unoptimized
    // (`addr_model` took 2.6 times as long with it, `id_wide_model` 1.1 times).
    config.rng_algorithm = RngAlgorithm::XorShift;
    config
}

/// Disjoint, non-adjacent inclusive intervals.
#[derive(Clone, Debug, Default)]
struct Intervals(BTreeMap<u64, u64>);

impl Intervals {
    fn containing(&self, x: u64) -> Option<(u64, u64)> {
        self.0
            .range(..=x)
            .next_back()
            .filter(|&(_, &e)| e >= x)
            .map(|(&s, &e)| (s, e))
    }

    fn contains(&self, x: u64) -> bool {
        self.containing(x).is_some()
    }

    /// The smallest member of `lo..=hi`.
    fn first_in(&self, lo: u64, hi: u64) -> Option<u64> {
        if self.contains(lo) {
            return Some(lo);
        }
        self.0.range(lo..=hi).next().map(|(&s, _)| s)
    }

    /// The smallest non-member of `lo..=hi`.
    fn first_not_in(&self, lo: u64, hi: u64) -> Option<u64> {
        match self.containing(lo) {
            Some((_, e)) => e.checked_add(1).filter(|&x| x <= hi),
            None => Some(lo),
        }
    }

    fn insert(&mut self, mut lo: u64, mut hi: u64) {
        // Merge with everything that overlaps or touches.
        if let Some((s, e)) = lo.checked_sub(1).and_then(|p| self.containing(p)) {
            lo = lo.min(s);
            hi = hi.max(e);
        }
        let touching: Vec<(u64, u64)> = self
            .0
            .range(lo..=hi.saturating_add(1))
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.0.remove(&s);
            hi = hi.max(e);
        }
        self.0.remove(&lo);
        self.0.insert(lo, hi);
    }

    fn remove(&mut self, lo: u64, hi: u64) {
        let mut hit: Vec<(u64, u64)> = self.0.range(lo..=hi).map(|(&s, &e)| (s, e)).collect();
        if let Some(c) = self.containing(lo) {
            hit.push(c);
        }
        for (s, e) in hit {
            self.0.remove(&s);
            if s < lo {
                self.0.insert(s, lo - 1);
            }
            if e > hi {
                self.0.insert(hi + 1, e);
            }
        }
    }

    fn count(&self) -> u64 {
        self.0.iter().map(|(&s, &e)| e - s + 1).sum()
    }
}

struct Model {
    first: u64,
    last: u64,
    allocated: Intervals,
    ever: Intervals,
}

#[derive(Clone, Debug)]
enum Op {
    Allocate,
    AllocateAt(u64),
    AllocateRun { count: u32, alignment: u64 },
    AllocateMany(u32),
    AllocateRunAt { first: u64, count: u32 },
    Free(u64),
    FreeRun { first: u64, last: u64 },
}

#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Id(u64),
    Run(u64, u64),
    Ids(Vec<u64>),
    Freed,
}

impl Model {
    fn out(&self, id: u64) -> Error {
        Error::IdOutOfRange {
            id,
            first: self.first,
            last: self.last,
        }
    }

    fn free_error(&self, id: u64) -> Error {
        if self.ever.contains(id) {
            Error::IdAlreadyFree(id)
        } else {
            Error::IdNeverAllocated(id)
        }
    }

    fn take(&mut self, lo: u64, hi: u64) {
        self.allocated.insert(lo, hi);
        self.ever.insert(lo, hi);
    }

    fn apply(&mut self, op: &Op) -> Result<Answer, Error> {
        let (first, last) = (self.first, self.last);
        match *op {
            Op::Allocate => {
                let id = self
                    .allocated
                    .first_not_in(first, last)
                    .ok_or(Error::OutOfIds {
                        count: 1,
                        alignment: 1,
                    })?;
                self.take(id, id);
                Ok(Answer::Id(id))
            }
            Op::AllocateAt(id) => {
                if !(first..=last).contains(&id) {
                    return Err(self.out(id));
                }
                if self.allocated.contains(id) {
                    return Err(Error::IdAlreadyAllocated(id));
                }
                self.take(id, id);
                Ok(Answer::Id(id))
            }
            Op::AllocateRun { count, alignment } => {
                if count == 0 {
                    return Err(Error::ZeroIdCount);
                }
                if !alignment.is_power_of_two() {
                    return Err(Error::InvalidAlignment(alignment));
                }
                let out = Error::OutOfIds { count, alignment };
                let mut s = first.checked_next_multiple_of(alignment).ok_or(out)?;
                loop {
                    let e = s.checked_add(u64::from(count) - 1).ok_or(out)?;
                    if e > last {
                        return Err(out);
                    }
                    match self.allocated.first_in(s, e) {
                        None => break,
                        Some(x) => {
                            s = (x + 1).checked_next_multiple_of(alignment).ok_or(out)?;
                        }
                    }
                }
                let e = s + u64::from(count) - 1;
                self.take(s, e);
                Ok(Answer::Run(s, e))
            }
            Op::AllocateMany(count) => {
                if count == 0 {
                    return Err(Error::ZeroIdCount);
                }
                let available = last - first + 1 - self.allocated.count();
                if available < u64::from(count) {
                    return Err(Error::NotEnoughIds {
                        requested: count,
                        available,
                    });
                }
                let mut ids = Vec::new();
                for _ in 0..count {
                    let id = self.allocated.first_not_in(first, last).unwrap();
                    self.take(id, id);
                    ids.push(id);
                }
                Ok(Answer::Ids(ids))
            }
            Op::AllocateRunAt { first: f, count } => {
                if count == 0 {
                    return Err(Error::ZeroIdCount);
                }
                if !(first..=last).contains(&f) {
                    return Err(self.out(f));
                }
                let e = f + u64::from(count) - 1;
                if e > last {
                    return Err(self.out(e));
                }
                if let Some(x) = self.allocated.first_in(f, e) {
                    return Err(Error::IdAlreadyAllocated(x));
                }
                self.take(f, e);
                Ok(Answer::Run(f, e))
            }
            Op::Free(id) => {
                if !(first..=last).contains(&id) {
                    return Err(self.out(id));
                }
                if !self.allocated.contains(id) {
                    return Err(self.free_error(id));
                }
                self.allocated.remove(id, id);
                Ok(Answer::Freed)
            }
            Op::FreeRun { first: f, last: l } => {
                if f > l {
                    return Err(Error::ZeroIdCount);
                }
                if !(first..=last).contains(&f) {
                    return Err(self.out(f));
                }
                let lo_not = {
                    let hi = l.min(last);
                    // The first non-member of f..=hi.
                    let mut x = f;
                    loop {
                        match self.allocated.containing(x) {
                            Some((_, e)) if e >= hi => break None,
                            Some((_, e)) => x = e + 1,
                            None => break Some(x),
                        }
                    }
                };
                if let Some(x) = lo_not {
                    return Err(self.free_error(x));
                }
                if l > last {
                    return Err(self.out(last + 1));
                }
                self.allocated.remove(f, l);
                Ok(Answer::Freed)
            }
        }
    }
}

fn apply(a: &mut IdAllocator, op: &Op) -> Result<Answer, Error> {
    let narrow = |v: u64| u32::try_from(v).unwrap();
    match *op {
        Op::Allocate => a.allocate_id().map(|i| Answer::Id(i.into())),
        Op::AllocateAt(id) => a.allocate_id_at(narrow(id)).map(|i| Answer::Id(i.into())),
        Op::AllocateRun { count, alignment } => a
            .allocate_ids(count, alignment)
            .map(|r| Answer::Run((*r.start()).into(), (*r.end()).into())),
        Op::AllocateMany(count) => a
            .allocate_many(count)
            .map(|v| Answer::Ids(v.into_iter().map(u64::from).collect())),
        Op::AllocateRunAt { first, count } => a
            .allocate_ids_at(narrow(first), count)
            .map(|r| Answer::Run((*r.start()).into(), (*r.end()).into())),
        Op::Free(id) => a.free_id(narrow(id)).map(|()| Answer::Freed),
        Op::FreeRun { first, last } => a
            .free_ids(narrow(first)..=narrow(last))
            .map(|()| Answer::Freed),
    }
}

/// 64 * 64 IDs per summary word, 64 times that per top word.
const SUMMARY_IDS: u64 = 1 << 12;
const TOP_IDS: u64 = 1 << 18;

/// Offsets near the ends of the range and near summary and top word boundaries.
fn offset(span: u64) -> impl Strategy<Value = u64> + Clone {
    let boundary = prop_oneof![
        (1u64..8).prop_map(|k| k * SUMMARY_IDS),
        (1u64..3).prop_map(|k| k * TOP_IDS),
        (1u64..3).prop_map(|k| k * TOP_IDS - SUMMARY_IDS),
    ];
    prop_oneof![
        2 => 0u64..200,
        3 => (boundary, 0u64..300).prop_map(|(b, d)| (b + d).saturating_sub(150)),
        1 => (0u64..200).prop_map(move |d| span - d.min(span)),
        1 => 0..=span,
    ]
    .prop_map(move |o| o.min(span + 1))
}

fn count() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => 1u32..70,
        2 => 60u32..5000,
        1 => 5000u32..300_000,
        1 => Just(0u32),
    ]
}

fn op(first: u64, span: u64) -> impl Strategy<Value = Op> {
    let id = offset(span).prop_map(move |o| first + o);
    prop_oneof![
        4 => Just(Op::Allocate),
        2 => id.clone().prop_map(Op::AllocateAt),
        3 => (count(), prop_oneof![5 => (0u32..13).prop_map(|k| 1u64 << k), 1 => Just(3u64)])
            .prop_map(|(count, alignment)| Op::AllocateRun { count, alignment }),
        1 => (0u32..300).prop_map(Op::AllocateMany),
        3 => (id.clone(), count()).prop_map(|(first, count)| Op::AllocateRunAt { first, count }),
        3 => id.clone().prop_map(Op::Free),
        3 => (id, count()).prop_map(|(f, n)| Op::FreeRun { first: f, last: f + u64::from(n).saturating_sub(1) }),
    ]
}

fn script() -> impl Strategy<Value = (u64, u64, Vec<Op>)> {
    (
        prop_oneof![Just(0u64), Just(100), Just(4095)],
        prop_oneof![
            Just(TOP_IDS + 5000),
            Just(3 * TOP_IDS - 1),
            Just(2 * TOP_IDS + 77)
        ],
    )
        .prop_flat_map(|(first, span)| {
            (
                Just(first),
                Just(first + span),
                prop::collection::vec(op(first, span), 0..60),
            )
        })
}

fn run(first: u64, last: u64, ops: &[Op]) -> Result<(), String> {
    let narrow = |v: u64| u32::try_from(v).unwrap();
    let mut a = IdAllocator::new(narrow(first), narrow(last)).unwrap();
    let mut m = Model {
        first,
        last,
        allocated: Intervals::default(),
        ever: Intervals::default(),
    };
    for (step, op) in ops.iter().enumerate() {
        let before = a.clone();
        let got = apply(&mut a, op);
        let want = m.apply(op);
        if got != want {
            return Err(format!("step {step} {op:?}: got {got:?}, want {want:?}"));
        }
        if got.is_err() && a != before {
            return Err(format!(
                "step {step} {op:?}: a failed call changed the state"
            ));
        }
        if a.used() != m.allocated.count() {
            return Err(format!(
                "step {step}: used {} vs {}",
                a.used(),
                m.allocated.count()
            ));
        }
    }
    let runs: Vec<(u64, u64)> = a
        .allocated_runs()
        .map(|r| ((*r.start()).into(), (*r.end()).into()))
        .collect();
    let want: Vec<(u64, u64)> = m.allocated.0.iter().map(|(&s, &e)| (s, e)).collect();
    if runs != want {
        return Err(format!("runs {runs:?} vs {want:?}"));
    }
    let iter_count = a.iter().count() as u64;
    if iter_count != m.allocated.count() {
        return Err(format!("iter yields {iter_count} IDs"));
    }
    let roomy = IdLoadLimits {
        max_bitmap_bytes: 1 << 24,
    };
    let back = IdAllocator::from_snapshot(&a.snapshot(), &roomy).map_err(|e| e.to_string())?;
    if back != a {
        return Err("the snapshot does not load back equal".into());
    }
    Ok(())
}

fn xorshift(mut s: u64) -> impl FnMut() -> u64 {
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

/// A script on `first..=first + 2^22 - 1` that first holds `runs` short runs spread over the
/// range, all but the few under the bitmap's 64 Ki-ID floor above the bitmap, with stretches of
/// every length around the spacing between them; then asks for batches of about that length
/// (most of which no stretch holds, at alignments up to 2^9) while frees widen stretches and
/// allocations at exact IDs narrow them, so that the search through the index of held runs
/// runs both when it fails and when it finds a stretch (and large batches found make the
/// bitmap grow over held runs).
fn held_runs_script(seed: u64, first: u64, runs: u64) -> (u64, Vec<Op>) {
    let mut next = xorshift(seed);
    let size = 1u64 << 22;
    let last = first + size - 1;
    let spacing = size / runs;
    let mut ops = Vec::new();
    for i in 0..runs {
        let at = first + i * spacing + next() % 40;
        // The last run reaches the range's end, so the tail past it holds nothing.
        let len = if i == runs - 1 {
            last - at + 1
        } else {
            1 + next() % 60
        };
        ops.push(Op::AllocateRunAt {
            first: at,
            count: u32::try_from(len).unwrap(),
        });
    }
    for _ in 0..200 {
        let at = first + next() % size;
        ops.push(match next() % 8 {
            0..=3 => Op::AllocateRun {
                count: u32::try_from(spacing - 120 + next() % 160).unwrap(),
                alignment: 1 << (next() % 10),
            },
            4 => Op::Free(at),
            5 => Op::FreeRun {
                first: at,
                last: (at + next() % 200).min(last),
            },
            6 => Op::AllocateAt(at),
            _ => Op::AllocateRunAt {
                first: at,
                count: u32::try_from((1 + next() % 50).min(last - at + 1)).unwrap(),
            },
        });
    }
    (last, ops)
}

#[test]
fn batches_among_many_held_runs_match_interval_model() {
    let seeds: u64 = if cfg!(miri) { 1 } else { 4 };
    for seed in 1..=seeds {
        let first = [0, 77, u64::from(u32::MAX) - (1 << 22) + 1][(seed % 3) as usize];
        let runs = if cfg!(miri) {
            60
        } else {
            200 + 100 * (seed % 4)
        };
        let (last, ops) = held_runs_script(seed.wrapping_mul(0x2545_f491_4f6c_dd1d), first, runs);
        if let Err(e) = run(first, last, &ops) {
            panic!("seed {seed}: {e}");
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn id_allocator_wide_ranges_match_interval_model((first, last, ops) in script()) {
        if let Err(e) = run(first, last, &ops) {
            prop_assert!(false, "{}", e);
        }
    }
}
