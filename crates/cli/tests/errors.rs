//! One test per kind of spec mistake: each names the field and its line and column, says what
//! is wrong, and makes `memvisor` exit with code 2.

use std::path::PathBuf;
use std::process::Command;

use memvisor_cli::plan::plan;
use memvisor_cli::spec::{Source, parse};

mod common;

use common::{binary, run, scratch};

/// The error message of `text`, read and planned in-process.
fn error_of(text: &str) -> String {
    let src = Source {
        origin: "vm.toml",
        text,
    };
    let err = match parse(src) {
        Ok(spec) => plan(&spec, src).expect_err("the spec should be refused"),
        Err(e) => e,
    };
    err.to_string()
}

/// Runs the binary on `text` written to a file; returns the exit code and standard error.
fn run_binary(test: &str, text: &str) -> (i32, String) {
    let path = scratch(&format!("errors-{test}.toml"));
    std::fs::write(&path, text).unwrap();
    let out = binary(&["plan", path.to_str().unwrap()]);
    assert!(out.stdout.is_empty());
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

const MEM: &str = "[memory]\nsize = \"256MiB\"\n";

#[test]
fn toml_syntax_error_points_at_line() {
    let text = format!("{MEM}[[device]]\ntype = \"virtio-net\nname = \"x\"\n");
    let msg = error_of(&text);
    assert!(
        msg.starts_with("vm.toml:4:19: invalid basic string"),
        "{msg}"
    );
    let (code, stderr) = run_binary("syntax", &text);
    assert_eq!(code, 2);
    assert!(stderr.starts_with("error: "), "{stderr}");
}

#[test]
fn unknown_field_is_named() {
    let msg = error_of("[memory]\nsize = \"256MiB\"\nprefualt = 2\n");
    assert!(
        msg.starts_with("vm.toml:3:1: memory.prefualt: unknown field `prefualt`, expected one of"),
        "{msg}"
    );
}

#[test]
fn bad_size_unit_is_refused() {
    let msg = error_of("[memory]\nsize = \"2GB\"\n");
    assert_eq!(
        msg,
        "vm.toml:2:8: memory.size: unknown size unit `GB` (use B, KiB, MiB, GiB or TiB; sizes are binary)"
    );
    let (code, stderr) = run_binary("unit", "[memory]\nsize = \"2GB\"\n");
    assert_eq!(code, 2);
    // Shown as rustc shows its errors: message, position, the line, the value underlined.
    let path = scratch("errors-unit.toml");
    assert_eq!(
        stderr,
        format!(
            "error: memory.size: unknown size unit `GB` (use B, KiB, MiB, GiB or TiB; sizes are \
             binary)\n --> {}:2:8\n  |\n2 | size = \"2GB\"\n  |        ^^^^^\n",
            path.display()
        )
    );
}

#[test]
fn bad_size_number_is_refused() {
    let msg = error_of(&format!(
        "{MEM}[hotplug]\nslots = 2\nslot_size = \"0x1g\"\n"
    ));
    assert_eq!(
        msg,
        "vm.toml:5:13: hotplug.slot_size: `0x1g` is not a number"
    );
    let msg = error_of("[memory]\nsize = 0\n");
    assert_eq!(msg, "vm.toml:2:8: memory.size: size zero");
    let msg = error_of("[memory]\nsize = -4096\n");
    assert!(
        msg.starts_with("vm.toml:2:8: memory.size: negative size -4096"),
        "{msg}"
    );
}

#[test]
fn unknown_device_type_lists_known_ones() {
    let msg = error_of(&format!("{MEM}[[device]]\ntype = \"virtio-gpu\"\n"));
    assert_eq!(
        msg,
        "vm.toml:4:8: device[0].type: unknown device type `virtio-gpu` (known: virtio-net, \
         virtio-blk, virtio-console, virtio-rng, virtio-balloon, virtio-vsock, virtio-fs, \
         virtio-pmem)"
    );
    let (code, _) = run_binary(
        "device",
        &format!("{MEM}[[device]]\ntype = \"virtio-gpu\"\n"),
    );
    assert_eq!(code, 2);
}

#[test]
fn unknown_option_value_lists_allowed_ones() {
    let msg = error_of("[memory]\nsize = \"256MiB\"\nbacking = \"shm\"\n");
    assert_eq!(
        msg,
        "vm.toml:3:11: memory.backing: unknown value `shm` (expected one of: anonymous, \
         anonymous-shared, memfd, hugetlbfs)"
    );
    let msg = error_of("arch = \"riscv64\"\n[memory]\nsize = \"256MiB\"\n");
    assert_eq!(
        msg,
        "vm.toml:1:8: arch: unknown value `riscv64` (expected one of: x86_64, aarch64)"
    );
}

#[test]
fn overlapping_device_windows_name_both() {
    let text = format!(
        "{MEM}[[device]]\ntype = \"virtio-net\"\naddress = \"0xd0000000\"\nmmio_size = \"64KiB\"\n\
         [[device]]\ntype = \"virtio-blk\"\naddress = \"0xd0008000\"\n"
    );
    let msg = error_of(&text);
    assert_eq!(
        msg,
        "vm.toml:9:11: device[1].address: blk0's window [0xd0008000, 0xd0008fff] overlaps \
         net0's window [0xd0000000, 0xd000ffff]"
    );
}

#[test]
fn too_big_for_its_window_says_what_is_free() {
    let msg = error_of(&format!(
        "{MEM}[[device]]\ntype = \"virtio-pmem\"\nmmio_size = \"2GiB\"\ndax_size = \"1GiB\"\n"
    ));
    assert_eq!(
        msg,
        "vm.toml:5:13: device[0].mmio_size: pmem0's window of 2 GiB does not fit in the device \
         windows (0xc0000000-0xfebfffff; largest free range 1004 MiB)"
    );
    let msg = error_of(&format!(
        "{MEM}[[device]]\ntype = \"virtio-net\"\naddress = \"0x1000\"\n"
    ));
    assert_eq!(
        msg,
        "vm.toml:5:11: device[0].address: net0's window at 0x1000 of 4 KiB does not fit in the \
         device windows (0xc0000000-0xfebfffff; largest free range 1004 MiB)"
    );
}

#[test]
fn address_space_too_small_is_refused() {
    let msg = error_of(
        "phys_bits = 32\n[memory]\nsize = \"256MiB\"\n[hotplug]\nslots = 1\nslot_size = \"1GiB\"\n",
    );
    assert!(
        msg.starts_with(
            "vm.toml:6:13: hotplug.slot_size: the layout (RAM, hotplug and DAX windows) of \
             1280 MiB does not fit in a 32-bit guest physical address space"
        ),
        "{msg}"
    );
}

#[test]
fn interrupt_conflicts_and_ranges_are_refused() {
    let text = format!("{MEM}[serial]\nirq = 6\n[[device]]\ntype = \"virtio-net\"\nirq = 6\n");
    assert_eq!(
        error_of(&text),
        "vm.toml:7:7: device[0].irq: GSI 6 overlaps the one of serial"
    );
    let text = format!("{MEM}[[device]]\ntype = \"virtio-net\"\nirq = 24\n");
    assert_eq!(
        error_of(&text),
        "vm.toml:5:7: device[0].irq: GSI 24 is outside 0..=23"
    );
}

#[test]
fn planner_errors_point_at_the_value() {
    // Each row: the spec, and the start of the error: the value's line and column, and its
    // field.
    let rows = [
        (
            "[memory]\nsize = \"1GiB\"\n[[device]]\ntype = \"virtio-net\"\nname = \"eth0\"\n\
             irq = 50\n",
            "vm.toml:6:7: device[0].irq: GSI 50 is outside 0..=23",
        ),
        (
            "[memory]\nsize = \"1GiB\"\n[hotplug]\nslots = 2\nslot_size = 5000\n",
            "vm.toml:5:13: hotplug.slot_size: region at 0x100000000 of size 0x1388 is not aligned",
        ),
        (
            "arch = \"aarch64\"\n[memory]\nsize = \"1GiB\"\n[serial]\naddress = \"0x9000001\"\n",
            "vm.toml:5:11: serial.address: 0x9000001 is not aligned to the serial port's MMIO \
             size 0x1000",
        ),
        (
            "arch = \"aarch64\"\n[memory]\nsize = \"1GiB\"\n[serial]\n\
             address = \"0x9000000\"\n[[device]]\ntype = \"virtio-net\"\n\
             address = \"0x9000000\"\n",
            "vm.toml:8:11: device[0].address: net0's window [0x9000000, 0x9000fff] overlaps \
             serial's window",
        ),
        (
            "[memory]\nsize = \"1GiB\"\n[[device]]\ntype = \"virtio-net\"\nirq = 30\n",
            "vm.toml:5:7: device[0].irq: GSI 30 is outside 0..=23",
        ),
        (
            "[memory]\nsize = \"1GiB\"\n[[device]]\ntype = \"virtio-net\"\nirq = 7\n\
             [[device]]\ntype = \"virtio-net\"\nmmio_size = \"2GiB\"\n",
            "vm.toml:8:13: device[1].mmio_size: net1's window of 2 GiB does not fit",
        ),
        (
            "phys_bits = 36\n[memory]\nsize = \"1GiB\"\n[[device]]\ntype = \"virtio-fs\"\n\
             dax_size = \"64GiB\"\n",
            "vm.toml:6:12: device[0].dax_size: the layout (RAM, hotplug and DAX windows)",
        ),
    ];
    for (text, expected) in rows {
        let msg = error_of(text);
        assert!(msg.starts_with(expected), "{expected}\n{msg}");
    }
}

#[test]
fn numa_sizes_must_add_up() {
    let text =
        "[memory]\nsize = \"1GiB\"\n[[numa]]\nsize = \"512MiB\"\n[[numa]]\nsize = \"256MiB\"\n";
    assert_eq!(
        error_of(text),
        "vm.toml:2:8: memory.size: memory.size is 1 GiB but the [[numa]] nodes add up to 768 MiB"
    );
}

#[test]
fn huge_page_misalignment_is_refused() {
    let text = "[memory]\nhuge_pages = \"1GiB\"\n[[numa]]\nsize = \"1536MiB\"\n";
    assert_eq!(
        error_of(text),
        "vm.toml:4:8: numa[0].size: 1536 MiB is not a multiple of the 1 GiB huge page size"
    );
    let text = "[memory]\nsize = \"1GiB\"\nbacking = \"hugetlbfs\"\n";
    assert_eq!(
        error_of(text),
        "vm.toml:3:11: memory.huge_pages: a hugetlbfs backing needs huge_pages = \"2MiB\" or \"1GiB\""
    );
}

#[test]
fn missing_field_names_its_table() {
    let msg = error_of(&format!("{MEM}[[device]]\nname = \"a\"\n"));
    assert_eq!(msg, "vm.toml:3:1: device[0]: missing field `type`");
    let msg = error_of("[hotplug]\nslots = 1\nslot_size = 4096\n");
    assert_eq!(msg, "vm.toml: memory: the [memory] table is missing");
}

#[test]
fn missing_spec_file_exits_2() {
    let out = binary(&["plan", "/nonexistent/vm.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("error: cannot read /nonexistent/vm.toml: "),
        "{stderr}"
    );
}

#[test]
fn usage_error_exits_2() {
    for args in [
        &["plan", "--arch", "sparc"][..],
        &["back", "--scale", "0"],
        &["frobnicate"],
    ] {
        let out = binary(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn library_refusal_points_at_the_item() {
    // memvisor-space refuses RAM that is not a whole number of pages; the error is mapped
    // back to the field that made the region.
    let msg = error_of("[memory]\nsize = \"1000B\"\n");
    assert!(
        msg.starts_with(
            "vm.toml:2:8: memory.size: region at 0x0 of size 0x3e8 is not aligned to its page size"
        ),
        "{msg}"
    );
}

#[test]
fn field_of_the_other_architecture_is_refused() {
    let text = "arch = \"aarch64\"\n[memory]\nsize = \"256MiB\"\n[serial]\nport = 0x2f8\n";
    assert_eq!(
        error_of(text),
        "vm.toml:5:8: serial.port: the aarch64 serial port is MMIO; give `address`"
    );
}

#[test]
fn json_flag_gives_errors_as_json() {
    let path = scratch("errors-json.toml");
    std::fs::write(&path, "[memory]\nsize = \"2GB\"\n").unwrap();
    let (code, out, err) = run(&["plan", "--json", path.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.is_empty());
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["schema_version"], 1);
    let e = &doc["error"];
    assert_eq!(e["kind"], "spec");
    assert_eq!(e["exit_code"], 2);
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_u64()),
        (Some(2), Some(8))
    );
    assert_eq!(e["field"], "memory.size");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("unknown size unit `GB`")
    );
}

#[test]
fn layout_past_64_bits_names_no_saturated_size_or_address() {
    // A hotplug slot of 2^64 - 1 bytes: the error says the layout does not fit in 64 bits,
    // with no total and no range that appear nowhere in the spec.
    let e = error_of(&format!(
        "{MEM}[hotplug]\nslots = 1\nslot_size = {}\n",
        u64::MAX
    ));
    assert!(e.starts_with("vm.toml:5:13: hotplug.slot_size: "), "{e}");
    assert!(
        e.contains("adds up to more than the 64-bit address space"),
        "{e}"
    );
    assert!(!e.contains("18446744073709551615 B"), "{e}");
    assert!(!e.contains("range at 0xffffffffffffffff"), "{e}");
}

#[test]
fn device_count_is_checked_before_any_device() {
    // 97 empty `[[device]]` tables: the count is the error, at the 97th table, not device[0]'s
    // missing type.
    let text = format!("{MEM}{}", "[[device]]\n".repeat(97));
    let msg = error_of(&text);
    assert!(
        msg.starts_with("vm.toml:99:1: device[96]: 97 devices (at most 96"),
        "{msg}"
    );
    // At the limit, each device is checked as before, with its position.
    let text = format!("{MEM}{}", "[[device]]\n".repeat(96));
    assert_eq!(
        error_of(&text),
        "vm.toml:3:1: device[0]: missing field `type`"
    );
}

#[test]
fn layout_too_big_for_the_address_bits_points_at_memory_size() {
    let msg = error_of("[memory]\nsize = \"2TiB\"\n");
    assert!(
        msg.starts_with(
            "vm.toml:2:8: memory.size: the layout (RAM, hotplug and DAX windows) of 2 TiB does \
             not fit in a 40-bit guest physical address space"
        ),
        "{msg}"
    );
    let (code, err) = run_binary("layout-memory-size", "[memory]\nsize = \"2TiB\"\n");
    assert_eq!(code, 2);
    assert!(
        err.contains("errors-layout-memory-size.toml:2:8\n"),
        "{err}"
    );
    assert!(err.contains("2 | size = \"2TiB\"\n"), "{err}");
}

#[test]
fn layout_too_big_with_numa_nodes_points_at_the_nodes() {
    // No memory.size in the file: the error names a [[numa]] entry that is there.
    let msg = error_of("[memory]\n[[numa]]\nsize = \"1TiB\"\n[[numa]]\nsize = \"1TiB\"\n");
    assert!(
        msg.starts_with(
            "vm.toml:5:8: numa[1].size: the layout (RAM, hotplug and DAX windows) of 2 TiB"
        ),
        "{msg}"
    );
    // memory.size and the nodes: still a position in the file.
    let msg = error_of(
        "[memory]\nsize = \"2TiB\"\n[[numa]]\nsize = \"1TiB\"\n[[numa]]\nsize = \"1TiB\"\n",
    );
    assert!(msg.starts_with("vm.toml:6:8: numa[1].size: "), "{msg}");
}

#[test]
fn layout_error_has_line_and_column_in_json() {
    let path = scratch("errors-layout-json.toml");
    std::fs::write(&path, "[memory]\nsize = \"2TiB\"\n").unwrap();
    let (code, out, _) = run(&["plan", "--json", path.to_str().unwrap()]);
    assert_eq!(code, 2);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let e = &doc["error"];
    assert_eq!(e["field"], "memory.size");
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_u64()),
        (Some(2), Some(8))
    );
}

/// Standard output that refuses every write, as `/dev/full` does.
struct Full;

impl std::io::Write for Full {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::from_raw_os_error(28))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(28))
    }
}

#[test]
fn output_write_errors_are_reported_on_stderr_with_or_without_json() {
    for args in [&["plan", "--json"][..], &["plan"][..], &["init"][..]] {
        let mut err = Vec::new();
        let mut argv = vec!["memvisor"];
        argv.extend_from_slice(args);
        let code = memvisor_cli::run(argv, &mut Full, &mut err, false);
        assert_eq!(code, 1, "{args:?}");
        let err = String::from_utf8(err).unwrap();
        assert!(
            err.starts_with("error: writing the output"),
            "{args:?}: {err:?}"
        );
    }
}

/// Standard output that takes everything but fails when flushed.
struct FailsOnFlush;

impl std::io::Write for FailsOnFlush {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(32))
    }
}

#[test]
fn output_flush_errors_are_reported_on_stderr() {
    let mut err = Vec::new();
    let code = memvisor_cli::run(
        ["memvisor", "plan", "--json"],
        &mut FailsOnFlush,
        &mut err,
        false,
    );
    assert_eq!(code, 1);
    assert!(
        String::from_utf8(err)
            .unwrap()
            .starts_with("error: writing the output"),
    );
}

#[test]
fn help_and_version_write_errors_exit_1() {
    for args in [
        &["--help"][..],
        &["--version"][..],
        &["plan", "--help"][..],
        &["help"][..],
    ] {
        let mut argv = vec!["memvisor"];
        argv.extend_from_slice(args);
        let mut err = Vec::new();
        let code = memvisor_cli::run(argv.clone(), &mut Full, &mut err, false);
        assert_eq!(code, 1, "{args:?}");
        let err = String::from_utf8(err).unwrap();
        assert!(
            err.starts_with("error: writing the output"),
            "{args:?}: {err:?}"
        );
        let mut err = Vec::new();
        let code = memvisor_cli::run(argv, &mut FailsOnFlush, &mut err, false);
        assert_eq!(code, 1, "{args:?}");
        assert!(!err.is_empty(), "{args:?}");
    }
    // The binary on a full device.
    if let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") {
        let out = Command::new(env!("CARGO_BIN_EXE_memvisor"))
            .arg("--version")
            .stdout(full)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("error: writing the output"),
            "{out:?}"
        );
    }
}

#[test]
fn standard_output_that_cannot_be_written_is_reported() {
    // Standard output open for reading only: every write fails with EBADF, which must not
    // pass for success.
    for args in [&["plan"][..], &["plan", "--json"][..], &["--version"][..]] {
        let read_only = std::fs::File::open("/dev/null").unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_memvisor"))
            .args(args)
            .stdout(read_only)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("error: writing the output: Bad file descriptor"),
            "{args:?}: {stderr}"
        );
    }
    // A spec mistake under --json keeps its exit code, and both errors reach standard error.
    let read_only = std::fs::File::open("/dev/null").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_memvisor"))
        .args(["plan", "--json", "/nonexistent/vm.toml"])
        .stdout(read_only)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read /nonexistent/vm.toml")
            && stderr.contains("writing the output"),
        "{stderr}"
    );
}

#[test]
fn back_scale_is_bounded_to_what_a_double_holds() {
    // 2^53 + 1 cannot be written as a JSON number that a double reads back exactly.
    let out = binary(&["back", "--json", "--scale", "9007199254740993"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1..=9007199254740992"), "{stderr}");
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema/back.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let scale = &schema["properties"]["scale"];
    assert_eq!(scale["minimum"], 1, "{scale}");
    assert_eq!(scale["maximum"], 9_007_199_254_740_992_u64, "{scale}");
}

#[test]
fn file_errors_name_the_file_in_json() {
    let dir = scratch("errors-file-json");
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.toml");
    std::fs::write(&big, "#".repeat((1 << 20) + 1)).unwrap();
    let binary = dir.join("binary.toml");
    std::fs::write(&binary, b"[memory]\n\xff\n").unwrap();
    let dir_name = dir.to_str().unwrap();
    let big_name = big.to_str().unwrap();
    let binary_name = binary.to_str().unwrap();
    for (args, file) in [
        (vec!["plan", "--json", dir_name], dir_name.to_owned()),
        (vec!["plan", "--json", big_name], big_name.to_owned()),
        (vec!["check", "--json", binary_name], binary_name.to_owned()),
        (
            vec!["plan", "--json", "--from", "firecracker", dir_name],
            dir_name.to_owned(),
        ),
        (
            vec!["plan", "--json", "--from", "cloud-hypervisor", "size=1X"],
            "--memory".to_owned(),
        ),
    ] {
        let (code, out, _) = run(&args);
        assert_eq!(code, 2, "{args:?}");
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        let e = &doc["error"];
        assert_eq!(e["kind"], "spec", "{args:?}: {e}");
        assert_eq!(e["file"].as_str(), Some(file.as_str()), "{args:?}: {e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[cfg(unix)]
fn spec_paths_need_not_be_utf8() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let name = OsString::from_vec(b"errors-n\xffx.toml".to_vec());
    let path = dir.join(&name);
    std::fs::write(&path, "[memory]\nsize = \"2GB\"\n").unwrap();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = memvisor_cli::run(
        [
            OsString::from("memvisor"),
            "plan".into(),
            path.clone().into(),
        ],
        &mut out,
        &mut err,
        false,
    );
    std::fs::remove_file(&path).unwrap();
    let err = String::from_utf8(err).unwrap();
    // The file was read: its mistake is reported, the name shown with U+FFFD.
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("memory.size: unknown size unit `GB`"), "{err}");
    assert!(err.contains("errors-n\u{fffd}x.toml:2:8"), "{err}");
    // A missing file of such a name is a read error, not a usage error.
    let mut err = Vec::new();
    let code = memvisor_cli::run(
        [OsString::from("memvisor"), "plan".into(), path.into()],
        &mut Vec::new(),
        &mut err,
        false,
    );
    assert_eq!(code, 2);
    assert!(
        String::from_utf8(err)
            .unwrap()
            .starts_with("error: cannot read ")
    );
    // Cloud Hypervisor's option is text: one that is not UTF-8 is a usage mistake.
    let mut err = Vec::new();
    let code = memvisor_cli::run(
        [
            OsString::from("memvisor"),
            "plan".into(),
            "--from".into(),
            "cloud-hypervisor".into(),
            OsString::from_vec(b"size=1\xffG".to_vec()),
        ],
        &mut Vec::new(),
        &mut err,
        false,
    );
    assert_eq!(code, 2);
    let err = String::from_utf8(err).unwrap();
    assert!(err.contains("is not UTF-8 text"), "{err}");
}

#[test]
#[cfg(unix)]
fn json_errors_escape_what_must_not_reach_a_terminal() {
    // A spec file and a missing file whose names hold a right-to-left override, a C1 control
    // and a line separator: the JSON has them as \u escapes, and `file` still reads back as
    // the path.
    let dir = scratch("errors-bidi-json");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("ev\u{202e}il\u{85}\u{2028}.toml");
    std::fs::write(&spec, "[memory]\nsize = \"2GB\"\n").unwrap();
    let missing = dir.join("no\u{202e}.toml");
    for path in [&spec, &missing] {
        let path = path.to_str().unwrap();
        let (code, text, _) = run(&["plan", "--json", path]);
        assert_eq!(code, 2, "{path:?}");
        assert!(
            !text
                .chars()
                .any(|c| memvisor_cli::render::needs_escape(c) && c != '\n'),
            "{text:?}"
        );
        assert!(text.contains("\\u202e"), "{text}");
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["error"]["file"].as_str(), Some(path), "{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn byte_order_mark_and_crlf_leave_positions_and_excerpts_as_written() {
    // A byte order mark is no column, and is not shown; a line's `\r` before its `\n` is not
    // shown either. Both are accepted.
    for (text, at, line) in [
        (
            "\u{feff}arch = 5\n[memory]\nsize = \"1GiB\"\n",
            "vm.toml:1:8",
            "1 | arch = 5\n",
        ),
        (
            "\u{feff}[memory]\r\nsize = \"2GB\"\r\n",
            "vm.toml:2:8",
            "2 | size = \"2GB\"\n",
        ),
        (
            "[memory]\r\nsize = \"1GiB\"\r\n[[device]]\r\ntype = \"virtio-gpu\"\r\n",
            "vm.toml:4:8",
            "4 | type = \"virtio-gpu\"\n",
        ),
    ] {
        let src = Source {
            origin: "vm.toml",
            text,
        };
        let err = parse(src).unwrap_err();
        let shown = memvisor_cli::diagnostic::report(&err);
        assert!(err.to_string().starts_with(&format!("{at}: ")), "{err}");
        assert!(shown.contains(&format!(" --> {at}\n")), "{shown}");
        assert!(shown.contains(line), "{shown}");
        assert!(!shown.contains('\u{fffd}'), "{shown}");
    }
    for text in [
        "\u{feff}[memory]\nsize = \"1GiB\"\n".to_owned(),
        memvisor_cli::spec::DEFAULT_SPEC.replace('\n', "\r\n"),
        format!(
            "\u{feff}{}",
            memvisor_cli::spec::DEFAULT_SPEC.replace('\n', "\r\n")
        ),
    ] {
        let src = Source {
            origin: "vm.toml",
            text: &text,
        };
        plan(&parse(src).unwrap(), src).unwrap();
    }
}
