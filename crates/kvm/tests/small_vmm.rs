//! The small VMM example (`examples/small_vmm.rs`) run as a test on the host's real KVM: the
//! plan's devices and the block device's resources collide with nothing, the guest's writes
//! are in memory and are the only pages in the dirty logs, the plugged slot is KVM's until it
//! is unplugged, and after the unplug the guest's write there exits as MMIO. (Skipped where
//! `/dev/kvm` is not usable, and under Miri, which cannot `ioctl` it.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

#[allow(dead_code)]
#[path = "../examples/small_vmm.rs"]
mod small_vmm;

mod support;

use small_vmm::vmm::{LOW_RAM, RAM, request, run};

#[test]
fn small_vmm_runs_its_guest_over_planned_and_plugged_memory() {
    let Some(kvm) = support::kvm_or_skip("small_vmm") else {
        return;
    };
    let summary = run(&kvm).unwrap();
    let high = 4u64 << 30;
    assert_eq!(summary.low_dirty, [1 << 20]);
    assert_eq!(summary.high_dirty, [high + 0x1000]);
    // The plan's first hotplug slot lies right after high RAM (window alignment 2 MiB).
    assert_eq!(summary.plugged, high + (RAM - LOW_RAM));
    assert_eq!(summary.plugged_unlogged_errno, Some(libc::ENOENT));
    assert_eq!(summary.plugged_dirty, [summary.plugged + 0x3000]);
    assert_eq!(summary.plugged_word, 0xfeed);
    assert_eq!(summary.after_unplug_mmio, Some(summary.plugged + 0x3000));
    let (exit, window) = summary.device_mmio.unwrap();
    assert_eq!(exit, window);
    assert_eq!(summary.slots_at_end, 2);

    // The block device's resources collide with nothing the plan holds.
    let plan = memvisor_space::plan::plan(&request()).unwrap();
    assert!(plan.devices.iter().all(|d| d.irq != summary.blk_gsi));
    assert!(!plan.platform.legacy_irqs().contains(&summary.blk_gsi));
    assert!(plan.platform.irq_range().contains(&summary.blk_gsi));
    assert_ne!(summary.blk_pci_device, 0);
    let bar = summary.blk_bar.unwrap();
    assert!(
        plan.placer
            .allocations()
            .all(|(_, range)| !range.as_range().overlaps(&bar))
    );
}
