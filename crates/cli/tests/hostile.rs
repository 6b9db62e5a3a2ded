//! Hostile and absurd specs, one row each: every one is refused with exit code 2 and a message
//! naming the right field, quickly, without a panic, and without writing control characters.

use std::process::{Command, Stdio};

mod common;

use common::{Memvisor, Outcome, binary_with_stdin, run, scratch, spawn};

/// Runs `memvisor plan FILE` in-process on `text` written to a file named after `row`.
fn plan_bytes(row: &str, text: &[u8]) -> Outcome {
    Memvisor::new().run_on_file(
        scratch(&format!("hostile-{row}.toml")),
        text,
        &["plan", "FILE"],
    )
}

const MEM: &str = "[memory]\nsize = \"256MiB\"\n";

fn devices(count: usize) -> String {
    let mut text = MEM.to_owned();
    for _ in 0..count {
        text.push_str("[[device]]\ntype = \"virtio-net\"\n");
    }
    text
}

/// `prefix`, then as many `unit`s joined by `sep` as fit, then `suffix`: at most 1 MiB, the
/// largest spec read.
fn fill_mib(prefix: &str, unit: &str, sep: &str, suffix: &str) -> Vec<u8> {
    let room = (1 << 20) - prefix.len() - suffix.len();
    let n = (room + sep.len()) / (unit.len() + sep.len());
    let mut text = String::with_capacity(1 << 20);
    text.push_str(prefix);
    text.push_str(&vec![unit; n].join(sep));
    text.push_str(suffix);
    assert!(text.len() <= 1 << 20);
    text.into_bytes()
}

/// Each row: a name, the spec, and text the error must contain.
fn rows() -> Vec<(&'static str, Vec<u8>, String)> {
    let long_name = "n".repeat(70_000);
    vec![
        (
            "size_value_1mib",
            fill_mib("[memory]\nsize = \"", "7", "", "\"\n"),
            format!("memory.size: `{}…` (", "7".repeat(60)),
        ),
        (
            "backing_value_1mib",
            fill_mib("[memory]\nsize = \"1GiB\"\nbacking = \"", "x", "", "\"\n"),
            format!("memory.backing: unknown value `{}…` (", "x".repeat(60)),
        ),
        (
            "string_for_a_number_1mib",
            fill_mib("[memory]\nsize = \"1GiB\"\nprefault = \"", "x", "", "\"\n"),
            format!(
                "memory.prefault: invalid type: string \"{}…\" (",
                "x".repeat(60)
            ),
        ),
        (
            "unknown_key_1mib",
            fill_mib("[memory]\nsize = \"1GiB\"\n", "x", "", " = 1\n"),
            format!(
                "error: memory.{}…: unknown field `{}…` (",
                "x".repeat(53),
                "x".repeat(60)
            ),
        ),
        (
            "device_name_70000_chars",
            format!("{MEM}[[device]]\ntype = \"virtio-net\"\nname = \"{long_name}\"\n").into(),
            "device[0].name: a name of 70000 characters (at most 64)".into(),
        ),
        (
            "vm_name_70000_chars",
            format!("name = \"{long_name}\"\n{MEM}").into(),
            "name: a name of 70000 characters (at most 64)".into(),
        ),
        (
            "numa_sum_overflows",
            b"[memory]\n[[numa]]\nsize = \"0x8000000000000000\"\n[[numa]]\nsize = \"0x8000000000000000\"\n"
                .to_vec(),
            "numa[1].size: the [[numa]] nodes up to this one add up to 2^64 bytes or more".into(),
        ),
        (
            "numa_sum_overflows_with_memory_size",
            b"[memory]\nsize = \"1GiB\"\n[[numa]]\nsize = \"0xffffffffffff0000\"\n[[numa]]\nsize = \"0x10000\"\n"
                .to_vec(),
            "numa[1].size: the [[numa]] nodes up to this one add up to 2^64 bytes or more".into(),
        ),
        (
            "devices_97",
            devices(97).into(),
            "device[96]: 97 devices (at most 96: each needs its own interrupt)".into(),
        ),
        (
            "devices_near_one_mib",
            devices(33_000).into(),
            "device[96]: 33000 devices (at most 96".into(),
        ),
        (
            // Empty tables: the count is refused before any entry's missing `type`.
            "devices_97_empty",
            format!("{MEM}{}", "[[device]]\n".repeat(97)).into(),
            "device[96]: 97 devices (at most 96: each needs its own interrupt)".into(),
        ),
        (
            "devices_near_one_mib_empty",
            format!("{MEM}{}", "[[device]]\n".repeat(95_000)).into(),
            "device[96]: 95000 devices (at most 96".into(),
        ),
        (
            "numa_65_empty",
            format!("[memory]\n{}", "[[numa]]\n".repeat(65)).into(),
            "numa[64]: 65 guest NUMA nodes (at most 64)".into(),
        ),
        (
            "devices_100_mib",
            devices(3_600_000).into(),
            "is larger than 1048576 bytes, the most a spec may hold".into(),
        ),
        (
            "name_with_escape_sequence",
            format!("{MEM}[[device]]\ntype = \"virtio-net\"\nname = \"a\\u001b[2Jb\"\n").into(),
            "device[0].name: the name contains the control or formatting character \\u{1b}".into(),
        ),
        (
            "name_with_newline_fakes_a_row",
            format!("{MEM}[[device]]\ntype = \"virtio-net\"\nname = \"a\\n0x0  0xfff\"\n").into(),
            "device[0].name: the name contains the control or formatting character \\u{a}".into(),
        ),
        (
            "name_with_bidi_override",
            format!("{MEM}[[device]]\ntype = \"virtio-net\"\nname = \"a\\u202eb\"\n").into(),
            "device[0].name: the name contains the control or formatting character \\u{202e}".into(),
        ),
        (
            "name_empty",
            format!("{MEM}[[device]]\ntype = \"virtio-net\"\nname = \"\"\n").into(),
            "device[0].name: an empty name".into(),
        ),
        (
            "name_blank",
            format!("name = \"  \"\n{MEM}").into(),
            "name: an empty name".into(),
        ),
        (
            "unknown_type_with_escape_sequence",
            format!("{MEM}[[device]]\ntype = \"\\u001b[31mred\"\n").into(),
            "device[0].type: unknown device type `\\u{1b}[31mred`".into(),
        ),
        (
            "prefault_4000000000_threads",
            b"[memory]\nsize = \"256MiB\"\nprefault = 4000000000\n".to_vec(),
            "memory.prefault: 4000000000 prefault threads (at most 256)".into(),
        ),
        (
            "hotplug_4000000000_slots",
            format!("{MEM}[hotplug]\nslots = 4000000000\nslot_size = \"1GiB\"\n").into(),
            "hotplug.slots: 4000000000 slots (at most 1024)".into(),
        ),
        (
            "hotplug_total_overflows",
            format!("{MEM}[hotplug]\nslots = 4\nslot_size = \"0x4000000000000000\"\n").into(),
            "hotplug.slot_size: 4 slots of 4 EiB add up to 2^64 bytes or more"
                .replace("4 EiB", "4194304 TiB"),
        ),
        (
            "numa_65_nodes",
            {
                let mut t = String::from("[memory]\n");
                for _ in 0..65 {
                    t.push_str("[[numa]]\nsize = \"2MiB\"\n");
                }
                t.into()
            },
            "numa[64]: 65 guest NUMA nodes (at most 64)".into(),
        ),
        (
            "host_node_too_high",
            b"[memory]\n[[numa]]\nsize = \"2MiB\"\nhost_nodes = [0, 4000000]\n".to_vec(),
            "numa[0].host_nodes: host node 4000000 (host nodes are numbered below 1024)".into(),
        ),
        (
            "duplicate_name",
            format!(
                "{MEM}[[device]]\ntype = \"virtio-net\"\nname = \"x\"\n[[device]]\ntype = \"virtio-blk\"\nname = \"x\"\n"
            )
            .into(),
            "device[1].name: the name `x` is already used by device[0]".into(),
        ),
        (
            "not_utf8",
            b"[memory]\nsize = \"\xff\xfe\"\n".to_vec(),
            "is not UTF-8 text (bad byte at offset 17)".into(),
        ),
        (
            "arrays_nested_500000_deep",
            format!("a = {}{}\n", "[".repeat(500_000), "]".repeat(500_000)).into(),
            "a: arrays and inline tables nested more than 80 deep".into(),
        ),
        (
            "inline_tables_nested_100000_deep",
            format!("a = {}1{}\n", "{b = ".repeat(100_000), "}".repeat(100_000)).into(),
            "a: arrays and inline tables nested more than 80 deep".into(),
        ),
        (
            // Each element 81 deep, repeated to 1 MiB: the first one is refused.
            "arrays_nested_81_deep_repeated",
            fill_mib("x = [", &format!("{}{}", "[".repeat(81), "]".repeat(81)), ",", "]\n"),
            "x: arrays and inline tables nested more than 80 deep".into(),
        ),
        (
            "inline_tables_nested_20_deep_to_1mib",
            fill_mib("x = [", &format!("{}0{}", "{a=".repeat(20), "}".repeat(20)), ",", "]\n"),
            "x: more than 4096 arrays, inline tables and table headers in the spec".into(),
        ),
        (
            "arrays_nested_10_deep_to_1mib",
            fill_mib("x = [", &format!("{}{}", "[".repeat(10), "]".repeat(10)), ",", "]\n"),
            "x: more than 4096 arrays, inline tables and table headers in the spec".into(),
        ),
        (
            "small_inline_tables_to_1mib",
            fill_mib("x = [", "{a=0}", ",", "]\n"),
            "x: more than 4096 arrays, inline tables and table headers in the spec".into(),
        ),
        (
            "empty_arrays_to_1mib",
            fill_mib(&format!("{MEM}x = ["), "[]", ",", "]\n"),
            "memory.x: more than 4096 arrays, inline tables and table headers in the spec".into(),
        ),
        (
            "array_of_tables_headers_to_1mib",
            fill_mib("", "[[a]]\n", "", ""),
            "more than 4096 arrays, inline tables and table headers in the spec".into(),
        ),
        (
            "host_nodes_to_1mib",
            fill_mib(&format!("{MEM}[[numa]]\nsize = \"256MiB\"\nhost_nodes = ["), "0", ",", "]\n"),
            "numa[0].host_nodes: more than 98304 values in the spec".into(),
        ),
        (
            "strings_to_1mib",
            fill_mib("x = [", "''", ",", "]\n"),
            "x: more than 98304 values in the spec".into(),
        ),
        (
            "plain_keys_to_1mib",
            {
                let mut text = String::from("[serial]\n");
                let mut i = 0u32;
                while text.len() < (1 << 20) - 16 {
                    text.push_str(&format!("{i:x}=0\n"));
                    i += 1;
                }
                text.into_bytes()
            },
            "serial.4000: more than 16384 keys in the spec".into(),
        ),
        (
            "dotted_key_300000_parts",
            format!("{MEM}{}y = 1\n", "x.".repeat(300_000)).into(),
            "memory.x: a dotted key or table header of 300001 parts (at most 16)".into(),
        ),
        (
            "hugetlbfs_path_with_escape",
            b"[memory]\nsize = \"2MiB\"\nbacking = \"hugetlbfs\"\nhuge_pages = \"2MiB\"\nhugetlbfs = \"/x\\u001b[2J\"\n"
                .to_vec(),
            "memory.hugetlbfs: the path contains the control or formatting character \\u{1b}"
                .into(),
        ),
    ]
}

#[test]
fn hostile_specs_are_refused_with_the_field() {
    for (row, text, expected) in rows() {
        let (code, out, err) = plan_bytes(row, &text);
        assert_eq!(code, 2, "{row}: {err}");
        assert!(out.is_empty(), "{row}: {out}");
        assert!(
            err.contains(&expected),
            "{row}: expected {expected:?} in:\n{err}"
        );
        assert!(
            !err.chars().any(|c| c.is_control() && c != '\n'),
            "{row}: a control character reached the terminal: {err:?}"
        );
        // A value is shown in part, however long: the message stays a few lines.
        assert!(err.len() < 2048, "{row}: {} bytes of error", err.len());
    }
}

/// However long a value, the error shows it in part, wherever it came from: a spec (text and
/// JSON, the message and the field), a Firecracker file, Cloud Hypervisor's option, the
/// command line, a path.
#[test]
fn long_values_are_shown_in_part_in_every_error() {
    let long = "x".repeat(100_000);
    let file = |name: &str, text: String| {
        let path = scratch(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let spec = file(
        "long-prefault.toml",
        format!("[memory]\nsize = \"1GiB\"\nprefault = \"{long}\"\n"),
    );
    let key = file(
        "long-key.toml",
        format!("[memory]\nsize = \"1GiB\"\n{long} = 1\n"),
    );
    let firecracker = file(
        "long-mem-size.json",
        format!(r#"{{"machine-config": {{"mem_size_mib": "{long}"}}}}"#),
    );
    let option = format!("size={long}");
    let unknown = format!("size=1G,{long}=1");
    let missing = format!("/{long}");
    let flag = format!("--{long}");
    for args in [
        vec!["plan", spec.as_str()],
        vec!["plan", "--json", spec.as_str()],
        vec!["plan", key.as_str()],
        vec!["plan", "--json", key.as_str()],
        vec!["plan", "--from", "firecracker", firecracker.as_str()],
        vec!["plan", "--from", "cloud-hypervisor", option.as_str()],
        vec![
            "plan",
            "--json",
            "--from",
            "cloud-hypervisor",
            unknown.as_str(),
        ],
        vec!["plan", "--arch", long.as_str()],
        vec!["plan", "--from", long.as_str(), "x"],
        vec!["back", "--scale", long.as_str()],
        vec!["plan", flag.as_str()],
        vec!["plan", missing.as_str()],
        vec!["plan", "--json", missing.as_str()],
    ] {
        let (code, out, err) = run(&args);
        let shown: Vec<&str> = args.iter().map(|a| &a[..a.len().min(40)]).collect();
        assert_eq!(code, 2, "{shown:?}: {err}");
        let text = out + &err;
        assert!(
            text.len() < 2048,
            "{shown:?}: {} bytes of error: {}",
            text.len(),
            &text[..text.len().min(2048)]
        );
        assert!(text.contains("xxx…"), "{shown:?}: {text}");
    }
}

#[test]
fn specs_at_every_count_limit_are_read() {
    use memvisor_cli::spec::{MAX_DEVICES, MAX_GUEST_NODES, MAX_HOST_NODES, Source, parse};
    // The most nodes, each bound to the most host nodes, and the most devices, with brackets,
    // braces, `=`, `,` and `#` in strings of every kind and in comments: nothing in them counts.
    let hosts: Vec<String> = (0..MAX_HOST_NODES).map(|h| h.to_string()).collect();
    let hosts = hosts.join(", ");
    let mut text = String::from(
        r#"name = """vm [x] {y} = 1, # \" ]]""" # [[numa]] {a = [1, 2]} =
arch = 'x86_64' # ]
[memory] # [[device]]
"#,
    );
    text.push_str(&format!("# {}\n", "[{=,\"'".repeat(50_000)));
    for i in 0..MAX_GUEST_NODES {
        text.push_str(&format!(
            "[[numa]] # {{[\nsize = '4KiB' # =\nhost_nodes = [\n  {hosts}, # [[{{=\n]\n\
             policy = \"bind\"\n"
        ));
        if i == 0 {
            text.push_str("# ]]]]\n");
        }
    }
    for i in 0..MAX_DEVICES {
        text.push_str(&format!(
            "[[device]]\ntype = \"virtio-net\"\nname = \"d{i} [{{= ,#\\\"]]\"\n"
        ));
    }
    let last = "[[ 'device' ]]\ntype = '''virtio-blk'''\nname = '''b [{=,#\" ]]'''\n";
    text.push_str(last);
    assert!(text.len() < 1 << 20, "{}", text.len());
    // One device more than the limit: refused for that, as the counts come first.
    let err = parse(Source {
        origin: "vm.toml",
        text: &text,
    })
    .unwrap_err();
    assert!(err.to_string().contains("97 devices"), "{err}");
    let spec = parse(Source {
        origin: "vm.toml",
        text: &text[..text.len() - last.len()],
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.nodes.len(), MAX_GUEST_NODES);
    assert!(
        spec.nodes
            .iter()
            .all(|n| n.host_nodes.len() == MAX_HOST_NODES as usize)
    );
    assert_eq!(spec.devices.len(), MAX_DEVICES);
    assert_eq!(spec.name, r#"vm [x] {y} = 1, # " ]]"#);
    assert_eq!(spec.devices[5].name, r#"d5 [{= ,#"]]"#);
    // The last device alone, after one fewer: its literal strings are read.
    let text = text.replacen(
        "[[device]]\ntype = \"virtio-net\"\nname = \"d0 [{= ,#\\\"]]\"\n",
        "",
        1,
    );
    let spec = parse(Source {
        origin: "vm.toml",
        text: &text,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.devices[MAX_DEVICES - 1].name, r#"b [{=,#" ]]"#);
}

/// Runs the binary with `args`, standard input from `stdin`.
fn binary(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let out = binary_with_stdin(args, stdin);
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn endless_devices_are_refused_after_the_limit() {
    for dev in ["/dev/zero", "/dev/urandom"] {
        let (code, out, err) = binary(&["plan", dev], b"");
        assert_eq!(code, 2, "{dev}: {err}");
        assert!(out.is_empty());
        assert!(
            err.contains(&format!("{dev} is larger than 1048576 bytes")),
            "{dev}: {err}"
        );
    }
}

#[test]
fn stdin_dash_reads_the_spec() {
    let (code, out, err) = binary(&["plan", "-"], MEM.as_bytes());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("RAM 256 MiB in 1 NUMA node"), "{out}");
}

#[test]
fn stdin_endless_is_refused() {
    let big = vec![b'#'; (1 << 20) + 4096];
    let (code, _, err) = binary(&["plan", "-"], &big);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("<stdin> is larger than 1048576 bytes"),
        "{err}"
    );
}

#[test]
fn run_unknown_argument_with_control_characters_escaped() {
    // The usage error quotes the argument: its control and reordering characters are escaped,
    // its own line breaks kept.
    for arg in ["--x\u{1b}[2Jy", "--a\u{9a}b", "--a\u{202e}b", "--a\nb"] {
        let (code, _, err) = run(&["plan", arg]);
        assert_eq!(code, 2, "{arg:?}");
        assert!(
            !err.chars()
                .any(|c| memvisor_cli::render::needs_escape(c) && c != '\n'),
            "{arg:?}: a control character reached the terminal: {err:?}"
        );
        assert!(err.contains("unexpected argument"), "{err}");
    }
    let (code, _, err) = run(&["plan", "--a\u{9a}b"]);
    assert_eq!(code, 2);
    assert!(err.contains("'--a\\u{9a}b'"), "{err:?}");
}

#[test]
fn unreadable_spec_paths_with_control_characters_are_escaped() {
    // A file that does not exist, a directory and a file that is not UTF-8, each named with
    // an escape sequence and a line break: the error names the file escaped.
    let dir = std::env::temp_dir().join(format!("memvisor-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let name = "x\u{1b}[2J\nz";
    let missing = dir.join(format!("missing-{name}.toml"));
    let directory = dir.join(format!("dir-{name}"));
    std::fs::create_dir_all(&directory).unwrap();
    let binary_file = dir.join(format!("bin-{name}.toml"));
    std::fs::write(&binary_file, b"[memory]\nsize = \"\xff\"\n").unwrap();
    for path in [&missing, &directory, &binary_file] {
        let path = path.to_str().unwrap();
        let (code, _, err) = run(&["plan", path]);
        assert_eq!(code, 2, "{path:?}");
        assert!(
            !err.chars()
                .any(|c| memvisor_cli::render::needs_escape(c) && c != '\n'),
            "{path:?}: a control character reached the terminal: {err:?}"
        );
        assert!(err.contains("x\\u{1b}[2J\\u{a}z"), "{err:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs the binary with `args` and standard input closed; `None` when it is still running
/// after `limit` (it is then killed).
fn binary_within(args: &[&str], limit: std::time::Duration) -> Option<(i32, String, String)> {
    let mut child = spawn(args, Stdio::null());
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Some((
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    ))
}

/// A FIFO named as a spec (or another VMM's file) that no one writes does not make the
/// command wait for a writer: it is read as what is there, nothing, and refused.
#[test]
fn fifo_without_a_writer_does_not_hang() {
    let dir = std::env::temp_dir().join(format!("memvisor-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("spec.toml");
    let _ = std::fs::remove_file(&fifo);
    let made = Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("no mkfifo here: skipped");
        return;
    }
    let path = fifo.to_str().unwrap();
    for args in [
        &["plan", path][..],
        &["plan", "--from", "firecracker", path],
        &["init", "--from", "cloud-hypervisor-json", path],
        &["check", path],
    ] {
        let (code, out, err) = binary_within(args, std::time::Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{args:?} waited for a writer"));
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains("spec.toml"), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A spec on standard input from a pipe whose writer neither closes it nor (after what it
/// wrote) writes more is refused once `MAX_READ_WAIT` (10 s) has passed, as a FIFO is: the
/// command does not wait without end. Every command that reads SPEC is tried at once.
#[test]
fn stdin_pipe_held_open_does_not_hang() {
    use std::io::Write;
    let cases: [(&[&str], &[u8]); 4] = [
        (&["plan", "-"], b""),
        (&["check", "-"], MEM.as_bytes()),
        (&["plan", "--from", "firecracker", "-"], b"{"),
        (&["init", "--from", "cloud-hypervisor-json", "-"], b""),
    ];
    let start = std::time::Instant::now();
    let children: Vec<_> = cases
        .iter()
        .map(|(args, data)| {
            let mut child = spawn(args, Stdio::piped());
            // The writing end stays open (held here) until the command has answered.
            let mut input = child.stdin.take().unwrap();
            input.write_all(data).unwrap();
            input.flush().unwrap();
            (child, input)
        })
        .collect();
    for ((mut child, input), (args, _)) in children.into_iter().zip(cases) {
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > std::time::Duration::from_secs(40) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{args:?} waited without end for standard input");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        drop(input);
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            err.contains("cannot read <stdin>") && err.contains("no end of its data after 10 s"),
            "{args:?}: {err}"
        );
    }
    assert!(start.elapsed() >= std::time::Duration::from_secs(10));
}

#[test]
fn a_name_taken_from_the_file_name_holds_its_control_characters_escaped() {
    // A name may not hold control or format characters: one taken from the file name has them
    // escaped, in the table's heading and in the JSON document alike (whose string then reads
    // back as that escaped text).
    let dir = std::env::temp_dir().join(format!("memvisor-stem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ev\u{1b}[31mil\u{202e}.toml");
    std::fs::write(&path, "[memory]\nsize = \"1GiB\"\n").unwrap();
    let path = path.to_str().unwrap();
    let (code, out, err) = run(&["plan", "--json", path]);
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["name"], "ev\\u{1b}[31mil\\u{202e}");
    let (code, out, err) = run(&["plan", path]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ev\\u{1b}[31mil\\u{202e}: "), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}
