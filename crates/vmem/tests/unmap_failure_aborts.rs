//! A reservation whose unmap fails for good aborts the process with a message instead of
//! leaving its memory mapped. The failure is real: a child process merges a reservation with
//! its neighbours into one kernel mapping, fills the process's mapping limit
//! (`vm.max_map_count`), and drops the reservation, whose `munmap` would have to split the
//! mapping and fails with `ENOMEM`. Linux only.
#![cfg(all(target_os = "linux", not(miri)))]

use std::process::Command;

use memvisor_vmem::{Error, Operation, Protection, Reservation, page_size};

const CHILD_ENV: &str = "MEMVISOR_VMEM_UNMAP_CHILD";

/// The mapping of `/proc/self/maps` that contains `addr`, as `(start, end)`.
fn mapping_of(addr: usize) -> Option<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().find_map(|line| {
        let range = line.split_whitespace().next()?;
        let (start, end) = range.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        (start <= addr && addr < end).then_some((start, end))
    })
}

/// Maps one `PROT_NONE` page at `addr` the way a protected reservation is mapped, so that the
/// kernel merges it with an adjacent reservation; `false` if the address is taken.
fn map_neighbour(addr: usize) -> bool {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; the page is fresh.
    let raw = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            page_size(),
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return false;
    }
    assert_eq!(raw as usize, addr, "kernel placed the neighbour elsewhere");
    true
}

/// A one-page reservation merged with a page on each side into one kernel mapping.
fn merged_reservation(keep: &mut Vec<Reservation>) -> Reservation {
    let page = page_size();
    for _ in 0..64 {
        // A large alignment trims big unmapped gaps off both sides of the reservation, so
        // its neighbouring pages are usually free.
        let r = Reservation::builder()
            .alignment(64 << 20)
            .reserve(page)
            .unwrap();
        let addr = r.as_ptr() as usize;
        if map_neighbour(addr - page) && map_neighbour(addr + page) {
            let (start, end) = mapping_of(addr).unwrap();
            assert!(start <= addr - page && end >= addr + 2 * page, "not merged");
            return r;
        }
        keep.push(r);
    }
    panic!("no free neighbours found for a reservation");
}

/// Splits mappings until the kernel refuses: scattered two-page commits, then lowering the
/// protection of the first page of each run (one split each) until one fails.
fn fill_mapping_limit() -> Reservation {
    let limit: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let page = page_size();
    let runs = limit / 2 + 1_000;
    let mut filler = Reservation::new(3 * runs * page).unwrap();
    let mut committed = 0;
    while committed < runs {
        match filler.commit(3 * committed * page, 2 * page) {
            Ok(()) => committed += 1,
            Err(Error::Os {
                operation: Operation::Commit,
                source,
            }) if source.raw() == libc::ENOMEM => break,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(committed < runs, "the mapping limit was never reached");
    for run in 0..committed {
        match filler.protect(3 * run * page, page, Protection::Read) {
            Ok(()) => {}
            Err(Error::Os {
                operation: Operation::Protect,
                source,
            }) if source.raw() == libc::ENOMEM => return filler,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    panic!("the mapping limit was never reached by splits");
}

/// Run only as the child of `drop_whose_unmap_fails_aborts_with_message`.
#[test]
#[ignore = "run as a child process by drop_whose_unmap_fails_aborts_with_message"]
fn child_drops_merged_reservation_at_map_limit() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let mut keep = Vec::new();
    let r = merged_reservation(&mut keep);
    let _filler = fill_mapping_limit();
    drop(r);
    // Reached only if the unmap succeeded or its failure was ignored.
    println!("reservation dropped without abort");
    std::process::exit(0);
}

#[test]
fn drop_whose_unmap_fails_aborts_with_message() {
    use std::os::unix::process::ExitStatusExt;

    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_drops_merged_reservation_at_map_limit",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGABRT),
        "child was not aborted: {:?}\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    assert!(
        stderr.contains("memvisor-vmem: fatal: unmapping reservation")
            && stderr.contains(&format!("(OS error {})", libc::ENOMEM)),
        "no abort message: {stderr}"
    );
}
