//! A hot-pluggable region whose making fails and whose slot cannot be turned back into
//! reserved space (every system call from one on refused with `ENOMEM`, for real: a seccomp
//! filter's supervisor, memvisor-testkit's `refused_calls`) answers what is true of it: a plug
//! `Error::SlotNotRestored`, the slot kept claimed in the space that stays; `SpaceBuilder::back`
//! `Error::SlotNotRestoredWhileBacking`, as the space was never made and its window's
//! reservation goes with the error. Both keep the failed step as a typed error, its errno
//! kept. Run in a child process, as the filter cannot be removed; skipped under a sanitizer.
//! Linux on x86-64 only.
#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

use memvisor_space::{AddressSpace, Backing, Error, Layout, RegionSpec, WindowKind};
use memvisor_testkit::refused_calls::{Refuser, in_child, under_sanitizer};
use vm_memory::GuestAddress;

const CHILD: &str = "MEMVISOR_SPACE_SLOT_NOT_RESTORED_CHILD";
const MIB: u64 = 1 << 20;

fn layout() -> Layout {
    Layout::x86_64()
        .ram(1 << 30)
        .hotplug(1 << 30)
        .build()
        .unwrap()
}

fn hot_pluggable() -> RegionSpec {
    RegionSpec::ram(GuestAddress(1 << 32), 2 * MIB)
        .with_hotplug(true)
        .with_backing(Backing::Memfd)
        .with_dontfork(true)
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
        cause = e.source();
    }
    false
}

fn scenario(refuser: &Refuser) -> (usize, usize) {
    refuser.spare_heap(true);
    drop(AddressSpace::back(layout(), vec![hot_pluggable()]).unwrap());
    let (mut back_seen, mut plug_seen) = (0, 0);
    for n in 0..32 {
        refuser.refuse_from(0..usize::MAX, n, libc::ENOMEM);
        let result = AddressSpace::back(layout(), vec![hot_pluggable()]);
        let refused = refuser.lift();
        match result {
            Err(Error::SlotNotRestored { .. }) => {
                panic!("back, calls from {n} on refused: answered that the slot stays claimed")
            }
            Err(Error::SlotNotRestoredWhileBacking {
                base, size, cause, ..
            }) => {
                assert_eq!((base, size), (1 << 32, 2 * MIB));
                assert!(keeps_errno(&*cause, libc::ENOMEM), "{cause:?}");
                assert!(matches!(*cause, Error::Os { .. }), "{cause:?}");
                back_seen += 1;
            }
            _ => {}
        }
        if refused.is_none() {
            break;
        }
    }
    let window = layout()
        .windows_of(WindowKind::Hotplug)
        .next()
        .unwrap()
        .start();
    let spec = RegionSpec::ram(window, 2 * MIB)
        .with_hotplug(true)
        .with_backing(Backing::Memfd)
        .with_dontfork(true);
    for n in 0..32 {
        let (space, _) = AddressSpace::back(layout(), Vec::new()).unwrap();
        refuser.refuse_from(0..usize::MAX, n, libc::ENOMEM);
        let result = space.plug(spec.clone());
        let refused = refuser.lift();
        match result {
            Err(Error::SlotNotRestoredWhileBacking { .. }) => {
                panic!("plug, calls from {n} on refused: answered a failed back")
            }
            Err(Error::SlotNotRestored {
                base, size, cause, ..
            }) => {
                assert_eq!((base, size), (window.0, 2 * MIB));
                assert!(keeps_errno(&*cause, libc::ENOMEM), "{cause:?}");
                // As documented: the slot stays claimed until the space is dropped.
                assert!(
                    matches!(space.plug(spec.clone()), Err(Error::SlotBusy { .. })),
                    "plug, calls from {n} on refused: the slot was not kept claimed"
                );
                plug_seen += 1;
            }
            _ => {}
        }
        if refused.is_none() {
            break;
        }
    }
    (back_seen, plug_seen)
}

#[test]
fn slot_not_restored_says_whether_a_space_keeps_the_slot() {
    if std::env::var_os(CHILD).is_none() {
        if under_sanitizer() {
            eprintln!("SKIPPED: a sanitizer's runtime maps memory the filter would see");
            return;
        }
        in_child(
            "slot_not_restored_says_whether_a_space_keeps_the_slot",
            CHILD,
            "slots checked",
        );
        return;
    }
    let Some(refuser) = Refuser::install(&[libc::SYS_mmap, libc::SYS_madvise]) else {
        println!("slots checked: none, the kernel has no such filter");
        return;
    };
    let (back, plug) = scenario(&refuser);
    assert!(back > 0, "no back answered SlotNotRestoredWhileBacking");
    assert!(plug > 0, "no plug answered SlotNotRestored");
    println!("slots checked: {back} backs, {plug} plugs");
}
