use std::path::PathBuf;

use serde_json::Value;

use super::*;
use crate::decision::Verdict;
use crate::log_entry::render;
use crate::request::Response;
use crate::testing::request_from_json;

fn repo_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn example(name: &str) -> Policy {
    let bytes = std::fs::read(repo_file(&format!("envoy/examples/{name}"))).unwrap();
    Policy::from_json(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn table(name: &str) -> Vec<Value> {
    serde_json::from_slice(&std::fs::read(repo_file(&format!("tests/data/{name}"))).unwrap())
        .unwrap()
}

/// `tests/data/decisions.json`: for a request under an example config, the verdict, the reply's
/// details and the exact log entries (all fields but `time`).
#[test]
fn decision_table_cases_hold() {
    let mut failures = Vec::new();
    let cases = table("decisions.json");
    assert!(cases.len() >= 19);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let policy = example(case["config"].as_str().unwrap());
        let mut request = request_from_json(&case["request"]);
        request.time_micros = Some(1_529_328_178_317_448);
        let decision = policy.evaluate(&request);
        let verdict = match decision.verdict() {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        };
        if verdict != case["verdict"] {
            failures.push(format!(
                "{name}: verdict {verdict}, expected {}",
                case["verdict"]
            ));
        }
        let details = decision.denied.as_ref().map(|r| policy.details(r));
        if details.as_deref() != case.get("details").and_then(Value::as_str) {
            failures.push(format!("{name}: details {details:?}"));
        }
        let response = Response {
            code: case["response"]["code"].as_i64(),
            size: case["response"]["size"].as_i64(),
            duration_ms: None,
        };
        let rendered = render(&policy, &decision, &request, &response);
        let mut entries: Vec<Value> = rendered
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        for entry in &mut entries {
            assert_eq!(entry["time"], "2018-06-18T13:22:58.317448Z", "{name}");
            entry.as_object_mut().unwrap().remove("time");
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
        let expected: Vec<&str> = case["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
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
fn empty_config_allows_everything_and_logs_nothing() {
    let policy = Policy::from_json(b"{}").unwrap();
    let decision = policy.evaluate(&Request::default());
    assert_eq!(decision, Decision::default());
    assert_eq!(policy.deny_status, 404);
}

#[test]
fn denial_is_explained_with_rule_list_and_value() {
    let policy = example("s3-listcheck.json");
    let mut request = Request {
        path: Some("/politics".into()),
        ..Request::default()
    };
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
    let request = |path: &str| Request {
        path: Some(path.into()),
        ..Request::default()
    };
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
        let mut r = Request {
            path: Some(path.into()),
            method: Some(method.into()),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Request::default()
        };
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
        let mut request = Request {
            path: Some(path.into()),
            method: Some("GET".into()),
            ..Request::default()
        };
        request.set_host(host);
        policy.evaluate(&request).denied.is_some()
    };
    assert!(!denied("edition.cnn.com", "/sport"));
    assert!(!denied("edition.cnn.com", "/sport/football?x=1"));
    assert!(denied("edition.cnn.com", "/sports"));
    assert!(denied("edition.cnn.com", "/sportpolitics"));
    assert!(!denied("raw.example.com", "/sportpolitics"));
}
