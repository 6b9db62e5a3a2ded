//! Threads around `MemorySlots` on the host's real KVM: the types move and are shared as a
//! VMM needs; threads attaching one VM at once (through its `VmFd` and duplicates of its
//! descriptor) get one `MemorySlots` between them; and attaching and dropping (which take the
//! slots' state lock, then the space's writer lock) while other threads change the space
//! (writer lock, then the listeners' state locks) and ask the slots, never deadlocks. (Skipped
//! under Miri, which cannot `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;

use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use kvm_ioctls::{Kvm, VmFd};
use memvisor_kvm::{DirtyBitmap, Error, KvmError, MemorySlots};
use memvisor_space::{AddressSpace, RegionSpec};
use memvisor_testkit::watchdog::within;
use support::{MIB, SetOnDrop, backed, backed_space, kvm_or_skip, page};
use vm_memory::GuestAddress;

/// What a VMM shares between its control and vCPU threads: the slots (shared), their errors
/// and the bitmaps the logs are fetched into (sent).
#[test]
fn slots_errors_and_bitmaps_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<MemorySlots>();
    send_sync::<Arc<MemorySlots>>();
    send_sync::<DirtyBitmap>();
    send_sync::<Error>();
    send_sync::<KvmError>();
}

/// Another `VmFd` of `vm`'s VM: a duplicate of its descriptor.
fn duplicate(kvm: &Kvm, vm: &VmFd) -> Arc<VmFd> {
    // SAFETY: `vm` keeps its descriptor open while it is borrowed here.
    let fd = unsafe { BorrowedFd::borrow_raw(vm.as_raw_fd()) }
        .try_clone_to_owned()
        .unwrap();
    // SAFETY: `fd` is a fresh descriptor of a KVM VM, owned by nothing else.
    Arc::new(unsafe { kvm.create_vmfd_from_rawfd(fd.into_raw_fd()) }.unwrap())
}

/// `(slot, base, size)` of every backed region of the space.
fn space_slots(space: &AddressSpace) -> Vec<(u32, u64, u64)> {
    let snapshot = space.snapshot();
    let mut slots: Vec<_> = snapshot
        .regions_with_slots()
        .filter_map(|(r, slot)| Some((slot?, r.base().0, r.size())))
        .collect();
    slots.sort_unstable();
    slots
}

fn registered(slots: &MemorySlots) -> Vec<(u32, u64, u64)> {
    slots
        .registered()
        .into_iter()
        .map(|e| (e.slot, e.guest.start().0, e.guest.size().unwrap()))
        .collect()
}

#[test]
fn threads_attaching_one_vm_at_once_get_one_memory_slots() {
    let Some(kvm) = kvm_or_skip("threads_attaching_one_vm_at_once_get_one_memory_slots") else {
        return;
    };
    within("attaching threads", Duration::from_secs(30), move || {
        const THREADS: usize = 8;
        let vm = Arc::new(kvm.create_vm().unwrap());
        let space = backed_space(&vm, [RegionSpec::ram(GuestAddress(0), MIB)]);
        for round in 0..3 {
            // Half the threads through the `VmFd`, half through duplicates of its descriptor.
            let fds: Vec<Arc<VmFd>> = (0..THREADS)
                .map(|t| {
                    if t % 2 == 0 {
                        Arc::clone(&vm)
                    } else {
                        duplicate(&kvm, &vm)
                    }
                })
                .collect();
            let start = Arc::new(Barrier::new(THREADS));
            let threads: Vec<_> = fds
                .into_iter()
                .map(|fd| {
                    let (space, start) = (space.clone(), Arc::clone(&start));
                    std::thread::spawn(move || {
                        start.wait();
                        match MemorySlots::attach(Arc::clone(&fd), &space) {
                            Ok(slots) => Some(slots),
                            Err(Error::AlreadyAttached { vm_fd }) => {
                                assert_eq!(vm_fd, fd.as_raw_fd());
                                None
                            }
                            Err(e) => panic!("attach: {e}"),
                        }
                    })
                })
                .collect();
            let mut winners: Vec<MemorySlots> = threads
                .into_iter()
                .filter_map(|t| t.join().unwrap())
                .collect();
            assert_eq!(winners.len(), 1, "round {round}: one attach wins");
            let slots = winners.pop().unwrap();
            assert_eq!(registered(&slots), space_slots(&space));
            // The winner follows the space; the losers left nothing behind.
            let base = GuestAddress(4 * MIB);
            space.insert_region(backed(base.0, MIB)).unwrap();
            assert_eq!(registered(&slots), space_slots(&space));
            space.remove_region(base, MIB).unwrap();
            assert_eq!(registered(&slots), space_slots(&space));
            drop(slots);
        }
    });
}

#[test]
fn attach_and_drop_beside_changes_and_queries_never_deadlock() {
    let Some(kvm) = kvm_or_skip("attach_and_drop_beside_changes_and_queries_never_deadlock") else {
        return;
    };
    within("attach and drop", Duration::from_secs(30), move || {
        let vm = Arc::new(kvm.create_vm().unwrap());
        let other_vm = Arc::new(kvm.create_vm().unwrap());
        let space = backed_space(&vm, [RegionSpec::ram(GuestAddress(0), MIB)]);
        let slots = Arc::new(MemorySlots::attach(Arc::clone(&vm), &space).unwrap());
        slots.set_dirty_logging(GuestAddress(0), true).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let bases = [4 * MIB, 8 * MIB];
        let small = page();
        // Changes: writer lock, then each listener's state lock.
        let changer = {
            let (space, done) = (space.clone(), Arc::clone(&done));
            std::thread::spawn(move || {
                // Set when the changes end, or fail: the other threads run until then.
                let _done = SetOnDrop(done);
                for i in 0..60u64 {
                    let base = bases[(i % 2) as usize];
                    if space.find_region(GuestAddress(base)).is_some() {
                        space.remove_region(GuestAddress(base), small).unwrap();
                    } else {
                        space.insert_region(backed(base, small)).unwrap();
                    }
                }
            })
        };
        // Attach (state lock, then writer lock) and drop (writer lock) of a second VM's slots.
        let attacher = {
            let (space, done, other_vm) = (space.clone(), Arc::clone(&done), Arc::clone(&other_vm));
            std::thread::spawn(move || {
                let mut attached = 0usize;
                while !done.load(Ordering::SeqCst) || attached == 0 {
                    let other = MemorySlots::attach(Arc::clone(&other_vm), &space).unwrap();
                    // The snapshot may have moved on since the attach; it never goes back.
                    assert!(!other.is_empty());
                    drop(other);
                    attached += 1;
                }
                attached
            })
        };
        // Queries of the first VM's slots: state lock only, and the log buffer's after it. At
        // least one round runs, even when the changer ends before this thread is scheduled.
        let asked = Arc::new(AtomicUsize::new(0));
        let querier = {
            let (slots, done, asked) = (Arc::clone(&slots), Arc::clone(&done), Arc::clone(&asked));
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) || asked.load(Ordering::Relaxed) == 0 {
                    assert_eq!(slots.fetch_dirty_log(GuestAddress(0)).unwrap().count(), 0);
                    for base in bases {
                        match slots.set_dirty_logging(GuestAddress(base), true) {
                            Ok(()) | Err(Error::NotRegistered { .. }) => {}
                            Err(e) => panic!("set_dirty_logging: {e}"),
                        }
                        match slots.fetch_dirty_log(GuestAddress(base)) {
                            Ok(_) | Err(Error::NotRegistered { .. } | Error::DirtyLog { .. }) => {}
                            Err(e) => panic!("fetch_dirty_log: {e}"),
                        }
                    }
                    assert!(slots.out_of_sync().is_empty());
                    let _ = slots.slot_at(GuestAddress(0));
                    asked.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        // Stops the other threads when this one fails too, where they would run on for ever
        // beside the test binary's later tests.
        let _stopping = SetOnDrop(Arc::clone(&done));
        changer.join().unwrap();
        assert!(attacher.join().unwrap() > 0);
        querier.join().unwrap();
        assert!(asked.load(Ordering::Relaxed) > 0);
        assert_eq!(registered(&slots), space_slots(&space));
        // The second VM's slots all went with their `MemorySlots`: attaching again takes it.
        let again = MemorySlots::attach(other_vm, &space).unwrap();
        assert_eq!(registered(&again), space_slots(&space));
    });
}
