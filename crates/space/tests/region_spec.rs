//! `RegionSpec`: what the builder records is what the accessors give back, the names shown in
//! messages, and the option combinations `validate` refuses (each with its reason).

use std::path::PathBuf;

use memvisor_space::{
    Backing, Error, HugePageFallback, HugePageSize, HugePages, LINUX_MOST_NUMNODES, NumaBinding,
    NumaPolicy, Protection, RegionSpec, RegionType,
};
use vm_memory::GuestAddress;

const MIB: u64 = 1 << 20;

fn reason(spec: &RegionSpec) -> &'static str {
    match spec.validate() {
        Err(Error::InvalidSpec { reason, .. }) => reason,
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
}

#[test]
fn builder_options_read_back_through_accessors() {
    let spec = RegionSpec::ram(GuestAddress(4 * MIB), 2 * MIB)
        .with_numa(NumaBinding::new(NumaPolicy::Interleave, [1, 3]))
        .with_backing(Backing::Memfd)
        .with_protection(Protection::Read)
        .with_huge_pages(HugePages::Transparent)
        .with_fallback(HugePageFallback::Transparent)
        .with_hotplug(true)
        .with_dontfork(true)
        .with_prefault_threads(3)
        .with_dirty_tracking(true);
    let numa = spec.numa().unwrap();
    assert_eq!(numa.policy(), NumaPolicy::Interleave);
    assert_eq!(numa.nodes(), [1, 3]);
    assert_eq!(spec.backing(), &Backing::Memfd);
    assert_eq!(spec.protection(), Protection::Read);
    assert_eq!(spec.huge_pages(), HugePages::Transparent);
    assert_eq!(spec.fallback(), HugePageFallback::Transparent);
    assert!(spec.hotplug());
    assert!(spec.dontfork());
    assert_eq!(spec.prefault_threads(), 3);
    assert!(spec.dirty_tracking());
    spec.validate().unwrap();

    let plain = RegionSpec::ram(GuestAddress(0), MIB);
    assert!(plain.numa().is_none());
    assert_eq!(plain.protection(), Protection::default());
    assert_eq!(plain.fallback(), HugePageFallback::Fail);
    assert!(!plain.hotplug() && !plain.dontfork() && !plain.dirty_tracking());
    assert_eq!(plain.prefault_threads(), 0);
}

#[test]
fn range_past_the_top_errors_instead_of_saturating() {
    let top = RegionSpec::ram(GuestAddress(u64::MAX - MIB + 1), 2 * MIB);
    assert!(matches!(
        top.range(),
        Err(Error::Overflow { base, size }) if base == u64::MAX - MIB + 1 && size == 2 * MIB
    ));
    let empty = RegionSpec::ram(GuestAddress(MIB), 0);
    assert!(matches!(empty.range(), Err(Error::ZeroSize { base: MIB })));
    let last = RegionSpec::ram(GuestAddress(u64::MAX - MIB + 1), MIB)
        .range()
        .unwrap();
    assert_eq!(last.last(), GuestAddress(u64::MAX));
}

#[test]
fn names_in_messages_are_stable() {
    let types = [
        RegionType::Ram,
        RegionType::Device,
        RegionType::Dax,
        RegionType::Firmware,
        RegionType::Reserved,
    ];
    let shown: Vec<String> = types.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["RAM", "device", "DAX", "firmware", "reserved"]);
    let policies = [
        NumaPolicy::Preferred,
        NumaPolicy::Bind,
        NumaPolicy::Interleave,
    ];
    let shown: Vec<String> = policies.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["preferred", "bind", "interleave"]);
    assert_eq!(Backing::AnonymousShared.name(), "anon-shared");
    assert_eq!(
        Backing::File {
            path: PathBuf::from("/x"),
            offset: 0
        }
        .name(),
        "file"
    );
}

#[test]
fn protection_is_vmems_and_shows_rwx() {
    // One protection type for the workspace: the spec's is memvisor-vmem's.
    let spec = RegionSpec::ram(GuestAddress(0), MIB).with_protection(Protection::Read);
    let vmem: memvisor_vmem::Protection = spec.protection();
    assert_eq!(vmem, memvisor_vmem::Protection::Read);
    assert_eq!(Protection::default(), Protection::ReadWrite);
    assert!(Protection::ReadWrite.readable() && Protection::ReadWrite.writable());
    assert_eq!(Protection::Read.to_string(), "r--");
    assert_eq!(Protection::None.to_string(), "---");
}

#[test]
fn validate_contradictory_options_errors_with_reason() {
    let file = |offset| Backing::File {
        path: PathBuf::from("/nonexistent/image"),
        offset,
    };
    let at = GuestAddress(0);
    assert_eq!(
        reason(
            &RegionSpec::ram(at, 2 * MIB)
                .with_backing(file(0))
                .with_huge_pages(HugePages::Explicit(HugePageSize::Size2M))
        ),
        "explicit huge pages need an anonymous, memfd or hugetlbfs backing"
    );
    assert_eq!(
        reason(&RegionSpec::ram(at, MIB).with_backing(Backing::Hugetlbfs("/dev/hugepages".into()))),
        "a hugetlbfs backing needs explicit huge pages"
    );
    assert_eq!(
        reason(&RegionSpec::new(RegionType::Firmware, at, MIB).with_hotplug(true)),
        "only RAM regions are hot-pluggable"
    );
    assert_eq!(
        reason(&RegionSpec::new(RegionType::Reserved, at, MIB).with_backing(Backing::Memfd)),
        "a reserved region has no host memory"
    );
    assert_eq!(
        reason(&RegionSpec::ram(at, MIB).with_backing(Backing::None)),
        "this region type needs host memory"
    );
    assert_eq!(
        reason(&RegionSpec::new(RegionType::Device, at, MIB).with_dirty_tracking(true)),
        "NUMA, huge pages, prefault, dontfork and dirty tracking need host memory"
    );
    assert_eq!(
        reason(&RegionSpec::ram(at, MIB).with_numa(NumaBinding::new(NumaPolicy::Bind, []))),
        "the NUMA binding names no node"
    );
    // A file offset off the page grid is refused with the offset.
    assert!(matches!(
        RegionSpec::ram(at, MIB).with_backing(file(0x10)).validate(),
        Err(Error::Misaligned { base: 0x10, .. })
    ));
    // The message names the region.
    let err = RegionSpec::new(RegionType::Firmware, GuestAddress(0x1000), 0x1000)
        .with_hotplug(true)
        .validate()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid firmware region at 0x1000: only RAM regions are hot-pluggable"
    );
}

#[test]
fn check_host_pages_file_offset_off_host_page_errors() {
    let spec = RegionSpec::ram(GuestAddress(0), MIB).with_backing(Backing::File {
        path: PathBuf::from("/nonexistent/image"),
        offset: 0x10,
    });
    assert!(matches!(
        spec.check_host_pages(),
        Err(Error::Misaligned { base: 0x10, .. })
    ));
    RegionSpec::ram(GuestAddress(0), MIB)
        .check_host_pages()
        .unwrap();
}

/// A host NUMA node numbered 1,024 or more is in no Linux (`MAX_NUMNODES` is at most 1,024,
/// and `mbind` is refused past it), so `validate`, and with it a plan that reads nothing from
/// the host, refuses it as it refuses a guest node past that limit; 1,023 is a node a host may
/// have (backing asks the host whether it does).
#[test]
fn validate_refuses_a_host_node_no_linux_has() {
    let at = GuestAddress(0);
    for nodes in [
        vec![LINUX_MOST_NUMNODES],
        vec![0, 4095],
        vec![1 << 31],
        vec![u32::MAX],
    ] {
        for policy in [
            NumaPolicy::Bind,
            NumaPolicy::Preferred,
            NumaPolicy::Interleave,
        ] {
            let spec = RegionSpec::ram(at, MIB).with_numa(NumaBinding::new(policy, nodes.clone()));
            assert_eq!(
                reason(&spec),
                "the NUMA binding names a node at or past 1024, which no Linux host has",
                "{nodes:?}"
            );
        }
    }
    RegionSpec::ram(at, MIB)
        .with_numa(NumaBinding::new(
            NumaPolicy::Interleave,
            [0, LINUX_MOST_NUMNODES - 1],
        ))
        .validate()
        .unwrap();
}
