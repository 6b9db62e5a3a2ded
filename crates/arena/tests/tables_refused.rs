//! An arena whose side tables the host's allocator refuses is an error that the caller gets
//! back, not an abort. The global allocator here refuses any request over 64 MiB, and every
//! request of a thread inside `refusing`.

use std::alloc::Layout;

use memvisor_arena::{Arena, Backing, Config, Error, HostTable, Quota};
use memvisor_testkit::refusing_heap::{Refusing, refusing};
#[cfg(all(feature = "std", target_pointer_width = "64"))]
use memvisor_vmem::CommitMode;

/// Requests over this many bytes are always refused.
const MAX_REQUEST: usize = 64 << 20;

#[global_allocator]
static GLOBAL: Refusing = Refusing::up_to(MAX_REQUEST);

/// A 32-bit process cannot reserve 8 GiB.
#[cfg(all(feature = "std", target_pointer_width = "64"))]
#[test]
#[cfg_attr(miri, ignore = "reserves 8 GiB of address space")]
fn refused_side_tables_are_an_error() {
    // 8 GiB of 1 MiB chunks: the marks alone are 128 MiB.
    let backing = Backing::reserve(8 << 30, 1 << 20, CommitMode::Protected).unwrap();
    match Arena::new(backing, Config::new()) {
        Err(Error::TablesUnavailable {
            bytes,
            what: HostTable::SideTables,
        }) => {
            // About 2% of the backing.
            assert!(bytes > (8 << 30) / 100 && bytes < (8 << 30) / 25, "{bytes}");
        }
        other => panic!("expected TablesUnavailable, got {other:?}"),
    }

    // An arena whose tables fit is made as usual.
    let arena = Arena::new(
        Backing::reserve(1 << 30, 1 << 20, CommitMode::Protected).unwrap(),
        Config::new(),
    )
    .unwrap();
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let p = client
        .alloc(Layout::from_size_align(100, 8).unwrap())
        .unwrap();
    // SAFETY: a live block, not used after.
    assert_eq!(unsafe { client.free(p) }, Ok(112));
}

/// A free through the arena that needs the chunk's remote-free bits, which the allocator
/// refuses, is an error that changes nothing; the block stays live and is freed later.
#[test]
fn refused_remote_bits_are_an_error_that_changes_nothing() {
    let arena = Arena::new(Backing::heap(4 << 20, 4096).unwrap(), Config::new()).unwrap();
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let p = client
        .alloc(Layout::from_size_align(100, 8).unwrap())
        .unwrap();
    let before = client.stats();
    // SAFETY: a live block of a client that outlives the call; not used after a free.
    let refused = refusing(|| unsafe { arena.free(p) });
    assert_eq!(
        refused,
        Err(Error::TablesUnavailable {
            bytes: (1 << 20) / 128,
            what: HostTable::RemoteFreeBits,
        })
    );
    assert_eq!(arena.owner_of(p.as_ptr()), Some(client.id()));
    assert_eq!(client.stats(), before);
    // SAFETY: as above.
    assert_eq!(unsafe { arena.free(p) }, Ok(112));
    assert_eq!(arena.owner_of(p.as_ptr()), None);
}

/// A client whose mailbox the allocator refuses is an error, not an abort; nothing changes
/// (no identifier is used up, the arena counts no client) and a later client is made as
/// usual.
#[test]
fn refused_client_records_are_an_error_that_changes_nothing() {
    let arena = Arena::new(Backing::heap(4 << 20, 4096).unwrap(), Config::new()).unwrap();
    let first = arena.create_client(Quota::UNLIMITED).unwrap();
    let before = arena.stats();
    let refused = refusing(|| arena.create_client(Quota::UNLIMITED));
    match refused {
        Err(Error::TablesUnavailable {
            bytes,
            what: HostTable::Mailbox,
        }) => assert!(bytes > 0 && bytes <= 64, "{bytes}"),
        other => panic!("expected TablesUnavailable, got {other:?}"),
    }
    assert_eq!(arena.stats(), before);
    let second = arena.create_client(Quota::UNLIMITED).unwrap();
    assert_eq!(second.id(), first.id() + 1);
}

/// The error says what the host's allocator refused: a client's mailbox, a chunk's
/// remote-free bits or the side tables, not "side tables" for all of them.
#[test]
fn refused_host_memory_error_names_what_was_refused() {
    let arena = Arena::new(Backing::heap(4 << 20, 4096).unwrap(), Config::new()).unwrap();
    let mailbox = refusing(|| arena.create_client(Quota::UNLIMITED))
        .err()
        .unwrap();
    let message = mailbox.to_string();
    assert!(message.contains("mailbox"), "{message}");
    assert!(!message.contains("side tables"), "{message}");

    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let p = client
        .alloc(Layout::from_size_align(100, 8).unwrap())
        .unwrap();
    // SAFETY: a live block of a client that outlives the call; not used after a free.
    let remote = refusing(|| unsafe { arena.free(p) }).err().unwrap();
    let message = remote.to_string();
    assert!(message.contains("remote-free bits"), "{message}");
    assert!(!message.contains("side tables"), "{message}");
    // SAFETY: as above.
    assert_eq!(unsafe { client.free(p) }, Ok(112));

    let backing = Backing::heap(4 << 20, 4096).unwrap();
    let tables = refusing(|| Arena::new(backing, Config::new()));
    let message = tables.err().unwrap().to_string();
    assert!(message.contains("side tables"), "{message}");
}
