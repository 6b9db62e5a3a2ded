//! A plan's SRAT against the guest kernel's NUMA limits: Linux maps at most `MAX_NUMNODES`
//! proximity domains to nodes and keeps at most `NR_NODE_MEMBLKS` (twice that) memory ranges,
//! and past either rejects the whole SRAT (`bad_srat`: the guest boots without NUMA). A plan
//! Linux would reject that way is refused with a typed error naming the count and the limit.
//!
//! Not run under Miri: the planner has no unsafe code.

#![cfg(not(miri))]

use memvisor_space::plan::{HotplugRequest, NodeRequest, PlanRequest, plan};
use memvisor_space::{Error, LINUX_MAX_NUMNODES, LINUX_MOST_NUMNODES, Platform, RegionSpec};
use vm_memory::GuestAddress;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn request(nodes: usize, size: u64, hotplug: bool) -> PlanRequest {
    PlanRequest {
        platform: Platform::x86_64(),
        phys_bits: 40,
        nodes: vec![
            NodeRequest {
                size,
                memory: RegionSpec::ram(GuestAddress(0), 0),
            };
            nodes
        ],
        serial: None,
        devices: vec![],
        hotplug: hotplug.then(|| HotplugRequest {
            slots: 1,
            slot_size: 128 * MIB,
            node: 0,
            memory: RegionSpec::ram(GuestAddress(0), 0),
        }),
        low_ram_limit: None,
        window_align: None,
    }
}

#[test]
fn numa_ranges_for_guest_refuses_more_nodes_than_linux_maps() {
    assert_eq!(LINUX_MAX_NUMNODES, 64);
    let at_limit = plan(&request(64, 2 * MIB, false)).unwrap();
    assert_eq!(
        at_limit.numa_ranges_for_guest(LINUX_MAX_NUMNODES).unwrap(),
        at_limit.numa_ranges()
    );
    let past = plan(&request(65, 2 * MIB, false)).unwrap();
    let err = past.numa_ranges_for_guest(LINUX_MAX_NUMNODES).unwrap_err();
    assert!(
        matches!(err, Error::TooManyGuestNodes { nodes: 65, max: 64 }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the SRAT has 65 guest NUMA nodes, more than the 64 the guest kernel maps (it would \
         boot without NUMA)"
    );
    // A kernel built with more nodes (MAXSMP: 1,024) takes it.
    assert_eq!(
        past.numa_ranges_for_guest(1024).unwrap(),
        past.numa_ranges()
    );
}

#[test]
fn numa_ranges_for_guest_refuses_more_ranges_than_linux_keeps() {
    // One node over the 32-bit hole (two ranges) and the hotplug window: three ranges, more
    // than the two a kernel of one node keeps.
    let split = plan(&request(1, 4 * GIB, true)).unwrap();
    let ranges = split.numa_ranges();
    assert_eq!(ranges.len(), 3, "{ranges:?}");
    let err = split.numa_ranges_for_guest(1).unwrap_err();
    assert!(
        matches!(err, Error::TooManyNumaRanges { ranges: 3, max: 2 }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the SRAT has 3 memory ranges, more than the 2 the guest kernel keeps (it would boot \
         without NUMA)"
    );
    assert_eq!(split.numa_ranges_for_guest(2).unwrap(), ranges);
    // No limit of zero nodes: every kernel has one.
    assert!(matches!(
        split.numa_ranges_for_guest(0),
        Err(Error::GuestNodeLimitUnknown {
            max_nodes: 0,
            most: 1024
        })
    ));
}

/// A plan whose nodes were edited by hand may name a node past the proximity domains Linux
/// reads (`MAX_PXM_DOMAINS`: 256, or `MAX_NUMNODES` where that is more), which it answers as it
/// answers too many nodes ("SRAT: Too many proximity domains", the whole SRAT rejected) however
/// few nodes there are; the check refuses it too, with the node and the limit.
#[test]
fn numa_ranges_for_guest_refuses_a_node_past_linux_proximity_domains() {
    let mut edited = plan(&request(2, 2 * MIB, false)).unwrap();
    for r in &mut edited.regions {
        if r.node == Some(1) {
            r.node = Some(256);
        }
    }
    assert!(edited.numa_ranges().iter().any(|r| r.node == 256));
    let err = edited
        .numa_ranges_for_guest(LINUX_MAX_NUMNODES)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::GuestNodeOutOfRange {
                node: 256,
                domains: 256
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the SRAT names guest NUMA node 256, past the 256 proximity domains the guest kernel \
         reads (it would boot without NUMA)"
    );
    // A kernel of more nodes reads as many proximity domains.
    assert_eq!(
        edited.numa_ranges_for_guest(1024).unwrap(),
        edited.numa_ranges()
    );
    for r in &mut edited.regions {
        if r.node == Some(256) {
            r.node = Some(255);
        }
    }
    assert_eq!(
        edited.numa_ranges_for_guest(LINUX_MAX_NUMNODES).unwrap(),
        edited.numa_ranges()
    );
}

/// No Linux maps more than 1,024 nodes (`NODES_SHIFT` is at most 10 on every architecture), so
/// a limit of more is no guest kernel's, nor is one of none: either is refused with the limit
/// named, where a limit past 2^31 let a node numbered 2^31 or more through (and 0 refused every
/// plan as "too many nodes"). At the most, every node at or past 1,024 is refused.
#[test]
fn numa_ranges_for_guest_refuses_a_limit_no_linux_has() {
    assert_eq!(LINUX_MOST_NUMNODES, 1024);
    let mut edited = plan(&request(2, 2 * MIB, false)).unwrap();
    for r in &mut edited.regions {
        if r.node == Some(1) {
            r.node = Some(1 << 31);
        }
    }
    for max_nodes in [
        0,
        3,
        100,
        LINUX_MOST_NUMNODES + 1,
        2048,
        (1 << 31) + 1,
        u32::MAX,
    ] {
        let err = edited.numa_ranges_for_guest(max_nodes).unwrap_err();
        assert!(
            matches!(err, Error::GuestNodeLimitUnknown { max_nodes: m, most: 1024 } if m == max_nodes),
            "{max_nodes}: {err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "no Linux guest kernel maps {max_nodes} NUMA nodes (MAX_NUMNODES is a power of \
                 two from 1 to 1024)"
            )
        );
    }
    for node in [LINUX_MOST_NUMNODES, 1 << 31, u32::MAX] {
        for r in &mut edited.regions {
            if r.node.is_some_and(|n| n > 0) {
                r.node = Some(node);
            }
        }
        assert!(
            matches!(
                edited.numa_ranges_for_guest(LINUX_MOST_NUMNODES),
                Err(Error::GuestNodeOutOfRange { node: n, domains: 1024 }) if n == node
            ),
            "{node}"
        );
    }
}
