//! Memory the heap refuses is an error, not an abort of the caller's process: the global
//! allocator here refuses any request over 64 MiB, as a process under a memory limit (or a
//! 32-bit one, for a request past `isize::MAX`) would, and on a thread inside `refusing_after`,
//! every request after that many more.

use std::fmt::Debug;
use std::rc::Rc;

use memvisor_resources::{
    AddressAllocator, AddressRange, AllocPolicy, AllocatorSet, Error, IdAllocator, IdLoadLimits,
    IdSnapshot, Refused, Request,
};
use memvisor_testkit::refusing_heap::{Refusing, refusing, refusing_after};

/// Requests over this many bytes are always refused.
const MAX_REQUEST: usize = 64 << 20;

#[global_allocator]
static ALLOCATOR: Refusing = Refusing::up_to(MAX_REQUEST);

#[test]
fn allocate_many_result_the_heap_refuses_fails_and_changes_nothing() {
    // 2^32 IDs, so that any count is available; the bitmap grows only as IDs are handed out.
    let mut a = IdAllocator::<u64>::with_range(1 << 40, (1 << 40) + u64::from(u32::MAX)).unwrap();
    assert_eq!(
        a.allocate_many(3),
        Ok(vec![1 << 40, (1 << 40) + 1, (1 << 40) + 2])
    );
    a.free_id((1 << 40) + 1).unwrap();
    let before = a.clone();
    // 20 million IDs of 8 bytes: a result the heap refuses.
    assert_eq!(
        a.allocate_many(20_000_000),
        Err(Error::HeapRefused { bytes: 160_000_000 })
    );
    // Every free ID: 32 GiB of result, past what a 32-bit process can even ask for.
    assert_eq!(a.available(), u64::from(u32::MAX) - 1);
    assert_eq!(
        a.allocate_many(u32::MAX - 1),
        Err(Error::HeapRefused {
            bytes: 8 * u64::from(u32::MAX - 1)
        })
    );
    assert_eq!(a, before);
    assert_eq!(a.used(), 2);
    assert_eq!(a.allocate_id(), Ok((1 << 40) + 1));
    // A result the heap grants is still handed out whole.
    assert_eq!(a.allocate_many(1000).map(|ids| ids.len()), Ok(1000));
    assert_eq!(a.used(), 1003);
}

#[test]
fn allocate_many_bitmap_the_heap_refuses_fails_and_changes_nothing() {
    let mut a = IdAllocator::new(0, 1 << 20).unwrap();
    a.allocate_many(100).unwrap();
    a.free_id(7).unwrap();
    let before = a.clone();
    // The list is granted; the bitmap growing to cover ID 5099 is not. Nothing is taken, not
    // even the free IDs the bitmap already covers.
    // (The bitmap has 2 words; it needs 80.)
    assert_eq!(
        refusing_after(1, || a.allocate_many(5000)),
        Err(Error::HeapRefused { bytes: 78 * 8 })
    );
    assert_eq!(a, before);
    assert_eq!(
        a.allocate_many(5000).map(|ids| ids[..2].to_vec()),
        Ok(vec![7, 100])
    );
    assert_eq!(a.used(), 5099);
}

#[test]
fn bitmap_growth_the_heap_refuses_fails_and_changes_nothing() {
    // 2^30 IDs ending at u32::MAX in the whole `u32` range: so many IDs allocated get a
    // bitmap covering them, 512 MiB.
    let mut a = IdAllocator::new(0, u32::MAX).unwrap();
    a.allocate_id_at(3).unwrap();
    let before = a.clone();
    // The words past the one the bitmap has.
    let more = (1 << 29) - 8;
    assert_eq!(
        a.allocate_ids_at(u32::MAX - ((1 << 30) - 1), 1 << 30),
        Err(Error::HeapRefused { bytes: more })
    );
    // The only run of 2^31 aligned to 2^31 past ID 3 starts at 2^31.
    assert!(matches!(
        a.allocate_ids(1 << 31, 1 << 31),
        Err(Error::HeapRefused { .. })
    ));
    assert_eq!(a, before);
    // The summary refused after the leaves were granted: nothing changes either.
    assert!(matches!(
        refusing_after(1, || a.allocate_ids(1 << 20, 1)),
        Err(Error::HeapRefused { .. })
    ));
    assert!(matches!(
        refusing_after(0, || a.allocate_ids(64, 1 << 20)),
        Err(Error::HeapRefused { .. })
    ));
    assert_eq!(a, before);
    assert!(!a.is_allocated(1 << 20));
    assert_eq!(a.allocate_id(), Ok(0));
    assert_eq!(a.allocate_id_at(1 << 20), Ok(1 << 20));
    assert_eq!(a.used(), 3);
    // Past what `allocate_id` can grow into at once: the smallest free ID is still handed out.
    let mut full = IdAllocator::new(0, 63).unwrap();
    full.allocate_ids(63, 1).unwrap();
    assert_eq!(refusing_after(0, || full.allocate_id()), Ok(63));
}

#[test]
fn ids_held_past_the_bitmap_the_heap_refuses_fail_and_change_nothing() {
    // IDs far above the others are held as runs past the bitmap: each new run needs a node,
    // and freeing an ID inside a run splits it, which needs one too.
    let mut a = IdAllocator::new(0, u32::MAX).unwrap();
    a.allocate_id().unwrap();
    let mut refusals = 0;
    for k in 1..200u32 {
        let at = u32::MAX - k * 1000;
        let (run, refused) = refused_then_granted(&mut a, |a| a.allocate_ids_at(at, 3));
        assert_eq!(run, at..=at + 2);
        refusals += usize::from(refused);
        let (id, refused) = refused_then_granted(&mut a, |a| a.allocate_id_at(k << 20));
        assert_eq!(id, k << 20);
        refusals += usize::from(refused);
    }
    assert!(refusals >= 5, "{refusals} refusals");
    assert!(a.heap_bytes() < 64 << 10, "{} bytes", a.heap_bytes());
    // Frees at a run's ends need no node; the middle one splits the run.
    for k in 1..200u32 {
        let at = u32::MAX - k * 1000;
        let (_, refused) = refused_then_granted(&mut a, |a| a.free_id(at + 2));
        assert!(!refused);
        let (_, refused) = refused_then_granted(&mut a, |a| a.free_id(at));
        assert!(!refused);
        refused_then_granted(&mut a, |a| a.allocate_id_at(at));
        refused_then_granted(&mut a, |a| a.allocate_id_at(at + 2));
        refused_then_granted(&mut a, |a| a.free_id(at + 1));
        refused_then_granted(&mut a, |a| a.free_ids(at + 2..=at + 2));
        refused_then_granted(&mut a, |a| a.allocate_id_at(at + 1));
    }
    assert_eq!(a.used(), 1 + 199 * 3);
    assert_eq!(
        a.free_id(u32::MAX - 1000 + 2),
        Err(Error::IdAlreadyFree(u64::from(u32::MAX) - 998))
    );
    assert_eq!(
        a.free_id(u32::MAX - 1000 + 3),
        Err(Error::IdNeverAllocated(u64::from(u32::MAX) - 997))
    );
}

#[test]
fn snapshot_bitmap_the_heap_refuses_fails() {
    // Loading under a limit that allows 512 MiB: the heap refuses it, and the load says so.
    let text = r#"{"first":0,"last":4294967295,"used":4294967295,"allocated":[[1,4294967295]],
        "never_allocated":[[0,0]]}"#;
    let snapshot: IdSnapshot = serde_json::from_str(text).unwrap();
    let roomy = IdLoadLimits {
        max_bitmap_bytes: 600 << 20,
    };
    assert_eq!(
        IdAllocator::from_snapshot(&snapshot, &roomy),
        Err(Error::HeapRefused { bytes: 1 << 29 })
    );
}

/// Runs `op` on `state` with every heap request refused: it must either succeed without
/// asking the heap, or fail with `HeapRefused` and leave `state` equal to what it was; then it
/// runs again with the heap granting. Returns the result and whether the heap was refused.
fn refused_then_granted<S, R>(state: &mut S, op: impl Fn(&mut S) -> Result<R, Error>) -> (R, bool)
where
    S: Clone + PartialEq + Debug,
    R: Debug,
{
    let before = state.clone();
    match refusing_after(0, || op(state)) {
        Ok(r) => (r, false),
        Err(Error::HeapRefused { bytes }) => {
            assert!(bytes > 0);
            assert_eq!(*state, before, "a refused operation changed the state");
            (op(state).expect("the same operation, granted"), true)
        }
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

#[test]
fn address_allocate_index_growth_the_heap_refuses_fails_and_changes_nothing() {
    for policy in [AllocPolicy::FirstMatch, AllocPolicy::LastMatch] {
        let mut a = AddressAllocator::<u32>::new(AddressRange::new(0, 0xfff_ffff).unwrap());
        let mut refusals = 0;
        for i in 0..200u32 {
            let req = Request::new(0x1000, 0x1000, policy).unwrap();
            let (r, refused) = refused_then_granted(&mut a, |a| a.allocate_with(&req, i));
            refusals += usize::from(refused);
            assert_eq!(a.allocation_containing(r.start()).map(|x| *x.tag), Some(i));
            a.check_invariants().unwrap();
        }
        // The index grows at 0, 16, then by an eighth.
        assert!(refusals >= 5, "{refusals} refusals");
        assert_eq!(a.len(), 200);
    }
    // An exact placement into an empty allocator needs the index's first nodes.
    let mut a = AddressAllocator::<u32>::new(AddressRange::new(0, 0xffff).unwrap());
    let exact = Request::new(0x10, 1, AllocPolicy::ExactMatch(0x800)).unwrap();
    assert_eq!(
        refusing_after(0, || a.allocate_with(&exact, 1)),
        Err(Error::HeapRefused { bytes: 16 * 28 })
    );
    assert!(a.is_empty());
    assert_eq!(
        a.allocate_with(&exact, 1),
        Ok(AddressRange::new(0x800, 0x80f).unwrap())
    );
}

#[test]
fn address_reserve_and_relocate_the_heap_refuses_fail_and_change_nothing() {
    let mut a = AddressAllocator::<u32>::new(AddressRange::FULL);
    let mut refusals = 0;
    for i in 0..100u64 {
        let r = AddressRange::from_start_and_size(i << 40, 1 << 20).unwrap();
        let ((), refused) = refused_then_granted(&mut a, |a| a.reserve_with(r, 7));
        refusals += usize::from(refused);
    }
    assert!(refusals >= 3, "{refusals} refusals");
    // Moving a range frees its node first: a relocation never asks the heap.
    let old = AddressRange::from_start_and_size(5 << 40, 1 << 20).unwrap();
    let req = Request::new(1 << 30, 1 << 30, AllocPolicy::LastMatch).unwrap();
    let moved = refusing_after(0, || a.relocate(&old, &req)).unwrap();
    assert_eq!(moved.end(), u64::MAX);
    a.check_invariants().unwrap();
}

#[test]
fn id_never_allocated_split_the_heap_refuses_fails_and_changes_nothing() {
    // IDs taken from the middle of never-allocated runs split them: every split is one more
    // run, and some must grow the runs' index.
    let mut a = IdAllocator::new(0, 100_000).unwrap();
    // The bitmap covers every ID from here on; only the runs grow.
    a.allocate_id_at(100_000).unwrap();
    let mut refusals = 0;
    for k in 1..300u32 {
        let (id, refused) = refused_then_granted(&mut a, |a| a.allocate_id_at(k * 300));
        assert_eq!(id, k * 300);
        refusals += usize::from(refused);
    }
    assert!(refusals >= 5, "{refusals} refusals");
    assert_eq!(a.never_allocated_runs().count(), 300);
    // Aligned runs and exact runs split runs too.
    for k in 1..100u32 {
        refused_then_granted(&mut a, |a| a.allocate_ids(4, 64));
        refused_then_granted(&mut a, |a| a.allocate_ids_at(k * 300 + 100, 3));
    }
    assert_eq!(a.used(), 300 + 99 * 7);
    assert!(a.never_allocated_runs().count() > 300 + 99);
    // Nothing was lost: a free ID of a refused step is still told from a never-allocated one.
    assert_eq!(a.free_id(300), Ok(()));
    assert_eq!(a.free_id(300), Err(Error::IdAlreadyFree(300)));
    assert_eq!(a.free_id(301), Err(Error::IdNeverAllocated(301)));
}

#[test]
fn id_allocator_made_under_a_refusing_heap_is_an_error() {
    assert_eq!(
        refusing_after(0, || IdAllocator::new(0, 99)),
        Err(Error::HeapRefused { bytes: 16 * 28 })
    );
    assert!(IdAllocator::new(0, 99).is_ok());
}

#[test]
fn allocator_set_the_heap_refuses_fails_and_changes_nothing() {
    let spaces = [
        AddressRange::new(0x1000_0000, 0x1fff_ffff).unwrap(),
        AddressRange::new(0x4000_0000, 0x4fff_ffff).unwrap(),
    ];
    assert!(matches!(
        refusing_after(0, || AllocatorSet::<u32>::new(&spaces)),
        Err(Error::HeapRefused { .. })
    ));
    let mut set = AllocatorSet::<u32>::new(&spaces).unwrap();
    let mut refusals = 0;
    for key in 0..100u64 {
        let req = Request::new(0x1000, 0x1000, AllocPolicy::FirstMatch).unwrap();
        let (_, refused) = refused_then_granted(&mut set, |s| s.allocate_keyed(key, &req, 1));
        refusals += usize::from(refused);
        // A reservation spanning both spaces: parts in each, a hull for each part, a key.
        let span = AddressRange::new(0x1fff_f000 - key * 0x1000, 0x4000_0fff + key * 0x1000);
        let span = span.unwrap();
        let taken = set.clone();
        let ((), refused) =
            refused_then_granted(&mut set, |s| s.reserve_keyed(1000 + key, span, 2));
        refusals += usize::from(refused);
        assert_eq!(set.release(1000 + key), Ok((span, 2)));
        assert_eq!(set, taken);
        set.check_invariants().unwrap();
    }
    assert!(refusals >= 3, "{refusals} refusals");
    assert_eq!(set.len(), 100);
    // Freeing never asks the heap for more than its own list, which a granted heap holds.
    for key in 0..100u64 {
        assert!(set.release(key).is_ok());
    }
    assert!(set.is_empty());
}

#[test]
fn allocator_set_release_the_heap_refuses_fails_and_changes_nothing() {
    let spaces = [
        AddressRange::new(0x1000_0000, 0x1fff_ffff).unwrap(),
        AddressRange::new(0x4000_0000, 0x4fff_ffff).unwrap(),
    ];
    let mut set = AllocatorSet::<u32>::new(&spaces).unwrap();
    // A reservation spanning both spaces, under a key: `release` lists its parts first.
    let span = AddressRange::new(0x1fff_f000, 0x4000_0fff).unwrap();
    set.reserve_keyed(7, span, 2).unwrap();
    let before = set.clone();
    assert!(matches!(
        refusing(|| set.release(7)),
        Err(Error::HeapRefused { .. })
    ));
    assert_eq!(set, before);
    assert_eq!(set.get(7), Some(span));
    set.check_invariants().unwrap();
    assert_eq!(set.release(7), Ok((span, 2)));
    assert!(set.is_empty());
}

/// Runs `op` with every heap request refused; it must be refused with `HeapRefused` and give
/// back the very tag it was given, which nobody else holds then.
fn tag_back_when_refused<S: Debug>(
    state: &mut S,
    op: impl FnOnce(&mut S, Rc<u32>) -> Result<(), Refused<Rc<u32>>>,
) {
    let before = format!("{state:?}");
    let probe = Rc::new(7);
    let tag = Rc::clone(&probe);
    let refused = refusing_after(0, || op(state, tag)).expect_err("refused");
    assert!(
        matches!(refused.error(), Error::HeapRefused { .. }),
        "{refused:?}"
    );
    let tag = refused.into_tag();
    assert!(Rc::ptr_eq(&tag, &probe));
    assert_eq!(Rc::strong_count(&probe), 2);
    assert_eq!(format!("{state:?}"), before);
}

#[test]
fn tagged_calls_the_heap_refuses_give_the_tag_back() {
    let page = Request::new(0x1000, 0x1000, AllocPolicy::FirstMatch).unwrap();
    let exact = Request::new(0x10, 1, AllocPolicy::ExactMatch(0x800)).unwrap();
    let range = AddressRange::new(0x800, 0x8ff).unwrap();
    // An empty allocator has no index yet: its first range needs the heap.
    let mut a = AddressAllocator::<Rc<u32>>::new(AddressRange::new(0, 0xff_ffff).unwrap());
    tag_back_when_refused(&mut a, |a, t| a.try_allocate_with(&page, t).map(|_| ()));
    tag_back_when_refused(&mut a, |a, t| a.try_allocate_with(&exact, t).map(|_| ()));
    tag_back_when_refused(&mut a, |a, t| a.try_reserve_with(range, t));
    assert!(a.is_empty());

    let spaces = [
        AddressRange::new(0x1000_0000, 0x1fff_ffff).unwrap(),
        AddressRange::new(0x2000_0000, 0x2fff_ffff).unwrap(),
    ];
    let span = AddressRange::new(0x1fff_f000, 0x2000_0fff).unwrap();
    let mut s = AllocatorSet::<Rc<u32>>::new(&spaces).unwrap();
    let mut exact = Request::new(0x10, 1, AllocPolicy::ExactMatch(0x2000_0000)).unwrap();
    tag_back_when_refused(&mut s, |s, t| s.try_allocate_with(&page, t).map(|_| ()));
    tag_back_when_refused(&mut s, |s, t| s.try_allocate_with(&exact, t).map(|_| ()));
    tag_back_when_refused(&mut s, |s, t| s.try_reserve_with(span, t));
    tag_back_when_refused(&mut s, |s, t| s.try_allocate_keyed(1, &page, t).map(|_| ()));
    tag_back_when_refused(&mut s, |s, t| s.try_reserve_keyed(2, span, t));
    // With the key maps grown, the pools' indexes are what the heap refuses.
    let probe = Rc::new(1);
    s.try_allocate_keyed(1, &page, Rc::clone(&probe))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.release(1).map(|(_, t)| Rc::ptr_eq(&t, &probe)), Ok(true));
    exact = exact.within(spaces[1]);
    tag_back_when_refused(&mut s, |s, t| {
        s.try_allocate_keyed(3, &exact, t).map(|_| ())
    });
    tag_back_when_refused(&mut s, |s, t| s.try_reserve_keyed(3, span, t));
    assert!(s.pools()[1].is_empty());
    s.check_invariants().unwrap();
}
