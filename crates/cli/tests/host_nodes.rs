//! `numa[].host_nodes` as the binding takes them: a set of host nodes (the kernel's node mask),
//! so a node listed twice is listed once, the order written does not matter, and
//! `preferred` prefers the lowest-numbered node of the set.

use memvisor_cli::check::{Finding, HostFacts, Status, check_spec};
use memvisor_cli::plan::plan;
use memvisor_cli::spec::{Source, parse};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn src(text: &str) -> Source<'_> {
    Source {
        origin: "vm.toml",
        text,
    }
}

fn host(node1_free: u64) -> HostFacts {
    HostFacts {
        numa_nodes: vec![(0, 8 * GIB), (1, node1_free)],
        phys_bits: Some(46),
        max_map_count: Some(65530),
        memory_and_swap: Some(16 * GIB),
        memory_available: Some(8 * GIB),
        ..HostFacts::default()
    }
}

fn numa_findings(text: &str, host: &HostFacts) -> Vec<Finding> {
    let spec = parse(src(text)).unwrap();
    let plan = plan(&spec, src(text)).unwrap();
    check_spec(&spec, &plan, host)
        .into_iter()
        .filter(|f| f.check == "numa")
        .collect()
}

#[test]
fn check_counts_a_node_listed_twice_as_bound_to_it_alone() {
    // Both guest nodes take all their memory from host node 1: 128 MiB where 100 MiB is free.
    let text = "[memory]\n[[numa]]\nsize = \"64MiB\"\nhost_nodes = [1, 1]\n\
                [[numa]]\nsize = \"64MiB\"\nhost_nodes = [1]\n";
    let f = numa_findings(text, &host(100 * MIB));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].status, Status::Warn, "{f:?}");
    assert!(
        f[0].detail
            .starts_with("numa[0], numa[1]: 128 MiB bound to host node 1, which has"),
        "{}",
        f[0].detail
    );
    // Alone, the node listed twice is checked against host node 1 too.
    let text = "[memory]\n[[numa]]\nsize = \"128MiB\"\nhost_nodes = [1, 1]\n";
    let f = numa_findings(text, &host(100 * MIB));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].status, Status::Warn, "{f:?}");
    assert!(
        f[0].detail
            .starts_with("numa[0]: 128 MiB bound to host node 1, which has"),
        "{}",
        f[0].detail
    );
}

#[test]
fn plan_shows_the_host_nodes_the_regions_are_bound_to() {
    let text = "[memory]\n[[numa]]\nsize = \"4GiB\"\nhost_nodes = [3, 1, 3, 0]\npolicy = \
                \"interleave\"\n[hotplug]\nslots = 1\nslot_size = \"1GiB\"\n";
    let spec = parse(src(text)).unwrap();
    assert_eq!(spec.nodes[0].host_nodes, [0, 1, 3]);
    let plan = plan(&spec, src(text)).unwrap();
    let planned: Vec<Vec<u32>> = plan
        .regions
        .iter()
        .chain(&plan.slots)
        .filter_map(|r| r.spec.numa())
        .map(|b| b.nodes().to_vec())
        .collect();
    let shown: Vec<Vec<u32>> = plan
        .map
        .iter()
        .filter(|m| matches!(m.ty, "RAM" | "hotplug"))
        .map(|m| m.backing.host_nodes.clone())
        .collect();
    // Two RAM regions (below and above the hole) and the slot.
    assert_eq!(planned.len(), 3);
    assert_eq!(shown, planned);
    assert_eq!(plan.nodes[0].host_nodes, [0, 1, 3]);
    let line = memvisor_cli::render::plan_text(&plan);
    assert!(line.contains("interleave host 0,1,3"), "{line}");
}

#[test]
fn preferred_must_list_the_node_it_prefers_first() {
    // MPOL_PREFERRED takes the lowest node of its mask: node 0 here, not node 1.
    let text = "[memory]\n[[numa]]\nsize = \"64MiB\"\nhost_nodes = [1, 0]\npolicy = \
                \"preferred\"\n";
    let err = parse(src(text)).unwrap_err();
    assert_eq!(err.field, "numa[0].host_nodes");
    assert_eq!(err.position, Some((4, 14)));
    assert_eq!(
        err.problem.to_string(),
        "policy = \"preferred\" prefers the lowest-numbered of host_nodes (host node 0), not \
         host node 1, written first: write host node 0 first, or host_nodes = [1] to prefer \
         host node 1"
    );
    // Written with the preferred node first, or repeated, it is read.
    for ok in ["[0, 1]", "[0, 1, 0]", "[2, 2]"] {
        let text = format!(
            "[memory]\n[[numa]]\nsize = \"64MiB\"\nhost_nodes = {ok}\npolicy = \"preferred\"\n"
        );
        parse(src(&text)).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    // Other policies take the nodes in any order.
    for policy in ["bind", "interleave"] {
        let text = format!(
            "[memory]\n[[numa]]\nsize = \"64MiB\"\nhost_nodes = [1, 0]\npolicy = \"{policy}\"\n"
        );
        assert_eq!(parse(src(&text)).unwrap().nodes[0].host_nodes, [0, 1]);
    }
}
