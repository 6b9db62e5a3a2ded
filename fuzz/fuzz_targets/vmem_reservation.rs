//! Random page operations on a small reservation, in both commit modes, against a model of each
//! page's state: which operations succeed, which pages count as committed or guarded, the
//! committed byte count, and what committed pages read must agree; nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memvisor_fuzz::Input;
use memvisor_vmem::{CommitMode, Protection, Reservation, page_size};

const PAGES: usize = 16;
/// Operations per input: many times what it takes to bring the 16 pages through every state.
const MAX_STEPS: usize = 256;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Page {
    Free,
    Committed(Protection),
    Guard,
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
    let mut model = [Page::Free; PAGES];
    let mut value = [0u8; PAGES];
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        let first = usize::from(input.u8()) % (PAGES + 2);
        let count = usize::from(input.u8()) % (PAGES + 2);
        let (offset, len) = (first * page, count * page);
        let in_range = count > 0 && first + count <= PAGES;
        let span = first.min(PAGES)..(first + count).min(PAGES);
        let any = |p: fn(Page) -> bool| model[span.clone()].iter().any(|&x| p(x));
        let all = |p: fn(Page) -> bool| model[span.clone()].iter().all(|&x| p(x));
        match input.u8() % 7 {
            0 => {
                let want = in_range && !any(|p| p == Page::Guard);
                assert_eq!(
                    r.commit(offset, len).is_ok(),
                    want,
                    "commit {first}+{count}"
                );
                if want {
                    // Commit makes the pages read-write, whatever they were.
                    model[span.clone()].fill(Page::Committed(Protection::ReadWrite));
                }
            }
            1 => {
                let want = in_range && !any(|p| p == Page::Guard);
                assert_eq!(
                    r.decommit(offset, len).is_ok(),
                    want,
                    "decommit {first}+{count}"
                );
                if want {
                    for p in span.clone() {
                        model[p] = Page::Free;
                        value[p] = 0;
                    }
                }
            }
            2 => {
                let protection = match input.u8() % 3 {
                    0 => Protection::None,
                    1 => Protection::Read,
                    _ => Protection::ReadWrite,
                };
                let want = in_range && all(|p| matches!(p, Page::Committed(_)));
                let got = r.protect(offset, len, protection).is_ok();
                assert_eq!(got, want, "protect {first}+{count}");
                if want {
                    model[span.clone()].fill(Page::Committed(protection));
                }
            }
            3 => {
                let want = in_range && all(|p| p == Page::Committed(Protection::ReadWrite));
                assert_eq!(
                    r.prefault(offset, len).is_ok(),
                    want,
                    "prefault {first}+{count}"
                );
            }
            4 => {
                assert_eq!(
                    r.guard(offset, len).is_ok(),
                    in_range,
                    "guard {first}+{count}"
                );
                if in_range {
                    model[span.clone()].fill(Page::Guard);
                    value[span.clone()].fill(0);
                }
            }
            5 => {
                let want = in_range && all(|p| p == Page::Guard);
                assert_eq!(
                    r.unguard(offset, len).is_ok(),
                    want,
                    "unguard {first}+{count}"
                );
                if want {
                    model[span.clone()].fill(Page::Free);
                }
            }
            _ => {
                let p = first % PAGES;
                if model[p] == Page::Committed(Protection::ReadWrite) {
                    let v = input.u8();
                    // SAFETY: page `p` is committed read-write and inside the reservation.
                    unsafe { r.as_ptr().add(p * page).write_volatile(v) };
                    value[p] = v;
                }
            }
        }
        let committed = model
            .iter()
            .filter(|p| matches!(p, Page::Committed(_)))
            .count();
        assert_eq!(r.committed_bytes(), committed * page, "committed bytes");
        for (p, state) in model.iter().enumerate() {
            let is_committed = r.is_committed(p * page, page).expect("a page in range");
            assert_eq!(
                is_committed,
                matches!(state, Page::Committed(_)),
                "page {p} committed"
            );
            let is_guarded = r.is_guarded(p * page, page).expect("a page in range");
            assert_eq!(is_guarded, *state == Page::Guard, "page {p} guarded");
            if matches!(
                state,
                Page::Committed(Protection::Read | Protection::ReadWrite)
            ) {
                // SAFETY: the page is committed and readable.
                let read = unsafe { r.as_ptr().add(p * page).read_volatile() };
                assert_eq!(read, value[p], "page {p} reads what was written");
            }
        }
    }
});
