//! A VMM's live-migration loop over the host's real KVM: a guest writes a counter into every
//! page of a logging region without pause while the VMM makes pass after pass of fetching the
//! region's log and copying the pages it names into a second buffer; between passes the
//! region's slot is deleted and registered again (the region removed and inserted again,
//! logging turned off and on again), and calls that must fail are made (a base with no region,
//! the region while it is away, logging off, a bitmap of another size). After each step
//! `registered()` equals what KVM holds (probed). A last pass with the vCPU stopped leaves the
//! copy equal to the memory, byte for byte. In KVM's default mode and with manual dirty-log
//! protection (each fetch followed by `KVM_CLEAR_DIRTY_LOG` of its pages before they are
//! copied). (Skipped under Miri, which cannot `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES;
use kvm_ioctls::{VcpuExit, VmFd};
use memvisor_kvm::{DirtyBitmap, Error, MemorySlots};
use memvisor_space::{AddressSpace, Region, RegionSpec};
use memvisor_testkit::watchdog::within;
use support::{SetOnDrop, backed_space, kvm_refuses_probe, page};
use vm_memory::{Bytes, GuestAddress};

/// The guest's code (slot 0).
const CODE: u64 = 0;
const CODE_SIZE: u64 = 0x1_0000;
/// The region the guest writes and the VMM migrates: 16 pages.
const DATA: u64 = 0x1_0000;
const DATA_SIZE: u64 = 0x1_0000;
/// A base where no region is.
const NOWHERE: u64 = 0x10_0000;
/// Slot numbers asked of KVM: more than the test uses.
const NUMBERS: u32 = 8;
/// Where the slot-number probes go: a guest address no region of the test uses.
const PROBE_BASE: u64 = 0xc000_0000;
/// The passes of the loop before the last one.
const PASSES: u64 = 12;
/// A bound on each wait for the guest's progress (each takes milliseconds).
const PATIENCE: Duration = Duration::from_secs(30);
const WATCHDOG: Duration = Duration::from_secs(120);

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

#[test]
fn passes_over_slot_deletions_and_refused_calls_copy_the_memory_exactly() {
    support::real_mode::in_both_modes("passes_over_slot_deletions", |vm, manual| {
        within("the migration loop", WATCHDOG, move || migrate(&vm, manual));
    });
}

/// `(slot, base, size, flags)` of what the slots list.
fn registered(slots: &MemorySlots) -> Vec<(u32, u64, u64, u32)> {
    slots
        .registered()
        .into_iter()
        .map(|e| (e.slot, e.guest.start().0, e.guest.size().unwrap(), e.flags))
        .collect()
}

/// `registered()` is what KVM holds: the same slot numbers, memory at the same places, and a
/// log (`KVM_GET_DIRTY_LOG` answers) for exactly the slots listed as logging. In KVM's default
/// mode that call takes the log, so the pages it names are copied, as a pass copies them.
fn assert_kvm_holds(vm: &VmFd, slots: &MemorySlots, space: &AddressSpace, copy: &Copy, step: &str) {
    let listed = registered(slots);
    let numbers: Vec<u32> = (0..NUMBERS)
        .filter(|&n| kvm_refuses_probe(vm, n, PROBE_BASE))
        .collect();
    assert_eq!(
        numbers,
        listed.iter().map(|e| e.0).collect::<Vec<_>>(),
        "{step}: slot numbers"
    );
    for base in [CODE, DATA] {
        let listed_here = listed.iter().any(|e| e.1 == base);
        assert_eq!(
            kvm_refuses_probe(vm, 500, base),
            listed_here,
            "{step}: memory at {base:#x}"
        );
    }
    for &(slot, base, size, flags) in &listed {
        // The slot is the region's, so KVM's log fits a buffer sized by it.
        let log = vm.get_dirty_log(slot, usize::try_from(size).unwrap());
        assert_eq!(
            log.is_ok(),
            flags & KVM_MEM_LOG_DIRTY_PAGES != 0,
            "{step}: logging of slot {slot} at {base:#x}"
        );
        if let Ok(words) = log {
            let mut taken = DirtyBitmap::new(GuestAddress(base), size, page()).unwrap();
            for (i, word) in words.iter().enumerate() {
                for bit in 0..64 {
                    if word & (1 << bit) != 0 {
                        taken.mark(GuestAddress(base + (i as u64 * 64 + bit) * page()), 1);
                    }
                }
            }
            copy_pages(space, copy, &taken);
        }
    }
}

/// The copy of [`DATA`] the passes make.
type Copy = Mutex<Vec<u8>>;

/// Copies the pages `dirty` names from the memory into `copy` (each page read and stored under
/// the lock).
fn copy_pages(space: &AddressSpace, copy: &Copy, dirty: &DirtyBitmap) {
    let len = usize::try_from(dirty.page_size()).unwrap();
    let mut copy = copy.lock().unwrap();
    for page in dirty.dirty_pages() {
        let offset = usize::try_from(page.0 - DATA).unwrap();
        space
            .memory()
            .read_slice(&mut copy[offset..offset + len], page)
            .unwrap();
    }
}

/// One pass: the log fetched (and, with manual protection, cleared in KVM) and the pages it
/// names copied from the memory into `copy`. The number of pages copied.
fn pass(slots: &MemorySlots, space: &AddressSpace, copy: &Copy, manual: bool) -> u64 {
    let dirty = slots.fetch_dirty_log(GuestAddress(DATA)).unwrap();
    if manual {
        let slot = slots.slot_at(GuestAddress(DATA)).unwrap();
        support::real_mode::clear_dirty_log(slots.vm(), slot, &dirty).unwrap();
    }
    copy_pages(space, copy, &dirty);
    dirty.count()
}

/// The whole region copied: after its slot starts a new log, what the guest wrote since the
/// last fetch is in no log.
fn copy_whole(space: &AddressSpace, copy: &Copy) {
    space
        .memory()
        .read_slice(&mut copy.lock().unwrap(), GuestAddress(DATA))
        .unwrap();
}

fn migrate(vm: &Arc<VmFd>, manual: bool) {
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
    let mut vcpu = vm.create_vcpu(0).unwrap();
    let mut sregs = vcpu.get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = CODE;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();

    // Logging on, then the first copy: the whole region.
    slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
    let copy = Mutex::new(vec![0u8; usize::try_from(DATA_SIZE).unwrap()]);
    copy_whole(&space, &copy);
    assert_kvm_holds(vm, &slots, &space, &copy, "logging on");

    let halts = AtomicU64::new(0);
    let away_writes = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let (pause, paused) = (AtomicBool::new(false), AtomicBool::new(false));
    let copied = std::thread::scope(|s| {
        // Stops the guest when this thread fails too, so that the failure ends the scope.
        let stopping = SetOnDrop(&stop);
        let guest = s.spawn(|| {
            loop {
                match vcpu.run() {
                    Ok(VcpuExit::Hlt) => {
                        halts.fetch_add(1, Ordering::SeqCst);
                        // Held at the `hlt` while the VMM asks: the vCPU stopped.
                        if pause.load(Ordering::SeqCst) {
                            paused.store(true, Ordering::SeqCst);
                            while pause.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                                std::thread::yield_now();
                            }
                            paused.store(false, Ordering::SeqCst);
                        }
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                    }
                    // A write while KVM has no slot there: it reaches no memory.
                    Ok(VcpuExit::MmioWrite(addr, _)) => {
                        assert!((DATA..DATA + DATA_SIZE).contains(&addr), "{addr:#x}");
                        away_writes.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(exit) => panic!("unexpected exit {exit:?}"),
                    Err(e) if e.errno() == libc::EINTR => {}
                    Err(e) => panic!("KVM_RUN: {e}"),
                }
            }
        });
        // Waits for `count` to grow by `by` (the guest's progress), or fails.
        let progress = |count: &AtomicU64, by: u64| {
            let (from, start) = (count.load(Ordering::SeqCst), Instant::now());
            while count.load(Ordering::SeqCst) < from + by {
                assert!(!guest.is_finished(), "the guest stopped");
                assert!(start.elapsed() < PATIENCE, "the guest made no progress");
                std::thread::yield_now();
            }
        };
        // Stops the vCPU at its next `hlt`, or fails.
        let stop_vcpu = || {
            pause.store(true, Ordering::SeqCst);
            let start = Instant::now();
            while !paused.load(Ordering::SeqCst) {
                assert!(!guest.is_finished(), "the guest stopped");
                assert!(start.elapsed() < PATIENCE, "the guest never halted");
                std::thread::yield_now();
            }
        };
        let resume = || pause.store(false, Ordering::SeqCst);
        let mut copied = 0;
        // A pass with the vCPU stopped: the copy then equals the memory.
        let exact = |step: &str| {
            let copied = pass(&slots, &space, &copy, manual);
            assert_kvm_holds(vm, &slots, &space, &copy, step);
            let mut memory = vec![0u8; usize::try_from(DATA_SIZE).unwrap()];
            space
                .memory()
                .read_slice(&mut memory, GuestAddress(DATA))
                .unwrap();
            let copy = copy.lock().unwrap();
            for (page, (m, c)) in memory.chunks(0x1000).zip(copy.chunks(0x1000)).enumerate() {
                assert_eq!(m, c, "{step}: page {page}: a write escaped every pass");
            }
            copied
        };
        for i in 0..PASSES {
            // A halt: 1024 writes, each page written 64 times.
            progress(&halts, 1);
            copied += pass(&slots, &space, &copy, manual);
            assert_kvm_holds(vm, &slots, &space, &copy, &format!("pass {i}"));
            match i % 4 {
                // The slot deleted and registered again: the region removed while the guest
                // writes it (its writes since the pass are in no log now, and its writes
                // while away exit), and inserted again.
                1 => {
                    let region: Arc<Region> = space.find_region(GuestAddress(DATA)).unwrap();
                    space.remove_region(GuestAddress(DATA), DATA_SIZE).unwrap();
                    assert_kvm_holds(vm, &slots, &space, &copy, "removed");
                    progress(&away_writes, 16);
                    for refused in [
                        slots.set_dirty_logging(GuestAddress(DATA), true),
                        slots.fetch_dirty_log(GuestAddress(DATA)).map(drop),
                    ] {
                        assert!(
                            matches!(refused, Err(Error::NotRegistered { .. })),
                            "{refused:?}"
                        );
                        assert_kvm_holds(vm, &slots, &space, &copy, "a call while away");
                    }
                    stop_vcpu();
                    space.insert_region(region).unwrap();
                    assert_kvm_holds(vm, &slots, &space, &copy, "inserted again");
                    // A new slot, logging off: the VMM turns it on and copies the region
                    // whole.
                    let refused = slots.fetch_dirty_log(GuestAddress(DATA));
                    assert!(
                        matches!(refused, Err(Error::DirtyLog { .. })),
                        "{refused:?}"
                    );
                    slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
                    copy_whole(&space, &copy);
                    copied += exact(&format!("pass {i}: inserted again"));
                    resume();
                }
                // The slot registered again without logging and with it: KVM drops its log
                // (the writes since the pass), and logs none of the writes meanwhile.
                2 => {
                    slots.set_dirty_logging(GuestAddress(DATA), false).unwrap();
                    assert_kvm_holds(vm, &slots, &space, &copy, "logging off");
                    progress(&halts, 1);
                    let refused = slots.fetch_dirty_log(GuestAddress(DATA));
                    assert!(
                        matches!(refused, Err(Error::DirtyLog { .. })),
                        "{refused:?}"
                    );
                    assert_kvm_holds(vm, &slots, &space, &copy, "a fetch without logging");
                    stop_vcpu();
                    slots.set_dirty_logging(GuestAddress(DATA), true).unwrap();
                    copy_whole(&space, &copy);
                    copied += exact(&format!("pass {i}: logging on again"));
                    resume();
                }
                // Calls that must fail, change nothing and lose no page of the log.
                3 => {
                    progress(&halts, 1);
                    let refused = slots.fetch_dirty_log(GuestAddress(NOWHERE));
                    assert!(
                        matches!(refused, Err(Error::NotRegistered { .. })),
                        "{refused:?}"
                    );
                    assert_kvm_holds(vm, &slots, &space, &copy, "a fetch where no region is");
                    let refused = slots.set_dirty_logging(GuestAddress(NOWHERE), true);
                    assert!(
                        matches!(refused, Err(Error::NotRegistered { .. })),
                        "{refused:?}"
                    );
                    assert_kvm_holds(vm, &slots, &space, &copy, "logging where no region is");
                    let mut half =
                        DirtyBitmap::new(GuestAddress(DATA), DATA_SIZE / 2, page()).unwrap();
                    let refused = slots.fetch_dirty_log_into(&mut half);
                    assert!(refused.is_err(), "{refused:?}");
                    assert_eq!(half.count(), 0);
                    assert_kvm_holds(vm, &slots, &space, &copy, "a bitmap of another size");
                    stop_vcpu();
                    copied += exact(&format!("pass {i}: after refused calls"));
                    resume();
                }
                _ => {
                    stop_vcpu();
                    copied += exact(&format!("pass {i}"));
                    resume();
                }
            }
        }
        // The last pass, with the vCPU stopped.
        drop(stopping);
        guest.join().unwrap();
        copied + pass(&slots, &space, &copy, manual)
    });
    assert_kvm_holds(vm, &slots, &space, &copy, "the last pass");

    let mut memory = vec![0u8; usize::try_from(DATA_SIZE).unwrap()];
    space
        .memory()
        .read_slice(&mut memory, GuestAddress(DATA))
        .unwrap();
    let copy = copy.lock().unwrap();
    // The guest stopped at a `hlt`, after `halts` times 1024 writes: the last 16 went to the
    // 16 pages in turn, each the 16-bit count (which wraps to 0 every 64 halts).
    let writes = halts.load(Ordering::SeqCst) * 1024;
    for (page, (m, c)) in memory.chunks(0x1000).zip(copy.chunks(0x1000)).enumerate() {
        assert_eq!(m, c, "page {page}: a write escaped every pass");
        let last = (writes - 15 + page as u64) % 0x1_0000;
        assert_eq!(
            u64::from(u16::from_le_bytes([m[0], m[1]])),
            last,
            "page {page}: the guest's last write to it, after {writes} writes"
        );
    }
    eprintln!(
        "manual {manual}: {copied} pages copied by logs over {} halts, {} writes while away",
        halts.load(Ordering::SeqCst),
        away_writes.load(Ordering::SeqCst)
    );
}
