//! Other VMMs' memory options as memvisor specs: Firecracker's JSON configuration
//! (`machine-config` and the virtio devices; [`firecracker_spec`]) and Cloud Hypervisor's
//! `--memory`, `--memory-zone` and `--numa` options ([`cloud_hypervisor_spec`]) or its JSON
//! `VmConfig` ([`cloud_hypervisor_json_spec`]), both read into one model and checked by one
//! code path. Each conversion is one function that takes the guest architecture
//! ([`crate::spec::Arch`], memvisor-space's) as its last parameter. The result is
//! spec TOML, serialized by `toml` (so no value can inject syntax), read and checked as any spec
//! is.

mod cloud_hypervisor;
mod firecracker;

pub(crate) use cloud_hypervisor::{CH_SPEC_NAME, ch_memory_end, ch_memory_end_bound};
pub use cloud_hypervisor::{
    DefaultHugePage, HOST_HUGETLBFS, HOST_MEMINFO, HOST_MOUNTS, NOTE, cloud_hypervisor_json_spec,
    cloud_hypervisor_origin, cloud_hypervisor_spec,
};
pub use firecracker::firecracker_spec;

/// How errors name the spec converted from another VMM's configuration that errors name
/// `origin`: `ORIGIN (as a memvisor spec)`.
pub(crate) fn converted_origin(origin: &str) -> String {
    format!("{origin} (as a memvisor spec)")
}
