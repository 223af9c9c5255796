//! What the core's state machines (the list [`crate::refresh::Refresher`]) ask of every host:
//! a clock, the proxy's log, and metrics. A host error is an absent value; the caller fails
//! closed.

use crate::telemetry::metrics::{CounterEvent, GaugeEvent};

pub trait Host {
    /// Current time in microseconds since the Unix epoch.
    fn now_micros(&self) -> Option<i64>;
    /// Reports a problem of the filter itself in the proxy's log.
    fn log_warning(&self, message: &str);
    /// Adds one to a counter.
    fn increment(&self, event: &CounterEvent<'_>);
    /// Sets a gauge.
    fn set_gauge(&self, event: &GaugeEvent<'_>);
}
