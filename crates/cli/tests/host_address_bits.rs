//! `memvisor check` takes the host CPU's physical address bits where Cloud Hypervisor takes
//! them: on x86_64 from CPUID leaf `0x8000_0008` (36 bits on a CPU without it), not from
//! `/proc/cpuinfo`, which takes away the bits memory encryption reserves and which an AArch64
//! host does not fill in.

mod common;

use memvisor_cli::check::{cpu_phys_bits, host_facts, phys_bits_of_cpuid};

#[test]
fn phys_bits_of_cpuid_are_the_low_byte_or_36() {
    assert_eq!(phys_bits_of_cpuid(None), 36);
    assert_eq!(phys_bits_of_cpuid(Some(0x0000_3030)), 48);
    assert_eq!(phys_bits_of_cpuid(Some(0xffff_ff2e)), 46);
    assert_eq!(phys_bits_of_cpuid(Some(0x0000_3934)), 52);
    assert_eq!(phys_bits_of_cpuid(Some(0)), 0);
}

/// The bits CPUID gives on this host, read here on its own.
#[cfg(target_arch = "x86_64")]
fn cpuid_bits() -> u32 {
    use std::arch::x86_64::__cpuid;
    #[allow(unused_unsafe)]
    let eax = |leaf: u32| {
        // SAFETY: every x86_64 CPU has CPUID, which reads identification registers only.
        unsafe { __cpuid(leaf) }.eax
    };
    if eax(0x8000_0000) >= 0x8000_0008 {
        eax(0x8000_0008) & 0xff
    } else {
        36
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn host_bits_are_cpuid_ones() {
    let bits = cpuid_bits();
    assert_eq!(cpu_phys_bits(), Some(bits));
    assert_eq!(host_facts().unwrap().phys_bits, Some(bits));
    // And `check` says so.
    let (_, out, err) = common::run(&["check", "--json", &common::example("microvm.toml")]);
    assert!(out.contains(&format!("host CPU {bits} bits")), "{out}{err}");
}

#[cfg(not(target_arch = "x86_64"))]
#[test]
fn host_bits_are_not_read_off_x86_64() {
    assert_eq!(cpu_phys_bits(), None);
    assert_eq!(host_facts().unwrap().phys_bits, None);
}
