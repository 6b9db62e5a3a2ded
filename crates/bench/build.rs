//! Builds the `mimalloc-heap-secure` peer: the mimalloc v2 source that `libmimalloc-sys` builds
//! for the `mimalloc-heap` peer, compiled a second time with `MI_SECURE=4`, every global symbol
//! it defines renamed with the prefix [`PREFIX`] so that both copies live in one binary.
//!
//! `libmimalloc-sys` (package `links = "mimalloc"`) prints its include folder, which reaches this
//! script as `DEP_MIMALLOC_INCLUDE_DIR`; the amalgamated source `src/static.c` sits beside it.
//! The object is compiled with the defines `libmimalloc-sys` uses for the plain copy (no
//! `override` feature, so no `malloc` of its own), plus `MI_SECURE=4`. Then `nm --defined-only
//! -g` lists the global symbols the object defines, `objcopy --redefine-syms` renames exactly
//! those (the object's undefined references, libc's `mmap`, `pthread_*` and the rest, keep their
//! names), and the renamed object is archived as `libmimalloc_secure.a` in `OUT_DIR` and linked
//! statically. `nm` and `objcopy` are those [`tools`] names (the environment's, else on a cross
//! build the C compiler's toolchain's); the archiver is the one `cc` picks.

#[path = "build/tools.rs"]
mod tools;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

use tools::Tool;

/// The prefix of every global symbol of the secure copy (`mi_free` is `mimalloc_secure_mi_free`).
const PREFIX: &str = "mimalloc_secure_";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_MIMALLOC_INCLUDE_DIR");
    let target = env::var("TARGET").expect("TARGET is set for build scripts");
    let host = env::var("HOST").expect("HOST is set for build scripts");
    for tool in [Tool::Nm, Tool::Objcopy] {
        for var in tools::vars(tool, &target, &host) {
            println!("cargo:rerun-if-env-changed={var}");
        }
    }
    let include = PathBuf::from(
        env::var("DEP_MIMALLOC_INCLUDE_DIR")
            .expect("DEP_MIMALLOC_INCLUDE_DIR: libmimalloc-sys prints its include folder"),
    );
    let root = include
        .parent()
        .expect("mimalloc's include folder has a parent");
    let source = root.join("src").join("static.c");
    assert!(
        source.is_file(),
        "mimalloc's source {} is not beside its include folder",
        source.display()
    );
    println!("cargo:rerun-if-changed={}", source.display());
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set for build scripts"));

    let build = secure_build(&include, root, &source);
    let compiler = build.get_compiler();
    let compiler = compiler.path().to_string_lossy();
    let tool = |tool| tools::resolve(tool, &target, &host, &compiler, |var| env::var(var).ok());
    let (nm, objcopy) = (tool(Tool::Nm), tool(Tool::Objcopy));
    let objects = build.compile_intermediates();
    let renames = out.join("mimalloc_secure.syms");
    let mut list = String::new();
    let mut renamed = Vec::new();
    for object in &objects {
        for symbol in defined_globals(&nm, object) {
            writeln!(list, "{symbol} {PREFIX}{symbol}").expect("writing to a String");
        }
    }
    fs::write(&renames, &list).expect("write the symbol renames");
    for (i, object) in objects.iter().enumerate() {
        let renamed_object = out.join(format!("mimalloc_secure_{i}.o"));
        run(Command::new(&objcopy)
            .arg(format!("--redefine-syms={}", renames.display()))
            .arg(object)
            .arg(&renamed_object));
        // Every global the renamed object defines carries the prefix: nothing left to clash
        // with the plain copy (or anything else).
        for symbol in defined_globals(&nm, &renamed_object) {
            assert!(
                symbol.starts_with(PREFIX),
                "`{symbol}` kept its name in the secure mimalloc copy"
            );
        }
        renamed.push(renamed_object);
    }
    let archive = out.join("libmimalloc_secure.a");
    let _ = fs::remove_file(&archive);
    run(build.get_archiver().arg("crs").arg(&archive).args(&renamed));
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static=mimalloc_secure");
}

/// Compiles `static.c` as `libmimalloc-sys` compiles it for a non-MSVC target without its
/// `override`, `secure`, `debug` or `no_thp` features, plus `MI_SECURE=4`.
///
/// Those features are the workspace's choice (it enables `extended` and `v2` only) and are not
/// visible here: enabling `override`, `secure`, `debug`, `debug_in_debug`, `no_thp` or
/// `local_dynamic_tls` on `libmimalloc-sys` would make the two copies differ in more than
/// `MI_SECURE`, and needs the same change here.
fn secure_build(include: &Path, root: &Path, source: &Path) -> cc::Build {
    let mut build = cc::Build::new();
    build
        .include(include)
        .include(root.join("src"))
        .file(source)
        .define("MI_SECURE", "4")
        .define("MI_DEBUG", "0")
        .flag_if_supported("-Wno-error=date-time")
        .flag_if_supported("-ftls-model=initial-exec")
        .cargo_metadata(false);
    // libmimalloc-sys adds these two when the profile has no debug information.
    let debug = env::var("DEBUG").is_ok_and(|value| value == "true" || value == "1");
    if !debug {
        build
            .define("MI_BUILD_RELEASE", None)
            .define("NDEBUG", None);
    }
    build
}

/// The global symbols `object` defines, as `nm` lists them.
fn defined_globals(nm: &str, object: &Path) -> Vec<String> {
    let output = run(Command::new(nm)
        .args(["--defined-only", "-g", "-P"])
        .arg(object));
    output
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Runs `command` and returns its standard output; any failure stops the build with its reason.
fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {command:?} (is it installed? `NM`, `OBJCOPY` and `AR` name others): {e}"
        )
    });
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("tool output is UTF-8")
}
