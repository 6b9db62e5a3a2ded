//! A flag set when its guard is dropped, on unwinding too: the loops of a test's other threads
//! that run until the flag is set then end when the thread holding the guard fails, so the
//! failure ends the test with its message instead of leaving a thread scope (or a loop that
//! waits for the flag) waiting for ever.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};

/// Sets the flag it holds (borrowed, or an `Arc` of it) when dropped.
pub struct SetOnDrop<F: Deref<Target = AtomicBool>>(pub F);

impl<F: Deref<Target = AtomicBool>> Drop for SetOnDrop<F> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}
