//! The remote lists' refresher: when each list is due, which fetch an answer belongs to, what
//! an answer does to the list in force, and the counters, gauges and warnings that report it.
//! A state machine without a host: each adapter drives it with its own clock, HTTP client and
//! shared storage ([`ListHost`]), and its timer and callbacks ([`Refresher::on_tick`],
//! [`Refresher::on_response`]). Every answer a list server can give (oversized, stalled, empty,
//! cut off, an error status, none at all) is tested through a fake host.
//!
//! A gateway fetches each list once per interval, whatever its number of workers: the workers
//! share the fetch through the host's shared storage (see [`Fetcher`]), so the list server sees
//! one request per interval and every worker decides with the same version.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::host::Host;
use crate::policy::list::EntryIndex;
use crate::policy::provider::{FetchError, Provider, RemoteEntries, RemoteLists};
use crate::policy::{List, Policy};
use crate::telemetry::log_entry::LogTemplate;
use crate::telemetry::metrics::{Gauge, Metrics};

/// What refreshing lists needs from the host, beyond [`Host`].
pub trait ListHost: Host {
    /// Sends the provider's `GET` ([`Provider::request_headers`]) to its cluster, with its
    /// timeout; the call's token, or why it was not sent.
    fn dispatch_http_call(&self, provider: &Provider) -> Result<u32, String>;
    /// `:status` of the call response being delivered; `None` when it has none (the call
    /// failed: timeout, reset, no healthy upstream).
    fn http_call_response_status(&self) -> Option<Vec<u8>>;
    /// The first `size` bytes of that response's body.
    fn http_call_response_body(&self, size: usize) -> Option<Vec<u8>>;
    /// A value of the store the host shares between the workers of one gateway, with its
    /// version for [`ListHost::set_shared_data`]; `Ok(None)` when the key is absent.
    fn shared_data(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, NoSharedData>;
    /// Sets a shared value if its version is still `cas` (0: whatever it is); `Ok(false)` when
    /// another worker changed it first.
    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<bool, NoSharedData>;
}

/// The host refused a shared-storage call: each worker then fetches its lists on its own, as if
/// it were alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoSharedData;

/// A loaded configuration: what every worker reads to decide, and the remote list entries
/// fetched for it, replaced whole ([`ArcSwap`]) so that any number of threads read them while
/// one fetches.
#[derive(Debug)]
pub struct Loaded {
    pub policy: Policy,
    pub metrics: Metrics,
    /// The log entries' constant parts.
    pub log: LogTemplate,
    pub remote: ArcSwap<RemoteLists>,
}

impl Loaded {
    pub fn new(policy: Policy) -> Self {
        Loaded {
            metrics: Metrics::compile(&policy),
            log: LogTemplate::compile(&policy),
            remote: ArcSwap::from_pointee(RemoteLists::for_policy(&policy)),
            policy,
        }
    }
}

/// The refresher of one configuration's lists.
#[derive(Debug, Default)]
pub struct Refresher {
    fetcher: Fetcher,
}

impl Refresher {
    pub fn new(policy: &Policy) -> Self {
        Refresher {
            fetcher: Fetcher::new(policy),
        }
    }

    /// Puts in force what another worker (or this one, under the previous configuration)
    /// already fetched, then fetches what is due: every list, at first.
    pub fn start(&mut self, host: &impl ListHost, loaded: &Loaded) {
        self.adopt_shared_lists(host, loaded);
        self.fetch_due_lists(host, loaded);
    }

    /// The host's timer: at least every [`Fetcher::tick_micros`].
    pub fn on_tick(&mut self, host: &impl ListHost, loaded: &Loaded) {
        self.adopt_shared_lists(host, loaded);
        self.fetch_due_lists(host, loaded);
        record_list_ages(host, loaded);
    }

    fn fetch_due_lists(&mut self, host: &impl ListHost, loaded: &Loaded) {
        let Some(now) = host.now_micros() else {
            return;
        };
        for list in self.fetcher.due(&loaded.policy, now) {
            let Some((config, provider)) = loaded.policy.provider(list) else {
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
                    loaded,
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

    /// Puts in force every list a worker of this gateway fetched since this one last looked:
    /// one small read per list and tick, the body only when its version is new.
    fn adopt_shared_lists(&mut self, host: &impl ListHost, loaded: &Loaded) {
        for (list, config, provider) in loaded.policy.providers() {
            let Some((fetched_at, body)) = self.fetcher.newer_shared_body(host, list) else {
                continue;
            };
            let outcome = provider
                .parse(config.entry_type, &body)
                .and_then(|index| put_in_force(loaded, list, index, fetched_at, &body));
            // Refused or not, this version is not looked at again: the next fetch brings a new one.
            self.fetcher.adopted(list, fetched_at);
            match outcome {
                Ok(entries) => {
                    let entries = u64::try_from(entries).unwrap_or(u64::MAX);
                    host.set_gauge(&loaded.metrics.list_gauge(Gauge::ListEntries, list, entries));
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

    /// A list server's answer (or its absence: `num_headers` 0 after a timeout or reset). The
    /// body is read only when it can be used: a 200 within `maxBytes`.
    pub fn on_response(
        &mut self,
        host: &impl ListHost,
        loaded: &Loaded,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) {
        let Some(list) = self.fetcher.finish(token) else {
            return;
        };
        let Some((config, provider)) = loaded.policy.provider(list) else {
            return;
        };
        let status = if num_headers == 0 {
            None
        } else {
            host.http_call_response_status()
        };
        let outcome = match status.as_deref() {
            None => Err(FetchError::NoResponse),
            Some(b"200") if body_size > provider.max_bytes => Err(FetchError::TooLarge {
                bytes: body_size,
                max_bytes: provider.max_bytes,
                read: false,
            }),
            Some(b"200") => self.take_body(host, loaded, (list, config, provider), body_size),
            Some(other) => Err(FetchError::Status(
                String::from_utf8_lossy(other).into_owned(),
            )),
        };
        let outcome = match outcome {
            Ok(entries) => FetchOutcome::Updated { list, entries },
            Err(reason) => FetchOutcome::Failed { list, reason },
        };
        report(host, loaded, &outcome, &config.name);
    }

    /// Reads, parses and puts in force the body of a good answer, and shares it with the other
    /// workers; its number of entries.
    fn take_body(
        &mut self,
        host: &impl ListHost,
        loaded: &Loaded,
        (list, config, provider): (usize, &List, &Provider),
        body_size: usize,
    ) -> Result<usize, FetchError> {
        let body = if body_size == 0 {
            Vec::new()
        } else {
            host.http_call_response_body(body_size)
                .ok_or(FetchError::BodyUnreadable)?
        };
        let now = host.now_micros().unwrap_or(0);
        let entries = provider
            .parse(config.entry_type, &body)
            .and_then(|index| put_in_force(loaded, list, index, now, &body))?;
        self.fetcher.share(host, list, now, &body);
        Ok(entries)
    }
}

/// Age of each list's last good fetch; absent until the first one.
fn record_list_ages(host: &impl ListHost, loaded: &Loaded) {
    let Some(now) = host.now_micros() else {
        return;
    };
    let remote = loaded.remote.load();
    for (index, _, _) in loaded.policy.providers() {
        if let Some(entries) = remote.get(index) {
            let age = now.saturating_sub(entries.fetched_at_micros) / 1_000_000;
            let age = u64::try_from(age).unwrap_or(0);
            host.set_gauge(&loaded.metrics.list_gauge(Gauge::ListAgeSeconds, index, age));
        }
    }
}

/// Makes `index` the remote entries of `list`; its number of entries. The lists are replaced
/// whole: a worker deciding right now keeps the ones it loaded.
fn put_in_force(
    loaded: &Loaded,
    list: usize,
    index: EntryIndex,
    fetched_at_micros: i64,
    body: &[u8],
) -> Result<usize, FetchError> {
    let entries = index.len();
    let mut remote = RemoteLists::clone(&loaded.remote.load());
    remote.set(
        list,
        RemoteEntries {
            index,
            fetched_at_micros,
            version: crate::evidence::content_version(body),
        },
    );
    remote.describe(&loaded.policy);
    loaded.remote.store(Arc::new(remote));
    Ok(entries)
}

/// Logs and counts the outcome of a fetch.
fn report(host: &impl Host, loaded: &Loaded, outcome: &FetchOutcome, list_name: &str) {
    let list = match outcome {
        FetchOutcome::Updated { list, .. } | FetchOutcome::Failed { list, .. } => *list,
    };
    let metrics = &loaded.metrics;
    if let Some((_, provider)) = loaded.policy.provider(list) {
        let ttl = u64::try_from(provider.ttl_micros / 1_000_000).unwrap_or(0);
        host.set_gauge(&metrics.list_gauge(Gauge::ListTtlSeconds, list, ttl));
    }
    match outcome {
        FetchOutcome::Updated { entries, .. } => {
            let entries = u64::try_from(*entries).unwrap_or(u64::MAX);
            host.increment(&metrics.list_fetch(list, true));
            host.set_gauge(&metrics.list_gauge(Gauge::ListEntries, list, entries));
            host.set_gauge(&metrics.list_gauge(Gauge::ListAgeSeconds, list, 0));
        }
        FetchOutcome::Failed { reason, .. } => {
            host.increment(&metrics.list_fetch(list, false));
            let ttl = loaded
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

/// The shared-storage keys of one list (see [`Fetcher`]).
#[derive(Debug)]
pub struct SharedKeys {
    pub lease: String,
    pub version: String,
    pub body: String,
}

impl SharedKeys {
    pub fn of(provider: &Provider) -> Self {
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
    fn claim(&self, host: &impl ListHost, list: usize, now: i64, refresh: i64) -> Option<i64> {
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
    fn share(&mut self, host: &impl ListHost, list: usize, fetched_at: i64, body: &[u8]) {
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
    fn newer_shared_body(&self, host: &impl ListHost, list: usize) -> Option<(i64, Vec<u8>)> {
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
