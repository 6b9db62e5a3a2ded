//! Where each region type goes: for every region type, hot-pluggable or not, and every kind of
//! layout window (and the gaps between them), what `WindowKind::for_region`, `Layout::check`,
//! `AddressSpace::plan` and `AddressSpace::insert_region` answer, and that hot-pluggable RAM
//! given to `insert_region` rather than `plug` is held to the hotplug window too.

use std::sync::Arc;

use memvisor_space::{
    AddressSpace, Backing, Error, Layout, Region, RegionSpec, RegionType, Window, WindowKind,
};
use vm_memory::GuestAddress;

const GIB: u64 = 1 << 30;
const PAGE: u64 = 0x1000;

const TYPES: [RegionType; 5] = [
    RegionType::Ram,
    RegionType::Device,
    RegionType::Dax,
    RegionType::Firmware,
    RegionType::Reserved,
];

const KINDS: [WindowKind; 6] = [
    WindowKind::Ram,
    WindowKind::Device,
    WindowKind::Dax,
    WindowKind::Hotplug,
    WindowKind::Firmware,
    WindowKind::Reserved,
];

/// One window of each kind, 1 GiB each, with a 1 GiB gap after each.
fn layout() -> Layout {
    let windows = KINDS
        .iter()
        .enumerate()
        .map(|(i, &kind)| Window::new(kind, GuestAddress(2 * GIB * i as u64), GIB).unwrap());
    Layout::new(GuestAddress((1 << 40) - 1), windows).unwrap()
}

fn spec(ty: RegionType, hotplug: bool, base: u64) -> RegionSpec {
    let backing = match ty {
        RegionType::Device | RegionType::Reserved => Backing::None,
        _ => Backing::AnonymousPrivate,
    };
    RegionSpec::new(ty, GuestAddress(base), PAGE)
        .with_backing(backing)
        .with_hotplug(hotplug)
}

#[test]
fn every_type_and_hotplug_pair_goes_only_in_its_window_kind() {
    let layout = layout();
    for ty in TYPES {
        for hotplug in [false, true] {
            let want = WindowKind::for_region(ty, hotplug);
            let expected_kind = match (ty, hotplug) {
                (RegionType::Ram, true) => Some(WindowKind::Hotplug),
                (RegionType::Ram, false) => Some(WindowKind::Ram),
                (RegionType::Device, _) => Some(WindowKind::Device),
                (RegionType::Dax, _) => Some(WindowKind::Dax),
                (RegionType::Firmware, _) => Some(WindowKind::Firmware),
                (RegionType::Reserved, _) => None,
            };
            assert_eq!(want, expected_kind, "{ty:?} hotplug {hotplug}");
            // Only RAM is hot-pluggable: any other type so marked is refused by its spec.
            let valid = !hotplug || ty == RegionType::Ram;
            for (i, kind) in KINDS.iter().enumerate() {
                for (base, inside) in [
                    (2 * GIB * i as u64, Some(*kind)),
                    ((2 * i as u64 + 1) * GIB, None),
                ] {
                    let s = spec(ty, hotplug, base);
                    let fits = want.is_none() || want == inside;
                    let checked = layout.check(&s);
                    assert_eq!(
                        checked.is_ok(),
                        fits,
                        "{ty:?} hotplug {hotplug} at {base:#x}: {checked:?}"
                    );
                    if let Err(e) = checked {
                        assert!(
                            matches!(e, Error::OutsideWindow { window, .. } if Some(window) == want),
                            "{e}"
                        );
                    }
                    let planned = AddressSpace::plan(layout.clone(), [s.clone()]);
                    assert_eq!(
                        planned.is_ok(),
                        valid && fits,
                        "{ty:?} {hotplug} {base:#x}: {planned:?}"
                    );
                    let space = AddressSpace::plan(layout.clone(), []).unwrap();
                    match Region::plan(s.clone()) {
                        Ok(region) => {
                            assert!(valid);
                            let inserted = space.insert_region(Arc::new(region));
                            assert_eq!(inserted.is_ok(), fits, "{ty:?} {hotplug} {base:#x}");
                            assert_eq!(space.snapshot().len(), usize::from(fits));
                        }
                        Err(e) => {
                            assert!(!valid, "{e}");
                            assert!(matches!(e, Error::InvalidSpec { .. }), "{e}");
                        }
                    }
                }
            }
        }
    }
}

/// Hot-pluggable RAM with memory of its own (`Region::back`) given to `insert_region` outside
/// the hotplug window is refused, in a backed space as in a planned one, and changes nothing.
#[test]
fn backed_hotplug_region_inserted_outside_the_hotplug_window_is_refused() {
    let layout = Layout::x86_64().ram(GIB).hotplug(GIB).build().unwrap();
    let hotplug = layout
        .windows_of(WindowKind::Hotplug)
        .next()
        .unwrap()
        .start()
        .0;
    let (space, _) =
        AddressSpace::back(layout.clone(), [RegionSpec::ram(GuestAddress(0), 2 << 20)]).unwrap();
    for base in [4 << 20, 3 * GIB, hotplug + 2 * GIB] {
        let (region, _) =
            Region::back(RegionSpec::ram(GuestAddress(base), 2 << 20).with_hotplug(true)).unwrap();
        let err = space.insert_region(Arc::new(region)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::OutsideWindow {
                    window: WindowKind::Hotplug,
                    ..
                }
            ),
            "{base:#x}: {err}"
        );
        assert_eq!(space.snapshot().len(), 1);
        assert_eq!(space.snapshot().generation(), 0);
    }
}

/// Hot-pluggable RAM with memory of its own, given to `insert_region` inside the hotplug
/// window, is taken as it is: its memory stays its own mapping (only `plug` maps memory
/// through the window's reservation), the place is held against a plug, and once it is
/// removed the place can be plugged.
#[test]
fn hotplug_region_with_its_own_memory_is_taken_inside_the_hotplug_window() {
    let layout = Layout::x86_64().ram(GIB).hotplug(GIB).build().unwrap();
    let hotplug = layout
        .windows_of(WindowKind::Hotplug)
        .next()
        .unwrap()
        .start()
        .0;
    let (space, report) =
        AddressSpace::back(layout, [RegionSpec::ram(GuestAddress(0), 2 << 20)]).unwrap();
    let (window_host, window_len) = report.hotplug_window.unwrap();
    let spec = RegionSpec::ram(GuestAddress(hotplug), 2 << 20).with_hotplug(true);
    let (region, _) = Region::back(spec.clone()).unwrap();
    let region = Arc::new(region);
    space.insert_region(Arc::clone(&region)).unwrap();
    let host = region.host_ptr().unwrap() as usize;
    assert!(
        host + (2 << 20) <= window_host || host >= window_host + window_len,
        "its own mapping, not the window's"
    );
    let err = space.plug(spec.clone()).unwrap_err();
    assert!(matches!(err, Error::Overlap { .. }), "{err}");
    let removed = space.remove_region(GuestAddress(hotplug), 2 << 20).unwrap();
    drop(removed);
    drop(region);
    let (plugged, plug_report) = space.plug(spec).unwrap();
    assert!(plug_report.in_hotplug_window);
    let host = plugged.host_ptr().unwrap() as usize;
    assert!(host >= window_host && host + (2 << 20) <= window_host + window_len);
    space.snapshot().check_invariants();
}
