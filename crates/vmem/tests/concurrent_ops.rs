//! Several threads commit, decommit, lock, unlock, protect, advise (and, on a host with more
//! than one NUMA node, bind) overlapping ranges of one shared reservation at once. Every call
//! must return a result its documentation allows, and once the threads are done the
//! reservation's own view (committed pages, protection, locks, residency, advice) must agree
//! with the system's (`/proc/self/smaps` and `mincore`).
#![cfg(all(target_os = "linux", not(miri)))]

use std::time::{Duration, Instant};

use memvisor_vmem::{
    Advice, CommitMode, Error, HugePageAdvice, NumaPolicy, Protection, Reservation, page_size,
};

/// Pages of the reservation; the threads work on `1..PAGES - 1`, the pages at either end stay
/// committed read-execute, so that the reservation's mappings never merge with a neighbour's.
const PAGES: usize = 24;
const THREADS: usize = 4;
const OPS_PER_ROUND: usize = 150;
/// How long each mode is stressed, in rounds of `THREADS * OPS_PER_ROUND` calls, each round
/// followed by the comparison.
const TIME_PER_MODE: Duration = Duration::from_secs(3);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Commit,
    Decommit,
    Lock,
    Unlock,
    Protect(Protection),
    Advise(Advice),
    AdviseHuge(HugePageAdvice),
    BindNuma,
}

fn pick(rng: &mut Rng, numa: bool) -> Op {
    const PROTECTIONS: [Protection; 5] = [
        Protection::None,
        Protection::Read,
        Protection::ReadWrite,
        Protection::ReadExecute,
        Protection::ReadWriteExecute,
    ];
    const ADVICE: [Advice; 4] = [
        Advice::DontFork,
        Advice::DoFork,
        Advice::DontDump,
        Advice::DoDump,
    ];
    loop {
        return match rng.below(8) {
            0 => Op::Commit,
            1 => Op::Decommit,
            2 => Op::Lock,
            3 => Op::Unlock,
            4 => Op::Protect(PROTECTIONS[rng.below(PROTECTIONS.len())]),
            5 => Op::Advise(ADVICE[rng.below(ADVICE.len())]),
            6 => Op::AdviseHuge(if rng.below(2) == 0 {
                HugePageAdvice::Huge
            } else {
                HugePageAdvice::NoHuge
            }),
            _ if numa => Op::BindNuma,
            _ => continue,
        };
    }
}

/// Whether `result` is one the documentation of `op` allows for a valid range of a reservation
/// without guard pages, far from every system limit, while other threads change the pages.
fn allowed(op: Op, result: &Result<(), Error>) -> bool {
    matches!(
        (op, result),
        (_, Ok(()))
            | (
                Op::Lock | Op::Unlock | Op::Protect(_),
                Err(Error::NotCommitted { .. })
            )
            | (Op::Lock, Err(Error::NotReadable { .. }))
    )
}

/// The nodes of the host's NUMA topology.
fn numa_nodes() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/sys/devices/system/node") else {
        return vec![];
    };
    dir.filter_map(|e| {
        e.ok()?
            .file_name()
            .to_str()?
            .strip_prefix("node")?
            .parse()
            .ok()
    })
    .collect()
}

/// What the system says about one page of the reservation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct SysPage {
    perms: String,
    locked: bool,
    dont_fork: bool,
    dont_dump: bool,
    huge: bool,
    no_huge: bool,
    resident: bool,
}

/// A mapping of `/proc/self/smaps` that lies wholly inside the reservation.
#[derive(Debug)]
struct Vma {
    first: usize,
    count: usize,
    rss: usize,
    locked: usize,
}

/// The system's view of every page of `r`, and its mappings that lie wholly inside it.
fn system_view(r: &Reservation) -> (Vec<SysPage>, Vec<Vma>) {
    let page = page_size();
    let base = r.as_ptr() as usize;
    let end = base + r.len();
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut pages = vec![SysPage::default(); PAGES];
    let mut seen = vec![false; PAGES];
    let mut vmas = Vec::new();
    let mut current: Option<(usize, usize, String, usize, usize)> = None;
    let mut finish = |vma: (usize, usize, String, usize, usize), flags: &str| {
        let (start, stop, perms, rss, locked) = vma;
        if stop <= base || start >= end {
            return;
        }
        let flags: Vec<&str> = flags.split_whitespace().collect();
        let has = |f: &str| flags.contains(&f);
        for p in (start.max(base) - base) / page..(stop.min(end) - base) / page {
            seen[p] = true;
            pages[p] = SysPage {
                perms: perms.clone(),
                locked: has("lo"),
                dont_fork: has("dc"),
                dont_dump: has("dd"),
                huge: has("hg"),
                no_huge: has("nh"),
                resident: false,
            };
        }
        if start >= base && stop <= end {
            vmas.push(Vma {
                first: (start - base) / page,
                count: (stop - start) / page,
                rss,
                locked,
            });
        }
    };
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            let perms = words.next().unwrap_or("").to_owned();
            current = Some((a, b, perms, 0, 0));
            continue;
        }
        let kb = || words.clone().next().and_then(|v| v.parse::<usize>().ok());
        match first {
            "Rss:" => current.as_mut().unwrap().3 = kb().unwrap() * 1024,
            "Locked:" => current.as_mut().unwrap().4 = kb().unwrap() * 1024,
            "VmFlags:" => {
                let flags = line.trim_start_matches("VmFlags:");
                finish(current.take().unwrap(), flags);
            }
            _ => {}
        }
    }
    assert!(seen.iter().all(|&s| s), "every page is mapped: {seen:?}");
    let mut vec = vec![0u8; PAGES];
    assert_eq!(
        // SAFETY: the reservation's range is mapped; `vec` holds a byte per page.
        unsafe { libc::mincore(r.as_ptr().cast(), r.len(), vec.as_mut_ptr()) },
        0
    );
    for (p, byte) in vec.iter().enumerate() {
        pages[p].resident = byte & 1 != 0;
    }
    (pages, vmas)
}

fn stress(r: &Reservation, seed: u64, numa: &[u32]) {
    let page = page_size();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            s.spawn(move || {
                let mut rng = Rng(seed ^ (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                for _ in 0..OPS_PER_ROUND {
                    let op = pick(&mut rng, numa.len() > 1);
                    let first = 1 + rng.below(PAGES - 2);
                    let count = 1 + rng.below((PAGES - 1 - first).min(6));
                    let (offset, len) = (first * page, count * page);
                    let result = match op {
                        Op::Commit => r.commit(offset, len),
                        // SAFETY: no thread reads or writes the reservation's memory while the
                        // threads run; only its bookkeeping and mappings change.
                        Op::Decommit => unsafe { r.decommit_unchecked(offset, len) },
                        Op::Lock => r.lock(offset, len),
                        Op::Unlock => r.unlock(offset, len),
                        // SAFETY: as for the decommit.
                        Op::Protect(p) => unsafe { r.protect_unchecked(offset, len, p) },
                        Op::Advise(a) => r.advise(offset, len, a),
                        Op::AdviseHuge(a) => r.advise_huge_pages(offset, len, a),
                        Op::BindNuma => r.bind_numa(
                            offset,
                            len,
                            NumaPolicy::Interleave,
                            &numa[..1 + rng.below(numa.len())],
                        ),
                    };
                    assert!(
                        allowed(op, &result),
                        "{op:?} of pages {first}+{count}: {result:?} (seed {seed:#x})"
                    );
                }
            });
        }
    });
}

/// Compares the reservation's view with the system's, then decommits the worked pages (in
/// [`CommitMode::Protected`] checking that the fresh pages get the advice the pages had).
/// Whether the system records `mlock` in `/proc/self/smaps` (a sanitizer's runtime may make
/// `mlock` do nothing): a read-execute edge page of `r` locked, looked at and unlocked.
fn system_records_locks(r: &Reservation) -> bool {
    let page = page_size();
    if r.lock(0, page).is_err() {
        return false;
    }
    let recorded = system_view(r).0[0].locked;
    r.unlock(0, page).unwrap();
    recorded
}

fn compare(r: &mut Reservation, seed: u64, locks_recorded: bool) {
    let page = page_size();
    let mode = r.mode();
    let (sys, vmas) = system_view(r);
    let ctx = |p: usize| format!("page {p} (seed {seed:#x}, {mode:?}): {:?}", sys[p]);

    let committed: Vec<bool> = (0..PAGES)
        .map(|p| r.is_committed(p * page, page).unwrap())
        .collect();
    assert_eq!(
        r.committed_bytes(),
        committed.iter().filter(|&&c| c).count() * page,
        "committed bytes (seed {seed:#x}, {mode:?})"
    );
    let residency = r.residency(0, r.len()).unwrap();
    assert_eq!(
        r.resident_pages(0, r.len()).unwrap(),
        residency.iter().filter(|&&x| x).count()
    );
    for p in 0..PAGES {
        // Nothing touches uncommitted pages, and the system's resident pages are committed.
        assert_eq!(residency[p], sys[p].resident, "residency of {}", ctx(p));
        if !committed[p] {
            assert!(!sys[p].locked, "uncommitted but locked: {}", ctx(p));
            let base = match mode {
                CommitMode::Protected => "---p",
                _ => "rw-p",
            };
            assert_eq!(sys[p].perms, base, "uncommitted {}", ctx(p));
        }
    }

    // Locks: discard refuses exactly the pages the reservation counts as locked.
    let mut locked = [false; PAGES];
    for p in 1..PAGES - 1 {
        if committed[p] {
            match r.discard(p * page, page) {
                Ok(()) => {}
                Err(Error::Locked { .. }) => locked[p] = true,
                other => panic!("discard of {}: {other:?}", ctx(p)),
            }
            if !locks_recorded {
                continue;
            }
            assert_eq!(locked[p], sys[p].locked, "lock of {}", ctx(p));
            if locked[p] {
                assert!(sys[p].resident, "locked but not resident: {}", ctx(p));
            }
        }
    }
    // A page populated for reading only maps the shared zero page: resident for `mincore`,
    // yet not counted in `Rss` or `Locked`. So the system's counts are at most the pages the
    // reservation says are resident, and locked.
    for vma in &vmas {
        let pages = vma.first..vma.first + vma.count;
        let resident = pages.clone().filter(|&p| residency[p]).count();
        let held = pages.clone().filter(|&p| locked[p]).count();
        assert!(
            vma.rss <= resident * page && vma.locked <= held * page && vma.locked <= vma.rss,
            "{vma:?}: {resident} pages resident, {held} locked (seed {seed:#x}, {mode:?})"
        );
    }

    // Protection: prefault refuses what the reservation counts as not writable, read
    // prefault what it counts as inaccessible.
    for p in 1..PAGES - 1 {
        if !committed[p] {
            continue;
        }
        let perms = sys[p].perms.as_bytes();
        let writable = !matches!(r.prefault(p * page, page), Err(Error::NotWritable { .. }));
        assert_eq!(writable, perms[1] == b'w', "writable {}", ctx(p));
        let readable = !matches!(
            r.prefault_read(p * page, page),
            Err(Error::NotReadable { .. })
        );
        assert_eq!(readable, perms[0] == b'r', "readable {}", ctx(p));
    }

    // Advice: a protected decommit maps fresh pages and gives them the advice the
    // reservation records, so their flags tell the record.
    let inner = (page, (PAGES - 2) * page);
    r.decommit(inner.0, inner.1).unwrap();
    if mode == CommitMode::Protected {
        let (after, _) = system_view(r);
        for p in 1..PAGES - 1 {
            let advice = |s: &SysPage| (s.dont_fork, s.dont_dump, s.huge, s.no_huge);
            assert_eq!(
                advice(&after[p]),
                advice(&sys[p]),
                "advice (DontFork, DontDump, Huge, NoHuge) recorded for {}",
                ctx(p)
            );
        }
    }
}

fn run(mode: CommitMode, numa: &[u32]) -> usize {
    let page = page_size();
    let mut r = Reservation::builder()
        .mode(mode)
        .reserve(PAGES * page)
        .unwrap();
    for edge in [0, PAGES - 1] {
        r.commit(edge * page, page).unwrap();
        r.protect(edge * page, page, Protection::ReadExecute)
            .unwrap();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let locks_recorded = system_records_locks(&r);
    if !locks_recorded {
        eprintln!("the system does not record mlock here: locks checked against discard only");
    }
    let mut seed = (now.as_secs() << 32) ^ u64::from(now.subsec_nanos()) | 1;
    let start = Instant::now();
    let mut rounds = 0;
    while start.elapsed() < TIME_PER_MODE {
        stress(&r, seed, numa);
        compare(&mut r, seed, locks_recorded);
        seed = Rng(seed).next();
        rounds += 1;
    }
    rounds
}

#[test]
fn concurrent_page_operations_agree_with_the_system() {
    let numa = numa_nodes();
    if numa.len() < 2 {
        eprintln!("one NUMA node: bind_numa left out");
    }
    // One test, one mode after the other: a second reservation mapped next to this one at the
    // same time could merge with its mappings.
    for mode in [CommitMode::Protected, CommitMode::Sparse] {
        let rounds = run(mode, &numa);
        eprintln!("{mode:?}: {rounds} rounds");
    }
}
