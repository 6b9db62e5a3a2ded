//! The guest's physical address width (MAXPHYADDR) and the slots, on the host's real KVM. KVM
//! takes a slot anywhere below the largest guest physical address it maps (the host's
//! MAXPHYADDR, 52 bits with shadow paging), which may be above the width the VMM gives the
//! guest in `CPUID`: the width is the address space's limit (`LayoutBuilder::phys_bits`, or
//! `Layout::new`'s limit), and a region past it is refused by the space before KVM hears of it.
//! A region ending right at the top of the width (where VMMs put their 64-bit device area and
//! the memory-mapped BARs in it) is a slot. (Skipped under Miri, which cannot `ioctl`
//! `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;
use std::sync::Arc;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::Kvm;
use memvisor_kvm::{MemorySlots, slot_limit};
use memvisor_space::{AddressSpace, Layout, Window, WindowKind};
use support::{MIB, backed, entry, kvm_or_skip, kvm_refuses_probe};
use vm_memory::GuestAddress;

const GIB: u64 = 1 << 30;
/// The slot number of the probe that asks KVM whether it maps a guest address.
const PROBE_SLOT: u32 = 500;

/// The guest's MAXPHYADDR KVM reports (`CPUID` leaf `0x8000_0008`, `EAX[7:0]`).
fn guest_phys_bits(kvm: &Kvm) -> u32 {
    let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
    let leaf = cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0x8000_0008)
        .expect("KVM reports CPUID leaf 0x8000_0008");
    leaf.eax & 0xff
}

#[test]
fn regions_up_to_the_guest_width_are_slots_and_past_it_refused_before_kvm() {
    let test = "regions_up_to_the_guest_width";
    let Some(kvm) = kvm_or_skip(test) else {
        return;
    };
    let reported = guest_phys_bits(&kvm);
    eprintln!("{test}: KVM reports a guest MAXPHYADDR of {reported} bits");
    assert!((36..=52).contains(&reported), "{reported} bits");
    // The width KVM reports, and narrower ones a VMM may give its guest instead.
    for bits in [reported, 39.min(reported), 36] {
        let vm = Arc::new(kvm.create_vm().unwrap());
        let top = 1u64 << bits;
        // RAM at 0, and a window of the last GiB below the top, as a VMM's 64-bit device area.
        let windows = [
            Window::new(WindowKind::Ram, GuestAddress(0), GIB).unwrap(),
            Window::new(WindowKind::Ram, GuestAddress(top - GIB), GIB).unwrap(),
        ];
        let layout = Layout::new(GuestAddress(top - 1), windows).unwrap();
        let space = AddressSpace::builder(layout)
            .slots(slot_limit(&vm))
            .plan()
            .unwrap();
        space.insert_region(backed(0, MIB)).unwrap();
        let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();

        // Past the width, and across its end: refused by the space, before any listener.
        for (base, size) in [(top, 2 * MIB), (top - MIB, 2 * MIB), (1 << 62, MIB)] {
            let generation = space.snapshot().generation();
            let err = space.insert_region(backed(base, size)).unwrap_err();
            assert!(
                matches!(err, memvisor_space::Error::AddressLimit { base: b, size: s, limit }
                    if (b, s, limit) == (base, size, top - 1)),
                "{bits} bits: {err:?}"
            );
            assert_eq!(space.snapshot().generation(), generation, "{bits} bits");
            assert_eq!(
                slots.registered(),
                [entry(&space, 0, 0, MIB, 0)],
                "{bits} bits"
            );
        }
        assert!(
            !kvm_refuses_probe(&vm, PROBE_SLOT, top - MIB),
            "{bits} bits"
        );
        if bits < reported {
            // KVM itself would map past this width: the limit is the space's.
            assert!(!kvm_refuses_probe(&vm, PROBE_SLOT, top), "{bits} bits");
        }

        // Ending right at the top: a slot, logged like any other.
        let last = backed(top - 2 * MIB, 2 * MIB);
        space.insert_region(Arc::clone(&last)).unwrap();
        assert_eq!(
            slots.registered(),
            [
                entry(&space, 0, 0, MIB, 0),
                entry(&space, 1, top - 2 * MIB, 2 * MIB, 0)
            ],
            "{bits} bits"
        );
        assert!(kvm_refuses_probe(&vm, PROBE_SLOT, top - MIB), "{bits} bits");
        slots.set_dirty_logging(last.base(), true).unwrap();
        assert_eq!(slots.fetch_dirty_log(last.base()).unwrap().count(), 0);
        space.remove_region(last.base(), last.size()).unwrap();
        assert_eq!(
            slots.registered(),
            [entry(&space, 0, 0, MIB, 0)],
            "{bits} bits"
        );
        assert!(
            !kvm_refuses_probe(&vm, PROBE_SLOT, top - MIB),
            "{bits} bits"
        );
    }
}

#[test]
fn the_x86_64_preset_limits_the_space_to_its_phys_bits() {
    let test = "the_x86_64_preset_limits_the_space_to_its_phys_bits";
    let Some(kvm) = kvm_or_skip(test) else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    // A guest of 36 bits: the preset's limit is `2^36 - 1`, whatever KVM would map.
    let layout = Layout::x86_64()
        .phys_bits(36)
        .ram(GIB)
        .hotplug(GIB)
        .build()
        .unwrap();
    assert_eq!(layout.limit(), GuestAddress((1 << 36) - 1));
    let (space, _) = AddressSpace::builder(layout)
        .slots(slot_limit(&vm))
        .back()
        .unwrap();
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    let before = slots.registered();
    let err = space.insert_region(backed(1 << 36, 2 * MIB)).unwrap_err();
    assert!(
        matches!(err, memvisor_space::Error::AddressLimit { .. }),
        "{err:?}"
    );
    assert_eq!(slots.registered(), before);
    assert!(!kvm_refuses_probe(&vm, PROBE_SLOT, 1 << 36));
}
