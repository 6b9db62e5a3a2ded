//! Model-based property test: random sequences of insert, remove and lookup run through an
//! `AddressSpace` and through a naive model (a `Vec` of ranges, linear scans); every answer
//! and the whole region list must agree after every step. Pure bookkeeping, no memory mapped.

#![allow(clippy::cast_possible_truncation)]

use std::sync::Arc;

use memvisor_space::{
    AddressSpace, Error, Layout, Region, RegionSpec, RegionType, Window, WindowKind,
};
use proptest::prelude::*;
use vm_memory::GuestAddress;

fn page() -> u64 {
    memvisor_vmem::page_size() as u64
}

/// RAM window: pages 0..64; device window: pages 64..96; limit: the end of page 127.
fn layout() -> Layout {
    let p = page();
    Layout::new(
        GuestAddress(128 * p - 1),
        [
            Window::new(WindowKind::Ram, GuestAddress(0), 64 * p).unwrap(),
            Window::new(WindowKind::Device, GuestAddress(64 * p), 32 * p).unwrap(),
        ],
    )
    .unwrap()
}

#[derive(Clone, Debug)]
enum Op {
    Insert {
        ty: RegionType,
        page: u64,
        pages: u64,
    },
    Remove {
        page: u64,
        pages: u64,
    },
    RemoveExisting {
        pick: usize,
    },
    Lookup {
        byte: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let ty = prop_oneof![
        Just(RegionType::Ram),
        Just(RegionType::Device),
        Just(RegionType::Reserved)
    ];
    prop_oneof![
        4 => (ty, 0u64..132, 1u64..9).prop_map(|(ty, page, pages)| Op::Insert { ty, page, pages }),
        1 => (0u64..132, 1u64..9).prop_map(|(page, pages)| Op::Remove { page, pages }),
        2 => any::<usize>().prop_map(|pick| Op::RemoveExisting { pick }),
        4 => (0u64..(132 * 4096)).prop_map(|byte| Op::Lookup { byte }),
    ]
}

/// The naive model: regions as (base, size, type), in insertion order.
#[derive(Default)]
struct Model {
    regions: Vec<(u64, u64, RegionType)>,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Overlap,
    OutsideWindow,
    AddressLimit,
    NotFound,
}

impl Model {
    fn insert(&mut self, ty: RegionType, base: u64, size: u64) -> Outcome {
        let p = page();
        let last = base + size - 1;
        if last > 128 * p - 1 {
            return Outcome::AddressLimit;
        }
        let window = match ty {
            RegionType::Ram => Some((0, 64 * p)),
            RegionType::Device => Some((64 * p, 96 * p)),
            _ => None,
        };
        if let Some((lo, hi)) = window
            && (base < lo || last >= hi)
        {
            return Outcome::OutsideWindow;
        }
        if self
            .regions
            .iter()
            .any(|&(b, s, _)| base < b + s && b <= last)
        {
            return Outcome::Overlap;
        }
        self.regions.push((base, size, ty));
        Outcome::Ok
    }

    fn remove(&mut self, base: u64, size: u64) -> Outcome {
        match self
            .regions
            .iter()
            .position(|&(b, s, _)| b == base && s == size)
        {
            Some(i) => {
                self.regions.remove(i);
                Outcome::Ok
            }
            None => Outcome::NotFound,
        }
    }

    fn lookup(&self, addr: u64) -> Option<(u64, u64, RegionType)> {
        self.regions
            .iter()
            .copied()
            .find(|&(b, s, _)| addr >= b && addr - b < s)
    }

    fn sorted(&self) -> Vec<(u64, u64, RegionType)> {
        let mut v = self.regions.clone();
        v.sort_unstable_by_key(|r| r.0);
        v
    }
}

fn outcome(result: Result<(), Error>) -> Outcome {
    match result {
        Ok(()) => Outcome::Ok,
        Err(Error::Overlap { .. }) => Outcome::Overlap,
        Err(Error::OutsideWindow { .. }) => Outcome::OutsideWindow,
        Err(Error::AddressLimit { .. }) => Outcome::AddressLimit,
        Err(Error::RegionNotFound { .. }) => Outcome::NotFound,
        Err(other) => panic!("unexpected error {other}"),
    }
}

fn run(ops: &[Op]) {
    let p = page();
    let space = AddressSpace::plan(layout(), []).unwrap();
    let mut model = Model::default();
    for op in ops {
        match *op {
            Op::Insert { ty, page, pages } => {
                let spec = RegionSpec::new(ty, GuestAddress(page * p), pages * p);
                let region = Arc::new(Region::plan(spec).unwrap());
                let got = outcome(space.insert_region(region));
                assert_eq!(got, model.insert(ty, page * p, pages * p), "{op:?}");
            }
            Op::Remove { page, pages } => {
                let got = outcome(
                    space
                        .remove_region(GuestAddress(page * p), pages * p)
                        .map(|_| ()),
                );
                assert_eq!(got, model.remove(page * p, pages * p), "{op:?}");
            }
            Op::RemoveExisting { pick } => {
                if model.regions.is_empty() {
                    continue;
                }
                let (b, s, _) = model.regions[pick % model.regions.len()];
                let removed = space.remove_region(GuestAddress(b), s).unwrap();
                assert_eq!((removed.base().0, removed.size()), (b, s));
                assert_eq!(model.remove(b, s), Outcome::Ok);
            }
            Op::Lookup { byte } => {
                let addr = byte * p / 4096;
                let snap = space.memory();
                let got = snap
                    .find_region(GuestAddress(addr))
                    .map(|r| (r.base().0, r.size(), r.ty()));
                assert_eq!(got, model.lookup(addr), "lookup {addr:#x}");
                // Twice: the second answer may come from the last-hit path.
                let again = snap
                    .find_region(GuestAddress(addr))
                    .map(|r| (r.base().0, r.size(), r.ty()));
                assert_eq!(again, got);
            }
        }
        let snap = space.snapshot();
        let walked: Vec<_> = snap
            .regions()
            .map(|r| (r.base().0, r.size(), r.ty()))
            .collect();
        assert_eq!(walked, model.sorted());
        let last_ram = model
            .sorted()
            .iter()
            .rev()
            .find(|r| r.2 == RegionType::Ram)
            .map(|r| GuestAddress(r.0 + r.1 - 1));
        assert_eq!(snap.last_ram_addr(), last_ram);
        snap.check_invariants();
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        // A tenth under the sanitizers, which run each case 5 to 15 times slower.
        cases: if cfg!(miri) { 8 } else if cfg!(memvisor_sanitized) { 1_000 } else { 10_000 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn space_matches_model(ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 12 } else { 32 })) {
        run(&ops);
    }
}
