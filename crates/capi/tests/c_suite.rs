//! Builds the C test suite (`tests/c/*.c`) and the README's example with `$CC` (default the
//! system `cc`; `CC="gcc -m32"` for the libraries built for `i686-unknown-linux-gnu`)
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
const SUITE: &[&str] = &[
    "api",
    "threads",
    "contracts",
    "sizes",
    "fork",
    "small_stack",
    "vmma_port",
];

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

/// A directory where the loader finds the shared library by its `SONAME` (as it would after
/// `make install`): a link named by the `SONAME` to the library cargo built.
fn runtime_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = out_dir().join("runtime");
        std::fs::create_dir_all(&dir).expect("create the runtime directory");
        // Made under a name of this process's, then renamed: tests in other processes may
        // make it at the same time.
        let tmp = dir.join(format!(".{}.{}", soname(), std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(lib_dir().join("libmemvisor.so"), &tmp).expect("link");
        std::fs::rename(&tmp, dir.join(soname())).expect("rename the link");
        dir
    })
}

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi-c-suite");
    std::fs::create_dir_all(&dir).expect("create the output directory");
    dir
}

/// The C compiler: `$CC` (a program and its first flags, such as `gcc -m32` for the
/// libraries built for `i686-unknown-linux-gnu`), or `cc`.
fn c_compiler() -> Command {
    let cc = std::env::var("CC").unwrap_or_default();
    let mut words = cc.split_whitespace();
    let mut command = Command::new(words.next().unwrap_or("cc"));
    command.args(words);
    command
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
    let mut cc = c_compiler();
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
                .arg(format!("-Wl,-rpath,{}", runtime_dir().display()));
        }
    }
    stdout_of(&mut cc, &format!("cc for {}", source.display()));
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

/// Runs `command` (`what` names it in messages), checks that it succeeded, and returns its
/// standard output; a failure shows its status and both of its outputs.
fn stdout_of(command: &mut Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
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

/// `tests/c/small_stack.c` runs its client on the smallest stack against the library's
/// release build; the debug build's frames need several times more.
const STACK_ENV: &[(&str, &str)] = if cfg!(debug_assertions) {
    &[]
} else {
    &[("MEMVISOR_TEST_STACK", "min")]
};

#[test]
fn c_suite_static_and_shared_pass() {
    each_link(|link, tag| {
        for name in SUITE {
            let exe = compile(&suite_source(name), &format!("{name}-{tag}"), link, &[]);
            let out = run(&[], &exe, STACK_ENV);
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

/// The allocation functions whose calls from the static library `tests/c/heap_refused.c`
/// takes first (`-Wl,--wrap=`), to refuse them.
const WRAPPED_ALLOCATOR: &str = "-Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,\
--wrap=posix_memalign,--wrap=aligned_alloc,--wrap=memalign";

#[test]
fn c_heap_refused_every_call_documented_status_nothing_half_done() {
    // The static library only: a shared one's calls of malloc are not the program's to wrap.
    let source = suite_source("heap_refused");
    let exe = compile(
        &source,
        "heap_refused-static",
        Link::Static,
        &[WRAPPED_ALLOCATOR],
    );
    let out = run(&[], &exe, &[]);
    assert!(out.contains("all checks passed"), "{out}");
    let exe = compile(
        &source,
        "heap_refused-static-san",
        Link::Static,
        &[SANITIZE, &[WRAPPED_ALLOCATOR]].concat(),
    );
    let out = run(&[], &exe, SANITIZER_ENV);
    assert!(out.contains("all checks passed"), "{out}");
}

/// `tests/c/heap_refused.c` under valgrind: no memory error, no leak, on every refusal.
#[test]
fn c_heap_refused_under_valgrind_no_errors_no_leaks() {
    let source = suite_source("heap_refused");
    if have("valgrind") {
        let exe = compile(
            &source,
            "heap_refused-static-vg",
            Link::Static,
            &[WRAPPED_ALLOCATOR],
        );
        let out = run(VALGRIND, &exe, &[]);
        assert!(out.contains("all checks passed"), "{out}");
    } else {
        eprintln!(
            "\n!!!!!! SKIPPED: valgrind is not installed; heap_refused.c did NOT run under it \
             !!!!!!\n"
        );
    }
}

/// Whether the static library was built with ThreadSanitizer (`-Zsanitizer=thread`, as the
/// `sanitize` step of `.ci/run` builds it): its code then calls the sanitizer's hooks.
fn library_under_thread_sanitizer() -> bool {
    let lib = std::fs::read(lib_dir().join("libmemvisor.a")).expect("read libmemvisor.a");
    lib.windows(b"__tsan_func_entry".len())
        .any(|w| w == b"__tsan_func_entry")
}

/// The ThreadSanitizer runtime of the Rust toolchain that built this test: the library's
/// instrumentation calls entry points (`__tsan_memcpy`, …) the C compiler's own runtime may
/// lack, and one process holds one runtime.
fn rust_tsan_runtime() -> PathBuf {
    let rustc = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .map(|cargo| cargo.with_file_name("rustc"))
        .filter(|rustc| rustc.exists())
        .unwrap_or_else(|| PathBuf::from("rustc"));
    let libdir = stdout_of(
        Command::new(rustc).args(["--print", "target-libdir"]),
        "rustc --print target-libdir",
    );
    let libdir = PathBuf::from(libdir.trim());
    std::fs::read_dir(&libdir)
        .expect("read the toolchain's library directory")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("librustc-") && name.ends_with("_rt.tsan.a"))
        })
        .unwrap_or_else(|| panic!("no ThreadSanitizer runtime in {}", libdir.display()))
}

/// The C programs whose threads share contexts and move clients between them.
const THREADED: &[&str] = &["threads"];

#[test]
fn c_threads_suite_under_thread_sanitizer_clean() {
    // The library's own synchronisation (atomics, its locks) is seen by ThreadSanitizer only
    // if the library is instrumented too; over a plain build it would report the blocks a
    // client hands between threads as races. Build it so with
    // `RUSTFLAGS=-Zsanitizer=thread cargo +nightly test -Zbuild-std --target <host> -p
    // memvisor-capi --test c_suite thread_sanitizer`.
    if !library_under_thread_sanitizer() {
        // Where the run is meant to be the sanitized one (the CI gate sets this), a library
        // built without the sanitizer is a failure, not a skip.
        assert!(
            std::env::var_os("MEMVISOR_REQUIRE_THREAD_SANITIZER").is_none(),
            "MEMVISOR_REQUIRE_THREAD_SANITIZER is set but the library is not built with \
             -Zsanitizer=thread"
        );
        eprintln!(
            "\n!!!!!! SKIPPED: the library is not built with -Zsanitizer=thread; the C \
             threads suite did NOT run under ThreadSanitizer !!!!!!\n"
        );
        return;
    }
    let runtime = rust_tsan_runtime();
    for name in THREADED {
        // Compiled with the C compiler's instrumentation, linked statically with the Rust
        // runtime (and without the C compiler's).
        let object = out_dir().join(format!("{name}-tsan.o"));
        let mut cc = c_compiler();
        cc.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-pthread"])
            .args(["-fsanitize=thread", "-fno-omit-frame-pointer", "-c"])
            .arg("-I")
            .arg(crate_dir().join("include"))
            .arg("-I")
            .arg(crate_dir().join("tests/c"))
            .arg(suite_source(name))
            .arg("-o")
            .arg(&object);
        stdout_of(&mut cc, &format!("cc -fsanitize=thread for {name}.c"));
        let exe = out_dir().join(format!("{name}-static-tsan"));
        let mut link = c_compiler();
        link.arg("-pthread")
            .arg(&object)
            .arg(lib_dir().join("libmemvisor.a"))
            .arg("-Wl,--whole-archive")
            .arg(&runtime)
            .arg("-Wl,--no-whole-archive")
            .args(NATIVE_LIBS)
            .arg("-lstdc++")
            .arg("-o")
            .arg(&exe);
        stdout_of(
            &mut link,
            &format!("linking {name} with the ThreadSanitizer runtime"),
        );
        let out = run(&[], &exe, &[("TSAN_OPTIONS", "halt_on_error=1")]);
        assert!(out.contains("all checks passed"), "{name}: {out}");
    }
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

/// The README says the header needs C99 or later: its example, as a C program would copy it,
/// builds with each C standard from C99 under `-Wpedantic -Werror` and runs.
#[test]
fn readme_example_builds_as_c99_and_c11_pedantic() {
    let source = readme_example("readme_example_std.c");
    for std in ["c99", "c11"] {
        let flag = format!("-std={std}");
        let exe = compile(
            &source,
            &format!("readme-{std}"),
            Link::Static,
            &[&flag, "-Wpedantic"],
        );
        let out = run(&[], &exe, &[]);
        assert!(out.contains("all memory back"), "{std}: {out}");
    }
}

/// A translation unit that includes the header twice and uses every type, macro and
/// function of it, as C (any standard from C99) and as C++ (from C++11).
const HEADER_USER: &str = "#include \"memvisor.h\"\n\
#include \"memvisor.h\"\n\
int use_header(void);\n\
int use_header(void) {\n\
    memvisor_config config;\n\
    memvisor_context ctx = {0};\n\
    memvisor_client client = {0};\n\
    memvisor_context_stats cs;\n\
    memvisor_client_stats ks;\n\
    void *p = NULL;\n\
    size_t size = MEMVISOR_UNLIMITED;\n\
    bool owns = false;\n\
    uint32_t flags = MEMVISOR_FLAG_ZERO | MEMVISOR_FLAG_DECOMMIT | MEMVISOR_FLAG_GUARD |\n\
        MEMVISOR_FLAG_POISON | MEMVISOR_FLAG_STATISTICS;\n\
    memvisor_status st = memvisor_config_init(&config);\n\
    cs.size = sizeof cs;\n\
    ks.size = sizeof ks;\n\
    if (st != MEMVISOR_STATUS_OK || memvisor_supported_flags() != flags) return 1;\n\
    if (memvisor_status_message(MEMVISOR_STATUS_BLOCK_IN_USE)[0] == 0) return 2;\n\
    if (memvisor_version()[0] == 0 || MEMVISOR_POISON_BYTE != 165) return 3;\n\
    st = memvisor_context_create(p, size, &config, &ctx);\n\
    st = memvisor_context_create_reserved(size, &config, &ctx);\n\
    st = memvisor_context_accepted_flags(ctx, &flags);\n\
    st = memvisor_context_get_stats(ctx, &cs);\n\
    st = memvisor_context_owner(ctx, p, &client);\n\
    st = memvisor_context_trim(ctx);\n\
    st = memvisor_client_create(ctx, size, &client);\n\
    st = memvisor_alloc(client, size, &p);\n\
    st = memvisor_alloc_aligned(client, size, MEMVISOR_MIN_ALIGN, &p);\n\
    st = memvisor_size_of(client, p, &size);\n\
    st = memvisor_client_owns(client, p, &owns);\n\
    st = memvisor_client_get_stats(client, &ks);\n\
    st = memvisor_client_trim(client);\n\
    st = memvisor_client_free(client, p, &size);\n\
    st = memvisor_free(ctx, p, &size);\n\
    st = memvisor_client_delete(client);\n\
    st = memvisor_config_init_sized(&config, sizeof config);\n\
    st = (memvisor_config_init)(&config);\n\
    if (memvisor_config_init(NULL) != MEMVISOR_STATUS_NULL_POINTER) return 4;\n\
    return memvisor_context_delete(ctx) == st;\n\
}\n";

/// Warnings a demanding C or C++ project builds with, all errors.
const STRICT: &[&str] = &[
    "-Wall",
    "-Wextra",
    "-Wpedantic",
    "-Werror",
    "-Wundef",
    "-Wshadow",
    "-Wconversion",
    "-Wsign-conversion",
    "-Wcast-qual",
    "-Wredundant-decls",
];

/// Compiles `source` (C or C++ as `compiler` and `flags` say) to an object, or fails with the
/// compiler's messages.
fn compile_object(mut compiler: Command, flags: &[&str], source: &Path, what: &str) {
    let object = source.with_extension("o");
    compiler
        .args(flags)
        .args(STRICT)
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(&object);
    stdout_of(&mut compiler, what);
}

#[test]
fn header_compiles_in_every_c_standard_with_strict_warnings() {
    let src = out_dir().join("header-strict.c");
    std::fs::write(&src, HEADER_USER).expect("write");
    for std in ["c99", "gnu99", "c11", "gnu11", "c17"] {
        compile_object(
            c_compiler(),
            &[
                &format!("-std={std}"),
                "-Wstrict-prototypes",
                "-Wmissing-prototypes",
            ],
            &src,
            &format!("cc -std={std} over the header"),
        );
    }
}

#[test]
fn header_compiles_as_cpp_in_every_standard_with_strict_warnings() {
    if !have("c++") {
        eprintln!("\n!!!!!! SKIPPED: no c++ compiler; the header was not checked as C++ !!!!!!\n");
        return;
    }
    let src = out_dir().join("header-strict.cpp");
    std::fs::write(&src, HEADER_USER).expect("write");
    for std in ["c++11", "c++14", "c++17", "c++20"] {
        compile_object(
            Command::new("c++"),
            &[
                &format!("-std={std}"),
                "-Wold-style-cast",
                "-Wzero-as-null-pointer-constant",
                "-Wuseless-cast",
            ],
            &src,
            &format!("c++ -std={std} over the header"),
        );
    }
}

#[test]
fn header_compiles_as_cpp() {
    if !have("c++") {
        eprintln!("\n!!!!!! SKIPPED: no c++ compiler; the header was not checked as C++ !!!!!!\n");
        return;
    }
    let src = out_dir().join("header.cpp");
    std::fs::write(
        &src,
        "#include \"memvisor.h\"\n\
         int main() {\n\
         memvisor_client c = {0};\n\
         if (memvisor_client_delete(c) != MEMVISOR_STATUS_INVALID_HANDLE) return 1;\n\
         memvisor_config config;\n\
         if (memvisor_config_init(&config) != MEMVISOR_STATUS_OK) return 2;\n\
         if (config.size != sizeof config) return 3;\n\
         if (memvisor_config_init_sized(nullptr, sizeof config) != MEMVISOR_STATUS_NULL_POINTER) \
         return 4;\n\
         if (memvisor_config_init(NULL) != MEMVISOR_STATUS_NULL_POINTER) return 5;\n\
         if (memvisor_config_init(nullptr) != MEMVISOR_STATUS_NULL_POINTER) return 6;\n\
         if (memvisor_config_init(0) != MEMVISOR_STATUS_NULL_POINTER) return 7;\n\
         return 0;\n\
         }\n",
    )
    .expect("write");
    let exe = out_dir().join("header-cpp");
    stdout_of(
        Command::new("c++")
            .args([
                "-std=c++11",
                "-Wall",
                "-Wextra",
                "-pedantic",
                "-Werror",
                "-I",
            ])
            .arg(crate_dir().join("include"))
            .arg(&src)
            .arg(lib_dir().join("libmemvisor.a"))
            .args(NATIVE_LIBS)
            .arg("-o")
            .arg(&exe),
        "c++",
    );
    run(&[], &exe, &[]);
}

/// `memvisor_config_init` called as C calls a function: with a `void *` (C converts it to the
/// parameter's type) it fills the caller's whole structure, and compiles with every warning an
/// error, as C99, C11 and C17.
const CONFIG_INIT_FROM_VOID_POINTER: &str = "#include <stdlib.h>\n\
#include \"memvisor.h\"\n\
int main(void) {\n\
    void *memory = malloc(sizeof(memvisor_config));\n\
    memvisor_config *config = memory;\n\
    if (memory == NULL) return 1;\n\
    if (memvisor_config_init(memory) != MEMVISOR_STATUS_OK) return 2;\n\
    if (config->size != sizeof *config || config->chunk_size != 1u << 20) return 3;\n\
    free(memory);\n\
    return 0;\n\
}\n";

#[test]
fn config_init_macro_fills_a_structure_given_as_void_pointer() {
    let src = out_dir().join("config-init-void.c");
    std::fs::write(&src, CONFIG_INIT_FROM_VOID_POINTER).expect("write");
    for std in ["c99", "c11", "c17"] {
        let exe = out_dir().join(format!("config-init-void-{std}"));
        let mut cc = c_compiler();
        cc.arg(format!("-std={std}"))
            .args(["-Wall", "-Wextra", "-pedantic", "-Werror", "-I"])
            .arg(crate_dir().join("include"))
            .arg(&src)
            .arg(lib_dir().join("libmemvisor.a"))
            .args(NATIVE_LIBS)
            .arg("-o")
            .arg(&exe);
        stdout_of(&mut cc, &format!("cc -std={std} for {}", src.display()));
        run(&[], &exe, &[]);
    }
}

/// A pointer to a structure of another type given to `memvisor_config_init` is an error at
/// compile time (with warnings as errors in C), as for any function taking a
/// `memvisor_config *`.
#[test]
fn config_init_macro_refuses_a_pointer_to_another_structure_at_compile_time() {
    let body = "#include \"memvisor.h\"\n\
                struct other { int x; };\n\
                int use_other(struct other *o);\n\
                int use_other(struct other *o) { return memvisor_config_init(o); }\n";
    let mut compilers = vec![(c_compiler(), "config-init-other.c", "-std=c11")];
    if have("c++") {
        compilers.push((Command::new("c++"), "config-init-other.cpp", "-std=c++11"));
    }
    for (mut compiler, file, std) in compilers {
        let src = out_dir().join(file);
        std::fs::write(&src, body).expect("write");
        let output = compiler
            .args([std, "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-I"])
            .arg(crate_dir().join("include"))
            .arg(&src)
            .output()
            .expect("run the compiler");
        assert!(
            !output.status.success(),
            "{file}: a pointer to another structure compiled"
        );
    }
}

/// Compiles the header alone with `compiler` and `flags`, as the oldest language standard it
/// supports with every warning an error.
fn header_alone_compiles(compiler: &str, file: &str, flags: &[&str]) {
    let src = out_dir().join(file);
    std::fs::write(&src, "#include <memvisor.h>\n").expect("write");
    stdout_of(
        Command::new(compiler)
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
            .arg(&src),
        &format!("{compiler} {flags:?}"),
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
    stdout_of(
        Command::new("make")
            .arg("--no-print-directory")
            .arg("-C")
            .arg(crate_dir())
            .args(args)
            .arg("CARGO=true")
            .arg(format!("TARGET_DIR={}", target.display())),
        &format!("make {args:?}"),
    );
}

/// What `make install` puts under a prefix (the shared library's versioned file and its two
/// links, named by `installed_shared`, besides).
const INSTALLED: &[&str] = &[
    "lib/libmemvisor.a",
    "include/memvisor.h",
    "lib/pkgconfig/memvisor.pc",
];

/// The shared library's `SONAME`: its major version is the ABI's.
fn soname() -> String {
    format!("libmemvisor.so.{}", env!("CARGO_PKG_VERSION_MAJOR"))
}

/// The installed shared library: the file named by the full version, and the links to it
/// named by the `SONAME` (for the loader) and without a version (for the linker).
fn installed_shared() -> [String; 3] {
    [
        format!("lib/libmemvisor.so.{}", env!("CARGO_PKG_VERSION")),
        format!("lib/{}", soname()),
        "lib/libmemvisor.so".to_owned(),
    ]
}

/// The dynamic section entries of `file` with the tag `tag` (`SONAME`, `NEEDED`), as
/// `readelf -d` shows them; `None` without readelf.
fn dynamic_entries(file: &Path, tag: &str) -> Option<Vec<String>> {
    if !have("readelf") {
        eprintln!("\n!!!!!! SKIPPED: readelf is not installed; {tag} was NOT checked !!!!!!\n");
        return None;
    }
    let text = stdout_of(Command::new("readelf").arg("-d").arg(file), "readelf");
    let entries = text
        .lines()
        .filter(|line| line.contains(&format!("({tag})")))
        .filter_map(|line| Some(line.split_once('[')?.1.split_once(']')?.0.to_owned()))
        .collect();
    Some(entries)
}

/// Checks the installed shared library under `prefix`: a file with the `SONAME` and two
/// links to it.
fn check_installed_shared(prefix: &Path) {
    let [file, by_soname, dev] = installed_shared();
    let file = prefix.join(file);
    assert!(
        file.is_file() && !file.is_symlink(),
        "{} is not a file",
        file.display()
    );
    for link in [by_soname, dev] {
        let link = prefix.join(link);
        assert!(link.is_symlink(), "{} is not a link", link.display());
        let target = std::fs::canonicalize(&link).expect("a link that resolves");
        assert_eq!(target, std::fs::canonicalize(&file).expect("the file"));
    }
    if let Some(names) = dynamic_entries(&file, "SONAME") {
        assert_eq!(names, [soname()], "installed SONAME");
    }
}

#[test]
fn shared_library_names_its_soname() {
    let lib = lib_dir().join("libmemvisor.so");
    if let Some(names) = dynamic_entries(&lib, "SONAME") {
        assert_eq!(names, [soname()], "SONAME of {}", lib.display());
    }
    // A program linked with it asks the loader for the `SONAME`, not for the file name.
    let exe = compile(&suite_source("api"), "api-needed", Link::Shared, &[]);
    if let Some(needed) = dynamic_entries(&exe, "NEEDED") {
        assert!(needed.contains(&soname()), "{needed:?}");
        assert!(!needed.iter().any(|n| n == "libmemvisor.so"), "{needed:?}");
    }
}

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
    check_installed_shared(&prefix);
    let example = readme_example("readme_installed.c");
    let libdir = prefix.join("lib");

    // Shared, with the flags pkg-config gives for the installed `memvisor.pc`.
    if have("pkg-config") {
        let flags = stdout_of(
            Command::new("pkg-config")
                .args(["--cflags", "--libs", "memvisor"])
                .env("PKG_CONFIG_PATH", libdir.join("pkgconfig")),
            "pkg-config",
        );
        assert!(
            flags.contains(&format!("-I{}", prefix.join("include").display())),
            "{flags}"
        );
        let exe = root.join("vm-shared");
        stdout_of(
            c_compiler()
                .arg(&example)
                .args(flags.split_whitespace())
                .arg("-o")
                .arg(&exe),
            "cc",
        );
        if let Some(needed) = dynamic_entries(&exe, "NEEDED") {
            assert!(needed.contains(&soname()), "{needed:?}");
        }
        let libdir = libdir.to_str().expect("a UTF-8 path");
        let out = run(&[], &exe, &[("LD_LIBRARY_PATH", libdir)]);
        assert!(out.contains("all memory back"), "{out}");
    } else {
        eprintln!("\n!!!!!! SKIPPED: pkg-config is not installed !!!!!!\n");
    }

    // Static, with exactly the README's flags.
    let exe = root.join("vm-static");
    stdout_of(
        c_compiler()
            .arg(&example)
            .arg(format!("-I{}", prefix.join("include").display()))
            .arg(libdir.join("libmemvisor.a"))
            .args(["-lpthread", "-ldl", "-lm", "-lrt", "-lutil", "-lgcc_s"])
            .arg("-o")
            .arg(&exe),
        "cc",
    );
    let out = run(&[], &exe, &[]);
    assert!(out.contains("all memory back"), "{out}");

    make(
        &target,
        &["uninstall", &format!("PREFIX={}", prefix.display())],
    );
    for file in INSTALLED
        .iter()
        .copied()
        .chain(installed_shared().iter().map(String::as_str))
    {
        let path = prefix.join(file);
        assert!(
            !path.exists() && !path.is_symlink(),
            "make uninstall left {file}"
        );
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
    check_installed_shared(&stage.join("opt/mv"));
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
        let flags = stdout_of(
            Command::new("pkg-config")
                .args(["--cflags", "--libs", "memvisor"])
                .env("PKG_CONFIG_PATH", crate_dir()),
            "pkg-config",
        );
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
    stdout_of(
        &mut Command::new(crate_dir().join("check-header")),
        "check-header",
    );
}
