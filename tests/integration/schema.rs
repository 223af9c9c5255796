//! The JSON Schema in `manifests/plugin-config.schema.json` agrees with the configuration the
//! filter accepts: every example is valid under it, and every configuration it rejects for its
//! shape is rejected by the filter too.

use crate::support::repo;
use serde_json::Value;

fn load(relative: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join(relative)).unwrap()).unwrap()
}

/// The subset of JSON Schema the schema uses: type, properties, additionalProperties, required,
/// items, enum, $ref to $defs, min/maxProperties, minItems, minLength, minimum, maximum, pattern
/// (only the name pattern).
fn violations(schema: &Value, root: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/$defs/");
        return violations(&root["$defs"][name], root, value, path, out);
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        out.push(format!("{path}: {value} not in enum"));
    }
    let type_ok = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        out.push(format!("{path}: expected {}", schema["type"]));
        return;
    }
    if let Some(s) = value.as_str() {
        if schema["minLength"]
            .as_u64()
            .is_some_and(|min| (s.chars().count() as u64) < min)
        {
            out.push(format!("{path}: too short"));
        }
        if schema["pattern"].is_string() && !(1..=128).contains(&s.len()) {
            out.push(format!("{path}: name length"));
        }
        if schema["pattern"].is_string()
            && !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            out.push(format!("{path}: name pattern"));
        }
    }
    if let Some(n) = value.as_i64()
        && (schema["minimum"].as_i64().is_some_and(|min| n < min)
            || schema["maximum"].as_i64().is_some_and(|max| n > max))
    {
        out.push(format!("{path}: out of range"));
    }
    if let Some(items) = value.as_array() {
        if schema["minItems"]
            .as_u64()
            .is_some_and(|min| (items.len() as u64) < min)
        {
            out.push(format!("{path}: too few items"));
        }
        for (i, item) in items.iter().enumerate() {
            violations(&schema["items"], root, item, &format!("{path}[{i}]"), out);
        }
    }
    if let Some(object) = value.as_object() {
        for required in schema["required"].as_array().into_iter().flatten() {
            if !object.contains_key(required.as_str().unwrap()) {
                out.push(format!("{path}: missing {required}"));
            }
        }
        let count = object.len() as u64;
        if schema["minProperties"]
            .as_u64()
            .is_some_and(|min| count < min)
            || schema["maxProperties"]
                .as_u64()
                .is_some_and(|max| count > max)
        {
            out.push(format!("{path}: property count"));
        }
        for (key, item) in object {
            let item_path = format!("{path}.{key}");
            match (&schema["properties"][key], &schema["additionalProperties"]) {
                (Value::Null, Value::Bool(false)) => {
                    out.push(format!("{item_path}: unknown field"))
                }
                (Value::Null, Value::Null | Value::Bool(true)) => {}
                (Value::Null, additional) => violations(additional, root, item, &item_path, out),
                (property, _) => violations(property, root, item, &item_path, out),
            }
        }
    }
}

fn validate(value: &Value) -> Vec<String> {
    let schema = load("manifests/plugin-config.schema.json");
    let mut out = Vec::new();
    violations(&schema, &schema, value, "", &mut out);
    out
}

#[test]
fn every_example_config_is_valid_under_the_schema() {
    for entry in std::fs::read_dir(repo().join("envoy/examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            validate(&config),
            Vec::<String>::new(),
            "{}",
            path.display()
        );
    }
}

#[test]
fn shapes_the_schema_rejects_the_filter_rejects_too() {
    let cases = load("tests/data/config_errors.json");
    let mut rejected_by_schema = 0;
    for case in cases.as_array().unwrap() {
        let Ok(config) = serde_json::from_str::<Value>(case["config"].as_str().unwrap()) else {
            continue;
        };
        if !validate(&config).is_empty() {
            rejected_by_schema += 1;
            let errors = egress_policy::core::policy::Policy::from_json(
                case["config"].as_str().unwrap().as_bytes(),
            );
            assert!(errors.is_err(), "{}", case["name"]);
        }
    }
    assert!(rejected_by_schema >= 10, "{rejected_by_schema}");
}

#[test]
fn schema_names_every_field_of_the_config_types() {
    // Unknown fields are errors in the filter; the schema must know every field the filter does.
    let full = r#"{"denyStatus": 403, "denyBody": "no", "denyHeaders": {"x-a": "b"},
        "log": {"instance": "i", "fields": {"a": "request.host | \"\""}},
        "lists": {"l": {"value": "request.host", "entries": ["a"], "blacklist": true, "entryType": "GLOB", "dryRun": true,
                        "provider": {"cluster": "c", "path": "/l", "authority": "lists", "refreshInterval": "1s", "ttl": "2s",
                                     "timeout": "1s", "onError": "allow", "maxEntries": 5, "maxBytes": 100}}},
        "rules": [{"name": "r", "match": "true", "log": "warning", "check": ["l"], "dryRun": false,
                   "deny": {"status": 451, "body": "x", "headers": {"x-b": "c"}}}],
        "identity": {"trustDomain": "td", "trustedHeader": "x-id"},
        "routes": [{"name": "x", "hosts": ["a.com"], "match": [{"uri": {"prefix": "/"}, "method": {"rawPrefix": "G"},
                    "headers": {"h": {"regex": "v"}}}]}]}"#;
    egress_policy::core::policy::Policy::from_json(full.as_bytes()).unwrap();
    assert_eq!(
        validate(&serde_json::from_str(full).unwrap()),
        Vec::<String>::new()
    );
}
