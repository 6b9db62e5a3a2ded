//! Command-line parsing and the three commands.

use std::ffi::{OsStr, OsString};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::back::{back, back_text, error_chain};
use crate::error::{Error, Result};
use crate::plan::{Plan, plan};
use crate::probe::{probe, probe_text};
use crate::render::plan_text;
use crate::spec::{self, DEFAULT_ORIGIN, DEFAULT_SPEC, Source};

/// Plan, back and probe guest memory of virtual machines.
#[derive(Debug, Parser)]
#[command(name = "memvisor", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The option of the commands that convert Cloud Hypervisor's settings (`plan`, `back`,
/// `check`, `init`).
#[derive(Debug, clap::Args)]
struct HostHugePage {
    /// With `--from cloud-hypervisor`: the host's default huge page size, which Cloud
    /// Hypervisor's `hugepages=on` without `hugepage_size` takes, and the page size of its
    /// /dev/hugepages mount, which it aligns that memory to (default: this host's,
    /// `Hugepagesize` in /proc/meminfo and the mount at /dev/hugepages). Refused with any
    /// other `--from`, where it would change nothing.
    #[arg(long, value_enum, value_name = "SIZE")]
    host_hugepage_size: Option<HugePageArg>,
}

/// The VM spec `plan`, `back` and `check` read: SPEC, the architecture that overrides its
/// own, and its format.
#[derive(Debug, clap::Args)]
struct SpecArgs {
    /// The VM spec (TOML; `-` reads standard input: typed on a terminal, up to Ctrl-D;
    /// from a pipe or file, whole within 10 s); without it, the built-in default microVM.
    spec: Option<OsString>,
    /// The guest architecture (overrides the spec's `arch`).
    #[arg(long, value_enum)]
    arch: Option<ArchArg>,
    /// The format of SPEC: a memvisor spec (TOML), a Firecracker JSON configuration file
    /// (a whole `--config-file` or its `machine-config`), or Cloud Hypervisor's
    /// `--memory` option string (`size=1G,hotplug_size=4G`) given as SPEC, or its
    /// `--memory`, `--memory-zone` and `--numa` options given as SPEC after `--`
    /// (`-- '--memory size=0 --memory-zone id=m0,size=1G'`), or its JSON VmConfig (the
    /// body of `vm.create`, what `ch-remote create` sends) given as SPEC when SPEC starts
    /// with `{`; or, with `cloud-hypervisor-json`, a file holding that VmConfig (`-` reads
    /// standard input).
    #[arg(long, value_enum, default_value_t = From::Memvisor)]
    from: From,
    #[command(flatten)]
    host: HostHugePage,
}

impl SpecArgs {
    /// How [`load_spec`] reads SPEC, scaled down by `scale`, notes going to `notes`.
    fn load<'w>(
        &self,
        scale: u64,
        huge: crate::vmm::DefaultHugePage<'static>,
        notes: &'w mut dyn Write,
    ) -> Load<'w> {
        Load {
            from: self.from,
            arch: self.arch,
            scale,
            huge,
            notes,
        }
    }
}

/// A huge page size a spec has.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum HugePageArg {
    #[value(name = "2M")]
    TwoMiB,
    #[value(name = "1G")]
    OneGiB,
}

/// The default huge page size of Cloud Hypervisor's settings: `pinned`, else this host's.
fn default_huge_page(pinned: Option<HugePageArg>) -> crate::vmm::DefaultHugePage<'static> {
    match pinned {
        Some(HugePageArg::TwoMiB) => crate::vmm::DefaultHugePage::Pinned(2 << 20),
        Some(HugePageArg::OneGiB) => crate::vmm::DefaultHugePage::Pinned(1 << 30),
        None => crate::vmm::DefaultHugePage::host(),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the guest physical memory map of a VM spec: RAM per NUMA node, device MMIO
    /// windows and interrupts, hotplug slots.
    Plan {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        input: SpecArgs,
        /// Print the guest kernel's command line arguments for the virtio-mmio devices
        /// (`virtio_mmio.device=4K@0xc0000000:5`, x86_64) instead of the plan.
        #[arg(long, conflicts_with = "json")]
        kernel_cmdline: bool,
    },
    /// Create the spec's host memory, plug and unplug each hotplug slot, and report time and
    /// memory use per step.
    Back {
        /// Divide every memory size by N (at least one page), to try a big spec on a small
        /// machine; N is 1 to 2^53.
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=crate::back::MAX_SCALE))]
        scale: u64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        input: SpecArgs,
    },
    /// Say whether this host can back the spec as written (huge pages, THP modes, NUMA nodes,
    /// address bits, /dev/kvm, max_map_count, overcommit), with the fix for each problem;
    /// nothing is mapped. Exits with 1 when something would fail.
    Check {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        input: SpecArgs,
    },
    /// Print the built-in default spec (a starting point: `memvisor init > vm.toml`), or,
    /// with `--from`, another VMM's configuration converted to a memvisor spec.
    Init {
        /// With `--from`: the Firecracker file, Cloud Hypervisor's `--memory` option string
        /// or its `--memory`, `--memory-zone` and `--numa` options (or its JSON VmConfig text),
        /// or the file of its JSON VmConfig.
        spec: Option<OsString>,
        /// The format of SPEC (see `plan --from`).
        #[arg(long, value_enum, default_value_t = From::Memvisor)]
        from: From,
        #[command(flatten)]
        host: HostHugePage,
        /// The guest architecture the configuration (or, without `--from`, the default spec)
        /// is for, written into the spec as `arch` (default x86_64; from Firecracker on x86_64
        /// the spec has Firecracker's device windows). The printed spec plans as `plan --from`
        /// with the same flags does: `init` reads and plans it before printing it, and
        /// refuses what `plan --from` refuses.
        #[arg(long, value_enum)]
        arch: Option<ArchArg>,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Report what this host offers: page sizes, transparent huge pages, huge page pools,
    /// NUMA nodes, MADV_POPULATE_WRITE, guard pages, vm.max_map_count, overcommit.
    Probe {
        /// Print JSON instead of `key: value` lines.
        #[arg(long)]
        json: bool,
    },
}

/// The format of the SPEC argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum From {
    /// A memvisor spec (TOML).
    Memvisor,
    /// A Firecracker JSON configuration file.
    Firecracker,
    /// Cloud Hypervisor's `--memory` option string, or its `--memory`, `--memory-zone` and
    /// `--numa` options, or its JSON VmConfig as text (starting with `{`).
    CloudHypervisor,
    /// A file holding Cloud Hypervisor's JSON VmConfig (the body of its API's `vm.create`).
    CloudHypervisorJson,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ArchArg {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "aarch64")]
    Aarch64,
}

/// What [`load_spec`] reads a spec with: its format, the architecture that overrides the
/// spec's, the scale, Cloud Hypervisor's default huge page size; and where notes about a
/// conversion go.
struct Load<'w> {
    from: From,
    arch: Option<ArchArg>,
    scale: u64,
    huge: crate::vmm::DefaultHugePage<'static>,
    notes: &'w mut dyn Write,
}

fn load(path: Option<&OsStr>, how: Load<'_>) -> Result<Plan> {
    Ok(load_spec(path, how)?.1)
}

/// The usage error of `--from firecracker` or `--from cloud-hypervisor` without SPEC.
fn from_needs_spec() -> Error {
    Error::Usage(
        "--from needs SPEC: a Firecracker file, Cloud Hypervisor's --memory option (or its \
         --memory, --memory-zone and --numa options, or its JSON VmConfig) or a Cloud \
         Hypervisor VmConfig file"
            .to_owned(),
    )
}

/// The spec text at `path` (the default one without) in the format `from`, converted to a
/// memvisor spec for another VMM's format: its origin (how errors name it) and its text.
fn spec_text(
    path: Option<&OsStr>,
    from: From,
    arch: Option<ArchArg>,
    huge: crate::vmm::DefaultHugePage<'static>,
) -> Result<(String, String)> {
    // Another VMM's configuration is converted for the architecture asked for, x86_64 when
    // none is.
    let arch = arch.map_or(spec::Arch::X86_64, spec_arch);
    Ok(match (path, from) {
        (None, From::Memvisor) => (DEFAULT_ORIGIN.to_owned(), DEFAULT_SPEC.to_owned()),
        (None, _) => return Err(from_needs_spec()),
        (Some(p), From::Memvisor) => (shown(p), crate::input::read_spec(p)?),
        (Some(p), From::Firecracker) => (
            crate::vmm::converted_origin(&shown(p)),
            crate::vmm::firecracker_spec(&shown(p), &crate::input::read_spec(p)?, arch)?,
        ),
        (Some(p), From::CloudHypervisorJson) => (
            crate::vmm::converted_origin(&shown(p)),
            crate::vmm::cloud_hypervisor_json_spec(
                &shown(p),
                &crate::input::read_spec(p)?,
                huge,
                arch,
            )?,
        ),
        (Some(option), From::CloudHypervisor) => {
            let option = utf8_option(option)?;
            (
                crate::vmm::converted_origin(crate::vmm::cloud_hypervisor_origin(option)),
                crate::vmm::cloud_hypervisor_spec(option, huge, arch)?,
            )
        }
    })
}

/// Reads, checks and plans the spec at `path` (the default one without), scaled down by
/// `scale`.
fn load_spec(path: Option<&OsStr>, how: Load<'_>) -> Result<(spec::VmSpec, Plan)> {
    let Load {
        from,
        arch,
        scale,
        huge,
        notes,
    } = how;
    let (origin, text) = spec_text(path, from, arch, huge)?;
    // A converted spec's notes, shown before its plan; a note that cannot be written is lost,
    // as the plan is what was asked for.
    if from != From::Memvisor {
        for note in text.lines().map_while(|l| l.strip_prefix(crate::vmm::NOTE)) {
            let _ = writeln!(notes, "note: {}", crate::render::escape(note));
        }
    }
    let src = Source {
        origin: &origin,
        text: &text,
    };
    let arch = arch.map(spec_arch);
    let vm = spec::parse_for(src, arch)?.scaled(scale);
    let plan = plan(&vm, src)?;
    Ok((vm, plan))
}

/// How `init` names the spec it prints when it checks it.
const INIT_ORIGIN: &str = "<the spec init prints>";

/// The spec `init --from FROM SPEC` prints: the converted text, with `arch` written into it
/// when `--arch` is given and the conversion does not write it (Cloud Hypervisor's), so that
/// the printed spec plans as `plan --from FROM --arch ARCH SPEC` does.
///
/// The input is refused exactly when `plan --from` refuses it: the converted text is read and
/// planned as `plan` would. Then the printed text is read and planned as a memvisor spec
/// with no flag; a spec that does not plan, or plans differently, is never printed
/// ([`Error::Internal`]).
fn init_text(
    path: Option<&OsStr>,
    from: From,
    arch: Option<ArchArg>,
    huge: crate::vmm::DefaultHugePage<'static>,
) -> Result<String> {
    let (origin, text) = spec_text(path, from, arch, huge)?;
    let src = Source {
        origin: &origin,
        text: &text,
    };
    let wanted = plan(&spec::parse_for(src, arch.map(spec_arch))?, src)?;
    let text = match (from, arch) {
        (From::CloudHypervisor | From::CloudHypervisorJson, Some(arch)) => {
            with_arch(&text, arch_name(arch))
        }
        _ => text,
    };
    let printed = Source {
        origin: INIT_ORIGIN,
        text: &text,
    };
    let again = spec::parse(printed)
        .map_err(Error::from)
        .and_then(|vm| Ok(plan(&vm, printed)?))
        .map_err(|e| {
            Error::Internal(format!(
                "the converted spec does not plan again: {}",
                error_chain(&e)
            ))
        })?;
    // The plan's serialized form holds every value `plan` shows (regions, windows, devices,
    // addresses, backing).
    let same = match (serde_json::to_value(&again), serde_json::to_value(&wanted)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same {
        return Err(Error::Internal(
            "the converted spec plans differently from its source".to_owned(),
        ));
    }
    Ok(text)
}

/// The default spec `init` prints: for `arch`, when given, with its `arch` written as that one,
/// so that it plans as `plan --arch ARCH` plans the default spec.
fn default_text(arch: Option<ArchArg>) -> String {
    const WRITTEN: &str = "\narch = \"x86_64\"\n";
    match arch {
        Some(arch) => {
            DEFAULT_SPEC.replacen(WRITTEN, &format!("\narch = \"{}\"\n", arch_name(arch)), 1)
        }
        None => DEFAULT_SPEC.to_owned(),
    }
}

/// `text` (a spec whose top-level table has no `arch`) with `arch = "ARCH"` as its first key,
/// after the comments at its top.
fn with_arch(text: &str, arch: &str) -> String {
    let at = text
        .split_inclusive('\n')
        .take_while(|l| l.starts_with('#') || l.trim().is_empty())
        .map(str::len)
        .sum();
    format!("{}arch = \"{arch}\"\n{}", &text[..at], &text[at..])
}

/// The spec's name of the architecture `--arch` names.
fn arch_name(arch: ArchArg) -> &'static str {
    match arch {
        ArchArg::X86_64 => "x86_64",
        ArchArg::Aarch64 => "aarch64",
    }
}

/// The architecture `--arch` names.
fn spec_arch(arch: ArchArg) -> spec::Arch {
    match arch {
        ArchArg::X86_64 => spec::Arch::X86_64,
        ArchArg::Aarch64 => spec::Arch::Aarch64,
    }
}

/// How errors name the spec at `path`: `<stdin>` for `-`, else the path, lossily as UTF-8 (a
/// path need not be UTF-8; every message escapes what it shows).
fn shown(path: &OsStr) -> String {
    if path == crate::input::STDIN {
        "<stdin>".to_owned()
    } else {
        path.to_string_lossy().into_owned()
    }
}

/// Cloud Hypervisor's options given as SPEC, which are text.
fn utf8_option(option: &OsStr) -> Result<&str> {
    option.to_str().ok_or_else(|| {
        Error::Usage(format!(
            "the Cloud Hypervisor option text `{}` is not UTF-8 text",
            crate::render::escape(&option.to_string_lossy())
        ))
    })
}

fn json(value: &impl serde::Serialize) -> String {
    // The output types hold only strings, numbers, booleans and lists: serializing cannot fail.
    let mut text =
        crate::render::escape_json(&serde_json::to_string_pretty(value).unwrap_or_default());
    text.push('\n');
    text
}

fn execute(
    command: Command,
    out: &mut dyn Write,
    err: &mut dyn Write,
    progress: bool,
) -> Result<()> {
    let (pinned, from) = match &command {
        Command::Plan { input, .. }
        | Command::Back { input, .. }
        | Command::Check { input, .. } => (input.host.host_hugepage_size, input.from),
        Command::Init { host, from, .. } => (host.host_hugepage_size, *from),
        Command::Completions { .. } | Command::Probe { .. } => (None, From::Memvisor),
    };
    // Only Cloud Hypervisor's settings take a default huge page size: elsewhere the option
    // would change nothing, which its user should hear of rather than trust it.
    if pinned.is_some() && !matches!(from, From::CloudHypervisor | From::CloudHypervisorJson) {
        return Err(Error::Usage(
            "--host-hugepage-size is only for --from cloud-hypervisor and --from \
             cloud-hypervisor-json (Cloud Hypervisor's default huge page size); a memvisor \
             spec or a Firecracker file names its page size itself"
                .to_owned(),
        ));
    }
    let huge = default_huge_page(pinned);
    let write =
        |out: &mut dyn Write, text: String| out.write_all(text.as_bytes()).map_err(Error::Output);
    match command {
        Command::Plan {
            input,
            json: as_json,
            kernel_cmdline,
        } => {
            let plan = load(input.spec.as_deref(), input.load(1, huge, err))?;
            let text = if kernel_cmdline {
                crate::render::kernel_cmdline(&plan).map_err(Error::Usage)?
            } else if as_json {
                json(&crate::json::PlanDoc::from(&plan))
            } else {
                plan_text(&plan)
            };
            write(out, text)
        }
        Command::Back {
            input,
            scale,
            json: as_json,
        } => {
            let plan = load(input.spec.as_deref(), input.load(scale, huge, err))?;
            let mut report = back(&plan, scale, progress && !as_json)?;
            write(
                out,
                if as_json {
                    json(&crate::json::BackDoc::from(&report))
                } else {
                    back_text(&report)
                },
            )?;
            match report.take_error() {
                Some((step, source)) => Err(Error::Back { step, source }),
                None => Ok(()),
            }
        }
        Command::Check {
            input,
            json: as_json,
        } => {
            let (vm, plan) = load_spec(input.spec.as_deref(), input.load(1, huge, err))?;
            let mut host = crate::check::host_facts()?;
            if let crate::spec::BackingKind::Hugetlbfs(path) = &vm.memory.backing {
                host.paths
                    .push((path.clone(), crate::check::path_state(path)));
                host.resolved
                    .push((path.clone(), crate::check::resolve(path)));
            }
            let findings = crate::check::check_spec(&vm, &plan, &host);
            write(
                out,
                if as_json {
                    json(&crate::json::CheckDoc {
                        schema_version: crate::json::SCHEMA_VERSION,
                        name: &plan.name,
                        ok: findings
                            .iter()
                            .all(|f| f.status != crate::check::Status::Fail),
                        findings: &findings,
                    })
                } else {
                    crate::check::check_text(&plan.name, &findings)
                },
            )?;
            match findings
                .iter()
                .filter(|f| f.status == crate::check::Status::Fail)
                .count()
            {
                0 => Ok(()),
                problems => Err(Error::HostCannotBack { problems }),
            }
        }
        Command::Init {
            spec, from, arch, ..
        } => {
            let text = match (from, spec.as_deref()) {
                (From::Memvisor, Some(_)) => {
                    return Err(Error::Usage(
                        "init prints the default spec; SPEC is only for --from firecracker, \
                         --from cloud-hypervisor or --from cloud-hypervisor-json"
                            .to_owned(),
                    ));
                }
                (From::Memvisor, None) => default_text(arch),
                (_, path) => init_text(path, from, arch, huge)?,
            };
            write(out, text)
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "memvisor",
                &mut script,
            );
            out.write_all(&script).map_err(Error::Output)
        }
        Command::Probe { json: as_json } => {
            let p = probe()?;
            write(
                out,
                if as_json {
                    json(&crate::json::ProbeDoc::from(&p))
                } else {
                    probe_text(&p)
                },
            )
        }
    }
}

/// Runs the command line `args` (the first is the program name), writing results to `out` and
/// errors to `err`; `progress` allows a progress bar on the terminal. Returns the exit code:
/// 0 on success, 2 for a spec or usage mistake, 1 for a runtime failure.
///
/// ```
/// let mut out = Vec::new();
/// let mut err = Vec::new();
/// let code = memvisor_cli::run(["memvisor", "plan", "--json"], &mut out, &mut err, false);
/// assert_eq!(code, 0);
/// let plan: serde_json::Value = serde_json::from_slice(&out).unwrap();
/// assert_eq!(plan["schema_version"], 1);
/// assert_eq!(plan["ram"], "0x80000000");
///
/// let code = memvisor_cli::run(["memvisor", "plan", "--arch", "sparc"], &mut out, &mut err, false);
/// assert_eq!(code, 2);
/// ```
pub fn run<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write, progress: bool) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // The message quotes the offending argument as given: show a long one in part (an
            // argument can be 128 KiB), and escape what must not reach a terminal raw, line by
            // line.
            let mut text = e.render().to_string();
            for (_, value) in e.context() {
                let values = match value {
                    clap::error::ContextValue::String(v) => std::slice::from_ref(v),
                    clap::error::ContextValue::Strings(v) => v.as_slice(),
                    _ => &[],
                };
                for v in values {
                    if v.chars().nth(crate::render::QUOTE_MAX).is_some() {
                        let shown = crate::render::shortened(v, "'");
                        text = text.replace(&format!("{v}'"), &shown);
                    }
                }
            }
            let text = text
                .split('\n')
                .map(crate::render::escape)
                .collect::<Vec<_>>()
                .join("\n");
            let code = u8::try_from(e.exit_code()).unwrap_or(2);
            if code != 0 {
                let _ = err.write_all(text.as_bytes());
                return code;
            }
            // Help and version are the output asked for: they must reach their reader too.
            return match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => 0,
                Err(write) => {
                    let e = Error::Output(write);
                    let _ = writeln!(err, "error: {}", error_chain(&e));
                    e.exit_code()
                }
            };
        }
    };
    let as_json = match &cli.command {
        Command::Plan { json, .. } | Command::Back { json, .. } | Command::Check { json, .. } => {
            *json
        }
        _ => false,
    };
    // What was written must reach its reader: a failed flush is a failed write.
    let result =
        execute(cli.command, out, err, progress).and_then(|()| out.flush().map_err(Error::Output));
    match result {
        Ok(()) => 0,
        // Standard output cannot take the report: say so where it can be seen.
        Err(e @ Error::Output(_)) => {
            let _ = writeln!(err, "error: {}", error_chain(&e));
            e.exit_code()
        }
        // The report was written as JSON and says what failed; standard error says it too.
        Err(e @ (Error::Back { .. } | Error::HostCannotBack { .. })) if as_json => {
            let _ = writeln!(err, "error: {}", error_chain(&e));
            e.exit_code()
        }
        Err(e) if as_json => {
            let written = out
                .write_all(json(&crate::json::ErrorDoc::from(&e)).as_bytes())
                .and_then(|()| out.flush());
            if let Err(write) = written {
                let _ = writeln!(
                    err,
                    "error: {}\nerror: {}",
                    error_chain(&e),
                    error_chain(&Error::Output(write))
                );
            }
            e.exit_code()
        }
        Err(e) => {
            let _ = match &e {
                Error::Spec(spec) => err.write_all(crate::diagnostic::report(spec).as_bytes()),
                other => writeln!(err, "error: {}", error_chain(other)),
            };
            e.exit_code()
        }
    }
}

/// The `memvisor` program: [`run`] on the process's arguments, standard output and standard
/// error, with a progress bar (drawn on standard error) when standard error is a terminal.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let progress = std::io::stderr().is_terminal();
    let code = run(args, &mut *stdout(), &mut std::io::stderr(), progress);
    ExitCode::from(code)
}

/// Standard output. On Unix, descriptor 1 is written through a duplicate of it, as a file:
/// `std::io::Stdout` takes a write that fails with `EBADF` (standard output open for reading
/// only, or not a descriptor) for success, which would lose the output and exit with 0.
fn stdout() -> Box<dyn Write> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        match std::io::stdout().as_fd().try_clone_to_owned() {
            Ok(fd) => Box::new(std::io::BufWriter::new(std::fs::File::from(fd))),
            Err(e) => Box::new(Unwritable::new(&e)),
        }
    }
    #[cfg(not(unix))]
    {
        Box::new(std::io::stdout())
    }
}

/// An output that cannot be written: every write fails with the error that made it so.
#[cfg(unix)]
struct Unwritable {
    raw: Option<i32>,
    kind: std::io::ErrorKind,
}

#[cfg(unix)]
impl Unwritable {
    fn new(e: &std::io::Error) -> Self {
        Self {
            raw: e.raw_os_error(),
            kind: e.kind(),
        }
    }

    fn error(&self) -> std::io::Error {
        self.raw.map_or_else(
            || std::io::Error::from(self.kind),
            std::io::Error::from_raw_os_error,
        )
    }
}

#[cfg(unix)]
impl Write for Unwritable {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(self.error())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Err(self.error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_arch_puts_the_key_in_the_top_level_table_after_the_notes() {
        let text = "# note: a\n# note: b\n\nname = \"x\"\n\n[memory]\nsize = 4096\n";
        let out = with_arch(text, "aarch64");
        assert_eq!(
            out,
            "# note: a\n# note: b\n\narch = \"aarch64\"\nname = \"x\"\n\n[memory]\nsize = 4096\n"
        );
        // A spec that starts with a table still gets the key in the top-level table.
        let out = with_arch("[memory]\nsize = 4096\n", "x86_64");
        let vm = spec::parse(Source {
            origin: "t",
            text: &out,
        })
        .unwrap();
        assert_eq!(vm.arch, spec::Arch::X86_64);
        let out = with_arch("[memory]\nsize = 4096\n", "aarch64");
        let vm = spec::parse(Source {
            origin: "t",
            text: &out,
        })
        .unwrap();
        assert_eq!(vm.arch, spec::Arch::Aarch64);
    }

    fn run_args(args: &[&str]) -> (u8, String, String) {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = run(args, &mut out, &mut err, false);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn host_hugepage_size_is_an_option_of_the_commands_that_convert() {
        for command in ["plan", "back", "check", "init"] {
            let (code, help, _) = run_args(&["memvisor", command, "--help"]);
            assert_eq!(code, 0);
            assert!(help.contains("--host-hugepage-size"), "{command}: {help}");
        }
        for command in ["probe", "completions"] {
            let (code, help, _) = run_args(&["memvisor", command, "--help"]);
            assert_eq!(code, 0);
            assert!(!help.contains("--host-hugepage-size"), "{command}: {help}");
        }
        let (code, _, err) = run_args(&["memvisor", "probe", "--host-hugepage-size", "2M"]);
        assert_eq!(code, 2, "{err}");
        // Where SPEC.md says it is accepted, it still is.
        let (code, out, err) = run_args(&[
            "memvisor",
            "plan",
            "--host-hugepage-size",
            "1G",
            "--from",
            "cloud-hypervisor",
            "size=2G,hugepages=on",
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("1 GiB"), "{out}");
        let (code, out, err) = run_args(&[
            "memvisor",
            "init",
            "--from",
            "cloud-hypervisor",
            "size=2G,hugepages=on",
            "--host-hugepage-size",
            "2M",
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("huge_pages = \"2MiB\""), "{out}");
    }
}
