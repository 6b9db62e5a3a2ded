//! The command's spec path through its library: text (arbitrary bytes, or one of the shipped
//! specs with random values put in its fields, lines dropped or repeated; or a Firecracker
//! file or Cloud Hypervisor's `--memory` option or its command line with `--memory-zone` and
//! `--numa`, or its JSON VmConfig, converted) is parsed, scaled (by up to `u64::MAX`),
//! planned, checked against
//! a fixed host and rendered as text, JSON and a kernel command line; `memvisor plan` and
//! `init` also run through `memvisor_cli::run` on options that need no file. Checked: nothing
//! panics; a spec is refused only with a `SpecError` whose report and JSON render; a plan's
//! regions and device windows never overlap and lie under its address limit, its JSON parses
//! back with the schema version; no control character but a newline reaches the terminal;
//! `run` exits with 0 or 2 only, and its JSON output parses. Each input is also held to a
//! budget of heap requests and bytes requested (see [`Budget`]): an input that makes the
//! command allocate or work far past what its size allows fails the target, as a panic does,
//! where a slow input would otherwise pass unseen.
#![no_main]

use std::cell::Cell;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use memvisor_cli::check::{HostFacts, check_spec, check_text, host_facts};
use memvisor_cli::json::{ErrorDoc, PlanDoc, SCHEMA_VERSION};
use memvisor_cli::plan::{Plan, plan};
use memvisor_cli::render::{kernel_cmdline, plan_text};
use memvisor_cli::spec::{
    Arch, DEFAULT_SPEC, MAX_WINDOW_ALIGN, MIN_WINDOW_ALIGN, Source, parse_for,
};
use memvisor_cli::vmm::DefaultHugePage;
use memvisor_cli::{Error, SpecError};
use memvisor_fuzz::Input;
use memvisor_testkit::counting_heap::{Counting, used_by};

/// Inputs longer than this are cut: the parser's own bound is 1 MiB, far past what finds bugs.
const MAX_TEXT: usize = 16 << 10;

/// The shipped specs, the starting points of the structured variant.
const SPECS: [&str; 4] = [
    DEFAULT_SPEC,
    include_str!("../../examples/microvm.toml"),
    include_str!("../../examples/large-vm.toml"),
    include_str!("../../examples/aarch64.toml"),
];
const FIRECRACKER: &str = include_str!("../../examples/firecracker.json");
/// A Cloud Hypervisor VmConfig with memory zones and NUMA nodes, the starting point of its JSON
/// variant.
const CH_VM_CONFIG: &str = r#"{"cpus": {"boot_vcpus": 2, "max_vcpus": 2},
"payload": {"kernel": "/k"}, "platform": {"num_pci_segments": 1}, "memory": {"size": 0,
"hotplug_method": "VirtioMem", "shared": false, "thp": true, "zones": [
{"id": "a", "size": 1073741824, "host_numa_node": 0, "prefault": false},
{"id": "b", "size": 2147483648, "hotplug_size": 1073741824, "hotplugged_size": 2097152}]},
"numa": [{"guest_numa_id": 0, "cpus": [0], "memory_zones": ["a"], "pci_segments": [0],
"distances": [{"destination": 1, "distance": 20}]},
{"guest_numa_id": 1, "cpus": [1], "memory_zones": ["b"]}]}"#;

/// Values put in place of a field's value.
const VALUES: [&str; 24] = [
    "\"0\"",
    "\"1B\"",
    "\"4KiB\"",
    "\"2MiB\"",
    "\"1GiB\"",
    "\"16EiB\"",
    "\"18446744073709551615B\"",
    "\"1TiB\"",
    "\"-1MiB\"",
    "\"1.5GiB\"",
    "0",
    "1",
    "-1",
    "4294967296",
    "18446744073709551616",
    "true",
    "[]",
    "[0, 1, 1]",
    "{}",
    "\"\"",
    "\"virtio-net\"",
    "\"aarch64\"",
    "\"hugetlbfs\"",
    "\"\\u202e\"",
];

/// Counts each heap request and the bytes it asks for, on this thread: the count stands for
/// the work an input makes (parsing, planning and rendering allocate as they go), the bytes for
/// the memory. Not time, which a busy machine makes noisy.
#[global_allocator]
static GLOBAL: Counting = Counting;

/// What the plans made for the input hold.
#[derive(Clone, Copy, Default)]
struct Planned {
    /// Rows: map entries, hotplug slots, devices and layout windows, each a line of the plan's
    /// text and an object of its JSON.
    rows: u64,
    /// Host nodes the map entries and slots list, each a number in the text and the JSON.
    numbers: u64,
}

thread_local! {
    /// What the plans made for the input hold.
    static PLANNED: Cell<Planned> = const { Cell::new(Planned { rows: 0, numbers: 0 }) };
    /// The heap requests and bytes of the target's own checks (the plan's JSON parsed back,
    /// overlaps sorted out), which are not the command's work and are left out of the budget.
    static UNCOUNTED: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Runs one of the target's own checks, its heap use left out of the input's budget.
fn uncounted<R>(check: impl FnOnce() -> R) -> R {
    let (out, usage) = used_by(check);
    UNCOUNTED.with(|u| {
        let (requests, bytes) = u.get();
        u.set((requests + usage.requests as u64, bytes + usage.bytes as u64));
    });
    out
}

/// The heap requests and bytes one input may take, given its length and what its plans hold.
/// SPEC.md promises that reading and checking a spec takes milliseconds and bounded memory,
/// and that a plan's output is linear in what it holds (1024 slots of a node bound to 1024
/// host nodes list two million numbers). So the work is held to a fixed part, a part per input
/// byte, a part per row planned and a part per number a row lists: an input whose work grows
/// faster than what it holds (a search, a quadratic check, a copy per row of something as large
/// as the input) fails, whatever the speed of the machine. The seeds take under a third of the
/// fixed part. Measured: a plan of 1024 hotplug slots (2,063 rows, each slot also a map entry)
/// took 54,300 requests (4,300 planning it, 25,900 its text, 23,700 its JSON), some 26 a row,
/// and 6.5 MB, some 3 KB a row; the largest plan
/// a 16 KiB input makes (1024 slots of a node bound to 1024 host nodes, 2.1 million numbers)
/// took 2.4 million requests and 317 MB, some 1.2 requests and 150 bytes a number.
fn budget(input: usize, planned: Planned) -> (u64, u64) {
    let input = input as u64;
    (
        20_000 + 16 * input + 64 * planned.rows + 2 * planned.numbers,
        (4 << 20) + (4 << 10) * input + (8 << 10) * planned.rows + 256 * planned.numbers,
    )
}

fn host() -> &'static HostFacts {
    static HOST: OnceLock<HostFacts> = OnceLock::new();
    // This host's files are within the limits the command reads.
    HOST.get_or_init(|| host_facts().expect("the host's /proc and /sys files are readable"))
}

fn no_control(what: &str, text: &str) {
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{what}: a control character reached the terminal: {text:?}"
    );
}

/// A shipped spec with random changes, line by line.
fn mutated(input: &mut Input<'_>) -> String {
    let base = SPECS[usize::from(input.u8()) % SPECS.len()];
    let mut lines: Vec<String> = base.lines().map(str::to_owned).collect();
    let changes = 1 + input.u8() % 8;
    for _ in 0..changes {
        if lines.is_empty() {
            break;
        }
        let i = usize::from(input.u16()) % lines.len();
        match input.u8() % 8 {
            0 => {
                lines.remove(i);
            }
            1 => {
                let line = lines[i].clone();
                lines.insert(i, line);
            }
            2 => {
                // A number of the input's choosing, as a size or a plain number.
                let n = input.size();
                if let Some((key, _)) = lines[i].split_once('=') {
                    let unit = ["B", "KiB", "MiB", "GiB", "TiB"][usize::from(input.u8()) % 5];
                    lines[i] = if input.u8().is_multiple_of(2) {
                        format!("{key}= \"{n}{unit}\"")
                    } else {
                        format!("{key}= {}", n as i64)
                    };
                }
            }
            3 => {
                // A table header repeated elsewhere.
                let header = [
                    "[memory]",
                    "[[numa]]",
                    "[hotplug]",
                    "[[device]]",
                    "[serial]",
                    "[dax]",
                ][usize::from(input.u8()) % 6];
                lines.insert(i, header.to_owned());
            }
            _ => {
                if let Some((key, _)) = lines[i].split_once('=') {
                    let value = VALUES[usize::from(input.u8()) % VALUES.len()];
                    lines[i] = format!("{key}= {value}");
                }
            }
        }
    }
    lines.join("\n")
}

/// Checks a refusal: its report and JSON render, without control characters.
fn refused(err: SpecError) {
    let report = memvisor_cli::diagnostic::report(&err);
    no_control("report", &report);
    let _ = err.to_string();
    let doc = ErrorDoc::from(&Error::Spec(err));
    let text = serde_json::to_string(&doc).expect("an error serializes");
    let value: serde_json::Value = serde_json::from_str(&text).expect("the error's JSON parses");
    assert_eq!(
        value["schema_version"], SCHEMA_VERSION,
        "error schema version"
    );
}

fn planned(plan: &Plan) {
    let rows = plan.map.len() + plan.hotplug.len() + plan.devices.len() + plan.windows.len();
    let numbers = plan.map.iter().map(|m| m.backing.host_nodes.len());
    let numbers = numbers
        .chain(plan.hotplug.iter().map(|s| s.backing.host_nodes.len()))
        .sum::<usize>();
    PLANNED.with(|p| {
        let Planned {
            rows: r,
            numbers: n,
        } = p.get();
        p.set(Planned {
            rows: r + rows as u64,
            numbers: n + numbers as u64,
        });
    });
    uncounted(|| no_overlaps(plan));
    no_control("plan text", &plan_text(plan));
    if let Ok(line) = kernel_cmdline(plan) {
        no_control("kernel command line", &line);
    }
    let text = serde_json::to_string_pretty(&PlanDoc::from(plan)).expect("a plan serializes");
    let value: serde_json::Value =
        uncounted(|| serde_json::from_str(&text).expect("the plan's JSON parses"));
    assert_eq!(
        value["schema_version"], SCHEMA_VERSION,
        "plan schema version"
    );
}

/// Regions (and hotplug slots) never overlap and stay under the address limit, nor do device
/// windows overlap.
fn no_overlaps(plan: &Plan) {
    let mut spans: Vec<(u64, u64)> = plan
        .regions
        .iter()
        .chain(&plan.slots)
        .map(|r| {
            let range = r.spec.range().expect("a planned region has a range");
            (r.spec.base().0, range.last().0)
        })
        .collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        assert!(pair[0].1 < pair[1].0, "planned regions overlap: {pair:?}");
    }
    if let Some(&(_, last)) = spans.last() {
        assert!(
            last <= plan.address_limit,
            "a region past the address limit"
        );
    }
    let mut mmio: Vec<(u64, u64)> = plan
        .devices
        .iter()
        .filter_map(|d| d.mmio)
        .map(|s| (s.start, s.end))
        .collect();
    mmio.sort_unstable();
    for pair in mmio.windows(2) {
        assert!(pair[0].1 < pair[1].0, "device windows overlap: {pair:?}");
    }
}

fn spec_text(origin: &str, text: &str, arch: Option<Arch>, scale: u64) {
    let src = Source { origin, text };
    let vm = match parse_for(src, arch) {
        Ok(vm) => vm.scaled(scale),
        Err(err) => return refused(err),
    };
    if let Some(align) = vm.window_align {
        assert!(
            align.is_power_of_two() && (MIN_WINDOW_ALIGN..=MAX_WINDOW_ALIGN).contains(&align),
            "window_align {align:#x} after scaling by {scale}"
        );
    }
    let plan = match plan(&vm, src) {
        Ok(plan) => plan,
        Err(err) => return refused(err),
    };
    planned(&plan);
    let findings = check_spec(&vm, &plan, host());
    no_control("check", &check_text(&plan.name, &findings));
}

/// `memvisor ARGS` in-process: exit code 0 or 2 only (nothing here touches the host), and JSON
/// output that parses.
fn run(args: &[&str], json: bool) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = memvisor_cli::run(args.iter().copied(), &mut out, &mut err, false);
    assert!(code == 0 || code == 2, "{args:?} exited with {code}");
    let err = String::from_utf8(err).expect("standard error is UTF-8");
    no_control("standard error", &err);
    if json && !out.is_empty() {
        let _: serde_json::Value =
            uncounted(|| serde_json::from_slice(&out).expect("JSON output parses"));
    }
}

fuzz_target!(|data: &[u8]| {
    // The host's facts are read once, outside any input's budget.
    host();
    PLANNED.with(|p| p.set(Planned::default()));
    UNCOUNTED.with(|u| u.set((0, 0)));
    let ((), usage) = used_by(|| one(data));
    let (checks, checks_bytes) = UNCOUNTED.with(Cell::get);
    let requests = usage.requests as u64 - checks;
    let bytes = usage.bytes as u64 - checks_bytes;
    let planned = PLANNED.with(Cell::get);
    let Planned { rows, numbers } = planned;
    let (max_requests, max_bytes) = budget(data.len(), planned);
    if std::env::var_os("CLI_SPEC_BUDGET").is_some() {
        eprintln!(
            "budget: {requests} requests of {max_requests}, {bytes} bytes of {max_bytes} \
             ({} input bytes, {rows} rows and {numbers} numbers planned)",
            data.len()
        );
    }
    assert!(
        requests <= max_requests,
        "{requests} heap requests for an input of {} bytes and {rows} rows and {numbers} \
         numbers planned (budget {max_requests})",
        data.len()
    );
    assert!(
        bytes <= max_bytes,
        "{bytes} bytes asked of the heap for an input of {} bytes and {rows} rows and \
         {numbers} numbers planned (budget {max_bytes})",
        data.len()
    );
});

fn one(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let arch = match input.u8() % 3 {
        0 => Some(Arch::X86_64),
        1 => Some(Arch::Aarch64),
        _ => None,
    };
    let scale = match input.u8() % 4 {
        0 => 1 + u64::from(input.u8()),
        // Up to u64::MAX, past what `--scale` takes: a scaled spec still plans.
        1 => u64::MAX >> (input.u8() % 64),
        _ => 1,
    };
    let rest = &data[data.len().min(3)..];
    let rest = &rest[..rest.len().min(MAX_TEXT)];
    match mode % 5 {
        0 => spec_text("fuzz.toml", &String::from_utf8_lossy(rest), arch, scale),
        1 => spec_text("fuzz.toml", &mutated(&mut input), arch, scale),
        2 => {
            // A Firecracker file: the input, or the example with its bytes changed.
            let text = if input.u8().is_multiple_of(2) {
                String::from_utf8_lossy(rest).into_owned()
            } else {
                let mut bytes = FIRECRACKER.as_bytes().to_vec();
                for _ in 0..1 + input.u8() % 4 {
                    let i = usize::from(input.u16()) % bytes.len();
                    bytes[i] = b"0123456789-.\"{}[]:,e"[usize::from(input.u8()) % 20];
                }
                String::from_utf8_lossy(&bytes).into_owned()
            };
            // Converted for the architecture it is planned for, as the command does.
            let fc_arch = arch.unwrap_or(Arch::X86_64);
            match memvisor_cli::vmm::firecracker_spec("fuzz.json", &text, fc_arch) {
                Ok(spec) => spec_text("fuzz.json (as a memvisor spec)", &spec, arch, scale),
                Err(e) => no_control("firecracker", &e.to_string()),
            }
        }
        3 => {
            // A Cloud Hypervisor JSON VmConfig: the input, or the example with its bytes
            // changed; converted and planned, also through `run` (as text).
            let text = if input.u8().is_multiple_of(2) {
                String::from_utf8_lossy(rest).into_owned()
            } else {
                let mut bytes = CH_VM_CONFIG.as_bytes().to_vec();
                for _ in 0..1 + input.u8() % 4 {
                    let i = usize::from(input.u16()) % bytes.len();
                    bytes[i] = b"0123456789-.\"{}[]:,ntfe"[usize::from(input.u8()) % 23];
                }
                String::from_utf8_lossy(&bytes).into_owned()
            };
            match memvisor_cli::vmm::cloud_hypervisor_json_spec(
                "fuzz.json",
                &text,
                DefaultHugePage::host(),
                Arch::X86_64,
            ) {
                Ok(spec) => spec_text("fuzz.json (as a memvisor spec)", &spec, arch, scale),
                Err(Error::Spec(err)) => refused(err),
                Err(e) => no_control("cloud hypervisor json", &e.to_string()),
            }
            if text.contains('\0') || text.starts_with('-') {
                return;
            }
            run(
                &[
                    "memvisor",
                    "plan",
                    "--json",
                    "--from",
                    "cloud-hypervisor",
                    &text,
                ],
                true,
            );
        }
        _ => {
            // A Cloud Hypervisor `--memory` option, or its command line with memory zones and
            // NUMA nodes, converted and planned, also through `run`.
            let text = String::from_utf8_lossy(&rest[..rest.len().min(256)]).into_owned();
            let option = match input.u8() % 4 {
                0 => format!("--memory size=0,hotplug_method=virtio-mem --memory-zone {text}"),
                1 => {
                    format!("--memory size=0 --memory-zone id=a,size=1G id=b,size=2G --numa {text}")
                }
                _ => text,
            };
            match memvisor_cli::vmm::cloud_hypervisor_spec(
                &option,
                DefaultHugePage::host(),
                Arch::X86_64,
            ) {
                Ok(spec) => spec_text("--memory", &spec, arch, scale),
                Err(e) => no_control("cloud hypervisor", &e.to_string()),
            }
            if option.contains('\0') {
                return;
            }
            let arch_arg = ["x86_64", "aarch64", "sparc"][usize::from(mode / 4) % 3];
            // An option that starts with `-` is read as flags (`-h` prints the help, not JSON).
            let json = !option.starts_with('-');
            run(
                &[
                    "memvisor",
                    "plan",
                    "--json",
                    "--arch",
                    arch_arg,
                    "--from",
                    "cloud-hypervisor",
                    &option,
                ],
                json,
            );
            run(
                &["memvisor", "plan", "--from", "cloud-hypervisor", &option],
                false,
            );
            run(
                &["memvisor", "init", "--from", "cloud-hypervisor", &option],
                false,
            );
        }
    }
}
