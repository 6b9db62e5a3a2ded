//! Serde support: one canonical form per type, fully validated on load.
//!
//! - [`RangeInclusive`]: `{ "start": u64, "end": u64 }`, `start <= end`.
//! - [`IdAllocator`]: `{ "first", "last", "used", "allocated": [[lo, hi], ...], "never_allocated":
//!   [[lo, hi], ...] }` with runs sorted, disjoint and not touching, inside `first..=last`, `used`
//!   equal to the number of allocated IDs, and no ID in both lists.
//! - [`AddressAllocator`]: `{ "space": range, "count": n, "allocations": [{ "range", "tag" }, ...]
//!   }` with ranges inside the space, sorted and disjoint, and `count` equal to their number.
//!
//! Loading rebuilds the allocator from the checked lists; nothing in the input is trusted.
//! An address snapshot of n ranges loads in O(n) time and memory whatever the addresses.

use alloc::vec::Vec;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;
use crate::{AddressAllocator, IdAllocator, RangeInclusive};

#[derive(Serialize, Deserialize)]
#[serde(rename = "RangeInclusive", deny_unknown_fields)]
struct RangeRepr {
    start: u64,
    end: u64,
}

impl Serialize for RangeInclusive {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RangeRepr {
            start: self.start(),
            end: self.end(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for RangeInclusive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = RangeRepr::deserialize(d)?;
        RangeInclusive::new(r.start, r.end).map_err(D::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename = "IdAllocator", deny_unknown_fields)]
struct IdRepr {
    first: u32,
    last: u32,
    used: u64,
    allocated: Vec<(u32, u32)>,
    never_allocated: Vec<(u32, u32)>,
}

impl Serialize for IdAllocator {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        IdRepr {
            first: self.first(),
            last: self.last(),
            used: self.used(),
            allocated: self
                .allocated_runs()
                .map(|r| (*r.start(), *r.end()))
                .collect(),
            never_allocated: self
                .never_allocated_runs()
                .map(|r| (*r.start(), *r.end()))
                .collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for IdAllocator {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = IdRepr::deserialize(d)?;
        IdAllocator::from_runs(r.first, r.last, &r.allocated, &r.never_allocated, r.used)
            .map_err(D::Error::custom)
    }
}

#[derive(Serialize)]
#[serde(rename = "Allocation")]
struct EntryRef<'a, T> {
    range: RangeInclusive,
    tag: &'a T,
}

#[derive(Deserialize)]
#[serde(rename = "Allocation", deny_unknown_fields)]
struct Entry<T> {
    range: RangeInclusive,
    tag: T,
}

#[derive(Serialize)]
#[serde(rename = "AddressAllocator")]
struct AddrReprRef<'a, T> {
    space: RangeInclusive,
    count: u64,
    allocations: Vec<EntryRef<'a, T>>,
}

#[derive(Deserialize)]
#[serde(rename = "AddressAllocator", deny_unknown_fields)]
struct AddrRepr<T> {
    space: RangeInclusive,
    count: u64,
    allocations: Vec<Entry<T>>,
}

impl<T: Serialize> Serialize for AddressAllocator<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        AddrReprRef {
            space: self.space(),
            count: self.len() as u64,
            allocations: self
                .allocated()
                .map(|a| EntryRef {
                    range: a.range,
                    tag: a.tag,
                })
                .collect(),
        }
        .serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for AddressAllocator<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = AddrRepr::<T>::deserialize(d)?;
        if r.count != r.allocations.len() as u64 {
            return Err(D::Error::custom(Error::Inconsistent(
                "count does not match the allocations",
            )));
        }
        // Checks order, overlap and bounds, then builds the index in one O(n) pass.
        AddressAllocator::from_sorted(
            r.space,
            r.allocations
                .into_iter()
                .map(|e| (e.range, e.tag))
                .collect(),
        )
        .map_err(D::Error::custom)
    }
}
