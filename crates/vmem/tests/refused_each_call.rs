//! Every system call of a reservation's operations refused in turn: the first, then the
//! second, ... call the operation makes inside the reservation fails with `ENOMEM`, for real
//! (a seccomp filter whose supervisor counts the calls, see memvisor-testkit's `refused_calls`).
//! Each refusal must give [`Error::Os`] with the errno, leave the pages as they were (their
//! records, their access in `/proc/self/maps`, the process's locked memory), and the same call must
//! succeed once the refusal is lifted. With every call after it refused too, a decommit or
//! guard must leave the pages as its docs say. Run in a child process, as the filter cannot be
//! removed; skipped under a sanitizer, whose runtime maps memory of its own. Linux on x86-64
//! only, with the `std` feature (file mappings).
#![cfg(all(
    target_os = "linux",
    target_arch = "x86_64",
    feature = "std",
    not(miri)
))]

use std::os::fd::AsFd;

use memvisor_testkit::refused_calls::{EACH_REFUSAL, Refusal, Refuser, in_child, under_sanitizer};
use memvisor_vmem::{CommitMode, Error, MapSource, OsError, Protection, Reservation, page_size};

const CHILD: &str = "MEMVISOR_VMEM_REFUSED_EACH_CALL_CHILD";
const PAGES: usize = 8;

/// What can be seen of a reservation's pages: each page's records and its access as the
/// kernel has it, and the process's locked bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    pages: Vec<(bool, bool, String)>,
    committed: usize,
    locked_kib: u64,
}

fn perms_at(maps: &str, addr: usize) -> String {
    for line in maps.lines() {
        let mut words = line.split_whitespace();
        let (start, end) = words.next().unwrap().split_once('-').unwrap();
        let start = usize::from_str_radix(start, 16).unwrap();
        let end = usize::from_str_radix(end, 16).unwrap();
        if (start..end).contains(&addr) {
            let perms = words.next().unwrap();
            // Shared or private, and whether the page is a file's, not the inode.
            let offset_dev = words.nth(1).unwrap();
            return format!("{perms} {offset_dev}");
        }
    }
    "unmapped".to_owned()
}

fn locked_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

fn state(r: &Reservation) -> State {
    let p = page_size();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    State {
        pages: (0..PAGES)
            .map(|i| {
                (
                    r.is_committed(i * p, p).unwrap(),
                    r.is_guarded(i * p, p).unwrap(),
                    perms_at(&maps, r.as_ptr() as usize + i * p),
                )
            })
            .collect(),
        committed: r.committed_bytes(),
        locked_kib: locked_kib(),
    }
}

/// A reservation of [`PAGES`] pages in `mode`, with pages of several kinds: pages 0..2
/// committed and locked (1..2 also executable), 2..4 a shared mapping, 4..5 read-only, 6..7
/// a guard page.
fn mixed(mode: CommitMode, memfd: &std::fs::File) -> Reservation {
    let p = page_size();
    let mut r = Reservation::builder()
        .mode(mode)
        .reserve(PAGES * p)
        .unwrap();
    r.commit(0, 6 * p).unwrap();
    r.lock(0, 2 * p).unwrap();
    r.protect(p, p, Protection::ReadWriteExecute).unwrap();
    r.map(
        2 * p,
        2 * p,
        MapSource::file(memfd.as_fd(), 0),
        Protection::ReadWrite,
        None,
    )
    .unwrap();
    r.protect(4 * p, p, Protection::Read).unwrap();
    r.guard(6 * p, p).unwrap();
    r
}

type Op = fn(&mut Reservation, &std::fs::File) -> memvisor_vmem::Result<()>;

/// Pages 1..5, which [`decommit`](Reservation::decommit) and [`guard`](Reservation::guard)
/// change in the operations below: as documented, a refusal of either may leave them
/// decommitted (and not guard pages), and leaves them unlocked.
const DISCARDED: core::ops::Range<usize> = 1..5;

/// The operations whose refusal may discard the pages of [`DISCARDED`].
const DISCARDING: [&str; 2] = ["decommit", "guard"];

fn operations() -> Vec<(&'static str, Op)> {
    vec![
        ("commit", |r, _| r.commit(0, 6 * page_size())),
        ("commit_read_only", |r, _| {
            r.commit(4 * page_size(), 2 * page_size())
        }),
        ("commit_new", |r, _| r.commit(7 * page_size(), page_size())),
        ("protect_read", |r, _| {
            r.protect(0, 6 * page_size(), Protection::Read)
        }),
        ("protect_none", |r, _| {
            r.protect(page_size(), 4 * page_size(), Protection::None)
        }),
        ("protect_read_execute", |r, _| {
            r.protect(0, 4 * page_size(), Protection::ReadExecute)
        }),
        ("lock", |r, _| r.lock(0, 4 * page_size())),
        ("unlock", |r, _| r.unlock(0, 4 * page_size())),
        ("guard", |r, _| r.guard(page_size(), 4 * page_size())),
        ("decommit", |r, _| r.decommit(page_size(), 4 * page_size())),
        ("unguard", |r, _| r.unguard(6 * page_size(), page_size())),
        ("map_over_pieces", |r, f| {
            r.map(
                page_size(),
                4 * page_size(),
                MapSource::file(f.as_fd(), 0),
                Protection::ReadWrite,
                None,
            )
        }),
        ("map_private", |r, _| {
            r.map(
                0,
                6 * page_size(),
                MapSource::AnonymousPrivate,
                Protection::Read,
                None,
            )
        }),
        ("advise_huge_pages", |r, _| {
            r.advise_huge_pages(0, 6 * page_size(), memvisor_vmem::HugePageAdvice::Huge)
        }),
        ("discard", |r, _| {
            r.discard(2 * page_size(), 4 * page_size())
        }),
        ("purge", |r, _| r.purge(2 * page_size(), 2 * page_size())),
        ("free", |r, _| r.free(4 * page_size(), 2 * page_size())),
        ("prefault", |r, _| r.prefault(0, 4 * page_size())),
        ("prefault_read", |r, _| r.prefault_read(0, 6 * page_size())),
        ("bind_numa", |r, _| {
            r.bind_numa(
                0,
                6 * page_size(),
                memvisor_vmem::NumaPolicy::Preferred,
                &[0],
            )
        }),
        ("advise_dontfork", |r, _| {
            r.advise(0, 6 * page_size(), memvisor_vmem::Advice::DontFork)
        }),
    ]
}

/// The operations that make no system call inside the reservation from [`mixed`]'s state, in
/// the mode named: a sparse commit of uncommitted pages (they are read-write already) and an
/// unguard of a protected reservation (its guard and uncommitted pages are both
/// inaccessible). Every other operation must make at least one, or its refusals would check
/// nothing.
const NO_CALL: [(CommitMode, &str); 2] = [
    (CommitMode::Sparse, "commit_new"),
    (CommitMode::Protected, "unguard"),
];

/// The most calls one operation is refused in turn: more would be a loop the test stops
/// short of.
const MAX_CALLS: u64 = 32;

/// `state` without the access beneath guard pages, which no access reaches (a sparse guard
/// marker keeps whatever protection the page had).
fn beneath_guards_unseen(mut state: State) -> State {
    for page in &mut state.pages {
        if page.1 {
            page.2.clear();
        }
    }
    state
}

/// Whether `after` differs from `before` only as a refused decommit or guard of
/// [`DISCARDED`] may leave it: those pages unlocked, each committed as before or decommitted
/// (and then neither committed nor a guard page).
fn discarded_as_documented(before: &State, after: &State) -> bool {
    (0..PAGES).all(|i| {
        before.pages[i] == after.pages[i]
            || (DISCARDED.contains(&i) && !after.pages[i].0 && !after.pages[i].1)
    }) && after.locked_kib <= before.locked_kib
        && after.committed <= before.committed
}

/// Whether `after` is the access of a private anonymous page `before` raised to read-write.
fn raised_to_read_write(before: &str, after: &str) -> bool {
    before.ends_with("p 00:00") && after == "rw-p 00:00"
}

/// Whether `after` differs from `before` only as a refused decommit or guard of
/// [`DISCARDED`] whose undoing was refused too may leave it, as documented: as
/// [`discarded_as_documented`]; a page of that range counted a guard page (the guard's
/// undoing refused); or a page still committed (with its records) left read-write (a sparse
/// decommit raises it before the refusal, and giving it its access back is refused).
fn undoing_refused_as_documented(before: &State, after: &State, name: &str) -> bool {
    let (guard, decommit) = (name == "guard", name == "decommit");
    (0..PAGES).all(|i| {
        let (b, a) = (&before.pages[i], &after.pages[i]);
        b == a
            || (DISCARDED.contains(&i) && !a.0 && (guard || !a.1))
            || (DISCARDED.contains(&i)
                && decommit
                && a.0
                && !a.1
                && raised_to_read_write(&b.2, &a.2))
    }) && after.locked_kib <= before.locked_kib
        && after.committed <= before.committed
}

/// Refuses each call of each operation in turn; returns the number of refusals checked.
fn scenario(refuser: &Refuser) -> usize {
    // SAFETY: a valid C string.
    let fd = unsafe { libc::memfd_create(c"memvisor-refused".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor owned by nobody else.
    let memfd = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    memfd.set_len((8 * page_size()) as u64).unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for mode in [CommitMode::Protected, CommitMode::Sparse] {
        for (name, op) in operations() {
            // What the operation makes of the pages when nothing is refused.
            let clean = {
                let mut r = mixed(mode, &memfd);
                op(&mut r, &memfd).unwrap();
                state(&r)
            };
            // Calls of the operation refused in turn, up to a run that refused none (so every
            // call was reached).
            let turns = refuser.each_call_in_turn(&EACH_REFUSAL, MAX_CALLS, libc::ENOMEM, |turn| {
                let mut r = mixed(mode, &memfd);
                let before = state(&r);
                let range = r.as_ptr() as usize..r.as_ptr() as usize + r.len();
                let (result, refused) = turn.refuse(range, || op(&mut r, &memfd));
                if refused.is_none() {
                    assert!(result.is_ok(), "{mode:?} {name}: {result:?}");
                    return;
                }
                let from_on = turn.refusal == Refusal::FromNth;
                let after = state(&r);
                let what = format!("{mode:?} {name}, {turn}");
                match &result {
                    Err(Error::Os { source, .. }) if *source == OsError::from_raw(libc::ENOMEM) => {
                    }
                    other => failures.push(format!("{what}: got {other:?}")),
                }
                if from_on && DISCARDING.contains(&name) {
                    if !undoing_refused_as_documented(&before, &after, name) {
                        let pages: Vec<_> = (0..PAGES)
                            .filter(|&i| before.pages[i] != after.pages[i])
                            .map(|i| {
                                format!("page {i}: {:?} -> {:?}", before.pages[i], after.pages[i])
                            })
                            .collect();
                        failures.push(format!("{what}: state changed: {pages:?}"));
                    }
                } else if from_on {
                    // Undoing refused too: the documented outcomes differ by operation; the
                    // retry below must still end where a clean call does.
                } else if DISCARDING.contains(&name) && discarded_as_documented(&before, &after) {
                    // As documented: the range is unlocked, and decommitted or not.
                } else if after != before {
                    let pages: Vec<_> = (0..PAGES)
                        .filter(|&i| before.pages[i] != after.pages[i])
                        .map(|i| format!("page {i}: {:?} -> {:?}", before.pages[i], after.pages[i]))
                        .collect();
                    failures.push(format!(
                        "{what}: state changed: {pages:?}, committed {} -> {}, locked KiB {} -> {}",
                        before.committed, after.committed, before.locked_kib, after.locked_kib
                    ));
                }
                let again = op(&mut r, &memfd);
                if again.is_err() {
                    failures.push(format!("{what}: retry gave {again:?}"));
                } else if beneath_guards_unseen(state(&r)) != beneath_guards_unseen(clean.clone()) {
                    failures.push(format!(
                        "{what}: the retry left\n{:?}\nwhere a clean call leaves\n{clean:?}",
                        state(&r)
                    ));
                }
            });
            checked += turns.refused;
            assert!(
                turns.reached_end,
                "{mode:?} {name}: more than {MAX_CALLS} calls, not all refused"
            );
            let expected_none = NO_CALL.contains(&(mode, name));
            assert_eq!(
                turns.calls == 0,
                expected_none,
                "{mode:?} {name}: {} calls refused in turn",
                turns.calls
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    checked
}

#[test]
fn each_refused_call_leaves_the_reservation_as_it_was() {
    if std::env::var_os(CHILD).is_none() {
        if under_sanitizer() {
            eprintln!("SKIPPED: a sanitizer's runtime maps memory the filter would see");
            return;
        }
        in_child(
            "each_refused_call_leaves_the_reservation_as_it_was",
            CHILD,
            "refusals checked",
        );
        return;
    }
    let calls = [
        libc::SYS_mmap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_mlock,
        libc::SYS_mlock2,
        libc::SYS_munlock,
        libc::SYS_mbind,
    ];
    let Some(refuser) = Refuser::install(&calls) else {
        return;
    };
    let checked = scenario(&refuser);
    println!("{checked} refusals checked");
}
