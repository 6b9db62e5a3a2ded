//! The tests' guest on a thread of its own (`support::Running`), dropped without being stopped
//! or joined: it stops, and how it stopped is not lost. (Skipped under Miri, which cannot
//! `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use memvisor_kvm::MemorySlots;
use memvisor_space::{AddressSpace, Layout, RegionSpec};
use support::{Running, kvm_or_skip, load_program, set_table, vcpu, vm};
use vm_memory::GuestAddress;

const MIB2: u64 = 2 << 20;

#[test]
fn a_guest_that_stopped_on_its_own_fails_its_drop_with_how_it_stopped() {
    let Some(kvm) = kvm_or_skip("a_guest_that_stopped_on_its_own_fails_its_drop") else {
        return;
    };
    let vm = vm(&kvm);
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let (space, _) = AddressSpace::builder(layout)
        .slots(memvisor_kvm::slot_limit(&vm))
        .region(RegionSpec::ram(GuestAddress(0), MIB2))
        .back()
        .unwrap();
    load_program(&space);
    // A page whose host word was never written: the guest stops at it.
    set_table(&space, &[(MIB2 / 2, 1)]);
    let _slots = MemorySlots::attach(std::sync::Arc::clone(&vm), &space).unwrap();
    let guest = Running::start(vcpu(&kvm, &vm), &space);
    let start = Instant::now();
    while !guest.is_finished() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        guest.is_finished(),
        "the guest did not stop at the bad page"
    );
    // A test that never asked how its guest stopped: the drop tells it.
    let dropped = catch_unwind(AssertUnwindSafe(|| drop(guest)));
    let panic = dropped.expect_err("the drop hid how the guest stopped");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("BadHostWord"), "{message}");
}
