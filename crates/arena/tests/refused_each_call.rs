//! Every system call an allocation makes in a reservation-backed arena refused in turn: the
//! first, then the second, ... call inside the arena's reservation (guard page, commit of
//! each chunk of a run, and the decommit that undoes a run's commits) fails with `ENOMEM`
//! (alone, or with every call after it, so that undoing is refused too),
//! for real (a seccomp filter whose supervisor counts the calls; memvisor-testkit's
//! `refused_calls`). Each refusal must give [`Error::Vmem`] with the errno,
//! leave the arena's and the client's statistics as they were (but for the documented
//! cached chunks of a run whose undoing was refused), and the same allocation must
//! succeed once the refusal is lifted. Run in a child process, as the filter cannot be
//! removed; skipped under a sanitizer. Linux on x86-64 only.
#![cfg(all(
    target_os = "linux",
    target_arch = "x86_64",
    feature = "std",
    not(miri)
))]

use std::alloc::Layout;

use memvisor_arena::memvisor_vmem::{self, OsError};
use memvisor_arena::{Arena, Config, Error, Flags, Quota};
use memvisor_testkit::refused_calls::{EACH_REFUSAL, Refusal, Refuser, in_child, under_sanitizer};

const CHILD: &str = "MEMVISOR_ARENA_REFUSED_EACH_CALL_CHILD";
const CHUNK: usize = 64 << 10;

/// The allocations tried, by name: sizes in chunks (a half chunk is a small block).
const SHAPES: [(&str, usize); 3] = [
    ("small block", CHUNK / 2),
    ("one chunk", CHUNK),
    ("run of three chunks", 2 * CHUNK + CHUNK / 2),
];

/// The most calls one allocation is refused in turn: more would be a loop the test stops
/// short of.
const MAX_CALLS: u64 = 16;

fn scenario(refuser: &Refuser) -> usize {
    let mut checked = 0;
    let mut failures = Vec::new();
    let flag_sets = [
        Flags::STATISTICS,
        Flags::STATISTICS | Flags::DECOMMIT,
        Flags::STATISTICS | Flags::GUARD,
        Flags::STATISTICS | Flags::GUARD | Flags::DECOMMIT | Flags::ZERO,
    ];
    for flags in flag_sets {
        for (shape, size) in SHAPES {
            // With `GUARD` a block is at most a chunk less its guard page.
            if flags.contains(Flags::GUARD) && size >= CHUNK {
                continue;
            }
            // Fresh chunks, and chunks given back before (cached or decommitted).
            for reused in [false, true] {
                // Calls of the allocation refused in turn, alone and with every call after
                // it, up to a run that refused none (so every call was reached).
                let turns =
                    refuser.each_call_in_turn(&EACH_REFUSAL, MAX_CALLS, libc::ENOMEM, |turn| {
                        let arena = Arena::with_reservation(
                            16 * CHUNK,
                            Config::new().with_chunk_size(CHUNK).with_flags(flags),
                        )
                        .unwrap();
                        let client = arena.create_client(Quota::UNLIMITED).unwrap();
                        let layout = Layout::from_size_align(size, 16).unwrap();
                        if reused {
                            let p = client.alloc(layout).unwrap();
                            // SAFETY: a live block of this client, not used again.
                            unsafe { client.free(p) }.unwrap();
                            client.trim();
                        }
                        let before = (arena.stats(), client.stats());
                        let r = arena.backing().reservation().unwrap();
                        let range = r.as_ptr() as usize..r.as_ptr() as usize + r.len();
                        let (result, refused) = turn.refuse(range, || client.alloc(layout));
                        let what = format!("{flags:?} {shape} (reused {reused}), {turn}");
                        if refused.is_none() {
                            let p = result.unwrap_or_else(|e| panic!("{what}: {e:?}"));
                            // SAFETY: a live block of this client, not used again.
                            unsafe { client.free(p) }.unwrap();
                            return;
                        }
                        match &result {
                            Err(Error::Vmem(memvisor_vmem::Error::Os { source, .. }))
                                if *source == OsError::from_raw(libc::ENOMEM) => {}
                            other => failures.push(format!("{what}: got {other:?}")),
                        }
                        let mut after = (arena.stats(), client.stats());
                        if turn.refusal == Refusal::FromNth
                            && after.0.cached_chunks >= before.0.cached_chunks
                        {
                            // As documented: chunks the refused run committed, whose decommit
                            // was refused too, stay committed and are counted as cached.
                            after.0.cached_chunks = before.0.cached_chunks;
                        }
                        if after != before {
                            failures
                                .push(format!("{what}: statistics changed\n{before:?}\n{after:?}"));
                        }
                        match client.alloc(layout) {
                            Ok(p) => {
                                // SAFETY: a live block of `size` bytes.
                                unsafe { p.as_ptr().write_bytes(0x5a, size) };
                                // SAFETY: a live block of this client, not used again.
                                unsafe { client.free(p) }.unwrap();
                            }
                            Err(e) => failures.push(format!("{what}: retry gave {e:?}")),
                        }
                        if let Ok(p) = result {
                            // SAFETY: as above.
                            unsafe { client.free(p) }.unwrap();
                        }
                        arena.delete_client(client);
                    });
                checked += turns.refused;
                let what = format!("{flags:?} {shape} (reused {reused})");
                assert!(
                    turns.reached_end,
                    "{what}: more than {MAX_CALLS} calls, not all refused"
                );
                // A chunk given back and kept committed (no `DECOMMIT`) is reused without a
                // system call; every other allocation makes at least one, or its refusals
                // would check nothing.
                let expected_none = reused && !flags.contains(Flags::DECOMMIT);
                assert_eq!(
                    turns.calls == 0,
                    expected_none,
                    "{what}: {} calls refused in turn",
                    turns.calls
                );
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    checked
}

#[test]
fn each_refused_call_of_an_allocation_leaves_the_arena_as_it_was() {
    if std::env::var_os(CHILD).is_none() {
        if under_sanitizer() {
            eprintln!("SKIPPED: a sanitizer's runtime maps memory the filter would see");
            return;
        }
        in_child(
            "each_refused_call_of_an_allocation_leaves_the_arena_as_it_was",
            CHILD,
            "refusals checked",
        );
        return;
    }
    let calls = [libc::SYS_mmap, libc::SYS_mprotect, libc::SYS_madvise];
    let Some(refuser) = Refuser::install(&calls) else {
        return;
    };
    let checked = scenario(&refuser);
    println!("{checked} refusals checked");
}
