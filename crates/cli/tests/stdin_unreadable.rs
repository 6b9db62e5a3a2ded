//! Standard input that cannot be read (open for writing only) is refused with the reason,
//! never taken for an empty spec.

#![cfg(unix)]

use std::process::Stdio;

mod common;

#[test]
fn spec_from_write_only_stdin_is_refused_as_unreadable() {
    let path = common::scratch(&format!("write-only-stdin-{}", std::process::id()));
    std::fs::write(&path, "[memory]\nsize = \"64MiB\"\n").unwrap();
    for command in ["plan", "check", "init"] {
        let mut args = vec![command];
        if command == "init" {
            args.extend(["--from", "cloud-hypervisor-json"]);
        }
        args.push("-");
        let stdin = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let output = common::binary_from(&args, Stdio::from(stdin));
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {err}");
        assert!(output.stdout.is_empty(), "{args:?}");
        assert!(
            err.contains("cannot read <stdin>") && err.contains("not open for reading"),
            "{args:?}: {err}"
        );
    }
    std::fs::remove_file(&path).unwrap();
}
