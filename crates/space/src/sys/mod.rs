//! The only place this crate talks to the operating system (Linux).

mod linux;

pub(crate) use linux::*;
