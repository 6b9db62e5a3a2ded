//! Regions KVM refuses at the edges of `KVM_SET_USER_MEMORY_REGION`, on the host's real KVM: more
//! pages than `KVM_MEM_MAX_NR_PAGES`, a guest range ending past the largest guest physical
//! address KVM maps, a guest address off the host page, and a host address outside user space.
//! Each refusal is a typed error naming the region, at attach as at insertion; it leaves the
//! address space, the slots and KVM as they were, and the slot number free for the next region.
//! (Skipped under Miri, which cannot `ioctl` `/dev/kvm`.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;
use std::sync::Arc;

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VmFd};
use memvisor_kvm::{Error, MemorySlots, slot_limit};
use memvisor_space::{AddressSpace, Layout, Region, RegionSpec, RegionType, Window, WindowKind};
use support::{MIB, backed, entry, kvm_or_skip, kvm_refuses_probe, page};
use vm_memory::{GuestAddress, GuestRegionMmap, MmapRegion};

/// `KVM_MEM_MAX_NR_PAGES` (`include/linux/kvm_host.h`): the most pages one slot may have.
const KVM_MEM_MAX_NR_PAGES: u64 = (1 << 31) - 1;
/// The largest MAXPHYADDR of x86: KVM maps no guest physical address from `2^52` on, with
/// two-dimensional paging (bounded by the host's MAXPHYADDR) as with shadow paging (52 bits).
const X86_MAX_PHYS_BITS: u32 = 52;
/// One gibibyte: the RAM window `[0, 1 GiB)` holds the regions KVM takes, the region under
/// test goes past it.
const GIB: u64 = 1 << 30;
/// The slot number of the probe that asks KVM whether it maps a guest address.
const PROBE_SLOT: u32 = 500;

/// An empty address space of RAM windows over `[0, 1 GiB)` and `extra`, as many slot numbers as
/// `vm` takes, and no address limit of its own: KVM is the one to refuse.
fn space_for(vm: &VmFd, extra: &[(u64, u64)]) -> AddressSpace {
    let windows = std::iter::once((0, GIB))
        .chain(extra.iter().copied())
        .map(|(start, size)| Window::new(WindowKind::Ram, GuestAddress(start), size).unwrap());
    let layout = Layout::new(GuestAddress(u64::MAX), windows).unwrap();
    AddressSpace::builder(layout)
        .slots(slot_limit(vm))
        .plan()
        .unwrap()
}

/// Whether KVM maps guest memory at `addr`: a one-page slot of our own there is refused exactly
/// when it overlaps a slot KVM has.
fn kvm_holds(vm: &VmFd, addr: u64) -> bool {
    kvm_refuses_probe(vm, PROBE_SLOT, addr)
}

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

/// `(base, size, slot)` of every region of the space.
fn regions(space: &AddressSpace) -> Vec<(u64, u64, Option<u32>)> {
    space
        .snapshot()
        .regions_with_slots()
        .map(|(r, slot)| (r.base().0, r.size(), slot))
        .collect()
}

/// Checks that `err` is KVM's refusal (`EINVAL`) of `region` under `slot`, naming the region.
fn assert_refused(err: &Error, slot: u32, region: &Region) {
    let Error::SetMemoryRegion {
        slot: s,
        base,
        size,
        source,
        ..
    } = err
    else {
        panic!("not KVM's refusal: {err:?}");
    };
    assert_eq!(
        (*s, *base, *size),
        (slot, region.base().0, region.size()),
        "{err}"
    );
    assert_eq!(source.errno(), libc::EINVAL, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("{:#x}", region.base().0))
            && text.contains(&format!("{:#x}", region.size()))
            && text.contains(&format!("slot {slot}")),
        "{text}"
    );
}

/// Checks that KVM refuses `bad` (in a RAM window of its own, `extra` with `[0, 1 GiB)`) at
/// attach and at insertion, as the crate promises: the error names it, the address space, the
/// slots and KVM stay as they were, and its slot number goes to the next region.
fn refused_at_attach_and_insertion(test: &str, vm: &Arc<VmFd>, bad: &Arc<Region>) {
    let space = space_for(vm, &[(bad.base().0, bad.size())]);
    let bad_entry = (bad.base().0, bad.size(), Some(1));

    // At attach: slot 0 goes to KVM first, then `bad` (slot 1) is refused.
    space.insert_region(backed(0, MIB)).unwrap();
    space.insert_region(Arc::clone(bad)).unwrap();
    let generation = space.snapshot().generation();
    let err = MemorySlots::attach(Arc::clone(vm), &space).unwrap_err();
    assert_refused(&err, 1, bad);
    assert_eq!(space.snapshot().generation(), generation, "{test}");
    assert_eq!(
        regions(&space),
        [(0, MIB, Some(0)), bad_entry],
        "{test}: the space is as it was"
    );
    // Slot 0 left KVM again.
    assert!(!kvm_holds(vm, 0), "{test}: slot 0 left in KVM");
    // The listener left the space with the failed attach: this removal reaches no slots.
    space.remove_region(bad.base(), bad.size()).unwrap();
    assert_eq!(
        Arc::strong_count(bad),
        1,
        "{test}: the region is still held"
    );

    // At insertion: the space rolls the change back.
    let slots = MemorySlots::attach(Arc::clone(vm), &space).unwrap();
    assert_eq!(slots.registered(), [entry(&space, 0, 0, MIB, 0)], "{test}");
    for _ in 0..2 {
        let generation = space.snapshot().generation();
        let err = space.insert_region(Arc::clone(bad)).unwrap_err();
        let memvisor_space::Error::Listener { base, source } = &err else {
            panic!("{test}: {err:?}");
        };
        assert_eq!(*base, bad.base().0, "{test}: {err}");
        let kvm_err = source
            .downcast_ref::<Error>()
            .unwrap_or_else(|| panic!("{test}: {source}"));
        assert_refused(kvm_err, 1, bad);
        assert_eq!(space.snapshot().generation(), generation, "{test}");
        assert_eq!(regions(&space), [(0, MIB, Some(0))], "{test}");
        assert_eq!(slots.registered(), [entry(&space, 0, 0, MIB, 0)], "{test}");
        assert_eq!(slots.slot_at(bad.base()), None, "{test}");
        assert_eq!(slots.out_of_sync(), [], "{test}");
        assert_eq!(
            Arc::strong_count(bad),
            1,
            "{test}: the region is still held"
        );
        assert!(kvm_holds(vm, 0) && !kvm_holds(vm, 4 * MIB), "{test}");

        // Slot 1 is free: the next region takes it, and KVM takes the region.
        let next = backed(4 * MIB, MIB);
        space.insert_region(Arc::clone(&next)).unwrap();
        assert_eq!(
            slots.registered(),
            [
                entry(&space, 0, 0, MIB, 0),
                entry(&space, 1, 4 * MIB, MIB, 0)
            ],
            "{test}"
        );
        assert!(kvm_holds(vm, 4 * MIB), "{test}");
        // Gone again, so the next round refuses `bad` under slot 1 once more.
        space.remove_region(next.base(), next.size()).unwrap();
        assert!(!kvm_holds(vm, 4 * MIB), "{test}");
    }
    drop(slots);
    assert!(!kvm_holds(vm, 0), "{test}: slot 0 left in KVM");
}

#[test]
fn region_of_more_pages_than_kvm_takes_is_refused_and_changes_nothing() {
    let test = "region_of_more_pages_than_kvm_takes";
    let Some(kvm) = kvm_or_skip(test) else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    // One page more than KVM takes (8 TiB with 4 KiB pages), at 1 TiB: a guest range inside
    // the guest's MAXPHYADDR wherever that is 44 bits or more, so the page count is what KVM
    // refuses. The memory is a vm-memory mapping with `MAP_NORESERVE`: reserved, not charged,
    // and none of it is touched. (The largest slot KVM takes is not made here: KVM allocates
    // its per-page records at once, 16 GiB of them with shadow paging.)
    let size = (KVM_MEM_MAX_NR_PAGES + 1) * page();
    let base = 1 << 40;
    if base + size > 1 << guest_phys_bits(&kvm) {
        eprintln!("{test}: the guest's MAXPHYADDR is below the region's end as well");
    }
    let mapping = MmapRegion::<()>::build(
        None,
        usize::try_from(size).unwrap(),
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
    )
    .unwrap();
    let guest = GuestRegionMmap::new(mapping, GuestAddress(base)).unwrap();
    let bad = Arc::new(Region::from_guest_region_mmap(RegionType::Ram, &guest).unwrap());
    drop(guest);
    refused_at_attach_and_insertion(test, &vm, &bad);
}

#[test]
fn region_ending_past_the_largest_guest_address_is_refused_and_changes_nothing() {
    let test = "region_ending_past_the_largest_guest_address";
    let Some(kvm) = kvm_or_skip(test) else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    // The crate does not know the VM's largest guest physical address, and KVM does not say:
    // x86 KVM answers 0 to `KVM_CAP_VM_GPA_BITS`, and the limit it checks is the host's
    // MAXPHYADDR (52 bits with shadow paging), which may be above the guest's in `CPUID`. No
    // x86 KVM maps past `2^52`: 2 MiB across that line is refused.
    let top = 1u64 << X86_MAX_PHYS_BITS;
    let across = backed(top - MIB, 2 * MIB);
    refused_at_attach_and_insertion(test, &vm, &across);
    // Wholly past it too.
    let past = backed(top, 2 * MIB);
    refused_at_attach_and_insertion(test, &vm, &past);

    // Up to the guest's MAXPHYADDR, KVM maps it.
    let bits = guest_phys_bits(&kvm);
    let end = 1u64 << bits;
    let below = backed(end - 2 * MIB, 2 * MIB);
    let space = space_for(&vm, &[(below.base().0, below.size())]);
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    space.insert_region(Arc::clone(&below)).unwrap();
    assert_eq!(
        slots.registered(),
        [entry(&space, 0, end - 2 * MIB, 2 * MIB, 0)],
        "{bits} bits"
    );
    space.remove_region(below.base(), below.size()).unwrap();
    assert!(slots.is_empty());
}

#[test]
fn region_at_host_address_outside_user_space_is_refused_and_changes_nothing() {
    let test = "region_at_host_address_outside_user_space";
    let Some(kvm) = kvm_or_skip(test) else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    // KVM takes any host range of this process's user space, mapped or not, and refuses the
    // rest (`access_ok`). Memory the space maps is always in user space, so the region is made
    // over a vm-memory mapping that claims an address in the kernel's half (above the user space
    // of 4- and 5-level page tables alike).
    let addr = std::ptr::without_provenance_mut::<u8>(0xffff_f000_0000_0000);
    let size: usize = 2 << 20;
    // SAFETY: nothing is mapped there, but nothing reads or writes through this mapping: the
    // space only records the region, KVM refuses it before using the address, and the mapping
    // does not own the range (dropping it unmaps nothing).
    let mapping = unsafe {
        MmapRegion::build_raw(
            addr,
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        )
    }
    .unwrap();
    let guest = GuestRegionMmap::new(mapping, GuestAddress(GIB)).unwrap();
    let bad = Arc::new(Region::from_guest_region_mmap(RegionType::Ram, &guest).unwrap());
    assert_eq!(bad.host_ptr(), Some(addr));
    refused_at_attach_and_insertion(test, &vm, &bad);
}

#[test]
fn region_off_the_host_page_is_refused_before_kvm_and_changes_nothing() {
    let Some(kvm) = kvm_or_skip("region_off_the_host_page") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let space = space_for(&vm, &[]);
    space.insert_region(backed(0, MIB)).unwrap();
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    let generation = space.snapshot().generation();
    // KVM refuses a guest address off its page (the host's); x86-64's 4 KiB host page is the
    // guest page the space aligns every region to, so no such region comes to be, whichever
    // way it is made.
    assert_eq!(page(), 0x1000);
    let base = 4 * MIB + page() / 2;
    let misaligned = |err: memvisor_space::Error| {
        assert!(
            matches!(err, memvisor_space::Error::Misaligned { base: b, page_size: 0x1000, .. } if b == base),
            "{err}"
        );
    };
    misaligned(Region::back(RegionSpec::ram(GuestAddress(base), MIB)).unwrap_err());
    misaligned(Region::plan(RegionSpec::ram(GuestAddress(base), MIB)).unwrap_err());
    let mapping = MmapRegion::<()>::new(1 << 20).unwrap();
    let guest = GuestRegionMmap::new(mapping, GuestAddress(base)).unwrap();
    misaligned(Region::from_guest_region_mmap(RegionType::Ram, &guest).unwrap_err());
    // KVM itself refuses such an address (checked with a slot of our own), whatever the
    // region's memory.
    let memory = backed(8 * MIB, MIB);
    let mem = kvm_userspace_memory_region {
        slot: PROBE_SLOT,
        flags: 0,
        guest_phys_addr: base,
        memory_size: MIB,
        userspace_addr: memory.host_ptr().unwrap() as u64,
    };
    // SAFETY: `memory` outlives the VM: `slots` and `vm` are dropped before it below (were the
    // slot taken).
    let err = unsafe { vm.set_user_memory_region(mem) }.unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);

    assert_eq!(space.snapshot().generation(), generation);
    assert_eq!(regions(&space), [(0, MIB, Some(0))]);
    assert_eq!(slots.registered(), [entry(&space, 0, 0, MIB, 0)]);
    // Slot 1 is still the next one, and KVM takes it.
    space.insert_region(backed(4 * MIB, MIB)).unwrap();
    assert_eq!(
        slots.registered(),
        [
            entry(&space, 0, 0, MIB, 0),
            entry(&space, 1, 4 * MIB, MIB, 0)
        ]
    );
    assert!(kvm_holds(&vm, 4 * MIB));
    drop(slots);
    drop(vm);
    drop(memory);
}

#[test]
fn plug_ending_past_the_largest_guest_address_is_refused_and_frees_its_place() {
    let Some(kvm) = kvm_or_skip("plug_ending_past_the_largest_guest_address") else {
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    // A hotplug window across `2^52`, which no x86 KVM maps past.
    let top = 1u64 << X86_MAX_PHYS_BITS;
    let windows = [
        Window::new(WindowKind::Ram, GuestAddress(0), GIB).unwrap(),
        Window::new(WindowKind::Hotplug, GuestAddress(top - GIB), 2 * GIB).unwrap(),
    ];
    let layout = Layout::new(GuestAddress(u64::MAX), windows).unwrap();
    let (space, _) = AddressSpace::builder(layout)
        .slots(slot_limit(&vm))
        .region(RegionSpec::ram(GuestAddress(0), MIB))
        .back()
        .unwrap();
    let slots = MemorySlots::attach(Arc::clone(&vm), &space).unwrap();
    let across = RegionSpec::ram(GuestAddress(top - MIB), 2 * MIB).with_hotplug(true);
    // Twice: the refused plug gave its place in the window back (else the second would be
    // `SlotBusy`) and its slot number.
    for _ in 0..2 {
        let generation = space.snapshot().generation();
        let err = space.plug(across.clone()).unwrap_err();
        let memvisor_space::Error::Listener { base, source } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(*base, top - MIB, "{err}");
        let kvm_err = source.downcast_ref::<Error>().unwrap();
        let Error::SetMemoryRegion {
            slot: 1,
            base,
            size,
            source,
            ..
        } = kvm_err
        else {
            panic!("{kvm_err:?}");
        };
        assert_eq!((*base, *size), (top - MIB, 2 * MIB), "{kvm_err}");
        assert_eq!(source.errno(), libc::EINVAL, "{kvm_err}");
        assert_eq!(space.snapshot().generation(), generation);
        assert_eq!(regions(&space), [(0, MIB, Some(0))]);
        assert_eq!(slots.registered(), [entry(&space, 0, 0, MIB, 0)]);
    }
    // The place below `2^52` next to it plugs, under slot 1.
    let below = RegionSpec::ram(GuestAddress(top - 4 * MIB), 2 * MIB).with_hotplug(true);
    space.plug(below).unwrap();
    assert_eq!(
        slots.registered(),
        [
            entry(&space, 0, 0, MIB, 0),
            entry(&space, 1, top - 4 * MIB, 2 * MIB, 0)
        ]
    );
    space
        .remove_region(GuestAddress(top - 4 * MIB), 2 * MIB)
        .unwrap();
    // And the refused place is free: a region ending right below `2^52` plugs there.
    let last = RegionSpec::ram(GuestAddress(top - 2 * MIB), 2 * MIB).with_hotplug(true);
    space.plug(last).unwrap();
    assert_eq!(
        slots.registered(),
        [
            entry(&space, 0, 0, MIB, 0),
            entry(&space, 1, top - 2 * MIB, 2 * MIB, 0)
        ]
    );
}
