//! Builds the C test suite (`tests/c/*.c`) and the README's example with the system `cc`
//! against the static and the shared library, and runs each build plainly, under valgrind and
//! with AddressSanitizer and UndefinedBehaviorSanitizer.
//!
//! `cargo test -p memvisor-capi` builds the `cdylib` and `staticlib` into the directory of the
//! test binary (`target/<profile>/deps`); if they are missing they are built with `cargo build`.

#![cfg(not(miri))]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The libraries Rust's standard library needs when linked statically on Linux.
const NATIVE_LIBS: &[&str] = &[
    "-lpthread",
    "-ldl",
    "-lm",
    "-lrt",
    "-lutil",
    "-lgcc_s",
    "-lc",
];

/// The C sources of the suite.
const SUITE: &[&str] = &["api", "threads", "contracts"];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the libraries built with this test are. Cargo builds the `cdylib` and `staticlib`
/// into `target/<profile>/deps` for `cargo test` (next to this test's binary) but copies them
/// up to `target/<profile>` only for `cargo build`; if they are missing, `cargo build` makes
/// them.
fn lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let has_libs =
            |dir: &Path| dir.join("libmemvisor.a").exists() && dir.join("libmemvisor.so").exists();
        let exe = std::env::current_exe().expect("test binary path");
        let deps = exe.parent().expect("target/<profile>/deps").to_path_buf();
        if has_libs(&deps) {
            return deps;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "-p", "memvisor-capi"])
            .current_dir(crate_dir())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p memvisor-capi failed");
        let profile = deps.parent().expect("target/<profile>").to_path_buf();
        assert!(
            has_libs(&profile),
            "no libmemvisor.a/.so in {}",
            profile.display()
        );
        profile
    })
}

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi-c-suite");
    std::fs::create_dir_all(&dir).expect("create the output directory");
    dir
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Static,
    Shared,
}

/// Compiles `source` into an executable named `name`, linked as `link`, with `extra` flags.
fn compile(source: &Path, name: &str, link: Link, extra: &[&str]) -> PathBuf {
    let exe = out_dir().join(name);
    let lib = lib_dir();
    let mut cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".to_owned()));
    cc.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-pthread"])
        .args(extra)
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg("-I")
        .arg(crate_dir().join("tests/c"))
        .arg(source)
        .arg("-o")
        .arg(&exe);
    match link {
        Link::Static => {
            cc.arg(lib.join("libmemvisor.a")).args(NATIVE_LIBS);
        }
        Link::Shared => {
            cc.arg("-L")
                .arg(lib)
                .arg("-lmemvisor")
                .arg("-Wl,--disable-new-dtags")
                .arg(format!("-Wl,-rpath,{}", lib.display()));
        }
    }
    let output = cc.output().expect("run cc");
    assert!(
        output.status.success(),
        "cc failed for {}:\n{}",
        source.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    exe
}

/// Runs `program` (with `args` before it, e.g. valgrind) and asserts a clean exit.
fn run(wrapper: &[&str], exe: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    // Cargo's library path for tests may name a stale copy of the shared library; the
    // executables find the right one through their rpath.
    cmd.env_remove("LD_LIBRARY_PATH").envs(env.iter().copied());
    let output = cmd.output().expect("run the C program");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{} {} failed ({}):\n{}\n{}",
        wrapper.join(" "),
        exe.display(),
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn suite_source(name: &str) -> PathBuf {
    crate_dir().join("tests/c").join(format!("{name}.c"))
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

const VALGRIND: &[&str] = &[
    "valgrind",
    "--quiet",
    "--error-exitcode=1",
    "--leak-check=full",
    "--errors-for-leak-kinds=definite,possible",
];

const SANITIZE: &[&str] = &[
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
];

const SANITIZER_ENV: &[(&str, &str)] = &[
    ("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0"),
    ("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1"),
];

fn each_link(f: impl Fn(Link, &str)) {
    f(Link::Static, "static");
    f(Link::Shared, "shared");
}

#[test]
fn c_suite_static_and_shared_pass() {
    each_link(|link, tag| {
        for name in SUITE {
            let exe = compile(&suite_source(name), &format!("{name}-{tag}"), link, &[]);
            let out = run(&[], &exe, &[]);
            assert!(out.contains("all checks passed"), "{name}-{tag}: {out}");
        }
    });
}

#[test]
fn c_suite_under_valgrind_no_errors_no_leaks() {
    if !have("valgrind") {
        eprintln!(
            "\n!!!!!! SKIPPED: valgrind is not installed; the C suite did NOT run under it !!!!!!\n"
        );
        return;
    }
    each_link(|link, tag| {
        for name in SUITE {
            let exe = compile(&suite_source(name), &format!("{name}-{tag}-vg"), link, &[]);
            let out = run(VALGRIND, &exe, &[]);
            assert!(out.contains("all checks passed"), "{name}-{tag}: {out}");
        }
    });
}

#[test]
fn c_suite_under_address_and_undefined_sanitizers_clean() {
    each_link(|link, tag| {
        for name in SUITE {
            let exe = compile(
                &suite_source(name),
                &format!("{name}-{tag}-san"),
                link,
                SANITIZE,
            );
            let out = run(&[], &exe, SANITIZER_ENV);
            assert!(out.contains("all checks passed"), "{name}-{tag}: {out}");
        }
    });
}

/// The first C code block of the README, written to `name` (one file per test: tests may run
/// at once).
fn readme_example(name: &str) -> PathBuf {
    let readme = std::fs::read_to_string(crate_dir().join("README.md")).expect("README.md");
    let start = readme.find("```c\n").expect("a ```c block in README.md") + 5;
    let len = readme[start..].find("```").expect("the block's end");
    let path = out_dir().join(name);
    std::fs::write(&path, &readme[start..start + len]).expect("write the example");
    path
}

#[test]
fn readme_example_runs_clean_everywhere() {
    let source = readme_example("readme_example.c");
    each_link(|link, tag| {
        let exe = compile(&source, &format!("readme-{tag}"), link, &[]);
        let out = run(&[], &exe, &[]);
        assert!(out.contains("all memory back"), "{out}");
        if have("valgrind") {
            run(VALGRIND, &exe, &[]);
        } else {
            eprintln!("\n!!!!!! SKIPPED: valgrind is not installed !!!!!!\n");
        }
        let exe = compile(&source, &format!("readme-{tag}-san"), link, SANITIZE);
        run(&[], &exe, SANITIZER_ENV);
    });
}

#[test]
fn header_compiles_as_cpp() {
    if !have("c++") {
        eprintln!("\n!!!!!! SKIPPED: no c++ compiler; the header was not checked as C++ !!!!!!\n");
        return;
    }
    let src = out_dir().join("header.cpp");
    std::fs::write(&src, "#include \"memvisor.h\"\nint main() { memvisor_client c = {0}; return memvisor_client_delete(c) == MEMVISOR_STATUS_INVALID_HANDLE ? 0 : 1; }\n").expect("write");
    let exe = out_dir().join("header-cpp");
    let output = Command::new("c++")
        .args(["-Wall", "-Wextra", "-Werror", "-I"])
        .arg(crate_dir().join("include"))
        .arg(&src)
        .arg(lib_dir().join("libmemvisor.a"))
        .args(NATIVE_LIBS)
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run c++");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    run(&[], &exe, &[]);
}

/// Compiles the header alone with `compiler` and `flags`, as the oldest language standard it
/// supports with every warning an error.
fn header_alone_compiles(compiler: &str, file: &str, flags: &[&str]) {
    let src = out_dir().join(file);
    std::fs::write(&src, "#include <memvisor.h>\n").expect("write");
    let output = Command::new(compiler)
        .args(flags)
        .args([
            "-Wall",
            "-Wextra",
            "-Wundef",
            "-pedantic",
            "-Werror",
            "-fsyntax-only",
            "-I",
        ])
        .arg(crate_dir().join("include"))
        .arg(&src)
        .output()
        .expect("run the compiler");
    assert!(
        output.status.success(),
        "{compiler} {flags:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn header_alone_compiles_as_c99_and_cpp11_pedantic() {
    header_alone_compiles("cc", "alone.c", &["-std=c99"]);
    header_alone_compiles("cc", "alone-c11.c", &["-std=c11", "-Wstrict-prototypes"]);
    if have("c++") {
        header_alone_compiles("c++", "alone.cpp", &["-std=c++11"]);
    } else {
        eprintln!("\n!!!!!! SKIPPED: no c++ compiler; the header was not checked as C++ !!!!!!\n");
    }
}

/// Runs `make` in the crate's directory with `args`, with cargo replaced by `true` and the
/// libraries taken from `target` (as `cargo build --release` would leave them there).
fn make(target: &Path, args: &[&str]) {
    let output = Command::new("make")
        .arg("--no-print-directory")
        .arg("-C")
        .arg(crate_dir())
        .args(args)
        .arg("CARGO=true")
        .arg(format!("TARGET_DIR={}", target.display()))
        .output()
        .expect("run make");
    assert!(
        output.status.success(),
        "make {args:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// What `make install` puts under a prefix.
const INSTALLED: &[&str] = &[
    "lib/libmemvisor.a",
    "lib/libmemvisor.so",
    "include/memvisor.h",
    "lib/pkgconfig/memvisor.pc",
];

#[test]
fn make_install_then_the_readme_commands_build_the_example() {
    if !have("make") {
        eprintln!("\n!!!!!! SKIPPED: make is not installed; the Makefile was NOT checked !!!!!!\n");
        return;
    }
    let root = out_dir().join("install");
    let _ = std::fs::remove_dir_all(&root);
    let release = root.join("target/release");
    std::fs::create_dir_all(&release).expect("create the target directory");
    for lib in ["libmemvisor.a", "libmemvisor.so"] {
        std::fs::copy(lib_dir().join(lib), release.join(lib)).expect("copy a library");
    }
    let target = root.join("target");
    let prefix = root.join("prefix");
    make(
        &target,
        &["install", &format!("PREFIX={}", prefix.display())],
    );
    for file in INSTALLED {
        assert!(prefix.join(file).is_file(), "make install left out {file}");
    }
    let example = readme_example("readme_installed.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let libdir = prefix.join("lib");

    // Shared, with the flags pkg-config gives for the installed `memvisor.pc`.
    if have("pkg-config") {
        let flags = Command::new("pkg-config")
            .args(["--cflags", "--libs", "memvisor"])
            .env("PKG_CONFIG_PATH", libdir.join("pkgconfig"))
            .output()
            .expect("run pkg-config");
        assert!(
            flags.status.success(),
            "{}",
            String::from_utf8_lossy(&flags.stderr)
        );
        let flags = String::from_utf8_lossy(&flags.stdout).into_owned();
        assert!(
            flags.contains(&format!("-I{}", prefix.join("include").display())),
            "{flags}"
        );
        let exe = root.join("vm-shared");
        let output = Command::new(&cc)
            .arg(&example)
            .args(flags.split_whitespace())
            .arg("-o")
            .arg(&exe)
            .output()
            .expect("run cc");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let libdir = libdir.to_str().expect("a UTF-8 path");
        let out = run(&[], &exe, &[("LD_LIBRARY_PATH", libdir)]);
        assert!(out.contains("all memory back"), "{out}");
    } else {
        eprintln!("\n!!!!!! SKIPPED: pkg-config is not installed !!!!!!\n");
    }

    // Static, with exactly the README's flags.
    let exe = root.join("vm-static");
    let output = Command::new(&cc)
        .arg(&example)
        .arg(format!("-I{}", prefix.join("include").display()))
        .arg(libdir.join("libmemvisor.a"))
        .args(["-lpthread", "-ldl", "-lm", "-lrt", "-lutil", "-lgcc_s"])
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run cc");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out = run(&[], &exe, &[]);
    assert!(out.contains("all memory back"), "{out}");

    make(
        &target,
        &["uninstall", &format!("PREFIX={}", prefix.display())],
    );
    for file in INSTALLED {
        assert!(!prefix.join(file).exists(), "make uninstall left {file}");
    }

    // A staged install puts the files under DESTDIR and names the final prefix.
    let stage = root.join("stage");
    make(
        &target,
        &[
            "install",
            "PREFIX=/opt/mv",
            &format!("DESTDIR={}", stage.display()),
        ],
    );
    for file in INSTALLED {
        assert!(
            stage.join("opt/mv").join(file).is_file(),
            "staged install left out {file}"
        );
    }
    let pc = std::fs::read_to_string(stage.join("opt/mv/lib/pkgconfig/memvisor.pc")).expect("pc");
    assert!(
        pc.contains("prefix=/opt/mv\n") && pc.contains("libdir=/opt/mv/lib\n"),
        "{pc}"
    );
}

#[test]
fn pkg_config_file_names_library_and_version() {
    let pc = std::fs::read_to_string(crate_dir().join("memvisor.pc")).expect("memvisor.pc");
    assert!(pc.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))));
    assert!(pc.contains("-lmemvisor"));
    if have("pkg-config") {
        let output = Command::new("pkg-config")
            .args(["--cflags", "--libs", "memvisor"])
            .env("PKG_CONFIG_PATH", crate_dir())
            .output()
            .expect("run pkg-config");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let flags = String::from_utf8_lossy(&output.stdout);
        assert!(
            flags.contains("-lmemvisor") && flags.contains("-I"),
            "{flags}"
        );
    }
}

#[test]
fn header_matches_cbindgen_output() {
    if !have("cbindgen") {
        eprintln!(
            "\n!!!!!! SKIPPED: cbindgen not installed (cargo install cbindgen --locked); \
             include/memvisor.h was NOT checked !!!!!!\n"
        );
        return;
    }
    let output = Command::new(crate_dir().join("check-header"))
        .output()
        .expect("run check-header");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
