//! `Refuser::each_call_in_turn` refuses each call of an operation in turn, alone and with every
//! call after it, stops at the first run that refuses nothing, and counts what a test asserts
//! on; a run that panics leaves no refusal armed. Run in a child process, as the filter cannot
//! be removed; skipped under a sanitizer. Linux on x86-64 only.
#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

use memvisor_testkit::refused_calls::{
    EACH_REFUSAL, InTurn, Refusal, Refuser, in_child, under_sanitizer,
};

const CHILD: &str = "MEMVISOR_TESTKIT_REFUSED_CALLS_IN_TURN_CHILD";

/// `calls` `madvise` calls on the page at `page`; the errno of each, 0 where it went on.
fn advise(page: usize, calls: usize) -> Vec<i32> {
    (0..calls)
        .map(|_| {
            // SAFETY: advice that changes nothing, on a page this test mapped.
            let r = unsafe { libc::madvise(page as *mut libc::c_void, 4096, libc::MADV_NORMAL) };
            if r == 0 {
                0
            } else {
                std::io::Error::last_os_error().raw_os_error().unwrap()
            }
        })
        .collect()
}

fn scenario(refuser: &Refuser, page: usize) {
    let range = page..page + 1;
    // Three calls: each refused alone, then with the calls after it; the fourth run of each
    // kind refuses nothing and ends the loop.
    let mut seen = Vec::new();
    let turns = refuser.each_call_in_turn(&EACH_REFUSAL, 8, libc::ENOMEM, |turn| {
        let (errnos, refused) = turn.refuse(range.clone(), || advise(page, 3));
        seen.push((turn.index, turn.refusal, errnos, refused, turn.to_string()));
    });
    assert_eq!(
        turns,
        InTurn {
            refused: 6,
            calls: 3,
            reached_end: true
        }
    );
    let madvise = Some(libc::SYS_madvise);
    let e = libc::ENOMEM;
    let expected = [
        (0, Refusal::Nth, vec![e, 0, 0], madvise),
        (0, Refusal::FromNth, vec![e, e, e], madvise),
        (1, Refusal::Nth, vec![0, e, 0], madvise),
        (1, Refusal::FromNth, vec![0, e, e], madvise),
        (2, Refusal::Nth, vec![0, 0, e], madvise),
        (2, Refusal::FromNth, vec![0, 0, e], madvise),
        (3, Refusal::Nth, vec![0, 0, 0], None),
    ];
    let got: Vec<_> = seen
        .iter()
        .map(|(i, r, errnos, nr, _)| (*i, *r, errnos.clone(), *nr))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(
        seen[0].4,
        format!("call 0 (number {}) refused", libc::SYS_madvise)
    );
    assert_eq!(
        seen[1].4,
        format!(
            "call 0 (number {}) and every call after it refused",
            libc::SYS_madvise
        )
    );
    // Calls outside the range are not counted: nothing refused, at the first run.
    let other = refuser.each_call_in_turn(&EACH_REFUSAL, 8, libc::ENOMEM, |turn| {
        let (errnos, _) = turn.refuse(0..1, || advise(page, 3));
        assert_eq!(errnos, [0, 0, 0]);
    });
    assert_eq!(
        other,
        InTurn {
            refused: 0,
            calls: 0,
            reached_end: true
        }
    );
    // More calls than the loop tries: the end is not reached.
    let short = refuser.each_call_in_turn(&[Refusal::Nth], 2, libc::ENOMEM, |turn| {
        turn.refuse(range.clone(), || advise(page, 3));
    });
    assert_eq!(
        short,
        InTurn {
            refused: 2,
            calls: 2,
            reached_end: false
        }
    );
    // A run that panics under its refusal leaves every call going on again.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        refuser.each_call_in_turn(&[Refusal::FromNth], 8, libc::ENOMEM, |turn| {
            turn.refuse::<()>(range.clone(), || panic!("the call panics"));
        })
    }));
    assert!(panicked.is_err());
    assert_eq!(advise(page, 3), [0, 0, 0]);
    // A run that never calls `refuse` is the test's mistake.
    let forgot = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        refuser.each_call_in_turn(&EACH_REFUSAL, 8, libc::ENOMEM, |_| {})
    }));
    assert!(forgot.is_err());
}

#[test]
fn each_call_in_turn_refuses_each_call_alone_then_with_every_call_after_it() {
    if std::env::var_os(CHILD).is_none() {
        if under_sanitizer() {
            eprintln!("SKIPPED: a sanitizer's runtime maps memory the filter would see");
            return;
        }
        in_child(
            "each_call_in_turn_refuses_each_call_alone_then_with_every_call_after_it",
            CHILD,
            "in turn: checked",
        );
        return;
    }
    // SAFETY: a fresh private anonymous page.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(page, libc::MAP_FAILED);
    let Some(refuser) = Refuser::install(&[libc::SYS_madvise]) else {
        return;
    };
    scenario(&refuser, page as usize);
    println!("in turn: checked");
}
