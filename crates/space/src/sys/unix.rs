//! Mapping on Unix systems (Linux, macOS, FreeBSD): every backing source is mapped over a
//! `memvisor-vmem` reservation with `Reservation::map_unchecked`; vm-memory's mappings carry
//! `PROT_*` bits, say whether they are on hugetlbfs, and can be made over memory this crate
//! mapped.

use std::fs::{File, FileType, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use memvisor_vmem::{HugeTlbSize, MapSource, Reservation};
use vm_memory::{FileOffset, MmapRegion};

use super::Source;
use crate::spec::Protection;

/// Maps `source` over `offset..offset + len` of `reservation` with `protection`, with explicit
/// huge pages of `huge` if given.
///
/// # Errors
/// As `Reservation::map`.
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
    let source = match source {
        Source::AnonymousPrivate => MapSource::AnonymousPrivate,
        Source::AnonymousShared => MapSource::AnonymousShared,
        Source::File(file) => MapSource::file(file.file().as_fd(), file.start()),
    };
    // SAFETY: the caller's promise.
    unsafe { reservation.map_unchecked(offset, len, source, protection, huge) }
}

/// The `PROT_*` bits of a protection.
pub(crate) fn prot_bits(p: Protection) -> libc::c_int {
    let mut bits = libc::PROT_NONE;
    if p.readable() {
        bits |= libc::PROT_READ;
    }
    if p.writable() {
        bits |= libc::PROT_WRITE;
    }
    if p.executable() {
        bits |= libc::PROT_EXEC;
    }
    bits
}

/// The protection of `PROT_*` bits (other bits ignored), if there is one: write or execute
/// rights without read have none.
pub(crate) fn protection_of(bits: libc::c_int) -> Option<Protection> {
    let has = |bit: libc::c_int| bits & bit != 0;
    match (
        has(libc::PROT_READ),
        has(libc::PROT_WRITE),
        has(libc::PROT_EXEC),
    ) {
        (false, false, false) => Some(Protection::None),
        (true, false, false) => Some(Protection::Read),
        (true, true, false) => Some(Protection::ReadWrite),
        (true, false, true) => Some(Protection::ReadExecute),
        (true, true, true) => Some(Protection::ReadWriteExecute),
        (false, _, _) => None,
    }
}

/// The protection of a vm-memory mapping, if there is one (see [`protection_of`]).
pub(crate) fn mapping_protection(mapping: &MmapRegion<()>) -> Option<Protection> {
    protection_of(mapping.prot())
}

/// Whether a vm-memory mapping is on hugetlbfs, if it says.
pub(crate) fn mapping_hugetlb(mapping: &MmapRegion<()>) -> Option<bool> {
    mapping.is_hugetlbfs()
}

/// A vm-memory mapping over `ptr..ptr + len` that does not own it, with `protection`, marked
/// as on hugetlbfs if `hugetlbfs`, and keeping `file` as its file and offset.
///
/// # Errors
/// vm-memory's refusal, as an `io::Error`.
///
/// # Safety
/// `ptr..ptr + len` is a live mapping with `protection` that outlives the result and every
/// slice taken from it.
pub(crate) unsafe fn mmap_region(
    ptr: *mut u8,
    len: usize,
    protection: Protection,
    hugetlbfs: bool,
    file: Option<&FileOffset>,
) -> io::Result<MmapRegion<()>> {
    // SAFETY: the caller's promise.
    let mut builder =
        unsafe { vm_memory::mmap::MmapRegionBuilder::new(len).with_raw_mmap_pointer(ptr) }
            .with_mmap_prot(prot_bits(protection))
            .with_hugetlbfs(hugetlbfs);
    if let Some(file) = file {
        builder = builder.with_file_offset(file.clone());
    }
    builder.build().map_err(|e| io::Error::other(e.to_string()))
}

/// Opens the file of a [`Backing::File`](crate::Backing::File), for writing too if `writable`,
/// and refuses anything but a regular file (`InvalidInput`, naming what it is: a FIFO, a
/// socket, a block or character device, a directory).
///
/// The open never waits: a FIFO opened for reading waits for a writer, and a device may wait
/// for its hardware, so it is opened with `O_NONBLOCK` (and `O_NOCTTY`, so a terminal never
/// becomes the process's controlling one). What the path names is checked before the open, so
/// a device is not opened at all, and again on the opened file (`fstat`), so a path replaced
/// in between is judged by what was opened. `O_NONBLOCK` changes nothing for a regular file's
/// mapping.
///
/// # Errors
/// As `stat(2)`, `open(2)` and `fstat(2)`, or `InvalidInput` for anything but a regular file.
pub(crate) fn open_backing_file(path: &Path, writable: bool) -> io::Result<File> {
    regular(&std::fs::metadata(path)?.file_type())?;
    let file = OpenOptions::new()
        .read(true)
        .write(writable)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    regular(&file.metadata()?.file_type())?;
    Ok(file)
}

/// `Ok` for a regular file, else `InvalidInput` naming what it is.
fn regular(kind: &FileType) -> io::Result<()> {
    if kind.is_file() {
        return Ok(());
    }
    let what = if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_char_device() {
        "a character device"
    } else {
        "another kind of file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("not a regular file ({what})"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prot_bits_and_protection_round_trip() {
        for p in [
            Protection::None,
            Protection::Read,
            Protection::ReadWrite,
            Protection::ReadExecute,
            Protection::ReadWriteExecute,
        ] {
            assert_eq!(protection_of(prot_bits(p)), Some(p));
        }
        assert_eq!(protection_of(libc::PROT_WRITE), None);
        assert_eq!(protection_of(libc::PROT_EXEC), None);
    }
}
