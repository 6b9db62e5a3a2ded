//! Serde support: one canonical form per type, fully validated on load.
//!
//! - [`AddressRange`]: `{ "start": u64, "end": u64 }`, `start <= end`.
//! - [`IdAllocator`]: `{ "first", "last", "used", "allocated": [[lo, hi], ...], "never_allocated":
//!   [[lo, hi], ...] }` with runs sorted, disjoint and not touching, inside `first..=last`, `used`
//!   equal to the number of allocated IDs, and no ID in both lists.
//! - [`AddressAllocator`]: `{ "space": range, "count": n, "allocations": [{ "range", "tag" }, ...]
//!   }` with ranges inside the space, sorted and disjoint, and `count` equal to their number.
//!
//! Loading rebuilds the allocator from the checked lists; nothing in the input is trusted. An ID
//! snapshot allocates at most [`IdLoadLimits::max_bitmap_bytes`] of bitmap (1 MiB by default)
//! besides its decoded lists and a node per run.
//! An address snapshot of n ranges loads in O(n) time and memory whatever the addresses.

use alloc::vec::Vec;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;
use crate::{AddressAllocator, AddressRange, Id, IdAllocator};

#[derive(Serialize, Deserialize)]
#[serde(rename = "RangeInclusive", deny_unknown_fields)]
struct RangeRepr {
    start: u64,
    end: u64,
}

impl Serialize for AddressRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RangeRepr {
            start: self.start(),
            end: self.end(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for AddressRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = RangeRepr::deserialize(d)?;
        AddressRange::new(r.start, r.end).map_err(D::Error::custom)
    }
}

/// The saved state of an [`IdAllocator`]: what it serializes to and loads from.
///
/// Loading through `Deserialize for IdAllocator` applies [`IdLoadLimits::default`]; to load a
/// snapshot with other limits, deserialize an `IdSnapshot` and call
/// [`IdAllocator::from_snapshot`].
///
/// ```
/// use memvisor_resources::{Error, IdAllocator, IdLoadLimits, IdSnapshot};
///
/// // One ID at the top of the range costs a few bytes: the bitmap does not cover those below.
/// let text = r#"{"first":0,"last":4294967295,"used":1,"allocated":[[4294967295,4294967295]],
///     "never_allocated":[[0,4294967294]]}"#;
/// assert_eq!(serde_json::from_str::<IdAllocator>(text).unwrap().used(), 1);
/// // 100 bytes naming every ID but 0 as allocated: their bitmap would need 512 MiB.
/// let text = r#"{"first":0,"last":4294967295,"used":4294967295,"allocated":[[1,4294967295]],
///     "never_allocated":[[0,0]]}"#;
/// assert!(serde_json::from_str::<IdAllocator>(text).is_err());
/// let snapshot: IdSnapshot = serde_json::from_str(text).unwrap();
/// let limits = IdLoadLimits::default();
/// assert_eq!(
///     IdAllocator::from_snapshot(&snapshot, &limits).map(|a| a.used()),
///     Err(Error::SnapshotTooLarge { needed: 545_390_592, limit: limits.max_bitmap_bytes })
/// );
/// // A caller that means it raises the limit.
/// let roomy = IdLoadLimits { max_bitmap_bytes: 600 << 20 };
/// # if cfg!(miri) { return Ok(()); }
/// assert_eq!(IdAllocator::from_snapshot(&snapshot, &roomy)?.used(), 4_294_967_295);
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "IdAllocator", deny_unknown_fields)]
#[serde(bound = "")]
pub struct IdSnapshot<I: Id = u32> {
    first: I,
    last: I,
    used: u64,
    allocated: Vec<(I, I)>,
    never_allocated: Vec<(I, I)>,
}

/// Bounds on what loading an [`IdSnapshot`] may allocate.
///
/// The allocator's bitmap covers the allocated IDs from `first` up while it stays in proportion
/// to them (at most 64 bits per allocated ID, or 64 Ki IDs); IDs above that are held as runs,
/// 28 bytes each. A short snapshot whose runs name many IDs (`[[0, 4294967295]]`) would still
/// cost up to 512 MiB of bitmap, which the limit bounds. Besides the bitmap, loading holds the
/// decoded run lists (two IDs per run: 4, 8 or 16 bytes for `u16`, `u32` or `u64`, proportional
/// to the input) and one 28-byte index node per never-allocated run and per allocated run past
/// the bitmap, each with room for an eighth more (at least 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdLoadLimits {
    /// Largest bitmap, in bytes, that loading may allocate: leaves (one bit per ID up to the
    /// highest allocated ID the bitmap covers, rounded up to 64), the summary (one bit per leaf
    /// word) and the top level (one bit per summary word), each rounded up to whole 64-bit
    /// words. The runs are taken in order and the bitmap grows to cover one only while it then
    /// holds at most 64 bits per ID allocated so far (or covers at most 64 Ki IDs), as when the
    /// IDs are allocated by calls; the runs past it need no bitmap.
    pub max_bitmap_bytes: u64,
}

impl Default for IdLoadLimits {
    /// 1 MiB of bitmap: 129,024 leaf words, 2,016 summary words and 32 top words, so IDs
    /// allocated densely from `first` load up to 8,257,536 of them (`first..first + 8_257_536`);
    /// one more needs 1,048,592 bytes and is refused with [`Error::SnapshotTooLarge`] naming
    /// both numbers. Each further MiB holds about 8.26 million IDs more (4,096 of every 4,161
    /// bits are leaves); every ID of the `u32` range allocated needs 545,390,592 bytes (about
    /// 520 MiB). What VMMs hold is far below the default: Firecracker's GSIs (`5..=4095` on
    /// x86_64) need 528 bytes, KVM's 32,764 user memory slots 4,168, a PCI bus's 32 slots 24. A
    /// caller that allocated more IDs (handles of a language VM, say) raises the limit to the
    /// `needed` the error names and loads through [`IdAllocator::from_snapshot`]; loading
    /// through `Deserialize` always applies this default.
    fn default() -> Self {
        Self {
            max_bitmap_bytes: 1 << 20,
        }
    }
}

impl<I: Id> IdAllocator<I> {
    /// The allocator's saved state (what `Serialize` writes). O(n / 64 + runs).
    #[must_use]
    pub fn snapshot(&self) -> IdSnapshot<I> {
        IdSnapshot {
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
    }

    /// Rebuilds an allocator from `snapshot`, checking it completely and allocating at most
    /// `limits.max_bitmap_bytes` of bitmap. O(runs · log runs + bitmap words): a run of
    /// allocated IDs is marked a word at a time, so the time is bounded by the input and the
    /// limit, not by how many IDs a run names.
    ///
    /// # Errors
    ///
    /// [`Error::Inconsistent`] naming the first failed check (runs unsorted, overlapping,
    /// touching or outside the range; an ID both allocated and never allocated; a wrong count),
    /// [`Error::SnapshotTooLarge`] if the bitmap would exceed the limit, [`Error::HeapRefused`] if
    /// the heap refuses a bitmap the limit allows, [`Error::IdRangeTooLarge`] if the range holds
    /// more than [`MAX_ID_RANGE`](crate::MAX_ID_RANGE) IDs.
    pub fn from_snapshot(snapshot: &IdSnapshot<I>, limits: &IdLoadLimits) -> Result<Self, Error> {
        let s = snapshot;
        Self::from_runs(
            s.first,
            s.last,
            &s.allocated,
            &s.never_allocated,
            s.used,
            limits.max_bitmap_bytes,
        )
    }
}

impl<I: Id> Serialize for IdAllocator<I> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.snapshot().serialize(s)
    }
}

impl<'de, I: Id> Deserialize<'de> for IdAllocator<I> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let snapshot = IdSnapshot::<I>::deserialize(d)?;
        IdAllocator::from_snapshot(&snapshot, &IdLoadLimits::default()).map_err(D::Error::custom)
    }
}

#[derive(Serialize)]
#[serde(rename = "Allocation")]
struct EntryRef<'a, T> {
    range: AddressRange,
    tag: &'a T,
}

#[derive(Deserialize)]
#[serde(rename = "Allocation", deny_unknown_fields)]
struct Entry<T> {
    range: AddressRange,
    tag: T,
}

#[derive(Serialize)]
#[serde(rename = "AddressAllocator")]
struct AddrReprRef<'a, T> {
    space: AddressRange,
    count: u64,
    allocations: Vec<EntryRef<'a, T>>,
}

#[derive(Deserialize)]
#[serde(rename = "AddressAllocator", deny_unknown_fields)]
struct AddrRepr<T> {
    space: AddressRange,
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
