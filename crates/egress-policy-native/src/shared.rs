//! One compiled configuration per gateway: the HTTP and the network filter carry the same
//! plugin configuration (envoy/gateway.yaml loads it into both), and each worker of each filter
//! reads the same [`Loaded`] through an `Arc`. One policy, one metric-label table, and one copy
//! of every remote list's index, whatever the number of workers and filters.

use std::sync::{Arc, Mutex, Weak};

use egress_policy_core::policy::Policy;
use egress_policy_core::refresh::{Loaded, Refresher};

/// One compiled configuration, and the one refresher of its remote lists.
#[derive(Debug)]
pub struct Compiled {
    pub loaded: Loaded,
    lists: Mutex<Lists>,
}

#[derive(Debug)]
struct Lists {
    refresher: Refresher,
    /// The filter configuration whose timer and call-outs drive the refresher (Envoy makes one
    /// per listener that uses the filter): one at a time, so that one fetch is made per
    /// interval, and each answer comes back to the configuration that asked.
    driver: Option<usize>,
}

impl Compiled {
    /// Runs `work` with the refresher if `driver` drives it, or takes it over because none
    /// does; nothing when another configuration drives it.
    pub fn drive(&self, driver: usize, work: impl FnOnce(&mut Refresher, &Loaded)) {
        let Ok(mut lists) = self.lists.lock() else {
            return;
        };
        if lists.driver.is_some_and(|current| current != driver) {
            return;
        }
        lists.driver = Some(driver);
        work(&mut lists.refresher, &self.loaded);
    }

    /// `driver` is going: the next configuration whose timer fires takes over.
    pub fn release(&self, driver: usize) {
        if let Ok(mut lists) = self.lists.lock()
            && lists.driver == Some(driver)
        {
            lists.driver = None;
        }
    }
}

/// The configurations alive, by their exact JSON. Weak: a configuration goes when the last
/// filter configuration using it does.
static COMPILED: Mutex<Vec<(Vec<u8>, Weak<Compiled>)>> = Mutex::new(Vec::new());

/// The compiled configuration of `json`, compiled now unless a filter of this gateway already
/// did; errors name what is wrong.
pub fn compiled(json: &[u8]) -> Result<Arc<Compiled>, Vec<String>> {
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
    let unavailable = crate::filter::unavailable(&policy);
    if !unavailable.is_empty() {
        return Err(unavailable);
    }
    let refresher = Refresher::new(&policy);
    let loaded = Arc::new(Compiled {
        loaded: Loaded::new(policy),
        lists: Mutex::new(Lists {
            refresher,
            driver: None,
        }),
    });
    compiled.push((json.to_vec(), Arc::downgrade(&loaded)));
    Ok(loaded)
}
