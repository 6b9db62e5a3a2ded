//! A tiny 64-bit guest of our own, and the VM around it, for tests on the host's real KVM.
//!
//! The host identity-maps the first 8 GiB with 2 MiB pages and starts the vCPU in long mode
//! at [`CODE`]. The guest walks a table of `(base, pages)` entries at [`TABLE`] (ended by a
//! zero page count); for every page it checks the host's word at offset `0xff0`
//! (`address ^ HOST_MAGIC`), writes its own word at offset `0xff8` (`address ^ GUEST_MAGIC`),
//! then reports a finished pass with `out 0x10` and starts over. A wrong host word is reported
//! with `out 0x11` after storing the page's address at [`RESULT`].

#![allow(dead_code, clippy::cast_possible_truncation)]

pub mod linux;
pub mod real_mode;
pub mod removal;
mod running;
mod set_on_drop;

use std::sync::Arc;

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, kvm_segment};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use memvisor_kvm::{OutOfSyncRegion, RegisteredSlot, slot_limit};
use memvisor_space::{AddressSpace, GuestRange, Layout, Region, RegionSpec};
#[allow(unused_imports)]
pub use running::Running;
#[allow(unused_imports)]
pub use set_on_drop::SetOnDrop;
use vm_memory::{Bytes, GuestAddress};

pub const PAGE: u64 = 0x1000;
pub const PML4: u64 = 0x1000;
pub const PDPT: u64 = 0x2000;
/// Eight page directories, one per GiB.
pub const PD: u64 = 0x3000;
pub const TABLE: u64 = 0xb000;
pub const RESULT: u64 = 0xbf00;
pub const CODE: u64 = 0xc000;
/// Identity-mapped guest physical memory.
pub const MAPPED: u64 = 8 << 30;
pub const HOST_MAGIC: u64 = 0x4848_4848_4848_4848;
pub const GUEST_MAGIC: u64 = 0x4747_4747_4747_4747;
/// Where KVM's TSS pages go (inside the x86-64 preset's reserved window, no RAM there).
pub const TSS: usize = 0xfffb_d000;
pub const PORT_PASS: u16 = 0x10;
pub const PORT_BAD: u16 = 0x11;

/// The guest program (`as` output of the loop the module docs describe).
#[rustfmt::skip]
pub const PROGRAM: &[u8] = &[
    0x49, 0xb8, 0x48, 0x48, 0x48, 0x48, 0x48, 0x48, 0x48, 0x48, // start: movabs r8, HOST_MAGIC
    0x49, 0xb9, 0x47, 0x47, 0x47, 0x47, 0x47, 0x47, 0x47, 0x47, //   movabs r9, GUEST_MAGIC
    0xbe, 0x00, 0xb0, 0x00, 0x00,                               //   mov esi, TABLE
    0x48, 0x8b, 0x3e,                                           // region: mov rdi, [rsi]
    0x48, 0x8b, 0x4e, 0x08,                                     //   mov rcx, [rsi + 8]
    0x48, 0x85, 0xc9,                                           //   test rcx, rcx
    0x74, 0x2e,                                                 //   jz done
    0x48, 0x83, 0xc6, 0x10,                                     //   add rsi, 16
    0x48, 0x89, 0xf8,                                           // page: mov rax, rdi
    0x4c, 0x31, 0xc0,                                           //   xor rax, r8
    0x48, 0x3b, 0x87, 0xf0, 0x0f, 0x00, 0x00,                   //   cmp rax, [rdi + 0xff0]
    0x75, 0x1f,                                                 //   jne bad
    0x48, 0x89, 0xf8,                                           //   mov rax, rdi
    0x4c, 0x31, 0xc8,                                           //   xor rax, r9
    0x48, 0x89, 0x87, 0xf8, 0x0f, 0x00, 0x00,                   //   mov [rdi + 0xff8], rax
    0x48, 0x81, 0xc7, 0x00, 0x10, 0x00, 0x00,                   //   add rdi, 0x1000
    0x48, 0xff, 0xc9,                                           //   dec rcx
    0x75, 0xd8,                                                 //   jnz page
    0xeb, 0xc6,                                                 //   jmp region
    0xe6, 0x10,                                                 // done: out 0x10, al
    0xeb, 0xa9,                                                 //   jmp start
    0x48, 0x89, 0x3c, 0x25, 0x00, 0xbf, 0x00, 0x00,             // bad: mov [RESULT], rdi
    0xe6, 0x11,                                                 //   out 0x11, al
    0xf4,                                                       //   hlt
];

/// One mebibyte.
pub const MIB: u64 = 1 << 20;

/// The entry `MemorySlots::registered` lists for KVM's slot `slot` over the region of `space`
/// at `base` (its host address is that region's mapping).
pub fn entry(space: &AddressSpace, slot: u32, base: u64, size: u64, flags: u32) -> RegisteredSlot {
    let region = space
        .snapshot()
        .find_arc(GuestAddress(base))
        .unwrap_or_else(|| panic!("no region at {base:#x}"));
    RegisteredSlot::new(
        slot,
        GuestRange::new(GuestAddress(base), size).unwrap(),
        region.host_ptr().unwrap() as u64,
        flags,
    )
}

/// The entry `MemorySlots::out_of_sync` lists for the region at `base`, of memory slot `slot`.
pub fn lost(slot: u32, base: u64, size: u64) -> OutOfSyncRegion {
    OutOfSyncRegion::new(slot, GuestRange::new(GuestAddress(base), size).unwrap())
}

/// The x86-64 layout the slot tests use: 1 GiB of boot RAM and a 1 GiB hotplug window.
pub fn layout() -> Layout {
    Layout::x86_64()
        .ram(1 << 30)
        .hotplug(1 << 30)
        .build()
        .unwrap()
}

/// Opens `/dev/kvm`, or says loudly why the test is skipped.
pub fn kvm_or_skip(test: &str) -> Option<Kvm> {
    match Kvm::new() {
        Ok(kvm) => Some(kvm),
        Err(e) => {
            eprintln!("\n*** SKIPPED {test}: /dev/kvm is not usable here ({e}) ***\n");
            None
        }
    }
}

/// A VM with KVM's TSS placed.
pub fn vm(kvm: &Kvm) -> Arc<VmFd> {
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    vm.set_tss_address(TSS).expect("KVM_SET_TSS_ADDR");
    Arc::new(vm)
}

/// The host word of the page at `page`.
pub fn host_word(page: u64) -> u64 {
    page ^ HOST_MAGIC
}

/// The guest word of the page at `page`.
pub fn guest_word(page: u64) -> u64 {
    page ^ GUEST_MAGIC
}

/// Writes the page tables, the program and an empty table into low RAM (which must hold the
/// first 64 KiB).
pub fn load_program(space: &AddressSpace) {
    let mem = space.memory();
    // PML4[0] -> PDPT, PDPT[i] -> PD i: present, writable, accessed.
    mem.write_obj(PDPT | 0x23, GuestAddress(PML4)).unwrap();
    for gib in 0..MAPPED >> 30 {
        let pd = PD + gib * PAGE;
        mem.write_obj(pd | 0x23, GuestAddress(PDPT + gib * 8))
            .unwrap();
        for i in 0..512u64 {
            // 2 MiB page, present, writable, accessed, dirty: the CPU never writes these.
            let entry = (gib << 30) | (i << 21) | 0xe3;
            mem.write_obj(entry, GuestAddress(pd + i * 8)).unwrap();
        }
    }
    mem.write_slice(PROGRAM, GuestAddress(CODE)).unwrap();
    mem.write_slice(&[0u8; 0xf00], GuestAddress(TABLE)).unwrap();
}

/// Sets the table to `entries` (`(base, pages)`), ended by a zero entry.
pub fn set_table(space: &AddressSpace, entries: &[(u64, u64)]) {
    assert!(entries.len() < 0xf0, "table too long");
    let mem = space.memory();
    for (i, &(base, pages)) in entries.iter().enumerate() {
        let at = TABLE + i as u64 * 16;
        mem.write_obj(base, GuestAddress(at)).unwrap();
        mem.write_obj(pages, GuestAddress(at + 8)).unwrap();
    }
    let end = TABLE + entries.len() as u64 * 16;
    mem.write_obj(0u64, GuestAddress(end + 8)).unwrap();
}

/// Appends one entry after the `len` present ones: the base first, then the page count, so a
/// guest running meanwhile sees either the old end or the whole entry.
pub fn append_entry(space: &AddressSpace, len: usize, base: u64, pages: u64) {
    let mem = space.memory();
    let at = TABLE + len as u64 * 16;
    mem.write_obj(0u64, GuestAddress(at + 24)).unwrap();
    mem.write_obj(base, GuestAddress(at)).unwrap();
    mem.write_obj(pages, GuestAddress(at + 8)).unwrap();
}

/// Writes the host word into every page of `base..base + size`.
pub fn fill_host_words(space: &AddressSpace, base: u64, size: u64) {
    let mem = space.memory();
    for page in (base..base + size).step_by(PAGE as usize) {
        mem.write_obj(host_word(page), GuestAddress(page + 0xff0))
            .unwrap();
    }
}

/// Reads `size` bytes at `base` through memvisor.
pub fn read(space: &AddressSpace, base: u64, size: u64) -> Vec<u8> {
    let mut out = vec![0; size as usize];
    space
        .memory()
        .read_slice(&mut out, GuestAddress(base))
        .unwrap();
    out
}

/// `before` with the guest word written into every page.
pub fn expected_after_guest(base: u64, before: &[u8]) -> Vec<u8> {
    let mut out = before.to_vec();
    for (i, page) in out.chunks_mut(PAGE as usize).enumerate() {
        let addr = base + i as u64 * PAGE;
        page[0xff8..].copy_from_slice(&guest_word(addr).to_le_bytes());
    }
    out
}

/// A vCPU in 64-bit mode at [`CODE`].
pub fn vcpu(kvm: &Kvm, vm: &VmFd) -> VcpuFd {
    let vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .expect("KVM_GET_SUPPORTED_CPUID");
    vcpu.set_cpuid2(&cpuid).expect("KVM_SET_CPUID2");
    let mut sregs = vcpu.get_sregs().expect("KVM_GET_SREGS");
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x8,
        type_: 11,
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        ..Default::default()
    };
    let data = kvm_segment {
        selector: 0x10,
        type_: 3,
        db: 1,
        l: 0,
        ..code
    };
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.cr3 = PML4;
    sregs.cr4 = 1 << 5; // PAE
    sregs.cr0 = 1 | (1 << 4) | (1 << 31); // PE, ET, PG
    sregs.efer = (1 << 8) | (1 << 10); // LME, LMA
    vcpu.set_sregs(&sregs).expect("KVM_SET_SREGS");
    let mut regs = vcpu.get_regs().expect("KVM_GET_REGS");
    regs.rip = CODE;
    regs.rflags = 2;
    vcpu.set_regs(&regs).expect("KVM_SET_REGS");
    vcpu
}

/// How a run of the guest ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// `stop` said so after this many passes.
    Passes(u64),
    /// The guest found a wrong host word in the page at this address.
    BadHostWord(u64),
    /// An access to guest memory without a memory slot.
    Mmio(u64),
    /// Anything else.
    Other(String),
}

/// Runs the guest until `stop(passes)` is true after a pass, or it stops otherwise.
pub fn run(vcpu: &mut VcpuFd, space: &AddressSpace, mut stop: impl FnMut(u64) -> bool) -> Stop {
    let mut passes = 0;
    loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(PORT_PASS, _)) => {
                passes += 1;
                if stop(passes) {
                    return Stop::Passes(passes);
                }
            }
            Ok(VcpuExit::IoOut(PORT_BAD, _)) => {
                return Stop::BadHostWord(space.memory().read_obj(GuestAddress(RESULT)).unwrap());
            }
            Ok(VcpuExit::MmioRead(addr, _) | VcpuExit::MmioWrite(addr, _)) => {
                return Stop::Mmio(addr);
            }
            Ok(other) => return Stop::Other(format!("{other:?}")),
            Err(e) if e.errno() == libc_eintr() => {}
            Err(e) => return Stop::Other(format!("KVM_RUN: {e}")),
        }
    }
}

fn libc_eintr() -> i32 {
    4
}

/// An address space of the test layout with `regions` backed, and as many slot numbers as `vm`
/// accepts.
pub fn backed_space(vm: &VmFd, regions: impl IntoIterator<Item = RegionSpec>) -> AddressSpace {
    regions
        .into_iter()
        .fold(
            AddressSpace::builder(layout()).slots(slot_limit(vm)),
            memvisor_space::SpaceBuilder::region,
        )
        .back()
        .unwrap()
        .0
}

/// A backed RAM region of `size` bytes at `base`, in no address space yet.
pub fn backed(base: u64, size: u64) -> Arc<Region> {
    Arc::new(
        Region::back(RegionSpec::ram(vm_memory::GuestAddress(base), size))
            .unwrap()
            .0,
    )
}

/// The host's base page size.
pub fn page() -> u64 {
    memvisor_vmem::page_size() as u64
}

/// A page of our own, registered under `slot` at `addr` and deleted again: whether KVM refused
/// it. KVM refuses it exactly when it has a slot of that number already (another slot's memory
/// under a live number is refused, never replaced) or memory at `addr`.
pub fn kvm_refuses_probe(vm: &VmFd, slot: u32, addr: u64) -> bool {
    let probe = Region::back(RegionSpec::ram(GuestAddress(0), page()))
        .unwrap()
        .0;
    let mut mem = kvm_bindings::kvm_userspace_memory_region {
        slot,
        flags: 0,
        guest_phys_addr: addr,
        memory_size: page(),
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
