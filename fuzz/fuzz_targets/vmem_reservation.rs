//! Random page operations on a small reservation, in both commit modes, against a model of each
//! page: commit, decommit, protect (executable protections too), prefault, read prefault,
//! guard, unguard, map of private or shared anonymous memory or of a memfd, lock, unlock,
//! discard, free, purge, fork/dump advice, and writes. Which error each call returns, which
//! pages count as committed or guarded, the committed byte count, and for every page whether
//! the system lets it be read and written and what it reads must agree with the model after
//! every step; nothing may panic. Pages are probed through a pipe, so that a page the model
//! gets wrong is a reported difference, not a fault.
#![no_main]

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::fs::File;
use std::io::{PipeReader, PipeWriter};
use std::mem::discriminant;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use memvisor_fuzz::Input;
use memvisor_vmem::{Advice, CommitMode, Error, MapSource, Protection, Reservation, page_size};

const PAGES: usize = 12;
/// Operations per input: many times what it takes to bring the pages through every state.
const MAX_STEPS: usize = 160;

unsafe extern "C" {
    fn memfd_create(name: *const c_char, flags: c_uint) -> c_int;
    fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize;
    fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
}

/// What backs a page: the reservation's own memory or a source mapped over it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backing {
    Own,
    Private,
    Shared,
    Memfd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Uncommitted,
    Committed(Protection),
    Guard,
}

#[derive(Clone, Copy, Debug)]
struct Page {
    state: State,
    backing: Backing,
    locked: bool,
    /// What the page's first byte holds.
    byte: u8,
    /// Given `MADV_FREE` since it was last written: it may read zero instead.
    lazily_freed: bool,
}

const BLANK: Page = Page {
    state: State::Uncommitted,
    backing: Backing::Own,
    locked: false,
    byte: 0,
    lazily_freed: false,
};

#[derive(Clone, Copy, Debug)]
enum Op {
    Commit,
    Decommit,
    Protect(Protection),
    Prefault,
    PrefaultRead,
    Guard,
    Unguard,
    Map(Backing, Protection),
    Lock,
    Unlock,
    Discard,
    Free,
    Purge,
    Advise(Advice),
    Write(u8),
}

const PROTECTIONS: [Protection; 5] = [
    Protection::None,
    Protection::Read,
    Protection::ReadWrite,
    Protection::ReadExecute,
    Protection::ReadWriteExecute,
];

fn protection(input: &mut Input<'_>) -> Protection {
    PROTECTIONS[usize::from(input.u8()) % PROTECTIONS.len()]
}

fn op(input: &mut Input<'_>) -> Op {
    match input.u8() % 18 {
        0 | 1 => Op::Commit,
        2 => Op::Decommit,
        3 => Op::Protect(protection(input)),
        4 => Op::Prefault,
        5 => Op::PrefaultRead,
        6 => Op::Guard,
        7 => Op::Unguard,
        8 | 9 => {
            let backing = match input.u8() % 3 {
                0 => Backing::Private,
                1 => Backing::Shared,
                _ => Backing::Memfd,
            };
            Op::Map(backing, protection(input))
        }
        10 => Op::Lock,
        11 => Op::Unlock,
        12 => Op::Discard,
        13 => Op::Free,
        14 => Op::Purge,
        15 => Op::Advise(
            [
                Advice::DontFork,
                Advice::DoFork,
                Advice::DontDump,
                Advice::DoDump,
            ][usize::from(input.u8()) % 4],
        ),
        _ => Op::Write(input.u8().max(1)),
    }
}

struct Model {
    mode: CommitMode,
    page: usize,
    pages: [Page; PAGES],
    /// What each page of the memfd holds: reservation page `p` maps memfd page `p`.
    memfd: [u8; PAGES],
}

impl Model {
    /// The pages `first..first + count`, or the error the range checks give.
    fn span(&self, first: usize, count: usize) -> Result<std::ops::Range<usize>, Error> {
        if count == 0 {
            Err(Error::ZeroLength)
        } else if first + count > PAGES {
            Err(Error::OutOfBounds {
                offset: first * self.page,
                len: count * self.page,
                size: PAGES * self.page,
            })
        } else {
            Ok(first..first + count)
        }
    }

    fn first_where(
        &self,
        span: &std::ops::Range<usize>,
        f: impl Fn(&Page) -> bool,
    ) -> Option<usize> {
        span.clone().find(|&p| f(&self.pages[p]))
    }

    fn refuse_guard(&self, span: &std::ops::Range<usize>) -> Result<(), Error> {
        match self.first_where(span, |p| p.state == State::Guard) {
            Some(p) => Err(Error::Guarded {
                offset: p * self.page,
            }),
            None => Ok(()),
        }
    }

    /// Every page committed, else the error for the first that is not.
    fn require_committed(&self, span: &std::ops::Range<usize>) -> Result<(), Error> {
        for p in span.clone() {
            let offset = p * self.page;
            match self.pages[p].state {
                State::Committed(_) => {}
                State::Guard => return Err(Error::Guarded { offset }),
                State::Uncommitted => return Err(Error::NotCommitted { offset }),
            }
        }
        Ok(())
    }

    /// Puts fresh pages of `backing` in `state` over the span.
    fn replace(&mut self, span: std::ops::Range<usize>, state: State, backing: Backing) {
        for p in span {
            let byte = if backing == Backing::Memfd {
                self.memfd[p]
            } else {
                0
            };
            self.pages[p] = Page {
                state,
                backing,
                byte,
                ..BLANK
            };
        }
    }

    fn writable(&self, p: usize) -> bool {
        matches!(
            self.pages[p].state,
            State::Committed(Protection::ReadWrite | Protection::ReadWriteExecute)
        )
    }

    /// Whether the system lets the page be read: an uncommitted page of a sparse reservation
    /// is read-write memory that counts as uncommitted.
    fn readable_for_real(&self, p: usize) -> bool {
        match self.pages[p].state {
            State::Committed(protection) => protection.readable(),
            State::Uncommitted => self.mode == CommitMode::Sparse,
            State::Guard => false,
        }
    }

    fn writable_for_real(&self, p: usize) -> bool {
        self.writable(p)
            || (self.pages[p].state == State::Uncommitted && self.mode == CommitMode::Sparse)
    }

    /// Applies `op` to pages `first..first + count` (`Write` to page `first`), returning the
    /// result the reservation must give.
    fn apply(&mut self, op: Op, first: usize, count: usize) -> Result<(), Error> {
        if let Op::Write(byte) = op {
            let p = &mut self.pages[first];
            p.byte = byte;
            p.lazily_freed = false;
            if p.backing == Backing::Memfd {
                self.memfd[first] = byte;
            }
            return Ok(());
        }
        let span = self.span(first, count)?;
        let page = self.page;
        match op {
            Op::Commit => {
                self.refuse_guard(&span)?;
                for p in &mut self.pages[span] {
                    if p.state == State::Uncommitted {
                        p.byte = 0;
                    }
                    p.state = State::Committed(Protection::ReadWrite);
                }
            }
            Op::Decommit => {
                self.refuse_guard(&span)?;
                self.replace(span, State::Uncommitted, Backing::Own);
            }
            Op::Protect(protection) => {
                self.require_committed(&span)?;
                for p in &mut self.pages[span] {
                    p.state = State::Committed(protection);
                }
            }
            Op::Prefault => {
                self.require_committed(&span)?;
                if let Some(p) = span.clone().find(|&p| !self.writable(p)) {
                    return Err(Error::NotWritable { offset: p * page });
                }
            }
            Op::PrefaultRead => {
                self.require_committed(&span)?;
                if let Some(p) = span.clone().find(|&p| !self.readable_for_real(p)) {
                    return Err(Error::NotReadable { offset: p * page });
                }
            }
            Op::Guard => self.replace(span, State::Guard, Backing::Own),
            Op::Unguard => {
                if let Some(p) = self.first_where(&span, |p| p.state != State::Guard) {
                    return Err(Error::NotGuarded { offset: p * page });
                }
                self.replace(span, State::Uncommitted, Backing::Own);
            }
            Op::Map(backing, protection) => {
                self.refuse_guard(&span)?;
                self.replace(span, State::Committed(protection), backing);
            }
            Op::Lock => {
                self.require_committed(&span)?;
                let none = State::Committed(Protection::None);
                if let Some(p) = self.first_where(&span, |p| p.state == none) {
                    return Err(Error::NotReadable { offset: p * page });
                }
                for p in &mut self.pages[span] {
                    p.locked = true;
                }
            }
            Op::Unlock => {
                self.require_committed(&span)?;
                for p in &mut self.pages[span] {
                    p.locked = false;
                }
            }
            Op::Discard | Op::Free | Op::Purge => {
                self.require_committed(&span)?;
                if let Some(p) = self.first_where(&span, |p| p.locked) {
                    return Err(Error::Locked { offset: p * page });
                }
                let shared = |p: &Page| matches!(p.backing, Backing::Shared | Backing::Memfd);
                if let Op::Free = op
                    && let Some(p) = self.first_where(&span, shared)
                {
                    return Err(Error::Shared { offset: p * page });
                }
                for p in span {
                    let model = &mut self.pages[p];
                    match (op, model.backing) {
                        // Either unchanged or zero, until written again.
                        (Op::Free, _) => model.lazily_freed = true,
                        // A shared page reads its source again.
                        (Op::Discard, Backing::Shared | Backing::Memfd) => {}
                        // The hole punched reads zero through every mapping of the memfd.
                        (Op::Purge, Backing::Memfd) => {
                            model.byte = 0;
                            self.memfd[p] = 0;
                        }
                        _ => model.byte = 0,
                    }
                }
            }
            Op::Advise(_) => {}
            Op::Write(_) => unreachable!("handled above"),
        }
        Ok(())
    }
}

/// A pipe through which pages are probed: the kernel copies from or to the page and reports
/// `EFAULT` instead of faulting where the process may not access it.
fn probe_pipe() -> &'static (PipeReader, PipeWriter) {
    static PIPE: OnceLock<(PipeReader, PipeWriter)> = OnceLock::new();
    PIPE.get_or_init(|| std::io::pipe().expect("a pipe"))
}

/// The first byte of the page at `ptr`, or `None` if the process may not read it.
fn probe_read(ptr: *const u8) -> Option<u8> {
    let (reader, writer) = probe_pipe();
    // SAFETY: the kernel checks the address and fails with `EFAULT` rather than fault.
    if unsafe { write(writer.as_raw_fd(), ptr.cast(), 1) } != 1 {
        return None;
    }
    let mut byte = 0u8;
    // SAFETY: one byte into a local; the pipe holds the byte just written.
    assert_eq!(
        unsafe { read(reader.as_raw_fd(), (&raw mut byte).cast(), 1) },
        1
    );
    Some(byte)
}

/// Whether the process may write the page at `ptr`, found by writing `byte` (what the page
/// holds) back into it from the pipe.
fn probe_write(ptr: *mut u8, byte: u8) -> bool {
    let (reader, writer) = probe_pipe();
    // SAFETY: one byte of a local into the pipe.
    assert_eq!(
        unsafe { write(writer.as_raw_fd(), (&raw const byte).cast(), 1) },
        1
    );
    // SAFETY: the kernel checks the address and fails with `EFAULT` rather than fault.
    if unsafe { read(reader.as_raw_fd(), ptr.cast(), 1) } == 1 {
        return true;
    }
    // Empty the pipe for the next probe.
    let mut left = 0u8;
    // SAFETY: one byte into a local.
    assert_eq!(
        unsafe { read(reader.as_raw_fd(), (&raw mut left).cast(), 1) },
        1
    );
    false
}

/// A memfd of `len` bytes.
fn memfd(len: usize) -> Option<File> {
    // SAFETY: a static name; the flags ask for nothing special.
    let fd = unsafe { memfd_create(c"vmem_reservation".as_ptr(), 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a fresh descriptor, owned from here on.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len(len as u64).ok()?;
    Some(file)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let page = page_size();
    let mode = if input.u8().is_multiple_of(2) {
        CommitMode::Protected
    } else {
        CommitMode::Sparse
    };
    let Ok(mut r) = Reservation::builder().mode(mode).reserve(PAGES * page) else {
        return;
    };
    let Some(file) = memfd(PAGES * page) else {
        return;
    };
    let mut model = Model {
        mode,
        page,
        pages: [BLANK; PAGES],
        memfd: [0; PAGES],
    };
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        let op = op(&mut input);
        let first = usize::from(input.u8()) % (PAGES + 1);
        let count = usize::from(input.u8()) % (PAGES + 2);
        if let Op::Write(_) = op
            && (first >= PAGES || !model.writable(first))
        {
            continue;
        }
        let expected = model.apply(op, first, count);
        let (offset, len) = (first * page, count * page);
        let actual = match op {
            Op::Commit => r.commit(offset, len),
            Op::Decommit => r.decommit(offset, len),
            Op::Protect(protection) => r.protect(offset, len, protection),
            Op::Prefault => r.prefault(offset, len),
            Op::PrefaultRead => r.prefault_read(offset, len),
            Op::Guard => r.guard(offset, len),
            Op::Unguard => r.unguard(offset, len),
            Op::Map(backing, protection) => {
                let source = match backing {
                    Backing::Private => MapSource::AnonymousPrivate,
                    Backing::Shared => MapSource::AnonymousShared,
                    _ => MapSource::file(file.as_fd(), offset as u64),
                };
                r.map(offset, len, source, protection, None)
            }
            Op::Lock => r.lock(offset, len),
            Op::Unlock => r.unlock(offset, len),
            Op::Discard => r.discard(offset, len),
            Op::Free => r.free(offset, len),
            Op::Purge => r.purge(offset, len),
            Op::Advise(advice) => r.advise(offset, len, advice),
            Op::Write(byte) => {
                // SAFETY: the model counts the page committed read-write, and it is inside
                // the reservation; nothing else refers to it.
                unsafe { r.as_ptr().add(offset).write_volatile(byte) };
                Ok(())
            }
        };
        assert_eq!(
            actual.as_ref().map_err(discriminant),
            expected.as_ref().map_err(discriminant),
            "{op:?} of pages {first}+{count}: {actual:?}, model {expected:?}"
        );
        let committed = model
            .pages
            .iter()
            .filter(|p| matches!(p.state, State::Committed(_)))
            .count();
        assert_eq!(
            r.committed_bytes(),
            committed * page,
            "committed bytes after {op:?}"
        );
        for (p, want) in model.pages.iter().enumerate() {
            let offset = p * page;
            assert_eq!(
                r.is_committed(offset, page).expect("a page in range"),
                matches!(want.state, State::Committed(_)),
                "page {p} committed after {op:?}"
            );
            assert_eq!(
                r.is_guarded(offset, page).expect("a page in range"),
                want.state == State::Guard,
                "page {p} guarded after {op:?}"
            );
            let ptr = r.as_ptr().wrapping_add(offset);
            let read = probe_read(ptr);
            assert_eq!(
                read.is_some(),
                model.readable_for_real(p),
                "page {p} ({want:?}) readable after {op:?}"
            );
            if let Some(byte) = read {
                assert!(
                    byte == want.byte || (want.lazily_freed && byte == 0),
                    "page {p} ({want:?}) reads {byte} after {op:?}"
                );
                assert_eq!(
                    probe_write(ptr, byte),
                    model.writable_for_real(p),
                    "page {p} ({want:?}) writable after {op:?}"
                );
            }
        }
    }
});
