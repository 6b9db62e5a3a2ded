//! Random sequences of page operations applied to a real reservation and to a model of it;
//! every answer, the residency of every page, which pages can be read, and what they read
//! must agree after each step.

mod common;

use memvisor_vmem::{CommitMode, Error, Protection, Reservation, page_size};
use proptest::prelude::*;

const PAGES: usize = 24;
/// Operations per case (fewer under Miri, which interprets every step).
const MAX_OPS: usize = if cfg!(miri) { 12 } else { 40 };

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PageState {
    Uncommitted,
    Committed(Protection),
    Guard,
}

#[derive(Clone, Copy, Debug)]
struct ModelPage {
    state: PageState,
    resident: bool,
    value: u8,
}

#[derive(Clone, Debug)]
enum Op {
    Commit(usize, usize),
    Decommit(usize, usize),
    Protect(usize, usize, Protection),
    Prefault(usize, usize),
    Write(usize, u8),
    Guard(usize, usize),
    Unguard(usize, usize),
}

fn range() -> impl Strategy<Value = (usize, usize)> {
    (0..PAGES, 0..=PAGES).prop_map(|(first, count)| (first, count.min(PAGES + 1 - first)))
}

fn op() -> impl Strategy<Value = Op> {
    let protection = prop_oneof![
        Just(Protection::None),
        Just(Protection::Read),
        Just(Protection::ReadWrite)
    ];
    prop_oneof![
        3 => range().prop_map(|(f, c)| Op::Commit(f, c)),
        2 => range().prop_map(|(f, c)| Op::Decommit(f, c)),
        2 => (range(), protection).prop_map(|((f, c), p)| Op::Protect(f, c, p)),
        2 => range().prop_map(|(f, c)| Op::Prefault(f, c)),
        3 => (0..PAGES, 1..=255u8).prop_map(|(p, v)| Op::Write(p, v)),
        1 => range().prop_map(|(f, c)| Op::Guard(f, c)),
        1 => range().prop_map(|(f, c)| Op::Unguard(f, c)),
    ]
}

struct Model {
    pages: Vec<ModelPage>,
    mode: CommitMode,
}

impl Model {
    fn range_error(&self, first: usize, count: usize) -> Option<Error> {
        let page = page_size();
        if count == 0 {
            return Some(Error::ZeroLength);
        }
        if first + count > PAGES {
            return Some(Error::OutOfBounds {
                offset: first * page,
                len: count * page,
                size: PAGES * page,
            });
        }
        None
    }

    fn first_guard(&self, first: usize, count: usize) -> Option<Error> {
        (first..first + count)
            .find(|&p| self.pages[p].state == PageState::Guard)
            .map(|p| Error::Guarded {
                offset: p * page_size(),
            })
    }

    fn first_uncommitted(&self, first: usize, count: usize) -> Option<Error> {
        (first..first + count).find_map(|p| match self.pages[p].state {
            PageState::Committed(_) => None,
            PageState::Guard => Some(Error::Guarded {
                offset: p * page_size(),
            }),
            PageState::Uncommitted => Some(Error::NotCommitted {
                offset: p * page_size(),
            }),
        })
    }

    fn clear(&mut self, first: usize, count: usize, state: PageState) {
        for p in &mut self.pages[first..first + count] {
            *p = ModelPage {
                state,
                resident: false,
                value: 0,
            };
        }
    }

    /// The expected result of `op`, applying it to the model when it succeeds.
    fn apply(&mut self, op: &Op) -> Result<(), Error> {
        match *op {
            Op::Commit(f, c) => {
                if let Some(e) = self.range_error(f, c).or_else(|| self.first_guard(f, c)) {
                    return Err(e);
                }
                for p in &mut self.pages[f..f + c] {
                    p.state = PageState::Committed(Protection::ReadWrite);
                }
            }
            Op::Decommit(f, c) => {
                if let Some(e) = self.range_error(f, c).or_else(|| self.first_guard(f, c)) {
                    return Err(e);
                }
                self.clear(f, c, PageState::Uncommitted);
            }
            Op::Protect(f, c, prot) => {
                if let Some(e) = self
                    .range_error(f, c)
                    .or_else(|| self.first_uncommitted(f, c))
                {
                    return Err(e);
                }
                for p in &mut self.pages[f..f + c] {
                    p.state = PageState::Committed(prot);
                }
            }
            Op::Prefault(f, c) => {
                if let Some(e) = self
                    .range_error(f, c)
                    .or_else(|| self.first_uncommitted(f, c))
                {
                    return Err(e);
                }
                if let Some(p) = (f..f + c)
                    .find(|&p| self.pages[p].state != PageState::Committed(Protection::ReadWrite))
                {
                    return Err(Error::NotWritable {
                        offset: p * page_size(),
                    });
                }
                for p in &mut self.pages[f..f + c] {
                    p.resident = true;
                }
            }
            Op::Write(p, v) => {
                // The test only writes where the model allows it.
                let page = &mut self.pages[p];
                page.value = v;
                page.resident = true;
            }
            Op::Guard(f, c) => {
                if let Some(e) = self.range_error(f, c) {
                    return Err(e);
                }
                self.clear(f, c, PageState::Guard);
            }
            Op::Unguard(f, c) => {
                if let Some(e) = self.range_error(f, c) {
                    return Err(e);
                }
                if let Some(p) = (f..f + c).find(|&p| self.pages[p].state != PageState::Guard) {
                    return Err(Error::NotGuarded {
                        offset: p * page_size(),
                    });
                }
                self.clear(f, c, PageState::Uncommitted);
            }
        }
        Ok(())
    }

    fn writable(&self, p: usize) -> bool {
        self.pages[p].state == PageState::Committed(Protection::ReadWrite)
    }

    /// Whether a read of the page succeeds on the real system.
    fn readable(&self, p: usize) -> bool {
        match self.pages[p].state {
            PageState::Committed(prot) => prot != Protection::None,
            PageState::Uncommitted => self.mode == CommitMode::Sparse && !cfg!(windows),
            PageState::Guard => false,
        }
    }
}

fn run(mode: CommitMode, ops: &[Op]) -> Result<(), TestCaseError> {
    let page = page_size();
    let mut r = Reservation::builder()
        .mode(mode)
        .reserve(PAGES * page)
        .unwrap();
    let mut model = Model {
        pages: vec![
            ModelPage {
                state: PageState::Uncommitted,
                resident: false,
                value: 0
            };
            PAGES
        ],
        mode,
    };
    for op in ops {
        if let Op::Write(p, _) = *op
            && !model.writable(p)
        {
            continue;
        }
        let expected = model.apply(op);
        let actual = match *op {
            Op::Commit(f, c) => r.commit(f * page, c * page),
            Op::Decommit(f, c) => r.decommit(f * page, c * page),
            Op::Protect(f, c, prot) => r.protect(f * page, c * page, prot),
            Op::Prefault(f, c) => r.prefault(f * page, c * page),
            Op::Write(p, v) => {
                // SAFETY: the model says the page is committed read-write.
                unsafe { r.as_ptr().add(p * page).write_volatile(v) };
                Ok(())
            }
            Op::Guard(f, c) => r.guard(f * page, c * page),
            Op::Unguard(f, c) => r.unguard(f * page, c * page),
        };
        prop_assert_eq!(&actual, &expected, "{:?}", op);

        for p in 0..PAGES {
            let committed = matches!(model.pages[p].state, PageState::Committed(_));
            prop_assert_eq!(
                r.is_committed(p * page, page).unwrap(),
                committed,
                "page {}",
                p
            );
            prop_assert_eq!(
                r.is_guarded(p * page, page).unwrap(),
                model.pages[p].state == PageState::Guard
            );
        }
        #[cfg(not(miri))]
        {
            let residency = r.residency(0, PAGES * page).unwrap();
            let expected: Vec<bool> = model
                .pages
                .iter()
                // On Windows a no-access page is not in the working set, whatever it holds.
                .map(|p| {
                    p.resident
                        && match p.state {
                            PageState::Committed(Protection::None) => !cfg!(windows),
                            PageState::Committed(_) => true,
                            _ => false,
                        }
                })
                .collect();
            prop_assert_eq!(residency, expected, "after {:?}", op);
        }
        #[cfg(all(target_os = "linux", not(miri)))]
        for p in 0..PAGES {
            let read = common::probe_read(r.as_ptr().wrapping_add(p * page));
            let expected = model.readable(p).then_some(model.pages[p].value);
            prop_assert_eq!(read, expected, "page {} after {:?}", p, op);
            // A read maps the page (the shared zero page, if never written).
            if read.is_some() {
                model.pages[p].resident = true;
            }
        }
        #[cfg(any(not(target_os = "linux"), miri))]
        for p in 0..PAGES {
            if model.readable(p) && matches!(model.pages[p].state, PageState::Committed(_)) {
                // SAFETY: the model says the page is committed and readable.
                let byte = unsafe { r.as_ptr().add(p * page).read_volatile() };
                prop_assert_eq!(byte, model.pages[p].value, "page {}", p);
                // A read maps the page.
                model.pages[p].resident = true;
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(common::proptest_config(512, 3))]

    #[test]
    fn protected_reservation_matches_model(ops in proptest::collection::vec(op(), 1..MAX_OPS)) {
        run(CommitMode::Protected, &ops)?;
    }

    #[test]
    fn sparse_reservation_matches_model(ops in proptest::collection::vec(op(), 1..MAX_OPS)) {
        run(CommitMode::Sparse, &ops)?;
    }
}
