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
//! statically. The tools are binutils' (`NM`, `OBJCOPY` and `AR` name others).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

/// The prefix of every global symbol of the secure copy (`mi_free` is `mimalloc_secure_mi_free`).
const PREFIX: &str = "mimalloc_secure_";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for var in ["DEP_MIMALLOC_INCLUDE_DIR", "NM", "OBJCOPY", "AR"] {
        println!("cargo:rerun-if-env-changed={var}");
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

    let objects = compile(&include, root, &source);
    let renames = out.join("mimalloc_secure.syms");
    let mut list = String::new();
    let mut renamed = Vec::new();
    for object in &objects {
        for symbol in defined_globals(object) {
            writeln!(list, "{symbol} {PREFIX}{symbol}").expect("writing to a String");
        }
    }
    fs::write(&renames, &list).expect("write the symbol renames");
    for (i, object) in objects.iter().enumerate() {
        let target = out.join(format!("mimalloc_secure_{i}.o"));
        run(Command::new(tool("OBJCOPY", "objcopy"))
            .arg(format!("--redefine-syms={}", renames.display()))
            .arg(object)
            .arg(&target));
        // Every global the renamed object defines carries the prefix: nothing left to clash
        // with the plain copy (or anything else).
        for symbol in defined_globals(&target) {
            assert!(
                symbol.starts_with(PREFIX),
                "`{symbol}` kept its name in the secure mimalloc copy"
            );
        }
        renamed.push(target);
    }
    let archive = out.join("libmimalloc_secure.a");
    let _ = fs::remove_file(&archive);
    run(Command::new(tool("AR", "ar"))
        .arg("crs")
        .arg(&archive)
        .args(&renamed));
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static=mimalloc_secure");
}

/// Compiles `static.c` as `libmimalloc-sys` compiles it for a non-MSVC target without its
/// `override`, `secure`, `debug` or `no_thp` features, plus `MI_SECURE=4`; returns the objects.
fn compile(include: &Path, root: &Path, source: &Path) -> Vec<PathBuf> {
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
    build.compile_intermediates()
}

/// The global symbols `object` defines.
fn defined_globals(object: &Path) -> Vec<String> {
    let output = run(Command::new(tool("NM", "nm"))
        .args(["--defined-only", "-g", "-P"])
        .arg(object));
    output
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The tool named by the environment variable `var`, else `default`.
fn tool(var: &str, default: &str) -> String {
    env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// Runs `command` and returns its standard output; any failure stops the build with its reason.
fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?} (binutils installed?): {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("tool output is UTF-8")
}
