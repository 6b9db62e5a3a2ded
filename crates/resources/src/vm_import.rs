//! Importing the snapshots vm-allocator 0.1 writes with its `serde` feature (feature `serde`).
//!
//! vm-allocator derives `Serialize`/`Deserialize` for its allocators, so a VMM that saved them
//! holds, per allocator, one of these forms (shown as JSON; every serde format carries the same
//! fields in the same order):
//!
//! - `IdAllocator`: `{ "range_base": u32, "next_id": u32 | null, "range_end": u32, "freed_ids":
//!   [u32, ...] }`. IDs `range_base..next_id` have been handed out, those in `freed_ids` given back
//!   since, and `next_id..=range_end` never handed out; `next_id` is null once the ID `u32::MAX`
//!   has been handed out.
//! - `AddressAllocator`: `{ "address_space": { "start", "end" }, "interval_tree": { "root": node |
//!   null } }`, a node being `{ "key": { "start", "end" }, "node_state": "Free" | "Allocated",
//!   "left": node | null, "right": node | null, "height": u64 }`: an AVL tree of inclusive ranges,
//!   keyed by range, each free or allocated.
//!
//! [`VmIdAllocatorSnapshot`] and [`VmAddressAllocatorSnapshot`] read those forms (they stand in
//! for vm-allocator's types in a VMM's saved structures);
//! [`IdAllocator::from_vm_allocator_snapshot`] and [`AddressAllocator::from_vm_allocator_snapshot`]
//! check them completely and build memvisor's allocators. Reading bounds the tree's depth, so no
//! input can overflow the stack, and holds 40 bytes per tree node (at most twice that while the
//! list grows); everything else is checked after.

use alloc::vec::Vec;
use core::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::{Error, Result};
use crate::{AddressAllocator, AddressRange, IdAllocator, IdLoadLimits};

/// The deepest tree vm-allocator builds: it refuses to insert into a tree of height 50, so its
/// trees are at most 50 levels deep. Reading refuses a node deeper than this.
const MAX_DEPTH: u32 = 50;

/// No node index: a missing child.
const NIL: u32 = u32::MAX;

/// The bytes of `n` values of `T`, for [`Error::HeapRefused`].
fn heap_bytes<T>(n: usize) -> u64 {
    u64::try_from(n)
        .unwrap_or(u64::MAX)
        .saturating_mul(core::mem::size_of::<T>() as u64)
}

/// The saved state of a vm-allocator 0.1 `IdAllocator`, as its `serde` feature writes it.
///
/// Deserializing reads the fields and nothing else; [`IdAllocator::from_vm_allocator_snapshot`]
/// checks them and builds the allocator.
///
/// ```
/// use memvisor_resources::{IdAllocator, IdLoadLimits, VmIdAllocatorSnapshot};
///
/// // vm-allocator handed out 5..=9, then got 6 and 8 back.
/// let text = r#"{"range_base":5,"next_id":10,"range_end":23,"freed_ids":[6,8]}"#;
/// let saved: VmIdAllocatorSnapshot = serde_json::from_str(text).unwrap();
/// let mut gsis = IdAllocator::from_vm_allocator_snapshot(&saved, &IdLoadLimits::default())?;
/// assert_eq!(gsis.used(), 3);
/// assert_eq!(gsis.allocate_id()?, 6);
/// assert_eq!(gsis.allocate_id()?, 8);
/// assert_eq!(gsis.allocate_id()?, 10);
/// # Ok::<(), memvisor_resources::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename = "IdAllocator", deny_unknown_fields)]
pub struct VmIdAllocatorSnapshot {
    range_base: u32,
    next_id: Option<u32>,
    range_end: u32,
    // A `BTreeSet` in vm-allocator: a sequence in every serde format, read as one.
    freed_ids: Vec<u32>,
}

impl IdAllocator<u32> {
    /// Builds the allocator a vm-allocator 0.1 `IdAllocator` saved as `snapshot`: the IDs it
    /// handed out and did not get back are allocated, those it got back are free (freeing them
    /// again is [`Error::IdAlreadyFree`]), the rest were never allocated. The allocator then
    /// answers as vm-allocator's would (smallest free ID first). The snapshot is checked
    /// completely against what vm-allocator can hold, and at most `limits.max_bitmap_bytes` of
    /// bitmap is allocated (see [`IdLoadLimits`]): O(f + bitmap words) for f freed IDs.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidIdRange`] if `range_base` is above `range_end`;
    /// - [`Error::VmNextIdOutOfRange`] (with the three values) if `next_id` is below `range_base`
    ///   or past `range_end + 1`; [`Error::VmNextIdNull`] (with `range_end`) if it is null (every
    ///   ID up to `u32::MAX` handed out) while `range_end` is not `u32::MAX`;
    /// - [`Error::VmFreedIdsUnsorted`] naming the first freed ID not above the one listed before it
    ///   (and that one) if `freed_ids` is not strictly increasing;
    /// - [`Error::IdOutOfRange`] for a freed ID outside `range_base..=range_end`;
    /// - [`Error::IdNeverAllocated`] for a freed ID at or past `next_id` (never handed out);
    /// - [`Error::SnapshotTooLarge`] if the bitmap would exceed the limit, [`Error::HeapRefused`]
    ///   if the heap refuses memory.
    pub fn from_vm_allocator_snapshot(
        snapshot: &VmIdAllocatorSnapshot,
        limits: &IdLoadLimits,
    ) -> Result<Self> {
        let (first, last) = (snapshot.range_base, snapshot.range_end);
        if first > last {
            return Err(Error::InvalidIdRange {
                first: first.into(),
                last: last.into(),
            });
        }
        // IDs `first..handed` have been handed out (`handed` exclusive, up to 2^32).
        let handed = match snapshot.next_id {
            Some(next) if next >= first && u64::from(next) <= u64::from(last) + 1 => {
                u64::from(next)
            }
            Some(next_id) => {
                return Err(Error::VmNextIdOutOfRange {
                    next_id,
                    range_base: first,
                    range_end: last,
                });
            }
            None if last == u32::MAX => 1 << 32,
            None => return Err(Error::VmNextIdNull { range_end: last }),
        };
        let freed = &snapshot.freed_ids;
        let mut allocated: Vec<(u32, u32)> = Vec::new();
        allocated
            .try_reserve_exact(freed.len() + 1)
            .map_err(|_| Error::HeapRefused {
                bytes: heap_bytes::<(u32, u32)>(freed.len() + 1),
            })?;
        // The next ID that may start an allocated run.
        let mut from = u64::from(first);
        let mut prev: Option<u32> = None;
        for &id in freed {
            if let Some(previous) = prev.filter(|&p| id <= p) {
                return Err(Error::VmFreedIdsUnsorted { id, previous });
            }
            prev = Some(id);
            if id < first || id > last {
                return Err(Error::IdOutOfRange {
                    id: id.into(),
                    first: first.into(),
                    last: last.into(),
                });
            }
            if u64::from(id) >= handed {
                return Err(Error::IdNeverAllocated(id.into()));
            }
            if u64::from(id) > from {
                // `from..id` is inside `first..handed`, so both ends are `u32`s.
                allocated.push((narrow(from), id - 1));
            }
            from = u64::from(id) + 1;
        }
        if from < handed {
            allocated.push((narrow(from), narrow(handed - 1)));
        }
        let never: &[(u32, u32)] = if handed <= u64::from(last) {
            &[(narrow(handed), last)]
        } else {
            &[]
        };
        // Every ID handed out is counted once, and each freed one is among them.
        let used = handed - u64::from(first) - freed.len() as u64;
        Self::from_runs(
            first,
            last,
            &allocated,
            never,
            used,
            limits.max_bitmap_bytes,
        )
    }
}

/// `v` as a `u32`; callers pass values known to be IDs.
fn narrow(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// vm-allocator's `RangeInclusive`, unchecked: loading checks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename = "RangeInclusive", deny_unknown_fields)]
struct VmRange {
    start: u64,
    end: u64,
}

impl VmRange {
    fn checked(self) -> Result<AddressRange> {
        AddressRange::new(self.start, self.end)
    }
}

/// vm-allocator's `NodeState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename = "NodeState")]
enum VmState {
    Free,
    Allocated,
}

/// One node of vm-allocator's interval tree, its children as indices into the node list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct VmNode {
    key: VmRange,
    height: u64,
    left: u32,
    right: u32,
    allocated: bool,
}

/// The saved state of a vm-allocator 0.1 `AddressAllocator`, as its `serde` feature writes it.
///
/// Deserializing reads the tree into a flat list (40 bytes a node, children before their
/// parent), refusing a node more than 50 levels deep (deeper than vm-allocator builds), so no
/// input can make reading recurse without bound;
/// [`AddressAllocator::from_vm_allocator_snapshot`] checks the rest and builds the allocator.
///
/// ```
/// use memvisor_resources::{AddressAllocator, AddressRange, AllocPolicy, VmAddressAllocatorSnapshot};
///
/// // vm-allocator's state after allocating 0x1000..=0x1fff in 0x1000..=0x4fff.
/// let text = r#"{"address_space":{"start":4096,"end":20479},"interval_tree":{"root":
///     {"key":{"start":4096,"end":8191},"node_state":"Allocated","height":2,"left":null,
///      "right":{"key":{"start":8192,"end":20479},"node_state":"Free","left":null,"right":null,
///               "height":1}}}}"#;
/// let saved: VmAddressAllocatorSnapshot = serde_json::from_str(text).unwrap();
/// let mut mmio = AddressAllocator::<()>::from_vm_allocator_snapshot(&saved)?;
/// let first = AddressRange::new(0x1000, 0x1fff)?;
/// assert_eq!(mmio.allocated().map(|a| a.range).collect::<Vec<_>>(), [first]);
/// assert_eq!(mmio.allocate(0x1000, 0x1000, AllocPolicy::FirstMatch)?.start(), 0x2000);
/// mmio.free(&first)?;
/// # Ok::<(), memvisor_resources::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmAddressAllocatorSnapshot {
    space: VmRange,
    /// In post-order: every node after its children, the root (if any) last.
    nodes: Vec<VmNode>,
}

/// What an allocation imported from a vm-allocator snapshot stands for: given to the tag
/// function of [`AddressAllocator::from_vm_allocator_snapshot_with`], so that the ranges no
/// node covers can get a tag of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmImported {
    /// A range the saved tree marks allocated.
    Allocated(AddressRange),
    /// A stretch of the space that no node of the saved tree covers: vm-allocator 0.1.4 leaves
    /// one when `free` removes a range's node and then fails, and hands it out no more. It is
    /// imported allocated, so that its owner can free it; two such ranges that touch are one
    /// stretch.
    Uncovered(AddressRange),
}

impl<T: Default> AddressAllocator<T> {
    /// Builds the allocator a vm-allocator 0.1 `AddressAllocator` saved as `snapshot`: its
    /// space, and each range its tree marks allocated, with the default tag (the stretches no
    /// node covers too: to tell them apart, see
    /// [`from_vm_allocator_snapshot_with`](Self::from_vm_allocator_snapshot_with)). The tree is
    /// checked completely: every range valid and inside the space, the ranges in increasing
    /// order without overlap, every node's height right and the tree balanced. Adjacent free
    /// ranges (vm-allocator 0.1.4 leaves some unmerged) become one. O(n) for n nodes.
    ///
    /// Each stretch of the space that no node covers is imported as one allocation.
    /// vm-allocator 0.1.4 leaves one when `free` removes a range's node and then fails (a range
    /// starting at 1 or ending at `u64::MAX - 1`): vm-allocator no longer hands it out, and its
    /// owner was told the free failed, so it is kept allocated here; freeing it then succeeds.
    /// Two such ranges that touch (one starting at 1, the next ending at `u64::MAX - 1`) become
    /// one allocation, freed as one: the tree no longer tells where the first ended. A space
    /// whose tree is empty is one such stretch. vm-allocator 0.1.4's `free` puts any range into
    /// an emptied tree; one inside the space is imported as its node says, the stretches around
    /// it as allocations.
    ///
    /// vm-allocator's ranges cannot span the whole 64-bit space; memvisor's can, so a space of
    /// `0..=u64::MAX` is accepted.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidRange`] for the space or a node whose start is after its end;
    /// - [`Error::OutsideSpace`] for a node's range not inside the space (vm-allocator 0.1.4 saves
    ///   one when a range outside its space is freed into a tree a failed free emptied; it would
    ///   then hand out addresses outside its space);
    /// - [`Error::VmTreeRangesOverlap`] naming the first range (in the tree's order) that does not
    ///   start past the end of the one before it, and that one;
    /// - [`Error::VmTreeHeight`] naming a node's range, the height it holds and its subtree's;
    ///   [`Error::VmTreeUnbalanced`] naming a node's range and its subtrees' heights, if they
    ///   differ by more than one (both checked children first, so the lowest such node);
    ///   [`Error::VmTreeTooDeep`] for a tree deeper than 50 levels (refused while read);
    /// - [`Error::TooManyAllocations`] past the allocator's limit, [`Error::HeapRefused`] if the
    ///   heap refuses memory.
    pub fn from_vm_allocator_snapshot(snapshot: &VmAddressAllocatorSnapshot) -> Result<Self> {
        Self::from_vm_allocator_snapshot_with(snapshot, |_| T::default())
    }
}

impl<T> AddressAllocator<T> {
    /// [`from_vm_allocator_snapshot`](Self::from_vm_allocator_snapshot) with each allocation's
    /// tag made by `tag` from what it stands for: a range the saved tree marks allocated, or a
    /// stretch no node covers ([`VmImported`]). vm-allocator saves no owners, so this is all a
    /// snapshot tells; a VMM can give the uncovered stretches a tag its own devices never use,
    /// and free or keep them. `tag` is called once per allocation, in address order, and only
    /// once the tree has been checked; on error no tag is kept.
    ///
    /// # Errors
    ///
    /// As [`from_vm_allocator_snapshot`](Self::from_vm_allocator_snapshot).
    ///
    /// ```
    /// use memvisor_resources::{AddressAllocator, AddressRange, VmAddressAllocatorSnapshot, VmImported};
    ///
    /// // The tree covers 8192..=12287 only: the rest of the space was lost by failed frees.
    /// let text = r#"{"address_space":{"start":4096,"end":16383},"interval_tree":{"root":
    ///     {"key":{"start":8192,"end":12287},"node_state":"Allocated","left":null,"right":null,
    ///     "height":1}}}"#;
    /// let saved: VmAddressAllocatorSnapshot = serde_json::from_str(text).unwrap();
    /// let a = AddressAllocator::from_vm_allocator_snapshot_with(&saved, |kind| kind)?;
    /// let tags: Vec<VmImported> = a.allocated().map(|x| *x.tag).collect();
    /// assert_eq!(
    ///     tags,
    ///     [
    ///         VmImported::Uncovered(AddressRange::new(4096, 8191)?),
    ///         VmImported::Allocated(AddressRange::new(8192, 12287)?),
    ///         VmImported::Uncovered(AddressRange::new(12288, 16383)?),
    ///     ]
    /// );
    /// # Ok::<(), memvisor_resources::Error>(())
    /// ```
    pub fn from_vm_allocator_snapshot_with(
        snapshot: &VmAddressAllocatorSnapshot,
        mut tag: impl FnMut(VmImported) -> T,
    ) -> Result<Self> {
        let space = snapshot.space.checked()?;
        let nodes = &snapshot.nodes;
        // Children come before their parent, so each child's height is checked before its
        // parent's: by induction every height checked is the true height (at most 50).
        let height = |i: u32| nodes.get(i as usize).map_or(0, |n| n.height);
        for (i, n) in nodes.iter().enumerate() {
            if let Some(&child) = [n.left, n.right]
                .iter()
                .find(|&&c| c != NIL && c as usize >= i)
            {
                return Err(Error::VmNotATree {
                    node: narrow_index(i),
                    child,
                });
            }
            let (l, r) = (height(n.left), height(n.right));
            let (start, end) = (n.key.start, n.key.end);
            if n.height != l.max(r) + 1 {
                return Err(Error::VmTreeHeight {
                    start,
                    end,
                    stored: n.height,
                    actual: l.max(r) + 1,
                });
            }
            if l.abs_diff(r) > 1 {
                return Err(Error::VmTreeUnbalanced {
                    start,
                    end,
                    left: l,
                    right: r,
                });
            }
        }
        // At most one hole before each node and one after the last: 2n + 1 ranges.
        let most = nodes.len().saturating_mul(2).saturating_add(1);
        // Each range, and whether a node covers it.
        let mut ranges: Vec<(AddressRange, bool)> = Vec::new();
        ranges
            .try_reserve_exact(most)
            .map_err(|_| Error::HeapRefused {
                bytes: heap_bytes::<(AddressRange, bool)>(most),
            })?;
        // In-order walk with an explicit stack: the heights checked above bound it by 50.
        let mut stack = [NIL; MAX_DEPTH as usize + 1];
        let mut depth = 0usize;
        let mut cur = nodes.len().checked_sub(1).map_or(NIL, narrow_index);
        // The first unit not yet covered by a node (`None` once past `u64::MAX`).
        let mut next = Some(space.start());
        // The range of the node before, in address order.
        let mut previous: Option<AddressRange> = None;
        loop {
            while cur != NIL {
                let slot = stack
                    .get_mut(depth)
                    .ok_or(Error::VmTreeTooDeep { limit: MAX_DEPTH })?;
                *slot = cur;
                depth += 1;
                cur = nodes[cur as usize].left;
            }
            let Some(d) = depth.checked_sub(1) else { break };
            depth = d;
            let n = nodes[stack[d] as usize];
            cur = n.right;
            let range = n.key.checked()?;
            if !space.contains_range(&range) {
                return Err(Error::OutsideSpace { range, space });
            }
            let Some(from) = next.filter(|&f| range.start() >= f) else {
                // The space's start is checked above, so a node came before this one.
                return Err(
                    previous.map_or(Error::OutsideSpace { range, space }, |previous| {
                        Error::VmTreeRangesOverlap { range, previous }
                    }),
                );
            };
            previous = Some(range);
            if range.start() > from {
                // Covered by no node: kept allocated (see above).
                ranges.push((AddressRange::new(from, range.start() - 1)?, false));
            }
            if n.allocated {
                ranges.push((range, true));
            }
            next = range.end().checked_add(1);
        }
        if let Some(from) = next.filter(|&f| f <= space.end()) {
            ranges.push((AddressRange::new(from, space.end())?, false));
        }
        // The tags, once everything is checked, in the list `from_sorted` takes.
        let mut tagged: Vec<(AddressRange, T)> = Vec::new();
        tagged
            .try_reserve_exact(ranges.len())
            .map_err(|_| Error::HeapRefused {
                bytes: heap_bytes::<(AddressRange, T)>(ranges.len()),
            })?;
        tagged.extend(ranges.into_iter().map(|(range, covered)| {
            let kind = if covered {
                VmImported::Allocated(range)
            } else {
                VmImported::Uncovered(range)
            };
            (range, tag(kind))
        }));
        Self::from_sorted(space, tagged)
    }
}

/// A node index known to be below `u32::MAX` (reading refuses more nodes).
fn narrow_index(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(NIL)
}

impl<'de> Deserialize<'de> for VmAddressAllocatorSnapshot {
    fn deserialize<D: Deserializer<'de>>(d: D) -> core::result::Result<Self, D::Error> {
        d.deserialize_struct(
            "AddressAllocator",
            &["address_space", "interval_tree"],
            AllocatorVisitor,
        )
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum AllocatorField {
    AddressSpace,
    IntervalTree,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum TreeField {
    Root,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum NodeField {
    Key,
    NodeState,
    Left,
    Right,
    Height,
}

const NODE_FIELDS: &[&str] = &["key", "node_state", "left", "right", "height"];

struct AllocatorVisitor;

impl<'de> Visitor<'de> for AllocatorVisitor {
    type Value = VmAddressAllocatorSnapshot;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a vm-allocator AddressAllocator")
    }

    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> core::result::Result<Self::Value, A::Error> {
        let space = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let mut nodes = Vec::new();
        seq.next_element_seed(TreeSeed { nodes: &mut nodes })?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        Ok(VmAddressAllocatorSnapshot { space, nodes })
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> core::result::Result<Self::Value, A::Error> {
        let mut space = None;
        let mut nodes = Vec::new();
        let mut tree = false;
        while let Some(field) = map.next_key()? {
            match field {
                AllocatorField::AddressSpace => {
                    if space.is_some() {
                        return Err(de::Error::duplicate_field("address_space"));
                    }
                    space = Some(map.next_value()?);
                }
                AllocatorField::IntervalTree => {
                    if tree {
                        return Err(de::Error::duplicate_field("interval_tree"));
                    }
                    map.next_value_seed(TreeSeed { nodes: &mut nodes })?;
                    tree = true;
                }
            }
        }
        let space = space.ok_or_else(|| de::Error::missing_field("address_space"))?;
        if !tree {
            return Err(de::Error::missing_field("interval_tree"));
        }
        Ok(VmAddressAllocatorSnapshot { space, nodes })
    }
}

/// Reads an `IntervalTree` into `nodes`.
struct TreeSeed<'a> {
    nodes: &'a mut Vec<VmNode>,
}

impl<'de> DeserializeSeed<'de> for TreeSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> core::result::Result<(), D::Error> {
        d.deserialize_struct("IntervalTree", &["root"], self)
    }
}

impl<'de> Visitor<'de> for TreeSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a vm-allocator IntervalTree")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> core::result::Result<(), A::Error> {
        seq.next_element_seed(ChildSeed {
            depth: 1,
            nodes: self.nodes,
        })?
        .ok_or_else(|| de::Error::invalid_length(0, &"a struct IntervalTree with 1 element"))?;
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> core::result::Result<(), A::Error> {
        let mut root = false;
        while let Some(TreeField::Root) = map.next_key()? {
            if root {
                return Err(de::Error::duplicate_field("root"));
            }
            map.next_value_seed(ChildSeed {
                depth: 1,
                nodes: &mut *self.nodes,
            })?;
            root = true;
        }
        // A missing root is no tree, as vm-allocator reads it.
        Ok(())
    }
}

/// Reads an `Option<Box<InnerNode>>` at `depth` (the root is at 1) into `nodes`, giving the
/// node's index.
struct ChildSeed<'a> {
    depth: u32,
    nodes: &'a mut Vec<VmNode>,
}

impl<'de> DeserializeSeed<'de> for ChildSeed<'_> {
    type Value = u32;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> core::result::Result<u32, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ChildSeed<'_> {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a vm-allocator InnerNode or none")
    }

    fn visit_none<E: de::Error>(self) -> core::result::Result<u32, E> {
        Ok(NIL)
    }

    fn visit_unit<E: de::Error>(self) -> core::result::Result<u32, E> {
        Ok(NIL)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> core::result::Result<u32, D::Error> {
        if self.depth > MAX_DEPTH {
            return Err(de::Error::custom(Error::VmTreeTooDeep { limit: MAX_DEPTH }));
        }
        d.deserialize_struct(
            "InnerNode",
            NODE_FIELDS,
            NodeVisitor {
                depth: self.depth,
                nodes: self.nodes,
            },
        )
    }
}

/// Reads an `InnerNode` at `depth`, its children first, then appends it to `nodes`.
struct NodeVisitor<'a> {
    depth: u32,
    nodes: &'a mut Vec<VmNode>,
}

impl NodeVisitor<'_> {
    fn child(&mut self) -> ChildSeed<'_> {
        ChildSeed {
            depth: self.depth + 1,
            nodes: &mut *self.nodes,
        }
    }

    fn push<E: de::Error>(self, node: VmNode) -> core::result::Result<u32, E> {
        let index = self.nodes.len();
        if index >= NIL as usize {
            return Err(E::custom(Error::TooManyAllocations(NIL - 1)));
        }
        self.nodes.try_reserve(1).map_err(|_| {
            E::custom(Error::HeapRefused {
                bytes: heap_bytes::<VmNode>(index + 1),
            })
        })?;
        self.nodes.push(node);
        Ok(narrow_index(index))
    }
}

impl<'de> Visitor<'de> for NodeVisitor<'_> {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a vm-allocator InnerNode")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> core::result::Result<u32, A::Error> {
        let missing = |i| de::Error::invalid_length(i, &"a struct InnerNode with 5 elements");
        let key: VmRange = seq.next_element()?.ok_or_else(|| missing(0))?;
        let state: VmState = seq.next_element()?.ok_or_else(|| missing(1))?;
        let left = seq
            .next_element_seed(self.child())?
            .ok_or_else(|| missing(2))?;
        let right = seq
            .next_element_seed(self.child())?
            .ok_or_else(|| missing(3))?;
        let height: u64 = seq.next_element()?.ok_or_else(|| missing(4))?;
        self.push(VmNode {
            key,
            height,
            left,
            right,
            allocated: state == VmState::Allocated,
        })
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> core::result::Result<u32, A::Error> {
        let (mut key, mut state, mut height) = (None, None, None);
        let (mut left, mut right) = (None, None);
        while let Some(field) = map.next_key()? {
            match field {
                NodeField::Key => {
                    if key.is_some() {
                        return Err(de::Error::duplicate_field("key"));
                    }
                    key = Some(map.next_value::<VmRange>()?);
                }
                NodeField::NodeState => {
                    if state.is_some() {
                        return Err(de::Error::duplicate_field("node_state"));
                    }
                    state = Some(map.next_value::<VmState>()?);
                }
                NodeField::Height => {
                    if height.is_some() {
                        return Err(de::Error::duplicate_field("height"));
                    }
                    height = Some(map.next_value::<u64>()?);
                }
                NodeField::Left => {
                    if left.is_some() {
                        return Err(de::Error::duplicate_field("left"));
                    }
                    left = Some(map.next_value_seed(self.child())?);
                }
                NodeField::Right => {
                    if right.is_some() {
                        return Err(de::Error::duplicate_field("right"));
                    }
                    right = Some(map.next_value_seed(self.child())?);
                }
            }
        }
        let node = VmNode {
            key: key.ok_or_else(|| de::Error::missing_field("key"))?,
            height: height.ok_or_else(|| de::Error::missing_field("height"))?,
            // A missing child is none, as vm-allocator reads it.
            left: left.unwrap_or(NIL),
            right: right.unwrap_or(NIL),
            allocated: state.ok_or_else(|| de::Error::missing_field("node_state"))?
                == VmState::Allocated,
        };
        self.push(node)
    }
}
