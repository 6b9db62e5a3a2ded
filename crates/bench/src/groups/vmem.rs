//! `vmem`: reserving, committing, prefaulting and decommitting host memory with
//! `memvisor-vmem`, against raw `libc` calls doing the same (the floor), first-touch faulting,
//! and `virtual-buffer` 2.0.
//!
//! `committed_bytes` times the commit counter of an empty 1 GiB and 1 TiB reservation.
//!
//! Linux only: the floor is written with Linux calls and the charge is read from `/proc`.

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::ptr;

use memvisor_vmem::{CommitMode, Reservation, page_size};

use crate::harness::{Bench, Sample, as_ms, ns_per_iter, time};
use crate::report::{Better, Row};
use crate::util::committed_as_bytes;

const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;
const TIB: usize = 1 << 40;
/// Calls timed per figure of `committed_bytes`.
const QUERIES: usize = 1_000_000;
/// Address space reserved by `lifecycle_commit_1g`.
const RESERVE: usize = 64 * GIB;
/// Memory committed, touched and decommitted by `lifecycle_commit_1g`.
const COMMIT: usize = GIB;
/// Commit step of `lifecycle_commit_1g`.
const STEP: usize = 2 * MIB;
/// Single-page commits attempted by `scattered_commits`.
pub const SCATTERED: usize = 100_000;

/// Runs every scenario of the group.
pub fn run(bench: &Bench) -> Vec<Row> {
    vec![
        lifecycle_commit_1g(bench),
        prefault_1g(bench),
        scattered_commits(bench),
        charge_after_decommit_1g(bench),
        committed_bytes(bench, GIB),
        committed_bytes(bench, TIB),
    ]
}

fn err(what: &str) -> impl Fn(memvisor_vmem::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Writes one byte into each page of `len` bytes at `base`.
///
/// # Safety
/// The range is committed read-write and nothing else uses it.
unsafe fn touch(base: *mut u8, len: usize) {
    let page = page_size();
    for offset in (0..len).step_by(page) {
        // SAFETY: inside the committed range (caller's promise).
        unsafe { base.add(offset).write_volatile(1) };
    }
}

fn lifecycle_memvisor() -> Sample {
    let (result, elapsed) = time(|| -> Result<(), String> {
        let mut r = Reservation::new(RESERVE).map_err(err("reserve"))?;
        for offset in (0..COMMIT).step_by(STEP) {
            r.commit(offset, STEP).map_err(err("commit"))?;
        }
        // SAFETY: the first GiB is committed read-write and only used here.
        unsafe { touch(r.as_ptr(), COMMIT) };
        r.decommit(0, COMMIT).map_err(err("decommit"))?;
        drop(black_box(r));
        Ok(())
    });
    result?;
    Ok(as_ms(elapsed))
}

fn os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn lifecycle_libc() -> Sample {
    let (result, elapsed) = time(|| -> Result<(), String> {
        // SAFETY: a fresh PROT_NONE anonymous mapping touches no existing memory.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                RESERVE,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(os_error("mmap"));
        }
        let base = base.cast::<u8>();
        for offset in (0..COMMIT).step_by(STEP) {
            // SAFETY: inside the mapping just made.
            if unsafe {
                libc::mprotect(
                    base.add(offset).cast(),
                    STEP,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            } != 0
            {
                return Err(os_error("mprotect"));
            }
        }
        // SAFETY: committed read-write above.
        unsafe { touch(base, COMMIT) };
        // SAFETY: replaces our own committed range with fresh PROT_NONE pages.
        let again = unsafe {
            libc::mmap(
                base.cast(),
                COMMIT,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if again == libc::MAP_FAILED {
            return Err(os_error("mmap fixed"));
        }
        // SAFETY: unmaps our own mapping, not used afterwards.
        if unsafe { libc::munmap(base.cast(), RESERVE) } != 0 {
            return Err(os_error("munmap"));
        }
        Ok(())
    });
    result?;
    Ok(as_ms(elapsed))
}

fn lifecycle_virtual_buffer() -> Sample {
    let (result, elapsed) = time(|| -> Result<(), String> {
        let a = virtual_buffer::Allocation::new(RESERVE).map_err(|e| format!("reserve: {e}"))?;
        for offset in (0..COMMIT).step_by(STEP) {
            a.commit(a.ptr().wrapping_add(offset), STEP)
                .map_err(|e| format!("commit: {e}"))?;
        }
        // SAFETY: committed read-write above.
        unsafe { touch(a.ptr(), COMMIT) };
        a.decommit(a.ptr(), COMMIT)
            .map_err(|e| format!("decommit: {e}"))?;
        drop(black_box(a));
        Ok(())
    });
    result?;
    Ok(as_ms(elapsed))
}

/// `lifecycle_commit_1g`: reserve 64 GiB, commit 1 GiB in 2 MiB steps, write a byte a page,
/// decommit, unreserve; ms.
pub fn lifecycle_commit_1g(bench: &Bench) -> Row {
    bench
        .scenario("lifecycle_commit_1g", 0, "ms", Better::Lower)
        .memvisor(lifecycle_memvisor)
        .peer("raw-libc", lifecycle_libc)
        .peer("virtual-buffer", lifecycle_virtual_buffer)
        .run()
}

/// Reserves and commits 1 GiB and prefaults it with `threads` threads; ms, the residency
/// check and the unmapping not timed.
fn prefault_memvisor(threads: NonZeroUsize) -> Sample {
    let (r, elapsed) = time(|| -> Result<Reservation, String> {
        let mut r = Reservation::new(GIB).map_err(err("reserve"))?;
        r.commit(0, GIB).map_err(err("commit"))?;
        r.prefault_parallel(0, GIB, threads)
            .map_err(err("prefault"))?;
        Ok(r)
    });
    let r = r?;
    let resident = r.resident_pages(0, GIB).map_err(err("residency"))?;
    if resident != GIB / page_size() {
        return Err(format!("only {resident} pages resident after prefault"));
    }
    Ok(as_ms(elapsed))
}

/// `prefault_1g`: reserve and commit 1 GiB and make every page resident; ms, the unmapping
/// not timed. memvisor prefaults from one thread (`memvisor-parallel`: split over every core);
/// the peer writes a byte a page.
pub fn prefault_1g(bench: &Bench) -> Row {
    let cores = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
    bench
        .scenario("prefault_1g", 0, "ms", Better::Lower)
        .memvisor(|| prefault_memvisor(NonZeroUsize::MIN))
        .variant("memvisor-parallel", || prefault_memvisor(cores))
        .peer("first-touch", || {
            let (r, elapsed) = time(|| -> Result<Reservation, String> {
                let r = Reservation::new(GIB).map_err(err("reserve"))?;
                r.commit(0, GIB).map_err(err("commit"))?;
                // SAFETY: committed read-write and only used here.
                unsafe { touch(r.as_ptr(), GIB) };
                Ok(r)
            });
            drop(r?);
            Ok(as_ms(elapsed))
        })
        .run()
}

/// `scattered_commits`: single pages committed, every other page of one reservation; the
/// figure is how many of 100,000 commits succeeded. memvisor uses a sparse reservation;
/// `memvisor-protected` shows the mapping limit its default mode shares with the peer.
pub fn scattered_commits(bench: &Bench) -> Row {
    let page = page_size();
    let len = 2 * SCATTERED * page;
    let count = |commit: &dyn Fn(usize) -> bool| -> f64 {
        let mut ok = 0u32;
        for i in 0..SCATTERED {
            if !commit(2 * i * page) {
                break;
            }
            ok += 1;
        }
        f64::from(ok)
    };
    bench
        .scenario(
            "scattered_commits",
            u64::try_from(SCATTERED).unwrap_or(u64::MAX),
            "commits",
            Better::Higher,
        )
        .memvisor(|| {
            let r = Reservation::builder()
                .mode(CommitMode::Sparse)
                .reserve(len)
                .map_err(err("reserve"))?;
            Ok(count(&|offset| r.commit(offset, page).is_ok()))
        })
        .variant("memvisor-protected", || {
            let r = Reservation::new(len).map_err(err("reserve"))?;
            Ok(count(&|offset| r.commit(offset, page).is_ok()))
        })
        .peer("virtual-buffer", || {
            let a = virtual_buffer::Allocation::new(len).map_err(|e| format!("reserve: {e}"))?;
            Ok(count(&|offset| {
                a.commit(a.ptr().wrapping_add(offset), page).is_ok()
            }))
        })
        .run()
}

/// `charge_after_decommit_1g`: MiB of the system's commit charge (`Committed_AS`) still held
/// after committing 1 GiB, writing a byte a page and decommitting it, while the reservation
/// lives. System-wide, so other processes add noise of a few MiB.
pub fn charge_after_decommit_1g(bench: &Bench) -> Row {
    fn charge(run: &dyn Fn() -> Result<Box<dyn std::any::Any>, String>) -> Sample {
        let before = committed_as_bytes().map_err(|e| format!("Committed_AS: {e}"))?;
        let keep = run()?;
        let after = committed_as_bytes().map_err(|e| format!("Committed_AS: {e}"))?;
        drop(keep);
        #[allow(clippy::cast_precision_loss, reason = "a report figure in MiB")]
        let mib = (after as f64 - before as f64) / MIB as f64;
        Ok(mib.max(0.0))
    }
    bench
        .scenario("charge_after_decommit_1g", 0, "MiB", Better::Lower)
        .memvisor(|| {
            charge(&|| {
                let mut r = Reservation::new(4 * GIB).map_err(err("reserve"))?;
                r.commit(0, GIB).map_err(err("commit"))?;
                // SAFETY: committed read-write and only used here.
                unsafe { touch(r.as_ptr(), GIB) };
                r.decommit(0, GIB).map_err(err("decommit"))?;
                Ok(Box::new(r))
            })
        })
        .peer("virtual-buffer", || {
            charge(&|| {
                let a = virtual_buffer::Allocation::new(4 * GIB)
                    .map_err(|e| format!("reserve: {e}"))?;
                a.commit(a.ptr(), GIB).map_err(|e| format!("commit: {e}"))?;
                // SAFETY: committed read-write and only used here.
                unsafe { touch(a.ptr(), GIB) };
                a.decommit(a.ptr(), GIB)
                    .map_err(|e| format!("decommit: {e}"))?;
                Ok(Box::new(a))
            })
        })
        .run()
}

/// `committed_bytes`: ns per call of `Reservation::committed_bytes` on an empty reservation of
/// `size` bytes (the parameter), reserving not timed.
pub fn committed_bytes(bench: &Bench, size: usize) -> Row {
    let r = Reservation::new(size).map_err(err("reserve"));
    bench
        .scenario(
            "committed_bytes",
            u64::try_from(size).unwrap_or(u64::MAX),
            "ns/op",
            Better::Lower,
        )
        .memvisor(|| {
            let r = r.as_ref().map_err(Clone::clone)?;
            let mut total = 0usize;
            let ns = ns_per_iter(QUERIES, |_| total += black_box(r).committed_bytes());
            if total != 0 {
                return Err(format!(
                    "an empty reservation reports {total} committed bytes"
                ));
            }
            Ok(ns)
        })
        .run()
}
