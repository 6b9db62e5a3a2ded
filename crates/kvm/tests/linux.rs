//! A real Linux kernel on memvisor memory: Debian's cloud kernel booted through the PVH entry
//! point prints memvisor's memory map as its `BIOS-e820` lines and the planned RAM as its
//! `Memory:` total.
//!
//! Set `MEMVISOR_KVM_LINUX` to the kernel's `vmlinuz` (for example from
//! `apt-get download linux-image-6.1.0-57-cloud-amd64` and `dpkg-deb -x`; never installed);
//! without it the test says so and passes. On this machine's software-nested KVM the kernel
//! runs emulated (guest kernel code at about 0.2 M instructions per second): it prints its map
//! and node ranges within about a minute and its `Memory:` line a few minutes later when the
//! machine is idle, and cannot go much further. The test checks the e820 lines and the node
//! ranges, waits for the `Memory:` line at most 4 minutes and checks its total when it comes
//! (saying so when it does not). (Skipped under Miri.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;

use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, kvm_pit_config, kvm_segment};
use kvm_ioctls::VcpuExit;
use memvisor_kvm::{MemorySlots, slot_limit};
use memvisor_space::{AddressSpace, Layout, MemoryMapEntry, MemoryType, RegionSpec};
use support::linux::{elf_segments, vmlinux_from_bzimage};
use support::{TSS, kvm_or_skip};
use vm_memory::{Bytes, GuestAddress};

const ENV: &str = "MEMVISOR_KVM_LINUX";
const RAM: u64 = 512 << 20;
const START_INFO: u64 = 0x6000;
const MEMMAP: u64 = 0x7000;
const CMDLINE: u64 = 0x8000;
const SERIAL: u16 = 0x3f8;
const LIMIT: Duration = Duration::from_secs(240);

#[test]
fn linux_pvh_boot_prints_memvisor_e820_map_and_memory_total() {
    let layout = Layout::x86_64().ram(RAM).build().unwrap();
    let ram = layout.ram_ranges(RAM).unwrap();
    let specs = ram.iter().map(|&(base, size)| RegionSpec::ram(base, size));
    boot("linux_pvh_boot", layout, specs.collect());
}

#[test]
fn linux_pvh_boot_split_ram_above_4g_prints_memvisor_map() {
    // Half the RAM below the 32-bit hole, half above 4 GiB (KVM slot 1).
    let layout = Layout::x86_64().ram(4 << 30).build().unwrap();
    let specs = vec![
        RegionSpec::ram(GuestAddress(0), RAM / 2),
        RegionSpec::ram(GuestAddress(4 << 30), RAM / 2),
    ];
    boot("linux_pvh_boot_split_ram", layout, specs);
}

/// Boots the kernel named by `MEMVISOR_KVM_LINUX` on `specs` and checks its memory map.
fn boot(test: &str, layout: Layout, specs: Vec<RegionSpec>) {
    let Ok(path) = std::env::var(ENV) else {
        eprintln!("\n*** SKIPPED {test}: set {ENV} to a Linux bzImage (vmlinuz) ***\n");
        return;
    };
    let Some(kvm) = kvm_or_skip(test) else {
        return;
    };
    let vmlinux = vmlinux_from_bzimage(&std::fs::read(&path).unwrap()).unwrap();
    let (segments, entry) = elf_segments(&vmlinux).unwrap();

    let vm = Arc::new(kvm.create_vm().unwrap());
    vm.set_tss_address(TSS).unwrap();
    vm.create_irq_chip().unwrap();
    vm.create_pit2(kvm_pit_config::default()).unwrap();
    let regions = specs.len();
    let (space, _) = AddressSpace::builder(layout)
        .slots(slot_limit(&vm))
        .regions(specs)
        .back()
        .unwrap();
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    assert_eq!(slots.len(), regions);

    let snapshot = space.snapshot();
    let map = snapshot.memory_map();
    let mem = space.memory();
    for s in &segments {
        mem.write_slice(s.bytes, GuestAddress(s.paddr)).unwrap();
    }
    let memmap = snapshot.pvh_memmap().unwrap();
    mem.write_slice(&memmap, GuestAddress(MEMMAP)).unwrap();
    let cmdline = b"earlyprintk=serial,ttyS0,115200 console=ttyS0 nokaslr\0";
    mem.write_slice(cmdline, GuestAddress(CMDLINE)).unwrap();
    // struct hvm_start_info, version 1.
    let mut info = Vec::new();
    info.extend_from_slice(&0x336e_c578u32.to_le_bytes()); // magic
    info.extend_from_slice(&1u32.to_le_bytes()); // version
    info.extend_from_slice(&0u32.to_le_bytes()); // flags
    info.extend_from_slice(&0u32.to_le_bytes()); // nr_modules
    info.extend_from_slice(&0u64.to_le_bytes()); // modlist_paddr
    info.extend_from_slice(&CMDLINE.to_le_bytes()); // cmdline_paddr
    info.extend_from_slice(&0u64.to_le_bytes()); // rsdp_paddr
    info.extend_from_slice(&MEMMAP.to_le_bytes()); // memmap_paddr
    info.extend_from_slice(&u32::try_from(map.len()).unwrap().to_le_bytes()); // memmap_entries
    info.extend_from_slice(&0u32.to_le_bytes()); // reserved
    mem.write_slice(&info, GuestAddress(START_INFO)).unwrap();
    drop(mem);

    // The PVH entry state: 32-bit protected mode, flat segments, no paging, %ebx = start info.
    let mut vcpu = vm.create_vcpu(0).unwrap();
    let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
    vcpu.set_cpuid2(&cpuid).unwrap();
    let mut sregs = vcpu.get_sregs().unwrap();
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x10,
        type_: 11,
        present: 1,
        s: 1,
        db: 1,
        g: 1,
        ..Default::default()
    };
    let data = kvm_segment {
        selector: 0x18,
        type_: 3,
        ..code
    };
    sregs.cs = code;
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.cr0 = 0x11;
    sregs.cr4 = 0;
    sregs.efer = 0;
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = entry;
    regs.rbx = START_INFO;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();

    // The vCPU thread sends the serial output; a guest that stops making exits leaves it
    // blocked, and the bound below still ends the test.
    let (tx, rx) = mpsc::channel::<u8>();
    let keep = (Arc::clone(&vm), space.clone());
    std::thread::spawn(move || {
        let _keep = keep;
        loop {
            match vcpu.run() {
                Ok(VcpuExit::IoOut(SERIAL, data)) => {
                    for &b in data {
                        if tx.send(b).is_err() {
                            return;
                        }
                    }
                }
                Ok(VcpuExit::IoIn(port, data)) => {
                    // The UART's line status: transmitter empty; everything else absent.
                    let value = if port == SERIAL + 5 { 0x60 } else { 0xff };
                    data.fill(value);
                }
                Ok(VcpuExit::MmioRead(_, data)) => data.fill(0xff),
                Ok(VcpuExit::IoOut(..) | VcpuExit::MmioWrite(..)) => {}
                Ok(VcpuExit::Hlt | VcpuExit::Shutdown) => return,
                Ok(other) => {
                    eprintln!("vcpu: {other:?}");
                    return;
                }
                Err(e) if e.errno() == 4 || e.errno() == 11 => {}
                Err(e) => {
                    eprintln!("KVM_RUN: {e}");
                    return;
                }
            }
        }
    });

    let start = Instant::now();
    let mut console = String::new();
    let mut total = None;
    while total.is_none() {
        let Some(left) = LIMIT.checked_sub(start.elapsed()) else {
            break;
        };
        let Ok(b) = rx.recv_timeout(left) else { break };
        console.push(char::from(b));
        if b == b'\n' {
            let line = console.lines().last().unwrap_or("");
            total = memory_total_kib(line);
        }
    }
    eprintln!(
        "--- guest console ---\n{console}\n--- after {:?} ---",
        start.elapsed()
    );

    let e820: Vec<&str> = console
        .lines()
        .filter_map(|l| l.split_once("BIOS-e820: ").map(|(_, m)| m.trim_end()))
        .collect();
    let planned: Vec<String> = map.iter().map(MemoryMapEntry::to_string).collect();
    assert_eq!(e820, planned, "the kernel's e820 map is memvisor's");
    let expected = usable_kib(&map);
    // The kernel's early node ranges are its RAM, page by page, printed well before `Memory:`.
    let node_kib: u64 = console.lines().filter_map(node_range_kib).sum();
    assert_eq!(
        node_kib, expected,
        "the kernel's RAM ranges hold the plan's RAM"
    );
    match total {
        Some(total) => assert_eq!(total, expected, "the kernel's RAM total is the plan's"),
        None => eprintln!("*** {test}: no `Memory:` line within {LIMIT:?} ***"),
    }
    assert_eq!(slots.len(), regions);
}

/// `N` from a `Memory: …K/NK available` line.
fn memory_total_kib(line: &str) -> Option<u64> {
    let rest = line.split_once("Memory: ")?.1;
    let total = rest.split_once('/')?.1.split_once('K')?.0;
    total.parse().ok()
}

/// The KiB of a `  node   0: [mem 0x…-0x…]` line.
fn node_range_kib(line: &str) -> Option<u64> {
    let range = line.split_once("node ")?.1.split_once(": [mem ")?.1;
    let (first, last) = range.split_once(']')?.0.split_once('-')?;
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    Some((hex(last)? + 1 - hex(first)?) / 1024)
}

/// What the kernel counts as RAM: whole pages of the usable entries, less page 0 (which the
/// kernel keeps for itself).
fn usable_kib(map: &[MemoryMapEntry]) -> u64 {
    let pages: u64 = map
        .iter()
        .filter(|e| e.ty == MemoryType::Ram)
        .map(|e| ((e.last() + 1) >> 12).saturating_sub(e.addr.div_ceil(4096)))
        .sum();
    (pages - 1) * 4
}
