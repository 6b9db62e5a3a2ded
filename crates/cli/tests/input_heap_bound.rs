//! Whatever the input, reading and checking it takes at most 32 MiB of heap, 32 times the
//! largest input read (1 MiB), as SPEC.md's Limits promise: the binary runs on hostile inputs
//! of each kind under a data limit of 32 times their size (`ulimit -d`, which bounds the heap
//! and every private writable mapping, so the memory the process starts with counts too) and
//! refuses each with exit code 2 and its error, where an allocation past the limit would abort
//! it. Each is of the largest size, but the list of Cloud Hypervisor devices, a quarter of it
//! under a quarter of the limit (its heap grows with the entries; read whole, it takes the
//! longest, which the test keeps short).

#![cfg(target_os = "linux")]

mod common;

use std::process::{Child, Stdio};

use common::scratch;
use memvisor_cli::spec::MAX_SPEC_BYTES;

/// The heap each byte of input may take.
const HEAP_PER_BYTE: usize = 32;

/// `prefix`, then as many `unit`s joined by `sep` as fit with `suffix` in `size` bytes.
fn fill_to(size: usize, prefix: &str, unit: &str, sep: &str, suffix: &str) -> String {
    let n = (size - prefix.len() - suffix.len() + sep.len()) / (unit.len() + sep.len());
    let text = format!(
        "{prefix}{}{unit}{suffix}",
        format!("{unit}{sep}").repeat(n - 1)
    );
    assert!(text.len() <= size);
    text
}

/// [`fill_to`] the spec limit.
fn fill(prefix: &str, unit: &str, sep: &str, suffix: &str) -> String {
    fill_to(MAX_SPEC_BYTES, prefix, unit, sep, suffix)
}

/// Starts `memvisor plan ARGS FILE` with `text` in FILE (left for the caller to remove) under
/// a data limit of [`HEAP_PER_BYTE`] times the size of `text` (rounded up to 64 KiB).
fn plan_limited(name: &str, text: &str, args: &[&str]) -> (std::path::PathBuf, Child) {
    let path = scratch(name);
    std::fs::write(&path, text).unwrap();
    let heap_kib = (HEAP_PER_BYTE * text.len().next_multiple_of(64 << 10)) >> 10;
    let script = format!("ulimit -d {heap_kib} && exec \"$0\" \"$@\"");
    let child = std::process::Command::new("sh")
        .args(["-c", &script, env!("CARGO_BIN_EXE_memvisor"), "plan"])
        .args(args)
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (path, child)
}

#[test]
#[cfg_attr(miri, ignore)]
fn largest_hostile_inputs_are_refused_within_the_heap_bound() {
    let ch = r#"{"payload": {"kernel": "k"}, "memory": {"size": 1073741824}, "#;
    // All at once, each in a process of its own.
    let runs: Vec<_> = [
        // A Cloud Hypervisor device list of empty entries: each one is a PCI device.
        (
            "heap-ch-net.json",
            fill_to(
                MAX_SPEC_BYTES / 4,
                &format!(r#"{ch}"net": ["#),
                "{}",
                ",",
                "]}",
            ),
            &["--from", "cloud-hypervisor-json"][..],
            "PCI devices on PCI segment 0",
        ),
        // A spec's value of one array of values, one a line.
        (
            "heap-toml-array.toml",
            fill("[memory]\nsize = [\n", "1", ",\n", "]\n"),
            &[][..],
            "memory.size",
        ),
        // A multi-line string of lines.
        (
            "heap-toml-lines.toml",
            fill("[memory]\nsize = \"\"\"", "a", "\n", "\"\"\"\n"),
            &[][..],
            "memory.size",
        ),
        // White space alone.
        (
            "heap-toml-blank.toml",
            " ".repeat(MAX_SPEC_BYTES),
            &[][..],
            "[memory]",
        ),
        // A Firecracker file of drives.
        (
            "heap-fc-drives.json",
            fill(
                r#"{"boot-source": {"kernel_image_path": "k"}, "drives": ["#,
                "{}",
                ",",
                "]}",
            ),
            &["--from", "firecracker"][..],
            "device entries",
        ),
    ]
    .into_iter()
    .map(|(name, text, args, words)| (name, plan_limited(name, &text, args), words))
    .collect();
    for (name, (path, child), words) in runs {
        let out = child.wait_with_output().unwrap();
        std::fs::remove_file(&path).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.starts_with("error: "), "{name}: {err}");
        assert!(err.contains(words), "{name}: {err}");
    }
}
