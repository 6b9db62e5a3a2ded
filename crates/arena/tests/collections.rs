//! Collections living inside a client through `&Client: Allocator`.

#![allow(clippy::cast_possible_truncation)]

use allocator_api2::boxed::Box;
use allocator_api2::vec::Vec;
use hashbrown::{DefaultHashBuilder, HashMap};
use memvisor_arena::{Arena, Block, Config, Error, Quota};

fn arena() -> Arena {
    // Chunks of 1 MiB, so that a vector of 10,000 `u64`s fits one block.
    Arena::new(Block::heap(4 << 20, 4096).unwrap(), Config::new()).unwrap()
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
