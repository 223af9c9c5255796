//! A whole request as the proxy hands it over, decided by the list policy of
//! `envoy/examples/s4-exemption.json`: the header map as proxy-wasm serializes it, decoded by
//! the wasm adapter (first byte odd), or headers as `name\0value\n` lines. Every header the
//! policy reads comes from an attacker.
#![no_main]

use std::sync::OnceLock;

use egress_policy_core::headers::Headers;
use egress_policy_core::policy::Policy;
use egress_policy_core::policy::provider::RemoteLists;
use egress_policy_core::request::RequestFacts;
use libfuzzer_sys::fuzz_target;

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        Policy::from_json(include_bytes!("../../envoy/examples/s4-exemption.json")).unwrap()
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, bytes)) = input.split_first() else {
        return;
    };
    if mode % 2 == 1 {
        let facts = RequestFacts {
            headers: egress_policy::adapter::header_map::decode(bytes.to_vec()),
            ..RequestFacts::default()
        };
        let _ = policy().decide(&facts, &RemoteLists::default());
        return;
    }
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = bytes
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let at = line.iter().position(|&b| b == 0)?;
            Some((line[..at].to_vec(), line[at + 1..].to_vec()))
        })
        .collect();
    let facts = RequestFacts {
        headers: Headers::from_pairs(&pairs),
        ..RequestFacts::default()
    };
    let _ = policy().decide(&facts, &RemoteLists::default());
});
