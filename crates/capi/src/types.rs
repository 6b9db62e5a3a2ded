//! The plain C types: handles, the configuration, statistics and constants.

use memvisor_arena::{ArenaStats, ClientStats as ArenaClientStats, Config as ArenaConfig, Flags};

use crate::status::Status;

/// New blocks read as zero.
pub const MEMVISOR_FLAG_ZERO: u32 = 1;
/// Chunks given back are decommitted (reservation-backed contexts only).
pub const MEMVISOR_FLAG_DECOMMIT: u32 = 1 << 1;
/// A guard page after each chunk (reservation-backed contexts with chunks of four pages or
/// more); the largest block becomes half a chunk, and so does the largest alignment when
/// `alignment` is the chunk size.
pub const MEMVISOR_FLAG_GUARD: u32 = 1 << 2;
/// Freed blocks are filled with `MEMVISOR_POISON_BYTE`, with three exceptions: blocks of up
/// to 2 KiB keep their first 2 bytes (where a slab of many blocks writes its free-list link);
/// a block freed with `memvisor_free`
/// is filled when its client takes it in (its next free, trim or allocation that misses its
/// caches), not at once; blocks still live when their client is deleted are not filled.
pub const MEMVISOR_FLAG_POISON: u32 = 1 << 3;
/// Context-wide block totals (`used_bytes`, `live_blocks`, `cached_bytes` and `pinned_chunks`
/// of the context statistics).
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
/// Fields are only ever added at the end.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// `sizeof(memvisor_config)` as the caller was compiled with (`memvisor_config_init`
    /// sets it); fields past it take their defaults.
    pub size: usize,
    /// Bytes a client takes from the context at a time: a power of two from 64 KiB to 64 MiB
    /// (default 1 MiB). A block larger than a chunk is a run of whole contiguous chunks.
    pub chunk_size: usize,
    /// The smallest block: a power of two from 16 to 256 bytes (default 16).
    pub min_block: usize,
    /// The alignment of chunk starts, which is the largest alignment a block may ask for
    /// (at most the largest block: half a chunk with `MEMVISOR_FLAG_GUARD`): a power of two
    /// from 16 to `chunk_size` (default 4096).
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
    /// The arena configuration it describes. A `size` from an older header, smaller than this
    /// library's structure, leaves the fields past it out: they take their defaults.
    ///
    /// # Errors
    /// [`Status::StructSize`] if `size` is not one a header of the structure can have (see
    /// [`Status::StructSize`]), [`Status::UnknownFlags`] for undefined flag bits,
    /// [`Status::InvalidConfig`] for values out of range.
    pub fn to_arena(&self) -> Result<ArenaConfig, Status> {
        let len = served_len::<Self>(self.size)?;
        let mut known = Self::default();
        // SAFETY: `self` is a whole structure, so its first `len <= size_of::<Self>()` bytes
        // are readable.
        unsafe { known.read_fields(core::ptr::from_ref(self).cast(), len) };
        let flags = Flags::from_bits_truncate(known.flags);
        if flags.bits() != known.flags {
            return Err(Status::UnknownFlags);
        }
        let config = ArenaConfig::new()
            .with_chunk_size(known.chunk_size)
            .with_min_block(known.min_block)
            .with_alignment(known.alignment)
            .with_flags(flags);
        config.validate()?;
        Ok(config)
    }
}

/// The size of `memvisor_config` in the first header, which had no size argument to
/// `memvisor_config_init`: what that function writes, whatever the structure grows to.
pub(crate) const FIRST_CONFIG_SIZE: usize =
    (4 * size_of::<usize>() + size_of::<u32>()).next_multiple_of(align_of::<usize>());

const _: () = assert!(FIRST_CONFIG_SIZE <= size_of::<Config>());

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
    /// Free chunks that clients held before and whose memory is still committed (cached for
    /// the next taker). Chunks never handed out do not count, even over a caller's block,
    /// which is committed throughout.
    pub cached_chunks: usize,
    /// Bytes in chunks no client holds.
    pub free_bytes: usize,
    /// Bytes in live blocks of all clients, a block freed with `memvisor_free` counting until
    /// its client takes it in; `MEMVISOR_UNLIMITED` without `MEMVISOR_FLAG_STATISTICS`.
    pub used_bytes: usize,
    /// Live blocks of all clients, a block freed with `memvisor_free` counting until its
    /// client takes it in; `MEMVISOR_UNLIMITED` without `MEMVISOR_FLAG_STATISTICS`.
    pub live_blocks: usize,
    /// The largest block a new client could get now: the longest run of free chunks, at most
    /// `max_block_size` (with `MEMVISOR_FLAG_GUARD`, a chunk's largest block if a chunk is
    /// free), 0 if none is free.
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
    /// `MEMVISOR_FLAG_STATISTICS`. (Their number is per client only, a client's
    /// `cached_blocks`: the context keeps no count of them.)
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
    /// Bytes in its live blocks (sizes as `memvisor_size_of` reports them), counting the
    /// blocks freed with `memvisor_free` that it has not taken in yet.
    pub used_bytes: usize,
    /// `total_bytes - used_bytes`.
    pub free_bytes: usize,
    /// The most `used_bytes` has been.
    pub peak_used_bytes: usize,
    /// Live blocks, counting the blocks freed with `memvisor_free` that it has not taken in
    /// yet (it takes them in at its next free, trim or allocation that misses its caches).
    pub live_blocks: usize,
    /// Chunks held.
    pub chunks: usize,
    /// Held chunks wholly free: no live block, no cached block and no slab in them (at most
    /// one is kept; counted in `pinned_chunks` too).
    pub cached_chunks: usize,
    /// Bytes of freed blocks kept for quick reuse (part of `free_bytes`).
    pub cached_bytes: usize,
    /// Held chunks with no live block in them (blocks freed with `memvisor_free` and not yet
    /// taken in count as live; at most one is kept).
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
    /// Successful frees so far: its own, and those made with `memvisor_free` once it has
    /// taken the block in.
    pub frees: u64,
    /// Freed blocks kept for quick reuse: the blocks `cached_bytes` counts, apart from
    /// `live_blocks` (libvmma's `vmma_populate_cached_blocks`). Added after `frees`: a
    /// structure of an older header, whose `size` ends at `frees`, does not get it.
    pub cached_blocks: usize,
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
            cached_blocks: s.cached_blocks,
        }
    }
}

/// How many bytes of a `T` whose `size` field (or size argument) says `size` this library
/// reads or writes: `size` itself when it is the C size of a prefix of `T`'s fields (a
/// structure from an older header: fields are only ever added at the end), `size_of::<T>()`
/// when `size` is at least that (this library's structure, or a newer header's).
///
/// # Errors
/// [`Status::StructSize`] for any other size: under the `size` field, or ending inside a
/// field or in the padding after one.
pub(crate) fn served_len<T: Plain>(size: usize) -> Result<usize, Status> {
    if size >= size_of::<T>() {
        Ok(size_of::<T>())
    } else if T::is_prefix_size(size) {
        Ok(size)
    } else {
        Err(Status::StructSize)
    }
}

/// Writes the value `make` gives (whose first field is its `size`) to `out` up to the
/// caller's `size`, which then says how many bytes were filled. `out` and its `size` are
/// checked before `make` runs, so a caller's structure is refused alike whatever `make` would
/// answer (a handle refused, say).
///
/// # Errors
/// [`Status::NullPointer`] if `out` is null, [`Status::StructSize`] if its `size` is not one
/// this library serves (see [`served_len`]), or `make`'s error; nothing is written then.
///
/// # Safety
/// `out`, if not null, points to a writable structure whose first field is a `size_t` that
/// says how many bytes it has.
pub(crate) unsafe fn write_sized<T: Plain>(
    out: *mut T,
    make: impl FnOnce() -> Result<T, Status>,
) -> Result<(), Status> {
    if out.is_null() {
        return Err(Status::NullPointer);
    }
    // SAFETY: the caller's promise: a readable `size_t` first field.
    let size = unsafe { out.cast::<usize>().read_unaligned() };
    let len = served_len::<T>(size)?;
    let value = make()?;
    // SAFETY: the caller said the structure has `size >= len` writable bytes.
    unsafe { write_plain(out, value, len) };
    Ok(())
}

/// A structure handed to C. It is written field by field over zeroed bytes, so that every
/// byte the caller gets is defined, padding included, on every target (a typed copy of the
/// structure would carry undefined padding: two calls with equal results could then compare
/// unequal with `memcmp`). On 64-bit targets there is padding only at the end of `Config` and
/// `ContextStats`; on 32-bit targets whose `uint64_t` is aligned to 8 (Arm, MIPS, PowerPC,
/// WebAssembly), `ClientStats` also has 4 bytes before `allocations`. Its first field is its
/// `size`, a `usize`.
pub(crate) trait Plain: Copy + Default {
    /// Whether `size` is the C size of the structure cut after one of its fields (the size
    /// of that field's end rounded up to the largest alignment of the fields kept).
    fn is_prefix_size(size: usize) -> bool;

    /// Writes every field of `self` that ends within `len` bytes at its offset from `out`,
    /// and nothing else.
    ///
    /// # Safety
    /// `out` points to `len` writable bytes.
    unsafe fn write_fields(&self, out: *mut u8, len: usize);

    /// Reads every field that ends within `len` bytes from its offset from `src`; the other
    /// fields keep their values.
    ///
    /// # Safety
    /// `src` points to `len` readable bytes, and each field wholly inside them holds a value
    /// of the field's type.
    unsafe fn read_fields(&mut self, src: *const u8, len: usize);
}

/// Writes `value` at `offset` bytes from `out`.
///
/// # Safety
/// `out + offset` starts `size_of::<F>()` writable bytes.
unsafe fn put<F: Copy>(out: *mut u8, offset: usize, value: F) {
    // SAFETY: the caller's promise.
    unsafe { out.add(offset).cast::<F>().write_unaligned(value) };
}

/// Reads the value at `offset` bytes from `src` into `slot`.
///
/// # Safety
/// `src + offset` starts `size_of::<F>()` readable bytes holding an `F`.
unsafe fn get<F: Copy>(src: *const u8, offset: usize, slot: &mut F) {
    // SAFETY: the caller's promise.
    *slot = unsafe { src.add(offset).cast::<F>().read_unaligned() };
}

/// Implements [`Plain`] for a structure, naming every one of its fields in order (the
/// destructuring fails to compile if one is left out).
macro_rules! plain {
    ($t:ident { $($field:ident),+ $(,)? }) => {
        impl Plain for $t {
            fn is_prefix_size(size: usize) -> bool {
                let $t { $($field),+ } = Self::default();
                let mut align = 1;
                $(
                    align = align.max(align_of_val(&$field));
                    let end = core::mem::offset_of!($t, $field) + size_of_val(&$field);
                    if size == end.next_multiple_of(align) {
                        return true;
                    }
                )+
                false
            }

            unsafe fn write_fields(&self, out: *mut u8, len: usize) {
                let $t { $($field),+ } = *self;
                $(
                    let offset = core::mem::offset_of!($t, $field);
                    if offset + size_of_val(&$field) <= len {
                        // SAFETY: the field lies inside the first `len` bytes, which the
                        // caller says are writable.
                        unsafe { put(out, offset, $field) };
                    }
                )+
            }

            unsafe fn read_fields(&mut self, src: *const u8, len: usize) {
                $(
                    let offset = core::mem::offset_of!($t, $field);
                    if offset + size_of_val(&self.$field) <= len {
                        // SAFETY: the field lies inside the first `len` bytes, which the
                        // caller says are readable and hold a value of its type there.
                        unsafe { get(src, offset, &mut self.$field) };
                    }
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
    cached_blocks,
});

// The 64-bit layouts C programs are built against: writing fields one by one moves none.
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(FIRST_CONFIG_SIZE == 40);
    assert!(size_of::<Config>() == 40);
    assert!(core::mem::offset_of!(Config, flags) == 32);
    assert!(size_of::<ContextStats>() == 144);
    assert!(core::mem::offset_of!(ContextStats, accepted_flags) == 136);
    assert!(size_of::<ClientStats>() == 128);
    assert!(core::mem::offset_of!(ClientStats, allocations) == 104);
    assert!(core::mem::offset_of!(ClientStats, cached_blocks) == 120);
};

// The 32-bit layouts: `uint64_t` aligned to 4 (x86) or to 8 (Arm, MIPS, PowerPC,
// WebAssembly: 4 bytes of padding before `allocations`).
#[cfg(target_pointer_width = "32")]
const _: () = {
    assert!(FIRST_CONFIG_SIZE == 20);
    assert!(size_of::<Config>() == 20);
    assert!(core::mem::offset_of!(Config, flags) == 16);
    assert!(size_of::<ContextStats>() == 72);
    assert!(core::mem::offset_of!(ContextStats, accepted_flags) == 68);
    // 13 `size_t` fields, the two `uint64_t` counters, then `cached_blocks`.
    let allocations = (13 * 4_usize).next_multiple_of(align_of::<u64>());
    assert!(core::mem::offset_of!(ClientStats, allocations) == allocations);
    assert!(core::mem::offset_of!(ClientStats, cached_blocks) == allocations + 16);
    assert!(size_of::<ClientStats>() == (allocations + 20).next_multiple_of(align_of::<u64>()));
};

/// Writes the first `len` bytes of `value` to `out`: zeroes them, writes each field that
/// ends within them, then sets the `size` field to `len`, so that the caller's bytes are all
/// defined and it can tell which fields it got. Writes nothing past `len`.
///
/// # Safety
/// `out` points to `len` writable bytes, and `len` (from [`served_len`]) covers the `size`
/// field.
pub(crate) unsafe fn write_plain<T: Plain>(out: *mut T, value: T, len: usize) {
    debug_assert!(size_of::<usize>() <= len && len <= size_of::<T>());
    let out = out.cast::<u8>();
    // SAFETY: the caller's promise; every field written lies inside the first `len` bytes,
    // `size` (a `usize` at offset 0) among them.
    unsafe {
        out.write_bytes(0, len);
        value.write_fields(out, len);
        out.cast::<usize>().write_unaligned(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: usize = size_of::<usize>();

    #[test]
    fn served_len_whole_field_prefixes_served_as_given() {
        for k in 1..=4 {
            assert_eq!(served_len::<Config>(k * W), Ok(k * W));
        }
        assert_eq!(
            served_len::<Config>(size_of::<Config>()),
            Ok(size_of::<Config>())
        );
        assert_eq!(served_len::<ContextStats>(6 * W), Ok(6 * W));
        assert_eq!(served_len::<ClientStats>(W), Ok(W));
        // The header before `cached_blocks`: its structure ended at `frees`.
        let before_cached_blocks = core::mem::offset_of!(ClientStats, frees) + size_of::<u64>();
        assert_eq!(
            served_len::<ClientStats>(before_cached_blocks),
            Ok(before_cached_blocks)
        );
    }

    #[test]
    fn served_len_larger_than_ours_serves_ours() {
        fn check<T: Plain>() {
            for size in [size_of::<T>(), size_of::<T>() + 1, 4096, usize::MAX] {
                assert_eq!(served_len::<T>(size), Ok(size_of::<T>()), "{size}");
            }
        }
        check::<Config>();
        check::<ContextStats>();
        check::<ClientStats>();
    }

    #[test]
    fn served_len_inside_a_field_or_padding_refused() {
        let flags_end = core::mem::offset_of!(Config, flags) + size_of::<u32>();
        for size in [0, 1, W - 1, W + 1, 2 * W + 3, size_of::<Config>() - 1] {
            assert_eq!(
                served_len::<Config>(size),
                Err(Status::StructSize),
                "{size}"
            );
        }
        // `flags` ends in the trailing padding on 64-bit targets, at the end on 32-bit ones.
        let expected = if flags_end < size_of::<Config>() {
            Err(Status::StructSize)
        } else {
            Ok(flags_end)
        };
        assert_eq!(served_len::<Config>(flags_end), expected);
        let last = size_of::<ContextStats>() - 1;
        assert_eq!(served_len::<ContextStats>(last), Err(Status::StructSize));
        // Inside `total_bytes`, whatever the width of `size_t`.
        assert_eq!(
            served_len::<ClientStats>(W + W / 2),
            Err(Status::StructSize)
        );
    }

    #[test]
    fn write_sized_prefix_writes_only_its_fields() {
        let mut bytes = [0xeeu8; size_of::<ClientStats>()];
        bytes[..W].copy_from_slice(&(3 * W).to_ne_bytes());
        let value = ClientStats {
            total_bytes: 1,
            used_bytes: 2,
            free_bytes: 3,
            ..ClientStats::default()
        };
        // SAFETY: `bytes` is writable and as large as the structure.
        let status = unsafe { write_sized(bytes.as_mut_ptr().cast::<ClientStats>(), || Ok(value)) };
        assert_eq!(status, Ok(()));
        let word = |i: usize| usize::from_ne_bytes(bytes[i * W..(i + 1) * W].try_into().unwrap());
        assert_eq!((word(0), word(1), word(2)), (3 * W, 1, 2));
        assert!(bytes[3 * W..].iter().all(|&b| b == 0xee));
    }

    #[test]
    fn write_sized_refused_size_writes_nothing() {
        let mut bytes = [0xeeu8; size_of::<ContextStats>()];
        bytes[..W].copy_from_slice(&(W + 1).to_ne_bytes());
        let before = bytes;
        let value = ContextStats::default();
        // SAFETY: `bytes` is writable and as large as the structure.
        let status =
            unsafe { write_sized(bytes.as_mut_ptr().cast::<ContextStats>(), || Ok(value)) };
        assert_eq!(status, Err(Status::StructSize));
        assert_eq!(bytes, before);
    }

    #[test]
    fn to_arena_prefix_size_fields_past_it_default() {
        let config = Config {
            size: 2 * W,
            chunk_size: 64 << 10,
            min_block: 3,
            alignment: 5,
            flags: 1 << 31,
        };
        let arena = config.to_arena().expect("fields past `size` are not read");
        let defaults = ArenaConfig::new();
        assert_eq!(arena.chunk_size(), 64 << 10);
        assert_eq!(arena.min_block(), defaults.min_block());
        assert_eq!(arena.alignment(), defaults.alignment());
        assert_eq!(arena.flags(), defaults.flags());
    }

    #[test]
    fn to_arena_size_inside_a_field_refused() {
        let config = Config {
            size: 2 * W - 1,
            ..Config::default()
        };
        assert_eq!(config.to_arena(), Err(Status::StructSize));
    }
}
