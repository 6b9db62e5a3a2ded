//! The command line: argument parsing and the run loop behind the `memvisor-bench` binary.
//!
//! ```text
//! memvisor-bench [--quick] [--out DIR] [--repeats N] [--compare OLD] [--list] [GROUP ...]
//! ```
//!
//! With no group named, every registered group runs. An unknown group or option is reported
//! before anything runs, with exit code 2. For each group the table goes to stdout, progress and
//! the paths written to stderr.

use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::BenchError;
use crate::compare::{compare, load_old};
use crate::groups::{self, GROUPS, Group};
use crate::harness::Bench;
use crate::report::{GroupReport, default_out_dir};
use crate::summary::write_summary;

/// The `--help` text.
pub const USAGE: &str = "\
usage: memvisor-bench [OPTIONS] [GROUP ...]

Runs benchmark groups (all registered groups if none is named), prints a table per group and
writes GROUP.json plus one GROUP_SCENARIO.svg per scaling scenario, then summary.html (every
GROUP.json of the output folder on one page).

options:
  --quick        same scenarios and sizes, fewer repeats
  --out DIR      output folder (default: <workspace target>/memvisor-bench)
  --repeats N    repeats per figure (default: 3 with --quick, 9 without)
  --compare OLD  after each table, the change against an earlier run: OLD is a GROUP.json
                 file or a folder of them
  --list         list the registered groups and exit
  -h, --help     show this text and exit
";

/// Parsed command-line options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `--quick`: fewer repeats.
    pub quick: bool,
    /// `--out DIR`: the output folder; [`default_out_dir`] if `None`.
    pub out: Option<PathBuf>,
    /// `--repeats N`: overrides the repeat count.
    pub repeats: Option<usize>,
    /// `--compare OLD`: an earlier report file or folder to compare each group with.
    pub compare: Option<PathBuf>,
    /// `--list`: print the registered groups instead of running.
    pub list: bool,
    /// `-h` / `--help`: print [`USAGE`] instead of running.
    pub help: bool,
    /// Group names, in the order given; empty means all.
    pub groups: Vec<String>,
}

impl Options {
    /// The [`Bench`] context these options ask for, with progress lines on.
    #[must_use]
    pub fn bench(&self) -> Bench {
        let bench = match self.repeats {
            Some(repeats) => Bench::with_repeats(self.quick, repeats),
            None => Bench::new(self.quick),
        };
        bench.with_progress(true)
    }
}

/// Parses the arguments (without the program name). `--out` and `--repeats` take their value
/// as the next argument or after `=`; `--` ends the options.
///
/// # Errors
///
/// [`BenchError::UnknownOption`], [`BenchError::MissingValue`] or [`BenchError::InvalidValue`]
/// for a malformed command line. Group names are checked by [`run`], not here.
///
/// # Examples
///
/// ```
/// use memvisor_bench::cli::parse_args;
///
/// let options = parse_args(["--quick", "--out=/tmp/b", "vec"].map(String::from)).unwrap();
/// assert!(options.quick);
/// assert_eq!(options.out.as_deref(), Some(std::path::Path::new("/tmp/b")));
/// assert_eq!(options.groups, ["vec"]);
/// assert!(parse_args(["--fast".to_owned()]).is_err());
/// ```
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, BenchError> {
    let mut options = Options::default();
    let mut args = args.into_iter();
    let mut only_groups = false;
    while let Some(arg) = args.next() {
        if only_groups || !arg.starts_with('-') {
            options.groups.push(arg);
            continue;
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = |flag: &str| -> Result<String, BenchError> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| BenchError::MissingValue(flag.to_owned()))
        };
        match flag.as_str() {
            "--" if inline.is_none() => only_groups = true,
            "--quick" if inline.is_none() => options.quick = true,
            "--list" if inline.is_none() => options.list = true,
            "-h" | "--help" if inline.is_none() => options.help = true,
            "--out" => options.out = Some(PathBuf::from(value("--out")?)),
            "--compare" => options.compare = Some(PathBuf::from(value("--compare")?)),
            "--repeats" => {
                let text = value("--repeats")?;
                let repeats = text
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| BenchError::InvalidValue {
                        option: "--repeats".to_owned(),
                        value: text.clone(),
                    })?;
                options.repeats = Some(repeats);
            }
            _ => return Err(BenchError::UnknownOption(arg)),
        }
    }
    Ok(options)
}

/// Runs the groups of `registry` that `options` names (all if none) and returns their reports.
/// For each group: prints its table to stdout, writes `GROUP.json` and its plots to the output
/// folder, and lists the files written on stderr. A group that panics in its own code is
/// skipped (the others still run) and reported as the error at the end.
///
/// # Errors
///
/// [`BenchError::UnknownGroup`] before anything runs if a name is not registered;
/// [`BenchError::Io`] or [`BenchError::Plot`] if a report cannot be written;
/// [`BenchError::GroupPanicked`] if a group panicked.
pub fn run(options: &Options, registry: &[Group]) -> Result<Vec<GroupReport>, BenchError> {
    let chosen = groups::select(registry, &options.groups)?;
    let bench = options.bench();
    let out = options.out.clone().unwrap_or_else(default_out_dir);
    let mut reports = Vec::new();
    let mut first_error = None;
    for group in chosen {
        eprintln!(
            "running group `{}` ({} repeats per figure)",
            group.name,
            bench.repeats()
        );
        let rows = match panic::catch_unwind(AssertUnwindSafe(|| (group.run)(&bench))) {
            Ok(rows) => rows,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_owned());
                let error = BenchError::GroupPanicked {
                    group: group.name.to_owned(),
                    message,
                };
                eprintln!("error: {error}");
                first_error.get_or_insert(error);
                continue;
            }
        };
        let report = GroupReport::new(group.name, bench.quick(), rows);
        println!("{}", report.table());
        if let Some(old) = &options.compare {
            match load_old(old, group.name)? {
                Some(before) => println!("{}", compare(&before, &report)),
                None => eprintln!("no earlier `{}` report in {}", group.name, old.display()),
            }
        }
        let json = report.write_json(&out)?;
        eprintln!("wrote {}", json.display());
        for plot in report.write_plots(&out)? {
            eprintln!("wrote {}", plot.display());
        }
        reports.push(report);
    }
    if !reports.is_empty() {
        eprintln!("wrote {}", write_summary(&out)?.display());
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(reports),
    }
}

/// The whole program: parses `args` (without the program name), handles `--help` and `--list`,
/// runs the registered [`GROUPS`] and turns errors into a message on stderr and an exit code
/// (2 for command-line mistakes, 1 for failures while running).
pub fn main(args: impl IntoIterator<Item = String>) -> ExitCode {
    let result = parse_args(args).and_then(|options| {
        if options.help {
            print!("{USAGE}");
        } else if options.list {
            for group in GROUPS {
                println!("{:<12} {}", group.name, group.about);
            }
        } else {
            run(&options, GROUPS)?;
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("memvisor-bench: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::from(error.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{env, fs};

    use super::*;
    use crate::report::{Better, Row};

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn one_row(bench: &Bench) -> Vec<Row> {
        vec![
            bench
                .scenario("s", 1, "ns/op", Better::Lower)
                .memvisor(|| Ok(1.0))
                .peer("p", || Ok(2.0))
                .run(),
            bench
                .scenario("s", 10, "ns/op", Better::Lower)
                .memvisor(|| Ok(1.0))
                .peer("p", || Ok(2.0))
                .run(),
        ]
    }

    fn explode(_: &Bench) -> Vec<Row> {
        panic!("setup failed")
    }

    const REGISTRY: &[Group] = &[
        Group {
            name: "boom",
            about: "panics",
            run: explode,
        },
        Group {
            name: "tiny",
            about: "one scenario",
            run: one_row,
        },
    ];

    #[test]
    fn parse_args_defaults_when_empty() {
        assert_eq!(parse_args(args(&[])).unwrap(), Options::default());
    }

    #[test]
    fn parse_args_reads_every_option() {
        let options = parse_args(args(&[
            "vec",
            "--quick",
            "--out",
            "/x",
            "--repeats=4",
            "--compare",
            "/old",
            "--list",
            "arena",
        ]))
        .unwrap();
        assert_eq!(
            options,
            Options {
                quick: true,
                out: Some(PathBuf::from("/x")),
                repeats: Some(4),
                compare: Some(PathBuf::from("/old")),
                list: true,
                help: false,
                groups: args(&["vec", "arena"]),
            }
        );
    }

    #[test]
    fn parse_args_double_dash_ends_options() {
        let options = parse_args(args(&["--", "--quick"])).unwrap();
        assert!(!options.quick);
        assert_eq!(options.groups, ["--quick"]);
    }

    #[test]
    fn parse_args_unknown_option_is_usage_error() {
        let error = parse_args(args(&["--fast"])).unwrap_err();
        assert_eq!(error.to_string(), "unknown option `--fast` (try --help)");
        assert_eq!(error.exit_code(), 2);
        assert!(parse_args(args(&["--quick=yes"])).is_err());
    }

    #[test]
    fn parse_args_missing_value_is_usage_error() {
        let error = parse_args(args(&["--out"])).unwrap_err();
        assert_eq!(error.to_string(), "option `--out` needs a value");
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn parse_args_bad_repeats_is_usage_error() {
        for bad in ["0", "-1", "many"] {
            let error = parse_args(args(&["--repeats", bad])).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("invalid value `{bad}` for option `--repeats`")
            );
            assert_eq!(error.exit_code(), 2);
        }
    }

    #[test]
    fn options_bench_honours_quick_and_repeats() {
        let quick = parse_args(args(&["--quick"])).unwrap().bench();
        assert!(quick.quick());
        assert_eq!(quick.repeats(), crate::harness::QUICK_REPEATS);
        let fixed = parse_args(args(&["--repeats", "2"])).unwrap().bench();
        assert_eq!(fixed.repeats(), 2);
        assert!(!fixed.quick());
    }

    #[test]
    fn run_unknown_group_errors_before_running() {
        let dir =
            env::temp_dir().join(format!("memvisor-bench-cli-unknown-{}", std::process::id()));
        let mut options = parse_args(args(&["tiny", "nope"])).unwrap();
        options.out = Some(dir.clone());
        let error = run(&options, REGISTRY).unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown group `nope`; known groups: boom, tiny"
        );
        assert_eq!(error.exit_code(), 2);
        assert!(!dir.exists());
    }

    #[test]
    fn run_unknown_group_in_real_registry_lists_known_groups() {
        let options = parse_args(args(&["no-such-group"])).unwrap();
        let error = run(&options, GROUPS).unwrap_err();
        assert!(matches!(&error, BenchError::UnknownGroup { name, known }
            if name == "no-such-group" && known.iter().any(|k| k == "vmem")));
    }

    #[test]
    fn run_writes_json_and_plot_per_group() {
        let dir = env::temp_dir().join(format!("memvisor-bench-cli-run-{}", std::process::id()));
        let mut options = parse_args(args(&["--quick", "tiny"])).unwrap();
        options.out = Some(dir.clone());
        let reports = run(&options, REGISTRY).unwrap();
        assert_eq!(reports.len(), 1);
        assert!(reports[0].quick);
        let json = fs::read_to_string(dir.join("tiny.json")).unwrap();
        assert_eq!(GroupReport::from_json(&json).unwrap(), reports[0]);
        assert!(dir.join("tiny_s.svg").exists());
        let summary = fs::read_to_string(dir.join("summary.html")).unwrap();
        assert!(summary.contains("tiny_s.svg"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn run_with_compare_reads_earlier_report_of_same_group() {
        let dir = env::temp_dir().join(format!("memvisor-bench-cli-cmp-{}", std::process::id()));
        let old = dir.join("old");
        let mut options = parse_args(args(&["--quick", "tiny"])).unwrap();
        options.out = Some(old.clone());
        run(&options, REGISTRY).unwrap();
        options.out = Some(dir.join("new"));
        options.compare = Some(old.join("tiny.json"));
        assert_eq!(run(&options, REGISTRY).unwrap().len(), 1);
        options.compare = Some(old.join("missing.json"));
        assert_eq!(run(&options, REGISTRY).unwrap().len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn run_group_panic_reports_error_and_runs_others() {
        let dir = env::temp_dir().join(format!("memvisor-bench-cli-boom-{}", std::process::id()));
        let mut options = parse_args(args(&[])).unwrap();
        options.out = Some(dir.clone());
        let error = run(&options, REGISTRY).unwrap_err();
        assert_eq!(error.to_string(), "group `boom` panicked: setup failed");
        assert_eq!(error.exit_code(), 1);
        assert!(dir.join("tiny.json").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
