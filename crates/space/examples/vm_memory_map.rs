//! Plans and backs the memory map of a small x86-64 VM, then hot-plugs and unplugs memory.
//!
//! ```text
//! cargo run -p memvisor-space --example vm_memory_map
//! ```
//!
//! Prints the planned regions, what backing did for each, and the hotplug steps.

use std::sync::Arc;

use memvisor_space::{
    AddressSpace, Backing, ChangeKind, HugePageFallback, HugePages, Layout, NumaBinding,
    RegionEvent, RegionSpec, RegionType, WindowKind,
};
use vm_memory::{Bytes, GuestAddress};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const MIB: u64 = 1 << 20;
    let layout = Layout::x86_64()
        .ram(256 * MIB)
        .hotplug(1 << 30)
        .dax(1 << 30)
        .build()?;
    for w in layout.windows() {
        println!(
            "window {:>9} {:#014x}..={:#014x}",
            w.kind().to_string(),
            w.start().0,
            w.last_addr().0
        );
    }

    // Boot RAM split over the RAM windows, bound to node 0, THP, prefaulted on two threads.
    let mut specs: Vec<RegionSpec> = layout
        .ram_ranges(256 * MIB)?
        .into_iter()
        .map(|(base, size)| {
            RegionSpec::ram(base, size)
                .with_backing(Backing::Memfd)
                .with_huge_pages(HugePages::Transparent)
                .with_fallback(HugePageFallback::BasePages)
                .with_numa(NumaBinding::bind(0))
                .with_prefault_threads(2)
        })
        .collect();
    // A device window and a DAX window, placed with the layout's placer.
    let mut placer = layout.placer();
    let mmio = placer.place(WindowKind::Device, 0x4000, 0x1000, "net0")?;
    specs.push(RegionSpec::for_range(RegionType::Device, mmio)?);
    let dax = placer.place(WindowKind::Dax, 64 * MIB, 2 * MIB, "fs0 DAX")?;
    specs.push(RegionSpec::for_range(RegionType::Dax, dax)?.with_backing(Backing::Memfd));

    let plan = AddressSpace::plan(layout.clone(), specs.clone())?;
    println!("\nplanned {} regions:", plan.snapshot().len());
    for (r, slot) in plan.snapshot().regions_with_slots() {
        println!(
            "  {:>8} {:#014x} +{:#x} slot {:?}",
            r.ty().to_string(),
            r.base().0,
            r.size(),
            slot
        );
    }

    let (space, report) = AddressSpace::back(layout, specs)?;
    println!("\nbacked {} MiB:\n{report}", report.total_bytes() / MIB);

    space.add_listener(Arc::new(|e: &RegionEvent<'_>| {
        let what = match e.kind {
            ChangeKind::Inserted => "insert",
            ChangeKind::Removed => "remove",
        };
        println!(
            "  listener: {what} {:#x}+{:#x} slot {:?} (generation {})",
            e.region.base().0,
            e.region.size(),
            e.slot,
            e.generation
        );
        Ok(())
    }))?;

    let slot = space
        .snapshot()
        .placer()?
        .place(WindowKind::Hotplug, 128 * MIB, 128 * MIB, "slot0")?
        .start();
    let (region, plugged) = space.plug(
        RegionSpec::ram(slot, 128 * MIB)
            .with_hotplug(true)
            .with_prefault_threads(2),
    )?;
    println!("plugged: {plugged}");
    space.memory().write_obj(0xfeed_u32, slot)?;
    println!(
        "read back {:#x} at {:#x}",
        space.memory().read_obj::<u32>(slot)?,
        slot.0
    );
    space.remove_region(region.base(), region.size())?;
    println!(
        "after unplug, {:#x} is {:?}",
        slot.0,
        space.memory().region_type(slot)
    );
    if let Some(GuestAddress(last)) = space.memory().last_ram_addr() {
        println!("last RAM address {last:#x}");
    }
    Ok(())
}
