//! Which `nm` and `objcopy` the build script runs on the secure mimalloc object: those the
//! environment names, read as `cc` reads `AR`, else on a cross build those of the C compiler's
//! toolchain, so that a cross object is not handed to the host's binutils, which may not read
//! it (Debian's x86-64 binutils reads x86 ELF and PE objects only). The archiver is `cc`'s own.

/// A binutils tool to resolve: its environment variable stem and its program name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `nm`, named by `NM`.
    Nm,
    /// `objcopy`, named by `OBJCOPY`.
    Objcopy,
}

impl Tool {
    /// The environment variable stem (`NM`, `OBJCOPY`, `AR`).
    pub fn var(self) -> &'static str {
        match self {
            Self::Nm => "NM",
            Self::Objcopy => "OBJCOPY",
        }
    }

    /// The program's name without a prefix (`nm`, `objcopy`, `ar`).
    pub fn program(self) -> &'static str {
        match self {
            Self::Nm => "nm",
            Self::Objcopy => "objcopy",
        }
    }
}

/// The environment variables that name `tool` for `target`, first the one that wins: as `cc`
/// reads `AR` (`AR_<target>`, `AR_<target with underscores>`, `TARGET_AR` or `HOST_AR` as the
/// build is cross or not, `AR`).
pub fn vars(tool: Tool, target: &str, host: &str) -> [String; 4] {
    let stem = tool.var();
    let kind = if target == host { "HOST" } else { "TARGET" };
    [
        format!("{stem}_{target}"),
        format!("{stem}_{}", target.replace('-', "_")),
        format!("{kind}_{stem}"),
        stem.to_owned(),
    ]
}

/// The program to run as `tool`: the first of [`vars`] set (and not empty); else, on a cross
/// build, the tool of the C compiler's toolchain: for a compiler named `<prefix>-gcc` or
/// `<prefix>-cc` (`aarch64-linux-gnu-gcc`, a version after it or not), `<prefix>-<tool>`; for
/// clang, LLVM's (`llvm-nm`, `llvm-objcopy`), which read every target's objects; else (and on a
/// host build) the bare name.
pub fn resolve(
    tool: Tool,
    target: &str,
    host: &str,
    compiler: &str,
    var: impl Fn(&str) -> Option<String>,
) -> String {
    if let Some(named) = vars(tool, target, host)
        .iter()
        .find_map(|name| var(name).filter(|value| !value.trim().is_empty()))
    {
        return named;
    }
    if target == host {
        return tool.program().to_owned();
    }
    let file = compiler.rsplit('/').next().unwrap_or(compiler);
    // A versioned name (`gcc-12`, `clang-16`) is the same toolchain.
    let base = file.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    let base = base.strip_suffix('-').unwrap_or(base);
    if base == "clang" || base.ends_with("-clang") {
        return format!("llvm-{}", tool.program());
    }
    for driver in ["gcc", "cc"] {
        if let Some(prefix) = base.strip_suffix(driver)
            && prefix.ends_with('-')
        {
            return format!("{prefix}{}", tool.program());
        }
    }
    tool.program().to_owned()
}
