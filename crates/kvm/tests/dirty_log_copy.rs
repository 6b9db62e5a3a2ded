//! The dirty log as a migration uses it, under races: a guest writes a counter into the pages of
//! a region without pause while two threads fetch its log and copy the pages it names into a
//! shadow copy, removals of the region are refused again and again (a later listener turning
//! logging on again, and fetching and copying, while each is under way), and another region is
//! plugged and unplugged. Then, with the other threads stopped, the guest writes every page once
//! more and one last removal is refused with logging turned on again meanwhile, before the last
//! fetch. If no write the guest makes escapes every log, the shadow ends equal to the memory.
//! In KVM's default mode, and with manual dirty-log protection, where each fetch is followed
//! by `KVM_CLEAR_DIRTY_LOG` of the pages it gave before they are copied (as a VMM in that mode
//! does). (Skipped under Miri, which cannot `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kvm_bindings::{KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, kvm_enable_cap};
use kvm_ioctls::{VcpuExit, VmFd};
use memvisor_kvm::{Error, MemorySlots};
use memvisor_space::{ChangeKind, ListenerError, RegionEvent, RegionListener, RegionSpec};
use support::{MIB, SetOnDrop, backed, backed_space, kvm_or_skip};
use vm_memory::{Bytes, GuestAddress};

/// The guest's code.
const CODE: u64 = 0;
const CODE_SIZE: u64 = 0x1_0000;
/// The region the guest writes: 16 pages, one 16-bit word each, in turn.
const DATA: u64 = 0x1_0000;
const DATA_SIZE: u64 = 0x1_0000;
/// The region plugged and unplugged meanwhile.
const OTHER: u64 = 4 * MIB;

/// Real mode, `ds` at [`DATA`]: `cx` counts, and each count goes to the next page's first
/// word (`bx` wraps after 16 pages); `hlt` after every 1024 writes.
const PROGRAM: [u8; 25] = [
    0xb8, 0x00, 0x10, // mov ax, 0x1000
    0x8e, 0xd8, // mov ds, ax
    0x31, 0xc9, // xor cx, cx
    0x31, 0xdb, // xor bx, bx
    0x41, // 1: inc cx
    0x89, 0x0f, // mov [bx], cx
    0x81, 0xc3, 0x00, 0x10, // add bx, 0x1000
    0xf7, 0xc1, 0xff, 0x03, // test cx, 0x3ff
    0x75, 0xf3, // jnz 1b
    0xf4, // hlt
    0xeb, 0xf0, // jmp 1b
];

/// How many times the guest halts (1024 writes each) before the test ends.
const HALTS: u64 = 40;

/// The slot number of [`DATA`] (the code region has 0).
const DATA_SLOT: u32 = 1;

/// Fetches the log of [`DATA`] and copies the pages it names from the memory into `shadow`
/// (each page read and stored under the lock, so a later read is never overwritten by an
/// earlier one). With `manual` (the VM protects pages only when told), the pages fetched are
/// first cleared in KVM's log of [`DATA_SLOT`] and write-protected again; while a removal of
/// the region is under way, KVM has no slot to clear, and says so.
fn fetch_and_copy(
    slots: &MemorySlots,
    memory: &memvisor_space::AddressSpace,
    shadow: &Mutex<Vec<u8>>,
    manual: Option<&VmFd>,
) {
    let dirty = slots.fetch_dirty_log(GuestAddress(DATA)).unwrap();
    if let Some(vm) = manual
        && let Err(e) = support::real_mode::clear_dirty_log(vm, DATA_SLOT, &dirty)
    {
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ENOENT),
            "KVM_CLEAR_DIRTY_LOG: {e}"
        );
    }
    for page in dirty.dirty_pages() {
        let offset = usize::try_from(page.0 - DATA).unwrap();
        let mut shadow = shadow.lock().unwrap();
        let len = usize::try_from(dirty.page_size()).unwrap();
        memory
            .memory()
            .read_slice(&mut shadow[offset..offset + len], page)
            .unwrap();
    }
}

#[test]
fn pages_copied_by_the_logs_equal_the_memory_after_refused_removals_and_plugs() {
    let Some(kvm) = kvm_or_skip("pages_copied_by_the_logs_equal_the_memory") else {
        return;
    };
    copy_by_logs(&support::vm(&kvm), false);
}

#[test]
fn pages_copied_by_the_logs_and_cleared_equal_the_memory_with_manual_protection() {
    let test = "pages_copied_by_the_logs_and_cleared_equal_the_memory";
    let Some(kvm) = kvm_or_skip(test) else {
        return;
    };
    let vm = support::vm(&kvm);
    let cap = kvm_enable_cap {
        cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
        args: [1, 0, 0, 0],
        ..Default::default()
    };
    if let Err(e) = vm.enable_cap(&cap) {
        eprintln!("\n*** SKIPPED {test}: no manual dirty-log protection ({e}) ***\n");
        return;
    }
    copy_by_logs(&vm, true);
}

/// The test, on `vm`, with manual protection (and clearing after each fetch) or without.
fn copy_by_logs(vm: &Arc<VmFd>, manual: bool) {
    let clearing = manual.then_some(&**vm);
    let space = backed_space(
        vm,
        [
            RegionSpec::ram(GuestAddress(CODE), CODE_SIZE),
            RegionSpec::ram(GuestAddress(DATA), DATA_SIZE),
        ],
    );
    let slots = Arc::new(MemorySlots::attach(Arc::clone(vm), &space).unwrap());
    space
        .memory()
        .write_slice(&PROGRAM, GuestAddress(CODE))
        .unwrap();
    slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
    // The first copy, after logging started: all zero, as the memory is.
    let shadow = Arc::new(Mutex::new(vec![0u8; usize::try_from(DATA_SIZE).unwrap()]));

    // Refuses every removal of the data region, after turning its logging on again (on while
    // on) and, every other time while `copy_in_gap`, fetching and copying its log.
    let refused = Arc::new(AtomicU64::new(0));
    let copy_in_gap = Arc::new(AtomicBool::new(true));
    let listener: Arc<dyn RegionListener> = {
        let (slots, space, shadow, refused, copy_in_gap, clearing) = (
            Arc::downgrade(&slots),
            space.clone(),
            Arc::clone(&shadow),
            Arc::clone(&refused),
            Arc::clone(&copy_in_gap),
            manual.then(|| Arc::clone(vm)),
        );
        Arc::new(
            move |event: &RegionEvent<'_>| -> Result<(), ListenerError> {
                if event.kind != ChangeKind::Removed || event.region.base() != GuestAddress(DATA) {
                    return Ok(());
                }
                if let Some(slots) = slots.upgrade() {
                    slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
                    if refused.fetch_add(1, Ordering::Relaxed) % 2 == 0
                        && copy_in_gap.load(Ordering::Relaxed)
                    {
                        fetch_and_copy(&slots, &space, &shadow, clearing.as_deref());
                    }
                }
                Err("refused".into())
            },
        )
    };
    space.add_listener(Arc::clone(&listener)).unwrap();

    let mut vcpu = vm.create_vcpu(0).unwrap();
    let mut sregs = vcpu.get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = CODE;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();

    let done = AtomicBool::new(false);
    let exits = std::thread::scope(|s| {
        // Stops the fetchers and the plugger when this thread fails too (the guest's failure
        // shows at its join), so that the failure ends the scope instead of its waiting for
        // them for ever.
        let stopping = SetOnDrop(&done);
        let guest = s.spawn(|| {
            // Writes made while KVM has no slot there exit, and reach no memory.
            let mut exits = 0u64;
            let mut halts = 0;
            while halts < HALTS {
                match vcpu.run() {
                    Ok(VcpuExit::Hlt) => halts += 1,
                    Ok(VcpuExit::MmioWrite(addr, _)) => {
                        assert!((DATA..DATA + DATA_SIZE).contains(&addr), "{addr:#x}");
                        exits += 1;
                    }
                    Ok(exit) => panic!("unexpected exit {exit:?}"),
                    Err(e) if e.errno() == libc::EINTR => {}
                    Err(e) => panic!("KVM_RUN: {e}"),
                }
            }
            exits
        });
        for _ in 0..2 {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    fetch_and_copy(&slots, &space, &shadow, clearing);
                    // The plugged region's log, when it is there and logs: nothing (no
                    // guest writes it), or every page while its removal is under way.
                    match slots.fetch_dirty_log(GuestAddress(OTHER)) {
                        Ok(dirty) => assert!(dirty.count() == 0 || dirty.count() == dirty.pages()),
                        Err(Error::NotRegistered { .. } | Error::DirtyLog { .. }) => {}
                        Err(e) => panic!("{e:?}"),
                    }
                }
            });
        }
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                space.insert_region(backed(OTHER, 2 * MIB)).unwrap();
                let _ = slots.set_dirty_logging(GuestAddress(OTHER), true);
                space.remove_region(GuestAddress(OTHER), 2 * MIB).unwrap();
            }
        });
        while !guest.is_finished() {
            assert!(space.remove_region(GuestAddress(DATA), DATA_SIZE).is_err());
        }
        let exits = guest.join().unwrap();
        drop(stopping);
        exits
    });
    // The guest writes every page once more, and no fetch follows before the slot's deletion;
    // logging is turned on again while the removal is under way.
    match vcpu.run().unwrap() {
        VcpuExit::Hlt => {}
        exit => panic!("unexpected exit {exit:?}"),
    }
    copy_in_gap.store(false, Ordering::Relaxed);
    assert!(space.remove_region(GuestAddress(DATA), DATA_SIZE).is_err());
    space.remove_listener(&listener).unwrap();
    eprintln!(
        "{} removals refused, {exits} guest writes exited while the slot was away",
        refused.load(Ordering::Relaxed)
    );
    assert!(refused.load(Ordering::Relaxed) > 0);
    // The last fetch and copy: the shadow now equals the memory, page for page.
    fetch_and_copy(&slots, &space, &shadow, clearing);
    let mut memory = vec![0u8; usize::try_from(DATA_SIZE).unwrap()];
    space
        .memory()
        .read_slice(&mut memory, GuestAddress(DATA))
        .unwrap();
    let shadow = shadow.lock().unwrap();
    for (page, (m, s)) in memory.chunks(0x1000).zip(shadow.chunks(0x1000)).enumerate() {
        // The guest writes only each page's first word.
        assert!(m[2..].iter().all(|&b| b == 0), "page {page}");
        assert_eq!(m[..2], s[..2], "page {page}: a write escaped every log");
        assert!(s[2..].iter().all(|&b| b == 0), "page {page}");
    }
    // The guest wrote every page.
    assert!(memory.chunks(0x1000).all(|p| p[..2] != [0, 0]));
}
