//! A run of chunks whose commit the system refuses part-way leaves the arena as it was: the
//! chunks this allocation committed before the refusal are decommitted again, not kept
//! committed and counted as cached. Linux counts private writable memory against
//! `RLIMIT_DATA`, so with the limit lowered to leave room for all but the last chunk of the
//! run, the last chunk's commit (`mprotect`) is refused with `ENOMEM`. One test per file: the
//! limit is the process's.

#![cfg(all(target_os = "linux", feature = "std", not(miri)))]

use std::alloc::Layout;

use memvisor_arena::{Arena, Config, Error, Flags, Quota};

const CHUNK: usize = 64 << 10;

/// Private writable bytes the process maps (`VmData`), 0 if unknown.
fn data_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmData:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(0, |kib| kib << 10)
}

/// Commits with room for `room` more bytes of private writable memory, then the limit is
/// lifted; `None` where the limit does not bind (as under valgrind).
fn with_data_room<R>(room: usize, f: impl FnOnce() -> R) -> Option<R> {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-pointer.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_DATA, &raw mut old) };
    assert_eq!(got, 0);
    let data = data_bytes();
    if data == 0 {
        return None;
    }
    let tight = libc::rlimit {
        rlim_cur: (data + room) as libc::rlim_t,
        rlim_max: old.rlim_max,
    };
    // SAFETY: a valid rlimit.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_DATA, &raw const tight) };
    assert_eq!(set, 0);
    // Does the limit bind? A writable private mapping past the room must be refused.
    let over = room + CHUNK;
    // SAFETY: a fresh anonymous mapping, unmapped below if made.
    let probe = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            over,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    let binds = probe == libc::MAP_FAILED;
    let result = binds.then(f);
    // SAFETY: a valid rlimit.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_DATA, &raw const old) };
    assert_eq!(set, 0);
    if !binds {
        // SAFETY: the probe mapping made above, not used.
        unsafe { libc::munmap(probe, over) };
    }
    result
}

#[test]
fn run_whose_commit_is_refused_part_way_leaves_no_chunk_committed() {
    // (With `GUARD` a block is at most a chunk: no runs.)
    for flags in [Flags::STATISTICS, Flags::STATISTICS | Flags::ZERO] {
        let arena = Arena::with_reservation(
            16 * CHUNK,
            Config::new().with_chunk_size(CHUNK).with_flags(flags),
        )
        .unwrap();
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let run = 3;
        let layout = Layout::from_size_align((run - 1) * CHUNK + CHUNK / 2, 16).unwrap();
        let before = arena.stats();
        let client_before = client.stats();
        // Room for the commits of all the run's chunks but the last, with half a chunk to
        // spare for anything else the process maps meanwhile.
        let Some((refused, again)) = with_data_room((run - 1) * CHUNK + CHUNK / 2, || {
            (client.alloc(layout), client.alloc(layout))
        }) else {
            eprintln!("RLIMIT_DATA does not bind here: commit refusal not tested");
            return;
        };
        for r in [refused, again] {
            assert!(matches!(r, Err(Error::Vmem(_))), "{flags:?}: {r:?}");
        }
        assert_eq!(arena.stats(), before, "{flags:?}");
        assert_eq!(client.stats(), client_before, "{flags:?}");
        // The refusal is over: the same request succeeds, in memory that can be written.
        let p = client.alloc(layout).unwrap();
        // SAFETY: a live block of `layout.size()` bytes.
        unsafe { p.as_ptr().cast::<u8>().write_bytes(0x5A, layout.size()) };
        assert_eq!(
            arena.stats().held_chunks,
            before.held_chunks + run,
            "{flags:?}"
        );
        // SAFETY: a live block of this client, not used again.
        unsafe { client.free(p.cast()) }.unwrap();
        arena.delete_client(client);
    }
}
