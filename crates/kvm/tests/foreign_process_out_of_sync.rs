//! A region out of sync (KVM refused to take its slot back after a later listener refused its
//! removal) used from a process other than the VM's creator (a forked child): KVM has no slot
//! for it in any process, so the dirty-log methods answer from its record there too, without
//! a call to KVM, and nothing the child does reaches the creating process's record or VM.
//! (Skipped under Miri, which cannot `ioctl` `/dev/kvm`.)
//!
//! The only test of its binary: it forks, and a child of a process with one thread (the
//! test's) runs no code another thread could have left half done.

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use kvm_bindings::kvm_userspace_memory_region;
use memvisor_kvm::{Error, MemorySlots};
use memvisor_space::{ChangeKind, ListenerError, RegionEvent, RegionListener, RegionSpec};
use support::{MIB, backed, backed_space, kvm_or_skip, lost};
use vm_memory::GuestAddress;

unsafe extern "C" {
    fn fork() -> i32;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    fn _exit(status: i32) -> !;
}

/// The slot number of the memory the later listener puts over the region.
const FOREIGN_SLOT: u32 = 100;

#[test]
fn region_out_of_sync_answers_from_its_record_in_another_process_and_changes_nothing_there() {
    let Some(kvm) = kvm_or_skip("region_out_of_sync_answers_from_its_record_in_another_process")
    else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = backed_space(&vm, [RegionSpec::ram(GuestAddress(0), MIB)]);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    slots.set_dirty_logging(GuestAddress(0), true).unwrap();
    // A later listener puts memory of its own over the region's range and refuses its
    // removal: KVM refuses to take the slot back.
    let memory = backed(0, MIB);
    let (v, m) = (Arc::clone(&vm), Arc::clone(&memory));
    let listener: Arc<dyn RegionListener> = Arc::new(
        move |event: &RegionEvent<'_>| -> Result<(), ListenerError> {
            if event.kind != ChangeKind::Removed {
                return Ok(());
            }
            let mem = kvm_userspace_memory_region {
                slot: FOREIGN_SLOT,
                flags: 0,
                guest_phys_addr: 0,
                memory_size: MIB,
                userspace_addr: m.host_ptr().unwrap() as u64,
            };
            // SAFETY: `memory` outlives the slot, which the test deletes before dropping it.
            unsafe { v.set_user_memory_region(mem) }.unwrap();
            Err("refused".into())
        },
    );
    space.add_listener(Arc::clone(&listener)).unwrap();
    assert!(space.remove_region(GuestAddress(0), MIB).is_err());
    space.remove_listener(&listener).unwrap();
    drop(listener);
    assert_eq!(slots.out_of_sync(), [lost(0, 0, MIB)]);

    // SAFETY: this process runs one thread (the test harness's main thread waits for this
    // one in a system call, holding no lock of ours or the allocator's), and the child ends
    // with `_exit`.
    let pid = unsafe { fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        std::panic::set_hook(Box::new(|info| {
            let _ = writeln!(std::io::stderr(), "in the child: {info}");
        }));
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            // KVM has no slot for the region here either: the record answers, every page
            // owed once, then nothing; logging off is `ENOENT`, as KVM answers.
            let dirty = slots.fetch_dirty_log(GuestAddress(0)).unwrap();
            assert_eq!(dirty.count(), dirty.pages());
            assert_eq!(slots.fetch_dirty_log(GuestAddress(0)).unwrap().count(), 0);
            slots.set_dirty_logging(GuestAddress(0), false).unwrap();
            assert!(matches!(
                slots.fetch_dirty_log(GuestAddress(0)),
                Err(Error::DirtyLog { slot: 0, .. })
            ));
            // Gone with the child: its slots, with nothing in KVM, keep no region.
            drop(slots);
        }));
        let code = i32::from(result.is_err());
        // SAFETY: ends the child without running the parent's destructors a second time.
        unsafe { _exit(code) }
    }
    let mut status = 0;
    // SAFETY: `status` is a valid `int` to write.
    assert_eq!(unsafe { waitpid(pid, &raw mut status, 0) }, pid);
    assert_eq!(
        status, 0,
        "the child's checks failed (wait status {status:#x})"
    );

    // The creating process's record is as it was: logging on, every page still owed.
    assert_eq!(slots.out_of_sync(), [lost(0, 0, MIB)]);
    let dirty = slots.fetch_dirty_log(GuestAddress(0)).unwrap();
    assert_eq!(dirty.count(), dirty.pages());
    let none = kvm_userspace_memory_region {
        slot: FOREIGN_SLOT,
        ..Default::default()
    };
    // SAFETY: deleting a slot refers to no memory.
    unsafe { vm.set_user_memory_region(none) }.unwrap();
    drop(slots);
    drop(vm);
    drop(memory);
}
