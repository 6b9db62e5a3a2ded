//! `Allocator::grow`, `grow_zeroed` and `shrink` of a pointer that is not a live block of the
//! client (another client's, another arena's, interior, freed, past its block) or with a
//! layout the block cannot have: each is refused with `AllocError` and changes nothing: no
//! block is taken, the old block stays where and as it was, its holder keeps it.

use std::alloc::Layout;
use std::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use memvisor_arena::{Arena, Backing, Client, ClientStats, Config, Flags, Quota};

const CHUNK: usize = 64 << 10;

fn arena(chunks: usize, flags: Flags) -> Arena {
    let config = Config::new().with_chunk_size(CHUNK).with_flags(flags);
    Arena::new(Backing::heap(chunks * CHUNK, 4096).unwrap(), config).unwrap()
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 16).unwrap()
}

/// Allocates a block of `size` bytes filled with `byte`.
fn filled(client: &Client<'_>, size: usize, byte: u8) -> NonNull<u8> {
    let p = client.alloc(layout(size)).unwrap();
    // SAFETY: a fresh block of at least `size` bytes.
    unsafe { p.as_ptr().write_bytes(byte, size) };
    p
}

/// Whether the `size` bytes at `p` all read `byte`.
fn reads(p: NonNull<u8>, size: usize, byte: u8) -> bool {
    // SAFETY: the tests read only live blocks of at least `size` bytes.
    unsafe { std::slice::from_raw_parts(p.as_ptr(), size) }
        .iter()
        .all(|&b| b == byte)
}

/// The three moves, each asked to move `p` (of `old` bytes by the caller's word) to `new`.
#[derive(Clone, Copy, Debug)]
enum Move {
    Grow,
    GrowZeroed,
    Shrink,
}

const MOVES: [Move; 3] = [Move::Grow, Move::GrowZeroed, Move::Shrink];

/// Asks `client` for `mv` of `p`; the tests pass pointers and layouts that break the
/// `Allocator` contract on purpose and expect a refusal.
fn ask(client: &Client<'_>, mv: Move, p: NonNull<u8>, old: Layout, new: Layout) -> bool {
    // SAFETY: the client refuses every pointer that is not its live block, and every layout
    // its block cannot have, before it reads or writes anything; that is what is tested.
    let result = unsafe {
        match mv {
            Move::Grow => client.grow(p, old, new),
            Move::GrowZeroed => client.grow_zeroed(p, old, new),
            Move::Shrink => client.shrink(p, old, new),
        }
    };
    result.is_err()
}

/// The sizes of `mv` that make the block move: grow past the block, shrink to a smaller
/// size class.
fn moving(mv: Move, size: usize) -> (Layout, Layout) {
    match mv {
        Move::Grow | Move::GrowZeroed => (layout(size), layout(size * 4)),
        Move::Shrink => (layout(size), layout(16)),
    }
}

fn snapshot(clients: &[&Client<'_>]) -> Vec<ClientStats> {
    clients.iter().map(|c| c.stats()).collect()
}

#[test]
fn realloc_of_another_clients_block_is_refused_and_changes_nothing() {
    let arena = arena(8, Flags::empty());
    let a = arena.create_client(Quota::UNLIMITED).unwrap();
    let b = arena.create_client(Quota::UNLIMITED).unwrap();
    // `a` holds a chunk and a block of its own, so that a block taken for the move would show.
    let own = filled(&a, 64, 0x11);
    for size in [48, 1000, 4096] {
        let theirs = filled(&b, size, 0x5A);
        for mv in MOVES {
            let (old, new) = moving(mv, size);
            let before = snapshot(&[&a, &b]);
            assert!(ask(&a, mv, theirs, old, new), "{mv:?} of {size} bytes");
            assert_eq!(snapshot(&[&a, &b]), before, "{mv:?} of {size} bytes");
            assert_eq!(arena.owner_of(theirs.as_ptr()), Some(b.id()));
            assert!(b.size_of(theirs.as_ptr()).unwrap() >= size);
            assert!(
                reads(theirs, size, 0x5A),
                "{mv:?} wrote the other client's block"
            );
        }
    }
    assert!(reads(own, 64, 0x11));
}

#[test]
fn realloc_of_another_arenas_block_is_refused_and_changes_nothing() {
    let (one, two) = (arena(4, Flags::empty()), arena(4, Flags::empty()));
    let a = one.create_client(Quota::UNLIMITED).unwrap();
    let b = two.create_client(Quota::UNLIMITED).unwrap();
    let _own = filled(&a, 64, 0x11);
    let theirs = filled(&b, 256, 0x5A);
    for mv in MOVES {
        let (old, new) = moving(mv, 256);
        let before = snapshot(&[&a, &b]);
        assert!(ask(&a, mv, theirs, old, new), "{mv:?}");
        assert_eq!(snapshot(&[&a, &b]), before, "{mv:?}");
        assert!(b.owns(theirs.as_ptr()));
        assert!(reads(theirs, 256, 0x5A));
    }
}

#[test]
fn realloc_of_a_heap_pointer_is_refused_and_changes_nothing() {
    let arena = arena(4, Flags::empty());
    let a = arena.create_client(Quota::UNLIMITED).unwrap();
    let _own = filled(&a, 64, 0x11);
    let mut outside = vec![0x5Au8; 4096];
    let p = NonNull::new(outside.as_mut_ptr()).unwrap();
    for mv in MOVES {
        let (old, new) = moving(mv, 256);
        let before = a.stats();
        assert!(ask(&a, mv, p, old, new), "{mv:?}");
        assert_eq!(a.stats(), before, "{mv:?}");
    }
    assert!(outside.iter().all(|&b| b == 0x5A));
}

#[test]
fn realloc_of_interior_freed_or_past_the_end_pointers_is_refused() {
    let arena = arena(8, Flags::empty());
    let a = arena.create_client(Quota::UNLIMITED).unwrap();
    let live = filled(&a, 1000, 0x22);
    let gone = filled(&a, 1000, 0x33);
    let gone_size = a.size_of(gone.as_ptr()).unwrap();
    // SAFETY: `gone` is not used as a block after this.
    unsafe { a.free(gone) }.unwrap();
    let live_size = a.size_of(live.as_ptr()).unwrap();
    // SAFETY: inside or one past the live block; only offered, never read.
    let (interior, past) = unsafe { (live.add(16), live.add(live_size)) };
    for p in [interior, gone, past] {
        for mv in MOVES {
            let (old, new) = moving(mv, 256);
            let before = a.stats();
            assert!(ask(&a, mv, p, old, new), "{mv:?} at {p:p}");
            assert_eq!(a.stats(), before, "{mv:?} at {p:p}");
        }
    }
    assert!(reads(live, 1000, 0x22));
    assert!(gone_size >= 1000);
}

#[test]
fn realloc_with_an_old_size_past_the_block_is_refused() {
    let arena = arena(8, Flags::empty());
    let a = arena.create_client(Quota::UNLIMITED).unwrap();
    let p = filled(&a, 100, 0x44);
    let size = a.size_of(p.as_ptr()).unwrap();
    // The caller claims more bytes than the block has: copying them would read past it.
    let old = layout(size + 4096);
    for mv in MOVES {
        let new = match mv {
            Move::Shrink => layout(size + 16),
            _ => layout(size + 8192),
        };
        let before = a.stats();
        assert!(ask(&a, mv, p, old, new), "{mv:?}");
        assert_eq!(a.stats(), before, "{mv:?}");
        assert!(a.owns(p.as_ptr()));
    }
    assert!(reads(p, 100, 0x44));
}

#[test]
fn realloc_in_the_wrong_direction_is_refused() {
    let arena = arena(8, Flags::empty());
    let a = arena.create_client(Quota::UNLIMITED).unwrap();
    let p = filled(&a, 1000, 0x55);
    let size = a.size_of(p.as_ptr()).unwrap();
    let before = a.stats();
    // A grow to fewer bytes than the old layout, a shrink to more: both break the contract.
    for mv in [Move::Grow, Move::GrowZeroed] {
        assert!(ask(&a, mv, p, layout(size), layout(16)), "{mv:?}");
        assert!(ask(&a, mv, p, layout(1000), layout(500)), "{mv:?}");
    }
    assert!(ask(&a, Move::Shrink, p, layout(16), layout(size)));
    assert!(ask(&a, Move::Shrink, p, layout(16), layout(4 * size)));
    assert_eq!(a.stats(), before);
    assert!(reads(p, 1000, 0x55));
}

#[test]
fn realloc_of_own_blocks_still_moves_and_keeps_bytes() {
    for flags in [Flags::empty(), Flags::ZERO] {
        let arena = arena(8, flags);
        let a = arena.create_client(Quota::UNLIMITED).unwrap();
        let p = filled(&a, 100, 0x66);
        // SAFETY: `p` is `a`'s live block of 100 bytes; it is not used after the move.
        let q = unsafe { a.grow(p, layout(100), layout(5000)) }.unwrap();
        let q = q.cast::<u8>();
        assert!(reads(q, 100, 0x66));
        assert!(!a.owns(p.as_ptr()) || p == q);
        // SAFETY: as above.
        let r = unsafe { a.grow_zeroed(q, layout(5000), layout(9000)) }.unwrap();
        let r = r.cast::<u8>();
        assert!(reads(r, 100, 0x66));
        // SAFETY: `r` holds 9000 bytes, the last 4000 zeroed.
        assert!(reads(unsafe { r.add(5000) }, 4000, 0));
        // SAFETY: as above.
        let s = unsafe { a.shrink(r, layout(9000), layout(48)) }.unwrap();
        let s = s.cast::<u8>();
        assert!(reads(s, 48, 0x66));
        assert_eq!(a.stats().live_blocks, 1);
        // SAFETY: not used after this.
        unsafe { a.free(s) }.unwrap();
        assert_eq!(a.stats().live_blocks, 0);
    }
}
