//! The exemption policy (`s4-exemption.json`) over mTLS, and the attacks a compromised application
//! would try, against a real Envoy: `tests/data/attacks.json` lists them as data (status, where
//! the attempt must be logged, the identity the log must show), so a new case needs no code.
//! Whatever the case, the upstream must never receive a politics path.

use std::process::Command;
use std::time::Duration;

use crate::support::{Gateway, STARTUP_TIMEOUT, certs, raw_request, repo};
use serde_json::{Value, json};

const CNN: &str = "edition.cnn.com";

fn exemption_entry(level: &str, path: &str, code: u16, size: u64) -> Value {
    json!({
        "level": level, "instance": "egress-access", "destination": CNN, "path": path,
        "responseCode": code, "responseSize": size,
        "source": "sleep", "sourceNamespace": "default", "user": "cluster.local/ns/default/sa/sleep"
    })
}

#[test]
fn the_exemption_policy_refuses_the_default_namespace_politics_and_logged_with_its_identity() {
    let gateway = Gateway::example("s4-exemption.json");
    let statuses: Vec<u16> = ["/politics", "/sport", "/health"]
        .iter()
        .map(|path| gateway.mtls_status(Some("default-sleep"), CNN, path, &[]))
        .collect();
    assert_eq!(statuses, [404, 200, 200]);
    gateway.settle(3);
    let entries = gateway.log_entries_without_time();
    assert_eq!(entries.len(), 4, "{entries:?}");
    assert_eq!(entries[0], exemption_entry("error", "/politics", 404, 0));
    assert_eq!(entries[1], exemption_entry("info", "/politics", 404, 0));
    assert_eq!(entries[2]["path"], "/sport");
    assert_eq!(entries[3]["path"], "/health");
    assert_eq!(gateway.upstream.paths(), ["/sport", "/health"]);
}

#[test]
fn the_exemption_policy_lets_the_politics_namespace_reach_everything_and_is_not_logged() {
    let gateway = Gateway::example("s4-exemption.json");
    let statuses: Vec<u16> = ["/politics", "/sport", "/health"]
        .iter()
        .map(|path| gateway.mtls_status(Some("politics-sleep"), CNN, path, &[]))
        .collect();
    assert_eq!(statuses, [200, 200, 200]);
    // A request from default afterwards proves the log is flushed past politics' requests.
    assert_eq!(
        gateway.mtls_status(Some("default-sleep"), CNN, "/sport", &[]),
        200
    );
    gateway.settle(4);
    let entries = gateway.log_entries_without_time();
    assert_eq!(
        entries.len(),
        1,
        "nothing logged for namespace politics: {entries:?}"
    );
    assert_eq!(entries[0]["sourceNamespace"], "default");
    assert_eq!(
        gateway.upstream.paths(),
        ["/politics", "/sport", "/health", "/sport"]
    );
}

#[test]
fn plain_http_without_identity_cannot_earn_the_exemption_of_the_policy_cannot_earn_the_exemption() {
    let gateway = Gateway::example("s4-exemption.json");
    assert_eq!(gateway.status(CNN, "/politics"), 404);
    gateway.settle(1);
    let entries = gateway.log_entries_without_time();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["sourceNamespace"], "unknown");
}

/// DNS rebinding through the forward proxy: `host` answers `first` for one CONNECT (relayed),
/// then `then`; once the gateway has forgotten the old answer, the status of the next CONNECT.
fn rebind(gateway: &Gateway, case: &Value) -> u16 {
    let host = case["host"].as_str().unwrap();
    let connect = || {
        let output = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-m", "10", "-w", "%{http_connect}"])
            .args([
                "--proxy",
                &format!("http://127.0.0.1:{}", gateway.proxy_port),
            ])
            .arg("--cacert")
            .arg(certs().join("ca.crt"))
            .arg(format!("https://{host}:{}/", gateway.tls_destinations.port))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).parse().unwrap_or(0)
    };
    let mut names = crate::support::default_names();
    names[host] = case["first"].clone();
    gateway.dns.answer(&names);
    assert_eq!(connect(), 200, "{host} at {}", case["first"]);
    names[host] = case["then"].clone();
    gateway.dns.answer(&names);
    crate::support::wait_until(
        "the gateway to forget the old answer",
        STARTUP_TIMEOUT,
        || gateway.counter("dns_cache.egress.num_hosts") == 0,
    );
    connect()
}

/// Line counts of the three logs, to see which one an attempt landed in.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counts {
    policy: usize,
    access: usize,
    connection: usize,
}

fn counts(gateway: &Gateway) -> Counts {
    Counts {
        policy: gateway.log_entries().len(),
        access: gateway.access_log().len(),
        connection: gateway.connection_log().len(),
    }
}

fn run_case(gateway: &Gateway, case: &Value) -> u16 {
    let listener = case["listener"].as_str().unwrap();
    let port = match listener {
        "mtls" => gateway.mtls_port,
        "proxy" => gateway.proxy_port,
        _ => gateway.http_port,
    };
    let placeholders = |s: &str| {
        s.replace("{http_port}", &gateway.http_port.to_string())
            .replace("{mtls_port}", &gateway.mtls_port.to_string())
            .replace("{tls_port}", &gateway.tls_destinations.port.to_string())
    };
    if case["via"] == "raw" {
        return raw_request(port, placeholders(case["raw"].as_str().unwrap()).as_bytes());
    }
    if case["via"] == "rebind" {
        return rebind(gateway, case);
    }
    let mut command = Command::new("curl");
    command.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
    ]);
    if listener == "mtls" {
        command.arg("--cacert").arg(certs().join("mesh-ca.crt"));
        if let Some(cert) = case["cert"].as_str() {
            command
                .arg("--cert")
                .arg(certs().join(format!("{cert}.crt")));
            command
                .arg("--key")
                .arg(certs().join(format!("{cert}.key")));
        }
    }
    if case.get("url").is_none() {
        command.args(["-H", &format!("Host: {}", case["host"].as_str().unwrap())]);
    }
    for arg in case["args"].as_array().unwrap() {
        command.arg(placeholders(arg.as_str().unwrap()));
    }
    let url = match case["url"].as_str() {
        Some(url) => placeholders(url),
        None => {
            let scheme = if listener == "mtls" { "https" } else { "http" };
            format!(
                "{scheme}://127.0.0.1:{port}{}",
                case["path"].as_str().unwrap()
            )
        }
    };
    let output = command.arg(url).output().unwrap();
    String::from_utf8_lossy(&output.stdout).parse().unwrap_or(0)
}

/// Every attack of `tests/data/attacks.json`: the expected status (or statuses, each a refusal,
/// where Envoy releases differ), a log line where the case says, and, at the end, an upstream
/// that never saw a politics path.
#[test]
fn attacks_are_refused_logged_and_never_reach_the_upstream() {
    let cases: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/data/attacks.json")).unwrap(),
    )
    .unwrap();
    assert!(cases.len() >= 40);
    let gateway = Gateway::example("s4-exemption.json");
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let before = counts(&gateway);
        let status = run_case(&gateway, case);
        // One status, or the statuses that are all a refusal where Envoy releases differ
        // (README: Supported versions).
        let allowed: Vec<u64> = match &case["status"] {
            Value::Array(statuses) => statuses.iter().map(|s| s.as_u64().unwrap()).collect(),
            status => vec![status.as_u64().unwrap()],
        };
        if !allowed.contains(&u64::from(status)) {
            failures.push(format!(
                "{name}: status {status}, expected {}",
                case["status"]
            ));
        }
        let logged = case["logged"].as_str().unwrap();
        let mut after = before;
        let landed = |c: &Counts| match logged {
            "policy" => c.policy > before.policy,
            "access" => c.access > before.access,
            "connection" => c.connection > before.connection,
            _ => {
                c.policy > before.policy
                    || c.access > before.access
                    || c.connection > before.connection
            }
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !landed(&after) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            after = counts(&gateway);
        }
        if !landed(&after) {
            failures.push(format!("{name}: not logged in the {logged} log"));
            continue;
        }
        if let Some(namespace) = case["namespace"].as_str() {
            for entry in gateway.log_entries().iter().skip(before.policy) {
                if entry["sourceNamespace"] != namespace {
                    failures.push(format!(
                        "{name}: logged as namespace {}",
                        entry["sourceNamespace"]
                    ));
                }
            }
        }
    }
    // Nothing politics in any path, header or body the upstream received.
    let reached: Vec<String> = gateway
        .upstream
        .requests()
        .into_iter()
        .map(|r| r.to_string())
        .filter(|r| r.to_ascii_lowercase().contains("politics") || r.contains("%70"))
        .collect();
    assert!(reached.is_empty(), "the upstream received {reached:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Without Envoy's normalization the filter alone refuses every ambiguous path (400, an `error`
/// entry naming why) and the upstream sees none of them.
#[test]
fn filter_alone_refuses_ambiguous_paths_when_envoy_does_not_normalize() {
    let gateway = Gateway::start_edited(&repo().join("envoy/examples/s4-exemption.json"), |yaml| {
        let edited = yaml
            .replace("normalize_path: true", "normalize_path: false")
            .replace("merge_slashes: true", "merge_slashes: false")
            .replace(
                "path_with_escaped_slashes_action: REJECT_REQUEST",
                "path_with_escaped_slashes_action: KEEP_UNCHANGED",
            );
        assert_ne!(edited, yaml);
        edited
    });
    let paths = [
        ("/sport/../politics", "path has a '.' or '..' segment"),
        ("/sport/./../politics", "path has a '.' or '..' segment"),
        ("/sport%2F..%2Fpolitics", "path has an encoded slash (%2F)"),
        (
            "/sport%5C..%5Cpolitics",
            "path has an encoded backslash (%5C)",
        ),
        ("/sport/%2e%2e/politics", "path has an encoded dot (%2E)"),
        (
            "/sport%252F..%252Fpolitics",
            "path has an encoded percent (%25)",
        ),
        ("/sport;/../politics", "path has a ';' (path parameters)"),
        ("/sport/..;/politics", "path has a ';' (path parameters)"),
        (
            "/sport/%c0%ae%c0%ae/politics",
            "path decodes to bytes that are not shortest-form UTF-8",
        ),
        (
            "/sport/..%c0%afpolitics",
            "path decodes to bytes that are not shortest-form UTF-8",
        ),
        (
            "/sport/%u002e%u002e/politics",
            "path has a malformed percent escape",
        ),
        ("/%70olitics%zz", "path has a malformed percent escape"),
    ];
    for (path, _) in paths {
        let output = gateway.curl(
            &[
                "-w",
                "%{http_code}",
                "--path-as-is",
                "-H",
                "Host: edition.cnn.com",
            ],
            path,
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout), "400", "{path}");
    }
    let raw =
        b"GET /sport\\..\\politics HTTP/1.1\r\nHost: edition.cnn.com\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_request(gateway.http_port, raw), 400);
    gateway.settle(paths.len() as u64 + 1);
    let entries = gateway.log_entries_without_time();
    assert_eq!(entries.len(), paths.len() + 1, "{entries:?}");
    for (entry, (path, why)) in entries.iter().zip(paths) {
        assert_eq!(entry["level"], "error");
        assert_eq!(entry["path"], path);
        assert_eq!(entry["rejected"], why);
        assert_eq!(entry["responseCode"], 400);
    }
    assert_eq!(entries[paths.len()]["rejected"], "path has a backslash");
    assert!(
        gateway.upstream.paths().is_empty(),
        "{:?}",
        gateway.upstream.paths()
    );
    let access = gateway.access_log();
    assert!(
        access.iter().all(|a| a["details"]
            .as_str()
            .unwrap()
            .starts_with("egress_policy_rejected:")),
        "{access:?}"
    );
}
