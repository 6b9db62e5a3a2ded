//! Standard streams that are closed, or a pipe whose reader has gone (`memvisor plan | head
//! -c1`): the command never panics and exits with the status SPEC.md gives.

#![cfg(unix)]

use std::process::{Command, Stdio};

/// Runs the binary through `sh`, so that a stream can be closed with `<&-` or `>&-`.
fn with_redirection(args: &str, redirection: &str) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("exec \"$0\" {args} {redirection}"))
        .arg(env!("CARGO_BIN_EXE_memvisor"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn closed_standard_input_reads_as_an_empty_spec() {
    let out = with_redirection("plan -", "<&-");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains("<stdin>") && stderr.contains("[memory] table is missing"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn closed_standard_output_discards_the_output() {
    // The Rust runtime opens /dev/null where standard output is closed: the output goes
    // there and the command succeeds, as with `> /dev/null`.
    for args in ["plan", "plan --json", "init", "--version"] {
        let out = with_redirection(args, ">&-");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args}: {stderr}");
        assert!(stderr.is_empty(), "{args}: {stderr}");
    }
}

#[test]
fn a_pipe_without_reader_is_a_write_error_with_exit_code_1() {
    for args in [
        &["plan"][..],
        &["plan", "--json"][..],
        &["init"][..],
        &["completions", "bash"][..],
        &["--help"][..],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_memvisor"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Exit code 1, not death by SIGPIPE (no code) nor a panic (101).
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: writing the output: Broken pipe"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
