//! Removals held open by a later region listener, so that tests can call into the slots while
//! KVM has deleted a slot that the address space still holds.

use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memvisor_space::{AddressSpace, ChangeKind, ListenerError, RegionEvent, RegionListener};
use vm_memory::GuestAddress;

/// What a later listener holding a removal open ([`during_removal`]) answers once the calls
/// made during the removal are done.
pub enum Answer {
    Accept,
    Refuse,
    /// Runs this (on the removing thread, inside the listener), then refuses.
    RefuseAfter(Box<dyn FnOnce() + Send>),
}

/// Removes the `size` bytes at `base` on another thread, with a region listener after the
/// slots' ones that, once KVM deleted the slot, waits for `during` to run here and then answers
/// as `answer` says. Whether the removal went through.
pub fn during_removal(
    space: &AddressSpace,
    base: GuestAddress,
    size: u64,
    answer: Answer,
    during: impl FnOnce(),
) -> bool {
    let (at_removal_tx, at_removal) = channel();
    let (answer_tx, answers) = channel::<Answer>();
    let (at_removal_tx, answers) = (Mutex::new(at_removal_tx), Mutex::new(answers));
    let listener: Arc<dyn RegionListener> = Arc::new(
        move |event: &RegionEvent<'_>| -> Result<(), ListenerError> {
            if event.kind != ChangeKind::Removed || event.region.base() != base {
                return Ok(());
            }
            at_removal_tx.lock().unwrap().send(()).unwrap();
            // No answer (the test failed meanwhile): refuse.
            match answers.lock().unwrap().recv().unwrap_or(Answer::Refuse) {
                Answer::Accept => Ok(()),
                Answer::Refuse => Err("removal refused".into()),
                Answer::RefuseAfter(before) => {
                    before();
                    Err("removal refused".into())
                }
            }
        },
    );
    space.add_listener(Arc::clone(&listener)).unwrap();
    let removed = std::thread::scope(|s| {
        let removal = s.spawn(|| space.remove_region(base, size));
        // Dropped when `during` fails: the listener then refuses, and the removal ends.
        let answer_tx = answer_tx;
        // The removal reaches the listener, or ends without reaching it (refused before, or
        // panicking): that fails the test at once, with the removal's answer or panic.
        let start = Instant::now();
        loop {
            match at_removal.recv_timeout(Duration::from_millis(10)) {
                Ok(()) => break,
                Err(_) if removal.is_finished() => match removal.join() {
                    Ok(answer) => panic!("the removal never reached the listener: {answer:?}"),
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                Err(_) => assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "the removal did not reach the listener within 60 s"
                ),
            }
        }
        during();
        answer_tx.send(answer).unwrap();
        removal.join().unwrap().is_ok()
    });
    space.remove_listener(&listener).unwrap();
    removed
}
