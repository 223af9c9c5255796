//! The configuration loader: any bytes as the plugin configuration. It loads or says what is
//! wrong; a configuration that loads decides a request.
#![no_main]

use egress_policy_core::policy::Policy;
use egress_policy_core::policy::provider::RemoteLists;
use egress_policy_core::request::RequestFacts;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    match Policy::from_json(bytes) {
        Ok(policy) => {
            let _ = policy.decide(&RequestFacts::default(), &RemoteLists::default());
        }
        Err(errors) => assert!(!errors.to_string().is_empty()),
    }
});
