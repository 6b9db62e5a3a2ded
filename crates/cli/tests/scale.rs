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

/// The size of the plan's hotplug window.
fn hotplug_window(plan: &memvisor_cli::plan::Plan) -> u64 {
    plan.windows
        .iter()
        .find(|w| w.kind == "hotplug")
        .map(|w| w.span.size)
        .expect("a hotplug window")
}

/// `window_align` rounds the windows that hold memory (the RAM window above the fixed ones, the
/// hotplug and DAX windows), so it is divided with the memory: a power of two, at least 2 MiB
/// and the RAM page, at most what the spec has.
#[test]
fn scaled_window_align_shrinks_with_the_memory() {
    let cases: [(&str, u64, u64); 7] = [
        // (spec, factor, window_align after)
        ("", 64, 16 << 20),
        ("", 3, 256 << 20),
        ("", 1 << 20, 2 << 20),
        ("", u64::MAX, 2 << 20),
        ("window_align = \"128MiB\"\n", 3, 32 << 20),
        ("window_align = \"2MiB\"\n", 1024, 2 << 20),
        ("[memory]\nhuge_pages = \"1GiB\"\n", 64, 1 << 30),
    ];
    for (head, factor, want) in cases {
        let text = if head.starts_with("[memory]") {
            format!("{head}size = \"4GiB\"\n[hotplug]\nslots = 4\nslot_size = \"1GiB\"\n")
        } else {
            format!("{head}[memory]\nsize = \"4GiB\"\n[hotplug]\nslots = 4\nslot_size = \"1GiB\"\n")
        };
        let src = Source {
            origin: "vm.toml",
            text: &text,
        };
        let spec = parse(src).unwrap();
        let small = spec.scaled(factor);
        assert_eq!(small.window_align, Some(want), "{text} / {factor}");
        let plan = plan(&small, src).unwrap_or_else(|e| panic!("{text} / {factor}: {e}"));
        let slots = small.hotplug.as_ref().unwrap();
        let slots_bytes = u64::from(slots.slots) * slots.slot_size;
        assert_eq!(
            hotplug_window(&plan),
            slots_bytes.next_multiple_of(want),
            "{text} / {factor}: the hotplug window is the slots rounded up to the scaled alignment"
        );
    }
}
