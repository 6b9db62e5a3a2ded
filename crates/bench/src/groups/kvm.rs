//! `kvm`: KVM memory slots and dirty logging through `memvisor-kvm` against the same
//! `kvm-ioctls` calls issued directly, on the host's `/dev/kvm`.
//!
//! - `memslot_sync` (param = regions): register `n` one-page regions as KVM slots, then hotplug and
//!   unplug one more. memvisor: `MemorySlots::attach` on an address space over the regions, then
//!   `insert_region` and `remove_region` (the space's own snapshot work included) with the listener
//!   issuing the ioctls; peer: the `n + 2` `KVM_SET_USER_MEMORY_REGION` calls alone. Each sample
//!   uses a new VM, made before timing.
//! - `dirty_log_1g`: a guest writes 1% of the pages of a 1 GiB slot (every 100th page; before
//!   timing), then memvisor fetches KVM's log and merges it into a `DirtyBitmap`
//!   (`fetch_dirty_log_into`), against `KVM_GET_DIRTY_LOG` alone (`VmFd::get_dirty_log`). Both
//!   check the dirty page count.
//!
//! Without `/dev/kvm` every figure is `null` with the reason in the notes.

use std::sync::Arc;
use std::time::Instant;

use kvm_bindings::{KVM_MEM_LOG_DIRTY_PAGES, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use memvisor_kvm::{DirtyBitmap, MemorySlots};
use memvisor_space::{AddressSpace, Layout, Region, RegionSpec};
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
};

use crate::harness::{Bench, Sample, as_ns};
use crate::report::{Better, Row};

const SIZES: [u64; 2] = [64, 1024];
const GIB: u64 = 1 << 30;
const GIB_BYTES: usize = 1 << 30;
/// Where the dirtying guest's code sits.
const CODE: u64 = 0x1000;
/// The first page the guest writes, and the distance between pages it writes (100 pages).
const FIRST: u64 = 0x10_0000;
const STRIDE: u64 = 100 * 4096;
/// Pages the guest writes per pass.
const DIRTY_PAGES: u64 = (GIB - FIRST - 1) / STRIDE + 1;

/// Runs every scenario of the group.
pub fn run(bench: &Bench) -> Vec<Row> {
    let mut rows = Vec::new();
    for n in SIZES {
        rows.push(memslot_sync(bench, n));
    }
    rows.push(dirty_log_1g(bench));
    rows
}

fn page() -> u64 {
    memvisor_vmem::page_size() as u64
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// `n` one-page mappings with a one-page gap between them, and one more to hotplug.
struct SlotFixture {
    layout: Layout,
    memory: GuestMemoryMmap,
    plug: Arc<Region>,
}

impl SlotFixture {
    fn new(n: u64) -> Result<Self, String> {
        let p = page();
        let page_bytes = memvisor_vmem::page_size();
        let regions = (0..n)
            .map(|i| {
                GuestRegionMmap::from_range(GuestAddress(2 * i * p), page_bytes, None).map_err(err)
            })
            .collect::<Result<Vec<_>, String>>()?;
        let memory = GuestMemoryMmap::from_regions(regions).map_err(err)?;
        let layout = Layout::x86_64().ram(GIB).build().map_err(err)?;
        let plug = Region::back(RegionSpec::ram(GuestAddress(2 * n * p), p))
            .map_err(err)?
            .0;
        Ok(Self {
            layout,
            memory,
            plug: Arc::new(plug),
        })
    }
}

/// `memslot_sync`: ns to register `n` regions and hotplug and unplug one.
pub fn memslot_sync(bench: &Bench, n: u64) -> Row {
    let scenario = bench.scenario("memslot_sync", n, "ns", Better::Lower);
    let (kvm, fixture) = match (Kvm::new(), SlotFixture::new(n)) {
        (Ok(kvm), Ok(fixture)) => (kvm, fixture),
        (Err(e), _) => {
            let reason = format!("/dev/kvm: {e}");
            return scenario
                .memvisor(|| Err(reason.clone()))
                .peer("kvm-ioctls", || Err(reason.clone()))
                .run();
        }
        (_, Err(e)) => {
            return scenario
                .memvisor(|| Err(e.clone()))
                .peer("kvm-ioctls", || Err(e.clone()))
                .run();
        }
    };
    let (kvm, fixture) = (&kvm, &fixture);
    scenario
        .memvisor(move || {
            let vm = Arc::new(kvm.create_vm().map_err(err)?);
            let space =
                AddressSpace::from_guest_memory_mmap(fixture.layout.clone(), &fixture.memory)
                    .map_err(err)?;
            let plug = Arc::clone(&fixture.plug);
            let (base, size) = (plug.base(), plug.size());
            let start = Instant::now();
            let slots = MemorySlots::attach(vm, &space).map_err(err)?;
            space.insert_region(plug).map_err(err)?;
            space.remove_region(base, size).map_err(err)?;
            let elapsed = start.elapsed();
            if slots.len() as u64 != n {
                return Err(format!("{} slots registered, not {n}", slots.len()));
            }
            Ok(as_ns(elapsed))
        })
        .peer("kvm-ioctls", move || {
            let vm = kvm.create_vm().map_err(err)?;
            let raw: Vec<kvm_userspace_memory_region> = fixture
                .memory
                .iter()
                .zip(0u32..)
                .map(|(r, slot)| region(slot, r.start_addr().0, r.len(), r.as_ptr(), 0))
                .collect();
            let plug = &fixture.plug;
            let host = plug.host_ptr().ok_or("no host memory")?;
            let add = region(
                u32::try_from(n).map_err(err)?,
                plug.base().0,
                plug.size(),
                host,
                0,
            );
            let delete = kvm_userspace_memory_region {
                memory_size: 0,
                ..add
            };
            let start = Instant::now();
            for r in raw.iter().chain([&add, &delete]) {
                // SAFETY: every region is a live mapping of `fixture`, which outlives `vm`.
                unsafe { vm.set_user_memory_region(*r) }.map_err(err)?;
            }
            Ok(as_ns(start.elapsed()))
        })
        .run()
}

fn region(
    slot: u32,
    base: u64,
    size: u64,
    host: *mut u8,
    flags: u32,
) -> kvm_userspace_memory_region {
    kvm_userspace_memory_region {
        slot,
        flags,
        guest_phys_addr: base,
        memory_size: size,
        userspace_addr: host as u64,
    }
}

/// A VM with 1 GiB of RAM at 0 and a 32-bit guest that writes every 100th page of it per pass.
struct DirtyVm {
    space: AddressSpace,
    vm: Arc<VmFd>,
    vcpu: VcpuFd,
}

impl DirtyVm {
    fn new(kvm: &Kvm) -> Result<Self, String> {
        let vm = Arc::new(kvm.create_vm().map_err(err)?);
        let layout = Layout::x86_64().ram(GIB).build().map_err(err)?;
        let (space, _) =
            AddressSpace::back(layout, [RegionSpec::ram(GuestAddress(0), GIB)]).map_err(err)?;
        #[rustfmt::skip]
        let mut code: [u8; 25] = [
            0xbf, 0x00, 0x00, 0x10, 0x00, // start: mov edi, FIRST
            0xb9, 0, 0, 0, 0,             //   mov ecx, DIRTY_PAGES
            0x89, 0x07,                   // page: mov [edi], eax
            0x81, 0xc7, 0x00, 0x40, 0x06, 0x00, // add edi, STRIDE
            0x49,                         //   dec ecx
            0x75, 0xf5,                   //   jnz page
            0xe6, 0x10,                   //   out 0x10, al
            0xeb, 0xe7,                   //   jmp start
        ];
        code[6..10].copy_from_slice(&u32::try_from(DIRTY_PAGES).map_err(err)?.to_le_bytes());
        space
            .memory()
            .write_slice(&code, GuestAddress(CODE))
            .map_err(err)?;
        let vcpu = vm.create_vcpu(0).map_err(err)?;
        let mut sregs = vcpu.get_sregs().map_err(err)?;
        for seg in [
            &mut sregs.ds,
            &mut sregs.es,
            &mut sregs.fs,
            &mut sregs.gs,
            &mut sregs.ss,
        ] {
            seg.base = 0;
            seg.limit = 0xffff_ffff;
            seg.g = 1;
            seg.db = 1;
            seg.selector = 0x10;
        }
        sregs.cs.base = 0;
        sregs.cs.limit = 0xffff_ffff;
        sregs.cs.g = 1;
        sregs.cs.db = 1;
        sregs.cs.selector = 0x8;
        sregs.cr0 |= 1;
        vcpu.set_sregs(&sregs).map_err(err)?;
        let mut regs = vcpu.get_regs().map_err(err)?;
        regs.rip = CODE;
        regs.rflags = 2;
        vcpu.set_regs(&regs).map_err(err)?;
        Ok(Self { space, vm, vcpu })
    }

    /// Runs one pass of the guest.
    fn dirty(&mut self) -> Result<(), String> {
        loop {
            match self.vcpu.run() {
                Ok(VcpuExit::IoOut(0x10, _)) => return Ok(()),
                Ok(other) => return Err(format!("guest stopped: {other:?}")),
                Err(e) if e.errno() == 4 => {}
                Err(e) => return Err(format!("KVM_RUN: {e}")),
            }
        }
    }
}

/// `dirty_log_1g`: ns to fetch and merge the dirty log of 1 GiB with 1% of its pages dirty.
pub fn dirty_log_1g(bench: &Bench) -> Row {
    let scenario = bench.scenario("dirty_log_1g", 0, "ns", Better::Lower);
    let kvm = match Kvm::new() {
        Ok(kvm) => kvm,
        Err(e) => {
            let reason = format!("/dev/kvm: {e}");
            return scenario
                .memvisor(|| Err(reason.clone()))
                .peer("kvm-ioctls", || Err(reason.clone()))
                .run();
        }
    };
    let setup = || -> Result<(DirtyVm, MemorySlots, DirtyVm), String> {
        let ours = DirtyVm::new(&kvm)?;
        let slots = MemorySlots::attach(Arc::clone(&ours.vm), &ours.space).map_err(err)?;
        slots
            .set_dirty_logging(GuestAddress(0), true)
            .map_err(err)?;
        let raw = DirtyVm::new(&kvm)?;
        let r = raw.space.memory();
        let r = r.find_region(GuestAddress(0)).ok_or("no region")?;
        let host = r.host_ptr().ok_or("no host memory")?;
        let mem = region(0, 0, GIB, host, KVM_MEM_LOG_DIRTY_PAGES);
        // SAFETY: the region's mapping lives in `raw.space`, which outlives `raw.vm` (both
        // dropped together at the end of the scenario, the VM's last user first).
        unsafe { raw.vm.set_user_memory_region(mem) }.map_err(err)?;
        Ok((ours, slots, raw))
    };
    let (mut ours, slots, mut raw) = match setup() {
        Ok(s) => s,
        Err(e) => {
            return scenario
                .memvisor(|| Err(e.clone()))
                .peer("kvm-ioctls", || Err(e.clone()))
                .run();
        }
    };
    let mut bitmap = match DirtyBitmap::new(GuestAddress(0), GIB, page()) {
        Ok(b) => b,
        Err(e) => return scenario.memvisor(|| Err(e.to_string())).run(),
    };
    let row = scenario
        .memvisor(|| -> Sample {
            ours.dirty()?;
            bitmap.clear();
            let start = Instant::now();
            slots.fetch_dirty_log_into(&mut bitmap).map_err(err)?;
            let elapsed = start.elapsed();
            check(bitmap.count())?;
            Ok(as_ns(elapsed))
        })
        .peer("kvm-ioctls", || -> Sample {
            raw.dirty()?;
            let start = Instant::now();
            let words = raw.vm.get_dirty_log(0, GIB_BYTES).map_err(err)?;
            let elapsed = start.elapsed();
            check(words.iter().map(|w| u64::from(w.count_ones())).sum())?;
            Ok(as_ns(elapsed))
        })
        .run();
    drop(slots);
    row
}

/// The dirty page count a pass of the guest leaves.
fn check(count: u64) -> Result<(), String> {
    if count == DIRTY_PAGES {
        Ok(())
    } else {
        Err(format!("{count} dirty pages, not {DIRTY_PAGES}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memslot_sync_small_measures_both_or_says_why() {
        let row = memslot_sync(&Bench::with_repeats(true, 1), 4);
        assert_eq!(row.scenario, "memslot_sync");
        if Kvm::new().is_ok() {
            assert!(row.memvisor.is_some(), "{:?}", row.notes);
            assert!(row.peers["kvm-ioctls"].is_some(), "{:?}", row.notes);
        } else {
            assert!(row.memvisor.is_none());
            assert!(!row.notes.is_empty());
        }
    }
}
