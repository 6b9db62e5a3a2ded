//! Specs that every field check accepts and the planner refuses (windows past the address
//! bits, fixed addresses outside the device windows, windows larger than any device window):
//! each reaches `memvisor plan` as a spec error, exit code 2, naming the field and its line;
//! and specs at the edges the planner accepts are planned.

mod common;

use common::{Memvisor, Outcome, scratch};

/// Runs `memvisor plan FILE` in-process on `text`, written to a file named after `row`.
fn plan(row: &str, text: &str) -> Outcome {
    Memvisor::new().run_on_file(
        scratch(&format!("refusal-{row}.toml")),
        text,
        &["plan", "FILE"],
    )
}

#[test]
fn planner_refusals_are_spec_errors_naming_the_field() {
    let rows = [
        (
            "slots-past-the-address-bits",
            "phys_bits = 36\n[memory]\nsize = \"1GiB\"\n[hotplug]\nslots = 1024\nslot_size = \
             \"1GiB\"\n",
            "hotplug.slot_size",
            "does not fit in a 36-bit guest physical address space",
        ),
        (
            "dax-past-the-address-bits",
            "phys_bits = 33\n[memory]\nsize = \"1GiB\"\n[[device]]\ntype = \
             \"virtio-pmem\"\ndax_size = \"8GiB\"\n",
            "device[0].dax_size",
            "does not fit in a 33-bit guest physical address space",
        ),
        (
            "device-over-the-ioapic",
            "[memory]\nsize = \"1GiB\"\n[[device]]\ntype = \"virtio-net\"\naddress = \
             \"0xfec00000\"\n",
            "device[0].address",
            "does not fit in the device windows",
        ),
        (
            "device-at-the-top",
            "phys_bits = 52\n[memory]\nsize = \"1GiB\"\n[[device]]\ntype = \
             \"virtio-net\"\naddress = \"0xffffffffff000\"\n",
            "device[0].address",
            "does not fit in the device windows",
        ),
        (
            "device-larger-than-its-windows",
            "[memory]\nsize = \"1GiB\"\n[[device]]\ntype = \"virtio-net\"\nmmio_size = \
             \"2GiB\"\n",
            "device[0].mmio_size",
            "does not fit in the device windows",
        ),
        (
            "serial-over-the-gic",
            "arch = \"aarch64\"\n[memory]\nsize = \"1GiB\"\n[serial]\naddress = \
             \"0x4000000\"\n",
            "serial.address",
            "does not fit in the device windows",
        ),
        (
            "device-named-as-kvm-s-pit",
            "[memory]\nsize = \"1GiB\"\n[[device]]\ntype = \"virtio-net\"\nname = \"PIT\"\n",
            "device[0].name",
            "one of KVM's in-kernel devices",
        ),
        (
            "ram-past-the-top",
            "phys_bits = 52\n[memory]\nsize = \"4503599627366400\"\n",
            "memory.size",
            "52-bit",
        ),
    ];
    for (row, text, field, problem) in rows {
        let (code, out, err) = plan(row, text);
        assert_eq!(code, 2, "{row}: {err}");
        assert!(out.is_empty(), "{row}: {out}");
        assert!(
            err.starts_with(&format!("error: {field}: ")),
            "{row}: {err}"
        );
        assert!(err.contains(problem), "{row}: {err}");
        // The line and column of the field's value.
        assert!(
            err.contains("refusal-") && err.contains(".toml:"),
            "{row}: {err}"
        );
        assert!(!err.contains("panicked"), "{row}: {err}");
    }
}

#[test]
fn specs_at_the_planner_edges_are_planned() {
    for (row, text) in [
        // RAM up to the last address of a 52-bit space, the most a host has (planned; `back`
        // refuses it).
        (
            "ram-to-the-top",
            "arch = \"aarch64\"\nphys_bits = 52\n[memory]\nsize = \"4194303GiB\"\n",
        ),
        // The fewest address bits, with everything under 4 GiB.
        ("fewest-bits", "phys_bits = 32\n[memory]\nsize = \"3GiB\"\n"),
        // The serial port's 8 ports ending at the last port.
        (
            "serial-at-the-last-port",
            "[memory]\nsize = \"1GiB\"\n[serial]\nport = 0xfff8\n",
        ),
        // A window alignment of 2 MiB with 1 GiB pages.
        (
            "gib-pages-in-2mib-windows",
            "window_align = \"2MiB\"\n[memory]\nsize = \"1GiB\"\nhuge_pages = \
             \"1GiB\"\n[hotplug]\nslots = 2\nslot_size = \"1GiB\"\n",
        ),
    ] {
        let (code, out, err) = plan(row, text);
        assert_eq!(code, 0, "{row}: {err}");
        assert!(err.is_empty(), "{row}: {err}");
        assert!(!out.is_empty(), "{row}");
    }
}
