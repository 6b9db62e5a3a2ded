//! Hotplug on one thread while another fetches dirty logs and toggles logging, on the host's
//! real KVM. (Skipped under Miri, which cannot `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use memvisor_kvm::{Error, MemorySlots};
use memvisor_space::{Region, RegionSpec};
use support::{MIB, SetOnDrop, backed_space, kvm_or_skip};
use vm_memory::GuestAddress;

#[test]
fn hotplug_while_another_thread_fetches_and_toggles_ends_in_agreement() {
    let Some(kvm) =
        kvm_or_skip("hotplug_while_another_thread_fetches_and_toggles_ends_in_agreement")
    else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = backed_space(&vm, [RegionSpec::ram(GuestAddress(0), MIB)]);
    let slots = Arc::new(MemorySlots::attach(Arc::clone(&vm), &space).unwrap());
    slots.set_dirty_logging(GuestAddress(0), true).unwrap();
    let page = memvisor_vmem::page_size() as u64;
    // Regions come and go at these bases, in two sizes, so that a base changes size.
    let bases = [4 * MIB, 8 * MIB, 12 * MIB];
    let done = Arc::new(AtomicBool::new(false));
    let plugger = {
        let (space, done) = (space.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            // Set when the plugging ends, or fails: the loop below waits for it.
            let _done = SetOnDrop(done);
            for i in 0..150u64 {
                let base = bases[(i % 3) as usize];
                let size = if i % 2 == 0 { page } else { 2 * page };
                if let Some(r) = space.find_region(GuestAddress(base)) {
                    space.remove_region(r.base(), r.size()).unwrap();
                }
                let region = Region::back(RegionSpec::ram(GuestAddress(base), size))
                    .unwrap()
                    .0;
                space.insert_region(Arc::new(region)).unwrap();
            }
        })
    };
    let (mut fetched, mut round) = (0, 0u64);
    while !done.load(Ordering::SeqCst) {
        round += 1;
        for base in bases {
            let base = GuestAddress(base);
            // Errors the races allow: the region is gone, or its logging is not on yet.
            if round % 16 == 0 {
                match slots.set_dirty_logging(base, round % 32 == 0) {
                    Ok(()) | Err(Error::NotRegistered { .. }) => {}
                    Err(e) => panic!("set_dirty_logging: {e}"),
                }
            }
            match slots.fetch_dirty_log(base) {
                Ok(log) => {
                    assert_eq!(log.base(), base);
                    fetched += 1;
                }
                Err(Error::NotRegistered { .. } | Error::DirtyLog { .. }) => {}
                Err(e) => panic!("fetch_dirty_log: {e}"),
            }
        }
        if round % 16 == 0 {
            assert_eq!(slots.fetch_dirty_log(GuestAddress(0)).unwrap().count(), 0);
        }
    }
    plugger.join().unwrap();
    assert!(fetched > 0);
    // KVM's slots are the space's backed regions, under their slot numbers.
    let snapshot = space.snapshot();
    let mut expected: Vec<(u32, u64, u64)> = snapshot
        .regions_with_slots()
        .map(|(r, slot)| (slot.unwrap(), r.base().0, r.size()))
        .collect();
    expected.sort_unstable();
    let registered: Vec<(u32, u64, u64)> = slots
        .registered()
        .into_iter()
        .map(|e| (e.slot, e.guest.start().0, e.guest.size().unwrap()))
        .collect();
    assert_eq!(registered, expected);
}
