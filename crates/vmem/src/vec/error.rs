//! The errors of the vectors: [`Error`] for every failure, [`PushError`] when a value that could
//! not be stored is handed back.

use core::fmt;

/// Everything that can go wrong creating or growing a vector. Each variant carries the values
/// that caused it; the reservation's error of [`Error::Reserve`], [`Error::Commit`] and
/// [`Error::Decommit`] is their [`source`](core::error::Error::source), not part of their
/// `Display`, so a reporter that prints the chain of sources says it once. A failed operation
/// leaves the vector as it was (for a [`ConcurrentVec`](super::ConcurrentVec), see its `try_push`
/// for the one exception).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The vector holds its maximum number of elements, fixed when it was created.
    #[error("vector is full: {requested} elements needed, capacity is {capacity}")]
    CapacityExceeded {
        /// The maximum number of elements.
        capacity: usize,
        /// The number of elements the operation needed room for.
        requested: usize,
    },
    /// The memory for `capacity` elements of `element_size` bytes (with the bookkeeping next to
    /// them) does not fit in the address space: it exceeds `isize::MAX` bytes, the most a slice
    /// may span.
    #[error("{capacity} elements of {element_size} bytes do not fit in the address space")]
    TooLarge {
        /// The requested maximum number of elements.
        capacity: usize,
        /// `size_of` the element type.
        element_size: usize,
    },
    /// The growth policy's least step is larger than its greatest.
    #[error("growth step minimum {min:#x} exceeds its maximum {max:#x}")]
    InvalidGrowth {
        /// The least number of bytes committed at a time.
        min: usize,
        /// The greatest number of bytes committed at a time.
        max: usize,
    },
    /// The requested alignment is not a power of two.
    #[error("alignment {align:#x} is not a power of two")]
    InvalidAlignment {
        /// The offending alignment.
        align: usize,
    },
    /// The slots a thread claims at a time
    /// ([`Builder::thread_block`](super::Builder::thread_block)) are not between 1 and 512
    /// (256 where `usize` has 32 bits: eight words of ready bits).
    #[error(
        "a thread block of {slots} slots is not between 1 and {}",
        super::concurrent::MAX_BLOCK
    )]
    InvalidThreadBlock {
        /// The offending number of slots.
        slots: usize,
    },
    /// Reserving the address space failed (bad alignment, or the system refused).
    #[error("reserving {len:#x} bytes failed")]
    Reserve {
        /// The number of bytes asked for.
        len: usize,
        /// What the reservation reported.
        #[source]
        source: crate::Error,
    },
    /// Committing memory for more elements failed (typically the system's commit limit).
    #[error("committing {len:#x} bytes at offset {offset:#x} failed")]
    Commit {
        /// Offset of the range in the reservation.
        offset: usize,
        /// Length of the range.
        len: usize,
        /// What the reservation reported.
        #[source]
        source: crate::Error,
    },
    /// Decommitting memory failed; the elements are unchanged (for the memory see
    /// [`Vec::shrink_to`](super::Vec::shrink_to)).
    #[error("decommitting {len:#x} bytes at offset {offset:#x} failed")]
    Decommit {
        /// Offset of the range in the reservation.
        offset: usize,
        /// Length of the range.
        len: usize,
        /// What the reservation reported.
        #[source]
        source: crate::Error,
    },
    /// An index or range end lies past the vector's length.
    #[error("index {index} is out of range for a vector of length {len}")]
    OutOfRange {
        /// The offending index (or range end).
        index: usize,
        /// The vector's length.
        len: usize,
    },
}

/// The result type of the vectors.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// A value that could not be pushed, handed back with the reason. It displays as
/// "value not pushed"; the reason is its [`source`](core::error::Error::source).
///
/// # Examples
/// ```
/// use memvisor_vmem::vec::{Error, Vec};
///
/// let mut v = Vec::with_capacity(1)?;
/// v.try_push(String::from("kept"))?;
/// let err = v.try_push(String::from("returned")).unwrap_err();
/// assert_eq!(err.error(), &Error::CapacityExceeded { capacity: 1, requested: 2 });
/// assert_eq!(err.into_value(), "returned");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PushError<T> {
    value: T,
    error: Error,
}

impl<T> PushError<T> {
    pub(crate) fn new(value: T, error: Error) -> Self {
        Self { value, error }
    }

    /// Why the value was not stored.
    #[must_use]
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The value that was not stored.
    #[must_use]
    pub fn into_value(self) -> T {
        self.value
    }

    /// The value and the reason.
    #[must_use]
    pub fn into_parts(self) -> (T, Error) {
        (self.value, self.error)
    }
}

impl<T> fmt::Debug for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("value not pushed")
    }
}

impl<T> core::error::Error for PushError<T> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<T> From<PushError<T>> for Error {
    fn from(e: PushError<T>) -> Self {
        e.error
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn display_capacity_exceeded_names_values() {
        let e = Error::CapacityExceeded {
            capacity: 4,
            requested: 5,
        };
        assert_eq!(
            e.to_string(),
            "vector is full: 5 elements needed, capacity is 4"
        );
    }

    #[test]
    fn display_other_variants_name_values() {
        assert_eq!(
            Error::OutOfRange { index: 5, len: 3 }.to_string(),
            "index 5 is out of range for a vector of length 3"
        );
        assert_eq!(
            Error::TooLarge {
                capacity: usize::MAX,
                element_size: 16
            }
            .to_string(),
            alloc::format!(
                "{} elements of 16 bytes do not fit in the address space",
                usize::MAX
            )
        );
        assert_eq!(
            Error::InvalidGrowth {
                min: 0x2000,
                max: 0x1000
            }
            .to_string(),
            "growth step minimum 0x2000 exceeds its maximum 0x1000"
        );
        assert_eq!(
            Error::InvalidAlignment { align: 3 }.to_string(),
            "alignment 0x3 is not a power of two"
        );
        assert_eq!(
            Error::Reserve {
                len: 0x1000,
                source: crate::Error::InvalidAlignment { align: 3 }
            }
            .to_string(),
            "reserving 0x1000 bytes failed"
        );
        assert_eq!(
            Error::Commit {
                offset: 0x1000,
                len: 0x2000,
                source: crate::Error::ZeroLength
            }
            .to_string(),
            "committing 0x2000 bytes at offset 0x1000 failed"
        );
        assert_eq!(
            Error::Decommit {
                offset: 0,
                len: 0x1000,
                source: crate::Error::ZeroLength
            }
            .to_string(),
            "decommitting 0x1000 bytes at offset 0x0 failed"
        );
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
    fn error_chain_says_each_cause_once() {
        let os = crate::Error::Os {
            operation: crate::Operation::Commit,
            source: crate::OsError::from_raw(12),
        };
        let os_text = crate::OsError::from_raw(12).to_string();
        let errors = [
            Error::Reserve {
                len: 0x1000,
                source: os.clone(),
            },
            Error::Commit {
                offset: 0,
                len: 0x1000,
                source: os.clone(),
            },
            Error::Decommit {
                offset: 0,
                len: 0x1000,
                source: os,
            },
        ];
        for e in &errors {
            let text = chain(e);
            assert_eq!(text.matches("commit failed").count(), 1, "{text}");
            assert_eq!(text.matches(os_text.as_str()).count(), 1, "{text}");
        }
        let pushed = PushError::new(
            (),
            Error::Commit {
                offset: 0,
                len: 0x1000,
                source: crate::Error::ZeroLength,
            },
        );
        let text = chain(&pushed);
        assert_eq!(text.matches("length is zero").count(), 1, "{text}");
        assert_eq!(text.matches("committing").count(), 1, "{text}");
    }

    #[test]
    fn push_error_display_and_source_name_the_reason() {
        use core::error::Error as _;
        let e = PushError::new(
            7u8,
            Error::CapacityExceeded {
                capacity: 1,
                requested: 2,
            },
        );
        assert_eq!(e.to_string(), "value not pushed");
        assert!(e.source().is_some());
        assert!(alloc::format!("{e:?}").contains("CapacityExceeded"));
        assert_eq!(e.into_parts().0, 7);
    }
}
