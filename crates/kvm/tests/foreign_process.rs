//! A VM used from a process other than the one that created it: KVM answers every call on it
//! with `EIO` there (a forked child here; a descriptor passed over a socket is the same). Every
//! operation of the memory slots that reaches KVM fails with a typed error and changes nothing
//! (turning logging on while on reaches none), and the creating process's slots are untouched.
//! (Skipped under Miri, which cannot `ioctl` `/dev/kvm`.)
//!
//! The only test of its binary: it forks, and a child of a process with one thread (the
//! test's) runs no code another thread could have left half done.

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES;
use kvm_ioctls::VmFd;
use memvisor_kvm::{DirtyBitmap, Error, MemorySlots};
use memvisor_space::{AddressSpace, RegionSpec};
use support::{MIB, backed, backed_space, entry, kvm_or_skip};
use vm_memory::GuestAddress;

/// `EIO`: KVM's answer to a process whose memory is not the VM's.
const EIO: i32 = 5;

unsafe extern "C" {
    fn fork() -> i32;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    fn _exit(status: i32) -> !;
}

/// The OS error code of a KVM error's source.
fn errno(e: &Error) -> Option<i32> {
    std::error::Error::source(e)?
        .downcast_ref::<memvisor_kvm::KvmError>()
        .map(|e| e.errno())
}

/// The `memvisor_kvm::Error` a listener of `space` refused a change with.
fn listener_error(err: &memvisor_space::Error) -> &Error {
    let memvisor_space::Error::Listener { source, .. } = err else {
        panic!("not a listener's refusal: {err}");
    };
    source.downcast_ref::<Error>().unwrap()
}

/// Run in the child, where the VM of `vm` is another process's.
fn foreign(vm: &Arc<VmFd>, space: &AddressSpace, slots: MemorySlots) {
    let page = memvisor_vmem::page_size() as u64;
    let before = slots.registered();
    assert_eq!(before, [entry(space, 0, 0, MIB, KVM_MEM_LOG_DIRTY_PAGES)]);
    let generation = space.snapshot().generation();
    // KVM does not say how many slots the VM has: the documented default.
    assert_eq!(memvisor_kvm::slot_limit(vm), 32);

    // Dirty logging off: refused, the slot keeps its flags.
    let err = slots.set_dirty_logging(GuestAddress(0), false).unwrap_err();
    assert!(
        matches!(
            err,
            Error::SetMemoryRegion {
                slot: 0,
                base: 0,
                size: MIB,
                flags: 0,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(errno(&err), Some(EIO), "{err:?}");
    assert_eq!(slots.registered(), before);
    // On while on asks nothing of KVM (nothing changes): no error, and nothing changed.
    slots.set_dirty_logging(GuestAddress(0), true).unwrap();
    assert_eq!(slots.registered(), before);
    // Fetches: refused, and the bitmap passed in keeps its marks.
    let mut bitmap = DirtyBitmap::new(GuestAddress(0), MIB, page).unwrap();
    bitmap.mark(GuestAddress(3 * page), 1);
    let marked = bitmap.clone();
    let err = slots.fetch_dirty_log_into(&mut bitmap).unwrap_err();
    assert!(
        matches!(
            err,
            Error::DirtyLog {
                slot: 0,
                base: 0,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(bitmap, marked);
    assert!(matches!(
        slots.fetch_dirty_log(GuestAddress(0)),
        Err(Error::DirtyLog {
            slot: 0,
            base: 0,
            ..
        })
    ));

    // An insertion: refused, the space and the slots as they were.
    let err = space.insert_region(backed(4 * MIB, MIB)).unwrap_err();
    let kvm_err = listener_error(&err);
    assert!(
        matches!(
            kvm_err,
            Error::SetMemoryRegion {
                slot: 1,
                base: 0x40_0000,
                size: MIB,
                flags: 0,
                ..
            }
        ),
        "{kvm_err}"
    );
    assert_eq!(space.snapshot().generation(), generation);
    assert_eq!(space.snapshot().len(), 1);
    assert_eq!(slots.registered(), before);

    // A removal: KVM refuses the deletion, so the change is refused and nothing is lost.
    let err = space.remove_region(GuestAddress(0), MIB).unwrap_err();
    let kvm_err = listener_error(&err);
    assert!(
        matches!(
            kvm_err,
            Error::SetMemoryRegion {
                slot: 0,
                base: 0,
                size: 0,
                flags: KVM_MEM_LOG_DIRTY_PAGES,
                ..
            }
        ),
        "{kvm_err}"
    );
    assert_eq!(errno(kvm_err), Some(EIO), "{kvm_err:?}");
    assert_eq!(space.snapshot().generation(), generation);
    assert_eq!(slots.registered(), before);
    assert_eq!(slots.out_of_sync(), []);

    // Still attached here (the record came with the fork).
    assert!(matches!(
        MemorySlots::attach(Arc::clone(vm), space),
        Err(Error::AlreadyAttached { .. })
    ));

    // Dropped: KVM refuses to delete the slot, so its region stays mapped for good.
    let region = space.find_region(GuestAddress(0)).unwrap();
    let held = Arc::strong_count(&region);
    drop(slots);
    assert_eq!(Arc::strong_count(&region), held);

    // The VM is free again; attaching fails on the first slot, and leaves no listener behind.
    let err = MemorySlots::attach(Arc::clone(vm), space).unwrap_err();
    assert!(
        matches!(
            err,
            Error::SetMemoryRegion {
                slot: 0,
                base: 0,
                size: MIB,
                flags: 0,
                ..
            }
        ),
        "{err}"
    );
    space.remove_region(GuestAddress(0), MIB).unwrap();
}

#[test]
fn vm_of_another_process_refuses_every_operation_and_changes_nothing() {
    let Some(kvm) = kvm_or_skip("vm_of_another_process_refuses_every_operation") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = backed_space(&vm, [RegionSpec::ram(GuestAddress(0), MIB)]);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    slots.set_dirty_logging(GuestAddress(0), true).unwrap();
    let before = slots.registered();

    // SAFETY: this process runs one thread (the test harness's main thread waits for this
    // one in a system call, holding no lock of ours or the allocator's), and the child ends
    // with `_exit`.
    let pid = unsafe { fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // The harness's capture of panic messages does not reach the parent: say it here.
        std::panic::set_hook(Box::new(|info| {
            let _ = writeln!(std::io::stderr(), "in the child: {info}");
        }));
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| foreign(&vm, &space, slots)));
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

    // The creating process's VM and slots are as they were, and work.
    assert_eq!(slots.registered(), before);
    assert_eq!(slots.fetch_dirty_log(GuestAddress(0)).unwrap().count(), 0);
    space.insert_region(backed(4 * MIB, MIB)).unwrap();
    space.remove_region(GuestAddress(0), MIB).unwrap();
    assert_eq!(slots.registered(), [entry(&space, 1, 4 * MIB, MIB, 0)]);
}
