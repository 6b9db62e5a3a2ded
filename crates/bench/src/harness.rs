//! The measuring core: a [`Bench`] context, named [`Contender`]s run interleaved, and timing
//! helpers.
//!
//! # Model
//!
//! A *scenario* is one workload at one *parameter* (the size it scales with, `0` when there is
//! none). Each implementation that runs it is a [`Contender`]: a name and a closure that performs
//! the workload once and returns one [`Sample`], a figure in the scenario's unit (`Ok(812.0)` for
//! 812 ns per operation, say) or `Err(reason)` when that implementation cannot do the scenario.
//!
//! [`Bench::interleave`] calls the contenders in turn, A B C A B C …, for [`Bench::repeats`]
//! rounds, so that drift on a shared machine (frequency changes, other processes) hits every
//! contender alike, and reduces each contender's samples to their [`median`]. A contender that
//! returns `Err`, returns a non-finite number or panics is dropped from the remaining rounds and
//! reported with the reason; the others carry on.
//!
//! [`Bench::scenario`] wraps that in a builder which produces a report [`Row`] directly, the usual
//! way a group uses the harness:
//!
//! ```
//! use std::collections::VecDeque;
//! use std::hint::black_box;
//!
//! use memvisor_bench::harness::{Bench, ns_per_op};
//! use memvisor_bench::report::Better;
//!
//! let bench = Bench::new(true);
//! let n = 1_000u64;
//! let row = bench
//!     .scenario("push", n, "ns/op", Better::Lower)
//!     .memvisor(|| {
//!         Ok(ns_per_op(n, || {
//!             let mut v = Vec::new();
//!             for i in 0..n {
//!                 v.push(black_box(i));
//!             }
//!             v
//!         }))
//!     })
//!     .peer("vecdeque", || {
//!         Ok(ns_per_op(n, || {
//!             let mut v = VecDeque::new();
//!             for i in 0..n {
//!                 v.push_back(black_box(i));
//!             }
//!             v
//!         }))
//!     })
//!     .unsupported("linked-list", "no indexed push")
//!     .run();
//!
//! assert!(row.memvisor.is_some());
//! assert!(row.peers["vecdeque"].is_some());
//! assert_eq!(row.peers["linked-list"], None);
//! assert_eq!(row.notes["linked-list"], "no indexed push");
//! ```
//!
//! # Writing a contender
//!
//! - Do the setup that is not part of the figure outside the timed region (or outside the closure
//!   altogether: closures may borrow state prepared beforehand), time the workload with
//!   [`ns_per_op`], [`ns_per_iter`] or [`time`], and return the figure.
//! - Give every contender the same work: same sizes, same random seed (see
//!   [`SplitMix64`](crate::util::SplitMix64)), same access order.
//! - Map a peer's error to the reason: `peer_call().map_err(|e| format!("peer_call: {e}"))?`.
//! - Quick runs ([`Bench::quick`]) keep the same scenarios and sizes; only the repeat count drops.

use std::fmt;
use std::hint::black_box;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::report::{Better, Row};

/// Name under which memvisor's own contender is recorded; it fills [`Row::memvisor`].
pub const MEMVISOR: &str = "memvisor";

/// Repeats per figure in a full run.
pub const FULL_REPEATS: usize = 9;

/// Repeats per figure in a quick (`--quick`) run.
pub const QUICK_REPEATS: usize = 3;

/// One sample from one contender: a figure in the scenario's unit, or the reason the contender
/// cannot do the scenario.
pub type Sample = Result<f64, String>;

/// Settings shared by every scenario of a run: quick or full, and how many repeats per figure.
///
/// # Examples
///
/// ```
/// use memvisor_bench::harness::{Bench, FULL_REPEATS, QUICK_REPEATS};
///
/// assert_eq!(Bench::new(false).repeats(), FULL_REPEATS);
/// assert_eq!(Bench::new(true).repeats(), QUICK_REPEATS);
/// assert_eq!(Bench::with_repeats(true, 5).repeats(), 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bench {
    quick: bool,
    repeats: usize,
    progress: bool,
}

impl Bench {
    /// A context with the default repeat count: [`QUICK_REPEATS`] if `quick`, else
    /// [`FULL_REPEATS`]. Progress lines are off.
    #[must_use]
    pub fn new(quick: bool) -> Self {
        let repeats = if quick { QUICK_REPEATS } else { FULL_REPEATS };
        Self::with_repeats(quick, repeats)
    }

    /// A context with an explicit repeat count (at least 1; `0` is taken as 1).
    #[must_use]
    pub fn with_repeats(quick: bool, repeats: usize) -> Self {
        Self {
            quick,
            repeats: repeats.max(1),
            progress: false,
        }
    }

    /// Returns this context with progress lines (one per finished scenario, on stderr) switched
    /// on or off.
    #[must_use]
    pub fn with_progress(self, progress: bool) -> Self {
        Self { progress, ..self }
    }

    /// Whether this is a quick run: same scenarios and sizes, fewer repeats.
    #[must_use]
    pub fn quick(&self) -> bool {
        self.quick
    }

    /// Rounds per figure: every contender is sampled this many times.
    #[must_use]
    pub fn repeats(&self) -> usize {
        self.repeats
    }

    /// Whether a line is printed to stderr after each scenario.
    #[must_use]
    pub fn progress(&self) -> bool {
        self.progress
    }

    /// Runs `contenders` interleaved for [`repeats`](Self::repeats) rounds and returns, in the
    /// order given, each one's median or the reason it failed. Each round starts one contender
    /// later (A B C, B C A, C A B, …), so whatever the first or last place in a round costs
    /// (memory the system has not handed out recently, a frequency change) falls on all alike.
    ///
    /// A contender that returns `Err`, returns a NaN or infinite figure, or panics is not called
    /// again; its result is `Err` with the reason (for a panic, `panicked: ` and the message).
    ///
    /// # Examples
    ///
    /// ```
    /// use memvisor_bench::harness::{Bench, Contender};
    ///
    /// let mut next = 0.0;
    /// let results = Bench::with_repeats(false, 3).interleave(vec![
    ///     Contender::new("counter", || {
    ///         next += 1.0;
    ///         Ok(next)
    ///     }),
    ///     Contender::new("broken", || Err("cannot do it".to_owned())),
    /// ]);
    /// assert_eq!(results[0].result, Ok(2.0)); // median of 1, 2, 3
    /// assert_eq!(results[1].result, Err("cannot do it".to_owned()));
    /// ```
    pub fn interleave(&self, mut contenders: Vec<Contender<'_>>) -> Vec<Measured> {
        let mut samples: Vec<Vec<f64>> = contenders.iter().map(|_| Vec::new()).collect();
        let mut failures: Vec<Option<String>> = contenders.iter().map(|_| None).collect();
        let count = contenders.len();
        for round in 0..self.repeats {
            for step in 0..count {
                let index = (round + step) % count;
                if failures[index].is_some() {
                    continue;
                }
                match contenders[index].sample() {
                    Ok(value) => samples[index].push(value),
                    Err(reason) => failures[index] = Some(reason),
                }
            }
        }
        contenders
            .into_iter()
            .zip(samples.into_iter().zip(failures))
            .map(|(contender, (mut samples, failure))| {
                let result = match failure {
                    Some(reason) => Err(reason),
                    None => median(&mut samples).ok_or_else(|| "no samples".to_owned()),
                };
                Measured {
                    name: contender.name,
                    result,
                    samples,
                }
            })
            .collect()
    }

    /// Starts a scenario: `name` as listed in BENCH.md, the `param` it scales with (`0` when
    /// none), the `unit` of its figures (`"ns/op"`, `"ms"`, `"bytes"`, `"%"`, …) and which
    /// direction is `better`. Add contenders to the returned builder, then call
    /// [`Scenario::run`].
    pub fn scenario<'a>(&self, name: &str, param: u64, unit: &str, better: Better) -> Scenario<'a> {
        Scenario {
            bench: *self,
            row: Row::new(name, param, unit, better),
            contenders: Vec::new(),
            variants: Vec::new(),
            unsupported: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// One implementation taking part in a scenario: a name and a closure that returns one
/// [`Sample`] per call.
pub struct Contender<'a> {
    name: String,
    run: Box<dyn FnMut() -> Sample + 'a>,
}

impl<'a> Contender<'a> {
    /// A contender called `name` (use [`MEMVISOR`] for memvisor itself, the crate name for a
    /// peer) whose every call of `run` performs the workload once and returns one figure.
    #[must_use]
    pub fn new(name: &str, run: impl FnMut() -> Sample + 'a) -> Self {
        Self {
            name: name.to_owned(),
            run: Box::new(run),
        }
    }

    /// The contender's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes one sample, turning a panic or a non-finite figure into `Err`.
    fn sample(&mut self) -> Sample {
        match panic::catch_unwind(AssertUnwindSafe(|| (self.run)())) {
            Ok(Ok(value)) if value.is_finite() => Ok(value),
            Ok(Ok(value)) => Err(format!("non-finite figure {value}")),
            Ok(Err(reason)) => Err(reason),
            Err(payload) => Err(format!("panicked: {}", panic_message(payload.as_ref()))),
        }
    }
}

impl fmt::Debug for Contender<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Contender")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What [`Bench::interleave`] found for one contender.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// The contender's name.
    pub name: String,
    /// The median of its samples, or the reason it could not run the scenario.
    pub result: Sample,
    /// Its samples in the order taken (sorted if the median was computed); those taken before
    /// a failure are kept.
    pub samples: Vec<f64>,
}

/// A scenario being assembled: its row description plus the contenders that will run it.
/// Made by [`Bench::scenario`]; finished by [`Scenario::run`].
#[must_use = "a scenario does nothing until `run` is called"]
pub struct Scenario<'a> {
    bench: Bench,
    row: Row,
    contenders: Vec<Contender<'a>>,
    variants: Vec<String>,
    unsupported: Vec<(String, String)>,
    notes: Vec<(String, String)>,
}

impl<'a> Scenario<'a> {
    /// Adds memvisor's own contender (recorded under [`MEMVISOR`]).
    pub fn memvisor(self, run: impl FnMut() -> Sample + 'a) -> Self {
        self.peer(MEMVISOR, run)
    }

    /// Adds a peer called `name` (the crate name, e.g. `"vm-allocator"`, or a label such as
    /// `"raw-libc"` or `"std-vec"`).
    pub fn peer(mut self, name: &str, run: impl FnMut() -> Sample + 'a) -> Self {
        self.contenders.push(Contender::new(name, run));
        self
    }

    /// Adds a variant of memvisor called `name` (another mode or thread count of memvisor's own
    /// code, e.g. `"memvisor-parallel"`). It is measured interleaved with the others and
    /// recorded in [`Row::variants`], never as a peer and never in a speedup.
    pub fn variant(mut self, name: &str, run: impl FnMut() -> Sample + 'a) -> Self {
        self.variants.push(name.to_owned());
        self.contenders.push(Contender::new(name, run));
        self
    }

    /// Attaches a note to the figure of contender `name` (shown as `[k]` beside it in the table
    /// and kept in the JSON `notes`), for a figure obtained in an unusual way, such as a sample
    /// measured once and reused for the later repeats. A note from a failure replaces it.
    pub fn note(mut self, name: &str, text: &str) -> Self {
        self.notes.push((name.to_owned(), text.to_owned()));
        self
    }

    /// Records that peer `name` cannot do this scenario at all (it lacks the operation), without
    /// running anything: its figure is `null` and `reason` goes to the notes.
    pub fn unsupported(mut self, name: &str, reason: &str) -> Self {
        self.unsupported.push((name.to_owned(), reason.to_owned()));
        self
    }

    /// Runs the contenders interleaved (see [`Bench::interleave`]) and returns the finished row:
    /// medians in [`Row::memvisor`] and [`Row::peers`], `None` plus a note for every failure or
    /// unsupported peer. If no memvisor contender was added, `memvisor` is `None` with the note
    /// `"not measured"`.
    pub fn run(self) -> Row {
        let Self {
            bench,
            mut row,
            contenders,
            variants,
            unsupported,
            notes,
        } = self;
        for (name, text) in notes {
            row.notes.insert(name, text);
        }
        let has_memvisor = contenders.iter().any(|c| c.name == MEMVISOR);
        for measured in bench.interleave(contenders) {
            let value = match measured.result {
                Ok(value) => Some(value),
                Err(reason) => {
                    row.notes.insert(measured.name.clone(), reason);
                    None
                }
            };
            if measured.name == MEMVISOR {
                row.memvisor = value;
            } else if variants.contains(&measured.name) {
                row.variants.insert(measured.name, value);
            } else {
                row.peers.insert(measured.name, value);
            }
        }
        if !has_memvisor {
            row.notes
                .insert(MEMVISOR.to_owned(), "not measured".to_owned());
        }
        for (name, reason) in unsupported {
            row.peers.insert(name.clone(), None);
            row.notes.insert(name, reason);
        }
        if bench.progress {
            eprintln!("  {}", row.summary());
        }
        row
    }
}

impl fmt::Debug for Scenario<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scenario")
            .field("bench", &self.bench)
            .field("row", &self.row)
            .field("contenders", &self.contenders)
            .field("variants", &self.variants)
            .field("unsupported", &self.unsupported)
            .field("notes", &self.notes)
            .finish()
    }
}

/// The median of `values` (the mean of the two middle values for an even count), or `None` if
/// `values` is empty. Sorts `values` in place (NaN sorts last, by [`f64::total_cmp`]).
///
/// # Examples
///
/// ```
/// use memvisor_bench::harness::median;
///
/// assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
/// assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
/// assert_eq!(median(&mut []), None);
/// ```
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        Some(values[mid])
    } else {
        Some(f64::midpoint(values[mid - 1], values[mid]))
    }
}

/// Runs `f` once and returns its result (passed through [`black_box`]) with the wall time it
/// took.
///
/// # Examples
///
/// ```
/// use memvisor_bench::harness::time;
///
/// let (sum, elapsed) = time(|| (0..1000u64).sum::<u64>());
/// assert_eq!(sum, 499_500);
/// assert!(elapsed.as_secs() < 60);
/// ```
pub fn time<R>(f: impl FnOnce() -> R) -> (R, Duration) {
    let start = Instant::now();
    let result = black_box(f());
    (result, start.elapsed())
}

/// Runs `f` once, which performs `ops` operations, and returns the nanoseconds per operation.
/// The result of `f` goes through [`black_box`] inside the timed region (and is dropped after
/// it), so returning the built structure keeps the work from being optimised away without
/// timing its drop. `ops == 0` is taken as 1.
///
/// # Examples
///
/// ```
/// use std::hint::black_box;
///
/// use memvisor_bench::harness::ns_per_op;
///
/// let ns = ns_per_op(10_000, || (0..10_000u64).map(black_box).collect::<Vec<_>>());
/// assert!(ns >= 0.0);
/// ```
pub fn ns_per_op<R>(ops: u64, f: impl FnOnce() -> R) -> f64 {
    let (result, elapsed) = time(f);
    drop(result);
    as_ns(elapsed) / ops.max(1) as f64
}

/// Calls `f(i)` for `i` in `0..iters`, each result through [`black_box`], and returns the
/// nanoseconds per call. `i` is a `usize` so that it can index a prepared table of keys or
/// positions directly. `iters == 0` calls nothing and returns the bare timer overhead.
///
/// # Examples
///
/// ```
/// use memvisor_bench::harness::ns_per_iter;
///
/// let table: Vec<u64> = (0..1024).collect();
/// let order: Vec<usize> = (0..1024).rev().collect();
/// let ns = ns_per_iter(order.len(), |i| table[order[i]]);
/// assert!(ns >= 0.0);
/// ```
pub fn ns_per_iter<R>(iters: usize, mut f: impl FnMut(usize) -> R) -> f64 {
    let start = Instant::now();
    for i in 0..iters {
        black_box(f(black_box(i)));
    }
    as_ns(start.elapsed()) / iters.max(1) as f64
}

/// `d` in nanoseconds, as a float.
#[must_use]
pub fn as_ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

/// `d` in milliseconds, as a float.
#[must_use]
pub fn as_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "non-string panic payload"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_count_returns_middle() {
        assert_eq!(median(&mut [5.0, 1.0, 9.0, 3.0, 7.0]), Some(5.0));
    }

    #[test]
    fn median_even_count_returns_mean_of_middle_two() {
        assert_eq!(median(&mut [10.0, 1.0, 4.0, 2.0]), Some(3.0));
    }

    #[test]
    fn median_empty_returns_none() {
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn median_single_returns_it() {
        assert_eq!(median(&mut [42.0]), Some(42.0));
    }

    #[test]
    fn interleave_rotates_first_contender_each_round() {
        let log = std::cell::RefCell::new(Vec::new());
        let results = Bench::with_repeats(false, 3).interleave(vec![
            Contender::new("a", || {
                log.borrow_mut().push('a');
                Ok(1.0)
            }),
            Contender::new("b", || {
                log.borrow_mut().push('b');
                Ok(2.0)
            }),
        ]);
        assert_eq!(log.into_inner(), vec!['a', 'b', 'b', 'a', 'a', 'b']);
        assert_eq!(results[0].name, "a");
        assert_eq!(results[0].result, Ok(1.0));
        assert_eq!(results[1].result, Ok(2.0));
        assert_eq!(results[1].samples.len(), 3);
    }

    #[test]
    fn interleave_failing_contender_stops_being_called() {
        let mut calls = 0;
        let results = Bench::with_repeats(false, 5).interleave(vec![Contender::new("f", || {
            calls += 1;
            if calls == 2 {
                Err("second call fails".to_owned())
            } else {
                Ok(1.0)
            }
        })]);
        assert_eq!(calls, 2);
        assert_eq!(results[0].result, Err("second call fails".to_owned()));
        assert_eq!(results[0].samples, vec![1.0]);
    }

    #[test]
    fn scenario_variant_is_recorded_apart_from_peers() {
        let row = Bench::with_repeats(false, 1)
            .scenario("s", 0, "ms", Better::Lower)
            .memvisor(|| Ok(2.0))
            .variant("memvisor-parallel", || Ok(1.0))
            .peer("p", || Ok(4.0))
            .run();
        assert_eq!(row.variants["memvisor-parallel"], Some(1.0));
        assert!(!row.peers.contains_key("memvisor-parallel"));
        assert_eq!(row.speedup("p"), Some(2.0));
        assert_eq!(row.speedup("memvisor-parallel"), None);
    }

    #[test]
    fn scenario_note_kept_on_present_figure() {
        let row = Bench::with_repeats(false, 1)
            .scenario("s", 0, "ms", Better::Lower)
            .memvisor(|| Ok(2.0))
            .peer("p", || Ok(4.0))
            .note("p", "reused sample")
            .run();
        assert_eq!(row.peers["p"], Some(4.0));
        assert_eq!(row.notes["p"], "reused sample");
        let table = crate::report::GroupReport::new("g", false, vec![row]).table();
        assert!(table.contains("[1] s 0, p: reused sample"), "{table}");
    }

    #[test]
    fn interleave_panicking_contender_reports_message() {
        let results = Bench::with_repeats(false, 2).interleave(vec![
            Contender::new("p", || panic!("peer blew up")),
            Contender::new("ok", || Ok(3.0)),
        ]);
        assert_eq!(results[0].result, Err("panicked: peer blew up".to_owned()));
        assert_eq!(results[1].result, Ok(3.0));
    }

    #[test]
    fn interleave_nan_figure_is_failure() {
        let results =
            Bench::with_repeats(false, 2).interleave(vec![Contender::new("n", || Ok(f64::NAN))]);
        assert_eq!(results[0].result, Err("non-finite figure NaN".to_owned()));
    }

    #[test]
    fn with_repeats_zero_runs_once() {
        let mut calls = 0;
        let _ = Bench::with_repeats(true, 0).interleave(vec![Contender::new("c", || {
            calls += 1;
            Ok(0.0)
        })]);
        assert_eq!(calls, 1);
    }

    #[test]
    fn scenario_run_fills_row_with_medians_and_notes() {
        let mut x = 0.0;
        let row = Bench::with_repeats(false, 3)
            .scenario("s", 7, "ns/op", Better::Lower)
            .memvisor(|| {
                x += 10.0;
                Ok(x)
            })
            .peer("good", || Ok(5.0))
            .peer("bad", || Err("lacks it".to_owned()))
            .unsupported("absent", "no such operation")
            .run();
        assert_eq!(row.scenario, "s");
        assert_eq!(row.param, 7);
        assert_eq!(row.unit, "ns/op");
        assert_eq!(row.memvisor, Some(20.0));
        assert_eq!(row.peers["good"], Some(5.0));
        assert_eq!(row.peers["bad"], None);
        assert_eq!(row.peers["absent"], None);
        assert_eq!(row.notes["bad"], "lacks it");
        assert_eq!(row.notes["absent"], "no such operation");
        assert!(!row.notes.contains_key("good"));
    }

    #[test]
    fn scenario_run_without_memvisor_notes_it() {
        let row = Bench::new(true)
            .scenario("s", 0, "ms", Better::Lower)
            .peer("p", || Ok(1.0))
            .run();
        assert_eq!(row.memvisor, None);
        assert_eq!(row.notes[MEMVISOR], "not measured");
    }

    #[test]
    fn ns_per_op_zero_ops_does_not_divide_by_zero() {
        assert!(ns_per_op(0, || 1).is_finite());
        assert!(ns_per_iter(0, |i| i).is_finite());
    }

    #[test]
    fn duration_conversions_scale() {
        assert_eq!(as_ns(Duration::from_micros(3)), 3000.0);
        assert_eq!(as_ms(Duration::from_micros(1500)), 1.5);
    }
}
