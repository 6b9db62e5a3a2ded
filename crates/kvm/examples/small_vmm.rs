//! A small VMM on memvisor alone: plan a VM, give its devices their resources, map its memory
//! into KVM, run a guest, read the dirty log, hot-plug memory, run the guest over it, unplug.
//!
//! 1. **Plan** (`memvisor_space::plan`, for KVM's memory-slot numbers): 96 MiB of boot RAM, 64 MiB
//!    below the 32-bit hole and 32 MiB from 4 GiB, a serial port, a virtio-mmio network device with
//!    a page of MMIO, and two 2 MiB hotplug slots.
//! 2. **Device resources** (`memvisor_resources`): the plan's interrupts, MMIO windows and the host
//!    bridge's PCI device number taken in allocators of the VMM's own, which then hand a PCI block
//!    device a device number, a GSI and an MMIO BAR that collide with nothing planned; the plan's
//!    placer is told of the BAR too.
//! 3. **Memory** (`memvisor_space`, `memvisor_kvm`): the plan's regions backed, in a space of the
//!    plan's memory-slot numbers (no more than the VM has), and registered as KVM memory slots.
//! 4. **Guest**: 19 bytes of 64-bit code (`mov rax, [target]; mov rcx, [value]; mov [rax], rcx;
//!    hlt`), over page tables that identity-map the guest's first, fourth and fifth GiB with 2 MiB
//!    pages. Real mode cannot reach memory above 4 GiB, where the high boot RAM and the hotplug
//!    slots are, so the vCPU starts in long mode. Each run writes one word where the VMM says.
//! 5. **Dirty log**: logging on for both boot RAM regions; the guest's writes below and above the
//!    hole are the only pages in the logs.
//! 6. **Hotplug**: with the vCPU stopped, a planned slot is plugged (KVM gets its slot before the
//!    space publishes it) without dirty logging (a fetch of its log fails with `ENOENT`), the VMM
//!    turns logging on for it, the guest writes into it, the slot's log has that page. Then it is
//!    unplugged: the same write exits to the VMM as MMIO.
//!
//! Run with `cargo run -p memvisor-kvm --example small_vmm` (needs `/dev/kvm` on x86-64).
//! `tests/small_vmm.rs` runs it as a test.

#![allow(clippy::print_stdout)]

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
/// The VMM: its plan, its guest and its run.
pub mod vmm {
    use std::error::Error;
    use std::sync::Arc;

    use kvm_bindings::kvm_segment;
    use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
    use memvisor_kvm::{MemorySlots, slot_limit};
    use memvisor_resources::{AddressAllocator, AddressRange, AllocPolicy, IdAllocator, Request};
    use memvisor_space::plan::{
        DeviceRequest, HotplugRequest, NodeRequest, Plan, PlanRequest, SerialRequest,
        plan_with_memory_slots,
    };
    use memvisor_space::{AddressSpace, Platform, RegionSpec, RegionType, WindowKind};
    use vm_memory::{Bytes, GuestAddress};

    /// Boot RAM.
    pub const RAM: u64 = 96 << 20;
    /// How much of boot RAM lies below the 32-bit hole (the rest is from 4 GiB).
    pub const LOW_RAM: u64 = 64 << 20;
    /// The page-table pages, the mailbox and the code, in low RAM.
    const PML4: u64 = 0x1000;
    const PDPT: u64 = 0x2000;
    const PD: u64 = 0x3000;
    const MAILBOX: u64 = 0x7000;
    const CODE: u64 = 0x8000;
    /// The GiBs identity-mapped for the guest: low RAM, the 32-bit device window, and the GiB
    /// from 4 GiB that holds high RAM and the hotplug window.
    const MAPPED_GIBS: [u64; 3] = [0, 3, 4];
    /// `mov rax, [MAILBOX]; mov rcx, [MAILBOX + 8]; mov [rax], rcx; hlt`.
    #[rustfmt::skip]
    const PROGRAM: [u8; 20] = [
        0x48, 0x8b, 0x04, 0x25, 0x00, 0x70, 0x00, 0x00, // mov rax, [0x7000]
        0x48, 0x8b, 0x0c, 0x25, 0x08, 0x70, 0x00, 0x00, // mov rcx, [0x7008]
        0x48, 0x89, 0x08,                               // mov [rax], rcx
        0xf4,                                           // hlt
    ];

    /// What the run saw, for the test to check.
    #[derive(Debug, Default)]
    pub struct Summary {
        /// Dirty pages of the low boot RAM after the guest's first two writes.
        pub low_dirty: Vec<u64>,
        /// Dirty pages of the high boot RAM after them.
        pub high_dirty: Vec<u64>,
        /// The hotplugged slot's base.
        pub plugged: u64,
        /// The error number of a fetch of its log before its logging was turned on.
        pub plugged_unlogged_errno: Option<i32>,
        /// Its dirty pages after the guest wrote into it.
        pub plugged_dirty: Vec<u64>,
        /// The word the guest wrote there, read back through the space.
        pub plugged_word: u64,
        /// Where the guest's write there exited as MMIO after the unplug.
        pub after_unplug_mmio: Option<u64>,
        /// Where the guest's write into the network device's window exited as MMIO, and
        /// where the plan put that window.
        pub device_mmio: Option<(u64, u64)>,
        /// KVM slots held at the end: boot RAM only.
        pub slots_at_end: usize,
        /// The block device's GSI.
        pub blk_gsi: u32,
        /// Its PCI device number on bus 0.
        pub blk_pci_device: u32,
        /// Its MMIO BAR.
        pub blk_bar: Option<AddressRange>,
    }

    /// The plan of the VM.
    pub fn request() -> PlanRequest {
        PlanRequest {
            platform: Platform::x86_64(),
            phys_bits: 40,
            nodes: vec![NodeRequest {
                size: RAM,
                memory: RegionSpec::ram(GuestAddress(0), 0),
            }],
            serial: Some(SerialRequest::default()),
            devices: vec![DeviceRequest {
                name: "virtio-net".into(),
                mmio_size: 0x1000,
                address: None,
                irq: None,
                dax_size: None,
            }],
            hotplug: Some(HotplugRequest {
                slots: 2,
                slot_size: 2 << 20,
                node: 0,
                memory: RegionSpec::ram(GuestAddress(0), 0),
            }),
            low_ram_limit: Some(LOW_RAM),
            window_align: Some(2 << 20),
        }
    }

    /// A PCI block device's resources, from allocators that start from what the plan holds.
    struct Resources {
        gsi: u32,
        pci_device: u32,
        bar: AddressRange,
    }

    fn device_resources(plan: &mut Plan) -> Result<Resources, Box<dyn Error>> {
        // GSIs: the platform's range, less its legacy ones and every one the plan gave.
        let irqs = plan.platform.irq_range();
        let mut gsis = IdAllocator::new(*irqs.start(), *irqs.end())?;
        for &irq in plan.platform.legacy_irqs() {
            gsis.allocate_id_at(irq)?;
        }
        for device in &plan.devices {
            if !plan.platform.legacy_irqs().contains(&device.irq) {
                gsis.allocate_id_at(device.irq)?;
            }
        }
        // PCI device numbers on bus 0: the host bridge is device 0.
        let mut pci = IdAllocator::new(0, 31)?;
        pci.allocate_id_at(0)?;
        // MMIO: the 32-bit device window, less what the plan placed in it.
        let window = plan
            .layout
            .windows_of(WindowKind::Device)
            .next()
            .ok_or("the layout has no device window")?;
        let mut mmio = AddressAllocator::<String>::new(window.range().as_range());
        for (owner, range) in plan.placer.allocations() {
            // A range taken across windows is listed whole: its part in this window.
            if let Some(part) = window.range().intersection(&range) {
                mmio.reserve_with(part.as_range(), owner.to_owned())?;
            }
        }

        let gsi = gsis.allocate_id()?;
        let pci_device = pci.allocate_id()?;
        let bar = mmio.allocate_with(
            &Request::new(0x4000, 0x4000, AllocPolicy::FirstMatch)?,
            "virtio-blk".into(),
        )?;
        // The plan's placer learns of them too, so that a later placement (a DAX window, one
        // more device) cannot take them.
        plan.placer.transaction(|p| {
            p.take_in(WindowKind::Device, bar.into(), "virtio-blk")?;
            p.irq_at(gsi, "virtio-blk")?;
            Ok(())
        })?;
        Ok(Resources {
            gsi,
            pci_device,
            bar,
        })
    }

    /// Identity maps of [`MAPPED_GIBS`] with 2 MiB pages (accessed and dirty set, so the CPU
    /// writes no table), the program, and a vCPU in long mode at its start.
    fn load_guest(
        kvm: &Kvm,
        vm: &kvm_ioctls::VmFd,
        space: &AddressSpace,
    ) -> Result<VcpuFd, Box<dyn Error>> {
        let mem = space.memory();
        mem.write_obj(PDPT | 0x23, GuestAddress(PML4))?;
        for (i, gib) in MAPPED_GIBS.into_iter().enumerate() {
            let pd = PD + i as u64 * 0x1000;
            mem.write_obj(pd | 0x23, GuestAddress(PDPT + gib * 8))?;
            for entry in 0..512u64 {
                let page = (gib << 30) | (entry << 21) | 0xe3;
                mem.write_obj(page, GuestAddress(pd + entry * 8))?;
            }
        }
        mem.write_slice(&PROGRAM, GuestAddress(CODE))?;
        drop(mem);

        let vcpu = vm.create_vcpu(0)?;
        let cpuid = kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)?;
        vcpu.set_cpuid2(&cpuid)?;
        let mut sregs = vcpu.get_sregs()?;
        let code = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: 0x8,
            type_: 11,
            present: 1,
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
        (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
        sregs.cr3 = PML4;
        sregs.cr4 = 1 << 5; // PAE
        sregs.cr0 = 1 | (1 << 4) | (1 << 31); // PE, ET, PG
        sregs.efer = (1 << 8) | (1 << 10); // LME, LMA
        vcpu.set_sregs(&sregs)?;
        Ok(vcpu)
    }

    /// How one run of the guest ended.
    #[derive(Debug, PartialEq, Eq)]
    enum Stop {
        Hlt,
        Mmio(u64),
    }

    /// Runs the program once: it writes `value` at `target`.
    fn write_once(
        vcpu: &mut VcpuFd,
        space: &AddressSpace,
        target: u64,
        value: u64,
    ) -> Result<Stop, Box<dyn Error>> {
        let mem = space.memory();
        mem.write_obj(target, GuestAddress(MAILBOX))?;
        mem.write_obj(value, GuestAddress(MAILBOX + 8))?;
        drop(mem);
        let mut regs = vcpu.get_regs()?;
        regs.rip = CODE;
        regs.rflags = 2;
        vcpu.set_regs(&regs)?;
        loop {
            match vcpu.run() {
                Ok(VcpuExit::Hlt) => return Ok(Stop::Hlt),
                Ok(VcpuExit::MmioWrite(addr, _)) => return Ok(Stop::Mmio(addr)),
                Ok(exit) => return Err(format!("unexpected exit: {exit:?}").into()),
                Err(e) if e.errno() == libc::EINTR => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The whole VMM, on `kvm`.
    pub fn run(kvm: &Kvm) -> Result<Summary, Box<dyn Error>> {
        // 1. Plan, for a VM of KVM's memory-slot numbers, so that every hotplug slot can be
        //    plugged.
        let vm = kvm.create_vm()?;
        let mut plan = plan_with_memory_slots(&request(), slot_limit(&vm))?;
        for entry in plan.e820_table()? {
            println!("e820: {entry}");
        }

        // 2. Device resources.
        let blk = device_resources(&mut plan)?;
        println!(
            "virtio-blk: PCI device {}, GSI {}, BAR {}",
            blk.pci_device, blk.gsi, blk.bar
        );

        // 3. Memory, and KVM's slots for it: the plan's space has the plan's slot numbers.
        let tss = plan.platform.kvm_tss_addr().ok_or("x86-64 has KVM's TSS")?;
        vm.set_tss_address(usize::try_from(tss)?)?;
        let vm = Arc::new(vm);
        let (space, _) = plan.space_builder().back()?;
        let slots = MemorySlots::attach(Arc::clone(&vm), &space)?;
        let ram: Vec<u64> = space
            .snapshot()
            .regions()
            .filter(|r| r.ty() == RegionType::Ram)
            .map(|r| r.base().0)
            .collect();
        let [low, high] = ram[..] else {
            return Err(format!("boot RAM in {} regions, not 2", ram.len()).into());
        };
        println!("KVM slots: {:?}", slots.registered());

        // 4. The guest, and 5. the dirty log of its writes below and above the hole.
        let mut vcpu = load_guest(kvm, &vm, &space)?;
        for base in [low, high] {
            slots.set_dirty_logging(GuestAddress(base), true)?;
        }
        let mut summary = Summary {
            blk_gsi: blk.gsi,
            blk_pci_device: blk.pci_device,
            blk_bar: Some(blk.bar),
            ..Summary::default()
        };
        for (target, value) in [(low + (1 << 20), 1), (high + 0x1000, 2)] {
            let stop = write_once(&mut vcpu, &space, target, value)?;
            if stop != Stop::Hlt {
                return Err(format!("the write at {target:#x} ended with {stop:?}").into());
            }
        }
        let dirty = |base: u64| -> Result<Vec<u64>, Box<dyn Error>> {
            let log = slots.fetch_dirty_log(GuestAddress(base))?;
            Ok(log.dirty_pages().map(|a| a.0).collect())
        };
        summary.low_dirty = dirty(low)?;
        summary.high_dirty = dirty(high)?;
        // A write into the device's window is the device's: KVM has no slot there.
        let net = plan
            .devices
            .iter()
            .find(|d| d.name == "virtio-net")
            .and_then(|d| d.mmio)
            .ok_or("no MMIO window for virtio-net")?;
        if let Stop::Mmio(addr) = write_once(&mut vcpu, &space, net.start().0, 3)? {
            summary.device_mmio = Some((addr, net.start().0));
        }

        // 6. Hotplug while the vCPU is stopped, the guest over it, then unplug.
        let slot = plan.slots.first().ok_or("the plan has no hotplug slot")?;
        let (region, _) = space.plug(slot.spec.clone())?;
        summary.plugged = region.base().0;
        // A plugged region does not log until told to, even while every other region logs: a
        // migration turns its logging on, then copies it whole.
        if let Err(memvisor_kvm::Error::DirtyLog { source, .. }) =
            slots.fetch_dirty_log(region.base())
        {
            summary.plugged_unlogged_errno = Some(source.errno());
        }
        slots.set_dirty_logging(region.base(), true)?;
        let target = region.base().0 + 0x3000;
        let stop = write_once(&mut vcpu, &space, target, 0xfeed)?;
        if stop != Stop::Hlt {
            return Err(format!("the write into the plugged slot ended with {stop:?}").into());
        }
        summary.plugged_word = space.memory().read_obj(GuestAddress(target))?;
        summary.plugged_dirty = dirty(region.base().0)?;
        space.remove_region(region.base(), region.size())?;
        if let Stop::Mmio(addr) = write_once(&mut vcpu, &space, target, 0xdead)? {
            summary.after_unplug_mmio = Some(addr);
        }
        summary.slots_at_end = slots.len();
        println!("{summary:#x?}");
        Ok(summary)
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    vmm::run(&kvm_ioctls::Kvm::new()?).map(drop)
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn main() {
    eprintln!("this example runs an x86-64 guest on Linux's KVM");
}
