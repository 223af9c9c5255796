//! `compile(config) -> Policy` once, at configure time; `evaluate(&Request) -> Decision` per
//! request, which cannot fail.

mod compile;
mod decide;
pub use decide::{TunnelCheck, TunnelStep, tunnel_opening, tunnel_step};
pub mod list;
pub mod matchers;
pub mod provider;
pub mod route;

use crate::config::{EntryType, LogLevel, OnError, PluginConfig};
use crate::decision::{Decision, DenyReason, ListFailure};
use crate::error::ConfigErrors;
use crate::expr::{Env, Expr, Needs, Value};
use crate::request::{Protocol, Rejection, Request};
use list::EntryIndex;
use provider::{Provider, RemoteLists};
use route::RouteTable;

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

impl Rule {
    /// The rule's `match`, compiled; `None` matches every request.
    pub fn condition(&self) -> Option<&Expr> {
        self.condition.as_ref()
    }
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
    /// The configuration's digest (`policyVersion` on every log line): the same wherever the
    /// same configuration is loaded, however it was spelled.
    pub version: String,
    /// How often each log stream writes a signed checkpoint.
    pub checkpoint_every: crate::evidence::CheckpointEvery,
    pub log_fields: Vec<LogField>,
    pub lists: Vec<List>,
    pub rules: Vec<Rule>,
    pub routes: RouteTable,
    /// What decisions read (request phase).
    pub decision_needs: Needs,
    /// What log fields read (response phase).
    pub log_needs: Needs,
    /// Both together: everything the policy reads from a request.
    pub reads: Needs,
    /// Trust domain whose SPIFFE IDs give an identity.
    pub trust_domain: String,
    /// Lower-case name of the header trusted as identity without a client certificate.
    pub trusted_header: Option<String>,
    /// Hosts to which GET, HEAD, OPTIONS and TRACE may carry a body.
    pub safe_method_bodies: matchers::HostTable<()>,
    /// The SSRF guard (`addressGuard`): hosts written as addresses, and the addresses connected
    /// to.
    pub address_guard: crate::addresses::AddressGuard,
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

impl LocalReply<'static> {
    /// A reply with a status and details only (no body, no headers).
    pub fn bare(status: u16, details: &str) -> Self {
        LocalReply {
            status,
            details: details.to_owned(),
            body: "",
            headers: &[],
        }
    }
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

    /// The local reply for a request that is not forwarded; `None` when it is. A refused
    /// `CONNECT` is answered 403 whatever `denyStatus` says: a forward proxy's client (curl,
    /// Python, Go, Java) reads it as "the proxy refused", not as a page of the destination.
    pub fn reply(&self, decision: &Decision, request: &Request) -> Option<LocalReply<'_>> {
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
        let status = if request.is_connect() {
            CONNECT_DENY_STATUS
        } else {
            deny.status
        };
        Some(LocalReply {
            status,
            details: self.details(reason),
            body: &deny.body,
            headers: &deny.headers,
        })
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
        // Request attributes are absent on connections (README: HTTPS egress): a rule can be
        // written that fits neither.
        let can_hold = |rule: &Rule, protocol: Protocol| {
            rule.condition().is_none_or(|c| c.can_hold_for(protocol))
        };
        for (index, rule) in self.rules.iter().enumerate() {
            if !can_hold(rule, Protocol::Http) && !can_hold(rule, Protocol::Tcp) {
                warnings.push(format!(
                    "rules[{index}] ('{}'): its match holds for no request and no connection (on connections, \
                     context.protocol is \"tcp\" and every request.* attribute is absent)",
                    rule.name
                ));
            }
        }
        let about_connections = self
            .rules
            .iter()
            .any(|rule| can_hold(rule, Protocol::Tcp) && !can_hold(rule, Protocol::Http));
        let denies_connections = self.rules.iter().any(|rule| {
            can_hold(rule, Protocol::Tcp)
                && !rule.dry_run
                && rule
                    .checks
                    .iter()
                    .any(|&l| self.lists.get(l).is_some_and(|list| !list.dry_run))
        });
        if about_connections && !denies_connections {
            warnings.push(
                "no rule with an enforced 'check' can match a connection: every TLS connection is let through"
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
            DenyReason::IpLiteral => "egress_policy_denied:ip_literal".into(),
            DenyReason::Address { address, reason } => {
                format!("egress_policy_denied:address_guard,address={address},reason={reason}")
            }
            DenyReason::ResolvedOnlyToRefused => {
                "egress_policy_denied:address_guard,resolved=refused".into()
            }
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
            DenyReason::IpLiteral => format!(
                "denied: host {} is written as an IP address, and the policy decides on names (addressGuard.allowIpLiterals is off)",
                request.destination().unwrap_or("?"),
            ),
            DenyReason::Address { address, reason } => format!(
                "denied by the address guard: {} is at {address}, a {} address the gateway never connects to",
                request.destination().unwrap_or("?"),
                reason.replace('_', "-"),
            ),
            DenyReason::ResolvedOnlyToRefused => format!(
                "denied by the address guard: {} resolved only to addresses the gateway never connects to",
                request.destination().unwrap_or("?"),
            ),
        }
    }
}

/// Status of the reply to a refused `CONNECT` (the forward proxy's tunnels).
pub const CONNECT_DENY_STATUS: u16 = 403;

/// Status of the reply to a refused request: it is malformed, so it is a client error whatever
/// `denyStatus` says about forbidden ones.
pub const REJECT_STATUS: u16 = 400;

#[cfg(test)]
mod tests;
