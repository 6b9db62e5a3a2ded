//! `probe` on this host: the text and JSON forms parse, and every fact is present and
//! plausible.

use std::collections::HashMap;

use serde_json::Value;

mod common;

use common::binary;

fn probe(args: &[&str]) -> String {
    let out = binary(&[&["probe"], args].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
#[cfg_attr(miri, ignore)]
fn probe_text_has_every_fact() {
    let text = probe(&[]);
    let facts: HashMap<&str, &str> = text
        .lines()
        .map(|l| {
            let (k, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("not `key: value`: {l}"));
            (k, v.trim())
        })
        .collect();
    for key in [
        "kernel",
        "page size",
        "memory",
        "transparent huge pages",
        "MADV_POPULATE_WRITE",
        "guard pages",
        "vm.max_map_count",
        "overcommit",
    ] {
        assert!(facts.contains_key(key), "{key} missing from:\n{text}");
    }
    let page: u64 = facts["page size"]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(page.is_power_of_two() && page >= 4096, "{page}");
    let thp = facts["transparent huge pages"]
        .split_whitespace()
        .next()
        .unwrap();
    assert!(
        ["always", "madvise", "never", "unavailable"].contains(&thp),
        "{thp}"
    );
    let populate = facts["MADV_POPULATE_WRITE"];
    assert!(
        populate.starts_with("yes") || populate.starts_with("no"),
        "{populate}"
    );
    assert!(
        facts["guard pages"].starts_with("yes"),
        "{}",
        facts["guard pages"]
    );
    let maps: u64 = facts["vm.max_map_count"].parse().unwrap();
    assert!(maps > 0);
    let mode: u64 = facts["overcommit"]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(mode <= 2);
    assert!(
        facts.keys().any(|k| k.starts_with("NUMA")),
        "no NUMA line in:\n{text}"
    );
    assert!(
        facts.keys().any(|k| k.starts_with("huge pages")),
        "no huge page line in:\n{text}"
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn probe_json_is_plausible() {
    let p: Value = serde_json::from_str(&probe(&["--json"])).unwrap();
    // Sizes in bytes are hex strings.
    let hex = |v: &Value| -> Option<u64> {
        u64::from_str_radix(v.as_str()?.strip_prefix("0x")?, 16).ok()
    };
    let page = hex(&p["page_size"]).unwrap();
    assert!(page.is_power_of_two());
    assert!(!p["kernel"].as_str().unwrap().is_empty());
    for pool in p["huge_page_pools"].as_array().unwrap() {
        let size = hex(&pool["page_size"]).unwrap();
        assert!(size.is_power_of_two() && size > page, "{pool}");
        let total = pool["total"].as_u64().unwrap();
        let surplus = pool["surplus"].as_u64().unwrap();
        assert!(pool["free"].as_u64().unwrap() <= total + surplus, "{pool}");
    }
    for node in p["numa_nodes"].as_array().unwrap() {
        assert!(
            hex(&node["free"]).unwrap() <= hex(&node["total"]).unwrap(),
            "{node}"
        );
    }
    if let Some(pmd) = hex(&p["thp"]["pmd_size"]) {
        assert!(pmd.is_power_of_two() && pmd > page);
    }
    assert!(p["max_map_count"].as_u64().unwrap() > 0);
    assert!(p["madv_populate_write"]["works"].is_boolean());
    assert_eq!(p["guard_pages"]["works"], true);
    let mode = p["overcommit"]["mode"].as_u64().unwrap();
    let name = p["overcommit"]["name"].as_str().unwrap();
    assert_eq!(
        name,
        ["heuristic", "always", "never"][usize::try_from(mode).unwrap()]
    );
    let total = hex(&p["memory_total"]).unwrap();
    assert!(hex(&p["memory_available"]).unwrap() <= total);
}

#[test]
#[cfg_attr(miri, ignore)]
fn check_reports_every_host_check_and_exits_0_or_1() {
    let out = binary(&["check", "--json"]);
    let code = out.status.code().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["schema_version"], 1);
    let findings = doc["findings"].as_array().unwrap();
    assert_eq!(doc["ok"], findings.iter().all(|f| f["status"] != "fail"));
    let fails = findings.iter().filter(|f| f["status"] == "fail").count();
    assert_eq!(code, if fails == 0 { 0 } else { 1 });
    for check in ["address_bits", "kvm", "overcommit"] {
        assert!(findings.iter().any(|f| f["check"] == check), "{check}");
    }
    for f in findings {
        if f["status"] == "ok" {
            assert!(f["fix"].is_null(), "{f}");
        }
        if f["status"] == "fail" {
            assert!(f["fix"].is_string(), "{f}");
        }
    }
}
