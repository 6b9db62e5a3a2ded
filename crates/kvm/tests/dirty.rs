//! Dirty logging on the host's real KVM, with a tiny real-mode guest: read-only and huge-page
//! regions, the VMM's own writes, logging toggled while the guest writes, bitmaps over the
//! wrong range. (Skipped under Miri, which cannot `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use memvisor_kvm::{DirtyBitmap, Error, MemorySlots, slot_limit};
use memvisor_space::{AddressSpace, HugePageFallback, HugePages, Protection, RegionSpec};
use support::{MIB, SetOnDrop, TSS, backed_space, entry, kvm_or_skip, layout};
use vm_memory::{Bytes, GuestAddress};

/// The page the guests write.
const TARGET: u16 = 0x3000;

/// A real-mode vCPU at guest address 0 running `code` (which the host writes there).
fn real_mode_vcpu(vm: &VmFd, space: &AddressSpace, code: &[u8]) -> VcpuFd {
    space.memory().write_slice(code, GuestAddress(0)).unwrap();
    let vcpu = vm.create_vcpu(0).unwrap();
    let mut sregs = vcpu.get_sregs().unwrap();
    for seg in [&mut sregs.cs, &mut sregs.ds] {
        seg.base = 0;
        seg.selector = 0;
    }
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = 0;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();
    vcpu
}

/// `mov byte [target], 1; hlt`.
fn write_once(target: u16) -> [u8; 6] {
    let [low, high] = target.to_le_bytes();
    [0xc6, 0x06, low, high, 0x01, 0xf4]
}

fn run_to_hlt(vcpu: &mut VcpuFd) {
    match vcpu.run().unwrap() {
        VcpuExit::Hlt => {}
        exit => panic!("unexpected exit {exit:?}"),
    }
}

fn vm(kvm: &kvm_ioctls::Kvm) -> Arc<VmFd> {
    let vm = kvm.create_vm().unwrap();
    vm.set_tss_address(TSS).unwrap();
    Arc::new(vm)
}

#[test]
fn host_writes_are_not_in_kvm_log_but_merge_with_region_tracking() {
    let Some(kvm) = kvm_or_skip("host_writes_are_not_in_kvm_log_but_merge_with_region_tracking")
    else {
        return;
    };
    let vm = vm(&kvm);
    let space = backed_space(
        &vm,
        [RegionSpec::ram(GuestAddress(0), MIB).with_dirty_tracking(true)],
    );
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    let mut vcpu = real_mode_vcpu(&vm, &space, &write_once(TARGET));
    slots.set_dirty_logging(GuestAddress(0), true).unwrap();
    let region = space.find_region(GuestAddress(0)).unwrap();
    region.clear_dirty_log();
    run_to_hlt(&mut vcpu);
    // The VMM writes a page through the space: its own record has it, KVM's log does not.
    space
        .memory()
        .write_obj(7u64, GuestAddress(0x5000))
        .unwrap();
    let mut kvm_log = slots.fetch_dirty_log(GuestAddress(0)).unwrap();
    // The guest fetched its code from page 0 but wrote only its target.
    assert_eq!(
        kvm_log.dirty_pages().collect::<Vec<_>>(),
        [GuestAddress(u64::from(TARGET))]
    );
    // Either merge point gives both: the region's record ...
    region.merge_dirty_log(kvm_log.words()).unwrap();
    let log = region.take_dirty_log().unwrap();
    let both = DirtyBitmap::new(GuestAddress(0), MIB, kvm_log.page_size()).unwrap();
    let mut from_region = both.clone();
    for (i, word) in log.iter().enumerate() {
        for bit in 0..64 {
            if word & (1 << bit) != 0 {
                let page = (i as u64 * 64 + bit) * kvm_log.page_size();
                from_region.mark(GuestAddress(page), 1);
            }
        }
    }
    // ... or the bitmap the VMM marks its writes in.
    kvm_log.mark(GuestAddress(0x5000), 8);
    assert_eq!(from_region, kvm_log);
    assert_eq!(
        kvm_log.dirty_pages().collect::<Vec<_>>(),
        [GuestAddress(u64::from(TARGET)), GuestAddress(0x5000)]
    );
}

#[test]
fn read_only_region_dirty_log_stays_clean_and_guest_write_exits() {
    let Some(kvm) = kvm_or_skip("read_only_region_dirty_log_stays_clean_and_guest_write_exits")
    else {
        return;
    };
    let vm = vm(&kvm);
    let rom = 0x10_0000u64;
    let space = backed_space(
        &vm,
        [
            RegionSpec::ram(GuestAddress(0), MIB),
            RegionSpec::ram(GuestAddress(rom), MIB).with_protection(Protection::Read),
        ],
    );
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    // Logging a read-only slot is accepted, and the slot stays read-only.
    slots.set_dirty_logging(GuestAddress(rom), true).unwrap();
    assert_eq!(
        slots.registered()[1].flags,
        kvm_bindings::KVM_MEM_READONLY | kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES
    );
    // mov ax, 0xffff; mov ds, ax; mov byte [0x30], 1; hlt: a write to 0xffff0 + 0x30, the
    // read-only region's byte 0x20.
    let code = [
        0xb8, 0xff, 0xff, 0x8e, 0xd8, 0xc6, 0x06, 0x30, 0x00, 0x01, 0xf4,
    ];
    let mut vcpu = real_mode_vcpu(&vm, &space, &code);
    // KVM's A20 is always on: the write reaches the read-only slot and exits as MMIO.
    match vcpu.run().unwrap() {
        VcpuExit::MmioWrite(addr, data) => {
            assert_eq!(addr, rom + 0x20);
            assert_eq!(data, [1]);
        }
        exit => panic!("unexpected exit {exit:?}"),
    }
    drop(vcpu);
    assert_eq!(slots.fetch_dirty_log(GuestAddress(rom)).unwrap().count(), 0);
    let mut byte = [0xffu8];
    space
        .snapshot()
        .bytes()
        .read_slice(&mut byte, GuestAddress(rom + 0x20))
        .unwrap();
    assert_eq!(byte, [0]);
    // Off again: the slot keeps its read-only flag.
    slots.set_dirty_logging(GuestAddress(rom), false).unwrap();
    assert_eq!(slots.registered()[1].flags, kvm_bindings::KVM_MEM_READONLY);
}

#[test]
fn transparent_huge_page_region_logs_base_pages() {
    let Some(kvm) = kvm_or_skip("transparent_huge_page_region_logs_base_pages") else {
        return;
    };
    let vm = vm(&kvm);
    let size = 4 * MIB;
    let (space, _) = AddressSpace::builder(layout())
        .slots(slot_limit(&vm))
        .region(
            RegionSpec::ram(GuestAddress(0), size)
                .with_huge_pages(HugePages::Transparent)
                .with_fallback(HugePageFallback::BasePages),
        )
        .back()
        .unwrap();
    // Touch every byte of the first huge page before logging starts, so the host may back
    // it with one.
    space
        .memory()
        .write_slice(&vec![0u8; 2 << 20], GuestAddress(0))
        .unwrap();
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    slots.set_dirty_logging(GuestAddress(0), true).unwrap();
    let mut vcpu = real_mode_vcpu(&vm, &space, &write_once(TARGET));
    run_to_hlt(&mut vcpu);
    let log = slots.fetch_dirty_log(GuestAddress(0)).unwrap();
    // One bit per host base page, whatever backs the region.
    assert_eq!(log.page_size(), memvisor_vmem::page_size() as u64);
    assert_eq!(log.pages(), size / log.page_size());
    assert_eq!(
        log.dirty_pages().collect::<Vec<_>>(),
        [GuestAddress(u64::from(TARGET))]
    );
}

#[test]
fn dirty_logging_toggled_while_guest_writes_ends_with_the_write_logged() {
    let Some(kvm) =
        kvm_or_skip("dirty_logging_toggled_while_guest_writes_ends_with_the_write_logged")
    else {
        return;
    };
    let vm = vm(&kvm);
    let space = backed_space(&vm, [RegionSpec::ram(GuestAddress(0), MIB)]);
    let slots = Arc::new(MemorySlots::attach(Arc::clone(&vm), &space).unwrap());
    // start: inc byte [TARGET]; out 0x10, al; jmp start
    let [low, high] = TARGET.to_le_bytes();
    let code = [0xfe, 0x06, low, high, 0xe6, 0x10, 0xeb, 0xf8];
    let mut vcpu = real_mode_vcpu(&vm, &space, &code);
    let stop = Arc::new(AtomicBool::new(false));
    let guest = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut exits = 0u64;
            while !stop.load(Ordering::SeqCst) {
                match vcpu.run() {
                    Ok(VcpuExit::IoOut(0x10, _)) => exits += 1,
                    Ok(exit) => panic!("unexpected exit {exit:?}"),
                    Err(e) if e.errno() == 4 => {}
                    Err(e) => panic!("KVM_RUN: {e}"),
                }
            }
            exits
        })
    };
    // Stops the guest when this thread fails too, where it would run on for ever beside the
    // test binary's later tests.
    let _stopping = SetOnDrop(Arc::clone(&stop));
    for _ in 0..50 {
        slots.set_dirty_logging(GuestAddress(0), true).unwrap();
        let log = slots.fetch_dirty_log(GuestAddress(0)).unwrap();
        // Only the target can be dirty.
        assert!(
            log.dirty_pages()
                .all(|p| p == GuestAddress(u64::from(TARGET))),
            "{log:?}"
        );
        slots.set_dirty_logging(GuestAddress(0), false).unwrap();
        assert!(matches!(
            slots.fetch_dirty_log(GuestAddress(0)),
            Err(Error::DirtyLog {
                slot: 0,
                base: 0,
                ..
            })
        ));
    }
    slots.set_dirty_logging(GuestAddress(0), true).unwrap();
    // The guest keeps writing: a fetch soon holds the target.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = slots.fetch_dirty_log(GuestAddress(0)).unwrap();
        if log.is_dirty(GuestAddress(u64::from(TARGET))) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the guest's writes were never logged"
        );
        std::thread::yield_now();
    }
    stop.store(true, Ordering::SeqCst);
    assert!(guest.join().unwrap() > 0);
    assert_eq!(
        slots.registered(),
        [entry(
            &space,
            0,
            0,
            MIB,
            kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES
        )]
    );
}

#[test]
fn fetch_into_bitmap_spanning_two_regions_errors_and_leaves_it() {
    let Some(kvm) = kvm_or_skip("fetch_into_bitmap_spanning_two_regions_errors_and_leaves_it")
    else {
        return;
    };
    let vm = vm(&kvm);
    let space = backed_space(
        &vm,
        [
            RegionSpec::ram(GuestAddress(0), MIB),
            RegionSpec::ram(GuestAddress(MIB), MIB),
        ],
    );
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    slots.set_dirty_logging(GuestAddress(0), true).unwrap();
    slots.set_dirty_logging(GuestAddress(MIB), true).unwrap();
    let page = memvisor_vmem::page_size() as u64;
    let mut both = DirtyBitmap::new(GuestAddress(0), 2 * MIB, page).unwrap();
    both.mark(GuestAddress(MIB), 1);
    let err = slots.fetch_dirty_log_into(&mut both).unwrap_err();
    assert!(
        matches!(err, Error::BitmapMismatch { base: 0, size, other_size, .. } if size == 2 * MIB && other_size == MIB),
        "{err}"
    );
    assert_eq!(both.dirty_pages().collect::<Vec<_>>(), [GuestAddress(MIB)]);
    // A bitmap starting inside a region is not of any registered region.
    let mut inside = DirtyBitmap::new(GuestAddress(page), MIB - page, page).unwrap();
    assert!(matches!(
        slots.fetch_dirty_log_into(&mut inside),
        Err(Error::NotRegistered { base }) if base == page
    ));
}
