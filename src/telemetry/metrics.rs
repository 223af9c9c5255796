//! Metric names, with their labels encoded for Envoy's tag extraction.
//!
//! proxy-wasm metrics have names, not labels, so each label is written into the name as
//! `.<label>.<value>` and the `stats_tags` of `envoy/gateway.yaml` (also in
//! `manifests/egress-metrics-envoyfilter.yaml` for Istio) turn them back into Prometheus labels:
//! `wasmcustom.egress_policy.requests.decision.deny.destination.edition.cnn.com...` becomes
//! `egress_policy_requests{decision="deny",destination="edition.cnn.com",...}`. Label values are
//! bounded: destinations are the hosts the configuration names (everything else is `other`),
//! and every value is sanitized so that it cannot be mistaken for another label.

use crate::core::decision::{Decision, DenyReason};
use crate::core::policy::Policy;
use crate::core::request::Request;

/// The tags `envoy/gateway.yaml` extracts: (tag name, regex). Kept here so a test can check that
/// the bundled Envoy configs extract exactly these.
pub const STATS_TAGS: &[(&str, &str)] = &[
    (
        "destination",
        r"^wasmcustom\.egress_policy\.requests\..*?(\.destination\.(.+?))\.source_namespace\.",
    ),
    (
        "decision",
        r"^wasmcustom\.egress_policy\..*?(\.decision\.([^.]+))",
    ),
    (
        "source_namespace",
        r"^wasmcustom\.egress_policy\..*?(\.source_namespace\.([^.]+))",
    ),
    (
        "source_app",
        r"^wasmcustom\.egress_policy\..*?(\.source_app\.([^.]+))",
    ),
    (
        "source_version",
        r"^wasmcustom\.egress_policy\..*?(\.source_version\.([^.]+))",
    ),
    (
        "response_code",
        r"^wasmcustom\.egress_policy\..*?(\.response_code\.([^.]+))",
    ),
    ("rule", r"^wasmcustom\.egress_policy\..*?(\.rule\.([^.]+))"),
    ("list", r"^wasmcustom\.egress_policy\..*?(\.list\.([^.]+))"),
    (
        "result",
        r"^wasmcustom\.egress_policy\..*?(\.result\.([^.]+))",
    ),
];

/// The destination label of a request: the most specific host pattern the configuration names
/// that matches its host (the same [`crate::core::policy::matchers::HostTable`] lookup routes use), `other`
/// when none does, `unknown` without a host.
pub fn destination_label<'p>(policy: &'p Policy, host: Option<&str>) -> &'p str {
    match host {
        None => "unknown",
        Some(host) => policy
            .named_hosts
            .lookup(host)
            .map_or("other", |label| label),
    }
}

/// A label value: letters, digits, `_` and `-` (dots would split the name), at most 64.
fn sanitize(value: &str) -> String {
    let clean: String = value
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "unknown".into()
    } else {
        clean
    }
}

fn source_labels(request: &Request) -> (String, String, String) {
    let source = &request.source;
    let namespace = sanitize(source.namespace.as_deref().unwrap_or("unknown"));
    let app = sanitize(
        source
            .label("app")
            .or(source.service_account.as_deref())
            .unwrap_or("unknown"),
    );
    let version = sanitize(source.label("version").unwrap_or("unknown"));
    (namespace, app, version)
}

/// Rule and list labels of a denial.
fn rule_and_list(policy: &Policy, reason: &DenyReason) -> (String, String) {
    match reason {
        DenyReason::HostUnknown => ("host_unknown".into(), "none".into()),
        DenyReason::NoRouteMatch { route } => (
            sanitize(
                policy
                    .routes
                    .route(*route)
                    .map_or("route", |r| r.name.as_str()),
            ),
            "none".into(),
        ),
        DenyReason::List { rule, list, .. } => (
            sanitize(policy.rules.get(*rule).map_or("?", |r| r.name.as_str())),
            sanitize(policy.lists.get(*list).map_or("?", |l| l.name.as_str())),
        ),
    }
}

/// The counters one finished request increments.
pub fn request_counters(
    policy: &Policy,
    decision: &Decision,
    request: &Request,
    response_code: Option<i64>,
) -> Vec<String> {
    let (namespace, app, version) = source_labels(request);
    let verdict = decision.outcome().as_str();
    let destination = destination_label(policy, request.host.as_deref());
    let code = response_code.map_or("none".into(), |c| c.to_string());
    let mut counters = vec![format!(
        "egress_policy.requests.decision.{verdict}.destination.{destination}.source_namespace.{namespace}.source_app.{app}.source_version.{version}.response_code.{code}"
    )];
    if let Some(reason) = &decision.denied {
        let (rule, list) = rule_and_list(policy, reason);
        counters.push(format!(
            "egress_policy.denied.rule.{rule}.list.{list}.source_namespace.{namespace}.source_app.{app}"
        ));
    }
    if let Some(problem) = decision.rejected {
        counters.push(format!(
            "egress_policy.denied.rule.rejected_{}.list.none.source_namespace.{namespace}.source_app.{app}",
            problem.code()
        ));
    }
    for reason in &decision.dry_run {
        let (rule, list) = rule_and_list(policy, reason);
        counters.push(format!(
            "egress_policy.dry_run_denied.rule.{rule}.list.{list}"
        ));
    }
    for &index in &decision.fired {
        if let Some(rule) = usize::try_from(index)
            .ok()
            .and_then(|i| policy.rules.get(i))
        {
            counters.push(format!(
                "egress_policy.rule_matches.rule.{}.decision.{verdict}",
                sanitize(&rule.name)
            ));
        }
    }
    counters
}

/// Counter of list fetches by result (`success` or `failure`).
pub fn list_fetch_counter(list: &str, success: bool) -> String {
    let result = if success { "success" } else { "failure" };
    format!(
        "egress_policy.list_fetches.list.{}.result.{result}",
        sanitize(list)
    )
}

/// Gauge of the entries of a list's last good fetch.
pub fn list_entries_gauge(list: &str) -> String {
    format!("egress_policy.list_entries.list.{}", sanitize(list))
}

/// Gauge of the age of a list's last good fetch, in seconds.
pub fn list_age_gauge(list: &str) -> String {
    format!("egress_policy.list_age_seconds.list.{}", sanitize(list))
}

/// Gauge of the fingerprint ([`crate::core::config::fingerprint`]) of the configuration in force.
pub const CONFIG_FINGERPRINT_GAUGE: &str = "egress_policy.config_fingerprint";

/// Counter of configuration loads by result.
pub fn config_load_counter(success: bool) -> &'static str {
    if success {
        "egress_policy.config_loads.result.success"
    } else {
        "egress_policy.config_loads.result.failure"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_bounded_to_hosts_the_config_names() {
        let policy = Policy::from_json(
            br#"{"rules": [{"name": "r", "log": "info", "match":
                 "request.host == \"api.example.com\" || request.host.endsWith(\"cnn.com\") || request.host.endsWith(\".edition.cnn.com\")"}]}"#,
        )
        .unwrap();
        let label = |host: Option<&str>| destination_label(&policy, host).to_owned();
        assert_eq!(label(Some("api.example.com")), "api.example.com");
        assert_eq!(label(Some("money.cnn.com")), "*.cnn.com");
        assert_eq!(label(Some("www.edition.cnn.com")), "*.edition.cnn.com");
        assert_eq!(
            label(Some("evilcnn.com")),
            "other",
            "a suffix is whole labels"
        );
        assert_eq!(label(Some("evil.example.org")), "other");
        assert_eq!(label(None), "unknown");
    }

    #[test]
    fn label_values_cannot_split_the_name() {
        assert_eq!(sanitize("my.app/v1 x"), "my_app_v1_x");
        assert_eq!(sanitize(""), "unknown");
        assert_eq!(sanitize(&"a".repeat(100)).len(), 64);
    }

    #[test]
    fn s3_politics_denial_counts_request_denial_and_rules() {
        let policy = Policy::from_json(
            &std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/envoy/examples/s3-listcheck.json"
            ))
            .unwrap(),
        )
        .unwrap();
        let mut request = crate::testing::request_with_path("/politics");
        request.set_host("edition.cnn.com");
        request.source.namespace = Some("default".into());
        request.source.service_account = Some("sleep".into());
        let decision = policy.evaluate(&request);
        let counters = request_counters(&policy, &decision, &request, Some(404));
        assert_eq!(
            counters,
            vec![
                "egress_policy.requests.decision.deny.destination.*.cnn.com.source_namespace.default.source_app.sleep.source_version.unknown.response_code.404",
                "egress_policy.denied.rule.handle-cnn-access.list.path-checker.source_namespace.default.source_app.sleep",
                "egress_policy.rule_matches.rule.handle-politics.decision.deny",
                "egress_policy.rule_matches.rule.handle-cnn-access.decision.deny",
            ]
        );
    }

    #[test]
    fn stats_tag_regexes_extract_every_label() {
        let name = "wasmcustom.egress_policy.requests.decision.deny.destination.*.cnn.com.source_namespace.default.source_app.sleep.source_version.v1.response_code.404";
        let mut labels = Vec::new();
        for (tag, pattern) in STATS_TAGS {
            if let Some(captures) = regex::Regex::new(pattern).unwrap().captures(name) {
                labels.push((*tag, captures.get(2).unwrap().as_str()));
            }
        }
        assert_eq!(
            labels,
            vec![
                ("destination", "*.cnn.com"),
                ("decision", "deny"),
                ("source_namespace", "default"),
                ("source_app", "sleep"),
                ("source_version", "v1"),
                ("response_code", "404"),
            ]
        );
    }
}
