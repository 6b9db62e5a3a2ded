//! Other VMMs' memory options as memvisor specs: Firecracker's JSON configuration
//! (`machine-config` and the virtio devices; [`firecracker_spec`]) and Cloud Hypervisor's
//! `--memory`, `--memory-zone` and `--numa` options ([`cloud_hypervisor_spec`]) or its JSON
//! `VmConfig` ([`cloud_hypervisor_json_spec`]), both read into one model and checked by one
//! code path. The result is
//! spec TOML, serialized by `toml` (so no value can inject syntax), read and checked as any spec
//! is.

mod cloud_hypervisor;
mod firecracker;

pub use cloud_hypervisor::{
    DefaultHugePage, HOST_HUGETLBFS, HOST_MEMINFO, HOST_MOUNTS, NOTE, cloud_hypervisor_json_spec,
    cloud_hypervisor_json_spec_for, cloud_hypervisor_json_spec_for_arch, cloud_hypervisor_origin,
    cloud_hypervisor_spec, cloud_hypervisor_spec_for, cloud_hypervisor_spec_for_arch,
};
pub use firecracker::{firecracker_spec, firecracker_spec_for};
