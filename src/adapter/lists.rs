//! The root context's work: the active configuration and its remote lists — when each list is
//! due, which fetch a response belongs to, what a response does to the list in force, and the
//! counters and gauges that report it. Written against [`RootHost`], so every answer a list
//! server can give (oversized, stalled, empty, cut off, an error status, none at all) is tested
//! natively with a fake host; the adapter only forwards the proxy's callbacks.

use std::cell::RefCell;
use std::rc::Rc;

use super::{Host, PropertyReads};
use crate::core::attributes::Attr;
use crate::core::policy::Policy;
use crate::core::policy::provider::{FetchError, Provider, RemoteEntries, RemoteLists};
use crate::telemetry::log_entry::LogTemplate;
use crate::telemetry::metrics::Metrics;

/// What fetching lists needs from the proxy, beyond [`Host`].
pub trait RootHost: Host {
    /// Sends the provider's `GET` ([`Provider::request_headers`]) to its cluster, with its
    /// timeout; the call's token, or why it was not sent.
    ///
    /// The one host call that goes through the proxy-wasm SDK: its dispatcher must learn the
    /// token to route the answer back to the root context, and it offers no other way to tell
    /// it. The SDK panics on a status other than Ok, BadArgument and InternalFailure, which
    /// Envoy's `httpCall` does not return; a panic would trap the VM and `FAIL_RELOAD` reload
    /// it.
    fn dispatch_http_call(&self, provider: &Provider) -> Result<u32, String>;
    /// `:status` of the call response being delivered; `None` when it has none (the call
    /// failed: timeout, reset, no healthy upstream).
    fn http_call_response_status(&self) -> Option<Vec<u8>>;
    /// The first `size` bytes of that response's body.
    fn http_call_response_body(&self, size: usize) -> Option<Vec<u8>>;
    /// A value of the store the proxy shares between the VMs of one `vm_id` (every worker's and
    /// the main thread's), with its version for [`RootHost::set_shared_data`]; `Ok(None)` when
    /// the key is absent.
    fn shared_data(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, NoSharedData>;
    /// Sets a shared value if its version is still `cas` (0: whatever it is); `Ok(false)` when
    /// another VM changed it first.
    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<bool, NoSharedData>;
}

/// The proxy refused a shared-data call: each VM then fetches its lists on its own, as if it
/// were alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoSharedData;

/// A loaded configuration and the remote list entries fetched for it, shared by the root context
/// (which fetches) and the HTTP contexts (which decide) of one VM.
#[derive(Debug)]
pub struct Active {
    pub policy: Policy,
    pub metrics: Metrics,
    /// The log entries' constant parts.
    pub log: LogTemplate,
    /// Where to read what the policy and the metrics' labels use from a request, and nothing
    /// more, resolved once from the attribute table.
    pub reads: PropertyReads,
    /// The same for a connection, which is always decided on its SNI and port.
    pub connection_reads: PropertyReads,
    pub remote: RefCell<RemoteLists>,
}

impl Active {
    pub fn new(policy: Policy) -> Self {
        let metrics = Metrics::compile(&policy);
        let log = LogTemplate::compile(&policy);
        let mut needs = policy.reads.clone();
        needs.merge(&metrics.reads);
        let reads = PropertyReads::new(&needs);
        needs.add(Attr::ConnectionRequestedServerName);
        needs.add(Attr::DestinationPort);
        let connection_reads = PropertyReads::new(&needs);
        Active {
            policy,
            metrics,
            log,
            reads,
            connection_reads,
            remote: RefCell::new(RemoteLists::default()),
        }
    }
}

/// One VM's configuration and its remote lists. Each Envoy worker has its own VM (and the main
/// thread one more), but a list is fetched once per gateway and interval: the VMs share the fetch
/// through the proxy's shared data (see [`Fetcher`]), so the list server sees one request per
/// interval and every worker decides with the same version.
#[derive(Debug, Default)]
pub struct ListRefresher {
    active: Option<Rc<Active>>,
    fetcher: Fetcher,
}

/// The timer period without lists: how often batched counters reach the proxy.
pub const FLUSH_MICROS: i64 = 200_000;

impl ListRefresher {
    /// Puts a compiled configuration in force; returns the timer period it needs, in
    /// microseconds. Lists are fetched at once.
    pub fn configure(&mut self, host: &impl RootHost, policy: Policy) -> i64 {
        self.fetcher = Fetcher::new(&policy);
        let tick = Fetcher::tick_micros(&policy).map_or(FLUSH_MICROS, |t| t.min(FLUSH_MICROS));
        self.active = Some(Rc::new(Active::new(policy)));
        // A list another VM (or this one, under the previous configuration) already fetched is
        // in force at once, without waiting for a fetch.
        self.adopt_shared_lists(host);
        self.fetch_due_lists(host);
        tick
    }

    /// The configuration in force, for new HTTP contexts.
    pub fn active(&self) -> Option<Rc<Active>> {
        self.active.clone()
    }

    pub fn on_tick(&mut self, host: &impl RootHost) {
        self.adopt_shared_lists(host);
        self.fetch_due_lists(host);
        self.record_list_ages(host);
    }

    fn fetch_due_lists(&mut self, host: &impl RootHost) {
        let (Some(active), Some(now)) = (self.active.clone(), host.now_micros()) else {
            return;
        };
        for list in self.fetcher.due(&active.policy, now) {
            let Some((config, provider)) = active.policy.provider(list) else {
                continue;
            };
            if let Some(next_due) = self.fetcher.claim(host, list, now, provider.refresh_micros) {
                self.fetcher.reschedule(list, next_due);
                continue;
            }
            match host.dispatch_http_call(provider) {
                Ok(token) => self.fetcher.sent(token, list),
                Err(why) => report(
                    host,
                    &active,
                    &FetchOutcome::Failed {
                        list,
                        reason: FetchError::Dispatch {
                            cluster: provider.cluster.clone(),
                            why,
                        },
                    },
                    &config.name,
                ),
            }
        }
    }

    /// Puts in force every list a VM of this gateway fetched since this one last looked: one
    /// small read per list and tick, the body only when its version is new.
    fn adopt_shared_lists(&mut self, host: &impl RootHost) {
        let Some(active) = self.active.clone() else {
            return;
        };
        for (list, config, provider) in active.policy.providers() {
            let Some((fetched_at, body)) = self.fetcher.newer_shared_body(host, list) else {
                continue;
            };
            let outcome = provider
                .parse(config.entry_type, &body)
                .and_then(|index| put_in_force(&active, list, index, fetched_at));
            // Refused or not, this version is not looked at again: the next fetch brings a new one.
            self.fetcher.adopted(list, fetched_at);
            match outcome {
                Ok(entries) => {
                    if let Some(names) = active.metrics.list(list) {
                        host.set_gauge(&names.entries, u64::try_from(entries).unwrap_or(u64::MAX));
                    }
                }
                Err(reason) => {
                    host.log_warning(&format!(
                        "egress-policy: list {}: the list fetched by another worker is refused here ({reason}); the list in force stays",
                        config.name
                    ));
                }
            }
        }
    }

    /// Age of each list's last good fetch; absent until the first one.
    fn record_list_ages(&self, host: &impl RootHost) {
        let (Some(active), Some(now)) = (&self.active, host.now_micros()) else {
            return;
        };
        let Ok(remote) = active.remote.try_borrow() else {
            return;
        };
        for (index, _, _) in active.policy.providers() {
            if let (Some(entries), Some(names)) = (remote.get(index), active.metrics.list(index)) {
                let age = now.saturating_sub(entries.fetched_at_micros) / 1_000_000;
                host.set_gauge(&names.age_seconds, u64::try_from(age).unwrap_or(0));
            }
        }
    }

    /// A list server's answer (or its absence: `num_headers` 0 after a timeout or reset). The
    /// body is read only when it can be used: a 200 within `maxBytes`.
    pub fn on_http_call_response(
        &mut self,
        host: &impl RootHost,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) {
        let Some(active) = self.active.clone() else {
            return;
        };
        let Some(list) = self.fetcher.finish(token) else {
            return;
        };
        let Some((config, provider)) = active.policy.provider(list) else {
            return;
        };
        let failed = |reason: FetchError| FetchOutcome::Failed { list, reason };
        let status = if num_headers == 0 {
            None
        } else {
            host.http_call_response_status()
        };
        let outcome = match status.as_deref() {
            None => failed(FetchError::NoResponse),
            Some(b"200") if body_size > provider.max_bytes => failed(FetchError::TooLarge {
                bytes: body_size,
                max_bytes: provider.max_bytes,
                read: false,
            }),
            Some(b"200") => {
                let body = if body_size == 0 {
                    Some(Vec::new())
                } else {
                    host.http_call_response_body(body_size)
                };
                match body {
                    None => failed(FetchError::BodyUnreadable),
                    Some(body) => {
                        let now = host.now_micros().unwrap_or(0);
                        let outcome = provider
                            .parse(config.entry_type, &body)
                            .and_then(|index| put_in_force(&active, list, index, now));
                        match outcome {
                            Ok(entries) => {
                                self.fetcher.share(host, list, now, &body);
                                FetchOutcome::Updated { list, entries }
                            }
                            Err(reason) => failed(reason),
                        }
                    }
                }
            }
            Some(other) => failed(FetchError::Status(
                String::from_utf8_lossy(other).into_owned(),
            )),
        };
        report(host, &active, &outcome, &config.name);
    }
}

/// Makes `index` the remote entries of `list`; its number of entries.
fn put_in_force(
    active: &Active,
    list: usize,
    index: crate::core::policy::list::EntryIndex,
    fetched_at_micros: i64,
) -> Result<usize, FetchError> {
    let entries = index.len();
    let mut remote = active
        .remote
        .try_borrow_mut()
        .map_err(|_| FetchError::InUse)?;
    remote.set(
        list,
        RemoteEntries {
            index,
            fetched_at_micros,
        },
    );
    Ok(entries)
}

/// Logs and counts the outcome of a fetch.
fn report(host: &impl Host, active: &Active, outcome: &FetchOutcome, list_name: &str) {
    let list = match outcome {
        FetchOutcome::Updated { list, .. } | FetchOutcome::Failed { list, .. } => *list,
    };
    let names = active.metrics.list(list);
    match outcome {
        FetchOutcome::Updated { entries, .. } => {
            if let Some(names) = names {
                host.increment(&names.fetch_success);
                host.set_gauge(&names.entries, u64::try_from(*entries).unwrap_or(u64::MAX));
                host.set_gauge(&names.age_seconds, 0);
            }
        }
        FetchOutcome::Failed { reason, .. } => {
            if let Some(names) = names {
                host.increment(&names.fetch_failure);
            }
            let ttl = active
                .policy
                .provider(list)
                .map_or(0, |(_, p)| p.ttl_micros / 1_000);
            host.log_warning(&format!(
                "egress-policy: list {list_name}: fetch failed ({reason}); the last good list stays in force for up to {ttl}ms after it was fetched, then onError applies"
            ));
        }
    }
}

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
    Failed { list: usize, reason: FetchError },
}

/// Schedules and bookkeeping of the fetches of one configuration.
///
/// The VMs of one gateway share each list through three keys of the proxy's shared data, named
/// after what is fetched (cluster, authority, path, interval), so VMs of the same configuration,
/// before and after a reload, share them:
/// - `… lease`: when the list is next due (8 bytes, little endian). A VM whose own schedule says
///   the list is due fetches only if it moves the lease one interval on with a compare-and-swap,
///   so exactly one VM fetches per interval; the others wait for the lease.
/// - `… body`: the fetch time and the body of the newest good fetch.
/// - `… version`: that fetch time alone, read by every VM each tick; the body is read and parsed
///   only when it is newer than the list in force.
///
/// A failed fetch shares nothing: every VM keeps its last good list until its `ttl`, counted from
/// the fetch time, which is the same in every VM.
#[derive(Debug, Default)]
pub struct Fetcher {
    /// Next fetch time per list index (`None`: the list has no provider).
    next_micros: Vec<Option<i64>>,
    in_flight: Vec<InFlight>,
    /// The shared-data keys of each list with a provider.
    keys: Vec<Option<SharedKeys>>,
    /// Fetch time of the body in force per list (`i64::MIN`: none yet).
    in_force: Vec<i64>,
}

#[derive(Debug)]
struct SharedKeys {
    lease: String,
    version: String,
    body: String,
}

impl SharedKeys {
    fn of(provider: &Provider) -> Self {
        let base = format!(
            "egress_policy.list {} {}{} every {}us",
            provider.cluster, provider.authority, provider.path, provider.refresh_micros
        );
        SharedKeys {
            lease: format!("{base} lease"),
            version: format!("{base} version"),
            body: format!("{base} body"),
        }
    }
}

fn micros(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
}

impl Fetcher {
    /// Every list with a provider is due at once.
    pub fn new(policy: &Policy) -> Self {
        let mut next_micros = vec![None; policy.lists.len()];
        let mut keys: Vec<Option<SharedKeys>> = policy.lists.iter().map(|_| None).collect();
        for (index, _, provider) in policy.providers() {
            if let Some(slot) = next_micros.get_mut(index) {
                *slot = Some(i64::MIN);
            }
            if let Some(slot) = keys.get_mut(index) {
                *slot = Some(SharedKeys::of(provider));
            }
        }
        Fetcher {
            next_micros,
            in_flight: Vec::new(),
            keys,
            in_force: vec![i64::MIN; policy.lists.len()],
        }
    }

    /// Whether this VM fetches `list`, due by its own schedule at `now`: `None` when it took
    /// the lease (or the proxy shares nothing), else when the list is next due.
    fn claim(&self, host: &impl RootHost, list: usize, now: i64, refresh: i64) -> Option<i64> {
        let key = &self.keys.get(list)?.as_ref()?.lease;
        let (due, cas) = match host.shared_data(key) {
            Err(NoSharedData) => return None,
            Ok(None) => (None, 0),
            Ok(Some((value, cas))) => (micros(&value), cas),
        };
        if let Some(due) = due
            && due > now
        {
            return Some(due);
        }
        let next = now.saturating_add(refresh);
        match host.set_shared_data(key, &next.to_le_bytes(), cas) {
            Ok(true) | Err(NoSharedData) => None,
            Ok(false) => Some(next),
        }
    }

    fn reschedule(&mut self, list: usize, next_due: i64) {
        if let Some(Some(next)) = self.next_micros.get_mut(list) {
            *next = next_due;
        }
    }

    /// Offers a good fetch of `list` to the other VMs.
    fn share(&mut self, host: &impl RootHost, list: usize, fetched_at: i64, body: &[u8]) {
        self.adopted(list, fetched_at);
        let Some(Some(keys)) = self.keys.get(list) else {
            return;
        };
        let mut record = Vec::with_capacity(8 + body.len());
        record.extend_from_slice(&fetched_at.to_le_bytes());
        record.extend_from_slice(body);
        // The body before its version: a VM that sees the version finds that body or a newer one.
        if host.set_shared_data(&keys.body, &record, 0) == Ok(true) {
            let _ = host.set_shared_data(&keys.version, &fetched_at.to_le_bytes(), 0);
        }
    }

    /// The shared body of `list` and its fetch time, if it is newer than the one in force here.
    fn newer_shared_body(&self, host: &impl RootHost, list: usize) -> Option<(i64, Vec<u8>)> {
        let keys = self.keys.get(list)?.as_ref()?;
        let in_force = self.in_force.get(list).copied().unwrap_or(i64::MIN);
        let (version, _) = host.shared_data(&keys.version).ok()??;
        if micros(&version)? <= in_force {
            return None;
        }
        let (mut record, _) = host.shared_data(&keys.body).ok()??;
        let fetched_at = micros(&record)?;
        if fetched_at <= in_force {
            return None;
        }
        record.drain(..8);
        Some((fetched_at, record))
    }

    /// Records the fetch time of the body now in force (or refused) for `list`.
    fn adopted(&mut self, list: usize, fetched_at: i64) {
        if let Some(slot) = self.in_force.get_mut(list) {
            *slot = (*slot).max(fetched_at);
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

    /// The list a fetch was for, once its answer arrived; `None` for a token that is not ours.
    pub fn finish(&mut self, token: u32) -> Option<usize> {
        let position = self.in_flight.iter().position(|f| f.token == token)?;
        Some(self.in_flight.swap_remove(position).list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FAKE_NOW_MICROS, FakeHost, request_with_path};

    const SECOND: i64 = 1_000_000;

    fn policy(provider_extra: &str) -> Policy {
        Policy::from_json(
            format!(
                r#"{{"lists": {{"paths": {{"value": "request.url_path", "entries": ["/health"],
                  "provider": {{"cluster": "lists", "path": "/paths", "refreshInterval": "1s", "ttl": "3s",
                                "maxBytes": 64 {provider_extra}}}}}}},
                 "rules": [{{"name": "check", "check": ["paths"]}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    /// A refresher configured at time 0, its first fetch sent.
    fn started(provider_extra: &str) -> (ListRefresher, FakeHost) {
        let host = FakeHost::default();
        host.now.set(0);
        let mut lists = ListRefresher::default();
        assert_eq!(lists.configure(&host, policy(provider_extra)), 200_000);
        (lists, host)
    }

    fn allowed(lists: &ListRefresher, path: &str, now: i64) -> bool {
        let active = lists.active().unwrap();
        let mut request = request_with_path(path);
        request.time_micros = Some(now);
        let remote = active.remote.borrow();
        active
            .policy
            .evaluate_with(&request, &remote)
            .denied
            .is_none()
    }

    /// Delivers the list server's answer to the newest call.
    fn answer(lists: &mut ListRefresher, host: &mut FakeHost, status: Option<&[u8]>, body: &[u8]) {
        host.call_status = status.map(<[u8]>::to_vec);
        host.call_body = body.to_vec();
        let token = u32::try_from(host.calls.borrow().len()).unwrap();
        let headers = if status.is_some() { 3 } else { 0 };
        lists.on_http_call_response(host, token, headers, body.len());
    }

    fn fetches(host: &FakeHost, result: &str) -> usize {
        let name = format!("egress_policy.list=.=paths;.;result=.={result};.;list_fetches");
        host.counters
            .borrow()
            .iter()
            .filter(|c| **c == name)
            .count()
    }

    #[test]
    fn lists_are_fetched_at_start_and_every_refresh_interval() {
        let (mut lists, mut host) = started("");
        assert_eq!(
            *host.calls.borrow(),
            [("lists".to_owned(), "/paths".to_owned(), 5_000)]
        );
        host.now.set(2 * SECOND);
        lists.on_tick(&host);
        assert_eq!(host.calls.borrow().len(), 1, "one fetch at a time");
        answer(&mut lists, &mut host, Some(b"200"), b"/sport\n");
        lists.on_tick(&host);
        assert_eq!(host.calls.borrow().len(), 2, "due since 1s, sent once free");
        answer(&mut lists, &mut host, Some(b"200"), b"/sport\n");
        host.now.set(3 * SECOND - 1);
        lists.on_tick(&host);
        assert_eq!(
            host.calls.borrow().len(),
            2,
            "next one refreshInterval later"
        );
        host.now.set(3 * SECOND);
        lists.on_tick(&host);
        assert_eq!(host.calls.borrow().len(), 3);
    }

    #[test]
    fn the_last_good_list_serves_until_ttl_then_on_error_denies() {
        let (mut lists, mut host) = started("");
        assert!(
            !allowed(&lists, "/sport", 0),
            "before the first fetch: onError deny"
        );
        assert!(allowed(&lists, "/health", 0), "static entries always apply");
        answer(&mut lists, &mut host, Some(b"200"), b"/sport\n/news\n");
        assert_eq!(fetches(&host, "success"), 1);
        assert_eq!(
            host.gauges.borrow()["egress_policy.list=.=paths;.;list_entries"],
            2
        );
        assert!(allowed(&lists, "/sport", 1));
        assert!(!allowed(&lists, "/politics", 1));

        host.now.set(SECOND);
        lists.on_tick(&host);
        answer(&mut lists, &mut host, Some(b"503"), b"");
        assert_eq!(fetches(&host, "failure"), 1);
        assert!(host.warnings.borrow()[0].contains("fetch failed (status 503)"));
        assert!(
            allowed(&lists, "/sport", 3 * SECOND),
            "stale but within ttl"
        );
        assert!(
            !allowed(&lists, "/sport", 3 * SECOND + 1),
            "past ttl: onError deny"
        );
        assert!(allowed(&lists, "/health", 3 * SECOND + 1));
    }

    /// Every failure a list server can produce leaves the list in force untouched, is counted
    /// and logged with its reason, and never reads a body it cannot use.
    #[test]
    fn every_list_server_failure_is_a_failed_fetch_that_changes_nothing() {
        // (what, :status, body, the reason logged)
        type Case<'a> = (&'a str, Option<&'a [u8]>, &'a [u8], &'a str);
        let cases: [Case; 8] = [
            (
                "oversized",
                Some(b"200"),
                &[b'a'; 65],
                "over maxBytes 64; not read",
            ),
            ("stalled body (timeout)", None, b"", "no response"),
            ("connection closed mid-body", None, b"/spo", "no response"),
            (
                "hang (Envoy's own 504 at the timeout)",
                Some(b"504"),
                b"",
                "status 504",
            ),
            ("empty 200", Some(b"200"), b"", "no entries"),
            ("comments only", Some(b"200"), b"# nothing\n", "no entries"),
            ("500", Some(b"500"), b"/politics\n", "status 500"),
            (
                "bad entry",
                Some(b"200"),
                b"[\"/politics\", 1]",
                "JSON array of strings",
            ),
        ];
        for (what, status, body, reason) in cases {
            let (mut lists, mut host) = started("");
            answer(&mut lists, &mut host, Some(b"200"), b"/sport\n");
            host.now.set(SECOND);
            lists.on_tick(&host);
            host.body_reads.borrow_mut().clear();
            answer(&mut lists, &mut host, status, body);
            assert_eq!(fetches(&host, "failure"), 1, "{what}");
            let warning = host.warnings.borrow().last().cloned().unwrap_or_default();
            assert!(warning.contains(reason), "{what}: {warning}");
            assert!(
                allowed(&lists, "/sport", SECOND),
                "{what}: the list in force stays"
            );
            assert!(!allowed(&lists, "/politics", SECOND), "{what}");
            if status != Some(b"200") || body.len() > 64 {
                assert!(host.body_reads.borrow().is_empty(), "{what}: body read");
            }
        }
    }

    #[test]
    fn an_empty_list_replaces_the_list_in_force_only_when_allowed() {
        let (mut lists, mut host) = started(r#", "allowEmpty": true"#);
        answer(&mut lists, &mut host, Some(b"200"), b"/sport\n");
        host.now.set(SECOND);
        lists.on_tick(&host);
        answer(&mut lists, &mut host, Some(b"200"), b"");
        assert_eq!(fetches(&host, "success"), 2);
        assert!(!allowed(&lists, "/sport", SECOND));
        assert!(allowed(&lists, "/health", SECOND));
    }

    #[test]
    fn answers_to_unknown_calls_and_undispatchable_fetches_are_handled() {
        let (mut lists, mut host) = started("");
        host.call_status = Some(b"200".to_vec());
        host.call_body = b"/politics\n".to_vec();
        lists.on_http_call_response(&host, 99, 3, 10);
        assert!(host.counters.borrow().is_empty(), "not ours: ignored");
        assert!(!allowed(&lists, "/politics", 0));

        host.dispatch_error = Some("BadArgument".into());
        answer(&mut lists, &mut host, Some(b"200"), b"/sport\n");
        host.now.set(SECOND);
        lists.on_tick(&host);
        assert_eq!(fetches(&host, "failure"), 1);
        assert!(host.warnings.borrow()[0].contains("cannot call cluster lists: BadArgument"));
    }

    /// Three VMs of one gateway (two workers and the main thread), configured at time 0.
    fn gateway_of_three_vms() -> Vec<(ListRefresher, FakeHost)> {
        let store = Rc::default();
        (0..3)
            .map(|_| {
                let mut host = FakeHost::default();
                host.shared = Rc::clone(&store);
                host.now.set(0);
                let mut lists = ListRefresher::default();
                lists.configure(&host, policy(""));
                (lists, host)
            })
            .collect()
    }

    fn calls(vms: &[(ListRefresher, FakeHost)]) -> usize {
        vms.iter().map(|(_, host)| host.calls.borrow().len()).sum()
    }

    #[test]
    fn a_gateway_fetches_each_list_once_per_interval_and_every_vm_decides_with_it() {
        let mut vms = gateway_of_three_vms();
        assert_eq!(calls(&vms), 1, "one VM took the lease");
        let (lists, host) = &mut vms[0];
        answer(lists, host, Some(b"200"), b"/sport\n");
        for (lists, host) in &mut vms {
            lists.on_tick(host);
            assert!(allowed(lists, "/sport", 1), "in force in every VM");
        }
        assert_eq!(calls(&vms), 1);
        for round in 1..=5 {
            let before: Vec<usize> = vms.iter().map(|(_, h)| h.calls.borrow().len()).collect();
            for (lists, host) in &mut vms {
                host.now.set(round * SECOND);
                lists.on_tick(host);
            }
            let fetching: Vec<usize> = (0..vms.len())
                .filter(|&vm| vms[vm].1.calls.borrow().len() > before[vm])
                .collect();
            assert_eq!(fetching.len(), 1, "round {round}: one fetch");
            let (lists, host) = &mut vms[fetching[0]];
            host.now.set(round * SECOND + 5);
            answer(lists, host, Some(b"200"), b"/sport\n/news\n");
        }
        assert_eq!(calls(&vms), 6);
        for (lists, host) in &mut vms {
            lists.on_tick(host);
            assert!(allowed(lists, "/news", 5 * SECOND + 6));
            assert!(!allowed(lists, "/politics", 5 * SECOND + 6));
        }
    }

    #[test]
    fn every_vm_expires_a_shared_list_at_the_same_time() {
        let mut vms = gateway_of_three_vms();
        let (lists, host) = &mut vms[0];
        answer(lists, host, Some(b"200"), b"/sport\n");
        for (lists, host) in &mut vms {
            host.now.set(SECOND / 2);
            lists.on_tick(host);
            assert!(
                allowed(lists, "/sport", 3 * SECOND),
                "ttl counts from the fetch"
            );
            assert!(!allowed(lists, "/sport", 3 * SECOND + 1), "in every VM");
        }
    }

    #[test]
    fn another_vm_fetches_when_the_fetching_one_never_answers() {
        let mut vms = gateway_of_three_vms();
        // VM 0 took the lease, and its answer never comes (its VM was reloaded).
        let (lists, host) = &mut vms[1];
        host.now.set(SECOND - 1);
        lists.on_tick(host);
        assert_eq!(calls(&vms), 1, "the lease holds until the interval ends");
        let (lists, host) = &mut vms[1];
        host.now.set(SECOND);
        lists.on_tick(host);
        assert_eq!(host.calls.borrow().len(), 1, "then another VM fetches");
        answer(lists, host, Some(b"200"), b"/sport\n");
        let (lists, host) = &mut vms[2];
        lists.on_tick(host);
        assert!(allowed(lists, "/sport", SECOND));
    }

    #[test]
    fn a_failed_fetch_is_counted_once_and_every_vm_keeps_its_list() {
        let mut vms = gateway_of_three_vms();
        let (lists, host) = &mut vms[0];
        answer(lists, host, Some(b"200"), b"/sport\n");
        host.now.set(SECOND);
        lists.on_tick(host);
        answer(lists, host, Some(b"500"), b"");
        assert_eq!(fetches(host, "failure"), 1);
        for (lists, host) in &mut vms {
            host.now.set(SECOND + 1);
            lists.on_tick(host);
            assert!(allowed(lists, "/sport", SECOND + 1));
        }
        assert_eq!(calls(&vms), 2, "nobody fetched again within the interval");
    }

    #[test]
    fn a_reloaded_configuration_starts_with_the_list_already_fetched() {
        let (mut lists, mut host) = started("");
        answer(&mut lists, &mut host, Some(b"200"), b"/sport\n");
        host.now.set(SECOND / 2);
        lists.configure(&host, policy(""));
        assert!(allowed(&lists, "/sport", SECOND / 2), "no onError window");
        assert_eq!(
            host.calls.borrow().len(),
            1,
            "and no fetch before it is due"
        );
    }

    /// Whatever another module (or a broken one) left under the keys, a VM fetches and decides
    /// as if nothing were shared: short values, a version without a body, a body without its time.
    #[test]
    fn garbage_in_shared_data_is_ignored_and_the_list_is_fetched() {
        let host = FakeHost::default();
        let keys = SharedKeys::of(policy("").provider(0).unwrap().1);
        for (key, value) in [
            (&keys.lease, &b"\x01"[..]),
            (&keys.version, &i64::MAX.to_le_bytes()[..]),
            (&keys.body, &b"1234"[..]),
        ] {
            host.set_shared_data(key, value, 0).unwrap();
        }
        let mut lists = ListRefresher::default();
        lists.configure(&host, policy(""));
        assert_eq!(host.calls.borrow().len(), 1, "fetched");
        assert!(
            !allowed(&lists, "/sport", FAKE_NOW_MICROS),
            "nothing adopted"
        );
        let mut host = host;
        answer(&mut lists, &mut host, Some(b"200"), b"/sport\n");
        assert!(allowed(&lists, "/sport", FAKE_NOW_MICROS));
    }

    #[test]
    fn without_shared_data_every_vm_fetches_for_itself() {
        let store: Rc<RefCell<crate::testing::SharedStore>> = Rc::default();
        store.borrow_mut().unavailable = true;
        for _ in 0..2 {
            let mut host = FakeHost::default();
            host.shared = Rc::clone(&store);
            let mut lists = ListRefresher::default();
            lists.configure(&host, policy(""));
            assert_eq!(host.calls.borrow().len(), 1);
        }
    }

    #[test]
    fn a_shared_list_this_configuration_refuses_is_logged_and_changes_nothing() {
        let mut vms = gateway_of_three_vms();
        let (lists, host) = &mut vms[0];
        answer(lists, host, Some(b"200"), b"/sport\n");
        // VM 2 runs another configuration with the same provider and a smaller maxBytes.
        let (lists, host) = &mut vms[2];
        let small = Policy::from_json(
            br#"{"lists": {"paths": {"value": "request.url_path", "entries": ["/health"],
                 "provider": {"cluster": "lists", "path": "/paths", "refreshInterval": "1s", "ttl": "3s",
                              "maxBytes": 3}}},
               "rules": [{"name": "check", "check": ["paths"]}]}"#,
        )
        .unwrap();
        lists.configure(host, small);
        assert!(!allowed(lists, "/sport", 1));
        assert!(host.warnings.borrow()[0].contains("fetched by another worker is refused here"));
    }

    #[test]
    fn list_ages_are_reported_each_tick_after_the_first_good_fetch() {
        let (mut lists, mut host) = started("");
        lists.on_tick(&host);
        assert!(
            !host
                .gauges
                .borrow()
                .contains_key("egress_policy.list=.=paths;.;list_age_seconds")
        );
        answer(&mut lists, &mut host, Some(b"200"), b"/sport\n");
        host.now.set(2 * SECOND + 10);
        lists.on_tick(&host);
        assert_eq!(
            host.gauges.borrow()["egress_policy.list=.=paths;.;list_age_seconds"],
            2
        );
    }
}
