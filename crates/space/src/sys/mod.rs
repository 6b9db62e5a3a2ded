//! Host facts from the operating system (Linux): memfds, file systems, sysfs. Mappings go
//! through `memvisor-vmem`.

mod linux;

pub(crate) use linux::*;
