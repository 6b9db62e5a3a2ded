//! [`Config`], [`Flags`] and [`Quota`]: how an arena is shaped and how much a client may use.

use core::fmt;
use core::ops::{BitAnd, BitOr, BitOrAssign, Not};

use crate::error::{Error, Result};

/// The smallest chunk size.
pub const MIN_CHUNK_SIZE: usize = 64 << 10;
/// The largest chunk size.
pub const MAX_CHUNK_SIZE: usize = 64 << 20;
/// The smallest allowed minimum block size, and the alignment every block gets.
pub const MIN_BLOCK: usize = 16;
/// The largest allowed minimum block size.
pub const MAX_MIN_BLOCK: usize = 256;

/// Behaviour switches of an arena. [`Arena::supported_flags`](crate::Arena::supported_flags)
/// says which ones this build knows; [`Arena::accepted_flags`](crate::Arena::accepted_flags)
/// which ones an arena took on (some need a reservation-backed arena).
///
/// # Examples
/// ```
/// use memvisor_arena::Flags;
///
/// let flags = Flags::ZERO | Flags::STATISTICS;
/// assert!(flags.contains(Flags::ZERO));
/// assert!(!flags.contains(Flags::POISON));
/// assert_eq!(format!("{flags:?}"), "Flags(ZERO | STATISTICS)");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u32);

impl Flags {
    /// Every block reads as zero when handed out.
    pub const ZERO: Self = Self(1);
    /// Chunks given back to the arena are decommitted, so their memory returns to the
    /// operating system (reservation-backed arenas only). Without it, chunks given back stay
    /// committed for the next taker until
    /// [`Arena::decommit_free_chunks`](crate::Arena::decommit_free_chunks) decommits them.
    pub const DECOMMIT: Self = Self(1 << 1);
    /// The last page of each chunk is a guard page: running off the end of a chunk faults
    /// (reservation-backed arenas only). The largest block becomes half a chunk, and so does
    /// the largest alignment if the configured one is larger.
    pub const GUARD: Self = Self(1 << 2);
    /// Freed blocks are filled with [`POISON_BYTE`](crate::POISON_BYTE), so stale reads stand
    /// out. Blocks of up to 2 KiB keep their first 2 bytes (where a slab that keeps a free
    /// list writes its link; a slab of at most 64 blocks keeps a bitmap instead); a
    /// block freed through [`Arena::free`](crate::Arena::free) is filled when its client takes
    /// it in (its first word holds the link until then); blocks still live when their client
    /// is deleted are not filled (their chunks go back whole).
    pub const POISON: Self = Self(1 << 3);
    /// The arena keeps block-level totals (used bytes, live blocks, cached bytes, chunks
    /// without a live block) across all clients; this costs a few relaxed atomic adds per
    /// allocation and per free. Client statistics are always kept.
    pub const STATISTICS: Self = Self(1 << 4);

    const NAMES: [(Self, &'static str); 5] = [
        (Self::ZERO, "ZERO"),
        (Self::DECOMMIT, "DECOMMIT"),
        (Self::GUARD, "GUARD"),
        (Self::POISON, "POISON"),
        (Self::STATISTICS, "STATISTICS"),
    ];

    /// No flag set.
    #[must_use]
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Every flag this crate defines.
    #[must_use]
    pub const fn all() -> Self {
        Self(0b1_1111)
    }

    /// The raw bits.
    #[must_use]
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// The flags of `bits`, ignoring bits no flag uses.
    #[must_use]
    pub const fn from_bits_truncate(bits: u32) -> Self {
        Self(bits & Self::all().0)
    }

    /// Whether every flag of `other` is set in `self`.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag is set.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for Flags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for Flags {
    type Output = Self;
    fn bitand(self, rhs: Self) -> Self {
        Self(self.0 & rhs.0)
    }
}

impl Not for Flags {
    type Output = Self;
    fn not(self) -> Self {
        Self(!self.0 & Self::all().0)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Flags(")?;
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        f.write_str(")")
    }
}

/// The shape of an arena: chunk size, minimum block size, chunk alignment and flags.
///
/// # Examples
/// ```
/// use memvisor_arena::{Config, Flags};
///
/// let config = Config::new()
///     .with_chunk_size(256 << 10)
///     .with_min_block(32)
///     .with_flags(Flags::ZERO);
/// assert_eq!(config.chunk_size(), 256 << 10);
/// assert_eq!(config.min_block(), 32);
/// assert_eq!(config.alignment(), 4096);
/// assert!(config.validate().is_ok());
/// assert!(Config::new().with_chunk_size(3 << 16).validate().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Config {
    chunk_size: usize,
    min_block: usize,
    alignment: usize,
    flags: Flags,
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

impl Config {
    /// The defaults: 1 MiB chunks, 16-byte minimum block, chunks aligned to 4 KiB, no flags.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            chunk_size: 1 << 20,
            min_block: MIN_BLOCK,
            alignment: 4096,
            flags: Flags::empty(),
        }
    }

    /// Sets the chunk size: a power of two from 64 KiB to 64 MiB. A client takes memory from
    /// the arena a chunk at a time; a block larger than a chunk is a run of whole contiguous
    /// chunks, up to the whole arena (at most `2^28 - 1` chunks), except with [`Flags::GUARD`],
    /// where the largest block is half a chunk
    /// ([`Arena::max_block_size`](crate::Arena::max_block_size) says what holds).
    #[must_use]
    pub const fn with_chunk_size(mut self, size: usize) -> Self {
        self.chunk_size = size;
        self
    }

    /// Sets the minimum block size: a power of two from 16 to 256 bytes. Smaller requests are
    /// rounded up to it.
    #[must_use]
    pub const fn with_min_block(mut self, size: usize) -> Self {
        self.min_block = size;
        self
    }

    /// Sets the alignment of chunk starts, which is the largest alignment a block can ask
    /// for (but no more than the largest block of one chunk: half a chunk with
    /// [`Flags::GUARD`]; [`Arena::max_alignment`](crate::Arena::max_alignment) says what
    /// holds): a power of two from 16 bytes up to the chunk size. Over a caller's block, the
    /// start is rounded up to it.
    #[must_use]
    pub const fn with_alignment(mut self, align: usize) -> Self {
        self.alignment = align;
        self
    }

    /// Sets the requested flags.
    #[must_use]
    pub const fn with_flags(mut self, flags: Flags) -> Self {
        self.flags = flags;
        self
    }

    /// The chunk size.
    #[must_use]
    pub const fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// The minimum block size.
    #[must_use]
    pub const fn min_block(&self) -> usize {
        self.min_block
    }

    /// The alignment of chunk starts.
    #[must_use]
    pub const fn alignment(&self) -> usize {
        self.alignment
    }

    /// The requested flags.
    #[must_use]
    pub const fn flags(&self) -> Flags {
        self.flags
    }

    /// Checks the values.
    ///
    /// # Errors
    /// [`Error::InvalidChunkSize`], [`Error::InvalidMinBlock`] or
    /// [`Error::InvalidAlignment`] for the first value out of range.
    pub fn validate(&self) -> Result<()> {
        if !self.chunk_size.is_power_of_two()
            || self.chunk_size < MIN_CHUNK_SIZE
            || self.chunk_size > MAX_CHUNK_SIZE
        {
            return Err(Error::InvalidChunkSize {
                size: self.chunk_size,
                min: MIN_CHUNK_SIZE,
                max: MAX_CHUNK_SIZE,
            });
        }
        if !self.min_block.is_power_of_two()
            || self.min_block < MIN_BLOCK
            || self.min_block > MAX_MIN_BLOCK
        {
            return Err(Error::InvalidMinBlock {
                size: self.min_block,
                min: MIN_BLOCK,
                max: MAX_MIN_BLOCK,
            });
        }
        if !self.alignment.is_power_of_two()
            || self.alignment < MIN_BLOCK
            || self.alignment > self.chunk_size
        {
            return Err(Error::InvalidAlignment {
                align: self.alignment,
                chunk_size: self.chunk_size,
            });
        }
        Ok(())
    }
}

/// How many bytes of live blocks a client may hold (block sizes as
/// [`Client::size_of`](crate::Client::size_of) reports them).
///
/// # Examples
/// ```
/// use memvisor_arena::Quota;
///
/// assert_eq!(Quota::UNLIMITED.limit(), None);
/// assert_eq!(Quota::bytes(1 << 20).limit(), Some(1 << 20));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quota(Option<usize>);

impl Quota {
    /// No limit but the arena's size.
    pub const UNLIMITED: Self = Self(None);

    /// At most `limit` bytes of live blocks.
    #[must_use]
    pub const fn bytes(limit: usize) -> Self {
        Self(Some(limit))
    }

    /// The limit in bytes, `None` if unlimited.
    #[must_use]
    pub const fn limit(self) -> Option<usize> {
        self.0
    }
}

impl From<usize> for Quota {
    fn from(limit: usize) -> Self {
        Self::bytes(limit)
    }
}

#[cfg(test)]
mod tests {
    use alloc::format;

    use super::*;

    #[test]
    fn validate_defaults_ok() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn validate_bad_chunk_size_errors() {
        for size in [0, 3 << 16, MIN_CHUNK_SIZE / 2, MAX_CHUNK_SIZE * 2] {
            assert_eq!(
                Config::new().with_chunk_size(size).validate(),
                Err(Error::InvalidChunkSize {
                    size,
                    min: MIN_CHUNK_SIZE,
                    max: MAX_CHUNK_SIZE
                })
            );
        }
    }

    #[test]
    fn validate_bad_min_block_errors() {
        for size in [0, 8, 24, 512] {
            assert!(matches!(
                Config::new().with_min_block(size).validate(),
                Err(Error::InvalidMinBlock { size: s, .. }) if s == size
            ));
        }
    }

    #[test]
    fn validate_bad_alignment_errors() {
        for align in [0, 8, 48, 2 << 20] {
            assert!(matches!(
                Config::new().with_alignment(align).validate(),
                Err(Error::InvalidAlignment { align: a, .. }) if a == align
            ));
        }
    }

    #[test]
    fn flags_ops_combine_and_print() {
        let f = Flags::ZERO | Flags::GUARD;
        assert!(f.contains(Flags::GUARD));
        assert_eq!(f & Flags::GUARD, Flags::GUARD);
        assert_eq!(!Flags::all(), Flags::empty());
        assert!(Flags::empty().is_empty());
        assert_eq!(Flags::from_bits_truncate(u32::MAX), Flags::all());
        assert_eq!(format!("{:?}", Flags::empty()), "Flags()");
        assert_eq!(
            format!("{:?}", Flags::all()),
            "Flags(ZERO | DECOMMIT | GUARD | POISON | STATISTICS)"
        );
    }
}
