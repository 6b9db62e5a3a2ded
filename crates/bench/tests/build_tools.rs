//! The build script's choice of `nm` and `objcopy` for the secure mimalloc object
//! (`build/tools.rs`): the environment's names first, as `cc` reads `AR`, else those of the C
//! compiler's toolchain on a cross build, else the host's.

#[path = "../build/tools.rs"]
mod tools;

use tools::{Tool, resolve};

const HOST: &str = "x86_64-unknown-linux-gnu";
const AARCH64: &str = "aarch64-unknown-linux-gnu";

/// `resolve` with only the variables in `set` defined.
fn with(tool: Tool, target: &str, compiler: &str, set: &[(&str, &str)]) -> String {
    resolve(tool, target, HOST, compiler, |name| {
        set.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    })
}

#[test]
fn a_host_build_runs_the_host_tools_or_those_the_environment_names() {
    assert_eq!(with(Tool::Nm, HOST, "cc", &[]), "nm");
    assert_eq!(with(Tool::Objcopy, HOST, "/usr/bin/gcc", &[]), "objcopy");
    assert_eq!(with(Tool::Nm, HOST, "cc", &[("NM", "/opt/nm")]), "/opt/nm");
    assert_eq!(
        with(
            Tool::Objcopy,
            HOST,
            "cc",
            &[("HOST_OBJCOPY", "h"), ("OBJCOPY", "o")]
        ),
        "h"
    );
    // An empty variable names nothing.
    assert_eq!(with(Tool::Nm, HOST, "cc", &[("NM", "")]), "nm");
}

#[test]
fn a_cross_build_runs_the_compiler_toolchains_tools() {
    let gcc = "/usr/bin/aarch64-linux-gnu-gcc";
    assert_eq!(with(Tool::Nm, AARCH64, gcc, &[]), "aarch64-linux-gnu-nm");
    assert_eq!(
        with(Tool::Objcopy, AARCH64, gcc, &[]),
        "aarch64-linux-gnu-objcopy"
    );
    assert_eq!(
        with(Tool::Nm, AARCH64, "aarch64-linux-gnu-gcc-12", &[]),
        "aarch64-linux-gnu-nm"
    );
    assert_eq!(with(Tool::Nm, AARCH64, "clang", &[]), "llvm-nm");
    assert_eq!(
        with(Tool::Objcopy, AARCH64, "/usr/bin/clang-16", &[]),
        "llvm-objcopy"
    );
    // A compiler of no known toolchain: the bare name.
    assert_eq!(with(Tool::Nm, AARCH64, "cc", &[]), "nm");
}

#[test]
fn the_most_specific_variable_wins_as_for_ccs_archiver() {
    let gcc = "aarch64-linux-gnu-gcc";
    let all = [
        ("NM_aarch64-unknown-linux-gnu", "a"),
        ("NM_aarch64_unknown_linux_gnu", "b"),
        ("TARGET_NM", "c"),
        ("NM", "d"),
    ];
    for first in 0..all.len() {
        assert_eq!(with(Tool::Nm, AARCH64, gcc, &all[first..]), all[first].1);
    }
    // HOST_NM is the host's: not used on a cross build.
    assert_eq!(
        with(Tool::Nm, AARCH64, gcc, &[("HOST_NM", "h")]),
        "aarch64-linux-gnu-nm"
    );
}
