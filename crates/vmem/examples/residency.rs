//! Reserves address space, commits part of it, prefaults it and reports which pages are
//! resident at each step, then decommits and shows the memory going back.
//!
//! ```text
//! cargo run --release -p memvisor-vmem --example residency -- [COMMIT_MIB]
//! ```

use std::process::ExitCode;
use std::time::Instant;

use memvisor_vmem::{HugePageAdvice, Reservation, page_size};

const MIB: usize = 1 << 20;

fn rss() -> String {
    #[cfg(target_os = "linux")]
    if let Some(rss) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .map(|v| v.trim().to_string())
        })
    {
        return rss;
    }
    "n/a".to_string()
}

fn report(
    step: &str,
    r: &Reservation,
    len: usize,
    started: Instant,
) -> Result<(), memvisor_vmem::Error> {
    let resident = r.resident_pages(0, len)?;
    println!(
        "{step:<28} {:>9.2} ms   committed {:>6} MiB   resident {:>8} pages ({:>6} MiB)   RSS {}",
        started.elapsed().as_secs_f64() * 1e3,
        r.committed_bytes() / MIB,
        resident,
        resident * page_size() / MIB,
        rss(),
    );
    Ok(())
}

fn run(commit_mib: usize) -> Result<(), memvisor_vmem::Error> {
    let reserve = 64 << 30;
    let len = commit_mib * MIB;
    println!(
        "page size {} bytes; reserving {} GiB, committing {commit_mib} MiB",
        page_size(),
        reserve >> 30
    );

    let t = Instant::now();
    let mut r = Reservation::builder().alignment(2 * MIB).reserve(reserve)?;
    report("reserve", &r, len, t)?;

    let t = Instant::now();
    r.commit(0, len)?;
    report("commit", &r, len, t)?;

    match r.advise_huge_pages(0, len, HugePageAdvice::Huge) {
        Ok(()) => println!("transparent huge pages requested for the committed range"),
        Err(e) => println!("no transparent huge pages: {e}"),
    }

    let t = Instant::now();
    // SAFETY: the first page is committed read-write and only this thread uses it.
    unsafe { r.as_ptr().write(1) };
    report("write one byte", &r, len, t)?;

    let t = Instant::now();
    r.prefault(0, len)?;
    report("prefault", &r, len, t)?;

    let t = Instant::now();
    r.decommit(0, len)?;
    report("decommit", &r, len, t)?;
    Ok(())
}

fn main() -> ExitCode {
    let commit_mib = match std::env::args().nth(1).map(|a| a.parse::<usize>()) {
        None => 256,
        Some(Ok(n)) if n > 0 && n <= 64 << 10 => n,
        Some(_) => {
            eprintln!("usage: residency [COMMIT_MIB]   (1 to 65536, default 256)");
            return ExitCode::from(2);
        }
    };
    match run(commit_mib) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
