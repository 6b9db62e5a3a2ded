//! A real-mode guest of two regions for tests of dirty logging around removals: its code in
//! one region ([`CODE`]), and a program writing one page of the other ([`DATA`]) per run.

use std::sync::Arc;

use kvm_bindings::{KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, kvm_enable_cap};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use memvisor_kvm::MemorySlots;
use memvisor_space::{AddressSpace, RegionSpec};
use vm_memory::{Bytes, GuestAddress};

use super::backed_space;

/// The guest's code, in a region of its own (slot 0).
pub const CODE: u64 = 0;
pub const CODE_SIZE: u64 = 0x8000;
/// The region the guest writes (slot 1).
pub const DATA: u64 = 0x8000;
pub const DATA_SIZE: u64 = 0x8000;

/// `mov byte [page], 1; hlt` for the pages `0x9000`, `0xa000`, `0xb000` and `0xc000` of
/// [`DATA`], in turn: one page written per run.
pub const PROGRAM: [u8; 24] = [
    0xc6, 0x06, 0x00, 0x90, 0x01, 0xf4, 0xc6, 0x06, 0x00, 0xa0, 0x01, 0xf4, 0xc6, 0x06, 0x00, 0xb0,
    0x01, 0xf4, 0xc6, 0x06, 0x00, 0xc0, 0x01, 0xf4,
];

/// A VM of the host's KVM, in the default mode or with manual dirty-log protection turned on
/// (`None` where KVM does not offer it, said loudly).
pub fn vm(kvm: &Kvm, manual: bool, test: &str) -> Option<Arc<VmFd>> {
    let vm = super::vm(kvm);
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

/// Runs `body` on a VM in KVM's default mode, then on one with manual dirty-log protection
/// turned on (`manual`), each skipped, said loudly, where the host does not offer it. The body
/// owns its VM, so that it can drop it before memory a slot of it refers to.
pub fn in_both_modes(test: &str, mut body: impl FnMut(Arc<VmFd>, bool)) {
    let Some(kvm) = super::kvm_or_skip(test) else {
        return;
    };
    for manual in [false, true] {
        if let Some(vm) = vm(&kvm, manual, test) {
            body(vm, manual);
        }
    }
}

/// The space of the two regions, the slots attached, logging on for [`DATA`], the program
/// loaded, and a real-mode vCPU at its start.
pub fn guest(vm: &Arc<VmFd>) -> (AddressSpace, MemorySlots, VcpuFd) {
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
pub fn run_to_hlt(vcpu: &mut VcpuFd) {
    match vcpu.run().unwrap() {
        VcpuExit::Hlt => {}
        exit => panic!("unexpected exit {exit:?}"),
    }
}
