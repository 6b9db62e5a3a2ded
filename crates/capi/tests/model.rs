//! Random sequences of C calls against a model of each client's live blocks: every answer
//! (status, ownership, owner, size, statistics) is compared, and live blocks never overlap.

use std::alloc::{Layout, alloc, dealloc};
use std::ffi::c_void;
use std::ptr;

use memvisor::status::Status;
use memvisor::types::{Client, ClientStats, Config, Context, ContextStats, MEMVISOR_UNLIMITED};
use memvisor::*;
use proptest::prelude::*;

const CHUNK: usize = 64 << 10;
const LEN: usize = 16 * CHUNK;

#[derive(Clone, Debug)]
enum Op {
    CreateClient {
        quota: Option<usize>,
    },
    DeleteClient(usize),
    Alloc {
        client: usize,
        size: usize,
        align_shift: u32,
    },
    FreeByClient {
        block: usize,
    },
    FreeByContext {
        block: usize,
    },
    FreeByOther {
        client: usize,
        block: usize,
    },
    FreeInterior {
        block: usize,
    },
    Query {
        client: usize,
        block: usize,
    },
    Trim(usize),
    UseDeleted {
        size: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => proptest::option::of(0usize..200_000).prop_map(|quota| Op::CreateClient { quota }),
        1 => any::<usize>().prop_map(Op::DeleteClient),
        8 => (any::<usize>(), prop_oneof![0usize..2048, 0usize..300_000], 0u32..8)
            .prop_map(|(client, size, align_shift)| Op::Alloc { client, size, align_shift }),
        4 => any::<usize>().prop_map(|block| Op::FreeByClient { block }),
        2 => any::<usize>().prop_map(|block| Op::FreeByContext { block }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(client, block)| Op::FreeByOther { client, block }),
        1 => any::<usize>().prop_map(|block| Op::FreeInterior { block }),
        3 => (any::<usize>(), any::<usize>()).prop_map(|(client, block)| Op::Query { client, block }),
        1 => any::<usize>().prop_map(Op::Trim),
        1 => (0usize..100).prop_map(|size| Op::UseDeleted { size }),
    ]
}

struct Block {
    addr: usize,
    size: usize,
    client: usize,
}

struct Model {
    ctx: Context,
    /// The caller's block: every block lies inside it.
    base: usize,
    clients: Vec<Option<Client>>,
    deleted: Vec<Client>,
    blocks: Vec<Block>,
}

impl Model {
    fn live_clients(&self) -> Vec<usize> {
        (0..self.clients.len())
            .filter(|&i| self.clients[i].is_some())
            .collect()
    }

    fn pick_client(&self, n: usize) -> Option<usize> {
        let live = self.live_clients();
        (!live.is_empty()).then(|| live[n % live.len()])
    }

    fn pick_block(&self, n: usize) -> Option<usize> {
        (!self.blocks.is_empty()).then(|| n % self.blocks.len())
    }
}

fn client_stats(cl: Client) -> ClientStats {
    let mut cs = ClientStats {
        size: size_of::<ClientStats>(),
        ..ClientStats::default()
    };
    // SAFETY: writable, size set.
    let st = unsafe { memvisor_client_get_stats(cl, &mut cs) };
    assert_eq!(st, Status::Ok);
    cs
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let layout = Layout::from_size_align(LEN, 4096).unwrap();
    // SAFETY: non-zero size.
    let memory = unsafe { alloc(layout) };
    let mut config = Config {
        size: 0,
        chunk_size: 0,
        min_block: 0,
        alignment: 0,
        flags: 0,
    };
    let mut ctx = Context::default();
    // SAFETY: `memory` outlives the context (deleted below); outputs writable.
    unsafe {
        prop_assert_eq!(memvisor_config_init(&mut config), Status::Ok);
        config.chunk_size = CHUNK;
        prop_assert_eq!(
            memvisor_context_create(memory.cast(), LEN, &config, &mut ctx),
            Status::Ok
        );
    }
    let mut m = Model {
        ctx,
        base: memory as usize,
        clients: Vec::new(),
        deleted: Vec::new(),
        blocks: Vec::new(),
    };
    let result = (|| -> Result<(), TestCaseError> {
        for op in ops {
            step(&mut m, op)?;
        }
        // Every client, trimmed, agrees with the model.
        for i in m.live_clients() {
            let cl = m.clients[i].unwrap();
            // SAFETY: this thread is the only one using the client.
            prop_assert_eq!(unsafe { memvisor_client_trim(cl) }, Status::Ok);
            let cs = client_stats(cl);
            let mine: Vec<&Block> = m.blocks.iter().filter(|b| b.client == i).collect();
            prop_assert_eq!(cs.live_blocks, mine.len());
            prop_assert_eq!(cs.used_bytes, mine.iter().map(|b| b.size).sum::<usize>());
        }
        Ok(())
    })();
    for cl in m.clients.iter().flatten() {
        // SAFETY: the client is used on this thread alone, and its blocks not after.
        assert_eq!(unsafe { memvisor_client_delete(*cl) }, Status::Ok);
    }
    let mut s = ContextStats {
        size: size_of::<ContextStats>(),
        ..ContextStats::default()
    };
    // SAFETY: writable, size set.
    unsafe {
        assert_eq!(memvisor_context_get_stats(m.ctx, &mut s), Status::Ok);
    }
    assert_eq!((s.held_chunks, s.clients), (0, 0));
    assert_eq!(memvisor_context_delete(m.ctx), Status::Ok);
    // SAFETY: allocated above with this layout; the context is gone.
    unsafe { dealloc(memory, layout) };
    result
}

fn step(m: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    match *op {
        Op::CreateClient { quota } => {
            let mut cl = Client::default();
            // SAFETY: writable.
            let st = unsafe {
                memvisor_client_create(m.ctx, quota.unwrap_or(MEMVISOR_UNLIMITED), &mut cl)
            };
            prop_assert_eq!(st, Status::Ok);
            prop_assert!(m.clients.iter().flatten().all(|c| *c != cl));
            m.clients.push(Some(cl));
        }
        Op::DeleteClient(n) => {
            if let Some(i) = m.pick_client(n) {
                let cl = m.clients[i].take().unwrap();
                // SAFETY: the client is used on this thread alone, and its blocks not after.
                prop_assert_eq!(unsafe { memvisor_client_delete(cl) }, Status::Ok);
                m.blocks.retain(|b| b.client != i);
                m.deleted.push(cl);
            }
        }
        Op::Alloc {
            client,
            size,
            align_shift,
        } => {
            let Some(i) = m.pick_client(client) else {
                return Ok(());
            };
            let cl = m.clients[i].unwrap();
            let align = 16usize << align_shift;
            let mut p: *mut c_void = ptr::null_mut();
            // SAFETY: writable.
            let st = unsafe { memvisor_alloc_aligned(cl, size, align, &mut p) };
            match st {
                Status::Ok => {
                    let addr = p as usize;
                    prop_assert_eq!(addr % align, 0);
                    let mut actual = 0;
                    // SAFETY: writable.
                    prop_assert_eq!(unsafe { memvisor_size_of(cl, p, &mut actual) }, Status::Ok);
                    prop_assert!(actual >= size.max(1));
                    prop_assert!(addr >= m.base && addr + actual <= m.base + LEN);
                    for b in &m.blocks {
                        prop_assert!(
                            addr + actual <= b.addr || b.addr + b.size <= addr,
                            "overlap"
                        );
                    }
                    // The block is the caller's: write all of it.
                    // SAFETY: a live block of `actual` bytes.
                    unsafe { p.cast::<u8>().write_bytes(0xC3, actual) };
                    m.blocks.push(Block {
                        addr,
                        size: actual,
                        client: i,
                    });
                }
                Status::QuotaExceeded | Status::OutOfMemory => prop_assert!(p.is_null()),
                other => prop_assert!(false, "alloc({size}, {align}) returned {other:?}"),
            }
        }
        Op::FreeByClient { block } => {
            let Some(k) = m.pick_block(block) else {
                return Ok(());
            };
            let b = m.blocks.swap_remove(k);
            let cl = m.clients[b.client].unwrap();
            let mut size = 0;
            // SAFETY: a live block, not used again.
            let st = unsafe { memvisor_client_free(cl, b.addr as *mut c_void, &mut size) };
            prop_assert_eq!(st, Status::Ok);
            prop_assert_eq!(size, b.size);
            // SAFETY: writable; the address is only looked up.
            let again = unsafe { memvisor_client_free(cl, b.addr as *mut c_void, ptr::null_mut()) };
            prop_assert!(
                matches!(again, Status::NotABlock | Status::NotOwned),
                "{again:?}"
            );
        }
        Op::FreeByContext { block } => {
            let Some(k) = m.pick_block(block) else {
                return Ok(());
            };
            let b = m.blocks.swap_remove(k);
            let mut size = 0;
            // SAFETY: a live block, not used again.
            let st = unsafe { memvisor_free(m.ctx, b.addr as *mut c_void, &mut size) };
            prop_assert_eq!(st, Status::Ok);
            prop_assert_eq!(size, b.size);
        }
        Op::FreeByOther { client, block } => {
            let (Some(k), Some(i)) = (m.pick_block(block), m.pick_client(client)) else {
                return Ok(());
            };
            let b = &m.blocks[k];
            if b.client != i {
                let cl = m.clients[i].unwrap();
                // SAFETY: refused: the block is another client's.
                let st =
                    unsafe { memvisor_client_free(cl, b.addr as *mut c_void, ptr::null_mut()) };
                prop_assert_eq!(st, Status::NotOwned);
            }
        }
        Op::FreeInterior { block } => {
            let Some(k) = m.pick_block(block) else {
                return Ok(());
            };
            let b = &m.blocks[k];
            if b.size >= 32 {
                let inner = (b.addr + 16) as *mut c_void;
                let cl = m.clients[b.client].unwrap();
                // SAFETY: refused: not a block start.
                unsafe {
                    prop_assert_eq!(
                        memvisor_client_free(cl, inner, ptr::null_mut()),
                        Status::NotABlock
                    );
                    prop_assert_eq!(
                        memvisor_free(m.ctx, inner, ptr::null_mut()),
                        Status::NotABlock
                    );
                }
            }
        }
        Op::Query { client, block } => {
            let (Some(k), Some(i)) = (m.pick_block(block), m.pick_client(client)) else {
                return Ok(());
            };
            let b = &m.blocks[k];
            let cl = m.clients[i].unwrap();
            let p = b.addr as *const c_void;
            let mut owns = false;
            let mut who = Client::default();
            let mut size = 0;
            // SAFETY: outputs writable; addresses only looked up.
            unsafe {
                prop_assert_eq!(memvisor_client_owns(cl, p, &mut owns), Status::Ok);
                prop_assert_eq!(owns, b.client == i);
                prop_assert_eq!(memvisor_context_owner(m.ctx, p, &mut who), Status::Ok);
                prop_assert_eq!(Some(who), m.clients[b.client]);
                let st = memvisor_size_of(cl, p, &mut size);
                if b.client == i {
                    prop_assert_eq!((st, size), (Status::Ok, b.size));
                } else {
                    prop_assert_eq!(st, Status::NotOwned);
                }
            }
        }
        Op::Trim(n) => {
            prop_assert_eq!(memvisor_context_trim(m.ctx), Status::Ok);
            if let Some(i) = m.pick_client(n) {
                // SAFETY: this thread is the only one using the client.
                let st = unsafe { memvisor_client_trim(m.clients[i].unwrap()) };
                prop_assert_eq!(st, Status::Ok);
            }
        }
        Op::UseDeleted { size } => {
            if let Some(&cl) = m.deleted.last() {
                let mut p: *mut c_void = ptr::null_mut();
                // SAFETY: writable.
                let st = unsafe { memvisor_alloc(cl, size, &mut p) };
                prop_assert_eq!(st, Status::InvalidHandle);
                // SAFETY: the client is used on this thread alone, and its blocks not after.
                prop_assert_eq!(unsafe { memvisor_client_delete(cl) }, Status::InvalidHandle);
                prop_assert!(p.is_null());
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 1_000 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn model_random_calls_match_oracle(
        ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 20 } else { 80 }),
    ) {
        run(&ops)?;
    }
}
