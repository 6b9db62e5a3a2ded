//! Two `VmFd`s of one VM, both attached, where the kernel refuses `kcmp` (a seccomp filter on
//! the test's thread makes it fail with `EPERM`, as a sandbox may): `attach` cannot tell the two
//! descriptors apart, and the two `MemorySlots` undo each other's slots (changes refused, slots
//! missing, dirty-log fetches failing), as their rustdoc says. Memory stays safe all along: KVM
//! maps only memory a live `MemorySlots` holds, a fetch sized for one region never lets KVM
//! write the other's longer log past it, and the heap stays whole. (Run in release too; skipped
//! under Miri, which cannot `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd};
use std::sync::Arc;

use kvm_bindings::{KVM_MEM_LOG_DIRTY_PAGES, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VmFd};
use memvisor_kvm::{Error, MemorySlots, slot_limit};
use memvisor_space::{AddressSpace, Region, RegionSpec};
use support::{MIB, backed, entry, kvm_or_skip, layout};
use vm_memory::GuestAddress;

/// `kcmp`'s system call number on x86-64.
const SYS_KCMP: u32 = 312;
/// `AUDIT_ARCH_X86_64` (`<linux/audit.h>`): what a seccomp filter sees as the x86-64 ABI.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// Classic BPF opcodes (`<linux/bpf_common.h>`).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
/// Offsets in `struct seccomp_data`.
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;
/// The slot number of the probe that asks KVM whether it maps a guest address.
const PROBE_SLOT: u32 = 500;
/// Guest addresses the tests put regions at.
const PLACES: [u64; 4] = [0, 4 * MIB, 16 * MIB, 64 * MIB];

/// Makes `kcmp` fail with `EPERM` on this thread (and threads it starts), as a seccomp filter
/// of a sandbox may; every other system call is allowed.
fn deny_kcmp_on_this_thread() {
    let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let filter = [
        insn(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH),
        insn(BPF_JMP_JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
        insn(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
        insn(BPF_JMP_JEQ_K, 0, 1, SYS_KCMP),
        insn(
            BPF_RET_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::EPERM.cast_unsigned(),
        ),
        insn(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: u16::try_from(filter.len()).unwrap(),
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `prctl` reads `program` and its filter, both alive across the calls; the filter
    // only turns `kcmp` into an error, on this thread.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &raw const program,
            ),
            0,
            "{}",
            std::io::Error::last_os_error()
        );
    }
}

/// `kcmp(pid, pid, KCMP_FILE, a, b)`: 0 if `a` and `b` are the same open file, or `-errno`.
fn kcmp_files(a: i32, b: i32) -> i64 {
    let pid = libc::c_long::from(std::process::id().cast_signed());
    // SAFETY: compares two descriptors of this process; reads and writes no memory of ours.
    let ret = unsafe {
        libc::syscall(
            libc::c_long::from(SYS_KCMP),
            pid,
            pid,
            0 as libc::c_long,
            libc::c_long::from(a),
            libc::c_long::from(b),
        )
    };
    if ret < 0 {
        -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap())
    } else {
        ret
    }
}

/// A VM and a second `VmFd` of it, over a duplicate of its descriptor, with `kcmp` denied on
/// this thread; `None` if `test` is skipped.
fn vm_and_twin(test: &str) -> Option<(Arc<VmFd>, Arc<VmFd>)> {
    let kvm: Kvm = kvm_or_skip(test)?;
    let vm = Arc::new(kvm.create_vm().unwrap());
    // SAFETY: `vm` keeps its descriptor open while it is borrowed here.
    let dup = unsafe { BorrowedFd::borrow_raw(vm.as_raw_fd()) }
        .try_clone_to_owned()
        .unwrap();
    // SAFETY: `dup` is a fresh descriptor of a KVM VM, owned by nothing else.
    let twin = Arc::new(unsafe { kvm.create_vmfd_from_rawfd(dup.into_raw_fd()) }.unwrap());
    assert_eq!(kcmp_files(vm.as_raw_fd(), twin.as_raw_fd()), 0);
    deny_kcmp_on_this_thread();
    assert_eq!(
        kcmp_files(vm.as_raw_fd(), twin.as_raw_fd()),
        -i64::from(libc::EPERM)
    );
    Some((vm, twin))
}

/// An empty address space of the test layout.
fn space_for(vm: &VmFd) -> AddressSpace {
    AddressSpace::builder(layout())
        .slots(slot_limit(vm))
        .plan()
        .unwrap()
}

/// Whether KVM maps guest memory at `addr`: a one-page slot of our own there is refused exactly
/// when it overlaps a slot KVM has.
fn kvm_holds(vm: &VmFd, addr: u64) -> bool {
    let probe = Region::back(RegionSpec::ram(GuestAddress(0), 0x1000))
        .unwrap()
        .0;
    let mut mem = kvm_userspace_memory_region {
        slot: PROBE_SLOT,
        flags: 0,
        guest_phys_addr: addr,
        memory_size: 0x1000,
        userspace_addr: probe.host_ptr().unwrap() as u64,
    };
    // SAFETY: `probe`'s mapping is live, and the slot is deleted again right below (or was
    // never made).
    if unsafe { vm.set_user_memory_region(mem) }.is_err() {
        return true;
    }
    mem.memory_size = 0;
    // SAFETY: deleting a slot refers to no memory.
    unsafe { vm.set_user_memory_region(mem) }.unwrap();
    false
}

/// The places of [`PLACES`] KVM maps.
fn kvm_places(vm: &VmFd) -> Vec<u64> {
    PLACES.into_iter().filter(|&p| kvm_holds(vm, p)).collect()
}

/// Checks that every place KVM maps is the range of a region one of `live` lists as
/// registered (and so holds, its memory mapped); returns the places KVM maps.
fn kvm_maps_only_held(vm: &VmFd, live: &[&MemorySlots]) -> Vec<u64> {
    let mapped = kvm_places(vm);
    for &place in &mapped {
        assert!(
            live.iter().any(|slots| slots
                .registered()
                .iter()
                .any(|e| e.guest.contains(GuestAddress(place)))),
            "KVM maps {place:#x}, which no live MemorySlots holds"
        );
    }
    mapped
}

/// Checks that the heap still hands out and takes back memory intact.
fn heap_is_whole() {
    let filler: Vec<Vec<u8>> = (1..64).map(|n| vec![n; 32 * n as usize]).collect();
    assert!(
        filler
            .iter()
            .enumerate()
            .all(|(i, v)| v.iter().all(|&b| usize::from(b) == i + 1))
    );
}

/// The KVM error a refused change of the space carries.
fn kvm_error(err: &memvisor_space::Error) -> &Error {
    let memvisor_space::Error::Listener { source, .. } = err else {
        panic!("{err:?}");
    };
    source.downcast_ref::<Error>().unwrap()
}

#[test]
fn one_space_through_two_vm_fds_refuses_removals_and_keeps_memory_safe() {
    let Some((vm, twin)) = vm_and_twin("one_space_through_two_vm_fds") else {
        return;
    };
    let space = space_for(&vm);
    let first = backed(0, MIB);
    let second = backed(4 * MIB, MIB);
    space.insert_region(Arc::clone(&first)).unwrap();
    space.insert_region(Arc::clone(&second)).unwrap();
    let a = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    // The same `VmFd` is recognised; the twin is not, and its slots are the same as `a`'s,
    // which KVM takes again silently.
    assert!(matches!(
        MemorySlots::attach(Arc::clone(&vm), &space),
        Err(Error::AlreadyAttached { .. })
    ));
    let b = MemorySlots::attach(Arc::clone(&twin), &space).unwrap();
    let both = [
        entry(&space, 0, 0, MIB, 0),
        entry(&space, 1, 4 * MIB, MIB, 0),
    ];
    assert_eq!(a.registered(), both);
    assert_eq!(b.registered(), both);
    assert_eq!(kvm_maps_only_held(&vm, &[&a, &b]), [0, 4 * MIB]);

    // Changes refused: `a` deletes slot 1, `b`'s deletion of it finds none, and the space
    // undoes the removal (`a` takes the slot back).
    let generation = space.snapshot().generation();
    let err = space.remove_region(second.base(), MIB).unwrap_err();
    assert!(
        matches!(
            kvm_error(&err),
            Error::SetMemoryRegion {
                slot: 1,
                size: 0,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(space.snapshot().generation(), generation);
    assert_eq!(space.snapshot().len(), 2);
    assert_eq!(a.registered(), both);
    assert_eq!(b.registered(), both);
    assert_eq!(kvm_maps_only_held(&vm, &[&a, &b]), [0, 4 * MIB]);
    // One's dirty logging is the other's: KVM has one slot.
    b.set_dirty_logging(second.base(), true).unwrap();
    assert_eq!(a.fetch_dirty_log(second.base()).unwrap().count(), 0);
    heap_is_whole();

    // Slots missing: dropping `b` deletes every slot, `a`'s with them.
    drop(b);
    assert_eq!(kvm_maps_only_held(&vm, &[&a]), [0u64; 0]);
    assert_eq!(a.registered(), both);
    let err = a.fetch_dirty_log(second.base()).unwrap_err();
    assert!(matches!(err, Error::DirtyLog { slot: 1, .. }), "{err}");
    // Every removal is refused now (KVM has no slot to delete), and the region stays.
    let err = space.remove_region(first.base(), MIB).unwrap_err();
    assert!(
        matches!(
            kvm_error(&err),
            Error::SetMemoryRegion {
                slot: 0,
                size: 0,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(space.snapshot().len(), 2);
    // An insertion goes through, and a change of flags registers the slot again, with memory
    // `a` holds.
    space.insert_region(backed(16 * MIB, MIB)).unwrap();
    a.set_dirty_logging(first.base(), true).unwrap();
    assert_eq!(kvm_maps_only_held(&vm, &[&a]), [0, 16 * MIB]);
    assert_eq!(
        a.registered(),
        [
            entry(&space, 0, 0, MIB, KVM_MEM_LOG_DIRTY_PAGES),
            entry(&space, 1, 4 * MIB, MIB, 0),
            entry(&space, 2, 16 * MIB, MIB, 0)
        ]
    );

    // Dropping `a` deletes what KVM has; slot 1, which KVM lost, keeps its region for good.
    drop(a);
    assert_eq!(kvm_places(&vm), [0u64; 0]);
    space.remove_region(first.base(), MIB).unwrap();
    space.remove_region(second.base(), MIB).unwrap();
    assert_eq!(Arc::strong_count(&first), 1);
    assert_eq!(Arc::strong_count(&second), 2, "kept by the dropped slots");
    heap_is_whole();
}

#[test]
fn two_spaces_through_two_vm_fds_undo_each_others_slots_and_keep_memory_safe() {
    let Some((vm, twin)) = vm_and_twin("two_spaces_through_two_vm_fds") else {
        return;
    };
    // One region in both spaces: both register it as slot 0, the second silently.
    let shared = backed(0, MIB);
    let space_a = space_for(&vm);
    let space_b = space_for(&vm);
    space_a.insert_region(Arc::clone(&shared)).unwrap();
    space_b.insert_region(Arc::clone(&shared)).unwrap();
    let a = MemorySlots::attach(Arc::clone(&vm), &space_a).unwrap();
    let b = MemorySlots::attach(Arc::clone(&twin), &space_b).unwrap();
    assert_eq!(a.registered(), [entry(&space_a, 0, 0, MIB, 0)]);
    assert_eq!(b.registered(), [entry(&space_b, 0, 0, MIB, 0)]);
    assert_eq!(kvm_maps_only_held(&vm, &[&a, &b]), [0]);

    // `a` deletes slot 0: `b` still lists it, KVM has none.
    space_a.remove_region(shared.base(), MIB).unwrap();
    assert_eq!(kvm_maps_only_held(&vm, &[&a, &b]), [0u64; 0]);
    assert_eq!(b.registered(), [entry(&space_b, 0, 0, MIB, 0)]);
    let err = b.fetch_dirty_log(shared.base()).unwrap_err();
    assert!(matches!(err, Error::DirtyLog { slot: 0, .. }), "{err}");

    // `a` registers other memory under number 0; `b`'s removal of the shared region deletes
    // that slot, and releases the shared region, which KVM no longer maps.
    let own = backed(16 * MIB, MIB);
    space_a.insert_region(Arc::clone(&own)).unwrap();
    assert_eq!(a.registered(), [entry(&space_a, 0, 16 * MIB, MIB, 0)]);
    assert_eq!(kvm_maps_only_held(&vm, &[&a, &b]), [16 * MIB]);
    space_b.remove_region(shared.base(), MIB).unwrap();
    assert_eq!(b.registered(), []);
    assert_eq!(Arc::strong_count(&shared), 1);
    drop(shared);
    assert_eq!(kvm_maps_only_held(&vm, &[&a, &b]), [0u64; 0]);
    assert_eq!(a.registered(), [entry(&space_a, 0, 16 * MIB, MIB, 0)]);
    let err = a.fetch_dirty_log(own.base()).unwrap_err();
    assert!(matches!(err, Error::DirtyLog { slot: 0, .. }), "{err}");
    let err = space_a.remove_region(own.base(), MIB).unwrap_err();
    assert!(
        matches!(
            kvm_error(&err),
            Error::SetMemoryRegion {
                slot: 0,
                size: 0,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(space_a.snapshot().len(), 1);

    // `b` registers 64 MiB under number 0, logging: its log is 2 KiB, the one `a` sizes for its
    // region 32 bytes. `a`'s fetch fails where KVM's copy reaches past that, and writes nothing
    // past it; `a`'s change of flags is refused (KVM's slot 0 is other memory).
    let big = backed(64 * MIB, 64 * MIB);
    space_b.insert_region(Arc::clone(&big)).unwrap();
    b.set_dirty_logging(big.base(), true).unwrap();
    assert_eq!(kvm_maps_only_held(&vm, &[&a, &b]), [64 * MIB]);
    let err = a.fetch_dirty_log(own.base()).unwrap_err();
    let Error::DirtyLog {
        slot: 0, source, ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(source.errno(), libc::EFAULT, "{err}");
    let err = a.set_dirty_logging(own.base(), true).unwrap_err();
    assert!(
        matches!(err, Error::SetMemoryRegion { slot: 0, .. }),
        "{err}"
    );
    assert_eq!(a.registered(), [entry(&space_a, 0, 16 * MIB, MIB, 0)]);
    assert_eq!(b.fetch_dirty_log(big.base()).unwrap().count(), 0);
    heap_is_whole();

    // Dropping `a` deletes slot 0, `b`'s: KVM maps nothing, `b` still holds its region.
    drop(a);
    assert_eq!(kvm_maps_only_held(&vm, &[&b]), [0u64; 0]);
    assert!(b.fetch_dirty_log(big.base()).is_err());
    space_a.remove_region(own.base(), MIB).unwrap();
    assert_eq!(Arc::strong_count(&own), 1);
    // Dropping `b` finds no slot to delete: it keeps its region for good, as it would for
    // any deletion KVM refuses.
    drop(b);
    space_b.remove_region(big.base(), 64 * MIB).unwrap();
    assert_eq!(Arc::strong_count(&big), 2, "kept by the dropped slots");
    assert_eq!(kvm_places(&vm), [0u64; 0]);
    heap_is_whole();
}
