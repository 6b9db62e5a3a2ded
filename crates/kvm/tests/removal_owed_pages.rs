//! The pages a removal owes (KVM dropped the slot's log with the slot, and a vCPU may have
//! written any page right up to the deletion) when logging is turned on again during the
//! removal or after its undo, on a VM in KVM's default mode and on one with manual dirty-log
//! protection; and a guest write while the removal is under way, which no log can hold since
//! KVM has no slot there. A real-mode guest writes the pages. (Skipped under Miri, which
//! cannot `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;

use std::sync::Arc;

use kvm_bindings::{KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, KVM_MEM_LOG_DIRTY_PAGES, kvm_enable_cap};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use memvisor_kvm::MemorySlots;
use memvisor_space::{AddressSpace, ListenerError, RegionEvent, RegionListener, RegionSpec};
use support::removal::{Answer, during_removal};
use support::{backed_space, kvm_or_skip};
use vm_memory::{Bytes, GuestAddress};

/// The guest's code, in a region of its own.
const CODE: u64 = 0;
const CODE_SIZE: u64 = 0x8000;
/// The region the guest writes, whose removals are refused.
const DATA: u64 = 0x8000;
const DATA_SIZE: u64 = 0x8000;

/// `mov byte [0x9000], 1; hlt; mov byte [0xa000], 1; hlt; mov byte [0xb000], 1; hlt`: one
/// page of [`DATA`] written per run.
const PROGRAM: [u8; 18] = [
    0xc6, 0x06, 0x00, 0x90, 0x01, 0xf4, 0xc6, 0x06, 0x00, 0xa0, 0x01, 0xf4, 0xc6, 0x06, 0x00, 0xb0,
    0x01, 0xf4,
];

/// A VM of the host's KVM (its TSS placed), in the default mode or with manual dirty-log
/// protection turned on (`None` where KVM does not offer it, said loudly).
fn vm(kvm: &Kvm, manual: bool, test: &str) -> Option<Arc<VmFd>> {
    let vm = support::vm(kvm);
    if manual {
        let cap = kvm_enable_cap {
            cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
            args: [1, 0, 0, 0],
            ..Default::default()
        };
        if let Err(e) = vm.enable_cap(&cap) {
            eprintln!("\n*** SKIPPED {test} (manual): no manual dirty-log protection ({e}) ***\n");
            return None;
        }
    }
    Some(vm)
}

/// The space of the two regions, the slots attached, logging on for [`DATA`], the program
/// loaded, and a real-mode vCPU at its start.
fn guest(vm: &Arc<VmFd>) -> (AddressSpace, MemorySlots, VcpuFd) {
    let space = backed_space(
        vm,
        [
            RegionSpec::ram(GuestAddress(CODE), CODE_SIZE),
            RegionSpec::ram(GuestAddress(DATA), DATA_SIZE),
        ],
    );
    let slots = MemorySlots::attach(Arc::clone(vm), &space).unwrap();
    space
        .memory()
        .write_slice(&PROGRAM, GuestAddress(CODE))
        .unwrap();
    slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
    let vcpu = vm.create_vcpu(0).unwrap();
    let mut sregs = vcpu.get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    sregs.ds.base = 0;
    sregs.ds.selector = 0;
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = CODE;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();
    (space, slots, vcpu)
}

/// Runs `vcpu` to its next `hlt`.
fn run_to_hlt(vcpu: &mut VcpuFd) {
    match vcpu.run().unwrap() {
        VcpuExit::Hlt => {}
        exit => panic!("unexpected exit {exit:?}"),
    }
}

/// The pages of [`DATA`] in the next fetch.
fn fetched(slots: &MemorySlots) -> Vec<GuestAddress> {
    slots
        .fetch_dirty_log(GuestAddress(DATA))
        .unwrap()
        .dirty_pages()
        .collect()
}

/// Whether the page at `page` is in `pages`.
fn has(pages: &[GuestAddress], page: u64) -> bool {
    pages.contains(&GuestAddress(page))
}

#[test]
fn logging_turned_on_again_during_a_refused_removal_keeps_the_pages_it_owes() {
    let test = "logging_turned_on_again_during_a_refused_removal";
    let Some(kvm) = kvm_or_skip(test) else {
        return;
    };
    for manual in [false, true] {
        let Some(vm) = vm(&kvm, manual, test) else {
            continue;
        };
        let (space, slots, mut vcpu) = guest(&vm);
        // The guest writes a page, and no fetch follows before KVM deletes the slot.
        run_to_hlt(&mut vcpu);
        let removed = during_removal(
            &space,
            GuestAddress(DATA),
            DATA_SIZE,
            Answer::Refuse,
            || {
                // On already: as made before the removal, this is the call that keeps KVM's
                // log with manual protection, and the log is the one KVM dropped.
                slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
            },
        );
        assert!(!removed);
        assert_eq!(
            slots.registered()[1],
            (1, DATA, DATA_SIZE, KVM_MEM_LOG_DIRTY_PAGES)
        );
        let after = fetched(&slots);
        assert!(has(&after, 0x9000), "manual {manual}: {after:?}");
        // Every page once (KVM cannot say which were written), then nothing.
        assert_eq!(after.len() as u64, DATA_SIZE / support::page());
        assert_eq!(fetched(&slots), [], "manual {manual}");
        // Off and on again during a removal does start clean: KVM drops its log with the
        // flag in both modes.
        run_to_hlt(&mut vcpu);
        let removed = during_removal(
            &space,
            GuestAddress(DATA),
            DATA_SIZE,
            Answer::Refuse,
            || {
                slots.set_dirty_logging(GuestAddress(DATA), false).unwrap();
                slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
            },
        );
        assert!(!removed);
        assert_eq!(fetched(&slots), [], "manual {manual}");
    }
}

#[test]
fn logging_turned_on_again_after_an_undone_removal_keeps_the_pages_it_owes() {
    let test = "logging_turned_on_again_after_an_undone_removal";
    let Some(kvm) = kvm_or_skip(test) else {
        return;
    };
    for manual in [false, true] {
        let Some(vm) = vm(&kvm, manual, test) else {
            continue;
        };
        let (space, slots, mut vcpu) = guest(&vm);
        run_to_hlt(&mut vcpu);
        let refusing: Arc<dyn RegionListener> =
            Arc::new(|_: &RegionEvent<'_>| -> Result<(), ListenerError> { Err("no".into()) });
        space.add_listener(Arc::clone(&refusing)).unwrap();
        assert!(space.remove_region(GuestAddress(DATA), DATA_SIZE).is_err());
        space.remove_listener(&refusing).unwrap();
        // The slot is back, and turned on again while on before the next fetch.
        slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
        let after = fetched(&slots);
        assert!(has(&after, 0x9000), "manual {manual}: {after:?}");
        assert_eq!(after.len() as u64, DATA_SIZE / support::page());
        if !manual {
            assert_eq!(fetched(&slots), []);
        }
    }
}

#[test]
fn a_guest_write_while_a_removal_is_under_way_exits_and_reaches_no_page_of_the_region() {
    let test = "a_guest_write_while_a_removal_is_under_way";
    let Some(kvm) = kvm_or_skip(test) else {
        return;
    };
    let Some(vm) = vm(&kvm, false, test) else {
        return;
    };
    let (space, slots, mut vcpu) = guest(&vm);
    let mut reported = Vec::new();
    run_to_hlt(&mut vcpu);
    let removed = during_removal(
        &space,
        GuestAddress(DATA),
        DATA_SIZE,
        Answer::Refuse,
        || {
            // KVM has no slot at the region: the guest's write exits to the VMM, and the
            // memory is not written, so the answer from the record (KVM's log is gone) can
            // miss no write made since the deletion.
            match vcpu.run().unwrap() {
                VcpuExit::MmioWrite(0xa000, [1]) => {}
                exit => panic!("unexpected exit {exit:?}"),
            }
            reported.extend(fetched(&slots));
            assert_eq!(fetched(&slots), []);
        },
    );
    assert!(!removed);
    let mut byte = [0u8];
    space
        .memory()
        .read_slice(&mut byte, GuestAddress(0xa000))
        .unwrap();
    assert_eq!(byte, [0], "the write exited; it reached no memory");
    assert!(has(&reported, 0x9000), "{reported:?}");
    assert_eq!(fetched(&slots), []);
    // The vCPU goes on past the write the VMM took, and writes the next page into the slot
    // that came back.
    run_to_hlt(&mut vcpu);
    run_to_hlt(&mut vcpu);
    assert_eq!(fetched(&slots), [GuestAddress(0xb000)]);
}
