//! Loom models of client identifiers: clients made and deleted on several threads at once,
//! a deleted client's identifier and mailbox pushed onto the arena's stack of retired ones
//! while other threads take from it. Two live clients never share an identifier, a retired
//! identifier is taken at most once, and none is lost: the arena never uses more identifiers
//! than clients were live at once.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p memvisor-arena --release --test loom_client_ids`.

#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use memvisor_arena::{Arena, Backing, Config, Quota};

const CHUNK: usize = 64 << 10;

fn arena() -> Arc<Arena> {
    let config = Config::new().with_chunk_size(CHUNK);
    Arc::new(Arena::new(Backing::heap(CHUNK, 4096).unwrap(), config).unwrap())
}

/// A thread makes and deletes a client while the main thread makes one, over two retired
/// identifiers: the pops race each other (one waits for the other's flag) and the delete's
/// push can come between the main thread's read of the top and its exchange. No identifier
/// is lost or taken twice: with the main thread's client live, two more clients get exactly
/// the other retired identifier and the next new one.
#[test]
fn retire_and_take_race_without_sharing_or_losing_ids() {
    loom::model(|| {
        let arena = arena();
        let a = arena.create_client(Quota::UNLIMITED).unwrap();
        let b = arena.create_client(Quota::UNLIMITED).unwrap();
        assert_eq!((a.id(), b.id()), (1, 2));
        drop(a);
        drop(b);
        let other = arena.clone();
        let t = thread::spawn(move || {
            let client = other.create_client(Quota::UNLIMITED).unwrap();
            let id = client.id();
            drop(client);
            id
        });
        let c = arena.create_client(Quota::UNLIMITED).unwrap();
        let x = t.join().unwrap();
        assert!(x <= 2 && c.id() <= 2 && x != 0, "{x} {}", c.id());
        let d = arena.create_client(Quota::UNLIMITED).unwrap();
        let e = arena.create_client(Quota::UNLIMITED).unwrap();
        let mut ids = [c.id(), d.id(), e.id()];
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3]);
    });
}
