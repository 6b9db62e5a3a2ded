//! `back` holds prefaulted memory to what the host has available: a spec whose prefaulted
//! memory (boot RAM and every hotplug slot, all plugged at once) is larger than `MemAvailable`
//! and `SwapFree` together is refused before anything is made, with exit code 1, rather than made
//! resident until the kernel kills a process for memory.

use serde_json::Value;

mod common;

use common::Memvisor;

/// Anonymous private memory with one prefault thread, 48 address bits so that tens of TiB
/// plan.
fn spec(memory: &str, hotplug: &str) -> String {
    format!(
        "phys_bits = 48\n[memory]\nsize = \"{memory}\"\nprefault = 1\n{hotplug}",
        hotplug = if hotplug.is_empty() {
            String::new()
        } else {
            format!("[hotplug]\n{hotplug}\n")
        }
    )
}

#[track_caller]
fn assert_refused(name: &str, spec: &str) {
    let file = common::scratch(name);
    let (code, out, err) = Memvisor::new().run_on_file(&file, spec, &["back", "FILE"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.starts_with("error: back would make ")
            && err.contains("(MemAvailable and SwapFree); nothing was made"),
        "{err}"
    );
    let (code, out, err) = Memvisor::new().run_on_file(&file, spec, &["back", "--json", "FILE"]);
    assert_eq!(code, 1, "{out}{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["error"]["kind"], "runtime", "{out}");
    assert_eq!(doc["error"]["exit_code"], 1, "{out}");
    assert!(doc.get("steps").is_none(), "{out}");
}

#[test]
#[cfg_attr(miri, ignore)]
fn back_refuses_prefaulted_boot_ram_larger_than_the_host_has() {
    // No host has 64 TiB of memory available.
    assert_refused("back-prefault-boot.toml", &spec("64TiB", ""));
}

#[test]
#[cfg_attr(miri, ignore)]
fn back_counts_every_prefaulted_hotplug_slot() {
    // 16 MiB of boot RAM, and 64 slots of 1 TiB that `back` plugs, prefaulted, all at once.
    assert_refused(
        "back-prefault-slots.toml",
        &spec("16MiB", "slots = 64\nslot_size = \"1TiB\""),
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn back_without_prefault_is_not_held_to_available_memory() {
    // Not prefaulted, the memory is only mapped: nothing is resident, nothing is refused
    // before it is tried (the mapping itself may be refused by the kernel's overcommit rules,
    // as a failed step with exit code 1).
    let spec =
        "phys_bits = 48\n[memory]\nsize = \"16MiB\"\n[hotplug]\nslots = 1\nslot_size = \"64TiB\"\n";
    let file = common::scratch("back-prefault-unbound.toml");
    let (code, out, err) = Memvisor::new().run_on_file(&file, spec, &["back", "--json", "FILE"]);
    assert!(!err.contains("MemAvailable"), "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert!(doc.get("steps").is_some(), "{code} {out}");
}
