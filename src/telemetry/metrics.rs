//! The core's metric events ([`crate::core::telemetry::metrics`]) as proxy-wasm metric names.
//!
//! proxy-wasm metrics have names, not labels, so each label is written into the name in Istio's
//! tag encoding, `<label>=.=<value>;.;`, before the metric's own name:
//! `wasmcustom.egress_policy.decision=.=deny;.;destination=.=*.cnn.com;.;...;.;requests`. One
//! `stats_tags` regex per label, `(<label>=\.=(.*?);\.;)`, takes each out again, leaving
//! `egress_policy_requests{decision="deny",destination="*.cnn.com",...}` in Prometheus. It is the
//! encoding Istio's own metrics use, so on Istio the gateway's bootstrap extracts the labels
//! once their names are listed in ProxyConfig `extraStatTags` (`egress-policy istio
//! gateway-values` prints them), and `envoy/gateway.yaml` has the same regexes. The core's label
//! values cannot end a label or start another.

pub use crate::core::telemetry::metrics::{
    Counter, CounterEvent, Gauge, GaugeEvent, Label, MAX_LABELS, Metrics, config_load,
};

/// Every label the filter encodes into a metric name, in the order names carry them. The
/// `stats_tags` of `envoy/gateway.yaml` and the `extraStatTags` of the Istio gateway are
/// derived from this list (a test keeps both in step).
// Indexing in a constant: out of bounds would fail the build, never a request.
#[allow(clippy::indexing_slicing)]
pub const STATS_TAGS: [&str; Label::ALL.len()] = {
    let mut tags = [""; Label::ALL.len()];
    let mut index = 0;
    while index < tags.len() {
        tags[index] = Label::ALL[index].as_str();
        index += 1;
    }
    tags
};

/// The tag-extraction regex of one label, exactly as Istio's bootstrap writes it for each
/// `extraStatTags` entry: the first group is cut out of the name, the second is the value.
pub fn stats_tag_regex(tag: &str) -> String {
    format!(r"({tag}=\.=(.*?);\.;)")
}

/// The prefix every metric of the filter has before Envoy adds `wasmcustom.`: what Istio's
/// `proxyStatsMatcher.inclusionPrefixes` must name so that the gateway exports them.
pub const STATS_PREFIX: &str = "egress_policy.";

/// Writes a metric's name, with its label values, into `name` (cleared first).
fn encode(metric: &str, labels: &[Label], values: &[&str], name: &mut String) {
    name.clear();
    name.push_str(STATS_PREFIX);
    for (label, value) in labels.iter().zip(values) {
        name.push_str(label.as_str());
        name.push_str("=.=");
        name.push_str(value);
        name.push_str(";.;");
    }
    name.push_str(metric);
}

/// The constant parts of every counter's name, made once, so that a request's counters are
/// named with one copy per label value and one per part between them: what the filter does
/// for every request, several times.
#[derive(Debug)]
pub struct CounterNames {
    /// Per counter (in [`Counter::ALL`] order): the prefix up to its first value, what comes
    /// between two values, and what follows the last one.
    parts: Vec<Vec<Box<str>>>,
}

impl Default for CounterNames {
    fn default() -> Self {
        let parts = Counter::ALL
            .iter()
            .map(|counter| {
                let mut parts = Vec::new();
                let mut part = String::from(STATS_PREFIX);
                for label in counter.labels() {
                    part.push_str(label.as_str());
                    part.push_str("=.=");
                    parts.push(std::mem::take(&mut part).into_boxed_str());
                    part.push_str(";.;");
                }
                part.push_str(counter.name());
                parts.push(part.into_boxed_str());
                parts
            })
            .collect();
        Self { parts }
    }
}

impl CounterNames {
    /// Writes the name of a counter's event into `name` (cleared first): the same name as
    /// [`counter_name`].
    pub fn encode(&self, event: &CounterEvent<'_>, name: &mut String) {
        name.clear();
        let Some(parts) = self.parts.get(event.counter as usize) else {
            let counter = event.counter;
            return encode(counter.name(), counter.labels(), event.values(), name);
        };
        let mut values = event.values().iter();
        for part in parts {
            name.push_str(part);
            if let Some(value) = values.next() {
                name.push_str(value);
            }
        }
    }
}

/// A counter's name, in a string of its own (tests, and the rare events outside requests).
pub fn counter_name(event: &CounterEvent<'_>) -> String {
    let counter = event.counter;
    named(counter.name(), counter.labels(), event.values())
}

/// A gauge's name, in a string of its own.
pub fn gauge_name(event: &GaugeEvent<'_>) -> String {
    named(event.gauge.name(), event.gauge.labels(), event.values())
}

fn named(metric: &str, labels: &[Label], values: &[&str]) -> String {
    let mut name = String::new();
    encode(metric, labels, values, &mut name);
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::Policy;

    #[test]
    fn a_denied_request_counts_request_denial_and_rules_in_istio_names() {
        let policy = Policy::from_json(
            &std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/envoy/examples/s3-listcheck.json"
            ))
            .unwrap(),
        )
        .unwrap();
        let mut request = crate::core::cases::request_with_path("/politics");
        request.set_host("edition.cnn.com");
        request.source.namespace = Some("default".into());
        request.source.service_account = Some("sleep".into());
        let decision = policy.evaluate(&request);
        let mut counters = Vec::new();
        let metrics = Metrics::compile(&policy);
        let names = CounterNames::default();
        metrics.count_request(&decision, &request, Some(404), |event| {
            let mut name = String::new();
            names.encode(&event, &mut name);
            counters.push(name)
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
        let names = CounterNames::default();
        for event in [config_load(false), metrics.list_fetch(0, true)] {
            let mut name = String::new();
            names.encode(&event, &mut name);
            assert_eq!(name, counter_name(&event), "one name, however it is made");
        }
        assert_eq!(
            counter_name(&config_load(false)),
            "egress_policy.result=.=failure;.;config_loads"
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
                labels.push((tag, captures.get(2).unwrap().as_str().to_owned()));
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
