//! `egress-policy address-filter`: the SSRF guard's ranges for Envoy's DNS cache
//! (`DnsCacheConfig.resolved_address_filter.ranges`), computed from the policy's `addressGuard`
//! by the same rules the filter checks literal hosts with, so that Envoy drops, at connect time,
//! exactly the addresses the guard refuses (README: Security).

use std::io::Write;
use std::process::ExitCode;

use egress_policy_core::addresses::{AddressGuard, Network};
use serde_json::json;

use crate::EXIT_INVALID;
use crate::load::load;

#[derive(clap::Args)]
pub struct Args {
    /// Plugin configuration (JSON, YAML, WasmPlugin manifest; '-' is standard input); without
    /// one, the default guard (the ranges every policy refuses).
    #[arg(value_name = "CONFIG")]
    config: Option<String>,
    /// One more exception of this deployment (CIDR or address), repeatable: `scripts/run`
    /// allows its local stand-ins' 127.0.0.1 this way, never the policy.
    #[arg(long = "allow", value_name = "CIDR")]
    allow: Vec<String>,
}

pub fn run(args: &Args) -> ExitCode {
    let (name, guard) = match &args.config {
        None => ("the default guard", AddressGuard::default()),
        Some(file) => match load(file, false) {
            Ok(policy) => (file.as_str(), policy.address_guard),
            Err(errors) => {
                for error in &errors.0 {
                    eprintln!("{file}: {error}");
                }
                return ExitCode::from(EXIT_INVALID);
            }
        },
    };
    let mut more = Vec::new();
    for entry in &args.allow {
        match Network::parse(entry) {
            Ok(network) => more.push(network),
            Err(why) => {
                eprintln!("address-filter: --allow: {why}");
                return ExitCode::from(EXIT_INVALID);
            }
        }
    }
    if guard.has_name_exceptions() {
        // One filter serves every name: the ranges some name is allowed into are left out of
        // it, and the DNS guard refuses them for the other names.
        eprintln!(
            "{name}: warning: addressGuard.allowNames: the ranges named there are refused for other names by \
             egress-policy dns-guard, not by this filter; the gateway must resolve through it (README: Security)"
        );
    }
    let ranges: Vec<_> = guard
        .nameless_rules(&more)
        .refused_ranges()
        .iter()
        .map(|network| json!({"address_prefix": network.addr.to_string(), "prefix_len": network.len}))
        .collect();
    // A closed pipe is the reader's choice, not a panic.
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{}", serde_json::Value::Array(ranges)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(EXIT_INVALID),
    }
}
