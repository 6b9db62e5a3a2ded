//! Page-sized workloads run on memvisor's and vm-allocator 0.1.4's address allocators side by
//! side, away from the edges of the 64-bit space where vm-allocator has known defects.
//!
//! Exact requests that overlap a live allocation are not sent to vm-allocator: it may split an
//! allocated node there instead of refusing (memvisor's own answer, an overlap error, is checked
//! by the model test).

use memvisor_resources::{AddressAllocator, AddressRange, AllocPolicy, Error};
use proptest::prelude::*;
use vm_allocator::{
    AddressAllocator as VmAddr, AllocPolicy as VmPolicy, RangeInclusive as VmRange,
};

pub const PAGE: u64 = 0x1000;
pub const BASE: u64 = 0x1_0000_0000;
pub const PAGES: u64 = 1024;

#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// Size in pages, alignment as a power of two in pages, policy (first, last, exact), page
    /// for an exact match.
    Alloc(u64, u32, u8, u64),
    /// Free the live allocation at this index (modulo their number).
    Free(usize),
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u64..=16, 0u32..4, 0u8..3, 0u64..PAGES + 8)
            .prop_map(|(size, align, kind, at)| Op::Alloc(size, align, kind, at)),
        2 => any::<usize>().prop_map(Op::Free),
    ]
}

/// Both allocators over the same `PAGES` pages at `BASE`.
pub fn allocators() -> (AddressAllocator<()>, VmAddr) {
    (
        AddressAllocator::with_base_and_size(BASE, PAGES * PAGE).unwrap(),
        VmAddr::new(BASE, PAGES * PAGE).unwrap(),
    )
}

/// One step on both allocators, which must answer alike; `live` holds what they handed out.
pub fn step(
    ours: &mut AddressAllocator<()>,
    vm: &mut VmAddr,
    live: &mut Vec<AddressRange>,
    op: Op,
) -> Result<(), TestCaseError> {
    match op {
        Op::Alloc(pages, align, kind, at) => {
            let (size, align) = (pages * PAGE, PAGE << align);
            let (policy, vm_policy) = match kind {
                0 => (AllocPolicy::FirstMatch, VmPolicy::FirstMatch),
                1 => (AllocPolicy::LastMatch, VmPolicy::LastMatch),
                _ => {
                    let addr = (BASE + at * PAGE) & !(align - 1);
                    (AllocPolicy::ExactMatch(addr), VmPolicy::ExactMatch(addr))
                }
            };
            let got = ours.allocate(size, align, policy);
            if matches!(got, Err(Error::Overlap { .. })) {
                return Ok(());
            }
            let want = vm.allocate(size, align, vm_policy);
            match (&got, &want) {
                (Ok(g), Ok(w)) => {
                    prop_assert_eq!((g.start(), g.end()), (w.start(), w.end()), "{:?}", op);
                    live.push(*g);
                }
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "{op:?}: ours {got:?}, vm-allocator {want:?}"),
            }
        }
        Op::Free(n) => {
            if !live.is_empty() {
                let r = live.swap_remove(n % live.len());
                prop_assert!(ours.free(&r).is_ok());
                let key = VmRange::new(r.start(), r.end()).unwrap();
                prop_assert!(vm.free(&key).is_ok(), "vm-allocator refused {:?}", r);
            }
        }
    }
    Ok(())
}
