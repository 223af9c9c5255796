//! Evaluation of compiled expressions: walks the tree, borrows every string from the request or
//! the config, and cannot fail.

use super::{Env, Expr, Value};
use crate::attributes::Attr;
use crate::request::{Protocol, Response};

impl Expr {
    /// Evaluates the expression; `None` means "absent".
    pub fn eval<'a>(&'a self, env: &Env<'a>) -> Option<Value<'a>> {
        match self {
            Expr::Attr(attr) => attribute(*attr, env),
            Expr::Header(name) => env.request.header(name).map(Value::Str),
            Expr::Label(key) => env.request.source.label(key).map(Value::Str),
            Expr::Str(s) => Some(Value::Str(s)),
            Expr::Int(i) => Some(Value::Int(*i)),
            Expr::Bool(b) => Some(Value::Bool(*b)),
            Expr::Default(value, fallback) => value.eval(env).or_else(|| fallback.eval(env)),
            _ => Some(Value::Bool(self.holds(env))),
        }
    }

    /// Evaluates a condition; an absent value is false.
    pub fn holds(&self, env: &Env<'_>) -> bool {
        match self {
            Expr::Eq(l, r) => matches!((l.eval(env), r.eval(env)), (Some(a), Some(b)) if a == b),
            Expr::Ne(l, r) => !matches!((l.eval(env), r.eval(env)), (Some(a), Some(b)) if a == b),
            Expr::And(l, r) => l.holds(env) && r.holds(env),
            Expr::Or(l, r) => l.holds(env) || r.holds(env),
            Expr::Not(inner) => !inner.holds(env),
            Expr::StartsWith(s, p) => strings(s, p, env, |s, p| s.starts_with(p)),
            Expr::EndsWith(s, p) => strings(s, p, env, |s, p| s.ends_with(p)),
            Expr::Contains(s, p) => strings(s, p, env, |s, p| s.contains(p)),
            Expr::Matches(s, regex) => {
                matches!(s.eval(env), Some(Value::Str(s)) if regex.is_match(s))
            }
            Expr::InStrings(v, items) => {
                matches!(v.eval(env), Some(Value::Str(s)) if items.iter().any(|item| **item == *s))
            }
            Expr::InInts(v, items) => {
                matches!(v.eval(env), Some(Value::Int(i)) if items.contains(&i))
            }
            _ => matches!(self.eval(env), Some(Value::Bool(true))),
        }
    }
}

fn strings(s: &Expr, p: &Expr, env: &Env<'_>, test: fn(&str, &str) -> bool) -> bool {
    match (s.eval(env), p.eval(env)) {
        (Some(Value::Str(s)), Some(Value::Str(p))) => test(s, p),
        _ => false,
    }
}

fn attribute<'a>(attr: Attr, env: &Env<'a>) -> Option<Value<'a>> {
    let request = env.request;
    let source = &request.source;
    let text = |value: &'a Option<String>| value.as_deref().map(Value::Str);
    // A number known at the end of the exchange; `only` limits it to requests or connections
    // (a duration is `response.duration` for one, `connection.duration` for the other).
    let ended = |only: Option<Protocol>, field: fn(&Response) -> Option<i64>| {
        env.response
            .filter(|_| only.is_none_or(|p| p == request.protocol))
            .and_then(field)
            .map(Value::Int)
    };
    match attr {
        Attr::RequestHost => text(&request.host),
        Attr::RequestPort => request.port.map(Value::Int),
        Attr::RequestPath => request.path().map(Value::Str),
        Attr::RequestUrlPath => request.url_path().map(Value::Str),
        Attr::RequestMethod => text(&request.method),
        Attr::RequestScheme => text(&request.scheme),
        Attr::RequestUseragent => text(&request.useragent),
        Attr::SourceNamespace => text(&source.namespace),
        Attr::SourceServiceAccount => text(&source.service_account),
        Attr::SourcePrincipal => text(&source.principal),
        Attr::SourceUser => source.user().map(Value::Str),
        Attr::SourceWorkload => text(&source.workload),
        Attr::SourceIp => text(&source.ip),
        Attr::ConnectionMtls => request.mtls.map(Value::Bool),
        Attr::ConnectionRequestedServerName => text(&request.requested_server_name),
        Attr::DestinationPort => request.destination_port.map(Value::Int),
        Attr::ContextProtocol => Some(Value::Str(request.protocol.as_str())),
        Attr::ContextReporterKind => Some(Value::Str("outbound")),
        Attr::ContextReporterUid => text(&request.reporter_uid),
        Attr::DestinationServiceHost => match request.protocol {
            Protocol::Http => text(&request.host),
            Protocol::Tcp => text(&request.requested_server_name),
        },
        Attr::ConnectionReceivedBytes => ended(None, |r| r.received_bytes),
        Attr::ConnectionSentBytes => ended(None, |r| r.sent_bytes),
        Attr::ConnectionDuration => ended(Some(Protocol::Tcp), |r| r.duration_ms),
        Attr::ConnectionEvent => env.response.and_then(|r| r.event).map(Value::Str),
        Attr::ConnectionRelayed => env.response.and_then(|r| r.relayed).map(Value::Bool),
        Attr::ResponseCode => ended(None, |r| r.code),
        Attr::ResponseSize => ended(None, |r| r.size),
        Attr::ResponseDuration => ended(Some(Protocol::Http), |r| r.duration_ms),
        Attr::PolicyDecision => env.outcome.map(|(decision, _)| Value::Str(decision)),
        Attr::PolicyDeniedBy => env.outcome.and_then(|(_, by)| by).map(Value::Str),
    }
}
