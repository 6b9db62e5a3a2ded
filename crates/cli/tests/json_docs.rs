//! Every `--json` document keeps the documented contract: it starts with
//! `"schema_version": 1`, sizes in bytes are hex strings, and it validates against its
//! committed schema under `schema/` (a small validator for the parts of JSON Schema that
//! `schemars` writes: `$ref`, `anyOf`, `type`, `properties`, `required`, `items`, `pattern`,
//! `enum`, `const`, `minimum`).

use std::path::PathBuf;

use serde_json::Value;

mod common;

use common::example;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn schema(file: &str) -> Value {
    let text = std::fs::read_to_string(root().join("schema").join(file)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "integer" => v.is_u64() || v.is_i64(),
        "number" => v.is_number(),
        other => panic!("schema type {other} not handled"),
    }
}

/// Checks `v` against `s`, a schema inside the document `root`; errors name the path.
fn validate(root: &Value, s: &Value, v: &Value, path: &str) -> Result<(), String> {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").expect("local $ref");
        return validate(root, &root["$defs"][name], v, path);
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(|s| validate(root, s, v, path).is_ok())
    {
        return Err(format!("{path}: {v} matches none of anyOf"));
    }
    if let Some(one) = s.get("oneOf").and_then(Value::as_array)
        && one
            .iter()
            .filter(|s| validate(root, s, v, path).is_ok())
            .count()
            != 1
    {
        return Err(format!("{path}: {v} does not match exactly one of oneOf"));
    }
    match s.get("type") {
        Some(Value::String(t)) if !type_ok(t, v) => {
            return Err(format!("{path}: {v} is not {t}"));
        }
        Some(Value::Array(ts)) if !ts.iter().any(|t| type_ok(t.as_str().unwrap(), v)) => {
            return Err(format!("{path}: {v} is none of {ts:?}"));
        }
        _ => {}
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        return Err(format!("{path}: {v} is not {c}"));
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        return Err(format!("{path}: {v} is not one of {e:?}"));
    }
    if let (Some(min), Some(n)) = (s.get("minimum").and_then(Value::as_f64), v.as_f64())
        && n < min
    {
        return Err(format!("{path}: {v} is below {min}"));
    }
    if let (Some(p), Some(text)) = (s.get("pattern").and_then(Value::as_str), v.as_str()) {
        assert_eq!(p, "^0x[0-9a-f]{1,16}$", "pattern not handled");
        let digits = text.strip_prefix("0x").unwrap_or("");
        if digits.is_empty()
            || digits.len() > 16
            || !digits
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return Err(format!("{path}: {text} is not a hex size"));
        }
    }
    if let Some(obj) = v.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        for req in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let req = req.as_str().unwrap();
            if !obj.contains_key(req) {
                return Err(format!("{path}: {req} missing"));
            }
        }
        if let Some(props) = props {
            for (k, val) in obj {
                let Some(ps) = props.get(k) else {
                    return Err(format!("{path}: {k} is not in the schema"));
                };
                validate(root, ps, val, &format!("{path}.{k}"))?;
            }
        }
    }
    if let (Some(items), Some(a)) = (s.get("items"), v.as_array()) {
        for (i, item) in a.iter().enumerate() {
            validate(root, items, item, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

/// `text` is one JSON document that starts with `"schema_version": 1` and validates
/// against `schema/<file>`.
#[track_caller]
fn assert_document(text: &str, file: &str) -> Value {
    assert!(
        text.starts_with("{\n  \"schema_version\": 1,\n"),
        "does not start with the schema version:\n{}",
        &text[..text.len().min(200)]
    );
    let doc: Value = serde_json::from_str(text).unwrap();
    let s = schema(file);
    if let Err(e) = validate(&s, &s, &doc, "$") {
        panic!("{file}: {e}\n{text}");
    }
    doc
}

fn memvisor(args: &[&str]) -> (Option<i32>, String) {
    let out = common::binary(args);
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn plan_json_validates_against_its_schema() {
    let (code, text) = memvisor(&["plan", "--json", &example("large-vm.toml")]);
    assert_eq!(code, Some(0));
    assert_document(&text, "plan.schema.json");
}

#[test]
#[cfg_attr(miri, ignore)]
fn back_json_is_versioned_with_hex_sizes() {
    let (code, text) = memvisor(&["back", "--scale", "16", "--json", &example("microvm.toml")]);
    assert_eq!(code, Some(0), "{text}");
    let doc = assert_document(&text, "back.schema.json");
    assert_eq!(doc["boot_bytes"], "0x1000000");
    assert_eq!(doc["hotplug_bytes"], "0x1000000");
}

#[test]
#[cfg_attr(miri, ignore)]
fn failed_back_json_is_versioned_too() {
    // A bound host node that does not exist: the step fails, the report says which.
    let dir = std::env::temp_dir().join(format!("memvisor-json-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vm.toml");
    std::fs::write(
        &path,
        "[memory]\n[[numa]]\nsize = \"2MiB\"\nhost_nodes = [1000]\n",
    )
    .unwrap();
    let (code, text) = memvisor(&["back", "--json", path.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, Some(1), "{text}");
    let doc = assert_document(&text, "back.schema.json");
    assert!(doc["failure"]["step"].is_string(), "{doc}");
}

#[test]
#[cfg_attr(miri, ignore)]
fn check_json_validates_against_its_schema() {
    let (code, text) = memvisor(&["check", "--json", &example("microvm.toml")]);
    assert!(matches!(code, Some(0 | 1)), "{text}");
    let doc = assert_document(&text, "check.schema.json");
    assert!(
        doc["findings"].as_array().is_some_and(|f| !f.is_empty()),
        "{doc}"
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn probe_json_is_versioned_with_hex_sizes() {
    let (code, text) = memvisor(&["probe", "--json"]);
    assert_eq!(code, Some(0));
    let doc = assert_document(&text, "probe.schema.json");
    assert!(doc["page_size"].as_str().unwrap().starts_with("0x"));
}
