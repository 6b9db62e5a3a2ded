//! The `memvisor-bench` binary as a user runs it.

use std::process::Command;
use std::{env, fs};

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_memvisor-bench"))
}

#[test]
fn unknown_group_exits_2_listing_known_groups() {
    let output = bench()
        .args(["baseline", "no-such-group"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("unknown group `no-such-group`; known groups: "),
        "{stderr}"
    );
    assert!(stderr.contains("baseline"), "{stderr}");
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
        stdout.lines().any(|line| line.starts_with("baseline ")),
        "{stdout}"
    );
}

#[test]
fn baseline_run_writes_table_json_and_plot() {
    let dir = env::temp_dir().join(format!("memvisor-bench-it-{}", std::process::id()));
    let output = bench()
        .args(["--repeats", "1", "--out"])
        .arg(&dir)
        .arg("baseline")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("== baseline (full) =="), "{stdout}");
    assert!(stdout.contains("std_vec_push"), "{stdout}");
    assert!(stdout.contains("× vecdeque"), "{stdout}");

    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("baseline.json")).unwrap()).unwrap();
    assert_eq!(json["group"], "baseline");
    assert_eq!(json["quick"], false);
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for row in results {
        assert_eq!(row["scenario"], "std_vec_push");
        assert!(row["memvisor"].is_f64());
        assert!(row["peers"]["vecdeque"].is_f64());
    }
    let svg = fs::read_to_string(dir.join("baseline_std_vec_push.svg")).unwrap();
    assert!(svg.contains("vecdeque"));
    fs::remove_dir_all(&dir).unwrap();
}
