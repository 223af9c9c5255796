//! The root context's work: the configuration in force, and the core's list
//! [`Refresher`] driven by the proxy's timer and call-outs. Every answer a list server can give is
//! tested here natively with a fake host, through the same calls the wasm adapter makes.

use std::ops::Deref;
use std::rc::Rc;

use super::PropertyReads;
use crate::core::attributes::Attr;
use crate::core::policy::Policy;
use crate::core::refresh::{Fetcher, Loaded, Refresher};

use super::ListHost;

pub use crate::core::refresh::NoSharedData;

/// A loaded configuration (the core's [`Loaded`]: policy, metrics' labels, log template, remote
/// lists), with where this proxy reads what it needs from a request: shared by the root context
/// (which fetches) and the HTTP and network contexts (which decide) of one VM.
#[derive(Debug)]
pub struct Active {
    pub loaded: Loaded,
    /// Where to read what the policy and the metrics' labels use from a request, and nothing
    /// more, resolved once from the attribute table.
    pub reads: PropertyReads,
    /// The same for a connection, which is always decided on its SNI and port.
    pub connection_reads: PropertyReads,
}

impl Active {
    pub fn new(policy: Policy) -> Self {
        let loaded = Loaded::new(policy);
        let mut needs = loaded.policy.reads.clone();
        needs.merge(&loaded.metrics.reads);
        let reads = PropertyReads::new(&needs);
        needs.add(Attr::ConnectionRequestedServerName);
        needs.add(Attr::DestinationPort);
        let connection_reads = PropertyReads::new(&needs);
        Active {
            loaded,
            reads,
            connection_reads,
        }
    }
}

impl Deref for Active {
    type Target = Loaded;

    fn deref(&self) -> &Loaded {
        &self.loaded
    }
}

/// One VM's configuration and its remote lists. Each Envoy worker has its own VM (and the main
/// thread one more); the core's [`Refresher`] shares each fetch between them through the
/// proxy's shared data.
#[derive(Debug, Default)]
pub struct ListRefresher {
    active: Option<Rc<Active>>,
    refresher: Refresher,
}

/// The timer period without lists: how often batched counters reach the proxy.
pub const FLUSH_MICROS: i64 = 200_000;

impl ListRefresher {
    /// Puts a compiled configuration in force; returns the timer period it needs, in
    /// microseconds. Lists are fetched at once.
    pub fn configure(&mut self, host: &impl ListHost, policy: Policy) -> i64 {
        self.refresher = Refresher::new(&policy);
        let tick = Fetcher::tick_micros(&policy).map_or(FLUSH_MICROS, |t| t.min(FLUSH_MICROS));
        let active = Rc::new(Active::new(policy));
        self.refresher.start(host, &active);
        self.active = Some(active);
        tick
    }

    /// The configuration in force, for new HTTP contexts.
    pub fn active(&self) -> Option<Rc<Active>> {
        self.active.clone()
    }

    pub fn on_tick(&mut self, host: &impl ListHost) {
        if let Some(active) = &self.active {
            self.refresher.on_tick(host, active);
        }
    }

    /// A list server's answer (or its absence: `num_headers` 0 after a timeout or reset).
    pub fn on_http_call_response(
        &mut self,
        host: &impl ListHost,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) {
        if let Some(active) = &self.active {
            self.refresher
                .on_response(host, active, token, num_headers, body_size);
        }
    }
}
