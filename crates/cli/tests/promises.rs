//! Promises of `SPEC.md`, `DESIGN.md` and `--help` that no other test held to: each test here
//! fails when the promise it names is broken.

use std::path::PathBuf;
use std::process::Output;

mod common;

use common::binary as memvisor;

fn tmp(name: &str) -> PathBuf {
    common::scratch(&format!("promises-{name}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// SPEC.md: the converted spec has "the architecture it is for (`arch`: `--arch` of `plan`,
/// `back`, `check` or `init`)"; `--arch` overrides the spec's `arch`. `check` takes it as
/// `plan` does: a spec that plans on x86_64 but not on aarch64 is refused by both alike.
#[test]
fn check_takes_arch_as_plan_does() {
    let path = tmp("check-arch.toml");
    std::fs::write(
        &path,
        "[memory]\nsize = \"256MiB\"\n[serial]\nport = 0x3f8\n",
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let plan = memvisor(&["plan", "--arch", "aarch64", path]);
    assert_eq!(plan.status.code(), Some(2), "{}", stderr(&plan));
    assert!(
        stderr(&plan).contains("serial.port: the aarch64 serial port is MMIO"),
        "{}",
        stderr(&plan)
    );
    let check = memvisor(&["check", "--arch", "aarch64", path]);
    assert_eq!(check.status.code(), Some(2), "{}", stderr(&check));
    assert_eq!(stderr(&check), stderr(&plan));
    // And the flag is what refuses it: without it the spec is an x86_64 one that plans.
    let check = memvisor(&["check", "--json", path]);
    assert_ne!(check.status.code(), Some(2), "{}", stderr(&check));
}

/// A Firecracker file is converted for the architecture `check --arch` names, as `plan`'s:
/// `smt: true` is refused on aarch64, as Firecracker refuses it there.
#[test]
fn check_converts_firecracker_for_its_arch() {
    let path = tmp("check-arch-fc.json");
    std::fs::write(
        &path,
        r#"{"vcpu_count": 2, "mem_size_mib": 256, "smt": true}"#,
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let args = |cmd: &'static str| [cmd, "--json", "--from", "firecracker", "--arch", "aarch64"];
    let plan = memvisor(&[&args("plan")[..], &[path]].concat());
    assert_eq!(plan.status.code(), Some(2), "{}", stderr(&plan));
    let check = memvisor(&[&args("check")[..], &[path]].concat());
    assert_eq!(check.status.code(), Some(2), "{}", stderr(&check));
    assert_eq!(check.stdout, plan.stdout);
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("smt"),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

/// `Excerpt::span` is "the underlined bytes of `text`": inside it, on character boundaries,
/// and empty only where it marks the end of `text` (a value the line ends at), for any span
/// `Excerpt::new` is given.
#[test]
fn excerpt_span_is_inside_its_text_and_empty_only_at_its_end() {
    use memvisor_cli::diagnostic::{Excerpt, MAX_EXCERPT_CHARS};

    let long = format!("name = \"{}\" # é\n", "日".repeat(300));
    for text in [
        "abc",
        "",
        "a = 1\nbb = \"é\"\r\n",
        "\u{feff}x = 1\n",
        "k = \"\u{1b}[2J\u{202e}\"",
        long.as_str(),
    ] {
        let ends = (0..=text.len() + 2).step_by(if text.len() > 100 { 37 } else { 1 });
        for start in ends.clone() {
            for end in ends.clone() {
                let e = Excerpt::new(text, start..end);
                let what = format!("{text:?} {start}..{end}: {e:?}");
                assert!(e.span.start <= e.span.end, "{what}");
                assert!(e.span.end <= e.text.len(), "{what}");
                assert!(e.text.is_char_boundary(e.span.start), "{what}");
                assert!(e.text.is_char_boundary(e.span.end), "{what}");
                assert!(!e.span.is_empty() || e.span.start == e.text.len(), "{what}");
                // At most MAX_EXCERPT_CHARS of the line, and a cut mark at each end.
                assert!(e.text.chars().count() <= MAX_EXCERPT_CHARS + 2, "{what}");
                assert!(
                    !e.text.contains(['\n', '\r', '\u{1b}', '\u{202e}']),
                    "{what}"
                );
            }
        }
    }
    // Past the end of a line: the span marks the line's end.
    let e = Excerpt::new("abc", 10..20);
    assert_eq!((e.text.as_str(), e.span), ("abc", 3..3));
}

/// `VmSpec::scaled` (and `back --scale`): `window_align` divided by the factor and rounded
/// down to a power of two, at least 2 MiB and the RAM page size, but never more than the
/// spec's own, which wins when it is below the RAM page (1 GiB pages in 2 MiB windows).
#[test]
fn scaled_window_align_stays_within_the_spec_own() {
    use memvisor_cli::spec::{Source, parse};

    let spec = |align: &str, pages: &str| {
        let text = format!(
            "{align}[memory]\nsize = \"4GiB\"\nhuge_pages = \"{pages}\"\n[hotplug]\nslots = 2\nslot_size = \"4GiB\"\n"
        );
        parse(Source {
            origin: "vm.toml",
            text: &text,
        })
        .unwrap()
    };
    let none = spec("", "none");
    assert_eq!(none.scaled(1).window_align, None);
    assert_eq!(none.scaled(4).window_align, Some(256 << 20));
    assert_eq!(none.scaled(3).window_align, Some(256 << 20));
    assert_eq!(none.scaled(1 << 20).window_align, Some(2 << 20));
    let gib_pages = spec("", "1GiB");
    assert_eq!(gib_pages.scaled(64).window_align, Some(1 << 30));
    assert_eq!(gib_pages.scaled(64).ram(), 1 << 30);
    let small_windows = spec("window_align = \"2MiB\"\n", "1GiB");
    let scaled = small_windows.scaled(64);
    assert_eq!(scaled.window_align, Some(2 << 20));
    assert_eq!(scaled.hotplug.unwrap().slot_size, 1 << 30);
}

/// SPEC.md: `name` is the heading of the output, by default the file name without its
/// extension (`<stdin>` for standard input), with what must not reach a terminal escaped.
#[test]
fn default_name_is_the_file_name_without_its_extension() {
    use std::io::Write;

    let name_of = |out: &Output| -> String {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["name"].as_str().unwrap().to_owned()
    };
    let text = "[memory]\nsize = \"256MiB\"\n";
    for (file, name) in [
        ("my.vm.toml", "my.vm"),
        ("plain", "plain"),
        ("a\u{1b}b.toml", "a\\u{1b}b"),
    ] {
        let dir = tmp("names");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        let out = memvisor(&["plan", "--json", path.to_str().unwrap()]);
        assert_eq!(name_of(&out), name, "{file:?}");
    }
    let mut child = common::spawn(&["plan", "--json", "-"], std::process::Stdio::piped());
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    assert_eq!(name_of(&child.wait_with_output().unwrap()), "<stdin>");
    // A name given is kept as written.
    let path = tmp("named.toml");
    std::fs::write(&path, format!("name = \"my VM\"\n{text}")).unwrap();
    assert_eq!(
        name_of(&memvisor(&["plan", "--json", path.to_str().unwrap()])),
        "my VM"
    );
}

/// SPEC.md, Interrupt numbers: a spec's `irq` is the GSI on x86_64 and the INTID on AArch64;
/// the JSON `irq` is `{"gsi": N}` on x86_64 and `{"gsi": N, "intid": N + 32}` on AArch64.
#[test]
fn spec_irq_is_the_gsi_on_x86_64_and_the_intid_on_aarch64() {
    let irq_of = |arch: &str, irq: u32| -> serde_json::Value {
        let path = tmp(&format!("irq-{arch}-{irq}.toml"));
        std::fs::write(
            &path,
            format!(
                "arch = \"{arch}\"\n[memory]\nsize = \"256MiB\"\n[[device]]\ntype = \
                 \"virtio-net\"\nirq = {irq}\n"
            ),
        )
        .unwrap();
        let out = memvisor(&["plan", "--json", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "net0")
            .unwrap()["irq"]
            .clone()
    };
    assert_eq!(irq_of("x86_64", 10), serde_json::json!({"gsi": 10}));
    assert_eq!(
        irq_of("aarch64", 40),
        serde_json::json!({"gsi": 8, "intid": 40})
    );
    assert_eq!(
        irq_of("aarch64", 127),
        serde_json::json!({"gsi": 95, "intid": 127})
    );
    // An AArch64 `irq` below the first SPI's INTID is refused, naming it.
    let path = tmp("irq-aarch64-8.toml");
    std::fs::write(
        &path,
        "arch = \"aarch64\"\n[memory]\nsize = \"256MiB\"\n[[device]]\ntype = \
         \"virtio-net\"\nirq = 8\n",
    )
    .unwrap();
    let out = memvisor(&["plan", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out)
            .starts_with("error: device[0].irq: INTID 8 is not an SPI (SPIs are INTIDs 32..=127)"),
        "{}",
        stderr(&out)
    );
}

/// SPEC.md, Limits: `memory.hugetlbfs` is an absolute path of at most 4095 bytes with no
/// control or format characters; a path that breaks a rule is refused by a message that says
/// which rule and names the value (its length, the character).
#[test]
fn hugetlbfs_path_refusal_names_the_rule_and_the_value() {
    use memvisor_cli::spec::{Source, parse};

    let error_of = |path: &str| {
        let text = format!(
            "[memory]\nsize = \"256MiB\"\nbacking = \"hugetlbfs\"\nhuge_pages = \
             \"2MiB\"\nhugetlbfs = {}\n",
            toml::Value::String(path.to_owned())
        );
        match parse(Source {
            origin: "vm.toml",
            text: &text,
        }) {
            Ok(spec) => Ok(spec.memory.backing),
            Err(e) => {
                assert_eq!(e.field, "memory.hugetlbfs");
                assert_eq!(e.position, Some((5, 13)));
                Err(e.problem.to_string())
            }
        }
    };
    let longest = format!("/{}", "a".repeat(4094));
    assert!(error_of(&longest).is_ok());
    assert!(error_of("/dev/hugepages").is_ok());
    assert_eq!(
        error_of("dev/hugepages").unwrap_err(),
        "`dev/hugepages` is not an absolute path (a hugetlbfs mount's path starts with `/`)"
    );
    assert_eq!(
        error_of(&format!("{longest}a")).unwrap_err(),
        "a path of 4096 bytes (a hugetlbfs mount's path is at most 4095)"
    );
    for (c, shown) in [
        ('\u{1b}', "\\u{1b}"),
        ('\u{85}', "\\u{85}"),
        ('\u{2028}', "\\u{2028}"),
        ('\u{202e}', "\\u{202e}"),
    ] {
        assert_eq!(
            error_of(&format!("/mnt/a{c}b")).unwrap_err(),
            format!("the path contains the control or formatting character {shown}")
        );
    }
}

/// SPEC.md: `check` gives "for each problem, the fix"; `Finding::fix` is what to do "when it is
/// not `ok`". On hosts short of everything, every failed check has a fix and no `ok` one has.
#[test]
fn every_failed_check_has_a_fix_and_no_passed_one_has() {
    use memvisor_cli::check::{HostFacts, PathState, Status, check_spec};
    use memvisor_cli::plan::plan;
    use memvisor_cli::spec::{Source, parse};

    const GIB: u64 = 1 << 30;
    let specs = [
        "[memory]\nsize = \"2GiB\"\nprefault = 2\n",
        "[memory]\nsize = \"2GiB\"\nbacking = \"memfd\"\nhuge_pages = \"transparent\"\n[hotplug]\nslots \
         = 2\nslot_size = \"1GiB\"\n",
        "[memory]\nsize = \"2GiB\"\nhuge_pages = \"2MiB\"\nprefault = 1\n[hotplug]\nslots = 2\nslot_size \
         = \"1GiB\"\n",
        "[memory]\nsize = \"2GiB\"\nhuge_pages = \"1GiB\"\nhuge_page_fallback = \"transparent\"\nprefault \
         = 1\n",
        "[memory]\nsize = \"2GiB\"\nbacking = \"hugetlbfs\"\nhugetlbfs = \"/mnt/huge\"\nhuge_pages = \
         \"2MiB\"\n",
        "phys_bits = 48\n[memory]\n[[numa]]\nsize = \"1GiB\"\nhost_nodes = [0]\n[[numa]]\nsize = \
         \"1GiB\"\nhost_nodes = [7]\n[[device]]\ntype = \"virtio-pmem\"\ndax_size = \"4GiB\"\n",
    ];
    let short = HostFacts {
        thp_enabled: "never".into(),
        thp_shmem_enabled: "never".into(),
        huge_page_pools: vec![(2 << 20, 3, 3), (GIB, 0, 0)],
        huge_page_reserved: vec![(2 << 20, 1)],
        mounts: vec![("/".into(), None), ("/mnt".into(), None)],
        numa_nodes: vec![(0, 1 << 20)],
        phys_bits: Some(36),
        kvm_error: Some("No such file or directory".into()),
        max_map_count: Some(10),
        map_count: 9,
        overcommit_mode: 2,
        commit: Some((GIB, GIB / 2)),
        memory_and_swap: Some(GIB),
        memory_available: Some(1 << 20),
        paths: vec![("/mnt/huge".into(), PathState::Missing)],
        resolved: Vec::new(),
        ..HostFacts::default()
    };
    let unknown = HostFacts::default();
    let heuristic = HostFacts {
        overcommit_mode: 0,
        ..short.clone()
    };
    let mut failed = 0;
    for host in [&short, &unknown, &heuristic] {
        for text in specs {
            let src = Source {
                origin: "vm.toml",
                text,
            };
            let spec = parse(src).unwrap();
            let plan = plan(&spec, src).unwrap();
            for f in check_spec(&spec, &plan, host) {
                match f.status {
                    Status::Ok => assert_eq!(f.fix, None, "{text}: {f:?}"),
                    Status::Fail => {
                        failed += 1;
                        assert!(
                            f.fix.as_ref().is_some_and(|fix| !fix.trim().is_empty()),
                            "{text}: {f:?}"
                        );
                    }
                    _ => {}
                }
            }
        }
    }
    assert!(failed >= 10, "the hosts should fail many checks: {failed}");
}
