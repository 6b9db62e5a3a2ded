//! Client identifiers under threads making and deleting clients at once: an identifier names
//! one live client at a time, a deleted client's identifier goes to a later one (so the arena
//! never uses more identifiers than clients were live at once), and a live client's blocks
//! are its own.

use std::alloc::Layout;
use std::collections::HashSet;
use std::sync::Mutex;

use memvisor_arena::{Arena, Backing, Config, Quota};

const CHUNK: usize = 64 << 10;
const THREADS: usize = if cfg!(miri) { 2 } else { 4 };
/// Clients each thread holds at once.
const HELD: usize = 2;

#[test]
fn threads_making_and_deleting_clients_share_no_live_id() {
    let rounds = if cfg!(miri) { 2 } else { 2_000 };
    let arena = Arena::new(
        Backing::heap(THREADS * HELD * CHUNK, 4096).unwrap(),
        Config::new().with_chunk_size(CHUNK),
    )
    .unwrap();
    let live: Mutex<HashSet<u32>> = Mutex::new(HashSet::new());
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                let layout = Layout::from_size_align(64, 16).unwrap();
                for _ in 0..rounds {
                    let mut held = Vec::new();
                    for _ in 0..HELD {
                        let client = arena.create_client(Quota::UNLIMITED).unwrap();
                        assert!(
                            live.lock().unwrap().insert(client.id()),
                            "two live clients share an id"
                        );
                        let p = client.alloc(layout).unwrap();
                        assert_eq!(arena.owner_of(p.as_ptr()), Some(client.id()));
                        held.push((client, p));
                    }
                    for (client, _) in held {
                        let id = client.id();
                        // Out of the set before the identifier can go to another client.
                        assert!(live.lock().unwrap().remove(&id));
                        drop(client);
                    }
                }
            });
        }
    });
    assert_eq!(arena.stats().clients, 0);
    // Never more identifiers than clients live at once: each is reused.
    let next = arena.create_client(Quota::UNLIMITED).unwrap();
    assert!(next.id() as usize <= THREADS * HELD, "id {}", next.id());
}
