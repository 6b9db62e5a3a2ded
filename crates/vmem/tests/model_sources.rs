//! Random sequences of every page operation, sources mapped over the reservation included
//! (private and shared anonymous memory, a memfd), applied to a real reservation and to a model
//! of it: each call's result, the committed state of every page, which pages can be read and
//! written on the real system, and what they read must agree after each step.
#![cfg(all(target_os = "linux", feature = "std", not(miri)))]

mod common;

use std::mem::discriminant;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use memvisor_vmem::{Advice, CommitMode, Error, MapSource, Protection, Reservation, page_size};
use proptest::prelude::*;

const PAGES: usize = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    Own,
    Private,
    Shared,
    File,
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
    src: Src,
    locked: bool,
    value: u8,
    /// `MADV_FREE` was given since the last write: the page may read zero.
    freed: bool,
}

#[derive(Clone, Debug)]
enum Op {
    Commit(usize, usize),
    Decommit(usize, usize),
    Protect(usize, usize, Protection),
    Prefault(usize, usize),
    PrefaultRead(usize, usize),
    Write(usize, u8),
    Guard(usize, usize),
    Unguard(usize, usize),
    Map(usize, usize, Src, Protection),
    Lock(usize, usize),
    Unlock(usize, usize),
    Discard(usize, usize),
    Free(usize, usize),
    Purge(usize, usize),
    Advise(usize, usize, Advice),
}

fn range() -> impl Strategy<Value = (usize, usize)> {
    (0..PAGES, 0..=PAGES).prop_map(|(first, count)| (first, count.min(PAGES + 1 - first)))
}

fn protection() -> impl Strategy<Value = Protection> {
    prop_oneof![
        Just(Protection::None),
        Just(Protection::Read),
        Just(Protection::ReadWrite),
        Just(Protection::ReadExecute),
        Just(Protection::ReadWriteExecute),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let src = prop_oneof![Just(Src::Private), Just(Src::Shared), Just(Src::File)];
    let advice = prop_oneof![
        Just(Advice::DontFork),
        Just(Advice::DoFork),
        Just(Advice::DontDump),
        Just(Advice::DoDump)
    ];
    prop_oneof![
        3 => range().prop_map(|(f, c)| Op::Commit(f, c)),
        2 => range().prop_map(|(f, c)| Op::Decommit(f, c)),
        2 => (range(), protection()).prop_map(|((f, c), p)| Op::Protect(f, c, p)),
        1 => range().prop_map(|(f, c)| Op::Prefault(f, c)),
        1 => range().prop_map(|(f, c)| Op::PrefaultRead(f, c)),
        4 => (0..PAGES, 1..=255u8).prop_map(|(p, v)| Op::Write(p, v)),
        1 => range().prop_map(|(f, c)| Op::Guard(f, c)),
        1 => range().prop_map(|(f, c)| Op::Unguard(f, c)),
        3 => (range(), src, protection()).prop_map(|((f, c), s, p)| Op::Map(f, c, s, p)),
        1 => range().prop_map(|(f, c)| Op::Lock(f, c)),
        1 => range().prop_map(|(f, c)| Op::Unlock(f, c)),
        1 => range().prop_map(|(f, c)| Op::Discard(f, c)),
        1 => range().prop_map(|(f, c)| Op::Free(f, c)),
        1 => range().prop_map(|(f, c)| Op::Purge(f, c)),
        1 => (range(), advice).prop_map(|((f, c), a)| Op::Advise(f, c, a)),
    ]
}

struct Model {
    pages: Vec<Page>,
    /// What each page of the memfd holds (reservation page `p` maps file page `p`).
    file: Vec<u8>,
    mode: CommitMode,
}

fn at(p: usize) -> usize {
    p * page_size()
}

impl Model {
    fn range(&self, f: usize, c: usize) -> Result<(), Error> {
        if c == 0 {
            return Err(Error::ZeroLength);
        }
        if f + c > PAGES {
            return Err(Error::OutOfBounds {
                offset: at(f),
                len: at(c),
                size: at(PAGES),
            });
        }
        Ok(())
    }

    fn no_guard(&self, f: usize, c: usize) -> Result<(), Error> {
        match (f..f + c).find(|&p| self.pages[p].state == State::Guard) {
            Some(p) => Err(Error::Guarded { offset: at(p) }),
            None => Ok(()),
        }
    }

    fn committed(&self, f: usize, c: usize) -> Result<(), Error> {
        for p in f..f + c {
            match self.pages[p].state {
                State::Guard => return Err(Error::Guarded { offset: at(p) }),
                State::Uncommitted => return Err(Error::NotCommitted { offset: at(p) }),
                State::Committed(_) => {}
            }
        }
        Ok(())
    }

    fn set(&mut self, f: usize, c: usize, state: State, src: Src) {
        for p in f..f + c {
            let value = if src == Src::File { self.file[p] } else { 0 };
            self.pages[p] = Page {
                state,
                src,
                locked: false,
                value,
                freed: false,
            };
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), Error> {
        match *op {
            Op::Commit(f, c) => {
                self.range(f, c)?;
                self.no_guard(f, c)?;
                for p in &mut self.pages[f..f + c] {
                    if p.state == State::Uncommitted {
                        p.value = 0;
                    }
                    p.state = State::Committed(Protection::ReadWrite);
                }
            }
            Op::Decommit(f, c) => {
                self.range(f, c)?;
                self.no_guard(f, c)?;
                self.set(f, c, State::Uncommitted, Src::Own);
            }
            Op::Protect(f, c, prot) => {
                self.range(f, c)?;
                self.committed(f, c)?;
                for p in &mut self.pages[f..f + c] {
                    p.state = State::Committed(prot);
                }
            }
            Op::Prefault(f, c) => {
                self.range(f, c)?;
                self.committed(f, c)?;
                if let Some(p) = (f..f + c).find(|&p| !self.writable(p)) {
                    return Err(Error::NotWritable { offset: at(p) });
                }
            }
            Op::PrefaultRead(f, c) => {
                self.range(f, c)?;
                self.committed(f, c)?;
                if let Some(p) = (f..f + c).find(|&p| !self.readable(p)) {
                    return Err(Error::NotReadable { offset: at(p) });
                }
            }
            Op::Write(p, v) => {
                let page = &mut self.pages[p];
                page.value = v;
                page.freed = false;
                if page.src == Src::File {
                    self.file[p] = v;
                }
            }
            Op::Guard(f, c) => {
                self.range(f, c)?;
                self.set(f, c, State::Guard, Src::Own);
            }
            Op::Unguard(f, c) => {
                self.range(f, c)?;
                if let Some(p) = (f..f + c).find(|&p| self.pages[p].state != State::Guard) {
                    return Err(Error::NotGuarded { offset: at(p) });
                }
                self.set(f, c, State::Uncommitted, Src::Own);
            }
            Op::Map(f, c, src, prot) => {
                self.range(f, c)?;
                self.no_guard(f, c)?;
                self.set(f, c, State::Committed(prot), src);
            }
            Op::Lock(f, c) => {
                self.range(f, c)?;
                self.committed(f, c)?;
                if let Some(p) =
                    (f..f + c).find(|&p| self.pages[p].state == State::Committed(Protection::None))
                {
                    return Err(Error::NotReadable { offset: at(p) });
                }
                for p in &mut self.pages[f..f + c] {
                    p.locked = true;
                }
            }
            Op::Unlock(f, c) => {
                self.range(f, c)?;
                self.committed(f, c)?;
                for p in &mut self.pages[f..f + c] {
                    p.locked = false;
                }
            }
            Op::Discard(f, c) | Op::Free(f, c) | Op::Purge(f, c) => {
                self.range(f, c)?;
                self.committed(f, c)?;
                if let Some(p) = (f..f + c).find(|&p| self.pages[p].locked) {
                    return Err(Error::Locked { offset: at(p) });
                }
                if let Op::Free(..) = op
                    && let Some(p) =
                        (f..f + c).find(|&p| matches!(self.pages[p].src, Src::Shared | Src::File))
                {
                    return Err(Error::Shared { offset: at(p) });
                }
                for p in f..f + c {
                    let page = &mut self.pages[p];
                    match (op, page.src) {
                        (Op::Free(..), _) => page.freed = true,
                        (Op::Discard(..), Src::Shared | Src::File) => {}
                        (Op::Purge(..), Src::File) => {
                            page.value = 0;
                            self.file[p] = 0;
                        }
                        _ => page.value = 0,
                    }
                }
            }
            Op::Advise(f, c, _) => self.range(f, c)?,
        }
        Ok(())
    }

    fn writable(&self, p: usize) -> bool {
        matches!(
            self.pages[p].state,
            State::Committed(Protection::ReadWrite | Protection::ReadWriteExecute)
        )
    }

    /// Whether the real page can be read.
    fn readable(&self, p: usize) -> bool {
        match self.pages[p].state {
            State::Committed(prot) => prot.readable(),
            State::Uncommitted => self.mode == CommitMode::Sparse,
            State::Guard => false,
        }
    }

    /// Whether the real page can be written.
    fn writable_for_real(&self, p: usize) -> bool {
        self.writable(p)
            || (self.pages[p].state == State::Uncommitted && self.mode == CommitMode::Sparse)
    }
}

/// Whether a byte of the page can be written, found by writing `byte` (what it holds) back
/// through `read(2)` from a pipe, which reports `EFAULT` for an address it cannot write.
fn probe_write(ptr: *mut u8, byte: u8) -> bool {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: writing one byte of a local into the pipe.
    let put = unsafe { libc::write(fds[1], (&raw const byte).cast(), 1) };
    assert_eq!(put, 1);
    // SAFETY: the kernel checks the address and fails with EFAULT rather than fault.
    let read = unsafe { libc::read(fds[0], ptr.cast(), 1) };
    // SAFETY: closing our own descriptors.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    read == 1
}

fn memfd(len: usize) -> OwnedFd {
    // SAFETY: a fresh memfd with a static name.
    let fd = unsafe { libc::memfd_create(c"model".as_ptr(), 0) };
    assert!(fd >= 0);
    // SAFETY: `fd` is a fresh descriptor owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let file = std::fs::File::from(fd);
    file.set_len(len as u64).unwrap();
    file.into()
}

fn run(mode: CommitMode, ops: &[Op]) -> Result<(), TestCaseError> {
    let page = page_size();
    let mut r = Reservation::builder()
        .mode(mode)
        .reserve(at(PAGES))
        .unwrap();
    let fd = memfd(at(PAGES));
    let blank = Page {
        state: State::Uncommitted,
        src: Src::Own,
        locked: false,
        value: 0,
        freed: false,
    };
    let mut model = Model {
        pages: vec![blank; PAGES],
        file: vec![0; PAGES],
        mode,
    };
    for op in ops {
        if let Op::Write(p, _) = *op
            && !model.writable(p)
        {
            continue;
        }
        let expected = model.apply(op);
        // SAFETY (all calls below): nothing refers to the reservation's memory but this loop.
        let actual = match *op {
            Op::Commit(f, c) => r.commit(at(f), at(c)),
            Op::Decommit(f, c) => r.decommit(at(f), at(c)),
            Op::Protect(f, c, prot) => r.protect(at(f), at(c), prot),
            Op::Prefault(f, c) => r.prefault(at(f), at(c)),
            Op::PrefaultRead(f, c) => r.prefault_read(at(f), at(c)),
            Op::Write(p, v) => {
                // SAFETY: the model says the page is committed read-write.
                unsafe { r.as_ptr().add(at(p)).write_volatile(v) };
                Ok(())
            }
            Op::Guard(f, c) => r.guard(at(f), at(c)),
            Op::Unguard(f, c) => r.unguard(at(f), at(c)),
            Op::Map(f, c, src, prot) => {
                let source = match src {
                    Src::Private => MapSource::AnonymousPrivate,
                    Src::Shared => MapSource::AnonymousShared,
                    _ => MapSource::file(fd.as_fd(), at(f) as u64),
                };
                r.map(at(f), at(c), source, prot, None)
            }
            Op::Lock(f, c) => r.lock(at(f), at(c)),
            Op::Unlock(f, c) => r.unlock(at(f), at(c)),
            Op::Discard(f, c) => r.discard(at(f), at(c)),
            Op::Free(f, c) => r.free(at(f), at(c)),
            Op::Purge(f, c) => r.purge(at(f), at(c)),
            Op::Advise(f, c, advice) => r.advise(at(f), at(c), advice),
        };
        prop_assert_eq!(
            actual.as_ref().map_err(discriminant),
            expected.as_ref().map_err(discriminant),
            "{:?}: {:?}, model {:?}",
            op,
            actual,
            expected
        );
        for p in 0..PAGES {
            let state = model.pages[p].state;
            prop_assert_eq!(
                r.is_committed(at(p), page).unwrap(),
                matches!(state, State::Committed(_)),
                "page {} after {:?}",
                p,
                op
            );
            prop_assert_eq!(r.is_guarded(at(p), page).unwrap(), state == State::Guard);
            let ptr = r.as_ptr().wrapping_add(at(p));
            let read = common::probe_read(ptr);
            prop_assert_eq!(
                read.is_some(),
                model.readable(p),
                "page {} read after {:?}",
                p,
                op
            );
            if let Some(byte) = read {
                let want = model.pages[p].value;
                prop_assert!(
                    byte == want || (model.pages[p].freed && byte == 0),
                    "page {} reads {} not {} after {:?}",
                    p,
                    byte,
                    want,
                    op
                );
                let writable = probe_write(ptr, byte);
                prop_assert_eq!(
                    writable,
                    model.writable_for_real(p),
                    "page {} write after {:?}",
                    p,
                    op
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(common::proptest_config(768, 0))]

    #[test]
    fn protected_reservation_with_sources_matches_model(
        ops in proptest::collection::vec(op(), 1..48),
    ) {
        run(CommitMode::Protected, &ops)?;
    }

    #[test]
    fn sparse_reservation_with_sources_matches_model(
        ops in proptest::collection::vec(op(), 1..48),
    ) {
        run(CommitMode::Sparse, &ops)?;
    }
}
