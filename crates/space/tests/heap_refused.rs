//! A request the heap refuses inside one of the crate's allocators (the bookkeeping of
//! `memvisor-resources`' allocators, which reports it as a typed error) is reported as that,
//! never as an input error (a taken range, an interrupt out of range, a full window, a busy
//! slot), and changes nothing.
//!
//! The global allocator here can refuse one heap request on the calling thread: the one after
//! the first `granted` of those aligned to 8 bytes or more (the allocators' indexes and tag
//! lists), as a process near its memory limit would. Every other request (the owner names,
//! byte strings the crate allocates infallibly, and every request on other threads) is granted,
//! so the error itself can be made. The placers are made with an owner already in each of
//! their maps, so that the maps' own nodes (also infallible) need no new request.

use std::error::Error as _;
use std::sync::Arc;

use memvisor_space::{
    AddressSpace, Error, GuestRange, Layout, Placer, Platform, Region, RegionSpec, WindowKind,
};
use memvisor_testkit::refusing_heap::{Refusing, refusing_one_after, refusing_one_of_size};
use vm_memory::{Bytes, GuestAddress};

#[global_allocator]
static ALLOCATOR: Refusing = Refusing::ON_DEMAND.aligned_from(8);

fn range(base: u64, size: u64) -> GuestRange {
    GuestRange::new(GuestAddress(base), size).unwrap()
}

/// Ranges with their owners.
type Owned = Vec<(String, GuestRange)>;

/// What a placer holds, as its callers see it: ranges, ports and interrupt owners.
fn held(p: &Placer) -> (Owned, Owned, Vec<String>) {
    (
        p.allocations().map(|(o, r)| (o.to_owned(), r)).collect(),
        p.port_allocations()
            .map(|(o, r)| (o.to_owned(), r))
            .collect(),
        (0..128)
            .map(|i| p.irq_owner(i).unwrap_or("-").to_owned())
            .collect(),
    )
}

fn is_heap_refusal(e: &Error) -> bool {
    matches!(e, Error::Allocator { .. })
        && e.source()
            .and_then(|s| s.downcast_ref::<memvisor_resources::Error>())
            .is_some_and(|s| matches!(s, memvisor_resources::Error::HeapRefused { .. }))
}

/// Runs `op` on a copy of `placer` with each heap request in turn refused, until one run makes
/// no request that is refused, which must succeed. Each run before must fail with the
/// allocator's heap refusal and leave the copy as it was; returns how many runs failed so.
fn each_refusal<T: std::fmt::Debug>(
    placer: &Placer,
    mut op: impl FnMut(&mut Placer) -> memvisor_space::Result<T>,
) -> usize {
    let before = held(placer);
    for granted in 0.. {
        let mut p = placer.clone();
        let (out, refused) = refusing_one_after(granted, || op(&mut p));
        if !refused {
            // Nothing was refused: the operation as it runs with a heap that grants all.
            out.unwrap();
            return granted;
        }
        let e = out.unwrap_err();
        assert!(
            is_heap_refusal(&e),
            "request {granted} refused: {e} ({e:?})"
        );
        assert_eq!(held(&p), before, "request {granted} refused: {e}");
    }
    unreachable!()
}

/// An x86-64 placer with I/O ports, an interrupt owner and a range taken past a window's edge
/// (so that its maps have nodes) and nothing in its RAM, device window or port space.
fn x86_64() -> Placer {
    let platform = Platform::x86_64();
    let mut p = platform
        .placer(&platform.layout().build().unwrap())
        .unwrap();
    p.irq_at(20, "keep").unwrap();
    // The firmware window's last page and the page after it.
    p.take(range(0xffff_f000, 0x2000), "keep").unwrap();
    p
}

/// An AArch64 placer whose INTIDs 32-95 are taken: its interrupt bitmap covers them only, and
/// must grow for INTID 96 and above.
fn aarch64() -> Placer {
    let mut p = Layout::aarch64().build().unwrap().placer();
    for spi in 32..96 {
        assert_eq!(p.irq("keep").unwrap(), spi);
    }
    p
}

#[test]
fn irq_at_refused_by_the_heap_is_not_out_of_range() {
    assert!(each_refusal(&aarch64(), |p| p.irq_at(120, "net0")) > 0);
}

#[test]
fn irq_refused_by_the_heap_is_not_a_full_range() {
    assert!(each_refusal(&aarch64(), |p| p.irq("net0")) > 0);
}

#[test]
fn take_refused_by_the_heap_is_not_outside_a_window() {
    let placer = x86_64();
    assert!(each_refusal(&placer, |p| p.take(range(0xc000_0000, 0x1000), "net0")) > 0);
    // Across the RAM and the device window: a refusal in the second gives the first part back.
    assert!(each_refusal(&placer, |p| p.take(range(0xbfff_f000, 0x2000), "net0")) > 1);
    assert!(
        each_refusal(&placer, |p| p.take_in(
            WindowKind::Device,
            range(0xd000_0000, 0x1000),
            "net0"
        )) > 0
    );
}

#[test]
fn place_refused_by_the_heap_is_not_a_full_window() {
    assert!(
        each_refusal(&x86_64(), |p| p.place(
            WindowKind::Device,
            0x1000,
            0x1000,
            "net0"
        )) > 0
    );
}

#[test]
fn ports_at_refused_by_the_heap_is_not_outside_the_port_space() {
    assert!(each_refusal(&x86_64(), |p| p.ports_at(range(0x3f8, 8), "serial")) > 0);
}

#[test]
fn slot_number_refused_by_the_heap_is_not_every_number_in_use() {
    // 64 regions of a page: slot numbers 0-63, the first word of the slot bitmap; the next
    // region's number needs a second word.
    let page = |i: u64| RegionSpec::ram(GuestAddress(i * 0x1000), 0x1000);
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let space = AddressSpace::plan(layout, (0..63).map(page)).unwrap();
    // The first insert on this thread also makes room in the writer lock's record.
    space
        .insert_region(Arc::new(Region::plan(page(63)).unwrap()))
        .unwrap();
    let region = Arc::new(Region::plan(page(64)).unwrap());
    let before = space.snapshot();
    let (out, refused) = refusing_one_after(0, || space.insert_region(Arc::clone(&region)));
    assert!(refused);
    let e = out.unwrap_err();
    assert!(is_heap_refusal(&e), "{e} ({e:?})");
    assert_eq!(
        e.to_string(),
        "allocating a memory-slot number for the region at 0x40000 failed"
    );
    // Nothing changed, and the number is handed out once the heap grants it.
    let after = space.snapshot();
    assert_eq!(after.generation(), before.generation());
    assert_eq!(after.len(), 64);
    space.insert_region(region).unwrap();
    assert_eq!(space.snapshot().slot(GuestAddress(0x40000)), Some(64));
}

#[test]
fn legacy_irqs_refused_by_the_heap_refuse_the_placer() {
    let platform = Platform::x86_64();
    let layout = platform.layout().build().unwrap();
    // The interrupt allocator's first requests: its index, then its bitmap, as the legacy
    // GSIs 0-4 are taken. A placer that could not keep them from `irq` is not made.
    for granted in 0..2 {
        let (out, refused) = refusing_one_after(granted, || platform.placer(&layout));
        assert!(refused);
        let e = out.map(|mut p| p.irq("net0")).unwrap_err();
        assert!(
            is_heap_refusal(&e),
            "request {granted} refused: {e} ({e:?})"
        );
    }
    let mut p = platform.placer(&layout).unwrap();
    assert_eq!(p.irq("net0").unwrap(), 5);
}

#[test]
fn snapshot_placer_refused_by_the_heap_is_an_error() {
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let space = AddressSpace::plan(layout, [RegionSpec::ram(GuestAddress(0), 1 << 30)]).unwrap();
    let snapshot = space.snapshot();
    // The platform's description first, then the interrupt allocator's index.
    let (out, refused) = refusing_one_after(1, || snapshot.placer());
    assert!(refused);
    let e = out.unwrap_err();
    assert!(is_heap_refusal(&e), "{e} ({e:?})");
    assert!(e.to_string().starts_with("allocating GSI for "), "{e}");
    let placer = snapshot.placer().unwrap();
    assert_eq!(placer.allocations().count(), 1);
}

/// A writable region over a file, removed while held, joins the list compared with later
/// regions over the same bytes; the room for it is made before anything changes. The heap
/// refusing that room refuses the removal, typed, with the region still in the space, and the
/// removal goes through once the heap grants it.
#[test]
#[cfg(unix)]
#[cfg_attr(miri, ignore = "maps a file")]
fn recording_a_removed_file_region_refused_by_the_heap_changes_nothing() {
    let path = std::env::temp_dir().join(format!(
        "memvisor-space-heap-retired-{}.img",
        std::process::id()
    ));
    std::fs::File::create(&path)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let on_file = |base: u64, offset: u64| {
        RegionSpec::ram(GuestAddress(base), 2 << 20).with_backing(memvisor_space::Backing::File {
            path: path.clone(),
            offset,
        })
    };
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let (space, _) = AddressSpace::back(layout, [on_file(0, 0)]).unwrap();
    // The first call on this thread that takes the writer lock makes room in its record.
    let none: Arc<dyn memvisor_space::RegionListener> = Arc::new(
        |_: &memvisor_space::RegionEvent<'_>| -> Result<(), memvisor_space::ListenerError> {
            Ok(())
        },
    );
    assert!(!space.remove_listener(&none).unwrap());
    let before = space.snapshot();
    let (out, refused) = refusing_one_after(0, || space.remove_region(GuestAddress(0), 2 << 20));
    assert!(refused);
    let e = out.unwrap_err();
    assert!(is_heap_refusal(&e), "{e} ({e:?})");
    assert_eq!(
        e.to_string(),
        "allocating a place in the list of file regions held outside the space for the region \
         at 0x0 failed"
    );
    let after = space.snapshot();
    assert!(Arc::ptr_eq(&before, &after), "nothing changed");
    assert_eq!(after.len(), 1);

    // Granted, the removal goes through and the region, still held, is compared as before.
    let removed = space.remove_region(GuestAddress(0), 2 << 20).unwrap();
    let (over, _) = Region::back(on_file(8 << 20, 0)).unwrap();
    let err = space.insert_region(Arc::new(over)).unwrap_err();
    assert!(
        matches!(err, Error::FileAliased { other_base: 0, .. }),
        "{err}"
    );
    drop(removed);
    let _ = std::fs::remove_file(&path);
}

/// With two listeners, a writable region over a file whose insertion the later one refuses
/// and whose undo the earlier one refuses joins the same list; the room for it is made before
/// any listener hears of the insertion. The heap refusing that room (or the memory-slot
/// number before it) refuses the insertion, typed, with no listener told and nothing
/// changed; granted, the insertion goes through.
#[test]
#[cfg(unix)]
#[cfg_attr(miri, ignore = "maps a file")]
fn listing_a_file_region_whose_undo_may_fail_refused_by_the_heap_changes_nothing() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let path = std::env::temp_dir().join(format!(
        "memvisor-space-heap-undo-{}.img",
        std::process::id()
    ));
    std::fs::File::create(&path)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let (space, _) = AddressSpace::back(layout, []).unwrap();
    let heard = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        let heard = Arc::clone(&heard);
        space
            .add_listener(Arc::new(
                move |_: &memvisor_space::RegionEvent<'_>| -> Result<(), memvisor_space::ListenerError> {
                    heard.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                },
            ))
            .unwrap();
    }
    let spec =
        RegionSpec::ram(GuestAddress(0), 2 << 20).with_backing(memvisor_space::Backing::File {
            path: path.clone(),
            offset: 0,
        });
    let region = Arc::new(Region::back(spec).unwrap().0);
    let before = space.snapshot();
    let mut listed = false;
    for granted in 0.. {
        let (out, refused) =
            refusing_one_after(granted, || space.insert_region(Arc::clone(&region)));
        assert!(
            refused,
            "the list's room is asked for after {granted} requests"
        );
        let e = out.unwrap_err();
        assert!(is_heap_refusal(&e), "{e} ({e:?})");
        assert!(Arc::ptr_eq(&before, &space.snapshot()), "nothing changed");
        assert_eq!(heard.load(Ordering::SeqCst), 0, "no listener told");
        if e.to_string()
            == "allocating a place in the list of file regions held outside the space for the \
                region at 0x0 failed"
        {
            listed = true;
            break;
        }
    }
    assert!(listed);
    space.insert_region(region).unwrap();
    assert_eq!(space.snapshot().len(), 1);
    assert_eq!(heard.load(Ordering::SeqCst), 2);
    let _ = std::fs::remove_file(&path);
}

/// An insertion or plug compares the region with the removed file regions still held, on a
/// copy of that list. The heap refusing the copy refuses the insertion, typed, with nothing
/// changed (it aborted the process before); granted, the insertion goes through.
#[test]
#[cfg(unix)]
#[cfg_attr(miri, ignore = "maps a file")]
fn copying_the_removed_file_regions_refused_by_the_heap_changes_nothing() {
    let path = std::env::temp_dir().join(format!(
        "memvisor-space-heap-held-{}.img",
        std::process::id()
    ));
    std::fs::File::create(&path)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    let spec =
        RegionSpec::ram(GuestAddress(0), 2 << 20).with_backing(memvisor_space::Backing::File {
            path: path.clone(),
            offset: 0,
        });
    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let (space, _) = AddressSpace::back(layout, [spec]).unwrap();
    // Removed and still held: listed among the regions compared with later ones.
    let removed = space.remove_region(GuestAddress(0), 2 << 20).unwrap();
    let region = Arc::new(Region::plan(RegionSpec::ram(GuestAddress(8 << 20), 2 << 20)).unwrap());
    let before = space.snapshot();
    let mut copy_refused = false;
    for granted in 0.. {
        let (out, refused) =
            refusing_one_after(granted, || space.insert_region(Arc::clone(&region)));
        assert!(refused, "the copy is asked for after {granted} requests");
        let e = out.unwrap_err();
        assert!(is_heap_refusal(&e), "request {granted}: {e} ({e:?})");
        assert!(Arc::ptr_eq(&before, &space.snapshot()), "nothing changed");
        if e.to_string()
            == "allocating a copy of the list of file regions held outside the space for the \
                region at 0x800000 failed"
        {
            copy_refused = true;
            break;
        }
    }
    assert!(copy_refused);
    space.insert_region(region).unwrap();
    assert_eq!(space.snapshot().len(), 1);
    drop(removed);
    let _ = std::fs::remove_file(&path);
}

/// Inserting and removing a region builds the next snapshot's table (its sorted starts,
/// entries and hit index). The heap refusing that table refuses the change, typed, before any
/// listener hears of it and with nothing changed (it aborted the process before); granted, the
/// change goes through.
#[test]
fn snapshot_table_refused_by_the_heap_changes_nothing() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    let ram = |i: u64| RegionSpec::ram(GuestAddress(i << 21), 1 << 21);
    let space = AddressSpace::plan(layout, (0..12).map(ram)).unwrap();
    let heard = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&heard);
    space
        .add_listener(Arc::new(
            move |_: &memvisor_space::RegionEvent<'_>| -> Result<(), memvisor_space::ListenerError> {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
        ))
        .unwrap();
    let table_refused = |e: &Error| {
        e.to_string() == "allocating the snapshot table for the region at 0x1800000 failed"
    };

    let region = Arc::new(Region::plan(ram(12)).unwrap());
    let before = space.snapshot();
    let mut refused_table = false;
    for granted in 0.. {
        let (out, refused) =
            refusing_one_after(granted, || space.insert_region(Arc::clone(&region)));
        assert!(refused, "the table is asked for after {granted} requests");
        let e = out.unwrap_err();
        assert!(is_heap_refusal(&e), "request {granted}: {e} ({e:?})");
        assert!(Arc::ptr_eq(&before, &space.snapshot()), "nothing changed");
        assert_eq!(heard.load(Ordering::SeqCst), 0, "no listener told");
        if table_refused(&e) {
            refused_table = true;
            break;
        }
    }
    assert!(refused_table);
    space.insert_region(region).unwrap();
    assert_eq!(space.snapshot().len(), 13);
    assert_eq!(heard.load(Ordering::SeqCst), 1);

    let before = space.snapshot();
    let mut refused_table = false;
    for granted in 0.. {
        let (out, refused) = refusing_one_after(granted, || {
            space.remove_region(GuestAddress(12 << 21), 1 << 21)
        });
        assert!(refused, "the table is asked for after {granted} requests");
        let e = out.unwrap_err();
        assert!(is_heap_refusal(&e), "request {granted}: {e} ({e:?})");
        assert!(Arc::ptr_eq(&before, &space.snapshot()), "nothing changed");
        assert_eq!(heard.load(Ordering::SeqCst), 1, "no listener told");
        if table_refused(&e) {
            refused_table = true;
            break;
        }
    }
    assert!(refused_table);
    space
        .remove_region(GuestAddress(12 << 21), 1 << 21)
        .unwrap();
    assert_eq!(space.snapshot().len(), 12);
    assert_eq!(heard.load(Ordering::SeqCst), 2);
}

/// Plugging a slot builds the next snapshot's table after the slot is mapped. The heap
/// refusing that table refuses the plug, typed, before any listener hears of it, with the
/// space unchanged and the slot given back: the same slot is plugged at once after.
#[test]
fn plug_whose_snapshot_table_the_heap_refuses_changes_nothing() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let layout = Layout::x86_64()
        .ram(1 << 30)
        .hotplug(1 << 30)
        .build()
        .unwrap();
    let window = layout
        .windows_of(WindowKind::Hotplug)
        .next()
        .unwrap()
        .start()
        .0;
    let ram = |i: u64| RegionSpec::ram(GuestAddress(i << 21), 1 << 21);
    let (space, _) = AddressSpace::back(layout, (0..12).map(ram)).unwrap();
    let heard = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&heard);
    space
        .add_listener(Arc::new(
            move |_: &memvisor_space::RegionEvent<'_>| -> Result<(), memvisor_space::ListenerError> {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
        ))
        .unwrap();
    // The size of the table of 13 regions: the one an insertion asks for.
    let planned = Arc::new(Region::plan(ram(12)).unwrap());
    let mut table_bytes = None;
    for granted in 0.. {
        let (out, refused) =
            refusing_one_after(granted, || space.insert_region(Arc::clone(&planned)));
        assert!(refused, "the table is asked for after {granted} requests");
        let e = out.unwrap_err();
        if e.to_string().starts_with("allocating the snapshot table") {
            let source = e
                .source()
                .unwrap()
                .downcast_ref::<memvisor_resources::Error>();
            let Some(memvisor_resources::Error::HeapRefused { bytes }) = source else {
                panic!("{e:?}")
            };
            table_bytes = Some(usize::try_from(*bytes).unwrap());
            break;
        }
    }
    let table_bytes = table_bytes.unwrap();
    let before = space.snapshot();
    let slot = RegionSpec::ram(GuestAddress(window), 2 << 20).with_hotplug(true);
    let (out, refused) = refusing_one_of_size(table_bytes, || space.plug(slot.clone()));
    assert!(refused, "the plug asks for the table");
    let e = out.map(|_| ()).unwrap_err();
    assert!(is_heap_refusal(&e), "{e} ({e:?})");
    assert_eq!(
        e.to_string(),
        format!("allocating the snapshot table for the region at {window:#x} failed")
    );
    assert!(Arc::ptr_eq(&before, &space.snapshot()), "nothing changed");
    assert_eq!(heard.load(Ordering::SeqCst), 0, "no listener told");
    let (region, _) = space.plug(slot).unwrap();
    assert_eq!(space.snapshot().len(), 13);
    assert_eq!(heard.load(Ordering::SeqCst), 1);
    drop(region);
}

/// A region that tracks writes gets its dirty bitmap (one bit per host page) when its memory is
/// made. The heap refusing the bitmap is a typed error for that region, with nothing left
/// mapped: a slot of the hotplug window is free again and plugged at once after, and a space
/// being backed is not made.
#[test]
#[cfg_attr(miri, ignore = "maps a gigabyte")]
fn dirty_bitmap_refused_by_the_heap_is_an_error() {
    let page = memvisor_vmem::page_size();
    // 64 pages past 1 GiB: a bitmap of an odd number of words, a size nothing else asks for.
    let size = (1u64 << 30) + 64 * page as u64;
    let pages = usize::try_from(size).unwrap().div_ceil(page);
    let bitmap_bytes = pages.div_ceil(64) * 8;
    let refused_for = |base: u64, e: &Error| {
        assert!(is_heap_refusal(e), "{e} ({e:?})");
        assert_eq!(
            e.to_string(),
            format!("allocating the dirty bitmap for the region at {base:#x} failed")
        );
    };

    let spec = RegionSpec::ram(GuestAddress(0), size).with_dirty_tracking(true);
    let (out, refused) = refusing_one_of_size(bitmap_bytes, || Region::back(spec.clone()));
    assert!(refused, "backing the region asks for the bitmap");
    refused_for(0, &out.map(|_| ()).unwrap_err());
    let (region, _) = Region::back(spec).unwrap();
    assert_eq!(region.dirty_bitmap().map(|b| b.len()), Some(pages));

    let layout = Layout::x86_64()
        .ram(4 << 30)
        .hotplug(4 << 30)
        .build()
        .unwrap();
    let window = layout
        .windows_of(WindowKind::Hotplug)
        .next()
        .unwrap()
        .start()
        .0;
    let boot = RegionSpec::ram(GuestAddress(0), size).with_dirty_tracking(true);
    let (out, refused) = refusing_one_of_size(bitmap_bytes, || {
        AddressSpace::back(layout.clone(), [boot.clone()])
    });
    assert!(refused, "backing the space asks for the bitmap");
    refused_for(0, &out.map(|_| ()).unwrap_err());
    let (space, _) = AddressSpace::back(layout, [boot]).unwrap();
    let slot = RegionSpec::ram(GuestAddress(window), size)
        .with_hotplug(true)
        .with_dirty_tracking(true);
    let before = space.snapshot();
    let (out, refused) = refusing_one_of_size(bitmap_bytes, || space.plug(slot.clone()));
    assert!(refused, "the plug asks for the bitmap");
    refused_for(window, &out.map(|_| ()).unwrap_err());
    assert!(Arc::ptr_eq(&before, &space.snapshot()), "nothing changed");
    space.plug(slot).unwrap();
    assert_eq!(space.snapshot().len(), 2);
}

/// Taking a region's dirty log copies its bitmap into a new vector of one word per 64 host
/// pages. The heap refusing that vector is a typed error from `try_take_dirty_log`, and the log
/// is left as it was: the page written before is still dirty, and the next take gives it.
#[test]
#[cfg_attr(miri, ignore = "maps memory: Miri cannot")]
fn dirty_log_refused_by_the_heap_is_an_error_and_keeps_the_log() {
    let page = memvisor_vmem::page_size();
    // 65 words of log: a size nothing else asks for while the log is taken.
    let pages = 65 * 64;
    let base = 1u64 << 32;
    let spec = RegionSpec::ram(GuestAddress(base), (pages * page) as u64).with_dirty_tracking(true);
    let (region, _) = Region::back(spec).unwrap();
    let last = (pages - 1) * page;
    region
        .write_obj(7u8, vm_memory::MemoryRegionAddress(last as u64))
        .unwrap();

    let (out, refused) = refusing_one_of_size(65 * 8, || region.try_take_dirty_log());
    assert!(refused, "taking the log asks for its words");
    let e = out.unwrap_err();
    assert!(is_heap_refusal(&e), "{e} ({e:?})");
    assert_eq!(
        e.to_string(),
        format!("allocating the dirty log for the region at {base:#x} failed")
    );
    assert!(region.is_dirty(last as u64), "the log is kept");

    let log = region.try_take_dirty_log().unwrap().unwrap();
    assert_eq!(log.len(), 65);
    assert_eq!(log[64], 1 << 63);
    assert_eq!(log[..64], [0; 64]);
    assert!(!region.is_dirty(last as u64));
    let planned = Region::plan(RegionSpec::ram(GuestAddress(0), page as u64)).unwrap();
    assert_eq!(planned.try_take_dirty_log().unwrap(), None);
}

/// The dirty bitmap is asked for before the memory is made, so a refusal leaves no trace of the
/// region: the sparse file a prefaulted file region would map stays as it was, no page of it
/// written (and so allocated) by the prefault.
#[test]
#[cfg(target_os = "linux")]
#[cfg_attr(miri, ignore = "maps a file: Miri cannot")]
fn dirty_bitmap_refused_by_the_heap_leaves_the_file_unwritten() {
    use std::os::unix::fs::MetadataExt;

    let page = memvisor_vmem::page_size();
    // 67 words of bitmap: a size nothing else asks for while the region is backed.
    let pages = 67 * 64;
    let path = std::env::temp_dir().join(format!(
        "memvisor-space-dirty-refused-{}",
        std::process::id()
    ));
    std::fs::File::create(&path)
        .unwrap()
        .set_len((pages * page) as u64)
        .unwrap();
    let blocks = || std::fs::metadata(&path).unwrap().blocks();
    assert_eq!(blocks(), 0, "a sparse file");
    let spec = RegionSpec::ram(GuestAddress(0), (pages * page) as u64)
        .with_backing(memvisor_space::Backing::File {
            path: path.clone(),
            offset: 0,
        })
        .with_prefault_threads(1)
        .with_dirty_tracking(true);

    let (out, refused) = refusing_one_of_size(67 * 8, || Region::back(spec.clone()));
    assert!(refused, "backing the region asks for the bitmap");
    let e = out.map(|_| ()).unwrap_err();
    assert!(is_heap_refusal(&e), "{e} ({e:?})");
    let untouched = blocks();

    // Backed, the prefault writes every page of the file.
    let (region, _) = Region::back(spec).unwrap();
    let written = blocks();
    drop(region);
    std::fs::remove_file(&path).unwrap();
    assert!(written > 0, "the prefault writes the file");
    assert_eq!(untouched, 0, "the refused region wrote nothing");
}

/// Taking a fixed device's range from a reserved window of the allocators a placer hands over
/// splits the window's reserved hold in up to three: the heap refusing the room for a part is
/// `Error::Allocator`, with the hold as it was, so no part of the window is left allocatable.
#[test]
#[cfg_attr(miri, ignore = "safe code only, checked natively; seconds under Miri")]
fn take_reserved_refused_by_the_heap_changes_nothing() {
    let allocators = x86_64().into_allocators();
    let held = |a: &memvisor_space::PlacerAllocators| -> Vec<Vec<_>> {
        a.windows
            .iter()
            .map(|(_, w)| w.allocated().map(|h| (h.range, h.tag.clone())).collect())
            .collect()
    };
    let before = held(&allocators);
    let mut refusals = 0;
    for granted in 0.. {
        let mut a = allocators.clone();
        let (out, refused) = refusing_one_after(granted, || {
            a.take_reserved(range(0xfed4_0000, 0x5000), "tpm")
        });
        if !refused {
            out.unwrap();
            break;
        }
        let e = out.unwrap_err();
        assert!(
            is_heap_refusal(&e),
            "request {granted} refused: {e} ({e:?})"
        );
        assert_eq!(held(&a), before, "request {granted} refused: {e}");
        refusals += 1;
    }
    assert!(refusals > 0);
}

/// Handing a placer's allocators over holds every free range of its reserved windows: the heap
/// refusing room for one is `Error::Allocator` with the placer given back as it was, from
/// `try_into_allocators`, where `into_allocators` aborts.
#[test]
#[cfg_attr(miri, ignore = "safe code only, checked natively; seconds under Miri")]
#[allow(clippy::result_large_err)] // The placer comes back in place, unboxed.
fn try_into_allocators_refused_by_the_heap_gives_the_placer_back() {
    // Pages taken apart in the reserved window, so that its allocator must grow while the
    // gaps between them are held, after some are held already.
    let mut placer = x86_64();
    for k in 0..40 {
        placer
            .take_in(
                WindowKind::Reserved,
                range(0xfec1_0000 + k * 0x2000, 0x1000),
                "keep",
            )
            .unwrap();
    }
    let before = held(&placer);
    let mut refusals = 0;
    for granted in 0.. {
        let p = placer.clone();
        let (out, refused) = refusing_one_after(granted, || p.try_into_allocators());
        let refusal = match out {
            Ok(allocators) => {
                assert!(
                    !refused,
                    "request {granted} refused, and the allocators made"
                );
                let reserved = allocators
                    .windows
                    .iter()
                    .filter(|(w, _)| w.kind() == WindowKind::Reserved);
                for (w, a) in reserved {
                    assert_eq!(a.free_ranges().count(), 0, "{w:?}");
                }
                break;
            }
            Err(refusal) => refusal,
        };
        assert!(refused);
        assert!(
            is_heap_refusal(refusal.error()),
            "request {granted} refused: {refusal}"
        );
        let (e, p) = refusal.into_parts();
        assert!(is_heap_refusal(&e), "{e}");
        assert_eq!(held(&p), before, "request {granted} refused: {e}");
        refusals += 1;
    }
    assert!(refusals > 0);
}
