//! `memvisor-bench`: runs benchmark groups and writes their reports.
//!
//! ```text
//! cargo run --release -p memvisor-bench -- [--quick] [--out DIR] [--repeats N] [GROUP ...]
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    memvisor_bench::cli::main(std::env::args().skip(1))
}
