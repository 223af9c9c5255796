//! One compiled configuration per gateway: the HTTP and the network filter carry the same
//! plugin configuration (envoy/gateway.yaml loads it into both), and each worker of each filter
//! reads the same [`Loaded`] through an `Arc`. One policy, one metric-label table, and one copy
//! of every remote list's index, whatever the number of workers and filters.

use std::sync::{Arc, Mutex, Weak};

use egress_policy_core::config::fingerprint;
use egress_policy_core::policy::Policy;
use egress_policy_core::refresh::Loaded;

/// The configurations alive, by their exact JSON. Weak: a configuration goes when the last
/// filter configuration using it does.
static COMPILED: Mutex<Vec<(Vec<u8>, Weak<Loaded>)>> = Mutex::new(Vec::new());

/// The compiled configuration of `json`, compiled now unless a filter of this gateway already
/// did; errors name what is wrong.
pub fn loaded(json: &[u8]) -> Result<Arc<Loaded>, Vec<String>> {
    let mut compiled = COMPILED.lock().map_err(|_| {
        vec!["the module's configuration registry is unusable after a panic".to_owned()]
    })?;
    compiled.retain(|(_, loaded)| loaded.strong_count() > 0);
    if let Some(loaded) = compiled
        .iter()
        .find(|(bytes, _)| bytes.as_slice() == json)
        .and_then(|(_, loaded)| loaded.upgrade())
    {
        return Ok(loaded);
    }
    let policy = Policy::from_json(json)
        .map_err(|errors| errors.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let loaded = Arc::new(Loaded::new(policy));
    compiled.push((json.to_vec(), Arc::downgrade(&loaded)));
    Ok(loaded)
}

/// The fingerprint `scripts/reload` compares (`egress_policy_config_fingerprint`).
pub fn fingerprint_of(json: &[u8]) -> u32 {
    fingerprint(json)
}
