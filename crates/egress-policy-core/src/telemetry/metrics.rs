//! The filter's metrics as typed events: which counter or gauge, and its label values. Each
//! adapter encodes them for its host: the proxy-wasm filter writes the labels into the metric's
//! name in Istio's tag encoding (proxy-wasm metrics have no labels), a native Envoy module
//! defines the counters with their label names and increments them with the values.
//!
//! Label values are bounded and plain: destinations are the hosts the configuration names
//! (everything else is `other`), and every value is letters, digits, `_` and `-`, at most 64, so
//! that no encoding can be broken by one (`;.;` ends a label in Istio's).

use std::borrow::Cow;

use crate::attributes::Attr;
use crate::decision::{Decision, DenyReason};
use crate::expr::{HostLiterals, Needs};
use crate::policy::Policy;
use crate::policy::matchers::{HostPattern, HostTable};
use crate::request::{Protocol, Rejection, Request};

/// Every label of the filter's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// The outcome: `allow`, `deny`, `reject`, `dry_run_deny`.
    Decision,
    /// The most specific host pattern the configuration names that matches, `other`, `unknown`.
    Destination,
    /// The caller's namespace, from its certificate.
    SourceNamespace,
    /// The caller's `app` label, else its service account.
    SourceApp,
    /// The caller's `version` label.
    SourceVersion,
    /// The response's status (`none` without a response).
    ResponseCode,
    /// The rule (or route, `host_unknown`, `rejected_<code>`) that decided.
    Rule,
    /// The list checked (`none` for a route or a rejection).
    List,
    /// `success` or `failure`.
    Result,
    /// A configuration's `policyVersion`. Not `version`: Istio's tag regex for that name would
    /// also match inside `source_version=.=…;.;` and tag every request counter with it.
    PolicyVersion,
}

impl Label {
    /// In the order metric names carry them in Istio's tag encoding.
    pub const ALL: [Label; 10] = [
        Self::Decision,
        Self::Destination,
        Self::SourceNamespace,
        Self::SourceApp,
        Self::SourceVersion,
        Self::ResponseCode,
        Self::Rule,
        Self::List,
        Self::Result,
        Self::PolicyVersion,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Decision => "decision",
            Self::Destination => "destination",
            Self::SourceNamespace => "source_namespace",
            Self::SourceApp => "source_app",
            Self::SourceVersion => "source_version",
            Self::ResponseCode => "response_code",
            Self::Rule => "rule",
            Self::List => "list",
            Self::Result => "result",
            Self::PolicyVersion => "policy_version",
        }
    }
}

static LABEL_ORDER: [Label; Label::ALL.len()] = Label::ALL;

/// Every counter of the filter, with its labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// HTTP requests by decision, destination, caller and response code.
    Requests,
    /// TLS connections by decision, destination and caller.
    Connections,
    /// Requests and connections refused, by the rule (or route, or rejection) and list that
    /// refused them, and caller.
    Denied,
    /// What a `dryRun` rule would have refused, by rule and list.
    DryRunDenied,
    /// Rules whose condition held, by rule and the request's decision.
    RuleMatches,
    /// `error` entries whose request or connection was let through (what `audit` calls a
    /// violation), by rule and caller.
    Violations,
    /// Remote-list fetches by list and result.
    ListFetches,
    /// Configuration loads by result.
    ConfigLoads,
}

impl Counter {
    pub const ALL: [Counter; 8] = [
        Self::Requests,
        Self::Connections,
        Self::Denied,
        Self::DryRunDenied,
        Self::RuleMatches,
        Self::Violations,
        Self::ListFetches,
        Self::ConfigLoads,
    ];

    /// The metric's name without the `egress_policy` prefix.
    pub fn name(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Connections => "connections",
            Self::Denied => "denied",
            Self::DryRunDenied => "dry_run_denied",
            Self::RuleMatches => "rule_matches",
            Self::Violations => "violations",
            Self::ListFetches => "list_fetches",
            Self::ConfigLoads => "config_loads",
        }
    }

    /// Its labels, in the order an event gives their values.
    pub fn labels(self) -> &'static [Label] {
        use Label::*;
        match self {
            // The first labels of the names' order: the connections counter has no response.
            Self::Requests => LABEL_ORDER.get(..6).unwrap_or_default(),
            Self::Connections => LABEL_ORDER.get(..5).unwrap_or_default(),
            Self::Denied => &[Rule, List, SourceNamespace, SourceApp],
            Self::DryRunDenied => &[Rule, List],
            Self::RuleMatches => &[Rule, Decision],
            Self::Violations => &[Rule, SourceNamespace, SourceApp],
            Self::ListFetches => &[List, Result],
            Self::ConfigLoads => &[Result],
        }
    }
}

/// Every gauge of the filter, with its labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gauge {
    /// Entries of a remote list's last good fetch.
    ListEntries,
    /// Age of a remote list's last good fetch, in seconds.
    ListAgeSeconds,
    /// A remote list's `ttl`, in seconds: how old its last good fetch may grow.
    ListTtlSeconds,
    /// The fingerprint of the configuration in force ([`crate::config::fingerprint`]).
    ConfigFingerprint,
    /// 1 for each `policyVersion` in force, 0 for one replaced (an info metric).
    ConfigInfo,
}

impl Gauge {
    pub const ALL: [Gauge; 5] = [
        Self::ListEntries,
        Self::ListAgeSeconds,
        Self::ListTtlSeconds,
        Self::ConfigFingerprint,
        Self::ConfigInfo,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::ListEntries => "list_entries",
            Self::ListAgeSeconds => "list_age_seconds",
            Self::ListTtlSeconds => "list_ttl_seconds",
            Self::ConfigFingerprint => "config_fingerprint",
            Self::ConfigInfo => "config_info",
        }
    }

    pub fn labels(self) -> &'static [Label] {
        match self {
            Self::ListEntries | Self::ListAgeSeconds | Self::ListTtlSeconds => &[Label::List],
            Self::ConfigFingerprint => &[],
            Self::ConfigInfo => &[Label::PolicyVersion],
        }
    }
}

/// The most labels a metric has.
pub const MAX_LABELS: usize = 6;

/// One increment of a counter, with its label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterEvent<'a> {
    pub counter: Counter,
    values: [&'a str; MAX_LABELS],
}

impl<'a> CounterEvent<'a> {
    /// `values` in [`Counter::labels`] order; missing ones are empty, extra ones dropped.
    pub fn new(counter: Counter, values: &[&'a str]) -> Self {
        Self {
            counter,
            values: label_values(values),
        }
    }

    /// One value per label, in [`Counter::labels`] order.
    pub fn values(&self) -> &[&'a str] {
        self.values
            .get(..self.counter.labels().len())
            .unwrap_or_default()
    }
}

/// One setting of a gauge, with its label values and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GaugeEvent<'a> {
    pub gauge: Gauge,
    values: [&'a str; MAX_LABELS],
    pub value: u64,
}

impl<'a> GaugeEvent<'a> {
    /// `values` in [`Gauge::labels`] order; missing ones are empty, extra ones dropped.
    pub fn new(gauge: Gauge, values: &[&'a str], value: u64) -> Self {
        Self {
            gauge,
            values: label_values(values),
            value,
        }
    }

    /// One value per label, in [`Gauge::labels`] order.
    pub fn values(&self) -> &[&'a str] {
        self.values
            .get(..self.gauge.labels().len())
            .unwrap_or_default()
    }
}

fn label_values<'a>(values: &[&'a str]) -> [&'a str; MAX_LABELS] {
    let mut out = [""; MAX_LABELS];
    for (slot, value) in out.iter_mut().zip(values) {
        *slot = value;
    }
    out
}

/// The configurations a process (a wasm VM) has in force, by their owner (a root context, a
/// filter configuration), for the info gauge: a version stays at 1 while any owner serves it,
/// so replacing one configuration of two that share it does not hide it.
#[derive(Debug, Default)]
pub struct VersionsInForce {
    owners: Vec<(usize, String)>,
}

impl VersionsInForce {
    /// `owner` now serves `version` (`None`: it is gone). Returns the gauge settings to make:
    /// the new version at 1, and the one it replaced at 0 if no owner serves it any more.
    pub fn set(&mut self, owner: usize, version: Option<&str>) -> Vec<(String, u64)> {
        let before = self
            .owners
            .iter()
            .position(|(o, _)| *o == owner)
            .map(|at| self.owners.swap_remove(at).1);
        if let Some(version) = version {
            self.owners.push((owner, version.to_owned()));
        }
        let mut settings = Vec::new();
        if let Some(version) = version {
            settings.push((version.to_owned(), 1));
        }
        if let Some(before) = before
            && !self.owners.iter().any(|(_, v)| *v == before)
        {
            settings.push((before, 0));
        }
        settings
    }
}

/// This process's [`VersionsInForce`].
pub fn versions_in_force(owner: usize, version: Option<&str>) -> Vec<(String, u64)> {
    static VERSIONS: std::sync::Mutex<VersionsInForce> =
        std::sync::Mutex::new(VersionsInForce { owners: Vec::new() });
    match VERSIONS.lock() {
        Ok(mut versions) => versions.set(owner, version),
        Err(poisoned) => poisoned.into_inner().set(owner, version),
    }
}

/// The prefix of every metric's name (`egress_policy_requests` in Prometheus).
pub const METRIC_PREFIX: &str = "egress_policy";

/// The counter of one configuration load.
pub fn config_load(success: bool) -> CounterEvent<'static> {
    CounterEvent::new(
        Counter::ConfigLoads,
        &[if success { "success" } else { "failure" }],
    )
}

/// The label values of one configuration, bounded and sanitized when it is compiled: per
/// request only the caller's labels are looked at.
#[derive(Debug)]
pub struct Metrics {
    /// The host patterns the configuration names (rules' host literals and routes' hosts), each
    /// with its index in `destination_names`: bounded values for the destination label.
    destinations: HostTable<usize>,
    /// The destination label values: each named pattern, then `other`, then `unknown`.
    destination_names: Vec<Box<str>>,
    /// Per rule, per route and per list: its name as a label value.
    rules: Vec<Box<str>>,
    /// Per rule: whether it logs at `error`, so that a request it let through is a violation.
    error_rules: Vec<bool>,
    routes: Vec<Box<str>>,
    lists: Vec<Box<str>>,
    /// Per [`Rejection`], in [`Rejection::ALL`] order: `rejected_<code>`, the rule label of a
    /// request refused before any rule.
    rejections: Vec<Box<str>>,
    /// What the labels read from every request, beyond what the policy reads.
    pub reads: Needs,
}

impl Metrics {
    pub fn compile(policy: &Policy) -> Self {
        let (destinations, mut names) = destination_table(policy);
        names.extend(["other".to_owned(), "unknown".to_owned()]);
        let labels = |names: &mut dyn Iterator<Item = &str>| -> Vec<Box<str>> {
            names.map(|name| sanitize(name).into()).collect()
        };
        let routes = (0..policy.routes.len())
            .map(|index| policy.routes.route(index).map_or("route", |r| &r.name));
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
            rules: labels(&mut policy.rules.iter().map(|r| r.name.as_str())),
            error_rules: policy
                .rules
                .iter()
                .map(|r| r.log == Some(crate::config::LogLevel::Error))
                .collect(),
            routes: labels(&mut routes.into_iter()),
            lists: labels(&mut policy.lists.iter().map(|l| l.name.as_str())),
            rejections: Rejection::ALL
                .iter()
                .map(|problem| format!("rejected_{}", problem.code()).into())
                .collect(),
            reads,
        }
    }

    /// The destination label of a request: the most specific host pattern the configuration
    /// names that matches its host (the same [`HostTable`] lookup routes use), `other` when none
    /// does, `unknown` without a host.
    pub fn destination_label(&self, host: Option<&str>) -> &str {
        let other = self.destination_names.len().saturating_sub(2);
        let index = match host {
            None => other + 1,
            Some(host) => self.destinations.lookup(host).copied().unwrap_or(other),
        };
        self.destination_names
            .get(index)
            .map_or("other", |name| name)
    }

    /// List `index`'s name as a label value.
    pub fn list_label(&self, index: usize) -> &str {
        self.lists.get(index).map_or("unknown", |name| name)
    }

    /// One fetch of list `index`, by result.
    pub fn list_fetch(&self, index: usize, success: bool) -> CounterEvent<'_> {
        let result = if success { "success" } else { "failure" };
        CounterEvent::new(Counter::ListFetches, &[self.list_label(index), result])
    }

    /// A gauge of list `index` ([`Gauge::ListEntries`], [`Gauge::ListAgeSeconds`]).
    pub fn list_gauge(&self, gauge: Gauge, index: usize, value: u64) -> GaugeEvent<'_> {
        GaugeEvent::new(gauge, &[self.list_label(index)], value)
    }

    /// Hands `emit` each counter one finished request (or one decided connection) increments.
    /// Connections have no response code label.
    pub fn count_request(
        &self,
        decision: &Decision,
        request: &Request,
        response_code: Option<i64>,
        mut emit: impl FnMut(CounterEvent<'_>),
    ) {
        let outcome = decision.outcome().as_str();
        let source = &request.source;
        let namespace = label_value(source.namespace.as_deref());
        let app = label_value(source.label("app").or(source.service_account.as_deref()));
        let version = label_value(source.label("version"));
        let mut code = itoa::Buffer::new();
        match request.protocol {
            Protocol::Http => {
                let destination = self.destination_label(request.host.as_deref());
                let code = response_code.map_or("none", |c| code.format(c));
                emit(CounterEvent::new(
                    Counter::Requests,
                    &[outcome, destination, &namespace, &app, &version, code],
                ));
            }
            Protocol::Tcp => {
                let destination = self.destination_label(request.requested_server_name.as_deref());
                emit(CounterEvent::new(
                    Counter::Connections,
                    &[outcome, destination, &namespace, &app, &version],
                ));
            }
        }
        if let Some((rule, list)) = self.denied_by(decision) {
            emit(CounterEvent::new(
                Counter::Denied,
                &[rule, list, &namespace, &app],
            ));
        }
        for reason in &decision.dry_run {
            if let DenyReason::List { rule, list, .. } = reason
                && let (Some(rule), Some(list)) = (self.rules.get(*rule), self.lists.get(*list))
            {
                emit(CounterEvent::new(Counter::DryRunDenied, &[rule, list]));
            }
        }
        let forwarded = decision.outcome().forwarded();
        for &index in &decision.fired {
            let index = usize::try_from(index).unwrap_or(usize::MAX);
            if let Some(rule) = self.rules.get(index) {
                emit(CounterEvent::new(Counter::RuleMatches, &[rule, outcome]));
                if forwarded && self.error_rules.get(index) == Some(&true) {
                    emit(CounterEvent::new(
                        Counter::Violations,
                        &[rule, &namespace, &app],
                    ));
                }
            }
        }
    }

    /// The rule and list labels of what refused a request, if something did.
    fn denied_by(&self, decision: &Decision) -> Option<(&str, &str)> {
        if let Some(problem) = decision.rejected {
            let index = Rejection::ALL.iter().position(|p| *p == problem)?;
            return Some((self.rejections.get(index)?, "none"));
        }
        match decision.denied.as_ref()? {
            DenyReason::HostUnknown => Some(("host_unknown", "none")),
            DenyReason::NoRouteMatch { route } => Some((self.routes.get(*route)?, "none")),
            DenyReason::List { rule, list, .. } => {
                Some((self.rules.get(*rule)?, self.lists.get(*list)?))
            }
            DenyReason::IpLiteral => Some(("ip_literal", "none")),
            // The guard's reason is a fixed word (addresses::DEFAULT_REFUSED, `configured`).
            DenyReason::Address { reason, .. } => Some(("address_guard", reason)),
            DenyReason::ResolvedOnlyToRefused => Some(("address_guard", "resolved")),
        }
    }
}

/// The host patterns a configuration names, each with its index in the returned names.
fn destination_table(policy: &Policy) -> (HostTable<usize>, Vec<String>) {
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
    (destinations, names)
}

/// A label value from the request: borrowed when it is already plain (nearly always: workload
/// names), else sanitized; `unknown` when absent or empty.
fn label_value(value: Option<&str>) -> Cow<'_, str> {
    let value = value.unwrap_or_default();
    if value.is_empty() {
        return Cow::Borrowed("unknown");
    }
    if value.len() <= 64 && value.bytes().all(is_kept) {
        return Cow::Borrowed(value);
    }
    Cow::Owned(
        value
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii() && is_kept(c as u8) {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
    )
}

/// Letters, digits, `_` and `-`: nothing that could end a label in any encoding, or split a name.
fn is_kept(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// A label value known when the configuration is compiled (a rule or list name).
pub fn sanitize(value: &str) -> String {
    label_value(Some(value)).into_owned()
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
    fn label_values_cannot_split_a_name_or_grow_without_bound() {
        assert_eq!(sanitize("my.app/v1 x"), "my_app_v1_x");
        assert_eq!(sanitize("a;.;b=.=c"), "a___b___c");
        assert_eq!(sanitize(""), "unknown");
        assert_eq!(sanitize(&"a".repeat(100)).len(), 64);
    }

    #[test]
    fn every_event_gives_one_value_per_label() {
        let policy = Policy::from_json(include_bytes!(
            "../../../../envoy/examples/s3-listcheck.json"
        ))
        .unwrap();
        let mut request = crate::cases::request_with_path("/politics");
        request.set_host("edition.cnn.com");
        request.source.namespace = Some("default".into());
        request.source.service_account = Some("sleep".into());
        let decision = policy.evaluate(&request);
        let mut events = Vec::new();
        Metrics::compile(&policy).count_request(&decision, &request, Some(404), |event| {
            assert_eq!(event.values().len(), event.counter.labels().len());
            events.push((
                event.counter,
                event
                    .values()
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>(),
            ))
        });
        let strings = |values: &[&str]| values.iter().map(|v| v.to_string()).collect();
        assert_eq!(
            events,
            vec![
                (
                    Counter::Requests,
                    strings(&["deny", "*.cnn.com", "default", "sleep", "unknown", "404"])
                ),
                (
                    Counter::Denied,
                    strings(&["handle-cnn-access", "path-checker", "default", "sleep"])
                ),
                (Counter::RuleMatches, strings(&["handle-politics", "deny"])),
                (
                    Counter::RuleMatches,
                    strings(&["handle-cnn-access", "deny"])
                ),
            ]
        );
    }

    #[test]
    fn a_version_stays_in_force_while_any_configuration_serves_it() {
        let mut versions = VersionsInForce::default();
        let one = |v: &str, n: u64| (v.to_owned(), n);
        assert_eq!(versions.set(1, Some("a")), [one("a", 1)]);
        assert_eq!(versions.set(2, Some("a")), [one("a", 1)]);
        // The HTTP filter reloads to b; the network filter still serves a.
        assert_eq!(versions.set(1, Some("b")), [one("b", 1)]);
        assert_eq!(versions.set(2, Some("b")), [one("b", 1), one("a", 0)]);
        // A configuration replaced by the same version keeps it at 1.
        assert_eq!(versions.set(2, None), []);
        assert_eq!(versions.set(1, None), [one("b", 0)]);
    }

    /// An `error` rule's request let through is a violation; the same request refused is not.
    #[test]
    fn politics_let_through_by_the_logging_policy_is_a_violation_and_refused_is_not() {
        let violations = |config: &[u8]| -> Vec<Vec<String>> {
            let policy = Policy::from_json(config).unwrap();
            let mut request = crate::cases::request_with_path("/politics");
            request.set_host("edition.cnn.com");
            request.source.namespace = Some("default".into());
            request.source.service_account = Some("sleep".into());
            let decision = policy.evaluate(&request);
            let mut found = Vec::new();
            Metrics::compile(&policy).count_request(&decision, &request, Some(200), |event| {
                if event.counter == Counter::Violations {
                    found.push(event.values().iter().map(|v| v.to_string()).collect());
                }
            });
            found
        };
        assert_eq!(
            violations(include_bytes!("../../../../envoy/examples/s1-logging.json")),
            [["handle-politics", "default", "sleep"]]
        );
        assert!(
            violations(include_bytes!(
                "../../../../envoy/examples/s3-listcheck.json"
            ))
            .is_empty()
        );
    }
}
