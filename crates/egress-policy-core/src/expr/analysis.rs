//! Analyses of compiled expressions for other parts of the product.

use super::{Expr, Value};
use crate::attributes::Attr;
use crate::attributes::Phase;
use crate::request::Protocol;

/// Host names and host suffixes an expression names, for bounded destination metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostLiterals {
    /// From `request.host == "x"` and `request.host in [...]` (or the SNI,
    /// `connection.requested_server_name`, the destination of a connection).
    pub names: Vec<String>,
    /// From `request.host.endsWith("x")`, without a leading dot.
    pub suffixes: Vec<String>,
}

impl Expr {
    /// Collects the host literals of this expression into `out`.
    pub fn host_literals(&self, out: &mut HostLiterals) {
        let is_host = |e: &Expr| {
            matches!(
                e,
                Expr::Attr(
                    Attr::RequestHost
                        | Attr::ConnectionRequestedServerName
                        | Attr::DestinationServiceHost
                )
            )
        };
        match self {
            Expr::Eq(l, r) | Expr::Ne(l, r) => {
                for (a, b) in [(l, r), (r, l)] {
                    if let (true, Expr::Str(name)) = (is_host(a), &**b) {
                        out.names.push(name.to_ascii_lowercase());
                    }
                }
            }
            Expr::InStrings(value, items) if is_host(value) => {
                out.names
                    .extend(items.iter().map(|i| i.to_ascii_lowercase()));
            }
            Expr::EndsWith(value, suffix) if is_host(value) => {
                if let Expr::Str(suffix) = &**suffix {
                    out.suffixes
                        .push(suffix.trim_start_matches('.').to_ascii_lowercase());
                }
            }
            _ => {}
        }
        match self {
            Expr::Default(a, b)
            | Expr::Eq(a, b)
            | Expr::Ne(a, b)
            | Expr::And(a, b)
            | Expr::Or(a, b)
            | Expr::StartsWith(a, b)
            | Expr::EndsWith(a, b)
            | Expr::Contains(a, b) => {
                a.host_literals(out);
                b.host_literals(out);
            }
            Expr::Not(a) | Expr::Matches(a, _) | Expr::InStrings(a, _) | Expr::InInts(a, _) => {
                a.host_literals(out)
            }
            _ => {}
        }
    }
}

/// What an expression is for every request, or every connection, of one protocol, as far as the
/// configuration alone tells: `context.protocol` is known, and on connections every request
/// attribute is absent.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Known<'a> {
    Absent,
    Value(Value<'a>),
    /// Depends on the request or connection.
    Depends,
}

impl Expr {
    /// Whether this condition can hold for some request (`Protocol::Http`) or connection
    /// (`Protocol::Tcp`): `false` only when it is false for every one (README: HTTPS egress).
    pub fn can_hold_for(&self, protocol: Protocol) -> bool {
        self.holds_for(protocol) != Some(false)
    }

    fn known_for(&self, protocol: Protocol) -> Known<'_> {
        match self {
            Expr::Attr(Attr::ContextProtocol) => Known::Value(Value::Str(protocol.as_str())),
            Expr::Attr(attr) if protocol == Protocol::Tcp && is_request_attribute(*attr) => {
                Known::Absent
            }
            Expr::Header(_) if protocol == Protocol::Tcp => Known::Absent,
            Expr::Attr(_) | Expr::Header(_) | Expr::Label(_) => Known::Depends,
            Expr::Str(s) => Known::Value(Value::Str(s)),
            Expr::Int(i) => Known::Value(Value::Int(*i)),
            Expr::Bool(b) => Known::Value(Value::Bool(*b)),
            Expr::Default(value, fallback) => match value.known_for(protocol) {
                Known::Absent => fallback.known_for(protocol),
                known => known,
            },
            _ => self
                .holds_for(protocol)
                .map_or(Known::Depends, |b| Known::Value(Value::Bool(b))),
        }
    }

    /// `Some(holds)` when the configuration alone decides the condition, as [`Expr::holds`]
    /// would (an absent value is false, and equal to nothing).
    fn holds_for(&self, protocol: Protocol) -> Option<bool> {
        fn known(e: &Expr, protocol: Protocol) -> Known<'_> {
            e.known_for(protocol)
        }
        let text = |e: &Expr| match e.known_for(protocol) {
            Known::Value(Value::Str(s)) => Some(Some(s.to_owned())),
            Known::Depends => None,
            Known::Absent | Known::Value(_) => Some(None),
        };
        let strings = |s: &Expr, p: &Expr, test: fn(&str, &str) -> bool| match (text(s)?, text(p)?)
        {
            (Some(s), Some(p)) => Some(test(&s, &p)),
            _ => Some(false),
        };
        match self {
            Expr::Eq(l, r) | Expr::Ne(l, r) => {
                let equal = match (known(l, protocol), known(r, protocol)) {
                    (Known::Absent, _) | (_, Known::Absent) => false,
                    (Known::Value(a), Known::Value(b)) => a == b,
                    _ => return None,
                };
                Some(equal == matches!(self, Expr::Eq(..)))
            }
            Expr::And(l, r) => match (l.holds_for(protocol), r.holds_for(protocol)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            Expr::Or(l, r) => match (l.holds_for(protocol), r.holds_for(protocol)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            Expr::Not(inner) => inner.holds_for(protocol).map(|b| !b),
            Expr::StartsWith(s, p) => strings(s, p, |s, p| s.starts_with(p)),
            Expr::EndsWith(s, p) => strings(s, p, |s, p| s.ends_with(p)),
            Expr::Contains(s, p) => strings(s, p, |s, p| s.contains(p)),
            Expr::Matches(s, regex) => text(s).map(|s| s.is_some_and(|s| regex.is_match(&s))),
            Expr::InStrings(v, items) => {
                text(v).map(|s| s.is_some_and(|s| items.iter().any(|i| **i == *s)))
            }
            Expr::InInts(v, items) => match known(v, protocol) {
                Known::Value(Value::Int(i)) => Some(items.contains(&i)),
                Known::Depends => None,
                _ => Some(false),
            },
            _ => match known(self, protocol) {
                Known::Value(Value::Bool(b)) => Some(b),
                Known::Depends => None,
                _ => Some(false),
            },
        }
    }
}

fn is_request_attribute(attr: Attr) -> bool {
    crate::attributes::of(attr).is_some_and(|a| a.phase == Phase::Request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::Use;

    fn condition(text: &str) -> Expr {
        crate::expr::compile_condition(text, Use::Decision)
            .unwrap()
            .0
    }

    #[test]
    fn request_attributes_never_match_on_connections() {
        for (text, http, tcp) in [
            ("request.host == \"a\"", true, false),
            ("request.host != \"a\"", true, true),
            ("context.protocol == \"tcp\"", false, true),
            (
                "context.protocol == \"tcp\" && request.path.startsWith(\"/x\")",
                false,
                false,
            ),
            (
                "context.protocol == \"http\" || connection.requested_server_name == \"a\"",
                true,
                true,
            ),
            ("!(request.method in [\"GET\"])", true, true),
            ("request.headers[\"x\"] | \"d\" == \"d\"", true, true),
            ("source.namespace == \"default\"", true, true),
        ] {
            let expr = condition(text);
            assert_eq!(
                expr.can_hold_for(Protocol::Http),
                http,
                "{text} on requests"
            );
            assert_eq!(
                expr.can_hold_for(Protocol::Tcp),
                tcp,
                "{text} on connections"
            );
        }
    }
}
