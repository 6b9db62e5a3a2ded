//! Side-by-side benchmarks of memvisor against its peers.
//!
//! Speed and memory goals are measured here, never in timed tests: every figure compares memvisor
//! with real peer crates on the same workload in the same run, so the ratio holds on a noisy
//! shared machine where an absolute time does not. The command line runs the registered
//! [`groups`] and writes a report per group:
//!
//! ```text
//! cargo run --release -p memvisor-bench -- [--quick] [--out DIR] [--compare OLD] [GROUP ...]
//! ```
//!
//! - [`harness`]: the [`Bench`] context, contenders run interleaved (A B C, B C A, …) and reduced
//!   to medians, memvisor's variants kept apart from peers, timing helpers.
//! - [`report`]: result rows, `GROUP.json`, the printed table, human units.
//! - [`plot`]: one SVG per scaling scenario.
//! - [`compare`]: a run against an earlier report (`--compare`).
//! - [`summary`]: `summary.html`, every group's table and plots on one page.
//! - [`util`]: a deterministic RNG, a log-uniform size sampler, RSS and `Committed_AS` readers.
//! - [`mimalloc`]: the plain and the `MI_SECURE=4` builds of mimalloc, the arena group's peers.
//! - [`groups`]: the registry of groups; each group lives in `src/groups/<group>.rs`.
//! - [`cli`]: argument parsing and the run loop behind the binary.
//!
//! # Example
//!
//! A scenario with memvisor and one peer, turned into a report:
//!
//! ```
//! use std::hint::black_box;
//!
//! use memvisor_bench::harness::{Bench, ns_per_iter};
//! use memvisor_bench::report::{Better, GroupReport};
//!
//! let bench = Bench::new(true);
//! let data: Vec<u64> = (0..4096).collect();
//! let list: std::collections::LinkedList<u64> = data.iter().copied().collect();
//! let row = bench
//!     .scenario("sum", 4096, "ns/op", Better::Lower)
//!     .memvisor(|| Ok(ns_per_iter(100, |_| black_box(&data).iter().sum::<u64>())))
//!     .peer("linked-list", || Ok(ns_per_iter(100, |_| black_box(&list).iter().sum::<u64>())))
//!     .run();
//! let report = GroupReport::new("example", bench.quick(), vec![row]);
//! assert!(report.table().contains("× linked-list"));
//! assert!(report.to_json().contains("\"scenario\": \"sum\""));
//! ```

pub mod cli;
pub mod compare;
pub mod groups;
pub mod harness;
pub mod mimalloc;
pub mod plot;
pub mod report;
pub mod summary;
pub mod util;

use std::io;
use std::path::PathBuf;

pub use harness::{Bench, Contender, Measured, Sample, Scenario};
pub use report::{Better, GroupReport, Row};

/// Everything that can go wrong in a benchmark run outside the measured code itself (a failing
/// contender is not an error: it becomes a `null` figure with a note).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A group name on the command line is not registered.
    #[error("unknown group `{name}`; known groups: {}", known.join(", "))]
    UnknownGroup {
        /// The name given.
        name: String,
        /// Every registered group name.
        known: Vec<String>,
    },
    /// An option on the command line is not recognised.
    #[error("unknown option `{0}` (try --help)")]
    UnknownOption(String),
    /// An option that takes a value was given none.
    #[error("option `{0}` needs a value")]
    MissingValue(String),
    /// An option's value does not parse.
    #[error("invalid value `{value}` for option `{option}`")]
    InvalidValue {
        /// The option.
        option: String,
        /// The value given.
        value: String,
    },
    /// A group panicked outside its contenders (in its own setup code).
    #[error("group `{group}` panicked: {message}")]
    GroupPanicked {
        /// The group.
        group: String,
        /// The panic message.
        message: String,
    },
    /// A report file or folder could not be written.
    #[error("cannot write `{}`", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A plot could not be drawn.
    #[error("cannot draw `{}`: {reason}", path.display())]
    Plot {
        /// The SVG file.
        path: PathBuf,
        /// What the plotting library reported.
        reason: String,
    },
    /// A report's JSON does not have the expected form.
    #[error("malformed report JSON: {0}")]
    Json(#[source] serde_json::Error),
}

impl BenchError {
    /// The process exit code for this error: 2 for a command-line mistake, 1 otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use memvisor_bench::BenchError;
    ///
    /// assert_eq!(BenchError::UnknownOption("--fast".to_owned()).exit_code(), 2);
    /// ```
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::UnknownGroup { .. }
            | Self::UnknownOption(_)
            | Self::MissingValue(_)
            | Self::InvalidValue { .. } => 2,
            Self::GroupPanicked { .. } | Self::Io { .. } | Self::Plot { .. } | Self::Json(_) => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_unknown_group_lists_known() {
        let error = BenchError::UnknownGroup {
            name: "vmme".to_owned(),
            known: vec!["arena".to_owned(), "vmem".to_owned()],
        };
        assert_eq!(
            error.to_string(),
            "unknown group `vmme`; known groups: arena, vmem"
        );
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn display_io_names_path_and_keeps_source() {
        let error = BenchError::Io {
            path: PathBuf::from("/nope/x.json"),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(error.to_string(), "cannot write `/nope/x.json`");
        assert!(std::error::Error::source(&error).is_some());
        assert_eq!(error.exit_code(), 1);
    }

    #[test]
    fn display_option_errors_name_option() {
        assert_eq!(
            BenchError::MissingValue("--out".to_owned()).to_string(),
            "option `--out` needs a value"
        );
        assert_eq!(
            BenchError::InvalidValue {
                option: "--repeats".to_owned(),
                value: "many".to_owned()
            }
            .to_string(),
            "invalid value `many` for option `--repeats`"
        );
        assert_eq!(
            BenchError::GroupPanicked {
                group: "g".to_owned(),
                message: "boom".to_owned()
            }
            .to_string(),
            "group `g` panicked: boom"
        );
    }
}
