//! The JSON Schema in `manifests/plugin-config.schema.json` agrees with the configuration the
//! filter accepts: every example is valid under it, and every configuration it rejects for its
//! shape is rejected by the filter too.

use crate::support::repo;
use serde_json::Value;

fn load(relative: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join(relative)).unwrap()).unwrap()
}

/// Every way `value` violates the schema, by instance path, as a full JSON Schema validator
/// (the `jsonschema` crate) sees it.
fn validate(value: &Value) -> Vec<String> {
    let schema = load("manifests/plugin-config.schema.json");
    let validator = jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema");
    validator
        .iter_errors(value)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect()
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
