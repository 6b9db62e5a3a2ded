//! Mapping on Windows: `memvisor-vmem` cannot map another source over part of a reservation
//! there, so private anonymous memory is the reservation's own pages, committed (and given the
//! region's protection); shared anonymous memory and files are refused. vm-memory's Windows
//! mappings are always read-write, never on hugetlbfs, and cannot be made over memory this
//! crate mapped.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use memvisor_vmem::{HugeTlbSize, Operation, Reservation};
use vm_memory::{FileOffset, MmapRegion};

use super::Source;
use crate::spec::Protection;

/// Gives `offset..offset + len` of `reservation` fresh private anonymous memory with
/// `protection`: the reservation's own pages, committed. Any other source, and explicit huge
/// pages, are `memvisor_vmem::Error::Unsupported`.
///
/// # Errors
/// As `Reservation::commit` and `Reservation::protect`.
///
/// # Safety
/// As `Reservation::map_unchecked`: nothing refers to the range's contents.
pub(crate) unsafe fn map(
    reservation: &Reservation,
    offset: usize,
    len: usize,
    source: Source<'_>,
    protection: Protection,
    huge: Option<HugeTlbSize>,
) -> memvisor_vmem::Result<()> {
    if !matches!(source, Source::AnonymousPrivate) || huge.is_some() {
        return Err(memvisor_vmem::Error::Unsupported {
            operation: Operation::Map,
        });
    }
    reservation.commit(offset, len)?;
    if protection != Protection::ReadWrite {
        // SAFETY: the caller's promise: nothing refers to the fresh pages.
        unsafe { reservation.protect_unchecked(offset, len, protection) }?;
    }
    Ok(())
}

/// The protection of a vm-memory mapping: on Windows vm-memory maps read-write only.
pub(crate) fn mapping_protection(_: &MmapRegion<()>) -> Option<Protection> {
    Some(Protection::ReadWrite)
}

/// Whether a vm-memory mapping is on hugetlbfs: never on Windows.
pub(crate) fn mapping_hugetlb(_: &MmapRegion<()>) -> Option<bool> {
    Some(false)
}

/// vm-memory's Windows mappings own their memory (they free it when dropped), so none can be
/// made over memory this crate mapped: always an error.
///
/// # Errors
/// Always, `io::ErrorKind::Unsupported`.
///
/// # Safety
/// None needed; the signature matches the Unix one.
pub(crate) unsafe fn mmap_region(
    _: *mut u8,
    _: usize,
    _: Protection,
    _: bool,
    _: Option<&FileOffset>,
) -> io::Result<MmapRegion<()>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "vm-memory cannot map memory it does not own on Windows",
    ))
}

/// Opens the file of a [`Backing::File`](crate::Backing::File), for writing too if `writable`,
/// and refuses anything but a regular file (`InvalidInput`). (File backings are refused on
/// Windows before any file is opened; this keeps the one way of opening them.)
///
/// # Errors
/// As `CreateFileW`, or `InvalidInput` for a directory or anything else that is not a file.
pub(crate) fn open_backing_file(path: &Path, writable: bool) -> io::Result<File> {
    let file = OpenOptions::new().read(true).write(writable).open(path)?;
    if file.metadata()?.file_type().is_file() {
        Ok(file)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ))
    }
}
