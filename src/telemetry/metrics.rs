//! Metric names, with their labels encoded for Envoy's tag extraction.
//!
//! proxy-wasm metrics have names, not labels, so each label is written into the name in Istio's
//! tag encoding, `<label>=.=<value>;.;`, before the metric's own name:
//! `wasmcustom.egress_policy.decision=.=deny;.;destination=.=*.cnn.com;.;...;.;requests`. One
//! `stats_tags` regex per label, `(<label>=\.=(.*?);\.;)`, takes each out again, leaving
//! `egress_policy_requests{decision="deny",destination="*.cnn.com",...}` in Prometheus. It is the
//! encoding Istio's own metrics use, so on Istio the gateway's bootstrap extracts the labels
//! once their names are listed in ProxyConfig `extraStatTags` (`egress-policy istio
//! gateway-values` prints them), and `envoy/gateway.yaml` has the same regexes. Label values are
//! bounded: destinations are the hosts the configuration names (everything else is `other`),
//! and every value is sanitized so that it cannot end its label or start another.

use std::cell::RefCell;
use std::fmt::Write;

use crate::telemetry::log_entry::push_int;

use crate::core::attributes::Attr;
use crate::core::decision::{Decision, DenyReason, Outcome};
use crate::core::expr::{HostLiterals, Needs};
use crate::core::policy::Policy;
use crate::core::policy::matchers::{HostPattern, HostTable};
use crate::core::request::{Protocol, Rejection, Request};

/// Every label the filter encodes into a metric name, in the order names carry them. The
/// `stats_tags` of `envoy/gateway.yaml` and the `extraStatTags` of the Istio gateway are
/// derived from this list (a test keeps both in step).
pub const STATS_TAGS: &[&str] = &[
    "decision",
    "destination",
    "source_namespace",
    "source_app",
    "source_version",
    "response_code",
    "rule",
    "list",
    "result",
];

/// The tag-extraction regex of one label, exactly as Istio's bootstrap writes it for each
/// `extraStatTags` entry: the first group is cut out of the name, the second is the value.
pub fn stats_tag_regex(tag: &str) -> String {
    format!(r"({tag}=\.=(.*?);\.;)")
}

/// The prefix every metric of the filter has before Envoy adds `wasmcustom.`: what Istio's
/// `proxyStatsMatcher.inclusionPrefixes` must name so that the gateway exports them.
pub const STATS_PREFIX: &str = "egress_policy.";

/// The metric names of one configuration, built when it is compiled: per request only the
/// caller's labels and the response code are appended to a prefix, in a reused buffer.
#[derive(Debug)]
pub struct Metrics {
    /// The host patterns the configuration names (rules' host literals and routes' hosts), each
    /// with its index in `requests`: bounded values for the destination label.
    destinations: HostTable<usize>,
    /// The destination label values: each named pattern, then `other`, then `unknown`.
    destination_names: Vec<Box<str>>,
    /// Per destination and outcome: the requests counter up to its `source_namespace` value.
    requests: Vec<[Box<str>; Outcome::ALL.len()]>,
    /// The same for connections (the network filter).
    connections: Vec<[Box<str>; Outcome::ALL.len()]>,
    /// Per rule and outcome: the rule_matches counter.
    rule_matches: Vec<[Box<str>; Outcome::ALL.len()]>,
    /// Per rule: for each list it checks, the denied counter up to the namespace value and the
    /// dry_run_denied counter.
    rule_checks: Vec<Vec<RuleCheck>>,
    /// Per route: its denied counter up to the namespace value.
    route_denials: Vec<Box<str>>,
    host_unknown_denial: Box<str>,
    /// Per [`Rejection`], in [`Rejection::ALL`] order.
    rejections: Vec<(Rejection, Box<str>)>,
    /// Per list: its fetch counters and gauges.
    lists: Vec<ListMetrics>,
    /// What the labels read from every request, beyond what the policy reads.
    pub reads: Needs,
    /// Where each request's counter names are written.
    name_buffer: RefCell<String>,
}

#[derive(Debug)]
struct RuleCheck {
    list: usize,
    denied: Box<str>,
    dry_run_denied: Box<str>,
}

/// The names of one list's metrics.
#[derive(Debug)]
pub struct ListMetrics {
    pub fetch_success: Box<str>,
    pub fetch_failure: Box<str>,
    /// Gauge of the entries of the last good fetch.
    pub entries: Box<str>,
    /// Gauge of the age of the last good fetch, in seconds.
    pub age_seconds: Box<str>,
}

impl Metrics {
    pub fn compile(policy: &Policy) -> Self {
        let mut host_literals = HostLiterals::default();
        for rule in &policy.rules {
            if let Some(condition) = rule.condition() {
                condition.host_literals(&mut host_literals);
            }
        }
        let literal_patterns = host_literals
            .names
            .iter()
            .filter_map(|name| HostPattern::parse(name).ok())
            .chain(
                host_literals
                    .suffixes
                    .iter()
                    .filter_map(|suffix| HostPattern::parse(&format!("*.{suffix}")).ok()),
            );
        let mut destinations = HostTable::default();
        let mut names: Vec<String> = Vec::new();
        for pattern in literal_patterns.chain(policy.routes.host_patterns()) {
            if pattern != HostPattern::Any {
                let text = pattern.to_string();
                destinations.entry(pattern, || {
                    names.push(text);
                    names.len() - 1
                });
            }
        }
        names.extend(["other".to_owned(), "unknown".to_owned()]);
        let family = || {
            names
                .iter()
                .map(|destination| {
                    per_outcome(|outcome| {
                        tagged(&[("decision", outcome), ("destination", destination)], "")
                            + "source_namespace=.="
                    })
                })
                .collect()
        };
        let requests = family();
        let connections = family();
        let rule_matches = policy
            .rules
            .iter()
            .map(|rule| {
                let rule = sanitize(&rule.name);
                per_outcome(|outcome| {
                    tagged(&[("rule", &rule), ("decision", outcome)], "rule_matches")
                })
            })
            .collect();
        let list_label = |index: usize| sanitize(policy.lists.get(index).map_or("?", |l| &l.name));
        let rule_checks = policy
            .rules
            .iter()
            .map(|rule| {
                let rule_label = sanitize(&rule.name);
                let check = |list: usize| {
                    let list_label = list_label(list);
                    let labels = [("rule", rule_label.as_str()), ("list", &list_label)];
                    RuleCheck {
                        list,
                        denied: denial_prefix(&labels),
                        dry_run_denied: tagged(&labels, "dry_run_denied").into(),
                    }
                };
                rule.checks.iter().map(|&list| check(list)).collect()
            })
            .collect();
        let route_denials = (0..policy.routes.len())
            .map(|index| {
                let route = sanitize(policy.routes.route(index).map_or("route", |r| &r.name));
                denial_prefix(&[("rule", &route), ("list", "none")])
            })
            .collect();
        let rejections = Rejection::ALL
            .iter()
            .map(|&problem| {
                let rule = format!("rejected_{}", problem.code());
                (problem, denial_prefix(&[("rule", &rule), ("list", "none")]))
            })
            .collect();
        let lists = (0..policy.lists.len())
            .map(|index| ListMetrics::new(&list_label(index)))
            .collect();
        // The labels: source namespace, app (label, else service account) and version.
        let mut reads = Needs::default();
        reads.add(Attr::SourceNamespace);
        reads.add(Attr::SourceServiceAccount);
        reads.add(Attr::RequestHost);
        reads.labels.insert("app".into());
        reads.labels.insert("version".into());
        Metrics {
            destinations,
            destination_names: names.into_iter().map(String::into_boxed_str).collect(),
            requests,
            connections,
            rule_matches,
            rule_checks,
            route_denials,
            host_unknown_denial: denial_prefix(&[("rule", "host_unknown"), ("list", "none")]),
            rejections,
            lists,
            reads,
            name_buffer: RefCell::new(String::with_capacity(256)),
        }
    }

    /// The destination label of a request: the most specific host pattern the configuration
    /// names that matches its host (the same [`HostTable`] lookup routes use), `other` when none
    /// does, `unknown` without a host.
    pub fn destination_label(&self, host: Option<&str>) -> &str {
        self.destination_names
            .get(self.destination(host))
            .map_or("other", |name| name)
    }

    fn destination(&self, host: Option<&str>) -> usize {
        let other = self.destination_names.len().saturating_sub(2);
        match host {
            None => other + 1,
            Some(host) => self.destinations.lookup(host).copied().unwrap_or(other),
        }
    }

    /// The names of list `index`'s metrics.
    pub fn list(&self, index: usize) -> Option<&ListMetrics> {
        self.lists.get(index)
    }

    /// Calls `increment` with each counter one finished request (or one decided connection)
    /// increments. Connections have no response code label.
    pub fn count_request(
        &self,
        decision: &Decision,
        request: &Request,
        response_code: Option<i64>,
        mut increment: impl FnMut(&str),
    ) {
        let outcome = decision.outcome();
        let slot = Outcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or_default();
        let source = &request.source;
        let namespace = source.namespace.as_deref();
        let app = source.label("app").or(source.service_account.as_deref());
        let version = source.label("version");
        let (family, metric, destination) = match request.protocol {
            Protocol::Http => (&self.requests, "requests", request.host.as_deref()),
            Protocol::Tcp => (
                &self.connections,
                "connections",
                request.requested_server_name.as_deref(),
            ),
        };
        // The buffer is the VM's, kept across requests (one thread per VM: never taken twice).
        let mut kept = self.name_buffer.try_borrow_mut();
        let mut fresh = String::new();
        let name = match kept.as_deref_mut() {
            Ok(buffer) => buffer,
            Err(_) => &mut fresh,
        };
        name.clear();
        if let Some(prefix) = family
            .get(self.destination(destination))
            .and_then(|p| p.get(slot))
        {
            name.push_str(prefix);
            push_label(name, namespace);
            name.push_str(";.;source_app=.=");
            push_label(name, app);
            name.push_str(";.;source_version=.=");
            push_label(name, version);
            if request.protocol == Protocol::Http {
                name.push_str(";.;response_code=.=");
                match response_code {
                    Some(code) => push_int(name, code),
                    None => name.push_str("none"),
                }
            }
            name.push_str(";.;");
            name.push_str(metric);
            increment(name);
        }
        let denial = match (&decision.rejected, &decision.denied) {
            (Some(problem), _) => self
                .rejections
                .iter()
                .find(|(p, _)| p == problem)
                .map(|(_, prefix)| &**prefix),
            (None, Some(reason)) => self.denial_prefix(reason),
            (None, None) => None,
        };
        if let Some(prefix) = denial {
            name.clear();
            name.push_str(prefix);
            push_label(name, namespace);
            name.push_str(";.;source_app=.=");
            push_label(name, app);
            name.push_str(";.;denied");
            increment(name);
        }
        for reason in &decision.dry_run {
            if let DenyReason::List { rule, list, .. } = reason
                && let Some(check) = self.check(*rule, *list)
            {
                increment(&check.dry_run_denied);
            }
        }
        for &index in &decision.fired {
            if let Some(name) = usize::try_from(index)
                .ok()
                .and_then(|i| self.rule_matches.get(i))
                .and_then(|names| names.get(slot))
            {
                increment(name);
            }
        }
    }

    fn check(&self, rule: usize, list: usize) -> Option<&RuleCheck> {
        self.rule_checks.get(rule)?.iter().find(|c| c.list == list)
    }

    fn denial_prefix(&self, reason: &DenyReason) -> Option<&str> {
        match reason {
            DenyReason::HostUnknown => Some(&self.host_unknown_denial),
            DenyReason::NoRouteMatch { route } => self.route_denials.get(*route).map(|p| &**p),
            DenyReason::List { rule, list, .. } => self.check(*rule, *list).map(|c| &*c.denied),
        }
    }
}

impl ListMetrics {
    fn new(list: &str) -> Self {
        let fetches = |result| tagged(&[("list", list), ("result", result)], "list_fetches");
        ListMetrics {
            fetch_success: fetches("success").into(),
            fetch_failure: fetches("failure").into(),
            entries: tagged(&[("list", list)], "list_entries").into(),
            age_seconds: tagged(&[("list", list)], "list_age_seconds").into(),
        }
    }
}

/// A metric name: the prefix, each label as `<label>=.=<value>;.;` (values already sanitized
/// or known), then the metric.
fn tagged(labels: &[(&str, &str)], metric: &str) -> String {
    let mut name = String::from(STATS_PREFIX);
    for (label, value) in labels {
        let _ = write!(name, "{label}=.={value};.;");
    }
    name.push_str(metric);
    name
}

/// The `denied` counter of one rule and list, up to the caller's namespace value.
fn denial_prefix(labels: &[(&str, &str)]) -> Box<str> {
    (tagged(labels, "") + "source_namespace=.=").into()
}

/// One name per outcome, in [`Outcome::ALL`] order.
fn per_outcome(name: impl Fn(&str) -> String) -> [Box<str>; Outcome::ALL.len()] {
    Outcome::ALL.map(|outcome| name(outcome.as_str()).into())
}

/// Appends a label value: letters, digits, `_` and `-` (nothing that could end the label, as
/// `;.;` does, or split the name), at most 64;
/// `unknown` when absent or empty.
fn push_label(name: &mut String, value: Option<&str>) {
    let value = value.unwrap_or_default();
    if value.is_empty() {
        name.push_str("unknown");
        return;
    }
    let is_kept = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    // Label values are nearly always short names: copied at once.
    if value.len() <= 64 && value.bytes().all(is_kept) {
        name.push_str(value);
        return;
    }
    name.extend(value.chars().take(64).map(|c| {
        if c.is_ascii() && is_kept(c as u8) {
            c
        } else {
            '_'
        }
    }));
}

/// A label value known when the configuration is compiled (a rule or list name).
fn sanitize(value: &str) -> String {
    let mut out = String::new();
    push_label(&mut out, Some(value));
    out
}

/// Gauge of the fingerprint ([`crate::core::config::fingerprint`]) of the configuration in force.
pub const CONFIG_FINGERPRINT_GAUGE: &str = "egress_policy.config_fingerprint";

/// Counter of configuration loads by result.
pub fn config_load_counter(success: bool) -> &'static str {
    if success {
        "egress_policy.result=.=success;.;config_loads"
    } else {
        "egress_policy.result=.=failure;.;config_loads"
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
        let metrics = Metrics::compile(&policy);
        let label = |host: Option<&str>| metrics.destination_label(host).to_owned();
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
        let mut counters = Vec::new();
        Metrics::compile(&policy).count_request(&decision, &request, Some(404), |name| {
            counters.push(name.to_owned())
        });
        assert_eq!(
            counters,
            vec![
                "egress_policy.decision=.=deny;.;destination=.=*.cnn.com;.;source_namespace=.=default;.;source_app=.=sleep;.;source_version=.=unknown;.;response_code=.=404;.;requests",
                "egress_policy.rule=.=handle-cnn-access;.;list=.=path-checker;.;source_namespace=.=default;.;source_app=.=sleep;.;denied",
                "egress_policy.rule=.=handle-politics;.;decision=.=deny;.;rule_matches",
                "egress_policy.rule=.=handle-cnn-access;.;decision=.=deny;.;rule_matches",
            ]
        );
    }

    /// What Envoy does with each `stats_tags` entry: the first group leaves the name, the
    /// second is the value; what is left is the metric.
    #[test]
    fn stats_tag_regexes_extract_every_label_and_leave_the_metric_name() {
        let mut name = "wasmcustom.egress_policy.decision=.=deny;.;destination=.=*.cnn.com;.;source_namespace=.=default;.;source_app=.=sleep;.;source_version=.=v1;.;response_code=.=404;.;requests".to_owned();
        let mut labels = Vec::new();
        for tag in STATS_TAGS {
            let regex = regex::Regex::new(&stats_tag_regex(tag)).unwrap();
            if let Some(captures) = regex.captures(&name.clone()) {
                labels.push((*tag, captures.get(2).unwrap().as_str().to_owned()));
                name = name.replacen(captures.get(1).unwrap().as_str(), "", 1);
            }
        }
        assert_eq!(
            labels,
            [
                ("decision", "deny"),
                ("destination", "*.cnn.com"),
                ("source_namespace", "default"),
                ("source_app", "sleep"),
                ("source_version", "v1"),
                ("response_code", "404"),
            ]
            .map(|(t, v)| (t, v.to_owned()))
        );
        assert_eq!(name, "wasmcustom.egress_policy.requests");
    }
}
