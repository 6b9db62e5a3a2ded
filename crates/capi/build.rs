//! Gives the shared library its `SONAME`, `libmemvisor.so.<major>`, on targets whose shared
//! objects are ELF: a program linked with it then asks the loader for the ABI it was built
//! against, and a library of another major version is never loaded in its place.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let family = env::var("CARGO_CFG_TARGET_FAMILY").unwrap_or_default();
    let vendor = env::var("CARGO_CFG_TARGET_VENDOR").unwrap_or_default();
    if family.split(',').any(|f| f == "unix") && vendor != "apple" {
        println!(
            "cargo:rustc-cdylib-link-arg=-Wl,-soname,libmemvisor.so.{}",
            env!("CARGO_PKG_VERSION_MAJOR")
        );
    }
}
