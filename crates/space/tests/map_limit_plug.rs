//! A plug refused at the process's mapping limit (the slot's `mmap` into the hotplug window
//! needs a mapping of its own, which the kernel refuses with `ENOMEM` before touching the
//! window) leaves the hotplug slot free: once mappings are free again, the same plug
//! succeeds. The limit is real (vmem's `tests/support/map_limit.rs` fills it for a moment);
//! alone in its file, as nothing else of the process may map meanwhile. 64-bit hosts only (the
//! layout's hotplug window is reserved whole).
#![cfg(all(target_os = "linux", target_pointer_width = "64", not(miri)))]

use std::sync::Arc;

use memvisor_space::{AddressSpace, Backing, Error, Layout, RegionSpec, WindowKind};
use vm_memory::GuestAddress;

#[path = "../../vmem/tests/support/map_limit.rs"]
mod map_limit;
use map_limit::at_mapping_limit;

const MIB: u64 = 1 << 20;

#[test]
fn plug_refused_at_the_mapping_limit_keeps_the_slot_free() {
    let layout = Layout::x86_64()
        .ram(1 << 30)
        .hotplug(1 << 30)
        .build()
        .unwrap();
    let (space, _) = AddressSpace::back(layout, Vec::new()).unwrap();
    let window = space
        .layout()
        .windows_of(WindowKind::Hotplug)
        .next()
        .unwrap()
        .start();
    // One backing: filling the limit takes a few hundred milliseconds, and the slot's fate
    // does not depend on what is mapped into it.
    for backing in [Backing::Memfd] {
        // In the middle of the window, so that the slot's mapping splits the window's.
        let spec = RegionSpec::ram(GuestAddress(window.0 + 64 * MIB), 4 * MIB)
            .with_hotplug(true)
            .with_backing(backing.clone());
        let before = space.snapshot();
        let refused = at_mapping_limit(|| space.plug(spec.clone()).map(|_| ()));
        let Err(e) = refused else {
            eprintln!("{backing:?}: the kernel had a mapping to spare; nothing refused");
            drop(space.remove_region(spec.base(), spec.size()).unwrap());
            continue;
        };
        assert!(
            matches!(e, Error::Os { .. }),
            "{backing:?}: expected the kernel's refusal of the mapping, got {e:?}"
        );
        assert!(Arc::ptr_eq(&before, &space.snapshot()), "{backing:?}");
        // The limit is lifted: the slot is free, the plug goes through.
        let (region, _) = space
            .plug(spec.clone())
            .unwrap_or_else(|e| panic!("{backing:?}: the slot was kept after the refusal: {e}"));
        drop(region);
        drop(space.remove_region(spec.base(), spec.size()).unwrap());
    }
}
