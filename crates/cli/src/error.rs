//! The errors of the command: spec mistakes (exit code 2) and runtime failures (exit code 1).

use std::{fmt, io};

use crate::size::{Size, SizeError};
use crate::spec::DeviceType;

/// What is wrong with a spec field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The TOML could not be read into a spec: syntax, a wrong value type, an unknown or
    /// missing field (the parser's message).
    #[error("{0}")]
    Toml(String),
    /// A size that cannot be read (bad number, bad unit, too large).
    #[error(transparent)]
    BadSize(SizeError),
    /// A device type this tool does not know.
    #[error("unknown device type `{found}` (known: {known})", known = known_device_types())]
    UnknownDeviceType {
        /// The type written.
        found: String,
    },
    /// A value outside the allowed set.
    #[error("unknown value `{found}` (expected one of: {expected})")]
    UnknownValue {
        /// The value written.
        found: String,
        /// The values allowed.
        expected: &'static str,
    },
    /// Two things claim the same addresses, ports or interrupt.
    #[error("{what} overlaps {other}")]
    Overlap {
        /// The thing being placed and its range.
        what: String,
        /// What already holds it.
        other: String,
    },
    /// Something does not fit in the window it must sit in.
    #[error("{what} of {size} does not fit in {window}")]
    TooBig {
        /// The thing being placed.
        what: String,
        /// Its size.
        size: Size,
        /// The window (and what is free in it).
        window: String,
    },
    /// Values that contradict each other or are out of range.
    #[error("{0}")]
    Invalid(String),
    /// The address-space library refused the plan.
    #[error(transparent)]
    Space(memvisor_space::Error),
}

fn known_device_types() -> String {
    DeviceType::ALL
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A mistake in a spec: where (file, line, column, field) and what.
#[derive(Debug)]
pub struct SpecError {
    /// The spec's file name (or `<default>`).
    pub origin: String,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// The field path, such as `device[2].address`; empty when the mistake is in the TOML
    /// syntax itself.
    pub field: String,
    /// What is wrong.
    pub problem: Box<Problem>,
    /// The source line it points at, when it has a position.
    pub excerpt: Option<Box<crate::diagnostic::Excerpt>>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(
                f,
                "{}:{line}:{column}: ",
                crate::render::escape(&self.origin)
            )?,
            None => write!(f, "{}: ", crate::render::escape(&self.origin))?,
        }
        // A long field (an unknown key as written) or value quoted in the problem is shown in
        // part.
        if !self.field.is_empty() {
            write!(f, "{}: ", crate::render::clip_field(&self.field))?;
        }
        f.write_str(&crate::render::clip_quoted(&self.problem.to_string()))
    }
}

impl std::error::Error for SpecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.problem)
    }
}

/// Everything the command can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The spec is wrong (exit code 2).
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The spec file could not be read (exit code 2).
    #[error("cannot read {}", crate::render::escape(&crate::render::clip_path(.path)))]
    ReadSpec {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The spec is longer than the limit (exit code 2).
    #[error(
        "{} is larger than {limit} bytes, the most a spec may hold",
        crate::render::escape(&crate::render::clip_path(.path))
    )]
    SpecTooLarge {
        /// The file.
        path: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// The spec is not UTF-8 text (exit code 2).
    #[error(
        "{} is not UTF-8 text (bad byte at offset {offset})",
        crate::render::escape(&crate::render::clip_path(.path))
    )]
    SpecNotUtf8 {
        /// The file.
        path: String,
        /// The first byte that is not UTF-8.
        offset: usize,
    },
    /// Another VMM's configuration could not be read as a spec (exit code 2).
    #[error(
        "{}: {}",
        crate::render::escape(.origin),
        crate::render::escape(&crate::render::clip_quoted(.message))
    )]
    Import {
        /// The file or option it came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// The kernel command line was asked for a guest that does not use it, or another usage
    /// mistake found after the arguments were parsed (exit code 2).
    #[error("{}", crate::render::clip_quoted(.0))]
    Usage(String),
    /// Making or changing host memory failed (exit code 1); everything made before was
    /// released.
    #[error("{step} failed; everything created was released")]
    Back {
        /// The step that failed.
        step: String,
        /// Why.
        #[source]
        source: memvisor_space::Error,
    },
    /// `memvisor check` found problems that make backing the spec fail on this host (exit
    /// code 1).
    #[error(
        "this host cannot back the spec as written: {problems} problem(s), each with its fix in the report"
    )]
    HostCannotBack {
        /// How many checks failed.
        problems: usize,
    },
    /// `back` would make more memory resident by prefaulting it than the host has available
    /// (`MemAvailable` and `SwapFree` together), which would have the kernel kill a process
    /// for memory: nothing was made (exit code 1).
    #[error(
        "back would make {} resident by prefaulting it, and this host has {} available \
         (MemAvailable and SwapFree); nothing was made (prefault = 0, a smaller spec, or \
         --scale N)",
        crate::size::Size(*.resident),
        crate::size::approx(*.available)
    )]
    PrefaultTooLarge {
        /// Bytes prefaulting would make resident.
        resident: u64,
        /// `MemAvailable` and `SwapFree` together, bytes.
        available: u64,
    },
    /// A `/proc` or `/sys` file holds more than the command reads of it (exit code 1).
    #[error(
        "{} is larger than {limit} bytes, the most read of it",
        crate::render::escape(&crate::render::clip_path(.path))
    )]
    HostFileTooLarge {
        /// The file.
        path: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The command found a mistake of its own, such as a converted spec that would not plan
    /// as its source does (exit code 1); nothing was written.
    #[error("internal error: {0}")]
    Internal(String),
    /// Writing the output failed (exit code 1).
    #[error("writing the output")]
    Output(#[source] io::Error),
}

impl Error {
    /// The process exit code: 2 for spec and usage mistakes, 1 for runtime failures.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Spec(_)
            | Error::ReadSpec { .. }
            | Error::SpecTooLarge { .. }
            | Error::SpecNotUtf8 { .. }
            | Error::Import { .. }
            | Error::Usage(_) => 2,
            Error::Back { .. }
            | Error::HostCannotBack { .. }
            | Error::PrefaultTooLarge { .. }
            | Error::HostFileTooLarge { .. }
            | Error::Internal(_)
            | Error::Output(_) => 1,
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_error_display_has_position_field_problem() {
        let e = SpecError {
            origin: "vm.toml".into(),
            position: Some((3, 8)),
            field: "device[1].type".into(),
            problem: Box::new(Problem::UnknownDeviceType {
                found: "virtio-gpu".into(),
            }),
            excerpt: None,
        };
        assert_eq!(
            e.to_string(),
            "vm.toml:3:8: device[1].type: unknown device type `virtio-gpu` (known: virtio-net, \
             virtio-blk, virtio-console, virtio-rng, virtio-balloon, virtio-vsock, virtio-fs, \
             virtio-pmem)"
        );
    }

    #[test]
    fn spec_error_without_position_omits_it() {
        let e = SpecError {
            origin: "<default>".into(),
            position: None,
            field: "memory".into(),
            problem: Box::new(Problem::TooBig {
                what: "RAM".into(),
                size: Size(8 << 30),
                window: "the RAM windows".into(),
            }),
            excerpt: None,
        };
        assert_eq!(
            e.to_string(),
            "<default>: memory: RAM of 8 GiB does not fit in the RAM windows"
        );
    }

    #[test]
    fn exit_codes_split_spec_and_runtime() {
        let spec = Error::ReadSpec {
            path: "x".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(spec.exit_code(), 2);
        assert_eq!(Error::Output(io::Error::other("x")).exit_code(), 1);
    }
}
