//! `egress-policy explain`: builds the raw facts the filter would see from the arguments and runs
//! the filter's own pipeline (`Policy::decide`, `Policy::reply`, the log renderer) on them.

use std::process::ExitCode;

use egress_policy_core::attributes::Attr;
use egress_policy_core::described::{Described, mesh_principal};
use egress_policy_core::policy::Policy;
use egress_policy_core::policy::provider::RemoteLists;
use egress_policy_core::request::{Opening, Protocol, RequestFacts, Response};
use egress_policy_core::telemetry::log_entry;

use crate::load::load;
use crate::{EXIT_DENIED, EXIT_INVALID};

/// The facts of a request as a client and its connection present them, raw.
#[derive(clap::Args)]
pub struct Args {
    /// Plugin configuration (JSON, YAML, WasmPlugin manifest; '-' is standard input).
    #[arg(value_name = "CONFIG")]
    config: String,
    /// `:authority` as the client sends it (port, upper case, userinfo and all).
    #[arg(long, allow_hyphen_values = true, required_unless_present = "sni")]
    host: Option<String>,
    /// `:path` as the client sends it, undecoded, with the query; none for a forward proxy's
    /// `--method CONNECT` (then `--host` is `host:port`).
    #[arg(long, allow_hyphen_values = true)]
    path: Option<String>,
    /// Decide a TLS connection instead of a request: the SNI of its ClientHello (for the
    /// sidecar leg, of the outer mTLS handshake). Empty: a connection without SNI.
    #[arg(long, conflicts_with_all = ["host", "path", "body", "headers"], allow_hyphen_values = true)]
    sni: Option<String>,
    /// With --sni: the gateway port the connection arrived on (`destination.port`).
    #[arg(long, requires = "sni")]
    port: Option<u16>,
    #[arg(long, default_value = "GET")]
    method: String,
    #[arg(long, default_value = "http")]
    scheme: String,
    /// A body follows the headers.
    #[arg(long)]
    body: bool,
    /// A request header, repeatable (NAME=VALUE).
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = key_value, allow_hyphen_values = true)]
    headers: Vec<(String, String)>,
    /// The peer certificate's URI SANs (comma-joined), as a verified mTLS caller presents them.
    #[arg(long, value_name = "SPIFFE_ID", conflicts_with = "namespace")]
    principal: Option<String>,
    /// A mesh certificate for spiffe://TRUST_DOMAIN/ns/NS/sa/SA.
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    /// With --namespace (default `default`).
    #[arg(long, value_name = "SA", requires = "namespace")]
    service_account: Option<String>,
    /// Istio peer metadata label of the caller, repeatable (KEY=VALUE).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = key_value)]
    labels: Vec<(String, String)>,
    /// Istio peer metadata workload name of the caller.
    #[arg(long, value_name = "NAME")]
    workload: Option<String>,
    /// The caller's address.
    #[arg(long, value_name = "IP")]
    source_ip: Option<String>,
    /// `response.code` for the log entries of a forwarded request.
    #[arg(long, value_name = "CODE")]
    response_code: Option<i64>,
    /// `response.size` for the log entries of a forwarded request.
    #[arg(long, value_name = "BYTES")]
    response_size: Option<i64>,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got '{text}'"))
}

/// The facts the filter would see: the peer certificate's SPIFFE ID is `--principal`, or the
/// mesh's for `--namespace` and `--service-account` (default `default`).
fn facts(args: &Args, policy: &Policy) -> RequestFacts {
    let principal = args.principal.clone().or_else(|| {
        args.namespace.as_ref().map(|ns| {
            let service_account = args.service_account.as_deref().unwrap_or("default");
            mesh_principal(&policy.trust_domain, ns, service_account)
        })
    });
    let texts = [
        (Attr::SourceIp, &args.source_ip),
        (Attr::SourceWorkload, &args.workload),
        (Attr::ConnectionRequestedServerName, &args.sni),
    ]
    .into_iter()
    .filter_map(|(attr, value)| Some((attr, value.clone()?)))
    .collect();
    let protocol = match (&args.sni, &args.host) {
        (None, Some(_)) => Protocol::Http,
        _ => Protocol::Tcp,
    };
    Described {
        protocol,
        host: args.host.clone(),
        path: args.path.clone(),
        method: Some(args.method.clone()),
        scheme: Some(args.scheme.clone()),
        headers: args.headers.clone(),
        body: args.body,
        principal,
        labels: args.labels.clone(),
        texts,
        port: args.port.map(i64::from),
        time_micros: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_micros()).ok()),
        // The caller's own ClientHello is taken to name the SNI (README: HTTPS egress).
        opening: Opening::Unseen,
    }
    .facts()
}

pub fn run(args: &Args) -> ExitCode {
    if args.sni.is_none()
        && (args.host.is_none() || (args.path.is_none() && args.method != "CONNECT"))
    {
        eprintln!(
            "explain: a request needs --host and --path (a CONNECT: --method CONNECT --host host:port), a connection --sni"
        );
        return ExitCode::from(EXIT_INVALID);
    }
    let policy = match load(&args.config, args.sni.is_some()) {
        Ok(policy) => policy,
        Err(errors) => {
            for error in &errors.0 {
                eprintln!("{}: {error}", args.config);
            }
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let (request, decision) = policy.decide(&facts(args, &policy), &RemoteLists::default());
    if let Some(error) = &request.identity_error {
        println!("identity: none ({error})");
    }
    let outcome = decision.outcome();
    let mut response = Response {
        code: args.response_code,
        size: args.response_size,
        ..Response::default()
    };
    match policy.reply(&decision, &request) {
        None => println!("decision: {}", outcome.as_str()),
        Some(reply) => {
            match request.protocol {
                Protocol::Http => println!("decision: {} ({})", outcome.as_str(), reply.status),
                Protocol::Tcp => println!("decision: {} (connection closed)", outcome.as_str()),
            }
            let reason = match (decision.rejected, &decision.denied) {
                (Some(problem), _) => format!("rejected: {}", problem.describe()),
                (None, Some(reason)) => policy.explain(reason, &request),
                (None, None) => String::new(),
            };
            println!("reason: {reason}");
            println!("details: {}", reply.details);
            if request.protocol == Protocol::Http {
                response.code.get_or_insert(i64::from(reply.status));
                response.size.get_or_insert(0);
            } else {
                response.event = Some("open");
            }
        }
    }
    for reason in &decision.dry_run {
        println!("would deny (dry run): {}", policy.explain(reason, &request));
    }
    if decision.fired.is_empty() {
        println!("rules matched: none");
    } else {
        println!("rules matched:");
        for &index in &decision.fired {
            let Some(rule) = usize::try_from(index)
                .ok()
                .and_then(|i| policy.rules.get(i))
            else {
                continue;
            };
            let mut actions = Vec::new();
            if let Some(level) = rule.log {
                actions.push(format!("log {}", level.as_str()));
            }
            for list in rule.checks.iter().filter_map(|&l| policy.lists.get(l)) {
                actions.push(format!("check {}", list.name));
            }
            println!("  {} ({})", rule.name, actions.join(", "));
        }
    }
    let entries = log_entry::render(&policy, &decision, &request, &response);
    if entries.is_empty() {
        println!("log entries: none");
    } else {
        println!("log entries:");
        println!("{entries}");
    }
    println!("policy version: {}", policy.version);
    if outcome.forwarded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DENIED)
    }
}
