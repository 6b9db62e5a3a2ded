//! The helper that holds a removal open (`support::removal::during_removal`) when the removal
//! is stuck before its listener can be called: the test fails within seconds, saying so,
//! rather than after its 60 s limit (and then waiting for ever for the stuck thread). The
//! stuck removal runs in a child process, since the helper can only abort it. (Skipped under
//! Miri, which cannot start a process.)

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]

mod support;
use std::process::Command;
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memvisor_space::{
    AddressSpace, ChangeKind, ListenerError, RegionEvent, RegionListener, RegionSpec,
};
use memvisor_testkit::child_process::output_within;
use support::removal::{Answer, STUCK, during_removal};
use support::{MIB, layout};
use vm_memory::GuestAddress;

const CHILD: &str = "MEMVISOR_REMOVAL_STUCK_CHILD";

/// In the child: a removal whose first listener waits for ever (on a channel whose sender
/// lives on), so the helper's listener after it is never called.
fn stuck_removal() {
    let space = AddressSpace::builder(layout())
        .region(RegionSpec::ram(GuestAddress(0), MIB))
        .region(RegionSpec::ram(GuestAddress(4 * MIB), MIB))
        .back()
        .unwrap()
        .0;
    let (keep, never): (_, Receiver<()>) = channel();
    let never = Mutex::new(never);
    let first: Arc<dyn RegionListener> = Arc::new(
        move |event: &RegionEvent<'_>| -> Result<(), ListenerError> {
            if event.kind == ChangeKind::Removed {
                never.lock().unwrap().recv().unwrap();
            }
            Ok(())
        },
    );
    space.add_listener(first).unwrap();
    println!("removing");
    during_removal(&space, GuestAddress(4 * MIB), MIB, Answer::Refuse, || {});
    drop(keep);
    println!("the removal ended");
}

#[test]
fn a_removal_stuck_before_its_listener_fails_the_test_within_seconds() {
    if std::env::var_os(CHILD).is_some() {
        stuck_removal();
        return;
    }
    let start = Instant::now();
    let out = output_within(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_removal_stuck_before_its_listener_fails_the_test_within_seconds",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1"),
        // Well under the helper's 60 s limit, well over the time it lets a thread sleep.
        STUCK + Duration::from_secs(25),
    )
    .unwrap_or_else(|hung| panic!("the stuck removal was not reported in time: {hung}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("removing") && !stdout.contains("the removal ended"),
        "{stdout}\n{stderr}"
    );
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("is stuck before its listener") && stderr.contains("asleep"),
        "the child did not say why it failed:\n{stdout}\n{stderr}"
    );
    println!("reported after {:?}", start.elapsed());
}
