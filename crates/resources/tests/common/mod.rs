//! Pieces shared by the integration tests.

pub mod page_workload;
