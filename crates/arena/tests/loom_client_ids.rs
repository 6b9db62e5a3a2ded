//! Loom models of client identifiers: clients made and deleted on several threads at once,
//! a deleted client's identifier and mailbox pushed onto the arena's stack of retired ones
//! while other threads take from it. Two live clients never share an identifier, a retired
//! identifier is taken at most once, and none is lost: the arena never uses more identifiers
//! than clients were live at once.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p memvisor-arena --release --test loom_client_ids`.

#![cfg(loom)]

use std::mem::ManuallyDrop;

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

/// Two pops on one thread, with a push between them coming back to the top, race a pop on
/// another thread: the textbook ABA of a stack. The main thread takes the two retired
/// identifiers (the top and the one under it) and gives the first back, so the top is the
/// same mailbox again while the other thread may have read it, and the one under it, before
/// its exchange. An exchange that succeeded then would put back the mailbox of a live
/// client, and a later client would get that client's identifier. The model fails on that
/// at a bounded preemption count: the clients and the arena of the main thread are never
/// dropped on a failed check, since giving back a mailbox two clients share would link it to
/// itself and leave the arena's drop walking the loop, which a model shows as a hang.
#[test]
fn pops_racing_a_pop_and_push_never_hand_out_a_live_id() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let arena = ManuallyDrop::new(arena());
        let a = arena.create_client(Quota::UNLIMITED).unwrap();
        let b = arena.create_client(Quota::UNLIMITED).unwrap();
        drop(a);
        drop(b);
        let other = Arc::clone(&arena);
        let t = thread::spawn(move || {
            let client = other.create_client(Quota::UNLIMITED).unwrap();
            let id = client.id();
            drop(client);
            id
        });
        let x = ManuallyDrop::new(arena.create_client(Quota::UNLIMITED).unwrap());
        let y = ManuallyDrop::new(arena.create_client(Quota::UNLIMITED).unwrap());
        assert_ne!(x.id(), y.id());
        drop(ManuallyDrop::into_inner(x));
        let taken = t.join().unwrap();
        assert!((1..=3).contains(&taken), "{taken}");
        // `y` is live: no later client shares its identifier, and none is lost.
        let d = ManuallyDrop::new(arena.create_client(Quota::UNLIMITED).unwrap());
        let e = ManuallyDrop::new(arena.create_client(Quota::UNLIMITED).unwrap());
        let mut ids = [y.id(), d.id(), e.id()];
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3], "y {} d {} e {}", y.id(), d.id(), e.id());
        for client in [y, d, e] {
            drop(ManuallyDrop::into_inner(client));
        }
        drop(ManuallyDrop::into_inner(arena));
    });
}
