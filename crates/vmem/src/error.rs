//! The error type of every fallible operation in this crate.

use core::fmt;

/// An error code reported by the operating system (`errno` on Unix, `GetLastError` on
/// Windows), kept as the raw number so that it survives `no_std` builds.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OsError(i32);

impl OsError {
    /// Wraps a raw OS error code.
    #[must_use]
    pub const fn from_raw(code: i32) -> Self {
        Self(code)
    }

    /// The raw OS error code (`errno` on Unix, `GetLastError()` on Windows).
    #[must_use]
    pub const fn raw(self) -> i32 {
        self.0
    }
}

impl fmt::Debug for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OsError({})", self.0)
    }
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[cfg(feature = "std")]
        {
            write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
        }
        #[cfg(not(feature = "std"))]
        {
            write!(f, "OS error {}", self.0)
        }
    }
}

impl core::error::Error for OsError {}

#[cfg(feature = "std")]
impl From<OsError> for std::io::Error {
    fn from(e: OsError) -> Self {
        std::io::Error::from_raw_os_error(e.0)
    }
}

/// An operation of a [`Reservation`](crate::Reservation), named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Reserving address space.
    Reserve,
    /// Committing pages.
    Commit,
    /// Decommitting pages.
    Decommit,
    /// Changing page protection.
    Protect,
    /// Populating pages with memory.
    Prefault,
    /// Locking pages in memory.
    Lock,
    /// Unlocking pages.
    Unlock,
    /// Transparent-huge-page advice.
    HugePageAdvice,
    /// Installing guard pages.
    Guard,
    /// Removing guard pages.
    Unguard,
    /// Querying residency.
    Residency,
    /// Mapping a source into part of a reservation.
    Map,
    /// Setting a NUMA memory policy.
    BindNuma,
    /// Giving advice that keeps contents (fork and dump behaviour).
    Advise,
    /// Letting the system free pages lazily.
    Free,
    /// Discarding the contents of pages.
    Discard,
    /// Discarding the contents of pages and their backing.
    Purge,
    /// Populating pages for reading.
    PrefaultRead,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Reserve => "reserve",
            Operation::Commit => "commit",
            Operation::Decommit => "decommit",
            Operation::Protect => "protect",
            Operation::Prefault => "prefault",
            Operation::Lock => "lock",
            Operation::Unlock => "unlock",
            Operation::HugePageAdvice => "huge page advice",
            Operation::Guard => "guard",
            Operation::Unguard => "unguard",
            Operation::Residency => "residency query",
            Operation::Map => "map",
            Operation::BindNuma => "NUMA policy",
            Operation::Advise => "advice",
            Operation::Free => "free",
            Operation::Discard => "discard",
            Operation::Purge => "purge",
            Operation::PrefaultRead => "read prefault",
        })
    }
}

/// Everything that can go wrong in this crate. Every variant carries the values that caused
/// it; a failed operation leaves the reservation as it was, except where an [`Error::Os`]
/// failure of the operating system is documented otherwise.
///
/// A message never repeats its cause: the OS error of [`Error::Os`] and
/// [`Error::ThreadSpawn`] is their [`source`](core::error::Error::source), not part of their
/// `Display`, so a reporter that prints the chain of sources says it once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A length of zero was given where at least one page is needed.
    #[error("length is zero")]
    ZeroLength,
    /// An offset or length is not a multiple of the page size; or, where the range meets pages
    /// mapped with explicit huge pages, an end of the range cuts one (`page_size` is then the
    /// huge page size); or a mapping of explicit huge pages is not aligned to their size.
    #[error("{what} {value:#x} is not a multiple of the page size {page_size:#x}")]
    Misaligned {
        /// `"offset"`, `"length"`, `"end"` for the end
        /// of a range (`offset + length`) that falls inside an explicit huge page, or
        /// `"address"` for the start address of a mapping of explicit huge pages (`value` is
        /// the address).
        what: &'static str,
        /// The offending value.
        value: usize,
        /// The page size it must be a multiple of.
        page_size: usize,
    },
    /// The file offset of a file mapping is not a multiple of the page size the file is
    /// mapped in (the host's page size, or a hugetlbfs file's huge page size). A variant of
    /// its own, as a file offset is a `u64` whatever the width of `usize`: a 32-bit host
    /// names an offset past 4 GiB whole.
    #[error("file offset {file_offset:#x} is not a multiple of the page size {page_size:#x}")]
    FileOffsetMisaligned {
        /// The offending offset into the file.
        file_offset: u64,
        /// The page size it must be a multiple of.
        page_size: usize,
    },
    /// A range reaches past the end of the reservation.
    #[error(
        "range at offset {offset:#x} of length {len:#x} exceeds the reservation of {size:#x} bytes"
    )]
    OutOfBounds {
        /// Offset of the range.
        offset: usize,
        /// Length of the range.
        len: usize,
        /// Size of the reservation.
        size: usize,
    },
    /// Adding a length to an offset overflows `usize`.
    #[error("{value:#x} + {add:#x} overflows the address space")]
    Overflow {
        /// The base value.
        value: usize,
        /// What was added to it.
        add: usize,
    },
    /// A reservation of `len` bytes was asked for, more than the largest a reservation may
    /// span: `isize::MAX` bytes rounded down to whole pages (`limit`), the most a slice or a
    /// pointer range may cover. Refused before the system is asked, on every system.
    #[error("a reservation of {len:#x} bytes exceeds the largest of {limit:#x} bytes")]
    TooLarge {
        /// The length asked for.
        len: usize,
        /// The largest length a reservation may have.
        limit: usize,
    },
    /// An alignment is not a power of two.
    #[error("alignment {align:#x} is not a power of two")]
    InvalidAlignment {
        /// The offending alignment.
        align: usize,
    },
    /// The operation needs committed pages and the page at `offset` is not committed.
    #[error("page at offset {offset:#x} is not committed")]
    NotCommitted {
        /// Offset of the first page that is not committed.
        offset: usize,
    },
    /// The operation needs read-write pages and the page at `offset` is protected.
    #[error("page at offset {offset:#x} is not read-write")]
    NotWritable {
        /// Offset of the first page that is not read-write.
        offset: usize,
    },
    /// The operation needs readable pages
    /// ([`Reservation::prefault_read`](crate::Reservation::prefault_read),
    /// [`Reservation::lock`](crate::Reservation::lock)) and the page at `offset` is
    /// inaccessible.
    #[error("page at offset {offset:#x} is not readable")]
    NotReadable {
        /// Offset of the first page that is not readable.
        offset: usize,
    },
    /// A NUMA node number is past the largest this crate passes to the system.
    #[error("NUMA node {node} is out of range (nodes are below {limit})")]
    NumaNode {
        /// The offending node.
        node: u32,
        /// The first node number that is not accepted.
        limit: u32,
    },
    /// [`Reservation::bind_numa`](crate::Reservation::bind_numa) was given a node set that
    /// does not fit its policy: nodes for [`NumaPolicy::Default`](crate::NumaPolicy::Default),
    /// which takes none, or none for [`NumaPolicy::Bind`](crate::NumaPolicy::Bind) or
    /// [`NumaPolicy::Interleave`](crate::NumaPolicy::Interleave), which need at least one.
    #[error("NUMA policy {policy:?} does not take a set of {nodes} nodes")]
    NumaPolicyNodes {
        /// The policy.
        policy: crate::NumaPolicy,
        /// How many node numbers were given.
        nodes: usize,
    },
    /// The operation needs guard pages and the page at `offset` is not one.
    #[error("page at offset {offset:#x} is not a guard page")]
    NotGuarded {
        /// Offset of the first page that is not a guard page.
        offset: usize,
    },
    /// The page at `offset` was taken by the system and not given back: a
    /// [`map`](crate::Reservation::map) (of explicit huge pages, say) or the fresh mapping of
    /// a [`decommit`](crate::Reservation::decommit) was refused after the system had unmapped
    /// the old pages, and putting the reservation's own pages back was refused too (or the
    /// page was still mapped next to pages the system had unmapped: it cannot be told from a
    /// mapping another thread placed in the hole). Another mapping may lie there now, so no
    /// call touches the page again, and dropping the reservation leaves it alone.
    #[error("page at offset {offset:#x} was lost to the system (a refused mapping took it)")]
    Lost {
        /// Offset of the first lost page in the range.
        offset: usize,
    },
    /// The page at `offset` is a guard page; it must be unguarded first.
    #[error("page at offset {offset:#x} is a guard page")]
    Guarded {
        /// Offset of the first guard page in the range.
        offset: usize,
    },
    /// The page at `offset` is locked ([`Reservation::lock`](crate::Reservation::lock)); the
    /// operation would drop its contents, which the system refuses for locked pages.
    #[error("page at offset {offset:#x} is locked")]
    Locked {
        /// Offset of the first locked page in the range.
        offset: usize,
    },
    /// A [`map`](crate::Reservation::map) of a regular file (a memfd included) would reach
    /// past the end of the file, where every access faults (`SIGBUS`) instead of reading.
    #[error(
        "mapping {len:#x} bytes from file offset {file_offset:#x} reaches past the end of the \
         file of {file_len:#x} bytes"
    )]
    PastEndOfFile {
        /// The file offset of the range's first byte.
        file_offset: u64,
        /// Length of the range.
        len: usize,
        /// The file's length.
        file_len: u64,
    },
    /// The page at `offset` is of a shared source ([`MapSource`](crate::MapSource)) and the
    /// operation works on private memory only.
    #[error("page at offset {offset:#x} is of a shared source")]
    Shared {
        /// Offset of the first such page in the range.
        offset: usize,
    },
    /// The page at `offset` is of a file source whose backing the system will not punch holes
    /// in (its descriptor was not open for writing, or the file is sealed against writes), and
    /// [`Reservation::purge`](crate::Reservation::purge) would drop the range's other pages
    /// before the system refused it.
    #[error("page at offset {offset:#x} is of a file source that refuses hole punching")]
    ReadOnlySource {
        /// Offset of the first such page in the range.
        offset: usize,
    },
    /// The page at `offset` is an explicit huge page ([`map`](crate::Reservation::map) with a
    /// [`HugeTlbSize`](crate::HugeTlbSize), or a hugetlbfs file), which the operation cannot
    /// act on ([`Reservation::free`](crate::Reservation::free): Linux has no lazy freeing of
    /// them).
    #[error("page at offset {offset:#x} is an explicit huge page, which {operation} cannot act on")]
    HugeTlb {
        /// Offset of the first such page in the range.
        offset: usize,
        /// The operation.
        operation: Operation,
    },
    /// The host's allocator refused the memory for an operation's answer (for
    /// [`Reservation::residency`](crate::Reservation::residency), a byte per page of the
    /// range).
    #[error("{operation} needs {bytes:#x} bytes of heap memory, which the allocator refused")]
    NoMemory {
        /// The operation.
        operation: Operation,
        /// The bytes it asked for.
        bytes: usize,
    },
    /// The reservation holds a vector ([`vec::Vec`](crate::vec::Vec) or
    /// [`vec::ConcurrentVec`](crate::vec::ConcurrentVec), reached through its `reservation()`),
    /// and the operation would discard, replace or protect memory the vector keeps its
    /// elements in: only the vector changes that memory. Nothing was changed.
    #[error("{operation} refused: the reservation holds a vector's elements")]
    HeldByVector {
        /// The operation.
        operation: Operation,
    },
    /// The platform cannot do this operation at all.
    #[error("{operation} is not supported on this platform")]
    Unsupported {
        /// The operation.
        operation: Operation,
    },
    /// A worker thread of a parallel operation could not be started; the threads started
    /// before it finished their parts.
    #[error("could not start worker thread {index} of a parallel prefault")]
    ThreadSpawn {
        /// Index of the worker that could not be started (the caller's thread is worker 0).
        index: usize,
        /// The OS error code (0 if the system gave none).
        #[source]
        source: OsError,
    },
    /// A worker thread of a parallel operation panicked while working on its part.
    #[error("worker thread for offset {offset:#x} length {len:#x} panicked")]
    WorkerPanicked {
        /// Offset of the worker's part.
        offset: usize,
        /// Length of the worker's part.
        len: usize,
    },
    /// The operating system refused the operation.
    #[error("{operation} failed")]
    Os {
        /// The operation.
        operation: Operation,
        /// The OS error code.
        #[source]
        source: OsError,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use alloc::format;
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn display_misaligned_names_values() {
        let e = Error::Misaligned {
            what: "offset",
            value: 0x1001,
            page_size: 0x1000,
        };
        assert_eq!(
            e.to_string(),
            "offset 0x1001 is not a multiple of the page size 0x1000"
        );
    }

    #[test]
    fn display_out_of_bounds_names_values() {
        let e = Error::OutOfBounds {
            offset: 0x2000,
            len: 0x1000,
            size: 0x2000,
        };
        assert_eq!(
            e.to_string(),
            "range at offset 0x2000 of length 0x1000 exceeds the reservation of 0x2000 bytes"
        );
    }

    #[test]
    fn display_other_variants() {
        assert_eq!(Error::ZeroLength.to_string(), "length is zero");
        assert_eq!(
            Error::Overflow {
                value: usize::MAX,
                add: 1
            }
            .to_string(),
            format!("{:#x} + 0x1 overflows the address space", usize::MAX)
        );
        assert_eq!(
            Error::TooLarge {
                len: 0x8000_0000,
                limit: 0x7fff_f000
            }
            .to_string(),
            "a reservation of 0x80000000 bytes exceeds the largest of 0x7ffff000 bytes"
        );
        assert_eq!(
            Error::InvalidAlignment { align: 3 }.to_string(),
            "alignment 0x3 is not a power of two"
        );
        assert_eq!(
            Error::NotCommitted { offset: 0x3000 }.to_string(),
            "page at offset 0x3000 is not committed"
        );
        assert_eq!(
            Error::NoMemory {
                operation: Operation::Residency,
                bytes: 1 << 30
            }
            .to_string(),
            "residency query needs 0x40000000 bytes of heap memory, which the allocator refused"
        );
        assert_eq!(
            Error::Lost { offset: 0x5000 }.to_string(),
            "page at offset 0x5000 was lost to the system (a refused mapping took it)"
        );
        assert_eq!(
            Error::Locked { offset: 0x6000 }.to_string(),
            "page at offset 0x6000 is locked"
        );
        assert_eq!(
            Error::Misaligned {
                what: "address",
                value: 0x7f00_1000,
                page_size: 0x20_0000
            }
            .to_string(),
            "address 0x7f001000 is not a multiple of the page size 0x200000"
        );
        assert_eq!(
            Error::FileOffsetMisaligned {
                file_offset: 0x1_0000_0001,
                page_size: 0x1000
            }
            .to_string(),
            "file offset 0x100000001 is not a multiple of the page size 0x1000"
        );
        assert_eq!(
            Error::Os {
                operation: Operation::Map,
                source: OsError::from_raw(22)
            }
            .to_string(),
            "map failed"
        );
        assert_eq!(
            Error::Guarded { offset: 0 }.to_string(),
            "page at offset 0x0 is a guard page"
        );
        assert_eq!(
            Error::HeldByVector {
                operation: Operation::Decommit
            }
            .to_string(),
            "decommit refused: the reservation holds a vector's elements"
        );
        assert_eq!(
            Error::NotGuarded { offset: 0x1000 }.to_string(),
            "page at offset 0x1000 is not a guard page"
        );
        assert_eq!(
            Error::NotWritable { offset: 0x2000 }.to_string(),
            "page at offset 0x2000 is not read-write"
        );
        assert_eq!(
            Error::NotReadable { offset: 0x1000 }.to_string(),
            "page at offset 0x1000 is not readable"
        );
        assert_eq!(
            Error::NumaNode {
                node: 5000,
                limit: 1024
            }
            .to_string(),
            "NUMA node 5000 is out of range (nodes are below 1024)"
        );
        assert_eq!(
            Error::NumaPolicyNodes {
                policy: crate::NumaPolicy::Bind,
                nodes: 0
            }
            .to_string(),
            "NUMA policy Bind does not take a set of 0 nodes"
        );
        assert_eq!(Operation::PrefaultRead.to_string(), "read prefault");
        assert_eq!(
            Error::PastEndOfFile {
                file_offset: 0x1000,
                len: 0x2000,
                file_len: 0x2000
            }
            .to_string(),
            "mapping 0x2000 bytes from file offset 0x1000 reaches past the end of the file of \
             0x2000 bytes"
        );
        assert_eq!(
            Error::Shared { offset: 0x3000 }.to_string(),
            "page at offset 0x3000 is of a shared source"
        );
        assert_eq!(
            Error::ReadOnlySource { offset: 0x4000 }.to_string(),
            "page at offset 0x4000 is of a file source that refuses hole punching"
        );
        assert_eq!(
            Error::WorkerPanicked {
                offset: 0x20_0000,
                len: 0x1000
            }
            .to_string(),
            "worker thread for offset 0x200000 length 0x1000 panicked"
        );
        assert_eq!(
            Error::ThreadSpawn {
                index: 2,
                source: OsError::from_raw(11)
            }
            .to_string(),
            "could not start worker thread 2 of a parallel prefault"
        );
        assert_eq!(
            Error::HugeTlb {
                offset: 0x20_0000,
                operation: Operation::Free
            }
            .to_string(),
            "page at offset 0x200000 is an explicit huge page, which free cannot act on"
        );
        assert_eq!(
            Error::Unsupported {
                operation: Operation::HugePageAdvice
            }
            .to_string(),
            "huge page advice is not supported on this platform"
        );
    }

    #[test]
    fn every_operation_has_its_own_name() {
        let names = [
            (Operation::Reserve, "reserve"),
            (Operation::Commit, "commit"),
            (Operation::Decommit, "decommit"),
            (Operation::Protect, "protect"),
            (Operation::Prefault, "prefault"),
            (Operation::Lock, "lock"),
            (Operation::Unlock, "unlock"),
            (Operation::HugePageAdvice, "huge page advice"),
            (Operation::Guard, "guard"),
            (Operation::Unguard, "unguard"),
            (Operation::Residency, "residency query"),
            (Operation::Map, "map"),
            (Operation::BindNuma, "NUMA policy"),
            (Operation::Advise, "advice"),
            (Operation::Free, "free"),
            (Operation::Discard, "discard"),
            (Operation::Purge, "purge"),
            (Operation::PrefaultRead, "read prefault"),
        ];
        for (operation, name) in names {
            assert_eq!(operation.to_string(), name);
            let others = names.iter().filter(|(_, other)| *other == name).count();
            assert_eq!(others, 1, "{name}");
        }
    }

    /// Every message joined with its sources, as error reporters print a chain.
    fn chain(e: &dyn core::error::Error) -> alloc::string::String {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    #[test]
    fn error_chain_says_the_os_error_once() {
        let os = OsError::from_raw(12).to_string();
        let errors = [
            Error::Os {
                operation: Operation::Decommit,
                source: OsError::from_raw(12),
            },
            Error::ThreadSpawn {
                index: 1,
                source: OsError::from_raw(12),
            },
        ];
        for e in &errors {
            let text = chain(e);
            assert_eq!(text.matches(os.as_str()).count(), 1, "{text}");
            assert!(text.ends_with(os.as_str()), "{text}");
        }
    }

    #[cfg(feature = "std")]
    #[test]
    fn os_error_keeps_code_and_source() {
        use core::error::Error as _;
        let e = Error::Os {
            operation: Operation::Commit,
            source: OsError::from_raw(12),
        };
        assert_eq!(e.to_string(), "commit failed");
        let source = e.source().expect("has a source");
        assert_eq!(
            source.to_string(),
            std::io::Error::from_raw_os_error(12).to_string()
        );
        let io: std::io::Error = OsError::from_raw(12).into();
        assert_eq!(io.raw_os_error(), Some(12));
    }
}
