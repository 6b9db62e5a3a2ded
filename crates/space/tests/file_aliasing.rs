//! Two regions over the same bytes of one file: guest writes through one would change the
//! other's memory without marking its dirty log, and vm-memory users take distinct guest
//! ranges for distinct memory; so writable aliases are refused, by the file's identity (not
//! its path), on every way in. Read-only aliases (one firmware image at two addresses) change
//! nothing and are taken.
#![cfg(unix)]
#![cfg(not(miri))]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memvisor_space::{
    AddressSpace, Backing, Error, Layout, Protection, Region, RegionSpec, RegionType, WindowKind,
};
use vm_memory::GuestAddress;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A file of `len` bytes in a directory of its own for this test.
fn file(name: &str, len: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "memvisor-space-alias-{name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("guest.img");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(b"image").unwrap();
    f.set_len(len).unwrap();
    path
}

fn on_file(spec: RegionSpec, path: &Path, offset: u64) -> RegionSpec {
    spec.with_backing(Backing::File {
        path: path.to_owned(),
        offset,
    })
}

fn ram(base: u64, size: u64, path: &Path, offset: u64) -> RegionSpec {
    on_file(RegionSpec::ram(GuestAddress(base), size), path, offset)
}

fn layout() -> Layout {
    Layout::x86_64().ram(GIB).hotplug(GIB).build().unwrap()
}

fn assert_aliased(err: &Error, base: u64, other_base: u64) {
    assert!(
        matches!(err, Error::FileAliased { base: b, other_base: o } if *b == base && *o == other_base),
        "{err}"
    );
}

#[test]
fn back_and_plan_refuse_two_writable_regions_over_the_same_bytes_of_a_file() {
    let path = file("back", 8 * MIB);
    for (offset, aliased) in [
        (0, true),
        (MIB, true),
        (2 * MIB - 4096, true),
        (2 * MIB, false),
        (4 * MIB, false),
    ] {
        let specs = [
            ram(0, 2 * MIB, &path, 0),
            ram(4 * MIB, 2 * MIB, &path, offset),
        ];
        let backed = AddressSpace::back(layout(), specs.clone());
        let planned = AddressSpace::plan(layout(), specs);
        if aliased {
            assert_aliased(&backed.unwrap_err(), 4 * MIB, 0);
            assert_aliased(&planned.unwrap_err(), 4 * MIB, 0);
        } else {
            assert_eq!(backed.unwrap().0.snapshot().len(), 2);
            assert_eq!(planned.unwrap().snapshot().len(), 2);
        }
    }
}

/// The file is known by what it is, not by the path that names it: a hard link and a symbolic
/// link to it are the same file, and so is a region's own file reached through `/proc`.
#[test]
fn another_path_to_the_same_file_is_the_same_file() {
    let path = file("links", 4 * MIB);
    let hard = path.with_file_name("hard.img");
    let soft = path.with_file_name("soft.img");
    let _ = std::fs::remove_file(&hard);
    let _ = std::fs::remove_file(&soft);
    std::fs::hard_link(&path, &hard).unwrap();
    std::os::unix::fs::symlink(&path, &soft).unwrap();
    for other in [&hard, &soft] {
        let specs = [ram(0, 2 * MIB, &path, 0), ram(4 * MIB, 2 * MIB, other, MIB)];
        let err = AddressSpace::back(layout(), specs).unwrap_err();
        assert_aliased(&err, 4 * MIB, 0);
    }
}

/// A region given to `insert_region`, or plugged, over bytes a region of the space maps is
/// refused, and the space is as it was.
#[test]
fn insert_and_plug_refuse_a_region_over_bytes_already_mapped() {
    let path = file("insert", 8 * MIB);
    let layout = layout();
    let hotplug = layout
        .windows_of(WindowKind::Hotplug)
        .next()
        .unwrap()
        .start()
        .0;
    let (space, _) = AddressSpace::back(layout, [ram(0, 2 * MIB, &path, 2 * MIB)]).unwrap();
    let before = space.snapshot();

    let (aliasing, _) = Region::back(ram(4 * MIB, 2 * MIB, &path, 3 * MIB)).unwrap();
    let err = space.insert_region(Arc::new(aliasing)).unwrap_err();
    assert_aliased(&err, 4 * MIB, 0);

    let hard = path.with_file_name("hard.img");
    let _ = std::fs::remove_file(&hard);
    std::fs::hard_link(&path, &hard).unwrap();
    let plugged = ram(hotplug, 2 * MIB, &hard, MIB).with_hotplug(true);
    let err = space.plug(plugged).unwrap_err();
    assert_aliased(&err, hotplug, 0);
    assert!(Arc::ptr_eq(&before, &space.snapshot()), "nothing changed");

    // Next to the bytes taken, both are taken.
    let (next, _) = Region::back(ram(4 * MIB, 2 * MIB, &path, 4 * MIB)).unwrap();
    space.insert_region(Arc::new(next)).unwrap();
    space
        .plug(ram(hotplug, 2 * MIB, &hard, 0).with_hotplug(true))
        .unwrap();
    assert_eq!(space.snapshot().len(), 3);
}

/// A memfd the space made for one region, named through `/proc/self/fd` by another: the same
/// memory, refused.
#[cfg(target_os = "linux")]
#[test]
fn a_region_over_another_regions_memfd_is_refused() {
    use std::os::fd::AsRawFd;

    use vm_memory::{Bytes, GuestMemoryRegion};

    let (space, _) = AddressSpace::back(
        layout(),
        [RegionSpec::ram(GuestAddress(0), 2 * MIB).with_backing(Backing::Memfd)],
    )
    .unwrap();
    let snapshot = space.snapshot();
    let memfd = snapshot.find_region(GuestAddress(0)).unwrap();
    let fd = GuestMemoryRegion::file_offset(memfd)
        .unwrap()
        .file()
        .as_raw_fd();
    let proc_path = PathBuf::from(format!("/proc/self/fd/{fd}"));
    let (aliasing, _) = Region::back(ram(4 * MIB, 2 * MIB, &proc_path, 0)).unwrap();
    // What the refusal prevents: one memory at two guest ranges, the second unseen by the
    // first's accesses.
    space.memory().write_obj(0x5au8, GuestAddress(0)).unwrap();
    assert_eq!(
        aliasing
            .as_volatile_slice()
            .unwrap()
            .read_obj::<u8>(0)
            .unwrap(),
        0x5a
    );
    let err = space.insert_region(Arc::new(aliasing)).unwrap_err();
    assert_aliased(&err, 4 * MIB, 0);
    assert_eq!(space.snapshot().len(), 1);
}

/// Read-only regions may share bytes (one firmware image at two addresses), with each other
/// only: a writable one over the same bytes is refused.
#[test]
fn read_only_regions_may_share_bytes_but_not_with_a_writable_one() {
    let path = file("rom", 4 * MIB);
    let layout = Layout::x86_64().ram(GIB).build().unwrap();
    let rom = |base: u64| {
        on_file(
            RegionSpec::new(RegionType::Firmware, GuestAddress(base), MIB)
                .with_protection(Protection::Read),
            &path,
            0,
        )
    };
    let firmware = layout.windows_of(WindowKind::Firmware).next().unwrap();
    let (high, low) = (firmware.start().0, firmware.start().0 + MIB);
    let (space, _) = AddressSpace::back(layout.clone(), [rom(high), rom(low)]).unwrap();
    assert_eq!(space.snapshot().len(), 2);

    let writable = ram(0, 2 * MIB, &path, 0);
    let err = AddressSpace::back(layout.clone(), [rom(high), writable.clone()]).unwrap_err();
    assert_aliased(&err, 0, high);
    let (region, _) = Region::back(writable).unwrap();
    let err = space.insert_region(Arc::new(region)).unwrap_err();
    assert_aliased(&err, 0, high);
    assert_eq!(space.snapshot().len(), 2);
}

/// Adopted vm-memory mappings of the same bytes of one file are refused too.
#[test]
fn adopted_mappings_of_the_same_bytes_are_refused() {
    use vm_memory::{FileOffset, GuestMemoryMmap};

    let path = file("adopt", 4 * MIB);
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap()
    };
    let mmap = |second: u64| {
        GuestMemoryMmap::<()>::from_ranges_with_files([
            (GuestAddress(0), 1 << 20, Some(FileOffset::new(open(), 0))),
            (
                GuestAddress(2 * MIB),
                1 << 20,
                Some(FileOffset::new(open(), second)),
            ),
        ])
        .unwrap()
    };
    let err = AddressSpace::from_guest_memory_mmap(layout(), &mmap(MIB / 2)).unwrap_err();
    assert_aliased(&err, 2 * MIB, 0);
    let space = AddressSpace::from_guest_memory_mmap(layout(), &mmap(MIB)).unwrap();
    assert_eq!(space.snapshot().len(), 2);
}

/// The path of a plugged region names another file once its check is done (a listener renames
/// a file over it while it settles, as another process could at that moment): the file opened
/// and mapped is the one judged, so the plug is refused, nothing stays mapped or claimed at its
/// place, and a plug of a file of its own there is taken afterwards.
#[test]
fn plug_judges_the_file_it_opened_not_what_its_path_named_when_checked() {
    use memvisor_space::{ListenerError, RegionEvent, RegionListener};

    struct Replace {
        from: PathBuf,
        to: PathBuf,
    }
    impl RegionListener for Replace {
        fn region_changed(&self, _: &RegionEvent<'_>) -> Result<(), ListenerError> {
            Ok(())
        }
        fn settle(&self) {
            if self.from.exists() {
                std::fs::rename(&self.from, &self.to).unwrap();
            }
        }
    }

    let taken = file("toctou", 4 * MIB);
    let dir = taken.parent().unwrap().to_owned();
    let named = dir.join("named.img");
    let fresh = dir.join("fresh.img");
    std::fs::write(&named, b"").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&named)
        .unwrap()
        .set_len(4 * MIB)
        .unwrap();
    let swap = dir.join("swap.img");
    let _ = std::fs::remove_file(&swap);
    std::fs::hard_link(&taken, &swap).unwrap();

    let layout = layout();
    let hotplug = layout
        .windows_of(WindowKind::Hotplug)
        .next()
        .unwrap()
        .start()
        .0;
    let (space, _) = AddressSpace::back(layout, [ram(0, 2 * MIB, &taken, 0)]).unwrap();
    space
        .add_listener(Arc::new(Replace {
            from: swap.clone(),
            to: named.clone(),
        }))
        .unwrap();
    let before = space.snapshot();
    // When checked, `named` is a file of its own; when opened, it is the one region 0 maps.
    let err = space
        .plug(ram(hotplug, 2 * MIB, &named, 0).with_hotplug(true))
        .unwrap_err();
    assert_aliased(&err, hotplug, 0);
    assert!(Arc::ptr_eq(&before, &space.snapshot()), "nothing changed");
    assert!(!swap.exists());

    std::fs::File::create(&fresh)
        .unwrap()
        .set_len(4 * MIB)
        .unwrap();
    let (plugged, _) = space
        .plug(ram(hotplug, 2 * MIB, &fresh, 0).with_hotplug(true))
        .unwrap();
    assert_eq!(plugged.base().0, hotplug);
    assert_eq!(space.snapshot().len(), 2);
}

/// A region made before its path was pointed at another file is judged by the file it maps,
/// in both directions: over the bytes a region of the space maps, it is refused though its
/// path now names another file; over another file, it is taken though its path now names the
/// space's.
#[test]
fn insert_judges_the_file_a_region_maps_not_what_its_path_names_now() {
    let taken = file("renamed", 4 * MIB);
    let dir = taken.parent().unwrap().to_owned();
    let other = dir.join("other.img");
    std::fs::File::create(&other)
        .unwrap()
        .set_len(4 * MIB)
        .unwrap();
    let alias = dir.join("alias.img");
    let _ = std::fs::remove_file(&alias);
    std::fs::hard_link(&taken, &alias).unwrap();

    let (space, _) = AddressSpace::back(layout(), [ram(0, 2 * MIB, &taken, 0)]).unwrap();
    let (over_taken, _) = Region::back(ram(4 * MIB, 2 * MIB, &alias, 0)).unwrap();
    let (over_other, _) = Region::back(ram(8 * MIB, 2 * MIB, &other, 0)).unwrap();
    // `alias` now names `other`'s file, `other` the space's file.
    let swap = dir.join("swap.img");
    std::fs::rename(&other, &swap).unwrap();
    std::fs::remove_file(&alias).unwrap();
    std::fs::hard_link(&taken, &other).unwrap();
    std::fs::rename(&swap, &alias).unwrap();

    let err = space.insert_region(Arc::new(over_taken)).unwrap_err();
    assert_aliased(&err, 4 * MIB, 0);
    space.insert_region(Arc::new(over_other)).unwrap();
    assert_eq!(space.snapshot().len(), 2);
}

/// A refused region takes no memory-slot number: with one number left, the next region is
/// taken.
#[test]
fn a_refused_region_gives_its_slot_number_back() {
    let path = file("slots", 4 * MIB);
    let (space, _) = AddressSpace::builder(layout())
        .slots(2)
        .regions([ram(0, 2 * MIB, &path, 0)])
        .back()
        .unwrap();
    for _ in 0..3 {
        let (aliasing, _) = Region::back(ram(4 * MIB, 2 * MIB, &path, 0)).unwrap();
        let err = space.insert_region(Arc::new(aliasing)).unwrap_err();
        assert_aliased(&err, 4 * MIB, 0);
    }
    let (next, _) = Region::back(ram(4 * MIB, 2 * MIB, &path, 2 * MIB)).unwrap();
    space.insert_region(Arc::new(next)).unwrap();
    let snapshot = space.snapshot();
    let slots: Vec<_> = snapshot.regions_with_slots().map(|(_, s)| s).collect();
    assert_eq!(slots, [Some(0), Some(1)]);
}

/// A region removed from the space gives its bytes up once nothing holds it any more: while an
/// older snapshot (or the caller of `remove_region`) still holds it, a writer through that
/// snapshot would change a new region over the same bytes without marking the new region's
/// dirty log, so the new region is refused as an alias of the removed one; once the last
/// holder lets go, it is taken (a memory device unplugged and plugged again over its file).
#[test]
fn bytes_of_a_removed_region_are_mapped_again_only_once_nothing_holds_it() {
    let path = file("replug", 4 * MIB);
    let (space, _) = AddressSpace::back(layout(), [ram(0, 2 * MIB, &path, 0)]).unwrap();
    let old = space.snapshot();
    let removed = space.remove_region(GuestAddress(0), 2 * MIB).unwrap();
    drop(removed);
    let (again, _) = Region::back(ram(4 * MIB, 2 * MIB, &path, 0)).unwrap();
    let again = Arc::new(again);
    let err = space.insert_region(Arc::clone(&again)).unwrap_err();
    assert_aliased(&err, 4 * MIB, 0);
    assert_eq!(space.snapshot().len(), 0);
    // The same for a plug into the hotplug window, by path before anything is mapped.
    let hotplug = space
        .layout()
        .windows_of(WindowKind::Hotplug)
        .next()
        .unwrap()
        .start()
        .0;
    let plugged = on_file(
        RegionSpec::ram(GuestAddress(hotplug), 2 * MIB).with_hotplug(true),
        &path,
        MIB,
    );
    let err = space.plug(plugged.clone()).unwrap_err();
    assert_aliased(&err, hotplug, 0);
    // Bytes the removed region does not map are taken.
    let (apart, _) = Region::back(ram(8 * MIB, 2 * MIB, &path, 2 * MIB)).unwrap();
    space.insert_region(Arc::new(apart)).unwrap();
    // The old snapshot still writes to the removed region's memory.
    vm_memory::Bytes::write_obj(&*old, 7u8, GuestAddress(0)).unwrap();
    drop(old);
    space.insert_region(Arc::clone(&again)).unwrap();
    let mut byte = [0u8];
    vm_memory::Bytes::read_slice(&*space.snapshot(), &mut byte, GuestAddress(4 * MIB)).unwrap();
    assert_eq!(byte, [7]);
    // A region there now is compared as before.
    let (third, _) = Region::back(ram(0, 2 * MIB, &path, MIB)).unwrap();
    let err = space.insert_region(Arc::new(third)).unwrap_err();
    assert_aliased(&err, 0, 4 * MIB);
    // A read-only region removed leaves no stale writer: a writable one over its bytes is
    // taken while the old snapshot still holds it.
    let rom_path = file("replug-rom", 4 * MIB);
    let firmware = space
        .layout()
        .windows_of(WindowKind::Firmware)
        .next()
        .unwrap()
        .start();
    let rom = on_file(
        RegionSpec::new(RegionType::Firmware, firmware, MIB).with_protection(Protection::Read),
        &rom_path,
        0,
    );
    let (rom, _) = Region::back(rom).unwrap();
    space.insert_region(Arc::new(rom)).unwrap();
    let held = space.snapshot();
    drop(space.remove_region(firmware, MIB).unwrap());
    let (over_rom, _) = Region::back(ram(16 * MIB, 2 * MIB, &rom_path, 0)).unwrap();
    space.insert_region(Arc::new(over_rom)).unwrap();
    drop(held);
}

/// Offsets at the top of a file's range: `offset + size` past `u64::MAX` neither wraps to a
/// small range (missing a clash) nor panics.
#[test]
fn plan_compares_offsets_at_the_top_of_the_range() {
    let path = PathBuf::from("/nonexistent/memvisor-top.img");
    let top = u64::MAX - 0xfff;
    for (first, second, aliased) in [
        (top, top, true),
        (top - 0x1000, top, true),
        (top - 0x2000, top, true),
        (top - 0x3000, top, false),
        (0, top, false),
    ] {
        let specs = [
            ram(0, 0x3000, &path, first),
            ram(4 * MIB, 0x3000, &path, second),
        ];
        let planned = AddressSpace::plan(layout(), specs);
        if aliased {
            assert_aliased(&planned.unwrap_err(), 4 * MIB, 0);
        } else {
            assert_eq!(planned.unwrap().snapshot().len(), 2);
        }
    }
}

/// A removed region still held is not an alias of itself: inserting the same region again (a
/// removal the caller takes back) is taken, as often as it is removed, while another region
/// over its bytes is refused throughout.
#[test]
fn a_removed_region_still_held_may_be_inserted_again() {
    let path = file("reinsert", 4 * MIB);
    let (space, _) = AddressSpace::back(layout(), [ram(0, 2 * MIB, &path, 0)]).unwrap();
    let old = space.snapshot();
    for _ in 0..3 {
        let removed = space.remove_region(GuestAddress(0), 2 * MIB).unwrap();
        let (other, _) = Region::back(ram(4 * MIB, 2 * MIB, &path, 0)).unwrap();
        let err = space.insert_region(Arc::new(other)).unwrap_err();
        assert_aliased(&err, 4 * MIB, 0);
        space.insert_region(Arc::clone(&removed)).unwrap();
        assert!(Arc::ptr_eq(
            &space.find_region(GuestAddress(0)).unwrap(),
            &removed
        ));
        // In the space again, it is compared as a region there.
        let (other, _) = Region::back(ram(4 * MIB, 2 * MIB, &path, MIB)).unwrap();
        let err = space.insert_region(Arc::new(other)).unwrap_err();
        assert_aliased(&err, 4 * MIB, 0);
    }
    drop(old);
    assert_eq!(space.snapshot().len(), 1);
}

/// A plugged region over a file, unplugged while a snapshot holds it: a plug over the same
/// bytes, at its place or another, is refused as an alias until the snapshot goes, then taken.
#[test]
fn a_plugged_region_unplugged_while_held_keeps_its_file_bytes_until_let_go() {
    let path = file("unplug", 4 * MIB);
    let (space, _) = AddressSpace::back(layout(), []).unwrap();
    let hotplug = space
        .layout()
        .windows_of(WindowKind::Hotplug)
        .next()
        .unwrap()
        .start()
        .0;
    let spec = |base: u64| ram(base, 2 * MIB, &path, 0).with_hotplug(true);
    space.plug(spec(hotplug)).unwrap();
    let held = space.snapshot();
    drop(space.remove_region(GuestAddress(hotplug), 2 * MIB).unwrap());
    for base in [hotplug, hotplug + 2 * MIB] {
        let err = space.plug(spec(base)).unwrap_err();
        assert_aliased(&err, base, hotplug);
        assert!(space.snapshot().is_empty());
    }
    drop(held);
    space.plug(spec(hotplug + 2 * MIB)).unwrap();
    assert_eq!(space.snapshot().len(), 1);
}

/// Maps what it is told of, as a device or a hypervisor would, and cannot unmap it on an undo
/// until it is told it may (`release`): a listener that refuses to undo an insertion keeps the
/// region's `Arc` for as long as it maps the memory.
#[derive(Default)]
struct KeepsWhatItMaps {
    kept: std::sync::Mutex<Vec<Arc<Region>>>,
    release: std::sync::atomic::AtomicBool,
}

impl memvisor_space::RegionListener for KeepsWhatItMaps {
    fn region_changed(
        &self,
        event: &memvisor_space::RegionEvent<'_>,
    ) -> Result<(), memvisor_space::ListenerError> {
        let mut kept = self.kept.lock().unwrap();
        match event.kind {
            memvisor_space::ChangeKind::Inserted => {
                kept.push(Arc::clone(event.region));
                Ok(())
            }
            memvisor_space::ChangeKind::Removed => {
                if !self.release.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err("still mapped".into());
                }
                kept.retain(|r| !Arc::ptr_eq(r, event.region));
                Ok(())
            }
        }
    }

    fn settle(&self) {
        if self.release.load(std::sync::atomic::Ordering::Relaxed) {
            self.kept.lock().unwrap().clear();
        }
    }
}

/// A region whose insertion a later listener refused, and whose undo an earlier listener
/// refused in turn, may still be mapped by that listener (a hypervisor slot it could not
/// delete): a guest or device writing through it would change a new region over the same
/// file bytes without its dirty log. So it is compared with regions inserted or plugged later
/// as a removed region still held is, until the listener lets go (asked to settle, as
/// `insert_region` and `plug` both do first); its own insertion again is taken.
#[test]
fn a_region_a_listener_still_maps_after_a_refused_undo_keeps_its_file_bytes_until_let_go() {
    let path = file("undo-kept", 8 * MIB);
    let (space, _) = AddressSpace::back(layout(), []).unwrap();
    let hotplug = space
        .layout()
        .windows_of(WindowKind::Hotplug)
        .next()
        .unwrap()
        .start()
        .0;
    let keeper = Arc::new(KeepsWhatItMaps::default());
    space.add_listener(keeper.clone()).unwrap();
    let refuse: Arc<dyn memvisor_space::RegionListener> = Arc::new(
        |_: &memvisor_space::RegionEvent<'_>| -> Result<(), memvisor_space::ListenerError> {
            Err("no".into())
        },
    );
    space.add_listener(Arc::clone(&refuse)).unwrap();
    let (first, _) = Region::back(ram(0, 2 * MIB, &path, 0)).unwrap();
    let first = Arc::new(first);
    let err = space.insert_region(Arc::clone(&first)).unwrap_err();
    assert!(matches!(err, Error::Listener { base: 0, .. }), "{err}");
    assert!(space.remove_listener(&refuse).unwrap());
    let weak = Arc::downgrade(&first);
    drop(first);
    assert!(space.snapshot().is_empty());

    // Only the listener maps it now: another region over its bytes is refused, inserted or
    // plugged, and a read-only one too; bytes it does not map are taken.
    for _ in 0..2 {
        let (over, _) = Region::back(ram(4 * MIB, 2 * MIB, &path, MIB)).unwrap();
        let err = space.insert_region(Arc::new(over)).unwrap_err();
        assert_aliased(&err, 4 * MIB, 0);
        let err = space
            .plug(ram(hotplug, 2 * MIB, &path, 0).with_hotplug(true))
            .unwrap_err();
        assert_aliased(&err, hotplug, 0);
        let rom = ram(4 * MIB, 2 * MIB, &path, 0).with_protection(Protection::Read);
        let err = space
            .insert_region(Arc::new(Region::back(rom).unwrap().0))
            .unwrap_err();
        assert_aliased(&err, 4 * MIB, 0);
        assert!(space.snapshot().is_empty());
    }
    let (apart, _) = Region::back(ram(8 * MIB, 2 * MIB, &path, 2 * MIB)).unwrap();
    space.insert_region(Arc::new(apart)).unwrap();
    // The region itself is no alias of its bytes: inserted again, it is taken.
    let again = weak.upgrade().unwrap();
    space.insert_region(Arc::clone(&again)).unwrap();
    drop(again);
    // Removed with the listener's accord, and held by nobody: its bytes are free.
    keeper
        .release
        .store(true, std::sync::atomic::Ordering::Relaxed);
    drop(space.remove_region(GuestAddress(0), 2 * MIB).unwrap());
    assert!(weak.upgrade().is_none());
    let (over, _) = Region::back(ram(4 * MIB, 2 * MIB, &path, 0)).unwrap();
    space.insert_region(Arc::new(over)).unwrap();
    assert_eq!(space.snapshot().len(), 2);
}

/// As above, with the listener letting go only when asked to settle: `insert_region` asks it
/// first (as `plug` does), so the answer does not depend on some other call having run before.
#[test]
fn insert_region_asks_listeners_to_settle_before_it_compares_held_regions() {
    let path = file("undo-settle", 8 * MIB);
    let (space, _) = AddressSpace::back(layout(), []).unwrap();
    let keeper = Arc::new(KeepsWhatItMaps::default());
    space.add_listener(keeper.clone()).unwrap();
    let refuse: Arc<dyn memvisor_space::RegionListener> = Arc::new(
        |_: &memvisor_space::RegionEvent<'_>| -> Result<(), memvisor_space::ListenerError> {
            Err("no".into())
        },
    );
    space.add_listener(Arc::clone(&refuse)).unwrap();
    let (first, _) = Region::back(ram(0, 2 * MIB, &path, 0)).unwrap();
    assert!(space.insert_region(Arc::new(first)).is_err());
    assert!(space.remove_listener(&refuse).unwrap());
    let (over, _) = Region::back(ram(4 * MIB, 2 * MIB, &path, 0)).unwrap();
    let over = Arc::new(over);
    let err = space.insert_region(Arc::clone(&over)).unwrap_err();
    assert_aliased(&err, 4 * MIB, 0);
    // The listener may let go now, but only does when asked to settle.
    keeper
        .release
        .store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(keeper.kept.lock().unwrap().len(), 1);
    space.insert_region(over).unwrap();
    assert_eq!(space.snapshot().len(), 1);
    // Settled before the insertion, so it keeps only the region inserted.
    assert_eq!(keeper.kept.lock().unwrap().len(), 1);
}

/// A region of the builder on a file beside an adopted mapping of the same bytes of it is
/// refused as two regions of the builder are (by what the path names), whichever is writable;
/// other bytes of the file are taken.
#[test]
fn adopt_refuses_a_builder_region_over_the_bytes_of_an_adopted_mapping() {
    use vm_memory::{FileOffset, GuestMemoryMmap};

    let path = file("adopt-builder", 4 * MIB);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let memory = GuestMemoryMmap::<()>::from_ranges_with_files([(
        GuestAddress(0),
        1 << 20,
        Some(FileOffset::new(file, MIB)),
    )])
    .unwrap();
    let ram = |offset, protection| {
        on_file(RegionSpec::ram(GuestAddress(8 * MIB), MIB), &path, offset)
            .with_protection(protection)
    };
    for protection in [Protection::ReadWrite, Protection::Read] {
        let err = AddressSpace::builder(layout())
            .region(ram(MIB / 2, protection))
            .adopt(&memory)
            .unwrap_err();
        assert!(matches!(err, Error::FileAliased { .. }), "{err}");
    }
    let space = AddressSpace::builder(layout())
        .region(ram(2 * MIB, Protection::ReadWrite))
        .adopt(&memory)
        .unwrap();
    assert_eq!(space.snapshot().len(), 2);
}

/// One vm-memory mapping at two guest addresses (vm-memory builds such a `GuestMemoryMmap`
/// from `GuestRegionMmap::get_mmap`) is two regions over the same bytes: a guest write through
/// one changes the other's memory unlogged, so it is refused as two mappings of one file's
/// bytes are, and nothing is built.
#[test]
fn adopt_refuses_one_mapping_at_two_guest_addresses() {
    use vm_memory::{GuestMemoryMmap, GuestRegionMmap, MmapRegion};

    let mapping = Arc::new(MmapRegion::<()>::new(usize::try_from(MIB).unwrap()).unwrap());
    let at = |base| GuestRegionMmap::with_arc(Arc::clone(&mapping), GuestAddress(base)).unwrap();
    let memory = GuestMemoryMmap::from_regions(vec![at(0), at(4 * MIB)]).unwrap();
    let err = AddressSpace::builder(layout()).adopt(&memory).unwrap_err();
    assert!(
        matches!(err, Error::FileAliased { base, other_base } if base == 4 * MIB && other_base == 0),
        "{err}"
    );
    // Nor is the mapping inserted at a second address into a space that has it at a first.
    let space = AddressSpace::builder(layout())
        .adopt(&GuestMemoryMmap::from_regions(vec![at(0)]).unwrap())
        .unwrap();
    let again = Region::from_guest_region_mmap(RegionType::Ram, &at(8 * MIB)).unwrap();
    let err = space.insert_region(Arc::new(again)).unwrap_err();
    assert!(
        matches!(err, Error::FileAliased { base, other_base } if base == 8 * MIB && other_base == 0),
        "{err}"
    );
    assert_eq!(space.snapshot().len(), 1);
    drop((memory, space));
    // Nothing of the refused spaces and region holds the mapping.
    assert_eq!(Arc::strong_count(&mapping), 1);
    // The mapping beside another of its own is taken.
    let own = MmapRegion::<()>::new(usize::try_from(MIB).unwrap()).unwrap();
    let own = GuestRegionMmap::new(own, GuestAddress(4 * MIB)).unwrap();
    let memory = GuestMemoryMmap::from_regions(vec![at(0), own]).unwrap();
    let space = AddressSpace::builder(layout()).adopt(&memory).unwrap();
    assert_eq!(space.snapshot().len(), 2);
}
