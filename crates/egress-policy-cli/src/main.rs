//! `egress-policy`: validate plugin configurations, explain decisions and audit logs, with the
//! same core the filter runs in Envoy.
//!
//! Exit codes: `check` 0 valid, 2 invalid; `explain` 0 forwarded, 1 answered locally, 2 invalid
//! configuration or usage; `audit` 0 clean, 1 a forbidden request was let through, 2 unreadable
//! input. Usage errors exit 2 (clap's convention).

mod address_filter;
mod audit;
mod baseline;
mod check;
mod convert;
mod dns_guard;
mod explain;
mod istio;
mod load;
mod verify;
mod yaml;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A request answered locally, or a violation found.
const EXIT_DENIED: u8 = 1;
/// An invalid configuration, an unreadable input or a usage error.
const EXIT_INVALID: u8 = 2;

/// Validate egress-policy configurations, explain decisions and audit the JSON log.
///
/// CONFIG is a plugin configuration in JSON or YAML, or Istio manifests whose WasmPlugins'
/// spec.pluginConfig and TrafficExtensions' spec.wasm.pluginConfig are checked; '-' reads
/// standard input.
#[derive(Parser)]
#[command(name = "egress-policy", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate configurations: exits 0 when every CONFIG is valid, 2 otherwise; warnings go to
    /// standard error.
    Check(check::Args),
    /// Decide one request exactly as the filter does: exits 0 when it would be forwarded (allow,
    /// dry_run_deny), 1 when it would be answered locally (deny, reject), 2 on an invalid CONFIG.
    Explain(Box<explain::Args>),
    /// Read the JSON log (LOGFILEs, or standard input) and print counts per level, source,
    /// destination and decision: exits 1 when an error-level entry's request was let through, 2
    /// when a file or line cannot be read, 0 otherwise.
    Audit(audit::Args),
    /// Translate a Mixer-era egress configuration (logentry, stdio, rule, listchecker,
    /// listentry, instance, handler, VirtualService) into one plugin configuration, printed as
    /// JSON; what could not be translated, and why, goes to standard error. Exits 0 when a valid
    /// configuration was written, 2 otherwise.
    Convert(convert::Args),
    /// Print what an Istio deployment needs from this version: the egress gateway's Helm
    /// values (metrics), or a manifest with the module pinned to an OCI image digest.
    #[command(subcommand)]
    Istio(istio::Command),
    /// Print the SSRF guard's refused ranges (the policy's addressGuard, its exceptions cut out)
    /// as the JSON list of Envoy's DNS cache `resolved_address_filter.ranges`: what the gateway
    /// never connects to. Exits 2 on an invalid CONFIG.
    AddressFilter(address_filter::Args),
    /// Relay the gateway's DNS queries to its resolver unchanged, and log each address an
    /// answer gives that the address guard refuses (name, address, reason): the record of what
    /// Envoy's DNS cache drops. Runs until stopped; exits 2 when it cannot start.
    DnsGuard(dns_guard::Args),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check(args) => check::run(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Audit(args) => audit::run(&args),
        Command::Istio(command) => istio::run(&command),
        Command::Convert(args) => convert::run(&args),
        Command::AddressFilter(args) => address_filter::run(&args),
        Command::DnsGuard(args) => dns_guard::run(&args),
    }
}
