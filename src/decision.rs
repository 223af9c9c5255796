//! The outcome of evaluating a request: allow or deny, what decided, and which rules fired.
//!
//! A decision holds indices into the [`crate::policy::Policy`] that made it; the policy turns
//! them into words ([`crate::policy::Policy::explain`]) and into the local reply's response code
//! details ([`crate::policy::Policy::details`]), so the log, the reply and the CLI say the same.

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
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
    /// Set when the request was refused before any policy ran, because its path is ambiguous.
    pub rejected: Option<crate::request::Rejection>,
    /// The first denial (routes first, then rules in order); `None` means allowed.
    pub denied: Option<DenyReason>,
    /// Indices of the rules whose `match` held, in order.
    pub fired: Vec<u32>,
    /// Checks that failed but are dry-run (the rule's or the list's): logged and counted, not
    /// enforced.
    pub dry_run: Vec<DenyReason>,
}

impl Decision {
    pub fn verdict(&self) -> Verdict {
        if self.denied.is_some() || self.rejected.is_some() {
            Verdict::Deny
        } else {
            Verdict::Allow
        }
    }
}
