//! `baseline`: pushing `u64`s into a `std::vec::Vec` (in the memvisor column) against a
//! `std::collections::VecDeque`.
//!
//! It measures no memvisor code: it checks the harness, the report and the plots end to end on
//! a workload whose answer is well known (both grow by doubling, so the two should be close), and
//! is the template for a real group: one function per scenario, each contender given the same
//! work, figures in ns per push.

use std::collections::VecDeque;
use std::hint::black_box;

use crate::harness::{Bench, ns_per_op};
use crate::report::{Better, Row};

/// Element counts `std_vec_push` runs at; the last is the headline size.
pub const PUSH_COUNTS: [u64; 3] = [10_000, 100_000, 1_000_000];

/// Runs every scenario of the group.
pub fn run(bench: &Bench) -> Vec<Row> {
    PUSH_COUNTS
        .iter()
        .map(|&count| std_vec_push(bench, count))
        .collect()
}

/// `std_vec_push`: ns per push of `count` `u64`s into an empty container, the drop excluded.
pub fn std_vec_push(bench: &Bench, count: u64) -> Row {
    bench
        .scenario("std_vec_push", count, "ns/op", Better::Lower)
        .memvisor(|| {
            Ok(ns_per_op(count, || {
                let mut v = Vec::new();
                for i in 0..count {
                    v.push(black_box(i));
                }
                v
            }))
        })
        .peer("vecdeque", || {
            Ok(ns_per_op(count, || {
                let mut v = VecDeque::new();
                for i in 0..count {
                    v.push_back(black_box(i));
                }
                v
            }))
        })
        .run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn std_vec_push_small_count_measures_both() {
        let row = std_vec_push(&Bench::with_repeats(true, 1), 1_000);
        assert_eq!(row.scenario, "std_vec_push");
        assert_eq!(row.param, 1_000);
        assert!(row.memvisor.is_some());
        assert!(row.peers["vecdeque"].is_some());
        assert!(row.notes.is_empty());
    }
}
