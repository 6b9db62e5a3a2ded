//! The `memvisor-bench` binary as a user runs it.

use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_memvisor-bench"))
}

#[test]
fn unknown_group_exits_2_listing_known_groups() {
    let output = bench().args(["vmem", "no-such-group"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("unknown group `no-such-group`; known groups: "),
        "{stderr}"
    );
    assert!(stderr.contains("vmem"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn unknown_option_exits_2() {
    let output = bench().arg("--fast").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("unknown option `--fast`"), "{stderr}");
}

#[test]
fn help_prints_usage_and_exits_0() {
    let output = bench().arg("--help").output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.starts_with("usage: memvisor-bench"));
}

#[test]
fn list_names_registered_groups() {
    let output = bench().arg("--list").output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.lines().any(|line| line.starts_with("vmem ")),
        "{stdout}"
    );
}
