//! Fetching remote list entries: when each list is due, which fetch a response belongs to, and
//! what a response does to the list in force. The adapter only dispatches the calls and hands
//! the answers back; everything here is plain Rust, tested natively.

use crate::policy::Policy;
use crate::policy::provider::{RemoteEntries, RemoteLists};

/// The shortest timer tick: fetch schedules are checked this often at most.
pub const MIN_TICK_MICROS: i64 = 50_000;

/// One fetch on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    token: u32,
    list: usize,
}

/// What became of a fetch, for the proxy's log and the counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The list now in force has this many remote entries.
    Updated { list: usize, entries: usize },
    /// Nothing changed; the reason says why.
    Failed { list: usize, reason: String },
}

/// Schedules and bookkeeping of the fetches of one configuration.
#[derive(Debug, Default)]
pub struct Fetcher {
    /// Next fetch time per list index (`None`: the list has no provider).
    next_micros: Vec<Option<i64>>,
    in_flight: Vec<InFlight>,
}

impl Fetcher {
    /// Every list with a provider is due at once.
    pub fn new(policy: &Policy) -> Self {
        let mut next_micros = vec![None; policy.lists.len()];
        for (index, _, _) in policy.providers() {
            if let Some(slot) = next_micros.get_mut(index) {
                *slot = Some(i64::MIN);
            }
        }
        Fetcher {
            next_micros,
            in_flight: Vec::new(),
        }
    }

    /// The timer period that serves every refresh interval, or `None` without providers.
    pub fn tick_micros(policy: &Policy) -> Option<i64> {
        policy
            .providers()
            .map(|(_, _, p)| p.refresh_micros)
            .min()
            .map(|shortest| shortest.clamp(MIN_TICK_MICROS, 1_000_000))
    }

    /// Lists due at `now` that have no fetch on its way; each is scheduled `refreshInterval`
    /// later.
    pub fn due(&mut self, policy: &Policy, now: i64) -> Vec<usize> {
        let mut due = Vec::new();
        for (index, _, provider) in policy.providers() {
            let busy = self.in_flight.iter().any(|f| f.list == index);
            if let Some(Some(next)) = self.next_micros.get_mut(index)
                && *next <= now
                && !busy
            {
                *next = now.saturating_add(provider.refresh_micros);
                due.push(index);
            }
        }
        due
    }

    /// Records a dispatched fetch.
    pub fn sent(&mut self, token: u32, list: usize) {
        self.in_flight.push(InFlight { token, list });
    }

    /// Applies an answer: a 200 whose body parses replaces the list whole; anything else leaves
    /// the list in force as it is. `None` when the token is not one of ours.
    pub fn received(
        &mut self,
        policy: &Policy,
        remote: &mut RemoteLists,
        token: u32,
        status: Option<&[u8]>,
        body: &[u8],
        now: i64,
    ) -> Option<FetchOutcome> {
        let position = self.in_flight.iter().position(|f| f.token == token)?;
        let InFlight { list, .. } = self.in_flight.swap_remove(position);
        let failed = |reason: String| Some(FetchOutcome::Failed { list, reason });
        let (Some(config), Some(provider)) = (
            policy.lists.get(list),
            policy.lists.get(list).and_then(|l| l.provider.as_ref()),
        ) else {
            return None;
        };
        match status {
            Some(b"200") => {}
            Some(other) => return failed(format!("status {}", String::from_utf8_lossy(other))),
            // No :status: the call failed (timeout, reset, no healthy upstream).
            None => return failed("no response (connection failure or timeout)".into()),
        }
        match provider.parse(config.entry_type, body) {
            Ok(index) => {
                let entries = index.len();
                remote.set(
                    list,
                    RemoteEntries {
                        index,
                        fetched_at_micros: now,
                    },
                );
                Some(FetchOutcome::Updated { list, entries })
            }
            Err(reason) => failed(reason),
        }
    }

    /// A dispatch that could not even be sent counts as a failed fetch.
    pub fn not_sent(list: usize, reason: String) -> FetchOutcome {
        FetchOutcome::Failed { list, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Request;

    fn policy() -> Policy {
        Policy::from_json(
            br#"{"lists": {"paths": {"value": "request.url_path", "entries": ["/health"],
                  "provider": {"cluster": "lists", "path": "/paths", "refreshInterval": "1s", "ttl": "3s"}}},
                 "rules": [{"name": "check", "check": ["paths"]}]}"#,
        )
        .unwrap()
    }

    fn allowed(policy: &Policy, remote: &RemoteLists, path: &str, now: i64) -> bool {
        let request = Request {
            path: Some(path.into()),
            time_micros: Some(now),
            ..Request::default()
        };
        policy.evaluate_with(&request, remote).denied.is_none()
    }

    #[test]
    fn lists_are_fetched_at_start_and_every_refresh_interval() {
        let policy = policy();
        let mut fetcher = Fetcher::new(&policy);
        assert_eq!(Fetcher::tick_micros(&policy), Some(1_000_000));
        assert_eq!(fetcher.due(&policy, 0), vec![0]);
        fetcher.sent(7, 0);
        assert!(
            fetcher.due(&policy, 2_000_000).is_empty(),
            "one fetch at a time"
        );
        let mut remote = RemoteLists::default();
        fetcher.received(&policy, &mut remote, 7, Some(b"200"), b"/sport\n", 10);
        assert!(fetcher.due(&policy, 999_999).is_empty());
        assert_eq!(fetcher.due(&policy, 2_000_000), vec![0]);
    }

    #[test]
    fn the_last_good_list_serves_until_ttl_then_on_error_denies() {
        let policy = policy();
        let mut fetcher = Fetcher::new(&policy);
        let mut remote = RemoteLists::default();
        assert!(
            !allowed(&policy, &remote, "/sport", 0),
            "before the first fetch: onError deny"
        );
        assert!(
            allowed(&policy, &remote, "/health", 0),
            "static entries always apply"
        );

        fetcher.due(&policy, 0);
        fetcher.sent(1, 0);
        let outcome =
            fetcher.received(&policy, &mut remote, 1, Some(b"200"), b"/sport\n/news\n", 0);
        assert_eq!(
            outcome,
            Some(FetchOutcome::Updated {
                list: 0,
                entries: 2
            })
        );
        assert!(allowed(&policy, &remote, "/sport", 1));
        assert!(!allowed(&policy, &remote, "/politics", 1));

        fetcher.due(&policy, 1_000_000);
        fetcher.sent(2, 0);
        let outcome = fetcher.received(&policy, &mut remote, 2, Some(b"503"), b"", 1_000_000);
        assert_eq!(
            outcome,
            Some(FetchOutcome::Failed {
                list: 0,
                reason: "status 503".into()
            })
        );
        assert!(
            allowed(&policy, &remote, "/sport", 3_000_000),
            "stale but within ttl"
        );
        assert!(
            !allowed(&policy, &remote, "/sport", 3_000_001),
            "past ttl: onError deny"
        );
        assert!(allowed(&policy, &remote, "/health", 3_000_001));
    }

    #[test]
    fn a_bad_body_never_replaces_the_list_in_force() {
        let policy = policy();
        let mut fetcher = Fetcher::new(&policy);
        let mut remote = RemoteLists::default();
        fetcher.sent(1, 0);
        fetcher.received(&policy, &mut remote, 1, Some(b"200"), b"/sport\n", 0);
        fetcher.sent(2, 0);
        let outcome = fetcher.received(
            &policy,
            &mut remote,
            2,
            Some(b"200"),
            b"[\"/politics\", 1]",
            5,
        );
        assert!(matches!(outcome, Some(FetchOutcome::Failed { .. })));
        assert!(allowed(&policy, &remote, "/sport", 10));
        assert!(!allowed(&policy, &remote, "/politics", 10));
        assert_eq!(
            fetcher.received(&policy, &mut remote, 99, Some(b"200"), b"", 0),
            None,
            "unknown token"
        );
    }
}
