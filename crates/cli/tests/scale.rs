//! `--scale N` shrinks a valid spec into one that still plans: every shipped example, and DAX
//! windows, which must stay multiples of 2 MiB.

use memvisor_cli::plan::plan;
use memvisor_cli::spec::{Source, parse};

const FACTORS: [u64; 5] = [1, 3, 7, 1000, u64::MAX];

#[track_caller]
fn plans_scaled(origin: &str, text: &str) {
    let src = Source { origin, text };
    let spec = parse(src).unwrap_or_else(|e| panic!("{origin}: {e}"));
    for factor in FACTORS {
        let small = spec.scaled(factor);
        for d in &small.devices {
            if let Some(dax) = d.dax_size {
                assert!(
                    dax >= 2 << 20 && dax.is_multiple_of(2 << 20),
                    "{origin} / {factor}: {} has a DAX window of {dax:#x}",
                    d.name
                );
            }
        }
        if let Err(e) = plan(&small, src) {
            panic!("{origin} scaled by {factor} does not plan: {e}");
        }
    }
}

#[test]
fn scaled_dax_windows_stay_2mib_multiples() {
    plans_scaled(
        "vm.toml",
        "[memory]\nsize = \"64MiB\"\n[[device]]\ntype = \"virtio-fs\"\ndax_size = \"2GiB\"\n\
         [[device]]\ntype = \"virtio-pmem\"\ndax_size = \"1GiB\"\n",
    );
}

#[test]
fn every_shipped_example_plans_scaled() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            plans_scaled(&path.display().to_string(), &text);
            seen += 1;
        }
    }
    assert!(seen >= 3, "no examples in {}", dir.display());
}
