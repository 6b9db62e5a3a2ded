//! A flag that would have no effect is refused as a usage mistake, never silently ignored.

/// Runs `memvisor ARGS` in-process.
fn run(args: &[&str]) -> (u8, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut argv = vec!["memvisor"];
    argv.extend_from_slice(args);
    let code = memvisor_cli::run(argv, &mut out, &mut err, false);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn firecracker_file() -> String {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/firecracker.json")
        .to_string_lossy()
        .into_owned()
}

fn microvm_file() -> String {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/microvm.toml")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn host_hugepage_size_without_a_cloud_hypervisor_format_is_a_usage_error() {
    let firecracker = firecracker_file();
    let microvm = microvm_file();
    let mut cases: Vec<Vec<&str>> = Vec::new();
    for command in ["plan", "back", "check"] {
        // The built-in default spec, a memvisor spec file, a Firecracker file.
        cases.push(vec![command, "--host-hugepage-size", "2M"]);
        cases.push(vec![command, "--host-hugepage-size", "1G", &microvm]);
        cases.push(vec![
            command,
            "--from",
            "memvisor",
            "--host-hugepage-size",
            "2M",
            &microvm,
        ]);
        cases.push(vec![
            command,
            "--from",
            "firecracker",
            "--host-hugepage-size",
            "2M",
            &firecracker,
        ]);
        cases.push(vec![
            command,
            "--json",
            "--host-hugepage-size",
            "2M",
            &microvm,
        ]);
    }
    cases.push(vec!["init", "--host-hugepage-size", "2M"]);
    cases.push(vec![
        "init",
        "--from",
        "firecracker",
        "--host-hugepage-size",
        "1G",
        &firecracker,
    ]);
    for args in cases {
        let (code, out, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        if args.contains(&"--json") {
            let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(doc["error"]["kind"], "usage", "{args:?}: {out}");
            let message = doc["error"]["message"].as_str().unwrap();
            assert!(message.contains("--host-hugepage-size"), "{message}");
        } else {
            assert!(out.is_empty(), "{args:?}: {out}");
            assert!(
                err.contains("--host-hugepage-size") && err.contains("cloud-hypervisor"),
                "{args:?}: {err}"
            );
        }
    }
}

#[test]
fn host_hugepage_size_with_a_cloud_hypervisor_format_is_taken() {
    let (code, out, err) = run(&[
        "plan",
        "--from",
        "cloud-hypervisor",
        "--host-hugepage-size",
        "1G",
        "size=2G,hugepages=on",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 GiB"), "{out}");
    let (code, _, err) = run(&[
        "check",
        "--from",
        "cloud-hypervisor",
        "--host-hugepage-size",
        "2M",
        "size=64M",
    ]);
    assert!(code == 0 || code == 1, "{err}");
}
