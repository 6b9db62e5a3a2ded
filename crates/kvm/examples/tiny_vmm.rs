//! The whole toolkit in one page: plan a VM from a memvisor spec, back its memory, register it
//! with KVM, and run a guest to its serial console.
//!
//! The guest is 15 bytes of real-mode code that prints a line on the planned serial port and
//! halts. Run with `cargo run -p memvisor-kvm --example tiny_vmm` (needs `/dev/kvm`).

#[cfg(target_os = "linux")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Write;
    use std::sync::Arc;

    use kvm_ioctls::{Kvm, VcpuExit};
    use memvisor_cli::plan::plan;
    use memvisor_cli::spec::{Source, parse};
    use memvisor_kvm::{MemorySlots, slot_limit};
    use memvisor_space::{AddressSpace, Platform};
    use vm_memory::{Bytes, GuestAddress};

    // 1. Plan from a spec.
    let text = "name = \"tiny\"\n[memory]\nsize = \"64MiB\"\n[serial]\n";
    let src = Source {
        origin: "tiny.toml",
        text,
    };
    let plan = plan(&parse(src)?, src)?;
    let serial = plan
        .devices
        .iter()
        .find(|d| d.ty == "serial")
        .and_then(|d| d.pio)
        .map_or(0x3f8, |p| p.start);

    // 2. Back it, with no more memory-slot numbers than KVM has.
    let kvm = Kvm::new()?;
    let vm = Arc::new(kvm.create_vm()?);
    // KVM's TSS where the platform reserves it (and the plan's memory map lists it).
    let tss = Platform::new(plan.arch)
        .kvm_tss_addr()
        .ok_or("the platform has no KVM TSS")?;
    vm.set_tss_address(usize::try_from(tss)?)?;
    let (space, _) = AddressSpace::builder(plan.layout.clone())
        .slots(slot_limit(&vm))
        .regions(plan.regions.iter().map(|r| r.spec.clone()))
        .back()?;
    for entry in space.snapshot().memory_map() {
        println!("e820: {entry}");
    }

    // 3. Register it with KVM (and keep KVM in sync with later hotplug).
    let _slots = MemorySlots::attach(Arc::clone(&vm), &space)?;

    // 4. Load the guest: print the message on the serial port, then halt.
    #[rustfmt::skip]
    let code: [u8; 15] = [
        0xbe, 0x0f, 0x10, // mov si, 0x100f (the message)
        0xba, 0x00, 0x00, // mov dx, <serial port>
        0xac,             // next: lodsb
        0x84, 0xc0,       // test al, al
        0x74, 0x03,       // jz end
        0xee,             // out dx, al
        0xeb, 0xf8,       // jmp next
        0xf4,             // end: hlt
    ];
    let mut code = code;
    code[4..6].copy_from_slice(&u16::try_from(serial)?.to_le_bytes());
    let mem = space.memory();
    mem.write_slice(&code, GuestAddress(0x1000))?;
    mem.write_slice(
        b"Hello from a guest on memvisor memory\n\0",
        GuestAddress(0x100f),
    )?;
    drop(mem);

    // 5. Run it in real mode from 0x1000.
    let vcpu = vm.create_vcpu(0)?;
    let mut sregs = vcpu.get_sregs()?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs)?;
    let mut regs = vcpu.get_regs()?;
    regs.rip = 0x1000;
    regs.rflags = 2;
    vcpu.set_regs(&regs)?;
    let mut vcpu = vcpu;
    let mut out = std::io::stdout().lock();
    loop {
        match vcpu.run()? {
            VcpuExit::IoOut(port, data) if u64::from(port) == serial => out.write_all(data)?,
            VcpuExit::Hlt => break,
            exit => return Err(format!("unexpected exit: {exit:?}").into()),
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("KVM is Linux only");
}
