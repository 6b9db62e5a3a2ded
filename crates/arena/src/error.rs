//! [`Error`]: everything that can go wrong in this crate.

/// Everything that can go wrong in this crate. Every variant carries the values that caused
/// it; a failed operation leaves the arena and the client as they were, except for what its
/// own documentation lists (an allocation refused for lack of room, for instance, may first
/// have taken in the blocks freed through the arena, honoured a trim request and asked the
/// other clients to trim: see [`Client::alloc`](crate::Client::alloc)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The chunk size is not a power of two or outside the supported range.
    #[error("chunk size {size:#x} is not a power of two in {min:#x}..={max:#x}")]
    InvalidChunkSize {
        /// The offending chunk size.
        size: usize,
        /// The smallest chunk size allowed.
        min: usize,
        /// The largest chunk size allowed.
        max: usize,
    },
    /// The minimum block size is not a power of two in the supported range.
    #[error("minimum block size {size:#x} is not a power of two in {min:#x}..={max:#x}")]
    InvalidMinBlock {
        /// The offending size.
        size: usize,
        /// The smallest value allowed.
        min: usize,
        /// The largest value allowed.
        max: usize,
    },
    /// The chunk alignment is not a power of two between 16 and the chunk size.
    #[error("alignment {align:#x} is not a power of two in 0x10..={chunk_size:#x}")]
    InvalidAlignment {
        /// The offending alignment.
        align: usize,
        /// The chunk size it may not exceed.
        chunk_size: usize,
    },
    /// The backing memory cannot hold a single aligned chunk.
    #[error(
        "backing of {len:#x} bytes cannot hold one chunk of {chunk_size:#x} bytes aligned to {align:#x}"
    )]
    BackingTooSmall {
        /// Length of the backing memory.
        len: usize,
        /// The configured chunk size.
        chunk_size: usize,
        /// The configured alignment.
        align: usize,
    },
    /// The alignment asked of heap backing memory ([`Backing::heap`](crate::Backing::heap)) is
    /// not a power of two of at least the minimum.
    #[error("backing alignment {align:#x} is not a power of two of at least {min:#x}")]
    InvalidBackingAlignment {
        /// The offending alignment.
        align: usize,
        /// The smallest alignment allowed.
        min: usize,
    },
    /// Heap backing memory of zero bytes was asked for ([`Backing::heap`](crate::Backing::heap)).
    #[error("backing memory of zero bytes holds nothing")]
    EmptyBacking,
    /// Heap backing memory this long with this alignment exceeds what the global allocator
    /// can be asked for (`isize::MAX` bytes); or backing memory given to an arena is longer
    /// than `isize::MAX` bytes or runs past the end of the address space (`align` is then the
    /// arena's configured alignment, [`Config::alignment`](crate::Config::alignment)).
    #[error(
        "backing memory of {len:#x} bytes aligned to {align:#x} exceeds isize::MAX bytes or the end of the address space"
    )]
    BackingTooLarge {
        /// The asked length.
        len: usize,
        /// The asked alignment.
        align: usize,
    },
    /// A block of this size is larger than the arena's largest block
    /// ([`Arena::max_block_size`](crate::Arena::max_block_size): the whole arena, but at most
    /// `2^28 - 1` chunks, or half a chunk with [`Flags::GUARD`](crate::Flags::GUARD)).
    #[error("allocation of {size:#x} bytes exceeds the largest block of {max:#x} bytes")]
    TooLarge {
        /// The requested size.
        size: usize,
        /// The largest block size of this arena.
        max: usize,
    },
    /// The requested alignment is larger than the arena guarantees.
    #[error("alignment {align:#x} exceeds the largest supported alignment {max:#x}")]
    UnsupportedAlignment {
        /// The requested alignment.
        align: usize,
        /// The largest alignment this arena supports.
        max: usize,
    },
    /// The allocation would take the client's live bytes over its quota.
    #[error(
        "allocating {requested:#x} bytes with {used:#x} in use exceeds the client's quota of {quota:#x} bytes (a larger Quota given to Arena::create_client makes room)"
    )]
    QuotaExceeded {
        /// Bytes the allocation needs (its size rounded up to the block size).
        requested: usize,
        /// Bytes the client has in live blocks.
        used: usize,
        /// The client's quota.
        quota: usize,
    },
    /// The client's own chunks cannot fit the block and the arena has no free chunk left (for
    /// a block larger than a chunk: no run of that many contiguous free chunks, although
    /// other chunks may be free); or the global allocator refused heap backing memory
    /// ([`Backing::heap`](crate::Backing::heap)). `exhausted` says which ran out, and its
    /// message names the settings that would make room.
    #[error("out of memory: {size:#x} bytes asked for needed {requested:#x} bytes of {exhausted}")]
    OutOfMemory {
        /// The size the caller asked for: the layout's size given to
        /// [`Client::alloc`](crate::Client::alloc), the length given to
        /// [`Backing::heap`](crate::Backing::heap).
        size: usize,
        /// Bytes the allocation needed from the arena: the block's length of buddy pages (the
        /// size rounded up as [`Client::alloc`](crate::Client::alloc) says), the whole slab for a
        /// small block that needed a new one, the run's whole chunks for a block larger than a
        /// chunk; the length asked of the global allocator for heap backing memory.
        requested: usize,
        /// What ran out.
        exhausted: Exhausted,
    },
    /// The host's allocator refused memory the arena keeps outside its backing: its side
    /// tables (about 2% of the backing; see
    /// [`Arena::bookkeeping_bytes`](crate::Arena::bookkeeping_bytes)), a chunk's remote-free
    /// bits, a new client's mailbox or a reserved backing's record; `what` says which.
    #[error("the host refused {bytes:#x} bytes of memory for {what}")]
    TablesUnavailable {
        /// Bytes that were asked of the host's allocator.
        bytes: usize,
        /// What the memory was for.
        what: HostTable,
    },
    /// The address is not inside the arena's chunks.
    #[error("address {addr:#x} is not inside the arena")]
    Foreign {
        /// The offending address.
        addr: usize,
    },
    /// The address lies in a chunk this client does not hold.
    #[error("address {addr:#x} lies in chunk {chunk} which this client does not hold")]
    NotOwned {
        /// The offending address.
        addr: usize,
        /// Index of the chunk it lies in.
        chunk: usize,
    },
    /// The address is not the start of a live block of this client: an interior pointer, a
    /// block that was already freed, or memory never handed out.
    #[error("address {addr:#x} is not the start of a live block")]
    NotABlock {
        /// The offending address.
        addr: usize,
    },
    /// Every client identifier is held by a live client (a deleted client's goes to a later
    /// client).
    #[error("all {max} client identifiers are held by live clients")]
    ClientIdsExhausted {
        /// How many identifiers an arena has.
        max: u32,
    },
    /// The operating system refused an operation on the arena's reservation.
    #[cfg(feature = "std")]
    #[error("virtual memory operation failed")]
    Vmem(#[source] memvisor_vmem::Error),
}

/// What ran out when an allocation was refused with [`Error::OutOfMemory`]. Its message ends
/// with the settings that would make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Exhausted {
    /// Every chunk of the arena is held by a client (the asking client included: its own
    /// chunks had no room for the block). A larger backing, a smaller
    /// [`Config::with_chunk_size`](crate::Config::with_chunk_size) (each allocating client holds at
    /// least one chunk), or clients trimming ([`Arena::trim`](crate::Arena::trim)) or deleted
    /// make room.
    Chunks {
        /// How many chunks the arena has.
        chunks: usize,
        /// The size of a chunk.
        chunk_size: usize,
    },
    /// A block larger than a chunk found no run of `run` contiguous free chunks. `free`, the
    /// arena's free chunks when the run was refused, may be `run` or more, not side by side.
    Run {
        /// How many contiguous chunks the block needed.
        run: usize,
        /// How many chunks were free (a snapshot: other threads may take and give chunks).
        free: usize,
        /// How many chunks the arena has.
        chunks: usize,
        /// The size of a chunk.
        chunk_size: usize,
    },
    /// The global allocator refused heap backing memory
    /// ([`Backing::heap`](crate::Backing::heap)).
    HostMemory,
    /// The free chunks that could hold the block were out of the free set for
    /// `Arena::decommit_free_chunks`' decommit (with `std`) for longer than an allocation waits
    /// for them (100 ms): the decommitting thread did not run
    /// meanwhile (a loaded machine, a debugger, a stop-the-world collector). They are free
    /// again once it has made its system call.
    Decommitting {
        /// The size of a chunk.
        chunk_size: usize,
    },
}

impl core::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Chunks { chunks, chunk_size } => write!(
                f,
                "a new chunk, but all {chunks} chunks of {chunk_size:#x} bytes are held by \
                 clients (a larger backing, a smaller Config::with_chunk_size, or trimming or \
                 deleting clients makes room)"
            ),
            Self::Run {
                run,
                free,
                chunks,
                chunk_size,
            } => write!(
                f,
                "{run} contiguous chunks, but no run of {run} free chunks of {chunk_size:#x} \
                 bytes is left, {free} of the {chunks} being free (a larger backing, or \
                 trimming or deleting clients makes room)"
            ),
            Self::Decommitting { chunk_size } => write!(
                f,
                "a chunk of {chunk_size:#x} bytes, but the free ones were out of the free set \
                 for Arena::decommit_free_chunks for longer than an allocation waits (100 ms) \
                 (they are free again once the decommitting thread runs)"
            ),
            Self::HostMemory => f.write_str(
                "the global allocator, but it refused them (a shorter Backing::heap, or \
                 Backing::reserve makes room)",
            ),
        }
    }
}

impl Error {
    /// This error with `size`, the size the caller asked for, in place of an
    /// [`OutOfMemory`](Self::OutOfMemory)'s own (the paths below the call know only what they
    /// needed of the arena).
    #[cold]
    #[must_use]
    pub(crate) fn asked(self, size: usize) -> Self {
        match self {
            Self::OutOfMemory {
                requested,
                exhausted,
                ..
            } => Self::OutOfMemory {
                size,
                requested,
                exhausted,
            },
            e => e,
        }
    }
}

/// What memory outside the backing the host's allocator refused
/// ([`Error::TablesUnavailable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HostTable {
    /// The side tables an arena is made with ([`Arena::new`](crate::Arena::new)).
    SideTables,
    /// The remote-free bits of a chunk, made by the first free through the arena that lands
    /// in it ([`Arena::free`](crate::Arena::free)).
    RemoteFreeBits,
    /// A new client's mailbox of blocks freed through the arena
    /// ([`Arena::create_client`](crate::Arena::create_client)).
    Mailbox,
    /// The record of a reserved backing
    /// ([`Backing::reserve`](crate::Backing::reserve)).
    BackingRecord,
}

impl core::fmt::Display for HostTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::SideTables => "the arena's side tables",
            Self::RemoteFreeBits => "a chunk's remote-free bits",
            Self::Mailbox => "a client's mailbox",
            Self::BackingRecord => "a reserved backing's record",
        })
    }
}

#[cfg(feature = "std")]
impl From<memvisor_vmem::Error> for Error {
    fn from(e: memvisor_vmem::Error) -> Self {
        Self::Vmem(e)
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn display_config_errors_name_values() {
        assert_eq!(
            Error::InvalidChunkSize {
                size: 0x3000,
                min: 0x10000,
                max: 0x4000000
            }
            .to_string(),
            "chunk size 0x3000 is not a power of two in 0x10000..=0x4000000"
        );
        assert_eq!(
            Error::InvalidMinBlock {
                size: 24,
                min: 16,
                max: 256
            }
            .to_string(),
            "minimum block size 0x18 is not a power of two in 0x10..=0x100"
        );
        assert_eq!(
            Error::InvalidAlignment {
                align: 3,
                chunk_size: 0x10000
            }
            .to_string(),
            "alignment 0x3 is not a power of two in 0x10..=0x10000"
        );
        assert_eq!(
            Error::BackingTooSmall {
                len: 0x100,
                chunk_size: 0x10000,
                align: 0x1000
            }
            .to_string(),
            "backing of 0x100 bytes cannot hold one chunk of 0x10000 bytes aligned to 0x1000"
        );
    }

    #[test]
    fn display_allocation_errors_name_values() {
        assert_eq!(
            Error::TooLarge {
                size: 0x20000,
                max: 0x10000
            }
            .to_string(),
            "allocation of 0x20000 bytes exceeds the largest block of 0x10000 bytes"
        );
        assert_eq!(
            Error::UnsupportedAlignment {
                align: 0x2000,
                max: 0x1000
            }
            .to_string(),
            "alignment 0x2000 exceeds the largest supported alignment 0x1000"
        );
        assert_eq!(
            Error::QuotaExceeded {
                requested: 0x20,
                used: 0x3f0,
                quota: 0x400
            }
            .to_string(),
            "allocating 0x20 bytes with 0x3f0 in use exceeds the client's quota of 0x400 bytes (a \
             larger Quota given to Arena::create_client makes room)"
        );
        assert_eq!(
            Error::InvalidBackingAlignment { align: 8, min: 16 }.to_string(),
            "backing alignment 0x8 is not a power of two of at least 0x10"
        );
        assert_eq!(
            Error::BackingTooLarge {
                len: usize::MAX,
                align: 16
            }
            .to_string(),
            alloc::format!(
                "backing memory of {:#x} bytes aligned to 0x10 exceeds isize::MAX bytes or the end of \
                 the address space",
                usize::MAX
            )
        );
        assert_eq!(
            Error::OutOfMemory {
                size: 0x30,
                requested: 0x40,
                exhausted: Exhausted::Chunks {
                    chunks: 2,
                    chunk_size: 0x10000
                }
            }
            .to_string(),
            "out of memory: 0x30 bytes asked for needed 0x40 bytes of a new chunk, but all 2 \
             chunks of 0x10000 bytes are held by clients (a larger backing, a smaller \
             Config::with_chunk_size, or trimming or deleting clients makes room)"
        );
        assert_eq!(
            Error::OutOfMemory {
                size: 0x20001,
                requested: 0x30000,
                exhausted: Exhausted::Run {
                    run: 3,
                    free: 5,
                    chunks: 8,
                    chunk_size: 0x10000
                }
            }
            .to_string(),
            "out of memory: 0x20001 bytes asked for needed 0x30000 bytes of 3 contiguous chunks, \
             but no run of 3 free chunks of 0x10000 bytes is left, 5 of the 8 being free (a \
             larger backing, or trimming or deleting clients makes room)"
        );
        assert_eq!(
            Error::OutOfMemory {
                size: 0x8,
                requested: 0x10000,
                exhausted: Exhausted::Decommitting {
                    chunk_size: 0x10000
                }
            }
            .to_string(),
            "out of memory: 0x8 bytes asked for needed 0x10000 bytes of a chunk of 0x10000 \
             bytes, but the free ones were out of the free set for \
             Arena::decommit_free_chunks for longer than an allocation waits (100 ms) (they \
             are free again once the decommitting thread runs)"
        );
        assert_eq!(
            Error::OutOfMemory {
                size: 0x1000,
                requested: 0x1000,
                exhausted: Exhausted::HostMemory
            }
            .to_string(),
            "out of memory: 0x1000 bytes asked for needed 0x1000 bytes of the global allocator, \
             but it refused them (a shorter Backing::heap, or Backing::reserve makes room)"
        );
        assert_eq!(
            Error::TablesUnavailable {
                bytes: 0x2000,
                what: HostTable::RemoteFreeBits
            }
            .to_string(),
            "the host refused 0x2000 bytes of memory for a chunk's remote-free bits"
        );
        assert_eq!(
            Error::TablesUnavailable {
                bytes: 0x8,
                what: HostTable::Mailbox
            }
            .to_string(),
            "the host refused 0x8 bytes of memory for a client's mailbox"
        );
        assert_eq!(
            Error::ClientIdsExhausted { max: 7 }.to_string(),
            "all 7 client identifiers are held by live clients"
        );
    }

    #[test]
    fn display_pointer_errors_name_values() {
        assert_eq!(
            Error::Foreign { addr: 0x1234 }.to_string(),
            "address 0x1234 is not inside the arena"
        );
        assert_eq!(
            Error::NotOwned {
                addr: 0x1230,
                chunk: 3
            }
            .to_string(),
            "address 0x1230 lies in chunk 3 which this client does not hold"
        );
        assert_eq!(
            Error::NotABlock { addr: 0x1238 }.to_string(),
            "address 0x1238 is not the start of a live block"
        );
    }

    #[cfg(feature = "std")]
    #[test]
    fn vmem_error_keeps_source() {
        use core::error::Error as _;
        let e: Error = memvisor_vmem::Error::ZeroLength.into();
        assert_eq!(e.to_string(), "virtual memory operation failed");
        assert_eq!(e.source().unwrap().to_string(), "length is zero");
    }
}
