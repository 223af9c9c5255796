//! Analyses of compiled expressions for other parts of the product.

use super::Expr;
use crate::core::attributes::Attr;

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
                Expr::Attr(Attr::RequestHost | Attr::ConnectionRequestedServerName)
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
