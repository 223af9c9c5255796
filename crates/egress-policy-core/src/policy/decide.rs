//! The one decision pipeline, run by the filter for every request and by `egress-policy
//! explain`: raw facts in, a canonical request and its decision out. It cannot fail.

use super::Policy;
use super::provider::RemoteLists;
use super::route::RouteOutcome;
use std::net::IpAddr;

use crate::addresses::{Verdict, ip_literal};
use crate::attributes::Attr;
use crate::decision::{Decision, DenyReason};
use crate::expr::Env;
use crate::identity::{self, IdentityError};
use crate::request::{
    BODILESS_METHODS, Opening, Protocol, Rejection, Request, RequestFacts, canonical_host,
    is_stripped_header, lossy, lossy_text,
};
use crate::tls::{self, Scan};

impl Policy {
    /// The one decision pipeline, run by the filter for every request and by `egress-policy
    /// explain`: canonicalises the raw facts (or refuses them), reads the caller's identity,
    /// then evaluates routes and rules. Nothing else may change the answer.
    pub fn decide(&self, facts: &RequestFacts, remote: &RemoteLists) -> (Request, Decision) {
        let (request, rejected) = match facts.protocol {
            Protocol::Http => self.canonical_request(facts),
            Protocol::Tcp => self.canonical_connection(facts),
        };
        let decision = match rejected {
            Some(problem) => Decision {
                rejected: Some(problem),
                ..Decision::default()
            },
            None => self.evaluate_with(&request, remote),
        };
        (request, decision)
    }

    /// A connection as the policy sees it: no request attributes, the SNI (lower case, without a
    /// trailing dot; refused when missing or not a host name), the port, the caller.
    fn canonical_connection(&self, facts: &RequestFacts) -> (Request, Option<Rejection>) {
        let mut request = Request::default();
        request.protocol = Protocol::Tcp;
        request.time_micros = facts.time_micros;
        request.mtls = facts.mtls;
        // The caller's first bytes are read once, for the SNI and for what they may not be.
        let scanned = match &facts.opening {
            Opening::FirstBytes(bytes) => Some(tls::scan(bytes)),
            _ => None,
        };
        request.requested_server_name = match facts
            .text(Attr::ConnectionRequestedServerName)
            .filter(|sni| !sni.is_empty())
        {
            Some(sni) => canonical_host(&lossy(sni)),
            // No TLS between the caller and the gateway (passthrough): the SNI is the one its
            // ClientHello names, read by this filter, not by a listener filter that closes what
            // it cannot read before any policy sees it (README: HTTPS egress).
            None if facts.mtls != Some(true) => match &scanned {
                Some(Scan::Hello(hello)) => hello
                    .server_name
                    .as_deref()
                    .and_then(|name| canonical_host(&lossy(name))),
                _ => None,
            },
            None => None,
        };
        request.destination_port = facts.int(Attr::DestinationPort);
        request.reporter_uid = facts.text(Attr::ContextReporterUid).map(reporter_uid);
        request.source.ip = facts
            .text(Attr::SourceIp)
            .map(|address| strip_port(&lossy_text(address)).to_owned());
        // A connection that ended before its first bytes may have ended in its handshake, whose
        // certificate Envoy then presents unverified: no identity is read from it.
        if !matches!(
            facts.opening,
            Opening::HandshakeFailed | Opening::ClosedEarly
        ) {
            self.read_identity(facts, &mut request);
        }
        let rejected = opening_problem(
            &facts.opening,
            scanned,
            request.requested_server_name.as_deref(),
        );
        (request, rejected)
    }

    /// The canonical request of `facts`, and the first reason to refuse it, if any.
    fn canonical_request(&self, facts: &RequestFacts) -> (Request, Option<Rejection>) {
        let headers = &facts.headers;
        let text = |name: &str| headers.get(name).map(lossy);
        let mut request = Request::default();
        request.time_micros = facts.time_micros;
        request.method = text(":method");
        request.mtls = facts.mtls;
        // A forward proxy's tunnel (`CONNECT host:port`) has no path: it is decided on its
        // authority, host and port, and its bytes are the caller's own TLS.
        let tunnel = request.method.as_deref() == Some("CONNECT") && headers.get(":path").is_none();
        let mut rejected = if tunnel {
            None
        } else {
            request
                .set_path(headers.get(":path").unwrap_or_default())
                .err()
        };
        // Bytes that are not UTF-8 leave U+FFFD behind, which canonical_host refuses: such a
        // host is absent (and the request refused), never a near-miss of a listed one.
        if let Some(authority) = headers.get(":authority") {
            let authority = lossy_text(authority);
            request.set_host(&authority);
            if tunnel {
                request.port = authority_port(&authority);
                if request.port.is_none() {
                    rejected = rejected.or(Some(Rejection::ConnectWithoutPort));
                }
            }
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
            .text(Attr::SourceIp)
            .map(|address| strip_port(&lossy_text(address)).to_owned());
        request.requested_server_name = facts
            .text(Attr::ConnectionRequestedServerName)
            .filter(|sni| !sni.is_empty())
            .map(lossy);
        request.reporter_uid = facts.text(Attr::ContextReporterUid).map(reporter_uid);
        self.read_identity(facts, &mut request);
        (request, rejected)
    }

    /// Identity from the verified peer certificate; without one, from the trusted header if the
    /// configuration names one. Never from any other header. Istio's peer metadata (labels,
    /// workload) counts only for mTLS callers.
    fn read_identity(&self, facts: &RequestFacts, request: &mut Request) {
        let verified = facts.mtls == Some(true);
        let id = if verified {
            request.source.labels.reserve_exact(facts.peer_labels.len());
            for (key, value) in &facts.peer_labels {
                request.source.labels.push((key.clone(), lossy(value)));
            }
            request.source.workload = facts.text(Attr::SourceWorkload).map(lossy);
            let sans = facts
                .peer_uri_sans
                .as_deref()
                .filter(|sans| !sans.is_empty() && *sans != b"-");
            let Some(sans) = sans else {
                request.identity_error =
                    Some(IdentityError::Malformed("the certificate has no URI SAN"));
                return;
            };
            sans
        } else if let Some(header) = &self.trusted_header {
            match facts.headers.get(header) {
                Some(id) => id,
                None => return,
            }
        } else {
            return;
        };
        // Borrowed when it is UTF-8 (always, for an ID that can parse).
        let id = lossy_text(id);
        let parsed = if verified {
            identity::from_uri_sans(&id, &self.trust_domain)
        } else {
            identity::parse_spiffe_id(&id, &self.trust_domain)
        };
        match parsed {
            Ok(identity) => request.source.set_identity(&identity),
            Err(error) => request.identity_error = Some(error),
        }
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
        // Routes are VirtualService URI routes: they decide HTTP requests, not connections.
        let routes = match request.protocol {
            Protocol::Http => self.routes.check(request),
            Protocol::Tcp => RouteOutcome::Unrouted,
        };
        // The address guard comes first: a host written as an address names where the gateway
        // would connect, and no route or rule may send it into the gateway's own network.
        let mut denied = self
            .literal_verdict(request.destination())
            .or(match routes {
                RouteOutcome::Unrouted | RouteOutcome::Admitted(_) => None,
                RouteOutcome::Refused(route) => Some(DenyReason::NoRouteMatch { route }),
                RouteOutcome::HostUnknown => Some(DenyReason::HostUnknown),
            });
        let mut fired = Vec::with_capacity(self.rules.len());
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
}

impl Policy {
    /// The address guard on a host written as an IP address, in any form a client or resolver
    /// reads as one (`2130706433`, `0177.1`, `[::ffff:127.0.0.1]`): refused unless
    /// `allowIpLiterals`, and then only if its address may be connected to. `None` for a name.
    pub fn literal_verdict(&self, host: Option<&str>) -> Option<DenyReason> {
        let host = host?;
        let address = ip_literal(host)?;
        if !self.address_guard.allows_ip_literals() {
            return Some(DenyReason::IpLiteral);
        }
        self.address_verdict(Some(host), address)
    }

    /// The address guard at connect time: whether the gateway may connect to `address`, which
    /// `host` resolved to (README: Security). `None` when it may.
    pub fn address_verdict(&self, host: Option<&str>, address: IpAddr) -> Option<DenyReason> {
        match self.address_guard.check(host, address) {
            Verdict::Allowed => None,
            Verdict::Refused(reason) => Some(DenyReason::Address { address, reason }),
        }
    }
}

/// What a forward proxy's tunnel may carry, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelCheck {
    /// Not a whole ClientHello yet: hold the bytes and wait for more.
    NeedMore,
    /// A ClientHello for the host the `CONNECT` named: relay the tunnel.
    Relay,
    /// Anything else: close the tunnel before a byte of it is relayed.
    Refuse(Rejection),
}

/// The first bytes of an allowed `CONNECT`'s tunnel, as the TLS listeners read a connection's:
/// they must be one TLS ClientHello naming the host the `CONNECT` named (and was decided on), or
/// the destination would serve a name the policy never saw (domain fronting).
pub fn tunnel_opening(request: &Request, first_bytes: &[u8], ended: bool) -> TunnelCheck {
    let scanned = tls::scan(first_bytes);
    if matches!(scanned, Scan::Incomplete) && !ended && first_bytes.len() < tls::MAX_FIRST_BYTES {
        return TunnelCheck::NeedMore;
    }
    let opening = Opening::FirstBytes(Vec::new());
    match opening_problem(&opening, Some(scanned), request.host.as_deref()) {
        Some(problem) => TunnelCheck::Refuse(problem),
        None => TunnelCheck::Relay,
    }
}

/// What a filter does with an allowed tunnel's bytes so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelStep {
    /// Hold them; more are needed.
    Hold,
    /// Let the tunnel through, these bytes first.
    Relay,
    /// Reset the tunnel, with these response code details; the decision now says why.
    Reset(String),
}

/// The tunnel check of both filters ([`tunnel_opening`]): on a refusal, `decision` becomes that
/// refusal alone ([`Decision::reject_after`]).
pub fn tunnel_step(
    request: &Request,
    decision: Option<&mut Decision>,
    first_bytes: &[u8],
    ended: bool,
) -> TunnelStep {
    match tunnel_opening(request, first_bytes, ended) {
        TunnelCheck::NeedMore => TunnelStep::Hold,
        TunnelCheck::Relay => TunnelStep::Relay,
        TunnelCheck::Refuse(problem) => {
            if let Some(decision) = decision {
                decision.reject_after(problem);
            }
            TunnelStep::Reset(Policy::rejection_details(problem))
        }
    }
}

/// The port of a `CONNECT` authority (`host:port`, `[v6]:port`): 1 to 65535, digits only.
fn authority_port(authority: &str) -> Option<i64> {
    let (_, port) = authority.rsplit_once(':')?;
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse::<i64>().ok().filter(|p| (1..=65535).contains(p))
}

/// Why a connection cannot be decided on its SNI `sni`, given how it began: the ClientHello the
/// gateway will relay must name the server the policy decides on and routes to, and nothing else
/// (README: HTTPS egress).
fn opening_problem(
    opening: &Opening,
    scanned: Option<Scan>,
    sni: Option<&str>,
) -> Option<Rejection> {
    match opening {
        Opening::HandshakeFailed => return Some(Rejection::HandshakeFailed),
        Opening::ClosedEarly => return Some(Rejection::ClosedBeforeClientHello),
        Opening::Unseen | Opening::FirstBytes(_) => {}
    }
    let Some(sni) = sni else {
        // Without an SNI, say first what kept the gateway from reading one.
        return Some(match scanned {
            Some(Scan::TooLarge) => Rejection::ClientHelloTooLarge,
            Some(Scan::Incomplete | Scan::Malformed(_)) => Rejection::NotClientHello,
            Some(Scan::Hello(hello)) if hello.hides_server_name => Rejection::HiddenServerName,
            _ => Rejection::MissingServerName,
        });
    };
    let hello = match scanned? {
        Scan::Hello(hello) => hello,
        Scan::TooLarge => return Some(Rejection::ClientHelloTooLarge),
        Scan::Incomplete | Scan::Malformed(_) => return Some(Rejection::NotClientHello),
    };
    if hello.hides_server_name {
        return Some(Rejection::HiddenServerName);
    }
    let named = hello
        .server_name
        .and_then(|name| canonical_host(&lossy(&name)));
    (named.as_deref() != Some(sni)).then_some(Rejection::ServerNameMismatch)
}

/// Mixer's `context.reporter.uid` from Envoy's node id: an Istio proxy's id is
/// `TYPE~IP~POD.NAMESPACE~DOMAIN`, which Mixer reported as `kubernetes://POD.NAMESPACE`; any
/// other id is the proxy's name as it is.
fn reporter_uid(node_id: &[u8]) -> String {
    let id = lossy(node_id);
    let parts: Vec<&str> = id.split('~').collect();
    match parts.as_slice() {
        [_, _, pod, _] if !pod.is_empty() => format!("kubernetes://{pod}"),
        _ => id,
    }
}

/// `10.1.2.3:5555` -> `10.1.2.3`, `[::1]:5555` -> `::1`.
pub(super) fn strip_port(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((ip, _)) if !ip.contains(':') => ip,
        _ => address,
    }
}
