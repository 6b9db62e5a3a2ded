//! Running `memvisor` from the integration tests: in-process through `memvisor_cli::run`, or
//! as the built binary.

// Each test file uses the part it needs.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// What an in-process run ends with: its exit code, standard output and standard error.
pub type Outcome = (u8, String, String);

/// Cloud Hypervisor's default huge page size pinned to 2 MiB, so that its plans do not depend
/// on the host.
pub const HUGE_PAGES_2M: [&str; 2] = ["--host-hugepage-size", "2M"];

/// Checks that a run refused its input: exit code 2, nothing on standard output, each of
/// `words` on standard error, no panic. Gives its standard error; `what` names the input in
/// the failure messages.
#[track_caller]
pub fn refused(what: &str, (code, out, err): Outcome, words: &[&str]) -> String {
    assert_eq!(code, 2, "{what}: {out}{err}");
    assert!(out.is_empty(), "{what}: {out}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    for w in words {
        assert!(err.contains(w), "{what}: {w} not in {err}");
    }
    err
}

/// Checks that a run planned its input: exit code 0 and a map with RAM in it.
#[track_caller]
pub fn planned(what: &str, (code, out, err): Outcome) {
    assert_eq!(code, 0, "{what}: {err}");
    assert!(out.contains("RAM "), "{what}: {out}");
}

/// Runs `memvisor ARGS` in-process, without a progress bar.
pub fn run(args: &[&str]) -> Outcome {
    Memvisor::new().run(args)
}

/// The path of the example spec or configuration `name` (under the workspace's `examples/`).
pub fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// `name` under the directory cargo gives the integration tests for their files.
pub fn scratch(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// An in-process `memvisor` with its fixed flags and whether it ticks a progress bar.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memvisor<'a> {
    flags: &'a [&'a str],
    progress: bool,
}

impl<'a> Memvisor<'a> {
    /// No fixed flag, no progress bar.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `flags` right after the command (the first of the arguments) of every run.
    pub fn flags(self, flags: &'a [&'a str]) -> Self {
        Self { flags, ..self }
    }

    /// Runs with the progress bar on (drawn only on a terminal) or off.
    pub fn progress(self, progress: bool) -> Self {
        Self { progress, ..self }
    }

    /// Runs `memvisor ARGS`: exit code and standard output and error as bytes.
    pub fn run_bytes(&self, args: &[&str]) -> (u8, Vec<u8>, Vec<u8>) {
        let mut argv = vec!["memvisor"];
        if let Some((command, rest)) = args.split_first() {
            argv.push(command);
            argv.extend_from_slice(self.flags);
            argv.extend_from_slice(rest);
        }
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = memvisor_cli::run(argv, &mut out, &mut err, self.progress);
        (code, out, err)
    }

    /// Runs `memvisor ARGS`: exit code, standard output and standard error (each UTF-8).
    pub fn run(&self, args: &[&str]) -> Outcome {
        let (code, out, err) = self.run_bytes(args);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    /// Runs `memvisor ARGS` with `contents` written to `file`, whose path stands in for each
    /// `FILE` of ARGS; `file` is removed after the run.
    pub fn run_on_file(
        &self,
        file: impl AsRef<Path>,
        contents: impl AsRef<[u8]>,
        args: &[&str],
    ) -> Outcome {
        let file = file.as_ref();
        std::fs::write(file, contents).unwrap();
        let path = file.to_str().unwrap();
        let args: Vec<&str> = args
            .iter()
            .map(|&a| if a == "FILE" { path } else { a })
            .collect();
        let outcome = self.run(&args);
        std::fs::remove_file(file).unwrap();
        outcome
    }
}

/// Starts the built `memvisor` binary with `args`, standard input from `stdin`, standard
/// output and error piped.
pub fn spawn(args: &[&str], stdin: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_memvisor"))
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs the built `memvisor` binary with `args` to its end, standard input from `stdin`.
pub fn binary_from(args: &[&str], stdin: Stdio) -> Output {
    spawn(args, stdin).wait_with_output().unwrap()
}

/// Runs the built `memvisor` binary with `args` and no standard input to read.
pub fn binary(args: &[&str]) -> Output {
    binary_from(args, Stdio::null())
}

/// Runs the built `memvisor` binary with `args`, `stdin` written to its standard input.
pub fn binary_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = spawn(args, Stdio::piped());
    let mut input = child.stdin.take().unwrap();
    // The command may stop reading early (it refuses long input): ignore a broken pipe.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().unwrap()
}
