//! The plain C types: handles, the configuration, statistics and constants.

use memvisor_arena::{ArenaStats, ClientStats as ArenaClientStats, Config as ArenaConfig, Flags};

use crate::status::Status;

/// New blocks read as zero.
pub const MEMVISOR_FLAG_ZERO: u32 = 1;
/// Chunks given back are decommitted (reservation-backed contexts only).
pub const MEMVISOR_FLAG_DECOMMIT: u32 = 1 << 1;
/// A guard page after each chunk (reservation-backed contexts with chunks of four pages or
/// more); the largest block becomes half a chunk.
pub const MEMVISOR_FLAG_GUARD: u32 = 1 << 2;
/// Freed blocks are filled with `MEMVISOR_POISON_BYTE`, with three exceptions: blocks of up
/// to 2 KiB keep their first 2 bytes (a free-list link); a block freed with `memvisor_free`
/// is filled when its client takes it in (its next free, trim or allocation that misses its
/// caches), not at once; blocks still live when their client is deleted are not filled.
pub const MEMVISOR_FLAG_POISON: u32 = 1 << 3;
/// Context-wide block totals (`used_bytes`, `live_blocks` of the context statistics).
pub const MEMVISOR_FLAG_STATISTICS: u32 = 1 << 4;
/// The byte freed blocks are filled with under `MEMVISOR_FLAG_POISON`.
pub const MEMVISOR_POISON_BYTE: u8 = 0xA5;
/// A quota of no limit, and a statistic the context does not keep.
pub const MEMVISOR_UNLIMITED: usize = !0;
/// The alignment of every block `memvisor_alloc` returns.
pub const MEMVISOR_MIN_ALIGN: usize = 16;

// The header needs literal values; these keep them equal to the arena's.
const _: () = {
    assert!(MEMVISOR_FLAG_ZERO == Flags::ZERO.bits());
    assert!(MEMVISOR_FLAG_DECOMMIT == Flags::DECOMMIT.bits());
    assert!(MEMVISOR_FLAG_GUARD == Flags::GUARD.bits());
    assert!(MEMVISOR_FLAG_POISON == Flags::POISON.bits());
    assert!(MEMVISOR_FLAG_STATISTICS == Flags::STATISTICS.bits());
    assert!(MEMVISOR_POISON_BYTE == memvisor_arena::POISON_BYTE);
    assert!(MEMVISOR_UNLIMITED == usize::MAX);
    assert!(Flags::all().bits() == 0x1f);
};

/// A context: one memory block shared by isolated clients. Opaque: copy it, compare it, but do
/// not make one up. `{0}` is never a valid handle. A deleted context's handle is refused.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Context {
    /// The handle's value (kind, index and generation).
    pub id: u64,
}

/// A client of a context: allocates in isolation, and deleting it frees all it holds. Opaque
/// like `memvisor_context`; `{0}` is never a valid handle. A deleted client's handle is
/// refused.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Client {
    /// The handle's value (kind, index and generation).
    pub id: u64,
}

/// How a context cuts its memory. Fill it with `memvisor_config_init`, then change fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// `sizeof(memvisor_config)` as the caller was compiled with.
    pub size: usize,
    /// Bytes a client takes from the context at a time: a power of two from 64 KiB to 64 MiB
    /// (default 1 MiB). A block larger than a chunk is a run of whole contiguous chunks.
    pub chunk_size: usize,
    /// The smallest block: a power of two from 16 to 256 bytes (default 16).
    pub min_block: usize,
    /// The alignment of chunk starts, which is the largest alignment a block may ask for: a
    /// power of two from 16 to `chunk_size` (default 4096).
    pub alignment: usize,
    /// `MEMVISOR_FLAG_*` bits requested (default none).
    pub flags: u32,
}

impl Default for Config {
    fn default() -> Self {
        let d = ArenaConfig::new();
        Self {
            size: size_of::<Self>(),
            chunk_size: d.chunk_size(),
            min_block: d.min_block(),
            alignment: d.alignment(),
            flags: d.flags().bits(),
        }
    }
}

impl Config {
    /// The arena configuration it describes.
    ///
    /// # Errors
    /// [`Status::StructSize`] if `size` is too small, [`Status::UnknownFlags`] for undefined
    /// flag bits, [`Status::InvalidConfig`] for values out of range.
    pub fn to_arena(&self) -> Result<ArenaConfig, Status> {
        if self.size < size_of::<Self>() {
            return Err(Status::StructSize);
        }
        let flags = Flags::from_bits_truncate(self.flags);
        if flags.bits() != self.flags {
            return Err(Status::UnknownFlags);
        }
        let config = ArenaConfig::new()
            .with_chunk_size(self.chunk_size)
            .with_min_block(self.min_block)
            .with_alignment(self.alignment)
            .with_flags(flags);
        config.validate()?;
        Ok(config)
    }
}

/// Statistics of a context. Set `size` to `sizeof(memvisor_context_stats)` before the call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContextStats {
    /// In: the caller's `sizeof`; out: the bytes the library filled.
    pub size: usize,
    /// Bytes covered by chunks (fixed when the context is made).
    pub total_bytes: usize,
    /// The chunk size.
    pub chunk_size: usize,
    /// Number of chunks.
    pub chunks: usize,
    /// Chunks held by clients.
    pub held_chunks: usize,
    /// Chunks no client holds.
    pub free_chunks: usize,
    /// Free chunks whose memory is still committed (cached for the next taker).
    pub cached_chunks: usize,
    /// Bytes in chunks no client holds.
    pub free_bytes: usize,
    /// Bytes in live blocks of all clients; `MEMVISOR_UNLIMITED` without
    /// `MEMVISOR_FLAG_STATISTICS`.
    pub used_bytes: usize,
    /// Live blocks of all clients; `MEMVISOR_UNLIMITED` without `MEMVISOR_FLAG_STATISTICS`.
    pub live_blocks: usize,
    /// The largest block a new client could get now: the longest run of free chunks (with
    /// `MEMVISOR_FLAG_GUARD`, a chunk's largest block if a chunk is free), 0 if none is free.
    pub largest_free_block: usize,
    /// The largest block any client can allocate.
    pub max_block_size: usize,
    /// The largest alignment a block can ask for.
    pub max_alignment: usize,
    /// Live clients.
    pub clients: usize,
    /// Bytes of the side tables, outside the block.
    pub bookkeeping_bytes: usize,
    /// Bytes of freed blocks all clients keep for reuse; `MEMVISOR_UNLIMITED` without
    /// `MEMVISOR_FLAG_STATISTICS`.
    pub cached_bytes: usize,
    /// Held chunks with no live block in them, over all clients (each keeps at most one);
    /// `MEMVISOR_UNLIMITED` without `MEMVISOR_FLAG_STATISTICS`.
    pub pinned_chunks: usize,
    /// The `MEMVISOR_FLAG_*` bits the context took on.
    pub accepted_flags: u32,
}

impl ContextStats {
    /// The C statistics of an arena.
    pub(crate) fn from_arena(s: &ArenaStats, arena: &memvisor_arena::Arena) -> Self {
        Self {
            size: size_of::<Self>(),
            total_bytes: s.total_bytes,
            chunk_size: s.chunk_size,
            chunks: s.chunks,
            held_chunks: s.held_chunks,
            free_chunks: s.free_chunks,
            cached_chunks: s.cached_chunks,
            free_bytes: s.free_bytes,
            used_bytes: s.used_bytes.unwrap_or(MEMVISOR_UNLIMITED),
            live_blocks: s.live_blocks.unwrap_or(MEMVISOR_UNLIMITED),
            largest_free_block: s.largest_free_block,
            max_block_size: arena.max_block_size(),
            max_alignment: arena.max_alignment(),
            clients: s.clients,
            bookkeeping_bytes: s.bookkeeping_bytes,
            cached_bytes: s.cached_bytes.unwrap_or(MEMVISOR_UNLIMITED),
            pinned_chunks: s.pinned_chunks.unwrap_or(MEMVISOR_UNLIMITED),
            accepted_flags: arena.accepted_flags().bits(),
        }
    }
}

/// Statistics of a client. Set `size` to `sizeof(memvisor_client_stats)` before the call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// In: the caller's `sizeof`; out: the bytes the library filled.
    pub size: usize,
    /// Bytes of the chunks the client holds.
    pub total_bytes: usize,
    /// Bytes in its live blocks (sizes as `memvisor_size_of` reports them).
    pub used_bytes: usize,
    /// `total_bytes - used_bytes`.
    pub free_bytes: usize,
    /// The most `used_bytes` has been.
    pub peak_used_bytes: usize,
    /// Live blocks.
    pub live_blocks: usize,
    /// Chunks held.
    pub chunks: usize,
    /// Held chunks wholly free: no live block, no cached block and no slab in them (at most
    /// one is kept; counted in `pinned_chunks` too).
    pub cached_chunks: usize,
    /// Bytes of freed blocks kept for quick reuse (part of `free_bytes`).
    pub cached_bytes: usize,
    /// Held chunks with no live block in them (at most one is kept).
    pub pinned_chunks: usize,
    /// Bytes of those chunks.
    pub pinned_bytes: usize,
    /// The largest block the client has room for in its chunks: the largest free or cached
    /// run of buddy pages, or the largest size class with a cached block or a slab with
    /// room. What a request gets without taking another chunk: one that takes buddy pages
    /// (over 2 KiB, or aligned above 64) when it is no larger, and aligned to no more, than
    /// the largest *free* run; a cached block only when the request is of its size class or
    /// buddy order; a small block when its class has a cached block or a slab with room.
    /// Anything else may take another chunk (a new slab, or pages), while the arena has
    /// one; the cached blocks are given back first only when it has none.
    pub largest_free_block: usize,
    /// Its quota in bytes, `MEMVISOR_UNLIMITED` for none.
    pub quota: usize,
    /// Successful allocations so far.
    pub allocations: u64,
    /// Successful frees so far.
    pub frees: u64,
}

impl ClientStats {
    /// The C statistics of a client.
    pub(crate) fn from_client(s: &ArenaClientStats, quota: Option<usize>) -> Self {
        Self {
            size: size_of::<Self>(),
            total_bytes: s.total_bytes,
            used_bytes: s.used_bytes,
            free_bytes: s.free_bytes,
            peak_used_bytes: s.peak_used_bytes,
            live_blocks: s.live_blocks,
            chunks: s.chunks,
            cached_chunks: s.cached_chunks,
            cached_bytes: s.cached_bytes,
            pinned_chunks: s.pinned_chunks,
            pinned_bytes: s.pinned_bytes,
            largest_free_block: s.largest_free_block,
            quota: quota.unwrap_or(MEMVISOR_UNLIMITED),
            allocations: s.allocations,
            frees: s.frees,
        }
    }
}

/// Writes `value` (whose first field is its `size`) to `out` after checking the caller's
/// `size` field.
///
/// # Errors
/// [`Status::NullPointer`] if `out` is null, [`Status::StructSize`] if its `size` is smaller
/// than `T`.
///
/// # Safety
/// `out`, if not null, points to a writable structure whose first field is a `size_t` that
/// says how many bytes it has.
pub(crate) unsafe fn write_sized<T: Plain>(out: *mut T, value: T) -> Result<(), Status> {
    if out.is_null() {
        return Err(Status::NullPointer);
    }
    // SAFETY: the caller's promise: a readable `size_t` first field.
    let size = unsafe { out.cast::<usize>().read_unaligned() };
    if size < size_of::<T>() {
        return Err(Status::StructSize);
    }
    // SAFETY: the caller said the structure has `size >= size_of::<T>()` writable bytes.
    unsafe { write_plain(out, value) };
    Ok(())
}

/// A structure handed to C. It is written field by field over zeroed bytes, so that every
/// byte the caller gets is defined, padding included, on every target (a typed copy of the
/// structure would carry undefined padding: two calls with equal results could then compare
/// unequal with `memcmp`). On 64-bit targets there is padding only at the end of `Config` and
/// `ContextStats`; on 32-bit targets whose `uint64_t` is aligned to 8 (Arm, MIPS, PowerPC,
/// WebAssembly), `ClientStats` also has 4 bytes before `allocations`.
pub(crate) trait Plain: Copy {
    /// Writes every field of `self` at its offset from `out`, and nothing else.
    ///
    /// # Safety
    /// `out` points to `size_of::<Self>()` writable bytes.
    unsafe fn write_fields(&self, out: *mut u8);
}

/// Writes `value` at `offset` bytes from `out`.
///
/// # Safety
/// `out + offset` starts `size_of::<F>()` writable bytes.
unsafe fn put<F: Copy>(out: *mut u8, offset: usize, value: F) {
    // SAFETY: the caller's promise.
    unsafe { out.add(offset).cast::<F>().write_unaligned(value) };
}

/// Implements [`Plain`] for a structure, naming every one of its fields (the destructuring
/// fails to compile if one is left out).
macro_rules! plain {
    ($t:ident { $($field:ident),+ $(,)? }) => {
        impl Plain for $t {
            unsafe fn write_fields(&self, out: *mut u8) {
                let $t { $($field),+ } = *self;
                $(
                    // SAFETY: the field lies inside the structure, which the caller says is
                    // writable.
                    unsafe { put(out, core::mem::offset_of!($t, $field), $field) };
                )+
            }
        }
    };
}

plain!(Config {
    size,
    chunk_size,
    min_block,
    alignment,
    flags,
});

plain!(ContextStats {
    size,
    total_bytes,
    chunk_size,
    chunks,
    held_chunks,
    free_chunks,
    cached_chunks,
    free_bytes,
    used_bytes,
    live_blocks,
    largest_free_block,
    max_block_size,
    max_alignment,
    clients,
    bookkeeping_bytes,
    cached_bytes,
    pinned_chunks,
    accepted_flags,
});

plain!(ClientStats {
    size,
    total_bytes,
    used_bytes,
    free_bytes,
    peak_used_bytes,
    live_blocks,
    chunks,
    cached_chunks,
    cached_bytes,
    pinned_chunks,
    pinned_bytes,
    largest_free_block,
    quota,
    allocations,
    frees,
});

// The 64-bit layouts C programs are built against: writing fields one by one moves none.
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(size_of::<Config>() == 40);
    assert!(core::mem::offset_of!(Config, flags) == 32);
    assert!(size_of::<ContextStats>() == 144);
    assert!(core::mem::offset_of!(ContextStats, accepted_flags) == 136);
    assert!(size_of::<ClientStats>() == 120);
    assert!(core::mem::offset_of!(ClientStats, allocations) == 104);
};

/// Writes `value` to `out`: zeroes the structure's bytes, then writes each field, so that the
/// caller's bytes are all defined.
///
/// # Safety
/// `out` points to `size_of::<T>()` writable bytes.
pub(crate) unsafe fn write_plain<T: Plain>(out: *mut T, value: T) {
    let out = out.cast::<u8>();
    // SAFETY: the caller's promise; every field lies inside the structure.
    unsafe {
        out.write_bytes(0, size_of::<T>());
        value.write_fields(out);
    }
}
