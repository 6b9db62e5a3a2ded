//! The helper that holds a removal open (`support::removal::during_removal`) when the removal
//! is stuck before its listener can be called: the test fails within seconds, saying so,
//! rather than after its 60 s limit (and then waiting for ever for the stuck thread); and when
//! the removal only waits long in the kernel (as KVM's slot deletion waits for its readers), it
//! is let through. Each removal runs in a child process, since the helper can only abort it.
//! (Skipped under Miri, which cannot start a process.)

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

/// In the child: a removal whose first listener sleeps in the kernel (not on a lock of this
/// process) for longer than the helper lets a thread wait on a lock, as KVM's deletion of a slot
/// sleeps until the slot's readers are done, which a loaded machine can make long.
fn slow_removal() {
    let space = AddressSpace::builder(layout())
        .region(RegionSpec::ram(GuestAddress(0), MIB))
        .region(RegionSpec::ram(GuestAddress(4 * MIB), MIB))
        .back()
        .unwrap()
        .0;
    let first: Arc<dyn RegionListener> = Arc::new(
        move |event: &RegionEvent<'_>| -> Result<(), ListenerError> {
            if event.kind == ChangeKind::Removed {
                std::thread::sleep(STUCK + Duration::from_secs(2));
            }
            Ok(())
        },
    );
    space.add_listener(first).unwrap();
    println!("removing");
    let removed = during_removal(&space, GuestAddress(4 * MIB), MIB, Answer::Accept, || {});
    println!("the removal ended: {removed}");
}

/// Runs the test `name` of this binary in a child process that runs `scenario` instead.
fn child(name: &str, scenario: &str) -> std::process::Output {
    output_within(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(CHILD, scenario),
        // Well under the helper's 60 s limit, well over the time it lets a thread sleep.
        STUCK + Duration::from_secs(25),
    )
    .unwrap_or_else(|hung| panic!("the child of {name} did not end in time: {hung}"))
}

#[test]
fn a_removal_stuck_before_its_listener_fails_the_test_within_seconds() {
    if std::env::var_os(CHILD).is_some_and(|s| s == "stuck") {
        stuck_removal();
        return;
    }
    let start = Instant::now();
    let out = child(
        "a_removal_stuck_before_its_listener_fails_the_test_within_seconds",
        "stuck",
    );
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

#[test]
fn a_removal_asleep_in_the_kernel_past_the_stuck_time_is_let_through() {
    if std::env::var_os(CHILD).is_some_and(|s| s == "slow") {
        slow_removal();
        return;
    }
    let out = child(
        "a_removal_asleep_in_the_kernel_past_the_stuck_time_is_let_through",
        "slow",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("the removal ended: true"),
        "a removal asleep in the kernel was called stuck:\n{stdout}\n{stderr}"
    );
}
