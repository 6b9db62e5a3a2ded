//! A Cloud Hypervisor `VmConfig`'s `balloon`: its `size` is required (a whole number of bytes,
//! Cloud Hypervisor's `BalloonConfig` has no default for it), and a balloon as large as the
//! guest's memory or larger (`memory.size`, the zones' sizes and the `hotplugged_size`s
//! together) is refused, as Cloud Hypervisor's `VmConfig::validate` refuses it.

mod common;

use common::{HUGE_PAGES_2M, Memvisor, Outcome, planned, refused};

fn plan(json: &str) -> Outcome {
    Memvisor::new()
        .flags(&HUGE_PAGES_2M)
        .run(&["plan", "--from", "cloud-hypervisor", "--", json])
}

/// A `VmConfig` with a kernel, `memory` and `balloon` as given.
fn config(memory: &str, balloon: &str) -> String {
    format!(r#"{{"payload": {{"kernel": "vmlinux"}}, "memory": {memory}, "balloon": {balloon}}}"#)
}

#[track_caller]
fn assert_refused(json: &str, words: &[&str]) {
    refused(json, plan(json), words);
}

#[track_caller]
fn assert_planned(json: &str) {
    planned(json, plan(json));
}

const GIB: u64 = 1 << 30;

#[test]
fn cloud_hypervisor_balloon_as_large_as_the_memory_is_refused() {
    let memory = format!(r#"{{"size": {GIB}}}"#);
    assert_planned(&config(&memory, &format!(r#"{{"size": {}}}"#, GIB - 4096)));
    assert_planned(&config(&memory, r#"{"size": 0}"#));
    for size in [GIB, GIB + 1, u64::MAX] {
        assert_refused(
            &config(&memory, &format!(r#"{{"size": {size}}}"#)),
            &["balloon.size", "Cloud Hypervisor refuses"],
        );
    }
    // Without `memory`, Cloud Hypervisor's default of 512 MiB.
    let json = format!(
        r#"{{"payload": {{"kernel": "vmlinux"}}, "balloon": {{"size": {}}}}}"#,
        512u64 << 20
    );
    assert_refused(&json, &["balloon.size", "512 MiB"]);
}

#[test]
fn cloud_hypervisor_balloon_counts_zones_and_hotplugged_memory() {
    // Two zones of 1 GiB, one with 1 GiB of its virtio-mem area plugged: 3 GiB in all.
    let memory = format!(
        r#"{{"size": 0, "hotplug_method": "VirtioMem", "zones": [
            {{"id": "a", "size": {GIB}}},
            {{"id": "b", "size": {GIB}, "hotplug_size": {}, "hotplugged_size": {GIB}}}]}}"#,
        2 * GIB
    );
    assert_planned(&config(&memory, &format!(r#"{{"size": {}}}"#, 3 * GIB - 1)));
    assert_refused(
        &config(&memory, &format!(r#"{{"size": {}}}"#, 3 * GIB)),
        &["balloon.size", "3 GiB"],
    );
    let memory = format!(
        r#"{{"size": {GIB}, "hotplug_method": "VirtioMem", "hotplug_size": {},
            "hotplugged_size": {GIB}}}"#,
        2 * GIB
    );
    assert_planned(&config(&memory, &format!(r#"{{"size": {}}}"#, 2 * GIB - 1)));
    assert_refused(
        &config(&memory, &format!(r#"{{"size": {}}}"#, 2 * GIB)),
        &["balloon.size"],
    );
}

#[test]
fn cloud_hypervisor_balloon_size_is_a_required_whole_number() {
    let memory = format!(r#"{{"size": {GIB}}}"#);
    for (balloon, words) in [
        ("{}", &["balloon", "missing field `size`"][..]),
        (r#"{"size": null}"#, &["balloon.size"][..]),
        (r#"{"size": "1G"}"#, &["balloon.size"][..]),
        (r#"{"size": -1}"#, &["balloon.size"][..]),
        (r#"{"size": 1.5}"#, &["balloon.size"][..]),
        (
            r#"{"size": 1, "size": 2}"#,
            &["balloon", "duplicate field `size`"][..],
        ),
    ] {
        assert_refused(&config(&memory, balloon), words);
    }
}
