//! The host operating system, in one layer: what it can do for a region's backing, and the
//! calls that differ between systems. Mappings, advice, NUMA binding and prefault go through
//! `memvisor-vmem` reservations; this layer adds memfds, file system checks, sysfs reads and
//! vm-memory's per-system mapping types.
//!
//! - `linux.rs`: Linux's host facts (memfd creation, hugetlbfs checks, NUMA nodes, huge page pools,
//!   transparent huge page settings); every [`Feature`] is there.
//! - `other.rs`: every other system: the Linux-only features are missing, their host facts answer
//!   "none".
//! - `unix.rs` / `windows.rs`: opening a backing file (a regular file only, never waiting on Unix),
//!   mapping a source into a reservation, and vm-memory's mapping type, which differ between Unix
//!   systems (Linux included) and Windows.

use vm_memory::FileOffset;

use crate::error::{Error, Result};

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;

#[cfg(not(target_os = "linux"))]
mod other;
#[cfg(not(target_os = "linux"))]
pub(crate) use other::*;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::*;

/// Where the host's transparent huge page setting for private anonymous memory is read (on
/// Linux).
pub(crate) const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
/// Where the host's transparent huge page setting for shared memory (memfd, shared anonymous
/// memory) is read (on Linux).
pub(crate) const THP_SHMEM_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";

/// What is mapped over part of a reservation.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Source<'a> {
    /// Fresh private anonymous memory.
    AnonymousPrivate,
    /// Fresh shared anonymous memory.
    AnonymousShared,
    /// An open file (a memfd, hugetlbfs file or backing file), mapped shared from its offset.
    /// (Windows refuses file sources without looking at the file.)
    File(#[cfg_attr(windows, allow(dead_code))] &'a FileOffset),
}

/// A backing feature that not every host system has. [`Feature::require`] refuses one this
/// host lacks with [`Error::Unsupported`] before anything is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Feature {
    /// [`Backing::Memfd`](crate::Backing::Memfd): `memfd_create`.
    Memfd,
    /// [`Backing::Hugetlbfs`](crate::Backing::Hugetlbfs).
    Hugetlbfs,
    /// Explicit huge pages (`MAP_HUGETLB`, `MFD_HUGETLB`).
    ExplicitHugePages,
    /// Transparent huge pages (`MADV_HUGEPAGE` and the sysfs settings).
    TransparentHugePages,
    /// NUMA binding (`mbind`) and the sysfs list of nodes.
    NumaBinding,
    /// Leaving memory out of forked children (`MADV_DONTFORK`).
    DontFork,
    /// Giving pages back to the host (`MADV_DONTNEED`, `MADV_REMOVE`).
    Discard,
    /// [`Backing::AnonymousShared`](crate::Backing::AnonymousShared): a shared anonymous
    /// mapping over a reservation.
    SharedAnonymous,
    /// [`Backing::File`](crate::Backing::File): a file mapped over a reservation.
    FileMapping,
    /// vm-memory mappings over this crate's memory (`to_guest_memory_mmap`), which need
    /// vm-memory's raw-pointer mappings.
    VmMemoryMapping,
}

impl Feature {
    /// What the feature is, for error messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Feature::Memfd => "memfd backing (memfd_create)",
            Feature::Hugetlbfs => "hugetlbfs backing",
            Feature::ExplicitHugePages => "explicit huge pages (MAP_HUGETLB)",
            Feature::TransparentHugePages => "transparent huge pages (MADV_HUGEPAGE)",
            Feature::NumaBinding => "NUMA binding (mbind)",
            Feature::DontFork => "dontfork (MADV_DONTFORK)",
            Feature::Discard => "discarding pages (MADV_DONTNEED, MADV_REMOVE)",
            Feature::SharedAnonymous => "shared anonymous backing (MAP_SHARED | MAP_ANONYMOUS)",
            Feature::FileMapping => "file backing (a shared mapping of the file)",
            Feature::VmMemoryMapping => "a vm-memory mapping over the region's memory",
        }
    }

    /// The systems that have the feature.
    pub(crate) fn hosts(self) -> &'static str {
        match self {
            Feature::SharedAnonymous | Feature::FileMapping | Feature::VmMemoryMapping => {
                "Unix systems (Linux, macOS, FreeBSD)"
            }
            _ => "Linux",
        }
    }

    /// `Ok` if this host has the feature, else [`Error::Unsupported`] for the region at
    /// `base`.
    pub(crate) fn require(self, base: u64) -> Result<()> {
        if has(self) {
            Ok(())
        } else {
            Err(self.unsupported(base))
        }
    }

    /// The error that says this host lacks the feature, for the region at `base`.
    pub(crate) fn unsupported(self, base: u64) -> Error {
        Error::Unsupported {
            feature: self.name(),
            base,
            only_on: self.hosts(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Feature; 10] = [
        Feature::Memfd,
        Feature::Hugetlbfs,
        Feature::ExplicitHugePages,
        Feature::TransparentHugePages,
        Feature::NumaBinding,
        Feature::DontFork,
        Feature::Discard,
        Feature::SharedAnonymous,
        Feature::FileMapping,
        Feature::VmMemoryMapping,
    ];

    #[test]
    fn unsupported_names_the_feature_and_where_it_is() {
        for feature in ALL {
            let e = feature.unsupported(0x1000);
            assert!(
                matches!(e, Error::Unsupported { feature: f, base: 0x1000, only_on }
                    if f == feature.name() && only_on == feature.hosts()),
                "{e:?}"
            );
            let text = e.to_string();
            assert!(
                text.starts_with(&format!(
                    "{} for the region at 0x1000 is only on ",
                    feature.name()
                )),
                "{text}"
            );
            assert!(
                text.ends_with(&format!("({})", std::env::consts::OS)),
                "{text}"
            );
        }
        assert_eq!(Feature::Memfd.hosts(), "Linux");
        assert_eq!(
            Feature::FileMapping.hosts(),
            "Unix systems (Linux, macOS, FreeBSD)"
        );
    }

    #[test]
    fn features_missing_here_are_refused_by_name() {
        for feature in ALL {
            match feature.require(0x1000) {
                Ok(()) => assert!(has(feature)),
                Err(e) => {
                    assert!(!has(feature));
                    let text = e.to_string();
                    assert!(text.contains(feature.name()), "{text}");
                    assert!(
                        text.contains(&format!("only on {}", feature.hosts())),
                        "{text}"
                    );
                    assert!(text.contains("0x1000"), "{text}");
                }
            }
            // Linux has every feature; the Linux-only ones are missing elsewhere.
            if cfg!(target_os = "linux") {
                assert!(has(feature), "{feature:?}");
            } else if feature.hosts() == "Linux" {
                assert!(!has(feature), "{feature:?}");
            } else {
                assert_eq!(has(feature), cfg!(unix), "{feature:?}");
            }
        }
    }
}
