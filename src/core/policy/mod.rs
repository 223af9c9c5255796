//! `compile(config) -> Policy` once, at configure time; `evaluate(&Request) -> Decision` per
//! request, which cannot fail.

pub mod list;
pub mod matchers;
pub mod provider;
pub mod route;

use crate::core::config::{EntryType, LogLevel, OnError, PluginConfig};
use crate::core::decision::{Decision, DenyReason, ListFailure};
use crate::core::error::{ConfigError, ConfigErrors};
use crate::core::expr::{self, Attr, Env, Expr, Needs, Type, Use, Value};
use crate::core::identity::{self, IdentityError};
use crate::core::request::{
    BODILESS_METHODS, Rejection, Request, RequestFacts, is_stripped_header, lossy,
};
use list::EntryIndex;
use provider::{Provider, RemoteLists};
use route::{RouteOutcome, RouteTable};

/// A compiled list check.
#[derive(Debug)]
pub struct List {
    pub name: String,
    value: Expr,
    pub blacklist: bool,
    pub entry_type: EntryType,
    /// The static entries (Mixer `overrides`): they always apply.
    pub entries: EntryIndex,
    pub provider: Option<Provider>,
    pub dry_run: bool,
}

impl List {
    /// Checks the request's value against the static entries, then against the remote ones if
    /// the list has a provider: the last good fetch while it is younger than `ttl`, otherwise
    /// `onError` decides.
    fn check(&self, env: &Env<'_>, remote: &RemoteLists, index: usize) -> Option<ListFailure> {
        let Some(Value::Str(value)) = self.value.eval(env) else {
            return Some(ListFailure::ValueAbsent);
        };
        let listed = if self.entries.contains(value) {
            true
        } else if let Some(provider) = &self.provider {
            let now = env.request.time_micros.unwrap_or(i64::MAX);
            let fresh = remote
                .get(index)
                .filter(|r| now.saturating_sub(r.fetched_at_micros) <= provider.ttl_micros);
            match (fresh, provider.on_error) {
                (Some(remote), _) => remote.index.contains(value),
                (None, OnError::Deny) => return Some(ListFailure::Unavailable),
                (None, OnError::Allow) => return None,
            }
        } else {
            false
        };
        match (listed, self.blacklist) {
            (false, false) => Some(ListFailure::NotListed),
            (true, true) => Some(ListFailure::Listed),
            _ => None,
        }
    }

    /// The looked-up value for this request, for explanations.
    pub fn value_of<'a>(&'a self, request: &'a Request) -> Option<&'a str> {
        match self.value.eval(&Env::request(request)) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }
}

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    condition: Option<Expr>,
    pub log: Option<LogLevel>,
    /// Indices into [`Policy::lists`].
    pub checks: Vec<usize>,
    pub dry_run: bool,
    pub deny: DenyReply,
}

/// The local reply to a denied request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyReply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

/// A compiled log field.
#[derive(Debug)]
pub struct LogField {
    pub name: String,
    pub value: Expr,
}

/// The compiled plugin configuration.
#[derive(Debug)]
pub struct Policy {
    pub deny_status: u16,
    /// The global local reply (`denyStatus`, `denyBody`, `denyHeaders`).
    pub deny: DenyReply,
    pub instance: String,
    pub log_fields: Vec<LogField>,
    pub lists: Vec<List>,
    pub rules: Vec<Rule>,
    pub routes: RouteTable,
    /// What decisions read (request phase).
    pub decision_needs: Needs,
    /// What log fields read (response phase).
    pub log_needs: Needs,
    /// Both together: everything the adapter reads for a request, and nothing more.
    pub reads: Needs,
    /// Trust domain whose SPIFFE IDs give an identity.
    pub trust_domain: String,
    /// The host patterns the configuration names (rules' host literals and routes' hosts), each
    /// with its text: bounded values for the metrics' destination label.
    pub named_hosts: matchers::HostTable<Box<str>>,
    /// Lower-case name of the header trusted as identity without a client certificate.
    pub trusted_header: Option<String>,
    /// Hosts to which GET, HEAD, OPTIONS and TRACE may carry a body.
    pub safe_method_bodies: matchers::HostTable<()>,
}

/// The local reply to a request the filter does not forward, with the response code details
/// that name why (`egress_policy_denied:rule=handle-cnn-access,list=path-checker`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply<'p> {
    pub status: u16,
    pub details: String,
    pub body: &'p str,
    pub headers: &'p [(String, String)],
}

/// Names end up in response code details and metric labels, so they stay simple.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "'{name}' may only contain letters, digits, '.', '_' and '-' (at most 128)"
        ));
    }
    Ok(())
}

impl Policy {
    /// Parses and compiles plugin configuration JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigErrors> {
        Self::compile(&PluginConfig::from_json(bytes)?)
    }

    /// Compiles a parsed configuration, reporting every problem with its field path.
    pub fn compile(config: &PluginConfig) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let mut decision_needs = Needs::default();
        let mut log_needs = Needs::default();

        if !(200..=599).contains(&config.deny_status) {
            errors.push(ConfigError::new(
                "denyStatus",
                format!("{} is not an HTTP status (200..=599)", config.deny_status),
            ));
        }
        if config.log.instance.is_empty() {
            errors.push(ConfigError::new("log.instance", "must not be empty"));
        }
        let mut log_fields = Vec::new();
        for (name, source) in &config.log.fields {
            let path = format!("log.fields.{name}");
            if ["level", "time", "instance"].contains(&name.as_str()) || name.is_empty() {
                errors.push(ConfigError::new(
                    &path,
                    "this field name is reserved (level, time and instance are always written)",
                ));
                continue;
            }
            match expr::compile_value(source, Use::Log) {
                Ok((_, Type::Map, _)) => {
                    errors.push(ConfigError::new(&path, "a map cannot be logged; index it"))
                }
                Ok((value, _, needs)) => {
                    check_stripped_headers(&path, &needs, &mut errors);
                    log_needs.merge(&needs);
                    log_fields.push(LogField {
                        name: name.clone(),
                        value,
                    });
                }
                Err(e) => errors.push(ConfigError::new(&path, e.to_string())),
            }
        }

        let mut lists = Vec::new();
        for (name, list) in &config.lists {
            let path = format!("lists.{name}");
            if let Err(message) = check_name(name) {
                errors.push(ConfigError::new(&path, format!("list name {message}")));
            }
            let value = match expr::compile_value(&list.value, Use::Decision) {
                Ok((value, Type::String, needs)) => {
                    check_stripped_headers(&format!("{path}.value"), &needs, &mut errors);
                    decision_needs.merge(&needs);
                    Some(value)
                }
                Ok((_, other, _)) => {
                    errors.push(ConfigError::new(
                        format!("{path}.value"),
                        format!("must yield a string, found {other:?}").to_lowercase(),
                    ));
                    None
                }
                Err(e) => {
                    errors.push(ConfigError::new(format!("{path}.value"), e.to_string()));
                    None
                }
            };
            let entries = match EntryIndex::build(list.entry_type, &list.entries) {
                Ok(entries) => Some(entries),
                Err(entry_errors) => {
                    for e in entry_errors {
                        let field = match e.index {
                            Some(index) => format!("{path}.entries[{index}]"),
                            None => format!("{path}.entries"),
                        };
                        errors.push(ConfigError::new(field, e.message));
                    }
                    None
                }
            };
            // A provider that fails to compile has pushed its errors: the policy is refused.
            let provider = list
                .provider
                .as_ref()
                .and_then(|p| Provider::compile(p, &format!("{path}.provider"), &mut errors));
            if let (Some(value), Some(entries)) = (value, entries) {
                lists.push(List {
                    name: name.clone(),
                    value,
                    blacklist: list.blacklist,
                    entry_type: list.entry_type,
                    entries,
                    provider,
                    dry_run: list.dry_run,
                });
            }
        }

        check_reply(None, &config.deny_headers, "denyHeaders", &mut errors);
        let global_deny = DenyReply {
            status: config.deny_status,
            body: config.deny_body.clone().unwrap_or_default(),
            headers: config
                .deny_headers
                .iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
                .collect(),
        };
        let mut rules: Vec<Rule> = Vec::new();
        for (i, rule) in config.rules.iter().enumerate() {
            let path = format!("rules[{i}]");
            if let Err(message) = check_name(&rule.name) {
                errors.push(ConfigError::new(format!("{path}.name"), message));
            } else if config.rules.iter().take(i).any(|r| r.name == rule.name) {
                errors.push(ConfigError::new(
                    format!("{path}.name"),
                    format!("'{}' is already the name of an earlier rule", rule.name),
                ));
            }
            let condition = match &rule.match_ {
                None => None,
                Some(source) => match expr::compile_condition(source, Use::Decision) {
                    Ok((condition, needs)) => {
                        check_stripped_headers(&format!("{path}.match"), &needs, &mut errors);
                        decision_needs.merge(&needs);
                        Some(condition)
                    }
                    Err(e) => {
                        errors.push(ConfigError::new(format!("{path}.match"), e.to_string()));
                        continue;
                    }
                },
            };
            let mut checks = Vec::new();
            for (c, list_name) in rule.check.iter().enumerate() {
                match config.lists.keys().position(|name| name == list_name) {
                    Some(index) => checks.push(index),
                    None => errors.push(ConfigError::new(
                        format!("{path}.check[{c}]"),
                        format!(
                            "unknown list '{list_name}'; lists defined: {}",
                            known(config.lists.keys())
                        ),
                    )),
                }
            }
            if rule.log.is_none() && rule.check.is_empty() {
                errors.push(ConfigError::new(
                    &path,
                    "a rule needs 'log', 'check' or both; this one does nothing",
                ));
            }
            let deny = rule.deny.as_ref().map_or_else(
                || global_deny.clone(),
                |reply| {
                    let mut headers = global_deny.headers.clone();
                    for (name, value) in &reply.headers {
                        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                        headers.push((name.to_ascii_lowercase(), value.clone()));
                    }
                    DenyReply {
                        status: reply.status.unwrap_or(global_deny.status),
                        body: reply
                            .body
                            .clone()
                            .unwrap_or_else(|| global_deny.body.clone()),
                        headers,
                    }
                },
            );
            if let Some(reply) = &rule.deny {
                check_reply(
                    reply.status,
                    &reply.headers,
                    &format!("{path}.deny"),
                    &mut errors,
                );
            }
            rules.push(Rule {
                name: rule.name.clone(),
                condition,
                log: rule.log,
                checks,
                dry_run: rule.dry_run,
                deny,
            });
        }

        let identity = &config.identity;
        if !identity
            .trust_domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            || identity.trust_domain.is_empty()
        {
            errors.push(ConfigError::new(
                "identity.trustDomain",
                format!(
                    "'{}' is not a trust domain (lower-case letters, digits, '.', '-', '_')",
                    identity.trust_domain
                ),
            ));
        }
        if let Some(header) = &identity.trusted_header
            && !is_header_name(header)
        {
            errors.push(ConfigError::new(
                "identity.trustedHeader",
                format!("'{header}' is not a header name"),
            ));
        }

        let mut safe_method_bodies = matchers::HostTable::default();
        for (i, host) in config.allow_safe_method_bodies.iter().enumerate() {
            match matchers::HostPattern::parse(host) {
                Ok(pattern) => {
                    safe_method_bodies.entry(pattern, || ());
                }
                Err(message) => errors.push(ConfigError::new(
                    format!("allowSafeMethodBodies[{i}]"),
                    message,
                )),
            }
        }

        let routes = RouteTable::compile(&config.routes, &mut errors);
        if config.rules.is_empty() && config.routes.is_empty() {
            errors.push(ConfigError::new(
                "",
                "the configuration has no rules and no routes: it would decide nothing and let every request through; \
                 add a rule or a route (a rule with only 'log' monitors without refusing anything)",
            ));
        }
        if !routes.is_empty() {
            for attr in [Attr::RequestHost, Attr::RequestUrlPath, Attr::RequestMethod] {
                decision_needs.add(attr);
            }
        }
        for name in routes.header_names() {
            decision_needs.headers.insert(name.to_owned());
        }

        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let mut reads = decision_needs.clone();
        reads.merge(&log_needs);
        // Metrics label every request by source namespace, app and version.
        reads.add(Attr::SourceNamespace);
        reads.add(Attr::SourceServiceAccount);
        reads.add(Attr::RequestHost);
        reads.labels.insert("app".into());
        reads.labels.insert("version".into());
        let mut host_literals = expr::HostLiterals::default();
        for rule in &rules {
            if let Some(condition) = &rule.condition {
                condition.host_literals(&mut host_literals);
            }
        }
        let mut named_hosts = matchers::HostTable::default();
        let literal_patterns =
            host_literals
                .names
                .iter()
                .filter_map(|name| matchers::HostPattern::parse(name).ok())
                .chain(host_literals.suffixes.iter().filter_map(|suffix| {
                    matchers::HostPattern::parse(&format!("*.{suffix}")).ok()
                }));
        for pattern in literal_patterns.chain(routes.host_patterns()) {
            if pattern != matchers::HostPattern::Any {
                let text: Box<str> = pattern.to_string().into();
                named_hosts.entry(pattern, || text);
            }
        }
        Ok(Policy {
            named_hosts,
            deny: global_deny,
            reads,
            trust_domain: identity.trust_domain.clone(),
            trusted_header: identity
                .trusted_header
                .as_ref()
                .map(|h| h.to_ascii_lowercase()),
            safe_method_bodies,
            deny_status: config.deny_status,
            instance: config.log.instance.clone(),
            log_fields,
            lists,
            rules,
            routes,
            decision_needs,
            log_needs,
        })
    }

    /// The one decision pipeline, run by the filter for every request and by `egress-policy
    /// explain`: canonicalises the raw facts (or refuses them), reads the caller's identity,
    /// then evaluates routes and rules. Nothing else may change the answer.
    pub fn decide(&self, facts: &RequestFacts, remote: &RemoteLists) -> (Request, Decision) {
        let (request, rejected) = self.canonical_request(facts);
        let decision = match rejected {
            Some(problem) => Decision {
                rejected: Some(problem),
                ..Decision::default()
            },
            None => self.evaluate_with(&request, remote),
        };
        (request, decision)
    }

    /// The canonical request of `facts`, and the first reason to refuse it, if any.
    fn canonical_request(&self, facts: &RequestFacts) -> (Request, Option<Rejection>) {
        let headers = &facts.headers;
        let text = |name: &str| headers.get(name).map(lossy);
        let mut request = Request::default();
        request.time_micros = facts.time_micros;
        request.method = text(":method");
        request.mtls = facts.mtls;
        let mut rejected = request
            .set_path(headers.get(":path").unwrap_or_default())
            .err();
        // Bytes that are not UTF-8 leave U+FFFD behind, which canonical_host refuses: such a
        // host is absent (and the request refused), never a near-miss of a listed one.
        if let Some(authority) = text(":authority") {
            request.set_host(&authority);
        }
        if request.host.is_none() {
            rejected = rejected.or(Some(Rejection::UnusableHost));
        }
        let needs = &self.reads;
        if needs.attr(Attr::RequestScheme) {
            request.scheme = text(":scheme");
        }
        let mut read_header = |name: &str| -> Option<String> {
            // What is stripped before forwarding does not exist for the policy either.
            if is_stripped_header(name.as_bytes()) {
                return None;
            }
            if headers.count(name) > 1 {
                rejected = rejected.or(Some(Rejection::RepeatedHeader));
            }
            text(name)
        };
        if needs.attr(Attr::RequestUseragent) {
            request.useragent = read_header("user-agent");
        }
        for name in &needs.headers {
            if let Some(value) = read_header(name) {
                request.headers.push((name.clone(), value));
            }
        }
        if facts.has_body
            && request
                .method
                .as_deref()
                .is_some_and(|m| BODILESS_METHODS.contains(&m))
            && request
                .host
                .as_deref()
                .is_none_or(|host| self.safe_method_bodies.lookup(host).is_none())
        {
            rejected = rejected.or(Some(Rejection::BodyOnSafeMethod));
        }
        request.source.ip = facts
            .property(Attr::SourceIp)
            .map(|address| strip_port(&lossy(address)).to_owned());
        request.requested_server_name = facts
            .property(Attr::ConnectionRequestedServerName)
            .map(lossy)
            .filter(|sni| !sni.is_empty());
        self.read_identity(facts, &mut request);
        (request, rejected)
    }

    /// Identity from the verified peer certificate; without one, from the trusted header if the
    /// configuration names one. Never from any other header. Istio's peer metadata (labels,
    /// workload) counts only for mTLS callers.
    fn read_identity(&self, facts: &RequestFacts, request: &mut Request) {
        let parsed = if facts.mtls == Some(true) {
            for (key, value) in &facts.peer_labels {
                request.source.labels.push((key.clone(), lossy(value)));
            }
            request.source.workload = facts.property(Attr::SourceWorkload).map(lossy);
            let sans = facts
                .peer_uri_sans
                .as_deref()
                .map(lossy)
                .filter(|sans| !sans.is_empty() && sans != "-");
            match sans {
                Some(sans) => identity::from_uri_sans(&sans, &self.trust_domain),
                None => Err(IdentityError::Malformed("the certificate has no URI SAN")),
            }
        } else if let Some(header) = &self.trusted_header {
            match facts.headers.get(header) {
                Some(id) => identity::parse_spiffe_id(&lossy(id), &self.trust_domain),
                None => return,
            }
        } else {
            return;
        };
        match parsed {
            Ok(identity) => request.source.set_identity(&identity),
            Err(error) => request.identity_error = Some(error),
        }
    }

    /// The local reply for a request that is not forwarded; `None` when it is.
    pub fn reply(&self, decision: &Decision) -> Option<LocalReply<'_>> {
        if let Some(problem) = decision.rejected {
            return Some(LocalReply {
                status: REJECT_STATUS,
                details: Self::rejection_details(problem),
                body: "",
                headers: &[],
            });
        }
        let reason = decision.denied.as_ref()?;
        let deny = match reason {
            DenyReason::List { rule, .. } => self.rules.get(*rule).map_or(&self.deny, |r| &r.deny),
            _ => &self.deny,
        };
        Some(LocalReply {
            status: deny.status,
            details: self.details(reason),
            body: &deny.body,
            headers: &deny.headers,
        })
    }

    /// Decides one request with static list entries only; see [`Policy::evaluate_with`].
    pub fn evaluate(&self, request: &Request) -> Decision {
        self.evaluate_with(request, &RemoteLists::default())
    }

    /// Decides one request: routes first, then every rule in order. Every rule whose match holds
    /// is recorded (for its log entry) even after a denial; the first enforced failure is the
    /// reason. Failures of dry-run rules and lists are recorded apart and deny nothing.
    pub fn evaluate_with(&self, request: &Request, remote: &RemoteLists) -> Decision {
        let env = Env::request(request);
        let mut denied = match self.routes.check(request) {
            RouteOutcome::Unrouted | RouteOutcome::Admitted(_) => None,
            RouteOutcome::Refused(route) => Some(DenyReason::NoRouteMatch { route }),
            RouteOutcome::HostUnknown => Some(DenyReason::HostUnknown),
        };
        let mut fired = Vec::new();
        let mut dry_run = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            if !rule.condition.as_ref().is_none_or(|c| c.holds(&env)) {
                continue;
            }
            fired.push(u32::try_from(index).unwrap_or(u32::MAX));
            for &list_index in &rule.checks {
                let Some(list) = self.lists.get(list_index) else {
                    continue;
                };
                let enforced = !rule.dry_run && !list.dry_run;
                if enforced && denied.is_some() {
                    continue;
                }
                if let Some(failure) = list.check(&env, remote, list_index) {
                    let reason = DenyReason::List {
                        rule: index,
                        list: list_index,
                        failure,
                    };
                    if enforced {
                        denied = Some(reason);
                    } else {
                        dry_run.push(reason);
                    }
                }
            }
        }
        Decision {
            rejected: None,
            denied,
            fired,
            dry_run,
        }
    }

    /// Lists with a provider, by index: what the adapter fetches.
    pub fn providers(&self) -> impl Iterator<Item = (usize, &List, &Provider)> {
        self.lists
            .iter()
            .enumerate()
            .filter_map(|(i, list)| list.provider.as_ref().map(|p| (i, list, p)))
    }

    /// List `index` and its provider, if it has one.
    pub fn provider(&self, index: usize) -> Option<(&List, &Provider)> {
        let list = self.lists.get(index)?;
        Some((list, list.provider.as_ref()?))
    }

    /// Settings that are valid but weaken a guarantee; `egress-policy check` prints them.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let enforced_check = self.rules.iter().any(|rule| {
            !rule.dry_run
                && rule
                    .checks
                    .iter()
                    .any(|&l| self.lists.get(l).is_some_and(|list| !list.dry_run))
        });
        if self.routes.is_empty() && !enforced_check {
            warnings.push(
                "no rule or route can deny anything: every request is let through (routes, or rules with an enforced 'check', deny)"
                    .to_owned(),
            );
        }
        if let Some(header) = &self.trusted_header {
            warnings.push(format!(
                "identity.trustedHeader: requests without a client certificate may claim any identity in header '{header}'; \
                 use this only when something in front of the gateway sets it and strips it from clients"
            ));
        }
        warnings
    }

    fn rule_name(&self, index: usize) -> &str {
        self.rules.get(index).map_or("?", |r| r.name.as_str())
    }

    fn list_name(&self, index: usize) -> &str {
        self.lists.get(index).map_or("?", |l| l.name.as_str())
    }

    fn route_name(&self, index: usize) -> &str {
        self.routes.route(index).map_or("?", |r| r.name.as_str())
    }

    /// Envoy response code details for a denial: no spaces, names the deciding rule, list or
    /// route (`egress_policy_denied:rule=handle-cnn-access,list=path-checker`).
    pub fn details(&self, reason: &DenyReason) -> String {
        match reason {
            DenyReason::HostUnknown => "egress_policy_denied:host_unknown".into(),
            DenyReason::NoRouteMatch { route } => {
                format!("egress_policy_denied:route={}", self.route_name(*route))
            }
            DenyReason::List { rule, list, .. } => format!(
                "egress_policy_denied:rule={},list={}",
                self.rule_name(*rule),
                self.list_name(*list)
            ),
        }
    }

    /// Response code details for a request refused for its path.
    pub fn rejection_details(problem: Rejection) -> String {
        format!("egress_policy_rejected:{}", problem.code())
    }

    /// One sentence saying why a request was denied, for people.
    pub fn explain(&self, reason: &DenyReason, request: &Request) -> String {
        match reason {
            DenyReason::HostUnknown => {
                "denied: the request has no usable host and routes are configured, so no route can admit it".into()
            }
            DenyReason::NoRouteMatch { route } => format!(
                "denied by route {}: host {} only reaches the URIs its routes allow, and {} {} matches none",
                self.route_name(*route),
                request.host.as_deref().unwrap_or("?"),
                request.method.as_deref().unwrap_or("?"),
                request.url_path().unwrap_or("?"),
            ),
            DenyReason::List { rule, list, failure } => {
                let value = self.lists.get(*list).and_then(|l| l.value_of(request)).unwrap_or("");
                let why = match failure {
                    ListFailure::NotListed => format!("\"{value}\" is not in whitelist"),
                    ListFailure::Listed => format!("\"{value}\" is in blacklist"),
                    ListFailure::ValueAbsent => "the looked-up value is absent for list".into(),
                    ListFailure::Unavailable => format!(
                        "\"{value}\" is not in the static entries and the remote entries are unavailable (onError: deny) for list"
                    ),
                };
                format!("denied by rule {}: {why} {}", self.rule_name(*rule), self.list_name(*list))
            }
        }
    }
}

/// A header the gateway strips before forwarding is never visible to the policy: deciding or
/// logging on it would silently read nothing.
pub(crate) fn stripped_header_error(path: &str, name: &str) -> Option<ConfigError> {
    is_stripped_header(name.as_bytes()).then(|| {
        ConfigError::new(
            path,
            format!(
                "request.headers[\"{name}\"] is always absent: the gateway strips that header before forwarding (README: Security)"
            ),
        )
    })
}

fn check_stripped_headers(path: &str, needs: &Needs, errors: &mut Vec<ConfigError>) {
    errors.extend(
        needs
            .headers
            .iter()
            .filter_map(|name| stripped_header_error(path, name)),
    );
}

/// Status of the reply to a refused request: it is malformed, so it is a client error whatever
/// `denyStatus` says about forbidden ones.
pub const REJECT_STATUS: u16 = 400;

/// `10.1.2.3:5555` -> `10.1.2.3`, `[::1]:5555` -> `::1`.
fn strip_port(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((ip, _)) if !ip.contains(':') => ip,
        _ => address,
    }
}

/// An HTTP header name: one or more token characters (RFC 9110).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A reply's status and header names must be something Envoy can send.
fn check_reply(
    status: Option<u16>,
    headers: &std::collections::BTreeMap<String, String>,
    path: &str,
    errors: &mut Vec<ConfigError>,
) {
    if let Some(status) = status.filter(|s| !(200..=599).contains(s)) {
        errors.push(ConfigError::new(
            format!("{path}.status"),
            format!("{status} is not an HTTP status (200..=599)"),
        ));
    }
    for (name, value) in headers {
        let header_path = if path.ends_with("denyHeaders") {
            format!("{path}.{name}")
        } else {
            format!("{path}.headers.{name}")
        };
        if !is_header_name(name) {
            errors.push(ConfigError::new(
                &header_path,
                format!("'{name}' is not a header name"),
            ));
        } else if value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
            errors.push(ConfigError::new(
                &header_path,
                "header values cannot contain control characters",
            ));
        }
    }
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests;
