use std::path::PathBuf;

use serde_json::Value;

use super::decide::strip_port;
use super::*;
use crate::cases::{facts_from_case, request_with_path};
use crate::request::{Protocol, Response};
use crate::telemetry::log_entry::render;

fn repo_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

/// An example of `envoy/examples/`, or a file the repository root names (`tests/data/...`).
fn example(name: &str) -> Policy {
    let path = if name.contains('/') {
        repo_file(name)
    } else {
        repo_file(&format!("envoy/examples/{name}"))
    };
    let bytes = std::fs::read(path).unwrap();
    Policy::from_json(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn table(name: &str) -> Vec<Value> {
    serde_json::from_slice(&std::fs::read(repo_file(&format!("tests/data/{name}"))).unwrap())
        .unwrap()
}

/// `tests/data/decisions.json`: for a request under an example config, through the one pipeline
/// ([`Policy::decide`]), the outcome, the reply's status and details, and the exact log entries
/// (all fields but `time`).
#[test]
fn decision_table_cases_hold() {
    check_decision_table("decisions.json", 19);
}

/// `tests/data/connections.json`: the same for TLS connections (the SNI policy), decided on SNI and the
/// caller's certificate; a connection has no reply status, only details.
#[test]
fn connection_table_cases_hold() {
    check_decision_table("connections.json", 7);
}

fn check_decision_table(file: &str, at_least: usize) {
    let mut failures = Vec::new();
    let cases = table(file);
    assert!(cases.len() >= at_least, "{file}: {}", cases.len());
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let policy = example(case["config"].as_str().unwrap());
        let facts = facts_from_case(&case["request"]);
        let (request, decision) = policy.decide(&facts, &RemoteLists::default());
        let outcome = decision.outcome().as_str();
        if outcome != case["outcome"] {
            failures.push(format!(
                "{name}: outcome {outcome}, expected {}",
                case["outcome"]
            ));
        }
        let reply = policy.reply(&decision, &request);
        let status = reply
            .as_ref()
            .filter(|_| request.protocol == Protocol::Http)
            .map(|r| u64::from(r.status));
        let details = reply.map(|r| r.details);
        if status != case.get("status").and_then(Value::as_u64)
            || details.as_deref() != case.get("details").and_then(Value::as_str)
        {
            failures.push(format!("{name}: status {status:?}, details {details:?}"));
        }
        let end = &case["response"];
        let response = Response {
            code: end["code"].as_i64(),
            size: end["size"].as_i64(),
            duration_ms: end["duration"].as_i64(),
            received_bytes: end["receivedBytes"].as_i64(),
            sent_bytes: end["sentBytes"].as_i64(),
            event: end["event"]
                .as_str()
                .and_then(|e| ["open", "close"].into_iter().find(|k| *k == e)),
            relayed: end["relayed"].as_bool(),
        };
        let rendered = render(&policy, &decision, &request, &response);
        let mut entries: Vec<Value> = rendered
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        for entry in &mut entries {
            assert_eq!(entry["time"], "2018-06-18T13:22:58.317448Z", "{name}");
            // Every line names the configuration that decided it.
            assert_eq!(entry["policyVersion"], policy.version.as_str(), "{name}");
            entry.as_object_mut().unwrap().remove("time");
            entry.as_object_mut().unwrap().remove("policyVersion");
        }
        if entries != *case["entries"].as_array().unwrap() {
            failures.push(format!("{name}: entries {}", rendered));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `tests/data/config_errors.json`: every bad configuration is refused with errors that name
/// the field path (and, for expressions, the column).
#[test]
fn config_error_table_cases_are_refused_with_their_paths() {
    let mut failures = Vec::new();
    for case in table("config_errors.json") {
        let name = case["name"].as_str().unwrap();
        let config = case["config"].as_str().unwrap();
        let expected = crate::cases::json_strings(&case["errors"]).unwrap();
        match Policy::from_json(config.as_bytes()) {
            Ok(_) => failures.push(format!("{name}: accepted")),
            Err(errors) => {
                let got: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                let all_found = expected
                    .iter()
                    .all(|want| got.iter().any(|g| g.contains(want)));
                if !all_found || got.len() != expected.len() {
                    failures.push(format!("{name}: got {got:#?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_example_config_compiles() {
    for entry in std::fs::read_dir(repo_file("envoy/examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        Policy::from_json(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn a_configuration_that_decides_nothing_is_refused() {
    for config in [
        &b"{}"[..],
        br#"{"rules": []}"#,
        br#"{"lists": {}, "rules": [], "routes": []}"#,
        br#"{"denyStatus": 403, "log": {"instance": "x"}}"#,
    ] {
        let errors = Policy::from_json(config).unwrap_err();
        assert!(
            errors.to_string().contains("no rules and no routes"),
            "{errors}"
        );
    }
}

#[test]
fn a_configuration_that_can_deny_nothing_is_warned_about() {
    let warned = |config: &[u8]| {
        Policy::from_json(config)
            .unwrap()
            .warnings()
            .iter()
            .any(|w| w.starts_with("no rule or route can deny anything"))
    };
    assert!(warned(br#"{"rules": [{"name": "watch", "log": "info"}]}"#));
    assert!(warned(
        br#"{"lists": {"l": {"value": "request.url_path"}},
             "rules": [{"name": "trial", "check": ["l"], "dryRun": true}]}"#
    ));
    assert!(!warned(
        &std::fs::read(repo_file("envoy/examples/s3-listcheck.json")).unwrap()
    ));
    assert!(!warned(
        &std::fs::read(repo_file("envoy/examples/s2-routing.json")).unwrap()
    ));
}

#[test]
fn source_ip_loses_its_port() {
    assert_eq!(strip_port("10.1.2.3:5555"), "10.1.2.3");
    assert_eq!(strip_port("[::1]:5555"), "::1");
    assert_eq!(strip_port("10.1.2.3"), "10.1.2.3");
}

#[test]
fn denial_is_explained_with_rule_list_and_value() {
    let policy = example("s3-listcheck.json");
    let mut request = request_with_path("/politics");
    request.set_host("edition.cnn.com");
    let reason = policy.evaluate(&request).denied.unwrap();
    assert_eq!(
        policy.explain(&reason, &request),
        "denied by rule handle-cnn-access: \"/politics\" is not in whitelist path-checker"
    );
}

#[test]
fn blacklist_denies_listed_values_only() {
    let policy = Policy::from_json(
        br#"{"lists": {"banned": {"value": "request.url_path", "blacklist": true, "entries": ["/politics"]}},
            "rules": [{"name": "ban", "check": ["banned"]}]}"#,
    )
    .unwrap();
    let request = request_with_path;
    assert!(policy.evaluate(&request("/politics")).denied.is_some());
    assert!(policy.evaluate(&request("/sport")).denied.is_none());
    // Fail closed: a blacklist cannot vouch for a value it cannot see.
    assert_eq!(
        policy.evaluate(&Request::default()).denied,
        Some(DenyReason::List {
            rule: 0,
            list: 0,
            failure: ListFailure::ValueAbsent
        })
    );
}

#[test]
fn wildcard_route_hosts_pick_the_most_specific_route() {
    let policy = Policy::from_json(
        br#"{"routes": [
            {"name": "all-cnn", "hosts": ["*.cnn.com"], "match": [{"uri": {"prefix": "/"}}]},
            {"name": "edition", "hosts": ["edition.cnn.com"], "match": [{"uri": {"exact": "/sport"}, "method": {"exact": "GET"}}]},
            {"name": "api", "hosts": ["api.example.com"], "match": [{"headers": {"X-Team": {"exact": "news"}}}]}
        ]}"#,
    )
    .unwrap();
    let request = |host: &str, path: &str, method: &str, headers: &[(&str, &str)]| {
        let mut r = request_with_path(path);
        r.method = Some(method.into());
        r.headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        r.set_host(host);
        r
    };
    let denied = |r: Request| policy.evaluate(&r).denied;
    assert_eq!(
        denied(request("money.cnn.com", "/politics", "GET", &[])),
        None
    );
    assert_eq!(
        denied(request("edition.cnn.com", "/sport", "GET", &[])),
        None
    );
    assert_eq!(
        denied(request("edition.cnn.com", "/sport", "POST", &[])),
        Some(DenyReason::NoRouteMatch { route: 1 })
    );
    assert_eq!(
        denied(request("edition.cnn.com", "/politics", "GET", &[])),
        Some(DenyReason::NoRouteMatch { route: 1 })
    );
    assert_eq!(
        denied(request(
            "api.example.com",
            "/",
            "GET",
            &[("x-team", "news")]
        )),
        None
    );
    assert!(denied(request("api.example.com", "/", "GET", &[])).is_some());
    assert!(policy.decision_needs.headers.contains("x-team"));
}

#[test]
fn uri_prefix_matches_whole_segments_unless_raw() {
    let policy = Policy::from_json(
        br#"{"routes": [
            {"hosts": ["edition.cnn.com"], "match": [{"uri": {"prefix": "/sport"}}]},
            {"hosts": ["raw.example.com"], "match": [{"uri": {"rawPrefix": "/sport"}}]}
        ]}"#,
    )
    .unwrap();
    let denied = |host: &str, path: &str| {
        let mut request = request_with_path(path);
        request.method = Some("GET".into());
        request.set_host(host);
        policy.evaluate(&request).denied.is_some()
    };
    assert!(!denied("edition.cnn.com", "/sport"));
    assert!(!denied("edition.cnn.com", "/sport/football?x=1"));
    assert!(denied("edition.cnn.com", "/sports"));
    assert!(denied("edition.cnn.com", "/sportpolitics"));
    assert!(!denied("raw.example.com", "/sportpolitics"));
}

#[test]
fn check_warns_of_rules_that_fit_neither_requests_nor_connections() {
    let policy = Policy::from_json(
        br#"{"lists": {"nowhere": {"value": "connection.requested_server_name", "entries": []}},
             "rules": [
               {"name": "tls-ibm", "log": "info", "match": "context.protocol == \"tcp\" && connection.requested_server_name.endsWith(\".ibm.com\")"},
               {"name": "tls-by-path", "log": "info", "check": ["nowhere"], "match": "context.protocol == \"tcp\" && request.path == \"/x\""}]}"#,
    )
    .unwrap();
    let warnings = policy.warnings();
    assert!(
        warnings.iter().any(|w| w.starts_with(
            "rules[1] ('tls-by-path'): its match holds for no request and no connection"
        )),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("no rule with an enforced 'check' can match a connection")),
        "{warnings:?}"
    );
    assert!(
        example("s6-sni.json").warnings().is_empty(),
        "the documents' TLS policy denies connections"
    );
}
