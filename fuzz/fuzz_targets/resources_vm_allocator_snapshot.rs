//! Arbitrary bytes as vm-allocator 0.1 snapshots (JSON) for the import: reading and importing
//! never panic and never hang; an import succeeds exactly when a plain recursive check of the
//! same JSON finds a valid state, and then gives the allocator that check describes (IDs handed
//! out, freed and never handed out; allocated nodes plus the ranges no node covers), which keeps
//! its invariants and answers calls as the same state built by calls does. Reading and
//! importing are held to the heap budget the crate promises (see [`import_budget`]).
#![no_main]

use libfuzzer_sys::fuzz_target;
use memvisor_resources::{
    AddressAllocator, AddressRange, AllocPolicy, Error, IdAllocator, IdLoadLimits, Request,
    VmAddressAllocatorSnapshot, VmIdAllocatorSnapshot,
};
use memvisor_testkit::counting_heap::{Counting, requested_by};
use serde_json::Value;

/// Ranges up to this many IDs are compared ID by ID.
const CHECK_IDS: u64 = 1 << 12;

/// The fields `names` of a struct written as a JSON object (no other keys; a missing one is
/// `None`) or as an array of exactly its fields in order.
fn fields<'a>(v: &'a Value, names: &[&str]) -> Option<Vec<Option<&'a Value>>> {
    match v {
        Value::Object(o) => {
            if o.keys().any(|k| !names.contains(&k.as_str())) {
                return None;
            }
            Some(names.iter().map(|n| o.get(*n)).collect())
        }
        Value::Array(a) if a.len() == names.len() => Some(a.iter().map(Some).collect()),
        _ => None,
    }
}

/// What the ID snapshot describes, checked plainly: (first, last, IDs handed out below this
/// bound, freed IDs), or `None` if it is not a state vm-allocator can hold.
fn id_state(v: &Value) -> Option<(u32, u32, u64, Vec<u32>)> {
    let f = fields(v, &["range_base", "next_id", "range_end", "freed_ids"])?;
    let u32_of = |v: &Value| v.as_u64().and_then(|x| u32::try_from(x).ok());
    let first = u32_of(f[0]?)?;
    let last = u32_of(f[2]?)?;
    let handed = match f[1].unwrap_or(&Value::Null) {
        Value::Null => (last == u32::MAX).then_some(1u64 << 32)?,
        n => u64::from(u32_of(n)?),
    };
    let freed: Vec<u32> = f[3]?
        .as_array()?
        .iter()
        .map(u32_of)
        .collect::<Option<_>>()?;
    let valid = first <= last
        && handed >= u64::from(first)
        && handed <= u64::from(last) + 1
        && freed.windows(2).all(|w| w[0] < w[1])
        && freed
            .iter()
            .all(|&id| id >= first && u64::from(id) < handed);
    valid.then_some((first, last, handed, freed))
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The heap bytes reading and importing `input` bytes may ask for. The crate promises
/// (DESIGN.md, Snapshots) that an ID import allocates at most `IdLoadLimits::max_bitmap_bytes`
/// of bitmap (1 MiB by default, and its summary words, under 1/64 more) besides its decoded
/// list and a node per run, and that an address import's memory is proportional to the input
/// (40 bytes a node read, at most twice that in capacity, then a node and a tag per range): so
/// a fixed part, the bitmap, and a part per input byte (a freed ID or a node takes at least 2
/// bytes of JSON: under 64 bytes a byte).
fn import_budget(input: usize) -> u64 {
    let bitmap = IdLoadLimits::default().max_bitmap_bytes;
    (64 << 10) + bitmap + bitmap / 32 + 64 * input as u64
}

/// `import` of `data`, failing the target if it asks the heap for more than
/// [`import_budget`].
fn import_within_budget<T>(data: &[u8], import: impl FnOnce() -> T, what: &str) -> T {
    let (out, bytes) = requested_by(import);
    let bytes = bytes as u64;
    let budget = import_budget(data.len());
    assert!(
        bytes <= budget,
        "reading and importing {} bytes as {what} asked the heap for {bytes} bytes (budget \
         {budget})",
        data.len()
    );
    out
}

fn import_ids(data: &[u8]) -> Option<Result<IdAllocator, Error>> {
    import_within_budget(
        data,
        || {
            let saved = serde_json::from_slice::<VmIdAllocatorSnapshot>(data).ok()?;
            Some(IdAllocator::from_vm_allocator_snapshot(
                &saved,
                &IdLoadLimits::default(),
            ))
        },
        "a vm-allocator IdAllocator",
    )
}

fn check_ids(data: &[u8], v: &Value) {
    let want = id_state(v);
    // The bytes as given (repeated keys included) import only what the plain check accepts.
    if let Some(Ok(_)) = import_ids(data) {
        assert!(
            want.is_some(),
            "imported an ID snapshot the plain check refuses"
        );
    }
    let Some((first, last, handed, freed)) = want else {
        return;
    };
    // The same JSON as the plain check read it imports, unless its bitmap is over the limit.
    let mut ids = match import_ids(&serde_json::to_vec(v).expect("a value prints")) {
        Some(Ok(ids)) => ids,
        Some(Err(Error::SnapshotTooLarge { .. })) => return,
        other => panic!("refused an ID snapshot the plain check accepts: {other:?}"),
    };
    assert_eq!((ids.first(), ids.last()), (first, last));
    assert_eq!(ids.used(), handed - u64::from(first) - freed.len() as u64);
    // The same state built by calls.
    let mut built = IdAllocator::new(first, last).expect("a valid range");
    if handed - u64::from(first) <= CHECK_IDS {
        for id in u64::from(first)..handed {
            let id = u32::try_from(id).expect("an ID");
            built.allocate_id_at(id).expect("a free ID is allocated");
        }
        for &id in &freed {
            built.free_id(id).expect("an allocated ID is freed");
        }
        assert_eq!(
            ids, built,
            "imported IdAllocator differs from the state built by calls"
        );
        for w in data.chunks(2).take(64) {
            let id = first.saturating_add(u32::from(w[0]));
            let (a, b) = match w.get(1).unwrap_or(&0) % 3 {
                0 => (ids.free_id(id).map(|()| id), built.free_id(id).map(|()| id)),
                1 => (ids.allocate_id_at(id), built.allocate_id_at(id)),
                _ => (ids.allocate_id(), built.allocate_id()),
            };
            assert_eq!(a, b, "imported and built IdAllocators answer differently");
        }
    }
}

/// The allocated ranges an address snapshot describes, checked plainly (recursion on the
/// `Value`, whose depth serde_json bounds), or `None` if it is not a valid tree.
fn addr_state(v: &Value) -> Option<(AddressRange, Vec<AddressRange>)> {
    fn range(v: &Value) -> Option<(u64, u64)> {
        let f = fields(v, &["start", "end"])?;
        Some((f[0]?.as_u64()?, f[1]?.as_u64()?))
    }
    /// Appends the subtree's nodes in order; gives its height.
    fn walk(v: &Value, depth: u32, out: &mut Vec<(u64, u64, bool)>) -> Option<u64> {
        if v.is_null() {
            return Some(0);
        }
        if depth > 50 {
            return None;
        }
        let f = fields(v, &["key", "node_state", "left", "right", "height"])?;
        let null = Value::Null;
        let hl = walk(f[2].unwrap_or(&null), depth + 1, out)?;
        let (s, e) = range(f[0]?)?;
        // A unit variant is its name, or an object of its name and null.
        let name = match f[1]? {
            Value::String(s) => s.as_str(),
            Value::Object(o) if o.len() == 1 && o.values().all(Value::is_null) => {
                o.keys().next()?
            }
            _ => return None,
        };
        let allocated = match name {
            "Free" => false,
            "Allocated" => true,
            _ => return None,
        };
        out.push((s, e, allocated));
        let hr = walk(f[3].unwrap_or(&null), depth + 1, out)?;
        let h = hl.max(hr) + 1;
        (f[4]?.as_u64()? == h && hl.abs_diff(hr) <= 1).then_some(h)
    }
    let f = fields(v, &["address_space", "interval_tree"])?;
    let (lo, hi) = range(f[0]?)?;
    let space = AddressRange::new(lo, hi).ok()?;
    let tree = fields(f[1]?, &["root"])?;
    let mut nodes = Vec::new();
    walk(tree[0].unwrap_or(&Value::Null), 1, &mut nodes)?;
    let mut ranges = Vec::new();
    let mut next = Some(lo);
    for (s, e, allocated) in nodes {
        let from = next?;
        if s < from || s > e || e > hi {
            return None;
        }
        if s > from {
            ranges.push(AddressRange::new(from, s - 1).ok()?);
        }
        if allocated {
            ranges.push(AddressRange::new(s, e).ok()?);
        }
        next = e.checked_add(1);
    }
    if let Some(from) = next.filter(|&f| f <= hi) {
        ranges.push(AddressRange::new(from, hi).ok()?);
    }
    Some((space, ranges))
}

fn import_addresses(data: &[u8]) -> Option<Result<AddressAllocator<u32>, Error>> {
    import_within_budget(
        data,
        || {
            let saved = serde_json::from_slice::<VmAddressAllocatorSnapshot>(data).ok()?;
            Some(AddressAllocator::from_vm_allocator_snapshot(&saved))
        },
        "a vm-allocator AddressAllocator",
    )
}

fn check_addresses(data: &[u8], v: &Value) {
    let want = addr_state(v);
    // The bytes as given (repeated keys included) import only what the plain check accepts.
    if let Some(Ok(_)) = import_addresses(data) {
        assert!(
            want.is_some(),
            "imported an address snapshot the plain check refuses"
        );
    }
    let Some((space, ranges)) = want else {
        return;
    };
    // The same JSON as the plain check read it imports.
    let mut loaded = match import_addresses(&serde_json::to_vec(v).expect("a value prints")) {
        Some(Ok(a)) => a,
        other => panic!("refused an address snapshot the plain check accepts: {other:?}"),
    };
    loaded
        .check_invariants()
        .expect("an imported AddressAllocator keeps its invariants");
    assert_eq!(loaded.space(), space);
    assert!(
        loaded
            .allocated()
            .map(|a| a.range)
            .eq(ranges.iter().copied()),
        "imported ranges differ from the snapshot's"
    );
    let mut built = AddressAllocator::<u32>::new(space);
    for &r in &ranges {
        built
            .reserve(r)
            .expect("a range of the snapshot is reserved");
    }
    for w in data.chunks(2).take(64) {
        let size = u64::from(*w.get(1).unwrap_or(&1)) + 1;
        let policy = if w[0] & 1 == 0 {
            AllocPolicy::FirstMatch
        } else {
            AllocPolicy::LastMatch
        };
        let Ok(req) = Request::new(size, 1 << (w[0] % 13), policy) else {
            continue;
        };
        let (a, b) = if w[0] % 3 == 0 {
            let n = loaded.len();
            let Some(r) = (n > 0)
                .then(|| {
                    loaded
                        .allocated()
                        .nth(usize::from(w[0]) % n)
                        .map(|a| a.range)
                })
                .flatten()
            else {
                continue;
            };
            (
                loaded.free(&r).map(u64::from),
                built.free(&r).map(u64::from),
            )
        } else {
            (
                loaded.allocate_with(&req, 1).map(|r| r.start()),
                built.allocate_with(&req, 1).map(|r| r.start()),
            )
        };
        assert_eq!(
            a, b,
            "imported and built AddressAllocators answer differently"
        );
    }
    loaded
        .check_invariants()
        .expect("an imported AddressAllocator keeps its invariants");
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        // Not JSON: reading must still not panic.
        let _ = import_ids(data);
        let _ = import_addresses(data);
        return;
    };
    check_ids(data, &value);
    check_addresses(data, &value);
});
