//! The reference scenario (README: The reference scenario: the logging, routing and list-check policies) in a real Envoy, driven by curl: status codes, the
//! exact log entries (every field but `time`), and what the upstream did and did not receive.

use crate::support::{Gateway, repo};
use serde_json::{Value, json};

const CNN: &str = "edition.cnn.com";

fn entry(level: &str, path: &str, code: u16, size: u64) -> Value {
    json!({
        "level": level, "instance": "egress-access", "destination": CNN, "path": path,
        "responseCode": code, "responseSize": size,
        "source": "unknown", "sourceNamespace": "unknown", "user": "unknown"
    })
}

/// Sends the source documents' three requests; returns (status, size) of each.
fn politics_sport_health(gateway: &Gateway) -> [(u16, u64); 3] {
    ["/politics", "/sport", "/health"].map(|path| gateway.get(CNN, path))
}

/// The routing and list-check policies refuse politics locally: 404, nothing reaches edition.cnn.com, and the entries
/// record the 404 (error and info), as the source documents' log does.
fn assert_politics_is_refused(gateway: &Gateway, details: &str) {
    let [politics, sport, health] = politics_sport_health(gateway);
    assert_eq!([politics.0, sport.0, health.0], [404, 200, 200]);
    assert_eq!(politics.1, 0);
    gateway.settle(3);
    let entries = gateway.log_entries_without_time();
    assert_eq!(
        entries,
        vec![
            entry("error", "/politics", 404, 0),
            entry("info", "/politics", 404, 0),
            entry("info", "/sport", 200, sport.1),
            entry("info", "/health", 200, health.1),
        ]
    );
    assert_eq!(
        gateway.upstream.paths(),
        vec!["/sport", "/health"],
        "the upstream must never see /politics"
    );
    let access = gateway.access_log();
    assert_eq!(access[0]["path"], "/politics");
    assert_eq!(
        access[0]["details"], details,
        "the local reply names what decided"
    );
}

#[test]
fn the_logging_policy_allows_all_three_and_logs_politics_as_error_and_info() {
    let gateway = Gateway::example("s1-logging.json");
    let [politics, sport, health] = politics_sport_health(&gateway);
    assert_eq!([politics.0, sport.0, health.0], [200, 200, 200]);
    assert!(politics.1 > 0 && sport.1 > 0 && health.1 > 0);
    gateway.settle(3);
    let entries = gateway.log_entries_without_time();
    assert_eq!(
        entries,
        vec![
            entry("error", "/politics", 200, politics.1),
            entry("info", "/politics", 200, politics.1),
            entry("info", "/sport", 200, sport.1),
            entry("info", "/health", 200, health.1),
        ]
    );
    assert_eq!(
        gateway.upstream.paths(),
        vec!["/politics", "/sport", "/health"]
    );
}

#[test]
fn the_routing_policy_refuses_politics_with_404_before_the_upstream() {
    let gateway = Gateway::example("s2-routing.json");
    assert_politics_is_refused(
        &gateway,
        "egress_policy_denied:route=direct-through-egress-gateway",
    );
}

#[test]
fn the_list_check_policy_refuses_politics_with_404_before_the_upstream() {
    let gateway = Gateway::example("s3-listcheck.json");
    assert_politics_is_refused(
        &gateway,
        "egress_policy_denied:rule=handle-cnn-access,list=path-checker",
    );
}

#[test]
fn tls_origination_reaches_the_upstream_with_sni_and_a_verified_certificate() {
    // The cluster only trusts the test CA and the SAN edition.cnn.com: a 200 proves both.
    let gateway = Gateway::example("s1-logging.json");
    assert_eq!(gateway.status(CNN, "/sport"), 200);
    let (_, stats) =
        crate::support::http_get(gateway.admin_port, "/stats?filter=edition_cnn_com_443.ssl")
            .unwrap();
    assert!(
        stats.contains("cluster.edition_cnn_com_443.ssl.handshake: 1"),
        "{stats}"
    );
    assert!(
        stats.contains("cluster.edition_cnn_com_443.ssl.fail_verify_san: 0"),
        "{stats}"
    );
}

#[test]
fn host_variants_do_not_escape_the_policy() {
    let gateway = Gateway::example("s3-listcheck.json");
    for host in ["EDITION.CNN.COM", "edition.cnn.com:80", "edition.cnn.com."] {
        assert_eq!(gateway.status(host, "/politics"), 404, "{host}");
    }
    assert_eq!(gateway.status(CNN, "/politics?x=/sport"), 404);
    assert_eq!(gateway.status(CNN, "/sport/../politics"), 404);
    gateway.settle(5);
    assert!(
        gateway
            .upstream
            .paths()
            .iter()
            .all(|p| !p.contains("politics"))
    );
    let errors = gateway
        .log_entries()
        .into_iter()
        .filter(|e| e["level"] == "error")
        .count();
    assert_eq!(errors, 5, "every attempt is logged as an error");
}

#[test]
fn non_utf8_and_huge_header_values_are_decided_without_killing_the_vm() {
    let config = r#"{"rules": [{"name": "team", "match": "request.headers[\"x-team\"] == \"news\"", "log": "info"}],
        "log": {"fields": {"team": "request.headers[\"x-team\"] | \"none\"", "code": "response.code | 0"}}}"#;
    let mut gateway = Gateway::with_config("headers", config);
    let raw = b"GET /sport HTTP/1.1\r\nHost: edition.cnn.com\r\nx-team: n\xffws\xfe\r\nConnection: close\r\n\r\n";
    assert_eq!(gateway.raw_request(raw), 200);
    let huge = "a".repeat(50 * 1024);
    let status = gateway.status_with_header(CNN, "/sport", &format!("x-team: {huge}"));
    assert!(status == 200 || status == 431, "huge header: {status}");
    // The VM is alive and still deciding: this request fires the rule.
    assert_eq!(
        gateway.status_with_header(CNN, "/health", "x-team: news"),
        200
    );
    gateway.settle(3);
    assert!(gateway.is_running());
    let entries = gateway.log_entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["team"], "news");
    assert!(
        !gateway.envoy_stderr().contains("panicked"),
        "{}",
        gateway.envoy_stderr()
    );
}

const BAD_EXPRESSION: &str = r#"{"rules": [{"name": "handle-politics", "log": "error", "match": "request.host.endsWith(\"cnn.com\") && (request.path == \"/x\""}]}"#;

/// Fail closed at startup: Envoy refuses the configuration with the filter's message naming the
/// field, and every request is refused (500) until a valid configuration loads.
#[test]
fn bad_config_at_startup_is_refused_naming_the_field_and_nothing_passes() {
    let gateway = Gateway::with_config("bad-expression", BAD_EXPRESSION);
    assert_eq!(gateway.status(CNN, "/sport"), 500);
    assert_eq!(gateway.status(CNN, "/politics"), 500);
    assert!(gateway.upstream.paths().is_empty());
    let stderr = gateway.envoy_stderr();
    assert!(
        stderr.contains("egress-policy: invalid configuration: rules[0].match: expected ')', found end of expression at column 58"),
        "{stderr}"
    );
    assert_eq!(
        gateway.counter("extension_config_discovery.http_filter.egress-policy.update_rejected"),
        1
    );

    assert!(
        gateway.reload(&repo().join("envoy/examples/s3-listcheck.json")),
        "a valid configuration then loads"
    );
    assert_eq!(gateway.status(CNN, "/sport"), 200);
    assert_eq!(gateway.status(CNN, "/politics"), 404);
}

/// Fail closed at reload: a bad configuration is rejected and the previous one keeps serving;
/// a good one replaces it without a restart.
#[test]
fn bad_config_at_reload_is_rejected_and_the_previous_policy_keeps_serving() {
    let gateway = Gateway::example("s3-listcheck.json");
    assert_eq!(gateway.status(CNN, "/politics"), 404);
    let dir = crate::support::TempDir::new("reload");
    let bad = dir.path("bad.json");
    std::fs::write(&bad, BAD_EXPRESSION).unwrap();
    assert!(
        !gateway.reload(&bad),
        "Envoy must reject the bad configuration"
    );
    assert_eq!(
        gateway.status(CNN, "/politics"),
        404,
        "the list-check policy still in force"
    );
    assert_eq!(gateway.status(CNN, "/sport"), 200);
    assert!(
        gateway
            .envoy_stderr()
            .contains("rules[0].match: expected ')'")
    );
    assert!(
        gateway.metric("config_loads", &[("result", "failure")]) >= 1,
        "load failures are counted"
    );

    assert!(gateway.reload(&repo().join("envoy/examples/s1-logging.json")));
    assert_eq!(
        gateway.status(CNN, "/politics"),
        200,
        "the logging policy only logs"
    );
    assert_eq!(gateway.upstream.paths(), ["/sport", "/politics"]);
}

/// `egress-policy audit` on the real log: the logging policy only logs, so politics was sent (exit 1, the entry
/// named); the list-check policy refused it (exit 0).
#[test]
fn audit_finds_the_politics_request_s1_let_through_and_clears_list_check_policy() {
    for (example, expected_exit) in [("s1-logging.json", 1), ("s3-listcheck.json", 0)] {
        let gateway = Gateway::example(example);
        let [politics, _, _] = politics_sport_health(&gateway);
        gateway.settle(3);
        let output = crate::support::cli_command()
            .arg("audit")
            .arg(gateway.dir.path("egress.log"))
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(expected_exit),
            "{example}: {report}"
        );
        assert!(report.starts_with("entries: 4\n"), "{report}");
        if expected_exit == 1 {
            assert_eq!(politics.0, 200);
            assert!(
                report.contains("UNAUTHORIZED REQUESTS LET THROUGH: 1\n"),
                "{report}"
            );
            assert!(report.contains("error entry let through: edition.cnn.com/politics from unknown (unknown), responseCode 200"));
        } else {
            assert!(
                report.contains("no unauthorized request was let through"),
                "{report}"
            );
        }
    }
}
