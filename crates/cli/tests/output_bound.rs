//! SPEC.md, Limits: what `plan` writes is bounded by what a spec may hold; at every limit at
//! once, `plan --json` is some 34 MB and the table some 0.8 MB.

use memvisor_cli::spec::{MAX_DEVICES, MAX_GUEST_NODES, MAX_HOST_NODES};

mod common;

/// A spec at every limit that makes output: the most nodes, each bound to the most host
/// nodes, the most hotplug slots (of node 0) and devices (with DAX windows), names of the
/// most characters.
fn largest_spec() -> String {
    let hosts: Vec<String> = (0..MAX_HOST_NODES).map(|h| h.to_string()).collect();
    let hosts = hosts.join(", ");
    let mut text = format!(
        "name = \"{}\"\narch = \"aarch64\"\nphys_bits = 52\n[memory]\nbacking = \"memfd\"\n",
        "v".repeat(64)
    );
    for _ in 0..MAX_GUEST_NODES {
        text.push_str(&format!(
            "[[numa]]\nsize = \"1GiB\"\nhost_nodes = [{hosts}]\npolicy = \"interleave\"\n"
        ));
    }
    text.push_str("[hotplug]\nslots = 1024\nslot_size = \"1GiB\"\n[serial]\n");
    // The serial port takes one interrupt.
    for i in 0..MAX_DEVICES - 1 {
        text.push_str(&format!(
            "[[device]]\ntype = \"virtio-fs\"\nname = \"{}{i:04}\"\ndax_size = \"1GiB\"\n",
            "d".repeat(60)
        ));
    }
    assert!(text.len() < 1 << 20, "{}", text.len());
    text
}

#[test]
fn plan_output_at_every_limit_is_bounded() {
    let path = common::scratch("output-bound.toml");
    std::fs::write(&path, largest_spec()).unwrap();
    let path = path.to_str().unwrap();
    for (args, most) in [
        (&["plan", "--json", path][..], 35_000_000),
        (&["plan", path][..], 1_000_000),
    ] {
        let (code, out, err) = common::run(args);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.len() <= most,
            "{args:?}: {} bytes, more than {most}",
            out.len()
        );
    }
    std::fs::remove_file(path).unwrap();
}
