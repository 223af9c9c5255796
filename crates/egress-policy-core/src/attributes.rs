//! The attribute table: every attribute the expression language knows, declared once with its
//! type, the phase in which it exists, where its value comes from and what it means.
//!
//! The expression checker resolves names and refuses what a decision cannot see from this table;
//! the adapter reads the properties the policy uses from it ([`Source::Property`]); the README's
//! attribute table is rendered from it ([`readme_table`], kept equal by a test). Adding an
//! attribute is one [`Attr`] variant, one entry here and, in `expr/eval.rs`, where its value sits
//! in the canonical request.

/// Static type of an attribute or expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    String,
    Int,
    Bool,
    /// `request.headers`, `source.labels`: only usable through `[key]`.
    Map,
}

impl Type {
    pub fn name(self) -> &'static str {
        match self {
            Type::String => "string",
            Type::Int => "int",
            Type::Bool => "bool",
            Type::Map => "map",
        }
    }
}

/// A scalar attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    RequestHost,
    RequestPort,
    RequestPath,
    RequestUrlPath,
    RequestMethod,
    RequestScheme,
    RequestUseragent,
    SourceNamespace,
    SourceServiceAccount,
    SourcePrincipal,
    SourceUser,
    SourceWorkload,
    SourceIp,
    ConnectionMtls,
    ConnectionRequestedServerName,
    DestinationPort,
    ContextProtocol,
    ContextReporterKind,
    ContextReporterUid,
    DestinationServiceHost,
    ConnectionReceivedBytes,
    ConnectionSentBytes,
    ConnectionDuration,
    ConnectionEvent,
    ConnectionRelayed,
    ResponseCode,
    ResponseSize,
    ResponseDuration,
    PolicyDecision,
    PolicyDeniedBy,
}

/// A map attribute, indexed by a literal key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapAttr {
    RequestHeaders,
    SourceLabels,
}

/// What an attribute name denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Scalar(Attr),
    Map(MapAttr),
}

/// When an attribute exists. Decisions see [`Phase::Connection`] and [`Phase::Request`]
/// attributes; log fields see all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Known from the downstream connection: the caller and its certificate.
    Connection,
    /// Known when the request headers arrive.
    Request,
    /// Known once the response has ended: log fields only.
    Response,
    /// Known once the connection has closed (or was refused): log fields only.
    Close,
    /// The decision's own result: log fields only.
    Outcome,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Connection => "connection",
            Phase::Request => "request",
            Phase::Response => "response",
            Phase::Close => "close",
            Phase::Outcome => "outcome",
        }
    }

    /// Whether a decision (a rule's match, a list's value, a route) can read it.
    pub fn before_decision(self) -> bool {
        matches!(self, Phase::Connection | Phase::Request)
    }

    /// Why a decision cannot read an attribute of this phase.
    pub fn why_not_in_decisions(self) -> &'static str {
        match self {
            Phase::Response => "decisions are made before the response exists",
            Phase::Close => "decisions are made before the connection carries a byte",
            Phase::Outcome => "it is the decision's outcome",
            Phase::Connection | Phase::Request => "",
        }
    }
}

/// Where the adapter gets an attribute's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A request header (or pseudo-header), from the one call that reads them all.
    Header(&'static str),
    /// Any request header, by the name in `[...]`.
    Headers,
    /// A proxy property, read only when the policy uses the attribute.
    Property(&'static [&'static str]),
    /// Istio's peer metadata (a property under this path), read only for verified mTLS callers.
    PeerMetadata(&'static [&'static str]),
    /// The verified client certificate's URI SAN (SPIFFE ID).
    PeerCertificate,
    /// The response: its headers, the body bytes that passed, or this property.
    Response(&'static [&'static str]),
    /// The filter that decides: the HTTP filter or the network filter.
    Filter,
    /// The network filter, when the connection ends: its duration and how it ended.
    ConnectionEnd,
    /// The connection's property under this path, read when it ends (Envoy's count of the bytes
    /// it relayed).
    AtClose(&'static [&'static str]),
    /// The decision itself.
    Decision,
}

impl Source {
    /// How the README names the source.
    pub fn describe(self) -> String {
        match self {
            Source::Header(name) => format!("header `{name}`"),
            Source::Headers => "request headers".into(),
            Source::Property(path) => format!("property `{}`", path.join(".")),
            Source::PeerMetadata(path) => format!("Istio peer metadata `{}`", path.join(".")),
            Source::PeerCertificate => "peer certificate".into(),
            Source::Response(path) => format!("response (property `{}`)", path.join(".")),
            Source::Filter => "the filter".into(),
            Source::ConnectionEnd => "the connection's close".into(),
            Source::AtClose(path) => format!("property `{}` at the close", path.join(".")),
            Source::Decision => "the decision".into(),
        }
    }
}

/// One row of the attribute table.
#[derive(Debug, Clone, Copy)]
pub struct Attribute {
    pub name: &'static str,
    pub kind: Kind,
    pub ty: Type,
    pub phase: Phase,
    pub source: Source,
    /// One line, in the README's words.
    pub meaning: &'static str,
}

const fn row(
    name: &'static str,
    kind: Kind,
    ty: Type,
    phase: Phase,
    source: Source,
    meaning: &'static str,
) -> Attribute {
    Attribute {
        name,
        kind,
        ty,
        phase,
        source,
        meaning,
    }
}

use Kind::{Map, Scalar};
use Phase::{Close, Connection, Outcome, Request, Response};
use Type::{Bool, Int, String as Str};

/// Envoy sets the upstream connection's local address once it is connected, and only then.
pub const UPSTREAM_LOCAL_ADDRESS: &[&str] = &["upstream", "local_address"];

/// Every attribute, in the README's order.
#[rustfmt::skip]
pub const ATTRIBUTES: &[Attribute] = &[
    row("request.host", Scalar(Attr::RequestHost), Str, Request, Source::Header(":authority"), "lower case, port and trailing dot removed; absent when unusable (userinfo, characters no host has, bytes that are not UTF-8)"),
    row("request.port", Scalar(Attr::RequestPort), Int, Request, Source::Header(":authority"), "the port a forward proxy's `CONNECT host:port` names; absent for other requests (the gateway chooses their destination port: 443, TLS originated)"),
    row("request.path", Scalar(Attr::RequestPath), Str, Request, Source::Header(":path"), "the path, percent-decoded once (see [Security](security.md#security)), with the query string as received"),
    row("request.url_path", Scalar(Attr::RequestUrlPath), Str, Request, Source::Header(":path"), "the decoded path without query string"),
    row("request.method", Scalar(Attr::RequestMethod), Str, Request, Source::Header(":method"), "HTTP method"),
    row("request.scheme", Scalar(Attr::RequestScheme), Str, Request, Source::Header(":scheme"), "`http` or `https`"),
    row("request.useragent", Scalar(Attr::RequestUseragent), Str, Request, Source::Header("user-agent"), "`User-Agent`"),
    row("request.headers", Map(MapAttr::RequestHeaders), Type::Map, Request, Source::Headers, "a request header by name, case-insensitive"),
    row("source.namespace", Scalar(Attr::SourceNamespace), Str, Connection, Source::PeerCertificate, "caller's namespace (mTLS identity)"),
    row("source.serviceAccount", Scalar(Attr::SourceServiceAccount), Str, Connection, Source::PeerCertificate, "caller's service account (mTLS identity)"),
    row("source.principal", Scalar(Attr::SourcePrincipal), Str, Connection, Source::PeerCertificate, "caller's SPIFFE ID"),
    row("source.user", Scalar(Attr::SourceUser), Str, Connection, Source::PeerCertificate, "authenticated user (the SPIFFE ID)"),
    row("source.labels", Map(MapAttr::SourceLabels), Type::Map, Connection, Source::PeerMetadata(&["downstream_peer", "labels"]), "caller's workload labels"),
    row("source.workload", Scalar(Attr::SourceWorkload), Str, Connection, Source::PeerMetadata(&["downstream_peer", "workload"]), "caller's workload name"),
    row("source.ip", Scalar(Attr::SourceIp), Str, Connection, Source::Property(&["source", "address"]), "caller's IP address"),
    row("connection.mtls", Scalar(Attr::ConnectionMtls), Bool, Connection, Source::Property(&["connection", "mtls"]), "the caller presented a verified client certificate"),
    row("connection.requested_server_name", Scalar(Attr::ConnectionRequestedServerName), Str, Connection, Source::Property(&["connection", "requested_server_name"]), "SNI of the downstream connection"),
    row("destination.port", Scalar(Attr::DestinationPort), Int, Connection, Source::Property(&["destination", "port"]), "the gateway port the caller connected to"),
    row("context.protocol", Scalar(Attr::ContextProtocol), Str, Connection, Source::Filter, "`http` for requests (the HTTP filter), `tcp` for connections (the network filter, TLS egress)"),
    row("context.reporter.kind", Scalar(Attr::ContextReporterKind), Str, Connection, Source::Filter, "`outbound`: Mixer's value for the proxy that reports a call leaving it, as the egress gateway does"),
    row("context.reporter.uid", Scalar(Attr::ContextReporterUid), Str, Connection, Source::Property(&["xds", "node", "id"]), "the gateway proxy, as Mixer named it: `kubernetes://POD.NAMESPACE` from an Istio proxy's node id, else Envoy's node id"),
    row("destination.service.host", Scalar(Attr::DestinationServiceHost), Str, Connection, Source::Filter, "the external service called, as Mixer's attribute on an egress gateway: `request.host` for requests, the SNI for connections"),
    row("response.code", Scalar(Attr::ResponseCode), Int, Response, Source::Response(&["response", "code"]), "response status"),
    row("response.size", Scalar(Attr::ResponseSize), Int, Response, Source::Response(&["response", "size"]), "response body bytes"),
    row("response.duration", Scalar(Attr::ResponseDuration), Int, Response, Source::Response(&["request", "duration"]), "milliseconds until the response ended"),
    row("connection.received.bytes", Scalar(Attr::ConnectionReceivedBytes), Int, Close, Source::AtClose(&["request", "size"]), "bytes relayed from the caller to the destination (0 for a refused connection)"),
    row("connection.sent.bytes", Scalar(Attr::ConnectionSentBytes), Int, Close, Source::AtClose(&["response", "size"]), "bytes relayed from the destination to the caller"),
    row("connection.duration", Scalar(Attr::ConnectionDuration), Int, Close, Source::ConnectionEnd, "milliseconds the connection lasted"),
    row("connection.event", Scalar(Attr::ConnectionEvent), Str, Close, Source::ConnectionEnd, "`open` for a connection refused when it opened, `close` when it ended"),
    row("connection.relayed", Scalar(Attr::ConnectionRelayed), Bool, Close, Source::AtClose(UPSTREAM_LOCAL_ADDRESS), "an upstream connection was made and the connection relayed: `false` for a refused connection, and for an allowed one whose destination was never reached (the name resolves nowhere, connection refused); every connection's line also has it as `relayed`"),
    row("policy.decision", Scalar(Attr::PolicyDecision), Str, Outcome, Source::Decision, "`allow`, `deny`, `reject` or `dry_run_deny` (forwarded, but a dry-run check failed): the one outcome vocabulary of the log, the metrics' `decision` label and `audit`"),
    row("policy.deniedBy", Scalar(Attr::PolicyDeniedBy), Str, Outcome, Source::Decision, "what denied or refused the request, as in the reply's details (`egress_policy_denied:rule=handle-cnn-access,list=path-checker`)"),
];

/// The attribute of this name.
pub fn lookup(name: &str) -> Option<&'static Attribute> {
    ATTRIBUTES.iter().find(|a| a.name == name)
}

/// The table row of a scalar attribute.
pub fn of(attr: Attr) -> Option<&'static Attribute> {
    ATTRIBUTES.iter().find(|a| a.kind == Kind::Scalar(attr))
}

/// The table row of a map attribute.
pub fn of_map(attr: MapAttr) -> Option<&'static Attribute> {
    ATTRIBUTES.iter().find(|a| a.kind == Kind::Map(attr))
}

/// Hints for names a user porting a Mixer configuration is likely to write.
pub fn suggestion(name: &str) -> &'static str {
    match name {
        "source.service" | "source.name" => "; use source.serviceAccount or source.workload",
        "source.uid" => "; use source.principal",
        "request.url" | "request.uri" => "; use request.path or request.url_path",
        "destination.service" | "destination.host" | "destination.service.name" => {
            "; use destination.service.host or request.host"
        }
        "context.reporter.local" | "context.reporter.type" => {
            "; the filter runs on the egress gateway only: use context.reporter.kind"
        }
        _ => "",
    }
}

/// The README's attribute table (Markdown), rendered from [`ATTRIBUTES`].
pub fn readme_table() -> String {
    let mut out =
        String::from("| attribute | type | phase | source | meaning |\n|---|---|---|---|---|\n");
    for attribute in ATTRIBUTES {
        let name = match attribute.kind {
            Kind::Scalar(_) => attribute.name.to_owned(),
            Kind::Map(_) => format!("{}[\"key\"]", attribute.name),
        };
        let ty = match attribute.kind {
            Kind::Scalar(_) => attribute.ty.name(),
            Kind::Map(_) => "string",
        };
        out.push_str(&format!(
            "| `{name}` | {ty} | {} | {} | {} |\n",
            attribute.phase.name(),
            attribute.source.describe(),
            attribute.meaning.replace('|', "\\|"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attribute_is_declared_once() {
        for (i, attribute) in ATTRIBUTES.iter().enumerate() {
            assert!(
                ATTRIBUTES
                    .iter()
                    .skip(i + 1)
                    .all(|other| other.name != attribute.name && other.kind != attribute.kind),
                "{} is declared twice",
                attribute.name
            );
            assert_eq!(lookup(attribute.name).map(|a| a.kind), Some(attribute.kind));
        }
    }

    #[test]
    fn readme_attribute_table_is_this_table() {
        let readme = crate::stripped::manual_text();
        assert!(
            readme.contains(&readme_table()),
            "README's attribute table differs; it should read:\n{}",
            readme_table()
        );
    }

    #[test]
    fn only_connection_and_request_attributes_reach_decisions() {
        let decidable: Vec<&str> = ATTRIBUTES
            .iter()
            .filter(|a| a.phase.before_decision())
            .map(|a| a.name)
            .collect();
        assert!(decidable.contains(&"request.host"));
        assert!(decidable.contains(&"source.namespace"));
        assert!(!decidable.iter().any(|n| n.starts_with("response.")));
        assert!(!decidable.iter().any(|n| n.starts_with("policy.")));
    }
}
