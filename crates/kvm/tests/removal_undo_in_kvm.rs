//! The dirty-log methods called while a removal of the region is under way, checked against
//! what KVM itself holds afterwards: `KVM_GET_DIRTY_LOG` on the slot's number (which KVM
//! answers only for a slot it has, and with `ENOENT` for one that does not log) and a guest
//! that writes pages before and after the removal. (Skipped under Miri, which cannot `ioctl`
//! `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;
use std::sync::Arc;

use kvm_bindings::{KVM_MEM_LOG_DIRTY_PAGES, kvm_userspace_memory_region};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use memvisor_kvm::{Error, MemorySlots};
use memvisor_space::RegionSpec;
use support::removal::{Answer, during_removal};
use support::{MIB, backed, backed_space, entry, kvm_or_skip, lost, page};
use vm_memory::{Bytes, GuestAddress};

/// KVM's answer to `KVM_GET_DIRTY_LOG` for `slot` (of `size` bytes, when KVM has it): `Ok` if
/// KVM has the slot and it logs, else the errno (`ENOENT` for no slot, or one that does not
/// log). The log it returns is dropped.
fn kvm_log(vm: &VmFd, slot: u32, size: u64) -> Result<(), i32> {
    vm.get_dirty_log(slot, usize::try_from(size).unwrap())
        .map(drop)
        .map_err(|e| e.errno())
}

#[test]
fn logging_turned_on_during_a_refused_removal_is_on_in_kvm_after_the_undo() {
    let Some(kvm) = kvm_or_skip("logging_turned_on_during_a_refused_removal") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = backed_space(
        &vm,
        [
            RegionSpec::ram(GuestAddress(0), MIB),
            RegionSpec::ram(GuestAddress(4 * MIB), 2 * MIB),
        ],
    );
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    let base = GuestAddress(4 * MIB);
    // The slot does not log: KVM has it, without a log.
    assert_eq!(kvm_log(&vm, 1, 2 * MIB), Err(libc::ENOENT));
    let removed = during_removal(&space, base, 2 * MIB, Answer::Refuse, || {
        assert!(!support::kvm_refuses_probe(&vm, 1, 64 * MIB), "slot 1 gone");
        // Not logging at the deletion: no log to fetch.
        let err = slots.fetch_dirty_log(base).unwrap_err();
        assert!(matches!(err, Error::DirtyLog { slot: 1, .. }), "{err:?}");
        slots.set_dirty_logging(base, true).unwrap();
        // On now, and clean: nothing is owed.
        assert_eq!(slots.fetch_dirty_log(base).unwrap().count(), 0);
    });
    assert!(!removed);
    assert_eq!(
        slots.registered(),
        [
            entry(&space, 0, 0, MIB, 0),
            entry(&space, 1, base.0, 2 * MIB, KVM_MEM_LOG_DIRTY_PAGES)
        ]
    );
    // KVM took the slot back with logging on.
    assert_eq!(kvm_log(&vm, 1, 2 * MIB), Ok(()));
    assert!(support::kvm_refuses_probe(&vm, 1, 64 * MIB));
    assert!(support::kvm_refuses_probe(&vm, 100, base.0));
    assert_eq!(slots.fetch_dirty_log(base).unwrap().count(), 0);
    assert!(slots.out_of_sync().is_empty());
}

#[test]
fn kvm_refusing_the_undo_after_calls_during_the_removal_leaves_the_region_out_of_sync() {
    let Some(kvm) = kvm_or_skip("kvm_refusing_the_undo_after_calls_during_the_removal") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = backed_space(&vm, [RegionSpec::ram(GuestAddress(4 * MIB), 2 * MIB)]);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    let base = GuestAddress(4 * MIB);
    let pages = 2 * MIB / page();
    slots.set_dirty_logging(base, true).unwrap();
    // A page of the later listener's own, registered over the region's first page before it
    // refuses: KVM then refuses to take the slot back.
    let own = backed(0, page());
    let mut probe = kvm_userspace_memory_region {
        slot: 100,
        flags: 0,
        guest_phys_addr: base.0,
        memory_size: page(),
        userspace_addr: own.host_ptr().unwrap() as u64,
    };
    let register = {
        let vm = Arc::clone(&vm);
        move || {
            // SAFETY: `own` outlives the slot, which is deleted below.
            unsafe { vm.set_user_memory_region(probe) }.unwrap();
        }
    };
    let removed = during_removal(
        &space,
        base,
        2 * MIB,
        Answer::RefuseAfter(Box::new(register)),
        || {
            assert_eq!(kvm_log(&vm, 0, 2 * MIB), Err(libc::ENOENT));
            assert_eq!(slots.fetch_dirty_log(base).unwrap().count(), pages);
            assert_eq!(slots.fetch_dirty_log(base).unwrap().count(), 0);
        },
    );
    assert!(!removed);
    // The space holds the region, KVM does not.
    assert!(slots.is_empty());
    assert_eq!(slots.out_of_sync(), [lost(0, base.0, 2 * MIB)]);
    assert_eq!(kvm_log(&vm, 0, 2 * MIB), Err(libc::ENOENT));
    assert!(!support::kvm_refuses_probe(&vm, 0, 64 * MIB));
    // The dirty-log methods act on the region as while its removal was under way: logging on
    // (turned on again), and nothing owed, since the fetch during the removal gave every page.
    slots.set_dirty_logging(base, true).unwrap();
    assert_eq!(slots.fetch_dirty_log(base).unwrap().count(), 0);
    assert_eq!(kvm_log(&vm, 0, 2 * MIB), Err(libc::ENOENT));
    // The listener's page leaves KVM; removed and inserted again, the region is a slot.
    probe.memory_size = 0;
    // SAFETY: deleting a slot refers to no memory.
    unsafe { vm.set_user_memory_region(probe) }.unwrap();
    let region = space.remove_region(base, 2 * MIB).unwrap();
    assert!(slots.out_of_sync().is_empty());
    space.insert_region(region).unwrap();
    assert_eq!(slots.registered(), [entry(&space, 0, base.0, 2 * MIB, 0)]);
    assert_eq!(kvm_log(&vm, 0, 2 * MIB), Err(libc::ENOENT));
    drop(own);
}

/// A vCPU in real mode at guest address 0 of `vm`.
fn real_mode_vcpu(vm: &VmFd) -> VcpuFd {
    let vcpu = vm.create_vcpu(0).unwrap();
    let mut sregs = vcpu.get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    sregs.ds.base = 0;
    sregs.ds.selector = 0;
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = 0;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();
    vcpu
}

/// Runs `vcpu` to its next `hlt`.
fn run_to_hlt(vcpu: &mut VcpuFd) {
    match vcpu.run().unwrap() {
        VcpuExit::Hlt => {}
        exit => panic!("unexpected exit {exit:?}"),
    }
}

#[test]
fn guest_writes_before_and_after_a_refused_removal_are_in_the_fetches() {
    let Some(kvm) = kvm_or_skip("guest_writes_before_and_after_a_refused_removal") else {
        return;
    };
    let vm = support::vm(&kvm);
    let space = backed_space(&vm, [RegionSpec::ram(GuestAddress(0), MIB)]);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    let base = GuestAddress(0);
    // mov byte [0x3000], 1; hlt; mov byte [0x5000], 1; hlt
    let code = [
        0xc6, 0x06, 0x00, 0x30, 0x01, 0xf4, 0xc6, 0x06, 0x00, 0x50, 0x01, 0xf4,
    ];
    space.memory().write_slice(&code, base).unwrap();
    slots.set_dirty_logging(base, true).unwrap();
    let mut vcpu = real_mode_vcpu(&vm);
    let page = page();
    for fetch_meanwhile in [true, false] {
        let mut reported = Vec::new();
        // The guest writes a page; no fetch follows before the removal starts.
        run_to_hlt(&mut vcpu);
        let removed = during_removal(&space, base, MIB, Answer::Refuse, || {
            if fetch_meanwhile {
                reported.extend(slots.fetch_dirty_log(base).unwrap().dirty_pages());
            }
        });
        assert!(!removed);
        assert_eq!(kvm_log(&vm, 0, MIB), Ok(()));
        reported.extend(slots.fetch_dirty_log(base).unwrap().dirty_pages());
        // Written after the undo: in KVM's log of the slot taken back.
        run_to_hlt(&mut vcpu);
        let after = slots.fetch_dirty_log(base).unwrap();
        assert_eq!(
            after.dirty_pages().collect::<Vec<_>>(),
            [GuestAddress(0x5000)]
        );
        reported.extend(after.dirty_pages());
        for written in [0x3000, 0x5000] {
            assert!(reported.contains(&GuestAddress(written)), "{written:#x}");
        }
        // Every page once, then the one written after.
        assert_eq!(reported.len() as u64, MIB / page + 1);
        assert_eq!(slots.fetch_dirty_log(base).unwrap().count(), 0);
        // Again from the start of the program.
        let mut regs = vcpu.get_regs().unwrap();
        regs.rip = 0;
        vcpu.set_regs(&regs).unwrap();
    }
}

#[test]
fn two_slots_of_one_space_each_keep_what_was_set_during_a_refused_removal() {
    let Some(kvm) = kvm_or_skip("two_slots_of_one_space_during_a_refused_removal") else {
        return;
    };
    let vms = [
        Arc::new(kvm.create_vm().unwrap()),
        Arc::new(kvm.create_vm().unwrap()),
    ];
    let space = backed_space(&vms[0], [RegionSpec::ram(GuestAddress(4 * MIB), 2 * MIB)]);
    let slots = vms
        .each_ref()
        .map(|vm| MemorySlots::attach(Arc::clone(vm), &space).unwrap());
    let base = GuestAddress(4 * MIB);
    let pages = 2 * MIB / page();
    for s in &slots {
        s.set_dirty_logging(base, true).unwrap();
    }
    let removed = during_removal(&space, base, 2 * MIB, Answer::Refuse, || {
        for vm in &vms {
            assert_eq!(kvm_log(vm, 0, 2 * MIB), Err(libc::ENOENT));
        }
        // Off in one; the other's log fetched.
        slots[0].set_dirty_logging(base, false).unwrap();
        assert_eq!(slots[1].fetch_dirty_log(base).unwrap().count(), pages);
    });
    assert!(!removed);
    assert_eq!(
        slots[0].registered(),
        [entry(&space, 0, base.0, 2 * MIB, 0)]
    );
    assert_eq!(
        slots[1].registered(),
        [entry(&space, 0, base.0, 2 * MIB, KVM_MEM_LOG_DIRTY_PAGES)]
    );
    assert_eq!(kvm_log(&vms[0], 0, 2 * MIB), Err(libc::ENOENT));
    assert_eq!(kvm_log(&vms[1], 0, 2 * MIB), Ok(()));
    assert!(matches!(
        slots[0].fetch_dirty_log(base),
        Err(Error::DirtyLog { .. })
    ));
    assert_eq!(slots[1].fetch_dirty_log(base).unwrap().count(), 0);
}
