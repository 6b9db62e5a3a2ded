//! A deadlock watchdog: a test runs a call that might wait for ever (a lock taken twice, a
//! lost wake-up, two locks taken in opposite orders) on a thread of its own, and fails instead
//! of hanging the test run.

use std::sync::mpsc;
use std::time::Duration;

/// Runs `f` on a thread of its own and returns its result; panics with the worker's own panic
/// if `f` panics, or with "`what`: not done within `limit`" if it has not returned by then (the
/// thread is left behind, blocked).
///
/// # Panics
///
/// As said: when `f` panics or does not return within `limit`.
pub fn within<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => {
            worker.join().unwrap();
            value
        }
        // A panic on the worker drops the sender: report it rather than a timeout.
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(worker.join().unwrap_err())
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: not done within {limit:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_returns_what_the_call_returns() {
        assert_eq!(within("sum", Duration::from_secs(60), || 1 + 2), 3);
    }

    #[test]
    #[should_panic(expected = "the call's own message")]
    fn within_panicking_call_fails_with_its_own_panic() {
        within("call", Duration::from_secs(60), || -> () {
            panic!("the call's own message")
        });
    }

    #[test]
    #[should_panic(expected = "stuck: not done within")]
    fn within_call_that_never_returns_fails_the_test() {
        let (_keep, never) = mpsc::channel::<()>();
        within("stuck", Duration::from_millis(50), move || {
            never.recv().unwrap()
        });
    }
}
