//! The `memvisor` command, as a library: read a VM spec, plan its guest physical memory map,
//! back it with real host memory, and probe what the host offers. The binary is a thin
//! wrapper over [`main_with_args`].
//!
//! - [`spec`] reads and checks VM specs (TOML; see `SPEC.md`), with errors that name the field,
//!   line and column.
//! - [`plan`] lays a spec out: RAM per guest NUMA node, device MMIO windows and interrupts (placed
//!   with `memvisor-resources`), DAX windows, hotplug slots; `memvisor-space` checks the result.
//!   Plans are host-independent.
//! - [`back`] makes the memory with `memvisor-space`, plugs and unplugs every hotplug slot, and
//!   reports time and memory use per step.
//! - [`check`] says whether this host can back a spec as written, with a fix for each problem.
//! - [`probe`] reports page sizes, huge pages, NUMA nodes and memory features of this host.
//! - [`render`] draws the tables.
//!
//! Linux only (its libraries build elsewhere too; the command is built and tested on Linux).
//!
//! # Example
//!
//! ```
//! use memvisor_cli::plan::plan;
//! use memvisor_cli::render::plan_text;
//! use memvisor_cli::spec::{Source, parse};
//!
//! let text = r#"
//! [memory]
//! size = "512MiB"
//! [serial]
//! [[device]]
//! type = "virtio-net"
//! "#;
//! let src = Source { origin: "vm.toml", text };
//! let plan = plan(&parse(src)?, src)?;
//! assert_eq!(plan.devices[1].mmio.unwrap().start, 0xc000_0000);
//! assert_eq!(plan.devices[1].irq, 5);
//! assert!(plan_text(&plan).contains("0x00c0000000  0x00c0000fff"));
//!
//! // Mistakes name the field and its line.
//! let src = Source { origin: "vm.toml", text: "[memory]\nsize = \"2GB\"\n" };
//! let err = parse(src).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "vm.toml:2:8: memory.size: unknown size unit `GB` (use B, KiB, MiB, GiB or TiB; sizes are binary)"
//! );
//! # Ok::<(), memvisor_cli::SpecError>(())
//! ```
// Unsafe code is refused everywhere but in `check::cpu_phys_bits`, which runs the CPUID
// instruction (its `std::arch` wrapper is an unsafe function on the oldest Rust this crate
// supports).
#![deny(unsafe_code)]

pub mod back;
pub mod check;
mod cli;
pub mod diagnostic;
pub mod error;
pub mod hostmem;
pub mod input;
pub mod json;
pub mod plan;
pub mod probe;
pub mod render;
pub mod size;
pub mod spec;
pub mod vmm;

pub use cli::{main_with_args, run};
pub use error::{Error, Problem, Result, SpecError};
