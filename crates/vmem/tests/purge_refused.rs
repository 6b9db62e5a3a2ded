//! A purge over private pages and a file whose file system cannot punch holes (ramfs has no
//! `fallocate`, so `MADV_REMOVE` is refused with `EOPNOTSUPP`): the refusal drops nothing. The
//! ramfs is mounted for real, which needs the right to mount (root, as in CI); without it the
//! tests say so and check nothing.
#![cfg(all(target_os = "linux", feature = "std", not(miri)))]

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use memvisor_vmem::{CommitMode, Error, MapSource, Operation, OsError, Protection, Reservation};

fn page() -> usize {
    memvisor_vmem::page_size()
}

/// A ramfs mounted on a fresh directory, unmounted and removed on drop.
struct Ramfs {
    dir: PathBuf,
}

impl Ramfs {
    /// Mounts one, or `None` where this process may not mount (not root); as root a refusal
    /// fails the test.
    fn mount(name: &str) -> Option<Self> {
        let dir =
            std::env::temp_dir().join(format!("memvisor-vmem-ramfs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = CString::new(dir.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C strings; mounting a fresh ramfs on our own empty directory.
        let ret = unsafe {
            libc::mount(
                c"memvisor-vmem".as_ptr(),
                target.as_ptr(),
                c"ramfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if ret != 0 {
            let err = std::io::Error::last_os_error();
            std::fs::remove_dir(&dir).unwrap();
            // SAFETY: `geteuid` has no preconditions.
            let uid = unsafe { libc::geteuid() };
            assert_ne!(uid, 0, "root could not mount ramfs: {err}");
            eprintln!("not checked: this process may not mount a ramfs ({err})");
            return None;
        }
        Some(Self { dir })
    }

    /// A file of `len` bytes in it, open for reading and writing.
    fn file(&self, name: &str, len: usize) -> File {
        file_at(&self.dir.join(name), len)
    }
}

impl Drop for Ramfs {
    fn drop(&mut self) {
        let target = CString::new(self.dir.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string naming the mount made above.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn file_at(path: &Path, len: usize) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    file.set_len(len as u64).unwrap();
    file
}

/// Whether the `len` bytes at `offset` of `r` all read `byte`.
fn reads(r: &Reservation, offset: usize, len: usize, byte: u8) -> bool {
    // SAFETY: the callers pass committed, readable ranges of `r`.
    unsafe { std::slice::from_raw_parts(r.as_ptr().add(offset), len) }
        .iter()
        .all(|&b| b == byte)
}

#[test]
fn purge_over_a_file_that_cannot_punch_holes_drops_no_private_page() {
    let Some(ramfs) = Ramfs::mount("private") else {
        return;
    };
    let file = ramfs.file("backing", 2 * page());
    for mode in [CommitMode::Protected, CommitMode::Sparse] {
        let mut r = Reservation::builder()
            .mode(mode)
            .reserve(6 * page())
            .unwrap();
        // Private pages before and after the file's.
        r.commit(0, 2 * page()).unwrap();
        r.map(
            2 * page(),
            2 * page(),
            MapSource::file(file.as_fd(), 0),
            Protection::ReadWrite,
            None,
        )
        .unwrap();
        r.map(
            4 * page(),
            2 * page(),
            MapSource::AnonymousPrivate,
            Protection::ReadWrite,
            None,
        )
        .unwrap();
        // SAFETY: all six pages are committed read-write; nothing else uses them.
        unsafe { r.as_ptr().write_bytes(3, 6 * page()) };
        let committed = r.committed_bytes();
        assert_eq!(
            r.purge(0, 6 * page()).unwrap_err(),
            Error::Os {
                operation: Operation::Purge,
                source: OsError::from_raw(libc::EOPNOTSUPP),
            },
            "{mode:?}"
        );
        assert!(reads(&r, 0, 6 * page(), 3), "{mode:?}: a page was dropped");
        assert_eq!(r.committed_bytes(), committed, "{mode:?}");
        // Discarding does not punch holes: the private pages read zero, the file's keep
        // their contents.
        r.discard(0, 6 * page()).unwrap();
        assert!(reads(&r, 0, 2 * page(), 0), "{mode:?}");
        assert!(reads(&r, 2 * page(), 2 * page(), 3), "{mode:?}");
        assert!(reads(&r, 4 * page(), 2 * page(), 0), "{mode:?}");
    }
}

#[test]
fn purge_refused_after_another_shared_source_drops_no_private_page() {
    let Some(ramfs) = Ramfs::mount("shared") else {
        return;
    };
    let refusing = ramfs.file("backing", page());
    // SAFETY: a valid C string; no other preconditions.
    let fd = unsafe { libc::memfd_create(c"memvisor-vmem-purge".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor owned by nobody else.
    let punchable = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    punchable.set_len(page() as u64).unwrap();
    let mut r = Reservation::new(4 * page()).unwrap();
    r.commit(0, page()).unwrap();
    let sources = [
        (page(), MapSource::file(punchable.as_fd(), 0)),
        (2 * page(), MapSource::file(refusing.as_fd(), 0)),
        (3 * page(), MapSource::AnonymousPrivate),
    ];
    for (offset, source) in sources {
        r.map(offset, page(), source, Protection::ReadWrite, None)
            .unwrap();
    }
    // SAFETY: all four pages are committed read-write; nothing else uses them.
    unsafe { r.as_ptr().write_bytes(5, 4 * page()) };
    assert_eq!(
        r.purge(0, 4 * page()).unwrap_err(),
        Error::Os {
            operation: Operation::Purge,
            source: OsError::from_raw(libc::EOPNOTSUPP),
        }
    );
    // The private pages and the refusing file keep their contents; only the shared source
    // before the refused one may have been punched (as documented on `purge`).
    assert!(reads(&r, 0, page(), 5));
    assert!(reads(&r, 2 * page(), 2 * page(), 5));
    assert!(r.is_committed(0, 4 * page()).unwrap());
}
