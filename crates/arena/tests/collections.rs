//! Collections living inside a client through `&Client: Allocator`.

#![allow(clippy::cast_possible_truncation)]

mod common;

use allocator_api2::boxed::Box;
use allocator_api2::vec::Vec;
use common::all_bytes_are;
use hashbrown::{DefaultHashBuilder, HashMap};
use memvisor_arena::{Arena, Backing, Config, Error, Quota};

fn arena() -> Arena {
    // Chunks of 1 MiB, so that a vector of 10,000 `u64`s fits one block.
    Arena::new(Backing::heap(4 << 20, 4096).unwrap(), Config::new()).unwrap()
}

#[test]
fn vec_in_client_grows_and_frees() {
    let arena = arena();
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let n = if cfg!(miri) { 100 } else { 10_000 };
    let mut v: Vec<u64, _> = Vec::new_in(&client);
    for i in 0..n {
        v.push(i);
    }
    assert!(client.owns(v.as_ptr().cast()));
    assert!(client.stats().used_bytes >= n as usize * 8);
    assert_eq!(v.iter().sum::<u64>(), n * (n - 1) / 2);
    drop(v);
    assert_eq!(client.stats().used_bytes, 0);
    assert_eq!(client.stats().live_blocks, 0);
}

#[test]
fn hashbrown_map_in_client() {
    let arena = arena();
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let other = arena.create_client(Quota::UNLIMITED).unwrap();
    let n = if cfg!(miri) { 40 } else { 5_000 };
    let mut map: HashMap<u32, u32, DefaultHashBuilder, _> =
        HashMap::with_hasher_in(DefaultHashBuilder::default(), &client);
    for i in 0..n {
        map.insert(i, i * 2);
    }
    assert_eq!(map.len(), n as usize);
    assert_eq!(map[&7], 14);
    assert!(client.stats().live_blocks >= 1);
    assert_eq!(other.stats().live_blocks, 0);
    drop(map);
    assert_eq!(client.stats().live_blocks, 0);
}

#[test]
fn box_in_client_is_owned_by_it() {
    let arena = arena();
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let b = Box::new_in([7u8; 100], &client);
    let p: *const u8 = b.as_ptr();
    assert!(client.owns(p));
    assert_eq!(client.size_of(p), Ok(112));
    drop(b);
    assert!(!client.owns(p));
}

#[test]
fn vec_over_quota_reports_alloc_error() {
    let arena = arena();
    let client = arena.create_client(Quota::bytes(4096)).unwrap();
    let mut v: Vec<u8, _> = Vec::new_in(&client);
    assert!(v.try_reserve(4096).is_ok());
    assert!(v.try_reserve(4097).is_err());
    let e = client.alloc(core::alloc::Layout::new::<[u8; 16]>());
    assert!(matches!(e, Err(Error::QuotaExceeded { .. })));
}

/// An arena of `chunks` chunks of `chunk` bytes (Miri: 64 KiB chunks, a sixteenth of the
/// bytes).
fn big_arena(len: usize, chunk: usize) -> Arena {
    let (len, chunk) = if cfg!(miri) {
        (len / 16, 64 << 10)
    } else {
        (len, chunk)
    };
    let config = Config::new().with_chunk_size(chunk);
    Arena::new(Backing::heap(len, 4096).unwrap(), config).unwrap()
}

#[test]
fn vec_in_client_grows_past_one_chunk() {
    // 1 MiB chunks held 131,072 `u64`s at most; a vector now grows into runs of chunks.
    let arena = big_arena(32 << 20, 1 << 20);
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let n: u64 = if cfg!(miri) { 20_000 } else { 1_000_000 };
    let mut v: Vec<u64, _> = Vec::new_in(&client);
    for i in 0..n {
        v.push(i);
    }
    assert!(v.capacity() * 8 > arena.chunk_size());
    assert!(client.owns(v.as_ptr().cast()));
    assert_eq!(v.iter().sum::<u64>(), n * (n - 1) / 2);
    let held = client.stats().chunks;
    assert!(held * arena.chunk_size() >= v.capacity() * 8);
    drop(v);
    assert_eq!(client.stats().live_blocks, 0);
    assert!(client.stats().chunks <= 1, "the runs went back");
}

#[test]
fn hashbrown_map_of_32_byte_entries_grows_past_one_chunk() {
    // With 1 MiB chunks such a map stopped near 14,000 entries.
    let arena = big_arena(32 << 20, 1 << 20);
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let n: u64 = if cfg!(miri) { 2_000 } else { 100_000 };
    let mut map: HashMap<u64, [u64; 3], DefaultHashBuilder, _> =
        HashMap::with_hasher_in(DefaultHashBuilder::default(), &client);
    for i in 0..n {
        map.insert(i, [i, i + 1, i + 2]);
    }
    assert_eq!(map.len() as u64, n);
    assert_eq!(map.get(&(n - 1)), Some(&[n - 1, n, n + 1]));
    drop(map);
    assert_eq!(client.stats().live_blocks, 0);
}

/// A box of a zero-sized value: `allocator_api2`'s `Box` gives back a dangling pointer it never
/// allocated; the client leaves it alone, in debug builds too.
#[test]
fn zero_sized_box_drops_quietly() {
    let arena = Arena::new(Backing::heap(1 << 20, 4096).unwrap(), Config::new()).unwrap();
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    drop(Box::new_in((), &client));
    let b = Box::new_in([0u64; 0], &client);
    assert!(b.is_empty());
    drop(b);
    assert_eq!(client.stats().live_blocks, 0);
}

/// A vector shrunk to nothing keeps no buffer: a zero-sized layout takes no memory, so no
/// block is left behind that the vector would never give back (it frees no buffer of
/// capacity 0), and a quota is never used up by such rounds.
#[test]
fn vec_shrunk_to_nothing_leaves_no_block() {
    let arena = arena();
    let client = arena.create_client(Quota::bytes(4096)).unwrap();
    let rounds = if cfg!(miri) { 20 } else { 1_000 };
    let mut v: Vec<u64, _> = Vec::new_in(&client);
    for i in 0..rounds {
        v.push(i);
        v.clear();
        v.shrink_to_fit();
        assert_eq!(client.stats().live_blocks, 0, "round {i}");
    }
    drop(v);
    let stats = client.stats();
    assert_eq!((stats.used_bytes, stats.live_blocks), (0, 0));
}

/// Zero-sized layouts get a dangling pointer aligned as asked, and change nothing.
#[test]
fn zero_sized_layouts_take_no_memory() {
    use allocator_api2::alloc::Allocator;
    let arena = arena();
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let before = client.stats();
    for align in [1, 8, 64, 4096, 1 << 20] {
        let layout = core::alloc::Layout::from_size_align(0, align).unwrap();
        let p = client.allocate(layout).unwrap();
        assert_eq!(p.len(), 0);
        assert_eq!(p.cast::<u8>().as_ptr().addr() % align, 0);
        assert!(!client.owns(p.cast::<u8>().as_ptr()));
        // SAFETY: allocated just now with this layout.
        unsafe { client.deallocate(p.cast(), layout) };
    }
    assert_eq!(client.stats(), before);
}

/// Shrinking a block gives memory back, so a client at its quota, or in a full arena, can
/// always do it: when no smaller block can be had, the block stays where it is. A vector
/// shrunk at its quota would otherwise take the process down (`handle_alloc_error`).
#[test]
fn shrink_at_quota_or_out_of_memory_keeps_the_block() {
    use core::alloc::Layout;

    use allocator_api2::alloc::Allocator;
    // Chunks of 64 KiB, two of them: a quota or the arena's end is easy to reach.
    let config = Config::new().with_chunk_size(64 << 10);
    let arena = Arena::new(Backing::heap(128 << 10, 4096).unwrap(), config).unwrap();
    let client = arena.create_client(Quota::bytes(4096)).unwrap();
    let old = Layout::from_size_align(4096, 8).unwrap();
    let p = client.allocate(old).unwrap().cast::<u8>();
    // SAFETY: a live block of 4096 bytes.
    unsafe { p.as_ptr().write_bytes(7, 4096) };
    assert!(matches!(
        client.alloc(Layout::new::<u8>()),
        Err(Error::QuotaExceeded { .. })
    ));
    let new = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: `p` is a live block of this client that fits `old`; not used after success.
    let q = unsafe { client.shrink(p, old, new) }.expect("shrink at quota");
    assert!(q.len() >= 100);
    let q = q.cast::<u8>();
    assert!(client.owns(q.as_ptr()));
    // SAFETY: the block returned, at least 100 bytes.
    let kept = unsafe { core::slice::from_raw_parts(q.as_ptr(), 100) };
    assert!(all_bytes_are(kept, 7));
    assert_eq!(client.stats().live_blocks, 1);
    // SAFETY: a live block that fits `new`.
    unsafe { client.deallocate(q, new) };
    assert_eq!(client.stats().used_bytes, 0);

    // The same through a vector.
    let mut v: Vec<u8, _> = Vec::with_capacity_in(4096, &client);
    v.extend(std::iter::repeat_n(3, 4096));
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(v.as_slice(), &[3; 10]);
    drop(v);

    // Out of memory: another client holds every chunk and the small class needs a new one.
    drop(client);
    let big = arena.create_client(Quota::UNLIMITED).unwrap();
    let whole = Layout::from_size_align(64 << 10, 8).unwrap();
    let p = big.allocate(whole).unwrap().cast::<u8>();
    let rest = big
        .alloc(Layout::from_size_align(64 << 10, 8).unwrap())
        .unwrap();
    assert!(matches!(
        big.alloc(Layout::new::<u8>()),
        Err(Error::OutOfMemory { .. })
    ));
    // SAFETY: as above.
    let q = unsafe { big.shrink(p, whole, new) }.expect("shrink out of memory");
    assert!(big.owns(q.cast::<u8>().as_ptr()));
    // SAFETY: live blocks of `big`, not used after.
    unsafe {
        big.deallocate(q.cast(), new);
        big.free(rest).unwrap();
    }
    assert_eq!(big.stats().live_blocks, 0);
}

/// Growing a block within its own size (a size class, or whole buddy pages) needs no memory:
/// at the quota it keeps the block where it is instead of failing.
#[test]
fn grow_within_block_at_quota_keeps_the_block() {
    use core::alloc::Layout;

    use allocator_api2::alloc::Allocator;
    use memvisor_arena::Flags;
    for flags in [Flags::empty(), Flags::ZERO] {
        let config = Config::new().with_chunk_size(64 << 10).with_flags(flags);
        let arena = Arena::new(Backing::heap(128 << 10, 4096).unwrap(), config).unwrap();
        // A small block (100 bytes in the 112-byte class) and a buddy block (3000 bytes in
        // 12 pages of 256 bytes): each grows to its whole size with the quota exhausted.
        for (asked, whole) in [(100, 112), (3000, 3072)] {
            let client = arena.create_client(Quota::bytes(whole)).unwrap();
            let old = Layout::from_size_align(asked, 8).unwrap();
            let p = client.allocate(old).unwrap().cast::<u8>();
            // SAFETY: a live block of at least `asked` bytes.
            unsafe { p.as_ptr().write_bytes(7, asked) };
            let before = client.stats();
            assert_eq!(before.used_bytes, whole);
            let new = Layout::from_size_align(whole, 8).unwrap();
            // SAFETY: `p` is a live block of this client that fits `old`; not used after
            // success.
            let q = unsafe { client.grow(p, old, new) }.expect("grow within the block");
            assert_eq!((q.cast::<u8>(), q.len()), (p, whole));
            // SAFETY: the block returned, `whole` bytes.
            let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), whole) };
            assert!(all_bytes_are(&bytes[..asked], 7), "contents kept");
            if flags.contains(Flags::ZERO) {
                assert!(all_bytes_are(&bytes[asked..], 0), "zero past the old size");
            }
            assert_eq!(client.stats(), before, "nothing allocated or freed");
            // SAFETY: as above; `new` fits the block.
            let z = unsafe { client.grow_zeroed(p, new, new) }.expect("grow_zeroed in place");
            assert_eq!(z.cast::<u8>(), p);
            // One byte more than the block needs a new one, which the quota refuses, and the
            // block stays as it was.
            let over = Layout::from_size_align(whole + 1, 8).unwrap();
            // SAFETY: as above.
            assert!(unsafe { client.grow(p, new, over) }.is_err());
            assert!(client.owns(p.as_ptr()));
            assert_eq!(client.stats(), before);
            // SAFETY: a live block that fits `new`.
            unsafe { client.deallocate(p, new) };
            assert_eq!(client.stats().live_blocks, 0);
        }
    }
}
