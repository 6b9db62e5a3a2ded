//! Firecracker reads `boot-source.boot_args` into a kernel command line of at most 2048 bytes
//! with its terminating NUL (`CMDLINE_MAX_SIZE`, linux-loader's `Cmdline::try_from`): the
//! arguments, trimmed, and after a ` -- ` outside double quotes the init's arguments, trimmed,
//! joined by ` -- `. A longer one is refused when the file is applied; the command refuses it
//! too, at the field, through the real binary, and takes the longest Firecracker takes.

mod common;

use common::{binary, scratch};

/// Runs `memvisor plan --from firecracker` (with `--json` when `json`) on a file whose
/// `boot_args` is `args`.
fn plan(name: &str, args: &str, json: bool) -> std::process::Output {
    let path = scratch(name);
    let config = serde_json::json!({
        "boot-source": {"kernel_image_path": "vmlinux", "boot_args": args},
        "drives": [],
    });
    std::fs::write(&path, config.to_string()).unwrap();
    let path = path.to_str().unwrap();
    let mut command = vec!["plan", "--from", "firecracker", path];
    if json {
        command.push("--json");
    }
    binary(&command)
}

#[test]
fn firecracker_boot_args_longer_than_its_command_line_are_refused() {
    let long = |n: usize| "a".repeat(n);
    for args in [
        long(2048),
        format!("{} -- {}", long(1000), long(1044)),
        // A ` -- ` inside double quotes does not split, so the spaces after it are not trimmed
        // (split there, it would be 2048 bytes).
        format!("\"{} --   \" {}", long(1000), long(1040)),
        format!(" {}  ", long(4096)),
        // Firecracker refuses the length when it applies the file, before it meets the NUL
        // when it boots: the length is the refusal.
        format!("{}\0", long(2048)),
    ] {
        let out = plan("fc-boot-args-long.json", &args, false);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", args.len());
        assert!(out.stdout.is_empty());
        assert!(err.starts_with("error: boot-source.boot_args: "), "{err}");
        assert!(err.contains("more than the 2048"), "{err}");
        assert!(err.contains(":1:"), "{err}");
        let out = plan("fc-boot-args-long.json", &args, true);
        assert_eq!(out.status.code(), Some(2));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["error"]["field"], "boot-source.boot_args", "{doc}");
    }
    for args in [
        long(2047),
        format!("  {}   ", long(2047)),
        format!("{} -- {}", long(1000), long(1043)),
        format!("{} --   {}", long(1000), long(1043)),
        format!("{} -- ", long(2047)),
        String::new(),
    ] {
        let out = plan("fc-boot-args-taken.json", &args, false);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            args.len(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn firecracker_boot_args_with_a_nul_are_refused() {
    // linux-loader's `Cmdline::try_from` takes a NUL, but Firecracker makes a C string of the
    // command line when it boots (`as_cstring`) and stops there with a panic: refused at the
    // field, wherever the NUL is.
    for args in ["\0", "console=ttyS0\0", "a\0b", "reboot=k -- init\0"] {
        let out = plan("fc-boot-args-nul.json", args, false);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
        assert!(err.starts_with("error: boot-source.boot_args: "), "{err}");
        assert!(err.contains("NUL"), "{err}");
        let out = plan("fc-boot-args-nul.json", args, true);
        assert_eq!(out.status.code(), Some(2));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["error"]["field"], "boot-source.boot_args", "{doc}");
        assert_eq!(doc["error"]["line"], 1, "{doc}");
    }
    // Any other character is the kernel's to read: taken, as Firecracker takes it.
    for args in ["console=ttyS0 \u{1} é", "\u{7f}"] {
        let out = plan("fc-boot-args-odd.json", args, false);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
