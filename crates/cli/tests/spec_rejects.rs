//! Spec values that are well-formed TOML but contradict each other or the machine: each is
//! refused by `parse` with the field it names and a message that says what is wrong.

use memvisor_cli::spec::{Source, parse};

/// The field and message of the refusal of `text`.
fn refused(text: &str) -> (String, String) {
    let err = parse(Source {
        origin: "vm.toml",
        text,
    })
    .expect_err("the spec should be refused");
    (err.field.clone(), err.to_string())
}

#[track_caller]
fn assert_refused(text: &str, field: &str, message: &str) {
    let (got_field, got) = refused(text);
    assert_eq!(got_field, field, "{got}");
    assert!(got.contains(message), "{got}");
}

const MEM: &str = "[memory]\nsize = \"256MiB\"\n";

#[test]
fn parse_phys_bits_out_of_range_refused() {
    assert_refused(
        &format!("phys_bits = 20\n{MEM}"),
        "phys_bits",
        "20 address bits; use 32 to 52",
    );
    assert_refused(
        &format!("phys_bits = 53\n{MEM}"),
        "phys_bits",
        "53 address bits; use 32 to 52",
    );
}

#[test]
fn parse_memory_without_size_or_nodes_refused() {
    assert_refused(
        "[memory]\n",
        "memory.size",
        "no RAM: give memory.size or [[numa]] nodes",
    );
}

#[test]
fn parse_numa_policy_without_host_nodes_refused() {
    assert_refused(
        "[memory]\n[[numa]]\nsize = \"64MiB\"\npolicy = \"interleave\"\n",
        "numa[0].policy",
        "a policy needs host_nodes",
    );
}

#[test]
fn parse_hotplug_contradictions_refused() {
    assert_refused(
        &format!("{MEM}[hotplug]\nslots = 0\nslot_size = \"1GiB\"\n"),
        "hotplug.slots",
        "zero slots (leave [hotplug] out for none)",
    );
    assert_refused(
        "[memory]\nsize = \"256MiB\"\nhuge_pages = \"2MiB\"\n[hotplug]\nslots = 1\nslot_size = \"3MiB\"\n",
        "hotplug.slot_size",
        "3 MiB is not a multiple of the 2 MiB huge page size",
    );
    assert_refused(
        &format!("{MEM}[hotplug]\nslots = 2\nslot_size = \"0x8000000000000000\"\n"),
        "hotplug.slot_size",
        "add up to 2^64 bytes or more",
    );
    assert_refused(
        &format!("{MEM}[hotplug]\nslots = 1\nslot_size = \"1GiB\"\nnode = 3\n"),
        "hotplug.node",
        "guest NUMA node 3 does not exist (1 node)",
    );
}

#[test]
fn parse_serial_of_the_other_architecture_refused() {
    assert_refused(
        &format!("{MEM}[serial]\naddress = \"0x9000000\"\n"),
        "serial.address",
        "the x86_64 serial port uses port I/O; give `port`",
    );
    assert_refused(
        &format!("arch = \"aarch64\"\n{MEM}[serial]\nport = 0x3f8\n"),
        "serial.port",
        "the aarch64 serial port is MMIO; give `address`",
    );
    assert_refused(
        &format!("{MEM}[serial]\nport = 0xfff9\n"),
        "serial.port",
        "the serial port's 8 ports 0xfff9 to 0x10000 run past the 16-bit I/O space, which ends at 0xffff",
    );
    assert_refused(
        &format!("{MEM}[serial]\nport = 0x10000\n"),
        "serial.port",
        "port 0x10000 is past the 16-bit I/O space (0 to 0xffff)",
    );
    assert_refused(
        &format!("{MEM}[serial]\nport = 0xffffffffffffffff\n"),
        "serial.port",
        "port 0xffffffffffffffff is past the 16-bit I/O space (0 to 0xffff)",
    );
}

#[test]
fn parse_device_window_mistakes_refused() {
    assert_refused(
        &format!("{MEM}[[device]]\ntype = \"virtio-net\"\nmmio_size = \"0x1800\"\n"),
        "device[0].mmio_size",
        "0x1800 is not a power of two of at least 4 KiB",
    );
    assert_refused(
        &format!("{MEM}[[device]]\ntype = \"virtio-net\"\nmmio_size = \"0x800\"\n"),
        "device[0].mmio_size",
        "0x800 is not a power of two of at least 4 KiB",
    );
    assert_refused(
        &format!(
            "{MEM}[[device]]\ntype = \"virtio-net\"\nmmio_size = \"8KiB\"\naddress = \"0xd0001000\"\n"
        ),
        "device[0].address",
        "0xd0001000 is not aligned to the MMIO size 0x2000",
    );
    assert_refused(
        &format!("{MEM}[[device]]\ntype = \"virtio-fs\"\ndax_size = \"3MiB\"\n"),
        "device[0].dax_size",
        "3 MiB is not a multiple of 2 MiB",
    );
    assert_refused(
        &format!("{MEM}[[device]]\ntype = \"virtio-net\"\ndax_size = \"2MiB\"\n"),
        "device[0].dax_size",
        "a virtio-net has no DAX window",
    );
    assert_refused(
        &format!("{MEM}[[device]]\ntype = \"virtio-pmem\"\n"),
        "device[0].dax_size",
        "a virtio-pmem device needs dax_size",
    );
}

#[test]
fn parse_huge_page_option_contradictions_refused() {
    assert_refused(
        &format!("{MEM}hugetlbfs = \"/mnt/huge\"\n"),
        "memory.hugetlbfs",
        "a hugetlbfs mount is only used with backing = \"hugetlbfs\"",
    );
    assert_refused(
        &format!("{MEM}backing = \"hugetlbfs\"\n"),
        "memory.huge_pages",
        "a hugetlbfs backing needs huge_pages = \"2MiB\" or \"1GiB\"",
    );
    assert_refused(
        &format!("{MEM}huge_pages = \"transparent\"\nhuge_page_fallback = \"transparent\"\n"),
        "memory.huge_page_fallback",
        "a fallback only applies to explicit huge pages",
    );
}

#[test]
fn parse_accepts_each_valid_neighbour() {
    // The values next to each refusal above are accepted, so the rules are not too wide.
    for text in [
        format!("phys_bits = 32\n{MEM}"),
        format!("phys_bits = 52\n{MEM}"),
        "[memory]\n[[numa]]\nsize = \"64MiB\"\nhost_nodes = [0]\npolicy = \"interleave\"\n".into(),
        format!("{MEM}[serial]\nport = 0xfff8\n"),
        format!("arch = \"aarch64\"\n{MEM}[serial]\naddress = \"0x9000000\"\n"),
        format!("{MEM}[[device]]\ntype = \"virtio-fs\"\ndax_size = \"4MiB\"\n"),
        format!("{MEM}[[device]]\ntype = \"virtio-fs\"\n"),
        format!(
            "{MEM}[[device]]\ntype = \"virtio-net\"\nmmio_size = \"8KiB\"\naddress = \"0xd0002000\"\n"
        ),
        format!("{MEM}huge_pages = \"2MiB\"\nhuge_page_fallback = \"transparent\"\n"),
        format!("{MEM}huge_pages = \"transparent\"\nhuge_page_fallback = \"fail\"\n"),
    ] {
        let parsed = parse(Source {
            origin: "vm.toml",
            text: &text,
        });
        assert!(parsed.is_ok(), "{text}: {:?}", parsed.err());
    }
}

#[test]
fn parse_name_defaults_to_file_stem() {
    let spec = parse(Source {
        origin: "/etc/vms/web server.toml",
        text: MEM,
    })
    .unwrap();
    assert_eq!(spec.name, "web server");
    let spec = parse(Source {
        origin: "vm.toml",
        text: &format!("name = \"given\"\n{MEM}"),
    })
    .unwrap();
    assert_eq!(spec.name, "given");
}

#[test]
fn parse_hugetlbfs_with_transparent_fallback_refused() {
    // A file on hugetlbfs has explicit huge pages or nothing: it cannot fall back.
    assert_refused(
        "[memory]\nsize = \"64MiB\"\nbacking = \"hugetlbfs\"\nhuge_pages = \"2MiB\"\nhuge_page_fallback = \"transparent\"\n",
        "memory.huge_page_fallback",
        "a hugetlbfs file cannot fall back to transparent huge pages",
    );
}
