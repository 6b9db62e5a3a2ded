//! Pages the system takes and does not give back. A `map` of explicit huge pages that the
//! kernel refuses has already unmapped the old pages; if putting the reservation's own pages
//! back is refused too, the hole is no longer the reservation's, and another mapping may be
//! placed in it. The kernel's second refusal is made real here with a seccomp filter that
//! refuses every fixed mapping of ordinary pages, in a child process (a filter cannot be
//! removed). Linux on x86-64 only (the filter reads the x86-64 system call numbers).
#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

use std::process::Command;

use memvisor_testkit::huge_page_lock;
use memvisor_vmem::{CommitMode, Error, HugeTlbSize, MapSource, Protection, Reservation};

/// Set in the child process that runs the scenario.
const CHILD: &str = "MEMVISOR_VMEM_LOST_PAGES_CHILD";
const HUGE: usize = 2 << 20;
const SENTINEL: u8 = 0x5a;

/// Installs, for this thread, a filter that makes every `mmap` with `MAP_FIXED` or
/// `MAP_FIXED_NOREPLACE` and without `MAP_HUGETLB` fail with `ENOMEM`; everything else is
/// allowed.
fn refuse_fixed_ordinary_mappings() {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: u16::try_from(code).unwrap(),
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: u16::try_from(code).unwrap(),
        jt,
        jf,
        k,
    };
    let flags_low = 16 + 3 * 8; // `seccomp_data.args[3]`, its low half (little endian)
    let mut program = [
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0), // the call number
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            u32::try_from(libc::SYS_mmap).unwrap(),
            0,
            3,
        ),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, flags_low),
        jump(
            libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
            u32::try_from(libc::MAP_HUGETLB).unwrap(),
            1,
            0,
        ),
        jump(
            libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
            u32::try_from(libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE).unwrap(),
            1,
            0,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | u32::try_from(libc::ENOMEM).unwrap(),
        ),
    ];
    // Jumps count the instructions skipped: not `mmap` and huge pages go to the first return
    // (allow), a fixed mapping to the second (refuse).
    let prog = libc::sock_fprog {
        len: u16::try_from(program.len()).unwrap(),
        filter: program.as_mut_ptr(),
    };
    // SAFETY: plain `prctl` calls; `prog` points at a live program of `len` instructions.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &raw const prog
            ),
            0,
            "seccomp filter refused"
        );
    }
}

/// Whether any page of `addr..addr + len` is unmapped.
fn has_hole(addr: *mut u8, len: usize) -> bool {
    // SAFETY: `msync` only reads the mappings of the range.
    let r = unsafe { libc::msync(addr.cast(), len, libc::MS_ASYNC) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOMEM)
}

/// Whether every byte of the other mapping at `at` still holds [`SENTINEL`].
fn sentinel_intact(at: *mut u8) -> bool {
    // SAFETY: the caller's mapping of `HUGE` readable bytes at `at`.
    unsafe { core::slice::from_raw_parts(at, HUGE) }
        .iter()
        .all(|&b| b == SENTINEL)
}

/// The scenario, in the child: returns how many modes lost pages (0 if the host had free
/// huge pages or gave the pages back).
fn lost_pages_scenario() -> usize {
    let mut lost_in = 0;
    let mut reservations: Vec<Reservation> = [CommitMode::Protected, CommitMode::Sparse]
        .into_iter()
        .map(|mode| {
            let r = Reservation::builder()
                .alignment(HUGE)
                .mode(mode)
                .reserve(3 * HUGE)
                .unwrap();
            r.commit(0, 3 * HUGE).unwrap();
            r
        })
        .collect();
    refuse_fixed_ordinary_mappings();
    for mut r in reservations.drain(..) {
        let mode = r.mode();
        let base = r.as_ptr();
        let result = r.map(
            HUGE,
            HUGE,
            MapSource::AnonymousPrivate,
            Protection::ReadWrite,
            Some(HugeTlbSize::Size2M),
        );
        // SAFETY: inside the reservation.
        let hole = unsafe { base.add(HUGE) };
        if result.is_ok() || !has_hole(hole, HUGE) {
            eprintln!("{mode:?}: no pages lost (free huge pages, or the kernel kept the old ones)");
            continue;
        }
        lost_in += 1;
        // Someone else's mapping in the hole, as the system may place one.
        // SAFETY: a mapping request with a hint and no `MAP_FIXED`: it replaces nothing.
        let theirs = unsafe {
            libc::mmap(
                hole.cast(),
                HUGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_eq!(
            theirs.cast::<u8>(),
            hole,
            "{mode:?}: the hint was not taken"
        );
        // SAFETY: the fresh mapping above, read-write.
        unsafe { hole.write_bytes(SENTINEL, HUGE) };

        let lost = Error::Lost { offset: HUGE };
        let page = r.page_size();
        // Every call on a range with a lost page is refused, first lost page named.
        assert_eq!(r.commit(HUGE, HUGE).unwrap_err(), lost, "{mode:?}");
        assert_eq!(r.commit(0, 2 * HUGE).unwrap_err(), lost, "{mode:?}");
        assert_eq!(
            r.decommit(HUGE + page, page).unwrap_err(),
            Error::Lost {
                offset: HUGE + page
            },
            "{mode:?}"
        );
        assert_eq!(r.guard(HUGE, HUGE).unwrap_err(), lost, "{mode:?}");
        assert_eq!(r.unguard(HUGE, HUGE).unwrap_err(), lost, "{mode:?}");
        assert_eq!(
            r.protect(HUGE, HUGE, Protection::None).unwrap_err(),
            lost,
            "{mode:?}"
        );
        assert_eq!(r.is_committed(HUGE, HUGE).unwrap_err(), lost, "{mode:?}");
        assert_eq!(r.is_guarded(0, 3 * HUGE).unwrap_err(), lost, "{mode:?}");
        assert_eq!(
            r.map(
                HUGE,
                HUGE,
                MapSource::AnonymousPrivate,
                Protection::ReadWrite,
                None
            )
            .unwrap_err(),
            lost,
            "{mode:?}"
        );
        // The pages around are the reservation's as before.
        assert!(r.is_committed(0, HUGE).unwrap(), "{mode:?}");
        assert!(r.is_committed(2 * HUGE, HUGE).unwrap(), "{mode:?}");
        // SAFETY: committed read-write.
        unsafe { base.add(2 * HUGE).write(1) };
        r.protect(2 * HUGE, HUGE, Protection::Read).unwrap();
        // Nothing touched the other mapping.
        assert!(sentinel_intact(hole), "{mode:?}");
        // Dropping the reservation unmaps its own pages and leaves the hole's new mapping.
        drop(r);
        assert!(
            has_hole(base, HUGE),
            "{mode:?}: the pages before are still mapped"
        );
        // SAFETY: inside the former reservation.
        assert!(has_hole(unsafe { base.add(2 * HUGE) }, HUGE), "{mode:?}");
        assert!(
            !has_hole(hole, HUGE),
            "{mode:?}: the other mapping was unmapped"
        );
        assert!(
            sentinel_intact(hole),
            "{mode:?}: the other mapping's contents changed"
        );
        // SAFETY: the mapping made above, no longer used.
        assert_eq!(unsafe { libc::munmap(theirs, HUGE) }, 0);
    }
    lost_in
}

#[test]
fn pages_lost_to_a_refused_map_are_never_touched_again() {
    if std::env::var_os(CHILD).is_some() {
        let lost_in = lost_pages_scenario();
        println!("lost pages checked in {lost_in} modes");
        return;
    }
    // Held by this process while the child runs the scenario.
    let _huge_pages = huge_page_lock::huge_page_lock();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "pages_lost_to_a_refused_map_are_never_touched_again",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
    assert!(
        stdout.contains("lost pages checked in"),
        "the child did not run the scenario: {stdout}\n{stderr}"
    );
    // This host has no free 2 MiB huge pages (the usual case), so both modes lose pages.
    let free_huge = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("HugePages_Free:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    if free_huge == 0 {
        assert!(
            stdout.contains("lost pages checked in 2 modes"),
            "{stdout}\n{stderr}"
        );
    }
}
