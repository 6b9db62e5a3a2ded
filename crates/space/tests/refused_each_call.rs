//! Every system call of backing an address space and of plugging a region refused in turn:
//! the first, then the second, ... `memfd_create`, `ftruncate`, `fcntl` (seals), fixed or file
//! `mmap`, `madvise`, `mbind` and thread start fails with `ENOMEM`, for real (a seccomp filter
//! whose supervisor counts the calls; memvisor-testkit's `refused_calls`), alone or with
//! every call after it. Each refusal must give an error that keeps the errno, leave nothing
//! mapped and no descriptor open (a plug: the snapshot and the hotplug slot as they were),
//! and the same call must succeed once the refusal is lifted. Run in a child process, as the
//! filter cannot be removed; skipped under a sanitizer. Linux on x86-64 only.
#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

use std::sync::Arc;

use memvisor_space::{
    AddressSpace, Backing, ChangeKind, Error, Layout, ListenerError, RegionEvent, RegionListener,
    RegionSpec, WindowKind,
};
use memvisor_testkit::refused_calls::{EACH_REFUSAL, Refusal, Refuser, in_child, under_sanitizer};
use vm_memory::GuestAddress;

const CHILD: &str = "MEMVISOR_SPACE_REFUSED_EACH_CALL_CHILD";
const MIB: u64 = 1 << 20;

/// The calls refused; `mmap` and `mprotect` only where the heap does not make them.
const CALLS: [libc::c_long; 9] = [
    libc::SYS_memfd_create,
    libc::SYS_ftruncate,
    libc::SYS_fcntl,
    libc::SYS_mmap,
    libc::SYS_madvise,
    libc::SYS_mbind,
    libc::SYS_clone3,
    libc::SYS_clone,
    libc::SYS_mlock,
];

/// The process's memfd mappings and open descriptors: what a refused backing must not leave.
fn leftovers() -> (Vec<String>, usize) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let memfds = maps
        .lines()
        .filter(|l| l.contains("/memfd:"))
        .map(str::to_owned)
        .collect();
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    (memfds, fds)
}

/// Whether `e`, or an error it comes from, carries `errno`.
fn keeps_errno(e: &(dyn std::error::Error + 'static), errno: i32) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.raw_os_error() == Some(errno)
        {
            return true;
        }
        if format!("{e:?}").contains(&format!("from_raw({errno})"))
            || format!("{e:?}").contains(&format!("code: {errno}"))
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Whether a refusal of call `nr` alone may go unreported: the query of a file's seals when
/// it is mapped, whose failure counts as no seals (a file that cannot be sealed answers so).
fn tolerated(nr: libc::c_long, from_on: bool) -> bool {
    nr == libc::SYS_fcntl && !from_on
}

fn specs() -> Vec<RegionSpec> {
    vec![
        RegionSpec::ram(GuestAddress(0), 4 * MIB)
            .with_backing(Backing::Memfd)
            .with_dontfork(true)
            .with_prefault_threads(2),
        RegionSpec::ram(GuestAddress(8 * MIB), 2 * MIB)
            .with_backing(Backing::AnonymousShared)
            .with_dirty_tracking(true),
        // In the hotplug window: its slot is given back as a plug's is.
        RegionSpec::ram(GuestAddress(1 << 32), 2 * MIB)
            .with_hotplug(true)
            .with_backing(Backing::Memfd)
            .with_dontfork(true),
    ]
}

fn layout() -> Layout {
    Layout::x86_64()
        .ram(1 << 30)
        .hotplug(1 << 30)
        .build()
        .unwrap()
}

fn scenario(refuser: &Refuser) -> usize {
    let mut failures = Vec::new();
    refuser.spare_heap(true);
    // Once without refusals, so that thread stacks and heap arenas are made.
    drop(AddressSpace::back(layout(), specs()).unwrap());
    let back = refuser.each_call_in_turn(&EACH_REFUSAL, 64, libc::ENOMEM, |turn| {
        let before = leftovers();
        let (result, refused) =
            turn.refuse(0..usize::MAX, || AddressSpace::back(layout(), specs()));
        let what = format!("back: {turn}");
        let Some(nr) = refused else {
            if let Err(e) = result {
                failures.push(format!("{what}: {e}"));
            }
            return;
        };
        let from_on = turn.refusal == Refusal::FromNth;
        match &result {
            Err(e) if keeps_errno(e, libc::ENOMEM) => {}
            Err(e) => failures.push(format!("{what}: the errno is lost: {e:?}")),
            Ok(_) if tolerated(nr, from_on) => {}
            Ok(_) => failures.push(format!("{what}: succeeded")),
        }
        drop(result);
        let after = leftovers();
        if after != before {
            failures.push(format!("{what}: left {after:?}, had {before:?}"));
        }
        if let Err(e) = AddressSpace::back(layout(), specs()) {
            failures.push(format!("{what}: retry gave {e}"));
        }
    });
    let window = layout()
        .windows_of(WindowKind::Hotplug)
        .next()
        .unwrap()
        .start();
    let plugged = || {
        RegionSpec::ram(window, 4 * MIB)
            .with_hotplug(true)
            .with_backing(Backing::Memfd)
            .with_dontfork(true)
            .with_prefault_threads(2)
    };
    let plug = refuser.each_call_in_turn(&EACH_REFUSAL, 64, libc::ENOMEM, |turn| {
        let before_space = leftovers();
        let (space, _) = AddressSpace::back(layout(), Vec::new()).unwrap();
        let before = space.snapshot();
        let (result, refused) = turn.refuse(0..usize::MAX, || space.plug(plugged()));
        let what = format!("plug: {turn}");
        let Some(nr) = refused else {
            if let Err(e) = result {
                failures.push(format!("{what}: {e}"));
            }
            return;
        };
        let from_on = turn.refusal == Refusal::FromNth;
        // As documented, a slot whose memory could not be turned back into reserved space
        // stays claimed (and mapped) until the address space is dropped.
        let mut slot_kept = false;
        match &result {
            Err(Error::SlotNotRestored { cause, .. })
                if from_on && keeps_errno(&**cause, libc::ENOMEM) =>
            {
                slot_kept = true;
            }
            Err(e) if keeps_errno(e, libc::ENOMEM) => {}
            Err(e) => failures.push(format!("{what}: the errno is lost: {e:?}")),
            Ok(_) if tolerated(nr, from_on) => {}
            Ok(_) => failures.push(format!("{what}: succeeded")),
        }
        let plugged_anyway = result.is_ok();
        drop(result);
        if plugged_anyway {
            drop(space.remove_region(window, 4 * MIB).unwrap());
        } else if !Arc::ptr_eq(&before, &space.snapshot()) {
            failures.push(format!("{what}: the snapshot changed"));
        }
        drop(before);
        if !slot_kept {
            match space.plug(plugged()) {
                Ok(_) => drop(space.remove_region(window, 4 * MIB).unwrap()),
                Err(e) => failures.push(format!("{what}: retry gave {e}")),
            }
        }
        drop(space);
        let after = leftovers();
        if after != before_space {
            failures.push(format!("{what}: left {after:?}, had {before_space:?}"));
        }
    });
    // A plug whose insertion a listener refuses gives its slot back as it gives back one
    // whose memory could not be made: a call of that giving back refused (with every call
    // after it, or alone) must answer `SlotNotRestored`, and any other error leave the slot
    // free for the next plug.
    let refused_plug = refuser.each_call_in_turn(&EACH_REFUSAL, 64, libc::ENOMEM, |turn| {
        let before_space = leftovers();
        let (space, _) = AddressSpace::back(layout(), Vec::new()).unwrap();
        let listener: Arc<dyn RegionListener> = Arc::new(RefusesInsertion);
        space.add_listener(Arc::clone(&listener)).unwrap();
        let before = space.snapshot();
        let (result, refused) = turn.refuse(0..usize::MAX, || space.plug(plugged()));
        let what = format!("plug refused by a listener: {turn}");
        let slot_kept = matches!(result, Err(Error::SlotNotRestored { .. }));
        match &result {
            Err(Error::Listener { .. } | Error::SlotNotRestored { .. }) => {}
            Err(e) if refused.is_some() && keeps_errno(e, libc::ENOMEM) => {}
            Err(e) => failures.push(format!("{what}: got {e:?}")),
            Ok(_) => failures.push(format!("{what}: succeeded")),
        }
        drop(result);
        if !Arc::ptr_eq(&before, &space.snapshot()) {
            failures.push(format!("{what}: the snapshot changed"));
        }
        drop(before);
        assert!(space.remove_listener(&listener).unwrap());
        if !slot_kept {
            match space.plug(plugged()) {
                Ok(_) => drop(space.remove_region(window, 4 * MIB).unwrap()),
                Err(e) => failures.push(format!("{what}: retry gave {e}")),
            }
        }
        drop(space);
        let after = leftovers();
        if after != before_space {
            failures.push(format!("{what}: left {after:?}, had {before_space:?}"));
        }
    });
    // Each operation had a call refused alone and with every call after it, and reached a run
    // with none refused: one that made no call, or more than the loop tried, is not checked
    // and must fail here.
    for (op, turns) in [
        ("back", back),
        ("plug", plug),
        ("plug refused by a listener", refused_plug),
    ] {
        assert!(turns.calls > 0, "{op}: no call was refused");
        assert!(
            turns.reached_end,
            "{op}: every run had a refusal, later calls untried"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    back.refused + plug.refused + refused_plug.refused
}

/// Refuses every insertion.
struct RefusesInsertion;

impl RegionListener for RefusesInsertion {
    fn region_changed(&self, event: &RegionEvent<'_>) -> Result<(), ListenerError> {
        match event.kind {
            ChangeKind::Inserted => Err("refused".into()),
            _ => Ok(()),
        }
    }
}

#[test]
fn each_refused_call_of_back_and_plug_leaves_nothing() {
    if std::env::var_os(CHILD).is_none() {
        if under_sanitizer() {
            eprintln!("SKIPPED: a sanitizer's runtime maps memory the filter would see");
            return;
        }
        in_child(
            "each_refused_call_of_back_and_plug_leaves_nothing",
            CHILD,
            "refusals checked",
        );
        return;
    }
    let Some(refuser) = Refuser::install(&CALLS) else {
        return;
    };
    let checked = scenario(&refuser);
    println!("{checked} refusals checked");
}
