//! The `memvisor` command; everything it does lives in the `memvisor` library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    memvisor_cli::main_with_args(std::env::args_os())
}
