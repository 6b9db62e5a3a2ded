//! vm-allocator 0.1 snapshot import at its edges: read through a compact binary format with no
//! nesting limit of its own (as bincode or postcard write it), and the state of the real
//! vm-allocator after workloads with failing frees and allocations.

use std::fmt;

use memvisor_resources::{
    AddressAllocator, AddressRange, Error, IdAllocator, IdLoadLimits, VmAddressAllocatorSnapshot,
    VmIdAllocatorSnapshot,
};
use serde::Deserialize;
use serde::de::{
    self, DeserializeSeed, EnumAccess, IntoDeserializer, SeqAccess, VariantAccess, Visitor,
};
use serde_json::{Value, json};
use vm_allocator::{
    AddressAllocator as VmAddr, AllocPolicy as VmPolicy, IdAllocator as VmIds,
    RangeInclusive as VmRange,
};

// ---------------------------------------------------------------------------------------------
// A binary format in the manner of bincode: fixed-width little-endian integers, a tag byte per
// option, a 64-bit length before each sequence, structs as their fields in order, enum variants
// as a 32-bit index. It is not self-describing and puts no bound on nesting.

#[derive(Debug)]
struct BinError(String);

impl fmt::Display for BinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BinError {}

impl de::Error for BinError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

struct Bin<'a> {
    input: &'a [u8],
}

impl Bin<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], BinError> {
        let (head, rest) = self
            .input
            .split_first_chunk::<N>()
            .ok_or_else(|| BinError("unexpected end of input".into()))?;
        self.input = rest;
        Ok(*head)
    }
}

fn from_bin<'a, T: Deserialize<'a>>(input: &'a [u8]) -> Result<T, BinError> {
    let mut d = Bin { input };
    let value = T::deserialize(&mut d)?;
    if d.input.is_empty() {
        Ok(value)
    } else {
        Err(BinError("trailing bytes".into()))
    }
}

struct Fields<'a, 'b> {
    d: &'b mut Bin<'a>,
    left: u64,
}

impl<'de> SeqAccess<'de> for Fields<'de, '_> {
    type Error = BinError;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, BinError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.d).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        usize::try_from(self.left).ok()
    }
}

impl<'de> EnumAccess<'de> for &mut Bin<'de> {
    type Error = BinError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), BinError> {
        let index = u32::from_le_bytes(self.take()?);
        let value = seed.deserialize(index.into_deserializer())?;
        Ok((value, self))
    }
}

impl<'de> VariantAccess<'de> for &mut Bin<'de> {
    type Error = BinError;

    fn unit_variant(self) -> Result<(), BinError> {
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, _: S) -> Result<S::Value, BinError> {
        Err(BinError("only unit variants".into()))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, BinError> {
        Err(BinError("only unit variants".into()))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, BinError> {
        Err(BinError("only unit variants".into()))
    }
}

impl<'de> de::Deserializer<'de> for &mut Bin<'de> {
    type Error = BinError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, BinError> {
        Err(BinError("not self-describing".into()))
    }

    fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, BinError> {
        v.visit_u32(u32::from_le_bytes(self.take()?))
    }

    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, BinError> {
        v.visit_u64(u64::from_le_bytes(self.take()?))
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, BinError> {
        match self.take::<1>()?[0] {
            0 => v.visit_none(),
            1 => v.visit_some(self),
            t => Err(BinError(format!("option tag {t}"))),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, BinError> {
        let left = u64::from_le_bytes(self.take()?);
        v.visit_seq(Fields { d: self, left })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, BinError> {
        v.visit_seq(Fields {
            d: self,
            left: fields.len() as u64,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, BinError> {
        v.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct newtype_struct tuple tuple_struct map identifier ignored_any
    }
}

// The encodings of vm-allocator's JSON snapshots in that format.

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_range(out: &mut Vec<u8>, v: &Value) {
    put_u64(out, v["start"].as_u64().unwrap());
    put_u64(out, v["end"].as_u64().unwrap());
}

fn put_node(out: &mut Vec<u8>, v: &Value) {
    if v.is_null() {
        out.push(0);
        return;
    }
    out.push(1);
    put_range(out, &v["key"]);
    let state: u32 = if v["node_state"] == "Allocated" { 1 } else { 0 };
    out.extend_from_slice(&state.to_le_bytes());
    put_node(out, &v["left"]);
    put_node(out, &v["right"]);
    put_u64(out, v["height"].as_u64().unwrap());
}

fn addr_bin(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    put_range(&mut out, &v["address_space"]);
    put_node(&mut out, &v["interval_tree"]["root"]);
    out
}

fn ids_bin(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let u32_of = |v: &Value| u32::try_from(v.as_u64().unwrap()).unwrap();
    out.extend_from_slice(&u32_of(&v["range_base"]).to_le_bytes());
    match v["next_id"].as_u64() {
        None => out.push(0),
        Some(n) => {
            out.push(1);
            out.extend_from_slice(&u32::try_from(n).unwrap().to_le_bytes());
        }
    }
    out.extend_from_slice(&u32_of(&v["range_end"]).to_le_bytes());
    let freed = v["freed_ids"].as_array().unwrap();
    put_u64(&mut out, freed.len() as u64);
    for id in freed {
        out.extend_from_slice(&u32_of(id).to_le_bytes());
    }
    out
}

/// A chain of `n` allocated nodes in the binary format, each the right child of the one before.
fn bin_chain(n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_u64(&mut out, 0);
    put_u64(&mut out, u64::MAX);
    for i in 0..n {
        out.push(1);
        put_u64(&mut out, i);
        put_u64(&mut out, i);
        out.extend_from_slice(&1u32.to_le_bytes());
        out.push(0);
    }
    // The deepest node has no right child; then each node's height, deepest first (a node's
    // height follows its right child, which is the node below it).
    out.push(0);
    for h in 1..=n {
        put_u64(&mut out, h);
    }
    out
}

fn r(start: u64, end: u64) -> AddressRange {
    AddressRange::new(start, end).unwrap()
}

#[test]
fn binary_format_reads_what_vm_allocator_saves() {
    let mut vm = VmAddr::new(0x1000, 0x10000).unwrap();
    let a = vm.allocate(0x1000, 0x1000, VmPolicy::LastMatch).unwrap();
    let b = vm.allocate(0x800, 0x100, VmPolicy::FirstMatch).unwrap();
    vm.allocate(0x100, 0x100, VmPolicy::ExactMatch(0x4000))
        .unwrap();
    vm.free(&b).unwrap();
    let value = serde_json::to_value(&vm).unwrap();
    let saved: VmAddressAllocatorSnapshot = from_bin(&addr_bin(&value)).unwrap();
    let json: VmAddressAllocatorSnapshot = serde_json::from_value(value).unwrap();
    assert_eq!(saved, json);
    let ours = AddressAllocator::<()>::from_vm_allocator_snapshot(&saved).unwrap();
    assert_eq!(
        ours.allocated().map(|x| x.range).collect::<Vec<_>>(),
        [r(0x4000, 0x40ff), r(a.start(), a.end())]
    );

    let mut ids = VmIds::new(3, 40).unwrap();
    for _ in 0..6 {
        ids.allocate_id().unwrap();
    }
    ids.free_id(4).unwrap();
    let value = serde_json::to_value(&ids).unwrap();
    let saved: VmIdAllocatorSnapshot = from_bin(&ids_bin(&value)).unwrap();
    assert_eq!(saved, serde_json::from_value(value).unwrap());
    let mut ours =
        IdAllocator::from_vm_allocator_snapshot(&saved, &IdLoadLimits::default()).unwrap();
    assert_eq!(ours.used(), 5);
    assert_eq!(ours.allocate_id(), Ok(4));
    assert_eq!(ours.allocate_id(), Ok(9));
}

/// Runs `f` on a thread with a small stack: reading must not recurse past its bound.
fn on_small_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .expect("the reader did not overflow the stack or panic")
}

#[test]
fn deep_trees_in_a_format_without_a_nesting_limit_are_refused_while_read() {
    // As deep as vm-allocator builds: read (then refused as unbalanced).
    let ok = on_small_stack(|| {
        from_bin::<VmAddressAllocatorSnapshot>(&bin_chain(50))
            .map(|s| AddressAllocator::<()>::from_vm_allocator_snapshot(&s).map(|_| ()))
            .map_err(|e| e.to_string())
    });
    assert_eq!(
        ok,
        Ok(Err(Error::VmTreeUnbalanced {
            start: 47,
            end: 47,
            left: 0,
            right: 2,
        }))
    );
    // Deeper: refused at level 51, however deep the input goes (a million levels would
    // overflow any stack if each were read by a recursive call).
    for n in [51, 52, 1_000, 1_000_000] {
        let err = on_small_stack(move || {
            from_bin::<VmAddressAllocatorSnapshot>(&bin_chain(n))
                .map(|_| ())
                .unwrap_err()
                .to_string()
        });
        assert!(err.contains("deeper than 50 levels"), "{n} levels: {err}");
    }
}

#[test]
fn claimed_lengths_do_not_allocate_up_front() {
    // A list of freed IDs that claims 2^64 - 1 entries and holds two.
    let mut input = Vec::new();
    input.extend_from_slice(&0u32.to_le_bytes());
    input.push(1);
    input.extend_from_slice(&10u32.to_le_bytes());
    input.extend_from_slice(&100u32.to_le_bytes());
    put_u64(&mut input, u64::MAX);
    input.extend_from_slice(&1u32.to_le_bytes());
    input.extend_from_slice(&2u32.to_le_bytes());
    let err = from_bin::<VmIdAllocatorSnapshot>(&input).unwrap_err();
    assert!(err.to_string().contains("end of input"), "{err}");
    // The same list with its true length reads.
    let at = input.len() - 16;
    input[at..at + 8].copy_from_slice(&2u64.to_le_bytes());
    let saved = from_bin::<VmIdAllocatorSnapshot>(&input).unwrap();
    let ours = IdAllocator::from_vm_allocator_snapshot(&saved, &IdLoadLimits::default()).unwrap();
    assert_eq!(ours.used(), 8);
}

// ---------------------------------------------------------------------------------------------
// The real vm-allocator, with frees that fail and allocations that fail.

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The nodes of a vm-allocator tree in order, after checking that every stored height is the
/// subtree's and that the tree is AVL-balanced; gives the tree's height.
fn walk_checked(node: &Value, out: &mut Vec<(u64, u64, bool)>) -> u64 {
    if node.is_null() {
        return 0;
    }
    let l = walk_checked(&node["left"], out);
    let key = &node["key"];
    out.push((
        key["start"].as_u64().unwrap(),
        key["end"].as_u64().unwrap(),
        node["node_state"] == "Allocated",
    ));
    let r = walk_checked(&node["right"], out);
    let h = l.max(r) + 1;
    assert_eq!(node["height"].as_u64(), Some(h), "stale height in {node}");
    assert!(l.abs_diff(r) <= 1, "unbalanced at {node}");
    h
}

/// vm-allocator state after random calls, many of them refused: frees of live allocations,
/// frees repeated, frees of any node's range (free ones included), of ranges never handed out
/// and of the whole space, and allocations of every policy that may not fit.
#[test]
fn every_state_vm_allocator_reaches_with_failing_calls_imports() {
    let mut rng = Rng(0x0dd_5eed_u64);
    let cases = if cfg!(miri) { 3 } else { 600 };
    let (mut states, mut lost, mut outside) = (0u64, 0u64, 0u64);
    for case in 0..cases {
        let base = [0, 1, 2, 0x1000, u64::MAX - 0x200, u64::MAX - 0x201][case % 6];
        let size = 1 + rng.below(if base > 1 << 63 { 0x200 } else { 300 });
        let end = base + (size - 1);
        let mut vm = VmAddr::new(base, size).unwrap();
        let mut live: Vec<VmRange> = Vec::new();
        let mut freed: Vec<VmRange> = Vec::new();
        for _ in 0..80 {
            let value = serde_json::to_value(&vm).unwrap();
            let mut nodes = Vec::new();
            walk_checked(&value["interval_tree"]["root"], &mut nodes);
            let near = |rng: &mut Rng| base.saturating_sub(4).saturating_add(rng.below(size + 8));
            match rng.below(8) {
                0 | 1 if !live.is_empty() => {
                    let i = usize::try_from(rng.below(live.len() as u64)).unwrap();
                    let x = live.swap_remove(i);
                    let _ = vm.free(&x);
                    freed.push(x);
                }
                2 if !freed.is_empty() => {
                    let i = usize::try_from(rng.below(freed.len() as u64)).unwrap();
                    let _ = vm.free(&freed[i]);
                }
                3 if !nodes.is_empty() => {
                    let i = usize::try_from(rng.below(nodes.len() as u64)).unwrap();
                    let (s, e, _) = nodes[i];
                    let _ = vm.free(&VmRange::new(s, e).unwrap());
                }
                4 => {
                    let (a, b) = (near(&mut rng), near(&mut rng));
                    if let Ok(x) = VmRange::new(a.min(b), a.max(b)) {
                        let _ = vm.free(&x);
                    }
                }
                5 => {
                    let _ = vm.free(&VmRange::new(base, end).unwrap());
                }
                _ => {
                    let (units, align) = (1 + rng.below(48), 1 << rng.below(7));
                    let policy = match rng.below(3) {
                        0 => VmPolicy::FirstMatch,
                        1 => VmPolicy::LastMatch,
                        _ => VmPolicy::ExactMatch(near(&mut rng) & !(align - 1)),
                    };
                    if let Ok(x) = vm.allocate(units, align, policy) {
                        live.push(x);
                    }
                }
            }
            let value = serde_json::to_value(&vm).unwrap();
            let mut nodes = Vec::new();
            walk_checked(&value["interval_tree"]["root"], &mut nodes);
            let saved: VmAddressAllocatorSnapshot = serde_json::from_value(value.clone()).unwrap();
            assert_eq!(
                from_bin::<VmAddressAllocatorSnapshot>(&addr_bin(&value)).unwrap(),
                saved
            );
            states += 1;
            let got = AddressAllocator::<()>::from_vm_allocator_snapshot(&saved);
            // A node outside the space: vm-allocator's `free` on an empty tree inserts any
            // range it is given. Refused, naming the range.
            if let Some(&(s, e, _)) = nodes.iter().find(|&&(s, e, _)| s < base || e > end) {
                assert_eq!(
                    got.map(|_| ()),
                    Err(Error::OutsideSpace {
                        range: r(s, e),
                        space: r(base, end)
                    }),
                    "{value}"
                );
                outside += 1;
                break;
            }
            let ours = got.unwrap_or_else(|e| panic!("{e}: {value}"));
            ours.check_invariants().unwrap();
            let mut want = Vec::new();
            let mut next = Some(base);
            for &(s, e, allocated) in &nodes {
                let from = next.unwrap();
                if s > from {
                    want.push(r(from, s - 1));
                    lost += 1;
                }
                if allocated {
                    want.push(r(s, e));
                }
                next = e.checked_add(1);
            }
            if let Some(from) = next.filter(|&f| f <= end) {
                want.push(r(from, end));
                lost += 1;
            }
            assert_eq!(
                ours.allocated().map(|a| a.range).collect::<Vec<_>>(),
                want,
                "{value}"
            );
        }
    }
    assert!(
        cfg!(miri) || (lost > 0 && outside > 0),
        "{states} states, {lost} lost ranges, {outside} with a node outside the space"
    );
}

#[test]
fn id_snapshots_at_the_edges_of_u32_import() {
    let limits = IdLoadLimits {
        max_bitmap_bytes: 1 << 20,
    };
    for (base, end) in [
        (u32::MAX, u32::MAX),
        (u32::MAX - 3, u32::MAX),
        (0, 0),
        (0, 3),
    ] {
        let mut vm = VmIds::new(base, end).unwrap();
        loop {
            let value = serde_json::to_value(&vm).unwrap();
            let saved: VmIdAllocatorSnapshot = from_bin(&ids_bin(&value)).unwrap();
            let ours = IdAllocator::from_vm_allocator_snapshot(&saved, &limits).unwrap();
            for id in [base.wrapping_sub(1), base, end, end.wrapping_add(1)] {
                assert_eq!(ours.is_allocated(id), vm.is_allocated(id), "{value} {id}");
            }
            if vm.allocate_id().is_err() {
                break;
            }
        }
        let value = serde_json::to_value(&vm).unwrap();
        if end == u32::MAX {
            assert_eq!(value["next_id"], json!(null));
        }
        vm.free_id(end).unwrap();
        let saved: VmIdAllocatorSnapshot = serde_json::to_value(&vm)
            .and_then(serde_json::from_value)
            .unwrap();
        let mut ours = IdAllocator::from_vm_allocator_snapshot(&saved, &limits).unwrap();
        assert_eq!(
            ours.allocate_id().map_err(|_| ()),
            vm.allocate_id().map_err(|_| ())
        );
        assert!(ours.allocate_id().is_err() && vm.allocate_id().is_err());
    }
}

#[test]
fn touching_ranges_lost_by_failed_frees_import_as_one_allocation() {
    // vm-allocator loses 1..=0x10 (its free fails on the range starting at 1) and the range
    // after it up to u64::MAX - 1 (its free fails on the range ending there): the tree is left
    // empty, and nothing tells where one range ended. Both become one allocation, freed as one.
    let mut vm = VmAddr::new(1, u64::MAX - 1).unwrap();
    let a = vm.allocate(0x10, 1, VmPolicy::ExactMatch(1)).unwrap();
    let b = vm
        .allocate(u64::MAX - 0x11, 1, VmPolicy::ExactMatch(0x11))
        .unwrap();
    assert_eq!((b.start(), b.end()), (0x11, u64::MAX - 1));
    assert!(vm.free(&a).is_err());
    assert!(vm.free(&b).is_err());
    let value = serde_json::to_value(&vm).unwrap();
    assert_eq!(value["interval_tree"]["root"], Value::Null);
    let saved: VmAddressAllocatorSnapshot = serde_json::from_value(value).unwrap();
    let mut ours = AddressAllocator::<()>::from_vm_allocator_snapshot(&saved).unwrap();
    let whole = r(1, u64::MAX - 1);
    assert_eq!(
        ours.allocated().map(|x| x.range).collect::<Vec<_>>(),
        [whole]
    );
    // Neither range alone is an allocation (vm-allocator refuses both frees too)...
    assert_eq!(
        ours.free(&r(1, 0x10)),
        Err(Error::NotExactAllocation {
            requested: r(1, 0x10),
            existing: whole
        })
    );
    assert!(vm.free(&a).is_err());
    // ... the stretch no node covers is.
    assert_eq!(ours.free(&whole), Ok(()));
    assert_eq!(ours.used(), 0);
}

#[test]
fn node_outside_the_space_saved_by_vm_allocator_is_refused() {
    // A failed free empties the tree; vm-allocator then takes back any range "freed" into the
    // empty tree, even one outside its space, and would hand it out.
    let mut vm = VmAddr::new(1, 0x10).unwrap();
    let x = vm.allocate(0x10, 1, VmPolicy::FirstMatch).unwrap();
    assert!(vm.free(&x).is_err());
    vm.free(&VmRange::new(0x20, 0x2f).unwrap()).unwrap();
    let got = vm.allocate(0x10, 1, VmPolicy::FirstMatch).unwrap();
    assert_eq!((got.start(), got.end()), (0x20, 0x2f));
    let saved: VmAddressAllocatorSnapshot =
        serde_json::from_value(serde_json::to_value(&vm).unwrap()).unwrap();
    assert_eq!(
        AddressAllocator::<()>::from_vm_allocator_snapshot(&saved).map(|_| ()),
        Err(Error::OutsideSpace {
            range: r(0x20, 0x2f),
            space: r(1, 0x10)
        })
    );
    // A range inside the space "freed" into the empty tree imports: free there, and the
    // rest of the space, which no node covers, allocated.
    let mut vm = VmAddr::new(1, 0x10).unwrap();
    let x = vm.allocate(0x10, 1, VmPolicy::FirstMatch).unwrap();
    assert!(vm.free(&x).is_err());
    vm.free(&VmRange::new(5, 8).unwrap()).unwrap();
    let saved: VmAddressAllocatorSnapshot =
        serde_json::from_value(serde_json::to_value(&vm).unwrap()).unwrap();
    let ours = AddressAllocator::<()>::from_vm_allocator_snapshot(&saved).unwrap();
    assert_eq!(
        ours.allocated().map(|a| a.range).collect::<Vec<_>>(),
        [r(1, 4), r(9, 0x10)]
    );
}
