//! Whatever the input, reading and checking it takes at most 64 MiB of heap, 64 times the
//! largest input read (1 MiB), as SPEC.md's Limits promise: the binary runs on hostile inputs
//! of each kind under a data limit of 64 times their size (`ulimit -d`: RLIMIT_DATA, which
//! since Linux 4.7 bounds the heap and every private writable mapping, large allocations
//! included, so the memory the process starts with counts too) and refuses each with exit
//! code 2 and its error, where an allocation past the limit would abort it (which the test
//! names). The costliest per byte found of each kind is among them; each is of the largest
//! size but the Cloud Hypervisor and Firecracker lists, a quarter of them under a quarter of the
//! limit (their heap grows with the entries; read whole, they take the longest, which the test
//! keeps short). The costliest spec runs under half the limit too, where it fails to allocate: the
//! limit bites.

#![cfg(target_os = "linux")]

mod common;

use std::process::{Child, Stdio};

use common::scratch;
use memvisor_cli::spec::MAX_SPEC_BYTES;

/// The heap each byte of input may take.
const HEAP_PER_BYTE: usize = 64;

/// What Rust's allocation error handler writes before it aborts the process.
const ALLOCATION_FAILED: &str = "memory allocation of";

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

/// `prefix`, then entries of `unit` joined by commas, its `X` replaced by a hexadecimal number
/// of its own, as many as fit with `suffix` in `size` bytes.
fn list_of_ids(size: usize, prefix: &str, unit: &str, suffix: &str) -> String {
    let mut text = prefix.to_owned();
    for n in 0u32.. {
        let entry = unit.replace('X', &format!("{n:x}"));
        if text.len() + entry.len() + 1 + suffix.len() > size {
            break;
        }
        if n > 0 {
            text.push(',');
        }
        text.push_str(&entry);
    }
    text.push_str(suffix);
    text
}

/// [`fill_to`] the spec limit.
fn fill(prefix: &str, unit: &str, sep: &str, suffix: &str) -> String {
    fill_to(MAX_SPEC_BYTES, prefix, unit, sep, suffix)
}

/// Starts `memvisor plan ARGS FILE` with `text` in FILE (left for the caller to remove) under
/// a data limit of [`HEAP_PER_BYTE`] times the size of `text` (rounded up to 64 KiB), divided
/// by `divisor`.
fn plan_limited(
    name: &str,
    text: &str,
    args: &[&str],
    divisor: usize,
) -> (std::path::PathBuf, Child) {
    let path = scratch(name);
    std::fs::write(&path, text).unwrap();
    let heap_kib = ((HEAP_PER_BYTE * text.len().next_multiple_of(64 << 10)) / divisor) >> 10;
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
        // A Cloud Hypervisor list of rate limit groups (not PCI devices, so not refused at
        // the 32nd), each with an id of its own, which the ids' namespace keeps; the last
        // repeats the first.
        (
            "heap-ch-groups.json",
            list_of_ids(
                MAX_SPEC_BYTES / 4,
                &format!(r#"{ch}"rate_limit_groups": ["#),
                r#"{"id":"X"}"#,
                r#",{"id":"0"}]}"#,
            ),
            &["--from", "cloud-hypervisor-json"][..],
            "is the id of rate_limit_groups[0].id too",
        ),
        // A Cloud Hypervisor list of Landlock rules (kept as the entries' text, each then
        // read as an object of its own); the last lacks its access.
        (
            "heap-ch-landlock.json",
            fill(
                &format!(r#"{ch}"landlock_rules": ["#),
                r#"{"path":"","access":""}"#,
                ",",
                r#",{"path":""}]}"#,
            ),
            &["--from", "cloud-hypervisor-json"][..],
            "missing field `access`",
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
        // A Firecracker file of metadata service interfaces (not devices, so not counted
        // as such), each read as a string of its own; the last names no interface.
        (
            "heap-fc-mmds.json",
            fill_to(
                MAX_SPEC_BYTES / 4,
                r#"{"boot-source": {"kernel_image_path": "k"}, "drives": [],
                "network-interfaces": [{"iface_id": "a", "host_dev_name": "t"}],
                "mmds-config": {"network_interfaces": ["#,
                r#""a""#,
                ",",
                r#","b"]}}"#,
            ),
            &["--from", "firecracker"][..],
            "no network interface has the id `b`",
        ),
        // A Firecracker CPU template of CPUID leaf modifiers, each read as an object of its
        // own (and the section read twice: its shape, then the template); the last has a
        // register that is none.
        (
            "heap-fc-cpu-config.json",
            fill(
                r#"{"boot-source": {"kernel_image_path": "k"}, "drives": [],
                "cpu-config": {"kvm_capabilities": ["1"], "cpuid_modifiers": ["#,
                r#"{"leaf":"0x1","subleaf":"0x0","flags":0,"modifiers":[{"register":"eax","bitmap":"0bx"}]}"#,
                ",",
                r#",{"leaf":"0x1","subleaf":"0x0","flags":0,"modifiers":[{"register":"r","bitmap":"0"}]}]}}"#,
            ),
            &["--from", "firecracker"][..],
            "is not a CPUID register",
        ),
    ]
    .into_iter()
    .map(|(name, text, args, words)| (name, plan_limited(name, &text, args, 1), words))
    .collect();
    for (name, (path, child), words) in runs {
        let out = child.wait_with_output().unwrap();
        std::fs::remove_file(&path).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains(ALLOCATION_FAILED),
            "{name}: took more than {HEAP_PER_BYTE} bytes of heap per byte of input: {err}"
        );
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.starts_with("error: "), "{name}: {err}");
        assert!(err.contains(words), "{name}: {err}");
    }
}

/// The spec of the most heap per byte found: as many tables as dotted keys make (each a map
/// of its own), 4,090 table headers, each with a dotted key, and an array of escaped strings
/// (each a string of its own) up to the limit of values, padded with a comment to the
/// largest size.
fn costliest_spec() -> String {
    use std::fmt::Write;
    let mut text = String::from("[memory]\nsize = \"1GiB\"\nx = [");
    text.push_str(&[r#""\u0041""#; 80_000].join(","));
    text.push_str("]\n");
    for table in 0..4_090 {
        write!(text, "[t{table}]\nk.a = 1\n").unwrap();
    }
    for key in 0..12_290 {
        writeln!(text, "a{key}.b = 1").unwrap();
    }
    text.push('#');
    text.push_str(&"x".repeat(MAX_SPEC_BYTES - text.len() - 1));
    text.push('\n');
    text
}

#[test]
#[cfg_attr(miri, ignore)]
fn costliest_spec_is_refused_within_the_heap_bound() {
    let text = costliest_spec();
    assert_eq!(text.len(), MAX_SPEC_BYTES);
    // Under half the bound, it fails to allocate: the data limit counts the heap (since Linux
    // 4.7, private writable mappings too, where large allocations are), so a run within it is
    // within the bound.
    let runs = [
        (1, "heap-toml-costliest.toml"),
        (2, "heap-toml-costliest-half.toml"),
    ]
    .map(|(divisor, name)| (divisor, plan_limited(name, &text, &[], divisor)));
    for (divisor, (path, child)) in runs {
        let out = child.wait_with_output().unwrap();
        std::fs::remove_file(&path).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if divisor == 1 {
            assert!(
                !err.contains(ALLOCATION_FAILED),
                "took more than {HEAP_PER_BYTE} bytes of heap per byte of input: {err}"
            );
            assert_eq!(out.status.code(), Some(2), "{err}");
            assert!(err.starts_with("error: memory.x: unknown field"), "{err}");
        } else {
            assert!(err.contains(ALLOCATION_FAILED), "{:?}: {err}", out.status);
            assert_eq!(out.status.code(), None, "{err}");
        }
    }
}
