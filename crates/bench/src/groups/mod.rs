//! The registry of benchmark groups.
//!
//! Each group lives in its own file, `src/groups/<group>.rs`, and exposes
//! `pub fn run(bench: &Bench) -> Vec<Row>` returning one [`Row`] per scenario and parameter, in
//! the order they should be reported. To register a group, declare its module below and add one
//! [`Group`] entry to [`GROUPS`]:
//!
//! ```text
//! pub mod vmem;
//! ...
//!     Group { name: "vmem", about: "reserve, commit and prefault", run: vmem::run },
//! ```
//!
//! The crate README shows a complete small group to copy from.

pub mod arena;
pub mod capi;
pub mod kvm;
pub mod resources;
pub mod space;
pub mod vec;
pub mod vmem;

use crate::BenchError;
use crate::harness::Bench;
use crate::report::Row;

/// A named group of scenarios the command line can run.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    /// The name used on the command line and in `GROUP.json` (`vmem`, `vec`, …).
    pub name: &'static str,
    /// One line saying what the group measures (shown by `--list`).
    pub about: &'static str,
    /// Runs every scenario of the group and returns the rows.
    pub run: fn(&Bench) -> Vec<Row>,
}

/// Every registered group, in the order a run with no group named goes through them.
pub const GROUPS: &[Group] = &[
    Group {
        name: "arena",
        about: "isolated clients over one block against buddy allocators, talc and malloc",
        run: arena::run,
    },
    Group {
        name: "capi",
        about: "the arena through its C library against the same calls from Rust",
        run: capi::run,
    },
    Group {
        name: "vmem",
        about: "reserve, commit, prefault and decommit host memory",
        run: vmem::run,
    },
    Group {
        name: "vec",
        about: "in-place vectors: concurrent pushes, random reads and memory per element against peers",
        run: vec::run,
    },
    Group {
        name: "space",
        about: "guest address space lookup, hotplug and backing against vm-memory and dbs-address-space",
        run: space::run,
    },
    Group {
        name: "resources",
        about: "ID and address-range allocators against vm-allocator",
        run: resources::run,
    },
    Group {
        name: "kvm",
        about: "KVM memory slots and dirty log kept in sync by memvisor-kvm against raw kvm-ioctls",
        run: kvm::run,
    },
];

/// The names of `registry`'s groups, in order.
#[must_use]
pub fn names(registry: &[Group]) -> Vec<&'static str> {
    registry.iter().map(|group| group.name).collect()
}

/// The groups of `registry` named in `wanted`, in the order named (each once); all of them if
/// `wanted` is empty.
///
/// # Errors
///
/// [`BenchError::UnknownGroup`] for the first name that is not registered; the error lists the
/// known names.
///
/// # Examples
///
/// ```
/// use memvisor_bench::groups::{GROUPS, select};
///
/// assert_eq!(select(GROUPS, &[]).unwrap().len(), GROUPS.len());
/// assert_eq!(select(GROUPS, &["vmem".to_owned()]).unwrap()[0].name, "vmem");
/// assert!(select(GROUPS, &["no-such-group".to_owned()]).is_err());
/// ```
pub fn select(registry: &[Group], wanted: &[String]) -> Result<Vec<Group>, BenchError> {
    if wanted.is_empty() {
        return Ok(registry.to_vec());
    }
    let mut chosen: Vec<Group> = Vec::new();
    for name in wanted {
        let group = registry
            .iter()
            .find(|group| group.name == name.as_str())
            .ok_or_else(|| BenchError::UnknownGroup {
                name: name.clone(),
                known: names(registry).into_iter().map(str::to_owned).collect(),
            })?;
        if !chosen.iter().any(|c| c.name == group.name) {
            chosen.push(*group);
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nothing(_: &Bench) -> Vec<Row> {
        Vec::new()
    }

    const TEST_REGISTRY: &[Group] = &[
        Group {
            name: "one",
            about: "first",
            run: nothing,
        },
        Group {
            name: "two",
            about: "second",
            run: nothing,
        },
    ];

    #[test]
    fn select_none_named_returns_all_in_order() {
        let chosen = select(TEST_REGISTRY, &[]).unwrap();
        assert_eq!(names(&chosen), ["one", "two"]);
    }

    #[test]
    fn select_named_keeps_order_and_drops_repeats() {
        let wanted = ["two", "one", "two"].map(str::to_owned);
        let chosen = select(TEST_REGISTRY, &wanted).unwrap();
        assert_eq!(names(&chosen), ["two", "one"]);
    }

    #[test]
    fn select_unknown_name_errors_listing_known() {
        let wanted = ["one", "three"].map(str::to_owned);
        let error = select(TEST_REGISTRY, &wanted).unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown group `three`; known groups: one, two"
        );
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn registry_names_are_unique() {
        let mut all = names(GROUPS);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), GROUPS.len());
    }
}
