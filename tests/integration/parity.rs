//! `egress-policy explain` and the filter decide alike: every case of `tests/data/decisions.json`
//! and every attack of `tests/data/attacks.json` that the filter decides (not the ones Envoy
//! refuses before it, or whose handshake fails) goes through the CLI binary and through the
//! filter's request flow on a fake proxy, and both must answer with the same status and the
//! same response code details (or both forward the request).
use std::path::PathBuf;
use std::rc::Rc;

use crate::support::{cli_command, repo};
use egress_policy::adapter::{Active, RequestFilter};
use egress_policy::core::policy::Policy;
use egress_policy_testkit::fake_host::{FakeHost, facts_from_case, json_strings};
use serde_json::{Value, json};

fn config_path(name: &str) -> PathBuf {
    if name.contains('/') {
        repo().join(name)
    } else {
        repo().join("envoy/examples").join(name)
    }
}

/// What was answered: `None` when the request is forwarded, else (status, details).
type Answer = Option<(u16, String)>;

fn cli_answer(config: &str, request: &Value) -> Answer {
    let text = |key: &str| request.get(key).and_then(Value::as_str);
    let mut command = cli_command();
    command
        .arg("explain")
        .arg(config_path(config))
        .args(["--host", text("host").unwrap_or("")])
        .args(["--method", text("method").unwrap_or("GET")]);
    // A forward proxy's CONNECT has no path at all.
    if text("method") != Some("CONNECT") || text("path").is_some() {
        command.args(["--path", text("path").unwrap_or("")]);
    }
    if request.get("body").and_then(Value::as_bool) == Some(true) {
        command.arg("--body");
    }
    let facts = facts_from_case(request);
    for (name, value) in facts.headers.iter().filter(|(n, _)| !n.starts_with(b":")) {
        command.arg("--header").arg(format!(
            "{}={}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(value)
        ));
    }
    if let Some(sans) = &facts.peer_uri_sans {
        command
            .arg("--principal")
            .arg(String::from_utf8_lossy(sans).as_ref());
    }
    for (key, value) in &facts.peer_labels {
        command
            .arg("--label")
            .arg(format!("{key}={}", String::from_utf8_lossy(value)));
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "explain failed for {request}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let decision = stdout
        .lines()
        .find(|l| l.starts_with("decision: "))
        .unwrap_or_default();
    let status = decision
        .rsplit_once('(')
        .and_then(|(_, s)| s.trim_end_matches(')').parse().ok())?;
    let details = stdout
        .lines()
        .find_map(|l| l.strip_prefix("details: "))
        .unwrap_or_default()
        .to_owned();
    Some((status, details))
}

fn filter_answer(config: &str, request: &Value) -> Answer {
    let policy = Policy::from_json(&std::fs::read(config_path(config)).unwrap()).unwrap();
    let host = FakeHost::from_case(request);
    let has_body = request.get("body").and_then(Value::as_bool) == Some(true);
    let mut filter = RequestFilter::new(Some(Rc::new(Active::new(policy))));
    filter.on_request_headers(&host, !has_body);
    let replies = host.replies.borrow();
    replies.first().map(|r| (r.status, r.details.clone()))
}

fn table(name: &str) -> Vec<Value> {
    serde_json::from_slice(&std::fs::read(repo().join("tests/data").join(name)).unwrap()).unwrap()
}

#[test]
fn explain_and_the_filter_answer_every_decision_case_alike() {
    let mut failures = Vec::new();
    for case in table("decisions.json") {
        let config = case["config"].as_str().unwrap();
        let (cli, filter) = (
            cli_answer(config, &case["request"]),
            filter_answer(config, &case["request"]),
        );
        let expected = case["status"].as_u64().map(|status| {
            (
                u16::try_from(status).unwrap(),
                case["details"].as_str().unwrap().to_owned(),
            )
        });
        if cli != filter || filter != expected {
            failures.push(format!(
                "{}: explain {cli:?}, filter {filter:?}, table {expected:?}",
                case["name"]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The URI SANs of each test certificate, read from `scripts/certs` (its `client NAME CA
/// "SANs"` lines), so the certificates and this table cannot drift.
fn certificate_sans(name: &str) -> Option<String> {
    let script = std::fs::read_to_string(repo().join("scripts/certs")).unwrap();
    let line = script
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&format!("client {name} ")))?;
    let sans = line.split('"').nth(1).unwrap_or_default();
    let uris: Vec<&str> = sans
        .split(',')
        .filter_map(|s| s.strip_prefix("URI:"))
        .collect();
    Some(uris.join(","))
}

/// The request of an attack case as the filter receives it.
fn attack_request(case: &Value) -> Value {
    let mut request = json!({});
    let mut headers: Vec<Value> = Vec::new();
    let mut method = "GET".to_owned();
    if case["via"] == "raw" {
        // The port of a stand-in, which explain does not need.
        let raw = case["raw"].as_str().unwrap().replace("{tls_port}", "443");
        let raw = raw.as_str();
        let (request_line, rest) = raw.split_once("\r\n").unwrap();
        let (verb, target) = request_line.split_once(' ').unwrap();
        let target = target.rsplit_once(' ').map_or(target, |(t, _)| t);
        method = verb.to_owned();
        request["path"] = json!(target);
        for line in rest.split("\r\n").take_while(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':').unwrap();
            if name.eq_ignore_ascii_case("host") {
                request["host"] = json!(value.trim());
            } else if !name.eq_ignore_ascii_case("connection") {
                headers.push(json!([name.to_ascii_lowercase(), value.trim()]));
            }
        }
        // A forward proxy's CONNECT names an authority, no path.
        if verb == "CONNECT" {
            request.as_object_mut().unwrap().remove("path");
            request["host"] = json!(target);
        }
        if let Some(absolute) = target.strip_prefix("http://") {
            let (host, path) = absolute.split_once('/').unwrap();
            request["host"] = json!(host);
            request["path"] = json!(format!("/{path}"));
        }
    } else {
        request["host"] = case["host"].clone();
        request["path"] = case["path"].clone();
        let args = json_strings(&case["args"]).unwrap();
        for pair in args.windows(2) {
            match pair {
                ["-H", header] => {
                    let (name, value) = header.split_once(':').unwrap();
                    headers.push(json!([name.to_ascii_lowercase(), value.trim()]));
                }
                ["-X", verb] => method = (*verb).to_owned(),
                ["--request-target", target] => request["path"] = json!(target),
                _ => {}
            }
        }
        if let Some(url) = case["url"].as_str().and_then(|u| u.strip_prefix("http://")) {
            let (host, path) = url.split_once('/').unwrap();
            request["host"] = json!(host);
            request["path"] = json!(format!("/{path}"));
        }
    }
    request["method"] = json!(method);
    request["headers"] = json!(headers);
    if case["listener"] == "mtls"
        && let Some(cert) = case["cert"].as_str()
    {
        request["principal"] = json!(certificate_sans(cert).unwrap());
    }
    request
}

#[test]
fn explain_and_the_filter_answer_every_attack_the_filter_decides_alike() {
    let mut failures = Vec::new();
    let mut compared = 0;
    for case in table("attacks.json") {
        if case["logged"] != "policy" {
            continue;
        }
        let request = attack_request(&case);
        let (cli, filter) = (
            cli_answer("s4-exemption.json", &request),
            filter_answer("s4-exemption.json", &request),
        );
        compared += 1;
        if cli != filter {
            failures.push(format!(
                "{}: explain {cli:?}, filter {filter:?} for {request}",
                case["name"]
            ));
        }
    }
    assert!(compared >= 35, "only {compared} attacks compared");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
