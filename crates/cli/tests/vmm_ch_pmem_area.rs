//! The regions of a Cloud Hypervisor `VmConfig`'s `pmem` devices in its 64-bit PCI device
//! area: Cloud Hypervisor makes each virtio-pmem device before it gives any device its BAR, and
//! takes the device's region (its `size`, a multiple of 2 MiB) from the top of the area down,
//! 2 MiB aligned; the BARs (512 KiB at a multiple of 8 MiB) then go below those regions. So
//! guest memory must end lower by the regions' sizes, and a `size` that is not a multiple of
//! 2 MiB, or is 0, is refused as Cloud Hypervisor refuses it.

mod common;

use common::{HUGE_PAGES_2M, Memvisor, Outcome, planned, refused};

const M: u64 = 1 << 20;
const G: u64 = 1 << 30;

fn plan(json: &str) -> Outcome {
    Memvisor::new()
        .flags(&HUGE_PAGES_2M)
        .run(&["plan", "--from", "cloud-hypervisor", "--", json])
}

/// A `VmConfig` of 36 address bits (64 GiB) with boot RAM of `size` bytes (on x86_64 from
/// 4 GiB it ends at `size + 1 GiB`) and these `pmem` entries.
fn json(size: u64, pmem: &str) -> String {
    format!(
        r#"{{"payload": {{"kernel": "vmlinux"}}, "cpus": {{"boot_vcpus": 1, "max_vcpus": 1,
 "max_phys_bits": 36}}, "memory": {{"size": {size}}}, "pmem": [{pmem}]}}"#
    )
}

#[track_caller]
fn assert_refused(json: &str, words: &[&str]) {
    refused(json, plan(json), words);
}

#[track_caller]
fn assert_planned(json: &str) {
    planned(json, plan(json));
}

#[test]
fn cloud_hypervisor_pmem_regions_lower_the_end_of_guest_memory() {
    // Three BARs (virtio-rng, virtio-console, virtio-pmem) below a 2 GiB region at
    // [64 GiB - 2 MiB - 2 GiB, 64 GiB - 2 MiB): the lowest at 64 GiB - 2 GiB - 24 MiB.
    let pmem = format!(r#"{{"file": "/p", "size": {}}}"#, 2 * G);
    let last = 64 * G - 2 * G - 24 * M;
    assert_planned(&json(last - G, &pmem));
    assert_refused(
        &json(last - G + 2 * M, &pmem),
        &["size: ", "device area", "virtio-pmem"],
    );
    // Two regions, 1 GiB and 2 MiB, from 64 GiB - 2 MiB down to 64 GiB - 1 GiB - 4 MiB: 4 BARs
    // below, the highest at 64 GiB - 1 GiB - 8 MiB, the lowest at 64 GiB - 1 GiB - 32 MiB.
    let two = format!(
        r#"{{"file": "/p", "size": {}}}, {{"file": "/q", "size": {}}}"#,
        G,
        2 * M
    );
    let last = 64 * G - G - 32 * M;
    assert_planned(&json(last - G, &two));
    assert_refused(&json(last - G + 4 * M, &two), &["device area"]);
    // A region whose size is not given is the file's, which is not read: only its BAR counts.
    let unknown = r#"{"file": "/p"}"#;
    let last = 64 * G - 24 * M;
    assert_planned(&json(last - G, unknown));
    assert_refused(&json(last - G + 4 * M, unknown), &["device area"]);
}

#[test]
fn cloud_hypervisor_pmem_size_is_a_multiple_of_2_mib() {
    for size in [0, M, 2 * M + 4096] {
        assert_refused(
            &json(G, &format!(r#"{{"file": "/p", "size": {size}}}"#)),
            &["pmem[0].size", "2 MiB"],
        );
    }
    assert_refused(
        &json(G, r#"{"file": "/p", "size": "2M"}"#),
        &["pmem[0].size"],
    );
    assert_planned(&json(G, r#"{"file": "/p", "size": null}"#));
}

#[test]
fn cloud_hypervisor_pmem_regions_past_the_address_space_are_named_at_their_total() {
    // Two regions of 2^63 bytes: 2^64 bytes together, which is not a 64-bit number. The
    // message gives their total as it is, and says they alone leave no room.
    let half = 1u64 << 63;
    let two = format!(r#"{{"file": "/p", "size": {half}}}, {{"file": "/q", "size": {half}}}"#);
    let err = refused(
        "two regions of 2^63 bytes",
        plan(&json(G, &two)),
        &[
            "16777216 TiB of virtio-pmem regions",
            "below its platform device area",
        ],
    );
    assert!(!err.contains("18446744073709551615"), "{err}");
    // One region larger than the 64 GiB space: the same.
    let one = format!(r#"{{"file": "/p", "size": {}}}"#, 128 * G);
    refused(
        "a region past the space",
        plan(&json(G, &one)),
        &[
            "128 GiB of virtio-pmem regions",
            "below its platform device area",
        ],
    );
}
