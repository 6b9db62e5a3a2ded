//! Golden-output tests of `plan`: the default spec and every example, as tables and as JSON.
//! Run with `MEMVISOR_BLESS=1` to rewrite the files under `tests/golden/` after an intended
//! change, and review the diff.

use std::path::PathBuf;

mod common;

use common::example;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `memvisor` in-process and returns its standard output, checking it succeeded.
fn run(args: &[&str]) -> String {
    let (code, out, err) = common::run(args);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

fn check(file: &str, actual: &str) {
    let path = root().join("tests/golden").join(file);
    if std::env::var_os("MEMVISOR_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with MEMVISOR_BLESS=1 to create it)",
            path.display()
        )
    });
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{file} differs from the output at line {}:\nexpected: {:?}\nactual:   {:?}\n\
             (MEMVISOR_BLESS=1 rewrites it)",
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

/// Each case: the golden file stem and the `plan` arguments.
fn cases() -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("default", vec![]),
        ("default-aarch64", vec!["--arch".into(), "aarch64".into()]),
        ("microvm", vec![example("microvm.toml")]),
        ("large-vm", vec![example("large-vm.toml")]),
        ("aarch64", vec![example("aarch64.toml")]),
    ]
}

#[test]
fn plan_table_matches_golden() {
    for (name, args) in cases() {
        let mut argv = vec!["plan"];
        argv.extend(args.iter().map(String::as_str));
        check(&format!("{name}.txt"), &run(&argv));
    }
}

#[test]
fn plan_json_matches_golden() {
    for (name, args) in cases() {
        let mut argv = vec!["plan", "--json"];
        argv.extend(args.iter().map(String::as_str));
        let text = run(&argv);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(
            value["map"].as_array().is_some_and(|m| !m.is_empty()),
            "{name}"
        );
        check(&format!("{name}.json"), &text);
    }
}

#[test]
fn plan_binary_prints_default_golden() {
    let out = common::binary(&["plan"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check("default.txt", &String::from_utf8(out.stdout).unwrap());
}

#[test]
fn plan_json_map_is_sorted_and_disjoint() {
    for (name, args) in cases() {
        let mut argv = vec!["plan", "--json"];
        argv.extend(args.iter().map(String::as_str));
        let value: serde_json::Value = serde_json::from_str(&run(&argv)).unwrap();
        let map = value["map"].as_array().unwrap();
        let hex = |v: &serde_json::Value| {
            u64::from_str_radix(v.as_str().unwrap().strip_prefix("0x").unwrap(), 16).unwrap()
        };
        for pair in map.windows(2) {
            let end = hex(&pair[0]["end"]);
            let next = hex(&pair[1]["start"]);
            assert!(end < next, "{name}: {} overlaps {}", pair[0], pair[1]);
        }
        for entry in map {
            let (start, end, size) = (
                hex(&entry["start"]),
                hex(&entry["end"]),
                hex(&entry["size"]),
            );
            assert_eq!(end - start + 1, size, "{name}: {entry}");
        }
    }
}

#[test]
fn init_prints_the_default_spec_which_plans_as_default() {
    let spec = run(&["init"]);
    assert_eq!(spec, memvisor_cli::spec::DEFAULT_SPEC);
    let path = common::scratch("init.toml");
    std::fs::write(&path, &spec).unwrap();
    let from_file = run(&["plan", path.to_str().unwrap()]);
    assert_eq!(from_file, run(&["plan"]));
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = run(&["completions", shell]);
        assert!(script.contains("memvisor"), "{shell}");
        assert!(script.contains("plan"), "{shell}");
    }
}

/// The committed JSON schemas match the output types (`MEMVISOR_BLESS=1` rewrites them).
#[test]
fn json_schemas_match_committed_files() {
    for (file, text) in [
        ("plan.schema.json", memvisor_cli::json::plan_schema()),
        ("error.schema.json", memvisor_cli::json::error_schema()),
        ("back.schema.json", memvisor_cli::json::back_schema()),
        ("probe.schema.json", memvisor_cli::json::probe_schema()),
        ("check.schema.json", memvisor_cli::json::check_schema()),
    ] {
        let path = root().join("schema").join(file);
        if std::env::var_os("MEMVISOR_BLESS").is_some() {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            committed, text,
            "{file} is stale: run with MEMVISOR_BLESS=1"
        );
    }
}

/// Every address and size in a plan's JSON is a hex string, every enum value snake_case.
#[test]
fn plan_json_is_versioned_hex_and_snake_case() {
    let plan: serde_json::Value =
        serde_json::from_str(&run(&["plan", "--json", &example("large-vm.toml")])).unwrap();
    assert_eq!(plan["schema_version"], 1);
    fn walk(v: &serde_json::Value, key: &str) {
        match v {
            serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| walk(v, k)),
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, key)),
            serde_json::Value::String(s)
                if ["start", "end", "size", "ram", "address_limit"].contains(&key) =>
            {
                assert!(
                    s.starts_with("0x") && u64::from_str_radix(&s[2..], 16).is_ok(),
                    "{key}: {s}"
                );
            }
            serde_json::Value::String(s) if ["type", "kind", "pages", "policy"].contains(&key) => {
                assert!(
                    s.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                    "{key}: {s}"
                );
            }
            serde_json::Value::Number(n) => {
                assert!(n.as_u64().is_some_and(|n| n < 1 << 53), "{key}: {n}");
            }
            _ => {}
        }
    }
    walk(&plan, "");
}
