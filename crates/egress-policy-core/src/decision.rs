//! The outcome of deciding a request: what became of it, what decided, and which rules fired.
//!
//! A decision holds indices into the [`crate::policy::Policy`] that made it; the policy turns
//! them into words ([`crate::policy::Policy::explain`]) and into the local reply's response code
//! details ([`crate::policy::Policy::details`]), so the log, the reply and the CLI say the same.

/// What became of a request: the one vocabulary of the log's `policy.decision`, the metrics'
/// `decision` label and `egress-policy audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded; every check passed.
    Allow,
    /// Answered locally: a route or an enforced list check refused it.
    Deny,
    /// Answered locally with 400 before any policy ran: the request is ambiguous.
    Reject,
    /// Forwarded, but a dry-run check failed: it would have been denied.
    DryRunDeny,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [Self::Allow, Self::Deny, Self::Reject, Self::DryRunDeny];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Reject => "reject",
            Self::DryRunDeny => "dry_run_deny",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == text)
    }

    /// Whether the request reached its destination.
    pub fn forwarded(self) -> bool {
        matches!(self, Self::Allow | Self::DryRunDeny)
    }
}

/// Why a request was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// Routes exist but the request's host is absent or unusable, so no route can admit it.
    HostUnknown,
    /// The host has routes (`route` is the first of them) and none matched the request.
    NoRouteMatch { route: usize },
    /// Rule `rule` checked list `list` and the check failed.
    List {
        rule: usize,
        list: usize,
        failure: ListFailure,
    },
    /// The host is written as an IP address and `addressGuard.allowIpLiterals` is off.
    IpLiteral,
    /// The SSRF guard: the address the host names or resolved to is one the gateway never
    /// connects to, for `reason` (the range's: `loopback`, `private`, `link_local`, ...).
    Address {
        address: std::net::IpAddr,
        reason: crate::addresses::Reason,
    },
    /// The address guard at connect time: the name resolved only to addresses the gateway never
    /// connects to, so Envoy's DNS cache kept none of them and the request went nowhere.
    ResolvedOnlyToRefused,
}

/// How a list check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFailure {
    /// Whitelist: the value is not listed.
    NotListed,
    /// Blacklist: the value is listed.
    Listed,
    /// The list's value expression is absent for this request.
    ValueAbsent,
    /// The list's remote entries are unavailable (never fetched, or older than `ttl`), the
    /// static entries do not list the value, and `onError` is `deny`.
    Unavailable,
}

/// The full outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Set when the request was refused before any policy ran, because it is ambiguous.
    pub rejected: Option<crate::request::Rejection>,
    /// The first denial (routes first, then rules in order); `None` means allowed.
    pub denied: Option<DenyReason>,
    /// Indices of the rules whose `match` held, in order.
    pub fired: Vec<u32>,
    /// Checks that failed but are dry-run (the rule's or the list's): logged and counted, not
    /// enforced.
    pub dry_run: Vec<DenyReason>,
}

impl DenyReason {
    /// Refused by the SSRF guard (README: Security), not by a rule, a list or a route.
    pub fn is_address_guard(&self) -> bool {
        matches!(
            self,
            Self::IpLiteral | Self::Address { .. } | Self::ResolvedOnlyToRefused
        )
    }
}

/// Envoy's response code details when its DNS cache dropped every address of a name (its
/// `resolved_address_filter`, the SSRF guard at connect time).
pub const ENVOY_ADDRESS_DENIED: &[u8] = b"dns_resolution_failure{address_denied}";

impl Decision {
    /// What became of a forwarded request once Envoy answered it: a request the policy allowed
    /// that the address guard stopped at connect time (Envoy's `details`) is denied, and says
    /// so in its log line and metrics. `true` when that changed the decision.
    pub fn note_upstream(&mut self, details: &[u8]) -> bool {
        if self.rejected.is_some() || self.denied.is_some() || details != ENVOY_ADDRESS_DENIED {
            return false;
        }
        self.denied = Some(DenyReason::ResolvedOnlyToRefused);
        true
    }

    /// Refuses, after the fact, a request the policy let through: a tunnel whose first bytes are
    /// not what its `CONNECT` was decided on. It is logged and counted as that refusal alone.
    pub fn reject_after(&mut self, problem: crate::request::Rejection) {
        self.rejected = Some(problem);
        self.fired.clear();
        self.dry_run.clear();
    }

    pub fn outcome(&self) -> Outcome {
        match (&self.rejected, &self.denied) {
            (Some(_), _) => Outcome::Reject,
            (None, Some(_)) => Outcome::Deny,
            (None, None) if !self.dry_run.is_empty() => Outcome::DryRunDeny,
            (None, None) => Outcome::Allow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_words_round_trip() {
        for outcome in Outcome::ALL {
            assert_eq!(Outcome::parse(outcome.as_str()), Some(outcome));
        }
        assert_eq!(Outcome::parse("denied"), None);
    }
}
