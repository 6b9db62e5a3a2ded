//! Every message about an interrupt names what its number is on the architecture: a GSI on
//! x86_64, a GIC INTID on aarch64 (where a spec's `irq` is the INTID, and the SPI number is the
//! INTID minus 32).

mod common;

/// The first line `memvisor plan --arch ARCH` writes on standard error for `spec`, and its
/// exit code.
fn plan_error(arch: &str, name: &str, spec: &str) -> (Option<i32>, String) {
    let path = common::scratch(&format!("interrupt-{arch}-{name}.toml"));
    std::fs::write(&path, spec).unwrap();
    let out = common::binary(&["plan", "--arch", arch, path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.code(),
        stderr.lines().next().unwrap_or_default().to_owned(),
    )
}

const RAM: &str = "[memory]\nsize = \"256MiB\"\n";

fn device(ty: &str, irq: u32) -> String {
    format!("[[device]]\ntype = \"{ty}\"\nirq = {irq}\n")
}

#[test]
fn aarch64_interrupt_taken_twice_is_named_by_its_intid_and_spi() {
    let spec = format!(
        "{RAM}{}{}",
        device("virtio-net", 40),
        device("virtio-blk", 40)
    );
    assert_eq!(
        plan_error("aarch64", "taken", &spec),
        (
            Some(2),
            "error: device[1].irq: INTID 40 (SPI 8) overlaps the one of net0".to_owned()
        )
    );
    let spec = format!("{RAM}[serial]\nirq = 32\n{}", device("virtio-net", 32));
    assert_eq!(
        plan_error("aarch64", "taken-serial", &spec),
        (
            Some(2),
            "error: device[0].irq: INTID 32 (SPI 0) overlaps the one of serial".to_owned()
        )
    );
}

#[test]
fn aarch64_interrupt_that_is_no_spi_is_named_by_its_intid() {
    for irq in [0, 8, 31, 128, 200, u32::MAX] {
        let spec = format!("{RAM}{}", device("virtio-net", irq));
        assert_eq!(
            plan_error("aarch64", &format!("outside-{irq}"), &spec),
            (
                Some(2),
                format!(
                    "error: device[0].irq: INTID {irq} is not an SPI (SPIs are INTIDs \
                     32..=127)"
                )
            ),
        );
    }
    let spec = format!("{RAM}[serial]\nirq = 5\n");
    assert_eq!(
        plan_error("aarch64", "outside-serial", &spec),
        (
            Some(2),
            "error: serial.irq: INTID 5 is not an SPI (SPIs are INTIDs 32..=127)".to_owned()
        )
    );
}

#[test]
fn aarch64_interrupts_run_out_naming_the_intids() {
    let mut spec = format!("{RAM}[serial]\n");
    for _ in 0..96 {
        spec.push_str("[[device]]\ntype = \"virtio-rng\"\n");
    }
    assert_eq!(
        plan_error("aarch64", "none-left", &spec),
        (
            Some(2),
            "error: device[95].irq: no free SPI is left (INTIDs 32..=127 are all taken)".to_owned()
        )
    );
}

#[test]
fn x86_64_interrupts_are_named_as_gsis() {
    let spec = format!(
        "{RAM}{}{}",
        device("virtio-net", 9),
        device("virtio-blk", 9)
    );
    assert_eq!(
        plan_error("x86_64", "taken", &spec),
        (
            Some(2),
            "error: device[1].irq: GSI 9 overlaps the one of net0".to_owned()
        )
    );
    let spec = format!("{RAM}{}", device("virtio-net", 24));
    assert_eq!(
        plan_error("x86_64", "outside", &spec),
        (
            Some(2),
            "error: device[0].irq: GSI 24 is outside 0..=23".to_owned()
        )
    );
    let mut spec = RAM.to_owned();
    for _ in 0..20 {
        spec.push_str("[[device]]\ntype = \"virtio-rng\"\n");
    }
    assert_eq!(
        plan_error("x86_64", "none-left", &spec),
        (
            Some(2),
            "error: device[19].irq: no free GSI is left (0..=23 are all taken)".to_owned()
        )
    );
}
