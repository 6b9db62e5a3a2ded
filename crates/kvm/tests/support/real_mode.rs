//! A real-mode guest of two regions for tests of dirty logging around removals: its code in
//! one region ([`CODE`]), and a program writing one page of the other ([`DATA`]) per run.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use kvm_bindings::{
    KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, KVMIO, kvm_clear_dirty_log,
    kvm_clear_dirty_log__bindgen_ty_1, kvm_enable_cap,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use memvisor_kvm::{DirtyBitmap, MemorySlots};
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

/// `KVM_CLEAR_DIRTY_LOG`: `_IOWR(KVMIO, 0xc0, struct kvm_clear_dirty_log)`.
const KVM_CLEAR_DIRTY_LOG: u64 = (3 << 30)
    | ((std::mem::size_of::<kvm_clear_dirty_log>() as u64) << 16)
    | ((KVMIO as u64) << 8)
    | 0xc0;

/// Clears the pages `dirty` names in KVM's log of slot `slot` and write-protects them again
/// (`KVM_CLEAR_DIRTY_LOG`), as a VMM with manual dirty-log protection does after a fetch.
///
/// # Errors
/// KVM's refusal (`ENOENT` while KVM has no logging slot under that number).
pub fn clear_dirty_log(vm: &VmFd, slot: u32, dirty: &DirtyBitmap) -> std::io::Result<()> {
    let mut words = dirty.words().to_vec();
    let clear = kvm_clear_dirty_log {
        slot,
        num_pages: u32::try_from(dirty.pages()).unwrap(),
        first_page: 0,
        __bindgen_anon_1: kvm_clear_dirty_log__bindgen_ty_1 {
            dirty_bitmap: words.as_mut_ptr().cast(),
        },
    };
    // SAFETY: KVM reads `clear` and the `words` it points to, which cover `num_pages` bits.
    let ret = unsafe {
        libc::ioctl(
            vm.as_raw_fd(),
            KVM_CLEAR_DIRTY_LOG as _,
            std::ptr::from_ref(&clear),
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
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
